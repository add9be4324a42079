//! The Atlassian Admin (organisation) API under `/admin` (sheet section 5): directories,
//! directory groups and memberships, user search, suspend/restore/remove, the v1 users list.
//!
//! Errors are `{"errors":[{id, status, code, title, detail}]}`. Authentication (an
//! `admin_api_key` only), the rate limit and route matching are done by the dispatcher; the
//! organisation, `{orgId}` and `{dirId}` checks are done here.

use crate::http::{percent_decode, Reply, Req};
use crate::router::RouteId;
use crate::seed::{admin_group_id_for, group_slug_for, uuid_for, SeedGroup, SeedUser};
use crate::state::Store;
use serde::Deserialize;
use serde_json::{json, Value};

/// Default `limit` of the paged Admin API collections.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 100;

/// An Admin API error answer: `{"errors":[{id, status, code, title, detail}]}`.
pub fn error(status: u16, code: &str, detail: impl Into<String>) -> Reply {
    let detail = detail.into();
    let title = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let id = uuid_for("admin-error", &format!("{status}:{code}:{detail}"))
        .trim_matches(|c| c == '{' || c == '}')
        .to_string();
    Reply::json(
        status,
        json!({"errors": [{
            "id": id,
            "status": status.to_string(),
            "code": code,
            "title": title,
            "detail": detail,
        }]}),
    )
}

fn bad_request(detail: impl Into<String>) -> Reply {
    error(400, "ADMIN-400", detail)
}

/// A resource (group, user, membership) not found.
fn not_found(detail: impl Into<String>) -> Reply {
    error(404, "ADMIN-UAM-404-3", detail)
}

fn forbidden(detail: impl Into<String>) -> Reply {
    error(403, "ADMIN-403", detail)
}

fn conflict(detail: impl Into<String>) -> Reply {
    error(409, "ADMIN-409", detail)
}

const IDP_SYNCED: &str =
    "Groups synced from an identity provider cannot be edited: change them in the identity provider.";

// ----- the directory in the store -----

impl Store {
    /// Whether the directory's groups are the workspace's groups (organisation-managed).
    fn groups_shared(&self) -> bool {
        self.seed.workspace.organisation_managed
    }

    /// The directory's groups (empty without an organisation).
    pub fn directory_groups(&self) -> &[SeedGroup] {
        if self.groups_shared() {
            &self.seed.groups
        } else {
            self.seed
                .organisation
                .as_ref()
                .map(|o| o.groups.as_slice())
                .unwrap_or(&[])
        }
    }

    fn directory_groups_mut(&mut self) -> Option<&mut Vec<SeedGroup>> {
        if self.groups_shared() {
            Some(&mut self.seed.groups)
        } else {
            self.seed.organisation.as_mut().map(|o| &mut o.groups)
        }
    }

    /// Whether `account_id` is a user of the directory.
    pub fn in_directory(&self, account_id: &str) -> bool {
        let Some(o) = &self.seed.organisation else {
            return false;
        };
        self.user_by_account(account_id).is_some() && !o.removed.iter().any(|a| a == account_id)
    }

    /// The directory's users, sorted by account id.
    pub fn directory_users(&self) -> Vec<&SeedUser> {
        let Some(o) = &self.seed.organisation else {
            return Vec::new();
        };
        let mut users: Vec<&SeedUser> = self
            .seed
            .users
            .iter()
            .filter(|u| !o.removed.contains(&u.account_id))
            .collect();
        users.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        users
    }

    pub fn is_suspended(&self, account_id: &str) -> bool {
        self.seed
            .organisation
            .as_ref()
            .is_some_and(|o| o.suspended.iter().any(|a| a == account_id))
    }

