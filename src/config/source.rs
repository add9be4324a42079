//! `[source]` and `[directory]`: where people and groups are read from, and how entries are
//! read as people and groups. Plain settings; the `source` module builds the readers from them.

use super::{non_empty, read_secret, RawSource};
use crate::secret::Secret;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

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
    /// OpenLDAP ppolicy: `pwdAccountLockedTime: 000001010000Z` (locked by an administrator)
    /// marks a person disabled; a timed lockout after failed logins does not.
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

/// A configured directory source.
#[derive(Clone, Debug)]
pub enum SourceSettings {
    /// An LDIF export on disk, re-read on every run.
    LdifFile { path: PathBuf },
    /// LDIF text held in memory (the demo's bundled directory).
    LdifText { name: String, text: String },
    /// A live LDAP / Active Directory server.
    Ldap(Box<LdapSettings>),
}

/// Search depth below a base DN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchScope {
    Base,
    One,
    Sub,
}

/// One search: where, what and how deep.
#[derive(Clone, Debug)]
pub struct SearchSettings {
    pub base: String,
    pub filter: String,
    pub scope: SearchScope,
}

#[derive(Clone, Debug)]
pub struct LdapSettings {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// PEM bundle of the CAs to trust instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// Certificate verification; turning it off is logged loudly on every connect.
    pub tls_verify: bool,
    pub connect_timeout: Duration,
    /// Limit for each LDAP operation (bind, each page).
    pub op_timeout: Duration,
    /// Limit for the whole read.
    pub read_timeout: Duration,
    pub page_size: u32,
    pub users: SearchSettings,
    pub groups: SearchSettings,
    /// People matching `(&users.filter disabled_filter)` are disabled.
    pub disabled_filter: Option<String>,
    /// Follow AD ranged attribute retrieval (`member;range=0-1499`) for very large groups.
    pub ad_range_retrieval: bool,
    /// Resolve each group's members with AD's in-chain matching rule (one query per group).
    pub ad_in_chain: bool,
}

/// RFC 4515 filter syntax: `(attr=value)`, `(&..)`, `(|..)`, `(!..)`, with the item operators
/// `=`, `~=`, `>=`, `<=`, presence and substrings, and extensible matches (`attr:rule:=v`).
/// Values are checked for balanced parentheses and valid `\XX` escapes; the LDAP client parses
/// the filter again when it sends it.
pub fn is_valid_ldap_filter(f: &str) -> bool {
    fn filter(b: &[u8], i: &mut usize) -> bool {
        if b.get(*i) != Some(&b'(') {
            return false;
        }
        *i += 1;
        let ok = match b.get(*i) {
            Some(b'&' | b'|') => {
                *i += 1;
                // RFC 4526 allows the empty absolute true/false filters `(&)` and `(|)`.
                while b.get(*i) == Some(&b'(') {
                    if !filter(b, i) {
                        return false;
                    }
                }
                true
            }
            Some(b'!') => {
                *i += 1;
                filter(b, i)
            }
            Some(_) => item(b, i),
            None => false,
        };
        if !ok || b.get(*i) != Some(&b')') {
            return false;
        }
        *i += 1;
        true
    }
    fn item(b: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while let Some(&c) = b.get(*i) {
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b';' | b'.' | b':') {
                *i += 1;
            } else {
                break;
            }
        }
        let attr = &b[start..*i];
        let op_ok = match (b.get(*i), b.get(*i + 1)) {
            (Some(b'~' | b'>' | b'<'), Some(b'=')) => {
                *i += 2;
                true
            }
            (Some(b'='), _) => {
                *i += 1;
                true
            }
            _ => false,
        };
        // An extensible match may have no attribute (`(:dn:2.4.6.8.10:=x)`); others need one.
        if !op_ok || (attr.is_empty() || attr == b":") {
            return false;
        }
        while let Some(&c) = b.get(*i) {
            match c {
                b')' => return true,
                b'(' | 0 => return false,
                b'\\' => {
                    let hex = |k: usize| b.get(k).is_some_and(u8::is_ascii_hexdigit);
                    if !(hex(*i + 1) && hex(*i + 2)) {
                        return false;
                    }
                    *i += 3;
                }
                _ => *i += 1,
            }
        }
        false
    }
    let b = f.trim().as_bytes();
    let mut i = 0;
    filter(b, &mut i) && i == b.len()
}

