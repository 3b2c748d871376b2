//! Changed functions the kernel cannot redirect, patched through their
//! callers.
//!
//! Livepatch redirects a function through its ftrace entry. A function
//! without one (`notrace`, the `static inline` body `__do_sys_NAME` of a
//! `SYSCALL_DEFINE` that GCC kept out of line, a unit built without ftrace
//! flags) cannot be redirected, but its callers can: the livepatch carries
//! the function's new code as a function of its own and redirects every
//! traced function that calls it, whose copy calls the new code. Every call
//! that starts after the transition then runs the new code.
//!
//! This is only sound when every way into the old code is a direct call
//! from a function the patch redirects. So a function is refused when:
//! - its address is taken (a pointer, a table, an `.altinstr_replacement`
//!   call the kernel patched in at boot could reach the old code);
//! - it is global and its callers in other units cannot all be redirected
//!   (the build driver finds them and diffs their units with
//!   `Options::carried_elsewhere`; from one object alone, a global is only
//!   marked [`Carried::global`]);
//! - a caller has no ftrace entry either and traced callers are not found
//!   within [`MAX_DEPTH`] levels;
//! - it has more callers than the limit ([`DEFAULT_MAX_CALLERS`], or
//!   `Options::max_callers`).
//!
//! The callers are those of the original object (the running kernel's
//! code, whose calls must stop reaching the old function) and those of the
//! patched object (its new calls), but for `__init` code, which has run and
//! is freed.

use crate::Refusal;
use crate::analyze::{Changed, Entries};
use crate::compare::{CodeBias, Difference, Target, target};
use crate::input::{Input, SectionId, SymKind, SymbolId};
use crate::names::cold_parent;
use crate::pairs::Pairs;
use crate::special::{is_ignored, is_init, special};
use object::elf;
use std::collections::{BTreeSet, HashSet};

/// How many levels of callers without an ftrace entry are followed up to
/// traced ones.
pub const MAX_DEPTH: usize = 3;

/// The default limit on the callers one function is carried by.
pub const DEFAULT_MAX_CALLERS: usize = 16;

/// A function carried by its callers: included, never redirected itself.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The function (patched object).
    pub func: SymbolId,
    /// Its callers in either object (patched ids), which the patch carries
    /// too (redirected, or carried themselves when they cannot be).
    pub callers: Vec<SymbolId>,
    /// Whether it is global: other units may call it too, and the patch is
    /// only sound once their callers are redirected as well.
    pub global: bool,
}

/// What routing through callers decided.
#[derive(Debug, Default)]
pub struct Routed {
    /// Functions carried by their callers.
    pub carried: Vec<Carried>,
    /// Functions of other units, carried there, and their callers here
    /// (`func` is this object's undefined symbol).
    pub elsewhere: Vec<Carried>,
    /// Unchanged callers the patch must redirect all the same.
    pub forced: Vec<Changed>,
    /// Functions that cannot be patched this way.
    pub refusals: Vec<Refusal>,
    /// The changed functions among them (reported as changed and refused).
    pub unroutable: Vec<Changed>,
}

/// The two objects and what is known of them.
pub struct Sides<'a, 'd> {
    /// The original object.
    pub o: &'a Input<'d>,
    /// The patched object.
    pub p: &'a Input<'d>,
    /// The symbol pairing.
    pub pairs: &'a Pairs,
    /// Special-section entries of the original object.
    pub oe: &'a Entries,
    /// Special-section entries of the patched object.
    pub pe: &'a Entries,
    /// The caller limit.
    pub max_callers: usize,
}

