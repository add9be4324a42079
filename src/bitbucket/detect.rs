//! Which kind of workspace this is, told without writing anything, and which membership
//! backend that makes (`bitbucket.membership_backend`). The signals (shared/bitbucket-api.md
//! section 1): an organisation-managed workspace has the 1.0 invitation endpoints "off
//! entirely" while a classic one answers `GET /1.0/users/{ws}/invitations`; and its groups are
//! the organisation directory's, so the Admin API finds them by name. [`judge`] and [`choose`]
//! are plain functions of what was seen; [`detect`] does the two reads.

use super::{expect, ApiFamily, Body, Clients};
use crate::config::{Config, MembershipBackendKind};
use reqwest::Method;
use serde::Serialize;

/// What the workspace showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detected {
    Classic,
    OrganisationManaged,
    Unknown,
}

/// The read-only signals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// The status `GET /1.0/users/{ws}/invitations` answered (`None`: no answer came).
    pub invitations: Option<u16>,
    /// Of the managed groups that exist in Bitbucket, how many the Admin API found by name
    /// in the organisation directory: (found, asked). `None`: not asked (no `[admin_api]`,
    /// or the search failed).
    pub org_groups: Option<(usize, usize)>,
}

/// The kind of workspace the signals show, with the evidence in words. 2xx from the
/// invitations listing is a classic workspace; 405 or 410 is one with invitations off; a 404
/// (which a path the service does not know answers too) counts only when the organisation
/// directory also holds the workspace's groups.
pub fn judge(s: &Signals) -> (Detected, String) {
    let org = match s.org_groups {
        Some((found, asked)) if asked > 0 => Some((found, asked)),
        _ => None,
    };
    let org_words = |(found, asked): (usize, usize)| {
        format!("the Admin API found {found} of {asked} of the workspace's managed groups in the organisation directory")
    };
    match s.invitations {
        Some(code) if (200..300).contains(&code) => (
            Detected::Classic,
            format!("the 1.0 invitations listing answers (HTTP {code})"),
        ),
        Some(code @ (405 | 410)) => {
            let mut why = format!("the 1.0 invitations are off (HTTP {code})");
            if let Some(o) = org {
                why = format!("{why}, and {}", org_words(o));
            }
            (Detected::OrganisationManaged, why)
        }
        Some(404) => match org {
            Some(o @ (found, _)) if found > 0 => (
                Detected::OrganisationManaged,
                format!("the 1.0 invitations answer 404, and {}", org_words(o)),
            ),
            _ => (
                Detected::Unknown,
                "the 1.0 invitations answer 404, which proves nothing alone".to_owned(),
            ),
        },
        Some(code) => (
            Detected::Unknown,
            format!("the 1.0 invitations listing answered HTTP {code}"),
        ),
        None => (
            Detected::Unknown,
            "the 1.0 invitations listing could not be read".to_owned(),
        ),
    }
}

/// Which backend writes memberships, and why; `blocked` when it cannot write here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// `v1_groups` or `admin_api`.
    pub backend: MembershipBackendKind,
    /// How it was chosen, for the plan header, `check` and the log.
    pub reason: String,
    /// Why no membership change can be written with it, with the fix (every membership
    /// change is then blocked up front).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

const FIX_ADMIN: &str = "group memberships of an organisation-managed workspace are written through the Atlassian Admin API: add an [admin_api] table (org_id, api_key_file) and set bitbucket.membership_backend = \"admin_api\" (or \"auto\")";

