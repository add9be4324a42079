//! 2.0 endpoints: repositories, workspace, members (with the email query), workspace
//! permissions, projects, repository and project permissions-config.
//! The dispatcher has already checked authentication, the workspace, scopes and admin rights,
//! and applies `fields` to successful GET answers.

use crate::auth::CallerKind;
use crate::bbql::{BbqlError, Expr, FieldKind, FieldSpec, Op, Query};
use crate::http::{percent_encode, Reply, Req};
use crate::paging::PageContext;
use crate::router::RouteId;
use crate::routes_v1::AVATAR;
use crate::seed::{SeedProject, SeedRepo, SeedUser, PROJECT_PERMISSIONS, REPO_PERMISSIONS};
use crate::state::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::HashSet;

/// Most email addresses one members query may carry.
pub const MAX_EMAILS: usize = 90;

const fn f(name: &'static str, kind: FieldKind) -> FieldSpec {
    FieldSpec { name, kind }
}

const REPO_FIELDS: &[FieldSpec] = &[
    f("slug", FieldKind::Text),
    f("name", FieldKind::Text),
    f("full_name", FieldKind::Text),
    f("uuid", FieldKind::Text),
    f("project.key", FieldKind::Text),
    f("project.name", FieldKind::Text),
    f("project.uuid", FieldKind::Text),
    f("is_private", FieldKind::Text),
];

const MEMBER_FIELDS: &[FieldSpec] = &[
    f("user.email", FieldKind::CaseInsensitive),
    f("user.account_id", FieldKind::Text),
    f("user.uuid", FieldKind::Text),
    f("user.display_name", FieldKind::Text),
    f("user.nickname", FieldKind::Text),
];

const WS_PERMISSION_FIELDS: &[FieldSpec] = &[
    f("permission", FieldKind::Text),
    f("user.account_id", FieldKind::Text),
    f("user.uuid", FieldKind::Text),
    f("user.display_name", FieldKind::Text),
    f("user.nickname", FieldKind::Text),
];

const REPO_PERMISSION_FIELDS: &[FieldSpec] = &[
    f("permission", FieldKind::Permission),
    f("repository.name", FieldKind::Text),
    f("repository.full_name", FieldKind::Text),
    f("repository.uuid", FieldKind::Text),
    f("user.account_id", FieldKind::Text),
    f("user.uuid", FieldKind::Text),
    f("user.display_name", FieldKind::Text),
    f("user.nickname", FieldKind::Text),
];

const PROJECT_FIELDS: &[FieldSpec] = &[
    f("key", FieldKind::Text),
    f("name", FieldKind::Text),
    f("uuid", FieldKind::Text),
];

const TIMESTAMP: &str = "2024-01-02T03:04:05.000000+00:00";

fn err(e: StoreError) -> Reply {
    match e {
        StoreError::NotFound(m) => Reply::error(404, m),
        StoreError::BadRequest(m) => Reply::error(400, m),
        StoreError::Conflict(m) => Reply::error(409, m),
        StoreError::PaymentRequired(m) => Reply::error(402, m),
    }
}

fn bbql_err(e: BbqlError) -> Reply {
    match &e {
        BbqlError::UnknownField(name) => Reply::error_detail(
            400,
            e.to_string(),
            json!(format!(
                "'{name}' is not a field you can query on this resource"
            )),
        ),
        BbqlError::Syntax(_) => Reply::error(400, e.to_string()),
    }
}

fn parse_q(req: &Req, specs: &[FieldSpec]) -> Result<Option<Query>, Reply> {
    match req.q("q") {
        None => Ok(None),
        Some(q) => Query::parse(q, specs).map(Some).map_err(bbql_err),
    }
}

fn page_ctx(req: &Req, store: &Store) -> PageContext {
    PageContext {
        origin: req.origin.clone(),
        path: req.raw_path.to_string(),
        raw_query: req.raw_query.clone(),
        pagelen: req.q("pagelen").map(str::to_string),
        page: req.q("page").map(str::to_string),
        cursor: req.q("cursor").map(str::to_string),
        default_pagelen: store.seed.default_pagelen as usize,
        cursor_key: req.cursor_key.clone(),
    }
}

