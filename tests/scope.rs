//! The managed scope, project grants, protected accounts and off-boarding (leavers, vanished
//! people, returners) over real HTTP against the emulator: what is written, what is left alone
//! and why, and that a second run right after a converged one writes nothing.

mod common;
use common::*;

use bbsync::apply::OutcomeKind;
use bbsync::mapping::RuleNote;
use bbsync::model::{GrantTarget, ProjectKey, RepoSlug};
use bbsync::plan::{Change, Reason, SkipReason};
use bbsync::reconcile::{Reconciler, RunReport};
use bbsync_emulator::{
    Emulator, Seed, SeedGroupGrant, SeedProject, SeedProjectGroupGrant, SeedProjectUserGrant,
    SeedRepo, SeedUser, SeedUserGrant,
};
use std::collections::BTreeSet;
use std::path::Path;

// ---- fixtures ----------------------------------------------------------------------------------

fn grant(repo: &str, group: &str, permission: &str) -> SeedGroupGrant {
    SeedGroupGrant {
        repo: repo.into(),
        group: group.into(),
        permission: permission.into(),
    }
}

fn user_grant(repo: &str, who: &str, permission: &str) -> SeedUserGrant {
    SeedUserGrant {
        repo: repo.into(),
        account_id: acc(who),
        permission: permission.into(),
    }
}

fn project_grant(project: &str, group: &str, permission: &str) -> SeedProjectGroupGrant {
    SeedProjectGroupGrant {
        project: project.into(),
        group: group.into(),
        permission: permission.into(),
    }
}

fn project_user_grant(project: &str, who: &str, permission: &str) -> SeedProjectUserGrant {
    SeedProjectUserGrant {
        project: project.into(),
        account_id: acc(who),
        permission: permission.into(),
    }
}

fn project(s: &mut Seed, key: &str) {
    if !s.projects.iter().any(|p| p.key == key) {
        s.projects.push(SeedProject {
            key: key.into(),
            ..Default::default()
        });
    }
}

/// A repository `slug` in project `key` (created when missing).
fn repo(s: &mut Seed, key: &str, slug: &str) {
    project(s, key);
    s.repositories.push(SeedRepo {
        slug: slug.into(),
        project: key.into(),
        ..Default::default()
    });
}

fn members_of(emu: &Emulator, group_name: &str) -> Vec<String> {
    emu.state()
        .groups
        .iter()
        .find(|g| g.name == group_name)
        .unwrap_or_else(|| panic!("group {group_name} exists"))
        .members
        .clone()
}

/// Every grant on the repositories and projects in the state, as sortable `kind:on:who:perm`.
fn all_grants(st: &Seed) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for g in &st.group_grants {
        out.insert(format!(
            "repo-group:{}:{}:{}",
            g.repo, g.group, g.permission
        ));
    }
    for g in &st.user_grants {
        out.insert(format!(
            "repo-user:{}:{}:{}",
            g.repo, g.account_id, g.permission
        ));
    }
    for g in &st.project_group_grants {
        out.insert(format!(
            "project-group:{}:{}:{}",
            g.project, g.group, g.permission
        ));
    }
    for g in &st.project_user_grants {
        out.insert(format!(
            "project-user:{}:{}:{}",
            g.project, g.account_id, g.permission
        ));
    }
    out
}

/// Memberships and grants of a state, comparable before and after.
fn snapshot(st: &Seed) -> (Vec<(String, Vec<String>)>, BTreeSet<String>) {
    let mut groups: Vec<(String, Vec<String>)> = st
        .groups
        .iter()
        .map(|g| {
            let mut m = g.members.clone();
            m.sort();
            (g.name.clone(), m)
        })
        .collect();
    groups.sort();
    (groups, all_grants(st))
}

fn skipped(report: &RunReport, who: &str) -> Vec<SkipReason> {
    let id = acc(who);
    report
        .plan
        .skipped
        .iter()
        .filter(|s| s.account_id.as_ref().is_some_and(|a| a.as_str() == id))
        .map(|s| s.reason.clone())
        .collect()
}

/// The changes of the plan, as `(change, reason)`.
fn changes(report: &RunReport) -> Vec<(Change, Reason)> {
    report
        .plan
        .changes
        .iter()
        .map(|p| (p.change.clone(), p.reason.clone()))
        .collect()
}

fn state_file(dir: &Path) -> std::path::PathBuf {
    dir.join("state").join("bbsync-state.json")
}

/// Rewrites the state file's first-missing time of `who` to `secs` (Unix seconds).
fn set_first_missing(dir: &Path, who: &str, secs: u64) {
    let path = state_file(dir);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state file")).expect("json");
    v["first_missing"][acc(who)] = serde_json::json!(secs);
    std::fs::write(&path, serde_json::to_string(&v).expect("json")).expect("write state");
}

