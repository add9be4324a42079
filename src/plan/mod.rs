//! The planner: `plan(desired, actual, policy) -> Plan`. Pure, no I/O.
//!
//! It diffs three sets like ldap2pg does (wanted, actual, managed): it adds what is missing,
//! changes what drifted and removes only what it manages: members of configured groups, and
//! grants of grant-rule groups on repositories the rules select. Everything else in the
//! workspace is invisible to it. Revocations come first so a leaver loses access before anything
//! else is done.

use crate::family::{ApiFamily, CredentialKind};
use crate::mapping::Desired;
use crate::model::{AccountId, GroupSlug, Permission, RepoSlug};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// A member of a Bitbucket group as read from Bitbucket, by account id. How a backend names
/// the member in its own API (1.0 wants the UUID) stays inside that backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActualMember {
    pub display_name: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ActualGroup {
    pub name: String,
    pub members: BTreeMap<AccountId, ActualMember>,
}

/// Bitbucket as read, in bulk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Actual {
    pub groups: BTreeMap<GroupSlug, ActualGroup>,
    /// Repository grants of groups: (repo, group) -> permission.
    pub grants: BTreeMap<(RepoSlug, GroupSlug), Permission>,
}

/// Why a member is removed from a managed group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemovalReason {
    /// The directory says the person left; `fact` is what it says (`nsAccountLock=TRUE`).
    Leaver { fact: String },
    /// No mapped directory group (any more) contains the person.
    NotWanted,
}

impl fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemovalReason::Leaver { fact } => write!(f, "left the company ({fact})"),
            RemovalReason::NotWanted => f.write_str("not in the mapped directory group(s)"),
        }
    }
}

/// One idempotent operation against Bitbucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    RemoveMember {
        group: GroupSlug,
        account_id: AccountId,
        display_name: String,
        reason: RemovalReason,
    },
    RemoveGrant {
        repo: RepoSlug,
        group: GroupSlug,
        previous: Permission,
    },
    CreateGroup {
        group: GroupSlug,
        name: String,
    },
    AddMember {
        group: GroupSlug,
        account_id: AccountId,
        display_name: String,
    },
    SetGrant {
        repo: RepoSlug,
        group: GroupSlug,
        permission: Permission,
        previous: Option<Permission>,
    },
}

/// The kinds of [`Change`], for metric labels and summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    RemoveMember,
    RemoveGrant,
    CreateGroup,
    AddMember,
    SetGrant,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::RemoveMember => "remove_member",
            ChangeKind::RemoveGrant => "remove_grant",
            ChangeKind::CreateGroup => "create_group",
            ChangeKind::AddMember => "add_member",
            ChangeKind::SetGrant => "set_grant",
        }
    }
}

impl Change {
    /// Takes access away (removal or downgrade): guarded, and applied first.
    pub fn is_revocation(&self) -> bool {
        match self {
            Change::RemoveMember { .. } | Change::RemoveGrant { .. } => true,
            Change::SetGrant {
                permission,
                previous: Some(prev),
                ..
            } => permission < prev,
            _ => false,
        }
    }

    /// Deletes something (as opposed to creating or changing it): credentials may hold the
    /// right to one and not the other.
    pub fn is_deletion(&self) -> bool {
        matches!(
            self,
            Change::RemoveMember { .. } | Change::RemoveGrant { .. }
        )
    }

    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::RemoveMember { .. } => ChangeKind::RemoveMember,
            Change::RemoveGrant { .. } => ChangeKind::RemoveGrant,
            Change::CreateGroup { .. } => ChangeKind::CreateGroup,
            Change::AddMember { .. } => ChangeKind::AddMember,
            Change::SetGrant { .. } => ChangeKind::SetGrant,
        }
    }

    /// The group a change targets.
    pub fn group(&self) -> &GroupSlug {
        match self {
            Change::RemoveMember { group, .. }
            | Change::RemoveGrant { group, .. }
            | Change::CreateGroup { group, .. }
            | Change::AddMember { group, .. }
            | Change::SetGrant { group, .. } => group,
        }
    }

    fn order(&self) -> u8 {
        match self {
            Change::RemoveMember { .. } => 0,
            Change::RemoveGrant { .. } => 1,
            c if c.is_revocation() => 2,
            Change::CreateGroup { .. } => 3,
            Change::AddMember { .. } => 4,
            Change::SetGrant { .. } => 5,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::RemoveMember {
                group,
                account_id,
                display_name,
                reason,
            } => write!(
                f,
                "remove {display_name} ({account_id}) from group {group}: {reason}"
            ),
            Change::RemoveGrant {
                repo,
                group,
                previous,
            } => {
                write!(f, "revoke {previous} on {repo} from group {group}")
            }
            Change::CreateGroup { name, .. } => write!(f, "create group {name:?}"),
            Change::AddMember {
                group,
                account_id,
                display_name,
            } => write!(f, "add {display_name} ({account_id}) to group {group}"),
            Change::SetGrant {
                repo,
                group,
                permission,
                previous,
            } => match previous {
                Some(p) => write!(f, "change group {group} on {repo}: {p} -> {permission}"),
                None => write!(f, "grant {permission} on {repo} to group {group}"),
            },
        }
    }
}

