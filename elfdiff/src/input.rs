//! One relocatable object, read into `object`'s ELF builder, with the indexes
//! the differ needs: relocations per section, symbols per section, names.

use crate::Error;
use object::build::elf::{Builder, Relocation, Section, SectionData, Symbol};
use object::build::{ByteString, Id};
use object::elf;
use std::collections::HashMap;

/// A section of an [`Input`], by its index in the builder's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SectionId(pub usize);

/// A symbol of an [`Input`], by its index in the builder's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub usize);

impl SectionId {
    /// The differ's id of a builder section id.
    pub fn of(id: object::build::elf::SectionId) -> Self {
        SectionId(id.index())
    }
}

impl SymbolId {
    /// The differ's id of a builder symbol id.
    pub fn of(id: object::build::elf::SymbolId) -> Self {
        SymbolId(id.index())
    }
}

/// A parsed x86_64 relocatable object.
pub struct Input<'d> {
    /// The object as the builder holds it.
    pub b: Builder<'d>,
    /// Which file this is, for messages.
    pub label: String,
    /// RELA section of each section that has one.
    rela: HashMap<SectionId, SectionId>,
    /// Defined, non-section symbols of each section, by address.
    in_section: HashMap<SectionId, Vec<SymbolId>>,
    /// The section symbol of each section.
    section_symbol: HashMap<SectionId, SymbolId>,
    /// Symbols by name (first one wins; names of defined symbols are unique
    /// in an object except for section and file symbols).
    by_name: HashMap<String, SymbolId>,
    /// The source file named by the first `STT_FILE` symbol.
    pub file_name: Option<String>,
    /// The `STT_FILE` group of each local symbol, when the object has
    /// several (`ld -r` of several units): the file's name, with `#N` after
    /// the N-th (from 1) repeat of a name.
    file_group: HashMap<SymbolId, String>,
    /// Builder ids by index.
    sec_ids: Vec<object::build::elf::SectionId>,
    sym_ids: Vec<object::build::elf::SymbolId>,
}

/// What a symbol is, for the differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymKind {
    /// A function defined here.
    Func,
    /// A data object defined here.
    Object,
    /// A section symbol.
    Section,
    /// The `STT_FILE` symbol.
    File,
    /// Not defined here.
    Undefined,
    /// Anything else defined here (`STT_NOTYPE` labels and such).
    Other,
}

impl<'d> Input<'d> {
    /// Reads and validates an ELF64 x86_64 relocatable object.
    pub fn parse(label: &str, data: &'d [u8]) -> Result<Self, Error> {
        let b = read_builder(label, data)?;
        let mut input = Input {
            b,
            label: label.to_string(),
            rela: HashMap::new(),
            in_section: HashMap::new(),
            section_symbol: HashMap::new(),
            by_name: HashMap::new(),
            file_name: None,
            file_group: HashMap::new(),
            sec_ids: Vec::new(),
            sym_ids: Vec::new(),
        };
        input.index_builder_ids();
        input.index_relocation_sections()?;
        input.index_symbols()?;
        input.check_relocations()?;
        Ok(input)
    }

    /// An error about this input.
    fn bad(&self, why: String) -> Error {
        bad_input(&self.label, why)
    }

    /// Fills the tables from the differ's indexes to the builder's ids.
    fn index_builder_ids(&mut self) {
        for section in self.b.sections.iter() {
            let i = section.id().index();
            if self.sec_ids.len() <= i {
                self.sec_ids.resize(i + 1, section.id());
            }
            self.sec_ids[i] = section.id();
        }
        for symbol in self.b.symbols.iter() {
            let i = symbol.id().index();
            if self.sym_ids.len() <= i {
                self.sym_ids.resize(i + 1, symbol.id());
            }
            self.sym_ids[i] = symbol.id();
        }
    }

    /// Finds the RELA section of each section; refuses REL sections and RELA
    /// sections that apply to nothing.
    fn index_relocation_sections(&mut self) -> Result<(), Error> {
        for section in self.b.sections.iter() {
            if section.sh_type == elf::SHT_RELA {
                let Some(target) = section.sh_info_section else {
                    return Err(self.bad(format!(
                        "relocation section {} applies to no section",
                        String::from_utf8_lossy(&section.name)
                    )));
                };
                self.rela
                    .insert(SectionId::of(target), SectionId::of(section.id()));
            } else if section.sh_type == elf::SHT_REL {
                return Err(self.bad("SHT_REL relocations are not used on x86_64".into()));
            }
        }
        Ok(())
    }

