//! Authentication: credential resolution, the scope table, the rate limiter and the clock.

use crate::seed::{CredentialKind, SeedCredential};
use crate::state::Store;
use base64::Engine as _;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Kind of credential a request was authenticated with (the `x-credential-type` header value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    ApiToken,
    AccessToken,
    OAuth,
    /// An Atlassian Admin API key (`/admin` routes only).
    AdminApiKey,
}

impl CallerKind {
    pub fn header_value(self) -> &'static str {
        match self {
            CallerKind::ApiToken => "apitoken",
            CallerKind::AccessToken => "access_token",
            CallerKind::OAuth => "oauth2",
            CallerKind::AdminApiKey => "admin_api_key",
        }
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Seed credential id (for OAuth tokens: the consumer's id).
    pub credential_id: String,
    pub kind: CallerKind,
    /// The account the credential acts as (none for access tokens).
    pub account_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

/// Why authentication failed (all answer 401).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No Authorization header.
    Missing,
    /// Unknown or malformed credentials (including an API token sent as Bearer).
    Invalid,
    /// An OAuth access token past its lifetime; carries the consumer's credential id.
    Expired(String),
}

/// An OAuth access token issued by `/site/oauth2/access_token`.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub credential_id: String,
    pub expires_at: Instant,
}

/// Issued OAuth tokens and the rate-limit windows.
#[derive(Debug, Default)]
pub struct AuthState {
    pub access_tokens: HashMap<String, IssuedToken>,
    /// refresh token -> consumer credential id.
    pub refresh_tokens: HashMap<String, String>,
    pub limiter: RateLimiter,
}

/// Monotonic clock with an adjustable offset (tests move time forward instead of sleeping).
#[derive(Debug, Default)]
pub struct Clock {
    offset: Mutex<Duration>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        now.checked_add(offset).unwrap_or(now)
    }

    /// Wall-clock time with the same offset (for HTTP dates such as `Retry-After`).
    pub fn system_now(&self) -> SystemTime {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        now.checked_add(offset).unwrap_or(now)
    }

    pub fn advance(&self, by: Duration) {
        let mut o = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *o = o.saturating_add(by);
    }
}

/// Rolling one-hour window per credential id, as on the real service (sheet section 7).
///
/// The window holds **every** authenticated request of the credential, allowed or refused
/// (429): a request is allowed only when fewer than `per_hour` requests are in the window
/// before it, and it is recorded either way. A client that keeps retrying into a closed window
/// therefore keeps it closed; one that backs off sees it open as old requests leave.
///
/// Requests are counted in buckets of [`RATE_BUCKET`] (a bucket starts at its first request
/// and leaves the window [`RATE_WINDOW`] after that), so memory is bounded: at most 3601
/// buckets per credential whatever the request rate, and requests leave the window at most
/// one second early.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<String, Window>,
}

/// The requests of one credential in the window, oldest bucket first.
#[derive(Debug, Default)]
struct Window {
    buckets: VecDeque<Bucket>,
    /// Sum of the buckets' counts.
    total: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    start: Instant,
    count: u64,
}

