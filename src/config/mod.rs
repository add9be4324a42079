//! Configuration: a TOML file plus `BBSYNC__SECTION__KEY` environment overrides, validated into
//! [`Config`]. The merged value tree is read section by section, so every problem is reported at
//! once, each naming its key: unknown keys, values of the wrong type, unknown words and semantic
//! mistakes alike. Secrets may come inline, from the environment, or from `*_file` (container and
//! systemd credentials, which may be written `${CREDENTIALS_DIRECTORY}/NAME`); they are wrapped
//! in [`Secret`] so they never print, and a syntax error never quotes them.
//!
//! One file per section: `bitbucket.rs`, `credentials.rs`, `source.rs` (`[source]` and
//! `[directory]`), `rules.rs` (`[[groups]]`, `[[grants]]`); `raw.rs` reads the tree and collects
//! the problems; `paths.rs` resolves file paths (and `$CREDENTIALS_DIRECTORY`); `syntax.rs`
//! describes TOML syntax errors.

mod admin_api;
mod apply;
mod bitbucket;
mod credentials;
mod daemon;
mod paths;
mod raw;
mod rules;
mod scope;
mod source;
mod syntax;

pub use crate::secret::Secret;
pub use admin_api::{AdminApiConfig, MembershipBackendKind};
pub use apply::ApplySettings;
pub use daemon::{
    cron_period, parse_cron, DaemonSettings, HttpSettings, LogFormat, ScheduleSpec, DEFAULT_LISTEN,
};
pub use paths::CREDENTIALS_DIRECTORY;
pub use scope::{Offboarding, Scope};
pub use source::{
    is_valid_ldap_filter, CsvSettings, HrAuth, HrFields, HrHttpSettings, HrSettings, LdapSettings,
    Pagination, Schema, SearchScope, SearchSettings, SourceSettings, StatusMap,
};

use crate::family::{ApiFamily, CredentialKind};
use crate::model::{AccountId, GroupSlug, Permission, ProjectKey, ProjectPermission, RepoSlug};
use paths::Paths;
use raw::{Field, Problems, RawTable, Table, Word};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration could not be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML. The message never quotes the offending line: it may hold a secret.
    #[error("cannot parse configuration {origin}{}: {message}", at(.line, .column))]
    Syntax {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("cannot load configuration {origin}: {source}")]
    Load {
        origin: String,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid configuration {origin}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

/// ` at line L, column C` when the position is known.
fn at(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// Dry-run (the default) only plans; apply writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    DryRun,
    Apply,
}

/// When the audit file is flushed to stable storage (`[audit] fsync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFsync {
    /// `fdatasync` after every record: survives a power loss.
    #[default]
    Always,
    /// The page cache only: survives a crash or `kill -9` of bbsync, not a power loss.
    Never,
}

/// Which API writes repository grants of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantWrites {
    /// 2.0 `permissions-config` (works on classic and organisation-managed workspaces; needs an
    /// admin's API token).
    PermissionsConfig,
    /// 1.0 `group-privileges` (classic workspaces only).
    GroupPrivileges,
}

/// Which reader reads the repository grants of groups (`bitbucket.grant_reader`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantReader {
    /// The cheaper of the two for the managed repositories, and 2.0 when the 1.0 listing is
    /// refused (403, 404, 405).
    #[default]
    Auto,
    /// `GET /1.0/group-privileges/{ws}` only: one request for the whole workspace, however
    /// large its answer.
    V1GroupPrivileges,
    /// `GET /2.0/repositories/{ws}/{repo}/permissions-config/groups` for each managed
    /// repository only (the `permissions_read` family's credential).
    V2PermissionsConfig,
}

impl GrantReader {
    /// The word in the configuration and the reports.
    pub fn key(self) -> &'static str {
        match self {
            GrantReader::Auto => "auto",
            GrantReader::V1GroupPrivileges => "v1_group_privileges",
            GrantReader::V2PermissionsConfig => "v2_permissions_config",
        }
    }
}

/// A Bitbucket credential.
#[derive(Clone, Debug)]
pub enum Credential {
    /// An Atlassian API token of an admin user, sent as HTTP Basic `email:token`.
    ApiToken { email: String, token: Secret },
    /// A workspace, project or repository access token, sent as Bearer.
    AccessToken { token: Secret },
    /// An OAuth 2.0 consumer using the client-credentials grant.
    OAuth {
        client_id: String,
        client_secret: Secret,
    },
}

impl Credential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::ApiToken { .. } => CredentialKind::ApiToken,
            Credential::AccessToken { .. } => CredentialKind::AccessToken,
            Credential::OAuth { .. } => CredentialKind::OAuth,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BitbucketConfig {
    /// Workspace slug (not its UUID: 1.0 endpoints refuse UUIDs).
    pub workspace: String,
    /// Base of `/1.0` and `/2.0`.
    pub api_url: String,
    pub oauth_token_url: String,
    pub timeout: Duration,
    /// Retries of one request on 429, 5xx and transport errors (never on other 4xx).
    pub max_retries: u32,
    pub grant_writes: GrantWrites,
    /// Which reader reads the repository grants of groups.
    pub grant_reader: GrantReader,
    /// Name of the credential serving each API family (every family present).
    pub families: BTreeMap<ApiFamily, String>,
    /// Which API reads and writes group memberships.
    pub membership_backend: MembershipBackendKind,
}

/// Bitbucket group fed from directory groups and/or people's attributes.
#[derive(Clone, Debug)]
pub struct GroupRule {
    pub name: String,
    pub slug: GroupSlug,
    /// Directory groups (by `cn` or full DN) whose members, together, make up this group.
    pub from: Vec<String>,
    /// Attribute conditions (`[[groups.when]]`): people who meet them are members too (the
    /// union with `from`). Empty: no attribute rule.
    pub when: Vec<Condition>,
    /// Whether one condition of `when` is enough (`match = "any"`) or all must hold (the
    /// default, `match = "all"`).
    pub when_any: bool,
    /// Create the Bitbucket group when it does not exist (default false).
    pub create: bool,
}

