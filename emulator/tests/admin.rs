//! End-to-end tests of the Atlassian Admin API (`/admin`) and the 1.0 invitations over real HTTP.
#![allow(clippy::unwrap_used)]

mod support;

use bbsync_emulator::{Emulator, Fault, Seed};
use serde_json::{json, Value};
use std::time::Duration;
use support::{Client, RequestBuilder, Response};

const OWNER: &str = "557058:owner";
const ANN: &str = "557058:ann";
const BOB: &str = "557058:bob";
const CHEN: &str = "557058:chen";
const DANA: &str = "557058:dana";
const KEY: &str = "org-key-1";
const FULL_SCOPES: &[&str] = bbsync_emulator::auth::API_TOKEN_SCOPES;

fn users() -> Value {
    json!([
        {"account_id": OWNER, "display_name": "Olivia", "email": "olivia@acme.test"},
        {"account_id": ANN, "display_name": "Ann Lee", "nickname": "ann", "email": "Ann@Acme.test"},
        {"account_id": BOB, "display_name": "Bob", "email": "bob@acme.test"},
        {"account_id": CHEN, "display_name": "Chen", "email": "chen@acme.test"},
        {"account_id": DANA, "display_name": "Dana", "email": "dana@acme.test"}
    ])
}

fn credentials() -> Value {
    json!([
        {"id": "admin-token", "kind": "api_token", "email": "ann@acme.test", "token": "s3cret",
         "account_id": ANN, "scopes": FULL_SCOPES},
        {"id": "ws-token", "kind": "access_token", "token": "at-123", "scopes": ["repository"]},
        {"id": "org-key", "kind": "admin_api_key", "token": KEY}
    ])
}

/// A classic workspace whose organisation's directory has its own groups.
fn classic_json() -> Value {
    json!({
        "workspace": {"slug": "acme", "owner": OWNER, "admins": [ANN]},
        "organisation": {
            "id": "org-1", "name": "Acme Org", "suspended": [DANA],
            "groups": [
                {"name": "Engineers", "id": "g-eng", "members": [ANN, BOB]},
                {"name": "Designers", "members": [CHEN]},
                {"name": "Okta All", "id": "g-okta", "idp_synced": true, "members": [ANN]},
                {"name": "Empty"}
            ]
        },
        "users": users(),
        "projects": [{"key": "P"}],
        "repositories": [{"slug": "api", "project": "P"}],
        "groups": [{"name": "Developers", "members": [BOB]}],
        "invitations": [{"email": "new@x.test", "group": "developers"}],
        "credentials": credentials()
    })
}

fn org_managed_json() -> Value {
    let mut v = classic_json();
    v["workspace"]["organisation_managed"] = json!(true);
    v["organisation"] = json!({"id": "org-1"});
    v["groups"] = json!([
        {"name": "Developers", "members": [BOB]},
        {"name": "Synced", "idp_synced": true}
    ]);
    v["invitations"] = json!([]);
    v
}

