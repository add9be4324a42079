//! Injected faults: which requests they match, what they do instead of (or on top of) the
//! real answer, and the seeded generator that decides when a fault with a probability fires.

use crate::auth::Family;
use serde::{Deserialize, Serialize};

/// What an injected [`Fault`] does to a request it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer [`Fault::status`] with [`Fault::body`], [`Fault::content_type`] (`text/plain`
    /// by default) and [`Fault::headers`] instead of serving the request.
    #[default]
    Status,
    /// Close the connection without sending a byte of an answer.
    Reset,
    /// Send nothing for [`Fault::hang_ms`] (tokio time), then close the connection without an
    /// answer; with no `hang_ms`, until the emulator stops. A client's timeout fires first.
    Hang,
    /// Serve the request for real, then send its status line and headers (with the real,
    /// full `Content-Length`) and only the first half of its body, and close the connection.
    /// An answer without a body (a 204) is cut after its status line.
    Truncated,
    /// Serve the request for real, then send its status line, its headers (with the real,
    /// full `Content-Length`) and its body in pieces of [`Fault::chunk_bytes`] bytes (default:
    /// a tenth of the body), waiting [`Fault::hang_ms`] (tokio time) before each piece after
    /// the first: a slow network, or, with one long wait, a body that stalls half-way.
    Slow,
    /// Answer 200, `Content-Type: application/json` (or [`Fault::content_type`]), with a body
    /// that is not valid JSON ([`Fault::body`] when not empty) instead of serving the request.
    Malformed,
    /// Answer 200, `Content-Type: text/html; charset=utf-8` (or [`Fault::content_type`]),
    /// with an HTML page ([`Fault::body`] when not empty), to reads and writes alike, instead
    /// of serving the request (a proxy's or a login page).
    Html200,
    /// Serve the request against a copy of the state and answer exactly what it answered
    /// (status, headers, body), then throw the copy away: the client is told a write
    /// succeeded that never happened. Reads are served as usual.
    LostWrite,
    /// Serve the request for real; on a 2.0 GET whose answer has a `next` link, replace that
    /// link as [`Fault::broken_next`] says. Only 2.0 GET requests match it, and it is used up
    /// (`times`) only by answers whose `next` it replaced.
    BrokenNext,
}

/// How a [`FaultKind::BrokenNext`] fault breaks the `next` link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokenNextMode {
    /// The same URL with its paging parameter spoiled: `cursor=` set to a token that was
    /// never handed out (cursor collections: 400 `Invalid cursor`) or `page=0`
    /// (page-numbered collections: 400 `Invalid page`).
    #[default]
    BadRequest,
    /// The same URL under a path that does not exist (`/2.0/_gone/...`): 404
    /// `Resource not found` (after authentication and the rate limit, like any unknown path).
    NotFound,
    /// The URL of the page just served, exactly as it was requested (made absolute): a client
    /// that follows it gets the same page again, forever.
    SamePage,
}

/// An answer the emulator gives instead of serving a request (or on top of serving it), for
/// tests of failure paths: a 5xx, a 400 to a query, an HTML page answered with 200, a
/// `Retry-After`, a connection reset, a hang, a cut body, a slow or stalling body, invalid
/// JSON, a lost write, a broken `next` link.
///
/// A fault matches a request by [`method`](Fault::method), [`path_contains`](Fault::path_contains)
/// and [`family`](Fault::family); it then fires with [`probability`](Fault::probability)
/// (always by default) and does what its [`kind`](Fault::kind) says, [`times`](Fault::times)
/// times or always. The first matching fault that fires wins.
///
/// In JSON (`POST /_emulator/faults`) every field is optional and unknown fields are refused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Only this method (`None`: any).
    pub method: Option<String>,
    /// Only requests whose path and query contain this text (`""`: any).
    pub path_contains: String,
    /// [`FaultKind::Status`]: the status answered.
    pub status: u16,
    /// [`FaultKind::Status`]: the body answered; [`FaultKind::Malformed`],
    /// [`FaultKind::Html200`]: the body answered instead of the default one when not empty.
    pub body: String,
    /// `text/plain` when `None` ([`FaultKind::Malformed`]: `application/json`,
    /// [`FaultKind::Html200`]: `text/html; charset=utf-8`).
    pub content_type: Option<String>,
    /// Extra response headers, e.g. `("retry-after", "120")` (kinds that answer instead of
    /// serving: `Status`, `Malformed`, `Html200`).
    pub headers: Vec<(String, String)>,
    /// Answer this many matching requests, then serve normally (`None`: every one).
    pub times: Option<u32>,
    /// Serve the request first (its effect happens), then answer with the fault instead of
    /// the real answer: an answer lost on the way back (a proxy's 502, a timeout). For the
    /// kinds that answer instead of serving (`Status`, `Reset`, `Hang`, `Malformed`,
    /// `Html200`); the others serve the request anyway.
    pub after_serving: bool,
    /// Only routes of this endpoint family (`None`: any route, unknown paths included):
    /// a name of the README's scope table, e.g. `1.0 groups write`,
    /// `repo permissions-config write` (see [`Family::from_name`]). Unknown names are refused
    /// by [`Fault::validate`].
    pub family: Option<String>,
    /// What the fault does (default [`FaultKind::Status`]).
    pub kind: FaultKind,
    /// [`FaultKind::Hang`]: close the connection after this many milliseconds (`None`: never
    /// answer while the emulator runs). [`FaultKind::Slow`]: the wait before each piece of
    /// the body after the first (`None`: none).
    pub hang_ms: Option<u64>,
    /// [`FaultKind::Slow`]: the size of each piece of the body (`None`: a tenth of it).
    pub chunk_bytes: Option<usize>,
    /// [`FaultKind::BrokenNext`]: how the `next` link is broken.
    pub broken_next: BrokenNextMode,
    /// Fire on a matching request with this probability, 0.0 to 1.0 (`None`: always), drawn
    /// from the emulator's seeded generator ([`crate::Emulator::set_fault_seed`]): the same
    /// seed and the same order of requests give the same faults. A draw is made only for a
    /// request the fault matches (and that is not used up).
    pub probability: Option<f64>,
}

