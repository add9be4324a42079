//! `source.kind = "hr_http"`: people from an HR system's JSON API (a BambooHR-style employee
//! directory, a Workday-style custom report, any paged JSON list), fields taken by JSON
//! pointer (RFC 6901) from each record.
//!
//! Fail closed: every page must arrive, whole, as JSON with the records array where it is
//! configured; a non-2xx answer (after the retries a 5xx, a 429 or a cut-off connection get),
//! malformed JSON, a page sequence that breaks off, loops, leaves the first page's origin or
//! runs past `source.max_pages`, or a read longer than `source.read_timeout_secs` fails the
//! read, and the run changes nothing. Errors name the URL without credentials (query values
//! whose names look secret are shown as `***`) and the page.

use super::hr::Record;
use super::SourceError;
use crate::config::{HrAuth, HrHttpSettings, Pagination};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// The URL as messages show it: no user info, secret-looking query values masked.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = [
                    "token",
                    "key",
                    "secret",
                    "pass",
                    "pwd",
                    "auth",
                    "sig",
                    "code",
                    "sid",
                    "session",
                    "credential",
                ]
                .iter()
                .any(|w| k.to_ascii_lowercase().contains(w));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The `rel="next"` target of RFC 8288 `Link` header values, if any.
pub fn next_link<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    for v in values {
        let mut rest = v;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                break;
            };
            let target = &rest[open + 1..open + close];
            let after = &rest[open + close + 1..];
            // Parameters run to the next link (a `,` followed by `<`), or the end.
            let end = after.find(",").map_or(after.len(), |c| {
                after[c..].find('<').map_or(after.len(), |l| c + l)
            });
            let params = &after[..end];
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel")
                    .map(|r| r.trim_start().strip_prefix('=').unwrap_or(""))
                    .is_some_and(|r| {
                        r.trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|t| t.eq_ignore_ascii_case("next"))
                    })
            });
            if is_next {
                return Some(target.to_owned());
            }
            rest = &after[end..];
        }
    }
    None
}

/// A record field's value as text: strings as they are, numbers and booleans written out;
/// null, objects and arrays are no value (an array of scalars gives each, for attributes).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One record of a page, its fields taken by pointer.
pub fn record(v: &Value, number: usize, cfg: &HrHttpSettings) -> Record {
    let f = &cfg.hr.fields;
    let get = |p: &Option<String>| p.as_deref().and_then(|p| v.pointer(p)).and_then(scalar);
    let mut attributes = Vec::new();
    for (a, p) in &f.attributes {
        match v.pointer(p) {
            Some(Value::Array(items)) => {
                attributes.extend(items.iter().filter_map(scalar).map(|x| (a.clone(), x)))
            }
            Some(x) => attributes.extend(scalar(x).map(|x| (a.clone(), x))),
            None => {}
        }
    }
    Record {
        number,
        stable_id: v.pointer(&f.stable_id).and_then(scalar),
        email: get(&f.email),
        account_id: get(&f.account_id),
        display_name: get(&f.display_name),
        status: get(&f.status),
        termination_date: get(&f.termination_date),
        attributes,
    }
}

#[derive(Clone)]
pub struct HrHttpSource {
    pub cfg: HrHttpSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for HrHttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HrHttpSource")
            .field("url", &self.origin())
            .finish_non_exhaustive()
    }
}

