//! Where a linked kernel (a vmlinux without relocations) calls or refers to
//! a function: its code decoded with `iced-x86`, its data read word by
//! word, and each calling function's compile unit from the DWARF address
//! ranges (`.debug_aranges`).
//!
//! The build driver uses it for a changed global function without an
//! ftrace entry when the target has no built tree whose objects could say
//! who references it (a `--debian` or tree-less target): the units of the
//! direct callers are compiled and diffed, where relocations give the exact
//! answer; every other way to reach the old code (its address in data or
//! in an instruction, a call patched in at boot from
//! `.altinstr_replacement`) is reported so that the change is refused.
//!
//! Calls that the kernel writes at run time from data (static calls,
//! paravirt calls) have the function's address in data, so they are seen
//! as data references. Relative 32-bit references (ORC, `kallsyms`,
//! initcalls, exception tables) are not: they locate code, they never call
//! it after boot.

use gimli::{EndianSlice, RunTimeEndian};
use iced_x86::{Decoder, DecoderOptions, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Why a linked kernel cannot be searched.
#[derive(Debug, thiserror::Error)]
pub enum CallSiteError {
    /// Not an ELF file `object` reads.
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        source: object::Error,
    },
    /// Its DWARF address ranges cannot be read.
    #[error("{}: DWARF address ranges: {source}", path.display())]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        source: gimli::Error,
    },
    /// It has no `.debug_aranges`: callers cannot be placed in their units.
    #[error("{}: no .debug_aranges: the callers' compile units cannot be found", .0.display())]
    NoAranges(PathBuf),
    /// The function is not one global function of its symbol table.
    #[error("{}: no global function named {name}", path.display())]
    NoFunction {
        /// The file.
        path: PathBuf,
        /// The function.
        name: String,
    },
}

/// A direct call or jump to the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The calling function (`.cold` parts and all, as the symbol table
    /// names it).
    pub caller: String,
    /// The section of the call.
    pub section: String,
    /// The call instruction's address.
    pub address: u64,
    /// The caller's unit, relative to the source tree (from DWARF).
    pub unit: Option<PathBuf>,
}

/// Everything in a linked kernel that leads to one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSites {
    /// The function's address.
    pub address: u64,
    /// Direct calls and jumps from functions.
    pub calls: Vec<Call>,
    /// Every other reference, described (`its address in .data at
    /// 0xffff… (in some_table)`, `an instruction of foo at 0xffff… uses its
    /// address`, `a call in .altinstr_replacement at …`).
    pub references: Vec<String>,
}

/// A function symbol: start, size, name, section index.
#[derive(Debug, Clone)]
struct Func<'d> {
    start: u64,
    size: u64,
    name: &'d str,
}

/// Searches `data` (the file at `path`) for everything that reaches the
/// global function `name`.
pub fn search(path: &Path, data: &[u8], name: &str) -> Result<CallSites, CallSiteError> {
    let elf = |source| CallSiteError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let file = object::File::parse(data).map_err(elf)?;
    let target = file
        .symbols()
        .find(|s| s.is_global() && s.kind() == object::SymbolKind::Text && s.name() == Ok(name))
        .ok_or_else(|| CallSiteError::NoFunction {
            path: path.to_path_buf(),
            name: name.to_string(),
        })?
        .address();
    let mut out = CallSites {
        address: target,
        ..CallSites::default()
    };
    let mut functions: Vec<Func<'_>> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            Some(Func {
                start: s.address(),
                size: s.size(),
                name: s.name().ok()?,
            })
        })
        .collect();
    functions.sort_by_key(|f| (f.start, std::cmp::Reverse(f.size)));
    functions.dedup_by_key(|f| f.start);
    for section in file.sections() {
        let sname = section.name().unwrap_or("").to_string();
        if section.kind() == SectionKind::UninitializedData || !allocated(&section) {
            continue;
        }
        let bytes = section.data().map_err(elf)?;
        if executable(&section) {
            let (calls, refs) = scan_code(&section, &sname, bytes, &functions, target);
            out.calls.extend(calls);
            out.references.extend(refs);
        } else if sname != "_kprobe_blacklist" {
            // kprobes' blacklist records addresses so as never to probe
            // them: nothing calls through it.
            out.references.extend(scan_data(
                &section, &sname, bytes, &functions, &file, target,
            ));
        }
    }
    out.calls.sort_by_key(|c| c.address);
    place_in_units(path, &file, &mut out.calls)?;
    Ok(out)
}