fn now_secs() -> u64 {
    bbsync::state::to_unix(std::time::SystemTime::now())
}

fn rfc3339(secs: u64) -> String {
    bbsync::time::format_rfc3339(bbsync::state::from_unix(secs))
}

/// No DELETE was sent that found nothing to delete.
fn assert_no_blind_delete(emu: &Emulator) {
    let blind: Vec<String> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.status == 404)
        .map(|r| r.path)
        .collect();
    assert!(blind.is_empty(), "DELETEs that answered 404: {blind:?}");
}

// ---- the repository scope ------------------------------------------------------------------------

#[tokio::test]
async fn a_glob_rule_grants_only_inside_the_scope_and_leaves_hand_made_grants_outside_it_untouched()
{
    let mut s = seed(&["ann"]);
    repo(&mut s, "WEB", "web-app");
    repo(&mut s, "WEB", "web-legacy"); // in the included project, but excluded
    repo(&mut s, "OPS", "web-hand"); // matches the glob, another project
    repo(&mut s, "OPS", "ops-tool");
    s.groups.push(group("Web Devs", &["ann"]));
    s.groups.push(group("Auditors", &[]));
    s.group_grants = vec![
        grant("web-legacy", "web-devs", "admin"),
        grant("web-legacy", "auditors", "read"),
        grant("web-hand", "web-devs", "read"),
        grant("web-hand", "auditors", "write"),
    ];
    s.user_grants = vec![user_grant("web-hand", "ann", "admin")];
    let before = all_grants(&s);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[]),
        r#"
