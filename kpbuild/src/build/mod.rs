//! `kpbuild build`: from source patches to a loadable livepatch module.
//!
//! [`build()`] takes a [`BuildRequest`] and returns a [`BuildReport`] or a
//! [`BuildError`]. The stages, each a function with a typed output handed
//! to the next:
//!
//! 1. [`patch::check`](crate::patch::check): the patches, read and checked;
//!    [`resolve`]: the target (built tree, tree-less files or a Debian
//!    release) as the one [`TargetTree`], its compiler checked;
//! 2. [`patch::apply`](crate::patch::apply): the patched source, a private
//!    shadow copy;
//! 3. [`units::affected`]: the affected units;
//! 4. [`units::compile`]: each compiled twice, in parallel;
//! 5. [`diffs::diff`] and [`diffs::verdict`]: unit reports and refusals,
//!    with [`elsewhere::redirect`] for the callers in other units of a
//!    changed global function without an ftrace entry;
//!    [`relocate::prematch`]; [`relocate::relocate`]: the relocated objects
//!    per target object, with their callbacks;
//! 6. [`output::module`], [`output::sign`], [`output::write`].
//!
//! Nothing is written to the output directory unless every stage succeeded.

pub mod diffs;
pub mod elsewhere;
pub mod error;
pub mod output;
pub mod relocate;
pub mod report;
pub mod request;
pub mod resolve;
pub mod shared;
pub mod units;

pub use error::{BuildError, ErrorKind};
pub use report::BuildReport;
pub use request::{BuildRequest, Progress, Signing, TargetSpec};
pub use units::DIFF_FLAGS;

