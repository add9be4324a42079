//! Applies a plan's changes, one at a time, and records every outcome in the audit trail.
//!
//! Sequential for now (the rate-limited worker pool is its own piece of work). Memberships go
//! through the [`MembershipBackend`] seam, grants through 2.0 permissions-config (or 1.0
//! group-privileges); each change goes out with the credential of its API family. A refusal
//! (401/403/405) marks that family unavailable for the rest of the run: its remaining changes
//! are reported blocked instead of being sent to be refused again. A group that could not be
//! created takes its member adds and grants with it.

pub mod audit;

use crate::bitbucket::{
    ApiFamily, Clients, MembershipBackend, Principal, Target, WriteError, Written,
};
use crate::config::GrantWrites;
use crate::model::{AccountId, GrantTarget, GroupSlug};
use crate::plan::{BlockReason, Change, Plan, Reason};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What happened to one change.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Sent, and Bitbucket made the change.
    Applied,
    /// Bitbucket said it was already so.
    AlreadyDone,
    Failed {
        error: String,
        status: Option<u16>,
    },
    /// Not sent, and why.
    Blocked {
        reason: BlockReason,
    },
}

/// The kinds of [`Outcome`], for counts and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Applied,
    AlreadyDone,
    Failed,
    Blocked,
}

impl OutcomeKind {
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Applied => "applied",
            OutcomeKind::AlreadyDone => "already_done",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Blocked => "blocked",
        }
    }
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Applied => OutcomeKind::Applied,
            Outcome::AlreadyDone => OutcomeKind::AlreadyDone,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Blocked { .. } => OutcomeKind::Blocked,
        }
    }

    /// Applied or already so: Bitbucket now matches the change.
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::AlreadyDone)
    }
}

/// One change of the plan, why it was made, and what happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeResult {
    #[serde(flatten)]
    pub change: Change,
    pub reason: Reason,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The API family that performs a change: memberships by the backend's write family,
/// repository grants of groups by the configured grant writes, project and direct user grants
/// by 2.0 permissions-config (1.0 has no calls for them).
pub fn family_of(change: &Change, membership: ApiFamily, grants: GrantWrites) -> ApiFamily {
    match change {
        Change::CreateGroup { .. } | Change::AddMember { .. } | Change::RemoveMember { .. } => {
            membership
        }
        Change::SetGrant { .. } | Change::RemoveGrant { .. } => match grants {
            GrantWrites::PermissionsConfig => ApiFamily::PermissionsWrite,
            GrantWrites::GroupPrivileges => ApiFamily::GroupPrivilegesWrite,
        },
        Change::SetProjectGrant { .. }
        | Change::RemoveProjectGrant { .. }
        | Change::RemoveUserGrant { .. } => ApiFamily::PermissionsWrite,
    }
}

pub struct Applier<'a> {
    pub clients: &'a Clients,
    pub members: &'a dyn MembershipBackend,
    pub grant_writes: GrantWrites,
    pub audit: &'a audit::Audit,
    pub run_id: &'a str,
}

