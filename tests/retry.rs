//! Failure paths of one Bitbucket call over real HTTP: which answers are sent again, that a
//! `Retry-After` is read from the answer, that a cut body is an error, and that paging cannot
//! loop. The waiting itself is tested under paused time in `bitbucket::retry`.

mod common;

use bbsync::bitbucket::{ApiError, Budget, BudgetSettings, Client, ClientOptions, RetryPolicy};
use bbsync::config::{Credential, Secret};
use bbsync::model::{BbUuid, GroupSlug};
use bbsync_emulator::{Emulator, Fault};
use common::*;
use std::sync::Arc;
use std::time::Duration;

fn client_with(base_url: &str, retry: RetryPolicy) -> Client {
    Client::new(
        ClientOptions {
            api_url: base_url.to_owned(),
            oauth_token_url: format!("{base_url}/site/oauth2/access_token"),
            workspace: "acme".into(),
            timeout: Duration::from_secs(10),
            retry,
        },
        &Credential::ApiToken {
            email: ADMIN_EMAIL.into(),
            token: Secret::new(ADMIN_TOKEN),
        },
    )
    .expect("client")
}

/// Three retries with no wait between them (the schedule is not what these tests count).
fn three_quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

fn sent(emu: &Emulator, method: &str, path: &str) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(path))
        .count()
}

fn fault(method: &str, path: &str, status: u16) -> Fault {
    Fault {
        method: Some(method.into()),
        path_contains: path.into(),
        status,
        body: "Service Unavailable".into(),
        ..Fault::default()
    }
}

#[tokio::test]
async fn a_group_create_answered_503_is_not_sent_again_but_a_member_add_is() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let c = client_with(&emu.base_url(), three_quick_retries());
    emu.inject_fault(fault("POST", "/1.0/groups/acme", 503));
    let e = c.create_group("Ops").await.expect_err("503");
    assert_eq!(e.status(), Some(503));
    assert_eq!(
        sent(&emu, "POST", "/1.0/groups/acme"),
        1,
        "a POST that may have been processed is not resent"
    );

    let ann = emu
        .state()
        .users
        .iter()
        .find(|u| u.nickname == "ann")
        .map(|u| BbUuid::braced(&u.uuid))
        .expect("ann");
    emu.inject_fault(fault("PUT", "/members/", 503));
    let e = c
        .add_member(&GroupSlug::from_name("developers"), &ann)
        .await
        .expect_err("503 every time");
    assert_eq!(e.status(), Some(503));
    assert_eq!(sent(&emu, "PUT", "/1.0/groups/acme/developers/members/"), 4);
}

#[tokio::test]
async fn a_429_is_resent_even_for_a_post_and_then_succeeds() {
    let emu = start(seed(&[])).await;
    let c = client_with(&emu.base_url(), three_quick_retries());
    emu.inject_fault(Fault {
        times: Some(2),
        ..fault("POST", "/1.0/groups/acme", 429)
    });
    let g = c
        .create_group("Ops")
        .await
        .expect("created on the third try");
    assert_eq!(g.slug, "ops");
    assert_eq!(sent(&emu, "POST", "/1.0/groups/acme"), 3);
}

#[tokio::test]
async fn the_retry_after_of_the_answer_is_what_the_client_waits() {
    let emu = start(seed(&[])).await;
    // Backoff alone would wait up to an hour; the answer says to retry at once.
    let c = client_with(
        &emu.base_url(),
        RetryPolicy {
            max_retries: 1,
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(3600),
            ..RetryPolicy::default()
        },
    );
    emu.inject_fault(Fault {
        times: Some(1),
        headers: vec![("retry-after".into(), "0".into())],
        ..fault("GET", "/1.0/groups/acme", 429)
    });
    let groups = tokio::time::timeout(Duration::from_secs(20), c.list_groups())
        .await
        .expect("Retry-After: 0 honoured, not an hour of backoff")
        .expect("second attempt answers");
    assert!(groups.is_empty());
}

