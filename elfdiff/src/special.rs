//! The kernel's special sections: one table entry each.
//!
//! A special section is an array of fixed-size entries, each describing one
//! place in the code (a jump label site, a bug entry, an exception fixup…).
//! An entry belongs to the function its *anchor* relocation points into; the
//! extraction keeps exactly the entries of included functions. Entry sizes are
//! those of Linux 6.12 on x86_64 and can be overridden per section (the build
//! driver reads the target's own sizes from its debug information).
//!
//! ORC unwind data (`.orc_unwind_ip` with its parallel `.orc_unwind`, made by
//! objtool) is split into entries per function like the other tables, but
//! never compared and never carried: it is derived from the code, which is
//! compared, and kpbuild's module build regenerates it. On the kernels whose
//! objtool runs at link time (`CONFIG_X86_KERNEL_IBT` or `CONFIG_LTO_CLANG`,
//! Debian's and the test kernel among them) kbuild runs `objtool --link
//! --module --orc` on the linked livepatch module, which describes every
//! function of the module from its final code; an input that already had an
//! `.orc_unwind` section would make objtool skip ORC generation for the whole
//! module ("file already has .orc_unwind section"), leaving the module's own
//! glue without unwind data. The patch objects kpbuild compiles itself never
//! carry ORC either (objtool is not replayed), so both kinds of input reach
//! the module build alike.

/// How the differ treats one special section.
#[derive(Debug, Clone, Copy)]
pub struct SpecialSection {
    /// Section name.
    pub name: &'static str,
    /// Entry size in bytes on Linux 6.12 x86_64.
    pub entry_size: usize,
    /// Offset within an entry of the relocation that says which code the
    /// entry is about.
    pub anchor: usize,
    /// Byte ranges `(offset, len)` of an entry that carry no meaning for a
    /// livepatch (source line numbers).
    pub ignore: &'static [(usize, usize)],
    /// What the section is, for messages and docs.
    pub what: &'static str,
    /// Whether entries are compared with their function and carried with
    /// it; `false` for data the module build regenerates from the code.
    pub carried: bool,
}

/// Every special section kpbuild knows.
pub const SPECIAL_SECTIONS: &[SpecialSection] = &[
    SpecialSection {
        name: "__bug_table",
        entry_size: 12,
        anchor: 0,
        // struct bug_entry { s32 bug_addr_disp; s32 file_disp; u16 line; u16 flags; }
        ignore: &[(8, 2)],
        what: "BUG()/WARN() sites (CONFIG_DEBUG_BUGVERBOSE layout)",
        carried: true,
    },
    SpecialSection {
        name: "__jump_table",
        entry_size: 16,
        anchor: 0,
        ignore: &[],
        what: "static key jump label sites (struct jump_entry)",
        carried: true,
    },
    SpecialSection {
        name: "__ex_table",
        entry_size: 12,
        anchor: 0,
        ignore: &[],
        what: "exception table (struct exception_table_entry)",
        carried: true,
    },
    SpecialSection {
        name: ".altinstructions",
        entry_size: 14,
        anchor: 0,
        ignore: &[],
        what: "alternatives (struct alt_instr)",
        carried: true,
    },
    SpecialSection {
        name: ".static_call_sites",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "static call sites (struct static_call_site)",
        carried: true,
    },
    SpecialSection {
        name: ".retpoline_sites",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "retpoline call sites",
        carried: true,
    },
    SpecialSection {
        name: ".return_sites",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "return thunk sites",
        carried: true,
    },
    SpecialSection {
        name: ".call_sites",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "call depth tracking sites",
        carried: true,
    },
    SpecialSection {
        name: ".ibt_endbr_seal",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "ENDBR instructions to seal",
        carried: true,
    },
    SpecialSection {
        name: ".smp_locks",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "LOCK prefixes patched on uniprocessor",
        carried: true,
    },
    SpecialSection {
        name: ".parainstructions",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "paravirt patch sites (struct paravirt_patch_site)",
        carried: true,
    },
    SpecialSection {
        name: "__mcount_loc",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "ftrace call sites",
        carried: true,
    },
    SpecialSection {
        name: "__patchable_function_entries",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "patchable function entries",
        carried: true,
    },
    SpecialSection {
        name: ".orc_unwind_ip",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "ORC unwind table addresses (regenerated by objtool at the module link)",
        carried: false,
    },
];