fn numbered(req: &Req, store: &Store, items: Vec<Value>) -> Result<Reply, Reply> {
    page_ctx(req, store)
        .page_numbered(items)
        .map(|v| Reply::json(200, v))
        .map_err(|e| Reply::error(400, e.0))
}

fn cursored(req: &Req, store: &Store, items: Vec<Value>) -> Result<Reply, Reply> {
    page_ctx(req, store)
        .cursor_paged(items)
        .map(|v| Reply::json(200, v))
        .map_err(|e| Reply::error(400, e.0))
}

// ----- representations -----

fn ws_json(store: &Store, origin: &str) -> Value {
    let ws = &store.seed.workspace;
    json!({
        "type": "workspace",
        "uuid": ws.uuid,
        "slug": ws.slug,
        "name": ws.name,
        "links": {
            "self": {"href": format!("{origin}/2.0/workspaces/{}", ws.slug)},
            "html": {"href": format!("https://bitbucket.org/{}/", ws.slug)},
        },
    })
}

fn ws_short(store: &Store, origin: &str) -> Value {
    let ws = &store.seed.workspace;
    json!({
        "type": "workspace",
        "uuid": ws.uuid,
        "slug": ws.slug,
        "name": ws.name,
        "links": {"self": {"href": format!("{origin}/2.0/workspaces/{}", ws.slug)}},
    })
}

pub fn user_json(u: &SeedUser) -> Value {
    json!({
        "type": "user",
        "display_name": u.display_name,
        "uuid": u.uuid,
        "account_id": u.account_id,
        "nickname": u.nickname,
        "links": {"avatar": {"href": AVATAR}},
    })
}

fn project_json(store: &Store, origin: &str, p: &SeedProject) -> Value {
    let ws = &store.seed.workspace.slug;
    json!({
        "type": "project",
        "key": p.key,
        "name": p.name,
        "uuid": p.uuid,
        "is_private": true,
        "links": {"self": {"href": format!("{origin}/2.0/workspaces/{ws}/projects/{}", p.key)}},
    })
}

fn repo_json(store: &Store, origin: &str, r: &SeedRepo) -> Value {
    let ws = &store.seed.workspace.slug;
    let project = store
        .project(&r.project)
        .map(|p| project_json(store, origin, p))
        .unwrap_or(Value::Null);
    json!({
        "type": "repository",
        "slug": r.slug,
        "name": r.name,
        "full_name": format!("{ws}/{}", r.slug),
        "uuid": r.uuid,
        "is_private": true,
        "scm": "git",
        "created_on": TIMESTAMP,
        "updated_on": TIMESTAMP,
        "project": project,
        "workspace": ws_short(store, origin),
        "links": {
            "self": {"href": format!("{origin}/2.0/repositories/{ws}/{}", r.slug)},
            "html": {"href": format!("https://bitbucket.org/{ws}/{}", r.slug)},
        },
    })
}

fn repo_short(store: &Store, origin: &str, r: &SeedRepo) -> Value {
    let ws = &store.seed.workspace.slug;
    json!({
        "type": "repository",
        "name": r.name,
        "full_name": format!("{ws}/{}", r.slug),
        "uuid": r.uuid,
        "links": {"self": {"href": format!("{origin}/2.0/repositories/{ws}/{}", r.slug)}},
    })
}

fn membership_json(store: &Store, origin: &str, u: &SeedUser, with_email: bool) -> Value {
    let ws = &store.seed.workspace.slug;
    let mut user = user_json(u);
    if with_email {
        if let (Some(obj), Some(e)) = (user.as_object_mut(), &u.email) {
            obj.insert("email".into(), json!(e));
        }
    }
    json!({
        "type": "workspace_membership",
        "user": user,
        "workspace": ws_short(store, origin),
        "links": {"self": {"href": format!("{origin}/2.0/workspaces/{ws}/members/{}", percent_encode(&u.uuid))}},
    })
}

fn group_ref(store: &Store, slug: &str) -> Value {
    let ws = &store.seed.workspace.slug;
    let name = store
        .group(slug)
        .map(|g| g.name.clone())
        .unwrap_or_else(|| slug.to_string());
    json!({"type": "group", "name": name, "slug": slug, "full_slug": format!("{ws}:{slug}")})
}

