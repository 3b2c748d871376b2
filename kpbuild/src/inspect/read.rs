//! Reading a livepatch object or module into plain values: its sections,
//! symbols and relocations through `object`'s typed ELF readers, the
//! framing of an appended signature through `modsign`, and the lists
//! kpbuild and the kernel keep in sections (`.kpbuild.functions`,
//! `.kpbuild.callback_list`, `.modinfo`). Nothing here judges the file:
//! that is [`super::checks`].

use super::report::{
    Callback, Function, GlobalFunction, Kind, KlpRelocation, LoaderSymbol, Modinfo, ModinfoField,
    Signature,
};
use super::{Error, Unsupported};
use modsign::Trailer;
use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, Rel as _, Rela as _, SectionHeader, SectionTable, Sym as _};
use relocator::klp::{
    KLP_RELA_PREFIX, KLP_SYM_PREFIX, SHF_RELA_LIVEPATCH, SHN_LIVEPATCH, parse_klp_symbol_name,
};
use relocator::resolve::{CALLBACKS_SECTION, FUNCTIONS_SECTION, parse_callbacks, parse_functions};
use std::collections::BTreeMap;

/// The section header table of an ELF64 little-endian file.
type Sections<'d> = SectionTable<'d, elf::FileHeader64<LE>, &'d [u8]>;

/// One section.
pub(super) struct Section<'d> {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub link: u32,
    pub info: u32,
    /// File bytes (empty for `SHT_NOBITS`).
    pub data: &'d [u8],
}

impl Section<'_> {
    /// Loaded into memory (`SHF_ALLOC`).
    pub fn alloc(&self) -> bool {
        self.flags & elf::SHF_ALLOC.0 != 0
    }
}

/// One symbol of the symbol table.
pub(super) struct Symbol {
    pub name: String,
    pub bind: u8,
    pub st_type: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

/// One relocation entry (REL or RELA).
pub(super) struct Reloc {
    /// Index of the relocation section.
    pub rel_section: usize,
    /// Index of the section it applies to.
    pub target: usize,
    pub offset: u64,
    pub sym: usize,
    pub r_type: u32,
    pub addend: i64,
}

/// The ELF file, read once into plain values.
pub(super) struct Elf<'d> {
    pub sections: Vec<Section<'d>>,
    pub symtab: Option<usize>,
    pub symbols: Vec<Symbol>,
    pub relocs: Vec<Reloc>,
}

fn malformed(why: impl Into<String>) -> Error {
    Error::Malformed(why.into())
}

/// Text from bytes that need not be UTF-8.
pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The ELF header, if this is an x86_64 relocatable ELF64 file.
fn check_header(data: &[u8]) -> Result<&elf::FileHeader64<LE>, Error> {
    if !data.starts_with(&elf::ELFMAG) {
        return Err(Error::NotElf);
    }
    let Ok(header) = object::pod::from_bytes::<elf::FileHeader64<LE>>(data).map(|(h, _)| h) else {
        return Err(malformed(format!(
            "{} bytes, shorter than an ELF64 header",
            data.len()
        )));
    };
    if header.e_ident.class != elf::ELFCLASS64 {
        return Err(Error::Unsupported(Unsupported::Class));
    }
    if header.e_ident.data != elf::ELFDATA2LSB {
        return Err(Error::Unsupported(Unsupported::Endian));
    }
    let e_type = header.e_type(LE);
    if e_type != elf::ET_REL {
        return Err(Error::Unsupported(Unsupported::Type(e_type.0)));
    }
    let e_machine = header.e_machine(LE);
    if e_machine != elf::EM_X86_64 {
        return Err(Error::Unsupported(Unsupported::Machine(e_machine.0)));
    }
    // The checks `object` makes (ELF version) on top of those above.
    elf::FileHeader64::<LE>::parse(data).map_err(|e| malformed(e.to_string()))
}

/// Every section, by index, with its name and file bytes.
fn read_sections<'d>(table: &Sections<'d>, data: &'d [u8]) -> Result<Vec<Section<'d>>, Error> {
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
    Ok(sections)
}