    /// Indexes symbols by section (sorted by address), section symbols and
    /// names, and notes the source file; refuses section symbols without a
    /// section and symbols outside their section.
    fn index_symbols(&mut self) -> Result<(), Error> {
        let mut groups: HashMap<String, usize> = HashMap::new();
        let mut group: Option<String> = None;
        for symbol in self.b.symbols.iter() {
            let name = String::from_utf8_lossy(&symbol.name).into_owned();
            if symbol.st_type() == elf::STT_FILE {
                if self.file_name.is_none() {
                    self.file_name = Some(name.clone());
                }
                let seen = groups.entry(name.clone()).or_insert(0);
                group = Some(match *seen {
                    0 => name,
                    n => format!("{name}#{n}"),
                });
                *seen += 1;
                continue;
            }
            let id = SymbolId::of(symbol.id());
            if let Some(g) = &group
                && symbol.st_bind() == elf::STB_LOCAL
            {
                self.file_group.insert(id, g.clone());
            }
            if symbol.st_type() == elf::STT_SECTION && symbol.section.is_none() {
                return Err(self.bad(format!(
                    "a section symbol (STT_SECTION) has no section (st_shndx {:#x})",
                    symbol.st_shndx
                )));
            }
            if let Some(section) = symbol.section.map(SectionId::of) {
                if symbol.st_type() == elf::STT_SECTION {
                    self.section_symbol.insert(section, id);
                    continue;
                }
                let size = self.section_size(section);
                if symbol.st_value > size || symbol.st_size > size - symbol.st_value {
                    return Err(self.bad(format!("symbol {name} lies outside its section")));
                }
                self.in_section.entry(section).or_default().push(id);
            }
            if !name.is_empty() {
                self.by_name.entry(name).or_insert(id);
            }
        }
        if groups.values().sum::<usize>() < 2 {
            // One unit: every local is in the one group.
            self.file_group.clear();
        }
        for symbols in self.in_section.values_mut() {
            symbols.sort_by_key(|id| (self.b.symbols.get(self.sym_ids[id.0]).st_value, id.0));
        }
        Ok(())
    }

    /// Every relocation must name a symbol and stay inside its section.
    fn check_relocations(&self) -> Result<(), Error> {
        // In file order, so an input with several bad relocations always
        // names the same one.
        let mut targets: Vec<SectionId> = self.rela.keys().copied().collect();
        targets.sort_unstable();
        for target in targets {
            let size = self.section_size(target);
            for r in self.relocs(target) {
                if r.symbol.is_none() {
                    return Err(self.bad(format!(
                        "relocation at {}+{:#x} has no symbol",
                        self.section_name(target),
                        r.r_offset
                    )));
                }
                if r.r_offset
                    .checked_add(reloc_width(r.r_type).unwrap_or(0) as u64)
                    .is_none_or(|end| end > size)
                {
                    return Err(self.bad(format!(
                        "relocation at {}+{:#x} lies outside the section",
                        self.section_name(target),
                        r.r_offset
                    )));
                }
            }
        }
        Ok(())
    }

