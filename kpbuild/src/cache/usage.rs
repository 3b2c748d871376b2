//! Disk usage, last use and lock state of the entries, measured in
//! parallel.

use super::{CacheError, Entry};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in seconds since the Unix epoch.
pub(super) fn now() -> u64 {
    seconds(SystemTime::now())
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Fills in each entry's size, last use and lock state.
pub(super) fn measure(entries: &mut [Entry]) -> Result<(), CacheError> {
    // Hard links are counted once across the whole cache, as du does.
    let seen = Mutex::new(HashSet::new());
    entries.par_iter_mut().try_for_each(|e| {
        e.bytes = disk_usage(&e.path, &seen)?;
        e.last_use = last_use(e);
        e.held = false;
        for lock in &e.locks {
            if is_held(lock)? {
                e.held = true;
            }
        }
        Ok(())
    })
}

/// The newest modification time of the entry's directory, marker files
/// and locks.
fn last_use(e: &Entry) -> u64 {
    let mut paths = vec![e.path.clone()];
    paths.extend(e.locks.iter().cloned());
    for marker in [
        super::scan::RELEASE_DONE,
        super::scan::SOURCE_DONE,
        super::scan::PREPARED_DONE,
    ] {
        paths.push(e.path.join(marker));
    }
    if e.kind == super::Kind::TargetModules {
        // Each module is written once, when first needed.
        if let Ok(read) = std::fs::read_dir(&e.path) {
            paths.extend(read.flatten().map(|f| f.path()));
        }
    }
    paths
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok()?.modified().ok())
        .map(seconds)
        .max()
        .unwrap_or(0)
}

/// Whether another open file holds an exclusive or shared lock on `lock`
/// now. A missing lock file is held by no one. The file is opened for
/// reading only, so listing never changes its time.
pub(super) fn is_held(lock: &Path) -> Result<bool, CacheError> {
    let file = match File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(CacheError::Entry {
                action: "cannot open the lock",
                path: lock.to_path_buf(),
                source,
            });
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(source)) => Err(CacheError::Entry {
            action: "cannot lock",
            path: lock.to_path_buf(),
            source,
        }),
    }
}

/// Bytes allocated under `path` (`du`): symbolic links are not followed,
/// a file with several links is counted once, and what vanishes during
/// the walk (a build cleaning up) counts as nothing.
fn disk_usage(path: &Path, seen: &Mutex<HashSet<(u64, u64)>>) -> Result<u64, CacheError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(m.blocks() * 512 + below(path, seen)?),
        Ok(m) => Ok(file_usage(&m, seen)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(CacheError::entry("cannot read", path)(e)),
    }
}

/// A file's blocks, or nothing for a further link to a file already seen.
fn file_usage(m: &std::fs::Metadata, seen: &Mutex<HashSet<(u64, u64)>>) -> u64 {
    if m.nlink() > 1 && !seen.lock().expect("no panic").insert((m.dev(), m.ino())) {
        return 0;
    }
    m.blocks() * 512
}

/// What the directory `dir` holds: its files are measured through the
/// directory (`fstatat`, no path lookups), its subdirectories in parallel.
fn below(dir: &Path, seen: &Mutex<HashSet<(u64, u64)>>) -> Result<u64, CacheError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CacheError::entry("cannot read", dir)(e)),
    };
    let mut bytes = 0;
    let mut subdirs = Vec::new();
    for e in read.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => {
                bytes += m.blocks() * 512;
                subdirs.push(e.path());
            }
            Ok(m) => bytes += file_usage(&m, seen),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(CacheError::entry("cannot read", &e.path())(err)),
        }
    }
    let deeper = subdirs
        .par_iter()
        .map(|d| below(d, seen))
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok(bytes + deeper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_once_and_skips_links() {
        let s = testbed::scratch::Scratch::new("cache-usage");
        let big = s.write("d/big", vec![7u8; 64 * 1024]);
        std::fs::hard_link(&big, s.path("d/link")).unwrap();
        std::os::unix::fs::symlink("/usr", s.path("d/usr")).unwrap();
        let seen = Mutex::new(HashSet::new());
        let total = disk_usage(&s.path("d"), &seen).unwrap();
        let dir = std::fs::symlink_metadata(s.path("d")).unwrap().blocks() * 512;
        let file = std::fs::metadata(&big).unwrap().blocks() * 512;
        let link = std::fs::symlink_metadata(s.path("d/usr")).unwrap().blocks() * 512;
        assert!(file >= 64 * 1024, "{file}");
        assert_eq!(total, dir + file + link);
        assert_eq!(disk_usage(&s.path("absent"), &seen).unwrap(), 0);
    }

    #[test]
    fn a_held_lock_is_seen_and_a_free_one_is_not() {
        let s = testbed::scratch::Scratch::new("cache-held");
        let lock = s.write("x.lock", "");
        assert!(!is_held(&lock).unwrap());
        assert!(!is_held(&s.path("absent.lock")).unwrap());
        let holder = File::create(&lock).unwrap();
        holder.lock_shared().unwrap();
        assert!(is_held(&lock).unwrap());
        drop(holder);
        assert!(!is_held(&lock).unwrap());
    }
}