/// The symbol table's index and its symbols (none without one).
fn read_symbols(
    table: &Sections<'_>,
    sections: &[Section<'_>],
    data: &[u8],
) -> Result<(Option<usize>, Vec<Symbol>), Error> {
    let mut symtabs = (0..sections.len()).filter(|&i| sections[i].sh_type == elf::SHT_SYMTAB.0);
    let symtab = symtabs.next();
    if symtabs.next().is_some() {
        return Err(malformed("more than one symbol table"));
    }
    if symtab.is_none() {
        return Ok((None, Vec::new()));
    }
    let table = table
        .symbols(LE, data, elf::SHT_SYMTAB)
        .map_err(|e| malformed(format!("symbol table: {e}")))?;
    let mut symbols = Vec::with_capacity(table.len());
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
    Ok((symtab, symbols))
}

/// Every relocation section on its own, by index: a `.klp.rela` section is
/// listed separately from the `.rela` section of the same target.
fn read_relocations(
    table: &Sections<'_>,
    sections: &[Section<'_>],
    data: &[u8],
) -> Result<Vec<Reloc>, Error> {
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
        let entry = |offset, sym, r_type, addend| Reloc {
            rel_section: index.0,
            target,
            offset,
            sym,
            r_type,
            addend,
        };
        if sh_type == elf::SHT_RELA {
            let entries = h.data_as_array::<elf::Rela64<LE>, _>(LE, data);
            relocs.extend(entries.map_err(bad)?.iter().map(|r| {
                let (sym, r_type) = (r.r_sym(LE, false) as usize, r.r_type(LE, false).0);
                entry(r.r_offset(LE), sym, r_type, r.r_addend(LE))
            }));
        } else if sh_type == elf::SHT_REL {
            let entries = h.data_as_array::<elf::Rel64<LE>, _>(LE, data);
            relocs.extend(
                entries
                    .map_err(bad)?
                    .iter()
                    .map(|r| entry(r.r_offset(LE), r.r_sym(LE) as usize, r.r_type(LE).0, 0)),
            );
        }
    }
    Ok(relocs)
}

impl<'d> Elf<'d> {
    /// Checks the ELF header and reads sections, symbols and relocations.
    pub fn read(data: &'d [u8]) -> Result<Self, Error> {
        let header = check_header(data)?;
        let table = header
            .sections(LE, data)
            .map_err(|e| malformed(format!("section headers: {e}")))?;
        if table.is_empty() {
            return Err(malformed("no section headers"));
        }
        let sections = read_sections(&table, data)?;
        let (symtab, symbols) = read_symbols(&table, &sections, data)?;
        let relocs = read_relocations(&table, &sections, data)?;
        Ok(Elf {
            sections,
            symtab,
            symbols,
            relocs,
        })
    }
}

impl Elf<'_> {
    /// A module has `.modinfo` or `.gnu.linkonce.this_module`.
    pub fn kind(&self) -> Kind {
        if self.section_by_name(".modinfo").is_some()
            || self.section_by_name(".gnu.linkonce.this_module").is_some()
        {
            Kind::Module
        } else {
            Kind::Object
        }
    }

    /// A section's name, or `<section N>` when there is no such section.
    pub fn section_name(&self, index: usize) -> String {
        match self.sections.get(index) {
            Some(s) => s.name.clone(),
            None => format!("<section {index}>"),
        }
    }

    /// The first section called `name`.
    pub fn section_by_name(&self, name: &str) -> Option<&Section<'_>> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A symbol for people: section symbols by their section's name.
    pub fn symbol_label(&self, index: usize) -> String {
        match self.symbols.get(index) {
            None => format!("<symbol {index}>"),
            Some(s) if s.name.is_empty() && s.st_type == elf::STT_SECTION.0 => {
                self.section_name(usize::from(s.shndx))
            }
            Some(s) => s.name.clone(),
        }
    }

    /// The functions called `name` defined in an existing section.
    pub fn defined_functions(&self, name: &str) -> Vec<&Symbol> {
        self.symbols
            .iter()
            .filter(|s| {
                s.name == name
                    && s.st_type == elf::STT_FUNC.0
                    && s.shndx != 0
                    && usize::from(s.shndx) < self.sections.len()
            })
            .collect()
    }
}

/// `.kpbuild.functions` as read.
pub(super) struct FunctionList {
    /// The lines that parse, in file order.
    pub functions: Vec<Function>,
    /// How many non-blank lines the section has.
    pub lines: usize,
}

/// The patched functions, when the file has `.kpbuild.functions`.
pub(super) fn functions(elf: &Elf) -> Option<FunctionList> {
    let section = elf.section_by_name(FUNCTIONS_SECTION)?;
    let lines = String::from_utf8_lossy(section.data)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let functions = parse_functions(section.data)
        .into_iter()
        .map(|f| Function {
            object: f.objname,
            name: f.old_name,
            position: f.sympos,
            old_size: f.old_size,
            new_symbol: f.new_symbol,
        })
        .collect();
    Some(FunctionList { functions, lines })
}

/// The entries of `.kpbuild.callback_list` in file order; `None` for a line
/// that does not parse.
pub(super) fn callbacks(elf: &Elf) -> Vec<Option<Callback>> {
    let Some(section) = elf.section_by_name(CALLBACKS_SECTION) else {
        return Vec::new();
    };
    parse_callbacks(section.data)
        .into_iter()
        .map(|entry| {
            entry.map(|e| Callback {
                object: e.objname,
                kind: e.kind,
                function: e.function,
                symbol: e.symbol,
            })
        })
        .collect()
}

