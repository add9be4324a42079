//! Mapping rules: directory snapshot + configuration -> desired Bitbucket state. Pure.
//!
//! Disabled people are desired nowhere: that is what drives off-boarding. A directory group
//! named by a rule that does not exist (or is ambiguous) is an error, never "nobody": reading a
//! renamed group as empty would remove everyone from the Bitbucket group.

use crate::config::{Config, GrantRule, GroupRule, ProjectGrantRule, RepoSelector, Scope};
use crate::directory::Directory;
use crate::model::{
    AccountId, GroupSlug, Permission, ProjectKey, ProjectPermission, Repo, RepoSlug,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("groups[{rule}] ({group}): directory group {from:?} does not exist; refusing to read it as empty")]
    MissingDirectoryGroup {
        rule: usize,
        group: String,
        from: String,
    },
    #[error("groups[{rule}] ({group}): directory group name {from:?} matches several groups ({dns}); use the full DN")]
    AmbiguousDirectoryGroup {
        rule: usize,
        group: String,
        from: String,
        dns: String,
    },
    #[error("groups[{rule}] ({group}): no person in the directory has attribute {attribute:?} (is it read? for HR sources map it in source.attributes); refusing to read the condition as matching nobody")]
    MissingAttribute {
        rule: usize,
        group: String,
        attribute: String,
    },
}

/// A person we want in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    pub display_name: String,
    /// The directory group (as the rule names it) that brings them in.
    pub via: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DesiredGroup {
    pub name: String,
    pub create: bool,
    /// Index of the rule in `[[groups]]`.
    pub rule: usize,
    pub members: BTreeMap<AccountId, Wanted>,
}

/// Someone the directory says has left, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Leaver {
    pub display_name: String,
    pub reason: String,
}

/// What Bitbucket should look like, within the managed scope.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Desired {
    /// Managed groups and their exact membership.
    pub groups: BTreeMap<GroupSlug, DesiredGroup>,
    /// Groups whose grants are managed: the `[[groups]]` and every group a grant rule names.
    pub grant_groups: BTreeSet<GroupSlug>,
    /// Repositories whose grants are managed (`[scope]`, or every repository a rule selects).
    pub repo_scope: BTreeSet<RepoSlug>,
    /// Wanted repository grants: (repo, group) -> the highest permission of the rules, and
    /// the rule that gives it.
    pub grants: RepoGrants,
    /// Projects whose project-level grants are managed.
    pub project_scope: BTreeSet<ProjectKey>,
    pub project_grants: ProjectGrants,
    /// What the operator should know about the rules (nothing selected, outside the scope...).
    pub notes: Vec<RuleNote>,
    pub leavers: BTreeMap<AccountId, Leaver>,
    /// Every account id with exactly one usable directory entry, active or disabled; a member
    /// of a managed group who is none of these (and not frozen) has vanished.
    pub known: BTreeSet<AccountId>,
    /// Accounts the directory cannot speak for (see [`Directory::frozen`]): never added or
    /// removed.
    pub frozen: BTreeSet<AccountId>,
    /// Accounts never removed from a group nor stripped of a direct grant.
    pub protected: BTreeSet<AccountId>,
    /// When each vanished member was first seen missing.
    pub first_missing: BTreeMap<AccountId, SystemTime>,
    /// Invitations by email (`source.invite_unresolved`; empty when off).
    pub invitations: Vec<WantedInvite>,
}

/// Builds the desired membership of every configured group from the directory.
pub fn desired_groups(
    dir: &Directory,
    rules: &[GroupRule],
) -> Result<BTreeMap<GroupSlug, DesiredGroup>, MappingError> {
    let mut out = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut members = BTreeMap::new();
        for from in &rule.from {
            let found = dir.find_groups(from);
            let group = match found.as_slice() {
                [] => {
                    return Err(MappingError::MissingDirectoryGroup {
                        rule: i,
                        group: rule.name.clone(),
                        from: from.clone(),
                    })
                }
                [one] => *one,
                many => {
                    return Err(MappingError::AmbiguousDirectoryGroup {
                        rule: i,
                        group: rule.name.clone(),
                        from: from.clone(),
                        dns: many
                            .iter()
                            .map(|g| g.dn.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    })
                }
            };
            for id in &group.members {
                match dir.people.get(id) {
                    Some(p) if p.disabled.is_none() => {
                        members.entry(id.clone()).or_insert_with(|| Wanted {
                            display_name: p.display_name.clone(),
                            via: from.clone(),
                        });
                    }
                    _ => {}
                }
            }
        }
        if !rule.when.is_empty() {
            add_attribute_members(dir, i, rule, &mut members)?;
        }
        out.insert(
            rule.slug.clone(),
            DesiredGroup {
                name: rule.name.clone(),
                create: rule.create,
                rule: i,
                members,
            },
        );
    }
    Ok(out)
}

