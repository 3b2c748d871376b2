//! `kpbuild farm publish --artifacts DIR…`: the outputs of farm runs made
//! elsewhere without the signing key (a CI engine's jobs, each `farm run
//! --only TARGET --artifact DIR`), checked against this checkout's targets
//! file and series, then signed and published like a run with `--repo`.
//!
//! Before anything is signed, every artifact must name a target of the
//! file with the same kernel, made from the series this target gets here
//! (its series hash), and no target may come twice: otherwise nothing is
//! published. Then, per tested target, the bundle is made only when its
//! module and texts are those its build's report records (hashes) and the
//! module is built for the recorded kernel release. A target without an
//! artifact, not tested, or whose bundle cannot be made fails the run; the
//! others are still published. A fix that applies to no target is an error.

use super::publish::{self, Channel, PublishTo, PublishedBundle};
use super::run::{FarmReport, Outcome, TARGET_JSON, TargetReport};
use super::series::Series;
use super::targets::{Target, Targets};
use super::{FarmError, html};
use crate::build::Progress;
use crate::files::PathContext;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `kpbuild farm publish`.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The targets file.
    pub targets: PathBuf,
    /// The fix series.
    pub series: PathBuf,
    /// Farm run outputs (`--artifact` directories), each with one or more
    /// `TARGET/target.json`.
    pub artifacts: Vec<PathBuf>,
    /// The repository, channel and keys.
    pub to: PublishTo,
    /// Where `farm-report.json` and `farm-report.html` go, when anywhere.
    pub report: Option<PathBuf>,
    /// Where progress lines go.
    pub progress: Progress,
}

/// A target's finished output found in an artifact.
struct Found {
    dir: PathBuf,
    report: TargetReport,
}

/// Publishes the tested targets of `req.artifacts`; a target's failure is
/// in the report, only bad input is an error.
pub fn publish(req: &PublishRequest) -> Result<FarmReport, FarmError> {
    let series = Series::read(&req.series)?;
    let targets = Targets::read(&req.targets)?.expand()?;
    let channel = Channel::open(&req.to).map_err(|e| FarmError::Publish(Box::new(e)))?;
    let mut found = read_artifacts(&req.artifacts)?;
    check_found(req, &series, &targets, &found)?;
    let progress = |line: &str| req.progress.line(&format!("farm publish: {line}"));
    let mut reports = Vec::new();
    for t in &targets {
        let report = match found.remove(&t.name) {
            None => missing(t.clone(), &series),
            Some(f) => publish_one(&channel, &series, f, &progress),
        };
        progress(&format!("{}: {}", t.name, report.outcome.name()));
        reports.push(report);
    }
    let report = FarmReport {
        targets_file: req.targets.clone(),
        series: req.series.clone(),
        passed: reports.iter().all(|r| r.outcome.passed()),
        targets: reports,
    };
    if let Some(dir) = &req.report {
        crate::files::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(&report).expect("json");
        crate::files::write_atomic(&dir.join("farm-report.json"), &json)?;
        let page = html::render(&report, &series, dir);
        crate::files::write_atomic(&dir.join("farm-report.html"), page.as_bytes())?;
    }
    Ok(report)
}

/// Every finished target output in `artifacts`, by target name.
fn read_artifacts(artifacts: &[PathBuf]) -> Result<BTreeMap<String, Found>, FarmError> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for artifact in artifacts {
        let mut any = false;
        let mut entries = std::fs::read_dir(artifact)
            .at(artifact)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .at(artifact)?;
        entries.sort();
        for dir in entries {
            let marker = dir.join(TARGET_JSON);
            if !marker.is_file() {
                continue;
            }
            any = true;
            let text = crate::files::read(&marker)?;
            let report: TargetReport =
                serde_json::from_slice(&text).map_err(|e| FarmError::BadArtifact {
                    path: marker.clone(),
                    why: format!("not a farm target's report: {e}"),
                })?;
            let name = report.target.name.clone();
            if let Some(first) = found.get(&name) {
                return Err(FarmError::BadArtifact {
                    path: marker,
                    why: format!(
                        "target {name:?} comes twice (also in {})",
                        first.dir.display()
                    ),
                });
            }
            found.insert(name, Found { dir, report });
        }
        if !any {
            return Err(FarmError::BadArtifact {
                path: artifact.clone(),
                why: "holds no TARGET/target.json: not the output of `kpbuild farm run --artifact`"
                    .into(),
            });
        }
    }
    Ok(found)
}

