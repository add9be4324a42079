//! `[[groups]]` and `[[grants]]`: what bbsync manages.

use super::raw::{Field, Problems, RawTable, Table, Word};
use super::{GrantRule, GroupRule, RepoSelector};
use crate::model::{GroupSlug, Permission, ProjectKey, RepoSlug};
use serde::Deserialize;

/// One `[[groups]]` entry as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawGroupRule {
    /// The Bitbucket group name; its slug is derived from it.
    name: Field<String>,
    /// Directory groups (by `cn` or full DN) whose members, together, make up the group.
    from: Field<Vec<String>>,
    /// Create the Bitbucket group when it does not exist; default true.
    create: Field<bool>,
}

impl RawTable for RawGroupRule {}

/// One `[[grants]]` entry as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawGrantRule {
    /// The group (slug or name) the grant is for.
    group: Field<String>,
    /// `read`, `write` or `admin`.
    permission: Field<Word<Permission>>,
    /// Every repository of these project keys.
    projects: Field<Vec<String>>,
    /// These repository slugs.
    repos: Field<Vec<String>>,
    /// Repository slugs matching these shell-style patterns (`*`, `?`).
    globs: Field<Vec<String>>,
}

impl RawTable for RawGrantRule {}

/// `[[groups]]`: the Bitbucket groups whose membership bbsync owns.
pub(super) fn validate_groups(
    raw: Field<Vec<Table<RawGroupRule>>>,
    p: &mut Problems,
) -> Vec<GroupRule> {
    let mut groups: Vec<GroupRule> = Vec::new();
    for (i, table) in raw
        .get("groups", p)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let key = format!("groups[{i}]");
        let Some(RawGroupRule { name, from, create }) = table.read(&key, p) else {
            continue;
        };
        let name_key = format!("{key}.name");
        let name = name.text(&name_key, p);
        let from_key = format!("{key}.from");
        let from: Vec<String> = from
            .get(&from_key, p)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| super::raw::non_empty(Some(s)))
            .collect();
        let create = create.get(&format!("{key}.create"), p).unwrap_or(true);
        let Some(name) = name else {
            if !p.any_under(&name_key) {
                p.required(name_key, "(the Bitbucket group name)");
            }
            continue;
        };
        if from.is_empty() && !p.any_under(&from_key) {
            p.push(
                from_key,
                format!(
                    "list the directory group(s) (cn or DN) that feed Bitbucket group {name:?}"
                ),
            );
        }
        let slug = GroupSlug::from_name(&name);
        if groups.iter().any(|g| g.slug == slug) {
            p.push(
                name_key,
                format!("Bitbucket group {name:?} is configured twice"),
            );
        }
        groups.push(GroupRule {
            name,
            slug,
            from,
            create,
        });
    }
    groups
}

/// `[[grants]]`: the repository grants bbsync owns.
pub(super) fn validate_grants(
    raw: Field<Vec<Table<RawGrantRule>>>,
    p: &mut Problems,
) -> Vec<GrantRule> {
    let mut grants = Vec::new();
    for (i, table) in raw
        .get("grants", p)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let key = format!("grants[{i}]");
        let Some(RawGrantRule {
            group,
            permission,
            projects,
            repos,
            globs,
        }) = table.read(&key, p)
        else {
            continue;
        };
        let group_key = format!("{key}.group");
        let group = group.text(&group_key, p);
        if group.is_none() && !p.any_under(&group_key) {
            p.required(group_key, "");
        }
        let permission_key = format!("{key}.permission");
        let permission = permission.word(&permission_key, p);
        if permission.is_none() && !p.any_under(&permission_key) {
            p.required(permission_key, "(read, write or admin)");
        }
        let before = p.len();
        let projects = projects
            .get(&format!("{key}.projects"), p)
            .unwrap_or_default();
        let repos = repos.get(&format!("{key}.repos"), p).unwrap_or_default();
        let globs = globs.get(&format!("{key}.globs"), p).unwrap_or_default();
        if projects.is_empty() && repos.is_empty() && globs.is_empty() && p.len() == before {
            p.push(
                key.as_str(),
                "select repositories with projects, repos or globs",
            );
        }
        for glob in &globs {
            if glob.trim().is_empty() {
                p.push(format!("{key}.globs"), "empty pattern");
            }
        }
        if let (Some(group), Some(permission)) = (group, permission) {
            grants.push(GrantRule {
                group: GroupSlug::from_name(&group),
                permission,
                select: RepoSelector {
                    projects: projects.iter().map(|k| ProjectKey::new(k)).collect(),
                    repos: repos.iter().map(|r| RepoSlug::new(r)).collect(),
                    globs: globs.iter().map(|s| s.trim().to_lowercase()).collect(),
                },
            });
        }
    }
    grants
}
