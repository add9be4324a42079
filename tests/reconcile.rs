//! Whole reconciles over real HTTP against the emulator.

mod common;

use bbsync::apply::OutcomeKind;
use bbsync::reconcile::{Reconciler, RunError};
use bbsync_emulator::SeedGroupGrant;
use common::*;

fn grant(repo: &str, group: &str, permission: &str) -> SeedGroupGrant {
    SeedGroupGrant {
        repo: repo.into(),
        group: group.into(),
        permission: permission.into(),
    }
}

#[tokio::test]
async fn contractors_get_write_on_all_100_repositories_of_proj_and_a_second_apply_writes_nothing() {
    let mut s = seed(&["kim", "lou"]);
    add_repos(&mut s, "PROJ", "proj", 100);
    add_repos(&mut s, "OTHER", "other", 5);
    s.groups.push(group("Contractors", &["kim", "lou"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("kim", false), ("lou", false)], &[("contractors", &["kim", "lou"])]),
        "[[groups]]\nname = \"Contractors\"\nfrom = [\"contractors\"]\n[[grants]]\ngroup = \"contractors\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n",
    );
    let rec = Reconciler::new(cfg).expect("reconciler");

    let first = rec.run(true).await.expect("first run");
    assert!(first.ok(), "{:#?}", first.outcomes);
    assert_eq!(first.count(OutcomeKind::Applied), 100);
    let state = emu.state();
    let granted: Vec<_> = state
        .group_grants
        .iter()
        .filter(|g| g.group == "contractors")
        .collect();
    assert_eq!(granted.len(), 100);
    assert!(granted
        .iter()
        .all(|g| g.repo.starts_with("proj-") && g.permission == "write"));
    let puts = writes(&emu);
    assert_eq!(puts.len(), 100);
    assert!(
        puts.iter()
            .all(|w| w.starts_with("PUT /2.0/repositories/acme/proj-")
                && w.contains("/permissions-config/groups/contractors")),
        "{puts:?}"
    );
    // Audit: every change ends applied (acknowledged, then read back).
    let audit = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("audit file");
    let finals = audit_finals(&audit);
    assert_eq!(finals.len(), 100);
    assert!(
        finals.iter().all(|r| r["outcome"]["result"] == "applied"),
        "{audit}"
    );

    emu.reset_requests();
    let second = rec.run(true).await.expect("second run");
    assert!(second.plan.is_empty(), "{:#?}", second.plan);
    assert!(
        writes(&emu).is_empty(),
        "second apply wrote: {:?}",
        writes(&emu)
    );
}