async fn start(seed: Value) -> (Emulator, Client, String) {
    let seed: Seed = serde_json::from_value(seed).unwrap();
    let emu = Emulator::start(seed, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = emu.base_url();
    (emu, Client::new(), base)
}

trait Auth {
    fn key(self) -> Self;
    fn admin(self) -> Self;
}

impl Auth for RequestBuilder {
    fn key(self) -> Self {
        self.bearer_auth(KEY)
    }
    fn admin(self) -> Self {
        self.basic_auth("ann@acme.test", Some("s3cret"))
    }
}

async fn json_of(r: Response) -> (u16, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn dir(base: &str) -> String {
    format!("{base}/admin/v2/orgs/org-1/directories/-")
}

fn error_code(v: &Value) -> &str {
    v["errors"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn admin_auth() {
    let (emu, c, base) = start(classic_json()).await;
    let url = format!("{base}/admin/v2/orgs/org-1/directories");
    // No key.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let (s, v) = json_of(r).await;
    assert_eq!(s, 401);
    assert_eq!(error_code(&v), "ADMIN-401");
    assert_eq!(v["errors"][0]["status"], "401");
    // Wrong kinds: an API token, an access token, an unknown bearer.
    for r in [
        c.get(&url).admin(),
        c.get(&url).bearer_auth("at-123"),
        c.get(&url).bearer_auth("nope"),
    ] {
        let (s, v) = json_of(r.send().await.unwrap()).await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(error_code(&v), "ADMIN-401");
    }
    // A Bitbucket route refuses the admin key.
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/1.0/groups/acme"))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The key works.
    let r = c.get(&url).key().send().await.unwrap();
    assert_eq!(r.status(), 200);
    let counts = emu.request_counts();
    assert_eq!(counts["GET /admin/v2/orgs/{orgId}/directories"], 5);
}

#[tokio::test]
async fn directories_and_wrong_ids() {
    let (_emu, c, base) = start(classic_json()).await;
    let (s, v) = json_of(
        c.get(format!("{base}/admin/v2/orgs/org-1/directories"))
            .key()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["data"],
        json!([{"directoryId": "dir-org-1", "name": "Acme Org"}])
    );
    assert!(v["links"]["self"]
        .as_str()
        .unwrap()
        .ends_with("/admin/v2/orgs/org-1/directories"));
    // Wrong org.
    let (s, v) = json_of(
        c.get(format!("{base}/admin/v2/orgs/org-2/directories"))
            .key()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(v["errors"][0]["detail"].as_str().unwrap().contains("org-2"));
    // Wrong directory; the directory id itself and `-` work.
    let search = |d: &str| {
        c.post(format!(
            "{base}/admin/v2/orgs/org-1/directories/{d}/groups/search"
        ))
        .key()
        .json(&json!({}))
    };
    assert_eq!(search("dir-x").send().await.unwrap().status(), 404);
    assert_eq!(search("dir-org-1").send().await.unwrap().status(), 200);
    assert_eq!(search("-").send().await.unwrap().status(), 200);
    // Unknown admin path.
    let r = c
        .get(format!("{base}/admin/v2/orgs/org-1/nothing"))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn no_organisation_answers_404() {
    let mut seed = classic_json();
    seed.as_object_mut().unwrap().remove("organisation");
    let (emu, c, base) = start(seed).await;
    for r in [
        c.get(format!("{base}/admin/v2/orgs/org-1/directories"))
            .key(),
        c.get(format!("{base}/admin/v2/orgs/org-1/directories")),
        c.post(format!("{}/groups/search", dir(&base)))
            .key()
            .json(&json!({})),
        c.get(format!("{base}/admin/v1/orgs/org-1/users")).key(),
    ] {
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let (_, v) = json_of(r).await;
        assert_eq!(v["errors"][0]["status"], "404");
        assert_eq!(v["errors"][0]["title"], "Not Found");
    }
    assert!(emu.state().organisation.is_none());
    // Bitbucket still refuses the key.
    let r = c
        .get(format!("{base}/2.0/repositories/acme"))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn groups_search_and_paging() {
    let (_emu, c, base) = start(classic_json()).await;
    let url = format!("{}/groups/search", dir(&base));
    let (s, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"groupNames": ["engineers", "DESIGNERS", "nope"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Designers", "Engineers"]);
    assert_eq!(v["data"][1]["id"], "g-eng");
    assert!(v["data"][0]["id"].as_str().unwrap().len() == 36);
    assert!(v["links"].get("next").is_none());
    // By id.
    let (_, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"groupIds": ["g-okta"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"][0]["name"], "Okta All");
    // Paging over every group, limit 2.
    let mut seen = Vec::new();
    let mut body = json!({"limit": 2});
    let mut pages = 0;
    loop {
        let (s, v) = json_of(c.post(&url).key().json(&body).send().await.unwrap()).await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        for g in v["data"].as_array().unwrap() {
            seen.push(g["name"].as_str().unwrap().to_string());
        }
        match v["links"]["next"].as_str() {
            Some(n) => body = json!({"limit": 2, "cursor": n}),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["Designers", "Empty", "Engineers", "Okta All"]);
    // A cursor of another query, a forged cursor, a bad limit, an unknown field: 400.
    let (_, first) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"limit": 2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let cursor = first["links"]["next"].as_str().unwrap();
    for bad in [
        json!({"limit": 3, "cursor": cursor}),
        json!({"limit": 2, "groupNames": ["empty"], "cursor": cursor}),
        json!({"limit": 2, "cursor": "Zm9yZ2Vk"}),
        json!({"limit": 0}),
        json!({"limit": 101}),
        json!({"groupname": ["x"]}),
    ] {
        let (s, v) = json_of(c.post(&url).key().json(&bad).send().await.unwrap()).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(error_code(&v), "ADMIN-400");
    }
    // The cursor on the deprecated GET list (another collection) is refused too.
    let r = c
        .get(format!("{}/groups", dir(&base)))
        .query(&[("limit", "2"), ("cursor", cursor)])
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The deprecated list pages the same way and says it is deprecated.
    let r = c
        .get(format!("{}/groups", dir(&base)))
        .query(&[("limit", "3")])
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["deprecation"], "true");
    let (s, v) = json_of(r).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    let next = v["links"]["next"].as_str().unwrap().to_string();
    let (s, v) = json_of(
        c.get(format!("{}/groups", dir(&base)))
            .query(&[("limit", "3"), ("cursor", &next)])
            .key()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["name"], "Okta All");
}

#[tokio::test]
async fn create_and_delete_groups() {
    let (emu, c, base) = start(classic_json()).await;
    let url = format!("{}/groups", dir(&base));
    let (s, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"name": "QA Team", "description": "testers"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "QA Team");
    assert_eq!(v["description"], "testers");
    let id = v["id"].as_str().unwrap().to_string();
    // Same name, other case: 409.
    let (s, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"name": "qa team"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(error_code(&v), "ADMIN-409");
    // Unknown fields, no name: 400.
    for bad in [
        json!({"name": "X", "extra": 1}),
        json!({"description": "d"}),
    ] {
        let r = c.post(&url).key().json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // Classic: the directory's own groups, not the workspace's.
    let state = emu.state();
    let org = state.organisation.as_ref().unwrap();
    assert!(org
        .groups
        .iter()
        .any(|g| g.name == "QA Team" && g.id.as_deref() == Some(&id)));
    assert!(!state.groups.iter().any(|g| g.name == "QA Team"));
    // Delete: 204, then 404; an idp-synced group: 403.
    let r = c.delete(format!("{url}/{id}")).key().send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (s, v) = json_of(c.delete(format!("{url}/{id}")).key().send().await.unwrap()).await;
    assert_eq!(s, 404);
    assert_eq!(error_code(&v), "ADMIN-UAM-404-3");
    let (s, v) = json_of(
        c.delete(format!("{url}/g-okta"))
            .key()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(error_code(&v), "ADMIN-403");
    let counts = emu.request_counts();
    assert_eq!(
        counts["DELETE /admin/v2/orgs/{orgId}/directories/{dirId}/groups/{groupId}"],
        3
    );
}

#[tokio::test]
async fn memberships() {
    let (emu, c, base) = start(classic_json()).await;
    let m = |g: &str| format!("{}/groups/{g}/memberships", dir(&base));
    // Add Chen to Engineers (both body spellings).
    let r = c
        .post(m("g-eng"))
        .key()
        .json(&json!({"accountId": CHEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, v) = json_of(
        c.post(m("g-eng"))
            .key()
            .json(&json!({"account_id": CHEN}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 409, "already a member");
    assert_eq!(error_code(&v), "ADMIN-409");
    // Neither or both spellings: 400.
    for bad in [json!({}), json!({"accountId": CHEN, "account_id": CHEN})] {
        let r = c.post(m("g-eng")).key().json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // Unknown group, unknown account: 404.
    let r = c
        .post(m("g-none"))
        .key()
        .json(&json!({"accountId": CHEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(m("g-eng"))
        .key()
        .json(&json!({"accountId": "557058:nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // idp-synced: 403 with the reason.
    let (s, v) = json_of(
        c.post(m("g-okta"))
            .key()
            .json(&json!({"accountId": CHEN}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    assert!(v["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("identity provider"));
    let r = c
        .delete(format!("{}/{ANN}", m("g-okta")))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Remove: 204, then 404.
    let r = c
        .delete(format!("{}/{CHEN}", m("g-eng")))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{}/{CHEN}", m("g-eng")))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The state shows it; the workspace groups are untouched.
    let state = emu.state();
    let eng = state.organisation.as_ref().unwrap().groups[0].clone();
    assert_eq!(eng.members, [ANN, BOB]);
    assert_eq!(state.groups[0].members, [BOB]);
}

#[tokio::test]
async fn users_search_suspend_restore_and_v1() {
    let (emu, c, base) = start(classic_json()).await;
    let url = format!("{}/users/search", dir(&base));
    // By group ids (ANY), with groups expanded.
    let (s, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"groupIds": ["g-eng", "g-okta"], "expand": ["groups"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["accountId"], ANN);
    assert_eq!(data[0]["accountType"], "atlassian");
    assert_eq!(data[0]["accountStatus"], "active");
    assert_eq!(data[0]["membershipStatus"], "active");
    assert_eq!(data[0]["name"], "Ann Lee");
    assert_eq!(data[0]["nickname"], "ann");
    assert_eq!(data[0]["email"], "Ann@Acme.test");
    let groups: Vec<&str> = data[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["g-eng", "g-okta"]);
    assert_eq!(data[1]["accountId"], BOB);
    // Without expand: no groups.
    let (_, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"emails": ["ann@acme.TEST", "none@x"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["accountId"], ANN);
    assert!(v["data"][0].get("groups").is_none());
    // Every filter must match.
    let (_, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"groupIds": ["g-eng"], "accountIds": [BOB, CHEN]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["accountId"], BOB);
    // Bad expand, unknown field, bad limit.
    for bad in [
        json!({"expand": ["roles"]}),
        json!({"emails": [], "foo": 1}),
        json!({"limit": 0}),
    ] {
        let r = c.post(&url).key().json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // Paging: 5 users, limit 2 -> 3 pages.
    let mut all = Vec::new();
    let mut body = json!({"limit": 2});
    loop {
        let (s, v) = json_of(c.post(&url).key().json(&body).send().await.unwrap()).await;
        assert_eq!(s, 200);
        for u in v["data"].as_array().unwrap() {
            all.push(u["accountId"].as_str().unwrap().to_string());
        }
        match v["links"]["next"].as_str() {
            Some(n) => body = json!({"limit": 2, "cursor": n}),
            None => break,
        }
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 5);
    // Dana is suspended (seed); suspend Bob (twice: idempotent), restore Dana.
    let user = |a: &str, what: &str| format!("{}/users/{a}/{what}", dir(&base));
    for _ in 0..2 {
        let r = c.post(user(BOB, "suspend")).key().send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    let r = c.post(user(DANA, "restore")).key().send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .post(user("557058:nobody", "suspend"))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(emu.state().organisation.unwrap().suspended, [BOB]);
    let (_, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"accountIds": [BOB], "expand": ["groups"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"][0]["membershipStatus"], "suspended");
    assert_eq!(v["data"][0]["groups"][0]["id"], "g-eng", "keeps groups");
    // v1 listing: next is a full URL with the cursor.
    let v1 = format!("{base}/admin/v1/orgs/org-1/users");
    let (s, v) = json_of(
        c.get(&v1)
            .query(&[("limit", "3")])
            .key()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    let bob = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["account_id"] == BOB)
        .unwrap();
    assert_eq!(bob["account_status"], "inactive");
    assert_eq!(bob["account_type"], "atlassian");
    assert_eq!(bob["email"], "bob@acme.test");
    let next = v["links"]["next"].as_str().unwrap().to_string();
    assert!(next.starts_with(&format!("{base}/admin/v1/orgs/org-1/users?")));
    assert!(next.contains("cursor="));
    let (s, v) = json_of(c.get(&next).key().send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["links"].get("next").is_none());
    // Remove a user from the directory: gone from its groups and the listings.
    let r = c
        .delete(format!("{}/users/{ANN}", dir(&base)))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let state = emu.state();
    let org = state.organisation.as_ref().unwrap();
    assert!(org.groups.iter().all(|g| !g.members.contains(&ANN.into())));
    assert_eq!(org.removed, [ANN]);
    assert!(state.users.iter().any(|u| u.account_id == ANN), "classic");
    let (_, v) = json_of(
        c.post(&url)
            .key()
            .json(&json!({"accountIds": [ANN]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"], json!([]));
    let r = c
        .delete(format!("{}/users/{ANN}", dir(&base)))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The state round-trips.
    emu.replace_state(emu.state()).unwrap();
}

#[tokio::test]
async fn admin_rate_limit_429() {
    let (emu, c, base) = start(classic_json()).await;
    emu.set_rate_limit(2);
    let url = format!("{base}/admin/v2/orgs/org-1/directories");
    for _ in 0..2 {
        assert_eq!(c.get(&url).key().send().await.unwrap().status(), 200);
    }
    let r = c.get(&url).key().send().await.unwrap();
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let reset = h["x-ratelimit-reset"].to_str().unwrap().to_string();
    // 2026-12-02T10:11:30Z
    assert_eq!(reset.len(), 20, "{reset}");
    assert!(
        reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "{reset}"
    );
    assert!(h.get("retry-after").is_none());
    assert_eq!(h["content-type"], "application/json");
    let (_, v) = json_of(r).await;
    assert_eq!(error_code(&v), "ADMIN-429");
    // The same window as Bitbucket credentials: the admin token is separate and still fine.
    let r = c
        .get(format!("{base}/1.0/groups/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // After the window the key works again.
    emu.advance_time(Duration::from_secs(3601));
    assert_eq!(c.get(&url).key().send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn faults_apply_to_admin_routes() {
    let (emu, c, base) = start(classic_json()).await;
    emu.inject_fault(Fault {
        family: Some("admin".into()),
        status: 503,
        times: Some(1),
        ..Fault::default()
    });
    // A Bitbucket route is not in the family.
    let r = c
        .get(format!("{base}/1.0/groups/acme"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = format!("{}/groups/search", dir(&base));
    let r = c.post(&url).key().json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = c.post(&url).key().json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A path fault on an admin route, and a lost write.
    emu.inject_fault(Fault {
        path_contains: "/memberships".into(),
        kind: bbsync_emulator::FaultKind::LostWrite,
        times: Some(1),
        ..Fault::default()
    });
    let r = c
        .post(format!("{}/groups/g-eng/memberships", dir(&base)))
        .key()
        .json(&json!({"accountId": CHEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let eng = &emu.state().organisation.unwrap().groups[0];
    assert!(!eng.members.contains(&CHEN.to_string()));
}

#[tokio::test]
async fn org_managed_shares_groups_with_1_0() {
    let (emu, c, base) = start(org_managed_json()).await;
    // The directory's groups are the workspace's, with derived ids.
    let state = emu.state();
    let dev_id = state.groups[0].id.clone().unwrap();
    assert_eq!(dev_id, bbsync_emulator::admin_group_id_for("developers"));
    assert!(!dev_id.starts_with('{'));
    // Add Chen to Developers through the Admin API: 1.0 shows it.
    let r = c
        .post(format!("{}/groups/{dev_id}/memberships", dir(&base)))
        .key()
        .json(&json!({"accountId": CHEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, v) = json_of(
        c.get(format!("{base}/1.0/groups/acme"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let dev = v
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["slug"] == "developers")
        .unwrap();
    let members: Vec<&str> = dev["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, [BOB, CHEN]);
    // Create a group: the workspace group exists too.
    let (s, v) = json_of(
        c.post(format!("{}/groups", dir(&base)))
            .key()
            .json(&json!({"name": "Release Managers"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201);
    let new_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = json_of(
        c.get(format!("{base}/1.0/groups/acme/release-managers"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["name"], "Release Managers");
    // 1.0 writes are still 405.
    let r = c
        .post(format!("{base}/1.0/groups/acme"))
        .admin()
        .form(&[("name", "X")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Synced group: 403.
    let synced = emu.state().groups[1].id.clone().unwrap();
    let r = c
        .post(format!("{}/groups/{synced}/memberships", dir(&base)))
        .key()
        .json(&json!({"accountId": CHEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Delete the new group; remove Bob from the directory: gone from the workspace.
    let r = c
        .delete(format!("{}/groups/{new_id}", dir(&base)))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{}/users/{BOB}", dir(&base)))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let state = emu.state();
    assert!(!state.users.iter().any(|u| u.account_id == BOB));
    assert_eq!(state.groups[0].members, [CHEN]);
    assert!(state.groups.iter().all(|g| g.name != "Release Managers"));
    // The owner cannot be removed.
    let r = c
        .delete(format!("{}/users/{OWNER}", dir(&base)))
        .key()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    emu.replace_state(emu.state()).unwrap();
}

#[tokio::test]
async fn invitations_on_a_classic_workspace() {
    let (emu, c, base) = start(classic_json()).await;
    let inv = format!("{base}/1.0/users/acme/invitations");
    let (s, v) = json_of(c.get(&inv).admin().send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["email"], "new@x.test");
    assert_eq!(v[0]["group"]["slug"], "developers");
    assert_eq!(v[0]["group"]["name"], "Developers");
    assert_eq!(v[0]["group"]["owner"]["nickname"], "acme");
    // PUT: 200, idempotent (emails case-insensitive).
    for email in ["Pat@X.test", "pat@x.test"] {
        let (s, v) = json_of(
            c.put(format!("{inv}/{email}/acme/developers"))
                .admin()
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["email"], "Pat@X.test");
        assert_eq!(v["group"]["slug"], "developers");
    }
    assert_eq!(emu.state().invitations.len(), 2);
    // Unknown group, wrong group owner: 404 plain text.
    let r = c
        .put(format!("{inv}/pat@x.test/acme/nope"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let r = c
        .put(format!("{inv}/pat@x.test/other/developers"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // GET for one email (case-insensitive); an unknown one is an empty array.
    let (_, v) = json_of(
        c.get(format!("{inv}/PAT@x.test"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, v) = json_of(
        c.get(format!("{inv}/nobody@x.test"))
            .admin()
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!([])));
    // DELETE one group's invitation, then every invitation of an email.
    let r = c
        .delete(format!("{inv}/pat@x.test/acme/developers"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .delete(format!("{inv}/NEW@x.test"))
        .admin()
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(emu.state().invitations.is_empty());
    // Repository invitation: form permission=...; other bodies 400.
    let repo_inv = format!("{base}/1.0/invitations/acme/api/pat@x.test");
    let r = c
        .post(&repo_inv)
        .admin()
        .form(&[("permission", "write")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for bad in [
        c.post(&repo_inv).admin().form(&[("permission", "none")]),
        c.post(&repo_inv)
            .admin()
            .json(&json!({"permission": "read"})),
        c.post(&repo_inv).admin().body("write"),
    ] {
        assert_eq!(bad.send().await.unwrap().status(), 400);
    }
    let r = c
        .post(format!("{base}/1.0/invitations/acme/nope/pat@x.test"))
        .admin()
        .form(&[("permission", "read")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(emu.state().repo_invitations[0].permission, "write");
    // Access tokens are refused (groups family), as on 1.0 groups.
    let r = c.get(&inv).bearer_auth("at-123").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let counts = emu.request_counts();
    assert_eq!(
        counts["PUT /1.0/users/{ws}/invitations/{email}/{group_owner}/{group}"],
        4
    );
}

#[tokio::test]
async fn invitations_are_off_on_org_managed_workspaces() {
    let (_emu, c, base) = start(org_managed_json()).await;
    let inv = format!("{base}/1.0/users/acme/invitations");
    for r in [
        c.get(&inv).admin(),
        c.get(format!("{inv}/a@x.test")).admin(),
        c.put(format!("{inv}/a@x.test/acme/developers")).admin(),
        c.delete(format!("{inv}/a@x.test")).admin(),
        c.post(format!("{base}/1.0/invitations/acme/api/a@x.test"))
            .admin()
            .form(&[("permission", "read")]),
    ] {
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.text().await.unwrap(), "None");
    }
}

#[tokio::test]
async fn seed_checks() {
    // Org groups on an org-managed workspace, a suspended non-user, ids without an organisation.
    let mut v = classic_json();
    v["organisation"]["suspended"] = json!(["557058:nobody"]);
    let s: Seed = serde_json::from_value(v).unwrap();
    assert!(s.validate().unwrap_err().contains("suspended"));
    let mut v = classic_json();
    v.as_object_mut().unwrap().remove("organisation");
    v["groups"][0]["idp_synced"] = json!(true);
    let s: Seed = serde_json::from_value(v).unwrap();
    assert!(s.validate().is_err());
    let mut v = org_managed_json();
    v["organisation"]["groups"] = json!([{"name": "X"}]);
    let s: Seed = serde_json::from_value(v).unwrap();
    assert!(s.validate().is_err());
    let mut v = classic_json();
    v["organisation"]["bogus"] = json!(1);
    assert!(serde_json::from_value::<Seed>(v).is_err());
    // The example seed is valid and starts.
    let s = bbsync_emulator::load_seed(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/org-seed.json"
    )))
    .unwrap();
    assert!(s.workspace.organisation_managed);
    let emu = Emulator::start(s, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let state = emu.state();
    assert_eq!(
        state.organisation.as_ref().unwrap().directory_id,
        "dir-globex"
    );
    assert!(state.groups.iter().all(|g| g.id.is_some()));
}
