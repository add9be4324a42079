//! Benchmark: bbsync's LDAP source against `ldapsearch`, side by side, on one private slapd
//! holding 100k people and 2k groups (some nested, one of 20k members).
//!
//! `cargo bench --bench ldap_source` (needs slapd, ldap-utils and openssl, as the tests do).
//! Prints the median wall time of each over alternating runs, their ratio, and bbsync's peak RSS.
//! Goal (issue 3): bbsync <= 1.5x ldapsearch's wall time, <= 300 MiB peak RSS.
//! Options by environment: BENCH_USERS (100000), BENCH_GROUPS (2000), BENCH_RUNS (5).

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

/// Deterministic directory: group 0 holds 20% of people (20k of 100k); every tenth group nests
/// the next one; the others hold ~50 people each.
fn directory(users: usize, groups: usize) -> String {
    let mut s = String::with_capacity(users * 260 + groups * 3000);
    for i in 0..users {
        let _ = write!(
            s,
            "dn: uid=u{i:06},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: atlassianAccount\nuid: u{i:06}\ncn: User {i}\nsn: {i}\nmail: u{i:06}@example.com\natlassianAccountId: 557058:{i:08x}-0000-4000-8000-000000000000\n"
        );
        if i % 97 == 0 {
            s.push_str("nsAccountLock: TRUE\n");
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
    for g in 0..groups {
        let _ = write!(
            s,
            "dn: cn=g{g:05},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: g{g:05}\n"
        );
        let members = if g == 0 { users / 5 } else { 50 };
        for k in 0..members {
            let u = if g == 0 { k } else { (next() as usize) % users };
            let _ = writeln!(s, "member: uid=u{u:06},ou=people,{BASE}");
        }
        if g % 10 == 0 && g + 1 < groups {
            let _ = writeln!(s, "member: cn=g{:05},ou=groups,{BASE}", g + 1);
        }
        s.push('\n');
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let users = env_or("BENCH_USERS", 100_000);
    let groups = env_or("BENCH_GROUPS", 2_000);
    let runs = env_or("BENCH_RUNS", 5).max(1);
    let bbsync = env!("CARGO_BIN_EXE_bbsync");

    let t = Instant::now();
    let ldif = directory(users, groups);
    let slapd = Slapd::start(Options {
        preload: Some(ldif),
        ..Default::default()
    })
    .expect("start slapd (install slapd, ldap-utils, openssl)");
    println!(
        "slapd loaded {users} people and {groups} groups in {:.1} s (slapadd -q)",
        t.elapsed().as_secs_f64()
    );

    let attrs = [
        "objectClass",
        "atlassianAccountId",
        "mail",
        "cn",
        "uid",
        "memberOf",
        "userAccountControl",
        "pwdAccountLockedTime",
        "nsAccountLock",
        "entryUUID",
        "member",
        "uniqueMember",
        "memberUid",
    ];
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
[directory]
disabled_attribute = "nsAccountLock"
[[groups]]
name = "all"
from = ["g00000"]
"#,
            slapd.url()
        ),
    )
    .expect("write config");

    let run_bbsync = || -> (Duration, String) {
        let t = Instant::now();
        let out = Command::new(bbsync)
            .args(["source", "-c"])
            .arg(&cfg)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .output()
            .expect("run bbsync");
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "bbsync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (took, String::from_utf8_lossy(&out.stderr).trim().to_owned())
    };
    let url = slapd.url();
    let run_ldapsearch = || -> Duration {
        let t = Instant::now();
        let mut cmd = Command::new("ldapsearch");
        cmd.args([
            "-x",
            "-LLL",
            "-H",
            &url,
            "-D",
            READER_DN,
            "-w",
            READER_PW,
            "-b",
            BASE,
            "-E",
            "pr=1000/noprompt",
        ])
        .arg("(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))")
        .args(attrs)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let status = cmd.status().expect("run ldapsearch");
        assert!(status.success(), "ldapsearch failed");
        t.elapsed()
    };

    if let Ok(out) = std::env::var("BENCH_PERF_OUT") {
        // Profile one bbsync run (perf with the software cpu-clock event works in containers).
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
                bbsync,
                "source",
                "-c",
            ])
            .arg(&cfg)
            .stdout(Stdio::null())
            .status();
    }
    // Warm the server's caches for both, then alternate so drift hits both alike.
    let (_, summary) = run_bbsync();
    run_ldapsearch();
    let (mut ours, mut theirs, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (d, line) = run_bbsync();
        ours.push(d);
        rss.push(line);
        theirs.push(run_ldapsearch());
    }
    let (m_ours, m_theirs) = (median(ours.clone()), median(theirs.clone()));
    println!("bbsync source (read + resolve): {summary}");
    println!(
        "median of {runs} runs: bbsync {:.0} ms, ldapsearch -E pr=1000/noprompt {:.0} ms, ratio {:.2}x (goal <= 1.5x)",
        m_ours.as_secs_f64() * 1000.0,
        m_theirs.as_secs_f64() * 1000.0,
        m_ours.as_secs_f64() / m_theirs.as_secs_f64()
    );
    println!(
        "bbsync runs (ms): {:?}",
        ours.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    println!(
        "ldapsearch runs (ms): {:?}",
        theirs.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    println!("bbsync per run: {rss:?}");
    if Command::new("hyperfine")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("\nhyperfine, same two commands:");
        let ours_cmd = format!("{bbsync} source -c {}", cfg.display());
        let theirs_cmd = format!(
            "ldapsearch -x -LLL -H {url} -D {READER_DN} -w {READER_PW} -b {BASE} -E pr=1000/noprompt '(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))' {} > /dev/null",
            attrs.join(" ")
        );
        let _ = Command::new("hyperfine")
            .args(["--warmup", "1", "--runs", &runs.to_string()])
            .arg(&ours_cmd)
            .arg(&theirs_cmd)
            .status();
    }
}