impl Window {
    /// Drops the buckets that have left the window at `now`.
    fn evict(&mut self, now: Instant) {
        while let Some(front) = self.buckets.front() {
            if now.saturating_duration_since(front.start) >= RATE_WINDOW {
                self.total = self.total.saturating_sub(front.count);
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn record(&mut self, now: Instant) {
        self.total = self.total.saturating_add(1);
        match self.buckets.back_mut() {
            Some(b) if now.saturating_duration_since(b.start) < RATE_BUCKET => b.count += 1,
            _ => self.buckets.push_back(Bucket {
                start: now,
                count: 1,
            }),
        }
    }
}

/// Length of the rolling rate-limit window.
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// Granularity of the rate-limit window (see [`RateLimiter`]).
pub const RATE_BUCKET: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// Records a request of credential `id` at `now` and answers whether it is allowed: it is
    /// when fewer than `per_hour` requests (allowed or refused) were in the window before it.
    /// A refused (429) request is recorded too and keeps the window closed.
    pub fn allow(&mut self, id: &str, now: Instant, per_hour: u32) -> bool {
        let w = self.windows.entry(id.to_string()).or_default();
        w.evict(now);
        let allowed = w.total < u64::from(per_hour);
        w.record(now);
        allowed
    }

    /// Requests of credential `id` (allowed or refused) in the window at `now`.
    pub fn in_window(&self, id: &str, now: Instant) -> u64 {
        self.windows.get(id).map_or(0, |w| {
            w.buckets
                .iter()
                .filter(|b| now.saturating_duration_since(b.start) < RATE_WINDOW)
                .map(|b| b.count)
                .sum()
        })
    }

    /// How long from `now` until a request of credential `id` would be allowed, if it sends
    /// nothing in between: the time until enough of the oldest requests have left the window
    /// for fewer than `per_hour` to remain. `None` when a request would be allowed now.
    pub fn retry_after(&self, id: &str, now: Instant, per_hour: u32) -> Option<Duration> {
        let w = self.windows.get(id)?;
        let live: Vec<&Bucket> = w
            .buckets
            .iter()
            .filter(|b| now.saturating_duration_since(b.start) < RATE_WINDOW)
            .collect();
        let mut remaining: u64 = live.iter().map(|b| b.count).sum();
        let limit = u64::from(per_hour);
        if remaining < limit {
            return None;
        }
        for b in live {
            remaining = remaining.saturating_sub(b.count);
            if remaining < limit {
                let leaves = b.start.checked_add(RATE_WINDOW).unwrap_or(b.start);
                return Some(leaves.saturating_duration_since(now));
            }
        }
        None
    }

    /// Forgets every window.
    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

/// Parses `Authorization: Basic ...` into (user, password).
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.trim())
    } else {
        None
    }
}

fn caller_from(c: &SeedCredential, kind: CallerKind) -> Caller {
    Caller {
        credential_id: c.id.clone(),
        kind,
        account_id: c.account_id.clone(),
        scopes: c.scopes.clone(),
    }
}

/// Resolves the Authorization header of a Bitbucket API request.
/// - Basic `email:token` matches an `api_token` credential (email case-insensitive);
/// - Bearer matches an `access_token` credential or an issued OAuth token.
///
/// Anything else (an API token as Bearer, an OAuth consumer's key:secret as Basic, ...) is 401.
pub fn resolve(
    authorization: Option<&str>,
    store: &Store,
    auth: &AuthState,
    now: Instant,
) -> Result<Caller, AuthError> {
    let Some(value) = authorization else {
        return Err(AuthError::Missing);
    };
    if let Some((user, pass)) = parse_basic(value) {
        return store
            .seed
            .credentials
            .iter()
            .find(|c| {
                c.kind == CredentialKind::ApiToken
                    && c.email
                        .as_deref()
                        .map(|e| e.eq_ignore_ascii_case(&user))
                        .unwrap_or(false)
                    && c.token.as_deref() == Some(pass.as_str())
            })
            .map(|c| caller_from(c, CallerKind::ApiToken))
            .ok_or(AuthError::Invalid);
    }
    if let Some(token) = parse_bearer(value) {
        if token.is_empty() {
            return Err(AuthError::Invalid);
        }
        if let Some(c) =
            store.seed.credentials.iter().find(|c| {
                c.kind == CredentialKind::AccessToken && c.token.as_deref() == Some(token)
            })
        {
            return Ok(caller_from(c, CallerKind::AccessToken));
        }
        if let Some(t) = auth.access_tokens.get(token) {
            if now >= t.expires_at {
                return Err(AuthError::Expired(t.credential_id.clone()));
            }
            // The consumer may have been removed from the seed since; then the token is dead.
            return store
                .seed
                .credentials
                .iter()
                .find(|c| c.id == t.credential_id && c.kind == CredentialKind::OauthConsumer)
                .map(|c| caller_from(c, CallerKind::OAuth))
                .ok_or(AuthError::Invalid);
        }
        return Err(AuthError::Invalid);
    }
    Err(AuthError::Invalid)
}

