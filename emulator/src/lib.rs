//! In-memory emulator of the Bitbucket Cloud endpoints a group/permission sync daemon uses
//! (1.0 groups and group-privileges, 2.0 repositories, members, workspace permissions and
//! permissions-config, the OAuth client-credentials token endpoint, 1.0 invitations) and the
//! Atlassian Admin API under `/admin` ([`admin`]), served over real HTTP.
//!
//! One emulator = one workspace. See README.md for the seed format and every endpoint.
//!
//! Besides serving, it reproduces how the real service limits and fails: a rolling rate window
//! that counts refused requests ([`auth::RateLimiter`]), an optional `Retry-After`
//! ([`Emulator::set_retry_after`]), latency ([`Emulator::set_latency`]), injected faults per
//! endpoint family, seeded ([`Fault`], [`FaultKind`]), and signed page cursors
//! ([`paging::CursorKey`]).

pub mod admin;
pub mod auth;
pub mod bbql;
pub mod conn;
pub mod faults;
pub mod fields;
pub mod http;
pub mod oauth;
pub mod paging;
pub mod router;
pub mod routes_v1;
pub mod routes_v2;
pub mod seed;
pub mod state;

pub use faults::{BrokenNextMode, Fault, FaultKind, DEFAULT_FAULT_SEED};
pub use seed::{
    admin_group_id_for, group_slug_for, load_seed, CredentialKind, Seed, SeedCredential, SeedError,
    SeedGroup, SeedGroupGrant, SeedInvitation, SeedOrganisation, SeedProject,
    SeedProjectGroupGrant, SeedProjectUserGrant, SeedRepo, SeedRepoInvitation, SeedUser,
    SeedUserGrant, SeedWorkspace,
};

use crate::auth::{AuthError, AuthState, Caller, Clock, Family, Refusal};
use crate::conn::{ConnTag, FaultListener};
use crate::faults::{FaultTable, Probe, HTML_BODY, MALFORMED_BODY};
use crate::http::{percent_decode, Body as ReplyBody, Reply, Req};
use crate::paging::CursorKey;
use crate::router::{Api, Match, RouteId};
use crate::state::Store;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// The exact body of every 429.
pub const RATE_LIMIT_BODY: &str = "Rate limit for this resource has been exceeded";
/// The exact body of a 401 for an expired OAuth token.
pub const EXPIRED_TOKEN_BODY: &str =
    "Access token expired. Use your refresh token to obtain a new access token.";
/// Route template of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// One served request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// Route template, e.g. `/2.0/repositories/{ws}` (`(unmatched)` when no route matched).
    pub route: String,
    /// Actual path and query as requested.
    pub path: String,
    pub status: u16,
    /// Seed credential id (never the secret); `None` when unauthenticated.
    pub credential: Option<String>,
}

impl RequestRecord {
    /// `METHOD /route/template`, the key of [`Emulator::request_counts`].
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.route)
    }
}

/// Whether and how a rate-limit 429 says when to retry (see [`Emulator::set_retry_after`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfterMode {
    /// No `Retry-After` (the default: none was seen in captured 429s, sheet section 7).
    #[default]
    None,
    /// `Retry-After: <seconds>`, rounded up.
    Seconds,
    /// `Retry-After: <RFC 7231 HTTP date>`, rounded up to the next whole second.
    HttpDate,
}