/// The active people who meet a rule's attribute conditions join its members (the union with
/// its directory groups). An attribute no person has at all is an error, as a missing
/// directory group is: a renamed or unread attribute must not empty the group.
fn add_attribute_members(
    dir: &Directory,
    i: usize,
    rule: &GroupRule,
    members: &mut BTreeMap<AccountId, Wanted>,
) -> Result<(), MappingError> {
    for c in &rule.when {
        if !dir
            .people
            .values()
            .any(|p| !p.attribute(&c.attribute).is_empty())
        {
            return Err(MappingError::MissingAttribute {
                rule: i,
                group: rule.name.clone(),
                attribute: c.attribute.clone(),
            });
        }
    }
    let via = conditions_text(rule);
    for (id, p) in &dir.people {
        if p.disabled.is_some() {
            continue;
        }
        if meets(rule, |a| p.attribute(a)) {
            members.entry(id.clone()).or_insert_with(|| Wanted {
                display_name: p.display_name.clone(),
                via: via.clone(),
            });
        }
    }
    Ok(())
}

/// A rule's attribute conditions in words (`dept = "eng" and title ~ /lead/`).
fn conditions_text(rule: &GroupRule) -> String {
    rule.when
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(if rule.when_any { " or " } else { " and " })
}

/// Whether someone with these attributes meets a rule's conditions (all, or any).
fn meets<'a>(rule: &GroupRule, attribute: impl Fn(&str) -> &'a [String]) -> bool {
    let holds = |c: &crate::config::Condition| {
        c.holds_for(attribute(&c.attribute).iter().map(String::as_str))
    };
    if rule.when_any {
        rule.when.iter().any(holds)
    } else {
        rule.when.iter().all(holds)
    }
}

/// An invitation by email into a managed group (`source.invite_unresolved`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedInvite {
    pub group: GroupSlug,
    pub email: String,
    /// Index of the rule in `[[groups]]`.
    pub rule: usize,
    /// The conditions they meet.
    pub via: String,
}

/// Who is invited by email into which group: each active person no resolver found an account
/// id for, into every group whose attribute conditions they meet (they are in no directory
/// group: nothing else can place them).
pub fn invitations(dir: &Directory, rules: &[GroupRule]) -> Vec<WantedInvite> {
    let mut out = Vec::new();
    // One invitation per address and group, whatever the rows or their spelling; an address
    // that cannot be one is not sent.
    let mut seen: BTreeSet<(String, GroupSlug)> = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate().filter(|(_, r)| !r.when.is_empty()) {
        let via = conditions_text(rule);
        for p in &dir.invitees {
            let email = crate::model::Email::new(&p.email);
            let plausible = email
                .as_str()
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
                && !email.as_str().contains(['/', ' ']);
            if plausible
                && meets(rule, |a| p.attribute(a))
                && seen.insert((email.folded().to_owned(), rule.slug.clone()))
            {
                out.push(WantedInvite {
                    group: rule.slug.clone(),
                    email: email.as_str().to_owned(),
                    rule: i,
                    via: via.clone(),
                });
            }
        }
    }
    out
}

