//! `cargo xtask bench [diff|build]`: figures for people, never assertions
//! (a timed check does not belong in a test).
//!
//! - `diff`: elfdiff over every kernel C unit compiled twice (the pairs
//!   `scale.rs` compiles and keeps), on all cores with rayon and on one thread.
//! - `build`: `kpbuild build` for the one-line `/proc/cmdline` patch, next to
//!   the incremental `make bzImage modules` a full-rebuild tool needs for the
//!   same patch.
//!
//! Each prints a table on stdout and writes `target/bench/NAME.json`. The
//! figures only mean something from a release build, so a debug `cargo xtask`
//! replaces itself with `cargo run --release -p xtask -- bench ...`.

use crate::{kernel, progress, repo_root, scale};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use testbed::kernel::KernelBuild;

/// Timed runs of each measurement; the tables show the median and the minimum.
const RUNS: usize = 3;
/// Set in the environment of the release re-run, so it never re-runs again.
const REEXEC_ENV: &str = "KPBUILD_XTASK_BENCH_RELEASE";
/// The patch `bench build` measures, and the one file it changes.
const BUILD_PATCH: &str = "fixtures/patches/proc-cmdline-string.patch";
const PATCHED_FILE: &str = "fs/proc/cmdline.c";
/// The pristine source the cached kernel was extracted from.
const TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const TARBALL_TOP: &str = "linux-source-6.12";
/// The steps of `kpbuild build`'s report, in pipeline order.
const STEPS: &[&str] = &["check", "apply", "affected", "compile", "diff", "module"];

/// While set, an interrupt only raises [`INTERRUPTED`]: the kernel tree is
/// patched in place and must be restored before the process ends.
static PROTECTED: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// `cargo xtask bench [diff|build]`; both when none is named.
pub fn run(what: Option<&str>) -> Result<(), String> {
    let which: &[&str] = match what {
        None => &["diff", "build"],
        Some("diff") => &["diff"],
        Some("build") => &["build"],
        Some(other) => {
            return Err(format!(
                "unknown benchmark `{other}`: expected `diff` or `build`"
            ));
        }
    };
    if cfg!(debug_assertions) {
        if std::env::var_os(REEXEC_ENV).is_none() {
            return rerun_in_release(what);
        }
        eprintln!(
            "xtask: bench: warning: this is a debug build; its figures are not representative"
        );
    }
    ctrlc::set_handler(|| {
        if PROTECTED.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!(
                "xtask: bench: interrupted; restoring the kernel tree first (another interrupt is ignored)"
            );
        } else {
            std::process::exit(130);
        }
    })
    .map_err(|e| format!("cannot install the interrupt handler: {e}"))?;
    for name in which {
        match *name {
            "diff" => bench_diff()?,
            _ => bench_build()?,
        }
    }
    Ok(())
}

/// Replaces this debug process with a release build of itself.
fn rerun_in_release(what: Option<&str>) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    eprintln!(
        "xtask: bench: this xtask is a debug build; benchmarking from a release build instead:\n  \
         cargo run --release -p xtask -- bench {}",
        what.unwrap_or("")
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let err = Command::new(cargo)
        .current_dir(repo_root())
        .env(REEXEC_ENV, "1")
        .args(["run", "--release", "-p", "xtask", "--", "bench"])
        .args(what)
        .exec();
    Err(format!("cannot run cargo: {err}"))
}

// ---------------------------------------------------------------- bench diff

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

