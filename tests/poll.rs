//! The fast off-boarding poll over real HTTP against the emulator, with an LDIF directory that
//! the tests rewrite: someone disabled after a full reconcile loses their memberships on the
//! next poll (once), a dry-run poll only says what it would do, the guards still hold, a poll
//! during a large apply puts the revocation into it ahead of the queue, and a failing read
//! changes nothing. The LDAP light read itself is tested against slapd in `tests/ldap.rs`.

mod common;

use bbsync::plan::Change;
use bbsync::reconcile::Reconciler;
use common::*;
use std::time::Duration;

const RULES: &str = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n";

fn members(emu: &bbsync_emulator::Emulator, slug: &str) -> Vec<String> {
    let mut m = emu
        .state()
        .groups
        .into_iter()
        .find(|g| g.slug() == slug)
        .map(|g| g.members)
        .unwrap_or_default();
    m.sort();
    m
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| acc(n)).collect();
    v.sort();
    v
}

fn directory(disabled: &[&str]) -> String {
    let people: Vec<(&str, bool)> = ["ann", "bob", "carol"]
        .iter()
        .map(|p| (*p, disabled.contains(p)))
        .collect();
    ldif(&people, &[("eng", &["ann", "bob", "carol"])])
}

async fn setup(rules: &str) -> (bbsync_emulator::Emulator, tempfile::TempDir, Reconciler) {
    let mut s = seed(&["ann", "bob", "carol"]);
    s.groups.push(group("Developers", &["ann", "bob", "carol"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(&emu, tmp.path(), &directory(&[]), rules);
    let rec = Reconciler::new(cfg).expect("reconciler");
    (emu, tmp, rec)
}

/// A full run, then (`parked`) its snapshot moved to disk as the daemon does between runs.
async fn full(
    rec: &Reconciler,
    apply: bool,
    parked: bool,
) -> Result<bbsync::reconcile::RunReport, bbsync::reconcile::RunError> {
    let r = rec.run(apply).await;
    if parked {
        rec.park_snapshot().await;
        assert!(rec.snapshot_parked(), "the snapshot was parked on disk");
    }
    r
}

#[tokio::test]
async fn a_poll_before_any_full_run_has_no_baseline_and_reads_nothing_from_bitbucket() {
    let (emu, _tmp, rec) = setup(RULES).await;
    let r = rec.poll_leavers(true).await.expect("poll");
    assert!(r.no_baseline);
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn someone_disabled_after_a_reconcile_loses_their_memberships_on_the_next_poll_once() {
    // Each case twice: the snapshot in memory, and parked on disk as a daemon keeps it.
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(RULES).await;
        let first = full(&rec, true, parked).await.expect("full run");
        assert!(first.ok());
        assert!(first.plan.changes.is_empty(), "{:?}", first.plan.changes);

        std::fs::write(tmp.path().join("directory.ldif"), directory(&["bob"])).expect("ldif");
        let before = emu.requests().len();
        let r = rec.poll_leavers(true).await.expect("poll");
        assert_eq!(r.new_leavers.len(), 1);
        assert_eq!(r.new_leavers[0].as_str(), acc("bob"));
        assert_eq!(r.planned, 1);
        assert!(!r.submitted_to_live);
        assert!(r.ok(), "{:?}", r.outcomes);
        assert!(r
            .run_id
            .as_deref()
            .is_some_and(|id| id.starts_with("poll-")));
        assert_eq!(members(&emu, "developers"), sorted(&["ann", "carol"]));
        // One write, the removal, and the verification read: the member's UUID is the one the
        // full run's group read learnt (no workspace member listing, which is 100 members a page),
        // and nothing else of Bitbucket is read.
        let sent: Vec<_> = emu.requests()[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            sent.iter().filter(|r| !r.starts_with("GET ")).count(),
            1,
            "{sent:?}"
        );
        assert!(
            sent.iter()
                .any(|r| r.starts_with("DELETE /1.0/groups/acme/developers/members/")),
            "{sent:?}"
        );
        assert!(
            !sent.iter().any(|r| r.contains("/workspaces/acme/members")),
            "{sent:?}"
        );
        assert_eq!(sent.len(), 2, "{sent:?}");
        // Audited like every change: intent and outcome.
        let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("audit");
        let finals = audit_finals(&trail);
        assert!(
            finals.iter().any(
                |r| r["change"]["op"] == "remove_member" && r["outcome"]["result"] == "applied"
            ),
            "{trail}"
        );

        // The next poll finds bob again (still disabled, still modified recently) and does nothing.
        let before = emu.requests().len();
        let again = rec.poll_leavers(true).await.expect("poll");
        assert!(again.new_leavers.is_empty(), "{again:?}");
        assert_eq!(emu.requests().len(), before);
        // Nor does the next full run: bob is gone already.
        let full = full(&rec, true, parked).await.expect("full run");
        assert!(full.plan.changes.is_empty(), "{:?}", full.plan.changes);
    }
}

#[tokio::test]
async fn a_dry_run_poll_says_what_it_would_revoke_and_writes_nothing() {
    // Each case twice: the snapshot in memory, and parked on disk as a daemon keeps it.
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(RULES).await;
        full(&rec, false, parked).await.expect("plan");
        std::fs::write(tmp.path().join("directory.ldif"), directory(&["carol"])).expect("ldif");
        let before = emu.requests().len();
        let r = rec.poll_leavers(false).await.expect("poll");
        assert_eq!(r.would.len(), 1);
        assert!(matches!(
            &r.would[0].change,
            Change::RemoveMember { account_id, .. } if account_id.as_str() == acc("carol")
        ));
        assert_eq!(emu.requests().len(), before, "nothing sent");
        assert_eq!(members(&emu, "developers").len(), 3);
    }
}

#[tokio::test]
async fn the_safety_guards_hold_a_poll_that_would_revoke_too_much() {
    // Each case twice: the snapshot in memory, and parked on disk as a daemon keeps it.
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(&format!("{RULES}[safety]\nmax_removals = 1\n")).await;
        full(&rec, true, parked).await.expect("full run");
        std::fs::write(
            tmp.path().join("directory.ldif"),
            directory(&["bob", "carol"]),
        )
        .expect("ldif");
        let r = rec.poll_leavers(true).await.expect("poll");
        assert_eq!(r.new_leavers.len(), 2);
        assert!(!r.ok(), "held revocations are not done");
        assert!(r
            .outcomes
            .iter()
            .all(|o| matches!(o.outcome, bbsync::apply::Outcome::Blocked { .. })));
        assert_eq!(members(&emu, "developers").len(), 3, "nobody removed");
    }
}

#[tokio::test]
async fn a_failing_poll_read_changes_nothing() {
    // Each case twice: the snapshot in memory, and parked on disk as a daemon keeps it.
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(RULES).await;
        full(&rec, true, parked).await.expect("full run");
        std::fs::remove_file(tmp.path().join("directory.ldif")).expect("rm");
        let before = emu.requests().len();
        assert!(rec.poll_leavers(true).await.is_err());
        assert_eq!(emu.requests().len(), before);
        assert_eq!(members(&emu, "developers").len(), 3);
    }
}

