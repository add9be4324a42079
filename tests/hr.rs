//! HR sources (`source.kind = "csv"`) and attribute rules (`[[groups.when]]`): what a CSV
//! export reads as, that an HR person and an LDAP person with the same facts map identically
//! (LDIF file and a real slapd), the fail-closed cases, and a run against the emulator.

mod common;

use bbsync::config::Config;
use bbsync::mapping;
use bbsync::source::{Directory, Source, SourceError};
use bbsync_testkit::{Options, Slapd, BASE, READER_DN, READER_PW};
use common::acc;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Attribute rules every source of the table is configured with.
const RULES: &str = r#"
[[groups]]
name = "engineering"
[[groups.when]]
attribute = "departmentNumber"
equals = "engineering"

[[groups]]
name = "contractors"
[[groups.when]]
attribute = "title"
matches = "(?i)contractor"

[[groups]]
name = "berlin-eng"
match = "all"
[[groups.when]]
attribute = "departmentNumber"
one_of = ["Engineering", "R&D"]
[[groups.when]]
attribute = "l"
equals = "Berlin"
"#;

const CSV_SOURCE: &str = r#"
[source]
kind = "csv"
path = "people.csv"
[source.fields]
stable_id = "Employee ID"
email = "Work Email"
account_id = "Atlassian ID"
display_name = "Name"
status = "Status"
termination_date = "Termination Date"
[source.attributes]
departmentNumber = "Department"
title = "Job Title"
l = "Location"
"#;

fn cfg_text(source: &str, rules: &str) -> String {
    format!(
        "[bitbucket]\nworkspace = \"acme\"\n[credentials.admin]\nkind = \"api_token\"\nemail = \"admin@acme.test\"\ntoken = \"x\"\n{source}\n{rules}"
    )
}

fn csv_config(dir: &Path, csv: &str, extra: &str) -> Config {
    std::fs::write(dir.join("people.csv"), csv).expect("write csv");
    Config::from_toml_str(
        &cfg_text(
            &CSV_SOURCE.replace(
                "path = \"people.csv\"\n",
                &format!("path = \"people.csv\"\n{extra}"),
            ),
            RULES,
        ),
        "hr.toml",
        dir,
    )
    .expect("valid config")
}

async fn read(cfg: &Config) -> Result<Directory, SourceError> {
    Source::new(&cfg.source, &cfg.directory).read().await
}

/// One person's facts, as every source of the table states them.
struct Facts {
    who: &'static str,
    left: Left,
    department: &'static str,
    title: &'static str,
    location: &'static str,
}

#[derive(Clone, Copy, PartialEq)]
enum Left {
    No,
    /// HR: status Terminated; LDAP: nsAccountLock.
    ByStatus,
    /// HR: an active status with a termination date in the past; LDAP: nsAccountLock.
    ByDate,
}

const PEOPLE: &[Facts] = &[
    Facts {
        who: "ann",
        left: Left::No,
        department: "Engineering",
        title: "Engineer",
        location: "Berlin",
    },
    Facts {
        who: "bob",
        left: Left::No,
        department: "engineering",
        title: "Contractor, backend",
        location: "Paris",
    },
    Facts {
        who: "cid",
        left: Left::ByStatus,
        department: "Engineering",
        title: "Engineer",
        location: "Berlin",
    },
    Facts {
        who: "dee",
        left: Left::ByDate,
        department: "Engineering",
        title: "Contractor",
        location: "Berlin",
    },
    Facts {
        who: "eve",
        left: Left::No,
        department: "R&D",
        title: "Researcher",
        location: "Berlin",
    },
    Facts {
        who: "fay",
        left: Left::No,
        department: "Sales",
        title: "Account CONTRACTOR",
        location: "",
    },
];

fn csv_of(people: &[Facts]) -> String {
    // A BOM, CRLF line ends, and quoted fields with commas and quotes in them.
    let mut s = String::from("\u{feff}Employee ID,Name,Work Email,Atlassian ID,Status,Termination Date,Department,Job Title,Location\r\n");
    for (i, p) in people.iter().enumerate() {
        let (status, end) = match p.left {
            Left::No => ("Active", ""),
            Left::ByStatus => ("Terminated", "2030-01-01"),
            Left::ByDate => ("Active", "2020-06-30"),
        };
        s.push_str(&format!(
            "E{i:03},\"Person {}\",{}@example.com,{},{status},{end},{},\"{}\",{}\r\n",
            p.who,
            p.who,
            acc(p.who),
            p.department,
            p.title.replace('"', "\"\""),
            p.location
        ));
    }
    s
}

