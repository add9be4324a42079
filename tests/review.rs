//! Reviewed plans and approvals over real HTTP: a held guard keeps holding until a person
//! approves exactly that set; the approval releases it once; a reviewed plan is refused, with
//! nothing written, when the directory or Bitbucket moved.

mod common;

use bbsync::apply::OutcomeKind;
use bbsync::reconcile::{Reconciler, RunError};
use bbsync::review::PlanFile;
use common::*;

const RULES: &str =
    "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[safety]\nmax_removals = 2\n";

fn members(emu: &bbsync_emulator::Emulator) -> usize {
    emu.state()
        .groups
        .iter()
        .find(|g| g.name == "Developers")
        .map_or(0, |g| g.members.len())
}

#[tokio::test]
async fn an_approval_releases_exactly_the_held_set_once() {
    let people = ["ann", "bob", "cid", "dee", "eve"];
    let mut s = seed(&people);
    s.groups.push(group("Developers", &people));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    // Four people left the mapped group: more than max_removals = 2.
    let dir = ldif(&people.map(|p| (p, false)), &[("eng", &["ann"])]);
    let cfg = config(&emu, tmp.path(), &dir, RULES);
    let rec = Reconciler::new(cfg).expect("rec");

    let held = rec.run(true).await.expect("apply");
    assert!(!held.ok(), "a held guard fails the apply");
    assert_eq!(held.count(OutcomeKind::Blocked), 4);
    assert_eq!(members(&emu), 5, "nothing removed");
    assert!(writes(&emu).is_empty());

    let file = tmp.path().join("plan.json");
    let plan = rec.run(false).await.expect("plan");
    PlanFile::from_report(&plan, "test")
        .save(&file)
        .expect("save");
    // Not approved yet: a reviewed apply still holds.
    let unapproved = PlanFile::load(&file).expect("load");
    let r = rec
        .run_gated(true, &unapproved.gate())
        .await
        .expect("apply");
    assert_eq!(r.count(OutcomeKind::Blocked), 4);
    assert_eq!(members(&emu), 5);

    let mut approved = PlanFile::load(&file).expect("load");
    approved.approve(&file, "tester").expect("approve");
    approved.save(&file).expect("save");
    let reloaded = PlanFile::load(&file).expect("load");
    assert_eq!(
        reloaded.approved.as_ref().map(|a| a.by.as_str()),
        Some("tester")
    );
    let r = rec.run_gated(true, &reloaded.gate()).await.expect("apply");
    assert!(r.ok(), "{:#?}", r.outcomes);
    assert_eq!(r.count(OutcomeKind::Applied), 4);
    assert_eq!(members(&emu), 1);

    // The same approval cannot be used again: Bitbucket moved (it was applied).
    let again = rec.run_gated(true, &reloaded.gate()).await;
    assert!(matches!(again, Err(RunError::PlanMoved(_))), "{again:?}");
}

#[tokio::test]
async fn an_approval_does_not_cover_a_bigger_set() {
    let people = ["ann", "bob", "cid", "dee", "eve"];
    let mut s = seed(&people);
    s.groups.push(group("Developers", &people));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&people.map(|p| (p, false)), &[("eng", &["ann", "bob"])]),
        RULES,
    );
    let rec = Reconciler::new(cfg).expect("rec");
    let file = tmp.path().join("plan.json");
    let plan = rec.run(false).await.expect("plan");
    assert_eq!(plan.plan.blocked().count(), 3);
    let mut f = PlanFile::from_report(&plan, "test");
    f.approve(&file, "tester").expect("approve");
    f.save(&file).expect("save");

    // Bob leaves the group too: four removals now, not the three approved.
    std::fs::write(
        tmp.path().join("directory.ldif"),
        ldif(&people.map(|p| (p, false)), &[("eng", &["ann"])]),
    )
    .expect("ldif");
    let err = rec
        .run_gated(true, &f.gate())
        .await
        .expect_err("the directory moved");
    assert!(err.to_string().contains("the directory changed"), "{err}");
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    // Without the reviewed plan the approval's fingerprint does not match the new set.
    let gate = bbsync::reconcile::Gate {
        approved: f.approved.as_ref().map(|a| a.revocations.clone()),
        expect: None,
    };
    let r = rec.run_gated(true, &gate).await.expect("apply");
    assert_eq!(r.count(OutcomeKind::Blocked), 4);
    assert_eq!(members(&emu), 5);
}

