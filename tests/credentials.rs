//! Credentials per API family: what each kind may do, `bbsync check`, and plans that know
//! what the credentials cannot apply.

mod common;

use bbsync::apply::OutcomeKind;
use bbsync::bitbucket::ApiFamily;
use bbsync::check::{check, render, Verdict, WorkspaceKind};
use bbsync::config::Config;
use bbsync::reconcile::{clients_for, Reconciler};
use bbsync_emulator::{CredentialKind, Emulator, Seed, SeedCredential, SeedGroupGrant};
use common::*;

/// acme with ann and bob, Developers = [ann], two PROJ repos, developers read on proj-000, and
/// credentials of every kind.
fn world() -> Seed {
    let mut s = with_other_credentials(seed(&["ann", "bob"]), 7200);
    add_repos(&mut s, "PROJ", "proj", 2);
    s.groups.push(group("Developers", &["ann"]));
    s.group_grants.push(SeedGroupGrant {
        repo: "proj-000".into(),
        group: "developers".into(),
        permission: "read".into(),
    });
    s.credentials.push(SeedCredential {
        id: "no-delete".into(),
        kind: CredentialKind::ApiToken,
        email: Some("admin@acme.test".into()),
        token: Some("no-delete-token".into()),
        account_id: Some(acc("admin")),
        scopes: all_scopes()
            .into_iter()
            .filter(|s| s != "delete:permission:bitbucket")
            .collect(),
        ..Default::default()
    });
    s
}

const CREDENTIALS: &str = r#"
[credentials.admin]
kind = "api_token"
email = "admin@acme.test"
token = "admin-token"
[credentials.no-delete]
kind = "api_token"
email = "admin@acme.test"
token = "no-delete-token"
[credentials.ws-token]
kind = "access_token"
token = "access-token-1"
[credentials.consumer]
kind = "oauth"
client_id = "consumer-key"
client_secret = "consumer-secret"
"#;

const RULES: &str = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n";

/// `bitbucket` is extra TOML for the [bitbucket] table (credential, families).
fn config_with(emu: &Emulator, dir: &std::path::Path, bitbucket: &str) -> Config {
    std::fs::write(
        dir.join("dir.ldif"),
        ldif(
            &[("ann", false), ("bob", false)],
            &[("eng", &["ann", "bob"])],
        ),
    )
    .expect("ldif");
    let text = format!(
        "mode = \"apply\"\n[bitbucket]\nworkspace = \"acme\"\napi_url = \"{}\"\noauth_token_url = \"{}/site/oauth2/access_token\"\nmax_retries = 0\n{bitbucket}\n{CREDENTIALS}\n[source]\nkind = \"ldif\"\npath = \"dir.ldif\"\n[audit]\npath = \"audit.jsonl\"\n{RULES}",
        emu.base_url(),
        emu.base_url()
    );
    Config::from_toml_str(&text, "test.toml", dir).expect("valid config")
}

