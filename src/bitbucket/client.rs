//! HTTP core: authentication, retries, pagination and error decoding. Endpoint methods live in
//! `api.rs`; this file knows nothing about groups or repositories.

use super::budget::{Budget, Spent};
use super::dto::{ErrorBody, Page, TokenAnswer};
use super::metrics::ClientMetrics;
use super::retry::{is_idempotent, parse_retry_after, Class, Classify, RetryPolicy};
use super::skim::Skim;
use crate::config::Credential;
use crate::family::ApiFamily;
use crate::secret::Secret;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A failed Bitbucket call. Every variant names the method and endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {endpoint} answered HTTP {status}: {message}{}", hint(*.status, .required, .granted))]
    Status {
        method: String,
        endpoint: String,
        status: u16,
        message: String,
        required: Vec<String>,
        granted: Vec<String>,
    },
    #[error("{method} {endpoint}: {source}")]
    Transport {
        method: String,
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {endpoint}: unexpected answer: {detail}")]
    Decode {
        method: String,
        endpoint: String,
        detail: String,
    },
    #[error("GET {endpoint}: pagination link {next:?} {why}; refusing to follow it (a truncated read must not look complete)")]
    Paging {
        endpoint: String,
        next: String,
        why: &'static str,
    },
    /// A 2xx whose content type or body is not what Bitbucket documents for this call (an
    /// HTML page from a proxy, a cut or foreign body): not proof that anything happened.
    #[error("{method} {endpoint} answered HTTP {status} but not with what Bitbucket documents: {detail}")]
    BadAnswer {
        method: String,
        endpoint: String,
        status: u16,
        detail: String,
    },
    /// A 2xx answer that did not arrive whole: no byte for the read timeout, or its body
    /// broke off. The request may have been served; the answer must not be taken as complete.
    #[error("{method} {endpoint}: {detail} (a truncated read must not look complete)")]
    Incomplete {
        method: String,
        endpoint: String,
        detail: String,
    },
    #[error("OAuth token request to {url} failed: {detail}")]
    OAuth { url: String, detail: String },
    /// Not sent: the credential's request budget is spent for this run (see [`Spent`]).
    #[error("{method} {endpoint} not sent: {spent}")]
    BudgetSpent {
        method: String,
        endpoint: String,
        spent: Spent,
    },
    /// The grant reader was refused and no other may read instead (the configuration names
    /// one reader, or the other's credential cannot make its calls): `why` says what to set.
    #[error("{refused}; {why}")]
    GrantReadRefused { refused: Box<ApiError>, why: String },
    #[error("no credential is configured for {family}")]
    NoCredential { family: &'static str },
    /// The HTTP client could not be built at all (before any request): most often no CA
    /// bundle on the system, which rustls needs even for `http://` URLs.
    #[error("cannot build the HTTP client for {endpoint}: {}{}", error_chain(.source), setup_hint(.source))]
    ClientSetup {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
}

/// An error and its causes on one line (reqwest's own message stops at "builder error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// The fix for a client that cannot be built, when the cause is known.
fn setup_hint(e: &reqwest::Error) -> &'static str {
    if error_chain(e).contains("No CA certificates") {
        " (bbsync verifies TLS against the system's CA bundle and found none: install one \
         (Debian/Ubuntu: apt-get install ca-certificates; the bbsync container image ships \
         /etc/ssl/certs/ca-certificates.crt), or set SSL_CERT_FILE to a PEM bundle)"
    } else {
        ""
    }
}

fn hint(status: u16, required: &[String], granted: &[String]) -> String {
    let mut s = match status {
        401 => " (the credential was rejected: check the email/token pair, that an API token is sent as Basic auth, or that the OAuth consumer key and secret are right)".to_owned(),
        403 => " (the credential is not allowed to do this: it needs a workspace admin and the right scopes; access tokens cannot touch permissions)".to_owned(),
        405 => " (method not allowed: on an organisation-managed workspace 1.0 groups and group-privileges are read-only; its group memberships are written through the Atlassian Admin API: configure [admin_api] and set bitbucket.membership_backend = \"admin_api\", and write grants with bitbucket.grant_writes = \"permissions-config\")".to_owned(),
        402 => " (the plan's user limit is reached: this grant would give one more person access)".to_owned(),
        429 => " (rate limited: Bitbucket allows about 1,000 requests per hour per credential)".to_owned(),
        _ => String::new(),
    };
    if !required.is_empty() {
        s.push_str(&format!(
            "; scopes required: {}; granted: {}",
            required.join(" "),
            if granted.is_empty() {
                "none".to_owned()
            } else {
                granted.join(" ")
            }
        ));
    }
    s
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self.status() {
            Some(401) => "unauthorized",
            Some(403) => "forbidden",
            Some(404) => "not_found",
            Some(405) => "method_not_allowed",
            Some(429) => "rate_limited",
            Some(s) if s >= 500 => "server_error",
            Some(_) => "client_error",
            None => match self {
                ApiError::Transport { .. } | ApiError::Incomplete { .. } => "transport",
                ApiError::OAuth { .. } => "oauth",
                ApiError::BudgetSpent { .. } => "budget_spent",
                ApiError::ClientSetup { .. } => "client_setup",
                ApiError::GrantReadRefused { .. } => "config",
                _ => "bad_response",
            },
        }
    }

    /// The request may have reached Bitbucket and been processed though no good answer came
    /// back (a 5xx, a timeout, a cut answer): check the state before assuming it failed.
    pub fn may_have_been_processed(&self) -> bool {
        matches!(self.status(), Some(s) if s >= 500)
            || matches!(
                self,
                ApiError::BadAnswer { .. } | ApiError::Incomplete { .. }
            )
            || matches!(self, ApiError::Transport { source, .. } if !source.is_connect())
    }

    /// The credential's budget is spent for this run: the work waits for the next run.
    pub fn spent(&self) -> Option<&Spent> {
        match self {
            ApiError::BudgetSpent { spent, .. } => Some(spent),
            _ => None,
        }
    }

    /// Refusals that will not change by retrying within this run.
    pub fn is_refusal(&self) -> bool {
        matches!(self.status(), Some(401 | 403 | 405))
    }
}

