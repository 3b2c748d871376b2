//! What the kernel would reject or get wrong in a file [`super::read`] has
//! read: each check appends *problems*, sentences naming the section,
//! symbol or field and what the 6.12 module loader (`kernel/module/main.c`,
//! `arch/x86/kernel/module.c`) or livepatch core (`kernel/livepatch/core.c`)
//! does with it. [`super::inspect`] runs them in a fixed order, which is the
//! order the problems are reported in.

use super::read::{AppendedSignature, Elf, FunctionList, Reloc, Section, Symbol};
use super::read::{is_klp_rela, klp_rela_name, relocation_type_name};
use super::report::{Callback, Function, KlpRelocation, Modinfo};
use modsign::{PKEY_ID_PKCS7, Trailer};
use object::elf;
use relocator::klp::{
    KLP_RELA_PREFIX, KLP_SYM_PREFIX, MAX_OBJ_NAME, SHF_RELA_LIVEPATCH, SHN_LIVEPATCH,
    parse_klp_symbol_name,
};
use relocator::resolve::{CALLBACKS_SECTION, FUNCTIONS_SECTION};
use std::collections::BTreeSet;

// x86_64 relocation types the module loader applies
// (arch/x86/kernel/module.c __write_relocate_add).
const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32: u32 = 10;
const R_X86_64_32S: u32 = 11;
const R_X86_64_PC64: u32 = 24;

/// Bytes the module loader writes for a relocation type; `None` when it
/// refuses the type ("Unknown rela relocation", -ENOEXEC).
fn loader_write_size(r_type: u32) -> Option<usize> {
    match r_type {
        R_X86_64_NONE => Some(0),
        R_X86_64_64 | R_X86_64_PC64 => Some(8),
        R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32 | R_X86_64_32S => Some(4),
        _ => None,
    }
}

fn shndx_label(shndx: u16) -> String {
    match shndx {
        0 => "SHN_UNDEF".into(),
        0xfff1 => "SHN_ABS".into(),
        0xfff2 => "SHN_COMMON".into(),
        n => format!("{n:#x}"),
    }
}

fn is_klp_symbol(s: &Symbol) -> bool {
    s.name.starts_with(KLP_SYM_PREFIX) || s.shndx == SHN_LIVEPATCH
}

/// The framing of an appended signature (kernel/module_signature.c
/// `mod_check_sig`).
pub(super) fn signature(sig: &AppendedSignature, problems: &mut Vec<String>) {
    let (info, offset) = match sig.trailer {
        None => return,
        Some(Trailer::NoRoom) => {
            problems.push(
                "the file ends with the signature marker but has no room for struct \
                 module_signature before it"
                    .into(),
            );
            return;
        }
        Some(Trailer::Header { info, offset }) => (info, offset),
    };
    let sig_len = info.sig_len;
    if sig_len as usize >= offset {
        problems.push(format!(
            "the signature claims {sig_len} bytes but only {offset} precede its header: the \
             kernel rejects the module (-EBADMSG)"
        ));
    } else if info.id_type != PKEY_ID_PKCS7 {
        let id_type = sig.signature.id_type.as_deref().unwrap_or_default();
        problems.push(format!(
            "the signature is {id_type}, not PKCS#7: the kernel cannot verify it (-ENOPKG)"
        ));
    } else if !info.unused_fields_zero() {
        problems.push(
            "struct module_signature has non-zero algo/hash/signer_len/key_id_len/pad: the \
             kernel rejects the module (-EBADMSG)"
                .into(),
        );
    }
}

