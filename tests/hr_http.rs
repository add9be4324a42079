//! `source.kind = "hr_http"` against a local HTTP server (real sockets on loopback) serving
//! fixtures shaped like real HR APIs: a BambooHR-style employee directory, a Workday-style
//! custom report, and a paged list in each pagination style; and every fail-closed case.

mod common;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bbsync::config::Config;
use bbsync::source::{Directory, Source, SourceError};
use common::acc;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the server does, changed by the tests.
#[derive(Default)]
struct Faults {
    /// Answer this many requests 503 first.
    unavailable: usize,
    /// This page (1-based) always answers 500.
    broken_page: Option<usize>,
    /// This page's body is not JSON.
    garbled_page: Option<usize>,
    /// The next link of page 1 points to another origin.
    foreign_next: bool,
    /// The next link of page 2 points back to page 1.
    looping: bool,
    /// Answer 401 whatever the credentials.
    unauthorised: bool,
}

#[derive(Default)]
struct Server {
    faults: Mutex<Faults>,
    /// Every request: path and query, with the Authorization header.
    seen: Mutex<Vec<(String, Option<String>)>>,
}

type Shared = Arc<Server>;

/// Five people; `ann` left by status, `dee` by a termination date in the past.
fn people() -> Vec<Value> {
    let p = |id: u32, who: &str, status: &str, end: &str, dept: &str| {
        json!({
            "id": id.to_string(),
            "displayName": format!("Person {who}"),
            "workEmail": format!("{who}@acme.test"),
            "customAtlassianId": acc(who),
            "status": status,
            "terminationDate": end,
            "department": dept,
            "jobTitle": if who == "bob" { "Contractor" } else { "Engineer" },
        })
    };
    vec![
        p(101, "ann", "Inactive", "0000-00-00", "Engineering"),
        p(102, "bob", "Active", "0000-00-00", "Engineering"),
        p(103, "cid", "Active", "0000-00-00", "Sales"),
        p(104, "dee", "Active", "2021-03-31", "Engineering"),
        p(105, "eve", "Active", "", "Engineering"),
    ]
}

/// The same people as a Workday custom report's rows.
fn workday_rows() -> Vec<Value> {
    people()
        .into_iter()
        .map(|p| {
            json!({
                "Employee_ID": p["id"],
                "Worker": p["displayName"],
                "Email_-_Work": p["workEmail"],
                "Atlassian_Account_ID": p["customAtlassianId"],
                "Worker_Status": if p["status"] == "Inactive" { "Terminated" } else { "Active" },
                "Termination_Date": if p["terminationDate"] == "0000-00-00" { Value::String(String::new()) } else { p["terminationDate"].clone() },
                "Supervisory_Organization": p["department"],
                "Job_Title": p["jobTitle"],
            })
        })
        .collect()
}

const PAGE: usize = 2;

fn page_of(index: usize) -> Vec<Value> {
    people().into_iter().skip(index * PAGE).take(PAGE).collect()
}

/// Records the request and applies the faults that apply to every route; `Some` answers.
fn before(s: &Server, headers: &HeaderMap, path_query: String, page: usize) -> Option<Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.seen.lock().expect("lock").push((path_query, auth));
    let mut f = s.faults.lock().expect("lock");
    if f.unauthorised {
        return Some((StatusCode::UNAUTHORIZED, "{\"error\":\"bad key\"}").into_response());
    }
    if f.unavailable > 0 {
        f.unavailable -= 1;
        return Some((StatusCode::SERVICE_UNAVAILABLE, "try later").into_response());
    }
    if f.broken_page == Some(page) {
        return Some((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response());
    }
    if f.garbled_page == Some(page) {
        return Some(
            (
                [("content-type", "application/json")],
                "{\"data\": [ {\"id\": ",
            )
                .into_response(),
        );
    }
    None
}

