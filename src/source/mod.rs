//! Directory sources: where people and groups come from.
//!
//! Every source produces plain LDAP-shaped [`Entry`] values; [`resolve`] turns them into a
//! [`Directory`] (people by account id, groups with transitively resolved members, and a list
//! of bad entries). The LDIF file source and the live LDAP source share that code, so the same
//! entries map identically whichever way they were read.
//!
//! Fail closed: a source either returns a complete entry set or an error. Bad *entries* are
//! skipped and reported; they never change anyone else's result.

pub mod ldap;
pub mod ldif;

use crate::model::{AccountId, Dn};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// Why a source could not be read. Any of these aborts the run before planning.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read directory file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Ldif {
        origin: String,
        line: usize,
        message: String,
    },
    #[error(
        "directory has no entries at all ({origin}); refusing to treat that as 'everyone left'"
    )]
    Empty { origin: String },
    #[error("LDAP {url}: {stage}: {message}")]
    Ldap {
        url: String,
        stage: String,
        message: String,
    },
}

impl SourceError {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SourceError::Io { .. } => "io",
            SourceError::Ldif { .. } => "parse",
            SourceError::Empty { .. } => "empty",
            SourceError::Ldap { .. } => "ldap",
        }
    }
}

/// One directory entry: a DN and its attributes (names lower-cased, values in order).
#[derive(Clone, Debug)]
pub struct Entry {
    pub dn: Dn,
    attrs: BTreeMap<String, Vec<String>>,
}

impl Entry {
    pub fn new(dn: Dn) -> Self {
        Self {
            dn,
            attrs: BTreeMap::new(),
        }
    }
    pub fn push(&mut self, name: &str, value: String) {
        self.attrs
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value);
    }
    pub fn get(&self, name: &str) -> &[String] {
        self.attrs
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// Attribute names as stored (lower-cased).
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attrs.keys().map(String::as_str)
    }
    /// Removes and returns an attribute's values.
    pub fn take(&mut self, name: &str) -> Vec<String> {
        self.attrs
            .remove(&name.to_ascii_lowercase())
            .unwrap_or_default()
    }
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).first().map(String::as_str)
    }
    pub fn has_object_class(&self, class: &str) -> bool {
        self.get("objectclass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }
}

/// How entries are read as people and groups; shared by every LDAP-shaped source.
#[derive(Clone, Debug, Serialize)]
pub struct Schema {
    /// Entries with any of these object classes are people.
    pub user_object_classes: Vec<String>,
    /// Entries with any of these object classes are groups.
    pub group_object_classes: Vec<String>,
    pub account_id_attribute: String,
    pub email_attribute: String,
    pub display_name_attribute: String,
    /// Login name used by `posixGroup` `memberUid` values.
    pub uid_attribute: String,
    pub group_name_attribute: String,
    /// Attribute that, when true-ish (`true`, `yes`, `1`, `locked`), marks a person disabled.
    pub disabled_attribute: Option<String>,
    /// Active Directory: `userAccountControl` bit 0x2 (ACCOUNTDISABLE) marks a person disabled.
    pub ad_user_account_control: bool,
    /// OpenLDAP ppolicy: a present `pwdAccountLockedTime` marks a person disabled.
    pub ppolicy_locked: bool,
    /// Immutable id attribute, kept for reports (`entryUUID`, AD `objectGUID`).
    pub stable_id_attribute: Option<String>,
}

impl Default for Schema {
    fn default() -> Self {
        Self {
            user_object_classes: vec!["inetOrgPerson".into(), "user".into()],
            group_object_classes: vec![
                "groupOfNames".into(),
                "groupOfUniqueNames".into(),
                "posixGroup".into(),
                "group".into(),
            ],
            account_id_attribute: "atlassianAccountId".into(),
            email_attribute: "mail".into(),
            display_name_attribute: "cn".into(),
            uid_attribute: "uid".into(),
            group_name_attribute: "cn".into(),
            disabled_attribute: None,
            ad_user_account_control: true,
            ppolicy_locked: true,
            stable_id_attribute: Some("entryUUID".into()),
        }
    }
}

/// A person as the directory describes them.
#[derive(Clone, Debug, Serialize)]
pub struct Person {
    pub dn: Dn,
    pub account_id: AccountId,
    pub display_name: String,
    pub email: Option<String>,
    /// Why the person is disabled (left the company), if they are.
    pub disabled: Option<String>,
    /// The directory's immutable id (`entryUUID`, AD `objectGUID`), when configured and present.
    pub stable_id: Option<String>,
}

/// A directory group with its members resolved through nesting, by account id.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub dn: Dn,
    pub name: String,
    pub members: BTreeSet<AccountId>,
}

/// An entry that was skipped, and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EntryIssue {
    pub dn: String,
    pub problem: String,
}

