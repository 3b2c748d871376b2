//! Stage 5a: each unit's object pair through elfdiff, and the verdict: a
//! refusal anywhere refuses the build, no changed function anywhere is no
//! change; both carry the report so far.

use super::error::BuildError;
use super::report::{BuildReport, RefusalReport, UnitReport};
use super::units::CompiledPairs;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// The diffs of the units that patch something, by target object: (unit
/// index, diff).
pub type PerTarget = BTreeMap<String, Vec<(usize, elfdiff::Diff)>>;

/// What the diffs found.
#[derive(Debug)]
pub struct Diffs {
    /// One entry per unit.
    pub units: Vec<UnitReport>,
    /// Every refusal of every unit.
    pub refusals: Vec<RefusalReport>,
    /// The units with changed functions.
    pub per_target: PerTarget,
}

/// Diffs every unit's original and patched object, with the target's
/// special-section entry sizes in `options`, and for a unit in
/// `elsewhere` the carried globals of other units it calls.
pub fn diff(
    pairs: &CompiledPairs<'_>,
    options: &elfdiff::Options,
    elsewhere: &super::elsewhere::Elsewhere,
    pool: &rayon::ThreadPool,
) -> Result<Diffs, BuildError> {
    let diffs: Vec<Result<elfdiff::Diff, BuildError>> = pool.install(|| {
        pairs
            .units
            .par_iter()
            .map(|u| {
                let o = crate::files::read(&u.original)?;
                let p = crate::files::read(&u.patched)?;
                let label = u.cmd.object.display().to_string();
                let mut options = options.clone();
                if let Some(names) = elsewhere.get(&u.cmd.object) {
                    options.carried_elsewhere = names.iter().cloned().collect();
                }
                Ok(elfdiff::diff(
                    &format!("{label} (original)"),
                    &o,
                    &format!("{label} (patched)"),
                    &p,
                    &options,
                )?)
            })
            .collect()
    });
    let mut out = Diffs {
        units: Vec::new(),
        refusals: Vec::new(),
        per_target: BTreeMap::new(),
    };
    for (i, (u, d)) in pairs.units.iter().zip(diffs).enumerate() {
        let d = d?;
        out.units.push(UnitReport {
            changed: d.changed.iter().map(|c| c.name.clone()).collect(),
            new: d.new.clone(),
            object: u.cmd.object.clone(),
            outcome: d.outcome,
            target: u.target.clone(),
            line_only: d.line_only.clone(),
            carried: d.carried.clone(),
            carried_elsewhere: d.carried_elsewhere.clone(),
            marks: d.marks.clone(),
        });
        out.refusals
            .extend(d.refusals.iter().map(|r| RefusalReport {
                object: u.cmd.object.clone(),
                reason: r.reason.clone(),
                section: r.section.clone(),
                symbol: r.symbol.clone(),
            }));
        if d.outcome == elfdiff::Outcome::Patch {
            out.per_target
                .entry(u.target.clone())
                .or_default()
                .push((i, d));
        }
    }
    Ok(out)
}

/// The build goes on only when nothing was refused and something changed;
/// otherwise the report so far goes with the error.
pub fn verdict(mut report: BuildReport, diffs: &Diffs) -> Result<BuildReport, BuildError> {
    if !report.refusals.is_empty() {
        report.outcome = elfdiff::Outcome::Refused;
        return Err(BuildError::Refused {
            report: Box::new(report),
        });
    }
    if diffs.per_target.is_empty() {
        report.outcome = elfdiff::Outcome::NoChange;
        return Err(BuildError::NoChange {
            report: Box::new(report),
        });
    }
    Ok(report)
}
