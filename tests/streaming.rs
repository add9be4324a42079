//! The 1.0 group-privileges listing read as a stream over real HTTP against the emulator: a
//! large listing arrives whole; a body cut short, not JSON or not typed JSON fails the read
//! (and is read again, whole, when retries allow); the read timeout is per chunk of progress,
//! not per body; and the members Bitbucket embeds in every row are never held.
//!
//! The timeouts here are small real ones, not `tokio::time::pause()`: the decoder runs in
//! `spawn_blocking`, and tokio does not auto-advance a paused clock while a blocking task
//! runs, so a paused test would wait forever for the stall it means to detect.

mod common;

use bbsync::bitbucket::dto::V1GroupPrivilege;
use bbsync::bitbucket::{ApiError, Client, ClientOptions, RetryPolicy};
use bbsync::config::{Credential, Secret};
use bbsync_emulator::{Emulator, Fault, FaultKind, SeedGroupGrant};
use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Counts the bytes each thread holds, and the most it held, so that a test can tell what
/// a decode kept (other tests' threads count on their own).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, size) };
        if !q.is_null() {
            track(size as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most this thread held above what it held when `f` started.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - start).unwrap_or(0))
}

fn client(emu: &Emulator, timeout: Duration, retries: u32) -> Client {
    client_with_token(emu, timeout, retries, ADMIN_TOKEN)
}

/// [`client`] sending the admin's email with `token`.
fn client_with_token(emu: &Emulator, timeout: Duration, retries: u32, token: &str) -> Client {
    Client::new(
        ClientOptions {
            api_url: emu.base_url(),
            oauth_token_url: format!("{}/site/oauth2/access_token", emu.base_url()),
            workspace: "acme".into(),
            timeout,
            retry: RetryPolicy {
                base: Duration::from_millis(1),
                ..RetryPolicy::with_retries(retries)
            },
        },
        &Credential::ApiToken {
            email: ADMIN_EMAIL.into(),
            token: Secret::new(token),
        },
    )
    .expect("client")
}

