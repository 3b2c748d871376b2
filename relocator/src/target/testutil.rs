//! Small ELF objects for the target tests, built with `object`'s writer.

use super::{TargetKind, TargetSymbols};
use object::elf;
use object::write::{self, Object};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind as OKind,
    SymbolScope,
};

/// A small ELF64 x86_64 object under construction.
pub(crate) struct Elf {
    obj: Object<'static>,
}

/// Where a test symbol lives.
pub(crate) enum At {
    Sec(write::SectionId),
    Abs,
    File,
}

impl Elf {
    pub(crate) fn new() -> Self {
        Elf {
            obj: Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little),
        }
    }

    pub(crate) fn section(
        &mut self,
        name: &str,
        kind: SectionKind,
        data: &[u8],
    ) -> write::SectionId {
        let id = self
            .obj
            .add_section(Vec::new(), name.as_bytes().to_vec(), kind);
        if kind == SectionKind::UninitializedData {
            self.obj.append_section_bss(id, data.len() as u64, 1);
        } else {
            self.obj.append_section_data(id, data, 1);
        }
        id
    }

    pub(crate) fn file(&mut self, name: &str) {
        self.add(
            name,
            At::File,
            0,
            OKind::File,
            SymbolScope::Compilation,
            false,
        );
    }

    pub(crate) fn local(&mut self, name: &str, at: At, value: u64, kind: OKind) {
        self.add(name, at, value, kind, SymbolScope::Compilation, false);
    }

    pub(crate) fn global(&mut self, name: &str, at: At, value: u64, kind: OKind) {
        self.add(name, at, value, kind, SymbolScope::Dynamic, false);
    }

    pub(crate) fn weak(&mut self, name: &str, at: At, value: u64, kind: OKind) {
        self.add(name, at, value, kind, SymbolScope::Dynamic, true);
    }

    fn add(&mut self, name: &str, at: At, value: u64, kind: OKind, scope: SymbolScope, weak: bool) {
        let section = match at {
            At::Sec(s) => write::SymbolSection::Section(s),
            At::Abs => write::SymbolSection::Absolute,
            At::File => write::SymbolSection::None,
        };
        self.obj.add_symbol(write::Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size: 8,
            kind,
            scope,
            weak,
            section,
            flags: SymbolFlags::None,
        });
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.obj.write().unwrap()
    }
}

/// Two `a.c` groups, each with a local `count` (address order opposite to
/// symtab order), a `b.c` group, a global, a weak and some symbols
/// kallsyms drops.
pub(crate) fn sample() -> Vec<u8> {
    let mut e = Elf::new();
    let text = e.section(".text", SectionKind::Text, &[0; 0x400]);
    let data = e.section(".data", SectionKind::Data, &[0; 0x200]);
    let debug = e.section(".debug_info", SectionKind::Debug, &[0; 0x10]);
    e.file("a.c");
    e.local("count", At::Sec(data), 0x100, OKind::Data);
    e.local("helper_a", At::Sec(text), 0x10, OKind::Text);
    e.local(".Lstray", At::Sec(text), 0x18, OKind::Label);
    e.local("__kstrtab_do_thing", At::Sec(data), 0x1f0, OKind::Data);
    e.local("dbg", At::Sec(debug), 0, OKind::Data);
    e.file("b.c");
    e.local("tmp", At::Sec(data), 0x8, OKind::Data);
    e.local("dup_local", At::Sec(text), 0x90, OKind::Text);
    e.local("dup_local", At::Sec(text), 0xa0, OKind::Text);
    e.file("a.c");
    e.local("count", At::Sec(data), 0x10, OKind::Data);
    e.local("helper_b", At::Sec(text), 0x40, OKind::Text);
    e.local("abs_local", At::Abs, 0x1234, OKind::Label);
    e.global("do_thing", At::Sec(text), 0x200, OKind::Text);
    e.weak("weak_fn", At::Sec(text), 0x300, OKind::Text);
    e.global("__crc_do_thing", At::Sec(data), 0x1f8, OKind::Data);
    e.global("abs_global", At::Abs, 0x5678, OKind::Label);
    e.global("dup_global", At::Sec(text), 0x380, OKind::Text);
    e.weak("dup_global", At::Sec(data), 0x180, OKind::Data);
    e.bytes()
}

/// Marks a test object as an executable, like vmlinux.
pub(crate) fn as_exec(data: &[u8]) -> Vec<u8> {
    let mut data = data.to_vec();
    data[16..18].copy_from_slice(&elf::ET_EXEC.0.to_le_bytes());
    data
}

pub(crate) fn load(kind: TargetKind, data: &[u8]) -> TargetSymbols {
    if kind == TargetKind::Vmlinux {
        TargetSymbols::from_elf("vmlinux", kind, &as_exec(data)).unwrap()
    } else {
        TargetSymbols::from_elf("sample_mod", kind, data).unwrap()
    }
}

pub(crate) fn names(t: &TargetSymbols) -> Vec<&str> {
    t.symbols().iter().map(|s| s.name.as_str()).collect()
}
