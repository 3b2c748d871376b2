//! The decisions: what changed, what is new, what is refused, and what the
//! livepatch must include.

use crate::compare::{CodeBias, Difference, Range, Target, compare_judged, target};
use crate::correlate::correlate;
use crate::input::{Input, SectionId, SymKind, SymbolId};
use crate::names::cold_parent;
use crate::pairs::Pairs;
use crate::special::{SpecialSection, is_copied_with_code, is_ignored, is_init, special};
use crate::{Error, Options, Refusal};
use object::elf;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One entry of a special section.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The special section.
    pub section: SectionId,
    /// Offset of the entry in it.
    pub offset: u64,
    /// The function the entry is about, and the offset in it.
    pub owner: Option<(SymbolId, i64)>,
}

/// The special-section entries of one object, by owning function.
#[derive(Debug, Default)]
pub struct Entries {
    /// Entries by owner function.
    pub by_owner: HashMap<SymbolId, Vec<Entry>>,
    /// All entries, by special section.
    pub all: BTreeMap<SectionId, Vec<Entry>>,
}

/// The special-section table entry (with overrides) of a section.
pub fn special_for(input: &Input, section: SectionId, options: &Options) -> Option<SpecialSection> {
    let name = input.section_name(section);
    let mut s = *special(&name)?;
    if let Some(&size) = options.entry_sizes.get(&name) {
        s.entry_size = size;
    }
    Some(s)
}

/// Splits every special section of `input` into entries and finds owners.
pub fn entries(input: &Input, options: &Options) -> Result<Entries, Error> {
    let mut out = Entries::default();
    for id in input.sections() {
        let Some(spec) = special_for(input, id, options) else {
            continue;
        };
        let size = input.section_size(id);
        if input.data(id).len() as u64 != size {
            return Err(Error::BadInput {
                file: input.label.clone(),
                why: format!("special section {} has no contents in the file", spec.name),
            });
        }
        if !size.is_multiple_of(spec.entry_size as u64) && !short_last_entry(size, &spec) {
            return Err(Error::EntrySize {
                file: input.label.clone(),
                section: spec.name.to_string(),
                size,
                entry_size: spec.entry_size,
            });
        }
        let relocs = input.relocs(id);
        let mut list = Vec::new();
        for offset in (0..size).step_by(spec.entry_size) {
            let anchor = offset + spec.anchor as u64;
            let owner = relocs.iter().find(|r| r.r_offset == anchor).and_then(|r| {
                match target(input, r, 0) {
                    Target::Symbol(s, off) if input.kind(s) == SymKind::Func => Some((s, off)),
                    _ => None,
                }
            });
            let entry = Entry {
                section: id,
                offset,
                owner,
            };
            if let Some((f, _)) = owner {
                out.by_owner.entry(f).or_default().push(entry.clone());
            }
            list.push(entry);
        }
        out.all.insert(id, list);
    }
    check_parallel_tables(input, options, &out)?;
    Ok(out)
}

/// Whether a special section whose size is no multiple of its entry size
/// ends with an entry that only lacks its tail padding (the assembler emits
/// each entry's fields, not the C struct's padding): the remainder holds the
/// anchor and falls short of a whole entry by less than the struct's
/// alignment, the largest power of two up to 8 that divides the entry size.
fn short_last_entry(size: u64, spec: &SpecialSection) -> bool {
    let rest = (size % spec.entry_size as u64) as usize;
    let align = [8, 4, 2, 1]
        .into_iter()
        .find(|a| spec.entry_size.is_multiple_of(*a))
        .unwrap_or(1);
    rest > 0 && rest >= spec.anchor + 4 && spec.entry_size - rest < align
}