#[tokio::test]
async fn a_reviewed_plan_is_refused_when_bitbucket_moved() {
    let mut s = seed(&["ann", "bob"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("bob", false)],
            &[("eng", &["ann", "bob"])],
        ),
        RULES,
    );
    let rec = Reconciler::new(cfg).expect("rec");
    let plan = rec.run(false).await.expect("plan");
    let file = tmp.path().join("plan.json");
    PlanFile::from_report(&plan, "test")
        .save(&file)
        .expect("save");
    let mut st = emu.state();
    st.groups[0].members.push(acc("bob"));
    emu.replace_state(st).expect("state");
    let err = rec
        .run_gated(true, &PlanFile::load(&file).expect("load").gate())
        .await
        .expect_err("moved");
    assert!(err.to_string().contains("Bitbucket changed"), "{err}");
    assert!(writes(&emu).is_empty());
    // Nothing to approve in a plan that holds nothing.
    let mut f = PlanFile::load(&file).expect("load");
    assert!(f.approve(&file, "x").is_err());
}

#[tokio::test]
async fn an_export_cut_at_an_entry_boundary_holds_the_removals_it_would_cause() {
    // 30 people in the group; the next export stops after 20 of them (cleanly, between
    // entries): 10 would vanish, below max_removals, but the directory shrank by a third.
    let people: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let mut s = seed(&refs);
    s.groups.push(group("Developers", &refs));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let full: Vec<(&str, bool)> = refs.iter().map(|p| (*p, false)).collect();
    let rules = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[offboarding]\nstate_dir = \"state\"\n[safety]\nmax_group_removal_ratio = 1.0\nmax_removal_ratio = 1.0\n";
    let cfg = config(&emu, tmp.path(), &ldif(&full, &[("eng", &refs)]), rules);
    let rec = Reconciler::new(cfg).expect("rec");
    let first = rec.run(true).await.expect("first");
    assert!(first.ok() && first.plan.is_empty(), "{:#?}", first.plan);

    std::fs::write(
        tmp.path().join("directory.ldif"),
        ldif(&full[..20], &[("eng", &refs[..20])]),
    )
    .expect("cut");
    let cut = rec.run(true).await.expect("cut run");
    assert!(!cut.ok());
    assert!(
        matches!(
            cut.plan.held[..],
            [bbsync::plan::Guard::Shrink {
                before: 30,
                now: 20,
                ..
            }]
        ),
        "{:?}",
        cut.plan.held
    );
    assert_eq!(cut.count(OutcomeKind::Blocked), 10);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert_eq!(members(&emu), 30);
    // It keeps holding on the next run: the cut read is not the new baseline.
    let again = rec.run(true).await.expect("again");
    assert_eq!(again.count(OutcomeKind::Blocked), 10);
    assert_eq!(members(&emu), 30);
}

#[tokio::test]
async fn a_reviewed_plan_that_removes_vanished_people_can_be_approved_and_applied() {
    // No state directory and no grace: the vanished people's "since" is the time of each run,
    // which must not make the reviewed plan look moved.
    let people = ["ann", "bob", "cid", "dee"];
    let mut s = seed(&people);
    s.groups.push(group("Developers", &people));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        RULES,
    );
    let rec = Reconciler::new(cfg).expect("rec");
    let plan = rec.run(false).await.expect("plan");
    assert_eq!(plan.plan.blocked().count(), 3);
    let file = tmp.path().join("plan.json");
    let mut f = PlanFile::from_report(&plan, "test");
    f.approve(&file, "tester").expect("approve");
    f.save(&file).expect("save");
    let r = rec
        .run_gated(true, &PlanFile::load(&file).expect("load").gate())
        .await
        .expect("the reviewed plan still matches");
    assert!(r.ok(), "{:#?}", r.outcomes);
    assert_eq!(members(&emu), 1);
}