impl PartialEq for Fault {
    fn eq(&self, other: &Fault) -> bool {
        let Fault {
            method,
            path_contains,
            status,
            body,
            content_type,
            headers,
            times,
            after_serving,
            family,
            kind,
            hang_ms,
            chunk_bytes,
            broken_next,
            probability,
        } = self;
        *method == other.method
            && *path_contains == other.path_contains
            && *status == other.status
            && *body == other.body
            && *content_type == other.content_type
            && *headers == other.headers
            && *times == other.times
            && *after_serving == other.after_serving
            && *family == other.family
            && *kind == other.kind
            && *hang_ms == other.hang_ms
            && *chunk_bytes == other.chunk_bytes
            && *broken_next == other.broken_next
            // Bitwise, so that equality stays reflexive (NaN is refused by validate anyway).
            && probability.map(f64::to_bits) == other.probability.map(f64::to_bits)
    }
}

impl Eq for Fault {}

impl Fault {
    /// Checks what cannot match or fire: an unknown `family`, a `probability` outside
    /// 0.0..=1.0.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.family {
            if Family::from_name(name).is_none() {
                let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                return Err(format!(
                    "unknown endpoint family '{name}' (known: {})",
                    known.join(", ")
                ));
            }
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability {p} is not between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// Default body of [`FaultKind::Malformed`]: the start of a 2.0 page, cut off.
pub const MALFORMED_BODY: &str = r#"{"pagelen": 10, "values": [{"type": "repository", "slug": "#;

/// Default body of [`FaultKind::Html200`].
pub const HTML_BODY: &str = "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Log in to continue - Bitbucket</title></head>\n<body>\n<h1>Log in to continue</h1>\n<p>Your session has expired. Log in to Bitbucket to continue.</p>\n</body>\n</html>\n";

/// splitmix64: tiny, seedable, good enough to decide whether a fault fires.
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Seed of the fault generator when neither the seed JSON (`fault_seed`) nor
/// [`crate::Emulator::set_fault_seed`] gives one.
pub const DEFAULT_FAULT_SEED: u64 = 0;

/// The injected faults, in injection order, and the generator.
#[derive(Debug)]
pub(crate) struct FaultTable {
    next_id: u64,
    list: Vec<Injected>,
    rng: Prng,
}

#[derive(Debug)]
struct Injected {
    id: u64,
    family: Option<Family>,
    fault: Fault,
}

/// What a request looks like to fault matching.
pub(crate) struct Probe<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub family: Option<Family>,
    /// A GET on a 2.0 path (the only requests [`FaultKind::BrokenNext`] matches).
    pub v2_get: bool,
}

impl FaultTable {
    pub fn new(seed: u64) -> FaultTable {
        FaultTable {
            next_id: 0,
            list: Vec::new(),
            rng: Prng::new(seed),
        }
    }

    pub fn reseed(&mut self, seed: u64) {
        self.rng = Prng::new(seed);
    }

    pub fn push(&mut self, fault: Fault) -> Result<(), String> {
        fault.validate()?;
        let family = fault.family.as_deref().and_then(Family::from_name);
        self.next_id += 1;
        self.list.push(Injected {
            id: self.next_id,
            family,
            fault,
        });
        Ok(())
    }

    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// The faults still injected (with what is left of their `times`).
    pub fn list(&self) -> Vec<Fault> {
        self.list.iter().map(|i| i.fault.clone()).collect()
    }