fn bench_diff() -> Result<(), String> {
    let kb = kernel()?;
    let load = load_average();
    let out = kb.build.with_file_name("fp-objects");
    let (pairs, reused) = match scale::compiled_pairs(&kb, &out)? {
        Some(pairs) => (pairs, true),
        None => {
            progress(&format!(
                "bench diff: no complete set of pairs in {}: compiling every kernel C unit twice \
                 (several minutes, once per test kernel)",
                out.display()
            ));
            let start = Instant::now();
            let (pairs, failures) = scale::compile_all(&kb, &out)?;
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
    };

    // Sizes, read once so that every timed pass reads from the page cache.
    let mut sizes = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let mut size = 0u64;
        for f in [&p.original, &p.patched] {
            size += std::fs::read(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .len() as u64;
        }
        sizes.push(size);
    }
    let bytes: u64 = sizes.iter().sum();
    let mb = bytes as f64 / 1e6;

    let threads = cores();
    let mut parallel = Vec::new();
    let mut single = Vec::new();
    for run in 1..=RUNS {
        progress(&format!("bench diff: pass {run}/{RUNS}, {threads} threads"));
        parallel.push(diff_pass(&pairs, threads)?);
        progress(&format!("bench diff: pass {run}/{RUNS}, 1 thread"));
        single.push(diff_pass(&pairs, 1)?);
    }

    let summary = |runs: &[DiffRun], threads: usize| -> Value {
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
        let med = median(&walls);
        json!({
            "threads": threads,
            "wall_s": walls,
            "wall_s_median": med,
            "wall_s_min": min(&walls),
            "pairs_per_s": pairs.len() as f64 / med,
            "mb_per_s": mb / med,
            "pair_s_sum_median": median(&runs.iter().map(|r| r.per_pair_s.iter().sum()).collect::<Vec<f64>>()),
            "peak_rss_kib": runs.iter().filter_map(|r| r.peak_rss_kib).max(),
            "start_rss_kib": runs.iter().filter_map(|r| r.start_rss_kib).max(),
        })
    };
    let par = summary(&parallel, threads);
    let one = summary(&single, 1);
    let speedup = one["wall_s_median"].as_f64().unwrap_or(0.0)
        / par["wall_s_median"].as_f64().unwrap_or(f64::NAN);

    // The slowest pairs, by their median single-thread time.
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
        .map(|&(i, s)| json!({"object": pairs[i].object, "seconds": s, "bytes": sizes[i]}))
        .collect();
    let mut problems: Vec<String> = parallel
        .iter()
        .chain(&single)
        .flat_map(|r| r.problems.iter().cloned())
        .collect();
    problems.sort();
    problems.dedup();

    let report = json!({
        "benchmark": "diff",
        "kernel": kb.key,
        "objects": out,
        "pairs_reused": reused,
        "pairs": pairs.len(),
        "input_bytes": bytes,
        "input_mb": mb,
        "runs": RUNS,
        "parallel": par,
        "single_thread": one,
        "speedup": speedup,
        "slowest_pairs_single_thread": slowest,
        "not_no_change": problems,
        "machine": machine(load),
    });
    let path = write_json("diff", &report)?;

    println!();
    println!("bench diff: elfdiff over every kernel C unit compiled twice");
    println!("  kernel        {}", kb.key);
    println!(
        "  pairs         {} ({} {})",
        pairs.len(),
        if reused {
            "reused from"
        } else {
            "compiled into"
        },
        out.display()
    );
    println!("  input         {mb:.1} MB (both objects of every pair, 10^6 bytes)");
    println!("  passes        {RUNS} per mode: median (min)");
    println!();
    println!(
        "  {:<18} {:>7} {:>16} {:>9} {:>8} {:>11} {:>19}",
        "mode", "threads", "wall s", "pairs/s", "MB/s", "sum pair s", "peak (start) RSS MiB"
    );
    for (label, s) in [("rayon, all cores", &par), ("single thread", &one)] {
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
    println!(
        "  speed-up      {speedup:.2}x on {threads} threads (sum pair s: time inside the pairs, summed over threads)"
    );
    println!("  slowest pairs (single thread, median):");
    for s in &slowest {
        println!(
            "    {:<44} {:>7.1} ms {:>8.2} MB",
            s["object"].as_str().unwrap_or("?"),
            s["seconds"].as_f64().unwrap_or(0.0) * 1000.0,
            s["bytes"].as_f64().unwrap_or(0.0) / 1e6
        );
    }
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
    print_load(load);
    println!("  wrote {}", path.display());
    Ok(())
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

// --------------------------------------------------------------- bench build

/// One `kpbuild build` run.
struct BuildRun {
    wall_s: f64,
    timings: BTreeMap<String, f64>,
    peak_rss_kib: Option<u64>,
    report: Value,
}

impl BuildRun {
    fn step(&self, name: &str) -> f64 {
        self.timings.get(name).copied().unwrap_or(0.0)
    }
    /// kpbuild's own time: everything but the compiler (compile step) and
    /// kbuild (module step).
    fn overhead_s(&self) -> f64 {
        self.step("total") - self.step("compile") - self.step("module")
    }
}

fn bench_build() -> Result<(), String> {
    let kb = kernel()?;
    let load = load_average();
    let jobs = cores();
    let patch = repo_root().join(BUILD_PATCH);
    let key_dir = kb
        .src
        .parent()
        .expect("kernel src has a parent")
        .to_path_buf();
    let tree = InPlace {
        kb: &kb,
        relative: PATCHED_FILE,
        journal: key_dir.join(".bench-in-place"),
        jobs,
    };
    // The lock kernel builds take per key: no other build of this kernel, and
    // no other `bench build`, while this one may patch it in place.
    let lock_path = key_dir.with_extension("lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        return Err(format!(
            "refusing to start: {} is held (the test kernel is being built, or another `bench build` runs)",
            lock_path.display()
        ));
    }
    refuse_if_in_use(&key_dir)?;
    PROTECTED.store(true, Ordering::SeqCst);
    let recovered = tree.recover();
    PROTECTED.store(false, Ordering::SeqCst);
    recovered?;
    stop_if_interrupted()?;

    progress(&format!(
        "bench build: reading the pristine {PATCHED_FILE} from {TARBALL}"
    ));
    let pristine = pristine_source(PATCHED_FILE)?;
    let file = kb.src.join(PATCHED_FILE);
    let current = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if current != pristine {
        return Err(format!(
            "refusing to start: {} differs from {PATCHED_FILE} in {TARBALL}; \
             the benchmark patches only a pristine file (restore it, or rebuild the test kernel)",
            file.display()
        ));
    }
    let patched = patched_source(&file, &patch)?;

    // kpbuild build, in this (release) process.
    let out = bench_dir().join("build-out");
    let mut runs = Vec::new();
    for run in 1..=RUNS {
        let args = kpbuild::build::BuildArgs {
            src: kb.src.clone(),
            build: kb.build.clone(),
            patches: vec![patch.clone()],
            name: "kpbench_cmdline".into(),
            out: out.clone(),
            no_replace: false,
            jobs: Some(jobs),
            json: false,
            keep_tmp: false,
            quiet: true,
            sign_key: None,
            sign_cert: None,
        };
        let peak_reset = reset_peak_rss();
        let start = Instant::now();
        let (code, result) = kpbuild::build::execute(&args);
        let wall_s = start.elapsed().as_secs_f64();
        let report = result.map_err(|e| format!("kpbuild build failed (exit {code}): {e}"))?;
        if report["outcome"] != "patch" {
            return Err(format!(
                "kpbuild build: outcome {} (expected a patch)",
                report["outcome"]
            ));
        }
        let timings: BTreeMap<String, f64> = report["timings_s"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        progress(&format!(
            "bench build: kpbuild build {run}/{RUNS}: {wall_s:.2} s"
        ));
        runs.push(BuildRun {
            wall_s,
            timings,
            peak_rss_kib: if peak_reset { peak_rss_kib() } else { None },
            report,
        });
        stop_if_interrupted()?;
    }

    // The incremental make a full-rebuild tool needs, on the cached tree.
    refuse_if_in_use(&key_dir)?;
    progress(&format!(
        "bench build: make -j{jobs} bzImage modules with nothing changed"
    ));
    let noop = make_logged(&kb, jobs, "noop", false)?;
    progress(&format!(
        "bench build: patching {} in place (by rename) and running make -j{jobs} bzImage modules",
        file.display()
    ));
    PROTECTED.store(true, Ordering::SeqCst);
    let (incremental, restore) = {
        let mut applied = tree.apply(&patched)?;
        let incremental = make_logged(&kb, jobs, "incremental", false);
        progress(&format!(
            "bench build: restoring {} and rebuilding (untimed for the comparison)",
            file.display()
        ));
        let restore = applied.restore();
        (incremental, restore)
    };
    PROTECTED.store(false, Ordering::SeqCst);
    let restore = restore?;
    stop_if_interrupted()?;
    let incremental = incremental?;
    let after = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if after != pristine {
        return Err(format!(
            "{} does not match the tarball after the restore",
            file.display()
        ));
    }
    let copy = kb.src.with_file_name("src-copy").join(PATCHED_FILE);
    let copy_pristine = match std::fs::read(&copy) {
        Ok(data) => Some(data == pristine),
        Err(_) => None,
    };
    if copy_pristine == Some(false) {
        return Err(format!(
            "{} (hard-linked copy) was modified",
            copy.display()
        ));
    }

    // Figures.
    let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
    let overheads: Vec<f64> = runs.iter().map(BuildRun::overhead_s).collect();
    let cleanups: Vec<f64> = runs.iter().map(|r| r.wall_s - r.step("total")).collect();
    let wall_med = median(&walls);
    let overhead_med = median(&overheads);
    let ratio = wall_med / incremental.seconds;
    let half_met = ratio < 0.5;
    let overhead_met = overhead_med < 1.0;
    let mut step_names: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
    for r in &runs {
        for k in r.timings.keys() {
            if k != "total" && !step_names.contains(k) {
                step_names.push(k.clone());
            }
        }
    }
    step_names.push("total".into());
    let step_stats: BTreeMap<String, Value> = step_names
        .iter()
        .map(|s| {
            let v: Vec<f64> = runs.iter().map(|r| r.step(s)).collect();
            (s.clone(), json!({"median": median(&v), "min": min(&v)}))
        })
        .collect();
    let first = &runs[0].report;
    let units = first["units"].as_array().map_or(0, Vec::len);
    let functions: Vec<String> = first["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["functions"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| {
            f["name"]
                .as_str()
                .or(f["old_name"].as_str())
                .map(str::to_string)
        })
        .collect();

    let report = json!({
        "benchmark": "build",
        "kernel": kb.key,
        "patch": BUILD_PATCH,
        "jobs": jobs,
        "runs": RUNS,
        "kpbuild": {
            "affected_units": units,
            "patched_functions": functions,
            "wall_s": walls,
            "wall_s_median": wall_med,
            "wall_s_min": min(&walls),
            "timings_s_per_run": runs.iter().map(|r| &r.timings).collect::<Vec<_>>(),
            "steps_s": step_stats,
            "own_overhead_s": overheads,
            "own_overhead_s_median": overhead_med,
            "cleanup_after_report_s": cleanups,
            "peak_rss_kib": runs.iter().filter_map(|r| r.peak_rss_kib).max(),
        },
        "make": {
            "command": format!("make -C SRC O=BUILD -j{jobs} bzImage modules"),
            "nothing_changed": noop.json(),
            "incremental": incremental.json(),
            "restore_untimed": restore.json(),
        },
        "goal": {
            "statement": "kpbuild build well under half of the incremental make; kpbuild's own overhead under 1 s",
            "kpbuild_to_make_ratio": ratio,
            "under_half_of_make": half_met,
            "own_overhead_under_1s": overhead_met,
            "met": half_met && overhead_met,
        },
        "source_restored": true,
        "src_copy_pristine": copy_pristine,
        "machine": machine(load),
    });
    let path = write_json("build", &report)?;

    println!();
    println!("bench build: {BUILD_PATCH} against the cached test kernel");
    println!("  kernel        {}", kb.key);
    println!(
        "  kpbuild       kpbuild::build::execute, --jobs {jobs}, {units} affected unit(s), patches {}",
        functions.join(", ")
    );
    println!("  passes        {RUNS}: median (min)");
    println!();
    println!("  {:<44} {:>9} {:>9}", "kpbuild build", "median s", "min s");
    let row = |label: &str, v: &[f64]| {
        println!("  {:<44} {:>9.3} {:>9.3}", label, median(v), min(v));
    };
    row("wall time", &walls);
    for s in &step_names {
        let v: Vec<f64> = runs.iter().map(|r| r.step(s)).collect();
        let label = if s == "total" {
            "  total (report)".to_string()
        } else {
            format!("  step {s}")
        };
        row(&label, &v);
    }
    row("  scratch clean-up after the report", &cleanups);
    row("own overhead: total - (compile + module)", &overheads);
    println!();
    println!(
        "  {:<44} {:>9} {:>9}",
        format!("make -j{jobs} bzImage modules"),
        "s",
        "CC lines"
    );
    for (label, m) in [
        ("nothing changed", &noop),
        ("after the patch (a full-rebuild tool)", &incremental),
        ("restore, untimed for the comparison", &restore),
    ] {
        println!("  {:<44} {:>9.3} {:>9}", label, m.seconds, m.compiled);
    }
    println!();
    println!(
        "  goal (issue): kpbuild build well under half of the incremental make, own overhead under 1 s"
    );
    println!(
        "    kpbuild {wall_med:.2} s = {:.0}% of make {:.2} s: {}",
        ratio * 100.0,
        incremental.seconds,
        if half_met {
            "under half: met"
        } else {
            "NOT under half"
        }
    );
    println!(
        "    own overhead {overhead_med:.2} s: {}",
        if overhead_met {
            "under 1 s: met"
        } else {
            "NOT under 1 s"
        }
    );
    println!(
        "    => goal {}",
        if half_met && overhead_met {
            "met"
        } else {
            "NOT met"
        }
    );
    print_load(load);
    println!("  wrote {}", path.display());
    drop(lock);
    Ok(())
}

/// The file as extracted from the source tarball.
fn pristine_source(relative: &str) -> Result<Vec<u8>, String> {
    let out = kpbuild::process::run(
        Command::new("tar")
            .arg("-xOf")
            .arg(TARBALL)
            .arg(format!("{TARBALL_TOP}/{relative}")),
    )
    .map_err(|e| e.to_string())?;
    Ok(out.stdout)
}

/// `file` with `patch` applied, computed beside the tree (`patch -o`).
fn patched_source(file: &Path, patch: &Path) -> Result<Vec<u8>, String> {
    let tmp = std::env::temp_dir().join(format!("kpbench-patched-{}.c", std::process::id()));
    let result = kpbuild::process::run(
        Command::new("patch")
            .args(["--batch", "--silent", "--no-backup-if-mismatch", "-r", "-"])
            .arg("-o")
            .arg(&tmp)
            .arg(file)
            .arg("-i")
            .arg(patch),
    )
    .map_err(|e| e.to_string())
    .and_then(|_| std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display())));
    let _ = std::fs::remove_file(&tmp);
    result
}