/// Where a permissions-config object lives (`.../permissions-config`).
fn perm_base(store: &Store, origin: &str, req: &Req) -> String {
    let ws = &store.seed.workspace.slug;
    if req.params.iter().any(|(k, _)| *k == "project") {
        format!(
            "{origin}/2.0/workspaces/{ws}/projects/{}/permissions-config",
            percent_encode(req.param("project"))
        )
    } else {
        format!(
            "{origin}/2.0/repositories/{ws}/{}/permissions-config",
            percent_encode(req.param("repo"))
        )
    }
}

fn group_perm_json(store: &Store, req: &Req, project: bool, slug: &str, perm: &str) -> Value {
    let href = format!(
        "{}/groups/{}",
        perm_base(store, &req.origin, req),
        percent_encode(slug)
    );
    json!({
        "type": if project { "project_group_permission" } else { "repository_group_permission" },
        "group": group_ref(store, slug),
        "permission": perm,
        "links": {"self": {"href": href}},
    })
}

fn user_perm_json(store: &Store, req: &Req, project: bool, account: &str, perm: &str) -> Value {
    let user = store
        .user_by_account(account)
        .map(user_json)
        .unwrap_or(Value::Null);
    let href = format!(
        "{}/users/{}",
        perm_base(store, &req.origin, req),
        percent_encode(account)
    );
    json!({
        "type": if project { "project_user_permission" } else { "repository_user_permission" },
        "user": user,
        "permission": perm,
        "links": {"self": {"href": href}},
    })
}

// ----- helpers -----

fn repo_or_404<'a>(store: &'a Store, slug: &str) -> Result<&'a SeedRepo, Reply> {
    store
        .repo(slug)
        .ok_or_else(|| Reply::error(404, format!("Repository {slug} not found")))
}

fn project_or_404<'a>(store: &'a Store, key: &str) -> Result<&'a SeedProject, Reply> {
    store
        .project(key)
        .ok_or_else(|| Reply::error(404, format!("Project {key} not found")))
}

fn group_or_404(store: &Store, slug: &str) -> Result<(), Reply> {
    store
        .group(slug)
        .map(|_| ())
        .ok_or_else(|| Reply::error(404, format!("Group {slug} not found")))
}

/// `{user}` path segment: braced uuid or account_id of a workspace member.
fn member_or_404(store: &Store, id: &str) -> Result<String, Reply> {
    store
        .user_by_id(id)
        .map(|u| u.account_id.clone())
        .ok_or_else(|| Reply::error(404, format!("User {id} is not a member of this workspace")))
}

/// permissions-config PUT body: exactly `{"permission": "<one of allowed>"}`.
fn permission_body(req: &Req, allowed: &[&str]) -> Result<String, Reply> {
    if !req.is_json() {
        return Err(Reply::error(
            400,
            "The request body must be JSON (Content-Type: application/json)",
        ));
    }
    let v: Value = serde_json::from_slice(req.body)
        .map_err(|_| Reply::error(400, "The request body is not valid JSON"))?;
    let shape_err = || {
        Reply::error_detail(
            400,
            "The request body must be exactly {\"permission\": \"...\"}",
            json!({"allowed_permissions": allowed}),
        )
    };
    let obj = v.as_object().ok_or_else(shape_err)?;
    if obj.len() != 1 {
        return Err(shape_err());
    }
    let p = obj
        .get("permission")
        .and_then(Value::as_str)
        .ok_or_else(shape_err)?;
    if !allowed.contains(&p) {
        return Err(Reply::error_detail(
            400,
            format!("'{p}' is not a valid permission"),
            json!({"allowed_permissions": allowed}),
        ));
    }
    Ok(p.to_string())
}

fn no_bbql(req: &Req) -> Result<(), Reply> {
    if req.q("q").is_some() {
        Err(Reply::error(
            400,
            "This resource does not support filtering with 'q'",
        ))
    } else {
        Ok(())
    }
}

fn is_admin_caller(store: &Store, req: &Req) -> bool {
    req.caller
        .account_id
        .as_deref()
        .map(|a| store.is_admin(a))
        .unwrap_or(false)
}