/// A table that follows another entry by entry (`.orc_unwind` beside
/// `.orc_unwind_ip`) must hold exactly one entry per entry of the other.
fn check_parallel_tables(input: &Input, options: &Options, entries: &Entries) -> Result<(), Error> {
    for id in input.sections() {
        let name = input.section_name(id);
        let Some(lead) = crate::special::parallel_of(&name) else {
            continue;
        };
        let entry_size = options
            .entry_sizes
            .get(&name)
            .copied()
            .unwrap_or(crate::special::ORC_ENTRY_SIZE);
        let count = entries
            .all
            .iter()
            .find(|(sec, _)| input.section_name(**sec) == lead.name)
            .map_or(0, |(_, list)| list.len());
        let size = input.section_size(id);
        if size != (count * entry_size) as u64 {
            return Err(Error::BadInput {
                file: input.label.clone(),
                why: format!(
                    "section {name} is {size} bytes, not {count} entries of {entry_size} bytes \
                     (one per entry of {}; set the size with --entry-size {name}=BYTES)",
                    lead.name
                ),
            });
        }
    }
    Ok(())
}

/// A changed function and why.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The function in the patched object.
    pub func: SymbolId,
    /// The first difference.
    pub difference: Difference,
}

/// Everything decided about a pair of objects.
pub struct Analysis {
    /// The symbol pairing.
    pub pairs: Pairs,
    /// Changed functions (patched ids).
    pub changed: Vec<Changed>,
    /// New functions (patched ids).
    pub new: Vec<SymbolId>,
    /// Refusals.
    pub refusals: Vec<Refusal>,
    /// Sections of the patched object the livepatch carries.
    pub include: BTreeSet<SectionId>,
    /// Special-section entries of the patched object.
    pub p_entries: Entries,
    /// Unchanged symbols (patched ids) that differ only where a source line
    /// number is written, with what was judged.
    pub line_only: Vec<(SymbolId, Vec<String>)>,
    /// What kpatch's macros marked in the patched object.
    pub marks: crate::kpatch::Marks,
    /// Changed functions without an ftrace entry, carried by their callers.
    pub carried: Vec<crate::callers::Carried>,
    /// Functions of other units carried there, with their callers here.
    pub elsewhere: Vec<crate::callers::Carried>,
}

fn is_exec(input: &Input, section: SectionId) -> bool {
    input.section(section).sh_flags.0 & elf::SHF_EXECINSTR.0 != 0
}

fn is_writable(input: &Input, section: SectionId) -> bool {
    input.section(section).sh_flags.0 & elf::SHF_WRITE.0 != 0
}

/// The `.cold` parts of a function.
fn cold_parts(input: &Input, func: SymbolId) -> Vec<SymbolId> {
    let name = input.sym_name(func);
    input
        .symbols()
        .filter(|&s| input.kind(s) == SymKind::Func)
        .filter(|&s| cold_parent(&input.sym_name(s)) == Some(name.as_str()))
        // A static function's parts are in its own unit's group.
        .filter(|&s| {
            input
                .file_group(func)
                .is_none_or(|g| input.file_group(s) == Some(g))
        })
        .collect()
}

/// Both objects with their pairing and special-section entries.
struct Sides<'a, 'd> {
    o: &'a Input<'d>,
    p: &'a Input<'d>,
    pairs: &'a Pairs,
    oe: &'a Entries,
    pe: &'a Entries,
    options: &'a Options,
    marks: &'a crate::kpatch::Marks,
}

/// Compares a function with its counterpart: body, `.cold` parts and
/// special-section entries. What it judged a moved line only goes to
/// `judged`.
fn compare_function(
    sides: &Sides,
    of: SymbolId,
    pf: SymbolId,
    judged: &mut Vec<String>,
) -> Option<Difference> {
    let Sides { o, p, pairs, .. } = *sides;
    let ro = Range::of_symbol(o, of);
    let rp = Range::of_symbol(p, pf);
    if let Some(d) = compare_judged(o, p, pairs, &ro, &rp, judged) {
        return Some(d);
    }
    // Cold parts belong to the function.
    let (co, cp) = (cold_parts(o, of), cold_parts(p, pf));
    if co.len() != cp.len() {
        return Some(Difference {
            offset: 0,
            what: "cold part added or removed".into(),
        });
    }
    for (a, b) in co.iter().zip(&cp) {
        if let Some(d) = compare_judged(
            o,
            p,
            pairs,
            &Range::of_symbol(o, *a),
            &Range::of_symbol(p, *b),
            judged,
        ) {
            return Some(Difference {
                offset: d.offset,
                what: format!("{} in {}", d.what, p.sym_name(*b)),
            });
        }
    }
    std::iter::once((of, pf))
        .chain(co.iter().copied().zip(cp.iter().copied()))
        .find_map(|(fo, fp)| compare_entries(sides, fo, fp, judged))
}

