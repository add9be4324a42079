//! Decoding the 1.0 group-privileges listing: the byte scanner that drops `members`
//! (`bitbucket::skim::Skim`) against serde_json's reader path it replaced, and against
//! `serde_json::from_slice` of the whole body (the floor: no streaming, the body held whole).
//!
//! `cargo bench --bench decode`. Builds a deterministic body in memory, shaped as Bitbucket's:
//! `BENCH_GROUPS` groups (2,000) of `BENCH_MEMBERS` members each (100), drawn from 100,000
//! people, and rows (repository, group, privilege) referencing them until the body is about
//! `BENCH_MB` MB (200). Every row embeds its group with the full member list and two owner
//! objects. Then `BENCH_RUNS` rounds (5), each timing in turn:
//!
//! - (a) `serde_json::from_slice::<Vec<V1GroupPrivilege>>` of the whole body;
//! - (b) the old path: `each_in_array` over the body as an `io::Read` through a 64 KiB
//!   `BufReader` (what `get_array_streamed` did: serde_json's reader, `members` skipped by
//!   `IgnoredAny`);
//! - (c) the scanner fed the body in 64 KiB slices, each row decoded with `from_slice`.
//!
//! and prints the median MB/s (10^6 bytes per second) of each and the ratio (c)/(b).

use bbsync::bitbucket::dto::V1GroupPrivilege;
use bbsync::bitbucket::each_in_array;
use bbsync::bitbucket::skim::Skim;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn uuid(n: usize) -> String {
    format!(
        "{{{n:08x}-{:04x}-4{:03x}-8000-{:012x}}}",
        n % 65_521,
        n % 4096,
        n * 7919
    )
}

fn user(out: &mut String, n: usize) {
    let id = uuid(n);
    let _ = write!(
        out,
        r#"{{"display_name":"Person {n} Example","account_id":"557058:{n:08x}-71c4-4f5e-9a3b-0242ac120002","uuid":"{id}","nickname":"person{n}","is_active":true,"is_team":false,"avatar":"https://secure.gravatar.com/avatar/{n:032x}?d=https%3A%2F%2Favatar-management--avatars.us-west-2.prod.public.atl-paas.net%2Finitials%2FPE-3.png","resource_uri":"/1.0/users/%7B{n:08x}%7D"}}"#
    );
}

const OWNER: &str = r#"{"display_name":"Acme Corp","uuid":"{0b7a8bd5-5a6c-4c53-a45c-3f0e8b2c1d9e}","nickname":"acme","is_active":true,"is_team":true,"avatar":"https://bitbucket.org/account/acme/avatar/32/","resource_uri":"/1.0/users/acme"}"#;

/// The body and its number of rows.
fn body(groups: usize, members: usize, target: usize) -> (Vec<u8>, usize) {
    let people = 100_000;
    // Each group's JSON, members embedded, made once.
    let group_json: Vec<String> = (0..groups)
        .map(|g| {
            let mut s = format!(r#"{{"owner":{OWNER},"name":"Team {g:04}","members":["#);
            for k in 0..members {
                if k > 0 {
                    s.push(',');
                }
                user(&mut s, (g * 37 + k * 1009) % people);
            }
            let _ = write!(s, r#"],"slug":"team-{g:04}"}}"#);
            s
        })
        .collect();
    let mut out = String::with_capacity(target + 64 * 1024);
    out.push('[');
    let mut rows = 0;
    while out.len() < target {
        if rows > 0 {
            out.push(',');
        }
        let g = rows % groups;
        let repo = rows / 3;
        let privilege = ["read", "write", "admin"][(rows * 7) % 3];
        let _ = write!(
            out,
            r#"{{"repo":"acme/repo-{repo:05}","privilege":"{privilege}","group":{},"repository":{{"owner":{OWNER},"name":"repo-{repo:05}","slug":"repo-{repo:05}"}}}}"#,
            group_json[g]
        );
        rows += 1;
    }
    out.push(']');
    (out.into_bytes(), rows)
}

fn floor(body: &[u8]) -> Vec<V1GroupPrivilege> {
    serde_json::from_slice(body).expect("decodes")
}

fn reader(body: &[u8]) -> Vec<V1GroupPrivilege> {
    let mut rows = Vec::new();
    each_in_array(
        std::io::BufReader::with_capacity(CHUNK, body),
        &mut rows,
        Vec::push,
    )
    .expect("decodes");
    rows
}

fn scanner(body: &[u8]) -> Vec<V1GroupPrivilege> {
    let mut rows = Vec::new();
    let mut skim = Skim::new(&["members"]);
    for chunk in body.chunks(CHUNK) {
        skim.feed_rows(chunk, &mut rows, Vec::push)
            .expect("decodes");
    }
    skim.finish().expect("whole");
    rows
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no such flag:
    // build a tiny body then, to check that it runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let groups = env("BENCH_GROUPS", 2_000);
    let members = env("BENCH_MEMBERS", 100);
    let mb = env("BENCH_MB", if quick { 2 } else { 200 });
    let runs = env("BENCH_RUNS", if quick { 1 } else { 5 }).max(1);
    let started = Instant::now();
    let (body, rows) = body(groups, members, mb * 1_000_000);
    println!(
        "body: {:.1} MB, {rows} rows, {groups} groups of {members} members (built in {:.1} s)",
        body.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // The three agree before any is timed.
    let key = |p: &V1GroupPrivilege| (p.repo.clone(), p.group.slug.clone(), p.privilege.clone());
    let want: Vec<_> = floor(&body).iter().map(key).collect();
    assert_eq!(want.len(), rows);
    assert_eq!(reader(&body).iter().map(key).collect::<Vec<_>>(), want);
    assert_eq!(scanner(&body).iter().map(key).collect::<Vec<_>>(), want);

    type Decode = fn(&[u8]) -> Vec<V1GroupPrivilege>;
    let ways: [(&str, Decode); 3] = [
        ("(a) from_slice, whole body (floor)", floor),
        ("(b) old: each_in_array, io::Read, 64 KiB", reader),
        ("(c) new: Skim, 64 KiB chunks", scanner),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    for _ in 0..runs {
        for (i, (_, decode)) in ways.iter().enumerate() {
            let t = Instant::now();
            let out = black_box(decode(black_box(&body)));
            times[i].push(t.elapsed());
            assert_eq!(out.len(), rows);
        }
    }
    let speed = |d: Duration| body.len() as f64 / 1e6 / d.as_secs_f64();
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    println!("\nmedian of {runs} runs, interleaved:\n");
    println!("| decode | median | MB/s |");
    println!("|---|---:|---:|");
    for ((name, _), m) in ways.iter().zip(&medians) {
        println!("| {name} | {:.3} s | {:.0} |", m.as_secs_f64(), speed(*m));
    }
    println!(
        "\nnew/old: {:.2}x; new/floor: {:.2}x",
        speed(medians[2]) / speed(medians[1]),
        speed(medians[2]) / speed(medians[0])
    );
}
