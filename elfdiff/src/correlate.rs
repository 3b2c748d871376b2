//! Correlation of symbols between the original and the patched object.
//!
//! 1. Undefined symbols and names the compiler did not number pair by name.
//! 2. Numbered names (`count.3`, `foo.isra.0`) pair when their canonical form
//!    is unique on both sides.
//! 3. The rest pair through the relocations of already paired functions: the
//!    n-th reference of `f` in one object and of `f` in the other point at the
//!    same thing when both are numbered names of one canonical form.
//! 4. Numbered static locals still open (`__key.418` of a `spin_lock_init`
//!    in a changed function, `_rs.7`, `__func__.3`, `descriptor.12`) pair by
//!    their place among the references of the paired functions that use
//!    them: the k-th distinct not yet paired `__key` that original `f`
//!    references is the k-th one patched `f` references (kpatch-build's
//!    rule). Every user must agree; a local that is k-th where the original
//!    function has fewer, or that only new functions use, is new data of the
//!    patch. Disagreeing users leave it ambiguous, with the candidates they
//!    named.
//!
//! Numbers alone never decide a match.

use crate::compare::{Range, Target, compare, target};
use crate::input::{Input, SymKind, SymbolId};
use crate::names::{canonical, is_generated};
/// What correlation produces (defined apart so that comparison needs no correlation).
pub use crate::pairs::Pairs;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The numbered static locals (local data objects with a compiler-made
/// number) that function `f` references and `paired` does not hold yet, by
/// canonical name, each once, in the order of their first reference.
fn open_locals(
    input: &Input,
    f: SymbolId,
    paired: &HashMap<SymbolId, SymbolId>,
) -> HashMap<String, Vec<SymbolId>> {
    let range = Range::of_symbol(input, f);
    let mut out: HashMap<String, Vec<SymbolId>> = HashMap::new();
    for r in &range.relocs {
        let Target::Symbol(s, _) = target(input, r, range.bias(r)) else {
            continue;
        };
        if input.kind(s) != SymKind::Object || !input.is_local(s) || paired.contains_key(&s) {
            continue;
        }
        let name = input.sym_name(s);
        if !is_generated(&name) {
            continue;
        }
        let list = out.entry(canonical(&name)).or_default();
        if !list.contains(&s) {
            list.push(s);
        }
    }
    out
}

fn pairable(kind: SymKind) -> bool {
    matches!(
        kind,
        SymKind::Func | SymKind::Object | SymKind::Other | SymKind::Undefined
    )
}

type Groups = HashMap<(String, bool), Vec<SymbolId>>;

/// The original object's symbols of one canonical group not paired yet.
fn unpaired_original(o_groups: &Groups, key: &(String, bool), pairs: &Pairs) -> Vec<SymbolId> {
    o_groups
        .get(key)
        .map(|v| {
            v.iter()
                .copied()
                .filter(|x| !pairs.o2p.contains_key(x))
                .collect()
        })
        .unwrap_or_default()
}

/// Pairs the symbols of `o` and `p`.
pub fn correlate(o: &Input, p: &Input) -> Pairs {
    let mut c = Correlation {
        o,
        p,
        pairs: Pairs::default(),
        o_groups: original_groups(o),
        p_groups: HashMap::new(),
    };
    c.pair_plain_names();
    c.pair_unique_canonical_forms();
    c.propagate_through_relocations();
    c.pair_static_locals_by_place();
    c.pair_unmoved_leftovers();
    c.mark_ambiguous();
    c.pairs
}

/// The state of one correlation: both objects, the pairs found so far, and
/// the pairable symbols of each side by canonical name (the patched side
/// holding only what did not pair by plain name).
struct Correlation<'a, 'd> {
    o: &'a Input<'d>,
    p: &'a Input<'d>,
    pairs: Pairs,
    o_groups: Groups,
    p_groups: Groups,
}

/// The group a symbol correlates in: its canonical name, with its
/// `STT_FILE` group for a local of an object of several units (so that
/// same-named statics of two units never pair across them), and whether it
/// is a function.
fn group_key(input: &Input, id: SymbolId, name: &str) -> (String, bool) {
    let mut key = canonical(name);
    if let Some(file) = input.file_group(id) {
        key.push('\0');
        key.push_str(file);
    }
    (key, input.kind(id) == SymKind::Func)
}

/// The pairable symbols of the original object by canonical name.
fn original_groups(o: &Input) -> Groups {
    let mut o_groups: Groups = HashMap::new();
    for id in o.symbols() {
        let s = o.sym(id);
        let kind = o.kind(id);
        if !pairable(kind) || s.name.is_empty() {
            continue;
        }
        let name = o.sym_name(id);
        o_groups
            .entry(group_key(o, id, &name))
            .or_default()
            .push(id);
    }
    o_groups
}

impl Correlation<'_, '_> {
    /// Step 1: plain names pair by name; every other pairable patched symbol
    /// goes to its canonical group for the later steps.
    fn pair_plain_names(&mut self) {
        let (o, p) = (self.o, self.p);
        for id in p.symbols() {
            let s = p.sym(id);
            let kind = p.kind(id);
            if !pairable(kind) || s.name.is_empty() {
                continue;
            }
            let name = p.sym_name(id);
            let key = group_key(p, id, &name);
            if !is_generated(&name) {
                // Plain names pair by name (kind must agree on definedness).
                if let Some(&oid) = self
                    .o_groups
                    .get(&key)
                    .and_then(|v| v.iter().find(|&&oid| o.sym_name(oid) == name))
                    && (o.kind(oid) == SymKind::Undefined) == (kind == SymKind::Undefined)
                {
                    self.pairs.add(oid, id);
                    continue;
                }
            }
            self.p_groups.entry(key).or_default().push(id);
        }
    }

    /// Step 2: unique canonical forms pair.
    fn pair_unique_canonical_forms(&mut self) {
        for (key, ps) in &self.p_groups {
            let os = unpaired_original(&self.o_groups, key, &self.pairs);
            if ps.len() == 1 && os.len() == 1 {
                self.pairs.add(os[0], ps[0]);
            }
        }
    }

    /// Step 3: propagate through relocations of paired functions until
    /// nothing changes.
    fn propagate_through_relocations(&mut self) {
        loop {
            let paired_funcs: Vec<(SymbolId, SymbolId)> = self
                .pairs
                .p2o
                .iter()
                .filter(|(pid, _)| self.p.kind(**pid) == SymKind::Func)
                .map(|(&pid, &oid)| (oid, pid))
                .collect();
            let mut added = 0;
            for (oid, pid) in paired_funcs {
                added += self.pair_references(oid, pid);
            }
            if added == 0 {
                break;
            }
        }
    }

    /// Pairs the unpaired numbered symbols that the n-th relocations of a
    /// paired function reach on both sides; returns how many it paired.
    fn pair_references(&mut self, oid: SymbolId, pid: SymbolId) -> usize {
        let (o, p) = (self.o, self.p);
        let (ranges_o, ranges_p) = (Range::of_symbol(o, oid), Range::of_symbol(p, pid));
        if ranges_o.relocs.len() != ranges_p.relocs.len() {
            return 0;
        }
        let mut added = 0;
        for (ro, rp) in ranges_o.relocs.iter().zip(&ranges_p.relocs) {
            let to = target(o, ro, ranges_o.bias(ro));
            let tp = target(p, rp, ranges_p.bias(rp));
            let (Target::Symbol(so, _), Target::Symbol(sp, _)) = (to, tp) else {
                continue;
            };
            if self.pairs.o2p.contains_key(&so) || self.pairs.p2o.contains_key(&sp) {
                continue;
            }
            if !pairable(o.kind(so)) || o.kind(so) != p.kind(sp) {
                continue;
            }
            let (no, np) = (o.sym_name(so), p.sym_name(sp));
            if group_key(o, so, &no) == group_key(p, sp, &np) && is_generated(&np) {
                self.pairs.add(so, sp);
                added += 1;
            }
        }
        added
    }

    /// Step 4: numbered static locals by their place among the references
    /// of the paired functions that use them.
    fn pair_static_locals_by_place(&mut self) {
        let (o, p) = (self.o, self.p);
        let mut votes: BTreeMap<SymbolId, BTreeSet<Option<SymbolId>>> = BTreeMap::new();
        let paired_funcs: Vec<(SymbolId, SymbolId)> = self
            .pairs
            .p2o
            .iter()
            .filter(|(pid, _)| p.kind(**pid) == SymKind::Func)
            .map(|(&pid, &oid)| (oid, pid))
            .collect();
        for (fo, fp) in paired_funcs {
            let lo = open_locals(o, fo, &self.pairs.o2p);
            for (key, ps) in open_locals(p, fp, &self.pairs.p2o) {
                let os = lo.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                for (k, sp) in ps.into_iter().enumerate() {
                    votes.entry(sp).or_default().insert(os.get(k).copied());
                }
            }
        }
        let mut claimed: HashMap<SymbolId, Vec<SymbolId>> = HashMap::new();
        for (&sp, v) in &votes {
            let named: Vec<SymbolId> = v.iter().flatten().copied().collect();
            match named.as_slice() {
                [] => self.pairs.new_locals.push(sp),
                [so] => claimed.entry(*so).or_default().push(sp),
                _ => {
                    let names = named.iter().map(|&so| o.sym_name(so)).collect();
                    self.pairs.candidates.insert(sp, names);
                }
            }
        }
        for (so, sps) in claimed {
            if let [sp] = sps[..]
                && o.kind(so) == p.kind(sp)
            {
                self.pairs.add(so, sp);
            } else {
                for sp in sps {
                    self.pairs.candidates.insert(sp, vec![o.sym_name(so)]);
                }
            }
        }
        self.mark_locals_of_new_code_new(&votes);
    }

    /// A numbered static local that no paired function references but new
    /// functions do belongs to the new code.
    fn mark_locals_of_new_code_new(
        &mut self,
        voted: &BTreeMap<SymbolId, BTreeSet<Option<SymbolId>>>,
    ) {
        let p = self.p;
        for f in p.symbols().filter(|&f| p.kind(f) == SymKind::Func) {
            if self.pairs.p2o.contains_key(&f) {
                continue;
            }
            for (_, locals) in open_locals(p, f, &self.pairs.p2o) {
                for s in locals {
                    if !voted.contains_key(&s) && !self.pairs.new_locals.contains(&s) {
                        self.pairs.new_locals.push(s);
                    }
                }
            }
        }
    }

    /// Step 5, the last resort for what nothing paired reaches (linker
    /// tables, constants only data points at): inside one canonical group,
    /// when the leftover names are the same on both sides and each
    /// same-named pair has equal contents, the numbering did not move.
    fn pair_unmoved_leftovers(&mut self) {
        for (key, ps) in &self.p_groups {
            if let Some(matched) = self.unmoved_leftovers(key, ps) {
                for (oid, pid) in matched {
                    self.pairs.add(oid, pid);
                }
            }
        }
    }

    /// The leftovers of one canonical group paired by name, when every one
    /// of them pairs with an equal same-named symbol; `None` otherwise.
    fn unmoved_leftovers(
        &self,
        key: &(String, bool),
        ps: &[SymbolId],
    ) -> Option<Vec<(SymbolId, SymbolId)>> {
        let (o, p) = (self.o, self.p);
        let left_p: Vec<SymbolId> = ps
            .iter()
            .copied()
            .filter(|x| !self.pairs.p2o.contains_key(x))
            .collect();
        let left_o = unpaired_original(&self.o_groups, key, &self.pairs);
        if left_p.is_empty() || left_p.len() != left_o.len() {
            return None;
        }
        let mut matched = Vec::new();
        for &pid in &left_p {
            let name = p.sym_name(pid);
            let Some(&oid) = left_o.iter().find(|&&oid| o.sym_name(oid) == name) else {
                break;
            };
            if o.kind(oid) != p.kind(pid) || o.sym(oid).st_size != p.sym(pid).st_size {
                break;
            }
            let (ro, rp) = (Range::of_symbol(o, oid), Range::of_symbol(p, pid));
            if compare(o, p, &self.pairs, &ro, &rp).is_some() {
                break;
            }
            matched.push((oid, pid));
        }
        (matched.len() == left_p.len()).then_some(matched)
    }

    /// Step 6: whatever is still unpaired but has unpaired same-canonical
    /// candidates in the original cannot be called new.
    fn mark_ambiguous(&mut self) {
        for (key, ps) in &self.p_groups {
            let unpaired_o = unpaired_original(&self.o_groups, key, &self.pairs);
            for &pid in ps {
                if !self.pairs.p2o.contains_key(&pid)
                    && !unpaired_o.is_empty()
                    && !self.pairs.new_locals.contains(&pid)
                {
                    self.pairs.ambiguous.push(pid);
                    if !self.pairs.candidates.contains_key(&pid) {
                        let names = unpaired_o.iter().map(|&so| self.o.sym_name(so)).collect();
                        self.pairs.candidates.insert(pid, names);
                    }
                }
            }
        }
        self.pairs.ambiguous.sort();
    }
}
