//! The livepatch ELF format and the post-link conversion into it.
//!
//! The relocator hands over patch objects in *pre-link* form: every reference
//! the module loader cannot resolve is a relocation against an undefined
//! global symbol named `.klp.sym.OBJ.NAME,POS`. GNU `ld -r` would turn real
//! `.klp.rela.*` sections back into plain relocations, so the conversion into
//! the format of `Documentation/livepatch/module-elf-format.rst` runs on the
//! finished `.ko`, after its last link: [`convert_to_livepatch`].
//!
//! The converter reads and writes the ELF64 little-endian structures (the
//! only layout an x86_64 kernel module has) as `object`'s typed records, and
//! lays the file out itself so that it controls every byte it writes: sections keep their indices, symbols keep their indices (the
//! kernel applies livepatch relocations with the module's symbol table as
//! written), and the same input always gives the same output.

use crate::Error;
use object::read::elf::{FileHeader, SectionHeader, Sym as _};
use object::{LittleEndian, U16, U32, U64, elf, pod};
use std::collections::{BTreeMap, HashMap};

/// `SHN_LIVEPATCH`: the section index of a livepatch symbol. The module
/// loader leaves such symbols alone; livepatch resolves them by name when it
/// applies the `.klp.rela.*` section that references them
/// (`include/uapi/linux/elf.h`).
pub const SHN_LIVEPATCH: u16 = 0xff20;

/// `SHF_RELA_LIVEPATCH`: the section flag of a livepatch relocation section.
/// The module loader hands such sections to livepatch instead of applying
/// them itself (`include/uapi/linux/elf.h`).
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;

/// Prefix of every livepatch symbol name.
pub const KLP_SYM_PREFIX: &str = ".klp.sym.";

/// Prefix of every livepatch relocation section name.
pub const KLP_RELA_PREFIX: &str = ".klp.rela.";

/// Longest object name the kernel parses (`%55[^.]`, `MODULE_NAME_LEN - 1`).
pub const MAX_OBJ_NAME: usize = 55;

/// Longest symbol name the kernel parses (`%511[^,]`, `KSYM_NAME_LEN - 1`).
pub const MAX_SYM_NAME: usize = 511;

/// The livepatch symbol name `.klp.sym.OBJ.NAME,POS` for symbol `name` of
/// object `obj` (`vmlinux` or a module name) at kallsyms position `pos`
/// (0 for a unique symbol, else 1, 2, ... in kallsyms order).
///
/// This only formats; [`parse_klp_symbol_name`] says whether the kernel
/// will accept the result.
pub fn klp_symbol_name(obj: &str, name: &str, pos: u32) -> String {
    format!("{KLP_SYM_PREFIX}{obj}.{name},{pos}")
}

/// Splits a livepatch symbol name into (object, symbol, position), with the
/// limits of the kernel's `sscanf(".klp.sym.%55[^.].%511[^,],%lu")`: the
/// object is 1 to 55 bytes without `.`, the symbol 1 to 511 bytes without
/// `,`. Stricter than `sscanf` in one way: the position must be plain
/// decimal digits that fit a `u32`, with nothing after them.
pub fn parse_klp_symbol_name(s: &str) -> Option<(&str, &str, u32)> {
    let rest = s.strip_prefix(KLP_SYM_PREFIX)?;
    let (obj, rest) = rest.split_once('.')?;
    let (name, pos) = rest.split_once(',')?;
    if obj.is_empty() || obj.len() > MAX_OBJ_NAME || name.is_empty() || name.len() > MAX_SYM_NAME {
        return None;
    }
    if pos.is_empty() || !pos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((obj, name, pos.parse().ok()?))
}

/// The only byte order an x86_64 kernel module has.
const LE: LittleEndian = LittleEndian;

/// `SHN_UNDEF`, as a pattern.
const SHN_UNDEF: u16 = elf::SHN_UNDEF.0;

type Ehdr = elf::FileHeader64<LittleEndian>;
type Shdr = elf::SectionHeader64<LittleEndian>;
type ElfSym = elf::Sym64<LittleEndian>;
type ElfRela = elf::Rela64<LittleEndian>;
type ElfRel = elf::Rel64<LittleEndian>;

/// One symbol of `.symtab`, with its name read.
#[derive(Debug, Clone)]
struct Symbol<'a> {
    name: String,
    raw: &'a ElfSym,
}

impl Symbol<'_> {
    fn bind(&self) -> elf::SymbolBind {
        self.raw.st_bind()
    }

    fn shndx(&self) -> u16 {
        self.raw.st_shndx(LE).0
    }
}

/// A parsed ELF64 little-endian x86_64 relocatable file.
struct Elf<'a> {
    data: &'a [u8],
    header: &'a Ehdr,
    sections: &'a [Shdr],
    shstrndx: usize,
    /// Index of the (single) `SHT_SYMTAB` section.
    symtab: Option<usize>,
    /// The symbols of `.symtab`, index 0 included.
    symbols: Vec<Symbol<'a>>,
}

fn malformed(what: impl Into<String>) -> Error {
    Error::MalformedElf(what.into())
}

