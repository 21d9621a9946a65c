//! `mesh-bench`: the performance figures of DESIGN.md's targets, measured in one run on this
//! machine, printed as a table (figure, value, target, met) and written to
//! `bench-out/report.json`. `cargo xtask bench` runs it in release; `cargo xtask test` runs
//! `--smoke` (few iterations, nothing judged) so the bench keeps working.
//!
//! 1. hsm-plugin against its two floors (empty RPC, in-process HSM call), 1 and 16 clients;
//! 2. `meshca apply` against the guide's command sequence, and the no-op re-apply;
//! 3. peak RSS of `hsm-plugin` under load and of `vault-client` in its loop;
//! 4. `meshca vault setup` for 1, 10 and 50 clusters on one OpenBao;
//! 5. `meshca demo`.
//!
//! Timings on shared machines are noisy, so the targets are ratios of figures measured in the
//! same run. A missed target is reported, not an error: the exit code is 0 unless something
//! failed to run.

mod cluster;
mod install;
mod memory;
mod plugin;
mod procs;
mod report;
mod scale;
mod stats;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

use crate::report::Report;

/// Set in the re-run that owns a private SoftHSM2 configuration.
const PRIVATE_SOFTHSM: &str = "MESH_BENCH_PRIVATE_SOFTHSM";

/// mesh-hsm's performance figures against DESIGN.md's targets.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 figures measured (targets met or not), 1 something failed to run, 2 usage"
)]
struct Cli {
    /// Few iterations; print the figures without judging them (for `cargo xtask test`).
    #[arg(long)]
    smoke: bool,
    /// What goes to stdout: the table, or the JSON report.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Directory of `report.json`.
    #[arg(long, default_value = "bench-out")]
    out_dir: PathBuf,
    /// Measure only these parts (comma separated); all when absent.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Part 1 only: run one series alone, for a profiler (`transport`, `hsm:OP`, `port:OP`,
    /// `plugin:OP`; OP is `auth-encrypt`, `kms-encrypt` or `sign`).
    #[arg(long)]
    focus: Option<String>,
    /// With --focus: concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// With --focus: how long, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// 1: hsm-plugin against the transport and HSM floors.
    Plugin,
    /// 2: meshca apply against the guide's commands; the no-op re-apply.
    Install,
    /// 3: peak RSS of hsm-plugin and vault-client.
    Memory,
    /// 4: vault setup for 1, 10 and 50 clusters.
    Scale,
    /// 5: meshca demo.
    Demo,
}

impl Part {
    const ALL: [Self; 5] = [
        Self::Plugin,
        Self::Install,
        Self::Memory,
        Self::Scale,
        Self::Demo,
    ];
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mesh-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// SoftHSM2 reads its configuration once per process and loads every token of its token
/// directory. The bench (and the processes it starts) get a private, empty token directory,
/// so tokens left by tests running beside it change neither memory nor timings: when the
/// marker is absent, the bench re-runs itself with its own `SOFTHSM2_CONF`.
fn rerun_with_private_softhsm() -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-softhsm-")
        .tempdir()
        .context("creating a private SoftHSM2 directory")?;
    let exe = std::env::current_exe().context("locating the mesh-bench executable")?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
        .env(PRIVATE_SOFTHSM, "1")
        .status()
        .context("re-running mesh-bench with its own SoftHSM2 configuration")?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .map_or(ExitCode::FAILURE, ExitCode::from))
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    if std::env::var_os(PRIVATE_SOFTHSM).is_none() {
        return rerun_with_private_softhsm();
    }
    sandbox::init_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let parts: Vec<Part> = if cli.only.is_empty() {
        Part::ALL.to_vec()
    } else {
        Part::ALL
            .into_iter()
            .filter(|p| cli.only.contains(p))
            .collect()
    };
    let profile = procs::profile();
    let mut report = Report::new(cli.smoke, &profile);
    if !cli.smoke && profile != "release" {
        report.note(format!(
            "measured with {profile} binaries; the targets are for release builds (cargo xtask bench)"
        ));
    }
    std::fs::create_dir_all(&cli.out_dir)
        .with_context(|| format!("creating the report directory {}", cli.out_dir.display()))?;
    let started = Instant::now();
    for part in parts {
        let part_started = Instant::now();
        eprintln!("mesh-bench: measuring {part:?}");
        match part {
            Part::Plugin => plugin::run(&rt, plugin_settings(cli)?, &mut report)
                .context("part 1, hsm-plugin against its floors")?,
            Part::Install => install::run(&rt, &cli.out_dir, &mut report)
                .context("part 2, meshca apply against the guide's commands")?,
            Part::Memory => memory::run(&rt, memory_settings(cli.smoke), &mut report)
                .context("part 3, memory")?,
            Part::Scale => scale::run(&rt, &scale_settings(cli.smoke), &mut report)
                .context("part 4, vault setup for many clusters")?,
            Part::Demo => scale::demo(&mut report).context("part 5, meshca demo")?,
        }
        eprintln!(
            "mesh-bench: {part:?} took {:.1} s",
            part_started.elapsed().as_secs_f64()
        );
    }
    report.note(format!(
        "{} CPU(s), {profile} build; every target is a ratio or bound of figures from this run ({:.0} s)",
        report.cpus,
        started.elapsed().as_secs_f64()
    ));
    report.finish();
    let path = cli.out_dir.join("report.json");
    report.write_json(&path)?;
    let mut out = std::io::stdout().lock();
    match cli.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => {
            write!(out, "{}", report.table())?;
            writeln!(out, "report: {}", path.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plugin_settings(cli: &Cli) -> anyhow::Result<plugin::Settings> {
    let focus = match &cli.focus {
        Some(text) => {
            let duration = Duration::try_from_secs_f64(cli.seconds)
                .map_err(|e| anyhow::anyhow!("--seconds {}: {e}", cli.seconds))?;
            Some(plugin::Focus::parse(text, cli.clients, duration)?)
        }
        None => None,
    };
    Ok(if cli.smoke {
        plugin::Settings {
            rounds: 1,
            slice: Duration::from_millis(40),
            warmup: Duration::from_millis(10),
            focus,
        }
    } else {
        plugin::Settings {
            rounds: 6,
            slice: Duration::from_millis(500),
            warmup: Duration::from_millis(200),
            focus,
        }
    })
}

fn memory_settings(smoke: bool) -> memory::Settings {
    if smoke {
        memory::Settings {
            plugin_load: Duration::from_millis(500),
            agent_run: Duration::from_secs(1),
        }
    } else {
        memory::Settings {
            plugin_load: Duration::from_secs(5),
            agent_run: Duration::from_secs(12),
        }
    }
}

fn scale_settings(smoke: bool) -> scale::Settings {
    if smoke {
        scale::Settings {
            counts: vec![1, 2],
            single_repeats: 1,
        }
    } else {
        scale::Settings {
            counts: vec![1, 10, 50],
            single_repeats: 3,
        }
    }
}
