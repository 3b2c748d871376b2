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
//! [`inspect`] does no I/O; [`run`] reads the file and prints.

use crate::exit;
use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, Rel as _, Rela as _, SectionHeader, Sym as _};
use relocator::klp::{
    KLP_RELA_PREFIX, KLP_SYM_PREFIX, MAX_OBJ_NAME, SHF_RELA_LIVEPATCH, SHN_LIVEPATCH,
    parse_klp_symbol_name,
};
use relocator::resolve::{CALLBACKS_SECTION, FUNCTIONS_SECTION, parse_callbacks, parse_functions};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

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
    Unsupported(String),
    /// Truncated or malformed ELF.
    #[error("truncated or malformed ELF: {0}")]
    Malformed(String),
}

/// What kind of file was inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A relocatable object (`kpbuild diff -o`).
    Object,
    /// A kernel module: has `.modinfo` or `.gnu.linkonce.this_module`.
    Module,
}

/// One line of `.kpbuild.functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    /// The object the function lives in (`vmlinux` or a module name).
    pub object: String,
    /// The function being replaced.
    pub name: String,
    /// Its livepatch position (0: unique).
    pub position: u32,
    /// Its size in the target.
    pub old_size: u64,
    /// The global symbol of the replacement in this file.
    pub new_symbol: String,
}

/// One livepatch callback (`.kpbuild.callback_list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Callback {
    /// The object it is registered on (`vmlinux` or a module name).
    pub object: String,
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: String,
    /// The function the patch declared.
    pub function: String,
    /// Its global alias in this file, which the glue registers.
    pub symbol: String,
}

/// A defined global function (the fallback list without `.kpbuild.functions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalFunction {
    /// Symbol name.
    pub name: String,
    /// Section it is defined in.
    pub section: String,
    /// Symbol size.
    pub size: u64,
}

/// One entry of a livepatch relocation section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KlpRelocation {
    /// The relocation section (`.klp.rela.OBJ.SEC`).
    pub section: String,
    /// The section it applies to (`sh_info`).
    pub applies_to: String,
    /// Offset in `applies_to`.
    pub offset: u64,
    /// Relocation type, e.g. `R_X86_64_PC32`.
    #[serde(rename = "type")]
    pub r_type: String,
    /// The symbol's full name.
    pub symbol: String,
    /// Object part of a `.klp.sym.OBJ.NAME,POS` name.
    pub object: Option<String>,
    /// Name part.
    pub name: Option<String>,
    /// Position part.
    pub position: Option<u32>,
    /// Addend.
    pub addend: i64,
}

/// An undefined symbol the module loader resolves from the kernel's exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoaderSymbol {
    /// Symbol name.
    pub name: String,
    /// Weak: the loader accepts it unresolved (value 0).
    pub weak: bool,
}

/// One `key=value` of `.modinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModinfoField {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// The `.modinfo` of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Modinfo {
    /// `name=`.
    pub name: Option<String>,
    /// `vermagic=`.
    pub vermagic: Option<String>,
    /// `livepatch=` (`Y` for a livepatch module).
    pub livepatch: Option<String>,
    /// `license=`.
    pub license: Option<String>,
    /// Every field in file order.
    pub fields: Vec<ModinfoField>,
}

/// The appended module signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// Whether the file ends with `~Module signature appended~\n`.
    pub appended: bool,
    /// `sig_len` of `struct module_signature` (big-endian in the file).
    pub length: Option<u32>,
    /// `id_type`: `PKCS#7` (2) is the only kind the kernel accepts.
    pub id_type: Option<String>,
    /// Who signed it (`ISSUER, serial HEX`), when the CMS message names the
    /// certificate by issuer and serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The digest algorithm (`sha256`, `sha512`), when the CMS message is readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// One disassembled instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// Offset in the section.
    pub offset: u64,
    /// The instruction bytes in hex.
    pub bytes: String,
    /// Intel syntax.
    pub text: String,
    /// Relocations inside the instruction, one line each.
    pub relocations: Vec<String>,
}

/// The disassembly of one replacement function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disassembly {
    /// The replacement symbol (`NEW_SYMBOL`).
    pub symbol: String,
    /// The function it replaces, as `OBJ NAME,POS`.
    pub replaces: String,
    /// Its section.
    pub section: String,
    /// Start offset in the section.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Always `intel`.
    pub syntax: &'static str,
    /// The instructions.
    pub instructions: Vec<Instruction>,
}

/// Everything `kpbuild inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file as named on the command line.
    pub file: String,
    /// Object or module.
    pub kind: Kind,
    /// Whether `.kpbuild.functions` is present.
    pub functions_section: bool,
    /// The patched functions from `.kpbuild.functions`.
    pub functions: Vec<Function>,
    /// Without `.kpbuild.functions`: the defined global functions.
    pub global_functions: Vec<GlobalFunction>,
    /// Livepatch callbacks from `.kpbuild.callback_list`.
    pub callbacks: Vec<Callback>,
    /// Every entry of every livepatch relocation section.
    pub livepatch_relocations: Vec<KlpRelocation>,
    /// Undefined ordinary symbols: resolved by the module loader.
    pub loader_symbols: Vec<LoaderSymbol>,
    /// What the kernel would reject or get wrong.
    pub problems: Vec<String>,
    /// A module's `.modinfo`.
    pub modinfo: Option<Modinfo>,
    /// A module's appended signature.
    pub signature: Option<Signature>,
    /// With `--disasm`: the replacement functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disassembly: Option<Vec<Disassembly>>,
}

