//! Fuzzing the relocator's readers: whatever the bytes,
//! `klp::convert_to_livepatch`, `klp::undefined_symbols`,
//! `target::TargetSymbols::from_elf` (vmlinux and module),
//! `target::Exports::from_ksymtab` and `target::Exports::from_module_symvers`
//! return `Ok` or `Err`, never panic; a conversion's output converts to
//! itself again.
//!
//! Seeds: pre-link patch objects and a `__ksymtab` object built here with
//! `object`'s writer, fixture objects compiled at test time, and every file
//! of `fuzz-corpus/`. See `fuzz-corpus/README.md`.

#[path = "../../fuzz-corpus/support/fuzzing.rs"]
mod fuzzing;

use fuzzing::{apply, config, cut, mutations, with_elf_header};
use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
};
use proptest::prelude::*;
use proptest::sample::Index;
use relocator::klp::{convert_to_livepatch, undefined_symbols};
use relocator::target::{Exports, TargetKind, TargetSymbols};
use std::sync::OnceLock;

const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;

fn symbol(
    obj: &mut Object,
    name: &str,
    section: SymbolSection,
    value: u64,
    local: bool,
) -> object::write::SymbolId {
    let kind = match section {
        SymbolSection::Section(_) => SymbolKind::Text,
        _ => SymbolKind::Unknown,
    };
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value,
        size: if matches!(section, SymbolSection::Section(_)) {
            8
        } else {
            0
        },
        kind,
        scope: if local {
            SymbolScope::Compilation
        } else {
            SymbolScope::Linkage
        },
        weak: false,
        section,
        flags: SymbolFlags::None,
    })
}

fn reloc(
    obj: &mut Object,
    section: object::write::SectionId,
    offset: u64,
    sym: object::write::SymbolId,
    r_type: u32,
    addend: i64,
) {
    obj.add_relocation(
        section,
        Relocation {
            offset,
            symbol: sym,
            addend,
            flags: RelocationFlags::Elf {
                r_type: object::elf::RelocationType(r_type),
            },
        },
    )
    .expect("relocation");
}

/// A patch object in pre-link form: livepatch symbols for vmlinux and a
/// module referenced from code, data and debug information, an exported
/// symbol, a local helper, and a `.modinfo` (so it also reads as a module).
fn prelink_object() -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    obj.add_file_symbol(b"unit.c".to_vec());
    let text = obj.add_section(Vec::new(), b".text.foo".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &[0x90; 48], 16);
    let data = obj.section_id(StandardSection::Data);
    obj.append_section_data(data, &[0; 24], 8);
    let debug = obj.add_section(Vec::new(), b".debug_info".to_vec(), SectionKind::Debug);
    obj.append_section_data(debug, &[0; 16], 1);
    let modinfo = obj.add_section(
        Vec::new(),
        b".modinfo".to_vec(),
        SectionKind::ReadOnlyString,
    );
    obj.append_section_data(modinfo, b"license=GPL\0name=fuzz_mod\0livepatch=Y\0", 1);
    let helper = symbol(&mut obj, "helper", SymbolSection::Section(text), 32, true);
    symbol(
        &mut obj,
        "__kpb_new_0",
        SymbolSection::Section(text),
        0,
        false,
    );
    let bar = symbol(
        &mut obj,
        ".klp.sym.vmlinux.bar,0",
        SymbolSection::Undefined,
        0,
        false,
    );
    let ext4_sym = symbol(
        &mut obj,
        ".klp.sym.ext4.baz,2",
        SymbolSection::Undefined,
        0,
        false,
    );
    let printk = symbol(&mut obj, "_printk", SymbolSection::Undefined, 0, false);
    reloc(&mut obj, text, 1, bar, R_X86_64_PLT32, -4);
    reloc(&mut obj, text, 6, printk, R_X86_64_PLT32, -4);
    reloc(&mut obj, text, 11, ext4_sym, R_X86_64_PC32, -4);
    reloc(&mut obj, text, 16, helper, R_X86_64_PC32, -4);
    reloc(&mut obj, text, 20, bar, R_X86_64_PC32, 8);
    reloc(&mut obj, data, 0, bar, R_X86_64_64, 0);
    reloc(&mut obj, data, 8, helper, R_X86_64_64, 0);
    reloc(&mut obj, debug, 0, ext4_sym, R_X86_64_64, 0);
    obj.write().expect("prelink object")
}

/// An object exporting `foo` (`__ksymtab`, namespace `MY_NS`) and `bar`
/// (`__ksymtab_gpl`), with a module name in `.modinfo`.
fn ksymtab_object() -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    obj.add_file_symbol(b"exports.c".to_vec());
    let text = obj.section_id(StandardSection::Text);
    obj.append_section_data(text, &[0xc3; 16], 16);
    let section = |obj: &mut Object, name: &str, data: &[u8]| {
        let id = obj.add_section(
            Vec::new(),
            name.as_bytes().to_vec(),
            SectionKind::ReadOnlyData,
        );
        obj.append_section_data(id, data, 1);
        id
    };
    let ksymtab = section(&mut obj, "__ksymtab", &[0; 12]);
    let gpl = section(&mut obj, "__ksymtab_gpl", &[0; 12]);
    let strings = section(&mut obj, "__ksymtab_strings", b"foo\0MY_NS\0bar\0\0");
    section(&mut obj, ".modinfo", b"license=GPL\0name=my_mod\0");
    symbol(
        &mut obj,
        "__kstrtab_foo",
        SymbolSection::Section(strings),
        0,
        true,
    );
    symbol(
        &mut obj,
        "__kstrtabns_foo",
        SymbolSection::Section(strings),
        4,
        true,
    );
    symbol(
        &mut obj,
        "__ksymtab_foo",
        SymbolSection::Section(ksymtab),
        0,
        true,
    );
    symbol(
        &mut obj,
        "__ksymtab_bar",
        SymbolSection::Section(gpl),
        0,
        true,
    );
    symbol(&mut obj, "foo", SymbolSection::Section(text), 0, false);
    symbol(&mut obj, "bar", SymbolSection::Section(text), 8, false);
    obj.write().expect("ksymtab object")
}

