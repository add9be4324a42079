//! The Bitbucket client against the emulator over real HTTP: paging, each credential kind, and
//! each refusal turned into an error that names method, endpoint, status and what to fix.

mod common;

use bbsync::bitbucket::dto::{V2GroupPermission, V2UserPermission};
use bbsync::bitbucket::{
    ApiError, Client, ClientOptions, Principal, PrincipalKind, RetryPolicy, Target, Written,
};
use bbsync::config::{Credential, Secret};
use bbsync::model::{BbUuid, GroupSlug, Permission, ProjectKey, ProjectPermission, RepoSlug};
use bbsync_emulator::{CredentialKind, Emulator, SeedCredential};
use common::*;
use std::time::Duration;

fn client(emu: &Emulator, cred: Credential) -> Client {
    Client::new(
        ClientOptions {
            api_url: emu.base_url(),
            oauth_token_url: format!("{}/site/oauth2/access_token", emu.base_url()),
            workspace: "acme".into(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::with_retries(0),
        },
        &cred,
    )
    .expect("client")
}

fn admin() -> Credential {
    Credential::ApiToken {
        email: ADMIN_EMAIL.into(),
        token: Secret::new(ADMIN_TOKEN),
    }
}

fn status(e: &ApiError) -> Option<u16> {
    e.status()
}

#[tokio::test]
async fn collections_are_read_across_several_pages_following_next() {
    let people: Vec<String> = (0..250).map(|i| format!("u{i:03}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let mut s = seed(&refs);
    add_repos(&mut s, "PROJ", "proj", 230);
    add_repos(&mut s, "WEB", "web", 20);
    let emu = start(s).await;
    let c = client(&emu, admin());

    let members = c.list_members().await.expect("members");
    assert_eq!(members.len(), 251);
    let repos = c.list_repositories(None).await.expect("repos");
    assert_eq!(repos.len(), 250);
    let proj = c
        .list_repositories(Some("project.key=\"PROJ\""))
        .await
        .expect("filtered");
    assert_eq!(proj.len(), 230);
    assert!(proj
        .iter()
        .all(|r| r.project.as_ref().is_some_and(|p| p.key == "PROJ")));
    let counts = emu.request_counts();
    assert_eq!(
        counts.get("GET /2.0/workspaces/{ws}/members").copied(),
        Some(3),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("GET /2.0/repositories/{ws}").copied(),
        Some(6),
        "{counts:?}"
    );
}

#[tokio::test]
async fn one_member_is_read_by_account_id_and_someone_outside_the_workspace_is_none() {
    let emu = start(seed(&["ann"])).await;
    let c = client(&emu, admin());
    let ann = c
        .member(&acc("ann"))
        .await
        .expect("the lookup")
        .expect("ann is a member");
    assert_eq!(ann.user.account_id.as_deref(), Some(acc("ann").as_str()));
    let uuid = ann.user.uuid.expect("a uuid");
    assert!(uuid.starts_with('{') && uuid.ends_with('}'), "{uuid}");
    // 404 on this endpoint is "not a member of the workspace": an answer, not an error.
    assert!(c
        .member(&acc("stranger"))
        .await
        .expect("the lookup")
        .is_none());
    // Any other refusal stays an error.
    let wrong = client(
        &emu,
        Credential::ApiToken {
            email: ADMIN_EMAIL.into(),
            token: Secret::new("not-the-token"),
        },
    );
    let e = wrong.member(&acc("ann")).await.expect_err("refused");
    assert_eq!(status(&e), Some(401), "{e}");
    assert_eq!(
        emu.request_counts()
            .get("GET /2.0/workspaces/{ws}/members/{member}")
            .copied(),
        Some(3)
    );
}

#[tokio::test]
async fn an_api_token_is_sent_as_basic_and_can_do_everything_bbsync_needs() {
    let mut s = seed(&["ann"]);
    add_repos(&mut s, "PROJ", "proj", 1);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let c = client(&emu, admin());
    let devs = GroupSlug::from_name("developers");
    let repo = RepoSlug::new("proj-000");
    let ann = emu
        .state()
        .users
        .iter()
        .find(|u| u.nickname == "ann")
        .map(|u| u.uuid.clone())
        .expect("ann");

    assert_eq!(
        c.add_member(&devs, &BbUuid::braced(&ann))
            .await
            .expect("add"),
        Written::Done
    );
    assert_eq!(
        c.add_member(&devs, &BbUuid::braced(&ann))
            .await
            .expect("re-add"),
        Written::AlreadyDone
    );
    assert_eq!(
        c.remove_member(&devs, &BbUuid::braced(&ann))
            .await
            .expect("remove"),
        Written::Done
    );
    assert_eq!(
        c.remove_member(&devs, &BbUuid::braced(&ann))
            .await
            .expect("re-remove"),
        Written::AlreadyDone
    );

    let on_repo = Target::Repo(&repo);
    let group = Principal::Group(&devs);
    c.put_permission(on_repo, group, Permission::Write.as_str())
        .await
        .expect("put 2.0");
    assert_eq!(
        c.permission(on_repo, group).await.expect("get").as_deref(),
        Some("write")
    );
    // 1.0 and 2.0 are two views of one store.
    let privs = c.list_group_privileges().await.expect("1.0 privileges");
    assert_eq!(privs.len(), 1);
    assert_eq!(privs[0].privilege, "write");
    c.put_group_privilege(&repo, &devs, Permission::Admin)
        .await
        .expect("put 1.0 raw body");
    let listed: Vec<V2GroupPermission> = c
        .permissions(on_repo, PrincipalKind::Groups)
        .await
        .expect("list");
    assert_eq!(listed[0].permission, "admin");
    assert_eq!(
        c.delete_permission(on_repo, group).await.expect("delete"),
        Written::Done
    );
    assert_eq!(
        c.delete_group_privilege(&repo, &devs).await.expect("gone"),
        Written::AlreadyDone
    );
    assert_eq!(c.permission(on_repo, group).await.expect("get"), None);

    let ann_id = acc("ann");
    let user = Principal::User(&ann_id);
    c.put_permission(on_repo, user, Permission::Read.as_str())
        .await
        .expect("user grant");
    let users: Vec<V2UserPermission> = c
        .permissions(on_repo, PrincipalKind::Users)
        .await
        .expect("users");
    assert_eq!(users.len(), 1);
    c.delete_permission(on_repo, user)
        .await
        .expect("user revoke");

    let key = ProjectKey::new("PROJ");
    let on_project = Target::Project(&key);
    c.put_permission(on_project, group, ProjectPermission::CreateRepo.as_str())
        .await
        .expect("project grant");
    let listed: Vec<V2GroupPermission> = c
        .permissions(on_project, PrincipalKind::Groups)
        .await
        .expect("list");
    assert_eq!(listed[0].permission, "create-repo");
    c.delete_permission(on_project, group)
        .await
        .expect("project revoke");
    c.put_permission(on_project, user, ProjectPermission::Read.as_str())
        .await
        .expect("project user grant");
    let users: Vec<V2UserPermission> = c
        .permissions(on_project, PrincipalKind::Users)
        .await
        .expect("list");
    assert_eq!(users.len(), 1);
    c.delete_permission(on_project, user)
        .await
        .expect("project user revoke");

    let created = c.create_group("Data Team").await.expect("create");
    assert_eq!(created.slug, "data-team");
    assert!(c
        .get_group(&GroupSlug::from_name("nope"))
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn a_wrong_token_answers_401_with_a_clear_error() {
    let emu = start(seed(&[])).await;
    let c = client(
        &emu,
        Credential::ApiToken {
            email: ADMIN_EMAIL.into(),
            token: Secret::new("wrong"),
        },
    );
    let e = c.list_groups().await.expect_err("401");
    assert_eq!(status(&e), Some(401));
    let msg = e.to_string();
    assert!(
        msg.starts_with("GET /1.0/groups/acme answered HTTP 401"),
        "{msg}"
    );
    assert!(msg.contains("email/token"), "{msg}");
    assert!(!msg.contains("wrong"), "secret in error: {msg}");
}

#[tokio::test]
async fn an_access_token_reads_repositories_but_is_refused_on_permissions() {
    let mut s = with_other_credentials(seed(&["ann"]), 7200);
    add_repos(&mut s, "PROJ", "proj", 3);
    let emu = start(s).await;
    let c = client(
        &emu,
        Credential::AccessToken {
            token: Secret::new("access-token-1"),
        },
    );
    assert_eq!(c.list_repositories(None).await.expect("repos").len(), 3);
    let e = c.list_group_privileges().await.expect_err("refused");
    assert_eq!(status(&e), Some(403), "{e}");
    assert!(
        e.to_string()
            .contains("access tokens cannot touch permissions"),
        "{e}"
    );
    let e = c
        .permissions::<V2GroupPermission>(
            Target::Repo(&RepoSlug::new("proj-000")),
            PrincipalKind::Groups,
        )
        .await
        .expect_err("refused");
    assert_eq!(status(&e), Some(403), "{e}");
}

#[tokio::test]
async fn an_oauth_consumer_fetches_a_token_refreshes_it_and_is_refused_permissions_config_writes() {
    let mut s = with_other_credentials(seed(&["ann"]), 2);
    add_repos(&mut s, "PROJ", "proj", 1);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let c = client(
        &emu,
        Credential::OAuth {
            client_id: "consumer-key".into(),
            client_secret: Secret::new("consumer-secret"),
        },
    );
    assert_eq!(
        c.list_groups().await.expect("1.0 groups with OAuth").len(),
        1
    );
    let e = c
        .put_permission(
            Target::Repo(&RepoSlug::new("proj-000")),
            Principal::Group(&GroupSlug::from_name("developers")),
            "read",
        )
        .await
        .expect_err("OAuth cannot write permissions-config");
    assert_eq!(status(&e), Some(403), "{e}");
    // The token lives 2 s: move both clocks past it instead of sleeping (the client's is
    // tokio's, which keeps the offset after resuming).
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(2100)).await;
    tokio::time::resume();
    emu.advance_time(Duration::from_millis(2100));
    assert_eq!(c.list_groups().await.expect("after expiry").len(), 1);
    let tokens = emu
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/site/oauth2/access_token"))
        .count();
    assert_eq!(tokens, 2, "one token, then one refresh");

    let bad = client(
        &emu,
        Credential::OAuth {
            client_id: "consumer-key".into(),
            client_secret: Secret::new("nope"),
        },
    );
    let e = bad.list_groups().await.expect_err("bad secret");
    assert!(matches!(e, ApiError::OAuth { .. }), "{e}");
    assert!(e.to_string().contains("401"), "{e}");
}

#[tokio::test]
async fn a_non_admin_is_refused_with_403() {
    let mut s = seed(&["ann"]);
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
    let c = client(
        &emu,
        Credential::ApiToken {
            email: "ann@acme.test".into(),
            token: Secret::new("ann-token"),
        },
    );
    let e = c.list_groups().await.expect_err("not an admin");
    assert_eq!(status(&e), Some(403), "{e}");
}

#[tokio::test]
async fn unknown_objects_answer_404_and_idempotent_deletes_count_as_done() {
    let emu = start(seed(&["ann"])).await;
    let c = client(&emu, admin());
    let e = c
        .put_permission(
            Target::Repo(&RepoSlug::new("no-such-repo")),
            Principal::Group(&GroupSlug::from_name("g")),
            "read",
        )
        .await
        .expect_err("404");
    assert_eq!(status(&e), Some(404));
    assert!(
        e.to_string()
            .contains("PUT /2.0/repositories/acme/no-such-repo/permissions-config/groups/g"),
        "{e}"
    );
    assert_eq!(
        c.remove_member(
            &GroupSlug::from_name("nope"),
            &BbUuid::braced("{00000000-0000-0000-0000-000000000000}")
        )
        .await
        .expect("404 on delete is done"),
        Written::AlreadyDone
    );
}

#[tokio::test]
async fn organisation_managed_workspaces_read_1_0_but_refuse_writes_with_405() {
    let mut s = seed(&["ann"]);
    s.workspace.organisation_managed = true;
    let emu = start(s).await;
    let c = client(&emu, admin());
    assert!(c.list_groups().await.is_ok());
    let e = c.create_group("New").await.expect_err("405");
    assert_eq!(status(&e), Some(405));
    assert!(e.to_string().contains("organisation-managed"), "{e}");
}

#[tokio::test]
async fn pagination_never_follows_a_link_to_another_origin() {
    // A hand-rolled server answers one page whose `next` points elsewhere.
    let app = axum::Router::new().route(
        "/2.0/repositories/acme",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({"values": [{"slug": "a"}], "next": "http://127.0.0.1:1/2.0/repositories/acme?page=2"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = Client::new(
        ClientOptions {
            api_url: format!("http://{addr}"),
            oauth_token_url: format!("http://{addr}/token"),
            workspace: "acme".into(),
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::with_retries(0),
        },
        &admin(),
    )
    .expect("client");
    let e = c.list_repositories(None).await.expect_err("foreign next");
    assert!(matches!(e, ApiError::Paging { .. }), "{e}");
}

#[tokio::test]
async fn an_oauth_token_that_expired_server_side_is_refreshed_once_on_401() {
    let s = with_other_credentials(seed(&["ann"]), 7200);
    let emu = start(s).await;
    let c = client(
        &emu,
        Credential::OAuth {
            client_id: "consumer-key".into(),
            client_secret: Secret::new("consumer-secret"),
        },
    );
    c.list_groups().await.expect("first token");
    // The client still believes its token is good; the service says it expired.
    emu.advance_time(Duration::from_secs(7300));
    c.list_groups().await.expect("refreshed after 401");
    let log = emu.requests();
    let tokens = log
        .iter()
        .filter(|r| r.path.starts_with("/site/oauth2/access_token"))
        .count();
    let expired = log.iter().filter(|r| r.status == 401).count();
    assert_eq!((tokens, expired), (2, 1), "{log:?}");
}
