//! End-to-end tests of the emulator over real HTTP.
#![allow(clippy::unwrap_used)]

mod support;

use bbsync_emulator::{Emulator, Seed};
use serde_json::{json, Value};
use std::time::Duration;
use support::{Client, RequestBuilder, Response};

const OWNER: &str = "557058:owner";
const ADMIN: &str = "557058:admin";
const MEMBER: &str = "557058:member";
const LONER: &str = "557058:loner";
const ADMIN_UUID: &str = "{aaaaaaaa-0000-4000-8000-000000000002}";
const MEMBER_UUID: &str = "{aaaaaaaa-0000-4000-8000-000000000003}";
const LONER_UUID: &str = "{aaaaaaaa-0000-4000-8000-000000000004}";

const FULL_SCOPES: &[&str] = bbsync_emulator::auth::API_TOKEN_SCOPES;

fn seed_json() -> Value {
    let mut repos = Vec::new();
    for i in 0..12 {
        let project = if i % 3 == 0 { "P1" } else { "P2" };
        repos.push(json!({"slug": format!("repo-{i:02}"), "project": project}));
    }
    json!({
        "workspace": {"slug": "acme", "uuid": "{11111111-2222-4333-8444-555555555555}", "name": "Acme",
                      "owner": OWNER, "admins": [ADMIN]},
        "users": [
            {"account_id": OWNER, "uuid": "{aaaaaaaa-0000-4000-8000-000000000001}", "display_name": "Olivia", "email": "olivia@acme.test"},
            {"account_id": ADMIN, "uuid": ADMIN_UUID, "display_name": "Ann Lee", "nickname": "ann", "email": "ann@acme.test"},
            {"account_id": MEMBER, "uuid": MEMBER_UUID, "display_name": "Bob", "email": "bob@acme.test"},
            {"account_id": LONER, "uuid": LONER_UUID, "display_name": "Lou", "email": "lou@acme.test"}
        ],
        "projects": [{"key": "P1", "name": "One"}, {"key": "P2", "name": "Two"}],
        "repositories": repos,
        "groups": [
            {"name": "Developers", "members": [ADMIN, MEMBER]},
            {"name": "Web Team", "members": []}
        ],
        "group_grants": [{"repo": "repo-00", "group": "developers", "permission": "write"}],
        "credentials": [
            {"id": "admin-token", "kind": "api_token", "email": "ann@acme.test", "token": "s3cret",
             "account_id": ADMIN, "scopes": FULL_SCOPES},
            {"id": "limited-token", "kind": "api_token", "email": "ann@acme.test", "token": "limited",
             "account_id": ADMIN, "scopes": ["read:repository:bitbucket"]},
            {"id": "member-token", "kind": "api_token", "email": "bob@acme.test", "token": "bobtok",
             "account_id": MEMBER, "scopes": FULL_SCOPES},
            {"id": "ws-token", "kind": "access_token", "token": "at-123", "scopes": ["repository"]},
            {"id": "consumer", "kind": "oauth_consumer", "key": "k", "secret": "s", "account_id": ADMIN,
             "scopes": ["account", "account:write", "repository", "repository:admin", "project", "project:admin"],
             "token_ttl_secs": 1}
        ],
        "default_pagelen": 10
    })
}

fn seed() -> Seed {
    serde_json::from_value(seed_json()).unwrap()
}

async fn start_with(seed: Seed) -> (Emulator, Client, String) {
    let emu = Emulator::start(seed, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = emu.base_url();
    (emu, Client::new(), base)
}

async fn start() -> (Emulator, Client, String) {
    start_with(seed()).await
}

trait Auth {
    fn admin(self) -> Self;
    fn member(self) -> Self;
    fn limited(self) -> Self;
    fn access(self) -> Self;
}

impl Auth for RequestBuilder {
    fn admin(self) -> Self {
        self.basic_auth("ann@acme.test", Some("s3cret"))
    }
    fn member(self) -> Self {
        self.basic_auth("bob@acme.test", Some("bobtok"))
    }
    fn limited(self) -> Self {
        self.basic_auth("ann@acme.test", Some("limited"))
    }
    fn access(self) -> Self {
        self.bearer_auth("at-123")
    }
}

async fn status_text(r: Response) -> (u16, String, String) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap())
}