use crate::patch::SourcePatch;
use crate::tree::TargetTree;
use report::{HeaderReport, Inputs, ModuleReport, PatchInput};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Builds a livepatch module in a scratch directory of its own, removed
/// afterwards unless [`BuildRequest::keep_tmp`].
pub fn build(req: &BuildRequest) -> Result<BuildReport, BuildError> {
    // Builds of one process run at once (a farm's targets, often of one
    // module name): each gets its own directory.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work =
        std::env::temp_dir().join(format!("kpbuild-{}-{}-{n}", req.name, std::process::id()));
    let result = run_stages(req, &work);
    if req.keep_tmp {
        eprintln!("kpbuild: scratch directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

/// The stages, one after the other.
fn run_stages(req: &BuildRequest, work: &Path) -> Result<BuildReport, BuildError> {
    let mut clock = Clock::start();
    crate::module::validate_module_name(&req.name)?;
    if req.out.exists() && !req.out.is_dir() {
        return Err(BuildError::OutNotADirectory(req.out.clone()));
    }
    req.progress
        .step(1, "checking the kernel tree and compiler");
    let patches = crate::patch::check(&req.patches)?;
    let target = resolve::resolve(&req.target, &patches, req.max_header_users, &req.progress)?;
    let tree = &target.tree;
    clock.lap("check");

    req.progress
        .step(2, "applying the patches to a private copy of the source");
    crate::files::create_dir_all(work)?;
    let patched_src = work.join("src");
    crate::patch::apply(&tree.src, &patched_src, &patches)?;
    clock.lap("apply");

    req.progress
        .step(3, "finding the affected translation units");
    let units = units::affected(tree, &patches, work)?;
    clock.lap("affected");

    req.progress
        .step(4, &format!("compiling {} unit(s) twice", units.len()));
    let jobs = req
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    let pairs = units::compile(tree, &patched_src, units, work, &pool)?;
    clock.lap("compile");

    req.progress.step(5, "diffing and relocating");
    let sizes = crate::entry_sizes::of_vmlinux(&tree.vmlinux, &kimage::cache_root())?;
    let options = elfdiff::Options {
        max_callers: Some(req.max_callers),
        ..sizes.options()
    };
    let diffs = diffs::diff(&pairs, &options, &Default::default(), &pool)?;
    let cx = elsewhere::Context {
        tree,
        patched_src: &patched_src,
        work,
        options: &options,
        max_callers: req.max_callers,
        pool: &pool,
        progress: &req.progress,
    };
    let (pairs, diffs) = elsewhere::redirect(&cx, pairs, diffs)?;
    let mut report = partial_report(req, tree, &patches, &diffs);
    report.warnings = target.warnings.clone();
    if sizes.source == crate::entry_sizes::SizeSource::Table {
        report.warnings.push(format!(
            "{} has no DWARF: special-section entry sizes are kpbuild's built-in Linux 6.12 table",
            tree.vmlinux.display()
        ));
    }
    report.entry_sizes = Some(sizes);
    let mut report = diffs::verdict(report, &diffs)?;
    report.prematch = Some(relocate::prematch(tree, &pairs, &diffs.per_target)?);
    let relocated = relocate::relocate(tree, &pairs, &diffs.per_target, work)?;
    report.objects = Some(relocated.reports.clone());
    report.shared_symbols = relocated.shared.clone();
    clock.lap("diff");

    req.progress.step(6, "building the livepatch module");
    let (spec, ko) = output::module(req, tree, relocated, work)?;
    clock.lap("module");
    let module = output::sign(req, tree, ko)?;
    if module.signature.is_some() {
        clock.lap("sign");
    }
    report.signature = module.signature.clone();
    report.outcome = elfdiff::Outcome::Patch;
    report.module = Some(ModuleReport {
        file: format!("{}.ko", req.name),
        sha256: sha256_hex(&module.bytes),
    });
    report.timings_s = Some(clock.finish(&target.laps));
    output::write(req, &report, &module)?;
    output::announce(req, &spec, clock.start.elapsed().as_secs_f64());
    Ok(report)
}

/// The report as far as the diffs: inputs, units, refusals.
fn partial_report(
    req: &BuildRequest,
    tree: &TargetTree,
    patches: &[SourcePatch],
    diffs: &diffs::Diffs,
) -> BuildReport {
    let headers = crate::headers::changed_headers(patches);
    BuildReport {
        entry_sizes: None,
        headers: HeaderReport::all(tree, &headers, &diffs.units),
        inputs: Inputs {
            build: tree.build.clone(),
            mode: tree.mode.name(),
            patches: patches
                .iter()
                .map(|p| PatchInput {
                    path: p.path.clone(),
                    sha256: sha256_hex(p.text.as_bytes()),
                })
                .collect(),
            src: tree.src.clone(),
            vmlinux: tree.vmlinux.clone(),
        },
        module: None,
        name: req.name.clone(),
        objects: None,
        outcome: elfdiff::Outcome::Patch,
        prematch: None,
        refusals: diffs.refusals.clone(),
        replace: req.replace,
        shared_symbols: Vec::new(),
        signature: None,
        timings_s: None,
        units: diffs.units.clone(),
        warnings: Vec::new(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    kimage::hex(&Sha256::digest(data))
}

/// Seconds to the millisecond.
fn seconds(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The time of each stage, for the report.
struct Clock {
    start: Instant,
    lap: Instant,
    timings: BTreeMap<String, f64>,
}

impl Clock {
    fn start() -> Self {
        let now = Instant::now();
        Clock {
            start: now,
            lap: now,
            timings: BTreeMap::new(),
        }
    }

    /// Ends the stage `name`.
    fn lap(&mut self, name: &str) {
        self.timings
            .insert(name.to_string(), seconds(self.lap.elapsed().as_secs_f64()));
        self.lap = Instant::now();
    }

    /// The timings with `total`. A fetched release and a first prepare are
    /// steps of their own, not part of `check`.
    fn finish(&mut self, laps: &[(&'static str, f64)]) -> BTreeMap<String, f64> {
        let mut timings = self.timings.clone();
        for (name, secs) in laps {
            timings.insert(name.to_string(), seconds(*secs));
            if let Some(check) = timings.get_mut("check") {
                *check = seconds((*check - secs).max(0.0));
            }
        }
        timings.insert("total".into(), seconds(self.start.elapsed().as_secs_f64()));
        timings
    }
}
