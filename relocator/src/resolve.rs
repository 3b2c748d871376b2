//! Resolution of every reference of an extracted object against the target.
//!
//! Each undefined symbol of the object becomes one of:
//! - a normal reference, when vmlinux exports it (the module loader resolves it);
//! - a livepatch symbol `.klp.sym.OBJ.NAME,POS`, resolved by the livepatch
//!   core by name and position, for everything else (static functions and
//!   variables, unexported globals, anything in a target module);
//! - a plain reference inside the livepatch module, for a global another
//!   unit of the same patch defines as new: the module carries that
//!   definition, whichever target object either unit patches, and the
//!   running kernel has no such symbol to look up.
//!
//! The object is written in *pre-link* form: livepatch symbols are plain
//! undefined globals, so the module can be linked by kbuild; the module's
//! final `.ko` is converted by [`crate::klp::convert_to_livepatch`].

use crate::Error;
use crate::klp::klp_symbol_name;
use crate::target::{Exports, FileGroupId, SymbolId, TargetKind, TargetSymbols};
use object::build::ByteString;
use object::build::elf::Builder;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, SymbolIndex, elf};
use std::collections::HashMap;

type Elf64 = elf::FileHeader64<Endianness>;

/// A symbol the extracted object references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRef {
    /// Its name in the original object (and so in the target).
    pub name: String,
    /// Whether it is local to the source file.
    pub local: bool,
}

/// A changed function the patch replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// Its name in the extracted object.
    pub name: String,
    /// Its name in the original object and the target.
    pub original_name: String,
    /// Whether it is local to the source file.
    pub local: bool,
}

/// What the relocator needs from the differ.
#[derive(Debug, Clone)]
pub struct PatchInput<'a> {
    /// The extracted object (undefined symbols name the target's symbols).
    pub object: &'a [u8],
    /// Source file name from `STT_FILE`, to find the file's locals in the target.
    pub file_name: Option<&'a str>,
    /// Undefined symbols of the object.
    pub references: Vec<SymbolRef>,
    /// Functions the patch replaces.
    pub functions: Vec<FunctionRef>,
    /// Every named local function or variable of the original object; used
    /// to tell apart two files of the same name in the target.
    pub original_locals: Vec<String>,
    /// Prefix of the global aliases the module glue references.
    pub alias_prefix: &'a str,
    /// Livepatch callbacks: (kind, function in the extracted object), each
    /// given a global alias `PREFIXcb_KIND` for the glue.
    pub callbacks: Vec<(String, String)>,
    /// New globals that units of the same patch define (their extracted
    /// objects are linked into the same module): a reference to one of them
    /// is [`How::Internal`], never looked up in the target.
    pub internal: &'a std::collections::BTreeSet<String>,
}

/// The running target.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The object being patched (vmlinux or a module).
    pub symbols: &'a TargetSymbols,
    /// What vmlinux exports (Module.symvers or `__ksymtab_`).
    pub exports: &'a Exports,
    /// vmlinux, when the object being patched is a module: references the
    /// module does not define resolve there.
    pub vmlinux: Option<&'a TargetSymbols>,
}

/// How one reference was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// Exported by vmlinux: a normal relocation.
    Exported,
    /// A livepatch relocation against this symbol.
    Livepatch(String),
    /// Defined by another unit of the patch: a plain relocation the
    /// module's link resolves.
    Internal,
}

/// One resolved reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The target's name for it.
    pub name: String,
    /// How it is reached.
    pub how: How,
}

/// A function the module glue registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedFunction {
    /// The name of the function being replaced.
    pub old_name: String,
    /// The object it lives in (`vmlinux` or a module name).
    pub objname: String,
    /// Its livepatch position (0: unique).
    pub sympos: u32,
    /// Its size in the target.
    pub old_size: u64,
    /// The global alias of the replacement in the output object.
    pub new_symbol: String,
}

/// The relocator's result.
#[derive(Debug, Clone)]
pub struct Relocated {
    /// The object in pre-link form.
    pub object: Vec<u8>,
    /// The functions to register.
    pub functions: Vec<PatchedFunction>,
    /// How every reference resolved.
    pub resolutions: Vec<Resolution>,
    /// The callbacks: (kind, global alias).
    pub callbacks: Vec<(String, String)>,
}

