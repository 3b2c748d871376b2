//! Correlation of symbols between the original and the patched object.
//!
//! 1. Undefined symbols and names the compiler did not number pair by name.
//! 2. Numbered names (`count.3`, `foo.isra.0`) pair when their canonical form
//!    is unique on both sides.
//! 3. The rest pair through the relocations of already paired functions: the
//!    n-th reference of `f` in one object and of `f` in the other point at the
//!    same thing when both are numbered names of one canonical form.
//!
//! Numbers alone never decide a match.

use crate::compare::{Range, Target, compare, target};
use crate::input::{Input, SymKind, SymbolId};
use crate::names::{canonical, is_generated};
/// What correlation produces (defined apart so that comparison needs no correlation).
pub use crate::pairs::Pairs;
use std::collections::HashMap;

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
    let mut pairs = Pairs::default();
    // Canonical name → unpaired symbols, per side.
    let mut o_groups: Groups = HashMap::new();
    for id in o.symbols() {
        let s = o.sym(id);
        let kind = o.kind(id);
        if !pairable(kind) || s.name.is_empty() {
            continue;
        }
        let name = o.sym_name(id);
        o_groups
            .entry((canonical(&name), kind == SymKind::Func))
            .or_default()
            .push(id);
    }
    let mut p_groups: Groups = HashMap::new();
    for id in p.symbols() {
        let s = p.sym(id);
        let kind = p.kind(id);
        if !pairable(kind) || s.name.is_empty() {
            continue;
        }
        let name = p.sym_name(id);
        let key = (canonical(&name), kind == SymKind::Func);
        if !is_generated(&name) {
            // Plain names pair by name (kind must agree on definedness).
            if let Some(&oid) = o_groups
                .get(&key)
                .and_then(|v| v.iter().find(|&&oid| o.sym_name(oid) == name))
                && (o.kind(oid) == SymKind::Undefined) == (kind == SymKind::Undefined)
            {
                pairs.add(oid, id);
                continue;
            }
        }
        p_groups.entry(key).or_default().push(id);
    }
    // Unique canonical forms pair.
    for (key, ps) in &p_groups {
        let os = unpaired_original(&o_groups, key, &pairs);
        if ps.len() == 1 && os.len() == 1 {
            pairs.add(os[0], ps[0]);
        }
    }
    // Propagate through relocations of paired functions until nothing changes.
    loop {
        let mut added = 0;
        let paired_funcs: Vec<(SymbolId, SymbolId)> = pairs
            .p2o
            .iter()
            .filter(|(pid, _)| p.kind(**pid) == SymKind::Func)
            .map(|(&pid, &oid)| (oid, pid))
            .collect();
        for (oid, pid) in paired_funcs {
            let (ranges_o, ranges_p) = (Range::of_symbol(o, oid), Range::of_symbol(p, pid));
            if ranges_o.relocs.len() != ranges_p.relocs.len() {
                continue;
            }
            for (ro, rp) in ranges_o.relocs.iter().zip(&ranges_p.relocs) {
                let to = target(o, ro, ranges_o.bias(ro));
                let tp = target(p, rp, ranges_p.bias(rp));
                let (Target::Symbol(so, _), Target::Symbol(sp, _)) = (to, tp) else {
                    continue;
                };
                if pairs.o2p.contains_key(&so) || pairs.p2o.contains_key(&sp) {
                    continue;
                }
                if !pairable(o.kind(so)) || o.kind(so) != p.kind(sp) {
                    continue;
                }
                let (no, np) = (o.sym_name(so), p.sym_name(sp));
                if canonical(&no) == canonical(&np) && is_generated(&np) {
                    pairs.add(so, sp);
                    added += 1;
                }
            }
        }
        if added == 0 {
            break;
        }
    }
    // Last resort for what nothing paired reaches (linker tables, constants
    // only data points at): inside one canonical group, when the leftover
    // names are the same on both sides and each same-named pair has equal
    // contents, the numbering did not move.
    for (key, ps) in &p_groups {
        let left_p: Vec<SymbolId> = ps
            .iter()
            .copied()
            .filter(|x| !pairs.p2o.contains_key(x))
            .collect();
        let left_o = unpaired_original(&o_groups, key, &pairs);
        if left_p.is_empty() || left_p.len() != left_o.len() {
            continue;
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
            if compare(o, p, &pairs, &ro, &rp).is_some() {
                break;
            }
            matched.push((oid, pid));
        }
        if matched.len() == left_p.len() {
            for (oid, pid) in matched {
                pairs.add(oid, pid);
            }
        }
    }
    // Whatever is still unpaired but has unpaired same-canonical candidates
    // in the original cannot be called new.
    for (key, ps) in &p_groups {
        let unpaired_o = o_groups
            .get(key)
            .map(|v| v.iter().filter(|x| !pairs.o2p.contains_key(x)).count())
            .unwrap_or(0);
        for &pid in ps {
            if !pairs.p2o.contains_key(&pid) && unpaired_o > 0 {
                pairs.ambiguous.push(pid);
            }
        }
    }
    pairs.ambiguous.sort();
    pairs
}