/// The ELF header, if it is one of an ELF64 little-endian x86_64 `ET_REL` file.
fn relocatable_header(data: &[u8]) -> Result<&Ehdr, Error> {
    let not = |why: &str| Error::NotX86_64Relocatable(why.to_string());
    let header = match pod::from_bytes::<Ehdr>(data) {
        Ok((header, _)) if header.e_ident.magic == elf::ELFMAG => header,
        _ => return Err(not("no ELF header")),
    };
    if header.e_ident.class != elf::ELFCLASS64 {
        return Err(not("not ELF64"));
    }
    if header.e_ident.data != elf::ELFDATA2LSB {
        return Err(not("not little-endian"));
    }
    if header.e_type(LE) != elf::ET_REL {
        return Err(not("not a relocatable object (e_type is not ET_REL)"));
    }
    if header.e_machine(LE) != elf::EM_X86_64 {
        return Err(not("not x86_64 (e_machine is not EM_X86_64)"));
    }
    Ok(header)
}

/// The section header table, without extended section numbering.
fn section_headers<'a>(data: &'a [u8], header: &Ehdr) -> Result<&'a [Shdr], Error> {
    let shoff = header.e_shoff(LE);
    let shentsize = header.e_shentsize(LE);
    // As written: extended numbering (0, SHN_XINDEX) is refused below.
    let shnum = header.e_shnum(LE);
    let shstrndx = header.e_shstrndx(LE).0;
    if shoff == 0 || shnum == 0 {
        return Err(malformed(
            "no section header table (or extended section numbering, which is not supported)",
        ));
    }
    if usize::from(shentsize) != size_of::<Shdr>() {
        return Err(malformed(format!(
            "e_shentsize is {shentsize}, expected 64"
        )));
    }
    if shstrndx == elf::SHN_XINDEX.0 || shstrndx >= shnum {
        return Err(malformed(format!("e_shstrndx {shstrndx} is out of range")));
    }
    usize::try_from(shoff)
        .ok()
        .and_then(|off| data.get(off..))
        .and_then(|table| pod::slice_from_bytes::<Shdr>(table, usize::from(shnum)).ok())
        .map(|(headers, _)| headers)
        .ok_or_else(|| malformed("section header table lies outside the file"))
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let header = relocatable_header(data)?;
        let sections = section_headers(data, header)?;
        let mut elf = Elf {
            data,
            header,
            sections,
            shstrndx: usize::from(header.e_shstrndx(LE).0),
            symtab: None,
            symbols: Vec::new(),
        };
        for (index, s) in elf.sections.iter().enumerate().skip(1) {
            elf.bytes_of(index, s)?;
            // The output is padded to it: a power of two, a page or so at most.
            let addralign = s.sh_addralign(LE);
            if addralign > 1 && (!addralign.is_power_of_two() || addralign > 1 << 21) {
                return Err(malformed(format!(
                    "section [{index}] alignment {addralign:#x} is not a power of two up to 2 MiB"
                )));
            }
        }
        // The conversion appends names to it: it must be a string table.
        if elf.sections[elf.shstrndx].sh_type(LE) != elf::SHT_STRTAB {
            return Err(malformed(format!(
                "e_shstrndx {} is not a string table",
                elf.shstrndx
            )));
        }
        let symtabs: Vec<usize> = (1..elf.sections.len())
            .filter(|&i| elf.sections[i].sh_type(LE) == elf::SHT_SYMTAB)
            .collect();
        match symtabs.as_slice() {
            [] => {}
            [one] => {
                elf.symtab = Some(*one);
                elf.symbols = elf.read_symbols(*one)?;
            }
            _ => return Err(malformed("more than one SHT_SYMTAB section")),
        }
        Ok(elf)
    }

    /// The file bytes of section `index`.
    fn bytes_of(&self, index: usize, s: &Shdr) -> Result<&'a [u8], Error> {
        if s.sh_type(LE) == elf::SHT_NOBITS {
            return Ok(&[]);
        }
        let (offset, size) = (s.sh_offset(LE), s.sh_size(LE));
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|st| st.checked_add(usize::try_from(size).ok()?));
        match (start, end) {
            (Some(st), Some(en)) if en <= self.data.len() => Ok(&self.data[st..en]),
            _ => Err(malformed(format!(
                "section [{index}] lies outside the file (offset {offset:#x}, size {size:#x})"
            ))),
        }
    }

    fn section(&self, index: usize) -> &'a [u8] {
        // Ranges were checked in `parse`.
        self.bytes_of(index, &self.sections[index])
            .expect("checked in parse")
    }

    fn section_name(&self, index: usize) -> Result<String, Error> {
        let strtab = self.section(self.shstrndx);
        cstr(strtab, self.sections[index].sh_name(LE) as usize)
            .ok_or_else(|| malformed(format!("section [{index}] has a bad name offset")))
    }

    fn read_symbols(&self, symtab: usize) -> Result<Vec<Symbol<'a>>, Error> {
        let strndx = self.sections[symtab].sh_link(LE) as usize;
        if strndx == 0 || strndx >= self.sections.len() {
            return Err(malformed(
                "the symbol table's string table index is out of range",
            ));
        }
        let strtab = self.section(strndx);
        let raw: &[ElfSym] = pod::slice_from_all_bytes(self.section(symtab))
            .map_err(|_| malformed("the symbol table size is not a multiple of 24"))?;
        raw.iter()
            .enumerate()
            .map(|(i, raw)| {
                let name = cstr(strtab, raw.st_name(LE) as usize)
                    .ok_or_else(|| malformed(format!("symbol {i} has a bad name offset")))?;
                Ok(Symbol { name, raw })
            })
            .collect()
    }

    /// The entries of the `SHT_RELA` section `index`.
    fn relas(&self, index: usize) -> Result<&'a [ElfRela], Error> {
        pod::slice_from_all_bytes(self.section(index)).map_err(|_| {
            malformed(format!(
                "relocation section [{index}] size is not a multiple of 24"
            ))
        })
    }

    /// The entries of the `SHT_REL` section `index` (a partial entry at the end is ignored).
    fn rels(&self, index: usize) -> &'a [ElfRel] {
        let bytes = self.section(index);
        pod::slice_from_bytes(bytes, bytes.len() / size_of::<ElfRel>())
            .map_or(&[], |(rels, _)| rels)
    }
}

