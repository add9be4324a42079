//! The planner: `plan(desired, actual, policy) -> Plan`. Pure, no I/O.
//!
//! It diffs three sets like ldap2pg does (wanted, actual, managed): it adds what is missing,
//! changes what drifted and removes only what it manages: members of the managed groups, their
//! grants on the managed repositories and projects, and the direct grants of people who left
//! on those. Everything else in the workspace is invisible to it. Every change carries its
//! reason; what it leaves alone on purpose is listed as skipped, with why. Revocations come
//! first, leavers' first of all, so someone who left loses access before anything else is done.

use crate::family::{ApiFamily, CredentialKind};
use crate::mapping::{Desired, RuleNote, WantedGrant};
use crate::model::{
    AccountId, GrantTarget, GroupSlug, Permission, ProjectKey, ProjectPermission, RepoSlug,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

/// A member of a Bitbucket group as read from Bitbucket, by account id. How a backend names
/// the member in its own API (1.0 wants the UUID) stays inside that backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualMember {
    pub display_name: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    /// Project grants of groups on the managed projects.
    pub project_grants: BTreeMap<(ProjectKey, GroupSlug), ProjectPermission>,
    /// Direct (per-user) grants of offboarded people on managed repositories and projects:
    /// (target, account) -> the permission word.
    pub direct_grants: BTreeMap<(GrantTarget, AccountId), String>,
    /// Pending 1.0 invitations by email into managed groups: (email case-folded, group). Read
    /// only when invitations are wanted (`source.invite_unresolved`).
    pub invitations: BTreeSet<(String, GroupSlug)>,
    /// Where the people whose organisation suspension is managed stand in the organisation
    /// directory (`offboarding.suspend_in_org`; empty when it is off). Someone not listed was
    /// not read (or has a status bbsync does not know): nothing is planned for them.
    pub org_users: BTreeMap<AccountId, OrgUser>,
}

/// A person's membership of the organisation directory (`membershipStatus` of the Admin
/// API's users search).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    Active,
    Suspended,
    /// Not in the directory: nothing to suspend or restore.
    NoMembership,
}

/// A person as the organisation directory has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUser {
    pub status: OrgStatus,
    pub name: String,
}

/// Why a change is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A rule wants it: `rule` names it (`groups[0]`, `grants[2]`), `detail` says how.
    Rule { rule: String, detail: String },
    /// The directory says the person left; `fact` is what it says (`nsAccountLock=TRUE`).
    Leaver { fact: String },
    /// No directory entry has this account id any more, since `since` (RFC 3339).
    Vanished { since: String },
    /// Bitbucket has more than the rules give.
    Drift { detail: String },
}

impl Reason {
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Rule { .. } => "rule",
            Reason::Leaver { .. } => "leaver",
            Reason::Vanished { .. } => "vanished",
            Reason::Drift { .. } => "drift",
        }
    }

    /// Off-boarding (a leaver, or someone vanished): applied before anything else.
    pub fn is_offboarding(&self) -> bool {
        matches!(self, Reason::Leaver { .. } | Reason::Vanished { .. })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rule { rule, detail } => write!(f, "{rule}: {detail}"),
            Reason::Leaver { fact } => write!(f, "left the company ({fact})"),
            Reason::Vanished { since } => {
                write!(
                    f,
                    "no directory entry has this account id (missing since {since})"
                )
            }
            Reason::Drift { detail } => write!(f, "drift: {detail}"),
        }
    }
}

/// One idempotent operation against Bitbucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    RemoveMember {
        group: GroupSlug,
        account_id: AccountId,
        display_name: String,
    },
    /// A direct (per-user) grant of someone who left.
    RemoveUserGrant {
        target: GrantTarget,
        account_id: AccountId,
        display_name: String,
        previous: String,
    },
    RemoveGrant {
        repo: RepoSlug,
        group: GroupSlug,
        previous: Permission,
    },
    RemoveProjectGrant {
        project: ProjectKey,
        group: GroupSlug,
        previous: ProjectPermission,
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
    SetProjectGrant {
        project: ProjectKey,
        group: GroupSlug,
        permission: ProjectPermission,
        previous: Option<ProjectPermission>,
    },
    /// Suspends an offboarded person in the organisation directory (Admin API), after their
    /// memberships and direct grants are gone (`offboarding.suspend_in_org`).
    SuspendInOrg {
        account_id: AccountId,
        display_name: String,
    },
    /// Restores someone bbsync suspended, now active in the directory again.
    RestoreInOrg {
        account_id: AccountId,
        display_name: String,
    },
    /// Invites an email into a group (1.0 invitations): someone the rules place there whom no
    /// resolver found an account id for (`source.invite_unresolved`).
    InviteToGroup {
        group: GroupSlug,
        email: String,
    },
}

/// The kinds of [`Change`], for metric labels and summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    RemoveMember,
    RemoveUserGrant,
    RemoveGrant,
    RemoveProjectGrant,
    CreateGroup,
    AddMember,
    SetGrant,
    SetProjectGrant,
    SuspendInOrg,
    RestoreInOrg,
    InviteToGroup,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::RemoveMember => "remove_member",
            ChangeKind::RemoveUserGrant => "remove_user_grant",
            ChangeKind::RemoveGrant => "remove_grant",
            ChangeKind::RemoveProjectGrant => "remove_project_grant",
            ChangeKind::CreateGroup => "create_group",
            ChangeKind::AddMember => "add_member",
            ChangeKind::SetGrant => "set_grant",
            ChangeKind::SetProjectGrant => "set_project_grant",
            ChangeKind::SuspendInOrg => "suspend_in_org",
            ChangeKind::RestoreInOrg => "restore_in_org",
            ChangeKind::InviteToGroup => "invite_to_group",
        }
    }
}

impl Change {
    /// Takes access away (removal or downgrade): guarded, and applied first.
    pub fn is_revocation(&self) -> bool {
        match self {
            Change::RemoveMember { .. }
            | Change::RemoveUserGrant { .. }
            | Change::RemoveGrant { .. }
            | Change::RemoveProjectGrant { .. }
            | Change::SuspendInOrg { .. } => true,
            Change::SetGrant {
                permission,
                previous: Some(prev),
                ..
            } => permission < prev,
            Change::SetProjectGrant {
                permission,
                previous: Some(prev),
                ..
            } => permission < prev,
            _ => false,
        }
    }

