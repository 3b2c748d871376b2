//! `kpbuild inspect --disasm`: each replacement function decoded (Intel
//! syntax), with the relocations that land inside each instruction.

use super::read::{Elf, Reloc, relocation_type_name};
use super::report::{Disassembly, Function, Instruction};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use relocator::klp::SHF_RELA_LIVEPATCH;

/// The replacement functions that are defined once, with code in the file.
pub(super) fn disassemble(elf: &Elf, functions: &[Function]) -> Vec<Disassembly> {
    let mut out = Vec::new();
    for f in functions {
        let found = elf.defined_functions(&f.new_symbol);
        let [sym] = found[..] else { continue };
        let shndx = usize::from(sym.shndx);
        let section = &elf.sections[shndx];
        let Some(code) = usize::try_from(sym.value)
            .ok()
            .zip(usize::try_from(sym.size).ok())
            .and_then(|(start, size)| section.data.get(start..start.checked_add(size)?))
        else {
            continue;
        };
        let relocs: Vec<&Reloc> = elf.relocs.iter().filter(|r| r.target == shndx).collect();
        out.push(Disassembly {
            symbol: f.new_symbol.clone(),
            replaces: format!("{} {},{}", f.object, f.name, f.position),
            section: section.name.clone(),
            offset: sym.value,
            size: sym.size,
            syntax: "intel",
            instructions: instructions(elf, code, sym.value, &relocs),
        });
    }
    out
}

fn formatter() -> IntelFormatter {
    let mut formatter = IntelFormatter::new();
    let options = formatter.options_mut();
    options.set_first_operand_char_index(8);
    options.set_hex_prefix("0x");
    options.set_hex_suffix("");
    options.set_uppercase_hex(false);
    options.set_branch_leading_zeros(false);
    options.set_space_after_operand_separator(true);
    // Unrelocated RIP-relative operands point nowhere; show them as such.
    options.set_rip_relative_addresses(true);
    formatter
}

/// `code` (at section offset `start`) decoded, with the relocations of its
/// section.
fn instructions(elf: &Elf, code: &[u8], start: u64, relocs: &[&Reloc]) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut formatter = formatter();
    let mut out = Vec::new();
    for instr in &mut decoder {
        let at = instr.ip();
        let end = at + instr.len() as u64;
        let mut text = String::new();
        formatter.format(&instr, &mut text);
        let offset_in_code = (at - start) as usize;
        let bytes = code[offset_in_code..offset_in_code + instr.len()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        let relocations = relocs
            .iter()
            .filter(|r| r.offset >= at && r.offset < end)
            .map(|r| relocation_note(elf, r, at))
            .collect();
        out.push(Instruction {
            offset: at,
            bytes,
            text,
            relocations,
        });
    }
    out
}

/// `+OFFSET: TYPE SYMBOL+ADDEND (who applies it)`.
fn relocation_note(elf: &Elf, r: &Reloc, instruction: u64) -> String {
    let via = if elf.sections[r.rel_section].flags & SHF_RELA_LIVEPATCH != 0 {
        "livepatch"
    } else {
        "module loader"
    };
    format!(
        "+{:#x}: {} {}{:+} ({via})",
        r.offset - instruction,
        relocation_type_name(r.r_type),
        elf.symbol_label(r.sym),
        r.addend
    )
}
