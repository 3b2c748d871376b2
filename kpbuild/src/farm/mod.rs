//! The build farm: one fix series built for a matrix of kernels.
//!
//! - [`series`]: a directory of numbered fixes (`NNNN-slug.patch`, with
//!   variants for older sources and check scripts beside them), and the
//!   texts each kernel version gets.
//! - [`targets`]: the kernels of the matrix, read from a TOML file and
//!   expanded (sets of Debian kernels through apt) into concrete targets.
//! - [`matrix`]: both together, what `kpbuild farm targets` shows: every
//!   target with the text of each fix it gets and its series hash.

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
                target,
            })
            .collect(),
        series,
    })
}
