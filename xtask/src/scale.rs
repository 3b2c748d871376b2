//! The false-positive check at scale: every C translation unit of the test
//! kernel, compiled twice with its own kbuild command plus per-function
//! sections — once from the cached source tree, once from a hard-linked
//! copy at another path, as `kpbuild build` compiles patched sources —
//! must diff as no change, and every function of the original objects must
//! pre-match the kernel's vmlinux. The compiled pairs are kept for `bench
//! diff` and `bench prematch`.

use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;
use testbed::kernel::KernelBuild;

/// Flags kpbuild adds to every unit it compiles for diffing.
pub const DIFF_FLAGS: &[&str] = &["-ffunction-sections", "-fdata-sections"];

/// A compiled pair.
pub struct Pair {
    /// The object, relative to the build tree.
    pub object: PathBuf,
    /// Original object file.
    pub original: PathBuf,
    /// Object compiled from the copy.
    pub patched: PathBuf,
}

/// The hard-linked copy of the kernel source (made once).
pub fn source_copy(kb: &KernelBuild) -> Result<PathBuf, String> {
    let copy = kb.src.with_file_name("src-copy");
    let stamp = kb.src.with_file_name(".stamp-src-copy");
    if stamp.exists() {
        return Ok(copy);
    }
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    }
    kpbuild::process::run(
        std::process::Command::new("cp")
            .arg("-al")
            .arg(&kb.src)
            .arg(&copy),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(&stamp, b"").map_err(|e| e.to_string())?;
    Ok(copy)
}

/// The units `compile_all` compiles: every C unit of kernel text.
fn kernel_units(kb: &KernelBuild) -> Result<Vec<kpbuild::kbuild::UnitCommand>, String> {
    Ok(kpbuild::kbuild::scan_c_units(&kb.build)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|u| u.command.contains("-mcmodel=kernel"))
        .collect())
}

/// The pairs an earlier `compile_all` left in `out`, if both objects of
/// every unit are there; `None` when any is missing (compile them again).
pub fn compiled_pairs(kb: &KernelBuild, out: &Path) -> Result<Option<Vec<Pair>>, String> {
    let pairs: Vec<Pair> = kernel_units(kb)?
        .into_iter()
        .map(|u| Pair {
            original: out.join("orig").join(&u.object),
            patched: out.join("copy").join(&u.object),
            object: u.object,
        })
        .collect();
    let complete = !pairs.is_empty()
        && pairs
            .iter()
            .all(|p| p.original.is_file() && p.patched.is_file());
    Ok(complete.then_some(pairs))
}

/// Compiles every kernel C unit twice; returns the pairs and the failures.
pub fn compile_all(kb: &KernelBuild, out: &Path) -> Result<(Vec<Pair>, Vec<String>), String> {
    let copy = source_copy(kb)?;
    let units = kernel_units(kb)?;
    let results: Vec<Result<Pair, String>> = units
        .par_iter()
        .map(|u| {
            let original = out.join("orig").join(&u.object);
            let patched = out.join("copy").join(&u.object);
            for (root, dest) in [(&kb.src, &original), (&copy, &patched)] {
                std::fs::create_dir_all(dest.parent().expect("object path has a directory"))
                    .map_err(|e| e.to_string())?;
                let mut cmd = u
                    .replay(&kb.build, &kb.src, root, dest, DIFF_FLAGS)
                    .map_err(|e| e.to_string())?;
                kpbuild::process::run(&mut cmd)
                    .map_err(|e| format!("{}: {e}", u.object.display()))?;
            }
            Ok(Pair {
                object: u.object.clone(),
                original,
                patched,
            })
        })
        .collect();
    let mut pairs = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(p) => pairs.push(p),
            Err(e) => failures.push(e),
        }
    }
    Ok((pairs, failures))
}

/// Diffs every pair; returns one line per pair that is not "no change".
pub fn diff_all(pairs: &[Pair]) -> Vec<String> {
    pairs
        .par_iter()
        .filter_map(|p| {
            let o = std::fs::read(&p.original).ok()?;
            let q = std::fs::read(&p.patched).ok()?;
            match elfdiff::diff("orig", &o, "copy", &q, &elfdiff::Options::default()) {
                Ok(d) if d.outcome == elfdiff::Outcome::NoChange => None,
                Ok(d) => Some(format!(
                    "{}: {:?}: {}",
                    p.object.display(),
                    d.outcome,
                    kpbuild::diff::human(&d).trim_end().replace('\n', "; ")
                )),
                Err(e) => Some(format!("{}: error: {e}", p.object.display())),
            }
        })
        .collect()
}

