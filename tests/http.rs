//! The daemon's HTTP endpoints over real sockets on 127.0.0.1: every endpoint in every state of
//! the daemon, the bearer token, approvals, and a burst of `POST /sync` coalescing into one run.

use bbsync::daemon::http;
use bbsync::daemon::state::{DaemonState, RunKind, RunSummary, StateInfo};
use bbsync::daemon::{Job, Schedule, Stats, Triggers};
use bbsync::metrics::Metrics;
use bbsync::reconcile::RunError;
use bbsync::secret::Secret;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "correct-horse-battery-staple";
const MAX_AGE: Duration = Duration::from_secs(600);

struct Server {
    base: String,
    state: Arc<DaemonState>,
    triggers: Arc<Triggers>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(token: Option<&str>) -> Server {
        bbsync::tls::install_provider();
        let triggers = Arc::new(Triggers::default());
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let state = Arc::new(DaemonState::new(
            StateInfo {
                mode: "apply",
                backend: "v1_groups".into(),
                workspace: "acme".into(),
                ready_max_age: MAX_AGE,
                token: token.map(Secret::new),
            },
            triggers.clone(),
            metrics.clone(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(http::serve(listener, state.clone(), stop.clone()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Server {
            base,
            state,
            triggers,
            metrics,
            client,
            stop,
            task,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    async fn post(&self, path: &str, auth: Option<&str>, body: &str) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().await.expect("POST")
    }

    /// Stops the server (it must return cleanly), then counts the runs the triggers asked for:
    /// the daemon loop runs once at start and then once per pending trigger; the interval is
    /// far away, so under paused time the runs after the first are exactly the triggered ones.
    async fn stop_and_count_triggered(self) -> Stats {
        self.stop.cancel();
        self.task.await.expect("join").expect("serve");
        drop(self.client);
        tokio::time::pause();
        let job = Counting;
        let schedule = Schedule {
            jitter: 0.0,
            ..Schedule::every(Duration::from_secs(3600))
        };
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let (stats, ()) = tokio::join!(
            bbsync::daemon::serve(&job, None, &schedule, &self.triggers, &stop),
            async move {
                tokio::time::sleep(Duration::from_secs(100)).await;
                stopper.cancel();
            }
        );
        stats
    }
}

struct Counting;

impl Job for Counting {
    fn run(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async { true })
    }
}

fn summary(kind: RunKind, outcome: &'static str, held: Option<&str>) -> RunSummary {
    RunSummary {
        run_id: format!("run-{outcome}"),
        kind,
        started_at: bbsync::time::now_rfc3339(),
        ended_at: bbsync::time::now_rfc3339(),
        duration_ms: 1200,
        outcome,
        dry_run: false,
        changes: BTreeMap::from([(
            "remove_member".to_owned(),
            BTreeMap::from([("applied".to_owned(), 2)]),
        )]),
        reasons: BTreeMap::from([("leaver".to_owned(), 2)]),
        held: Vec::new(),
        held_revocations: held.map(str::to_owned),
        error_kind: None,
        errors: Vec::new(),
        notes: Vec::new(),
        pending: BTreeMap::new(),
        eta_secs: None,
        api_requests: 4,
        unresolved: None,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_daemon_whose_loop_is_not_running_is_neither_healthy_nor_ready() {
    let s = Server::start(Some(TOKEN)).await;
    let (code, body) = s.get("/healthz").await;
    assert_eq!(code, 503);
    assert_eq!(body, "unhealthy: the scheduler loop is not running\n");
    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(body, "not ready: the scheduler loop is not running\n");
    let (code, body) = s.get("/status").await;
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(st["healthy"], false);
    assert_eq!(st["ready"], false);
    let (code, _) = s.get("/metrics").await;
    assert_eq!(code, 200, "metrics are served whatever the state");
}

#[tokio::test]
async fn alive_but_never_succeeded_is_healthy_and_not_ready() {
    let s = Server::start(Some(TOKEN)).await;
    s.state.set_alive(true);
    assert_eq!(s.get("/healthz").await, (200, "ok\n".to_owned()));
    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(body, "not ready: no successful reconcile yet\n");

    s.state.run_started("first", RunKind::Full);
    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(
        body,
        "not ready: no successful reconcile yet (run first in progress)\n"
    );
    let (_, body) = s.get("/status").await;
    let st: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(st["current_run"]["run_id"], "first");
    assert_eq!(st["current_run"]["kind"], "full");
    assert!(st["current_run"]["since"].is_string());
}

#[tokio::test]
async fn ready_after_a_successful_run_until_it_is_older_than_the_max_age() {
    let s = Server::start(Some(TOKEN)).await;
    s.state.set_alive(true);
    s.state.run_finished(summary(RunKind::Full, "ok", None));
    assert_eq!(s.get("/readyz").await, (200, "ready\n".to_owned()));

    // A failed run after it does not make the daemon unready: the last success still counts.
    s.state.run_finished(summary(RunKind::Full, "failed", None));
    assert_eq!(s.get("/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(s.get("/healthz").await.0, 200);

    // Age the success past the max age: the clock is tokio's, moved while paused.
    tokio::time::pause();
    tokio::time::advance(MAX_AGE + Duration::from_secs(1)).await;
    tokio::time::resume();
    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with("not ready: the last successful reconcile was 60")
            && body.ends_with(" s ago, more than http.ready_max_age_secs = 600\n"),
        "{body}"
    );
    assert_eq!(s.get("/healthz").await.0, 200, "still alive");
    let (_, body) = s.get("/status").await;
    let st: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(st["ready"], false);
    assert!(st["ready_reason"]
        .as_str()
        .expect("reason")
        .contains("http.ready_max_age_secs"));
    assert!(st["last_success"]["age_secs"].as_u64().expect("age") > 600);
}

#[tokio::test]
async fn a_failed_first_run_is_not_ready_and_status_never_shows_an_address() {
    let s = Server::start(Some(TOKEN)).await;
    s.state.set_alive(true);
    let started = bbsync::time::now_rfc3339();
    s.state.run_started("e1", RunKind::Full);
    let e = RunError::PlanMoved(
        "directory entry uid=ann (mail: ann.example@example.com) changed".into(),
    );
    let mut failed = RunSummary::from_error("e1", &started, RunKind::Full, &e);
    // A line added by hand, past from_error's redaction: the state redacts it on the way in.
    failed.errors.push("reach me at <bob@example.org>".into());
    s.state.run_finished(failed);

    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(
        body,
        "not ready: no successful reconcile yet (last run e1: error)\n"
    );
    assert_eq!(s.get("/healthz").await.0, 200);

    let (code, body) = s.get("/status").await;
    assert_eq!(code, 200);
    assert!(!body.contains('@'), "{body}");
    let st: serde_json::Value = serde_json::from_str(&body).expect("json");
    for key in [
        "mode",
        "backend",
        "workspace",
        "started_at",
        "uptime_secs",
        "healthy",
        "ready",
        "ready_reason",
        "current_run",
        "last_success",
        "pending",
        "held_revocations",
        "approval_pending",
        "runs",
    ] {
        assert!(st.get(key).is_some(), "/status has no {key}: {st}");
    }
    assert_eq!(st["mode"], "apply");
    assert_eq!(st["backend"], "v1_groups");
    assert_eq!(st["workspace"], "acme");
    assert_eq!(st["healthy"], true);
    assert!(st["current_run"].is_null(), "the run ended");
    assert!(st["last_success"].is_null());
    let run = &st["runs"][0];
    assert_eq!(run["run_id"], "e1");
    assert_eq!(run["kind"], "full");
    assert_eq!(run["outcome"], "error");
    assert_eq!(run["error_kind"], "plan_moved");
    assert_eq!(
        run["errors"][0],
        "the reviewed plan no longer matches, nothing changed: directory entry uid=ann (mail: <redacted> changed"
    );
    assert_eq!(run["errors"][1], "reach me at <redacted>");
}

#[tokio::test]
async fn status_lists_the_last_runs_newest_first_with_their_counts() {
    let s = Server::start(Some(TOKEN)).await;
    s.state.set_alive(true);
    s.state.run_finished(summary(RunKind::Full, "ok", None));
    let mut poll = summary(RunKind::OffboardingPoll, "failed", None);
    poll.pending = BTreeMap::from([("offboarding".to_owned(), 3)]);
    poll.eta_secs = Some(42);
    s.state.run_finished(poll);
    let (_, body) = s.get("/status").await;
    let st: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(st["runs"][0]["kind"], "offboarding_poll");
    assert_eq!(st["runs"][0]["eta_secs"], 42);
    assert_eq!(st["runs"][1]["kind"], "full");
    assert_eq!(st["runs"][1]["changes"]["remove_member"]["applied"], 2);
    assert_eq!(st["runs"][1]["reasons"]["leaver"], 2);
    assert_eq!(st["pending"]["offboarding"], 3);
    assert_eq!(st["ready"], true, "the full run succeeded");
    assert!(st["last_success"]["at"].is_string());
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let s = Server::start(None).await;
    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .expect("content type")
            .to_str()
            .expect("ascii"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = r.text().await.expect("body");
    assert_eq!(body, s.metrics.render());
    assert!(body.contains("bbsync_"), "{body}");
}

#[tokio::test]
async fn sync_needs_the_bearer_token() {
    let s = Server::start(Some(TOKEN)).await;

    let r = s.post("/sync", None, "").await;
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("missing bearer token"));

    for wrong in [
        bearer("correct-horse-battery-stapl"),
        bearer("correct-horse-battery-staple-and-more"),
        bearer(""),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let r = s.post("/sync", Some(&wrong), "").await;
        assert_eq!(r.status().as_u16(), 401, "{wrong}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer"));
        let body = r.text().await.expect("body");
        assert!(!body.contains(TOKEN), "{body}");
    }

    let r = s.post("/sync", Some(&bearer(TOKEN)), "").await;
    assert_eq!(r.status().as_u16(), 202);
    let body = r.text().await.expect("body");
    assert!(body.starts_with("reconcile requested"), "{body}");
    assert!(!body.contains(TOKEN));
    // The scheme is case-insensitive (RFC 7235).
    let r = s.post("/sync", Some(&format!("bearer {TOKEN}")), "").await;
    assert_eq!(r.status().as_u16(), 202);

    let stats = s.stop_and_count_triggered().await;
    assert_eq!(
        stats.triggered, 1,
        "two accepted requests before a run are one"
    );
    assert_eq!(stats.runs, 2);
}

#[tokio::test]
async fn without_a_configured_token_sync_and_approve_are_disabled() {
    let s = Server::start(None).await;
    for path in ["/sync", "/approve"] {
        for auth in [None, Some(bearer(TOKEN))] {
            let r = s
                .post(path, auth.as_deref(), r#"{"revocations":"x"}"#)
                .await;
            assert_eq!(r.status().as_u16(), 403, "{path}");
            let body = r.text().await.expect("body");
            assert_eq!(
                body,
                "this endpoint is disabled until http.token (or http.token_file) is set\n"
            );
        }
    }
    let stats = s.stop_and_count_triggered().await;
    assert_eq!(stats.triggered, 0, "nothing was requested");
}

#[tokio::test]
async fn approve_takes_exactly_the_held_set_with_the_token() {
    let s = Server::start(Some(TOKEN)).await;
    s.state.set_alive(true);
    let auth = bearer(TOKEN);
    let body = r#"{"revocations": "1f2e3d4c5b6a"}"#;

    let r = s.post("/approve", None, body).await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = s.post("/approve", Some(&bearer("nope")), body).await;
    assert_eq!(r.status().as_u16(), 401);

    // Nothing held yet.
    let r = s.post("/approve", Some(&auth), body).await;
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(
        r.text().await.expect("body"),
        "nothing to approve: the last full reconcile held no revocations\n"
    );

    s.state
        .run_finished(summary(RunKind::Full, "failed", Some("1f2e3d4c5b6a")));
    let (_, st) = s.get("/status").await;
    let st: serde_json::Value = serde_json::from_str(&st).expect("json");
    assert_eq!(st["held_revocations"], "1f2e3d4c5b6a");
    assert_eq!(st["approval_pending"], false);

    for malformed in [
        "",
        "not json",
        r#"{"revocation": "1f2e3d4c5b6a"}"#,
        r#"{"revocations": 7}"#,
        r#"["1f2e3d4c5b6a"]"#,
    ] {
        let r = s.post("/approve", Some(&auth), malformed).await;
        assert_eq!(r.status().as_u16(), 400, "{malformed}");
        assert!(r
            .text()
            .await
            .expect("body")
            .starts_with("expected a JSON body"));
    }

    let r = s
        .post("/approve", Some(&auth), r#"{"revocations": "0000"}"#)
        .await;
    assert_eq!(r.status().as_u16(), 409);
    let text = r.text().await.expect("body");
    assert!(text.contains("held revocations 1f2e3d4c5b6a"), "{text}");
    assert_eq!(
        s.state.take_approval(),
        None,
        "a wrong one approves nothing"
    );

    let r = s.post("/approve", Some(&auth), body).await;
    assert_eq!(r.status().as_u16(), 202);
    assert!(r
        .text()
        .await
        .expect("body")
        .starts_with("approved the held revocations 1f2e3d4c5b6a"));
    let (_, st) = s.get("/status").await;
    let st: serde_json::Value = serde_json::from_str(&st).expect("json");
    assert_eq!(st["approval_pending"], true);
    assert_eq!(s.state.take_approval().as_deref(), Some("1f2e3d4c5b6a"));
    assert_eq!(s.state.take_approval(), None, "taken once");

    let stats = s.stop_and_count_triggered().await;
    assert_eq!(stats.triggered, 1, "the approval asked for a run");
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths() {
    let s = Server::start(Some(TOKEN)).await;
    let (code, _) = s.get("/sync").await;
    assert_eq!(code, 405);
    let (code, _) = s.get("/approve").await;
    assert_eq!(code, 405);
    for path in ["/healthz", "/readyz", "/metrics", "/status"] {
        let r = s.post(path, Some(&bearer(TOKEN)), "").await;
        assert_eq!(r.status().as_u16(), 405, "{path}");
        assert!(r.headers().contains_key("allow"), "{path}");
    }
    let (code, body) = s.get("/nope").await;
    assert_eq!(code, 404);
    assert!(body.starts_with("not found"), "{body}");
    assert_eq!(s.post("/nope", None, "").await.status().as_u16(), 404);
}

#[tokio::test]
async fn a_burst_of_fifty_syncs_is_one_follow_up_run() {
    let s = Server::start(Some(TOKEN)).await;
    let auth = bearer(TOKEN);
    let answers =
        futures_util::future::join_all((0..50).map(|_| s.post("/sync", Some(&auth), ""))).await;
    assert!(answers.iter().all(|r| r.status().as_u16() == 202));
    drop(answers);
    let stats = s.stop_and_count_triggered().await;
    assert_eq!(stats.runs, 2, "the run at start and one follow-up");
    assert_eq!(stats.triggered, 1);
}

#[tokio::test]
async fn serve_returns_when_shutdown_is_cancelled() {
    let s = Server::start(Some(TOKEN)).await;
    assert_eq!(s.get("/healthz").await.0, 503);
    s.stop.cancel();
    s.task.await.expect("join").expect("serve returns Ok");
    assert!(
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .is_err(),
        "nothing listens any more"
    );
}