/// Why a change is not sent. Each is a decision, not a failure of the call itself; the label
/// is a metric label, the message says what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// More revocations than `safety.max_removals`: every revocation is held back.
    SafetyGuard { revocations: usize, limit: usize },
    /// The credential serving the family cannot do this (its kind, or its scopes).
    CredentialCannot {
        family: ApiFamily,
        credential: String,
        kind: CredentialKind,
        detail: String,
    },
    /// The credential was rejected, or does not see the workspace, when it was introduced.
    CredentialRejected {
        family: ApiFamily,
        credential: String,
        detail: String,
    },
    /// The family was refused (401/403/405) earlier in this run.
    RefusedEarlier {
        family: ApiFamily,
        credential: String,
        error: String,
    },
    /// A grant to a group that does not exist in Bitbucket and is not a managed group.
    MissingGroup { group: GroupSlug },
    /// A membership or grant change for a group whose creation failed or was blocked.
    GroupNotCreated { group: GroupSlug, why: String },
    /// The person is not a member of the workspace (1.0 groups only take members).
    NotWorkspaceMember,
    /// The audit trail cannot be written: nothing more is applied.
    AuditUnavailable { error: String },
}

impl BlockReason {
    /// Low-cardinality label for metrics and summaries.
    pub fn label(&self) -> &'static str {
        match self {
            BlockReason::SafetyGuard { .. } => "safety_guard",
            BlockReason::CredentialCannot { .. } => "credential_cannot",
            BlockReason::CredentialRejected { .. } => "credential_rejected",
            BlockReason::RefusedEarlier { .. } => "refused_earlier",
            BlockReason::MissingGroup { .. } => "missing_group",
            BlockReason::GroupNotCreated { .. } => "group_not_created",
            BlockReason::NotWorkspaceMember => "not_workspace_member",
            BlockReason::AuditUnavailable { .. } => "audit_unavailable",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::SafetyGuard { revocations, limit } => write!(
                f,
                "safety: {revocations} revocations exceed safety.max_removals = {limit}; none applied"
            ),
            BlockReason::CredentialCannot {
                family,
                credential,
                kind,
                detail,
            } => write!(f, "{family} with credential {credential:?} ({kind}): {detail}"),
            BlockReason::CredentialRejected {
                family,
                credential,
                detail,
            } => write!(f, "{family} with credential {credential:?}: {detail}"),
            BlockReason::RefusedEarlier {
                family,
                credential,
                error,
            } => write!(
                f,
                "{family} (credential {credential:?}) was refused earlier in this run: {error}"
            ),
            BlockReason::MissingGroup { group } => write!(
                f,
                "group {group} does not exist in Bitbucket and is not a managed [[groups]] entry"
            ),
            BlockReason::GroupNotCreated { group, why } => {
                write!(f, "group {group} was not created: {why}")
            }
            BlockReason::NotWorkspaceMember => f.write_str(
                "not a member of the workspace: invite them first (1.0 groups only take workspace members)",
            ),
            BlockReason::AuditUnavailable { error } => write!(
                f,
                "the audit trail cannot be written ({error}); nothing more is applied"
            ),
        }
    }
}

/// Serialised as `{"kind": label, "message": text}`.
impl Serialize for BlockReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("BlockReason", 2)?;
        st.serialize_field("kind", self.label())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// A change and, if it must not be applied, why.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    #[serde(flatten)]
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<BlockReason>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Planned>,
    /// Things the operator should know that are not changes (skipped people, unknown groups).
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
    pub fn runnable(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|p| p.blocked.is_none())
            .map(|p| &p.change)
    }
    pub fn blocked(&self) -> impl Iterator<Item = &Planned> {
        self.changes.iter().filter(|p| p.blocked.is_some())
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// Most revocations one run may apply (0: none).
    pub max_removals: usize,
}

