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
        let dir = std::env::temp_dir().join(format!("kpbuild-files-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        let file = dir.join("out.ko");
        write_atomic(&file, b"bytes").unwrap();
        assert_eq!(read(&file).unwrap(), b"bytes");
        assert!(!file.with_extension("kpbuild-tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
