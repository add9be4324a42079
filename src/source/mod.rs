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

pub use crate::config::Schema;
pub use crate::directory::{Directory, EntryIssue, Group, Person};

use crate::config::SourceSettings;
use crate::model::{normalise_dn_into, AccountId, Dn};
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
    #[error("{origin}: entries were read but no person is usable ({skipped} entries skipped; check [directory] account_id_attribute); refusing to treat that as 'everyone left'")]
    NoUsablePerson { origin: String, skipped: usize },
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
            SourceError::NoUsablePerson { .. } => "no_usable_person",
            SourceError::Ldap { .. } => "ldap",
        }
    }
}

/// Attribute names compare case-insensitively; most callers already pass lower case.
fn lower(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
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
        match self.attrs.get_mut(lower(name).as_ref()) {
            Some(v) => v.push(value),
            None => {
                self.attrs.insert(name.to_ascii_lowercase(), vec![value]);
            }
        }
    }
    /// Adds values under an owned attribute name (lower-cased in place: no copy).
    pub fn push_all(&mut self, mut name: String, values: Vec<String>) {
        name.make_ascii_lowercase();
        match self.attrs.get_mut(&name) {
            Some(v) => v.extend(values),
            None => {
                self.attrs.insert(name, values);
            }
        }
    }
    pub fn get(&self, name: &str) -> &[String] {
        self.attrs
            .get(lower(name).as_ref())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// Attribute names as stored (lower-cased).
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attrs.keys().map(String::as_str)
    }
    /// Removes and returns an attribute's values.
    pub fn take(&mut self, name: &str) -> Vec<String> {
        self.attrs.remove(lower(name).as_ref()).unwrap_or_default()
    }
    /// Removes an attribute and returns its first value.
    pub fn take_first(&mut self, name: &str) -> Option<String> {
        self.take(name).into_iter().next()
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

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "1" | "locked" | "disabled"
    )
}

/// ppolicy's value for an account locked until an administrator unlocks it.
const PPOLICY_PERMANENT_LOCK: &str = "000001010000Z";