/// What a request carries as its body.
pub enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    /// `application/x-www-form-urlencoded` pairs.
    Form(&'a [(&'a str, &'a str)]),
    /// A raw body with its content type (1.0 group-privileges wants the bare permission word).
    Raw(&'static str, String),
}

/// An answer of any status, kept for the caller to interpret (404 on DELETE means done).
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
    /// `Retry-After`, uncapped (the retry policy caps it).
    pub retry_after: Option<Duration>,
    method: Method,
    endpoint: String,
    /// `x-accepted-oauth-scopes` and `x-oauth-scopes`: the scopes a refusal needed and the ones
    /// held, for refusals whose body is plain text (1.0).
    scope_headers: (Option<String>, Option<String>),
    /// The media type, lower-cased, without parameters (`application/json`).
    pub content_type: String,
    /// A streamed 2xx body, as its decoder made it ([`Client::get_array_streamed`]); the
    /// `text` is then empty.
    streamed: Option<Box<dyn Any + Send>>,
}

/// What a 2xx answer must look like to count as Bitbucket's: checked inside the retry loop,
/// so an answer that is not (an HTML page answered 200) is retried like a 5xx.
pub type Expect = fn(&Answer) -> Result<(), String>;

/// Checks for [`Client::send_expecting`].
pub mod expect {
    use super::Answer;

    /// Anything (reads that decode their body themselves, probes).
    pub fn any(_: &Answer) -> Result<(), String> {
        Ok(())
    }

    fn json(a: &Answer) -> Result<serde_json::Value, String> {
        if a.content_type != "application/json" {
            return Err(format!(
                "content type {:?}, not application/json",
                a.content_type
            ));
        }
        serde_json::from_str(&a.text).map_err(|e| format!("a body that is not JSON ({e})"))
    }

    /// A JSON document, judged by its content type and first character only (a read's body
    /// is decoded once, by the caller; a 170 MB listing must not be parsed twice).
    pub fn json_document(a: &Answer) -> Result<(), String> {
        if a.content_type != "application/json" {
            return Err(format!(
                "content type {:?}, not application/json",
                a.content_type
            ));
        }
        match a.text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => Ok(()),
            _ => Err("a body that does not start like a JSON document".into()),
        }
    }

    /// A JSON object (a 1.0 group or user, a 2.0 document).
    pub fn object(a: &Answer) -> Result<(), String> {
        match json(a)? {
            serde_json::Value::Object(_) => Ok(()),
            other => Err(format!("JSON {}, not an object", kind(&other))),
        }
    }

    /// A JSON array (1.0 group-privileges PUT, 1.0 listings).
    pub fn array(a: &Answer) -> Result<(), String> {
        match json(a)? {
            serde_json::Value::Array(_) => Ok(()),
            other => Err(format!("JSON {}, not an array", kind(&other))),
        }
    }

    /// A 1.0 user object (member PUT answers 200 with the user).
    pub fn v1_user(a: &Answer) -> Result<(), String> {
        let v = json(a)?;
        match v.get("uuid").or_else(|| v.get("account_id")) {
            Some(serde_json::Value::String(_)) => Ok(()),
            _ => Err("a JSON body without the user's uuid or account_id".into()),
        }
    }

    /// A permissions-config grant object: `{type: "..._permission", permission, ...}`.
    pub fn grant(a: &Answer) -> Result<(), String> {
        let v = json(a)?;
        let ty = v.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if !ty.ends_with("_permission") || v.get("permission").is_none_or(|p| !p.is_string()) {
            return Err(format!(
                "a JSON body that is not a grant object (type {ty:?})"
            ));
        }
        Ok(())
    }

    /// A DELETE's answer: 204 No Content (or 200 with nothing, or JSON, in it).
    pub fn no_content(a: &Answer) -> Result<(), String> {
        if a.status.as_u16() == 204 || a.text.trim().is_empty() {
            return Ok(());
        }
        json(a).map(|_| ())
    }

    fn kind(v: &serde_json::Value) -> &'static str {
        match v {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::Object(_) => "an object",
        }
    }
}

