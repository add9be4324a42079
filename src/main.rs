//! The `bbsync` command line. All wiring lives in the library; this file parses arguments,
//! sets up logging, and turns results into exit codes.

use anyhow::Context;
use bbsync::config::{Config, ConfigError, Mode};
use bbsync::daemon::run::DaemonError;
use bbsync::reconcile::{Reconciler, RunError};
use bbsync::{demo, report};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes to stdout. A reader that went away (`bbsync check --output json | head -c 100`) is
/// not worth a panic (`println!` panics on a closed pipe): the rest of the output is dropped
/// and the command ends with its own exit code.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
        }
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    () => { emit("\n") };
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

/// Exit codes (also in the README).
const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_DRIFT: u8 = 3;

#[derive(Parser)]
#[command(
    name = "bbsync",
    version,
    about = "Keeps Bitbucket Cloud groups and repository access equal to what the company directory says",
    after_help = "Examples:
  bbsync demo                          run the whole loop against an embedded emulator
  bbsync demo --org-managed            the same on an organisation-managed workspace (Admin API)
  bbsync check -c /etc/bbsync/bbsync.toml
  bbsync plan  -c bbsync.toml --output json
  bbsync plan  -c bbsync.toml --check  # exit 3 when Bitbucket differs from the directory
  bbsync plan  -c bbsync.toml --out p.json && bbsync approve p.json && bbsync apply -c bbsync.toml --plan p.json
  bbsync apply -c bbsync.toml          # one reconcile that writes
  bbsync run   -c bbsync.toml          # the daemon: reconcile every daemon.interval_secs

