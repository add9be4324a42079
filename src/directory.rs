//! The directory as one consistent snapshot: people by account id, groups with their members
//! resolved through nesting, and the entries that were skipped. Plain data: sources produce it,
//! mapping reads it.

use crate::model::{AccountId, Dn};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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
    /// The attributes attribute rules test (`[[groups.when]]`), names lower-cased; empty
    /// without such rules.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "attributes_as_map"
    )]
    pub attributes: Vec<(String, Vec<String>)>,
}

impl Person {
    /// The values of one attribute kept for the rules (the name compares case-insensitively).
    pub fn attribute(&self, name: &str) -> &[String] {
        attribute_in(&self.attributes, name)
    }
}

/// The values of attribute `name` in `attributes` (names compare case-insensitively).
fn attribute_in<'a>(attributes: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .unwrap_or(&[])
}

/// Someone active the source has no account id for and no resolver found, with the
/// attributes the rules test (`source.invite_unresolved`: invited by email into their groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitee {
    pub email: String,
    /// Names as read; they compare case-insensitively.
    pub attributes: Vec<(String, Vec<String>)>,
}

impl Invitee {
    /// The values of one attribute (the name compares case-insensitively).
    pub fn attribute(&self, name: &str) -> &[String] {
        attribute_in(&self.attributes, name)
    }
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
    #[serde(serialize_with = "groups_as_list")]
    pub groups: BTreeMap<Dn, Group>,
    /// Account ids the directory cannot speak for: carried by several entries, by an entry
    /// whose DN another entry has too, or (filled in by the reconcile) linked by email to an
    /// unusable entry. Such an account keeps exactly what it has: nothing is added or removed.
    pub frozen: BTreeSet<AccountId>,
    /// Emails of person entries that could not be used (no or malformed account id, a DN held
    /// by two entries): the workspace members with these emails are frozen, never taken for
    /// people who left.
    pub unusable_emails: Vec<String>,
    /// Emails of people no resolver found an account id for (HR records): reported (count and
    /// emails, nothing more), never guessed, never read as leavers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// The active ones among them, to invite (`source.invite_unresolved`; empty when off).
    #[serde(skip)]
    pub invitees: Vec<Invitee>,
    pub issues: Vec<EntryIssue>,
}

/// `{"title": ["Engineer"]}`, in the order read.
fn attributes_as_map<S: serde::Serializer>(
    a: &[(String, Vec<String>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(a.iter().map(|(k, v)| (k, v)))
}

/// JSON map keys must be strings; groups serialise as a list (each carries its DN).
fn groups_as_list<S: serde::Serializer>(g: &BTreeMap<Dn, Group>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(g.values())
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
    /// Writes the directory as pretty JSON to `out` as it is serialised: person by person and
    /// group by group, never the whole document in memory. The bytes are exactly those of
    /// `serde_json::to_string_pretty(self)` (no newline at the end).
    pub fn write_json<W: std::io::Write>(&self, out: W) -> std::io::Result<()> {
        let mut ser = serde_json::Serializer::pretty(out);
        self.serialize(&mut ser)?;
        Ok(())
    }
    pub fn active_people(&self) -> usize {
        self.people
            .values()
            .filter(|p| p.disabled.is_none())
            .count()
    }
}
