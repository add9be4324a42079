//! `[source]` and `[directory]`: where people and groups are read from, and how entries are
//! read as people and groups. Plain settings; the `source` module builds the readers from them.

use super::credentials::read_secret;
use super::paths::Paths;
use super::raw::{keys, Field, Problems, RawTable, Table, Word};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
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
    /// Attributes kept on each person because an attribute rule (`[[groups.when]]`) tests
    /// them; lower-cased. Filled in from the rules, not written in `[directory]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub person_attributes: Vec<String>,
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
            person_attributes: Vec::new(),
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
    /// An HR export as CSV, re-read on every run.
    Csv(Box<CsvSettings>),
    /// An HR system's JSON API over HTTP(S).
    HrHttp(Box<HrHttpSettings>),
}

/// `kind = "hr_http"`.
#[derive(Clone, Debug)]
pub struct HrHttpSettings {
    /// The first page (`http://` or `https://`).
    pub url: String,
    pub auth: HrAuth,
    /// JSON pointer to the array of records in each page's body; `""` for a body that is the
    /// array itself.
    pub records: String,
    pub pagination: Pagination,
    /// Limit for each request (connect, answer and body).
    pub timeout: Duration,
    /// Limit for the whole read.
    pub read_timeout: Duration,
    /// Retries of a request answered 5xx or 429, or cut off (default 3).
    pub max_retries: u32,
    /// More pages than this fails the read (a page sequence that never ends).
    pub max_pages: usize,
    pub hr: HrSettings,
}

#[derive(Clone, Debug)]
pub enum HrAuth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// How an HR API's pages follow each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pagination {
    /// One answer holds every record.
    None,
    /// The body holds the next page's URL (absolute or relative) at this JSON pointer; null or
    /// empty on the last page. Absent is an error (a wrong pointer would read one page as if
    /// it were all) unless `absent_ends` says this API leaves it out on its last page.
    NextUrl { pointer: String, absent_ends: bool },
    /// `?{param}=1,2,...` (from `first`), with `{size_param}={size}` when set; the first page
    /// without records ends the read (a server that pages by fewer than `size` is still read
    /// to its end).
    Page {
        param: String,
        size_param: Option<String>,
        size: usize,
        first: u64,
    },
    /// `?{param}=0,n,...&{limit_param}={size}`, each offset the records read so far; the first
    /// page without records ends the read.
    Offset {
        param: String,
        limit_param: String,
        size: usize,
    },
    /// RFC 8288 `Link: <url>; rel="next"` headers.
    Link,
}

impl SourceSettings {
    /// The HR settings of an HR source.
    pub fn hr(&self) -> Option<&HrSettings> {
        match self {
            SourceSettings::Csv(c) => Some(&c.hr),
            SourceSettings::HrHttp(h) => Some(&h.hr),
            _ => None,
        }
    }
}

/// `kind = "csv"`.
#[derive(Clone, Debug)]
pub struct CsvSettings {
    pub path: PathBuf,
    /// The field separator (one ASCII character; default `,`).
    pub delimiter: u8,
    pub hr: HrSettings,
}

/// What every HR source shares: which field holds what, how statuses read, and the guards.
#[derive(Clone, Debug)]
pub struct HrSettings {
    pub fields: HrFields,
    pub status: StatusMap,
    /// More than this fraction of records without a required field fails the read.
    pub max_missing_ratio: f64,
    /// A CSV of `email,account_id` for records without an account id.
    pub identity_file: Option<PathBuf>,
    /// Look the rest up by email in the workspace members (default true).
    pub resolve_by_members: bool,
    /// How long an email -> account id answer is reused (cached in the state directory).
    pub identity_cache_ttl: Duration,
    /// Invite the people no resolver found by email into the groups their attributes give
    /// (the 1.0 invitations; classic workspaces only). Off by default.
    pub invite_unresolved: bool,
}

/// The source's name for each field: a CSV column header (compared case-insensitively) or,
/// for JSON sources, a JSON pointer (`/workEmail`).
#[derive(Clone, Debug, Default)]
pub struct HrFields {
    pub stable_id: String,
    pub email: Option<String>,
    pub account_id: Option<String>,
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub termination_date: Option<String>,
    /// (attribute name as rules use it, lower-cased; the source's field).
    pub attributes: Vec<(String, String)>,
}

/// Employment statuses (trimmed, lower-cased) read as active and as left.
#[derive(Clone, Debug)]
pub struct StatusMap {
    pub active: Vec<String>,
    pub leaver: Vec<String>,
}

