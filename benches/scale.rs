//! Benchmark (issue 20): `bbsync plan` at scale against the emulator serving the 1.0
//! group-privileges listing with every group's members embedded in every row, beside `curl`
//! fetching the same reads into /dev/null (the floor), paired; then the daemon's idle RSS.
//!
//! `cargo bench --bench scale` (needs `curl`). Prints one table per shape. Options by
//! environment:
//! - `BENCH_SHAPES`: comma-separated `people x groups x repositories`, default
//!   `10000x500x5000,100000x2000x20000`;
//! - `BENCH_PAIRS` (3): bbsync / curl pairs per shape, alternating A B A B (0: only the idle
//!   measure);
//! - `BENCH_IDLE_SECS` (30): how long after the first reconcile `bbsync run` is left idle
//!   before its RSS is read (0: skip the idle measure); `BENCH_IDLE_SHAPE` (the last shape);
//! - `BENCH_KEEP=1`: keep the generated files (printed path) to rerun by hand;
//!   `BENCH_HOLD_SECS`: keep each shape's emulator up this long after its pairs, for that.
//!
//! The data set is deterministic ([`generate`]): person `i` is in team `i % G` and in team
//! `mix(i) % G` (about 2P/G members a team); repository `r` belongs to team `r % G`, whose
//! project is `T{team}`; every team has write on its own project, read on the next team's, and
//! (even teams) read through a glob on the repositories of the team 7 after it: 2.5 group
//! grants a repository. Bitbucket holds what the directory says, except for a delta the plan
//! must find: 1 person in 100 is locked in the directory but still in their two groups (2
//! removals each), 1 in 1,000 is in the directory's teams but not yet in Bitbucket's (adds),
//! every 50th repository lacks one of its grants and every 100th has an extra one.
//!
//! The safety guards are opened wide (the 2,000 removals at 100k would hold every run, and
//! a held run is not a successful one, so `/readyz` would never answer 200 for the idle
//! measure). The direct grants of leavers are not read (`offboarding.direct_grants = false`): that read
//! is per leaver (one effective-permissions listing each, then a request per repository they
//! reach), so it measures the number of leavers, not the size of the workspace.
//!
//! Measured: wall time (spawn to exit), user+sys CPU and peak RSS (`ru_maxrss` from `wait4`)
//! of the `bbsync plan` process, and the same of one `curl` process fetching, over one
//! connection, exactly the GETs bbsync sent (taken from the emulator's request log of the
//! first run). bbsync's own phases come from the JSON report (`timings_ms`).

use bbsync_emulator::{
    CredentialKind, Emulator, Seed, SeedCredential, SeedGroup, SeedGroupGrant, SeedProject,
    SeedRepo, SeedUser, SeedWorkspace,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EMAIL: &str = "bench-admin@example.com";
const TOKEN: &str = "bench-admin-token";
const BASE: &str = "dc=example,dc=com";

#[derive(Clone, Copy, Debug)]
struct Shape {
    people: usize,
    groups: usize,
    repos: usize,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.people, self.groups, self.repos)
    }
}

