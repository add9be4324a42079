//! Seed: the JSON description of one emulated workspace, its people, repositories, groups,
//! grants and credentials. The same types are used to report the current state
//! ([`crate::Emulator::state`]).

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Repository-level permissions (2.0 permissions-config, 1.0 group-privileges).
pub const REPO_PERMISSIONS: &[&str] = &["read", "write", "admin"];
/// Project-level permissions (2.0 project permissions-config).
pub const PROJECT_PERMISSIONS: &[&str] = &["read", "write", "create-repo", "admin"];

/// The whole emulated world (one workspace).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub workspace: SeedWorkspace,
    /// Every workspace member (the owner and admins included).
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    #[serde(default)]
    pub repositories: Vec<SeedRepo>,
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
    /// Repository-level group grants (one store behind 1.0 group-privileges and 2.0 permissions-config).
    #[serde(default)]
    pub group_grants: Vec<SeedGroupGrant>,
    /// Repository-level explicit user grants.
    #[serde(default)]
    pub user_grants: Vec<SeedUserGrant>,
    #[serde(default)]
    pub project_group_grants: Vec<SeedProjectGroupGrant>,
    #[serde(default)]
    pub project_user_grants: Vec<SeedProjectUserGrant>,
    #[serde(default)]
    pub credentials: Vec<SeedCredential>,
    /// Requests per credential per rolling hour; 0 means the default of 1000.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_hour: u32,
    /// Sheet section 6 (?): when true, 1.0 group writes refuse API tokens (403) and need an
    /// OAuth token with `account:write`.
    #[serde(default)]
    pub group_writes_require_oauth: bool,
    /// Page length used by 2.0 collections when the request has no `pagelen` (1..=100).
    #[serde(default = "default_pagelen")]
    pub default_pagelen: u32,
    /// Plan user limit: a grant that would give access to one more person once this many people
    /// have access answers 402. `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_limit: Option<u32>,
    /// Seed of the generator deciding whether an injected fault with a `probability` fires
    /// (`None`: 0). The same seed and the same requests in the same order give the same faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_seed: Option<u64>,
    /// The Atlassian organisation administering the workspace (the Admin API under `/admin`,
    /// sheet section 5). `None`: every `/admin` route answers 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<SeedOrganisation>,
    /// 1.0 group invitations (sheet section 8): an email invited into a workspace group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invitations: Vec<SeedInvitation>,
    /// 1.0 repository invitations (`POST /1.0/invitations/{ws}/{repo}/{email}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_invitations: Vec<SeedRepoInvitation>,
}

/// The organisation and its one directory (Admin API, sheet section 5).
///
/// The directory's users are the seed's `users` (less `removed`). Its groups are the
/// workspace's `groups` on an organisation-managed workspace (one store), else `groups` here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOrganisation {
    /// The `{orgId}` of every Admin API path.
    pub id: String,
    /// Display name; defaults to the workspace name.
    #[serde(default)]
    pub name: String,
    /// The one directory's id; defaults to `dir-` + `id`.
    #[serde(default)]
    pub directory_id: String,
    /// account_ids suspended in the directory (they keep their groups).
    #[serde(default)]
    pub suspended: Vec<String>,
    /// account_ids removed from the directory on a classic workspace (still workspace
    /// members there; on an organisation-managed workspace a removed user leaves `users`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The directory's own groups on a classic workspace (must be empty on an
    /// organisation-managed one, whose directory groups are the workspace's `groups`).
    /// Only `name`, `id`, `description`, `members` and `idp_synced` mean anything here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<SeedGroup>,
}

/// A 1.0 group invitation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedInvitation {
    pub email: String,
    /// Workspace group slug.
    pub group: String,
}

/// A 1.0 repository invitation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRepoInvitation {
    pub email: String,
    /// Repository slug.
    pub repo: String,
    /// `read` | `write` | `admin`.
    pub permission: String,
}

fn default_rate_limit() -> u32 {
    1000
}

fn default_pagelen() -> u32 {
    10
}

