//! The LDAP source against a real, private OpenLDAP slapd (started per test on free loopback
//! ports, killed when the test ends).

mod common;

use bbsync::config::{Config, SourceSettings};
use bbsync::mapping;
use bbsync::source::{Directory, Source, SourceError};
use bbsync_testkit::{
    Options, Slapd, ADMIN_DN, ADMIN_PW, BASE, LIMITED_DN, LIMITED_PW, READER_DN, READER_PW,
};
use common::acc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn person(uid: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: {uid}\ncn: Person {uid}\nsn: {uid}\nmail: {uid}@example.com\natlassianAccountId: {}\n{extra}\n", acc(uid)
    )
}

fn group(cn: &str, members: &[&str], nested: &[&str]) -> String {
    let mut s = format!("dn: cn={cn},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for m in members {
        s.push_str(&format!("member: uid={m},ou=people,{BASE}\n"));
    }
    for g in nested {
        s.push_str(&format!("member: cn={g},ou=groups,{BASE}\n"));
    }
    if members.is_empty() && nested.is_empty() {
        // groupOfNames needs a member; the base entry resolves to nobody and is reported.
        s.push_str(&format!("member: {BASE}\n"));
    }
    s.push('\n');
    s
}

/// `[source]` for the server, plus extra keys; `[directory]` marks nsAccountLock.
fn config(url: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[bitbucket]
workspace = "acme"
[credentials.admin]
kind = "api_token"
email = "admin@acme.test"
token = "x"
[source]
kind = "ldap"
url = "{url}"
bind_dn = "{READER_DN}"
bind_password = "{READER_PW}"
users_base = "ou=people,{BASE}"
groups_base = "ou=groups,{BASE}"
timeout_secs = 10
{extra}
[directory]
disabled_attribute = "nsAccountLock"
[[groups]]
name = "Developers"
from = ["engineering"]
"#
    );
    Config::from_toml_str(&text, "ldap-test.toml", std::path::Path::new(".")).expect("valid config")
}

/// The configured reader, calling `hook` after each page.
fn with_hook(cfg: &Config, hook: impl Fn(&str, usize, usize) + Send + Sync + 'static) -> Source {
    Source::new(&cfg.source, &cfg.directory).with_page_hook(Arc::new(hook))
}

/// A private slapd preloaded with `ldif` (no TLS).
fn slapd_with(ldif: String) -> Slapd {
    Slapd::start(Options {
        preload: Some(ldif),
        ..Default::default()
    })
    .expect("slapd")
}

async fn read(cfg: &Config) -> Result<Directory, SourceError> {
    Source::new(&cfg.source, &cfg.directory).read().await
}

