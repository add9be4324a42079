//! HR sources: people as records of named fields (a CSV export; an HR system's JSON), read as
//! the same [`Directory`] the LDAP sources produce, through the same resolver, so one person
//! maps identically whichever source describes them.
//!
//! A record becomes a person entry named `employee=<stable id>`; its status and termination
//! date decide whether the person left; an account id comes from the record or, for records
//! without one, from `source.identity_file` (email -> account id). A record that cannot be
//! used (no stable id, an unknown status, a date that does not parse, no account id) is
//! reported and, like an LDAP entry without an account id, never read as someone who left:
//! the workspace member with its email keeps exactly what they have.

use super::{Directory, EntryIssue, Resolver, Schema, SourceError};
use crate::config::HrSettings;
use crate::model::{Dn, Email};
use std::collections::HashMap;
use std::time::SystemTime;

/// The attribute names HR records are given as entries (internal: no LDAP server sees them).
const A_ID: &str = "accountid";
const A_MAIL: &str = "mail";
const A_NAME: &str = "displayname";
const A_STABLE: &str = "employeeid";

/// The schema HR entries are resolved with: fixed internal names, no LDAP disabled flags (an
/// HR record's status decides), and the attributes the rules test.
pub fn schema(rules_read: &[String]) -> Schema {
    Schema {
        user_object_classes: Vec::new(),
        group_object_classes: Vec::new(),
        account_id_attribute: A_ID.into(),
        email_attribute: A_MAIL.into(),
        display_name_attribute: A_NAME.into(),
        uid_attribute: "uid".into(),
        group_name_attribute: "cn".into(),
        disabled_attribute: None,
        ad_user_account_control: false,
        ppolicy_locked: false,
        stable_id_attribute: Some(A_STABLE.into()),
        person_attributes: rules_read.to_vec(),
    }
}

/// One record as read: its position (1-based, in the file or across pages) and the values of
/// the configured fields (absent or empty values are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub number: usize,
    pub stable_id: Option<String>,
    pub email: Option<String>,
    pub account_id: Option<String>,
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub termination_date: Option<String>,
    /// (rule attribute name, lower-cased; value) for each mapped attribute the record has.
    pub attributes: Vec<(String, String)>,
}

/// What [`EmailResolver::resolve`] returns: (email, account id) pairs, or why it failed.
pub type Resolving<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(String, String)>, String>> + Send + 'a>,
>;

/// Finds the account ids of emails (the workspace members query, the Admin API): (email,
/// account id) pairs for the addresses found; the others are simply not in the answer.
pub trait EmailResolver: Send + Sync + std::fmt::Debug {
    fn resolve<'a>(&'a self, emails: &'a [String]) -> Resolving<'a>;
    /// What it asks (`the workspace members query`), for messages.
    fn describe(&self) -> String;
}

/// Email -> account id pairs (`source.identity_file`), emails compared case-insensitively.
#[derive(Clone, Debug, Default)]
pub struct IdentityMap(HashMap<Email, String>);

impl IdentityMap {
    /// Parses the identity file: a CSV with the columns `email` and `account_id` (a header
    /// row naming them, in any order; other columns ignored).
    pub fn parse(text: &str, origin: &str) -> Result<IdentityMap, SourceError> {
        let bad = |line: usize, message: String| SourceError::Hr {
            origin: origin.to_owned(),
            message: format!("record {line}: {message}"),
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut r = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = r
            .headers()
            .map_err(|e| bad(0, format!("cannot read the header row: {e}")))?
            .clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or_else(|| SourceError::Hr {
                    origin: origin.to_owned(),
                    message: format!("no {name:?} column in the header row"),
                })
        };
        let (ce, ca) = (col("email")?, col("account_id")?);
        let mut map = HashMap::new();
        for (i, row) in r.records().enumerate() {
            let row = row.map_err(|e| bad(i + 1, e.to_string()))?;
            let (Some(email), Some(id)) = (row.get(ce), row.get(ca)) else {
                return Err(bad(i + 1, "fewer columns than the header".into()));
            };
            if email.is_empty() || id.is_empty() {
                continue;
            }
            if let Err(m) = crate::model::AccountId::parse(id) {
                return Err(bad(i + 1, format!("malformed account_id for {email}: {m}")));
            }
            let email = Email::new(email);
            if let Some(other) = map.insert(email.clone(), id.to_owned()) {
                if other != id {
                    return Err(bad(
                        i + 1,
                        format!("{email} is mapped twice, to {other} and {id}"),
                    ));
                }
            }
        }
        Ok(IdentityMap(map))
    }