#[tokio::test]
async fn a_leaver_loses_every_managed_group_and_a_new_hire_is_added_by_uuid() {
    let mut s = seed(&["ann", "bob", "ivy"]);
    s.groups.push(group("Developers", &["ann", "bob"]));
    s.groups.push(group("Data Team", &["bob"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("bob", true), ("ivy", false)],
            &[("engineering", &["ann", "bob", "ivy"]), ("data", &["bob"])],
        ),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"engineering\"]\n[[groups]]\nname = \"Data Team\"\nfrom = [\"data\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    let ops: Vec<String> = report
        .plan
        .changes
        .iter()
        .map(|c| format!("{}: {}", c.change, c.reason))
        .collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(
        ops[0].starts_with("remove Person bob") && ops[0].contains("left the company"),
        "{ops:?}"
    );
    assert!(ops[1].starts_with("remove Person bob"), "{ops:?}");
    assert!(ops[2].starts_with("add Person ivy"), "{ops:?}");

    let state = emu.state();
    for g in &state.groups {
        assert!(!g.members.contains(&acc("bob")), "bob still in {}", g.name);
    }
    let devs = state
        .groups
        .iter()
        .find(|g| g.name == "Developers")
        .expect("devs");
    assert!(devs.members.contains(&acc("ivy")));
    // The add went out by braced UUID, never by account id.
    let add = writes(&emu)
        .into_iter()
        .find(|w| w.starts_with("PUT"))
        .expect("an add");
    assert!(add.contains("/members/%7B"), "{add}");
}

#[tokio::test]
async fn nothing_outside_the_managed_scope_is_ever_written() {
    let mut s = seed(&["ann", "kim", "zed"]);
    add_repos(&mut s, "PROJ", "proj", 3);
    add_repos(&mut s, "OPS", "ops", 3);
    s.groups.push(group("Contractors", &["kim"]));
    s.groups.push(group("Release Bots", &["zed"])); // unmanaged group with a member bbsync does not know
    s.group_grants = vec![
        grant("ops-000", "contractors", "read"), // managed group, repository out of scope
        grant("proj-000", "release-bots", "admin"), // repository in scope, group not managed
        grant("ops-001", "release-bots", "admin"), // neither
        grant("proj-001", "contractors", "admin"), // managed: admin -> write
    ];
    let before = {
        let emu = start(s.clone()).await;
        emu.state()
    };
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("kim", false)], &[("contractors", &["kim"])]),
        "[[groups]]\nname = \"Contractors\"\nfrom = [\"contractors\"]\n[[grants]]\ngroup = \"contractors\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    for w in writes(&emu) {
        assert!(
            w.contains("/proj-") && w.contains("/contractors"),
            "write outside the managed scope: {w}"
        );
    }
    let after = emu.state();
    let unmanaged = |st: &bbsync_emulator::Seed| {
        let mut v: Vec<String> = st
            .group_grants
            .iter()
            .filter(|g| g.group != "contractors" || g.repo.starts_with("ops-"))
            .map(|g| format!("{}:{}:{}", g.repo, g.group, g.permission))
            .collect();
        v.sort();
        let bots = st
            .groups
            .iter()
            .find(|g| g.name == "Release Bots")
            .map(|g| g.members.clone());
        (v, bots)
    };
    assert_eq!(unmanaged(&before), unmanaged(&after));
    assert!(after
        .group_grants
        .iter()
        .any(|g| g.repo == "proj-001" && g.group == "contractors" && g.permission == "write"));
}

#[tokio::test]
async fn reading_a_300_repo_20_group_workspace_costs_list_pages_not_objects() {
    let people: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let mut s = seed(&refs);
    add_repos(&mut s, "PROJ", "proj", 150);
    add_repos(&mut s, "WEB", "web", 150);
    for g in 0..20 {
        s.groups
            .push(group(&format!("team-{g:02}"), &refs[g * 3..g * 3 + 3]));
        for r in 0..10 {
            s.group_grants.push(grant(
                &format!("proj-{:03}", g * 7 + r),
                &format!("team-{g:02}"),
                "read",
            ));
        }
    }
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir_people: Vec<(&str, bool)> = refs.iter().map(|p| (*p, false)).collect();
    let groups: Vec<(String, Vec<&str>)> = (0..20)
        .map(|g| (format!("team-{g:02}"), refs[g * 3..g * 3 + 3].to_vec()))
        .collect();
    let group_refs: Vec<(&str, &[&str])> = groups
        .iter()
        .map(|(n, m)| (n.as_str(), m.as_slice()))
        .collect();
    let mut rules = String::new();
    for g in 0..20 {
        rules.push_str(&format!(
            "[[groups]]\nname = \"team-{g:02}\"\nfrom = [\"team-{g:02}\"]\n"
        ));
        rules.push_str(&format!(
            "[[grants]]\ngroup = \"team-{g:02}\"\npermission = \"read\"\nglobs = [\"proj-*\"]\n"
        ));
    }
    let cfg = config(&emu, tmp.path(), &ldif(&dir_people, &group_refs), &rules);
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect("plan");
    assert_eq!(report.repositories_in_scope, 150);
    let counts = emu.request_counts();
    let total: u64 = counts.values().sum();
    // 1 groups call + 1 group-privileges call + 3 pages of 100 repositories.
    assert_eq!(
        counts.get("GET /1.0/groups/{ws}").copied(),
        Some(1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("GET /1.0/group-privileges/{ws}").copied(),
        Some(1),
        "{counts:?}"
    );
    assert_eq!(total, 5, "{counts:?}");
    assert_eq!(report.api_requests, 5);
}

#[tokio::test]
async fn dry_run_plans_but_never_writes() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect("plan");
    assert_eq!(report.plan.changes.len(), 1);
    assert!(report.outcomes.is_empty());
    assert!(writes(&emu).is_empty());
}

