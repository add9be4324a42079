//! Benchmark: bbsync's LDAP source against `ldapsearch`, paired, on one private slapd holding a
//! company-shaped directory (issue 20, item 4).
//!
//! `cargo bench --bench ldap_source` (needs slapd, ldap-utils and openssl, as the tests do).
//!
//! The directory (deterministic, the same bytes on every run): BENCH_USERS people (100,000),
//! 1 in 97 with the ppolicy administrative lock `pwdAccountLockedTime: 000001010000Z` (the
//! testkit's slapd loads the ppolicy module, which defines that operational attribute, so
//! `slapadd` accepts it; no `nsAccountLock` anywhere); 1 in 89 people also carries a timed lockout
//! (`pwdAccountLockedTime: 2026...Z`, not a leaver) instead, so both shapes are read. BENCH_GROUPS
//! groups (2,000): `g00000` holds BENCH_BIG people (20,000) and is itself a member of `g00001`;
//! `g00002` and `g00003` are members of each other (a cycle); every other group holds 100-103
//! people (about 223k member values in all at the defaults; the total is printed).
//!
//! Each round runs, one after the other, A B A B:
//!   1. `bbsync source -c bench.toml --output json > /dev/null`
//!   2. `ldapsearch -x -LLL -E pr=1000/noprompt` of the same two searches (people under
//!      ou=people, groups under ou=groups, the attributes bbsync asks for) to /dev/null
//!   3. `bbsync source -c bench.toml` (human output) > /dev/null
//!   4. the same ldapsearch again
//!
//! and pairs 1 with 2 and 3 with 4. It prints, for each command, the median wall time, user+sys
//! CPU (from `wait4` of the child), bbsync's peak RSS (`ru_maxrss` of the child), the ratio of the
//! medians and the median of the paired ratios; then the same commands under hyperfine when it
//! is installed. Goal (issue 20): bbsync <= 1.2x ldapsearch's wall time, <= 150 MB peak RSS.
//!
//! Options by environment:
//! - BENCH_USERS (100000), BENCH_GROUPS (2000), BENCH_BIG (20000): the directory's size.
//! - BENCH_RUNS (7): rounds (pairs of each kind); at least 1.
//! - BENCH_BBSYNC: the bbsync binary to measure (default: the one this bench was built with),
//!   e.g. a copy built from an older commit, for before/after tables on the same server.
//! - BENCH_RUST_LOG (error): RUST_LOG for bbsync (`bbsync::source=debug` shows read/resolve times).
//! - BENCH_PERF_OUT: also record one `bbsync source --output json` run with perf to this file.
//! - BENCH_HYPERFINE (1): 0 skips the hyperfine runs.

use bbsync_testkit::{Options, Slapd, BASE, READER_DN, READER_PW};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The directory as LDIF, and how many member values its groups hold.
fn directory(users: usize, groups: usize, big: usize) -> (String, usize) {
    let mut s = String::with_capacity(users * 300 + groups * 5000);
    for i in 0..users {
        let _ = write!(
            s,
            "dn: uid=u{i:06},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: u{i:06}\ncn: User {i}\nsn: {i}\nmail: u{i:06}@example.com\natlassianAccountId: 557058:{i:08x}-0000-4000-8000-000000000000\n"
        );
        if i % 97 == 0 {
            s.push_str("pwdAccountLockedTime: 000001010000Z\n");
        } else if i % 89 == 0 {
            s.push_str("pwdAccountLockedTime: 20260101000000Z\n");
        }
        s.push('\n');
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut values = 0;
    for g in 0..groups {
        let _ = write!(
            s,
            "dn: cn=g{g:05},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: g{g:05}\n"
        );
        let members = if g == 0 { big.min(users) } else { 100 + g % 4 };
        // Distinct people per group (a repeated value would be refused by slapadd).
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < members.min(users) {
            picked.insert(if g == 0 {
                picked.len()
            } else {
                (next() as usize) % users
            });
        }
        for u in picked {
            let _ = writeln!(s, "member: uid=u{u:06},ou=people,{BASE}");
            values += 1;
        }
        // g00000 (the big one) inside g00001; g00002 and g00003 inside each other.
        let nested: &[usize] = match g {
            1 => &[0],
            2 => &[3],
            3 => &[2],
            _ => &[],
        };
        for n in nested.iter().filter(|n| **n < groups) {
            let _ = writeln!(s, "member: cn=g{n:05},ou=groups,{BASE}");
            values += 1;
        }
        s.push('\n');
    }
    (s, values)
}

/// `struct rusage` of Linux (x86_64 and aarch64: two `timeval`s, then fourteen `long`s).
#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

/// One finished run of a child.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    maxrss_kib: u64,
}