/// Shell glob over a whole repository slug, case-sensitive: `*` any run, `?` one character,
/// `[abc]`, `[a-z]` and `[!abc]` one character of (or not of) a set.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // One pattern element at `pi` against `c`: Some(length of the element) when it matches.
    let one = |pi: usize, c: char| -> Option<usize> {
        match p[pi] {
            '?' => Some(1),
            '[' => {
                let mut i = pi + 1;
                let negate = matches!(p.get(i), Some('!' | '^'));
                if negate {
                    i += 1;
                }
                let start = i;
                let mut hit = false;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        hit |= p[i] <= c && c <= p[i + 2];
                        i += 3;
                    } else {
                        hit |= p[i] == c;
                        i += 1;
                    }
                }
                if i >= p.len() {
                    // No closing bracket: a literal '['.
                    return (c == '[').then_some(1);
                }
                (hit != negate).then_some(i + 1 - pi)
            }
            ch => (ch == c).then_some(1),
        }
    };
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some(n) = (pi < p.len()).then(|| one(pi, t[ti])).flatten() {
            pi += n;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The repositories of a workspace indexed for [`RepoSelector`]s: by slug, by project, and
/// sorted by slug so that a glob is matched only against the slugs starting with its literal
/// prefix (`team-0042-*` against that team's repositories, not all 20,000). Selecting is then
/// linear in what is selected, not rules x repositories.
pub struct RepoIndex<'a> {
    repos: &'a [Repo],
    by_slug: std::collections::HashMap<&'a str, usize>,
    by_project: std::collections::HashMap<&'a ProjectKey, Vec<usize>>,
    /// (slug, index), sorted by slug.
    sorted: Vec<(&'a str, usize)>,
}

impl<'a> RepoIndex<'a> {
    pub fn new(repos: &'a [Repo]) -> RepoIndex<'a> {
        let mut by_slug = std::collections::HashMap::with_capacity(repos.len());
        let mut by_project: std::collections::HashMap<&ProjectKey, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, r) in repos.iter().enumerate() {
            by_slug.entry(r.slug.as_str()).or_insert(i);
            if let Some(k) = &r.project {
                by_project.entry(k).or_default().push(i);
            }
        }
        let mut sorted: Vec<(&str, usize)> = repos
            .iter()
            .enumerate()
            .map(|(i, r)| (r.slug.as_str(), i))
            .collect();
        sorted.sort_unstable();
        RepoIndex {
            repos,
            by_slug,
            by_project,
            sorted,
        }
    }

    pub fn repos(&self) -> &'a [Repo] {
        self.repos
    }

    /// Whether some repository is in project `key`.
    pub fn has_project(&self, key: &ProjectKey) -> bool {
        self.by_project.contains_key(key)
    }

    /// Whether a repository is called `slug`.
    pub fn has_repo(&self, slug: &RepoSlug) -> bool {
        self.by_slug.contains_key(slug.as_str())
    }

    /// The positions of the repositories `select` picks, in the order of `repos`; the same
    /// as filtering `repos` with [`selects`].
    pub fn select(&self, select: &RepoSelector) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for slug in &select.repos {
            out.extend(self.equal_range(slug.as_str()).map(|(_, i)| *i));
        }
        for key in &select.projects {
            if let Some(v) = self.by_project.get(key) {
                out.extend(v);
            }
        }
        for glob in &select.globs {
            let prefix = &glob[..glob.find(['*', '?', '[']).unwrap_or(glob.len())];
            let start = self.sorted.partition_point(|(s, _)| *s < prefix);
            out.extend(
                self.sorted[start..]
                    .iter()
                    .take_while(|(s, _)| s.starts_with(prefix))
                    .filter(|(s, _)| glob_match(glob, s))
                    .map(|(_, i)| *i),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn equal_range<'s>(&'s self, slug: &'s str) -> impl Iterator<Item = &'s (&'a str, usize)> + 's {
        let start = self.sorted.partition_point(|(s, _)| *s < slug);
        self.sorted[start..]
            .iter()
            .take_while(move |(s, _)| *s == slug)
    }
}

/// Whether `select` picks `repo`.
pub fn selects(select: &RepoSelector, repo: &Repo) -> bool {
    select.repos.contains(&repo.slug)
        || repo
            .project
            .as_ref()
            .is_some_and(|k| select.projects.contains(k))
        || select
            .globs
            .iter()
            .any(|g| glob_match(g, repo.slug.as_str()))
}

/// The repositories whose grants are managed: `[scope]` include minus exclude, or, without a
/// `[scope]`, every repository a grant rule selects.
pub fn repo_scope(rules: &[GrantRule], scope: Option<&Scope>, repos: &[Repo]) -> Vec<RepoSlug> {
    repo_scope_in(rules, scope, &RepoIndex::new(repos))
}

/// [`repo_scope`] over an index already built.
pub fn repo_scope_in(rules: &[GrantRule], scope: Option<&Scope>, ix: &RepoIndex) -> Vec<RepoSlug> {
    let repos = ix.repos();
    match scope {
        Some(s) => repos
            .iter()
            .filter(|repo| selects(&s.include, repo) && !selects(&s.exclude, repo))
            .map(|r| r.slug.clone())
            .collect(),
        None => {
            let mut picked = vec![false; repos.len()];
            for r in rules {
                for i in ix.select(&r.select) {
                    picked[i] = true;
                }
            }
            repos
                .iter()
                .zip(picked)
                .filter(|(_, p)| *p)
                .map(|(r, _)| r.slug.clone())
                .collect()
        }
    }
}

/// The projects whose project-level grants are managed: `[scope] projects`, or, without a
/// `[scope]`, every project a project grant rule names.
pub fn project_scope(rules: &[ProjectGrantRule], scope: Option<&Scope>) -> BTreeSet<ProjectKey> {
    match scope {
        Some(s) => s.projects.iter().cloned().collect(),
        None => rules
            .iter()
            .flat_map(|r| r.projects.iter().cloned())
            .collect(),
    }
}

/// Something about a rule the operator should know: a warning in `plan`, a failure in `check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleNote {
    /// The rule selects no repository (or project) at all.
    SelectsNothing { rule: String },
    /// The rule names a project no listed repository belongs to (or that does not exist).
    UnknownProject { rule: String, project: ProjectKey },
    /// The rule names a repository that does not exist.
    UnknownRepo { rule: String, repo: RepoSlug },
    /// The rule selects repositories (or projects) outside the managed scope: skipped.
    OutsideScope { rule: String, skipped: Vec<String> },
}

impl std::fmt::Display for RuleNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleNote::SelectsNothing { rule } => write!(f, "{rule} selects nothing"),
            RuleNote::UnknownProject { rule, project } => {
                write!(
                    f,
                    "{rule} names project {project}, which does not exist or has no repository"
                )
            }
            RuleNote::UnknownRepo { rule, repo } => {
                write!(f, "{rule} names repository {repo}, which does not exist")
            }
            RuleNote::OutsideScope { rule, skipped } => {
                let shown: Vec<&str> = skipped.iter().take(10).map(String::as_str).collect();
                write!(
                    f,
                    "{rule} selects {} outside the managed scope, skipped: {}{}",
                    skipped.len(),
                    shown.join(", "),
                    if skipped.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                )
            }
        }
    }
}

