//! The Debian kernels apt knows, each with what of it is in the cache:
//! its release directory, its source, the prepared directories for it.

use super::{CacheError, Entry, Kind, Listing};
use crate::debian::archive::KnownKernel;
use crate::debian::{DebianError, release};
use std::path::PathBuf;

/// Why the known kernels cannot be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetsError {
    /// A flavour kpbuild does not know.
    #[error("{flavour:?}: not a kernel flavour kpbuild knows ({})", known.join(", "))]
    UnknownFlavour {
        /// The flavour given.
        flavour: String,
        /// The ones there are.
        known: Vec<&'static str>,
    },
    /// apt's metadata cannot be read, or the series is unknown.
    #[error(transparent)]
    Debian(#[from] DebianError),
    /// The cache cannot be read.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Measuring the cache panicked.
    #[error("measuring the cache panicked")]
    Panicked,
}

/// One cached part of a kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Part {
    /// The cache entry's name (release, version, key).
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// Its disk usage.
    pub bytes: u64,
    /// Whether it is finished.
    pub complete: bool,
    /// Whether a running build holds it.
    pub held: bool,
}

impl Part {
    fn of(e: &Entry) -> Part {
        Part {
            name: e.name.clone(),
            path: e.path.clone(),
            bytes: e.bytes,
            complete: e.complete,
            held: e.held,
        }
    }
}

/// What of a kernel is cached.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cached {
    /// `debian/RELEASE`: its packages, extracted.
    pub release: Option<Part>,
    /// `debian/source-VERSION`: its source (shared by the flavours).
    pub source: Option<Part>,
    /// `prepared/KEY`: build directories prepared for it.
    pub prepared: Vec<Part>,
    /// The disk usage of all three.
    pub bytes: u64,
}

/// A kernel apt knows, and what of it is cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Release, package version, flavour, series and suite.
    #[serde(flatten)]
    pub kernel: KnownKernel,
    /// What of it is in the cache.
    pub cached: Cached,
}

/// The known kernels of a series (all series when `None`), of one flavour
/// when given, oldest first within each series and suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Targets {
    /// The cache root.
    pub cache: PathBuf,
    /// The kernels.
    pub kernels: Vec<Target>,
}

/// The Debian kernels apt knows of `series` (every series kpbuild knows
/// when `None`), of `flavour` when given, with what of each is cached.
pub fn debian(
    root: &std::path::Path,
    series: Option<&str>,
    flavour: Option<&str>,
) -> Result<Targets, TargetsError> {
    if let Some(f) = flavour
        && !release::FLAVOURS.contains(&f)
    {
        return Err(TargetsError::UnknownFlavour {
            flavour: f.to_string(),
            known: release::FLAVOURS.to_vec(),
        });
    }
    // apt's metadata and the cache's sizes are read side by side.
    let (known, listing) = std::thread::scope(|scope| {
        let listing = scope.spawn(|| {
            super::list_kinds(root, &|k| {
                matches!(k, Kind::DebianRelease | Kind::DebianSource | Kind::Prepared)
            })
        });
        let known = crate::debian::archive::known_kernels(series.unwrap_or(""));
        (known, listing.join())
    });
    let mut known = known?;
    known.retain(|k| flavour.is_none_or(|f| k.flavour == f));
    let listing = listing.map_err(|_| TargetsError::Panicked)??;
    Ok(Targets {
        cache: root.to_path_buf(),
        kernels: join(known, &listing),
    })
}

/// Each known kernel with its cache entries: the release directory of its
/// name, the source of its version, and the prepared directories whose
/// recorded config is in its release directory (for a directory prepared
/// before that record, its source's, when that source serves one cached
/// release only).
pub fn join(known: Vec<KnownKernel>, listing: &Listing) -> Vec<Target> {
    let root = &listing.root;
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.clone());
    let inside = |dir: &std::path::Path, path: &std::path::Path| {
        super::scan::contains(root, &canonical_root, dir, path)
    };
    let prepared: Vec<&Entry> = listing
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Prepared)
        .collect();
    known
        .into_iter()
        .map(|kernel| {
            let release = listing.get(Kind::DebianRelease, &kernel.release);
            let source = listing.get(Kind::DebianSource, &kernel.version);
            let prepared: Vec<Part> = prepared
                .iter()
                .filter(|p| prepared_for(p, release, source, &inside))
                .map(|p| Part::of(p))
                .collect();
            let mut cached = Cached {
                release: release.map(Part::of),
                source: source.map(Part::of),
                prepared,
                bytes: 0,
            };
            cached.bytes = cached
                .release
                .iter()
                .chain(&cached.source)
                .chain(&cached.prepared)
                .map(|p| p.bytes)
                .sum();
            Target { kernel, cached }
        })
        .collect()
}