#[tokio::test]
async fn a_poll_during_a_large_apply_puts_the_revocation_into_it_ahead_of_the_queue() {
    let mut s = seed(&["ann", "bob", "carol"]);
    s.groups.push(group("Developers", &["ann", "bob", "carol"]));
    add_repos(&mut s, "PROJ", "r", 120);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = format!(
        "{RULES}[[grants]]\ngroup = \"developers\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n"
    );
    let mut cfg = config(&emu, tmp.path(), &directory(&[]), &rules);
    cfg.apply.concurrency = 1;
    cfg.apply.verify = false;
    let rec = std::sync::Arc::new(Reconciler::new(cfg).expect("reconciler"));
    // 120 grants at 10 ms each, one at a time: the apply takes over a second.
    emu.set_latency(Duration::from_millis(10));
    let full = tokio::spawn({
        let rec = std::sync::Arc::clone(&rec);
        async move { rec.run(true).await }
    });
    // Wait for the apply to be under way (its first grant write).
    let t0 = std::time::Instant::now();
    while !emu.requests().iter().any(|r| r.method == "PUT") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::write(tmp.path().join("directory.ldif"), directory(&["bob"])).expect("ldif");
    let r = rec.poll_leavers(true).await.expect("poll");
    assert!(r.submitted_to_live, "{r:?}");
    let report = full.await.expect("join").expect("full run");
    let removal = report
        .outcomes
        .iter()
        .find(|o| matches!(&o.change, Change::RemoveMember { account_id, .. } if account_id.as_str() == acc("bob")))
        .expect("the poll's revocation is in the full run's report");
    assert!(removal.outcome.is_done(), "{:?}", removal.outcome);
    assert_eq!(members(&emu, "developers"), sorted(&["ann", "carol"]));
    // It went ahead of the grants still queued: well before the last grant write.
    let log = emu.requests();
    let delete = log
        .iter()
        .position(|r| r.method == "DELETE")
        .expect("the removal was sent");
    let last_put = log
        .iter()
        .rposition(|r| r.method == "PUT" && r.path.contains("permissions-config"))
        .expect("grant writes");
    assert!(
        last_put > delete + 20,
        "the removal ({delete}) came just before the last grant ({last_put})"
    );
}

