//! The units of a kernel and where each is linked, from the DWARF of its
//! debug vmlinux and debug modules: one compile unit per translation unit,
//! its source path (`DW_AT_name`) and its compiler (`DW_AT_producer`, which
//! tells C from assembly). Only the unit headers and root entries are read;
//! no line program, no type.

use super::HeaderError;
use crate::files::PathContext;
use gimli::{AttributeValue, EndianSlice, Reader as _, RunTimeEndian};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use std::path::{Path, PathBuf};

/// What a unit is compiled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnitKind {
    /// C.
    C,
    /// Assembly (`.S`).
    Asm,
}

/// One unit of the target: its source, relative to the source tree, and
/// the object it is linked into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexedUnit {
    /// The source file, relative to the source tree (`fs/proc/uptime.c`).
    pub source: PathBuf,
    /// `vmlinux` or the module's name (with `_`).
    pub target: String,
    /// C or assembly.
    pub kind: UnitKind,
}

/// Every unit of a kernel and its modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitIndex {
    /// The units, sorted by source then target.
    pub units: Vec<IndexedUnit>,
}

const INDEX_MAGIC: &str = "kpbuild-unit-index 1";

impl UnitIndex {
    /// The index as a small text file: one `KIND TARGET SOURCE` line a unit.
    pub fn to_text(&self) -> String {
        let mut out = format!("{INDEX_MAGIC}\n");
        for u in &self.units {
            let kind = match u.kind {
                UnitKind::C => "c",
                UnitKind::Asm => "asm",
            };
            out.push_str(&format!("{kind}\t{}\t{}\n", u.target, u.source.display()));
        }
        out
    }

    /// Reads [`UnitIndex::to_text`]'s format; `path` is for messages.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, HeaderError> {
        let bad = |line: &str| super::bad_index(path, line);
        let lines = super::cached_lines(path, text, INDEX_MAGIC)?;
        let mut units = Vec::new();
        for line in lines {
            let mut parts = line.splitn(3, '\t');
            let (Some(kind), Some(target), Some(source)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(line));
            };
            let kind = match kind {
                "c" => UnitKind::C,
                "asm" => UnitKind::Asm,
                _ => return Err(bad(line)),
            };
            units.push(IndexedUnit {
                source: PathBuf::from(source),
                target: target.to_string(),
                kind,
            });
        }
        Ok(UnitIndex { units })
    }

    /// Adds the units of one linked object (`vmlinux` or a module).
    pub fn add(&mut self, target: &str, cus: Vec<CompileUnit>) {
        for cu in cus {
            let Some(source) = source_path(&cu.name, cu.comp_dir.as_deref()) else {
                continue;
            };
            let kind = if cu.producer.starts_with("GNU AS") || cu.name.ends_with(".S") {
                UnitKind::Asm
            } else {
                UnitKind::C
            };
            self.units.push(IndexedUnit {
                source,
                target: target.to_string(),
                kind,
            });
        }
    }

    /// Sorts and removes duplicates (a unit linked twice into one object).
    pub fn finish(&mut self) {
        self.units
            .sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
        self.units.dedup();
    }

    /// The targets a source is linked into.
    pub fn targets_of(&self, source: &Path) -> Vec<&str> {
        let start = self.units.partition_point(|u| u.source.as_path() < source);
        self.units[start..]
            .iter()
            .take_while(|u| u.source == source)
            .map(|u| u.target.as_str())
            .collect()
    }
}

/// A unit's path relative to the source tree; `None` for what is not a
/// source file of the tree (a module's generated `.mod.c`, the compiler's
/// `<built-in>`).
pub(crate) fn source_path(name: &str, comp_dir: Option<&str>) -> Option<PathBuf> {
    let mut name = name;
    if let Some(dir) = comp_dir.filter(|d| !d.is_empty())
        && let Some(rest) = name.strip_prefix(dir)
    {
        name = rest.trim_start_matches('/');
    }
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    let ok = (name.ends_with(".c") || name.ends_with(".S"))
        && !name.ends_with(".mod.c")
        && !name.starts_with('/')
        && !name.starts_with("..");
    ok.then(|| PathBuf::from(name))
}

/// The root entry of one DWARF compile unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileUnit {
    /// `DW_AT_name`.
    pub name: String,
    /// `DW_AT_comp_dir`.
    pub comp_dir: Option<String>,
    /// `DW_AT_producer` (empty when absent).
    pub producer: String,
}