impl Default for Seed {
    fn default() -> Self {
        Seed {
            workspace: SeedWorkspace::default(),
            users: Vec::new(),
            projects: Vec::new(),
            repositories: Vec::new(),
            groups: Vec::new(),
            group_grants: Vec::new(),
            user_grants: Vec::new(),
            project_group_grants: Vec::new(),
            project_user_grants: Vec::new(),
            credentials: Vec::new(),
            rate_limit_per_hour: default_rate_limit(),
            group_writes_require_oauth: false,
            default_pagelen: default_pagelen(),
            user_limit: None,
            fault_seed: None,
            organisation: None,
            invitations: Vec::new(),
            repo_invitations: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedWorkspace {
    pub slug: String,
    /// Braced UUID; generated from the slug when empty.
    #[serde(default)]
    pub uuid: String,
    /// Display name; the slug when empty.
    #[serde(default)]
    pub name: String,
    /// Organisation-managed workspace: 1.0 groups / group-privileges are read-only (writes 405).
    #[serde(default)]
    pub organisation_managed: bool,
    /// account_id of the workspace owner (a workspace admin).
    pub owner: String,
    /// account_ids of further workspace admins.
    #[serde(default)]
    pub admins: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub account_id: String,
    /// Braced UUID; generated from the account_id when empty.
    #[serde(default)]
    pub uuid: String,
    /// Defaults to the nickname, else the account_id.
    #[serde(default)]
    pub display_name: String,
    /// Defaults to the display name lower-cased without spaces.
    #[serde(default)]
    pub nickname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    pub key: String,
    /// Defaults to the key.
    #[serde(default)]
    pub name: String,
    /// Braced UUID; generated when empty.
    #[serde(default)]
    pub uuid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRepo {
    pub slug: String,
    /// Defaults to the slug.
    #[serde(default)]
    pub name: String,
    /// Project key (every repository is in a project).
    pub project: String,
    /// Braced UUID; generated when empty.
    #[serde(default)]
    pub uuid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroup {
    pub name: String,
    /// Defaults to [`group_slug_for`] of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// 1.0 group default permission: `read`, `write`, `admin` or null.
    #[serde(default)]
    pub permission: Option<String>,
    #[serde(default)]
    pub auto_add: bool,
    #[serde(default)]
    pub email_forwarding_disabled: bool,
    /// account_ids.
    #[serde(default)]
    pub members: Vec<String>,
    /// Admin API group id (directory groups only); defaults to [`admin_group_id_for`] of
    /// the slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Admin API group description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Synced from an identity provider: Admin API membership edits and delete answer 403.
    #[serde(default, skip_serializing_if = "is_false")]
    pub idp_synced: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The default Admin API id of a directory group: a UUID derived from its slug, no braces.
pub fn admin_group_id_for(slug: &str) -> String {
    uuid_for("admin-group", slug)
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_string()
}

impl SeedGroup {
    /// The slug, explicit or derived from the name.
    pub fn slug(&self) -> String {
        match &self.slug {
            Some(s) => s.clone(),
            None => group_slug_for(&self.name),
        }
    }
}

/// The slug Bitbucket generates for a group name: lower-cased, spaces turned into dashes.
pub fn group_slug_for(name: &str) -> String {
    name.trim().to_lowercase().replace(' ', "-")
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroupGrant {
    /// Repository slug.
    pub repo: String,
    /// Group slug.
    pub group: String,
    /// `read` | `write` | `admin`.
    pub permission: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUserGrant {
    pub repo: String,
    pub account_id: String,
    /// `read` | `write` | `admin`.
    pub permission: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProjectGroupGrant {
    /// Project key.
    pub project: String,
    /// Group slug.
    pub group: String,
    /// `read` | `write` | `create-repo` | `admin`.
    pub permission: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProjectUserGrant {
    pub project: String,
    pub account_id: String,
    /// `read` | `write` | `create-repo` | `admin`.
    pub permission: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Atlassian API token with scopes, sent as HTTP Basic `email:token`.
    #[default]
    ApiToken,
    /// Workspace/project/repository access token, sent as `Authorization: Bearer`.
    AccessToken,
    /// OAuth consumer (client credentials grant at `/site/oauth2/access_token`).
    OauthConsumer,
    /// Atlassian organisation (Admin API) key, sent as `Authorization: Bearer <token>`;
    /// accepted only by `/admin` routes (Bitbucket routes answer 401).
    AdminApiKey,
}

/// One credential. Which fields are required depends on `kind`:
/// - `api_token`: `email`, `token`, `account_id`, `scopes` (Atlassian granular scopes);
/// - `access_token`: `token`, `scopes` (OAuth-style names, e.g. `repository`, `account`);
/// - `oauth_consumer`: `key`, `secret`, `account_id`, `scopes` (OAuth names), `token_ttl_secs`;
/// - `admin_api_key`: `token` (an organisation must be seeded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCredential {
    pub id: String,
    pub kind: CredentialKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// OAuth access token lifetime (default 7200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
}

impl SeedCredential {
    /// A copy with every secret (token, secret) replaced by `***`.
    pub fn masked(&self) -> SeedCredential {
        let mut c = self.clone();
        if c.token.is_some() {
            c.token = Some("***".into());
        }
        if c.secret.is_some() {
            c.secret = Some("***".into());
        }
        c
    }
}

/// Deterministic braced UUID derived from a string (FNV-1a, version-4 layout).
pub fn uuid_for(kind: &str, value: &str) -> String {
    fn fnv(seed: u64, data: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    let data = format!("{kind}:{value}");
    let a = fnv(0x1234_5678, data.as_bytes());
    let b = fnv(0x9abc_def0_1357_9bdf, data.as_bytes());
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{{{}-{}-4{}-8{}-{}}}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

impl Seed {
    /// Checks that every reference resolves and every value is one the service accepts.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors: Vec<String> = Vec::new();
        let ws = &self.workspace;
        if ws.slug.is_empty() {
            errors.push("workspace.slug is empty".into());
        }
        if ws.slug.starts_with('{') {
            errors.push("workspace.slug must be a slug, not a UUID".into());
        }
        let mut accounts = HashSet::new();
        let mut uuids = HashSet::new();
        for u in &self.users {
            if u.account_id.is_empty() {
                errors.push("a user has an empty account_id".into());
            }
            if !accounts.insert(u.account_id.as_str()) {
                errors.push(format!("duplicate user account_id {}", u.account_id));
            }
            if !u.uuid.is_empty() {
                if !(u.uuid.starts_with('{') && u.uuid.ends_with('}')) {
                    errors.push(format!("user {}: uuid must be braced", u.account_id));
                }
                if !uuids.insert(u.uuid.to_lowercase()) {
                    errors.push(format!("duplicate user uuid {}", u.uuid));
                }
            }
        }
        if !accounts.contains(ws.owner.as_str()) {
            errors.push(format!(
                "workspace.owner {} is not a user of the workspace",
                ws.owner
            ));
        }
        for a in &ws.admins {
            if !accounts.contains(a.as_str()) {
                errors.push(format!(
                    "workspace admin {a} is not a user of the workspace"
                ));
            }
        }
        let mut projects = HashSet::new();
        for p in &self.projects {
            if p.key.is_empty() {
                errors.push("a project has an empty key".into());
            }
            if !projects.insert(p.key.as_str()) {
                errors.push(format!("duplicate project key {}", p.key));
            }
        }
        let mut repos = HashSet::new();
        for r in &self.repositories {
            if r.slug.is_empty() {
                errors.push("a repository has an empty slug".into());
            }
            if !repos.insert(r.slug.as_str()) {
                errors.push(format!("duplicate repository slug {}", r.slug));
            }
            if !projects.contains(r.project.as_str()) {
                errors.push(format!(
                    "repository {}: project {} does not exist",
                    r.slug, r.project
                ));
            }
        }
        let mut groups: HashSet<String> = HashSet::new();
        let mut group_names: HashSet<String> = HashSet::new();
        for g in &self.groups {
            let slug = g.slug();
            if g.name.trim().is_empty() || slug.is_empty() {
                errors.push("a group has an empty name or slug".into());
            }
            if !groups.insert(slug.clone()) {
                errors.push(format!("duplicate group slug {slug}"));
            }
            if !group_names.insert(g.name.to_lowercase()) {
                errors.push(format!("duplicate group name {}", g.name));
            }
            if let Some(p) = &g.permission {
                if !REPO_PERMISSIONS.contains(&p.as_str()) {
                    errors.push(format!("group {slug}: invalid permission {p}"));
                }
            }
            let mut seen = HashSet::new();
            for m in &g.members {
                if !accounts.contains(m.as_str()) {
                    errors.push(format!(
                        "group {slug}: member {m} is not a user of the workspace"
                    ));
                }
                if !seen.insert(m.as_str()) {
                    errors.push(format!("group {slug}: member {m} listed twice"));
                }
            }
        }
        let mut seen = HashSet::new();
        for g in &self.group_grants {
            if !repos.contains(g.repo.as_str()) {
                errors.push(format!("group grant: repository {} does not exist", g.repo));
            }
            if !groups.contains(&g.group) {
                errors.push(format!("group grant: group {} does not exist", g.group));
            }
            if !REPO_PERMISSIONS.contains(&g.permission.as_str()) {
                errors.push(format!("group grant: invalid permission {}", g.permission));
            }
            if !seen.insert((g.repo.as_str(), g.group.as_str())) {
                errors.push(format!("group grant {}/{} listed twice", g.repo, g.group));
            }
        }
        let mut seen = HashSet::new();
        for g in &self.user_grants {
            if !repos.contains(g.repo.as_str()) {
                errors.push(format!("user grant: repository {} does not exist", g.repo));
            }
            if !accounts.contains(g.account_id.as_str()) {
                errors.push(format!("user grant: user {} does not exist", g.account_id));
            }
            if g.account_id == ws.owner {
                errors.push("user grant: the workspace owner cannot be granted".into());
            }
            if !REPO_PERMISSIONS.contains(&g.permission.as_str()) {
                errors.push(format!("user grant: invalid permission {}", g.permission));
            }
            if !seen.insert((g.repo.as_str(), g.account_id.as_str())) {
                errors.push(format!(
                    "user grant {}/{} listed twice",
                    g.repo, g.account_id
                ));
            }
        }
        let mut seen = HashSet::new();
        for g in &self.project_group_grants {
            if !projects.contains(g.project.as_str()) {
                errors.push(format!(
                    "project group grant: project {} does not exist",
                    g.project
                ));
            }
            if !groups.contains(&g.group) {
                errors.push(format!(
                    "project group grant: group {} does not exist",
                    g.group
                ));
            }
            if !PROJECT_PERMISSIONS.contains(&g.permission.as_str()) {
                errors.push(format!(
                    "project group grant: invalid permission {}",
                    g.permission
                ));
            }
            if !seen.insert((g.project.as_str(), g.group.as_str())) {
                errors.push(format!(
                    "project group grant {}/{} listed twice",
                    g.project, g.group
                ));
            }
        }
        let mut seen = HashSet::new();
        for g in &self.project_user_grants {
            if !projects.contains(g.project.as_str()) {
                errors.push(format!(
                    "project user grant: project {} does not exist",
                    g.project
                ));
            }
            if !accounts.contains(g.account_id.as_str()) {
                errors.push(format!(
                    "project user grant: user {} does not exist",
                    g.account_id
                ));
            }
            if g.account_id == ws.owner {
                errors.push("project user grant: the workspace owner cannot be granted".into());
            }
            if !PROJECT_PERMISSIONS.contains(&g.permission.as_str()) {
                errors.push(format!(
                    "project user grant: invalid permission {}",
                    g.permission
                ));
            }
            if !seen.insert((g.project.as_str(), g.account_id.as_str())) {
                errors.push(format!(
                    "project user grant {}/{} listed twice",
                    g.project, g.account_id
                ));
            }
        }
        let mut ids = HashSet::new();
        let mut secrets = HashSet::new();
        for c in &self.credentials {
            if c.id.is_empty() {
                errors.push("a credential has an empty id".into());
            }
            if !ids.insert(c.id.as_str()) {
                errors.push(format!("duplicate credential id {}", c.id));
            }
            let need = |field: &Option<String>, name: &str, errors: &mut Vec<String>| {
                if field.as_deref().map(str::is_empty).unwrap_or(true) {
                    errors.push(format!("credential {}: {name} is required", c.id));
                }
            };
            match c.kind {
                CredentialKind::ApiToken => {
                    need(&c.email, "email", &mut errors);
                    need(&c.token, "token", &mut errors);
                    need(&c.account_id, "account_id", &mut errors);
                }
                CredentialKind::AccessToken => {
                    need(&c.token, "token", &mut errors);
                }
                CredentialKind::AdminApiKey => {
                    need(&c.token, "token", &mut errors);
                }
                CredentialKind::OauthConsumer => {
                    need(&c.key, "key", &mut errors);
                    need(&c.secret, "secret", &mut errors);
                    need(&c.account_id, "account_id", &mut errors);
                    if c.token_ttl_secs == Some(0) {
                        errors.push(format!("credential {}: token_ttl_secs must be > 0", c.id));
                    }
                }
            }
            if let Some(a) = &c.account_id {
                if !accounts.contains(a.as_str()) {
                    errors.push(format!(
                        "credential {}: account_id {a} is not a user of the workspace",
                        c.id
                    ));
                }
            }
            if matches!(
                c.kind,
                CredentialKind::AccessToken | CredentialKind::AdminApiKey
            ) {
                if let Some(t) = &c.token {
                    if !secrets.insert(t.as_str()) {
                        errors.push(format!("credential {}: token used twice", c.id));
                    }
                }
            }
        }
        self.validate_organisation(&accounts, &groups, &repos, &mut errors);
        if !(1..=100).contains(&self.default_pagelen) {
            errors.push(format!(
                "default_pagelen {} is outside 1..=100",
                self.default_pagelen
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The organisation, directory groups and invitations part of [`Seed::validate`].
    fn validate_organisation(
        &self,
        accounts: &HashSet<&str>,
        groups: &HashSet<String>,
        repos: &HashSet<&str>,
        errors: &mut Vec<String>,
    ) {
        if let Some(o) = &self.organisation {
            if o.id.trim().is_empty() || o.id.contains('/') {
                errors.push("organisation.id is empty or has a '/'".into());
            }
            if o.directory_id == "-" || o.directory_id.contains('/') {
                errors.push("organisation.directory_id cannot be '-' or have a '/'".into());
            }
            let mut seen = HashSet::new();
            for a in &o.suspended {
                if !accounts.contains(a.as_str()) || o.removed.contains(a) {
                    errors.push(format!(
                        "organisation.suspended: {a} is not a user of the directory"
                    ));
                }
                if !seen.insert(a.as_str()) {
                    errors.push(format!("organisation.suspended: {a} listed twice"));
                }
            }
            let mut seen = HashSet::new();
            for a in &o.removed {
                if !accounts.contains(a.as_str()) {
                    errors.push(format!("organisation.removed: {a} is not a user"));
                }
                if !seen.insert(a.as_str()) {
                    errors.push(format!("organisation.removed: {a} listed twice"));
                }
            }
            if self.workspace.organisation_managed && !o.removed.is_empty() {
                errors.push(
                    "organisation.removed is only for classic workspaces (remove the user from users)"
                        .into(),
                );
            }
            if self.workspace.organisation_managed && !o.groups.is_empty() {
                errors.push(
                    "organisation.groups is only for classic workspaces: on an organisation-managed one the directory's groups are the workspace's groups"
                        .into(),
                );
            }
            let dir_groups: &[SeedGroup] = if self.workspace.organisation_managed {
                &self.groups
            } else {
                &o.groups
            };
            let mut ids = HashSet::new();
            let mut names = HashSet::new();
            for g in dir_groups {
                let id =
                    g.id.clone()
                        .unwrap_or_else(|| admin_group_id_for(&g.slug()));
                if id.is_empty() || id.contains('/') {
                    errors.push(format!("directory group {}: invalid id", g.name));
                }
                if !ids.insert(id.clone()) {
                    errors.push(format!("duplicate directory group id {id}"));
                }
                if !self.workspace.organisation_managed {
                    if g.name.trim().is_empty() {
                        errors.push("a directory group has an empty name".into());
                    }
                    if !names.insert(g.name.to_lowercase()) {
                        errors.push(format!("duplicate directory group name {}", g.name));
                    }
                    let mut seen = HashSet::new();
                    for m in &g.members {
                        if !accounts.contains(m.as_str()) || o.removed.contains(m) {
                            errors.push(format!(
                                "directory group {}: member {m} is not a user of the directory",
                                g.name
                            ));
                        }
                        if !seen.insert(m.as_str()) {
                            errors.push(format!(
                                "directory group {}: member {m} listed twice",
                                g.name
                            ));
                        }
                    }
                }
            }
        } else {
            for g in &self.groups {
                if g.id.is_some() || g.idp_synced {
                    errors.push(format!(
                        "group {}: id and idp_synced need an organisation",
                        g.name
                    ));
                }
            }
        }
        if !self.workspace.organisation_managed || self.organisation.is_none() {
            for g in &self.groups {
                if self.organisation.is_some() && (g.id.is_some() || g.idp_synced) {
                    errors.push(format!(
                        "group {}: id and idp_synced are for directory groups (organisation.groups on a classic workspace)",
                        g.name
                    ));
                }
            }
        }
        let mut seen = HashSet::new();
        for i in &self.invitations {
            if !i.email.contains('@') {
                errors.push(format!("invitation: invalid email {}", i.email));
            }
            if !groups.contains(&i.group) {
                errors.push(format!("invitation: group {} does not exist", i.group));
            }
            if !seen.insert((i.email.to_lowercase(), i.group.clone())) {
                errors.push(format!("invitation {}/{} listed twice", i.email, i.group));
            }
        }
        let mut seen = HashSet::new();
        for i in &self.repo_invitations {
            if !i.email.contains('@') {
                errors.push(format!("repository invitation: invalid email {}", i.email));
            }
            if !repos.contains(i.repo.as_str()) {
                errors.push(format!(
                    "repository invitation: repository {} does not exist",
                    i.repo
                ));
            }
            if !REPO_PERMISSIONS.contains(&i.permission.as_str()) {
                errors.push(format!(
                    "repository invitation: invalid permission {}",
                    i.permission
                ));
            }
            if !seen.insert((i.email.to_lowercase(), i.repo.clone())) {
                errors.push(format!(
                    "repository invitation {}/{} listed twice",
                    i.email, i.repo
                ));
            }
        }
    }

    /// A copy with every optional value filled in (uuids, names, nicknames, group slugs,
    /// rate limit) the way the emulator serves it.
    pub fn normalized(&self) -> Seed {
        let mut s = self.clone();
        if s.workspace.uuid.is_empty() {
            s.workspace.uuid = uuid_for("workspace", &s.workspace.slug);
        }
        if s.workspace.name.is_empty() {
            s.workspace.name = s.workspace.slug.clone();
        }
        for u in &mut s.users {
            if u.uuid.is_empty() {
                u.uuid = uuid_for("user", &u.account_id);
            }
            if u.display_name.is_empty() {
                u.display_name = if u.nickname.is_empty() {
                    u.account_id.clone()
                } else {
                    u.nickname.clone()
                };
            }
            if u.nickname.is_empty() {
                u.nickname = u.display_name.to_lowercase().replace(' ', "");
            }
        }
        for p in &mut s.projects {
            if p.name.is_empty() {
                p.name = p.key.clone();
            }
            if p.uuid.is_empty() {
                p.uuid = uuid_for("project", &p.key);
            }
        }
        for r in &mut s.repositories {
            if r.name.is_empty() {
                r.name = r.slug.clone();
            }
            if r.uuid.is_empty() {
                r.uuid = uuid_for("repository", &r.slug);
            }
        }
        let directory_groups = s.workspace.organisation_managed && s.organisation.is_some();
        for g in &mut s.groups {
            if g.slug.is_none() {
                g.slug = Some(group_slug_for(&g.name));
            }
            if directory_groups && g.id.is_none() {
                g.id = Some(admin_group_id_for(&g.slug()));
            }
        }
        let ws_name = s.workspace.name.clone();
        if let Some(o) = &mut s.organisation {
            if o.name.is_empty() {
                o.name = ws_name;
            }
            if o.directory_id.is_empty() {
                o.directory_id = format!("dir-{}", o.id);
            }
            for g in &mut o.groups {
                if g.slug.is_none() {
                    g.slug = Some(group_slug_for(&g.name));
                }
                if g.id.is_none() {
                    g.id = Some(admin_group_id_for(&g.slug()));
                }
            }
        }
        if s.rate_limit_per_hour == 0 {
            s.rate_limit_per_hour = default_rate_limit();
        }
        s
    }
}

/// Why [`load_seed`] failed; always names the file.
#[derive(Debug)]
pub enum SeedError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    Invalid {
        path: PathBuf,
        message: String,
    },
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedError::Io { path, source } => {
                write!(f, "cannot read seed file {}: {source}", path.display())
            }
            SeedError::Parse { path, source } => {
                write!(f, "invalid seed JSON in {}: {source}", path.display())
            }
            SeedError::Invalid { path, message } => {
                write!(f, "inconsistent seed {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for SeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SeedError::Io { source, .. } => Some(source),
            SeedError::Parse { source, .. } => Some(source),
            SeedError::Invalid { .. } => None,
        }
    }
}

/// Reads, parses and validates a seed JSON file.
pub fn load_seed(path: &Path) -> Result<Seed, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let seed: Seed = serde_json::from_str(&text).map_err(|source| SeedError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    seed.validate().map_err(|message| SeedError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(seed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn example_seed_is_valid() {
        let s: Seed = serde_json::from_str(include_str!("../examples/seed.json")).unwrap();
        s.validate().unwrap();
        assert_eq!(s.projects.len(), 2);
        assert_eq!(s.repositories.len(), 5);
        assert_eq!(s.groups.len(), 3);
        assert_eq!(s.users.len(), 4);
        assert_eq!(s.credentials.len(), 3);
    }

    #[test]
    fn load_seed_names_the_file() {
        let e = load_seed(Path::new("/nonexistent/seed.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/seed.json"));
    }

    #[test]
    fn slug_generation() {
        assert_eq!(group_slug_for("Dev Ops Team"), "dev-ops-team");
    }

    #[test]
    fn uuid_is_braced_and_stable() {
        let a = uuid_for("user", "x");
        assert_eq!(a, uuid_for("user", "x"));
        assert!(a.starts_with('{') && a.ends_with('}'));
        assert_eq!(a.len(), 38);
        assert_ne!(a, uuid_for("user", "y"));
    }

    #[test]
    fn unknown_fields_rejected() {
        let r: Result<Seed, _> =
            serde_json::from_str(r#"{"workspace":{"slug":"a","owner":"x"},"bogus":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn validate_catches_dangling_refs() {
        let s: Seed = serde_json::from_str(
            r#"{"workspace":{"slug":"a","owner":"u1"},
                "users":[{"account_id":"u1"}],
                "groups":[{"name":"Devs","members":["nobody"]}],
                "repositories":[{"slug":"r","project":"P"}]}"#,
        )
        .unwrap();
        let e = s.validate().unwrap_err();
        assert!(e.contains("nobody"), "{e}");
        assert!(e.contains("project P"), "{e}");
    }
}
