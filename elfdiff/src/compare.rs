//! Comparison modulo relocations.
//!
//! Two ranges of bytes are equal when they are equal outside relocation
//! fields and each pair of relocations has the same offset and type and
//! points at the same thing: paired symbols with equal addends, or strings
//! with equal contents, or anonymous constants with equal bytes.
//!
//! Moved source lines are no change. A line number is recognised only where
//! the kernel writes one: the line field of a special-section entry or
//! descriptor (the caller's ignored ranges: `__bug_table`, `__dyndbg`), the
//! number after `file.c:` or `file.h:` in a string (`FILE_LINE`), and the
//! 32-bit immediate of a `mov $imm, %reg` that loads an argument of the
//! next call (or tail call), between 1 and 2^20 on both sides, when the
//! callee is a known line taker (`LINE_TAKERS`: any such argument;
//! `LINE_ARGUMENTS`: that argument) or the argument directly follows one
//! that the same call gets `__func__.N` or a source file name in (the
//! `func, line` / `file, line` pairs of `__ext4_error`, `__might_sleep`,
//! `__btrfs_handle_fs_error`, `gfs2_consist_i`). Everything judged so is
//! noted for the report; any other differing byte is a change.

use crate::input::{Input, SectionId, SymKind, SymbolId, is_pc_relative, reloc_width};
use crate::pairs::Pairs;
use iced_x86::{Decoder, DecoderOptions};
use object::build::elf::Relocation;
use object::elf;

/// Where a relocation points, in terms that survive renumbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A symbol plus an offset from its start (addend as written, minus the
    /// symbol's value when reached through a section symbol).
    Symbol(SymbolId, i64),
    /// A NUL-terminated string in a merged string section, plus the bias.
    String(Vec<u8>, i64),
    /// Bytes of an anonymous constant in a merged constant section.
    Constant(Vec<u8>, i64),
    /// A place in a section that no symbol covers.
    Section(SectionId, i64),
}

/// For code: the distance from each relocation field to the end of its
/// instruction, which turns a PC-relative addend into an offset in the target.
pub struct CodeBias {
    ends: Vec<u64>,
}

impl CodeBias {
    /// Decodes `code` (placed at section offset `base`).
    pub fn new(code: &[u8], base: u64) -> Self {
        let mut decoder = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
        let mut ends = Vec::new();
        while decoder.can_decode() {
            let insn = decoder.decode();
            ends.push(insn.next_ip());
        }
        CodeBias { ends }
    }

    /// Offset of the referenced place relative to `S + A` for a relocation at
    /// `offset` (section offset).
    pub fn bias(&self, offset: u64, r_type: elf::RelocationType) -> i64 {
        if !is_pc_relative(r_type) {
            return 0;
        }
        let i = self.ends.partition_point(|&end| end <= offset);
        match self.ends.get(i) {
            Some(&end) => (end - offset) as i64,
            None => reloc_width(r_type).unwrap_or(4) as i64,
        }
    }
}

/// No bias: data relocations point exactly at `S + A`.
pub const NO_BIAS: Option<&CodeBias> = None;

fn flags(input: &Input, section: SectionId) -> u64 {
    input.section(section).sh_flags.0
}

/// Whether a section is a merged string section.
pub fn is_string_section(input: &Input, section: SectionId) -> bool {
    let f = flags(input, section);
    f & elf::SHF_MERGE.0 != 0 && f & elf::SHF_STRINGS.0 != 0
}

/// Whether a section is a merged constant section (`.rodata.cst16`).
pub fn is_merge_section(input: &Input, section: SectionId) -> bool {
    flags(input, section) & elf::SHF_MERGE.0 != 0
}