fn qs(q: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = q.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

async fn bamboo(State(s): State<Shared>, h: HeaderMap) -> Response {
    if let Some(r) = before(&s, &h, "/bamboo".into(), 1) {
        return r;
    }
    axum::Json(json!({
        "fields": [{"id": "displayName", "type": "text", "name": "Display name"}],
        "employees": people(),
    }))
    .into_response()
}

async fn workday(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = before(&s, &h, format!("/workday?{}", qs(&q)), 1) {
        return r;
    }
    axum::Json(json!({ "Report_Entry": workday_rows() })).into_response()
}

async fn next_style(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let index: usize = q
        .get("cursor")
        .and_then(|c| c.strip_prefix("c"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if let Some(r) = before(&s, &h, format!("/next?{}", qs(&q)), index + 1) {
        return r;
    }
    let f = s.faults.lock().expect("lock");
    let next = if f.foreign_next && index == 0 {
        Value::String("http://127.0.0.2:9/next?cursor=c1".into())
    } else if f.looping && index == 1 {
        Value::String("/next".into())
    } else if (index + 1) * PAGE < people().len() {
        // Relative on even pages, absolute on odd: both must work.
        Value::String(format!("/next?cursor=c{}", index + 1))
    } else {
        Value::Null
    };
    axum::Json(json!({ "data": page_of(index), "links": { "next": next } })).into_response()
}

async fn page_style(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    assert_eq!(q.get("per_page").map(String::as_str), Some("2"));
    if let Some(r) = before(&s, &h, format!("/page?{}", qs(&q)), page) {
        return r;
    }
    axum::Json(json!({ "employees": page_of(page - 1), "page": page })).into_response()
}

async fn offset_style(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let offset: usize = q.get("offset").and_then(|p| p.parse().ok()).unwrap_or(0);
    assert_eq!(q.get("limit").map(String::as_str), Some("2"));
    if let Some(r) = before(&s, &h, format!("/offset?{}", qs(&q)), offset / PAGE + 1) {
        return r;
    }
    // The body is the array itself.
    let records: Vec<Value> = people().into_iter().skip(offset).take(PAGE).collect();
    axum::Json(Value::Array(records)).into_response()
}

/// Pages of one record whatever the client asks for (a server-side cap).
async fn capped(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if let Some(r) = before(&s, &h, format!("/capped?{}", qs(&q)), page) {
        return r;
    }
    let one: Vec<Value> = people().into_iter().skip(page - 1).take(1).collect();
    axum::Json(json!({ "employees": one })).into_response()
}

async fn link_style(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p: usize = q.get("p").and_then(|p| p.parse().ok()).unwrap_or(1);
    if let Some(r) = before(&s, &h, format!("/link?{}", qs(&q)), p) {
        return r;
    }
    let mut links = vec![format!("</link?p=1>; rel=\"first\"")];
    if p * PAGE < people().len() {
        links.push(format!("</link?p={}>; rel=\"next\"", p + 1));
    }
    (
        [("link", links.join(", "))],
        axum::Json(json!({ "people": page_of(p - 1) })),
    )
        .into_response()
}

async fn serve() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/bamboo", get(bamboo))
        .route("/workday", get(workday))
        .route("/next", get(next_style))
        .route("/page", get(page_style))
        .route("/offset", get(offset_style))
        .route("/link", get(link_style))
        .route("/capped", get(capped))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

/// BambooHR-style field pointers.
const BAMBOO_FIELDS: &str = r#"
[source.fields]
stable_id = "/id"
email = "/workEmail"
account_id = "/customAtlassianId"
display_name = "/displayName"
status = "/status"
termination_date = "/terminationDate"
[source.attributes]
department = "/department"
title = "/jobTitle"
"#;

const RULES: &str = "[[groups]]\nname = \"engineering\"\n[[groups.when]]\nattribute = \"department\"\nequals = \"Engineering\"\n";

fn config(source: &str) -> Config {
    let text = format!(
        "[bitbucket]\nworkspace = \"acme\"\n[credentials.admin]\nkind = \"api_token\"\nemail = \"admin@acme.test\"\ntoken = \"x\"\n[source]\nkind = \"hr_http\"\ntimeout_secs = 5\n{source}\n{RULES}"
    );
    Config::from_toml_str(&text, "hr-http.toml", std::path::Path::new(".")).expect("valid config")
}

async fn read(cfg: &Config) -> Result<Directory, SourceError> {
    Source::new(&cfg.source, &cfg.directory).read().await
}

/// Who was read, who left and why, and the engineering group.
fn summary(
    dir: &Directory,
    cfg: &Config,
) -> (BTreeSet<String>, BTreeMap<String, String>, BTreeSet<String>) {
    let people = dir.people.keys().map(|a| a.as_str().to_owned()).collect();
    let leavers = dir
        .people
        .values()
        .filter_map(|p| p.disabled.clone().map(|d| (p.display_name.clone(), d)))
        .collect();
    let groups = bbsync::mapping::desired_groups(dir, &cfg.groups).expect("maps");
    let eng = groups
        .values()
        .next()
        .expect("a group")
        .members
        .keys()
        .map(|a| a.as_str().to_owned())
        .collect();
    (people, leavers, eng)
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| acc(n)).collect()
}

#[tokio::test]
async fn every_pagination_style_and_both_api_shapes_read_the_same_people() {
    let (base, server) = serve().await;
    let workday_fields = r#"
[source.fields]
stable_id = "/Employee_ID"
email = "/Email_-_Work"
account_id = "/Atlassian_Account_ID"
display_name = "/Worker"
status = "/Worker_Status"
termination_date = "/Termination_Date"
[source.attributes]
department = "/Supervisory_Organization"
title = "/Job_Title"
"#;
    let cases: Vec<(&str, String, usize)> = vec![
        (
            "bamboo directory, Basic with the API key as user",
            format!("url = \"{base}/bamboo\"\nusername = \"api-key-123\"\nrecords = \"/employees\"\n{BAMBOO_FIELDS}"),
            1,
        ),
        (
            "workday report, Basic user and password",
            format!("url = \"{base}/workday?format=json\"\nusername = \"ISU_bbsync\"\npassword = \"pw\"\nrecords = \"/Report_Entry\"\n{workday_fields}"),
            1,
        ),
        (
            "next URL in the body",
            format!("url = \"{base}/next\"\ntoken = \"tok\"\nrecords = \"/data\"\npagination = \"next_url\"\nnext_pointer = \"/links/next\"\n{BAMBOO_FIELDS}"),
            3,
        ),
        (
            "page parameters",
            format!("url = \"{base}/page\"\ntoken = \"tok\"\nrecords = \"/employees\"\npagination = \"page\"\npage_size_param = \"per_page\"\npage_size = 2\n{BAMBOO_FIELDS}"),
            // 2 + 2 + 1, and the empty page that ends the read.
            4,
        ),
        (
            "offset parameters, the body the array itself",
            format!("url = \"{base}/offset\"\ntoken = \"tok\"\npagination = \"offset\"\npage_size = 2\n{BAMBOO_FIELDS}"),
            4,
        ),
        (
            "RFC 8288 Link headers",
            format!("url = \"{base}/link\"\ntoken = \"tok\"\nrecords = \"/people\"\npagination = \"link\"\n{BAMBOO_FIELDS}"),
            3,
        ),
    ];
    let want_people = ids(&["ann", "bob", "cid", "dee", "eve"]);
    for (what, source, requests) in cases {
        server.seen.lock().expect("lock").clear();
        let cfg = config(&source);
        let dir = read(&cfg).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(dir.issues.is_empty(), "{what}: {:?}", dir.issues);
        let (people, leavers, eng) = summary(&dir, &cfg);
        assert_eq!(people, want_people, "{what}");
        assert_eq!(leavers.len(), 2, "{what}: {leavers:?}");
        assert!(
            leavers["Person ann"].starts_with("status "),
            "{what}: {leavers:?}"
        );
        assert_eq!(
            leavers["Person dee"], "termination date 2021-03-31 has passed",
            "{what}"
        );
        assert_eq!(
            eng,
            ids(&["bob", "eve"]),
            "{what}: active engineering people"
        );
        let seen = server.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), requests, "{what}: {seen:?}");
        let auth = seen[0].1.clone().unwrap_or_default();
        if source.contains("token = ") {
            assert_eq!(auth, "Bearer tok", "{what}");
        } else {
            assert!(auth.starts_with("Basic "), "{what}: {auth}");
        }
    }
    let bob = {
        let cfg = config(&format!(
            "url = \"{base}/bamboo\"\nrecords = \"/employees\"\n{BAMBOO_FIELDS}"
        ));
        let dir = read(&cfg).await.expect("reads");
        dir.people
            .values()
            .find(|p| p.display_name == "Person bob")
            .cloned()
            .expect("bob")
    };
    // What `bbsync source` shows: every mapped attribute.
    assert_eq!(bob.attribute("department"), ["Engineering"]);
    assert_eq!(bob.attribute("title"), ["Contractor"]);
    assert_eq!(bob.dn.as_str(), "employee=102");
}