impl Default for StatusMap {
    fn default() -> Self {
        StatusMap {
            active: vec!["active".into(), "on leave".into(), "on_leave".into()],
            leaver: vec!["terminated".into(), "inactive".into()],
        }
    }
}

/// Search depth below a base DN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

// ---- raw, as written -------------------------------------------------------------------------

/// `[source]` as written: `kind` picks the variant, and with it the keys that apply.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum RawSource {
    /// An LDIF export on disk.
    Ldif(RawLdif),
    /// A live LDAP / Active Directory server.
    Ldap(Box<RawLdap>),
    /// An HR export as CSV.
    Csv(Box<RawCsv>),
    /// An HR system's JSON API.
    #[serde(rename = "hr_http")]
    HrHttp(Box<RawHrHttp>),
}

/// `kind = "hr_http"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHrHttp {
    /// The first page's URL.
    url: Field<String>,
    /// Bearer token (or `token_file`).
    token: Field<String>,
    token_file: Field<PathBuf>,
    /// Basic auth user name (with `password` or `password_file`).
    username: Field<String>,
    password: Field<String>,
    password_file: Field<PathBuf>,
    /// JSON pointer to the records array; default `""` (the body is the array).
    records: Field<String>,
    /// `none` (default), `next_url`, `page`, `offset` or `link`.
    pagination: Field<Word<PaginationKind>>,
    /// `next_url`: the pointer to the next URL; default `/next`.
    next_pointer: Field<String>,
    /// `next_url`: the last page leaves the pointer out (else that is an error); default false.
    next_may_be_absent: Field<bool>,
    /// `page`: the page number parameter; default `page`.
    page_param: Field<String>,
    /// `page`: the page size parameter (none by default).
    page_size_param: Field<String>,
    /// `page`: the first page's number; default 1.
    first_page: Field<u64>,
    /// `offset`: the offset parameter; default `offset`.
    offset_param: Field<String>,
    /// `offset`: the limit parameter; default `limit`.
    limit_param: Field<String>,
    /// `page` and `offset`: records a page asks for; default 100.
    page_size: Field<u32>,
    /// Seconds for each request; default 30.
    timeout_secs: Field<u64>,
    /// Seconds for the whole read; default 600.
    read_timeout_secs: Field<u64>,
    /// Retries of a request answered 5xx or 429, or cut off; default 3.
    max_retries: Field<u32>,
    /// Pages a read may have; default 100000.
    max_pages: Field<u32>,
    /// JSON pointers of the fields, relative to each record.
    fields: Table<RawHrFields>,
    /// Attribute name -> JSON pointer.
    attributes: Field<std::collections::BTreeMap<String, String>>,
    status: Table<RawStatus>,
    max_missing_ratio: Field<f64>,
    identity_file: Field<PathBuf>,
    resolve_by_members: Field<bool>,
    identity_cache_ttl_secs: Field<u64>,
    /// Invite the unresolved by email into their groups (1.0 invitations); default false.
    invite_unresolved: Field<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum PaginationKind {
    None,
    NextUrl,
    Page,
    Offset,
    Link,
}

impl RawTable for RawSource {
    fn kinds() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("ldif", keys::<RawLdif>()),
            ("ldap", keys::<RawLdap>()),
            ("csv", keys::<RawCsv>()),
            ("hr_http", keys::<RawHrHttp>()),
        ]
    }
}

/// `kind = "csv"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawCsv {
    /// The CSV file (header row first), relative to the configuration file.
    path: Field<PathBuf>,
    /// One ASCII character; default `,`.
    delimiter: Field<String>,
    /// Column headers of the fields.
    fields: Table<RawHrFields>,
    /// Attribute name (as `[[groups.when]]` uses it) -> column header.
    attributes: Field<std::collections::BTreeMap<String, String>>,
    /// Statuses read as active and as left.
    status: Table<RawStatus>,
    /// Fraction of records that may lack a required field; default 0.01.
    max_missing_ratio: Field<f64>,
    /// CSV of `email,account_id` for records without an account id.
    identity_file: Field<PathBuf>,
    /// Look the others up in the workspace members by email; default true.
    resolve_by_members: Field<bool>,
    /// Seconds an email's account id is reused; default 86400.
    identity_cache_ttl_secs: Field<u64>,
    /// Invite the unresolved by email into their groups (1.0 invitations); default false.
    invite_unresolved: Field<bool>,
}

/// `[source.fields]`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHrFields {
    stable_id: Field<String>,
    email: Field<String>,
    account_id: Field<String>,
    display_name: Field<String>,
    status: Field<String>,
    termination_date: Field<String>,
}