[[grants]]
group = "web-devs"
permission = "write"
globs = ["web-*"]
[scope.include]
projects = ["WEB"]
[scope.exclude]
repos = ["web-legacy"]
"#,
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(report.repositories_in_scope, 1, "only web-app is managed");
    assert_eq!(
        writes(&emu),
        ["PUT /2.0/repositories/acme/web-app/permissions-config/groups/web-devs -> 200"]
    );
    let outside = report
        .plan
        .notes
        .iter()
        .find_map(|n| match n {
            RuleNote::OutsideScope { rule, skipped } if rule == "grants[0]" => {
                Some(skipped.iter().cloned().collect::<BTreeSet<_>>())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no OutsideScope note: {:?}", report.plan.notes));
    assert_eq!(
        outside,
        ["web-hand", "web-legacy"].map(String::from).into(),
        "{:?}",
        report.plan.notes
    );

    let mut expected = before;
    expected.insert("repo-group:web-app:web-devs:write".into());
    assert_eq!(all_grants(&emu.state()), expected);
}

#[tokio::test]
async fn a_rule_naming_a_repository_or_project_that_does_not_exist_is_reported() {
    let mut s = seed(&["ann"]);
    repo(&mut s, "WEB", "web-app");
    s.groups.push(group("Web Devs", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[]),
        r#"
[[grants]]
group = "web-devs"
permission = "read"
repos = ["web-gone"]
[[grants]]
group = "web-devs"
permission = "read"
projects = ["NOPE"]
[[grants]]
group = "web-devs"
permission = "read"
globs = ["zzz-*"]
[[project_grants]]
group = "web-devs"
permission = "read"
projects = ["GHOST"]
"#,
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect("plan");
    let notes = &report.plan.notes;
    for want in [
        RuleNote::UnknownRepo {
            rule: "grants[0]".into(),
            repo: RepoSlug::new("web-gone"),
        },
        RuleNote::SelectsNothing {
            rule: "grants[0]".into(),
        },
        RuleNote::UnknownProject {
            rule: "grants[1]".into(),
            project: ProjectKey::new("NOPE"),
        },
        RuleNote::SelectsNothing {
            rule: "grants[1]".into(),
        },
        RuleNote::SelectsNothing {
            rule: "grants[2]".into(),
        },
        RuleNote::UnknownProject {
            rule: "project_grants[0]".into(),
            project: ProjectKey::new("GHOST"),
        },
    ] {
        assert!(notes.contains(&want), "missing {want:?} in {notes:?}");
    }
    assert!(report.plan.changes.is_empty(), "{:#?}", report.plan.changes);
    assert!(writes(&emu).is_empty());
}

// ---- project grants ------------------------------------------------------------------------------

#[tokio::test]
async fn project_grants_of_managed_groups_on_managed_projects_are_made_exact_and_nothing_else_is_touched(
) {
    let mut s = seed(&["ann"]);
    project(&mut s, "CORE");
    project(&mut s, "LAB");
    for g in ["Leads", "Devs", "Ops", "Testers", "Auditors"] {
        s.groups.push(group(g, &[]));
    }
    s.project_group_grants = vec![
        project_grant("CORE", "devs", "read"), // raised to write
        project_grant("CORE", "ops", "admin"), // lowered to read (drift)
        project_grant("CORE", "testers", "create-repo"), // no rule wants it (drift)
        project_grant("CORE", "auditors", "admin"), // unmanaged group
        project_grant("LAB", "devs", "admin"), // unmanaged project
        project_grant("LAB", "testers", "admin"), // unmanaged project a rule names
    ];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = r#"
[[project_grants]]
group = "leads"
permission = "admin"
projects = ["CORE"]
[[project_grants]]
group = "devs"
permission = "write"
projects = ["CORE"]
[[project_grants]]
group = "devs"
permission = "read"
projects = ["CORE"]
[[project_grants]]
group = "ops"
permission = "read"
projects = ["CORE"]
[[project_grants]]
group = "testers"
permission = "read"
projects = ["LAB"]
[scope]
projects = ["CORE"]
"#;
    // A directory with nobody in it is refused as a broken export: one person.
    let dir_text = ldif(&[("ann", false)], &[]);
    let rec = Reconciler::new(config(&emu, tmp.path(), &dir_text, rules)).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);

    let mut got: Vec<String> = changes(&report)
        .iter()
        .map(|(c, r)| format!("{c} [{}]", r.label()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "change group devs on project CORE: read -> write [rule]",
            "change group ops on project CORE: admin -> read [drift]",
            "grant admin on project CORE to group leads [rule]",
            "revoke create-repo on project CORE from group testers [drift]",
        ]
    );
    for (c, r) in changes(&report) {
        match c {
            Change::SetProjectGrant { group, .. } if group.as_str() == "leads" => assert_eq!(
                r,
                Reason::Rule {
                    rule: "project_grants[0]".into(),
                    detail: "admin on project CORE".into()
                }
            ),
            Change::SetProjectGrant { group, .. } if group.as_str() == "devs" => {
                assert!(
                    matches!(&r, Reason::Rule { rule, .. } if rule == "project_grants[1]"),
                    "the write rule, the highest, gives it: {r:?}"
                )
            }
            _ => {}
        }
    }
    assert!(
        report.plan.notes.contains(&RuleNote::OutsideScope {
            rule: "project_grants[4]".into(),
            skipped: vec!["LAB".into()],
        }),
        "{:?}",
        report.plan.notes
    );

    let mut w = writes(&emu);
    w.sort();
    assert_eq!(
        w,
        [
            "DELETE /2.0/workspaces/acme/projects/CORE/permissions-config/groups/testers -> 204",
            "PUT /2.0/workspaces/acme/projects/CORE/permissions-config/groups/devs -> 200",
            "PUT /2.0/workspaces/acme/projects/CORE/permissions-config/groups/leads -> 200",
            "PUT /2.0/workspaces/acme/projects/CORE/permissions-config/groups/ops -> 200",
        ]
    );
    let after: BTreeSet<String> = all_grants(&emu.state());
    let expected: BTreeSet<String> = [
        "project-group:CORE:leads:admin",
        "project-group:CORE:devs:write",
        "project-group:CORE:ops:read",
        "project-group:CORE:auditors:admin",
        "project-group:LAB:devs:admin",
        "project-group:LAB:testers:admin",
    ]
    .map(String::from)
    .into();
    assert_eq!(after, expected);

    emu.reset_requests();
    let second = rec.run(true).await.expect("second run");
    assert!(second.plan.is_empty(), "{:#?}", second.plan.changes);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
}

// ---- protected accounts --------------------------------------------------------------------------

#[tokio::test]
async fn a_disabled_protected_account_stays_in_its_group_and_keeps_its_direct_grant() {
    let mut s = seed(&["ann", "pat"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "pat"]));
    s.group_grants = vec![grant("app", "developers", "write")];
    s.user_grants = vec![user_grant("app", "pat", "admin")];
    s.project_user_grants = vec![project_user_grant("CORE", "pat", "admin")];
    let before = snapshot(&s);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("pat", true)],
            &[("eng", &["ann", "pat"])],
        ),
        &format!(
            r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[grants]]
group = "developers"
permission = "write"
repos = ["app"]
[scope]
projects = ["CORE"]
[scope.include]
repos = ["app"]
[protected]
accounts = ["{}"]
"#,
            acc("pat")
        ),
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(report.plan.changes.is_empty(), "{:#?}", report.plan.changes);
    assert_eq!(
        skipped(&report, "pat"),
        [SkipReason::Protected],
        "{:#?}",
        report.plan.skipped
    );
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert_eq!(snapshot(&emu.state()), before);
}

