//! `cargo xtask bench [diff|build|debian]`: figures for people, never assertions
//! (a timed check does not belong in a test).
//!
//! - `diff`: elfdiff over every kernel C unit compiled twice (the pairs
//!   `scale.rs` compiles and keeps), on all cores with rayon and on one thread.
//! - `build`: `kpbuild build` for the one-line `/proc/cmdline` patch, next to
//!   the incremental `make bzImage modules` a full-rebuild tool needs for the
//!   same patch.
//!
//! - `debian` (only when named: it downloads ~370 MB when cold): `kpbuild
//!   build --debian` for the same patch against Debian's cloud kernel, cold
//!   (the release's caches moved aside) and warm, next to an estimate of a
//!   full rebuild of that config on this machine.
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

/// `cargo xtask bench [diff|build|debian]`; diff and build when none is
/// named (debian is slow and needs the network: only when named).
pub fn run(what: Option<&str>) -> Result<(), String> {
    let which: &[&str] = match what {
        None => &["diff", "build"],
        Some("diff") => &["diff"],
        Some("build") => &["build"],
        Some("debian") => &["debian"],
        Some(other) => {
            return Err(format!(
                "unknown benchmark `{other}`: expected `diff`, `build` or `debian`"
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
            "debian" => bench_debian()?,
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
        let (wall_s, report, timings) =
            timed_build("kpbuild build", || kpbuild::build::execute(&args))?;
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

// -------------------------------------------------------------- bench debian

/// Suffix of a cache directory moved aside for the cold run.
const ASIDE_SUFFIX: &str = ".bench-aside";
/// Objects compiled for the full-rebuild estimate: a fixed sample over
/// kernel/, mm/, fs/, net/, drivers/ and arch/x86/, all built by Debian's
/// cloud config (drivers/net/virtio_net.o into a module).
const SAMPLE_OBJECTS: &[&str] = &[
    "kernel/sys.o",
    "kernel/sched/core.o",
    "kernel/signal.o",
    "kernel/fork.o",
    "kernel/time/timer.o",
    "mm/page_alloc.o",
    "mm/mmap.o",
    "mm/slub.o",
    "mm/vmscan.o",
    "fs/namei.o",
    "fs/dcache.o",
    "fs/ext4/inode.o",
    "fs/proc/meminfo.o",
    "net/ipv4/tcp_input.o",
    "net/core/dev.o",
    "drivers/base/core.o",
    "drivers/tty/tty_io.o",
    "drivers/pci/pci.o",
    "drivers/net/virtio_net.o",
    "arch/x86/kernel/process.o",
];

fn bench_debian() -> Result<(), String> {
    let release = crate::debian_release()?;
    let load = load_average();
    let jobs = cores();
    let out = bench_dir().join("debian-out");

    // A first, untimed run: it finds (or makes) the caches and names them.
    progress(&format!(
        "bench debian: warm-up run of kpbuild build --debian {release} (also finds the caches)"
    ));
    let probe = debian_run(&out, jobs)?;
    let src = PathBuf::from(probe.report["inputs"]["src"].as_str().unwrap_or(""));
    let prepared = PathBuf::from(probe.report["inputs"]["build"].as_str().unwrap_or(""));
    let release_dir = kimage::cache_root().join("debian").join(&release);
    let source_dir = src.parent().map(Path::to_path_buf).unwrap_or_default();
    if !prepared.starts_with(kimage::cache_root().join("prepared"))
        || !source_dir.starts_with(kimage::cache_root().join("debian"))
    {
        return Err(format!(
            "unexpected cache layout: source {}, prepared directory {}",
            src.display(),
            prepared.display()
        ));
    }
    let caches = vec![release_dir.clone(), source_dir, prepared.clone()];
    stop_if_interrupted()?;

    // Cold: the release's caches moved aside, restored whatever happens.
    let cold = cold_run(&caches, &release_dir, &out, jobs);
    if let Err(e) = &cold {
        eprintln!("xtask: bench: debian: the cold run failed: {e}");
    }
    stop_if_interrupted()?;

    // Warm.
    let mut warm = Vec::new();
    for run in 1..=RUNS {
        let r = debian_run(&out, jobs)?;
        progress(&format!(
            "bench debian: warm run {run}/{RUNS}: {:.2} s",
            r.wall_s
        ));
        warm.push(r);
        stop_if_interrupted()?;
    }

    // The rebuild-everything route, estimated.
    let estimate = rebuild_estimate(&src, &prepared, &release_dir, jobs);
    if let Err(e) = &estimate {
        eprintln!("xtask: bench: debian: the full-rebuild estimate failed: {e}");
    }

    // Figures.
    let mut step_names: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
    for r in warm.iter().chain(cold.as_ref().ok().map(|c| &c.build)) {
        for k in r.timings.keys() {
            if k != "total" && !step_names.contains(k) {
                step_names.push(k.clone());
            }
        }
    }
    step_names.push("total".into());
    let walls: Vec<f64> = warm.iter().map(|r| r.wall_s).collect();
    let warm_med = median(&walls);
    let warm_steps: BTreeMap<String, Value> = step_names
        .iter()
        .map(|s| {
            let v: Vec<f64> = warm.iter().map(|r| r.step(s)).collect();
            (s.clone(), json!({"median": median(&v), "min": min(&v)}))
        })
        .collect();
    let cold_wall = cold.as_ref().ok().map(ColdRun::wall_s);
    let cold_json = match &cold {
        Ok(c) => json!({
            "wall_s": c.wall_s(),
            "download_bytes": c.download_bytes,
            "downloaded_packages": c.packages,
            "build_timings_s": c.build.timings,
            "note": "one kpbuild build --debian with nothing cached: fetch = download of the \
                     packages (network) with the source tarball unpacked beside it, then the \
                     packages' extraction; prepare = olddefconfig + prepare of the private build \
                     directory",
            "caches_moved_aside": caches,
        }),
        Err(e) => json!({"error": e}),
    };
    let cold_met = cold_wall.map(|w| w < 60.0);
    let warm_met = warm_med < 10.0;
    let estimate_json = match &estimate {
        Ok(e) => e.json(),
        Err(e) => json!({"error": e}),
    };
    let report = json!({
        "benchmark": "debian",
        "release": release,
        "patch": BUILD_PATCH,
        "jobs": jobs,
        "runs": RUNS,
        "cold": cold_json,
        "warm": {
            "wall_s": walls,
            "wall_s_median": warm_med,
            "wall_s_min": min(&walls),
            "timings_s_per_run": warm.iter().map(|r| &r.timings).collect::<Vec<_>>(),
            "steps_s": warm_steps,
            "peak_rss_kib": warm.iter().filter_map(|r| r.peak_rss_kib).max(),
        },
        "full_rebuild_estimate": estimate_json,
        "goal": {
            "statement": "on 2 cores: cold under 60 s, warm under 10 s",
            "cold_under_60s": cold_met,
            "warm_under_10s": warm_met,
        },
        "machine": machine(load),
    });
    let path = write_json("debian", &report)?;

    println!();
    println!("bench debian: {BUILD_PATCH} against Debian's {release}");
    println!("  kpbuild       kpbuild::build::execute_with, --debian {release}, --jobs {jobs}");
    match &cold {
        Ok(c) => println!(
            "  cold          1 run, the release's caches moved aside (*{ASIDE_SUFFIX}) and put back after;\n                \
             INCLUDES the network download: {} package(s), {:.0} MB",
            c.packages.len(),
            c.download_bytes as f64 / 1e6
        ),
        Err(e) => println!("  cold          FAILED: {e}"),
    }
    println!("  warm          {RUNS} runs, every cache in place: median (min)");
    println!();
    println!(
        "  {:<44} {:>9} {:>16}",
        "kpbuild build --debian", "cold s", "warm s"
    );
    let cold_cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let warm_cell = |s: &str| {
        let v: Vec<f64> = warm.iter().map(|r| r.step(s)).collect();
        format!("{:.3} ({:.3})", median(&v), min(&v))
    };
    println!(
        "  {:<44} {:>9} {:>16}",
        "wall time",
        cold_cell(cold_wall),
        format!("{warm_med:.3} ({:.3})", min(&walls))
    );
    for s in &step_names {
        let label = match s.as_str() {
            "total" => "  build total (report)".to_string(),
            "fetch" => "  step fetch (download ∥ source; extract)".to_string(),
            "prepare" => "  step prepare (olddefconfig, prepare)".to_string(),
            _ => format!("  step {s}"),
        };
        println!(
            "  {:<44} {:>9} {:>16}",
            label,
            cold_cell(cold.as_ref().ok().map(|c| c.build.step(s))),
            warm_cell(s)
        );
    }
    println!();
    match &estimate {
        Ok(e) => e.print(jobs),
        Err(e) => println!("  full rebuild estimate: FAILED: {e}"),
    }
    let est_s = estimate.as_ref().ok().map(|e| e.estimate_s);
    println!();
    println!(
        "  side by side on {jobs} cores: kpbuild cold {}, warm {warm_med:.1} s; full rebuild {}",
        cold_wall.map_or("(failed)".to_string(), |w| format!("{w:.1} s")),
        est_s.map_or("(no estimate)".to_string(), |s| format!(
            "≈ {:.0} min",
            s / 60.0
        ))
    );
    println!("  goal (issue, 2 cores): cold under 60 s, warm under 10 s");
    println!(
        "    cold {}: {}",
        cold_wall.map_or("-".to_string(), |w| format!("{w:.1} s")),
        match cold_met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        }
    );
    println!(
        "    warm {warm_med:.1} s: {}",
        if warm_met { "met" } else { "NOT met" }
    );
    print_load(load);
    println!("  wrote {}", path.display());
    Ok(())
}

/// One `kpbuild build --debian` of [`BUILD_PATCH`].
fn debian_run(out: &Path, jobs: usize) -> Result<BuildRun, String> {
    let release = crate::debian_release()?;
    let args = kpbuild::build::BuildArgs {
        src: PathBuf::new(),
        build: PathBuf::new(),
        patches: vec![repo_root().join(BUILD_PATCH)],
        name: "kpbench_deb_cmdline".into(),
        out: out.to_path_buf(),
        no_replace: false,
        jobs: Some(jobs),
        json: false,
        keep_tmp: false,
        quiet: true,
        sign_key: None,
        sign_cert: None,
    };
    let target = kpbuild::build::TargetArgs {
        debian: Some(release.clone()),
        ..Default::default()
    };
    let peak_reset = reset_peak_rss();
    let (wall_s, report, timings) = timed_build("kpbuild build --debian", || {
        kpbuild::build::execute_with(&args, &target)
    })?;
    Ok(BuildRun {
        wall_s,
        timings,
        peak_rss_kib: if peak_reset { peak_rss_kib() } else { None },
        report,
    })
}

/// The cold run: one `kpbuild build --debian` with nothing cached.
struct ColdRun {
    download_bytes: u64,
    packages: Vec<String>,
    build: BuildRun,
}

impl ColdRun {
    fn wall_s(&self) -> f64 {
        self.build.wall_s
    }
}

fn cold_run(
    caches: &[PathBuf],
    release_dir: &Path,
    out: &Path,
    jobs: usize,
) -> Result<ColdRun, String> {
    for dir in caches {
        refuse_if_in_use(dir)
            .map_err(|e| format!("{e}\n(moving the Debian caches aside for the cold run)"))?;
    }
    // Nobody builds in the prepared directory now (kpbuild holds its lock).
    let prepared = &caches[caches.len() - 1];
    let lock_path = prepared.with_extension("lock");
    if let Ok(lock) = File::open(&lock_path) {
        if lock.try_lock().is_err() {
            return Err(format!(
                "{} is held: another kpbuild uses the prepared directory",
                lock_path.display()
            ));
        }
        drop(lock);
    }
    PROTECTED.store(true, Ordering::SeqCst);
    let result = (|| {
        let mut aside = Aside::move_aside(caches)?;
        let run = cold_measure(release_dir, out, jobs);
        progress("bench debian: deleting the cold run's caches and putting the originals back");
        let restored = aside.restore();
        let run = run?;
        restored?;
        Ok(run)
    })();
    PROTECTED.store(false, Ordering::SeqCst);
    result
}

fn cold_measure(release_dir: &Path, out: &Path, jobs: usize) -> Result<ColdRun, String> {
    let release = crate::debian_release()?;
    progress(&format!(
        "bench debian: cold: kpbuild build --debian {release} with nothing cached (network)"
    ));
    let build = debian_run(out, jobs)?;
    let mut download_bytes = 0;
    let mut packages = Vec::new();
    let debs = release_dir.join("debs");
    for e in std::fs::read_dir(&debs)
        .map_err(|e| format!("{}: {e}", debs.display()))?
        .flatten()
    {
        download_bytes += e.metadata().map_or(0, |m| m.len());
        packages.push(e.file_name().to_string_lossy().into_owned());
    }
    packages.sort();
    progress(&format!("bench debian: cold: {:.1} s", build.wall_s));
    Ok(ColdRun {
        download_bytes,
        packages,
        build,
    })
}

/// Cache directories renamed to `NAME.bench-aside` for a cold run. Restoring
/// (also on drop) deletes what the cold run created under the original names
/// and renames the originals back, so the e2e suite's caches survive.
struct Aside {
    moved: Vec<PathBuf>,
}

impl Aside {
    fn aside_of(dir: &Path) -> PathBuf {
        let mut name = dir.as_os_str().to_owned();
        name.push(ASIDE_SUFFIX);
        PathBuf::from(name)
    }

    /// Moves `dirs` aside, after finishing the restore of an interrupted run.
    fn move_aside(dirs: &[PathBuf]) -> Result<Aside, String> {
        let mut stale = Aside { moved: Vec::new() };
        for d in dirs {
            if Self::aside_of(d).exists() {
                progress(&format!(
                    "bench debian: an earlier run left {} moved aside; putting it back",
                    d.display()
                ));
                stale.moved.push(d.clone());
            }
        }
        stale.restore()?;
        let mut aside = Aside { moved: Vec::new() };
        for d in dirs.iter().filter(|d| d.exists()) {
            let to = Self::aside_of(d);
            std::fs::rename(d, &to)
                .map_err(|e| format!("{} -> {}: {e}", d.display(), to.display()))?;
            aside.moved.push(d.clone());
        }
        Ok(aside)
    }

    fn restore(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for d in std::mem::take(&mut self.moved) {
            let from = Self::aside_of(&d);
            if d.exists()
                && let Err(e) = std::fs::remove_dir_all(&d)
            {
                errors.push(format!("{}: {e}", d.display()));
                continue;
            }
            if let Err(e) = std::fs::rename(&from, &d) {
                errors.push(format!("{} -> {}: {e}", from.display(), d.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "could not put the Debian caches back: {}",
                errors.join("; ")
            ))
        }
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!(
                "xtask: bench: {e}\n  `cargo xtask bench debian` finishes the restore before anything else"
            );
        }
    }
}

/// The full-rebuild route on the same config, estimated.
struct Estimate {
    compiler: String,
    sample_s: f64,
    vmlinux_units: usize,
    modules: usize,
    estimate_s: f64,
}

impl Estimate {
    fn objects(&self) -> usize {
        self.vmlinux_units + self.modules
    }
    fn per_object_s(&self) -> f64 {
        self.sample_s / SAMPLE_OBJECTS.len() as f64
    }

    fn json(&self) -> Value {
        json!({
            "method": "make -jJOBS CC=COMPILER of a fixed sample of objects in a copy of the prepared \
                       directory (the objects removed first); the wall time per object, times the \
                       object count: compile units in the shipped vmlinux's .debug_info (C and \
                       assembly) plus one per .ko in the image package (modules of several \
                       objects count once). Links, BTF, modpost and the kernel's prepare are not \
                       counted: a lower bound by that much, while the sample leans to large files",
            "compiler": self.compiler,
            "sample_objects": SAMPLE_OBJECTS,
            "sample_wall_s": self.sample_s,
            "per_object_wall_s": self.per_object_s(),
            "vmlinux_compile_units": self.vmlinux_units,
            "modules": self.modules,
            "objects": self.objects(),
            "estimate_s": self.estimate_s,
            "estimate_min": self.estimate_s / 60.0,
        })
    }

    fn print(&self, jobs: usize) {
        println!(
            "  full rebuild of the same config (estimated; a full Debian build does not fit in CI)"
        );
        println!(
            "    make -j{jobs} CC={} of {} sample objects: {:.1} s = {:.2} s per object",
            self.compiler,
            SAMPLE_OBJECTS.len(),
            self.sample_s,
            self.per_object_s()
        );
        println!(
            "    objects: {} compile units in the vmlinux (DWARF) + {} modules (.ko, one object each) = {}",
            self.vmlinux_units,
            self.modules,
            self.objects()
        );
        println!(
            "    full rebuild estimate ≈ {:.0} min on {jobs} cores (compile only: links, BTF, modpost not counted)",
            self.estimate_s / 60.0
        );
    }
}

fn rebuild_estimate(
    src: &Path,
    prepared: &Path,
    release_dir: &Path,
    jobs: usize,
) -> Result<Estimate, String> {
    let release = crate::debian_release()?;
    let config_path = prepared.join(".config");
    let config = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let (cc, _) = kpbuild::treeless::config_compiler(&config)?;
    // A copy, so that the cached directory keeps exactly its objects.
    let copy = bench_dir().join("debian-prepared-copy");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(bench_dir()).map_err(|e| e.to_string())?;
    progress(&format!(
        "bench debian: estimate: copying {} to {}",
        prepared.display(),
        copy.display()
    ));
    kpbuild::process::run(Command::new("cp").arg("-a").arg(prepared).arg(&copy))
        .map_err(|e| e.to_string())?;
    let result = (|| {
        for o in SAMPLE_OBJECTS {
            let object = copy.join(o);
            let _ = std::fs::remove_file(&object);
            let name = object.file_name().expect("file").to_string_lossy();
            let _ = std::fs::remove_file(object.with_file_name(format!(".{name}.cmd")));
        }
        progress(&format!(
            "bench debian: estimate: make -j{jobs} CC={cc} of {} objects",
            SAMPLE_OBJECTS.len()
        ));
        let log = bench_dir().join("make-debian-sample.log");
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(src)
            .arg(format!("O={}", copy.display()))
            .arg(format!("CC={cc}"))
            .arg(format!("-j{jobs}"))
            .args(SAMPLE_OBJECTS)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("KCFLAGS")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let start = Instant::now();
        let status = cmd.status().map_err(|e| format!("cannot run make: {e}"))?;
        let sample_s = start.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!(
                "`{}` failed ({status}); its output is in {}",
                kpbuild::process::command_line(&cmd),
                log.display()
            ));
        }
        if let Some(o) = SAMPLE_OBJECTS.iter().find(|o| !copy.join(o).is_file()) {
            return Err(format!("{o} was not built: not in this config?"));
        }
        Ok(sample_s)
    })();
    let _ = std::fs::remove_dir_all(&copy);
    let sample_s = result?;
    let root = release_dir.join("root");
    let vmlinux = root.join(format!("usr/lib/debug/boot/vmlinux-{release}"));
    progress("bench debian: estimate: counting the compile units in the vmlinux");
    let vmlinux_units = dwarf_units(&vmlinux)?;
    let modules = module_count(&release_dir.join("debs"))?;
    let objects = vmlinux_units + modules;
    Ok(Estimate {
        compiler: cc,
        sample_s,
        vmlinux_units,
        modules,
        estimate_s: sample_s / SAMPLE_OBJECTS.len() as f64 * objects as f64,
    })
}

/// The number of units in an ELF64 file's `.debug_info`: one per object
/// compiled with debug information into it.
fn dwarf_units(path: &Path) -> Result<usize, String> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let read = |offset: u64, len: usize| -> Result<Vec<u8>, String> {
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(buf)
    };
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    let header = read(0, 64)?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err(format!(
            "{}: not a little-endian ELF64 file",
            path.display()
        ));
    }
    let (shoff, entsize, shnum, shstrndx) = (
        u64_at(&header, 0x28),
        u16_at(&header, 0x3a),
        u16_at(&header, 0x3c),
        u16_at(&header, 0x3e),
    );
    if entsize < 64 || shnum == 0 || shstrndx >= shnum {
        return Err(format!("{}: unexpected section headers", path.display()));
    }
    let headers = read(shoff, entsize * shnum)?;
    // (name, flags, offset, size)
    let section = |i: usize| {
        let b = &headers[i * entsize..];
        (
            u32_at(b, 0) as usize,
            u64_at(b, 8),
            u64_at(b, 0x18),
            u64_at(b, 0x20),
        )
    };
    let (_, _, str_off, str_size) = section(shstrndx);
    let names = read(str_off, str_size as usize)?;
    let info = (0..shnum)
        .map(section)
        .find(|s| {
            names
                .get(s.0..)
                .is_some_and(|n| n.starts_with(b".debug_info\0"))
        })
        .ok_or_else(|| format!("{}: no .debug_info", path.display()))?;
    const SHF_COMPRESSED: u64 = 0x800;
    if info.1 & SHF_COMPRESSED != 0 {
        return Err(format!("{}: .debug_info is compressed", path.display()));
    }
    let (start, size) = (info.2, info.3);
    let mut offset = 0u64;
    let mut units = 0;
    while offset < size {
        let length = u32_at(&read(start + offset, 4)?, 0);
        offset += match length {
            0xffff_ffff => 12 + u64_at(&read(start + offset + 4, 8)?, 0),
            l if l >= 0xffff_fff0 => {
                return Err(format!("{}: bad unit length {l:#x}", path.display()));
            }
            l => 4 + u64::from(l),
        };
        units += 1;
    }
    Ok(units)
}