/// Email conditions must be equality or IN (only queried addresses are ever returned).
fn check_email_ops(e: &Expr) -> Result<(), Reply> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_email_ops(a)?;
            check_email_ops(b)
        }
        Expr::Not(a) => check_email_ops(a),
        Expr::Cmp { field, op, .. } if field == "user.email" && *op != Op::Eq => Err(Reply::error(
            400,
            "user.email can only be queried with = or IN",
        )),
        Expr::In {
            field,
            negated: true,
            ..
        } if field == "user.email" => Err(Reply::error(
            400,
            "user.email can only be queried with = or IN",
        )),
        _ => Ok(()),
    }
}

fn sort_key(sort: Option<&str>) -> Result<Option<(String, bool)>, Reply> {
    let Some(s) = sort else { return Ok(None) };
    let (desc, field) = match s.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, s),
    };
    if ["slug", "name", "full_name", "created_on", "updated_on"].contains(&field) {
        Ok(Some((field.to_string(), desc)))
    } else {
        Err(Reply::error(400, format!("Invalid sort field '{field}'")))
    }
}

// ----- handlers -----

pub fn handle(id: RouteId, store: &mut Store, req: &Req) -> Reply {
    match handle_inner(id, store, req) {
        Ok(r) | Err(r) => r,
    }
}

fn handle_inner(id: RouteId, store: &mut Store, req: &Req) -> Result<Reply, Reply> {
    let origin = req.origin.as_str();
    match id {
        RouteId::V2Gone => Ok(Reply::error(
            410,
            "This API is no longer available (CHANGE-2770): scope the request to one workspace",
        )),
        RouteId::V2WorkspaceGet => Ok(Reply::json(200, ws_json(store, origin))),
        RouteId::V2UserWorkspaces => {
            let admin = is_admin_caller(store, req);
            let item = json!({
                "type": "workspace_access",
                "administrator": admin,
                "workspace": ws_json(store, origin),
            });
            numbered(req, store, vec![item])
        }
        RouteId::V2ReposList => repos_list(store, req),
        RouteId::V2RepoGet => {
            let r = repo_or_404(store, req.param("repo"))?;
            Ok(Reply::json(200, repo_json(store, origin, r)))
        }
        RouteId::V2ProjectsList => {
            let q = parse_q(req, PROJECT_FIELDS)?;
            let items: Vec<Value> = store
                .seed
                .projects
                .iter()
                .filter(|p| {
                    q.as_ref().is_none_or(|q| {
                        q.matches(&|f| match f {
                            "key" => Some(p.key.clone()),
                            "name" => Some(p.name.clone()),
                            "uuid" => Some(p.uuid.clone()),
                            _ => None,
                        })
                    })
                })
                .map(|p| project_json(store, origin, p))
                .collect();
            numbered(req, store, items)
        }
        RouteId::V2MembersList => members_list(store, req),
        RouteId::V2MemberGet => {
            let id = req.param("member");
            let u = store.user_by_id(id).ok_or_else(|| {
                Reply::error(404, format!("{id} is not a member of this workspace"))
            })?;
            Ok(Reply::json(200, membership_json(store, origin, u, false)))
        }
        RouteId::V2WsPermissions => {
            let q = parse_q(req, WS_PERMISSION_FIELDS)?;
            let role = store.workspace_roles();
            let items: Vec<Value> = store
                .seed
                .users
                .iter()
                .map(|u| (u, role(&u.account_id)))
                .filter(|(u, role)| {
                    q.as_ref().is_none_or(|q| {
                        q.matches(&|f| match f {
                            "permission" => Some(role.to_string()),
                            other => user_field(u, other),
                        })
                    })
                })
                .map(|(u, role)| {
                    json!({
                        "type": "workspace_membership",
                        "permission": role,
                        "user": user_json(u),
                        "workspace": ws_short(store, origin),
                    })
                })
                .collect();
            numbered(req, store, items)
        }
        RouteId::V2WsRepoPermissions | RouteId::V2WsRepoPermissionsOne => {
            let only = if id == RouteId::V2WsRepoPermissionsOne {
                Some(repo_or_404(store, req.param("repo"))?.slug.clone())
            } else {
                None
            };
            let q = parse_q(req, REPO_PERMISSION_FIELDS)?;
            let ws = store.seed.workspace.slug.clone();
            let mut items = Vec::new();
            for r in &store.seed.repositories {
                if only.as_deref().is_some_and(|o| o != r.slug) {
                    continue;
                }
                for u in &store.seed.users {
                    let Some(perm) = store.effective_repo_permission(&u.account_id, &r.slug) else {
                        continue;
                    };
                    let keep = q.as_ref().is_none_or(|q| {
                        q.matches(&|f| match f {
                            "permission" => Some(perm.to_string()),
                            "repository.name" => Some(r.name.clone()),
                            "repository.full_name" => Some(format!("{ws}/{}", r.slug)),
                            "repository.uuid" => Some(r.uuid.clone()),
                            other => user_field(u, other),
                        })
                    });
                    if keep {
                        items.push(json!({
                            "type": "repository_permission",
                            "permission": perm,
                            "user": user_json(u),
                            "repository": repo_short(store, origin, r),
                        }));
                    }
                }
            }
            numbered(req, store, items)
        }
        RouteId::V2RepoPermGroups
        | RouteId::V2RepoPermGroupGet
        | RouteId::V2RepoPermGroupPut
        | RouteId::V2RepoPermGroupDelete
        | RouteId::V2RepoPermUsers
        | RouteId::V2RepoPermUserGet
        | RouteId::V2RepoPermUserPut
        | RouteId::V2RepoPermUserDelete => repo_perms(id, store, req),
        RouteId::V2ProjPermGroups
        | RouteId::V2ProjPermGroupGet
        | RouteId::V2ProjPermGroupPut
        | RouteId::V2ProjPermGroupDelete
        | RouteId::V2ProjPermUsers
        | RouteId::V2ProjPermUserGet
        | RouteId::V2ProjPermUserPut
        | RouteId::V2ProjPermUserDelete => project_perms(id, store, req),
        _ => Ok(Reply::error(404, "Resource not found")),
    }
}