#[tokio::test]
async fn the_workspace_owner_without_a_directory_entry_is_never_removed_from_a_managed_group() {
    let mut s = seed(&["ann"]);
    s.users.push(SeedUser {
        account_id: acc("boss"),
        display_name: "The Boss".into(),
        nickname: "boss".into(),
        ..Default::default()
    });
    s.workspace.owner = acc("boss");
    s.groups.push(group("Developers", &["ann", "boss"]));
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
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(report.plan.changes.is_empty(), "{:#?}", report.plan.changes);
    assert_eq!(
        skipped(&report, "boss"),
        [SkipReason::Protected],
        "{:#?}",
        report.plan.skipped
    );
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert!(members_of(&emu, "Developers").contains(&acc("boss")));
}

// ---- leavers' direct grants ----------------------------------------------------------------------

#[tokio::test]
async fn a_leaver_loses_direct_grants_on_managed_repositories_and_projects_and_keeps_the_others() {
    let mut s = seed(&["ann", "lea"]);
    repo(&mut s, "CORE", "core-api");
    repo(&mut s, "MISC", "misc-tool");
    s.groups.push(group("Developers", &["ann", "lea"]));
    s.group_grants = vec![grant("core-api", "developers", "read")];
    s.user_grants = vec![
        user_grant("core-api", "lea", "write"), // managed repository: removed
        user_grant("misc-tool", "lea", "admin"), // unmanaged repository: stays
    ];
    s.project_user_grants = vec![
        project_user_grant("CORE", "lea", "write"), // managed project: removed
        project_user_grant("MISC", "lea", "read"),  // unmanaged project: stays
    ];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("lea", true)],
            &[("eng", &["ann", "lea"])],
        ),
        r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[grants]]
group = "developers"
permission = "read"
projects = ["CORE"]
[scope]
projects = ["CORE"]
[scope.include]
projects = ["CORE"]
"#,
    );
    let rec = Reconciler::new(cfg).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    let leaver = Reason::Leaver {
        fact: "nsAccountLock=TRUE".into(),
    };
    let mut targets = BTreeSet::new();
    for (c, r) in changes(&report) {
        assert_eq!(r, leaver, "{c}");
        match c {
            Change::RemoveUserGrant {
                target,
                account_id,
                previous,
                ..
            } => {
                assert_eq!(account_id.as_str(), acc("lea"));
                assert_eq!(previous, "write");
                targets.insert(target);
            }
            Change::RemoveMember {
                group, account_id, ..
            } => {
                assert_eq!(
                    (group.as_str(), account_id.as_str()),
                    ("developers", acc("lea").as_str())
                );
            }
            other => panic!("unexpected change {other}"),
        }
    }
    assert_eq!(
        targets,
        [
            GrantTarget::Repo(RepoSlug::new("core-api")),
            GrantTarget::Project(ProjectKey::new("CORE")),
        ]
        .into()
    );
    assert_eq!(report.count(OutcomeKind::Applied), 3);
    let mut w = writes(&emu);
    w.sort();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].starts_with("DELETE /1.0/groups/acme/developers/members/"));
    assert_eq!(
        w[1],
        format!(
            "DELETE /2.0/repositories/acme/core-api/permissions-config/users/{} -> 204",
            acc("lea")
        )
    );
    assert_eq!(
        w[2],
        format!(
            "DELETE /2.0/workspaces/acme/projects/CORE/permissions-config/users/{} -> 204",
            acc("lea")
        )
    );
    let st = emu.state();
    let left: BTreeSet<String> = all_grants(&st)
        .into_iter()
        .filter(|g| g.contains(&acc("lea")))
        .collect();
    assert_eq!(
        left,
        [
            format!("repo-user:misc-tool:{}:admin", acc("lea")),
            format!("project-user:MISC:{}:read", acc("lea")),
        ]
        .into()
    );
    assert!(!members_of(&emu, "Developers").contains(&acc("lea")));

    let second = rec.run(true).await.expect("second run");
    assert!(second.plan.is_empty(), "{:#?}", second.plan.changes);
    assert_eq!(writes(&emu).len(), 3, "the second apply wrote");
    assert_no_blind_delete(&emu);
}

// ---- vanished people and the state file ----------------------------------------------------------

const VANISHED_RULES: &str = r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[grants]]
group = "developers"
permission = "read"
repos = ["app"]
[offboarding]
missing_grace_secs = 3600
state_dir = "state"
"#;

