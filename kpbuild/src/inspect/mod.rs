//! `kpbuild inspect`: what a livepatch object (`kpbuild diff -o`) or a
//! livepatch module (`.ko`) contains, and whether the kernel would accept it.
//!
//! The report lists the patched functions (`.kpbuild.functions`), every
//! livepatch relocation (`.klp.rela.OBJ.SEC` entries against
//! `.klp.sym.OBJ.NAME,POS` symbols), the symbols the module loader resolves,
//! and for a module its `.modinfo` and appended signature. Each check that
//! fails becomes a *problem*: something the 6.12 module loader or livepatch
//! core (`kernel/module/main.c`, `kernel/livepatch/core.c`,
//! `arch/x86/kernel/module.c`) would reject or get wrong.
//!
//! [`inspect`] does no I/O; [`run`] reads the file and prints. The work is
//! split by job: `read` turns the bytes into plain values (ELF through
//! `object`'s typed readers, the signature through `modsign`), `checks`
//! turns them into problems, `disasm` decodes the replacement functions and
//! `render` prints the [`Report`].

use crate::exit;
use crate::files::FileError;
use std::path::PathBuf;

mod checks;
mod disasm;
mod read;
mod render;
mod report;

pub use read::relocation_type_name;
pub use render::{human, json};
pub use report::{
    Callback, Disassembly, Function, GlobalFunction, Instruction, Kind, KlpRelocation,
    LoaderSymbol, Modinfo, ModinfoField, Report, Signature,
};

/// Arguments of `kpbuild inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The livepatch object (`kpbuild diff -o`) or livepatch module (`.ko`).
    pub file: PathBuf,
    /// Print one JSON object instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
    /// Disassemble each replacement function (Intel syntax), with the
    /// relocations at their offsets.
    #[arg(long)]
    pub disasm: bool,
}

/// Why a file cannot be inspected at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not an ELF file.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF file, but not an x86_64 relocatable object or module.
    #[error("not an x86_64 relocatable object or kernel module: {0}")]
    Unsupported(Unsupported),
    /// Truncated or malformed ELF.
    #[error("truncated or malformed ELF: {0}")]
    Malformed(String),
}

/// What kind of ELF file it is instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// ELF32.
    #[error("not ELF64")]
    Class,
    /// Big-endian (or an unknown encoding).
    #[error("not little-endian")]
    Endian,
    /// Not `ET_REL`: the `e_type`.
    #[error("{}, not a relocatable file", file_type(*.0))]
    Type(u16),
    /// Not `EM_X86_64`: the `e_machine`.
    #[error("e_machine is {0}, not EM_X86_64 (62)")]
    Machine(u16),
}

fn file_type(e_type: u16) -> &'static str {
    match e_type {
        2 => "an executable (ET_EXEC)",
        3 => "a shared object or PIE (ET_DYN)",
        4 => "a core file (ET_CORE)",
        _ => "not ET_REL",
    }
}

/// Why `kpbuild inspect` stopped without a report.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file is not one that can be inspected.
    #[error("{file}: {source}")]
    Inspect {
        /// The file as named on the command line.
        file: String,
        /// Why.
        source: Error,
    },
}

/// Inspects the bytes of `file` (its name is only used in the report).
pub fn inspect(file: &str, data: &[u8], disasm: bool) -> Result<Report, Error> {
    let appended = read::appended_signature(data);
    let elf = read::Elf::read(&data[..appended.elf_len])?;
    let kind = elf.kind();
    let list = read::functions(&elf);
    let callbacks = read::callbacks(&elf);
    let livepatch_relocations = read::livepatch_relocations(&elf);

    let mut problems = Vec::new();
    checks::signature(&appended, &mut problems);
    if let Some(list) = &list {
        checks::functions(&elf, list, &mut problems);
    }
    checks::callbacks(&elf, &callbacks, &mut problems);
    checks::relocation_sections(&elf, &mut problems);
    checks::relocation_entries(&elf, &mut problems);
    let functions = list.map(|l| l.functions);
    if let Some(functions) = &functions {
        checks::klp_objects(functions, &livepatch_relocations, &mut problems);
    }
    checks::symbols(&elf, &mut problems);
    let modinfo = (kind == Kind::Module).then(|| {
        let (info, present) = read::modinfo(&elf);
        let has_klp = !livepatch_relocations.is_empty();
        checks::modinfo(&info, present, has_klp, &mut problems);
        info
    });
    let signature = match kind {
        Kind::Module => Some(appended.signature),
        Kind::Object if appended.signature.appended => {
            problems
                .push("a module signature is appended to an object that is not a module".into());
            Some(appended.signature)
        }
        Kind::Object => None,
    };
    let functions_section = functions.is_some();
    let functions = functions.unwrap_or_default();
    let disassembly = disasm.then(|| disasm::disassemble(&elf, &functions));
    Ok(Report {
        file: file.to_string(),
        kind,
        global_functions: if functions_section {
            Vec::new()
        } else {
            read::global_functions(&elf)
        },
        functions_section,
        functions,
        callbacks: callbacks.into_iter().flatten().collect(),
        livepatch_relocations,
        loader_symbols: read::loader_symbols(&elf),
        problems,
        modinfo,
        signature,
        disassembly,
    })
}

/// Reads and inspects the file named on the command line.
fn read_and_inspect(args: &InspectArgs) -> Result<Report, InspectError> {
    let data = crate::files::read(&args.file)?;
    let file = args.file.display().to_string();
    inspect(&file, &data, args.disasm).map_err(|source| InspectError::Inspect { file, source })
}

/// Runs `kpbuild inspect`; returns the exit code.
pub fn run(args: &InspectArgs) -> u8 {
    let report = match read_and_inspect(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kpbuild inspect: error: {e}");
            return exit::ERROR;
        }
    };
    if args.json {
        crate::outln!("{}", json(&report));
    } else {
        print!("{}", human(&report));
    }
    if report.problems.is_empty() {
        exit::SUCCESS
    } else {
        eprintln!(
            "kpbuild inspect: {}: {} problem(s) found",
            report.file,
            report.problems.len()
        );
        exit::ERROR
    }
}