fn verdicts(r: &bbsync::check::CheckReport) -> Vec<(ApiFamily, &'static str)> {
    r.probes
        .iter()
        .map(|p| {
            (
                p.family,
                match p.verdict {
                    Verdict::Ok { .. } => "ok",
                    Verdict::Likely { .. } => "likely",
                    Verdict::Refused { .. } => "refused",
                    Verdict::NotProbed { .. } => "not-probed",
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn each_credential_kind_against_each_family_matches_the_api_sheet() {
    use ApiFamily::*;
    let emu = start(world()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let expect = |ok: &[ApiFamily]| -> Vec<(ApiFamily, &'static str)> {
        ApiFamily::ALL
            .into_iter()
            .map(|f| (f, if ok.contains(&f) { "ok" } else { "refused" }))
            .collect()
    };
    for (credential, allowed) in [
        ("admin", ApiFamily::ALL.to_vec()),
        ("ws-token", vec![MembersRead, RepositoriesRead]),
        (
            "consumer",
            vec![
                GroupsRead,
                GroupsWrite,
                MembersRead,
                GroupPrivilegesRead,
                GroupPrivilegesWrite,
                RepositoriesRead,
                PermissionsRead,
            ],
        ),
    ] {
        let cfg = config_with(&emu, tmp.path(), &format!("credential = \"{credential}\""));
        let clients = clients_for(&cfg).expect("clients");
        let report = check(&cfg, &clients, true).await;
        assert_eq!(
            verdicts(&report),
            expect(&allowed),
            "{credential}:\n{}",
            render(&report)
        );
    }
    // Nothing was changed by the write probes.
    let after = emu.state();
    assert_eq!(after.groups[0].members, vec![acc("ann")]);
    assert_eq!(after.group_grants.len(), 1);
    assert_eq!(after.group_grants[0].permission, "read");
}

#[tokio::test]
async fn check_passes_with_a_complete_set_and_names_a_missing_scope() {
    let emu = start(world()).await;
    let tmp = tempfile::tempdir().expect("tmp");

    let cfg = config_with(&emu, tmp.path(), "credential = \"admin\"");
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
    assert!(report.ok(), "{}", render(&report));
    // Told without writing: the 1.0 invitations listing answers on a classic workspace.
    assert_eq!(report.workspace_kind, WorkspaceKind::Classic);
    assert!(
        report.workspace_evidence.contains("invitations"),
        "{}",
        report.workspace_evidence
    );

    let cfg = config_with(
        &emu,
        tmp.path(),
        "credential = \"admin\"\n[bitbucket.families]\npermissions_write = \"no-delete\"",
    );
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
    let text = render(&report);
    assert!(!report.ok(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("2.0 permissions-config write"))
        .expect("row");
    assert!(
        line.contains("no-delete (api_token)") && line.contains("REFUSED"),
        "{text}"
    );
    assert!(line.contains("delete:permission:bitbucket"), "{text}");
    assert!(
        text.contains(
            "fix: create the API token of \"no-delete\" with scope(s) delete:permission:bitbucket"
        ),
        "{text}"
    );
    assert!(
        text.contains("consequence: bbsync cannot grant or revoke repository access of groups"),
        "{text}"
    );
}

#[tokio::test]
async fn an_oauth_only_setup_is_told_that_grants_need_an_api_token() {
    let emu = start(world()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config_with(&emu, tmp.path(), "credential = \"consumer\"");
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
    let text = render(&report);
    assert!(!report.ok(), "{text}");
    assert!(
        text.contains("permissions-config writes accept only an admin's Atlassian API token"),
        "{text}"
    );
    assert!(
        text.contains(
            "fix: serve it with a credential that may (bitbucket.families.permissions_write"
        ),
        "{text}"
    );
    assert!(
        text.contains("NOT possible: 2.0 permissions-config write"),
        "{text}"
    );
    // The OAuth consumer holds account:write, so 1.0 group writes are not ruled out.
    assert!(matches!(
        report.probe(ApiFamily::GroupsWrite).map(|p| &p.verdict),
        Some(Verdict::Likely { .. })
    ));
}

#[tokio::test]
async fn an_organisation_managed_workspace_is_detected_by_a_no_op_write() {
    let mut s = world();
    s.workspace.organisation_managed = true;
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config_with(&emu, tmp.path(), "credential = \"admin\"");
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), true).await;
    let text = render(&report);
    assert_eq!(
        report.workspace_kind,
        WorkspaceKind::OrganisationManaged,
        "{text}"
    );
    assert!(!report.ok(), "group writes are needed: {text}");
    assert!(matches!(
        report.probe(ApiFamily::GroupsWrite).map(|p| &p.verdict),
        Some(Verdict::Refused {
            status: Some(405),
            ..
        })
    ));
    // Grants still work through 2.0.
    assert!(matches!(
        report
            .probe(ApiFamily::PermissionsWrite)
            .map(|p| &p.verdict),
        Some(Verdict::Ok { .. })
    ));
    assert!(
        text.contains("organisation-managed: 1.0 groups and group-privileges are read-only"),
        "{text}"
    );
    // Without [admin_api] the membership writes could not be done, and check says how.
    assert!(
        text.contains("membership changes would be blocked") && text.contains("[admin_api]"),
        "{text}"
    );
    assert!(text.contains("Atlassian Admin API"), "{text}");
}

#[tokio::test]
async fn two_credentials_converge_where_one_alone_cannot() {
    let mut s = world();
    s.group_writes_require_oauth = true;
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");

    // The API token alone: grants apply, the member add is refused once and reported.
    let cfg = config_with(&emu, tmp.path(), "credential = \"admin\"");
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    assert_eq!(
        report.count(OutcomeKind::Failed),
        1,
        "{:#?}",
        report.outcomes
    );
    assert_eq!(
        report.count(OutcomeKind::Applied),
        2,
        "two grants: {:#?}",
        report.outcomes
    );
    assert!(!emu.state().groups[0].members.contains(&acc("bob")));

    // API token for grants and reads, OAuth consumer for 1.0 group writes: converges.
    emu.reset_requests();
    let cfg = config_with(
        &emu,
        tmp.path(),
        "credential = \"admin\"\n[bitbucket.families]\ngroups_write = \"consumer\"",
    );
    let rec = Reconciler::new(cfg).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(emu.state().groups[0].members.contains(&acc("bob")));
    for r in emu.requests() {
        // The consumer introduces itself once (scopes, workspace), then only writes members
        // (the 1.0 membership writes; looking a member up is a members_read call, the admin's).
        let writes_member =
            r.route.starts_with("/1.0/groups/") && r.route.ends_with("/members/{member}");
        let expected = if writes_member || r.route == "/2.0/user/workspaces" {
            "consumer"
        } else {
            "admin"
        };
        if r.route.starts_with("/site/oauth2") {
            continue;
        }
        assert_eq!(r.credential.as_deref(), Some(expected), "{r:?}");
    }
    assert!(report.api_requests_by_credential["consumer"] >= 1);
    assert!(rec.run(true).await.expect("again").plan.is_empty());
}

#[tokio::test]
async fn changes_the_credentials_cannot_make_are_blocked_before_sending_and_the_rest_applies() {
    let emu = start(world()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config_with(&emu, tmp.path(), "credential = \"consumer\"");
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    assert_eq!(
        report.count(OutcomeKind::Applied),
        1,
        "bob added: {:#?}",
        report.outcomes
    );
    assert_eq!(
        report.count(OutcomeKind::Blocked),
        2,
        "two grants: {:#?}",
        report.outcomes
    );
    let json = bbsync::report::json(&report);
    assert!(
        json.contains("permissions-config writes accept only an admin's Atlassian API token"),
        "{json}"
    );
    let human = bbsync::report::human(&report);
    assert!(
        human.contains("BLOCKED grant write on proj-001 to group developers"),
        "{human}"
    );
    assert!(
        !emu.requests()
            .iter()
            .any(|r| r.route.contains("permissions-config") && r.method == "PUT"),
        "a blocked change was sent"
    );
}

#[tokio::test]
async fn wrong_setups_are_told_exactly_what_to_fix() {
    let mut s = world();
    s.credentials.push(SeedCredential {
        id: "ann".into(),
        kind: CredentialKind::ApiToken,
        email: Some("ann@acme.test".into()),
        token: Some("ann-token".into()),
        account_id: Some(acc("ann")),
        scopes: all_scopes(),
        ..Default::default()
    });
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let extra = "[credentials.ann]\nkind = \"api_token\"\nemail = \"ann@acme.test\"\ntoken = \"ann-token\"\n[credentials.bearer]\nkind = \"access_token\"\ntoken = \"admin-token\"\n[credentials.bad-consumer]\nkind = \"oauth\"\nclient_id = \"consumer-key\"\nclient_secret = \"wrong\"";
    for (bitbucket, row, fix) in [
        // An API token declared as an access token goes out as Bearer: 401.
        (
            "credential = \"bearer\"",
            "1.0 groups read",
            "declare it kind = \"api_token\" with the account email",
        ),
        // A write-only OAuth consumer with a wrong secret is caught although it serves no read.
        (
            "credential = \"admin\"\n[bitbucket.families]\ngroups_write = \"bad-consumer\"",
            "1.0 groups write",
            "check the OAuth consumer's client_id and client_secret",
        ),
        // A token of someone who is not a workspace admin.
        (
            "credential = \"ann\"",
            "1.0 groups write",
            "an administrator of the workspace",
        ),
    ] {
        let cfg = with_extra_credentials(extra, &emu, tmp.path(), bitbucket);
        let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
        let out = render(&report);
        assert!(!report.ok(), "{bitbucket}:\n{out}");
        let refused = out
            .lines()
            .skip_while(|l| !l.starts_with(row))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            refused.contains("REFUSED") && refused.contains(fix),
            "{bitbucket}: want {fix:?} under {row:?}:\n{out}"
        );
    }

    // A wrong workspace slug: every family says to check bitbucket.workspace, naming the right one.
    let mut cfg = config_with(&emu, tmp.path(), "credential = \"admin\"");
    cfg.bitbucket.workspace = "acme-corp".into();
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
    let out = render(&report);
    assert!(
        out.contains("does not see workspace \"acme-corp\" (it sees: acme)"),
        "{out}"
    );
    assert!(out.contains("fix: check bitbucket.workspace"), "{out}");
}

/// A test config with extra credentials besides the usual ones.
fn with_extra_credentials(
    extra: &str,
    emu: &Emulator,
    dir: &std::path::Path,
    bitbucket: &str,
) -> Config {
    let text = format!(
        "mode = \"apply\"\n[bitbucket]\nworkspace = \"acme\"\napi_url = \"{0}\"\noauth_token_url = \"{0}/site/oauth2/access_token\"\nmax_retries = 0\n{bitbucket}\n{CREDENTIALS}\n{extra}\n[source]\nkind = \"ldif\"\npath = \"dir.ldif\"\n{RULES}",
        emu.base_url()
    );
    Config::from_toml_str(&text, "test.toml", dir).expect("valid config")
}

#[tokio::test]
async fn check_exit_codes_from_the_command_line() {
    let emu = start(world()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    for (bitbucket, code) in [
        ("credential = \"admin\"", 0),
        ("credential = \"consumer\"", 1),
    ] {
        let _ = config_with(&emu, tmp.path(), bitbucket);
        let text = format!(
            "[bitbucket]\nworkspace = \"acme\"\napi_url = \"{0}\"\noauth_token_url = \"{0}/site/oauth2/access_token\"\nmax_retries = 0\n{bitbucket}\n{CREDENTIALS}\n[source]\nkind = \"ldif\"\npath = \"dir.ldif\"\n{RULES}",
            emu.base_url()
        );
        let path = tmp.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bbsync"))
            .args(["check", "-c", path.to_str().expect("utf8")])
            .output()
            .await
            .expect("run");
        let shown = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{shown}");
        assert!(
            !shown.contains("consumer-secret") && !shown.contains("admin-token"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn check_passes_a_refused_1_0_listing_when_2_0_reads_answer_unless_1_0_is_configured() {
    let emu = start(world()).await;
    emu.inject_fault(bbsync_emulator::Fault {
        method: Some("GET".into()),
        family: Some("1.0 group-privileges read".into()),
        status: 405,
        body: "None".into(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config_with(&emu, tmp.path(), "credential = \"admin\"");
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
    let text = render(&report);
    assert!(report.ok(), "auto reads grants through 2.0 here: {text}");
    let v1 = report
        .probe(ApiFamily::GroupPrivilegesRead)
        .expect("probed");
    assert!(
        matches!(
            v1.verdict,
            Verdict::Refused {
                status: Some(405),
                ..
            }
        ) && !v1.needed
    );
    assert!(
        report
            .probe(ApiFamily::PermissionsRead)
            .expect("probed")
            .needed
    );

    let cfg = config_with(
        &emu,
        tmp.path(),
        "credential = \"admin\"\ngrant_reader = \"v1_group_privileges\"",
    );
    let report = check(&cfg, &clients_for(&cfg).expect("clients"), false).await;
    assert!(
        !report.ok(),
        "1.0 is the configured reader: {}",
        render(&report)
    );
}