/// A timed `make bzImage modules` in the cached tree.
struct MakeRun {
    seconds: f64,
    /// Compile lines (`CC`) in its output.
    compiled: usize,
    log: PathBuf,
}

impl MakeRun {
    fn json(&self) -> Value {
        json!({"seconds": self.seconds, "cc_lines": self.compiled, "log": self.log})
    }
}

/// Runs `make -C SRC O=BUILD -jJOBS bzImage modules` with its output in
/// `target/bench/make-NAME.log`. `detached` puts it in its own process
/// group, out of reach of a terminal's interrupt.
fn make_logged(
    kb: &KernelBuild,
    jobs: usize,
    name: &str,
    detached: bool,
) -> Result<MakeRun, String> {
    use std::os::unix::process::CommandExt;
    let log = bench_dir().join(format!("make-{name}.log"));
    let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(&kb.src)
        .arg(format!("O={}", kb.build.display()))
        .arg(format!("-j{jobs}"))
        .args(["bzImage", "modules"])
        // As the test kernel was built: never a caller's make or compiler flags.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("KCFLAGS")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    if detached {
        cmd.process_group(0);
    }
    let start = Instant::now();
    let status = cmd.status().map_err(|e| format!("cannot run make: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!(
            "`{}` failed ({status}); its output is in {}",
            kpbuild::process::command_line(&cmd),
            log.display()
        ));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let compiled = text
        .lines()
        .filter(|l| l.trim_start().starts_with("CC "))
        .count();
    Ok(MakeRun {
        seconds,
        compiled,
        log,
    })
}

