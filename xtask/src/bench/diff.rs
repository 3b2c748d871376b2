//! `bench diff`: elfdiff over every kernel C unit compiled twice, on all
//! cores and on one thread.

use super::{
    Load, RUNS, cores, load_average, machine, median, min, peak_rss_kib, print_load,
    reset_peak_rss, status_kib, write_json,
};
use crate::{kernel, progress, scale};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;
use testbed::kernel::KernelBuild;

/// One timed pass of elfdiff over every pair.
struct DiffRun {
    wall_s: f64,
    /// Time of each pair, in `pairs` order.
    per_pair_s: Vec<f64>,
    /// Pairs not diffed as "no change" (there should be none).
    problems: Vec<String>,
    /// RSS when the pass started, and its peak during the pass.
    start_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
}

pub(super) fn bench_diff() -> Result<(), String> {
    let kb = kernel()?;
    let load = load_average();
    let out = kb.build.with_file_name("fp-objects");
    let (pairs, reused) = obtain_pairs(&kb, &out)?;

    // Sizes, read once so that every timed pass reads from the page cache.
    let sizes = pair_sizes(&pairs)?;
    let bytes: u64 = sizes.iter().sum();
    let mb = bytes as f64 / 1e6;

    let threads = cores();
    let (parallel, single) = diff_passes(&pairs, threads)?;
    let m = Measured {
        pairs,
        reused,
        sizes,
        bytes,
        mb,
        threads,
        parallel,
        single,
    };
    let fig = Figures::of(&m);

    let path = write_json("diff", &report_json(&kb, &out, load, &m, &fig))?;
    print_table(&kb, &out, &m, &fig);
    print_load(load);
    println!("  wrote {}", path.display());
    Ok(())
}

/// The pairs kept in `out`, or, when there is no complete set, every kernel
/// C unit compiled twice into it; true when they were reused.
pub(super) fn obtain_pairs(
    kb: &KernelBuild,
    out: &Path,
) -> Result<(Vec<scale::Pair>, bool), String> {
    Ok(match scale::compiled_pairs(kb, out)? {
        Some(pairs) => (pairs, true),
        None => {
            progress(&format!(
                "bench diff: no complete set of pairs in {}: compiling every kernel C unit twice \
                 (several minutes, once per test kernel)",
                out.display()
            ));
            let start = Instant::now();
            let (pairs, failures) = scale::compile_all(kb, out)?;
            if !failures.is_empty() {
                return Err(format!(
                    "{} units failed to compile:\n{}",
                    failures.len(),
                    failures.join("\n")
                ));
            }
            progress(&format!(
                "bench diff: {} pairs compiled in {:.0} s",
                pairs.len(),
                start.elapsed().as_secs_f64()
            ));
            (pairs, false)
        }
    })
}

