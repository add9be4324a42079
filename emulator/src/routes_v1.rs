//! 1.0 groups and group-privileges. Errors are short plain-text bodies.
//! Authentication, the workspace segment, scopes, admin and organisation-managed checks are
//! done by the dispatcher before these handlers run.

use crate::http::{form_pairs, Reply, Req};
use crate::router::RouteId;
use crate::seed::{
    SeedGroup, SeedGroupGrant, SeedInvitation, SeedRepoInvitation, SeedUser, REPO_PERMISSIONS,
};
use crate::state::{GroupPatch, Store, StoreError};
use serde_json::{json, Value};

pub const AVATAR: &str =
    "https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/default-avatar.png";

/// 1.0 user object.
pub fn user_json(u: &SeedUser) -> Value {
    json!({
        "display_name": u.display_name,
        "account_id": u.account_id,
        "uuid": u.uuid,
        "nickname": u.nickname,
        "is_active": true,
        "is_team": false,
        "avatar": AVATAR,
        "resource_uri": format!("/1.0/users/{}", u.uuid),
    })
}

/// 1.0 "owner" of groups and repositories: the workspace as a team-like user.
pub fn owner_json(store: &Store) -> Value {
    let ws = &store.seed.workspace;
    json!({
        "display_name": ws.name,
        "uuid": ws.uuid,
        "nickname": ws.slug,
        "is_active": true,
        "is_team": true,
        "avatar": AVATAR,
        "resource_uri": format!("/1.0/users/{}", ws.slug),
    })
}

fn members_json(store: &Store, g: &SeedGroup) -> Vec<Value> {
    g.members
        .iter()
        .filter_map(|m| store.user_by_account(m))
        .map(user_json)
        .collect()
}

/// 1.0 group object.
pub fn group_json(store: &Store, g: &SeedGroup) -> Value {
    json!({
        "name": g.name,
        "slug": g.slug(),
        "permission": g.permission,
        "auto_add": g.auto_add,
        "email_forwarding_disabled": g.email_forwarding_disabled,
        "members": members_json(store, g),
        "owner": owner_json(store),
    })
}

/// 1.0 group privilege object.
pub fn privilege_json(store: &Store, grant: &SeedGroupGrant) -> Value {
    let ws = &store.seed.workspace.slug;
    let group = store.group(&grant.group);
    let repo_name = store
        .repo(&grant.repo)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| grant.repo.clone());
    json!({
        "repo": format!("{ws}/{}", grant.repo),
        "privilege": grant.permission,
        "group": {
            "owner": owner_json(store),
            "name": group.map(|g| g.name.clone()).unwrap_or_else(|| grant.group.clone()),
            "slug": grant.group,
            "members": group.map(|g| members_json(store, g)).unwrap_or_default(),
        },
        "repository": {
            "owner": owner_json(store),
            "name": repo_name,
            "slug": grant.repo,
        },
    })
}

fn err(e: StoreError) -> Reply {
    match e {
        StoreError::NotFound(m) => Reply::text(404, m),
        StoreError::BadRequest(m) => Reply::text(400, m),
        StoreError::Conflict(m) => Reply::text(409, m),
        StoreError::PaymentRequired(m) => Reply::text(402, m),
    }
}

fn not_found(what: &str) -> Reply {
    Reply::text(404, format!("{what} not found"))
}

/// `{member}`: a braced uuid of a workspace member. An account_id there is not accepted (404).
fn member_account(store: &Store, raw: &str) -> Result<String, Reply> {
    if raw.starts_with('{') && raw.ends_with('}') {
        if let Some(u) = store.user_by_uuid(raw) {
            return Ok(u.account_id.clone());
        }
    }
    Err(Reply::text(404, format!("No such user: {raw}")))
}

fn group_or_404<'a>(store: &'a Store, slug: &str) -> Result<&'a SeedGroup, Reply> {
    store.group(slug).ok_or_else(|| not_found("Group"))
}

fn check_group_owner(store: &Store, owner: &str) -> Result<(), Reply> {
    if owner == store.seed.workspace.slug {
        Ok(())
    } else {
        Err(Reply::text(404, format!("No such group owner: {owner}")))
    }
}