impl Answer {
    pub fn error(&self) -> ApiError {
        let mut e = status_error(&self.method, &self.endpoint, self.status, &self.text);
        if let ApiError::Status {
            required, granted, ..
        } = &mut e
        {
            let split = |h: &Option<String>| -> Vec<String> {
                h.as_deref()
                    .unwrap_or_default()
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            if required.is_empty() && self.status == StatusCode::FORBIDDEN {
                *required = split(&self.scope_headers.0);
                if !required.is_empty() && granted.is_empty() {
                    *granted = split(&self.scope_headers.1);
                }
            }
        }
        e
    }
    /// Ok when the status is 2xx, else the decoded error.
    pub fn ok(self) -> Result<Answer, ApiError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.error())
        }
    }
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_str(&self.text).map_err(|e| ApiError::Decode {
            method: self.method.to_string(),
            endpoint: self.endpoint.clone(),
            detail: format!("{e} (body starts {:?})", truncate(&self.text, 120)),
        })
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The Admin API's error list in one line (`CODE: title: detail; ...`); empty when `text` is
/// not one.
fn admin_errors(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<AdminError>,
    }
    #[derive(serde::Deserialize)]
    struct AdminError {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        detail: Option<String>,
    }
    let Ok(body) = serde_json::from_str::<Errors>(text) else {
        return String::new();
    };
    body.errors
        .iter()
        .map(|e| {
            [&e.code, &e.title, &e.detail]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(": ")
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn status_error(method: &Method, endpoint: &str, status: StatusCode, text: &str) -> ApiError {
    let (mut message, mut required, mut granted) = (String::new(), Vec::new(), Vec::new());
    if let Ok(body) = serde_json::from_str::<ErrorBody>(text) {
        message = body.error.message.unwrap_or_default();
        match body.error.detail {
            Some(serde_json::Value::String(d)) if !d.is_empty() => {
                message = format!("{message}: {d}")
            }
            Some(serde_json::Value::Object(o)) => {
                let list = |k: &str| -> Vec<String> {
                    o.get(k)
                        .and_then(|v| v.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                required = list("required");
                granted = list("granted");
                if required.is_empty() && granted.is_empty() && !o.is_empty() {
                    message = format!("{message}: {}", serde_json::Value::Object(o));
                }
            }
            _ => {}
        }
    }
    if message.is_empty() {
        // The Admin API: `{"errors": [{id, status, code, title, detail}]}`.
        message = admin_errors(text);
    }
    if message.is_empty() {
        // 1.0 errors, 429s and some refusals are plain text.
        let t = text.trim();
        message = if t.is_empty() {
            status.canonical_reason().unwrap_or("no body").to_owned()
        } else {
            truncate(t, 300).to_owned()
        };
    }
    ApiError::Status {
        method: method.to_string(),
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        message,
        required,
        granted,
    }
}

enum Auth {
    Basic {
        email: String,
        token: Secret,
    },
    Bearer {
        token: Secret,
    },
    ClientCredentials {
        client_id: String,
        secret: Secret,
        token_url: String,
        // A tokio mutex on purpose: it single-flights the token refresh across concurrent calls.
        cache: tokio::sync::Mutex<Option<CachedToken>>,
    },
}

struct CachedToken {
    token: Secret,
    /// When to fetch a new one: a tenth of the lifetime (at most 5 min) before expiry.
    refresh_at: Instant,
}

/// Settings the client needs besides the credential.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub api_url: String,
    pub oauth_token_url: String,
    pub workspace: String,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// An authenticated Bitbucket client for one workspace and one credential.
pub struct Client {
    http: reqwest::Client,
    pub(super) opts: ClientOptions,
    origin: String,
    auth: Auth,
    requests: AtomicU64,
    /// The credential's request budget, shared by every family it serves.
    budget: Arc<Budget>,
    /// Scopes the service says this credential holds (`x-oauth-scopes`, or the OAuth token
    /// answer), once any call has told us.
    scopes: std::sync::Mutex<Option<Vec<String>>>,
    /// Where every attempt is recorded, once attached ([`Client::set_metrics`]); unset, a
    /// request costs one atomic load more than it did without metrics.
    metrics: OnceLock<ClientMetrics>,
}

/// Refresh an OAuth token this long before it expires.
const OAUTH_REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl Client {
    pub fn new(opts: ClientOptions, credential: &Credential) -> Result<Client, ApiError> {
        // One crypto provider for the whole process (ring); a second install is a no-op error.
        crate::tls::install_provider();
        // No total timeout on the client: each request sets its own (`opts.timeout` for the
        // whole exchange), except a streamed one, whose timeout is per chunk of progress.
        let http = reqwest::Client::builder()
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("bbsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ApiError::ClientSetup {
                endpoint: opts.api_url.clone(),
                source,
            })?;
        let origin = url::Url::parse(&opts.api_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let auth = match credential {
            Credential::ApiToken { email, token } => Auth::Basic {
                email: email.clone(),
                token: token.clone(),
            },
            Credential::AccessToken { token } => Auth::Bearer {
                token: token.clone(),
            },
            Credential::OAuth {
                client_id,
                client_secret,
            } => Auth::ClientCredentials {
                client_id: client_id.clone(),
                secret: client_secret.clone(),
                token_url: opts.oauth_token_url.clone(),
                cache: tokio::sync::Mutex::new(None),
            },
        };
        Ok(Client {
            http,
            opts,
            origin,
            auth,
            requests: AtomicU64::new(0),
            budget: Arc::new(Budget::unlimited("-")),
            scopes: std::sync::Mutex::new(None),
            metrics: OnceLock::new(),
        })
    }

    /// Sends every request through `budget` (one per credential, see [`Budget`]).
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Client {
        self.budget = budget;
        self
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The budget, not kept alive by the holder (the metrics' budget gauge).
    pub(crate) fn budget_weak(&self) -> Weak<Budget> {
        Arc::downgrade(&self.budget)
    }

    /// Records every attempt from now on into `metrics` (requests by family and status
    /// class, latency, 429s). The first attachment wins: `false` when the client already
    /// records somewhere (attaching the same handles again changes nothing).
    pub fn set_metrics(&self, metrics: ClientMetrics) -> bool {
        self.metrics.set(metrics).is_ok()
    }

    /// One attempt sent and finished (`status`: `None` when no complete answer came back).
    fn record(&self, family: impl FnOnce() -> &'static str, status: Option<u16>, started: Instant) {
        if let Some(m) = self.metrics.get() {
            m.record(family(), status, started.elapsed());
        }
    }

    pub fn workspace(&self) -> &str {
        &self.opts.workspace
    }

    /// Granted scopes as last reported by Bitbucket, if it has said.
    pub fn granted_scopes(&self) -> Option<Vec<String>> {
        self.scopes.lock().ok().and_then(|g| g.clone())
    }

    fn observe_scopes(&self, raw: &str) {
        let list: Vec<String> = raw
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Ok(mut g) = self.scopes.lock() {
            *g = Some(list);
        }
    }

    /// Requests sent so far (each retry counts).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `api_url` + the given path segments, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> String {
        match url::Url::parse(&self.opts.api_url) {
            Ok(mut u) => {
                if let Ok(mut p) = u.path_segments_mut() {
                    p.pop_if_empty().extend(segments);
                }
                u.to_string()
            }
            Err(_) => format!("{}/{}", self.opts.api_url, segments.join("/")),
        }
    }

    async fn oauth_token(&self, force: bool) -> Result<Option<Secret>, ApiError> {
        let Auth::ClientCredentials {
            client_id,
            secret,
            token_url,
            cache,
        } = &self.auth
        else {
            return Ok(None);
        };
        let mut guard = cache.lock().await;
        if let Some(cached) = guard.as_ref() {
            if !force && Instant::now() < cached.refresh_at {
                return Ok(Some(cached.token.clone()));
            }
        }
        let what = format!("POST {}", endpoint_of(token_url));
        // The token request is idempotent in effect (a second token does no harm): it is
        // retried like any idempotent call, and its failure fails this request only; the next
        // request asks again (nothing is cached but a good token).
        let fetched = self
            .opts
            .retry
            .run(true, &what, || {
                self.fetch_token(client_id, secret, token_url)
            })
            .await;
        let answer = fetched.0?;
        // Capped: a nonsensical lifetime must not overflow Instant arithmetic.
        let ttl = Duration::from_secs(answer.expires_in.unwrap_or(3600).clamp(1, 86_400));
        let tok = Secret::new(answer.access_token);
        if let Some(scopes) = &answer.scopes {
            self.observe_scopes(scopes);
        }
        *guard = Some(CachedToken {
            token: tok.clone(),
            refresh_at: Instant::now() + ttl - OAUTH_REFRESH_MARGIN.min(ttl / 10),
        });
        tracing::debug!(
            expires_in_secs = ttl.as_secs(),
            "fetched OAuth access token"
        );
        Ok(Some(tok))
    }

    /// One token request, classified for the retry loop.
    async fn fetch_token(&self, client_id: &str, secret: &Secret, token_url: &str) -> TokenFetch {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let err = |detail: String| ApiError::OAuth {
            url: token_url.to_owned(),
            detail,
        };
        let resp = match self
            .http
            .post(token_url)
            .timeout(self.opts.timeout)
            .basic_auth(client_id, Some(secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.record(|| OAUTH_TOKEN_FAMILY, None, started);
                let class = if e.is_connect() {
                    Class::NotProcessed { retry_after: None }
                } else {
                    Class::MaybeProcessed { retry_after: None }
                };
                return TokenFetch(Err(err(e.without_url().to_string())), class);
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                self.record(|| OAUTH_TOKEN_FAMILY, None, started);
                return TokenFetch(
                    Err(err(e.without_url().to_string())),
                    Class::MaybeProcessed { retry_after: None },
                );
            }
        };
        self.record(|| OAUTH_TOKEN_FAMILY, Some(status.as_u16()), started);
        if !status.is_success() {
            let class = if status == StatusCode::TOO_MANY_REQUESTS {
                Class::NotProcessed { retry_after }
            } else if status.is_server_error() {
                Class::MaybeProcessed { retry_after }
            } else {
                // 400/401: the consumer key or secret is wrong; asking again will not help.
                Class::Final
            };
            return TokenFetch(
                Err(err(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    truncate(text.trim(), 300)
                ))),
                class,
            );
        }
        match serde_json::from_str::<TokenAnswer>(&text) {
            Ok(a) => TokenFetch(Ok(a), Class::Final),
            // An HTML page answered 200 (a proxy, a maintenance page): not a token; ask again.
            Err(e) => TokenFetch(
                Err(err(format!(
                    "HTTP {} with a body that is not a token answer ({e}; body starts {:?})",
                    status.as_u16(),
                    truncate(&text, 60)
                ))),
                Class::MaybeProcessed { retry_after: None },
            ),
        }
    }

    /// Sends one logical request and returns the answer whatever its status; see
    /// [`Client::send_expecting`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Body<'_>,
    ) -> Result<Answer, ApiError> {
        self.send_expecting(method, url, body, expect::any).await
    }

    /// Sends one logical request. Every attempt first takes a permit from the credential's
    /// [`Budget`] (the pace; a 429 pause); a 429 hands the permit back to the budget, which
    /// pauses every request of the credential or declares it spent for the run; other
    /// outcomes go to the client's [`RetryPolicy`]. A 2xx that fails `check` (not the shape
    /// Bitbucket documents) is a [`ApiError::BadAnswer`], retried as "maybe processed".
    pub async fn send_expecting(
        &self,
        method: Method,
        url: &str,
        body: Body<'_>,
        check: Expect,
    ) -> Result<Answer, ApiError> {
        self.send_reading(method, url, body, BodyRead::Text(check))
            .await
    }

    /// [`Client::send_expecting`], with the 2xx body read as `read` says. Every attempt is
    /// one request, whose body is read anew: a streamed answer that breaks off is downloaded
    /// again from its start by the retry (the listing is one document generated per request,
    /// and two halves of two answers would not be one snapshot).
    async fn send_reading(
        &self,
        method: Method,
        url: &str,
        body: Body<'_>,
        read: BodyRead<'_>,
    ) -> Result<Answer, ApiError> {
        let endpoint = endpoint_of(url);
        let refreshed = AtomicBool::new(false);
        let idempotent = is_idempotent(&method);
        let spent = |spent: Spent| ApiError::BudgetSpent {
            method: method.to_string(),
            endpoint: endpoint.clone(),
            spent,
        };
        let mut retries = 0u32;
        loop {
            let permit = self.budget.acquire().await.map_err(spent)?;
            let out = self
                .attempt(&method, url, &endpoint, &body, &refreshed, read)
                .await
                .and_then(|a| match (a.status.is_success(), read) {
                    (true, BodyRead::Text(check)) => {
                        check(&a).map(|()| a).map_err(|detail| ApiError::BadAnswer {
                            method: method.to_string(),
                            endpoint: endpoint.clone(),
                            status: 0,
                            detail,
                        })
                    }
                    // A streamed body was judged while it was read.
                    _ => Ok(a),
                });
            let class = out.class();
            if let Class::RateLimited { retry_after } = class {
                tracing::warn!(%method, endpoint, "rate limited (429)");
                self.budget
                    .rate_limited(permit, retry_after)
                    .map_err(spent)?;
                continue;
            }
            if !matches!(class, Class::NotProcessed { .. }) {
                self.budget.answered();
            }
            let Some(wait) = self
                .opts
                .retry
                .delay(retries, class, idempotent, fastrand::f64())
            else {
                return out;
            };
            tracing::warn!(
                request = format!("{method} {endpoint}"),
                attempt = retries + 1,
                delay_ms = wait.as_millis() as u64,
                error = out.as_ref().err().map(|e| e.to_string()),
                status = out.as_ref().ok().map(|a| a.status.as_u16()),
                "retrying Bitbucket call"
            );
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    /// One attempt: adds auth and sends once. An OAuth token the service calls expired (401)
    /// is refreshed and the request resent, once per logical request (`refreshed`).
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        endpoint: &str,
        body: &Body<'_>,
        refreshed: &AtomicBool,
        read: BodyRead<'_>,
    ) -> Result<Answer, ApiError> {
        loop {
            let answer = self.send_once(method, url, endpoint, body, read).await?;
            if answer.status == StatusCode::UNAUTHORIZED
                && matches!(self.auth, Auth::ClientCredentials { .. })
                && !refreshed.swap(true, Ordering::Relaxed)
            {
                // An expired token answers 401 "Access token expired...": refresh once.
                self.oauth_token(true).await?;
                continue;
            }
            return Ok(answer);
        }
    }

    /// Exactly one HTTP request. A body that cannot be read completely is an error, never an
    /// empty document.
    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        endpoint: &str,
        body: &Body<'_>,
        read: BodyRead<'_>,
    ) -> Result<Answer, ApiError> {
        // The error names the method and the path; the full URL is dropped from the cause:
        // its query can carry personal data (the members email query's addresses).
        let transport = |source: reqwest::Error| ApiError::Transport {
            method: method.to_string(),
            endpoint: endpoint.to_owned(),
            source: source.without_url(),
        };
        let mut req = self.http.request(method.clone(), url);
        if matches!(read, BodyRead::Text(_)) {
            req = req.timeout(self.opts.timeout);
        }
        match &self.auth {
            Auth::Basic { email, token } => req = req.basic_auth(email, Some(token.expose())),
            Auth::Bearer { token } => req = req.bearer_auth(token.expose()),
            Auth::ClientCredentials { .. } => {
                if let Some(tok) = self.oauth_token(false).await? {
                    req = req.bearer_auth(tok.expose());
                }
            }
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Form(pairs) => req.form(pairs),
            Body::Raw(ct, text) => req.header(CONTENT_TYPE, *ct).body(text.clone()),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let family = || family_label(method, endpoint);
        // A streamed request has no total timeout: its head must come within the timeout,
        // then each chunk of its body (`read_stream`).
        let sent = match read {
            BodyRead::Text(_) => Ok(req.send().await),
            BodyRead::Stream(_) => tokio::time::timeout(self.opts.timeout, req.send()).await,
        };
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.record(family, None, started);
                return Err(transport(e));
            }
            Err(_) => {
                self.record(family, None, started);
                return Err(ApiError::Incomplete {
                    method: method.to_string(),
                    endpoint: endpoint.to_owned(),
                    detail: format!("no answer within {} s", self.opts.timeout.as_secs_f64()),
                });
            }
        };
        let status = resp.status();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // The Admin API says when its window reopens in `X-RateLimit-Reset` (ISO-8601).
        let retry_after = header(RETRY_AFTER.as_str())
            .and_then(|v| parse_retry_after(&v, SystemTime::now()))
            .or_else(|| {
                (status == StatusCode::TOO_MANY_REQUESTS)
                    .then(|| header("x-ratelimit-reset"))
                    .flatten()
                    .and_then(|v| rate_limit_reset(&v, SystemTime::now()))
            });
        let scope_headers = (header("x-accepted-oauth-scopes"), header("x-oauth-scopes"));
        if let Some(scopes) = &scope_headers.1 {
            self.observe_scopes(scopes);
        }
        let content_type = header(CONTENT_TYPE.as_str())
            .and_then(|v| v.split(';').next().map(|t| t.trim().to_ascii_lowercase()))
            .unwrap_or_default();
        let answer = |text: String, streamed: Option<Box<dyn Any + Send>>| Answer {
            status,
            text,
            retry_after,
            method: method.clone(),
            endpoint: endpoint.to_owned(),
            scope_headers: scope_headers.clone(),
            content_type: content_type.clone(),
            streamed,
        };
        if let (true, BodyRead::Stream(decode)) = (status.is_success(), read) {
            let bad = |detail: String| ApiError::BadAnswer {
                method: method.to_string(),
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
                detail,
            };
            if content_type != "application/json" {
                self.record(family, Some(status.as_u16()), started);
                return Err(bad(format!(
                    "content type {content_type:?}, not application/json"
                )));
            }
            let streamed = self.read_stream(resp, decode).await;
            let complete = !matches!(streamed, Err(Streamed::Incomplete(_)));
            self.record(family, complete.then_some(status.as_u16()), started);
            tracing::debug!(%method, endpoint, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "bitbucket call (streamed)");
            return match streamed {
                Ok(value) => Ok(answer(String::new(), Some(value))),
                Err(Streamed::Incomplete(detail)) => Err(ApiError::Incomplete {
                    method: method.to_string(),
                    endpoint: endpoint.to_owned(),
                    detail,
                }),
                Err(Streamed::Bad(detail)) => Err(bad(detail)),
            };
        }
        // A streamed request has no total timeout of its own: its error body must not stall
        // the run either (reqwest's per-request timeout bounds the others first).
        let text = match tokio::time::timeout(self.opts.timeout, resp.text()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                self.record(family, None, started);
                return Err(transport(e));
            }
            Err(_) => {
                self.record(family, None, started);
                return Err(ApiError::Incomplete {
                    method: method.to_string(),
                    endpoint: endpoint.to_owned(),
                    detail: format!(
                        "HTTP {} but no complete body within {} s",
                        status.as_u16(),
                        self.opts.timeout.as_secs_f64()
                    ),
                });
            }
        };
        self.record(family, Some(status.as_u16()), started);
        tracing::debug!(%method, endpoint, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "bitbucket call");
        Ok(answer(text, None))
    }

    /// Feeds a 2xx body, chunk by chunk, to `decode` running on a blocking thread, through a
    /// channel of [`STREAM_CHUNKS_IN_FLIGHT`] chunks: what is held at once is those chunks and
    /// what the decoder keeps, never the body. The read timeout applies to each chunk: the
    /// body may take as long as it needs while bytes keep coming, and fails once none came for
    /// `opts.timeout`. The value is the decoder's only when the body ended as HTTP framed it
    /// (`Content-Length`, or the last chunk) and the decoder consumed it to its end.
    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        decode: &Arc<StreamDecoder>,
    ) -> Result<Box<dyn Any + Send>, Streamed> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
        let decode = Arc::clone(decode);
        // What the decoder logs belongs to the run that reads.
        let span = tracing::Span::current();
        let decoder = tokio::task::spawn_blocking(move || span.in_scope(|| decode(Chunks { rx })));
        let mut received: u64 = 0;
        let timeout = self.opts.timeout;
        // Ok(true): the body ended; Ok(false): the decoder stopped reading first.
        let fed: Result<bool, String> = loop {
            match tokio::time::timeout(timeout, resp.chunk()).await {
                Err(_) => {
                    break Err(format!(
                        "no byte of the body for {} s, after {received} bytes",
                        timeout.as_secs_f64()
                    ))
                }
                Ok(Err(e)) => {
                    break Err(format!(
                        "the body broke off after {received} bytes: {}",
                        error_chain(&e.without_url())
                    ))
                }
                Ok(Ok(None)) => break Ok(true),
                Ok(Ok(Some(chunk))) => {
                    received += chunk.len() as u64;
                    if tx.send(Some(chunk)).await.is_err() {
                        break Ok(false);
                    }
                }
            }
        };
        if fed.is_err() {
            // The decoder must not take what it has seen for the whole body.
            let _ = tx.send(None).await;
        }
        drop(tx);
        drop(resp);
        let verdict = decoder.await;
        let ended = fed.map_err(Streamed::Incomplete)?;
        match verdict {
            Ok(Ok(value)) if ended => Ok(value),
            Ok(Ok(_)) => Err(Streamed::Bad(
                "the decoder stopped before the end of the body".into(),
            )),
            Ok(Err(detail)) => Err(Streamed::Bad(format!(
                "a body that is not the JSON documented ({detail}; {received} bytes read)"
            ))),
            Err(e) => Err(Streamed::Bad(format!("the body's decoder failed: {e}"))),
        }
    }

    /// GET a JSON document, failing on any non-2xx.
    /// A body that does not decode (garbled, cut inside a string) is read again, up to the
    /// retry policy's `max_retries`: a GET is idempotent, and a listing must not fail a whole
    /// reconcile on one bad answer.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, ApiError> {
        let mut attempt = 0u32;
        loop {
            let decoded = self
                .send_expecting(Method::GET, url, Body::None, expect::json_document)
                .await?
                .ok()?
                .json();
            match decoded {
                Err(e @ ApiError::Decode { .. }) if attempt < self.opts.retry.max_retries => {
                    let wait = self.opts.retry.backoff(attempt, fastrand::f64());
                    tracing::warn!(error = %e, attempt = attempt + 1, delay_ms = wait.as_millis() as u64, "reading again: the answer did not decode");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// GET a JSON array, decoded as it arrives: the body's chunks go to a [`Skim`] on a
    /// blocking thread, which drops the value of every object key in `skip` (at any depth;
    /// written as `[]`, `{}` or `null`) while it splits the array into elements, and each
    /// element is decoded as a `T` (`serde_json::from_slice`) and given to `fold` with the
    /// accumulator `init` made. Memory follows what `fold` keeps and the largest element
    /// without its skipped values (at most [`super::skim::MAX_ROW_BYTES`]), not the size of the
    /// body. The read timeout is per chunk of progress (see `read_stream`). A body cut short,
    /// one that is not one JSON array (or whose elements do not decode), or one not typed
    /// `application/json` is an error, retried as a whole like any read (`max_retries`; each
    /// retry downloads the body again from its start).
    pub async fn get_array_streamed<T, A>(
        &self,
        url: &str,
        skip: &'static [&'static str],
        init: fn() -> A,
        fold: fn(&mut A, T),
    ) -> Result<A, ApiError>
    where
        T: DeserializeOwned + 'static,
        A: Send + 'static,
    {
        self.get_array_streamed_rows(url, skip, super::skim::MAX_ROW_BYTES, init, fold)
            .await
    }

    /// [`Client::get_array_streamed`] whose elements may each be up to `max_row` bytes
    /// without their skipped values (a 1.0 group keeps its members: 100k of them are ~35 MB).
    pub async fn get_array_streamed_rows<T, A>(
        &self,
        url: &str,
        skip: &'static [&'static str],
        max_row: usize,
        init: fn() -> A,
        fold: fn(&mut A, T),
    ) -> Result<A, ApiError>
    where
        T: DeserializeOwned + 'static,
        A: Send + 'static,
    {
        let decode: Arc<StreamDecoder> = Arc::new(move |mut chunks: Chunks| {
            let mut acc = init();
            let mut skim = Skim::new(skip).with_max_row(max_row);
            while let Some(chunk) = chunks.next_chunk()? {
                skim.feed_rows(&chunk, &mut acc, fold)
                    .map_err(|e| e.to_string())?;
            }
            skim.finish().map_err(|e| e.to_string())?;
            Ok(Box::new(acc) as Box<dyn Any + Send>)
        });
        let answer = self
            .send_reading(Method::GET, url, Body::None, BodyRead::Stream(&decode))
            .await?
            .ok()?;
        let bad = |detail: &str| ApiError::BadAnswer {
            method: "GET".into(),
            endpoint: answer.endpoint.clone(),
            status: answer.status.as_u16(),
            detail: detail.into(),
        };
        match answer.streamed {
            Some(value) => value
                .downcast::<A>()
                .map(|a| *a)
                .map_err(|_| bad("the decoded body is not of the type asked for")),
            // Every 2xx is decoded or an error (`read_stream`); should one come through
            // undecoded, it is not the listing.
            None => Err(bad("no body was decoded")),
        }
    }

    /// Follows a 2.0 collection through every `next` link. `next` must stay on the API's origin
    /// (credentials are never sent elsewhere) and must not repeat (a loop would never end).
    pub async fn get_all<T: DeserializeOwned>(&self, first: &str) -> Result<Vec<T>, ApiError> {
        let endpoint = url::Url::parse(first)
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut url = first.to_owned();
        // Every page read so far, the first included: a `next` back to any of them is a loop.
        let canonical =
            |u: &str| url::Url::parse(u).map_or_else(|_| u.to_owned(), |u| u.to_string());
        let mut seen = std::collections::HashSet::from([canonical(first)]);
        loop {
            let page: Page<T> = self.get_json(&url).await?;
            out.extend(page.values);
            let Some(next) = page.next else { break };
            let same_origin = url::Url::parse(&next)
                .map(|u| u.origin().ascii_serialization() == self.origin)
                .unwrap_or(false);
            if !same_origin {
                return Err(ApiError::Paging {
                    endpoint,
                    next,
                    why: "is not on the configured API origin",
                });
            }
            if !seen.insert(canonical(&next)) {
                return Err(ApiError::Paging {
                    endpoint,
                    next,
                    why: "repeats an earlier page",
                });
            }
            url = next;
        }
        Ok(out)
    }
}

