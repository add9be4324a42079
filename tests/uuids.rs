//! Members' UUIDs for 1.0 membership writes, over real HTTP against the emulator: a person the
//! group read did not name is found by single member lookups when the adds are few and by the
//! paged member listing when they are many, chosen by count; a 404 on a single lookup is "not a
//! workspace member", any other failure is a failure (nothing is guessed).

mod common;

use bbsync::apply::{audit::Audit, Applier, Outcome, OutcomeKind};
use bbsync::config::GrantWrites;
use bbsync::model::{AccountId, GroupSlug};
use bbsync::plan::{BlockReason, Change, Plan, Planned, Reason, SkipReason};
use bbsync::reconcile::{Reconciler, RunError};
use bbsync_emulator::{Emulator, Fault};
use common::*;

const LISTING: &str = "GET /2.0/workspaces/{ws}/members";
const SINGLE: &str = "GET /2.0/workspaces/{ws}/members/{member}";

fn count(emu: &Emulator, route: &str) -> u64 {
    emu.request_counts().get(route).copied().unwrap_or(0)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i:03}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Config for a directory whose `staff` group holds every one of `wanted`, and a rule that
/// makes it the Bitbucket group `Staff`.
fn staff(emu: &Emulator, dir: &std::path::Path, wanted: &[&str]) -> bbsync::config::Config {
    let people: Vec<(&str, bool)> = wanted.iter().map(|p| (*p, false)).collect();
    config(
        emu,
        dir,
        &ldif(&people, &[("staff", wanted)]),
        "[[groups]]\nname = \"Staff\"\nfrom = [\"staff\"]\n",
    )
}

/// A workspace of `people` (and its admin) whose group `Staff` holds the first `in_group`.
async fn workspace(people: &[&str], in_group: usize) -> Emulator {
    let mut s = seed(people);
    s.groups.push(group("Staff", &people[..in_group]));
    start(s).await
}

fn staff_members(emu: &Emulator) -> usize {
    emu.state()
        .groups
        .iter()
        .find(|g| g.name == "Staff")
        .map_or(0, |g| g.members.len())
}

#[tokio::test]
async fn three_new_hires_on_a_500_member_workspace_cost_three_single_lookups_and_no_listing_page() {
    let people = names(500);
    let emu = workspace(&refs(&people), 497).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rec = Reconciler::new(staff(&emu, tmp.path(), &refs(&people))).expect("rec");

    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(report.plan.changes.len(), 3, "{:#?}", report.plan.changes);
    assert_eq!(count(&emu, SINGLE), 3, "{:?}", emu.request_counts());
    assert_eq!(count(&emu, LISTING), 0, "{:?}", emu.request_counts());
    assert_eq!(staff_members(&emu), 500);
    // Each lookup named one of the new hires, by account id.
    let looked_up: Vec<String> = emu
        .requests()
        .into_iter()
        .filter(|r| r.route == "/2.0/workspaces/{ws}/members/{member}")
        .map(|r| r.path)
        .collect();
    for p in &people[497..] {
        assert!(
            looked_up.iter().any(|l| l.ends_with(&acc(p))),
            "{p}: {looked_up:?}"
        );
    }
}

#[tokio::test]
async fn two_hundred_new_hires_read_the_member_listing_once_and_look_nobody_up_singly() {
    let people = names(500);
    let emu = workspace(&refs(&people), 300).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rec = Reconciler::new(staff(&emu, tmp.path(), &refs(&people))).expect("rec");

    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(report.count(OutcomeKind::Applied), 200);
    // 501 members (the 500 and the admin), 100 a page.
    assert_eq!(count(&emu, LISTING), 6, "{:?}", emu.request_counts());
    assert_eq!(count(&emu, SINGLE), 0, "{:?}", emu.request_counts());
    assert_eq!(staff_members(&emu), 500);
}