/// Routes each changed function without an ftrace entry through its
/// callers, and the callers here of `elsewhere` (functions of other units
/// carried there, by name). `changed` are the functions already redirected;
/// `has_fentry` tells whether a function of an object has an ftrace entry.
pub fn route(
    s: &Sides<'_, '_>,
    untraceable: &[Changed],
    changed: &[Changed],
    elsewhere: &[String],
    has_fentry: &dyn Fn(&Input, SymbolId) -> bool,
) -> Routed {
    let mut routed = Routed::default();
    let mut redirected: HashSet<SymbolId> = changed.iter().map(|c| c.func).collect();
    let mut carried: HashSet<SymbolId> = untraceable.iter().map(|c| c.func).collect();
    let external: HashSet<SymbolId> = elsewhere
        .iter()
        .filter_map(|name| undefined(s.p, name))
        .collect();
    // Each function to route with the chain of callers that led to it
    // (its first element is the changed function, refused in its name).
    let mut queue: Vec<Vec<SymbolId>> = untraceable
        .iter()
        .map(|c| c.func)
        .chain(external.iter().copied())
        .map(|f| vec![f])
        .collect();
    let mut refused: BTreeSet<SymbolId> = BTreeSet::new();
    let mut found: Vec<(SymbolId, Carried)> = Vec::new();
    let mut refuse = |chain: &[SymbolId], reason: String, routed: &mut Routed| {
        let via = if chain.len() > 1 {
            let names: Vec<String> = chain.iter().map(|&f| s.p.sym_name(f)).collect();
            format!(
                " (through its callers without an ftrace entry: {})",
                names.join(" <- ")
            )
        } else {
            String::new()
        };
        routed
            .refusals
            .push(refusal(s.p, chain[0], format!("{reason}{via}")));
        refused.insert(chain[0]);
    };
    while let Some(chain) = queue.pop() {
        let func = *chain.last().expect("a chain is never empty");
        let callers = match callers_of(s, func) {
            Ok(c) => c,
            Err(reason) => {
                refuse(&chain, reason, &mut routed);
                continue;
            }
        };
        if callers.len() > s.max_callers {
            let reason = format!(
                "has no ftrace entry and {} callers, more than the limit of {} (--max-callers)",
                callers.len(),
                s.max_callers
            );
            refuse(&chain, reason, &mut routed);
            continue;
        }
        let name = s.p.sym_name(func);
        for &caller in &callers {
            if redirected.contains(&caller) || carried.contains(&caller) {
                continue;
            }
            let original = s.pairs.p2o[&caller];
            if has_fentry(s.p, caller) && has_fentry(s.o, original) {
                redirected.insert(caller);
                routed.forced.push(Changed {
                    func: caller,
                    difference: Difference {
                        offset: 0,
                        what: format!(
                            "calls {name}, which has no ftrace entry: redirected so that it calls the new {name}"
                        ),
                    },
                });
            } else if chain.len() >= MAX_DEPTH {
                let mut whole = chain.clone();
                whole.push(caller);
                let reason = format!(
                    "has no ftrace entry, and no traced caller is found within {MAX_DEPTH} levels"
                );
                refuse(&whole, reason, &mut routed);
            } else {
                carried.insert(caller);
                let mut longer = chain.clone();
                longer.push(caller);
                queue.push(longer);
            }
        }
        let global = !external.contains(&func) && !s.p.is_local(func);
        found.push((
            chain[0],
            Carried {
                func,
                callers,
                global,
            },
        ));
    }
    finish(s, routed, found, &refused, &external, untraceable)
}

/// What was found for each root not refused, carried here or elsewhere;
/// the refused changed functions as unroutable.
fn finish(
    s: &Sides<'_, '_>,
    mut routed: Routed,
    found: Vec<(SymbolId, Carried)>,
    refused: &BTreeSet<SymbolId>,
    external: &HashSet<SymbolId>,
    untraceable: &[Changed],
) -> Routed {
    let (elsewhere, carried): (Vec<_>, Vec<_>) = found
        .into_iter()
        .filter(|(root, _)| !refused.contains(root))
        .map(|(_, c)| c)
        .partition(|c| external.contains(&c.func));
    routed.carried = carried;
    routed.carried.sort_by_key(|c| s.p.sym_name(c.func));
    routed.elsewhere = elsewhere;
    routed.elsewhere.sort_by_key(|c| s.p.sym_name(c.func));
    routed.unroutable = untraceable
        .iter()
        .filter(|c| refused.contains(&c.func))
        .cloned()
        .collect();
    routed
}

fn refusal(p: &Input, func: SymbolId, reason: String) -> Refusal {
    Refusal {
        reason,
        section: p
            .sym_section(func)
            .map(|sec| p.section_name(sec))
            .unwrap_or_default(),
        symbol: p.sym_name(func),
    }
}

/// This object's undefined symbol named `name`, if it references one.
fn undefined(input: &Input, name: &str) -> Option<SymbolId> {
    input.symbols().find(|&f| {
        input.sym_section(f).is_none() && !input.is_local(f) && input.sym_name(f) == name
    })
}

/// The callers (patched ids, sorted, without `func` itself) of `func` in
/// both objects (in this unit: a global's callers elsewhere are the build
/// driver's to find), or why it cannot be patched through them.
fn callers_of(s: &Sides<'_, '_>, func: SymbolId) -> Result<Vec<SymbolId>, String> {
    let original = match s.pairs.p2o.get(&func) {
        Some(&o) => Some(o),
        // A function of another unit: this object's reference to it.
        None if s.p.sym_section(func).is_none() => undefined(s.o, &s.p.sym_name(func)),
        None => return Err("new function without an ftrace entry".into()),
    };
    let mut out = BTreeSet::new();
    for caller in original.map_or(Ok(Vec::new()), |o| direct_callers(s.o, s.oe, o))? {
        let paired = s.pairs.o2p.get(&caller).ok_or_else(|| {
            format!(
                "has no ftrace entry, and its caller {} has no counterpart in the patched object",
                s.o.sym_name(caller)
            )
        })?;
        out.insert(*paired);
    }
    for caller in direct_callers(s.p, s.pe, func)? {
        // New functions call the new code anyway.
        if s.pairs.p2o.contains_key(&caller) {
            out.insert(caller);
        }
    }
    out.remove(&func);
    // Init code has run and is freed: it never calls the old code again,
    // and cannot be redirected.
    out.retain(|&caller| {
        !s.p.sym_section(caller)
            .is_some_and(|sec| is_init(&s.p.section_name(sec)))
    });
    Ok(out.into_iter().collect())
}

