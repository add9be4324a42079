//! `bbsync check`: proves, family by family, what the configured credentials can do.
//!
//! Read families are proven with one cheap real call each (`pagelen=1` where paged). Write
//! families are judged read-only from what is known without writing: the API sheet's rules for
//! the credential kind and the scopes Bitbucket reports holding (`x-oauth-scopes`, or the OAuth
//! token answer). With `--probe-writes` they are proven with idempotent no-op writes: re-adding
//! an existing member, re-PUTting an existing grant with its current permission. A 1.0 write
//! answering 405 reveals an organisation-managed workspace.

use crate::bitbucket::detect::{self, Choice, Detected};
use crate::bitbucket::dto::{V1Group, V1GroupPrivilege};
use crate::bitbucket::{
    ApiError, ApiFamily, Clients, CredentialKind, Principal, PrincipalKind, Target, Written,
};
use crate::config::{Config, GrantReader, GrantWrites, MembershipBackendKind};
use crate::model::{BbUuid, GroupSlug, Permission, RepoSlug};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    /// Proven by a real call.
    Ok { detail: String },
    /// A write that nothing known rules out, not proven (no `--probe-writes`, or nothing to re-write).
    Likely { detail: String },
    /// Refused, by a real answer or by the sheet's rules for the credential kind.
    Refused {
        reason: String,
        status: Option<u16>,
        required: Vec<String>,
        granted: Vec<String>,
    },
    /// Could not be tried (e.g. no repository to probe).
    NotProbed { detail: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub family: ApiFamily,
    pub credential: String,
    pub kind: CredentialKind,
    /// The current rules need this family.
    pub needed: bool,
    pub verdict: Verdict,
    /// For a refusal: what bbsync cannot do because of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consequence: Option<String>,
    /// For a refusal: what to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What one call per credential says about it, before any family is tried.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Authenticated, and sees the workspace (`admin` when Bitbucket says).
    Ok { admin: Option<bool> },
    /// 401, or the OAuth token request failed.
    Rejected { reason: String },
    /// Authenticated, but the configured workspace is not among the caller's.
    WrongWorkspace { sees: Vec<String> },
    /// The call answered something else; the families will tell.
    Unknown { reason: String },
}

fn is_rejection(e: &ApiError) -> bool {
    e.status() == Some(401) || matches!(e, ApiError::OAuth { .. })
}

