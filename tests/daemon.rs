//! `bbsync run` as a process, over real sockets: its endpoints in each state, `/metrics`
//! through `promtool check metrics`, `POST /sync` behind its token, SIGTERM in the middle of an
//! apply (exit 0, every change audited), and SIGHUP with a good and a bad configuration.
//! The endpoints listen on a free port (`http.listen = "127.0.0.1:0"`); the test learns it from
//! the daemon's "serving" log line.

mod common;

use common::daemon::{signal, Daemon};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bbsync");
const TOKEN: &str = "0123456789abcdef-test-token";

/// A daemon configuration for `emu` with the endpoints on a free port and a token.
fn write_config(emu: &bbsync_emulator::Emulator, dir: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("bbsync.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{}"
max_retries = 0
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token = "{ADMIN_TOKEN}"
[source]
kind = "ldif"
path = "dir.ldif"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "audit.jsonl"
[apply]
requests_per_hour = 3600000
burst = 1000
[http]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[[groups]]
name = "Developers"
from = ["eng"]
{extra}"#,
            emu.base_url()
        ),
    )
    .expect("config");
    cfg
}

async fn get(url: &str) -> (u16, String, String) {
    bbsync::tls::install_provider();
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, r.text().await.expect("body"))
}

async fn post(url: &str, token: Option<&str>) -> u16 {
    bbsync::tls::install_provider();
    let mut req = reqwest::Client::new().post(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("POST").status().as_u16()
}

#[tokio::test]
async fn the_endpoints_answer_in_each_state_and_post_sync_needs_the_token() {
    let mut s = seed(&["ann", "bob"]);
    s.groups.push(group("Developers", &["bob"]));
    let emu = start(s).await;
    // Slow enough that the first reconcile is still running when the endpoints are asked.
    emu.set_latency(Duration::from_millis(400));
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("dir.ldif"),
        ldif(
            &[("ann", false), ("bob", true)],
            &[("eng", &["ann", "bob"])],
        ),
    )
    .expect("ldif");
    let d = Daemon::start(&write_config(&emu, tmp.path(), "")).await;

    // Alive, not yet ready: no reconcile has succeeded.
    let (code, _, body) = get(&d.url("/healthz")).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = get(&d.url("/readyz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no successful reconcile"), "{body}");

    d.wait_for("reconcile finished", 1).await;
    emu.set_latency(Duration::ZERO);
    let (code, _, body) = get(&d.url("/readyz")).await;
    assert_eq!(code, 200, "{body}");
    // Between runs the off-boarding poll's snapshot waits on disk, beside the audit file.
    d.wait_for("snapshot parked on disk", 1).await;
    let parked: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("poll-snapshot-") && n.ends_with(".json"))
        .collect();
    assert_eq!(parked.len(), 1, "{parked:?}");
    // `bbsync healthcheck` (the container's HEALTHCHECK) asks the same over plain HTTP.
    assert_eq!(healthcheck(&d.addr, false).await, (Some(0), String::new()));
    assert_eq!(healthcheck(&d.addr, true).await.0, Some(0));
    // The address may come from the environment instead (an image's HEALTHCHECK is fixed).
    let by_env = Command::new(BIN)
        .arg("healthcheck")
        .env("BBSYNC_HEALTHCHECK_ADDR", &d.addr)
        .output()
        .await
        .expect("bbsync healthcheck");
    assert_eq!(by_env.status.code(), Some(0), "{by_env:?}");

    let (code, ct, metrics) = get(&d.url("/metrics")).await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    for series in [
        "bbsync_reconciles_total{outcome=\"ok\"} 1",
        "bbsync_changes_total{kind=\"add_member\",outcome=\"applied\"} 1",
        "bbsync_changes_total{kind=\"remove_member\",outcome=\"applied\"} 1",
        "bbsync_api_requests_total{family=",
        "bbsync_build_info{version=",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(!metrics.contains('@'), "an email in the metrics");
    promtool_accepts(&metrics);

    let (code, ct, status) = get(&d.url("/status")).await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["mode"], "apply");
    assert_eq!(v["workspace"], "acme");
    assert_eq!(v["runs"][0]["outcome"], "ok", "{v:#}");
    assert_eq!(v["runs"][0]["kind"], "full");
    assert!(!status.contains('@'), "{status}");
    assert!(!status.contains("Person"), "no names in /status: {status}");

    // POST /sync: without, with a wrong and with the right token.
    assert_eq!(post(&d.url("/sync"), None).await, 401);
    assert_eq!(
        post(&d.url("/sync"), Some("wrong-token-wrong-token")).await,
        401
    );
    assert_eq!(post(&d.url("/sync"), Some(TOKEN)).await, 202);
    d.wait_for("reconcile finished", 2).await;
    // A burst of 20 during slow runs: coalesced into at most one run in progress and one
    // follow-up, never one run per request.
    emu.set_latency(Duration::from_millis(300));
    let before = d.count("reconcile finished");
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let url = d.url("/sync");
            tokio::spawn(async move { post(&url, Some(TOKEN)).await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.expect("join"), 202);
    }
    d.wait_for("reconcile finished", before + 1).await;
    // Long enough for any further run to have started and finished.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let runs = d.count("reconcile finished") - before;
    assert!((1..=2).contains(&runs), "{runs} runs for 20 requests");
    emu.set_latency(Duration::ZERO);
    assert_eq!(get(&d.url("/nope")).await.0, 404);

    let addr = d.addr.clone();
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let (code, err) = healthcheck(&addr, false).await;
    assert_eq!(code, Some(1), "nothing listens any more: {err}");
    assert!(err.contains("unhealthy: cannot ask /healthz"), "{err}");
    assert!(!log.contains(TOKEN), "the token reached the log");
    assert!(
        log.contains("\"run_id\""),
        "run_id on the run's lines: {log}"
    );
}