const SIG_MAGIC: &[u8] = b"~Module signature appended~\n";
/// `sizeof(struct module_signature)`.
const SIG_INFO_LEN: usize = 12;
const PKEY_ID_PKCS7: u8 = 2;
const EHDR_SIZE: usize = 64;

// x86_64 relocation types the module loader applies
// (arch/x86/kernel/module.c __write_relocate_add).
const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32: u32 = 10;
const R_X86_64_32S: u32 = 11;
const R_X86_64_PC64: u32 = 24;

/// Name of an x86_64 relocation type (`R_X86_64_<n>` when unknown).
pub fn relocation_type_name(r_type: u32) -> String {
    const NAMES: [&str; 43] = [
        "NONE",
        "64",
        "PC32",
        "GOT32",
        "PLT32",
        "COPY",
        "GLOB_DAT",
        "JUMP_SLOT",
        "RELATIVE",
        "GOTPCREL",
        "32",
        "32S",
        "16",
        "PC16",
        "8",
        "PC8",
        "DTPMOD64",
        "DTPOFF64",
        "TPOFF64",
        "TLSGD",
        "TLSLD",
        "DTPOFF32",
        "GOTTPOFF",
        "TPOFF32",
        "PC64",
        "GOTOFF64",
        "GOTPC32",
        "GOT64",
        "GOTPCREL64",
        "GOTPC64",
        "GOTPLT64",
        "PLTOFF64",
        "SIZE32",
        "SIZE64",
        "GOTPC32_TLSDESC",
        "TLSDESC_CALL",
        "TLSDESC",
        "IRELATIVE",
        "RELATIVE64",
        "PC32_BND",
        "PLT32_BND",
        "GOTPCRELX",
        "REX_GOTPCRELX",
    ];
    match NAMES.get(r_type as usize) {
        Some(n) => format!("R_X86_64_{n}"),
        None => format!("R_X86_64_<{r_type}>"),
    }
}

/// Bytes the module loader writes for a relocation type; `None` when it
/// refuses the type ("Unknown rela relocation", -ENOEXEC).
fn loader_write_size(r_type: u32) -> Option<usize> {
    match r_type {
        R_X86_64_NONE => Some(0),
        R_X86_64_64 | R_X86_64_PC64 => Some(8),
        R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32 | R_X86_64_32S => Some(4),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The ELF file, read once into plain values.

struct Section<'d> {
    name: String,
    sh_type: u32,
    flags: u64,
    link: u32,
    info: u32,
    /// File bytes (empty for `SHT_NOBITS`).
    data: &'d [u8],
}

impl Section<'_> {
    fn alloc(&self) -> bool {
        self.flags & elf::SHF_ALLOC.0 != 0
    }
}

struct Symbol {
    name: String,
    bind: u8,
    st_type: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

/// One relocation entry (REL or RELA).
struct Reloc {
    /// Index of the relocation section.
    rel_section: usize,
    /// Index of the section it applies to.
    target: usize,
    offset: u64,
    sym: usize,
    r_type: u32,
    addend: i64,
}

struct Elf<'d> {
    sections: Vec<Section<'d>>,
    symtab: Option<usize>,
    symbols: Vec<Symbol>,
    relocs: Vec<Reloc>,
}

