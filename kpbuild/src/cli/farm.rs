//! `kpbuild farm` on the command line: arguments and printing; the work is
//! [`crate::farm`]'s.

use crate::exit;
use crate::farm::apply::Applies;
use crate::farm::{self, FarmError, Matrix};
use std::path::{Path, PathBuf};

/// Arguments of `kpbuild farm`.
#[derive(Debug, clap::Args)]
pub struct FarmArgs {
    /// The farm command.
    #[command(subcommand)]
    pub command: FarmCommand,
}

/// `kpbuild farm`'s commands.
#[derive(Debug, clap::Subcommand)]
pub enum FarmCommand {
    /// Check a targets file (and a fix series) and print the concrete
    /// targets: sets of Debian kernels expanded through apt, each target's
    /// kernel version and, with --series, the text of each fix it gets and
    /// its series hash. Builds nothing.
    Targets(TargetsArgs),
    /// Build each target's cumulative module from the fixes that apply to
    /// its source and test it in its own kernel (`kpbuild vmtest`, with the
    /// fixes' check scripts); write each target's module, logs and
    /// `target.json` to `ARTIFACT/TARGET/` and every outcome to
    /// `ARTIFACT/farm-report.json` and `farm-report.html`. Without --repo it
    /// needs no key and publishes nothing; with --repo each tested target's
    /// signed cumulative bundle (its channel's latest bundle of the kernel
    /// as predecessor) is published in `REPO/CHANNEL/`, and a target whose
    /// kernel and series hash equal its latest bundle's is skipped
    /// (unchanged). Exit 1 when a target was neither tested, unchanged nor
    /// without a fix that applies.
    Run(RunArgs),
    /// Write the farm as a CI pipeline (GitLab `parallel:matrix` or GitHub
    /// `strategy.matrix`): one job per target runs `farm run --only TARGET
    /// --artifact DIR` without the signing key, its kernel cache kept per
    /// kernel release; a final job, the only one with the key (CI variables
    /// KPBUILD_SIGNING_KEY and KPBUILD_REPO), runs `farm publish`. The
    /// matrix is the targets expanded now: plan again when apt knows new
    /// kernels.
    Plan(PlanArgs),
    /// Check the outputs of farm runs made elsewhere without the key (`farm
    /// run --artifact DIR`, one per CI job) against this targets file and
    /// series, and publish each tested target's signed cumulative bundle in
    /// `REPO/CHANNEL/`. An artifact of an unknown target, of another kernel
    /// or of another series stops it before anything is published; a
    /// target without an artifact or not tested is not published and makes
    /// the exit 1, the others are published.
    Publish(PublishArgs),
}

/// Arguments of `kpbuild farm plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The targets file (as the pipeline's checkout names it).
    #[arg(long)]
    pub targets: PathBuf,
    /// The fix series directory (as the pipeline's checkout names it).
    #[arg(long)]
    pub series: PathBuf,
    /// The CI engine.
    #[arg(long, value_enum)]
    pub ci: farm::plan::Ci,
    /// The minisign public key of the repository (a file of the checkout).
    #[arg(long)]
    pub pubkey: PathBuf,
    /// The channel the publish job publishes to.
    #[arg(long, default_value = "test")]
    pub channel: String,
    /// The start of each target's livepatch module name: the module is
    /// NAME_HASH8, HASH8 the first 8 hex digits of the target's series hash
    /// (a new sequence's module loads beside the one it replaces).
    #[arg(long, default_value = "livepatch_farm")]
    pub name: String,
    /// A shell command every job runs first (for example one that installs
    /// kpbuild); without it kpbuild must be on the runner's PATH.
    #[arg(long)]
    pub setup: Option<String>,
    /// Write the pipeline here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Print the plan (its jobs and the pipeline's text) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild farm publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The targets file.
    #[arg(long)]
    pub targets: PathBuf,
    /// The fix series directory.
    #[arg(long)]
    pub series: PathBuf,
    /// The farm runs' `--artifact` directories.
    #[arg(long, num_args = 1.., required = true)]
    pub artifacts: Vec<PathBuf>,
    /// The repository (a channel is its directory `REPO/CHANNEL`).
    #[arg(long)]
    pub repo: PathBuf,
    /// The unencrypted minisign secret key that signs bundles and indexes.
    #[arg(long)]
    pub key: PathBuf,
    /// Its public key: verifies the channel's index and latest bundles.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// The channel published to (letters, digits, '-', '_').
    #[arg(long, default_value = "test")]
    pub channel: String,
    /// Write `farm-report.json` and `farm-report.html` here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the farm report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild farm run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The targets file.
    #[arg(long)]
    pub targets: PathBuf,
    /// The fix series directory.
    #[arg(long)]
    pub series: PathBuf,
    /// Where each target's results go (`ARTIFACT/TARGET/`).
    #[arg(long)]
    pub artifact: PathBuf,
    /// Only the target of this name (as `farm targets` prints it).
    #[arg(long)]
    pub only: Option<String>,
    /// The start of each target's livepatch module name: the module is
    /// NAME_HASH8, HASH8 the first 8 hex digits of the target's series hash
    /// (a new sequence's module loads beside the one it replaces).
    #[arg(long, default_value = "livepatch_farm")]
    pub name: String,
    /// Publish each tested target's bundle in this repository (a channel
    /// is its directory `REPO/CHANNEL`).
    #[arg(long, requires_all = ["key", "pubkey"])]
    pub repo: Option<PathBuf>,
    /// The unencrypted minisign secret key that signs bundles and indexes.
    #[arg(long, requires = "repo")]
    pub key: Option<PathBuf>,
    /// Its public key: verifies the channel's index and latest bundles.
    #[arg(long, requires = "repo")]
    pub pubkey: Option<PathBuf>,
    /// The channel published to (letters, digits, '-', '_').
    #[arg(long, default_value = "test", requires = "repo")]
    pub channel: String,
    /// How many targets are built and tested at once; each build gets an
    /// equal share of the CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Print the farm report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild farm targets`.
