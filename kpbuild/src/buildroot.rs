//! A cached build root of a Debian release: a minimal system of that
//! release (made once with `mmdebstrap`) holding its compiler, make and the
//! kernel's build dependencies, so that a kernel of another Debian release
//! than the host's is compiled by its own compiler, plugins and headers.
//!
//! It lives in `CACHE/buildroot/SUITE`; one process makes it at a time
//! (`CACHE/buildroot/SUITE.lock`), and the marker `.kpbuild-buildroot`,
//! written last, names what it holds: an unmarked or differently marked
//! directory is removed and made again. Commands run in it through
//! [`Toolchain`](crate::toolchain::Toolchain).

use crate::files::{FileError, PathContext};
use crate::process::ProcessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages a build root holds besides the `buildd` variant's
/// essentials: the compiler, make and what `make prepare` and a module
/// build run (`dwarves`, so `olddefconfig` sees the same pahole version).
pub const PACKAGES: &[&str] = &[
    "gcc-14",
    "make",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "python3",
    "dwarves",
];

/// The marker of a finished build root (its content: [`marker_text`]).
const MARKER: &str = ".kpbuild-buildroot";

/// Where Debian's archive is when the host's apt sources do not say.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The archive keyring the build root's sources are checked against.
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A build root that cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildRootError {
    /// Not a Debian suite name.
    #[error("{0:?}: not a Debian suite name (such as trixie)")]
    BadSuite(String),
    /// Making a build root needs root.
    #[error(
        "the {suite} build root {} does not exist yet, and making it (mmdebstrap) needs root: run kpbuild once as root",
        dir.display()
    )]
    NotRoot {
        /// The suite.
        suite: String,
        /// Where it would be.
        dir: PathBuf,
    },
    /// mmdebstrap is not installed.
    #[error(
        "cannot run mmdebstrap to make the {suite} build root ({source}): apt-get install mmdebstrap"
    )]
    NoMmdebstrap {
        /// The suite.
        suite: String,
        /// The cause.
        source: std::io::Error,
    },
    /// mmdebstrap failed.
    #[error("making the {suite} build root {} failed: {source}", dir.display())]
    Mmdebstrap {
        /// The suite.
        suite: String,
        /// Where.
        dir: PathBuf,
        /// The failed mmdebstrap.
        source: Box<ProcessError>,
    },
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A finished build root of one Debian suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRoot {
    suite: String,
    dir: PathBuf,
}

impl BuildRoot {
    /// The build root of `suite` (`trixie`), made first if it is not there:
    /// this takes about half a minute and half a gigabyte, once per suite.
    pub fn for_suite(suite: &str, progress: &dyn Fn(&str)) -> Result<Self, BuildRootError> {
        Self::make_in(&kimage::cache_root().join("buildroot"), suite, progress)
    }

    /// The build root of `suite` under `base`, made first if needed.
    pub fn make_in(
        base: &Path,
        suite: &str,
        progress: &dyn Fn(&str),
    ) -> Result<Self, BuildRootError> {
        check_suite(suite)?;
        let root = BuildRoot {
            suite: suite.to_string(),
            dir: base.join(suite),
        };
        if root.is_finished() {
            return Ok(root);
        }
        crate::files::create_dir_all(base)?;
        let lock_path = base.join(format!("{suite}.lock"));
        let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
        lock.lock().at(&lock_path)?;
        // Another process may have made it while this one waited.
        if !root.is_finished() {
            root.make(progress)?;
        }
        Ok(root)
    }

    /// The finished build root of `suite` under `base`, if there is one.
    pub fn existing_in(base: &Path, suite: &str) -> Option<Self> {
        let root = BuildRoot {
            suite: suite.to_string(),
            dir: base.join(suite),
        };
        (check_suite(suite).is_ok() && root.is_finished()).then_some(root)
    }

    /// The suite (`trixie`).
    pub fn suite(&self) -> &str {
        &self.suite
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn is_finished(&self) -> bool {
        std::fs::read_to_string(self.dir.join(MARKER)).is_ok_and(|m| m == marker_text(&self.suite))
    }

    /// Removes what is there and runs mmdebstrap; the marker comes last.
    fn make(&self, progress: &dyn Fn(&str)) -> Result<(), BuildRootError> {
        let is_root = crate::process::run(Command::new("id").arg("-u"))
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !is_root {
            return Err(BuildRootError::NotRoot {
                suite: self.suite.clone(),
                dir: self.dir.clone(),
            });
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).at(&self.dir)?;
        }
        let mirror = host_mirror();
        progress(&format!(
            "making the {} build root {} with mmdebstrap from {mirror} (once per Debian release; about 30 s and 500 MB)",
            self.suite,
            self.dir.display()
        ));
        let mut cmd = mmdebstrap_command(&self.suite, &self.dir, &mirror);
        crate::process::run(&mut cmd).map_err(|e| match e {
            ProcessError::Spawn { source, .. } => BuildRootError::NoMmdebstrap {
                suite: self.suite.clone(),
                source,
            },
            e => BuildRootError::Mmdebstrap {
                suite: self.suite.clone(),
                dir: self.dir.clone(),
                source: Box::new(e),
            },
        })?;
        let marker = self.dir.join(MARKER);
        crate::files::write_atomic(&marker, marker_text(&self.suite).as_bytes())?;
        Ok(())
    }
}

