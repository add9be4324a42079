//! The audit trail, written ahead: an `intent` record before a change is sent, an `outcome`
//! record after, so that a change which reached Bitbucket always has a record, even when the
//! process is killed or the disk fills up mid-apply. A later run finds the intents that have no
//! outcome ([`dangling`]), reads Bitbucket, and closes each with a `recovered` record.
//!
//! Records go to a JSON-lines file or, when no file is configured, to the log under the
//! `bbsync::audit` target (which the CLI keeps enabled whatever `RUST_LOG` says). The format,
//! the guarantees and what the caller must do are in `docs/audit.md`; in short:
//!
//! - Each record is one JSON object and its `\n`, serialised into one buffer and handed to a
//!   single `write(2)` on a file opened with `O_APPEND`. On a local Linux filesystem (ext4,
//!   xfs, btrfs, tmpfs) such writes do not interleave with each other, whichever process or
//!   thread makes them: the inode lock is held for the whole write, and the append offset is
//!   taken under it. POSIX only promises this for pipes (up to `PIPE_BUF`); it is what Linux
//!   does, not a standard. NFS does not guarantee it at all: the client computes the append
//!   offset itself, so two hosts appending to one file can overwrite each other. Keep the audit
//!   file on a local disk.
//! - A short write is an error (the record is torn); the next record this writer makes starts
//!   on a fresh line, and [`scan`] reads past a torn line.
//! - With [`FsyncPolicy::Always`] a record is on the disk (`fdatasync`) before the call
//!   returns; with [`FsyncPolicy::Never`] it is in the page cache, which survives the process
//!   (a crash, `kill -9`) but not the machine (power loss, kernel panic).
//! - An error from [`Audit::intent`] (`ENOSPC` on a full disk, `EIO`, a failed `fdatasync`)
//!   means the caller must not send the change: nothing durable says it was attempted.

use super::Outcome;
use crate::plan::{Change, Reason};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// When a record is forced to the disk. Configuration spells it `always` or `never`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` after every record: it survives a crash of the process and of the machine
    /// (power loss), as far as the disk honours flushes.
    #[default]
    Always,
    /// No `fdatasync`: a record survives the process (a crash, `kill -9`, an OOM kill) through
    /// the page cache, but not a power loss or a kernel crash, which can lose the last few
    /// seconds of records (and with them the intents of changes already sent).
    Never,
}

/// Which step of a change a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Written before the change is sent.
    Intent,
    /// Written after the call, with what happened.
    Outcome,
    /// A change that was never sent (blocked), and why: one record, no intent.
    Decision,
    /// Written by a later run for an intent that had no outcome, once it read Bitbucket.
    Recovered,
}

/// The id of one intent, repeated in its outcome (and in the `recovered` record that closes it
/// when the outcome was never written): `{run_id}-{pid}-{seq}`, unique across the processes and
/// runs writing to one file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IntentId {
    id: String,
    run_id: String,
}

impl IntentId {
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The run that wrote the intent (its outcome carries the same `run_id`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Sequence of intent ids, shared by every [`Audit`] of the process: two writers of one run
/// (or two runs with one id) cannot hand out the same id.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// An intent with no `outcome` and no `recovered` record: the change may or may not have
/// reached Bitbucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dangling {
    pub id: String,
    /// The run that wrote the intent.
    pub run_id: String,
    /// When the intent was written (RFC 3339).
    pub ts: String,
    pub change: Change,
    pub reason: Reason,
}

/// An I/O error on the audit file, naming it. Carried inside the `io::Error` the methods
/// return (whose kind is the cause's: `StorageFull` for `ENOSPC`).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the audit file {path}: {source}")]
pub struct AuditFileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn named(action: &'static str, path: &Path, source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        AuditFileError {
            action,
            path: path.to_path_buf(),
            source,
        },
    )
}

/// Where the records go.
pub struct Audit {
    file: Option<AuditFile>,
}

struct AuditFile {
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    /// The file may end in a torn line (a crash mid-write before it was opened, or a short
    /// write of ours): the next record starts with a `\n` of its own.
    torn: AtomicBool,
}