/// The table entry for a section name.
pub fn special(name: &str) -> Option<&'static SpecialSection> {
    SPECIAL_SECTIONS.iter().find(|s| s.name == name)
}

/// Sections that never reach a running kernel's code paths and carry no
/// livepatch meaning: compared never, copied never.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with(".discard")
        || name.starts_with(".debug_")
        || name.starts_with(".note")
        || name == ".comment"
        || name.starts_with(".BTF")
        || name.starts_with(".llvm")
        || name == ".modinfo"
        || name.starts_with(".gnu.")
        // Read by [`crate::callbacks`] and [`crate::kpatch`], never copied.
        || name.starts_with(crate::callbacks::SECTION_PREFIX)
        || name.starts_with(crate::kpatch::PREFIX)
}

/// `struct _ddebug` (include/linux/dynamic_debug.h, 6.1 and 6.12): four
/// pointers, then `lineno:18, class_id:6, flags:8` in one `u32` at 0x20. The
/// low two bytes hold the line number (of files under 65536 lines).
const DYNDBG_LINENO: (usize, usize) = (0x20, 2);

/// The sections of dynamic-debug descriptors: `__dyndbg`, and `__verbose`
/// as kernels before the rename call it.
pub const DYNDBG_SECTIONS: &[&str] = &["__dyndbg", "__verbose"];

/// Whether a section holds dynamic-debug descriptors.
pub fn is_dyndbg(section: &str) -> bool {
    DYNDBG_SECTIONS.contains(&section)
}

/// Whether a section holds UBSAN data (`CONFIG_UBSAN`): the per-check
/// descriptors (`.data..Lubsan_data*`: a `struct source_location`, then
/// pointers to type descriptors) and the type descriptors
/// (`.data..Lubsan_type*`) the compiler emits for each checked operation,
/// one section each with `-fdata-sections`, named by assembler labels only.
pub fn is_ubsan(section: &str) -> bool {
    section.starts_with(".data..Lubsan_data") || section.starts_with(".data..Lubsan_type")
}

/// `struct source_location` at the start of every UBSAN check descriptor:
/// the file name pointer, then `u32 line, u32 column` (the kernel sets the
/// line's top bit once reported).
const UBSAN_LINE_COLUMN: (usize, usize) = (8, 8);

/// Byte ranges `(offset, len)` of a data symbol of `section` that compare as
/// equal whatever they hold: the line number of a dynamic-debug descriptor,
/// which moves when lines are added above a `pr_debug()` (the running
/// kernel's descriptor keeps serving the unchanged code).
pub fn ignored_in_data(section: &str, size: u64) -> &'static [(usize, usize)] {
    let (offset, _) = DYNDBG_LINENO;
    if is_dyndbg(section) && size >= (offset + 4) as u64 {
        std::slice::from_ref(&DYNDBG_LINENO)
    } else {
        &[]
    }
}

/// Byte ranges of a whole section, private to its use site and named by no
/// symbol, that compare as equal whatever they hold: the line and column of
/// a UBSAN check descriptor.
pub fn ignored_in_private_section(section: &str, size: u64) -> &'static [(usize, usize)] {
    let (offset, len) = UBSAN_LINE_COLUMN;
    if section.starts_with(".data..Lubsan_data") && size >= (offset + len) as u64 {
        std::slice::from_ref(&UBSAN_LINE_COLUMN)
    } else {
        &[]
    }
}