impl RawTable for RawHrFields {}

/// `[source.status]`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawStatus {
    active: Field<Vec<String>>,
    leaver: Field<Vec<String>>,
}

impl RawTable for RawStatus {}

/// `kind = "ldif"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLdif {
    /// The LDIF file, relative to the configuration file; re-read on every run.
    path: Field<PathBuf>,
}

/// `kind = "ldap"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLdap {
    /// `ldap://host:389` or `ldaps://host:636`.
    url: Field<String>,
    /// DN to bind as; without it (and a password) the bind is anonymous.
    bind_dn: Field<String>,
    /// The bind password itself (inline or from the environment).
    bind_password: Field<String>,
    /// A file holding the bind password.
    bind_password_file: Field<PathBuf>,
    /// Upgrade an `ldap://` connection with StartTLS before binding; default false.
    starttls: Field<bool>,
    /// PEM bundle of the CAs to trust instead of the system store.
    ca_file: Field<PathBuf>,
    /// Certificate verification; default true.
    tls_verify: Field<bool>,
    /// Seconds to connect; default 10.
    connect_timeout_secs: Field<u64>,
    /// Seconds for each LDAP operation (bind, each page); default 60.
    timeout_secs: Field<u64>,
    /// Seconds for the whole read; default 900.
    read_timeout_secs: Field<u64>,
    /// Entries per page of paged results (RFC 2696); default 500.
    page_size: Field<u32>,
    /// DN under which people live.
    users_base: Field<String>,
    /// Filter matching people; default `(objectClass=inetOrgPerson)`.
    users_filter: Field<String>,
    /// `sub` (default), `one` or `base`.
    users_scope: Field<Word<SearchScope>>,
    /// DN under which groups live; default `users_base`.
    groups_base: Field<String>,
    /// Filter matching groups; default: the four group object classes.
    groups_filter: Field<String>,
    /// `sub` (default), `one` or `base`.
    groups_scope: Field<Word<SearchScope>>,
    /// People matching `(&users_filter disabled_filter)` are disabled.
    disabled_filter: Field<String>,
    /// Follow AD ranged attribute retrieval for very large groups; default true.
    ad_range_retrieval: Field<bool>,
    /// Resolve group members with AD's in-chain matching rule; default false.
    ad_in_chain: Field<bool>,
    /// Allow a password bind over plain `ldap://` without StartTLS to a host that is not on
    /// loopback (the password crosses the network in clear); default false.
    allow_plaintext_bind: Field<bool>,
}

/// `[directory]` as written; every key has a default ([`Schema::default`]).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawDirectory {
    /// Entries with any of these object classes are people.
    user_object_classes: Field<Vec<String>>,
    /// Entries with any of these object classes are groups.
    group_object_classes: Field<Vec<String>>,
    /// The attribute holding each person's Atlassian account id.
    account_id_attribute: Field<String>,
    /// The attribute holding each person's email.
    email_attribute: Field<String>,
    /// The attribute holding each person's display name.
    display_name_attribute: Field<String>,
    /// The login name `posixGroup` `memberUid` values are matched against.
    uid_attribute: Field<String>,
    /// The attribute naming a group (matched by `[[groups]] from`).
    group_name_attribute: Field<String>,
    /// An attribute that, when true-ish, marks a person disabled.
    disabled_attribute: Field<String>,
    /// Active Directory `userAccountControl` bit 0x2 marks a person disabled; default true.
    ad_user_account_control: Field<bool>,
    /// An OpenLDAP ppolicy administrative lock marks a person disabled; default true.
    ppolicy_locked: Field<bool>,
    /// Immutable id attribute kept for reports; `""` for none.
    stable_id_attribute: Field<String>,
}

impl RawTable for RawDirectory {}

// ---- validation ------------------------------------------------------------------------------