Exit codes: 0 ok, 1 run failed, 2 bad usage or configuration, 3 drift found (plan --check)."
)]
struct Cli {
    /// Log format on stderr (default: `log.format` of the configuration for `run`, else text).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole loop against an embedded emulator with a sample directory.
    Demo {
        /// One cycle, then exit: 0 only if the second reconcile planned no changes.
        #[arg(long)]
        once: bool,
        /// An organisation-managed workspace: memberships through the Atlassian Admin API.
        #[arg(long)]
        org_managed: bool,
    },
    /// Show what would change (never writes).
    Plan {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Exit 3 when there are changes to make.
        #[arg(long)]
        check: bool,
        /// Also write the plan, with fingerprints of what it was computed from, for review
        /// (`bbsync approve FILE`, `bbsync apply --plan FILE`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run one reconcile that applies the changes, then exit.
    Apply {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Apply exactly this reviewed plan (from `plan --out`): refused, with nothing written,
        /// when the directory or Bitbucket no longer give exactly it.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
    },
    /// Approve the revocations a safety guard held in a plan file (that exact set, once).
    Approve {
        /// A plan written by `bbsync plan --out FILE`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Validate the configuration, read the source, and prove what each credential can do.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also prove write access with idempotent no-op writes (re-add an existing member,
        /// re-PUT an existing grant with its current permission).
        #[arg(long)]
        probe_writes: bool,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Read the directory source only and show what bbsync sees (people, leavers, groups,
    /// skipped entries), with the read time and peak memory.
    Source {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Reconcile every `daemon.interval_secs` until stopped (dry-run unless mode = "apply").
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running daemon whether it is healthy (GET /healthz; with --ready, /readyz):
    /// exit 0 on 200, 1 otherwise. For a container HEALTHCHECK: no curl needed, no TLS.
    Healthcheck {
        /// The daemon's `http.listen` address (a 0.0.0.0 or [::] listener answers on
        /// 127.0.0.1 or [::1]). The environment variable lets an image's HEALTHCHECK follow a
        /// non-default port without rewriting the command.
        #[arg(long, env = "BBSYNC_HEALTHCHECK_ADDR", default_value = bbsync::config::DEFAULT_LISTEN)]
        addr: SocketAddr,
        /// Ask /readyz (a recent successful reconcile) instead of /healthz.
        #[arg(long)]
        ready: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Serve the Bitbucket emulator (tests, benchmarks, trying bbsync out).
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8990")]
        listen: SocketAddr,
        /// Seed JSON (see emulator/README.md); the demo workspace when omitted.
        #[arg(long, value_name = "FILE")]
        seed: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Audit records in the log are the audit trail when no audit.path is set: never filtered out.
    let filter = match "bbsync::audit=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    // Colour only for a person at a terminal: escape codes in a journal or a log file are noise.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } | Command::Apply { .. } | Command::Emulator { .. } => "info",
        _ => "warn",
    };
    // The daemon's configuration is read before logging starts: it says the log format.
    let mut preloaded = match &cli.command {
        Command::Run { config } => Some(Config::load(config)),
        _ => None,
    };
    let format = cli.log_format.unwrap_or(match &preloaded {
        Some(Ok(cfg)) if cfg.daemon.log_format == bbsync::config::LogFormat::Json => {
            LogFormat::Json
        }
        _ => LogFormat::Text,
    });
    init_logging(format, default_level);
    if matches!(cli.command, Command::Run { .. }) {
        // Small when idle: freed memory goes back to the OS at once (src/memory.rs).
        bbsync::memory::for_daemon();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(bbsync::memory::on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(dispatch(cli.command, preloaded.take())) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let config_problem = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<RunError>()
                    .is_some_and(RunError::is_config)
                || e.downcast_ref::<DaemonError>()
                    .is_some_and(DaemonError::is_config);
            let code = if config_problem {
                EXIT_CONFIG
            } else {
                EXIT_FAILED
            };
            eprintln!("error: {}", describe(&e));
            ExitCode::from(code)
        }
    }
}

async fn dispatch(
    cmd: Command,
    preloaded: Option<Result<Config, ConfigError>>,
) -> anyhow::Result<u8> {
    match cmd {
        Command::Demo { once, org_managed } => run_demo(once, org_managed).await,
        Command::Plan {
            config,
            output,
            check,
            out,
        } => {
            let cfg = Config::load(&config)?;
            let origin = cfg.origin.clone();
            let rec = Reconciler::new(cfg)?;
            let r = rec.run(false).await?;
            print_report(&r, output);
            if let Some(out) = out {
                bbsync::review::PlanFile::from_report(&r, &origin).save(&out)?;
                eprintln!(
                    "plan written to {}{}",
                    out.display(),
                    if r.plan.held.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} revocations held by a safety guard: review it, then `bbsync approve {}` and `bbsync apply -c {} --plan {}`)",
                            r.plan.blocked().count(),
                            out.display(),
                            config.display(),
                            out.display()
                        )
                    }
                );
            }
            Ok(if check && !r.plan.is_empty() {
                EXIT_DRIFT
            } else if r.ok() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        Command::Apply {
            config,
            output,
            plan,
        } => {
            let cfg = Config::load(&config)?;
            let rec = Reconciler::new(cfg)?;
            let gate = match &plan {
                Some(path) => {
                    let file = bbsync::review::PlanFile::load(path)?;
                    if let Some(a) = &file.approved {
                        tracing::warn!(
                            by = a.by,
                            at = a.at,
                            revocations = a.revocations,
                            "applying a reviewed plan whose held revocations were approved"
                        );
                    }
                    file.gate()
                }
                None => bbsync::reconcile::Gate::default(),
            };
            let r = rec.run_gated(true, &gate).await?;
            print_report(&r, output);
            Ok(if r.ok() { EXIT_OK } else { EXIT_FAILED })
        }
        Command::Approve { file } => {
            let mut plan = bbsync::review::PlanFile::load(&file)?;
            let by = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let approval = plan.approve(&file, &by)?.clone();
            plan.save(&file)?;
            outln!(
                "approved the held revocations of {} (fingerprint {}) as {by}; apply them with `bbsync apply -c CONFIG --plan {}` while the directory and Bitbucket still match",
                file.display(),
                approval.revocations,
                file.display()
            );
            Ok(EXIT_OK)
        }
        Command::Check {
            config,
            probe_writes,
            output,
        } => check(&config, probe_writes, output).await,
        Command::Run { config } => {
            let cfg = match preloaded {
                Some(r) => r?,
                None => Config::load(&config)?,
            };
            let shutdown = tokio_util::sync::CancellationToken::new();
            let exit = bbsync::daemon::run::run(
                cfg,
                shutdown,
                bbsync::daemon::run::Options {
                    path: Some(config),
                    signals: true,
                    ..Default::default()
                },
            )
            .await?;
            Ok(exit.code)
        }
        Command::Source { config, output } => read_source(&config, output).await,
        Command::Healthcheck {
            addr,
            ready,
            timeout_secs,
        } => {
            let path = if ready { "/readyz" } else { "/healthz" };
            let limit = std::time::Duration::from_secs(timeout_secs.max(1));
            match tokio::time::timeout(limit, bbsync::daemon::http::probe(addr, path)).await {
                Ok(Ok((200, _))) => Ok(EXIT_OK),
                Ok(Ok((status, body))) => {
                    eprintln!(
                        "unhealthy: {path} on {addr} answered {status}: {}",
                        body.trim()
                    );
                    Ok(EXIT_FAILED)
                }
                Ok(Err(e)) => {
                    eprintln!("unhealthy: cannot ask {path} on {addr}: {e}");
                    Ok(EXIT_FAILED)
                }
                Err(_) => {
                    eprintln!(
                        "unhealthy: {path} on {addr} did not answer within {} s",
                        limit.as_secs()
                    );
                    Ok(EXIT_FAILED)
                }
            }
        }
        Command::Emulator { listen, seed } => {
            let seed = match seed {
                Some(p) => bbsync_emulator::load_seed(&p)?,
                None => demo::seed()?,
            };
            let emu = bbsync_emulator::Emulator::start(seed, listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            outln!("Bitbucket emulator listening on {}", emu.base_url());
            outln!("  1.0: {0}/1.0   2.0: {0}/2.0   OAuth: {0}/site/oauth2/access_token   state: {0}/_emulator/state", emu.base_url());
            let _ = tokio::signal::ctrl_c().await;
            emu.shutdown().await;
            Ok(EXIT_OK)
        }
    }
}

/// The error and its causes on one line, each cause once: our error messages already quote
/// their direct cause, so a plain `{:#}` would repeat it.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn print_report(r: &bbsync::reconcile::RunReport, output: Output) {
    match output {
        Output::Human => out!("{}", report::human(r)),
        Output::Json => outln!("{}", report::json(r)),
    }
}

async fn run_demo(once: bool, org_managed: bool) -> anyhow::Result<u8> {
    let seed = if org_managed {
        demo::org_seed()?
    } else {
        demo::seed()?
    };
    let emu = bbsync_emulator::Emulator::start(seed, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    // A directory per demo: the audit trail and the workspace lock beside it are its own.
    let audit = std::env::temp_dir()
        .join(format!("bbsync-demo-{}", std::process::id()))
        .join("audit.jsonl");
    outln!(
        "bbsync demo: embedded Bitbucket emulator at {} (workspace acme, 50 repositories{})",
        emu.base_url(),
        if org_managed {
            format!(
                "; organisation-managed, Admin API organisation {:?} at {}/admin",
                demo::ORG_ID,
                emu.base_url()
            )
        } else {
            String::new()
        }
    );
    outln!("Directory: bundled sample LDIF (Bob Stone has left the company)\n");
    let result = demo::run_cycle(&emu, &audit, org_managed, &mut |s| outln!("{s}"))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    outln!(
        "\nAudit trail: {} ({} records)",
        audit.display(),
        std::fs::read_to_string(&audit)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    );
    let code = if result.ok() { EXIT_OK } else { EXIT_FAILED };
    if once {
        emu.shutdown().await;
        return Ok(code);
    }
    // The daemon against the same emulator: its endpoints, its schedule and its poll.
    let cfg = demo::config(&emu.base_url(), &audit, org_managed).map_err(|e| anyhow::anyhow!(e))?;
    let base = emu.base_url();
    let on_listening: bbsync::daemon::run::OnListening = Box::new(move |addr| {
        outln!("\nThe daemon now runs against the emulator ({base}; try: curl -u admin@acme.test:demo-token {base}/1.0/groups/acme):");
        match addr {
            Some(a) => {
                outln!("  health   http://{a}/healthz");
                outln!("  ready    http://{a}/readyz");
                outln!("  metrics  http://{a}/metrics");
                outln!("  status   http://{a}/status");
            }
            None => outln!("  (no HTTP endpoints: http.listen is empty)"),
        }
        outln!("Ctrl-C or SIGTERM stops it.");
    });
    let exit = bbsync::daemon::run::run(
        cfg,
        tokio_util::sync::CancellationToken::new(),
        bbsync::daemon::run::Options {
            path: None,
            signals: true,
            any_port_if_taken: true,
            on_listening: Some(on_listening),
        },
    )
    .await?;
    emu.shutdown().await;
    Ok(if exit.code == EXIT_OK {
        code
    } else {
        exit.code
    })
}

async fn check(path: &std::path::Path, probe_writes: bool, output: Output) -> anyhow::Result<u8> {
    let cfg = Config::load(path)?;
    let clients = bbsync::reconcile::clients_for(&cfg)?;
    let reader = bbsync::reconcile::source_for(&cfg, &clients);
    let source = reader.read().await;
    let report = bbsync::check::check(&cfg, &clients, probe_writes).await;
    // The rules against the workspace: a rule that selects nothing, or names a project or
    // repository that does not exist, fails the check (in `plan` it is a warning).
    let rules: Result<Vec<bbsync::mapping::RuleNote>, String> = if source.is_ok() && report.ok() {
        match Reconciler::new(cfg.clone()) {
            Ok(rec) => rec
                .run(false)
                .await
                .map(|r| r.plan.notes)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Ok(Vec::new())
    };
    let rules_ok = matches!(&rules, Ok(n) if n.is_empty());
    let ok = source.is_ok() && report.ok() && rules_ok;
    match output {
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "config": cfg.origin,
                "source": match &source {
                    Ok(d) => serde_json::json!({"ok": true, "people": d.people.len(), "groups": d.groups.len(), "skipped_entries": d.issues.len()}),
                    Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
                },
                "bitbucket": report,
                "rules": match &rules {
                    Ok(notes) => serde_json::json!({"ok": notes.is_empty(), "notes": notes}),
                    Err(e) => serde_json::json!({"ok": false, "error": e}),
                },
                "ok": ok,
            }))?
        ),
        Output::Human => {
            outln!(
                "config {}: ok (mode {}, workspace {})",
                cfg.origin,
                match cfg.mode {
                    Mode::Apply => "apply",
                    Mode::DryRun => "dry-run",
                },
                cfg.bitbucket.workspace
            );
            match &source {
                Ok(d) => outln!(
                    "source {}: ok ({} people, {} disabled, {} groups, {} skipped entries)\n",
                    reader.describe(),
                    d.people.len(),
                    d.people.len() - d.active_people(),
                    d.groups.len(),
                    d.issues.len()
                ),
                Err(e) => outln!("source {}: FAILED: {e}\n", reader.describe()),
            }
            out!("{}", bbsync::check::render(&report));
            match &rules {
                Ok(notes) if notes.is_empty() => {
                    if source.is_ok() && report.ok() {
                        outln!("rules: ok (each selects something that exists, inside the scope)");
                    }
                }
                Ok(notes) => {
                    outln!("rules: FAILED");
                    for n in notes {
                        outln!("  - {n}");
                    }
                }
                Err(e) => outln!("rules: could not be checked: {e}"),
            }
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}

/// Peak resident set size of this process (Linux `VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn read_source(path: &std::path::Path, output: Output) -> anyhow::Result<u8> {
    let cfg = Config::load(path)?;
    // As a run reads it: an HR source resolves emails through the configured resolvers (the
    // only source that needs Bitbucket to be read).
    let reader = match cfg.source.hr() {
        Some(_) => bbsync::reconcile::source_for(&cfg, &bbsync::reconcile::clients_for(&cfg)?),
        None => bbsync::source::Source::new(&cfg.source, &cfg.directory),
    };
    let started = std::time::Instant::now();
    let dir = reader.read().await?;
    let elapsed = started.elapsed();
    // Buffered, and streamed as it is rendered: the JSON of a 100k-person directory is tens of
    // MiB, never held as one string. A reader that went away ends the output quietly, as `emit`.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = write_source(&mut out, &dir, &reader.describe(), output)
        .and_then(|()| std::io::Write::flush(&mut out));
    let mut code = EXIT_OK;
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
            code = EXIT_FAILED;
        }
    }
    // The buffer is spent; dropping it must not retry a write that already failed.
    let _ = out.into_parts();
    eprintln!(
        "read and resolved in {} ms; peak RSS {} MiB",
        elapsed.as_millis(),
        peak_rss_kib().map_or("?".to_owned(), |k| (k / 1024).to_string())
    );
    // The process ends now: freeing a hundred thousand people one by one would only cost time.
    std::mem::forget(dir);
    Ok(code)
}

