//! `kpbuild farm run --artifact DIR`: each target's cumulative module built
//! from the fixes that apply to its source and tested in its own kernel,
//! with every outcome written down; without a repository no key is needed
//! and nothing is published. With one ([`PublishTo`]), each tested target's
//! bundle is published ([`super::publish`]) and a target whose inputs equal
//! its latest bundle's is skipped as unchanged.
//!
//! Per target, in `DIR/TARGET/`: `build/` (`NAME.ko`, `report.json`),
//! `build.log`, `check.sh` (the fixes' check scripts, one after the other),
//! `vmtest/serial.log`, and `target.json` ([`TargetReport`]), written last:
//! a directory without it is unfinished. `DIR/farm-report.json`
//! ([`FarmReport`]) holds every target's, `DIR/farm-report.html` shows them.
//! Targets run in parallel within `jobs`; one target failing never stops
//! the others.

use super::apply::{Applies, FixOnSource};
use super::publish::{self, Channel, PublishTo, PublishedBundle};
use super::series::{Selection, Series};
use super::targets::{Kernel, Target, Targets};
use super::{FarmError, applies_nowhere, applies_on};
use crate::build::{BuildRequest, ErrorKind, Progress, TargetSpec};
use crate::files::{FileError, PathContext};
use crate::vmtest::{VmKernel, VmtestReport, VmtestRequest};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A farm run without publishing.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The targets file.
    pub targets: PathBuf,
    /// The fix series.
    pub series: PathBuf,
    /// Where each target's results go (`DIR/TARGET/`).
    pub artifact: PathBuf,
    /// Only this target.
    pub only: Option<String>,
    /// The module name's start ([`module_name`]).
    pub name: String,
    /// Where progress lines go.
    pub progress: Progress,
    /// Where tested targets' bundles are published; `None`: nowhere.
    pub publish: Option<PublishTo>,
    /// How many targets are built and tested at once (at least 1).
    pub jobs: usize,
}

/// What became of a target, or of one fix on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Built, and the module's life cycle passed in its kernel.
    Tested,
    /// Does not apply to this source (for a target: no fix does).
    DoesNotApply,
    /// Cannot be live patched safely.
    Refused,
    /// The patch makes no functional change.
    NoChange,
    /// The build failed.
    BuildError,
    /// The module's life cycle failed in its kernel.
    VmtestFailure,
    /// Its inputs equal its latest published bundle's: not built again.
    Unchanged,
    /// Tested, but its bundle could not be made or published.
    PublishError,
    /// No artifact holds it (`farm publish`): its job did not finish.
    Missing,
}

/// One fix on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FixReport {
    /// The fix's id.
    pub id: String,
    /// The text it got.
    pub text: PathBuf,
    /// What became of it.
    pub outcome: Outcome,
    /// Why, when it was not tested.
    pub reason: Option<String>,
}

/// One target's result (`DIR/TARGET/target.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    /// The target.
    #[serde(flatten)]
    pub target: Target,
    /// Its series hash ([`Selection::sha256`]).
    pub series_sha256: String,
    /// What became of it.
    pub outcome: Outcome,
    /// Why, when it was not tested.
    pub reason: Option<String>,
    /// Each fix, in order.
    pub fixes: Vec<FixReport>,
    /// The module, when one was built.
    pub module: Option<PathBuf>,
    /// The build's `report.json`, when one was written.
    pub build_report: Option<PathBuf>,
    /// Seconds the build took.
    pub build_seconds: Option<f64>,
    /// Seconds the test took.
    pub vmtest_seconds: Option<f64>,
    /// insmod started → transition finished, in the guest (ms).
    pub apply_latency_ms: Option<f64>,
    /// disable → the patch gone, in the guest (ms).
    pub unpatch_latency_ms: Option<f64>,
    /// The guest's serial log.
    pub serial_log: Option<PathBuf>,
    /// The build's progress lines.
    pub build_log: Option<PathBuf>,
    /// The bundle published now or, when unchanged, the latest one.
    pub bundle: Option<PublishedBundle>,
    /// The kernel build the module was made for (release, build-id,
    /// `.config` hash): what its bundle records, read when it was built.
    pub kernel_build: Option<bundle::manifest::Kernel>,
}