/// Compares the special-section entries of a function (or `.cold` part)
/// with its counterpart's: same sections, same count, same contents.
fn compare_entries(
    sides: &Sides,
    fo: SymbolId,
    fp: SymbolId,
    judged: &mut Vec<String>,
) -> Option<Difference> {
    let Sides {
        o,
        p,
        pairs,
        oe,
        pe,
        options,
        ..
    } = *sides;
    let eo = oe.by_owner.get(&fo).map(Vec::as_slice).unwrap_or(&[]);
    let ep = pe.by_owner.get(&fp).map(Vec::as_slice).unwrap_or(&[]);
    let group = |input: &Input, es: &[Entry]| {
        let mut m: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        // Derived tables (ORC) say nothing the code does not.
        for e in es.iter().filter(|e| is_carried(input, e.section, options)) {
            m.entry(input.section_name(e.section))
                .or_default()
                .push(e.clone());
        }
        for v in m.values_mut() {
            v.sort_by_key(|e| e.owner.map(|x| x.1));
        }
        m
    };
    let (go, gp) = (group(o, eo), group(p, ep));
    for name in go.keys().chain(gp.keys()).collect::<BTreeSet<_>>() {
        let (lo, lp) = (go.get(name), gp.get(name));
        let (lo, lp) = (
            lo.map(Vec::as_slice).unwrap_or(&[]),
            lp.map(Vec::as_slice).unwrap_or(&[]),
        );
        if lo.len() != lp.len() {
            return Some(Difference {
                offset: 0,
                what: format!("{name} entries differ ({} vs {})", lo.len(), lp.len()),
            });
        }
        for (a, b) in lo.iter().zip(lp) {
            let spec = special_for(o, a.section, options).expect("special");
            let ra = entry_range(o, a, &spec);
            let rb = entry_range(p, b, &spec);
            let mut notes = Vec::new();
            if let Some(d) = compare_judged(o, p, pairs, &ra, &rb, &mut notes) {
                let at = b.owner.map_or(0, |x| x.1);
                return Some(Difference {
                    offset: at.max(0) as u64,
                    what: format!("{name} entry differs ({})", d.what),
                });
            }
            let at = b.owner.map_or(0, |x| x.1);
            judged.extend(
                notes
                    .into_iter()
                    .map(|n| format!("{name} entry at +{at:#x}: {n}")),
            );
        }
    }
    None
}

/// Whether the entries of special section `section` are compared and
/// carried with their functions.
pub fn is_carried(input: &Input, section: SectionId, options: &Options) -> bool {
    special_for(input, section, options).is_some_and(|s| s.carried)
}

fn entry_range<'a>(input: &'a Input, e: &Entry, spec: &'a SpecialSection) -> Range<'a> {
    let data = input.data(e.section);
    let end = (e.offset as usize + spec.entry_size).min(data.len());
    let relocs = input
        .relocs(e.section)
        .iter()
        .filter(|r| r.r_offset >= e.offset && r.r_offset < e.offset + spec.entry_size as u64)
        .collect();
    Range {
        bytes: &data[e.offset as usize..end],
        base: e.offset,
        relocs,
        code: None,
        ignore: spec.ignore,
    }
}

/// Whether a function starts with an ftrace call (`call __fentry__` within
/// its first 16 bytes, after any `endbr64`).
fn has_fentry(input: &Input, func: SymbolId) -> bool {
    let start = input.sym(func).st_value;
    input.sym_relocs(func).any(|r| {
        r.r_offset < start + 16
            && Some(input.reloc_sym(r)).is_some_and(|s| {
                let n = input.sym_name(s);
                n == "__fentry__" || n == "mcount" || n == "__mcount"
            })
    })
}

