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
//!
//! # Where each part lives
//!
//! - `image`: reading the ELF image (sections, symbols, `.modinfo`);
//! - `kallsyms`: which symbols kallsyms keeps, their order and positions;
//! - `groups`: the `STT_FILE` groups that tell same-named locals apart;
//! - `exports`: what the target exports (Module.symvers, `__ksymtab`).

mod exports;
mod groups;
mod image;
mod kallsyms;
#[cfg(test)]
mod testutil;

pub use exports::{Export, Exports};

use crate::Error;
use groups::FileGroups;
use image::{Image, RawSym};
use object::elf;
use std::collections::HashMap;

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
    unstable: kallsyms::Unstable,
    /// Visible symbols by name, in kallsyms order.
    by_name: HashMap<String, Vec<SymbolId>>,
    /// The `STT_FILE` groups.
    files: FileGroups,
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

/// The visible symbols, in kallsyms order, with their symtab indexes and
/// the ids of each name.
struct Visible {
    symbols: Vec<TargetSymbol>,
    elf_index: Vec<usize>,
    by_name: HashMap<String, Vec<SymbolId>>,
}

/// Collects the symbols `order` keeps, each with its file group.
fn visible_symbols(
    syms: &[RawSym<'_>],
    order: &[usize],
    group_of: &[Option<FileGroupId>],
) -> Visible {
    let mut symbols = Vec::with_capacity(order.len());
    let mut elf_index = Vec::with_capacity(order.len());
    let mut by_name: HashMap<String, Vec<SymbolId>> = HashMap::new();
    for (id, &at) in order.iter().enumerate() {
        let s = &syms[at];
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
    Visible {
        symbols,
        elf_index,
        by_name,
    }
}

/// Refuses an image whose ELF type does not fit the target kind.
fn check_file_type(img: &Image<'_>, objname: &str, kind: TargetKind) -> Result<(), Error> {
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
    Ok(())
}

impl TargetSymbols {
    /// Reads the symbol table of `data` (an ELF64 vmlinux or `.ko`) and indexes its
    /// kallsyms-visible symbols. `objname` is "vmlinux" or the module name as the
    /// kernel spells it (with `_`, e.g. "kobject_example").
    pub fn from_elf(objname: &str, kind: TargetKind, data: &[u8]) -> Result<Self, Error> {
        let img = Image::parse(objname, data)?;
        check_file_type(&img, objname, kind)?;
        let order = kallsyms::order(&img, kind);
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
        let (files, group_of) = FileGroups::build(&img, kind, &id_of);
        let visible = visible_symbols(&img.syms, &order, &group_of);
        let (positions, unstable) =
            kallsyms::positions(&img, kind, &visible.symbols, &visible.by_name, &id_of);
        Ok(TargetSymbols {
            objname: objname.to_string(),
            kind,
            symbols: visible.symbols,
            elf_index: visible.elf_index,
            positions,
            unstable,
            by_name: visible.by_name,
            files,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::read::elf::SectionHeader;
    use testutil::*;

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

    /// The build directory of the built test kernel (`cargo xtask kernel`).
    fn test_kernel_build() -> Option<std::path::PathBuf> {
        testbed::oracle::test_kernel().map(|kernel| kernel.build)
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
