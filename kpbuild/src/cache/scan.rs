//! Finding the entries of the cache by its layout, and linking each to the
//! entries it uses.

use super::{CacheError, Entry, EntryRef, Kind};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The marker of a finished release extraction (its layout's name).
pub(super) const RELEASE_DONE: &str = ".kpbuild-extracted-2";
/// The marker of a finished source extraction.
pub(super) const SOURCE_DONE: &str = ".kpbuild-extracted";
/// The marker of a finished prepared directory.
pub(super) const PREPARED_DONE: &str = ".kpbuild-prepared";
/// The record of a prepared directory's source tree (its canonical
/// path's bytes).
pub const PREPARED_SOURCE: &str = ".kpbuild-source";
/// The record of the config file a prepared directory was prepared for.
pub const PREPARED_CONFIG: &str = ".kpbuild-config";
/// The marker of a finished test kernel.
const KERNEL_DONE: &str = ".stamp-built";
/// The marker of a finished build root.
const BUILDROOT_DONE: &str = ".kpbuild-buildroot";
/// The prefix of a prune's trash directory.
pub(super) const TRASH_PREFIX: &str = ".trash-";

/// A Debian release name split into what groups releases: (series,
/// suite, flavour). `6.12.115+deb12-cloud-amd64` is (`6.12`, `deb12`,
/// `cloud-amd64`); `6.1.0-57-cloud-amd64` (ABI scheme) is (`6.1`, none,
/// `cloud-amd64`).
pub fn release_parts(name: &str) -> Option<(String, Option<String>, String)> {
    let (version, rest) = name.split_once('-')?;
    let (upstream, suite) = match version.split_once('+') {
        Some((u, s)) => (u, Some(s.split('.').next().unwrap_or(s).to_string())),
        None => (version, None),
    };
    let numbers: Vec<&str> = upstream.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if numbers.len() < 2 || !numbers.iter().all(|n| numeric(n)) {
        return None;
    }
    let flavour = match rest.split_once('-') {
        Some((abi, flavour)) if numeric(abi) => flavour,
        _ => rest,
    };
    if flavour.is_empty() || flavour.contains('/') {
        return None;
    }
    let series = format!("{}.{}", numbers[0], numbers[1]);
    Some((series, suite, flavour.to_string()))
}

/// `NAME.lock` beside `dir`: the lock of the entry `dir`.
pub(super) fn lock_beside(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{name}.lock"))
}

/// The locks of the entry `dir`: `NAME.lock`, then the one
/// `with_extension("lock")` names when that differs (`6.12.lock` for
/// `6.12.118+deb12-cloud-amd64`), which earlier kpbuild versions took for
/// every release of a series: a build they run must hold the entry too.
fn locks_of(dir: &Path) -> Vec<PathBuf> {
    let mut locks = vec![lock_beside(dir)];
    let legacy = dir.with_extension("lock");
    if legacy != locks[0] {
        locks.push(legacy);
    }
    locks
}

/// A new entry, not yet measured.
pub(super) fn entry(kind: Kind, name: String, path: PathBuf) -> Entry {
    Entry {
        kind,
        name,
        path,
        bytes: 0,
        last_use: 0,
        complete: false,
        held: false,
        locks: Vec::new(),
        version: None,
        series: None,
        flavour: None,
        suite: None,
        source: None,
        config: None,
        uses: Vec::new(),
        used_by: Vec::new(),
    }
}

/// The names in a directory, sorted; a missing directory has none.
fn names(dir: &Path) -> Result<Vec<String>, CacheError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CacheError::Unreadable {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for e in read {
        let e = e.map_err(|source| CacheError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A small text file's trimmed contents, if there is one.
fn record(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A path recorded as its bytes.
fn path_record(file: &Path) -> Option<PathBuf> {
    std::fs::read(file)
        .ok()
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Every entry under `root`, without sizes, times or lock states.
pub(super) fn entries(root: &Path) -> Result<Vec<Entry>, CacheError> {
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CacheError::Unreadable {
                path: root.to_path_buf(),
                source,
            });
        }
        Ok(m) if !m.is_dir() => return Err(CacheError::NotADirectory(root.to_path_buf())),
        Ok(_) => {}
    }
    let mut out = Vec::new();
    for name in names(root)? {
        let path = root.join(&name);
        match name.as_str() {
            "debian" => debian(&path, &mut out)?,
            "prepared" => prepared(&path, &mut out)?,
            "kernels" => kernels(&path, &mut out)?,
            "buildroot" => buildroots(&path, &mut out)?,
            "target-modules" => {
                let mut e = entry(Kind::TargetModules, name, path);
                e.complete = true;
                out.push(e);
            }
            _ if name.starts_with(TRASH_PREFIX) => out.push(entry(Kind::Trash, name, path)),
            _ => out.push(entry(Kind::Other, name, path)),
        }
    }
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(out)
}

/// A directory that holds entries: one of them, or something else there
/// (listed as [`Kind::Other`]); lock files are not entries.
fn is_entry_dir(path: &Path, name: &str, out: &mut Vec<Entry>, parent: &str) -> bool {
    if name.ends_with(".lock") {
        return false;
    }
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if !is_dir {
        out.push(entry(
            Kind::Other,
            format!("{parent}/{name}"),
            path.to_path_buf(),
        ));
    }
    is_dir
}

fn debian(dir: &Path, out: &mut Vec<Entry>) -> Result<(), CacheError> {
    for name in names(dir)? {
        let path = dir.join(&name);
        if !is_entry_dir(&path, &name, out, "debian") {
            continue;
        }
        if let Some(dirname_version) = name.strip_prefix("source-") {
            // Debian versions have no `_`: the directory name spells `~` so.
            let version = dirname_version.replace('_', "~");
            let mut e = entry(Kind::DebianSource, version.clone(), path.clone());
            e.complete = path.join(SOURCE_DONE).is_file();
            e.locks = locks_of(&path);
            e.version = Some(version);
            out.push(e);
        } else if let Some((series, suite, flavour)) = release_parts(&name) {
            let mut e = entry(Kind::DebianRelease, name.clone(), path.clone());
            e.complete = path.join(RELEASE_DONE).is_file();
            e.locks = locks_of(&path);
            e.version = record(&path.join(RELEASE_DONE)).or_else(|| image_version(&path, &name));
            (e.series, e.suite, e.flavour) = (Some(series), suite, Some(flavour));
            out.push(e);
        } else {
            out.push(entry(Kind::Other, format!("debian/{name}"), path));
        }
    }
    Ok(())
}

/// The version in a downloaded image package's file name
/// (`linux-image-RELEASE-unsigned_VERSION_amd64.deb`), for a release whose
/// extraction never finished.
fn image_version(dir: &Path, release: &str) -> Option<String> {
    let prefix = format!("linux-image-{release}-unsigned_");
    names(&dir.join("debs")).ok()?.iter().find_map(|n| {
        let rest = n.strip_prefix(&prefix)?;
        let version = rest.split('_').next()?;
        Some(version.replace("%3a", ":"))
    })
}

fn prepared(dir: &Path, out: &mut Vec<Entry>) -> Result<(), CacheError> {
    for name in names(dir)? {
        let path = dir.join(&name);
        if !is_entry_dir(&path, &name, out, "prepared") {
            continue;
        }
        let mut e = entry(Kind::Prepared, name, path.clone());
        e.complete = path.join(PREPARED_DONE).is_file();
        e.locks = locks_of(&path);
        // Directories prepared before the record have kbuild's own link.
        e.source = path_record(&path.join(PREPARED_SOURCE))
            .or_else(|| std::fs::read_link(path.join("source")).ok());
        e.config = path_record(&path.join(PREPARED_CONFIG));
        out.push(e);
    }
    Ok(())
}

fn kernels(dir: &Path, out: &mut Vec<Entry>) -> Result<(), CacheError> {
    for name in names(dir)? {
        let path = dir.join(&name);
        if !is_entry_dir(&path, &name, out, "kernels") {
            continue;
        }
        let mut e = entry(Kind::TestKernel, name, path.clone());
        e.complete = path.join(KERNEL_DONE).is_file();
        // The test bed locks `KEY.with_extension("lock")` (keys have dots,
        // so several keys share it); the false-positive objects have their own.
        e.locks = vec![path.with_extension("lock"), path.join("fp-objects.lock")];
        let own = lock_beside(&path);
        if !e.locks.contains(&own) {
            e.locks.push(own);
        }
        out.push(e);
    }
    Ok(())
}

fn buildroots(dir: &Path, out: &mut Vec<Entry>) -> Result<(), CacheError> {
    for name in names(dir)? {
        let path = dir.join(&name);
        if !is_entry_dir(&path, &name, out, "buildroot") {
            continue;
        }
        let mut e = entry(Kind::BuildRoot, name, path.clone());
        e.complete = path.join(BUILDROOT_DONE).is_file();
        e.locks = vec![lock_beside(&path)];
        out.push(e);
    }
    Ok(())
}

/// Links each entry to the entries it uses, and back: a release to the
/// source of its version, a prepared directory to the entry holding its
/// source tree.
pub(super) fn link(root: &Path, entries: &mut [Entry]) {
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut links: Vec<(usize, EntryRef)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let used = match e.kind {
            Kind::DebianRelease => e.version.as_ref().and_then(|v| {
                entries
                    .iter()
                    .find(|s| s.kind == Kind::DebianSource && &s.name == v)
            }),
            Kind::Prepared => e.source.as_ref().and_then(|src| {
                entries.iter().find(|s| {
                    matches!(s.kind, Kind::DebianSource | Kind::TestKernel)
                        && contains(root, &canonical_root, &s.path, src)
                })
            }),
            _ => None,
        };
        if let Some(used) = used {
            links.push((i, used.id()));
        }
    }
    for (i, used) in links {
        let user = entries[i].id();
        entries[i].uses.push(used.clone());
        if let Some(u) = entries.iter_mut().find(|e| e.id() == used) {
            u.used_by.push(user);
        }
    }
}

/// Whether `path` is inside `dir` (an entry under `root`), whether it was
/// recorded through the root as given or through its canonical form.
pub(super) fn contains(root: &Path, canonical_root: &Path, dir: &Path, path: &Path) -> bool {
    if path.starts_with(dir) {
        return true;
    }
    dir.strip_prefix(root)
        .is_ok_and(|rel| path.starts_with(canonical_root.join(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_of_both_schemes() {
        let parts = |n: &str| release_parts(n);
        assert_eq!(
            parts("6.12.115+deb12-cloud-amd64"),
            Some(("6.12".into(), Some("deb12".into()), "cloud-amd64".into()))
        );
        assert_eq!(
            parts("6.12.115+deb13.1-amd64"),
            Some(("6.12".into(), Some("deb13".into()), "amd64".into()))
        );
        assert_eq!(
            parts("6.1.0-57-rt-amd64"),
            Some(("6.1".into(), None, "rt-amd64".into()))
        );
        assert_eq!(parts("source-6.12.118-1_deb12u1"), None);
        assert_eq!(parts("buildroot"), None);
        assert_eq!(parts("6.12"), None);
        assert_eq!(parts("6.12.1-"), None);
    }

    #[test]
    fn lock_beside_keeps_every_dot() {
        assert_eq!(
            lock_beside(Path::new("/c/debian/6.12.118+deb12-cloud-amd64")),
            Path::new("/c/debian/6.12.118+deb12-cloud-amd64.lock")
        );
        assert_eq!(
            lock_beside(Path::new("/c/debian/source-6.12.118-1_deb12u1")),
            Path::new("/c/debian/source-6.12.118-1_deb12u1.lock")
        );
    }
}
