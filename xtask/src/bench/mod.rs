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
//! - `headers` (only when named): `kpbuild build --debian` for a patch that
//!   changes a header, cold (the release's unit index and the prepared
//!   directory's include graph removed) and warm, with the cost of each.
//!
//! - `farm` (only when named): `kpbuild farm run` per target (the test
//!   tree, the newest and the oldest Debian 6.12 cloud kernels), first,
//!   warm and unchanged; `--all`: the whole farm over every 6.12 cloud
//!   kernel apt knows.
//!
//! Each prints a table on stdout and writes `target/bench/NAME.json`. The
//! figures only mean something from a release build, so a debug `cargo xtask`
//! replaces itself with `cargo run --release -p xtask -- bench ...`.

mod build;
mod debian;
mod diff;
mod farm;
mod headers;
mod prematch;
mod prematch_debian;

use crate::repo_root;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Timed runs of each measurement; the tables show the median and the minimum.
const RUNS: usize = 3;
/// Set in the environment of the release re-run, so it never re-runs again.
const REEXEC_ENV: &str = "KPBUILD_XTASK_BENCH_RELEASE";
/// The patch `bench build` measures, and the one file it changes.
const BUILD_PATCH: &str = "fixtures/patches/proc-cmdline-string.patch";
/// The steps of `kpbuild build`'s report, in pipeline order.
const STEPS: &[&str] = &["check", "apply", "affected", "compile", "diff", "module"];

/// While set, an interrupt only raises [`INTERRUPTED`]: the kernel tree is
/// patched in place and must be restored before the process ends.
static PROTECTED: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// `cargo xtask bench [diff|build|debian|headers|prematch [--debian
/// [RELEASE]] [--units N]]`; diff and build when none is named (debian and
/// headers are slow and need the network: only when named). `rest` holds
/// the arguments after the benchmark's name.
pub fn run(what: Option<&str>, rest: &[String]) -> Result<(), String> {
    let farm_all = what == Some("farm") && rest.iter().any(|a| a == "--all");
    let rest_checked: Vec<String> = if what == Some("farm") {
        rest.iter().filter(|a| *a != "--all").cloned().collect()
    } else {
        rest.to_vec()
    };
    let prematch = prematch_options(what, &rest_checked)?;
    let which: &[&str] = match what {
        None => &["diff", "build"],
        Some("diff") => &["diff"],
        Some("build") => &["build"],
        Some("debian") => &["debian"],
        Some("debian13") => &["debian13"],
        Some("headers") => &["headers"],
        Some("prematch") => &["prematch"],
        Some("farm") => &["farm"],
        Some(other) => {
            return Err(format!(
                "unknown benchmark `{other}`: expected `diff`, `build`, `debian`, `debian13`, `headers`, `prematch` or `farm`"
            ));
        }
    };
    if cfg!(debug_assertions) {
        if std::env::var_os(REEXEC_ENV).is_none() {
            return rerun_in_release(what, rest);
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
            "diff" => diff::bench_diff()?,
            "debian" => debian::bench_debian()?,
            "debian13" => debian::bench_debian13()?,
            "headers" => headers::bench_headers()?,
            "farm" => farm::bench_farm(farm_all)?,
            "prematch" => match &prematch {
                Some(PrematchOptions {
                    debian: Some(release),
                    units,
                }) => prematch_debian::bench_prematch_debian(release, *units)?,
                _ => prematch::bench_prematch()?,
            },
            _ => build::bench_build()?,
        }
    }
    Ok(())
}

/// `bench prematch`'s options: the Debian release to survey instead of
/// the test kernel, and how many of its units.
#[derive(Debug, PartialEq)]
struct PrematchOptions {
    debian: Option<String>,
    units: Option<usize>,
}

/// Parses `rest` for `bench prematch`; other benchmarks take no option.
/// `--debian` without a release is the suite's Debian release.
fn prematch_options(
    what: Option<&str>,
    rest: &[String],
) -> Result<Option<PrematchOptions>, String> {
    if what != Some("prematch") {
        return match rest.first() {
            Some(a) => Err(format!(
                "bench {}: unexpected argument `{a}`",
                what.unwrap_or("")
            )),
            None => Ok(None),
        };
    }
    let mut options = PrematchOptions {
        debian: None,
        units: None,
    };
    let mut args = rest.iter().peekable();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--debian" => {
                let release = match args.next_if(|r| !r.starts_with('-')) {
                    Some(r) => r.clone(),
                    None => crate::debian_release()?,
                };
                options.debian = Some(release);
            }
            "--units" => {
                let n = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("bench prematch: --units needs a number")?;
                options.units = Some(n);
            }
            other => return Err(format!("bench prematch: unknown argument `{other}`")),
        }
    }
    if options.units.is_some() && options.debian.is_none() {
        return Err("bench prematch: --units goes with --debian".into());
    }
    Ok(Some(options))
}

/// Replaces this debug process with a release build of itself.
fn rerun_in_release(what: Option<&str>, rest: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    eprintln!(
        "xtask: bench: this xtask is a debug build; benchmarking from a release build instead:\n  \
         cargo run --release -p xtask -- bench {} {}",
        what.unwrap_or(""),
        rest.join(" ")
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let err = Command::new(cargo)
        .current_dir(repo_root())
        .env(REEXEC_ENV, "1")
        .args(["run", "--release", "-p", "xtask", "--", "bench"])
        .args(what)
        .args(rest)
        .exec();
    Err(format!("cannot run cargo: {err}"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prematch_options_are_parsed_and_checked() {
        assert_eq!(
            prematch_options(Some("prematch"), &[]).unwrap(),
            Some(PrematchOptions {
                debian: None,
                units: None
            })
        );
        let release = "6.12.118+deb12-cloud-amd64";
        assert_eq!(
            prematch_options(
                Some("prematch"),
                &args(&["--debian", release, "--units", "20"])
            )
            .unwrap(),
            Some(PrematchOptions {
                debian: Some(release.into()),
                units: Some(20)
            })
        );
        let e = prematch_options(Some("prematch"), &args(&["--units", "20"])).unwrap_err();
        assert!(e.contains("--units goes with --debian"), "{e}");
        let e = prematch_options(Some("prematch"), &args(&["--debian", release, "--units"]))
            .unwrap_err();
        assert!(e.contains("--units needs a number"), "{e}");
        let e = prematch_options(Some("prematch"), &args(&["--fast"])).unwrap_err();
        assert!(e.contains("unknown argument `--fast`"), "{e}");
        let e = prematch_options(Some("diff"), &args(&["--debian"])).unwrap_err();
        assert!(
            e.contains("bench diff: unexpected argument `--debian`"),
            "{e}"
        );
        assert_eq!(prematch_options(None, &[]).unwrap(), None);
    }
}