struct Shared {
    store: Mutex<Store>,
    auth: Mutex<AuthState>,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<FaultTable>,
    retry_after: Mutex<RetryAfterMode>,
    /// Sleep before answering each API request.
    latency: Mutex<Duration>,
    clock: Clock,
    addr: SocketAddr,
    /// Set to true when the emulator stops (ends hanging requests).
    stop: watch::Sender<bool>,
    /// Signs the page cursors this emulator hands out (random per emulator).
    cursor_key: Arc<CursorKey>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running emulator.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Validates the seed, binds `listen` (e.g. `127.0.0.1:0`) and serves in a spawned task.
    /// An invalid seed answers `ErrorKind::InvalidInput`.
    pub async fn start(seed: Seed, listen: SocketAddr) -> std::io::Result<Emulator> {
        let store = Store::new(&seed)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            auth: Mutex::new(AuthState::default()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultTable::new(
                seed.fault_seed.unwrap_or(DEFAULT_FAULT_SEED),
            )),
            retry_after: Mutex::new(RetryAfterMode::None),
            latency: Mutex::new(Duration::ZERO),
            clock: Clock::default(),
            addr,
            stop: watch::Sender::new(false),
            cursor_key: Arc::new(CursorKey::random()),
        });
        let app = Router::new()
            .route("/_emulator/state", get(emu_state))
            .route("/_emulator/requests", get(emu_requests))
            .route("/_emulator/requests/reset", post(emu_reset))
            .route("/_emulator/rate-limit", post(emu_rate_limit))
            .route("/_emulator/retry-after", post(emu_retry_after))
            .route("/_emulator/latency", post(emu_latency))
            .route(
                "/_emulator/faults",
                get(emu_faults_list)
                    .post(emu_faults_add)
                    .delete(emu_faults_clear),
            )
            .route("/_emulator/fault-seed", post(emu_fault_seed))
            .fallback(dispatch)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let listener = FaultListener::new(listener);
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<ConnTag>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "bitbucket emulator server stopped");
            }
        });
        tracing::info!(%addr, "bitbucket emulator listening");
        Ok(Emulator {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Current state in seed form (deep copy, secrets included).
    pub fn state(&self) -> Seed {
        lock(&self.shared.store).to_seed()
    }

    /// Replaces the whole state (validated like a start seed); issued OAuth tokens and
    /// rate-limit windows are kept. Lets tests simulate changes made outside bbsync. A seed
    /// with a `fault_seed` also reseeds the fault generator.
    pub fn replace_state(&self, seed: Seed) -> Result<(), String> {
        let store = Store::new(&seed)?;
        *lock(&self.shared.store) = store;
        if let Some(s) = seed.fault_seed {
            lock(&self.shared.faults).reseed(s);
        }
        Ok(())
    }

    /// Every request served (except `/_emulator/*`), in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Requests per `METHOD /route/template`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        counts(&lock(&self.shared.log))
    }

    pub fn reset_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Changes the per-credential hourly limit (0 = the default 1000); windows are kept. Every
    /// authenticated request counts against it, refused ones (429s included) too.
    pub fn set_rate_limit(&self, per_hour: u32) {
        lock(&self.shared.store).seed.rate_limit_per_hour = effective_limit(per_hour);
    }

    /// Whether a rate-limit 429 carries `Retry-After` (default [`RetryAfterMode::None`]). When
    /// set, the value is the time, on the emulator clock ([`Emulator::advance_time`] moves it),
    /// until a request of that credential would be allowed if it sent nothing meanwhile: until
    /// enough of the oldest requests in the window (the refused ones count) have left it.
    /// Faults injected with a 429 status are not affected (give them a header).
    pub fn set_retry_after(&self, mode: RetryAfterMode) {
        *lock(&self.shared.retry_after) = mode;
    }

    /// Answers every API request (not `/_emulator/*`) only after sleeping this long
    /// (`tokio::time::sleep`, so tests under paused time do not wait). Default zero.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// Forgets every rate-limit window (all credentials start from zero).
    pub fn reset_rate_limits(&self) {
        lock(&self.shared.auth).limiter.clear();
    }

    /// Applies `fault` to matching requests until it is used up (see [`Fault`] and
    /// [`FaultKind`]); the first matching fault of those injected that fires wins.
    ///
    /// # Panics
    /// When the fault is not valid ([`Fault::validate`]: an unknown family, a probability
    /// outside 0..=1): a fault that can never match is a broken test.
    pub fn inject_fault(&self, fault: Fault) {
        if let Err(e) = self.try_inject_fault(fault) {
            panic!("invalid emulator fault: {e}");
        }
    }

    /// [`Emulator::inject_fault`], answering an invalid fault with why instead of panicking.
    pub fn try_inject_fault(&self, fault: Fault) -> Result<(), String> {
        lock(&self.shared.faults).push(fault)
    }

    /// The faults still injected, in order, with what is left of their `times`.
    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.shared.faults).list()
    }

    /// Removes every injected fault (the fault generator keeps its state).
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Restarts the generator deciding whether a fault with a `probability` fires from `seed`
    /// (the seed JSON's `fault_seed`; [`DEFAULT_FAULT_SEED`] when neither is given): the same
    /// seed and the same requests in the same order give the same faults.
    pub fn set_fault_seed(&self, seed: u64) {
        lock(&self.shared.faults).reseed(seed);
        lock(&self.shared.store).seed.fault_seed = Some(seed);
    }

    /// Moves the emulator's clock forward (OAuth expiry, rate-limit windows) without sleeping.
    pub fn advance_time(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Stops serving (waits up to 2 s for open connections, then aborts).
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn effective_limit(per_hour: u32) -> u32 {
    if per_hour == 0 {
        1000
    } else {
        per_hour
    }
}

fn counts(log: &[RequestRecord]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in log {
        *m.entry(r.key()).or_insert(0) += 1;
    }
    m
}

// ----- /_emulator/* -----

async fn emu_state(State(shared): State<Arc<Shared>>) -> Response {
    let mut seed = lock(&shared.store).to_seed();
    seed.credentials = seed.credentials.iter().map(|c| c.masked()).collect();
    axum::Json(seed).into_response()
}

async fn emu_requests(State(shared): State<Arc<Shared>>) -> Response {
    let log = lock(&shared.log).clone();
    axum::Json(json!({"counts": counts(&log), "requests": log})).into_response()
}

async fn emu_reset(State(shared): State<Arc<Shared>>) -> Response {
    lock(&shared.log).clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn emu_rate_limit(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        per_hour: u32,
    }
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) => {
            lock(&shared.store).seed.rate_limit_per_hour = effective_limit(b.per_hour);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"per_hour\": N}}: {e}"),
        )
            .into_response(),
    }
}