#[tokio::test]
async fn a_broken_directory_changes_nothing_and_costs_no_write() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n";

    // Truncated mid-entry: a line that is not LDIF.
    let cfg = config(
        &emu,
        tmp.path(),
        "dn: uid=ann,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\natlassianAcc",
        rules,
    );
    let err = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect_err("must fail");
    assert!(matches!(err, RunError::Source(_)), "{err}");
    assert!(err.to_string().contains("directory.ldif:3"), "{err}");

    // Empty export.
    let cfg = config(&emu, tmp.path(), "", rules);
    let err = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect_err("must fail");
    assert!(matches!(err, RunError::Source(_)), "{err}");

    // The mapped group was renamed in the directory: an error, not "everyone left".
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("engineering", &["ann"])]),
        rules,
    );
    let err = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect_err("must fail");
    assert!(matches!(err, RunError::Mapping(_)), "{err}");
    assert!(err.to_string().contains("\"eng\""), "{err}");

    assert!(
        emu.requests().is_empty(),
        "Bitbucket was called: {:?}",
        emu.requests()
    );
    assert!(emu.state().groups[0].members.contains(&acc("ann")));
}

#[tokio::test]
async fn too_many_removals_hold_back_every_revocation_and_fail_the_run() {
    let people: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let mut s = seed(&refs);
    s.groups.push(group("Developers", &refs));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("p0", false)], &[("eng", &["p0"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[safety]\nmax_removals = 5\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    assert_eq!(report.count(OutcomeKind::Blocked), 9);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert_eq!(emu.state().groups[0].members.len(), 10);
}

#[tokio::test]
async fn on_an_organisation_managed_workspace_group_writes_are_blocked_up_front_with_the_fix() {
    let mut s = seed(&["ann", "bob", "cid"]);
    s.workspace.organisation_managed = true;
    s.groups.push(group("Developers", &[]));
    add_repos(&mut s, "PROJ", "proj", 2);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false), ("bob", false), ("cid", false)], &[("eng", &["ann", "bob", "cid"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"read\"\nprojects = [\"PROJ\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    // No [admin_api]: the invitations listing (off, 405) told the kind before any write; the
    // three adds are blocked with the fix and never sent, the grants applied via 2.0.
    assert_eq!(
        report.count(OutcomeKind::Failed),
        0,
        "{:#?}",
        report.outcomes
    );
    assert_eq!(report.count(OutcomeKind::Blocked), 3);
    assert_eq!(report.count(OutcomeKind::Applied), 2);
    assert!(report.membership_backend.blocked.is_some());
    for p in report
        .plan
        .changes
        .iter()
        .filter(|p| p.change.is_membership())
    {
        let why = p
            .blocked
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default();
        assert!(
            why.contains("organisation-managed") && why.contains("[admin_api]"),
            "{why}"
        );
    }
    assert_eq!(
        writes(&emu).iter().filter(|w| w.contains("/1.0/")).count(),
        0
    );
}

/// What a 1.0 group write answers on an organisation-managed workspace names the Admin API:
/// with the detection unable to tell (the invitations listing fails), the first write learns it.
#[tokio::test]
async fn a_405_on_a_group_write_names_the_admin_api_and_blocks_the_rest() {
    let mut s = seed(&["ann", "bob", "cid"]);
    s.workspace.organisation_managed = true;
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    emu.inject_fault(bbsync_emulator::Fault {
        method: Some("GET".into()),
        path_contains: "/invitations".into(),
        status: 503,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("bob", false), ("cid", false)],
            &[("eng", &["ann", "bob", "cid"])],
        ),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(
        report.membership_backend.reason.contains("could not tell"),
        "{:?}",
        report.membership_backend
    );
    assert_eq!(
        report.count(OutcomeKind::Failed),
        1,
        "{:#?}",
        report.outcomes
    );
    assert_eq!(report.count(OutcomeKind::Blocked), 2);
    let failed = report
        .outcomes
        .iter()
        .find_map(|o| match &o.outcome {
            bbsync::apply::Outcome::Failed { error, status } => Some((error.clone(), *status)),
            _ => None,
        })
        .expect("a failure");
    assert_eq!(failed.1, Some(405));
    assert!(
        failed.0.contains("organisation-managed") && failed.0.contains("admin_api"),
        "{}",
        failed.0
    );
}

#[tokio::test]
async fn creating_a_group_that_already_exists_counts_as_done() {
    use bbsync::apply::{audit::Audit, Applier, Outcome};
    use bbsync::config::GrantWrites;
    use bbsync::model::GroupSlug;
    use bbsync::plan::{Change, Plan, Planned, Reason};

    let mut s = seed(&[]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[], &[]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
    );
    let clients = bbsync::reconcile::clients_for(&cfg).expect("clients");
    let plan = Plan {
        changes: vec![Planned {
            change: Change::CreateGroup {
                group: GroupSlug::from_name("developers"),
                name: "Developers".into(),
            },
            reason: Reason::Rule {
                rule: "groups[0]".into(),
                detail: "t".into(),
            },
            blocked: None,
        }],
        ..Plan::default()
    };
    let audit = Audit::to_log();
    let out = Applier {
        clients: &clients,
        members: &clients.v1_groups(),
        org: None,
        grant_writes: GrantWrites::PermissionsConfig,
        audit: &audit,
        run_id: "t",
        settings: bbsync::config::ApplySettings::default(),
        stop: None,
    }
    .apply(&plan)
    .await;
    assert_eq!(out[0].outcome, Outcome::AlreadyDone);
    assert_eq!(emu.state().groups.len(), 1);
}

#[tokio::test]
async fn both_grant_state_readers_see_the_same_group_grants() {
    use bbsync::bitbucket::{ApiFamily, GrantState, PermissionsConfigGrants, V1GroupPrivileges};
    use bbsync::model::RepoSlug;

    let mut s = seed(&[]);
    add_repos(&mut s, "PROJ", "proj", 4);
    s.groups.push(group("Contractors", &[]));
    s.groups.push(group("Release Bots", &[]));
    s.group_grants = vec![
        grant("proj-000", "contractors", "write"),
        grant("proj-001", "contractors", "read"),
        grant("proj-001", "release-bots", "admin"),
        grant("proj-003", "release-bots", "read"),
    ];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[], &[]),
        "[[groups]]\nname = \"X\"\nfrom = [\"x\"]\n",
    );
    let clients = bbsync::reconcile::clients_for(&cfg).expect("clients");
    let repos: Vec<RepoSlug> = (0..4)
        .map(|i| RepoSlug::new(&format!("proj-{i:03}")))
        .collect();

    let v1 = V1GroupPrivileges(clients.shared(ApiFamily::GroupPrivilegesRead));
    let v2 = PermissionsConfigGrants(clients.shared(ApiFamily::PermissionsRead));
    emu.reset_requests();
    let from_v1 = v1.read(&repos).await.expect("1.0");
    assert_eq!(emu.requests().len(), 1, "one call for the whole workspace");
    emu.reset_requests();
    let from_v2 = v2.read(&repos).await.expect("2.0");
    assert_eq!(emu.requests().len(), 4, "one listing per repository");
    assert_eq!(from_v1.len(), 4);
    assert_eq!(from_v1, from_v2);
}

#[tokio::test]
async fn a_token_that_may_grant_but_not_delete_applies_the_grant_and_holds_the_removal() {
    let mut s = seed(&["ann"]);
    add_repos(&mut s, "PROJ", "proj", 2);
    s.groups.push(group("Contractors", &[]));
    s.groups.push(group("Auditors", &[]));
    s.group_grants = vec![grant("proj-001", "auditors", "read")];
    s.credentials[0]
        .scopes
        .retain(|sc| sc != "delete:permission:bitbucket");
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[]),
        "[[grants]]\ngroup = \"contractors\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n[[grants]]\ngroup = \"auditors\"\npermission = \"read\"\nrepos = [\"proj-000\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    let blocked: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            bbsync::apply::Outcome::Blocked { reason } => Some(format!(
                "{} {}: {reason}",
                o.change.kind().label(),
                reason.label()
            )),
            _ => None,
        })
        .collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert!(
        blocked[0].starts_with("remove_grant credential_cannot")
            && blocked[0].contains("delete:permission:bitbucket"),
        "{blocked:?}"
    );
    assert_eq!(
        report.count(OutcomeKind::Applied),
        3,
        "{:#?}",
        report.outcomes
    );
    assert!(
        !emu.requests().iter().any(|r| r.method == "DELETE"),
        "the removal was sent"
    );
}

