//! 2.0 pagination: page-numbered (`page=N`, with `page` and `size` in the answer) and
//! cursor-based (`cursor=<opaque>`, no `page` field) collections. `next`/`previous` are
//! absolute URLs built from the request's Host header, keeping every other query parameter.

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Largest `pagelen` accepted.
pub const MAX_PAGELEN: usize = 100;

/// Where the current request came from, to build `next`/`previous`.
#[derive(Clone, Debug)]
pub struct PageContext {
    /// `http://host:port`.
    pub origin: String,
    /// Raw (still percent-encoded) path.
    pub path: String,
    /// Raw query pairs, still encoded, in request order.
    pub raw_query: Vec<(String, String)>,
    /// Decoded `pagelen`, `page`, `cursor` values, if given.
    pub pagelen: Option<String>,
    pub page: Option<String>,
    pub cursor: Option<String>,
    pub default_pagelen: usize,
}

/// A refused paging parameter (answered 400 with this message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagingError(pub String);

impl PageContext {
    pub fn pagelen(&self) -> Result<usize, PagingError> {
        match &self.pagelen {
            None => Ok(self.default_pagelen.clamp(1, MAX_PAGELEN)),
            Some(s) => match s.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_PAGELEN).contains(&n) => Ok(n),
                _ => Err(PagingError("Invalid pagelen".into())),
            },
        }
    }

    fn url_with(&self, drop: &[&str], key: &str, value: &str) -> String {
        let mut parts: Vec<String> = self
            .raw_query
            .iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        parts.push(format!("{key}={value}"));
        format!("{}{}?{}", self.origin, self.path, parts.join("&"))
    }

    /// One page of a page-numbered collection.
    pub fn page_numbered(&self, items: Vec<Value>) -> Result<Value, PagingError> {
        let pagelen = self.pagelen()?;
        let page = match &self.page {
            None => 1,
            Some(s) => match s.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(PagingError("Invalid page".into())),
            },
        };
        let size = items.len();
        let start = (page - 1).saturating_mul(pagelen);
        let values: Vec<Value> = items.into_iter().skip(start).take(pagelen).collect();
        let mut out = Map::new();
        out.insert("pagelen".into(), json!(pagelen));
        out.insert("size".into(), json!(size));
        out.insert("page".into(), json!(page));
        if start.saturating_add(pagelen) < size {
            out.insert(
                "next".into(),
                json!(self.url_with(&["page"], "page", &(page + 1).to_string())),
            );
        }
        if page > 1 {
            out.insert(
                "previous".into(),
                json!(self.url_with(&["page"], "page", &(page - 1).to_string())),
            );
        }
        out.insert("values".into(), Value::Array(values));
        Ok(Value::Object(out))
    }

    /// One page of a cursor-based collection (no `page`, no `size`).
    pub fn cursor_paged(&self, items: Vec<Value>) -> Result<Value, PagingError> {
        let pagelen = self.pagelen()?;
        let start = match &self.cursor {
            None => 0,
            Some(c) => decode_cursor(c).ok_or_else(|| PagingError("Invalid cursor".into()))?,
        };
        let total = items.len();
        let values: Vec<Value> = items.into_iter().skip(start).take(pagelen).collect();
        let mut out = Map::new();
        out.insert("pagelen".into(), json!(pagelen));
        if start.saturating_add(pagelen) < total {
            out.insert(
                "next".into(),
                json!(self.url_with(
                    &["cursor", "page"],
                    "cursor",
                    &encode_cursor(start + pagelen)
                )),
            );
        }
        if start > 0 {
            out.insert(
                "previous".into(),
                json!(self.url_with(
                    &["cursor", "page"],
                    "cursor",
                    &encode_cursor(start.saturating_sub(pagelen))
                )),
            );
        }
        out.insert("values".into(), Value::Array(values));
        Ok(Value::Object(out))
    }
}

/// Opaque cursor for an offset (URL-safe base64, no padding, so no escaping needed).
pub fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("bbsync-emu:{offset}"))
}

pub fn decode_cursor(c: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("bbsync-emu:")?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx(q: &[(&str, &str)]) -> PageContext {
        let get = |k: &str| q.iter().find(|(a, _)| *a == k).map(|(_, v)| v.to_string());
        PageContext {
            origin: "http://127.0.0.1:1".into(),
            path: "/2.0/x".into(),
            raw_query: q
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pagelen: get("pagelen"),
            page: get("page"),
            cursor: get("cursor"),
            default_pagelen: 10,
        }
    }

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    #[test]
    fn numbered() {
        let v = ctx(&[("pagelen", "2"), ("q", "a%3D1")])
            .page_numbered(items(5))
            .unwrap();
        assert_eq!(v["values"], json!([0, 1]));
        assert_eq!(
            v["next"],
            "http://127.0.0.1:1/2.0/x?pagelen=2&q=a%3D1&page=2"
        );
        assert!(v.get("previous").is_none());
        let v = ctx(&[("pagelen", "2"), ("page", "3")])
            .page_numbered(items(5))
            .unwrap();
        assert_eq!(v["values"], json!([4]));
        assert!(v.get("next").is_none());
        assert_eq!(v["size"], 5);
    }

    #[test]
    fn pagelen_limits() {
        for bad in ["0", "101", "abc", "-1"] {
            assert_eq!(
                ctx(&[("pagelen", bad)]).page_numbered(items(1)),
                Err(PagingError("Invalid pagelen".into()))
            );
        }
        assert!(ctx(&[("pagelen", "100")]).page_numbered(items(1)).is_ok());
    }

    #[test]
    fn cursors() {
        let v = ctx(&[("pagelen", "2")]).cursor_paged(items(5)).unwrap();
        assert!(v.get("page").is_none());
        let next = v["next"].as_str().unwrap().to_string();
        let cursor = next.rsplit("cursor=").next().unwrap();
        assert_eq!(decode_cursor(cursor), Some(2));
        assert!(ctx(&[("cursor", "2")]).cursor_paged(items(5)).is_err());
    }
}