#[tokio::test]
async fn a_vanished_member_keeps_access_through_the_grace_across_a_restart_and_loses_it_after() {
    let mut s = seed(&["ann", "vic"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "vic"]));
    s.group_grants = vec![grant("app", "developers", "read")];
    s.user_grants = vec![user_grant("app", "vic", "write")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir_text = ldif(&[("ann", false)], &[("eng", &["ann"])]);
    let fresh = || {
        Reconciler::new(config(&emu, tmp.path(), &dir_text, VANISHED_RULES)).expect("reconciler")
    };

    let first = fresh().run(true).await.expect("first run");
    assert!(first.ok(), "{:#?}", first.outcomes);
    assert!(first.plan.changes.is_empty(), "{:#?}", first.plan.changes);
    let since = match skipped(&first, "vic").as_slice() {
        [SkipReason::VanishedInGrace { since, .. }] => since.clone(),
        other => panic!("vic should be in grace: {other:?}"),
    };
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state_file(tmp.path())).expect("the state file was written"),
    )
    .expect("json");
    assert_eq!(saved["version"], 1);
    let t1 = saved["first_missing"][acc("vic")]
        .as_u64()
        .expect("vic's first-missing time");
    assert_eq!(since, rfc3339(t1));
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));

    // A restart: a new reconciler reads when vic went missing from the file, not from now.
    let earlier = t1 - 1000;
    set_first_missing(tmp.path(), "vic", earlier);
    let second = fresh().run(true).await.expect("after a restart");
    assert!(second.plan.changes.is_empty(), "{:#?}", second.plan.changes);
    assert_eq!(
        skipped(&second, "vic"),
        [SkipReason::VanishedInGrace {
            since: rfc3339(earlier),
            until: rfc3339(earlier + 3600),
        }]
    );
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert!(members_of(&emu, "Developers").contains(&acc("vic")));

    // The grace ran out: vic goes, with the direct grant on the managed repository.
    let long_ago = now_secs() - 7200;
    set_first_missing(tmp.path(), "vic", long_ago);
    let third = fresh().run(true).await.expect("after the grace");
    assert!(third.ok(), "{:#?}", third.outcomes);
    let vanished = Reason::Vanished {
        since: rfc3339(long_ago),
    };
    let got = changes(&third);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|(_, r)| *r == vanished), "{got:#?}");
    assert!(got.iter().any(|(c, _)| matches!(c,
        Change::RemoveMember { group, account_id, .. }
            if group.as_str() == "developers" && account_id.as_str() == acc("vic"))));
    assert!(got.iter().any(|(c, _)| matches!(c,
        Change::RemoveUserGrant { target: GrantTarget::Repo(r), account_id, .. }
            if r.as_str() == "app" && account_id.as_str() == acc("vic"))));
    assert!(!members_of(&emu, "Developers").contains(&acc("vic")));
    assert!(emu.state().user_grants.is_empty());
}

#[tokio::test]
async fn a_corrupt_state_file_holds_the_vanished_removal_while_a_leaver_is_still_removed() {
    let mut s = seed(&["ann", "vic", "lea"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "vic", "lea"]));
    s.group_grants = vec![grant("app", "developers", "read")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("state")).expect("state dir");
    std::fs::write(
        state_file(tmp.path()),
        "{\"version\": 1, \"first_missing\": {",
    )
    .expect("write");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("lea", true)],
            &[("eng", &["ann", "lea"])],
        ),
        VANISHED_RULES,
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert_eq!(
        skipped(&report, "vic"),
        [SkipReason::StateUnavailable],
        "{:#?}",
        report.plan.skipped
    );
    let got = changes(&report);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(matches!(&got[0],
        (Change::RemoveMember { account_id, .. }, Reason::Leaver { .. })
            if account_id.as_str() == acc("lea")));
    let devs = members_of(&emu, "Developers");
    assert!(devs.contains(&acc("vic")), "{devs:?}");
    assert!(!devs.contains(&acc("lea")), "{devs:?}");
}

// ---- returners -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_returner_is_added_back_and_loses_their_new_direct_grant_when_they_leave_again() {
    let mut s = seed(&["ann", "ret"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "ret"]));
    s.group_grants = vec![grant("app", "developers", "read")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[grants]]
group = "developers"
permission = "read"
repos = ["app"]
[offboarding]
state_dir = "state"
"#;
    let groups: &[(&str, &[&str])] = &[("eng", &["ann", "ret"])];
    let rec = Reconciler::new(config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false), ("ret", true)], groups),
        rules,
    ))
    .expect("rec");
    let dir_file = tmp.path().join("directory.ldif");

    let left = rec.run(true).await.expect("leaves");
    assert!(left.ok(), "{:#?}", left.outcomes);
    assert!(!members_of(&emu, "Developers").contains(&acc("ret")));

    std::fs::write(&dir_file, ldif(&[("ann", false), ("ret", false)], groups)).expect("ldif");
    emu.reset_requests();
    let back = rec.run(true).await.expect("returns");
    assert!(back.ok(), "{:#?}", back.outcomes);
    let got = changes(&back);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(matches!(&got[0],
        (Change::AddMember { account_id, .. }, Reason::Rule { rule, .. })
            if account_id.as_str() == acc("ret") && rule == "groups[0]"));
    assert!(members_of(&emu, "Developers").contains(&acc("ret")));

    emu.reset_requests();
    let settled = rec.run(true).await.expect("converged");
    assert!(settled.plan.is_empty(), "{:#?}", settled.plan.changes);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));

    // Back at work they were given a direct grant; then they leave again: it goes too.
    let mut st = emu.state();
    st.user_grants.push(user_grant("app", "ret", "write"));
    emu.replace_state(st).expect("state");
    std::fs::write(&dir_file, ldif(&[("ann", false), ("ret", true)], groups)).expect("ldif");
    let again = rec.run(true).await.expect("leaves again");
    assert!(again.ok(), "{:#?}", again.outcomes);
    assert!(!members_of(&emu, "Developers").contains(&acc("ret")));
    assert!(
        emu.state().user_grants.is_empty(),
        "{:?}",
        emu.state().user_grants
    );
}

