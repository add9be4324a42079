//! `[scope]`, `[protected]` and `[offboarding]`: what bbsync may touch, whom it never takes
//! anything from, and how it treats people who left.

use super::paths::Paths;
use super::raw::{Field, Problems, RawTable, Table};
use super::RepoSelector;
use crate::model::{AccountId, ProjectKey, RepoSlug};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The managed scope. Grant rules apply inside it only; what they select outside it is skipped
/// and reported.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Scope {
    /// Repositories whose group grants bbsync manages: `include` minus `exclude`.
    pub include: RepoSelector,
    pub exclude: RepoSelector,
    /// Projects whose project-level group grants bbsync manages (independent of the
    /// repository scope).
    pub projects: Vec<ProjectKey>,
}

/// `[offboarding]`.
#[derive(Clone, Debug)]
pub struct Offboarding {
    /// How long a member of a managed group whose account id has no directory entry at all
    /// keeps their access (0: removed at once, like a leaver).
    pub missing_grace: Duration,
    /// Where bbsync keeps what must survive a restart (when people were first seen missing).
    pub state_dir: Option<PathBuf>,
    /// Remove offboarded people's direct (per-user) grants on managed repositories and
    /// projects.
    pub direct_grants: bool,
    /// How long someone whose direct grants were found clean is not read again.
    pub recheck: Duration,
    /// The daemon's fast off-boarding poll between full reconciles (`None`: off).
    pub poll_interval: Option<Duration>,
    /// Suspend offboarded people in the organisation directory (Admin API) once their
    /// memberships and direct grants are gone, and restore those bbsync suspended when they
    /// are active again.
    pub suspend_in_org: bool,
}

impl Default for Offboarding {
    fn default() -> Self {
        Offboarding {
            missing_grace: Duration::ZERO,
            state_dir: None,
            direct_grants: true,
            recheck: Duration::from_secs(86_400),
            poll_interval: Some(Duration::from_secs(30)),
            suspend_in_org: false,
        }
    }
}

/// A repository selector as written (`[scope.include]`, `[scope.exclude]`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawSelector {
    /// Every repository of these project keys.
    projects: Field<Vec<String>>,
    /// These repository slugs.
    repos: Field<Vec<String>>,
    /// Repository slugs matching these shell patterns (`*`, `?`, `[...]`), case-sensitive.
    globs: Field<Vec<String>>,
}

impl RawTable for RawSelector {}

/// `[scope]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawScope {
    /// `[scope.include]`: the repositories bbsync manages grants on.
    include: Table<RawSelector>,
    /// `[scope.exclude]`: repositories taken out of `include` again.
    exclude: Table<RawSelector>,
    /// Project keys whose project-level group grants bbsync manages.
    projects: Field<Vec<String>>,
}

impl RawTable for RawScope {}

/// `[protected]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawProtected {
    /// Account ids never removed from a group and never stripped of a direct grant (the
    /// workspace owner always is).
    accounts: Field<Vec<String>>,
}

impl RawTable for RawProtected {}

/// `[offboarding]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawOffboarding {
    /// Seconds a vanished person (in a managed group, no directory entry) keeps access; 0.
    missing_grace_secs: Field<u64>,
    /// Directory for the state file, relative to the configuration file.
    state_dir: Field<PathBuf>,
    /// Remove offboarded people's direct grants on managed repositories and projects; true.
    direct_grants: Field<bool>,
    /// Seconds before someone found clean is read again; 86400.
    recheck_secs: Field<u64>,
    /// Seconds between the daemon's light reads for new leavers; default 30, 0 turns it off.
    poll_interval_secs: Field<u64>,
    /// Suspend offboarded people in the organisation directory; false.
    suspend_in_org: Field<bool>,
}

impl RawTable for RawOffboarding {}

