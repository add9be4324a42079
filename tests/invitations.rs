//! `source.invite_unresolved`: active HR people no resolver found an account id for are
//! invited by email (1.0 invitations) into the groups their attributes give; never someone who
//! left, never twice, and never on an organisation-managed workspace (its invitations are off:
//! blocked up front, with why).

mod common;

use bbsync::config::Config;
use bbsync::reconcile::Reconciler;
use bbsync_emulator::Emulator;
use common::*;

const CSV: &str = "id,mail,state,dept\n\
1,ann@acme.test,Active,Eng\n\
2,New.Hire@Elsewhere.test,Active,Eng\n\
3,gone@elsewhere.test,Terminated,Eng\n\
4,sales@elsewhere.test,Active,Sales\n\
5,new.hire@elsewhere.test,Active,Eng\n\
6,n/a,Active,Eng\n";

fn hr_config(emu: &Emulator, dir: &std::path::Path, invite: bool, extra: &str) -> Config {
    std::fs::write(dir.join("people.csv"), CSV).expect("csv");
    let text = format!(
        "mode = \"apply\"\n[bitbucket]\nworkspace = \"acme\"\napi_url = \"{}\"\nmax_retries = 0\n[credentials.admin]\nkind = \"api_token\"\nemail = \"{ADMIN_EMAIL}\"\ntoken = \"{ADMIN_TOKEN}\"\n[source]\nkind = \"csv\"\npath = \"people.csv\"\nmax_missing_ratio = 0.9\ninvite_unresolved = {invite}\n[source.fields]\nstable_id = \"id\"\nemail = \"mail\"\nstatus = \"state\"\n[source.attributes]\ndept = \"dept\"\n[audit]\npath = \"audit.jsonl\"\n[offboarding]\nstate_dir = \"state\"\n[apply]\nrequests_per_hour = 3600000\nburst = 1000\n[[groups]]\nname = \"staff\"\n[[groups.when]]\nattribute = \"dept\"\nequals = \"eng\"\n{extra}",
        emu.base_url()
    );
    Config::from_toml_str(&text, "invite.toml", dir).expect("valid")
}

fn invitations(emu: &Emulator) -> Vec<(String, String)> {
    emu.state()
        .invitations
        .iter()
        .map(|i| (i.email.to_lowercase(), i.group.clone()))
        .collect()
}

#[tokio::test]
async fn unresolved_people_are_invited_into_their_groups_once_and_leavers_never() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("staff", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");

    // Off (the default): nobody is invited.
    let report = Reconciler::new(hr_config(&emu, tmp.path(), false, ""))
        .expect("rec")
        .run(false)
        .await
        .expect("plan");
    assert!(
        report
            .plan
            .changes
            .iter()
            .all(|p| p.change.kind().label() != "invite_to_group"),
        "{:#?}",
        report.plan.changes
    );

    let rec = Reconciler::new(hr_config(&emu, tmp.path(), true, "")).expect("rec");
    let report = rec.run(true).await.expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    let planned: Vec<String> = report
        .plan
        .changes
        .iter()
        .map(|p| p.change.to_string())
        .collect();
    assert!(
        planned.contains(&"invite New.Hire@Elsewhere.test into group staff".to_string()),
        "{planned:#?}"
    );
    // The leaver and the person no rule places anywhere are not invited.
    assert_eq!(
        invitations(&emu),
        [("new.hire@elsewhere.test".to_string(), "staff".to_string())]
    );
    let invite = report
        .plan
        .changes
        .iter()
        .find(|p| p.change.kind().label() == "invite_to_group")
        .expect("invite");
    let why = invite.reason.to_string();
    assert!(
        why.contains("groups[0]") && why.contains("source.invite_unresolved"),
        "{why}"
    );
    let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("audit");
    assert!(trail.contains("invite_to_group"), "{trail}");

    // Pending already: not sent again (the email compares case-insensitively).
    emu.reset_requests();
    let again = rec.run(true).await.expect("again");
    assert!(again.plan.is_empty(), "{:#?}", again.plan.changes);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));

    // Accepted (gone from the pending list) but not resolved yet (the not-found cache): not
    // sent again while bbsync remembers sending it.
    let mut st = emu.state();
    st.invitations.clear();
    emu.replace_state(st).expect("state");
    let again = rec.run(true).await.expect("accepted");
    assert!(again.plan.is_empty(), "{:#?}", again.plan.changes);
    assert!(writes(&emu).is_empty(), "{:?}", writes(&emu));
}

/// The pending invitations cannot be read: no invitation is sent, the rest of the run goes on,
/// and the plan says why.
#[tokio::test]
async fn an_unreadable_invitations_list_holds_only_the_invitations() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("staff", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    emu.inject_fault(bbsync_emulator::Fault {
        method: Some("GET".into()),
        path_contains: "/invitations".into(),
        status: 500,
        ..Default::default()
    });
    let report = Reconciler::new(hr_config(&emu, tmp.path(), true, ""))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    assert!(report.ok(), "{:#?}", report.outcomes);
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("pending invitations could not be read")),
        "{:?}",
        report.plan.warnings
    );
    assert!(invitations(&emu).is_empty());
    let staff = emu
        .state()
        .groups
        .iter()
        .find(|g| g.name == "staff")
        .map(|g| g.members.clone())
        .unwrap_or_default();
    assert_eq!(staff, [acc("ann")]);
}

#[test]
fn inviting_needs_a_resolver_that_finds_people_once_they_accept() {
    let emu_free = "mode = \"apply\"\n[bitbucket]\nworkspace = \"acme\"\n[credentials.a]\nkind = \"access_token\"\ntoken = \"t\"\n[source]\nkind = \"csv\"\npath = \"p.csv\"\ninvite_unresolved = true\nresolve_by_members = false\n[source.fields]\nstable_id = \"id\"\nemail = \"mail\"\nstatus = \"state\"\n[source.attributes]\ndept = \"dept\"\n[[groups]]\nname = \"staff\"\n[[groups.when]]\nattribute = \"dept\"\nequals = \"eng\"\n";
    let err = Config::from_toml_str(emu_free, "t.toml", std::path::Path::new("."))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("source.invite_unresolved: true needs a resolver"),
        "{err}"
    );
    assert!(
        err.contains("offboarding.state_dir: is required when source.invite_unresolved"),
        "{err}"
    );
}

#[tokio::test]
async fn an_organisation_managed_workspace_blocks_invitations_up_front() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("staff", &[]));
    let emu = start(org_seed(s, true, &[])).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let admin = format!(
        "[admin_api]\nurl = \"{}/admin\"\norg_id = \"{ORG}\"\napi_key = \"{ORG_KEY}\"\n",
        emu.base_url()
    );
    let report = Reconciler::new(hr_config(&emu, tmp.path(), true, &admin))
        .expect("rec")
        .run(true)
        .await
        .expect("run");
    let invite = report
        .outcomes
        .iter()
        .find(|o| o.change.kind().label() == "invite_to_group")
        .expect("an invitation planned");
    match &invite.outcome {
        bbsync::apply::Outcome::Blocked { reason } => {
            assert_eq!(reason.label(), "wrong_backend");
            assert!(
                reason.to_string().contains("admin.atlassian.com"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        emu.requests()
            .iter()
            .all(|r| !(r.method == "PUT" && r.path.contains("invitations"))),
        "no invitation sent"
    );
}