/// Data private to the code that references it, one object per use site:
/// the dynamic-debug descriptors of `pr_debug()` (`__dyndbg`, `__verbose`)
/// and UBSAN's check and type descriptors. Changed code gets its own copy
/// of the section (the running code keeps the kernel's), so a changed
/// descriptor is no refusal as long as only changed code uses it, and the
/// copy's static keys are the module's own.
pub fn is_copied_with_code(section: &str) -> bool {
    is_dyndbg(section) || is_ubsan(section)
}

/// The section whose entries a parallel table without relocations follows,
/// entry by entry: `.orc_unwind` (one `struct orc_entry` per address of
/// `.orc_unwind_ip`).
pub fn parallel_of(name: &str) -> Option<&'static SpecialSection> {
    (name == ORC_UNWIND).then(|| special(".orc_unwind_ip").expect("in the table"))
}

/// The ORC entries section.
pub const ORC_UNWIND: &str = ".orc_unwind";

/// `sizeof(struct orc_entry)` on x86_64 (6.12: two `s16` offsets and a
/// `u16` of bit fields, packed).
pub const ORC_ENTRY_SIZE: usize = 6;

/// Sections whose code or data the kernel frees after boot: any change there
/// is refused.
pub fn is_init(name: &str) -> bool {
    name.starts_with(".init.")
        || name.starts_with(".exit.")
        || name == ".init"
        || name.starts_with(".meminit")
        || name == ".x86_cpu_dev.init"
        || name.starts_with(".con_initcall")
        || name.starts_with(".initcall")
        || name.starts_with("__param")
}

/// The rule [`crate::analyze::analyze`] applies to one section of a patched
/// object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionRule {
    /// Split into entries; each entry follows the function it is about.
    Special(&'static SpecialSection),
    /// Never compared, never copied: no meaning for a livepatch, or not
    /// loaded (not `SHF_ALLOC`).
    Ignored,
    /// Freed after boot: a changed or new symbol there is refused.
    Init,
    /// Executable, with symbols: compared function by function.
    Code,
    /// Allocated data with symbols (compared symbol by symbol), or a merge
    /// section or UBSAN data (compared by contents where it is used).
    Data,
    /// Allocated, without symbols and without a rule: compared as a whole,
    /// and refused by name if it differs.
    ComparedWhole,
}

