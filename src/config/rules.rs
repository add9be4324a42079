//! `[[groups]]` and `[[grants]]`: what bbsync manages.

use super::raw::{Field, Problems, RawTable, Table, Word};
use super::{AttributeTest, Condition, GrantRule, GroupRule, ProjectGrantRule};
use crate::model::{GroupSlug, Permission, ProjectKey, ProjectPermission};
use serde::Deserialize;

/// One `[[groups]]` entry as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawGroupRule {
    /// The Bitbucket group name; its slug is derived from it.
    name: Field<String>,
    /// Directory groups (by `cn` or full DN) whose members, together, make up the group.
    from: Field<Vec<String>>,
    /// Attribute conditions: people who meet them are members too.
    when: Field<Vec<Table<RawCondition>>>,
    /// `all` (default): every condition of `when` must hold; `any`: one is enough.
    #[serde(rename = "match")]
    match_: Field<Word<Match>>,
    /// Create the Bitbucket group when it does not exist; default false (a typo in a name
    /// must not create a group).
    create: Field<bool>,
}

impl RawTable for RawGroupRule {}

/// How the conditions of one `when` list combine.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Match {
    All,
    Any,
}

/// One `[[groups.when]]` condition as written: an attribute and exactly one test.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawCondition {
    /// The person attribute (`department`, `title`; an LDAP attribute, or a name mapped in
    /// `source.attributes` for HR sources).
    attribute: Field<String>,
    /// Equal to this value (case-insensitive).
    equals: Field<String>,
    /// Equal to one of these values (case-insensitive).
    one_of: Field<Vec<String>>,
    /// Matches this regular expression (Rust `regex` syntax; `(?i)` ignores case).
    matches: Field<String>,
}

impl RawTable for RawCondition {}

/// Attribute names read from people because a rule tests them, lower-cased, sorted, once each.
pub(super) fn attributes_read(groups: &[GroupRule]) -> Vec<String> {
    let mut a: Vec<String> = groups
        .iter()
        .flat_map(|g| g.when.iter().map(|c| c.attribute.to_ascii_lowercase()))
        .collect();
    a.sort();
    a.dedup();
    a
}

/// `groups[i].when`.
fn validate_conditions(
    key: &str,
    raw: Field<Vec<Table<RawCondition>>>,
    p: &mut Problems,
) -> Vec<Condition> {
    let mut out = Vec::new();
    for (j, table) in raw.get(key, p).unwrap_or_default().into_iter().enumerate() {
        let key = format!("{key}[{j}]");
        let Some(RawCondition {
            attribute,
            equals,
            one_of,
            matches,
        }) = table.read(&key, p)
        else {
            continue;
        };
        let attr_key = format!("{key}.attribute");
        let attribute = attribute.text(&attr_key, p);
        if attribute.is_none() && !p.any_under(&attr_key) {
            p.required(
                attr_key.clone(),
                "(the person attribute the condition tests)",
            );
        }
        if let Some(a) = &attribute {
            if !a
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ';'))
            {
                p.push(
                    attr_key,
                    format!("{a:?} is not an attribute name (letters, digits, - _ . ;)"),
                );
            }
        }
        let lower = |v: String| v.trim().to_lowercase();
        let mut tests = Vec::new();
        if let Some(v) = equals.get(&format!("{key}.equals"), p) {
            tests.push(AttributeTest::Equals(lower(v)));
        }
        if let Some(vs) = one_of.get(&format!("{key}.one_of"), p) {
            if vs.is_empty() {
                p.push(format!("{key}.one_of"), "list at least one value");
            }
            tests.push(AttributeTest::OneOf(vs.into_iter().map(lower).collect()));
        }
        let re_key = format!("{key}.matches");
        if let Some(re) = matches.get(&re_key, p) {
            match regex::Regex::new(&re) {
                Ok(re) => tests.push(AttributeTest::Matches(re)),
                Err(e) => {
                    // The parser's message spans lines (the pattern, a caret, the error):
                    // its last line says what is wrong.
                    let text = e.to_string();
                    let why = text
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim_start_matches("error: ");
                    p.push(re_key, format!("not a valid regular expression: {why}"));
                    continue;
                }
            }
        }
        match (tests.len(), attribute) {
            (1, Some(attribute)) => out.push(Condition {
                attribute,
                test: tests.remove(0),
            }),
            (0, _) if !p.any_under(&key) => p.say(
                key.clone(),
                format!("{key}: give one of equals, one_of or matches"),
            ),
            (n, _) if n > 1 => p.say(
                key.clone(),
                format!("{key}: give only one of equals, one_of or matches (split the condition into two)"),
            ),
            _ => {}
        }
    }
    out
}

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
    /// Repository slugs matching these shell patterns (`*`, `?`, `[...]`), case-sensitive.
    globs: Field<Vec<String>>,
}