#[tokio::test]
async fn people_who_leave_during_an_apply_that_adds_them_end_in_no_group() {
    // 60 new hires being added one at a time; they all leave while it runs. The adds not yet
    // started are withdrawn, the ones made are undone after them.
    let names: Vec<String> = (0..60).map(|i| format!("h{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut everyone = vec!["ann"];
    everyone.extend(&refs);
    let mut s = seed(&everyone);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let people = |disabled: bool| -> Vec<(&str, bool)> {
        std::iter::once(("ann", false))
            .chain(refs.iter().map(|n| (*n, disabled)))
            .collect()
    };
    let dir = |disabled: bool| ldif(&people(disabled), &[("eng", &everyone)]);
    let mut cfg = config(
        &emu,
        tmp.path(),
        &dir(false),
        &format!("{RULES}[safety]\nmax_removal_ratio = 1.0\nmax_group_removal_ratio = 1.0\nmax_removals = 100\n"),
    );
    cfg.apply.concurrency = 1;
    let rec = std::sync::Arc::new(Reconciler::new(cfg).expect("reconciler"));
    emu.set_latency(Duration::from_millis(15));
    let full = tokio::spawn({
        let rec = std::sync::Arc::clone(&rec);
        async move { rec.run(true).await }
    });
    let t0 = std::time::Instant::now();
    while emu.requests().iter().filter(|r| r.method == "PUT").count() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::write(tmp.path().join("directory.ldif"), dir(true)).expect("ldif");
    let r = rec.poll_leavers(true).await.expect("poll");
    assert!(r.submitted_to_live, "{r:?}");
    assert_eq!(r.new_leavers.len(), 60);
    let report = full.await.expect("join").expect("full run");
    emu.set_latency(Duration::ZERO);
    let removals: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| matches!(o.change, Change::RemoveMember { .. }))
        .map(|o| format!("{:?}", o.outcome))
        .collect();
    assert_eq!(
        members(&emu, "developers"),
        sorted(&["ann"]),
        "nobody who left stays: {removals:?}"
    );
    let withdrawn = report
        .outcomes
        .iter()
        .filter(|o| {
            matches!(
                &o.outcome,
                bbsync::apply::Outcome::Blocked {
                    reason: bbsync::plan::BlockReason::BecameLeaver
                }
            )
        })
        .count();
    let undone = report
        .outcomes
        .iter()
        .filter(|o| matches!(o.change, Change::RemoveMember { .. }) && o.outcome.is_done())
        .count();
    assert!(
        withdrawn > 0 && undone > 0,
        "{withdrawn} withdrawn, {undone} undone"
    );
    assert_eq!(withdrawn + undone, 60, "each hire withdrawn or undone");
    assert!(report.ok(), "{:?}", report.outcomes);
    // The next full run finds nothing to do.
    let again = rec.run(true).await.expect("full run");
    assert!(again.plan.changes.is_empty(), "{:?}", again.plan.changes);
}

#[tokio::test]
async fn a_second_entry_with_an_active_persons_id_is_left_to_the_full_read() {
    // Each case twice: the snapshot in memory, and parked on disk as a daemon keeps it.
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(RULES).await;
        full(&rec, true, parked).await.expect("full run");
        // A new, disabled entry carrying bob's account id: ambiguous, which only a full read sees.
        let mut text = directory(&[]);
        text.push_str(&format!(
            "dn: uid=bob2,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: bob2\ncn: Other bob\natlassianAccountId: {}\nnsAccountLock: TRUE\n\n",
            acc("bob")
        ));
        std::fs::write(tmp.path().join("directory.ldif"), text).expect("ldif");
        let before = emu.requests().len();
        let r = rec.poll_leavers(true).await.expect("poll");
        assert!(r.new_leavers.is_empty(), "{r:?}");
        assert_eq!(emu.requests().len(), before, "nothing sent");
        assert_eq!(members(&emu, "developers").len(), 3);
    }
}

