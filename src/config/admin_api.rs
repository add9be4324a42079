//! `[admin_api]`: the Atlassian Admin API (organisation-managed workspaces), and
//! `bitbucket.membership_backend`, which says whether group memberships are written there.

use super::credentials::read_secret;
use super::paths::Paths;
use super::raw::{Field, Problems, RawTable, Table};
use super::Secret;
use serde::Deserialize;
use std::path::PathBuf;

/// Which API reads and writes group memberships (`bitbucket.membership_backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipBackendKind {
    /// The Admin API when `[admin_api]` is configured and the workspace shows, without any
    /// write, that it is organisation-managed; 1.0 groups otherwise.
    #[default]
    Auto,
    /// Bitbucket's 1.0 groups API (classic workspaces).
    V1Groups,
    /// The Atlassian Admin API (organisation-managed workspaces); needs `[admin_api]`.
    AdminApi,
}

impl MembershipBackendKind {
    /// The word in the configuration and the reports.
    pub fn key(self) -> &'static str {
        match self {
            MembershipBackendKind::Auto => "auto",
            MembershipBackendKind::V1Groups => "v1_groups",
            MembershipBackendKind::AdminApi => "admin_api",
        }
    }
}

/// `[admin_api]`, validated.
#[derive(Clone, Debug)]
pub struct AdminApiConfig {
    /// Base of `/v1` and `/v2`; default `https://api.atlassian.com/admin`.
    pub url: String,
    /// The organisation id (admin.atlassian.com, Settings, API keys).
    pub org_id: String,
    /// The organisation's API key, sent as Bearer.
    pub api_key: Secret,
    /// The directory groups and users live in; `-` (the default) is "every directory the
    /// key administers".
    pub directory: String,
}

/// `[admin_api]` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAdminApi {
    /// Base URL; default `https://api.atlassian.com/admin`.
    url: Field<String>,
    /// The organisation id.
    org_id: Field<String>,
    /// The org API key (inline or from the environment).
    api_key: Field<String>,
    /// A file holding the org API key.
    api_key_file: Field<PathBuf>,
    /// The directory id; default `-`.
    directory: Field<String>,
}

impl RawTable for RawAdminApi {}

/// `[admin_api]`: `None` when the table is absent (or broken: then a problem says why).
pub(super) fn validate(
    raw: Table<RawAdminApi>,
    paths: &Paths,
    p: &mut Problems,
) -> Option<AdminApiConfig> {
    let before = p.len();
    let RawAdminApi {
        url,
        org_id,
        api_key,
        api_key_file,
        directory,
    } = raw.read("admin_api", p)?;
    let url = url
        .text("admin_api.url", p)
        .unwrap_or_else(|| "https://api.atlassian.com/admin".to_owned());
    let url = match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => url.trim_end_matches('/').to_owned(),
        _ => {
            p.push("admin_api.url", format!("{url:?} is not an http(s) URL"));
            url
        }
    };
    let org_id = org_id.text("admin_api.org_id", p);
    if org_id.is_none() && !p.any_under("admin_api.org_id") {
        p.required(
            "admin_api.org_id",
            "(the organisation id, admin.atlassian.com)",
        );
    }
    let segment_ok = |s: &str| !s.is_empty() && !s.contains(['/', '?', '#', ' ']);
    if let Some(o) = org_id.as_deref().filter(|o| !segment_ok(o)) {
        p.push(
            "admin_api.org_id",
            format!("{o:?} is not an organisation id"),
        );
    }
    let directory = directory
        .text("admin_api.directory", p)
        .unwrap_or_else(|| "-".to_owned());
    if !segment_ok(&directory) {
        p.push(
            "admin_api.directory",
            format!("{directory:?} is not a directory id (or \"-\")"),
        );
    }
    let key_before = p.len();
    let api_key = read_secret("admin_api.api_key", api_key, api_key_file, paths, p);
    if api_key.is_none() && p.len() == key_before {
        p.say(
            "admin_api.api_key",
            "admin_api.api_key (or admin_api.api_key_file) is required: the organisation's API key",
        );
    }
    if p.len() > before {
        return None;
    }
    Some(AdminApiConfig {
        url,
        org_id: org_id?,
        api_key: api_key?,
        directory,
    })
}