    /// The fault that fires for this request, if any, and its id. Its use is counted, except
    /// for [`FaultKind::BrokenNext`], counted by [`FaultTable::used`] once a link was broken.
    pub fn take(&mut self, probe: &Probe) -> Option<(u64, Fault)> {
        let rng = &mut self.rng;
        let hit = self.list.iter_mut().find(|i| {
            let f = &i.fault;
            let matches = f
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(probe.method))
                && probe.path_and_query.contains(&f.path_contains)
                && f.times != Some(0)
                && i.family.is_none_or(|fam| probe.family == Some(fam))
                && (f.kind != FaultKind::BrokenNext || probe.v2_get);
            matches && f.probability.is_none_or(|p| rng.next_f64() < p)
        })?;
        if hit.fault.kind != FaultKind::BrokenNext {
            if let Some(n) = &mut hit.fault.times {
                *n -= 1;
            }
        }
        Some((hit.id, hit.fault.clone()))
    }

    /// Counts one use of fault `id` (if still injected).
    pub fn used(&mut self, id: u64) {
        if let Some(i) = self.list.iter_mut().find(|i| i.id == id) {
            if let Some(n) = &mut i.fault.times {
                *n = n.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn probe<'a>(method: &'a str, path: &'a str, family: Option<Family>) -> Probe<'a> {
        Probe {
            method,
            path_and_query: path,
            family,
            v2_get: method == "GET" && path.starts_with("/2.0/"),
        }
    }

    #[test]
    fn prng_is_deterministic_and_uniform_enough() {
        let mut a = Prng::new(42);
        let mut b = Prng::new(42);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Prng::new(1).next_u64(), Prng::new(2).next_u64());
        let mut r = Prng::new(7);
        let below: usize = (0..10_000).filter(|_| r.next_f64() < 0.25).count();
        assert!((2200..2800).contains(&below), "{below}");
        let mut r = Prng::new(7);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.next_f64())));
    }

    #[test]
    fn matching_by_family_and_times() {
        let mut t = FaultTable::new(0);
        t.push(Fault {
            family: Some("1.0 groups write".into()),
            status: 503,
            times: Some(1),
            ..Fault::default()
        })
        .unwrap();
        let read = probe("GET", "/1.0/groups/acme", Some(Family::GroupsRead));
        let write = probe("POST", "/1.0/groups/acme", Some(Family::GroupsWrite));
        let unknown = probe("POST", "/1.0/nothing", None);
        assert!(t.take(&read).is_none());
        assert!(t.take(&unknown).is_none());
        assert_eq!(t.take(&write).unwrap().1.status, 503);
        assert!(t.take(&write).is_none(), "used up");
        assert_eq!(t.list()[0].times, Some(0));
        assert!(t
            .push(Fault {
                family: Some("groups".into()),
                ..Fault::default()
            })
            .unwrap_err()
            .contains("unknown endpoint family"));
        assert!(t
            .push(Fault {
                probability: Some(1.5),
                ..Fault::default()
            })
            .is_err());
        assert!(t
            .push(Fault {
                probability: Some(f64::NAN),
                ..Fault::default()
            })
            .is_err());
    }

    #[test]
    fn broken_next_counts_only_when_used() {
        let mut t = FaultTable::new(0);
        t.push(Fault {
            kind: FaultKind::BrokenNext,
            times: Some(1),
            ..Fault::default()
        })
        .unwrap();
        assert!(t.take(&probe("PUT", "/2.0/x", None)).is_none(), "not a GET");
        assert!(t.take(&probe("GET", "/1.0/x", None)).is_none(), "not 2.0");
        let (id, _) = t.take(&probe("GET", "/2.0/x", None)).unwrap();
        assert!(
            t.take(&probe("GET", "/2.0/x", None)).is_some(),
            "not used yet"
        );
        t.used(id);
        assert!(t.take(&probe("GET", "/2.0/x", None)).is_none());
    }

    #[test]
    fn probability_is_seeded() {
        let fired = |seed: u64| {
            let mut t = FaultTable::new(seed);
            t.push(Fault {
                probability: Some(0.5),
                status: 500,
                ..Fault::default()
            })
            .unwrap();
            (0..64)
                .map(|_| t.take(&probe("GET", "/2.0/x", None)).is_some())
                .collect::<Vec<bool>>()
        };
        assert_eq!(fired(9), fired(9));
        assert_ne!(fired(9), fired(10));
        let n = fired(9).iter().filter(|f| **f).count();
        assert!((16..48).contains(&n), "{n}");
        let mut t = FaultTable::new(0);
        for p in [0.0, 1.0] {
            t.clear();
            t.push(Fault {
                probability: Some(p),
                ..Fault::default()
            })
            .unwrap();
            let hits = (0..100)
                .filter(|_| t.take(&probe("GET", "/2.0/x", None)).is_some())
                .count();
            assert_eq!(hits, if p == 0.0 { 0 } else { 100 });
        }
    }

    #[test]
    fn json_defaults_keep_todays_behaviour() {
        let f: Fault = serde_json::from_str(r#"{"status": 503}"#).unwrap();
        assert_eq!(
            f,
            Fault {
                status: 503,
                ..Fault::default()
            }
        );
        assert_eq!(f.kind, FaultKind::Status);
        let f: Fault = serde_json::from_str(
            r#"{"kind": "broken_next", "broken_next": "same_page", "family": "members read", "probability": 0.5}"#,
        )
        .unwrap();
        assert_eq!(f.broken_next, BrokenNextMode::SamePage);
        assert!(serde_json::from_str::<Fault>(r#"{"stauts": 503}"#).is_err());
        let back: Fault = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