fn find_group(
    target: &TargetSymbols,
    input: &PatchInput,
    needed: &[&str],
) -> Result<FileGroupId, Error> {
    let file = input.file_name.ok_or(Error::NoFileSymbol)?;
    match target.find_file_group(file, needed) {
        Err(Error::AmbiguousFileGroup { .. }) if !input.original_locals.is_empty() => {
            // More locals tell more files apart.
            let all: Vec<&str> = input.original_locals.iter().map(String::as_str).collect();
            target.find_file_group(file, &all)
        }
        other => other,
    }
}

/// The local names the target's file group must hold: those the object
/// references and the local functions it replaces, sorted, without duplicates.
fn needed_locals<'a>(input: &'a PatchInput) -> Vec<&'a str> {
    let mut needed: Vec<&str> = input
        .references
        .iter()
        .filter(|r| r.local)
        .map(|r| r.name.as_str())
        .collect();
    needed.extend(
        input
            .functions
            .iter()
            .filter(|f| f.local)
            .map(|f| f.original_name.as_str()),
    );
    needed.sort();
    needed.dedup();
    needed
}

/// Resolves every reference and function of `input` against `target`.
pub fn relocate(input: &PatchInput, target: Target) -> Result<Relocated, Error> {
    let objname = target.symbols.objname().to_string();
    let needed = needed_locals(input);
    let group = if needed.is_empty() {
        None
    } else {
        Some(find_group(target.symbols, input, &needed)?)
    };

    let livepatch = |symbols: &TargetSymbols, id: SymbolId| -> Result<(String, u32), Error> {
        let pos = symbols.checked_position(id)?;
        Ok((
            klp_symbol_name(symbols.objname(), &symbols.symbol(id).name, pos),
            pos,
        ))
    };

    let mut resolutions = Vec::new();
    for r in &input.references {
        let how = if !r.local && input.internal.contains(&r.name) {
            How::Internal
        } else if r.local {
            let id = target
                .symbols
                .resolve_local(group.expect("locals need a group"), &r.name)?;
            How::Livepatch(livepatch(target.symbols, id)?.0)
        } else if target.exports.exporter(&r.name) == Some("vmlinux")
            && target
                .exports
                .export(&r.name)
                .is_some_and(|e| e.namespace.is_none())
            // A target module's own global of that name wins over vmlinux's export.
            && (target.symbols.kind() == TargetKind::Vmlinux
                || target
                    .symbols
                    .named(&r.name)
                    .iter()
                    .all(|&id| target.symbols.symbol(id).local))
        {
            How::Exported
        } else {
            match target.symbols.resolve_global(&r.name) {
                Ok(id) => How::Livepatch(livepatch(target.symbols, id)?.0),
                Err(Error::GlobalNotFound { .. }) if target.vmlinux.is_some() => {
                    let vmlinux = target.vmlinux.expect("checked");
                    How::Livepatch(livepatch(vmlinux, vmlinux.resolve_global(&r.name)?)?.0)
                }
                Err(e) => return Err(e),
            }
        };
        resolutions.push(Resolution {
            name: r.name.clone(),
            how,
        });
    }

    let mut functions = Vec::new();
    for (i, f) in input.functions.iter().enumerate() {
        let id = if f.local {
            target
                .symbols
                .resolve_local(group.expect("locals need a group"), &f.original_name)?
        } else {
            target.symbols.resolve_global(&f.original_name)?
        };
        let pos = target.symbols.checked_position(id)?;
        functions.push(PatchedFunction {
            old_name: f.original_name.clone(),
            objname: objname.clone(),
            sympos: pos,
            old_size: target.symbols.symbol(id).size,
            new_symbol: format!("{}{i}", input.alias_prefix),
        });
    }

    check_code_patching_sites(input.object, &resolutions)?;
    let callbacks: Vec<(String, String)> = input
        .callbacks
        .iter()
        .map(|(kind, _)| (kind.clone(), format!("{}cb_{kind}", input.alias_prefix)))
        .collect();
    let object = write(input, &objname, &resolutions, &functions, &callbacks)?;
    Ok(Relocated {
        object,
        functions,
        resolutions,
        callbacks,
    })
}

