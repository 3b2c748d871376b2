//! Reading a target's ELF image (vmlinux or a `.ko`): header facts, section
//! headers and symbols, through `object`'s typed ELF readers.

use crate::Error;
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{Endianness, SymbolIndex};

pub(super) type Elf64 = elf::FileHeader64<Endianness>;
pub(super) type Shdr64 = elf::SectionHeader64<Endianness>;

/// One ELF symbol as read, with what the filters need.
pub(super) struct RawSym<'d> {
    pub(super) index: usize,
    pub(super) name: &'d str,
    pub(super) value: u64,
    pub(super) size: u64,
    pub(super) bind: elf::SymbolBind,
    pub(super) typ: elf::SymbolType,
    /// The raw `st_shndx`.
    pub(super) shndx: elf::SymbolSection,
    /// The section header (extended indexes resolved), for section-defined symbols.
    pub(super) section: Option<usize>,
}

/// A parsed ELF64 image: header facts, sections and symbols.
pub(super) struct Image<'d> {
    pub(super) endian: Endianness,
    pub(super) data: &'d [u8],
    pub(super) e_type: elf::FileType,
    pub(super) e_machine: elf::Machine,
    pub(super) sections: SectionTable<'d, Elf64>,
    pub(super) syms: Vec<RawSym<'d>>,
}

impl<'d> Image<'d> {
    pub(super) fn parse(file: &str, data: &'d [u8]) -> Result<Self, Error> {
        let bad = |why: String| Error::BadElf {
            file: file.to_string(),
            why,
        };
        let header = Elf64::parse(data).map_err(|e| bad(format!("not an ELF64 file: {e}")))?;
        let endian = header.endian().map_err(|e| bad(e.to_string()))?;
        let sections = header
            .sections(endian, data)
            .map_err(|e| bad(format!("bad section headers: {e}")))?;
        let table: SymbolTable<'d, Elf64> = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(|e| bad(format!("bad symbol table: {e}")))?;
        if table.is_empty() {
            return Err(bad("no .symtab".into()));
        }
        let mut syms = Vec::with_capacity(table.len());
        for (index, sym) in table.enumerate() {
            if index.0 == 0 {
                continue;
            }
            let raw_name = table
                .symbol_name(endian, sym)
                .map_err(|e| bad(format!("symbol {}: bad name: {e}", index.0)))?;
            let name = std::str::from_utf8(raw_name).map_err(|_| {
                bad(format!(
                    "symbol {}: name {:?} is not UTF-8",
                    index.0,
                    String::from_utf8_lossy(raw_name)
                ))
            })?;
            let section = table
                .symbol_section(endian, sym, SymbolIndex(index.0))
                .map_err(|e| bad(format!("symbol {} `{name}`: {e}", index.0)))?
                .map(|s| s.0);
            if let Some(s) = section
                && s >= sections.len()
            {
                return Err(bad(format!(
                    "symbol {} `{name}`: section index {s} out of range",
                    index.0
                )));
            }
            syms.push(RawSym {
                index: index.0,
                name,
                value: sym.st_value(endian),
                size: sym.st_size(endian),
                bind: sym.st_bind(),
                typ: sym.st_type(),
                shndx: sym.st_shndx(endian),
                section,
            });
        }
        Ok(Image {
            endian,
            data,
            e_type: header.e_type(endian),
            e_machine: header.e_machine(endian),
            sections,
            syms,
        })
    }

    pub(super) fn shdr(&self, index: usize) -> &'d Shdr64 {
        // In range: checked in `parse`.
        &self.sections.iter().as_slice()[index]
    }

    pub(super) fn section_name(&self, index: usize) -> &'d [u8] {
        self.sections
            .section_name(self.endian, self.shdr(index))
            .unwrap_or(b"")
    }

    /// The first section with that name (like the module loader's `find_sec()`).
    pub(super) fn find_section(&self, name: &[u8]) -> Option<usize> {
        (1..self.sections.len()).find(|&i| self.section_name(i) == name)
    }

    /// The NUL-separated strings of `.modinfo`.
    pub(super) fn modinfo(&self) -> Vec<&'d [u8]> {
        let Some(i) = self.find_section(b".modinfo") else {
            return Vec::new();
        };
        let data = self
            .shdr(i)
            .data(self.endian, self.data)
            .unwrap_or_default();
        data.split(|&b| b == 0).filter(|s| !s.is_empty()).collect()
    }

    /// The NUL-terminated string at a symbol's location, if it can be read.
    pub(super) fn string_at(&self, sym: &RawSym<'_>) -> Option<&'d [u8]> {
        let shdr = self.shdr(sym.section?);
        let data = shdr.data(self.endian, self.data).ok()?;
        let base = if self.e_type == elf::ET_REL {
            0
        } else {
            shdr.sh_addr(self.endian)
        };
        let off = usize::try_from(sym.value.checked_sub(base)?).ok()?;
        let rest = data.get(off..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..end])
    }
}