/// The e2e case: compile everything twice, nothing may differ.
pub fn no_false_positives(kb: &KernelBuild) -> Result<(), String> {
    let out = kb.build.with_file_name("fp-objects");
    // One writer of the shared pair directory at a time (bench diff reads it).
    let lock_path = out.with_extension("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let start = Instant::now();
    let (pairs, failures) = compile_all(kb, &out)?;
    if !failures.is_empty() {
        return Err(format!(
            "{} units failed to compile:\n{}",
            failures.len(),
            failures.join("\n")
        ));
    }
    let compiled = start.elapsed();
    let diffs = diff_all(&pairs);
    eprintln!(
        "  > {} units compiled twice in {:.1} s, diffed in {:.2} s",
        pairs.len(),
        compiled.as_secs_f64(),
        (start.elapsed() - compiled).as_secs_f64()
    );
    if pairs.len() < 100 {
        return Err(format!(
            "only {} kernel C units found in {}",
            pairs.len(),
            kb.build.display()
        ));
    }
    if !diffs.is_empty() {
        return Err(format!(
            "{} of {} identical rebuilds were not diffed as no change:\n{}",
            diffs.len(),
            pairs.len(),
            diffs.join("\n")
        ));
    }
    let survey = prematch_all(&kb.vmlinux(), &pairs)?;
    eprintln!(
        "  > pre-match: {} functions of {} units equal vmlinux's, skipped {:?}",
        survey.equal, survey.units, survey.skipped
    );
    if !survey.mismatches.is_empty() {
        return Err(format!(
            "{} functions of the kernel's own units do not pre-match vmlinux:\n{}",
            survey.mismatches.len(),
            survey.mismatches.join("\n")
        ));
    }
    Ok(())
}

/// Pre-match of every unit's original object against the kernel's vmlinux.
#[derive(Debug, Default)]
pub struct Survey {
    /// Units read.
    pub units: usize,
    /// Functions compared and equal to the target's.
    pub equal: usize,
    /// Functions not compared, by reason.
    pub skipped: std::collections::BTreeMap<String, usize>,
    /// Every function that differs, with where.
    pub mismatches: Vec<String>,
}

/// Pre-matches every function of every pair's original object against
/// `vmlinux`, one function at a time (so one unit's mismatch does not hide
/// the next).
pub fn prematch_all(vmlinux: &Path, pairs: &[Pair]) -> Result<Survey, String> {
    let objects: Vec<(PathBuf, PathBuf)> = pairs
        .iter()
        .map(|p| (p.object.clone(), p.original.clone()))
        .collect();
    prematch_objects(vmlinux, &objects)
}

/// Pre-matches every function of every (object, original file) against
/// `vmlinux`, one function at a time.
pub fn prematch_objects(vmlinux: &Path, objects: &[(PathBuf, PathBuf)]) -> Result<Survey, String> {
    use kpbuild::prematch::{CheckError, TargetCode, check, function_images};
    let data = kpbuild::files::read_elf_without_dwarf(vmlinux).map_err(|e| e.to_string())?;
    let target = TargetCode::new(&data).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    let per_unit: Vec<Result<Survey, String>> = objects
        .par_iter()
        .map(|(object, original)| {
            let label = object.display().to_string();
            let bytes =
                std::fs::read(original).map_err(|e| format!("{}: {e}", original.display()))?;
            let images = function_images(&label, &bytes).map_err(|e| format!("{label}: {e}"))?;
            let mut s = Survey {
                units: 1,
                ..Survey::default()
            };
            for image in &images {
                match check(&target, std::slice::from_ref(image), &[]) {
                    Ok(o) => {
                        s.equal += o.checked;
                        for (_, why) in o.skipped {
                            *s.skipped.entry(why).or_default() += 1;
                        }
                    }
                    Err(CheckError::Mismatch(m)) => s.mismatches.push(format!("{label}: {m}")),
                    Err(e) => return Err(format!("{label}: {e}")),
                }
            }
            Ok(s)
        })
        .collect();
    let mut all = Survey::default();
    for s in per_unit {
        let s = s?;
        all.units += s.units;
        all.equal += s.equal;
        for (why, n) in s.skipped {
            *all.skipped.entry(why).or_default() += n;
        }
        all.mismatches.extend(s.mismatches);
    }
    all.mismatches.sort();
    Ok(all)
}