impl PartialEq for SpecialSection {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for SpecialSection {}

/// `SHF_ALLOC`.
const SHF_ALLOC: u64 = 0x2;
/// `SHF_EXECINSTR`.
const SHF_EXECINSTR: u64 = 0x4;

/// Whether a section whose contents differ between the original and the
/// patched object is refused as "no rule covers it": an allocated section
/// with no symbol and no rule. Non-allocated, ignored and special sections,
/// sections with symbols (compared per symbol), merge sections (compared
/// where used) and `.altinstr_replacement` (compared through
/// `.altinstructions` entries) are not.
pub fn is_compared_whole(name: &str, flags: u64, has_symbols: bool, is_merge: bool) -> bool {
    matches!(
        rule(name, flags, has_symbols, is_merge),
        SectionRule::ComparedWhole
    )
}

/// The rule `analyze` applies to a section named `name` with `sh_flags`
/// `flags`, holding symbols or not, mergeable (`SHF_MERGE`) or not.
pub fn rule(name: &str, flags: u64, has_symbols: bool, is_merge: bool) -> SectionRule {
    if is_ignored(name) {
        return SectionRule::Ignored;
    }
    if let Some(s) = special(name) {
        return SectionRule::Special(s);
    }
    if flags & SHF_ALLOC == 0 {
        return SectionRule::Ignored;
    }
    if has_symbols {
        return if is_init(name) {
            SectionRule::Init
        } else if flags & SHF_EXECINSTR != 0 {
            SectionRule::Code
        } else {
            SectionRule::Data
        };
    }
    if is_merge || is_ubsan(name) {
        // UBSAN data is compared by contents where code uses it.
        return SectionRule::Data;
    }
    if name == ".altinstr_replacement" {
        return SectionRule::Special(special(".altinstructions").expect("in the table"));
    }
    if let Some(s) = parallel_of(name) {
        return SectionRule::Special(s);
    }
    SectionRule::ComparedWhole
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_unique_and_sane() {
        for (i, s) in SPECIAL_SECTIONS.iter().enumerate() {
            assert!(
                SPECIAL_SECTIONS[i + 1..].iter().all(|t| t.name != s.name),
                "{}",
                s.name
            );
            assert!(s.anchor + 4 <= s.entry_size, "{}", s.name);
            for (off, len) in s.ignore {
                assert!(off + len <= s.entry_size, "{}", s.name);
            }
        }
        assert_eq!(special("__jump_table").unwrap().entry_size, 16);
        assert!(special(".text").is_none());
    }

    #[test]
    fn rules_of_kernel_sections() {
        const A: u64 = SHF_ALLOC;
        const AX: u64 = SHF_ALLOC | SHF_EXECINSTR;
        const AW: u64 = SHF_ALLOC | 0x1;
        let sp = |n: &str| SectionRule::Special(special(n).unwrap());
        for (name, flags, syms, merge, want) in [
            (".retpoline_sites", A, false, false, sp(".retpoline_sites")),
            (".return_sites", A, false, false, sp(".return_sites")),
            (".call_sites", A, false, false, sp(".call_sites")),
            (".ibt_endbr_seal", A, false, false, sp(".ibt_endbr_seal")),
            (
                ".static_call_sites",
                AW,
                false,
                false,
                sp(".static_call_sites"),
            ),
            ("__jump_table", AW, false, false, sp("__jump_table")),
            (".altinstructions", A, false, false, sp(".altinstructions")),
            (
                ".altinstr_replacement",
                AX,
                false,
                false,
                sp(".altinstructions"),
            ),
            ("__ex_table", A, false, false, sp("__ex_table")),
            ("__bug_table", AW, false, false, sp("__bug_table")),
            (".orc_unwind_ip", A, false, false, sp(".orc_unwind_ip")),
            (".orc_unwind", A, false, false, sp(".orc_unwind_ip")),
            (".data..Lubsan_data3", AW, false, false, SectionRule::Data),
            (".data..Lubsan_type0", AW, false, false, SectionRule::Data),
            ("__verbose", AW, true, false, SectionRule::Data),
            (".orc_header", A, true, false, SectionRule::Data),
            ("__mcount_loc", A, false, false, sp("__mcount_loc")),
            (".smp_locks", A, false, false, sp(".smp_locks")),
            (".text.foo", AX, true, false, SectionRule::Code),
            (".text", AX, false, false, SectionRule::ComparedWhole),
            (".data.bar", AW, true, false, SectionRule::Data),
            (".rodata.str1.1", A | 0x30, false, true, SectionRule::Data),
            (".init.text", AX, true, false, SectionRule::Init),
            (".init.data", AW, false, false, SectionRule::ComparedWhole),
            ("__param", A, true, false, SectionRule::Init),
            (
                ".printk_index",
                AW,
                false,
                false,
                SectionRule::ComparedWhole,
            ),
            ("__dyndbg", AW, false, false, SectionRule::ComparedWhole),
            (".BTF", 0, false, false, SectionRule::Ignored),
            (".debug_info", 0, false, false, SectionRule::Ignored),
            (".note.GNU-stack", 0, false, false, SectionRule::Ignored),
            (".comment", 0x30, false, true, SectionRule::Ignored),
            (
                ".discard.addressable",
                AW,
                false,
                false,
                SectionRule::Ignored,
            ),
            (".symtab", 0, false, false, SectionRule::Ignored),
            (".rela.text", 0x40, false, false, SectionRule::Ignored),
        ] {
            assert_eq!(rule(name, flags, syms, merge), want, "{name}");
            assert_eq!(
                is_compared_whole(name, flags, syms, merge),
                want == SectionRule::ComparedWhole,
                "{name}"
            );
        }
    }
}
