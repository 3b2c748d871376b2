//! Scratch directories for tests: one per test, unique per process, removed
//! when dropped (also when the test fails).

use std::path::{Path, PathBuf};

/// A scratch directory, removed with everything in it when dropped.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new empty directory in the system's temporary directory, its name
    /// starting with `kpbuild-NAME-`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kpbuild-{name}-"))
            .tempdir()
            .expect("a scratch directory");
        Scratch(dir)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        self.0.path()
    }

    /// `name` in the directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// A new empty directory `name` in the directory.
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).expect("a scratch subdirectory");
        d
    }

    /// Writes `data` to `name` (its parent directories created); returns its path.
    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().expect("a file in the directory"))
            .expect("a scratch subdirectory");
        std::fs::write(&p, data).expect("a scratch file");
        p
    }
}