/// `[source]`. A placeholder stands in when it has problems (they are reported).
pub(super) fn validate_source(
    raw: Table<RawSource>,
    paths: &Paths,
    p: &mut Problems,
) -> SourceSettings {
    let placeholder = || SourceSettings::LdifText {
        name: String::new(),
        text: String::new(),
    };
    // Without a [source] table the problem is the same as without its `kind`.
    match raw.or_empty().read("source", p) {
        Some(RawSource::Ldif(RawLdif { path })) => match path.get("source.path", p) {
            Some(path) => SourceSettings::LdifFile {
                path: paths.resolve(path),
            },
            None => {
                if !p.any_under("source.path") {
                    p.required("source.path", "for kind \"ldif\"");
                }
                placeholder()
            }
        },
        Some(RawSource::Ldap(l)) => match validate_ldap(*l, paths, p) {
            Some(l) => SourceSettings::Ldap(Box::new(l)),
            None => placeholder(),
        },
        Some(RawSource::Csv(c)) => match validate_csv(*c, paths, p) {
            Some(c) => SourceSettings::Csv(Box::new(c)),
            None => placeholder(),
        },
        Some(RawSource::HrHttp(h)) => match validate_hr_http(*h, paths, p) {
            Some(h) => SourceSettings::HrHttp(Box::new(h)),
            None => placeholder(),
        },
        None => placeholder(),
    }
}

fn validate_csv(raw: RawCsv, paths: &Paths, p: &mut Problems) -> Option<CsvSettings> {
    let RawCsv {
        path,
        delimiter,
        fields,
        attributes,
        status,
        max_missing_ratio,
        identity_file,
        resolve_by_members,
        identity_cache_ttl_secs,
        invite_unresolved,
    } = raw;
    let before = p.len();
    let path = path.get("source.path", p);
    if path.is_none() && !p.any_under("source.path") {
        p.required("source.path", "for kind \"csv\"");
    }
    let delimiter = match delimiter.get("source.delimiter", p) {
        None => b',',
        Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" => d.as_bytes()[0],
        Some(d) => {
            p.push(
                "source.delimiter",
                format!("{d:?} is not one ASCII character (other than a quote)"),
            );
            b','
        }
    };
    let hr = validate_hr(
        "csv",
        HrKeys {
            fields,
            attributes,
            status,
            max_missing_ratio,
            identity_file,
            resolve_by_members,
            identity_cache_ttl_secs,
            invite_unresolved,
        },
        |key, v: &str, p: &mut Problems| {
            if v.trim().is_empty() {
                p.push(key, "an empty column header");
            }
        },
        paths,
        p,
    );
    (p.len() == before).then_some(CsvSettings {
        path: paths.resolve(path?),
        delimiter,
        hr,
    })
}

/// A JSON pointer as RFC 6901 writes it: empty, or `/` followed by tokens.
fn pointer_ok(key: &str, v: &str, p: &mut Problems) {
    if !v.is_empty() && !v.starts_with('/') {
        p.push(
            key,
            format!("{v:?} is not a JSON pointer (it starts with /, as in /workEmail)"),
        );
    }
}

