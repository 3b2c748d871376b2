//! `bench debian`: `kpbuild build --debian` cold and warm, next to an
//! estimate of a full rebuild of Debian's config on this machine; then
//! cold and warm for the oldest Debian 12 6.12 cloud release and the newest
//! 6.1 one in the archive (cold: the release's directory, its source
//! directory and its prepared directory moved aside, so the run downloads,
//! extracts and prepares everything).

use super::{
    BUILD_PATCH, BuildRun, Load, PROTECTED, RUNS, STEPS, bench_dir, cores, load_average, machine,
    median, min, peak_rss_kib, print_load, refuse_if_in_use, reset_peak_rss, stop_if_interrupted,
    timed_build, write_json,
};
use crate::{progress, repo_root};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

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

pub(super) fn bench_debian() -> Result<(), String> {
    let release = crate::debian_release()?;
    let load = load_average();
    let jobs = cores();
    let out = bench_dir().join("debian-out");

    let caches = find_caches(&release, &out, jobs)?;
    stop_if_interrupted()?;

    // Cold: the release's caches moved aside, restored whatever happens.
    let cold = cold_run(&release, &caches.dirs, &caches.release_dir, &out, jobs);
    if let Err(e) = &cold {
        eprintln!("xtask: bench: debian: the cold run failed: {e}");
    }
    stop_if_interrupted()?;

    let warm = warm_runs(&release, &out, jobs)?;

    // The rebuild-everything route, estimated.
    let estimate = rebuild_estimate(&caches.src, &caches.prepared, &caches.release_dir, jobs);
    if let Err(e) = &estimate {
        eprintln!("xtask: bench: debian: the full-rebuild estimate failed: {e}");
    }

    let m = Measured {
        fig: Figures::of(&cold, &warm),
        cold,
        warm,
        estimate,
        caches: caches.dirs,
    };
    // The older releases: the oldest 6.12 and the newest 6.1 in the archive;
    // and Debian 13's, after its build root (made once per Debian release).
    let (oldest, newest_61) = crate::debian_other_releases()?;
    let buildroot = BuildRootFigures::measure();
    let mut others: Vec<OtherRelease> = [oldest, newest_61]
        .into_iter()
        .map(|r| OtherRelease::measure(r, &out, jobs))
        .collect();
    others.push(OtherRelease::measure(
        crate::debian13_release()?,
        &out,
        jobs,
    ));
    let mut json = report_json(&release, jobs, load, &m);
    json["other_releases"] = Value::Array(others.iter().map(OtherRelease::json).collect());
    json["buildroot"] = buildroot.json();
    let path = write_json("debian", &json)?;
    print_runs_table(&release, jobs, &m);
    print_comparison(jobs, &m);
    print_others(&others);
    buildroot.print();
    print_load(load);
    println!("  wrote {}", path.display());
    Ok(())
}

/// `bench debian13`: only the Debian 13 release (cold and warm, the cold
/// run excluding its build root) and the build root, reported apart.
pub(super) fn bench_debian13() -> Result<(), String> {
    let load = load_average();
    let jobs = cores();
    let out = bench_dir().join("debian-out");
    let buildroot = BuildRootFigures::measure();
    let others = vec![OtherRelease::measure(
        crate::debian13_release()?,
        &out,
        jobs,
    )];
    let json = json!({
        "jobs": jobs,
        "machine": machine(load),
        "buildroot": buildroot.json(),
        "other_releases": others.iter().map(OtherRelease::json).collect::<Vec<_>>(),
    });
    let path = write_json("debian13", &json)?;
    print_others(&others);
    buildroot.print();
    print_load(load);
    println!("  wrote {}", path.display());
    Ok(())
}

/// The build root Debian 13's kernels compile in: made once per Debian
/// release, so timed apart from the cold runs (which keep it).
struct BuildRootFigures {
    /// The root, and the seconds `BuildRoot::for_suite` took in this run
    /// (about zero when it was already made).
    made: Result<(PathBuf, f64), String>,
    /// Its size on disk.
    bytes: Option<u64>,
}

