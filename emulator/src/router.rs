//! The route table. Every served route is one row; the pattern (with `{param}` segments) is
//! also the route template used in [`crate::RequestRecord::route`] and request counts.

use crate::auth::Family;

/// Which API a path belongs to (decides the error body style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// 1.0: plain-text errors.
    V1,
    /// 2.0: JSON error bodies.
    V2,
    /// `/site/oauth2/...`
    Site,
    /// `/admin/...`: the Atlassian Admin API (JSON `{"errors": [...]}` bodies, Admin API keys).
    Admin,
}

impl Api {
    pub fn of_path(segments: &[String]) -> Api {
        match segments.first().map(String::as_str) {
            Some("1.0") => Api::V1,
            Some("site") => Api::Site,
            Some("admin") => Api::Admin,
            _ => Api::V2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteId {
    OAuthToken,
    V1GroupsList,
    V1GroupCreate,
    V1GroupGet,
    V1GroupUpdate,
    V1GroupDelete,
    V1MembersList,
    V1MemberAdd,
    V1MemberRemove,
    V1GpAll,
    V1GpRepo,
    V1GpGroup,
    V1GpOne,
    V1GpPut,
    V1GpDelete,
    V2Gone,
    V2ReposList,
    V2RepoGet,
    V2WorkspaceGet,
    V2UserWorkspaces,
    V2MembersList,
    V2MemberGet,
    V2ProjectsList,
    V2WsPermissions,
    V2WsRepoPermissions,
    V2WsRepoPermissionsOne,
    V2RepoPermGroups,
    V2RepoPermGroupGet,
    V2RepoPermGroupPut,
    V2RepoPermGroupDelete,
    V2RepoPermUsers,
    V2RepoPermUserGet,
    V2RepoPermUserPut,
    V2RepoPermUserDelete,
    V2ProjPermGroups,
    V2ProjPermGroupGet,
    V2ProjPermGroupPut,
    V2ProjPermGroupDelete,
    V2ProjPermUsers,
    V2ProjPermUserGet,
    V2ProjPermUserPut,
    V2ProjPermUserDelete,
    V1InvitationsList,
    V1InvitationsOfEmail,
    V1InvitationsDeleteEmail,
    V1InvitationPut,
    V1InvitationDelete,
    V1RepoInvitation,
    AdminDirectories,
    AdminGroupsSearch,
    AdminGroupsList,
    AdminGroupCreate,
    AdminGroupDelete,
    AdminMembershipAdd,
    AdminMembershipRemove,
    AdminUsersSearch,
    AdminUserSuspend,
    AdminUserRestore,
    AdminUserDelete,
    AdminV1Users,
}

#[derive(Clone, Copy, Debug)]
pub struct RouteDef {
    pub id: RouteId,
    pub method: &'static str,
    pub pattern: &'static str,
    /// Authorization rule; `None` = any authenticated caller.
    pub family: Option<Family>,
    /// A 1.0 write (refused with 405 `None` on organisation-managed workspaces).
    pub v1_write: bool,
}

impl RouteDef {
    /// A 1.0 invitations route: off entirely (405 `None`, reads too) on an
    /// organisation-managed workspace.
    pub fn v1_invitations(&self) -> bool {
        matches!(
            self.id,
            RouteId::V1InvitationsList
                | RouteId::V1InvitationsOfEmail
                | RouteId::V1InvitationsDeleteEmail
                | RouteId::V1InvitationPut
                | RouteId::V1InvitationDelete
                | RouteId::V1RepoInvitation
        )
    }
}

const fn r(
    id: RouteId,
    method: &'static str,
    pattern: &'static str,
    family: Option<Family>,
    v1_write: bool,
) -> RouteDef {
    RouteDef {
        id,
        method,
        pattern,
        family,
        v1_write,
    }
}

use Family as F;
use RouteId as R;

#[rustfmt::skip]
pub const ROUTES: &[RouteDef] = &[
    r(R::OAuthToken, "POST", "/site/oauth2/access_token", None, false),
    // 1.0 groups
    r(R::V1GroupsList, "GET", "/1.0/groups/{ws}", Some(F::GroupsRead), false),
    r(R::V1GroupCreate, "POST", "/1.0/groups/{ws}", Some(F::GroupsWrite), true),
    r(R::V1GroupGet, "GET", "/1.0/groups/{ws}/{group}", Some(F::GroupsRead), false),
    r(R::V1GroupUpdate, "PUT", "/1.0/groups/{ws}/{group}", Some(F::GroupsWrite), true),
    r(R::V1GroupDelete, "DELETE", "/1.0/groups/{ws}/{group}", Some(F::GroupsDelete), true),
    r(R::V1MembersList, "GET", "/1.0/groups/{ws}/{group}/members", Some(F::GroupsRead), false),
    r(R::V1MemberAdd, "PUT", "/1.0/groups/{ws}/{group}/members/{member}", Some(F::GroupsWrite), true),
    r(R::V1MemberRemove, "DELETE", "/1.0/groups/{ws}/{group}/members/{member}", Some(F::GroupsDelete), true),
    // 1.0 group privileges
    r(R::V1GpAll, "GET", "/1.0/group-privileges/{ws}", Some(F::GroupPrivilegesRead), false),
    r(R::V1GpRepo, "GET", "/1.0/group-privileges/{ws}/{repo}", Some(F::GroupPrivilegesRead), false),
    r(R::V1GpGroup, "GET", "/1.0/group-privileges/{ws}/{group_owner}/{group}", Some(F::GroupPrivilegesRead), false),
    r(R::V1GpOne, "GET", "/1.0/group-privileges/{ws}/{repo}/{group_owner}/{group}", Some(F::GroupPrivilegesRead), false),
    r(R::V1GpPut, "PUT", "/1.0/group-privileges/{ws}/{repo}/{group_owner}/{group}", Some(F::GroupPrivilegesWrite), true),
    r(R::V1GpDelete, "DELETE", "/1.0/group-privileges/{ws}/{repo}/{group_owner}/{group}", Some(F::GroupPrivilegesDelete), true),
    // 1.0 invitations (off entirely on organisation-managed workspaces)
    r(R::V1InvitationsList, "GET", "/1.0/users/{ws}/invitations", Some(F::GroupsRead), false),
    r(R::V1InvitationsOfEmail, "GET", "/1.0/users/{ws}/invitations/{email}", Some(F::GroupsRead), false),
    r(R::V1InvitationsDeleteEmail, "DELETE", "/1.0/users/{ws}/invitations/{email}", Some(F::GroupsDelete), false),
    r(R::V1InvitationPut, "PUT", "/1.0/users/{ws}/invitations/{email}/{group_owner}/{group}", Some(F::GroupsWrite), false),
    r(R::V1InvitationDelete, "DELETE", "/1.0/users/{ws}/invitations/{email}/{group_owner}/{group}", Some(F::GroupsDelete), false),
    r(R::V1RepoInvitation, "POST", "/1.0/invitations/{ws}/{repo}/{email}", Some(F::GroupsWrite), false),
    // Atlassian Admin API (admin_api_key only)
    r(R::AdminDirectories, "GET", "/admin/v2/orgs/{orgId}/directories", Some(F::Admin), false),
    r(R::AdminGroupsSearch, "POST", "/admin/v2/orgs/{orgId}/directories/{dirId}/groups/search", Some(F::Admin), false),
    r(R::AdminGroupsList, "GET", "/admin/v2/orgs/{orgId}/directories/{dirId}/groups", Some(F::Admin), false),
    r(R::AdminGroupCreate, "POST", "/admin/v2/orgs/{orgId}/directories/{dirId}/groups", Some(F::Admin), false),
    r(R::AdminGroupDelete, "DELETE", "/admin/v2/orgs/{orgId}/directories/{dirId}/groups/{groupId}", Some(F::Admin), false),
    r(R::AdminMembershipAdd, "POST", "/admin/v2/orgs/{orgId}/directories/{dirId}/groups/{groupId}/memberships", Some(F::Admin), false),
    r(R::AdminMembershipRemove, "DELETE", "/admin/v2/orgs/{orgId}/directories/{dirId}/groups/{groupId}/memberships/{accountId}", Some(F::Admin), false),
    r(R::AdminUsersSearch, "POST", "/admin/v2/orgs/{orgId}/directories/{dirId}/users/search", Some(F::Admin), false),
    r(R::AdminUserSuspend, "POST", "/admin/v2/orgs/{orgId}/directories/{dirId}/users/{accountId}/suspend", Some(F::Admin), false),
    r(R::AdminUserRestore, "POST", "/admin/v2/orgs/{orgId}/directories/{dirId}/users/{accountId}/restore", Some(F::Admin), false),
    r(R::AdminUserDelete, "DELETE", "/admin/v2/orgs/{orgId}/directories/{dirId}/users/{accountId}", Some(F::Admin), false),
    r(R::AdminV1Users, "GET", "/admin/v1/orgs/{orgId}/users", Some(F::Admin), false),
    // 2.0 cross-workspace listings: gone (CHANGE-2770)
    r(R::V2Gone, "GET", "/2.0/repositories", None, false),
    r(R::V2Gone, "GET", "/2.0/workspaces", None, false),
    r(R::V2Gone, "GET", "/2.0/user/permissions/workspaces", None, false),
    r(R::V2Gone, "GET", "/2.0/user/permissions/repositories", None, false),
    // 2.0 reads
    r(R::V2UserWorkspaces, "GET", "/2.0/user/workspaces", Some(F::WorkspaceRead), false),
    r(R::V2ReposList, "GET", "/2.0/repositories/{ws}", Some(F::RepositoriesRead), false),
    r(R::V2RepoGet, "GET", "/2.0/repositories/{ws}/{repo}", Some(F::RepositoriesRead), false),
    r(R::V2WorkspaceGet, "GET", "/2.0/workspaces/{ws}", Some(F::WorkspaceRead), false),
    r(R::V2MembersList, "GET", "/2.0/workspaces/{ws}/members", Some(F::MembersRead), false),
    r(R::V2MemberGet, "GET", "/2.0/workspaces/{ws}/members/{member}", Some(F::MembersRead), false),
    r(R::V2ProjectsList, "GET", "/2.0/workspaces/{ws}/projects", Some(F::ProjectsRead), false),
    r(R::V2WsPermissions, "GET", "/2.0/workspaces/{ws}/permissions", Some(F::WorkspacePermissionsRead), false),
    r(R::V2WsRepoPermissions, "GET", "/2.0/workspaces/{ws}/permissions/repositories", Some(F::WorkspaceRepoPermissionsRead), false),
    r(R::V2WsRepoPermissionsOne, "GET", "/2.0/workspaces/{ws}/permissions/repositories/{repo}", Some(F::WorkspaceRepoPermissionsRead), false),
    // 2.0 repository permissions-config
    r(R::V2RepoPermGroups, "GET", "/2.0/repositories/{ws}/{repo}/permissions-config/groups", Some(F::RepoPermissionsRead), false),
    r(R::V2RepoPermGroupGet, "GET", "/2.0/repositories/{ws}/{repo}/permissions-config/groups/{group}", Some(F::RepoPermissionsRead), false),
    r(R::V2RepoPermGroupPut, "PUT", "/2.0/repositories/{ws}/{repo}/permissions-config/groups/{group}", Some(F::RepoPermissionsWrite), false),
    r(R::V2RepoPermGroupDelete, "DELETE", "/2.0/repositories/{ws}/{repo}/permissions-config/groups/{group}", Some(F::RepoPermissionsDelete), false),
    r(R::V2RepoPermUsers, "GET", "/2.0/repositories/{ws}/{repo}/permissions-config/users", Some(F::RepoPermissionsRead), false),
    r(R::V2RepoPermUserGet, "GET", "/2.0/repositories/{ws}/{repo}/permissions-config/users/{user}", Some(F::RepoPermissionsRead), false),
    r(R::V2RepoPermUserPut, "PUT", "/2.0/repositories/{ws}/{repo}/permissions-config/users/{user}", Some(F::RepoPermissionsWrite), false),
    r(R::V2RepoPermUserDelete, "DELETE", "/2.0/repositories/{ws}/{repo}/permissions-config/users/{user}", Some(F::RepoPermissionsDelete), false),
    // 2.0 project permissions-config
    r(R::V2ProjPermGroups, "GET", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/groups", Some(F::ProjectPermissionsRead), false),
    r(R::V2ProjPermGroupGet, "GET", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/groups/{group}", Some(F::ProjectPermissionsRead), false),
    r(R::V2ProjPermGroupPut, "PUT", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/groups/{group}", Some(F::ProjectPermissionsWrite), false),
    r(R::V2ProjPermGroupDelete, "DELETE", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/groups/{group}", Some(F::ProjectPermissionsDelete), false),
    r(R::V2ProjPermUsers, "GET", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/users", Some(F::ProjectPermissionsRead), false),
    r(R::V2ProjPermUserGet, "GET", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/users/{user}", Some(F::ProjectPermissionsRead), false),
    r(R::V2ProjPermUserPut, "PUT", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/users/{user}", Some(F::ProjectPermissionsWrite), false),
    r(R::V2ProjPermUserDelete, "DELETE", "/2.0/workspaces/{ws}/projects/{project}/permissions-config/users/{user}", Some(F::ProjectPermissionsDelete), false),
];

/// Result of matching a request path.
#[derive(Debug)]
pub enum Match {
    Found(&'static RouteDef, Vec<(&'static str, String)>),
    /// The path exists with other methods.
    MethodNotAllowed(&'static str),
    NotFound,
}

fn match_pattern(
    pattern: &'static str,
    segments: &[String],
) -> Option<Vec<(&'static str, String)>> {
    let pat: Vec<&'static str> = pattern.split('/').skip(1).collect();
    if pat.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in pat.iter().zip(segments) {
        if let Some(name) = p.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            if s.is_empty() {
                return None;
            }
            params.push((name, s.clone()));
        } else if p != s {
            return None;
        }
    }
    Some(params)
}

/// Matches decoded path segments (without the leading empty one and without a trailing
/// empty one) against the table.
pub fn match_route(method: &str, segments: &[String]) -> Match {
    let mut path_known: Option<&'static str> = None;
    for def in ROUTES {
        if let Some(params) = match_pattern(def.pattern, segments) {
            if def.method == method {
                return Match::Found(def, params);
            }
            path_known.get_or_insert(def.pattern);
        }
    }
    match path_known {
        Some(p) => Match::MethodNotAllowed(p),
        None => Match::NotFound,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').skip(1).map(str::to_string).collect()
    }

    #[test]
    fn group_privilege_depths() {
        let ids = |p: &str| match match_route("GET", &segs(p)) {
            Match::Found(d, params) => (d.id, params.len()),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(ids("/1.0/group-privileges/acme"), (RouteId::V1GpAll, 1));
        assert_eq!(
            ids("/1.0/group-privileges/acme/api"),
            (RouteId::V1GpRepo, 2)
        );
        assert_eq!(
            ids("/1.0/group-privileges/acme/acme/devs"),
            (RouteId::V1GpGroup, 3)
        );
        assert_eq!(
            ids("/1.0/group-privileges/acme/api/acme/devs"),
            (RouteId::V1GpOne, 4)
        );
    }

    #[test]
    fn method_not_allowed_and_unknown() {
        assert!(matches!(
            match_route("POST", &segs("/2.0/repositories/acme")),
            Match::MethodNotAllowed("/2.0/repositories/{ws}")
        ));
        assert!(matches!(
            match_route("GET", &segs("/2.0/teams/acme")),
            Match::NotFound
        ));
        assert!(matches!(
            match_route("GET", &segs("/1.0/groups//x")),
            Match::NotFound
        ));
    }

    #[test]
    fn literal_beats_param() {
        // "/2.0/workspaces/{ws}/members" must not be taken for anything else.
        match match_route("GET", &segs("/2.0/workspaces/acme/members")) {
            Match::Found(d, _) => assert_eq!(d.id, RouteId::V2MembersList),
            other => panic!("{other:?}"),
        }
    }
}
