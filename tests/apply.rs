//! The applier's guards over real HTTP: the audit trail stops an apply it cannot record, a
//! group that could not be created takes its member adds and grants with it, a lost answer to
//! a group create is checked before anything is given up, a plan never touches the audit
//! file, and a refused BBQL filter falls back to the full repository listing.

mod common;

use bbsync::apply::{Outcome, OutcomeKind};
use bbsync::plan::{BlockReason, ChangeKind};
use bbsync::reconcile::Reconciler;
use bbsync_emulator::Fault;
use common::*;

fn blocked_kinds(r: &bbsync::reconcile::RunReport) -> Vec<(ChangeKind, &'static str)> {
    r.outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Blocked { reason } => Some((o.change.kind(), reason.label())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_plan_never_creates_or_opens_the_audit_file() {
    let emu = start(seed(&["ann"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\ncreate = true\n",
    );
    let trail = tmp.path().join("audit").join("trail.jsonl");
    cfg.audit_path = Some(trail.clone());
    let rec = Reconciler::new(cfg).expect("rec");
    let plan = rec.run(false).await.expect("plan");
    assert!(!plan.plan.is_empty());
    assert!(
        !tmp.path().join("audit").exists(),
        "a plan created the audit directory"
    );
    let applied = rec.run(true).await.expect("apply");
    assert!(applied.ok(), "{:#?}", applied.outcomes);
    // Acknowledged, then read back: the final record of each change says applied.
    let trail = std::fs::read_to_string(&trail).expect("the apply wrote the trail");
    let finals = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|r| r["outcome"]["result"] == "applied")
        .count();
    assert_eq!(finals, applied.outcomes.len(), "{trail}");
}

#[tokio::test]
async fn an_audit_trail_that_cannot_be_written_stops_the_apply() {
    let emu = start(seed(&["ann", "bob", "cid"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let people = [("ann", false), ("bob", false), ("cid", false)];
    let mut cfg = config(
        &emu,
        tmp.path(),
        &ldif(&people, &[("eng", &["ann", "bob", "cid"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\ncreate = true\n",
    );
    // Every write to /dev/full fails with ENOSPC: a full disk.
    cfg.audit_path = Some("/dev/full".into());
    cfg.offboarding.state_dir = Some(tmp.path().join("state"));
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(!report.ok());
    // The group create's intent could not be written ahead, so it was not sent; nor was
    // anything after it.
    assert!(
        writes(&emu).is_empty(),
        "changes were sent without their audit intent: {:?}",
        writes(&emu)
    );
    assert_eq!(report.count(OutcomeKind::Applied), 0);
    assert_eq!(
        blocked_kinds(&report),
        [
            (ChangeKind::CreateGroup, "audit_unavailable"),
            (ChangeKind::AddMember, "group_not_created"),
            (ChangeKind::AddMember, "group_not_created"),
            (ChangeKind::AddMember, "group_not_created"),
        ]
    );
}

#[tokio::test]
async fn a_group_that_could_not_be_created_takes_its_member_adds_and_grants_with_it() {
    let mut s = seed(&["ann", "bob"]);
    add_repos(&mut s, "DATA", "data", 3);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false), ("bob", false)], &[("data", &["ann", "bob"])]),
        "[[groups]]\nname = \"Data Team\"\nfrom = [\"data\"]\ncreate = true\n[[grants]]\ngroup = \"data-team\"\npermission = \"write\"\nprojects = [\"DATA\"]\n",
    );
    emu.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/1.0/groups/acme".into(),
        status: 400,
        body: "Invalid group name".into(),
        ..Fault::default()
    });
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
    let mut blocked = blocked_kinds(&report);
    blocked.sort();
    assert_eq!(
        blocked,
        [
            (ChangeKind::AddMember, "group_not_created"),
            (ChangeKind::AddMember, "group_not_created"),
            (ChangeKind::SetGrant, "group_not_created"),
            (ChangeKind::SetGrant, "group_not_created"),
            (ChangeKind::SetGrant, "group_not_created"),
        ]
    );
    assert_eq!(
        writes(&emu),
        ["POST /1.0/groups/acme -> 400"],
        "grants or adds for a group that does not exist were sent"
    );
    let reason = report
        .outcomes
        .iter()
        .find_map(|o| match &o.outcome {
            Outcome::Blocked { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("a blocked change");
    assert!(
        matches!(&reason, BlockReason::GroupNotCreated { group, why } if group.as_str() == "data-team" && why.contains("400")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_group_create_whose_answer_was_lost_is_found_and_its_members_added() {
    let emu = start(seed(&["ann"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("data", &["ann"])]),
        "[[groups]]\nname = \"Data Team\"\nfrom = [\"data\"]\ncreate = true\n",
    );
    // The create happens, but the answer is a gateway error.
    emu.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/1.0/groups/acme".into(),
        status: 502,
        body: "Bad Gateway".into(),
        times: Some(1),
        after_serving: true,
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(report.count(OutcomeKind::Applied), 2);
    let state = emu.state();
    let data = state
        .groups
        .iter()
        .find(|g| g.name == "Data Team")
        .expect("group exists");
    assert_eq!(data.members, [acc("ann")]);
    assert_eq!(
        writes(&emu)
            .iter()
            .filter(|w| w.starts_with("POST"))
            .count(),
        1,
        "the create was not sent twice"
    );
}

#[tokio::test]
async fn when_bbql_is_refused_the_full_repository_listing_is_read_instead() {
    let mut s = seed(&["kim"]);
    add_repos(&mut s, "PROJ", "proj", 3);
    add_repos(&mut s, "OTHER", "other", 2);
    s.groups.push(group("Contractors", &["kim"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("kim", false)], &[("contractors", &["kim"])]),
        "[[groups]]\nname = \"Contractors\"\nfrom = [\"contractors\"]\n[[grants]]\ngroup = \"contractors\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n",
    );
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "q=".into(),
        status: 400,
        body: r#"{"type":"error","error":{"message":"Invalid field name 'project.key'"}}"#.into(),
        content_type: Some("application/json".into()),
        ..Fault::default()
    });
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect("plan despite the refused filter");
    assert_eq!(report.repositories_in_scope, 3);
    assert_eq!(report.plan.changes.len(), 3, "{:#?}", report.plan);
    let listings: Vec<String> = emu
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/2.0/repositories/acme"))
        .map(|r| format!("{} {}", r.status, r.path.contains("q=")))
        .collect();
    assert_eq!(listings, ["400 true", "200 false"]);
}

#[tokio::test]
async fn a_blocked_group_create_blocks_its_member_adds_with_the_reason() {
    use bbsync::apply::{audit::Audit, Applier};
    use bbsync::config::GrantWrites;
    use bbsync::model::{AccountId, GroupSlug};
    use bbsync::plan::{Change, Plan, Planned, Reason};

    let emu = start(seed(&["ann"])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[], &[]),
        "[[groups]]\nname = \"Ops\"\nfrom = [\"x\"]\n",
    );
    let clients = bbsync::reconcile::clients_for(&cfg).expect("clients");
    let ops = GroupSlug::from_name("ops");
    let plan = Plan {
        changes: vec![
            Planned {
                change: Change::CreateGroup {
                    group: ops.clone(),
                    name: "Ops".into(),
                },
                reason: Reason::Rule {
                    rule: "groups[0]".into(),
                    detail: "t".into(),
                },
                blocked: Some(BlockReason::SafetyGuard {
                    guard: bbsync::plan::Guard::Absolute {
                        revocations: 9,
                        limit: 1,
                    },
                }),
            },
            Planned {
                change: Change::AddMember {
                    group: ops.clone(),
                    account_id: AccountId::parse(&acc("ann")).expect("id"),
                    display_name: "Ann".into(),
                },
                reason: Reason::Rule {
                    rule: "groups[0]".into(),
                    detail: "t".into(),
                },
                blocked: None,
            },
        ],
        ..Plan::default()
    };
    let out = Applier {
        clients: &clients,
        members: &clients.v1_groups(),
        org: None,
        grant_writes: GrantWrites::PermissionsConfig,
        audit: &Audit::to_log(),
        run_id: "t",
        settings: bbsync::config::ApplySettings::default(),
        stop: None,
    }
    .apply(&plan)
    .await;
    match &out[1].outcome {
        Outcome::Blocked {
            reason: BlockReason::GroupNotCreated { group, why },
        } => {
            assert_eq!(group, &ops);
            assert!(why.contains("safety.max_removals"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
}
