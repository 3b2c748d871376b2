//! kimage: the ground floor every other crate of kpbuild may stand on.
//!
//! - [`notes`]: what identifies a kernel image: the GNU build-id note (of a
//!   vmlinux or of `/sys/kernel/notes`) and the release in its banner. The
//!   target checks before a build and the bundles after it read them here.
//! - [`cache_root`]: where kpbuild keeps kernels: fetched distribution
//!   packages, prepared build directories, test kernels.
//!
//! No subprocesses; the only file system access is reading environment
//! variables for [`cache_root`].

pub mod notes;

use std::path::PathBuf;

/// A kernel image that does not say what it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable GNU build-id note, banner or ELF structure.
    #[error("{0}")]
    Notes(String),
}

/// The cache root: `$KPBUILD_CACHE`, else `$XDG_CACHE_HOME/kpbuild`, else
/// `~/.cache/kpbuild`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KPBUILD_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("kpbuild");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/kpbuild")
}

/// Lowercase hex.
pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
