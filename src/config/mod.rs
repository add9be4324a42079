//! Configuration: a TOML file plus `BBSYNC__SECTION__KEY` environment overrides, validated into
//! [`Config`]. Unknown keys are rejected; every semantic problem is reported at once, each naming
//! its key; secrets may come inline, from the environment, or from `*_file` (container and systemd
//! credentials) and are wrapped in [`Secret`] so they never print.

mod source;

pub use crate::secret::Secret;
pub use source::{
    is_valid_ldap_filter, LdapSettings, Schema, SearchScope, SearchSettings, SourceSettings,
};

use crate::family::{ApiFamily, CredentialKind};
use crate::model::{GroupSlug, Permission, ProjectKey, RepoSlug};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration could not be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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

/// Dry-run (the default) only plans; apply writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    DryRun,
    Apply,
}

/// Which API writes repository grants of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantWrites {
    /// 2.0 `permissions-config` (works on classic and organisation-managed workspaces; needs an
    /// admin's API token).
    PermissionsConfig,
    /// 1.0 `group-privileges` (classic workspaces only).
    GroupPrivileges,
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
    /// Name of the credential serving each API family (every family present).
    pub families: BTreeMap<ApiFamily, String>,
}

/// Bitbucket group fed from directory groups.
#[derive(Clone, Debug)]
pub struct GroupRule {
    pub name: String,
    pub slug: GroupSlug,
    /// Directory groups (by `cn` or full DN) whose members, together, make up this group.
    pub from: Vec<String>,
    /// Create the Bitbucket group when it does not exist.
    pub create: bool,
}

/// Which repositories a grant covers: the union of its selectors.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepoSelector {
    pub projects: Vec<ProjectKey>,
    pub repos: Vec<RepoSlug>,
    pub globs: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct GrantRule {
    pub group: GroupSlug,
    pub permission: Permission,
    pub select: RepoSelector,
}

#[derive(Clone, Debug)]
pub struct Safety {
    /// Most revoking changes (member removals, grant removals or downgrades) one run may make;
    /// beyond it no revocation is applied and the run fails. 0 allows none.
    pub max_removals: usize,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub origin: String,
    pub mode: Mode,
    pub bitbucket: BitbucketConfig,
    pub credentials: BTreeMap<String, Credential>,
    pub source: SourceSettings,
    /// How directory entries are read as people and groups (`[directory]`).
    pub directory: Schema,
    pub groups: Vec<GroupRule>,
    pub grants: Vec<GrantRule>,
    pub safety: Safety,
    /// JSON-lines audit file; `None` sends audit records to the log (target `bbsync::audit`).
    pub audit_path: Option<PathBuf>,
    pub interval: Duration,
}