/// Resolves the Authorization header of an Admin API (`/admin`) request: only
/// `Bearer <token>` of an `admin_api_key` credential is accepted; anything else (none, Basic,
/// an access token, an OAuth token) is 401.
pub fn resolve_admin(authorization: Option<&str>, store: &Store) -> Result<Caller, AuthError> {
    let Some(value) = authorization else {
        return Err(AuthError::Missing);
    };
    let token = parse_bearer(value).ok_or(AuthError::Invalid)?;
    if token.is_empty() {
        return Err(AuthError::Invalid);
    }
    store
        .seed
        .credentials
        .iter()
        .find(|c| c.kind == CredentialKind::AdminApiKey && c.token.as_deref() == Some(token))
        .map(|c| caller_from(c, CallerKind::AdminApiKey))
        .ok_or(AuthError::Invalid)
}

// ---------------------------------------------------------------------------------------------
// The scope table
// ---------------------------------------------------------------------------------------------

/// A family of routes sharing one authorization rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `GET /2.0/repositories/{ws}[/{repo}]`
    RepositoriesRead,
    /// `GET /2.0/workspaces/{ws}`, `GET /2.0/user/workspaces`
    WorkspaceRead,
    /// `GET /2.0/workspaces/{ws}/members[/{member}]` (including the email query)
    MembersRead,
    /// `GET /2.0/workspaces/{ws}/projects`
    ProjectsRead,
    /// `GET /2.0/workspaces/{ws}/permissions`
    WorkspacePermissionsRead,
    /// `GET /2.0/workspaces/{ws}/permissions/repositories[/{repo}]`
    WorkspaceRepoPermissionsRead,
    /// `GET /1.0/groups/...`
    GroupsRead,
    /// `POST|PUT /1.0/groups/...`
    GroupsWrite,
    /// `DELETE /1.0/groups/...`
    GroupsDelete,
    /// `GET /1.0/group-privileges/...`
    GroupPrivilegesRead,
    /// `PUT /1.0/group-privileges/...`
    GroupPrivilegesWrite,
    /// `DELETE /1.0/group-privileges/...`
    GroupPrivilegesDelete,
    /// `GET /2.0/repositories/{ws}/{repo}/permissions-config/...`
    RepoPermissionsRead,
    /// `PUT /2.0/repositories/{ws}/{repo}/permissions-config/...`
    RepoPermissionsWrite,
    /// `DELETE /2.0/repositories/{ws}/{repo}/permissions-config/...`
    RepoPermissionsDelete,
    /// `GET /2.0/workspaces/{ws}/projects/{key}/permissions-config/...`
    ProjectPermissionsRead,
    /// `PUT /2.0/workspaces/{ws}/projects/{key}/permissions-config/...`
    ProjectPermissionsWrite,
    /// `DELETE /2.0/workspaces/{ws}/projects/{key}/permissions-config/...`
    ProjectPermissionsDelete,
    /// Every Atlassian Admin API route (`/admin/...`, an `admin_api_key`); no scope rule.
    Admin,
}