    /// A section.
    pub fn section(&self, id: SectionId) -> &Section<'d> {
        self.b.sections.get(self.sec_ids[id.0])
    }

    /// Every section, in file order.
    pub fn sections(&self) -> impl Iterator<Item = SectionId> + '_ {
        self.b.sections.iter().map(|s| SectionId::of(s.id()))
    }

    /// Every symbol, in file order.
    pub fn symbols(&self) -> impl Iterator<Item = SymbolId> + '_ {
        self.b.symbols.iter().map(|s| SymbolId::of(s.id()))
    }

    /// The section a symbol is defined in.
    pub fn sym_section(&self, id: SymbolId) -> Option<SectionId> {
        self.sym(id).section.map(SectionId::of)
    }

    /// The symbol a relocation references (validated on parse).
    pub fn reloc_sym(&self, r: &Relocation) -> SymbolId {
        SymbolId::of(
            r.symbol
                .expect("relocations without symbol are rejected on parse"),
        )
    }

    /// The builder id of a section.
    pub fn builder_section(&self, id: SectionId) -> object::build::elf::SectionId {
        self.sec_ids[id.0]
    }

    /// The builder id of a symbol.
    pub fn builder_symbol(&self, id: SymbolId) -> object::build::elf::SymbolId {
        self.sym_ids[id.0]
    }

    /// A section's name.
    pub fn section_name(&self, id: SectionId) -> String {
        String::from_utf8_lossy(&self.section(id).name).into_owned()
    }

    /// A section's contents (empty for NOBITS).
    pub fn data(&self, id: SectionId) -> &[u8] {
        match &self.section(id).data {
            SectionData::Data(bytes) => bytes,
            _ => &[],
        }
    }

    /// A section's size in memory.
    pub fn section_size(&self, id: SectionId) -> u64 {
        match &self.section(id).data {
            SectionData::Data(bytes) => bytes.len() as u64,
            SectionData::UninitializedData(n) => *n,
            _ => self.section(id).sh_size,
        }
    }

    /// Relocations applying to a section, in file order.
    pub fn relocs(&self, id: SectionId) -> &[Relocation] {
        match self.rela.get(&id).map(|r| &self.section(*r).data) {
            Some(SectionData::Relocation(relocs)) => relocs,
            _ => &[],
        }
    }

    /// The RELA section of a section.
    pub fn rela_of(&self, id: SectionId) -> Option<SectionId> {
        // (kept for extraction)
        self.rela.get(&id).copied()
    }

    /// A symbol.
    pub fn sym(&self, id: SymbolId) -> &Symbol<'d> {
        self.b.symbols.get(self.sym_ids[id.0])
    }

    /// A symbol's name.
    pub fn sym_name(&self, id: SymbolId) -> String {
        String::from_utf8_lossy(&self.sym(id).name).into_owned()
    }

    /// What a symbol is.
    pub fn kind(&self, id: SymbolId) -> SymKind {
        let s = self.sym(id);
        if s.st_type() == elf::STT_SECTION {
            return SymKind::Section;
        }
        if s.st_type() == elf::STT_FILE {
            return SymKind::File;
        }
        if s.section.is_none() {
            return if s.st_shndx == elf::SHN_ABS {
                SymKind::Other
            } else {
                SymKind::Undefined
            };
        }
        match s.st_type() {
            elf::STT_FUNC => SymKind::Func,
            elf::STT_OBJECT | elf::STT_TLS => SymKind::Object,
            _ => SymKind::Other,
        }
    }

    /// For a section symbol, or a local assembler label (`.L…`) that stands
    /// for a place in a section: the section and the offset the symbol adds.
    pub fn section_relative(&self, id: SymbolId) -> Option<(SectionId, i64)> {
        let s = self.sym(id);
        let section = self.sym_section(id)?;
        match self.kind(id) {
            SymKind::Section => Some((section, 0)),
            SymKind::Other if self.is_local(id) && s.name.starts_with(b".L") => {
                Some((section, s.st_value as i64))
            }
            _ => None,
        }
    }

    /// Whether a symbol has local binding.
    pub fn is_local(&self, id: SymbolId) -> bool {
        self.sym(id).st_bind() == elf::STB_LOCAL
    }

    /// Defined non-section symbols of a section, by address.
    pub fn symbols_in(&self, id: SectionId) -> &[SymbolId] {
        self.in_section.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The section symbol of a section.
    pub fn section_symbol(&self, id: SectionId) -> Option<SymbolId> {
        self.section_symbol.get(&id).copied()
    }

    /// The `STT_FILE` group of a local symbol in an object of several units
    /// (`None` for globals and in an object of one unit): two locals of one
    /// name in two groups are different things.
    pub fn file_group(&self, id: SymbolId) -> Option<&str> {
        self.file_group.get(&id).map(String::as_str)
    }

    /// A symbol by name.
    pub fn by_name(&self, name: &str) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    /// The function or object symbol covering `offset` of `section`
    /// (a sized symbol containing it, or an unsized one starting there).
    pub fn covering(&self, section: SectionId, offset: i64) -> Option<SymbolId> {
        if offset < 0 {
            return None;
        }
        let offset = offset as u64;
        let mut best = None;
        for &id in self.symbols_in(section) {
            let s = self.sym(id);
            if !matches!(self.kind(id), SymKind::Func | SymKind::Object) {
                continue;
            }
            let hit = if s.st_size == 0 {
                s.st_value == offset
            } else {
                s.st_value <= offset && offset < s.st_value + s.st_size
            };
            if hit {
                best = Some(id);
                if !self.sym_name(id).starts_with("__pfx_") {
                    break;
                }
            }
        }
        best
    }

    /// The bytes of a symbol (its range in its section).
    pub fn sym_bytes(&self, id: SymbolId) -> &[u8] {
        let s = self.sym(id);
        let Some(section) = s.section.map(SectionId::of) else {
            return &[];
        };
        let data = self.data(section);
        let start = (s.st_value as usize).min(data.len());
        let end = ((s.st_value + s.st_size) as usize).min(data.len());
        &data[start..end]
    }

    /// Relocations inside a symbol's range.
    pub fn sym_relocs(&self, id: SymbolId) -> impl Iterator<Item = &Relocation> {
        let s = self.sym(id);
        let (start, end) = (s.st_value, s.st_value.saturating_add(s.st_size));
        s.section
            .map(|sec| self.relocs(SectionId::of(sec)))
            .unwrap_or(&[])
            .iter()
            .filter(move |r| r.r_offset >= start && r.r_offset < end)
    }

    /// Takes the builder out (for extraction).
    pub fn into_builder(self) -> Builder<'d> {
        self.b
    }
}