fn malformed(why: impl Into<String>) -> Error {
    Error::Malformed(why.into())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks the ELF header and reads sections, symbols and relocations.
/// `data` must be 8-byte aligned (see [`inspect`]).
fn read_elf(data: &[u8]) -> Result<Elf<'_>, Error> {
    if data.len() < 4 || &data[..4] != b"\x7fELF" {
        return Err(Error::NotElf);
    }
    if data.len() < EHDR_SIZE {
        return Err(malformed(format!(
            "{} bytes, shorter than an ELF64 header",
            data.len()
        )));
    }
    if data[4] != elf::ELFCLASS64.0 {
        return Err(Error::Unsupported("not ELF64".into()));
    }
    if data[5] != elf::ELFDATA2LSB.0 {
        return Err(Error::Unsupported("not little-endian".into()));
    }
    let e_type = u16::from_le_bytes([data[16], data[17]]);
    if e_type != elf::ET_REL.0 {
        let what = match e_type {
            2 => "an executable (ET_EXEC)",
            3 => "a shared object or PIE (ET_DYN)",
            4 => "a core file (ET_CORE)",
            _ => "not ET_REL",
        };
        return Err(Error::Unsupported(format!(
            "{what}, not a relocatable file"
        )));
    }
    let e_machine = u16::from_le_bytes([data[18], data[19]]);
    if e_machine != elf::EM_X86_64.0 {
        return Err(Error::Unsupported(format!(
            "e_machine is {e_machine}, not EM_X86_64 (62)"
        )));
    }
    let header = elf::FileHeader64::<LE>::parse(data).map_err(|e| malformed(e.to_string()))?;
    let table = header
        .sections(LE, data)
        .map_err(|e| malformed(format!("section headers: {e}")))?;
    if table.is_empty() {
        return Err(malformed("no section headers"));
    }
    let mut sections = Vec::with_capacity(table.len());
    for (index, h) in table.enumerate() {
        let name = table
            .section_name(LE, h)
            .map(lossy)
            .map_err(|e| malformed(format!("section [{}]: name: {e}", index.0)))?;
        let sh_type = h.sh_type(LE).0;
        let bytes = if sh_type == elf::SHT_NOBITS.0 || index.0 == 0 {
            &[][..]
        } else {
            h.data(LE, data).map_err(|_| {
                malformed(format!(
                    "section [{}] {name} (offset {:#x}, size {:#x}) extends past the end of the \
                     file ({:#x} bytes)",
                    index.0,
                    h.sh_offset(LE),
                    h.sh_size(LE),
                    data.len()
                ))
            })?
        };
        sections.push(Section {
            name,
            sh_type,
            flags: h.sh_flags(LE).0,
            link: h.sh_link(LE),
            info: h.sh_info(LE),
            data: bytes,
        });
    }

    let symtab_indices: Vec<usize> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sh_type == elf::SHT_SYMTAB.0)
        .map(|(i, _)| i)
        .collect();
    if symtab_indices.len() > 1 {
        return Err(malformed("more than one symbol table"));
    }
    let symtab = symtab_indices.first().copied();
    let mut symbols = Vec::new();
    if symtab.is_some() {
        let table = table
            .symbols(LE, data, elf::SHT_SYMTAB)
            .map_err(|e| malformed(format!("symbol table: {e}")))?;
        for (index, sym) in table.enumerate() {
            let name = table
                .symbol_name(LE, sym)
                .map(lossy)
                .map_err(|e| malformed(format!("symbol {}: name: {e}", index.0)))?;
            symbols.push(Symbol {
                name,
                bind: sym.st_bind().0,
                st_type: sym.st_type().0,
                shndx: sym.st_shndx(LE).0,
                value: sym.st_value(LE),
                size: sym.st_size(LE),
            });
        }
    }

    // Every relocation section on its own, by index: a `.klp.rela` section
    // is listed separately from the `.rela` section of the same target.
    let mut relocs = Vec::new();
    for (index, h) in table.enumerate() {
        let sh_type = h.sh_type(LE);
        let target = h.sh_info(LE) as usize;
        let bad = |e: object::read::Error| {
            malformed(format!(
                "relocation section [{}] {}: {e}",
                index.0, sections[index.0].name
            ))
        };
        if sh_type == elf::SHT_RELA {
            for r in h
                .data_as_array::<elf::Rela64<LE>, _>(LE, data)
                .map_err(bad)?
            {
                relocs.push(Reloc {
                    rel_section: index.0,
                    target,
                    offset: r.r_offset(LE),
                    sym: r.r_sym(LE, false) as usize,
                    r_type: r.r_type(LE, false).0,
                    addend: r.r_addend(LE),
                });
            }
        } else if sh_type == elf::SHT_REL {
            for r in h
                .data_as_array::<elf::Rel64<LE>, _>(LE, data)
                .map_err(bad)?
            {
                relocs.push(Reloc {
                    rel_section: index.0,
                    target,
                    offset: r.r_offset(LE),
                    sym: r.r_sym(LE) as usize,
                    r_type: r.r_type(LE).0,
                    addend: 0,
                });
            }
        }
    }
    Ok(Elf {
        sections,
        symtab,
        symbols,
        relocs,
    })
}

impl Elf<'_> {
    fn section_name(&self, index: usize) -> String {
        match self.sections.get(index) {
            Some(s) => s.name.clone(),
            None => format!("<section {index}>"),
        }
    }

    fn section_by_name(&self, name: &str) -> Option<&Section<'_>> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A symbol for people: section symbols by their section's name.
    fn symbol_label(&self, index: usize) -> String {
        match self.symbols.get(index) {
            None => format!("<symbol {index}>"),
            Some(s) if s.name.is_empty() && s.st_type == elf::STT_SECTION.0 => {
                self.section_name(usize::from(s.shndx))
            }
            Some(s) => s.name.clone(),
        }
    }
}

fn shndx_label(shndx: u16) -> String {
    match shndx {
        0 => "SHN_UNDEF".into(),
        0xfff1 => "SHN_ABS".into(),
        0xfff2 => "SHN_COMMON".into(),
        n => format!("{n:#x}"),
    }
}

fn is_klp_symbol(s: &Symbol) -> bool {
    s.name.starts_with(KLP_SYM_PREFIX) || s.shndx == SHN_LIVEPATCH
}

// ---------------------------------------------------------------------------
// The checks.

