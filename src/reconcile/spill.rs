//! The off-boarding poll's snapshot, parked on disk between full runs.
//!
//! A full run's view of a 100k-person workspace (who is in which group, every grant, the
//! members' UUIDs) takes over 100 MB in memory, and the daemon needs it only when a poll finds
//! someone who became a leaver. So once a full run has ended, the daemon writes the snapshot to
//! `poll-snapshot-{pid}.json` in `offboarding.state_dir` (else the audit file's directory) and keeps
//! only a sorted list of hashes of the active people's DNs: a poll whose disabled people
//! match none of them is answered from that list; one that does match reads the file back,
//! plans from it exactly as from the snapshot in memory, and drops it again.
//!
//! - The file is `poll-snapshot-{pid}.json`: two daemons sharing a state directory (a dry run
//!   beside the one that applies) never write each other's. It is written whole to a temporary
//!   name of its own, created afresh (mode 0600: it holds the directory's names and DNs), and
//!   renamed into place; files of processes that no longer run are removed then. It carries a
//!   random generation: a file left by an earlier run is never taken for the current snapshot.
//! - A file that cannot be written leaves the snapshot in memory (logged): memory, not the
//!   poll, gives way. One that cannot be read back fails that poll, which changes nothing; the
//!   next full reconcile finds the leaver.
//! - A hash collision only makes a poll read the file for nothing: the file decides. (What a
//!   poll has already judged is kept as exact DNs, not hashes.)

use super::poll::Snapshot;
use crate::bitbucket::V1Groups;
use crate::family::ApiFamily;
use crate::mapping::{Desired, DesiredGroup, Leaver, WantedGrant};
use crate::model::{
    AccountId, BbUuid, Dn, GrantTarget, GroupSlug, Permission, ProjectKey, ProjectPermission,
    RepoSlug,
};
use crate::plan::{Actual, ActualGroup, Policy};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The file's name in the state directory: `{PREFIX}{pid}.json`.
const PREFIX: &str = "poll-snapshot-";
/// Bumped when the layout changes: an older file is refused, never misread.
const VERSION: u32 = 1;

/// A snapshot on disk: what a poll needs before deciding to read it back.
#[derive(Debug)]
pub(super) struct Parked {
    pub generation: u64,
    pub read_at: SystemTime,
    pub path: PathBuf,
    /// Hashes of the normalised DNs of the people the run saw active, sorted.
    active: Vec<u64>,
    /// The file's size, for the logs.
    pub bytes: u64,
}

impl Parked {
    /// Whether the person with this DN was active in the snapshot (or shares a hash with
    /// someone who was).
    pub fn was_active(&self, dn: &Dn) -> bool {
        self.active.binary_search(&dn_hash(dn)).is_ok()
    }
}

/// The hash a parked snapshot keeps of a DN (its normalised form).
fn dn_hash(dn: &Dn) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dn.normalised().hash(&mut h);
    h.finish()
}

/// Why a parked snapshot could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a snapshot this bbsync wrote: {detail}")]
    Invalid { path: String, detail: String },
}