fn validate_hr_http(raw: RawHrHttp, paths: &Paths, p: &mut Problems) -> Option<HrHttpSettings> {
    let RawHrHttp {
        url,
        token,
        token_file,
        username,
        password,
        password_file,
        records,
        pagination,
        next_pointer,
        next_may_be_absent,
        page_param,
        page_size_param,
        first_page,
        offset_param,
        limit_param,
        page_size,
        timeout_secs,
        read_timeout_secs,
        max_retries,
        max_pages,
        fields,
        attributes,
        status,
        max_missing_ratio,
        identity_file,
        resolve_by_members,
        identity_cache_ttl_secs,
        invite_unresolved,
    } = raw;
    let before = p.len();
    let url = url.text("source.url", p);
    match &url {
        None if !p.any_under("source.url") => {
            p.required("source.url", "for kind \"hr_http\" (the first page's URL)")
        }
        Some(u) => match url::Url::parse(u) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
            {
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    p.say(
                        "source.url",
                        "source.url: put credentials in source.username/password or source.token, not in the URL (it is shown in messages)",
                    );
                }
            }
            _ => p.push("source.url", "not an http:// or https:// URL with a host"),
        },
        None => {}
    }
    let token = read_secret("source.token", token, token_file, paths, p);
    let username = username.text("source.username", p);
    let password = read_secret("source.password", password, password_file, paths, p);
    let auth = match (token, username, password) {
        (None, None, None) => HrAuth::None,
        (Some(t), None, None) => HrAuth::Bearer(t),
        (None, Some(u), Some(pw)) => HrAuth::Basic {
            username: u,
            password: pw,
        },
        (None, Some(u), None) => HrAuth::Basic {
            // BambooHR-style: the API key is the user name and any password does.
            username: u,
            password: Secret::new(String::new()),
        },
        (None, None, Some(_)) => {
            p.say(
                "source.password",
                "source.password is set but source.username is not",
            );
            HrAuth::None
        }
        (Some(_), _, _) => {
            p.say(
                "source.token",
                "source.token (Bearer) and source.username/password (Basic) are both set: keep one",
            );
            HrAuth::None
        }
    };
    let records = records.get("source.records", p).unwrap_or_default();
    pointer_ok("source.records", records.trim(), p);
    let text_or = |key: &str, v: Field<String>, default: &str, p: &mut Problems| {
        v.text(key, p).unwrap_or_else(|| default.to_owned())
    };
    let size = page_size.get("source.page_size", p).unwrap_or(100);
    if size == 0 {
        p.say("source.page_size", "source.page_size must be at least 1");
    }
    let kind = pagination
        .word("source.pagination", p)
        .unwrap_or(PaginationKind::None);
    let pagination = match kind {
        PaginationKind::None => Pagination::None,
        PaginationKind::NextUrl => {
            let pointer = text_or("source.next_pointer", next_pointer, "/next", p);
            pointer_ok("source.next_pointer", &pointer, p);
            Pagination::NextUrl {
                pointer,
                absent_ends: next_may_be_absent
                    .get("source.next_may_be_absent", p)
                    .unwrap_or(false),
            }
        }
        PaginationKind::Page => Pagination::Page {
            param: text_or("source.page_param", page_param, "page", p),
            size_param: page_size_param.text("source.page_size_param", p),
            size: size.max(1) as usize,
            first: first_page.get("source.first_page", p).unwrap_or(1),
        },
        PaginationKind::Offset => Pagination::Offset {
            param: text_or("source.offset_param", offset_param, "offset", p),
            limit_param: text_or("source.limit_param", limit_param, "limit", p),
            size: size.max(1) as usize,
        },
        PaginationKind::Link => Pagination::Link,
    };
    let mut secs = |key: &str, v: Field<u64>, default: u64| {
        let v = v.get(key, p).unwrap_or(default);
        if v == 0 {
            p.say(key, format!("{key} must be at least 1"));
        }
        Duration::from_secs(v.max(1))
    };
    let timeout = secs("source.timeout_secs", timeout_secs, 30);
    let read_timeout = secs("source.read_timeout_secs", read_timeout_secs, 600);
    let max_retries = max_retries.get("source.max_retries", p).unwrap_or(3);
    let max_pages = max_pages
        .get("source.max_pages", p)
        .unwrap_or(100_000)
        .max(1) as usize;
    let hr = validate_hr(
        "hr_http",
        HrKeys {
            fields,
            attributes,
            status,
            max_missing_ratio,
            identity_file,
            resolve_by_members,
            identity_cache_ttl_secs,
            invite_unresolved,
        },
        |key, v: &str, p: &mut Problems| {
            if v.is_empty() {
                p.push(
                    key,
                    "an empty JSON pointer (write /name for a record's field)",
                );
            } else {
                pointer_ok(key, v, p);
            }
        },
        paths,
        p,
    );
    (p.len() == before).then_some(HrHttpSettings {
        url: url?,
        auth,
        records: records.trim().to_owned(),
        pagination,
        timeout,
        read_timeout,
        max_retries,
        max_pages,
        hr,
    })
}

/// HR sources carry only the attributes mapped in `source.attributes`: a rule testing another
/// one could never match anybody.
pub(super) fn check_rule_attributes(
    source: &SourceSettings,
    groups: &[super::GroupRule],
    p: &mut Problems,
) {
    let (kind, hr) = match source {
        SourceSettings::Csv(c) => ("csv", &c.hr),
        SourceSettings::HrHttp(h) => ("hr_http", &h.hr),
        _ => return,
    };
    for (i, g) in groups.iter().enumerate() {
        for (j, c) in g.when.iter().enumerate() {
            if !hr
                .fields
                .attributes
                .iter()
                .any(|(a, _)| a.eq_ignore_ascii_case(&c.attribute))
            {
                p.push(
                    format!("groups[{i}].when[{j}].attribute"),
                    format!(
                        "{:?} is not mapped in source.attributes (kind {kind:?} reads only the attributes mapped there)",
                        c.attribute
                    ),
                );
            }
        }
    }
}

/// The keys every HR source kind has.
struct HrKeys {
    fields: Table<RawHrFields>,
    attributes: Field<std::collections::BTreeMap<String, String>>,
    status: Table<RawStatus>,
    max_missing_ratio: Field<f64>,
    identity_file: Field<PathBuf>,
    resolve_by_members: Field<bool>,
    identity_cache_ttl_secs: Field<u64>,
    /// Invite the unresolved by email into their groups (1.0 invitations); default false.
    invite_unresolved: Field<bool>,
}

