//! Stages 3 and 4: the translation units the patches affect, and each of
//! them compiled twice (pristine and patched source), in parallel.

use super::error::{BuildError, Side};
use crate::files::PathContext;
use crate::kbuild::UnitCommand;
use crate::patch::{PatchError, SourcePatch};
use crate::tree::TargetTree;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Flags added to each unit's own command for diffing.
pub const DIFF_FLAGS: &[&str] = &["-ffunction-sections", "-fdata-sections"];

/// One affected unit and where its two objects go.
#[derive(Debug)]
pub struct Unit<'t> {
    /// Its kbuild record: the tree's, or one compiled later in a prepared
    /// directory (the callers' units of a carried global).
    pub cmd: std::borrow::Cow<'t, UnitCommand>,
    /// `vmlinux` or the module it is linked into.
    pub target: String,
    /// The object compiled from the pristine source.
    pub original: PathBuf,
    /// The object compiled from the patched copy.
    pub patched: PathBuf,
}

/// The affected units, each compiled on both sides.
#[derive(Debug)]
pub struct CompiledPairs<'t> {
    /// The units, in the tree's order.
    pub units: Vec<Unit<'t>>,
}

/// The units that compile a changed `.c` file or include a changed header.
pub fn affected<'t>(
    tree: &'t TargetTree,
    patches: &[SourcePatch],
    work: &Path,
) -> Result<Vec<Unit<'t>>, BuildError> {
    let mut changed = Vec::new();
    for p in patches {
        for t in &p.touched {
            if t.path.extension().is_some_and(|e| e == "c" || e == "h") {
                if t.created && t.path.extension().is_some_and(|e| e == "c") {
                    return Err(PatchError::NewSource {
                        patch: p.path.clone(),
                        file: t.path.clone(),
                    }
                    .into());
                }
                changed.push(t.path.clone());
            }
        }
    }
    let units = affected_units(tree, &changed)?;
    if units.is_empty() {
        return Err(BuildError::NoAffectedUnit);
    }
    Ok(units
        .into_iter()
        .map(|cmd| Unit {
            cmd: std::borrow::Cow::Borrowed(cmd),
            target: tree.target_of(&cmd.object),
            original: work.join("orig").join(&cmd.object),
            patched: work.join("patched").join(&cmd.object),
        })
        .collect())
}

/// Units whose source is a changed `.c` file or that depend on a changed header.
fn affected_units<'a>(
    tree: &'a TargetTree,
    changed: &[PathBuf],
) -> Result<Vec<&'a UnitCommand>, BuildError> {
    let mut out = Vec::new();
    for u in &tree.units {
        let names = |p: &Path| -> bool {
            changed.iter().any(|c| {
                p == tree.src.join(c)
                    || p == c.as_path()
                    || (tree.build == tree.src && p == tree.src.join(c))
            })
        };
        if names(&u.source) || u.deps.iter().any(|d| names(d)) {
            if u.object.to_string_lossy().ends_with(".mod.o") {
                continue; // module metadata, regenerated for the livepatch module
            }
            if !u.command.contains("-mcmodel=kernel") {
                return Err(BuildError::NotKernelText(u.object.clone()));
            }
            out.push(u);
        }
    }
    Ok(out)
}

/// The flags added to each unit's own command for diffing: [`DIFF_FLAGS`]
/// and the patch-author headers (kpbuild-macros.h, kpatch-macros.h,
/// kpatch-syscall.h), written into `work/kpbuild-include`, on the include
/// path (on both sides: an include directory changes no code).
pub fn diff_flags(work: &Path) -> Result<Vec<String>, crate::files::FileError> {
    let include = work.join("kpbuild-include");
    crate::files::create_dir_all(&include)?;
    for (name, text) in [
        ("kpbuild-macros.h", crate::module::MACROS_HEADER),
        ("kpatch-macros.h", crate::module::KPATCH_MACROS_HEADER),
        ("kpatch-syscall.h", crate::module::KPATCH_SYSCALL_HEADER),
    ] {
        std::fs::write(include.join(name), text).at(&include)?;
    }
    Ok(DIFF_FLAGS
        .iter()
        .map(|f| f.to_string())
        .chain([format!("-I{}", include.display())])
        .collect())
}

/// Compiles every unit from the pristine source and from the patched copy
/// at `patched_src`, with [`DIFF_FLAGS`] and the patch-author headers
/// (kpbuild-macros.h, kpatch-macros.h, kpatch-syscall.h) on the
/// include path. Under `make -jN`, each compile holds one of make's slots.
pub fn compile<'t>(
    tree: &TargetTree,
    patched_src: &Path,
    units: Vec<Unit<'t>>,
    work: &Path,
    pool: &rayon::ThreadPool,
) -> Result<CompiledPairs<'t>, BuildError> {
    let flags = diff_flags(work)?;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let slots = crate::jobs::Slots::from_env();
    pool.install(|| {
        units
            .par_iter()
            .flat_map(|u| [(u, Side::Original), (u, Side::Patched)])
            .try_for_each(|(u, side)| {
                let (root, out) = match side {
                    Side::Original => (tree.src.as_path(), &u.original),
                    Side::Patched => (patched_src, &u.patched),
                };
                crate::files::create_dir_all(out.parent().expect("object has a directory"))?;
                let _slot = slots.take().map_err(BuildError::Jobserver)?;
                let mut cmd = u.cmd.replay(&tree.build, &tree.src, root, out, &flags)?;
                tree.toolchain
                    .run(&mut cmd, &[work])
                    .map(|_| ())
                    .map_err(|source| BuildError::Compile {
                        object: u.cmd.object.clone(),
                        side,
                        source: Box::new(source),
                    })
            })
    })?;
    Ok(CompiledPairs { units })
}