fn parse_group_patch(req: &Req) -> Result<GroupPatch, Reply> {
    if !req.is_json() {
        return Err(Reply::text(
            400,
            "Bad request: the body must be JSON (Content-Type: application/json)",
        ));
    }
    let v: Value = serde_json::from_slice(req.body)
        .map_err(|_| Reply::text(400, "Bad request: malformed JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Reply::text(400, "Bad request: expected a JSON object"))?;
    let mut patch = GroupPatch::default();
    if let Some(n) = obj.get("name") {
        patch.name = Some(
            n.as_str()
                .ok_or_else(|| Reply::text(400, "name: expected a string"))?
                .to_string(),
        );
    }
    if let Some(p) = obj.get("permission") {
        patch.permission = Some(match p {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(Reply::text(400, "permission: expected a string or null")),
        });
    }
    for (key, slot) in [
        ("auto_add", &mut patch.auto_add),
        (
            "email_forwarding_disabled",
            &mut patch.email_forwarding_disabled,
        ),
    ] {
        if let Some(b) = obj.get(key) {
            *slot = Some(
                b.as_bool()
                    .ok_or_else(|| Reply::text(400, format!("{key}: expected a boolean")))?,
            );
        }
    }
    Ok(patch)
}

/// Member PUT body: none, or `{}` sent as application/json.
fn check_member_body(req: &Req) -> Result<(), Reply> {
    let text = std::str::from_utf8(req.body).unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(());
    }
    let empty_object = serde_json::from_str::<Value>(text)
        .map(|v| v == json!({}))
        .unwrap_or(false);
    if empty_object && req.is_json() {
        Ok(())
    } else {
        Err(Reply::text(
            400,
            "Bad request: the body must be empty or {} (application/json)",
        ))
    }
}

/// Group-privilege PUT body: the bare word `read`, `write` or `admin`.
fn parse_privilege(req: &Req) -> Result<String, Reply> {
    let text = std::str::from_utf8(req.body).unwrap_or("").trim();
    if REPO_PERMISSIONS.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(Reply::text(
            400,
            "Bad request: the body must be one of read, write, admin",
        ))
    }
}

/// The rows of `GET /1.0/group-privileges/...` that `keep` selects: the same bytes as
/// [`privilege_json`] of each row in an array, written row by row with each group's members
/// and the owner serialized once (at 100k people, 2k groups and 20k repositories the body is
/// about 1.7 GB: built as one [`Value`] it would take several times that, and minutes).
fn privileges(store: &Store, keep: impl Fn(&SeedGroupGrant) -> bool) -> Reply {
    use serde::Serialize;
    use serde_json::value::RawValue;
    // Field order: a `Value` object's keys serialize sorted (serde_json's `Map` is a
    // BTreeMap), so these structs declare them in that order.
    #[derive(Serialize)]
    struct Row<'a> {
        group: Group<'a>,
        privilege: &'a str,
        repo: String,
        repository: Repository<'a>,
    }
    #[derive(Serialize)]
    struct Group<'a> {
        members: &'a RawValue,
        name: &'a str,
        owner: &'a RawValue,
        slug: &'a str,
    }
    #[derive(Serialize)]
    struct Repository<'a> {
        name: &'a str,
        owner: &'a RawValue,
        slug: &'a str,
    }
    let raw = |v: Value| RawValue::from_string(v.to_string()).expect("a Value serializes to JSON");
    let owner = raw(owner_json(store));
    let empty = raw(Value::Array(Vec::new()));
    let mut members: std::collections::HashMap<&str, Box<RawValue>> =
        std::collections::HashMap::new();
    let ws = &store.seed.workspace.slug;
    let mut out = Vec::with_capacity(1024);
    out.push(b'[');
    for (n, grant) in store
        .seed
        .group_grants
        .iter()
        .filter(|g| keep(g))
        .enumerate()
    {
        let group = store.group(&grant.group);
        let m: &RawValue = match group {
            Some(g) => members
                .entry(grant.group.as_str())
                .or_insert_with(|| raw(Value::Array(members_json(store, g)))),
            None => &empty,
        };
        let row = Row {
            group: Group {
                members: m,
                name: group.map_or(grant.group.as_str(), |g| g.name.as_str()),
                owner: &owner,
                slug: &grant.group,
            },
            privilege: &grant.permission,
            repo: format!("{ws}/{}", grant.repo),
            repository: Repository {
                name: store
                    .repo(&grant.repo)
                    .map_or(grant.repo.as_str(), |r| r.name.as_str()),
                owner: &owner,
                slug: &grant.repo,
            },
        };
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &row).expect("a row serializes to JSON");
    }
    out.push(b']');
    Reply {
        status: 200,
        body: crate::http::Body::RawJson(out),
        headers: Vec::new(),
        hidden_fields: Vec::new(),
    }
}

/// 1.0 group invitation object.
pub fn invitation_json(store: &Store, i: &SeedInvitation) -> Value {
    let name = store
        .group(&i.group)
        .map(|g| g.name.clone())
        .unwrap_or_else(|| i.group.clone());
    json!({
        "email": i.email,
        "group": {"name": name, "slug": i.group, "owner": owner_json(store)},
    })
}