/// How an attempt reads the body of a 2xx answer (any other is read whole, as text: error
/// bodies are short).
#[derive(Clone, Copy)]
enum BodyRead<'a> {
    /// Whole, as text, then judged by the [`Expect`].
    Text(Expect),
    /// Chunk by chunk into a decoder (`Client::read_stream`).
    Stream(&'a Arc<StreamDecoder>),
}

/// Decodes a streamed body (on a blocking thread) into the value the caller downcasts.
type StreamDecoder = dyn Fn(Chunks) -> Result<Box<dyn Any + Send>, String> + Send + Sync;

/// Chunks of a streamed body on their way to the decoder (a bounded channel: a slow decoder
/// slows the download instead of buffering it).
const STREAM_CHUNKS_IN_FLIGHT: usize = 16;

/// Why a streamed body was not taken.
enum Streamed {
    /// It did not arrive whole (a stall, a cut).
    Incomplete(String),
    /// It arrived, or started to, but is not what Bitbucket documents.
    Bad(String),
}

/// The body's chunks as they arrive, on the decoder's thread: scanned where they are, never
/// copied into a reader's buffer. `None` in the channel means the body broke off.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Option<bytes::Bytes>>,
}

impl Chunks {
    /// The next chunk; `None` at the end of the body; an error when it broke off (never an
    /// end: what came so far must not be taken for the whole body).
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        match self.rx.blocking_recv() {
            Some(Some(chunk)) => Ok(Some(chunk)),
            Some(None) => Err("the body broke off".into()),
            None => Ok(None),
        }
    }
}

