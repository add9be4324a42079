//! Directory sources: where people and groups come from.
//!
//! Every source produces plain LDAP-shaped [`Entry`] values; [`resolve`] turns them into a
//! [`Directory`] (people by account id, groups with transitively resolved members, and a list
//! of bad entries). The LDIF file source and the live LDAP source share that code, so the same
//! entries map identically whichever way they were read.
//!
//! Fail closed: a source either returns a complete entry set or an error. Bad *entries* are
//! skipped and reported; they never change anyone else's result.

pub mod csv_file;
pub mod hr;
pub mod hr_http;
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
    #[error("{origin}: {message}")]
    Hr { origin: String, message: String },
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
            SourceError::Hr { .. } => "hr",
        }
    }
}

/// The hasher of the resolver's maps (DNs, account ids, logins): FxHash, as in rustc. SipHash
/// took 5% of a 100k-person read. Its resistance to chosen keys buys little here: the keys come
/// from the directory the operator configured, and a flood of colliding entries could only slow
/// the read, which `source.read_timeout_secs` bounds and fails closed.
#[derive(Clone, Copy, Default)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// One directory entry: a DN and its attributes (names lower-cased, values in order).
///
/// The attributes are a short list, not a map: an entry holds the handful of attributes a
/// search asked for, and a linear scan of ten short names is cheaper than building a map for
/// each of a hundred thousand entries.
#[derive(Clone, Debug)]
pub struct Entry {
    pub dn: Dn,
    attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    pub fn new(dn: Dn) -> Self {
        Self::with_capacity(dn, 0)
    }
    /// An entry with room for `attributes` attribute names.
    pub fn with_capacity(dn: Dn, attributes: usize) -> Self {
        Self {
            dn,
            attrs: Vec::with_capacity(attributes),
        }
    }
    /// Attribute names compare case-insensitively (they are stored lower-cased).
    fn slot(&self, name: &str) -> Option<usize> {
        self.attrs
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
    }
    pub fn push(&mut self, name: &str, value: String) {
        match self.slot(name) {
            Some(i) => self.attrs[i].1.push(value),
            None => self.attrs.push((name.to_ascii_lowercase(), vec![value])),
        }
    }
    /// Adds values under an owned attribute name (lower-cased in place: no copy).
    pub fn push_all(&mut self, mut name: String, values: Vec<String>) {
        name.make_ascii_lowercase();
        match self.slot(&name) {
            Some(i) => self.attrs[i].1.extend(values),
            None => self.attrs.push((name, values)),
        }
    }
    pub fn get(&self, name: &str) -> &[String] {
        self.slot(name)
            .map(|i| self.attrs[i].1.as_slice())
            .unwrap_or(&[])
    }
    /// Attribute names as stored (lower-cased), in the order they were first added.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attrs.iter().map(|(k, _)| k.as_str())
    }
    /// Removes and returns an attribute's values.
    pub fn take(&mut self, name: &str) -> Vec<String> {
        match self.slot(name) {
            Some(i) => self.attrs.remove(i).1,
            None => Vec::new(),
        }
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
/// directories of a hundred thousand people). A group's member DNs that name a person already
/// read become indices at once; only the few that do not (nested groups, people read later,
/// DNs that resolve to nothing) are kept as text until [`Resolver::finish`].
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
    by_dn: FastMap<String, u32>,
    by_id: FastMap<AccountId, u32>,
    /// Each person's login (trimmed, lower-cased), indexed by `memberUid` only when a group
    /// has such values.
    uids: Vec<(u32, String)>,
    member_of: Vec<(u32, Vec<String>)>,
    frozen_dns: BTreeSet<String>,
    /// Person entries skipped for a missing or malformed account id: already reported with
    /// their DN, so a group naming them is not reported again.
    unusable_dns: BTreeSet<String>,
    groups: Vec<GroupEntry>,
    disabled: BTreeSet<Dn>,
    dir: Directory,
    /// Scratch buffer for normalising member DNs.
    buf: String,
}

/// A group entry as read, its members resolved as far as the people read so far allow.
struct GroupEntry {
    dn: Dn,
    name: String,
    people: Vec<u32>,
    /// Member DNs (as written, `#'..'B` suffix removed) that named no person when read.
    other: Vec<String>,
    member_uids: Vec<String>,
}

