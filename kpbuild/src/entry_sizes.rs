//! The target's own special-section entry sizes, from the DWARF of its
//! debug vmlinux (the tree's vmlinux, or Debian's `-dbg` one): the byte
//! size of `struct alt_instr`, `struct jump_entry`, `struct bug_entry`…,
//! which changes with the kernel version and its config (`bug_entry` without
//! `CONFIG_DEBUG_BUGVERBOSE`, `alt_instr` across releases). elfdiff's table
//! holds the 6.12 sizes; a vmlinux without DWARF keeps those, and the build
//! report says so. Reading the DWARF of a 340 MB vmlinux takes seconds, so
//! the result is cached per vmlinux (path, size and modification time) under
//! `CACHE/entry-sizes/`.

use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each special section whose entry is one C struct, with the struct.
pub const STRUCTS: &[(&str, &str)] = &[
    ("alt_instr", ".altinstructions"),
    ("jump_entry", "__jump_table"),
    ("paravirt_patch_site", ".parainstructions"),
    ("exception_table_entry", "__ex_table"),
    ("bug_entry", "__bug_table"),
    ("static_call_site", ".static_call_sites"),
    ("orc_entry", elfdiff::special::ORC_UNWIND),
];

/// Units that define the structs, read first (any unit using one holds its
/// definition; these make the common case a short read).
const LIKELY_UNITS: &[&str] = &[
    "arch/x86/kernel/alternative.c",
    "kernel/jump_label.c",
    "lib/bug.c",
    "arch/x86/mm/extable.c",
    "kernel/static_call_inline.c",
    "arch/x86/kernel/unwind_orc.c",
    "arch/x86/kernel/paravirt.c",
];

/// Where the sizes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeSource {
    /// The target's DWARF.
    Dwarf,
    /// elfdiff's built-in 6.12 table: the vmlinux has no DWARF.
    Table,
}

/// The entry sizes a build uses, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntrySizes {
    /// Where they came from.
    pub source: SizeSource,
    /// Entry size by section name, of the structs the DWARF defines (empty
    /// for [`SizeSource::Table`]).
    pub sizes: BTreeMap<String, usize>,
}

impl EntrySizes {
    /// The elfdiff options that apply these sizes.
    pub fn options(&self) -> elfdiff::Options {
        elfdiff::Options {
            entry_sizes: self.sizes.clone().into_iter().collect(),
            ..elfdiff::Options::default()
        }
    }
}

/// Errors reading the sizes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntrySizeError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The vmlinux is not a readable ELF file.
    #[error("{}: {why}", path.display())]
    Elf {
        /// The vmlinux.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Its DWARF cannot be read.
    #[error("{}: DWARF: {source}", path.display())]
    Dwarf {
        /// The vmlinux.
        path: PathBuf,
        /// The cause.
        source: gimli::Error,
    },
}

/// The entry sizes of the kernel whose debug vmlinux is `vmlinux`, from the
/// cache under `cache` when this vmlinux was read before.
pub fn of_vmlinux(vmlinux: &Path, cache: &Path) -> Result<EntrySizes, EntrySizeError> {
    let entry = cache.join("entry-sizes").join(cache_key(vmlinux)?);
    if let Ok(text) = std::fs::read_to_string(&entry)
        && let Some(sizes) = parse_cached(&text)
    {
        return Ok(sizes);
    }
    let data = crate::files::read(vmlinux)?;
    let sizes = from_elf(vmlinux, &data)?;
    // A cache that cannot be written costs the next build a read, no more.
    let _ = write_cached(&entry, &sizes);
    Ok(sizes)
}

/// The cache file name of a vmlinux: a hash of its path, size and
/// modification time (a rebuilt or replaced vmlinux gets a new entry).
fn cache_key(vmlinux: &Path) -> Result<String, EntrySizeError> {
    use crate::files::PathContext;
    let meta = std::fs::metadata(vmlinux).at(vmlinux)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let path = std::fs::canonicalize(vmlinux).unwrap_or_else(|_| vmlinux.to_path_buf());
    let mut h = Sha256::new();
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.to_le_bytes());
    Ok(kimage::hex(&h.finalize()[..16]))
}