async fn emu_retry_after(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        mode: RetryAfterMode,
    }
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) => {
            *lock(&shared.retry_after) = b.mode;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"mode\": \"none\" | \"seconds\" | \"http_date\"}}: {e}"),
        )
            .into_response(),
    }
}

async fn emu_latency(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        ms: u64,
    }
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) => {
            *lock(&shared.latency) = Duration::from_millis(b.ms);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"ms\": N}}: {e}"),
        )
            .into_response(),
    }
}

async fn emu_faults_list(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(lock(&shared.faults).list()).into_response()
}

async fn emu_faults_add(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let pushed = serde_json::from_slice::<Fault>(&body)
        .map_err(|e| format!("expected a JSON fault: {e}"))
        .and_then(|f| lock(&shared.faults).push(f));
    match pushed {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn emu_faults_clear(State(shared): State<Arc<Shared>>) -> Response {
    lock(&shared.faults).clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn emu_fault_seed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        seed: u64,
    }
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) => {
            lock(&shared.faults).reseed(b.seed);
            lock(&shared.store).seed.fault_seed = Some(b.seed);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"seed\": N}}: {e}"),
        )
            .into_response(),
    }
}

/// `t` as an RFC 3339 / ISO-8601 UTC timestamp, whole seconds (`2026-12-02T10:11:30Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `t` rounded up to the next whole second (an HTTP date has no fractions).
fn ceil_to_second(t: std::time::SystemTime) -> std::time::SystemTime {
    let nanos = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    if nanos == 0 {
        t
    } else {
        t + Duration::from_nanos(u64::from(1_000_000_000 - nanos))
    }
}