// ---- people who cannot be added, groups that do not exist ----------------------------------------

#[tokio::test]
async fn a_wanted_person_who_is_not_a_workspace_member_is_reported_and_the_run_is_ok() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("out", false)],
            &[("eng", &["ann", "out"])],
        ),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
    );
    let rec = Reconciler::new(cfg).expect("rec");
    for run in ["first", "second"] {
        emu.reset_requests();
        let report = rec.run(true).await.expect("run");
        assert!(report.ok(), "{run}: {:#?}", report.outcomes);
        assert!(
            report.plan.changes.is_empty(),
            "{run}: {:#?}",
            report.plan.changes
        );
        assert_eq!(
            skipped(&report, "out"),
            [SkipReason::NotWorkspaceMember],
            "{run}"
        );
        assert!(writes(&emu).is_empty(), "{run}: {:?}", writes(&emu));
    }
    assert_eq!(members_of(&emu, "Developers"), [acc("ann")]);
}

#[tokio::test]
async fn a_group_rule_without_create_for_a_missing_group_warns_and_never_creates_it() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("design", &["ann"])]),
        "[[groups]]\nname = \"Designers\"\nfrom = [\"design\"]\n",
    );
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.plan.changes.is_empty(), "{:#?}", report.plan.changes);
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("designers") && w.contains("create")),
        "{:?}",
        report.plan.warnings
    );
    assert!(
        !emu.requests().iter().any(|r| r.method == "POST"),
        "{:?}",
        writes(&emu)
    );
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert_eq!(emu.state().groups.len(), 1);
}

// ---- nothing outside the scope -------------------------------------------------------------------

#[tokio::test]
async fn an_apply_over_a_mixed_workspace_writes_only_inside_the_managed_scope() {
    let mut s = seed(&["ann", "lea", "new", "ext", "zed"]);
    repo(&mut s, "CORE", "core-api");
    repo(&mut s, "CORE", "core-web");
    repo(&mut s, "WEB", "web-app");
    repo(&mut s, "WEB", "web-legacy"); // excluded
    repo(&mut s, "OPS", "ops-tool");
    repo(&mut s, "OPS", "web-ops"); // matches the glob, outside the scope
    project(&mut s, "LAB");
    s.groups.push(group("Developers", &["ann", "lea"]));
    s.groups.push(group("Web Devs", &["ann"]));
    s.groups.push(group("Release Bots", &["zed", "lea"])); // unmanaged, with a leaver
    s.groups.push(group("Auditors", &[]));
    s.group_grants = vec![
        grant("core-api", "developers", "write"),   // converged
        grant("core-web", "developers", "admin"),   // lowered to write
        grant("web-app", "web-devs", "read"),       // converged
        grant("web-legacy", "web-devs", "admin"),   // excluded
        grant("web-ops", "web-devs", "admin"),      // outside the scope
        grant("ops-tool", "developers", "admin"),   // unmanaged repository
        grant("core-api", "release-bots", "admin"), // unmanaged group
        grant("web-app", "auditors", "read"),       // unmanaged group
    ];
    s.user_grants = vec![
        user_grant("core-api", "lea", "write"), // leaver, managed: removed
        user_grant("ops-tool", "lea", "admin"), // leaver, unmanaged repository
        user_grant("web-legacy", "lea", "read"), // leaver, excluded repository
        user_grant("core-web", "ext", "admin"), // external collaborator: left alone
    ];
    s.project_group_grants = vec![
        project_grant("CORE", "developers", "read"), // raised to write
        project_grant("CORE", "web-devs", "read"),   // managed group, no rule: removed
        project_grant("CORE", "auditors", "admin"),  // unmanaged group
        project_grant("LAB", "developers", "admin"), // unmanaged project
    ];
    s.project_user_grants = vec![
        project_user_grant("CORE", "lea", "write"), // leaver, managed project: removed
        project_user_grant("LAB", "lea", "admin"),  // leaver, unmanaged project
        project_user_grant("CORE", "ext", "read"),  // external collaborator
    ];
    let before = snapshot(&s);
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("lea", true), ("new", false)],
            &[("eng", &["ann", "lea", "new"])],
        ),
        r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[grants]]
