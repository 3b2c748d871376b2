//! The report for people ([`human`]) and for programs ([`json`]).

use super::report::{Disassembly, Function, Kind, Report};
use relocator::resolve::{CALLBACKS_SECTION, FUNCTIONS_SECTION};
use std::collections::BTreeMap;
use std::fmt::Write as _;

// `write!` into a `String` cannot fail; its results are ignored below.

/// The report for people.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let kind = match report.kind {
        Kind::Object => "livepatch object",
        Kind::Module => "kernel module",
    };
    let _ = writeln!(out, "{}: {kind}", report.file);
    functions(&mut out, report);
    callbacks(&mut out, report);
    relocations(&mut out, report);
    loader_symbols(&mut out, report);
    modinfo_and_signature(&mut out, report);
    if let Some(listing) = &report.disassembly {
        disassembly(&mut out, report, listing);
    }
    problems(&mut out, report);
    out
}

/// The report as one pretty JSON object, fields in declaration order.
pub fn json(report: &Report) -> String {
    // Serialized directly (not through `Value`) to keep the field order.
    serde_json::to_string_pretty(report).expect("the report serializes")
}

fn functions(out: &mut String, report: &Report) {
    if !report.functions_section {
        let _ = writeln!(
            out,
            "no {FUNCTIONS_SECTION} section (not built by kpbuild); global functions:"
        );
        if report.global_functions.is_empty() {
            out.push_str("  (none)\n");
        }
        for g in &report.global_functions {
            let _ = writeln!(out, "  {} ({}, {} bytes)", g.name, g.section, g.size);
        }
        return;
    }
    let _ = writeln!(out, "patched functions ({FUNCTIONS_SECTION}):");
    if report.functions.is_empty() {
        out.push_str("  (none)\n");
    }
    let mut by_object: BTreeMap<&str, Vec<&Function>> = BTreeMap::new();
    for f in &report.functions {
        by_object.entry(&f.object).or_default().push(f);
    }
    for (object, functions) in by_object {
        let _ = writeln!(out, "  {object}:");
        for f in functions {
            let _ = writeln!(
                out,
                "    {},{} (old size {}) → {}",
                f.name, f.position, f.old_size, f.new_symbol
            );
        }
    }
}

fn callbacks(out: &mut String, report: &Report) {
    if report.callbacks.is_empty() {
        return;
    }
    let _ = writeln!(out, "callbacks ({CALLBACKS_SECTION}):");
    for c in &report.callbacks {
        let _ = writeln!(
            out,
            "  {}: {} {} → {}",
            c.object, c.kind, c.function, c.symbol
        );
    }
}

fn relocations(out: &mut String, report: &Report) {
    out.push_str("livepatch relocations:\n");
    if report.livepatch_relocations.is_empty() {
        out.push_str("  (none)\n");
    }
    let mut last_section = None;
    for r in &report.livepatch_relocations {
        if last_section != Some(&r.section) {
            let _ = writeln!(out, "  {} → {}:", r.section, r.applies_to);
            last_section = Some(&r.section);
        }
        let parsed = match (&r.object, &r.name, r.position) {
            (Some(o), Some(n), Some(p)) => format!(" [{o} {n},{p}]"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "    +{:#x} {} {}{parsed} addend {}",
            r.offset, r.r_type, r.symbol, r.addend
        );
    }
}

fn loader_symbols(out: &mut String, report: &Report) {
    out.push_str("resolved by the module loader:\n");
    if report.loader_symbols.is_empty() {
        out.push_str("  (none)\n");
    }
    for s in &report.loader_symbols {
        let weak = if s.weak { " (weak)" } else { "" };
        let _ = writeln!(out, "  {}{weak}", s.name);
    }
}

fn modinfo_and_signature(out: &mut String, report: &Report) {
    if let Some(m) = &report.modinfo {
        out.push_str("modinfo:\n");
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(missing)".into());
        let _ = writeln!(out, "  name: {}", show(&m.name));
        let _ = writeln!(out, "  vermagic: {}", show(&m.vermagic));
        let _ = writeln!(out, "  livepatch: {}", show(&m.livepatch));
        let _ = writeln!(out, "  license: {}", show(&m.license));
    }
    let Some(s) = &report.signature else {
        return;
    };
    match (s.appended, s.length, &s.id_type) {
        (true, Some(len), Some(id)) => {
            let _ = writeln!(out, "signature: appended ({id}, {len} bytes)");
            if let Some(signer) = &s.signer {
                let _ = writeln!(out, "  signer: {signer}");
            }
            if let Some(hash) = &s.hash {
                let _ = writeln!(out, "  hash: {hash}");
            }
        }
        _ => out.push_str("signature: none\n"),
    }
}

fn disassembly(out: &mut String, report: &Report, listing: &[Disassembly]) {
    if listing.is_empty() {
        let why = if report.functions_section {
            "no replacement function found"
        } else {
            "without the function list the replacements are unknown"
        };
        let _ = writeln!(out, "disassembly: none ({why})");
    }
    for d in listing {
        let _ = writeln!(
            out,
            "disassembly of {} (replaces {}), {}+{:#x}, {} bytes, Intel syntax:",
            d.symbol, d.replaces, d.section, d.offset, d.size
        );
        for i in &d.instructions {
            let _ = writeln!(out, "  {:6x}:  {:<30} {}", i.offset, i.bytes, i.text);
            for r in &i.relocations {
                let _ = writeln!(out, "  {:6}   {:<30}   ; reloc {r}", "", "");
            }
        }
    }
}

fn problems(out: &mut String, report: &Report) {
    if report.problems.is_empty() {
        out.push_str("problems: none\n");
        return;
    }
    let _ = writeln!(out, "problems ({}):", report.problems.len());
    for p in &report.problems {
        let _ = writeln!(out, "  - {p}");
    }
}
