//! After a crash: intents in the audit trail with no outcome (a change that may or may not
//! have reached Bitbucket) are settled by the next applying run, from what it read.
//!
//! The run holds the workspace lock (no other bbsync writes intents meanwhile), scans the
//! trail from the offset it stored last time (`<audit file>.offset`), decides for each open
//! intent whether Bitbucket shows its effect (from the bulk read, or one targeted read for what
//! the bulk read does not cover), writes a `recovered` record, and stores the new offset.
//! Nothing is replayed: the plan, made from what Bitbucket says now, does what is still
//! wanted.

use super::audit::{self, Audit, Dangling};
use crate::bitbucket::{AdminApi, ApiError, ApiFamily, Clients};
use crate::plan::{Actual, Change, OrgStatus};
use std::path::{Path, PathBuf};

/// Whether Bitbucket, as read in bulk, shows a change's effect; `None` when the read does not
/// cover it (direct grants are read for some people only).
pub fn observed_done(change: &Change, actual: &Actual) -> Option<bool> {
    let member = |group, id| {
        actual
            .groups
            .get(group)
            .is_some_and(|g| g.members.contains_key(id))
    };
    Some(match change {
        Change::CreateGroup { group, .. } => actual.groups.contains_key(group),
        Change::AddMember {
            group, account_id, ..
        } => member(group, account_id),
        Change::RemoveMember {
            group, account_id, ..
        } => !member(group, account_id),
        Change::SetGrant {
            repo,
            group,
            permission,
            ..
        } => actual.grants.get(&(repo.clone(), group.clone())) == Some(permission),
        Change::RemoveGrant { repo, group, .. } => {
            !actual.grants.contains_key(&(repo.clone(), group.clone()))
        }
        Change::SetProjectGrant {
            project,
            group,
            permission,
            ..
        } => {
            let key = (project.clone(), group.clone());
            match actual.project_grants.get(&key) {
                Some(p) => p == permission,
                None => return None,
            }
        }
        Change::RemoveProjectGrant { project, group, .. } => {
            if actual
                .project_grants
                .contains_key(&(project.clone(), group.clone()))
            {
                false
            } else {
                return None;
            }
        }
        Change::RemoveUserGrant {
            target, account_id, ..
        } => {
            if actual
                .direct_grants
                .contains_key(&(target.clone(), account_id.clone()))
            {
                false
            } else {
                return None;
            }
        }
        // Not read in bulk: asked of the organisation directory, or the invitations.
        Change::SuspendInOrg { .. }
        | Change::RestoreInOrg { .. }
        | Change::InviteToGroup { .. } => return None,
    })
}

/// One targeted read for what the bulk read does not cover.
async fn read_one(
    change: &Change,
    clients: &Clients,
    org: Option<&AdminApi>,
) -> Result<bool, ApiError> {
    // An organisation suspension or restore: the person's status in the directory.
    if let Change::SuspendInOrg { account_id, .. } | Change::RestoreInOrg { account_id, .. } =
        change
    {
        let Some(org) = org else {
            return Err(ApiError::NoCredential {
                family:
                    "admin_api (an interrupted organisation suspension is settled with [admin_api])",
            });
        };
        let want = match change {
            Change::SuspendInOrg { .. } => OrgStatus::Suspended,
            _ => OrgStatus::Active,
        };
        let users = org.org_users(std::slice::from_ref(account_id)).await?;
        return Ok(users.get(account_id).map(|u| u.status) == Some(want));
    }
    if let Change::InviteToGroup { group, email } = change {
        let pending = clients
            .get(ApiFamily::GroupsRead)
            .group_invitations()
            .await?;
        return Ok(pending.contains(&(
            crate::model::Email::new(email).folded().to_owned(),
            group.clone(),
        )));
    }
    let read = clients.get(ApiFamily::PermissionsRead);
    // Membership changes are covered by the bulk read.
    Ok(super::shows_grant(read, change).await?.unwrap_or(false))
}

/// Where the scan offset of an audit file is kept.
pub fn offset_path(audit_file: &Path) -> PathBuf {
    let mut name = audit_file.as_os_str().to_owned();
    name.push(".offset");
    PathBuf::from(name)
}