/// A server that answers 200 with a body cut short of its Content-Length, `times` times.
async fn cut_body_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n[{\"name\": \"Dev")
                .await;
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_never_an_empty_document() {
    let (url, hits) = cut_body_server().await;
    let c = client_with(&url, RetryPolicy::with_retries(0));
    let e = c.list_groups().await.expect_err("a cut body");
    // The listing is read as a stream: a body cut short is incomplete, never a shorter list.
    assert!(matches!(e, ApiError::Incomplete { .. }), "{e}");
    assert!(e.to_string().contains("after 14 bytes"), "{e}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A GET may be read again.
    let c = client_with(&url, three_quick_retries());
    c.list_groups().await.expect_err("cut every time");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1 + 4);
}

#[tokio::test]
async fn paging_refuses_a_next_link_back_to_the_first_page() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/2.0/repositories/acme",
        axum::routing::get(move |uri: axum::http::Uri| async move {
            axum::Json(serde_json::json!({
                "values": [{"slug": "a"}],
                "next": format!("http://{addr}{uri}"),
            }))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = client_with(&format!("http://{addr}"), RetryPolicy::with_retries(0));
    let e = tokio::time::timeout(Duration::from_secs(20), c.list_repositories(None))
        .await
        .expect("the loop ends")
        .expect_err("next points at the first page");
    assert!(matches!(e, ApiError::Paging { .. }), "{e}");
    assert!(e.to_string().contains("repeats"), "{e}");
}

#[tokio::test]
async fn a_transport_error_names_the_path_but_not_the_query_with_the_emails_in_it() {
    // Nothing listens on port 1 of loopback: the connection is refused.
    let c = client_with("http://127.0.0.1:1", RetryPolicy::with_retries(0));
    let e = c
        .members_by_email(&["ann.lee@acme.test".to_owned()])
        .await
        .expect_err("refused");
    let msg = format!("{e} {e:?}");
    assert!(matches!(e, ApiError::Transport { .. }), "{msg}");
    assert!(msg.contains("/2.0/workspaces/acme/members"), "{msg}");
    assert!(
        !msg.contains("ann.lee"),
        "an email reached the error: {msg}"
    );
}

/// A budget whose 429 backoff is a few milliseconds (the schedule is tested under paused
/// time in `bitbucket::budget`).
fn quick_budget(max_backoffs: u32) -> Arc<Budget> {
    Arc::new(Budget::new(
        "admin",
        BudgetSettings {
            // A pace the tests do not wait for (after a 429 it starts again from empty).
            requests_per_hour: 3_600_000,
            backoff_base: Duration::from_millis(5),
            max_backoffs,
            max_wait: Duration::from_secs(60),
            ..BudgetSettings::default()
        },
    ))
}

#[tokio::test]
async fn a_429_storm_without_retry_after_pauses_the_credential_then_stops_it_for_the_run() {
    let emu = start(seed(&[])).await;
    emu.set_rate_limit(1);
    let c = client_with(&emu.base_url(), three_quick_retries()).with_budget(quick_budget(2));
    c.list_groups().await.expect("within the limit");
    let e = c.list_groups().await.expect_err("the window is closed");
    let spent = e.spent().expect("the budget is spent, not a plain 429");
    assert_eq!(spent.credential, "admin");
    assert!(
        e.to_string()
            .contains("3 429s in a row without Retry-After"),
        "{e}"
    );
    assert_eq!(e.metric_label(), "budget_spent");
    // 1 good request, then the 429 and two backoffs: the 429s do not spend max_retries.
    assert_eq!(c.request_count(), 4);
    assert_eq!(c.budget().status().rate_limited, 3);
    // The rest of the run sends nothing into the closed window.
    let again = c.list_groups().await.expect_err("still spent");
    assert!(again.spent().is_some(), "{again}");
    assert_eq!(c.request_count(), 4, "nothing sent");
    // The next run of this process does not try again before the quiet time after a storm
    // (15 minutes): refused probes would count against the window too.
    c.budget().new_run();
    let e = c.list_groups().await.expect_err("resting");
    assert!(e.to_string().contains("reopens in"), "{e}");
    assert_eq!(c.request_count(), 4, "nothing sent");
}

#[tokio::test]
async fn a_retry_after_longer_than_max_wait_stops_the_credential_at_once() {
    let emu = start(seed(&[])).await;
    emu.inject_fault(Fault {
        status: 429,
        body: "Rate limit for this resource has been exceeded".into(),
        headers: vec![("retry-after".into(), "3450".into())],
        ..Fault::default()
    });
    let c = client_with(&emu.base_url(), three_quick_retries()).with_budget(quick_budget(4));
    let started = std::time::Instant::now();
    let e = c.list_groups().await.expect_err("spent");
    assert!(started.elapsed() < Duration::from_secs(5), "no waiting");
    let spent = e.spent().expect("spent");
    assert_eq!(spent.resume_in, Some(Duration::from_secs(3450)), "the ETA");
    assert!(e.to_string().contains("Retry-After 3450 s"), "{e}");
    assert_eq!(c.request_count(), 1, "one request, not one per retry");
    assert!(c.list_groups().await.is_err());
    assert_eq!(c.request_count(), 1);
}

#[tokio::test]
async fn a_short_retry_after_is_honoured_and_the_request_then_goes_through() {
    let emu = start(seed(&[])).await;
    emu.inject_fault(Fault {
        status: 429,
        body: "Rate limit for this resource has been exceeded".into(),
        headers: vec![("retry-after".into(), "1".into())],
        times: Some(1),
        ..Fault::default()
    });
    let c = client_with(&emu.base_url(), three_quick_retries()).with_budget(quick_budget(4));
    let started = std::time::Instant::now();
    c.list_groups().await.expect("after the pause");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited");
    assert_eq!(c.request_count(), 2);
}

#[tokio::test]
async fn an_html_page_answered_200_to_a_write_is_not_success_and_is_retried() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        path_contains: "/members/".into(),
        status: 200,
        body: "<html><body>Maintenance</body></html>".into(),
        content_type: Some("text/html".into()),
        times: Some(1),
        ..Fault::default()
    });
    let c = client_with(&emu.base_url(), three_quick_retries());
    let ann_user = emu.state().users[0].clone();
    let ann = ann_user.uuid.clone();
    let dev = GroupSlug::from_name("developers");
    c.add_member(&dev, &BbUuid::braced(&ann))
        .await
        .expect("retried after the HTML 200");
    assert_eq!(sent(&emu, "PUT", "/1.0/groups/acme/developers/members/"), 2);
    assert_eq!(emu.state().groups[0].members, vec![ann_user.account_id]);

    // Every answer an HTML page: the write fails, it is never "done".
    emu.inject_fault(Fault {
        method: Some("DELETE".into()),
        path_contains: "/members/".into(),
        status: 200,
        body: "<html>proxy</html>".into(),
        content_type: Some("text/html".into()),
        ..Fault::default()
    });
    let e = c
        .remove_member(&dev, &BbUuid::braced(&ann))
        .await
        .expect_err("an HTML 200 is not a delete");
    assert!(matches!(e, ApiError::BadAnswer { .. }), "{e}");
    assert!(e.to_string().contains("text/html"), "{e}");
    assert_eq!(
        sent(&emu, "DELETE", "/1.0/groups/acme/developers/members/"),
        4
    );
}