/// A grant a rule wants, with the rule that gives the highest permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedGrant<P> {
    pub permission: P,
    /// Index of the rule in `[[grants]]` (or `[[project_grants]]`).
    pub rule: usize,
}

/// Wanted repository grants of groups: (repo, group) -> the highest permission and its rule.
pub type RepoGrants = BTreeMap<(RepoSlug, GroupSlug), WantedGrant<Permission>>;
/// Wanted project grants of groups: (project, group) -> the highest permission and its rule.
pub type ProjectGrants = BTreeMap<(ProjectKey, GroupSlug), WantedGrant<ProjectPermission>>;

/// Resolves grant rules against the workspace's repositories, inside `scope`: the wanted
/// grants (highest permission wins), and what to tell the operator.
pub fn desired_grants(
    rules: &[GrantRule],
    scope: &BTreeSet<RepoSlug>,
    repos: &[Repo],
) -> (RepoGrants, Vec<RuleNote>) {
    desired_grants_in(rules, scope, &RepoIndex::new(repos))
}

/// [`desired_grants`] over an index already built.
pub fn desired_grants_in(
    rules: &[GrantRule],
    scope: &BTreeSet<RepoSlug>,
    ix: &RepoIndex,
) -> (RepoGrants, Vec<RuleNote>) {
    let repos = ix.repos();
    let mut grants = RepoGrants::new();
    let mut notes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("grants[{i}]");
        let mut selected = 0usize;
        let mut outside = Vec::new();
        for repo in ix.select(&rule.select).into_iter().map(|i| &repos[i]) {
            selected += 1;
            if !scope.contains(&repo.slug) {
                outside.push(repo.slug.to_string());
                continue;
            }
            let want = WantedGrant {
                permission: rule.permission,
                rule: i,
            };
            grants
                .entry((repo.slug.clone(), rule.group.clone()))
                .and_modify(|w| {
                    if want.permission > w.permission {
                        *w = want;
                    }
                })
                .or_insert(want);
        }
        for key in &rule.select.projects {
            if !ix.has_project(key) {
                notes.push(RuleNote::UnknownProject {
                    rule: name.clone(),
                    project: key.clone(),
                });
            }
        }
        for slug in &rule.select.repos {
            if !ix.has_repo(slug) {
                notes.push(RuleNote::UnknownRepo {
                    rule: name.clone(),
                    repo: slug.clone(),
                });
            }
        }
        if selected == 0 {
            notes.push(RuleNote::SelectsNothing { rule: name.clone() });
        }
        if !outside.is_empty() {
            notes.push(RuleNote::OutsideScope {
                rule: name,
                skipped: outside,
            });
        }
    }
    (grants, notes)
}

