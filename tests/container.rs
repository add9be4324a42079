//! The container image, for real: the repository's Dockerfile built by podman (buildah inside)
//! and run on runc, as an operator would, from a release binary built here.
//!
//! No registry is reachable, so the Rust builder image cannot be pulled: the image is built
//! from the filesystem `scripts/rootfs.sh` lays out from the locally built binary, through the
//! Dockerfile's target `runtime-from-context`, the one documented for this. That target is the
//! shipped one's stage `image` (user, labels, `EXPOSE`, `HEALTHCHECK`, entrypoint) with the
//! same COPYs and `VOLUME` from another source, which a test below holds them to.
//!
//! Podman runs with its own storage (vfs) and configuration in a temporary directory, so the
//! test touches no system state; containers use the host's network namespace so that only
//! loopback addresses are used (the daemon in the container talks to the emulator started
//! here, and the test probes the daemon's endpoints from the host).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const TAG: &str = "localhost/bbsync:container-test";
/// Keeps the image's HEALTHCHECK but sets up no timer for it (podman would ask systemd, which
/// does not run here); the test runs the check itself with `podman healthcheck run`.
const NO_TIMER: &str = "--health-interval=disable";
/// The issue's goal (ldap2pg's image is 17 MB).
const MAX_IMAGE_BYTES: u64 = 20_000_000;

/// A podman with private storage, configuration and state under one temporary directory.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        for (tool, package) in [("podman", "podman"), ("runc", "runc")] {
            let found = Command::new(tool).arg("--version").output();
            assert!(
                found.is_ok_and(|o| o.status.success()),
                "{tool} is needed to build and run the image (Debian package {package}; \
                 scripts/test.sh installs it)"
            );
        }
        sweep_stale_dirs();
        // Short path: conmon's attach socket lives under the run root (108-byte limit).
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in("/tmp")
            .expect("podman dir");
        std::fs::write(dir.path().join(OWNER), std::process::id().to_string()).expect("owner");
        // runc: crun fails here ("cgroups in hybrid mode not supported"); no default
        // ulimits: setrlimit is refused in this sandbox; cgroupfs and file events: no systemd.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        Podman { dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        podman_in(self.dir.path(), args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run podman")
    }

    /// Runs podman and returns stdout; panics with everything it said on failure.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "podman {args:?} failed:\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers still running (a failed test) would keep files busy and conmon alive.
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}

/// podman with its storage, state and configuration in `d`.
fn podman_in(d: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", d.join("containers.conf"))
        .env("TMPDIR", d)
        .arg("--storage-driver=vfs")
        .arg(format!("--root={}", d.join("root").display()))
        .arg(format!("--runroot={}", d.join("run").display()))
        .arg(format!("--tmpdir={}", d.join("tmp").display()))
        .args(args);
    c
}

/// Where each run's podman lives: `/tmp/bbp*`, with the pid of the test process that made it.
const DIR_PREFIX: &str = "bbp";
const OWNER: &str = "owner.pid";

/// The image is built once per test process and kept in a static, which is never dropped: the
/// next run removes the directories (and any container left in them) of test processes that
/// have ended, so at most one is left behind on a machine.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let named = e.file_name().to_string_lossy().starts_with(DIR_PREFIX);
        let Ok(pid) = std::fs::read_to_string(path.join(OWNER)) else {
            continue;
        };
        if !named || Path::new("/proc").join(pid.trim()).exists() {
            continue;
        }
        let _ = podman_in(&path, &["rm", "--all", "--force", "--time", "0"]).output();
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Removes a detached container when dropped, so that a failed assertion does not leave it
/// running (and listening) after the test.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The release binary, built now (the image ships the release profile: its size is the
/// point). Same target directory as this test's own binaries.
fn release_binary() -> PathBuf {
    let debug_bin = Path::new(env!("CARGO_BIN_EXE_bbsync"));
    let target = debug_bin
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let o = Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "bbsync"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(repo())
        .output()
        .expect("run cargo build --release");
    assert!(o.status.success(), "cargo build --release:\n{}", text(&o));
    target.join("release").join("bbsync")
}

/// The image, built once for all the tests of this file.
fn image() -> &'static Podman {
    static IMAGE: OnceLock<Podman> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let podman = Podman::new();
        let bin = release_binary();
        let ctx = podman.dir.path().join("ctx");
        let rootfs = ctx.join("rootfs");
        let o = Command::new("sh")
            .arg(repo().join("scripts/rootfs.sh"))
            .arg(&bin)
            .arg(&rootfs)
            .output()
            .expect("run scripts/rootfs.sh");
        assert!(o.status.success(), "scripts/rootfs.sh:\n{}", text(&o));
        let dockerfile = repo().join("Dockerfile");
        podman.ok(&[
            "build",
            // HEALTHCHECK exists only in the docker image format (OCI has no such field).
            "--format=docker",
            "--pull=never",
            "--target=runtime-from-context",
            &format!("--build-arg=VERSION={VERSION}"),
            "--tag",
            TAG,
            "--file",
            dockerfile.to_str().expect("utf-8 path"),
            ctx.to_str().expect("utf-8 path"),
        ]);
        podman
    })
}