/// The backend for `setting`, given what was detected (`None`: nothing was asked) and
/// whether `[admin_api]` is configured.
pub fn choose(
    setting: MembershipBackendKind,
    detected: Option<(Detected, String)>,
    admin_configured: bool,
) -> Choice {
    use MembershipBackendKind::*;
    let v1 = |reason: String, blocked: Option<String>| Choice {
        backend: V1Groups,
        reason,
        blocked,
    };
    match (setting, detected) {
        (AdminApi, _) => Choice {
            backend: AdminApi,
            reason: "bitbucket.membership_backend = \"admin_api\"".into(),
            blocked: None,
        },
        (V1Groups, Some((Detected::OrganisationManaged, why))) => v1(
            "bitbucket.membership_backend = \"v1_groups\"".into(),
            Some(format!(
                "the workspace is organisation-managed ({why}): 1.0 group writes answer 405 there; {FIX_ADMIN}"
            )),
        ),
        (V1Groups, _) => v1("bitbucket.membership_backend = \"v1_groups\"".into(), None),
        (Auto, Some((Detected::OrganisationManaged, why))) if admin_configured => Choice {
            backend: AdminApi,
            reason: format!("auto: organisation-managed ({why})"),
            blocked: None,
        },
        (Auto, Some((Detected::OrganisationManaged, why))) => v1(
            format!("auto: organisation-managed ({why}), but no [admin_api] is configured"),
            Some(format!(
                "the workspace is organisation-managed ({why}): 1.0 group writes answer 405 there; {FIX_ADMIN}"
            )),
        ),
        (Auto, Some((Detected::Classic, why))) => v1(format!("auto: classic ({why})"), None),
        (Auto, Some((Detected::Unknown, why))) => v1(
            format!("auto: could not tell ({why}); assuming a classic workspace. Set bitbucket.membership_backend, and confirm with bbsync check --probe-writes"),
            None,
        ),
        (Auto, None) => v1("auto: not asked (no membership change to write)".into(), None),
    }
}

/// Reads the signals: the invitations listing with the groups-read credential and, when
/// `[admin_api]` is configured, the managed groups that exist (`existing`, by name) in the
/// organisation directory. Never writes.
pub async fn detect(cfg: &Config, clients: &Clients, existing: &[String]) -> Signals {
    let read = clients.get(ApiFamily::GroupsRead);
    let url = read.url(&["1.0", "users", read.workspace(), "invitations"]);
    let invitations = match read
        .send_expecting(Method::GET, &url, Body::None, expect::any)
        .await
    {
        Ok(a) => Some(a.status.as_u16()),
        Err(e) => e.status(),
    };
    let org_groups = match (&cfg.admin_api, existing.is_empty()) {
        (Some(_), false) => {
            match clients.admin_api(cfg, std::sync::Arc::new(clients.v1_groups())) {
                Some(admin) => match admin.find_by_names(existing).await {
                    Ok(found) => Some((found, existing.len())),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not search the organisation directory for the workspace's groups");
                        None
                    }
                },
                None => None,
            }
        }
        _ => None,
    };
    Signals {
        invitations,
        org_groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(invitations: Option<u16>, org_groups: Option<(usize, usize)>) -> Signals {
        Signals {
            invitations,
            org_groups,
        }
    }

    #[test]
    fn the_signals_tell_the_kind_only_when_they_are_enough() {
        use Detected::*;
        for (signals, kind) in [
            (s(Some(200), None), Classic),
            (s(Some(200), Some((3, 3))), Classic),
            (s(Some(405), None), OrganisationManaged),
            (s(Some(410), Some((0, 2))), OrganisationManaged),
            (s(Some(404), Some((1, 2))), OrganisationManaged),
            (s(Some(404), Some((0, 2))), Unknown),
            (s(Some(404), None), Unknown),
            (s(Some(404), Some((0, 0))), Unknown),
            (s(Some(403), Some((2, 2))), Unknown),
            (s(None, None), Unknown),
        ] {
            assert_eq!(judge(&signals).0, kind, "{signals:?}");
        }
    }

    #[test]
    fn v1_groups_on_an_organisation_managed_workspace_blocks_with_the_fix() {
        use MembershipBackendKind::*;
        let org = Some(judge(&s(Some(405), None)));
        let c = choose(V1Groups, org.clone(), true);
        assert_eq!(c.backend, V1Groups);
        let why = c.blocked.expect("blocked");
        assert!(why.contains("admin_api") && why.contains("405"), "{why}");
        let c = choose(Auto, org.clone(), true);
        assert_eq!((c.backend, c.blocked), (AdminApi, None));
        let c = choose(Auto, org, false);
        assert_eq!(c.backend, V1Groups);
        assert!(c.blocked.expect("blocked").contains("[admin_api]"));
        let classic = Some(judge(&s(Some(200), None)));
        assert_eq!(choose(V1Groups, classic.clone(), true).blocked, None);
        assert_eq!(choose(Auto, classic, true).backend, V1Groups);
        let unknown = choose(Auto, Some(judge(&s(Some(500), None))), true);
        assert_eq!((unknown.backend, unknown.blocked), (V1Groups, None));
        assert!(unknown.reason.contains("could not tell"));
        assert_eq!(choose(AdminApi, None, true).backend, AdminApi);
    }
}