fn cstr(table: &[u8], off: usize) -> Option<String> {
    let tail = table.get(off..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&tail[..end]).into_owned())
}

/// The symbol index of a relocation entry.
fn rela_sym(rela: &ElfRela) -> usize {
    rela.r_sym(LE, false) as usize
}

/// Livepatch relocations to move: (object, relocated section) → entries.
type Moved<'a> = BTreeMap<(String, usize), Vec<&'a ElfRela>>;

/// What stays in each `.rela` section that loses entries.
type Kept<'a> = HashMap<usize, Vec<&'a ElfRela>>;

/// Converts an x86_64 relocatable ELF file (a `.o` or a `.ko`) from the
/// pre-link form to the livepatch form:
///
/// - every undefined symbol named `.klp.sym.OBJ.NAME,POS` becomes `GLOBAL`
///   with `st_shndx = SHN_LIVEPATCH`; symbol indices do not change;
/// - every relocation against such a symbol moves from its `.rela.SEC` into
///   `.klp.rela.OBJ.SEC` (`SHT_RELA`, `SHF_ALLOC | SHF_INFO_LINK |
///   SHF_RELA_LIVEPATCH`, linked to `.symtab`, `sh_info` = the relocated
///   section), one section per (OBJ, SEC), appended after the existing
///   sections in (OBJ, SEC index) order, entries in their original order;
/// - relocations against other symbols stay where they were (a `.rela.SEC`
///   left empty stays, with size 0, so no section index changes).
///
/// Relocations against livepatch symbols in sections that are not loaded
/// (no `SHF_ALLOC`, e.g. debug information) stay in place: the kernel never
/// applies those, and a `.klp.rela` section aimed at an unloaded section
/// would make livepatch write into freed memory when a patched module loads.
///
/// A file without livepatch symbols to convert is returned byte for byte.
/// Converting the output again returns it unchanged. The output depends
/// only on the input.
///
/// Errors: the file is not ELF64 little-endian x86_64 `ET_REL`, is
/// malformed, has a `.klp.sym.` name the kernel would not parse, a livepatch
/// symbol that is defined or local, or one referenced from an `SHT_REL`
/// section.
pub fn convert_to_livepatch(elf: &[u8]) -> Result<Vec<u8>, Error> {
    let file = Elf::parse(elf)?;
    let Some(symtab) = file.symtab else {
        return Ok(elf.to_vec());
    };
    let (klp, to_convert) = livepatch_symbols(&file)?;
    let (moved, kept) = sort_relocations(&file, symtab, &klp)?;
    if to_convert.is_empty() && moved.is_empty() {
        return Ok(elf.to_vec());
    }
    let new_count = file.sections.len() + moved.len();
    if new_count >= usize::from(elf::SHN_LORESERVE) {
        return Err(Error::TooManySections(new_count));
    }
    let new = klp_rela_sections(&file, symtab, &moved)?;
    let symbols = mark_livepatch_symbols(&file, &to_convert);
    Ok(lay_out(&file, symtab, &symbols, &kept, new))
}

/// Every livepatch symbol: symbol index → object name, and the indexes of
/// those still to be turned into `SHN_LIVEPATCH` symbols. Refuses names the
/// kernel would not parse and livepatch symbols that are local or defined.
fn livepatch_symbols(file: &Elf<'_>) -> Result<(HashMap<usize, String>, Vec<usize>), Error> {
    let mut klp: HashMap<usize, String> = HashMap::new();
    let mut to_convert: Vec<usize> = Vec::new();
    for (index, sym) in file.symbols.iter().enumerate().skip(1) {
        if !sym.name.starts_with(KLP_SYM_PREFIX) {
            continue;
        }
        let (obj, _, _) = parse_klp_symbol_name(&sym.name).ok_or_else(|| Error::KlpSymbolName {
            name: sym.name.clone(),
        })?;
        match sym.shndx() {
            SHN_LIVEPATCH => {}
            SHN_UNDEF => {
                if sym.bind() == elf::STB_LOCAL {
                    return Err(Error::KlpSymbolLocal {
                        name: sym.name.clone(),
                    });
                }
                to_convert.push(index);
            }
            shndx => {
                let section =
                    if shndx < elf::SHN_LORESERVE && usize::from(shndx) < file.sections.len() {
                        file.section_name(usize::from(shndx))?
                    } else {
                        format!("special index {shndx:#x}")
                    };
                return Err(Error::KlpSymbolDefined {
                    name: sym.name.clone(),
                    section,
                });
            }
        }
        klp.insert(index, obj.to_string());
    }
    Ok((klp, to_convert))
}

