//! Small HTTP helpers: replies, percent-decoding, form/query parsing, request context.

use crate::auth::Caller;
use crate::paging::CursorKey;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::sync::Arc;

/// Body of a reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Json(Value),
    /// JSON already serialized (a listing too large to build as a [`Value`] first).
    RawJson(Vec<u8>),
    Text(String),
    Empty,
}

/// What a handler answers; turned into an HTTP response by the dispatcher.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
    /// 2.0: dotted paths left out unless requested with `fields` (e.g. `values.user.email`).
    pub hidden_fields: Vec<&'static str>,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: Body::Json(v),
            headers: Vec::new(),
            hidden_fields: Vec::new(),
        }
    }

    pub fn text(status: u16, s: impl Into<String>) -> Reply {
        Reply {
            status,
            body: Body::Text(s.into()),
            headers: Vec::new(),
            hidden_fields: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: Body::Empty,
            headers: Vec::new(),
            hidden_fields: Vec::new(),
        }
    }

    /// 2.0 error body `{"type":"error","error":{"message":...}}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            json!({"type": "error", "error": {"message": message.into()}}),
        )
    }

    /// 2.0 error body with a `detail`.
    pub fn error_detail(status: u16, message: impl Into<String>, detail: Value) -> Reply {
        Reply::json(
            status,
            json!({"type": "error", "error": {"message": message.into(), "detail": detail}}),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a string; `plus_is_space` for form/query encoding. Invalid escapes are kept.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a path segment (keeps unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Raw `application/x-www-form-urlencoded` pairs, still encoded.
pub fn raw_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// Decoded form/query pairs.
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    raw_pairs(s)
        .into_iter()
        .map(|(k, v)| (percent_decode(&k, true), percent_decode(&v, true)))
        .collect()
}

/// Everything a route handler gets about a request.
pub struct Req<'a> {
    pub method: &'a str,
    /// Decoded path parameters by name (`ws`, `repo`, `group`, ...).
    pub params: Vec<(&'static str, String)>,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Raw query pairs (for building `next`).
    pub raw_query: Vec<(String, String)>,
    /// Raw request path.
    pub raw_path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub caller: &'a Caller,
    /// `http://host:port` from the Host header.
    pub origin: String,
    /// The emulator's cursor key.
    pub cursor_key: &'a Arc<CursorKey>,
}

impl Req<'_> {
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> Option<String> {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
    }

    pub fn is_json(&self) -> bool {
        self.content_type().as_deref() == Some("application/json")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("%7Babc%7D", false), "{abc}");
        assert_eq!(percent_decode("a+b%20c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(
            form_pairs("q=project.key%3D%22P%22&x"),
            vec![
                ("q".to_string(), "project.key=\"P\"".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(percent_encode("{a b}"), "%7Ba%20b%7D");
    }
}