/// Every target's result (`DIR/farm-report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FarmReport {
    /// The targets file.
    pub targets_file: PathBuf,
    /// The series directory.
    pub series: PathBuf,
    /// Whether every target was built and tested, or has no fix to build.
    pub passed: bool,
    /// Each target, in file order.
    pub targets: Vec<TargetReport>,
}

impl TargetReport {
    /// A target's report with nothing measured yet.
    pub fn new(target: Target, series_sha256: &str, outcome: Outcome) -> TargetReport {
        TargetReport {
            target,
            series_sha256: series_sha256.to_string(),
            outcome,
            reason: None,
            fixes: Vec::new(),
            module: None,
            build_report: None,
            build_seconds: None,
            vmtest_seconds: None,
            apply_latency_ms: None,
            unpatch_latency_ms: None,
            serial_log: None,
            build_log: None,
            bundle: None,
            kernel_build: None,
        }
    }
}

impl Outcome {
    /// Whether a target with this outcome passed: tested (and published),
    /// unchanged, or without a fix to build.
    pub fn passed(self) -> bool {
        matches!(
            self,
            Outcome::Tested | Outcome::DoesNotApply | Outcome::Unchanged
        )
    }

    /// Its name in reports (`vmtest-failure`).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Tested => "tested",
            Outcome::DoesNotApply => "does-not-apply",
            Outcome::Refused => "refused",
            Outcome::NoChange => "no-change",
            Outcome::BuildError => "build-error",
            Outcome::VmtestFailure => "vmtest-failure",
            Outcome::Unchanged => "unchanged",
            Outcome::PublishError => "publish-error",
            Outcome::Missing => "missing",
        }
    }
}

/// A target's module name (also its patch's under `/sys/kernel/livepatch`):
/// `name`, `_` and the first 8 hex digits of its series hash. A changed
/// series makes a module of another name, so it can be loaded beside the
/// one it atomically replaces.
pub fn module_name(name: &str, series_sha256: &str) -> String {
    format!("{name}_{}", &series_sha256[..8.min(series_sha256.len())])
}

/// The marker of a finished target directory.
pub(super) const TARGET_JSON: &str = "target.json";

/// Runs the farm without publishing; a target's failure is in the report,
/// only bad input and unusable outputs are errors.
pub fn run(req: &RunRequest) -> Result<FarmReport, FarmError> {
    let series = Series::read(&req.series)?;
    let file = Targets::read(&req.targets)?;
    let mut targets = file.expand()?;
    if let Some(only) = &req.only {
        let known: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        targets.retain(|t| &t.name == only);
        if targets.is_empty() {
            return Err(FarmError::NoSuchTarget {
                path: req.targets.clone(),
                name: only.clone(),
                known,
            });
        }
    }
    crate::module::validate_module_name(&module_name(&req.name, &"0".repeat(64)))
        .map_err(|e| FarmError::Name(Box::new(e)))?;
    // A missing key or one that is not the public key's pair stops the run
    // before anything is built.
    let channel = req
        .publish
        .as_ref()
        .map(Channel::open)
        .transpose()
        .map_err(|e| FarmError::Publish(Box::new(e)))?;
    crate::files::create_dir_all(&req.artifact)?;
    let progress = |line: &str| req.progress.line(&format!("farm: {line}"));
    let mut applies = Vec::new();
    for t in &targets {
        applies.push(applies_on(t, &series, &progress)?);
    }
    // With --only, a fix may well not apply to the one target.
    if req.only.is_none() {
        let results: Vec<&[FixOnSource]> = applies.iter().map(Vec::as_slice).collect();
        let nowhere = applies_nowhere(&series, &results);
        if !nowhere.is_empty() {
            return Err(FarmError::AppliesNowhere { fixes: nowhere });
        }
    }
    let work: Vec<(Target, Vec<FixOnSource>)> = targets.into_iter().zip(applies).collect();
    let reports = in_parallel(req.jobs, &work, |(t, applies)| {
        let dir = target_dir(&req.artifact, &t.name)?;
        let selection = series.select(&t.kernel_version);
        let report = run_target(req, channel.as_ref(), t.clone(), &selection, applies, &dir);
        let json = serde_json::to_vec_pretty(&report).expect("json");
        crate::files::write_atomic(&dir.join(TARGET_JSON), &json)?;
        progress(&format!(
            "{}: {}",
            report.target.name,
            report.outcome.name()
        ));
        Ok(report)
    })?;
    let report = FarmReport {
        targets_file: req.targets.clone(),
        series: req.series.clone(),
        passed: reports.iter().all(|r| r.outcome.passed()),
        targets: reports,
    };
    let json = serde_json::to_vec_pretty(&report).expect("json");
    crate::files::write_atomic(&req.artifact.join("farm-report.json"), &json)?;
    let html = super::html::render(&report, &series, &req.artifact);
    crate::files::write_atomic(&req.artifact.join("farm-report.html"), html.as_bytes())?;
    Ok(report)
}