/// `[source.fields]`, `[source.attributes]`, `[source.status]` and the guards; `field_ok`
/// checks one field name (a column header, a JSON pointer).
fn validate_hr(
    kind: &str,
    keys: HrKeys,
    field_ok: impl Fn(&str, &str, &mut Problems),
    paths: &Paths,
    p: &mut Problems,
) -> HrSettings {
    let HrKeys {
        fields,
        attributes,
        status,
        max_missing_ratio,
        identity_file,
        resolve_by_members,
        identity_cache_ttl_secs,
        invite_unresolved,
    } = keys;
    let RawHrFields {
        stable_id,
        email,
        account_id,
        display_name,
        status: status_field,
        termination_date,
    } = fields
        .or_empty()
        .read("source.fields", p)
        .unwrap_or_default();
    let mut field = |name: &str, v: Field<String>| {
        let key = format!("source.fields.{name}");
        let v = v.get(&key, p)?;
        field_ok(&key, &v, p);
        Some(v.trim().to_owned())
    };
    let stable_id = field("stable_id", stable_id);
    let email = field("email", email);
    let account_id = field("account_id", account_id);
    let display_name = field("display_name", display_name);
    let status_field = field("status", status_field);
    let termination_date = field("termination_date", termination_date);
    if stable_id.is_none() && !p.any_under("source.fields.stable_id") {
        p.required(
            "source.fields.stable_id",
            &format!("for kind {kind:?} (the field holding each person's immutable HR id)"),
        );
    }
    let unwritten = |p: &Problems, names: &[&str]| {
        names
            .iter()
            .all(|n| !p.any_under(&format!("source.fields.{n}")))
    };
    if email.is_none() && account_id.is_none() && unwritten(p, &["email", "account_id"]) {
        p.say(
            "source.fields.email",
            "source.fields: map email or account_id (or both): people are matched to Bitbucket accounts by one of them",
        );
    }
    if status_field.is_none()
        && termination_date.is_none()
        && unwritten(p, &["status", "termination_date"])
    {
        p.say(
            "source.fields.status",
            "source.fields: map status or termination_date (or both): without them no one could ever be read as having left",
        );
    }
    let mut attrs = Vec::new();
    for (name, v) in attributes.get("source.attributes", p).unwrap_or_default() {
        let key = format!("source.attributes.{name}");
        field_ok(&key, &v, p);
        // The names HR records are resolved under, and those the resolver reads as
        // memberships: an attribute of that name would be read as one of them.
        const RESERVED: &[&str] = &[
            "accountid",
            "mail",
            "displayname",
            "employeeid",
            "memberof",
            "member",
            "uniquemember",
            "memberuid",
            "uid",
            "objectclass",
        ];
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            p.push(
                key.clone(),
                format!("{name:?} is a name bbsync uses itself; call the attribute something else"),
            );
        }
        attrs.push((name.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let RawStatus { active, leaver } = status
        .or_empty()
        .read("source.status", p)
        .unwrap_or_default();
    let defaults = StatusMap::default();
    let words = |key: &str, v: Field<Vec<String>>, default: Vec<String>, p: &mut Problems| match v
        .get(key, p)
    {
        None => default,
        Some(v) => v
            .into_iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect(),
    };
    let status_map = StatusMap {
        active: words("source.status.active", active, defaults.active, p),
        leaver: words("source.status.leaver", leaver, defaults.leaver, p),
    };
    if let Some(both) = status_map
        .active
        .iter()
        .find(|w| status_map.leaver.contains(w))
    {
        p.say(
            "source.status",
            format!("source.status: {both:?} is listed both as active and as leaver"),
        );
    }
    if status_field.is_some() && status_map.leaver.is_empty() {
        p.say(
            "source.status.leaver",
            "source.status.leaver is empty: no status would ever read as having left",
        );
    }
    let max_missing_ratio = max_missing_ratio
        .get("source.max_missing_ratio", p)
        .unwrap_or(0.01);
    if !(0.0..=1.0).contains(&max_missing_ratio) {
        p.push(
            "source.max_missing_ratio",
            format!("{max_missing_ratio} is not a fraction between 0 and 1"),
        );
    }
    let identity_file = identity_file
        .get("source.identity_file", p)
        .map(|f| paths.resolve(f));
    HrSettings {
        fields: HrFields {
            stable_id: stable_id.unwrap_or_default(),
            email,
            account_id,
            display_name,
            status: status_field,
            termination_date,
            attributes: attrs,
        },
        status: status_map,
        max_missing_ratio,
        identity_file,
        resolve_by_members: resolve_by_members
            .get("source.resolve_by_members", p)
            .unwrap_or(true),
        identity_cache_ttl: Duration::from_secs(
            identity_cache_ttl_secs
                .get("source.identity_cache_ttl_secs", p)
                .unwrap_or(86_400),
        ),
        invite_unresolved: invite_unresolved
            .get("source.invite_unresolved", p)
            .unwrap_or(false),
    }
}

fn validate_ldap(src: RawLdap, paths: &Paths, p: &mut Problems) -> Option<LdapSettings> {
    let RawLdap {
        url,
        bind_dn,
        bind_password,
        bind_password_file,
        starttls,
        ca_file,
        tls_verify,
        connect_timeout_secs,
        timeout_secs,
        read_timeout_secs,
        page_size,
        users_base,
        users_filter,
        users_scope,
        groups_base,
        groups_filter,
        groups_scope,
        disabled_filter,
        ad_range_retrieval,
        ad_in_chain,
        allow_plaintext_bind,
    } = src;
    let before = p.len();
    let url = url.text("source.url", p).unwrap_or_else(|| {
        if !p.any_under("source.url") {
            p.required(
                "source.url",
                "for kind \"ldap\" (ldap://host:389 or ldaps://host:636)",
            );
        }
        String::new()
    });
    let starttls = starttls.get("source.starttls", p).unwrap_or(false);
    if !url.is_empty() {
        match url::Url::parse(&url) {
            Ok(u) if u.scheme() == "ldaps" && starttls => p.push(
                "source.starttls",
                "StartTLS is for ldap:// URLs; ldaps:// is already TLS",
            ),
            Ok(u) if matches!(u.scheme(), "ldap" | "ldaps") && u.host_str().is_some() => {}
            _ => p.push(
                "source.url",
                format!("{url:?} is not an ldap:// or ldaps:// URL with a host"),
            ),
        }
    }
    let bind_dn = bind_dn.text("source.bind_dn", p);
    let given = bind_password.is_written() || bind_password_file.is_written();
    let bind_password = read_secret(
        "source.bind_password",
        bind_password,
        bind_password_file,
        paths,
        p,
    );
    let allow_plaintext_bind = allow_plaintext_bind
        .get("source.allow_plaintext_bind", p)
        .unwrap_or(false);
    if let (Some(dn), Ok(u)) = (&bind_dn, url::Url::parse(&url)) {
        let loopback = match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            // ldap:// is not a special scheme: its host stays text, addresses included.
            Some(url::Host::Domain(d)) => {
                d.eq_ignore_ascii_case("localhost")
                    || d.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback())
            }
            None => false,
        };
        if u.scheme() == "ldap" && !starttls && !loopback && !allow_plaintext_bind {
            p.say(
                "source.url",
                format!("source.url: binding as {dn} over plain ldap:// would send the password in clear; use ldaps://, set source.starttls = true, or (if the network is trusted) source.allow_plaintext_bind = true"),
            );
        }
    }
    match (&bind_dn, given) {
        (None, true) if !p.any_under("source.bind_dn") => p.say(
            "source.bind_password",
            "source.bind_password is set but source.bind_dn is not",
        ),
        (Some(dn), false) => p.say(
            "source.bind_password",
            format!("source.bind_password (or bind_password_file) is required to bind as {dn}"),
        ),
        _ => {}
    }
    // Filters are combined at run time (`(&users disabled)`), so a bare `a=b` is wrapped.
    let mut filter = |key: &str, v: Field<String>, default: &str| {
        let f = v.text(key, p).unwrap_or_else(|| default.to_owned());
        let f = if f.starts_with('(') {
            f
        } else {
            format!("({f})")
        };
        if !is_valid_ldap_filter(&f) {
            p.push(key, format!("{f:?} is not a valid LDAP filter"));
        }
        f
    };
    let users_filter = filter(
        "source.users_filter",
        users_filter,
        "(objectClass=inetOrgPerson)",
    );
    let groups_filter = filter(
        "source.groups_filter",
        groups_filter,
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup)(objectClass=group))",
    );
    let users_base = users_base.text("source.users_base", p).unwrap_or_else(|| {
        if !p.any_under("source.users_base") {
            p.required("source.users_base", "(the DN under which people live)");
        }
        String::new()
    });
    let users = SearchSettings {
        filter: users_filter,
        scope: users_scope
            .word("source.users_scope", p)
            .unwrap_or(SearchScope::Sub),
        base: users_base.clone(),
    };
    let groups = SearchSettings {
        filter: groups_filter,
        scope: groups_scope
            .word("source.groups_scope", p)
            .unwrap_or(SearchScope::Sub),
        base: groups_base
            .text("source.groups_base", p)
            .unwrap_or(users_base),
    };
    let disabled_filter = disabled_filter.text("source.disabled_filter", p);
    if let Some(f) = &disabled_filter {
        if !is_valid_ldap_filter(f) {
            p.push(
                "source.disabled_filter",
                format!("{f:?} is not a valid LDAP filter"),
            );
        }
    }
    let page_size = page_size.get("source.page_size", p).unwrap_or(500);
    if !(1..=100_000).contains(&page_size) {
        p.push(
            "source.page_size",
            format!("{page_size} is out of range 1..=100000"),
        );
    }
    let mut secs = |key: &str, v: Field<u64>, default: u64| {
        let v = v.get(key, p).unwrap_or(default);
        if v == 0 {
            p.say(key, format!("{key} must be at least 1"));
        }
        Duration::from_secs(v.max(1))
    };
    let connect_timeout = secs("source.connect_timeout_secs", connect_timeout_secs, 10);
    let op_timeout = secs("source.timeout_secs", timeout_secs, 60);
    let read_timeout = secs("source.read_timeout_secs", read_timeout_secs, 900);
    let ca_file = ca_file
        .get("source.ca_file", p)
        .and_then(|f| paths.credential_file("source.ca_file", f, p));
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            p.push("source.ca_file", format!("{} does not exist", ca.display()));
        }
    }
    let tls_verify = tls_verify.get("source.tls_verify", p).unwrap_or(true);
    let ad_range_retrieval = ad_range_retrieval
        .get("source.ad_range_retrieval", p)
        .unwrap_or(true);
    let ad_in_chain = ad_in_chain.get("source.ad_in_chain", p).unwrap_or(false);
    (p.len() == before).then_some(LdapSettings {
        url,
        bind_dn,
        bind_password,
        starttls,
        ca_file,
        tls_verify,
        connect_timeout,
        op_timeout,
        read_timeout,
        page_size,
        users,
        groups,
        disabled_filter,
        ad_range_retrieval,
        ad_in_chain,
    })
}