/// Relocations of one section of a relocatable object (a module), as
/// (offset, value), sorted: DWARF offsets in `.debug_info` are relocations
/// against section symbols there.
#[derive(Debug, Default)]
struct Relocs(Vec<(usize, u64)>);

impl Relocs {
    fn get(&self, offset: usize) -> Option<u64> {
        self.0
            .binary_search_by_key(&offset, |r| r.0)
            .ok()
            .map(|i| self.0[i].1)
    }
}

impl gimli::read::Relocate for &Relocs {
    fn relocate_address(&self, offset: usize, value: u64) -> gimli::Result<u64> {
        Ok(self.get(offset).unwrap_or(value))
    }

    fn relocate_offset(&self, offset: usize, value: usize) -> gimli::Result<usize> {
        match self.get(offset) {
            Some(v) => usize::try_from(v).map_err(|_| gimli::Error::OffsetOutOfBounds(v)),
            None => Ok(value),
        }
    }
}

type Reader<'a> = gimli::RelocateReader<EndianSlice<'a, RunTimeEndian>, &'a Relocs>;

/// The compile units of an ELF file's DWARF (`path` is for messages). A
/// file without `.debug_info` has none.
pub fn compile_units(path: &Path, data: &[u8]) -> Result<Vec<CompileUnit>, HeaderError> {
    let elf_error = |source| HeaderError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let file = object::File::parse(data).map_err(elf_error)?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let Some(info) = file.section_by_name(".debug_info") else {
        return Ok(Vec::new());
    };
    let info_relocs = section_relocs(&file, &info);
    let empty = Relocs::default();
    let mut sections = Vec::new();
    for id in [
        gimli::SectionId::DebugInfo,
        gimli::SectionId::DebugAbbrev,
        gimli::SectionId::DebugStr,
        gimli::SectionId::DebugLineStr,
    ] {
        let bytes = match file.section_by_name(id.name()) {
            Some(s) => s.uncompressed_data().map_err(elf_error)?,
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        sections.push((id, bytes));
    }
    let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<Reader<'_>> {
        let bytes = sections
            .iter()
            .find(|(s, _)| *s == id)
            .map_or(&[][..], |(_, b)| b.as_ref());
        let relocs = if id == gimli::SectionId::DebugInfo {
            &info_relocs
        } else {
            &empty
        };
        Ok(gimli::RelocateReader::new(
            EndianSlice::new(bytes, endian),
            relocs,
        ))
    })
    .map_err(|source| HeaderError::Dwarf {
        path: path.to_path_buf(),
        source,
    })?;
    read_roots(&dwarf).map_err(|source| HeaderError::Dwarf {
        path: path.to_path_buf(),
        source,
    })
}

/// The relocations of `section` in a relocatable file (none in vmlinux).
fn section_relocs(file: &object::File<'_>, section: &object::Section<'_, '_>) -> Relocs {
    if file.kind() != object::ObjectKind::Relocatable {
        return Relocs::default();
    }
    let mut out: Vec<(usize, u64)> = section
        .relocations()
        .filter_map(|(offset, r)| {
            let base = match r.target() {
                object::RelocationTarget::Symbol(i) => file.symbol_by_index(i).ok()?.address(),
                object::RelocationTarget::Section(_) => 0,
                _ => return None,
            };
            Some((
                usize::try_from(offset).ok()?,
                base.wrapping_add(r.addend() as u64),
            ))
        })
        .collect();
    out.sort_unstable();
    Relocs(out)
}