/// Analyses a pair of objects.
pub fn analyze(o: &Input, p: &Input, options: &Options) -> Result<Analysis, Error> {
    check_same_file(o, p)?;
    let pairs = correlate(o, p);
    check_shared_function(o, p, &pairs)?;
    let oe = entries(o, options)?;
    let pe = entries(p, options)?;
    let (marks, mark_refusals) = crate::kpatch::read(p);
    let sides = Sides {
        o,
        p,
        pairs: &pairs,
        oe: &oe,
        pe: &pe,
        options,
        marks: &marks,
    };
    let mut found = Findings {
        refusals: mark_refusals,
        ..Findings::default()
    };
    for pid in p.symbols() {
        sides.judge_symbol(pid, &mut found);
    }
    found
        .refusals
        .extend(uncovered_section_changes(o, p, &marks));
    let routed = crate::callers::route(
        &crate::callers::Sides {
            o,
            p,
            pairs: &pairs,
            oe: &oe,
            pe: &pe,
            max_callers: options
                .max_callers
                .unwrap_or(crate::callers::DEFAULT_MAX_CALLERS),
        },
        &found.untraceable,
        &found.changed,
        &options.carried_elsewhere,
        &has_fentry,
    );
    found.changed.extend(routed.forced);
    found.changed.extend(routed.unroutable);
    found.refusals.extend(routed.refusals);
    let roots: Vec<SymbolId> = found
        .changed
        .iter()
        .map(|c| c.func)
        .chain(found.new.iter().copied())
        .chain(routed.carried.iter().map(|c| c.func))
        .collect();
    let (include, closure_refusals) = closure(p, &pairs, &pe, &roots, options, &marks);
    found.refusals.extend(closure_refusals);
    found.refuse_copied_data_unchanged_code_uses(p, &include);
    let Findings {
        changed,
        new,
        mut refusals,
        line_only,
        ..
    } = found;
    refusals.sort_by(|a, b| (&a.section, &a.symbol).cmp(&(&b.section, &b.symbol)));
    refusals
        .dedup_by(|a, b| a.section == b.section && a.symbol == b.symbol && a.reason == b.reason);
    Ok(Analysis {
        line_only,
        pairs,
        changed,
        new,
        refusals,
        include,
        p_entries: pe,
        marks,
        carried: routed.carried,
        elsewhere: routed.elsewhere,
    })
}

/// Refuses objects whose `STT_FILE` names differ.
fn check_same_file(o: &Input, p: &Input) -> Result<(), Error> {
    if let (Some(a), Some(b)) = (&o.file_name, &p.file_name)
        && a != b
    {
        return Err(Error::Mismatch {
            original: format!("{} ({a})", o.label),
            patched: format!("{} ({b})", p.label),
        });
    }
    Ok(())
}

/// Two builds of one file share functions; same-named unrelated files (or
/// swapped arguments of different units) share none.
fn check_shared_function(o: &Input, p: &Input, pairs: &Pairs) -> Result<(), Error> {
    let has_func = |i: &Input| i.symbols().any(|s| i.kind(s) == SymKind::Func);
    if has_func(o) && has_func(p) && !pairs.o2p.keys().any(|&s| o.kind(s) == SymKind::Func) {
        let file = |i: &Input| i.file_name.clone().unwrap_or_else(|| "no STT_FILE".into());
        return Err(Error::Mismatch {
            original: format!("{} ({})", o.label, file(o)),
            patched: format!("{} ({}, no function in common)", p.label, file(p)),
        });
    }
    Ok(())
}

/// What the symbol-by-symbol pass decides, in the order it decides it.
#[derive(Default)]
struct Findings {
    changed: Vec<Changed>,
    /// Changed functions without an ftrace entry (in either object).
    untraceable: Vec<Changed>,
    new: Vec<SymbolId>,
    refusals: Vec<Refusal>,
    /// Changed symbols of sections copied with the code that uses them.
    copied_changed: Vec<(SymbolId, Difference)>,
    /// Unchanged symbols that differ only in source line numbers.
    line_only: Vec<(SymbolId, Vec<String>)>,
}

