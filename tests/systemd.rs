//! The systemd unit, `deploy/systemd/bbsync.service`, as systemd itself reads it, and against
//! what bbsync really does:
//! - `systemd-analyze verify` is silent on it, in a scratch root where `/usr/local/bin/bbsync`
//!   is the binary just built (verify checks that `ExecStart=`'s program exists);
//! - `systemd-analyze security --offline=true` rates its exposure at most 2.0;
//! - it is `Type=notify` with a watchdog, a dynamic user and a state directory, stops slower
//!   than the daemon's own shutdown timeout, and does not restart on the exit code a
//!   configuration error really gives;
//! - its `LoadCredential=` lines and the `${CREDENTIALS_DIRECTORY}/...` files of
//!   `config/bbsync.example.toml` are the same set, and the example loads in the real binary
//!   with `CREDENTIALS_DIRECTORY` set (and fails naming the keys without it).
//!
//! `systemd-analyze` is required, not optional: without it these tests fail, naming the Debian
//! package (`scripts/test.sh` installs it). No systemd needs to be running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bbsync");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/bbsync.service");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/bbsync.example.toml");
/// The most `systemd-analyze security` may rate the unit (issue 19).
const MAX_EXPOSURE: f64 = 2.0;

/// Runs `systemd-analyze ARGS` without colours or pager. Fails, naming the package, when it is
/// not installed.
fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .env_remove("SYSTEMD_UNIT_PATH")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install the Debian package `systemd` \
                 (apt-get install systemd; scripts/test.sh does it when it is missing)"
            )
        })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- systemd-analyze verify ------------------------------------------------------------------

/// Copies `from` into `to`: directories, regular files, and symbolic links as links.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let target = std::fs::read_link(&src).expect("read_link");
            std::os::unix::fs::symlink(target, &dst).expect("symlink");
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// The first of `candidates` that exists.
fn first_existing(candidates: &[&str], what: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{what}: none of {candidates:?} exists"))
}

/// A scratch root for `systemd-analyze verify --root=`: the host's own unit files (for
/// `sysinit.target`, `network-online.target` and the other units the unit refers to), the
/// unit at `/etc/systemd/system/bbsync.service` with `unit_text`, the bbsync just built at
/// `/usr/local/bin/bbsync`, `/bin/kill` for `ExecReload=`, and `/etc/bbsync`.
fn scratch_root(unit_text: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    let units = first_existing(
        &["/usr/lib/systemd/system", "/lib/systemd/system"],
        "the host's systemd unit directory (Debian package `systemd`)",
    );
    copy_tree(&units, &r.join(units.strip_prefix("/").expect("absolute")));
    std::fs::create_dir_all(r.join("etc/systemd/system")).expect("mkdir");
    std::fs::write(r.join("etc/systemd/system/bbsync.service"), unit_text).expect("unit");
    std::fs::create_dir_all(r.join("etc/bbsync/credentials")).expect("mkdir");
    for (from, to) in [
        (PathBuf::from(BIN), "usr/local/bin/bbsync"),
        (
            first_existing(
                &["/bin/kill", "/usr/bin/kill"],
                "kill(1) for ExecReload= (Debian package `procps`)",
            ),
            "bin/kill",
        ),
    ] {
        let to = r.join(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&from, &to).expect("copy the program");
    }
    root
}

fn verify_in(root: &Path) -> Output {
    systemd_analyze(&[
        "verify",
        // Non-zero on any warning, the unit's or one of the units it pulls in.
        "--recursive-errors=yes",
        &format!("--root={}", root.display()),
        "/etc/systemd/system/bbsync.service",
    ])
}

#[test]
fn systemd_analyze_verify_prints_nothing_on_the_shipped_unit() {
    let shipped = std::fs::read_to_string(UNIT).expect("the unit");
    let root = scratch_root(&shipped);
    assert_eq!(
        std::fs::read(root.path().join("etc/systemd/system/bbsync.service")).expect("copy"),
        shipped.as_bytes(),
        "verified byte for byte as shipped"
    );
    let o = verify_in(root.path());
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "systemd-analyze verify printed:\n{}",
        text(&o)
    );
    assert!(o.status.success(), "{:?}: {}", o.status, text(&o));

    // The same root sees a mistake: the silence above is verify reading the unit, not missing it.
    let root = scratch_root(&format!(
        "{shipped}\n[Service]\nProtectSytem=strict\nExecStartPost=/usr/local/bin/no-such-program\n"
    ));
    let o = verify_in(root.path());
    let out = text(&o);
    assert!(out.contains("ProtectSytem"), "typo not reported: {out}");
    assert!(
        out.contains("/usr/local/bin/no-such-program"),
        "missing program not reported: {out}"
    );
}

// ---- systemd-analyze security ----------------------------------------------------------------