/// Calls `fold` with each element of the JSON array `reader` holds, decoded as it is read;
/// the array must be the whole document (trailing whitespace only). Returns how many elements
/// there were. Fields an element's type does not declare are skipped unread into memory.
/// This is serde_json's reader path, several times slower per byte than a slice (10x in
/// `cargo bench --bench decode`): the streamed listing uses [`Skim`] instead
/// ([`Client::get_array_streamed`]). It stays for the tests that hold it to its memory bound
/// and as the baseline the `decode` benchmark measures the scanner against.
pub fn each_in_array<R, T, A>(
    reader: R,
    acc: &mut A,
    fold: fn(&mut A, T),
) -> serde_json::Result<usize>
where
    R: std::io::Read,
    T: DeserializeOwned,
{
    use serde::de::Deserializer as _;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let n = (&mut de).deserialize_seq(EachElement {
        acc,
        fold,
        _element: std::marker::PhantomData,
    })?;
    de.end()?;
    Ok(n)
}

/// The visitor of [`each_in_array`]: the top-level array, one element at a time.
struct EachElement<'a, T, A> {
    acc: &'a mut A,
    fold: fn(&mut A, T),
    _element: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T: DeserializeOwned, A> serde::de::Visitor<'de> for EachElement<'_, T, A> {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<usize, S::Error> {
        let mut n = 0;
        while let Some(element) = seq.next_element::<T>()? {
            (self.fold)(self.acc, element);
            n += 1;
        }
        Ok(n)
    }
}

