//! One writer per workspace: an exclusive `flock` on `bbsync.lock` in the state directory, held
//! for as long as the [`WorkspaceLock`] lives. Two bbsync processes applying to one workspace
//! would each plan against a Bitbucket the other is changing, and each would take the other's
//! in-flight intents for dangling ones.
//!
//! The kernel drops the lock when the descriptor is closed, including when the process dies
//! (`kill -9`, a crash): a stale lock file never blocks anyone, and it is never deleted
//! (unlinking a lock file lets a third process lock a new inode while the second still holds the
//! old one). Locks are per open file description, so a second [`WorkspaceLock::acquire`] in the
//! same process fails too. The holder writes its pid and start time into the file after taking
//! the lock; that content is a hint for the message, not the lock. On NFS, Linux emulates
//! `flock` with byte-range locks (since 2.6.12): it works between clients, but a lock can be
//! lost when the server restarts; keep the state directory on a local disk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "bbsync.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another open of the file in this one) holds the lock.
    #[error("{}", held_message(path, *pid))]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("cannot take the workspace lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn held_message(path: &Path, pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => format!("another bbsync (pid {pid})"),
        None => "another bbsync".to_owned(),
    };
    format!(
        "{who} is applying to this workspace: {} is locked; wait for it to finish or stop it",
        path.display()
    )
}

impl LockError {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LockError::Held { .. } => "lock_held",
            LockError::Io { .. } => "lock_io",
        }
    }
}

/// The exclusive right to apply to one workspace; released on drop.
#[derive(Debug)]
pub struct WorkspaceLock {
    path: PathBuf,
    file: File,
}

impl WorkspaceLock {
    /// Takes the lock on `dir/bbsync.lock` (creating both) without waiting, and writes this
    /// process's pid and start time into it.
    pub fn acquire(dir: &Path) -> Result<WorkspaceLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        // Not truncated on open: until the lock is ours, the content is the holder's pid.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = holder_pid(&file);
                return Err(LockError::Held { path, pid });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io_err(source)),
        }
        let lock = WorkspaceLock { path, file };
        lock.write_holder().map_err(|source| LockError::Io {
            path: lock.path.clone(),
            source,
        })?;
        Ok(lock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_holder(&self) -> io::Result<()> {
        let mut f = &self.file;
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        let text = format!(
            "{}\nstarted {}\n",
            std::process::id(),
            crate::time::now_rfc3339()
        );
        // One write: a second instance reading meanwhile sees no pid or the whole of it.
        let n = f.write(text.as_bytes())?;
        if n != text.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the pid was not written whole",
            ));
        }
        Ok(())
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // Still held here: nobody reads a pid that is about to be gone. Closing the file (after
        // this) releases the lock.
        let _ = self.file.set_len(0);
    }
}

/// The pid on the first line of the lock file, if the holder has written it yet.
fn holder_pid(file: &File) -> Option<u32> {
    let mut f = file;
    let mut text = String::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.take(256).read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = WorkspaceLock::acquire(&dir.path().join("state")).expect("first");
        let err = WorkspaceLock::acquire(&dir.path().join("state")).expect_err("held");
        match &err {
            LockError::Held { path, pid } => {
                assert_eq!(path, first.path());
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("another bbsync (pid {})", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&first.path().display().to_string()), "{text}");
        assert_eq!(err.metric_label(), "lock_held");
    }

    #[test]
    fn the_lock_is_released_on_drop_and_the_file_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = WorkspaceLock::acquire(dir.path()).expect("first");
        let path = first.path().to_path_buf();
        drop(first);
        assert!(path.exists());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
        let again = WorkspaceLock::acquire(dir.path()).expect("free again");
        let text = std::fs::read_to_string(again.path()).expect("read");
        assert!(
            text.starts_with(&format!("{}\nstarted ", std::process::id())),
            "{text}"
        );
    }

    #[test]
    fn a_held_lock_without_a_pid_yet_says_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(LOCK_FILE);
        let raw = File::create(&path).expect("create");
        raw.try_lock().expect("lock");
        let err = WorkspaceLock::acquire(dir.path()).expect_err("held");
        assert!(matches!(err, LockError::Held { pid: None, .. }), "{err}");
        assert!(err.to_string().starts_with("another bbsync is applying"));
    }

    #[test]
    fn an_unusable_directory_is_an_io_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("write");
        let err = WorkspaceLock::acquire(&file).expect_err("a file is not a directory");
        assert!(matches!(err, LockError::Io { .. }));
        assert!(
            err.to_string()
                .contains(&file.join(LOCK_FILE).display().to_string()),
            "{err}"
        );
    }
}