/// The `.ko` files the downloaded image package installs.
fn module_count(debs: &Path) -> Result<usize, String> {
    let release = crate::debian_release()?;
    let prefix = format!("linux-image-{release}-unsigned_");
    let deb = std::fs::read_dir(debs)
        .map_err(|e| format!("{}: {e}", debs.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .ok_or_else(|| format!("{}: no {prefix}*.deb", debs.display()))?;
    let listing = kpbuild::process::run(Command::new("dpkg-deb").arg("-c").arg(&deb))
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|p| p.ends_with(".ko") || p.contains(".ko."))
        .count())
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

/// Runs one build, timed; it must produce a patch. Returns the wall time,
/// the report and its per-step timings.
fn timed_build(
    label: &str,
    build: impl FnOnce() -> (u8, Result<serde_json::Value, String>),
) -> Result<(f64, serde_json::Value, BTreeMap<String, f64>), String> {
    let start = Instant::now();
    let (code, result) = build();
    let wall_s = start.elapsed().as_secs_f64();
    let report = result.map_err(|e| format!("{label} failed (exit {code}): {e}"))?;
    if report["outcome"] != "patch" {
        return Err(format!(
            "{label}: outcome {} (expected a patch)",
            report["outcome"]
        ));
    }
    let timings = report["timings_s"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((wall_s, report, timings))
}
