//! elfdiff: finds exactly what a source patch changed in a kernel object.
//!
//! Input: the original and the patched build of one translation unit (x86_64
//! ELF relocatable objects compiled with `-ffunction-sections
//! -fdata-sections`). Output: a [`Diff`] saying which functions changed,
//! which are new, what cannot be live patched ([`Refusal`]), and an object
//! holding only what the patch needs, whose references to everything else are
//! undefined symbols named as in the original object.
//!
//! Layers: each module uses only the modules listed above it (and the
//! crate root's types), so data flows one way:
//! - [`input`]: reads and validates an object, indexes it.
//! - [`names`]: compiler-generated names and their canonical forms.
//! - [`pairs`]: the symbol pairing, the hand-off from correlation to comparison.
//! - [`compare`]: compares code and data modulo relocations, under a pairing.
//! - [`correlate`]: pairs symbols of the two objects (comparing where names
//!   alone cannot decide).
//! - [`callbacks`]: the livepatch callbacks a patch declares.
//! - [`kpatch`]: the other marks of kpatch's patch-author macros (ignored
//!   functions and sections, forced functions).
//! - [`special`]: the kernel's special sections, one table entry each (the
//!   callbacks' sections among them).
//! - [`analyze`]: changed / new / refused / included.
//! - [`extract`]: writes the output object.
//!
//! The crate does no I/O: it takes bytes and returns data and bytes.

pub mod analyze;
pub mod callbacks;
pub mod callers;
pub mod compare;
pub mod correlate;
pub mod extract;
pub mod input;
pub mod kpatch;
pub mod names;
pub mod pairs;
pub mod special;

use serde::Serialize;
use std::collections::HashMap;

/// Errors: bad input or a bug, never a refusal (see [`Refusal`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is not a usable object.
    #[error("{file}: {why}")]
    BadInput {
        /// Which input.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// The two objects are not builds of the same source file.
    #[error("{original} and {patched} are not builds of the same source file")]
    Mismatch {
        /// The original object and its source file.
        original: String,
        /// The patched object and its source file.
        patched: String,
    },
    /// A special section's size is not a multiple of its entry size.
    #[error(
        "{file}: section {section} is {size} bytes, not a multiple of its entry size {entry_size} (set it with --entry-size {section}=BYTES)"
    )]
    EntrySize {
        /// Which input.
        file: String,
        /// The section.
        section: String,
        /// Its size.
        size: u64,
        /// The entry size assumed.
        entry_size: usize,
    },
    /// An inconsistency the differ cannot resolve.
    #[error("{file}: internal error: {why}")]
    Internal {
        /// Which input.
        file: String,
        /// What went wrong.
        why: String,
    },
}

/// Options of a diff.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Entry sizes overriding the built-in table, by section name.
    pub entry_sizes: HashMap<String, usize>,
    /// How many callers may carry a changed function without an ftrace
    /// entry ([`callers::DEFAULT_MAX_CALLERS`] when `None`).
    pub max_callers: Option<usize>,
    /// Global functions without an ftrace entry that the patch changes in
    /// other units and carries there: their callers in this object are
    /// redirected (or carried) too, so that they call the new code.
    pub carried_elsewhere: Vec<String>,
}

/// A change that cannot be live patched safely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// Why.
    pub reason: String,
    /// The section concerned (patched object).
    pub section: String,
    /// The symbol concerned (patched object), empty when none.
    pub symbol: String,
}

/// The verdict on a pair of objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A patch can be built.
    Patch,
    /// Nothing functional changed.
    NoChange,
    /// Something cannot be live patched.
    Refused,
}

/// A changed function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedFunction {
    /// Name in the patched object.
    pub name: String,
    /// Name in the original object (what the running kernel calls it).
    pub original_name: String,
    /// Whether the function is local to its file (`static`).
    pub local: bool,
    /// Offset of the first difference.
    pub offset: u64,
    /// What differs.
    pub what: String,
}

/// An unchanged function or variable that differs from its original only
/// where a source line number is written: judged no change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineOnly {
    /// Name in the patched object.
    pub symbol: String,
    /// Each line-dependent construct judged (`line argument of
    /// __might_sleep: 120 → 121`, `__bug_table entry at +0x1a: line field
    /// at +0x8: 40 → 41`, a `file.c:LINE` string).
    pub what: Vec<String>,
}