/// `dn` in normalised form: borrowed when it already is, else written into `buf`.
fn normalised<'a>(dn: &'a str, buf: &'a mut String) -> &'a str {
    if crate::model::is_normal_dn(dn) {
        dn
    } else {
        normalise_dn_into(dn, buf);
        buf.as_str()
    }
}

/// A login as `memberUid` values are matched: trimmed and lower-cased (in place when it can).
fn uid_key(mut uid: String) -> String {
    if uid.is_ascii() && uid.trim().len() == uid.len() {
        uid.make_ascii_lowercase();
        uid
    } else {
        uid.trim().to_lowercase()
    }
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
            by_dn: FastMap::default(),
            by_id: FastMap::default(),
            uids: Vec::new(),
            member_of: Vec::new(),
            frozen_dns: BTreeSet::new(),
            unusable_dns: BTreeSet::new(),
            groups: Vec::new(),
            disabled: BTreeSet::new(),
            dir: Directory::default(),
            buf: String::new(),
        }
    }

    pub fn people_seen(&self) -> usize {
        self.people.len()
    }

    /// One person entry.
    pub fn add_person(&mut self, e: Entry) {
        let schema = self.schema;
        // Moved out for the call (not cloned: this runs for each of 100k people).
        let a_disabled = self.a_disabled.take();
        self.add_person_with(e, |e| disabled_reason(e, schema, a_disabled.as_deref()));
        self.a_disabled = a_disabled;
    }

    /// A record that could not become a person entry (an HR record without a stable id or
    /// with an unreadable status): reported; the account its id names (when well formed) is
    /// frozen, and its email freezes that workspace member.
    pub fn add_issue(
        &mut self,
        issue: EntryIssue,
        email: Option<String>,
        account_id: Option<&str>,
    ) {
        self.dir.issues.push(issue);
        self.dir.unusable_emails.extend(email);
        if let Some(id) = account_id.and_then(|a| AccountId::parse(a).ok()) {
            self.dir.frozen.insert(id);
        }
    }

    /// One person entry whose disabled reason `disabled` decides (HR records carry their
    /// status; LDAP entries their flags).
    pub fn add_person_with(
        &mut self,
        mut e: Entry,
        disabled: impl FnOnce(&Entry) -> Option<String>,
    ) {
        let schema = self.schema;
        let dir = &mut self.dir;
        let issue = |p: String| EntryIssue {
            dn: e.dn.to_string(),
            problem: p,
        };
        let Some(raw) = e.first(&self.a_id) else {
            dir.issues.push(issue(format!(
                "no {} attribute",
                schema.account_id_attribute
            )));
            self.unusable_dns.insert(e.dn.normalised().to_owned());
            dir.unusable_emails.extend(e.take_first(&self.a_mail));
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
                dir.unusable_emails.extend(e.take_first(&self.a_mail));
                return;
            }
        };
        if let Some(&first) = self.by_dn.get(e.dn.normalised()) {
            // Two entries with one DN: neither can be trusted to say who this is or whether
            // they left, so both accounts keep exactly what they have.
            let first_id = self.people[first as usize]
                .as_ref()
                .map(|p| p.account_id.clone());
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
            dir.unusable_emails.extend(e.take_first(&self.a_mail));
            return;
        }
        if let Some(&first) = self.by_id.get(&id) {
            let first_dn = self.people[first as usize]
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
        // Copied, not taken: a rule may test an attribute the resolver reads too (`uid`, `cn`).
        let attributes = schema
            .person_attributes
            .iter()
            .filter_map(|a| {
                let values = e.get(a);
                (!values.is_empty()).then(|| (a.clone(), values.to_vec()))
            })
            .collect();
        let idx = u32::try_from(self.people.len()).unwrap_or(u32::MAX);
        self.by_id.insert(id.clone(), idx);
        self.by_dn.insert(e.dn.normalised().to_owned(), idx);
        if let Some(uid) = e.take_first(&self.a_uid) {
            self.uids.push((idx, uid_key(uid)));
        }
        let groups_of = e.take("memberof");
        if !groups_of.is_empty() {
            self.member_of.push((idx, groups_of));
        }
        let disabled = disabled(&e);
        let display_name = e
            .take_first(&self.a_name)
            .unwrap_or_else(|| e.dn.first_value().to_owned());
        let stable_id = self.a_stable.as_deref().and_then(|a| e.take_first(a));
        let email = e.take_first(&self.a_mail);
        self.people.push(Some(Person {
            display_name,
            email,
            disabled,
            stable_id,
            attributes,
            account_id: id,
            dn: e.dn,
        }));
    }

    /// One group entry. Members that name a person read so far become indices now; the rest
    /// wait for [`Resolver::finish`] (a nested group may be read later).
    pub fn add_group(&mut self, mut e: Entry) {
        let name = e
            .take_first(&self.a_group_name)
            .unwrap_or_else(|| e.dn.first_value().to_owned());
        let mut g = GroupEntry {
            name,
            people: Vec::new(),
            other: Vec::new(),
            member_uids: e.take("memberuid"),
            dn: Dn::new(""),
        };
        let members = e.take("member");
        let mut unique = e.take("uniquemember");
        // groupOfUniqueNames values may end with an optional `#'0101'B` unique identifier.
        for m in unique.iter_mut() {
            if let Some((dn, uid)) = m.rsplit_once("#'") {
                if uid.ends_with("'B") {
                    let keep = dn.len();
                    m.truncate(keep);
                }
            }
        }
        g.people.reserve(members.len() + unique.len());
        for m in members.into_iter().chain(unique) {
            match self.by_dn.get(normalised(&m, &mut self.buf)) {
                Some(&p) => g.people.push(p),
                None => g.other.push(m),
            }
        }
        g.dn = e.dn;
        self.groups.push(g);
    }

    /// A person a server-side filter marked disabled.
    pub fn add_disabled(&mut self, dn: Dn) {
        self.disabled.insert(dn);
    }

    pub fn finish(self) -> Directory {
        let Resolver {
            mut people,
            by_dn,
            by_id,
            uids,
            member_of,
            mut frozen_dns,
            unusable_dns,
            groups,
            disabled,
            mut dir,
            mut buf,
            ..
        } = self;
        // Duplicated ids are ambiguous: drop every entry that used them.
        for id in &dir.frozen {
            if let Some(&i) = by_id.get(id) {
                if let Some(p) = people[i as usize].take() {
                    frozen_dns.insert(p.dn.normalised().to_owned());
                }
            }
        }
        drop(by_id);
        if !disabled.is_empty() {
            for p in people.iter_mut().flatten() {
                if p.disabled.is_none() && disabled.contains(&p.dn) {
                    p.disabled = Some("matches source.disabled_filter".to_owned());
                }
            }
        }
        // Logins, only when some group names its members by login.
        let mut by_uid: FastMap<String, u32> = FastMap::default();
        let mut ambiguous_uids: BTreeSet<String> = BTreeSet::new();
        if groups.iter().any(|g| !g.member_uids.is_empty()) {
            by_uid.reserve(uids.len());
            for (idx, uid) in uids {
                match by_uid.entry(uid) {
                    std::collections::hash_map::Entry::Occupied(o) => {
                        // Two people share a login: a memberUid naming it cannot be resolved.
                        ambiguous_uids.insert(o.key().clone());
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(idx);
                    }
                }
            }
        } else {
            drop(uids);
        }

        // Groups: direct people and nested groups, by index.
        let n = groups.len();
        let mut group_idx: FastMap<String, u32> = FastMap::default();
        group_idx.reserve(n);
        for (i, g) in groups.iter().enumerate() {
            group_idx.insert(g.dn.normalised().to_owned(), i as u32);
        }
        let mut heads: Vec<(Dn, String)> = Vec::with_capacity(n);
        let mut direct: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut nested: Vec<Vec<u32>> = Vec::with_capacity(n);
        for g in groups {
            let GroupEntry {
                dn,
                name,
                people: mut direct_people,
                other,
                member_uids,
            } = g;
            let mut inner = Vec::new();
            for m in other {
                let key = normalised(&m, &mut buf);
                if let Some(&p) = by_dn.get(key) {
                    direct_people.push(p);
                } else if let Some(&i) = group_idx.get(key) {
                    inner.push(i);
                } else if !frozen_dns.contains(key) && !unusable_dns.contains(key) {
                    dir.issues.push(EntryIssue {
                        dn: dn.to_string(),
                        problem: format!("member {m} resolves to no person or group"),
                    });
                }
            }
            for uid in member_uids {
                let key = uid.trim().to_lowercase();
                if ambiguous_uids.contains(&key) {
                    dir.issues.push(EntryIssue {
                        dn: dn.to_string(),
                        problem: format!(
                            "memberUid {uid} names more than one person; not resolved"
                        ),
                    });
                    continue;
                }
                match by_uid.get(&key) {
                    Some(&p) => direct_people.push(p),
                    None => dir.issues.push(EntryIssue {
                        dn: dn.to_string(),
                        problem: format!("memberUid {uid} resolves to no person"),
                    }),
                }
            }
            heads.push((dn, name));
            direct.push(direct_people);
            nested.push(inner);
        }
        drop(by_dn);
        drop(by_uid);
        // memberOf on people (AD, or OpenLDAP's memberof overlay) adds direct memberships; a
        // group only named there is created from its DN.
        for (p, dns) in member_of {
            if people[p as usize].is_none() {
                continue;
            }
            for gdn in dns {
                let g = match group_idx.get(normalised(&gdn, &mut buf)) {
                    Some(&g) => g,
                    None => {
                        let dn = Dn::from_string(gdn);
                        let g = heads.len() as u32;
                        group_idx.insert(dn.normalised().to_owned(), g);
                        heads.push((dn.clone(), dn.first_value().to_owned()));
                        direct.push(Vec::new());
                        nested.push(Vec::new());
                        g
                    }
                };
                direct[g as usize].push(p);
            }
        }
        drop(group_idx);

        // Transitive closure, cycle-safe: a group's members are its people plus those of every
        // group reachable through nesting. A stamp per group avoids clearing a visited set; each
        // group's closure becomes its member set at once (no second copy of all closures).
        let mut stamp = vec![u32::MAX; heads.len()];
        let mut stack: Vec<u32> = Vec::new();
        let mut members: Vec<u32> = Vec::new();
        for (start, (dn, name)) in heads.into_iter().enumerate() {
            let start = start as u32;
            members.clear();
            stack.clear();
            stack.push(start);
            while let Some(cur) = stack.pop() {
                if stamp[cur as usize] == start {
                    continue;
                }
                stamp[cur as usize] = start;
                members.extend_from_slice(&direct[cur as usize]);
                stack.extend(
                    nested[cur as usize]
                        .iter()
                        .copied()
                        .filter(|n| stamp[*n as usize] != start),
                );
            }
            members.sort_unstable();
            members.dedup();
            let members = members
                .iter()
                .filter_map(|&p| people[p as usize].as_ref().map(|x| x.account_id.clone()))
                .collect();
            dir.groups.insert(dn.clone(), Group { dn, name, members });
        }
        drop((direct, nested));
        let mut out = BTreeMap::new();
        for p in people.into_iter().flatten() {
            out.insert(p.account_id.clone(), p);
        }
        dir.people = out;
        dir
    }
}

