//! `bbsync run` as a child process: started on a configuration, its JSON log kept, its
//! endpoints found from the "serving" log line (the configuration listens on a free port).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_bbsync");

pub struct Daemon {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub addr: String,
}

impl Daemon {
    /// Starts `bbsync run -c cfg` and waits until its endpoints listen.
    pub async fn start(cfg: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .args([
                "run",
                "-c",
                cfg.to_str().expect("utf8"),
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bbsync run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut reader = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let kept = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(l)) = reader.next_line().await {
                if let Some(addr) = serving_addr(&l) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                kept.lock().expect("lines").push(l);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| panic!("the endpoints never listened: {:#?}", lines.lock()))
            .expect("serving line");
        Daemon { child, lines, addr }
    }

    pub fn log(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until the log holds `n` lines containing `needle`.
    pub async fn wait_for(&self, needle: &str, n: usize) {
        let t0 = std::time::Instant::now();
        while self.count(needle) < n {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "waited for {n} x {needle:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// SIGTERM, then the exit code and the whole log.
    pub async fn stop(mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stopped within 30 s")
            .expect("wait");
        // Let the reader drain the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), self.log())
    }

    pub async fn metrics(&self) -> String {
        bbsync::tls::install_provider();
        let r = reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("body")
    }

    /// Waits until /metrics has a sample starting with `series` whose value is above 0
    /// (most labelled series exist at 0 from start-up), and returns that /metrics.
    pub async fn wait_for_series(&self, series: &str) -> String {
        let t0 = std::time::Instant::now();
        loop {
            let text = self.metrics().await;
            let counted = text.lines().any(|l| {
                l.starts_with(series)
                    && l.rsplit_once(' ')
                        .and_then(|(_, v)| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
            });
            if counted {
                return text;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no {series} above 0 in /metrics:\n{text}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends `sig` (`-TERM`, `-HUP`) to `child` with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("pid").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

/// The address in the daemon's "serving /healthz ..." JSON log line.
fn serving_addr(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let msg = v["fields"]["message"].as_str()?;
    if !msg.starts_with("serving /healthz") {
        return None;
    }
    v["fields"]["addr"].as_str().map(str::to_owned)
}