/// Runs `cmd` (stdout to /dev/null) and measures it with wait4; panics when it fails.
fn measure(cmd: &mut Command, what: &str) -> Run {
    // stderr to a file: a pipe nobody reads while waiting could fill and block the child.
    let err_path = std::env::temp_dir().join(format!("bbsync-bench-{}.err", std::process::id()));
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let pid = child.id() as i32;
    let mut status = 0i32;
    let mut ru = Rusage::default();
    // SAFETY: wait4 writes an int and a struct rusage (the layout above) for our own child,
    // which std never waits for (the Child is dropped without wait).
    let rc = unsafe { wait4(pid, &mut status, 0, &mut ru) };
    let wall = started.elapsed();
    assert_eq!(rc, pid, "wait4 for {what} failed");
    drop(child);
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    // WIFEXITED && WEXITSTATUS == 0
    assert!(
        status & 0x7f == 0 && (status >> 8) & 0xff == 0,
        "{what} failed (wait status {status}): {err}"
    );
    let tv = |t: [i64; 2]| Duration::from_micros((t[0] * 1_000_000 + t[1]) as u64);
    Run {
        wall,
        cpu: tv(ru.utime) + tv(ru.stime),
        maxrss_kib: ru.maxrss as u64,
    }
}

fn median<T: Ord + Copy>(v: impl IntoIterator<Item = T>) -> T {
    let mut v: Vec<T> = v.into_iter().collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let users = env_or("BENCH_USERS", 100_000);
    let groups = env_or("BENCH_GROUPS", 2_000);
    let big = env_or("BENCH_BIG", 20_000);
    let runs = env_or("BENCH_RUNS", 7).max(1);
    let bbsync =
        std::env::var("BENCH_BBSYNC").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bbsync").to_owned());
    let rust_log = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "error".into());

    let t = Instant::now();
    let (ldif, values) = directory(users, groups, big);
    let slapd = Slapd::start(Options {
        preload: Some(ldif),
        ..Default::default()
    })
    .expect("start slapd (install slapd, ldap-utils, openssl)");
    println!(
        "slapd loaded {users} people (1 in 97 with pwdAccountLockedTime: 000001010000Z) and {groups} groups ({values} member values; g00000 of {big} people nested in g00001; g00002 <-> g00003 a cycle) in {:.1} s (slapadd -q)",
        t.elapsed().as_secs_f64()
    );

    // What bbsync asks for with this config (src/source/ldap.rs user_attributes and
    // group_attributes): the defaults of [directory], on an OpenLDAP server.
    let user_attrs = [
        "atlassianAccountId",
        "cn",
        "entryUUID",
        "mail",
        "memberOf",
        "pwdAccountLockedTime",
        "uid",
        "userAccountControl",
    ];
    let group_attrs = ["cn", "member", "memberUid", "uniqueMember"];
    let users_filter = "(objectClass=inetOrgPerson)";
    let groups_filter =
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup)(objectClass=group))";
    let cfg = slapd.dir().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[bitbucket]
