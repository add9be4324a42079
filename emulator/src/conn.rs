//! Connection-level faults, the ones that are not an HTTP answer: closing the connection
//! without answering ([`crate::FaultKind::Reset`], [`crate::FaultKind::Hang`]) and cutting an
//! answer short of its `Content-Length` ([`crate::FaultKind::Truncated`]).
//!
//! The emulator serves through [`FaultListener`], whose connections ([`FaultIo`]) pass every
//! byte through to the socket until a handler, holding the connection's [`ConnTag`] (axum
//! `ConnectInfo`), tells it to stop writing: then the next write fails, hyper drops the
//! connection and the socket is closed, after whatever was allowed through.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// What a connection still lets through.
#[derive(Debug, Default)]
enum Mode {
    /// Everything.
    #[default]
    Normal,
    /// Nothing: the next write fails and the connection is closed.
    Closed,
    /// The bytes up to and including the first occurrence of `marker`, then `after` more
    /// bytes, then nothing.
    Cut {
        marker: &'static [u8],
        /// How many bytes of `marker` the last bytes written matched.
        matched: usize,
        /// Bytes still allowed once `marker` was seen.
        after: usize,
    },
}

impl Mode {
    /// How many of `buf`'s first bytes may be written (without changing the mode).
    fn passable(&self, buf: &[u8]) -> usize {
        match self {
            Mode::Normal => buf.len(),
            Mode::Closed => 0,
            Mode::Cut {
                marker,
                matched,
                after,
            } => {
                let mut matched = *matched;
                for (i, b) in buf.iter().enumerate() {
                    if matched == marker.len() {
                        return (i + after).min(buf.len());
                    }
                    matched = next_match(marker, matched, *b);
                }
                // The marker is not over yet (or ends exactly at the end of `buf`).
                buf.len()
            }
        }
    }

    /// Accounts for `written` bytes written; closes once nothing more may pass.
    fn consume(&mut self, written: &[u8]) {
        if let Mode::Cut {
            marker,
            matched,
            after,
        } = self
        {
            for b in written {
                if *matched == marker.len() {
                    *after = after.saturating_sub(1);
                } else {
                    *matched = next_match(marker, *matched, *b);
                }
            }
            if *matched == marker.len() && *after == 0 {
                *self = Mode::Closed;
            }
        }
    }
}

/// Matched length of `marker` after byte `b` (the markers here, `\r\n` and `\r\n\r\n`, need
/// no general failure function: a mismatch restarts at 0, or at 1 on a `\r`).
fn next_match(marker: &[u8], matched: usize, b: u8) -> usize {
    if marker.get(matched) == Some(&b) {
        matched + 1
    } else if marker.first() == Some(&b) {
        1
    } else {
        0
    }
}

/// The handle a request handler has on its connection (axum `ConnectInfo`).
#[derive(Clone, Debug)]
pub struct ConnTag {
    /// The peer's address.
    pub peer: SocketAddr,
    mode: Arc<Mutex<Mode>>,
}

fn lock(m: &Mutex<Mode>) -> MutexGuard<'_, Mode> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnTag {
    /// Nothing more is written: the answer being returned is dropped and the connection closed.
    pub fn close(&self) {
        *lock(&self.mode) = Mode::Closed;
    }

    /// The answer being returned is cut: its status line and headers go out, then only
    /// `body_bytes` bytes of its body, then the connection is closed. With `None` (an answer
    /// without a body) only the status line goes out.
    pub fn cut(&self, body_bytes: Option<usize>) {
        *lock(&self.mode) = match body_bytes {
            Some(after) => Mode::Cut {
                marker: b"\r\n\r\n",
                matched: 0,
                after,
            },
            None => Mode::Cut {
                marker: b"\r\n",
                matched: 0,
                after: 0,
            },
        };
    }
}

impl Connected<IncomingStream<'_, FaultListener>> for ConnTag {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections can be closed or cut by the request handlers.
pub struct FaultListener {
    inner: TcpListener,
}

impl FaultListener {
    pub fn new(inner: TcpListener) -> FaultListener {
        FaultListener { inner }
    }
}

impl Listener for FaultListener {
    type Io = FaultIo;
    type Addr = ConnTag;

    async fn accept(&mut self) -> (FaultIo, ConnTag) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let mode = Arc::new(Mutex::new(Mode::Normal));
                    let io = FaultIo {
                        inner: stream,
                        mode: mode.clone(),
                    };
                    return (io, ConnTag { peer, mode });
                }
                Err(e) => {
                    // As axum does for a plain TcpListener: out of file descriptors and the
                    // like are transient; wait a little instead of spinning.
                    tracing::debug!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnTag> {
        Ok(ConnTag {
            peer: self.inner.local_addr()?,
            mode: Arc::new(Mutex::new(Mode::Normal)),
        })
    }
}

/// One accepted connection (see [`ConnTag`]).
pub struct FaultIo {
    inner: TcpStream,
    mode: Arc<Mutex<Mode>>,
}

impl AsyncRead for FaultIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if matches!(*lock(&self.mode), Mode::Closed) {
            // End of input: nothing more is read from a closed connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mode = self.mode.clone();
        let n = lock(&mode).passable(buf);
        if n == 0 {
            *lock(&mode) = Mode::Closed;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "emulator fault: connection closed",
            )));
        }
        match Pin::new(&mut self.inner).poll_write(cx, &buf[..n]) {
            Poll::Ready(Ok(written)) => {
                lock(&mode).consume(&buf[..written]);
                Poll::Ready(Ok(written))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut mode: Mode, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            let mut rest: &[u8] = c;
            while !rest.is_empty() {
                let n = mode.passable(rest);
                if n == 0 {
                    return out;
                }
                // Write one byte at a time past the first, as a slow socket would.
                let w = n.min(3);
                out.extend_from_slice(&rest[..w]);
                mode.consume(&rest[..w]);
                rest = &rest[w..];
            }
        }
        out
    }

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789";

    #[test]
    fn cut_after_the_head() {
        let cut = |after| Mode::Cut {
            marker: b"\r\n\r\n",
            matched: 0,
            after,
        };
        let head_len = ANSWER.len() - 10;
        assert_eq!(run(cut(5), &[ANSWER]), &ANSWER[..head_len + 5]);
        assert_eq!(run(cut(0), &[ANSWER]), &ANSWER[..head_len]);
        // Split across writes, even inside the marker.
        let (a, b) = ANSWER.split_at(head_len - 2);
        assert_eq!(run(cut(4), &[a, b]), &ANSWER[..head_len + 4]);
        let mut m = cut(4);
        assert_eq!(m.passable(ANSWER), head_len + 4);
        m.consume(&ANSWER[..head_len + 4]);
        assert!(matches!(m, Mode::Closed));
    }

    #[test]
    fn cut_in_the_status_line() {
        let m = Mode::Cut {
            marker: b"\r\n",
            matched: 0,
            after: 0,
        };
        assert_eq!(run(m, &[ANSWER]), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(Mode::Closed.passable(ANSWER), 0);
        assert_eq!(Mode::Normal.passable(ANSWER), ANSWER.len());
    }

    #[test]
    fn marker_matching_restarts() {
        assert_eq!(next_match(b"\r\n\r\n", 2, b'\r'), 3);
        assert_eq!(next_match(b"\r\n\r\n", 3, b'\r'), 1);
        assert_eq!(next_match(b"\r\n\r\n", 1, b'x'), 0);
    }
}
