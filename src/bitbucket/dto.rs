//! Wire shapes of Bitbucket answers, kept apart from the domain types. Only the fields bbsync
//! reads are declared; everything else is ignored so additions on Bitbucket's side do not break us.

use serde::Deserialize;

/// 2.0 page: follow `next` as given (some collections use cursors, not page numbers).
#[derive(Deserialize)]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub values: Vec<T>,
    pub next: Option<String>,
}

/// 1.0 and 2.0 user object (fields differ by endpoint; all optional).
#[derive(Clone, Debug, Deserialize)]
pub struct User {
    pub account_id: Option<String>,
    pub uuid: Option<String>,
    pub display_name: Option<String>,
    pub nickname: Option<String>,
    /// Only in the members email query, with `fields=+values.user.email`.
    pub email: Option<String>,
}

/// 1.0 group object with embedded members.
#[derive(Clone, Debug, Deserialize)]
pub struct V1Group {
    pub name: String,
    pub slug: String,
    #[serde(default)]
    pub members: Vec<User>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct V1PrivilegeGroup {
    pub slug: String,
    pub owner: Option<V1Owner>,
}

/// The owner of a 1.0 group: the workspace, as a user-like object.
#[derive(Clone, Debug, Deserialize)]
pub struct V1Owner {
    pub nickname: Option<String>,
    pub username: Option<String>,
}

/// `GET /2.0/user/workspaces` item.
#[derive(Clone, Debug, Deserialize)]
pub struct WorkspaceAccess {
    pub administrator: Option<bool>,
    pub workspace: WorkspaceRef,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WorkspaceRef {
    pub slug: String,
}

/// 1.0 group-privileges row: `{repo: "ws/slug", privilege, group{...}, repository{...}}`.
/// The group's `members` and the `repository` object are not declared: the streamed listing
/// drops the `members` before decoding ([`crate::bitbucket::skim::Skim`]), and serde skips the
/// rest unread into memory ([`serde::de::IgnoredAny`]).
#[derive(Clone, Debug, Deserialize)]
pub struct V1GroupPrivilege {
    pub repo: String,
    pub privilege: String,
    pub group: V1PrivilegeGroup,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProjectRef {
    pub key: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct V2Repository {
    pub slug: String,
    pub project: Option<ProjectRef>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct V2Membership {
    pub user: User,
}

#[derive(Clone, Debug, Deserialize)]
pub struct V2GroupRef {
    pub slug: String,
    pub name: Option<String>,
}

/// `repository_group_permission` / `project_group_permission`.
#[derive(Clone, Debug, Deserialize)]
pub struct V2GroupPermission {
    pub group: V2GroupRef,
    pub permission: String,
}

/// `repository_user_permission` / `project_user_permission`.
#[derive(Clone, Debug, Deserialize)]
pub struct V2UserPermission {
    pub user: User,
    pub permission: String,
}

/// 2.0 error body: `{"type":"error","error":{"message","detail"?,"data"?}}`. `detail` may be a
/// string or an object (scope failures carry `{required: [...], granted: [...]}`).
#[derive(Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInner,
}

#[derive(Deserialize)]
pub struct ErrorInner {
    pub message: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// OAuth client-credentials answer.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub expires_in: Option<u64>,
    /// Space-separated granted scopes.
    pub scopes: Option<String>,
}