/// Whether the prepared directory `p` was prepared for the cached
/// `release` (whose source is `source`).
fn prepared_for(
    p: &Entry,
    release: Option<&Entry>,
    source: Option<&Entry>,
    inside: &dyn Fn(&std::path::Path, &std::path::Path) -> bool,
) -> bool {
    let Some(release) = release else {
        return false;
    };
    if let Some(config) = &p.config {
        return inside(&release.path, config);
    }
    source.is_some_and(|s| {
        let releases = s.used_by.iter().filter(|u| u.kind == Kind::DebianRelease);
        p.uses.contains(&s.id()) && releases.count() == 1 && s.used_by.contains(&release.id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::scan;

    fn kernel(release: &str, version: &str) -> KnownKernel {
        let (series, suite, flavour) = scan::release_parts(release).unwrap();
        KnownKernel {
            release: release.into(),
            version: version.into(),
            flavour,
            series,
            suite: suite.unwrap_or_else(|| "deb12".into()),
        }
    }

    fn entry(kind: Kind, name: &str, path: &str, bytes: u64) -> Entry {
        let mut e = scan::entry(kind, name.into(), path.into());
        (e.bytes, e.complete) = (bytes, true);
        e
    }

    #[test]
    fn each_kernel_gets_its_release_source_and_prepared_directories() {
        let mut entries = vec![
            entry(
                Kind::DebianRelease,
                "6.12.118+deb12-cloud-amd64",
                "/c/debian/6.12.118+deb12-cloud-amd64",
                800,
            ),
            entry(
                Kind::DebianRelease,
                "6.12.118+deb12-amd64",
                "/c/debian/6.12.118+deb12-amd64",
                900,
            ),
            entry(
                Kind::DebianSource,
                "6.12.118-1~deb12u1",
                "/c/debian/source-6.12.118-1_deb12u1",
                1700,
            ),
            entry(Kind::Prepared, "aa", "/c/prepared/aa", 30),
            entry(Kind::Prepared, "bb", "/c/prepared/bb", 40),
        ];
        entries[3].config = Some(
            "/c/debian/6.12.118+deb12-cloud-amd64/root/boot/config-6.12.118+deb12-cloud-amd64"
                .into(),
        );
        entries[4].config =
            Some("/c/debian/6.12.118+deb12-amd64/root/boot/config-6.12.118+deb12-amd64".into());
        let listing = Listing {
            root: "/c".into(),
            entries,
            total_bytes: 0,
        };
        let targets = join(
            vec![
                kernel("6.12.118+deb12-cloud-amd64", "6.12.118-1~deb12u1"),
                kernel("6.12.118+deb12-amd64", "6.12.118-1~deb12u1"),
                kernel("6.12.115+deb12-cloud-amd64", "6.12.115-2~deb12u1"),
            ],
            &listing,
        );
        let summary: Vec<String> = targets
            .iter()
            .map(|t| {
                let c = &t.cached;
                let name =
                    |p: &Option<Part>| p.as_ref().map_or("-".to_string(), |p| p.name.clone());
                let prepared: Vec<&str> = c.prepared.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "{} {} {prepared:?} {}",
                    name(&c.release),
                    name(&c.source),
                    c.bytes
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "6.12.118+deb12-cloud-amd64 6.12.118-1~deb12u1 [\"aa\"] 2530",
                "6.12.118+deb12-amd64 6.12.118-1~deb12u1 [\"bb\"] 2640",
                "- - [] 0",
            ]
        );
    }
}