fn email_param(req: &Req) -> Result<String, Reply> {
    let email = req.param("email").trim().to_string();
    if email.contains('@') && !email.starts_with('@') && !email.ends_with('@') {
        Ok(email)
    } else {
        Err(Reply::text(400, format!("Invalid email address: {email}")))
    }
}

/// Repository invitation POST body: exactly the form `permission=read|write|admin`.
fn parse_invitation_permission(req: &Req) -> Result<String, Reply> {
    let body = String::from_utf8_lossy(req.body);
    let pairs = form_pairs(body.trim());
    match pairs.as_slice() {
        [(k, v)] if k == "permission" && REPO_PERMISSIONS.contains(&v.as_str()) => Ok(v.clone()),
        _ => Err(Reply::text(
            400,
            "Bad request: the body must be the form permission=read|write|admin",
        )),
    }
}

fn invitations(store: &mut Store, req: &Req, id: RouteId) -> Result<Reply, Reply> {
    Ok(match id {
        RouteId::V1InvitationsList => {
            let list: Vec<Value> = store
                .seed
                .invitations
                .iter()
                .map(|i| invitation_json(store, i))
                .collect();
            Reply::json(200, Value::Array(list))
        }
        RouteId::V1InvitationsOfEmail => {
            let email = email_param(req)?;
            let list: Vec<Value> = store
                .seed
                .invitations
                .iter()
                .filter(|i| i.email.eq_ignore_ascii_case(&email))
                .map(|i| invitation_json(store, i))
                .collect();
            Reply::json(200, Value::Array(list))
        }
        RouteId::V1InvitationsDeleteEmail => {
            let email = email_param(req)?;
            let before = store.seed.invitations.len();
            store
                .seed
                .invitations
                .retain(|i| !i.email.eq_ignore_ascii_case(&email));
            if store.seed.invitations.len() == before {
                return Err(Reply::text(404, format!("No invitations for {email}")));
            }
            Reply::empty(204)
        }
        RouteId::V1InvitationPut | RouteId::V1InvitationDelete => {
            check_group_owner(store, req.param("group_owner"))?;
            let group = req.param("group");
            group_or_404(store, group)?;
            let email = email_param(req)?;
            let pos = store
                .seed
                .invitations
                .iter()
                .position(|i| i.group == group && i.email.eq_ignore_ascii_case(&email));
            if id == RouteId::V1InvitationPut {
                let inv = match pos {
                    Some(p) => store.seed.invitations[p].clone(),
                    None => {
                        let inv = SeedInvitation {
                            email,
                            group: group.to_string(),
                        };
                        store.seed.invitations.push(inv.clone());
                        inv
                    }
                };
                Reply::json(200, invitation_json(store, &inv))
            } else {
                let Some(p) = pos else {
                    return Err(Reply::text(
                        404,
                        format!("No invitation of {email} to {group}"),
                    ));
                };
                store.seed.invitations.remove(p);
                Reply::empty(204)
            }
        }
        RouteId::V1RepoInvitation => {
            let repo = req.param("repo").to_string();
            store.repo(&repo).ok_or_else(|| not_found("Repository"))?;
            let email = email_param(req)?;
            let permission = parse_invitation_permission(req)?;
            let existing = store
                .seed
                .repo_invitations
                .iter_mut()
                .find(|i| i.repo == repo && i.email.eq_ignore_ascii_case(&email));
            let inv = match existing {
                Some(i) => {
                    i.permission = permission;
                    i.clone()
                }
                None => {
                    let i = SeedRepoInvitation {
                        email,
                        repo,
                        permission,
                    };
                    store.seed.repo_invitations.push(i.clone());
                    i
                }
            };
            let repo_name = store
                .repo(&inv.repo)
                .map(|r| r.name.clone())
                .unwrap_or_else(|| inv.repo.clone());
            Reply::json(
                200,
                json!({
                    "email": inv.email,
                    "permission": inv.permission,
                    "repository": {"owner": owner_json(store), "name": repo_name, "slug": inv.repo},
                }),
            )
        }
        _ => Reply::text(404, "Not found"),
    })
}

pub fn handle(id: RouteId, store: &mut Store, req: &Req) -> Reply {
    match handle_inner(id, store, req) {
        Ok(r) | Err(r) => r,
    }
}