// ----- the Bitbucket API -----

/// Decoded path segments (without the leading empty one, nor a single trailing empty one).
fn path_segments(raw_path: &str) -> Vec<String> {
    let mut segments: Vec<String> = raw_path
        .split('/')
        .skip(1)
        .map(|s| percent_decode(s, false))
        .collect();
    if segments.len() > 1 && segments.last().is_some_and(|s| s.is_empty()) {
        segments.pop();
    }
    segments
}

/// `http://host:port` from the Host header (the listening address without one).
fn origin_of(headers: &HeaderMap, addr: SocketAddr) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| addr.to_string());
    format!("http://{host}")
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    conn: Option<Extension<ConnectInfo<ConnTag>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_string();
    if raw_path == "/_emulator" || raw_path.starts_with("/_emulator/") {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = method.as_str();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| raw_path.clone());
    let segments = path_segments(&raw_path);
    let (route, family): (&'static str, Option<Family>) =
        match router::match_route(method, &segments) {
            Match::Found(d, _) => (d.pattern, d.family),
            Match::MethodNotAllowed(p) => (p, None),
            Match::NotFound => (UNMATCHED_ROUTE, None),
        };
    let taken = lock(&shared.faults).take(&Probe {
        method,
        path_and_query: &path_and_query,
        family,
        v2_get: method == "GET" && Api::of_path(&segments) == Api::V2,
    });
    let serve = |apply: bool| shared.serve(method, &raw_path, uri.query(), &headers, &body, apply);
    let Some((fault_id, fault)) = taken else {
        let (reply, caller, credential, route) = serve(true);
        shared.record(method, route, path_and_query, reply.status, credential);
        return to_response(reply, caller.as_ref());
    };
    let conn = conn.map(|Extension(ConnectInfo(c))| c);
    match fault.kind {
        FaultKind::Status
        | FaultKind::Reset
        | FaultKind::Hang
        | FaultKind::Malformed
        | FaultKind::Html200 => {
            // Answered instead of the request: recorded without a credential, no rate
            // budget spent, nothing changed (unless served first, `after_serving`).
            if fault.after_serving {
                let _ = serve(true);
            }
            let status = match fault.kind {
                FaultKind::Status => fault.status,
                FaultKind::Malformed | FaultKind::Html200 => 200,
                _ => 0,
            };
            shared.record(method, route, path_and_query, status, None);
            match fault.kind {
                FaultKind::Reset => closed(conn.as_ref()),
                FaultKind::Hang => {
                    shared.hang(fault.hang_ms).await;
                    closed(conn.as_ref())
                }
                _ => fault_response(&fault),
            }
        }
        FaultKind::Truncated => {
            let (reply, caller, credential, route) = serve(true);
            shared.record(method, route, path_and_query, reply.status, credential);
            let resp = to_response(reply, caller.as_ref());
            let len = resp.body().size_hint().exact().unwrap_or(0);
            if let Some(c) = &conn {
                c.cut((len > 0).then(|| usize::try_from(len / 2).unwrap_or(0)));
            }
            resp
        }
        FaultKind::Slow => {
            let (reply, caller, credential, route) = serve(true);
            shared.record(method, route, path_and_query, reply.status, credential);
            let resp = to_response(reply, caller.as_ref());
            slow(resp, fault.chunk_bytes, fault.hang_ms, shared.clone()).await
        }
        FaultKind::LostWrite => {
            let (reply, caller, credential, route) = serve(false);
            shared.record(method, route, path_and_query, reply.status, credential);
            to_response(reply, caller.as_ref())
        }
        FaultKind::BrokenNext => {
            let (mut reply, caller, credential, route) = serve(true);
            if reply.status == 200 {
                if let ReplyBody::Json(Value::Object(page)) = &mut reply.body {
                    if let Some(Value::String(next)) = page.get_mut("next") {
                        let this_page =
                            format!("{}{path_and_query}", origin_of(&headers, shared.addr));
                        *next = broken_next(next, fault.broken_next, &this_page);
                        lock(&shared.faults).used(fault_id);
                    }
                }
            }
            shared.record(method, route, path_and_query, reply.status, credential);
            to_response(reply, caller.as_ref())
        }
    }
}