#[tokio::test]
async fn a_permissions_config_put_answered_with_something_else_than_a_grant_fails() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    add_repos(&mut s, "PROJ", "r", 1);
    let emu = start(s).await;
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        path_contains: "permissions-config".into(),
        status: 200,
        body: "{}".into(),
        content_type: Some("application/json".into()),
        ..Fault::default()
    });
    let c = client_with(&emu.base_url(), three_quick_retries());
    let repo = bbsync::model::RepoSlug::new("r-000");
    let e = c
        .put_permission(
            bbsync::bitbucket::Target::Repo(&repo),
            bbsync::bitbucket::Principal::Group(&GroupSlug::from_name("developers")),
            "write",
        )
        .await
        .expect_err("not a grant object");
    assert!(e.to_string().contains("not a grant object"), "{e}");
    assert!(emu.state().group_grants.is_empty());
}

#[tokio::test]
async fn a_listing_answered_with_malformed_json_once_is_read_again() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/1.0/groups/acme".into(),
        kind: bbsync_emulator::FaultKind::Malformed,
        body: "[{\"name\": \"Developers\", \"slug\": ".into(),
        times: Some(1),
        ..Fault::default()
    });
    let c = client_with(&emu.base_url(), three_quick_retries());
    let groups = c.list_groups().await.expect("read again");
    assert_eq!(groups.len(), 1);
    assert_eq!(sent(&emu, "GET", "/1.0/groups/acme"), 2);

    // Garbled every time: a clear error after the retries, never an empty listing.
    emu.inject_fault(Fault {
        method: Some("GET".into()),
        path_contains: "/1.0/groups/acme".into(),
        kind: bbsync_emulator::FaultKind::Malformed,
        body: "[{".into(),
        ..Fault::default()
    });
    let e = c.list_groups().await.expect_err("garbled");
    assert!(matches!(e, ApiError::BadAnswer { .. }), "{e}");
    assert_eq!(sent(&emu, "GET", "/1.0/groups/acme"), 6);
}
