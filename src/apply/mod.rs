//! Applies a plan's changes, one at a time, and records every outcome in the audit trail.
//!
//! Sequential for now (the rate-limited worker pool is its own piece of work). Each change goes
//! out with the credential of its API family. A refusal (401/403/405) marks that family
//! unavailable for the rest of the run: its remaining changes are reported blocked instead of
//! being sent to be refused again.

pub mod audit;

use crate::bitbucket::{ApiError, ApiFamily, Client, Clients, CredentialKind, Written};
use crate::config::GrantWrites;
use crate::model::{AccountId, BbUuid, GroupSlug};
use crate::plan::{Change, Plan};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What happened to one change.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    /// Bitbucket said it was already so.
    AlreadyDone,
    Failed {
        error: String,
        status: Option<u16>,
    },
    Blocked {
        reason: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::AlreadyDone => "already_done",
            Outcome::Failed { .. } => "failed",
            Outcome::Blocked { .. } => "blocked",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    #[serde(flatten)]
    pub change: Change,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The API family that performs a change.
pub fn family_of(change: &Change, grants: GrantWrites) -> ApiFamily {
    match change {
        Change::CreateGroup { .. } | Change::AddMember { .. } | Change::RemoveMember { .. } => {
            ApiFamily::GroupsWrite
        }
        _ => match grants {
            GrantWrites::PermissionsConfig => ApiFamily::PermissionsWrite,
            GrantWrites::GroupPrivileges => ApiFamily::GroupPrivilegesWrite,
        },
    }
}

/// Why the configured credential cannot perform `change`, known before anything is sent: the
/// API sheet's rules for its kind, and the scopes Bitbucket said it holds (when it said).
pub fn credential_block(
    change: &Change,
    family: ApiFamily,
    credential: &str,
    kind: CredentialKind,
    granted: Option<&[String]>,
) -> Option<String> {
    let who = format!("{family} with credential {credential:?} ({kind})");
    if let Some(reason) = family.known_refusal(kind) {
        return Some(format!("{who}: {reason}"));
    }
    let required = match kind {
        CredentialKind::ApiToken => {
            family.api_token_scopes(matches!(change, Change::RemoveGrant { .. }))
        }
        CredentialKind::OAuth => family.oauth_scopes(),
        CredentialKind::AccessToken => None,
    }?;
    let granted = granted?;
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !granted.iter().any(|g| g == r))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{who} lacks scope(s) {} (granted: {})",
            missing.join(", "),
            if granted.is_empty() {
                "none".to_owned()
            } else {
                granted.join(", ")
            }
        )
    })
}

pub struct Applier<'a> {
    pub clients: &'a Clients,
    pub grant_writes: GrantWrites,
    /// account id -> UUID, for 1.0 member adds (read from workspace members when needed).
    pub uuids: &'a HashMap<AccountId, BbUuid>,
    pub audit: &'a audit::Audit,
    pub run_id: &'a str,
}