/// One line of the file. `ts` comes first: a line starts with `{"ts":"` and nothing inside a
/// record can (quotes in strings are escaped), which is how [`scan`] finds a record glued to
/// a torn one.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    run_id: &'a str,
    phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    change: &'a Change,
    reason: &'a Reason,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_done: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent_run_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent_ts: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn new(run_id: &'a str, phase: Phase, change: &'a Change, reason: &'a Reason) -> Self {
        Line {
            ts: crate::time::now_rfc3339(),
            run_id,
            phase,
            id: None,
            change,
            reason,
            description: format!("{change}: {reason}"),
            outcome: None,
            observed_done: None,
            intent_run_id: None,
            intent_ts: None,
        }
    }
}

impl Audit {
    /// Records go to the log (target `bbsync::audit`, level info), one JSON object per event.
    pub fn to_log() -> Audit {
        Audit { file: None }
    }

    /// [`Audit::to_file_with`] with [`FsyncPolicy::Always`].
    pub fn to_file(path: &Path) -> io::Result<Audit> {
        Audit::to_file_with(path, FsyncPolicy::Always)
    }

    /// Opens (creates, with its directory) the audit file for appending. The error is the bare
    /// `io::Error`: the caller names the file (`RunError::Audit` does).
    pub fn to_file_with(path: &Path, fsync: FsyncPolicy) -> io::Result<Audit> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let meta = file.metadata()?;
        let mut torn = false;
        if meta.is_file() {
            if meta.len() == 0 {
                if fsync == FsyncPolicy::Always {
                    // A new file's directory entry must reach the disk too, or a power loss can
                    // take the whole file with it.
                    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
                }
            } else {
                let mut last = [0u8; 1];
                let mut f = &file;
                f.seek(SeekFrom::Start(meta.len() - 1))?;
                f.read_exact(&mut last)?;
                torn = last[0] != b'\n';
            }
        }
        Ok(Audit {
            file: Some(AuditFile {
                path: path.to_path_buf(),
                file,
                fsync,
                torn: AtomicBool::new(torn),
            }),
        })
    }

    /// The audit file, when records go to one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// The length of the audit file now, for the caller to store as the offset of its next
    /// [`dangling`] scan; 0 when records go to the log (there is nothing to scan).
    pub fn end_offset(&self) -> io::Result<u64> {
        match &self.file {
            None => Ok(0),
            Some(f) => f
                .file
                .metadata()
                .map(|m| m.len())
                .map_err(|e| named("read the length of", &f.path, e)),
        }
    }

    /// Writes the intent record of a change about to be sent, and returns its id for the
    /// outcome. On an error the change must not be sent: nothing durable says it was tried.
    pub fn intent(&self, run_id: &str, change: &Change, reason: &Reason) -> io::Result<IntentId> {
        let id = IntentId {
            id: format!(
                "{run_id}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            run_id: run_id.to_owned(),
        };
        self.write(&Line {
            id: Some(&id.id),
            ..Line::new(run_id, Phase::Intent, change, reason)
        })?;
        Ok(id)
    }

    /// Writes what happened to a change whose intent is `id`.
    pub fn outcome(
        &self,
        id: &IntentId,
        change: &Change,
        reason: &Reason,
        outcome: &Outcome,
    ) -> io::Result<()> {
        self.write(&Line {
            id: Some(&id.id),
            outcome: Some(outcome),
            ..Line::new(&id.run_id, Phase::Outcome, change, reason)
        })
    }

    /// Writes one record for a change with no intent: a `decision` for a change that is not
    /// sent (`Outcome::Blocked`). Any other outcome is written as an `outcome` without an `id`
    /// (a caller that sent the change without writing an intent first: nothing ties it to an
    /// intent, and [`dangling`] ignores it).
    pub fn record(
        &self,
        run_id: &str,
        change: &Change,
        reason: &Reason,
        outcome: &Outcome,
    ) -> io::Result<()> {
        let phase = match outcome {
            Outcome::Blocked { .. } => Phase::Decision,
            _ => Phase::Outcome,
        };
        self.write(&Line {
            outcome: Some(outcome),
            ..Line::new(run_id, phase, change, reason)
        })
    }

    /// Closes an intent that had no outcome, once the run `run_id` has read Bitbucket:
    /// `observed_done` says whether Bitbucket shows the change's effect.
    pub fn recovered(
        &self,
        run_id: &str,
        dangling: &Dangling,
        observed_done: bool,
    ) -> io::Result<()> {
        self.write(&Line {
            id: Some(&dangling.id),
            observed_done: Some(observed_done),
            intent_run_id: Some(&dangling.run_id),
            intent_ts: Some(&dangling.ts),
            ..Line::new(run_id, Phase::Recovered, &dangling.change, &dangling.reason)
        })
    }

    fn write(&self, line: &Line<'_>) -> io::Result<()> {
        let Some(f) = &self.file else {
            let text = serde_json::to_string(line).map_err(io::Error::other)?;
            tracing::info!(target: "bbsync::audit", "{text}");
            return Ok(());
        };
        let torn = f.torn.load(Ordering::Acquire);
        let mut buf = Vec::with_capacity(512);
        if torn {
            buf.push(b'\n');
        }
        serde_json::to_writer(&mut buf, line)
            .map_err(|e| named("encode a record for", &f.path, e.into()))?;
        buf.push(b'\n');
        f.append(&buf)?;
        if torn {
            f.torn.store(false, Ordering::Release);
        }
        Ok(())
    }
}