async fn json_of(r: Response) -> (u16, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn auth_kinds() {
    let (emu, c, base) = start().await;
    let url = format!("{base}/2.0/repositories/acme");
    let r = c.get(&url).admin().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-credential-type"], "apitoken");
    assert!(r.headers()["x-oauth-scopes"]
        .to_str()
        .unwrap()
        .contains("read:repository:bitbucket"));
    // API token as Bearer, wrong token, nothing at all.
    assert_eq!(
        c.get(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let bad = c.get(&url).basic_auth("ann@acme.test", Some("nope"));
    assert_eq!(bad.send().await.unwrap().status(), 401);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let (s, ct, _) = status_text(
        c.get(format!("{base}/1.0/groups/acme"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, ct.starts_with("text/plain")), (401, true));

    // Access token: repositories and members yes, any permissions endpoint no.
    let r = c.get(&url).access().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-credential-type"], "access_token");
    let members = c
        .get(format!("{base}/2.0/workspaces/acme/members"))
        .access();
    assert_eq!(members.send().await.unwrap().status(), 200);
    for path in [
        "/1.0/groups/acme",
        "/1.0/group-privileges/acme",
        "/2.0/repositories/acme/repo-00/permissions-config/groups",
        "/2.0/workspaces/acme/permissions",
        "/2.0/workspaces/acme/permissions/repositories",
        "/2.0/workspaces/acme/projects/P1/permissions-config/users",
    ] {
        let r = c
            .get(format!("{base}{path}"))
            .access()
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let counts = emu.request_counts();
    assert_eq!(counts["GET /2.0/repositories/{ws}"], 5);
    assert_eq!(counts["GET /1.0/groups/{ws}"], 2);
    let recs = emu.requests();
    assert_eq!(recs[0].credential.as_deref(), Some("admin-token"));
    assert_eq!(recs[1].credential, None);
    assert_eq!(recs[0].path, "/2.0/repositories/acme");
    emu.shutdown().await;
}

#[tokio::test]
async fn oauth_tokens_and_expiry() {
    let (emu, c, base) = start().await;
    let token_url = format!("{base}/site/oauth2/access_token");
    let r = c
        .post(&token_url)
        .basic_auth("k", Some("s"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let (s, body) = json_of(r).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1);
    assert!(body["scopes"].as_str().unwrap().contains("account:write"));
    let token = body["access_token"].as_str().unwrap().to_string();

    let (s, body) = json_of(
        c.post(&token_url)
            .basic_auth("k", Some("wrong"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));
    let (s, body) = json_of(
        c.post(&token_url)
            .basic_auth("k", Some("s"))
            .form(&[("grant_type", "password")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    let groups = format!("{base}/1.0/groups/acme");
    let r = c.get(&groups).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-credential-type"], "oauth2");
    // OAuth can read permissions-config but never write it.
    let pc = format!("{base}/2.0/repositories/acme/repo-00/permissions-config/groups/developers");
    assert_eq!(
        c.get(&pc)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let put = c
        .put(&pc)
        .bearer_auth(&token)
        .json(&json!({"permission": "read"}));
    assert_eq!(put.send().await.unwrap().status(), 403);
    assert_eq!(
        c.delete(&pc)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    emu.advance_time(Duration::from_millis(1100));
    let (s, _, body) = status_text(c.get(&groups).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(s, 401);
    assert_eq!(
        body,
        "Access token expired. Use your refresh token to obtain a new access token."
    );
    assert_eq!(emu.request_counts()["POST /site/oauth2/access_token"], 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn scope_and_admin_refusals() {
    let (emu, c, base) = start().await;
    // 1.0: plain text naming the missing scope.
    let (s, ct, body) = status_text(
        c.get(format!("{base}/1.0/groups/acme"))
            .limited()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    assert!(ct.starts_with("text/plain"));
    assert!(body.contains("read:permission:bitbucket"), "{body}");
    // 2.0: JSON detail and accepted-scopes header.
    let r = c
        .get(format!(
            "{base}/2.0/repositories/acme/repo-00/permissions-config/groups"
        ))
        .limited()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["x-accepted-oauth-scopes"],
        "admin:repository:bitbucket, read:permission:bitbucket"
    );
    let (_, body) = json_of(r).await;
    assert_eq!(body["type"], "error");
    assert_eq!(
        body["error"]["detail"]["required"],
        json!(["admin:repository:bitbucket", "read:permission:bitbucket"])
    );
    assert_eq!(
        body["error"]["detail"]["granted"],
        json!(["read:repository:bitbucket"])
    );
    // Non-admin with every scope.
    let (s, ct, _) = status_text(
        c.get(format!("{base}/1.0/groups/acme"))
            .member()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, ct.starts_with("text/plain")), (403, true));
    let (s, body) = json_of(
        c.get(format!(
            "{base}/2.0/repositories/acme/repo-00/permissions-config/users"
        ))
        .member()
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(body["type"], "error");
    // But a member can list repositories.
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .member()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn workspace_segment() {
    let (emu, c, base) = start().await;
    let uuid = "%7B11111111-2222-4333-8444-555555555555%7D";
    let r = c
        .get(format!("{base}/2.0/repositories/{uuid}"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{base}/1.0/groups/{uuid}"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .get(format!("{base}/2.0/repositories/other"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{base}/2.0/teams/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{base}/2.0/repositories"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(emu.request_counts()["GET (unmatched)"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn repositories_paging_bbql_fields() {
    let (emu, c, base) = start().await;
    // Follow `next` across pages.
    let mut url = format!("{base}/2.0/repositories/acme?pagelen=5");
    let mut slugs = Vec::new();
    let mut pages = 0;
    loop {
        let (s, body) = json_of(c.get(&url).admin().send().await.unwrap()).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["size"], 12);
        pages += 1;
        for v in body["values"].as_array().unwrap() {
            slugs.push(v["slug"].as_str().unwrap().to_string());
            assert_eq!(
                v["full_name"],
                format!("acme/{}", v["slug"].as_str().unwrap())
            );
        }
        match body["next"].as_str() {
            Some(n) => {
                assert!(n.starts_with(&base), "{n}");
                url = n.to_string();
            }
            None => break,
        }
    }
    assert_eq!((pages, slugs.len()), (3, 12));
    // pagelen limits.
    for bad in ["101", "0", "ten"] {
        let r = c
            .get(format!("{base}/2.0/repositories/acme"))
            .query(&[("pagelen", bad)])
            .admin()
            .send()
            .await
            .unwrap();
        let (s, body) = json_of(r).await;
        assert_eq!(s, 400);
        assert_eq!(body["error"]["message"], "Invalid pagelen");
    }
    // BBQL.
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .query(&[("q", r#"project.key="P1""#), ("pagelen", "100")])
        .admin()
        .send()
        .await
        .unwrap();
    let (s, body) = json_of(r).await;
    assert_eq!(s, 200);
    let vals = body["values"].as_array().unwrap();
    assert_eq!(vals.len(), 4);
    assert!(vals.iter().all(|v| v["project"]["key"] == "P1"));
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .query(&[("q", r#"foo = "x""#)])
        .admin()
        .send()
        .await
        .unwrap();
    let (s, body) = json_of(r).await;
    assert_eq!(s, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("foo"));
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .query(&[("q", r#"slug = "x" AND"#)])
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .query(&[
            ("q", r#"project.key = "P1" OR slug ~ "-01""#),
            ("sort", "-slug"),
        ])
        .admin()
        .send()
        .await
        .unwrap();
    let (_, body) = json_of(r).await;
    assert_eq!(body["values"][0]["slug"], "repo-09");
    assert_eq!(body["size"], 5);
    // fields.
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .query(&[("fields", "next,values.slug,values.project.key")])
        .admin()
        .send()
        .await
        .unwrap();
    let (_, body) = json_of(r).await;
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{body}");
    assert!(obj["next"].as_str().unwrap().contains("fields="));
    assert_eq!(
        body["values"][0],
        json!({"slug": "repo-00", "project": {"key": "P1"}})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn members_cursor_and_email_query() {
    let (emu, c, base) = start().await;
    let mut url = format!("{base}/2.0/workspaces/acme/members?pagelen=3");
    let mut ids = Vec::new();
    loop {
        let (s, body) = json_of(c.get(&url).admin().send().await.unwrap()).await;
        assert_eq!(s, 200);
        assert!(
            body.get("page").is_none(),
            "cursor collections have no page"
        );
        for v in body["values"].as_array().unwrap() {
            assert_eq!(v["type"], "workspace_membership");
            assert!(v["user"].get("email").is_none());
            ids.push(v["user"]["account_id"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(n) => {
                assert!(n.contains("cursor="));
                url = n.to_string();
            }
            None => break,
        }
    }
    assert_eq!(ids, vec![OWNER, ADMIN, MEMBER, LONER]);
    // A client building page URLs itself fails.
    let r = c
        .get(format!("{base}/2.0/workspaces/acme/members?cursor=2"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Email query.
    let q = r#"user.email IN ("ANN@acme.test", "nobody@x.test", "bob@acme.test")"#;
    let r = c
        .get(format!("{base}/2.0/workspaces/acme/members"))
        .query(&[("q", q), ("fields", "+values.user.email")])
        .access()
        .send()
        .await
        .unwrap();
    let (s, body) = json_of(r).await;
    assert_eq!(s, 200, "{body}");
    let vals = body["values"].as_array().unwrap();
    assert_eq!(vals.len(), 2);
    assert_eq!(vals[0]["user"]["email"], "ann@acme.test");
    assert_eq!(vals[0]["user"]["account_id"], ADMIN);
    let r = c
        .get(format!("{base}/2.0/workspaces/acme/members"))
        .query(&[("q", q)])
        .admin()
        .send()
        .await
        .unwrap();
    let (_, body) = json_of(r).await;
    assert!(body["values"][0]["user"].get("email").is_none());
    // Non-admin user token may not query by email.
    let r = c
        .get(format!("{base}/2.0/workspaces/acme/members"))
        .query(&[("q", q)])
        .member()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // More than 90 addresses.
    let many: Vec<String> = (0..91).map(|i| format!("\"u{i}@x.test\"")).collect();
    let q = format!("user.email IN ({})", many.join(","));
    let r = c
        .get(format!("{base}/2.0/workspaces/acme/members"))
        .query(&[("q", q.as_str())])
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // One member by uuid or account_id.
    for id in [
        MEMBER_UUID.replace('{', "%7B").replace('}', "%7D"),
        MEMBER.to_string(),
    ] {
        let r = c
            .get(format!("{base}/2.0/workspaces/acme/members/{id}"))
            .admin()
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
    }
    let r = c
        .get(format!("{base}/2.0/workspaces/acme/members/557058:ghost"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn v1_groups_and_members() {
    let (emu, c, base) = start().await;
    let r = c
        .post(format!("{base}/1.0/groups/acme"))
        .form(&[("name", "Release Managers")])
        .admin()
        .send()
        .await
        .unwrap();
    let (s, g) = json_of(r).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["slug"], "release-managers");
    assert_eq!(g["owner"]["is_team"], true);
    let (_, list) = json_of(
        c.get(format!("{base}/1.0/groups/acme/"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[0]["members"][0]["uuid"], ADMIN_UUID);
    let (s, ct, _) = status_text(
        c.post(format!("{base}/1.0/groups/acme"))
            .form(&[("name", "release managers")])
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, ct.starts_with("text/plain")), (400, true));

    let member_url = |who: &str| {
        format!(
            "{base}/1.0/groups/acme/release-managers/members/{}",
            who.replace('{', "%7B").replace('}', "%7D")
        )
    };
    // Add with `{}` JSON, then again -> 409 plain text.
    let r = c
        .put(member_url(MEMBER_UUID))
        .header("content-type", "application/json")
        .body("{}")
        .admin()
        .send()
        .await
        .unwrap();
    let (s, u) = json_of(r).await;
    assert_eq!(s, 200);
    assert_eq!(u["account_id"], MEMBER);
    assert_eq!(u["resource_uri"], format!("/1.0/users/{MEMBER_UUID}"));
    let (s, ct, _) =
        status_text(c.put(member_url(MEMBER_UUID)).admin().send().await.unwrap()).await;
    assert_eq!((s, ct.starts_with("text/plain")), (409, true));
    // No body works; account_id in the uuid slot does not; other bodies are refused.
    assert_eq!(
        c.put(member_url(LONER_UUID))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.put(member_url(ADMIN))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .put(member_url(ADMIN_UUID))
        .header("content-type", "application/json")
        .body(r#"{"x":1}"#)
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, members) = json_of(
        c.get(format!("{base}/1.0/groups/acme/release-managers/members"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(members.as_array().unwrap().len(), 2);
    assert_eq!(
        c.delete(member_url(MEMBER_UUID))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.delete(member_url(MEMBER_UUID))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Update (trailing slash) and delete.
    let r = c
        .put(format!("{base}/1.0/groups/acme/release-managers/"))
        .json(&json!({"name": "Release Mgmt", "permission": "read", "auto_add": false, "email_forwarding_disabled": true}))
        .admin()
        .send()
        .await
        .unwrap();
    let (s, g) = json_of(r).await;
    assert_eq!(s, 200);
    assert_eq!(
        (g["name"].as_str(), g["slug"].as_str()),
        (Some("Release Mgmt"), Some("release-managers"))
    );
    assert_eq!(g["permission"], "read");
    // Deleting a group removes its grants.
    let put = c
        .put(format!(
            "{base}/1.0/group-privileges/acme/repo-01/acme/release-managers"
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("read")
        .admin();
    assert_eq!(put.send().await.unwrap().status(), 200);
    let r = c
        .delete(format!("{base}/1.0/groups/acme/release-managers"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(emu
        .state()
        .group_grants
        .iter()
        .all(|g| g.group != "release-managers"));
    let (s, ct, _) = status_text(
        c.get(format!("{base}/1.0/groups/acme/release-managers"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, ct.starts_with("text/plain")), (404, true));
    emu.shutdown().await;
}

#[tokio::test]
async fn group_privileges_and_shared_store() {
    let (emu, c, base) = start().await;
    let url = format!("{base}/1.0/group-privileges/acme/repo-02/acme/developers");
    let put = |body: &'static str, ct: &'static str| {
        c.put(&url)
            .header("content-type", ct)
            .body(body)
            .admin()
            .send()
    };
    let (s, body) = json_of(
        put("write", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body[0]["repo"], "acme/repo-02");
    assert_eq!(body[0]["privilege"], "write");
    assert_eq!(body[0]["group"]["slug"], "developers");
    for (b, ct) in [
        ("permission=write", "application/x-www-form-urlencoded"),
        ("\"write\"", "application/json"),
        ("{\"privilege\":\"write\"}", "application/json"),
        ("owner", "text/plain"),
    ] {
        let (s, ct2, _) = status_text(put(b, ct).await.unwrap()).await;
        assert_eq!((s, ct2.starts_with("text/plain")), (400, true), "{b}");
    }
    // Visible through 2.0 permissions-config.
    let pc = format!("{base}/2.0/repositories/acme/repo-02/permissions-config/groups/developers");
    let (s, body) = json_of(c.get(&pc).admin().send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(body["type"], "repository_group_permission");
    assert_eq!(body["permission"], "write");
    assert_eq!(body["group"]["full_slug"], "acme:developers");
    // 2.0 write visible through 1.0.
    let r = c
        .put(&pc)
        .json(&json!({"permission": "admin"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, all) = json_of(
        c.get(format!("{base}/1.0/group-privileges/acme"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .any(|p| p["repo"] == "acme/repo-02" && p["privilege"] == "admin"));
    let (_, by_repo) = json_of(
        c.get(format!("{base}/1.0/group-privileges/acme/repo-02"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(by_repo.as_array().unwrap().len(), 1);
    let (_, by_group) = json_of(
        c.get(format!("{base}/1.0/group-privileges/acme/acme/developers"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(by_group.as_array().unwrap().len(), 2);
    assert_eq!(c.delete(&url).admin().send().await.unwrap().status(), 204);
    assert_eq!(c.delete(&url).admin().send().await.unwrap().status(), 404);
    assert_eq!(c.get(&pc).admin().send().await.unwrap().status(), 404);
    let counts = emu.request_counts();
    assert_eq!(
        counts["PUT /1.0/group-privileges/{ws}/{repo}/{group_owner}/{group}"],
        5
    );
    assert_eq!(
        counts["GET /1.0/group-privileges/{ws}/{group_owner}/{group}"],
        1
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn organisation_managed_is_read_only() {
    let mut s = seed_json();
    s["workspace"]["organisation_managed"] = json!(true);
    let (emu, c, base) = start_with(serde_json::from_value(s).unwrap()).await;
    assert_eq!(
        c.get(format!("{base}/1.0/groups/acme"))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/1.0/group-privileges/acme"))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let writes = [
        c.post(format!("{base}/1.0/groups/acme"))
            .form(&[("name", "X")]),
        c.delete(format!("{base}/1.0/groups/acme/developers")),
        c.put(format!(
            "{base}/1.0/groups/acme/developers/members/%7Baaaaaaaa-0000-4000-8000-000000000004%7D"
        )),
        c.put(format!(
            "{base}/1.0/group-privileges/acme/repo-01/acme/developers"
        ))
        .body("read"),
    ];
    for w in writes {
        let (s, _, body) = status_text(w.admin().send().await.unwrap()).await;
        assert_eq!((s, body.as_str()), (405, "None"));
    }
    // permissions-config still writes.
    let r = c
        .put(format!(
            "{base}/2.0/repositories/acme/repo-01/permissions-config/groups/developers"
        ))
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn permissions_config_users_and_projects() {
    let mut s = seed_json();
    s["user_limit"] = json!(2); // admin and member are in a group already
    let (emu, c, base) = start_with(serde_json::from_value(s).unwrap()).await;
    let users = format!("{base}/2.0/repositories/acme/repo-03/permissions-config/users");
    let loner = format!(
        "{users}/{}",
        LONER_UUID.replace('{', "%7B").replace('}', "%7D")
    );
    assert_eq!(c.get(&loner).admin().send().await.unwrap().status(), 404);
    // Body strictness.
    for body in [
        json!({"permission": "none"}),
        json!({"permission": "owner"}),
        json!({"permission": "read", "extra": 1}),
        json!({}),
    ] {
        let r = c.put(&loner).json(&body).admin().send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let r = c
        .put(&loner)
        .header("content-type", "application/json")
        .body("read")
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Plan full: the loner has no access at all.
    let r = c
        .put(&loner)
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    // The member already has access: fine.
    let r = c
        .put(format!("{users}/{MEMBER}"))
        .json(&json!({"permission": "write"}))
        .admin()
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(r).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["type"], "repository_user_permission");
    assert_eq!(body["user"]["account_id"], MEMBER);
    // Owner and non-member.
    let (st, body) = json_of(
        c.put(format!("{users}/{OWNER}"))
            .json(&json!({"permission": "read"}))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("owner"));
    let r = c
        .put(format!("{users}/557058:ghost"))
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Listing: no BBQL; GET; DELETE twice.
    let (st, body) = json_of(c.get(&users).admin().send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(body["values"].as_array().unwrap().len(), 1);
    assert!(body.get("page").is_none());
    let r = c
        .get(&users)
        .query(&[("q", r#"permission="write""#)])
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        c.delete(format!("{users}/{MEMBER}"))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.delete(format!("{users}/{MEMBER}"))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Unknown repo / group.
    let r = c
        .get(format!(
            "{base}/2.0/repositories/acme/nope/permissions-config/groups"
        ))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!(
            "{base}/2.0/repositories/acme/repo-03/permissions-config/groups/nope"
        ))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Project grants.
    let pg = format!("{base}/2.0/workspaces/acme/projects/P2/permissions-config/groups/web-team");
    let (st, body) = json_of(
        c.put(&pg)
            .json(&json!({"permission": "create-repo"}))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["type"], "project_group_permission");
    assert_eq!(body["permission"], "create-repo");
    let (st, body) = json_of(
        c.get(format!(
            "{base}/2.0/workspaces/acme/projects/P2/permissions-config/groups"
        ))
        .admin()
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["values"][0]["group"]["slug"], "web-team");
    assert_eq!(
        c.put(&pg)
            .json(&json!({"permission": "none"}))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(c.delete(&pg).admin().send().await.unwrap().status(), 204);
    assert_eq!(c.get(&pg).admin().send().await.unwrap().status(), 404);
    let r = c
        .get(format!(
            "{base}/2.0/workspaces/acme/projects/NOPE/permissions-config/users"
        ))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Workspace roles.
    let (st, body) = json_of(
        c.get(format!("{base}/2.0/workspaces/acme/permissions"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    let roles: Vec<(&str, &str)> = body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["user"]["account_id"].as_str().unwrap(),
                v["permission"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (OWNER, "owner"),
            (ADMIN, "owner"),
            (MEMBER, "member"),
            (LONER, "member")
        ]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429() {
    let (emu, c, base) = start().await;
    emu.set_rate_limit(3);
    let url = format!("{base}/2.0/repositories/acme");
    // A refused (403) request counts too.
    assert_eq!(
        c.get(format!("{base}/1.0/groups/acme"))
            .member()
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    for _ in 0..2 {
        assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);
    }
    let r = c.get(&url).member().send().await.unwrap();
    assert!(r.headers().get("retry-after").is_none());
    let (s, ct, body) = status_text(r).await;
    assert_eq!(
        (s, ct.as_str(), body.as_str()),
        (
            429,
            "text/plain",
            "Rate limit for this resource has been exceeded"
        )
    );
    // Other credentials have their own window.
    assert_eq!(c.get(&url).admin().send().await.unwrap().status(), 200);
    // The window rolls.
    emu.advance_time(Duration::from_secs(3601));
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);
    // Through the inspection endpoint too.
    let r = c
        .post(format!("{base}/_emulator/rate-limit"))
        .json(&json!({"per_hour": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 429);
    emu.shutdown().await;
}

#[tokio::test]
async fn refused_requests_keep_the_window_closed() {
    let (emu, c, base) = start().await;
    emu.set_rate_limit(2);
    let url = format!("{base}/2.0/repositories/acme");
    for _ in 0..2 {
        assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);
    }
    emu.advance_time(Duration::from_secs(1800));
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 429);
    // The two allowed requests leave the window; the 429 half an hour later is still in it.
    emu.advance_time(Duration::from_secs(1800));
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);
    // That refusal and this request fill the window again: a 429 counts like any request.
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 429);
    // Retrying every ten minutes keeps it closed.
    for _ in 0..6 {
        emu.advance_time(Duration::from_secs(600));
        assert_eq!(c.get(&url).member().send().await.unwrap().status(), 429);
    }
    // Backing off a whole hour opens it.
    emu.advance_time(Duration::from_secs(3600));
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn retry_after_on_429_is_configurable() {
    use bbsync_emulator::RetryAfterMode;
    let (emu, c, base) = start().await;
    emu.set_rate_limit(2);
    let url = format!("{base}/2.0/repositories/acme");
    let retry_after = |r: &Response| {
        r.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string())
    };
    for _ in 0..2 {
        assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);
    }
    let r = c.get(&url).member().send().await.unwrap();
    assert_eq!((r.status(), retry_after(&r)), (429, None), "default: none");

    emu.set_retry_after(RetryAfterMode::Seconds);
    let r = c.get(&url).member().send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(retry_after(&r).as_deref(), Some("3600"));
    // The emulator clock moves it: 1000 s later the first second's requests leave in 2600 s.
    emu.advance_time(Duration::from_secs(1000));
    let r = c.get(&url).member().send().await.unwrap();
    assert_eq!(retry_after(&r).as_deref(), Some("2600"));
    // A client that waits exactly that long is served.
    emu.advance_time(Duration::from_secs(2600));
    assert_eq!(c.get(&url).member().send().await.unwrap().status(), 200);

    // HTTP date, through the control route.
    let r = c
        .post(format!("{base}/_emulator/retry-after"))
        .json(&json!({"mode": "http_date"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(&url).member().send().await.unwrap();
    assert_eq!(r.status(), 429);
    let date = httpdate::parse_http_date(&retry_after(&r).unwrap()).unwrap();
    // Window: the 429 at +1000 s, the 200 and this 429 at +3600 s: room only once the last
    // two leave, an hour from now, and the emulator clock is 3600 s ahead of the real one.
    let expected = std::time::SystemTime::now() + Duration::from_secs(3600 + 3600);
    let diff = date
        .duration_since(expected)
        .unwrap_or_else(|e| e.duration());
    assert!(diff <= Duration::from_secs(2), "{date:?} vs {expected:?}");
    let r = c
        .post(format!("{base}/_emulator/retry-after"))
        .json(&json!({"mode": "sometimes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    emu.set_retry_after(RetryAfterMode::None);
    let r = c.get(&url).member().send().await.unwrap();
    assert_eq!((r.status(), retry_after(&r)), (429, None));
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_delays_api_requests_only() {
    let (emu, c, base) = start().await;
    emu.set_latency(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // Control routes are not delayed.
    let t = std::time::Instant::now();
    let r = c
        .post(format!("{base}/_emulator/latency"))
        .json(&json!({"ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    c.get(format!("{base}/1.0/groups/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let r = c
        .post(format!("{base}/_emulator/latency"))
        .json(&json!({"ms": "slow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn latency_uses_tokio_time() {
    let (emu, c, base) = start().await;
    emu.set_latency(Duration::from_secs(30));
    let real = std::time::Instant::now();
    let virt = tokio::time::Instant::now();
    let r = c
        .get(format!("{base}/2.0/workspaces/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(virt.elapsed() >= Duration::from_secs(30));
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn inspection_endpoints() {
    let (emu, c, base) = start().await;
    c.get(format!("{base}/2.0/repositories/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    let (s, body) = json_of(
        c.get(format!("{base}/_emulator/requests"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["counts"]["GET /2.0/repositories/{ws}"], 1);
    assert_eq!(body["requests"][0]["credential"], "admin-token");
    let (s, state) = json_of(
        c.get(format!("{base}/_emulator/state"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(state["credentials"][0]["token"], "***");
    assert_eq!(state["groups"][1]["slug"], "web-team");
    assert!(!state.to_string().contains("s3cret"));
    assert_eq!(emu.state().credentials[0].token.as_deref(), Some("s3cret"));
    let r = c
        .post(format!("{base}/_emulator/requests/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(emu.requests().is_empty());
    assert!(emu.request_counts().is_empty());
    emu.shutdown().await;
}

// ----- faults -----

fn grant_of(emu: &Emulator, repo: &str, group: &str) -> Option<String> {
    emu.state()
        .group_grants
        .iter()
        .find(|g| g.repo == repo && g.group == group)
        .map(|g| g.permission.clone())
}

/// Status, headers and body of a raw answer, and the Content-Length it announced.
fn split_raw(raw: &[u8]) -> (u16, Option<usize>, Vec<u8>) {
    let r = support::parse_response(raw).unwrap();
    let len = r
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let status = r.status();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, len, raw[end..].to_vec())
}

#[tokio::test]
async fn status_faults_behave_as_before() {
    use bbsync_emulator::Fault;
    let (emu, c, base) = start().await;
    emu.set_rate_limit(1);
    emu.inject_fault(Fault {
        method: Some("PUT".into()),
        path_contains: "/permissions-config/groups/".into(),
        status: 503,
        body: "Service Unavailable".into(),
        ..Fault::default()
    });
    let url = format!("{base}/2.0/repositories/acme/repo-00/permissions-config/groups/developers");
    for _ in 0..3 {
        let r = c
            .put(&url)
            .json(&json!({"permission": "read"}))
            .admin()
            .send()
            .await
            .unwrap();
        let (s, ct, body) = status_text(r).await;
        assert_eq!(
            (s, ct.as_str(), body.as_str()),
            (503, "text/plain", "Service Unavailable")
        );
    }
    assert_eq!(
        grant_of(&emu, "repo-00", "developers").as_deref(),
        Some("write")
    );
    // No rate budget spent: the one request of the hour is still there.
    assert_eq!(c.get(&url).admin().send().await.unwrap().status(), 200);
    let log = emu.requests();
    assert_eq!(log[0].status, 503);
    assert_eq!(log[0].credential, None);
    assert_eq!(
        log[0].route,
        "/2.0/repositories/{ws}/{repo}/permissions-config/groups/{group}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_by_endpoint_family() {
    use bbsync_emulator::Fault;
    let (emu, c, base) = start().await;
    emu.inject_fault(Fault {
        family: Some("repo permissions-config write".into()),
        status: 502,
        body: "Bad Gateway".into(),
        ..Fault::default()
    });
    let grp = format!("{base}/2.0/repositories/acme/repo-00/permissions-config/groups/developers");
    assert_eq!(c.get(&grp).admin().send().await.unwrap().status(), 200);
    let r = c
        .put(&grp)
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Trailing slash: same route, same family.
    let r = c
        .put(format!("{grp}/"))
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let r = c.delete(&grp).admin().send().await.unwrap();
    assert_eq!(r.status(), 204, "delete is another family");
    let r = c
        .post(format!("{base}/1.0/groups/acme"))
        .form(&[("name", "Ops")])
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.clear_faults();
    // Names: the scope table's, dashes/underscores/case free, or the Rust variant's.
    for name in ["1.0_groups_write", "1.0 Groups Write", "GroupsWrite"] {
        emu.inject_fault(Fault {
            family: Some(name.into()),
            status: 500,
            times: Some(1),
            ..Fault::default()
        });
        let r = c
            .post(format!("{base}/1.0/groups/acme"))
            .form(&[("name", "Web")])
            .admin()
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "{name}");
    }
    let e = emu
        .try_inject_fault(Fault {
            family: Some("groups".into()),
            ..Fault::default()
        })
        .unwrap_err();
    assert!(e.contains("1.0 groups write"), "{e}");
    emu.shutdown().await;
}

#[tokio::test]
#[should_panic(expected = "invalid emulator fault")]
async fn an_invalid_fault_panics() {
    let (emu, _c, _base) = start().await;
    emu.inject_fault(bbsync_emulator::Fault {
        probability: Some(2.0),
        ..Default::default()
    });
}

#[tokio::test]
async fn reset_and_hang_close_without_an_answer() {
    use bbsync_emulator::{Fault, FaultKind};
    let (emu, c, base) = start().await;
    let url = format!("{base}/2.0/repositories/acme");
    emu.inject_fault(Fault {
        kind: FaultKind::Reset,
        path_contains: "/2.0/repositories/acme".into(),
        times: Some(1),
        ..Fault::default()
    });
    let raw = c.get(&url).admin().send_raw().await;
    assert!(raw.as_ref().map_or(true, |b| b.is_empty()), "{raw:?}");
    assert_eq!(c.get(&url).admin().send().await.unwrap().status(), 200);

    emu.inject_fault(Fault {
        kind: FaultKind::Hang,
        hang_ms: Some(300),
        times: Some(1),
        ..Fault::default()
    });
    let t = std::time::Instant::now();
    let raw = c.get(&url).admin().send_raw().await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert!(raw.as_ref().map_or(true, |b| b.is_empty()), "{raw:?}");

    // Without hang_ms: no answer at all, until the emulator stops.
    emu.inject_fault(Fault {
        kind: FaultKind::Hang,
        method: Some("DELETE".into()),
        ..Fault::default()
    });
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        c.delete(format!("{base}/1.0/groups/acme/developers"))
            .admin()
            .send_raw(),
    )
    .await;
    assert!(r.is_err(), "timed out");
    let log = emu.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 200, 0, 0]);
    assert!(log
        .iter()
        .filter(|r| r.status == 0)
        .all(|r| r.credential.is_none()));
    assert_eq!(emu.state().groups.len(), 2, "nothing deleted");
    // A hanging request does not hold up shutdown.
    let pending = tokio::spawn({
        let url = format!("{base}/1.0/groups/acme/developers");
        async move { Client::new().delete(url).admin().send_raw().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    emu.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let raw = pending.await.unwrap();
    assert!(raw.as_ref().map_or(true, |b| b.is_empty()), "{raw:?}");
}

#[tokio::test(start_paused = true)]
async fn hang_uses_tokio_time() {
    use bbsync_emulator::{Fault, FaultKind};
    let (emu, c, base) = start().await;
    emu.inject_fault(Fault {
        kind: FaultKind::Hang,
        hang_ms: Some(600_000),
        ..Fault::default()
    });
    let real = std::time::Instant::now();
    let virt = tokio::time::Instant::now();
    let raw = c
        .get(format!("{base}/2.0/workspaces/acme"))
        .admin()
        .send_raw()
        .await;
    assert!(raw.as_ref().map_or(true, |b| b.is_empty()), "{raw:?}");
    assert!(virt.elapsed() >= Duration::from_secs(600));
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn truncated_answers_are_cut_after_the_headers() {
    use bbsync_emulator::{Fault, FaultKind};
    let (emu, c, base) = start().await;
    emu.inject_fault(Fault {
        kind: FaultKind::Truncated,
        ..Fault::default()
    });
    let raw = c
        .get(format!("{base}/2.0/repositories/acme"))
        .admin()
        .send_raw()
        .await
        .unwrap();
    let (status, len, body) = split_raw(&raw);
    assert_eq!(status, 200);
    let len = len.unwrap();
    assert!(len > 100);
    assert_eq!(body.len(), len / 2);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    // A write is served for real; only its answer is cut.
    let grp = format!("{base}/2.0/repositories/acme/repo-00/permissions-config/groups/developers");
    let raw = c
        .put(&grp)
        .json(&json!({"permission": "admin"}))
        .admin()
        .send_raw()
        .await
        .unwrap();
    let (status, len, body) = split_raw(&raw);
    assert_eq!(status, 200);
    assert!(body.len() < len.unwrap());
    assert_eq!(
        grant_of(&emu, "repo-00", "developers").as_deref(),
        Some("admin")
    );
    // An answer without a body is cut in its status line.
    let raw = c.delete(&grp).admin().send_raw().await.unwrap();
    assert_eq!(raw, b"HTTP/1.1 204 No Content\r\n");
    assert_eq!(grant_of(&emu, "repo-00", "developers"), None);
    let log = emu.requests();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 204]
    );
    assert_eq!(log[1].credential.as_deref(), Some("admin-token"));
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn slow_answers_come_whole_in_pieces_on_tokio_time() {
    use bbsync_emulator::{Fault, FaultKind};
    let (emu, c, base) = start().await;
    let url = format!("{base}/2.0/repositories/acme");
    let plain = c.get(&url).admin().send_raw().await.unwrap();
    let (_, len, whole) = split_raw(&plain);
    assert_eq!(len, Some(whole.len()));
    emu.inject_fault(Fault {
        kind: FaultKind::Slow,
        chunk_bytes: Some(100),
        hang_ms: Some(1000),
        times: Some(1),
        ..Fault::default()
    });
    let real = std::time::Instant::now();
    let virt = tokio::time::Instant::now();
    let raw = c.get(&url).admin().send_raw().await.unwrap();
    let (status, slow_len, body) = split_raw(&raw);
    assert_eq!(status, 200);
    assert_eq!(slow_len, len, "the full Content-Length");
    assert_eq!(body, whole, "the same body, every byte of it");
    let waits = whole.len().div_ceil(100) as u64 - 1;
    assert!(
        virt.elapsed() >= Duration::from_secs(waits),
        "{:?}",
        virt.elapsed()
    );
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
    assert_eq!(emu.requests()[1].status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_and_html_answers_change_nothing() {
    use bbsync_emulator::{Fault, FaultKind};
    let (emu, c, base) = start().await;
    emu.inject_fault(Fault {
        kind: FaultKind::Malformed,
        method: Some("GET".into()),
        times: Some(1),
        ..Fault::default()
    });
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    let (s, ct, body) = status_text(r).await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");

    emu.inject_fault(Fault {
        kind: FaultKind::Html200,
        ..Fault::default()
    });
    let grp = format!("{base}/2.0/repositories/acme/repo-00/permissions-config/groups/developers");
    let r = c
        .put(&grp)
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    let (s, ct, body) = status_text(r).await;
    assert_eq!((s, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    let r = c
        .get(format!("{base}/1.0/groups/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    let (s, ct, _) = status_text(r).await;
    assert_eq!((s, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert_eq!(
        grant_of(&emu, "repo-00", "developers").as_deref(),
        Some("write")
    );
    assert!(emu
        .requests()
        .iter()
        .all(|r| r.status == 200 && r.credential.is_none()));
    // A body of one's own.
    emu.clear_faults();
    emu.inject_fault(Fault {
        kind: FaultKind::Malformed,
        body: "[1, 2".into(),
        ..Fault::default()
    });
    let (_, _, body) = status_text(
        c.get(format!("{base}/2.0/workspaces/acme"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body, "[1, 2");
    emu.shutdown().await;
}

#[tokio::test]
async fn lost_writes_answer_like_real_ones_and_change_nothing() {
    use bbsync_emulator::{Fault, FaultKind};
    let (emu, c, base) = start().await;
    let grp = |repo: &str| {
        format!("{base}/2.0/repositories/acme/{repo}/permissions-config/groups/developers")
    };
    // The real answer, for comparison.
    let r = c
        .put(grp("repo-01"))
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    let (_, real) = json_of(r).await;
    emu.inject_fault(Fault {
        kind: FaultKind::LostWrite,
        ..Fault::default()
    });
    let r = c
        .put(grp("repo-02"))
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-credential-type").is_some());
    let (s, lost) = json_of(r).await;
    assert_eq!(s, 200);
    assert_eq!(
        lost.to_string(),
        real.to_string().replace("repo-01", "repo-02")
    );
    assert_eq!(
        grant_of(&emu, "repo-02", "developers"),
        None,
        "never applied"
    );
    // A lost group create: 200 with the new group, no group; a client re-reading finds none.
    let r = c
        .post(format!("{base}/1.0/groups/acme"))
        .form(&[("name", "Ops")])
        .admin()
        .send()
        .await
        .unwrap();
    let (s, body) = json_of(r).await;
    assert_eq!((s, body["slug"].as_str()), (200, Some("ops")));
    assert!(emu.state().groups.iter().all(|g| g.name != "Ops"));
    // Errors are answered as the real request would (a 404 for an unknown group).
    let r = c
        .put(format!(
            "{base}/2.0/repositories/acme/repo-02/permissions-config/groups/nobody"
        ))
        .json(&json!({"permission": "read"}))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Reads are served as usual.
    let (s, body) = json_of(c.get(grp("repo-01")).admin().send().await.unwrap()).await;
    assert_eq!((s, body["permission"].as_str()), (200, Some("read")));
    // Recorded as served, with the credential, and the rate budget is spent.
    let log = emu.requests();
    assert!(log[1..]
        .iter()
        .all(|r| r.credential.as_deref() == Some("admin-token")));
    assert_eq!(log[2].status, 200);
    emu.set_rate_limit(log.len() as u32 + 1);
    assert_eq!(
        c.get(grp("repo-01")).admin().send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(grp("repo-01")).admin().send().await.unwrap().status(),
        429
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn broken_next_links() {
    use bbsync_emulator::{BrokenNextMode, Fault, FaultKind};
    let (emu, c, base) = start().await;
    let members = format!("{base}/2.0/workspaces/acme/members?pagelen=1");
    let repos = format!("{base}/2.0/repositories/acme?pagelen=5");
    let next_of = |body: &Value| body["next"].as_str().unwrap().to_string();
    let broken = |mode| Fault {
        kind: FaultKind::BrokenNext,
        broken_next: mode,
        times: Some(1),
        ..Fault::default()
    };

    // bad_request: a cursor never handed out (cursor collection) or page=0 (numbered).
    emu.inject_fault(broken(BrokenNextMode::BadRequest));
    let (s, body) = json_of(c.get(&members).admin().send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(body["values"].as_array().unwrap().len(), 1);
    let (s, err) = json_of(c.get(next_of(&body)).admin().send().await.unwrap()).await;
    assert_eq!(s, 400);
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["message"], "Invalid cursor");
    emu.inject_fault(broken(BrokenNextMode::BadRequest));
    let (_, body) = json_of(c.get(&repos).admin().send().await.unwrap()).await;
    assert!(next_of(&body).ends_with("page=0"), "{body}");
    let (s, err) = json_of(c.get(next_of(&body)).admin().send().await.unwrap()).await;
    assert_eq!(
        (s, err["error"]["message"].as_str()),
        (400, Some("Invalid page"))
    );

    // not_found.
    emu.inject_fault(broken(BrokenNextMode::NotFound));
    let (_, body) = json_of(c.get(&repos).admin().send().await.unwrap()).await;
    let (s, err) = json_of(c.get(next_of(&body)).admin().send().await.unwrap()).await;
    assert_eq!(s, 404);
    assert_eq!(err["type"], "error");

    // same_page: following it serves the same page again.
    emu.inject_fault(broken(BrokenNextMode::SamePage));
    let (_, first) = json_of(c.get(&members).admin().send().await.unwrap()).await;
    assert_eq!(next_of(&first), members);
    let (_, again) = json_of(c.get(next_of(&first)).admin().send().await.unwrap()).await;
    assert_eq!(again["values"], first["values"]);
    // Used up: the next link is good again.
    let (_, second) = json_of(c.get(next_of(&again)).admin().send().await.unwrap()).await;
    assert_ne!(second["values"], first["values"]);

    // A page without `next` does not use the fault up; writes and 1.0 never match it.
    emu.clear_faults();
    emu.inject_fault(broken(BrokenNextMode::NotFound));
    let (_, last) = json_of(
        c.get(format!("{base}/2.0/repositories/acme?pagelen=100"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(last.get("next").is_none());
    assert_eq!(
        c.get(format!("{base}/1.0/groups/acme"))
            .admin()
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(emu.faults()[0].times, Some(1));
    let (_, body) = json_of(c.get(&repos).admin().send().await.unwrap()).await;
    assert!(
        next_of(&body).contains("/2.0/_gone/repositories/acme"),
        "{body}"
    );
    assert_eq!(emu.faults()[0].times, Some(0));
    emu.shutdown().await;
}

async fn statuses_with_probability(seed: Option<u64>, set_seed: Option<u64>) -> Vec<u16> {
    use bbsync_emulator::Fault;
    let mut s = seed_json();
    if let Some(seed) = seed {
        s["fault_seed"] = json!(seed);
    }
    let (emu, c, base) = start_with(serde_json::from_value(s).unwrap()).await;
    if let Some(seed) = set_seed {
        emu.set_fault_seed(seed);
    }
    emu.inject_fault(Fault {
        path_contains: "/2.0/workspaces/acme".into(),
        status: 500,
        probability: Some(0.3),
        ..Fault::default()
    });
    let mut out = Vec::new();
    for _ in 0..40 {
        let r = c
            .get(format!("{base}/2.0/workspaces/acme"))
            .admin()
            .send()
            .await
            .unwrap();
        out.push(r.status());
        // Requests the fault does not match draw nothing.
        c.get(format!("{base}/2.0/repositories/acme"))
            .admin()
            .send()
            .await
            .unwrap();
    }
    emu.shutdown().await;
    out
}

#[tokio::test]
async fn fault_probability_is_deterministic_for_a_seed() {
    let a = statuses_with_probability(Some(7), None).await;
    assert_eq!(a, statuses_with_probability(Some(7), None).await);
    assert_eq!(a, statuses_with_probability(None, Some(7)).await);
    assert_ne!(a, statuses_with_probability(Some(8), None).await);
    let fired = a.iter().filter(|s| **s == 500).count();
    assert!((3..=25).contains(&fired), "{a:?}");
    assert!(a.iter().all(|s| *s == 200 || *s == 500));
    // No seed at all: the default one, deterministic too.
    assert_eq!(
        statuses_with_probability(None, None).await,
        statuses_with_probability(Some(bbsync_emulator::DEFAULT_FAULT_SEED), None).await
    );
}

#[tokio::test]
async fn fault_control_routes() {
    let (emu, c, base) = start().await;
    let post = |body: Value| {
        c.post(format!("{base}/_emulator/faults"))
            .json(&body)
            .send()
    };
    let r = post(json!({"kind": "reset", "family": "members read", "times": 1}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = post(json!({"status": 503, "body": "down", "method": "GET", "path_contains": "/1.0/"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for bad in [
        json!({"family": "nope"}),
        json!({"probability": -0.5}),
        json!({"kind": "explode"}),
        json!({"stauts": 503}),
    ] {
        let r = post(bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let (s, list) = json_of(
        c.get(format!("{base}/_emulator/faults"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["kind"], "reset");
    assert_eq!(emu.faults()[1].status, 503);
    let raw = c
        .get(format!("{base}/2.0/workspaces/acme/members"))
        .admin()
        .send_raw()
        .await;
    assert!(raw.as_ref().map_or(true, |b| b.is_empty()));
    let r = c
        .get(format!("{base}/1.0/groups/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = c
        .delete(format!("{base}/_emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(emu.faults().is_empty());
    let r = c
        .get(format!("{base}/1.0/groups/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{base}/_emulator/fault-seed"))
        .json(&json!({"seed": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(emu.state().fault_seed, Some(99));
    emu.shutdown().await;
}

#[tokio::test]
async fn cursors_are_signed_and_bound_to_their_collection() {
    use base64::Engine as _;
    let (emu, c, base) = start().await;
    let (other, _, other_base) = start().await;
    let repo_groups =
        |repo: &str| format!("{base}/2.0/repositories/acme/{repo}/permissions-config/groups");
    for repo in ["repo-00", "repo-01"] {
        for g in ["developers", "web-team"] {
            let r = c
                .put(format!("{}/{g}", repo_groups(repo)))
                .json(&json!({"permission": "read"}))
                .admin()
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let cursor_of = |body: &Value| {
        let next = body["next"].as_str().unwrap();
        assert!(!next.contains("page="), "{next}");
        next.rsplit("cursor=").next().unwrap().to_string()
    };
    let first = |url: String| {
        let c = c.clone();
        async move {
            let (s, body) = json_of(c.get(url).admin().send().await.unwrap()).await;
            assert_eq!(s, 200, "{body}");
            body
        }
    };
    let members = format!("{base}/2.0/workspaces/acme/members");
    let m_cursor = cursor_of(&first(format!("{members}?pagelen=1")).await);
    let g_cursor = cursor_of(&first(format!("{}?pagelen=1", repo_groups("repo-00"))).await);
    let p_cursor = {
        let p = format!("{base}/2.0/workspaces/acme/projects/P1/permissions-config/users");
        for id in [ADMIN, MEMBER] {
            c.put(format!("{p}/{id}"))
                .json(&json!({"permission": "read"}))
                .admin()
                .send()
                .await
                .unwrap();
        }
        cursor_of(&first(format!("{p}?pagelen=1")).await)
    };
    assert_ne!(m_cursor, g_cursor);

    let refused = |url: String| {
        let c = c.clone();
        async move {
            let (s, body) = json_of(c.get(&url).admin().send().await.unwrap()).await;
            assert_eq!(s, 400, "{url}: {body}");
            assert_eq!(body["type"], "error", "{url}");
            assert_eq!(body["error"]["message"], "Invalid cursor", "{url}");
        }
    };
    // The genuine ones work where they came from.
    let (s, _) = json_of(
        c.get(format!("{members}?pagelen=1&cursor={m_cursor}"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    // Forged: the old unsigned format, a bare number.
    let unsigned = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("bbsync-emu:1");
    refused(format!("{members}?pagelen=1&cursor={unsigned}")).await;
    refused(format!("{members}?pagelen=1&cursor=1")).await;
    // Edited: one character changed.
    let mut edited = m_cursor.clone().into_bytes();
    edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    refused(format!("{members}?pagelen=1&cursor={edited}")).await;
    // Another collection: members <-> permissions-config, one repository's <-> another's,
    // project grants.
    refused(format!(
        "{}?pagelen=1&cursor={m_cursor}",
        repo_groups("repo-00")
    ))
    .await;
    refused(format!(
        "{}?pagelen=1&cursor={g_cursor}",
        repo_groups("repo-01")
    ))
    .await;
    refused(format!(
        "{base}/2.0/repositories/acme/repo-00/permissions-config/users?pagelen=1&cursor={g_cursor}"
    ))
    .await;
    refused(format!("{members}?pagelen=1&cursor={p_cursor}")).await;
    // Another query: a different q or pagelen.
    refused(format!("{members}?pagelen=2&cursor={m_cursor}")).await;
    refused(format!(
        "{members}?pagelen=1&q={}&cursor={m_cursor}",
        support::encode(r#"user.nickname = "ann""#)
    ))
    .await;
    // Another emulator (another key).
    let (s, body) = json_of(
        c.get(format!(
            "{other_base}/2.0/workspaces/acme/members?pagelen=1&cursor={m_cursor}"
        ))
        .admin()
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["error"]["message"].as_str()),
        (400, Some("Invalid cursor"))
    );
    // Following `next` as given walks the whole collection, `previous` too.
    let mut url = format!("{}?pagelen=1", repo_groups("repo-01"));
    let mut slugs = Vec::new();
    let last = loop {
        let body = first(url.clone()).await;
        slugs.push(
            body["values"][0]["group"]["slug"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        match body["next"].as_str() {
            Some(n) => url = n.to_string(),
            None => break body,
        }
    };
    assert_eq!(slugs, ["developers", "web-team"]);
    let prev = first(last["previous"].as_str().unwrap().to_string()).await;
    assert_eq!(prev["values"][0]["group"]["slug"], "developers");
    emu.shutdown().await;
    other.shutdown().await;
}