impl Classify for Result<Answer, ApiError> {
    fn class(&self) -> Class {
        match self {
            // A 429 was not processed; a 5xx may have been.
            Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => Class::RateLimited {
                retry_after: a.retry_after,
            },
            Ok(a) if a.status.is_server_error() => Class::MaybeProcessed {
                retry_after: a.retry_after,
            },
            Ok(_) => Class::Final,
            Err(ApiError::Transport { source, .. }) if source.is_connect() => {
                Class::NotProcessed { retry_after: None }
            }
            // A stall or a cut body: served, maybe, and the answer lost; a GET is sent again.
            Err(ApiError::BadAnswer { .. } | ApiError::Incomplete { .. }) => {
                Class::MaybeProcessed { retry_after: None }
            }
            Err(ApiError::Transport { source, .. })
                // `text()` reports a body cut short as a decode error wrapping the body error.
                if source.is_timeout()
                    || source.is_request()
                    || source.is_body()
                    || source.is_decode() =>
            {
                Class::MaybeProcessed { retry_after: None }
            }
            Err(_) => Class::Final,
        }
    }
}

/// The `family` label of an OAuth token request (not an API family: the token endpoint
/// serves them all).
pub const OAUTH_TOKEN_FAMILY: &str = "oauth_token";

/// The `family` label of a request that belongs to no API family (the probes of `bbsync
/// check`: `GET /2.0/user/workspaces`, `GET /2.0/workspaces/{ws}`).
pub const OTHER_FAMILY: &str = "other";