/// A changed function without an ftrace entry, which the livepatch carries
/// as a function of its own and reaches through its redirected callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarriedFunction {
    /// Name in the patched object.
    pub name: String,
    /// The callers whose copies call the new code (redirected, or carried
    /// the same way when they have no ftrace entry either).
    pub callers: Vec<String>,
    /// Whether it is global: its callers in other units are redirected too
    /// (the build driver finds them and lists them in `other_units`).
    pub global: bool,
    /// Its callers in other units of the target, by unit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_units: Vec<UnitCallers>,
}

/// The callers of a carried global function in one other unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitCallers {
    /// The unit's object, relative to the build tree.
    pub object: String,
    /// Its functions that call the carried one (redirected, or carried).
    pub callers: Vec<String>,
}

/// A symbol the extracted object references but does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// Name in the original object (and so in the target).
    pub name: String,
    /// Whether it was local to the file in the original object.
    pub local: bool,
    /// Whether it is a function.
    pub function: bool,
}

/// The result of diffing one pair of objects.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// The verdict.
    pub outcome: Outcome,
    /// Changed functions.
    pub changed: Vec<ChangedFunction>,
    /// New functions (patched names).
    pub new: Vec<String>,
    /// Changed functions without an ftrace entry, carried by their callers.
    pub carried: Vec<CarriedFunction>,
    /// Functions of other units carried there ([`Options::carried_elsewhere`])
    /// and their callers here, which the patch redirects.
    pub carried_elsewhere: Vec<CarriedFunction>,
    /// New functions and variables of global binding the output object
    /// defines: other units of the same patch may use them, and then reach
    /// this definition inside the livepatch module.
    pub new_globals: Vec<String>,
    /// Livepatch callbacks the patch declares (`kpbuild-macros.h` or
    /// `kpatch-macros.h`).
    pub callbacks: Vec<callbacks::Callback>,
    /// What `KPATCH_IGNORE_FUNCTION`, `KPATCH_IGNORE_SECTION` and
    /// `KPATCH_FORCE_UNSAFE` said (serialized as three fields of their own).
    #[serde(flatten)]
    pub marks: kpatch::Marks,
    /// What cannot be live patched.
    pub refusals: Vec<Refusal>,
    /// Unchanged symbols whose only differences are moved source lines.
    pub line_only: Vec<LineOnly>,
    /// Symbols defined in the output object.
    pub included: Vec<String>,
    /// Symbols referenced but not carried.
    pub references: Vec<Reference>,
    /// The source file (from `STT_FILE`), used to find local symbols in the target.
    pub file_name: Option<String>,
    /// Named local functions and variables of the original object (to tell
    /// apart same-named files in the target).
    pub original_locals: Vec<String>,
    /// The output object; only for [`Outcome::Patch`].
    #[serde(skip)]
    pub object: Option<Vec<u8>>,
}

/// Why a local of a composite object's second or later unit is refused.
const OTHER_UNIT_LOCAL: &str = "local symbol of another unit than the first of this composite object (several STT_FILE groups): the running kernel's locals are looked up in the first unit's group only";

/// The refusal of a changed local function of a later unit.
fn other_unit_refusal(p: &input::Input, func: input::SymbolId) -> Refusal {
    Refusal {
        reason: OTHER_UNIT_LOCAL.into(),
        section: p
            .sym_section(func)
            .map(|s| p.section_name(s))
            .unwrap_or_default(),
        symbol: p.sym_name(func),
    }
}

/// The unchanged symbols judged to differ in line numbers only, by name.
fn line_only(p: &input::Input, a: &analyze::Analysis) -> Vec<LineOnly> {
    a.line_only
        .iter()
        .map(|(s, what)| LineOnly {
            symbol: p.sym_name(*s),
            what: what.clone(),
        })
        .collect()
}