/// Splits the relocations of every loaded section: entries against a
/// livepatch symbol move (by object and relocated section), the others stay.
/// A livepatch symbol referenced from an `SHT_REL` section is an error.
fn sort_relocations<'a>(
    file: &Elf<'a>,
    symtab: usize,
    klp: &HashMap<usize, String>,
) -> Result<(Moved<'a>, Kept<'a>), Error> {
    let mut moved = Moved::new();
    let mut kept = Kept::new();
    for (index, s) in file.sections.iter().enumerate().skip(1) {
        let sh_type = s.sh_type(LE);
        if s.sh_link(LE) as usize != symtab
            || !(sh_type == elf::SHT_RELA || sh_type == elf::SHT_REL)
            || s.sh_flags(LE).0 & SHF_RELA_LIVEPATCH != 0
        {
            continue;
        }
        let target = s.sh_info(LE) as usize;
        if target == 0 || target >= file.sections.len() {
            continue;
        }
        if !file.sections[target].sh_flags(LE).contains(elf::SHF_ALLOC) {
            continue;
        }
        if sh_type == elf::SHT_REL {
            check_rel(file, index, klp)?;
            continue;
        }
        let relas = file.relas(index)?;
        if !relas.iter().any(|r| klp.contains_key(&rela_sym(r))) {
            continue;
        }
        let mut keep = Vec::new();
        for rela in relas {
            match klp.get(&rela_sym(rela)) {
                Some(obj) => moved.entry((obj.clone(), target)).or_default().push(rela),
                None => keep.push(rela),
            }
        }
        kept.insert(index, keep);
    }
    Ok((moved, kept))
}

/// Refuses an `SHT_REL` section referencing a livepatch symbol: livepatch
/// relocations carry their addend, so only `SHT_RELA` can hold them.
fn check_rel(file: &Elf<'_>, index: usize, klp: &HashMap<usize, String>) -> Result<(), Error> {
    if klp.is_empty() {
        return Ok(());
    }
    for rel in file.rels(index) {
        let sym = rel.r_sym(LE) as usize;
        if let Some(name) = klp.get(&sym).and(file.symbols.get(sym)) {
            return Err(Error::KlpInRel {
                section: file.section_name(index)?,
                symbol: name.name.clone(),
            });
        }
    }
    Ok(())
}

/// The appended `.klp.rela.OBJ.SEC` sections: headers (offsets set when laid
/// out), their entries, and `.shstrtab` with their names at its end.
struct NewSections<'a> {
    shstrtab: Vec<u8>,
    headers: Vec<Shdr>,
    entries: Vec<Vec<&'a ElfRela>>,
}

fn klp_rela_sections<'a>(
    file: &Elf<'a>,
    symtab: usize,
    moved: &Moved<'a>,
) -> Result<NewSections<'a>, Error> {
    let mut new = NewSections {
        shstrtab: file.section(file.shstrndx).to_vec(),
        headers: Vec::new(),
        entries: Vec::new(),
    };
    for ((obj, target), relas) in moved {
        let name = format!("{KLP_RELA_PREFIX}{obj}.{}", file.section_name(*target)?);
        let name_off = u32::try_from(new.shstrtab.len())
            .map_err(|_| malformed("section name table larger than 4 GiB"))?;
        new.shstrtab.extend_from_slice(name.as_bytes());
        new.shstrtab.push(0);
        let entsize = size_of::<ElfRela>() as u64;
        new.headers.push(Shdr {
            sh_name: U32::new(LE, name_off),
            sh_type: U32::new(LE, elf::SHT_RELA),
            sh_flags: U64::new(
                LE,
                elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_INFO_LINK.0 | SHF_RELA_LIVEPATCH),
            ),
            sh_addr: U64::new(LE, 0),
            sh_offset: U64::new(LE, 0),
            sh_size: U64::new(LE, relas.len() as u64 * entsize),
            sh_link: U32::new(LE, symtab as u32),
            sh_info: U32::new(LE, *target as u32),
            sh_addralign: U64::new(LE, 8),
            sh_entsize: U64::new(LE, entsize),
        });
        new.entries.push(relas.clone());
    }
    Ok(new)
}

/// The symbol table with the symbols of `to_convert` made `GLOBAL` (when
/// weak) and `SHN_LIVEPATCH`.
fn mark_livepatch_symbols(file: &Elf<'_>, to_convert: &[usize]) -> Vec<ElfSym> {
    let mut symbols: Vec<ElfSym> = file.symbols.iter().map(|s| *s.raw).collect();
    for &index in to_convert {
        let entry = &mut symbols[index];
        let bind = entry.st_bind();
        if bind == elf::STB_WEAK || bind == elf::STB_GLOBAL {
            entry.st_info = elf::SymbolInfo::new(elf::STB_GLOBAL, entry.st_type());
        }
        entry.st_shndx = U16::new(LE, elf::SymbolSection(SHN_LIVEPATCH));
    }
    symbols
}

