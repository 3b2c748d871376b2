//! Comparison modulo relocations.
//!
//! Two ranges of bytes are equal when they are equal outside relocation
//! fields and each pair of relocations has the same offset and type and
//! points at the same thing: paired symbols with equal addends, or strings
//! with equal contents, or anonymous constants with equal bytes.

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
        if !same_target(o, p, pairs, &ta, &tb) && !same_replacement(o, p, pairs, ro, rp, &ta, &tb) {
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
    let differing: Vec<usize> = (0..len)
        .filter(|&i| !mask[i] && ro.bytes[i] != rp.bytes[i])
        .collect();
    if let Some(&i) = differing.first()
        && !(ro.bytes.len() == rp.bytes.len() && only_line_numbers(p, rp, &differing))
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
];

/// Whether every differing byte lies in the immediate of a `mov $imm, %reg`
/// that loads an argument of a call to a [`LINE_TAKERS`] function made
/// within the next few instructions.
fn only_line_numbers(p: &Input, rp: &Range, differing: &[usize]) -> bool {
    use iced_x86::{Mnemonic, OpKind};
    if rp.code.is_none() {
        return false;
    }
    let mut decoder = Decoder::with_ip(64, rp.bytes, rp.base, DecoderOptions::NONE);
    let insns: Vec<iced_x86::Instruction> =
        std::iter::from_fn(|| decoder.can_decode().then(|| decoder.decode())).collect();
    let calls_line_taker = |insn: &iced_x86::Instruction| {
        insn.mnemonic() == Mnemonic::Call
            && rp.relocs.iter().any(|r| {
                r.r_offset > insn.ip()
                    && r.r_offset < insn.next_ip()
                    && LINE_TAKERS.contains(&p.sym_name(p.reloc_sym(r)).as_str())
            })
    };
    differing.iter().all(|&at| {
        let at = rp.base + at as u64;
        let Some(i) = insns.iter().position(|x| x.ip() <= at && at < x.next_ip()) else {
            return false;
        };
        let insn = &insns[i];
        let is_line_load = insn.mnemonic() == Mnemonic::Mov
            && insn.op_count() == 2
            && insn.op0_kind() == OpKind::Register
            && matches!(
                insn.op1_kind(),
                OpKind::Immediate32 | OpKind::Immediate32to64
            )
            && at >= insn.next_ip() - 4;
        is_line_load && insns[i + 1..].iter().take(6).any(calls_line_taker)
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