    /// Written by the membership backend (a group or one of its memberships).
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Change::RemoveMember { .. }
                | Change::AddMember { .. }
                | Change::CreateGroup { .. }
                | Change::InviteToGroup { .. }
        )
    }

    /// Deletes something (as opposed to creating or changing it): credentials may hold the
    /// right to one and not the other.
    pub fn is_deletion(&self) -> bool {
        matches!(
            self,
            Change::RemoveMember { .. }
                | Change::RemoveUserGrant { .. }
                | Change::RemoveGrant { .. }
                | Change::RemoveProjectGrant { .. }
        )
    }

    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::RemoveMember { .. } => ChangeKind::RemoveMember,
            Change::RemoveUserGrant { .. } => ChangeKind::RemoveUserGrant,
            Change::RemoveGrant { .. } => ChangeKind::RemoveGrant,
            Change::RemoveProjectGrant { .. } => ChangeKind::RemoveProjectGrant,
            Change::CreateGroup { .. } => ChangeKind::CreateGroup,
            Change::AddMember { .. } => ChangeKind::AddMember,
            Change::SetGrant { .. } => ChangeKind::SetGrant,
            Change::SetProjectGrant { .. } => ChangeKind::SetProjectGrant,
            Change::SuspendInOrg { .. } => ChangeKind::SuspendInOrg,
            Change::RestoreInOrg { .. } => ChangeKind::RestoreInOrg,
            Change::InviteToGroup { .. } => ChangeKind::InviteToGroup,
        }
    }

    /// The group a change targets (a direct user grant has none).
    pub fn group(&self) -> Option<&GroupSlug> {
        match self {
            Change::RemoveMember { group, .. }
            | Change::RemoveGrant { group, .. }
            | Change::RemoveProjectGrant { group, .. }
            | Change::CreateGroup { group, .. }
            | Change::AddMember { group, .. }
            | Change::SetGrant { group, .. }
            | Change::SetProjectGrant { group, .. }
            | Change::InviteToGroup { group, .. } => Some(group),
            Change::RemoveUserGrant { .. }
            | Change::SuspendInOrg { .. }
            | Change::RestoreInOrg { .. } => None,
        }
    }

    /// The person a change is about (a group or grant change has none).
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            Change::RemoveMember { account_id, .. }
            | Change::RemoveUserGrant { account_id, .. }
            | Change::AddMember { account_id, .. }
            | Change::SuspendInOrg { account_id, .. }
            | Change::RestoreInOrg { account_id, .. } => Some(account_id),
            _ => None,
        }
    }

    /// Apply order: off-boarding first (direct grants before memberships: someone who
    /// vanished is visible to the next run only while they are in a managed group, so their
    /// memberships go last; the organisation suspension after both), then other revocations,
    /// then additions (a restore first).
    fn order(&self, reason: &Reason) -> u8 {
        match self {
            Change::RemoveUserGrant { .. } => 0,
            Change::RemoveMember { .. } if reason.is_offboarding() => 1,
            Change::SuspendInOrg { .. } => 2,
            Change::RemoveMember { .. } => 3,
            Change::RemoveGrant { .. } | Change::RemoveProjectGrant { .. } => 4,
            c if c.is_revocation() => 5,
            Change::RestoreInOrg { .. } => 6,
            Change::CreateGroup { .. } => 7,
            Change::AddMember { .. } | Change::InviteToGroup { .. } => 8,
            _ => 9,
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
            } => write!(f, "remove {display_name} ({account_id}) from group {group}"),
            Change::RemoveUserGrant {
                target,
                account_id,
                display_name,
                previous,
            } => write!(
                f,
                "revoke direct {previous} on {target} from {display_name} ({account_id})"
            ),
            Change::RemoveGrant {
                repo,
                group,
                previous,
            } => write!(f, "revoke {previous} on {repo} from group {group}"),
            Change::RemoveProjectGrant {
                project,
                group,
                previous,
            } => write!(
                f,
                "revoke {previous} on project {project} from group {group}"
            ),
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
            Change::SetProjectGrant {
                project,
                group,
                permission,
                previous,
            } => match previous {
                Some(p) => write!(
                    f,
                    "change group {group} on project {project}: {p} -> {permission}"
                ),
                None => write!(
                    f,
                    "grant {permission} on project {project} to group {group}"
                ),
            },
            Change::SuspendInOrg {
                account_id,
                display_name,
            } => write!(
                f,
                "suspend {display_name} ({account_id}) in the organisation directory"
            ),
            Change::RestoreInOrg {
                account_id,
                display_name,
            } => write!(
                f,
                "restore {display_name} ({account_id}) in the organisation directory"
            ),
            Change::InviteToGroup { group, email } => {
                write!(f, "invite {email} into group {group}")
            }
        }
    }
}

/// Why a change is not sent. Each is a decision, not a failure of the call itself; the label
/// is a metric label, the message says what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// A safety guard tripped: every revocation is held back (additions go ahead) until the
    /// source recovers or a person approves exactly this set.
    SafetyGuard { guard: Guard },
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
    /// The family was refused (401/403/405) earlier in this run, for this kind of change.
    RefusedEarlier {
        family: ApiFamily,
        credential: String,
        error: String,
    },
    /// The family failed this many times in a row (5xx, timeouts, bad answers, after
    /// retries): its circuit is open for the rest of the run.
    CircuitOpen {
        family: ApiFamily,
        failures: u32,
        error: String,
    },
    /// A grant to a group that does not exist in Bitbucket and is not a managed group.
    MissingGroup { group: GroupSlug },
    /// A membership or grant change for a group whose creation failed or was blocked.
    GroupNotCreated { group: GroupSlug, why: String },
    /// The person is not a member of the workspace (1.0 groups only take members).
    NotWorkspaceMember,
    /// The person became a leaver while this apply was running (the off-boarding poll saw
    /// it): an addition for them that had not started is withdrawn.
    BecameLeaver,
    /// A direct grant of this person could not be removed: their memberships stay until it
    /// is (so the next run still sees them).
    DirectGrantsPending { account_id: AccountId },
    /// A membership or direct grant of this person could not be removed: they are not
    /// suspended in the organisation until it is (the next run tries again).
    RemovalsPending { account_id: AccountId },
    /// The audit trail cannot be written: nothing more is applied.
    AuditUnavailable { error: String },
    /// The state file cannot be written before the apply: a vanished person to be suspended
    /// keeps their memberships (the only thing that keeps them visible) until it can.
    StateUnwritable { error: String },
    /// The membership backend cannot write on this workspace (1.0 groups on an
    /// organisation-managed one): `detail` says why and what to set.
    WrongBackend { detail: String },
}