/// The [`ApiFamily`] key of a request, from its method and path, for the metrics: a client
/// serves every family its credential is configured for, so the family is told by the
/// endpoint, as the callers route them (`reconcile.rs`, `apply`): the workspace owners listing
/// (`/2.0/workspaces/{ws}/permissions`) is read with the groups credential, the effective
/// permissions of one person (`.../permissions/repositories`) with the permissions one.
pub fn family_label(method: &Method, endpoint: &str) -> &'static str {
    use ApiFamily::*;
    let segments: Vec<&str> = endpoint.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .windows(2)
        .any(|w| w[0] == "admin" && matches!(w[1], "v1" | "v2"))
    {
        return AdminApi.key();
    }
    let Some(start) = segments.iter().position(|s| *s == "1.0" || *s == "2.0") else {
        return OTHER_FAMILY;
    };
    let read = *method == Method::GET;
    let either = |r: ApiFamily, w: ApiFamily| if read { r } else { w };
    let family = match &segments[start..] {
        // The invitations (a workspace admin's 1.0 API, read by the workspace-kind
        // detection with the groups credential).
        ["1.0", "groups", ..] | ["1.0", "users", _, "invitations", ..] => {
            either(GroupsRead, GroupsWrite)
        }
        ["1.0", "group-privileges", ..] => either(GroupPrivilegesRead, GroupPrivilegesWrite),
        ["2.0", "repositories", _, _, "permissions-config", ..]
        | ["2.0", "workspaces", _, "projects", _, "permissions-config", ..] => {
            either(PermissionsRead, PermissionsWrite)
        }
        ["2.0", "workspaces", _, "members", ..] => MembersRead,
        ["2.0", "repositories", _] | ["2.0", "workspaces", _, "projects"] => RepositoriesRead,
        ["2.0", "workspaces", _, "permissions"] => GroupsRead,
        ["2.0", "workspaces", _, "permissions", "repositories"] => PermissionsRead,
        _ => return OTHER_FAMILY,
    };
    family.key()
}

