//! The audit trail: one JSON line per change bbsync attempted (or refused to attempt), written to
//! a file (appended, flushed per line) or, when no file is configured, to the log under the
//! `bbsync::audit` target (which the CLI keeps enabled whatever `RUST_LOG` says). When the file
//! cannot be written, the applier stops: no change goes unaudited.

use super::Outcome;
use crate::plan::{Change, Reason};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Audit {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
}

impl Audit {
    pub fn to_log() -> Audit {
        Audit { file: None }
    }

    pub fn to_file(path: &Path) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Audit {
            file: Some((path.to_path_buf(), Mutex::new(f))),
        })
    }

    /// Writes one record. An error means the record could not be kept anywhere durable.
    pub fn record(
        &self,
        run_id: &str,
        change: &Change,
        reason: &Reason,
        outcome: &Outcome,
    ) -> std::io::Result<()> {
        let line = serde_json::json!({
            "ts": crate::time::now_rfc3339(),
            "run_id": run_id,
            "change": change,
            "reason": reason,
            "description": format!("{change}: {reason}"),
            "outcome": outcome,
        });
        match &self.file {
            None => {
                tracing::info!(target: "bbsync::audit", "{line}");
                Ok(())
            }
            Some((path, f)) => {
                let mut f = f
                    .lock()
                    .map_err(|_| std::io::Error::other("audit lock poisoned"))?;
                writeln!(f, "{line}")
                    .and_then(|_| f.flush())
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            }
        }
    }
}