/// The parked snapshot of this process (the reconciler runs in the test's process).
fn snapshot_file(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path()
        .join(format!("poll-snapshot-{}.json", std::process::id()))
}

#[tokio::test]
async fn a_parked_snapshot_is_read_back_only_when_someone_it_saw_active_is_disabled() {
    let (emu, tmp, rec) = setup(RULES).await;
    std::fs::write(tmp.path().join("directory.ldif"), directory(&["carol"])).expect("ldif");
    full(&rec, true, true).await.expect("full run");
    let file = snapshot_file(&tmp);
    let text = std::fs::read_to_string(&file).expect("the parked snapshot");
    assert!(text.contains(&acc("bob")), "{text}");
    assert!(!text.contains(ADMIN_TOKEN), "no credential in the snapshot");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "it holds the directory's names");

    // Damaged on disk: a poll that finds only people the run did not see active (carol left
    // already, dave is new) does not read it, and stays quiet.
    std::fs::write(&file, &text[..text.len() / 2]).expect("cut");
    std::fs::write(
        tmp.path().join("directory.ldif"),
        ldif(
            &[
                ("ann", false),
                ("bob", false),
                ("carol", true),
                ("dave", true),
            ],
            &[("eng", &["ann", "bob", "carol"])],
        ),
    )
    .expect("ldif");
    let r = rec.poll_leavers(true).await.expect("poll");
    assert_eq!(r.seen_disabled, 2, "{r:?}");
    assert!(r.new_leavers.is_empty() && r.planned == 0, "{r:?}");

    // Someone it saw active is disabled: now it must be read, and a damaged file fails the
    // poll closed, naming the file; nothing is written.
    std::fs::write(tmp.path().join("directory.ldif"), directory(&["bob"])).expect("ldif");
    let before = emu.requests().len();
    let e = rec
        .poll_leavers(true)
        .await
        .expect_err("an unreadable snapshot");
    assert_eq!(e.metric_label(), "snapshot");
    let msg = e.to_string();
    assert!(msg.contains("poll-snapshot-"), "{msg}");
    assert!(msg.contains("nothing changed"), "{msg}");
    assert_eq!(emu.requests().len(), before, "nothing sent");
    assert_eq!(members(&emu, "developers"), sorted(&["ann", "bob"]));

    // The next full run plans bob's removal, as it would have without the poll.
    let again = full(&rec, false, true).await.expect("full run");
    assert!(
        again.plan.changes.iter().any(|p| matches!(&p.change,
            Change::RemoveMember { account_id, .. } if account_id.as_str() == acc("bob"))),
        "{:?}",
        again.plan.changes
    );
}