/// The new (unpaired) functions and variables of global binding the
/// livepatch carries, sorted.
fn new_globals(p: &input::Input, a: &analyze::Analysis) -> Vec<String> {
    let mut out: Vec<String> = p
        .symbols()
        .filter(|&s| matches!(p.kind(s), input::SymKind::Func | input::SymKind::Object))
        .filter(|&s| !p.is_local(s) && !a.pairs.p2o.contains_key(&s))
        .filter(|&s| p.sym_section(s).is_some_and(|sec| a.include.contains(&sec)))
        .map(|s| p.sym_name(s))
        .filter(|n| !n.is_empty() && !n.starts_with("__pfx_"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The named local functions and variables of an object.
fn named_locals(o: &input::Input) -> Vec<String> {
    o.symbols()
        .filter(|&s| {
            o.is_local(s) && matches!(o.kind(s), input::SymKind::Func | input::SymKind::Object)
        })
        .map(|s| o.sym_name(s))
        .filter(|n| !n.is_empty())
        .collect()
}

/// The functions carried by their callers, by name (callers sorted).
fn carried(p: &input::Input, list: &[callers::Carried]) -> Vec<CarriedFunction> {
    list.iter()
        .map(|c| {
            let mut callers: Vec<String> = c.callers.iter().map(|&f| p.sym_name(f)).collect();
            callers.sort();
            CarriedFunction {
                name: p.sym_name(c.func),
                callers,
                global: c.global,
                other_units: Vec::new(),
            }
        })
        .collect()
}

/// Diffs an original and a patched object.
pub fn diff(
    original_label: &str,
    original: &[u8],
    patched_label: &str,
    patched: &[u8],
    options: &Options,
) -> Result<Diff, Error> {
    let (original, patched) = (input::readable(original), input::readable(patched));
    let o = input::Input::parse(original_label, &original)?;
    let p = input::Input::parse(patched_label, &patched)?;
    let a = analyze::analyze(&o, &p, options)?;
    let changed: Vec<ChangedFunction> = a
        .changed
        .iter()
        .map(|c| ChangedFunction {
            name: p.sym_name(c.func),
            original_name: o.sym_name(a.pairs.p2o[&c.func]),
            local: p.is_local(c.func),
            offset: c.difference.offset,
            what: c.difference.what.clone(),
        })
        .collect();
    let new: Vec<String> = a.new.iter().map(|&f| p.sym_name(f)).collect();
    let carried_elsewhere = carried(&p, &a.elsewhere);
    let carried = carried(&p, &a.carried);
    let mut refusals = a.refusals.clone();
    let callbacks = callbacks::read(&patched, &new).unwrap_or_else(|r| {
        refusals.extend(r);
        Vec::new()
    });
    let outcome = if !refusals.is_empty() {
        Outcome::Refused
    } else if changed.is_empty() && new.is_empty() && carried.is_empty() {
        Outcome::NoChange
    } else {
        Outcome::Patch
    };
    let mut result = Diff {
        outcome,
        changed,
        new,
        carried,
        carried_elsewhere,
        new_globals: Vec::new(),
        callbacks,
        marks: a.marks.clone(),
        refusals,
        line_only: line_only(&p, &a),
        included: Vec::new(),
        references: Vec::new(),
        file_name: p.file_name.clone(),
        original_locals: named_locals(&o),
        object: None,
    };
    result.changed.sort_by(|x, y| x.name.cmp(&y.name));
    result.new.sort();
    if outcome != Outcome::Patch {
        return Ok(result);
    }
    let mut included: Vec<String> = p
        .symbols()
        .filter(|&s| p.sym_section(s).is_some_and(|sec| a.include.contains(&sec)))
        .filter(|&s| matches!(p.kind(s), input::SymKind::Func | input::SymKind::Object))
        .map(|s| p.sym_name(s))
        .collect();
    included.sort();
    let other_unit_functions: Vec<Refusal> = a
        .changed
        .iter()
        .filter(|c| extract::is_other_unit_local(&p, c.func))
        .map(|c| other_unit_refusal(&p, c.func))
        .collect();
    result.new_globals = new_globals(&p, &a);
    let extracted = extract::extract(&o, p, &a, options)?;
    let mut other_unit: Vec<Refusal> = other_unit_functions;
    other_unit.extend(
        extracted
            .other_unit_locals
            .iter()
            .map(|(section, symbol)| Refusal {
                reason: OTHER_UNIT_LOCAL.into(),
                section: section.clone(),
                symbol: symbol.clone(),
            }),
    );
    if !other_unit.is_empty() {
        other_unit.sort_by(|a, b| (&a.section, &a.symbol).cmp(&(&b.section, &b.symbol)));
        other_unit.dedup();
        result.refusals = other_unit;
        result.outcome = Outcome::Refused;
        return Ok(result);
    }
    result.included = included;
    result.references = extracted.references;
    result.object = Some(extracted.object);
    Ok(result)
}