/// The schema of an HR source's entries: every mapped attribute is kept (not only those the
/// rules test), so `bbsync source` shows what the HR system said.
fn hr_schema(hr: &crate::config::HrSettings, schema: &Schema) -> Schema {
    let mut attrs = schema.person_attributes.clone();
    attrs.extend(hr.fields.attributes.iter().map(|(a, _)| a.clone()));
    attrs.sort();
    attrs.dedup();
    hr::schema(&attrs)
}

/// `source.identity_file`, read afresh each run (an edit takes effect at the next read).
fn identities(hr: &crate::config::HrSettings) -> Result<hr::IdentityMap, SourceError> {
    let Some(path) = &hr.identity_file else {
        return Ok(hr::IdentityMap::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        path: path.clone(),
        source,
    })?;
    hr::IdentityMap::parse(&text, &path.display().to_string())
}

/// A directory reader built from its settings.
#[derive(Clone, Debug)]
pub struct Source {
    kind: Kind,
    schema: Schema,
    /// SHA-256 of the file text of the last full read, and of the one the off-boarding poll's
    /// baseline was built from (file sources).
    full_read: LastText,
    /// Finds account ids for HR records that carry only an email (the reconcile sets one
    /// backed by the workspace members query).
    email_resolver: Option<std::sync::Arc<dyn hr::EmailResolver>>,
}

