//! The audit trail and the workspace lock against real files: writers in several threads and
//! processes at once, an apply killed between sending a change and recording its outcome, a
//! full disk, and the lock held by another process.
//!
//! Child processes are this test binary run again with `--exact` on one of the `role_*` tests
//! and `BBSYNC_TEST_ROLE` set; without it those tests do nothing. Parent and child talk through
//! pipes, so nothing waits on a clock.

use bbsync::apply::audit::{self, Audit, AuditFileError, FsyncPolicy};
use bbsync::apply::Outcome;
use bbsync::lock::{LockError, WorkspaceLock, LOCK_FILE};
use bbsync::model::{synthetic_account_id, AccountId, GroupSlug};
use bbsync::plan::{Change, Reason};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

const ROLE: &str = "BBSYNC_TEST_ROLE";
const TARGET: &str = "BBSYNC_TEST_PATH";
const WRITER: &str = "BBSYNC_TEST_WRITER";
/// Records per writer: intents, and an outcome for every other one.
const INTENTS: usize = 2000;

fn change(n: usize) -> Change {
    Change::AddMember {
        group: GroupSlug::from_name("developers"),
        account_id: AccountId::parse(&synthetic_account_id(&format!("p{n}"))).expect("id"),
        display_name: format!("Person {n}"),
    }
}

fn reason() -> Reason {
    Reason::Rule {
        rule: "groups[0]".into(),
        detail: "member of directory group cn=devs,ou=groups,dc=example,dc=com".into(),
    }
}

/// The `INTENTS` intents of writer `name`, with an outcome for the even ones.
fn write_records(audit: &Audit, name: &str) {
    for n in 0..INTENTS {
        let c = change(n);
        let id = audit.intent(name, &c, &reason()).expect("intent");
        if n % 2 == 0 {
            audit
                .outcome(&id, &c, &reason(), &Outcome::Applied)
                .expect("outcome");
        }
    }
}

/// Held while a child is spawned, and by a test whose lock must be released when it drops it.
/// Between `fork` and `exec` a child holds a copy of every descriptor of this process, the lock
/// file's included, so a lock dropped in that window stays held until the `exec` (which closes
/// it: std opens files `O_CLOEXEC`). `Command::spawn` returns only after the `exec`.
static FORKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawn(cmd: &mut Command) -> Child {
    let _forking = FORKING.lock().unwrap_or_else(|p| p.into_inner());
    cmd.spawn().expect("spawn a child")
}

