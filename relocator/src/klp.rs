//! The livepatch ELF format and the post-link conversion into it.
//!
//! The relocator hands over patch objects in *pre-link* form: every reference
//! the module loader cannot resolve is a relocation against an undefined
//! global symbol named `.klp.sym.OBJ.NAME,POS`. GNU `ld -r` would turn real
//! `.klp.rela.*` sections back into plain relocations, so the conversion into
//! the format of `Documentation/livepatch/module-elf-format.rst` runs on the
//! finished `.ko`, after its last link: [`convert_to_livepatch`].
//!
//! The converter works on the raw ELF64 little-endian structures (the only
//! layout an x86_64 kernel module has) so that it controls every byte it
//! writes: sections keep their indices, symbols keep their indices (the
//! kernel applies livepatch relocations with the module's symbol table as
//! written), and the same input always gives the same output.

use crate::Error;
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

// ELF64 constants (the `object` crate has them as newtypes; raw values keep
// the byte-level code below short).
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_REL: u16 = 1;
const EM_X86_64: u16 = 62;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const RELA_SIZE: usize = 24;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_RELA: u32 = 4;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHF_ALLOC: u64 = 0x2;
const SHF_INFO_LINK: u64 = 0x40;
const SHN_UNDEF: u16 = 0;
const SHN_LORESERVE: u16 = 0xff00;
const SHN_XINDEX: u16 = 0xffff;
const STB_LOCAL: u8 = 0;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;