/// Lays the file out again: header, section contents in index order, the
/// new sections, the section header table.
fn lay_out(
    file: &Elf<'_>,
    symtab: usize,
    symbols: &[ElfSym],
    kept: &Kept<'_>,
    mut new: NewSections<'_>,
) -> Vec<u8> {
    let mut out = pod::bytes_of(file.header).to_vec();
    let mut headers = file.sections.to_vec();
    for (index, header) in headers.iter_mut().enumerate().skip(1) {
        let replaced;
        let data: &[u8] = if index == symtab {
            pod::bytes_of_slice(symbols)
        } else if index == file.shstrndx {
            &new.shstrtab
        } else if let Some(keep) = kept.get(&index) {
            replaced = rela_bytes(keep);
            &replaced
        } else {
            file.section(index)
        };
        let addralign = header.sh_addralign(LE);
        if header.sh_type(LE) == elf::SHT_NOBITS {
            header.sh_offset = U64::new(LE, align(out.len(), addralign) as u64);
            continue;
        }
        pad_to(&mut out, addralign);
        header.sh_offset = U64::new(LE, out.len() as u64);
        header.sh_size = U64::new(LE, data.len() as u64);
        out.extend_from_slice(data);
    }
    for (header, entries) in new.headers.iter_mut().zip(&new.entries) {
        pad_to(&mut out, header.sh_addralign(LE));
        header.sh_offset = U64::new(LE, out.len() as u64);
        out.extend_from_slice(&rela_bytes(entries));
    }
    pad_to(&mut out, 8);
    let mut ehdr = *file.header;
    ehdr.e_shoff = U64::new(LE, out.len() as u64);
    ehdr.e_shnum = U16::new(LE, (headers.len() + new.headers.len()) as u16);
    out.extend_from_slice(pod::bytes_of_slice(&headers));
    out.extend_from_slice(pod::bytes_of_slice(&new.headers));
    out[..size_of::<Ehdr>()].copy_from_slice(pod::bytes_of(&ehdr));
    out
}

/// Relocation entries as the bytes of a `SHT_RELA` section.
fn rela_bytes(entries: &[&ElfRela]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|r| pod::bytes_of(*r))
        .copied()
        .collect()
}

fn align(len: usize, alignment: u64) -> usize {
    let a = usize::try_from(alignment.max(1)).unwrap_or(1);
    len.div_ceil(a) * a
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let target = align(out.len(), alignment);
    out.resize(target, 0);
}