/// This binary, running only the test `role` in the role `role` (see the module doc).
fn spawn_role(role: &str, path: &Path, writer: &str) -> Child {
    spawn(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([role, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(TARGET, path)
            .env(WRITER, writer)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
}

/// Reads the child's stdout up to the line holding `marker` (the harness prints its own lines
/// first, and `test NAME ... ` before the test's output) and returns the rest of that line.
fn wait_for(out: &mut BufReader<ChildStdout>, marker: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read the child");
        assert!(n > 0, "the child exited before printing {marker}");
        if let Some(i) = line.find(marker) {
            return line[i + marker.len()..].trim().to_owned();
        }
    }
}

/// The path to work on when this process is a child in the role `name`.
fn role(name: &str) -> Option<PathBuf> {
    if std::env::var(ROLE).ok()? != name {
        return None;
    }
    std::env::var_os(TARGET).map(PathBuf::from)
}

/// Child: waits for a byte on stdin, then writes its records.
#[test]
fn role_writer() {
    let Some(path) = role("role_writer") else {
        return;
    };
    let name = std::env::var(WRITER).expect("writer name");
    let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
    println!("READY");
    std::io::stdout().flush().expect("flush");
    let mut go = [0u8; 1];
    std::io::stdin().read_exact(&mut go).expect("go");
    write_records(&audit, &name);
}

/// Child: writes an intent, says the change was sent, and waits to be killed.
#[test]
fn role_killed_mid_apply() {
    let Some(path) = role("role_killed_mid_apply") else {
        return;
    };
    let audit = Audit::to_file(&path).expect("open");
    let done = audit
        .intent("killed", &change(1), &reason())
        .expect("intent");
    audit
        .outcome(&done, &change(1), &reason(), &Outcome::Applied)
        .expect("outcome");
    let sent = audit
        .intent("killed", &change(2), &reason())
        .expect("intent");
    println!("SENT {sent}");
    std::io::stdout().flush().expect("flush");
    // The parent kills this process (SIGKILL) while it waits here.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Child: holds the workspace lock until its stdin closes.
#[test]
fn role_lock_holder() {
    let Some(dir) = role("role_lock_holder") else {
        return;
    };
    let lock = WorkspaceLock::acquire(&dir).expect("lock");
    println!("LOCKED {}", std::process::id());
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(lock);
}

#[test]
fn writers_in_threads_and_processes_never_interleave_a_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let mut children: Vec<(Child, BufReader<ChildStdout>)> = ["proc-a", "proc-b"]
        .iter()
        .map(|w| {
            let mut c = spawn_role("role_writer", &path, w);
            let mut out = BufReader::new(c.stdout.take().expect("stdout"));
            wait_for(&mut out, "READY");
            (c, out)
        })
        .collect();
    let threads = ["thread-a", "thread-b"];
    let audits: Vec<Audit> = threads
        .iter()
        .map(|_| Audit::to_file_with(&path, FsyncPolicy::Never).expect("open"))
        .collect();
    for (c, _) in &mut children {
        c.stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"g")
            .expect("go");
    }
    std::thread::scope(|s| {
        for (a, name) in audits.iter().zip(threads) {
            s.spawn(move || write_records(a, name));
        }
    });
    for (mut c, _) in children {
        assert!(c.wait().expect("wait").success(), "a writer failed");
    }

    let text = std::fs::read_to_string(&path).expect("read");
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let r: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not one record ({e}): {line}", i + 1));
        let key = (
            r["run_id"].as_str().expect("run_id").to_owned(),
            r["phase"].as_str().expect("phase").to_owned(),
        );
        *counts.entry(key).or_default() += 1;
        if r["phase"] == "intent" {
            assert!(
                ids.insert(r["id"].as_str().expect("id").to_owned()),
                "{line}"
            );
        }
    }
    for w in ["proc-a", "proc-b", "thread-a", "thread-b"] {
        assert_eq!(counts[&(w.to_owned(), "intent".to_owned())], INTENTS, "{w}");
        assert_eq!(
            counts[&(w.to_owned(), "outcome".to_owned())],
            INTENTS / 2,
            "{w}"
        );
    }
    assert_eq!(text.lines().count(), 4 * (INTENTS + INTENTS / 2));

    let scan = audit::scan(&path, 0).expect("scan");
    assert_eq!(scan.skipped, 0);
    assert_eq!(scan.dangling.len(), 4 * INTENTS / 2);
    for d in &scan.dangling {
        let Change::AddMember { display_name, .. } = &d.change else {
            panic!("not a change written here: {:?}", d.change);
        };
        let n: usize = display_name["Person ".len()..].parse().expect("n");
        assert_eq!(d.change, change(n));
        assert_eq!(
            n % 2,
            1,
            "only the intents without outcome dangle: {}",
            d.id
        );
    }
    assert_eq!(scan.end, text.len() as u64);

    // A crash mid-write leaves half a record at the end: it is skipped, nothing else changes.
    let last = text.lines().last().expect("a line");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(&last.as_bytes()[..last.len() / 2])
        .expect("torn");
    let torn = audit::scan(&path, 0).expect("scan");
    assert_eq!(torn.skipped, 1);
    assert_eq!(torn.dangling, scan.dangling);
    assert_eq!(torn.end, scan.end);
    let (dangling, end) = audit::dangling(&path, 0).expect("dangling");
    assert_eq!((dangling, end), (scan.dangling, scan.end));
}