impl Findings {
    /// Refuses a symbol of `input`, naming its section.
    fn refuse(&mut self, input: &Input, sym: SymbolId, reason: String) {
        let section = input
            .sym_section(sym)
            .map(|s| input.section_name(s))
            .unwrap_or_default();
        self.refusals.push(Refusal {
            reason,
            section,
            symbol: input.sym_name(sym),
        });
    }

    /// Each changed symbol copied with its code must be used by the included
    /// (changed or new) code, else unchanged code would keep the old one.
    fn refuse_copied_data_unchanged_code_uses(&mut self, p: &Input, include: &BTreeSet<SectionId>) {
        if self.copied_changed.is_empty() {
            return;
        }
        let used = referenced_from(p, include);
        for (pid, d) in std::mem::take(&mut self.copied_changed) {
            if !used.contains(&pid) {
                self.refuse(
                    p,
                    pid,
                    format!(
                        "changed data that unchanged code uses ({} at +{:#x})",
                        d.what, d.offset
                    ),
                );
            }
        }
    }
}

impl Sides<'_, '_> {
    /// Judges one symbol of the patched object outside the ignored and
    /// special sections.
    fn judge_symbol(&self, pid: SymbolId, found: &mut Findings) {
        let Some(section) = self.p.sym_section(pid) else {
            return;
        };
        let sec_name = self.p.section_name(section);
        if is_ignored(&sec_name)
            || special(&sec_name).is_some()
            || self.marks.ignores_section(&sec_name)
        {
            return;
        }
        match self.p.kind(pid) {
            SymKind::Func => self.judge_function(pid, section, &sec_name, found),
            SymKind::Object => self.judge_object(pid, section, &sec_name, found),
            _ => {}
        }
    }

    /// A function: new, changed (and then perhaps refused), or the same.
    fn judge_function(&self, pid: SymbolId, section: SectionId, sec_name: &str, f: &mut Findings) {
        let (p, pairs) = (self.p, self.pairs);
        let name = p.sym_name(pid);
        if name.starts_with("__pfx_") || cold_parent(&name).is_some() {
            return;
        }
        if pairs.ambiguous.contains(&pid) {
            let note = pairs.candidates_note(pid);
            f.refuse(
                p,
                pid,
                format!("cannot correlate this function with one of the original object (several candidates){note}"),
            );
            return;
        }
        if self.marks.ignores_function(&name) {
            // KPATCH_IGNORE_FUNCTION: the running copy stays, whatever
            // changed; a function the original lacks has no running copy.
            if !pairs.p2o.contains_key(&pid) {
                f.refuse(
                    p,
                    pid,
                    "KPATCH_IGNORE_FUNCTION names a function the original object does not have"
                        .into(),
                );
            }
            return;
        }
        let Some(&oid) = pairs.p2o.get(&pid) else {
            if is_init(sec_name) {
                f.refuse(
                    p,
                    pid,
                    "new __init function: init code has already run".into(),
                );
            } else {
                f.new.push(pid);
            }
            return;
        };
        let mut judged = Vec::new();
        let Some(difference) = compare_function(self, oid, pid, &mut judged) else {
            if !judged.is_empty() {
                f.line_only.push((pid, judged));
            }
            return;
        };
        let traceable = has_fentry(p, pid) && has_fentry(self.o, oid);
        if traceable || is_init(sec_name) {
            // A refused function is still reported as changed.
            f.changed.push(Changed {
                func: pid,
                difference: difference.clone(),
            });
        } else {
            f.untraceable.push(Changed {
                func: pid,
                difference: difference.clone(),
            });
        }
        if is_init(sec_name) {
            f.refuse(
                p,
                pid,
                format!(
                    "changed __init code ({}): init code has already run and is freed",
                    difference.what
                ),
            );
        } else if p.symbols_in(section).iter().any(|&other| {
            other != pid
                && p.kind(other) == SymKind::Func
                && !p.sym_name(other).starts_with("__pfx_")
        }) {
            f.refuse(
                p,
                pid,
                format!(
                    "changed function shares section {sec_name} with other functions (compile with -ffunction-sections)"
                ),
            );
        }
    }