/// `[directory]`: how entries are read as people and groups.
pub(super) fn validate_directory(raw: Table<RawDirectory>, p: &mut Problems) -> Schema {
    let RawDirectory {
        user_object_classes,
        group_object_classes,
        account_id_attribute,
        email_attribute,
        display_name_attribute,
        uid_attribute,
        group_name_attribute,
        disabled_attribute,
        ad_user_account_control,
        ppolicy_locked,
        stable_id_attribute,
    } = raw.read("directory", p).unwrap_or_default();
    let defaults = Schema::default();
    let mut attribute = |key: &str, v: Field<String>, default: String| {
        v.text(&format!("directory.{key}"), p).unwrap_or(default)
    };
    let account_id_attribute = attribute(
        "account_id_attribute",
        account_id_attribute,
        defaults.account_id_attribute,
    );
    let email_attribute = attribute("email_attribute", email_attribute, defaults.email_attribute);
    let display_name_attribute = attribute(
        "display_name_attribute",
        display_name_attribute,
        defaults.display_name_attribute,
    );
    let uid_attribute = attribute("uid_attribute", uid_attribute, defaults.uid_attribute);
    let group_name_attribute = attribute(
        "group_name_attribute",
        group_name_attribute,
        defaults.group_name_attribute,
    );
    // Written as "" turns the stable id off; not written keeps the default.
    let stable_id_attribute = match stable_id_attribute.get("directory.stable_id_attribute", p) {
        Some(a) => super::raw::non_empty(Some(a)),
        None => defaults.stable_id_attribute,
    };
    Schema {
        user_object_classes: user_object_classes
            .get("directory.user_object_classes", p)
            .unwrap_or(defaults.user_object_classes),
        group_object_classes: group_object_classes
            .get("directory.group_object_classes", p)
            .unwrap_or(defaults.group_object_classes),
        account_id_attribute,
        email_attribute,
        display_name_attribute,
        uid_attribute,
        group_name_attribute,
        disabled_attribute: disabled_attribute.text("directory.disabled_attribute", p),
        ad_user_account_control: ad_user_account_control
            .get("directory.ad_user_account_control", p)
            .unwrap_or(true),
        ppolicy_locked: ppolicy_locked
            .get("directory.ppolicy_locked", p)
            .unwrap_or(true),
        stable_id_attribute,
        person_attributes: Vec::new(),
    }
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