#[tokio::test]
async fn paging_across_many_pages_reads_every_person_and_group() {
    let mut ldif: String = (0..1000).map(|i| person(&format!("u{i:04}"), "")).collect();
    for g in 0..30 {
        let members: Vec<String> = (0..20).map(|i| format!("u{:04}", g * 20 + i)).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        ldif.push_str(&group(&format!("team{g:02}"), &refs, &[]));
    }
    let slapd = slapd_with(ldif);
    let pages = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pages);
    let src = with_hook(
        &config(&slapd.url(), "page_size = 37"),
        move |name, _, _| {
            if name == "users" {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    let dir = src.read().await.expect("read");
    assert_eq!(dir.people.len(), 1000);
    assert_eq!(dir.groups.len(), 30);
    assert!(dir.groups.values().all(|g| g.members.len() == 20));
    assert_eq!(
        pages.load(Ordering::Relaxed),
        28,
        "1000 entries in pages of 37"
    );
    assert!(dir.issues.is_empty(), "{:?}", dir.issues);
    // entryUUID is kept as the stable id.
    assert!(dir
        .people
        .values()
        .all(|p| p.stable_id.as_deref().is_some_and(|u| u.len() == 36)));
}

#[tokio::test]
async fn nested_groups_with_a_cycle_map_exactly_as_the_same_entries_from_ldif() {
    let ldif = [
        person("ann", ""),
        person("bob", ""),
        person("cid", ""),
        person("dee", "nsAccountLock: TRUE\n"),
        group("engineering", &["ann"], &["backend"]),
        group("backend", &["bob", "dee"], &["platform"]),
        group("platform", &["cid"], &["engineering"]), // cycle: engineering > backend > platform > engineering
    ]
    .concat();
    let slapd = slapd_with(ldif.clone());
    let cfg = config(&slapd.url(), "");
    let live = read(&cfg).await.expect("read");

    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("d.ldif"), &ldif).expect("write");
    let mut file_cfg = cfg.clone();
    file_cfg.source = SourceSettings::LdifFile {
        path: tmp.path().join("d.ldif"),
    };
    let file = read(&file_cfg).await.expect("ldif");

    let want = |d: &Directory| {
        let groups = mapping::desired_groups(d, &cfg.groups).expect("maps");
        let members: Vec<String> = groups
            .values()
            .flat_map(|g| g.members.keys().map(|a| a.to_string()))
            .collect();
        members
    };
    let mut expected = [acc("ann"), acc("bob"), acc("cid")];
    expected.sort();
    assert_eq!(want(&live), expected, "dee is disabled");
    assert_eq!(want(&live), want(&file));
    for (dn, g) in &live.groups {
        assert_eq!(
            Some(&g.members),
            file.groups.get(dn).map(|f| &f.members),
            "{dn}"
        );
    }
}

#[tokio::test]
async fn each_kind_of_disabled_marker_is_detected() {
    let ldif = [
        person("active", ""),
        person("flagged", "nsAccountLock: true\n"),
        person("adlocked", "userAccountControl: 514\n"),
        person("adactive", "userAccountControl: 512\n"),
        person("pwlocked", "pwdAccountLockedTime: 000001010000Z\n"),
        person("lockedout", "pwdAccountLockedTime: 20260101000000Z\n"),
        person("leaver", "employeeType: left\n"),
        group(
            "engineering",
            &[
                "active", "flagged", "adlocked", "adactive", "pwlocked", "leaver",
            ],
            &[],
        ),
    ]
    .concat();
    let slapd = slapd_with(ldif);
    let dir = read(&config(
        &slapd.url(),
        "disabled_filter = \"(employeeType=left)\"",
    ))
    .await
    .expect("read");
    let reason = |uid: &str| {
        dir.people
            .values()
            .find(|p| p.dn.first_value() == uid)
            .and_then(|p| p.disabled.clone())
    };
    assert_eq!(reason("active"), None);
    assert_eq!(reason("adactive"), None);
    assert_eq!(
        reason("lockedout"),
        None,
        "a timed lockout after failed logins is not off-boarding"
    );
    assert!(reason("flagged").is_some_and(|r| r.contains("nsAccountLock")));
    assert!(reason("adlocked").is_some_and(|r| r.contains("ACCOUNTDISABLE")));
    assert!(reason("pwlocked").is_some_and(|r| r.contains("pwdAccountLockedTime")));
    assert!(reason("leaver").is_some_and(|r| r.contains("disabled_filter")));
}

#[tokio::test]
async fn member_of_maintained_by_the_overlay_is_read_from_people() {
    let slapd = slapd_with([person("ann", ""), person("bob", "")].concat());
    // Added through the server, so the memberof overlay writes memberOf on ann.
    slapd
        .ldapadd(&group("engineering", &["ann"], &[]))
        .expect("ldapadd");
    // Read no group entries at all: the membership comes from memberOf alone.
    let dir = read(&config(
        &slapd.url(),
        "groups_filter = \"(cn=nothing-matches)\"",
    ))
    .await
    .expect("read");
    let eng = dir.find_groups("engineering");
    assert_eq!(eng.len(), 1, "{:?}", dir.groups);
    assert_eq!(
        eng[0]
            .members
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        [acc("ann")]
    );
}

#[tokio::test]
async fn starttls_and_ldaps_work_with_a_test_ca_and_an_untrusted_certificate_is_refused() {
    let slapd = Slapd::start(Options {
        tls: true,
        preload: Some([person("ann", ""), group("engineering", &["ann"], &[])].concat()),
    })
    .expect("slapd");
    let ca = slapd.ca_file().display().to_string();
    let ldaps = slapd.ldaps_url().expect("ldaps");

    let dir = read(&config(&ldaps, &format!("ca_file = \"{ca}\"")))
        .await
        .expect("ldaps");
    assert_eq!(dir.people.len(), 1);
    let dir = read(&config(
        &slapd.url(),
        &format!("starttls = true\nca_file = \"{ca}\""),
    ))
    .await
    .expect("starttls");
    assert_eq!(dir.people.len(), 1);

    let other = slapd.other_ca_file().display().to_string();
    let err = read(&config(&ldaps, &format!("ca_file = \"{other}\"")))
        .await
        .expect_err("untrusted");
    assert!(err.to_string().contains("connect"), "{err}");
    let err = read(&config(
        &slapd.url(),
        &format!("starttls = true\nca_file = \"{other}\""),
    ))
    .await
    .expect_err("untrusted starttls");
    assert!(matches!(err, SourceError::Ldap { .. }), "{err}");
    // The system store does not know the test CA either.
    read(&config(&ldaps, ""))
        .await
        .expect_err("untrusted by the system store");
    // The explicit opt-out connects (and logs loudly).
    read(&config(&ldaps, "tls_verify = false"))
        .await
        .expect("verification off");
}

#[tokio::test]
async fn a_size_limited_account_fails_the_read_instead_of_returning_fewer_people() {
    let ldif: String = (0..100).map(|i| person(&format!("u{i:03}"), "")).collect();
    let slapd = slapd_with(ldif);
    let mut cfg = config(&slapd.url(), "page_size = 10");
    if let SourceSettings::Ldap(l) = &mut cfg.source {
        l.bind_dn = Some(LIMITED_DN.into());
        l.bind_password = Some(bbsync::config::Secret::new(LIMITED_PW));
    }
    let err = read(&cfg).await.expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("sizeLimitExceeded"), "{msg}");
    assert!(msg.contains("search users"), "{msg}");

    // Unpaged reads are capped the same way; the admin reads everything.
    if let SourceSettings::Ldap(l) = &mut cfg.source {
        l.bind_dn = Some(ADMIN_DN.into());
        l.bind_password = Some(bbsync::config::Secret::new(ADMIN_PW));
    }
    assert_eq!(read(&cfg).await.expect("admin").people.len(), 100);
}