impl BlockReason {
    /// Low-cardinality label for metrics and summaries.
    pub fn label(&self) -> &'static str {
        match self {
            BlockReason::SafetyGuard { .. } => "safety_guard",
            BlockReason::CredentialCannot { .. } => "credential_cannot",
            BlockReason::CredentialRejected { .. } => "credential_rejected",
            BlockReason::RefusedEarlier { .. } => "refused_earlier",
            BlockReason::CircuitOpen { .. } => "circuit_open",
            BlockReason::MissingGroup { .. } => "missing_group",
            BlockReason::GroupNotCreated { .. } => "group_not_created",
            BlockReason::NotWorkspaceMember => "not_workspace_member",
            BlockReason::BecameLeaver => "became_leaver",
            BlockReason::DirectGrantsPending { .. } => "direct_grants_pending",
            BlockReason::RemovalsPending { .. } => "removals_pending",
            BlockReason::AuditUnavailable { .. } => "audit_unavailable",
            BlockReason::StateUnwritable { .. } => "state_unwritable",
            BlockReason::WrongBackend { .. } => "wrong_backend",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::SafetyGuard { guard } => write!(
                f,
                "safety: {guard}; no revocation is applied until the source recovers or the held set is approved (bbsync plan --out FILE, bbsync approve FILE, bbsync apply --plan FILE)"
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
            BlockReason::CircuitOpen {
                family,
                failures,
                error,
            } => write!(
                f,
                "{family} failed {failures} times in a row (last: {error}); its circuit is open until the next run"
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
            BlockReason::BecameLeaver => f.write_str(
                "withdrawn: the person became a leaver while this apply was running",
            ),
            BlockReason::DirectGrantsPending { account_id } => write!(
                f,
                "a direct grant of {account_id} could not be removed; their memberships stay until it is, so the next run still sees them"
            ),
            BlockReason::RemovalsPending { account_id } => write!(
                f,
                "a membership or direct grant of {account_id} could not be removed; they are suspended in the organisation once it is"
            ),
            BlockReason::AuditUnavailable { error } => write!(
                f,
                "the audit trail cannot be written ({error}); nothing more is applied"
            ),
            BlockReason::WrongBackend { detail } => f.write_str(detail),
            BlockReason::StateUnwritable { error } => write!(
                f,
                "the state file cannot be written ({error}): this vanished person keeps their memberships until their suspension can be remembered"
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

/// A safety guard that held this run's revocations back.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Guard {
    /// More revocations than `safety.max_removals`.
    Absolute { revocations: usize, limit: usize },
    /// More than `safety.max_removal_ratio` of the managed memberships and grants.
    Relative {
        revocations: usize,
        managed: usize,
        ratio: f64,
    },
    /// One big group would lose more than `safety.max_group_removal_ratio` of its members.
    Group {
        group: GroupSlug,
        removals: usize,
        members: usize,
        ratio: f64,
    },
    /// The directory has lost more than `safety.max_shrink_ratio` of its people since the
    /// last good read.
    Shrink {
        before: usize,
        now: usize,
        ratio: f64,
    },
}

impl Eq for Guard {}

impl Guard {
    /// Every [`Guard::label`], for metrics whose series exist before the first hold.
    pub const LABELS: [&'static str; 4] = ["absolute", "relative", "group", "shrink"];

    pub fn label(&self) -> &'static str {
        match self {
            Guard::Absolute { .. } => "absolute",
            Guard::Relative { .. } => "relative",
            Guard::Group { .. } => "group",
            Guard::Shrink { .. } => "shrink",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Guard::Absolute { revocations, limit } => write!(
                f,
                "{revocations} revocations exceed safety.max_removals = {limit}"
            ),
            Guard::Relative {
                revocations,
                managed,
                ratio,
            } => write!(
                f,
                "{revocations} revocations of {managed} managed memberships and grants exceed safety.max_removal_ratio = {ratio}"
            ),
            Guard::Group {
                group,
                removals,
                members,
                ratio,
            } => write!(
                f,
                "group {group} would lose {removals} of its {members} members, more than safety.max_group_removal_ratio = {ratio}"
            ),
            Guard::Shrink { before, now, ratio } => write!(
                f,
                "the directory shrank from {before} to {now} people since the last good read, more than safety.max_shrink_ratio = {ratio}"
            ),
        }
    }
}

/// A change, why it is made, and, if it must not be applied, why not.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    #[serde(flatten)]
    pub change: Change,
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<BlockReason>,
}

/// Why something the rules or the directory would change is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// A protected account (configured, or the workspace owner) keeps what it has.
    Protected,
    /// The directory cannot speak for this account (duplicate id or DN, an unusable entry
    /// with its email): it keeps exactly what it has.
    Frozen,
    /// No directory entry has this account id, but the grace has not run out.
    VanishedInGrace { since: String, until: String },
    /// When this person went missing is not known (the state file is unreadable).
    StateUnavailable,
    /// Not a member of the workspace: cannot be added (invite them first).
    NotWorkspaceMember,
}

impl SkipReason {
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Protected => "protected",
            SkipReason::Frozen => "frozen",
            SkipReason::VanishedInGrace { .. } => "vanished_in_grace",
            SkipReason::StateUnavailable => "state_unavailable",
            SkipReason::NotWorkspaceMember => "not_workspace_member",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Protected => f.write_str("protected account: keeps what it has"),
            SkipReason::Frozen => f.write_str(
                "the directory cannot speak for this account (a duplicate or unusable entry): it keeps what it has",
            ),
            SkipReason::VanishedInGrace { since, until } => write!(
                f,
                "no directory entry since {since}; removed after offboarding.missing_grace_secs, at {until}"
            ),
            SkipReason::StateUnavailable => f.write_str(
                "no directory entry, but since when is unknown (the state file could not be read): held until it is re-established",
            ),
            SkipReason::NotWorkspaceMember => {
                f.write_str("not a member of the workspace: cannot be added (invite them first)")
            }
        }
    }
}

/// Something left alone on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// What would have been done (`remove Ann (...) from group developers`).
    pub subject: String,
    pub account_id: Option<AccountId>,
    pub reason: SkipReason,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Planned>,
    /// The guards that held this run's revocations back (empty: none tripped, or the held
    /// set was approved).
    pub held: Vec<Guard>,
    /// Fingerprint of the revocations (what an approval names).
    pub revocations: String,
    /// What is left alone on purpose, with why.
    pub skipped: Vec<Skipped>,
    /// What the operator should know about the rules.
    pub notes: Vec<RuleNote>,
    /// Other things the operator should know that are not changes (unknown groups).
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

    /// Takes the member adds of people who cannot be added (not workspace members) out of the
    /// plan: they are reported as skipped, not as changes that fail.
    pub fn unresolve(&mut self, not_members: &BTreeSet<AccountId>) {
        let mut kept = Vec::with_capacity(self.changes.len());
        for p in std::mem::take(&mut self.changes) {
            match &p.change {
                Change::AddMember { account_id, .. } if not_members.contains(account_id) => {
                    self.skipped.push(Skipped {
                        subject: p.change.to_string(),
                        account_id: Some(account_id.clone()),
                        reason: SkipReason::NotWorkspaceMember,
                    })
                }
                _ => kept.push(p),
            }
        }
        self.changes = kept;
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Policy {
    /// Most revocations one run may apply (0: none).
    pub max_removals: usize,
    /// Largest share of the managed memberships and grants one run may revoke, once there are
    /// at least `min_managed_for_ratio` of them.
    pub max_removal_ratio: f64,
    pub min_managed_for_ratio: usize,
    /// Largest share of one group's members one run may remove, for groups of at least
    /// `big_group` members.
    pub max_group_removal_ratio: f64,
    pub big_group: usize,
    /// Largest share of people the directory may lose since the last good read.
    pub max_shrink_ratio: f64,
    /// People in this read, and in the last good one (`None`: no earlier read known).
    pub people_now: usize,
    pub people_before: Option<usize>,
    /// The fingerprint of a held revocation set a person approved: that exact set goes ahead.
    pub approved: Option<String>,
    /// The time of this run (vanished people's grace is measured against it).
    pub now: SystemTime,
    /// How long someone with no directory entry keeps their access (0: at once).
    pub missing_grace: Duration,
    /// When people went missing is unknown (unreadable state): no vanished removal this run.
    pub vanished_unknown: bool,
    /// `offboarding.suspend_in_org`: offboarded people are suspended in the organisation
    /// directory once their access is gone, and people bbsync suspended are restored when the
    /// directory has them active again.
    #[serde(default)]
    pub suspend_in_org: bool,
    /// Whom bbsync suspended (the state file): the only people it ever restores.
    #[serde(default)]
    pub suspended_by_bbsync: BTreeSet<AccountId>,
    /// Offboarded people whose suspension was planned and not confirmed yet, with why (someone
    /// who vanished is not visible any more once their memberships are gone: `vanished`).
    #[serde(default)]
    pub suspend_pending: BTreeMap<AccountId, Reason>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_removals: 50,
            max_removal_ratio: 0.25,
            min_managed_for_ratio: 20,
            max_group_removal_ratio: 0.25,
            big_group: 20,
            max_shrink_ratio: 0.2,
            people_now: 0,
            people_before: None,
            approved: None,
            now: SystemTime::UNIX_EPOCH,
            missing_grace: Duration::ZERO,
            vanished_unknown: false,
            suspend_in_org: false,
            suspended_by_bbsync: BTreeSet::new(),
            suspend_pending: BTreeMap::new(),
        }
    }
}

/// How a member of a managed group who is not wanted there is treated.
enum Unwanted {
    Remove(Reason),
    Skip(SkipReason),
}

/// Why a member who is not wanted in a managed group would go, or why they stay.
fn unwanted(id: &AccountId, desired: &Desired, policy: &Policy) -> Unwanted {
    if desired.frozen.contains(id) {
        return Unwanted::Skip(SkipReason::Frozen);
    }
    if desired.protected.contains(id) {
        return Unwanted::Skip(SkipReason::Protected);
    }
    if let Some(l) = desired.leavers.get(id) {
        return Unwanted::Remove(Reason::Leaver {
            fact: l.reason.clone(),
        });
    }
    if desired.known.contains(id) {
        return Unwanted::Remove(Reason::Drift {
            detail: "not in the mapped directory group(s)".into(),
        });
    }
    // No directory entry at all: vanished.
    if policy.vanished_unknown {
        return Unwanted::Skip(SkipReason::StateUnavailable);
    }
    let since = desired.first_missing.get(id).copied().unwrap_or(policy.now);
    let until = since + policy.missing_grace;
    if policy.now >= until {
        Unwanted::Remove(Reason::Vanished {
            since: crate::time::format_rfc3339(since),
        })
    } else {
        Unwanted::Skip(SkipReason::VanishedInGrace {
            since: crate::time::format_rfc3339(since),
            until: crate::time::format_rfc3339(until),
        })
    }
}