/// The functions of `input` that call or jump to `func` directly, or why
/// the old code could be reached another way.
fn direct_callers(
    input: &Input,
    entries: &Entries,
    func: SymbolId,
) -> Result<Vec<SymbolId>, String> {
    let mut out = Vec::new();
    for sec in input.sections() {
        let name = input.section_name(sec);
        if is_ignored(&name) || input.relocs(sec).is_empty() {
            continue;
        }
        let exec = input.section(sec).sh_flags.0 & elf::SHF_EXECINSTR.0 != 0;
        let bias = exec.then(|| CodeBias::new(input.data(sec), 0));
        for r in input.relocs(sec) {
            let b = bias.as_ref().map_or(0, |c| c.bias(r.r_offset, r.r_type));
            let Target::Symbol(to, off) = target(input, r, b) else {
                continue;
            };
            if to != func {
                continue;
            }
            if special(&name).is_some() {
                // An entry about the function's own code is part of it.
                match entry_owner(input, entries, sec, r.r_offset) {
                    Some(owner) if owner == func => continue,
                    owner => {
                        return Err(format!(
                            "has no ftrace entry and is reached from a {name} entry{}: that path would keep the old code",
                            owner
                                .map(|o| format!(" of {}", input.sym_name(o)))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
            if name == ".export_symbol" || name.starts_with("___ksymtab") {
                return Err(
                    "has no ftrace entry and is exported: a module, maybe one built out of tree, could call the old code"
                        .into(),
                );
            }
            let owner = function_at(input, sec, r.r_offset);
            if exec && off + b == 0 && is_branch_site(input.data(sec), r.r_offset, r.r_type) {
                match owner {
                    Some(caller) => out.push(caller),
                    None => {
                        return Err(format!(
                            "has no ftrace entry and is called from {name} outside any function: that call would keep the old code"
                        ));
                    }
                }
            } else {
                return Err(format!(
                    "has no ftrace entry and its address is taken in {name}{}: a pointer could call the old code",
                    owner
                        .map(|o| format!(" ({})", input.sym_name(o)))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

/// The function whose special-section entry holds `offset`.
fn entry_owner(input: &Input, entries: &Entries, sec: SectionId, offset: u64) -> Option<SymbolId> {
    let list = entries.all.get(&sec)?;
    let i = list
        .partition_point(|e| e.offset <= offset)
        .checked_sub(1)?;
    let (owner, _) = list[i].owner?;
    Some(parent_of(input, owner))
}

/// The function (its parent, for a `.cold` part) covering `offset` of a
/// code section.
fn function_at(input: &Input, sec: SectionId, offset: u64) -> Option<SymbolId> {
    let f = input.symbols_in(sec).iter().copied().find(|&f| {
        let sym = input.sym(f);
        input.kind(f) == SymKind::Func
            && sym.st_value <= offset
            && offset < sym.st_value + sym.st_size
    })?;
    Some(parent_of(input, f))
}

/// A `.cold` part's parent function (in its own unit), else the function.
fn parent_of(input: &Input, f: SymbolId) -> SymbolId {
    let name = input.sym_name(f);
    let Some(parent) = cold_parent(&name) else {
        return f;
    };
    input
        .symbols()
        .find(|&s| {
            input.kind(s) == SymKind::Func
                && input.sym_name(s) == parent
                && input.file_group(s) == input.file_group(f)
        })
        .unwrap_or(f)
}

/// Whether the PC-relative field at `offset` is the operand of a `call`,
/// `jmp` or conditional jump (`e8`, `e9`, `0f 8x`).
fn is_branch_site(code: &[u8], offset: u64, r_type: elf::RelocationType) -> bool {
    if r_type != elf::R_X86_64_PLT32 && r_type != elf::R_X86_64_PC32 {
        return false;
    }
    let at = offset as usize;
    let before = |n: usize| at.checked_sub(n).and_then(|i| code.get(i)).copied();
    matches!(before(1), Some(0xe8 | 0xe9))
        || (before(2) == Some(0x0f) && before(1).is_some_and(|b| b & 0xf0 == 0x80))
}