fn u16_at(d: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(d[off..off + 2].try_into().expect("2 bytes"))
}
fn u32_at(d: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(d[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(d: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(d[off..off + 8].try_into().expect("8 bytes"))
}

/// One section header.
#[derive(Debug, Clone)]
struct Shdr {
    name: u32,
    sh_type: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    addralign: u64,
    entsize: u64,
}

impl Shdr {
    fn parse(d: &[u8]) -> Self {
        Shdr {
            name: u32_at(d, 0),
            sh_type: u32_at(d, 4),
            flags: u64_at(d, 8),
            addr: u64_at(d, 16),
            offset: u64_at(d, 24),
            size: u64_at(d, 32),
            link: u32_at(d, 40),
            info: u32_at(d, 44),
            addralign: u64_at(d, 48),
            entsize: u64_at(d, 56),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name.to_le_bytes());
        out.extend_from_slice(&self.sh_type.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.link.to_le_bytes());
        out.extend_from_slice(&self.info.to_le_bytes());
        out.extend_from_slice(&self.addralign.to_le_bytes());
        out.extend_from_slice(&self.entsize.to_le_bytes());
    }
}

/// One symbol, as far as the converter needs it.
#[derive(Debug, Clone)]
struct Sym {
    name: String,
    info: u8,
    shndx: u16,
}

impl Sym {
    fn bind(&self) -> u8 {
        self.info >> 4
    }
}

/// A parsed ELF64 little-endian x86_64 relocatable file.
struct Elf<'a> {
    data: &'a [u8],
    sections: Vec<Shdr>,
    shstrndx: usize,
    /// Index of the (single) `SHT_SYMTAB` section.
    symtab: Option<usize>,
    /// The symbols of `.symtab`, index 0 included.
    symbols: Vec<Sym>,
}

fn malformed(what: impl Into<String>) -> Error {
    Error::MalformedElf(what.into())
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let not = |why: &str| Error::NotX86_64Relocatable(why.to_string());
        if data.len() < EHDR_SIZE || &data[..4] != b"\x7fELF" {
            return Err(not("no ELF header"));
        }
        if data[4] != ELFCLASS64 {
            return Err(not("not ELF64"));
        }
        if data[5] != ELFDATA2LSB {
            return Err(not("not little-endian"));
        }
        if u16_at(data, 16) != ET_REL {
            return Err(not("not a relocatable object (e_type is not ET_REL)"));
        }
        if u16_at(data, 18) != EM_X86_64 {
            return Err(not("not x86_64 (e_machine is not EM_X86_64)"));
        }
        let shoff = u64_at(data, 40);
        let shentsize = u16_at(data, 58);
        let shnum = u16_at(data, 60);
        let shstrndx = u16_at(data, 62);
        if shoff == 0 || shnum == 0 {
            return Err(malformed(
                "no section header table (or extended section numbering, which is not supported)",
            ));
        }
        if usize::from(shentsize) != SHDR_SIZE {
            return Err(malformed(format!(
                "e_shentsize is {shentsize}, expected 64"
            )));
        }
        if shstrndx == SHN_XINDEX || shstrndx >= shnum {
            return Err(malformed(format!("e_shstrndx {shstrndx} is out of range")));
        }
        let table = usize::try_from(shoff)
            .ok()
            .and_then(|off| Some(off..off.checked_add(usize::from(shnum) * SHDR_SIZE)?))
            .filter(|r| r.end <= data.len())
            .ok_or_else(|| malformed("section header table lies outside the file"))?;
        let sections: Vec<Shdr> = data[table]
            .chunks_exact(SHDR_SIZE)
            .map(Shdr::parse)
            .collect();
        let mut elf = Elf {
            data,
            sections,
            shstrndx: usize::from(shstrndx),
            symtab: None,
            symbols: Vec::new(),
        };
        for (index, s) in elf.sections.iter().enumerate().skip(1) {
            if s.sh_type != SHT_NOBITS {
                elf.bytes_of(index, s)?;
            }
            // The output is padded to it: a power of two, a page or so at most.
            if s.addralign > 1 && (!s.addralign.is_power_of_two() || s.addralign > 1 << 21) {
                return Err(malformed(format!(
                    "section [{index}] alignment {:#x} is not a power of two up to 2 MiB",
                    s.addralign
                )));
            }
        }
        // The conversion appends names to it: it must be a string table.
        if elf.sections[elf.shstrndx].sh_type != SHT_STRTAB {
            return Err(malformed(format!(
                "e_shstrndx {shstrndx} is not a string table"
            )));
        }
        let symtabs: Vec<usize> = (1..elf.sections.len())
            .filter(|&i| elf.sections[i].sh_type == SHT_SYMTAB)
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
        if s.sh_type == SHT_NOBITS {
            return Ok(&[]);
        }
        let start = usize::try_from(s.offset).ok();
        let end = start.and_then(|st| st.checked_add(usize::try_from(s.size).ok()?));
        match (start, end) {
            (Some(st), Some(en)) if en <= self.data.len() => Ok(&self.data[st..en]),
            _ => Err(malformed(format!(
                "section [{index}] lies outside the file (offset {:#x}, size {:#x})",
                s.offset, s.size
            ))),
        }
    }

    fn section(&self, index: usize) -> &[u8] {
        // Ranges were checked in `parse`.
        self.bytes_of(index, &self.sections[index])
            .expect("checked in parse")
    }

    fn section_name(&self, index: usize) -> Result<String, Error> {
        let strtab = self.section(self.shstrndx);
        cstr(strtab, self.sections[index].name as usize)
            .ok_or_else(|| malformed(format!("section [{index}] has a bad name offset")))
    }

    fn read_symbols(&self, symtab: usize) -> Result<Vec<Sym>, Error> {
        let header = &self.sections[symtab];
        let strndx = header.link as usize;
        if strndx == 0 || strndx >= self.sections.len() {
            return Err(malformed(
                "the symbol table's string table index is out of range",
            ));
        }
        let strtab = self.section(strndx);
        let bytes = self.section(symtab);
        if !bytes.len().is_multiple_of(SYM_SIZE) {
            return Err(malformed("the symbol table size is not a multiple of 24"));
        }
        bytes
            .chunks_exact(SYM_SIZE)
            .enumerate()
            .map(|(i, raw)| {
                let name = cstr(strtab, u32_at(raw, 0) as usize)
                    .ok_or_else(|| malformed(format!("symbol {i} has a bad name offset")))?;
                Ok(Sym {
                    name,
                    info: raw[4],
                    shndx: u16_at(raw, 6),
                })
            })
            .collect()
    }

    /// The entries of the `SHT_RELA` section `index`: (offset, symbol, type, addend).
    fn relas(&self, index: usize) -> Result<Vec<Rela>, Error> {
        let bytes = self.section(index);
        if !bytes.len().is_multiple_of(RELA_SIZE) {
            return Err(malformed(format!(
                "relocation section [{index}] size is not a multiple of 24"
            )));
        }
        Ok(bytes
            .chunks_exact(RELA_SIZE)
            .map(|raw| {
                let info = u64_at(raw, 8);
                Rela {
                    raw: raw.try_into().expect("24 bytes"),
                    sym: (info >> 32) as usize,
                }
            })
            .collect())
    }
}

/// One `Elf64_Rela`, kept as its raw bytes (they are copied unchanged).
#[derive(Debug, Clone, Copy)]
struct Rela {
    raw: [u8; RELA_SIZE],
    sym: usize,
}

fn cstr(table: &[u8], off: usize) -> Option<String> {
    let tail = table.get(off..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&tail[..end]).into_owned())
}

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

    // Symbol index -> object name, for every livepatch symbol.
    let mut klp: HashMap<usize, String> = HashMap::new();
    let mut to_convert: Vec<usize> = Vec::new();
    for (index, sym) in file.symbols.iter().enumerate().skip(1) {
        if !sym.name.starts_with(KLP_SYM_PREFIX) {
            continue;
        }
        let (obj, _, _) = parse_klp_symbol_name(&sym.name).ok_or_else(|| Error::KlpSymbolName {
            name: sym.name.clone(),
        })?;
        match sym.shndx {
            SHN_LIVEPATCH => {}
            SHN_UNDEF => {
                if sym.bind() == STB_LOCAL {
                    return Err(Error::KlpSymbolLocal {
                        name: sym.name.clone(),
                    });
                }
                to_convert.push(index);
            }
            shndx => {
                let section = if shndx < SHN_LORESERVE && usize::from(shndx) < file.sections.len() {
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

    // Sort relocations: (obj, target section) -> moved entries, and the
    // entries each `.rela` section keeps.
    let mut moved: BTreeMap<(String, usize), Vec<Rela>> = BTreeMap::new();
    let mut kept: HashMap<usize, Vec<Rela>> = HashMap::new();
    for (index, s) in file.sections.iter().enumerate().skip(1) {
        if s.link as usize != symtab
            || !matches!(s.sh_type, SHT_RELA | SHT_REL)
            || s.flags & SHF_RELA_LIVEPATCH != 0
        {
            continue;
        }
        let target = s.info as usize;
        if target == 0 || target >= file.sections.len() {
            continue;
        }
        if file.sections[target].flags & SHF_ALLOC == 0 {
            continue;
        }
        if s.sh_type == SHT_REL {
            if klp.is_empty() {
                continue;
            }
            // REL entries are 16 bytes; only the symbol is needed here.
            let bytes = file.section(index);
            for raw in bytes.chunks_exact(16) {
                let sym = (u64_at(raw, 8) >> 32) as usize;
                if let Some(name) = klp.get(&sym).and(file.symbols.get(sym)) {
                    return Err(Error::KlpInRel {
                        section: file.section_name(index)?,
                        symbol: name.name.clone(),
                    });
                }
            }
            continue;
        }
        let relas = file.relas(index)?;
        if !relas.iter().any(|r| klp.contains_key(&r.sym)) {
            continue;
        }
        let mut keep = Vec::new();
        for rela in relas {
            match klp.get(&rela.sym) {
                Some(obj) => moved.entry((obj.clone(), target)).or_default().push(rela),
                None => keep.push(rela),
            }
        }
        kept.insert(index, keep);
    }

    if to_convert.is_empty() && moved.is_empty() {
        return Ok(elf.to_vec());
    }
    let new_count = file.sections.len() + moved.len();
    if new_count >= usize::from(SHN_LORESERVE) {
        return Err(Error::TooManySections(new_count));
    }

    // New section names go at the end of .shstrtab.
    let mut shstrtab = file.section(file.shstrndx).to_vec();
    let mut new_headers = Vec::new();
    let mut new_data = Vec::new();
    for ((obj, target), relas) in &moved {
        let name = format!("{KLP_RELA_PREFIX}{obj}.{}", file.section_name(*target)?);
        let name_off = u32::try_from(shstrtab.len())
            .map_err(|_| malformed("section name table larger than 4 GiB"))?;
        shstrtab.extend_from_slice(name.as_bytes());
        shstrtab.push(0);
        new_headers.push(Shdr {
            name: name_off,
            sh_type: SHT_RELA,
            flags: SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH,
            addr: 0,
            offset: 0,
            size: (relas.len() * RELA_SIZE) as u64,
            link: symtab as u32,
            info: *target as u32,
            addralign: 8,
            entsize: RELA_SIZE as u64,
        });
        new_data.push(relas.iter().flat_map(|r| r.raw).collect::<Vec<u8>>());
    }

    // The symbol table with the livepatch symbols marked.
    let mut symtab_bytes = file.section(symtab).to_vec();
    for &index in &to_convert {
        let entry = &mut symtab_bytes[index * SYM_SIZE..(index + 1) * SYM_SIZE];
        let bind = entry[4] >> 4;
        if bind == STB_WEAK || bind == STB_GLOBAL {
            entry[4] = (STB_GLOBAL << 4) | (entry[4] & 0xf);
        }
        entry[6..8].copy_from_slice(&SHN_LIVEPATCH.to_le_bytes());
    }

    // Lay the file out again: header, section contents in index order, the
    // new sections, the section header table.
    let mut out = elf[..EHDR_SIZE].to_vec();
    let mut headers = file.sections.clone();
    for (index, header) in headers.iter_mut().enumerate().skip(1) {
        let replaced;
        let data: &[u8] = if index == symtab {
            &symtab_bytes
        } else if index == file.shstrndx {
            &shstrtab
        } else if let Some(keep) = kept.get(&index) {
            replaced = keep.iter().flat_map(|r| r.raw).collect::<Vec<u8>>();
            &replaced
        } else {
            file.section(index)
        };
        if header.sh_type == SHT_NOBITS {
            header.offset = align(out.len(), header.addralign) as u64;
            continue;
        }
        pad_to(&mut out, header.addralign);
        header.offset = out.len() as u64;
        header.size = data.len() as u64;
        out.extend_from_slice(data);
    }
    for (header, data) in new_headers.iter_mut().zip(&new_data) {
        pad_to(&mut out, header.addralign);
        header.offset = out.len() as u64;
        out.extend_from_slice(data);
    }
    pad_to(&mut out, 8);
    let shoff = out.len() as u64;
    for header in headers.iter().chain(&new_headers) {
        header.write(&mut out);
    }
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[60..62].copy_from_slice(&(new_count as u16).to_le_bytes());
    Ok(out)
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
        .filter(|s| s.shndx == SHN_UNDEF && !s.name.is_empty() && s.bind() != STB_WEAK)
        .filter(|s| parse_klp_symbol_name(&s.name).is_none())
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
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