/// The slug Bitbucket has for a wanted group. Bitbucket generates slugs itself; a group whose
/// slug differs from the one derived from its name (special characters, a rename that kept the
/// slug) is found by name rather than taken for missing.
pub fn resolve_group(desired: &Desired, actual: &Actual, slug: &GroupSlug) -> GroupSlug {
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
}

/// The managed groups as Bitbucket has them (found by slug, or by name).
pub fn managed_groups<'a>(
    desired: &'a Desired,
    actual: &'a Actual,
) -> impl Iterator<Item = &'a ActualGroup> + 'a {
    desired
        .groups
        .keys()
        .filter_map(move |g| actual.groups.get(&resolve_group(desired, actual, g)))
}

/// Whether a managed group has a member no rule wants there (someone who may be removed, or
/// skipped as protected or within a grace), frozen accounts aside: the cheap question of
/// whether this run may take anything from anyone, asked before the whole plan is computed.
pub fn has_unwanted_members(desired: &Desired, actual: &Actual) -> bool {
    desired.groups.iter().any(|(slug, want)| {
        actual
            .groups
            .get(&resolve_group(desired, actual, slug))
            .is_some_and(|g| {
                g.members
                    .keys()
                    .any(|id| !want.members.contains_key(id) && !desired.frozen.contains(id))
            })
    })
}

/// The people who are offboarded this run, with why: leavers, and members of managed groups
/// without a directory entry whose grace ran out; never protected or frozen accounts. Their
/// direct grants on managed repositories and projects are to be read and removed.
pub fn offboarded(
    desired: &Desired,
    actual: &Actual,
    policy: &Policy,
) -> BTreeMap<AccountId, Reason> {
    let mut out = BTreeMap::new();
    for (id, l) in &desired.leavers {
        if !desired.protected.contains(id) && !desired.frozen.contains(id) {
            out.insert(
                id.clone(),
                Reason::Leaver {
                    fact: l.reason.clone(),
                },
            );
        }
    }
    for group in managed_groups(desired, actual) {
        for id in group.members.keys() {
            if desired.known.contains(id) {
                continue;
            }
            if let Unwanted::Remove(r @ Reason::Vanished { .. }) = unwanted(id, desired, policy) {
                out.insert(id.clone(), r);
            }
        }
    }
    out
}

/// Whether the directory has this account active: one usable entry, not disabled.
fn active_again(id: &AccountId, desired: &Desired) -> bool {
    desired.known.contains(id) && !desired.leavers.contains_key(id) && !desired.frozen.contains(id)
}

/// The people whose organisation suspension this run decides (`offboarding.suspend_in_org`):
/// to suspend, the offboarded (`gone`) and those whose suspension is pending, unless the
/// directory has them active again; to restore, the people bbsync suspended whom it has
/// active again. Never a protected or frozen account. Their organisation status is what a run
/// reads before planning.
pub fn org_candidates(
    desired: &Desired,
    gone: &BTreeMap<AccountId, Reason>,
    policy: &Policy,
) -> (BTreeMap<AccountId, Reason>, BTreeSet<AccountId>) {
    if !policy.suspend_in_org {
        return Default::default();
    }
    let untouchable =
        |id: &AccountId| desired.protected.contains(id) || desired.frozen.contains(id);
    let mut suspend: BTreeMap<AccountId, Reason> = gone
        .iter()
        .filter(|(id, _)| !untouchable(id))
        .map(|(id, r)| (id.clone(), r.clone()))
        .collect();
    for (id, r) in &policy.suspend_pending {
        if !untouchable(id) && !active_again(id, desired) {
            suspend.entry(id.clone()).or_insert_with(|| r.clone());
        }
    }
    let restore = policy
        .suspended_by_bbsync
        .iter()
        .filter(|id| active_again(id, desired))
        .cloned()
        .collect();
    (suspend, restore)
}

/// The organisation suspensions and restores: of the candidates ([`org_candidates`]), those
/// whose status calls for it (active, to suspend; suspended, to restore).
fn org_changes(
    desired: &Desired,
    actual: &Actual,
    policy: &Policy,
    gone: &BTreeMap<AccountId, Reason>,
) -> Vec<(Change, Reason)> {
    let (suspend, restore) = org_candidates(desired, gone, policy);
    let mut out = Vec::new();
    for (id, reason) in suspend {
        if let Some(u) = actual
            .org_users
            .get(&id)
            .filter(|u| u.status == OrgStatus::Active)
        {
            out.push((
                Change::SuspendInOrg {
                    account_id: id,
                    display_name: u.name.clone(),
                },
                reason,
            ));
        }
    }
    for id in restore {
        if let Some(u) = actual
            .org_users
            .get(&id)
            .filter(|u| u.status == OrgStatus::Suspended)
        {
            out.push((
                Change::RestoreInOrg {
                    account_id: id,
                    display_name: u.name.clone(),
                },
                Reason::Rule {
                    rule: "offboarding.suspend_in_org".into(),
                    detail: "active in the directory again, and bbsync had suspended them".into(),
                },
            ));
        }
    }
    out
}