    pub fn get(&self, email: &str) -> Option<&str> {
        self.0.get(&Email::new(email)).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds pairs found by a resolver (well-formed ids only; the file's own pairs win).
    pub fn extend(&mut self, pairs: Vec<(String, String)>) {
        for (email, id) in pairs {
            if crate::model::AccountId::parse(&id).is_ok() {
                self.0.entry(Email::new(&email)).or_insert(id);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a record left, or `Err` with why its status cannot be read; `Ok(None)` when active.
fn leaver_reason(r: &Record, cfg: &HrSettings, now: SystemTime) -> Result<Option<String>, String> {
    let by_date = match r.termination_date.as_deref() {
        None => None,
        Some(d) => match termination_passed(d, now) {
            Ok(true) => Some(format!("termination date {d} has passed")),
            Ok(false) => None,
            Err(e) => return Err(e),
        },
    };
    if cfg.fields.status.is_none() {
        return Ok(by_date);
    }
    let Some(status) = r.status.as_deref() else {
        return Err(format!("no {} value", field_label(cfg, "status")));
    };
    let key = status.trim().to_lowercase();
    if cfg.status.leaver.contains(&key) {
        return Ok(Some(format!("status {status}")));
    }
    if cfg.status.active.contains(&key) {
        // A termination date in the past wins over a status the HR system has not updated.
        return Ok(by_date);
    }
    Err(format!(
        "status {status:?} is in neither source.status.active nor source.status.leaver"
    ))
}

/// The configured source name of a field (`column "Status"`, `pointer /status`).
fn field_label(cfg: &HrSettings, field: &str) -> String {
    let name = match field {
        "stable_id" => Some(&cfg.fields.stable_id),
        "status" => cfg.fields.status.as_ref(),
        "email" => cfg.fields.email.as_ref(),
        _ => None,
    };
    match name {
        Some(n) if n.starts_with('/') => format!("{field} (pointer {n})"),
        Some(n) => format!("{field} (column {n:?})"),
        None => field.to_owned(),
    }
}

/// Whether a termination date or time is in the past. A date (`2026-11-30`) has passed once
/// its day is over (UTC): the last working day still counts as employed. An RFC 3339 time
/// passes at that instant. `0000-00-00` (how some HR systems write "none") is no date.
fn termination_passed(text: &str, now: SystemTime) -> Result<bool, String> {
    let t = text.trim();
    if t.is_empty() || t.starts_with("0000-00-00") {
        return Ok(false);
    }
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d < now.date_naive());
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&chrono::Utc) <= now);
    }
    Err(format!(
        "termination date {t:?} is neither YYYY-MM-DD nor an RFC 3339 time"
    ))
}

/// A stable id as one DN value (`,` `+` `=` and the other specials escaped).
fn record_dn(stable_id: &str) -> Dn {
    let mut v = String::with_capacity(stable_id.len() + 9);
    v.push_str("employee=");
    for c in stable_id.chars() {
        if matches!(c, ',' | '+' | '=' | '\\' | '"' | '<' | '>' | ';' | '#') {
            v.push('\\');
        }
        v.push(c);
    }
    Dn::from_string(v)
}

/// Records -> directory. Pure: `now` decides which termination dates have passed.
///
/// Fails closed when more than `max_missing_ratio` of the records lack a required field (the
/// stable id, the status when configured, and an email or account id): a field renamed in
/// the HR system must not read as a company of unusable records.
pub fn resolve_records(
    records: Vec<Record>,
    cfg: &HrSettings,
    identities: &IdentityMap,
    schema: &Schema,
    origin: &str,
    now: SystemTime,
) -> Result<Directory, SourceError> {
    if records.is_empty() {
        return Err(SourceError::Empty {
            origin: origin.to_owned(),
        });
    }
    let total = records.len();
    let mut missing: [(&str, usize); 3] = [("stable_id", 0), ("status", 0), ("email", 0)];
    let mut unresolved: Vec<String> = Vec::new();
    let mut invitees = Vec::new();
    let mut r = Resolver::new(schema);
    for rec in records {
        let name = |rec: &Record| match &rec.stable_id {
            Some(id) => format!("{origin} record {} (stable id {id})", rec.number),
            None => format!("{origin} record {}", rec.number),
        };
        let Some(stable_id) = rec.stable_id.clone() else {
            missing[0].1 += 1;
            r.add_issue(
                EntryIssue {
                    dn: name(&rec),
                    problem: format!("no {} value", field_label(cfg, "stable_id")),
                },
                rec.email.clone(),
                rec.account_id.as_deref(),
            );
            continue;
        };
        if cfg.fields.status.is_some() && rec.status.is_none() {
            missing[1].1 += 1;
        }
        if rec.email.is_none() && rec.account_id.is_none() {
            missing[2].1 += 1;
        }
        let disabled = match leaver_reason(&rec, cfg, now) {
            Ok(d) => d,
            Err(problem) => {
                r.add_issue(
                    EntryIssue {
                        dn: record_dn(&stable_id).to_string(),
                        problem: format!("{}: {problem}; its access is left as it is", name(&rec)),
                    },
                    rec.email.clone(),
                    rec.account_id.as_deref(),
                );
                continue;
            }
        };
        let account_id = rec.account_id.clone().or_else(|| {
            rec.email
                .as_deref()
                .and_then(|e| identities.get(e))
                .map(str::to_owned)
        });
        let Some(account_id) = account_id else {
            // Reported by email: the people who work here (a leaver without an account id
            // has nothing to resolve; they stay a skipped entry).
            if disabled.is_none() {
                unresolved.extend(rec.email.clone());
            }
            if let (true, None, Some(email)) = (cfg.invite_unresolved, &disabled, &rec.email) {
                let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
                for (k, v) in &rec.attributes {
                    match attributes
                        .iter_mut()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    {
                        Some((_, vs)) => vs.push(v.clone()),
                        None => attributes.push((k.clone(), vec![v.clone()])),
                    }
                }
                invitees.push(crate::directory::Invitee {
                    email: email.clone(),
                    attributes,
                });
            }
            let looked = match (&rec.email, &cfg.identity_file) {
                (Some(e), Some(f)) => format!("; {e} is not in {}", f.display()),
                (Some(_), None) => {
                    "; its email is not a workspace member's (or no resolver ran)".into()
                }
                (None, _) => "; no email to look it up by".into(),
            };
            r.add_issue(
                EntryIssue {
                    dn: record_dn(&stable_id).to_string(),
                    problem: format!(
                        "{}: no account id{looked}; not added anywhere, and their access is left as it is",
                        name(&rec)
                    ),
                },
                rec.email.clone(),
                None,
            );
            continue;
        };
        let mut e = super::Entry::with_capacity(record_dn(&stable_id), 4 + rec.attributes.len());
        e.push(A_STABLE, stable_id);
        e.push(A_ID, account_id);
        if let Some(m) = rec.email {
            e.push(A_MAIL, m);
        }
        if let Some(n) = rec.display_name {
            e.push(A_NAME, n);
        }
        for (k, v) in rec.attributes {
            e.push(&k, v);
        }
        r.add_person_with(e, |_| disabled);
    }
    if !unresolved.is_empty() {
        tracing::warn!(
            unresolved = unresolved.len(),
            emails = ?unresolved,
            "HR records without an account id that no resolver found: not added anywhere, their access left as it is"
        );
    }
    let limit = cfg.max_missing_ratio;
    for (field, n) in missing {
        if n > 0 && n as f64 > limit * total as f64 {
            return Err(SourceError::Hr {
                origin: origin.to_owned(),
                message: format!(
                    "{} is missing in {n} of {total} records, more than source.max_missing_ratio ({limit}) allows; refusing to read the source (was the field renamed?)",
                    field_label(cfg, field)
                ),
            });
        }
    }
    let mut dir = r.finish();
    dir.unresolved = unresolved;
    dir.invitees = invitees;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HrFields, StatusMap};
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-12-02T12:00:00Z
    fn noon() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_212_800)
    }

    fn cfg() -> HrSettings {
        HrSettings {
            fields: HrFields {
                stable_id: "id".into(),
                email: Some("email".into()),
                account_id: Some("aid".into()),
                display_name: Some("name".into()),
                status: Some("status".into()),
                termination_date: Some("end".into()),
                attributes: Vec::new(),
            },
            status: StatusMap::default(),
            max_missing_ratio: 0.0,
            identity_file: None,
            resolve_by_members: false,
            identity_cache_ttl: Duration::from_secs(1),
            invite_unresolved: false,
        }
    }

    #[test]
    fn a_date_passes_after_its_day_and_a_time_at_its_instant() {
        assert_eq!(termination_passed("2026-12-01", noon()), Ok(true));
        assert_eq!(termination_passed("2026-12-02", noon()), Ok(false));
        assert_eq!(termination_passed("2026-12-02T11:59:59Z", noon()), Ok(true));
        assert_eq!(termination_passed("2026-12-02T12:00:00Z", noon()), Ok(true));
        assert_eq!(
            termination_passed("2026-12-02T13:00:00+02:00", noon()),
            Ok(true)
        );
        assert_eq!(
            termination_passed("2026-12-02T12:00:01Z", noon()),
            Ok(false)
        );
        assert_eq!(termination_passed("0000-00-00", noon()), Ok(false));
        assert_eq!(termination_passed(" ", noon()), Ok(false));
        assert!(termination_passed("30/11/2026", noon()).is_err());
    }

    #[test]
    fn status_decides_and_a_past_date_beats_a_lagging_active_status() {
        let c = cfg();
        let rec = |status: &str, end: Option<&str>| Record {
            status: Some(status.into()),
            termination_date: end.map(Into::into),
            ..Record::default()
        };
        assert_eq!(leaver_reason(&rec("Active", None), &c, noon()), Ok(None));
        assert_eq!(leaver_reason(&rec("on leave", None), &c, noon()), Ok(None));
        assert_eq!(
            leaver_reason(&rec("Terminated", None), &c, noon()),
            Ok(Some("status Terminated".into()))
        );
        assert_eq!(
            leaver_reason(&rec("Active", Some("2026-11-30")), &c, noon()),
            Ok(Some("termination date 2026-11-30 has passed".into()))
        );
        assert_eq!(
            leaver_reason(&rec("Active", Some("2027-01-31")), &c, noon()),
            Ok(None)
        );
        assert!(leaver_reason(&rec("Retired", None), &c, noon())
            .expect_err("unknown status")
            .contains("\"Retired\" is in neither"));
        let none = Record::default();
        assert!(leaver_reason(&none, &c, noon()).is_err());
        let mut no_status = cfg();
        no_status.fields.status = None;
        assert_eq!(leaver_reason(&none, &no_status, noon()), Ok(None));
    }

    #[test]
    fn the_identity_file_maps_emails_case_insensitively_and_refuses_conflicts() {
        let m = IdentityMap::parse(
            "\u{feff}Email,Account_ID,note\r\nAnn@Example.com,557058:00000000-0000-4000-8000-000000000001,x\r\n,\r\n",
            "ids.csv",
        );
        // A BOM before the header is not part of the first column's name.
        let m = m.expect("parses");
        assert_eq!(
            m.get("ann@example.COM "),
            Some("557058:00000000-0000-4000-8000-000000000001")
        );
        assert_eq!(m.len(), 1);
        let twice = IdentityMap::parse(
            "email,account_id\na@x,557058:00000000-0000-4000-8000-000000000001\nA@X,557058:00000000-0000-4000-8000-000000000002\n",
            "ids.csv",
        )
        .expect_err("conflict");
        assert!(twice.to_string().contains("mapped twice"), "{twice}");
        let bad =
            IdentityMap::parse("email,account_id\na@x,nope\n", "ids.csv").expect_err("malformed");
        assert!(
            bad.to_string().contains("record 1: malformed account_id"),
            "{bad}"
        );
        assert!(IdentityMap::parse("mail,id\n", "ids.csv").is_err());
    }

    #[test]
    fn stable_ids_with_dn_specials_stay_one_value() {
        let dn = record_dn("a,b=c+d");
        assert_eq!(dn.as_str(), "employee=a\\,b\\=c\\+d");
        assert_ne!(record_dn("a,b").normalised(), record_dn("a").normalised());
    }
}
