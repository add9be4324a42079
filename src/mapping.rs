//! Mapping rules: directory snapshot + configuration -> desired Bitbucket state. Pure.
//!
//! Disabled people are desired nowhere: that is what drives off-boarding. A directory group
//! named by a rule that does not exist (or is ambiguous) is an error, never "nobody": reading a
//! renamed group as empty would remove everyone from the Bitbucket group.

use crate::config::{GrantRule, GroupRule};
use crate::directory::Directory;
use crate::model::{AccountId, GroupSlug, Permission, Repo, RepoSlug};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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
}

/// A person we want in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Wanted {
    pub display_name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DesiredGroup {
    pub name: String,
    pub create: bool,
    pub members: BTreeMap<AccountId, Wanted>,
}

/// Someone the directory says has left, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Leaver {
    pub display_name: String,
    pub reason: String,
}

/// What Bitbucket should look like, within the managed scope.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Desired {
    /// Managed groups and their exact membership.
    pub groups: BTreeMap<GroupSlug, DesiredGroup>,
    /// Groups whose repository grants are managed (those named by a grant rule).
    pub grant_groups: BTreeSet<GroupSlug>,
    /// Repositories whose grants are managed (selected by any grant rule).
    pub repo_scope: BTreeSet<RepoSlug>,
    /// Wanted grants: (repo, group) -> permission, the highest of all matching rules.
    pub grants: BTreeMap<(RepoSlug, GroupSlug), Permission>,
    pub leavers: BTreeMap<AccountId, Leaver>,
    /// Accounts the directory cannot speak for (see [`Directory::frozen`]): never added or
    /// removed.
    pub frozen: BTreeSet<AccountId>,
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
                        members.insert(
                            id.clone(),
                            Wanted {
                                display_name: p.display_name.clone(),
                            },
                        );
                    }
                    _ => {}
                }
            }
        }
        out.insert(
            rule.slug.clone(),
            DesiredGroup {
                name: rule.name.clone(),
                create: rule.create,
                members,
            },
        );
    }
    Ok(out)
}

/// Shell-style glob over a repository slug: `*` any run, `?` one character. Case-insensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
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

fn selects(rule: &GrantRule, repo: &Repo) -> bool {
    let s = &rule.select;
    s.repos.contains(&repo.slug)
        || repo
            .project
            .as_ref()
            .is_some_and(|k| s.projects.contains(k))
        || s.globs.iter().any(|g| glob_match(g, repo.slug.as_str()))
}

/// The repositories any grant rule selects (the managed repository scope).
pub fn selected_repos(rules: &[GrantRule], repos: &[Repo]) -> Vec<RepoSlug> {
    repos
        .iter()
        .filter(|repo| rules.iter().any(|r| selects(r, repo)))
        .map(|r| r.slug.clone())
        .collect()
}

/// Resolves grant rules against the workspace's repositories.
pub fn desired_grants(
    rules: &[GrantRule],
    repos: &[Repo],
) -> (
    BTreeMap<(RepoSlug, GroupSlug), Permission>,
    BTreeSet<RepoSlug>,
) {
    let mut grants: BTreeMap<(RepoSlug, GroupSlug), Permission> = BTreeMap::new();
    let mut scope = BTreeSet::new();
    for repo in repos {
        for rule in rules.iter().filter(|r| selects(r, repo)) {
            scope.insert(repo.slug.clone());
            let e = grants
                .entry((repo.slug.clone(), rule.group.clone()))
                .or_insert(rule.permission);
            *e = (*e).max(rule.permission);
        }
    }
    (grants, scope)
}

/// The whole desired state.
pub fn desired(
    dir: &Directory,
    group_rules: &[GroupRule],
    grant_rules: &[GrantRule],
    repos: &[Repo],
) -> Result<Desired, MappingError> {
    Ok(desired_with_groups(
        desired_groups(dir, group_rules)?,
        dir,
        grant_rules,
        repos,
    ))
}

/// The desired state from group memberships already mapped (the reconcile maps them before it
/// reads Bitbucket, so a mapping error costs no API call).
pub fn desired_with_groups(
    groups: BTreeMap<GroupSlug, DesiredGroup>,
    dir: &Directory,
    grant_rules: &[GrantRule],
    repos: &[Repo],
) -> Desired {
    let (grants, repo_scope) = desired_grants(grant_rules, repos);
    Desired {
        groups,
        grant_groups: grant_rules.iter().map(|r| r.group.clone()).collect(),
        repo_scope,
        grants,
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
        frozen: dir.frozen.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoSelector;
    use crate::model::ProjectKey;
    use crate::source::{ldif, resolve, Entries, Schema};

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
    fn globs_match_like_a_shell() {
        assert!(glob_match("svc-*", "svc-billing"));
        assert!(glob_match("*-api", "Orders-API"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("svc-*", "web-svc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "aaa"));
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
        let (grants, scope) = desired_grants(&rules, &repos);
        assert_eq!(grants.len(), 100);
        assert!(grants.values().all(|p| *p == Permission::Write));
        assert!(!scope.contains(&RepoSlug::new("secret")));
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
        let (grants, _) = desired_grants(&rules, &repos);
        let devs = GroupSlug::from_name("devs");
        assert_eq!(
            grants[&(RepoSlug::new("api"), devs.clone())],
            Permission::Admin
        );
        assert_eq!(grants[&(RepoSlug::new("web"), devs)], Permission::Read);
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
        let d = desired(&dir, &[group_rule("cn=devs,dc=x")], &[], &[]).expect("maps");
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
