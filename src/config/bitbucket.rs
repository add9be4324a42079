//! `[bitbucket]`: the workspace, how it is called, and which credential serves each API family.

use super::raw::{Field, Problems, RawTable, Table, Word};
use super::{BitbucketConfig, Credential, GrantReader, GrantWrites, MembershipBackendKind};
use crate::family::ApiFamily;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[bitbucket]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawBitbucket {
    /// Workspace slug (not its `{UUID}`: 1.0 endpoints refuse UUIDs).
    workspace: Field<String>,
    /// Base of `/1.0` and `/2.0`; default `https://api.bitbucket.org`.
    api_url: Field<String>,
    /// OAuth client-credentials endpoint, for credentials of kind `oauth`.
    oauth_token_url: Field<String>,
    /// The credential every API family uses unless `[bitbucket.families]` names another;
    /// optional when exactly one is defined.
    credential: Field<String>,
    /// Per-request timeout in seconds; default 30.
    timeout_secs: Field<u64>,
    /// Retries of one request on 429, 5xx and transport errors; default 3.
    max_retries: Field<u32>,
    /// Which API writes group grants: `permissions-config` (default) or `group-privileges`.
    grant_writes: Field<Word<GrantWrites>>,
    /// Which API reads repository grants of groups: `auto` (default), `v1_group_privileges`
    /// or `v2_permissions_config`.
    grant_reader: Field<Word<GrantReader>>,
    /// `[bitbucket.families]`: API family key -> credential name.
    families: Field<BTreeMap<String, String>>,
    /// Which API writes group memberships: `auto` (default), `v1_groups` or `admin_api`.
    membership_backend: Field<Word<MembershipBackendKind>>,
}

impl RawTable for RawBitbucket {}

/// `[bitbucket]`, given the credentials that were read (to check the names it uses).
pub(super) fn validate(
    raw: Table<RawBitbucket>,
    credentials: &BTreeMap<String, Credential>,
    p: &mut Problems,
) -> BitbucketConfig {
    let RawBitbucket {
        workspace,
        api_url,
        oauth_token_url,
        credential,
        timeout_secs,
        max_retries,
        grant_writes,
        grant_reader,
        families,
        membership_backend,
    } = raw.read("bitbucket", p).unwrap_or_default();

    let workspace = workspace.text("bitbucket.workspace", p).unwrap_or_else(|| {
        if !p.any_under("bitbucket.workspace") {
            p.required("bitbucket.workspace", "(the workspace slug)");
        }
        String::new()
    });
    if workspace.starts_with('{') {
        p.push(
            "bitbucket.workspace",
            "use the workspace slug, not its UUID (1.0 endpoints refuse UUIDs)",
        );
    } else if workspace.contains(['/', '?', '#', ' ']) {
        p.push(
            "bitbucket.workspace",
            format!("{workspace:?} is not a slug"),
        );
    }
    let mut url = |key: &str, v: Field<String>, default: &str| {
        let v = v.text(key, p).unwrap_or_else(|| default.to_owned());
        match url::Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => v.trim_end_matches('/').to_owned(),
            _ => {
                p.push(key, format!("{v:?} is not an http(s) URL"));
                v
            }
        }
    };
    let api_url = url("bitbucket.api_url", api_url, "https://api.bitbucket.org");
    let oauth_token_url = url(
        "bitbucket.oauth_token_url",
        oauth_token_url,
        "https://bitbucket.org/site/oauth2/access_token",
    );

    let families = serving_credentials(
        credential.text("bitbucket.credential", p),
        families.get("bitbucket.families", p).unwrap_or_default(),
        credentials,
        p,
    );
    let grant_writes = grant_writes
        .word("bitbucket.grant_writes", p)
        .unwrap_or(GrantWrites::PermissionsConfig);
    let grant_reader = grant_reader
        .word("bitbucket.grant_reader", p)
        .unwrap_or_default();
    if grant_reader == GrantReader::V2PermissionsConfig {
        // Known before any call: the sheet says access tokens list no permissions.
        let serving = families.get(&ApiFamily::PermissionsRead);
        if let Some((name, Credential::AccessToken { .. })) =
            serving.and_then(|n| credentials.get_key_value(n))
        {
            p.push(
                "bitbucket.grant_reader",
                format!(
                    "\"v2_permissions_config\" reads grants with the permissions_read credential, and {name:?} is an access token, which cannot list permissions; serve permissions_read with an admin's API token or an OAuth consumer (bitbucket.families.permissions_read), or use \"auto\""
                ),
            );
        }
    }
    let timeout_secs = timeout_secs.get("bitbucket.timeout_secs", p).unwrap_or(30);
    if timeout_secs == 0 {
        p.say(
            "bitbucket.timeout_secs",
            "bitbucket.timeout_secs must be at least 1",
        );
    }
    BitbucketConfig {
        workspace,
        api_url,
        oauth_token_url,
        timeout: Duration::from_secs(timeout_secs),
        max_retries: max_retries.get("bitbucket.max_retries", p).unwrap_or(3),
        grant_writes,
        grant_reader,
        families,
        membership_backend: membership_backend
            .word("bitbucket.membership_backend", p)
            .unwrap_or_default(),
    }
}

/// Which credential serves each API family: `[bitbucket.families]` overrides, else the default
/// credential (`bitbucket.credential`, or the only one defined).
fn serving_credentials(
    default: Option<String>,
    overrides: BTreeMap<String, String>,
    credentials: &BTreeMap<String, Credential>,
    p: &mut Problems,
) -> BTreeMap<ApiFamily, String> {
    // A credential with problems of its own is already reported; naming it is no mistake.
    let known = |name: &str, p: &Problems| {
        credentials.contains_key(name) || p.any_under(&format!("credentials.{name}"))
    };
    let default = match default {
        Some(c) => {
            if !known(&c, p) {
                p.push(
                    "bitbucket.credential",
                    format!("no [credentials.{c}] is defined"),
                );
            }
            Some(c)
        }
        None if credentials.len() == 1 => credentials.keys().next().cloned(),
        None => None,
    };
    for (key, name) in &overrides {
        let key_path = format!("bitbucket.families.{key}");
        if ApiFamily::from_key(key).is_none() {
            p.push(
                key_path,
                format!(
                    "unknown API family (known: {})",
                    ApiFamily::ALL.map(ApiFamily::key).join(", ")
                ),
            );
        } else if !known(name.trim(), p) {
            p.push(
                key_path,
                format!("no [credentials.{}] is defined", name.trim()),
            );
        }
    }
    let mut families = BTreeMap::new();
    let mut unserved = Vec::new();
    for f in ApiFamily::ALL {
        match overrides
            .get(f.key())
            .map(|s| s.trim().to_owned())
            .or_else(|| default.clone())
        {
            Some(name) => {
                families.insert(f, name);
            }
            None => unserved.push(f.key()),
        }
    }
    if !unserved.is_empty() {
        if credentials.is_empty() && !p.any_under("credentials") {
            p.push(
                "credentials",
                "define at least one, e.g. [credentials.admin] kind = \"api_token\"",
            );
        } else if !credentials.is_empty() {
            p.push(
                "bitbucket.credential",
                format!(
                    "several credentials are defined; name the default one, or give every family under [bitbucket.families] (missing: {})",
                    unserved.join(", ")
                ),
            );
        }
    }
    families
}
