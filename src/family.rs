//! API families: groups of Bitbucket operations that one credential serves.
//!
//! Since app passwords were removed (2026-07-28) no single credential can do everything:
//! permissions-config writes take only an admin's Atlassian API token, OAuth consumers may be
//! what 1.0 group writes need (`account:write`), and access tokens cannot touch permissions at
//! all (shared/bitbucket-api.md section 6). Each family is configured with its own credential.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFamily {
    /// `GET /1.0/groups/{ws}`: groups with members.
    GroupsRead,
    /// 1.0 group create, member add and remove.
    GroupsWrite,
    /// `GET /2.0/workspaces/{ws}/members`.
    MembersRead,
    /// `GET /1.0/group-privileges/{ws}`: every group grant in one call.
    GroupPrivilegesRead,
    /// 1.0 group-privileges PUT/DELETE (classic workspaces only).
    GroupPrivilegesWrite,
    /// `GET /2.0/repositories/{ws}`.
    RepositoriesRead,
    /// 2.0 `permissions-config` reads.
    PermissionsRead,
    /// 2.0 `permissions-config` PUT/DELETE.
    PermissionsWrite,
    /// The Atlassian Admin API (groups and memberships of organisation-managed workspaces),
    /// served by `[admin_api]`'s org API key; not one of [`ApiFamily::ALL`], which are the
    /// Bitbucket families `[bitbucket.families]` names credentials for.
    AdminApi,
}

/// The credential kinds, as far as capability rules are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiToken,
    AccessToken,
    OAuth,
    /// An organisation's Atlassian Admin API key (`[admin_api]`).
    AdminApiKey,
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialKind::ApiToken => "api_token",
            CredentialKind::AccessToken => "access_token",
            CredentialKind::OAuth => "oauth",
            CredentialKind::AdminApiKey => "admin_api_key",
        })
    }
}

impl ApiFamily {
    pub const ALL: [ApiFamily; 8] = [
        ApiFamily::GroupsRead,
        ApiFamily::GroupsWrite,
        ApiFamily::MembersRead,
        ApiFamily::GroupPrivilegesRead,
        ApiFamily::GroupPrivilegesWrite,
        ApiFamily::RepositoriesRead,
        ApiFamily::PermissionsRead,
        ApiFamily::PermissionsWrite,
    ];

    /// The key under `[bitbucket.families]`.
    pub fn key(self) -> &'static str {
        match self {
            ApiFamily::GroupsRead => "groups_read",
            ApiFamily::GroupsWrite => "groups_write",
            ApiFamily::GroupPrivilegesRead => "group_privileges_read",
            ApiFamily::GroupPrivilegesWrite => "group_privileges_write",
            ApiFamily::PermissionsRead => "permissions_read",
            ApiFamily::PermissionsWrite => "permissions_write",
            ApiFamily::MembersRead => "members_read",
            ApiFamily::RepositoriesRead => "repositories_read",
            ApiFamily::AdminApi => "admin_api",
        }
    }

    /// Position in [`ApiFamily::ALL`] (declaration order).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_key(key: &str) -> Option<ApiFamily> {
        Self::ALL.into_iter().find(|f| f.key() == key)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ApiFamily::GroupsRead => "1.0 groups read",
            ApiFamily::GroupsWrite => "1.0 groups write",
            ApiFamily::GroupPrivilegesRead => "1.0 group-privileges read",
            ApiFamily::GroupPrivilegesWrite => "1.0 group-privileges write",
            ApiFamily::PermissionsRead => "2.0 permissions-config read",
            ApiFamily::PermissionsWrite => "2.0 permissions-config write",
            ApiFamily::MembersRead => "2.0 workspace members read",
            ApiFamily::RepositoriesRead => "2.0 repositories read",
            ApiFamily::AdminApi => "Atlassian Admin API",
        }
    }

    /// What bbsync cannot do without this family.
    pub fn consequence(self) -> &'static str {
        match self {
            ApiFamily::GroupsRead => "cannot read groups and members: no reconcile can run",
            ApiFamily::GroupsWrite => {
                "cannot create groups or add/remove members: leavers keep their group access"
            }
            ApiFamily::GroupPrivilegesRead => {
                "cannot read group grants in bulk: grant rules are planned only through 2.0 permissions-config reads, one per managed repository (bitbucket.grant_reader = \"auto\" or \"v2_permissions_config\")"
            }
            ApiFamily::GroupPrivilegesWrite => {
                "cannot grant or revoke repository access of groups through 1.0"
            }
            ApiFamily::PermissionsRead => {
                "cannot read grants per repository or project: the 2.0 grant reader (bitbucket.grant_reader), project grants, leavers' direct grants and the read-back of written grants need it"
            }
            ApiFamily::PermissionsWrite => "cannot grant or revoke repository access of groups",
            ApiFamily::MembersRead => {
                "cannot resolve account ids to the UUIDs 1.0 needs: nobody can be added to a group"
            }
            ApiFamily::RepositoriesRead => "cannot list repositories: grant rules select nothing",
            ApiFamily::AdminApi => {
                "cannot manage group memberships of an organisation-managed workspace: leavers keep their group access"
            }
        }
    }

    /// Whether Bitbucket answers this family only for workspace admins.
    pub fn admin_only(self) -> bool {
        !matches!(self, ApiFamily::MembersRead | ApiFamily::RepositoriesRead)
    }

    /// Whether the family changes anything (write probes must be asked for).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            ApiFamily::GroupsWrite
                | ApiFamily::GroupPrivilegesWrite
                | ApiFamily::PermissionsWrite
                | ApiFamily::AdminApi
        )
    }

    /// What the API sheet says a credential kind can never do here, before any call is made.
    pub fn known_refusal(self, kind: CredentialKind) -> Option<&'static str> {
        match (kind, self) {
            (CredentialKind::AdminApiKey, ApiFamily::AdminApi) => None,
            (CredentialKind::AdminApiKey, _) => {
                Some("an Admin API key calls the Atlassian Admin API only, never Bitbucket")
            }
            (_, ApiFamily::AdminApi) => Some("the Admin API takes the organisation's API key ([admin_api])"),
            (CredentialKind::AccessToken, ApiFamily::MembersRead | ApiFamily::RepositoriesRead) => None,
            (CredentialKind::AccessToken, ApiFamily::PermissionsWrite) => Some(
                "access tokens cannot list or change permissions; permissions-config writes need an admin's Atlassian API token",
            ),
            (CredentialKind::AccessToken, _) => Some(
                "access tokens cannot list or change permissions (1.0 groups, group-privileges, permissions-config); use an admin's API token or an OAuth consumer",
            ),
            (CredentialKind::OAuth, ApiFamily::PermissionsWrite) => Some(
                "permissions-config writes accept only an admin's Atlassian API token (Basic email:token); OAuth consumers are refused with 403",
            ),
            _ => None,
        }
    }

    /// Scopes an API token needs here, per the sheet; `None` where the sheet is unsure.
    pub fn api_token_scopes(self, delete: bool) -> Option<&'static [&'static str]> {
        match (self, delete) {
            (ApiFamily::PermissionsWrite, false) => {
                Some(&["admin:repository:bitbucket", "write:permission:bitbucket"])
            }
            (ApiFamily::PermissionsWrite, true) => {
                Some(&["admin:repository:bitbucket", "delete:permission:bitbucket"])
            }
            (ApiFamily::RepositoriesRead, _) => Some(&["read:repository:bitbucket"]),
            _ => None,
        }
    }

    /// Scopes an OAuth consumer needs here, per the sheet.
    pub fn oauth_scopes(self) -> Option<&'static [&'static str]> {
        match self {
            ApiFamily::GroupsWrite => Some(&["account:write"]),
            _ => None,
        }
    }
}

