//! The kernel cache ([`kimage::cache_root`]): what it holds, how much disk
//! each entry takes, what uses what, and pruning it without ever removing
//! what a running build holds.
//!
//! Entries ([`Kind`]):
//! - `debian/RELEASE`: a Debian kernel's packages and their extraction
//!   (about 1 GB), complete once `.kpbuild-extracted-2` is written, locked
//!   by `debian/RELEASE.lock`; it uses the source of its package version.
//! - `debian/source-VERSION`: `linux-source-X.Y` unpacked, shared by the
//!   flavours of one version (`.kpbuild-extracted`, `source-VERSION.lock`).
//! - `prepared/KEY`: a tree-less build directory for one (source, config,
//!   compiler) (`.kpbuild-prepared`, `prepared/KEY.lock`); it uses the
//!   source recorded in `.kpbuild-source` (or kbuild's `source` link).
//! - `kernels/KEY`: a test kernel of the test bed (`.stamp-built`).
//! - `buildroot/SUITE`: the build root of a Debian release
//!   (`.kpbuild-buildroot`, `buildroot/SUITE.lock`); a prune removes only an
//!   unfinished one.
//! - `target-modules`: decompressed modules of targets (no lock).
//! - `.trash-*`: what an interrupted prune left.
//!
//! Anything else is listed as [`Kind::Other`] and never removed. The last
//! use of an entry is the newest modification time of its directory, its
//! marker and its lock files: every build opens a lock with
//! `File::create`, which truncates it and so stamps the time.

pub mod hold;
mod prune;
mod scan;
pub mod targets;
mod usage;

pub use hold::{Hold, hold};
pub use prune::{Reason, Removed, Rules, SkipReason, Skipped};
pub use scan::{PREPARED_CONFIG, PREPARED_SOURCE, release_parts};
pub use targets::{Targets, TargetsError};

use std::path::PathBuf;

/// A cache that cannot be read or pruned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The cache root cannot be listed.
    #[error("cannot read the kernel cache {}: {source}", path.display())]
    Unreadable {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The cache root is not a directory.
    #[error(
        "the kernel cache {} is not a directory (set KPBUILD_CACHE to a directory)",
        .0.display()
    )]
    NotADirectory(PathBuf),
    /// A file of an entry cannot be read, locked or removed.
    #[error("{action} {}: {source}", path.display())]
    Entry {
        /// What was being done (`cannot lock`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl CacheError {
    fn entry(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| CacheError::Entry {
            action,
            path,
            source,
        }
    }
}

/// What a cache entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `debian/RELEASE`: a Debian kernel's packages, extracted.
    DebianRelease,
    /// `debian/source-VERSION`: `linux-source-X.Y` of one package version.
    DebianSource,
    /// `prepared/KEY`: a tree-less build directory.
    Prepared,
    /// `kernels/KEY`: a test kernel of the test bed.
    TestKernel,
    /// `buildroot/SUITE`: a Debian release's build root (removed by a
    /// prune only when unfinished).
    BuildRoot,
    /// `target-modules`: decompressed modules of targets.
    TargetModules,
    /// `.trash-*`: left by an interrupted prune.
    Trash,
    /// Anything else; listed, never removed.
    Other,
}

impl Kind {
    /// The name `--json` and the listing use.
    pub fn label(self) -> &'static str {
        match self {
            Kind::DebianRelease => "debian-release",
            Kind::DebianSource => "debian-source",
            Kind::Prepared => "prepared",
            Kind::TestKernel => "test-kernel",
            Kind::BuildRoot => "build-root",
            Kind::TargetModules => "target-modules",
            Kind::Trash => "trash",
            Kind::Other => "other",
        }
    }
}

/// Names an entry: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct EntryRef {
    /// The kind.
    pub kind: Kind,
    /// The name (release, version, key).
    pub name: String,
}

impl std::fmt::Display for EntryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.label(), self.name)
    }
}

/// One entry of the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// The release, package version or key.
    pub name: String,
    /// Its directory (or file).
    pub path: PathBuf,
    /// Disk usage in bytes (allocated blocks; symbolic links not followed,
    /// hard links counted once).
    pub bytes: u64,
    /// Last use, in seconds since the Unix epoch.
    pub last_use: u64,
    /// Whether its marker says it is finished.
    pub complete: bool,
    /// Whether a running process holds one of its locks now.
    pub held: bool,
    /// Its lock files.
    pub locks: Vec<PathBuf>,
    /// Package version: of a release's packages, of a source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A release's kernel series (`6.12`, `6.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// A release's flavour (`cloud-amd64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flavour: Option<String>,
    /// A release's Debian (`deb12`, `deb13`), when its name says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// A prepared directory's source tree, as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// The config file a prepared directory was prepared for, as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// The entries it needs (a release its source, a prepared directory
    /// the entry its source tree is in).
    pub uses: Vec<EntryRef>,
    /// The entries that need it.
    pub used_by: Vec<EntryRef>,
}

impl Entry {
    /// Its kind and name.
    pub fn id(&self) -> EntryRef {
        EntryRef {
            kind: self.kind,
            name: self.name.clone(),
        }
    }
}

/// Everything in the cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    /// The cache root.
    pub root: PathBuf,
    /// The entries, by kind and name.
    pub entries: Vec<Entry>,
    /// Their disk usage in bytes.
    pub total_bytes: u64,
}

impl Listing {
    /// The entry of `kind` named `name`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind == kind && e.name == name)
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    /// The cache root.
    pub root: PathBuf,
    /// Nothing was removed: the report says what would be.
    pub dry_run: bool,
    /// The entries removed.
    pub removed: Vec<Removed>,
    /// Entries the rules select that were kept: held by a running build,
    /// or needed by one that is.
    pub skipped: Vec<Skipped>,
    /// The entries that stay.
    pub kept: Vec<EntryRef>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// Lists the cache at `root`: every entry with its size, last use, state
/// and links. A missing root is an empty cache.
pub fn list(root: &std::path::Path) -> Result<Listing, CacheError> {
    list_kinds(root, &|_| true)
}

/// [`list`], measuring only the entries of the kinds `wanted` accepts.
pub fn list_kinds(
    root: &std::path::Path,
    wanted: &dyn Fn(Kind) -> bool,
) -> Result<Listing, CacheError> {
    let mut entries = scan::entries(root)?;
    entries.retain(|e| wanted(e.kind));
    usage::measure(&mut entries)?;
    scan::link(root, &mut entries);
    let total_bytes = entries.iter().map(|e| e.bytes).sum();
    Ok(Listing {
        root: root.to_path_buf(),
        entries,
        total_bytes,
    })
}

/// Prunes the cache at `root` by `rules` (see [`Rules`]).
pub fn prune(root: &std::path::Path, rules: &Rules) -> Result<PruneReport, CacheError> {
    let listing = list(root)?;
    prune::run(&listing, rules, usage::now())
}

/// A byte count for people: `1.2 GB`, `340 MB`, `46 kB`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