    /// A variable: the same, a changed copy that travels with the code, or
    /// refused.
    fn judge_object(&self, pid: SymbolId, section: SectionId, sec_name: &str, f: &mut Findings) {
        let p = self.p;
        if self.pairs.ambiguous.contains(&pid) {
            let note = self.pairs.candidates_note(pid);
            f.refuse(
                p,
                pid,
                format!("cannot correlate this variable with one of the original object (several candidates){note}"),
            );
            return;
        }
        let Some(&oid) = self.pairs.p2o.get(&pid) else {
            return;
        };
        let mut judged = Vec::new();
        let Some(d) = self.compare_object(oid, pid, section, sec_name, &mut judged) else {
            if !judged.is_empty() {
                f.line_only.push((pid, judged));
            }
            return;
        };
        if is_init(sec_name) {
            f.refuse(p, pid, format!("changed __init data ({})", d.what));
        } else if !is_writable(p, section) && crate::names::is_generated(&p.sym_name(pid)) {
            // A compiler-made constant (`__func__.3`, `CSWTCH.5`):
            // the new code gets its own copy, the old keeps its own.
        } else if is_copied_with_code(sec_name) {
            // Fine if only changed code uses it (checked once
            // the included code is known).
            f.copied_changed.push((pid, d));
        } else {
            f.refuse(
                p,
                pid,
                format!(
                    "changed data that the running kernel already uses ({} at +{:#x})",
                    d.what, d.offset
                ),
            );
        }
    }

    /// The first difference between a variable and its counterpart: the size
    /// for NOBITS, else the contents modulo relocations.
    fn compare_object(
        &self,
        oid: SymbolId,
        pid: SymbolId,
        section: SectionId,
        sec_name: &str,
        judged: &mut Vec<String>,
    ) -> Option<Difference> {
        let (o, p) = (self.o, self.p);
        let s = p.sym(pid);
        if p.section(section).sh_type == elf::SHT_NOBITS {
            (o.sym(oid).st_size != s.st_size).then(|| Difference {
                offset: 0,
                what: format!("size {} → {}", o.sym(oid).st_size, s.st_size),
            })
        } else {
            // A dynamic-debug descriptor's line number moves with
            // the lines above it; that alone changes nothing.
            let ignore = crate::special::ignored_in_data(sec_name, s.st_size);
            let mut or = Range::of_symbol(o, oid);
            let mut pr = Range::of_symbol(p, pid);
            or.ignore = ignore;
            pr.ignore = ignore;
            compare_judged(o, p, self.pairs, &or, &pr, judged)
        }
    }
}

/// Sections that no rule covers must not differ: a refusal for each that does.
fn uncovered_section_changes(o: &Input, p: &Input, marks: &crate::kpatch::Marks) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    for id in p.sections() {
        let section = p.section(id);
        let name = p.section_name(id);
        if marks.ignores_section(&name) {
            continue;
        }
        // Non-allocated, ignored and special sections, sections compared
        // symbol by symbol or by contents where used, and
        // .altinstr_replacement (compared through .altinstructions entries)
        // have their own rule.
        if section.sh_type == elf::SHT_RELA
            || !crate::special::is_compared_whole(
                &name,
                section.sh_flags.0,
                !p.symbols_in(id).is_empty(),
                crate::compare::is_merge_section(p, id),
            )
        {
            continue;
        }
        let data = p.data(id);
        let other = o.sections().find(|&s| o.section_name(s) == name);
        let same = other.is_some_and(|oid| {
            o.data(oid) == data
                && o.relocs(oid).len() == p.relocs(id).len()
                && o.section_size(oid) == p.section_size(id)
        });
        if !same && (p.section_size(id) > 0) {
            refusals.push(Refusal {
                reason: "section changed and no rule covers it".into(),
                section: name,
                symbol: String::new(),
            });
        }
    }
    refusals
}