/// What `bbsync source` prints: the directory as JSON (the same document as serialising
/// [`bbsync::source::Directory`] whole, written person by person and group by group), or a
/// summary for people.
fn write_source(
    out: &mut impl std::io::Write,
    dir: &bbsync::source::Directory,
    describe: &str,
    output: Output,
) -> std::io::Result<()> {
    match output {
        Output::Json => {
            dir.write_json(&mut *out)?;
            writeln!(out)?;
        }
        Output::Human => {
            writeln!(
                out,
                "{describe}: {} people ({} disabled), {} groups, {} skipped entries",
                dir.people.len(),
                dir.people.len() - dir.active_people(),
                dir.groups.len(),
                dir.issues.len()
            )?;
            for p in dir
                .people
                .values()
                .filter(|p| p.disabled.is_some())
                .take(50)
            {
                writeln!(
                    out,
                    "  disabled {} ({}): {}",
                    p.dn,
                    p.account_id,
                    p.disabled.as_deref().unwrap_or_default()
                )?;
            }
            for i in dir.issues.iter().take(50) {
                writeln!(out, "  skipped {}: {}", i.dn, i.problem)?;
            }
            if !dir.unresolved.is_empty() {
                writeln!(
                    out,
                    "  unresolved: {} people without an account id that no resolver found (not added anywhere, never read as leavers)",
                    dir.unresolved.len()
                )?;
            }
            let mut biggest: Vec<_> = dir.groups.values().collect();
            biggest.sort_by_key(|g| std::cmp::Reverse(g.members.len()));
            for g in biggest.iter().take(10) {
                writeln!(
                    out,
                    "  group {} ({}): {} members",
                    g.name,
                    g.dn,
                    g.members.len()
                )?;
            }
        }
    }
    Ok(())
}

// mimalloc: reading a 100k-person directory is allocation-bound; with glibc malloc the LDAP
// source took 1.52x ldapsearch's time, with mimalloc 1.13x (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
