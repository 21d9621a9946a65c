//! Part 4: `meshca vault setup` for 1, 10 and 50 cluster suffixes on one OpenBao (each
//! cluster its own emulated API server); and part 5: `meshca demo`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::runtime::Runtime;

use crate::cluster::{self, Sandbox};
use crate::procs;
use crate::report::{Report, Target, Unit};
use crate::stats::{median, to_f64};

/// Cluster counts, and how many times the 1-cluster case is repeated (its median is used).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) counts: Vec<usize>,
    pub(crate) single_repeats: usize,
}

/// Seconds per cluster of `vault setup` for `n` clusters on one fresh OpenBao.
fn per_cluster(rt: &Runtime, n: usize) -> anyhow::Result<f64> {
    let sandbox = Sandbox::start(rt, &format!("bench-scale-{n}"))?;
    let mut total = Duration::ZERO;
    for i in 0..n {
        let api = cluster::api_server(false)?;
        let kubeconfig = sandbox.path(&format!("kubeconfig-{i}"));
        api.write_kubeconfig(&kubeconfig)?;
        let suffix = format!("c{i}");
        let config = sandbox.write_config(
            &format!("meshca-{i}.toml"),
            &sandbox.config(&suffix, &kubeconfig),
        )?;
        let run = cluster::meshca(sandbox.dir.path(), &config, &["vault", "setup"])
            .with_context(|| format!("vault setup of cluster {suffix} of {n}"))?;
        run.require_done(&[4, 5])?;
        total += run.wall;
    }
    Ok(total.as_secs_f64() / to_f64(n))
}

/// Measures part 4 and adds its figures to `report`.
pub(crate) fn run(rt: &Runtime, settings: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let mut single = Vec::new();
    let mut results = Vec::new();
    for &n in &settings.counts {
        let secs = if n == 1 {
            for _ in 0..settings.single_repeats.max(1) {
                single.push(per_cluster(rt, 1)?);
            }
            median(&mut single.clone())
        } else {
            per_cluster(rt, n)?
        };
        eprintln!(
            "mesh-bench: part 4: {n} cluster(s): {:.1} ms per cluster",
            secs * 1000.0
        );
        report.info(
            4,
            &format!("scale.vault_setup.n{n}.ms_per_cluster"),
            &format!("meshca vault setup, {n} cluster(s) on one OpenBao: time per cluster"),
            secs * 1000.0,
            Unit::Millis,
        );
        results.push((n, secs));
    }
    let base = results.iter().find(|(n, _)| *n == 1).map(|(_, s)| *s);
    if let (Some(base), Some(&(n, last))) = (base, results.iter().rfind(|(n, _)| *n > 1))
        && base > 0.0
    {
        report.judged(
            4,
            "scale.vault_setup.per_cluster_ratio",
            &format!("vault setup time per cluster, {n} clusters / 1 cluster"),
            last / base,
            Unit::Ratio,
            Target::AtMost(1.2),
        );
    }
    Ok(())
}

/// Measures part 5: `meshca demo` from start to exit.
pub(crate) fn demo(report: &mut Report) -> anyhow::Result<()> {
    let bin = procs::sibling("meshca")?;
    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-demo-")
        .tempdir()
        .context("creating the demo directory")?;
    let started = Instant::now();
    let out = Command::new(&bin)
        .args(["demo", "--quiet", "--output", "json"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} demo", bin.display()))?;
    let wall = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "meshca demo failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("meshca demo printed no JSON report")?;
    anyhow::ensure!(
        doc["reapply_unchanged"] == true,
        "meshca demo's second apply changed objects"
    );
    report.judged(
        5,
        "demo.seconds",
        "meshca demo: wall time",
        wall.as_secs_f64(),
        Unit::Seconds,
        Target::Below(60.0),
    );
    Ok(())
}
