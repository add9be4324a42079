//! `bbsync demo`: the whole loop on a laptop with nothing installed. An embedded emulator is
//! seeded with a realistic workspace (4 projects, 50 repositories, a leaver who still has access,
//! a manual grant outside the managed scope); the bundled LDIF is the directory.

use crate::config::Config;
use crate::config::SourceSettings;
use crate::reconcile::{Reconciler, RunReport};
use crate::report;
use bbsync_emulator::{Emulator, Seed};
use std::path::Path;

const SEED: &str = include_str!("../demo/seed.json");
const LDIF: &str = include_str!("../demo/directory.ldif");
const CONFIG: &str = include_str!("../demo/bbsync.toml");

/// Any failure of the demo's own set-up (config, reconcile, emulator).
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// What the demo showed; `ok` when the second reconcile planned nothing.
pub struct DemoResult {
    pub first: RunReport,
    pub second: RunReport,
    pub checks: Vec<(bool, String)>,
}

impl DemoResult {
    pub fn ok(&self) -> bool {
        self.second.plan.is_empty() && self.first.ok() && self.checks.iter().all(|(ok, _)| *ok)
    }
}

pub fn seed() -> Result<Seed, serde_json::Error> {
    serde_json::from_str(SEED)
}

/// The organisation of `bbsync demo --org-managed`, and its API key.
pub const ORG_ID: &str = "demo-org";
const ORG_KEY: &str = "demo-org-key";

/// The demo workspace, organisation-managed (`--org-managed`): 1.0 group writes answer 405,
/// the groups are the organisation directory's, written through the Admin API.
pub fn org_seed() -> Result<Seed, serde_json::Error> {
    let mut s = seed()?;
    s.workspace.organisation_managed = true;
    s.organisation = Some(bbsync_emulator::SeedOrganisation {
        id: ORG_ID.into(),
        ..Default::default()
    });
    s.credentials.push(bbsync_emulator::SeedCredential {
        id: "org-key".into(),
        kind: bbsync_emulator::CredentialKind::AdminApiKey,
        token: Some(ORG_KEY.into()),
        ..Default::default()
    });
    Ok(s)
}

/// The demo configuration pointed at `api_url`, reading the bundled LDIF; with
/// `org_managed`, an `[admin_api]` on the same emulator (`membership_backend` stays `auto`,
/// which tells the workspace kind without writing).
pub fn config(api_url: &str, audit: &Path, org_managed: bool) -> Result<Config, DemoError> {
    let mut cfg = Config::from_toml_str(CONFIG, "demo/bbsync.toml", Path::new("demo"))?;
    cfg.bitbucket.api_url = api_url.to_owned();
    cfg.audit_path = Some(audit.to_owned());
    cfg.source = SourceSettings::LdifText {
        name: "demo/directory.ldif (bundled)".into(),
        text: LDIF.to_owned(),
    };
    if org_managed {
        cfg.admin_api = Some(crate::config::AdminApiConfig {
            url: format!("{api_url}/admin"),
            org_id: ORG_ID.into(),
            api_key: crate::config::Secret::new(ORG_KEY),
            directory: "-".into(),
        });
    }
    Ok(cfg)
}

/// Runs two reconciles against a fresh emulator and checks the story's promises.
pub async fn run_cycle(
    emu: &Emulator,
    audit: &Path,
    org_managed: bool,
    out: &mut dyn FnMut(&str),
) -> Result<DemoResult, DemoError> {
    let cfg = config(&emu.base_url(), audit, org_managed)?;
    let rec = Reconciler::new(cfg)?;

    out("== Reconcile 1: plan and apply ==");
    let first = rec.run(true).await?;
    out(&report::human(&first));

    out("== Reconcile 2: should find nothing to do ==");
    let second = rec.run(true).await?;
    out(&report::human(&second));

    let state = emu.state();
    let bob = state
        .users
        .iter()
        .find(|u| u.nickname == "bob")
        .map(|u| u.account_id.clone());
    let bob_groups: Vec<String> = state
        .groups
        .iter()
        .filter(|g| bob.as_ref().is_some_and(|b| g.members.contains(b)))
        .map(|g| g.name.clone())
        .collect();
    let manual = state
        .group_grants
        .iter()
        .any(|g| g.repo == "ops-terraform" && g.group == "contractors" && g.permission == "read");
    let bots = state
        .group_grants
        .iter()
        .filter(|g| g.group == "release-bots" && g.permission == "admin")
        .count();
    let v1_writes = emu
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && r.route.starts_with("/1.0/"))
        .count();
    let mut checks = vec![
        (
            bob_groups.is_empty(),
            format!(
                "leaver Bob Stone is in no Bitbucket group (was in Developers){}",
                if bob_groups.is_empty() {
                    String::new()
                } else {
                    format!(": still in {bob_groups:?}")
                }
            ),
        ),
        (
            manual,
            "manual grant outside the managed scope untouched: contractors read on ops-terraform"
                .into(),
        ),
        (
            bots == 8,
            format!("unmanaged group release-bots keeps admin on its {bots} OPS repositories"),
        ),
        (
            second.plan.is_empty(),
            format!(
                "second reconcile planned {} changes",
                second.plan.changes.len()
            ),
        ),
    ];
    if org_managed {
        checks.push((
            first.membership_backend.backend == crate::config::MembershipBackendKind::AdminApi
                && v1_writes == 0,
            format!(
                "memberships written through the Atlassian Admin API ({}), {v1_writes} 1.0 write(s)",
                first.membership_backend.reason
            ),
        ));
    }
    out("== Checks ==");
    for (ok, what) in &checks {
        out(&format!("  [{}] {what}", if *ok { "ok" } else { "FAIL" }));
    }
    Ok(DemoResult {
        first,
        second,
        checks,
    })
}