impl AuditFile {
    /// One `write(2)` of the whole record (`write_all` would loop, and a second write can land
    /// after another process's record), then the fsync the policy asks for.
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let written = loop {
            match (&self.file).write(buf) {
                // Interrupted before anything was written (a partial write returns its count).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        }
        .map_err(|e| named("write", &self.path, e))?;
        if written != buf.len() {
            self.torn.store(true, Ordering::Release);
            let kind = if written == 0 {
                io::ErrorKind::WriteZero
            } else {
                io::ErrorKind::Other
            };
            return Err(named(
                "write",
                &self.path,
                io::Error::new(
                    kind,
                    format!(
                        "only {written} of {} bytes of a record were written (is the disk full?); the record is torn",
                        buf.len()
                    ),
                ),
            ));
        }
        if self.fsync == FsyncPolicy::Always {
            // A failed fdatasync is not retried: Linux may have dropped the dirty pages already,
            // and a retry that succeeds would claim a record the disk does not hold.
            self.file
                .sync_data()
                .map_err(|e| named("fdatasync", &self.path, e))?;
        }
        Ok(())
    }
}

/// What one [`scan`] of the audit file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The intents with no `outcome` and no `recovered` record after them, in file order.
    pub dangling: Vec<Dangling>,
    /// The offset just after the last complete line (a torn last line is read again next time,
    /// in case it was a record still being written).
    pub end: u64,
    /// Where the next scan must start to see every intent still dangling: the start of the
    /// first dangling intent's line, or `end` when none dangles. Storing it is always safe.
    pub resume: u64,
    /// Lines that could not be read: torn, not JSON, or an intent whose change this version
    /// of bbsync does not know (each also logged with its offset).
    pub skipped: usize,
}

/// Reads the audit file from byte offset `from` to its end and returns the intents that have no
/// outcome (nor `recovered` record) in that part, and the end offset to store for next time.
/// Lines that cannot be read are skipped and their count logged (see [`scan`] for the count).
///
/// An intent written before `from` is not seen. The offset is safe to store once every intent
/// returned here has been closed with [`Audit::recovered`]; a caller that cannot close them all
/// stores [`Scan::resume`] instead.
pub fn dangling(path: &Path, from: u64) -> io::Result<(Vec<Dangling>, u64)> {
    let scan = scan(path, from)?;
    if scan.skipped > 0 {
        tracing::warn!(
            path = %path.display(),
            skipped = scan.skipped,
            "audit lines that cannot be read were skipped"
        );
    }
    Ok((scan.dangling, scan.end))
}

/// The first fields of every record: enough to pair intents with outcomes. Unknown fields are
/// ignored and `phase` is a string, so records a newer bbsync writes do not stop the scan.
#[derive(Deserialize)]
struct Head {
    phase: Option<String>,
    id: Option<String>,
}

/// A line's start, used to find a record glued to the end of a torn one.
const RECORD_START: &[u8] = b"{\"ts\":\"";

