//! The daemon's HTTP endpoints (`[http]`):
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` while the scheduler loop lives, else 503 and why |
//! | `GET /readyz` | 200 `ready` while the last successful reconcile is younger than `http.ready_max_age_secs`, else 503 and why |
//! | `GET /metrics` | Prometheus text |
//! | `GET /status` | JSON: mode, the run in progress, the last runs, pending changes, held revocations |
//! | `POST /sync` | bearer token: asks for a reconcile now (coalesced with one in progress); 202 |
//! | `POST /approve` | bearer token, `{"revocations": "<fingerprint>"}`: approves the held revocation set for the next run, which it asks for; 202, or 409 when that is not the held set |
//!
//! Without `http.token` both POSTs answer 403. The token is compared in constant time (SHA-256
//! digests of both sides, so not even its length shows). Every POST is logged, never the token.

use super::state::DaemonState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Largest `POST /approve` body: a fingerprint in a small JSON object.
const MAX_BODY: usize = 4096;

type Shared = Arc<DaemonState>;

/// The endpoints over `state`.
pub fn router(state: Arc<DaemonState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sync", post(sync))
        .route("/approve", post(approve))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled; then stops accepting and
/// returns once the requests in progress are answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<DaemonState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP endpoints listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
    .await?;
    tracing::info!(%addr, "HTTP endpoints stopped");
    Ok(())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, body).into_response()
}

async fn healthz(State(state): State<Shared>) -> Response {
    if state.is_healthy() {
        text(StatusCode::OK, "ok")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: the scheduler loop is not running",
        )
    }
}

async fn readyz(State(state): State<Shared>) -> Response {
    match state.is_ready() {
        Ok(()) => text(StatusCode::OK, "ready"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        state.metrics().render(),
    )
        .into_response()
}

async fn status(State(state): State<Shared>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(state.status_json()),
    )
        .into_response()
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: the endpoints are /healthz, /readyz, /metrics, /status, POST /sync and POST /approve",
    )
}

/// Who sent a request, for the log (absent when the router is served without connect info).
fn peer(ext: &Extensions) -> String {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.to_string())
}

/// Equal in constant time: the digests are compared, so neither the content nor the length
/// of the token shows in the timing.
fn token_matches(expected: &str, presented: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    bool::from(digest(expected).as_ref().ct_eq(digest(presented).as_ref()))
}

/// Why a POST is refused before it is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denied {
    /// No `http.token` is configured: 403.
    Disabled,
    /// No bearer token in the request: 401.
    Missing,
    /// A bearer token that is not `http.token`: 401.
    Wrong,
}

impl Denied {
    /// For the log.
    fn why(self) -> &'static str {
        match self {
            Denied::Disabled => "disabled (no http.token)",
            Denied::Missing => "no bearer token",
            Denied::Wrong => "wrong bearer token",
        }
    }

    fn response(self) -> Response {
        let unauthorized = |challenge: &'static str, body: &str| {
            let mut r = text(StatusCode::UNAUTHORIZED, body);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            r
        };
        match self {
            Denied::Disabled => text(
                StatusCode::FORBIDDEN,
                "this endpoint is disabled until http.token (or http.token_file) is set",
            ),
            Denied::Missing => unauthorized(
                "Bearer realm=\"bbsync\"",
                "missing bearer token: send Authorization: Bearer <http.token>",
            ),
            Denied::Wrong => unauthorized(
                "Bearer realm=\"bbsync\", error=\"invalid_token\"",
                "wrong bearer token",
            ),
        }
    }
}

/// `Ok` when the request carries the configured bearer token.
fn authorize(state: &DaemonState, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(token) = &state.info().token else {
        return Err(Denied::Disabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, credentials) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    match presented {
        None => Err(Denied::Missing),
        Some(p) if token_matches(token.expose(), p) => Ok(()),
        Some(_) => Err(Denied::Wrong),
    }
}

/// Checks the token of a POST to `path`, logging a refusal.
fn guard(state: &DaemonState, headers: &HeaderMap, path: &str, peer: &str) -> Option<Response> {
    let denied = authorize(state, headers).err()?;
    let answer = denied.response();
    tracing::info!(
        peer,
        path,
        status = answer.status().as_u16(),
        why = denied.why(),
        "POST refused"
    );
    Some(answer)
}

async fn sync(State(state): State<Shared>, ext: Extensions, headers: HeaderMap) -> Response {
    let peer = peer(&ext);
    if let Some(refused) = guard(&state, &headers, "/sync", &peer) {
        return refused;
    }
    state.triggers().request();
    tracing::info!(%peer, "POST /sync: reconcile requested");
    text(
        StatusCode::ACCEPTED,
        "reconcile requested: it starts now, or as soon as the run in progress ends (requests made meanwhile are one run)",
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    revocations: String,
}

async fn approve(
    State(state): State<Shared>,
    ext: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer(&ext);
    if let Some(refused) = guard(&state, &headers, "/approve", &peer) {
        return refused;
    }
    // An object only: serde would also take the struct as a one-element array.
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).and_then(|v| match v {
        serde_json::Value::Object(_) => serde_json::from_value::<ApproveBody>(v),
        _ => Err(serde::de::Error::custom("the body is not a JSON object")),
    });
    let fingerprint = match parsed {
        Ok(b) => b.revocations.trim().to_owned(),
        Err(e) => {
            tracing::info!(%peer, status = 400, "POST /approve refused: malformed body");
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a JSON body {{\"revocations\": \"<fingerprint>\"}} (the held set's fingerprint from /status or bbsync plan): {e}"
                ),
            );
        }
    };
    match state.approve(&fingerprint) {
        Ok(()) => {
            tracing::info!(%peer, revocations = fingerprint, "POST /approve: held revocations approved; reconcile requested");
            text(
                StatusCode::ACCEPTED,
                format!(
                    "approved the held revocations {fingerprint}: the next reconcile applies exactly that set, and one was requested"
                ),
            )
        }
        Err(e) => {
            tracing::info!(%peer, status = 409, error = %e, "POST /approve refused");
            text(StatusCode::CONFLICT, e.to_string())
        }
    }
}

/// `bbsync healthcheck`: one plain HTTP/1.0 GET of `path` on `addr` over TCP (no TLS, no
/// certificates: it works in an image without a CA bundle); the status code and the body.
pub async fn probe(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("s3cret-token-0123", "s3cret-token-0123"));
        assert!(!token_matches("s3cret-token-0123", "s3cret-token-012"));
        assert!(!token_matches("s3cret-token-0123", "s3cret-token-0124"));
        assert!(!token_matches("s3cret-token-0123", ""));
    }
}