fn write(
    input: &PatchInput,
    objname: &str,
    resolutions: &[Resolution],
    functions: &[PatchedFunction],
    callbacks: &[(String, String)],
) -> Result<Vec<u8>, Error> {
    let bad = |why: String| Error::MalformedElf(why);
    let mut b = Builder::read64(input.object).map_err(|e| bad(e.to_string()))?;
    let renames: HashMap<&str, &str> = resolutions
        .iter()
        .filter_map(|r| match &r.how {
            How::Livepatch(s) => Some((r.name.as_str(), s.as_str())),
            How::Exported | How::Internal => None,
        })
        .collect();
    let mut defined: HashMap<String, object::build::elf::SymbolId> = HashMap::new();
    for s in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&s.name).into_owned();
        if s.section.is_none() && s.st_shndx == elf::SHN_UNDEF && !name.is_empty() {
            if let Some(new) = renames.get(name.as_str()) {
                s.name = ByteString::from(new.as_bytes().to_vec());
                let ty = s.st_type();
                s.set_st_info(elf::STB_GLOBAL, ty);
            }
        } else if s.st_type() == elf::STT_FUNC {
            defined.insert(name, s.id());
        }
    }
    // Global aliases the glue names: replacements, then callbacks.
    let aliases = input
        .functions
        .iter()
        .zip(functions)
        .map(|(f, func)| {
            (
                f.name.as_str(),
                func.new_symbol.as_str(),
                "patched function",
            )
        })
        .chain(
            input
                .callbacks
                .iter()
                .zip(callbacks)
                .map(|((_, f), (_, alias))| (f.as_str(), alias.as_str(), "callback")),
        );
    for (name, alias_name, what) in aliases {
        let id = *defined.get(name).ok_or_else(|| {
            bad(format!(
                "{what} {name} is not defined in the extracted object"
            ))
        })?;
        let src = b.symbols.get(id);
        let (section, value, size, other) = (src.section, src.st_value, src.st_size, src.st_other);
        let alias = b.symbols.add();
        alias.name = ByteString::from(alias_name.as_bytes().to_vec());
        alias.section = section;
        alias.st_value = value;
        alias.st_size = size;
        alias.st_other = other;
        alias.set_st_info(elf::STB_GLOBAL, elf::STT_FUNC);
    }
    add_list_sections(&mut b, input, objname, functions, callbacks);
    let mut out = Vec::new();
    b.write(&mut out)
        .map_err(|e| bad(format!("cannot write the object: {e}")))?;
    Ok(out)
}

/// Adds the non-allocated [`FUNCTIONS_SECTION`] and [`CALLBACKS_SECTION`]
/// (each only when it has lines).
fn add_list_sections(
    b: &mut Builder<'_>,
    input: &PatchInput,
    objname: &str,
    functions: &[PatchedFunction],
    callbacks: &[(String, String)],
) {
    // The function list, for `kpbuild inspect`: one line per function,
    // `OBJ OLD_NAME POS OLD_SIZE NEW_SYMBOL`. Not allocated, so the module
    // loader ignores it; linking concatenates the lists of all units.
    let mut list = String::new();
    for f in functions {
        list.push_str(&format!(
            "{} {} {} {} {}\n",
            f.objname, f.old_name, f.sympos, f.old_size, f.new_symbol
        ));
    }
    // The callback list, likewise: `OBJ KIND FUNCTION SYMBOL`.
    let mut callback_list = String::new();
    for ((kind, function), (_, alias)) in input.callbacks.iter().zip(callbacks) {
        callback_list.push_str(&format!("{objname} {kind} {function} {alias}\n"));
    }
    for (name, text) in [
        (FUNCTIONS_SECTION, list),
        (CALLBACKS_SECTION, callback_list),
    ] {
        if text.is_empty() {
            continue;
        }
        let section = b.sections.add();
        section.name = ByteString::from(name.as_bytes().to_vec());
        section.sh_type = elf::SHT_PROGBITS;
        section.sh_flags = elf::SectionFlags(0);
        section.sh_addralign = 1;
        section.data = object::build::elf::SectionData::Data(text.into_bytes().into());
    }
}

/// Sections whose entries the kernel reads when the livepatch module loads,
/// to patch code (jump labels, static calls). A key they reference must be
/// resolved by then: livepatch relocations into a module are applied only
/// when that module loads, so such a key cannot be reached.
const LOAD_TIME_SITE_SECTIONS: &[&str] = &["__jump_table", ".static_call_sites"];