/// What the marker of a suite's build root says: a root made with another
/// package list is made again.
fn marker_text(suite: &str) -> String {
    format!("{suite}\n{}\n", PACKAGES.join(","))
}

/// A suite name is a plain lowercase word (it becomes a directory name).
fn check_suite(suite: &str) -> Result<(), BuildRootError> {
    if suite.is_empty() || !suite.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(BuildRootError::BadSuite(suite.to_string()));
    }
    Ok(())
}

/// `mmdebstrap --variant=buildd --include=… SUITE DIR "deb […] MIRROR SUITE main"`.
pub fn mmdebstrap_command(suite: &str, dir: &Path, mirror: &str) -> Command {
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--quiet")
        .arg("--variant=buildd")
        .arg(format!("--include={}", PACKAGES.join(",")))
        // Documentation is never read in a build root.
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg(suite)
        .arg(dir)
        .arg(format!("deb [signed-by={KEYRING}] {mirror} {suite} main"));
    cmd
}

/// The Debian mirror the host's own apt sources use (the one serving
/// Debian's `main`, not its security archive), or [`DEFAULT_MIRROR`].
pub fn host_mirror() -> String {
    crate::process::run(Command::new("apt-cache").arg("policy"))
        .ok()
        .and_then(|o| mirror_of_policy(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// The URI of the first `Packages` index of `apt-cache policy` whose release
/// line says origin and label `Debian`, component `main`.
fn mirror_of_policy(policy: &str) -> Option<String> {
    let lines: Vec<&str> = policy.lines().collect();
    lines.windows(2).find_map(|pair| {
        let words: Vec<&str> = pair[0].split_whitespace().collect();
        let release = pair[1].trim().strip_prefix("release ")?;
        let fields: Vec<&str> = release.split(',').collect();
        let debian_main = ["o=Debian", "l=Debian", "c=main"]
            .iter()
            .all(|f| fields.contains(f));
        match words.as_slice() {
            [_, uri, _, _, "Packages"] if debian_main && uri.contains("://") => {
                Some(uri.trim_end_matches('/').to_string())
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
     origin deb.debian.org
 500 https://packages.example.com/apt stable/main amd64 Packages
     release o=Example,l=Debian,c=main
 500 http://mirror.example.org/debian/ bookworm/main amd64 Packages
     release v=12.15,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
     origin mirror.example.org
Pinned packages:
";

    #[test]
    fn the_mirror_is_the_host_archive_of_debian_main() {
        assert_eq!(
            mirror_of_policy(POLICY).as_deref(),
            Some("http://mirror.example.org/debian")
        );
        assert_eq!(mirror_of_policy("Package files:\n"), None);
    }

    #[test]
    fn the_command_names_suite_packages_keyring_and_mirror() {
        let cmd = mmdebstrap_command(
            "trixie",
            Path::new("/c/buildroot/trixie"),
            "http://m/debian",
        );
        let line = crate::process::command_line(&cmd);
        assert!(
            line.starts_with("mmdebstrap --quiet --variant=buildd --include=gcc-14,make,"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "trixie /c/buildroot/trixie 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m/debian trixie main'"
            ),
            "{line}"
        );
    }

    #[test]
    fn suites_are_plain_words_and_unmarked_roots_are_not_used() {
        for bad in ["", "../x", "Trixie", "a/b"] {
            assert!(
                matches!(check_suite(bad), Err(BuildRootError::BadSuite(_))),
                "{bad}"
            );
        }
        let scratch = testbed::scratch::Scratch::new("buildroot-marker");
        let scratch = scratch.root();
        std::fs::create_dir_all(scratch.join("trixie/usr")).unwrap();
        assert_eq!(BuildRoot::existing_in(scratch, "trixie"), None);
        std::fs::write(scratch.join("trixie").join(MARKER), "trixie\nold,list\n").unwrap();
        assert_eq!(BuildRoot::existing_in(scratch, "trixie"), None);
        std::fs::write(scratch.join("trixie").join(MARKER), marker_text("trixie")).unwrap();
        let root = BuildRoot::existing_in(scratch, "trixie").unwrap();
        assert_eq!(root.dir(), scratch.join("trixie"));
        assert_eq!(root.suite(), "trixie");
    }
}
