//! `bbsync check`: proves, family by family, what the configured credentials can do.
//!
//! Read families are proven with one cheap real call each (`pagelen=1` where paged). Write
//! families are judged read-only from what is known without writing: the API sheet's rules for
//! the credential kind and the scopes Bitbucket reports holding (`x-oauth-scopes`, or the OAuth
//! token answer). With `--probe-writes` they are proven with idempotent no-op writes: re-adding
//! an existing member, re-PUTting an existing grant with its current permission. A 1.0 write
//! answering 405 reveals an organisation-managed workspace.

use crate::apply::credential_block;
use crate::bitbucket::dto::{V1Group, V1GroupPrivilege};
use crate::bitbucket::{ApiError, ApiFamily, Clients, CredentialKind, Written};
use crate::config::{Config, GrantWrites};
use crate::model::{BbUuid, GroupSlug, Permission, RepoSlug};
use crate::plan::Change;
use serde::Serialize;
use std::collections::BTreeSet;
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
    pub probe_writes: bool,
    pub probes: Vec<Probe>,
}

impl CheckReport {
    /// Every family the rules need is proven or, for writes, not ruled out.
    pub fn ok(&self) -> bool {
        self.probes
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
        n.extend([ApiFamily::GroupPrivilegesRead, ApiFamily::RepositoriesRead]);
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
    let mut verdicts: Vec<(ApiFamily, Verdict)> = Vec::new();
    let managed: BTreeSet<&GroupSlug> = cfg.groups.iter().map(|g| &g.slug).collect();

    let groups = clients.get(ApiFamily::GroupsRead).list_groups().await;
    verdicts.push((
        ApiFamily::GroupsRead,
        read_verdict(&groups, |g| format!("{} groups", g.len())),
    ));
    let members = clients
        .get(ApiFamily::MembersRead)
        .members_first_page()
        .await;
    verdicts.push((
        ApiFamily::MembersRead,
        read_verdict(&members, |_| "members listed".into()),
    ));
    let privileges = clients
        .get(ApiFamily::GroupPrivilegesRead)
        .list_group_privileges()
        .await;
    verdicts.push((
        ApiFamily::GroupPrivilegesRead,
        read_verdict(&privileges, |p| format!("{} group grants", p.len())),
    ));
    let repos = clients
        .get(ApiFamily::RepositoriesRead)
        .repositories_first_page()
        .await;
    verdicts.push((
        ApiFamily::RepositoriesRead,
        read_verdict(&repos, |_| "repositories listed".into()),
    ));

    // A repository to read grants of: one with a group grant if we know one, else any.
    let existing_grant: Option<&V1GroupPrivilege> =
        privileges.as_ref().ok().and_then(|p| p.first());
    let repo: Option<RepoSlug> = existing_grant
        .map(|g| RepoSlug::new(g.repo.rsplit_once('/').map_or(g.repo.as_str(), |(_, s)| s)))
        .or_else(|| {
            repos
                .as_ref()
                .ok()
                .and_then(|r| r.first())
                .map(|r| RepoSlug::new(&r.slug))
        });
    let perms_read = match &repo {
        Some(r) => read_verdict(
            &clients
                .get(ApiFamily::PermissionsRead)
                .repo_group_permissions_first_page(r)
                .await,
            |_| format!("read group grants of {r}"),
        ),
        None => Verdict::NotProbed {
            detail: "no repository to read grants of".into(),
        },
    };
    verdicts.push((ApiFamily::PermissionsRead, perms_read));

    // Writes. A credential rejected outright (401) on a read cannot write either.
    let rejected: BTreeSet<&str> = verdicts
        .iter()
        .filter(|(_, v)| {
            matches!(
                v,
                Verdict::Refused {
                    status: Some(401),
                    ..
                }
            )
        })
        .map(|(f, _)| clients.credential(*f))
        .collect();
    let mut organisation_managed = None;
    let groups_list: &[V1Group] = groups.as_ref().map(Vec::as_slice).unwrap_or(&[]);
    for family in [
        ApiFamily::GroupsWrite,
        ApiFamily::GroupPrivilegesWrite,
        ApiFamily::PermissionsWrite,
    ] {
        let client = clients.get(family);
        let kind = clients.kind(family);
        if rejected.contains(clients.credential(family)) {
            verdicts.push((
                family,
                Verdict::Refused {
                    reason: format!(
                        "credential {:?} was rejected (HTTP 401) on the reads above",
                        clients.credential(family)
                    ),
                    status: Some(401),
                    required: Vec::new(),
                    granted: Vec::new(),
                },
            ));
            continue;
        }
        if client.granted_scopes().is_none() && kind != CredentialKind::AccessToken {
            // Any answer tells us the scopes the credential holds; the outcome itself is not used.
            let _ = client.repositories_first_page().await;
        }
        let granted = client.granted_scopes();
        // Judge by what is known without writing, for both a grant and a revocation.
        let sample = |delete: bool| match family {
            ApiFamily::GroupsWrite => Change::CreateGroup {
                group: GroupSlug::from_name("probe"),
                name: "probe".into(),
            },
            _ if delete => Change::RemoveGrant {
                repo: RepoSlug::new("probe"),
                group: GroupSlug::from_name("probe"),
                previous: Permission::Read,
            },
            _ => Change::SetGrant {
                repo: RepoSlug::new("probe"),
                group: GroupSlug::from_name("probe"),
                permission: Permission::Read,
                previous: None,
            },
        };
        let known = [false, true].into_iter().find_map(|delete| {
            credential_block(
                &sample(delete),
                family,
                clients.credential(family),
                kind,
                granted.as_deref(),
            )
        });
        if let Some(reason) = known {
            let (required, granted_list) = match kind {
                CredentialKind::ApiToken => (
                    family
                        .api_token_scopes(true)
                        .into_iter()
                        .chain(family.api_token_scopes(false))
                        .flatten()
                        .map(|s| s.to_string())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    granted.clone().unwrap_or_default(),
                ),
                _ => (
                    family
                        .oauth_scopes()
                        .unwrap_or_default()
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    granted.clone().unwrap_or_default(),
                ),
            };
            verdicts.push((
                family,
                Verdict::Refused {
                    reason,
                    status: None,
                    required,
                    granted: granted_list,
                },
            ));
            continue;
        }
        if !probe_writes {
            let detail = match (&granted, family.api_token_scopes(false)) {
                (Some(_), Some(req)) if kind == CredentialKind::ApiToken => format!(
                    "holds the scopes it needs ({}); prove it with --probe-writes",
                    req.join(", ")
                ),
                _ => "not ruled out by kind or scopes; prove it with --probe-writes".into(),
            };
            verdicts.push((family, Verdict::Likely { detail }));
            continue;
        }
        let result: Option<(Result<Written, ApiError>, String)> = match family {
            ApiFamily::GroupsWrite => {
                // Re-add an existing member, preferring a managed group.
                let target = groups_list
                    .iter()
                    .filter(|g| !g.members.is_empty())
                    .max_by_key(|g| managed.contains(&GroupSlug::from_name(&g.slug)))
                    .and_then(|g| {
                        g.members
                            .iter()
                            .find_map(|m| m.uuid.as_deref())
                            .map(|u| (GroupSlug::from_name(&g.slug), BbUuid::braced(u)))
                    });
                match target {
                    Some((g, u)) => Some((
                        client.add_member(&g, &u).await,
                        format!("re-added an existing member of {g} (no change)"),
                    )),
                    None => None,
                }
            }
            _ => match existing_grant {
                Some(p) => {
                    let repo =
                        RepoSlug::new(p.repo.rsplit_once('/').map_or(p.repo.as_str(), |(_, s)| s));
                    let group = GroupSlug::from_name(&p.group.slug);
                    match Permission::parse(&p.privilege) {
                        Some(perm) => Some((
                            if family == ApiFamily::PermissionsWrite {
                                client.put_repo_group_permission(&repo, &group, perm).await
                            } else {
                                client.put_group_privilege(&repo, &group, perm).await
                            },
                            format!("re-put {perm} of {group} on {repo} (no change)"),
                        )),
                        None => None,
                    }
                }
                None => None,
            },
        };
        let verdict = match result {
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
        };
        verdicts.push((family, verdict));
    }

    let probes = ApiFamily::ALL
        .into_iter()
        .filter_map(|f| {
            verdicts
                .iter()
                .find(|(vf, _)| *vf == f)
                .map(|(_, v)| Probe {
                    family: f,
                    credential: clients.credential(f).to_owned(),
                    kind: clients.kind(f),
                    needed: needed.contains(&f),
                    verdict: v.clone(),
                })
        })
        .collect();
    CheckReport {
        workspace: cfg.bitbucket.workspace.clone(),
        workspace_kind: match organisation_managed {
            Some(true) => WorkspaceKind::OrganisationManaged,
            Some(false) => WorkspaceKind::Classic,
            None => WorkspaceKind::Unknown,
        },
        probe_writes,
        probes,
    }
}

/// What to do about a refused family.
fn fix_for(p: &Probe) -> String {
    let key = p.family.key();
    match &p.verdict {
        Verdict::Refused { status: Some(401), .. } if p.kind == CredentialKind::AccessToken => format!(
            "credential {:?} was rejected: if it is an Atlassian API token, declare it kind = \"api_token\" with the account email (API tokens sent as Bearer answer 401); otherwise renew the access token",
            p.credential
        ),
        Verdict::Refused { status: Some(401), .. } => format!(
            "credential {:?} was rejected: check it (an API token needs the account email and is sent as Basic auth; an OAuth consumer its key and secret)",
            p.credential
        ),
        Verdict::Refused { status: Some(405), .. } => {
            "the workspace is organisation-managed: 1.0 writes are off; memberships go through the Atlassian Admin API, grants through 2.0 permissions-config (grant_writes = \"permissions-config\")".into()
        }
        Verdict::Refused { required, granted, .. } if !required.is_empty() => {
            let missing: Vec<&str> = required
                .iter()
                .filter(|r| !granted.contains(r))
                .map(String::as_str)
                .collect();
            match (missing.is_empty(), p.kind) {
                (true, _) => format!("point bitbucket.families.{key} at a credential that may do this (see README: Which credentials do I need?)"),
                (false, CredentialKind::OAuth) => format!(
                    "give the OAuth consumer {:?} the permission(s) {} in its Bitbucket settings",
                    p.credential,
                    missing.join(", ")
                ),
                (false, _) => format!(
                    "create the API token of {:?} with scope(s) {} as well (scopes cannot be added to an existing token)",
                    p.credential,
                    missing.join(", ")
                ),
            }
        }
        _ => format!(
            "point bitbucket.families.{key} at a credential that may do this (see README: Which credentials do I need?)"
        ),
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
        if let Verdict::Refused { .. } = p.verdict {
            let _ = writeln!(
                s,
                "{:<64}   consequence: bbsync {}",
                "",
                p.family.consequence()
            );
            let _ = writeln!(s, "{:<64}   fix: {}", "", fix_for(p));
        }
    }
    let _ = writeln!(
        s,
        "\nWorkspace {}: {}",
        r.workspace,
        match r.workspace_kind {
            WorkspaceKind::Classic => "classic (1.0 group writes answer): the 1.0 groups backend applies",
            WorkspaceKind::OrganisationManaged => "organisation-managed (1.0 writes answer 405): group memberships must go through the Atlassian Admin API backend, grants through 2.0 permissions-config",
            WorkspaceKind::Unknown if r.probe_writes => "kind unknown (no 1.0 write could be tried)",
            WorkspaceKind::Unknown => "kind not determined (classic or organisation-managed shows only on a write: use --probe-writes)",
        }
    );
    if r.probe_writes {
        let _ = writeln!(
            s,
            "Writes were probed with no-op re-writes (nothing was changed)."
        );
    }
    let blocking: Vec<&Probe> = r
        .probes
        .iter()
        .filter(|p| p.needed && !matches!(p.verdict, Verdict::Ok { .. } | Verdict::Likely { .. }))
        .collect();
    if blocking.is_empty() {
        let _ = writeln!(
            s,
            "Result: every operation the configured rules need is possible."
        );
    } else {
        let _ = writeln!(
            s,
            "Result: {} operation(s) the configured rules need are NOT possible: {}",
            blocking.len(),
            blocking
                .iter()
                .map(|p| p.family.describe())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}
