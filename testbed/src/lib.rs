//! The kernel test bed of kpbuild: everything needed to prove a livepatch in a
//! real kernel.
//!
//! - [`kernel`]: the cached test-kernel build (source, config, `O=` tree).
//! - [`guest`]: the checks a guest runs and the marker protocol on its console.
//! - [`livepatch`]: the standard load / patch / unpatch / unload sequence.
//! - [`vm`]: the initramfs and the QEMU run with a hard timeout.
//! - [`cpio`]: the initramfs archive writer.
//! - [`packages`]: the Debian packages the test bed installs when missing.
//! - [`scratch`]: the tests' scratch directories.
//! - [`oracle`]: how a test finds a kernel or tool it needs, and what it
//!   does without it (skip, or fail when `KPBUILD_REQUIRE_ORACLES=1`).

pub mod cpio;
pub mod guest;
pub mod kernel;
pub mod livepatch;
pub mod oracle;
pub mod packages;
pub mod scratch;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// A program failed.
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its output.
        output: String,
    },
    /// The resolved kernel config lacks options the test bed needs.
    #[error("the test kernel's .config lacks: {}", .0.join(", "))]
    Config(Vec<String>),
    /// A Debian package the test bed reads is not installed.
    #[error("Debian package {0} is not installed")]
    NotInstalled(String),
    /// Packages are missing and this process may not install them.
    #[error("missing Debian packages: {0}\nrun as root, or install them: sudo apt-get install {0}")]
    NotRoot(String),
}

/// The repository root (the parent of `testbed/`): the fixtures the test
/// kernels are built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testbed is a directory of the repository")
        .to_path_buf()
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs a command to completion, capturing its output for the error message.
pub fn run_logged(cmd: &mut Command) -> Result<(), Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::Spawn(format!("{cmd:?}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    Err(Error::Command {
        command: format!("{cmd:?}"),
        status: out.status.to_string(),
        output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}