impl Family {
    /// Every family, in scope-table order.
    pub const ALL: &'static [Family] = &[
        Family::RepositoriesRead,
        Family::WorkspaceRead,
        Family::MembersRead,
        Family::ProjectsRead,
        Family::WorkspacePermissionsRead,
        Family::WorkspaceRepoPermissionsRead,
        Family::GroupsRead,
        Family::GroupsWrite,
        Family::GroupsDelete,
        Family::GroupPrivilegesRead,
        Family::GroupPrivilegesWrite,
        Family::GroupPrivilegesDelete,
        Family::RepoPermissionsRead,
        Family::RepoPermissionsWrite,
        Family::RepoPermissionsDelete,
        Family::ProjectPermissionsRead,
        Family::ProjectPermissionsWrite,
        Family::ProjectPermissionsDelete,
        Family::Admin,
    ];

    /// The family's name in the README's scope table (e.g. `1.0 groups write`).
    pub fn name(self) -> &'static str {
        match self {
            Family::RepositoriesRead => "repositories read",
            Family::WorkspaceRead => "workspace read",
            Family::MembersRead => "members read",
            Family::ProjectsRead => "projects read",
            Family::WorkspacePermissionsRead => "workspace permissions",
            Family::WorkspaceRepoPermissionsRead => "workspace repo permissions",
            Family::GroupsRead => "1.0 groups read",
            Family::GroupsWrite => "1.0 groups write",
            Family::GroupsDelete => "1.0 groups delete",
            Family::GroupPrivilegesRead => "1.0 group-privileges read",
            Family::GroupPrivilegesWrite => "1.0 group-privileges write",
            Family::GroupPrivilegesDelete => "1.0 group-privileges delete",
            Family::RepoPermissionsRead => "repo permissions-config read",
            Family::RepoPermissionsWrite => "repo permissions-config write",
            Family::RepoPermissionsDelete => "repo permissions-config delete",
            Family::ProjectPermissionsRead => "project permissions-config read",
            Family::ProjectPermissionsWrite => "project permissions-config write",
            Family::ProjectPermissionsDelete => "project permissions-config delete",
            Family::Admin => "admin",
        }
    }

    /// The family named `name`: its scope-table name ([`Family::name`]) with spaces, dashes
    /// and underscores interchangeable and case ignored (`1.0 groups write`,
    /// `1.0_groups_write`, `repo-permissions-config-write`), or the Rust variant name
    /// (`GroupsWrite`, any case).
    pub fn from_name(name: &str) -> Option<Family> {
        fn norm(s: &str) -> String {
            s.trim()
                .to_ascii_lowercase()
                .split([' ', '-', '_'])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        }
        let wanted = norm(name);
        Family::ALL.iter().copied().find(|f| {
            norm(f.name()) == wanted || format!("{f:?}").eq_ignore_ascii_case(name.trim())
        })
    }
}

/// Authorization rule of a route family.
#[derive(Clone, Copy, Debug)]
pub struct ScopeRule {
    pub family: Family,
    /// Every one of these Atlassian API-token scopes is required.
    pub api_token: &'static [&'static str],
    /// OAuth scopes required (all of them, implications applied); `None` = OAuth tokens refused.
    pub oauth: Option<&'static [&'static str]>,
    /// Scopes an access token needs (OAuth-style names); `None` = access tokens refused.
    pub access_token: Option<&'static [&'static str]>,
    /// The acting account must be a workspace admin (owner or listed admin).
    pub admin_only: bool,
    /// 1.0 group write: refused to API tokens when the seed sets `group_writes_require_oauth`.
    pub group_write: bool,
}

const fn rule(
    family: Family,
    api_token: &'static [&'static str],
    oauth: Option<&'static [&'static str]>,
    access_token: Option<&'static [&'static str]>,
    admin_only: bool,
    group_write: bool,
) -> ScopeRule {
    ScopeRule {
        family,
        api_token,
        oauth,
        access_token,
        admin_only,
        group_write,
    }
}

const READ_REPO: &str = "read:repository:bitbucket";
const ADMIN_REPO: &str = "admin:repository:bitbucket";
const ADMIN_PROJECT: &str = "admin:project:bitbucket";
const READ_PROJECT: &str = "read:project:bitbucket";
const READ_WS: &str = "read:workspace:bitbucket";
const READ_PERM: &str = "read:permission:bitbucket";
const WRITE_PERM: &str = "write:permission:bitbucket";
const DELETE_PERM: &str = "delete:permission:bitbucket";

/// Every granular scope the emulated 2.0 endpoints ask of an API token: a credential with all
/// of them may call every route (tests, benchmarks and the demo give it to their admin).
pub const API_TOKEN_SCOPES: &[&str] = &[
    READ_REPO,
    ADMIN_REPO,
    READ_PROJECT,
    ADMIN_PROJECT,
    READ_WS,
    READ_PERM,
    WRITE_PERM,
    DELETE_PERM,
];

