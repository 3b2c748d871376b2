//! The build farm: one fix series built for a matrix of kernels.
//!
//! - [`series`]: a directory of numbered fixes (`NNNN-slug.patch`, with
//!   variants for older sources and check scripts beside them), and the
//!   texts each kernel version gets.
//! - [`targets`]: the kernels of the matrix, read from a TOML file and
//!   expanded (sets of Debian kernels through apt) into concrete targets.
//! - [`matrix`]: both together, what `kpbuild farm targets` shows: every
//!   target with the text of each fix it gets and its series hash;
//!   [`check_applies`] adds whether each text applies to the target's
//!   source ([`apply`]).
//! - [`run`]: each target's cumulative module built from the fixes that
//!   apply and tested in its kernel, every outcome written down;
//!   [`publish`]: its bundle published in a channel, or the target skipped
//!   when its inputs equal its latest bundle's; [`html`]: the report as a
//!   static page.
//! - [`artifacts`]: the outputs of runs made elsewhere without the key (CI
//!   jobs) checked and published by the one job that holds it; [`plan`]:
//!   that pipeline written for GitLab or GitHub.

pub mod apply;
pub mod artifacts;
pub mod html;
pub mod plan;
pub mod publish;
pub mod run;
pub mod series;
pub mod targets;

use serde::Serialize;
use series::{Selection, Series, SeriesError};
use std::path::{Path, PathBuf};
use targets::{Target, Targets, TargetsError};

/// A farm's input that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// The fix series.
    #[error(transparent)]
    Series(#[from] SeriesError),
    /// The targets file or a target.
    #[error(transparent)]
    Targets(#[from] TargetsError),
    /// A target's fixes could not be tried on its source.
    #[error("target {target:?}: {source}")]
    Apply {
        /// The target.
        target: String,
        /// Why.
        source: Box<apply::ApplyError>,
    },
    /// A Debian target's source could not be had.
    #[error("target {target:?}: {source}")]
    Source {
        /// The target.
        target: String,
        /// Why.
        source: Box<crate::debian::DebianError>,
    },
    /// A file or directory of the farm's outputs.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// `--only` names no target.
    #[error(
        "{}: no target named {name:?}; the targets are {}",
        path.display(),
        known.join(", ")
    )]
    NoSuchTarget {
        /// The targets file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The targets' names.
        known: Vec<String>,
    },
    /// Not a module name.
    #[error(transparent)]
    Name(Box<crate::module::ModuleError>),
    /// A target's output directory holds something that is not a farm's.
    #[error(
        "{}: exists and is not a farm target's output (no target.json): not touched",
        dir.display()
    )]
    NotAnArtifact {
        /// The directory.
        dir: PathBuf,
    },
    /// The keys or the repository a run publishes to.
    #[error(transparent)]
    Publish(Box<publish::PublishError>),
    /// A farm run's output that cannot be published.
    #[error("{}: {why}", path.display())]
    BadArtifact {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Fixes that apply to no target's source.
    #[error(
        "{}: applies to no target's source",
        fixes.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    AppliesNowhere {
        /// Their top-level patches.
        fixes: Vec<PathBuf>,
    },
}

/// One fix's text for one target.
#[derive(Debug, Clone, Serialize)]
pub struct ChosenText {
    /// The fix's id.
    pub id: String,
    /// The fix's title.
    pub title: String,
    /// The fix's CVEs.
    pub cves: Vec<String>,
    /// The patch file chosen.
    pub text: PathBuf,
    /// The variant's version (`6.1`), `None` for the top-level patch.
    pub variant: Option<String>,
    /// SHA-256 of the chosen text.
    pub sha256: String,
    /// The fix's check script.
    pub check: Option<PathBuf>,
}

/// What the series gives one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSeries {
    /// The series hash of this target ([`Selection::sha256`]).
    pub sha256: String,
    /// One per fix, in order.
    pub fixes: Vec<ChosenText>,
}

impl From<&Selection<'_>> for TargetSeries {
    fn from(s: &Selection<'_>) -> Self {
        TargetSeries {
            sha256: s.sha256.clone(),
            fixes: s
                .fixes
                .iter()
                .map(|c| ChosenText {
                    id: c.fix.id.clone(),
                    title: c.fix.title.clone(),
                    cves: c.fix.cves.clone(),
                    text: c.text().path.clone(),
                    variant: c.variant.map(|v| v.version.clone()),
                    sha256: c.text().sha256.clone(),
                    check: c.fix.check.as_ref().map(|t| t.path.clone()),
                })
                .collect(),
        }
    }
}