/// Computes the changes that make `actual` equal `desired` within the managed scope.
pub fn plan(desired: &Desired, actual: &Actual, policy: &Policy) -> Plan {
    let mut changes: Vec<(Change, Reason)> = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();

    // Bitbucket generates slugs itself; a group whose slug differs from the one derived from its
    // name (special characters, a rename) is still found by name rather than created again.
    let resolve = |slug: &GroupSlug| resolve_group(desired, actual, slug);

    for (wanted_slug, want) in &desired.groups {
        let slug = &resolve(wanted_slug);
        let have = actual.groups.get(slug);
        if have.is_none() {
            if want.create {
                changes.push((
                    Change::CreateGroup {
                        group: slug.clone(),
                        name: want.name.clone(),
                    },
                    Reason::Rule {
                        rule: format!("groups[{}]", want.rule),
                        detail: "the group does not exist and create = true".into(),
                    },
                ));
            } else {
                warnings.push(format!(
                    "Bitbucket group {slug} does not exist and groups[{}].create is false: its members are not synced",
                    want.rule
                ));
                continue;
            }
        }
        for (id, w) in &want.members {
            if desired.frozen.contains(id) {
                continue;
            }
            if have.is_none_or(|g| !g.members.contains_key(id)) {
                changes.push((
                    Change::AddMember {
                        group: slug.clone(),
                        account_id: id.clone(),
                        display_name: w.display_name.clone(),
                    },
                    Reason::Rule {
                        rule: format!("groups[{}]", want.rule),
                        detail: format!("member of directory group {}", w.via),
                    },
                ));
            }
        }
        for (id, m) in have.map(|g| &g.members).into_iter().flatten() {
            if want.members.contains_key(id) {
                continue;
            }
            let change = Change::RemoveMember {
                group: slug.clone(),
                account_id: id.clone(),
                display_name: m.display_name.clone(),
            };
            match unwanted(id, desired, policy) {
                Unwanted::Remove(reason) => changes.push((change, reason)),
                Unwanted::Skip(reason) => skipped.push(Skipped {
                    subject: change.to_string(),
                    account_id: Some(id.clone()),
                    reason,
                }),
            }
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
    let (sets, removes) = diff_grants(
        &desired.grants,
        &actual.grants,
        &desired.repo_scope,
        &grant_groups,
        &resolve,
        "grants",
        &|_, p| format!("{p} on the repositories it selects"),
        "no grant rule gives this group access to this repository",
    );
    for (repo, group, permission, previous, reason) in sets {
        let change = Change::SetGrant {
            repo,
            group,
            permission,
            previous,
        };
        changes.push((change, reason));
    }
    for (repo, group, previous, reason) in removes {
        let change = Change::RemoveGrant {
            repo,
            group,
            previous,
        };
        changes.push((change, reason));
    }
    let (sets, removes) = diff_grants(
        &desired.project_grants,
        &actual.project_grants,
        &desired.project_scope,
        &grant_groups,
        &resolve,
        "project_grants",
        &|project, p| format!("{p} on project {project}"),
        "no project grant rule gives this group access to this project",
    );
    for (project, group, permission, previous, reason) in sets {
        let change = Change::SetProjectGrant {
            project,
            group,
            permission,
            previous,
        };
        changes.push((change, reason));
    }
    for (project, group, previous, reason) in removes {
        let change = Change::RemoveProjectGrant {
            project,
            group,
            previous,
        };
        changes.push((change, reason));
    }

    // Direct grants of people who left, on what is managed.
    let gone = offboarded(desired, actual, policy);
    for ((target, id), previous) in &actual.direct_grants {
        let managed = match target {
            GrantTarget::Repo(r) => desired.repo_scope.contains(r),
            GrantTarget::Project(p) => desired.project_scope.contains(p),
        };
        let Some(reason) = gone.get(id).filter(|_| managed) else {
            continue;
        };
        let display_name = actual
            .groups
            .values()
            .find_map(|g| g.members.get(id).map(|m| m.display_name.clone()))
            .or_else(|| desired.leavers.get(id).map(|l| l.display_name.clone()))
            .unwrap_or_default();
        changes.push((
            Change::RemoveUserGrant {
                target: target.clone(),
                account_id: id.clone(),
                display_name,
                previous: previous.clone(),
            },
            reason.clone(),
        ));
    }
    changes.extend(org_changes(desired, actual, policy, &gone));
    // Invitations by email of people no resolver found, into groups that exist (or are
    // created this run), unless one is pending already.
    for inv in &desired.invitations {
        let group = resolve(&inv.group);
        let folded = crate::model::Email::new(&inv.email).folded().to_owned();
        if will_exist(&group) && !actual.invitations.contains(&(folded, group.clone())) {
            changes.push((
                Change::InviteToGroup {
                    group,
                    email: inv.email.clone(),
                },
                Reason::Rule {
                    rule: format!("groups[{}]", inv.rule),
                    detail: format!(
                        "{}, and no account id was found for this email: invited (source.invite_unresolved)",
                        inv.via
                    ),
                },
            ));
        }
    }

    changes.sort_by_key(|(c, r)| c.order(r));
    let revoking: Vec<&Change> = changes
        .iter()
        .map(|(c, _)| c)
        .filter(|c| c.is_revocation())
        .collect();
    let fingerprint = revocation_fingerprint(&revoking);
    let mut held = guards(&revoking, desired, actual, policy);
    if !held.is_empty() && policy.approved.as_deref() == Some(fingerprint.as_str()) {
        // A person approved exactly this set: it goes ahead, once.
        held.clear();
    }
    let mut missing_groups = BTreeSet::new();
    let changes = changes
        .into_iter()
        .map(|(change, reason)| {
            let blocked = if let Some(guard) = held.first().filter(|_| change.is_revocation()) {
                Some(BlockReason::SafetyGuard {
                    guard: guard.clone(),
                })
            } else {
                match &change {
                    Change::SetGrant { group, .. } | Change::SetProjectGrant { group, .. }
                        if !will_exist(group) =>
                    {
                        missing_groups.insert(group.clone());
                        Some(BlockReason::MissingGroup {
                            group: group.clone(),
                        })
                    }
                    _ => None,
                }
            };
            Planned {
                change,
                reason,
                blocked,
            }
        })
        .collect();
    for g in missing_groups {
        warnings.push(format!(
            "grant rules name group {g}, which does not exist in Bitbucket"
        ));
    }
    Plan {
        changes,
        held,
        revocations: fingerprint,
        skipped,
        notes: desired.notes.clone(),
        warnings,
    }
}

/// A grant to set: (target, group, permission, previous, why).
type GrantSet<K, P> = (K, GroupSlug, P, Option<P>, Reason);
/// A grant to remove: (target, group, previous, why).
type GrantRemove<K, P> = (K, GroupSlug, P, Reason);
/// What [`diff_grants`] finds.
type GrantDiff<K, P> = (Vec<GrantSet<K, P>>, Vec<GrantRemove<K, P>>);

/// Makes one kind of group grant exact (repository or project grants): on the managed
/// targets, the grants of managed groups become what the rules give. `table` names the rules
/// (`grants`, `project_grants`), `gives` says what a rule gives on a target, `unwanted` why a
/// grant no rule wants goes.
#[allow(clippy::too_many_arguments)]
fn diff_grants<K, P>(
    wanted: &BTreeMap<(K, GroupSlug), WantedGrant<P>>,
    actual: &BTreeMap<(K, GroupSlug), P>,
    scope: &BTreeSet<K>,
    managed_groups: &BTreeMap<GroupSlug, GroupSlug>,
    resolve: &dyn Fn(&GroupSlug) -> GroupSlug,
    table: &str,
    gives: &dyn Fn(&K, P) -> String,
    unwanted: &str,
) -> GrantDiff<K, P>
where
    K: Ord + Clone,
    P: Copy + Ord + fmt::Display,
{
    let mut sets = Vec::new();
    for ((target, wanted_group), want) in wanted {
        let group = resolve(wanted_group);
        let previous = actual.get(&(target.clone(), group.clone())).copied();
        if previous == Some(want.permission) {
            continue;
        }
        let rule = format!("{table}[{}]", want.rule);
        let reason = match previous {
            Some(p) if p > want.permission => Reason::Drift {
                detail: format!("{p} exceeds the {} that {rule} gives", want.permission),
            },
            _ => Reason::Rule {
                detail: gives(target, want.permission),
                rule,
            },
        };
        sets.push((target.clone(), group, want.permission, previous, reason));
    }
    let mut removes = Vec::new();
    for ((target, group), prev) in actual {
        let Some(wanted_group) = managed_groups.get(group) else {
            continue;
        };
        if scope.contains(target) && !wanted.contains_key(&(target.clone(), wanted_group.clone())) {
            removes.push((
                target.clone(),
                group.clone(),
                *prev,
                Reason::Drift {
                    detail: unwanted.to_owned(),
                },
            ));
        }
    }
    (sets, removes)
}

/// A stable fingerprint of a set of revocations (their canonical JSON, hashed): what an
/// approval names, so that it releases exactly that set and nothing else.
pub fn revocation_fingerprint(revoking: &[&Change]) -> String {
    let mut sorted: Vec<&Change> = revoking.to_vec();
    sorted.sort_by_key(|c| serde_json::to_string(c).unwrap_or_default());
    fingerprint(&sorted)
}

/// SHA-256 of a value's JSON (maps are ordered, so equal values give equal fingerprints),
/// shortened to 32 hex digits.
pub fn fingerprint<T: Serialize>(value: &T) -> String {
    /// The JSON goes straight into the digest: at 100k people the directory's JSON is tens
    /// of MB that a buffer would hold at the run's peak.
    struct Digest(ring::digest::Context);
    impl std::io::Write for Digest {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut d = Digest(ring::digest::Context::new(&ring::digest::SHA256));
    {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut d);
        // The plan's types always serialize (string keys, no custom errors), and the digest
        // never fails a write: nothing to report.
        let _ = serde_json::to_writer(&mut w, value);
        let _ = std::io::Write::flush(&mut w);
    }
    d.0.finish()
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The guards this run's revocations trip.
/// The safety guards `revoking` trips (empty: none).
pub fn guards(
    revoking: &[&Change],
    desired: &Desired,
    actual: &Actual,
    policy: &Policy,
) -> Vec<Guard> {
    let mut out = Vec::new();
    let n = revoking.len();
    if n > policy.max_removals {
        out.push(Guard::Absolute {
            revocations: n,
            limit: policy.max_removals,
        });
    }
    // What is managed now: memberships of managed groups, grants of managed groups on managed
    // repositories and projects, and the direct grants read.
    let memberships: usize = managed_groups(desired, actual)
        .map(|g| g.members.len())
        .sum();
    let grants = actual
        .grants
        .keys()
        .filter(|(r, g)| desired.repo_scope.contains(r) && desired.grant_groups.contains(g))
        .count();
    let project_grants = actual
        .project_grants
        .keys()
        .filter(|(p, g)| desired.project_scope.contains(p) && desired.grant_groups.contains(g))
        .count();
    let managed = memberships + grants + project_grants + actual.direct_grants.len();
    if managed >= policy.min_managed_for_ratio
        && n as f64 > policy.max_removal_ratio * managed as f64
    {
        out.push(Guard::Relative {
            revocations: n,
            managed,
            ratio: policy.max_removal_ratio,
        });
    }
    let mut per_group: BTreeMap<&GroupSlug, usize> = BTreeMap::new();
    for c in revoking {
        if let Change::RemoveMember { group, .. } = c {
            *per_group.entry(group).or_default() += 1;
        }
    }
    for (group, removals) in per_group {
        let members = actual.groups.get(group).map_or(0, |g| g.members.len());
        if members >= policy.big_group
            && removals as f64 > policy.max_group_removal_ratio * members as f64
        {
            out.push(Guard::Group {
                group: group.clone(),
                removals,
                members,
                ratio: policy.max_group_removal_ratio,
            });
        }
    }
    // Whether or not anything would be revoked now: during a grace nothing is, and the shrunk
    // read must not become the baseline the removals are later measured against.
    if let Some(before) = policy.people_before {
        if (policy.people_now as f64) < (1.0 - policy.max_shrink_ratio) * before as f64 {
            out.push(Guard::Shrink {
                before,
                now: policy.people_now,
                ratio: policy.max_shrink_ratio,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{DesiredGroup, Leaver, Wanted};

    /// Streamed into the digest, the fingerprint is still that of the value's whole JSON (a
    /// reviewed plan written by an earlier version still matches), for values larger than the
    /// 64 KiB buffer too.
    #[test]
    fn a_fingerprint_is_the_sha256_of_the_whole_json() {
        let big: BTreeMap<String, Vec<u32>> = (0..5000)
            .map(|i| (format!("key-{i}"), (0..i % 17).collect()))
            .collect();
        for json in [
            serde_json::to_vec(&big).expect("json"),
            serde_json::to_vec(&("a", 1, [true])).expect("json"),
        ] {
            let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
            let whole: String = ring::digest::digest(&ring::digest::SHA256, &json)
                .as_ref()
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(fingerprint(&v), whole);
        }
        assert!(serde_json::to_vec(&big).expect("json").len() > 128 * 1024);
    }

    #[test]
    fn every_guard_label_is_listed() {
        let all = [
            Guard::Absolute {
                revocations: 2,
                limit: 1,
            },
            Guard::Relative {
                revocations: 2,
                managed: 3,
                ratio: 0.5,
            },
            Guard::Group {
                group: GroupSlug::from_name("g"),
                removals: 2,
                members: 3,
                ratio: 0.5,
            },
            Guard::Shrink {
                before: 3,
                now: 1,
                ratio: 0.5,
            },
        ];
        let labels: Vec<&str> = all.iter().map(Guard::label).collect();
        assert_eq!(labels, Guard::LABELS);
    }

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

    fn desired_devs(members: &[&str]) -> Desired {
        let mut d = Desired::default();
        d.groups.insert(
            g("developers"),
            DesiredGroup {
                name: "Developers".into(),
                create: true,
                rule: 0,
                members: members
                    .iter()
                    .map(|m| {
                        (
                            id(m),
                            Wanted {
                                display_name: m.to_string(),
                                via: "devs".into(),
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

    fn org(status: OrgStatus, name: &str) -> OrgUser {
        OrgUser {
            status,
            name: name.into(),
        }
    }

    fn leaver(d: &mut Desired, who: &str) {
        d.known.insert(id(who));
        d.leavers.insert(
            id(who),
            Leaver {
                display_name: who.into(),
                reason: "nsAccountLock=TRUE".into(),
            },
        );
    }

    fn suspending() -> Policy {
        Policy {
            suspend_in_org: true,
            ..Policy::default()
        }
    }

    fn ops(p: &Plan) -> Vec<String> {
        p.changes.iter().map(|c| c.change.to_string()).collect()
    }

    /// A leaver active in the organisation is suspended, after their membership removal; one
    /// suspended already (by anyone) or not in the directory is not; protected and frozen
    /// accounts never are; nothing at all when the setting is off.
    #[test]
    fn offboarded_people_active_in_the_organisation_are_suspended_after_their_removals() {
        let mut d = desired_devs(&["ann"]);
        d.known.insert(id("ann"));
        for who in ["bob", "cat", "dan", "pat", "fay"] {
            leaver(&mut d, who);
        }
        d.protected.insert(id("pat"));
        d.frozen.insert(id("fay"));
        let mut a = actual_devs(&["ann", "bob", "pat"]);
        for (who, st) in [
            ("ann", OrgStatus::Active),
            ("bob", OrgStatus::Active),
            ("cat", OrgStatus::Suspended),
            ("dan", OrgStatus::NoMembership),
            ("pat", OrgStatus::Active),
            ("fay", OrgStatus::Active),
        ] {
            a.org_users
                .insert(id(who), org(st, &format!("{who} (org)")));
        }
        let p = plan(&d, &a, &suspending());
        let bob = id("bob");
        assert_eq!(
            ops(&p),
            [
                format!("remove bob ({bob}) from group developers"),
                format!("suspend bob (org) ({bob}) in the organisation directory"),
            ]
        );
        assert_eq!(
            p.changes[1].reason,
            Reason::Leaver {
                fact: "nsAccountLock=TRUE".into()
            }
        );
        assert!(p.changes[1].change.is_revocation());
        assert_eq!(p.changes[1].change.kind().label(), "suspend_in_org");
        assert_eq!(p.changes[1].change.account(), Some(&bob));
        assert!(!p.changes[1].change.is_membership() && !p.changes[1].change.is_deletion());
        // Off: nothing is suspended.
        assert_eq!(ops(&plan(&d, &a, &Policy::default())).len(), 1);
    }

    /// Someone whose suspension is pending (a vanished person whose memberships are gone) is
    /// still suspended, unless the directory has them active again; bbsync restores only the
    /// people it suspended, once the directory has them active and the organisation shows
    /// them suspended.
    #[test]
    fn pending_suspensions_go_ahead_and_only_bbsyncs_own_suspensions_are_restored() {
        let mut d = Desired::default();
        for who in ["back", "admins", "still"] {
            d.known.insert(id(who));
        }
        leaver(&mut d, "still");
        let mut a = Actual::default();
        for who in ["gone", "back", "admins", "still", "again"] {
            let st = match who {
                "gone" | "again" => OrgStatus::Active,
                _ => OrgStatus::Suspended,
            };
            a.org_users.insert(id(who), org(st, who));
        }
        let vanished = Reason::Vanished {
            since: "2026-01-01T00:00:00Z".into(),
        };
        let mut policy = suspending();
        policy.suspend_pending.insert(id("gone"), vanished.clone());
        // Came back between the plan and now: not suspended.
        d.known.insert(id("again"));
        policy.suspend_pending.insert(id("again"), vanished.clone());
        // bbsync suspended back and still; an admin suspended admins.
        policy.suspended_by_bbsync.insert(id("back"));
        policy.suspended_by_bbsync.insert(id("still"));
        let (suspend, restore) = org_candidates(&d, &BTreeMap::new(), &policy);
        // still is a leaver: offboarded() names them, not the pending list.
        assert_eq!(suspend.keys().collect::<Vec<_>>(), [&id("gone")]);
        assert_eq!(restore.into_iter().collect::<Vec<_>>(), [id("back")]);
        let p = plan(&d, &a, &policy);
        assert_eq!(
            ops(&p),
            [
                format!(
                    "suspend gone ({}) in the organisation directory",
                    id("gone")
                ),
                format!(
                    "restore back ({}) in the organisation directory",
                    id("back")
                ),
            ]
        );
        assert_eq!(p.changes[0].reason, vanished);
        assert_eq!(p.changes[1].reason.label(), "rule");
        assert!(!p.changes[1].change.is_revocation());
        // A pending account that is protected or frozen now is never suspended.
        let mut guarded = policy.clone();
        for who in ["prot", "froz"] {
            guarded.suspend_pending.insert(id(who), vanished.clone());
            a.org_users.insert(id(who), org(OrgStatus::Active, who));
        }
        let mut d2 = d.clone();
        d2.protected.insert(id("prot"));
        d2.frozen.insert(id("froz"));
        let (suspend, _) = org_candidates(&d2, &BTreeMap::new(), &guarded);
        assert_eq!(suspend.keys().collect::<Vec<_>>(), [&id("gone")]);
        // Restored by hand already: nothing to do.
        a.org_users
            .insert(id("back"), org(OrgStatus::Active, "back"));
        assert_eq!(plan(&d, &a, &policy).changes.len(), 1);
    }

    /// A suspension is a revocation: it counts toward the limits and is held with the rest.
    #[test]
    fn suspensions_count_toward_the_guards_and_are_held_with_the_other_revocations() {
        let mut d = Desired::default();
        let mut a = Actual::default();
        for who in ["a1", "a2", "a3"] {
            leaver(&mut d, who);
            a.org_users.insert(id(who), org(OrgStatus::Active, who));
        }
        let policy = Policy {
            max_removals: 2,
            ..suspending()
        };
        let p = plan(&d, &a, &policy);
        assert_eq!(p.changes.len(), 3);
        assert!(matches!(
            p.held[..],
            [Guard::Absolute {
                revocations: 3,
                limit: 2
            }]
        ));
        assert!(p
            .changes
            .iter()
            .all(|c| matches!(c.blocked, Some(BlockReason::SafetyGuard { .. }))));
        let approved = Policy {
            approved: Some(p.revocations.clone()),
            ..policy
        };
        assert!(plan(&d, &a, &approved).blocked().next().is_none());
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
    fn reason_and_skip_labels_are_the_json_kinds_and_every_skip_says_why() {
        for r in [
            Reason::Rule {
                rule: "groups[0]".into(),
                detail: "d".into(),
            },
            Reason::Leaver { fact: "f".into() },
            Reason::Vanished { since: "s".into() },
            Reason::Drift { detail: "d".into() },
        ] {
            assert_eq!(serde_json::to_value(&r).expect("json")["kind"], r.label());
            assert_eq!(
                r.is_offboarding(),
                matches!(r, Reason::Leaver { .. } | Reason::Vanished { .. })
            );
        }
        for k in [
            SkipReason::Protected,
            SkipReason::Frozen,
            SkipReason::VanishedInGrace {
                since: "a".into(),
                until: "b".into(),
            },
            SkipReason::StateUnavailable,
            SkipReason::NotWorkspaceMember,
        ] {
            assert_eq!(serde_json::to_value(&k).expect("json")["kind"], k.label());
            assert!(k.to_string().len() > 20, "{k:?} says why");
        }
    }

    #[test]
    fn project_grants_are_exact_and_a_lower_one_is_a_revocation() {
        use crate::model::ProjectPermission as P;
        let key = || crate::model::ProjectKey::new("PROJ");
        let mut d = Desired::default();
        d.grant_groups.insert(g("leads"));
        d.grant_groups.insert(g("devs"));
        d.project_scope.insert(key());
        d.project_grants.insert(
            (key(), g("leads")),
            WantedGrant {
                permission: P::Write,
                rule: 0,
            },
        );
        d.project_grants.insert(
            (key(), g("devs")),
            WantedGrant {
                permission: P::Admin,
                rule: 1,
            },
        );
        let mut a = Actual::default();
        a.groups.insert(g("leads"), ActualGroup::default());
        a.groups.insert(g("devs"), ActualGroup::default());
        a.project_grants.insert((key(), g("leads")), P::Admin);
        a.project_grants.insert((key(), g("devs")), P::Write);
        let p = plan(&d, &a, &Policy::default());
        let got: Vec<(String, bool, &str)> = p
            .changes
            .iter()
            .map(|c| {
                (
                    c.change.to_string(),
                    c.change.is_revocation(),
                    c.reason.label(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "change group leads on project PROJ: admin -> write".to_owned(),
                    true,
                    "drift"
                ),
                (
                    "change group devs on project PROJ: write -> admin".to_owned(),
                    false,
                    "rule"
                ),
            ]
        );
    }

    #[test]
    fn people_who_cannot_be_added_are_moved_to_skipped() {
        let mut p = plan(
            &desired_devs(&["ann", "bob"]),
            &actual_devs(&[]),
            &Policy::default(),
        );
        assert_eq!(p.changes.len(), 2);
        p.unresolve(&[id("bob")].into_iter().collect());
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].reason, SkipReason::NotWorkspaceMember);
        assert_eq!(p.skipped[0].account_id, Some(id("bob")));
    }

    #[test]
    fn offboarded_people_are_leavers_and_the_vanished_past_their_grace_never_protected_or_frozen() {
        let mut d = desired_devs(&["ann"]);
        d.known = [id("ann"), id("lea"), id("pat")].into_iter().collect();
        for who in ["lea", "pat"] {
            d.leavers.insert(
                id(who),
                Leaver {
                    display_name: who.into(),
                    reason: "nsAccountLock=TRUE".into(),
                },
            );
        }
        d.protected.insert(id("pat"));
        d.frozen.insert(id("fro"));
        let a = actual_devs(&["ann", "vic", "new", "fro"]);
        let day = Duration::from_secs(86_400);
        d.first_missing.insert(id("vic"), SystemTime::UNIX_EPOCH);
        d.first_missing
            .insert(id("new"), SystemTime::UNIX_EPOCH + day);
        let policy = Policy {
            now: SystemTime::UNIX_EPOCH + day + Duration::from_secs(3600),
            missing_grace: day,
            ..Policy::default()
        };
        let gone: Vec<AccountId> = offboarded(&d, &a, &policy).into_keys().collect();
        let mut want = vec![id("lea"), id("vic")];
        want.sort();
        assert_eq!(gone, want);
        let p = plan(&d, &a, &policy);
        assert!(p.skipped.iter().any(|s| s.account_id == Some(id("new"))
            && matches!(s.reason, SkipReason::VanishedInGrace { .. })));
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
    fn a_leaver_is_removed_before_people_who_only_moved_groups() {
        // The leaver is whichever of the two sorts last, so that only the ordering puts them
        // first.
        let (mover, leaver) = if id("xa") < id("xb") {
            ("xa", "xb")
        } else {
            ("xb", "xa")
        };
        let mut d = desired_devs(&["ann"]);
        d.known = [id("ann"), id(mover), id(leaver)].into_iter().collect();
        d.leavers.insert(
            id(leaver),
            Leaver {
                display_name: leaver.into(),
                reason: "nsAccountLock=TRUE".into(),
            },
        );
        let p = plan(
            &d,
            &actual_devs(&["ann", mover, leaver]),
            &Policy::default(),
        );
        let reasons: Vec<&str> = p.changes.iter().map(|c| c.reason.label()).collect();
        assert_eq!(reasons, ["leaver", "drift"]);
    }

    #[test]
    fn a_downgrade_goes_before_every_addition() {
        let mut d = desired_devs(&["ann"]);
        d.grant_groups.insert(g("developers"));
        d.repo_scope.insert(r("api"));
        d.grants.insert(
            (r("api"), g("developers")),
            WantedGrant {
                permission: Permission::Read,
                rule: 0,
            },
        );
        let mut a = Actual::default();
        a.grants
            .insert((r("api"), g("developers")), Permission::Admin);
        let p = plan(&d, &a, &Policy::default());
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
    fn unwanted_members_are_found_without_planning_and_frozen_ones_are_not_counted() {
        let d = desired_devs(&["ann"]);
        assert!(!has_unwanted_members(&d, &actual_devs(&["ann"])));
        assert!(has_unwanted_members(&d, &actual_devs(&["ann", "bob"])));
        let mut frozen = desired_devs(&["ann"]);
        frozen.frozen.insert(id("bob"));
        assert!(!has_unwanted_members(
            &frozen,
            &actual_devs(&["ann", "bob"])
        ));
    }

    #[test]
    fn in_sync_means_no_changes() {
        let p = plan(
            &desired_devs(&["ann", "bob"]),
            &actual_devs(&["ann", "bob"]),
            &Policy::default(),
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
        let p = plan(&d, &actual_devs(&["ann", "bob"]), &Policy::default());
        let ops: Vec<String> = p
            .changes
            .iter()
            .map(|c| format!("{}: {}", c.change, c.reason))
            .collect();
        assert_eq!(
            ops,
            [
                format!(
                    "remove bob ({}) from group developers: left the company (nsAccountLock=TRUE)",
                    id("bob")
                ),
                format!(
                    "add cid ({}) to group developers: groups[0]: member of directory group devs",
                    id("cid")
                )
            ]
        );
    }

    #[test]
    fn a_missing_group_is_created_before_members_are_added() {
        let p = plan(
            &desired_devs(&["ann"]),
            &Actual::default(),
            &Policy::default(),
        );
        let kinds: Vec<_> = p.changes.iter().map(|c| c.change.kind()).collect();
        assert_eq!(kinds, [ChangeKind::CreateGroup, ChangeKind::AddMember]);
    }

    #[test]
    fn protected_identities_are_neither_added_nor_removed() {
        let mut d = desired_devs(&["ann"]);
        d.frozen.insert(id("twin"));
        let p = plan(&d, &actual_devs(&["ann", "twin"]), &Policy::default());
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn only_managed_grants_are_touched() {
        let mut d = Desired::default();
        d.grant_groups.insert(g("contractors"));
        d.repo_scope.insert(r("api"));
        d.repo_scope.insert(r("web"));
        d.grants.insert(
            (r("api"), g("contractors")),
            WantedGrant {
                permission: Permission::Write,
                rule: 0,
            },
        );
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
        let p = plan(&d, &a, &Policy::default());
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
            &Policy {
                max_removals: 3,
                ..Policy::default()
            },
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
                guard: Guard::Absolute {
                    revocations: 5,
                    limit: 3
                }
            })
        )));
    }

    fn people(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i:02}")).collect()
    }

    #[test]
    fn half_the_people_vanishing_trips_the_relative_and_group_guards_below_the_absolute_limit() {
        let all = people(44);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut d = desired_devs(&refs[..22]);
        d.known = refs[..22].iter().map(|p| id(p)).collect();
        let a = actual_devs(&refs);
        let p = plan(&d, &a, &Policy::default());
        assert_eq!(
            p.blocked().count(),
            22,
            "22 vanished, limit 50: {:?}",
            p.held
        );
        let labels: Vec<&str> = p.held.iter().map(Guard::label).collect();
        assert_eq!(labels, ["relative", "group"]);
        // A quarter is allowed.
        let mut d = desired_devs(&refs[..33]);
        d.known = refs[..33].iter().map(|p| id(p)).collect();
        let p = plan(&d, &a, &Policy::default());
        assert!(p.held.is_empty(), "{:?}", p.held);
        assert_eq!(p.runnable().count(), 11);
    }

    #[test]
    fn a_directory_that_shrank_since_the_last_good_read_holds_revocations_not_additions() {
        let mut d = desired_devs(&["ann", "new"]);
        d.known = [id("ann"), id("new")].into_iter().collect();
        let a = actual_devs(&["ann", "bob"]);
        let shrunk = Policy {
            people_now: 70,
            people_before: Some(100),
            ..Policy::default()
        };
        let p = plan(&d, &a, &shrunk);
        assert!(
            matches!(
                p.held[..],
                [Guard::Shrink {
                    before: 100,
                    now: 70,
                    ..
                }]
            ),
            "{:?}",
            p.held
        );
        assert_eq!(p.blocked().count(), 1);
        assert_eq!(
            p.runnable().map(Change::kind).collect::<Vec<_>>(),
            [ChangeKind::AddMember]
        );
        let fine = Policy {
            people_now: 90,
            people_before: Some(100),
            ..Policy::default()
        };
        assert!(plan(&d, &a, &fine).held.is_empty());
        // Shrunk with nothing to revoke yet (people inside their grace): still held, so the
        // shrunk read does not become the baseline the later removals are measured against.
        let quiet = plan(&desired_devs(&["ann", "bob"]), &a, &shrunk);
        assert!(
            matches!(quiet.held[..], [Guard::Shrink { .. }]),
            "{:?}",
            quiet.held
        );
    }

    #[test]
    fn an_approval_releases_exactly_the_held_set_and_no_other() {
        let limited = Policy {
            max_removals: 1,
            ..Policy::default()
        };
        let a = actual_devs(&["ann", "bob", "cid"]);
        let d = desired_devs(&["ann"]);
        let held = plan(&d, &a, &limited);
        assert_eq!(held.blocked().count(), 2);
        let approved = Policy {
            approved: Some(held.revocations.clone()),
            ..limited.clone()
        };
        let released = plan(&d, &a, &approved);
        assert!(released.held.is_empty());
        assert_eq!(released.runnable().count(), 2);
        // One more removal is another set: the approval does not cover it.
        let other = plan(&desired_devs(&[]), &a, &approved);
        assert_ne!(other.revocations, held.revocations);
        assert_eq!(other.blocked().count(), 3);
    }

    #[test]
    fn exactly_as_many_revocations_as_the_limit_go_ahead() {
        let p = plan(
            &desired_devs(&[]),
            &actual_devs(&["p0", "p1", "p2"]),
            &Policy {
                max_removals: 3,
                ..Policy::default()
            },
        );
        assert_eq!(p.blocked().count(), 0, "3 revocations, limit 3: {p:?}");
        assert_eq!(p.runnable().count(), 3);
        let none = plan(
            &desired_devs(&[]),
            &actual_devs(&["p0"]),
            &Policy {
                max_removals: 0,
                ..Policy::default()
            },
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
        d.grants.insert(
            (r("api"), g("developers")),
            WantedGrant {
                permission: Permission::Read,
                rule: 0,
            },
        );
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
        let p = plan(&d, &a, &Policy::default());
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_grant_to_a_group_that_will_not_exist_is_blocked() {
        let mut d = Desired::default();
        d.grant_groups.insert(g("ghost"));
        d.repo_scope.insert(r("api"));
        d.grants.insert(
            (r("api"), g("ghost")),
            WantedGrant {
                permission: Permission::Read,
                rule: 0,
            },
        );
        let p = plan(&d, &Actual::default(), &Policy::default());
        assert_eq!(p.blocked().count(), 1);
        assert_eq!(p.warnings.len(), 1);
    }
}