/// The cached form: `source` on the first line, then `SECTION SIZE` lines.
fn parse_cached(text: &str) -> Option<EntrySizes> {
    let mut lines = text.lines();
    let source = match lines.next()? {
        "dwarf" => SizeSource::Dwarf,
        "table" => SizeSource::Table,
        _ => return None,
    };
    let mut sizes = BTreeMap::new();
    for line in lines {
        let (name, size) = line.split_once(' ')?;
        sizes.insert(name.to_string(), size.parse().ok().filter(|&s| s > 0)?);
    }
    Some(EntrySizes { source, sizes })
}

/// Writes a cache entry atomically (a reader sees all of it or nothing).
fn write_cached(entry: &Path, sizes: &EntrySizes) -> std::io::Result<()> {
    let mut text = match sizes.source {
        SizeSource::Dwarf => "dwarf\n".to_string(),
        SizeSource::Table => "table\n".to_string(),
    };
    for (name, size) in &sizes.sizes {
        text.push_str(&format!("{name} {size}\n"));
    }
    std::fs::create_dir_all(entry.parent().expect("entry in a directory"))?;
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, entry)
}

/// The sizes a vmlinux's DWARF gives, or [`SizeSource::Table`] without DWARF.
pub fn from_elf(path: &Path, data: &[u8]) -> Result<EntrySizes, EntrySizeError> {
    let file = object::File::parse(data).map_err(|e| EntrySizeError::Elf {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    if file.section_by_name(".debug_info").is_none() {
        return Ok(EntrySizes {
            source: SizeSource::Table,
            sizes: BTreeMap::new(),
        });
    }
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<EndianSlice<'_, RunTimeEndian>> {
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(bytes, endian))
    })
    .map_err(|source| EntrySizeError::Dwarf {
        path: path.to_path_buf(),
        source,
    })?;
    let sizes = struct_sizes(&dwarf).map_err(|source| EntrySizeError::Dwarf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(EntrySizes {
        source: SizeSource::Dwarf,
        sizes,
    })
}

type Dwarf<'a> = gimli::Dwarf<EndianSlice<'a, RunTimeEndian>>;

/// The byte size of each struct of [`STRUCTS`] that some unit defines, by
/// section name: the likely units first, then every unit until all are found.
fn struct_sizes(dwarf: &Dwarf<'_>) -> gimli::Result<BTreeMap<String, usize>> {
    let mut found = BTreeMap::new();
    for pass in [true, false] {
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            if found.len() == STRUCTS.len() {
                return Ok(found);
            }
            let unit = dwarf.unit(header)?;
            let likely = unit
                .name
                .and_then(|n| std::str::from_utf8(n.slice()).ok())
                .is_some_and(|n| LIKELY_UNITS.iter().any(|u| n.ends_with(u)));
            if likely == pass {
                structs_of_unit(dwarf, &unit, &mut found)?;
            }
        }
    }
    Ok(found)
}