#[tokio::test]
async fn a_snapshot_file_from_another_run_is_not_taken_for_the_parked_one() {
    let (emu, tmp, rec) = setup(RULES).await;
    full(&rec, true, true).await.expect("full run");
    let file = snapshot_file(&tmp);
    let older = std::fs::read(&file).expect("the parked snapshot");
    full(&rec, true, true).await.expect("full run");
    assert_ne!(
        std::fs::read(&file).expect("read"),
        older,
        "a new generation"
    );
    std::fs::write(&file, &older).expect("put the older file back");
    std::fs::write(tmp.path().join("directory.ldif"), directory(&["bob"])).expect("ldif");
    let before = emu.requests().len();
    let e = rec
        .poll_leavers(true)
        .await
        .expect_err("the wrong snapshot");
    assert!(e.to_string().contains("generation"), "{e}");
    assert_eq!(emu.requests().len(), before, "nothing sent");
    assert_eq!(members(&emu, "developers").len(), 3);
}

#[tokio::test]
async fn once_a_poll_has_revoked_from_a_parked_snapshot_later_polls_do_not_read_it_again() {
    let (emu, tmp, rec) = setup(RULES).await;
    full(&rec, true, true).await.expect("full run");
    std::fs::write(tmp.path().join("directory.ldif"), directory(&["bob"])).expect("ldif");
    let r = rec.poll_leavers(true).await.expect("poll");
    assert_eq!(r.new_leavers.len(), 1, "{r:?}");
    assert!(r.ok(), "{:?}", r.outcomes);
    assert_eq!(members(&emu, "developers"), sorted(&["ann", "carol"]));
    assert!(
        rec.snapshot_parked(),
        "the poll does not keep what it read back"
    );
    // bob is still disabled; the file is gone: nothing left to read it for.
    std::fs::remove_file(snapshot_file(&tmp)).expect("rm");
    let before = emu.requests().len();
    let again = rec.poll_leavers(true).await.expect("poll");
    assert!(again.new_leavers.is_empty(), "{again:?}");
    assert_eq!(emu.requests().len(), before);
    // carol leaves as well: that needs the file, which is gone; the poll fails closed.
    std::fs::write(
        tmp.path().join("directory.ldif"),
        directory(&["bob", "carol"]),
    )
    .expect("ldif");
    let e = rec.poll_leavers(true).await.expect_err("no snapshot file");
    assert_eq!(e.metric_label(), "snapshot");
    assert_eq!(members(&emu, "developers"), sorted(&["ann", "carol"]));
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_parked_stays_in_memory_and_the_poll_still_works() {
    let (emu, tmp, rec) = setup(RULES).await;
    // Where the file is written first: a directory, so the write fails.
    std::fs::create_dir(
        tmp.path()
            .join(format!("poll-snapshot-{}.json.tmp", std::process::id())),
    )
    .expect("mkdir");
    rec.run(true).await.expect("full run");
    rec.park_snapshot().await;
    assert!(!rec.snapshot_parked());
    assert!(!snapshot_file(&tmp).exists());
    std::fs::write(tmp.path().join("directory.ldif"), directory(&["bob"])).expect("ldif");
    let r = rec.poll_leavers(true).await.expect("poll");
    assert_eq!(r.new_leavers.len(), 1, "{r:?}");
    assert_eq!(members(&emu, "developers"), sorted(&["ann", "carol"]));
}

#[tokio::test]
async fn a_poll_parses_a_file_source_only_when_it_differs_from_the_last_full_read() {
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(RULES).await;
        let path = tmp.path().join("directory.ldif");
        std::fs::write(&path, directory(&["carol"])).expect("ldif");
        full(&rec, true, parked).await.expect("full run");
        assert_eq!(members(&emu, "developers"), sorted(&["ann", "bob"]));
        // The text the full run parsed: nothing can have changed, nothing is parsed.
        let r = rec.poll_leavers(true).await.expect("poll");
        assert_eq!(r.seen_disabled, 0, "{r:?}");
        assert!(r.new_leavers.is_empty());
        // Changed: parsed whole, and the new leaver found.
        std::fs::write(&path, directory(&["carol", "bob"])).expect("ldif");
        let r = rec.poll_leavers(true).await.expect("poll");
        assert_eq!(r.seen_disabled, 2, "{r:?}");
        assert_eq!(r.new_leavers.len(), 1, "{r:?}");
        assert_eq!(members(&emu, "developers"), sorted(&["ann"]));
        // Still not what the full run read: parsed again, nothing new.
        let r = rec.poll_leavers(true).await.expect("poll");
        assert_eq!(r.seen_disabled, 2, "{r:?}");
        assert!(r.new_leavers.is_empty(), "{r:?}");
        // A changed file that does not parse fails the poll, as before.
        std::fs::write(&path, "dn: uid=x\nnot ldif at all\n").expect("ldif");
        let before = emu.requests().len();
        assert!(rec.poll_leavers(true).await.is_err());
        assert_eq!(emu.requests().len(), before);
    }
}