#[tokio::test]
async fn an_entry_with_a_malformed_id_never_makes_its_member_look_gone() {
    let mut s = seed(&["ann", "bob", "cid"]);
    s.groups.push(group("Developers", &["ann", "bob", "cid"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    // bob's entry carries a mistyped id; cid has no entry at all (vanished).
    let text = format!(
        "{}dn: uid=bob,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nmail: BOB@acme.test\natlassianAccountId: 557058:bob\n\ndn: cn=eng,ou=groups,dc=acme,dc=test\nobjectClass: groupOfNames\ncn: eng\nmember: uid=ann,ou=people,dc=acme,dc=test\nmember: uid=bob,ou=people,dc=acme,dc=test\n",
        ldif(&[("ann", false)], &[])
    );
    let cfg = config(
        &emu,
        tmp.path(),
        &text,
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    let state = emu.state();
    let devs = &state
        .groups
        .iter()
        .find(|g| g.name == "Developers")
        .expect("group")
        .members;
    assert!(
        devs.contains(&acc("bob")),
        "bob was taken for gone: {devs:?}"
    );
    assert!(!devs.contains(&acc("cid")), "cid has no entry: removed");
    assert_eq!(report.plan.changes.len(), 1, "{:#?}", report.plan);
    assert!(report
        .source
        .issues
        .iter()
        .any(|i| i.dn.starts_with("uid=bob") && i.problem.contains("malformed")));
    let lookups: Vec<String> = emu
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("user.email"))
        .map(|r| r.path)
        .collect();
    assert_eq!(lookups.len(), 1, "{lookups:?}");
}

/// A workspace for the grant-reader tests: `repos` repositories in PROJ, groups Contractors
/// and Auditors (small), and grants that leave work to plan: one to raise, one to remove,
/// one missing, and one on an unmanaged repository.
fn grant_workspace(repos: usize) -> bbsync_emulator::Seed {
    let mut s = seed(&["kim"]);
    add_repos(&mut s, "PROJ", "proj", repos);
    add_repos(&mut s, "OTHER", "other", 2);
    s.groups.push(group("Contractors", &["kim"]));
    s.groups.push(group("Auditors", &[]));
    s.group_grants = vec![
        grant("proj-000", "contractors", "read"),
        grant("proj-001", "contractors", "write"),
        grant("proj-001", "auditors", "admin"),
        grant("other-000", "auditors", "admin"),
    ];
    s
}

const CONTRACTORS_WRITE_PROJ: &str =
    "[[grants]]\ngroup = \"contractors\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n[[grants]]\ngroup = \"auditors\"\npermission = \"read\"\nrepos = [\"proj-002\"]\n";

/// Bitbucket's answer to the 1.0 listing on a workspace where it is switched off.
fn refuse_v1_listing(emu: &bbsync_emulator::Emulator) {
    emu.inject_fault(bbsync_emulator::Fault {
        method: Some("GET".into()),
        family: Some("1.0 group-privileges read".into()),
        status: 405,
        body: "None".into(),
        ..Default::default()
    });
}

/// A plan (nothing applied) of `emu` with kim in the directory and [`CONTRACTORS_WRITE_PROJ`].
async fn plan_kim_contractors(
    emu: &bbsync_emulator::Emulator,
) -> Result<bbsync::reconcile::RunReport, bbsync::reconcile::RunError> {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        emu,
        tmp.path(),
        &ldif(&[("kim", false)], &[]),
        CONTRACTORS_WRITE_PROJ,
    );
    Reconciler::new(cfg).expect("rec").run(false).await
}

fn changes(report: &bbsync::reconcile::RunReport) -> String {
    serde_json::to_string_pretty(&report.plan.changes).expect("json")
}

#[tokio::test]
async fn a_workspace_whose_1_0_listing_is_refused_plans_the_same_through_2_0() {
    use bbsync::reconcile::grant_reader::{Reader, Why};
    let (classic, refusing) = (
        start(grant_workspace(5)).await,
        start(grant_workspace(5)).await,
    );
    refuse_v1_listing(&refusing);
    let plan = plan_kim_contractors;
    let via_v1 = plan(&classic).await.expect("plan via 1.0");
    let via_v2 = plan(&refusing).await.expect("plan via 2.0, not a failure");

    assert_eq!(changes(&via_v1), changes(&via_v2));
    assert_eq!(via_v1.plan.changes.len(), 6, "{}", changes(&via_v1));
    let v1 = via_v1.grant_reader.as_ref().expect("grants read");
    assert_eq!(
        (v1.reader, &v1.why),
        (Reader::V1GroupPrivileges, &Why::Cheaper)
    );
    assert_eq!(v1.requests, 1);
    let v2 = via_v2.grant_reader.as_ref().expect("grants read");
    assert_eq!(v2.reader, Reader::V2PermissionsConfig);
    assert!(
        matches!(&v2.why, Why::Refused { status: 405, message } if message.contains("GET /1.0/group-privileges/acme answered HTTP 405")),
        "{:?}",
        v2.why
    );
    assert_eq!(
        v2.requests,
        1 + 5,
        "the refused listing, then one page per repository"
    );
    let counts = refusing.request_counts();
    assert_eq!(
        counts
            .get("GET /2.0/repositories/{ws}/{repo}/permissions-config/groups")
            .copied(),
        Some(5),
        "{counts:?}"
    );

    let human = bbsync::report::human(&via_v2);
    assert!(
        human.contains("Grants: read through 2.0 permissions-config (6 request(s)): auto: 1.0 group-privileges was refused (GET /1.0/group-privileges/acme answered HTTP 405"),
        "{human}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&bbsync::report::json(&via_v2)).expect("json");
    assert_eq!(json["grant_reader"]["reader"], "v2_permissions_config");
    assert_eq!(json["grant_reader"]["why"]["kind"], "refused");
    assert_eq!(json["grant_reader"]["why"]["status"], 405);
    assert_eq!(json["grant_reader"]["requests"], 6);
}

#[tokio::test]
async fn without_a_credential_that_may_read_2_0_a_refused_listing_fails_the_plan_naming_the_key() {
    let mut s = with_other_credentials(grant_workspace(3), 7200);
    s.credentials.retain(|c| c.id != "consumer");
    let emu = start(s).await;
    refuse_v1_listing(&emu);
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("kim", false)], &[]),
        CONTRACTORS_WRITE_PROJ,
    );
    cfg.credentials.insert(
        "ws".into(),
        bbsync::config::Credential::AccessToken {
            token: bbsync::config::Secret::new("access-token-1"),
        },
    );
    cfg.bitbucket
        .families
        .insert(bbsync::bitbucket::ApiFamily::PermissionsRead, "ws".into());
    let e = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect_err("no 2.0 reader");
    let msg = e.to_string();
    assert!(
        msg.contains("GET /1.0/group-privileges/acme answered HTTP 405")
            && msg.contains("2.0 permissions-config cannot replace it: credential \"ws\" (access_token) serves permissions_read"),
        "{msg}"
    );
    assert!(e.is_config(), "exit code 2: the configuration must change");
    assert_eq!(e.metric_label(), "config");
    assert!(writes(&emu).is_empty());
    assert_eq!(
        emu.request_counts()
            .get("GET /2.0/repositories/{ws}/{repo}/permissions-config/groups"),
        None,
        "no 2.0 read was attempted"
    );
}