// ---- raw, as written -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<String>,
    bitbucket: Option<RawBitbucket>,
    #[serde(default)]
    credentials: BTreeMap<String, RawCredential>,
    source: Option<RawSource>,
    #[serde(default)]
    directory: RawDirectory,
    #[serde(default)]
    groups: Vec<RawGroupRule>,
    #[serde(default)]
    grants: Vec<RawGrantRule>,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    daemon: RawDaemon,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBitbucket {
    workspace: Option<String>,
    api_url: Option<String>,
    oauth_token_url: Option<String>,
    credential: Option<String>,
    timeout_secs: Option<u64>,
    max_retries: Option<u32>,
    grant_writes: Option<String>,
    families: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    kind: Option<String>,
    email: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub(crate) kind: Option<String>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) url: Option<String>,
    pub(crate) bind_dn: Option<String>,
    pub(crate) bind_password: Option<String>,
    pub(crate) bind_password_file: Option<PathBuf>,
    pub(crate) starttls: Option<bool>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) tls_verify: Option<bool>,
    pub(crate) connect_timeout_secs: Option<u64>,
    pub(crate) timeout_secs: Option<u64>,
    pub(crate) read_timeout_secs: Option<u64>,
    pub(crate) page_size: Option<u32>,
    pub(crate) users_base: Option<String>,
    pub(crate) users_filter: Option<String>,
    pub(crate) users_scope: Option<String>,
    pub(crate) groups_base: Option<String>,
    pub(crate) groups_filter: Option<String>,
    pub(crate) groups_scope: Option<String>,
    pub(crate) disabled_filter: Option<String>,
    pub(crate) ad_range_retrieval: Option<bool>,
    pub(crate) ad_in_chain: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    user_object_classes: Option<Vec<String>>,
    group_object_classes: Option<Vec<String>>,
    account_id_attribute: Option<String>,
    email_attribute: Option<String>,
    display_name_attribute: Option<String>,
    uid_attribute: Option<String>,
    group_name_attribute: Option<String>,
    disabled_attribute: Option<String>,
    ad_user_account_control: Option<bool>,
    ppolicy_locked: Option<bool>,
    stable_id_attribute: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGroupRule {
    name: Option<String>,
    from: Option<Vec<String>>,
    create: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrantRule {
    group: Option<String>,
    permission: Option<String>,
    #[serde(default)]
    projects: Vec<String>,
    #[serde(default)]
    repos: Vec<String>,
    #[serde(default)]
    globs: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    max_removals: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interval_secs: Option<u64>,
}

// ---- loading ---------------------------------------------------------------------------------

impl Config {
    /// Loads `path` and applies `BBSYNC__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let builder = config::Config::builder()
            .add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            .add_source(
                config::Environment::with_prefix("BBSYNC")
                    .prefix_separator("__")
                    .separator("__")
                    // Values stay strings (numbers and booleans still convert on use): a parsed
                    // secret such as "0123" would lose its leading zero.
                    .try_parsing(false),
            );
        Self::build(builder, origin, &base)
    }

    /// Parses TOML text without environment overrides (the demo's embedded configuration).
    pub fn from_toml_str(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        Self::build(builder, origin.to_owned(), base)
    }

    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        origin: String,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|source| ConfigError::Load {
                    origin: origin.clone(),
                    source,
                })?;
        validate(raw, origin, base)
    }

    /// The credential name and credential serving `family`.
    pub fn credential_for(&self, family: ApiFamily) -> Option<(&str, &Credential)> {
        let name = self.bitbucket.families.get(&family)?;
        self.credentials.get(name).map(|c| (name.as_str(), c))
    }
}