/// How long until an `X-RateLimit-Reset` time (RFC 3339 / ISO-8601); a time already past is
/// no wait. `None` when it is not a time.
fn rate_limit_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let at: SystemTime = chrono::DateTime::parse_from_rfc3339(value.trim())
        .ok()?
        .with_timezone(&chrono::Utc)
        .into();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The path of a URL, for errors and logs (never the query: it can carry emails).
fn endpoint_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| url.split('?').next().unwrap_or_default().to_owned())
}

/// A token request's outcome with its retry class.
struct TokenFetch(Result<TokenAnswer, ApiError>, Class);

impl Classify for TokenFetch {
    fn class(&self) -> Class {
        self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_api_errors_and_rate_limit_resets_are_read() {
        let body = r#"{"errors":[{"id":"x","status":"404","code":"ADMIN-UAM-404-3","title":"Not Found","detail":"no group g1"}]}"#;
        let e = status_error(
            &Method::DELETE,
            "/admin/v2/orgs/o/directories/-/groups/g1",
            StatusCode::NOT_FOUND,
            body,
        );
        assert!(
            e.to_string()
                .contains("ADMIN-UAM-404-3: Not Found: no group g1"),
            "{e}"
        );
        assert_eq!(admin_errors("plain text"), "");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // 2027-01-15T08:00:00Z is 1_800_000_000 s; 30 s later:
        assert_eq!(
            rate_limit_reset("2027-01-15T08:00:30Z", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            rate_limit_reset("2027-01-15T09:00:30+01:00", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            rate_limit_reset("2027-01-15T07:00:00Z", now),
            Some(Duration::ZERO)
        );
        assert_eq!(rate_limit_reset("soon", now), None);
        assert_eq!(
            family_label(&Method::POST, "/admin/v2/orgs/o/directories/-/users/search"),
            "admin_api"
        );
    }

    #[test]
    fn every_endpoint_is_labelled_with_the_family_that_serves_it() {
        let cases = [
            ("GET", "/1.0/groups/acme", "groups_read"),
            ("GET", "/1.0/groups/acme/devs", "groups_read"),
            ("GET", "/1.0/users/acme/invitations", "groups_read"),
            ("POST", "/1.0/groups/acme", "groups_write"),
            (
                "PUT",
                "/1.0/groups/acme/devs/members/%7Bu%7D",
                "groups_write",
            ),
            (
                "DELETE",
                "/1.0/groups/acme/devs/members/%7Bu%7D",
                "groups_write",
            ),
            ("GET", "/1.0/group-privileges/acme", "group_privileges_read"),
            (
                "PUT",
                "/1.0/group-privileges/acme/api/acme/devs",
                "group_privileges_write",
            ),
            (
                "DELETE",
                "/1.0/group-privileges/acme/api/acme/devs",
                "group_privileges_write",
            ),
            ("GET", "/2.0/repositories/acme", "repositories_read"),
            ("GET", "/2.0/workspaces/acme/projects", "repositories_read"),
            ("GET", "/2.0/workspaces/acme/members", "members_read"),
            ("GET", "/2.0/workspaces/acme/permissions", "groups_read"),
            (
                "GET",
                "/2.0/workspaces/acme/permissions/repositories",
                "permissions_read",
            ),
            (
                "GET",
                "/2.0/repositories/acme/api/permissions-config/groups",
                "permissions_read",
            ),
            (
                "GET",
                "/2.0/repositories/acme/api/permissions-config/users/557058:x",
                "permissions_read",
            ),
            (
                "PUT",
                "/2.0/repositories/acme/api/permissions-config/groups/devs",
                "permissions_write",
            ),
            (
                "DELETE",
                "/2.0/workspaces/acme/projects/API/permissions-config/groups/devs",
                "permissions_write",
            ),
            ("GET", "/2.0/user/workspaces", OTHER_FAMILY),
            ("GET", "/2.0/workspaces/acme", OTHER_FAMILY),
            ("GET", "/elsewhere", OTHER_FAMILY),
            // An API URL with a path prefix (a proxy) is labelled the same.
            (
                "GET",
                "/bitbucket/2.0/repositories/acme",
                "repositories_read",
            ),
        ];
        for (method, path, want) in cases {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(family_label(&m, path), want, "{method} {path}");
        }
    }
}