pub(super) fn validate_ldap(
    src: RawSource,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    p: &mut Vec<String>,
) -> Option<LdapSettings> {
    let before = p.len();
    let url = non_empty(src.url).unwrap_or_else(|| {
        p.push(
            "source.url is required for kind \"ldap\" (ldap://host:389 or ldaps://host:636)".into(),
        );
        String::new()
    });
    let starttls = src.starttls.unwrap_or(false);
    if !url.is_empty() {
        match url::Url::parse(&url) {
            Ok(u) if u.scheme() == "ldaps" && starttls => p.push(
                "source.starttls: StartTLS is for ldap:// URLs; ldaps:// is already TLS".into(),
            ),
            Ok(u) if matches!(u.scheme(), "ldap" | "ldaps") && u.host_str().is_some() => {}
            _ => p.push(format!(
                "source.url: {url:?} is not an ldap:// or ldaps:// URL with a host"
            )),
        }
    }
    let bind_dn = non_empty(src.bind_dn);
    let given = src.bind_password.is_some() || src.bind_password_file.is_some();
    let bind_password = read_secret(
        "source.bind_password",
        src.bind_password,
        src.bind_password_file,
        resolve,
        p,
    );
    match (&bind_dn, given) {
        (None, true) => p.push("source.bind_password is set but source.bind_dn is not".into()),
        (Some(dn), false) => p.push(format!(
            "source.bind_password (or bind_password_file) is required to bind as {dn}"
        )),
        _ => {}
    }
    let scope =
        |key: &str, v: Option<String>, p: &mut Vec<String>| match v.as_deref().map(str::trim) {
            None | Some("sub") => SearchScope::Sub,
            Some("one") => SearchScope::One,
            Some("base") => SearchScope::Base,
            Some(o) => {
                p.push(format!(
                    "source.{key}: {o:?} is not one of \"sub\", \"one\", \"base\""
                ));
                SearchScope::Sub
            }
        };
    // Filters are combined at run time (`(&users disabled)`), so a bare `a=b` is wrapped.
    let wrap = |f: String| {
        if f.starts_with('(') {
            f
        } else {
            format!("({f})")
        }
    };
    let filter = |key: &str, v: Option<String>, default: &str, p: &mut Vec<String>| {
        let f = wrap(non_empty(v).unwrap_or_else(|| default.to_owned()));
        if !is_valid_ldap_filter(&f) {
            p.push(format!("source.{key}: {f:?} is not a valid LDAP filter"));
        }
        f
    };
    let users_base = non_empty(src.users_base).unwrap_or_else(|| {
        p.push("source.users_base is required (the DN under which people live)".into());
        String::new()
    });
    let users = SearchSettings {
        filter: filter(
            "users_filter",
            src.users_filter,
            "(objectClass=inetOrgPerson)",
            p,
        ),
        scope: scope("users_scope", src.users_scope, p),
        base: users_base.clone(),
    };
    let groups = SearchSettings {
        filter: filter(
            "groups_filter",
            src.groups_filter,
            "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup)(objectClass=group))",
            p,
        ),
        scope: scope("groups_scope", src.groups_scope, p),
        base: non_empty(src.groups_base).unwrap_or(users_base),
    };
    let disabled_filter = src.disabled_filter.and_then(|f| non_empty(Some(f)));
    if let Some(f) = &disabled_filter {
        if !is_valid_ldap_filter(f) {
            p.push(format!(
                "source.disabled_filter: {f:?} is not a valid LDAP filter"
            ));
        }
    }
    let page_size = src.page_size.unwrap_or(500);
    if !(1..=100_000).contains(&page_size) {
        p.push(format!(
            "source.page_size: {page_size} is out of range 1..=100000"
        ));
    }
    let secs = |key: &str, v: Option<u64>, default: u64, p: &mut Vec<String>| {
        let v = v.unwrap_or(default);
        if v == 0 {
            p.push(format!("source.{key} must be at least 1"));
        }
        Duration::from_secs(v.max(1))
    };
    let connect_timeout = secs("connect_timeout_secs", src.connect_timeout_secs, 10, p);
    let op_timeout = secs("timeout_secs", src.timeout_secs, 60, p);
    let read_timeout = secs("read_timeout_secs", src.read_timeout_secs, 900, p);
    let ca_file = src.ca_file.map(resolve);
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            p.push(format!("source.ca_file: {} does not exist", ca.display()));
        }
    }
    (p.len() == before).then(|| LdapSettings {
        url,
        bind_dn,
        bind_password,
        starttls,
        ca_file,
        tls_verify: src.tls_verify.unwrap_or(true),
        connect_timeout,
        op_timeout,
        read_timeout,
        page_size,
        users,
        groups,
        disabled_filter,
        ad_range_retrieval: src.ad_range_retrieval.unwrap_or(true),
        ad_in_chain: src.ad_in_chain.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::is_valid_ldap_filter as ok;

    #[test]
    fn ldap_filters_are_checked_for_rfc_4515_syntax() {
        for good in [
            "(objectClass=inetOrgPerson)",
            "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
            "(|(cn=a*b*)(mail=*))",
            "(cn=R\\28D\\29)",
            "(uidNumber>=1000)",
            "(&)",
            "(memberOf:1.2.840.113556.1.4.1941:=CN=x,DC=y)",
        ] {
            assert!(ok(good), "{good} should be valid");
        }
        for bad in [
            "(objectClass=user",
            "objectClass=user",
            "(=x)",
            "(cn=a)(cn=b)",
            "(cn=a\\zz)",
            "(&(cn=a)",
            "(cn)",
            "()",
        ] {
            assert!(!ok(bad), "{bad} should be invalid");
        }
    }
}
