//! `cargo xtask bench headers`: a patch that changes a header
//! (`fixtures/patches/time-ns-boottime-header.patch`) built with `--debian`
//! for the suite's release, cold (the unit index of the release and the
//! include graph of the prepared directory removed first) and warm (both
//! cached), with the cost of each: the DWARF index (debug vmlinux + the
//! debug modules streamed from the `-dbg` package) and the include scan.

use super::{
    BuildRun, cores, load_average, machine, median, min, peak_rss_kib, print_load,
    refuse_if_in_use, reset_peak_rss, timed_build, write_json,
};
use crate::repo_root;
use serde_json::json;
use std::path::Path;

/// The header fix the suite proves in the guest.
const HEADER_PATCH: &str = "fixtures/patches/time-ns-boottime-header.patch";
/// Warm runs.
const WARM_RUNS: usize = 2;

/// Runs the cold and warm builds and prints the table.
pub fn bench_headers() -> Result<(), String> {
    let release = crate::debian_release()?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let (prepared, _) =
        kpbuild::treeless::prepared_dir(&kernel.src, &kernel.config).map_err(|e| e.to_string())?;
    let index = kimage::cache_root()
        .join("debian")
        .join(&release)
        .join("units.idx");
    let graph = prepared.join(".kpbuild-includes");
    let load = load_average();
    println!("bench headers: {HEADER_PATCH} with --debian {release}");
    print_load(load);
    refuse_if_in_use(&prepared)?;
    for cached in [&index, &graph] {
        match std::fs::remove_file(cached) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", cached.display())),
        }
    }
    let jobs = cores();
    let out = super::bench_dir().join("headers-out");
    let cold = header_run(&release, &out, jobs)?;
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        warm.push(header_run(&release, &out, jobs)?);
    }
    let units = std::fs::read_to_string(&index)
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0);
    let files = std::fs::read_to_string(&graph)
        .map(|t| t.lines().count().saturating_sub(2))
        .unwrap_or(0);
    let warm_walls: Vec<f64> = warm.iter().map(|r| r.wall_s).collect();
    print_table(&cold, &warm, units, files);
    let users = &cold.report["headers"][0];
    let path = write_json(
        "headers",
        &json!({
            "release": release,
            "patch": HEADER_PATCH,
            "machine": machine(load),
            "jobs": jobs,
            "cold": { "wall_s": cold.wall_s, "timings_s": cold.timings, "peak_rss_kib": cold.peak_rss_kib },
            "warm": warm.iter().map(|r| json!({ "wall_s": r.wall_s, "timings_s": r.timings })).collect::<Vec<_>>(),
            "warm_median_s": median(&warm_walls),
            "warm_min_s": min(&warm_walls),
            "index_units": units,
            "include_graph_files": files,
            "header_users": users["users"].as_array().map_or(0, Vec::len),
            "header_users_changed": users["changed"].as_array().map_or(0, Vec::len),
        }),
    )?;
    println!("  written: {}", path.display());
    Ok(())
}

fn header_run(release: &str, out: &Path, jobs: usize) -> Result<BuildRun, String> {
    let mut args = kpbuild::BuildRequest::new(
        kpbuild::build::TargetSpec::Debian {
            release: release.to_string(),
            src: None,
        },
        vec![repo_root().join(HEADER_PATCH)],
        "kpbench_header",
        out,
    );
    args.jobs = Some(jobs);
    let peak_reset = reset_peak_rss();
    let (wall_s, report, timings) = timed_build("kpbuild build --debian (header)", || {
        crate::kpbuild_build(&args)
    })?;
    Ok(BuildRun {
        wall_s,
        timings,
        peak_rss_kib: if peak_reset { peak_rss_kib() } else { None },
        report,
    })
}

fn print_table(cold: &BuildRun, warm: &[BuildRun], units: usize, files: usize) {
    let users = &cold.report["headers"][0];
    println!(
        "  header users: {} units, {} changed; index: {units} units; include graph: {files} files",
        users["users"].as_array().map_or(0, Vec::len),
        users["changed"].as_array().map_or(0, Vec::len),
    );
    println!(
        "  {:<6} {:>8} {:>10} {:>12} {:>8} {:>9} {:>8}",
        "run", "wall s", "index s", "scan s", "check s", "compile s", "diff s"
    );
    for (name, run) in std::iter::once(("cold", cold)).chain(warm.iter().map(|r| ("warm", r))) {
        println!(
            "  {:<6} {:>8.1} {:>10.1} {:>12.1} {:>8.1} {:>9.1} {:>8.1}",
            name,
            run.wall_s,
            run.step("unit-index"),
            run.step("include-scan"),
            run.step("check"),
            run.step("compile"),
            run.step("diff"),
        );
    }
    let walls: Vec<f64> = warm.iter().map(|r| r.wall_s).collect();
    let warm_med = median(&walls);
    println!(
        "  goal (issue, 2 cores): header patch warm under 60 s: {warm_med:.1} s, {}",
        if warm_med < 60.0 { "met" } else { "NOT met" }
    );
}