/// `f` over `items` on at most `jobs` threads, results in the items' order;
/// the first error is returned after every item ran.
fn in_parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R, FarmError> + Sync,
) -> Result<Vec<R>, FarmError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<R, FarmError>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *results[i].lock().expect("a result slot") = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("a result slot")
                .expect("every item ran")
        })
        .collect()
}

/// `DIR/TARGET`, empty: an earlier run's (it has `target.json`, or is
/// empty) is removed; anything else is an error, never deleted.
fn target_dir(artifact: &Path, name: &str) -> Result<PathBuf, FarmError> {
    let dir = artifact.join(name);
    if dir.exists() {
        let ours =
            dir.join(TARGET_JSON).is_file() || std::fs::read_dir(&dir).at(&dir)?.next().is_none();
        if !ours {
            return Err(FarmError::NotAnArtifact { dir });
        }
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    crate::files::create_dir_all(&dir)?;
    Ok(dir)
}

/// Builds and tests one target; every failure becomes its outcome.
fn run_target(
    req: &RunRequest,
    channel: Option<&Channel>,
    target: Target,
    selection: &Selection<'_>,
    applies: &[FixOnSource],
    dir: &Path,
) -> TargetReport {
    let mut report = TargetReport::new(target, &selection.sha256, Outcome::DoesNotApply);
    let included: Vec<&FixOnSource> = applies
        .iter()
        .filter(|a| a.applies == Applies::Applies)
        .collect();
    if included.is_empty() {
        report.reason = Some("no fix applies to this source".into());
    } else {
        let done = match channel {
            None => build_and_test(req, &mut report, &included, dir),
            Some(c) => build_test_publish(req, c, &mut report, selection, &included, dir),
        };
        match done {
            Ok(outcome) => report.outcome = outcome,
            Err((outcome, reason)) => {
                report.outcome = outcome;
                report.reason = Some(reason);
            }
        }
    }
    report.fixes = applies
        .iter()
        .map(|a| {
            let (outcome, reason) = match &a.applies {
                Applies::Applies => (report.outcome, report.reason.clone()),
                Applies::DoesNotApply { why } => (Outcome::DoesNotApply, Some(why.clone())),
                Applies::Refused { why } => (Outcome::Refused, Some(why.clone())),
            };
            FixReport {
                id: a.id.clone(),
                text: a.text.clone(),
                outcome,
                reason,
            }
        })
        .collect();
    report
}

/// The build, then the test; an `Err` is the outcome that stopped them.
fn build_and_test(
    req: &RunRequest,
    report: &mut TargetReport,
    included: &[&FixOnSource],
    dir: &Path,
) -> Result<Outcome, (Outcome, String)> {
    let spec = match &report.target.kernel {
        Kernel::Debian { release, .. } => TargetSpec::Debian {
            release: release.clone(),
            src: None,
        },
        Kernel::Tree { src, build } => TargetSpec::Tree {
            src: src.clone(),
            build: build.clone(),
            vmlinux: None,
        },
    };
    let texts = included.iter().map(|a| a.text.clone()).collect();
    let out = dir.join("build");
    let name = module_name(&req.name, &report.series_sha256);
    let mut build = BuildRequest::new(spec, texts, &name, &out);
    let log = dir.join("build.log");
    build.progress = logged(&req.progress, &report.target.name, &log);
    report.build_log = Some(log);
    // Targets built at once share the machine's cores.
    if req.jobs > 1 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        build.jobs = Some((cpus / req.jobs).max(1));
    }
    let started = Instant::now();
    let built = crate::build(&build);
    report.build_seconds = Some(started.elapsed().as_secs_f64());
    if out.join("report.json").is_file() {
        report.build_report = Some(out.join("report.json"));
    }
    if let Err(e) = built {
        let outcome = match e.kind() {
            ErrorKind::Refused => Outcome::Refused,
            ErrorKind::NoChange => Outcome::NoChange,
            _ => Outcome::BuildError,
        };
        return Err((outcome, e.to_string()));
    }
    let module = out.join(format!("{name}.ko"));
    report.module = Some(module.clone());
    if report.kernel_build.is_none() {
        let name = report.target.name.clone();
        let progress = |line: &str| req.progress.line(&format!("farm: {name}: {line}"));
        let kernel = publish::kernel_files(&report.target, &progress)
            .and_then(|files| Ok(crate::bundle::kernel_of(&files.vmlinux, &files.config)?))
            .map_err(|e| (Outcome::BuildError, e.to_string()))?;
        report.kernel_build = Some(kernel);
    }
    let check = check_script(dir, included).map_err(|e| (Outcome::VmtestFailure, e.to_string()))?;
    let kernel = match &report.target.kernel {
        Kernel::Debian { release, .. } => VmKernel::Debian(release.clone()),
        Kernel::Tree { build, .. } => VmKernel::Image(build.join("arch/x86/boot/bzImage")),
    };
    let started = Instant::now();
    let tested = crate::vmtest::run(&VmtestRequest {
        module,
        kernel,
        check,
        work: dir.join("vmtest"),
        memory_mb: 1024,
        timeout: Duration::from_secs(300),
    });
    report.vmtest_seconds = Some(started.elapsed().as_secs_f64());
    let tested: VmtestReport = tested.map_err(|e| (Outcome::VmtestFailure, e.to_string()))?;
    report.apply_latency_ms = tested.apply_latency_ms;
    report.unpatch_latency_ms = tested.unpatch_latency_ms;
    report.serial_log = Some(tested.serial_log.clone());
    if !tested.passed {
        let why = tested.failure.unwrap_or_else(|| "failed".into());
        return Err((Outcome::VmtestFailure, why));
    }
    Ok(Outcome::Tested)
}

