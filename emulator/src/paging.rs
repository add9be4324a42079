//! 2.0 pagination: page-numbered (`page=N`, with `page` and `size` in the answer) and
//! cursor-based (`cursor=<opaque>`, no `page` field) collections. `next`/`previous` are
//! absolute URLs built from the request's Host header, keeping every other query parameter.
//!
//! Cursors are opaque and signed ([`CursorKey`]): HMAC-SHA256, with a key drawn at random by
//! each emulator, over the position and the collection and query they belong to. A client
//! cannot build one, edit one, or take one to another collection or query: each answers 400.

use crate::http::percent_decode;
use base64::Engine as _;
use ring::hmac;
use serde_json::{json, Map, Value};
use std::sync::Arc;

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
    /// Signs and checks the cursors of cursor-based collections.
    pub cursor_key: Arc<CursorKey>,
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
        self.page_numbered_with(items, |v| v)
    }

    /// [`PageContext::page_numbered`] of `items` as `to_json` makes them, called only for the
    /// page's own items (a page of 100 of 20,000 repositories builds 100 objects).
    pub fn page_numbered_with<T>(
        &self,
        items: Vec<T>,
        to_json: impl FnMut(T) -> Value,
    ) -> Result<Value, PagingError> {
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
        let values: Vec<Value> = items
            .into_iter()
            .skip(start)
            .take(pagelen)
            .map(to_json)
            .collect();
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

    /// What a cursor is bound to: the collection (the decoded path, without a trailing
    /// slash) and the query (every decoded parameter but `cursor` and `page`, sorted, so that a
    /// client re-encoding or reordering the `next` URL it follows still matches).
    pub fn cursor_binding(&self) -> String {
        let path = self.path.strip_suffix('/').unwrap_or(&self.path);
        let path: Vec<String> = path.split('/').map(|s| percent_decode(s, false)).collect();
        let mut query: Vec<(String, String)> = self
            .raw_query
            .iter()
            .map(|(k, v)| (percent_decode(k, true), percent_decode(v, true)))
            .filter(|(k, _)| k != "cursor" && k != "page")
            .collect();
        query.sort();
        let mut out = path.join("/");
        for (k, v) in query {
            // Lengths first: no two different queries give the same text.
            out.push_str(&format!("\n{}:{k}={}:{v}", k.len(), v.len()));
        }
        out
    }

    /// One page of a cursor-based collection (no `page`, no `size`).
    pub fn cursor_paged(&self, items: Vec<Value>) -> Result<Value, PagingError> {
        let pagelen = self.pagelen()?;
        let binding = self.cursor_binding();
        let start = match &self.cursor {
            None => 0,
            Some(c) => self
                .cursor_key
                .verify(&binding, c)
                .ok_or_else(|| PagingError("Invalid cursor".into()))?,
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
                    &self.cursor_key.sign(&binding, start + pagelen)
                )),
            );
        }
        if start > 0 {
            out.insert(
                "previous".into(),
                json!(self.url_with(
                    &["cursor", "page"],
                    "cursor",
                    &self
                        .cursor_key
                        .sign(&binding, start.saturating_sub(pagelen))
                )),
            );
        }
        out.insert("values".into(), Value::Array(values));
        Ok(Value::Object(out))
    }
}

/// The key signing an emulator's cursors (HMAC-SHA256).
pub struct CursorKey(hmac::Key);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

/// Domain separation: what the MAC covers is an emulator cursor of this format.
const CURSOR_CONTEXT: &[u8] = b"bbsync-emulator cursor v1\0";
/// Bytes of the position in a token (before the tag).
const OFFSET_LEN: usize = 8;
/// Bytes of the tag (full HMAC-SHA256).
const TAG_LEN: usize = 32;

impl CursorKey {
    /// A fresh random key (each emulator draws its own).
    pub fn random() -> CursorKey {
        let rng = ring::rand::SystemRandom::new();
        match hmac::Key::generate(hmac::HMAC_SHA256, &rng) {
            Ok(k) => CursorKey(k),
            // The system generator failing is not expected; a key only this process can
            // know still keeps cursors unforgeable from outside.
            Err(_) => {
                let mut seed = Vec::new();
                for _ in 0..4 {
                    let h = std::hash::BuildHasher::hash_one(
                        &std::collections::hash_map::RandomState::new(),
                        std::time::SystemTime::now(),
                    );
                    seed.extend_from_slice(&h.to_le_bytes());
                }
                CursorKey(hmac::Key::new(hmac::HMAC_SHA256, &seed))
            }
        }
    }