impl ApiFamily {
    /// Why a credential of `kind` cannot perform this family's operation (a revocation when
    /// `delete`), known before anything is sent: the sheet's rules for the kind, then the
    /// scopes Bitbucket said it holds (when it said). `None` when nothing rules it out.
    pub fn credential_gap(
        self,
        kind: CredentialKind,
        granted: Option<&[String]>,
        delete: bool,
    ) -> Option<String> {
        if let Some(reason) = self.known_refusal(kind) {
            return Some(reason.to_owned());
        }
        let required = match kind {
            CredentialKind::ApiToken => self.api_token_scopes(delete),
            CredentialKind::OAuth => self.oauth_scopes(),
            CredentialKind::AccessToken | CredentialKind::AdminApiKey => None,
        }?;
        let granted = granted?;
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|r| !granted.iter().any(|g| g == r))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "lacks scope(s) {} (granted: {})",
                missing.join(", "),
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            )
        })
    }
}

impl fmt::Display for ApiFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_keys_round_trip() {
        for (i, f) in ApiFamily::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(ApiFamily::from_key(f.key()), Some(f));
        }
    }

    #[test]
    fn a_missing_scope_is_named_and_deletes_need_their_own() {
        let put_only: Vec<String> = ["admin:repository:bitbucket", "write:permission:bitbucket"]
            .map(String::from)
            .to_vec();
        let f = ApiFamily::PermissionsWrite;
        assert_eq!(
            f.credential_gap(CredentialKind::ApiToken, Some(&put_only), false),
            None
        );
        let gap = f
            .credential_gap(CredentialKind::ApiToken, Some(&put_only), true)
            .expect("delete scope missing");
        assert!(gap.contains("delete:permission:bitbucket"), "{gap}");
        assert_eq!(
            f.credential_gap(CredentialKind::ApiToken, None, true),
            None,
            "scopes unknown: not ruled out"
        );
        assert!(f
            .credential_gap(CredentialKind::OAuth, None, false)
            .is_some());
    }

    #[test]
    fn the_sheet_rules_are_known_before_any_call() {
        assert!(ApiFamily::PermissionsWrite
            .known_refusal(CredentialKind::OAuth)
            .is_some());
        assert!(ApiFamily::PermissionsRead
            .known_refusal(CredentialKind::OAuth)
            .is_none());
        assert!(ApiFamily::GroupsRead
            .known_refusal(CredentialKind::AccessToken)
            .is_some());
        assert!(ApiFamily::RepositoriesRead
            .known_refusal(CredentialKind::AccessToken)
            .is_none());
        assert!(ApiFamily::ALL
            .iter()
            .all(|f| f.known_refusal(CredentialKind::ApiToken).is_none()));
    }
}