/// One attribute condition of a group rule: the person's attribute (any of its values,
/// trimmed) equals a value, is one of several, or matches a regular expression.
#[derive(Clone, Debug)]
pub struct Condition {
    /// The attribute name as written (`department`); compared case-insensitively.
    pub attribute: String,
    pub test: AttributeTest,
}

#[derive(Clone, Debug)]
pub enum AttributeTest {
    /// Case-insensitive equality (as LDAP's caseIgnoreMatch compares `department`, `title`);
    /// held trimmed and lower-cased.
    Equals(String),
    /// Case-insensitive equality with any of these (held trimmed and lower-cased).
    OneOf(Vec<String>),
    /// The regular expression finds a match in the value (anchor it with `^...$` for the
    /// whole value; `(?i)` for case-insensitive).
    Matches(regex::Regex),
}

impl Condition {
    /// Whether any of these values meets the condition.
    pub fn holds_for<'a>(&self, mut values: impl Iterator<Item = &'a str>) -> bool {
        match &self.test {
            AttributeTest::Equals(want) => values.any(|v| folded_eq(v, want)),
            AttributeTest::OneOf(wants) => values.any(|v| wants.iter().any(|w| folded_eq(v, w))),
            AttributeTest::Matches(re) => values.any(|v| re.is_match(v.trim())),
        }
    }
}

/// `value` (trimmed) equals `lower` (already trimmed and lower-cased), ignoring case.
fn folded_eq(value: &str, lower: &str) -> bool {
    let v = value.trim();
    if v.is_ascii() {
        v.eq_ignore_ascii_case(lower)
    } else {
        v.to_lowercase() == lower
    }
}

impl std::fmt::Display for Condition {
    /// `department = "Engineering"`, `location in ["Berlin", "Munich"]`, `title ~ /(?i)contractor/`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.test {
            AttributeTest::Equals(v) => write!(f, "{} = {v:?}", self.attribute),
            AttributeTest::OneOf(vs) => write!(f, "{} in {vs:?}", self.attribute),
            AttributeTest::Matches(re) => write!(f, "{} ~ /{}/", self.attribute, re.as_str()),
        }
    }
}

/// Which repositories a grant covers: the union of its selectors.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepoSelector {
    pub projects: Vec<ProjectKey>,
    pub repos: Vec<RepoSlug>,
    pub globs: Vec<String>,
}

impl RepoSelector {
    pub fn is_empty(&self) -> bool {
        self.projects.is_empty() && self.repos.is_empty() && self.globs.is_empty()
    }
}

/// A repository grant of a group on the repositories it selects.
#[derive(Clone, Debug)]
pub struct GrantRule {
    pub group: GroupSlug,
    pub permission: Permission,
    pub select: RepoSelector,
}

/// A project-level grant of a group.
#[derive(Clone, Debug)]
pub struct ProjectGrantRule {
    pub group: GroupSlug,
    pub permission: ProjectPermission,
    pub projects: Vec<ProjectKey>,
}

/// Limits on what one run may take away. A tripped limit holds every revocation (additions
/// go ahead) until the source recovers or a person approves exactly the held set.
#[derive(Clone, Debug)]
pub struct Safety {
    /// Most revoking changes (member removals, grant removals or downgrades) one run may make.
    /// 0 allows none.
    pub max_removals: usize,
    /// Largest share of the managed memberships and grants one run may revoke (applies once
    /// there are at least 20 of them).
    pub max_removal_ratio: f64,
    /// Largest share of one big group's members one run may remove.
    pub max_group_removal_ratio: f64,
    /// Groups of at least this many members are big.
    pub big_group_size: usize,
    /// Largest share of its people the directory may lose since the last good read (needs
    /// `offboarding.state_dir`).
    pub max_shrink_ratio: f64,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub origin: String,
    pub mode: Mode,
    pub bitbucket: BitbucketConfig,
    /// `[admin_api]`: the organisation's Atlassian Admin API, when configured.
    pub admin_api: Option<AdminApiConfig>,
    pub credentials: BTreeMap<String, Credential>,
    pub source: SourceSettings,
    /// How directory entries are read as people and groups (`[directory]`).
    pub directory: Schema,
    pub groups: Vec<GroupRule>,
    pub grants: Vec<GrantRule>,
    pub project_grants: Vec<ProjectGrantRule>,
    /// `[scope]`; `None`: every repository a grant rule selects and every project a project
    /// grant rule names is managed.
    pub scope: Option<Scope>,
    /// Accounts never removed from a group nor stripped of a direct grant (plus, at run time,
    /// the workspace owner).
    pub protected: Vec<AccountId>,
    pub offboarding: Offboarding,
    pub safety: Safety,
    /// JSON-lines audit file; `None` sends audit records to the log (target `bbsync::audit`).
    pub audit_path: Option<PathBuf>,
    pub audit_fsync: AuditFsync,
    /// `[apply]`: the worker pool, the request budgets, verification.
    pub apply: ApplySettings,
    /// A full reconcile's usual period (`daemon.interval`).
    pub interval: Duration,
    /// `[daemon]`, `[schedule]`, `[http]`, `[log]`.
    pub daemon: DaemonSettings,
}

// ---- raw, as written -------------------------------------------------------------------------