    /// A directory group id for a new group with this slug, unused in the directory.
    pub(crate) fn fresh_group_id(&self, slug: &str) -> String {
        let taken = |id: &str| {
            self.directory_groups()
                .iter()
                .any(|g| g.id.as_deref() == Some(id))
        };
        let mut id = admin_group_id_for(slug);
        let mut n = 1u32;
        while taken(&id) {
            id = admin_group_id_for(&format!("{slug}#{n}"));
            n += 1;
        }
        id
    }
}

// ----- JSON -----

fn group_json(g: &SeedGroup) -> Value {
    json!({"id": g.id, "name": g.name, "description": g.description})
}

fn user_json(store: &Store, u: &SeedUser, expand_groups: bool) -> Value {
    let mut v = json!({
        "accountId": u.account_id,
        "accountType": "atlassian",
        "accountStatus": "active",
        "membershipStatus": if store.is_suspended(&u.account_id) { "suspended" } else { "active" },
        "name": u.display_name,
        "nickname": u.nickname,
        "email": u.email,
    });
    if expand_groups {
        let groups: Vec<Value> = store
            .directory_groups()
            .iter()
            .filter(|g| g.members.contains(&u.account_id))
            .map(|g| json!({"id": g.id, "name": g.name}))
            .collect();
        v["groups"] = Value::Array(groups);
    }
    v
}

// ----- requests -----

fn json_body<T: for<'de> Deserialize<'de>>(req: &Req) -> Result<T, Reply> {
    let text = std::str::from_utf8(req.body).unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Err(bad_request("A JSON request body is required."));
    }
    serde_json::from_str(text).map_err(|e| bad_request(format!("Invalid request body: {e}")))
}

/// A body that must be empty (or `{}`).
fn no_body(req: &Req) -> Result<(), Reply> {
    let text = std::str::from_utf8(req.body).unwrap_or("\u{fffd}").trim();
    if text.is_empty() || serde_json::from_str::<Value>(text).is_ok_and(|v| v == json!({})) {
        Ok(())
    } else {
        Err(bad_request("This request takes no body."))
    }
}

