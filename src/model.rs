//! Domain types shared by the source, mapping, planner and client.
//!
//! Names follow the comparison rules of the systems they come from: Bitbucket slugs are
//! lower-case, project keys upper-case, LDAP DNs and attribute names compare case-insensitively,
//! and Atlassian `account_id`s are opaque, case-sensitive strings.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Atlassian account id. Opaque and case-sensitive; two forms are issued: 24 lower-case hex
/// digits (older accounts, `5b10ac8d82e05b22cc7d4ef5`) and digits, `:` and a lower-case UUID
/// (`557058:6e8f1c2a-0000-4bcd-9f00-123456789abc`). Anything else is malformed: a value that
/// only looks like an id (`abc123`, a username) must never become someone to add or remove.
///
/// Shared, not copied: a directory holds one per person, and every group membership and map key
/// of a snapshot clones it (a quarter of a million clones on a 100k-person directory).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct AccountId(std::sync::Arc<str>);

/// As the plain string, written in place (`serde(into = "String")` would copy it first).
impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_lower_uuid(s: &str) -> bool {
    let mut parts = s.split('-');
    [8, 4, 4, 4, 12].iter().all(|n| {
        parts
            .next()
            .is_some_and(|p| p.len() == *n && is_lower_hex(p))
    }) && parts.next().is_none()
}

impl AccountId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("account id is empty".into());
        }
        let ok = match s.split_once(':') {
            Some((prefix, uuid)) => {
                !prefix.is_empty()
                    && prefix.bytes().all(|b| b.is_ascii_digit())
                    && is_lower_uuid(uuid)
            }
            None => s.len() == 24 && is_lower_hex(s),
        };
        if !ok {
            let shown: String = s.chars().take(80).collect();
            return Err(format!(
                "account id {shown:?} is neither 24 lower-case hex digits nor digits:lower-case-uuid"
            ));
        }
        Ok(Self(s.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
/// A well-formed account id derived from `name` (`557058:` and a UUID from a hash of the name),
/// for tests and fixtures that name people rather than spell out ids.
#[doc(hidden)]
pub fn synthetic_account_id(name: &str) -> String {
    // FNV-1a, twice with different seeds: 128 deterministic bits.
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!(
        "557058:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// Replaces every `acc-NAME` in `text` with [`synthetic_account_id`] of `acc-NAME` (unit-test
/// LDIF fixtures).
#[cfg(test)]
pub(crate) fn with_synthetic_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("acc-") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 4..];
        let n = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        out.push_str(&synthetic_account_id(&rest[i..i + 4 + n]));
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

impl TryFrom<String> for AccountId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}
impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0.as_ref().to_owned()
    }
}
impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bitbucket user UUID, braces included (`{...}`), as 1.0 endpoints want it in paths.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BbUuid(pub String);

impl BbUuid {
    pub fn braced(raw: &str) -> Self {
        let t = raw.trim().trim_start_matches('{').trim_end_matches('}');
        Self(format!("{{{}}}", t.to_ascii_lowercase()))
    }
}

/// Bitbucket group slug: the group name lower-cased with spaces turned into dashes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct GroupSlug(String);