/// One source file of the cached kernel tree, replaced in place while the
/// incremental make runs. The file is swapped by rename, never written
/// through, so its other hard links (`src-copy`, a kpbuild scratch copy) keep
/// the original content; the original inode is kept in a journal beside the
/// tree, so that the next run restores what an interrupted one left.
///
/// Journal (`KEY/.bench-in-place/`): `original`, a hard link to the original
/// file; `path`, its path in the tree; `dirty`, present while the build tree
/// may hold objects of the patched file.
struct InPlace<'a> {
    kb: &'a KernelBuild,
    relative: &'a str,
    journal: PathBuf,
    jobs: usize,
}

impl InPlace<'_> {
    fn original(&self) -> PathBuf {
        self.journal.join("original")
    }
    fn dirty(&self) -> PathBuf {
        self.journal.join("dirty")
    }

    /// Finishes the restore an interrupted run left undone.
    fn recover(&self) -> Result<(), String> {
        if self.original().exists() {
            let relative = std::fs::read_to_string(self.journal.join("path"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| self.relative.to_string());
            progress(&format!(
                "bench build: an earlier run was interrupted with {relative} patched in place; restoring it"
            ));
            self.rename_back(&relative)?;
        }
        if self.dirty().exists() {
            progress("bench build: rebuilding the build tree from the restored source (make)");
            make_logged(self.kb, self.jobs, "recover", true)?;
        }
        self.forget()
    }

    /// Swaps the patched content in; the guard restores on drop.
    fn apply(&self, patched: &[u8]) -> Result<Applied<'_, '_>, String> {
        let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        let file = self.kb.src.join(self.relative);
        std::fs::create_dir_all(&self.journal).map_err(|e| err(&self.journal, e))?;
        let path = self.journal.join("path");
        std::fs::write(&path, self.relative).map_err(|e| err(&path, e))?;
        std::fs::hard_link(&file, self.original()).map_err(|e| err(&self.original(), e))?;
        let applied = Applied {
            tree: self,
            done: false,
        };
        let tmp = self.journal.join("patched");
        std::fs::write(&tmp, patched).map_err(|e| err(&tmp, e))?;
        let perms = std::fs::metadata(&file)
            .map_err(|e| err(&file, e))?
            .permissions();
        std::fs::set_permissions(&tmp, perms).map_err(|e| err(&tmp, e))?;
        std::fs::write(self.dirty(), b"").map_err(|e| err(&self.dirty(), e))?;
        std::fs::rename(&tmp, &file).map_err(|e| err(&file, e))?;
        Ok(applied)
    }

    /// Puts the original inode back (same content, same timestamps) and
    /// deletes the object compiled from the patched file, so that make
    /// recompiles it although the source is older.
    fn rename_back(&self, relative: &str) -> Result<(), String> {
        let file = self.kb.src.join(relative);
        std::fs::rename(self.original(), &file).map_err(|e| format!("{}: {e}", file.display()))?;
        // rename(2) leaves both names when they already were the same file.
        let _ = std::fs::remove_file(self.original());
        let _ = std::fs::remove_file(self.journal.join("patched"));
        let object = self.kb.build.join(relative).with_extension("o");
        match std::fs::remove_file(&object) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", object.display()))
            }
            _ => Ok(()),
        }
    }

    fn forget(&self) -> Result<(), String> {
        match std::fs::remove_dir_all(&self.journal) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", self.journal.display()))
            }
            _ => Ok(()),
        }
    }
}