fn limit_of(limit: Option<i64>) -> Result<usize, Reply> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(bad_request(format!(
            "limit {n} is not between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// A cursor as sent back: the opaque token, or (v1 style) a URL containing `cursor=...`.
fn cursor_token(raw: &str) -> String {
    if let Some(i) = raw.find("cursor=") {
        let rest = &raw[i + "cursor=".len()..];
        let end = rest.find('&').unwrap_or(rest.len());
        return percent_decode(&rest[..end], true);
    }
    raw.to_string()
}

/// What a cursor is bound to: the collection and the query (everything but the cursor).
fn binding(req: &Req, query: &str) -> String {
    let path = req.raw_path.strip_suffix('/').unwrap_or(req.raw_path);
    format!("admin\n{}\n{query}", percent_decode(path, false))
}

/// One page: (items, offset of the next page).
fn page<T>(
    req: &Req,
    items: Vec<T>,
    limit: usize,
    cursor: Option<&str>,
    query: &str,
) -> Result<(Vec<T>, Option<String>), Reply> {
    let bind = binding(req, query);
    let start = match cursor {
        None => 0,
        Some(c) => req
            .cursor_key
            .verify(&bind, &cursor_token(c))
            .ok_or_else(|| bad_request("Invalid cursor"))?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next =
        (start.saturating_add(limit) < total).then(|| req.cursor_key.sign(&bind, start + limit));
    Ok((page, next))
}

fn self_link(req: &Req) -> String {
    let query: Vec<String> = req
        .raw_query
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    if query.is_empty() {
        format!("{}{}", req.origin, req.raw_path)
    } else {
        format!("{}{}?{}", req.origin, req.raw_path, query.join("&"))
    }
}

fn paged(req: &Req, data: Vec<Value>, next: Option<String>) -> Reply {
    let mut links = json!({"self": self_link(req)});
    if let Some(n) = next {
        links["next"] = json!(n);
    }
    Reply::json(200, json!({"data": data, "links": links}))
}

/// Query parameters of a GET collection: only these names, each at most once.
fn get_params(req: &Req, allowed: &[&str]) -> Result<(Option<i64>, Option<String>), Reply> {
    let mut limit = None;
    let mut cursor = None;
    for (k, v) in &req.query {
        if !allowed.contains(&k.as_str()) {
            return Err(bad_request(format!("Unknown query parameter '{k}'")));
        }
        match k.as_str() {
            "limit" => {
                limit = Some(
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| bad_request(format!("Invalid limit '{v}'")))?,
                )
            }
            _ => cursor = Some(v.clone()),
        }
    }
    Ok((limit, cursor))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupsSearch {
    group_names: Option<Vec<String>>,
    group_ids: Option<Vec<String>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UsersSearch {
    group_ids: Option<Vec<String>>,
    emails: Option<Vec<String>>,
    account_ids: Option<Vec<String>>,
    expand: Option<Vec<String>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupCreate {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipBody {
    #[serde(rename = "accountId")]
    account_id_camel: Option<String>,
    account_id: Option<String>,
}

fn sorted_groups(store: &Store) -> Vec<&SeedGroup> {
    let mut groups: Vec<&SeedGroup> = store.directory_groups().iter().collect();
    groups.sort_by(|a, b| {
        a.name
            .to_lowercase()
            .cmp(&b.name.to_lowercase())
            .then_with(|| a.id.cmp(&b.id))
    });
    groups
}

/// The index of directory group `id` or a 404.
fn group_index(store: &Store, id: &str) -> Result<usize, Reply> {
    store
        .directory_groups()
        .iter()
        .position(|g| g.id.as_deref() == Some(id))
        .ok_or_else(|| not_found(format!("Group {id} was not found in the directory.")))
}

fn user_or_404(store: &Store, account_id: &str) -> Result<(), Reply> {
    if store.in_directory(account_id) {
        Ok(())
    } else {
        Err(not_found(format!(
            "User {account_id} was not found in the directory."
        )))
    }
}

pub fn handle(id: RouteId, store: &mut Store, req: &Req) -> Reply {
    match handle_inner(id, store, req) {
        Ok(r) | Err(r) => r,
    }
}

fn handle_inner(id: RouteId, store: &mut Store, req: &Req) -> Result<Reply, Reply> {
    let Some(org) = store.seed.organisation.clone() else {
        return Err(error(
            404,
            "ADMIN-404",
            "No organisation is administered with this API key.",
        ));
    };
    let org_id = req.param("orgId");
    if org_id != org.id {
        return Err(error(
            404,
            "ADMIN-404",
            format!("Organization {org_id} was not found."),
        ));
    }
    if id != RouteId::AdminDirectories && id != RouteId::AdminV1Users {
        let dir = req.param("dirId");
        if dir != "-" && dir != org.directory_id {
            return Err(error(
                404,
                "ADMIN-404",
                format!("Directory {dir} was not found."),
            ));
        }
    }
    Ok(match id {
        RouteId::AdminDirectories => {
            get_params(req, &[])?;
            paged(
                req,
                vec![json!({"directoryId": org.directory_id, "name": org.name})],
                None,
            )
        }
        RouteId::AdminGroupsSearch => {
            let b: GroupsSearch = json_body(req)?;
            let limit = limit_of(b.limit)?;
            let names: Option<Vec<String>> = b
                .group_names
                .as_ref()
                .map(|n| n.iter().map(|s| s.to_lowercase()).collect());
            let groups: Vec<Value> = sorted_groups(store)
                .into_iter()
                .filter(|g| {
                    names
                        .as_ref()
                        .is_none_or(|n| n.contains(&g.name.to_lowercase()))
                        && b.group_ids
                            .as_ref()
                            .is_none_or(|ids| g.id.as_ref().is_some_and(|id| ids.contains(id)))
                })
                .map(group_json)
                .collect();
            let query = format!("{:?}|{:?}|{limit}", b.group_names, b.group_ids);
            let (data, next) = page(req, groups, limit, b.cursor.as_deref(), &query)?;
            paged(req, data, next)
        }
        RouteId::AdminGroupsList => {
            let (limit, cursor) = get_params(req, &["limit", "cursor"])?;
            let limit = limit_of(limit)?;
            let groups: Vec<Value> = sorted_groups(store).into_iter().map(group_json).collect();
            let (data, next) = page(req, groups, limit, cursor.as_deref(), &limit.to_string())?;
            paged(req, data, next).with_header("deprecation", "true")
        }
        RouteId::AdminGroupCreate => {
            let b: GroupCreate = json_body(req)?;
            let name = b.name.trim().to_string();
            if name.is_empty() {
                return Err(bad_request("name: a group name is required."));
            }
            if store
                .directory_groups()
                .iter()
                .any(|g| g.name.eq_ignore_ascii_case(&name))
            {
                return Err(conflict(format!("A group named {name} already exists.")));
            }
            let slug = group_slug_for(&name);
            let group = if store.groups_shared() {
                let mut g = store
                    .create_group(&name)
                    .map_err(|_| conflict(format!("A group with slug {slug} already exists.")))?;
                g.description = b.description.clone();
                if let Some(w) = store.seed.groups.iter_mut().find(|x| x.slug == g.slug) {
                    w.description = b.description;
                    g = w.clone();
                }
                g
            } else {
                let g = SeedGroup {
                    name,
                    slug: Some(slug.clone()),
                    id: Some(store.fresh_group_id(&slug)),
                    description: b.description,
                    ..Default::default()
                };
                if let Some(groups) = store.directory_groups_mut() {
                    groups.push(g.clone());
                }
                g
            };
            Reply::json(201, group_json(&group))
        }
        RouteId::AdminGroupDelete => {
            let i = group_index(store, req.param("groupId"))?;
            let g = store.directory_groups()[i].clone();
            if g.idp_synced {
                return Err(forbidden(IDP_SYNCED));
            }
            if store.groups_shared() {
                store
                    .delete_group(&g.slug())
                    .map_err(|e| not_found(format!("{e:?}")))?;
            } else if let Some(groups) = store.directory_groups_mut() {
                groups.remove(i);
            }
            Reply::empty(204)
        }
        RouteId::AdminMembershipAdd => {
            let i = group_index(store, req.param("groupId"))?;
            let b: MembershipBody = json_body(req)?;
            let account = match (b.account_id_camel, b.account_id) {
                (Some(a), None) | (None, Some(a)) => a,
                _ => {
                    return Err(bad_request(
                        "Exactly one of accountId (or the older account_id) is required.",
                    ))
                }
            };
            if store.directory_groups()[i].idp_synced {
                return Err(forbidden(IDP_SYNCED));
            }
            user_or_404(store, &account)?;
            let Some(groups) = store.directory_groups_mut() else {
                return Err(not_found("No directory."));
            };
            let g = &mut groups[i];
            if g.members.contains(&account) {
                return Err(conflict(format!(
                    "User {account} is already a member of group {}.",
                    g.name
                )));
            }
            g.members.push(account);
            Reply::empty(204)
        }
        RouteId::AdminMembershipRemove => {
            let i = group_index(store, req.param("groupId"))?;
            let account = req.param("accountId").to_string();
            if store.directory_groups()[i].idp_synced {
                return Err(forbidden(IDP_SYNCED));
            }
            let Some(groups) = store.directory_groups_mut() else {
                return Err(not_found("No directory."));
            };
            let g = &mut groups[i];
            let before = g.members.len();
            g.members.retain(|m| *m != account);
            if g.members.len() == before {
                return Err(not_found(format!(
                    "User {account} is not a member of group {}.",
                    g.name
                )));
            }
            Reply::empty(204)
        }
        RouteId::AdminUsersSearch => {
            let b: UsersSearch = json_body(req)?;
            let limit = limit_of(b.limit)?;
            let mut expand_groups = false;
            for e in b.expand.iter().flatten() {
                if e == "groups" {
                    expand_groups = true;
                } else {
                    return Err(bad_request(format!(
                        "Unknown expand value '{e}' (known: groups)"
                    )));
                }
            }
            let emails: Option<Vec<String>> = b
                .emails
                .as_ref()
                .map(|e| e.iter().map(|s| s.to_lowercase()).collect());
            let groups = store.directory_groups();
            let users: Vec<Value> = store
                .directory_users()
                .into_iter()
                .filter(|u| {
                    b.group_ids.as_ref().is_none_or(|ids| {
                        groups.iter().any(|g| {
                            g.id.as_ref().is_some_and(|id| ids.contains(id))
                                && g.members.contains(&u.account_id)
                        })
                    }) && emails.as_ref().is_none_or(|es| {
                        u.email
                            .as_ref()
                            .is_some_and(|e| es.contains(&e.to_lowercase()))
                    }) && b
                        .account_ids
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&u.account_id))
                })
                .map(|u| user_json(store, u, expand_groups))
                .collect();
            let query = format!(
                "{:?}|{:?}|{:?}|{expand_groups}|{limit}",
                b.group_ids, emails, b.account_ids
            );
            let (data, next) = page(req, users, limit, b.cursor.as_deref(), &query)?;
            paged(req, data, next)
        }
        RouteId::AdminUserSuspend | RouteId::AdminUserRestore => {
            no_body(req)?;
            let account = req.param("accountId").to_string();
            user_or_404(store, &account)?;
            if let Some(o) = store.seed.organisation.as_mut() {
                o.suspended.retain(|a| *a != account);
                if id == RouteId::AdminUserSuspend {
                    o.suspended.push(account);
                }
            }
            Reply::empty(204)
        }
        RouteId::AdminUserDelete => {
            let account = req.param("accountId").to_string();
            user_or_404(store, &account)?;
            if store.groups_shared() && store.is_owner(&account) {
                return Err(forbidden(
                    "The workspace owner cannot be removed from the directory.",
                ));
            }
            if let Some(groups) = store.directory_groups_mut() {
                for g in groups {
                    g.members.retain(|m| *m != account);
                }
            }
            let shared = store.groups_shared();
            if let Some(o) = store.seed.organisation.as_mut() {
                o.suspended.retain(|a| *a != account);
                if !shared {
                    o.removed.push(account.clone());
                }
            }
            if shared {
                let s = &mut store.seed;
                s.users.retain(|u| u.account_id != account);
                s.workspace.admins.retain(|a| *a != account);
                s.user_grants.retain(|g| g.account_id != account);
                s.project_user_grants.retain(|g| g.account_id != account);
                s.credentials
                    .retain(|c| c.account_id.as_deref() != Some(account.as_str()));
            }
            Reply::empty(204)
        }
        RouteId::AdminV1Users => {
            let (limit, cursor) = get_params(req, &["limit", "cursor"])?;
            let limit = limit_of(limit)?;
            let users: Vec<Value> = store
                .directory_users()
                .into_iter()
                .map(|u| {
                    json!({
                        "account_id": u.account_id,
                        "account_type": "atlassian",
                        "account_status": if store.is_suspended(&u.account_id) { "inactive" } else { "active" },
                        "name": u.display_name,
                        "email": u.email,
                    })
                })
                .collect();
            let (data, next) = page(req, users, limit, cursor.as_deref(), &limit.to_string())?;
            // v1: `next` is a URL containing the cursor.
            let next = next.map(|c| {
                let mut q: Vec<String> = req
                    .raw_query
                    .iter()
                    .filter(|(k, _)| k != "cursor")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                q.push(format!("cursor={c}"));
                format!("{}{}?{}", req.origin, req.raw_path, q.join("&"))
            });
            paged(req, data, next)
        }
        _ => return Err(error(404, "ADMIN-404", "Resource not found")),
    })
}