/// Refuses entries of [`LOAD_TIME_SITE_SECTIONS`] that would reference a
/// module's symbol through a livepatch relocation.
fn check_code_patching_sites(object: &[u8], resolutions: &[Resolution]) -> Result<(), Error> {
    let into_module: HashMap<&str, &str> = resolutions
        .iter()
        .filter_map(|r| match &r.how {
            How::Livepatch(s) => crate::klp::parse_klp_symbol_name(s)
                .filter(|(obj, _, _)| *obj != "vmlinux")
                .map(|(obj, _, _)| (r.name.as_str(), obj)),
            How::Exported | How::Internal => None,
        })
        .collect();
    if into_module.is_empty() {
        return Ok(());
    }
    for (section, symbol) in load_time_site_symbols(object)? {
        if let Some(module) = into_module.get(symbol) {
            return Err(Error::Unsupported {
                section: section.to_string(),
                symbol: symbol.to_string(),
                why: format!(
                    "its key lives in module {module}, whose livepatch relocations are applied only when that module loads, after the kernel has read the entry"
                ),
            });
        }
    }
    Ok(())
}

/// The symbols the relocations of the [`LOAD_TIME_SITE_SECTIONS`] reference,
/// as (section, symbol), in section and entry order. Entries without a
/// symbol, or with one that cannot be read, are left out.
fn load_time_site_symbols(object: &[u8]) -> Result<Vec<(&'static str, &str)>, Error> {
    let bad = |e: object::read::Error| Error::MalformedElf(e.to_string());
    let header = Elf64::parse(object).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let sections = header.sections(endian, object).map_err(bad)?;
    let symbols = sections
        .symbols(endian, object, elf::SHT_SYMTAB)
        .map_err(bad)?;
    let mut found = Vec::new();
    for (index, section) in sections.enumerate() {
        let name = sections.section_name(endian, section).unwrap_or(b"");
        let Some(&site) = LOAD_TIME_SITE_SECTIONS
            .iter()
            .find(|s| s.as_bytes() == name)
        else {
            continue;
        };
        // Every relocation section applying to it, in section order.
        for rel in sections.iter() {
            if rel.sh_link(endian) as usize != symbols.section().0
                || rel.sh_info(endian) as usize != index.0
            {
                continue;
            }
            let entries: Vec<u32> = match rel.sh_type(endian) {
                elf::SHT_RELA => rel
                    .data_as_array::<elf::Rela64<Endianness>, _>(endian, object)
                    .map_or_else(
                        |_| Vec::new(),
                        |r| r.iter().map(|r| r.r_sym(endian, false)).collect(),
                    ),
                elf::SHT_REL => rel
                    .data_as_array::<elf::Rel64<Endianness>, _>(endian, object)
                    .map_or_else(
                        |_| Vec::new(),
                        |r| r.iter().map(|r| r.r_sym(endian)).collect(),
                    ),
                _ => continue,
            };
            for sym in entries.into_iter().filter(|&s| s != 0) {
                let Ok(symbol) = symbols.symbol(SymbolIndex(sym as usize)) else {
                    continue;
                };
                let name = symbols.symbol_name(endian, symbol).unwrap_or(b"");
                found.push((site, std::str::from_utf8(name).unwrap_or("")));
            }
        }
    }
    Ok(found)
}

/// Name of the non-allocated section listing the patched functions.
pub const FUNCTIONS_SECTION: &str = ".kpbuild.functions";

/// Name of the non-allocated section listing the callbacks, one line each:
/// `OBJ KIND FUNCTION SYMBOL` (the function as the patch names it, the
/// global alias the glue uses).
pub const CALLBACKS_SECTION: &str = ".kpbuild.callback_list";

/// One line of a [`CALLBACKS_SECTION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEntry {
    /// The target object (`vmlinux` or a module).
    pub objname: String,
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: String,
    /// The function the patch declared.
    pub function: String,
    /// Its global alias, which the glue registers.
    pub symbol: String,
}

/// Parses the lines of a [`CALLBACKS_SECTION`]; `None` for a malformed line.
pub fn parse_callbacks(data: &[u8]) -> Vec<Option<CallbackEntry>> {
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [objname, kind, function, symbol] => Some(CallbackEntry {
                    objname: objname.into(),
                    kind: kind.into(),
                    function: function.into(),
                    symbol: symbol.into(),
                }),
                _ => None,
            },
        )
        .collect()
}

/// Parses the lines of a [`FUNCTIONS_SECTION`].
pub fn parse_functions(data: &[u8]) -> Vec<PatchedFunction> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() != 5 {
                return None;
            }
            Some(PatchedFunction {
                objname: w[0].to_string(),
                old_name: w[1].to_string(),
                sympos: w[2].parse().ok()?,
                old_size: w[3].parse().ok()?,
                new_symbol: w[4].to_string(),
            })
        })
        .collect()
}