fn user_field(u: &SeedUser, field: &str) -> Option<String> {
    match field {
        "user.account_id" => Some(u.account_id.clone()),
        "user.uuid" => Some(u.uuid.clone()),
        "user.display_name" => Some(u.display_name.clone()),
        "user.nickname" => Some(u.nickname.clone()),
        "user.email" => u.email.clone(),
        _ => None,
    }
}

fn repos_list(store: &Store, req: &Req) -> Result<Reply, Reply> {
    let origin = req.origin.as_str();
    let q = parse_q(req, REPO_FIELDS)?;
    let sort = sort_key(req.q("sort"))?;
    let min_rank = match req.q("role") {
        None => 0,
        Some("member") => 1,
        Some("contributor") => 2,
        Some("admin") | Some("owner") => 3,
        Some(other) => {
            return Err(Reply::error(400, format!("Invalid role '{other}'")));
        }
    };
    let ws = &store.seed.workspace.slug;
    let mut repos: Vec<&SeedRepo> = store
        .seed
        .repositories
        .iter()
        .filter(|r| {
            q.as_ref().is_none_or(|q| {
                q.matches(&|f| match f {
                    "slug" => Some(r.slug.clone()),
                    "name" => Some(r.name.clone()),
                    "full_name" => Some(format!("{ws}/{}", r.slug)),
                    "uuid" => Some(r.uuid.clone()),
                    "project.key" => Some(r.project.clone()),
                    "project.name" => store.project(&r.project).map(|p| p.name.clone()),
                    "project.uuid" => store.project(&r.project).map(|p| p.uuid.clone()),
                    "is_private" => Some("true".into()),
                    _ => None,
                })
            })
        })
        .filter(|r| {
            if min_rank == 0 {
                return true;
            }
            // Access tokens have no account: role filtering does not narrow them.
            match (&req.caller.kind, &req.caller.account_id) {
                (CallerKind::AccessToken, _) | (_, None) => true,
                (_, Some(a)) => {
                    store
                        .effective_repo_permission(a, &r.slug)
                        .map(crate::state::repo_rank)
                        .unwrap_or(0)
                        >= min_rank
                }
            }
        })
        .collect();
    if let Some((field, desc)) = sort {
        let key = |r: &SeedRepo| -> String {
            match field.as_str() {
                "name" => r.name.to_lowercase(),
                "full_name" | "slug" => r.slug.clone(),
                _ => TIMESTAMP.to_string(),
            }
        };
        repos.sort_by_key(|r| key(r));
        if desc {
            repos.reverse();
        }
    }
    page_ctx(req, store)
        .page_numbered_with(repos, |r| repo_json(store, origin, r))
        .map(|v| Reply::json(200, v))
        .map_err(|e| Reply::error(400, e.0))
}

