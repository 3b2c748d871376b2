//! [`BuildReport`]: what a build did, written as report.json and printed by
//! `--json`. Fields are declared in alphabetical order: report.json has
//! always listed its keys sorted, and serde writes a struct's fields in
//! declaration order.

use crate::prematch::PrematchReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The report of a build. A refused or unchanged build has a partial one
/// (no module, objects, pre-match, signature or timings).
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// The special-section entry sizes the diffs used: from the target's
    /// DWARF, or the built-in table (`source`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_sizes: Option<crate::entry_sizes::EntrySizes>,
    /// Each header the patches change: the units that include it, and
    /// which of them changed (empty when no header changed).
    pub headers: Vec<HeaderReport>,
    /// What the build was given.
    pub inputs: Inputs,
    /// The module written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleReport>,
    /// The module name.
    pub name: String,
    /// Each patched object (vmlinux or a module).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<ObjectReport>>,
    /// `patch`, `refused` or `no-change`.
    pub outcome: elfdiff::Outcome,
    /// What the pre-match compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prematch: Option<PrematchReport>,
    /// Why the change cannot be live patched, per unit.
    pub refusals: Vec<RefusalReport>,
    /// Whether the patch replaces earlier livepatches.
    pub replace: bool,
    /// Each new global one unit of the patch defines and others use: it
    /// resolves inside the module (empty when none).
    pub shared_symbols: Vec<SharedSymbolReport>,
    /// How the module was signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureReport>,
    /// Seconds per step, and `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings_s: Option<BTreeMap<String, f64>>,
    /// Each affected unit.
    pub units: Vec<UnitReport>,
    /// What the build went on despite (a compiler package revision other
    /// than the kernel's); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A changed header and its users.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderReport {
    /// The users whose code changed, with their changed functions.
    pub changed: Vec<HeaderUserReport>,
    /// The header, relative to the source tree.
    pub header: PathBuf,
    /// Every unit that includes it (its object), as kbuild recorded.
    pub users: Vec<PathBuf>,
}

/// A header's user whose code changed.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderUserReport {
    /// Its changed functions.
    pub functions: Vec<String>,
    /// The unit's object.
    pub object: PathBuf,
}

impl HeaderReport {
    /// The report of each changed header: its users are the units whose
    /// kbuild dependencies name it (in every mode: a built tree's records,
    /// or the prepared directory's for the units compiled there).
    pub fn all(
        tree: &crate::tree::TargetTree,
        headers: &[PathBuf],
        units: &[UnitReport],
    ) -> Vec<HeaderReport> {
        headers
            .iter()
            .map(|header| {
                let users: Vec<PathBuf> = tree
                    .units
                    .iter()
                    .filter(|u| !u.object.to_string_lossy().ends_with(".mod.o"))
                    .filter(|u| crate::headers::depends_on(u, &tree.src, header))
                    .map(|u| u.object.clone())
                    .collect();
                let changed = units
                    .iter()
                    .filter(|u| users.contains(&u.object) && !u.changed.is_empty())
                    .map(|u| HeaderUserReport {
                        functions: u.changed.clone(),
                        object: u.object.clone(),
                    })
                    .collect();
                HeaderReport {
                    changed,
                    header: header.clone(),
                    users,
                }
            })
            .collect()
    }
}

/// What a build was given.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    /// The build tree (or the prepared directory).
    pub build: PathBuf,
    /// `tree` or `tree-less`.
    pub mode: &'static str,
    /// The patches, in order.
    pub patches: Vec<PatchInput>,
    /// The source tree.
    pub src: PathBuf,
    /// The target's vmlinux.
    pub vmlinux: PathBuf,
}

/// One patch.
#[derive(Debug, Clone, Serialize)]
pub struct PatchInput {
    /// Its absolute path.
    pub path: PathBuf,
    /// SHA-256 of its text, hex.
    pub sha256: String,
}