impl HrHttpSource {
    pub fn new(cfg: HrHttpSettings) -> HrHttpSource {
        crate::tls::install_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("bbsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        HrHttpSource { cfg, http }
    }

    pub fn origin(&self) -> String {
        url::Url::parse(&self.cfg.url)
            .map(|u| redact(&u))
            .unwrap_or_else(|_| "(source.url does not parse)".into())
    }

    fn err(&self, message: String) -> SourceError {
        SourceError::Hr {
            origin: format!("HR API {}", self.origin()),
            message,
        }
    }

    /// Every record of every page, or an error; under `source.read_timeout_secs` as a whole.
    pub async fn read_records(&self) -> Result<Vec<Record>, SourceError> {
        match tokio::time::timeout(self.cfg.read_timeout, self.read_all()).await {
            Ok(r) => r,
            Err(_) => Err(self.err(format!(
                "the read took longer than source.read_timeout_secs ({} s); nothing is changed",
                self.cfg.read_timeout.as_secs()
            ))),
        }
    }

    async fn read_all(&self) -> Result<Vec<Record>, SourceError> {
        let first =
            url::Url::parse(&self.cfg.url).map_err(|e| self.err(format!("source.url: {e}")))?;
        let mut url = self.page_url(&first, 0, 0);
        let mut seen: HashSet<String> = HashSet::new();
        let mut out: Vec<Record> = Vec::new();
        for page in 1.. {
            if page > self.cfg.max_pages {
                return Err(self.err(format!(
                    "more than source.max_pages ({}) pages; refusing a page sequence that does not end",
                    self.cfg.max_pages
                )));
            }
            if !seen.insert(url.to_string()) {
                return Err(self.err(format!(
                    "page {page} would read {} again: the page sequence loops",
                    redact(&url)
                )));
            }
            let (body, link) = self.fetch(&url, page).await?;
            let at = |m: String| self.err(format!("page {page} ({}): {m}", redact(&url)));
            let doc: Value =
                serde_json::from_slice(&body).map_err(|e| at(format!("malformed JSON: {e}")))?;
            let Some(Value::Array(items)) = doc.pointer(&self.cfg.records) else {
                return Err(at(format!(
                    "no array of records at source.records {:?}",
                    self.cfg.records
                )));
            };
            let n = items.len();
            for item in items {
                let number = out.len() + 1;
                out.push(record(item, number, &self.cfg));
            }
            let next = match &self.cfg.pagination {
                Pagination::None => None,
                Pagination::NextUrl {
                    pointer,
                    absent_ends,
                } => match doc.pointer(pointer) {
                    None if *absent_ends => None,
                    None => {
                        return Err(at(format!(
                            "no next-page value at source.next_pointer {pointer:?} (null or \"\" ends the read; if this API leaves it out on its last page, set source.next_may_be_absent = true)"
                        )))
                    }
                    Some(Value::Null) => None,
                    Some(Value::String(s)) if s.trim().is_empty() => None,
                    // The value is not shown: next URLs often repeat a query secret.
                    Some(Value::String(s)) => Some(
                        url.join(s.trim())
                            .map_err(|e| at(format!("the next URL at {pointer} is not a URL: {e}")))?,
                    ),
                    Some(_) => return Err(at(format!("the value at {pointer} is not a URL"))),
                },
                Pagination::Page { .. } | Pagination::Offset { .. } => {
                    (n > 0).then(|| self.page_url(&first, page, out.len()))
                }
                Pagination::Link => match link {
                    None => None,
                    Some(l) => Some(
                        url.join(&l)
                            .map_err(|e| at(format!("the Link rel=next target is not a URL: {e}")))?,
                    ),
                },
            };
            let Some(next) = next else {
                break;
            };
            // Credentials go only where the first page is: a next URL elsewhere is refused.
            if next.origin() != first.origin() {
                return Err(at(format!(
                    "the next page is on another origin ({}); refusing to send the credentials there",
                    redact(&next)
                )));
            }
            url = next;
        }
        Ok(out)
    }

    /// The URL of page `index` (0-based; `offset` records read before it) for the page and
    /// offset styles; the first URL as configured otherwise.
    fn page_url(&self, first: &url::Url, index: usize, offset: usize) -> url::Url {
        let mut u = first.clone();
        let set = |u: &mut url::Url, pairs: &[(&str, String)]| {
            let keep: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut()
                .clear()
                .extend_pairs(keep)
                .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        };
        match &self.cfg.pagination {
            Pagination::Page {
                param,
                size_param,
                size,
                first: number,
            } => {
                let mut pairs = vec![(param.as_str(), (number + index as u64).to_string())];
                if let Some(sp) = size_param {
                    pairs.push((sp.as_str(), size.to_string()));
                }
                set(&mut u, &pairs);
            }
            Pagination::Offset {
                param,
                limit_param,
                size,
            } => set(
                &mut u,
                &[
                    (param.as_str(), offset.to_string()),
                    (limit_param.as_str(), size.to_string()),
                ],
            ),
            _ => {}
        }
        u
    }

    /// One page's body and its `Link: rel="next"`, with retries on 5xx, 429 and transport
    /// failures (exponential back-off with jitter; a `Retry-After` in seconds is honoured).
    async fn fetch(
        &self,
        url: &url::Url,
        page: usize,
    ) -> Result<(bytes::Bytes, Option<String>), SourceError> {
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .http
                .get(url.clone())
                .timeout(self.cfg.timeout)
                .header(reqwest::header::ACCEPT, "application/json");
            req = match &self.cfg.auth {
                HrAuth::None => req,
                HrAuth::Bearer(t) => req.bearer_auth(t.expose()),
                HrAuth::Basic { username, password } => {
                    req.basic_auth(username, Some(password.expose()))
                }
            };
            let why = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let link = next_link(
                            resp.headers()
                                .get_all(reqwest::header::LINK)
                                .iter()
                                .filter_map(|v| v.to_str().ok()),
                        );
                        match resp.bytes().await {
                            Ok(b) => return Ok((b, link)),
                            Err(e) => format!("the body was cut off: {}", transport(&e)),
                        }
                    } else if status.is_server_error() || status.as_u16() == 429 {
                        let wait = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        if attempt < self.cfg.max_retries {
                            self.back_off(attempt, wait).await;
                            attempt += 1;
                            continue;
                        }
                        format!("answered {status}")
                    } else {
                        // 4xx: retrying cannot help (credentials, a wrong URL).
                        return Err(self.err(format!(
                            "page {page} ({}): answered {status}; nothing is changed",
                            redact(url)
                        )));
                    }
                }
                Err(e) => transport(&e),
            };
            if attempt < self.cfg.max_retries {
                self.back_off(attempt, None).await;
                attempt += 1;
                continue;
            }
            return Err(self.err(format!(
                "page {page} ({}): {why} (after {} retries); nothing is changed",
                redact(url),
                self.cfg.max_retries
            )));
        }
    }

    async fn back_off(&self, attempt: u32, retry_after: Option<u64>) {
        let base = Duration::from_millis(250u64 << attempt.min(5));
        let wait = match retry_after {
            Some(s) => Duration::from_secs(s.min(60)),
            None => base + Duration::from_millis(fastrand::u64(0..=base.as_millis() as u64 / 2)),
        };
        tracing::warn!(
            url = %self.origin(),
            attempt = attempt + 1,
            wait_ms = wait.as_millis() as u64,
            "HR API request failed; retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

/// A transport error without the URL reqwest puts in its message (it may carry a query
/// secret).
fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out (source.timeout_secs)"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut off"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_other_relations() {
        let next = |v: &str| next_link(std::iter::once(v));
        assert_eq!(
            next(
                r#"<https://hr.test/e?page=1>; rel="prev", <https://hr.test/e?page=3>; rel="next""#
            ),
            Some("https://hr.test/e?page=3".into())
        );
        assert_eq!(next(r#"</e?c=abc>; rel=next"#), Some("/e?c=abc".into()));
        assert_eq!(
            next(r#"<https://hr.test/e?a=1,2>; title="x, y"; rel="last next""#),
            Some("https://hr.test/e?a=1,2".into())
        );
        assert_eq!(next(r#"<https://hr.test/e?page=9>; rel="last""#), None);
        assert_eq!(next(""), None);
        assert_eq!(
            next_link([r#"<a>; rel="prev""#, r#"<b>; rel="next""#].into_iter()),
            Some("b".into())
        );
    }

    #[test]
    fn urls_in_messages_carry_no_credentials() {
        let u = url::Url::parse("https://user:pw@hr.test/x?api_key=s3cret&page=2&access_token=t")
            .expect("url");
        let shown = redact(&u);
        assert_eq!(
            shown,
            "https://hr.test/x?api_key=***&page=2&access_token=***"
        );
    }
}