/// Resolves where a relocation points.
pub fn target(input: &Input, r: &Relocation, bias: i64) -> Target {
    let sym = input.reloc_sym(r);
    // Assembler labels (`.LC13`, kept by gas for references into mergeable
    // sections) name a place, not a thing: treat them like the section
    // symbol plus their value.
    let (section, addend) = match input.section_relative(sym) {
        Some(base) => base,
        None => return Target::Symbol(sym, r.r_addend),
    };
    let addend = r.r_addend.saturating_add(addend);
    let place = addend.saturating_add(bias);
    if is_string_section(input, section) {
        let data = input.data(section);
        let start = (place.max(0) as usize).min(data.len());
        let end = data[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(data.len(), |n| start + n);
        return Target::String(data[start..end].to_vec(), bias);
    }
    if is_merge_section(input, section) {
        let entsize = input.section(section).sh_entsize.max(1) as usize;
        let data = input.data(section);
        let start = (place.max(0) as usize).min(data.len());
        let end = (start + entsize).min(data.len());
        return Target::Constant(data[start..end].to_vec(), bias);
    }
    match input.covering(section, place) {
        Some(s) => Target::Symbol(s, addend.wrapping_sub(input.sym(s).st_value as i64)),
        None => Target::Section(section, addend),
    }
}

/// Whether two targets are the same thing under the pairing.
pub fn same_target(o: &Input, p: &Input, pairs: &Pairs, to: &Target, tp: &Target) -> bool {
    match (to, tp) {
        (Target::Symbol(so, ao), Target::Symbol(sp, ap)) => {
            ao == ap
                && match pairs.p2o.get(sp) {
                    Some(paired) => paired == so,
                    // Unpaired undefined symbols compare by name.
                    None => {
                        o.kind(*so) == SymKind::Undefined
                            && p.kind(*sp) == SymKind::Undefined
                            && o.sym_name(*so) == p.sym_name(*sp)
                    }
                }
        }
        (Target::String(a, ba), Target::String(b, bb)) => a == b && ba == bb,
        (Target::Constant(a, ba), Target::Constant(b, bb)) => a == b && ba == bb,
        (Target::Section(so, ao), Target::Section(sp, ap)) => {
            let (no, np) = (o.section_name(*so), p.section_name(*sp));
            ao == ap
                && if crate::special::is_ubsan(&np) {
                    // Numbered per unit (`.data..Lubsan_data12`): the same
                    // descriptor when its contents are.
                    canonical_section(&no) == canonical_section(&np)
                        && same_private_section(o, p, *so, *sp, 2)
                } else {
                    no == np
                }
        }
        _ => false,
    }
}

/// A section name without the label number the compiler gave it.
fn canonical_section(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Whether two sections private to their use site (UBSAN descriptors) hold
/// the same thing: equal bytes outside source positions, and relocations
/// to the same strings or, `depth` levels down, to equal private sections.
fn same_private_section(o: &Input, p: &Input, so: SectionId, sp: SectionId, depth: u32) -> bool {
    let (bo, bp) = (o.data(so), p.data(sp));
    let (ro, rp) = (o.relocs(so), p.relocs(sp));
    if bo.len() != bp.len() || ro.len() != rp.len() {
        return false;
    }
    let ignore = crate::special::ignored_in_private_section(&p.section_name(sp), bp.len() as u64);
    let mut mask = vec![false; bo.len()];
    for (off, len) in ignore {
        mask.iter_mut()
            .skip(*off)
            .take(*len)
            .for_each(|m| *m = true);
    }
    for (a, b) in ro.iter().zip(rp) {
        if a.r_offset != b.r_offset || a.r_type != b.r_type {
            return false;
        }
        let width = reloc_width(a.r_type).unwrap_or(0);
        mask.iter_mut()
            .skip(a.r_offset as usize)
            .take(width)
            .for_each(|m| *m = true);
        let same = match (target(o, a, 0), target(p, b, 0)) {
            (Target::Section(to, x), Target::Section(tp, y)) => {
                depth > 0
                    && x == y
                    && crate::special::is_ubsan(&p.section_name(tp))
                    && canonical_section(&o.section_name(to))
                        == canonical_section(&p.section_name(tp))
                    && same_private_section(o, p, to, tp, depth - 1)
            }
            (Target::Symbol(..), Target::Symbol(..)) => false,
            (to, tp) => to == tp,
        };
        if !same {
            return false;
        }
    }
    bo.iter()
        .zip(bp)
        .zip(&mask)
        .all(|((x, y), &masked)| masked || x == y)
}

/// The first difference between two byte ranges with their relocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Offset from the start of the range.
    pub offset: u64,
    /// What differs.
    pub what: String,
}

/// A range of an object to compare: bytes, base offset, relocations.
pub struct Range<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// Section offset of the first byte.
    pub base: u64,
    /// Relocations inside the range (section offsets).
    pub relocs: Vec<&'a Relocation>,
    /// Bias source for code, `None` for data.
    pub code: Option<CodeBias>,
    /// Byte ranges (relative offset, len) to ignore.
    pub ignore: &'a [(usize, usize)],
}