impl BuildRootFigures {
    fn measure() -> BuildRootFigures {
        let made =
            crate::buildroot(crate::BUILDROOT_SUITE).map(|(root, s)| (root.dir().to_path_buf(), s));
        let bytes = made.as_ref().ok().and_then(|(dir, _)| {
            let out = Command::new("du").arg("-sb").arg(dir).output().ok()?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        BuildRootFigures { made, bytes }
    }

    fn json(&self) -> Value {
        match &self.made {
            Ok((dir, s)) => json!({
                "suite": crate::BUILDROOT_SUITE,
                "dir": dir,
                "seconds_this_run": s,
                "bytes": self.bytes,
            }),
            Err(e) => json!({ "error": e }),
        }
    }

    fn print(&self) {
        match &self.made {
            Ok((dir, s)) => println!(
                "  {} build root {}: {:.0} MB; {s:.1} s in this run (made once per Debian release, not in the cold figures; near 0 when it was already made)",
                crate::BUILDROOT_SUITE,
                dir.display(),
                self.bytes.unwrap_or(0) as f64 / 1e6
            ),
            Err(e) => println!("  build root: FAILED: {e}"),
        }
    }
}

/// Cold and warm runs of a release other than the main one.
struct OtherRelease {
    release: String,
    cold: Result<ColdRun, String>,
    warm: Result<Vec<BuildRun>, String>,
    caches: Vec<PathBuf>,
}

impl OtherRelease {
    /// A warm-up run (which fetches the release if it is not cached), the
    /// cold run with its caches moved aside, then the warm runs.
    fn measure(release: String, out: &Path, jobs: usize) -> OtherRelease {
        let caches = match find_caches(&release, out, jobs) {
            Ok(c) => c,
            Err(e) => {
                return OtherRelease {
                    release,
                    cold: Err(e.clone()),
                    warm: Err(e),
                    caches: Vec::new(),
                };
            }
        };
        let cold = cold_run(&release, &caches.dirs, &caches.release_dir, out, jobs);
        if let Err(e) = &cold {
            eprintln!("xtask: bench: debian: {release}: the cold run failed: {e}");
        }
        let warm = warm_runs(&release, out, jobs);
        OtherRelease {
            release,
            cold,
            warm,
            caches: caches.dirs,
        }
    }

    fn warm_median(&self) -> Option<f64> {
        let w = self.warm.as_ref().ok()?;
        Some(median(&w.iter().map(|r| r.wall_s).collect::<Vec<_>>()))
    }

    fn json(&self) -> Value {
        let cold = match &self.cold {
            Ok(c) => json!({
                "wall_s": c.wall_s(),
                "download_bytes": c.download_bytes,
                "downloaded_packages": c.packages,
                "build_timings_s": c.build.timings,
                "note": "one kpbuild build --debian with the release's directory, its source \
                         directory and its prepared directory moved aside: fetch = download of \
                         the packages and of linux-source-X.Y=VERSION (network), their \
                         extraction; prepare = olddefconfig + prepare",
                "caches_moved_aside": self.caches,
            }),
            Err(e) => json!({"error": e}),
        };
        let warm = match &self.warm {
            Ok(w) => json!({
                "wall_s": w.iter().map(|r| r.wall_s).collect::<Vec<_>>(),
                "wall_s_median": self.warm_median(),
                "timings_s_per_run": w.iter().map(|r| &r.timings).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"error": e}),
        };
        json!({
            "release": self.release,
            "cold": cold,
            "warm": warm,
            "cold_under_60s": self.cold.as_ref().ok().map(|c| c.wall_s() < 60.0),
            "warm_under_5s": self.warm_median().map(|w| w < 5.0),
        })
    }
}

/// One line per other release: cold (with its fetch and prepare steps) and
/// warm.
fn print_others(others: &[OtherRelease]) {
    println!();
    println!(
        "  older releases (cold: release, source and prepared caches moved aside; INCLUDES the network download)"
    );
    println!(
        "  {:<30} {:>9} {:>9} {:>9} {:>12}  goals (cold < 60 s, warm < 5 s)",
        "release", "cold s", "fetch s", "prepare s", "warm s (med)"
    );
    for o in others {
        let cold = o.cold.as_ref().ok();
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let warm = o.warm_median();
        let verdict = |v: Option<bool>| match v {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "failed",
        };
        println!(
            "  {:<30} {:>9} {:>9} {:>9} {:>12}  cold {}, warm {}",
            o.release,
            cell(cold.map(ColdRun::wall_s)),
            cell(cold.map(|c| c.build.step("fetch"))),
            cell(cold.map(|c| c.build.step("prepare"))),
            warm.map_or("-".to_string(), |w| format!("{w:.2}")),
            verdict(cold.map(|c| c.wall_s() < 60.0)),
            verdict(warm.map(|w| w < 5.0)),
        );
        for e in [o.cold.as_ref().err(), o.warm.as_ref().err()]
            .into_iter()
            .flatten()
        {
            println!("    FAILED: {e}");
        }
    }
}

/// The caches of one release, as the warm-up run names them.
struct Caches {
    /// The unpacked kernel source.
    src: PathBuf,
    /// The prepared build directory.
    prepared: PathBuf,
    release_dir: PathBuf,
    /// Every cache the cold run moves aside.
    dirs: Vec<PathBuf>,
}

/// A first, untimed run: it finds (or makes) the caches and names them.
fn find_caches(release: &str, out: &Path, jobs: usize) -> Result<Caches, String> {
    progress(&format!(
        "bench debian: warm-up run of kpbuild build --debian {release} (also finds the caches)"
    ));
    let probe = debian_run(release, out, jobs)?;
    let src = PathBuf::from(probe.report["inputs"]["src"].as_str().unwrap_or(""));
    let prepared = PathBuf::from(probe.report["inputs"]["build"].as_str().unwrap_or(""));
    let release_dir = kimage::cache_root().join("debian").join(release);
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
    let dirs = vec![release_dir.clone(), source_dir, prepared.clone()];
    Ok(Caches {
        src,
        prepared,
        release_dir,
        dirs,
    })
}

/// [`RUNS`] timed runs with every cache in place.
fn warm_runs(release: &str, out: &Path, jobs: usize) -> Result<Vec<BuildRun>, String> {
    let mut warm = Vec::new();
    for run in 1..=RUNS {
        let r = debian_run(release, out, jobs)?;
        progress(&format!(
            "bench debian: warm run {run}/{RUNS}: {:.2} s",
            r.wall_s
        ));
        warm.push(r);
        stop_if_interrupted()?;
    }
    Ok(warm)
}

/// What `bench debian` measured, carried from the runs to the report.
struct Measured {
    cold: Result<ColdRun, String>,
    warm: Vec<BuildRun>,
    estimate: Result<Estimate, String>,
    /// The caches the cold run moved aside.
    caches: Vec<PathBuf>,
    fig: Figures,
}

/// The figures derived from the cold and warm runs.
struct Figures {
    /// The report's steps: [`STEPS`], then any other, then `total`.
    step_names: Vec<String>,
    walls: Vec<f64>,
    warm_med: f64,
    warm_steps: BTreeMap<String, Value>,
    cold_wall: Option<f64>,
    cold_met: Option<bool>,
    warm_met: bool,
}

impl Figures {
    fn of(cold: &Result<ColdRun, String>, warm: &[BuildRun]) -> Figures {
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
        let cold_met = cold_wall.map(|w| w < 60.0);
        let warm_met = warm_med < 5.0;
        Figures {
            step_names,
            walls,
            warm_med,
            warm_steps,
            cold_wall,
            cold_met,
            warm_met,
        }
    }
}

/// The content of `target/bench/debian.json`.
fn report_json(release: &str, jobs: usize, load: Load, m: &Measured) -> Value {
    let (warm, fig) = (&m.warm, &m.fig);
    let cold_json = match &m.cold {
        Ok(c) => json!({
            "wall_s": c.wall_s(),
            "download_bytes": c.download_bytes,
            "downloaded_packages": c.packages,
            "build_timings_s": c.build.timings,
            "note": "one kpbuild build --debian with nothing cached: fetch = download of the \
                     packages (network) with the source tarball unpacked beside it, then the \
                     packages' extraction; prepare = olddefconfig + prepare of the private build \
                     directory",
            "caches_moved_aside": m.caches,
        }),
        Err(e) => json!({"error": e}),
    };
    let estimate_json = match &m.estimate {
        Ok(e) => e.json(),
        Err(e) => json!({"error": e}),
    };
    json!({
        "benchmark": "debian",
        "release": release,
        "patch": BUILD_PATCH,
        "jobs": jobs,
        "runs": RUNS,
        "cold": cold_json,
        "warm": {
            "wall_s": fig.walls,
            "wall_s_median": fig.warm_med,
            "wall_s_min": min(&fig.walls),
            "timings_s_per_run": warm.iter().map(|r| &r.timings).collect::<Vec<_>>(),
            "steps_s": fig.warm_steps,
            "peak_rss_kib": warm.iter().filter_map(|r| r.peak_rss_kib).max(),
        },
        "full_rebuild_estimate": estimate_json,
        "goal": {
            "statement": "on 2 cores: cold under 60 s, warm under 5 s",
            "cold_under_60s": fig.cold_met,
            "warm_under_5s": fig.warm_met,
            "warm_under_10s": fig.warm_med < 10.0,
        },
        "machine": machine(load),
    })
}

/// The heading and the table of the cold and warm runs, step by step.
fn print_runs_table(release: &str, jobs: usize, m: &Measured) {
    let (cold, warm, fig) = (&m.cold, &m.warm, &m.fig);
    println!();
    println!("bench debian: {BUILD_PATCH} against Debian's {release}");
    println!("  kpbuild       kpbuild::build, --debian {release}, --jobs {jobs}");
    match cold {
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
        cold_cell(fig.cold_wall),
        format!("{:.3} ({:.3})", fig.warm_med, min(&fig.walls))
    );
    for s in &fig.step_names {
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
}

/// The full-rebuild estimate, the side-by-side line and the goal.
fn print_comparison(jobs: usize, m: &Measured) {
    let fig = &m.fig;
    let (cold_wall, warm_med) = (fig.cold_wall, fig.warm_med);
    println!();
    match &m.estimate {
        Ok(e) => e.print(jobs),
        Err(e) => println!("  full rebuild estimate: FAILED: {e}"),
    }
    let est_s = m.estimate.as_ref().ok().map(|e| e.estimate_s);
    println!();
    println!(
        "  side by side on {jobs} cores: kpbuild cold {}, warm {warm_med:.1} s; full rebuild {}",
        cold_wall.map_or("(failed)".to_string(), |w| format!("{w:.1} s")),
        est_s.map_or("(no estimate)".to_string(), |s| format!(
            "≈ {:.0} min",
            s / 60.0
        ))
    );
    println!("  goal (2 cores): cold under 60 s, warm under 5 s");
    println!(
        "    cold {}: {}",
        cold_wall.map_or("-".to_string(), |w| format!("{w:.1} s")),
        match fig.cold_met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        }
    );
    println!(
        "    warm {warm_med:.1} s: {}",
        if fig.warm_met { "met" } else { "NOT met" }
    );
}

/// One `kpbuild build --debian RELEASE` of [`BUILD_PATCH`].
fn debian_run(release: &str, out: &Path, jobs: usize) -> Result<BuildRun, String> {
    let mut args = kpbuild::BuildRequest::new(
        kpbuild::build::TargetSpec::Debian {
            release: release.to_string(),
            src: None,
        },
        vec![repo_root().join(BUILD_PATCH)],
        "kpbench_deb_cmdline",
        out,
    );
    args.jobs = Some(jobs);
    let peak_reset = reset_peak_rss();
    let (wall_s, report, timings) =
        timed_build("kpbuild build --debian", || crate::kpbuild_build(&args))?;
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
    release: &str,
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
        let run = cold_measure(release, release_dir, out, jobs);
        progress("bench debian: deleting the cold run's caches and putting the originals back");
        let restored = aside.restore();
        let run = run?;
        restored?;
        Ok(run)
    })();
    PROTECTED.store(false, Ordering::SeqCst);
    result
}

fn cold_measure(
    release: &str,
    release_dir: &Path,
    out: &Path,
    jobs: usize,
) -> Result<ColdRun, String> {
    progress(&format!(
        "bench debian: cold: kpbuild build --debian {release} with nothing cached (network)"
    ));
    let build = debian_run(release, out, jobs)?;
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
    let (cc, _) = kpbuild::treeless::config_compiler(&config).map_err(|e| e.to_string())?;
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