#[tokio::test]
async fn a_server_that_pages_by_fewer_than_asked_is_read_to_its_end() {
    let (base, server) = serve().await;
    // page_size 100 is asked for; the server gives one a page.
    let cfg = config(&format!(
        "url = \"{base}/capped\"\nrecords = \"/employees\"\npagination = \"page\"\n{BAMBOO_FIELDS}"
    ));
    let dir = read(&cfg).await.expect("reads");
    assert_eq!(dir.people.len(), 5, "not only the first page");
    assert_eq!(
        server.seen.lock().expect("lock").len(),
        6,
        "five pages and the empty one"
    );
}

#[tokio::test]
async fn a_next_pointer_that_is_not_in_the_body_fails_unless_the_api_leaves_it_out() {
    let (base, _server) = serve().await;
    // The API puts it at /links/next; the default /next is wrong, and must not read one page
    // as if it were everyone.
    let wrong = config(&format!(
        "url = \"{base}/next\"\nrecords = \"/data\"\npagination = \"next_url\"\n{BAMBOO_FIELDS}"
    ));
    let e = read(&wrong).await.expect_err("wrong pointer").to_string();
    assert!(
        e.contains("no next-page value at source.next_pointer \"/next\""),
        "{e}"
    );
    // Said to be absent on the last page: the first page here has no /next, so it ends.
    let absent = config(&format!("url = \"{base}/next\"\nrecords = \"/data\"\npagination = \"next_url\"\nnext_may_be_absent = true\n{BAMBOO_FIELDS}"));
    let e = read(&absent).await.map(|d| d.people.len());
    assert_eq!(e.ok(), Some(2), "ends after the first page, as configured");
}

