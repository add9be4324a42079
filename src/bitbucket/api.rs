//! Endpoint methods, one per Bitbucket operation bbsync performs. Paths and bodies follow
//! shared/bitbucket-api.md; every write is idempotent and "already so" answers count as done.

use super::client::{expect, ApiError, Body, Client};
use super::dto::*;
use crate::model::{BbUuid, GroupSlug, Permission, ProjectKey, RepoSlug};
use reqwest::{Method, StatusCode};

/// Result of an idempotent write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Written {
    /// The write changed something.
    Done,
    /// Bitbucket said it was already so (re-add answered 409, delete answered 404).
    AlreadyDone,
}

/// Largest page 2.0 allows.
const PAGELEN: &str = "100";

/// Most addresses one members email query may carry (more answers 400).
const MAX_EMAILS_PER_QUERY: usize = 90;

/// The largest 1.0 group object [`Client::fold_groups`] takes: about 1.5 million members
/// (~350 bytes each); a body with a larger one is refused rather than held.
pub const MAX_GROUP_ROW_BYTES: usize = 512 << 20;

impl Client {
    fn ws(&self) -> &str {
        &self.opts.workspace
    }

    fn with_query(url: String, pairs: &[(&str, &str)]) -> String {
        match url::Url::parse(&url) {
            Ok(mut u) => {
                u.query_pairs_mut().extend_pairs(pairs);
                u.to_string()
            }
            Err(_) => url,
        }
    }

    // ---- 1.0 groups ------------------------------------------------------------------------

    /// Every group with its members, in one unpaged call.
    pub async fn list_groups(&self) -> Result<Vec<V1Group>, ApiError> {
        self.fold_groups(Vec::new, Vec::push).await
    }