/// Inspects the bytes of `file` (its name is only used in the report).
pub fn inspect(file: &str, data: &[u8], disasm: bool) -> Result<Report, Error> {
    let mut problems = Vec::new();
    let (elf_len, signature) = read_signature(data, &mut problems);
    // An 8-byte aligned copy: the ELF structures are read in place.
    let mut words = vec![0u64; elf_len.div_ceil(8)];
    object::pod::bytes_of_slice_mut(&mut words)[..elf_len].copy_from_slice(&data[..elf_len]);
    let bytes = &object::pod::bytes_of_slice(&words)[..elf_len];
    let elf = read_elf(bytes)?;

    let kind = if elf.section_by_name(".modinfo").is_some()
        || elf.section_by_name(".gnu.linkonce.this_module").is_some()
    {
        Kind::Module
    } else {
        Kind::Object
    };

    let (functions_section, functions) = read_functions(&elf, &mut problems);
    let global_functions = if functions_section {
        Vec::new()
    } else {
        global_functions(&elf)
    };
    let callbacks = read_callbacks(&elf, &mut problems);
    let livepatch_relocations = check_relocations(&elf, &mut problems);
    if functions_section {
        check_klp_objects(&functions, &livepatch_relocations, &mut problems);
    }
    let loader_symbols = check_symbols(&elf, &mut problems);
    let modinfo = match kind {
        Kind::Module => Some(check_module(
            &elf,
            !livepatch_relocations.is_empty(),
            &mut problems,
        )),
        Kind::Object => None,
    };
    let signature = match kind {
        Kind::Module => Some(signature),
        Kind::Object => {
            if signature.appended {
                problems.push(
                    "a module signature is appended to an object that is not a module".into(),
                );
                Some(signature)
            } else {
                None
            }
        }
    };
    let disassembly = disasm.then(|| disassemble(&elf, &functions));
    Ok(Report {
        file: file.to_string(),
        kind,
        functions_section,
        functions,
        global_functions,
        callbacks,
        livepatch_relocations,
        loader_symbols,
        problems,
        modinfo,
        signature,
        disassembly,
    })
}

/// Finds an appended signature; returns the length of the ELF part.
fn read_signature(data: &[u8], problems: &mut Vec<String>) -> (usize, Signature) {
    let absent = Signature {
        appended: false,
        length: None,
        id_type: None,
        signer: None,
        hash: None,
    };
    let Some(rest) = data.strip_suffix(SIG_MAGIC) else {
        return (data.len(), absent);
    };
    if rest.len() < SIG_INFO_LEN {
        problems.push(
            "the file ends with the signature marker but has no room for struct \
             module_signature before it"
                .into(),
        );
        return (data.len(), absent);
    }
    let info = &rest[rest.len() - SIG_INFO_LEN..];
    let sig_len = u32::from_be_bytes(info[8..12].try_into().expect("4 bytes"));
    let id_type = match info[2] {
        0 => "PGP".to_string(),
        1 => "X.509".to_string(),
        PKEY_ID_PKCS7 => "PKCS#7".to_string(),
        n => format!("unknown ({n})"),
    };
    let parsed = modsign::parse_signature(data);
    let signature = Signature {
        appended: true,
        length: Some(sig_len),
        id_type: Some(id_type.clone()),
        signer: parsed
            .as_ref()
            .and_then(|p| p.signer.as_ref())
            .map(|s| format!("{}, serial {}", s.issuer, s.serial)),
        hash: parsed.and_then(|p| p.hash).map(|h| h.name().to_string()),
    };
    let before = rest.len() - SIG_INFO_LEN;
    // kernel/module_signature.c mod_check_sig.
    if sig_len as usize >= before {
        problems.push(format!(
            "the signature claims {sig_len} bytes but only {before} precede its header: the \
             kernel rejects the module (-EBADMSG)"
        ));
        return (before, signature);
    }
    if info[2] != PKEY_ID_PKCS7 {
        problems.push(format!(
            "the signature is {id_type}, not PKCS#7: the kernel cannot verify it (-ENOPKG)"
        ));
    } else if info[..8].iter().enumerate().any(|(i, &b)| i != 2 && b != 0) {
        problems.push(
            "struct module_signature has non-zero algo/hash/signer_len/key_id_len/pad: the \
             kernel rejects the module (-EBADMSG)"
                .into(),
        );
    }
    (before - sig_len as usize, signature)
}

fn read_functions(elf: &Elf, problems: &mut Vec<String>) -> (bool, Vec<Function>) {
    let Some(section) = elf.section_by_name(FUNCTIONS_SECTION) else {
        return (false, Vec::new());
    };
    let parsed = parse_functions(section.data);
    let lines = String::from_utf8_lossy(section.data)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    if parsed.len() != lines {
        problems.push(format!(
            "{FUNCTIONS_SECTION}: {} of {lines} lines are not `OBJ OLD_NAME POS OLD_SIZE \
             NEW_SYMBOL`",
            lines - parsed.len()
        ));
    }
    let functions: Vec<Function> = parsed
        .into_iter()
        .map(|f| Function {
            object: f.objname,
            name: f.old_name,
            position: f.sympos,
            old_size: f.old_size,
            new_symbol: f.new_symbol,
        })
        .collect();
    let mut seen = BTreeSet::new();
    for f in &functions {
        if !seen.insert((&f.object, &f.name, f.position)) {
            problems.push(format!(
                "{} {},{} is replaced twice: livepatch cannot register both (its sysfs entry \
                 `{},{}` exists, -EEXIST)",
                f.object, f.name, f.position, f.name, f.position
            ));
        }
        match find_defined_function(elf, &f.new_symbol).len() {
            1 => {}
            0 => problems.push(format!(
                "replacement {} of {} {},{} is not a function defined in this file",
                f.new_symbol, f.object, f.name, f.position
            )),
            n => problems.push(format!(
                "replacement {} of {} {},{} is defined {n} times",
                f.new_symbol, f.object, f.name, f.position
            )),
        }
    }
    (true, functions)
}

fn find_defined_function<'e>(elf: &'e Elf, name: &str) -> Vec<&'e Symbol> {
    elf.symbols
        .iter()
        .filter(|s| {
            s.name == name
                && s.st_type == elf::STT_FUNC.0
                && s.shndx != 0
                && usize::from(s.shndx) < elf.sections.len()
        })
        .collect()
}