pub(crate) fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn validate(raw: RawConfig, origin: String, base: &Path) -> Result<Config, ConfigError> {
    let mut p: Vec<String> = Vec::new();
    let resolve = |path: PathBuf| {
        if path.is_absolute() {
            path
        } else {
            base.join(path)
        }
    };

    let mode = match raw.mode.as_deref().map(str::trim) {
        None | Some("dry-run") => Mode::DryRun,
        Some("apply") => Mode::Apply,
        Some(other) => {
            p.push(format!(
                "mode: {other:?} is not one of \"dry-run\", \"apply\""
            ));
            Mode::DryRun
        }
    };

    // Secrets: inline (or env) value, or a file; never both.
    let secret = |key: &str, inline: Option<String>, file: Option<PathBuf>, p: &mut Vec<String>| {
        let before = p.len();
        let v = read_secret(key, inline, file, &resolve, p);
        if v.is_none() && p.len() == before {
            p.push(format!("{key} (or {key}_file) is required"));
        }
        v
    };

    let mut credentials = BTreeMap::new();
    for (name, c) in raw.credentials {
        let key = format!("credentials.{name}");
        let kind = non_empty(c.kind.clone());
        let cred = match kind.as_deref() {
            Some("api_token") => {
                let email = non_empty(c.email.clone());
                if email.as_deref().is_none_or(|e| !e.contains('@')) {
                    p.push(format!(
                        "{key}.email: an API token is sent as Basic auth with the Atlassian account email; set the admin's email"
                    ));
                }
                let token = secret(
                    &format!("{key}.token"),
                    c.token.clone(),
                    c.token_file.clone(),
                    &mut p,
                );
                match (email, token) {
                    (Some(email), Some(token)) => Some(Credential::ApiToken { email, token }),
                    _ => None,
                }
            }
            Some("access_token") => secret(
                &format!("{key}.token"),
                c.token.clone(),
                c.token_file.clone(),
                &mut p,
            )
            .map(|token| Credential::AccessToken { token }),
            Some("oauth") => {
                let id = non_empty(c.client_id.clone());
                if id.is_none() {
                    p.push(format!("{key}.client_id is required for an OAuth consumer"));
                }
                let s = secret(
                    &format!("{key}.client_secret"),
                    c.client_secret.clone(),
                    c.client_secret_file.clone(),
                    &mut p,
                );
                match (id, s) {
                    (Some(client_id), Some(client_secret)) => Some(Credential::OAuth {
                        client_id,
                        client_secret,
                    }),
                    _ => None,
                }
            }
            Some(other) => {
                p.push(format!(
                    "{key}.kind: {other:?} is not one of \"api_token\", \"access_token\", \"oauth\" (app passwords were removed by Atlassian on 2026-07-28)"
                ));
                None
            }
            None => {
                p.push(format!(
                    "{key}.kind is required (\"api_token\", \"access_token\" or \"oauth\")"
                ));
                None
            }
        };
        // Keys that do not belong to the kind are mistakes worth naming.
        let stray: &[(&str, bool)] = match kind.as_deref() {
            Some("api_token") => &[
                ("client_id", c.client_id.is_some()),
                ("client_secret", c.client_secret.is_some()),
            ],
            Some("access_token") => &[
                ("email", c.email.is_some()),
                ("client_id", c.client_id.is_some()),
                ("client_secret", c.client_secret.is_some()),
            ],
            Some("oauth") => &[
                ("email", c.email.is_some()),
                ("token", c.token.is_some() || c.token_file.is_some()),
            ],
            _ => &[],
        };
        for (k, set) in stray {
            if *set {
                p.push(format!(
                    "{key}.{k} does not apply to kind {:?}",
                    kind.as_deref().unwrap_or("")
                ));
            }
        }
        if let Some(cred) = cred {
            credentials.insert(name, cred);
        }
    }

    let bb = raw.bitbucket.unwrap_or_default();
    let workspace = non_empty(bb.workspace).unwrap_or_else(|| {
        p.push("bitbucket.workspace is required (the workspace slug)".into());
        String::new()
    });
    if workspace.starts_with('{') {
        p.push("bitbucket.workspace: use the workspace slug, not its UUID (1.0 endpoints refuse UUIDs)".into());
    } else if workspace.contains(['/', '?', '#', ' ']) {
        p.push(format!("bitbucket.workspace: {workspace:?} is not a slug"));
    }
    let url = |key: &str, v: Option<String>, default: &str, p: &mut Vec<String>| {
        let v = non_empty(v).unwrap_or_else(|| default.to_owned());
        match url::Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => v.trim_end_matches('/').to_owned(),
            _ => {
                p.push(format!("{key}: {v:?} is not an http(s) URL"));
                v
            }
        }
    };
    let api_url = url(
        "bitbucket.api_url",
        bb.api_url,
        "https://api.bitbucket.org",
        &mut p,
    );
    let oauth_token_url = url(
        "bitbucket.oauth_token_url",
        bb.oauth_token_url,
        "https://bitbucket.org/site/oauth2/access_token",
        &mut p,
    );
    // Which credential serves each API family: [bitbucket.families] overrides, else the
    // default credential (bitbucket.credential, or the only one defined).
    let broken_credential = |c: &str, p: &[String]| {
        p.iter()
            .any(|m| m.starts_with(&format!("credentials.{c}.")))
    };
    let default_credential = match non_empty(bb.credential) {
        Some(c) => {
            if !credentials.contains_key(&c) && !broken_credential(&c, &p) {
                p.push(format!(
                    "bitbucket.credential: no [credentials.{c}] is defined"
                ));
            }
            Some(c)
        }
        None if credentials.len() == 1 => credentials.keys().next().cloned(),
        None => None,
    };
    let overrides = bb.families.unwrap_or_default();
    for (key, name) in &overrides {
        if ApiFamily::from_key(key).is_none() {
            p.push(format!(
                "bitbucket.families.{key}: unknown API family (known: {})",
                ApiFamily::ALL.map(ApiFamily::key).join(", ")
            ));
        } else if !credentials.contains_key(name.trim()) && !broken_credential(name.trim(), &p) {
            p.push(format!(
                "bitbucket.families.{key}: no [credentials.{}] is defined",
                name.trim()
            ));
        }
    }
    let mut families = BTreeMap::new();
    let mut unserved = Vec::new();
    for f in ApiFamily::ALL {
        match overrides
            .get(f.key())
            .map(|s| s.trim().to_owned())
            .or_else(|| default_credential.clone())
        {
            Some(name) => {
                families.insert(f, name);
            }
            None => unserved.push(f.key()),
        }
    }
    if !unserved.is_empty() {
        if credentials.is_empty() && !p.iter().any(|m| m.starts_with("credentials.")) {
            p.push(
                "credentials: define at least one, e.g. [credentials.admin] kind = \"api_token\""
                    .into(),
            );
        } else if !credentials.is_empty() {
            p.push(format!(
                "bitbucket.credential: several credentials are defined; name the default one, or give every family under [bitbucket.families] (missing: {})",
                unserved.join(", ")
            ));
        }
    }
    let grant_writes = match bb.grant_writes.as_deref().map(str::trim) {
        None | Some("permissions-config") => GrantWrites::PermissionsConfig,
        Some("group-privileges") => GrantWrites::GroupPrivileges,
        Some(o) => {
            p.push(format!(
                "bitbucket.grant_writes: {o:?} is not one of \"permissions-config\", \"group-privileges\""
            ));
            GrantWrites::PermissionsConfig
        }
    };
    let timeout_secs = bb.timeout_secs.unwrap_or(30);
    if timeout_secs == 0 {
        p.push("bitbucket.timeout_secs must be at least 1".into());
    }

    let d = raw.directory;
    let defaults = Schema::default();
    let schema = Schema {
        user_object_classes: d
            .user_object_classes
            .unwrap_or(defaults.user_object_classes),
        group_object_classes: d
            .group_object_classes
            .unwrap_or(defaults.group_object_classes),
        account_id_attribute: non_empty(d.account_id_attribute)
            .unwrap_or(defaults.account_id_attribute),
        email_attribute: non_empty(d.email_attribute).unwrap_or(defaults.email_attribute),
        display_name_attribute: non_empty(d.display_name_attribute)
            .unwrap_or(defaults.display_name_attribute),
        uid_attribute: non_empty(d.uid_attribute).unwrap_or(defaults.uid_attribute),
        group_name_attribute: non_empty(d.group_name_attribute)
            .unwrap_or(defaults.group_name_attribute),
        disabled_attribute: non_empty(d.disabled_attribute),
        ad_user_account_control: d.ad_user_account_control.unwrap_or(true),
        ppolicy_locked: d.ppolicy_locked.unwrap_or(true),
        stable_id_attribute: match d.stable_id_attribute {
            Some(a) => non_empty(Some(a)),
            None => defaults.stable_id_attribute,
        },
    };
    let src = raw.source.unwrap_or_default();
    let placeholder = || SourceSettings::LdifText {
        name: String::new(),
        text: String::new(),
    };
    let kind = non_empty(src.kind.clone());
    // Keys that belong to the other kind are mistakes worth naming.
    let ldap_keys: [(&str, bool); 20] = [
        ("url", src.url.is_some()),
        ("bind_dn", src.bind_dn.is_some()),
        ("bind_password", src.bind_password.is_some()),
        ("bind_password_file", src.bind_password_file.is_some()),
        ("starttls", src.starttls.is_some()),
        ("ca_file", src.ca_file.is_some()),
        ("tls_verify", src.tls_verify.is_some()),
        ("connect_timeout_secs", src.connect_timeout_secs.is_some()),
        ("timeout_secs", src.timeout_secs.is_some()),
        ("read_timeout_secs", src.read_timeout_secs.is_some()),
        ("page_size", src.page_size.is_some()),
        ("users_base", src.users_base.is_some()),
        ("users_filter", src.users_filter.is_some()),
        ("users_scope", src.users_scope.is_some()),
        ("groups_base", src.groups_base.is_some()),
        ("groups_filter", src.groups_filter.is_some()),
        ("groups_scope", src.groups_scope.is_some()),
        ("disabled_filter", src.disabled_filter.is_some()),
        ("ad_range_retrieval", src.ad_range_retrieval.is_some()),
        ("ad_in_chain", src.ad_in_chain.is_some()),
    ];
    let source = match kind.as_deref() {
        Some("ldif") => {
            for (k, set) in ldap_keys {
                if set {
                    p.push(format!("source.{k} does not apply to kind \"ldif\""));
                }
            }
            match src.path {
                Some(path) => SourceSettings::LdifFile {
                    path: resolve(path),
                },
                None => {
                    p.push("source.path is required for kind \"ldif\"".into());
                    placeholder()
                }
            }
        }
        Some("ldap") => {
            if src.path.is_some() {
                p.push("source.path does not apply to kind \"ldap\" (it is for \"ldif\")".into());
            }
            match source::validate_ldap(src, &resolve, &mut p) {
                Some(l) => SourceSettings::Ldap(Box::new(l)),
                None => placeholder(),
            }
        }
        other => {
            p.push(match other {
                Some(k) => {
                    format!("source.kind: {k:?} is not supported (supported: \"ldif\", \"ldap\")")
                }
                None => "source.kind is required (\"ldif\" or \"ldap\")".into(),
            });
            placeholder()
        }
    };

    let mut groups = Vec::new();
    for (i, g) in raw.groups.into_iter().enumerate() {
        let key = format!("groups[{i}]");
        let Some(name) = non_empty(g.name) else {
            p.push(format!("{key}.name is required (the Bitbucket group name)"));
            continue;
        };
        let from: Vec<String> = g
            .from
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| non_empty(Some(s)))
            .collect();
        if from.is_empty() {
            p.push(format!("{key}.from: list the directory group(s) (cn or DN) that feed Bitbucket group {name:?}"));
        }
        let slug = GroupSlug::from_name(&name);
        if groups.iter().any(|x: &GroupRule| x.slug == slug) {
            p.push(format!(
                "{key}.name: Bitbucket group {name:?} is configured twice"
            ));
        }
        groups.push(GroupRule {
            name,
            slug,
            from,
            create: g.create.unwrap_or(true),
        });
    }

    let mut grants = Vec::new();
    for (i, g) in raw.grants.into_iter().enumerate() {
        let key = format!("grants[{i}]");
        let group = non_empty(g.group);
        if group.is_none() {
            p.push(format!("{key}.group is required"));
        }
        let permission = match g.permission.as_deref().map(Permission::parse) {
            Some(Some(perm)) => Some(perm),
            Some(None) => {
                p.push(format!(
                    "{key}.permission: {:?} is not one of read, write, admin",
                    g.permission.unwrap_or_default()
                ));
                None
            }
            None => {
                p.push(format!(
                    "{key}.permission is required (read, write or admin)"
                ));
                None
            }
        };
        if g.projects.is_empty() && g.repos.is_empty() && g.globs.is_empty() {
            p.push(format!(
                "{key}: select repositories with projects, repos or globs"
            ));
        }
        for glob in &g.globs {
            if glob.trim().is_empty() {
                p.push(format!("{key}.globs: empty pattern"));
            }
        }
        if let (Some(group), Some(permission)) = (group, permission) {
            grants.push(GrantRule {
                group: GroupSlug::from_name(&group),
                permission,
                select: RepoSelector {
                    projects: g.projects.iter().map(|k| ProjectKey::new(k)).collect(),
                    repos: g.repos.iter().map(|r| RepoSlug::new(r)).collect(),
                    globs: g.globs.iter().map(|s| s.trim().to_lowercase()).collect(),
                },
            });
        }
    }
    if groups.is_empty() && grants.is_empty() {
        p.push("nothing to manage: add [[groups]] and/or [[grants]]".into());
    }

    let interval_secs = raw.daemon.interval_secs.unwrap_or(300);
    if interval_secs < 10 {
        p.push("daemon.interval_secs must be at least 10".into());
    }

    if !p.is_empty() {
        return Err(ConfigError::Invalid {
            origin,
            problems: p,
        });
    }
    Ok(Config {
        origin,
        mode,
        bitbucket: BitbucketConfig {
            workspace,
            api_url,
            oauth_token_url,
            timeout: Duration::from_secs(timeout_secs),
            max_retries: bb.max_retries.unwrap_or(3),
            grant_writes,
            families,
        },
        credentials,
        source,
        directory: schema,
        groups,
        grants,
        safety: Safety {
            max_removals: raw.safety.max_removals.unwrap_or(50),
        },
        audit_path: raw.audit.path.map(resolve),
        interval: Duration::from_secs(interval_secs),
    })
}

/// A secret given inline (or by the environment) as `key`, or in the file `key_file` (container
/// and systemd credentials; one trailing newline dropped). `None` when neither is set; both set,
/// an unreadable or an empty file are problems naming the key.
pub(crate) fn read_secret(
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    p: &mut Vec<String>,
) -> Option<Secret> {
    match (non_empty(inline), file) {
        (Some(_), Some(_)) => {
            p.push(format!("{key} and {key}_file are both set: keep one"));
            None
        }
        (Some(v), None) => Some(Secret::new(v)),
        (None, Some(f)) => {
            let f = resolve(f);
            match std::fs::read_to_string(&f) {
                Ok(s) if !s.trim().is_empty() => {
                    Some(Secret::new(s.trim_end_matches(['\r', '\n']).to_owned()))
                }
                Ok(_) => {
                    p.push(format!("{key}_file: {} is empty", f.display()));
                    None
                }
                Err(e) => {
                    p.push(format!("{key}_file: cannot read {}: {e}", f.display()));
                    None
                }
            }
        }
        (None, None) => None,
    }
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
}