/// The overall exposure `systemd-analyze security --offline=true` gives the unit file `path`.
fn exposure(path: &Path) -> (f64, String) {
    let o = systemd_analyze(&[
        "security",
        "--offline=true",
        "--no-pager",
        path.to_str().expect("utf8"),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{:?}: {out}", o.status);
    // "→ Overall exposure level for bbsync.service: 1.1 OK 🙂"
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{out}"));
    let score = line
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    (score, out)
}

#[test]
fn systemd_analyze_security_rates_the_unit_at_most_2() {
    let (score, out) = exposure(Path::new(UNIT));
    println!("overall exposure of deploy/systemd/bbsync.service: {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}; the settings that cost:\n{}",
        out.lines()
            .filter(|l| l.trim_start().starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The number read is the real one: a unit without hardening rates far worse.
    let bare = tempfile::tempdir().expect("tmp");
    let path = bare.path().join("bbsync.service");
    std::fs::write(
        &path,
        "[Service]\nExecStart=/usr/local/bin/bbsync run --config /etc/bbsync/bbsync.toml\n",
    )
    .expect("write");
    let (bare_score, out) = exposure(&path);
    assert!(bare_score > 5.0, "a bare unit rated {bare_score}:\n{out}");
}

// ---- what the unit says ----------------------------------------------------------------------

/// A unit file as `section -> key -> values` (a key may repeat); comments dropped.
fn unit_settings(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continued lines are not read here: {line}"
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        sections
            .entry(section.clone())
            .or_default()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    sections
}

fn service() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(UNIT).expect("the unit");
    unit_settings(&text)
        .remove("Service")
        .expect("a [Service] section")
}

/// The one value of `key`.
fn one<'a>(s: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match s.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

/// A systemd time span as written here: `N`, `Ns` or `Nmin`.
fn seconds(key: &str, v: &str) -> u64 {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("{key}={v}: not a number"));
    match unit {
        "" | "s" => n,
        "min" => n * 60,
        _ => panic!("{key}={v}: unit {unit:?} not read here"),
    }
}

#[test]
fn the_unit_is_a_notify_service_with_a_watchdog_a_dynamic_user_and_a_state_directory() {
    let s = service();
    assert_eq!(one(&s, "Type"), "notify");
    assert_eq!(one(&s, "NotifyAccess"), "main");
    assert!(seconds("WatchdogSec", one(&s, "WatchdogSec")) > 0);
    assert_eq!(one(&s, "DynamicUser"), "yes");
    assert_eq!(one(&s, "StateDirectory"), "bbsync");
    assert_eq!(
        one(&s, "ExecStart"),
        "/usr/local/bin/bbsync run --config /etc/bbsync/bbsync.toml"
    );
    assert_eq!(one(&s, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&s, "Restart"), "on-failure");
}

/// Runs the built bbsync with `args` and `env` (and no `CREDENTIALS_DIRECTORY` unless given),
/// killed after a minute.
fn bbsync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUST_LOG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn bbsync");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bbsync {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_configuration_error_is_not_restarted_and_a_stop_outlasts_the_shutdown_timeout() {
    let s = service();
    // The exit code `bbsync run` really gives a configuration it cannot use.
    let tmp = tempfile::tempdir().expect("tmp");
    let missing = tmp.path().join("missing.toml");
    let o = bbsync(&["run", "--config", missing.to_str().expect("utf8")], &[]);
    let code = o.status.code().expect("an exit code");
    assert!(
        text(&o).contains("cannot read configuration"),
        "{}",
        text(&o)
    );
    let prevented: Vec<&str> = one(&s, "RestartPreventExitStatus")
        .split_whitespace()
        .collect();
    assert!(
        prevented.contains(&code.to_string().as_str()),
        "a configuration error exits {code}; RestartPreventExitStatus={prevented:?}"
    );
    assert!(
        !prevented.contains(&"1"),
        "exit 1 (a failed start, a cut-off stop) must still restart"
    );

    // Stopping waits daemon.shutdown_timeout_secs for the requests in flight, then up to 2 s
    // for the endpoints: systemd must not SIGKILL it before.
    let stop = seconds("TimeoutStopSec", one(&s, "TimeoutStopSec"));
    let example = std::fs::read_to_string(EXAMPLE).expect("example");
    let shutdown = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("shutdown_timeout_secs = "))
        .map(|v| v.parse::<u64>().expect("a number"))
        .expect("the example sets daemon.shutdown_timeout_secs");
    let default = bbsync::config::Config::from_toml_str(
        "[bitbucket]\nworkspace = \"acme\"\n[credentials.a]\nkind = \"access_token\"\ntoken = \"t\"\n[source]\nkind = \"ldif\"\npath = \"x.ldif\"\n[[groups]]\nname = \"G\"\nfrom = [\"g\"]\n",
        "minimal",
        Path::new("/etc/bbsync"),
    )
    .expect("a minimal configuration")
    .daemon
    .shutdown_timeout
    .as_secs();
    // 10 s more for the last audit records' fdatasync on a slow disk.
    for (what, secs) in [("the default", default), ("the example's", shutdown)] {
        assert!(
            stop >= secs + 2 + 10,
            "TimeoutStopSec={stop} leaves less than 10 s over {what} shutdown timeout ({secs} s + 2 s)"
        );
    }
}