impl SpillError {
    fn io(path: &Path, source: std::io::Error) -> SpillError {
        SpillError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Serializes an iterator as a JSON array without collecting it.
struct Seq<I>(I);

impl<I, T> Serialize for Seq<I>
where
    I: Iterator<Item = T> + Clone,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// The snapshot as written: [`File`]'s fields, from borrowed data.
struct Out<'a> {
    snapshot: &'a Snapshot,
    uuids: &'a [(AccountId, BbUuid)],
    absent: &'a [AccountId],
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let snap = self.snapshot;
        let (d, a) = (&snap.desired, &snap.actual);
        let mut st = s.serialize_struct("File", 23)?;
        st.serialize_field("version", &VERSION)?;
        st.serialize_field("generation", &snap.generation)?;
        st.serialize_field("read_at", &snap.read_at)?;
        st.serialize_field(
            "people",
            &Seq(snap.people.iter().map(|(id, (dn, name))| (id, dn, name))),
        )?;
        st.serialize_field("groups", &d.groups)?;
        st.serialize_field("grant_groups", &d.grant_groups)?;
        st.serialize_field("repo_scope", &d.repo_scope)?;
        st.serialize_field("grants", &Seq(d.grants.iter().map(|((r, g), w)| (r, g, w))))?;
        st.serialize_field("project_scope", &d.project_scope)?;
        st.serialize_field(
            "project_grants",
            &Seq(d.project_grants.iter().map(|((p, g), w)| (p, g, w))),
        )?;
        st.serialize_field("leavers", &d.leavers)?;
        st.serialize_field("known", &d.known)?;
        st.serialize_field("frozen", &d.frozen)?;
        st.serialize_field("protected", &d.protected)?;
        st.serialize_field("first_missing", &d.first_missing)?;
        st.serialize_field("actual_groups", &a.groups)?;
        st.serialize_field(
            "actual_grants",
            &Seq(a.grants.iter().map(|((r, g), p)| (r, g, p))),
        )?;
        st.serialize_field(
            "actual_project_grants",
            &Seq(a.project_grants.iter().map(|((p, g), q)| (p, g, q))),
        )?;
        st.serialize_field(
            "direct_grants",
            &Seq(a.direct_grants.iter().map(|((t, id), w)| (t, id, w))),
        )?;
        st.serialize_field("policy", &snap.policy)?;
        st.serialize_field("membership", &snap.membership)?;
        st.serialize_field("uuids", self.uuids)?;
        st.serialize_field("absent", self.absent)?;
        st.end()
    }
}

/// The snapshot as read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    generation: u64,
    read_at: SystemTime,
    people: Vec<(AccountId, Dn, String)>,
    groups: BTreeMap<GroupSlug, DesiredGroup>,
    grant_groups: BTreeSet<GroupSlug>,
    repo_scope: BTreeSet<RepoSlug>,
    grants: Vec<(RepoSlug, GroupSlug, WantedGrant<Permission>)>,
    project_scope: BTreeSet<ProjectKey>,
    project_grants: Vec<(ProjectKey, GroupSlug, WantedGrant<ProjectPermission>)>,
    leavers: BTreeMap<AccountId, Leaver>,
    known: BTreeSet<AccountId>,
    frozen: BTreeSet<AccountId>,
    protected: BTreeSet<AccountId>,
    first_missing: BTreeMap<AccountId, SystemTime>,
    actual_groups: BTreeMap<GroupSlug, ActualGroup>,
    actual_grants: Vec<(RepoSlug, GroupSlug, Permission)>,
    actual_project_grants: Vec<(ProjectKey, GroupSlug, ProjectPermission)>,
    direct_grants: Vec<(GrantTarget, AccountId, String)>,
    policy: Policy,
    membership: ApiFamily,
    uuids: Vec<(AccountId, BbUuid)>,
    absent: Vec<AccountId>,
}