/// The top level as written; each section is read (and its problems reported) by its own
/// `validate`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    /// `"dry-run"` (the default) only plans; `"apply"` lets `bbsync run` write.
    mode: Field<Word<Mode>>,
    /// `[bitbucket]`: the workspace and how it is called.
    bitbucket: Table<bitbucket::RawBitbucket>,
    /// `[admin_api]`: the Atlassian Admin API of the organisation (optional).
    admin_api: Table<admin_api::RawAdminApi>,
    /// `[credentials.NAME]`: the credentials, by name.
    credentials: Field<BTreeMap<String, Table<credentials::RawCredential>>>,
    /// `[source]`: where people and groups are read from.
    source: Table<source::RawSource>,
    /// `[directory]`: how entries are read as people and groups.
    directory: Table<source::RawDirectory>,
    /// `[[groups]]`: Bitbucket groups fed from directory groups.
    groups: Field<Vec<Table<rules::RawGroupRule>>>,
    /// `[[grants]]`: repository grants of groups.
    grants: Field<Vec<Table<rules::RawGrantRule>>>,
    /// `[[project_grants]]`: project-level grants of groups.
    project_grants: Field<Vec<Table<rules::RawProjectGrantRule>>>,
    /// `[scope]`: the repositories and projects whose grants bbsync manages.
    scope: Table<scope::RawScope>,
    /// `[protected]`: accounts bbsync never takes anything from.
    protected: Table<scope::RawProtected>,
    /// `[offboarding]`: how people who left are treated.
    offboarding: Table<scope::RawOffboarding>,
    /// `[safety]`: limits on what one run may take away.
    safety: Table<RawSafety>,
    /// `[audit]`: where the audit records go.
    audit: Table<RawAudit>,
    /// `[apply]`: the worker pool, request budgets and verification.
    apply: Table<apply::RawApply>,
    /// `[daemon]`: `bbsync run` settings.
    daemon: Table<daemon::RawDaemon>,
    /// `[schedule]`: when the daemon's full reconciles run.
    schedule: Table<daemon::RawSchedule>,
    /// `[http]`: the daemon's endpoints.
    http: Table<daemon::RawHttp>,
    /// `[log]`: the log format.
    log: Table<daemon::RawLog>,
}

impl RawTable for RawConfig {}

/// `[safety]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSafety {
    /// Most revoking changes one run may make; default 50, 0 allows none.
    max_removals: Field<usize>,
    /// Largest share (0..1) of the managed memberships and grants one run may revoke; 0.25.
    max_removal_ratio: Field<f64>,
    /// Largest share (0..1) of one big group's members one run may remove; 0.25.
    max_group_removal_ratio: Field<f64>,
    /// Groups of at least this many members are big; 20.
    big_group_size: Field<usize>,
    /// Largest share (0..1) of people the directory may lose since the last good read; 0.2.
    max_shrink_ratio: Field<f64>,
}

impl RawTable for RawSafety {}

/// `[audit]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAudit {
    /// JSON-lines audit file, relative to the configuration file; without it records go to the log.
    path: Field<PathBuf>,
    /// `"always"` (default): fdatasync after every record; `"never"`: the page cache only.
    fsync: Field<Word<AuditFsync>>,
}

impl RawTable for RawAudit {}

// ---- loading ---------------------------------------------------------------------------------

impl Config {
    /// Loads `path` and applies `BBSYNC__SECTION__KEY` environment overrides; credential files
    /// written `${CREDENTIALS_DIRECTORY}/NAME` are looked for in that variable's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// [`Config::load`], with the environment given (`None`: the process's), for the overrides
    /// and `CREDENTIALS_DIRECTORY` alike.
    fn load_with_env(
        path: &Path,
        env: Option<config::Map<String, String>>,
    ) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        let builder = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("BBSYNC")
                    .prefix_separator("__")
                    .separator("__")
                    // Values stay strings (numbers and booleans still convert on use): a parsed
                    // secret such as "0123" would lose its leading zero.
                    .try_parsing(false)
                    .source(env.clone()),
            );
        let lookup = |name: &str| match &env {
            Some(env) => env.get(name).map(OsString::from),
            None => std::env::var_os(name),
        };
        Self::build(builder, &text, origin, &base, &lookup)
    }

    /// Parses TOML text without environment overrides (the demo's embedded configuration);
    /// `${CREDENTIALS_DIRECTORY}/` still comes from the process's environment.
    pub fn from_toml_str(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        Self::from_toml_str_in(text, origin, base, &|name| std::env::var_os(name))
    }

    /// [`Config::from_toml_str`] with the environment (for `CREDENTIALS_DIRECTORY`) given.
    fn from_toml_str_in(
        text: &str,
        origin: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError> {
        let builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        Self::build(builder, text, origin.to_owned(), base, env)
    }

    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        text: &str,
        origin: String,
        base: &Path,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError> {
        // The merged tree first; reading it never stops at a wrong type or an unknown key.
        let tree: Table<RawConfig> =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|source| match source {
                    config::ConfigError::FileParse { cause, .. } => {
                        syntax::error(origin.clone(), text, cause.as_ref())
                    }
                    source => ConfigError::Load {
                        origin: origin.clone(),
                        source,
                    },
                })?;
        validate(tree, origin, &Paths { base, env })
    }

    /// The credential name and credential serving `family`.
    pub fn credential_for(&self, family: ApiFamily) -> Option<(&str, &Credential)> {
        let name = self.bitbucket.families.get(&family)?;
        self.credentials.get(name).map(|c| (name.as_str(), c))
    }
}

// ---- validation, section by section ----------------------------------------------------------