fn ldif_of(people: &[Facts]) -> String {
    let mut s = String::new();
    for p in people {
        s.push_str(&format!(
            "dn: uid={w},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: {w}\ncn: Person {w}\nsn: {w}\nmail: {w}@example.com\natlassianAccountId: {}\ndepartmentNumber: {}\ntitle: {}\n",
            acc(p.who),
            p.department,
            p.title,
            w = p.who,
        ));
        if !p.location.is_empty() {
            s.push_str(&format!("l: {}\n", p.location));
        }
        if p.left != Left::No {
            s.push_str("nsAccountLock: TRUE\n");
        }
        s.push('\n');
    }
    s
}

/// What mapping makes of a directory: each group's wanted account ids, and who left.
fn mapped(cfg: &Config, dir: &Directory) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let groups = mapping::desired_groups(dir, &cfg.groups).expect("maps");
    let groups = groups
        .into_iter()
        .map(|(slug, g)| {
            (
                slug.as_str().to_owned(),
                g.members.keys().map(|a| a.as_str().to_owned()).collect(),
            )
        })
        .collect();
    let leavers = dir
        .people
        .values()
        .filter(|p| p.disabled.is_some())
        .map(|p| p.account_id.as_str().to_owned())
        .collect();
    (groups, leavers)
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| acc(n)).collect()
}