/// The skip when the inputs equal the latest bundle's, else the build and
/// test, then the bundle published.
fn build_test_publish(
    req: &RunRequest,
    channel: &Channel,
    report: &mut TargetReport,
    selection: &Selection<'_>,
    included: &[&FixOnSource],
    dir: &Path,
) -> Result<Outcome, (Outcome, String)> {
    let failed = |e: publish::PublishError| (Outcome::PublishError, e.to_string());
    let name = report.target.name.clone();
    let progress = |line: &str| req.progress.line(&format!("farm: {name}: {line}"));
    let files = publish::kernel_files(&report.target, &progress).map_err(failed)?;
    let inputs = publish::inputs_of(&files, selection).map_err(failed)?;
    let latest = channel.latest(&inputs.kernel.build_id).map_err(failed)?;
    report.kernel_build = Some(inputs.kernel.clone());
    if let Some(l) = latest
        .as_ref()
        .filter(|l| publish::unchanged(Some(l), &inputs))
    {
        let m = l.manifest();
        report.bundle = Some(publish::published_of(channel, l));
        report.reason = Some(format!(
            "kernel and series equal those of the published sequence {}",
            m.sequence
        ));
        return Ok(Outcome::Unchanged);
    }
    build_and_test(req, report, included, dir)?;
    let out = dir.join("build");
    let published = publish::publish(
        channel,
        &out,
        &inputs.kernel,
        &name,
        selection,
        latest.as_ref(),
    )
    .map_err(failed)?;
    progress(&format!(
        "published sequence {} in {}",
        published.sequence,
        published.path.display()
    ));
    report.bundle = Some(published);
    Ok(Outcome::Tested)
}