/// The patched file is in the tree until [`Applied::restore`] or drop.
struct Applied<'t, 'k> {
    tree: &'t InPlace<'k>,
    done: bool,
}

impl Applied<'_, '_> {
    /// Restores the original file, then rebuilds the build tree from it.
    fn restore(&mut self) -> Result<MakeRun, String> {
        self.done = true;
        let tree = self.tree;
        tree.rename_back(tree.relative)?;
        let run = make_logged(tree.kb, tree.jobs, "restore", true)?;
        tree.forget()?;
        Ok(run)
    }
}

impl Drop for Applied<'_, '_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.restore()
        {
            eprintln!(
                "xtask: bench: could not restore the kernel tree: {e}\n  \
                 `cargo xtask bench build` finishes the restore before anything else"
            );
        }
    }
}

/// Refuses while another process names the kernel's cache directory on its
/// command line (a kernel build, kpbuild, a compiler, QEMU booting it): the
/// make phase patches and relinks that kernel.
fn refuse_if_in_use(dir: &Path) -> Result<(), String> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut users = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))? {
        let Ok(entry) = entry else { continue };
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            users.push(format!(
                "    {pid}: {}",
                cmdline.chars().take(150).collect::<String>()
            ));
        }
    }
    if users.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to start: other processes use the test kernel in {} \
             (this benchmark patches and relinks it for a minute or two):\n{}",
            dir.display(),
            users.join("\n")
        ))
    }
}