impl GroupSlug {
    /// The slug Bitbucket generates for a group name.
    pub fn from_name(name: &str) -> Self {
        Self(name.trim().to_lowercase().replace(' ', "-"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl From<String> for GroupSlug {
    fn from(s: String) -> Self {
        Self::from_name(&s)
    }
}
impl From<GroupSlug> for String {
    fn from(g: GroupSlug) -> String {
        g.0
    }
}
impl fmt::Display for GroupSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Repository slug, compared lower-case as Bitbucket does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct RepoSlug(String);

impl RepoSlug {
    pub fn new(s: &str) -> Self {
        Self(s.trim().to_lowercase())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl From<String> for RepoSlug {
    fn from(s: String) -> Self {
        Self::new(&s)
    }
}
impl From<RepoSlug> for String {
    fn from(r: RepoSlug) -> String {
        r.0
    }
}
impl fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bitbucket project key, upper-case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct ProjectKey(String);

impl ProjectKey {
    pub fn new(s: &str) -> Self {
        Self(s.trim().to_uppercase())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl From<String> for ProjectKey {
    fn from(s: String) -> Self {
        Self::new(&s)
    }
}
impl From<ProjectKey> for String {
    fn from(p: ProjectKey) -> String {
        p.0
    }
}
impl fmt::Display for ProjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Repository permission, ordered `read < write < admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}
impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Project permission, ordered `read < write < create-repo < admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectPermission {
    Read,
    Write,
    CreateRepo,
    Admin,
}

impl ProjectPermission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::CreateRepo => "create-repo",
            Self::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "create-repo" => Some(Self::CreateRepo),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// What a permissions-config grant is on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum GrantTarget {
    Repo(RepoSlug),
    Project(ProjectKey),
}

impl fmt::Display for GrantTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantTarget::Repo(r) => write!(f, "repository {r}"),
            GrantTarget::Project(p) => write!(f, "project {p}"),
        }
    }
}

impl fmt::Display for ProjectPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository as listed by Bitbucket: its slug and project.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repo {
    pub slug: RepoSlug,
    pub project: Option<ProjectKey>,
}

/// An email address as people compare them: trimmed, and equal whatever the case (Bitbucket,
/// the Admin API and HR systems each spell addresses their own way). The spelling as read is
/// kept for messages.
#[derive(Clone, Debug)]
pub struct Email {
    raw: String,
    folded: String,
}

impl Email {
    pub fn new(raw: &str) -> Email {
        let raw = raw.trim().to_owned();
        let folded = raw.to_lowercase();
        Email { raw, folded }
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The lower-cased form, the one that compares.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.folded == other.folded
    }
}
impl Eq for Email {}
impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.folded.hash(h);
    }
}
impl PartialOrd for Email {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Email {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.folded.cmp(&other.folded)
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// An LDAP distinguished name, normalised for comparison: attribute types lower-cased, spaces
/// around `,` and `=` removed, values compared case-insensitively (directories treat `cn` and
/// `ou` values case-insensitively). The original spelling is kept for messages.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "String")]
pub struct Dn {
    raw: String,
    /// The normalised form, kept only when it differs from `raw` (most DNs a server returns are
    /// already lower-case without spaces; a directory holds hundreds of thousands of them).
    norm: Option<Box<str>>,
}

impl From<String> for Dn {
    fn from(s: String) -> Dn {
        Dn::from_string(s)
    }
}
impl From<Dn> for String {
    fn from(d: Dn) -> String {
        d.raw
    }
}
/// As written (the original spelling), in place (`serde(into = "String")` would copy it first).
impl Serialize for Dn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl Dn {
    pub fn new(raw: &str) -> Self {
        Self::from_string(raw.trim().to_owned())
    }
    /// Takes ownership of the DN text (no copy when it is already normalised).
    pub fn from_string(mut raw: String) -> Self {
        if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
            raw = raw.trim().to_owned();
        }
        if is_normal_dn(&raw) {
            // The common case (servers return DNs as stored): nothing to normalise or allocate.
            return Self { raw, norm: None };
        }
        let mut norm = String::new();
        normalise_dn_into(&raw, &mut norm);
        Self {
            norm: (norm != raw).then(|| norm.into_boxed_str()),
            raw,
        }
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    pub fn normalised(&self) -> &str {
        self.norm.as_deref().unwrap_or(&self.raw)
    }
    /// The value of the first RDN (`cn=Developers,ou=..` -> `Developers`).
    pub fn first_value(&self) -> &str {
        let first = split_unescaped(&self.raw, b',').next().unwrap_or_default();
        match first.split_once('=') {
            Some((_, v)) => v.trim(),
            None => first.trim(),
        }
    }
}
impl PartialEq for Dn {
    fn eq(&self, o: &Self) -> bool {
        self.normalised() == o.normalised()
    }
}
impl Eq for Dn {}
impl std::hash::Hash for Dn {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.normalised().hash(h)
    }
}
impl PartialOrd for Dn {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Dn {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.normalised().cmp(o.normalised())
    }
}
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits on `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                c if c == sep => {
                    let part = &s[start..i];
                    i += 1;
                    start = i;
                    return Some(part);
                }
                _ => i += 1,
            }
        }
        done = true;
        Some(&s[start.min(s.len())..])
    })
}

fn push_lower(out: &mut String, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// Trims spaces around a value, keeping an escaped trailing space (`cn=a\ `).
fn trim_value(v: &str) -> &str {
    let v = v.trim_start();
    let t = v.trim_end();
    if t.ends_with('\\') && t.len() < v.len() {
        &v[..t.len() + 1]
    } else {
        t
    }
}

/// Writes a value in one canonical form: escapes decoded (`\2C` and `\,` are the same comma),
/// lower-cased, then the RFC 4514 specials re-escaped with a backslash.
fn push_canonical_value(out: &mut String, v: &str) {
    let v = trim_value(v);
    if !v.contains(['\\', '=', '"', '<', '>', ';', '#']) {
        push_lower(out, v);
        return;
    }
    let bytes = v.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            match (hex(bytes[i + 1]), bytes.get(i + 2).and_then(|b| hex(*b))) {
                (Some(h), Some(l)) => {
                    decoded.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    decoded.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&decoded).to_lowercase();
    let last = text.chars().count().saturating_sub(1);
    for (n, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (n == 0 && (c == '#' || c == ' '))
            || (n == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

fn push_ava(out: &mut String, ava: &str) {
    match ava.split_once('=') {
        Some((t, v)) => {
            push_lower(out, t.trim());
            out.push('=');
            push_canonical_value(out, v);
        }
        None => push_lower(out, ava.trim()),
    }
}

/// Whether `dn` is certainly already in the form [`normalise_dn_into`] writes, by a quick scan:
/// printable ASCII without upper case, escapes, quotes, `+`, `;`, `<`, `>` or `#`, and every RDN
/// exactly one `type=value` with no space next to a separator or at either end. `false` says
/// nothing (the DN may or may not be normal); `true` means normalising would return it as is.
pub fn is_normal_dn(dn: &str) -> bool {
    let b = dn.as_bytes();
    if b.first() == Some(&b' ') || b.last() == Some(&b' ') {
        return false;
    }
    let mut equals = 0u32;
    let mut prev = b',';
    for &c in b {
        match c {
            b'A'..=b'Z' | b'\\' | b'"' | b'+' | b';' | b'<' | b'>' | b'#' => return false,
            0..=0x1f | 0x7f..=0xff => return false,
            b',' | b'=' if prev == b' ' || prev == b',' || prev == b'=' => return false,
            b' ' if prev == b',' || prev == b'=' => return false,
            b',' => {
                if equals != 1 {
                    return false;
                }
                equals = 0;
            }
            b'=' => equals += 1,
            _ => {}
        }
        prev = c;
    }
    equals == 1 && prev != b'='
}

/// Writes the normalised form of `dn` into `out` (cleared first): attribute types and values
/// lower-cased, spaces around separators removed, escapes in one canonical form, and the parts
/// of a multi-valued RDN (`cn=a+uid=b`) sorted. Used with a reused buffer to look DNs up without
/// allocating.
pub fn normalise_dn_into(dn: &str, out: &mut String) {
    out.clear();
    for (i, rdn) in split_unescaped(dn.trim(), b',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        if !rdn.contains('+') {
            push_ava(out, rdn);
            continue;
        }
        let mut parts: Vec<String> = split_unescaped(rdn, b'+')
            .map(|ava| {
                let mut s = String::new();
                push_ava(&mut s, ava);
                s
            })
            .collect();
        parts.sort();
        out.push_str(&parts.join("+"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_ordered_read_write_admin() {
        assert!(Permission::Read < Permission::Write);
        assert!(Permission::Write < Permission::Admin);
        assert_eq!(Permission::parse(" Write "), Some(Permission::Write));
        assert_eq!(Permission::parse("none"), None);
    }

    #[test]
    fn group_slug_is_lower_case_with_dashes() {
        assert_eq!(
            GroupSlug::from_name("Release Managers").as_str(),
            "release-managers"
        );
    }

    #[test]
    fn dns_compare_case_and_space_insensitively() {
        let a = Dn::new("CN=Ann Lee, OU=People,dc=Example,dc=com");
        let b = Dn::new("cn=ann lee,ou=people,dc=example,dc=com");
        assert_eq!(a, b);
        assert_eq!(a.first_value(), "Ann Lee");
        assert_eq!(a.as_str(), "CN=Ann Lee, OU=People,dc=Example,dc=com");
    }

    #[test]
    fn the_quick_normal_check_never_says_yes_to_a_dn_normalising_changes() {
        let samples = [
            "uid=ann,ou=people,dc=x",
            "cn=user 5,ou=people,dc=example,dc=com",
            "cn=a,dc=x",
            "UID=Ann,DC=x",
            "uid=ann, ou=people",
            "uid = ann,ou=people",
            "uid=ann ,ou=people",
            " uid=ann",
            "uid=ann ",
            "cn=a=b,dc=x",
            "cn=a\\,b,dc=x",
            "cn=a+uid=b,dc=x",
            "cn=C# Devs,dc=x",
            "cn=#x,dc=x",
            "cn=,dc=x",
            "=a,dc=x",
            "cn=a,,dc=x",
            "cn=a,dc=x,",
            "cn=\u{e9}l\u{e8}ve,dc=x",
            "cn=a\tb,dc=x",
            "",
            "dc=x",
            "novalue",
            "cn=a;b,dc=x",
        ];
        let mut buf = String::new();
        for s in samples {
            normalise_dn_into(s, &mut buf);
            if is_normal_dn(s) {
                assert_eq!(buf, s, "{s:?} was taken for normal");
            }
        }
        assert!(is_normal_dn("uid=ann,ou=people,dc=x"));
        assert!(is_normal_dn("cn=user 5,ou=people,dc=example,dc=com"));
        assert!(!is_normal_dn("UID=Ann,DC=x"));
    }

    #[test]
    fn normalised_dns_are_stored_once() {
        let d = Dn::new("uid=ann,ou=people,dc=x");
        assert!(d.norm.is_none());
        assert_eq!(d.normalised(), "uid=ann,ou=people,dc=x");
        let e = Dn::new("UID=Ann + CN=A, OU=People");
        assert_eq!(e.normalised(), "cn=a+uid=ann,ou=people");
        assert_eq!(e, Dn::new("cn=a+uid=ann,ou=people"));
        assert_eq!(e.as_str(), "UID=Ann + CN=A, OU=People");
    }

    #[test]
    fn escapes_compare_in_one_canonical_form() {
        assert_eq!(
            Dn::new(r"cn=Lee\2C Ann,dc=x"),
            Dn::new(r"cn=lee\, ann,dc=x")
        );
        assert_eq!(Dn::new(r"cn=C\23 Devs,dc=x"), Dn::new(r"cn=C# Devs,dc=x"));
        assert_ne!(
            Dn::new(r"cn=a\ ,dc=x"),
            Dn::new("cn=a,dc=x"),
            "an escaped trailing space is part of the value"
        );
        assert_eq!(Dn::new(r"cn=a=b,dc=x"), Dn::new(r"cn=a\=b,dc=x"));
    }

    #[test]
    fn dn_split_respects_escaped_commas() {
        let d = Dn::new(r"cn=Lee\, Ann,ou=people,dc=x");
        assert_eq!(d.first_value(), r"Lee\, Ann");
        assert_ne!(d, Dn::new("cn=Lee,ou=people,dc=x"));
    }

    #[test]
    fn synthetic_ids_are_well_formed_and_distinct() {
        let a = synthetic_account_id("ann");
        assert!(AccountId::parse(&a).is_ok(), "{a}");
        assert_ne!(a, synthetic_account_id("bob"));
        assert_eq!(a, synthetic_account_id("ann"));
        let t = with_synthetic_ids("x: acc-ann\ny: acc-bob.");
        assert_eq!(
            t,
            format!(
                "x: {}\ny: {}.",
                synthetic_account_id("acc-ann"),
                synthetic_account_id("acc-bob")
            )
        );
    }

    #[test]
    fn account_ids_are_validated() {
        assert!(AccountId::parse("557058:6e8f1c2a-0000-4bcd-9f00-123456789abc").is_ok());
        assert!(AccountId::parse("712020:6e8f1c2a-0000-4bcd-9f00-123456789abc").is_ok());
        assert!(AccountId::parse(" 5b10ac8d82e05b22cc7d4ef5 ").is_ok());
        for bad in [
            "",
            "ann lee",
            "x/../y",
            "abc123",
            "5b10ac8d82e05b22cc7d4ef",
            "5B10AC8D82E05B22CC7D4EF5",
            "557058:6E8F1C2A-0000-4BCD-9F00-123456789ABC",
            "557058:ann",
            ":6e8f1c2a-0000-4bcd-9f00-123456789abc",
            "55a058:6e8f1c2a-0000-4bcd-9f00-123456789abc",
            "557058:6e8f1c2a00004bcd9f00123456789abc",
        ] {
            assert!(
                AccountId::parse(bad).is_err(),
                "{bad:?} should be malformed"
            );
        }
    }
}