/// The directory as one consistent snapshot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Directory {
    pub people: BTreeMap<AccountId, Person>,
    pub groups: BTreeMap<Dn, Group>,
    /// Account ids whose entries were ambiguous (duplicates): never added or removed anywhere.
    pub protected: BTreeSet<AccountId>,
    pub issues: Vec<EntryIssue>,
}

impl Directory {
    /// Groups whose name (case-insensitive) or DN equals `key`.
    pub fn find_groups(&self, key: &str) -> Vec<&Group> {
        if key.contains('=') {
            let dn = Dn::new(key);
            self.groups.get(&dn).into_iter().collect()
        } else {
            self.groups
                .values()
                .filter(|g| g.name.eq_ignore_ascii_case(key.trim()))
                .collect()
        }
    }
    pub fn active_people(&self) -> usize {
        self.people
            .values()
            .filter(|p| p.disabled.is_none())
            .count()
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "1" | "locked" | "disabled"
    )
}

fn disabled_reason(e: &Entry, s: &Schema) -> Option<String> {
    if let Some(attr) = &s.disabled_attribute {
        if let Some(v) = e.get(attr).iter().find(|v| truthy(v)) {
            return Some(format!("{attr}={v}"));
        }
    }
    if s.ad_user_account_control {
        if let Some(v) = e.first("userAccountControl") {
            if v.trim()
                .parse::<u64>()
                .map(|n| n & 0x2 != 0)
                .unwrap_or(false)
            {
                return Some(format!("userAccountControl={v} (ACCOUNTDISABLE)"));
            }
        }
    }
    if s.ppolicy_locked {
        if let Some(v) = e.first("pwdAccountLockedTime") {
            return Some(format!("pwdAccountLockedTime={v}"));
        }
    }
    None
}

/// What a source read: people and groups (a live LDAP source knows which is which from its two
/// searches; an LDIF file is split by object class), plus DNs a server-side filter marked disabled.
#[derive(Clone, Debug, Default)]
pub struct Entries {
    pub users: Vec<Entry>,
    pub groups: Vec<Entry>,
    /// People matching `source.disabled_filter`.
    pub disabled: BTreeSet<Dn>,
}

impl Entries {
    /// Splits one list by the schema's object classes (an entry that is both counts as a group).
    pub fn split(entries: Vec<Entry>, schema: &Schema) -> Entries {
        let has = |e: &Entry, classes: &[String]| classes.iter().any(|c| e.has_object_class(c));
        let mut out = Entries::default();
        for e in entries {
            if has(&e, &schema.group_object_classes) {
                out.groups.push(e);
            } else if has(&e, &schema.user_object_classes) {
                out.users.push(e);
            }
        }
        out
    }
}