#[tokio::test]
async fn a_5xx_is_retried_and_the_read_then_succeeds() {
    let (base, server) = serve().await;
    server.faults.lock().expect("lock").unavailable = 2;
    let cfg = config(&format!("url = \"{base}/next\"\nrecords = \"/data\"\npagination = \"next_url\"\nnext_pointer = \"/links/next\"\nmax_retries = 2\n{BAMBOO_FIELDS}"));
    let dir = read(&cfg).await.expect("reads after two retries");
    assert_eq!(dir.people.len(), 5);
    assert_eq!(
        server.seen.lock().expect("lock").len(),
        5,
        "2 refused + 3 pages"
    );
}

#[tokio::test]
async fn every_broken_read_fails_closed_naming_the_url_and_page_without_secrets() {
    let (base, server) = serve().await;
    let paged = |extra: &str| {
        config(&format!(
            "url = \"{base}/next?api_key=sekrit\"\nrecords = \"/data\"\npagination = \"next_url\"\nnext_pointer = \"/links/next\"\nmax_retries = 1\n{extra}\n{BAMBOO_FIELDS}"
        ))
    };
    type Setup = fn(&mut Faults);
    let cases: Vec<(&str, Setup, Config, &str)> = vec![
        (
            "a page that keeps failing",
            |f| f.broken_page = Some(2),
            paged(""),
            "page 2 (",
        ),
        (
            "malformed JSON",
            |f| f.garbled_page = Some(3),
            paged(""),
            "page 3 (",
        ),
        (
            "refused credentials",
            |f| f.unauthorised = true,
            paged(""),
            "answered 401 Unauthorized",
        ),
        (
            "a next link to another origin",
            |f| f.foreign_next = true,
            paged(""),
            "another origin",
        ),
        (
            "a loop",
            |f| f.looping = true,
            paged(""),
            "the page sequence loops",
        ),
        (
            "too many pages",
            |_| {},
            paged("max_pages = 2"),
            "more than source.max_pages (2)",
        ),
        (
            "records not where configured",
            |_| {},
            config(&format!(
                "url = \"{base}/bamboo\"\nrecords = \"/staff\"\n{BAMBOO_FIELDS}"
            )),
            "no array of records at source.records \"/staff\"",
        ),
        (
            "a field missing in too many records",
            |_| {},
            config(&format!(
                "url = \"{base}/bamboo\"\nrecords = \"/employees\"\n{}",
                BAMBOO_FIELDS
                    .replace("/workEmail", "/email")
                    .replace("/customAtlassianId", "/aid")
            )),
            "email (pointer /email) is missing in 5 of 5 records",
        ),
        (
            "an unreachable server",
            |_| {},
            config(&format!(
                "url = \"http://127.0.0.1:9/x\"\nmax_retries = 0\n{BAMBOO_FIELDS}"
            )),
            "cannot connect",
        ),
    ];
    for (what, setup, cfg, says) in cases {
        *server.faults.lock().expect("lock") = Faults::default();
        setup(&mut server.faults.lock().expect("lock"));
        let e = read(&cfg).await.expect_err(what).to_string();
        assert!(e.contains(says), "{what}: {e}");
        assert!(!e.contains("sekrit"), "{what}: a query secret in {e}");
        assert!(
            e.starts_with("HR API http://127.0.0."),
            "{what}: names the API: {e}"
        );
    }
}