/// A workspace with `groups` groups of `members` people each, every group granted on every
/// one of `repos` repositories: `groups * repos` rows, each embedding `members` users.
async fn workspace(groups: usize, members: usize, repos: usize) -> Emulator {
    let people: Vec<String> = (0..members).map(|i| format!("p{i:04}")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let mut s = seed(&refs);
    add_repos(&mut s, "PROJ", "proj", repos);
    for g in 0..groups {
        s.groups.push(group(&format!("Team {g:02}"), &refs));
        for r in 0..repos {
            s.group_grants.push(SeedGroupGrant {
                repo: format!("proj-{r:03}"),
                group: format!("team-{g:02}"),
                permission: ["read", "write", "admin"][(g + r) % 3].into(),
            });
        }
    }
    start(s).await
}

fn key(p: &V1GroupPrivilege) -> (String, String, String) {
    (p.repo.clone(), p.group.slug.clone(), p.privilege.clone())
}

#[tokio::test]
async fn a_large_listing_is_read_whole_in_one_request() {
    // 600 rows of 40 members each: a body of about 9 MB, read in many chunks.
    let emu = workspace(6, 40, 100).await;
    let c = client(&emu, Duration::from_secs(30), 0);
    let rows = c.list_group_privileges().await.expect("listing");
    assert_eq!(rows.len(), 600);
    let mut keys: Vec<_> = rows.iter().map(key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 600, "every row once");
    assert!(keys.contains(&("acme/proj-008".into(), "team-02".into(), "write".into())));
    assert_eq!(emu.requests().len(), 1, "{:?}", emu.request_counts());
    assert_eq!(c.request_count(), 1);
}

#[tokio::test]
async fn a_body_cut_mid_array_fails_the_read_and_a_retry_reads_it_whole_again() {
    let emu = workspace(3, 20, 20).await;
    emu.inject_fault(Fault {
        kind: FaultKind::Truncated,
        path_contains: "/1.0/group-privileges/".into(),
        times: Some(1),
        ..Fault::default()
    });
    let e = client(&emu, Duration::from_secs(30), 0)
        .list_group_privileges()
        .await
        .expect_err("cut body");
    assert!(matches!(e, ApiError::Incomplete { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("GET /1.0/group-privileges/acme: the body broke off after ")
            && msg.ends_with("(a truncated read must not look complete)"),
        "{msg}"
    );
    assert_eq!(e.metric_label(), "transport");

    // With a retry, the whole body is downloaded again from its start.
    emu.reset_requests();
    emu.inject_fault(Fault {
        kind: FaultKind::Truncated,
        path_contains: "/1.0/group-privileges/".into(),
        times: Some(1),
        ..Fault::default()
    });
    let c = client(&emu, Duration::from_secs(30), 1);
    let rows = c.list_group_privileges().await.expect("read again");
    assert_eq!(rows.len(), 60);
    assert_eq!(emu.requests().len(), 2, "the cut answer, then a whole one");
    assert_eq!(c.request_count(), 2);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_array_or_not_typed_json_fails_the_read() {
    let emu = workspace(1, 1, 2).await;
    let c = client(&emu, Duration::from_secs(30), 0);
    let cases = [
        (
            FaultKind::Malformed,
            r#"[{"repo": "acme/proj-000", "privilege": "#,
            None,
            "not the JSON documented",
        ),
        (
            FaultKind::Malformed,
            r#"{"values": []}"#,
            None,
            "expected a JSON array",
        ),
        (FaultKind::Malformed, "[] []", None, "trailing characters"),
        (
            FaultKind::Malformed,
            "[]",
            Some("text/plain"),
            "content type \"text/plain\"",
        ),
        (FaultKind::Html200, "", None, "content type \"text/html\""),
    ];
    for (kind, body, content_type, says) in cases {
        emu.clear_faults();
        emu.inject_fault(Fault {
            kind,
            body: body.into(),
            content_type: content_type.map(str::to_owned),
            path_contains: "/1.0/group-privileges/".into(),
            ..Fault::default()
        });
        let e = c.list_group_privileges().await.expect_err(body);
        assert!(matches!(e, ApiError::BadAnswer { .. }), "{body}: {e:?}");
        assert!(e.to_string().contains(says), "{body}: {e}");
    }
    emu.clear_faults();
    assert!(!c.list_group_privileges().await.expect("clean").is_empty());
}

#[tokio::test]
async fn a_body_that_stalls_longer_than_the_timeout_fails_though_bytes_came_first() {
    let emu = workspace(3, 20, 20).await;
    emu.inject_fault(Fault {
        kind: FaultKind::Slow,
        path_contains: "/1.0/group-privileges/".into(),
        chunk_bytes: Some(40_000),
        hang_ms: Some(20_000),
        ..Fault::default()
    });
    let started = Instant::now();
    let e = client(&emu, Duration::from_millis(800), 0)
        .list_group_privileges()
        .await
        .expect_err("stalled");
    let took = started.elapsed();
    assert!(matches!(e, ApiError::Incomplete { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("no byte of the body for 0.8 s, after 40000 bytes"),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// An error answer (here a 401) whose body stalls: the streamed read has no total timeout of
/// its own, so the error body is bounded by the timeout too, or the run would hang for good.
#[tokio::test]
async fn an_error_answer_whose_body_stalls_fails_within_the_timeout() {
    let emu = workspace(1, 2, 2).await;
    emu.inject_fault(Fault {
        kind: FaultKind::Slow,
        path_contains: "/1.0/group-privileges/".into(),
        chunk_bytes: Some(5),
        hang_ms: Some(20_000),
        ..Fault::default()
    });
    let c = client_with_token(&emu, Duration::from_millis(800), 0, "not-the-token");
    let started = Instant::now();
    let e = c.list_group_privileges().await.expect_err("refused");
    let took = started.elapsed();
    assert!(matches!(e, ApiError::Incomplete { .. }), "{e:?}");
    assert!(
        e.to_string().contains("HTTP 401 but no complete body"),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn a_slow_but_steady_body_longer_than_the_timeout_in_total_is_read() {
    let emu = workspace(3, 20, 20).await;
    // Pieces 50 ms apart, each well within the 1 s timeout; the ~470 kB body takes over 2 s.
    emu.inject_fault(Fault {
        kind: FaultKind::Slow,
        path_contains: "/1.0/group-privileges/".into(),
        chunk_bytes: Some(10_000),
        hang_ms: Some(50),
        ..Fault::default()
    });
    let c = client(&emu, Duration::from_secs(1), 0);
    let started = Instant::now();
    let rows = c.list_group_privileges().await.expect("slow but steady");
    let took = started.elapsed();
    assert_eq!(rows.len(), 60);
    assert!(took > Duration::from_millis(1500), "the body took {took:?}");
    assert_eq!(c.request_count(), 1);
}

/// A listing of one row whose group embeds `members` users, made as it is read (never held
/// whole anywhere).
struct HugeRow {
    members: usize,
    state: usize,
    piece: Vec<u8>,
    at: usize,
}

const OWNER: &str = r#"{"display_name":"Acme","uuid":"{00000000-0000-4000-8000-000000000000}","nickname":"acme","is_active":true,"is_team":true,"avatar":"https://example.test/a.png","resource_uri":"/1.0/users/acme"}"#;

impl HugeRow {
    fn new(members: usize) -> HugeRow {
        HugeRow {
            members,
            state: 0,
            piece: Vec::new(),
            at: 0,
        }
    }

    fn next_piece(&mut self) -> Option<Vec<u8>> {
        let n = self.state;
        self.state += 1;
        Some(if n == 0 {
            format!(r#"[{{"repo":"acme/api","privilege":"write","group":{{"owner":{OWNER},"name":"Everyone","slug":"everyone","members":["#).into_bytes()
        } else if n <= self.members {
            let sep = if n == 1 { "" } else { "," };
            format!(r#"{sep}{{"display_name":"Person {n}","account_id":"557058:{n:08x}-0000-4000-8000-000000000000","uuid":"{{{n:08x}-0000-4000-8000-000000000000}}","nickname":"p{n}","is_active":true,"is_team":false,"avatar":"https://example.test/default-avatar.png","resource_uri":"/1.0/users/{{{n:08x}-0000-4000-8000-000000000000}}"}}"#).into_bytes()
        } else if n == self.members + 1 {
            format!(r#"]}},"repository":{{"owner":{OWNER},"name":"api","slug":"api"}}}}]"#)
                .into_bytes()
        } else {
            return None;
        })
    }
}

impl std::io::Read for HugeRow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.piece.len() {
            match self.next_piece() {
                Some(p) => {
                    self.piece = p;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn the_members_embedded_in_a_row_are_skipped_not_held() {
    // 200,000 embedded users: a row of about 60 MB.
    let members = 200_000;
    let size: usize = {
        let mut r = HugeRow::new(members);
        std::io::copy(&mut r, &mut std::io::sink()).expect("count") as usize
    };
    assert!(size > 50_000_000, "{size}");
    let ((n, rows), held) = peak_growth(|| {
        let mut rows: Vec<V1GroupPrivilege> = Vec::new();
        let n = bbsync::bitbucket::each_in_array(
            std::io::BufReader::new(HugeRow::new(members)),
            &mut rows,
            Vec::push,
        )
        .expect("decodes");
        (n, rows)
    });
    assert_eq!(n, 1);
    assert_eq!(rows[0].repo, "acme/api");
    assert_eq!(rows[0].group.slug, "everyone");
    assert_eq!(rows[0].privilege, "write");
    // The reader's buffer and the row's few strings: nothing that grows with the members.
    assert!(
        held < 64 * 1024,
        "{held} bytes held decoding a {size}-byte row"
    );
}

/// The same 60 MB row through the byte scanner the listing is read with: the members are
/// dropped as they are scanned, so what is held is the row without them and the chunk.
#[test]
fn the_members_embedded_in_a_row_are_skimmed_not_held() {
    use std::io::Read as _;
    let members = 200_000;
    let mut chunk = vec![0u8; 16 * 1024];
    let ((n, rows, size), held) = peak_growth(|| {
        let mut rows: Vec<V1GroupPrivilege> = Vec::new();
        let mut skim = bbsync::bitbucket::skim::Skim::new(&["members"]);
        let mut body = HugeRow::new(members);
        loop {
            let got = body.read(&mut chunk).expect("read");
            if got == 0 {
                break;
            }
            skim.feed_rows(&chunk[..got], &mut rows, Vec::push)
                .expect("scans");
        }
        (skim.finish().expect("whole"), rows, skim.offset())
    });
    assert!(size > 50_000_000, "{size}");
    assert_eq!(n, 1);
    assert_eq!(rows[0].repo, "acme/api");
    assert_eq!(rows[0].group.slug, "everyone");
    assert_eq!(rows[0].privilege, "write");
    assert!(
        held < 64 * 1024,
        "{held} bytes held scanning a {size}-byte row"
    );
}

/// The emulator's cut falls half-way through the body, here inside the one row's `members`
/// (skipped by the scanner, never decoded): the read is still incomplete, not a short row.
#[tokio::test]
async fn a_body_cut_inside_the_skipped_members_fails_as_incomplete() {
    let emu = workspace(1, 400, 1).await;
    // A client built here, before any bbsync client of this binary installed the provider.
    bbsync::tls::install_provider();
    // Where half-way is: after the members began, before the last of them.
    let body = reqwest::Client::new()
        .get(format!("{}/1.0/group-privileges/acme", emu.base_url()))
        .basic_auth(ADMIN_EMAIL, Some(ADMIN_TOKEN))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    let half = body.len() / 2;
    assert!(body[..half].contains("\"members\":["), "{}", &body[..200]);
    assert!(body[half..].contains("\"nickname\":\"p0399\""));
    emu.reset_requests();
    emu.inject_fault(Fault {
        kind: FaultKind::Truncated,
        path_contains: "/1.0/group-privileges/".into(),
        times: Some(1),
        ..Fault::default()
    });
    let e = client(&emu, Duration::from_secs(30), 0)
        .list_group_privileges()
        .await
        .expect_err("cut body");
    assert!(matches!(e, ApiError::Incomplete { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("the body broke off after {half} bytes")),
        "{e}"
    );
    assert_eq!(emu.requests().len(), 1);
}