/// [`dangling`], with the counts. A file that does not exist has nothing dangling. When `from` is
/// past the end (the file was rotated or truncated), the file is read from its start.
pub fn scan(path: &Path, from: u64) -> io::Result<Scan> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Scan {
                end: from,
                resume: from,
                ..Scan::default()
            })
        }
        Err(e) => return Err(named("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| named("read the length of", path, e))?
        .len();
    let mut at = from;
    if from > len {
        tracing::warn!(
            path = %path.display(),
            from,
            len,
            "the audit file is shorter than the offset of the last scan (rotated or truncated?); reading it from the start"
        );
        at = 0;
    }
    let mut reader = io::BufReader::with_capacity(64 * 1024, file);
    reader
        .seek(SeekFrom::Start(at))
        .map_err(|e| named("read", path, e))?;

    let mut open: BTreeMap<u64, Dangling> = BTreeMap::new();
    let mut open_at: HashMap<String, u64> = HashMap::new();
    let mut skipped = 0usize;
    let mut end = at;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| named("read", path, e))?;
        if n == 0 {
            break;
        }
        let start = at;
        at += n as u64;
        let complete = buf.last() == Some(&b'\n');
        if complete {
            end = at;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Some((offset, rec, head)) = parse_line(line) else {
            skipped += 1;
            tracing::warn!(path = %path.display(), offset = start, complete, "skipping an audit line that is not a record (torn by a crash, or not JSON)");
            continue;
        };
        if offset > 0 {
            // A torn record, then a whole one: the torn part is lost, the rest is read.
            skipped += 1;
            tracing::warn!(path = %path.display(), offset = start, "skipping a torn audit record; the record after it on the same line is read");
        }
        let rec_at = start + offset as u64;
        let (Some(phase), Some(id)) = (head.phase, head.id) else {
            // A decision, an outcome with no intent, or a line from before intents existed.
            continue;
        };
        match phase.as_str() {
            "intent" => match serde_json::from_slice::<Dangling>(rec) {
                Ok(d) => {
                    if let Some(old) = open_at.insert(id, rec_at) {
                        open.remove(&old);
                    }
                    open.insert(rec_at, d);
                }
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(path = %path.display(), offset = rec_at, id, error = %e, "cannot read the change of an audit intent; it is not reported as dangling");
                }
            },
            "outcome" | "recovered" => {
                if let Some(at) = open_at.remove(&id) {
                    open.remove(&at);
                }
            }
            _ => {}
        }
    }
    let resume = open.keys().next().copied().unwrap_or(end).min(end);
    Ok(Scan {
        dangling: open.into_values().collect(),
        end,
        resume,
        skipped,
    })
}