/// `resp` with its body sent in pieces of `piece` bytes (a tenth of it by default), waiting
/// `wait_ms` before each piece after the first (cut short when the emulator stops), with its
/// full `Content-Length`.
async fn slow(
    resp: Response,
    piece: Option<usize>,
    wait_ms: Option<u64>,
    shared: Arc<Shared>,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    // The emulator's own answers are in memory already; this cannot fail.
    let whole = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let size = piece.unwrap_or(whole.len().div_ceil(10)).max(1);
    let pieces: Vec<Bytes> = (0..whole.len())
        .step_by(size)
        .map(|at| whole.slice(at..(at + size).min(whole.len())))
        .collect();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(whole.len()));
    let stream =
        futures_util::stream::unfold((pieces.into_iter(), true), move |(mut rest, first)| {
            let shared = shared.clone();
            async move {
                let next = rest.next()?;
                if !first {
                    shared.hang(Some(wait_ms.unwrap_or(0))).await;
                }
                Some((Ok::<_, std::io::Error>(next), (rest, false)))
            }
        });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Closes the connection without an answer (the response returned is never sent).
fn closed(conn: Option<&ConnTag>) -> Response {
    if let Some(c) = conn {
        c.close();
    }
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// The answer of a [`FaultKind::Status`], [`FaultKind::Malformed`] or [`FaultKind::Html200`].
fn fault_response(fault: &Fault) -> Response {
    let (status, body, default_type) = match fault.kind {
        FaultKind::Malformed => (
            StatusCode::OK,
            if fault.body.is_empty() {
                MALFORMED_BODY
            } else {
                &fault.body
            },
            "application/json",
        ),
        FaultKind::Html200 => (
            StatusCode::OK,
            if fault.body.is_empty() {
                HTML_BODY
            } else {
                &fault.body
            },
            "text/html; charset=utf-8",
        ),
        _ => (
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            fault.body.as_str(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    let ct = fault.content_type.as_deref().unwrap_or(default_type);
    if let Ok(v) = HeaderValue::from_str(ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    for (name, value) in &fault.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

/// The `next` link a [`FaultKind::BrokenNext`] fault answers instead of `next`.
fn broken_next(next: &str, mode: BrokenNextMode, this_page: &str) -> String {
    match mode {
        BrokenNextMode::SamePage => this_page.to_string(),
        BrokenNextMode::NotFound => match next.find("/2.0/") {
            Some(i) => format!("{}/2.0/_gone/{}", &next[..i], &next[i + 5..]),
            None => format!("{next}/_gone"),
        },
        BrokenNextMode::BadRequest => {
            let (base, query) = next.split_once('?').unwrap_or((next, ""));
            let mut pairs = http::raw_pairs(query);
            if let Some(p) = pairs.iter_mut().find(|(k, _)| k == "cursor") {
                p.1 = "c3BvaWxlZA".into();
            } else if let Some(p) = pairs.iter_mut().find(|(k, _)| k == "page") {
                p.1 = "0".into();
            } else {
                pairs.push(("page".into(), "0".into()));
            }
            let query: Vec<String> = pairs
                .into_iter()
                .map(|(k, v)| if v.is_empty() { k } else { format!("{k}={v}") })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
    }
}

fn to_response(reply: Reply, caller: Option<&Caller>) -> Response {
    let (bytes, content_type) = match reply.body {
        ReplyBody::Json(v) => (
            serde_json::to_vec(&v).unwrap_or_default(),
            Some("application/json"),
        ),
        ReplyBody::RawJson(bytes) => (bytes, Some("application/json")),
        ReplyBody::Text(s) => (s.into_bytes(), Some("text/plain; charset=utf-8")),
        ReplyBody::Empty => (Vec::new(), None),
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if let Some(c) = caller {
        h.insert(
            HeaderName::from_static("x-credential-type"),
            HeaderValue::from_static(c.kind.header_value()),
        );
        if let Ok(v) = HeaderValue::from_str(&c.scopes.join(", ")) {
            h.insert(HeaderName::from_static("x-oauth-scopes"), v);
        }
    }
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    }
    resp
}

fn unauthorized(api: Api, e: &AuthError) -> Reply {
    let reply = match (e, api) {
        (AuthError::Expired(_), _) => Reply::text(401, EXPIRED_TOKEN_BODY),
        (_, Api::V1) => Reply::text(401, "Unauthorized"),
        (AuthError::Missing, _) => Reply::error(401, "This API requires authentication"),
        (_, _) => Reply::error(401, "Invalid credentials"),
    };
    reply.with_header("www-authenticate", "Basic realm=\"Bitbucket.org HTTP\"")
}

fn refusal_reply(api: Api, r: Refusal) -> Reply {
    match r {
        Refusal::CredentialType(msg) => match api {
            Api::V1 => Reply::text(403, msg),
            _ => Reply::error(403, msg),
        },
        Refusal::NotAdmin => {
            let msg = "You must be an administrator of this workspace to access this resource.";
            match api {
                Api::V1 => Reply::text(403, msg),
                _ => Reply::error(403, msg),
            }
        }
        Refusal::MissingScopes { required, granted } => {
            let missing: Vec<&String> = required.iter().filter(|r| !granted.contains(r)).collect();
            let accepted = required.join(", ");
            let reply = match api {
                Api::V1 => Reply::text(
                    403,
                    format!(
                        "Your credentials lack one or more required privilege scopes. Missing: {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                _ => Reply::error_detail(
                    403,
                    "Your credentials lack one or more required privilege scopes.",
                    json!({"required": required, "granted": granted}),
                ),
            };
            reply.with_header("x-accepted-oauth-scopes", accepted)
        }
    }
}

impl Shared {
    fn record(
        &self,
        method: &str,
        route: &str,
        path: String,
        status: u16,
        credential: Option<String>,
    ) {
        let record = RequestRecord {
            method: method.to_string(),
            route: route.to_string(),
            path,
            status,
            credential,
        };
        tracing::debug!(method = %record.method, path = %record.path, status = record.status, "emulator request");
        lock(&self.log).push(record);
    }

    /// Waits `ms` milliseconds (tokio time; `None`: forever), or until the emulator stops.
    async fn hang(&self, ms: Option<u64>) {
        let mut stop = self.stop.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        match ms {
            Some(ms) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = stopped => {}
                }
            }
            None => stopped.await,
        }
    }

    /// Serves one Admin API (`/admin`) request: an `admin_api_key` only (401 otherwise), the
    /// same rate window as every credential (429 with `X-RateLimit-*`), JSON error bodies.
    #[allow(clippy::too_many_arguments)]
    fn serve_admin(
        &self,
        method: &str,
        m: Match,
        route: &'static str,
        authorization: Option<&str>,
        (raw_path, raw_query): (&str, Option<&str>),
        headers: &HeaderMap,
        body: &[u8],
        apply: bool,
    ) -> (Reply, Option<Caller>, Option<String>, &'static str) {
        let now = self.clock.now();
        if lock(&self.store).seed.organisation.is_none() {
            // No organisation: the Admin API does not exist here (before authentication).
            let reply = admin::error(
                404,
                "ADMIN-404",
                "No organisation is administered through this API.",
            );
            return (reply, None, None, route);
        }
        let resolved = auth::resolve_admin(authorization, &lock(&self.store));
        let caller = match resolved {
            Ok(c) => c,
            Err(e) => {
                let detail = match e {
                    AuthError::Missing => {
                        "This API requires an Admin API key (Authorization: Bearer <key>)."
                    }
                    _ => "The credentials are not a valid Admin API key.",
                };
                return (admin::error(401, "ADMIN-401", detail), None, None, route);
            }
        };
        let cred = Some(caller.credential_id.clone());
        let per_hour = effective_limit(lock(&self.store).seed.rate_limit_per_hour);
        let refused_for = {
            let mut auth = lock(&self.auth);
            if auth.limiter.allow(&caller.credential_id, now, per_hour) {
                None
            } else {
                Some(
                    auth.limiter
                        .retry_after(&caller.credential_id, now, per_hour)
                        .unwrap_or_default(),
                )
            }
        };
        if let Some(wait) = refused_for {
            let reset = ceil_to_second(self.clock.system_now() + wait);
            let reply = admin::error(429, "ADMIN-429", "Rate limit exceeded.")
                .with_header("x-ratelimit-limit", per_hour.to_string())
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", rfc3339(reset));
            return (reply, Some(caller), cred, route);
        }
        let (def, params) = match m {
            Match::Found(def, params) => (def, params),
            Match::MethodNotAllowed(_) => {
                let reply = admin::error(405, "ADMIN-405", format!("Method {method} not allowed"));
                return (reply, Some(caller), cred, route);
            }
            Match::NotFound => {
                let reply = admin::error(404, "ADMIN-404", "Resource not found");
                return (reply, Some(caller), cred, route);
            }
        };
        let raw_query_str = raw_query.unwrap_or("");
        let req = Req {
            method,
            params,
            query: http::form_pairs(raw_query_str),
            raw_query: http::raw_pairs(raw_query_str),
            raw_path,
            headers,
            body,
            caller: &caller,
            origin: origin_of(headers, self.addr),
            cursor_key: &self.cursor_key,
        };
        let mut store = lock(&self.store);
        let mut scratch = (!apply).then(|| store.clone());
        let target: &mut Store = match scratch.as_mut() {
            Some(copy) => copy,
            None => &mut store,
        };
        let reply = admin::handle(def.id, target, &req);
        drop(store);
        drop(scratch);
        (reply, Some(caller), cred, route)
    }

    /// Serves one Bitbucket API request: (reply, caller, credential id, route template).
    /// With `apply` false the endpoint runs against a copy of the state, thrown away after
    /// (a lost write); authentication and the rate limit happen as usual.
    fn serve(
        &self,
        method: &str,
        raw_path: &str,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        apply: bool,
    ) -> (Reply, Option<Caller>, Option<String>, &'static str) {
        let segments = path_segments(raw_path);
        let api = Api::of_path(&segments);
        let m = router::match_route(method, &segments);
        let route: &'static str = match &m {
            Match::Found(d, _) => d.pattern,
            Match::MethodNotAllowed(p) => p,
            Match::NotFound => UNMATCHED_ROUTE,
        };
        let now = self.clock.now();
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if api == Api::Admin {
            return self.serve_admin(
                method,
                m,
                route,
                authorization,
                (raw_path, raw_query),
                headers,
                body,
                apply,
            );
        }

        // The OAuth token endpoint authenticates the consumer itself.
        if let Match::Found(def, _) = &m {
            if def.id == RouteId::OAuthToken {
                let store = lock(&self.store);
                let mut auth = lock(&self.auth);
                let (reply, id) = oauth::handle(&store, &mut auth, now, authorization, body);
                return (reply, None, id, route);
            }
        }

        let resolved = {
            let store = lock(&self.store);
            let auth = lock(&self.auth);
            auth::resolve(authorization, &store, &auth, now)
        };
        let caller = match resolved {
            Ok(c) => c,
            Err(e) => {
                let id = match &e {
                    AuthError::Expired(id) => Some(id.clone()),
                    _ => None,
                };
                return (unauthorized(api, &e), None, id, route);
            }
        };
        let cred = Some(caller.credential_id.clone());

        let per_hour = effective_limit(lock(&self.store).seed.rate_limit_per_hour);
        let refused_for = {
            let mut auth = lock(&self.auth);
            if auth.limiter.allow(&caller.credential_id, now, per_hour) {
                None
            } else {
                Some(
                    auth.limiter
                        .retry_after(&caller.credential_id, now, per_hour)
                        .unwrap_or_default(),
                )
            }
        };
        if let Some(wait) = refused_for {
            let mut reply =
                Reply::text(429, RATE_LIMIT_BODY).with_header("content-type", "text/plain");
            match *lock(&self.retry_after) {
                RetryAfterMode::None => {}
                RetryAfterMode::Seconds => {
                    reply = reply.with_header("retry-after", ceil_secs(wait).to_string());
                }
                RetryAfterMode::HttpDate => {
                    let at = ceil_to_second(self.clock.system_now() + wait);
                    reply = reply.with_header("retry-after", httpdate::fmt_http_date(at));
                }
            }
            return (reply, Some(caller), cred, route);
        }

        let (def, params) = match m {
            Match::Found(def, params) => (def, params),
            Match::MethodNotAllowed(_) => {
                let reply = match api {
                    Api::V1 => Reply::text(405, "None"),
                    _ => Reply::error(405, format!("Method {method} not allowed")),
                };
                return (reply, Some(caller), cred, route);
            }
            Match::NotFound => {
                let reply = match api {
                    Api::V1 => Reply::text(404, "Not Found"),
                    _ => Reply::error(404, "Resource not found"),
                };
                return (reply, Some(caller), cred, route);
            }
        };

        let mut store = lock(&self.store);
        if let Some((_, ws)) = params.iter().find(|(k, _)| *k == "ws") {
            if ws.starts_with('{') {
                let reply = match api {
                    Api::V1 => Reply::text(405, "None"),
                    _ => Reply::error(
                        403,
                        "Workspace UUIDs are not accepted here: use the workspace slug",
                    ),
                };
                return (reply, Some(caller), cred, route);
            }
            if *ws != store.seed.workspace.slug {
                let reply = match api {
                    Api::V1 => Reply::text(404, "Not Found"),
                    _ => Reply::error(404, format!("No workspace with identifier '{ws}'.")),
                };
                return (reply, Some(caller), cred, route);
            }
        }
        if let Some(family) = def.family {
            if let Some(rule) = auth::scope_rule(family) {
                if let Err(r) = auth::authorize(rule, &caller, &store) {
                    return (refusal_reply(api, r), Some(caller), cred, route);
                }
            }
        }
        if (def.v1_write || def.v1_invitations()) && store.seed.workspace.organisation_managed {
            return (Reply::text(405, "None"), Some(caller), cred, route);
        }

        let raw_query_str = raw_query.unwrap_or("");
        let req = Req {
            method,
            params,
            query: http::form_pairs(raw_query_str),
            raw_query: http::raw_pairs(raw_query_str),
            raw_path,
            headers,
            body,
            caller: &caller,
            origin: origin_of(headers, self.addr),
            cursor_key: &self.cursor_key,
        };
        let mut scratch = (!apply).then(|| store.clone());
        let target: &mut Store = match scratch.as_mut() {
            Some(copy) => copy,
            None => &mut store,
        };
        let mut reply = match api {
            Api::V1 => routes_v1::handle(def.id, target, &req),
            _ => routes_v2::handle(def.id, target, &req),
        };
        drop(store);
        drop(scratch);
        if api == Api::V2 && method == "GET" && reply.status == 200 {
            if let ReplyBody::Json(v) = &reply.body {
                let trimmed = fields::apply(v, &reply.hidden_fields, req.q("fields"));
                reply.body = ReplyBody::Json(trimmed);
            }
        }
        (reply, Some(caller), cred, route)
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_796_210_490)),
            "2026-12-02T11:21:30Z"
        );
    }
}