/// Digests of a file source's text: `read` is the last full read's, `baseline` the one
/// [`Source::confirm_full_read`] kept (the last full run that finished planning). A clone
/// starts empty: it has read nothing.
#[derive(Debug, Default)]
struct LastText(std::sync::Mutex<Digests>);

#[derive(Debug, Default)]
struct Digests {
    read: Option<[u8; 32]>,
    baseline: Option<[u8; 32]>,
}

impl Clone for LastText {
    fn clone(&self) -> LastText {
        LastText::default()
    }
}

fn text_digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[derive(Clone, Debug)]
enum Kind {
    LdifFile(PathBuf),
    LdifText { name: String, text: String },
    Ldap(Box<ldap::LdapSource>),
    Csv(Box<crate::config::CsvSettings>),
    HrHttp(Box<hr_http::HrHttpSource>),
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
            SourceSettings::Csv(c) => Kind::Csv(c.clone()),
            SourceSettings::HrHttp(h) => {
                Kind::HrHttp(Box::new(hr_http::HrHttpSource::new((**h).clone())))
            }
        };
        let schema = match &kind {
            // HR records are read as entries with fixed internal attribute names.
            // Every mapped attribute is kept (not only those the rules test): `bbsync source`
            // shows what the export said.
            Kind::Csv(c) => hr_schema(&c.hr, schema),
            Kind::HrHttp(h) => hr_schema(&h.cfg.hr, schema),
            _ => schema.clone(),
        };
        Source {
            kind,
            schema,
            full_read: LastText::default(),
            email_resolver: None,
        }
    }

    /// Resolves emails of HR records without an account id through `r` (after
    /// `source.identity_file`). No effect on LDAP and LDIF sources.
    pub fn with_email_resolver(mut self, r: std::sync::Arc<dyn hr::EmailResolver>) -> Source {
        self.email_resolver = Some(r);
        self
    }

    /// Whether this source reads HR records (which may need email resolution).
    pub fn is_hr(&self) -> bool {
        matches!(self.kind, Kind::Csv(_) | Kind::HrHttp(_))
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
        let (dir, digest) = self.read_unchecked().await?;
        if dir.people.is_empty() {
            // Every person entry was unusable (e.g. the account-id attribute is misnamed or
            // hidden by access rules): that is a broken read, not a company with nobody in it.
            return Err(SourceError::NoUsablePerson {
                origin: self.describe(),
                skipped: dir.issues.len(),
            });
        }
        if let Ok(mut last) = self.full_read.0.lock() {
            last.read = digest;
        }
        Ok(dir)
    }

    /// The last full read is the off-boarding poll's baseline now: the run that made it has
    /// planned from it (called when the poll's snapshot is kept). Until then, and if that run
    /// fails, the poll compares with the older baseline, so a file changed since then is
    /// parsed.
    pub fn confirm_full_read(&self) {
        if let Ok(mut last) = self.full_read.0.lock() {
            last.baseline = last.read;
        }
    }

    /// A file source's text and where it comes from; `None` for LDAP.
    async fn file_text(&self) -> Result<Option<(String, String)>, SourceError> {
        Ok(Some(match &self.kind {
            Kind::Ldap(_) | Kind::HrHttp(_) => return Ok(None),
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
            Kind::Csv(c) => {
                let text =
                    tokio::fs::read_to_string(&c.path)
                        .await
                        .map_err(|source| SourceError::Io {
                            path: c.path.clone(),
                            source,
                        })?;
                (c.path.display().to_string(), text)
            }
        }))
    }

    /// The directory, and for a file source the digest of the text it was parsed from.
    async fn read_unchecked(&self) -> Result<(Directory, Option<[u8; 32]>), SourceError> {
        let (origin, text) = match (&self.kind, self.file_text().await?) {
            (Kind::Ldap(l), _) => return Ok((l.read_directory().await?, None)),
            (Kind::HrHttp(h), _) => {
                let records = h.read_records().await?;
                let dir = self
                    .hr_directory(records, &h.cfg.hr, &self.describe())
                    .await?;
                return Ok((dir, None));
            }
            (_, Some(t)) => t,
            (_, None) => unreachable!("file_text is None only for LDAP and HR APIs"),
        };
        let digest = text_digest(&text);
        Ok((self.parse_text(&text, origin).await?, Some(digest)))
    }

    /// HR records -> directory: account ids from the record, `source.identity_file`, then the
    /// email resolver (when one is set), in that order.
    async fn hr_directory(
        &self,
        records: Vec<hr::Record>,
        cfg: &crate::config::HrSettings,
        origin: &str,
    ) -> Result<Directory, SourceError> {
        let mut ids = identities(cfg)?;
        if let Some(resolver) = &self.email_resolver {
            let wanted: Vec<String> = records
                .iter()
                .filter(|r| r.account_id.is_none())
                .filter_map(|r| r.email.clone())
                .filter(|e| ids.get(e).is_none())
                .collect();
            if !wanted.is_empty() {
                let found = resolver
                    .resolve(&wanted)
                    .await
                    .map_err(|message| SourceError::Hr {
                        origin: origin.to_owned(),
                        message: format!(
                            "resolving {} emails through {} failed: {message}; nothing is changed",
                            wanted.len(),
                            resolver.describe()
                        ),
                    })?;
                ids.extend(found);
            }
        }
        hr::resolve_records(
            records,
            cfg,
            &ids,
            &self.schema,
            origin,
            std::time::SystemTime::now(),
        )
    }

    async fn parse_text(&self, text: &str, origin: String) -> Result<Directory, SourceError> {
        if let Kind::Csv(c) = &self.kind {
            let records = csv_file::parse(text, c, &origin)?;
            return self.hr_directory(records, &c.hr, &origin).await;
        }
        let entries = ldif::parse(text, &origin)?;
        if entries.is_empty() {
            return Err(SourceError::Empty { origin });
        }
        Ok(resolve(Entries::split(entries, &self.schema), &self.schema))
    }

    /// The off-boarding poll's light read: who is disabled among the people changed since
    /// `since` (LDAP `modifyTimestamp`), plus everyone `source.disabled_filter` matches. A file
    /// source is read whole, and parsed only when its text differs from what the poll's
    /// baseline was built from (byte for byte, by SHA-256; see [`Source::confirm_full_read`]):
    /// the same text holds no new leaver, and parsing 100k entries every poll is most of an
    /// idle daemon's CPU and heap churn.
    pub async fn read_leavers(
        &self,
        since: std::time::SystemTime,
    ) -> Result<ldap::Leavers, SourceError> {
        match &self.kind {
            Kind::Ldap(l) => l.read_leavers(&ldap::generalized_time(since)).await,
            // An HR API has no "changed since": the poll reads it whole.
            Kind::HrHttp(_) => {
                let (dir, _) = self.read_unchecked().await?;
                self.leavers_of(dir)
            }
            _ => {
                let Some((origin, text)) = self.file_text().await? else {
                    unreachable!("file_text is None only for LDAP")
                };
                let digest = text_digest(&text);
                // An HR export's same text can hold a new leaver: a termination date passes
                // with time, not with an edit.
                let dated = matches!(self.kind, Kind::Csv(_));
                if !dated
                    && self
                        .full_read
                        .0
                        .lock()
                        .is_ok_and(|last| last.baseline == Some(digest))
                {
                    return Ok(ldap::Leavers::default());
                }
                let dir = self.parse_text(&text, origin).await?;
                self.leavers_of(dir)
            }
        }
    }

    /// The disabled people of a whole read, as the poll's light read gives them.
    fn leavers_of(&self, dir: Directory) -> Result<ldap::Leavers, SourceError> {
        if dir.people.is_empty() {
            return Err(SourceError::NoUsablePerson {
                origin: self.describe(),
                skipped: dir.issues.len(),
            });
        }
        Ok(ldap::Leavers {
            disabled: dir
                .people
                .into_values()
                .filter_map(|p| p.disabled.map(|why| (p.account_id, p.dn, why)))
                .collect(),
            by_filter: Vec::new(),
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::LdifFile(path) => format!("LDIF file {}", path.display()),
            Kind::LdifText { name, .. } => format!("LDIF {name}"),
            Kind::Ldap(l) => format!("LDAP {}", l.cfg.url),
            Kind::Csv(c) => format!("CSV file {}", c.path.display()),
            Kind::HrHttp(h) => format!("HR API {}", h.origin()),
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