fn members_list(store: &Store, req: &Req) -> Result<Reply, Reply> {
    let origin = req.origin.as_str();
    let q = parse_q(req, MEMBER_FIELDS)?;
    let mut emails: HashSet<String> = HashSet::new();
    if let Some(q) = &q {
        let uses_email = q.fields().iter().any(|f| f == "user.email");
        if uses_email {
            check_email_ops(&q.expr)?;
            let allowed = matches!(req.caller.kind, CallerKind::AccessToken | CallerKind::OAuth)
                || is_admin_caller(store, req);
            if !allowed {
                return Err(Reply::error(
                    403,
                    "Only workspace administrators, integrations and workspace access tokens may query members by email",
                ));
            }
            let values = q.equality_values("user.email");
            if values.len() > MAX_EMAILS {
                return Err(Reply::error_detail(
                    400,
                    format!("Too many email addresses: at most {MAX_EMAILS} per request"),
                    json!({"count": values.len(), "max": MAX_EMAILS}),
                ));
            }
            emails = values.into_iter().map(|e| e.to_lowercase()).collect();
        }
    }
    let items: Vec<Value> = store
        .seed
        .users
        .iter()
        .filter(|u| q.as_ref().is_none_or(|q| q.matches(&|f| user_field(u, f))))
        .map(|u| {
            let with_email = u
                .email
                .as_deref()
                .is_some_and(|e| emails.contains(&e.to_lowercase()));
            membership_json(store, origin, u, with_email)
        })
        .collect();
    let mut reply = cursored(req, store, items)?;
    reply.hidden_fields.push("values.user.email");
    Ok(reply)
}

fn repo_perms(id: RouteId, store: &mut Store, req: &Req) -> Result<Reply, Reply> {
    let repo = repo_or_404(store, req.param("repo"))?.slug.clone();
    match id {
        RouteId::V2RepoPermGroups => {
            no_bbql(req)?;
            let items = store
                .seed
                .group_grants
                .iter()
                .filter(|g| g.repo == repo)
                .map(|g| group_perm_json(store, req, false, &g.group, &g.permission))
                .collect();
            cursored(req, store, items)
        }
        RouteId::V2RepoPermUsers => {
            no_bbql(req)?;
            let items = store
                .seed
                .user_grants
                .iter()
                .filter(|g| g.repo == repo)
                .map(|g| user_perm_json(store, req, false, &g.account_id, &g.permission))
                .collect();
            cursored(req, store, items)
        }
        RouteId::V2RepoPermGroupGet
        | RouteId::V2RepoPermGroupPut
        | RouteId::V2RepoPermGroupDelete => {
            let group = req.param("group").to_string();
            group_or_404(store, &group)?;
            match id {
                RouteId::V2RepoPermGroupGet => {
                    let g = store.repo_group_grant(&repo, &group).ok_or_else(|| {
                        Reply::error(
                            404,
                            format!("Group {group} has no explicit permission on {repo}"),
                        )
                    })?;
                    Ok(Reply::json(
                        200,
                        group_perm_json(store, req, false, &group, &g.permission),
                    ))
                }
                RouteId::V2RepoPermGroupPut => {
                    let p = permission_body(req, REPO_PERMISSIONS)?;
                    let g = store.set_repo_group_grant(&repo, &group, &p).map_err(err)?;
                    Ok(Reply::json(
                        200,
                        group_perm_json(store, req, false, &group, &g.permission),
                    ))
                }
                _ => {
                    store.remove_repo_group_grant(&repo, &group).map_err(err)?;
                    Ok(Reply::empty(204))
                }
            }
        }
        _ => {
            let account = member_or_404(store, req.param("user"))?;
            match id {
                RouteId::V2RepoPermUserGet => {
                    let g = store.repo_user_grant(&repo, &account).ok_or_else(|| {
                        Reply::error(
                            404,
                            format!("User {account} has no explicit permission on {repo}"),
                        )
                    })?;
                    Ok(Reply::json(
                        200,
                        user_perm_json(store, req, false, &account, &g.permission),
                    ))
                }
                RouteId::V2RepoPermUserPut => {
                    if store.is_owner(&account) {
                        return Err(err(StoreError::BadRequest(
                            "The workspace owner's permission cannot be changed.".into(),
                        )));
                    }
                    let p = permission_body(req, REPO_PERMISSIONS)?;
                    let g = store
                        .set_repo_user_grant(&repo, &account, &p)
                        .map_err(err)?;
                    Ok(Reply::json(
                        200,
                        user_perm_json(store, req, false, &account, &g.permission),
                    ))
                }
                _ => {
                    store.remove_repo_user_grant(&repo, &account).map_err(err)?;
                    Ok(Reply::empty(204))
                }
            }
        }
    }
}

