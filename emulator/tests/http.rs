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

const FULL_SCOPES: &[&str] = &[
    "read:repository:bitbucket",
    "admin:repository:bitbucket",
    "read:project:bitbucket",
    "admin:project:bitbucket",
    "read:workspace:bitbucket",
    "read:permission:bitbucket",
    "write:permission:bitbucket",
    "delete:permission:bitbucket",
];

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