#[tokio::test]
async fn sigterm_in_the_middle_of_an_apply_exits_0_with_every_change_audited() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    add_repos(&mut s, "PROJ", "r", 150);
    let emu = start(s).await;
    emu.set_latency(Duration::from_millis(20));
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("dir.ldif"),
        ldif(&[("ann", false)], &[("eng", &["ann"])]),
    )
    .expect("ldif");
    let cfg = write_config(
        &emu,
        tmp.path(),
        "[[grants]]\ngroup = \"developers\"\npermission = \"write\"\nprojects = [\"PROJ\"]\n",
    );
    let d = Daemon::start(&cfg).await;
    // The apply is under way: some grants written, most still queued.
    let t0 = std::time::Instant::now();
    while emu.requests().iter().filter(|r| r.method == "PUT").count() < 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no apply: {}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
    let puts = emu
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.status < 300)
        .count();
    assert!(puts < 150, "the apply was not interrupted ({puts} grants)");
    let trail = std::fs::read_to_string(tmp.path().join("audit.jsonl")).expect("audit");
    let (dangling, _) =
        bbsync::apply::audit::dangling(&tmp.path().join("audit.jsonl"), 0).expect("scan");
    assert!(dangling.is_empty(), "an intent without outcome: {trail}");
    let applied = audit_finals(&trail)
        .iter()
        .filter(|r| r["change"]["op"] == "set_grant" && r["outcome"]["result"] == "applied")
        .count();
    assert_eq!(applied, puts, "every grant written is audited as applied");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[tokio::test]
async fn sighup_loads_a_good_configuration_and_rejects_a_bad_one_keeping_the_old() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &[]));
    s.groups.push(group("Ops", &[]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("dir.ldif"),
        ldif(&[("ann", false)], &[("eng", &["ann"])]),
    )
    .expect("ldif");
    let cfg = write_config(&emu, tmp.path(), "");
    let d = Daemon::start(&cfg).await;
    d.wait_for("reconcile finished", 1).await;

    // A bad configuration: rejected with its problem named; the old one keeps running.
    let good = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(&cfg, format!("{good}[apply]\nconcurrency = 0\n")).expect("write");
    d.signal("-HUP");
    d.wait_for("new configuration is rejected", 1).await;
    assert!(d.log().contains("apply"), "{}", d.log());
    assert_eq!(get(&d.url("/healthz")).await.0, 200);

    // A good one with a second rule: used from the next run on.
    std::fs::write(
        &cfg,
        format!("{good}[[groups]]\nname = \"Ops\"\nfrom = [\"eng\"]\n"),
    )
    .expect("write");
    d.signal("-HUP");
    d.wait_for("configuration reloaded", 1).await;
    assert_eq!(post(&d.url("/sync"), Some(TOKEN)).await, 202);
    d.wait_for("reconcile finished", 2).await;
    let ops = emu
        .state()
        .groups
        .into_iter()
        .find(|g| g.name == "Ops")
        .expect("ops");
    assert_eq!(ops.members, [acc("ann")], "{}", d.log());
    let (code, log) = d.stop().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn the_demo_serves_the_endpoints_it_prints_and_sigterm_stops_it_with_exit_0() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the demo");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut urls = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = out.next_line().await.expect("read") {
            let words: Vec<&str> = l.split_whitespace().collect();
            if let [name, url] = words[..] {
                if url.starts_with("http://") {
                    urls.insert(name.to_owned(), url.to_owned());
                }
            }
            let done = l.contains("SIGTERM stops it");
            seen.push(l);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the demo printed no endpoints: {seen:#?}"));
    for name in ["health", "ready", "metrics", "status"] {
        let url = urls
            .get(name)
            .unwrap_or_else(|| panic!("{name}: {seen:#?}"));
        // The daemon's start-up reconcile may still be running: /readyz turns 200 after it.
        let t0 = std::time::Instant::now();
        loop {
            let (code, _, body) = get(url).await;
            if code == 200 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{url}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, _, metrics) = get(&urls["metrics"]).await;
    promtool_accepts(&metrics);
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn systemd_hears_ready_and_stopping_on_notify_socket() {
    let mut s = seed(&["ann"]);
    s.groups.push(group("Developers", &["ann"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("dir.ldif"),
        ldif(&[("ann", false)], &[("eng", &["ann"])]),
    )
    .expect("ldif");
    let cfg = write_config(&emu, tmp.path(), "");
    let sock_path = tmp.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("bind");
    let mut child = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().expect("utf8")])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut got: Vec<String> = Vec::new();
    recv_until(&sock, "READY=1", &mut got).await;
    // The watchdog pings at half of WATCHDOG_USEC while the daemon is healthy.
    recv_until(&sock, "WATCHDOG=1", &mut got).await;
    signal(&child, "-TERM");
    recv_until(&sock, "STOPPING=1", &mut got).await;
    let status = child.wait().await.expect("wait");
    assert_eq!(status.code(), Some(0), "{got:?}");
}

/// Receives notify datagrams into `got` until one contains `want`.
async fn recv_until(sock: &tokio::net::UnixDatagram, want: &str, got: &mut Vec<String>) {
    let mut buf = vec![0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = sock.recv(&mut buf).await.expect("recv");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.contains(want);
            got.push(msg);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {want}: {got:?}");
}

/// `bbsync healthcheck --addr ADDR [--ready]`: its exit code and stderr.
async fn healthcheck(addr: &str, ready: bool) -> (Option<i32>, String) {
    let mut args = vec!["healthcheck", "--addr", addr];
    if ready {
        args.push("--ready");
    }
    let o = Command::new(BIN)
        .args(&args)
        .output()
        .await
        .expect("bbsync healthcheck");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
