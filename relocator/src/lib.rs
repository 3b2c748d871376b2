//! relocator: livepatch relocations and symbol positions.
//!
//! - [`target`]: the running target's symbols, positions, file groups, exports.
//! - [`resolve`]: every reference of an extracted object → exported or
//!   livepatch symbol; aliases and the function list for the module glue.
//! - [`klp`]: livepatch symbol names and the post-link conversion into
//!   `.klp.rela.*` sections with `SHN_LIVEPATCH` symbols.
//!
//! The crate does no I/O: it takes bytes and returns bytes and data.

pub mod klp;
pub mod resolve;
pub mod target;

/// Everything that can go wrong while resolving symbols against a target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A target ELF image could not be read.
    #[error("{file}: cannot read ELF image: {why}")]
    BadElf {
        /// The object (or file) concerned.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// No kallsyms-visible global or weak symbol of that name.
    #[error("{object}: no global or weak symbol `{name}`{detail}")]
    GlobalNotFound {
        /// The target object ("vmlinux" or a module name).
        object: String,
        /// The symbol looked for.
        name: String,
        /// Extra context (same-named local symbols), possibly empty.
        detail: String,
    },
    /// Several kallsyms-visible global or weak symbols of that name.
    #[error("{object}: several global or weak symbols `{name}`: {candidates}")]
    AmbiguousGlobal {
        /// The target object.
        object: String,
        /// The symbol looked for.
        name: String,
        /// The candidates, with their addresses.
        candidates: String,
    },
    /// No `STT_FILE` group of that name holds all the given locals.
    #[error("{object}: no STT_FILE group `{file}` holds all of the locals {locals:?}: {detail}")]
    FileGroupNotFound {
        /// The target object.
        object: String,
        /// The `STT_FILE` name looked for.
        file: String,
        /// The local symbol names that had to be present.
        locals: Vec<String>,
        /// The groups of that name and what each lacks.
        detail: String,
    },
    /// Several `STT_FILE` groups of that name hold all the given locals.
    #[error(
        "{object}: several STT_FILE groups `{file}` hold all of the locals {locals:?}: {candidates}"
    )]
    AmbiguousFileGroup {
        /// The target object.
        object: String,
        /// The `STT_FILE` name looked for.
        file: String,
        /// The local symbol names that had to be present.
        locals: Vec<String>,
        /// The matching groups, with their first symbols and addresses.
        candidates: String,
    },
    /// The `STT_FILE` group has no kallsyms-visible local of that name.
    #[error("{object}: no local symbol `{name}` in STT_FILE group `{file}` ({group}){detail}")]
    LocalNotFound {
        /// The target object.
        object: String,
        /// The group's `STT_FILE` name.
        file: String,
        /// Which group of that name (symtab index of its `STT_FILE` symbol).
        group: String,
        /// The symbol looked for.
        name: String,
        /// Extra context, possibly empty.
        detail: String,
    },
    /// The `STT_FILE` group has several kallsyms-visible locals of that name.
    #[error(
        "{object}: several local symbols `{name}` in STT_FILE group `{file}` ({group}): {candidates}"
    )]
    DuplicateLocal {
        /// The target object.
        object: String,
        /// The group's `STT_FILE` name.
        file: String,
        /// Which group of that name.
        group: String,
        /// The symbol looked for.
        name: String,
        /// The duplicates, with their addresses.
        candidates: String,
    },
    /// A module symbol whose livepatch position differs between "module loaded
    /// before the patch" and "module loaded after the patch".
    #[error(
        "{object}: the livepatch position of `{name}` depends on load order (position {core} once the module has finished init, {coming} while it is still coming); a same-named init or non-allocated symbol precedes it"
    )]
    LoadOrderDependentPosition {
        /// The target module.
        object: String,
        /// The symbol.
        name: String,
        /// Its position among the module's core (post-init) kallsyms.
        core: u32,
        /// Its position among the module's full symtab (while `MODULE_STATE_COMING`).
        coming: u32,
    },
    /// A malformed `Module.symvers` line.
    #[error("Module.symvers line {line}: {why}: {text:?}")]
    BadSymvers {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
        /// The line itself.
        text: String,
    },
    /// The input is not an ELF64 little-endian x86_64 relocatable object.
    #[error("not an ELF64 little-endian x86_64 relocatable object: {0}")]
    NotX86_64Relocatable(String),
    /// The input's ELF structures are inconsistent or truncated.
    #[error("malformed ELF file: {0}")]
    MalformedElf(String),
    /// A symbol starts with `.klp.sym.` but the kernel would not parse it.
    #[error(
        "malformed livepatch symbol name `{name}`: expected .klp.sym.OBJ.NAME,POS \
         (OBJ 1-55 bytes without '.', NAME 1-511 bytes without ',', POS decimal)"
    )]
    KlpSymbolName {
        /// The symbol name.
        name: String,
    },
    /// A livepatch symbol is defined in the object; it must be undefined.
    #[error("livepatch symbol `{name}` is defined (in {section}); it must be undefined")]
    KlpSymbolDefined {
        /// The symbol name.
        name: String,
        /// The section defining it.
        section: String,
    },
    /// A livepatch symbol is undefined but local; it must be global.
    #[error("livepatch symbol `{name}` is an undefined LOCAL symbol; it must be GLOBAL")]
    KlpSymbolLocal {
        /// The symbol name.
        name: String,
    },
    /// A livepatch symbol is referenced from an `SHT_REL` section.
    #[error(
        "relocation section {section} (SHT_REL) references livepatch symbol `{symbol}`; only SHT_RELA is supported"
    )]
    KlpInRel {
        /// The relocation section.
        section: String,
        /// The symbol.
        symbol: String,
    },
    /// The converted file would need extended section numbering.
    #[error(
        "the converted file would have {0} sections; extended section numbering is not supported"
    )]
    TooManySections(usize),
    /// The extracted object has no `STT_FILE` symbol, so its local symbols
    /// cannot be found in the target.
    #[error(
        "the extracted object names no source file (STT_FILE); its local symbols cannot be located in the target"
    )]
    NoFileSymbol,
    /// A reference the running kernel could not honour: the change cannot
    /// be live patched safely.
    #[error("cannot be live patched: {section} references {symbol}: {why}")]
    Unsupported {
        /// The section holding the reference.
        section: String,
        /// The symbol referenced.
        symbol: String,
        /// Why it cannot work.
        why: String,
    },
}