/// The record on a line: the whole line, or else the last record glued after a torn one
/// (`{"ts":"` only starts a record). Returns where in the line it starts.
fn parse_line(line: &[u8]) -> Option<(usize, &[u8], Head)> {
    if let Ok(head) = serde_json::from_slice::<Head>(line) {
        return Some((0, line, head));
    }
    let mut from = 1;
    while let Some(i) = find(&line[from.min(line.len())..], RECORD_START) {
        let start = from + i;
        let rec = &line[start..];
        if let Ok(head) = serde_json::from_slice::<Head>(rec) {
            return Some((start, rec, head));
        }
        from = start + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, GroupSlug, Permission, RepoSlug};
    use crate::plan::BlockReason;

    fn add(n: &str) -> Change {
        Change::AddMember {
            group: GroupSlug::from_name("developers"),
            account_id: AccountId::parse(&crate::model::synthetic_account_id(n)).expect("id"),
            display_name: format!("{n} Lee"),
        }
    }

    fn rule() -> Reason {
        Reason::Rule {
            rule: "groups[0]".into(),
            detail: "member of directory group cn=devs".into(),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("a whole JSON record"))
            .collect()
    }

    #[test]
    fn every_phase_is_one_line_starting_with_ts() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a/audit.jsonl");
        let audit = Audit::to_file(&path).expect("open");
        let id = audit.intent("r1", &add("ann"), &rule()).expect("intent");
        audit
            .outcome(&id, &add("ann"), &rule(), &Outcome::Applied)
            .expect("outcome");
        audit
            .record(
                "r1",
                &add("bob"),
                &rule(),
                &Outcome::Blocked {
                    reason: BlockReason::NotWorkspaceMember,
                },
            )
            .expect("decision");
        let d = Dangling {
            id: "r0-1-0".into(),
            run_id: "r0".into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
            change: add("cat"),
            reason: rule(),
        };
        audit.recovered("r1", &d, true).expect("recovered");

        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.lines().all(|l| l.starts_with("{\"ts\":\"")), "{text}");
        let l = lines(&path);
        let phases: Vec<_> = l.iter().map(|r| r["phase"].as_str()).collect();
        assert_eq!(
            phases,
            [
                Some("intent"),
                Some("outcome"),
                Some("decision"),
                Some("recovered")
            ]
        );
        assert_eq!(l[0]["id"], id.as_str());
        assert_eq!(l[1]["id"], id.as_str());
        assert!(l[0].get("outcome").is_none());
        assert_eq!(l[1]["outcome"]["result"], "applied");
        assert_eq!(l[1]["run_id"], "r1");
        assert!(l[2].get("id").is_none());
        assert_eq!(l[2]["outcome"]["result"], "blocked");
        assert_eq!(l[3]["id"], "r0-1-0");
        assert_eq!(l[3]["run_id"], "r1");
        assert_eq!(l[3]["intent_run_id"], "r0");
        assert_eq!(l[3]["intent_ts"], "2026-01-01T00:00:00.000Z");
        assert_eq!(l[3]["observed_done"], true);
        for r in &l {
            assert_eq!(r["change"]["op"], "add_member");
            assert_eq!(r["reason"]["kind"], "rule");
            assert!(r["description"].as_str().expect("text").starts_with("add "));
        }
    }

    #[test]
    fn a_sent_change_recorded_without_intent_is_an_outcome_without_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
        audit
            .record("r1", &add("ann"), &rule(), &Outcome::AlreadyDone)
            .expect("record");
        let l = lines(&path);
        assert_eq!(l[0]["phase"], "outcome");
        assert!(l[0].get("id").is_none());
        let scan = scan(&path, 0).expect("scan");
        assert!(scan.dangling.is_empty());
    }

    #[test]
    fn intent_ids_are_unique_and_name_the_run() {
        let a = Audit::to_log();
        let b = Audit::to_log();
        let x = a.intent("run7", &add("ann"), &rule()).expect("intent");
        let y = b.intent("run7", &add("ann"), &rule()).expect("intent");
        assert_ne!(x, y);
        assert!(x.as_str().starts_with("run7-"));
        assert_eq!(x.run_id(), "run7");
        assert_eq!(a.end_offset().expect("offset"), 0);
        assert_eq!(a.path(), None);
    }

    #[test]
    fn dangling_finds_intents_without_outcome_or_recovery() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
        let a = audit.intent("r1", &add("ann"), &rule()).expect("intent");
        let b = audit.intent("r1", &add("bob"), &rule()).expect("intent");
        let c = audit.intent("r1", &add("cat"), &rule()).expect("intent");
        audit
            .outcome(&a, &add("ann"), &rule(), &Outcome::Applied)
            .expect("outcome");
        let (d, end) = dangling(&path, 0).expect("scan");
        assert_eq!(
            d.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            [b.as_str(), c.as_str()]
        );
        assert_eq!(d[0].change, add("bob"));
        assert_eq!(d[0].reason, rule());
        assert_eq!(d[0].run_id, "r1");
        assert_eq!(end, audit.end_offset().expect("len"));

        audit.recovered("r2", &d[0], false).expect("recovered");
        let s = scan(&path, 0).expect("scan");
        assert_eq!(
            s.dangling.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            [c.as_str()]
        );
        assert_eq!(s.skipped, 0);
        assert!(s.resume < s.end, "resume points at the intent of cat");
        let again = scan(&path, s.resume).expect("scan");
        assert_eq!(again.dangling, s.dangling);
        // From the end: nothing new, nothing dangling.
        let later = scan(&path, s.end).expect("scan");
        assert!(later.dangling.is_empty());
        assert_eq!((later.end, later.resume), (s.end, s.end));
    }

    #[test]
    fn an_outcome_after_the_offset_for_an_intent_before_it_is_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
        let a = audit.intent("r1", &add("ann"), &rule()).expect("intent");
        let from = audit.end_offset().expect("len");
        audit
            .outcome(&a, &add("ann"), &rule(), &Outcome::Applied)
            .expect("outcome");
        let s = scan(&path, from).expect("scan");
        assert!(s.dangling.is_empty());
        assert_eq!(s.skipped, 0);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_read_again_next_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        {
            let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
            audit.intent("r1", &add("ann"), &rule()).expect("intent");
        }
        let whole = std::fs::metadata(&path).expect("meta").len();
        let mut text = std::fs::read(&path).expect("read");
        let torn = text[..text.len() / 2].to_vec();
        text.extend_from_slice(&torn);
        std::fs::write(&path, &text).expect("write");

        let s = scan(&path, 0).expect("scan");
        assert_eq!(s.dangling.len(), 1);
        assert_eq!(s.skipped, 1);
        assert_eq!(s.end, whole, "the torn tail is not consumed");

        // The next writer starts a fresh line: the torn fragment stays alone on its line.
        let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
        let b = audit.intent("r2", &add("bob"), &rule()).expect("intent");
        let s = scan(&path, 0).expect("scan");
        assert_eq!(s.skipped, 1);
        assert_eq!(
            s.dangling
                .iter()
                .map(|d| d.run_id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(s.dangling[1].id, b.as_str());
        assert_eq!(s.end, audit.end_offset().expect("len"));
    }

    #[test]
    fn a_record_glued_to_a_torn_one_is_still_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
        let a = audit.intent("r1", &add("ann"), &rule()).expect("intent");
        let text = std::fs::read(&path).expect("read");
        // A torn intent, then (another process, which did not know) a whole record.
        let mut glued = text[..text.len() / 3].to_vec();
        glued.extend_from_slice(&text);
        std::fs::write(&path, &glued).expect("write");
        let s = scan(&path, 0).expect("scan");
        assert_eq!(s.skipped, 1);
        assert_eq!(s.dangling.len(), 1);
        assert_eq!(s.dangling[0].id, a.as_str());
    }

    #[test]
    fn unreadable_lines_and_old_records_do_not_stop_the_scan() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let old = serde_json::json!({
            "ts": "2026-01-01T00:00:00.000Z", "run_id": "old", "change": add("ann"),
            "reason": rule(), "description": "x", "outcome": {"result": "applied"},
        });
        let unknown_op = serde_json::json!({
            "ts": "2026-01-01T00:00:00.000Z", "run_id": "new", "phase": "intent", "id": "n-1-1",
            "change": {"op": "rename_group"}, "reason": rule(), "description": "x",
        });
        std::fs::write(
            &path,
            format!(
                "{old}\nnot json\n\u{0}\u{0}\n{unknown_op}\n{{\"phase\":\"later\",\"id\":\"z\"}}\n"
            ),
        )
        .expect("write");
        let s = scan(&path, 0).expect("scan");
        assert!(s.dangling.is_empty());
        assert_eq!(s.skipped, 3);
    }

    #[test]
    fn an_offset_past_the_end_reads_the_file_from_its_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::to_file_with(&path, FsyncPolicy::Never).expect("open");
        audit.intent("r1", &add("ann"), &rule()).expect("intent");
        let s = scan(&path, 1 << 40).expect("scan");
        assert_eq!(s.dangling.len(), 1);
        assert_eq!(s.end, audit.end_offset().expect("len"));
    }

    #[test]
    fn a_missing_file_has_nothing_dangling_and_other_errors_name_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = scan(&dir.path().join("none.jsonl"), 0).expect("scan");
        assert_eq!(s, Scan::default());
        let e = scan(dir.path(), 0).expect_err("a directory is not an audit file");
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn account_ids_are_validated_when_read_back() {
        let bad = serde_json::json!({
            "ts": "t", "run_id": "r", "phase": "intent", "id": "r-1-1",
            "change": {"op": "add_member", "group": "developers", "account_id": "ann", "display_name": "Ann"},
            "reason": rule(),
        });
        assert!(serde_json::from_value::<Dangling>(bad).is_err());
        let good = Change::SetGrant {
            repo: RepoSlug::new("api"),
            group: GroupSlug::from_name("developers"),
            permission: Permission::Write,
            previous: Some(Permission::Read),
        };
        let back: Change =
            serde_json::from_value(serde_json::to_value(&good).expect("json")).expect("parse");
        assert_eq!(back, good);
    }

    #[test]
    fn fsync_policy_is_configured_in_snake_case_and_always_by_default() {
        #[derive(Deserialize)]
        struct C {
            fsync: FsyncPolicy,
        }
        let c: C = serde_json::from_str(r#"{"fsync":"never"}"#).expect("parse");
        assert_eq!(c.fsync, FsyncPolicy::Never);
        let c: C = serde_json::from_str(r#"{"fsync":"always"}"#).expect("parse");
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert!(serde_json::from_str::<C>(r#"{"fsync":"Always"}"#).is_err());
        assert_eq!(FsyncPolicy::default(), FsyncPolicy::Always);
    }
}