#[tokio::test]
async fn a_server_killed_in_the_middle_of_a_read_fails_the_read() {
    let ldif: String = (0..2000).map(|i| person(&format!("u{i:04}"), "")).collect();
    let slapd = slapd_with(ldif);
    let pid = slapd.pid().expect("pid");
    let src = with_hook(
        &config(&slapd.url(), "page_size = 50"),
        move |name, pages, _| {
            if name == "users" && pages == 3 {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        },
    );
    let err = src.read().await.expect_err("must fail");
    assert!(matches!(err, SourceError::Ldap { .. }), "{err}");
    assert!(err.to_string().contains("search users"), "{err}");
}

#[tokio::test]
async fn bad_entries_are_skipped_and_named_and_nobody_else_is_affected() {
    let ldif = [
        person("ok", ""),
        format!("dn: uid=noid,ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: noid\ncn: No Id\nsn: x\n\n"),
        format!("dn: uid=bad,ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: bad\ncn: Bad\nsn: x\natlassianAccountId: not an id!\n\n"),
        format!("dn: uid=twin1,ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: twin1\ncn: T1\nsn: x\natlassianAccountId: {}\n\n", acc("twin")),
        format!("dn: uid=twin2,ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: twin2\ncn: T2\nsn: x\natlassianAccountId: {}\n\n", acc("twin")),
        format!("dn: cn=engineering,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: engineering\nmember: uid=ok,ou=people,{BASE}\nmember: uid=ghost,ou=people,{BASE}\n\n"),
    ]
    .concat();
    let slapd = slapd_with(ldif);
    let dir = read(&config(&slapd.url(), "")).await.expect("read");
    let dns: Vec<String> = dir.issues.iter().map(|i| i.dn.to_lowercase()).collect();
    for dn in ["uid=noid", "uid=bad", "uid=twin", "cn=engineering"] {
        assert!(
            dns.iter().any(|d| d.starts_with(dn)),
            "{dn} not reported: {:?}",
            dir.issues
        );
    }
    assert!(dir.issues.iter().any(|i| i.problem.contains("uid=ghost")));
    assert_eq!(dir.find_groups("engineering")[0].members.len(), 1);
    assert_eq!(dir.people.len(), 1);
}

#[tokio::test]
async fn a_wrong_password_or_a_dead_server_fails_with_a_clear_error() {
    let slapd = slapd_with(person("ann", ""));
    let mut cfg = config(&slapd.url(), "");
    if let SourceSettings::Ldap(l) = &mut cfg.source {
        l.bind_password = Some(bbsync::config::Secret::new("wrong"));
    }
    let err = read(&cfg).await.expect_err("bad password");
    let msg = err.to_string();
    assert!(
        msg.contains("bind") && msg.contains("invalidCredentials"),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "password in error: {msg}");

    let url = slapd.url();
    drop(slapd);
    let err = read(&config(&url, "connect_timeout_secs = 2"))
        .await
        .expect_err("dead server");
    assert!(err.to_string().contains("connect"), "{err}");
}

#[tokio::test]
async fn a_whole_reconcile_from_ldap_removes_the_leaver() {
    let ldif = [
        person("ann", ""),
        person("bob", "nsAccountLock: TRUE\n"),
        group("engineering", &["ann", "bob"], &[]),
    ]
    .concat();
    let slapd = slapd_with(ldif);
    let mut s = common::seed(&["ann", "bob"]);
    s.groups.push(common::group("Developers", &["bob"]));
    let emu = common::start(s).await;
    let mut cfg = config(&slapd.url(), "");
    // Bitbucket settings pointing at the emulator, taken from the shared test config.
    let tmp = tempfile::tempdir().expect("tmp");
    let api = common::config(
        &emu,
        tmp.path(),
        "",
        "[[groups]]\nname = \"x\"\nfrom = [\"x\"]\n",
    );
    cfg.bitbucket = api.bitbucket;
    cfg.credentials = api.credentials;
    cfg.mode = api.mode;
    let report = bbsync::reconcile::Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    let members = &emu.state().groups[0].members;
    assert_eq!(members, &vec![common::acc("ann")]);
}

#[tokio::test]
async fn unique_member_and_posix_groups_resolve_against_a_live_server() {
    let ldif = [
        person("ann", ""),
        person("bob", ""),
        format!("dn: cn=unique,ou=groups,{BASE}\nobjectClass: groupOfUniqueNames\ncn: unique\nuniqueMember: uid=ann,ou=people,{BASE}#'0101'B\nuniqueMember: UID=Bob, OU=People, {BASE}\n\n"),
        format!("dn: cn=posix,ou=groups,{BASE}\nobjectClass: posixGroup\ncn: posix\ngidNumber: 5000\nmemberUid: ann\nmemberUid: BOB\n\n"),
    ]
    .concat();
    let slapd = slapd_with(ldif);
    let dir = read(&config(&slapd.url(), "")).await.expect("read");
    for g in ["unique", "posix"] {
        assert_eq!(
            dir.find_groups(g)[0].members.len(),
            2,
            "{g}: {:?}",
            dir.issues
        );
    }
    assert!(dir.issues.is_empty(), "{:?}", dir.issues);
}

#[tokio::test]
async fn a_server_that_stops_answering_times_out_and_fails_the_read() {
    let ldif: String = (0..500).map(|i| person(&format!("u{i:03}"), "")).collect();
    let slapd = slapd_with(ldif);
    let pid = slapd.pid().expect("pid").to_string();
    let stop = pid.clone();
    let mut cfg = config(&slapd.url(), "page_size = 50");
    if let SourceSettings::Ldap(l) = &mut cfg.source {
        l.op_timeout = std::time::Duration::from_secs(1);
    }
    let src = with_hook(&cfg, move |name, pages, _| {
        if name == "users" && pages == 2 {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &stop])
                .status();
        }
    });
    let started = std::time::Instant::now();
    let err = src.read().await.expect_err("must time out");
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(matches!(err, SourceError::Ldap { .. }), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_bind_password_can_come_from_a_file_and_a_misnamed_account_id_attribute_fails_the_read()
{
    let slapd = slapd_with([person("ann", ""), group("engineering", &["ann"], &[])].concat());
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("pw"), format!("{READER_PW}\n")).expect("pw");
    let text = format!(
        "[bitbucket]\nworkspace = \"acme\"\n[credentials.a]\nkind = \"access_token\"\ntoken = \"x\"\n[source]\nkind = \"ldap\"\nurl = \"{}\"\nbind_dn = \"{READER_DN}\"\nbind_password_file = \"pw\"\nusers_base = \"ou=people,{BASE}\"\n[[groups]]\nname = \"d\"\nfrom = [\"engineering\"]\n",
        slapd.url()
    );
    let cfg = Config::from_toml_str(&text, "t.toml", tmp.path()).expect("valid");
    assert_eq!(read(&cfg).await.expect("read").people.len(), 1);

    // Every person lacks the (misnamed) attribute: a broken read, not an empty company.
    let bad = Config::from_toml_str(
        &text.replace(
            "[[groups]]",
            "[directory]\naccount_id_attribute = \"atlassianId\"\n[[groups]]",
        ),
        "t.toml",
        tmp.path(),
    )
    .expect("valid");
    let err = read(&bad).await.expect_err("no usable person");
    assert!(matches!(err, SourceError::NoUsablePerson { .. }), "{err}");
    assert!(err.to_string().contains("account_id_attribute"), "{err}");
}