/// The size of both objects of every pair, in `pairs` order.
fn pair_sizes(pairs: &[scale::Pair]) -> Result<Vec<u64>, String> {
    let mut sizes = Vec::with_capacity(pairs.len());
    for p in pairs {
        let mut size = 0u64;
        for f in [&p.original, &p.patched] {
            size += std::fs::read(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .len() as u64;
        }
        sizes.push(size);
    }
    Ok(sizes)
}

/// [`RUNS`] passes on `threads` threads, each followed by one on a single
/// thread.
fn diff_passes(
    pairs: &[scale::Pair],
    threads: usize,
) -> Result<(Vec<DiffRun>, Vec<DiffRun>), String> {
    let mut parallel = Vec::new();
    let mut single = Vec::new();
    for run in 1..=RUNS {
        progress(&format!("bench diff: pass {run}/{RUNS}, {threads} threads"));
        parallel.push(diff_pass(pairs, threads)?);
        progress(&format!("bench diff: pass {run}/{RUNS}, 1 thread"));
        single.push(diff_pass(pairs, 1)?);
    }
    Ok((parallel, single))
}

/// What `bench diff` measured, carried from the passes to the report.
struct Measured {
    pairs: Vec<scale::Pair>,
    /// The pairs were reused from an earlier run, not compiled by this one.
    reused: bool,
    /// Bytes of both objects of each pair, in `pairs` order.
    sizes: Vec<u64>,
    bytes: u64,
    mb: f64,
    threads: usize,
    parallel: Vec<DiffRun>,
    single: Vec<DiffRun>,
}

/// The figures derived from the passes.
struct Figures {
    /// Summary of the parallel passes.
    par: Value,
    /// Summary of the single-thread passes.
    one: Value,
    speedup: f64,
    /// The slowest pairs, by their median single-thread time.
    slowest: Vec<Value>,
    /// Pairs not diffed as "no change" in any pass, sorted, once each.
    problems: Vec<String>,
}

impl Figures {
    fn of(m: &Measured) -> Figures {
        let (pairs, single) = (&m.pairs, &m.single);
        let summary = |runs: &[DiffRun], threads: usize| -> Value {
            let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
            let med = median(&walls);
            json!({
                "threads": threads,
                "wall_s": walls,
                "wall_s_median": med,
                "wall_s_min": min(&walls),
                "pairs_per_s": pairs.len() as f64 / med,
                "mb_per_s": m.mb / med,
                "pair_s_sum_median": median(&runs.iter().map(|r| r.per_pair_s.iter().sum()).collect::<Vec<f64>>()),
                "peak_rss_kib": runs.iter().filter_map(|r| r.peak_rss_kib).max(),
                "start_rss_kib": runs.iter().filter_map(|r| r.start_rss_kib).max(),
            })
        };
        let par = summary(&m.parallel, m.threads);
        let one = summary(single, 1);
        let speedup = one["wall_s_median"].as_f64().unwrap_or(0.0)
            / par["wall_s_median"].as_f64().unwrap_or(f64::NAN);

        let mut per_pair: Vec<(usize, f64)> = (0..pairs.len())
            .map(|i| {
                let t: Vec<f64> = single.iter().map(|r| r.per_pair_s[i]).collect();
                (i, median(&t))
            })
            .collect();
        per_pair.sort_by(|a, b| b.1.total_cmp(&a.1));
        let slowest: Vec<Value> = per_pair
            .iter()
            .take(5)
            .map(|&(i, s)| json!({"object": pairs[i].object, "seconds": s, "bytes": m.sizes[i]}))
            .collect();
        let mut problems: Vec<String> = m
            .parallel
            .iter()
            .chain(single)
            .flat_map(|r| r.problems.iter().cloned())
            .collect();
        problems.sort();
        problems.dedup();
        Figures {
            par,
            one,
            speedup,
            slowest,
            problems,
        }
    }
}

/// The content of `target/bench/diff.json`.
fn report_json(kb: &KernelBuild, out: &Path, load: Load, m: &Measured, fig: &Figures) -> Value {
    json!({
        "benchmark": "diff",
        "kernel": kb.key,
        "objects": out,
        "pairs_reused": m.reused,
        "pairs": m.pairs.len(),
        "input_bytes": m.bytes,
        "input_mb": m.mb,
        "runs": RUNS,
        "parallel": fig.par,
        "single_thread": fig.one,
        "speedup": fig.speedup,
        "slowest_pairs_single_thread": fig.slowest,
        "not_no_change": fig.problems,
        "machine": machine(load),
    })
}

/// The printed table: both modes, the speed-up, the slowest pairs and the
/// pairs not diffed as no change.
fn print_table(kb: &KernelBuild, out: &Path, m: &Measured, fig: &Figures) {
    println!();
    println!("bench diff: elfdiff over every kernel C unit compiled twice");
    println!("  kernel        {}", kb.key);
    println!(
        "  pairs         {} ({} {})",
        m.pairs.len(),
        if m.reused {
            "reused from"
        } else {
            "compiled into"
        },
        out.display()
    );
    println!(
        "  input         {:.1} MB (both objects of every pair, 10^6 bytes)",
        m.mb
    );
    println!("  passes        {RUNS} per mode: median (min)");
    println!();
    println!(
        "  {:<18} {:>7} {:>16} {:>9} {:>8} {:>11} {:>19}",
        "mode", "threads", "wall s", "pairs/s", "MB/s", "sum pair s", "peak (start) RSS MiB"
    );
    for (label, s) in [("rayon, all cores", &fig.par), ("single thread", &fig.one)] {
        print_mode_row(label, s);
    }
    println!(
        "  speed-up      {:.2}x on {} threads (sum pair s: time inside the pairs, summed over threads)",
        fig.speedup, m.threads
    );
    println!("  slowest pairs (single thread, median):");
    for s in &fig.slowest {
        println!(
            "    {:<44} {:>7.1} ms {:>8.2} MB",
            s["object"].as_str().unwrap_or("?"),
            s["seconds"].as_f64().unwrap_or(0.0) * 1000.0,
            s["bytes"].as_f64().unwrap_or(0.0) / 1e6
        );
    }
    let problems = &fig.problems;
    if problems.is_empty() {
        println!("  every pair diffed as no change");
    } else {
        println!(
            "  {} pair(s) NOT diffed as no change (the e2e case fails on these):",
            problems.len()
        );
        for p in problems.iter().take(10) {
            println!("    {p}");
        }
    }
}

/// One row of the table: a mode's summary.
fn print_mode_row(label: &str, s: &Value) {
    let mib = |k: &Value| {
        k.as_u64()
            .map_or("?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0))
    };
    println!(
        "  {:<18} {:>7} {:>16} {:>9.0} {:>8.1} {:>11.3} {:>19}",
        label,
        s["threads"].as_u64().unwrap_or(0),
        format!(
            "{:.3} ({:.3})",
            s["wall_s_median"].as_f64().unwrap_or(0.0),
            s["wall_s_min"].as_f64().unwrap_or(0.0)
        ),
        s["pairs_per_s"].as_f64().unwrap_or(0.0),
        s["mb_per_s"].as_f64().unwrap_or(0.0),
        s["pair_s_sum_median"].as_f64().unwrap_or(0.0),
        format!("{} ({})", mib(&s["peak_rss_kib"]), mib(&s["start_rss_kib"]))
    );
}

/// Diffs every pair on a pool of `threads`, each pair read and diffed as
/// `kpbuild build` does.
fn diff_pass(pairs: &[scale::Pair], threads: usize) -> Result<DiffRun, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    let peak_reset = reset_peak_rss();
    let start_rss_kib = status_kib("VmRSS:");
    let start = Instant::now();
    let results: Vec<(f64, Option<String>)> = pool.install(|| {
        pairs
            .par_iter()
            .map(|p| {
                let t = Instant::now();
                let problem = diff_pair(p);
                (t.elapsed().as_secs_f64(), problem)
            })
            .collect()
    });
    let wall_s = start.elapsed().as_secs_f64();
    Ok(DiffRun {
        wall_s,
        per_pair_s: results.iter().map(|r| r.0).collect(),
        problems: results.into_iter().filter_map(|r| r.1).collect(),
        start_rss_kib,
        peak_rss_kib: if peak_reset { peak_rss_kib() } else { None },
    })
}

/// `None` when the pair diffs as no change, else what happened.
fn diff_pair(p: &scale::Pair) -> Option<String> {
    let read = |f: &Path| std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()));
    let (o, q) = match (read(&p.original), read(&p.patched)) {
        (Ok(o), Ok(q)) => (o, q),
        (Err(e), _) | (_, Err(e)) => return Some(e),
    };
    match elfdiff::diff("orig", &o, "copy", &q, &elfdiff::Options::default()) {
        Ok(d) if d.outcome == elfdiff::Outcome::NoChange => None,
        Ok(d) => Some(format!("{}: {:?}", p.object.display(), d.outcome)),
        Err(e) => Some(format!("{}: error: {e}", p.object.display())),
    }
}