/// Turns entries into a [`Directory`]. Pure; the only function every source shares, so the
/// LDIF and LDAP sources map the same entries identically.
///
/// Bad entries (no account id, a malformed one, two people with one account id, a member DN
/// that resolves to nothing) are skipped and listed in `issues` with their DN.
pub fn resolve(input: &Entries, schema: &Schema) -> Directory {
    let mut dir = Directory::default();
    let users = &input.users;
    let groups = &input.groups;

    // People, keyed by DN for member resolution.
    let mut by_dn: HashMap<Dn, AccountId> = HashMap::new();
    let mut by_uid: HashMap<String, AccountId> = HashMap::new();
    let mut seen: HashMap<AccountId, Dn> = HashMap::new();
    let mut member_of: Vec<(AccountId, Vec<Dn>)> = Vec::new();
    for e in users {
        let issue = |p: String| EntryIssue {
            dn: e.dn.to_string(),
            problem: p,
        };
        let Some(raw) = e.first(&schema.account_id_attribute) else {
            dir.issues.push(issue(format!(
                "no {} attribute",
                schema.account_id_attribute
            )));
            continue;
        };
        let id = match AccountId::parse(raw) {
            Ok(id) => id,
            Err(m) => {
                dir.issues.push(issue(format!(
                    "malformed {}: {m}",
                    schema.account_id_attribute
                )));
                continue;
            }
        };
        if let Some(first) = seen.get(&id) {
            dir.issues.push(issue(format!(
                "account id {id} is also used by {first}; both entries are ignored and their access left as it is"
            )));
            dir.protected.insert(id.clone());
            continue;
        }
        seen.insert(id.clone(), e.dn.clone());
        by_dn.insert(e.dn.clone(), id.clone());
        if let Some(uid) = e.first(&schema.uid_attribute) {
            by_uid.insert(uid.to_lowercase(), id.clone());
        }
        let member_of_dns: Vec<Dn> = e.get("memberOf").iter().map(|d| Dn::new(d)).collect();
        if !member_of_dns.is_empty() {
            member_of.push((id.clone(), member_of_dns));
        }
        dir.people.insert(
            id.clone(),
            Person {
                dn: e.dn.clone(),
                display_name: e
                    .first(&schema.display_name_attribute)
                    .unwrap_or_else(|| e.dn.first_value())
                    .to_owned(),
                email: e.first(&schema.email_attribute).map(str::to_owned),
                disabled: disabled_reason(e, schema).or_else(|| {
                    input
                        .disabled
                        .contains(&e.dn)
                        .then(|| "matches source.disabled_filter".to_owned())
                }),
                stable_id: schema
                    .stable_id_attribute
                    .as_deref()
                    .and_then(|a| e.first(a))
                    .map(str::to_owned),
                account_id: id,
            },
        );
    }
    // Duplicated ids are ambiguous: drop every entry that used them.
    for id in &dir.protected {
        dir.people.remove(id);
        by_dn.retain(|_, v| v != id);
        by_uid.retain(|_, v| v != id);
    }

    // Groups: direct people, nested group DNs.
    struct Raw {
        name: String,
        people: BTreeSet<AccountId>,
        nested: Vec<Dn>,
    }
    let mut raw: BTreeMap<Dn, Raw> = BTreeMap::new();
    let group_dns: BTreeSet<Dn> = groups.iter().map(|e| e.dn.clone()).collect();
    for e in groups {
        let mut g = Raw {
            name: e
                .first(&schema.group_name_attribute)
                .unwrap_or_else(|| e.dn.first_value())
                .to_owned(),
            people: BTreeSet::new(),
            nested: Vec::new(),
        };
        for m in e.get("member").iter().chain(e.get("uniqueMember")) {
            // groupOfUniqueNames may carry an optional `#'0101'B` UID suffix.
            let m = m.split_once('#').map_or(m.as_str(), |(d, _)| d);
            let dn = Dn::new(m);
            if let Some(id) = by_dn.get(&dn) {
                g.people.insert(id.clone());
            } else if group_dns.contains(&dn) {
                g.nested.push(dn);
            } else if !dir.protected.iter().any(|p| seen.get(p) == Some(&dn)) {
                dir.issues.push(EntryIssue {
                    dn: e.dn.to_string(),
                    problem: format!("member {m} resolves to no person or group"),
                });
            }
        }
        for uid in e.get("memberUid") {
            match by_uid.get(&uid.to_lowercase()) {
                Some(id) => {
                    g.people.insert(id.clone());
                }
                None => dir.issues.push(EntryIssue {
                    dn: e.dn.to_string(),
                    problem: format!("memberUid {uid} resolves to no person"),
                }),
            }
        }
        raw.insert(e.dn.clone(), g);
    }
    // memberOf on people (e.g. AD, or OpenLDAP's memberof overlay) adds direct memberships.
    for (id, groups) in member_of {
        for gdn in groups {
            let entry = raw.entry(gdn.clone()).or_insert_with(|| Raw {
                name: gdn.first_value().to_owned(),
                people: BTreeSet::new(),
                nested: Vec::new(),
            });
            entry.people.insert(id.clone());
        }
    }

    // Transitive closure, cycle-safe: each group's members = its people + members of nested groups.
    for (dn, g) in &raw {
        let mut members = BTreeSet::new();
        let mut stack = vec![dn.clone()];
        let mut visited = BTreeSet::new();
        while let Some(cur) = stack.pop() {
            if !visited.insert(cur.clone()) {
                continue;
            }
            if let Some(r) = raw.get(&cur) {
                members.extend(r.people.iter().cloned());
                stack.extend(r.nested.iter().cloned());
            }
        }
        dir.groups.insert(
            dn.clone(),
            Group {
                dn: dn.clone(),
                name: g.name.clone(),
                members,
            },
        );
    }
    dir
}

/// A configured directory source.
#[derive(Clone, Debug)]
pub enum Source {
    /// An LDIF export on disk, re-read on every run.
    LdifFile { path: PathBuf, schema: Schema },
    /// LDIF text held in memory (the demo's bundled directory).
    LdifText {
        name: String,
        text: String,
        schema: Schema,
    },
    /// A live LDAP / Active Directory server.
    Ldap(Box<ldap::LdapSource>),
}