/// Symbols that executable sections of `include` reference.
fn referenced_from(p: &Input, include: &BTreeSet<SectionId>) -> BTreeSet<SymbolId> {
    let mut used = BTreeSet::new();
    for &sec in include.iter().filter(|&&s| is_exec(p, s)) {
        let bias = CodeBias::new(p.data(sec), 0);
        for r in p.relocs(sec) {
            if let Target::Symbol(s, _) = target(p, r, bias.bias(r.r_offset, r.r_type)) {
                used.insert(s);
            }
        }
    }
    used
}

/// Sections of `p` the livepatch must carry for `roots`, following
/// relocations: new functions and data, strings and anonymous constants, cold
/// parts, and what kept special-section entries reference. Also returns what
/// it had to refuse on the way.
fn closure(
    p: &Input,
    pairs: &Pairs,
    pe: &Entries,
    roots: &[SymbolId],
    options: &Options,
    marks: &crate::kpatch::Marks,
) -> (BTreeSet<SectionId>, Vec<Refusal>) {
    let mut c = Closure {
        p,
        pairs,
        pe,
        options,
        marks,
        include: BTreeSet::new(),
        work: Vec::new(),
        kept_entries: BTreeSet::new(),
        refusals: Vec::new(),
    };
    for &f in roots {
        if let Some(sec) = p.sym_section(f) {
            c.add(sec);
        }
        for cold in cold_parts(p, f) {
            if let Some(sec) = p.sym_section(cold) {
                c.add(sec);
            }
        }
    }
    loop {
        while let Some(sec) = c.work.pop() {
            c.follow_section(sec);
        }
        let more = c.keep_entries_of_included();
        if !more && c.work.is_empty() {
            break;
        }
    }
    (c.include, c.refusals)
}

/// The state of one closure computation.
struct Closure<'a, 'd> {
    p: &'a Input<'d>,
    pairs: &'a Pairs,
    pe: &'a Entries,
    options: &'a Options,
    marks: &'a crate::kpatch::Marks,
    /// Sections carried so far.
    include: BTreeSet<SectionId>,
    /// Carried sections whose relocations are not followed yet.
    work: Vec<SectionId>,
    /// Special-section entries (section, offset) already kept.
    kept_entries: BTreeSet<(SectionId, u64)>,
    refusals: Vec<Refusal>,
}

impl Closure<'_, '_> {
    /// Carries a section, and queues it when it is new.
    fn add(&mut self, sec: SectionId) {
        if self.include.insert(sec) {
            self.work.push(sec);
        }
    }

    /// Follows every relocation of a carried section.
    fn follow_section(&mut self, sec: SectionId) {
        let p = self.p;
        let bias = is_exec(p, sec).then(|| CodeBias::new(p.data(sec), 0));
        for r in p.relocs(sec) {
            let b = bias.as_ref().map_or(0, |c| c.bias(r.r_offset, r.r_type));
            match target(p, r, b) {
                Target::Symbol(s, _) => self.follow_symbol(s),
                Target::String(..) | Target::Constant(..) => {
                    let ssec = p.sym_section(p.reloc_sym(r)).expect("section");
                    self.add(ssec);
                }
                Target::Section(ssec, _) => {
                    if self.include.contains(&ssec) {
                        continue;
                    }
                    if is_copied_with_code(&p.section_name(ssec)) {
                        // UBSAN descriptors: the new code's own copy.
                        self.add(ssec);
                    } else if is_writable(p, ssec) {
                        self.refusals.push(Refusal {
                            reason: "reference to writable data no symbol names".into(),
                            section: p.section_name(ssec),
                            symbol: String::new(),
                        });
                    } else {
                        self.add(ssec);
                    }
                }
            }
        }
    }