#[tokio::test]
async fn an_hr_person_and_an_ldap_person_with_the_same_facts_map_identically() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The expected outcome, written out once: the table's facts through the rules.
    let want_groups: BTreeMap<String, BTreeSet<String>> = [
        ("engineering", ids(&["ann", "bob"])),
        ("contractors", ids(&["bob", "fay"])),
        ("berlin-eng", ids(&["ann", "eve"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let want_leavers = ids(&["cid", "dee"]);

    // HR: a CSV export.
    let hr_cfg = csv_config(tmp.path(), &csv_of(PEOPLE), "");
    let hr = read(&hr_cfg).await.expect("csv reads");
    // LDIF file, with the same facts.
    std::fs::write(tmp.path().join("people.ldif"), ldif_of(PEOPLE)).expect("ldif");
    let ldif_cfg = Config::from_toml_str(
        &cfg_text(
            "[source]\nkind = \"ldif\"\npath = \"people.ldif\"\n[directory]\ndisabled_attribute = \"nsAccountLock\"\n",
            RULES,
        ),
        "ldif.toml",
        tmp.path(),
    )
    .expect("valid");
    let ldif = read(&ldif_cfg).await.expect("ldif reads");
    // A real slapd, with the same facts.
    let slapd = Slapd::start(Options {
        preload: Some(ldif_of(PEOPLE)),
        ..Default::default()
    })
    .expect("slapd");
    let ldap_cfg = Config::from_toml_str(
        &cfg_text(
            &format!(
                "[source]\nkind = \"ldap\"\nurl = \"{}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PW}\"\nusers_base = \"ou=people,{BASE}\"\n[directory]\ndisabled_attribute = \"nsAccountLock\"\n",
                slapd.url()
            ),
            RULES,
        ),
        "ldap.toml",
        tmp.path(),
    )
    .expect("valid");
    let ldap = read(&ldap_cfg).await.expect("ldap reads");

    for (name, cfg, dir) in [
        ("csv", &hr_cfg, &hr),
        ("ldif", &ldif_cfg, &ldif),
        ("ldap", &ldap_cfg, &ldap),
    ] {
        assert!(dir.issues.is_empty(), "{name}: {:?}", dir.issues);
        assert_eq!(dir.people.len(), PEOPLE.len(), "{name}");
        let (groups, leavers) = mapped(cfg, dir);
        assert_eq!(groups, want_groups, "{name}: group members");
        assert_eq!(leavers, want_leavers, "{name}: leavers");
        for p in dir.people.values() {
            let facts = PEOPLE
                .iter()
                .find(|f| acc(f.who) == p.account_id.as_str())
                .expect("a person of the table");
            assert_eq!(p.display_name, format!("Person {}", facts.who), "{name}");
            assert_eq!(
                p.email.as_deref(),
                Some(format!("{}@example.com", facts.who).as_str())
            );
        }
    }
    // The reasons say what the HR system said.
    let reason = |who: &str| {
        hr.people
            .values()
            .find(|p| p.account_id.as_str() == acc(who))
            .and_then(|p| p.disabled.clone())
            .expect("a leaver")
    };
    assert_eq!(reason("cid"), "status Terminated");
    assert_eq!(reason("dee"), "termination date 2020-06-30 has passed");
}

#[tokio::test]
async fn a_quoted_comma_a_bom_and_crlf_are_read_as_the_export_means() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = "\u{feff}Employee ID,Name,Work Email,Atlassian ID,Status,Termination Date,Department,Job Title,Location\r\n\
        E1,\"Lee, Ann\",ann@example.com,ID1,Active,,\"Engineering, Platform\",\"Says \"\"hi\"\"\",\"Berlin\r\nMitte\"\r\n\
        \r\n";
    let cfg = csv_config(tmp.path(), &csv.replace("ID1", &acc("ann")), "");
    let dir = read(&cfg).await.expect("reads");
    let p = dir.people.values().next().expect("one person");
    assert_eq!(p.display_name, "Lee, Ann");
    assert_eq!(p.attribute("departmentnumber"), ["Engineering, Platform"]);
    assert_eq!(p.attribute("title"), ["Says \"hi\""]);
    assert_eq!(p.attribute("l"), ["Berlin\r\nMitte"]);
    assert_eq!(p.stable_id.as_deref(), Some("E1"));
    assert_eq!(p.dn.as_str(), "employee=E1");
    assert_eq!(
        dir.people.len(),
        1,
        "the blank line at the end is no record"
    );
}

#[tokio::test]
async fn people_without_an_account_id_resolve_through_the_identity_file_or_are_frozen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut csv = String::from("Employee ID,Name,Work Email,Atlassian ID,Status,Termination Date,Department,Job Title,Location\n");
    csv.push_str("E1,Ann,ANN@Example.com,,Active,,Engineering,Engineer,Berlin\n");
    csv.push_str(&format!(
        "E2,Bob,bob@example.com,{},Active,,Engineering,Engineer,Berlin\n",
        acc("bob")
    ));
    // Not in the identity file: reported, never a leaver, and their email freezes the member.
    csv.push_str("E3,Cid,cid@example.com,,Terminated,,Engineering,Engineer,Berlin\n");
    std::fs::write(
        tmp.path().join("ids.csv"),
        format!("email,account_id\nann@example.com,{}\n", acc("ann")),
    )
    .expect("ids");
    let cfg = csv_config(
        tmp.path(),
        &csv,
        "max_missing_ratio = 0.5\nidentity_file = \"ids.csv\"\n",
    );
    let dir = read(&cfg).await.expect("reads");
    let got: BTreeSet<String> = dir.people.keys().map(|a| a.as_str().to_owned()).collect();
    assert_eq!(got, ids(&["ann", "bob"]));
    assert_eq!(dir.unusable_emails, ["cid@example.com"]);
    assert_eq!(dir.issues.len(), 1, "{:?}", dir.issues);
    assert!(
        dir.issues[0]
            .problem
            .contains("no account id; cid@example.com is not in"),
        "{:?}",
        dir.issues
    );
    assert!(dir.people.values().all(|p| p.disabled.is_none()));
}

#[tokio::test]
async fn a_broken_export_fails_the_read_with_the_file_record_and_field_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let header = "Employee ID,Name,Work Email,Atlassian ID,Status,Termination Date,Department,Job Title,Location\n";
    let good = |i: usize| {
        format!(
            "E{i},P{i},p{i}@example.com,{},Active,,Sales,Rep,Rome\n",
            acc(&format!("p{i}"))
        )
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "a configured column the header lacks",
            format!("Employee ID,Name,Work Email,Atlassian ID,State,Termination Date,Department,Job Title,Location\n{}", good(1)),
            "",
            "source.fields.status names column \"Status\", which the header row does not have",
        ),
        (
            "a row with a missing column",
            format!("{header}{}E2,P2\n", good(1)),
            "",
            "record 2",
        ),
        (
            "a quote that never closes",
            format!("{header}{}E2,\"P2,p2@example.com,x,Active,,Sales,Rep,Rome\n", good(1)),
            "",
            "an unbalanced quote",
        ),
        (
            "a quote that never closes in the last column (the reader would swallow the rest)",
            format!("{header}{}E2,P2,p2@example.com,x,Active,,Sales,Rep,\"Rome\n{}{}", good(1), good(3), good(4)),
            "",
            "an unbalanced quote (a field's quote that never closes, first odd line 3)",
        ),
        (
            "the stable id missing in more records than allowed",
            format!("{header}{}{}", good(1), good(2).replacen("E2", "", 1)),
            "",
            "stable_id (column \"Employee ID\") is missing in 1 of 2 records, more than source.max_missing_ratio (0.01)",
        ),
        (
            "the status missing in more records than allowed",
            format!("{header}{}{}", good(1), good(2).replace("Active", "")),
            "max_missing_ratio = 0.4\n",
            "status (column \"Status\") is missing in 1 of 2 records",
        ),
        ("no records at all", header.to_owned(), "", "has no entries at all"),
        ("an empty file", String::new(), "", "has no entries at all"),
    ];
    for (what, csv, extra, says) in cases {
        let cfg = csv_config(tmp.path(), &csv, extra);
        let e = read(&cfg).await.expect_err(what).to_string();
        assert!(e.contains(says), "{what}: {e}");
        assert!(e.contains("people.csv"), "{what}: names the file: {e}");
    }
}