#[tokio::test]
async fn a_configured_1_0_reader_does_not_fall_back_and_says_what_would() {
    let emu = start(grant_workspace(3)).await;
    refuse_v1_listing(&emu);
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("kim", false)], &[]),
        CONTRACTORS_WRITE_PROJ,
    );
    cfg.bitbucket.grant_reader = bbsync::config::GrantReader::V1GroupPrivileges;
    let e = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("bitbucket.grant_reader = \"v1_group_privileges\" allows no other reader; \"auto\" reads through 2.0 permissions-config"),
        "{e}"
    );
    assert!(e.is_config());
}

/// Only a refusal (403/404/405) hands the read to the other reader: a 5xx or a cut body on the
/// chosen one fails the run (the other reader would not make the same workspace's answer more
/// complete), and nothing is asked of 2.0.
#[tokio::test]
async fn a_chosen_reader_that_fails_otherwise_than_by_refusal_fails_the_plan_without_falling_back()
{
    for (what, fault) in [
        (
            "503",
            bbsync_emulator::Fault {
                method: Some("GET".into()),
                family: Some("1.0 group-privileges read".into()),
                status: 503,
                body: "Service Unavailable".into(),
                ..Default::default()
            },
        ),
        (
            "a cut body",
            bbsync_emulator::Fault {
                method: Some("GET".into()),
                family: Some("1.0 group-privileges read".into()),
                kind: bbsync_emulator::FaultKind::Truncated,
                ..Default::default()
            },
        ),
    ] {
        let emu = start(grant_workspace(5)).await;
        emu.inject_fault(fault);
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = config(
            &emu,
            tmp.path(),
            &ldif(&[("kim", false)], &[]),
            CONTRACTORS_WRITE_PROJ,
        );
        assert_eq!(
            cfg.bitbucket.grant_reader,
            bbsync::config::GrantReader::Auto
        );
        let e = Reconciler::new(cfg)
            .expect("rec")
            .run(false)
            .await
            .expect_err(what);
        assert!(
            e.to_string().contains("/1.0/group-privileges/acme"),
            "{what}: {e}"
        );
        assert!(!e.is_config(), "{what}: not a configuration error: {e}");
        let counts = emu.request_counts();
        assert!(
            counts
                .get("GET /1.0/group-privileges/{ws}")
                .copied()
                .unwrap_or(0)
                >= 1,
            "{what}: {counts:?}"
        );
        assert_eq!(
            counts
                .get("GET /2.0/repositories/{ws}/{repo}/permissions-config/groups")
                .copied(),
            None,
            "{what}: no 2.0 read after a failure that is not a refusal"
        );
        assert!(writes(&emu).is_empty(), "{what}");
    }
}