/// THE scope table: one row per route family. API-token scopes are Atlassian granular
/// scopes (all required, no implications); OAuth scopes use Bitbucket's names with its
/// documented implications ([`oauth_scope_implies`]).
#[rustfmt::skip]
pub const SCOPE_TABLE: &[ScopeRule] = &[
    rule(Family::RepositoriesRead, &[READ_REPO], Some(&["repository"]), Some(&["repository"]), false, false),
    rule(Family::WorkspaceRead, &[READ_WS], Some(&["account"]), Some(&[]), false, false),
    rule(Family::MembersRead, &[READ_WS], Some(&["account"]), Some(&[]), false, false),
    rule(Family::ProjectsRead, &[READ_PROJECT], Some(&["project"]), Some(&["project"]), false, false),
    rule(Family::WorkspacePermissionsRead, &[READ_WS], Some(&["account"]), None, true, false),
    rule(Family::WorkspaceRepoPermissionsRead, &[READ_REPO], Some(&["repository"]), None, true, false),
    rule(Family::GroupsRead, &[READ_PERM], Some(&["account"]), None, true, false),
    rule(Family::GroupsWrite, &[WRITE_PERM], Some(&["account:write"]), None, true, true),
    rule(Family::GroupsDelete, &[DELETE_PERM], Some(&["account:write"]), None, true, true),
    rule(Family::GroupPrivilegesRead, &[READ_PERM], Some(&["repository:admin"]), None, true, false),
    rule(Family::GroupPrivilegesWrite, &[ADMIN_REPO, WRITE_PERM], Some(&["repository:admin"]), None, true, false),
    rule(Family::GroupPrivilegesDelete, &[ADMIN_REPO, DELETE_PERM], Some(&["repository:admin"]), None, true, false),
    rule(Family::RepoPermissionsRead, &[ADMIN_REPO, READ_PERM], Some(&["repository:admin"]), None, true, false),
    rule(Family::RepoPermissionsWrite, &[ADMIN_REPO, WRITE_PERM], None, None, true, false),
    rule(Family::RepoPermissionsDelete, &[ADMIN_REPO, DELETE_PERM], None, None, true, false),
    rule(Family::ProjectPermissionsRead, &[ADMIN_PROJECT, READ_PERM], Some(&["project:admin"]), None, true, false),
    rule(Family::ProjectPermissionsWrite, &[ADMIN_PROJECT, WRITE_PERM], None, None, true, false),
    rule(Family::ProjectPermissionsDelete, &[ADMIN_PROJECT, DELETE_PERM], None, None, true, false),
];

pub fn scope_rule(family: Family) -> Option<&'static ScopeRule> {
    SCOPE_TABLE.iter().find(|r| r.family == family)
}

/// Scopes implied by an OAuth scope (besides itself).
pub fn oauth_scope_implies(scope: &str) -> &'static [&'static str] {
    match scope {
        "repository:write" => &["repository"],
        "account:write" => &["account"],
        "project" => &["repository"],
        "project:write" => &["project", "repository"],
        "pullrequest" => &["repository"],
        "pullrequest:write" => &["pullrequest", "repository:write", "repository"],
        "team:write" => &["team"],
        _ => &[],
    }
}

fn has_oauth_scope(granted: &[String], wanted: &str) -> bool {
    granted
        .iter()
        .any(|g| g == wanted || oauth_scope_implies(g).contains(&wanted))
}

/// Why an authenticated request is refused (403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This kind of credential can never call this route.
    CredentialType(String),
    /// Scopes missing: `required` lists every scope the route needs for this credential kind.
    MissingScopes {
        required: Vec<String>,
        granted: Vec<String>,
    },
    /// The acting account is not a workspace admin.
    NotAdmin,
}

