//! systemd notify (`sd_notify(3)`) without libsystemd: tells the service manager when bbsync is
//! ready, reloading or stopping, what it is doing (`STATUS=`), and pings the watchdog.
//!
//! Why: with `Type=notify` (or `notify-reload`) systemd starts the units ordered after bbsync
//! only once it says `READY=1`, shows its `STATUS=` in `systemctl status`, and, with
//! `WatchdogSec=`, restarts a daemon that stops pinging. The protocol is one datagram of
//! `KEY=value` lines to the `AF_UNIX` socket named by `NOTIFY_SOCKET`, so std's
//! [`UnixDatagram`] is all it takes; no C library, no crate.
//! - [`Notifier::from_env`] returns `None` outside systemd (no `NOTIFY_SOCKET`): every caller
//!   holds an `Option<Notifier>` and the daemon runs the same either way.
//! - `NOTIFY_SOCKET` is a filesystem path or, starting with `@`, an abstract socket name.
//! - The watchdog applies when `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset or our pid
//!   (systemd sets it so that a child inheriting the environment does not ping for us). We ping
//!   every half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` recommends, and only while the
//!   daemon reports itself healthy: a wedged daemon stops pinging and systemd restarts it.
//! - Malformed values are logged and disable what they configure; nothing here panics, and a
//!   failed send is a warning (once per kind of error), never fatal: notify is a courtesy to
//!   the service manager, not a reason to stop reconciling.
//! - The socket is non-blocking: a full queue at systemd's end is a logged `WouldBlock`, not a
//!   stalled tokio worker.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where and how to notify systemd; `None` from the constructors when there is nowhere to.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `WATCHDOG_USEC`, when the watchdog applies to this process.
    watchdog: Option<Duration>,
    /// Kinds of send error already logged at warn; later ones of a kind go to debug.
    warned: Mutex<Vec<io::ErrorKind>>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Option<Notifier> {
        let var = |name: &str| std::env::var(name).ok();
        let (socket, usec, pid) = (
            var("NOTIFY_SOCKET"),
            var("WATCHDOG_USEC"),
            var("WATCHDOG_PID"),
        );
        Notifier::from_vars(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// [`Notifier::from_env`] on given values: `socket` is `NOTIFY_SOCKET`, `watchdog_usec`
    /// and `watchdog_pid` the watchdog variables, `our_pid` this process's id.
    pub fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        our_pid: u32,
    ) -> Option<Notifier> {
        let addr = socket_addr(socket?)?;
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the systemd notify socket; not notifying systemd");
                return None;
            }
        };
        Some(Notifier {
            socket,
            addr,
            watchdog: watchdog(watchdog_usec, watchdog_pid, our_pid),
            warned: Mutex::new(Vec::new()),
        })
    }

    /// `READY=1`: start-up is done, or (after [`Notifier::reloading`]) the reload is.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `READY=1` with a `STATUS=` line, in one datagram.
    pub fn ready_with_status(&self, text: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(text)));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `STATUS=text`, shown by `systemctl status`. Line breaks become spaces: a newline would
    /// start another assignment (a `STATUS=` could otherwise say `READY=1`).
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }

    /// `WATCHDOG=1`: still alive. [`Notifier::spawn_watchdog`] sends it on schedule.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (systemd >= 253 wants both for
    /// `Type=notify-reload`); send [`Notifier::ready`] when the reload is done.
    ///
    /// `MONOTONIC_USEC` is `CLOCK_MONOTONIC`, which std reads for [`std::time::Instant`] but
    /// does not expose (see `monotonic_usec` in this module); when it cannot be read,
    /// `RELOADING=1` goes alone, which systemd still accepts.
    pub fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.send("RELOADING=1"),
        }
    }

    /// How often to ping: half of `WATCHDOG_USEC`; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Pings `WATCHDOG=1` every [`Notifier::watchdog_interval`] (the first after one interval)
    /// while `healthy()` is true, until `shutdown`. While unhealthy it skips the pings (logged
    /// once per unhealthy spell) so that systemd restarts a wedged daemon. `None` without a
    /// watchdog.
    pub fn spawn_watchdog(
        self: Arc<Self>,
        healthy: impl Fn() -> bool + Send + 'static,
        shutdown: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let every = self.watchdog_interval()?;
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pinging = true;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                if healthy() {
                    if !pinging {
                        tracing::info!("healthy again; resuming systemd watchdog pings");
                        pinging = true;
                    }
                    self.watchdog();
                } else if pinging {
                    tracing::warn!("unhealthy; no longer pinging the systemd watchdog, so systemd restarts bbsync unless it recovers");
                    pinging = false;
                }
            }
        }))
    }

    fn send(&self, msg: &str) {
        let Err(e) = self.socket.send_to_addr(msg.as_bytes(), &self.addr) else {
            return;
        };
        let first = {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            let first = !warned.contains(&e.kind());
            if first {
                warned.push(e.kind());
            }
            first
        };
        if first {
            tracing::warn!(error = %e, socket = ?self.addr, "cannot notify systemd; carrying on (further errors of this kind are logged at debug)");
        } else {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
    }
}

