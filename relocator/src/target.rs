//! The kallsyms view of a livepatch target (vmlinux or a module) and the
//! `sympos` the livepatch core expects in `.klp.sym.OBJ.SYMBOL,POS`.
//!
//! Everything here follows Linux 6.12 (paths relative to the kernel tree):
//!
//! # How the livepatch core finds `SYMBOL,POS`
//!
//! `klp_find_object_symbol()` (kernel/livepatch/core.c:162) walks the
//! same-named symbols of the object and `klp_match_callback()` (core.c:134)
//! counts them: it stops at the `POS`-th match (1-based) when `POS > 0`; with
//! `POS == 0` it fails with "unresolvable ambiguity" when a second match
//! exists (core.c:183). A unique symbol therefore gets position 0, and the
//! n-th of several same-named symbols gets n. (module-elf-format.rst §4.2
//! only says "0 for a unique symbol".) A match at address 0 is reported as
//! "not found" (core.c:181).
//!
//! # vmlinux
//!
//! For vmlinux the walk is `kallsyms_on_each_match_symbol()`
//! (kernel/kallsyms.c:271): `kallsyms_lookup_names()` (kallsyms.c:176)
//! binary-searches `kallsyms_seqs_of_names`, the table sorted by
//! `compare_names()` (scripts/kallsyms.c:327: name, then address, then
//! kallsyms index, which `write_src()` resets to the final index at
//! scripts/kallsyms.c:384), and visits the whole run of equal names in that
//! order. So same-named vmlinux symbols are counted by address, ties broken
//! by their kallsyms index.
//!
//! Which symbols are in kallsyms: scripts/link-vmlinux.sh:181-184 runs
//! `nm -n vmlinux | sed -f scripts/mksysmap` and feeds the result to
//! `scripts/kallsyms --all-symbols --absolute-percpu` (link-vmlinux.sh:149-160;
//! `--all-symbols` needs `CONFIG_KALLSYMS_ALL=y`, assumed; `--absolute-percpu`
//! is `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`, default `X86_64 && SMP`). The same
//! filtered list becomes System.map (link-vmlinux.sh:300, checked at 312).
//! So a vmlinux `.symtab` symbol is kallsyms-visible when:
//!
//! * `nm` prints it: not the null symbol, not `STT_SECTION` / `STT_FILE`
//!   (BFD marks those `BSF_DEBUGGING`, hidden without `nm -a`);
//! * its `nm` type letter is not `a`, `N`, `U` or `w` (scripts/mksysmap:22),
//!   not `u` or `n`, and not `A` unless it is one of four ia64 names
//!   (`is_ignored_symbol()`, scripts/kallsyms.c:85);
//! * its name is not dropped by scripts/mksysmap:29-88: prefixes `$`, `.L`,
//!   `__efistub_`, `__pi_$`, `__pi_.L`, `__kvm_nvhe_$`, `__kvm_nvhe_.L`,
//!   `__<alnum>*Thunk_`, `__kcfi_typeid_`, `__kvm_nvhe___kcfi_typeid_`,
//!   `__pi___kcfi_typeid_`, `__crc_`, `__kstrtab_`, `__kstrtabns_`; suffixes
//!   `_from_arm`, `_from_thumb`, `_veneer`; exact `L0`, `_SDA_BASE_`,
//!   `_SDA2_BASE_`; containing `.long_branch.` or `.plt_branch.`. Note that
//!   `__ksymtab_NAME` symbols are *not* dropped in 6.12;
//! * its name is shorter than `KSYM_NAME_LEN` (512, scripts/kallsyms.c:152).
//!
//! With `--all-symbols`, `symbol_valid()` (scripts/kallsyms.c:204) keeps all of
//! them, data and init symbols included.
//!
//! The kallsyms index order is `compare_symbols()` (scripts/kallsyms.c:689):
//! address, then non-weak (type `w`/`W`) before weak, then "not linker-script
//! provided" before provided (`may_be_linker_script_provide_symbol()`, :655),
//! then fewer leading underscores first, then input order, which is `nm -n`
//! order (undefined first, then address, then name with `LC_COLLATE=C`,
//! Makefile:53). With `--absolute-percpu` the type of symbols in
//! `[__per_cpu_start, __per_cpu_end]` is overwritten with `A` before sorting
//! (`make_percpus_absolute()`, scripts/kallsyms.c:728), so they never count
//! as weak. [`SymbolId`]s of a vmlinux target are exactly kallsyms indexes.
//!
//! # Modules
//!
//! For a module the walk is `module_kallsyms_on_each_symbol()`
//! (kernel/module/kallsyms.c:477): the module's kallsyms symtab in order,
//! skipping `SHN_UNDEF`, with `klp_find_callback()` comparing names. Which
//! symtab that is depends on when the relocation is resolved:
//!
//! * after the module's init finished (the patch is loaded after the module),
//!   `mod->core_kallsyms` (kernel/module/main.c:2791): symbol 0 plus the
//!   symbols `is_core_symbol()` keeps (kernel/module/kallsyms.c:78, applied in
//!   `add_kallsyms()` :205): defined, `st_shndx < e_shnum` (so no `SHN_ABS`),
//!   named, and either in `.data..percpu` (with `CONFIG_KALLSYMS_ALL`) or in an
//!   `SHF_ALLOC` section that is not init. The loader clears `SHF_ALLOC` of
//!   `.modinfo` and `__versions` (main.c:2229-2230) and of `.data..percpu`
//!   (main.c:2598); init sections are those named `.init*`
//!   (`module_init_section()`, main.c:1679; `.exit*` are core with
//!   `CONFIG_MODULE_UNLOAD=y`, assumed, main.c:1561). For a livepatch module
//!   everything is kept.
//! * while the module is coming (the module is loaded after the patch:
//!   `klp_module_coming()`, kernel/livepatch/core.c:1234, runs before
//!   `do_init_module()`), `mod->kallsyms` still is the full ELF symtab
//!   (`add_kallsyms()` :187), so init and non-allocated symbols count too.
//!
//! The kallsyms-visible symbols of a module are its core symbols in symtab
//! order; a position is only handed out when it is the same in both states
//! (see [`TargetSymbols::checked_position`]).
//!
//! # `STT_FILE` groups
//!
//! In a linked vmlinux or `.ko` the local symbols of each input object follow
//! its `STT_FILE` symbol; a group runs until the next `STT_FILE` symbol or the
//! first non-local symbol. Several groups can share a name.

use crate::Error;
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{Endianness, SymbolIndex};
use std::collections::{HashMap, HashSet};

type Elf64 = elf::FileHeader64<Endianness>;
type Shdr64 = elf::SectionHeader64<Endianness>;

/// `KSYM_NAME_LEN` (include/linux/kallsyms.h, scripts/kallsyms.c:34).
const KSYM_NAME_LEN: usize = 512;

/// How many symbols an error message lists per candidate group.
const SHOWN_PER_GROUP: usize = 3;

/// Which kind of object a target is: decides the kallsyms order used for positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// The kernel image: kallsyms order (by address).
    Vmlinux,
    /// A module `.ko`: its symbol table order.
    Module,
}

/// Index of a kallsyms-visible symbol of one target (for vmlinux: its kallsyms index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

/// Index of an `STT_FILE` group of one target, in symbol table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileGroupId(pub u32);

/// What a target symbol is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolKind {
    /// `STT_FUNC` (or `STT_GNU_IFUNC`).
    Func,
    /// `STT_OBJECT`, `STT_COMMON` or `STT_TLS`.
    Object,
    /// Anything else (`STT_NOTYPE` labels, linker-script symbols).
    Other,
}

/// One kallsyms-visible symbol of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSymbol {
    /// The symbol name.
    pub name: String,
    /// `st_value`: the address in vmlinux, the section offset in a `.ko`.
    pub address: u64,
    /// `st_size`.
    pub size: u64,
    /// Function, object or other.
    pub kind: SymbolKind,
    /// Whether the binding is `STB_LOCAL`.
    pub local: bool,
    /// The `STT_FILE` group holding this local symbol, if any.
    pub file: Option<FileGroupId>,
}

/// One `STT_FILE` group.
#[derive(Debug)]
struct FileGroup {
    /// The `STT_FILE` symbol's name.
    name: String,
    /// The symtab index of the `STT_FILE` symbol.
    elf_index: usize,
    /// Every named local symbol of the group (visible or not), in symtab order.
    members: Vec<Member>,
}

