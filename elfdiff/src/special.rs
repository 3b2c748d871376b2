//! The kernel's special sections: one table entry each.
//!
//! A special section is an array of fixed-size entries, each describing one
//! place in the code (a jump label site, a bug entry, an exception fixup…).
//! An entry belongs to the function its *anchor* relocation points into; the
//! extraction keeps exactly the entries of included functions. Entry sizes are
//! those of Linux 6.12 on x86_64 and can be overridden per section.

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
    },
    SpecialSection {
        name: "__jump_table",
        entry_size: 16,
        anchor: 0,
        ignore: &[],
        what: "static key jump label sites (struct jump_entry)",
    },
    SpecialSection {
        name: "__ex_table",
        entry_size: 12,
        anchor: 0,
        ignore: &[],
        what: "exception table (struct exception_table_entry)",
    },
    SpecialSection {
        name: ".altinstructions",
        entry_size: 14,
        anchor: 0,
        ignore: &[],
        what: "alternatives (struct alt_instr)",
    },
    SpecialSection {
        name: ".static_call_sites",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "static call sites (struct static_call_site)",
    },
    SpecialSection {
        name: ".retpoline_sites",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "retpoline call sites",
    },
    SpecialSection {
        name: ".return_sites",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "return thunk sites",
    },
    SpecialSection {
        name: ".call_sites",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "call depth tracking sites",
    },
    SpecialSection {
        name: ".ibt_endbr_seal",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "ENDBR instructions to seal",
    },
    SpecialSection {
        name: ".smp_locks",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "LOCK prefixes patched on uniprocessor",
    },
    SpecialSection {
        name: ".parainstructions",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "paravirt patch sites (struct paravirt_patch_site)",
    },
    SpecialSection {
        name: "__mcount_loc",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "ftrace call sites",
    },
    SpecialSection {
        name: "__patchable_function_entries",
        entry_size: 8,
        anchor: 0,
        ignore: &[],
        what: "patchable function entries",
    },
    SpecialSection {
        name: ".orc_unwind_ip",
        entry_size: 4,
        anchor: 0,
        ignore: &[],
        what: "ORC unwind table addresses",
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
}

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
}