/// Every artifact is of a target of the file, made from its series; a fix
/// applies somewhere when every target has an artifact.
fn check_found(
    req: &PublishRequest,
    series: &Series,
    targets: &[Target],
    found: &BTreeMap<String, Found>,
) -> Result<(), FarmError> {
    for (name, f) in found {
        let marker = f.dir.join(TARGET_JSON);
        let Some(t) = targets.iter().find(|t| &t.name == name) else {
            return Err(FarmError::BadArtifact {
                path: marker,
                why: format!("target {name:?} is not in {}", req.targets.display()),
            });
        };
        if t != &f.report.target {
            return Err(FarmError::BadArtifact {
                path: marker,
                why: format!(
                    "target {name:?} was built for {}, {} names {}",
                    f.report.target.kernel,
                    req.targets.display(),
                    t.kernel
                ),
            });
        }
        let sha256 = series.select(&t.kernel_version).sha256;
        if f.report.series_sha256 != sha256 {
            return Err(FarmError::BadArtifact {
                path: marker,
                why: format!(
                    "made from another series (sha256 {}; {} gives this target {sha256})",
                    f.report.series_sha256,
                    req.series.display()
                ),
            });
        }
    }
    if found.len() == targets.len() {
        let applied: Vec<Vec<super::apply::FixOnSource>> =
            found.values().map(|f| fixes_on_source(&f.report)).collect();
        let results: Vec<&[super::apply::FixOnSource]> =
            applied.iter().map(Vec::as_slice).collect();
        let nowhere = super::applies_nowhere(series, &results);
        if !nowhere.is_empty() {
            return Err(FarmError::AppliesNowhere { fixes: nowhere });
        }
    }
    Ok(())
}

/// What a target's report says of each fix's text on its source.
fn fixes_on_source(r: &TargetReport) -> Vec<super::apply::FixOnSource> {
    use super::apply::{Applies, FixOnSource};
    r.fixes
        .iter()
        .map(|f| {
            let applied = match f.outcome {
                Outcome::DoesNotApply => false,
                // Refused alone while the target went on: its text was.
                Outcome::Refused => r.outcome == Outcome::Refused,
                _ => true,
            };
            FixOnSource {
                id: f.id.clone(),
                text: f.text.clone(),
                check: None,
                applies: if applied {
                    Applies::Applies
                } else {
                    Applies::DoesNotApply {
                        why: f.reason.clone().unwrap_or_default(),
                    }
                },
            }
        })
        .collect()
}

/// The report of a target no artifact holds.
fn missing(target: Target, series: &Series) -> TargetReport {
    let selection = series.select(&target.kernel_version);
    let reason = "no artifact holds this target (its job did not finish)".to_string();
    let mut report = TargetReport::new(target, &selection.sha256, Outcome::Missing);
    report.reason = Some(reason.clone());
    report.fixes = selection
        .fixes
        .iter()
        .map(|c| super::run::FixReport {
            id: c.fix.id.clone(),
            text: c.text().path.clone(),
            outcome: Outcome::Missing,
            reason: Some(reason.clone()),
        })
        .collect();
    report
}

/// The report's paths moved to where the artifact is here (the job that
/// wrote them ran in another directory).
fn relocate(report: &mut TargetReport, dir: &Path) {
    let file = |p: &Option<PathBuf>, sub: &str| {
        p.as_ref()
            .and_then(|p| p.file_name())
            .map(|name| dir.join(sub).join(name))
    };
    report.module = file(&report.module, "build");
    report.build_report = file(&report.build_report, "build");
    report.serial_log = file(&report.serial_log, "vmtest");
    report.build_log = file(&report.build_log, "");
}

/// A tested target's bundle published, or the target left as it was.
fn publish_one(
    channel: &Channel,
    series: &Series,
    found: Found,
    progress: &dyn Fn(&str),
) -> TargetReport {
    let Found { dir, mut report } = found;
    relocate(&mut report, &dir);
    if report.outcome != Outcome::Tested {
        return report;
    }
    let selection = series.select(&report.target.kernel_version);
    match publish_tested(channel, &dir, &report, &selection) {
        Ok((bundle, unchanged)) => {
            if unchanged {
                report.outcome = Outcome::Unchanged;
                report.reason = Some(format!(
                    "kernel and series equal those of the published sequence {}",
                    bundle.sequence
                ));
            } else {
                progress(&format!(
                    "{}: published sequence {} in {}",
                    report.target.name,
                    bundle.sequence,
                    bundle.path.display()
                ));
            }
            report.bundle = Some(bundle);
        }
        Err(why) => {
            report.outcome = Outcome::PublishError;
            report.reason = Some(why);
        }
    }
    // The fixes the build took share the target's outcome.
    for f in &mut report.fixes {
        if f.outcome == Outcome::Tested {
            f.outcome = report.outcome;
            f.reason.clone_from(&report.reason);
        }
    }
    report
}

/// The bundle of a tested target's artifact: (it, whether it was published
/// already from the same inputs).
fn publish_tested(
    channel: &Channel,
    dir: &Path,
    report: &TargetReport,
    selection: &super::series::Selection<'_>,
) -> Result<(PublishedBundle, bool), String> {
    let kernel = report
        .kernel_build
        .as_ref()
        .ok_or("the artifact records no kernel build (made by an older kpbuild?)")?;
    let inputs = publish::Inputs {
        kernel: kernel.clone(),
        series_sha256: selection.sha256.clone(),
    };
    let latest = channel
        .latest(&kernel.build_id)
        .map_err(|e| e.to_string())?;
    if let Some(l) = latest
        .as_ref()
        .filter(|l| publish::unchanged(Some(l), &inputs))
    {
        return Ok((publish::published_of(channel, l), true));
    }
    let build = dir.join("build");
    let name = &report.target.name;
    let published = publish::publish(channel, &build, kernel, name, selection, latest.as_ref())
        .map_err(|e| e.to_string())?;
    Ok((published, false))
}
