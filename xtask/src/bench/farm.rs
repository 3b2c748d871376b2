//! `cargo xtask bench farm [--all]`: `kpbuild farm run` (the library) with
//! one fix (`/proc/cmdline`, with its check script) and a fresh repository,
//! per target: the test kernel tree, the newest and the oldest Debian 6.12
//! cloud kernels apt knows.
//!
//! - first: the target's first publish (build, vmtest, bundle, publish),
//!   with the machine's caches as they are (the kernel, its source and
//!   prepared directory: `bench debian` measures builds without them);
//! - warm: the fix's text changed (a new sequence), everything cached:
//!   build, vmtest and publish again, [`WARM_RUNS`] times;
//! - unchanged: the same series again (no build, no boot).
//!
//! With `--all`, also the whole farm over every 6.12 cloud kernel apt knows
//! (a `debian-all` set, Debian 12 and 13; each release not yet in the cache
//! is downloaded and prepared, about 2 GB of cache each), `--jobs 2`, one
//! publish each.

use super::{load_average, machine, median, print_load, write_json};
use crate::write_file as write;
use kpbuild::build::Progress;
use kpbuild::farm::run::{FarmReport, RunRequest, TargetReport, run};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Warm runs per target.
const WARM_RUNS: usize = 2;

/// One farm run: its wall time and report.
struct Timed {
    wall_s: f64,
    report: FarmReport,
}

