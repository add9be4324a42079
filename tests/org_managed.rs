//! Organisation-managed workspaces: the Atlassian Admin API membership backend against the
//! emulator, the same scenarios as the 1.0 groups backend on a classic workspace (one table,
//! same end state), the backend told without writing in `check` and the plan, and 1.0
//! groups forced on an organisation-managed workspace blocked up front with the fix.

mod common;

use bbsync::config::Config;
use bbsync::reconcile::Reconciler;
use bbsync_emulator::Emulator;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

/// Which backend a case runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// A classic workspace, 1.0 groups (the default `auto`, no `[admin_api]`).
    V1,
    /// An organisation-managed workspace, `membership_backend = "admin_api"`.
    Admin,
    /// An organisation-managed workspace, `auto` with `[admin_api]`.
    Auto,
}

fn admin_table(emu: &Emulator) -> String {
    format!(
        "[admin_api]\nurl = \"{}/admin\"\norg_id = \"{ORG}\"\napi_key = \"{ORG_KEY}\"\n",
        emu.base_url()
    )
}

fn backend_config(
    emu: &Emulator,
    dir: &std::path::Path,
    ldif: &str,
    rules: &str,
    b: Backend,
) -> Config {
    let extra = match b {
        Backend::V1 => String::new(),
        Backend::Admin => admin_table(emu),
        Backend::Auto => admin_table(emu),
    };
    let mut cfg = config(emu, dir, ldif, &format!("{rules}\n{extra}"));
    if b == Backend::Admin {
        cfg.bitbucket.membership_backend = bbsync::config::MembershipBackendKind::AdminApi;
    }
    cfg
}

/// Group name -> member account ids, for the managed groups.
fn memberships(emu: &Emulator) -> BTreeMap<String, BTreeSet<String>> {
    emu.state()
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.members.iter().cloned().collect()))
        .collect()
}

const RULES: &str = r#"
[[groups]]
name = "Developers"
from = ["eng"]
[[groups]]
name = "Data Team"
from = ["data"]
"#;

/// One step: the directory (people with disabled flag, groups) and the end state expected.
struct Step {
    people: &'static [(&'static str, bool)],
    groups: &'static [(&'static str, &'static [&'static str])],
    expect: &'static [(&'static str, &'static [&'static str])],
}

/// join, move between groups, leave, vanish, come back, protected account.
const STEPS: &[Step] = &[
    // ann and bob in Developers, bob in Data Team; zed is in Bitbucket but in no directory
    // entry (vanished); pat is protected; dee joins; bob leaves.
    Step {
        people: &[
            ("ann", false),
            ("bob", true),
            ("cid", false),
            ("dee", false),
        ],
        groups: &[("eng", &["ann", "bob", "dee"]), ("data", &["bob", "cid"])],
        expect: &[
            ("Developers", &["ann", "dee", "pat"]),
            ("Data Team", &["cid"]),
        ],
    },
    // ann moves from eng to data; bob comes back.
    Step {
        people: &[
            ("ann", false),
            ("bob", false),
            ("cid", false),
            ("dee", false),
        ],
        groups: &[("eng", &["bob", "dee"]), ("data", &["ann", "cid"])],
        expect: &[
            ("Developers", &["bob", "dee", "pat"]),
            ("Data Team", &["ann", "cid"]),
        ],
    },
];

async fn run_table(b: Backend) -> Vec<BTreeMap<String, BTreeSet<String>>> {
    let mut s = seed(&["ann", "bob", "cid", "dee", "zed", "pat"]);
    s.groups
        .push(group("Developers", &["ann", "bob", "zed", "pat"]));
    s.groups.push(group("Data Team", &["bob"]));
    let s = match b {
        Backend::V1 => s,
        Backend::Admin | Backend::Auto => org_seed(s, true, &[]),
    };
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = format!("{RULES}\n[protected]\naccounts = [\"{}\"]\n", acc("pat"));
    let mut ends = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        let cfg = backend_config(&emu, tmp.path(), &ldif(step.people, step.groups), &rules, b);
        let rec = Reconciler::new(cfg).expect("reconciler");
        let report = rec.run(true).await.expect("run");
        assert!(report.ok(), "{b:?} step {i}: {:#?}", report.outcomes);
        let want: BTreeMap<String, BTreeSet<String>> = step
            .expect
            .iter()
            .map(|(g, who)| (g.to_string(), who.iter().map(|w| acc(w)).collect()))
            .collect();
        let got = memberships(&emu);
        assert_eq!(got, want, "{b:?} step {i}");
        let v1_writes: Vec<String> = writes(&emu)
            .into_iter()
            .filter(|w| w.contains("/1.0/"))
            .collect();
        if b != Backend::V1 {
            assert!(
                v1_writes.is_empty(),
                "{b:?} wrote through 1.0: {v1_writes:?}"
            );
        }
        // A second run finds nothing to do.
        emu.reset_requests();
        let again = rec.run(true).await.expect("second run");
        assert!(
            again.plan.is_empty(),
            "{b:?} step {i}: {:#?}",
            again.plan.changes
        );
        assert!(writes(&emu).is_empty(), "{b:?}: {:?}", writes(&emu));
        emu.reset_requests();
        ends.push(got);
    }
    ends
}