fn parse_shape(s: &str) -> Shape {
    let n: Vec<usize> = s
        .split('x')
        .map(|p| {
            p.trim()
                .parse()
                .expect("BENCH_SHAPES: numbers like 10000x500x5000")
        })
        .collect();
    assert_eq!(n.len(), 3, "BENCH_SHAPES: people x groups x repositories");
    Shape {
        people: n[0],
        groups: n[1].max(8),
        repos: n[2],
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fixed 64-bit mix (splitmix64's finaliser): the generator's only source of "randomness".
fn mix(i: usize) -> usize {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize
}

fn account(i: usize) -> String {
    format!(
        "557058:{i:08x}-0000-4000-8000-{:012x}",
        mix(i) & 0xffff_ffff_ffff
    )
}

fn uid(i: usize) -> String {
    format!("p{i:06}")
}

fn team(g: usize) -> String {
    format!("team-{g:04}")
}

fn project(g: usize) -> String {
    format!("T{g:04}")
}

fn repo(r: usize, groups: usize) -> String {
    format!("t{:04}-{:03}", r % groups, r / groups)
}

/// The teams person `i` belongs to (one or two).
fn teams_of(i: usize, groups: usize) -> Vec<usize> {
    let (a, b) = (i % groups, mix(i) % groups);
    if a == b {
        vec![a]
    } else {
        vec![a, b]
    }
}

fn is_leaver(i: usize) -> bool {
    i % 100 == 37
}

fn is_joiner(i: usize) -> bool {
    i % 1000 == 11
}

/// The grants the rules give: (repository, team, permission).
fn desired_grants(s: Shape) -> Vec<(usize, usize, &'static str)> {
    let g = s.groups;
    let mut out = Vec::new();
    for r in 0..s.repos {
        let t = r % g;
        out.push((r, t, "write"));
        out.push((r, (t + g - 1) % g, "read"));
        let glob_team = (t + g - 7) % g;
        if glob_team.is_multiple_of(2) && glob_team != t && glob_team != (t + g - 1) % g {
            out.push((r, glob_team, "read"));
        }
    }
    out
}

struct DataSet {
    seed: Seed,
    ldif: String,
    rules: String,
}

/// The deterministic data set of `s` (see the file's header).
fn generate(s: Shape) -> DataSet {
    let admin = account(usize::MAX >> 1);
    let mut users = vec![SeedUser {
        account_id: admin.clone(),
        display_name: "IT Admin".into(),
        nickname: "it-admin".into(),
        ..Default::default()
    }];
    let mut members: Vec<Vec<String>> = vec![Vec::new(); s.groups];
    let mut dir_members: Vec<Vec<usize>> = vec![Vec::new(); s.groups];
    let mut ldif = String::with_capacity(s.people * 300 + s.groups * 200);
    for i in 0..s.people {
        let acc = account(i);
        users.push(SeedUser {
            account_id: acc.clone(),
            display_name: format!("Person {i}"),
            nickname: uid(i),
            email: Some(format!("{}@example.com", uid(i))),
            ..Default::default()
        });
        let _ = write!(
            ldif,
            "dn: uid={u},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: Person {i}\nsn: {i}\nmail: {u}@example.com\natlassianAccountId: {acc}\n",
            u = uid(i)
        );
        if is_leaver(i) {
            ldif.push_str("nsAccountLock: TRUE\n");
        }
        ldif.push('\n');
        for t in teams_of(i, s.groups) {
            dir_members[t].push(i);
            if !is_joiner(i) {
                members[t].push(acc.clone());
            }
        }
    }
    for (t, people) in dir_members.iter().enumerate() {
        let _ = writeln!(
            ldif,
            "dn: cn={},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {}",
            team(t),
            team(t)
        );
        for i in people {
            let _ = writeln!(ldif, "member: uid={},ou=people,{BASE}", uid(*i));
        }
        ldif.push('\n');
    }
    let mut group_grants: Vec<SeedGroupGrant> = Vec::new();
    for (k, (r, t, p)) in desired_grants(s).into_iter().enumerate() {
        // Every 50th repository lacks its first grant (the plan adds it).
        if r % 50 == 3 && k % 3 == 0 {
            continue;
        }
        group_grants.push(SeedGroupGrant {
            repo: repo(r, s.groups),
            group: team(t),
            permission: p.into(),
        });
    }
    for r in (0..s.repos).filter(|r| r % 100 == 5) {
        // An extra grant of a managed team the rules do not give (the plan removes it).
        group_grants.push(SeedGroupGrant {
            repo: repo(r, s.groups),
            group: team((r % s.groups + s.groups / 2) % s.groups),
            permission: "admin".into(),
        });
    }
    let mut rules = String::new();
    for t in 0..s.groups {
        let _ = write!(
            rules,
            "[[groups]]\nname = \"Team {t:04}\"\nfrom = [\"{tm}\"]\n[[grants]]\ngroup = \"{tm}\"\npermission = \"write\"\nprojects = [\"{p}\"]\n[[grants]]\ngroup = \"{tm}\"\npermission = \"read\"\nprojects = [\"{next}\"]\n",
            tm = team(t),
            p = project(t),
            next = project((t + 1) % s.groups),
        );
        if t.is_multiple_of(2) {
            let _ = write!(
                rules,
                "[[grants]]\ngroup = \"{tm}\"\npermission = \"read\"\nglobs = [\"t{g:04}-*\"]\n",
                tm = team(t),
                g = (t + 7) % s.groups,
            );
        }
    }
    let seed = Seed {
        workspace: SeedWorkspace {
            slug: "acme".into(),
            owner: admin.clone(),
            admins: vec![admin.clone()],
            ..Default::default()
        },
        users,
        projects: (0..s.groups)
            .map(|t| SeedProject {
                key: project(t),
                ..Default::default()
            })
            .collect(),
        repositories: (0..s.repos)
            .map(|r| SeedRepo {
                slug: repo(r, s.groups),
                project: project(r % s.groups),
                ..Default::default()
            })
            .collect(),
        groups: members
            .into_iter()
            .enumerate()
            .map(|(t, m)| SeedGroup {
                name: format!("Team {t:04}"),
                members: m,
                ..Default::default()
            })
            .collect(),
        group_grants,
        credentials: vec![SeedCredential {
            id: "admin".into(),
            kind: CredentialKind::ApiToken,
            email: Some(EMAIL.into()),
            token: Some(TOKEN.into()),
            account_id: Some(admin),
            scopes: bbsync_emulator::auth::API_TOKEN_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Default::default()
        }],
        rate_limit_per_hour: 100_000_000,
        ..Default::default()
    };
    DataSet { seed, ldif, rules }
}

fn config_text(api_url: &str, dir: &Path, rules: &str, listen: Option<&str>) -> String {
    let daemon = listen
        .map(|l| format!("[daemon]\ninterval_secs = 3600\n[http]\nlisten = \"{l}\"\n"))
        .unwrap_or_default();
    format!(
        r#"mode = "dry-run"
[bitbucket]
workspace = "acme"
api_url = "{api_url}"
timeout_secs = 60
[credentials.admin]
kind = "api_token"
email = "{EMAIL}"
token = "{TOKEN}"
[source]
kind = "ldif"
path = "{ldif}"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "{audit}"
[offboarding]
state_dir = "{state}"
direct_grants = false
[safety]
max_removals = 1000000
max_removal_ratio = 1.0
max_group_removal_ratio = 1.0
[apply]
requests_per_hour = 100000000
burst = 1000
[log]
format = "json"
{daemon}{rules}"#,
        ldif = dir.join("directory.ldif").display(),
        audit = dir.join("audit.jsonl").display(),
        state = dir.join("state").display(),
    )
}

/// What one child process cost.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// A measured command, as the launcher receives it (one JSON line).
#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where stdout goes (`None`: /dev/null).
    stdout: Option<String>,
}

/// What the launcher answers (one JSON line).
#[derive(serde::Serialize, serde::Deserialize)]
struct Done {
    wall_us: u64,
    cpu_us: u64,
    max_rss_kib: u64,
    code: i32,
}

/// A copy of this benchmark started before anything is generated, that spawns the measured
/// commands: a child's `ru_maxrss` starts from the high-water mark of the process it was
/// spawned from (exec keeps it), so spawned from the bench, which holds the emulator and its
/// gigabyte answers, a 100 MiB plan would read as 400+ MiB.
struct Launcher {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: std::io::BufReader<std::process::ChildStdout>,
}

impl Launcher {
    fn start() -> Launcher {
        let mut child = Command::new(std::env::current_exe().expect("the bench's own path"))
            .env("BENCH_LAUNCHER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the launcher");
        let to = child.stdin.take().expect("the launcher's stdin");
        let from = std::io::BufReader::new(child.stdout.take().expect("the launcher's stdout"));
        Launcher { child, to, from }
    }

    /// Runs `cmd` to its end, measured with `wait4` by the launcher.
    fn measure(&mut self, cmd: &Command, out: Option<&Path>) -> (Cost, i32) {
        use std::io::{BufRead, Write};
        let job = Job {
            program: cmd.get_program().to_string_lossy().into_owned(),
            args: cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: cmd
                .get_envs()
                .filter_map(|(k, v)| {
                    Some((
                        k.to_string_lossy().into_owned(),
                        v?.to_string_lossy().into_owned(),
                    ))
                })
                .collect(),
            stdout: out.map(|p| p.display().to_string()),
        };
        let line = serde_json::to_string(&job).expect("a job serializes");
        writeln!(self.to, "{line}").expect("write to the launcher");
        let mut answer = String::new();
        self.from
            .read_line(&mut answer)
            .expect("read from the launcher");
        let done: Done = serde_json::from_str(&answer).expect("the launcher's answer");
        (
            Cost {
                wall: Duration::from_micros(done.wall_us),
                cpu: Duration::from_micros(done.cpu_us),
                max_rss_kib: done.max_rss_kib,
            },
            done.code,
        )
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The launcher's loop: one job a line on stdin, its cost a line on stdout.
fn launcher() {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let job: Job = serde_json::from_str(&line).expect("a job");
        let mut cmd = Command::new(&job.program);
        cmd.args(&job.args).envs(job.env);
        let (cost, code) = measure(cmd, job.stdout.as_deref().map(Path::new));
        let done = Done {
            wall_us: cost.wall.as_micros() as u64,
            cpu_us: cost.cpu.as_micros() as u64,
            max_rss_kib: cost.max_rss_kib,
            code,
        };
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string(&done).expect("serializes")
        );
        let _ = stdout.flush();
    }
}

/// Runs `cmd` to its end, stdout into `out` (or /dev/null), measuring it with `wait4`.
fn measure(mut cmd: Command, out: Option<&Path>) -> (Cost, i32) {
    let stdout = match out {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("create the output file")),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let child = cmd
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be filled in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and usage are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        Cost {
            wall,
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss as u64,
        },
        code,
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

struct Measured {
    shape: Shape,
    body_bytes: u64,
    requests: usize,
    plan: Vec<Cost>,
    curl: Vec<Cost>,
    changes: usize,
    timings: serde_json::Value,
}

fn run_shape(
    rt: &tokio::runtime::Runtime,
    launch: &mut Launcher,
    shape: Shape,
    pairs: usize,
    keep: bool,
) -> Measured {
    let bin = env!("CARGO_BIN_EXE_bbsync");
    let t = Instant::now();
    let data = generate(shape);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dir_path = if keep {
        dir.keep()
    } else {
        dir.path().to_path_buf()
    };
    std::fs::write(dir_path.join("directory.ldif"), &data.ldif).expect("write the LDIF");
    let emu = rt
        .block_on(Emulator::start(
            data.seed.clone(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("the emulator starts");
    let cfg = dir_path.join("bench.toml");
    std::fs::write(
        &cfg,
        config_text(&emu.base_url(), &dir_path, &data.rules, None),
    )
    .expect("write the config");
    println!(
        "{shape}: generated {} users, {} group grants, {} rules lines in {:.1} s ({})",
        data.seed.users.len(),
        data.seed.group_grants.len(),
        data.rules.lines().count(),
        t.elapsed().as_secs_f64(),
        dir_path.display()
    );
    drop(data);

    let plan_cmd = || {
        let mut c = Command::new(bin);
        c.args(["plan", "-c"])
            .arg(&cfg)
            .args(["--output", "json"])
            .env("RUST_LOG", "warn");
        c
    };
    // The first run: its requests are the floor's reads, its report the phases.
    emu.reset_requests();
    let report_path = dir_path.join("plan.json");
    let (first, code) = launch.measure(&plan_cmd(), Some(&report_path));
    assert!(
        code == 0 || code == 1,
        "bbsync plan exited {code}; rerun with BENCH_KEEP=1 and look at {}",
        dir_path.display()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("read the report"))
            .expect("the JSON report");
    let changes = report["plan"]["changes"].as_array().map_or(0, Vec::len);
    let gets: Vec<String> = emu
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| format!("{}{}", emu.base_url(), r.path))
        .collect();
    let curl_config = dir_path.join("curl.conf");
    let mut text = format!("user = \"{EMAIL}:{TOKEN}\"\nsilent\nfail\n");
    for u in &gets {
        let _ = writeln!(text, "url = \"{u}\"\noutput = \"/dev/null\"");
    }
    std::fs::write(&curl_config, text).expect("write curl's config");
    let curl_cmd = || {
        let mut c = Command::new("curl");
        c.arg("-K").arg(&curl_config);
        c
    };
    let (probe, code) = launch.measure(&curl_cmd(), None);
    assert_eq!(code, 0, "curl failed on the reads bbsync made");
    let body_bytes = {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{size_download}", "-u"])
            .arg(format!("{EMAIL}:{TOKEN}"))
            .arg(format!("{}/1.0/group-privileges/acme", emu.base_url()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    println!(
        "{shape}: first plan {} ({} CPU, {}), {} changes, {} GETs; curl of them {}",
        secs(first.wall),
        secs(first.cpu),
        mib(first.max_rss_kib),
        changes,
        gets.len(),
        secs(probe.wall)
    );
    let (mut plan, mut curl) = (Vec::new(), Vec::new());
    for k in 0..pairs {
        let (a, code) = launch.measure(&plan_cmd(), None);
        assert!(code == 0 || code == 1, "bbsync plan exited {code}");
        let (b, _) = launch.measure(&curl_cmd(), None);
        println!(
            "  pair {}: bbsync {} (CPU {}, {}), curl {} (CPU {})",
            k + 1,
            secs(a.wall),
            secs(a.cpu),
            mib(a.max_rss_kib),
            secs(b.wall),
            secs(b.cpu)
        );
        plan.push(a);
        curl.push(b);
    }
    if let Some(hold) = std::env::var("BENCH_HOLD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!(
            "holding the emulator at {} for {hold} s: bbsync plan -c {}",
            emu.base_url(),
            cfg.display()
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
    rt.block_on(emu.shutdown());
    Measured {
        shape,
        body_bytes,
        requests: gets.len(),
        plan,
        curl,
        changes,
        timings: report["timings_ms"].clone(),
    }
}

/// What `bbsync run` held: RSS when its first reconcile ended, then `idle` later with its
/// anonymous (heap) and file-backed (the binary's code, libc) parts, and the peak (KiB).
struct Idle {
    after_run: u64,
    rss: u64,
    anon: u64,
    hwm: u64,
}

/// `bbsync run` on `shape`'s data set: RSS `idle` after its first reconcile ended.
fn idle_rss(rt: &tokio::runtime::Runtime, shape: Shape, idle: Duration) -> Idle {
    let bin = env!("CARGO_BIN_EXE_bbsync");
    let data = generate(shape);
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("directory.ldif"), &data.ldif).expect("write the LDIF");
    let emu = rt
        .block_on(Emulator::start(
            data.seed.clone(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("the emulator starts");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        config_text(&emu.base_url(), dir.path(), &data.rules, Some(&listen)),
    )
    .expect("write the config");
    drop(data);
    let mut child = Command::new(bin)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bbsync run");
    let pid = child.id();
    let status = |field: &str| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Ready once the first reconcile succeeded.
    let ready = format!("http://{listen}/readyz");
    let started = Instant::now();
    loop {
        let ok = Command::new("curl")
            .args(["-s", "-f", "-o", "/dev/null", &ready])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "bbsync run was not ready after 600 s"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "bbsync run exited before its first reconcile"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_run = status("VmRSS:");
    std::thread::sleep(idle);
    let (rss, hwm) = (status("VmRSS:"), status("VmHWM:"));
    let anon = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    rt.block_on(emu.shutdown());
    Idle {
        after_run,
        rss,
        anon,
        hwm,
    }
}

fn main() {
    if std::env::var("BENCH_LAUNCHER").is_ok_and(|v| v == "1") {
        return launcher();
    }
    let mut launch = Launcher::start();
    let shapes: Vec<Shape> = std::env::var("BENCH_SHAPES")
        .unwrap_or_else(|_| "10000x500x5000,100000x2000x20000".into())
        .split(',')
        .map(parse_shape)
        .collect();
    // 0: only the idle measure.
    let pairs = env_or("BENCH_PAIRS", 3);
    let idle_secs = env_or("BENCH_IDLE_SECS", 30);
    let keep = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let mut results = Vec::new();
    for &shape in &shapes {
        if pairs > 0 {
            results.push(run_shape(&rt, &mut launch, shape, pairs, keep));
        }
    }

    println!("\n| shape (people x groups x repos) | 1.0 listing body | GETs | changes planned | bbsync plan wall | curl floor wall | wall ratio | bbsync CPU | curl CPU | bbsync CPU - curl CPU | bbsync peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &results {
        let wall = median(m.plan.iter().map(|c| c.wall).collect());
        let floor = median(m.curl.iter().map(|c| c.wall).collect());
        let cpu = median(m.plan.iter().map(|c| c.cpu).collect());
        let curl_cpu = median(m.curl.iter().map(|c| c.cpu).collect());
        let rss = m.plan.iter().map(|c| c.max_rss_kib).max().unwrap_or(0);
        println!(
            "| {} | {:.0} MB | {} | {} | {} | {} | {:.2}x | {} | {} | {} | {} |",
            m.shape,
            m.body_bytes as f64 / 1e6,
            m.requests,
            m.changes,
            secs(wall),
            secs(floor),
            wall.as_secs_f64() / floor.as_secs_f64(),
            secs(cpu),
            secs(curl_cpu),
            secs(cpu.saturating_sub(curl_cpu)),
            mib(rss)
        );
    }
    println!("\nmedians of {pairs} pairs; bbsync's phases (first run, ms):");
    for m in &results {
        println!("  {}: {}", m.shape, m.timings);
    }

    if idle_secs > 0 {
        let shape = std::env::var("BENCH_IDLE_SHAPE")
            .map(|s| parse_shape(&s))
            .unwrap_or(shapes[shapes.len() - 1]);
        let m = idle_rss(&rt, shape, Duration::from_secs(idle_secs as u64));
        println!(
            "\nbbsync run on {shape}: RSS {} when the first reconcile ended, {} after {idle_secs} s idle ({} heap, {} code and libraries; peak {})",
            mib(m.after_run),
            mib(m.rss),
            mib(m.anon),
            mib(m.rss.saturating_sub(m.anon)),
            mib(m.hwm)
        );
    }
}