/// A local symbol inside an `STT_FILE` group.
#[derive(Debug)]
struct Member {
    /// Its name.
    name: String,
    /// Its symtab index.
    elf_index: usize,
    /// Its id, when kallsyms-visible.
    id: Option<SymbolId>,
}

/// Index over one target's symbol table (vmlinux or a module .ko), built once and shared.
#[derive(Debug)]
pub struct TargetSymbols {
    objname: String,
    kind: TargetKind,
    /// Kallsyms-visible symbols, in kallsyms order.
    symbols: Vec<TargetSymbol>,
    /// Symtab index of each visible symbol.
    elf_index: Vec<usize>,
    /// Position of each visible symbol (see [`TargetSymbols::position`]).
    positions: Vec<u32>,
    /// For modules: the positions in the two load states, when they differ.
    unstable: HashMap<SymbolId, (u32, u32)>,
    /// Visible symbols by name, in kallsyms order.
    by_name: HashMap<String, Vec<SymbolId>>,
    groups: Vec<FileGroup>,
    groups_by_name: HashMap<String, Vec<FileGroupId>>,
    /// A module without `STT_FILE` symbols: one group holds all its locals.
    whole_module: bool,
}

/// The name of the one group of a module without `STT_FILE` symbols.
const WHOLE_MODULE: &str = "(whole module: no STT_FILE symbols)";

/// One ELF symbol as read, with what the filters need.
struct RawSym<'d> {
    index: usize,
    name: &'d str,
    value: u64,
    size: u64,
    bind: elf::SymbolBind,
    typ: elf::SymbolType,
    /// The raw `st_shndx`.
    shndx: elf::SymbolSection,
    /// The section header (extended indexes resolved), for section-defined symbols.
    section: Option<usize>,
}

/// A parsed ELF64 image: header facts, sections and symbols.
struct Image<'d> {
    endian: Endianness,
    data: &'d [u8],
    e_type: elf::FileType,
    e_machine: elf::Machine,
    sections: SectionTable<'d, Elf64>,
    syms: Vec<RawSym<'d>>,
}

impl<'d> Image<'d> {
    fn parse(file: &str, data: &'d [u8]) -> Result<Self, Error> {
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

    fn shdr(&self, index: usize) -> &'d Shdr64 {
        // In range: checked in `parse`.
        &self.sections.iter().as_slice()[index]
    }