impl Applier<'_> {
    /// Runs every change of the plan in order; blocked ones are recorded, not sent.
    pub async fn apply(&self, plan: &Plan) -> Vec<Applied> {
        let mut refused: BTreeMap<ApiFamily, String> = BTreeMap::new();
        let mut failed_groups: BTreeMap<GroupSlug, String> = BTreeMap::new();
        let mut audit_broken: Option<String> = None;
        let mut out = Vec::with_capacity(plan.changes.len());
        let total = plan.runnable().count();
        let mut done = 0usize;
        for p in &plan.changes {
            let family = family_of(&p.change, self.grant_writes);
            let outcome = if let Some(reason) = &p.blocked {
                Outcome::Blocked {
                    reason: reason.clone(),
                }
            } else if let Some(why) = &audit_broken {
                Outcome::Blocked {
                    reason: format!(
                        "the audit trail cannot be written ({why}); nothing more is applied"
                    ),
                }
            } else if let Some(why) = member_group(&p.change).and_then(|g| failed_groups.get(g)) {
                Outcome::Blocked {
                    reason: format!("creating the group failed: {why}"),
                }
            } else if let Some(why) = refused.get(&family) {
                Outcome::Blocked {
                    reason: format!(
                        "{family} (credential {:?}) was refused earlier in this run: {why}",
                        self.clients.credential(family)
                    ),
                }
            } else {
                done += 1;
                let r = self.apply_one(&p.change, self.clients.get(family)).await;
                let outcome = match r {
                    Ok(Written::Done) => Outcome::Applied,
                    Ok(Written::AlreadyDone) => Outcome::AlreadyDone,
                    Err(ApplyError::NotInWorkspace) => Outcome::Blocked {
                        reason: "not a member of the workspace: invite them first (1.0 groups only take workspace members)"
                            .into(),
                    },
                    Err(ApplyError::Api(e)) => {
                        if e.is_refusal() {
                            refused.insert(family, e.to_string());
                        }
                        if let Change::CreateGroup { group, .. } = &p.change {
                            failed_groups.insert(group.clone(), e.to_string());
                        }
                        Outcome::Failed {
                            error: e.to_string(),
                            status: e.status(),
                        }
                    }
                };
                if done % 50 == 0 || done == total {
                    tracing::info!(done, total, "applying changes");
                }
                outcome
            };
            match &outcome {
                Outcome::Failed { error, .. } => {
                    tracing::error!(change = %p.change, error, "change failed")
                }
                Outcome::Blocked { reason } => {
                    tracing::warn!(change = %p.change, reason, "change blocked")
                }
                _ => tracing::info!(change = %p.change, outcome = outcome.label(), "change"),
            }
            if let Err(e) = self.audit.record(self.run_id, &p.change, &outcome) {
                // Lose nothing: without an audit trail, stop changing things.
                tracing::error!(error = %e, change = %p.change, outcome = outcome.label(), "cannot write the audit trail; stopping this apply");
                audit_broken.get_or_insert(e.to_string());
            }
            out.push(Applied {
                change: p.change.clone(),
                outcome,
            });
        }
        out
    }

    async fn apply_one(&self, c: &Change, cl: &Client) -> Result<Written, ApplyError> {
        Ok(match c {
            Change::RemoveMember { group, uuid, .. } => cl.remove_member(group, uuid).await?,
            Change::AddMember {
                group, account_id, ..
            } => {
                let uuid = self
                    .uuids
                    .get(account_id)
                    .ok_or(ApplyError::NotInWorkspace)?;
                cl.add_member(group, uuid).await?
            }
            Change::CreateGroup { name, group } => match cl.create_group(name).await {
                Ok(g) => {
                    if g.slug != group.as_str() {
                        tracing::warn!(expected = %group, got = g.slug, "Bitbucket generated an unexpected group slug");
                    }
                    Written::Done
                }
                // "An existing name answers 400": a create that raced another one, or whose
                // earlier answer was lost, is done if the group is there now.
                Err(e) if e.status() == Some(400) => match cl.get_group(group).await? {
                    Some(_) => Written::AlreadyDone,
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            },
            Change::SetGrant {
                repo,
                group,
                permission,
                ..
            } => match self.grant_writes {
                GrantWrites::PermissionsConfig => {
                    cl.put_repo_group_permission(repo, group, *permission)
                        .await?
                }
                GrantWrites::GroupPrivileges => {
                    cl.put_group_privilege(repo, group, *permission).await?
                }
            },
            Change::RemoveGrant { repo, group, .. } => match self.grant_writes {
                GrantWrites::PermissionsConfig => {
                    cl.delete_repo_group_permission(repo, group).await?
                }
                GrantWrites::GroupPrivileges => cl.delete_group_privilege(repo, group).await?,
            },
        })
    }
}

/// The group a membership change targets.
fn member_group(c: &Change) -> Option<&GroupSlug> {
    match c {
        Change::AddMember { group, .. } | Change::RemoveMember { group, .. } => Some(group),
        _ => None,
    }
}

enum ApplyError {
    NotInWorkspace,
    Api(ApiError),
}

impl From<ApiError> for ApplyError {
    fn from(e: ApiError) -> Self {
        ApplyError::Api(e)
    }
}