impl Applier<'_> {
    pub fn family(&self, change: &Change) -> ApiFamily {
        family_of(change, self.members.write_family(), self.grant_writes)
    }

    /// Runs every change of the plan in order; blocked ones are recorded, not sent.
    pub async fn apply(&self, plan: &Plan) -> Vec<ChangeResult> {
        let mut refused: BTreeMap<ApiFamily, String> = BTreeMap::new();
        let mut not_created: BTreeMap<GroupSlug, String> = BTreeMap::new();
        // People whose direct grant removal did not happen this run.
        let mut grants_pending: BTreeSet<AccountId> = BTreeSet::new();
        let mut audit_broken: Option<String> = None;
        let mut out = Vec::with_capacity(plan.changes.len());
        let total = plan.runnable().count();
        let mut done = 0usize;
        for p in &plan.changes {
            let family = self.family(&p.change);
            let creates = matches!(p.change, Change::CreateGroup { .. });
            let blocked = if let Some(reason) = &p.blocked {
                Some(reason.clone())
            } else if let Some(error) = &audit_broken {
                Some(BlockReason::AuditUnavailable {
                    error: error.clone(),
                })
            } else if let Some((group, why)) = p
                .change
                .group()
                .and_then(|g| not_created.get_key_value(g))
                .filter(|_| !creates)
            {
                Some(BlockReason::GroupNotCreated {
                    group: group.clone(),
                    why: why.clone(),
                })
            } else if let Some(account_id) = match &p.change {
                Change::RemoveMember { account_id, .. } if grants_pending.contains(account_id) => {
                    Some(account_id)
                }
                _ => None,
            } {
                Some(BlockReason::DirectGrantsPending {
                    account_id: account_id.clone(),
                })
            } else {
                refused
                    .get(&family)
                    .map(|error| BlockReason::RefusedEarlier {
                        family,
                        credential: self.clients.credential(family).to_owned(),
                        error: error.clone(),
                    })
            };
            let outcome = match blocked {
                Some(reason) => Outcome::Blocked { reason },
                None => {
                    done += 1;
                    let outcome = match self.apply_one(&p.change, family).await {
                        Ok(Written::Done) => Outcome::Applied,
                        Ok(Written::AlreadyDone) => Outcome::AlreadyDone,
                        Err(WriteError::NotInWorkspace) => Outcome::Blocked {
                            reason: BlockReason::NotWorkspaceMember,
                        },
                        Err(WriteError::MembersUnreadable(error)) => Outcome::Failed {
                            error: format!(
                                "cannot read the workspace members to find the person: {error}"
                            ),
                            status: None,
                        },
                        Err(WriteError::Api(e)) => {
                            if e.is_refusal() {
                                refused.insert(family, e.to_string());
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
                }
            };
            if let Change::RemoveUserGrant { account_id, .. } = &p.change {
                if !outcome.is_done() {
                    grants_pending.insert(account_id.clone());
                }
            }
            if creates && !outcome.is_done() {
                let why = match &outcome {
                    Outcome::Failed { error, .. } => error.clone(),
                    Outcome::Blocked { reason } => reason.to_string(),
                    _ => String::new(),
                };
                if let Some(g) = p.change.group() {
                    not_created.insert(g.clone(), why);
                }
            }
            match &outcome {
                Outcome::Failed { error, .. } => {
                    tracing::error!(change = %p.change, error, "change failed")
                }
                Outcome::Blocked { reason } => {
                    tracing::warn!(change = %p.change, reason = %reason, kind = reason.label(), "change blocked")
                }
                _ => tracing::info!(change = %p.change, outcome = outcome.kind().label(), "change"),
            }
            if let Err(e) = self
                .audit
                .record(self.run_id, &p.change, &p.reason, &outcome)
            {
                // Lose nothing: without an audit trail, stop changing things.
                tracing::error!(error = %e, change = %p.change, outcome = outcome.kind().label(), "cannot write the audit trail; stopping this apply");
                audit_broken.get_or_insert(e.to_string());
            }
            out.push(ChangeResult {
                change: p.change.clone(),
                reason: p.reason.clone(),
                outcome,
            });
        }
        out
    }

    async fn apply_one(&self, c: &Change, family: ApiFamily) -> Result<Written, WriteError> {
        let cl = self.clients.get(family);
        Ok(match c {
            Change::RemoveMember {
                group, account_id, ..
            } => self.members.remove_member(group, account_id).await?,
            Change::AddMember {
                group, account_id, ..
            } => self.members.add_member(group, account_id).await?,
            Change::CreateGroup { name, group } => self.members.create_group(group, name).await?,
            Change::SetGrant {
                repo,
                group,
                permission,
                ..
            } => match self.grant_writes {
                GrantWrites::PermissionsConfig => {
                    cl.put_permission(
                        Target::Repo(repo),
                        Principal::Group(group),
                        permission.as_str(),
                    )
                    .await?
                }
                GrantWrites::GroupPrivileges => {
                    cl.put_group_privilege(repo, group, *permission).await?
                }
            },
            Change::RemoveGrant { repo, group, .. } => match self.grant_writes {
                GrantWrites::PermissionsConfig => {
                    cl.delete_permission(Target::Repo(repo), Principal::Group(group))
                        .await?
                }
                GrantWrites::GroupPrivileges => cl.delete_group_privilege(repo, group).await?,
            },
            Change::SetProjectGrant {
                project,
                group,
                permission,
                ..
            } => {
                cl.put_permission(
                    Target::Project(project),
                    Principal::Group(group),
                    permission.as_str(),
                )
                .await?
            }
            Change::RemoveProjectGrant { project, group, .. } => {
                cl.delete_permission(Target::Project(project), Principal::Group(group))
                    .await?
            }
            Change::RemoveUserGrant {
                target, account_id, ..
            } => {
                let on = match target {
                    GrantTarget::Repo(r) => Target::Repo(r),
                    GrantTarget::Project(p) => Target::Project(p),
                };
                cl.delete_permission(on, Principal::User(account_id.as_str()))
                    .await?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_the_results_the_audit_trail_records() {
        for (o, kind) in [
            (Outcome::Applied, OutcomeKind::Applied),
            (Outcome::AlreadyDone, OutcomeKind::AlreadyDone),
            (
                Outcome::Failed {
                    error: "e".into(),
                    status: None,
                },
                OutcomeKind::Failed,
            ),
            (
                Outcome::Blocked {
                    reason: BlockReason::NotWorkspaceMember,
                },
                OutcomeKind::Blocked,
            ),
        ] {
            assert_eq!(o.kind(), kind);
            assert_eq!(
                serde_json::to_value(&o).expect("json")["result"],
                kind.label()
            );
            assert_eq!(serde_json::to_value(kind).expect("json"), kind.label());
            assert_eq!(
                o.is_done(),
                matches!(kind, OutcomeKind::Applied | OutcomeKind::AlreadyDone)
            );
        }
    }
}