#[tokio::test]
async fn a_full_run_that_fails_after_reading_a_changed_file_leaves_the_poll_its_older_baseline() {
    for parked in [false, true] {
        let (emu, tmp, rec) = setup(RULES).await;
        full(&rec, true, parked).await.expect("full run");
        // bob leaves, and the file loses the group the rule names: the next full run reads
        // it, then fails (mapping) before it plans.
        std::fs::write(
            tmp.path().join("directory.ldif"),
            ldif(
                &[("ann", false), ("bob", true), ("carol", false)],
                &[("other", &["ann"])],
            ),
        )
        .expect("ldif");
        assert!(rec.run(true).await.is_err(), "the group is missing");
        // The poll still compares with the text its snapshot was built from: bob goes.
        let r = rec.poll_leavers(true).await.expect("poll");
        assert_eq!(r.new_leavers.len(), 1, "{r:?}");
        assert_eq!(members(&emu, "developers"), sorted(&["ann", "carol"]));
    }
}

#[tokio::test]
async fn parking_removes_the_snapshots_of_processes_that_no_longer_run() {
    let (_emu, tmp, rec) = setup(RULES).await;
    // Above the kernel's largest pid: no such process.
    let stale = tmp.path().join("poll-snapshot-4294967.json");
    let stale_tmp = tmp.path().join("poll-snapshot-4294968.json.tmp");
    let other = tmp.path().join("poll-snapshot-notes.json");
    // pid 1 always runs: another daemon's file is not ours to remove.
    let live = tmp.path().join("poll-snapshot-1.json");
    for f in [&stale, &stale_tmp, &other, &live] {
        std::fs::write(f, "{}").expect("write");
    }
    full(&rec, true, true).await.expect("full run");
    assert!(snapshot_file(&tmp).exists());
    assert!(
        !stale.exists() && !stale_tmp.exists(),
        "stale files removed"
    );
    assert!(other.exists(), "not a snapshot file: left alone");
    assert!(live.exists(), "a running process's file: left alone");
}

/// A disabled entry the parked snapshot knows as an active person's DN but under another
/// account id is no leaver (its id is not the snapshot's): once read back for it, the poll
/// settles that DN and later polls do not need the file again.
#[tokio::test]
async fn an_entry_read_back_for_and_found_no_news_is_not_read_back_for_again() {
    let (emu, tmp, rec) = setup(RULES).await;
    full(&rec, true, true).await.expect("full run");
    let text = directory(&["bob"]).replace(&acc("bob"), &acc("bob-renumbered"));
    std::fs::write(tmp.path().join("directory.ldif"), text).expect("ldif");
    let r = rec
        .poll_leavers(true)
        .await
        .expect("poll reads the file back");
    assert!(r.new_leavers.is_empty(), "{r:?}");
    assert_eq!(
        members(&emu, "developers"),
        sorted(&["ann", "bob", "carol"])
    );
    // Without the file, a poll that needed it would fail closed: this one does not need it.
    std::fs::remove_file(snapshot_file(&tmp)).expect("rm");
    let again = rec.poll_leavers(true).await.expect("settled: no read back");
    assert!(again.new_leavers.is_empty(), "{again:?}");
}