    /// Carries the section of a symbol that carried code references, when
    /// the symbol travels with the patch.
    fn follow_symbol(&mut self, s: SymbolId) {
        let (p, pairs) = (self.p, self.pairs);
        let Some(ssec) = p.sym_section(s) else {
            return;
        };
        if self.include.contains(&ssec) {
            return;
        }
        let name = p.sym_name(s);
        let kind = p.kind(s);
        if self.marks.ignores_section(&p.section_name(ssec)) && !pairs.p2o.contains_key(&s) {
            // Never copied, and the running kernel has no such symbol.
            self.refusals.push(Refusal {
                reason: "patched code uses a new symbol of a section KPATCH_IGNORE_SECTION names"
                    .into(),
                section: p.section_name(ssec),
                symbol: name,
            });
        } else if kind == SymKind::Func && cold_parent(&name).is_some() {
            self.add(ssec);
        } else if pairs.ambiguous.contains(&s) {
            self.refusals.push(Refusal {
                reason: format!(
                    "referenced symbol cannot be correlated with the original object{}",
                    pairs.candidates_note(s)
                ),
                section: p.section_name(ssec),
                symbol: name,
            });
        } else if !pairs.p2o.contains_key(&s) || is_copied_with_code(&p.section_name(ssec)) {
            // New function or new data, or data private to
            // its use site: it travels with the patch.
            self.add(ssec);
        } else if kind == SymKind::Object
            && !is_writable(p, ssec)
            && crate::names::is_generated(&name)
        {
            // Compiler-made constants travel as copies.
            self.add(ssec);
        }
    }

    /// Keeps the special-section entries of carried functions not kept yet,
    /// and carries what they reference; whether it kept any.
    fn keep_entries_of_included(&mut self) -> bool {
        let (p, pe) = (self.p, self.pe);
        let mut more = false;
        for (&sec, list) in &pe.all {
            let Some(spec) = special_for(p, sec, self.options).filter(|s| s.carried) else {
                continue;
            };
            for e in list {
                let Some((owner, _)) = e.owner else { continue };
                let Some(osec) = p.sym_section(owner) else {
                    continue;
                };
                if !self.include.contains(&osec) || !self.kept_entries.insert((sec, e.offset)) {
                    continue;
                }
                more = true;
                self.follow_entry(sec, e.offset, e.offset + spec.entry_size as u64);
            }
        }
        more
    }

    /// Carries what the relocations of one kept entry (`start..end` of
    /// special section `sec`) reference and the patch must carry.
    fn follow_entry(&mut self, sec: SectionId, start: u64, end: u64) {
        let (p, pairs) = (self.p, self.pairs);
        for r in p.relocs(sec) {
            if r.r_offset < start || r.r_offset >= end {
                continue;
            }
            let s = p.reloc_sym(r);
            let Some(ssec) = p.sym_section(s) else {
                continue;
            };
            if self.include.contains(&ssec) {
                continue;
            }
            match target(p, r, 0) {
                Target::String(..) | Target::Constant(..) => self.add(ssec),
                Target::Section(..) if !is_writable(p, ssec) => self.add(ssec),
                Target::Symbol(t, _)
                    if !pairs.p2o.contains_key(&t)
                        || p.sym_section(t)
                            .is_some_and(|ts| is_copied_with_code(&p.section_name(ts))) =>
                {
                    if let Some(tsec) = p.sym_section(t) {
                        self.add(tsec);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_entry_may_lack_only_its_tail_padding() {
        let spec = |entry_size| SpecialSection {
            entry_size,
            ..*special("__jump_table").expect("in the table")
        };
        // Three 16-byte entries, the last without 4 bytes of padding.
        assert!(short_last_entry(44, &spec(16)));
        // Whole entries are no short entry; a remainder without the anchor,
        // or missing more than padding can be, is not one either.
        assert!(!short_last_entry(48, &spec(16)));
        assert!(!short_last_entry(35, &spec(16)));
        assert!(!short_last_entry(40, &spec(16)));
        assert!(!short_last_entry(3, &spec(16)));
        // An entry size that no alignment divides has no tail padding.
        assert!(!short_last_entry(32, &spec(7)));
        assert!(short_last_entry(33, &spec(12)));
        assert!(!short_last_entry(32, &spec(12)));
    }
}