#[tokio::test]
async fn an_unknown_status_or_a_bad_date_is_reported_and_never_read_as_a_leaver() {
    let tmp = tempfile::tempdir().expect("tmp");
    let header = "Employee ID,Name,Work Email,Atlassian ID,Status,Termination Date,Department,Job Title,Location\n";
    let csv = format!(
        "{header}E1,Ann,ann@example.com,{},Active,,Sales,Rep,Rome\nE2,Bob,bob@example.com,{},Retired,,Sales,Rep,Rome\nE3,Cid,cid@example.com,{},Active,31/12/2019,Sales,Rep,Rome\n",
        acc("ann"),
        acc("bob"),
        acc("cid")
    );
    let cfg = csv_config(tmp.path(), &csv, "");
    let dir = read(&cfg).await.expect("reads");
    assert_eq!(dir.people.len(), 1);
    let problems: Vec<&str> = dir.issues.iter().map(|i| i.problem.as_str()).collect();
    assert!(
        problems[0].contains("status \"Retired\" is in neither"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("termination date \"31/12/2019\""),
        "{problems:?}"
    );
    assert_eq!(dir.unusable_emails, ["bob@example.com", "cid@example.com"]);
    // Their account ids are frozen too: a record without an email must not let its member
    // look vanished.
    let frozen: BTreeSet<String> = dir.frozen.iter().map(|a| a.as_str().to_owned()).collect();
    assert_eq!(frozen, ids(&["bob", "cid"]));
}

#[test]
fn config_mistakes_in_hr_sources_and_attribute_rules_name_their_key() {
    let problems = |source: &str, rules: &str| -> Vec<String> {
        match Config::from_toml_str(&cfg_text(source, rules), "bad.toml", Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    };
    let text = problems(
        "[source]\nkind = \"csv\"\npath = \"p.csv\"\ndelimiter = \";;\"\nmax_missing_ratio = 2.0\n[source.fields]\nemail = \"Mail\"\n[source.status]\nactive = [\"Active\"]\nleaver = [\"active\"]\n",
        "[[groups]]\nname = \"eng\"\n[[groups.when]]\nattribute = \"department\"\nequals = \"x\"\nmatches = \"y\"\n[[groups]]\nname = \"ops\"\n[[groups.when]]\nattribute = \"team\"\nmatches = \"(unclosed\"\n[[groups]]\nname = \"qa\"\nmatch = \"some\"\n[[groups.when]]\nattribute = \"title\"\n",
    )
    .join("\n");
    for says in [
        "source.delimiter: \";;\" is not one ASCII character",
        "source.max_missing_ratio: 2 is not a fraction between 0 and 1",
        "source.fields.stable_id is required for kind \"csv\"",
        "source.fields: map status or termination_date",
        "source.status: \"active\" is listed both as active and as leaver",
        "groups[0].when[0]: give only one of equals, one_of or matches",
        "groups[1].when[0].matches: not a valid regular expression",
        "groups[2].match: \"some\" is not one of \"all\", \"any\"",
        "groups[2].when[0]: give one of equals, one_of or matches",
    ] {
        assert!(text.contains(says), "missing {says:?} in:\n{text}");
    }
    // A rule testing an attribute the HR source does not map could never match anyone.
    let text = problems(
        CSV_SOURCE,
        "[[groups]]\nname = \"eng\"\n[[groups.when]]\nattribute = \"costCentre\"\nequals = \"42\"\n",
    )
    .join("\n");
    assert!(
        text.contains(
            "groups[0].when[0].attribute: \"costCentre\" is not mapped in source.attributes"
        ),
        "{text}"
    );
    // A group with neither directory groups nor conditions is fed by nothing.
    let text = problems(CSV_SOURCE, "[[groups]]\nname = \"eng\"\n").join("\n");
    assert!(
        text.contains("groups[0].from: list the directory group(s)"),
        "{text}"
    );
}

#[tokio::test]
async fn an_attribute_no_person_has_stops_the_mapping_instead_of_emptying_the_group() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Nobody has a Location: the column is empty throughout (renamed upstream, say).
    let people: Vec<Facts> = PEOPLE
        .iter()
        .map(|f| Facts { location: "", ..*f })
        .collect();
    let cfg = csv_config(tmp.path(), &csv_of(&people), "");
    let dir = read(&cfg).await.expect("reads");
    let e = mapping::desired_groups(&dir, &cfg.groups).expect_err("no one has l");
    assert!(
        e.to_string()
            .contains("no person in the directory has attribute \"l\""),
        "{e}"
    );
}

/// An end-to-end run: a CSV export drives an attribute group in the emulated workspace, the
/// person the export marks terminated is removed, and a second run writes nothing.
#[tokio::test]
async fn a_run_from_a_csv_export_adds_by_attribute_and_removes_the_leaver() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut seed = common::seed(&["ann", "bob", "cid"]);
    seed.groups.push(common::group("engineering", &["cid"]));
    let emu = common::start(seed).await;
    let header = "Employee ID,Name,Work Email,Atlassian ID,Status,Termination Date,Department,Job Title,Location\n";
    let csv = format!(
        "{header}E1,Ann,ann@acme.test,{},Active,,Engineering,Engineer,Berlin\nE2,Bob,bob@acme.test,{},Active,,Sales,Rep,Rome\nE3,Cid,cid@acme.test,{},Terminated,2026-01-31,Engineering,Engineer,Berlin\n",
        acc("ann"),
        acc("bob"),
        acc("cid")
    );
    std::fs::write(tmp.path().join("people.csv"), csv).expect("csv");
    let text = format!(
        "mode = \"apply\"\n[bitbucket]\nworkspace = \"acme\"\napi_url = \"{}\"\nmax_retries = 0\n[credentials.admin]\nkind = \"api_token\"\nemail = \"{}\"\ntoken = \"{}\"\n{CSV_SOURCE}\n[audit]\npath = \"audit.jsonl\"\n[apply]\nrequests_per_hour = 3600000\nburst = 1000\n[[groups]]\nname = \"engineering\"\n[[groups.when]]\nattribute = \"departmentNumber\"\nequals = \"Engineering\"\n",
        emu.base_url(),
        common::ADMIN_EMAIL,
        common::ADMIN_TOKEN
    );
    let cfg = Config::from_toml_str(&text, "run.toml", tmp.path()).expect("valid");
    let rec = bbsync::reconcile::Reconciler::new(cfg).expect("reconciler");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    let state = emu.state();
    let members: BTreeSet<String> = state
        .groups
        .iter()
        .find(|g| g.name == "engineering")
        .expect("group")
        .members
        .iter()
        .cloned()
        .collect();
    assert_eq!(members, ids(&["ann"]));
    let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("audit");
    assert!(
        trail.contains("departmentNumber = \\\"engineering\\\""),
        "the reason names the rule: {trail}"
    );
    assert!(
        trail.contains("status Terminated"),
        "the removal names the HR fact: {trail}"
    );
    emu.reset_requests();
    let second = rec.run(true).await.expect("second run");
    assert!(second.plan.is_empty(), "{:#?}", second.plan);
    assert!(
        common::writes(&emu).is_empty(),
        "a converged run writes nothing"
    );
}