/// The series of one fix: `/proc/cmdline` says `kpbuild=WORD`.
fn series(dir: &Path, word: &str) -> Result<(), String> {
    let from = crate::repo_root().join("fixtures/patches/proc-cmdline-string.patch");
    let text = std::fs::read_to_string(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    let text = text.replace("kpbuild=cmdline-string", &format!("kpbuild={word}"));
    write(&dir.join("0001-cmdline.patch"), &text)?;
    write(
        &dir.join("0001-cmdline.check"),
        &format!("grep -q kpbuild={word} /proc/cmdline\n"),
    )
}

fn timed(dir: &Path, jobs: usize) -> Result<Timed, String> {
    let req = RunRequest {
        targets: dir.join("targets.toml"),
        series: dir.join("series"),
        artifact: dir.join("artifact"),
        only: None,
        name: "kpb_bench".into(),
        progress: Progress::Quiet,
        publish: Some(crate::test_channel(dir.join("repo"), "test")),
        jobs,
    };
    let start = Instant::now();
    let report = run(&req).map_err(|e| e.to_string())?;
    let wall_s = start.elapsed().as_secs_f64();
    if !report.passed {
        let why: Vec<String> = report
            .targets
            .iter()
            .map(|t| format!("{}: {}: {:?}", t.target.name, t.outcome.name(), t.reason))
            .collect();
        return Err(format!("bench farm: the farm failed: {}", why.join("; ")));
    }
    Ok(Timed { wall_s, report })
}

fn figures(t: &TargetReport) -> Value {
    json!({
        "outcome": t.outcome.name(),
        "build_s": t.build_seconds,
        "vmtest_s": t.vmtest_seconds,
        "apply_latency_ms": t.apply_latency_ms,
        "unpatch_latency_ms": t.unpatch_latency_ms,
        "sequence": t.bundle.as_ref().map(|b| b.sequence),
    })
}

/// One target alone: first, warm and unchanged runs.
fn one_target(name: &str, entry: &str, dir: &Path) -> Result<Value, String> {
    let _ = std::fs::remove_dir_all(dir);
    write(
        &dir.join("targets.toml"),
        &format!("[[target]]\nname = \"{name}\"\n{entry}\n"),
    )?;
    series(&dir.join("series"), "bench-0")?;
    let first = timed(dir, 1)?;
    let mut warm = Vec::new();
    for i in 1..=WARM_RUNS {
        series(&dir.join("series"), &format!("bench-{i}"))?;
        warm.push(timed(dir, 1)?);
    }
    let unchanged = timed(dir, 1)?;
    let walls: Vec<f64> = warm.iter().map(|w| w.wall_s).collect();
    let t0 = &first.report.targets[0];
    println!(
        "  {name:<8} first {:>6.1} s (build {:>5.1} s, vmtest {:>5.1} s, apply latency {:>5.0} ms)   warm median {:>6.1} s   unchanged {:>5.2} s",
        first.wall_s,
        t0.build_seconds.unwrap_or_default(),
        t0.vmtest_seconds.unwrap_or_default(),
        t0.apply_latency_ms.unwrap_or_default(),
        median(&walls),
        unchanged.wall_s
    );
    for w in &warm {
        let t = &w.report.targets[0];
        println!(
            "           warm  {:>6.1} s (build {:>5.1} s, vmtest {:>5.1} s, apply latency {:>5.0} ms, sequence {})",
            w.wall_s,
            t.build_seconds.unwrap_or_default(),
            t.vmtest_seconds.unwrap_or_default(),
            t.apply_latency_ms.unwrap_or_default(),
            t.bundle.as_ref().map_or(0, |b| b.sequence)
        );
    }
    Ok(json!({
        "target": name,
        "first": {"wall_s": first.wall_s, "target": figures(t0)},
        "warm": warm.iter().map(|w| json!({"wall_s": w.wall_s, "target": figures(&w.report.targets[0])})).collect::<Vec<_>>(),
        "warm_median_s": median(&walls),
        "unchanged_s": unchanged.wall_s,
    }))
}

/// Every 6.12 cloud kernel apt knows, one fix, `--jobs 2`.
fn whole_farm(dir: &Path) -> Result<Value, String> {
    let _ = std::fs::remove_dir_all(dir);
    write(
        &dir.join("targets.toml"),
        "[[target]]\nname = \"cloud\"\ndebian-all = { series = \"6.12\", flavours = [\"cloud-amd64\"] }\n",
    )?;
    series(&dir.join("series"), "bench-all")?;
    let all = timed(dir, 2)?;
    println!(
        "  whole farm: {} targets in {:.1} s (--jobs 2)",
        all.report.targets.len(),
        all.wall_s
    );
    for t in &all.report.targets {
        println!(
            "    {:<40} build {:>5.1} s, vmtest {:>5.1} s, apply latency {:>5.0} ms",
            t.target.name,
            t.build_seconds.unwrap_or_default(),
            t.vmtest_seconds.unwrap_or_default(),
            t.apply_latency_ms.unwrap_or_default()
        );
    }
    Ok(json!({
        "targets": all.report.targets.len(),
        "wall_s": all.wall_s,
        "per_target": all.report.targets.iter().map(|t| json!({"target": t.target.name, "figures": figures(t)})).collect::<Vec<_>>(),
    }))
}

/// Runs the farm benchmark and prints the table.
pub(super) fn bench_farm(all: bool) -> Result<(), String> {
    let kernel = crate::kernel()?;
    let newest = crate::debian_release()?;
    let (oldest, _) = crate::debian_other_releases()?;
    let load = load_average();
    println!("bench farm: one fix (/proc/cmdline, with its check), a fresh repository per target");
    print_load(load);
    let base: PathBuf = super::bench_dir().join("farm");
    let tree = format!(
        "tree = {{ src = \"{}\", build = \"{}\" }}",
        kernel.src.display(),
        kernel.build.display()
    );
    let mut targets = Vec::new();
    for (name, entry) in [
        ("test", tree),
        ("newest", format!("debian = \"{newest}\"")),
        ("oldest", format!("debian = \"{oldest}\"")),
    ] {
        targets.push(one_target(name, &entry, &base.join(name))?);
    }
    let whole = if all {
        Some(whole_farm(&base.join("all"))?)
    } else {
        None
    };
    let path = write_json(
        "farm",
        &json!({
            "machine": machine(load),
            "definitions": "first: the target's first publish into an empty repository (build, vmtest, bundle, publish), the machine's caches as they are; warm: the fix's text changed, a new sequence built, tested and published with everything cached; unchanged: the same series again (skipped); apply latency: insmod start to transition 0 in the guest, under TCG",
            "targets": targets,
            "whole_farm": whole,
        }),
    )?;
    println!("  written to {}", path.display());
    Ok(())
}