    /// A key from a given secret (tests).
    pub fn from_secret(secret: &[u8]) -> CursorKey {
        CursorKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn message(binding: &str, offset: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(CURSOR_CONTEXT.len() + binding.len() + 1 + OFFSET_LEN);
        m.extend_from_slice(CURSOR_CONTEXT);
        m.extend_from_slice(binding.as_bytes());
        m.push(0);
        m.extend_from_slice(offset);
        m
    }

    /// The opaque cursor for position `offset` of the collection and query `binding`
    /// (URL-safe base64 without padding: no escaping needed in a URL).
    pub fn sign(&self, binding: &str, offset: usize) -> String {
        let offset = (offset as u64).to_be_bytes();
        let tag = hmac::sign(&self.0, &Self::message(binding, &offset));
        let mut token = offset.to_vec();
        token.extend_from_slice(tag.as_ref());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    }

    /// The position of `cursor` if this key signed it for `binding`; `None` for a forged,
    /// edited or foreign cursor (another emulator's, another collection's or query's).
    pub fn verify(&self, binding: &str, cursor: &str) -> Option<usize> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .ok()?;
        if bytes.len() != OFFSET_LEN + TAG_LEN {
            return None;
        }
        let (offset, tag) = bytes.split_at(OFFSET_LEN);
        hmac::verify(&self.0, &Self::message(binding, offset), tag).ok()?;
        let mut be = [0u8; OFFSET_LEN];
        be.copy_from_slice(offset);
        usize::try_from(u64::from_be_bytes(be)).ok()
    }
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
            cursor_key: Arc::new(CursorKey::from_secret(b"test key")),
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

    fn cursor_of(v: &Value) -> String {
        let next = v["next"].as_str().unwrap();
        next.rsplit("cursor=").next().unwrap().to_string()
    }

    #[test]
    fn cursors() {
        let v = ctx(&[("pagelen", "2")]).cursor_paged(items(5)).unwrap();
        assert!(v.get("page").is_none());
        let cursor = cursor_of(&v);
        let c = ctx(&[("pagelen", "2"), ("cursor", &cursor)]);
        assert_eq!(c.cursor_key.verify(&c.cursor_binding(), &cursor), Some(2));
        let v = c.cursor_paged(items(5)).unwrap();
        assert_eq!(v["values"], json!([2, 3]));
        assert!(v["previous"].as_str().unwrap().contains("cursor="));
        assert!(ctx(&[("cursor", "2")]).cursor_paged(items(5)).is_err());
    }

    #[test]
    fn cursors_cannot_be_forged_edited_or_moved() {
        let first = ctx(&[("pagelen", "2"), ("q", "a%3D1")])
            .cursor_paged(items(9))
            .unwrap();
        let good = cursor_of(&first);
        let with = |q: &[(&str, &str)], cursor: &str| {
            let mut pairs = q.to_vec();
            pairs.push(("cursor", cursor));
            ctx(&pairs).cursor_paged(items(9))
        };
        let invalid = Err(PagingError("Invalid cursor".into()));
        assert!(with(&[("pagelen", "2"), ("q", "a%3D1")], &good).is_ok());
        // Reordered and re-encoded: the same query.
        assert!(with(&[("q", "a=1"), ("pagelen", "2")], &good).is_ok());
        // The old unsigned format, and a hand-made one.
        let unsigned = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("bbsync-emu:2");
        assert_eq!(
            with(&[("pagelen", "2"), ("q", "a%3D1")], &unsigned),
            invalid
        );
        // Edited: another position with the same tag, or a flipped tag byte.
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&good)
            .unwrap();
        bytes[7] = 4;
        let moved = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(with(&[("pagelen", "2"), ("q", "a%3D1")], &moved), invalid);
        bytes[7] = 2;
        bytes[20] ^= 1;
        let flipped = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(with(&[("pagelen", "2"), ("q", "a%3D1")], &flipped), invalid);
        // Another query, another collection, another emulator's key.
        assert_eq!(with(&[("pagelen", "2"), ("q", "a%3D2")], &good), invalid);
        assert_eq!(with(&[("pagelen", "3"), ("q", "a%3D1")], &good), invalid);
        let mut other = ctx(&[("pagelen", "2"), ("q", "a%3D1"), ("cursor", &good)]);
        other.path = "/2.0/y".into();
        assert_eq!(other.cursor_paged(items(9)), invalid);
        let mut other = ctx(&[("pagelen", "2"), ("q", "a%3D1"), ("cursor", &good)]);
        other.cursor_key = Arc::new(CursorKey::from_secret(b"another key"));
        assert_eq!(other.cursor_paged(items(9)), invalid);
        // A trailing slash is the same collection.
        let mut slash = ctx(&[("pagelen", "2"), ("q", "a%3D1"), ("cursor", &good)]);
        slash.path = "/2.0/x/".into();
        assert!(slash.cursor_paged(items(9)).is_ok());
    }

    #[test]
    fn random_keys_differ() {
        let a = CursorKey::random().sign("b", 1);
        let b = CursorKey::random().sign("b", 1);
        assert_ne!(a, b);
        assert!(CursorKey::random().verify("b", &a).is_none());
    }
}
