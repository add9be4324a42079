//! Reviewed plans: `bbsync plan --out FILE` writes a plan with the fingerprints of what it was
//! computed from; `bbsync approve FILE` releases the revocations a safety guard held, for that
//! exact set only; `bbsync apply --plan FILE` applies the plan only when the directory and
//! Bitbucket still give exactly it, and otherwise refuses and says what moved.

use crate::reconcile::{Gate, Inputs, RunReport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("cannot read the plan file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a bbsync plan file: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("cannot write the plan file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no revocation back: there is nothing to approve")]
    NothingHeld { path: PathBuf },
}

/// An approval of the revocations a guard held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub at: String,
    /// The fingerprint of the revocation set approved (the plan's `revocations`).
    pub revocations: String,
    /// Who approved (`$USER` of the approver), for the audit.
    pub by: String,
}

/// A plan as written for review.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub version: u32,
    pub created_at: String,
    /// The configuration the plan was computed with.
    pub config: String,
    pub inputs: Inputs,
    /// The fingerprint of the plan's revocations.
    pub revocations: String,
    /// The guards that held the revocations back when the plan was written (for people to
    /// read: an apply recomputes the plan and compares fingerprints).
    pub held: serde_json::Value,
    /// The changes with their reasons, as the JSON report shows them.
    pub changes: serde_json::Value,
    pub approved: Option<Approval>,
}

impl PlanFile {
    pub fn from_report(r: &RunReport, config: &str) -> PlanFile {
        PlanFile {
            version: 1,
            created_at: r.started_at.clone(),
            config: config.to_owned(),
            inputs: r.inputs.clone(),
            revocations: r.plan.revocations.clone(),
            held: serde_json::to_value(&r.plan.held).unwrap_or_default(),
            changes: serde_json::to_value(&r.plan.changes).unwrap_or_default(),
            approved: None,
        }
    }

    pub fn load(path: &Path) -> Result<PlanFile, ReviewError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReviewError::Read {
            path: path.to_owned(),
            source,
        })?;
        let f: PlanFile = serde_json::from_str(&text).map_err(|e| ReviewError::Format {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        if f.version != 1 {
            return Err(ReviewError::Format {
                path: path.to_owned(),
                detail: format!("unknown version {}", f.version),
            });
        }
        Ok(f)
    }

    pub fn save(&self, path: &Path) -> Result<(), ReviewError> {
        let err = |source| ReviewError::Write {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text + "\n").map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Approves the held revocations of this plan (exactly this set).
    pub fn approve(&mut self, path: &Path, by: &str) -> Result<&Approval, ReviewError> {
        if self.held.as_array().is_none_or(Vec::is_empty) {
            return Err(ReviewError::NothingHeld {
                path: path.to_owned(),
            });
        }
        Ok(self.approved.insert(Approval {
            at: crate::time::now_rfc3339(),
            revocations: self.revocations.clone(),
            by: by.to_owned(),
        }))
    }

    /// What an apply of this plan must match.
    pub fn gate(&self) -> Gate {
        Gate {
            approved: self.approved.as_ref().map(|a| a.revocations.clone()),
            expect: Some(self.inputs.clone()),
        }
    }
}