#[tokio::test]
async fn an_empty_answer_fails_the_read() {
    let (base, _server) = serve().await;
    // Page 9 of 2 holds no one: the whole read is empty.
    let cfg = config(&format!(
        "url = \"{base}/page?page=9\"\nrecords = \"/employees\"\npagination = \"page\"\npage_size_param = \"per_page\"\npage_size = 2\nfirst_page = 9\n{BAMBOO_FIELDS}"
    ));
    let e = read(&cfg).await.expect_err("empty").to_string();
    assert!(e.contains("has no entries at all"), "{e}");
}

#[test]
fn hr_http_config_mistakes_name_their_key() {
    let text = format!(
        "[bitbucket]\nworkspace = \"acme\"\n[credentials.admin]\nkind = \"api_token\"\nemail = \"a@x\"\ntoken = \"x\"\n[source]\nkind = \"hr_http\"\nurl = \"ftp://u:p@hr.test/x\"\ntoken = \"t\"\nusername = \"u\"\nrecords = \"employees\"\npagination = \"cursor\"\n[source.fields]\nstable_id = \"id\"\nemail = \"/mail\"\nstatus = \"/s\"\n{RULES}"
    );
    let e = Config::from_toml_str(&text, "bad.toml", std::path::Path::new("."))
        .expect_err("invalid")
        .to_string();
    for says in [
        "source.url: not an http:// or https:// URL with a host",
        "source.token (Bearer) and source.username/password (Basic) are both set",
        "source.records: \"employees\" is not a JSON pointer",
        "source.pagination: \"cursor\" is not one of \"none\", \"next_url\", \"page\", \"offset\", \"link\"",
        "source.fields.stable_id: \"id\" is not a JSON pointer",
    ] {
        assert!(e.contains(says), "missing {says:?} in:\n{e}");
    }
    assert!(!e.contains("u:p@"), "{e}");
}