/// `NOTIFY_SOCKET` as an address: a path, or `@name` for an abstract socket (Linux).
fn socket_addr(var: &str) -> Option<SocketAddr> {
    let addr = if let Some(name) = var.strip_prefix('@') {
        abstract_addr(name)
    } else if var.starts_with('/') {
        SocketAddr::from_pathname(var)
    } else {
        tracing::warn!(
            notify_socket = var,
            "NOTIFY_SOCKET is neither a path nor an @abstract name; not notifying systemd"
        );
        return None;
    };
    match addr {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(notify_socket = var, error = %e, "NOTIFY_SOCKET is not a usable socket address; not notifying systemd");
            None
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// `WATCHDOG_USEC` when the watchdog applies to `our_pid`.
fn watchdog(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec = usec?;
    match pid.map(str::parse::<u32>) {
        None => {}
        Some(Ok(p)) if p == our_pid => {}
        Some(Ok(p)) => {
            tracing::debug!(
                watchdog_pid = p,
                our_pid,
                "the systemd watchdog is for another process"
            );
            return None;
        }
        Some(Err(_)) => {
            tracing::warn!(
                watchdog_pid = pid,
                "WATCHDOG_PID is not a pid; not pinging the systemd watchdog"
            );
            return None;
        }
    }
    match usec.parse::<u64>() {
        Ok(n) if n > 0 => Some(Duration::from_micros(n)),
        _ => {
            tracing::warn!(
                watchdog_usec = usec,
                "WATCHDOG_USEC is not a positive number of microseconds; not pinging the systemd watchdog"
            );
            None
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, without libc.
///
/// std reads `CLOCK_MONOTONIC` for [`std::time::Instant`] on Linux (its documentation says
/// so) but exposes the value only through `Debug`, `Instant { tv_sec: S, tv_nsec: N }`. That
/// format is not a stable promise, so this parses it strictly and gives `None` (`RELOADING=1`
/// goes alone) on any other shape; a test pins the shape, so a toolchain that changes it fails
/// there rather than silently. Other systems: `None` (their `Instant` is another clock).
fn monotonic_usec() -> Option<u64> {
    if cfg!(target_os = "linux") {
        parse_instant_debug(&format!("{:?}", std::time::Instant::now()))
    } else {
        None
    }
}

fn parse_instant_debug(s: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let at = s.find(name)? + name.len();
        let rest = &s[at..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    if !s.starts_with("Instant {") {
        return None;
    }
    let (secs, nanos) = (field("tv_sec: ")?, field("tv_nsec: ")?);
    if nanos >= 1_000_000_000 {
        return None;
    }
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A bound receiving socket in a temporary directory and a notifier pointed at it.
    fn pair(usec: Option<&str>) -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let n = Notifier::from_vars(path.to_str(), usec, None, 1).expect("notifier");
        (dir, rx, n)
    }

    /// Every datagram waiting on `rx`.
    fn drain(rx: &UnixDatagram) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rx.recv(&mut buf) {
                Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    #[test]
    fn a_path_socket_receives_ready_status_and_stopping() {
        let (_dir, rx, n) = pair(None);
        n.ready();
        n.status("reconciling\nREADY=1");
        n.ready_with_status("idle");
        n.stopping();
        assert_eq!(
            drain(&rx),
            vec![
                "READY=1",
                "STATUS=reconciling READY=1",
                "READY=1\nSTATUS=idle",
                "STOPPING=1"
            ]
        );
        assert_eq!(n.watchdog_interval(), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_works_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("bbsync-notify-test-{}-{}", std::process::id(), line!());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).expect("name"))
            .expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1).expect("notifier");
        n.ready();
        n.watchdog();
        assert_eq!(drain(&rx), vec!["READY=1", "WATCHDOG=1"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reloading_carries_the_monotonic_clock_and_ready_ends_it() {
        let (_dir, rx, n) = pair(None);
        n.reloading();
        n.ready();
        let got = drain(&rx);
        assert_eq!(got.len(), 2);
        let usec: u64 = got[0]
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .expect("MONOTONIC_USEC")
            .parse()
            .expect("number");
        assert!(usec > 0);
        assert_eq!(got[1], "READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_monotonic_clock_is_read_from_instant_and_is_plausible() {
        // Pins the Debug shape of std's Instant on this toolchain (see monotonic_usec).
        let a = monotonic_usec().expect("Instant's Debug shape changed; see monotonic_usec");
        let b = monotonic_usec().expect("monotonic");
        assert!(a <= b);
        // /proc/uptime is CLOCK_BOOTTIME, which is CLOCK_MONOTONIC plus time suspended.
        let uptime = std::fs::read_to_string("/proc/uptime").expect("uptime");
        let boot: f64 = uptime
            .split_whitespace()
            .next()
            .expect("field")
            .parse()
            .expect("seconds");
        assert!((b as f64) <= (boot + 1.0) * 1e6, "{b} vs {boot}");
        assert_eq!(
            parse_instant_debug("Instant { tv_sec: 12, tv_nsec: 345678901 }"),
            Some(12_345_678)
        );
        assert_eq!(
            parse_instant_debug("Instant { t: 12.3s }"),
            None,
            "another shape"
        );
        assert_eq!(
            parse_instant_debug("Instant { tv_sec: 1, tv_nsec: 1000000000 }"),
            None
        );
    }

    #[test]
    fn no_socket_or_an_unusable_one_is_none() {
        assert!(Notifier::from_vars(None, Some("1000000"), None, 1).is_none());
        assert!(Notifier::from_vars(Some(""), None, None, 1).is_none());
        assert!(Notifier::from_vars(Some("relative/path"), None, None, 1).is_none());
        assert!(Notifier::from_vars(Some("vsock:2:1234"), None, None, 1).is_none());
    }

    #[test]
    fn the_watchdog_applies_to_our_pid_or_when_no_pid_is_given() {
        let n = |usec, pid| Notifier::from_vars(Some("/nonexistent/notify"), usec, pid, 42);
        let interval = |usec, pid| n(usec, pid).expect("notifier").watchdog_interval();
        assert_eq!(
            interval(Some("30000000"), None),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval(Some("30000000"), Some("42")),
            Some(Duration::from_secs(15))
        );
        assert_eq!(interval(Some("30000000"), Some("43")), None, "another pid");
        assert_eq!(interval(Some("30000000"), Some("forty-two")), None);
        assert_eq!(interval(None, Some("42")), None);
    }

    #[test]
    fn a_malformed_watchdog_usec_disables_the_watchdog() {
        for bad in ["", "abc", "-5", "0", "1.5", "99999999999999999999999"] {
            let n = Notifier::from_vars(Some("/nonexistent/notify"), Some(bad), None, 1)
                .expect("notifier");
            assert_eq!(n.watchdog_interval(), None, "{bad:?}");
        }
    }

    #[test]
    fn send_errors_are_not_fatal_and_warned_once_per_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nobody-listens");
        let n = Notifier::from_vars(path.to_str(), None, None, 1).expect("notifier");
        n.ready();
        n.status("x");
        n.stopping();
        assert_eq!(
            *n.warned.lock().expect("lock"),
            vec![io::ErrorKind::NotFound]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_pings_at_half_the_interval_while_healthy_until_shutdown() {
        use tokio::time::{sleep_until, Instant};
        let (_dir, rx, n) = pair(Some("10000000"));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let h = healthy.clone();
        let t0 = Instant::now();
        let task = Arc::new(n)
            .spawn_watchdog(move || h.load(Ordering::SeqCst), stop.clone())
            .expect("a watchdog");
        let at = |secs: f64| sleep_until(t0 + Duration::from_secs_f64(secs));

        at(4.5).await;
        assert!(drain(&rx).is_empty(), "nothing before half the interval");
        at(5.5).await;
        assert_eq!(drain(&rx), vec!["WATCHDOG=1"]);
        at(10.5).await;
        assert_eq!(drain(&rx), vec!["WATCHDOG=1"]);

        healthy.store(false, Ordering::SeqCst);
        at(30.5).await;
        assert!(drain(&rx).is_empty(), "no ping while unhealthy");

        healthy.store(true, Ordering::SeqCst);
        at(35.5).await;
        assert_eq!(drain(&rx), vec!["WATCHDOG=1"], "pings again once healthy");

        stop.cancel();
        task.await.expect("the watchdog task ends");
        at(60.0).await;
        assert!(drain(&rx).is_empty(), "no ping after shutdown");
    }

    #[tokio::test]
    async fn no_watchdog_no_task() {
        let (_dir, _rx, n) = pair(None);
        assert!(Arc::new(n)
            .spawn_watchdog(|| true, CancellationToken::new())
            .is_none());
    }
}