fn handle_inner(id: RouteId, store: &mut Store, req: &Req) -> Result<Reply, Reply> {
    let group = req.param("group");
    Ok(match id {
        RouteId::V1GroupsList => {
            let list: Vec<Value> = store
                .seed
                .groups
                .iter()
                .map(|g| group_json(store, g))
                .collect();
            Reply::json(200, Value::Array(list))
        }
        RouteId::V1GroupGet => {
            let g = group_or_404(store, group)?;
            Reply::json(200, group_json(store, g))
        }
        RouteId::V1GroupCreate => {
            let body = String::from_utf8_lossy(req.body);
            let name = form_pairs(&body)
                .into_iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v)
                .unwrap_or_default();
            let g = store.create_group(&name).map_err(err)?;
            Reply::json(200, group_json(store, &g))
        }
        RouteId::V1GroupUpdate => {
            group_or_404(store, group)?;
            let patch = parse_group_patch(req)?;
            let g = store.update_group(group, patch).map_err(err)?;
            Reply::json(200, group_json(store, &g))
        }
        RouteId::V1GroupDelete => {
            store.delete_group(group).map_err(err)?;
            Reply::empty(204)
        }
        RouteId::V1MembersList => {
            let g = group_or_404(store, group)?;
            Reply::json(200, Value::Array(members_json(store, g)))
        }
        RouteId::V1MemberAdd => {
            group_or_404(store, group)?;
            let account = member_account(store, req.param("member"))?;
            check_member_body(req)?;
            store.add_member(group, &account).map_err(err)?;
            let u = store
                .user_by_account(&account)
                .map(user_json)
                .unwrap_or(Value::Null);
            Reply::json(200, u)
        }
        RouteId::V1MemberRemove => {
            group_or_404(store, group)?;
            let account = member_account(store, req.param("member"))?;
            store.remove_member(group, &account).map_err(err)?;
            Reply::empty(204)
        }
        RouteId::V1GpAll => privileges(store, |_| true),
        RouteId::V1GpRepo => {
            let repo = req.param("repo");
            store.repo(repo).ok_or_else(|| not_found("Repository"))?;
            privileges(store, |g| g.repo == repo)
        }
        RouteId::V1GpGroup => {
            check_group_owner(store, req.param("group_owner"))?;
            group_or_404(store, group)?;
            privileges(store, |g| g.group == group)
        }
        RouteId::V1GpOne | RouteId::V1GpPut | RouteId::V1GpDelete => {
            let repo = req.param("repo");
            store.repo(repo).ok_or_else(|| not_found("Repository"))?;
            check_group_owner(store, req.param("group_owner"))?;
            group_or_404(store, group)?;
            match id {
                RouteId::V1GpOne => privileges(store, |g| g.repo == repo && g.group == group),
                RouteId::V1GpPut => {
                    let p = parse_privilege(req)?;
                    let grant = store.set_repo_group_grant(repo, group, &p).map_err(err)?;
                    Reply::json(200, json!([privilege_json(store, &grant)]))
                }
                _ => {
                    store.remove_repo_group_grant(repo, group).map_err(err)?;
                    Reply::empty(204)
                }
            }
        }
        RouteId::V1InvitationsList
        | RouteId::V1InvitationsOfEmail
        | RouteId::V1InvitationsDeleteEmail
        | RouteId::V1InvitationPut
        | RouteId::V1InvitationDelete
        | RouteId::V1RepoInvitation => invitations(store, req, id)?,
        _ => Reply::text(404, "Not found"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::seed::Seed;

    /// The listing written row by row is byte for byte the array of [`privilege_json`] rows.
    #[test]
    fn the_privileges_listing_is_the_json_of_its_rows() {
        let mut seed: Seed = serde_json::from_str(include_str!("../examples/seed.json")).unwrap();
        let (repo, group) = (
            seed.repositories[0].slug.clone(),
            seed.groups[0].slug().to_string(),
        );
        seed.repositories[0].name = "A \"quoted\" name".into();
        let extra = seed
            .repositories
            .iter()
            .map(|r| r.slug.clone())
            .find(|r| {
                !seed
                    .group_grants
                    .iter()
                    .any(|g| &g.repo == r && g.group == group)
            })
            .unwrap();
        seed.group_grants.push(crate::seed::SeedGroupGrant {
            repo: extra,
            group: group.clone(),
            permission: "admin".into(),
        });
        let store = Store::new(&seed).unwrap();
        assert!(store.seed.group_grants.len() >= 2, "the example has grants");
        for keep in [
            &(|_: &SeedGroupGrant| true) as &dyn Fn(&SeedGroupGrant) -> bool,
            &|g: &SeedGroupGrant| g.repo == repo,
            &|g: &SeedGroupGrant| g.group == group,
            &|_: &SeedGroupGrant| false,
        ] {
            let expected: Vec<Value> = store
                .seed
                .group_grants
                .iter()
                .filter(|g| keep(g))
                .map(|g| privilege_json(&store, g))
                .collect();
            let crate::http::Body::RawJson(bytes) = privileges(&store, keep).body else {
                panic!("a raw body");
            };
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                serde_json::to_string(&Value::Array(expected)).unwrap()
            );
        }
    }
}