/// Progress that goes to `log` (one line each) and, prefixed with the
/// target's name, to `progress`.
fn logged(progress: &Progress, name: &str, log: &Path) -> Progress {
    let file = std::fs::File::create(log).ok().map(std::sync::Mutex::new);
    let (progress, name) = (progress.clone(), name.to_string());
    Progress::Lines(std::sync::Arc::new(move |line: &str| {
        if let Some(f) = &file {
            use std::io::Write;
            let _ = writeln!(f.lock().expect("the build log"), "{line}");
        }
        progress.line(&format!("farm: {name}: {line}"));
    }))
}

/// `DIR/check.sh`: each included fix's check script, in order, each in its
/// own shell, the first failure naming its fix; `None` when no fix has one.
fn check_script(dir: &Path, included: &[&FixOnSource]) -> Result<Option<PathBuf>, FileError> {
    let mut script = String::new();
    for (i, fix) in included.iter().enumerate() {
        let Some(check) = fix.check.as_ref() else {
            continue;
        };
        let text = crate::files::read_to_string(check)?;
        // The here-document's end: a line the script itself does not hold.
        let end = (0..)
            .map(|n| format!("KPBUILD_FARM_CHECK_END_{n}"))
            .find(|end| !text.lines().any(|l| l == end))
            .expect("a free end line");
        let file = format!("/vmtest/farm-check-{i}");
        script.push_str(&format!("cat > {file} <<'{end}'\n{text}"));
        if !text.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(&format!(
            "{end}\necho 'farm check: {id}'\nsh {file} || {{ echo 'farm check failed: {id}'; exit 1; }}\n",
            id = fix.id
        ));
    }
    if script.is_empty() {
        return Ok(None);
    }
    let path = dir.join("check.sh");
    crate::files::write_atomic(&path, script.as_bytes())?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::scratch::Scratch;

    fn fix(s: &Scratch, id: &str, check: Option<&str>) -> FixOnSource {
        FixOnSource {
            id: id.into(),
            text: s.path(&format!("{id}.patch")),
            check: check.map(|text| s.write(&format!("{id}.check"), text)),
            applies: Applies::Applies,
        }
    }

    #[test]
    fn the_check_script_runs_each_fixs_check_in_order() {
        let s = Scratch::new("farm-check-script");
        let dir = s.dir("target");
        let none = [fix(&s, "0001-a", None)];
        assert_eq!(
            check_script(&dir, &none.iter().collect::<Vec<_>>()).unwrap(),
            None
        );
        assert!(!dir.join("check.sh").exists());
        // A script that holds the first end line gets the next one.
        let fixes = [
            fix(&s, "0001-a", Some("test -e /proc/a")),
            fix(&s, "0002-b", None),
            fix(&s, "0003-c", Some("echo x\nKPBUILD_FARM_CHECK_END_0\n")),
        ];
        let path = check_script(&dir, &fixes.iter().collect::<Vec<_>>())
            .unwrap()
            .unwrap();
        assert_eq!(path, dir.join("check.sh"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "cat > /vmtest/farm-check-0 <<'KPBUILD_FARM_CHECK_END_0'\ntest -e /proc/a\n\
             KPBUILD_FARM_CHECK_END_0\necho 'farm check: 0001-a'\n\
             sh /vmtest/farm-check-0 || { echo 'farm check failed: 0001-a'; exit 1; }\n\
             cat > /vmtest/farm-check-2 <<'KPBUILD_FARM_CHECK_END_1'\necho x\nKPBUILD_FARM_CHECK_END_0\n\
             KPBUILD_FARM_CHECK_END_1\necho 'farm check: 0003-c'\n\
             sh /vmtest/farm-check-2 || { echo 'farm check failed: 0003-c'; exit 1; }\n"
        );
        // The script runs under sh as the guest runs it.
        let Some(sh) = testbed::oracle::tool("sh", "dash") else {
            return;
        };
        let host = text.replace("/vmtest/", &format!("{}/", dir.display()));
        let out = std::process::Command::new(sh)
            .arg("-c")
            .arg(&host)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success());
        assert!(stdout.contains("farm check failed: 0001-a"), "{stdout}");
        assert!(!stdout.contains("0003-c"), "{stdout}");
    }
}