/// Names of the undefined symbols of an x86_64 relocatable ELF file that
/// are neither livepatch symbols nor weak (the module loader accepts an
/// unresolved weak symbol), sorted and without duplicates: the symbols the
/// module loader must find among the kernel's exports.
pub fn undefined_symbols(elf: &[u8]) -> Result<Vec<String>, Error> {
    let file = Elf::parse(elf)?;
    let mut names: Vec<String> = file
        .symbols
        .iter()
        .skip(1)
        .filter(|s| s.shndx() == SHN_UNDEF && !s.name.is_empty() && s.bind() != elf::STB_WEAK)
        .filter(|s| parse_klp_symbol_name(&s.name).is_none())
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Size of one `struct modversion_info` on x86_64: the CRC as an
/// `unsigned long`, then the name in `MODULE_NAME_LEN` (64 - 8) bytes.
const MODVERSION_ENTRY: usize = 64;

/// The symbol versions a module carries in `__versions` (written by modpost
/// with `CONFIG_MODVERSIONS`), as (symbol, CRC) in file order; empty when it
/// has none. The module loader compares each with the CRC the kernel
/// exports the symbol with and refuses the module on any difference.
pub fn module_versions(elf: &[u8]) -> Result<Vec<(String, u32)>, Error> {
    let file = Elf::parse(elf)?;
    let mut found = None;
    for index in 1..file.sections.len() {
        if file.section_name(index)? == "__versions" {
            found = Some(index);
        }
    }
    let Some(index) = found else {
        return Ok(Vec::new());
    };
    let data = file.section(index);
    if data.len() % MODVERSION_ENTRY != 0 {
        return Err(malformed(format!(
            "__versions is {} bytes, not a multiple of {MODVERSION_ENTRY}",
            data.len()
        )));
    }
    data.chunks(MODVERSION_ENTRY)
        .enumerate()
        .map(|(i, entry)| {
            let crc = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let name = cstr(&entry[8..], 0)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| malformed(format!("__versions entry {i} has no name")))?;
            // The kernel keeps CRCs as 32-bit values in an `unsigned long`.
            Ok((name, crc as u32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
        SymbolKind, SymbolScope,
    };

    #[test]
    fn names_round_trip() {
        let name = klp_symbol_name("vmlinux", "saved_command_line", 0);
        assert_eq!(name, ".klp.sym.vmlinux.saved_command_line,0");
        assert_eq!(
            parse_klp_symbol_name(&name),
            Some(("vmlinux", "saved_command_line", 0))
        );
        assert_eq!(
            parse_klp_symbol_name(".klp.sym.ext4.foo.isra.0,12"),
            Some(("ext4", "foo.isra.0", 12))
        );
    }

    #[test]
    fn names_follow_the_kernel_limits() {
        let obj55 = "m".repeat(55);
        let name511 = "s".repeat(511);
        assert!(parse_klp_symbol_name(&klp_symbol_name(&obj55, &name511, 3)).is_some());
        assert!(parse_klp_symbol_name(&klp_symbol_name(&"m".repeat(56), "x", 0)).is_none());
        assert!(parse_klp_symbol_name(&klp_symbol_name("vmlinux", &"s".repeat(512), 0)).is_none());
        for bad in [
            ".klp.sym.vmlinux.foo",
            ".klp.sym.vmlinux.foo,",
            ".klp.sym.vmlinux.foo,x",
            ".klp.sym.vmlinux.foo,1x",
            ".klp.sym.vmlinux.foo,-1",
            ".klp.sym.vmlinux.,0",
            ".klp.sym..foo,0",
            ".klp.sym.vmlinux",
            ".klp.sym.vmlinux.foo,99999999999",
            "klp.sym.vmlinux.foo,0",
            "foo",
        ] {
            assert_eq!(parse_klp_symbol_name(bad), None, "{bad}");
        }
    }

    const KLP_BAR: &str = ".klp.sym.vmlinux.bar,0";
    const KLP_BAZ: &str = ".klp.sym.ext4.baz,2";

    fn undefined(obj: &mut Object, name: &str) -> object::write::SymbolId {
        obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        })
    }

    fn reloc(
        obj: &mut Object,
        section: object::write::SectionId,
        offset: u64,
        symbol: object::write::SymbolId,
        r_type: u32,
        addend: i64,
    ) {
        obj.add_relocation(
            section,
            Relocation {
                offset,
                symbol,
                addend,
                flags: RelocationFlags::Elf {
                    r_type: object::elf::RelocationType(r_type),
                },
            },
        )
        .unwrap();
    }

    const R_X86_64_64: u32 = 1;
    const R_X86_64_PC32: u32 = 2;
    const R_X86_64_PLT32: u32 = 4;

    /// `.text.foo` calls `printk` and `.klp.sym.vmlinux.bar,0`, reads
    /// `.klp.sym.ext4.baz,2` and a local; `.data` points at bar and the local.
    fn sample_object() -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text.foo".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0x90; 32], 16);
        let data = obj.section_id(StandardSection::Data);
        obj.append_section_data(data, &[0; 24], 8);
        let local = obj.add_symbol(Symbol {
            name: b"helper".to_vec(),
            value: 24,
            size: 8,
            kind: SymbolKind::Text,
            scope: SymbolScope::Compilation,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        obj.add_symbol(Symbol {
            name: b"__kpb_new_0".to_vec(),
            value: 0,
            size: 24,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        let bar = undefined(&mut obj, KLP_BAR);
        let printk = undefined(&mut obj, "printk");
        let baz = undefined(&mut obj, KLP_BAZ);
        reloc(&mut obj, text, 1, bar, R_X86_64_PLT32, -4);
        reloc(&mut obj, text, 6, printk, R_X86_64_PLT32, -4);
        reloc(&mut obj, text, 11, baz, R_X86_64_PC32, -4);
        reloc(&mut obj, text, 16, local, R_X86_64_PC32, -4);
        reloc(&mut obj, text, 20, bar, R_X86_64_PC32, 8);
        reloc(&mut obj, data, 0, bar, R_X86_64_64, 0);
        reloc(&mut obj, data, 8, local, R_X86_64_64, 0);
        obj.write().unwrap()
    }

    fn section_index(out: &[u8], name: &str) -> usize {
        let file = Elf::parse(out).unwrap();
        (0..file.sections.len())
            .find(|&i| file.section_name(i).unwrap() == name)
            .unwrap_or_else(|| panic!("no section {name}"))
    }

    #[test]
    fn converts_with_object_reading_it_back() {
        use object::read::elf::{ElfFile64, FileHeader, Rela as _, SectionHeader, Sym as _};
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let input = sample_object();
        let out = convert_to_livepatch(&input).unwrap();
        let file = ElfFile64::<Endianness>::parse(&*out).unwrap();
        let endian = file.endian();
        let sections = file.elf_header().sections(endian, &*out).unwrap();
        let symtab_index = section_index(&out, ".symtab");
        let text_index = section_index(&out, ".text.foo");
        let data_index = section_index(&out, ".data");

        let expect = [
            (".klp.rela.vmlinux..text.foo", text_index, 2),
            (".klp.rela.ext4..text.foo", text_index, 1),
            (".klp.rela.vmlinux..data", data_index, 1),
        ];
        for (name, target, count) in expect {
            let index = section_index(&out, name);
            let header = sections.section(object::SectionIndex(index)).unwrap();
            assert_eq!(header.sh_type(endian), object::elf::SHT_RELA, "{name}");
            assert_eq!(
                header.sh_flags(endian).0,
                0x2 | 0x40 | SHF_RELA_LIVEPATCH,
                "{name}"
            );
            assert_eq!(header.sh_link(endian) as usize, symtab_index, "{name}");
            assert_eq!(header.sh_info(endian) as usize, target, "{name}");
            assert_eq!(header.sh_entsize(endian), 24, "{name}");
            assert_eq!(header.sh_addralign(endian), 8, "{name}");
            assert_eq!(header.sh_size(endian), 24 * count, "{name}");
        }
        // Sections sorted by (object, target): ext4 first.
        assert!(
            section_index(&out, ".klp.rela.ext4..text.foo")
                < section_index(&out, ".klp.rela.vmlinux..data")
        );

        // Symbols: klp ones are GLOBAL SHN_LIVEPATCH, printk stays undefined.
        let symbols = sections
            .symbols(endian, &*out, object::elf::SHT_SYMTAB)
            .unwrap();
        for sym in symbols.symbols() {
            let name = std::str::from_utf8(sym.name(endian, symbols.strings()).unwrap()).unwrap();
            match name {
                KLP_BAR | KLP_BAZ => {
                    assert_eq!(sym.st_shndx(endian).0, SHN_LIVEPATCH, "{name}");
                    assert_eq!(sym.st_bind(), object::elf::STB_GLOBAL, "{name}");
                }
                "printk" => assert_eq!(sym.st_shndx(endian).0, SHN_UNDEF),
                "helper" => {
                    assert_eq!(sym.st_bind(), object::elf::STB_LOCAL);
                    assert_eq!(sym.st_shndx(endian).0 as usize, text_index);
                }
                _ => {}
            }
        }

        // Relocations: entries (offset, symbol, type, addend) preserved.
        let rels = |name: &str| -> Vec<(u64, String, u32, i64)> {
            let index = section_index(&out, name);
            let header = sections.section(object::SectionIndex(index)).unwrap();
            let (relas, _) = header.rela(endian, &*out).unwrap().unwrap();
            relas
                .iter()
                .map(|r| {
                    let sym = symbols
                        .symbol(object::SymbolIndex(r.r_sym(endian, false) as usize))
                        .unwrap();
                    let name = sym.name(endian, symbols.strings()).unwrap();
                    (
                        r.r_offset(endian),
                        String::from_utf8(name.to_vec()).unwrap(),
                        r.r_type(endian, false).0,
                        r.r_addend(endian),
                    )
                })
                .collect()
        };
        let s = |x: &str| x.to_string();
        assert_eq!(
            rels(".klp.rela.vmlinux..text.foo"),
            [
                (1, s(KLP_BAR), R_X86_64_PLT32, -4),
                (20, s(KLP_BAR), R_X86_64_PC32, 8)
            ]
        );
        assert_eq!(
            rels(".klp.rela.ext4..text.foo"),
            [(11, s(KLP_BAZ), R_X86_64_PC32, -4)]
        );
        assert_eq!(
            rels(".klp.rela.vmlinux..data"),
            [(0, s(KLP_BAR), R_X86_64_64, 0)]
        );
        let kept = rels(".rela.text.foo");
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0], (6, s("printk"), R_X86_64_PLT32, -4));
        assert_eq!(kept[1].0, 16);
        assert_eq!(rels(".rela.data").len(), 1);

        // Section contents other than relocations are untouched.
        let text = file.section_by_name(".text.foo").unwrap();
        assert_eq!(text.data().unwrap(), &[0x90; 32]);
        // The generic reader still finds every symbol.
        assert!(file.symbols().any(|s| s.name() == Ok("__kpb_new_0")));
    }

    #[test]
    fn output_parses_with_goblin() {
        let out = convert_to_livepatch(&sample_object()).unwrap();
        let elf = goblin::elf::Elf::parse(&out).unwrap();
        let name = |i: usize| {
            elf.shdr_strtab
                .get_at(elf.section_headers[i].sh_name)
                .unwrap()
                .to_string()
        };
        let klp: Vec<usize> = (0..elf.section_headers.len())
            .filter(|&i| name(i).starts_with(".klp.rela."))
            .collect();
        assert_eq!(klp.len(), 3);
        for &i in &klp {
            let sh = &elf.section_headers[i];
            assert_eq!(sh.sh_flags, 0x2 | 0x40 | SHF_RELA_LIVEPATCH);
            assert_eq!(sh.sh_entsize, 24);
            let (_, relocs) = elf
                .shdr_relocs
                .iter()
                .find(|(idx, _)| *idx == i)
                .expect("goblin parsed the klp relocations");
            for r in relocs.iter() {
                let sym = elf.syms.get(r.r_sym).unwrap();
                assert_eq!(sym.st_shndx, usize::from(SHN_LIVEPATCH));
                assert_eq!(sym.st_bind(), goblin::elf::sym::STB_GLOBAL);
                assert!(
                    elf.strtab
                        .get_at(sym.st_name)
                        .unwrap()
                        .starts_with(".klp.sym.")
                );
            }
        }
    }

    #[test]
    fn readelf_accepts_the_output() {
        let out = convert_to_livepatch(&sample_object()).unwrap();
        let path = std::env::temp_dir().join(format!("relocator-klp-{}.o", std::process::id()));
        let Some(readelf) = testbed::oracle::tool("readelf", "binutils") else {
            return;
        };
        std::fs::write(&path, &out).unwrap();
        let result = std::process::Command::new(readelf)
            .args(["-W", "-a"])
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let output = result.expect("readelf runs");
        assert!(output.status.success());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("Warning") || l.contains("Error"))
            .collect();
        assert!(bad.is_empty(), "readelf complained:\n{}", bad.join("\n"));
        assert!(text.contains(".klp.rela.vmlinux..text.foo"), "{text}");
        assert!(text.contains(KLP_BAR), "{text}");
    }

    #[test]
    fn relocations_in_unloaded_sections_stay() {
        use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3; 8], 16);
        let debug = obj.add_section(Vec::new(), b".debug_x".to_vec(), SectionKind::Debug);
        obj.append_section_data(debug, &[0; 8], 1);
        let bar = undefined(&mut obj, KLP_BAR);
        reloc(&mut obj, text, 1, bar, R_X86_64_PC32, -4);
        reloc(&mut obj, debug, 0, bar, R_X86_64_64, 0);
        let out = convert_to_livepatch(&obj.write().unwrap()).unwrap();
        let file = ElfFile64::<Endianness>::parse(&*out).unwrap();
        let endian = file.endian();
        let sections = file.elf_header().sections(endian, &*out).unwrap();
        let size = |name: &str| {
            sections
                .section(object::SectionIndex(section_index(&out, name)))
                .unwrap()
                .sh_size(endian)
        };
        assert_eq!(size(".rela.debug_x"), 24);
        assert_eq!(size(".klp.rela.vmlinux..text"), 24);
        assert_eq!(size(".rela.text"), 0);
    }

    #[test]
    fn deterministic_and_idempotent() {
        let input = sample_object();
        let a = convert_to_livepatch(&input).unwrap();
        let b = convert_to_livepatch(&input).unwrap();
        assert!(a == b, "two conversions of the same input differ");
        assert!(
            convert_to_livepatch(&a).unwrap() == a,
            "converting the output again changed it"
        );
    }

    #[test]
    fn file_without_klp_symbols_is_unchanged() {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3; 8], 16);
        let printk = undefined(&mut obj, "printk");
        reloc(&mut obj, text, 1, printk, R_X86_64_PLT32, -4);
        let input = obj.write().unwrap();
        assert_eq!(convert_to_livepatch(&input).unwrap(), input);
        assert_eq!(undefined_symbols(&input).unwrap(), ["printk"]);
    }

    #[test]
    fn undefined_symbols_leave_out_klp_and_weak() {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        undefined(&mut obj, "seq_printf");
        undefined(&mut obj, KLP_BAR);
        undefined(&mut obj, ".klp.sym.broken");
        undefined(&mut obj, "_printk");
        obj.add_symbol(Symbol {
            name: b"maybe".to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Linkage,
            weak: true,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        let input = obj.write().unwrap();
        assert_eq!(
            undefined_symbols(&input).unwrap(),
            [".klp.sym.broken", "_printk", "seq_printf"]
        );
        let converted = convert_to_livepatch(&sample_object()).unwrap();
        assert_eq!(undefined_symbols(&converted).unwrap(), ["printk"]);
    }

    fn with_versions(entries: &[u8]) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let section = obj.add_section(Vec::new(), b"__versions".to_vec(), SectionKind::Data);
        obj.append_section_data(section, entries, 32);
        obj.write().unwrap()
    }

    fn version_entry(crc: u64, name: &str) -> Vec<u8> {
        let mut entry = crc.to_le_bytes().to_vec();
        entry.extend_from_slice(name.as_bytes());
        entry.resize(MODVERSION_ENTRY, 0);
        entry
    }

    #[test]
    fn module_versions_are_read_in_order() {
        let mut entries = version_entry(0x0b29_81f9, "put_device");
        entries.extend(version_entry(0xffff_ffff_1234_5678, "module_layout"));
        assert_eq!(
            module_versions(&with_versions(&entries)).unwrap(),
            [
                ("put_device".to_string(), 0x0b29_81f9),
                ("module_layout".to_string(), 0x1234_5678)
            ]
        );
        assert_eq!(module_versions(&sample_object()).unwrap(), []);
        let cut = module_versions(&with_versions(&entries[..100])).unwrap_err();
        assert!(cut.to_string().contains("not a multiple of 64"), "{cut}");
        let nameless = module_versions(&with_versions(&version_entry(1, ""))).unwrap_err();
        assert!(
            nameless.to_string().contains("entry 0 has no name"),
            "{nameless}"
        );
    }

    #[test]
    fn malformed_klp_name_is_an_error() {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3; 8], 16);
        let bad = undefined(&mut obj, ".klp.sym.vmlinux.nopos");
        reloc(&mut obj, text, 1, bad, R_X86_64_PLT32, -4);
        let err = convert_to_livepatch(&obj.write().unwrap()).unwrap_err();
        assert!(matches!(err, Error::KlpSymbolName { .. }), "{err}");
        assert!(err.to_string().contains(".klp.sym.vmlinux.nopos"), "{err}");
    }

    #[test]
    fn defined_klp_symbol_is_an_error() {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3; 8], 16);
        obj.add_symbol(Symbol {
            name: KLP_BAR.as_bytes().to_vec(),
            value: 0,
            size: 1,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        let err = convert_to_livepatch(&obj.write().unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::KlpSymbolDefined { .. }), "{text}");
        assert!(text.contains(KLP_BAR) && text.contains(".text"), "{text}");
    }

    #[test]
    fn other_files_are_refused() {
        assert!(matches!(
            convert_to_livepatch(
                b"not an elf file at all, just some bytes that are long enough to pass"
            ),
            Err(Error::NotX86_64Relocatable(_))
        ));
        let arm = Object::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little)
            .write()
            .unwrap();
        let err = convert_to_livepatch(&arm).unwrap_err();
        assert!(err.to_string().contains("x86_64"), "{err}");
        let i386 = Object::new(BinaryFormat::Elf, Architecture::I386, Endianness::Little)
            .write()
            .unwrap();
        let err = convert_to_livepatch(&i386).unwrap_err();
        assert!(err.to_string().contains("ELF64"), "{err}");
        let mut exec = sample_object();
        exec[16] = 2; // ET_EXEC
        assert!(matches!(
            convert_to_livepatch(&exec),
            Err(Error::NotX86_64Relocatable(_))
        ));
        let truncated = &sample_object()[..200];
        assert!(convert_to_livepatch(truncated).is_err());
    }
}