#[derive(Debug, clap::Args)]
pub struct TargetsArgs {
    /// The targets file (TOML: `[[target]]` entries with `debian`, `tree`
    /// or `debian-all`).
    #[arg(long)]
    pub targets: PathBuf,
    /// The fix series directory (`NNNN-slug.patch`, `NNNN-slug.d/X.Y.patch`,
    /// `NNNN-slug.check`).
    #[arg(long)]
    pub series: Option<PathBuf>,
    /// Also try each fix's text on each target's source, in order, as a
    /// build would (a Debian target's source is fetched into the kernel
    /// cache when missing): each fix applies, does not apply to this
    /// source, or is refused; a fix that applies to no target is exit 1.
    #[arg(long, requires = "series")]
    pub apply: bool,
    /// Print the matrix as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kpbuild farm …`; returns the exit code.
pub fn run(args: &FarmArgs) -> u8 {
    let a = match &args.command {
        FarmCommand::Targets(a) => a,
        FarmCommand::Run(a) => return run_farm(a),
        FarmCommand::Plan(a) => return plan(a),
        FarmCommand::Publish(a) => return publish(a),
    };
    let mut m = match farm::matrix(&a.targets, a.series.as_deref()) {
        Ok(m) => m,
        Err(e) => return fail(&e, a.json, None),
    };
    if a.apply {
        let progress = |msg: &str| eprintln!("kpbuild farm targets: {msg}");
        if let Err(e) = farm::check_applies(&mut m, &progress) {
            return fail(&e, a.json, Some(&m));
        }
    }
    print(&m, a.json, None);
    exit::SUCCESS
}

/// `kpbuild farm run`.
fn run_farm(a: &RunArgs) -> u8 {
    let req = farm::run::RunRequest {
        targets: a.targets.clone(),
        series: a.series.clone(),
        artifact: a.artifact.clone(),
        only: a.only.clone(),
        name: a.name.clone(),
        progress: crate::build::Progress::Stderr,
        publish: a.repo.as_ref().map(|repo| farm::publish::PublishTo {
            repo: repo.clone(),
            channel: a.channel.clone(),
            key: a.key.clone().expect("clap requires --key with --repo"),
            pubkey: a
                .pubkey
                .clone()
                .expect("clap requires --pubkey with --repo"),
        }),
        jobs: usize::from(a.jobs),
    };
    finish("run", farm::run::run(&req), a.json)
}

/// `kpbuild farm publish`.
fn publish(a: &PublishArgs) -> u8 {
    let req = farm::artifacts::PublishRequest {
        targets: a.targets.clone(),
        series: a.series.clone(),
        artifacts: a.artifacts.clone(),
        to: farm::publish::PublishTo {
            repo: a.repo.clone(),
            channel: a.channel.clone(),
            key: a.key.clone(),
            pubkey: a.pubkey.clone(),
        },
        report: a.report.clone(),
        progress: crate::build::Progress::Stderr,
    };
    finish("publish", farm::artifacts::publish(&req), a.json)
}

/// Prints a farm report (or the error that stopped it); exit 0 only when
/// it passed.
fn finish(command: &str, report: Result<farm::run::FarmReport, FarmError>, json: bool) -> u8 {
    let report = match report {
        Ok(r) => r,
        Err(e) => return fail_in(command, &e, json),
    };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print_run(&report);
    }
    if report.passed {
        exit::SUCCESS
    } else {
        exit::ERROR
    }
}