fn load_offset(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn save_offset(path: &Path, offset: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("offset.tmp");
    std::fs::write(&tmp, format!("{offset}\n"))?;
    std::fs::rename(&tmp, path)
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recovered {
    /// Open intents Bitbucket shows as done.
    pub done: usize,
    /// Open intents Bitbucket does not show (the plan makes them again if still wanted).
    pub not_done: usize,
    /// Open intents that could not be settled this time (a read failed); kept for next time.
    pub unsettled: usize,
    /// The organisation suspensions and restores found done (the state file keeps whom bbsync
    /// suspended).
    #[serde(skip)]
    pub org_done: Vec<Change>,
}

/// Settles the open intents of the audit trail (a file; the log has none to read).
pub async fn recover(
    audit: &Audit,
    run_id: &str,
    actual: &Actual,
    clients: &Clients,
    org: Option<&AdminApi>,
) -> std::io::Result<Recovered> {
    let Some(path) = audit.path() else {
        return Ok(Recovered::default());
    };
    // A device or a pipe (`/dev/full` in tests, a FIFO to a collector) has no history to read.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(Recovered::default());
    }
    let offset_file = offset_path(path);
    let scan = audit::scan(path, load_offset(&offset_file))?;
    let mut out = Recovered::default();
    let mut open: Vec<&Dangling> = Vec::new();
    for d in &scan.dangling {
        let seen = match observed_done(&d.change, actual) {
            Some(b) => Ok(b),
            None => read_one(&d.change, clients, org).await,
        };
        match seen {
            Ok(done) => {
                audit.recovered(run_id, d, done)?;
                tracing::warn!(change = %d.change, intent = d.id, done, "a change from an interrupted run had no outcome; Bitbucket {} it", if done { "shows" } else { "does not show" });
                if done {
                    out.done += 1;
                    if matches!(
                        d.change,
                        Change::SuspendInOrg { .. } | Change::RestoreInOrg { .. }
                    ) {
                        out.org_done.push(d.change.clone());
                    }
                } else {
                    out.not_done += 1;
                }
            }
            Err(e) => {
                tracing::warn!(change = %d.change, intent = d.id, error = %e, "cannot settle a change of an interrupted run yet; trying again next run");
                out.unsettled += 1;
                open.push(d);
            }
        }
    }
    // Past an intent only once it is closed.
    let offset = if open.is_empty() {
        scan.end
    } else {
        scan.resume
    };
    save_offset(&offset_file, offset)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        synthetic_account_id, AccountId, GroupSlug, Permission, ProjectKey, RepoSlug,
    };
    use crate::plan::{ActualGroup, ActualMember};

    #[test]
    fn what_the_bulk_read_shows_settles_an_intent() {
        let ann = AccountId::parse(&synthetic_account_id("ann")).expect("id");
        let dev = GroupSlug::from_name("developers");
        let mut actual = Actual::default();
        actual.groups.insert(
            dev.clone(),
            ActualGroup {
                name: "Developers".into(),
                members: [(
                    ann.clone(),
                    ActualMember {
                        display_name: "Ann".into(),
                    },
                )]
                .into(),
            },
        );
        actual
            .grants
            .insert((RepoSlug::new("api"), dev.clone()), Permission::Write);
        let add = Change::AddMember {
            group: dev.clone(),
            account_id: ann.clone(),
            display_name: "Ann".into(),
        };
        let remove = Change::RemoveMember {
            group: dev.clone(),
            account_id: ann.clone(),
            display_name: "Ann".into(),
        };
        assert_eq!(observed_done(&add, &actual), Some(true));
        assert_eq!(observed_done(&remove, &actual), Some(false));
        let grant = |p| Change::SetGrant {
            repo: RepoSlug::new("api"),
            group: dev.clone(),
            permission: p,
            previous: None,
        };
        assert_eq!(
            observed_done(&grant(Permission::Write), &actual),
            Some(true)
        );
        assert_eq!(
            observed_done(&grant(Permission::Admin), &actual),
            Some(false)
        );
        let create = Change::CreateGroup {
            group: GroupSlug::from_name("ops"),
            name: "Ops".into(),
        };
        assert_eq!(observed_done(&create, &actual), Some(false));
        // Project grants the bulk read did not list need a targeted read.
        let project = Change::RemoveProjectGrant {
            project: ProjectKey::new("PROJ"),
            group: dev,
            previous: crate::model::ProjectPermission::Read,
        };
        assert_eq!(observed_done(&project, &actual), None);
    }

    #[test]
    fn the_offset_sits_beside_the_audit_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("audit.jsonl");
        let o = offset_path(&f);
        assert_eq!(o, dir.path().join("audit.jsonl.offset"));
        assert_eq!(load_offset(&o), 0);
        save_offset(&o, 1234).expect("save");
        assert_eq!(load_offset(&o), 1234);
    }
}