#[tokio::test]
async fn a_new_hire_who_is_not_a_workspace_member_answers_404_and_is_skipped_not_failed() {
    let people = names(200);
    let emu = workspace(&refs(&people), 198).await;
    let tmp = tempfile::tempdir().expect("tmp");
    // The directory has one more person, whom the workspace does not know.
    let mut wanted = refs(&people);
    wanted.push("outsider");
    let rec = Reconciler::new(staff(&emu, tmp.path(), &wanted)).expect("rec");

    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(count(&emu, SINGLE), 3, "{:?}", emu.request_counts());
    assert_eq!(count(&emu, LISTING), 0, "{:?}", emu.request_counts());
    let skipped: Vec<_> = report
        .plan
        .skipped
        .iter()
        .filter(|s| {
            s.account_id
                .as_ref()
                .is_some_and(|a| a.as_str() == acc("outsider"))
        })
        .map(|s| s.reason.clone())
        .collect();
    assert_eq!(skipped, [SkipReason::NotWorkspaceMember]);
    assert_eq!(report.count(OutcomeKind::Applied), 2);
    assert_eq!(staff_members(&emu), 200);
    assert!(
        !writes(&emu).iter().any(|w| w.contains(&acc("outsider"))),
        "{:?}",
        writes(&emu)
    );
}

#[tokio::test]
async fn a_single_lookup_that_fails_fails_the_plan_and_nothing_is_written() {
    let people = names(200);
    let emu = workspace(&refs(&people), 197).await;
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: format!("/2.0/workspaces/acme/members/{}", acc("p198")),
        status: 500,
        body: "Internal Server Error".into(),
        ..Fault::default()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let rec = Reconciler::new(staff(&emu, tmp.path(), &refs(&people))).expect("rec");

    let e = rec.run(true).await.expect_err("the lookup failed");
    assert!(matches!(e, RunError::Read(_)), "{e}");
    assert!(e.to_string().contains("500"), "{e}");
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert_eq!(count(&emu, LISTING), 0, "{:?}", emu.request_counts());
    assert_eq!(staff_members(&emu), 197);
}

/// An apply of a plan that did not go through the run's check of who is a workspace member
/// (the backend has read no groups): each unknown person is looked up singly when their add is
/// sent; a 404 blocks that add, any other failure fails it, and the others are applied.
#[tokio::test]
async fn at_apply_an_unknown_person_is_looked_up_once_and_404_blocks_while_an_error_fails() {
    let emu = workspace(&["ann", "bob"], 0).await;
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: format!("/members/{}", acc("bob")),
        status: 503,
        body: "Service Unavailable".into(),
        ..Fault::default()
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = staff(&emu, tmp.path(), &[]);
    let clients = bbsync::reconcile::clients_for(&cfg).expect("clients");
    let add = |who: &str| Planned {
        change: Change::AddMember {
            group: GroupSlug::from_name("Staff"),
            account_id: AccountId::parse(&acc(who)).expect("id"),
            display_name: format!("Person {who}"),
        },
        reason: Reason::Rule {
            rule: "groups[0]".into(),
            detail: "t".into(),
        },
        blocked: None,
    };
    let plan = Plan {
        changes: vec![add("ann"), add("bob"), add("outsider")],
        ..Plan::default()
    };
    let audit = Audit::to_log();
    let members = clients.v1_groups();
    let out = Applier {
        clients: &clients,
        members: &members,
        org: None,
        grant_writes: GrantWrites::PermissionsConfig,
        audit: &audit,
        run_id: "t",
        settings: bbsync::config::ApplySettings::default(),
        stop: None,
    }
    .apply(&plan)
    .await;
    let outcome = |who: &str| {
        out.iter()
            .find(|o| matches!(&o.change, Change::AddMember { account_id, .. } if account_id.as_str() == acc(who)))
            .map(|o| o.outcome.clone())
            .expect("an outcome")
    };
    assert!(outcome("ann").is_done(), "{:?}", outcome("ann"));
    assert_eq!(
        outcome("outsider"),
        Outcome::Blocked {
            reason: BlockReason::NotWorkspaceMember
        }
    );
    match outcome("bob") {
        Outcome::Failed { error, .. } => {
            assert!(
                error.contains("cannot read the workspace members") && error.contains("503"),
                "{error}"
            )
        }
        other => panic!("bob: {other:?}"),
    }
    // One lookup each (bob's 503 is not retried: max_retries = 0), never the listing.
    assert_eq!(count(&emu, SINGLE), 3, "{:?}", emu.request_counts());
    assert_eq!(count(&emu, LISTING), 0, "{:?}", emu.request_counts());
    let st = emu.state();
    let staff = st.groups.iter().find(|g| g.name == "Staff").expect("Staff");
    assert_eq!(staff.members, [acc("ann")]);
}