/// Applies a rule to a caller.
pub fn authorize(rule: &ScopeRule, caller: &Caller, store: &Store) -> Result<(), Refusal> {
    let required: &[&str] = match caller.kind {
        CallerKind::ApiToken => {
            if rule.group_write && store.seed.group_writes_require_oauth {
                return Err(Refusal::CredentialType(
                    "API tokens cannot write 1.0 groups: an OAuth consumer with the account:write scope is required.".into(),
                ));
            }
            rule.api_token
        }
        CallerKind::OAuth => match rule.oauth {
            Some(s) => s,
            None => {
                return Err(Refusal::CredentialType(
                    "OAuth access tokens cannot change permissions: use an API token.".into(),
                ))
            }
        },
        CallerKind::AdminApiKey => {
            return Err(Refusal::CredentialType(
                "Admin API keys cannot be used with Bitbucket.".into(),
            ))
        }
        CallerKind::AccessToken => match rule.access_token {
            Some(s) => s,
            None => {
                return Err(Refusal::CredentialType(
                    "Access tokens cannot be used to view or change permissions.".into(),
                ))
            }
        },
    };
    let ok = match caller.kind {
        CallerKind::ApiToken => required
            .iter()
            .all(|r| caller.scopes.iter().any(|g| g == r)),
        _ => required.iter().all(|r| has_oauth_scope(&caller.scopes, r)),
    };
    if !ok {
        return Err(Refusal::MissingScopes {
            required: required.iter().map(|s| s.to_string()).collect(),
            granted: caller.scopes.clone(),
        });
    }
    if rule.admin_only {
        let admin = caller
            .account_id
            .as_deref()
            .map(|a| store.is_admin(a))
            .unwrap_or(false);
        if !admin {
            return Err(Refusal::NotAdmin);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::seed::Seed;

    fn store() -> Store {
        let seed: Seed = serde_json::from_str(
            r#"{"workspace":{"slug":"acme","owner":"o"},
                "users":[{"account_id":"o"},{"account_id":"u"}],
                "credentials":[
                  {"id":"api","kind":"api_token","email":"O@acme.test","token":"t1","account_id":"o","scopes":["read:permission:bitbucket"]},
                  {"id":"user","kind":"api_token","email":"u@acme.test","token":"t2","account_id":"u","scopes":["read:permission:bitbucket"]},
                  {"id":"ws","kind":"access_token","token":"at","scopes":["repository"]},
                  {"id":"oc","kind":"oauth_consumer","key":"k","secret":"s","account_id":"o","scopes":["account:write"]}
                ]}"#,
        )
        .unwrap();
        Store::new(&seed).unwrap()
    }

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[test]
    fn resolution() {
        let s = store();
        let a = AuthState::default();
        let now = Instant::now();
        let c = resolve(Some(&basic("o@acme.test", "t1")), &s, &a, now).unwrap();
        assert_eq!(c.credential_id, "api");
        assert_eq!(
            resolve(Some("Bearer t1"), &s, &a, now).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            resolve(Some(&basic("o@acme.test", "nope")), &s, &a, now).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(resolve(None, &s, &a, now).unwrap_err(), AuthError::Missing);
        assert_eq!(
            resolve(Some("Bearer at"), &s, &a, now).unwrap().kind,
            CallerKind::AccessToken
        );
        assert_eq!(
            resolve(Some(&basic("k", "s")), &s, &a, now).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn expiry() {
        let s = store();
        let mut a = AuthState::default();
        let now = Instant::now();
        a.access_tokens.insert(
            "tok".into(),
            IssuedToken {
                credential_id: "oc".into(),
                expires_at: now + Duration::from_secs(1),
            },
        );
        assert!(resolve(Some("Bearer tok"), &s, &a, now).is_ok());
        assert_eq!(
            resolve(Some("Bearer tok"), &s, &a, now + Duration::from_secs(1)).unwrap_err(),
            AuthError::Expired("oc".into())
        );
    }

    #[test]
    fn rules() {
        let s = store();
        let a = AuthState::default();
        let now = Instant::now();
        let admin = resolve(Some(&basic("o@acme.test", "t1")), &s, &a, now).unwrap();
        let user = resolve(Some(&basic("u@acme.test", "t2")), &s, &a, now).unwrap();
        let at = resolve(Some("Bearer at"), &s, &a, now).unwrap();
        let groups_read = scope_rule(Family::GroupsRead).unwrap();
        assert_eq!(authorize(groups_read, &admin, &s), Ok(()));
        assert_eq!(authorize(groups_read, &user, &s), Err(Refusal::NotAdmin));
        assert!(matches!(
            authorize(groups_read, &at, &s),
            Err(Refusal::CredentialType(_))
        ));
        match authorize(scope_rule(Family::GroupsWrite).unwrap(), &admin, &s) {
            Err(Refusal::MissingScopes { required, granted }) => {
                assert_eq!(required, vec!["write:permission:bitbucket"]);
                assert_eq!(granted, vec!["read:permission:bitbucket"]);
            }
            other => panic!("{other:?}"),
        }
        let oauth = Caller {
            credential_id: "oc".into(),
            kind: CallerKind::OAuth,
            account_id: Some("o".into()),
            scopes: vec!["account:write".into()],
        };
        // account:write implies account
        assert_eq!(authorize(groups_read, &oauth, &s), Ok(()));
        assert!(matches!(
            authorize(
                scope_rule(Family::RepoPermissionsWrite).unwrap(),
                &oauth,
                &s
            ),
            Err(Refusal::CredentialType(_))
        ));
        assert!(authorize(scope_rule(Family::RepositoriesRead).unwrap(), &at, &s).is_ok());
    }

    #[test]
    fn every_family_has_one_rule() {
        for r in SCOPE_TABLE {
            assert_eq!(
                SCOPE_TABLE.iter().filter(|x| x.family == r.family).count(),
                1
            );
        }
    }

    #[test]
    fn family_names() {
        for f in Family::ALL {
            assert_eq!(Family::from_name(f.name()), Some(*f));
            assert_eq!(Family::from_name(&format!("{f:?}")), Some(*f));
            assert_eq!(scope_rule(*f).is_some(), *f != Family::Admin);
        }
        assert_eq!(Family::ALL.len(), SCOPE_TABLE.len() + 1);
        assert_eq!(Family::from_name("Admin"), Some(Family::Admin));
        assert_eq!(
            Family::from_name("1.0_Group_Privileges_Write"),
            Some(Family::GroupPrivilegesWrite)
        );
        assert_eq!(
            Family::from_name(" repo-permissions-config-delete "),
            Some(Family::RepoPermissionsDelete)
        );
        assert_eq!(Family::from_name("groupswrite"), Some(Family::GroupsWrite));
        assert_eq!(Family::from_name("groups write"), None);
        assert_eq!(Family::from_name(""), None);
    }

    #[test]
    fn limiter_window() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.allow("a", t0, 2));
        assert!(l.allow("a", t0, 2));
        assert!(!l.allow("a", t0 + Duration::from_secs(10), 2));
        assert!(l.allow("b", t0, 2));
        // The two allowed requests have left; the refused one (t0 + 10 s) is still there.
        assert_eq!(l.in_window("a", t0 + RATE_WINDOW), 1);
        assert!(l.allow("a", t0 + RATE_WINDOW, 2));
        assert!(!l.allow("a", t0 + RATE_WINDOW, 2));
    }

    #[test]
    fn refused_requests_keep_the_window_closed() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.allow("a", t0, 1));
        // Retrying every 10 minutes: each refusal is counted, so the window never opens.
        for i in 1..=12u64 {
            assert!(!l.allow("a", t0 + Duration::from_secs(600 * i), 1), "{i}");
        }
        // Backing off for a whole window opens it.
        assert!(l.allow("a", t0 + Duration::from_secs(7200 + 3600), 1));
    }

    #[test]
    fn retry_after_is_when_the_window_has_room() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(l.retry_after("a", t0, 2), None);
        assert!(l.allow("a", t0, 2));
        assert_eq!(l.retry_after("a", t0, 2), None);
        assert!(l.allow("a", t0, 2));
        assert_eq!(l.retry_after("a", t0, 2), Some(RATE_WINDOW));
        let t1 = t0 + Duration::from_secs(1000);
        assert!(!l.allow("a", t1, 2));
        // Three in the window (two at t0, one at t1): room once the two at t0 have left.
        assert_eq!(l.retry_after("a", t1, 2), Some(Duration::from_secs(2600)));
        let t2 = t0 + RATE_WINDOW;
        assert_eq!(l.retry_after("a", t2, 2), None);
        assert!(l.allow("a", t2, 2));
        // t1's refusal and t2's request fill the window again: room when t1 leaves.
        assert_eq!(l.retry_after("a", t2, 2), Some(Duration::from_secs(1000)));
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..100_000 {
            l.allow("a", t0, 10);
        }
        assert_eq!(l.windows["a"].buckets.len(), 1);
        assert_eq!(l.in_window("a", t0), 100_000);
        // Four requests a second for two hours: at most one bucket per second of the window.
        for i in 0..(4 * 7200u64) {
            l.allow("b", t0 + Duration::from_millis(250 * i), 10);
        }
        assert!(l.windows["b"].buckets.len() <= 3601);
        assert_eq!(
            l.in_window("b", t0 + Duration::from_millis(250 * (4 * 7200 - 1))),
            4 * 3600
        );
    }
}