/// The root entry of each compile unit.
fn read_roots(dwarf: &gimli::Dwarf<Reader<'_>>) -> gimli::Result<Vec<CompileUnit>> {
    let mut out = Vec::new();
    let mut headers = dwarf.units();
    while let Some(header) = headers.next()? {
        let abbrevs = header.abbreviations(&dwarf.debug_abbrev)?;
        let mut entries = header.entries(&abbrevs);
        let Some(root) = entries.next_dfs()? else {
            continue;
        };
        if root.tag() != gimli::DW_TAG_compile_unit {
            continue;
        }
        let text = |attr: gimli::DwAt| -> gimli::Result<Option<String>> {
            let value = match root.attr_value(attr) {
                Some(v) => v,
                None => return Ok(None),
            };
            let r = match value {
                AttributeValue::String(r) => r,
                AttributeValue::DebugStrRef(o) => dwarf.debug_str.get_str(o)?,
                AttributeValue::DebugLineStrRef(o) => dwarf.debug_line_str.get_str(o)?,
                _ => return Ok(None),
            };
            Ok(Some(r.to_string_lossy()?.into_owned()))
        };
        let Some(name) = text(gimli::DW_AT_name)? else {
            continue;
        };
        out.push(CompileUnit {
            name,
            comp_dir: text(gimli::DW_AT_comp_dir)?,
            producer: text(gimli::DW_AT_producer)?.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The units of a debug vmlinux; an error naming the file when it has no
/// DWARF.
pub fn vmlinux_units(vmlinux: &Path) -> Result<Vec<CompileUnit>, HeaderError> {
    let data = crate::files::read(vmlinux)?;
    let cus = compile_units(vmlinux, &data)?;
    if cus.is_empty() {
        return Err(HeaderError::NoDwarf {
            vmlinux: vmlinux.to_path_buf(),
        });
    }
    Ok(cus)
}

/// A module's name from its file name (`nls-ascii.ko` → `nls_ascii`).
pub fn module_name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.debug"))?;
    Some(stem.replace('-', "_"))
}

/// The units of the debug modules in a Debian `-dbg` package, streamed
/// from its data archive (`dpkg-deb --fsys-tarfile`) and read in memory:
/// the 1138 debug modules of a cloud kernel hold 1.4 GB, nothing of which
/// is written to disk. Modules are parsed on a second thread while the
/// archive decompresses.
pub fn debian_module_units(
    deb: &Path,
    release: &str,
    index: &mut UnitIndex,
) -> Result<usize, HeaderError> {
    let prefix = format!("usr/lib/debug/lib/modules/{release}/");
    let (send, receive) = std::sync::mpsc::sync_channel::<(PathBuf, Vec<u8>)>(4);
    let mut cmd = std::process::Command::new("dpkg-deb");
    cmd.arg("--fsys-tarfile").arg(deb);
    let (streamed, parsed) = std::thread::scope(|scope| {
        let parser = scope.spawn(move || {
            let mut found = Vec::new();
            for (path, data) in receive {
                let Some(name) = module_name_of(&path) else {
                    continue;
                };
                found.push((name, compile_units(&path, &data)?));
            }
            Ok::<_, HeaderError>(found)
        });
        let streamed =
            crate::process::stream(&mut cmd, |out| read_archive(out, &prefix, deb, &send));
        drop(send);
        (streamed, parser.join())
    });
    let stream_error = |source| HeaderError::Package {
        deb: deb.to_path_buf(),
        source: Box::new(source),
    };
    streamed.map_err(stream_error)??;
    let modules = parsed.map_err(|_| HeaderError::Panicked)??;
    let count = modules.len();
    if count == 0 {
        return Err(HeaderError::NoDebugModules {
            deb: deb.to_path_buf(),
            dir: prefix,
        });
    }
    for (name, cus) in modules {
        index.add(&name, cus);
    }
    Ok(count)
}

/// Sends each `.ko` under `prefix` of a tar stream, with its bytes.
fn read_archive(
    input: &mut dyn std::io::Read,
    prefix: &str,
    deb: &Path,
    send: &std::sync::mpsc::SyncSender<(PathBuf, Vec<u8>)>,
) -> Result<(), HeaderError> {
    use std::io::Read as _;
    let tar_error = |source| HeaderError::Archive {
        deb: deb.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let path = entry.path().map_err(tar_error)?.into_owned();
        let text = path.to_string_lossy();
        let inside = text.strip_prefix("./").unwrap_or(&text);
        if !inside.starts_with(prefix) || !inside.ends_with(".ko") {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(tar_error)?;
        if send.send((path, data)).is_err() {
            // The parser stopped on an error; it reports it.
            break;
        }
    }
    Ok(())
}

/// The units of the uncompressed modules with DWARF under `modules`
/// (`/lib/modules/RELEASE`, or a directory of debug modules).
pub fn directory_module_units(modules: &Path, index: &mut UnitIndex) -> Result<(), HeaderError> {
    let mut stack = vec![modules.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).at(&dir)?;
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
                continue;
            }
            let Some(name) = module_name_of(&path) else {
                continue;
            };
            let data = crate::files::read(&path)?;
            index.add(&name, compile_units(&path, &data)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_relative_to_the_tree() {
        assert_eq!(
            source_path("init/main.c", Some("debian/build/x")),
            Some(PathBuf::from("init/main.c"))
        );
        assert_eq!(
            source_path("/b/k/fs/proc/uptime.c", Some("/b/k")),
            Some(PathBuf::from("fs/proc/uptime.c"))
        );
        assert_eq!(
            source_path("./arch/x86/entry/entry_64.S", None),
            Some(PathBuf::from("arch/x86/entry/entry_64.S"))
        );
        assert_eq!(source_path("fs/binfmt_misc.mod.c", None), None);
        assert_eq!(source_path("<built-in>", None), None);
        assert_eq!(source_path("/usr/include/x.c", Some("/b")), None);
    }

    #[test]
    fn index_round_trips_and_finds_targets() {
        let mut index = UnitIndex::default();
        let cu = |name: &str, producer: &str| CompileUnit {
            name: name.into(),
            comp_dir: None,
            producer: producer.into(),
        };
        index.add(
            "vmlinux",
            vec![
                cu("fs/proc/uptime.c", "GNU C11 12.2.0 -O2"),
                cu("arch/x86/entry/entry_64.S", "GNU AS 2.40"),
            ],
        );
        index.add("binfmt_misc", vec![cu("fs/binfmt_misc.c", "GNU C11")]);
        index.add("binfmt_misc", vec![cu("fs/binfmt_misc.mod.c", "GNU C11")]);
        index.finish();
        assert_eq!(index.units.len(), 3);
        assert_eq!(index.units[0].kind, UnitKind::Asm);
        let text = index.to_text();
        let back = UnitIndex::from_text(Path::new("i"), &text).unwrap();
        assert_eq!(back, index);
        assert_eq!(
            back.targets_of(Path::new("fs/binfmt_misc.c")),
            ["binfmt_misc"]
        );
        assert!(back.targets_of(Path::new("fs/x.c")).is_empty());
        let e = UnitIndex::from_text(Path::new("i"), "junk\n").unwrap_err();
        assert!(e.to_string().contains("i:"), "{e}");
    }

    /// Two units linked with `ld -r`, like a module: their names and
    /// producers come through `.debug_info`'s relocations.
    #[test]
    fn compile_units_of_a_relocatable_object() {
        let (Some(gcc), Some(ld)) = (
            testbed::oracle::tool("gcc", "gcc"),
            testbed::oracle::tool("ld", "binutils"),
        ) else {
            return;
        };
        let dir = testbed::scratch::Scratch::new("dwarf-units");
        dir.write("fs/x/one.c", "int one(void) { return 1; }\n");
        dir.write(
            "fs/x/two.S",
            ".text\n.globl two\ntwo: ret\n.section .note.GNU-stack,\"\",@progbits\n",
        );
        for (src, obj) in [("fs/x/one.c", "one.o"), ("fs/x/two.S", "two.o")] {
            let status = std::process::Command::new(&gcc)
                .args(["-g", "-gdwarf-5", "-O2", "-c", "-o", obj, src])
                .current_dir(dir.root())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let status = std::process::Command::new(&ld)
            .args(["-r", "-o", "m-x.ko", "one.o", "two.o"])
            .current_dir(dir.root())
            .status()
            .unwrap();
        assert!(status.success());
        let ko = dir.path("m-x.ko");
        let cus = compile_units(&ko, &std::fs::read(&ko).unwrap()).unwrap();
        let names: Vec<&str> = cus.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["fs/x/one.c", "fs/x/two.S"]);
        assert!(cus[0].producer.starts_with("GNU C"), "{:?}", cus[0]);
        assert!(cus[1].producer.starts_with("GNU AS"), "{:?}", cus[1]);
        let mut index = UnitIndex::default();
        directory_module_units(dir.root(), &mut index).unwrap();
        index.finish();
        assert_eq!(index.targets_of(Path::new("fs/x/one.c")), ["m_x"]);
        assert_eq!(index.units[1].kind, UnitKind::Asm);
        let e = vmlinux_units(&dir.write("plain", b"not elf")).unwrap_err();
        assert!(e.to_string().contains("plain"), "{e}");
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(
            module_name_of(Path::new("/x/nls-ascii.ko")).as_deref(),
            Some("nls_ascii")
        );
        assert_eq!(module_name_of(Path::new("/x/a.ko.xz")), None);
    }
}
