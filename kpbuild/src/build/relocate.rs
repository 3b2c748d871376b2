//! Stage 5b: the pre-match (the original code compiled here must be the
//! code the target runs), then the relocator on every changed unit, per
//! target object, with the livepatch callbacks the units declare.

use super::diffs::PerTarget;
use super::error::BuildError;
use super::report::{CallbackReport, FunctionReport, ObjectReport, SharedSymbolReport};
use super::units::CompiledPairs;
use crate::files::PathContext;
use crate::module::{PatchedFunc, PatchedObject};
use crate::prematch::{PrematchReport, UnitToCheck};
use crate::target::TargetFiles;
use crate::tree::TargetTree;
use relocator::target::Exports;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Pre-matches every changed unit against its target object.
pub fn prematch(
    tree: &TargetTree,
    pairs: &CompiledPairs<'_>,
    per_target: &PerTarget,
) -> Result<PrematchReport, BuildError> {
    let units = &pairs.units;
    let to_check: Vec<UnitToCheck> = per_target
        .iter()
        .flat_map(|(t, list)| list.iter().map(move |(i, d)| (t, i, d)))
        .map(|(t, i, d)| UnitToCheck {
            target: t.clone(),
            label: units[*i].cmd.object.display().to_string(),
            original: units[*i].original.clone(),
            replaced: d.changed.iter().map(|c| c.original_name.clone()).collect(),
        })
        .collect();
    Ok(crate::prematch::verify_units(&to_check, tree)?)
}

/// The relocated patch objects and what the module registers.
pub struct Relocated {
    /// What each target object gets replaced, for the glue.
    pub objects: Vec<PatchedObject>,
    /// The relocated objects, in `work/patch`.
    pub patch_objects: Vec<PathBuf>,
    /// What each target object gets replaced, for the report.
    pub reports: Vec<ObjectReport>,
    /// vmlinux's exports: the module may use only these by name.
    pub exports: Exports,
    /// The new globals units share, for the report.
    pub shared: Vec<SharedSymbolReport>,
}

/// Relocates every changed unit against its target object.
pub fn relocate(
    tree: &TargetTree,
    pairs: &CompiledPairs<'_>,
    per_target: &PerTarget,
    work: &Path,
) -> Result<Relocated, BuildError> {
    let mut units: Vec<(usize, &str, &elfdiff::Diff)> = per_target
        .iter()
        .flat_map(|(target, list)| list.iter().map(move |(i, d)| (*i, target.as_str(), d)))
        .collect();
    units.sort_by_key(|(i, _, _)| *i);
    let units: Vec<(&Path, &str, &elfdiff::Diff)> = units
        .into_iter()
        .map(|(i, t, d)| (pairs.units[i].cmd.object.as_path(), t, d))
        .collect();
    let shared = super::shared::SharedSymbols::of(&units)?;
    let vmlinux = TargetFiles::load("vmlinux", &tree.vmlinux, None, Some(&tree.symvers))?;
    let mut out = Relocated {
        objects: Vec::new(),
        patch_objects: Vec::new(),
        reports: Vec::new(),
        exports: Exports::default(),
        shared: shared.reports.clone(),
    };
    for (target, list) in per_target {
        let module_files;
        let files = if target == "vmlinux" {
            &vmlinux
        } else {
            let ko = tree.target_file(target)?;
            module_files = TargetFiles::load(target, ko, Some(&tree.vmlinux), Some(&tree.symvers))?;
            &module_files
        };
        relocate_target(files, target, list, pairs, work, &shared.names, &mut out)?;
    }
    out.exports = vmlinux.exports;
    Ok(out)
}

/// Relocates the units of one target object into `out`.
fn relocate_target(
    files: &TargetFiles,
    target: &str,
    list: &[(usize, elfdiff::Diff)],
    pairs: &CompiledPairs<'_>,
    work: &Path,
    internal: &BTreeSet<String>,
    out: &mut Relocated,
) -> Result<(), BuildError> {
    let units = &pairs.units;
    let mut funcs = Vec::new();
    let mut functions = Vec::new();
    // (kind, alias, unit) of every callback of this target object.
    let mut callbacks: Vec<(String, String, usize)> = Vec::new();
    for (i, d) in list {
        let object = d.object.as_deref().expect("patch outcome has an object");
        let r = files
            .relocate(d, object, &format!("kpb_u{i}_"), internal)
            .map_err(|source| BuildError::Relocate {
                object: units[*i].cmd.object.clone(),
                source,
            })?;
        let path = work.join("patch").join(format!("u{i}.o"));
        crate::files::create_dir_all(path.parent().expect("dir"))?;
        std::fs::write(&path, &r.object).at(&path)?;
        out.patch_objects.push(path);
        for f in &r.functions {
            funcs.push(PatchedFunc {
                old_name: f.old_name.clone(),
                new_symbol: f.new_symbol.clone(),
                sympos: f.sympos,
            });
            functions.push(FunctionReport {
                name: f.old_name.clone(),
                new_symbol: f.new_symbol.clone(),
                object: f.objname.clone(),
                old_size: f.old_size,
                position: f.sympos,
            });
        }
        for (kind, alias) in r.callbacks {
            if let Some((_, _, first)) = callbacks.iter().find(|(k, _, _)| *k == kind) {
                return Err(BuildError::DuplicateCallback {
                    kind,
                    target: target.to_string(),
                    first: units[*first].cmd.object.clone(),
                    second: units[*i].cmd.object.clone(),
                });
            }
            callbacks.push((kind, alias, *i));
        }
    }
    let callback_reports = callbacks
        .iter()
        .map(|(kind, alias, i)| CallbackReport {
            function: list
                .iter()
                .find(|(j, _)| j == i)
                .and_then(|(_, d)| d.callbacks.iter().find(|c| &c.kind == kind))
                .map(|c| c.function.clone())
                .unwrap_or_default(),
            kind: kind.clone(),
            object: units[*i].cmd.object.clone(),
            symbol: alias.clone(),
        })
        .collect();
    out.reports.push(ObjectReport {
        callbacks: callback_reports,
        functions,
        name: target.to_string(),
    });
    out.objects.push(PatchedObject {
        name: (target != "vmlinux").then(|| target.to_string()),
        funcs,
        callbacks: callbacks.into_iter().map(|(k, a, _)| (k, a)).collect(),
    });
    Ok(())
}
