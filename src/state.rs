//! What must survive a restart, in one JSON file under `offboarding.state_dir`: when members
//! without a directory entry were first seen missing (their grace runs from then), and whose
//! direct grants were already cleaned after they left (so they are not read again every run),
//! and whom bbsync suspended in the organisation directory (the only people it restores).
//!
//! Written atomically: a temporary file in the same directory, fsync, rename over the old one,
//! fsync of the directory. A file that cannot be parsed is reported and never guessed at.

use crate::model::AccountId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {path} is corrupt ({detail}); it is moved aside and a fresh one started (the grace of everyone missing starts again)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write the state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The persisted state. Times are Unix seconds.
/// Unknown fields are ignored (a newer bbsync may add some); the version says what is known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version (1).
    pub version: u32,
    /// Members of managed groups without a directory entry: when first seen missing.
    #[serde(default)]
    pub first_missing: BTreeMap<AccountId, u64>,
    /// People who left whose direct grants were found, and left, clean: since when.
    #[serde(default)]
    pub offboarded_clean: BTreeMap<AccountId, u64>,
    /// How many people the last good read had (the shrink guard compares against it).
    #[serde(default)]
    pub last_good_people: Option<usize>,
    /// Fingerprint of the managed repositories and projects the clean marks were made for.
    #[serde(default)]
    pub scope: Option<String>,
    /// `offboarding.suspend_in_org`: whom bbsync suspended in the organisation directory,
    /// since when (the only people it restores).
    #[serde(default)]
    pub org_suspended: BTreeMap<AccountId, u64>,
    /// Offboarded people to be suspended whose suspension is not confirmed yet (kept before
    /// the apply: someone who vanished is invisible once their memberships are gone).
    #[serde(default)]
    pub org_pending: BTreeMap<AccountId, PendingSuspension>,
    /// Offboarded people found suspended (or not in the organisation directory): since when;
    /// not asked again before `offboarding.recheck_secs`.
    #[serde(default)]
    pub org_settled: BTreeMap<AccountId, u64>,
    /// Invitations bbsync sent (`source.invite_unresolved`), by [`invitation_key`]: since
    /// when. An accepted invitation leaves the pending list before the resolvers see its
    /// person; it is not sent again while this remembers it.
    #[serde(default)]
    pub invited: BTreeMap<String, u64>,
}

/// The key of an invitation in [`State::invited`]: group and case-folded email.
pub fn invitation_key(group: &crate::model::GroupSlug, email: &str) -> String {
    format!(
        "{} {}",
        group.as_str(),
        crate::model::Email::new(email).folded()
    )
}

/// A suspension planned and not confirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSuspension {
    /// When it was first planned (Unix seconds).
    pub since: u64,
    /// A request was sent whose outcome is not known (a timeout, a 5xx): if the organisation
    /// shows the person suspended, bbsync suspended them.
    #[serde(default)]
    pub sent: bool,
}

pub fn to_unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The state file of one deployment.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn in_dir(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("bbsync-state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state, or `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let state: State = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        if state.version != 1 {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                detail: format!("unknown version {}", state.version),
            });
        }
        Ok(Some(state))
    }

    /// Moves the file aside (`bbsync-state.json.corrupt-UNIXTIME`) so that a fresh one can be
    /// written without losing what was there.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let to = self
            .path
            .with_extension(format!("json.corrupt-{}", to_unix(SystemTime::now())));
        std::fs::rename(&self.path, &to).map_err(|source| StateError::Write {
            path: to.clone(),
            source,
        })?;
        Ok(to)
    }

    /// Replaces the file atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(".bbsync-state.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(&State {
            version: 1,
            ..state.clone()
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself must reach the disk.
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> AccountId {
        AccountId::parse(&crate::model::synthetic_account_id(n)).expect("id")
    }

    #[test]
    fn state_round_trips_and_a_missing_file_is_no_state() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = StateFile::in_dir(&dir.path().join("nested"));
        assert_eq!(f.load().expect("load"), None);
        let mut s = State::default();
        s.first_missing.insert(id("ann"), 1_700_000_000);
        f.save(&s).expect("save");
        let back = f.load().expect("load").expect("some");
        assert_eq!(back.first_missing, s.first_missing);
        assert_eq!(back.version, 1);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("nested"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, ["bbsync-state.json"], "no temporary file left");
    }

    #[test]
    fn a_corrupt_file_is_reported_not_guessed_at() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = StateFile::in_dir(dir.path());
        std::fs::write(f.path(), "{\"version\": 1, \"first_missing\": {\"x\"").expect("write");
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
        std::fs::write(f.path(), "{\"version\": 7}").expect("write");
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
        std::fs::write(f.path(), "{\"version\": 1, \"added_later\": true}").expect("write");
        assert!(f.load().expect("unknown fields are fine").is_some());
    }
}