fn disabled_reason(e: &Entry, s: &Schema, disabled_attr: Option<&str>) -> Option<String> {
    if let (Some(attr), Some(lower)) = (&s.disabled_attribute, disabled_attr) {
        if let Some(v) = e.get(lower).iter().find(|v| truthy(v)) {
            return Some(format!("{attr}={v}"));
        }
    }
    if s.ad_user_account_control {
        if let Some(v) = e.first("useraccountcontrol") {
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
        // Only the administrative lock counts: a lockout after failed logins carries the time
        // it happened and ends by itself; off-boarding someone for mistyping would be wrong.
        if let Some(v) = e.first("pwdaccountlockedtime") {
            if v.trim() == PPOLICY_PERMANENT_LOCK {
                return Some(format!(
                    "pwdAccountLockedTime={v} (locked by an administrator)"
                ));
            }
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

/// Turns entries into a [`Directory`]. Pure; the only code every source shares, so the LDIF
/// and LDAP sources map the same entries identically.
///
/// Bad entries (no account id, a malformed one, two people with one account id, a member DN
/// that resolves to nothing) are skipped and listed in `issues` with their DN.
pub fn resolve(input: Entries, schema: &Schema) -> Directory {
    let mut r = Resolver::new(schema);
    for e in input.users {
        r.add_person(e);
    }
    for e in input.groups {
        r.add_group(e);
    }
    for dn in input.disabled {
        r.add_disabled(dn);
    }
    r.finish()
}

/// The resolver, fed entry by entry: a live source hands each page to it as the next page is
/// being fetched, and no raw entry is kept once read (this bounds time and peak memory on
/// directories of a hundred thousand people).
pub struct Resolver<'s> {
    schema: &'s Schema,
    a_id: String,
    a_mail: String,
    a_name: String,
    a_uid: String,
    a_group_name: String,
    a_stable: Option<String>,
    a_disabled: Option<String>,
    people: Vec<Option<Person>>,
    by_dn: HashMap<String, usize>,
    by_uid: HashMap<String, usize>,
    by_id: HashMap<AccountId, usize>,
    member_of: Vec<(usize, Vec<String>)>,
    frozen_dns: BTreeSet<String>,
    /// Person entries skipped for a missing or malformed account id: already reported with
    /// their DN, so a group naming them is not reported again.
    unusable_dns: BTreeSet<String>,
    ambiguous_uids: BTreeSet<String>,
    groups: Vec<Entry>,
    disabled: BTreeSet<Dn>,
    dir: Directory,
}

impl<'s> Resolver<'s> {
    pub fn new(schema: &'s Schema) -> Self {
        let attr = |a: &str| a.to_ascii_lowercase();
        Resolver {
            a_id: attr(&schema.account_id_attribute),
            a_mail: attr(&schema.email_attribute),
            a_name: attr(&schema.display_name_attribute),
            a_uid: attr(&schema.uid_attribute),
            a_group_name: attr(&schema.group_name_attribute),
            a_stable: schema.stable_id_attribute.as_deref().map(attr),
            a_disabled: schema.disabled_attribute.as_deref().map(attr),
            schema,
            people: Vec::new(),
            by_dn: HashMap::new(),
            by_uid: HashMap::new(),
            by_id: HashMap::new(),
            member_of: Vec::new(),
            frozen_dns: BTreeSet::new(),
            unusable_dns: BTreeSet::new(),
            ambiguous_uids: BTreeSet::new(),
            groups: Vec::new(),
            disabled: BTreeSet::new(),
            dir: Directory::default(),
        }
    }

    pub fn people_seen(&self) -> usize {
        self.people.len()
    }

    /// One person entry.
    pub fn add_person(&mut self, mut e: Entry) {
        let schema = self.schema;
        let dir = &mut self.dir;
        let issue = |p: String| EntryIssue {
            dn: e.dn.to_string(),
            problem: p,
        };
        let email = e.first(&self.a_mail).map(str::to_owned);
        let Some(raw) = e.first(&self.a_id) else {
            dir.issues.push(issue(format!(
                "no {} attribute",
                schema.account_id_attribute
            )));
            self.unusable_dns.insert(e.dn.normalised().to_owned());
            dir.unusable_emails.extend(email);
            return;
        };
        let id = match AccountId::parse(raw) {
            Ok(id) => id,
            Err(m) => {
                dir.issues.push(issue(format!(
                    "malformed {}: {m}",
                    schema.account_id_attribute
                )));
                self.unusable_dns.insert(e.dn.normalised().to_owned());
                dir.unusable_emails.extend(email);
                return;
            }
        };
        if let Some(&first) = self.by_dn.get(e.dn.normalised()) {
            // Two entries with one DN: neither can be trusted to say who this is or whether
            // they left, so both accounts keep exactly what they have.
            let first_id = self.people[first].as_ref().map(|p| p.account_id.clone());
            dir.issues.push(issue(format!(
                "another entry has the same DN; both are ignored and their access left as it is ({} {})",
                schema.account_id_attribute,
                first_id
                    .iter()
                    .chain([&id])
                    .map(AccountId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            dir.frozen.extend(first_id);
            dir.frozen.insert(id);
            dir.unusable_emails.extend(email);
            return;
        }
        if let Some(&first) = self.by_id.get(&id) {
            let first_dn = self.people[first]
                .as_ref()
                .map(|p| p.dn.to_string())
                .unwrap_or_default();
            dir.issues.push(issue(format!(
                "account id {id} is also used by {first_dn}; both entries are ignored and their access left as it is"
            )));
            self.frozen_dns.insert(e.dn.normalised().to_owned());
            dir.frozen.insert(id);
            return;
        }
        let idx = self.people.len();
        self.by_id.insert(id.clone(), idx);
        self.by_dn.insert(e.dn.normalised().to_owned(), idx);
        if let Some(uid) = e.take_first(&self.a_uid) {
            let uid = uid.trim().to_lowercase();
            if self.by_uid.insert(uid.clone(), idx).is_some() {
                // Two people share a login: a memberUid naming it cannot be resolved.
                self.ambiguous_uids.insert(uid);
            }
        }
        let groups_of = e.take("memberof");
        if !groups_of.is_empty() {
            self.member_of.push((idx, groups_of));
        }
        let disabled = disabled_reason(&e, schema, self.a_disabled.as_deref());
        let display_name = e
            .take_first(&self.a_name)
            .unwrap_or_else(|| e.dn.first_value().to_owned());
        self.people.push(Some(Person {
            display_name,
            email: e.take_first(&self.a_mail),
            disabled,
            stable_id: self.a_stable.as_deref().and_then(|a| e.take_first(a)),
            account_id: id,
            dn: e.dn,
        }));
    }

    /// One group entry (kept until [`Resolver::finish`]: members may be read later).
    pub fn add_group(&mut self, e: Entry) {
        self.groups.push(e);
    }

    /// A person a server-side filter marked disabled.
    pub fn add_disabled(&mut self, dn: Dn) {
        self.disabled.insert(dn);
    }

    pub fn finish(self) -> Directory {
        let Resolver {
            mut people,
            by_dn,
            by_uid,
            by_id,
            member_of,
            mut frozen_dns,
            unusable_dns,
            ambiguous_uids,
            groups,
            disabled,
            mut dir,
            a_group_name,
            ..
        } = self;
        let mut buf = String::new();
        // Duplicated ids are ambiguous: drop every entry that used them.
        for id in &dir.frozen {
            if let Some(&i) = by_id.get(id) {
                if let Some(p) = people[i].take() {
                    frozen_dns.insert(p.dn.normalised().to_owned());
                }
            }
        }
        if !disabled.is_empty() {
            for p in people.iter_mut().flatten() {
                if p.disabled.is_none() && disabled.contains(&p.dn) {
                    p.disabled = Some("matches source.disabled_filter".to_owned());
                }
            }
        }

        // Groups: direct people and nested groups, by index.
        struct Raw {
            dn: Dn,
            name: String,
            people: Vec<usize>,
            nested: Vec<usize>,
        }
        let mut raw: Vec<Raw> = Vec::with_capacity(groups.len());
        let mut group_idx: HashMap<String, usize> = HashMap::with_capacity(groups.len());
        for (i, e) in groups.iter().enumerate() {
            group_idx.insert(e.dn.normalised().to_owned(), i);
        }
        for mut e in groups {
            let mut g = Raw {
                name: e
                    .take_first(&a_group_name)
                    .unwrap_or_else(|| e.dn.first_value().to_owned()),
                people: Vec::new(),
                nested: Vec::new(),
                dn: Dn::new(""),
            };
            let members = e.take("member");
            let unique = e.take("uniquemember");
            let plain = members.iter().map(String::as_str);
            // groupOfUniqueNames values may end with an optional `#'0101'B` unique identifier.
            let unique = unique.iter().map(|m| match m.rsplit_once("#'") {
                Some((dn, uid)) if uid.ends_with("'B") => dn,
                _ => m.as_str(),
            });
            for m in plain.chain(unique) {
                normalise_dn_into(m, &mut buf);
                if let Some(&p) = by_dn.get(buf.as_str()) {
                    if people[p].is_some() {
                        g.people.push(p);
                    }
                } else if let Some(&n) = group_idx.get(buf.as_str()) {
                    g.nested.push(n);
                } else if !frozen_dns.contains(buf.as_str()) && !unusable_dns.contains(buf.as_str())
                {
                    dir.issues.push(EntryIssue {
                        dn: e.dn.to_string(),
                        problem: format!("member {m} resolves to no person or group"),
                    });
                }
            }
            for uid in e.take("memberuid") {
                let key = uid.trim().to_lowercase();
                if ambiguous_uids.contains(&key) {
                    dir.issues.push(EntryIssue {
                        dn: e.dn.to_string(),
                        problem: format!(
                            "memberUid {uid} names more than one person; not resolved"
                        ),
                    });
                    continue;
                }
                match by_uid.get(&key) {
                    Some(&p) => {
                        if people[p].is_some() {
                            g.people.push(p);
                        }
                    }
                    None => dir.issues.push(EntryIssue {
                        dn: e.dn.to_string(),
                        problem: format!("memberUid {uid} resolves to no person"),
                    }),
                }
            }
            g.dn = e.dn;
            raw.push(g);
        }
        // memberOf on people (AD, or OpenLDAP's memberof overlay) adds direct memberships; a
        // group only named there is created from its DN.
        for (p, dns) in member_of {
            if people[p].is_none() {
                continue;
            }
            for gdn in dns {
                normalise_dn_into(&gdn, &mut buf);
                let g = match group_idx.get(buf.as_str()) {
                    Some(&g) => g,
                    None => {
                        let dn = Dn::from_string(gdn);
                        group_idx.insert(dn.normalised().to_owned(), raw.len());
                        raw.push(Raw {
                            name: dn.first_value().to_owned(),
                            dn,
                            people: Vec::new(),
                            nested: Vec::new(),
                        });
                        raw.len() - 1
                    }
                };
                raw[g].people.push(p);
            }
        }

        // Transitive closure, cycle-safe: a group's members are its people plus those of every
        // group reachable through nesting. A stamp per group avoids clearing a visited set.
        let mut stamp = vec![usize::MAX; raw.len()];
        let mut stack = Vec::new();
        let mut closure: Vec<Vec<usize>> = Vec::with_capacity(raw.len());
        for start in 0..raw.len() {
            let mut members: Vec<usize> = Vec::new();
            stack.clear();
            stack.push(start);
            while let Some(cur) = stack.pop() {
                if stamp[cur] == start {
                    continue;
                }
                stamp[cur] = start;
                members.extend_from_slice(&raw[cur].people);
                stack.extend(
                    raw[cur]
                        .nested
                        .iter()
                        .copied()
                        .filter(|n| stamp[*n] != start),
                );
            }
            members.sort_unstable();
            members.dedup();
            closure.push(members);
        }
        for (g, members) in raw.into_iter().zip(closure) {
            let members = members
                .into_iter()
                .filter_map(|p| people[p].as_ref().map(|x| x.account_id.clone()))
                .collect();
            dir.groups.insert(
                g.dn.clone(),
                Group {
                    dn: g.dn,
                    name: g.name,
                    members,
                },
            );
        }
        dir.people = people
            .into_iter()
            .flatten()
            .map(|p| (p.account_id.clone(), p))
            .collect();
        dir
    }
}

/// A directory reader built from its settings.
#[derive(Clone, Debug)]
pub struct Source {
    kind: Kind,
    schema: Schema,
}

#[derive(Clone, Debug)]
enum Kind {
    LdifFile(PathBuf),
    LdifText { name: String, text: String },
    Ldap(Box<ldap::LdapSource>),
}

impl Source {
    pub fn new(settings: &SourceSettings, schema: &Schema) -> Source {
        let kind = match settings {
            SourceSettings::LdifFile { path } => Kind::LdifFile(path.clone()),
            SourceSettings::LdifText { name, text } => Kind::LdifText {
                name: name.clone(),
                text: text.clone(),
            },
            SourceSettings::Ldap(l) => Kind::Ldap(Box::new(ldap::LdapSource::new(
                (**l).clone(),
                schema.clone(),
            ))),
        };
        Source {
            kind,
            schema: schema.clone(),
        }
    }

    /// Calls `hook` after each LDAP page (tests use it to kill the server mid-read); no effect
    /// on file sources.
    pub fn with_page_hook(mut self, hook: ldap::PageHook) -> Source {
        if let Kind::Ldap(l) = &mut self.kind {
            l.on_page = Some(hook);
        }
        self
    }

    /// Reads the whole directory or fails; never returns a partial snapshot.
    pub async fn read(&self) -> Result<Directory, SourceError> {
        let dir = self.read_unchecked().await?;
        if dir.people.is_empty() {
            // Every person entry was unusable (e.g. the account-id attribute is misnamed or
            // hidden by access rules): that is a broken read, not a company with nobody in it.
            return Err(SourceError::NoUsablePerson {
                origin: self.describe(),
                skipped: dir.issues.len(),
            });
        }
        Ok(dir)
    }

    async fn read_unchecked(&self) -> Result<Directory, SourceError> {
        let (origin, text) = match &self.kind {
            Kind::Ldap(l) => return l.read_directory().await,
            Kind::LdifFile(path) => {
                let text =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| SourceError::Io {
                            path: path.clone(),
                            source,
                        })?;
                (path.display().to_string(), text)
            }
            Kind::LdifText { name, text } => (name.clone(), text.clone()),
        };
        let entries = ldif::parse(&text, &origin)?;
        if entries.is_empty() {
            return Err(SourceError::Empty { origin });
        }
        Ok(resolve(Entries::split(entries, &self.schema), &self.schema))
    }

    /// The off-boarding poll's light read: who is disabled among the people changed since
    /// `since` (LDAP `modifyTimestamp`), plus everyone `source.disabled_filter` matches. A file
    /// source is small: it is read whole.
    pub async fn read_leavers(
        &self,
        since: std::time::SystemTime,
    ) -> Result<ldap::Leavers, SourceError> {
        match &self.kind {
            Kind::Ldap(l) => l.read_leavers(&ldap::generalized_time(since)).await,
            _ => {
                let dir = self.read().await?;
                Ok(ldap::Leavers {
                    disabled: dir
                        .people
                        .into_values()
                        .filter_map(|p| p.disabled.map(|why| (p.account_id, p.dn, why)))
                        .collect(),
                    by_filter: Vec::new(),
                })
            }
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::LdifFile(path) => format!("LDIF file {}", path.display()),
            Kind::LdifText { name, .. } => format!("LDIF {name}"),
            Kind::Ldap(l) => format!("LDAP {}", l.cfg.url),
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
            Entries::split(
                ldif::parse(&crate::model::with_synthetic_ids(text), "t").expect("ldif"),
                &schema,
            ),
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
pwdAccountLockedTime: 000001010000Z

dn: uid=eve,ou=people,dc=x
objectClass: inetOrgPerson
uid: eve
cn: Eve
atlassianAccountId: acc-eve
pwdAccountLockedTime: 20260101000000Z
";

    fn id(s: &str) -> AccountId {
        AccountId::parse(&crate::model::synthetic_account_id(s)).expect("id")
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
        assert!(
            d.people[&id("acc-eve")].disabled.is_none(),
            "a timed lockout is not off-boarding"
        );
        assert_eq!(d.active_people(), 2);
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
        assert!(d.frozen.contains(&id("acc-twin")));
        assert_eq!(
            d.find_groups("g")[0].members,
            [id("acc-ok")].into_iter().collect()
        );
    }

    #[test]
    fn two_entries_with_one_dn_freeze_both_accounts() {
        let d = dir("\
dn: uid=ann,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-ann
mail: ann@x.test

dn: UID=Ann,DC=x
objectClass: inetOrgPerson
atlassianAccountId: acc-imposter
mail: imposter@x.test
nsAccountLock: TRUE

dn: uid=ok,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-ok

dn: cn=g,dc=x
objectClass: groupOfNames
member: uid=ann,dc=x
member: uid=ok,dc=x
");
        assert_eq!(d.issues.len(), 1, "{:?}", d.issues);
        assert!(d.issues[0].problem.contains("same DN"), "{:?}", d.issues);
        assert!(d.frozen.contains(&id("acc-ann")) && d.frozen.contains(&id("acc-imposter")));
        assert!(
            !d.people.contains_key(&id("acc-ann")),
            "neither entry is a person"
        );
        assert!(!d.people.contains_key(&id("acc-imposter")));
        assert_eq!(d.unusable_emails, ["imposter@x.test"]);
        assert_eq!(
            d.find_groups("g")[0].members,
            [id("acc-ok")].into_iter().collect()
        );
    }

    #[test]
    fn a_member_without_an_account_id_is_reported_once_as_that() {
        let d = dir("\
dn: uid=noid,dc=x
objectClass: inetOrgPerson
cn: No Id

dn: uid=ok,dc=x
objectClass: inetOrgPerson
atlassianAccountId: acc-ok

dn: cn=g1,dc=x
objectClass: groupOfNames
member: uid=noid,dc=x
member: uid=ok,dc=x

dn: cn=g2,dc=x
objectClass: groupOfNames
member: UID=NoId, DC=x
");
        assert_eq!(d.issues.len(), 1, "{:?}", d.issues);
        assert_eq!(d.issues[0].dn, "uid=noid,dc=x");
        assert!(d.issues[0].problem.contains("no atlassianAccountId"));
        assert_eq!(d.find_groups("g1")[0].members.len(), 1);
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