    /// `GET /1.0/groups/{ws}`, one group at a time as the listing streams in (the groups
    /// with their members embedded: ~70 MB at 100k people in 2k groups, never held as text).
    /// A group may be up to [`MAX_GROUP_ROW_BYTES`]; see [`Client::get_array_streamed`].
    pub async fn fold_groups<A: Send + 'static>(
        &self,
        init: fn() -> A,
        fold: fn(&mut A, V1Group),
    ) -> Result<A, ApiError> {
        self.get_array_streamed_rows(
            &self.url(&["1.0", "groups", self.ws()]),
            &[],
            MAX_GROUP_ROW_BYTES,
            init,
            fold,
        )
        .await
    }

    pub async fn get_group(&self, group: &GroupSlug) -> Result<Option<V1Group>, ApiError> {
        let a = self
            .send_expecting(
                Method::GET,
                &self.url(&["1.0", "groups", self.ws(), group.as_str()]),
                Body::None,
                expect::json_document,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        a.ok()?.json().map(Some)
    }

    /// Creates a group; Bitbucket generates the slug and answers with it.
    pub async fn create_group(&self, name: &str) -> Result<V1Group, ApiError> {
        self.send_expecting(
            Method::POST,
            &self.url(&["1.0", "groups", self.ws()]),
            Body::Form(&[("name", name)]),
            expect::object,
        )
        .await?
        .ok()?
        .json()
    }

    /// Adds a member by UUID (braces included; 1.0 does not reliably take account ids).
    pub async fn add_member(
        &self,
        group: &GroupSlug,
        member: &BbUuid,
    ) -> Result<Written, ApiError> {
        let url = self.url(&[
            "1.0",
            "groups",
            self.ws(),
            group.as_str(),
            "members",
            &member.0,
        ]);
        let a = self
            .send_expecting(
                Method::PUT,
                &url,
                Body::Json(&serde_json::json!({})),
                expect::v1_user,
            )
            .await?;
        match a.status {
            StatusCode::CONFLICT => Ok(Written::AlreadyDone),
            _ => a.ok().map(|_| Written::Done),
        }
    }

    pub async fn remove_member(
        &self,
        group: &GroupSlug,
        member: &BbUuid,
    ) -> Result<Written, ApiError> {
        let url = self.url(&[
            "1.0",
            "groups",
            self.ws(),
            group.as_str(),
            "members",
            &member.0,
        ]);
        delete_outcome(
            self.send_expecting(Method::DELETE, &url, Body::None, expect::no_content)
                .await?,
        )
    }

    // ---- 1.0 invitations -------------------------------------------------------------------

    /// The workspace's pending group invitations: (email case-folded, group slug).
    pub async fn group_invitations(
        &self,
    ) -> Result<std::collections::BTreeSet<(String, GroupSlug)>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Invitation {
            email: String,
            group: InvitedTo,
        }
        #[derive(serde::Deserialize)]
        struct InvitedTo {
            slug: String,
        }
        let list: Vec<Invitation> = self
            .send_expecting(
                Method::GET,
                &self.url(&["1.0", "users", self.ws(), "invitations"]),
                Body::None,
                expect::array,
            )
            .await?
            .ok()?
            .json()?;
        Ok(list
            .into_iter()
            .map(|i| {
                (
                    crate::model::Email::new(&i.email).folded().to_owned(),
                    GroupSlug::from_name(&i.group.slug),
                )
            })
            .collect())
    }

    /// Invites `email` into `group` of this workspace (1.0; answered the same when the
    /// invitation exists).
    pub async fn invite_to_group(
        &self,
        email: &str,
        group: &GroupSlug,
    ) -> Result<Written, ApiError> {
        let url = self.url(&[
            "1.0",
            "users",
            self.ws(),
            "invitations",
            email,
            self.ws(),
            group.as_str(),
        ]);
        self.send_expecting(Method::PUT, &url, Body::None, expect::object)
            .await?
            .ok()
            .map(|_| Written::Done)
    }

    // ---- 1.0 group privileges --------------------------------------------------------------

    /// Every group privilege on every repository of the workspace, in one unpaged call, read
    /// as a stream: each row goes to `fold` as soon as it is decoded. Bitbucket embeds the
    /// group's members (and two owner objects) in every row, which makes this body the
    /// largest of a run (1.7 GB at 100k people, 2k groups, 20k repositories); the `members`
    /// are dropped by a byte scanner as they arrive ([`super::skim::Skim`]), never held or
    /// parsed, and the owners are skipped by serde. See [`Client::get_array_streamed`] for
    /// the read timeout (per chunk) and what fails the read.
    pub async fn fold_group_privileges<A: Send + 'static>(
        &self,
        init: fn() -> A,
        fold: fn(&mut A, V1GroupPrivilege),
    ) -> Result<A, ApiError> {
        self.get_array_streamed(
            &self.url(&["1.0", "group-privileges", self.ws()]),
            &["members"],
            init,
            fold,
        )
        .await
    }

    /// [`Client::fold_group_privileges`] into a list of the rows (without their members).
    pub async fn list_group_privileges(&self) -> Result<Vec<V1GroupPrivilege>, ApiError> {
        self.fold_group_privileges(Vec::new, Vec::push).await
    }

    /// PUT with the bare permission word as the body (a `key=value` or JSON body answers 400).
    pub async fn put_group_privilege(
        &self,
        repo: &RepoSlug,
        group: &GroupSlug,
        p: Permission,
    ) -> Result<Written, ApiError> {
        let url = self.url(&[
            "1.0",
            "group-privileges",
            self.ws(),
            repo.as_str(),
            self.ws(),
            group.as_str(),
        ]);
        self.send_expecting(
            Method::PUT,
            &url,
            Body::Raw("application/x-www-form-urlencoded", p.as_str().to_owned()),
            expect::array,
        )
        .await?
        .ok()
        .map(|_| Written::Done)
    }

    pub async fn delete_group_privilege(
        &self,
        repo: &RepoSlug,
        group: &GroupSlug,
    ) -> Result<Written, ApiError> {
        let url = self.url(&[
            "1.0",
            "group-privileges",
            self.ws(),
            repo.as_str(),
            self.ws(),
            group.as_str(),
        ]);
        delete_outcome(
            self.send_expecting(Method::DELETE, &url, Body::None, expect::no_content)
                .await?,
        )
    }

    // ---- 2.0 repositories and members ------------------------------------------------------

    /// Repositories of the workspace (slug and project only), optionally filtered by BBQL.
    pub async fn list_repositories(&self, q: Option<&str>) -> Result<Vec<V2Repository>, ApiError> {
        let mut pairs = vec![
            ("pagelen", PAGELEN),
            ("fields", "next,values.slug,values.project.key"),
        ];
        if let Some(q) = q {
            pairs.push(("q", q));
        }
        self.get_all(&Self::with_query(
            self.url(&["2.0", "repositories", self.ws()]),
            &pairs,
        ))
        .await
    }

    /// Members one page of [`Client::list_members`] holds (its `pagelen`, the largest 2.0
    /// allows): reading the whole listing costs the member count over this, in requests.
    pub const MEMBERS_PAGE_LEN: usize = 100;

    /// Workspace members (account id, uuid, display name), [`Self::MEMBERS_PAGE_LEN`] a page.
    pub async fn list_members(&self) -> Result<Vec<V2Membership>, ApiError> {
        let pagelen = Self::MEMBERS_PAGE_LEN.to_string();
        let pairs = [
            ("pagelen", pagelen.as_str()),
            (
                "fields",
                "next,values.user.account_id,values.user.uuid,values.user.display_name,values.user.nickname",
            ),
        ];
        self.get_all(&Self::with_query(
            self.url(&["2.0", "workspaces", self.ws(), "members"]),
            &pairs,
        ))
        .await
    }

    /// One workspace member by account id (`GET /2.0/workspaces/{ws}/members/{account_id}`).
    /// `None` when Bitbucket answers 404, which this endpoint documents as "not a member of the
    /// workspace"; any other refusal is an error.
    pub async fn member(&self, account_id: &str) -> Result<Option<V2Membership>, ApiError> {
        let url = self.url(&["2.0", "workspaces", self.ws(), "members", account_id]);
        // A whole-object check (not the first character): the body is small, and a garbled
        // one is read again inside the retry loop instead of failing the lookup.
        let a = self
            .send_expecting(Method::GET, &url, Body::None, expect::object)
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        a.ok()?.json().map(Some)
    }

    /// The workspace members with these emails (the members email query: `q=user.email IN
    /// (...)`, at most 90 addresses a request, `fields=+values.user.email`): (email, account id)
    /// pairs, emails as Bitbucket has them (they compare case-insensitively).
    pub async fn members_by_email(
        &self,
        emails: &[String],
    ) -> Result<Vec<(String, String)>, ApiError> {
        let mut out = Vec::new();
        for chunk in emails.chunks(MAX_EMAILS_PER_QUERY) {
            let q = format!(
                "user.email IN ({})",
                chunk
                    .iter()
                    .map(|e| format!("\"{}\"", e.trim().replace(['"', '\\'], "")))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let pairs = [
                ("pagelen", PAGELEN),
                ("q", q.as_str()),
                ("fields", "+values.user.email"),
            ];
            let members: Vec<V2Membership> = self
                .get_all(&Self::with_query(
                    self.url(&["2.0", "workspaces", self.ws(), "members"]),
                    &pairs,
                ))
                .await?;
            out.extend(
                members
                    .into_iter()
                    .filter_map(|m| Some((m.user.email?, m.user.account_id?))),
            );
        }
        Ok(out)
    }

    /// Every project key of the workspace.
    pub async fn project_keys(&self) -> Result<Vec<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Key {
            key: String,
        }
        let pairs = [("pagelen", PAGELEN), ("fields", "next,values.key")];
        let listed: Vec<Key> = self
            .get_all(&Self::with_query(
                self.url(&["2.0", "workspaces", self.ws(), "projects"]),
                &pairs,
            ))
            .await?;
        Ok(listed.into_iter().map(|k| k.key).collect())
    }

    /// Account ids Bitbucket lists with the workspace permission `owner` (the owner and the
    /// workspace administrators).
    pub async fn workspace_owners(&self) -> Result<Vec<String>, ApiError> {
        let pairs = [
            ("pagelen", PAGELEN),
            ("q", "permission=\"owner\""),
            ("fields", "next,values.user.account_id"),
        ];
        let listed: Vec<V2Membership> = self
            .get_all(&Self::with_query(
                self.url(&["2.0", "workspaces", self.ws(), "permissions"]),
                &pairs,
            ))
            .await?;
        Ok(listed
            .into_iter()
            .filter_map(|m| m.user.account_id)
            .collect())
    }

    /// The repositories (slugs, deduplicated) one person has any effective permission on,
    /// from the workspace listing of effective repository permissions filtered on the person.
    /// The filter on `user` is not documented: `Ok(None)` when Bitbucket refuses it (400) or
    /// answers rows of other people (it ignored the filter), meaning "read the grants another
    /// way".
    pub async fn repositories_of(&self, account_id: &str) -> Result<Option<Vec<String>>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Row {
            repository: RepoName,
            user: Option<User>,
        }
        #[derive(serde::Deserialize)]
        struct RepoName {
            slug: Option<String>,
            full_name: Option<String>,
        }
        let q = format!(
            "user.account_id=\"{}\"",
            account_id.replace(['"', '\\'], "")
        );
        let pairs = [
            ("pagelen", PAGELEN),
            ("q", q.as_str()),
            (
                "fields",
                "next,values.repository.slug,values.repository.full_name,values.user.account_id",
            ),
        ];
        let rows: Vec<Row> = match self
            .get_all(&Self::with_query(
                self.url(&[
                    "2.0",
                    "workspaces",
                    self.ws(),
                    "permissions",
                    "repositories",
                ]),
                &pairs,
            ))
            .await
        {
            Ok(rows) => rows,
            Err(e) if e.status() == Some(400) => return Ok(None),
            Err(e) => return Err(e),
        };
        if rows.iter().any(|r| {
            r.user
                .as_ref()
                .and_then(|u| u.account_id.as_deref())
                .is_some_and(|a| a != account_id)
        }) {
            return Ok(None);
        }
        let mut slugs: Vec<String> = rows
            .into_iter()
            .filter_map(|r| {
                r.repository.slug.or_else(|| {
                    r.repository
                        .full_name
                        .and_then(|f| f.rsplit_once('/').map(|(_, s)| s.to_owned()))
                })
            })
            .collect();
        slugs.sort();
        slugs.dedup();
        Ok(Some(slugs))
    }

    /// One small page of a 2.0 collection: the cheapest proof that a credential may read it.
    async fn first_page<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
    ) -> Result<Vec<T>, ApiError> {
        let url = Self::with_query(url, &[("pagelen", "1")]);
        self.get_json::<Page<T>>(&url).await.map(|p| p.values)
    }

    pub async fn repositories_first_page(&self) -> Result<Vec<V2Repository>, ApiError> {
        self.first_page(self.url(&["2.0", "repositories", self.ws()]))
            .await
    }

    pub async fn members_first_page(&self) -> Result<Vec<V2Membership>, ApiError> {
        self.first_page(self.url(&["2.0", "workspaces", self.ws(), "members"]))
            .await
    }

    /// Workspaces the caller (a user: API token or OAuth consumer) can see, with whether they
    /// administer each.
    pub async fn user_workspaces(&self) -> Result<Vec<WorkspaceAccess>, ApiError> {
        let url = Self::with_query(
            self.url(&["2.0", "user", "workspaces"]),
            &[("pagelen", PAGELEN)],
        );
        self.get_all(&url).await
    }

    /// `GET /2.0/workspaces/{ws}`: whether the workspace exists for this caller.
    pub async fn workspace_exists(&self) -> Result<bool, ApiError> {
        let a = self
            .send_expecting(
                Method::GET,
                &self.url(&["2.0", "workspaces", self.ws()]),
                Body::None,
                expect::json_document,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        a.ok().map(|_| true)
    }

    // ---- 2.0 permissions-config (repositories and projects) -------------------------------

    fn permission_url(&self, target: Target<'_>, kind: PrincipalKind, id: Option<&str>) -> String {
        let mut s = match target {
            Target::Repo(repo) => vec!["2.0", "repositories", self.ws(), repo.as_str()],
            Target::Project(key) => vec!["2.0", "workspaces", self.ws(), "projects", key.as_str()],
        };
        s.extend(["permissions-config", kind.segment()]);
        s.extend(id);
        self.url(&s)
    }

    /// Explicit grants of groups or users on a repository or project (paged; no BBQL on
    /// these collections): [`V2GroupPermission`] or [`V2UserPermission`] items.
    pub async fn permissions<T: serde::de::DeserializeOwned>(
        &self,
        target: Target<'_>,
        kind: PrincipalKind,
    ) -> Result<Vec<T>, ApiError> {
        let url = self.permission_url(target, kind, None);
        self.get_all(&Self::with_query(url, &[("pagelen", PAGELEN)]))
            .await
    }

    /// The first page only: the cheapest proof that a credential may read grants.
    pub async fn permissions_first_page(
        &self,
        target: Target<'_>,
        kind: PrincipalKind,
    ) -> Result<Vec<serde_json::Value>, ApiError> {
        self.first_page(self.permission_url(target, kind, None))
            .await
    }

    /// One explicit grant's permission word; `None` when there is none (404).
    pub async fn permission(
        &self,
        target: Target<'_>,
        who: Principal<'_>,
    ) -> Result<Option<String>, ApiError> {
        let url = self.permission_url(target, who.kind(), Some(who.id()));
        let a = self
            .send_expecting(Method::GET, &url, Body::None, expect::json_document)
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let p: PermissionOnly = a.ok()?.json()?;
        Ok(Some(p.permission))
    }

    /// Creates or updates a grant: PUT body exactly `{"permission": "..."}` (`read`, `write`,
    /// `admin`; for projects also `create-repo`).
    pub async fn put_permission(
        &self,
        target: Target<'_>,
        who: Principal<'_>,
        permission: &str,
    ) -> Result<Written, ApiError> {
        let url = self.permission_url(target, who.kind(), Some(who.id()));
        let body = serde_json::json!({ "permission": permission });
        self.send_expecting(Method::PUT, &url, Body::Json(&body), expect::grant)
            .await?
            .ok()
            .map(|_| Written::Done)
    }

    pub async fn delete_permission(
        &self,
        target: Target<'_>,
        who: Principal<'_>,
    ) -> Result<Written, ApiError> {
        let url = self.permission_url(target, who.kind(), Some(who.id()));
        delete_outcome(
            self.send_expecting(Method::DELETE, &url, Body::None, expect::no_content)
                .await?,
        )
    }
}

