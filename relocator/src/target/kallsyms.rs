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

use super::image::{Image, RawSym};
use super::{SymbolId, TargetKind, TargetSymbol, TargetSymbols};
use crate::Error;
use object::elf;
use object::read::elf::SectionHeader;
use std::collections::HashMap;

/// `KSYM_NAME_LEN` (include/linux/kallsyms.h, scripts/kallsyms.c:34).
const KSYM_NAME_LEN: usize = 512;

/// Module positions that differ between the two load states: (core, coming).
pub(super) type Unstable = HashMap<SymbolId, (u32, u32)>;

/// The kallsyms-visible symbols of `img`, as positions in `img.syms`, in
/// kallsyms order: the index of each is its [`SymbolId`].
pub(super) fn order(img: &Image<'_>, kind: TargetKind) -> Vec<usize> {
    match kind {
        TargetKind::Vmlinux => vmlinux_kallsyms(img),
        TargetKind::Module => module_core_symbols(img),
    }
}

/// The `nm` type letter of a symbol, as BFD's `bfd_decode_symclass()`
/// computes it for ELF (binutils bfd/syms.c and bfd/elf.c).
fn nm_letter(img: &Image<'_>, s: &RawSym<'_>) -> u8 {
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
        Some(i) => section_letter(img, i),
    };
    if s.bind == elf::STB_GLOBAL {
        c.to_ascii_uppercase()
    } else {
        c
    }
}

/// BFD's `decode_section_type()` with the section flags BFD derives from
/// the ELF header (`_bfd_elf_make_section_from_shdr()`).
fn section_letter(img: &Image<'_>, index: usize) -> u8 {
    let shdr = img.shdr(index);
    let flags = shdr.sh_flags(img.endian);
    let alloc = flags.contains(elf::SHF_ALLOC);
    let nobits = shdr.sh_type(img.endian) == elf::SHT_NOBITS;
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
    let name = img.section_name(index);
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
        let letter = nm_letter(img, s);
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

/// The position of every visible symbol (by [`SymbolId`]) and, for a module,
/// the symbols whose position depends on load order.
pub(super) fn positions(
    img: &Image<'_>,
    kind: TargetKind,
    symbols: &[TargetSymbol],
    by_name: &HashMap<String, Vec<SymbolId>>,
    id_of: &[Option<SymbolId>],
) -> (Vec<u32>, Unstable) {
    match kind {
        TargetKind::Vmlinux => (vmlinux_positions(symbols, by_name), HashMap::new()),
        TargetKind::Module => module_positions(img, symbols.len(), by_name, id_of),
    }
}

/// vmlinux: the index among same-named symbols, which `by_name` lists in
/// kallsyms order.
fn vmlinux_positions(
    symbols: &[TargetSymbol],
    by_name: &HashMap<String, Vec<SymbolId>>,
) -> Vec<u32> {
    // compare_names(): same names by address, then kallsyms index.
    // Kallsyms order is by address first, so the lists already are.
    debug_assert!(by_name.values().all(|ids| {
        ids.windows(2)
            .all(|w| symbols[w[0].0 as usize].address <= symbols[w[1].0 as usize].address)
    }));
    let mut positions = vec![0u32; symbols.len()];
    for ids in by_name.values() {
        for (k, id) in ids.iter().enumerate() {
            positions[id.0 as usize] = sympos(k, ids.len());
        }
    }
    positions
}

/// A module: the position right both while the module is coming (full
/// symtab) and after its init (core symbols), else the core one, recorded
/// as unstable.
fn module_positions(
    img: &Image<'_>,
    count: usize,
    by_name: &HashMap<String, Vec<SymbolId>>,
    id_of: &[Option<SymbolId>],
) -> (Vec<u32>, Unstable) {
    let mut positions = vec![0u32; count];
    let mut unstable = HashMap::new();
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
    (positions, unstable)
}

impl TargetSymbols {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::target::SymbolKind;
    use crate::target::testutil::*;
    use object::SectionKind;
    use object::SymbolKind as OKind;

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
}
