//! The `bbsync` binary as users run it: exit codes, output, environment overrides.

mod common;

use common::*;
use std::process::Output;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bbsync");

async fn bbsync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().await.expect("run bbsync")
}

/// A config file (no token: it comes from the environment) for workspace `workspace` on the
/// emulator, mapping directory group `eng` (ann) to Developers.
fn write_config(
    emu: &bbsync_emulator::Emulator,
    dir: &std::path::Path,
    workspace: &str,
) -> std::path::PathBuf {
    std::fs::write(
        dir.join("dir.ldif"),
        ldif(&[("ann", false)], &[("eng", &["ann"])]),
    )
    .expect("ldif");
    let cfg = dir.join("bbsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bitbucket]\nworkspace = \"{workspace}\"\napi_url = \"{}\"\n[credentials.admin]\nkind = \"api_token\"\nemail = \"{ADMIN_EMAIL}\"\n[source]\nkind = \"ldif\"\npath = \"dir.ldif\"\n[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
            emu.base_url()
        ),
    )
    .expect("config");
    cfg
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn demo_once_shows_the_plan_the_leaver_removed_and_a_clean_second_reconcile() {
    let o = bbsync(&["demo", "--once"], &[]).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for expected in [
        "Reconcile 1",
        "- remove Bob Stone",
        "left the company (nsAccountLock=TRUE)",
        "+ grant write on",
        "Applied:",
        "Reconcile 2",
        "Plan: no changes",
        "[ok] leaver Bob Stone is in no Bitbucket group",
        "[ok] manual grant outside the managed scope untouched",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

#[tokio::test]
async fn demo_org_managed_writes_memberships_through_the_admin_api() {
    let o = bbsync(&["demo", "--once", "--org-managed"], &[]).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for expected in [
        "organisation-managed",
        "Memberships: Atlassian Admin API (auto: organisation-managed",
        "- remove Bob Stone",
        "Plan: no changes",
        "[ok] leaver Bob Stone is in no Bitbucket group",
        "[ok] memberships written through the Atlassian Admin API",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

/// A machine (or image) without a CA bundle cannot build the HTTP client even for `http://`:
/// the error says so and names the fix, rather than reqwest's bare "builder error".
#[tokio::test]
async fn without_a_ca_bundle_the_error_names_the_fix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let none = tmp.path().join("none.pem");
    let dir = tmp.path().display().to_string();
    let o = bbsync(
        &["demo", "--once"],
        &[
            ("SSL_CERT_FILE", none.to_str().expect("utf-8")),
            ("SSL_CERT_DIR", &dir),
        ],
    )
    .await;
    let out = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    for expected in [
        "No CA certificates were loaded",
        "apt-get install ca-certificates",
        "SSL_CERT_FILE",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test]
async fn a_bad_config_exits_2_and_names_every_bad_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("bad.toml");
    std::fs::write(
        &path,
        "mode = \"sometimes\"\n[bitbucket]\n[source]\nkind = \"active-directory\"\n",
    )
    .expect("write");
    let o = bbsync(&["plan", "-c", path.to_str().expect("utf8")], &[]).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    for key in ["mode:", "bitbucket.workspace", "source.kind", "credentials"] {
        assert!(out.contains(key), "missing {key} in:\n{out}");
    }
    let o = bbsync(&["plan"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "usage error: {}", text(&o));
}

#[tokio::test]
async fn plan_check_exits_3_on_drift_and_0_once_applied_with_the_token_from_the_environment() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&emu, tmp.path(), "acme");
    let cfg = cfg.to_str().expect("utf8");
    let env = [("BBSYNC__CREDENTIALS__ADMIN__TOKEN", ADMIN_TOKEN)];

    let o = bbsync(&["plan", "-c", cfg, "--check"], &[]).await;
    assert_eq!(
        o.status.code(),
        Some(2),
        "no token anywhere is a config error: {}",
        text(&o)
    );
    assert!(text(&o).contains("credentials.admin.token"), "{}", text(&o));

    let o = bbsync(&["check", "-c", cfg], &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = bbsync(&["plan", "-c", cfg, "--check", "--output", "json"], &env).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(report["plan"]["changes"][0]["op"], "add_member");
    assert!(writes(&emu).is_empty(), "plan wrote");

    let o = bbsync(&["apply", "-c", cfg], &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains(ADMIN_TOKEN), "token in output");

    let o = bbsync(&["plan", "-c", cfg, "--check"], &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[tokio::test]
async fn the_example_config_is_valid_apart_from_its_secret_file() {
    let mut c = Command::new(BIN);
    c.args([
        "check",
        "-c",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/bbsync.example.toml"),
    ])
    .env_remove("RUST_LOG")
    // Outside systemd: the secret files' ${CREDENTIALS_DIRECTORY} is unset (tests/systemd.rs
    // loads it with the variable set).
    .env_remove("CREDENTIALS_DIRECTORY");
    let o = c.output().await.expect("run bbsync");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    // The only problems are the secret files, whose directory systemd would give, and the CA
    // file that does not exist on this machine.
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert_eq!(problems.len(), 4, "{out}");
    for key in [
        "credentials.admin.token_file: \"${CREDENTIALS_DIRECTORY}/bitbucket-token\" needs $CREDENTIALS_DIRECTORY",
        "source.bind_password_file: \"${CREDENTIALS_DIRECTORY}/ldap-password\" needs $CREDENTIALS_DIRECTORY",
        "http.token_file: \"${CREDENTIALS_DIRECTORY}/http-token\" needs $CREDENTIALS_DIRECTORY",
        "source.ca_file",
    ] {
        assert!(problems.iter().any(|p| p.contains(key)), "{key}: {out}");
    }
}

#[tokio::test]
async fn environment_overrides_keep_secrets_verbatim_and_still_convert_numbers() {
    let mut s = seed(&["ann"]);
    s.credentials[0].token = Some("00123".into());
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&emu, tmp.path(), "wrong");
    let env = [
        ("BBSYNC__CREDENTIALS__ADMIN__TOKEN", "00123"),
        ("BBSYNC__BITBUCKET__WORKSPACE", "acme"),
        ("BBSYNC__BITBUCKET__TIMEOUT_SECS", "5"),
        ("BBSYNC__SAFETY__MAX_REMOVALS", "0"),
    ];
    let o = bbsync(&["check", "-c", cfg.to_str().expect("utf8")], &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("workspace acme"), "{}", text(&o));
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_the_output_quietly_not_with_a_panic() {
    // Like `bbsync demo --once | head -c 100`: the pipe closes while bbsync still writes.
    let mut child = Command::new(BIN)
        .args(["demo", "--once"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 100];
    tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut first)
        .await
        .expect("some output");
    drop(stdout);
    let o = child.wait_with_output().await.expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

#[tokio::test]
async fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let o = bbsync(&["demo", "--once"], &[("RUST_LOG", "info")]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("INFO"), "expected log lines: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI escape codes in: {err}");
}

#[tokio::test]
async fn check_fails_on_a_rule_that_names_what_does_not_exist_and_plan_only_warns() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    add_repos(&mut s, "PROJ", "proj", 2);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&emu, tmp.path(), "acme");
    let mut text_cfg = std::fs::read_to_string(&cfg).expect("read");
    text_cfg.push_str(
        "[[grants]]\ngroup = \"developers\"\npermission = \"read\"\nrepos = [\"proj-000\", \"no-such-repo\"]\n",
    );
    std::fs::write(&cfg, text_cfg).expect("write");
    let cfg = cfg.to_str().expect("utf8");
    let env = [("BBSYNC__CREDENTIALS__ADMIN__TOKEN", ADMIN_TOKEN)];

    let o = bbsync(&["check", "-c", cfg], &env).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("grants[0] names repository no-such-repo, which does not exist"),
        "{}",
        text(&o)
    );
    let o = bbsync(&["plan", "-c", cfg, "--output", "json"], &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(report["plan"]["notes"][0]["kind"], "unknown_repo");
    assert_eq!(report["plan"]["changes"][0]["reason"]["kind"], "rule");
}

#[tokio::test]
async fn a_held_guard_is_released_from_the_command_line_by_reviewing_and_approving_the_plan() {
    let people = ["ann", "bob", "cid"];
    let mut s = seed(&people);
    s.groups.push(group("Developers", &people));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&emu, tmp.path(), "acme");
    let mut text_cfg = std::fs::read_to_string(&cfg).expect("read");
    text_cfg.push_str("[safety]\nmax_removals = 1\n");
    std::fs::write(&cfg, text_cfg).expect("write");
    let cfg = cfg.to_str().expect("utf8");
    let file = tmp.path().join("plan.json");
    let file = file.to_str().expect("utf8");
    let env = [("BBSYNC__CREDENTIALS__ADMIN__TOKEN", ADMIN_TOKEN)];

    let o = bbsync(&["apply", "-c", cfg], &env).await;
    assert_eq!(o.status.code(), Some(1), "held: {}", text(&o));
    assert!(
        text(&o).contains("safety: 2 revocations exceed safety.max_removals = 1"),
        "{}",
        text(&o)
    );
    let o = bbsync(&["plan", "-c", cfg, "--out", file], &env).await;
    assert!(text(&o).contains("bbsync approve"), "{}", text(&o));
    let o = bbsync(&["approve", file], &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = bbsync(&["apply", "-c", cfg, "--plan", file], &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let devs = emu
        .state()
        .groups
        .into_iter()
        .find(|g| g.name == "Developers")
        .expect("group");
    assert_eq!(devs.members, [acc("ann")]);
    let o = bbsync(&["apply", "-c", cfg, "--plan", file], &env).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no longer matches"), "{}", text(&o));
}

#[tokio::test]
async fn the_daemon_logs_what_a_dry_run_would_change_and_sigterm_stops_it_with_exit_0() {
    use tokio::io::AsyncBufReadExt;
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&emu, tmp.path(), "acme");
    let mut child = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().expect("utf8")])
        .env_remove("RUST_LOG")
        .env("BBSYNC__CREDENTIALS__ADMIN__TOKEN", ADMIN_TOKEN)
        // A free port: tests run in parallel.
        .env("BBSYNC__HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.expect("read") {
            let done = l.contains("reconcile finished");
            seen.push(l);
            if done {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(finished, "no reconcile finished: {seen:#?}");
    let log = seen.join("\n");
    assert!(
        log.contains("would change (dry run)") && log.contains("add Person ann"),
        "{log}"
    );
    assert!(writes(&emu).is_empty(), "a dry-run daemon wrote");
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("stopped within 20 s")
        .expect("wait");
    let mut rest = Vec::new();
    while let Ok(Some(l)) = lines.next_line().await {
        rest.push(l);
    }
    assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
    assert!(rest.join("\n").contains("SIGTERM"), "{rest:#?}");
}

/// `bbsync source` on an LDIF file of `extra_people` more people than the fixed few (nesting, a
/// cycle, a leaver, an entry without an id, text that JSON escapes).
fn write_source_config(dir: &std::path::Path, extra_people: usize) -> std::path::PathBuf {
    let mut text = String::new();
    let person = |uid: &str, extra: &str| {
        format!(
            "dn: uid={uid},ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Person \"{uid}\" \u{e9}\\ tab\tend\nmail: {uid}@acme.test\natlassianAccountId: {}\n{extra}\n",
            acc(uid)
        )
    };
    text.push_str(&person("ann", ""));
    text.push_str(&person("bob", "pwdAccountLockedTime: 000001010000Z\n"));
    text.push_str(&person("cid", "nsAccountLock: TRUE\n"));
    text.push_str("dn: uid=noid,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\ncn: No Id\nmail: noid@acme.test\n\n");
    for i in 0..extra_people {
        text.push_str(&person(&format!("p{i:05}"), ""));
    }
    text.push_str("dn: cn=eng,ou=groups,dc=acme,dc=test\nobjectClass: groupOfNames\ncn: eng\nmember: uid=ann,ou=people,dc=acme,dc=test\nmember: cn=ops,ou=groups,dc=acme,dc=test\nmember: uid=ghost,ou=people,dc=acme,dc=test\n\n");
    text.push_str("dn: cn=ops,ou=groups,dc=acme,dc=test\nobjectClass: groupOfNames\ncn: ops\nmember: UID=Bob, OU=People, DC=acme, DC=test\nmember: cn=eng,ou=groups,dc=acme,dc=test\n\n");
    text.push_str("dn: cn=all,ou=groups,dc=acme,dc=test\nobjectClass: groupOfNames\ncn: all\nmember: cn=eng,ou=groups,dc=acme,dc=test\nmember: uid=cid,ou=people,dc=acme,dc=test\n");
    for i in 0..extra_people {
        text.push_str(&format!("member: uid=p{i:05},ou=people,dc=acme,dc=test\n"));
    }
    text.push('\n');
    std::fs::write(dir.join("dir.ldif"), text).expect("ldif");
    let cfg = dir.join("bbsync.toml");
    std::fs::write(
        &cfg,
        "[bitbucket]\nworkspace = \"acme\"\n[credentials.none]\nkind = \"access_token\"\ntoken = \"unused\"\n[source]\nkind = \"ldif\"\npath = \"dir.ldif\"\n[directory]\ndisabled_attribute = \"nsAccountLock\"\n[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
    )
    .expect("config");
    cfg
}

#[tokio::test]
async fn source_json_is_streamed_as_the_same_document_the_directory_serialises_to() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg_path = write_source_config(tmp.path(), 3);
    let o = bbsync(
        &[
            "source",
            "-c",
            cfg_path.to_str().expect("path"),
            "--output",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The document as `bbsync source` built it before it streamed: the whole directory
    // rendered to one string, then a newline.
    let cfg = bbsync::config::Config::load(&cfg_path).expect("config");
    let dir = bbsync::source::Source::new(&cfg.source, &cfg.directory)
        .read()
        .await
        .expect("read");
    assert!(dir.groups.len() == 3 && !dir.issues.is_empty() && dir.active_people() < 6);
    let whole = format!("{}\n", serde_json::to_string_pretty(&dir).expect("json"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), whole);
    // ... and it is the JSON of the same facts, field by field.
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(doc, serde_json::to_value(&dir).expect("value"));
    assert_eq!(doc["people"].as_object().map(|p| p.len()), Some(6));
}

#[tokio::test]
async fn source_json_to_a_reader_that_goes_away_ends_quietly() {
    // Like `bbsync source -c .. --output json | head -c 100` on a directory whose JSON is far
    // larger than the pipe's buffer.
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_source_config(tmp.path(), 3000);
    let mut child = Command::new(BIN)
        .args([
            "source",
            "-c",
            cfg.to_str().expect("path"),
            "--output",
            "json",
        ])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 100];
    tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut first)
        .await
        .expect("some output");
    assert!(first.starts_with(b"{\n  \"people\": {"));
    drop(stdout);
    let o = child.wait_with_output().await.expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

/// `bbsync source` reads an HR source as a run does: records without an account id resolve
/// through the workspace members by email; who no resolver found is listed as unresolved (by
/// email only). A stdout that cannot be written fails the command.
#[tokio::test]
async fn source_shows_what_an_hr_read_resolves_and_who_it_could_not() {
    let emu = start(seed(&["ann", "bob"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("people.csv"),
        "id,mail,state,dept\n1,ann@acme.test,Active,Eng\n2,BOB@acme.test,Active,Eng\n3,stranger@elsewhere.test,Active,Eng\n",
    )
    .expect("csv");
    let cfg = tmp.path().join("bbsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bitbucket]\nworkspace = \"acme\"\napi_url = \"{}\"\nmax_retries = 0\n[credentials.admin]\nkind = \"api_token\"\nemail = \"{ADMIN_EMAIL}\"\ntoken = \"{ADMIN_TOKEN}\"\n[source]\nkind = \"csv\"\npath = \"people.csv\"\nmax_missing_ratio = 0.5\n[source.fields]\nstable_id = \"id\"\nemail = \"mail\"\nstatus = \"state\"\n[source.attributes]\ndept = \"dept\"\n[[groups]]\nname = \"staff\"\ncreate = true\n[[groups.when]]\nattribute = \"dept\"\nequals = \"eng\"\n",
            emu.base_url()
        ),
    )
    .expect("config");
    let path = cfg.to_str().expect("path");
    let o = bbsync(&["source", "-c", path, "--output", "json"], &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let people = doc["people"].as_object().expect("people");
    assert!(
        people.contains_key(&acc("ann")) && people.contains_key(&acc("bob")),
        "{doc:#}"
    );
    assert_eq!(
        doc["unresolved"],
        serde_json::json!(["stranger@elsewhere.test"])
    );
    let o = bbsync(&["source", "-c", path], &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("2 people") && text(&o).contains("unresolved: 1 people"),
        "{}",
        text(&o)
    );
    // A full disk: the output is lost, and the exit code says so.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let err_path = tmp.path().join("stderr");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let status = Command::new(BIN)
        .args(["source", "-c", path, "--output", "json"])
        .env_remove("RUST_LOG")
        .stdout(full)
        .stderr(err_file)
        .status()
        .await
        .expect("run");
    let err = std::fs::read_to_string(&err_path).expect("stderr");
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(err.contains("cannot write to stdout"), "{err}");
}