fn stop_if_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------- shared

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn bench_dir() -> PathBuf {
    repo_root().join("target/bench")
}

fn write_json(name: &str, value: &Value) -> Result<PathBuf, String> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value).expect("json");
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Resets this process's peak RSS to its current RSS (Linux 4.0+); false
/// when that is not possible, and the peak is not reported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// This process's peak RSS (`VmHWM`) in KiB.
fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// How busy the machine was before the benchmark: the one-minute load
/// average, and the share of all CPU time spent busy over one second.
#[derive(Clone, Copy)]
struct Load {
    average_1min: Option<f64>,
    busy: Option<f64>,
}

fn load_average() -> Load {
    let average_1min = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok());
    // `cpu  user nice system idle iowait irq softirq steal ...`
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let idle = fields.get(3)? + fields.get(4)?;
        Some((fields.iter().sum(), idle))
    };
    let before = sample();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let busy = match (before, sample()) {
        (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
            Some(1.0 - (i1 - i0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    };
    Load { average_1min, busy }
}

fn print_load(load: Load) {
    let busy = load.busy.unwrap_or(0.0);
    let note = if busy > 0.1 {
        ": other work was running, the figures are noisy"
    } else {
        ""
    };
    println!(
        "  machine before the run: CPU {:.0}% busy over 1 s, load average {:.2}{note}",
        busy * 100.0,
        load.average_1min.unwrap_or(f64::NAN)
    );
}

fn machine(load: Load) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
    });
    json!({
        "cpus": cores(),
        "cpu": cpu,
        "load_average_1min_at_start": load.average_1min,
        "cpu_busy_share_before_start": load.busy,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}