impl<'a> Range<'a> {
    /// The range of a symbol; code is decoded for PC-relative biases.
    pub fn of_symbol(input: &'a Input, id: SymbolId) -> Self {
        let s = input.sym(id);
        let bytes = input.sym_bytes(id);
        let mut relocs: Vec<&Relocation> = input.sym_relocs(id).collect();
        relocs.sort_by_key(|r| r.r_offset);
        let code = (input.kind(id) == SymKind::Func).then(|| CodeBias::new(bytes, s.st_value));
        Range {
            bytes,
            base: s.st_value,
            relocs,
            code,
            ignore: &[],
        }
    }

    /// The bias of a relocation inside this range.
    pub fn bias(&self, r: &Relocation) -> i64 {
        self.code
            .as_ref()
            .map_or(0, |c| c.bias(r.r_offset, r.r_type))
    }
}

/// Compares two ranges; `None` when equal.
pub fn compare(o: &Input, p: &Input, pairs: &Pairs, ro: &Range, rp: &Range) -> Option<Difference> {
    compare_judged(o, p, pairs, ro, rp, &mut Vec::new())
}

/// As [`compare`], and notes in `judged` each difference it judged to be a
/// moved source line only (an argument `__LINE__`, a `file.c:LINE` string).
pub fn compare_judged(
    o: &Input,
    p: &Input,
    pairs: &Pairs,
    ro: &Range,
    rp: &Range,
    judged: &mut Vec<String>,
) -> Option<Difference> {
    let mut mask = vec![false; ro.bytes.len().max(rp.bytes.len())];
    for (off, len) in ro.ignore {
        for m in mask.iter_mut().skip(*off).take(*len) {
            *m = true;
        }
    }
    let n = ro.relocs.len().min(rp.relocs.len());
    let mut first: Option<Difference> = None;
    let mut note = |d: Difference| {
        if first.as_ref().is_none_or(|f| d.offset < f.offset) {
            first = Some(d);
        }
    };
    for i in 0..n {
        let (a, b) = (ro.relocs[i], rp.relocs[i]);
        let (oa, ob) = (a.r_offset - ro.base, b.r_offset - rp.base);
        if oa != ob || a.r_type != b.r_type {
            note(Difference {
                offset: oa.min(ob),
                what: "relocations differ".into(),
            });
            break;
        }
        let ta = target(o, a, ro.bias(a));
        let tb = target(p, b, rp.bias(b));
        if let Some(note) = line_only_strings(&ta, &tb) {
            judged.push(note);
        } else if !same_target(o, p, pairs, &ta, &tb)
            && !same_replacement(o, p, pairs, ro, rp, &ta, &tb)
        {
            note(Difference {
                offset: oa,
                what: format!(
                    "reference differs: {} vs {}",
                    describe(o, &ta),
                    describe(p, &tb)
                ),
            });
        }
        let width = reloc_width(a.r_type).unwrap_or(0);
        for m in mask.iter_mut().skip(oa as usize).take(width) {
            *m = true;
        }
    }
    if ro.relocs.len() != rp.relocs.len() {
        let at = ro.relocs.get(n).or(rp.relocs.get(n));
        let offset = at.map_or(0, |r| r.r_offset.saturating_sub(ro.base.min(rp.base)));
        note(Difference {
            offset,
            what: "number of relocations differs".into(),
        });
    }
    let len = ro.bytes.len().min(rp.bytes.len());
    note_ignored_fields(ro, rp, judged);
    let differing: Vec<usize> = (0..len)
        .filter(|&i| !mask[i] && ro.bytes[i] != rp.bytes[i])
        .collect();
    if let Some(&i) = differing.first()
        && !(ro.bytes.len() == rp.bytes.len() && only_line_numbers(p, ro, rp, &differing, judged))
    {
        note(Difference {
            offset: i as u64,
            what: "code differs".into(),
        });
    }
    if ro.bytes.len() != rp.bytes.len() {
        note(Difference {
            offset: len as u64,
            what: "size differs".into(),
        });
    }
    first
}

