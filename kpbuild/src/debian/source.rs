//! The kernel's own source: `linux-source-X.Y=VERSION`, downloaded with
//! `apt-get download` (nothing is installed) and unpacked into
//! `CACHE/debian/source-VERSION`, shared by every flavour of that version.
//! One process fills a version at a time (`source-VERSION.lock`); the
//! marker is written last, and a directory without it is removed and
//! redone, so a cut-off download or a full disk never leaves a tree that is
//! used.

use super::DebianError;
use super::archive::Apt;
use super::packages::{deb_of, download};
use super::release::Release;
use crate::files::PathContext;
use crate::process::Producer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The marker of a finished source directory.
const DONE: &str = ".kpbuild-extracted";

/// `CACHE/debian/source-VERSION` (`~` made `_`, as the directory names
/// of the cache have always been).
pub fn source_dir(version: &str) -> PathBuf {
    kimage::cache_root()
        .join("debian")
        .join(format!("source-{}", version.replace('~', "_")))
}

/// `CACHE/debian/source-VERSION.lock`. Not `with_extension`: the
/// version's dots would cut the name short.
fn lock_of(base: &Path) -> PathBuf {
    base.with_file_name(format!(
        "{}.lock",
        base.file_name().unwrap_or_default().to_string_lossy()
    ))
}

/// Holds the finished source of `version` for a build (see
/// [`crate::cache::hold`]); a source a prune removed since it was looked
/// at is an error naming it.
pub fn hold(version: &str) -> Result<crate::cache::Hold, DebianError> {
    let base = source_dir(version);
    crate::cache::hold(&lock_of(&base), &base.join(DONE), || {
        Err(DebianError::Missing(base.clone()))
    })
}

/// The unpacked source tree of `release` at `version`, if a finished one is
/// in the cache.
pub fn cached(release: &Release, version: &str) -> Option<PathBuf> {
    let base = source_dir(version);
    base.join(DONE)
        .exists()
        .then(|| base.join(release.source_package()))
}

/// Checks that the archive still has `linux-source-X.Y=VERSION`, so a
/// release whose source is gone stops before its packages download.
pub fn check_available(apt: &Apt, release: &Release, version: &str) -> Result<(), DebianError> {
    let package = release.source_package();
    let versions = apt.versions(&package)?;
    if !versions.iter().any(|v| v == version) {
        return Err(DebianError::SourceVersionGone {
            package,
            version: version.to_string(),
            release: release.name.clone(),
            available: versions,
        });
    }
    Ok(())
}

/// The unpacked source of `release` at `version`: downloaded and unpacked
/// unless a finished one is cached ([`check_available`] first: a version
/// the archive no longer has fails the download with apt's words only).
/// `apt` is only used when it must be.
pub fn ensure(
    release: &Release,
    version: &str,
    apt: &dyn Fn() -> Result<Apt, DebianError>,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, DebianError> {
    let base = source_dir(version);
    let package = release.source_package();
    let tree = base.join(&package);
    if base.join(DONE).exists() {
        return Ok(tree);
    }
    crate::files::create_dir_all(base.parent().expect("under the cache"))?;
    let lock_path = lock_of(&base);
    let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    if base.join(DONE).exists() {
        return Ok(tree);
    }
    // Whatever is here was left by an interrupted run.
    let _ = std::fs::remove_dir_all(&base);
    let apt = apt()?;
    let debs = base.join("download");
    crate::files::create_dir_all(&debs)?;
    let wanted = format!("{package}={version}");
    download(&apt, &debs, std::slice::from_ref(&wanted), progress)?;
    let deb = deb_of(&debs, &package).ok_or_else(|| DebianError::NotDownloaded(wanted.clone()))?;
    progress(&format!(
        "unpacking {} into {}",
        deb.display(),
        base.display()
    ));
    let tarball = format!("./usr/src/{package}.tar.xz");
    crate::process::pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&deb),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&debs)
            .arg(&tarball),
        Producer::MustSucceed,
    )
    .map_err(|source| DebianError::Unpack {
        tarball: deb.clone(),
        source: Box::new(source),
    })?;
    unpack_tarball(&debs.join(&tarball), &base)?;
    if !tree.join("Makefile").is_file() {
        return Err(DebianError::Missing(tree.join("Makefile")));
    }
    std::fs::remove_dir_all(&debs).at(&debs)?;
    let done = base.join(DONE);
    std::fs::write(&done, version).at(&done)?;
    Ok(tree)
}

/// Unpacks the source tarball into `base` (multi-threaded xz).
fn unpack_tarball(tarball: &Path, base: &Path) -> Result<(), DebianError> {
    crate::process::pipe(
        Command::new("xz").arg("-T0").arg("-dc").arg(tarball),
        Command::new("tar").arg("-x").arg("-C").arg(base),
        Producer::MustSucceed,
    )
    .map_err(|source| DebianError::Unpack {
        tarball: tarball.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(())
}