/// The callback list; each alias must be a defined global function here.
fn read_callbacks(elf: &Elf, problems: &mut Vec<String>) -> Vec<Callback> {
    let Some(section) = elf.section_by_name(CALLBACKS_SECTION) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in parse_callbacks(section.data) {
        let Some(e) = entry else {
            problems.push(format!(
                "{CALLBACKS_SECTION}: a line is not `OBJ KIND FUNCTION SYMBOL`"
            ));
            continue;
        };
        let defined = elf.symbols.iter().any(|s| {
            s.name == e.symbol
                && s.st_type == elf::STT_FUNC.0
                && s.bind == elf::STB_GLOBAL.0
                && s.shndx != 0
        });
        if !defined {
            problems.push(format!(
                "callback {} ({} of {}): its symbol {} is not a defined global function",
                e.function, e.kind, e.objname, e.symbol
            ));
        }
        out.push(Callback {
            object: e.objname,
            kind: e.kind,
            function: e.function,
            symbol: e.symbol,
        });
    }
    out
}

fn global_functions(elf: &Elf) -> Vec<GlobalFunction> {
    elf.symbols
        .iter()
        .filter(|s| {
            s.st_type == elf::STT_FUNC.0
                && (s.bind == elf::STB_GLOBAL.0 || s.bind == elf::STB_WEAK.0)
                && s.shndx != 0
                && usize::from(s.shndx) < elf.sections.len()
        })
        .map(|s| GlobalFunction {
            name: s.name.clone(),
            section: elf.section_name(usize::from(s.shndx)),
            size: s.size,
        })
        .collect()
}

/// Where a relocation lands and what the module loader finds there.
fn check_site(elf: &Elf, r: &Reloc, what: &str, problems: &mut Vec<String>) {
    let Some(target) = elf.sections.get(r.target) else {
        return;
    };
    let Some(size) = loader_write_size(r.r_type) else {
        problems.push(format!(
            "{what}: type {} is not one the x86_64 module loader applies (\"Unknown rela \
             relocation\", -ENOEXEC)",
            relocation_type_name(r.r_type)
        ));
        return;
    };
    if target.sh_type == elf::SHT_NOBITS.0 || size == 0 {
        return;
    }
    let site = usize::try_from(r.offset)
        .ok()
        .and_then(|o| target.data.get(o..o.checked_add(size)?));
    match site {
        None => problems.push(format!(
            "{what}: offset {:#x} + {size} bytes lies outside {} ({:#x} bytes)",
            r.offset,
            target.name,
            target.data.len()
        )),
        Some(bytes) if bytes.iter().any(|&b| b != 0) => problems.push(format!(
            "{what}: the {size} bytes at the site are not zero: the module loader refuses to \
             overwrite them (\"Invalid relocation target, existing value is nonzero\", -ENOEXEC)"
        )),
        Some(_) => {}
    }
}