/// Notes each ignored field (a line number: `__bug_table`'s, a
/// dynamic-debug descriptor's) that differs between the two ranges.
fn note_ignored_fields(ro: &Range, rp: &Range, judged: &mut Vec<String>) {
    for &(off, len) in ro.ignore {
        let (Some(a), Some(b)) = (ro.bytes.get(off..off + len), rp.bytes.get(off..off + len))
        else {
            continue;
        };
        if a != b {
            let value = |x: &[u8]| x.iter().rev().fold(0u64, |v, &byte| (v << 8) | byte as u64);
            judged.push(format!(
                "line field at +{off:#x}: {} → {}",
                value(a),
                value(b)
            ));
        }
    }
}

/// Human-readable form of a target.
pub fn describe(input: &Input, t: &Target) -> String {
    match t {
        Target::Symbol(s, a) => format!("{}{a:+}", input.sym_name(*s)),
        Target::String(s, _) => format!("\"{}\"", String::from_utf8_lossy(s).escape_default()),
        Target::Constant(b, _) => format!("constant {b:02x?}"),
        Target::Section(s, a) => format!("{}{a:+}", input.section_name(*s)),
    }
}

/// Functions whose arguments include the caller's `__LINE__`: a change that
/// only moves such a call to another line is no functional change.
const LINE_TAKERS: &[&str] = &[
    "__might_sleep",
    "___might_sleep",
    "__might_resched",
    "__might_fault",
    "__cant_sleep",
    "__cant_migrate",
    "lockdep_rcu_suspicious",
    "__warn_printk",
    "lockdep_init_map_type",
    "lockdep_init_map_waits",
];

/// Functions whose argument N (from 0) is the caller's `__LINE__` with no
/// `__func__` or file name passed just before it (from the 6.12 headers).
const LINE_ARGUMENTS: &[(&str, usize)] = &[
    ("__ext4_journal_start_sb", 2),
    ("__ext4_journal_start_reserved", 1),
];

/// The registers of the first six integer arguments (System V x86-64).
const ARGUMENT_REGISTERS: [iced_x86::Register; 6] = [
    iced_x86::Register::RDI,
    iced_x86::Register::RSI,
    iced_x86::Register::RDX,
    iced_x86::Register::RCX,
    iced_x86::Register::R8,
    iced_x86::Register::R9,
];

/// The argument index of a register, when it passes one.
fn argument_index(r: iced_x86::Register) -> Option<usize> {
    use iced_x86::Register as R;
    let full = match r {
        R::EDI => R::RDI,
        R::ESI => R::RSI,
        R::EDX => R::RDX,
        R::ECX => R::RCX,
        R::R8D => R::R8,
        R::R9D => R::R9,
        other => other,
    };
    ARGUMENT_REGISTERS.iter().position(|&x| x == full)
}

/// The largest value taken for a source line number.
const MAX_LINE: u32 = 1 << 20;