/// Adds the sizes of the [`STRUCTS`] that one unit defines.
fn structs_of_unit(
    dwarf: &Dwarf<'_>,
    unit: &gimli::Unit<EndianSlice<'_, RunTimeEndian>>,
    found: &mut BTreeMap<String, usize>,
) -> gimli::Result<()> {
    let mut cursor = unit.entries();
    while let Some(die) = cursor.next_dfs()? {
        if die.tag() != gimli::DW_TAG_structure_type || die.attr(gimli::DW_AT_declaration).is_some()
        {
            continue;
        }
        let Some(name) = die.attr_value(gimli::DW_AT_name) else {
            continue;
        };
        let name = dwarf.attr_string(unit, name)?;
        let Some(&(_, section)) = STRUCTS.iter().find(|(s, _)| s.as_bytes() == name.slice()) else {
            continue;
        };
        if found.contains_key(section) {
            continue;
        }
        if let Some(size) = die
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value())
            .filter(|&s| s > 0)
        {
            found.insert(section.to_string(), size as usize);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links `source` into an executable (DWARF with `-g`), as a vmlinux is.
    fn link(dir: &testbed::scratch::Scratch, source: &str, debug: bool) -> Option<Vec<u8>> {
        let gcc = testbed::oracle::tool("gcc", "gcc")?;
        let c = dir.write("k.c", source);
        let exe = dir.path(if debug { "k-debug" } else { "k" });
        let out = std::process::Command::new(gcc)
            .args(["-O0", "-nostdlib", "-static", "-Wl,-e,0"])
            .args(debug.then_some("-g"))
            .arg(&c)
            .arg("-o")
            .arg(&exe)
            .output()
            .expect("gcc runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(std::fs::read(&exe).unwrap())
    }

    const STRUCTS_C: &str = "
        struct jump_entry { int code; int target; long key; };
        struct bug_entry { int addr; int file; unsigned short line; unsigned short flags; };
        struct alt_instr { int instr; int repl; unsigned int ft; unsigned char a, b; }
            __attribute__((packed));
        struct exception_table_entry;
        struct exception_table_entry *ex;
        struct jump_entry je;
        struct bug_entry be;
        struct alt_instr ai;
        struct unrelated { char x[40]; } u;
    ";

    #[test]
    fn sizes_come_from_the_structs_the_dwarf_defines() {
        let dir = testbed::scratch::Scratch::new("entry-sizes-dwarf");
        let Some(data) = link(&dir, STRUCTS_C, true) else {
            return;
        };
        let sizes = from_elf(Path::new("k-debug"), &data).unwrap();
        assert_eq!(sizes.source, SizeSource::Dwarf);
        let want: BTreeMap<String, usize> = [
            (".altinstructions", 14),
            ("__bug_table", 12),
            ("__jump_table", 16),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        // A declaration alone (exception_table_entry) gives no size.
        assert_eq!(sizes.sizes, want);
        assert_eq!(sizes.options().entry_sizes.get("__jump_table"), Some(&16));
    }

    #[test]
    fn no_dwarf_keeps_the_table_and_caches_that() {
        let dir = testbed::scratch::Scratch::new("entry-sizes-none");
        let Some(data) = link(&dir, STRUCTS_C, false) else {
            return;
        };
        let vmlinux = dir.write("vmlinux", &data);
        let cache = dir.path("cache");
        let sizes = of_vmlinux(&vmlinux, &cache).unwrap();
        assert_eq!(sizes.source, SizeSource::Table);
        assert!(sizes.sizes.is_empty());
        let entries: Vec<_> = std::fs::read_dir(cache.join("entry-sizes"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert_eq!(entries, ["table\n"]);
        // A second build reads the cache entry, not the file: a cached
        // answer is used even when it says more than the file would.
        let key = cache_key(&vmlinux).unwrap();
        std::fs::write(
            cache.join("entry-sizes").join(&key),
            "dwarf\n__bug_table 12\n",
        )
        .unwrap();
        assert_eq!(
            of_vmlinux(&vmlinux, &cache).unwrap().source,
            SizeSource::Dwarf
        );
        assert!(matches!(
            of_vmlinux(&dir.path("missing"), &cache),
            Err(EntrySizeError::File(_))
        ));
    }

    #[test]
    fn cached_form_round_trips_and_rejects_damage() {
        let sizes = EntrySizes {
            source: SizeSource::Dwarf,
            sizes: [("__bug_table".to_string(), 12), ("__jump_table".into(), 16)]
                .into_iter()
                .collect(),
        };
        let dir = testbed::scratch::Scratch::new("entry-sizes-cache");
        let entry = dir.path("entry-sizes/k");
        write_cached(&entry, &sizes).unwrap();
        let text = std::fs::read_to_string(&entry).unwrap();
        assert_eq!(text, "dwarf\n__bug_table 12\n__jump_table 16\n");
        assert_eq!(parse_cached(&text), Some(sizes));
        assert_eq!(parse_cached("table\n").unwrap().source, SizeSource::Table);
        for bad in [
            "",
            "dwarfish\n",
            "dwarf\n__bug_table\n",
            "dwarf\n__bug_table 0\n",
        ] {
            assert_eq!(parse_cached(bad), None, "{bad:?}");
        }
    }
}
