//! Renders a run for people (`--output human`) and machines (`--output json`).

use crate::apply::{Outcome, OutcomeKind};
use crate::plan::Change;
use crate::reconcile::RunReport;
use std::fmt::Write;

fn sign(c: &Change) -> char {
    if c.is_revocation() {
        '-'
    } else {
        '+'
    }
}

/// The plan and, when applied, the outcomes, as readable text.
pub fn human(r: &RunReport) -> String {
    let mut s = String::new();
    let src = &r.source;
    let _ = writeln!(
        s,
        "Directory: {} - {} people ({} active, {} left), {} groups, {} skipped entries",
        src.description,
        src.people,
        src.active,
        src.leavers,
        src.groups,
        src.issues.len()
    );
    for i in &src.issues {
        let _ = writeln!(s, "  ! skipped {}: {}", i.dn, i.problem);
    }
    if !src.unresolved.is_empty() {
        let _ = writeln!(
            s,
            "Unresolved: {} people have no account id and no resolver found one (not added anywhere, never read as leavers)",
            src.unresolved.len()
        );
    }
    let _ = writeln!(
        s,
        "Bitbucket: {} repositories in grant scope, {} API requests this run",
        r.repositories_in_scope, r.api_requests
    );
    let b = &r.membership_backend;
    let _ = writeln!(
        s,
        "Memberships: {} ({})",
        match b.backend {
            crate::config::MembershipBackendKind::AdminApi => "Atlassian Admin API",
            _ => "1.0 groups",
        },
        b.reason
    );
    if let Some(why) = &b.blocked {
        let _ = writeln!(s, "  ! every membership change is blocked: {why}");
    }
    if let Some(g) = &r.grant_reader {
        let _ = writeln!(s, "Grants: {g}");
    }
    let revocations = r
        .plan
        .changes
        .iter()
        .filter(|p| p.change.is_revocation())
        .count();
    if r.plan.changes.is_empty() {
        let _ = writeln!(s, "Plan: no changes, Bitbucket matches the directory.");
    } else {
        let _ = writeln!(
            s,
            "Plan: {} change(s), {} revocation(s) first:",
            r.plan.changes.len(),
            revocations
        );
        for p in &r.plan.changes {
            match &p.blocked {
                None => {
                    let _ = writeln!(s, "  {} {}: {}", sign(&p.change), p.change, p.reason);
                }
                Some(why) => {
                    let _ = writeln!(s, "  ! {}: {} [blocked: {why}]", p.change, p.reason);
                }
            }
        }
    }
    if !r.plan.skipped.is_empty() {
        let _ = writeln!(s, "Skipped on purpose: {}", r.plan.skipped.len());
        for k in &r.plan.skipped {
            let _ = writeln!(s, "  = {} [{}]", k.subject, k.reason);
        }
    }
    for n in &r.plan.notes {
        let _ = writeln!(s, "Rule: {n}");
    }
    for w in &r.plan.warnings {
        let _ = writeln!(s, "Warning: {w}");
    }
    if r.applied && !r.outcomes.is_empty() {
        let _ = writeln!(
            s,
            "Applied: {} applied, {} already done, {} failed, {} blocked, {} deferred",
            r.count(OutcomeKind::Applied) + r.count(OutcomeKind::Accepted),
            r.count(OutcomeKind::AlreadyDone),
            r.count(OutcomeKind::Failed),
            r.count(OutcomeKind::Blocked),
            r.count(OutcomeKind::Deferred)
        );
        if r.count(OutcomeKind::Accepted) > 0 {
            let _ = writeln!(
                s,
                "  {} acknowledged by Bitbucket but not read back (the verification read failed)",
                r.count(OutcomeKind::Accepted)
            );
        }
        if let Some(first) = r.outcomes.iter().find_map(|o| match &o.outcome {
            Outcome::Deferred { why, .. } => Some(why),
            _ => None,
        }) {
            let _ = writeln!(
                s,
                "  DEFERRED {} change(s) to the next run: {first}",
                r.count(OutcomeKind::Deferred)
            );
        }
        for o in &r.outcomes {
            match &o.outcome {
                Outcome::Failed { error, .. } => {
                    let _ = writeln!(s, "  FAILED {}: {error}", o.change);
                }
                Outcome::Blocked { reason } => {
                    let _ = writeln!(s, "  BLOCKED {}: {reason}", o.change);
                }
                _ => {}
            }
        }
    } else if !r.applied && !r.plan.changes.is_empty() {
        let _ = writeln!(
            s,
            "Dry run: nothing was changed (set mode = \"apply\" or use `bbsync apply`)."
        );
    }
    s
}

pub fn json(r: &RunReport) -> String {
    serde_json::to_string_pretty(r)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render report: {e}\"}}"))
}