fn project_perms(id: RouteId, store: &mut Store, req: &Req) -> Result<Reply, Reply> {
    let project = project_or_404(store, req.param("project"))?.key.clone();
    match id {
        RouteId::V2ProjPermGroups => {
            no_bbql(req)?;
            let items = store
                .seed
                .project_group_grants
                .iter()
                .filter(|g| g.project == project)
                .map(|g| group_perm_json(store, req, true, &g.group, &g.permission))
                .collect();
            cursored(req, store, items)
        }
        RouteId::V2ProjPermUsers => {
            no_bbql(req)?;
            let items = store
                .seed
                .project_user_grants
                .iter()
                .filter(|g| g.project == project)
                .map(|g| user_perm_json(store, req, true, &g.account_id, &g.permission))
                .collect();
            cursored(req, store, items)
        }
        RouteId::V2ProjPermGroupGet
        | RouteId::V2ProjPermGroupPut
        | RouteId::V2ProjPermGroupDelete => {
            let group = req.param("group").to_string();
            group_or_404(store, &group)?;
            match id {
                RouteId::V2ProjPermGroupGet => {
                    let g = store.project_group_grant(&project, &group).ok_or_else(|| {
                        Reply::error(
                            404,
                            format!(
                                "Group {group} has no explicit permission on project {project}"
                            ),
                        )
                    })?;
                    Ok(Reply::json(
                        200,
                        group_perm_json(store, req, true, &group, &g.permission),
                    ))
                }
                RouteId::V2ProjPermGroupPut => {
                    let p = permission_body(req, PROJECT_PERMISSIONS)?;
                    let g = store
                        .set_project_group_grant(&project, &group, &p)
                        .map_err(err)?;
                    Ok(Reply::json(
                        200,
                        group_perm_json(store, req, true, &group, &g.permission),
                    ))
                }
                _ => {
                    store
                        .remove_project_group_grant(&project, &group)
                        .map_err(err)?;
                    Ok(Reply::empty(204))
                }
            }
        }
        _ => {
            let account = member_or_404(store, req.param("user"))?;
            match id {
                RouteId::V2ProjPermUserGet => {
                    let g = store.project_user_grant(&project, &account).ok_or_else(|| {
                        Reply::error(404, format!("User {account} has no explicit permission on project {project}"))
                    })?;
                    Ok(Reply::json(
                        200,
                        user_perm_json(store, req, true, &account, &g.permission),
                    ))
                }
                RouteId::V2ProjPermUserPut => {
                    if store.is_owner(&account) {
                        return Err(err(StoreError::BadRequest(
                            "The workspace owner's permission cannot be changed.".into(),
                        )));
                    }
                    let p = permission_body(req, PROJECT_PERMISSIONS)?;
                    let g = store
                        .set_project_user_grant(&project, &account, &p)
                        .map_err(err)?;
                    Ok(Reply::json(
                        200,
                        user_perm_json(store, req, true, &account, &g.permission),
                    ))
                }
                _ => {
                    store
                        .remove_project_user_grant(&project, &account)
                        .map_err(err)?;
                    Ok(Reply::empty(204))
                }
            }
        }
    }
}
