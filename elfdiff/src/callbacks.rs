//! Livepatch callbacks a patch declares with `kpbuild-macros.h`: each
//! `KPBUILD_*_CALLBACK(fn)` puts one pointer to `fn` in a section
//! `.kpbuild.callbacks.KIND`. kpatch's `KPATCH_*_CALLBACK(fn)` (its own
//! `kpatch-macros.h` or kpbuild's) put a record `{ fn, objname }` in
//! `.kpatch.callbacks.KIND`; `objname` is NULL there (no relocation), so
//! both read the same: every relocation of the section names one callback.
//! The sections themselves never reach the output (they are ignored like
//! `.discard`); this module reads which function each pointer names, so the
//! module glue can hand it to the livepatch core.

use crate::Refusal;
use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;

/// Prefix of the callback sections.
pub const SECTION_PREFIX: &str = ".kpbuild.callbacks.";
/// Prefix of the callback sections of kpatch's macros.
pub const KPATCH_SECTION_PREFIX: &str = ".kpatch.callbacks.";

/// The kinds, as `struct klp_callbacks` names its members.
pub const KINDS: [&str; 4] = ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"];

/// One callback of the patched object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Callback {
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: String,
    /// The function (patched object), a function the patch adds.
    pub function: String,
}

/// The callbacks of a patched object, or refusals saying why one cannot be
/// used. `new` lists the functions the patch adds.
pub fn read(patched: &[u8], new: &[String]) -> Result<Vec<Callback>, Vec<Refusal>> {
    // The caller has parsed the object already; a failure here is not news.
    let Ok(file) = object::File::parse(patched) else {
        return Ok(Vec::new());
    };
    let mut callbacks = Vec::new();
    let mut refusals = Vec::new();
    // (kind, its sections, their functions): one kind may come from both
    // macro families, and the livepatch core takes one of each.
    let mut by_kind: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for section in file.sections() {
        let name = section.name().unwrap_or("");
        let Some(kind) = name
            .strip_prefix(SECTION_PREFIX)
            .or_else(|| name.strip_prefix(KPATCH_SECTION_PREFIX))
        else {
            continue;
        };
        if !KINDS.contains(&kind) {
            refusals.push(refuse(
                name,
                "",
                format!(
                    "unknown callback kind `{kind}` (known: {})",
                    KINDS.join(", ")
                ),
            ));
            continue;
        }
        let at = match by_kind.iter().position(|(k, _, _)| k == kind) {
            Some(at) => at,
            None => {
                by_kind.push((kind.to_string(), Vec::new(), Vec::new()));
                by_kind.len() - 1
            }
        };
        by_kind[at].1.push(name.to_string());
        for (offset, reloc) in section.relocations() {
            match entry_function(&file, offset, &reloc) {
                Ok(function) => by_kind[at].2.push(function),
                Err((symbol, reason)) => refusals.push(refuse(name, &symbol, reason)),
            }
        }
    }
    for (kind, sections, mut functions) in by_kind {
        functions.sort();
        let section = sections.join(" ");
        for function in &functions {
            match judge(&kind, function, &functions, new) {
                Ok(callback) => callbacks.push(callback),
                Err(reason) => refusals.push(refuse(&section, function, reason)),
            }
        }
    }
    if refusals.is_empty() {
        callbacks.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(callbacks)
    } else {
        Err(refusals)
    }
}

/// A refusal of a callback section or of one of its entries.
fn refuse(section: &str, symbol: &str, reason: String) -> Refusal {
    Refusal {
        reason,
        section: section.to_string(),
        symbol: symbol.to_string(),
    }
}

/// The function the entry at `offset` of a callback section points at, or
/// the symbol it names (empty when none) and why it is no function.
fn entry_function(
    file: &object::File,
    offset: u64,
    reloc: &object::Relocation,
) -> Result<String, (String, String)> {
    let object::RelocationTarget::Symbol(index) = reloc.target() else {
        return Err((
            String::new(),
            format!("entry at {offset:#x} names no symbol"),
        ));
    };
    let Ok(symbol) = file.symbol_by_index(index) else {
        return Err((String::new(), format!("entry at {offset:#x}: bad symbol")));
    };
    let symbol_name = symbol.name().unwrap_or("").to_string();
    // Usually the function's section symbol plus an addend.
    let function = if symbol.kind() == object::SymbolKind::Section {
        let addend = reloc.addend() as u64;
        file.symbols().find(|s| {
            s.kind() == object::SymbolKind::Text
                && s.section_index() == symbol.section_index()
                && s.address() == addend
        })
    } else {
        Some(symbol)
    };
    match function.filter(|f| f.kind() == object::SymbolKind::Text) {
        Some(f) => Ok(f.name().unwrap_or("").to_string()),
        None => Err((
            symbol_name,
            format!("entry at {offset:#x} does not point at a function"),
        )),
    }
}

/// One function of a callback section of `kind` (whose functions, sorted,
/// are `functions`): a callback, or why it cannot be one.
fn judge(
    kind: &str,
    function: &str,
    functions: &[String],
    new: &[String],
) -> Result<Callback, String> {
    if !new.iter().any(|n| n == function) {
        Err("a callback must be a function the patch adds; this one exists in the original".into())
    } else if functions.len() > 1 {
        Err(format!(
            "{} {kind} callbacks in one object ({}): the livepatch core takes one of each kind",
            functions.len(),
            functions.join(", ")
        ))
    } else {
        Ok(Callback {
            kind: kind.to_string(),
            function: function.to_string(),
        })
    }
}