/// An error about the input `label`.
fn bad_input(label: &str, why: String) -> Error {
    Error::BadInput {
        file: label.to_string(),
        why,
    }
}

/// Reads an object into the builder after checking what the differ relies
/// on: an ELF64 x86_64 relocatable object, UTF-8 names, and section
/// alignments the writer can honour (0 becomes 1).
fn read_builder<'d>(label: &str, data: &'d [u8]) -> Result<Builder<'d>, Error> {
    let bad = |why: String| bad_input(label, why);
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file".into()));
    }
    if data[4] != 2 {
        return Err(bad("not a 64-bit ELF file".into()));
    }
    let mut b = Builder::read64(data).map_err(|e| bad(format!("malformed ELF: {e}")))?;
    if b.header.e_machine != elf::EM_X86_64 {
        return Err(bad(format!(
            "machine {:?} is not x86_64",
            b.header.e_machine
        )));
    }
    if b.header.e_type != elf::ET_REL {
        return Err(bad("not a relocatable object (ET_REL)".into()));
    }
    // Names are compared and written back as text: lossy decoding would
    // merge distinct names and the output would carry names no tool reads.
    for (what, name) in b
        .sections
        .iter()
        .map(|s| ("section", &s.name))
        .chain(b.symbols.iter().map(|s| ("symbol", &s.name)))
    {
        if std::str::from_utf8(name).is_err() {
            return Err(bad(format!(
                "{what} name {:?} is not UTF-8",
                String::from_utf8_lossy(name)
            )));
        }
    }
    // 0 means no alignment; the writer needs a power of two, and pads
    // the output to it (kernel objects align to a page at most).
    for section in b.sections.iter_mut() {
        if section.sh_addralign == 0 {
            section.sh_addralign = 1;
        } else if !section.sh_addralign.is_power_of_two() || section.sh_addralign > 1 << 21 {
            return Err(bad(format!(
                "section {} has alignment {}, not a power of two up to 2 MiB",
                String::from_utf8_lossy(&section.name),
                section.sh_addralign
            )));
        }
    }
    Ok(b)
}

/// `SHT_LLVM_ADDRSIG` and the other section types LLVM reserves
/// (`SHT_LOOS + 0xfff4c00` …): metadata for the linker, never loaded.
const SHT_LLVM_FIRST: u32 = 0x6fff_4c00;
/// The last section type of LLVM's range.
const SHT_LLVM_LAST: u32 = 0x6fff_4cff;

