//! `bench build`: `kpbuild build` for the one-line `/proc/cmdline` patch,
//! next to the incremental `make bzImage modules` of the same patch.

use super::{
    BUILD_PATCH, BuildRun, Load, PROTECTED, RUNS, STEPS, bench_dir, cores, load_average, machine,
    median, min, peak_rss_kib, print_load, refuse_if_in_use, reset_peak_rss, stop_if_interrupted,
    timed_build, write_json,
};
use crate::{kernel, progress, repo_root};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;
use testbed::kernel::KernelBuild;

/// The one file [`BUILD_PATCH`] changes.
const PATCHED_FILE: &str = "fs/proc/cmdline.c";
/// The pristine source the cached kernel was extracted from.
const TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const TARBALL_TOP: &str = "linux-source-6.12";

pub(super) fn bench_build() -> Result<(), String> {
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
    let lock = lock_and_recover(&key_dir, &tree)?;

    progress(&format!(
        "bench build: reading the pristine {PATCHED_FILE} from {TARBALL}"
    ));
    let pristine = pristine_source(PATCHED_FILE)?;
    let file = kb.src.join(PATCHED_FILE);
    refuse_unless_pristine(&file, &pristine)?;
    let patched = patched_source(&file, &patch)?;

    let runs = kpbuild_runs(&kb, &patch, jobs)?;
    let make = make_runs(&tree, &key_dir, &pristine, &patched)?;
    let fig = Figures::of(&runs, &make);
    let measured = Measured { runs, make, fig };

    let path = write_json("build", &report_json(&kb, jobs, load, &measured))?;
    print_kpbuild_table(&kb, jobs, &measured);
    print_make_table(jobs, &measured);
    print_load(load);
    println!("  wrote {}", path.display());
    drop(lock);
    Ok(())
}

/// Takes the lock kernel builds take per key: no other build of this kernel,
/// and no other `bench build`, while this one may patch it in place. Then
/// finishes the restore an interrupted run left undone. The lock is held
/// while the returned file lives.
fn lock_and_recover(key_dir: &Path, tree: &InPlace) -> Result<File, String> {
    let lock_path = testbed::kernel::lock_path_of(key_dir);
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        return Err(format!(
            "refusing to start: {} is held (the test kernel is being built, or another `bench build` runs)",
            lock_path.display()
        ));
    }
    refuse_if_in_use(key_dir)?;
    PROTECTED.store(true, Ordering::SeqCst);
    let recovered = tree.recover();
    PROTECTED.store(false, Ordering::SeqCst);
    recovered?;
    stop_if_interrupted()?;
    Ok(lock)
}

/// The benchmark patches only a file that matches the source tarball.
fn refuse_unless_pristine(file: &Path, pristine: &[u8]) -> Result<(), String> {
    let current = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if current != pristine {
        return Err(format!(
            "refusing to start: {} differs from {PATCHED_FILE} in {TARBALL}; \
             the benchmark patches only a pristine file (restore it, or rebuild the test kernel)",
            file.display()
        ));
    }
    Ok(())
}