group = "developers"
permission = "write"
projects = ["CORE"]
[[grants]]
group = "web-devs"
permission = "read"
globs = ["web-*"]
[[project_grants]]
group = "developers"
permission = "write"
projects = ["CORE"]
[scope]
projects = ["CORE"]
[scope.include]
projects = ["CORE", "WEB"]
[scope.exclude]
repos = ["web-legacy"]
"#,
    );
    let rec = Reconciler::new(cfg).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);

    let lea = acc("lea");
    let expected: [(&str, String); 7] = [
        ("DELETE", "/1.0/groups/acme/developers/members/".into()),
        ("PUT", "/1.0/groups/acme/developers/members/".into()),
        (
            "DELETE",
            format!("/2.0/repositories/acme/core-api/permissions-config/users/{lea}"),
        ),
        (
            "DELETE",
            format!("/2.0/workspaces/acme/projects/CORE/permissions-config/users/{lea}"),
        ),
        (
            "PUT",
            "/2.0/repositories/acme/core-web/permissions-config/groups/developers".into(),
        ),
        (
            "PUT",
            "/2.0/workspaces/acme/projects/CORE/permissions-config/groups/developers".into(),
        ),
        (
            "DELETE",
            "/2.0/workspaces/acme/projects/CORE/permissions-config/groups/web-devs".into(),
        ),
    ];
    let sent: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    let mut matched = [0usize; 7];
    for r in &sent {
        let hits: Vec<usize> = expected
            .iter()
            .enumerate()
            .filter(|(_, (m, p))| {
                r.method == *m
                    && if p.ends_with('/') {
                        r.path.starts_with(p.as_str())
                    } else {
                        r.path == *p
                    }
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "write outside the managed scope: {} {}",
            r.method,
            r.path
        );
        assert!((200..300).contains(&r.status), "{} {}", r.path, r.status);
        matched[hits[0]] += 1;
    }
    assert_eq!(matched, [1; 7], "{:?}", writes(&emu));

    // Everything else is as it was.
    let (groups_before, grants_before) = before;
    let (groups_after, grants_after) = snapshot(&emu.state());
    let others = |g: &Vec<(String, Vec<String>)>| -> Vec<(String, Vec<String>)> {
        g.iter()
            .filter(|(n, _)| n != "Developers")
            .cloned()
            .collect()
    };
    assert_eq!(others(&groups_before), others(&groups_after));
    let mut expected_grants = grants_before;
    for gone in [
        "repo-group:core-web:developers:admin".to_owned(),
        format!("repo-user:core-api:{lea}:write"),
        "project-group:CORE:developers:read".into(),
        "project-group:CORE:web-devs:read".into(),
        format!("project-user:CORE:{lea}:write"),
    ] {
        assert!(expected_grants.remove(&gone), "{gone}");
    }
    expected_grants.insert("repo-group:core-web:developers:write".into());
    expected_grants.insert("project-group:CORE:developers:write".into());
    assert_eq!(grants_after, expected_grants);
    let mut devs = members_of(&emu, "Developers");
    devs.sort();
    let mut want = vec![acc("ann"), acc("new")];
    want.sort();
    assert_eq!(devs, want);

    emu.reset_requests();
    let second = rec.run(true).await.expect("second run");
    assert!(second.plan.is_empty(), "{:#?}", second.plan.changes);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    assert_no_blind_delete(&emu);
}

#[tokio::test]
async fn a_direct_grant_given_to_a_leaver_after_their_cleanup_is_removed_once_the_recheck_is_due() {
    let mut s = seed(&["ann", "lea"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "lea"]));
    s.group_grants = vec![grant("app", "developers", "read")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[grants]]
group = "developers"
permission = "read"
repos = ["app"]
[offboarding]
state_dir = "state"
recheck_secs = 0
"#;
    let dir_text = ldif(
        &[("ann", false), ("lea", true)],
        &[("eng", &["ann", "lea"])],
    );
    let rec = Reconciler::new(config(&emu, tmp.path(), &dir_text, rules)).expect("rec");
    let left = rec.run(true).await.expect("lea leaves");
    assert!(left.ok(), "{:#?}", left.outcomes);
    assert!(!members_of(&emu, "Developers").contains(&acc("lea")));

    // Someone grants the leaver direct access to a managed repository by hand.
    let mut st = emu.state();
    st.user_grants.push(user_grant("app", "lea", "write"));
    emu.replace_state(st).expect("state");

    let next = rec.run(true).await.expect("next run");
    assert!(next.ok(), "{:#?}", next.outcomes);
    assert!(
        emu.state().user_grants.is_empty(),
        "a leaver kept a direct grant on a managed repository: {:?}",
        emu.state().user_grants
    );
}