impl RawTable for RawGrantRule {}

/// One `[[project_grants]]` entry as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawProjectGrantRule {
    /// The group (slug or name) the grant is for.
    group: Field<String>,
    /// `read`, `write`, `create-repo` or `admin`.
    permission: Field<Word<ProjectPermission>>,
    /// The project keys it is granted on.
    projects: Field<Vec<String>>,
}

impl RawTable for RawProjectGrantRule {}

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
        let Some(RawGroupRule {
            name,
            from,
            when,
            match_,
            create,
        }) = table.read(&key, p)
        else {
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
        let when_key = format!("{key}.when");
        let when_written = when.is_written();
        let when = validate_conditions(&when_key, when, p);
        if when_written && when.is_empty() && !p.any_under(&when_key) {
            p.push(
                when_key.clone(),
                "list at least one condition (an empty list would feed the group with nobody)",
            );
        }
        let when_any = match match_.word(&format!("{key}.match"), p) {
            Some(m) => {
                if !when_written {
                    p.push(
                        format!("{key}.match"),
                        "applies to the conditions of groups.when, and there are none",
                    );
                }
                m == Match::Any
            }
            None => false,
        };
        let create = create.get(&format!("{key}.create"), p).unwrap_or(false);
        let Some(name) = name else {
            if !p.any_under(&name_key) {
                p.required(name_key, "(the Bitbucket group name)");
            }
            continue;
        };
        if from.is_empty() && !when_written && !p.any_under(&from_key) {
            p.push(
                from_key,
                format!(
                    "list the directory group(s) (cn or DN) that feed Bitbucket group {name:?}, or give attribute conditions in [[{key}.when]]"
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
            when,
            when_any,
            create,
        });
    }
    groups
}

/// A grant rule's `group` and `permission`, each required; `allowed` lists the words.
fn group_and_permission<P>(
    key: &str,
    group: Field<String>,
    permission: Field<Word<P>>,
    allowed: &str,
    p: &mut Problems,
) -> (Option<String>, Option<P>) {
    let group_key = format!("{key}.group");
    let group = group.text(&group_key, p);
    if group.is_none() && !p.any_under(&group_key) {
        p.required(group_key, "");
    }
    let permission_key = format!("{key}.permission");
    let permission = permission.word(&permission_key, p);
    if permission.is_none() && !p.any_under(&permission_key) {
        p.required(permission_key, allowed);
    }
    (group, permission)
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
        let (group, permission) =
            group_and_permission(&key, group, permission, "(read, write or admin)", p);
        let before = p.len();
        let select = super::scope::selector(&key, projects, repos, globs, p);
        if select.is_empty() && p.len() == before {
            p.push(
                key.as_str(),
                "select repositories with projects, repos or globs",
            );
        }
        if let (Some(group), Some(permission)) = (group, permission) {
            grants.push(GrantRule {
                group: GroupSlug::from_name(&group),
                permission,
                select,
            });
        }
    }
    grants
}

/// `[[project_grants]]`: the project-level grants bbsync owns.
pub(super) fn validate_project_grants(
    raw: Field<Vec<Table<RawProjectGrantRule>>>,
    p: &mut Problems,
) -> Vec<ProjectGrantRule> {
    let mut out = Vec::new();
    for (i, table) in raw
        .get("project_grants", p)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let key = format!("project_grants[{i}]");
        let Some(RawProjectGrantRule {
            group,
            permission,
            projects,
        }) = table.read(&key, p)
        else {
            continue;
        };
        let (group, permission) = group_and_permission(
            &key,
            group,
            permission,
            "(read, write, create-repo or admin)",
            p,
        );
        let projects_key = format!("{key}.projects");
        let projects: Vec<ProjectKey> = projects
            .get(&projects_key, p)
            .unwrap_or_default()
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| ProjectKey::new(k))
            .collect();
        if projects.is_empty() && !p.any_under(&projects_key) {
            p.push(projects_key, "list the project keys it is granted on");
        }
        if let (Some(group), Some(permission)) = (group, permission) {
            out.push(ProjectGrantRule {
                group: GroupSlug::from_name(&group),
                permission,
                projects,
            });
        }
    }
    out
}