#[tokio::test]
async fn auto_reads_3_managed_repositories_through_2_0_and_many_through_1_0() {
    use bbsync::reconcile::grant_reader::{Reader, Why};
    // 5 groups of 2,200 people: a 1.0 listing of at least 3.9 MB, worth 4 requests.
    let people: Vec<String> = (0..2200).map(|i| format!("u{i:04}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let workspace = |repos: usize| {
        let mut s = grant_workspace(repos);
        s.users.extend(seed(&refs).users.into_iter().skip(1));
        for g in 0..5 {
            s.groups.push(group(&format!("Team {g}"), &refs));
        }
        s
    };
    let run = plan_kim_contractors;

    let few = start(workspace(3)).await;
    let report = run(&few).await.expect("plan");
    let read = report.grant_reader.as_ref().expect("grants read");
    assert_eq!(
        (read.reader, &read.why),
        (Reader::V2PermissionsConfig, &Why::Cheaper)
    );
    let e = read.estimate.as_ref().expect("auto estimates");
    assert_eq!(
        (e.managed_repositories, e.v2_requests, e.v1_requests),
        (3, 3, 4)
    );
    assert_eq!(read.requests, 3);
    let counts = few.request_counts();
    assert_eq!(
        counts.get("GET /1.0/group-privileges/{ws}"),
        None,
        "{counts:?}"
    );
    let human = bbsync::report::human(&report);
    assert!(
        human.contains("Grants: read through 2.0 permissions-config (3 request(s)): auto: 3 managed repositories cost 2.0 3 request(s); the 1.0 listing is estimated at 3.9 MB"),
        "{human}"
    );

    let many = start(workspace(40)).await;
    let report_many = run(&many).await.expect("plan");
    let read = report_many.grant_reader.as_ref().expect("grants read");
    assert_eq!(
        (read.reader, &read.why),
        (Reader::V1GroupPrivileges, &Why::Cheaper)
    );
    assert_eq!(read.requests, 1);
    assert!(
        bbsync::report::human(&report_many)
            .contains("Grants: read through 1.0 group-privileges (1 request(s)): auto: 40 managed repositories cost 2.0 40 request(s)"),
        "{}",
        bbsync::report::human(&report_many)
    );
    // The same rules plan the same changes on the repositories both workspaces share.
    let shared = |r: &bbsync::reconcile::RunReport| {
        r.plan
            .changes
            .iter()
            .map(|c| c.change.to_string())
            .filter(|c| {
                ["proj-000", "proj-001", "proj-002"]
                    .iter()
                    .any(|p| c.contains(p))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shared(&report), shared(&report_many));
}