fn check_relocations(elf: &Elf, problems: &mut Vec<String>) -> Vec<KlpRelocation> {
    // Section-level checks of livepatch relocation sections.
    let mut klp_sections: BTreeMap<usize, Option<String>> = BTreeMap::new();
    for (index, s) in elf.sections.iter().enumerate() {
        let named = s.name.starts_with(KLP_RELA_PREFIX);
        let flagged = s.flags & SHF_RELA_LIVEPATCH != 0;
        if !named && !flagged {
            continue;
        }
        let is_rel = s.sh_type == elf::SHT_REL.0 || s.sh_type == elf::SHT_RELA.0;
        if !is_rel {
            problems.push(format!(
                "{} is not a relocation section (sh_type {}) but is {}",
                s.name,
                s.sh_type,
                if flagged {
                    "flagged SHF_RELA_LIVEPATCH"
                } else {
                    "named like one"
                }
            ));
            continue;
        }
        let target = s.info as usize;
        let target_name = elf.section_name(target);
        if named && !flagged {
            problems.push(format!(
                "{} lacks SHF_RELA_LIVEPATCH (0x100000): the module loader applies it as an \
                 ordinary relocation section at load time, taking the unresolved livepatch \
                 symbols as 0, so the patched code points at wrong addresses",
                s.name
            ));
        }
        if s.sh_type == elf::SHT_REL.0 {
            problems.push(format!(
                "{} is SHT_REL: livepatch reads every livepatch relocation section as Elf64_Rela",
                s.name
            ));
        }
        // klp_write_section_relocs: sscanf(name, ".klp.rela.%55[^.]").
        let sec_obj = s
            .name
            .strip_prefix(KLP_RELA_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .filter(|(obj, _)| !obj.is_empty());
        match sec_obj {
            None => {
                problems.push(format!(
                    "{} is not named .klp.rela.OBJ.SECTION: livepatch rejects it (\"incorrectly \
                     formatted name\", -EINVAL)",
                    s.name
                ));
                klp_sections.insert(index, None);
            }
            Some((obj, sec)) => {
                if obj.len() > MAX_OBJ_NAME {
                    problems.push(format!(
                        "{}: object name longer than {MAX_OBJ_NAME} bytes; livepatch truncates it \
                         and never applies these relocations",
                        s.name
                    ));
                }
                if sec != target_name {
                    problems.push(format!(
                        "{} applies to {target_name} (sh_info {target}), not to the {sec} its \
                         name says",
                        s.name
                    ));
                }
                klp_sections.insert(index, Some(obj.to_string()));
            }
        }
        if flagged && s.flags & elf::SHF_ALLOC.0 == 0 {
            problems.push(format!(
                "{} is not SHF_ALLOC: module-format.rst requires it, livepatch reads it after \
                 the module's load image is freed",
                s.name
            ));
        }
        match elf.sections.get(target) {
            None => problems.push(format!(
                "{} applies to section {target}, which does not exist",
                s.name
            )),
            Some(t) if !t.alloc() => problems.push(format!(
                "{} applies to {}, which is not loaded (not SHF_ALLOC)",
                s.name, t.name
            )),
            Some(_) => {}
        }
        if elf.symtab.is_none_or(|symtab| s.link as usize != symtab) {
            problems.push(format!(
                "{} is not linked to the symbol table (sh_link {})",
                s.name, s.link
            ));
        }
    }

    let mut out = Vec::new();
    for r in &elf.relocs {
        let rel_section = &elf.sections[r.rel_section];
        let applies_to = elf.section_name(r.target);
        let sym_label = elf.symbol_label(r.sym);
        let place = format!(
            "{} entry at {applies_to}+{:#x} ({})",
            rel_section.name, r.offset, sym_label
        );
        let Some(sym) = elf.symbols.get(r.sym) else {
            problems.push(format!(
                "{place}: symbol index {} is beyond the symbol table",
                r.sym
            ));
            continue;
        };
        if let Some(sec_obj) = klp_sections.get(&r.rel_section) {
            let parsed = parse_klp_symbol_name(&sym.name);
            out.push(KlpRelocation {
                section: rel_section.name.clone(),
                applies_to: applies_to.clone(),
                offset: r.offset,
                r_type: relocation_type_name(r.r_type),
                symbol: sym_label.clone(),
                object: parsed.map(|p| p.0.to_string()),
                name: parsed.map(|p| p.1.to_string()),
                position: parsed.map(|p| p.2),
                addend: r.addend,
            });
            if !is_klp_symbol(sym) {
                // klp_resolve_symbols.
                problems.push(format!(
                    "{place}: {sym_label} is not a livepatch symbol (st_shndx {}): livepatch \
                     rejects it (\"not marked as a livepatch symbol\", -EINVAL)",
                    shndx_label(sym.shndx)
                ));
            } else if let (Some(sec_obj), Some((sym_obj, name, _))) = (sec_obj, parsed)
                && sym_obj != sec_obj
            {
                if sec_obj != "vmlinux" && sym_obj == "vmlinux" {
                    problems.push(format!(
                        "{place}: vmlinux symbol {name} in a relocation section of module \
                         {sec_obj}: livepatch rejects it (\"invalid access to vmlinux symbol \
                         from module-specific livepatch relocation section\", -EINVAL)"
                    ));
                } else {
                    let when = if sec_obj == "vmlinux" {
                        "when the patch module loads".to_string()
                    } else {
                        format!("when {sec_obj} loads")
                    };
                    problems.push(format!(
                        "{place}: symbol of {sym_obj} in a relocation section of {sec_obj}: the \
                         kernel does not check this, but looks {name} up in {sym_obj} {when}, \
                         which fails (-EINVAL) unless {sym_obj} is loaded then, and nothing \
                         keeps {sym_obj} loaded afterwards"
                    ));
                }
            }
            check_site(elf, r, &place, problems);
        } else {
            let target_loaded = elf.sections.get(r.target).is_some_and(Section::alloc);
            if !target_loaded {
                // The module loader skips relocations of unloaded sections.
                continue;
            }
            if is_klp_symbol(sym) {
                problems.push(format!(
                    "{place}: an ordinary relocation against livepatch symbol {sym_label}: the \
                     module loader applies it itself, before livepatch resolves the symbol"
                ));
            }
            check_site(elf, r, &place, problems);
        }
    }
    out
}

/// Livepatch applies a module's `.klp.rela.OBJ.*` sections only for the
/// patch's `klp_object`s (`klp_init_object_loaded`); kpbuild's glue has one
/// per object of `.kpbuild.functions`. vmlinux's are applied at load.
fn check_klp_objects(
    functions: &[Function],
    relocations: &[KlpRelocation],
    problems: &mut Vec<String>,
) {
    let objects: BTreeSet<&str> = functions.iter().map(|f| f.object.as_str()).collect();
    let mut reported = BTreeSet::new();
    for r in relocations {
        let Some(obj) = r
            .section
            .strip_prefix(KLP_RELA_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .map(|(obj, _)| obj)
        else {
            continue;
        };
        if obj != "vmlinux" && !objects.contains(obj) && reported.insert(obj) {
            problems.push(format!(
                "{}: no function of {obj} is patched, so the patch has no klp_object for {obj} \
                 and livepatch never applies these relocations",
                r.section
            ));
        }
    }
}

fn check_symbols(elf: &Elf, problems: &mut Vec<String>) -> Vec<LoaderSymbol> {
    let mut loader: BTreeMap<String, bool> = BTreeMap::new();
    for sym in elf.symbols.iter().skip(1) {
        if sym.name.starts_with(KLP_SYM_PREFIX) {
            if parse_klp_symbol_name(&sym.name).is_none() {
                problems.push(format!(
                    "{} is not .klp.sym.OBJ.NAME,POS within the kernel's limits: livepatch \
                     rejects it (\"incorrectly formatted name\", -EINVAL)",
                    sym.name
                ));
            }
            if sym.shndx == 0 {
                problems.push(format!(
                    "{} is undefined (SHN_UNDEF), not SHN_LIVEPATCH (0xff20): the module loader \
                     looks it up as an ordinary symbol and fails (\"Unknown symbol\"); the file \
                     is in pre-link form (not converted after the final link)",
                    sym.name
                ));
            } else if sym.shndx != SHN_LIVEPATCH {
                problems.push(format!(
                    "{} has st_shndx {}, not SHN_LIVEPATCH (0xff20): livepatch rejects \
                     relocations against it (\"not marked as a livepatch symbol\", -EINVAL)",
                    sym.name,
                    shndx_label(sym.shndx)
                ));
            }
        } else if sym.shndx == SHN_LIVEPATCH {
            problems.push(format!(
                "symbol {:?} has st_shndx SHN_LIVEPATCH but is not named .klp.sym.OBJ.NAME,POS",
                sym.name
            ));
        } else if sym.shndx == 0 && !sym.name.is_empty() {
            let weak = sym.bind == elf::STB_WEAK.0;
            let entry = loader.entry(sym.name.clone()).or_insert(weak);
            *entry &= weak;
        }
    }
    loader
        .into_iter()
        .map(|(name, weak)| LoaderSymbol { name, weak })
        .collect()
}

fn check_module(elf: &Elf, has_klp_relocations: bool, problems: &mut Vec<String>) -> Modinfo {
    let mut fields = Vec::new();
    match elf.section_by_name(".modinfo") {
        None => problems.push("the module has no .modinfo".into()),
        Some(s) => {
            for entry in s.data.split(|&b| b == 0).filter(|e| !e.is_empty()) {
                let text = lossy(entry);
                let (key, value) = text.split_once('=').unwrap_or((&text, ""));
                fields.push(ModinfoField {
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
        }
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.value.clone())
    };
    let info = Modinfo {
        name: get("name"),
        vermagic: get("vermagic"),
        livepatch: get("livepatch"),
        license: get("license"),
        fields: fields.clone(),
    };
    if info.livepatch.as_deref() != Some("Y") {
        let also = if has_klp_relocations {
            "; its livepatch relocations for modules are never applied"
        } else {
            ""
        };
        problems.push(format!(
            "modinfo has no livepatch=Y: klp_enable_patch rejects the module (\"not marked as a \
             livepatch module\", -EINVAL){also}"
        ));
    }
    if info.name.is_none() {
        problems.push("modinfo has no name=".into());
    }
    if info.vermagic.is_none() {
        problems.push(
            "modinfo has no vermagic=: the module loader refuses it unless loading is forced"
                .into(),
        );
    }
    if info.license.is_none() {
        problems.push(
            "modinfo has no license=: the module cannot use GPL-only exports such as \
             klp_enable_patch"
                .into(),
        );
    }
    info
}

fn disassemble(elf: &Elf, functions: &[Function]) -> Vec<Disassembly> {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut out = Vec::new();
    for f in functions {
        let found = find_defined_function(elf, &f.new_symbol);
        let [sym] = found[..] else { continue };
        let shndx = usize::from(sym.shndx);
        let section = &elf.sections[shndx];
        let Some(code) = usize::try_from(sym.value)
            .ok()
            .zip(usize::try_from(sym.size).ok())
            .and_then(|(start, size)| section.data.get(start..start.checked_add(size)?))
        else {
            continue;
        };
        let relocs: Vec<&Reloc> = elf.relocs.iter().filter(|r| r.target == shndx).collect();
        let mut decoder = Decoder::with_ip(64, code, sym.value, DecoderOptions::NONE);
        let mut formatter = IntelFormatter::new();
        let options = formatter.options_mut();
        options.set_first_operand_char_index(8);
        options.set_hex_prefix("0x");
        options.set_hex_suffix("");
        options.set_uppercase_hex(false);
        options.set_branch_leading_zeros(false);
        options.set_space_after_operand_separator(true);
        // Unrelocated RIP-relative operands point nowhere; show them as such.
        options.set_rip_relative_addresses(true);
        let mut instructions = Vec::new();
        for instr in &mut decoder {
            let start = instr.ip();
            let end = start + instr.len() as u64;
            let mut text = String::new();
            formatter.format(&instr, &mut text);
            let offset_in_code = (start - sym.value) as usize;
            let bytes = code[offset_in_code..offset_in_code + instr.len()]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            let relocations = relocs
                .iter()
                .filter(|r| r.offset >= start && r.offset < end)
                .map(|r| {
                    let rel = &elf.sections[r.rel_section];
                    let via = if rel.flags & SHF_RELA_LIVEPATCH != 0 {
                        "livepatch"
                    } else {
                        "module loader"
                    };
                    format!(
                        "+{:#x}: {} {}{:+} ({via})",
                        r.offset - start,
                        relocation_type_name(r.r_type),
                        elf.symbol_label(r.sym),
                        r.addend
                    )
                })
                .collect();
            instructions.push(Instruction {
                offset: start,
                bytes,
                text,
                relocations,
            });
        }
        out.push(Disassembly {
            symbol: f.new_symbol.clone(),
            replaces: format!("{} {},{}", f.object, f.name, f.position),
            section: section.name.clone(),
            offset: sym.value,
            size: sym.size,
            syntax: "intel",
            instructions,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Output.

/// The report for people.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let kind = match report.kind {
        Kind::Object => "livepatch object",
        Kind::Module => "kernel module",
    };
    out.push_str(&format!("{}: {kind}\n", report.file));

    if report.functions_section {
        out.push_str(&format!("patched functions ({FUNCTIONS_SECTION}):\n"));
        if report.functions.is_empty() {
            out.push_str("  (none)\n");
        }
        let mut by_object: BTreeMap<&str, Vec<&Function>> = BTreeMap::new();
        for f in &report.functions {
            by_object.entry(&f.object).or_default().push(f);
        }
        for (object, functions) in by_object {
            out.push_str(&format!("  {object}:\n"));
            for f in functions {
                out.push_str(&format!(
                    "    {},{} (old size {}) → {}\n",
                    f.name, f.position, f.old_size, f.new_symbol
                ));
            }
        }
    } else {
        out.push_str(&format!(
            "no {FUNCTIONS_SECTION} section (not built by kpbuild); global functions:\n"
        ));
        if report.global_functions.is_empty() {
            out.push_str("  (none)\n");
        }
        for g in &report.global_functions {
            out.push_str(&format!("  {} ({}, {} bytes)\n", g.name, g.section, g.size));
        }
    }

    if !report.callbacks.is_empty() {
        out.push_str(&format!("callbacks ({CALLBACKS_SECTION}):\n"));
        for c in &report.callbacks {
            out.push_str(&format!(
                "  {}: {} {} → {}\n",
                c.object, c.kind, c.function, c.symbol
            ));
        }
    }

    out.push_str("livepatch relocations:\n");
    if report.livepatch_relocations.is_empty() {
        out.push_str("  (none)\n");
    }
    let mut last_section = None;
    for r in &report.livepatch_relocations {
        if last_section != Some(&r.section) {
            out.push_str(&format!("  {} → {}:\n", r.section, r.applies_to));
            last_section = Some(&r.section);
        }
        let parsed = match (&r.object, &r.name, r.position) {
            (Some(o), Some(n), Some(p)) => format!(" [{o} {n},{p}]"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "    +{:#x} {} {}{parsed} addend {}\n",
            r.offset, r.r_type, r.symbol, r.addend
        ));
    }

    out.push_str("resolved by the module loader:\n");
    if report.loader_symbols.is_empty() {
        out.push_str("  (none)\n");
    }
    for s in &report.loader_symbols {
        let weak = if s.weak { " (weak)" } else { "" };
        out.push_str(&format!("  {}{weak}\n", s.name));
    }

    if let Some(m) = &report.modinfo {
        out.push_str("modinfo:\n");
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(missing)".into());
        out.push_str(&format!("  name: {}\n", show(&m.name)));
        out.push_str(&format!("  vermagic: {}\n", show(&m.vermagic)));
        out.push_str(&format!("  livepatch: {}\n", show(&m.livepatch)));
        out.push_str(&format!("  license: {}\n", show(&m.license)));
    }
    if let Some(s) = &report.signature {
        match (s.appended, s.length, &s.id_type) {
            (true, Some(len), Some(id)) => {
                out.push_str(&format!("signature: appended ({id}, {len} bytes)\n"));
                if let Some(signer) = &s.signer {
                    out.push_str(&format!("  signer: {signer}\n"));
                }
                if let Some(hash) = &s.hash {
                    out.push_str(&format!("  hash: {hash}\n"));
                }
            }
            _ => out.push_str("signature: none\n"),
        }
    }

    if let Some(listing) = &report.disassembly {
        if listing.is_empty() {
            let why = if report.functions_section {
                "no replacement function found"
            } else {
                "without the function list the replacements are unknown"
            };
            out.push_str(&format!("disassembly: none ({why})\n"));
        }
        for d in listing {
            out.push_str(&format!(
                "disassembly of {} (replaces {}), {}+{:#x}, {} bytes, Intel syntax:\n",
                d.symbol, d.replaces, d.section, d.offset, d.size
            ));
            for i in &d.instructions {
                out.push_str(&format!("  {:6x}:  {:<30} {}\n", i.offset, i.bytes, i.text));
                for r in &i.relocations {
                    out.push_str(&format!("  {:6}   {:<30}   ; reloc {r}\n", "", ""));
                }
            }
        }
    }

    if report.problems.is_empty() {
        out.push_str("problems: none\n");
    } else {
        out.push_str(&format!("problems ({}):\n", report.problems.len()));
        for p in &report.problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

/// Runs `kpbuild inspect`; returns the exit code.
pub fn run(args: &InspectArgs) -> u8 {
    let name = args.file.display().to_string();
    let data = match crate::files::read(&args.file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kpbuild inspect: error: {e}");
            return exit::ERROR;
        }
    };
    let report = match inspect(&name, &data, args.disasm) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kpbuild inspect: error: {name}: {e}");
            return exit::ERROR;
        }
    };
    if args.json {
        // Serialized directly (not through `Value`) to keep the field order.
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        print!("{}", human(&report));
    }
    if report.problems.is_empty() {
        exit::SUCCESS
    } else {
        eprintln!(
            "kpbuild inspect: {name}: {} problem(s) found",
            report.problems.len()
        );
        exit::ERROR
    }
}