/// Records that carry only an email resolve through the workspace members query: 1,000
/// emails in at most 12 requests (90 a request), the answers cached in the state directory so
/// the next run asks nothing; an address that is no member's is reported, never a leaver.
#[tokio::test]
async fn emails_resolve_through_the_members_query_in_batches_and_are_cached() {
    let tmp = tempfile::tempdir().expect("tmp");
    let names: Vec<String> = (0..1000).map(|i| format!("p{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let emu = common::start(common::seed(&refs)).await;
    let mut csv = String::from("id,mail,state,dept\n");
    for n in &names {
        // Bitbucket has them lower-case; HR writes them its own way.
        csv.push_str(&format!("{n},{}@ACME.test,Active,Eng\n", n.to_uppercase()));
    }
    csv.push_str("x1,stranger@elsewhere.test,Active,Eng\n");
    std::fs::write(tmp.path().join("people.csv"), csv).expect("csv");
    let text = format!(
        "[bitbucket]\nworkspace = \"acme\"\napi_url = \"{}\"\nmax_retries = 0\n[credentials.admin]\nkind = \"api_token\"\nemail = \"{}\"\ntoken = \"{}\"\n[source]\nkind = \"csv\"\npath = \"people.csv\"\nmax_missing_ratio = 0.5\n[source.fields]\nstable_id = \"id\"\nemail = \"mail\"\nstatus = \"state\"\n[source.attributes]\ndept = \"dept\"\n[offboarding]\nstate_dir = \"state\"\n[apply]\nrequests_per_hour = 3600000\nburst = 1000\n[[groups]]\nname = \"staff\"\ncreate = true\n[[groups.when]]\nattribute = \"dept\"\nequals = \"eng\"\n",
        emu.base_url(),
        common::ADMIN_EMAIL,
        common::ADMIN_TOKEN
    );
    let cfg = Config::from_toml_str(&text, "resolve.toml", tmp.path()).expect("valid");
    let rec = bbsync::reconcile::Reconciler::new(cfg).expect("reconciler");
    let email_queries = |emu: &bbsync_emulator::Emulator| {
        emu.requests()
            .iter()
            .filter(|r| r.path.contains("/members?") && r.path.contains("user.email"))
            .count()
    };
    let report = rec.run(false).await.expect("plan");
    let adds = report
        .plan
        .changes
        .iter()
        .filter(|c| matches!(c.change, bbsync::plan::Change::AddMember { .. }))
        .count();
    assert_eq!(adds, 1000, "every resolved person is added");
    // 1,000 resolved in 12 queries, plus one for the stranger's freeze check.
    let first = email_queries(&emu);
    assert!(first <= 13, "{first} member email queries");
    assert!(first >= 12, "{first}: 90 addresses a request at most");
    assert!(tmp.path().join("state/identity-cache.json").exists());
    // Who no resolver found is reported by email, in the report and on /status.
    assert_eq!(report.source.unresolved, ["stranger@elsewhere.test"]);
    assert!(
        bbsync::report::human(&report).contains("Unresolved: 1 people"),
        "{}",
        bbsync::report::human(&report)
    );
    let status = bbsync::daemon::state::RunSummary::from_report(
        &report,
        bbsync::daemon::state::RunKind::Full,
    );
    assert_eq!(
        serde_json::to_value(&status).expect("json")["unresolved"],
        serde_json::json!({"count": 1, "emails": ["stranger@elsewhere.test"]})
    );

    emu.reset_requests();
    let again = rec.run(false).await.expect("second plan");
    assert_eq!(again.plan.changes.len(), report.plan.changes.len());
    // Nobody is asked about again for resolution (the stranger is remembered as not found for
    // an hour); the frozen-member check still asks once about the stranger's email.
    assert_eq!(email_queries(&emu), 1, "cached emails are not asked again");
    let stranger = again
        .plan
        .changes
        .iter()
        .any(|c| format!("{:?}", c.change).contains("stranger"));
    assert!(!stranger, "the unresolved stranger is in no change");
}
