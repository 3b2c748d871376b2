//! Files for the build driver and the commands: every failure names its
//! file ([`FileError`]), and outputs are written atomically so a failure
//! never leaves a partial file behind.
//!
//! [`PathContext::at`] gives any `std::io::Result` the path it concerns, in
//! place of a hand-written `map_err` closure.

use std::path::{Path, PathBuf};

/// An I/O failure on a named file: displayed as `PATH: cause`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// Names the file an I/O result concerns.
pub trait PathContext<T> {
    /// The result, its error tagged with `path`.
    fn at(self, path: &Path) -> Result<T, FileError>;
}

impl<T> PathContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, FileError> {
        self.map_err(|source| FileError {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Reads a file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).at(path)
}

/// Reads an ELF file without its DWARF: the bytes of every `.debug_*`
/// section are left zero, everything else (headers, code, data, symbols,
/// notes) is read as it is, at its own offset. A debug vmlinux is ~340 MB,
/// nine tenths DWARF; the target checks, pre-match and the relocator read
/// only the rest, and reading it whole took ~0.6 s per reader. The zeroed
/// buffer is allocated lazily by the system, so the skipped part costs
/// nothing. A file that is not a readable ELF is read whole, so the
/// caller's own parser reports what is wrong with it.
pub fn read_elf_without_dwarf(path: &Path) -> Result<Vec<u8>, FileError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path).at(path)?;
    let Some(skipped) = dwarf_ranges(&file) else {
        return read(path);
    };
    let len = file.metadata().at(path)?.len();
    let mut data = vec![0u8; len as usize];
    let mut at = 0u64;
    for (start, end) in skipped.into_iter().chain([(len, len)]) {
        if start > at {
            file.seek(SeekFrom::Start(at)).at(path)?;
            file.read_exact(&mut data[at as usize..start as usize])
                .at(path)?;
        }
        at = at.max(end);
    }
    Ok(data)
}

/// The file ranges of the `.debug_*` sections, sorted; `None` when the file
/// is not an ELF file whose section table can be read.
fn dwarf_ranges(file: &std::fs::File) -> Option<Vec<(u64, u64)>> {
    use object::{Object as _, ObjectSection as _};
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let len = file.metadata().ok()?.len();
    let mut ranges: Vec<(u64, u64)> = elf
        .sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug_")))
        .filter_map(|s| s.file_range())
        .map(|(start, size)| (start, start.saturating_add(size).min(len)))
        .filter(|(start, end)| start < end)
        .collect();
    ranges.sort_unstable();
    Some(ranges)
}

/// Reads a text file.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).at(path)
}

/// Creates a directory and its parents.
pub fn create_dir_all(path: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(path).at(path)
}

/// Writes a file atomically (temporary file + rename), so a failure never
/// leaves a partial output.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension("kpbuild-tmp");
    std::fs::write(&tmp, data).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_without_dwarf_keeps_everything_but_dwarf() {
        use object::{Object as _, ObjectSection as _};
        // Each test has its own directory: tests run as threads of one
        // process, and another test removes its directory when it ends.
        let dir = std::env::temp_dir().join(format!("kpbuild-files-dwarf-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        let src = dir.join("u.c");
        std::fs::write(&src, "int answer(int x) { return x * 42; }\n").unwrap();
        let obj = dir.join("u.o");
        let out = std::process::Command::new("gcc")
            .args(["-g", "-c", "-o"])
            .arg(&obj)
            .arg(&src)
            .output()
            .expect("gcc runs");
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let whole = read(&obj).unwrap();
        let light = read_elf_without_dwarf(&obj).unwrap();
        assert_eq!(whole.len(), light.len());
        let file = object::File::parse(&*whole).unwrap();
        let mut dwarf = 0;
        for s in file.sections() {
            let Some((start, size)) = s.file_range() else {
                continue;
            };
            let range = start as usize..(start + size) as usize;
            if s.name().unwrap().starts_with(".debug_") {
                dwarf += 1;
                assert!(
                    light[range].iter().all(|&b| b == 0),
                    "{}",
                    s.name().unwrap()
                );
            } else {
                assert_eq!(whole[range.clone()], light[range], "{}", s.name().unwrap());
            }
        }
        assert!(dwarf > 0, "the object has DWARF");
        let not_elf = dir.join("text");
        std::fs::write(&not_elf, "not an ELF file").unwrap();
        assert_eq!(
            read_elf_without_dwarf(&not_elf).unwrap(),
            b"not an ELF file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let missing = Path::new("/nonexistent/kpbuild-files-test");
        let e = read(missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/kpbuild-files-test: "),
            "{e}"
        );
        let e = write_atomic(missing, b"x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/kpbuild-files-test.kpbuild-tmp: "),
            "{e}"
        );
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("kpbuild-files-atomic-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        let file = dir.join("out.ko");
        write_atomic(&file, b"bytes").unwrap();
        assert_eq!(read(&file).unwrap(), b"bytes");
        assert!(!file.with_extension("kpbuild-tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