impl Source {
    /// Reads the whole directory or fails; never returns a partial snapshot.
    pub async fn read(&self) -> Result<Directory, SourceError> {
        let (origin, text, schema) = match self {
            Source::Ldap(l) => {
                let entries = l.read().await?;
                if entries.users.is_empty() {
                    return Err(SourceError::Empty {
                        origin: format!("{} under {}", l.url, l.users.base),
                    });
                }
                return Ok(resolve(&entries, &l.schema));
            }
            Source::LdifFile { path, schema } => {
                let text =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| SourceError::Io {
                            path: path.clone(),
                            source,
                        })?;
                (path.display().to_string(), text, schema)
            }
            Source::LdifText { name, text, schema } => (name.clone(), text.clone(), schema),
        };
        let entries = ldif::parse(&text, &origin)?;
        if entries.is_empty() {
            return Err(SourceError::Empty { origin });
        }
        Ok(resolve(&Entries::split(entries, schema), schema))
    }

    pub fn schema(&self) -> &Schema {
        match self {
            Source::LdifFile { schema, .. } | Source::LdifText { schema, .. } => schema,
            Source::Ldap(l) => &l.schema,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::LdifFile { path, .. } => format!("LDIF file {}", path.display()),
            Source::LdifText { name, .. } => format!("LDIF {name}"),
            Source::Ldap(l) => format!("LDAP {}", l.url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(text: &str) -> Directory {
        let schema = Schema {
            disabled_attribute: Some("nsAccountLock".into()),
            ..Schema::default()
        };
        resolve(
            &Entries::split(ldif::parse(text, "t").expect("ldif"), &schema),
            &schema,
        )
    }

    const PEOPLE: &str = "\
dn: uid=ann,ou=people,dc=x
objectClass: inetOrgPerson
uid: ann
cn: Ann Lee
atlassianAccountId: acc-ann

dn: uid=bob,ou=people,dc=x
objectClass: inetOrgPerson
uid: bob
cn: Bob
atlassianAccountId: acc-bob
nsAccountLock: TRUE

dn: uid=cid,ou=people,dc=x
objectClass: inetOrgPerson
uid: cid
cn: Cid
atlassianAccountId: acc-cid
userAccountControl: 514

dn: uid=dee,ou=people,dc=x
objectClass: inetOrgPerson
uid: dee
cn: Dee
atlassianAccountId: acc-dee
pwdAccountLockedTime: 20260101000000Z
";

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).expect("id")
    }

    #[test]
    fn nested_groups_resolve_transitively_even_with_a_cycle() {
        let d = dir(&format!(
            "{PEOPLE}
dn: cn=a,ou=groups,dc=x
objectClass: groupOfNames
cn: a
member: uid=ann,ou=people,dc=x
member: cn=b,ou=groups,dc=x

dn: cn=b,ou=groups,dc=x
objectClass: groupOfUniqueNames
cn: b
uniqueMember: UID=Bob, OU=People, DC=x
uniqueMember: cn=a,ou=groups,dc=x

dn: cn=p,ou=groups,dc=x
objectClass: posixGroup
cn: p
memberUid: cid
"
        ));
        let a = &d.find_groups("A")[0];
        assert_eq!(
            a.members,
            [id("acc-ann"), id("acc-bob")].into_iter().collect()
        );
        let b = &d.find_groups("cn=b,ou=groups,dc=x")[0];
        assert_eq!(b.members, a.members, "cycle: b contains a contains b");
        assert_eq!(
            d.find_groups("p")[0].members,
            [id("acc-cid")].into_iter().collect()
        );
        assert!(d.issues.is_empty(), "{:?}", d.issues);
    }

    #[test]
    fn each_disabled_marker_is_detected() {
        let d = dir(PEOPLE);
        assert!(d.people[&id("acc-ann")].disabled.is_none());
        for who in ["acc-bob", "acc-cid", "acc-dee"] {
            assert!(
                d.people[&id(who)].disabled.is_some(),
                "{who} should be disabled"
            );
        }
        assert_eq!(d.active_people(), 1);
    }

    #[test]
    fn bad_entries_are_reported_with_their_dn_and_do_not_affect_others() {
        let d = dir("\
dn: uid=nobody,dc=x
objectClass: inetOrgPerson
cn: No Id

dn: uid=bad,dc=x
objectClass: inetOrgPerson
atlassianAccountId: not valid!

dn: uid=twin1,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-twin

dn: uid=twin2,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-twin

dn: uid=ok,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-ok

dn: cn=g,dc=x
objectClass: groupOfNames
member: uid=ok,dc=x
member: uid=ghost,dc=x
member: uid=twin1,dc=x
");
        let problems: Vec<_> = d.issues.iter().map(|i| i.dn.as_str()).collect();
        assert_eq!(
            problems,
            [
                "uid=nobody,dc=x",
                "uid=bad,dc=x",
                "uid=twin2,dc=x",
                "cn=g,dc=x"
            ]
        );
        assert!(d.issues[3].problem.contains("uid=ghost,dc=x"));
        assert!(d.protected.contains(&id("acc-twin")));
        assert_eq!(
            d.find_groups("g")[0].members,
            [id("acc-ok")].into_iter().collect()
        );
    }

    #[test]
    fn member_of_on_people_adds_memberships() {
        let d = dir("\
dn: uid=ann,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-ann
memberOf: cn=Admins,ou=groups,dc=x
");
        assert_eq!(d.find_groups("admins")[0].members.len(), 1);
    }
}