/// Removes the snapshot files of processes that no longer run (Linux: by `/proc/{pid}`; a
/// restarted daemon has another pid, and each file is tens of MB at 100k people).
fn sweep(dir: &Path, own: u32) {
    let proc_fs = Path::new("/proc/self");
    if !proc_fs.exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| {
                n.strip_suffix(".json")
                    .or_else(|| n.strip_suffix(".json.tmp"))
            })
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != own && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `snapshot` to `poll-snapshot-{pid}.json` in `dir` (see the module doc).
pub(super) fn park(snapshot: &Snapshot, dir: &Path) -> Result<Parked, SpillError> {
    let pid = std::process::id();
    let path = dir.join(format!("{PREFIX}{pid}.json"));
    let tmp = dir.join(format!("{PREFIX}{pid}.json.tmp"));
    let (uuids, absent) = snapshot.members.cache();
    let written = (|| {
        // A dry-run daemon may not have made its state directory yet.
        std::fs::create_dir_all(dir)?;
        sweep(dir, pid);
        // Created afresh, so that its mode is 0600 whatever a leftover had. A leftover that
        // cannot be removed makes `create_new` below fail, which reports it.
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut w = BufWriter::with_capacity(256 * 1024, opts.open(&tmp)?);
        serde_json::to_writer(
            &mut w,
            &Out {
                snapshot,
                uuids: &uuids,
                absent: &absent,
            },
        )?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_data()?;
        let bytes = f.metadata()?.len();
        std::fs::rename(&tmp, &path)?;
        Ok::<u64, std::io::Error>(bytes)
    })();
    let bytes = match written {
        Ok(b) => b,
        Err(e) => {
            if tmp.is_file() {
                let _ = std::fs::remove_file(&tmp);
            }
            return Err(SpillError::io(&path, e));
        }
    };
    let mut active: Vec<u64> = snapshot
        .people
        .iter()
        .filter(|(id, _)| !snapshot.desired.leavers.contains_key(*id))
        .map(|(_, (dn, _))| dn_hash(dn))
        .collect();
    active.sort_unstable();
    active.dedup();
    active.shrink_to_fit();
    Ok(Parked {
        generation: snapshot.generation,
        read_at: snapshot.read_at,
        path,
        active,
        bytes,
    })
}

/// Reads `parked` back, with `members` (a fresh backend) given the UUIDs the run had learnt.
pub(super) fn unpark(parked: &Parked, members: V1Groups) -> Result<Snapshot, SpillError> {
    let path = &parked.path;
    let invalid = |detail: String| SpillError::Invalid {
        path: path.display().to_string(),
        detail,
    };
    let f = std::fs::File::open(path).map_err(|e| SpillError::io(path, e))?;
    let file: File = serde_json::from_reader(std::io::BufReader::with_capacity(256 * 1024, f))
        .map_err(|e| match e.io_error_kind() {
            Some(_) => SpillError::io(path, e.into()),
            None => invalid(e.to_string()),
        })?;
    if file.version != VERSION {
        return Err(invalid(format!(
            "layout version {} (this bbsync writes {VERSION})",
            file.version
        )));
    }
    if file.generation != parked.generation {
        return Err(invalid(format!(
            "generation {:x}, not the {:x} this daemon parked (another process wrote it)",
            file.generation, parked.generation
        )));
    }
    members.learn(file.uuids);
    members.learn_absent(file.absent);
    let members = Arc::new(members);
    Ok(Snapshot {
        generation: file.generation,
        read_at: file.read_at,
        people: file
            .people
            .into_iter()
            .map(|(id, dn, name)| (id, (dn, name)))
            .collect(),
        desired: Desired {
            groups: file.groups,
            grant_groups: file.grant_groups,
            repo_scope: file.repo_scope,
            grants: file
                .grants
                .into_iter()
                .map(|(r, g, w)| ((r, g), w))
                .collect(),
            project_scope: file.project_scope,
            project_grants: file
                .project_grants
                .into_iter()
                .map(|(p, g, w)| ((p, g), w))
                .collect(),
            // What the rules tell the operator: the full run reported it; the poll drops it.
            notes: Vec::new(),
            leavers: file.leavers,
            known: file.known,
            frozen: file.frozen,
            protected: file.protected,
            first_missing: file.first_missing,
            invitations: Vec::new(),
        },
        actual: Actual {
            groups: file.actual_groups,
            grants: file
                .actual_grants
                .into_iter()
                .map(|(r, g, p)| ((r, g), p))
                .collect(),
            project_grants: file
                .actual_project_grants
                .into_iter()
                .map(|(p, g, q)| ((p, g), q))
                .collect(),
            direct_grants: file
                .direct_grants
                .into_iter()
                .map(|(t, id, w)| ((t, id), w))
                .collect(),
            // The poll plans no organisation suspension nor invitation (full runs do).
            org_users: BTreeMap::new(),
            invitations: Default::default(),
        },
        policy: file.policy,
        membership: file.membership,
        backend: Arc::clone(&members) as Arc<dyn crate::bitbucket::MembershipBackend>,
        members,
    })
}