/// The object as [`Input::parse`] can read it: sections of a type the ELF
/// builder does not know but the differ may ignore (clang's
/// `SHT_LLVM_ADDRSIG` `.llvm_addrsig`, and LLVM's other non-allocated
/// metadata types) are read as `SHT_PROGBITS`: ignored by name and flags,
/// and dropped from the output (the address-significance table lists
/// symbol indices the output renumbers). Anything else is returned as is.
pub fn readable(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use object::read::elf::{FileHeader, SectionHeader};
    let llvm = |s: &elf::SectionHeader64<object::Endianness>, e| {
        (SHT_LLVM_FIRST..=SHT_LLVM_LAST).contains(&s.sh_type(e).0)
            && s.sh_flags(e).0 & elf::SHF_ALLOC.0 == 0
    };
    let Ok(header) = elf::FileHeader64::<object::Endianness>::parse(data) else {
        return data.into();
    };
    let Ok(endian) = header.endian() else {
        return data.into();
    };
    let Ok(sections) = header.section_headers(endian, data) else {
        return data.into();
    };
    if !sections.iter().any(|s| llvm(s, endian)) {
        return data.into();
    }
    let mut copy = data.to_vec();
    let base = header.e_shoff(endian) as usize;
    let size = std::mem::size_of::<elf::SectionHeader64<object::Endianness>>();
    for (i, s) in sections.iter().enumerate() {
        if llvm(s, endian) {
            // sh_type is the second u32 of a section header.
            let at = base + i * size + 4;
            let bytes = match endian {
                object::Endianness::Little => elf::SHT_PROGBITS.0.to_le_bytes(),
                object::Endianness::Big => elf::SHT_PROGBITS.0.to_be_bytes(),
            };
            copy[at..at + 4].copy_from_slice(&bytes);
        }
    }
    copy.into()
}

/// Width in bytes of the field an x86_64 relocation type patches.
pub fn reloc_width(r_type: elf::RelocationType) -> Option<usize> {
    Some(match r_type.0 {
        x if x == elf::R_X86_64_64.0 || x == elf::R_X86_64_PC64.0 => 8,
        x if x == elf::R_X86_64_PC32.0
            || x == elf::R_X86_64_PLT32.0
            || x == elf::R_X86_64_32.0
            || x == elf::R_X86_64_32S.0
            || x == elf::R_X86_64_GOTPCREL.0
            || x == elf::R_X86_64_GOTPCRELX.0
            || x == elf::R_X86_64_REX_GOTPCRELX.0 =>
        {
            4
        }
        x if x == elf::R_X86_64_16.0 || x == elf::R_X86_64_PC16.0 => 2,
        x if x == elf::R_X86_64_8.0 || x == elf::R_X86_64_PC8.0 => 1,
        x if x == elf::R_X86_64_NONE.0 => 0,
        _ => return None,
    })
}

/// Whether a relocation type is PC-relative.
pub fn is_pc_relative(r_type: elf::RelocationType) -> bool {
    [
        elf::R_X86_64_PC32,
        elf::R_X86_64_PLT32,
        elf::R_X86_64_PC64,
        elf::R_X86_64_PC16,
        elf::R_X86_64_PC8,
        elf::R_X86_64_GOTPCREL,
        elf::R_X86_64_GOTPCRELX,
        elf::R_X86_64_REX_GOTPCRELX,
    ]
    .contains(&r_type)
}

/// A name as a builder byte string.
pub fn bytes_name(name: &str) -> ByteString<'static> {
    ByteString::from(name.as_bytes().to_vec())
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use object::write::{Object, Relocation, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind};

    /// Two functions, each with a relocation past the end of its section.
    fn two_bad_relocations() -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let ext = obj.add_symbol(Symbol {
            name: b"ext".to_vec(),
            value: 0,
            size: 0,
            kind: object::SymbolKind::Text,
            scope: object::SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Undefined,
            flags: object::SymbolFlags::None,
        });
        for name in [".text.a", ".text.b", ".text.c", ".text.d"] {
            let s = obj.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Text);
            obj.append_section_data(s, &[0xc3; 4], 16);
            obj.add_relocation(
                s,
                Relocation {
                    offset: 64,
                    symbol: ext,
                    addend: -4,
                    flags: RelocationFlags::Elf {
                        r_type: object::elf::R_X86_64_PC32,
                    },
                },
            )
            .unwrap();
        }
        obj.write().unwrap()
    }

    #[test]
    fn several_bad_relocations_name_the_first_in_file_order() {
        let data = two_bad_relocations();
        for _ in 0..16 {
            let Err(e) = Input::parse("x.o", &data) else {
                panic!("relocations past their section's end were accepted");
            };
            let e = e.to_string();
            assert!(
                e.contains("relocation at .text.a+0x40 lies outside the section"),
                "{e}"
            );
        }
    }
}