/// The defined global and weak functions (the list shown without
/// `.kpbuild.functions`).
pub(super) fn global_functions(elf: &Elf) -> Vec<GlobalFunction> {
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

/// A module's `.modinfo`, and whether it has one (without, every field is
/// missing).
pub(super) fn modinfo(elf: &Elf) -> (Modinfo, bool) {
    let section = elf.section_by_name(".modinfo");
    let fields: Vec<ModinfoField> = section
        .map(|s| s.data)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let text = lossy(entry);
            let (key, value) = text.split_once('=').unwrap_or((&text, ""));
            ModinfoField {
                key: key.to_string(),
                value: value.to_string(),
            }
        })
        .collect();
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
    (info, section.is_some())
}

/// The undefined ordinary symbols, which the module loader resolves from
/// the kernel's exports, by name; weak only when every reference is.
pub(super) fn loader_symbols(elf: &Elf) -> Vec<LoaderSymbol> {
    let mut loader: BTreeMap<String, bool> = BTreeMap::new();
    for sym in elf.symbols.iter().skip(1) {
        if sym.name.starts_with(KLP_SYM_PREFIX) || sym.shndx == SHN_LIVEPATCH {
            continue;
        }
        if sym.shndx == 0 && !sym.name.is_empty() {
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

/// Whether a section is a livepatch relocation section: a relocation
/// section named `.klp.rela.…` or flagged `SHF_RELA_LIVEPATCH`.
pub(super) fn is_klp_rela(s: &Section) -> bool {
    let is_rel = s.sh_type == elf::SHT_REL.0 || s.sh_type == elf::SHT_RELA.0;
    is_rel && (s.name.starts_with(KLP_RELA_PREFIX) || s.flags & SHF_RELA_LIVEPATCH != 0)
}

/// `OBJ` and `SECTION` of a `.klp.rela.OBJ.SECTION` name, as
/// `klp_write_section_relocs` reads it (`sscanf(name, ".klp.rela.%55[^.]")`).
pub(super) fn klp_rela_name(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(KLP_RELA_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .filter(|(obj, _)| !obj.is_empty())
}

/// Every entry of every livepatch relocation section whose symbol exists.
pub(super) fn livepatch_relocations(elf: &Elf) -> Vec<KlpRelocation> {
    let mut out = Vec::new();
    for r in &elf.relocs {
        let rel_section = &elf.sections[r.rel_section];
        let Some(sym) = elf.symbols.get(r.sym) else {
            continue;
        };
        if !is_klp_rela(rel_section) {
            continue;
        }
        let parsed = parse_klp_symbol_name(&sym.name);
        out.push(KlpRelocation {
            section: rel_section.name.clone(),
            applies_to: elf.section_name(r.target),
            offset: r.offset,
            r_type: relocation_type_name(r.r_type),
            symbol: elf.symbol_label(r.sym),
            object: parsed.map(|p| p.0.to_string()),
            name: parsed.map(|p| p.1.to_string()),
            position: parsed.map(|p| p.2),
            addend: r.addend,
        });
    }
    out
}

/// An appended signature as read: its framing, what the report shows, and
/// where the ELF file ends.
pub(super) struct AppendedSignature {
    /// The framing; `None` without the marker.
    pub trailer: Option<Trailer>,
    /// For the report (`appended: false` without a readable header).
    pub signature: Signature,
    /// Bytes of the ELF file before the signature.
    pub elf_len: usize,
}

/// Finds an appended signature (`modsign` reads the framing and the CMS
/// message).
pub(super) fn appended_signature(data: &[u8]) -> AppendedSignature {
    let trailer = modsign::trailer(data);
    let absent = Signature {
        appended: false,
        length: None,
        id_type: None,
        signer: None,
        hash: None,
    };
    let Some(Trailer::Header { info, offset }) = trailer else {
        return AppendedSignature {
            trailer,
            signature: absent,
            elf_len: data.len(),
        };
    };
    let id_type = match modsign::id_type_name(info.id_type) {
        Some(name) => name.to_string(),
        None => format!("unknown ({})", info.id_type),
    };
    let parsed = modsign::parse_signature(data);
    let signature = Signature {
        appended: true,
        length: Some(info.sig_len),
        id_type: Some(id_type),
        signer: parsed
            .as_ref()
            .and_then(|p| p.signer.as_ref())
            .map(|s| format!("{}, serial {}", s.issuer, s.serial)),
        hash: parsed.and_then(|p| p.hash).map(|h| h.name().to_string()),
    };
    // kernel/module_signature.c mod_check_sig: a signature that does not
    // fit leaves the ELF file ending at the header.
    let sig_len = info.sig_len as usize;
    let elf_len = if sig_len >= offset {
        offset
    } else {
        offset - sig_len
    };
    AppendedSignature {
        trailer,
        signature,
        elf_len,
    }
}

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