    fn section_name(&self, index: usize) -> &'d [u8] {
        self.sections
            .section_name(self.endian, self.shdr(index))
            .unwrap_or(b"")
    }

    /// The first section with that name (like the module loader's `find_sec()`).
    fn find_section(&self, name: &[u8]) -> Option<usize> {
        (1..self.sections.len()).find(|&i| self.section_name(i) == name)
    }

    /// The NUL-separated strings of `.modinfo`.
    fn modinfo(&self) -> Vec<&'d [u8]> {
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
    fn string_at(&self, sym: &RawSym<'_>) -> Option<&'d [u8]> {
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

    /// The `nm` type letter of a symbol, as BFD's `bfd_decode_symclass()`
    /// computes it for ELF (binutils bfd/syms.c and bfd/elf.c).
    fn nm_letter(&self, s: &RawSym<'_>) -> u8 {
        let weak = s.bind == elf::STB_WEAK;
        let object = s.typ == elf::STT_OBJECT || s.typ == elf::STT_COMMON;
        if s.shndx == elf::SHN_COMMON {
            return b'C';
        }
        let defined = s.section.is_some() || (s.shndx.is_reserved() && s.shndx != elf::SHN_XINDEX);
        if !defined {
            return match (weak, object) {
                (true, true) => b'v',
                (true, false) => b'w',
                _ => b'U',
            };
        }
        if s.typ == elf::STT_GNU_IFUNC {
            return b'i';
        }
        if weak {
            return if object { b'V' } else { b'W' };
        }
        if s.bind == elf::STB_GNU_UNIQUE {
            return b'u';
        }
        if s.bind != elf::STB_LOCAL && s.bind != elf::STB_GLOBAL {
            return b'?';
        }
        let c = match s.section {
            None => b'a',
            Some(i) => self.section_letter(i),
        };
        if s.bind == elf::STB_GLOBAL {
            c.to_ascii_uppercase()
        } else {
            c
        }
    }

    /// BFD's `decode_section_type()` with the section flags BFD derives from
    /// the ELF header (`_bfd_elf_make_section_from_shdr()`).
    fn section_letter(&self, index: usize) -> u8 {
        let shdr = self.shdr(index);
        let flags = shdr.sh_flags(self.endian);
        let alloc = flags.contains(elf::SHF_ALLOC);
        let nobits = shdr.sh_type(self.endian) == elf::SHT_NOBITS;
        let write = flags.contains(elf::SHF_WRITE);
        if flags.contains(elf::SHF_EXECINSTR) {
            return b't';
        }
        if alloc && !nobits {
            return if write { b'd' } else { b'r' };
        }
        if nobits {
            return b'b';
        }
        let name = self.section_name(index);
        let debug = [
            &b".debug"[..],
            b".gnu.debuglto_.debug_",
            b".gnu.linkonce.wi.",
            b".zdebug",
            b".line",
            b".stab",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || name == b".gdb_index";
        if debug {
            b'N'
        } else if !write {
            b'n'
        } else {
            b'?'
        }
    }
}

/// Whether scripts/mksysmap (6.12) deletes a symbol by its name.
fn mksysmap_drops_name(name: &str) -> bool {
    const PREFIXES: [&str; 13] = [
        "$",
        ".L",
        "__efistub_",
        "__pi_$",
        "__pi_.L",
        "__kvm_nvhe_$",
        "__kvm_nvhe_.L",
        "__kcfi_typeid_",
        "__kvm_nvhe___kcfi_typeid_",
        "__pi___kcfi_typeid_",
        "__crc_",
        "__kstrtab_",
        "__kstrtabns_",
    ];
    const SUFFIXES: [&str; 3] = ["_from_arm", "_from_thumb", "_veneer"];
    const EXACT: [&str; 3] = ["L0", "_SDA_BASE_", "_SDA2_BASE_"];
    const INFIXES: [&str; 2] = [".long_branch.", ".plt_branch."];
    if PREFIXES.iter().any(|p| name.starts_with(p))
        || SUFFIXES.iter().any(|s| name.ends_with(s))
        || EXACT.contains(&name)
        || INFIXES.iter().any(|i| name.contains(i))
    {
        return true;
    }
    // `/ __[[:alnum:]]*Thunk_/d`: lld thunks.
    // "Thunk" is alphanumeric, so it must end the alphanumeric run after "__".
    name.strip_prefix("__").is_some_and(|rest| {
        let alnum = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
        rest[..alnum].ends_with("Thunk") && rest[alnum..].starts_with('_')
    })
}

/// scripts/kallsyms.c `may_be_linker_script_provide_symbol()`.
fn may_be_linker_script_provide(name: &str) -> bool {
    let b = name.as_bytes();
    if b.len() < 8 || !name.starts_with("__") {
        return false;
    }
    let rest = &name[2..];
    rest.starts_with("start_")
        || rest.starts_with("stop_")
        || rest.starts_with("end_")
        || name.ends_with("_start")
        || name.ends_with("_end")
}

fn symbol_kind(typ: elf::SymbolType) -> SymbolKind {
    if typ == elf::STT_FUNC || typ == elf::STT_GNU_IFUNC {
        SymbolKind::Func
    } else if typ == elf::STT_OBJECT || typ == elf::STT_COMMON || typ == elf::STT_TLS {
        SymbolKind::Object
    } else {
        SymbolKind::Other
    }
}

/// The vmlinux kallsyms table: symtab indexes of the kept symbols, in
/// kallsyms order.
fn vmlinux_kallsyms(img: &Image<'_>) -> Vec<usize> {
    struct Cand<'a> {
        /// Position in `img.syms`.
        at: usize,
        name: &'a str,
        addr: u64,
        letter: u8,
        defined: bool,
    }
    let mut cands = Vec::new();
    for (at, s) in img.syms.iter().enumerate() {
        if s.typ == elf::STT_SECTION || s.typ == elf::STT_FILE {
            continue;
        }
        let letter = img.nm_letter(s);
        if matches!(letter, b'a' | b'N' | b'U' | b'w') || mksysmap_drops_name(s.name) {
            continue;
        }
        if matches!(letter, b'u' | b'n')
            || (letter == b'A'
                && !matches!(
                    s.name,
                    "__kernel_syscall_via_break"
                        | "__kernel_syscall_via_epc"
                        | "__kernel_sigtramp"
                        | "__gp"
                ))
        {
            continue;
        }
        if s.name.len() >= KSYM_NAME_LEN {
            continue;
        }
        cands.push(Cand {
            at,
            name: s.name,
            addr: s.value,
            letter,
            defined: letter != b'v',
        });
    }
    // --absolute-percpu (x86_64 SMP): percpu symbols become type 'A'.
    if img.e_machine == elf::EM_X86_64 {
        let last = |n: &str| cands.iter().rev().find(|c| c.name == n).map(|c| c.addr);
        if let (Some(start), Some(end)) = (last("__per_cpu_start"), last("__per_cpu_end")) {
            for c in &mut cands {
                if c.addr >= start && c.addr <= end {
                    c.letter = b'A';
                }
            }
        }
    }
    // compare_symbols(), with the `nm -n` input order as the last key.
    cands.sort_by(|a, b| {
        let weak = |c: &Cand<'_>| matches!(c.letter, b'w' | b'W');
        let underscores = |c: &Cand<'_>| c.name.bytes().take_while(|&b| b == b'_').count();
        a.addr
            .cmp(&b.addr)
            .then_with(|| weak(a).cmp(&weak(b)))
            .then_with(|| {
                may_be_linker_script_provide(a.name).cmp(&may_be_linker_script_provide(b.name))
            })
            .then_with(|| underscores(a).cmp(&underscores(b)))
            .then_with(|| a.defined.cmp(&b.defined))
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
            .then_with(|| a.at.cmp(&b.at))
    });
    cands.into_iter().map(|c| c.at).collect()
}

/// Module kallsyms: positions (in `img.syms`) of the core symbols in symtab
/// order, and whether everything is kept (livepatch module).
fn module_core_symbols(img: &Image<'_>) -> Vec<usize> {
    let livepatch = img.modinfo().contains(&&b"livepatch=Y"[..]);
    let shnum = img.sections.len();
    let pcpu = img.find_section(b".data..percpu");
    let modinfo = img.find_section(b".modinfo");
    let versions = img.find_section(b"__versions");
    let mut kept = Vec::new();
    for (at, s) in img.syms.iter().enumerate() {
        if s.shndx == elf::SHN_UNDEF {
            continue;
        }
        if livepatch {
            kept.push(at);
            continue;
        }
        // is_core_symbol() uses the raw st_shndx.
        let raw = usize::from(s.shndx.0);
        if raw >= shnum || s.name.is_empty() {
            continue;
        }
        if Some(raw) == pcpu {
            kept.push(at);
            continue;
        }
        let flags = img.shdr(raw).sh_flags(img.endian);
        let alloc = flags.contains(elf::SHF_ALLOC) && Some(raw) != modinfo && Some(raw) != versions;
        if alloc && !img.section_name(raw).starts_with(b".init") {
            kept.push(at);
        }
    }
    kept
}

/// 0 for a unique name, else the 1-based index.
fn sympos(index: usize, count: usize) -> u32 {
    if count == 1 {
        0
    } else {
        u32::try_from(index + 1).unwrap_or(u32::MAX)
    }
}

impl TargetSymbols {
    /// Reads the symbol table of `data` (an ELF64 vmlinux or `.ko`) and indexes its
    /// kallsyms-visible symbols. `objname` is "vmlinux" or the module name as the
    /// kernel spells it (with `_`, e.g. "kobject_example").
    pub fn from_elf(objname: &str, kind: TargetKind, data: &[u8]) -> Result<Self, Error> {
        let img = Image::parse(objname, data)?;
        let expected = match kind {
            TargetKind::Vmlinux => elf::ET_EXEC,
            TargetKind::Module => elf::ET_REL,
        };
        if img.e_type != expected {
            return Err(Error::BadElf {
                file: objname.to_string(),
                why: format!(
                    "ELF type {} does not fit a {kind:?} target (expected {})",
                    img.e_type.0, expected.0
                ),
            });
        }
        let order = match kind {
            TargetKind::Vmlinux => vmlinux_kallsyms(&img),
            TargetKind::Module => module_core_symbols(&img),
        };
        if u32::try_from(order.len()).is_err() {
            return Err(Error::BadElf {
                file: objname.to_string(),
                why: "too many symbols".into(),
            });
        }
        // Id of each visible symbol, by position in `img.syms`.
        let mut id_of: Vec<Option<SymbolId>> = vec![None; img.syms.len()];
        for (id, &at) in order.iter().enumerate() {
            id_of[at] = Some(SymbolId(id as u32));
        }

        // STT_FILE groups.
        let mut groups: Vec<FileGroup> = Vec::new();
        let mut group_of: Vec<Option<FileGroupId>> = vec![None; img.syms.len()];
        let mut current: Option<FileGroupId> = None;
        for (at, s) in img.syms.iter().enumerate() {
            if s.typ == elf::STT_FILE {
                current = Some(FileGroupId(groups.len() as u32));
                groups.push(FileGroup {
                    name: s.name.to_string(),
                    elf_index: s.index,
                    members: Vec::new(),
                });
                continue;
            }
            if s.bind != elf::STB_LOCAL {
                current = None;
                continue;
            }
            let Some(g) = current else { continue };
            if s.typ == elf::STT_SECTION || s.name.is_empty() {
                continue;
            }
            group_of[at] = Some(g);
            groups[g.0 as usize].members.push(Member {
                name: s.name.to_string(),
                elf_index: s.index,
                id: id_of[at],
            });
        }
        // A module shipped with `strip --strip-debug` (Debian's) has lost
        // its STT_FILE symbols: its locals then form one group, the whole
        // module, which is what the livepatch core searches anyway.
        let whole_module = kind == TargetKind::Module && groups.is_empty();
        if whole_module {
            let mut members = Vec::new();
            for (at, s) in img.syms.iter().enumerate() {
                if s.bind != elf::STB_LOCAL || s.typ == elf::STT_SECTION || s.name.is_empty() {
                    continue;
                }
                group_of[at] = Some(FileGroupId(0));
                members.push(Member {
                    name: s.name.to_string(),
                    elf_index: s.index,
                    id: id_of[at],
                });
            }
            groups.push(FileGroup {
                name: WHOLE_MODULE.to_string(),
                elf_index: 0,
                members,
            });
        }
        let mut groups_by_name: HashMap<String, Vec<FileGroupId>> = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            groups_by_name
                .entry(g.name.clone())
                .or_default()
                .push(FileGroupId(i as u32));
        }

        let mut symbols = Vec::with_capacity(order.len());
        let mut elf_index = Vec::with_capacity(order.len());
        let mut by_name: HashMap<String, Vec<SymbolId>> = HashMap::new();
        for (id, &at) in order.iter().enumerate() {
            let s = &img.syms[at];
            symbols.push(TargetSymbol {
                name: s.name.to_string(),
                address: s.value,
                size: s.size,
                kind: symbol_kind(s.typ),
                local: s.bind == elf::STB_LOCAL,
                file: group_of[at],
            });
            elf_index.push(s.index);
            by_name
                .entry(s.name.to_string())
                .or_default()
                .push(SymbolId(id as u32));
        }
        if kind == TargetKind::Vmlinux {
            // compare_names(): same names by address, then kallsyms index.
            // Kallsyms order is by address first, so the lists already are.
            debug_assert!(by_name.values().all(|ids| {
                ids.windows(2)
                    .all(|w| symbols[w[0].0 as usize].address <= symbols[w[1].0 as usize].address)
            }));
        }

        let mut positions = vec![0u32; symbols.len()];
        let mut unstable = HashMap::new();
        match kind {
            TargetKind::Vmlinux => {
                for ids in by_name.values() {
                    for (k, id) in ids.iter().enumerate() {
                        positions[id.0 as usize] = sympos(k, ids.len());
                    }
                }
            }
            TargetKind::Module => {
                // Same-named defined symbols of the full symtab (the view while
                // the module is coming), in symtab order.
                let mut full: HashMap<&str, Vec<usize>> = HashMap::new();
                for (at, s) in img.syms.iter().enumerate() {
                    if s.shndx != elf::SHN_UNDEF && by_name.contains_key(s.name) {
                        full.entry(s.name).or_default().push(at);
                    }
                }
                for (name, all) in &full {
                    let core_count = by_name[*name].len();
                    // `k` counts core (visible) symbols seen so far, `j` all.
                    let mut k = 0;
                    for (j, &at) in all.iter().enumerate() {
                        let Some(id) = id_of[at] else { continue };
                        let core = sympos(k, core_count);
                        let coming = sympos(j, all.len());
                        if j == k {
                            // Right in both views; 1 (not 0) when the name is
                            // unique only among core symbols.
                            positions[id.0 as usize] = coming;
                        } else {
                            positions[id.0 as usize] = core;
                            unstable.insert(id, (core, coming));
                        }
                        k += 1;
                    }
                }
            }
        }

        Ok(TargetSymbols {
            objname: objname.to_string(),
            kind,
            symbols,
            elf_index,
            positions,
            unstable,
            by_name,
            groups,
            groups_by_name,
            whole_module,
        })
    }

    /// The object name used in `.klp.sym.OBJ.SYMBOL,POS`.
    pub fn objname(&self) -> &str {
        &self.objname
    }

    /// Whether this is vmlinux or a module.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// Number of kallsyms-visible symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the target has no kallsyms-visible symbols.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// One kallsyms-visible symbol.
    pub fn symbol(&self, id: SymbolId) -> &TargetSymbol {
        &self.symbols[id.0 as usize]
    }

    /// All kallsyms-visible symbols, indexed by [`SymbolId`], in kallsyms order.
    pub fn symbols(&self) -> &[TargetSymbol] {
        &self.symbols
    }

    /// Kallsyms-visible symbols of that name, in the order the livepatch core
    /// counts them (vmlinux: by address, then kallsyms index; module: symtab order).
    pub fn named(&self, name: &str) -> &[SymbolId] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The klp `sympos`: 0 when the name is unique, else the 1-based index among
    /// same-named symbols in the order the livepatch core walks them.
    ///
    /// For a module this is the position that is right both while the module
    /// is coming (full symtab) and after its init (core symtab): 1 rather than
    /// 0 when the name is unique only among core symbols. When no position is
    /// right in both (a same-named init or non-allocated symbol comes first),
    /// this returns the post-init position; [`TargetSymbols::checked_position`],
    /// [`TargetSymbols::resolve_local`] and [`TargetSymbols::resolve_global`]
    /// refuse such symbols.
    pub fn position(&self, id: SymbolId) -> u32 {
        self.positions[id.0 as usize]
    }

    /// [`TargetSymbols::position`], or an error when the module position
    /// depends on whether the module is loaded before or after the patch.
    pub fn checked_position(&self, id: SymbolId) -> Result<u32, Error> {
        match self.unstable.get(&id) {
            None => Ok(self.position(id)),
            Some(&(core, coming)) => Err(Error::LoadOrderDependentPosition {
                object: self.objname.clone(),
                name: self.symbol(id).name.clone(),
                core,
                coming,
            }),
        }
    }

    /// The `STT_FILE` name of a group.
    pub fn group_name(&self, g: FileGroupId) -> &str {
        &self.groups[g.0 as usize].name
    }

    /// `STT_FILE` groups with that name (as in the `STT_FILE` symbol, e.g. "cmdline.c").
    pub fn file_groups(&self, file_name: &str) -> Vec<FileGroupId> {
        if self.whole_module {
            return vec![FileGroupId(0)];
        }
        self.groups_by_name
            .get(file_name)
            .cloned()
            .unwrap_or_default()
    }

    /// The kallsyms-visible local symbols of a group, in symbol table order.
    pub fn group_locals(&self, g: FileGroupId) -> impl Iterator<Item = SymbolId> {
        self.groups[g.0 as usize]
            .members
            .iter()
            .filter_map(|m| m.id)
    }

    /// The one `STT_FILE` group named `file_name` whose local symbols (all named
    /// locals of the group, kallsyms-visible or not) include every name in
    /// `locals`. Zero or several matching groups is an error naming the file and
    /// the candidates (symtab index, first symbols and addresses) — never a guess.
    pub fn find_file_group(&self, file_name: &str, locals: &[&str]) -> Result<FileGroupId, Error> {
        let candidates = self.file_groups(file_name);
        let mut matching = Vec::new();
        let mut detail = Vec::new();
        for &g in &candidates {
            let names: HashSet<&str> = self.groups[g.0 as usize]
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            let missing: Vec<&str> = locals
                .iter()
                .copied()
                .filter(|l| !names.contains(l))
                .collect();
            if missing.is_empty() {
                matching.push(g);
            } else {
                detail.push(format!("{} lacks {missing:?}", self.describe_group(g)));
            }
        }
        let locals_owned = || -> Vec<String> { locals.iter().map(|s| s.to_string()).collect() };
        match matching.as_slice() {
            [g] => Ok(*g),
            [] => Err(Error::FileGroupNotFound {
                object: self.objname.clone(),
                file: file_name.to_string(),
                locals: locals_owned(),
                detail: if candidates.is_empty() {
                    "there is no STT_FILE symbol of that name".to_string()
                } else {
                    detail.join("; ")
                },
            }),
            several => Err(Error::AmbiguousFileGroup {
                object: self.objname.clone(),
                file: file_name.to_string(),
                locals: locals_owned(),
                candidates: several
                    .iter()
                    .map(|&g| self.describe_group(g))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// A local symbol `name` inside group `g` (error if absent, not
    /// kallsyms-visible, duplicated within the group, or with a load-order
    /// dependent module position).
    pub fn resolve_local(&self, g: FileGroupId, name: &str) -> Result<SymbolId, Error> {
        let group = &self.groups[g.0 as usize];
        let found: Vec<&Member> = group.members.iter().filter(|m| m.name == name).collect();
        let visible: Vec<SymbolId> = found.iter().filter_map(|m| m.id).collect();
        let group_label = || format!("STT_FILE symbol at symtab index {}", group.elf_index);
        match visible.as_slice() {
            [id] => self.checked_position(*id).map(|_| *id),
            [] => Err(Error::LocalNotFound {
                object: self.objname.clone(),
                file: group.name.clone(),
                group: group_label(),
                name: name.to_string(),
                detail: if let Some(m) = found.first() {
                    format!(
                        "; symtab index {} has that name but is not in kallsyms",
                        m.elf_index
                    )
                } else {
                    String::new()
                },
            }),
            several => Err(Error::DuplicateLocal {
                object: self.objname.clone(),
                file: group.name.clone(),
                group: group_label(),
                name: name.to_string(),
                candidates: self.describe_symbols(several),
            }),
        }
    }

    /// The one non-local (global or weak) kallsyms-visible symbol `name`; error
    /// if none or several, or if its module position depends on load order.
    pub fn resolve_global(&self, name: &str) -> Result<SymbolId, Error> {
        let all = self.named(name);
        let globals: Vec<SymbolId> = all
            .iter()
            .copied()
            .filter(|&id| !self.symbol(id).local)
            .collect();
        match globals.as_slice() {
            [id] => self.checked_position(*id).map(|_| *id),
            [] => Err(Error::GlobalNotFound {
                object: self.objname.clone(),
                name: name.to_string(),
                detail: if all.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (local symbols of that name: {})",
                        self.describe_symbols(all)
                    )
                },
            }),
            several => Err(Error::AmbiguousGlobal {
                object: self.objname.clone(),
                name: name.to_string(),
                candidates: self.describe_symbols(several),
            }),
        }
    }

    fn describe_symbols(&self, ids: &[SymbolId]) -> String {
        ids.iter()
            .map(|&id| {
                let s = self.symbol(id);
                let file = s
                    .file
                    .map(|g| format!(" in {}", self.group_name(g)))
                    .unwrap_or_default();
                format!(
                    "{}@{:#x}{file} (symtab index {})",
                    s.name, s.address, self.elf_index[id.0 as usize]
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn describe_group(&self, g: FileGroupId) -> String {
        let group = &self.groups[g.0 as usize];
        let shown: Vec<String> = self
            .group_locals(g)
            .take(SHOWN_PER_GROUP)
            .map(|id| {
                let s = self.symbol(id);
                format!("{}@{:#x}", s.name, s.address)
            })
            .collect();
        let total = group.members.len();
        let more = if total > shown.len() {
            format!(", {} more", total - shown.len())
        } else {
            String::new()
        };
        format!(
            "`{}` at symtab index {} ({}{more})",
            group.name,
            group.elf_index,
            if shown.is_empty() {
                "no kallsyms-visible locals".to_string()
            } else {
                shown.join(", ")
            }
        )
    }
}

/// How one symbol is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// "vmlinux", or the module path as in Module.symvers (module name for
    /// [`Exports::from_ksymtab`]).
    pub module: String,
    /// `EXPORT_SYMBOL_GPL`.
    pub gpl: bool,
    /// The symbol namespace, if any.
    pub namespace: Option<String>,
    /// The CRC column of Module.symvers.
    pub crc: Option<u64>,
}

/// Symbols a target exports to modules (resolved by the module loader, so normal relocations).
#[derive(Debug, Clone, Default)]
pub struct Exports {
    map: HashMap<String, Vec<Export>>,
}

impl Exports {
    /// Parses a 6.12 Module.symvers: `CRC\tSYMBOL\tMODULE\tEXPORT_TYPE\tNAMESPACE`
    /// per line (scripts/mod/modpost.c `write_dump()` / `read_dump()`), where
    /// EXPORT_TYPE is `EXPORT_SYMBOL` or `EXPORT_SYMBOL_GPL` and NAMESPACE may
    /// be empty. Blank lines are skipped; anything else malformed is an error
    /// naming the line.
    pub fn from_module_symvers(text: &str) -> Result<Self, Error> {
        let mut map: HashMap<String, Vec<Export>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: &str| Error::BadSymvers {
                line: n + 1,
                why: why.to_string(),
                text: line.to_string(),
            };
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            let [crc, symbol, module, export, namespace] = fields[..] else {
                return Err(bad("expected 5 tab-separated fields"));
            };
            let hex = crc
                .strip_prefix("0x")
                .or_else(|| crc.strip_prefix("0X"))
                .unwrap_or(crc);
            let crc = u64::from_str_radix(hex, 16).map_err(|_| bad("bad CRC"))?;
            if symbol.is_empty() {
                return Err(bad("empty symbol name"));
            }
            if module.is_empty() {
                return Err(bad("empty module name"));
            }
            let gpl = match export {
                "EXPORT_SYMBOL" => false,
                "EXPORT_SYMBOL_GPL" => true,
                _ => return Err(bad("unknown export type")),
            };
            map.entry(symbol.to_string()).or_default().push(Export {
                module: module.to_string(),
                gpl,
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                crc: Some(crc),
            });
        }
        Ok(Exports { map })
    }

    /// Finds the exports of an ELF image (vmlinux, a `.ko` or a `.o`) from its
    /// `__ksymtab_NAME` symbols (include/linux/export-internal.h `__KSYMTAB`:
    /// defined in section `___ksymtab[_gpl]+NAME`, linked into `__ksymtab` /
    /// `__ksymtab_gpl`). The namespace is read from `__kstrtabns_NAME` when
    /// present. The exporter is "vmlinux" for an executable, else the module's
    /// `.modinfo` `name=`.
    pub fn from_ksymtab(data: &[u8]) -> Result<Self, Error> {
        let img = Image::parse("ksymtab image", data)?;
        let module = if img.e_type == elf::ET_EXEC {
            "vmlinux".to_string()
        } else {
            img.modinfo()
                .iter()
                .find_map(|s| s.strip_prefix(b"name="))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .ok_or_else(|| Error::BadElf {
                    file: "ksymtab image".into(),
                    why: "not an executable and no .modinfo name=, so the exporting module is unknown"
                        .into(),
                })?
        };
        let namespaces: HashMap<&str, &RawSym<'_>> = img
            .syms
            .iter()
            .filter_map(|s| Some((s.name.strip_prefix("__kstrtabns_")?, s)))
            .filter(|(_, s)| s.section.is_some())
            .collect();
        let mut map: HashMap<String, Vec<Export>> = HashMap::new();
        for s in &img.syms {
            let Some(name) = s.name.strip_prefix("__ksymtab_") else {
                continue;
            };
            let Some(sec) = s.section else { continue };
            let sec_name = img.section_name(sec);
            let gpl = if sec_name.starts_with(b"__ksymtab_gpl")
                || sec_name.starts_with(b"___ksymtab_gpl+")
            {
                true
            } else if sec_name == b"__ksymtab" || sec_name.starts_with(b"___ksymtab+") {
                false
            } else {
                continue;
            };
            let namespace = namespaces
                .get(name)
                .and_then(|ns| img.string_at(ns))
                .filter(|ns| !ns.is_empty())
                .map(|ns| String::from_utf8_lossy(ns).into_owned());
            map.entry(name.to_string()).or_default().push(Export {
                module: module.clone(),
                gpl,
                namespace,
                crc: None,
            });
        }
        Ok(Exports { map })
    }

    /// Whether `name` is exported.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The first exporter of `name`: "vmlinux" or the module path as in Module.symvers.
    pub fn exporter(&self, name: &str) -> Option<&str> {
        self.export(name).map(|e| e.module.as_str())
    }

    /// How `name` is exported (the first entry when several modules export it).
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.map.get(name).and_then(|v| v.first())
    }

    /// Every export entry of `name` (several when different modules export it).
    pub fn exports_of(&self, name: &str) -> &[Export] {
        self.map.get(name).map_or(&[], Vec::as_slice)
    }

    /// Number of exported names.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is exported.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{self, Object};
    use object::{
        Architecture, BinaryFormat, SectionKind, SymbolFlags, SymbolKind as OKind, SymbolScope,
    };

    /// A small ELF64 x86_64 object under construction.
    struct Elf {
        obj: Object<'static>,
    }

    /// Where a test symbol lives.
    enum At {
        Sec(write::SectionId),
        Abs,
        File,
    }

    impl Elf {
        fn new() -> Self {
            Elf {
                obj: Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little),
            }
        }

        fn section(&mut self, name: &str, kind: SectionKind, data: &[u8]) -> write::SectionId {
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

        fn file(&mut self, name: &str) {
            self.add(
                name,
                At::File,
                0,
                OKind::File,
                SymbolScope::Compilation,
                false,
            );
        }

        fn local(&mut self, name: &str, at: At, value: u64, kind: OKind) {
            self.add(name, at, value, kind, SymbolScope::Compilation, false);
        }

        fn global(&mut self, name: &str, at: At, value: u64, kind: OKind) {
            self.add(name, at, value, kind, SymbolScope::Dynamic, false);
        }

        fn weak(&mut self, name: &str, at: At, value: u64, kind: OKind) {
            self.add(name, at, value, kind, SymbolScope::Dynamic, true);
        }

        fn add(
            &mut self,
            name: &str,
            at: At,
            value: u64,
            kind: OKind,
            scope: SymbolScope,
            weak: bool,
        ) {
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

        fn bytes(&self) -> Vec<u8> {
            self.obj.write().unwrap()
        }
    }

    /// Two `a.c` groups, each with a local `count` (address order opposite to
    /// symtab order), a `b.c` group, a global, a weak and some symbols
    /// kallsyms drops.
    fn sample() -> Vec<u8> {
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
    fn as_exec(data: &[u8]) -> Vec<u8> {
        let mut data = data.to_vec();
        data[16..18].copy_from_slice(&elf::ET_EXEC.0.to_le_bytes());
        data
    }

    fn load(kind: TargetKind, data: &[u8]) -> TargetSymbols {
        if kind == TargetKind::Vmlinux {
            TargetSymbols::from_elf("vmlinux", kind, &as_exec(data)).unwrap()
        } else {
            TargetSymbols::from_elf("sample_mod", kind, data).unwrap()
        }
    }

    fn names(t: &TargetSymbols) -> Vec<&str> {
        t.symbols().iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn stripped_module_locals_form_one_group() {
        // No STT_FILE symbols, as after `strip --strip-debug`.
        let mut e = Elf::new();
        let text = e.section(".text", SectionKind::Text, &[0; 0x100]);
        e.local("show", At::Sec(text), 0x10, OKind::Text);
        e.local("dup", At::Sec(text), 0x20, OKind::Text);
        e.local("dup", At::Sec(text), 0x30, OKind::Text);
        e.global("init_module", At::Sec(text), 0x40, OKind::Text);
        let t = load(TargetKind::Module, &e.bytes());
        let groups = t.file_groups("any_name.c");
        assert_eq!(groups.len(), 1);
        let g = t.find_file_group("any_name.c", &["show"]).unwrap();
        let id = t.resolve_local(g, "show").unwrap();
        assert_eq!(t.symbol(id).address, 0x10);
        assert!(matches!(
            t.resolve_local(g, "dup"),
            Err(Error::DuplicateLocal { .. })
        ));
        // A module with STT_FILE symbols keeps its file groups.
        let t = load(TargetKind::Module, &sample());
        assert!(t.file_groups("any_name.c").is_empty());
    }

    #[test]
    fn vmlinux_kallsyms_set_and_order() {
        let t = load(TargetKind::Vmlinux, &sample());
        // Address order; .L, __kstrtab_, __crc_, absolute and debug symbols dropped.
        assert_eq!(
            names(&t),
            [
                "tmp",
                "count",
                "helper_a",
                "helper_b",
                "dup_local",
                "dup_local",
                "count",
                "dup_global",
                "do_thing",
                "weak_fn",
                "dup_global"
            ]
        );
        assert!(t.named(".Lstray").is_empty());
        assert!(t.named("__kstrtab_do_thing").is_empty());
        assert!(t.named("__crc_do_thing").is_empty());
        assert!(t.named("abs_local").is_empty() && t.named("abs_global").is_empty());
        assert!(t.named("dbg").is_empty());
        assert_eq!(t.objname(), "vmlinux");
        let count = t.symbol(t.named("count")[0]);
        assert_eq!(
            (count.kind, count.local, count.address),
            (SymbolKind::Object, true, 0x10)
        );
        let f = t.symbol(t.resolve_global("do_thing").unwrap());
        assert_eq!((f.kind, f.local, f.file), (SymbolKind::Func, false, None));
    }

    #[test]
    fn positions_vmlinux_by_address_module_by_symtab() {
        let data = sample();
        let v = load(TargetKind::Vmlinux, &data);
        let m = load(TargetKind::Module, &data);
        let groups = v.file_groups("a.c");
        assert_eq!(groups.len(), 2);
        let (first, second) = (groups[0], groups[1]);
        // vmlinux: the second group's `count` (0x10) comes before the first's (0x100).
        let v1 = v.resolve_local(first, "count").unwrap();
        let v2 = v.resolve_local(second, "count").unwrap();
        assert_eq!((v.symbol(v1).address, v.position(v1)), (0x100, 2));
        assert_eq!((v.symbol(v2).address, v.position(v2)), (0x10, 1));
        assert_eq!(v.named("count"), [v2, v1]);
        // Module: symtab order.
        let mg = m.file_groups("a.c");
        let m1 = m.resolve_local(mg[0], "count").unwrap();
        let m2 = m.resolve_local(mg[1], "count").unwrap();
        assert_eq!((m.position(m1), m.position(m2)), (1, 2));
        assert_eq!(m.named("count"), [m1, m2]);
        // Unique names get 0 in both.
        for t in [&v, &m] {
            let id = t.resolve_global("do_thing").unwrap();
            assert_eq!(t.position(id), 0);
            assert_eq!(t.checked_position(id).unwrap(), 0);
            let w = t.resolve_global("weak_fn").unwrap();
            assert_eq!(t.position(w), 0);
        }
    }

    #[test]
    fn file_groups_and_locals() {
        let t = load(TargetKind::Vmlinux, &sample());
        let groups = t.file_groups("a.c");
        assert_eq!(
            t.find_file_group("a.c", &["count", "helper_a"]).unwrap(),
            groups[0]
        );
        assert_eq!(t.find_file_group("a.c", &["helper_b"]).unwrap(), groups[1]);
        // Invisible locals still identify a group.
        assert_eq!(t.find_file_group("a.c", &[".Lstray"]).unwrap(), groups[0]);
        let locals: Vec<&str> = t
            .group_locals(groups[0])
            .map(|id| t.symbol(id).name.as_str())
            .collect();
        assert_eq!(locals, ["count", "helper_a"]);
        assert_eq!(
            t.symbol(t.resolve_local(groups[1], "helper_b").unwrap())
                .file,
            Some(groups[1])
        );
        assert_eq!(t.group_name(groups[1]), "a.c");
        assert_eq!(t.file_groups("b.c").len(), 1);
        assert!(t.file_groups("c.c").is_empty());

        let err = t
            .find_file_group("a.c", &["count"])
            .unwrap_err()
            .to_string();
        assert!(matches!(
            t.find_file_group("a.c", &["count"]),
            Err(Error::AmbiguousFileGroup { .. })
        ));
        assert!(
            err.contains("helper_a@0x10") && err.contains("helper_b@0x40"),
            "{err}"
        );
        let err = t.find_file_group("a.c", &["count", "nope"]).unwrap_err();
        assert!(matches!(err, Error::FileGroupNotFound { .. }));
        assert!(err.to_string().contains("lacks [\"nope\"]"), "{err}");
        let err = t
            .find_file_group("c.c", &["count"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.c") && err.contains("no STT_FILE symbol"),
            "{err}"
        );

        let err = t.resolve_local(groups[0], "helper_b").unwrap_err();
        assert!(matches!(err, Error::LocalNotFound { .. }), "{err}");
        assert!(err.to_string().contains("helper_b") && err.to_string().contains("a.c"));
        let err = t
            .resolve_local(groups[0], ".Lstray")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in kallsyms"), "{err}");
        let b = t.find_file_group("b.c", &[]).unwrap();
        let err = t.resolve_local(b, "dup_local").unwrap_err();
        assert!(matches!(err, Error::DuplicateLocal { .. }), "{err}");
        assert!(err.to_string().contains("dup_local@0x90"), "{err}");
        // Same-named locals in one file still get distinct positions.
        let ids = t.named("dup_local");
        assert_eq!(
            ids.iter().map(|&i| t.position(i)).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn global_resolution_errors() {
        let t = load(TargetKind::Vmlinux, &sample());
        let err = t.resolve_global("count").unwrap_err();
        assert!(matches!(err, Error::GlobalNotFound { .. }));
        assert!(err.to_string().contains("count@0x10 in a.c"), "{err}");
        let err = t.resolve_global("missing").unwrap_err().to_string();
        assert!(
            err.contains("vmlinux") && err.contains("`missing`"),
            "{err}"
        );
        let err = t.resolve_global("dup_global").unwrap_err();
        assert!(matches!(err, Error::AmbiguousGlobal { .. }));
        assert!(err.to_string().contains("dup_global@0x180"), "{err}");
        // The weak copy sorts first by address.
        let ids = t.named("dup_global");
        assert_eq!(t.symbol(ids[0]).address, 0x180);
        assert_eq!(t.position(ids[1]), 2);
    }

    #[test]
    fn vmlinux_same_address_tie_break() {
        let mut e = Elf::new();
        let text = e.section(".text", SectionKind::Text, &[0; 0x100]);
        let pcpu = e.section(".data..percpu", SectionKind::Data, &[0; 0x100]);
        // Same address: weak after non-weak, linker-script-like names later,
        // then fewer leading underscores first, then nm (name) order.
        e.weak("aaa_weak", At::Sec(text), 0x90, OKind::Text);
        e.global("__start_things", At::Sec(text), 0x90, OKind::Label);
        e.global("__zz", At::Sec(text), 0x90, OKind::Text);
        e.global("_yy", At::Sec(text), 0x90, OKind::Text);
        e.global("xx", At::Sec(text), 0x90, OKind::Text);
        e.global("ww", At::Sec(text), 0x90, OKind::Text);
        // Percpu symbols are typed 'A' by --absolute-percpu: a weak one no
        // longer sorts after the others.
        e.global("__per_cpu_start", At::Sec(pcpu), 0, OKind::Label);
        e.weak("pcpu_weak", At::Sec(pcpu), 0x40, OKind::Data);
        e.weak("pcpu_weak_fn", At::Sec(pcpu), 0x40, OKind::Text);
        e.global("__pcpu_g", At::Sec(pcpu), 0x40, OKind::Data);
        e.global("__per_cpu_end", At::Sec(pcpu), 0x80, OKind::Label);
        let t = load(TargetKind::Vmlinux, &e.bytes());
        assert_eq!(
            names(&t),
            [
                "__per_cpu_start",
                "pcpu_weak",
                "pcpu_weak_fn",
                "__pcpu_g",
                "__per_cpu_end",
                "ww",
                "xx",
                "_yy",
                "__zz",
                "__start_things",
                "aaa_weak"
            ]
        );
    }

    #[test]
    fn module_kallsyms_rules() {
        let mut e = Elf::new();
        let text = e.section(".text", SectionKind::Text, &[0; 0x100]);
        let init = e.section(".init.text", SectionKind::Text, &[0; 0x100]);
        let exit = e.section(".exit.text", SectionKind::Text, &[0; 0x100]);
        let modinfo = e.section(".modinfo", SectionKind::ReadOnlyData, b"name=sample_mod\0");
        let bss = e.section(".bss", SectionKind::UninitializedData, &[0; 0x10]);
        e.file("x.c");
        e.local("helper", At::Sec(init), 0, OKind::Text); // init copy first
        e.local("other", At::Sec(text), 0x10, OKind::Text); // core copy first
        e.local("__UNIQUE_ID_name1", At::Sec(modinfo), 0, OKind::Data);
        e.local(".Lkept", At::Sec(text), 0x18, OKind::Label);
        e.local("state", At::Sec(bss), 0, OKind::Data);
        e.file("y.c");
        e.local("helper", At::Sec(text), 0x20, OKind::Text);
        e.local("other", At::Sec(init), 0x30, OKind::Text);
        e.local("bye", At::Sec(exit), 0, OKind::Text);
        e.local("abs", At::Abs, 1, OKind::Label);
        e.global("init_module", At::Sec(init), 0, OKind::Text);
        let data = e.bytes();
        let t = load(TargetKind::Module, &data);
        // Modules keep .L names and .exit (CONFIG_MODULE_UNLOAD) but not init,
        // .modinfo or absolute symbols.
        assert_eq!(names(&t), ["other", ".Lkept", "state", "helper", "bye"]);
        let x = t.find_file_group("x.c", &["helper"]).unwrap();
        let y = t.find_file_group("y.c", &[]).unwrap();
        // `other` is unique among core symbols but not while the module is
        // coming; it comes first in both, so position 1 works in both.
        let other = t.resolve_local(x, "other").unwrap();
        assert_eq!(t.position(other), 1);
        // `helper` is preceded by an init copy: no position is right in both.
        let err = t.resolve_local(y, "helper").unwrap_err();
        assert!(
            matches!(
                err,
                Error::LoadOrderDependentPosition {
                    core: 0,
                    coming: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(t.checked_position(t.named("helper")[0]).is_err());
        assert!(t.resolve_local(x, "helper").is_err()); // not visible
        assert_eq!(t.position(t.resolve_local(y, "bye").unwrap()), 0);
        assert!(t.resolve_global("init_module").is_err());

        // A livepatch module keeps everything (is_livepatch_module()).
        let mut e = Elf::new();
        let init = e.section(".init.text", SectionKind::Text, &[0; 0x10]);
        e.section(
            ".modinfo",
            SectionKind::ReadOnlyData,
            b"livepatch=Y\0name=lp\0",
        );
        e.local("setup", At::Sec(init), 0, OKind::Text);
        let t = load(TargetKind::Module, &e.bytes());
        assert_eq!(names(&t), ["setup"]);
    }

    #[test]
    fn same_object_as_vmlinux_and_module() {
        let data = sample();
        let v = load(TargetKind::Vmlinux, &data);
        let m = load(TargetKind::Module, &data);
        assert_eq!(m.objname(), "sample_mod");
        // Modules do not filter by name; vmlinux does.
        assert!(v.named("__kstrtab_do_thing").is_empty());
        assert_eq!(m.named("__kstrtab_do_thing").len(), 1);
        assert_eq!(m.named(".Lstray").len(), 1);
        // Symbols in non-allocated sections are out of both.
        assert!(v.named("dbg").is_empty() && m.named("dbg").is_empty());
    }

    #[test]
    fn not_elf_is_an_error() {
        let err = TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, b"nope").unwrap_err();
        assert!(matches!(err, Error::BadElf { .. }));
        assert!(err.to_string().starts_with("vmlinux:"), "{err}");
        // A relocatable object is no vmlinux, an executable no module.
        let data = sample();
        let err = TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, &data).unwrap_err();
        assert!(err.to_string().contains("Vmlinux target"), "{err}");
        let err = TargetSymbols::from_elf("m", TargetKind::Module, &as_exec(&data)).unwrap_err();
        assert!(err.to_string().contains("Module target"), "{err}");
    }

    #[test]
    fn mksysmap_and_linker_script_rules() {
        for dropped in [
            "$x",
            ".LC0",
            "__efistub_foo",
            "__pi_$d",
            "__kvm_nvhe_.Lfoo",
            "__ARMv7ABSLongThunk_foo",
            "__kcfi_typeid_foo",
            "__crc_foo",
            "__kstrtab_foo",
            "__kstrtabns_foo",
            "foo_veneer",
            "L0",
            "_SDA_BASE_",
            "x.long_branch.y",
        ] {
            assert!(mksysmap_drops_name(dropped), "{dropped}");
        }
        for kept in [
            "foo",
            "__ksymtab_foo",
            "L01",
            "_Thunk_x",
            "__Thunkx",
            "foo.isra.0",
        ] {
            assert!(!mksysmap_drops_name(kept), "{kept}");
        }
        for lsp in [
            "__start_foo",
            "__stop_foo",
            "__end_foo",
            "__bss_start",
            "__foo_end",
        ] {
            assert!(may_be_linker_script_provide(lsp), "{lsp}");
        }
        for not in ["__end", "_start_foo", "__a_end", "start_foo_end"] {
            assert!(!may_be_linker_script_provide(not), "{not}");
        }
    }

    #[test]
    fn module_symvers() {
        let text = "0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n\
                    0x00000000\tfoo_gpl\tdrivers/foo/foo\tEXPORT_SYMBOL_GPL\tFOO_NS\n\
                    \n\
                    0xdeadbeef\tbar\tfs/bar/bar\tEXPORT_SYMBOL\t\n";
        let ex = Exports::from_module_symvers(text).unwrap();
        assert_eq!(ex.len(), 3);
        assert!(ex.contains("printk") && !ex.contains("missing"));
        assert_eq!(ex.exporter("printk"), Some("vmlinux"));
        assert_eq!(ex.exporter("foo_gpl"), Some("drivers/foo/foo"));
        assert_eq!(ex.exporter("missing"), None);
        let e = ex.export("foo_gpl").unwrap();
        assert!(e.gpl);
        assert_eq!(e.namespace.as_deref(), Some("FOO_NS"));
        let e = ex.export("printk").unwrap();
        assert_eq!(
            (e.gpl, e.namespace.as_deref(), e.crc),
            (false, None, Some(0x12345678))
        );

        let bad = "0x0\tok\tvmlinux\tEXPORT_SYMBOL\t\n0x0\tbroken\tvmlinux\tEXPORT_SYMBOL\n";
        let err = Exports::from_module_symvers(bad).unwrap_err();
        assert!(matches!(err, Error::BadSymvers { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2") && err.to_string().contains("broken"));
        let err =
            Exports::from_module_symvers("0x0\tx\tvmlinux\tEXPORT_SYMBOL_FOO\t\n").unwrap_err();
        assert!(err.to_string().contains("unknown export type"), "{err}");
        let err = Exports::from_module_symvers("zz\tx\tvmlinux\tEXPORT_SYMBOL\t\n").unwrap_err();
        assert!(err.to_string().contains("bad CRC"), "{err}");
        let err = Exports::from_module_symvers("0x0\tx\t\tEXPORT_SYMBOL\t\n").unwrap_err();
        assert!(err.to_string().contains("empty module"), "{err}");
    }

    fn ksymtab_object(with_modinfo: bool) -> Vec<u8> {
        let mut e = Elf::new();
        let text = e.section(".text", SectionKind::Text, &[0; 0x10]);
        let ksymtab = e.section("__ksymtab", SectionKind::ReadOnlyData, &[0; 24]);
        let gpl = e.section("__ksymtab_gpl", SectionKind::ReadOnlyData, &[0; 12]);
        let strings = e.section(
            "__ksymtab_strings",
            SectionKind::ReadOnlyData,
            b"foo\0MY_NS\0bar\0\0",
        );
        if with_modinfo {
            e.section(
                ".modinfo",
                SectionKind::ReadOnlyData,
                b"license=GPL\0name=my_mod\0",
            );
        }
        e.local("__kstrtab_foo", At::Sec(strings), 0, OKind::Data);
        e.local("__kstrtabns_foo", At::Sec(strings), 4, OKind::Data);
        e.local("__kstrtab_bar", At::Sec(strings), 10, OKind::Data);
        e.local("__kstrtabns_bar", At::Sec(strings), 14, OKind::Data);
        e.local("__ksymtab_foo", At::Sec(ksymtab), 0, OKind::Data);
        e.local("__ksymtab_bar", At::Sec(gpl), 0, OKind::Data);
        e.local("__ksymtab_not_in_ksymtab", At::Sec(text), 0, OKind::Data);
        e.global("foo", At::Sec(text), 0, OKind::Text);
        e.global("bar", At::Sec(text), 8, OKind::Text);
        e.bytes()
    }

    #[test]
    fn ksymtab_exports() {
        let ex = Exports::from_ksymtab(&ksymtab_object(true)).unwrap();
        assert_eq!(ex.len(), 2);
        let foo = ex.export("foo").unwrap();
        assert_eq!(
            (foo.module.as_str(), foo.gpl, foo.namespace.as_deref()),
            ("my_mod", false, Some("MY_NS"))
        );
        let bar = ex.export("bar").unwrap();
        assert_eq!((bar.gpl, bar.namespace.as_deref()), (true, None));
        assert!(!ex.contains("not_in_ksymtab"));

        // An executable exports as vmlinux.
        let ex = Exports::from_ksymtab(&as_exec(&ksymtab_object(false))).unwrap();
        assert_eq!(ex.exporter("foo"), Some("vmlinux"));
        assert_eq!(
            ex.export("foo").unwrap().namespace.as_deref(),
            Some("MY_NS")
        );

        let err = Exports::from_ksymtab(&ksymtab_object(false)).unwrap_err();
        assert!(err.to_string().contains("name="), "{err}");
    }

    /// The first test kernel build directory holding a vmlinux, if any.
    fn test_kernel_build() -> Option<std::path::PathBuf> {
        let home = std::env::var_os("HOME")?;
        let root = std::path::Path::new(&home).join(".cache/kpbuild/kernels");
        let mut dirs: Vec<_> = std::fs::read_dir(root)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs.into_iter()
            .map(|d| d.join("build"))
            .find(|b| b.join("vmlinux").is_file())
    }

    /// The kallsyms table compiled into a vmlinux: (type, name, address) in
    /// kallsyms order, and `kallsyms_seqs_of_names`.
    fn embedded_kallsyms(data: &[u8]) -> (Vec<(u8, String, u64)>, Vec<u32>) {
        let img = Image::parse("vmlinux", data).unwrap();
        let addr = |name: &str| img.syms.iter().find(|s| s.name == name).unwrap().value;
        let at = |a: u64| -> &[u8] {
            for shdr in img.sections.iter() {
                let start = shdr.sh_addr(img.endian);
                let size = shdr.sh_size(img.endian);
                if shdr.sh_type(img.endian) != elf::SHT_NOBITS && a >= start && a < start + size {
                    let d = shdr.data(img.endian, data).unwrap();
                    return &d[(a - start) as usize..];
                }
            }
            panic!("address {a:#x} not in any section");
        };
        let u32_at =
            |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        let num = u32_at(at(addr("kallsyms_num_syms")), 0) as usize;
        let names = at(addr("kallsyms_names"));
        let tokens = at(addr("kallsyms_token_table"));
        let index = at(addr("kallsyms_token_index"));
        let offsets = at(addr("kallsyms_offsets"));
        let base = u64::from_le_bytes(at(addr("kallsyms_relative_base"))[..8].try_into().unwrap());
        let seqs = at(addr("kallsyms_seqs_of_names"));
        let mut out = Vec::with_capacity(num);
        let mut off = 0;
        for i in 0..num {
            let mut len = names[off] as usize;
            off += 1;
            if len & 0x80 != 0 {
                len = (len & 0x7f) | ((names[off] as usize) << 7);
                off += 1;
            }
            let mut full = Vec::new();
            for &tok in &names[off..off + len] {
                let t = u16::from_le_bytes([index[tok as usize * 2], index[tok as usize * 2 + 1]])
                    as usize;
                let end = tokens[t..].iter().position(|&b| b == 0).unwrap();
                full.extend_from_slice(&tokens[t..t + end]);
            }
            off += len;
            let rel = u32_at(offsets, i) as i32;
            // CONFIG_KALLSYMS_ABSOLUTE_PERCPU (kernel/kallsyms.c kallsyms_sym_address()).
            let address = if rel >= 0 {
                rel as u64
            } else {
                base.wrapping_sub(1).wrapping_sub(i64::from(rel) as u64)
            };
            out.push((
                full[0],
                String::from_utf8(full[1..].to_vec()).unwrap(),
                address,
            ));
        }
        let seqs = (0..num)
            .map(|i| u32::from_be_bytes([0, seqs[i * 3], seqs[i * 3 + 1], seqs[i * 3 + 2]]))
            .collect();
        (out, seqs)
    }

    #[test]
    fn real_test_kernel() {
        let Some(build) = test_kernel_build() else {
            eprintln!("skipping: no ~/.cache/kpbuild/kernels/*/build/vmlinux");
            return;
        };
        let data = std::fs::read(build.join("vmlinux")).unwrap();
        let t = TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, &data).unwrap();

        // Our kallsyms view is exactly the table the kernel carries.
        let (table, seqs) = embedded_kallsyms(&data);
        assert_eq!(t.len(), table.len());
        for (i, (_, name, address)) in table.iter().enumerate() {
            let s = t.symbol(SymbolId(i as u32));
            assert_eq!((&s.name, s.address), (name, *address), "kallsyms index {i}");
        }
        // And positions are the order kallsyms_on_each_match_symbol() walks
        // (runs of equal names in kallsyms_seqs_of_names).
        let mut i = 0;
        let mut duplicated = 0;
        while i < seqs.len() {
            let name = &table[seqs[i] as usize].1;
            let mut j = i;
            while j < seqs.len() && &table[seqs[j] as usize].1 == name {
                j += 1;
            }
            let run: Vec<SymbolId> = seqs[i..j].iter().map(|&s| SymbolId(s)).collect();
            assert_eq!(t.named(name), run.as_slice(), "{name}");
            for (k, &id) in run.iter().enumerate() {
                let want = if run.len() == 1 { 0 } else { k as u32 + 1 };
                assert_eq!(t.position(id), want, "{name}");
            }
            if run.len() > 1 {
                duplicated += 1;
                let addrs: Vec<u64> = run.iter().map(|&id| t.symbol(id).address).collect();
                assert!(addrs.windows(2).all(|w| w[0] <= w[1]), "{name}: {addrs:x?}");
            }
            i = j;
        }
        assert!(duplicated > 0);

        // cmdline_proc_show lives in the fs/proc cmdline.c group.
        let obj = std::fs::read(build.join("fs/proc/cmdline.o")).unwrap();
        let img = Image::parse("cmdline.o", &obj).unwrap();
        let locals: Vec<&str> = img
            .syms
            .iter()
            .filter(|s| s.bind == elf::STB_LOCAL && s.typ == elf::STT_FUNC)
            .map(|s| s.name)
            .collect();
        assert!(locals.contains(&"cmdline_proc_show"));
        assert!(t.file_groups("cmdline.c").len() > 1);
        let g = t.find_file_group("cmdline.c", &locals).unwrap();
        let id = t.resolve_local(g, "cmdline_proc_show").unwrap();
        assert_eq!(t.symbol(id).kind, SymbolKind::Func);
        if t.named("cmdline_proc_show").len() == 1 {
            assert_eq!(t.position(id), 0);
        }
        assert!(matches!(
            t.find_file_group("cmdline.c", &[]),
            Err(Error::AmbiguousFileGroup { .. })
        ));

        // A well-known duplicated name, by address.
        let dups = t.named("native_read_msr");
        if dups.len() > 1 {
            let pos: Vec<u32> = dups.iter().map(|&id| t.position(id)).collect();
            assert_eq!(pos, (1..=dups.len() as u32).collect::<Vec<_>>());
        }

        // A real module: core symbols only, in symtab order.
        if let Ok(ko) = std::fs::read(build.join("samples/kobject/kobject-example.ko")) {
            let m = TargetSymbols::from_elf("kobject_example", TargetKind::Module, &ko).unwrap();
            let g = m
                .find_file_group("kobject-example.c", &["foo_show", "example_init"])
                .unwrap();
            let id = m.resolve_local(g, "foo_show").unwrap();
            assert_eq!(m.position(id), 0);
            assert!(m.named("example_init").is_empty()); // .init.text
            assert!(m.named("__UNIQUE_ID_license139").is_empty()); // .modinfo
            assert_eq!(
                m.resolve_global("cleanup_module")
                    .map(|id| m.position(id))
                    .ok(),
                Some(0)
            );
        }

        // Exports: Module.symvers and __ksymtab_ agree.
        if let Ok(text) = std::fs::read_to_string(build.join("Module.symvers")) {
            let symvers = Exports::from_module_symvers(&text).unwrap();
            let ksymtab = Exports::from_ksymtab(&data).unwrap();
            for name in ksymtab.map.keys() {
                let (a, b) = (ksymtab.export(name).unwrap(), symvers.export(name));
                let b = b.unwrap_or_else(|| panic!("{name} not in Module.symvers"));
                assert_eq!(
                    (a.module.as_str(), a.gpl, &a.namespace),
                    (b.module.as_str(), b.gpl, &b.namespace),
                    "{name}"
                );
            }
        }
    }
}