fn validate(tree: Table<RawConfig>, origin: String, paths: &Paths) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let RawConfig {
        mode,
        bitbucket,
        admin_api,
        credentials,
        source,
        directory,
        groups,
        grants,
        project_grants,
        scope,
        protected,
        offboarding,
        safety,
        audit,
        apply,
        daemon,
        schedule,
        http,
        log,
    } = tree.read("", &mut p).unwrap_or_default();

    let mode = mode.word("mode", &mut p).unwrap_or(Mode::DryRun);
    let credentials = credentials::validate(credentials, paths, &mut p);
    let bitbucket = bitbucket::validate(bitbucket, &credentials, &mut p);
    let admin_api = admin_api::validate(admin_api, paths, &mut p);
    if bitbucket.membership_backend == MembershipBackendKind::AdminApi
        && admin_api.is_none()
        && !p.any_under("admin_api")
    {
        p.push(
            "bitbucket.membership_backend",
            "\"admin_api\" needs an [admin_api] table (org_id, api_key or api_key_file)",
        );
    }
    let directory = source::validate_directory(directory, &mut p);
    let source = source::validate_source(source, paths, &mut p);
    let groups = rules::validate_groups(groups, &mut p);
    let mut directory = directory;
    directory.person_attributes = rules::attributes_read(&groups);
    source::check_rule_attributes(&source, &groups, &mut p);
    let grants = rules::validate_grants(grants, &mut p);
    let project_grants = rules::validate_project_grants(project_grants, &mut p);
    if groups.is_empty() && grants.is_empty() && project_grants.is_empty() {
        p.say(
            "groups",
            "nothing to manage: add [[groups]], [[grants]] and/or [[project_grants]]",
        );
    }
    let scope = scope::validate_scope(scope, &mut p);
    let protected = scope::validate_protected(protected, &mut p);
    let offboarding = scope::validate_offboarding(offboarding, paths, &mut p);
    if let Some(hr) = source.hr() {
        if hr.invite_unresolved && !hr.resolve_by_members && admin_api.is_none() {
            p.push(
                "source.invite_unresolved",
                "true needs a resolver that finds people once they accept (source.resolve_by_members = true, or an [admin_api] table): without one, whoever accepted would be invited again every run",
            );
        }
        if hr.invite_unresolved && offboarding.state_dir.is_none() {
            p.push(
                "offboarding.state_dir",
                "is required when source.invite_unresolved = true (the invitations bbsync sent are remembered there, so an accepted one is not sent again)",
            );
        }
    }
    if offboarding.suspend_in_org && admin_api.is_none() && !p.any_under("admin_api") {
        p.push(
            "offboarding.suspend_in_org",
            "true needs an [admin_api] table (org_id, api_key or api_key_file): people are suspended in the organisation directory through the Atlassian Admin API",
        );
    }
    let safety = validate_safety(safety, &mut p);
    let (audit_path, audit_fsync) = validate_audit(audit, &mut p);
    let audit_path = audit_path.map(|a| paths.resolve(a));
    let apply = apply::validate_apply(apply, &mut p);
    let daemon = daemon::validate_daemon(
        daemon::RawDaemonSections {
            daemon,
            schedule,
            http,
            log,
        },
        paths,
        &mut p,
    );

    if !p.is_empty() {
        return Err(ConfigError::Invalid {
            origin,
            problems: p.into_messages(),
        });
    }
    Ok(Config {
        origin,
        mode,
        bitbucket,
        admin_api,
        credentials,
        source,
        directory,
        groups,
        grants,
        project_grants,
        scope,
        protected,
        offboarding,
        safety,
        audit_path,
        audit_fsync,
        apply,
        interval: daemon.interval,
        daemon,
    })
}

/// `[safety]`.
fn validate_safety(raw: Table<RawSafety>, p: &mut Problems) -> Safety {
    let RawSafety {
        max_removals,
        max_removal_ratio,
        max_group_removal_ratio,
        big_group_size,
        max_shrink_ratio,
    } = raw.read("safety", p).unwrap_or_default();
    let mut ratio = |key: &str, v: Field<f64>, default: f64| {
        let r = v.get(key, p).unwrap_or(default);
        if !(0.0..=1.0).contains(&r) {
            p.push(key, format!("{r} is not a share between 0 and 1"));
        }
        r
    };
    let max_removal_ratio = ratio("safety.max_removal_ratio", max_removal_ratio, 0.25);
    let max_group_removal_ratio = ratio(
        "safety.max_group_removal_ratio",
        max_group_removal_ratio,
        0.25,
    );
    let max_shrink_ratio = ratio("safety.max_shrink_ratio", max_shrink_ratio, 0.2);
    Safety {
        max_removals: max_removals.get("safety.max_removals", p).unwrap_or(50),
        max_removal_ratio,
        max_group_removal_ratio,
        big_group_size: big_group_size.get("safety.big_group_size", p).unwrap_or(20),
        max_shrink_ratio,
    }
}