/// [`RUNS`] timed `kpbuild build`s of `patch`, in this (release) process.
fn kpbuild_runs(kb: &KernelBuild, patch: &Path, jobs: usize) -> Result<Vec<BuildRun>, String> {
    let out = bench_dir().join("build-out");
    let mut runs = Vec::new();
    for run in 1..=RUNS {
        let mut args = kpbuild::BuildRequest::new(
            kpbuild::build::TargetSpec::Tree {
                src: kb.src.clone(),
                build: kb.build.clone(),
                vmlinux: None,
            },
            vec![patch.to_path_buf()],
            "kpbench_cmdline",
            out.clone(),
        );
        args.jobs = Some(jobs);
        let peak_reset = reset_peak_rss();
        let (wall_s, report, timings) =
            timed_build("kpbuild build", || crate::kpbuild_build(&args))?;
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
    Ok(runs)
}

/// The three makes of the cached tree, and whether `src-copy` kept its file.
struct MakeRuns {
    noop: MakeRun,
    incremental: MakeRun,
    restore: MakeRun,
    copy_pristine: Option<bool>,
}

/// The incremental make a full-rebuild tool needs, on the cached tree: with
/// nothing changed, then with the patched file swapped in (timed), then the
/// restore of the original file (untimed for the comparison).
fn make_runs(
    tree: &InPlace,
    key_dir: &Path,
    pristine: &[u8],
    patched: &[u8],
) -> Result<MakeRuns, String> {
    let (kb, jobs) = (tree.kb, tree.jobs);
    let file = kb.src.join(PATCHED_FILE);
    refuse_if_in_use(key_dir)?;
    progress(&format!(
        "bench build: make -j{jobs} bzImage modules with nothing changed"
    ));
    let noop = make_logged(kb, jobs, "noop", false)?;
    progress(&format!(
        "bench build: patching {} in place (by rename) and running make -j{jobs} bzImage modules",
        file.display()
    ));
    PROTECTED.store(true, Ordering::SeqCst);
    let (incremental, restore) = {
        // A failed apply has restored what it began (its guard's drop);
        // Ctrl-C must then end the process again.
        let mut applied = tree
            .apply(patched)
            .inspect_err(|_| PROTECTED.store(false, Ordering::SeqCst))?;
        let incremental = make_logged(kb, jobs, "incremental", false);
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
    let copy_pristine = check_restored(kb, pristine)?;
    Ok(MakeRuns {
        noop,
        incremental,
        restore,
        copy_pristine,
    })
}

/// The tree's file matches the tarball again, and its hard-linked copy in
/// `src-copy` (when there is one) was never modified; returns whether that
/// copy was found pristine (`None`: no copy).
fn check_restored(kb: &KernelBuild, pristine: &[u8]) -> Result<Option<bool>, String> {
    let file = kb.src.join(PATCHED_FILE);
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
    Ok(copy_pristine)
}

/// The figures derived from the kpbuild runs and the incremental make.
struct Figures {
    walls: Vec<f64>,
    overheads: Vec<f64>,
    cleanups: Vec<f64>,
    wall_med: f64,
    overhead_med: f64,
    ratio: f64,
    half_met: bool,
    overhead_met: bool,
    /// The report's steps: [`STEPS`], then any other, then `total`.
    step_names: Vec<String>,
    step_stats: BTreeMap<String, Value>,
    units: usize,
    functions: Vec<String>,
}

impl Figures {
    fn of(runs: &[BuildRun], make: &MakeRuns) -> Figures {
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
        let overheads: Vec<f64> = runs.iter().map(BuildRun::overhead_s).collect();
        let cleanups: Vec<f64> = runs.iter().map(|r| r.wall_s - r.step("total")).collect();
        let wall_med = median(&walls);
        let overhead_med = median(&overheads);
        let ratio = wall_med / make.incremental.seconds;
        let half_met = ratio < 0.5;
        let overhead_met = overhead_med < 1.0;
        let mut step_names: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
        for r in runs {
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
        Figures {
            walls,
            overheads,
            cleanups,
            wall_med,
            overhead_med,
            ratio,
            half_met,
            overhead_met,
            step_names,
            step_stats,
            units,
            functions,
        }
    }
}

/// What `bench build` measured, carried from the runs to the report.
struct Measured {
    runs: Vec<BuildRun>,
    make: MakeRuns,
    fig: Figures,
}

/// The content of `target/bench/build.json`.
fn report_json(kb: &KernelBuild, jobs: usize, load: Load, m: &Measured) -> Value {
    let (runs, make, fig) = (&m.runs, &m.make, &m.fig);
    json!({
        "benchmark": "build",
        "kernel": kb.key,
        "patch": BUILD_PATCH,
        "jobs": jobs,
        "runs": RUNS,
        "kpbuild": {
            "affected_units": fig.units,
            "patched_functions": fig.functions,
            "wall_s": fig.walls,
            "wall_s_median": fig.wall_med,
            "wall_s_min": min(&fig.walls),
            "timings_s_per_run": runs.iter().map(|r| &r.timings).collect::<Vec<_>>(),
            "steps_s": fig.step_stats,
            "own_overhead_s": fig.overheads,
            "own_overhead_s_median": fig.overhead_med,
            "cleanup_after_report_s": fig.cleanups,
            "peak_rss_kib": runs.iter().filter_map(|r| r.peak_rss_kib).max(),
        },
        "make": {
            "command": format!("make -C SRC O=BUILD -j{jobs} bzImage modules"),
            "nothing_changed": make.noop.json(),
            "incremental": make.incremental.json(),
            "restore_untimed": make.restore.json(),
        },
        "goal": {
            "statement": "kpbuild build well under half of the incremental make; kpbuild's own overhead under 1 s",
            "kpbuild_to_make_ratio": fig.ratio,
            "under_half_of_make": fig.half_met,
            "own_overhead_under_1s": fig.overhead_met,
            "met": fig.half_met && fig.overhead_met,
        },
        "source_restored": true,
        "src_copy_pristine": make.copy_pristine,
        "machine": machine(load),
    })
}

/// The heading and the kpbuild half of the printed table.
fn print_kpbuild_table(kb: &KernelBuild, jobs: usize, m: &Measured) {
    let (runs, fig) = (&m.runs, &m.fig);
    println!();
    println!("bench build: {BUILD_PATCH} against the cached test kernel");
    println!("  kernel        {}", kb.key);
    println!(
        "  kpbuild       kpbuild::build, --jobs {jobs}, {} affected unit(s), patches {}",
        fig.units,
        fig.functions.join(", ")
    );
    println!("  passes        {RUNS}: median (min)");
    println!();
    println!("  {:<44} {:>9} {:>9}", "kpbuild build", "median s", "min s");
    let row = |label: &str, v: &[f64]| {
        println!("  {:<44} {:>9.3} {:>9.3}", label, median(v), min(v));
    };
    row("wall time", &fig.walls);
    for s in &fig.step_names {
        let v: Vec<f64> = runs.iter().map(|r| r.step(s)).collect();
        let label = if s == "total" {
            "  total (report)".to_string()
        } else {
            format!("  step {s}")
        };
        row(&label, &v);
    }
    row("  scratch clean-up after the report", &fig.cleanups);
    row("own overhead: total - (compile + module)", &fig.overheads);
}

/// The make half of the printed table, and the goal.
fn print_make_table(jobs: usize, m: &Measured) {
    let (make, fig) = (&m.make, &m.fig);
    println!();
    println!(
        "  {:<44} {:>9} {:>9}",
        format!("make -j{jobs} bzImage modules"),
        "s",
        "CC lines"
    );
    for (label, run) in [
        ("nothing changed", &make.noop),
        ("after the patch (a full-rebuild tool)", &make.incremental),
        ("restore, untimed for the comparison", &make.restore),
    ] {
        println!("  {:<44} {:>9.3} {:>9}", label, run.seconds, run.compiled);
    }
    println!();
    println!(
        "  goal (issue): kpbuild build well under half of the incremental make, own overhead under 1 s"
    );
    println!(
        "    kpbuild {:.2} s = {:.0}% of make {:.2} s: {}",
        fig.wall_med,
        fig.ratio * 100.0,
        make.incremental.seconds,
        if fig.half_met {
            "under half: met"
        } else {
            "NOT under half"
        }
    );
    println!(
        "    own overhead {:.2} s: {}",
        fig.overhead_med,
        if fig.overhead_met {
            "under 1 s: met"
        } else {
            "NOT under 1 s"
        }
    );
    println!(
        "    => goal {}",
        if fig.half_met && fig.overhead_met {
            "met"
        } else {
            "NOT met"
        }
    );
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