/// Whether every differing byte lies in the 32-bit immediate of a
/// `mov $imm, %reg` that loads an argument of the next call, the immediate
/// is a plausible line number on both sides, and that argument is a
/// `__LINE__`: the callee is one of [`LINE_TAKERS`] (any argument) or
/// [`LINE_ARGUMENTS`] (that argument), or the argument comes right after
/// one that the same call gets `__func__` or a source file's name in
/// (`__ext4_error(sb, __func__, __LINE__, …)`, `__might_sleep(__FILE__,
/// __LINE__)`, `gfs2_consist_i(sdp, __func__, __FILE__, __LINE__)`). Each
/// judged immediate is noted in `judged`.
fn only_line_numbers(
    p: &Input,
    ro: &Range,
    rp: &Range,
    differing: &[usize],
    judged: &mut Vec<String>,
) -> bool {
    if rp.code.is_none() {
        return false;
    }
    let mut decoder = Decoder::with_ip(64, rp.bytes, rp.base, DecoderOptions::NONE);
    let insns: Vec<iced_x86::Instruction> =
        std::iter::from_fn(|| decoder.can_decode().then(|| decoder.decode())).collect();
    let mut notes = Vec::new();
    let all = differing.iter().all(|&at| {
        let at = rp.base + at as u64;
        insns
            .iter()
            .position(|x| x.ip() <= at && at < x.next_ip())
            .and_then(|i| line_argument(p, ro, rp, &insns, i, at))
            .map(|note| notes.push(note))
            .is_some()
    });
    if all {
        notes.dedup();
        judged.extend(notes);
    }
    all
}