/// One affected unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitReport {
    /// Changed functions.
    pub changed: Vec<String>,
    /// New functions.
    pub new: Vec<String>,
    /// Changed functions without an ftrace entry, carried by the callers
    /// named with each (redirected in their place).
    pub carried: Vec<elfdiff::CarriedFunction>,
    /// Global functions without an ftrace entry that other units carry,
    /// with their callers here (redirected in their place).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried_elsewhere: Vec<elfdiff::CarriedFunction>,
    /// The unit's object, relative to the build tree.
    pub object: PathBuf,
    /// The diff's verdict.
    pub outcome: elfdiff::Outcome,
    /// `vmlinux` or the module it is linked into.
    pub target: String,
    /// Functions and variables judged unchanged although a source line
    /// number written in them moved (`__LINE__` arguments, `__bug_table`
    /// and dynamic-debug line fields, `file.c:LINE` strings).
    pub line_only: Vec<elfdiff::LineOnly>,
    /// What kpatch's macros marked in the unit: `ignored_functions`,
    /// `ignored_sections` and `forced_functions` (`KPATCH_FORCE_UNSAFE`,
    /// reported only), as fields of the unit.
    #[serde(flatten)]
    pub marks: elfdiff::kpatch::Marks,
}

/// One reason a change cannot be live patched.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalReport {
    /// The unit's object.
    pub object: PathBuf,
    /// Why.
    pub reason: String,
    /// The section concerned.
    pub section: String,
    /// The symbol concerned, empty when none.
    pub symbol: String,
}

/// A new global of the patch that other units use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedSymbolReport {
    /// The unit defining it (its object).
    pub defined_in: PathBuf,
    /// Its name.
    pub name: String,
    /// The other units referencing it, in the tree's order.
    pub used_by: Vec<PathBuf>,
}

/// One patched object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    /// Its livepatch callbacks.
    pub callbacks: Vec<CallbackReport>,
    /// The functions replaced in it.
    pub functions: Vec<FunctionReport>,
    /// `vmlinux` or the module name.
    pub name: String,
}

/// A replaced function.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionReport {
    /// Its name in the target.
    pub name: String,
    /// The replacement's symbol in the module.
    pub new_symbol: String,
    /// The object it lives in.
    pub object: String,
    /// Its size in the target.
    pub old_size: u64,
    /// Its livepatch position (0: unique).
    pub position: u32,
}

/// A livepatch callback.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackReport {
    /// The patch's function.
    pub function: String,
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: String,
    /// The unit it comes from.
    pub object: PathBuf,
    /// Its global symbol in the module.
    pub symbol: String,
}

/// The module written.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleReport {
    /// Its file name in the output directory.
    pub file: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// How the module was signed.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    /// The certificate, as given.
    pub certificate: PathBuf,
    /// The digest algorithm.
    pub hash: &'static str,
}

impl BuildReport {
    /// The refusal lines of a refused build: `OBJECT: SECTION SYMBOL: REASON`.
    pub fn refusal_lines(&self) -> Vec<String> {
        self.refusals
            .iter()
            .map(|r| {
                format!(
                    "{}: {} {}: {}",
                    r.object.display(),
                    r.section,
                    r.symbol,
                    r.reason
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_report_carries_kpatch_marks_as_fields() {
        let unit = UnitReport {
            changed: vec!["__x64_sys_newuname".into()],
            new: vec![],
            carried: vec![],
            carried_elsewhere: vec![],
            object: "kernel/sys.o".into(),
            outcome: elfdiff::Outcome::Patch,
            target: "vmlinux".into(),
            line_only: vec![],
            marks: elfdiff::kpatch::Marks {
                ignored_functions: vec![],
                ignored_sections: vec![],
                forced_functions: vec!["__x64_sys_newuname".into()],
            },
        };
        let v = serde_json::to_value(&unit).expect("json");
        assert_eq!(
            v["forced_functions"],
            serde_json::json!(["__x64_sys_newuname"])
        );
        assert_eq!(v["ignored_functions"], serde_json::json!([]));
        assert_eq!(v["ignored_sections"], serde_json::json!([]));
        assert_eq!(v["changed"], serde_json::json!(["__x64_sys_newuname"]));
    }
}