/// A selector from its three lists; `key` names it in problems.
pub(super) fn selector(
    key: &str,
    projects: Field<Vec<String>>,
    repos: Field<Vec<String>>,
    globs: Field<Vec<String>>,
    p: &mut Problems,
) -> RepoSelector {
    let projects = projects
        .get(&format!("{key}.projects"), p)
        .unwrap_or_default();
    let repos = repos.get(&format!("{key}.repos"), p).unwrap_or_default();
    let globs = globs.get(&format!("{key}.globs"), p).unwrap_or_default();
    for glob in &globs {
        if glob.trim().is_empty() {
            p.push(format!("{key}.globs"), "empty pattern");
        }
    }
    RepoSelector {
        projects: projects.iter().map(|k| ProjectKey::new(k)).collect(),
        repos: repos.iter().map(|r| RepoSlug::new(r)).collect(),
        // Globs match the whole slug, case-sensitively (slugs are lower-case).
        globs: globs
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

fn read_selector(raw: Table<RawSelector>, key: &str, p: &mut Problems) -> RepoSelector {
    let RawSelector {
        projects,
        repos,
        globs,
    } = raw.read(key, p).unwrap_or_default();
    selector(key, projects, repos, globs, p)
}

/// `[scope]`: `None` when the section is absent (then every repository a grant rule selects
/// is managed, and every project a project grant rule names).
pub(super) fn validate_scope(raw: Table<RawScope>, p: &mut Problems) -> Option<Scope> {
    let RawScope {
        include,
        exclude,
        projects,
    } = raw.read("scope", p)?;
    let include = read_selector(include, "scope.include", p);
    let exclude = read_selector(exclude, "scope.exclude", p);
    let projects = projects
        .get("scope.projects", p)
        .unwrap_or_default()
        .iter()
        .map(|k| ProjectKey::new(k))
        .collect();
    Some(Scope {
        include,
        exclude,
        projects,
    })
}

/// `[protected]`: the configured protected accounts, each a well-formed account id.
pub(super) fn validate_protected(raw: Table<RawProtected>, p: &mut Problems) -> Vec<AccountId> {
    let RawProtected { accounts } = raw.read("protected", p).unwrap_or_default();
    let mut out = Vec::new();
    for (i, a) in accounts
        .get("protected.accounts", p)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match AccountId::parse(a) {
            Ok(id) => out.push(id),
            Err(e) => p.push(format!("protected.accounts[{i}]"), e),
        }
    }
    out
}

/// `[offboarding]`.
pub(super) fn validate_offboarding(
    raw: Table<RawOffboarding>,
    paths: &Paths,
    p: &mut Problems,
) -> Offboarding {
    let RawOffboarding {
        missing_grace_secs,
        state_dir,
        direct_grants,
        recheck_secs,
        poll_interval_secs,
        suspend_in_org,
    } = raw.read("offboarding", p).unwrap_or_default();
    let suspend_in_org = suspend_in_org
        .get("offboarding.suspend_in_org", p)
        .unwrap_or(false);
    let poll = poll_interval_secs
        .get("offboarding.poll_interval_secs", p)
        .unwrap_or(30);
    if poll > 0 && poll < 5 {
        p.say(
            "offboarding.poll_interval_secs",
            "offboarding.poll_interval_secs must be 0 (off) or at least 5",
        );
    }
    let grace = missing_grace_secs
        .get("offboarding.missing_grace_secs", p)
        .unwrap_or(0);
    let state_dir = state_dir
        .get("offboarding.state_dir", p)
        .map(|d| paths.resolve(d));
    if grace > 0 && state_dir.is_none() {
        p.say(
            "offboarding.state_dir",
            "offboarding.state_dir is required when offboarding.missing_grace_secs > 0 (when someone was first seen missing must survive a restart)",
        );
    }
    if suspend_in_org && state_dir.is_none() {
        p.say(
            "offboarding.state_dir",
            "offboarding.state_dir is required when offboarding.suspend_in_org = true (whom bbsync suspended, the only people it restores, must survive a restart)",
        );
    }
    Offboarding {
        missing_grace: Duration::from_secs(grace),
        state_dir,
        direct_grants: direct_grants
            .get("offboarding.direct_grants", p)
            .unwrap_or(true),
        recheck: Duration::from_secs(
            recheck_secs
                .get("offboarding.recheck_secs", p)
                .unwrap_or(86_400),
        ),
        poll_interval: (poll > 0).then(|| Duration::from_secs(poll)),
        suspend_in_org,
    }
}