workspace = "bench"
[credentials.none]
kind = "access_token"
token = "unused"
[source]
kind = "ldap"
url = "{}"
bind_dn = "{READER_DN}"
bind_password = "{READER_PW}"
users_base = "ou=people,{BASE}"
groups_base = "ou=groups,{BASE}"
page_size = 1000
[[groups]]
name = "all"
from = ["g00001"]
"#,
            slapd.url()
        ),
    )
    .expect("write config");

    let url = slapd.url();
    let bbsync_cmd = |json: bool| {
        let mut c = Command::new(&bbsync);
        c.args(["source", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", &rust_log);
        if json {
            c.args(["--output", "json"]);
        }
        c
    };
    // The two searches bbsync makes, one after the other, like bbsync on one connection each.
    let ldapsearch_script = {
        let one = |base: String, filter: &str, attrs: &[&str]| {
            format!(
                "ldapsearch -x -LLL -H {url} -D {READER_DN} -w {READER_PW} -b {base} -E pr=1000/noprompt '{filter}' {} > /dev/null",
                attrs.join(" ")
            )
        };
        format!(
            "{} && {}",
            one(format!("ou=people,{BASE}"), users_filter, &user_attrs),
            one(format!("ou=groups,{BASE}"), groups_filter, &group_attrs)
        )
    };
    let ldapsearch_sh = slapd.dir().join("ldapsearch.sh");
    std::fs::write(&ldapsearch_sh, format!("{ldapsearch_script}\n")).expect("write script");
    let ldapsearch_cmd = || {
        let mut c = Command::new("sh");
        c.arg(&ldapsearch_sh);
        c
    };
    let bbsync_sh = |json: bool| {
        format!(
            "{bbsync} source -c {}{}",
            cfg.display(),
            if json { " --output json" } else { "" }
        )
    };

    if let Ok(out) = std::env::var("BENCH_PERF_OUT") {
        // Profile one run (perf with the software cpu-clock event works in containers).
        let _ = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "2000",
                "-g",
                "-o",
                &out,
                "--",
            ])
            .args([&bbsync, "source", "-c"])
            .arg(&cfg)
            .args(["--output", "json"])
            .env("RUST_LOG", &rust_log)
            .stdout(Stdio::null())
            .status();
    }

    // Warm the server's caches for all three, then alternate so drift hits each alike.
    measure(&mut bbsync_cmd(true), "bbsync source --output json");
    measure(&mut bbsync_cmd(false), "bbsync source");
    measure(&mut ldapsearch_cmd(), "ldapsearch");
    let mut rounds: Vec<[Run; 4]> = Vec::new();
    for _ in 0..runs {
        rounds.push([
            measure(&mut bbsync_cmd(true), "bbsync source --output json"),
            measure(&mut ldapsearch_cmd(), "ldapsearch"),
            measure(&mut bbsync_cmd(false), "bbsync source"),
            measure(&mut ldapsearch_cmd(), "ldapsearch"),
        ]);
    }

    println!(
        "\n{runs} rounds, each A B A B: bbsync json, ldapsearch, bbsync human, ldapsearch (bbsync: {bbsync})"
    );
    println!(
        "| command | median wall | median user+sys CPU | peak RSS (max of runs) | ratio of medians | median paired ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, a, b) in [
        ("bbsync source --output json", 0, 1),
        ("bbsync source (human)", 2, 3),
    ] {
        let wall = median(rounds.iter().map(|r| r[a].wall));
        let cpu = median(rounds.iter().map(|r| r[a].cpu));
        let rss = rounds.iter().map(|r| r[a].maxrss_kib).max().unwrap_or(0);
        let their = median(rounds.iter().map(|r| r[b].wall));
        let their_cpu = median(rounds.iter().map(|r| r[b].cpu));
        // Ratios in thousandths, to take a median of integers.
        let paired = median(
            rounds
                .iter()
                .map(|r| (r[a].wall.as_secs_f64() / r[b].wall.as_secs_f64() * 1000.0) as u64),
        );
        println!(
            "| {label} | {:.0} ms | {:.0} ms | {:.1} MiB ({:.1} MB) | {:.2}x | {:.2}x |",
            ms(wall),
            ms(cpu),
            rss as f64 / 1024.0,
            rss as f64 * 1024.0 / 1e6,
            wall.as_secs_f64() / their.as_secs_f64(),
            paired as f64 / 1000.0
        );
        println!(
            "| ldapsearch, paired with it | {:.0} ms | {:.0} ms | - | - | - |",
            ms(their),
            ms(their_cpu)
        );
    }
    for (i, label) in ["bbsync json", "ldapsearch", "bbsync human", "ldapsearch"]
        .iter()
        .enumerate()
    {
        println!(
            "{label:>13} runs (ms): {:?}",
            rounds
                .iter()
                .map(|r| r[i].wall.as_millis())
                .collect::<Vec<_>>()
        );
    }
    println!("goal (issue 20): <= 1.2x ldapsearch, <= 150 MB peak RSS");

    let hyperfine = std::env::var("BENCH_HYPERFINE").map_or(true, |v| v != "0");
    if hyperfine
        && Command::new("hyperfine")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        println!("\nhyperfine, the same three commands:");
        // Output goes to /dev/null (hyperfine's default); -N: no shell in between.
        let _ = Command::new("hyperfine")
            .args(["-N", "--warmup", "1", "--runs", &runs.to_string()])
            .args(["-n", "bbsync json", &bbsync_sh(true)])
            .args(["-n", "bbsync human", &bbsync_sh(false)])
            .args([
                "-n",
                "ldapsearch",
                &format!("sh {}", ldapsearch_sh.display()),
            ])
            .env("RUST_LOG", &rust_log)
            .status();
    }
}