/// `[audit]`: the audit file, if any (not yet resolved against the configuration's directory).
fn validate_audit(raw: Table<RawAudit>, p: &mut Problems) -> (Option<PathBuf>, AuditFsync) {
    let RawAudit { path, fsync } = raw.read("audit", p).unwrap_or_default();
    (
        path.get("audit.path", p),
        fsync.word("audit.fsync", p).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml", Path::new("/etc/bbsync"))
    }

    const GOOD: &str = r#"
[bitbucket]
workspace = "acme"
[credentials.admin]
kind = "api_token"
email = "admin@acme.test"
token = "t0k3n"
[source]
kind = "ldif"
path = "dir.ldif"
[[groups]]
name = "Developers"
from = ["developers"]
[[grants]]
group = "contractors"
permission = "write"
projects = ["proj"]
"#;

    #[test]
    fn apply_settings_default_to_a_paced_pool_and_name_every_bad_value() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.apply, ApplySettings::default());
        assert_eq!(c.apply.concurrency, 4);
        assert_eq!(c.apply.requests_per_hour + c.apply.burst, 1000);
        assert!(c.apply.verify);
        assert_eq!(c.audit_fsync, AuditFsync::Always);
        let custom = format!(
            "{GOOD}[apply]\nconcurrency = 8\nrequests_per_hour = 500\nburst = 5\nmax_wait_secs = 60\ncircuit_failures = 3\nverify = false\n[audit]\nfsync = \"never\"\n"
        );
        let c = parse(&custom).expect("valid");
        assert_eq!(
            c.apply,
            ApplySettings {
                concurrency: 8,
                requests_per_hour: 500,
                burst: 5,
                max_wait: Duration::from_secs(60),
                circuit_failures: 3,
                verify: false,
            }
        );
        assert_eq!(c.audit_fsync, AuditFsync::Never);
        let bad = format!(
            "{GOOD}[apply]\nconcurrency = 0\nrequests_per_hour = 0\nburst = 0\ncircuit_failures = 0\nverify = [1]\nworkers = 3\n[audit]\nfsync = \"sometimes\"\n"
        );
        let msg = parse(&bad).expect_err("invalid").to_string();
        for key in [
            "apply.concurrency",
            "apply.requests_per_hour",
            "apply.burst",
            "apply.circuit_failures",
            "apply.verify",
            "apply.workers",
            "audit.fsync",
        ] {
            assert!(msg.contains(key), "{key} not named in {msg}");
        }
    }

    #[test]
    fn daemon_settings_default_sanely_and_name_every_bad_value() {
        let c = parse(GOOD).expect("valid");
        let d = &c.daemon;
        assert_eq!(d.schedule, ScheduleSpec::Every(Duration::from_secs(300)));
        assert_eq!(d.interval, Duration::from_secs(300));
        assert_eq!(c.interval, d.interval);
        assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(d.http.listen, Some(DEFAULT_LISTEN.parse().expect("addr")));
        assert_eq!(d.http.ready_max_age, Duration::from_secs(900));
        assert!(d.http.token.is_none());
        assert_eq!(d.log_format, LogFormat::Text);
        assert_eq!(c.offboarding.poll_interval, Some(Duration::from_secs(30)));

        let custom = format!(
            "{GOOD}[schedule]\ncron = \"*/10 * * * *\"\n[daemon]\nshutdown_timeout_secs = 5\n[http]\nlisten = \"[::1]:9999\"\ntoken = \"0123456789abcdef\"\n[log]\nformat = \"json\"\n"
        );
        let c = parse(&format!("{custom}[offboarding]\npoll_interval_secs = 0\n")).expect("valid");
        let d = &c.daemon;
        assert_eq!(d.schedule, ScheduleSpec::Cron("*/10 * * * *".into()));
        assert_eq!(d.interval, Duration::from_secs(600));
        assert_eq!(d.http.ready_max_age, Duration::from_secs(1800));
        assert_eq!(d.http.listen, Some("[::1]:9999".parse().expect("addr")));
        assert_eq!(
            d.http.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef")
        );
        assert_eq!(d.log_format, LogFormat::Json);
        assert_eq!(d.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.offboarding.poll_interval, None);
        let off = parse(&format!("{GOOD}[http]\nlisten = \"\"\n")).expect("valid");
        assert_eq!(off.daemon.http.listen, None);

        let bad = format!(
            "{GOOD}[schedule]\ncron = \"every five minutes\"\n[daemon]\nshutdown_timeout_secs = 0\n[http]\nlisten = \"localhost\"\ntoken = \"sh0rt\"\nready_max_age_secs = 1\n[log]\nformat = \"xml\"\n[offboarding]\npoll_interval_secs = 2\n"
        );
        let msg = parse(&bad).expect_err("invalid").to_string();
        for key in [
            "schedule.cron",
            "daemon.shutdown_timeout_secs",
            "http.listen",
            "http.token",
            "http.ready_max_age_secs",
            "log.format",
            "offboarding.poll_interval_secs",
        ] {
            assert!(msg.contains(key), "{key} not named in {msg}");
        }
        assert!(!msg.contains("sh0rt"), "the token is not quoted: {msg}");
        let both =
            format!("{GOOD}[schedule]\ncron = \"*/5 * * * *\"\n[daemon]\ninterval_secs = 60\n");
        let msg = parse(&both).expect_err("both").to_string();
        assert!(msg.contains("both set"), "{msg}");
        for never in ["0 0 31 2 *", "* * * * * * *", "*/2 * * * * *"] {
            let c = format!("{GOOD}[schedule]\ncron = \"{never}\"\n");
            let msg = parse(&c).expect_err(never).to_string();
            assert!(msg.contains("schedule.cron"), "{never}: {msg}");
        }
    }

    #[test]
    fn a_good_config_has_safe_defaults() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.mode, Mode::DryRun);
        assert_eq!(c.bitbucket.api_url, "https://api.bitbucket.org");
        assert!(c.bitbucket.families.values().all(|n| n == "admin"));
        assert_eq!(c.bitbucket.families.len(), ApiFamily::ALL.len());
        assert_eq!(c.groups[0].slug.as_str(), "developers");
        assert_eq!(c.grants[0].select.projects[0].as_str(), "PROJ");
        assert_eq!(c.bitbucket.grant_writes, GrantWrites::PermissionsConfig);
        match &c.source {
            SourceSettings::LdifFile { path } => {
                assert_eq!(path, Path::new("/etc/bbsync/dir.ldif"))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !c.groups[0].create,
            "a group is created only when configured"
        );
        assert!(c.scope.is_none() && c.protected.is_empty());
        assert_eq!(c.offboarding.missing_grace, Duration::ZERO);
        assert!(c.offboarding.direct_grants);
    }

    #[test]
    fn scope_project_grants_protected_accounts_and_offboarding_are_read() {
        let owner = crate::model::synthetic_account_id("owner");
        let text = format!(
            r#"{GOOD}
[[project_grants]]
group = "Leads"
permission = "create-repo"
projects = ["proj"]
[scope]
projects = ["PROJ"]
[scope.include]
projects = ["PROJ"]
globs = ["Web-*"]
[scope.exclude]
repos = ["Legacy"]
[protected]
accounts = ["{owner}"]
[offboarding]
missing_grace_secs = 86400
state_dir = "state"
"#
        );
        let c = parse(&text).expect("valid");
        let scope = c.scope.expect("scope");
        assert_eq!(scope.include.projects[0].as_str(), "PROJ");
        assert_eq!(scope.include.globs, ["Web-*"], "globs stay case-sensitive");
        assert_eq!(scope.exclude.repos[0].as_str(), "legacy");
        assert_eq!(scope.projects[0].as_str(), "PROJ");
        assert_eq!(
            c.project_grants[0].permission,
            ProjectPermission::CreateRepo
        );
        assert_eq!(c.project_grants[0].group.as_str(), "leads");
        assert_eq!(c.protected[0].as_str(), owner);
        assert_eq!(c.offboarding.missing_grace, Duration::from_secs(86400));
        assert_eq!(
            c.offboarding.state_dir.as_deref(),
            Some(Path::new("/etc/bbsync/state"))
        );

        let bad = format!(
            "{GOOD}\n[[project_grants]]\ngroup = \"x\"\npermission = \"owner\"\n[protected]\naccounts = [\"abc123\"]\n[offboarding]\nmissing_grace_secs = 60\n"
        );
        let msg = parse(&bad).expect_err("invalid").to_string();
        for key in [
            "project_grants[0].permission",
            "project_grants[0].projects",
            "protected.accounts[0]",
            "offboarding.state_dir is required",
        ] {
            assert!(msg.contains(key), "missing {key} in:\n{msg}");
        }
    }

    #[test]
    fn a_password_bind_over_plain_ldap_is_refused_off_loopback_unless_allowed() {
        let ldap = |url: &str, extra: &str| {
            GOOD.replace(
                "kind = \"ldif\"\npath = \"dir.ldif\"",
                &format!("kind = \"ldap\"\nurl = \"{url}\"\nusers_base = \"dc=x\"\nbind_dn = \"cn=r\"\nbind_password = \"pw\"\n{extra}"),
            )
        };
        let msg = parse(&ldap("ldap://dc1.corp.test", ""))
            .expect_err("plaintext")
            .to_string();
        assert!(msg.contains("allow_plaintext_bind"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        for ok in [
            ldap("ldap://dc1.corp.test", "starttls = true"),
            ldap("ldaps://dc1.corp.test", ""),
            ldap("ldap://dc1.corp.test", "allow_plaintext_bind = true"),
            ldap("ldap://127.0.0.1:3890", ""),
            ldap("ldap://[::1]:3890", ""),
        ] {
            parse(&ok).expect("allowed");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let err = parse(
            r#"
mode = "yolo"
[bitbucket]
workspace = "{0000}"
api_url = "ftp://x"
[credentials.admin]
kind = "app_password"
[source]
kind = "ldif"
[[groups]]
from = ["x"]
[[grants]]
group = "g"
permission = "owner"
"#,
        )
        .expect_err("invalid");
        let msg = err.to_string();
        for key in [
            "mode:",
            "bitbucket.workspace:",
            "bitbucket.api_url:",
            "credentials.admin.kind:",
            "source.path",
            "groups[0].name",
            "grants[0].permission:",
            "grants[0]: select",
        ] {
            assert!(msg.contains(key), "missing {key} in:\n{msg}");
        }
    }

    #[test]
    fn the_grant_reader_is_auto_unless_chosen_and_a_bad_word_names_the_key() {
        assert_eq!(
            parse(GOOD).expect("valid").bitbucket.grant_reader,
            GrantReader::Auto
        );
        let with = |word: &str| {
            GOOD.replace(
                "workspace = \"acme\"",
                &format!("workspace = \"acme\"\ngrant_reader = \"{word}\""),
            )
        };
        for r in [
            GrantReader::Auto,
            GrantReader::V1GroupPrivileges,
            GrantReader::V2PermissionsConfig,
        ] {
            let c = parse(&with(r.key())).expect("valid");
            assert_eq!(c.bitbucket.grant_reader, r);
        }
        assert_eq!(
            problems_of(&with("v2")),
            ["bitbucket.grant_reader: \"v2\" is not one of \"auto\", \"v1_group_privileges\", \"v2_permissions_config\""]
        );
        // 2.0 reads need a credential that may list permissions; an access token may not.
        let token = GOOD
            .replace(
                "[source]",
                "[credentials.ws]\nkind = \"access_token\"\ntoken = \"x\"\n[source]",
            )
            .replace(
                "workspace = \"acme\"",
                "workspace = \"acme\"\ngrant_reader = \"v2_permissions_config\"\ncredential = \"admin\"\n[bitbucket.families]\npermissions_read = \"ws\"",
            );
        let problems = problems_of(&token);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("bitbucket.grant_reader: ")
                && problems[0].contains("\"ws\" is an access token")
                && problems[0].contains("bitbucket.families.permissions_read"),
            "{problems:?}"
        );
        assert!(parse(&token.replace("\"v2_permissions_config\"", "\"auto\"")).is_ok());
    }

    #[test]
    fn families_default_to_one_credential_and_can_each_name_another() {
        let two = GOOD.replace(
            "[source]",
            "[credentials.consumer]\nkind = \"oauth\"\nclient_id = \"k\"\nclient_secret = \"s\"\n[source]",
        );
        let err = parse(&two).expect_err("two credentials, no default");
        assert!(
            err.to_string()
                .contains("bitbucket.credential: several credentials"),
            "{err}"
        );
        let c = parse(&two.replace(
            "workspace = \"acme\"",
            "workspace = \"acme\"\ncredential = \"admin\"\n[bitbucket.families]\ngroups_write = \"consumer\"",
        ))
        .expect("valid");
        assert_eq!(
            c.credential_for(ApiFamily::GroupsWrite).map(|(n, _)| n),
            Some("consumer")
        );
        assert_eq!(
            c.credential_for(ApiFamily::PermissionsWrite)
                .map(|(n, _)| n),
            Some("admin")
        );
        let err = parse(&two.replace(
            "workspace = \"acme\"",
            "workspace = \"acme\"\ncredential = \"admin\"\n[bitbucket.families]\ngroup_write = \"consumer\"\npermissions_write = \"nobody\"",
        ))
        .expect_err("typos");
        let msg = err.to_string();
        assert!(
            msg.contains("bitbucket.families.group_write: unknown API family"),
            "{msg}"
        );
        assert!(
            msg.contains("bitbucket.families.permissions_write: no [credentials.nobody]"),
            "{msg}"
        );
    }

    #[test]
    fn ldap_sources_are_validated_key_by_key() {
        let ldap = GOOD.replace(
            "kind = \"ldif\"\npath = \"dir.ldif\"",
            "kind = \"ldap\"\npath = \"x.ldif\"\nurl = \"ldaps://dc1.corp.test\"\nstarttls = true\nbind_dn = \"cn=reader,dc=corp\"\nusers_filter = \"(objectClass=user\"\nusers_scope = \"deep\"\npage_size = 0",
        );
        let msg = parse(&ldap).expect_err("invalid").to_string();
        for key in [
            "source.path does not apply",
            "source.starttls",
            "source.bind_password (or bind_password_file) is required",
            "source.users_filter",
            "source.users_scope",
            "source.users_base is required",
            "source.page_size",
        ] {
            assert!(msg.contains(key), "missing {key} in:\n{msg}");
        }
        let ok = GOOD.replace(
            "kind = \"ldif\"\npath = \"dir.ldif\"",
            "kind = \"ldap\"\nurl = \"ldap://127.0.0.1:3890\"\nusers_base = \"ou=people,dc=x\"",
        );
        match parse(&ok).expect("valid").source {
            SourceSettings::Ldap(l) => {
                assert!(l.tls_verify, "verification is on by default");
                assert_eq!(l.groups.base, "ou=people,dc=x");
                assert_eq!(l.page_size, 500);
            }
            other => panic!("{other:?}"),
        }
        let stray = GOOD.replace(
            "path = \"dir.ldif\"",
            "path = \"dir.ldif\"\nurl = \"ldap://x\"",
        );
        assert!(parse(&stray)
            .expect_err("stray")
            .to_string()
            .contains("source.url does not apply to kind \"ldif\""));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse(&format!("{GOOD}\n[safety]\nmax_removal = 3\n")).expect_err("typo");
        assert!(err.to_string().contains("max_removal"), "{err}");
    }

    #[test]
    fn credential_files_may_live_in_the_credentials_directory_of_systemd() {
        let creds = tempfile::tempdir().expect("tmp");
        for (name, value) in [
            ("bitbucket-token", "from-systemd\n"),
            ("ldap-password", "ldap-pw"),
            ("http-token", "0123456789abcdef-http"),
            ("ca.pem", "not parsed at load time"),
        ] {
            std::fs::write(creds.path().join(name), value).expect("write");
        }
        let text = GOOD
            .replace(
                "token = \"t0k3n\"",
                "token_file = \"${CREDENTIALS_DIRECTORY}/bitbucket-token\"",
            )
            .replace(
                "kind = \"ldif\"\npath = \"dir.ldif\"",
                "kind = \"ldap\"\nurl = \"ldaps://dc1.corp.test\"\nusers_base = \"dc=x\"\nbind_dn = \"cn=r\"\nbind_password_file = \"$CREDENTIALS_DIRECTORY/ldap-password\"\nca_file = \"${CREDENTIALS_DIRECTORY}/ca.pem\"",
            )
            + "[http]\ntoken_file = \"${CREDENTIALS_DIRECTORY}/http-token\"\n";
        let dir = creds.path().as_os_str().to_owned();
        let set = |name: &str| (name == CREDENTIALS_DIRECTORY).then(|| dir.clone());
        let c =
            Config::from_toml_str_in(&text, "t", Path::new("/etc/bbsync"), &set).expect("valid");
        match c.credential_for(ApiFamily::PermissionsWrite) {
            Some((_, Credential::ApiToken { token, .. })) => {
                assert_eq!(token.expose(), "from-systemd")
            }
            other => panic!("{other:?}"),
        }
        match &c.source {
            SourceSettings::Ldap(l) => {
                assert_eq!(
                    l.bind_password.as_ref().map(Secret::expose),
                    Some("ldap-pw")
                );
                assert_eq!(
                    l.ca_file.as_deref(),
                    Some(creds.path().join("ca.pem").as_path())
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.daemon.http.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef-http")
        );

        // Unset: one problem per key that needs it, each naming the key; nothing else.
        let unset = |_: &str| None;
        let problems = match Config::from_toml_str_in(&text, "t", Path::new("/etc/bbsync"), &unset)
        {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
        };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for key in [
            "credentials.admin.token_file",
            "source.bind_password_file",
            "source.ca_file",
            "http.token_file",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{key}: "))
                    && p.contains("$CREDENTIALS_DIRECTORY, which is not set")
                    && p.contains("LoadCredential=")),
                "{key}: {problems:#?}"
            );
        }

        // Through Config::load, the injected environment is the overrides' one too.
        let file = creds.path().join("bbsync.toml");
        std::fs::write(&file, &text).expect("write");
        let env = config::Map::from([(
            CREDENTIALS_DIRECTORY.to_owned(),
            creds.path().display().to_string(),
        )]);
        Config::load_with_env(&file, Some(env)).expect("valid with the variable");
        let err = Config::load_with_env(&file, Some(config::Map::new())).expect_err("unset");
        assert!(
            err.to_string().contains("credentials.admin.token_file: "),
            "{err}"
        );
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("token"), "from-file\n").expect("write");
        let text = GOOD.replace("token = \"t0k3n\"", "token_file = \"token\"");
        let c = Config::from_toml_str(&text, "t", dir.path()).expect("valid");
        match c.credential_for(ApiFamily::PermissionsWrite) {
            Some((_, Credential::ApiToken { token, .. })) => {
                assert_eq!(token.expose(), "from-file")
            }
            other => panic!("{other:?}"),
        }
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("from-file"), "secret leaked: {dbg}");
        assert!(dbg.contains("***SECRET***"));

        let both = GOOD.replace("token = \"t0k3n\"", "token = \"a\"\ntoken_file = \"token\"");
        let err = Config::from_toml_str(&both, "t", dir.path()).expect_err("both");
        assert!(
            err.to_string()
                .contains("credentials.admin.token and credentials.admin.token_file"),
            "{err}"
        );
        let missing = GOOD.replace("token = \"t0k3n\"", "token_file = \"nope\"");
        let err = Config::from_toml_str(&missing, "t", dir.path()).expect_err("missing");
        assert!(
            err.to_string()
                .contains("credentials.admin.token_file: cannot read"),
            "{err}"
        );
    }

    fn problems_of(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn three_mistakes_in_three_sections_are_reported_at_once() {
        let text = GOOD
            .replace(
                "workspace = \"acme\"",
                "workspace = \"acme\"\ntimeout_secs = \"x\"",
            )
            .replace("permission = \"write\"", "permission = \"owner\"")
            + "[safety]\nmax_removal = 3\n";
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        for key in [
            "safety.max_removal: unknown key",
            "bitbucket.timeout_secs: invalid type",
            "grants[0].permission: \"owner\" is not one of \"read\", \"write\", \"admin\"",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "missing {key} in {problems:#?}"
            );
        }
    }

    #[test]
    fn a_type_error_and_an_unknown_key_in_one_section_are_both_reported() {
        let text = GOOD.replace(
            "kind = \"ldif\"\npath = \"dir.ldif\"",
            "kind = \"ldap\"\nurl = \"ldap://x\"\nusers_base = \"dc=x\"\npage_size = \"many\"\nusres_filter = \"(a=b)\"\nstarttls = \"perhaps\"",
        );
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        for key in [
            "source.page_size: invalid type: string \"many\"",
            "source.usres_filter: unknown key (known here: kind, url,",
            "source.starttls: invalid type: string \"perhaps\", expected a boolean",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "missing {key} in {problems:#?}"
            );
        }
        let problems = problems_of(&GOOD.replace(
            "workspace = \"acme\"",
            "workspace = \"acme\"\nmax_retries = -1\nretries = 3",
        ));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("bitbucket.retries: unknown key"));
        assert!(problems[1].starts_with("bitbucket.max_retries: invalid type"));
    }

    #[test]
    fn a_section_of_the_wrong_shape_does_not_hide_the_others() {
        let problems = problems_of(&format!("safety = 3\n{GOOD}\n[[audit]]\npath = \"a\"\n"));
        assert_eq!(
            problems,
            [
                "safety: expected a table, found an integer",
                "audit: expected a table, found an array"
            ]
        );
        let problems = problems_of(&GOOD.replace("[[groups]]", "[groups]"));
        assert!(
            problems[0].starts_with("groups: invalid type"),
            "{problems:#?}"
        );
    }

    #[test]
    fn fixed_words_are_read_trimmed_and_in_any_case() {
        let c = parse(&format!(
            "mode = \" Apply \"\n{}",
            GOOD.replace("\"write\"", "\" Write \"")
                .replace("kind = \"ldif\"", "kind = \"LDIF \"")
                .replace(
                    "workspace = \"acme\"",
                    "workspace = \"acme\"\ngrant_writes = \"group-privileges\""
                )
        ))
        .expect("valid");
        assert_eq!(c.mode, Mode::Apply);
        assert_eq!(c.grants[0].permission, Permission::Write);
        assert_eq!(c.bitbucket.grant_writes, GrantWrites::GroupPrivileges);
        let problems = problems_of(&GOOD.replace("kind = \"ldif\"", "kind = \"xlsx\""));
        assert_eq!(
            problems,
            ["source.kind: \"xlsx\" is not one of \"ldif\", \"ldap\", \"csv\", \"hr_http\""]
        );
    }

    #[test]
    fn every_listed_kind_is_a_kind_serde_accepts() {
        fn check<T: RawTable>(section: &str) {
            for (kind, _) in T::kinds() {
                let mut p = Problems::default();
                let table: Table<T> = config::Value::new(
                    None,
                    config::Map::from([("kind".to_owned(), config::Value::new(None, kind))]),
                )
                .try_deserialize()
                .expect("a table");
                assert!(
                    table.read(section, &mut p).is_some(),
                    "{section} kind {kind}"
                );
                assert!(
                    p.is_empty(),
                    "{section} kind {kind}: {:?}",
                    p.into_messages()
                );
            }
        }
        check::<source::RawSource>("source");
        check::<credentials::RawCredential>("credentials.x");
    }

    #[test]
    fn environment_overrides_convert_numbers_and_booleans_and_keep_secrets_verbatim() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("bbsync.toml");
        std::fs::write(
            &path,
            GOOD.replace(
                "kind = \"ldif\"\npath = \"dir.ldif\"",
                "kind = \"ldap\"\nurl = \"ldap://x\"\nusers_base = \"dc=x\"",
            ),
        )
        .expect("write");
        let env = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let c = Config::load_with_env(
            &path,
            env(&[
                ("BBSYNC__BITBUCKET__TIMEOUT_SECS", "5"),
                ("BBSYNC__SAFETY__MAX_REMOVALS", "0"),
                // Inside the tagged [source] table, whose content serde buffers.
                ("BBSYNC__SOURCE__PAGE_SIZE", "7"),
                ("BBSYNC__SOURCE__TLS_VERIFY", "false"),
                ("BBSYNC__CREDENTIALS__ADMIN__TOKEN", "00123"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.bitbucket.timeout, Duration::from_secs(5));
        assert_eq!(c.safety.max_removals, 0);
        match &c.source {
            SourceSettings::Ldap(l) => {
                assert_eq!(l.page_size, 7);
                assert!(!l.tls_verify);
            }
            other => panic!("{other:?}"),
        }
        match c.credential_for(ApiFamily::PermissionsWrite) {
            Some((_, Credential::ApiToken { token, .. })) => assert_eq!(token.expose(), "00123"),
            other => panic!("{other:?}"),
        }
        let err = Config::load_with_env(
            &path,
            env(&[
                ("BBSYNC__SAFETY__MAX_REMOVALS", "lots"),
                ("BBSYNC__SOURCE__PAGE_SIZE", "many"),
            ]),
        )
        .expect_err("not numbers");
        let msg = err.to_string();
        assert!(msg.contains("safety.max_removals: invalid type"), "{msg}");
        assert!(msg.contains("source.page_size: invalid type"), "{msg}");
    }

    #[test]
    fn a_syntax_error_names_its_line_but_never_prints_an_inline_secret() {
        for broken in [
            "token = \"s3cr3t-value\n",     // no closing quote
            "token = \"s3cr3t-value\" x\n", // stray text after the value
            "token = s3cr3t-value\n",       // not quoted
            "token = \"s3cr3t-value\" = \"s3cr3t-value\"\n",
        ] {
            let text = GOOD.replace("token = \"t0k3n\"\n", broken);
            let line = text
                .lines()
                .position(|l| l.starts_with("token"))
                .expect("token line")
                + 1;
            let err = parse(&text).expect_err("not TOML");
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
            assert!(!msg.contains("s3cr3t"), "secret in: {msg}");
            assert!(msg.contains(&format!("line {line},")), "{msg}");
        }
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_printed() {
        let err = parse(&GOOD.replace("token = \"t0k3n\"", "token = { value = \"s3cr3t-value\" }"))
            .expect_err("a table");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(
            err.to_string()
                .contains("credentials.admin.token: invalid type: a table, expected a string"),
            "{err}"
        );
    }
}
