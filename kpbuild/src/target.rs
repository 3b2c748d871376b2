//! The running target as kpbuild sees it: the symbol table of the object
//! being patched, vmlinux's when that object is a module, and vmlinux's
//! exports. Loaded once and shared by every unit of a build.

use crate::files::FileError;
use relocator::resolve::{
    FunctionRef, How, PatchInput, PatchedFunction, Relocated, Resolution, SymbolRef, Target,
};
use relocator::target::{Exports, TargetKind, TargetSymbols};
use std::path::{Path, PathBuf};

/// A target whose files cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// A symbol table or export list the relocator cannot read.
    #[error("{}: {source}", path.display())]
    Relocator {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<relocator::Error>,
    },
    /// An object standing for the target is not an ELF file.
    #[error("{}: {source}", path.display())]
    Object {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: object::Error,
    },
}

fn relocator_error(path: &Path) -> impl FnOnce(relocator::Error) -> LoadError + '_ {
    move |source| LoadError::Relocator {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// The loaded target.
pub struct TargetFiles {
    /// Symbols of the object being patched.
    pub symbols: TargetSymbols,
    /// vmlinux's symbols when the object being patched is a module.
    pub vmlinux: Option<TargetSymbols>,
    /// vmlinux's exports.
    pub exports: Exports,
}

/// A linked kernel (`ET_EXEC`) or, for anything else, a module; an
/// unreadable header is left for `from_elf` to report.
fn kind_of(data: &[u8]) -> TargetKind {
    use object::read::elf::FileHeader as _;
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(data);
    match header {
        Ok(h) if h.e_type(object::LittleEndian) == object::elf::ET_EXEC => TargetKind::Vmlinux,
        _ => TargetKind::Module,
    }
}

impl TargetFiles {
    /// Loads the target: `name` is `vmlinux` or a module name.
    pub fn load(
        name: &str,
        symbols: &Path,
        vmlinux: Option<&Path>,
        symvers: Option<&Path>,
    ) -> Result<Self, LoadError> {
        let read = |p: &Path| crate::files::read_elf_without_dwarf(p);
        let data = read(symbols)?;
        let objname = name.replace('-', "_");
        let target = TargetSymbols::from_elf(&objname, kind_of(&data), &data)
            .map_err(relocator_error(symbols))?;
        let vmlinux_symbols = match vmlinux {
            Some(p) => {
                let d = read(p)?;
                Some(
                    TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, &d)
                        .map_err(relocator_error(p))?,
                )
            }
            None => None,
        };
        let exports = match symvers {
            Some(p) => {
                let text = crate::files::read_to_string(p)?;
                Exports::from_module_symvers(&text).map_err(relocator_error(p))?
            }
            None => {
                let source = vmlinux.unwrap_or(symbols);
                let d = read(source)?;
                match Exports::from_ksymtab(&d) {
                    Ok(exports) => exports,
                    // An object standing for the target (the original object
                    // itself, say) has no export table: the names it leaves
                    // undefined are the ones the module loader resolves.
                    Err(_) if kind_of(&d) == TargetKind::Module => {
                        undefined_as_exports(source, &d)?
                    }
                    Err(e) => return Err(relocator_error(source)(e)),
                }
            }
        };
        Ok(TargetFiles {
            symbols: target,
            vmlinux: vmlinux_symbols,
            exports,
        })
    }

    /// Runs the relocator on one diffed unit.
    pub fn relocate(
        &self,
        diff: &elfdiff::Diff,
        object: &[u8],
        alias_prefix: &str,
        internal: &std::collections::BTreeSet<String>,
    ) -> Result<Relocated, Box<relocator::Error>> {
        let input = PatchInput {
            object,
            file_name: diff.file_name.as_deref(),
            references: diff
                .references
                .iter()
                .map(|r| SymbolRef {
                    name: r.name.clone(),
                    local: r.local,
                })
                .collect(),
            functions: diff
                .changed
                .iter()
                .map(|c| FunctionRef {
                    name: c.name.clone(),
                    original_name: c.original_name.clone(),
                    local: c.local,
                })
                .collect(),
            original_locals: diff.original_locals.clone(),
            alias_prefix,
            callbacks: diff
                .callbacks
                .iter()
                .map(|c| (c.kind.clone(), c.function.clone()))
                .collect(),
            internal,
        };
        let target = Target {
            symbols: &self.symbols,
            exports: &self.exports,
            vmlinux: self.vmlinux.as_ref(),
        };
        relocator::resolve::relocate(&input, target).map_err(Box::new)
    }
}

/// The undefined symbols of a relocatable file, as exports of vmlinux.
fn undefined_as_exports(path: &Path, data: &[u8]) -> Result<Exports, LoadError> {
    use object::{Object, ObjectSymbol};
    let file =
        object::read::elf::ElfFile64::<object::Endianness>::parse(data).map_err(|source| {
            LoadError::Object {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let mut symvers = String::new();
    for s in file.symbols().filter(|s| s.is_undefined()) {
        if let Ok(name) = s.name()
            && !name.is_empty()
        {
            symvers.push_str(&format!("0x00000000\t{name}\tvmlinux\tEXPORT_SYMBOL\t\n"));
        }
    }
    Exports::from_module_symvers(&symvers).map_err(relocator_error(path))
}

/// Human lines for the relocator's results.
pub fn human(r: &Relocated) -> String {
    let mut out = String::new();
    for f in &r.functions {
        out.push_str(&format!(
            "patched function: {} in {} (position {}, old size {})\n",
            f.old_name, f.objname, f.sympos, f.old_size
        ));
    }
    for res in &r.resolutions {
        match &res.how {
            How::Exported => out.push_str(&format!("exported symbol: {}\n", res.name)),
            How::Livepatch(s) => out.push_str(&format!("livepatch symbol: {} → {s}\n", res.name)),
            How::Internal => out.push_str(&format!(
                "symbol of the patch: {} (defined by another unit)\n",
                res.name
            )),
        }
    }
    out
}

/// JSON for the function list.
pub fn functions_json(functions: &[PatchedFunction]) -> serde_json::Value {
    functions
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.old_name, "object": f.objname, "position": f.sympos,
                "old_size": f.old_size, "new_symbol": f.new_symbol,
            })
        })
        .collect()
}

/// JSON for the resolutions.
pub fn resolutions_json(resolutions: &[Resolution]) -> serde_json::Value {
    resolutions
        .iter()
        .map(|r| match &r.how {
            How::Exported => serde_json::json!({"name": r.name, "kind": "exported"}),
            How::Livepatch(s) => {
                serde_json::json!({"name": r.name, "kind": "livepatch", "symbol": s})
            }
            How::Internal => serde_json::json!({"name": r.name, "kind": "internal"}),
        })
        .collect()
}