/// What a permissions-config grant is on.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Repo(&'a RepoSlug),
    Project(&'a ProjectKey),
}

impl<'a> From<&'a crate::model::GrantTarget> for Target<'a> {
    fn from(t: &'a crate::model::GrantTarget) -> Target<'a> {
        match t {
            crate::model::GrantTarget::Repo(r) => Target::Repo(r),
            crate::model::GrantTarget::Project(p) => Target::Project(p),
        }
    }
}

/// Who a permissions-config grant is for.
#[derive(Clone, Copy, Debug)]
pub enum Principal<'a> {
    Group(&'a GroupSlug),
    /// An account id or a braced UUID.
    User(&'a str),
}

impl Principal<'_> {
    fn kind(&self) -> PrincipalKind {
        match self {
            Principal::Group(_) => PrincipalKind::Groups,
            Principal::User(_) => PrincipalKind::Users,
        }
    }
    fn id(&self) -> &str {
        match self {
            Principal::Group(g) => g.as_str(),
            Principal::User(u) => u,
        }
    }
}

/// The two permissions-config collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    Groups,
    Users,
}

impl PrincipalKind {
    fn segment(self) -> &'static str {
        match self {
            PrincipalKind::Groups => "groups",
            PrincipalKind::Users => "users",
        }
    }
}

#[derive(serde::Deserialize)]
struct PermissionOnly {
    permission: String,
}

/// DELETE: 204/200 done, 404 already gone.
fn delete_outcome(a: super::client::Answer) -> Result<Written, ApiError> {
    match a.status {
        StatusCode::NOT_FOUND => Ok(Written::AlreadyDone),
        _ => a.ok().map(|_| Written::Done),
    }
}