#[tokio::test]
async fn a_vanished_member_of_a_group_whose_slug_is_not_its_name_is_timed_and_removed_after_the_grace(
) {
    let mut s = seed(&["ann", "vic"]);
    repo(&mut s, "CORE", "app");
    let mut devs = group("Developers", &["ann", "vic"]);
    devs.slug = Some("devs".into()); // renamed from "Devs": Bitbucket kept the slug
    s.groups.push(devs);
    s.group_grants = vec![grant("app", "devs", "read")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir_text = ldif(&[("ann", false)], &[("eng", &["ann"])]);
    let rec = Reconciler::new(config(&emu, tmp.path(), &dir_text, VANISHED_RULES)).expect("rec");
    let first = rec.run(true).await.expect("first run");
    assert!(matches!(
        skipped(&first, "vic").as_slice(),
        [SkipReason::VanishedInGrace { .. }]
    ));
    let text = std::fs::read_to_string(state_file(tmp.path())).expect("state file");
    assert!(
        text.contains(&acc("vic")),
        "when vic went missing was not recorded, so the grace restarts every run: {text}"
    );
    set_first_missing(tmp.path(), "vic", now_secs() - 7200);
    let later = rec.run(true).await.expect("after the grace");
    assert!(
        !members_of(&emu, "Developers").contains(&acc("vic")),
        "{:#?}",
        later.plan.skipped
    );
}

#[tokio::test]
async fn a_vanished_member_of_a_group_whose_slug_is_not_its_name_loses_their_direct_grants() {
    let mut s = seed(&["ann", "vic"]);
    repo(&mut s, "CORE", "app");
    let mut devs = group("Developers", &["ann", "vic"]);
    devs.slug = Some("devs".into());
    s.groups.push(devs);
    s.group_grants = vec![grant("app", "devs", "read")];
    s.user_grants = vec![user_grant("app", "vic", "write")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"read\"\nrepos = [\"app\"]\n";
    let dir_text = ldif(&[("ann", false)], &[("eng", &["ann"])]);
    let report = Reconciler::new(config(&emu, tmp.path(), &dir_text, rules))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(!members_of(&emu, "Developers").contains(&acc("vic")));
    assert!(
        emu.state().user_grants.is_empty(),
        "vic was removed as vanished but kept the direct grant: {:?}",
        emu.state().user_grants
    );
}

#[tokio::test]
async fn a_vanished_person_whose_direct_grant_cannot_be_removed_stays_in_the_group_to_be_seen_again(
) {
    let mut s = seed(&["ann", "vic"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "vic"]));
    s.group_grants = vec![grant("app", "developers", "read")];
    s.user_grants = vec![user_grant("app", "vic", "admin")];
    // The token may grant but not delete permissions: the direct grant cannot go.
    s.credentials[0]
        .scopes
        .retain(|sc| sc != "delete:permission:bitbucket");
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[grants]]\ngroup = \"developers\"\npermission = \"read\"\nrepos = [\"app\"]\n";
    let dir_text = ldif(&[("ann", false)], &[("eng", &["ann"])]);
    let rec = Reconciler::new(config(&emu, tmp.path(), &dir_text, rules)).expect("rec");
    let r = rec.run(true).await.expect("run");
    assert!(!r.ok());
    assert!(
        members_of(&emu, "Developers").contains(&acc("vic")),
        "vic left the group while keeping admin: the next run could no longer see him"
    );
    let blocked: Vec<&str> = r
        .outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            bbsync::apply::Outcome::Blocked { reason } => Some(reason.label()),
            _ => None,
        })
        .collect();
    assert_eq!(blocked, ["credential_cannot", "direct_grants_pending"]);
    // The next run still sees him and tries again.
    let again = rec.run(false).await.expect("plan");
    assert!(again
        .plan
        .changes
        .iter()
        .any(|p| matches!(&p.change, Change::RemoveUserGrant { account_id, .. } if account_id.as_str() == acc("vic"))));
}

#[tokio::test]
async fn a_managed_project_key_that_does_not_exist_does_not_stop_off_boarding() {
    let mut s = seed(&["ann", "lea"]);
    repo(&mut s, "CORE", "app");
    s.groups.push(group("Developers", &["ann", "lea"]));
    s.user_grants = vec![user_grant("app", "lea", "write")];
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[scope]\nprojects = [\"NOPE\"]\n[scope.include]\nprojects = [\"CORE\"]\n";
    let dir_text = ldif(
        &[("ann", false), ("lea", true)],
        &[("eng", &["ann", "lea"])],
    );
    let r = Reconciler::new(config(&emu, tmp.path(), &dir_text, rules))
        .expect("rec")
        .run(true)
        .await
        .expect("a typo in [scope] projects must not fail the run");
    assert!(r.ok(), "{:#?}", r.outcomes);
    assert!(!members_of(&emu, "Developers").contains(&acc("lea")));
    assert!(
        emu.state().user_grants.is_empty(),
        "the leaver's direct grant stayed"
    );
}
