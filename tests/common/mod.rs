//! Shared fixtures: an emulated workspace built in code, a directory written as LDIF, and a
//! config pointing bbsync at the emulator.
#![allow(dead_code)]

pub mod daemon;

use bbsync::config::Config;
use bbsync_emulator::{
    CredentialKind, Emulator, Seed, SeedCredential, SeedGroup, SeedOrganisation, SeedRepo,
    SeedUser, SeedWorkspace,
};
use std::net::SocketAddr;
use std::path::Path;

/// The organisation of [`org_seed`], and its Admin API key.
pub const ORG: &str = "org-1";
pub const ORG_KEY: &str = "org-api-key";

/// `s` in organisation [`ORG`] (organisation-managed when `managed`), with an Admin API key
/// [`ORG_KEY`] and the people `suspended` in its directory.
pub fn org_seed(mut s: Seed, managed: bool, suspended: &[&str]) -> Seed {
    s.workspace.organisation_managed = managed;
    s.organisation = Some(SeedOrganisation {
        id: ORG.into(),
        suspended: suspended.iter().map(|w| acc(w)).collect(),
        ..Default::default()
    });
    s.credentials.push(SeedCredential {
        id: "org-key".into(),
        kind: CredentialKind::AdminApiKey,
        token: Some(ORG_KEY.into()),
        ..Default::default()
    });
    s
}

pub const ADMIN_EMAIL: &str = "admin@acme.test";
pub const ADMIN_TOKEN: &str = "admin-token";

/// A well-formed account id for the person called `name` (stable across calls).
pub fn acc(name: &str) -> String {
    bbsync::model::synthetic_account_id(name)
}

pub fn all_scopes() -> Vec<String> {
    bbsync_emulator::auth::API_TOKEN_SCOPES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Workspace `acme` owned by `admin`, with the given people as members and an admin API token.
pub fn seed(people: &[&str]) -> Seed {
    let mut users = vec![SeedUser {
        account_id: acc("admin"),
        display_name: "IT Admin".into(),
        nickname: "admin".into(),
        ..Default::default()
    }];
    users.extend(people.iter().map(|p| SeedUser {
        account_id: acc(p),
        display_name: format!("Person {p}"),
        nickname: p.to_string(),
        email: Some(format!("{p}@acme.test")),
        ..Default::default()
    }));
    Seed {
        workspace: SeedWorkspace {
            slug: "acme".into(),
            owner: acc("admin"),
            admins: vec![acc("admin")],
            ..Default::default()
        },
        users,
        credentials: vec![SeedCredential {
            id: "admin".into(),
            kind: CredentialKind::ApiToken,
            email: Some(ADMIN_EMAIL.into()),
            token: Some(ADMIN_TOKEN.into()),
            account_id: Some(acc("admin")),
            scopes: all_scopes(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Adds a workspace access token (`ws-token` / `access-token-1`) and an OAuth consumer of the
/// admin (`consumer` / `consumer-key` : `consumer-secret`, account + account:write + repository
/// + repository:admin) whose tokens live `ttl` seconds.
pub fn with_other_credentials(mut s: Seed, ttl: u64) -> Seed {
    s.credentials.push(SeedCredential {
        id: "ws-token".into(),
        kind: CredentialKind::AccessToken,
        token: Some("access-token-1".into()),
        scopes: vec!["repository".into(), "account".into()],
        ..Default::default()
    });
    s.credentials.push(SeedCredential {
        id: "consumer".into(),
        kind: CredentialKind::OauthConsumer,
        key: Some("consumer-key".into()),
        secret: Some("consumer-secret".into()),
        account_id: Some(acc("admin")),
        scopes: ["account", "account:write", "repository", "repository:admin"]
            .map(String::from)
            .to_vec(),
        token_ttl_secs: Some(ttl),
        ..Default::default()
    });
    s
}

pub fn add_repos(seed: &mut Seed, project: &str, prefix: &str, n: usize) {
    if !seed.projects.iter().any(|p| p.key == project) {
        seed.projects.push(bbsync_emulator::SeedProject {
            key: project.into(),
            ..Default::default()
        });
    }
    for i in 0..n {
        seed.repositories.push(SeedRepo {
            slug: format!("{prefix}-{i:03}"),
            project: project.into(),
            ..Default::default()
        });
    }
}

pub fn group(name: &str, members: &[&str]) -> SeedGroup {
    SeedGroup {
        name: name.into(),
        members: members.iter().map(|m| acc(m)).collect(),
        ..Default::default()
    }
}

pub async fn start(seed: Seed) -> Emulator {
    Emulator::start(seed, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator starts")
}

/// LDIF for people (name, disabled) and groups (cn, member names).
pub fn ldif(people: &[(&str, bool)], groups: &[(&str, &[&str])]) -> String {
    let mut s = String::new();
    for (p, disabled) in people {
        s.push_str(&format!(
            "dn: uid={p},ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: {p}\ncn: Person {p}\natlassianAccountId: {}\n",
            acc(p)
        ));
        if *disabled {
            s.push_str("nsAccountLock: TRUE\n");
        }
        s.push('\n');
    }
    for (g, members) in groups {
        s.push_str(&format!(
            "dn: cn={g},ou=groups,dc=acme,dc=test\nobjectClass: groupOfNames\ncn: {g}\n"
        ));
        for m in *members {
            s.push_str(&format!("member: uid={m},ou=people,dc=acme,dc=test\n"));
        }
        s.push('\n');
    }
    s
}

/// Config for the emulator; `rules` is TOML for [[groups]] / [[grants]] / [safety].
pub fn config(emu: &Emulator, dir: &Path, ldif_text: &str, rules: &str) -> Config {
    std::fs::write(dir.join("directory.ldif"), ldif_text).expect("write ldif");
    let text = format!(
        r#"
mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{}"
max_retries = 0
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token = "{ADMIN_TOKEN}"
[source]
kind = "ldif"
path = "directory.ldif"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "audit.jsonl"
[apply]
# Tests measure behaviour, not pacing: a budget the emulator's limit decides.
requests_per_hour = 3600000
burst = 1000
{rules}
"#,
        emu.base_url()
    );
    Config::from_toml_str(&text, "test.toml", dir).expect("valid test config")
}

/// Requests that change something (an Admin API search is a POST that reads).
pub fn writes(emu: &Emulator) -> Vec<String> {
    emu.requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.route.ends_with("/search"))
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// The audit records of a trail that carry an outcome (not intents), as JSON.
pub fn audit_outcomes(trail: &str) -> Vec<serde_json::Value> {
    trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("an audit line is JSON"))
        .filter(|r| r.get("outcome").is_some())
        .collect()
}

/// The final word on each change of a trail: the last outcome record per change.
pub fn audit_finals(trail: &str) -> Vec<serde_json::Value> {
    let mut last: Vec<(String, serde_json::Value)> = Vec::new();
    for r in audit_outcomes(trail) {
        let key = r["change"].to_string();
        match last.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = r,
            None => last.push((key, r)),
        }
    }
    last.into_iter().map(|(_, r)| r).collect()
}

/// Pipes `text` through `promtool check metrics`. Without promtool: fails when `CI` is set,
/// else says it skipped and returns false.
pub fn promtool_accepts(text: &str) -> bool {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed and CI is set (scripts/test.sh installs Debian's prometheus)"
            );
            eprintln!("SKIP promtool check: promtool is not installed (scripts/test.sh installs Debian's prometheus)");
            return false;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n--- the text ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