/// When instruction `i` (holding differing byte `at`) loads a `__LINE__`
/// argument of the next call (see [`only_line_numbers`]): a note saying so.
fn line_argument(
    p: &Input,
    ro: &Range,
    rp: &Range,
    insns: &[iced_x86::Instruction],
    i: usize,
    at: u64,
) -> Option<String> {
    use iced_x86::{Mnemonic, OpKind};
    let insn = &insns[i];
    let is_line_load = insn.mnemonic() == Mnemonic::Mov
        && insn.op_count() == 2
        && insn.op0_kind() == OpKind::Register
        && matches!(
            insn.op1_kind(),
            OpKind::Immediate32 | OpKind::Immediate32to64
        )
        && at >= insn.next_ip() - 4;
    if !is_line_load {
        return None;
    }
    let field = (insn.next_ip() - 4 - rp.base) as usize;
    let value = |b: &[u8]| {
        b.get(field..field + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let (old, new) = (value(ro.bytes)?, value(rp.bytes)?);
    if !(1..MAX_LINE).contains(&old) || !(1..MAX_LINE).contains(&new) {
        return None;
    }
    // A call, or a tail call: a jump to a symbol.
    let is_call = |x: &iced_x86::Instruction| {
        x.mnemonic() == Mnemonic::Call
            || x.mnemonic() == Mnemonic::Jmp
                && rp
                    .relocs
                    .iter()
                    .any(|r| r.r_offset >= x.ip() && r.r_offset < x.next_ip())
    };
    let call = i + 1 + insns[i + 1..].iter().position(is_call)?;
    let names = |insn: &iced_x86::Instruction| -> Vec<String> {
        rp.relocs
            .iter()
            .filter(|r| r.r_offset >= insn.ip() && r.r_offset < insn.next_ip())
            .map(|r| line_evidence_name(p, rp, r))
            .collect()
    };
    let callee = names(&insns[call]).pop().unwrap_or_default();
    let arg = argument_index(insn.op0_register());
    let first = insns[..call].iter().rposition(is_call).map_or(0, |k| k + 1);
    let after_name = insns[first..call].iter().any(|x| {
        x.op0_kind() == OpKind::Register
            && arg.is_some_and(|a| argument_index(x.op0_register()) == Some(a.wrapping_sub(1)))
            && names(x)
                .iter()
                .any(|n| n.starts_with("__func__") || is_source_file_name(n))
    });
    let evidence = LINE_TAKERS.contains(&callee.as_str())
        || LINE_ARGUMENTS
            .iter()
            .any(|&(f, n)| f == callee && arg == Some(n))
        || after_name;
    evidence.then(|| format!("line argument of {callee}: {old} → {new}"))
}

/// What a relocation of `range` names, for the evidence that a call takes
/// a line: the symbol's name, or the string it points at.
fn line_evidence_name(p: &Input, range: &Range, r: &Relocation) -> String {
    match target(p, r, range.bias(r)) {
        Target::Symbol(s, _) => p.sym_name(s),
        Target::String(bytes, _) => String::from_utf8_lossy(&bytes).into_owned(),
        Target::Constant(..) | Target::Section(..) => String::new(),
    }
}

/// Whether a string is a C source or header path (`fs/ext4/super.c`).
fn is_source_file_name(s: &str) -> bool {
    (s.ends_with(".c") || s.ends_with(".h")) && !s.contains(char::is_whitespace)
}

/// `file.c:LINE` in a string (`FILE_LINE` of fortify's warnings) with
/// every line number made `#`.
fn without_line_numbers(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        out.push(s[i]);
        i += 1;
        let after_file = out.len() >= 3
            && out.ends_with(b":")
            && matches!(&out[out.len() - 3..out.len() - 1], b".c" | b".h");
        if after_file && s.get(i).is_some_and(u8::is_ascii_digit) {
            out.push(b'#');
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
    }
    out
}

/// Two strings that differ only in the line numbers after source file names
/// (`"field \"x\" at arch/x86/kvm/x86.c:8364"`): a note saying so.
fn line_only_strings(ta: &Target, tb: &Target) -> Option<String> {
    let (Target::String(a, ba), Target::String(b, bb)) = (ta, tb) else {
        return None;
    };
    (a != b && ba == bb && without_line_numbers(a) == without_line_numbers(b)).then(|| {
        format!(
            "string \"{}\" → \"{}\"",
            String::from_utf8_lossy(a).escape_default(),
            String::from_utf8_lossy(b).escape_default()
        )
    })
}

/// Offset of `replacementlen` in `struct alt_instr` (Linux 6.12 x86_64).
const ALT_REPLACEMENTLEN: usize = 13;

/// An `.altinstructions` entry points into `.altinstr_replacement`, whose
/// layout shifts when any other alternative changes: compare the replacement
/// instructions themselves.
fn same_replacement(
    o: &Input,
    p: &Input,
    pairs: &Pairs,
    ro: &Range,
    rp: &Range,
    ta: &Target,
    tb: &Target,
) -> bool {
    let (Target::Section(so, ao), Target::Section(sp, ap)) = (ta, tb) else {
        return false;
    };
    if o.section_name(*so) != ".altinstr_replacement"
        || p.section_name(*sp) != ".altinstr_replacement"
    {
        return false;
    }
    let (Some(&lo), Some(&lp)) = (
        ro.bytes.get(ALT_REPLACEMENTLEN),
        rp.bytes.get(ALT_REPLACEMENTLEN),
    ) else {
        return false;
    };
    if lo != lp || *ao < 0 || *ap < 0 {
        return false;
    }
    let sub = |input: &'_ Input, sec: SectionId, at: i64| -> Option<(u64, usize)> {
        let start = at as u64;
        let end = start + lo as u64;
        (end <= input.data(sec).len() as u64).then_some((start, end as usize))
    };
    let (Some((so_start, so_end)), Some((sp_start, sp_end))) = (sub(o, *so, *ao), sub(p, *sp, *ap))
    else {
        return false;
    };
    let ro2 = Range {
        bytes: &o.data(*so)[so_start as usize..so_end],
        base: so_start,
        relocs: o
            .relocs(*so)
            .iter()
            .filter(|r| r.r_offset >= so_start && (r.r_offset as usize) < so_end)
            .collect(),
        code: Some(CodeBias::new(
            &o.data(*so)[so_start as usize..so_end],
            so_start,
        )),
        ignore: &[],
    };
    let rp2 = Range {
        bytes: &p.data(*sp)[sp_start as usize..sp_end],
        base: sp_start,
        relocs: p
            .relocs(*sp)
            .iter()
            .filter(|r| r.r_offset >= sp_start && (r.r_offset as usize) < sp_end)
            .collect(),
        code: Some(CodeBias::new(
            &p.data(*sp)[sp_start as usize..sp_end],
            sp_start,
        )),
        ignore: &[],
    };
    compare(o, p, pairs, &ro2, &rp2).is_none()
}