/// The same bytes with `e_type` = `ET_EXEC`, as vmlinux has.
fn as_exec(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    d[16..18].copy_from_slice(&2u16.to_le_bytes());
    d
}

/// (label, bytes)
type Seed = (String, Vec<u8>);

fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let prelink = prelink_object();
        let converted = convert_to_livepatch(&prelink).expect("the prelink seed converts");
        let ksymtab = ksymtab_object();
        let mut seeds = vec![
            ("prelink".to_string(), prelink.clone()),
            ("converted".to_string(), converted),
            ("ksymtab".to_string(), ksymtab.clone()),
            ("ksymtab as exec".to_string(), as_exec(&ksymtab)),
            ("prelink as exec".to_string(), as_exec(&prelink)),
        ];
        let scratch = fuzzing::Scratch::new("relocator-fuzz");
        for (case, o, p) in fuzzing::compile_pairs(
            &["two_functions_changed", "jump_label_in_changed_function"],
            scratch.root(),
        ) {
            seeds.push((format!("{case} as exec"), as_exec(&o)));
            seeds.push((case.clone(), o));
            seeds.push((format!("{case} (patched)"), p));
        }
        for path in fuzzing::corpus_files() {
            if let Ok(data) = std::fs::read(&path) {
                seeds.push((path.display().to_string(), data));
            }
        }
        seeds
    })
}

fn pick(i: &Index) -> &'static Seed {
    i.get(seeds())
}

/// Every ELF reader on `data`; an error describes a broken property.
fn check(data: &[u8]) -> Result<(), String> {
    let run = || -> Result<(), String> {
        if let Ok(out) = convert_to_livepatch(data) {
            let again = convert_to_livepatch(&out)
                .map_err(|e| format!("the converted output does not convert again: {e}"))?;
            if again != out {
                return Err("converting the output again changed it".into());
            }
            undefined_symbols(&out)
                .map_err(|e| format!("undefined_symbols rejects the converted output: {e}"))?;
        }
        let _ = undefined_symbols(data);
        let _ = TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, data);
        let _ = TargetSymbols::from_elf("fuzz_mod", TargetKind::Module, data);
        let _ = Exports::from_ksymtab(data);
        Ok(())
    };
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            fuzzing::save_crash(&[("input.o", data)]);
            Err(e)
        }
        Err(panic) => {
            fuzzing::save_crash(&[("input.o", data)]);
            std::panic::resume_unwind(panic)
        }
    }
}

/// Module.symvers-like lines: mostly well-formed fields, sometimes not.
fn symvers_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just(String::new()),
        "0x[0-9a-f]{1,16}",
        "[0-9A-Fa-fxX]{0,20}",
        "[a-z_][a-z0-9_]{0,12}",
        "(vmlinux|drivers/net/foo|fs/ext4/ext4)",
        "(EXPORT_SYMBOL|EXPORT_SYMBOL_GPL|EXPORT_SYMBOL_NS|)",
        "\\PC{0,8}",
    ];
    let line = prop::collection::vec(field, 0..7).prop_map(|f| f.join("\t"));
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated(i in any::<Index>(), muts in mutations(6)) {
        let (_, seed) = pick(&i);
        prop_assert_eq!(check(&apply(seed, &muts)), Ok(()));
    }

    #[test]
    fn truncated(i in any::<Index>(), at in any::<Index>(), how in any::<u8>()) {
        let (_, seed) = pick(&i);
        prop_assert_eq!(check(&seed[..cut(seed, at, how)]), Ok(()));
    }

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), header in any::<bool>(), exec in any::<bool>()) {
        let mut data = with_elf_header(bytes, header);
        if exec && data.len() >= 64 {
            data = as_exec(&data);
        }
        prop_assert_eq!(check(&data), Ok(()));
    }

    #[test]
    fn symvers_lines(text in symvers_text()) {
        let _ = Exports::from_module_symvers(&text);
    }

    #[test]
    fn symvers_any_text(text in "\\PC{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Exports::from_module_symvers(&text);
        let _ = Exports::from_module_symvers(&String::from_utf8_lossy(&bytes));
    }
}

/// Every kept corpus file (and every seed) as it is.
#[test]
fn corpus_never_panics() {
    let mut failures = Vec::new();
    for (label, data) in seeds() {
        match std::panic::catch_unwind(|| check(data)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{label}: {e}")),
            Err(_) => failures.push(format!("{label}: panicked")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The built seeds reach the interesting paths: the pre-link object
/// converts into `.klp.rela` sections, the `__ksymtab` object exports.
#[test]
fn seeds_reach_the_readers() {
    let prelink = prelink_object();
    let out = convert_to_livepatch(&prelink).expect("converts");
    assert_ne!(out, prelink);
    assert_eq!(undefined_symbols(&out).expect("undefined"), ["_printk"]);
    assert!(TargetSymbols::from_elf("fuzz_mod", TargetKind::Module, &prelink).is_ok());
    assert!(TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, &as_exec(&prelink)).is_ok());
    let exports = Exports::from_ksymtab(&ksymtab_object()).expect("exports");
    assert!(exports.contains("foo") && exports.contains("bar"));
}