fn has_flag(section: &object::Section<'_, '_>, flag: object::elf::SectionFlags) -> bool {
    matches!(section.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & flag.0 != 0)
}

fn allocated(section: &object::Section<'_, '_>) -> bool {
    has_flag(section, object::elf::SHF_ALLOC)
}

fn executable(section: &object::Section<'_, '_>) -> bool {
    has_flag(section, object::elf::SHF_EXECINSTR)
}

/// The functions of `functions` (sorted) within `[start, end)`.
fn within<'a, 'd>(functions: &'a [Func<'d>], start: u64, end: u64) -> &'a [Func<'d>] {
    let a = functions.partition_point(|f| f.start < start);
    let b = functions.partition_point(|f| f.start < end);
    &functions[a..b]
}

/// The function covering `address`.
fn function_at<'d>(functions: &[Func<'d>], address: u64) -> Option<&'d str> {
    let i = functions
        .partition_point(|f| f.start <= address)
        .checked_sub(1)?;
    let f = &functions[i];
    (address < f.start + f.size).then_some(f.name)
}

/// The direct calls to `target` in a code section, and its other uses
/// there. Each function is decoded on its own (so data between functions
/// cannot throw the decoder off for the next), and so is each stretch
/// between them; a call outside any function (assembly without function
/// symbols, `.altinstr_replacement`, which the kernel copies into functions
/// at boot) is a reference, not a call that can be redirected.
fn scan_code(
    section: &object::Section<'_, '_>,
    sname: &str,
    bytes: &[u8],
    functions: &[Func<'_>],
    target: u64,
) -> (Vec<Call>, Vec<String>) {
    let base = section.address();
    let end = base + bytes.len() as u64;
    let funcs = within(functions, base, end);
    // Each function, and each stretch between functions (assembly code
    // without function symbols, padding) on its own.
    let mut ranges: Vec<(u64, u64, Option<&str>)> = Vec::new();
    let mut at = base;
    for f in funcs {
        if f.start > at {
            ranges.push((at, f.start, None));
        }
        let stop = (f.start + f.size).min(end);
        if stop > at.max(f.start) {
            ranges.push((at.max(f.start), stop, Some(f.name)));
        }
        at = at.max(stop);
    }
    if end > at {
        ranges.push((at, end, None));
    }
    let found: Vec<(Vec<Call>, Vec<String>)> = ranges
        .par_iter()
        .map(|&(start, stop, name)| {
            let code = &bytes[(start - base) as usize..(stop - base) as usize];
            scan_range(code, start, sname, name, target)
        })
        .collect();
    let mut calls = Vec::new();
    let mut refs = Vec::new();
    for (c, r) in found {
        calls.extend(c);
        refs.extend(r);
    }
    (calls, refs)
}

fn scan_range(
    code: &[u8],
    ip: u64,
    sname: &str,
    function: Option<&str>,
    target: u64,
) -> (Vec<Call>, Vec<String>) {
    let mut calls = Vec::new();
    let mut refs = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    for insn in decoder.iter() {
        // call, jmp and jcc with a displacement (and loop forms, which
        // never reach another function).
        let branch = insn.op_count() > 0 && insn.op0_kind() == OpKind::NearBranch64;
        if branch && insn.near_branch_target() == target {
            match function {
                Some(caller) => calls.push(Call {
                    caller: caller.to_string(),
                    section: sname.to_string(),
                    address: insn.ip(),
                    unit: None,
                }),
                None => refs.push(format!(
                    "a call in {sname} at {:#x}, outside any function (assembly, or code the kernel copies into a function at boot)",
                    insn.ip()
                )),
            }
            continue;
        }
        let rip_relative = insn.is_ip_rel_memory_operand()
            || (insn.memory_base() == Register::RIP && insn.op_count() > 0);
        let uses = (rip_relative && insn.ip_rel_memory_address() == target)
            || (0..insn.op_count()).any(|i| immediate(&insn, i) == Some(target));
        if uses {
            refs.push(format!(
                "an instruction of {} at {:#x} uses its address",
                function.unwrap_or(sname),
                insn.ip()
            ));
        }
    }
    (calls, refs)
}

/// An immediate operand as a 64-bit address (a 32-bit one as a 32-bit
/// register holds it: zero-extended).
fn immediate(insn: &iced_x86::Instruction, operand: u32) -> Option<u64> {
    match insn.op_kind(operand) {
        OpKind::Immediate32to64 => Some(insn.immediate32to64() as u64),
        OpKind::Immediate32 => Some(u64::from(insn.immediate32())),
        OpKind::Immediate64 => Some(insn.immediate64()),
        _ => None,
    }
}

/// Every aligned 64-bit word of a data section that holds `target`.
fn scan_data(
    section: &object::Section<'_, '_>,
    sname: &str,
    bytes: &[u8],
    functions: &[Func<'_>],
    file: &object::File<'_>,
    target: u64,
) -> Vec<String> {
    let base = section.address();
    let skip = (8 - (base % 8) as usize) % 8;
    let little = file.is_little_endian();
    bytes
        .get(skip..)
        .unwrap_or(&[])
        .chunks_exact(8)
        .enumerate()
        .filter_map(|(i, w)| {
            let w: [u8; 8] = w.try_into().expect("8 bytes");
            let value = if little {
                u64::from_le_bytes(w)
            } else {
                u64::from_be_bytes(w)
            };
            (value == target).then(|| {
                let at = base + (skip + i * 8) as u64;
                let holder = data_symbol(file, at)
                    .or_else(|| function_at(functions, at).map(str::to_string))
                    .map(|n| format!(" (in {n})"))
                    .unwrap_or_default();
                format!("its address in {sname} at {at:#x}{holder}")
            })
        })
        .collect()
}

/// The data symbol covering `address`, for messages.
fn data_symbol(file: &object::File<'_>, address: u64) -> Option<String> {
    file.symbols()
        .filter(|s| s.kind() == object::SymbolKind::Data)
        .find(|s| s.address() <= address && address < s.address() + s.size().max(1))
        .and_then(|s| s.name().ok().map(str::to_string))
}

/// Fills each call's unit from `.debug_aranges`.
fn place_in_units(
    path: &Path,
    file: &object::File<'_>,
    calls: &mut [Call],
) -> Result<(), CallSiteError> {
    if calls.is_empty() {
        return Ok(());
    }
    let dwarf_error = |source| CallSiteError::Dwarf {
        path: path.to_path_buf(),
        source,
    };
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |name: &str| -> Result<std::borrow::Cow<'_, [u8]>, CallSiteError> {
        match file.section_by_name(name) {
            Some(s) => s.uncompressed_data().map_err(|source| CallSiteError::Elf {
                path: path.to_path_buf(),
                source,
            }),
            None => Ok(std::borrow::Cow::Borrowed(&[][..])),
        }
    };
    let aranges_bytes = load(".debug_aranges")?;
    if aranges_bytes.is_empty() {
        return Err(CallSiteError::NoAranges(path.to_path_buf()));
    }
    let (info, abbrev, strs, line_strs) = (
        load(".debug_info")?,
        load(".debug_abbrev")?,
        load(".debug_str")?,
        load(".debug_line_str")?,
    );
    let aranges = gimli::DebugAranges::new(&aranges_bytes, endian);
    let mut spans: Vec<(u64, u64, gimli::DebugInfoOffset)> = Vec::new();
    let mut headers = aranges.headers();
    while let Some(h) = headers.next().map_err(dwarf_error)? {
        let mut entries = h.entries();
        while let Some(e) = entries.next().map_err(dwarf_error)? {
            let r = e.range();
            spans.push((r.begin, r.end, h.debug_info_offset()));
        }
    }
    spans.sort_unstable_by_key(|s| s.0);
    let info = gimli::DebugInfo::new(&info, endian);
    let abbrev = gimli::DebugAbbrev::new(&abbrev, endian);
    let strs = gimli::DebugStr::new(&strs, endian);
    let line_strs = gimli::DebugLineStr::new(&line_strs, endian);
    for call in calls.iter_mut() {
        let i = spans.partition_point(|s| s.0 <= call.address);
        let Some(&(_, end, offset)) = i.checked_sub(1).map(|i| &spans[i]) else {
            continue;
        };
        if call.address >= end {
            continue;
        }
        let header = info.header_from_offset(offset).map_err(dwarf_error)?;
        call.unit = unit_source(&header, &abbrev, &strs, &line_strs).map_err(dwarf_error)?;
    }
    Ok(())
}

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// A compile unit's source path relative to the tree.
fn unit_source(
    header: &gimli::UnitHeader<Slice<'_>>,
    abbrev: &gimli::DebugAbbrev<Slice<'_>>,
    strs: &gimli::DebugStr<Slice<'_>>,
    line_strs: &gimli::DebugLineStr<Slice<'_>>,
) -> gimli::Result<Option<PathBuf>> {
    let abbrevs = header.abbreviations(abbrev)?;
    let mut entries = header.entries(&abbrevs);
    let Some(root) = entries.next_dfs()? else {
        return Ok(None);
    };
    let text = |attr| -> gimli::Result<Option<String>> {
        Ok(match root.attr_value(attr) {
            Some(gimli::AttributeValue::String(r)) => Some(r.to_string_lossy().into_owned()),
            Some(gimli::AttributeValue::DebugStrRef(o)) => {
                Some(strs.get_str(o)?.to_string_lossy().into_owned())
            }
            Some(gimli::AttributeValue::DebugLineStrRef(o)) => {
                Some(line_strs.get_str(o)?.to_string_lossy().into_owned())
            }
            _ => None,
        })
    };
    let Some(name) = text(gimli::DW_AT_name)? else {
        return Ok(None);
    };
    Ok(crate::headers::dwarf::source_path(
        &name,
        text(gimli::DW_AT_comp_dir)?.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links `units` (name, C text) into a static executable with DWARF
    /// address ranges, in a directory of the test's own.
    fn link(test: &str, units: &[(&str, &str)]) -> (PathBuf, Vec<u8>) {
        let dir =
            std::env::temp_dir().join(format!("kpbuild-callsites-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        let mut sources = Vec::new();
        for (name, text) in units {
            std::fs::write(dir.join(name), text).unwrap();
            sources.push(name.to_string());
        }
        let out = std::process::Command::new("gcc")
            .current_dir(&dir)
            .args([
                "-O2",
                "-g",
                "-gdwarf-5",
                "-fno-pie",
                "-no-pie",
                "-static",
                "-nostdlib",
                "-fno-asynchronous-unwind-tables",
                "-Wl,-e,start",
                "-o",
                "linked",
            ])
            .args(&sources)
            .output()
            .expect("gcc runs");
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join("linked");
        let data = std::fs::read(&path).unwrap();
        (path, data)
    }

    const TARGET: &str = "__attribute__((noinline)) int target(int x) { return x * 3; }\n";

    #[test]
    fn direct_calls_are_found_with_their_units() {
        let (path, data) = link(
            "calls",
            &[
                ("target.c", TARGET),
                (
                    "lib/user.c",
                    "int target(int);\n\
                     __attribute__((noinline)) int twice(int x) { return target(x) + target(x + 1); }\n\
                     __attribute__((noinline)) int tail(int x) { return target(x + 2); }\n",
                ),
                (
                    "start.c",
                    "int twice(int); int tail(int);\n\
                     volatile int sink;\n\
                     void start(void) { sink = twice(sink) + tail(sink); for (;;) ; }\n",
                ),
            ],
        );
        let sites = search(&path, &data, "target").unwrap();
        assert!(sites.references.is_empty(), "{:?}", sites.references);
        let mut callers: Vec<(String, Option<PathBuf>)> = sites
            .calls
            .iter()
            .map(|c| (c.caller.clone(), c.unit.clone()))
            .collect();
        callers.dedup();
        assert_eq!(
            callers,
            vec![
                ("twice".to_string(), Some(PathBuf::from("lib/user.c"))),
                ("tail".to_string(), Some(PathBuf::from("lib/user.c"))),
            ]
        );
        assert!(sites.calls.iter().all(|c| c.section == ".text"));
    }

    #[test]
    fn an_address_in_data_or_code_is_a_reference() {
        let (path, data) = link(
            "refs",
            &[
                ("target.c", TARGET),
                (
                    "table.c",
                    "int target(int);\n\
                     int (*const table[])(int) = { target };\n\
                     __attribute__((noinline)) void *take(void) { return (void *)target; }\n",
                ),
                (
                    "start.c",
                    "void *take(void); extern int (*const table[])(int);\n\
                     volatile long sink;\n\
                     void start(void) { sink = (long)take() + (long)table[0]; for (;;) ; }\n",
                ),
            ],
        );
        let sites = search(&path, &data, "target").unwrap();
        assert!(sites.calls.is_empty(), "{:?}", sites.calls);
        assert!(
            sites.references.iter().any(|r| r.contains("in table")),
            "{:?}",
            sites.references
        );
        assert!(
            sites
                .references
                .iter()
                .any(|r| r.contains("instruction of take")),
            "{:?}",
            sites.references
        );
    }

    #[test]
    fn a_missing_function_is_named() {
        let (path, data) = link(
            "missing",
            &[("start.c", "void start(void) { for (;;) ; }\n")],
        );
        let e = search(&path, &data, "target").unwrap_err();
        assert!(
            e.to_string().contains("no global function named target"),
            "{e}"
        );
    }
}