#[tokio::test]
async fn the_same_scenarios_end_the_same_through_1_0_groups_and_the_admin_api() {
    let v1 = run_table(Backend::V1).await;
    let admin = run_table(Backend::Admin).await;
    let auto = run_table(Backend::Auto).await;
    assert_eq!(v1, admin);
    assert_eq!(v1, auto);
}

#[tokio::test]
async fn the_admin_api_reads_memberships_in_pages_not_per_member() {
    // 250 people in 3 groups: the read is one group search and one paged users search.
    let names: Vec<String> = (0..250).map(|i| format!("p{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut s = seed(&refs);
    s.groups.push(group("Developers", &refs[..200]));
    s.groups.push(group("Data Team", &refs[150..]));
    let emu = start(org_seed(s, true, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let people: Vec<(&str, bool)> = refs.iter().map(|p| (*p, false)).collect();
    let ldif_text = ldif(&people, &[("eng", &refs[..200]), ("data", &refs[150..])]);
    let cfg = backend_config(&emu, tmp.path(), &ldif_text, RULES, Backend::Admin);
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect("plan");
    assert!(report.plan.is_empty(), "{:#?}", report.plan.changes);
    let counts = emu.request_counts();
    let search = counts
        .get("POST /admin/v2/orgs/{orgId}/directories/{dirId}/users/search")
        .copied()
        .unwrap_or_default();
    // 250 users at 100 a page.
    assert_eq!(search, 3, "{counts:#?}");
    assert_eq!(
        counts
            .get("POST /admin/v2/orgs/{orgId}/directories/{dirId}/groups/search")
            .copied(),
        Some(1),
        "{counts:#?}"
    );
    assert!(
        !counts.keys().any(|k| k.contains("/1.0/groups")),
        "{counts:#?}"
    );
}

#[tokio::test]
async fn v1_groups_forced_on_an_organisation_managed_workspace_blocks_every_membership_write_up_front(
) {
    let mut s = seed(&["ann", "bob"]);
    s.groups.push(group("Developers", &["bob"]));
    let emu = start(org_seed(s, true, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = backend_config(
        &emu,
        tmp.path(),
        &ldif(
            &[("ann", false), ("bob", true)],
            &[("eng", &["ann", "bob"])],
        ),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
        Backend::Auto,
    );
    cfg.bitbucket.membership_backend = bbsync::config::MembershipBackendKind::V1Groups;
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert_eq!(report.plan.changes.len(), 2, "{:#?}", report.plan.changes);
    for p in &report.plan.changes {
        let why = p
            .blocked
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default();
        assert!(
            why.contains("organisation-managed") && why.contains("admin_api"),
            "{why}"
        );
    }
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
    let text = bbsync::report::human(&report);
    assert!(
        text.contains("every membership change is blocked"),
        "{text}"
    );
}

#[tokio::test]
async fn check_and_plan_name_the_backend_before_any_write() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(org_seed(s, true, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = backend_config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
        Backend::Auto,
    );
    let clients = bbsync::bitbucket::Clients::new(&cfg).expect("clients");
    let check = bbsync::check::check(&cfg, &clients, false).await;
    assert_eq!(
        check.workspace_kind,
        bbsync::check::WorkspaceKind::OrganisationManaged
    );
    assert_eq!(
        check.membership_backend.backend,
        bbsync::config::MembershipBackendKind::AdminApi
    );
    let text = bbsync::check::render(&check);
    assert!(text.contains("Membership backend: admin_api"), "{text}");
    assert!(check.ok(), "{text}");
    let report = Reconciler::new(cfg)
        .expect("rec")
        .run(false)
        .await
        .expect("plan");
    let text = bbsync::report::human(&report);
    assert!(
        text.contains("Memberships: Atlassian Admin API (auto: organisation-managed"),
        "{text}"
    );
    assert!(writes(&emu).is_empty());

    // A classic workspace: 1.0 groups, told by the invitations listing.
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(org_seed(s, false, &[])).await;
    let cfg = backend_config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n",
        Backend::Auto,
    );
    let clients = bbsync::bitbucket::Clients::new(&cfg).expect("clients");
    let check = bbsync::check::check(&cfg, &clients, false).await;
    assert_eq!(check.workspace_kind, bbsync::check::WorkspaceKind::Classic);
    assert_eq!(
        check.membership_backend.backend,
        bbsync::config::MembershipBackendKind::V1Groups
    );
}

#[test]
fn admin_api_config_mistakes_name_their_keys() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("d.ldif"), "").expect("ldif");
    let base = "[bitbucket]\nworkspace = \"acme\"\n[credentials.a]\nkind = \"api_token\"\nemail = \"a@b.c\"\ntoken = \"t\"\n[source]\nkind = \"ldif\"\npath = \"d.ldif\"\n[[groups]]\nname = \"x\"\nfrom = [\"x\"]\n";
    for (extra, key) in [
        ("[bitbucket.x]\n", "bitbucket"),
        ("", "bitbucket.membership_backend"),
        ("[admin_api]\napi_key = \"k\"\n", "admin_api.org_id"),
        ("[admin_api]\norg_id = \"o\"\n", "admin_api.api_key"),
        (
            "[admin_api]\norg_id = \"o\"\napi_key = \"k\"\nurl = \"ftp://x\"\n",
            "admin_api.url",
        ),
        (
            "[admin_api]\norg_id = \"o/p\"\napi_key = \"k\"\n",
            "admin_api.org_id",
        ),
    ] {
        let text = if key == "bitbucket.membership_backend" {
            base.replace(
                "workspace = \"acme\"\n",
                "workspace = \"acme\"\nmembership_backend = \"admin_api\"\n",
            )
        } else if key == "bitbucket" {
            base.replace(
                "workspace = \"acme\"\n",
                "workspace = \"acme\"\nmembership_backend = \"scim\"\n",
            )
        } else {
            format!("{base}{extra}")
        };
        let key = if key == "bitbucket" {
            "bitbucket.membership_backend"
        } else {
            key
        };
        let e = Config::from_toml_str(&text, "t.toml", tmp.path())
            .err()
            .unwrap_or_else(|| panic!("{key}: accepted"))
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[tokio::test]
async fn hr_emails_resolve_through_the_organisation_directory_in_pages() {
    // Emails only, the members query switched off: the Admin API users search (100
    // addresses a request) resolves them; an address the directory lacks is never guessed.
    let tmp = tempfile::tempdir().expect("tmp");
    let names: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let emu = start(org_seed(seed(&refs), true, &[])).await;
    let mut csv = String::from("id,mail,state,dept\n");
    for n in &names {
        csv.push_str(&format!("{n},{}@ACME.test,Active,Eng\n", n.to_uppercase()));
    }
    csv.push_str("x1,stranger@elsewhere.test,Active,Eng\n");
    std::fs::write(tmp.path().join("people.csv"), csv).expect("csv");
    let text = format!(
        "[bitbucket]\nworkspace = \"acme\"\napi_url = \"{base}\"\nmax_retries = 0\nmembership_backend = \"admin_api\"\n[credentials.admin]\nkind = \"api_token\"\nemail = \"{ADMIN_EMAIL}\"\ntoken = \"{ADMIN_TOKEN}\"\n{admin}[source]\nkind = \"csv\"\npath = \"people.csv\"\nmax_missing_ratio = 0.5\nresolve_by_members = false\n[source.fields]\nstable_id = \"id\"\nemail = \"mail\"\nstatus = \"state\"\n[source.attributes]\ndept = \"dept\"\n[apply]\nrequests_per_hour = 3600000\nburst = 1000\n[[groups]]\nname = \"staff\"\ncreate = true\n[[groups.when]]\nattribute = \"dept\"\nequals = \"eng\"\n",
        base = emu.base_url(),
        admin = admin_table(&emu),
    );
    let cfg = Config::from_toml_str(&text, "org-resolve.toml", tmp.path()).expect("valid");
    let report = Reconciler::new(cfg)
        .expect("reconciler")
        .run(false)
        .await
        .expect("plan");
    let adds = report
        .plan
        .changes
        .iter()
        .filter(|c| matches!(c.change, bbsync::plan::Change::AddMember { .. }))
        .count();
    assert_eq!(adds, 150, "{:#?}", report.plan.changes.len());
    assert!(!report
        .plan
        .changes
        .iter()
        .any(|c| format!("{:?}", c.change).contains("stranger")));
    let email_searches = emu
        .requests()
        .iter()
        .filter(|r| r.route.ends_with("/users/search"))
        .count();
    // 151 addresses: 2 requests of at most 100, each one page.
    assert_eq!(email_searches, 2, "{:#?}", emu.request_counts());
    // The members query resolved nobody; it is asked once, by the frozen-member check,
    // about the one unresolved address.
    let member_queries = emu
        .requests()
        .iter()
        .filter(|r| r.path.contains("user.email"))
        .count();
    assert_eq!(
        member_queries, 1,
        "the members query was off for resolution"
    );
}

/// The Admin API backend's answers, call by call against the emulator: a re-add (409) and a
/// removal of a non-member (404) are done already, a group that exists is not created twice,
/// a failed call is an error; group search counts, and where people stand in the directory
/// (active, suspended, not in it).
#[tokio::test]
async fn admin_api_calls_take_409_and_404_for_done_and_fail_on_the_rest() {
    use bbsync::bitbucket::membership::MembershipBackend;
    use bbsync::bitbucket::Written;
    use bbsync::model::{AccountId, GroupSlug};
    use bbsync::plan::OrgStatus;
    let mut s = seed(&["ann", "bob"]);
    s.groups.push(group("Developers", &["bob"]));
    let mut s = org_seed(s, true, &[]);
    if let Some(o) = s.organisation.as_mut() {
        o.suspended.push(acc("bob"));
    }
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = backend_config(
        &emu,
        tmp.path(),
        &ldif(&[("ann", false)], &[("eng", &["ann"])]),
        "[[groups]]\nname = \"Developers\"\nfrom = [\"eng\"]\n[[groups]]\nname = \"Ops\"\nfrom = [\"eng\"]\ncreate = true\n",
        Backend::Admin,
    );
    let clients = bbsync::bitbucket::Clients::new(&cfg).expect("clients");
    let admin = clients
        .admin_api(&cfg, std::sync::Arc::new(clients.v1_groups()))
        .expect("[admin_api]");
    assert_eq!(admin.name(), "Admin API");
    let ann = AccountId::parse(&acc("ann")).expect("id");
    let bob = AccountId::parse(&acc("bob")).expect("id");
    let devs = GroupSlug::from_name("Developers");
    let ops = GroupSlug::from_name("Ops");
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        admin
            .find_by_names(&names(&["Developers", "Ops"]))
            .await
            .expect("search"),
        1
    );
    assert_eq!(
        admin
            .find_by_names(&names(&["nope"]))
            .await
            .expect("search"),
        0
    );
    assert_eq!(
        admin.add_member(&devs, &ann).await.expect("add"),
        Written::Done
    );
    assert_eq!(
        admin.add_member(&devs, &ann).await.expect("re-add"),
        Written::AlreadyDone
    );
    assert_eq!(
        admin.remove_member(&devs, &ann).await.expect("remove"),
        Written::Done
    );
    assert_eq!(
        admin
            .remove_member(&devs, &ann)
            .await
            .expect("remove again"),
        Written::AlreadyDone
    );
    assert_eq!(
        admin.create_group(&ops, "Ops").await.expect("create"),
        Written::Done
    );
    assert_eq!(
        admin.create_group(&ops, "Ops").await.expect("create again"),
        Written::AlreadyDone
    );
    // The created group takes members at once (its id was kept from the create).
    assert_eq!(
        admin.add_member(&ops, &ann).await.expect("add"),
        Written::Done
    );
    let read = admin.read_groups().await.expect("read");
    assert_eq!(read.keys().collect::<Vec<_>>(), [&devs, &ops]);
    assert!(read[&ops].members.contains_key(&ann));
    // Not in the directory: an error, not "done".
    let ghost = AccountId::parse(&acc("ghost")).expect("id");
    assert!(admin.add_member(&devs, &ghost).await.is_err());
    // Where people stand; someone the search does not return is not in the directory.
    let st = admin
        .org_users(&[ann.clone(), bob.clone(), ghost.clone()])
        .await
        .expect("org users");
    let status: Vec<OrgStatus> = [&ann, &bob, &ghost].iter().map(|i| st[*i].status).collect();
    assert_eq!(
        status,
        [
            OrgStatus::Active,
            OrgStatus::Suspended,
            OrgStatus::NoMembership
        ]
    );
    assert_eq!(
        admin.set_suspended(&ann, true).await.expect("suspend"),
        Written::Done
    );
    assert_eq!(
        admin.set_suspended(&bob, false).await.expect("restore"),
        Written::Done
    );
    let st = admin
        .org_users(&[ann.clone(), bob.clone()])
        .await
        .expect("again");
    assert_eq!(st[&ann].status, OrgStatus::Suspended);
    assert_eq!(st[&bob].status, OrgStatus::Active);
    assert!(
        admin.set_suspended(&ghost, true).await.is_err(),
        "404 is not done"
    );
    // A server error on a write fails it.
    emu.inject_fault(bbsync_emulator::Fault {
        path_contains: "/memberships".into(),
        status: 500,
        ..Default::default()
    });
    assert!(admin.add_member(&devs, &bob).await.is_err());
    assert!(admin.remove_member(&devs, &bob).await.is_err());
}