/// The off-boarding poll's light read against the real server: people disabled by an attribute
/// or a ppolicy lock among those modified since a time (the server's `modifyTimestamp`), and
/// the DNs the disabled filter matches.
#[tokio::test]
async fn the_poll_read_finds_people_disabled_since_a_time_and_by_the_disabled_filter() {
    let ldif = [
        person("ann", ""),
        person("bob", ""),
        person("carol", "nsAccountLock: TRUE\n"),
        person("dave", "description: contractor-ended\n"),
        group("engineering", &["ann", "bob", "carol", "dave"], &[]),
    ]
    .concat();
    let slapd = slapd_with(ldif);
    let cfg = config(
        &slapd.url(),
        "disabled_filter = \"(description=contractor-ended)\"",
    );
    let source = Source::new(&cfg.source, &cfg.directory);
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    slapd
        .ldapmodify(&format!(
            "dn: uid=bob,ou=people,{BASE}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n\ndn: uid=ann,ou=people,{BASE}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n"
        ))
        .expect("ldapmodify");
    let found = source.read_leavers(before).await.expect("poll read");
    let ids: Vec<String> = found
        .disabled
        .iter()
        .map(|(id, _, _)| id.as_str().to_owned())
        .collect();
    for who in ["ann", "bob", "carol"] {
        assert!(ids.contains(&acc(who)), "{who} disabled: {found:?}");
    }
    assert!(!ids.contains(&acc("dave")), "dave only matches the filter");
    assert_eq!(
        found
            .by_filter
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect::<Vec<_>>(),
        [format!("uid=dave,ou=people,{BASE}")]
    );
    // Nothing was modified after this time: the time filter leaves everyone out, but the
    // disabled filter is not limited by time.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let found = source.read_leavers(later).await.expect("poll read");
    assert!(found.disabled.is_empty(), "{found:?}");
    assert_eq!(found.by_filter.len(), 1);

    // A server that is gone is an error, never "nobody left".
    drop(slapd);
    assert!(source.read_leavers(before).await.is_err());
}