#[test]
fn an_apply_killed_after_sending_leaves_exactly_that_intent_dangling() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let mut child = spawn_role("role_killed_mid_apply", &path, "");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let sent = wait_for(&mut out, "SENT");
    child.kill().expect("kill -9");
    child.wait().expect("wait");

    let (dangling, end) = audit::dangling(&path, 0).expect("scan");
    assert_eq!(dangling.len(), 1);
    assert_eq!(dangling[0].id, sent);
    assert_eq!(dangling[0].change, change(2));
    assert_eq!(dangling[0].run_id, "killed");

    // The next run reads Bitbucket, closes the intent, and stores the offset.
    let next = Audit::to_file(&path).expect("open");
    next.recovered("next", &dangling[0], true)
        .expect("recovered");
    assert!(audit::dangling(&path, 0).expect("scan").0.is_empty());
    let (after, _) = audit::dangling(&path, end).expect("scan");
    assert!(after.is_empty());
    let last: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .last()
            .expect("line"),
    )
    .expect("json");
    assert_eq!(last["phase"], "recovered");
    assert_eq!(last["id"], sent.as_str());
    assert_eq!(last["observed_done"], true);
}

#[test]
fn a_full_disk_fails_the_intent_with_an_error_naming_the_file() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("no /dev/full here; skipped");
        return;
    }
    let audit = Audit::to_file(full).expect("/dev/full opens for appending");
    let e = audit
        .intent("r", &change(1), &reason())
        .expect_err("ENOSPC");
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
    assert!(e.to_string().contains("/dev/full"), "{e}");
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<AuditFileError>())
        .expect("the audit file error");
    assert_eq!(inner.path, full);
    assert_eq!(inner.source.raw_os_error(), Some(28), "ENOSPC");
    let e = audit
        .record("r", &change(1), &reason(), &Outcome::Applied)
        .expect_err("ENOSPC");
    assert!(e.to_string().contains("/dev/full"), "{e}");
}

#[test]
fn a_second_acquire_in_one_process_is_refused_with_the_first_ones_pid() {
    // No child may be forked while the first lock is open (see `FORKING`).
    let _forking = FORKING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().expect("tmp");
    let first = WorkspaceLock::acquire(dir.path()).expect("first");
    match WorkspaceLock::acquire(dir.path()) {
        Err(LockError::Held { path, pid }) => {
            assert_eq!(path, dir.path().join(LOCK_FILE));
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    drop(first);
    WorkspaceLock::acquire(dir.path()).expect("released on drop");
}

#[test]
fn a_lock_held_by_another_process_names_its_pid_until_it_exits() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = spawn_role("role_lock_holder", dir.path(), "");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let pid: u32 = wait_for(&mut out, "LOCKED").parse().expect("pid");
    assert_eq!(pid, child.id());
    let err = WorkspaceLock::acquire(dir.path()).expect_err("held by the child");
    assert!(
        matches!(err, LockError::Held { pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("another bbsync (pid {pid}) is applying")),
        "{text}"
    );
    assert!(text.contains("wait for it to finish or stop it"), "{text}");

    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    WorkspaceLock::acquire(dir.path()).expect("free once the holder exited");
}

#[test]
fn a_lock_taken_with_the_flock_command_is_respected() {
    let version = {
        let _forking = FORKING.lock().unwrap_or_else(|p| p.into_inner());
        Command::new("flock").arg("--version").output()
    };
    let Ok(status) = version else {
        eprintln!("no flock(1) here; skipped");
        return;
    };
    assert!(status.status.success());
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join(LOCK_FILE);
    let mut child = spawn(
        Command::new("flock")
            .arg("-n")
            .arg(&file)
            .args(["-c", r#"echo $$ > "$LOCK"; echo "LOCKED $$"; read x; true"#])
            .env("LOCK", &file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let pid: u32 = wait_for(&mut out, "LOCKED").parse().expect("pid");
    let err = WorkspaceLock::acquire(dir.path()).expect_err("held by flock(1)");
    assert!(
        matches!(err, LockError::Held { pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    WorkspaceLock::acquire(dir.path()).expect("free once flock(1) exited");
}
