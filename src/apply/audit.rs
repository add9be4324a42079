//! The audit trail: one JSON line per change bbsync attempted (or refused to attempt), written to
//! a file (appended, flushed per line) or, when no file is configured, to the log under the
//! `bbsync::audit` target.

use super::Outcome;
use crate::plan::Change;
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

    pub fn record(&self, run_id: &str, change: &Change, outcome: &Outcome) {
        let line = serde_json::json!({
            "ts": crate::time::now_rfc3339(),
            "run_id": run_id,
            "change": change,
            "description": change.to_string(),
            "outcome": outcome,
        });
        match &self.file {
            None => tracing::info!(target: "bbsync::audit", "{line}"),
            Some((path, f)) => {
                let res = match f.lock() {
                    Ok(mut f) => writeln!(f, "{line}").and_then(|_| f.flush()),
                    Err(_) => Err(std::io::Error::other("audit lock poisoned")),
                };
                if let Err(e) = res {
                    // Never lose the record: fall back to the log.
                    tracing::error!(path = %path.display(), error = %e, "cannot write audit file; record follows");
                    tracing::info!(target: "bbsync::audit", "{line}");
                }
            }
        }
    }
}