/// `kpbuild farm plan`.
fn plan(a: &PlanArgs) -> u8 {
    let req = farm::plan::PlanRequest {
        targets: a.targets.clone(),
        series: a.series.clone(),
        ci: a.ci,
        pubkey: a.pubkey.clone(),
        channel: a.channel.clone(),
        name: a.name.clone(),
        setup: a.setup.clone(),
    };
    let plan = match farm::plan::plan(&req) {
        Ok(p) => p,
        Err(e) => return fail_in("plan", &e, a.json),
    };
    if let Some(out) = &a.output {
        if let Err(e) = crate::files::write_atomic(out, plan.text.as_bytes()) {
            return fail_in("plan", &FarmError::File(e), a.json);
        }
        eprintln!(
            "kpbuild farm plan: wrote {} ({} target jobs and the publish job)",
            out.display(),
            plan.targets.len()
        );
    }
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&plan).expect("json"));
    } else if a.output.is_none() {
        crate::outln!("{}", plan.text.trim_end());
    }
    exit::SUCCESS
}

fn fail_in(command: &str, e: &FarmError, json: bool) -> u8 {
    if json {
        let value = serde_json::json!({"outcome": "error", "message": e.to_string()});
        crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
    }
    eprintln!("kpbuild farm {command}: error: {e}");
    exit::ERROR
}

fn print_run(r: &farm::run::FarmReport) {
    let name = |o: farm::run::Outcome| serde_json::to_value(o).expect("json");
    for t in &r.targets {
        let reason = t.reason.as_deref().map(first_line).unwrap_or_default();
        let mut times = Vec::new();
        times.extend(t.build_seconds.map(|s| format!("build {s:.1} s")));
        times.extend(t.vmtest_seconds.map(|s| format!("vmtest {s:.1} s")));
        times.extend(
            t.apply_latency_ms
                .map(|ms| format!("apply latency {ms:.0} ms")),
        );
        times.extend(
            t.bundle
                .as_ref()
                .map(|b| format!("bundle sequence {}", b.sequence)),
        );
        crate::outln!(
            "{}: {}{}{}",
            t.target.name,
            name(t.outcome).as_str().unwrap_or_default(),
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            },
            if times.is_empty() {
                String::new()
            } else {
                format!(" ({})", times.join(", "))
            }
        );
        for f in &t.fixes {
            crate::outln!(
                "  {}  {}",
                f.id,
                name(f.outcome).as_str().unwrap_or_default()
            );
        }
    }
    let passed = if r.passed { "passed" } else { "FAILED" };
    crate::outln!("{} targets: {passed}", r.targets.len());
}

/// The first line of a message (a build error may carry a log).
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// Says what is wrong (after the matrix, when there is one to show).
fn fail(e: &FarmError, json: bool, m: Option<&Matrix>) -> u8 {
    let Some(m) = m else {
        return fail_in("targets", e, json);
    };
    print(m, json, Some(e));
    eprintln!("kpbuild farm targets: error: {e}");
    exit::ERROR
}

/// `path` relative to `dir` when it is inside it.
fn short<'a>(path: &'a Path, dir: Option<&Path>) -> std::path::Display<'a> {
    dir.and_then(|d| path.strip_prefix(d).ok())
        .unwrap_or(path)
        .display()
}

fn print(m: &Matrix, json: bool, error: Option<&FarmError>) {
    if json {
        let mut value = serde_json::to_value(m).expect("json");
        value["outcome"] = "ok".into();
        if let Some(e) = error {
            value["outcome"] = "error".into();
            value["message"] = e.to_string().into();
        }
        crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return;
    }
    let dir = m.series.as_ref().map(|s| s.dir.as_path());
    for t in &m.targets {
        let target = &t.target;
        let kernel = match &target.kernel {
            farm::targets::Kernel::Debian {
                release,
                package_version,
            } => format!("debian {release} ({package_version})"),
            farm::targets::Kernel::Tree { src, build } => {
                format!("tree {} (build {})", src.display(), build.display())
            }
        };
        crate::outln!(
            "{}: {kernel}, kernel {}",
            target.name,
            target.kernel_version
        );
        let Some(series) = &t.series else { continue };
        crate::outln!("  series sha256 {}", series.sha256);
        let width = series.fixes.iter().map(|f| f.id.len()).max().unwrap_or(0);
        for (i, f) in series.fixes.iter().enumerate() {
            let check = f
                .check
                .as_ref()
                .map(|c| format!(", check {}", short(c, dir)))
                .unwrap_or_default();
            let applies = match t.applies.as_ref().map(|a| &a[i].applies) {
                None => String::new(),
                Some(Applies::Applies) => ": applies".into(),
                Some(Applies::DoesNotApply { .. }) => ": does not apply to this source".into(),
                Some(Applies::Refused { why }) => format!(": refused: {why}"),
            };
            crate::outln!(
                "  {:<width$}  {}{check}{applies}",
                f.id,
                short(&f.text, dir)
            );
        }
    }
    let fixes = m
        .series
        .as_ref()
        .map(|s| format!(", {} fixes", s.fixes.len()))
        .unwrap_or_default();
    crate::outln!("{} targets{fixes}", m.targets.len());
}