/// Resolves project grant rules inside the project scope; `projects` are the workspace's
/// project keys.
pub fn desired_project_grants(
    rules: &[ProjectGrantRule],
    scope: &BTreeSet<ProjectKey>,
    projects: &BTreeSet<ProjectKey>,
) -> (ProjectGrants, Vec<RuleNote>) {
    let mut grants = BTreeMap::new();
    let mut notes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("project_grants[{i}]");
        let mut outside = Vec::new();
        for key in &rule.projects {
            if !projects.contains(key) {
                notes.push(RuleNote::UnknownProject {
                    rule: name.clone(),
                    project: key.clone(),
                });
                continue;
            }
            if !scope.contains(key) {
                outside.push(key.to_string());
                continue;
            }
            let want = WantedGrant {
                permission: rule.permission,
                rule: i,
            };
            grants
                .entry((key.clone(), rule.group.clone()))
                .and_modify(|w: &mut WantedGrant<ProjectPermission>| {
                    if want.permission > w.permission {
                        *w = want;
                    }
                })
                .or_insert(want);
        }
        if !outside.is_empty() {
            notes.push(RuleNote::OutsideScope {
                rule: name,
                skipped: outside,
            });
        }
    }
    (grants, notes)
}

/// What the reconcile read besides the directory, that the desired state depends on.
pub struct Workspace<'a> {
    pub repos: &'a [Repo],
    /// Every project key of the workspace (read only when project grants are managed).
    pub projects: &'a BTreeSet<ProjectKey>,
    /// Accounts never taken anything from: configured, plus the workspace owner.
    pub protected: BTreeSet<AccountId>,
    /// When members without a directory entry were first seen missing (from the state file).
    pub first_missing: BTreeMap<AccountId, SystemTime>,
}