fn inspect(podman: &Podman, what: &str, name: &str) -> serde_json::Value {
    let out = podman.ok(&[what, "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].clone()
}

#[test]
fn the_image_is_small_unprivileged_labelled_and_checks_its_own_health() {
    let podman = image();
    let img = inspect(podman, "image", TAG);
    let size = img["Size"].as_u64().expect("Size");
    eprintln!("image size: {size} bytes");
    assert!(
        size <= MAX_IMAGE_BYTES,
        "image is {size} bytes, goal {MAX_IMAGE_BYTES}"
    );
    let config = &img["Config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert!(config["ExposedPorts"].get("9184/tcp").is_some(), "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/bbsync"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["run", "--config", "/etc/bbsync/bbsync.toml"])
    );
    assert_eq!(
        img["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/usr/local/bin/bbsync", "healthcheck"]),
        "{img}"
    );
    assert!(
        config["Volumes"].get("/var/lib/bbsync").is_some(),
        "{config}"
    );
    let labels = &img["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.title"], "bbsync");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    // One layer of files plus the state directory's re-owned copy: nothing from a base image.
    let layers = img["RootFS"]["Layers"].as_array().expect("layers").len();
    assert!(layers <= 3, "{layers} layers: {img}");
}

#[test]
fn version_demo_and_a_failing_healthcheck_run_in_the_image() {
    let podman = image();
    let version = podman.ok(&["run", "--rm", "--network=none", NO_TIMER, TAG, "--version"]);
    assert_eq!(version.trim(), format!("bbsync {VERSION}"));

    // No shell in the image: a command that is not bbsync cannot run.
    let shell = podman.run(&[
        "run",
        "--rm",
        "--network=none",
        NO_TIMER,
        "--entrypoint=/bin/sh",
        TAG,
        "-c",
        "true",
    ]);
    assert!(!shell.status.success(), "a shell ran:\n{}", text(&shell));

    // The whole demo (embedded emulator, sample directory) on a read-only root filesystem,
    // as the unprivileged user.
    let demo = podman.run(&[
        "run",
        "--rm",
        "--network=none",
        "--read-only",
        NO_TIMER,
        TAG,
        "demo",
        "--once",
    ]);
    let out = text(&demo);
    assert_eq!(demo.status.code(), Some(0), "{out}");
    for expected in ["Reconcile 2", "Plan: no changes", "Applied:"] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // Nothing listening: the healthcheck says so and exits 1.
    let hc = podman.run(&[
        "run",
        "--rm",
        "--network=none",
        NO_TIMER,
        TAG,
        "healthcheck",
    ]);
    assert_eq!(hc.status.code(), Some(1), "{}", text(&hc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_in_the_image_serves_health_and_metrics_to_the_host_and_stops_cleanly() {
    let podman = image();
    let mut s = seed(&["ann", "bob"]);
    s.groups.push(group("Developers", &[]));
    let emu = start(s).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let conf = tempfile::tempdir().expect("conf dir");
    let secrets = tempfile::tempdir().expect("secrets dir");
    std::fs::write(
        secrets.path().join("bitbucket-token"),
        format!("{ADMIN_TOKEN}\n"),
    )
    .expect("token");
    std::fs::write(
        conf.path().join("directory.ldif"),
        ldif(
            &[("ann", false), ("bob", false)],
            &[("eng", &["ann", "bob"])],
        ),
    )
    .expect("ldif");
    std::fs::write(
        conf.path().join("bbsync.toml"),
        format!(
            r#"# The paths the image documents: config in /etc/bbsync, secrets as files in
# /run/secrets/bbsync, state in the /var/lib/bbsync volume. Applying, so that it must write
# its state and audit trail there as the image's user.
mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{api}"
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token_file = "/run/secrets/bbsync/bitbucket-token"
[source]
kind = "ldif"
path = "/etc/bbsync/directory.ldif"
[[groups]]
name = "Developers"
from = ["eng"]
[offboarding]
state_dir = "/var/lib/bbsync"
[audit]
path = "/var/lib/bbsync/audit.jsonl"
[http]
listen = "{listen}"
[log]
format = "json"
"#,
            api = emu.base_url()
        ),
    )
    .expect("config");
    // The mounted files must be readable by the image's user, as an operator's would be.
    for d in [conf.path(), secrets.path()] {
        make_world_readable(d);
    }
    let name = format!("bbsync-test-{port}");
    let conf_mount = format!("{}:/etc/bbsync:ro", conf.path().display());
    let secret_mount = format!("{}:/run/secrets/bbsync:ro", secrets.path().display());
    let health_env = format!("BBSYNC_HEALTHCHECK_ADDR={listen}");
    podman.ok(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network=host",
        "--read-only",
        NO_TIMER,
        "--env",
        &health_env,
        "--volume",
        &conf_mount,
        "--volume",
        &secret_mount,
        TAG,
    ]);
    let _running = Container {
        podman,
        name: name.clone(),
    };
    let logs = || text(&podman.run(&["logs", &name]));

    // From the host, over a real socket: healthy at once, ready after the first reconcile.
    let base = format!("http://{listen}");
    let healthz = wait_for_status(&format!("{base}/healthz"), 200).await;
    assert!(healthz, "no /healthz 200:\n{}", logs());
    let ready = wait_for_status(&format!("{base}/readyz"), 200).await;
    assert!(ready, "no /readyz 200:\n{}", logs());
    bbsync::tls::install_provider();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains(&format!("bbsync_build_info{{version=\"{VERSION}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("bbsync_reconciles_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    promtool_accepts(&metrics);

    // The image's own HEALTHCHECK, run by podman inside the container, and the subcommand.
    let hc = podman.run(&["healthcheck", "run", &name]);
    assert!(hc.status.success(), "HEALTHCHECK failed:\n{}", text(&hc));
    let ready_hc = podman.run(&[
        "exec",
        &name,
        "/usr/local/bin/bbsync",
        "healthcheck",
        "--ready",
    ]);
    assert!(ready_hc.status.success(), "{}", text(&ready_hc));

    // The process is the image's user, not root (read from the host's /proc).
    let state = inspect(podman, "container", &name);
    let pid = state["State"]["Pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert_eq!(uids, ["65532"; 4], "{uid_line}");

    // It applied the plan (ann and bob into Developers) and audited it in the volume, so the
    // image's user can write its state directory.
    let added: Vec<String> = writes(&emu);
    assert_eq!(added.len(), 2, "{added:?}\n{}", logs());
    let copied = conf.path().join("audit-copy.jsonl");
    podman.ok(&[
        "cp",
        &format!("{name}:/var/lib/bbsync/audit.jsonl"),
        copied.to_str().expect("utf-8 path"),
    ]);
    let trail = std::fs::read_to_string(&copied).expect("audit trail");
    let finals = audit_finals(&trail);
    assert_eq!(finals.len(), 2, "{trail}");
    assert!(
        finals.iter().all(|r| r["outcome"]["result"] == "applied"),
        "{trail}"
    );

    // It logged JSON lines, with the run id, and never the token.
    let log_text = logs();
    assert!(log_text.contains("\"run_id\""), "{log_text}");
    assert!(
        !log_text.contains(ADMIN_TOKEN),
        "token in logs:\n{log_text}"
    );

    // SIGTERM (podman stop): exit 0 within the grace period.
    podman.ok(&["stop", "--time", "40", &name]);
    let stopped = inspect(podman, "container", &name);
    assert_eq!(
        stopped["State"]["ExitCode"],
        0,
        "{}\n{}",
        stopped["State"],
        logs()
    );
    podman.ok(&["rm", &name]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn make_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

/// Polls `url` until it answers `want` (60 s at most: the first reconcile runs at start-up).
async fn wait_for_status(url: &str, want: u16) -> bool {
    bbsync::tls::install_provider();
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() == want {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The test builds `runtime-from-context`; a plain build makes `runtime`. Both must be the
/// shared stage `image` plus the same instructions, but for where the files come from (the
/// build context, or the builder's output), and `image` must hold no files of its own.
#[test]
fn the_tested_target_is_the_shipped_one_but_for_the_source_of_its_files() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    // Stages: (name, base, instructions), comments and continuations folded.
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            logical.push_str(part);
            continue;
        }
        logical.push_str(line);
        let instr = std::mem::take(&mut logical);
        if let Some(rest) = instr.strip_prefix("FROM ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(w.len(), 3, "FROM without a stage name: {instr}");
            stages.push((w[2].to_owned(), w[0].to_owned(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(instr);
        }
    }
    let stage = |name: &str| {
        stages
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no stage {name}"))
    };
    let last = stages.last().expect("stages");
    assert_eq!(
        last.0, "runtime",
        "a plain build must make the runtime target"
    );
    let (_, image_base, image) = stage("image");
    assert_eq!(image_base, "scratch");
    assert!(
        image
            .iter()
            .all(|i| !i.starts_with("COPY") && !i.starts_with("ADD") && !i.starts_with("RUN")),
        "the shared stage holds settings only: {image:?}"
    );
    for needed in [
        "USER 65532:65532",
        "EXPOSE 9184",
        "HEALTHCHECK",
        "ENTRYPOINT",
    ] {
        assert!(
            image.iter().any(|i| i.starts_with(needed)),
            "{needed} missing from the shared stage"
        );
    }
    let (_, ctx_base, from_context) = stage("runtime-from-context");
    let (_, base, shipped) = stage("runtime");
    assert_eq!((ctx_base.as_str(), base.as_str()), ("image", "image"));
    // The shipped target's COPYs, with their source written as the context's.
    let as_context: Vec<String> = shipped
        .iter()
        .map(|i| {
            i.replace("--from=rootfs-build ", "")
                .replace(" /rootfs/", " rootfs/")
        })
        .collect();
    assert_eq!(&as_context, from_context);
    assert!(
        shipped
            .iter()
            .any(|i| i.starts_with("COPY --from=rootfs-build")),
        "{shipped:?}"
    );
    let (_, rootfs_base, _) = stage("rootfs-build");
    assert_eq!(rootfs_base, "builder");
}