/// Every line of `.kpbuild.functions` parses, no function is replaced twice,
/// each replacement is defined here once.
pub(super) fn functions(elf: &Elf, list: &FunctionList, problems: &mut Vec<String>) {
    let lines = list.lines;
    if list.functions.len() != lines {
        problems.push(format!(
            "{FUNCTIONS_SECTION}: {} of {lines} lines are not `OBJ OLD_NAME POS OLD_SIZE \
             NEW_SYMBOL`",
            lines - list.functions.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for f in &list.functions {
        if !seen.insert((&f.object, &f.name, f.position)) {
            problems.push(format!(
                "{} {},{} is replaced twice: livepatch cannot register both (its sysfs entry \
                 `{},{}` exists, -EEXIST)",
                f.object, f.name, f.position, f.name, f.position
            ));
        }
        match elf.defined_functions(&f.new_symbol).len() {
            1 => {}
            0 => problems.push(format!(
                "replacement {} of {} {},{} is not a function defined in this file",
                f.new_symbol, f.object, f.name, f.position
            )),
            n => problems.push(format!(
                "replacement {} of {} {},{} is defined {n} times",
                f.new_symbol, f.object, f.name, f.position
            )),
        }
    }
}

/// Every line of the callback list parses and each alias is a defined
/// global function here.
pub(super) fn callbacks(elf: &Elf, entries: &[Option<Callback>], problems: &mut Vec<String>) {
    for entry in entries {
        let Some(c) = entry else {
            problems.push(format!(
                "{CALLBACKS_SECTION}: a line is not `OBJ KIND FUNCTION SYMBOL`"
            ));
            continue;
        };
        let defined = elf.symbols.iter().any(|s| {
            s.name == c.symbol
                && s.st_type == elf::STT_FUNC.0
                && s.bind == elf::STB_GLOBAL.0
                && s.shndx != 0
        });
        if !defined {
            problems.push(format!(
                "callback {} ({} of {}): its symbol {} is not a defined global function",
                c.function, c.kind, c.object, c.symbol
            ));
        }
    }
}

/// Section-level checks of every section named or flagged as a livepatch
/// relocation section.
pub(super) fn relocation_sections(elf: &Elf, problems: &mut Vec<String>) {
    for s in &elf.sections {
        let named = s.name.starts_with(KLP_RELA_PREFIX);
        let flagged = s.flags & SHF_RELA_LIVEPATCH != 0;
        if !named && !flagged {
            continue;
        }
        if !is_klp_rela(s) {
            problems.push(format!(
                "{} is not a relocation section (sh_type {}) but is {}",
                s.name,
                s.sh_type,
                if flagged {
                    "flagged SHF_RELA_LIVEPATCH"
                } else {
                    "named like one"
                }
            ));
            continue;
        }
        klp_section(elf, s, named, flagged, problems);
    }
}

/// One livepatch relocation section: flags, type, name, target, links.
fn klp_section(elf: &Elf, s: &Section, named: bool, flagged: bool, problems: &mut Vec<String>) {
    let target = s.info as usize;
    let target_name = elf.section_name(target);
    if named && !flagged {
        problems.push(format!(
            "{} lacks SHF_RELA_LIVEPATCH (0x100000): the module loader applies it as an \
             ordinary relocation section at load time, taking the unresolved livepatch \
             symbols as 0, so the patched code points at wrong addresses",
            s.name
        ));
    }
    if s.sh_type == elf::SHT_REL.0 {
        problems.push(format!(
            "{} is SHT_REL: livepatch reads every livepatch relocation section as Elf64_Rela",
            s.name
        ));
    }
    match klp_rela_name(&s.name) {
        None => problems.push(format!(
            "{} is not named .klp.rela.OBJ.SECTION: livepatch rejects it (\"incorrectly \
             formatted name\", -EINVAL)",
            s.name
        )),
        Some((obj, sec)) => {
            if obj.len() > MAX_OBJ_NAME {
                problems.push(format!(
                    "{}: object name longer than {MAX_OBJ_NAME} bytes; livepatch truncates it \
                     and never applies these relocations",
                    s.name
                ));
            }
            if sec != target_name {
                problems.push(format!(
                    "{} applies to {target_name} (sh_info {target}), not to the {sec} its name \
                     says",
                    s.name
                ));
            }
        }
    }
    if flagged && !s.alloc() {
        problems.push(format!(
            "{} is not SHF_ALLOC: module-format.rst requires it, livepatch reads it after \
             the module's load image is freed",
            s.name
        ));
    }
    match elf.sections.get(target) {
        None => problems.push(format!(
            "{} applies to section {target}, which does not exist",
            s.name
        )),
        Some(t) if !t.alloc() => problems.push(format!(
            "{} applies to {}, which is not loaded (not SHF_ALLOC)",
            s.name, t.name
        )),
        Some(_) => {}
    }
    if elf.symtab.is_none_or(|symtab| s.link as usize != symtab) {
        problems.push(format!(
            "{} is not linked to the symbol table (sh_link {})",
            s.name, s.link
        ));
    }
}

/// Every relocation entry: its symbol, and where it writes.
pub(super) fn relocation_entries(elf: &Elf, problems: &mut Vec<String>) {
    for r in &elf.relocs {
        let rel_section = &elf.sections[r.rel_section];
        let sym_label = elf.symbol_label(r.sym);
        let place = format!(
            "{} entry at {}+{:#x} ({sym_label})",
            rel_section.name,
            elf.section_name(r.target),
            r.offset
        );
        let Some(sym) = elf.symbols.get(r.sym) else {
            problems.push(format!(
                "{place}: symbol index {} is beyond the symbol table",
                r.sym
            ));
            continue;
        };
        if is_klp_rela(rel_section) {
            klp_entry(elf, r, sym, &place, problems);
            continue;
        }
        if !elf.sections.get(r.target).is_some_and(Section::alloc) {
            // The module loader skips relocations of unloaded sections.
            continue;
        }
        if is_klp_symbol(sym) {
            problems.push(format!(
                "{place}: an ordinary relocation against livepatch symbol {sym_label}: the \
                 module loader applies it itself, before livepatch resolves the symbol"
            ));
        }
        site(elf, r, &place, problems);
    }
}

/// An entry of a livepatch relocation section (`klp_resolve_symbols`).
fn klp_entry(elf: &Elf, r: &Reloc, sym: &Symbol, place: &str, problems: &mut Vec<String>) {
    let sym_label = elf.symbol_label(r.sym);
    let sec_obj = klp_rela_name(&elf.sections[r.rel_section].name).map(|(obj, _)| obj);
    if !is_klp_symbol(sym) {
        problems.push(format!(
            "{place}: {sym_label} is not a livepatch symbol (st_shndx {}): livepatch rejects \
             it (\"not marked as a livepatch symbol\", -EINVAL)",
            shndx_label(sym.shndx)
        ));
    } else if let (Some(sec_obj), Some((sym_obj, name, _))) =
        (sec_obj, parse_klp_symbol_name(&sym.name))
        && sym_obj != sec_obj
    {
        if sec_obj != "vmlinux" && sym_obj == "vmlinux" {
            problems.push(format!(
                "{place}: vmlinux symbol {name} in a relocation section of module {sec_obj}: \
                 livepatch rejects it (\"invalid access to vmlinux symbol from module-specific \
                 livepatch relocation section\", -EINVAL)"
            ));
        } else {
            let when = if sec_obj == "vmlinux" {
                "when the patch module loads".to_string()
            } else {
                format!("when {sec_obj} loads")
            };
            problems.push(format!(
                "{place}: symbol of {sym_obj} in a relocation section of {sec_obj}: the kernel \
                 does not check this, but looks {name} up in {sym_obj} {when}, which fails \
                 (-EINVAL) unless {sym_obj} is loaded then, and nothing keeps {sym_obj} loaded \
                 afterwards"
            ));
        }
    }
    site(elf, r, place, problems);
}

/// Where a relocation lands and what the module loader finds there.
fn site(elf: &Elf, r: &Reloc, what: &str, problems: &mut Vec<String>) {
    let Some(target) = elf.sections.get(r.target) else {
        return;
    };
    let Some(size) = loader_write_size(r.r_type) else {
        problems.push(format!(
            "{what}: type {} is not one the x86_64 module loader applies (\"Unknown rela \
             relocation\", -ENOEXEC)",
            relocation_type_name(r.r_type)
        ));
        return;
    };
    if target.sh_type == elf::SHT_NOBITS.0 || size == 0 {
        return;
    }
    let site = usize::try_from(r.offset)
        .ok()
        .and_then(|o| target.data.get(o..o.checked_add(size)?));
    match site {
        None => problems.push(format!(
            "{what}: offset {:#x} + {size} bytes lies outside {} ({:#x} bytes)",
            r.offset,
            target.name,
            target.data.len()
        )),
        Some(bytes) if bytes.iter().any(|&b| b != 0) => problems.push(format!(
            "{what}: the {size} bytes at the site are not zero: the module loader refuses to \
             overwrite them (\"Invalid relocation target, existing value is nonzero\", -ENOEXEC)"
        )),
        Some(_) => {}
    }
}

/// Livepatch applies a module's `.klp.rela.OBJ.*` sections only for the
/// patch's `klp_object`s (`klp_init_object_loaded`); kpbuild's glue has one
/// per object of `.kpbuild.functions`. vmlinux's are applied at load.
pub(super) fn klp_objects(
    functions: &[Function],
    relocations: &[KlpRelocation],
    problems: &mut Vec<String>,
) {
    let objects: BTreeSet<&str> = functions.iter().map(|f| f.object.as_str()).collect();
    let mut reported = BTreeSet::new();
    for r in relocations {
        let Some(obj) = r
            .section
            .strip_prefix(KLP_RELA_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .map(|(obj, _)| obj)
        else {
            continue;
        };
        if obj != "vmlinux" && !objects.contains(obj) && reported.insert(obj) {
            problems.push(format!(
                "{}: no function of {obj} is patched, so the patch has no klp_object for {obj} \
                 and livepatch never applies these relocations",
                r.section
            ));
        }
    }
}

/// Livepatch symbols are named and marked as livepatch expects.
pub(super) fn symbols(elf: &Elf, problems: &mut Vec<String>) {
    for sym in elf.symbols.iter().skip(1) {
        if sym.name.starts_with(KLP_SYM_PREFIX) {
            if parse_klp_symbol_name(&sym.name).is_none() {
                problems.push(format!(
                    "{} is not .klp.sym.OBJ.NAME,POS within the kernel's limits: livepatch \
                     rejects it (\"incorrectly formatted name\", -EINVAL)",
                    sym.name
                ));
            }
            if sym.shndx == 0 {
                problems.push(format!(
                    "{} is undefined (SHN_UNDEF), not SHN_LIVEPATCH (0xff20): the module loader \
                     looks it up as an ordinary symbol and fails (\"Unknown symbol\"); the file \
                     is in pre-link form (not converted after the final link)",
                    sym.name
                ));
            } else if sym.shndx != SHN_LIVEPATCH {
                problems.push(format!(
                    "{} has st_shndx {}, not SHN_LIVEPATCH (0xff20): livepatch rejects \
                     relocations against it (\"not marked as a livepatch symbol\", -EINVAL)",
                    sym.name,
                    shndx_label(sym.shndx)
                ));
            }
        } else if sym.shndx == SHN_LIVEPATCH {
            problems.push(format!(
                "symbol {:?} has st_shndx SHN_LIVEPATCH but is not named .klp.sym.OBJ.NAME,POS",
                sym.name
            ));
        }
    }
}

/// A module's `.modinfo` has what loading a livepatch module needs.
pub(super) fn modinfo(
    info: &Modinfo,
    present: bool,
    has_klp_relocations: bool,
    problems: &mut Vec<String>,
) {
    if !present {
        problems.push("the module has no .modinfo".into());
    }
    if info.livepatch.as_deref() != Some("Y") {
        let also = if has_klp_relocations {
            "; its livepatch relocations for modules are never applied"
        } else {
            ""
        };
        problems.push(format!(
            "modinfo has no livepatch=Y: klp_enable_patch rejects the module (\"not marked as a \
             livepatch module\", -EINVAL){also}"
        ));
    }
    if info.name.is_none() {
        problems.push("modinfo has no name=".into());
    }
    if info.vermagic.is_none() {
        problems.push(
            "modinfo has no vermagic=: the module loader refuses it unless loading is forced"
                .into(),
        );
    }
    if info.license.is_none() {
        problems.push(
            "modinfo has no license=: the module cannot use GPL-only exports such as \
             klp_enable_patch"
                .into(),
        );
    }
}
