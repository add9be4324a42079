//! Domain types shared by the source, mapping, planner and client.
//!
//! Names follow the comparison rules of the systems they come from: Bitbucket slugs are
//! lower-case, project keys upper-case, LDAP DNs and attribute names compare case-insensitively,
//! and Atlassian `account_id`s are opaque, case-sensitive strings.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Atlassian account id (`557058:6e8f...` or a 24-hex-digit legacy id). Opaque and case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Accepts what Atlassian issues: 1..=128 characters of `[A-Za-z0-9:_-]`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("account id is empty".into());
        }
        if s.len() > 128 {
            return Err(format!("account id {s:?} is longer than 128 characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_')))
        {
            return Err(format!("account id {s:?} contains {c:?}"));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for AccountId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}
impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
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

/// A repository as listed by Bitbucket: its slug and project.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repo {
    pub slug: RepoSlug,
    pub project: Option<ProjectKey>,
}

/// An LDAP distinguished name, normalised for comparison: attribute types lower-cased, spaces
/// around `,` and `=` removed, values compared case-insensitively (directories treat `cn` and
/// `ou` values case-insensitively). The original spelling is kept for messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dn {
    raw: String,
    #[serde(skip)]
    norm: String,
}

impl Dn {
    pub fn new(raw: &str) -> Self {
        Self {
            raw: raw.trim().to_owned(),
            norm: normalise_dn(raw),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    pub fn normalised(&self) -> &str {
        &self.norm
    }
    /// The value of the first RDN (`cn=Developers,ou=..` -> `Developers`).
    pub fn first_value(&self) -> &str {
        let first = split_rdns(&self.raw).into_iter().next().unwrap_or_default();
        match first.split_once('=') {
            Some((_, v)) => v.trim(),
            None => first.trim(),
        }
    }
}
impl PartialEq for Dn {
    fn eq(&self, o: &Self) -> bool {
        self.norm == o.norm
    }
}
impl Eq for Dn {}
impl std::hash::Hash for Dn {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.norm.hash(h)
    }
}
impl PartialOrd for Dn {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Dn {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.norm.cmp(&o.norm)
    }
}
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits a DN on unescaped commas.
fn split_rdns(dn: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = dn.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b',' => {
                out.push(&dn[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&dn[start..]);
    out
}

fn normalise_dn(dn: &str) -> String {
    split_rdns(dn.trim())
        .into_iter()
        .map(|rdn| {
            // Multi-valued RDNs (`cn=a+uid=b`) are rare in user/group DNs; normalise each part.
            rdn.split('+')
                .map(|ava| match ava.split_once('=') {
                    Some((t, v)) => {
                        format!("{}={}", t.trim().to_lowercase(), v.trim().to_lowercase())
                    }
                    None => ava.trim().to_lowercase(),
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
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
    fn dn_split_respects_escaped_commas() {
        let d = Dn::new(r"cn=Lee\, Ann,ou=people,dc=x");
        assert_eq!(d.first_value(), r"Lee\, Ann");
        assert_ne!(d, Dn::new("cn=Lee,ou=people,dc=x"));
    }

    #[test]
    fn account_ids_are_validated() {
        assert!(AccountId::parse("557058:6e8f1c2a-0000-4bcd-9f00-123456789abc").is_ok());
        assert!(AccountId::parse("5b10ac8d82e05b22cc7d4ef5").is_ok());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("ann lee").is_err());
        assert!(AccountId::parse("x/../y").is_err());
    }
}