/// One cheap call that authenticates a credential and checks it sees the workspace. Also
/// teaches the client the scopes it holds (`x-oauth-scopes`, OAuth token answer).
pub async fn introduce(
    client: &crate::bitbucket::Client,
    kind: CredentialKind,
) -> CredentialStatus {
    let workspace = client.workspace().to_owned();
    if kind == CredentialKind::AccessToken {
        // An access token is not a user: ask for the workspace itself.
        return match client.workspace_exists().await {
            Ok(true) => CredentialStatus::Ok { admin: None },
            Ok(false) => CredentialStatus::WrongWorkspace { sees: Vec::new() },
            Err(e) if is_rejection(&e) => CredentialStatus::Rejected {
                reason: e.to_string(),
            },
            Err(e) => CredentialStatus::Unknown {
                reason: e.to_string(),
            },
        };
    }
    match client.user_workspaces().await {
        Ok(list) => match list.iter().find(|w| w.workspace.slug == workspace) {
            Some(w) => CredentialStatus::Ok {
                admin: w.administrator,
            },
            None => CredentialStatus::WrongWorkspace {
                sees: list.into_iter().map(|w| w.workspace.slug).collect(),
            },
        },
        Err(e) if is_rejection(&e) => CredentialStatus::Rejected {
            reason: e.to_string(),
        },
        Err(e) => CredentialStatus::Unknown {
            reason: e.to_string(),
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceKind {
    Classic,
    OrganisationManaged,
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub workspace: String,
    pub workspace_kind: WorkspaceKind,
    /// What told the kind (read-only signals, or a write probe).
    pub workspace_evidence: String,
    /// The backend a run would write memberships with, and why.
    pub membership_backend: Choice,
    pub probe_writes: bool,
    /// What the first call of each credential said.
    pub credentials: BTreeMap<String, CredentialStatus>,
    pub probes: Vec<Probe>,
}

impl CheckReport {
    /// Every family the rules need is proven or, for writes, not ruled out.
    pub fn ok(&self) -> bool {
        self.membership_backend.blocked.is_none()
            && self
                .probes
                .iter()
                .filter(|p| p.needed)
                .all(|p| matches!(p.verdict, Verdict::Ok { .. } | Verdict::Likely { .. }))
    }

    pub fn probe(&self, f: ApiFamily) -> Option<&Probe> {
        self.probes.iter().find(|p| p.family == f)
    }
}

/// The families the configured rules need.
pub fn needed_families(cfg: &Config) -> BTreeSet<ApiFamily> {
    let mut n = BTreeSet::new();
    if !cfg.groups.is_empty() || !cfg.grants.is_empty() {
        n.insert(ApiFamily::GroupsRead);
    }
    if !cfg.groups.is_empty() {
        n.extend([ApiFamily::GroupsWrite, ApiFamily::MembersRead]);
    }
    if !cfg.grants.is_empty() {
        n.insert(ApiFamily::RepositoriesRead);
        // `auto` reads through 1.0 first; `check` lets a refused 1.0 listing pass when 2.0
        // reads answer (see `check`), as the runs would.
        n.insert(match cfg.bitbucket.grant_reader {
            GrantReader::Auto | GrantReader::V1GroupPrivileges => ApiFamily::GroupPrivilegesRead,
            GrantReader::V2PermissionsConfig => ApiFamily::PermissionsRead,
        });
        n.insert(match cfg.bitbucket.grant_writes {
            GrantWrites::PermissionsConfig => ApiFamily::PermissionsWrite,
            GrantWrites::GroupPrivileges => ApiFamily::GroupPrivilegesWrite,
        });
    }
    n
}

fn refused(e: &ApiError) -> Verdict {
    let (required, granted) = match e {
        ApiError::Status {
            required, granted, ..
        } => (required.clone(), granted.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    Verdict::Refused {
        reason: e.to_string(),
        status: e.status(),
        required,
        granted,
    }
}

fn read_verdict<T>(r: &Result<T, ApiError>, detail: impl FnOnce(&T) -> String) -> Verdict {
    match r {
        Ok(v) => Verdict::Ok { detail: detail(v) },
        Err(e) => refused(e),
    }
}

/// Runs every probe. Writes only with `probe_writes`, and then only no-op re-writes.
pub async fn check(cfg: &Config, clients: &Clients, probe_writes: bool) -> CheckReport {
    let needed = needed_families(cfg);
    let workspace = cfg.bitbucket.workspace.clone();

    // One call per credential first: a credential that is rejected or does not see the
    // workspace fails every family it serves, writes included, without further calls.
    let mut statuses: BTreeMap<String, CredentialStatus> = BTreeMap::new();
    for f in ApiFamily::ALL {
        let name = clients.credential(f);
        if !statuses.contains_key(name) {
            let st = introduce(clients.get(f), clients.kind(f)).await;
            statuses.insert(name.to_owned(), st);
        }
    }
    let blocked_by_status = |f: ApiFamily| -> Option<Verdict> {
        let name = clients.credential(f);
        match statuses.get(name)? {
            CredentialStatus::Rejected { reason } => Some(Verdict::Refused {
                reason: reason.clone(),
                status: Some(401),
                required: Vec::new(),
                granted: Vec::new(),
            }),
            CredentialStatus::WrongWorkspace { sees } => Some(Verdict::Refused {
                reason: format!(
                    "credential {name:?} does not see workspace {workspace:?}{}",
                    if sees.is_empty() {
                        String::new()
                    } else {
                        format!(" (it sees: {})", sees.join(", "))
                    }
                ),
                status: Some(404),
                required: Vec::new(),
                granted: Vec::new(),
            }),
            CredentialStatus::Ok { admin: Some(false) } if f.admin_only() && f.is_write() => Some(Verdict::Refused {
                reason: format!("the user behind credential {name:?} is not an administrator of workspace {workspace:?}"),
                status: Some(403),
                required: Vec::new(),
                granted: Vec::new(),
            }),
            _ => None,
        }
    };

    let mut verdicts: BTreeMap<ApiFamily, Verdict> = BTreeMap::new();
    for f in ApiFamily::ALL {
        if let Some(v) = blocked_by_status(f) {
            verdicts.insert(f, v);
        }
    }
    let skip = |f: ApiFamily, v: &BTreeMap<ApiFamily, Verdict>| v.contains_key(&f);

    let groups = if skip(ApiFamily::GroupsRead, &verdicts) {
        None
    } else {
        let r = clients.get(ApiFamily::GroupsRead).list_groups().await;
        verdicts.insert(
            ApiFamily::GroupsRead,
            read_verdict(&r, |g| format!("{} groups", g.len())),
        );
        r.ok()
    };
    if !skip(ApiFamily::MembersRead, &verdicts) {
        let r = clients
            .get(ApiFamily::MembersRead)
            .members_first_page()
            .await;
        verdicts.insert(
            ApiFamily::MembersRead,
            read_verdict(&r, |_| "members listed".into()),
        );
    }
    let privileges = if skip(ApiFamily::GroupPrivilegesRead, &verdicts) {
        None
    } else {
        let r = clients
            .get(ApiFamily::GroupPrivilegesRead)
            .list_group_privileges()
            .await;
        verdicts.insert(
            ApiFamily::GroupPrivilegesRead,
            read_verdict(&r, |p| format!("{} group grants", p.len())),
        );
        r.ok()
    };
    let repos = if skip(ApiFamily::RepositoriesRead, &verdicts) {
        None
    } else {
        let r = clients
            .get(ApiFamily::RepositoriesRead)
            .repositories_first_page()
            .await;
        verdicts.insert(
            ApiFamily::RepositoriesRead,
            read_verdict(&r, |_| "repositories listed".into()),
        );
        r.ok()
    };

    // An existing grant of one of this workspace's groups: the no-op re-write target, and a
    // repository to read grants of.
    let existing_grant: Option<&V1GroupPrivilege> = privileges.as_deref().and_then(|p| {
        p.iter().find(|g| {
            g.group.owner.as_ref().is_none_or(|o| {
                o.nickname
                    .as_deref()
                    .or(o.username.as_deref())
                    .is_none_or(|n| n == workspace)
            })
        })
    });
    let repo: Option<RepoSlug> = existing_grant
        .map(|g| RepoSlug::new(g.repo.rsplit_once('/').map_or(g.repo.as_str(), |(_, s)| s)))
        .or_else(|| {
            repos
                .as_deref()
                .and_then(|r| r.first())
                .map(|r| RepoSlug::new(&r.slug))
        });
    if !skip(ApiFamily::PermissionsRead, &verdicts) {
        let v = match &repo {
            Some(r) => read_verdict(
                &clients
                    .get(ApiFamily::PermissionsRead)
                    .permissions_first_page(Target::Repo(r), PrincipalKind::Groups)
                    .await,
                |_| format!("read group grants of {r}"),
            ),
            None => Verdict::NotProbed {
                detail: "no repository to read grants of".into(),
            },
        };
        verdicts.insert(ApiFamily::PermissionsRead, v);
    }

    // Writes.
    let managed: BTreeSet<&GroupSlug> = cfg.groups.iter().map(|g| &g.slug).collect();
    let mut organisation_managed = None;
    let groups_list: &[V1Group] = groups.as_deref().unwrap_or(&[]);
    for family in [
        ApiFamily::GroupsWrite,
        ApiFamily::GroupPrivilegesWrite,
        ApiFamily::PermissionsWrite,
    ] {
        if skip(family, &verdicts) {
            continue;
        }
        let client = clients.get(family);
        let kind = clients.kind(family);
        let granted = client.granted_scopes();
        let verdict = match judge_write(
            family,
            clients.credential(family),
            kind,
            granted.as_deref(),
        ) {
            Some(v) => v,
            None if !probe_writes => {
                let detail = match (&granted, family.api_token_scopes(false)) {
                    (Some(_), Some(req)) if kind == CredentialKind::ApiToken => format!(
                        "holds the scopes it needs ({}); not proven: use --probe-writes",
                        req.join(", ")
                    ),
                    _ => "not ruled out by kind or scopes; not proven: use --probe-writes".into(),
                };
                Verdict::Likely { detail }
            }
            None => {
                let result =
                    probe_write(family, client, groups_list, &managed, existing_grant).await;
                match result {
                    Some((Ok(_), detail)) => {
                        if family != ApiFamily::PermissionsWrite {
                            organisation_managed.get_or_insert(false);
                        }
                        Verdict::Ok { detail }
                    }
                    Some((Err(e), _)) => {
                        if e.status() == Some(405) && family != ApiFamily::PermissionsWrite {
                            organisation_managed = Some(true);
                        }
                        refused(&e)
                    }
                    None => Verdict::Likely {
                        detail: "nothing existing to re-write without changing anything; not ruled out by kind or scopes".into(),
                    },
                }
            }
        };
        verdicts.insert(family, verdict);
    }

    // The membership backend, told without writing; a write probe's 405 (or answer)
    // confirms the kind.
    let names: Vec<String> = cfg.groups.iter().map(|g| g.name.clone()).collect();
    let signals = detect::detect(cfg, clients, &names).await;
    let (mut detected, mut evidence) = detect::judge(&signals);
    match organisation_managed {
        Some(true) if detected != Detected::OrganisationManaged => {
            detected = Detected::OrganisationManaged;
            evidence = format!("a no-op 1.0 write answered 405 ({evidence})");
        }
        Some(false) if detected != Detected::Classic => {
            detected = Detected::Classic;
            evidence = format!("a no-op 1.0 write answered ({evidence})");
        }
        _ => {}
    }
    let membership_backend = detect::choose(
        cfg.bitbucket.membership_backend,
        Some((detected, evidence.clone())),
        cfg.admin_api.is_some(),
    );
    let mut needed = needed;
    if membership_backend.backend == MembershipBackendKind::AdminApi && !cfg.groups.is_empty() {
        // Memberships go through the Admin API; 1.0 groups are only read.
        needed.remove(&ApiFamily::GroupsWrite);
        needed.insert(ApiFamily::AdminApi);
    }
    if cfg.admin_api.is_some() {
        verdicts.insert(ApiFamily::AdminApi, probe_admin(cfg, clients).await);
    }

    // `auto`: a 1.0 listing refused for the workspace or its credential (403, 404, 405) is
    // read through 2.0 instead, which then is what grants need.
    let v1_refused = matches!(
        verdicts.get(&ApiFamily::GroupPrivilegesRead),
        Some(Verdict::Refused {
            status: Some(403..=405),
            ..
        })
    );
    let v2_reads = matches!(
        verdicts.get(&ApiFamily::PermissionsRead),
        Some(Verdict::Ok { .. })
    );
    if cfg.bitbucket.grant_reader == GrantReader::Auto
        && needed.contains(&ApiFamily::GroupPrivilegesRead)
        && v1_refused
        && v2_reads
    {
        needed.remove(&ApiFamily::GroupPrivilegesRead);
        needed.insert(ApiFamily::PermissionsRead);
    }
    let probes = ApiFamily::ALL
        .into_iter()
        .chain([ApiFamily::AdminApi])
        .filter_map(|f| {
            verdicts.remove(&f).map(|verdict| {
                let mut p = Probe {
                    family: f,
                    credential: clients.credential(f).to_owned(),
                    kind: clients.kind(f),
                    needed: needed.contains(&f),
                    verdict,
                    consequence: None,
                    fix: None,
                };
                if let Verdict::Refused { .. } = p.verdict {
                    p.consequence = Some(format!("bbsync {}", f.consequence()));
                    p.fix = Some(fix_for(&p, statuses.get(&p.credential)));
                }
                p
            })
        })
        .collect();
    CheckReport {
        workspace,
        workspace_kind: match detected {
            Detected::OrganisationManaged => WorkspaceKind::OrganisationManaged,
            Detected::Classic => WorkspaceKind::Classic,
            Detected::Unknown => WorkspaceKind::Unknown,
        },
        workspace_evidence: evidence,
        membership_backend,
        probe_writes,
        credentials: statuses,
        probes,
    }
}

/// The org API key, read-only: `GET /v2/orgs/{orgId}/directories`.
async fn probe_admin(cfg: &Config, clients: &Clients) -> Verdict {
    let Some(a) = &cfg.admin_api else {
        return Verdict::NotProbed {
            detail: "no [admin_api]".into(),
        };
    };
    let client = clients.get(ApiFamily::AdminApi);
    let url = client.url(&["v2", "orgs", &a.org_id, "directories"]);
    match client
        .send_expecting(
            reqwest::Method::GET,
            &url,
            crate::bitbucket::Body::None,
            crate::bitbucket::expect::object,
        )
        .await
        .and_then(|a| a.ok())
    {
        Ok(_) => Verdict::Ok {
            detail: format!("organisation {:?} answers (directories listed)", a.org_id),
        },
        Err(e) => refused(&e),
    }
}

/// A write judged without writing: the sheet's rules for the kind, then the granted scopes
/// (both for a grant and for a revocation).
fn judge_write(
    family: ApiFamily,
    credential: &str,
    kind: CredentialKind,
    granted: Option<&[String]>,
) -> Option<Verdict> {
    let who = format!("{family} with credential {credential:?} ({kind})");
    let reason = [false, true]
        .into_iter()
        .find_map(|delete| family.credential_gap(kind, granted, delete))
        .map(|gap| format!("{who}: {gap}"))?;
    let required: Vec<String> = match kind {
        CredentialKind::ApiToken => family
            .api_token_scopes(false)
            .into_iter()
            .chain(family.api_token_scopes(true))
            .flatten()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        _ => family
            .oauth_scopes()
            .unwrap_or_default()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    Some(Verdict::Refused {
        reason,
        status: None,
        required: if family.known_refusal(kind).is_some() {
            Vec::new()
        } else {
            required
        },
        granted: granted.map(<[String]>::to_vec).unwrap_or_default(),
    })
}

/// A no-op write: re-add an existing member (preferring a managed group), or re-PUT an existing
/// grant with its current permission. `None` when there is nothing to re-write.
async fn probe_write(
    family: ApiFamily,
    client: &crate::bitbucket::Client,
    groups: &[V1Group],
    managed: &BTreeSet<&GroupSlug>,
    existing_grant: Option<&V1GroupPrivilege>,
) -> Option<(Result<Written, ApiError>, String)> {
    if family == ApiFamily::GroupsWrite {
        let (g, u) = groups
            .iter()
            .filter(|g| !g.members.is_empty())
            .max_by_key(|g| managed.contains(&GroupSlug::from_name(&g.slug)))
            .and_then(|g| {
                g.members
                    .iter()
                    .find_map(|m| m.uuid.as_deref())
                    .map(|u| (GroupSlug::from_name(&g.slug), BbUuid::braced(u)))
            })?;
        let r = client.add_member(&g, &u).await;
        return Some((r, format!("re-added an existing member of {g} (no change)")));
    }
    let p = existing_grant?;
    let repo = RepoSlug::new(p.repo.rsplit_once('/').map_or(p.repo.as_str(), |(_, s)| s));
    let group = GroupSlug::from_name(&p.group.slug);
    let perm = Permission::parse(&p.privilege)?;
    let r = if family == ApiFamily::PermissionsWrite {
        client
            .put_permission(Target::Repo(&repo), Principal::Group(&group), perm.as_str())
            .await
    } else {
        client.put_group_privilege(&repo, &group, perm).await
    };
    Some((r, format!("re-put {perm} of {group} on {repo} (no change)")))
}

/// What to do about a refused family.
fn fix_for(p: &Probe, status: Option<&CredentialStatus>) -> String {
    let key = p.family.key();
    let cred = &p.credential;
    let elsewhere = format!(
        "serve it with a credential that may (bitbucket.families.{key}; see README: Which credentials do I need?)"
    );
    let Verdict::Refused {
        status: code,
        required,
        granted,
        ..
    } = &p.verdict
    else {
        return String::new();
    };
    match (code, p.kind) {
        (Some(401), CredentialKind::AccessToken) => format!(
            "credential {cred:?} was rejected: if it is an Atlassian API token, declare it kind = \"api_token\" with the account email (API tokens sent as Bearer answer 401); otherwise renew the access token"
        ),
        (Some(401), CredentialKind::OAuth) => {
            format!("credential {cred:?} was rejected: check the OAuth consumer's client_id and client_secret")
        }
        (Some(401), CredentialKind::ApiToken) => format!(
            "credential {cred:?} was rejected: check the token and that email is the Atlassian account email of its owner (API tokens are sent as Basic email:token)"
        ),
        _ if matches!(status, Some(CredentialStatus::WrongWorkspace { .. })) => {
            "check bitbucket.workspace: it must be the workspace slug (bitbucket.org/<slug>/), one the credential can see".into()
        }
        (Some(405), _) => "the workspace is organisation-managed: 1.0 group and group-privileges writes are off there. bbsync cannot manage group membership on it until its Atlassian Admin API backend lands; keep grant_writes = \"permissions-config\" for grants".into(),
        _ if matches!(status, Some(CredentialStatus::Ok { admin: Some(false) })) => {
            format!("make the user behind credential {cred:?} an administrator of the workspace, or {elsewhere}")
        }
        _ => {
            let missing: Vec<&str> = required
                .iter()
                .filter(|r| !granted.contains(r))
                .map(String::as_str)
                .collect();
            match p.kind {
                _ if missing.is_empty() => elsewhere,
                CredentialKind::ApiToken if missing.iter().any(|m| !m.contains(":bitbucket")) => format!(
                    "API tokens cannot hold {}: serve {key} with an OAuth consumer that has it (bitbucket.families.{key})",
                    missing.join(", ")
                ),
                CredentialKind::ApiToken => format!(
                    "create the API token of {cred:?} with scope(s) {} as well (scopes cannot be added to an existing token)",
                    missing.join(", ")
                ),
                _ => format!(
                    "give the OAuth consumer {cred:?} the permission(s) {} in its Bitbucket settings",
                    missing.join(", ")
                ),
            }
        }
    }
}

/// The report as a table people can act on.
pub fn render(r: &CheckReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<30} {:<26} {:<6} RESULT",
        "OPERATION", "CREDENTIAL", "NEEDED"
    );
    for p in &r.probes {
        let cred = format!("{} ({})", p.credential, p.kind);
        let needed = if p.needed { "yes" } else { "no" };
        let result = match &p.verdict {
            Verdict::Ok { detail } => format!("ok: {detail}"),
            Verdict::Likely { detail } => format!("likely: {detail}"),
            Verdict::NotProbed { detail } => format!("not probed: {detail}"),
            Verdict::Refused { reason, .. } => format!("REFUSED: {reason}"),
        };
        let _ = writeln!(
            s,
            "{:<30} {:<26} {:<6} {result}",
            p.family.describe(),
            cred,
            needed
        );
        if let Some(c) = &p.consequence {
            let _ = writeln!(s, "{:<64}   consequence: {c}", "");
        }
        if let Some(f) = &p.fix {
            let _ = writeln!(s, "{:<64}   fix: {f}", "");
        }
    }
    let _ = writeln!(
        s,
        "\nWorkspace {}: {} ({})",
        r.workspace,
        match r.workspace_kind {
            WorkspaceKind::Classic => "classic: group memberships through 1.0 groups",
            WorkspaceKind::OrganisationManaged => "organisation-managed: 1.0 groups and group-privileges are read-only; group memberships through the Atlassian Admin API, grants through 2.0 permissions-config",
            WorkspaceKind::Unknown if r.probe_writes => "kind unknown (no signal and no 1.0 write could be tried)",
            WorkspaceKind::Unknown => "kind not determined without writing (use --probe-writes, or set bitbucket.membership_backend)",
        },
        r.workspace_evidence
    );
    let b = &r.membership_backend;
    let _ = writeln!(s, "Membership backend: {} ({})", b.backend.key(), b.reason);
    if let Some(why) = &b.blocked {
        let _ = writeln!(s, "  ! membership changes would be blocked: {why}");
    }
    if r.probe_writes {
        let _ = writeln!(
            s,
            "Writes were probed with no-op re-writes (nothing was changed)."
        );
    }
    let mut blocking: Vec<&str> = r
        .probes
        .iter()
        .filter(|p| p.needed && !matches!(p.verdict, Verdict::Ok { .. } | Verdict::Likely { .. }))
        .map(|p| p.family.describe())
        .collect();
    if r.membership_backend.blocked.is_some() {
        blocking.push("group membership writes (wrong membership backend)");
    }
    let unproven: Vec<&str> = r
        .probes
        .iter()
        .filter(|p| p.needed && matches!(p.verdict, Verdict::Likely { .. }))
        .map(|p| p.family.describe())
        .collect();
    if !blocking.is_empty() {
        let _ = writeln!(
            s,
            "Result: {} operation(s) the configured rules need are NOT possible: {}",
            blocking.len(),
            blocking.join(", ")
        );
    } else if unproven.is_empty() {
        let _ = writeln!(
            s,
            "Result: every operation the configured rules need is possible (proven)."
        );
    } else {
        let _ = writeln!(
            s,
            "Result: every operation the configured rules need is possible as far as can be told without writing; not proven: {} (run with --probe-writes)",
            unproven.join(", ")
        );
    }
    s
}