// ---- credentials: the unit and the example configuration -------------------------------------

/// `LoadCredential=NAME:PATH` of the unit, by name.
fn unit_credentials() -> BTreeMap<String, String> {
    service()
        .remove("LoadCredential")
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let (name, path) = v
                .split_once(':')
                .unwrap_or_else(|| panic!("LoadCredential={v}: no path"));
            (name.to_owned(), path.to_owned())
        })
        .collect()
}

/// Every credential name a value of the example configuration reads as
/// `${CREDENTIALS_DIRECTORY}/NAME` or `$CREDENTIALS_DIRECTORY/NAME`, with its key; comments,
/// which TOML drops, do not count.
fn example_credentials() -> BTreeMap<String, String> {
    use config::ValueKind;
    fn walk(prefix: &str, v: &config::Value, out: &mut BTreeMap<String, String>) {
        match &v.kind {
            ValueKind::String(s) => {
                let name = ["${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"]
                    .iter()
                    .find_map(|p| s.strip_prefix(p));
                if let Some(name) = name {
                    out.insert(name.to_owned(), prefix.to_owned());
                }
            }
            ValueKind::Table(t) => {
                for (k, v) in t {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            ValueKind::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            _ => {}
        }
    }
    let text = std::fs::read_to_string(EXAMPLE).expect("example");
    // Read by the TOML reader bbsync itself uses.
    let tree: config::Value = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("the example is TOML");
    let mut out = BTreeMap::new();
    walk("", &tree, &mut out);
    out.into_iter()
        .map(|(name, key)| (name, key.trim_start_matches('.').to_owned()))
        .collect()
}

#[test]
fn the_unit_loads_exactly_the_credentials_the_example_configuration_reads() {
    let unit = unit_credentials();
    let example = example_credentials();
    assert!(
        !example.is_empty(),
        "the example reads no ${{CREDENTIALS_DIRECTORY}}/ file"
    );
    for (name, key) in &example {
        assert!(
            unit.contains_key(name),
            "{key} reads ${{CREDENTIALS_DIRECTORY}}/{name}, but the unit has no LoadCredential={name}:..."
        );
    }
    for (name, path) in &unit {
        assert!(
            example.contains_key(name),
            "LoadCredential={name}:{path} is not read by the example configuration (a missing file would fail the start for nothing)"
        );
        assert_eq!(
            path,
            &format!("/etc/bbsync/credentials/{name}"),
            "credentials live in /etc/bbsync/credentials/, named as in the configuration"
        );
    }
    for expected in ["bitbucket-token", "ldap-password", "http-token"] {
        assert!(unit.contains_key(expected), "{expected}: {unit:?}");
    }
}

#[test]
fn the_example_configuration_loads_with_the_credentials_directory_and_names_its_keys_without() {
    let names: BTreeSet<String> = example_credentials().into_keys().collect();
    let creds = tempfile::tempdir().expect("tmp");
    for name in &names {
        // http.token wants 16 characters or more.
        std::fs::write(
            creds.path().join(name),
            format!("{name}-0123456789abcdef\n"),
        )
        .expect("credential");
    }
    // The example's CA file and LDAP server are the reader's own: here, an empty file that exists
    // (the read then fails setting up TLS) and a loopback port where nothing listens, so that
    // nothing reaches the network.
    std::fs::write(creds.path().join("corp-ca.pem"), "").expect("ca");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let url = format!("ldaps://{closed}");
    let ca = creds.path().join("corp-ca.pem");
    let dir = creds.path().to_str().expect("utf8");
    let overrides = [
        ("BBSYNC__SOURCE__URL", url.as_str()),
        ("BBSYNC__SOURCE__CA_FILE", ca.to_str().expect("utf8")),
    ];

    // `bbsync source` loads the configuration (exit 2 if it cannot), then reads the directory.
    let mut env = overrides.to_vec();
    env.push(("CREDENTIALS_DIRECTORY", dir));
    let o = bbsync(&["source", "--config", EXAMPLE], &env);
    let out = text(&o);
    assert!(!out.contains("invalid configuration"), "{out}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "the configuration loads; only the read of {url} fails: {out}"
    );
    assert!(out.contains(&format!("LDAP {url}")), "{out}");

    // Without the variable: a configuration error naming every key that needs it.
    let o = bbsync(&["source", "--config", EXAMPLE], &overrides);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    for (name, key) in example_credentials() {
        let expected = format!(
            "{key}: \"${{CREDENTIALS_DIRECTORY}}/{name}\" needs $CREDENTIALS_DIRECTORY, which is not set: systemd sets it for a service with LoadCredential="
        );
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
}