/// Computes the changes that make `actual` equal `desired` within the managed scope.
pub fn plan(desired: &Desired, actual: &Actual, policy: &Policy) -> Plan {
    let mut changes: Vec<Change> = Vec::new();
    let mut warnings = Vec::new();

    // Bitbucket generates slugs itself; a group whose slug differs from the one derived from its
    // name (special characters, a rename) is still found by name rather than created again.
    let resolve = |slug: &GroupSlug| -> GroupSlug {
        if actual.groups.contains_key(slug) {
            return slug.clone();
        }
        let name = desired
            .groups
            .get(slug)
            .map_or(slug.as_str(), |d| d.name.as_str());
        actual
            .groups
            .iter()
            .find(|(_, g)| g.name.eq_ignore_ascii_case(name))
            .map_or_else(|| slug.clone(), |(s, _)| s.clone())
    };

    for (wanted_slug, want) in &desired.groups {
        let slug = &resolve(wanted_slug);
        let have = actual.groups.get(slug);
        if have.is_none() {
            if want.create {
                changes.push(Change::CreateGroup {
                    group: slug.clone(),
                    name: want.name.clone(),
                });
            } else {
                warnings.push(format!(
                    "Bitbucket group {slug} does not exist and groups.create is false: its members are not synced"
                ));
                continue;
            }
        }
        for (id, w) in &want.members {
            if desired.frozen.contains(id) {
                continue;
            }
            if have.is_none_or(|g| !g.members.contains_key(id)) {
                changes.push(Change::AddMember {
                    group: slug.clone(),
                    account_id: id.clone(),
                    display_name: w.display_name.clone(),
                });
            }
        }
        for (id, m) in have.map(|g| &g.members).into_iter().flatten() {
            if want.members.contains_key(id) || desired.frozen.contains(id) {
                continue;
            }
            let reason = match desired.leavers.get(id) {
                Some(l) => RemovalReason::Leaver {
                    fact: l.reason.clone(),
                },
                None => RemovalReason::NotWanted,
            };
            changes.push(Change::RemoveMember {
                group: slug.clone(),
                account_id: id.clone(),
                display_name: m.display_name.clone(),
                reason,
            });
        }
    }

    let will_exist = |g: &GroupSlug| {
        actual.groups.contains_key(g) || desired.groups.get(g).is_some_and(|d| d.create)
    };
    let grant_groups: BTreeMap<GroupSlug, GroupSlug> = desired
        .grant_groups
        .iter()
        .map(|g| (resolve(g), g.clone()))
        .collect();
    for ((repo, wanted_group), perm) in &desired.grants {
        let group = resolve(wanted_group);
        let previous = actual.grants.get(&(repo.clone(), group.clone())).copied();
        if previous != Some(*perm) {
            changes.push(Change::SetGrant {
                repo: repo.clone(),
                group,
                permission: *perm,
                previous,
            });
        }
    }
    for ((repo, group), prev) in &actual.grants {
        let Some(wanted_group) = grant_groups.get(group) else {
            continue;
        };
        let managed = desired.repo_scope.contains(repo);
        if managed
            && !desired
                .grants
                .contains_key(&(repo.clone(), wanted_group.clone()))
        {
            changes.push(Change::RemoveGrant {
                repo: repo.clone(),
                group: group.clone(),
                previous: *prev,
            });
        }
    }

    changes.sort_by_key(Change::order);
    let revocations = changes.iter().filter(|c| c.is_revocation()).count();
    let too_many = revocations > policy.max_removals;
    let mut missing_groups = std::collections::BTreeSet::new();
    let changes = changes
        .into_iter()
        .map(|change| {
            let blocked = if too_many && change.is_revocation() {
                Some(BlockReason::SafetyGuard {
                    revocations,
                    limit: policy.max_removals,
                })
            } else if let Change::SetGrant { group, .. } = &change {
                (!will_exist(group)).then(|| {
                    missing_groups.insert(group.clone());
                    BlockReason::MissingGroup {
                        group: group.clone(),
                    }
                })
            } else {
                None
            };
            Planned { change, blocked }
        })
        .collect();
    for g in missing_groups {
        warnings.push(format!(
            "grant rules name group {g}, which does not exist in Bitbucket"
        ));
    }
    Plan { changes, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{DesiredGroup, Leaver, Wanted};

    fn id(s: &str) -> AccountId {
        AccountId::parse(&crate::model::synthetic_account_id(s)).expect("id")
    }
    fn g(s: &str) -> GroupSlug {
        GroupSlug::from_name(s)
    }
    fn r(s: &str) -> RepoSlug {
        RepoSlug::new(s)
    }
    fn member(name: &str) -> ActualMember {
        ActualMember {
            display_name: name.into(),
        }
    }
    const POLICY: Policy = Policy { max_removals: 50 };

    fn desired_devs(members: &[&str]) -> Desired {
        let mut d = Desired::default();
        d.groups.insert(
            g("developers"),
            DesiredGroup {
                name: "Developers".into(),
                create: true,
                members: members
                    .iter()
                    .map(|m| {
                        (
                            id(m),
                            Wanted {
                                display_name: m.to_string(),
                            },
                        )
                    })
                    .collect(),
            },
        );
        d
    }

    fn actual_devs(members: &[&str]) -> Actual {
        let mut a = Actual::default();
        a.groups.insert(
            g("developers"),
            ActualGroup {
                name: "Developers".into(),
                members: members.iter().map(|m| (id(m), member(m))).collect(),
            },
        );
        a
    }

    #[test]
    fn metric_labels_are_the_names_the_json_report_uses() {
        for k in [
            ChangeKind::RemoveMember,
            ChangeKind::RemoveGrant,
            ChangeKind::CreateGroup,
            ChangeKind::AddMember,
            ChangeKind::SetGrant,
        ] {
            assert_eq!(serde_json::to_value(k).expect("json"), k.label());
        }
        let c = Change::CreateGroup {
            group: g("ops"),
            name: "Ops".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).expect("json")["op"],
            c.kind().label()
        );
        let b = BlockReason::MissingGroup { group: g("ops") };
        assert_eq!(
            serde_json::to_value(&b).expect("json"),
            serde_json::json!({"kind": "missing_group", "message": b.to_string()})
        );
    }

    #[test]
    fn deletions_are_removals_while_a_downgrade_is_a_put() {
        let remove = Change::RemoveGrant {
            repo: r("api"),
            group: g("devs"),
            previous: Permission::Read,
        };
        let lower = Change::SetGrant {
            repo: r("api"),
            group: g("devs"),
            permission: Permission::Read,
            previous: Some(Permission::Admin),
        };
        let leave = Change::RemoveMember {
            group: g("devs"),
            account_id: id("bob"),
            display_name: "Bob".into(),
            reason: RemovalReason::NotWanted,
        };
        assert!(remove.is_deletion() && leave.is_deletion());
        assert!(!lower.is_deletion(), "a downgrade is written with PUT");
        assert!(lower.is_revocation());
        let add = Change::AddMember {
            group: g("devs"),
            account_id: id("ann"),
            display_name: "Ann".into(),
        };
        assert!(!add.is_deletion() && !add.is_revocation());
    }

    #[test]
    fn a_downgrade_goes_before_every_addition() {
        let mut d = desired_devs(&["ann"]);
        d.grant_groups.insert(g("developers"));
        d.repo_scope.insert(r("api"));
        d.grants
            .insert((r("api"), g("developers")), Permission::Read);
        let mut a = Actual::default();
        a.grants
            .insert((r("api"), g("developers")), Permission::Admin);
        let p = plan(&d, &a, &POLICY);
        let ops: Vec<String> = p.changes.iter().map(|c| c.change.to_string()).collect();
        assert_eq!(
            ops,
            [
                "change group developers on api: admin -> read",
                "create group \"Developers\"",
                format!("add ann ({}) to group developers", id("ann")).as_str(),
            ]
        );
    }

    #[test]
    fn in_sync_means_no_changes() {
        let p = plan(
            &desired_devs(&["ann", "bob"]),
            &actual_devs(&["ann", "bob"]),
            &POLICY,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_leaver_is_removed_first_and_the_reason_says_why() {
        let mut d = desired_devs(&["ann", "cid"]);
        d.leavers.insert(
            id("bob"),
            Leaver {
                display_name: "bob".into(),
                reason: "nsAccountLock=TRUE".into(),
            },
        );
        let p = plan(&d, &actual_devs(&["ann", "bob"]), &POLICY);
        let ops: Vec<String> = p.changes.iter().map(|c| c.change.to_string()).collect();
        assert_eq!(
            ops,
            [
                format!(
                    "remove bob ({}) from group developers: left the company (nsAccountLock=TRUE)",
                    id("bob")
                ),
                format!("add cid ({}) to group developers", id("cid"))
            ]
        );
    }

    #[test]
    fn a_missing_group_is_created_before_members_are_added() {
        let p = plan(&desired_devs(&["ann"]), &Actual::default(), &POLICY);
        let kinds: Vec<_> = p.changes.iter().map(|c| c.change.kind()).collect();
        assert_eq!(kinds, [ChangeKind::CreateGroup, ChangeKind::AddMember]);
    }

    #[test]
    fn protected_identities_are_neither_added_nor_removed() {
        let mut d = desired_devs(&["ann"]);
        d.frozen.insert(id("twin"));
        let p = plan(&d, &actual_devs(&["ann", "twin"]), &POLICY);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn only_managed_grants_are_touched() {
        let mut d = Desired::default();
        d.grant_groups.insert(g("contractors"));
        d.repo_scope.insert(r("api"));
        d.repo_scope.insert(r("web"));
        d.grants
            .insert((r("api"), g("contractors")), Permission::Write);
        let mut a = Actual::default();
        a.groups.insert(g("contractors"), ActualGroup::default());
        a.grants
            .insert((r("api"), g("contractors")), Permission::Admin); // drifted: downgrade
        a.grants
            .insert((r("web"), g("contractors")), Permission::Read); // managed, unwanted: remove
        a.grants
            .insert((r("docs"), g("contractors")), Permission::Read); // repo out of scope
        a.grants
            .insert((r("api"), g("release-bots")), Permission::Admin); // group not managed
        let p = plan(&d, &a, &POLICY);
        let ops: Vec<String> = p.changes.iter().map(|c| c.change.to_string()).collect();
        assert_eq!(
            ops,
            [
                "revoke read on web from group contractors",
                "change group contractors on api: admin -> write"
            ]
        );
        assert!(p.changes.iter().all(|c| c.change.is_revocation()));
    }

    #[test]
    fn too_many_revocations_block_every_revocation_but_not_additions() {
        let members: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let p = plan(
            &desired_devs(&["new"]),
            &actual_devs(&refs),
            &Policy { max_removals: 3 },
        );
        assert_eq!(p.blocked().count(), 5);
        assert!(p.blocked().all(|b| b.change.is_revocation()));
        assert_eq!(
            p.runnable().map(Change::kind).collect::<Vec<_>>(),
            [ChangeKind::AddMember]
        );
        assert!(p.blocked().all(|b| matches!(
            b.blocked,
            Some(BlockReason::SafetyGuard {
                revocations: 5,
                limit: 3
            })
        )));
    }

    #[test]
    fn exactly_as_many_revocations_as_the_limit_go_ahead() {
        let p = plan(
            &desired_devs(&[]),
            &actual_devs(&["p0", "p1", "p2"]),
            &Policy { max_removals: 3 },
        );
        assert_eq!(p.blocked().count(), 0, "3 revocations, limit 3: {p:?}");
        assert_eq!(p.runnable().count(), 3);
        let none = plan(
            &desired_devs(&[]),
            &actual_devs(&["p0"]),
            &Policy { max_removals: 0 },
        );
        assert_eq!(
            none.blocked().count(),
            1,
            "a limit of 0 allows no revocation"
        );
    }

    #[test]
    fn a_group_whose_slug_bitbucket_chose_differently_is_found_by_name_not_created_again() {
        let mut d = desired_devs(&["ann"]);
        d.grant_groups.insert(g("developers"));
        d.repo_scope.insert(r("api"));
        d.grants
            .insert((r("api"), g("developers")), Permission::Read);
        let mut a = Actual::default();
        a.groups.insert(
            g("developers-1"),
            ActualGroup {
                name: "DEVELOPERS".into(),
                members: [(id("ann"), member("ann"))].into_iter().collect(),
            },
        );
        a.grants
            .insert((r("api"), g("developers-1")), Permission::Read);
        let p = plan(&d, &a, &POLICY);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_grant_to_a_group_that_will_not_exist_is_blocked() {
        let mut d = Desired::default();
        d.grant_groups.insert(g("ghost"));
        d.repo_scope.insert(r("api"));
        d.grants.insert((r("api"), g("ghost")), Permission::Read);
        let p = plan(&d, &Actual::default(), &POLICY);
        assert_eq!(p.blocked().count(), 1);
        assert_eq!(p.warnings.len(), 1);
    }
}