/// The desired state from group memberships already mapped (the reconcile maps them before it
/// reads Bitbucket, so a mapping error costs no API call).
pub fn desired_with_groups(
    groups: BTreeMap<GroupSlug, DesiredGroup>,
    dir: &Directory,
    cfg: &Config,
    ws: Workspace<'_>,
) -> Desired {
    let ix = RepoIndex::new(ws.repos);
    let repo_scope: BTreeSet<RepoSlug> = repo_scope_in(&cfg.grants, cfg.scope.as_ref(), &ix)
        .into_iter()
        .collect();
    let (grants, mut notes) = desired_grants_in(&cfg.grants, &repo_scope, &ix);
    let project_scope = project_scope(&cfg.project_grants, cfg.scope.as_ref());
    let (project_grants, project_notes) =
        desired_project_grants(&cfg.project_grants, &project_scope, ws.projects);
    notes.extend(project_notes);
    // Grants are exact for every group bbsync manages: the [[groups]] and those rules name.
    let grant_groups = cfg
        .groups
        .iter()
        .map(|g| g.slug.clone())
        .chain(cfg.grants.iter().map(|r| r.group.clone()))
        .chain(cfg.project_grants.iter().map(|r| r.group.clone()))
        .collect();
    Desired {
        groups,
        grant_groups,
        repo_scope,
        grants,
        project_scope,
        project_grants,
        notes,
        leavers: dir
            .people
            .iter()
            .filter_map(|(id, p)| {
                p.disabled.as_ref().map(|r| {
                    (
                        id.clone(),
                        Leaver {
                            display_name: p.display_name.clone(),
                            reason: r.clone(),
                        },
                    )
                })
            })
            .collect(),
        known: dir.people.keys().cloned().collect(),
        frozen: dir.frozen.clone(),
        protected: ws.protected,
        first_missing: ws.first_missing,
        invitations: invitations(dir, &cfg.groups),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoSelector;
    use crate::model::ProjectKey;
    use crate::source::{ldif, resolve, Entries, Schema};

    /// The index selects exactly what filtering every repository with `selects` does, in the
    /// same order, for seeded random repositories and selectors (slugs over a small alphabet
    /// so that prefixes, sets and stars collide).
    #[test]
    fn the_repository_index_selects_what_a_linear_filter_does() {
        let mut rng = fastrand::Rng::with_seed(20);
        let word = |rng: &mut fastrand::Rng, n: usize| -> String {
            (0..rng.usize(0..=n))
                .map(|_| ['a', 'b', '-', 'c'][rng.usize(0..4)])
                .collect()
        };
        for _ in 0..400 {
            let repos: Vec<Repo> = (0..rng.usize(0..40))
                .map(|_| {
                    let slug = format!("{}{}", ['a', 'b'][rng.usize(0..2)], word(&mut rng, 5));
                    Repo {
                        slug: RepoSlug::new(&slug),
                        project: (rng.usize(0..4) > 0)
                            .then(|| ProjectKey::new(["P", "Q", "R"][rng.usize(0..3)])),
                    }
                })
                .collect();
            let ix = RepoIndex::new(&repos);
            for _ in 0..10 {
                let glob = |rng: &mut fastrand::Rng| -> String {
                    let mut g = word(rng, 3);
                    for _ in 0..rng.usize(0..3) {
                        g.insert_str(
                            rng.usize(0..=g.len()),
                            ["*", "?", "[ab]", "[!a]", "[a-b]", "["][rng.usize(0..6)],
                        );
                    }
                    g
                };
                let select = RepoSelector {
                    projects: (0..rng.usize(0..2))
                        .map(|_| ProjectKey::new(["P", "Q", "X"][rng.usize(0..3)]))
                        .collect(),
                    repos: (0..rng.usize(0..3))
                        .map(|_| RepoSlug::new(&format!("a{}", word(&mut rng, 2))))
                        .collect(),
                    globs: (0..rng.usize(0..3)).map(|_| glob(&mut rng)).collect(),
                };
                let linear: Vec<usize> = (0..repos.len())
                    .filter(|i| selects(&select, &repos[*i]))
                    .collect();
                assert_eq!(ix.select(&select), linear, "{select:?} over {repos:?}");
            }
        }
    }

    fn repo(slug: &str, project: &str) -> Repo {
        Repo {
            slug: RepoSlug::new(slug),
            project: Some(ProjectKey::new(project)),
        }
    }

    fn rule(group: &str, perm: Permission, select: RepoSelector) -> GrantRule {
        GrantRule {
            group: GroupSlug::from_name(group),
            permission: perm,
            select,
        }
    }

    #[test]
    fn globs_match_the_whole_slug_like_a_shell_and_case_sensitively() {
        assert!(glob_match("svc-*", "svc-billing"));
        assert!(glob_match("*-api", "orders-api"));
        assert!(!glob_match("*-API", "orders-api"), "case-sensitive");
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("svc-*", "web-svc"));
        assert!(!glob_match("svc", "svc-billing"), "the whole slug");
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "aaa"));
        assert!(glob_match("web-[0-9]*", "web-2024"));
        assert!(!glob_match("web-[0-9]*", "web-x"));
        assert!(glob_match("web-[!x]", "web-y"));
        assert!(!glob_match("web-[!x]", "web-x"));
        assert!(glob_match("[ab]pi", "api"));
        assert!(glob_match("odd[", "odd["), "an unclosed bracket is literal");
    }

    fn all(repos: &[Repo]) -> BTreeSet<RepoSlug> {
        repos.iter().map(|r| r.slug.clone()).collect()
    }

    #[test]
    fn the_scope_is_include_minus_exclude_and_rules_outside_it_are_skipped_and_reported() {
        let repos = [
            repo("web-app", "WEB"),
            repo("web-legacy", "WEB"),
            repo("web-hand", "OPS"),
            repo("api", "PROJ"),
        ];
        let scope = Scope {
            include: RepoSelector {
                projects: vec![ProjectKey::new("WEB")],
                repos: vec![RepoSlug::new("api")],
                ..Default::default()
            },
            exclude: RepoSelector {
                repos: vec![RepoSlug::new("web-legacy")],
                ..Default::default()
            },
            projects: vec![],
        };
        let managed: BTreeSet<RepoSlug> =
            repo_scope(&[], Some(&scope), &repos).into_iter().collect();
        assert_eq!(
            managed,
            [RepoSlug::new("api"), RepoSlug::new("web-app")]
                .into_iter()
                .collect()
        );
        let rules = [
            rule(
                "web",
                Permission::Write,
                RepoSelector {
                    globs: vec!["web-*".into()],
                    ..Default::default()
                },
            ),
            rule(
                "ghost",
                Permission::Read,
                RepoSelector {
                    projects: vec![ProjectKey::new("NOPE")],
                    repos: vec![RepoSlug::new("gone")],
                    ..Default::default()
                },
            ),
        ];
        let (grants, notes) = desired_grants(&rules, &managed, &repos);
        assert_eq!(grants.len(), 1, "only web-app is in scope: {grants:?}");
        assert!(
            notes.contains(&RuleNote::OutsideScope {
                rule: "grants[0]".into(),
                skipped: vec!["web-legacy".into(), "web-hand".into()],
            }),
            "{notes:?}"
        );
        assert!(notes.contains(&RuleNote::SelectsNothing {
            rule: "grants[1]".into()
        }));
        assert!(notes.contains(&RuleNote::UnknownProject {
            rule: "grants[1]".into(),
            project: ProjectKey::new("NOPE")
        }));
        assert!(notes.contains(&RuleNote::UnknownRepo {
            rule: "grants[1]".into(),
            repo: RepoSlug::new("gone")
        }));
        // Without a [scope], what the rules select is the scope.
        let legacy: BTreeSet<RepoSlug> = repo_scope(&rules, None, &repos).into_iter().collect();
        assert_eq!(legacy.len(), 3);
    }

    #[test]
    fn project_grants_apply_inside_the_project_scope_with_the_highest_permission() {
        let rules = [
            ProjectGrantRule {
                group: GroupSlug::from_name("leads"),
                permission: ProjectPermission::Write,
                projects: vec![ProjectKey::new("PROJ"), ProjectKey::new("OPS")],
            },
            ProjectGrantRule {
                group: GroupSlug::from_name("leads"),
                permission: ProjectPermission::CreateRepo,
                projects: vec![ProjectKey::new("PROJ"), ProjectKey::new("NOPE")],
            },
        ];
        let scope: BTreeSet<ProjectKey> = [ProjectKey::new("PROJ")].into_iter().collect();
        let exists: BTreeSet<ProjectKey> =
            ["PROJ", "OPS"].iter().map(|k| ProjectKey::new(k)).collect();
        let (grants, notes) = desired_project_grants(&rules, &scope, &exists);
        assert_eq!(grants.len(), 1);
        let w = grants[&(ProjectKey::new("PROJ"), GroupSlug::from_name("leads"))];
        assert_eq!((w.permission, w.rule), (ProjectPermission::CreateRepo, 1));
        assert!(notes.iter().any(
            |n| matches!(n, RuleNote::OutsideScope { rule, .. } if rule == "project_grants[0]")
        ));
        assert!(notes.iter().any(
            |n| matches!(n, RuleNote::UnknownProject { project, .. } if project.as_str() == "NOPE")
        ));
    }

    #[test]
    fn contractors_get_write_on_every_repository_of_proj() {
        let mut repos: Vec<Repo> = (0..100)
            .map(|i| repo(&format!("proj-{i:03}"), "PROJ"))
            .collect();
        repos.push(repo("secret", "OTHER"));
        let rules = [rule(
            "contractors",
            Permission::Write,
            RepoSelector {
                projects: vec![ProjectKey::new("proj")],
                ..Default::default()
            },
        )];
        let scope: BTreeSet<RepoSlug> = repo_scope(&rules, None, &repos).into_iter().collect();
        let (grants, notes) = desired_grants(&rules, &scope, &repos);
        assert_eq!(grants.len(), 100);
        assert!(grants.values().all(|p| p.permission == Permission::Write));
        assert!(!scope.contains(&RepoSlug::new("secret")));
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn overlapping_rules_keep_the_highest_permission() {
        let repos = [repo("api", "PROJ"), repo("web", "PROJ")];
        let rules = [
            rule(
                "devs",
                Permission::Read,
                RepoSelector {
                    projects: vec![ProjectKey::new("PROJ")],
                    ..Default::default()
                },
            ),
            rule(
                "devs",
                Permission::Admin,
                RepoSelector {
                    repos: vec![RepoSlug::new("API")],
                    ..Default::default()
                },
            ),
        ];
        let (grants, _) = desired_grants(&rules, &all(&repos), &repos);
        let devs = GroupSlug::from_name("devs");
        assert_eq!(
            grants[&(RepoSlug::new("api"), devs.clone())],
            WantedGrant {
                permission: Permission::Admin,
                rule: 1
            }
        );
        assert_eq!(
            grants[&(RepoSlug::new("web"), devs)].permission,
            Permission::Read
        );
    }

    const DIR: &str = "\
dn: uid=ann,dc=x
objectClass: inetOrgPerson
cn: Ann
atlassianAccountId: acc-ann

dn: uid=bob,dc=x
objectClass: inetOrgPerson
cn: Bob
atlassianAccountId: acc-bob
userAccountControl: 514

dn: cn=devs,dc=x
objectClass: groupOfNames
member: uid=ann,dc=x
member: uid=bob,dc=x

dn: cn=devs,ou=other,dc=x
objectClass: groupOfNames
member: uid=ann,dc=x
";

    fn group_rule(from: &str) -> GroupRule {
        GroupRule {
            name: "Developers".into(),
            slug: GroupSlug::from_name("Developers"),
            from: vec![from.into()],
            when: Vec::new(),
            when_any: false,
            create: true,
        }
    }

    #[test]
    fn disabled_people_are_desired_nowhere_and_listed_as_leavers() {
        let dir = resolve(
            Entries::split(
                ldif::parse(&crate::model::with_synthetic_ids(DIR), "t").expect("ldif"),
                &Schema::default(),
            ),
            &Schema::default(),
        );
        let groups = desired_groups(&dir, &[group_rule("cn=devs,dc=x")]).expect("maps");
        let cfg = crate::config::Config::from_toml_str(
            "[bitbucket]\nworkspace = \"acme\"\n[credentials.a]\nkind = \"access_token\"\ntoken = \"t\"\n[source]\nkind = \"ldif\"\npath = \"d\"\n[[groups]]\nname = \"Developers\"\nfrom = [\"cn=devs,dc=x\"]\n",
            "t",
            std::path::Path::new("."),
        )
        .expect("config");
        let d = desired_with_groups(
            groups,
            &dir,
            &cfg,
            Workspace {
                repos: &[],
                projects: &BTreeSet::new(),
                protected: BTreeSet::new(),
                first_missing: BTreeMap::new(),
            },
        );
        let members: Vec<_> = d.groups[&GroupSlug::from_name("developers")]
            .members
            .keys()
            .collect();
        assert_eq!(
            members,
            [&AccountId::parse(&crate::model::synthetic_account_id("acc-ann")).expect("id")]
        );
        assert!(d.leavers.contains_key(
            &AccountId::parse(&crate::model::synthetic_account_id("acc-bob")).expect("id")
        ));
    }

    #[test]
    fn a_missing_or_ambiguous_directory_group_is_an_error_not_an_empty_group() {
        let dir = resolve(
            Entries::split(
                ldif::parse(&crate::model::with_synthetic_ids(DIR), "t").expect("ldif"),
                &Schema::default(),
            ),
            &Schema::default(),
        );
        assert!(matches!(
            desired_groups(&dir, &[group_rule("renamed")]),
            Err(MappingError::MissingDirectoryGroup { .. })
        ));
        assert!(matches!(
            desired_groups(&dir, &[group_rule("devs")]),
            Err(MappingError::AmbiguousDirectoryGroup { .. })
        ));
    }
}
