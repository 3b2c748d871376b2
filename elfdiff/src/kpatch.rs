//! The marks kpatch's patch-author macros (`kpatch-macros.h`, kpatch's own
//! header or kpbuild's) leave in a patched object, one pointer each:
//! `KPATCH_IGNORE_FUNCTION(fn)` in `.kpatch.ignore.functions` (the function
//! is treated as unchanged: never patched), `KPATCH_IGNORE_SECTION("name")`
//! in `.kpatch.ignore.sections` (the section is never compared nor copied),
//! `KPATCH_FORCE_UNSAFE(fn)` in `.kpatch.force` (reported only: the
//! livepatch core has no per-function stack check to lift, and a refusal
//! guards against a module that would crash or not load, so none is lifted).
//! The callbacks' sections `.kpatch.callbacks.KIND` are read by
//! [`crate::callbacks`]. None of these sections reaches the output.

use crate::Refusal;
use crate::input::{Input, SectionId, SymKind};
use object::build::elf::Relocation;
use serde::Serialize;

/// Prefix of every section the macros emit.
pub const PREFIX: &str = ".kpatch.";
/// `KPATCH_IGNORE_FUNCTION` records.
pub const IGNORE_FUNCTIONS: &str = ".kpatch.ignore.functions";
/// `KPATCH_IGNORE_SECTION` records.
pub const IGNORE_SECTIONS: &str = ".kpatch.ignore.sections";
/// `KPATCH_FORCE_UNSAFE` records.
pub const FORCE: &str = ".kpatch.force";

/// What the marks of one patched object say, names sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Marks {
    /// Functions treated as unchanged (`KPATCH_IGNORE_FUNCTION`).
    pub ignored_functions: Vec<String>,
    /// Sections never compared nor copied (`KPATCH_IGNORE_SECTION`).
    pub ignored_sections: Vec<String>,
    /// Functions marked `KPATCH_FORCE_UNSAFE` (reported, nothing lifted).
    pub forced_functions: Vec<String>,
}

impl Marks {
    /// Whether `KPATCH_IGNORE_FUNCTION` names the function `name`.
    pub fn ignores_function(&self, name: &str) -> bool {
        self.ignored_functions.iter().any(|f| f == name)
    }

    /// Whether `KPATCH_IGNORE_SECTION` names the section `name`.
    pub fn ignores_section(&self, name: &str) -> bool {
        self.ignored_sections.iter().any(|s| s == name)
    }
}

/// Reads the marks of a patched object, with refusals for records that name
/// no function (or no string) of the object.
pub fn read(p: &Input) -> (Marks, Vec<Refusal>) {
    let mut marks = Marks::default();
    let mut refusals = Vec::new();
    for id in p.sections() {
        let name = p.section_name(id);
        let (list, what) = match name.as_str() {
            IGNORE_FUNCTIONS => (&mut marks.ignored_functions, Pointee::Function),
            FORCE => (&mut marks.forced_functions, Pointee::Function),
            IGNORE_SECTIONS => (&mut marks.ignored_sections, Pointee::String),
            _ => continue,
        };
        for r in p.relocs(id) {
            let found = match what {
                Pointee::Function => function(p, r),
                Pointee::String => string(p, r),
            };
            match found {
                Some(v) => list.push(v),
                None => refusals.push(Refusal {
                    reason: format!(
                        "record at {:#x} does not point at {} of this object",
                        r.r_offset,
                        what.describe()
                    ),
                    section: name.clone(),
                    symbol: p.sym_name(p.reloc_sym(r)),
                }),
            }
        }
    }
    for list in [
        &mut marks.ignored_functions,
        &mut marks.ignored_sections,
        &mut marks.forced_functions,
    ] {
        list.sort();
        list.dedup();
    }
    (marks, refusals)
}

/// What a record's pointer must point at.
#[derive(Clone, Copy)]
enum Pointee {
    Function,
    String,
}

impl Pointee {
    fn describe(self) -> &'static str {
        match self {
            Pointee::Function => "a function",
            Pointee::String => "a section name (a string)",
        }
    }
}

/// Where a relocation points: its section and offset, for a section symbol
/// or an assembler label; else the symbol itself.
fn pointee(p: &Input, r: &Relocation) -> Result<(SectionId, i64), crate::input::SymbolId> {
    let s = p.reloc_sym(r);
    match p.section_relative(s) {
        Some((section, base)) => Ok((section, base + r.r_addend)),
        None => Err(s),
    }
}

/// The function defined here that a record points at.
fn function(p: &Input, r: &Relocation) -> Option<String> {
    let f = match pointee(p, r) {
        Ok((section, offset)) => p.covering(section, offset)?,
        Err(s) => s,
    };
    (p.kind(f) == SymKind::Func).then(|| p.sym_name(f))
}

/// The NUL-terminated string a record points at.
fn string(p: &Input, r: &Relocation) -> Option<String> {
    let (section, offset) = match pointee(p, r) {
        Ok(at) => at,
        Err(s) if p.kind(s) == SymKind::Object => {
            let section = p.sym_section(s)?;
            (section, p.sym(s).st_value as i64 + r.r_addend)
        }
        Err(_) => return None,
    };
    let data = p.data(section).get(usize::try_from(offset).ok()?..)?;
    let end = data.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&data[..end])
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
