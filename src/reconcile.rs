//! One reconcile: read the directory (fail closed), read Bitbucket in bulk, map, plan, and,
//! in apply mode, apply. Returns a [`RunReport`] that the CLI prints and the daemon keeps.

use crate::apply::{audit::Audit, family_of, Applier, ChangeResult, OutcomeKind};
use crate::bitbucket::detect::{self, Choice};
use crate::bitbucket::dto::V2Repository;
use crate::bitbucket::{
    ApiError, ApiFamily, Client, Clients, CredentialKind, MembershipBackend, Principal,
    PrincipalKind, Target, V1Groups,
};
use crate::check::CredentialStatus;
use crate::config::{Config, MembershipBackendKind, RepoSelector};
use crate::directory::EntryIssue;
use crate::mapping::{self, MappingError};
use crate::model::{
    AccountId, GrantTarget, GroupSlug, ProjectKey, ProjectPermission, Repo, RepoSlug,
};
use crate::plan::{self, Actual, BlockReason, Plan, Policy};
use crate::source::{Source, SourceError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::Instrument;

/// Why a run produced no plan. Nothing is written when any of these happens.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("directory source failed, nothing changed: {0}")]
    Source(#[from] SourceError),
    #[error("mapping failed, nothing changed: {0}")]
    Mapping(#[from] MappingError),
    #[error("reading Bitbucket failed, nothing changed: {0}")]
    Read(#[source] Box<ApiError>),
    #[error("cannot set up the Bitbucket client: {0}")]
    Client(#[source] Box<ApiError>),
    #[error(
        "no credential is configured for {0} (set bitbucket.credential or bitbucket.families)"
    )]
    NoCredential(String),
    #[error("cannot open the audit file {path}: {source}")]
    Audit {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Another bbsync holds the workspace lock.
    #[error("not applying: {0}")]
    Locked(#[from] crate::lock::LockError),
    /// The audit trail cannot be read or written for recovery.
    #[error("cannot settle the audit trail of an interrupted run ({path}): {source}")]
    Recovery {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `apply --plan`: the workspace or the directory is no longer what the reviewed plan was
    /// computed from; nothing was written.
    #[error("the reviewed plan no longer matches, nothing changed: {0}")]
    PlanMoved(String),
    /// The off-boarding poll cannot read the snapshot it parked on disk.
    #[error("the off-boarding poll cannot read its parked snapshot, nothing changed (the next full reconcile finds the leavers): {0}")]
    Snapshot(#[from] SpillError),
}

impl RunError {
    /// Errors the operator fixes in the configuration (exit code 2).
    pub fn is_config(&self) -> bool {
        match self {
            RunError::NoCredential(_) | RunError::Audit { .. } => true,
            RunError::Read(e) => matches!(**e, ApiError::GrantReadRefused { .. }),
            _ => false,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            RunError::Source(e) => e.metric_label(),
            RunError::Mapping(_) => "mapping",
            RunError::Read(e) | RunError::Client(e) => e.metric_label(),
            RunError::NoCredential(_) => "config",
            RunError::Audit { .. } | RunError::Recovery { .. } => "audit",
            RunError::Locked(e) => e.metric_label(),
            RunError::PlanMoved(_) => "plan_moved",
            RunError::Snapshot(_) => "snapshot",
        }
    }
}

/// Fingerprints (SHA-256, shortened) of a run's inputs and of its plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Inputs {
    /// The directory snapshot: people (with their disabled state), groups and members.
    pub directory: String,
    /// Bitbucket as read: groups and members, grants, repositories, projects, direct grants.
    pub bitbucket: String,
    /// Every change of the plan with its reason.
    pub changes: String,
}

/// What a run must match before it writes anything (`apply --plan`).
#[derive(Clone, Debug, Default)]
pub struct Gate {
    /// The fingerprint of a held revocation set a person approved.
    pub approved: Option<String>,
    /// The inputs and plan a person reviewed: apply only if this run has exactly these.
    pub expect: Option<Inputs>,
}

/// What the directory looked like this run.
#[derive(Clone, Debug, Serialize)]
pub struct SourceSummary {
    pub description: String,
    pub people: usize,
    pub active: usize,
    pub leavers: usize,
    pub groups: usize,
    pub issues: Vec<EntryIssue>,
    /// Emails of people no resolver found an account id for (HR records): not added anywhere,
    /// never read as leavers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
}

/// Where a run's time went, in milliseconds (`timings_ms` in the JSON report; the scale
/// benchmark reads it). Each phase includes the requests it makes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Reading and resolving the directory.
    pub source: u64,
    /// Reading Bitbucket: groups and members, repositories, projects, group grants.
    pub bitbucket_read: u64,
    /// Mapping the directory onto the rules (the desired state).
    pub mapping: u64,
    /// Planning: who is gone, the owners and direct grants it asks for, the diff, the
    /// member lookups of the people to add.
    pub planning: u64,
    /// The fingerprints of the inputs and the plan, and the snapshot the poll keeps.
    pub fingerprints: u64,
    /// Applying (0 for a plan).
    pub apply: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub timings_ms: Timings,
    /// Whether changes were applied (false: plan only).
    pub applied: bool,
    pub source: SourceSummary,
    pub repositories_in_scope: usize,
    /// How the group grants of the managed repositories were read (`None`: no grant is
    /// managed, none were read).
    pub grant_reader: Option<GrantRead>,
    /// Which backend wrote (or would write) the memberships, and why.
    pub membership_backend: Choice,
    pub plan: Plan,
    /// Fingerprints of what the plan was computed from (a reviewed plan is applied only when
    /// they still match).
    pub inputs: Inputs,
    pub outcomes: Vec<ChangeResult>,
    pub api_requests: u64,
    /// Requests per credential name (each credential has its own rate budget).
    pub api_requests_by_credential: BTreeMap<String, u64>,
}

impl RunReport {
    /// A run succeeded when nothing failed and nothing was held back by a guard or a refusal.
    pub fn ok(&self) -> bool {
        // Someone who cannot be added (not a workspace member) is reported, not a failure.
        let fine = |o: &crate::apply::Outcome| {
            o.is_done()
                || matches!(
                    o,
                    crate::apply::Outcome::Blocked {
                        reason: BlockReason::NotWorkspaceMember | BlockReason::BecameLeaver
                    }
                )
        };
        if self.applied {
            self.outcomes.iter().all(|o| fine(&o.outcome))
        } else {
            self.plan.blocked().next().is_none()
        }
    }
    /// How many changes ended as `kind`.
    pub fn count(&self, kind: OutcomeKind) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.outcome.kind() == kind)
            .count()
    }
}

/// A fresh run id (16 hex digits), on every log line and audit record of its run.
pub fn new_run_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Builds one client per credential for the configured workspace.
pub fn clients_for(cfg: &Config) -> Result<Clients, RunError> {
    Clients::new(cfg).map_err(|e| match e {
        ApiError::NoCredential { family } => RunError::NoCredential(family.to_owned()),
        e => RunError::Client(Box::new(e)),
    })
}

/// The directory source of `cfg`, as a run reads it: an HR source resolves the emails of
/// records without an account id through the workspace members (`resolve_by_members`) and the
/// organisation directory (`[admin_api]`), with the identity cache in `offboarding.state_dir`.
pub fn source_for(cfg: &Config, clients: &Clients) -> Source {
    let mut source = Source::new(&cfg.source, &cfg.directory);
    if let Some(hr) = cfg
        .source
        .hr()
        .filter(|h| h.resolve_by_members || cfg.admin_api.is_some())
    {
        let members = hr
            .resolve_by_members
            .then(|| clients.shared(ApiFamily::MembersRead));
        let org = clients.admin_api(cfg, Arc::new(clients.v1_groups()));
        source = source.with_email_resolver(Arc::new(
            identity::MembersByEmail::new(
                members,
                cfg.offboarding.state_dir.as_deref(),
                hr.identity_cache_ttl,
            )
            .with_org(org),
        ));
    }
    source
}

/// BBQL for the repositories the selectors can pick, or `None` when the full listing is
/// needed. Only `project.key` filters are used (the one BBQL field the API sheet promises),
/// OR-ed in chunks to keep URLs short; explicit slugs and globs are matched locally on the full
/// listing.
fn repo_queries(selectors: &[&RepoSelector]) -> Option<Vec<String>> {
    if selectors
        .iter()
        .any(|s| !s.globs.is_empty() || !s.repos.is_empty())
    {
        return None;
    }
    let mut keys: Vec<&str> = selectors
        .iter()
        .flat_map(|s| s.projects.iter().map(|k| k.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Some(
        keys.chunks(20)
            .map(|c| {
                c.iter()
                    .map(|k| format!("project.key=\"{}\"", k.replace(['"', '\\'], "")))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            })
            .collect(),
    )
}

/// Repositories the selectors can pick: BBQL by project when possible, else (or when the filter
/// is refused with 400) the full trimmed listing.
async fn list_selectable_repos(
    client: &Client,
    selectors: &[&RepoSelector],
) -> Result<Vec<V2Repository>, ApiError> {
    if let Some(queries) = repo_queries(selectors) {
        let mut all = Vec::new();
        let mut refused = false;
        for q in &queries {
            match client.list_repositories(Some(q)).await {
                Ok(r) => all.extend(r),
                Err(e) if e.status() == Some(400) => {
                    tracing::warn!(error = %e, "BBQL filter refused; reading the full repository listing instead");
                    refused = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !refused {
            return Ok(all);
        }
    }
    client.list_repositories(None).await
}

/// What was read of Bitbucket besides the actual state the plan diffs.
pub struct Read {
    pub actual: Actual,
    pub repos: Vec<Repo>,
    pub projects: BTreeSet<ProjectKey>,
    /// How the group grants were read, when they were.
    pub grant_read: Option<GrantRead>,
}

/// Reads the actual state in bulk through the seams: groups with members from the membership
/// backend (1 call for 1.0), the repositories the grant rules and the scope can select
/// (listing pages), the group grants on the managed ones from the grant-state reader
/// `bitbucket.grant_reader` picks (1 call for 1.0 group-privileges, or 1 per managed
/// repository for 2.0; see [`grant_reader`]), and, when project grants are managed, the
/// projects and their group grants (1 listing, then 1 call per managed project).
pub async fn read_actual(
    cfg: &Config,
    members: &dyn MembershipBackend,
    clients: &Clients,
) -> Result<Read, ApiError> {
    let mut actual = Actual::default();
    let manages_grants = !cfg.grants.is_empty() || cfg.scope.is_some();
    let mut selectors: Vec<&RepoSelector> = cfg.grants.iter().map(|r| &r.select).collect();
    if let Some(scope) = &cfg.scope {
        selectors.push(&scope.include);
    }
    // The groups and the repository listing do not depend on each other: read side by side
    // (the listing is pages one after another, the groups one long body). The first error
    // ends both.
    let groups = async {
        if !cfg.groups.is_empty() || manages_grants || !cfg.project_grants.is_empty() {
            members.read_groups().await.map(Some)
        } else {
            Ok(None)
        }
    };
    let listing = async {
        if manages_grants {
            list_selectable_repos(clients.get(ApiFamily::RepositoriesRead), &selectors)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let (groups, listed) = tokio::try_join!(groups, listing)?;
    if let Some(groups) = groups {
        actual.groups = groups;
    }
    let mut repos = Vec::new();
    let mut grant_read = None;
    if let Some(listed) = listed {
        repos = listed
            .into_iter()
            .map(|r| Repo {
                slug: RepoSlug::new(&r.slug),
                project: r.project.map(|p| ProjectKey::new(&p.key)),
            })
            .collect();
        repos.sort();
        repos.dedup();
        let in_scope = mapping::repo_scope(&cfg.grants, cfg.scope.as_ref(), &repos);
        let (grants, how) =
            grant_reader::read_grants(cfg, clients, &in_scope, &actual.groups).await?;
        actual.grants = grants;
        grant_read = Some(how);
    }
    let mut projects = BTreeSet::new();
    let project_scope = mapping::project_scope(&cfg.project_grants, cfg.scope.as_ref());
    if !project_scope.is_empty() || !cfg.project_grants.is_empty() {
        let reader = clients.get(ApiFamily::RepositoriesRead);
        projects = reader
            .project_keys()
            .await?
            .iter()
            .map(|k| ProjectKey::new(k))
            .collect();
        let perms = clients.get(ApiFamily::PermissionsRead);
        for key in project_scope.iter().filter(|k| projects.contains(*k)) {
            let listed: Vec<crate::bitbucket::dto::V2GroupPermission> = perms
                .permissions(Target::Project(key), PrincipalKind::Groups)
                .await?;
            for g in listed {
                match ProjectPermission::parse(&g.permission) {
                    Some(p) => {
                        actual
                            .project_grants
                            .insert((key.clone(), GroupSlug::from_name(&g.group.slug)), p);
                    }
                    None => tracing::warn!(
                        project = %key,
                        group = g.group.slug,
                        permission = g.permission,
                        "unknown project permission; left untouched"
                    ),
                }
            }
        }
    }
    Ok(Read {
        actual,
        repos,
        projects,
        grant_read,
    })
}

/// The direct (per-user) grants of `people` on the managed repositories and projects, read
/// before anything is deleted (a DELETE answering 404 is still a write). Per person, the
/// workspace listing of effective permissions filtered on them names the managed repositories
/// they reach; each is then asked whether the grant is direct (200) or not (404). When that
/// would take more requests than listing the user grants of every managed repository once
/// (people reaching many repositories through groups), or when the filter is refused or
/// ignored, the repositories are listed instead. Managed projects: each one's user grants,
/// listed once. See docs/offboarding.md.
pub async fn read_direct_grants(
    clients: &Clients,
    people: &BTreeSet<AccountId>,
    repo_scope: &BTreeSet<RepoSlug>,
    project_scope: &BTreeSet<ProjectKey>,
) -> Result<BTreeMap<(GrantTarget, AccountId), String>, ApiError> {
    let mut out = BTreeMap::new();
    if people.is_empty() {
        return Ok(out);
    }
    let perms = clients.get(ApiFamily::PermissionsRead);
    let user_grants = |listed: Vec<crate::bitbucket::dto::V2UserPermission>,
                       target: GrantTarget,
                       out: &mut BTreeMap<(GrantTarget, AccountId), String>| {
        for u in listed {
            if let Some(id) = u
                .user
                .account_id
                .as_deref()
                .and_then(|a| AccountId::parse(a).ok())
            {
                if people.contains(&id) {
                    out.insert((target.clone(), id), u.permission);
                }
            }
        }
    };
    if !repo_scope.is_empty() {
        // Which managed repositories each person reaches; None: list every repository.
        let mut reached: Option<Vec<(&AccountId, RepoSlug)>> = Some(Vec::new());
        for id in people {
            match perms.repositories_of(id.as_str()).await? {
                Some(slugs) => {
                    if let Some(r) = reached.as_mut() {
                        r.extend(
                            slugs
                                .iter()
                                .map(|s| RepoSlug::new(s))
                                .filter(|s| repo_scope.contains(s))
                                .map(|s| (id, s)),
                        );
                    }
                }
                None => {
                    tracing::info!("the effective-permissions listing does not filter on the user; listing each managed repository's user grants instead");
                    reached = None;
                    break;
                }
            }
        }
        match reached.filter(|r| r.len() <= repo_scope.len()) {
            Some(reached) => {
                for (id, slug) in reached {
                    let who = Principal::User(id.as_str());
                    if let Some(p) = perms.permission(Target::Repo(&slug), who).await? {
                        out.insert((GrantTarget::Repo(slug), id.clone()), p);
                    }
                }
            }
            None => {
                for repo in repo_scope {
                    let listed = perms
                        .permissions(Target::Repo(repo), PrincipalKind::Users)
                        .await?;
                    user_grants(listed, GrantTarget::Repo(repo.clone()), &mut out);
                }
            }
        }
    }
    for key in project_scope {
        let listed = perms
            .permissions(Target::Project(key), PrincipalKind::Users)
            .await?;
        user_grants(listed, GrantTarget::Project(key.clone()), &mut out);
    }
    Ok(out)
}

/// The state file could not keep who is to be suspended: a vanished person whose suspension is
/// planned keeps their memberships and direct grants (what keeps them visible to the next run)
/// and is not suspended this run. Leavers are visible anyway (their disabled entry).
fn hold_unrememberable(plan: &mut Plan, error: &str) {
    let vanished: BTreeSet<AccountId> = plan
        .changes
        .iter()
        .filter(|p| {
            p.change.kind() == plan::ChangeKind::SuspendInOrg
                && matches!(p.reason, plan::Reason::Vanished { .. })
        })
        .filter_map(|p| p.change.account().cloned())
        .collect();
    for p in plan.changes.iter_mut().filter(|p| {
        p.blocked.is_none()
            && matches!(p.reason, plan::Reason::Vanished { .. })
            && p.change.account().is_some_and(|a| vanished.contains(a))
    }) {
        p.blocked = Some(BlockReason::StateUnwritable {
            error: error.to_owned(),
        });
    }
}

/// Everything one reconcile needs.
pub struct Reconciler {
    pub cfg: Config,
    pub source: Source,
    pub clients: Clients,
    /// `offboarding.state_dir`'s state file (written by applying runs only).
    state: Option<crate::state::StateFile>,
    /// Opened by the first run that applies; a plan never creates or opens the audit file.
    audit: std::sync::Mutex<Option<Arc<Audit>>>,
    /// One writer per workspace: taken by the first applying run, held until the reconciler
    /// is dropped (a daemon holds it for its lifetime).
    lock: Arc<std::sync::Mutex<Option<crate::lock::WorkspaceLock>>>,
    /// Cancelled when bbsync is stopping: an apply in progress starts no new change.
    shutdown: tokio_util::sync::CancellationToken,
    /// Held by a full run from start to end, and by an off-boarding poll that applies on its
    /// own: two applies never plan against each other's half-done work.
    slot: Arc<tokio::sync::Mutex<()>>,
    /// What the last full run saw, and the apply in progress (for the off-boarding poll).
    current: std::sync::Mutex<poll::Current>,
    /// Told when a full run's apply starts (a poll waiting for the slot submits into it).
    live_changed: tokio::sync::Notify,
    /// The workspace kind as the read-only signals told it, once read.
    detected: tokio::sync::Mutex<Option<(detect::Detected, String)>>,
}

pub mod grant_reader;
pub mod identity;
mod poll;
mod spill;
pub use grant_reader::GrantRead;
pub use poll::PollReport;
pub use spill::SpillError;

impl Reconciler {
    pub fn new(cfg: Config) -> Result<Reconciler, RunError> {
        let clients = clients_for(&cfg)?;
        let source = source_for(&cfg, &clients);
        Ok(Reconciler {
            source,
            state: cfg
                .offboarding
                .state_dir
                .as_deref()
                .map(crate::state::StateFile::in_dir),
            cfg,
            clients,
            audit: std::sync::Mutex::new(None),
            lock: Arc::new(std::sync::Mutex::new(None)),
            shutdown: tokio_util::sync::CancellationToken::new(),
            slot: Arc::new(tokio::sync::Mutex::new(())),
            current: std::sync::Mutex::new(poll::Current::default()),
            live_changed: tokio::sync::Notify::new(),
            detected: tokio::sync::Mutex::new(None),
        })
    }

    /// A reconciler for `cfg` that takes this one's place (SIGHUP): it waits until no run or
    /// poll is applying, then takes over the workspace lock (or takes the new one first, when
    /// the state directory moved), the run slot and the shutdown token. The audit file is
    /// opened anew on its first apply (logrotate's rename is followed). What the last full
    /// run saw is not carried over: the rules may have changed.
    pub async fn reload(&self, cfg: Config) -> Result<Reconciler, RunError> {
        let mut next = Reconciler::new(cfg)?;
        next.shutdown = self.shutdown.clone();
        next.slot = Arc::clone(&self.slot);
        let _slot = self.slot.lock().await;
        let mut mine = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if mine.is_some() {
            let same = match (&*mine, next.lock_dir()) {
                (Some(held), Some(dir)) => held.path() == dir.join(crate::lock::LOCK_FILE),
                _ => false,
            };
            if same {
                // Shared, not moved: a run of the old configuration still waiting for the
                // slot finds the lock held by this process, not taken by a stranger.
                drop(mine);
                next.lock = Arc::clone(&self.lock);
            } else {
                next.take_lock()?;
                *mine = None;
            }
        }
        Ok(next)
    }

    /// Closes the audit file; the next apply opens it again by its path (logrotate renamed
    /// it). An apply in progress finishes writing to the file it opened.
    pub fn reopen_audit(&self) {
        *self.audit.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// This reconciler, stopped by `token` (the daemon's shutdown).
    pub fn with_shutdown(mut self, token: tokio_util::sync::CancellationToken) -> Reconciler {
        self.shutdown = token;
        self
    }

    /// The token that stops this reconciler's applies (cancel it to shut down gracefully).
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    /// Where the workspace lock lives: `offboarding.state_dir`, else the audit file's
    /// directory.
    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        self.cfg.offboarding.state_dir.clone().or_else(|| {
            self.cfg
                .audit_path
                .as_deref()
                .and_then(std::path::Path::parent)
                .map(|d| {
                    if d.as_os_str().is_empty() {
                        std::path::PathBuf::from(".")
                    } else {
                        d.to_path_buf()
                    }
                })
        })
    }

    /// Takes the workspace lock (once; kept).
    fn take_lock(&self) -> Result<(), RunError> {
        let mut slot = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        match self.lock_dir() {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| {
                    crate::lock::LockError::Io {
                        path: dir.clone(),
                        source,
                    }
                })?;
                *slot = Some(crate::lock::WorkspaceLock::acquire(&dir)?);
            }
            None => tracing::warn!(
                "neither offboarding.state_dir nor audit.path is set: a second bbsync applying to this workspace cannot be detected"
            ),
        }
        Ok(())
    }

    /// The audit trail, opened (its directory created) on first use.
    fn audit(&self) -> Result<Arc<Audit>, RunError> {
        let mut slot = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = slot.as_ref() {
            return Ok(Arc::clone(a));
        }
        let audit = Arc::new(match &self.cfg.audit_path {
            Some(p) => Audit::to_file_with(
                p,
                match self.cfg.audit_fsync {
                    crate::config::AuditFsync::Always => crate::apply::audit::FsyncPolicy::Always,
                    crate::config::AuditFsync::Never => crate::apply::audit::FsyncPolicy::Never,
                },
            )
            .map_err(|source| RunError::Audit {
                path: p.display().to_string(),
                source,
            })?,
            None => Audit::to_log(),
        });
        *slot = Some(Arc::clone(&audit));
        Ok(audit)
    }

    /// Which backend writes memberships (`bitbucket.membership_backend`). `auto` with
    /// `[admin_api]` reads the signals ([`crate::bitbucket::detect`]) at once; `v1_groups`
    /// (or `auto` without `[admin_api]`) only when `needed` (the plan has a membership change
    /// to write). What was read is kept for the process: a workspace does not change kind
    /// between two runs.
    pub async fn choose_backend(&self, needed: bool) -> Choice {
        let setting = self.cfg.bitbucket.membership_backend;
        let admin = self.cfg.admin_api.is_some();
        let ask = match setting {
            MembershipBackendKind::AdminApi => false,
            MembershipBackendKind::Auto if admin => true,
            _ => needed,
        };
        let mut detected = None;
        if ask {
            let mut kept = self.detected.lock().await;
            if kept.is_none() {
                let names: Vec<String> = self.cfg.groups.iter().map(|g| g.name.clone()).collect();
                let signals = detect::detect(&self.cfg, &self.clients, &names).await;
                let judged = detect::judge(&signals);
                tracing::info!(kind = ?judged.0, evidence = judged.1, "workspace kind, told without writing");
                *kept = Some(judged);
            }
            detected = kept.clone();
        }
        let mut choice = detect::choose(setting, detected, admin);
        if setting == MembershipBackendKind::V1Groups && !ask {
            choice.reason = format!(
                "{} (the workspace kind is read when a membership change is planned)",
                choice.reason
            );
        }
        choice
    }

    /// The backend `kind` names; the Admin API one shares `members` (who is a workspace
    /// member) with the run.
    pub fn backend_for(
        &self,
        kind: MembershipBackendKind,
        members: &Arc<V1Groups>,
    ) -> Arc<dyn MembershipBackend> {
        if kind == MembershipBackendKind::AdminApi {
            if let Some(admin) = self.clients.admin_api(&self.cfg, Arc::clone(members)) {
                return Arc::new(admin);
            }
        }
        Arc::clone(members) as Arc<dyn MembershipBackend>
    }

    /// Marks changes the configured credentials cannot perform as blocked, with the reason,
    /// before anything is sent (the rest of the plan still applies). A write-only credential
    /// that has not made a call yet is introduced with one cheap call first, so its scopes (or
    /// its rejection) are known when planning.
    async fn block_what_credentials_cannot_do(&self, plan: &mut Plan, membership: ApiFamily) {
        let grant_writes = self.cfg.bitbucket.grant_writes;
        let families: BTreeSet<ApiFamily> = plan
            .runnable()
            .map(|c| family_of(c, membership, grant_writes))
            .collect();
        let mut rejected: BTreeMap<ApiFamily, String> = BTreeMap::new();
        for f in families {
            let client = self.clients.get(f);
            let kind = self.clients.kind(f);
            if client.granted_scopes().is_some()
                || matches!(
                    kind,
                    CredentialKind::AccessToken | CredentialKind::AdminApiKey
                )
            {
                continue;
            }
            let why = match crate::check::introduce(client, kind).await {
                CredentialStatus::Rejected { reason } => Some(reason),
                CredentialStatus::WrongWorkspace { .. } => Some(format!(
                    "credential {:?} does not see workspace {:?}",
                    self.clients.credential(f),
                    self.cfg.bitbucket.workspace
                )),
                _ => None,
            };
            if let Some(why) = why {
                rejected.insert(f, why);
            }
        }
        for p in plan.changes.iter_mut().filter(|p| p.blocked.is_none()) {
            let family = family_of(&p.change, membership, grant_writes);
            let credential = self.clients.credential(family).to_owned();
            p.blocked = match rejected.get(&family) {
                Some(detail) => Some(BlockReason::CredentialRejected {
                    family,
                    credential,
                    detail: detail.clone(),
                }),
                None => {
                    let kind = self.clients.kind(family);
                    family
                        .credential_gap(
                            kind,
                            self.clients.get(family).granted_scopes().as_deref(),
                            p.change.is_deletion(),
                        )
                        .map(|detail| BlockReason::CredentialCannot {
                            family,
                            credential,
                            kind,
                            detail,
                        })
                }
            };
        }
    }

    /// An entry that could not be used (no or malformed account id, a DN held twice) must not
    /// make its person look gone: the workspace members with its email keep exactly what they
    /// have. Fails closed when the lookup fails.
    async fn freeze_accounts_of_unusable_entries(
        &self,
        dir: &mut crate::directory::Directory,
    ) -> Result<(), RunError> {
        if dir.unusable_emails.is_empty() {
            return Ok(());
        }
        let found = self
            .clients
            .get(ApiFamily::MembersRead)
            .members_by_email(&dir.unusable_emails)
            .await
            .map_err(|e| RunError::Read(Box::new(e)))?;
        for (email, id) in found {
            match crate::model::AccountId::parse(&id) {
                Ok(id) => {
                    tracing::warn!(email, account_id = %id, "an unusable directory entry has this member's email: their access is left as it is");
                    dir.frozen.insert(id);
                }
                Err(e) => tracing::warn!(email, error = e, "member with a malformed account id"),
            }
        }
        Ok(())
    }

    /// The persisted state, and whether when people went missing is unknown (the file is
    /// unreadable: no vanished removal until it is re-established).
    fn load_state(&self, apply: bool) -> (crate::state::State, bool) {
        let Some(file) = &self.state else {
            return (crate::state::State::default(), false);
        };
        match file.load() {
            Ok(Some(s)) => (s, false),
            Ok(None) => {
                tracing::info!(path = %file.path().display(), "no state file yet: people without a directory entry start their grace now");
                (crate::state::State::default(), false)
            }
            Err(e) => {
                tracing::error!(error = %e, "state unavailable: no one without a directory entry is removed this run");
                if apply && matches!(e, crate::state::StateError::Corrupt { .. }) {
                    // Kept for a person to look at; an applying run writes a fresh state, from
                    // which the grace of everyone missing starts again.
                    match file.set_aside() {
                        Ok(to) => {
                            tracing::warn!(kept = %to.display(), "the corrupt state file was moved aside")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot move the corrupt state file aside")
                        }
                    }
                }
                (crate::state::State::default(), true)
            }
        }
    }

    /// Saves the state; a failure is returned as a warning for the report.
    fn save_state(&self, state: &crate::state::State) -> Option<String> {
        let file = self.state.as_ref()?;
        let e = file.save(state).err()?;
        tracing::error!(error = %e, "cannot save the state: a restart forgets when people went missing");
        Some(format!(
            "{e}: when people went missing and who is clean is not kept"
        ))
    }

    /// `offboarding.suspend_in_org`: reads where the candidates ([`plan::org_candidates`])
    /// stand in the organisation directory, into `actual.org_users`, and keeps the state's
    /// books:
    /// - an offboarded person found suspended already (or not in the directory, or with a
    ///   status bbsync does not know) is settled, and not asked again before
    ///   `offboarding.recheck_secs`; found suspended after bbsync sent a suspension whose
    ///   answer was lost, they are bbsync's suspension;
    /// - one found active is pending until a suspension is confirmed;
    /// - someone bbsync suspended whom the directory has active again, but whom the
    ///   organisation shows active (restored by hand) or not at all, is bbsync's no longer.
    ///
    /// A failed read fails the run (nothing changed).
    #[allow(clippy::too_many_arguments)]
    async fn read_org_users(
        &self,
        org: &Option<crate::bitbucket::AdminApi>,
        desired: &mapping::Desired,
        gone: &BTreeMap<AccountId, plan::Reason>,
        policy: &Policy,
        actual: &mut Actual,
        state: &mut crate::state::State,
        now: SystemTime,
    ) -> Result<(), RunError> {
        let Some(org) = org else {
            return Ok(());
        };
        let (suspend, restore) = plan::org_candidates(desired, gone, policy);
        let now_secs = crate::state::to_unix(now);
        state.org_settled.retain(|id, _| suspend.contains_key(id));
        state.org_pending.retain(|id, _| suspend.contains_key(id));
        let ask: BTreeSet<AccountId> = suspend
            .keys()
            .filter(|id| !state.org_settled.contains_key(*id))
            .chain(restore.iter())
            .cloned()
            .collect();
        if ask.is_empty() {
            return Ok(());
        }
        let asked: Vec<AccountId> = ask.iter().cloned().collect();
        actual.org_users = org
            .org_users(&asked)
            .await
            .map_err(|e| RunError::Read(Box::new(e)))?;
        for id in suspend.keys().filter(|id| ask.contains(*id)) {
            match actual.org_users.get(id).map(|u| u.status) {
                Some(plan::OrgStatus::Active) => {
                    state.org_pending.entry(id.clone()).or_insert(
                        crate::state::PendingSuspension {
                            since: now_secs,
                            sent: false,
                        },
                    );
                }
                Some(status) => {
                    if status == plan::OrgStatus::Suspended
                        && state.org_pending.get(id).is_some_and(|p| p.sent)
                    {
                        // The answer to bbsync's own suspension was lost.
                        state.org_suspended.insert(id.clone(), now_secs);
                    }
                    state.org_pending.remove(id);
                    state.org_settled.insert(id.clone(), now_secs);
                }
                // A status bbsync does not know (warned about): asked again after the recheck.
                None => {
                    state.org_settled.insert(id.clone(), now_secs);
                }
            }
        }
        for id in &restore {
            if actual
                .org_users
                .get(id)
                .is_some_and(|u| u.status != plan::OrgStatus::Suspended)
            {
                tracing::info!(account_id = %id, "someone bbsync suspended is not suspended any more (restored by hand?): no longer restored by bbsync");
                state.org_suspended.remove(id);
            }
        }
        Ok(())
    }

    /// The state's books after the organisation changes of an apply (or of an interrupted
    /// run, settled): a suspension bbsync made is bbsync's; one the organisation had already
    /// (409) is not; one whose answer was lost may be; a restore ends bbsync's suspension.
    fn book_org_outcome(
        state: &mut crate::state::State,
        change: &plan::Change,
        outcome: &crate::apply::Outcome,
        now_secs: u64,
    ) {
        use crate::apply::Outcome;
        match (change, outcome) {
            (plan::Change::SuspendInOrg { account_id, .. }, o) if o.is_done() => {
                state.org_pending.remove(account_id);
                state.org_settled.insert(account_id.clone(), now_secs);
                if *o != Outcome::AlreadyDone {
                    state.org_suspended.insert(account_id.clone(), now_secs);
                }
            }
            (plan::Change::SuspendInOrg { account_id, .. }, Outcome::Failed { status, .. })
                if status.is_none_or(|s| s >= 500) =>
            {
                if let Some(p) = state.org_pending.get_mut(account_id) {
                    p.sent = true;
                }
            }
            (plan::Change::RestoreInOrg { account_id, .. }, o) if o.is_done() => {
                state.org_suspended.remove(account_id);
            }
            _ => {}
        }
    }

    /// Reads, plans and (when `apply`) applies.
    pub async fn run(&self, apply: bool) -> Result<RunReport, RunError> {
        self.run_gated(apply, &Gate::default()).await
    }

    /// [`Reconciler::run`] behind a [`Gate`]: a reviewed plan is applied only when this run
    /// computes exactly it from exactly the same inputs, and an approved held revocation set
    /// is let through the guards only when this run's revocations are exactly that set.
    pub async fn run_gated(&self, apply: bool, gate: &Gate) -> Result<RunReport, RunError> {
        self.run_as(apply, gate, new_run_id()).await
    }

    /// [`Reconciler::run_gated`] with the run id given (the daemon shows it before the run
    /// ends).
    pub async fn run_as(
        &self,
        apply: bool,
        gate: &Gate,
        run_id: String,
    ) -> Result<RunReport, RunError> {
        let span = tracing::info_span!("reconcile", run_id, apply);
        self.run_inner(apply, run_id, gate).instrument(span).await
    }

    async fn run_inner(
        &self,
        apply: bool,
        run_id: String,
        gate: &Gate,
    ) -> Result<RunReport, RunError> {
        let _slot = self.slot.lock().await;
        let started = Instant::now();
        let started_at = crate::time::now_rfc3339();
        let read_at = SystemTime::now();
        let requests_before = self.clients.request_counts();
        let requests_since = |clients: &Clients| -> BTreeMap<String, u64> {
            clients
                .request_counts()
                .into_iter()
                .map(|(n, c)| {
                    let before = requests_before.get(&n).copied().unwrap_or_default();
                    (n, c - before)
                })
                .collect()
        };

        // Before anything is read: an apply that could not audit, or that another bbsync is
        // already running, must not start.
        if apply {
            self.take_lock()?;
        }
        // A budget spent by the last run may try again (its pause and pace remain).
        self.clients.new_run();
        let audit = if apply { Some(self.audit()?) } else { None };
        let mut timings = Timings::default();
        let mut phase = Instant::now();
        let mut lap = |into: &mut u64| {
            *into = phase.elapsed().as_millis() as u64;
            phase = Instant::now();
        };
        let mut dir = self.source.read().await?;
        self.freeze_accounts_of_unusable_entries(&mut dir).await?;
        lap(&mut timings.source);
        for issue in &dir.issues {
            tracing::warn!(
                dn = issue.dn,
                problem = issue.problem,
                "skipped directory entry"
            );
        }
        let source = SourceSummary {
            description: self.source.describe(),
            people: dir.people.len(),
            active: dir.active_people(),
            leavers: dir.people.len() - dir.active_people(),
            groups: dir.groups.len(),
            issues: dir.issues.clone(),
            unresolved: dir.unresolved.clone(),
        };
        // Map before reading Bitbucket: a mapping error costs no API calls.
        let groups = mapping::desired_groups(&dir, &self.cfg.groups)?;
        // One backend per run: what it learns of the workspace (who is who) is per run too.
        // Kept with the snapshot: the off-boarding poll names people by the UUIDs this run's
        // group read learnt (no member listing per poll).
        let members = Arc::new(self.clients.v1_groups());
        let mut choice = self.choose_backend(false).await;
        let backend = self.backend_for(choice.backend, &members);
        // The organisation directory (`[admin_api]`): suspensions, restores, and settling an
        // interrupted one.
        let org = self.clients.admin_api(&self.cfg, Arc::clone(&members));
        tracing::info!(
            backend = backend.name(),
            reason = choice.reason,
            "membership backend"
        );
        let read = read_actual(&self.cfg, &*backend, &self.clients)
            .await
            .map_err(|e| RunError::Read(Box::new(e)))?;
        lap(&mut timings.bitbucket_read);
        let Read {
            mut actual,
            repos,
            projects,
            grant_read,
        } = read;
        // An interrupted run's changes with no outcome: settled from what was just read.
        let mut recovered_org = Vec::new();
        if let Some(audit) = &audit {
            let mut r = crate::apply::recover::recover(
                audit,
                &run_id,
                &actual,
                &self.clients,
                org.as_ref(),
            )
            .await
            .map_err(|source| RunError::Recovery {
                path: audit
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            })?;
            recovered_org = std::mem::take(&mut r.org_done);
            if r.done + r.not_done + r.unsettled > 0 {
                tracing::warn!(
                    done = r.done,
                    not_done = r.not_done,
                    unsettled = r.unsettled,
                    "settled the changes an interrupted run left without an outcome"
                );
            }
        }

        let now = SystemTime::now();
        let (mut state, vanished_unknown) = self.load_state(apply);
        let recheck_org = self.cfg.offboarding.recheck.as_secs();
        let now_org = crate::state::to_unix(now);
        for c in &recovered_org {
            Self::book_org_outcome(&mut state, c, &crate::apply::Outcome::Applied, now_org);
        }
        state
            .org_settled
            .retain(|_, at| now_org.saturating_sub(*at) < recheck_org);
        let mut desired = mapping::desired_with_groups(
            groups,
            &dir,
            &self.cfg,
            mapping::Workspace {
                repos: &repos,
                projects: &projects,
                protected: self.cfg.protected.iter().cloned().collect(),
                first_missing: BTreeMap::new(),
            },
        );
        // Vanished members: first seen missing now, unless the state remembers earlier.
        let missing: BTreeSet<AccountId> = plan::managed_groups(&desired, &actual)
            .flat_map(|g| g.members.keys())
            .filter(|id| !desired.known.contains(*id) && !desired.frozen.contains(*id))
            .cloned()
            .collect();
        state.first_missing.retain(|id, _| missing.contains(id));
        for id in &missing {
            state
                .first_missing
                .entry(id.clone())
                .or_insert(crate::state::to_unix(now));
        }
        desired.first_missing = state
            .first_missing
            .iter()
            .map(|(id, t)| (id.clone(), crate::state::from_unix(*t)))
            .collect();
        lap(&mut timings.mapping);
        // Someone found clean is read again after offboarding.recheck_secs (a direct grant
        // given by hand after they left), and everyone when the managed scope changed.
        let scope = plan::fingerprint(&(&desired.repo_scope, &desired.project_scope));
        if state.scope.as_deref() != Some(scope.as_str()) {
            state.offboarded_clean.clear();
            state.scope = Some(scope);
        }
        let recheck = self.cfg.offboarding.recheck.as_secs();
        let now_secs = crate::state::to_unix(now);
        state.offboarded_clean.retain(|id, at| {
            desired.leavers.contains_key(id) && now_secs.saturating_sub(*at) < recheck
        });
        let safety = &self.cfg.safety;
        let policy = Policy {
            max_removals: safety.max_removals,
            max_removal_ratio: safety.max_removal_ratio,
            min_managed_for_ratio: 20,
            max_group_removal_ratio: safety.max_group_removal_ratio,
            big_group: safety.big_group_size,
            max_shrink_ratio: safety.max_shrink_ratio,
            people_now: dir.people.len(),
            people_before: state.last_good_people,
            approved: gate.approved.clone(),
            now,
            missing_grace: self.cfg.offboarding.missing_grace,
            vanished_unknown,
            suspend_in_org: self.cfg.offboarding.suspend_in_org,
            suspended_by_bbsync: state.org_suspended.keys().cloned().collect(),
            // Someone pending and invisible now has vanished (a leaver is offboarded anyway).
            suspend_pending: state
                .org_pending
                .iter()
                .map(|(id, p)| {
                    let since = desired
                        .first_missing
                        .get(id)
                        .copied()
                        .unwrap_or(crate::state::from_unix(p.since));
                    (
                        id.clone(),
                        plan::Reason::Vanished {
                            since: crate::time::format_rfc3339(since),
                        },
                    )
                })
                .collect(),
        };

        // Whose direct grants to read: offboarded people who are visible (in a managed group,
        // being removed now), and, with a state file, every leaver not yet found clean; never
        // when nothing is managed to hold direct grants.
        let manages_targets = !desired.repo_scope.is_empty() || !desired.project_scope.is_empty();
        let to_check = |gone: &BTreeMap<AccountId, plan::Reason>,
                        desired: &mapping::Desired,
                        actual: &Actual|
         -> BTreeSet<AccountId> {
            if !self.cfg.offboarding.direct_grants || !manages_targets {
                return BTreeSet::new();
            }
            let visible: BTreeSet<&AccountId> = plan::managed_groups(desired, actual)
                .flat_map(|g| g.members.keys())
                .collect();
            gone.keys()
                .filter(|id| {
                    visible.contains(id)
                        || (self.state.is_some() && !state.offboarded_clean.contains_key(*id))
                })
                .cloned()
                .collect()
        };
        // The workspace owner (and whoever Bitbucket lists as owner) is never taken anything
        // from: asked for only when something would be taken away from someone.
        let mut gone = plan::offboarded(&desired, &actual, &policy);
        if plan::has_unwanted_members(&desired, &actual)
            || !to_check(&gone, &desired, &actual).is_empty()
            || plan::org_candidates(&desired, &gone, &policy)
                .0
                .keys()
                .any(|id| !state.org_settled.contains_key(id))
        {
            let owners = self
                .clients
                .get(ApiFamily::GroupsRead)
                .workspace_owners()
                .await
                .map_err(|e| RunError::Read(Box::new(e)))?;
            desired
                .protected
                .extend(owners.iter().filter_map(|o| AccountId::parse(o).ok()));
            gone = plan::offboarded(&desired, &actual, &policy);
        }
        let check = to_check(&gone, &desired, &actual);
        if !check.is_empty() {
            let existing: BTreeSet<ProjectKey> = desired
                .project_scope
                .intersection(&projects)
                .cloned()
                .collect();
            actual.direct_grants =
                read_direct_grants(&self.clients, &check, &desired.repo_scope, &existing)
                    .await
                    .map_err(|e| RunError::Read(Box::new(e)))?;
        }
        // Invitations by email (source.invite_unresolved): the pending ones, on a classic
        // workspace (an organisation-managed one has them off: blocked below, with why).
        let mut invitations_unread = None;
        if !desired.invitations.is_empty() && choice.backend == MembershipBackendKind::V1Groups {
            match self
                .clients
                .get(ApiFamily::GroupsRead)
                .group_invitations()
                .await
            {
                Ok(pending) => actual.invitations = pending,
                Err(e) => invitations_unread = Some(e.to_string()),
            }
            // Sent lately: accepted, perhaps, and not resolved yet; not sent again for now.
            let window = self
                .cfg
                .source
                .hr()
                .map_or(86_400, |h| h.identity_cache_ttl.as_secs().max(3_600));
            let now_secs = crate::state::to_unix(now);
            state
                .invited
                .retain(|_, at| now_secs.saturating_sub(*at) < window);
            for inv in &desired.invitations {
                let group = plan::resolve_group(&desired, &actual, &inv.group);
                if state
                    .invited
                    .contains_key(&crate::state::invitation_key(&group, &inv.email))
                {
                    actual.invitations.insert((
                        crate::model::Email::new(&inv.email).folded().to_owned(),
                        group,
                    ));
                }
            }
        }
        if policy.suspend_in_org {
            self.read_org_users(&org, &desired, &gone, &policy, &mut actual, &mut state, now)
                .await?;
        }
        let mut plan = plan::plan(&desired, &actual, &policy);
        // People a rule wants in a group who cannot be added are reported, not failed.
        let adds: Vec<AccountId> = plan
            .changes
            .iter()
            .filter_map(|p| match &p.change {
                plan::Change::AddMember { account_id, .. } => Some(account_id.clone()),
                _ => None,
            })
            .collect();
        if !adds.is_empty() {
            let not_members = backend
                .not_members(&adds)
                .await
                .map_err(|e| RunError::Read(Box::new(e)))?;
            plan.unresolve(&not_members);
        }
        if let Some(e) = invitations_unread {
            // A side feature: its read failing holds only the invitations.
            tracing::warn!(
                error = e,
                "cannot read the pending invitations: none is sent this run"
            );
            plan.warnings.push(format!(
                "the pending invitations could not be read ({e}): none is sent this run"
            ));
            plan.changes
                .retain(|p| p.change.kind() != plan::ChangeKind::InviteToGroup);
        }
        if choice.backend == MembershipBackendKind::AdminApi {
            for p in plan.changes.iter_mut().filter(|p| {
                p.blocked.is_none() && p.change.kind() == plan::ChangeKind::InviteToGroup
            }) {
                p.blocked = Some(BlockReason::WrongBackend {
                    detail: "an organisation-managed workspace has the 1.0 invitations off: invite this person in admin.atlassian.com, or set source.invite_unresolved = false".into(),
                });
            }
        }
        // 1.0 groups on an organisation-managed workspace: told before any write (one
        // read, once per process) when there is a membership change to write.
        if choice.backend == MembershipBackendKind::V1Groups
            && plan.changes.iter().any(|p| p.change.is_membership())
        {
            choice = self.choose_backend(true).await;
            if let Some(why) = &choice.blocked {
                tracing::error!(reason = choice.reason, "{why}");
                for p in plan
                    .changes
                    .iter_mut()
                    .filter(|p| p.blocked.is_none() && p.change.is_membership())
                {
                    p.blocked = Some(BlockReason::WrongBackend {
                        detail: why.clone(),
                    });
                }
            }
        }
        self.block_what_credentials_cannot_do(&mut plan, backend.write_family())
            .await;
        lap(&mut timings.planning);
        for w in &plan.warnings {
            tracing::warn!("{w}");
        }
        for n in &plan.notes {
            tracing::warn!("{n}");
        }
        tracing::info!(
            people = source.people,
            leavers = source.leavers,
            repos = repos.len(),
            changes = plan.changes.len(),
            skipped = plan.skipped.len(),
            "planned"
        );

        let inputs = Inputs {
            directory: plan::fingerprint(&(&dir.people, &dir.groups, &dir.frozen)),
            bitbucket: plan::fingerprint(&(&actual, &repos, &projects, &desired.protected)),
            // What is done; not why in words (a vanished person's "since" is the time of the
            // run when no state keeps it) nor whether a guard holds it (an approval changes
            // that).
            changes: plan::fingerprint(&plan.changes.iter().map(|p| &p.change).collect::<Vec<_>>()),
        };
        if let Some(expect) = &gate.expect {
            let mut moved = Vec::new();
            if expect.directory != inputs.directory {
                moved.push("the directory changed since the plan was written");
            }
            if expect.bitbucket != inputs.bitbucket {
                moved.push("Bitbucket changed since the plan was written");
            }
            if moved.is_empty() && expect.changes != inputs.changes {
                moved.push("the same inputs now plan other changes (a grace ran out, or the configuration changed)");
            }
            if !moved.is_empty() {
                return Err(RunError::PlanMoved(format!(
                    "{}; write and review a new plan",
                    moved.join("; ")
                )));
            }
        }

        // The baseline of the off-boarding poll: who is a leaver already, and what to take
        // from someone who becomes one. The desired and actual states move into it (nothing
        // below needs them but these counts): a copy would be the run's peak at 100k people.
        let repositories_in_scope = desired.repo_scope.len();
        self.keep_snapshot(poll::Snapshot {
            generation: fastrand::u64(..),
            read_at,
            people: dir
                .people
                .iter()
                .map(|(id, p)| (id.clone(), (p.dn.clone(), p.display_name.clone())))
                .collect(),
            desired,
            actual,
            policy: policy.clone(),
            membership: backend.write_family(),
            members: Arc::clone(&members),
            backend: Arc::clone(&backend),
        });
        lap(&mut timings.fingerprints);

        let mut outcomes = Vec::new();
        if let Some(audit) = &audit {
            if policy.suspend_in_org
                && plan
                    .changes
                    .iter()
                    .any(|p| p.change.kind() == plan::ChangeKind::SuspendInOrg)
            {
                // Who is to be suspended is on disk before anything is removed: someone who
                // vanished is invisible to the next run once their memberships are gone.
                if let Some(file) = &self.state {
                    if let Err(e) = file.save(&state) {
                        tracing::error!(error = %e, "cannot save the state before applying: vanished people to be suspended keep their memberships this run");
                        plan.warnings.push(format!("{e}: vanished people to be suspended keep their memberships until it can be written"));
                        hold_unrememberable(&mut plan, &e.to_string());
                    }
                }
            }
            let applier = Applier {
                clients: &self.clients,
                members: &*backend,
                org: org.as_ref(),
                grant_writes: self.cfg.bitbucket.grant_writes,
                audit,
                run_id: &run_id,
                settings: self.cfg.apply.clone(),
                stop: Some(&self.shutdown),
            };
            outcomes = self.apply_live(&applier, &plan).await;
            // Whose direct grants are now clean: everyone checked whose removals all went
            // through (their next runs need not read again).
            for id in &check {
                let pending = outcomes.iter().any(|o| {
                    matches!(&o.change, plan::Change::RemoveUserGrant { account_id, .. } if account_id == id)
                        && !o.outcome.is_done()
                });
                if !pending && self.cfg.offboarding.direct_grants {
                    state
                        .offboarded_clean
                        .insert(id.clone(), crate::state::to_unix(now));
                }
            }
            // Suspended and restored in the organisation directory; invited.
            for o in &outcomes {
                Self::book_org_outcome(&mut state, &o.change, &o.outcome, now_secs);
                if let (plan::Change::InviteToGroup { group, email }, true) =
                    (&o.change, o.outcome.is_done())
                {
                    state
                        .invited
                        .insert(crate::state::invitation_key(group, email), now_secs);
                }
            }
            // A read the shrink guard did not hold (or that was approved) is the new baseline.
            if !plan
                .held
                .iter()
                .any(|g| matches!(g, plan::Guard::Shrink { .. }))
            {
                state.last_good_people = Some(dir.people.len());
            }
            if let Some(w) = self.save_state(&state) {
                plan.warnings.push(w);
            }
        }
        lap(&mut timings.apply);
        tracing::debug!(?timings, "phases");
        for g in &plan.held {
            tracing::error!(
                guard = g.label(),
                "safety guard tripped: {g}; revocations held, additions applied"
            );
        }

        let api_requests_by_credential = requests_since(&self.clients);
        Ok(RunReport {
            run_id,
            started_at,
            duration_ms: started.elapsed().as_millis() as u64,
            timings_ms: timings,
            applied: apply,
            source,
            repositories_in_scope,
            grant_reader: grant_read,
            membership_backend: choice,
            plan,
            inputs,
            outcomes,
            api_requests: api_requests_by_credential.values().sum(),
            api_requests_by_credential,
        })
    }
}