/// One target of the matrix, with what the series gives it.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixTarget {
    /// The target.
    #[serde(flatten)]
    pub target: Target,
    /// Its texts, when a series was given.
    pub series: Option<TargetSeries>,
    /// Whether each text applies to its source, when that was checked.
    pub applies: Option<Vec<apply::FixOnSource>>,
}

/// Every target of a targets file, with what a series gives each.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The targets file.
    pub targets_file: PathBuf,
    /// The series, when one was given.
    pub series: Option<Series>,
    /// The concrete targets, in file order.
    pub targets: Vec<MatrixTarget>,
}

/// Reads a targets file (and a series directory), checks both, and expands
/// the targets through apt: the matrix a farm run would build.
pub fn matrix(targets: &Path, series: Option<&Path>) -> Result<Matrix, FarmError> {
    let series = series.map(Series::read).transpose()?;
    let file = Targets::read(targets)?;
    let expanded = file.expand()?;
    Ok(Matrix {
        targets_file: targets.to_path_buf(),
        targets: expanded
            .into_iter()
            .map(|target| MatrixTarget {
                series: series
                    .as_ref()
                    .map(|s| TargetSeries::from(&s.select(&target.kernel_version))),
                applies: None,
                target,
            })
            .collect(),
        series,
    })
}

/// Tries each target's texts on its source ([`apply::check`]): a tree's
/// source, or a Debian kernel's own (`linux-source` of its version, fetched
/// into the kernel cache when missing and held while in use). Then a fix
/// that applies to no target is [`FarmError::AppliesNowhere`]; the matrix
/// keeps every outcome for the caller to show.
pub fn check_applies(m: &mut Matrix, progress: &dyn Fn(&str)) -> Result<(), FarmError> {
    let Some(series) = &m.series else {
        return Ok(());
    };
    for t in &mut m.targets {
        t.applies = Some(applies_on(&t.target, series, progress)?);
    }
    let results: Vec<&[apply::FixOnSource]> = m
        .targets
        .iter()
        .filter_map(|t| t.applies.as_deref())
        .collect();
    let nowhere = applies_nowhere(series, &results);
    if !nowhere.is_empty() {
        return Err(FarmError::AppliesNowhere { fixes: nowhere });
    }
    Ok(())
}

/// Tries the texts `target` gets on its source ([`apply::check`]).
pub fn applies_on(
    target: &Target,
    series: &Series,
    progress: &dyn Fn(&str),
) -> Result<Vec<apply::FixOnSource>, FarmError> {
    let name = &target.name;
    let (src, _hold) = source_of(target, progress)?;
    progress(&format!("{name}: trying each fix on {}", src.display()));
    let work = std::env::temp_dir().join(format!("kpbuild-farm-{}-{}", std::process::id(), name));
    let selection = series.select(&target.kernel_version);
    apply::check(&src, &selection, &work).map_err(|e| FarmError::Apply {
        target: name.clone(),
        source: Box::new(e),
    })
}

/// The top-level patches of the fixes that apply in none of `results`.
pub fn applies_nowhere(series: &Series, results: &[&[apply::FixOnSource]]) -> Vec<PathBuf> {
    series
        .fixes
        .iter()
        .filter(|f| {
            !results.iter().any(|r| {
                r.iter()
                    .any(|a| a.id == f.id && a.applies == apply::Applies::Applies)
            })
        })
        .map(|f| f.patch.path.clone())
        .collect()
}

/// A target's source tree, and the hold on it when it is in the cache.
fn source_of(
    t: &Target,
    progress: &dyn Fn(&str),
) -> Result<(PathBuf, Option<crate::cache::Hold>), FarmError> {
    use crate::debian::{archive::Apt, release, source};
    match &t.kernel {
        targets::Kernel::Tree { src, .. } => Ok((src.clone(), None)),
        targets::Kernel::Debian {
            release,
            package_version,
        } => {
            let fail = |e| FarmError::Source {
                target: t.name.clone(),
                source: Box::new(e),
            };
            let r = release::parse(release).map_err(fail)?;
            let apt = || Apt::for_suite(r.suite, progress);
            let src = source::ensure(&r, package_version, &apt, progress).map_err(fail)?;
            let hold = source::hold(package_version).map_err(fail)?;
            Ok((src, Some(hold)))
        }
    }
}
