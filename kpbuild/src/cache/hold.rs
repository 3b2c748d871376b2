//! What a build holds while it uses a cache entry: a shared lock on the
//! entry's lock file, for as long as the build runs. Builds share it;
//! filling an entry takes it exclusively, and so does `kpbuild cache
//! prune`, without waiting, so it skips what any build holds.

use crate::files::{FileError, PathContext};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// A held cache entry: released when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Hold(#[allow(dead_code)] Arc<File>);

/// Holds the entry whose lock is `lock` (created when missing) while its
/// marker `done` exists: a shared lock when it is finished, else the
/// exclusive one, with which the caller `fill`s it (the marker last), and
/// which is then turned into a shared one. Taking the lock before looking
/// at the marker means a prune that got there first has either removed the
/// whole entry or not touched it.
pub fn hold<E: From<FileError>>(
    lock: &Path,
    done: &Path,
    fill: impl FnOnce() -> Result<(), E>,
) -> Result<Hold, E> {
    let file = File::create(lock).at(lock)?;
    file.lock_shared().at(lock)?;
    if !done.exists() {
        // flock converts the lock in place: the shared one is dropped, so
        // two builds waiting to fill never wait on each other's.
        file.lock().at(lock)?;
        if !done.exists() {
            fill()?;
        }
        file.lock_shared().at(lock)?;
    }
    Ok(Hold(Arc::new(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_fills_once_and_keeps_prune_away() {
        let s = testbed::scratch::Scratch::new("cache-hold");
        let (lock, done) = (s.path("e.lock"), s.path("e/done"));
        let mut fills = 0;
        let mut fill = || -> Result<(), FileError> {
            fills += 1;
            crate::files::create_dir_all(&s.path("e"))?;
            std::fs::write(&done, "").at(&done)
        };
        let first = hold(&lock, &done, &mut fill).unwrap();
        let second = hold(&lock, &done, &mut fill).unwrap();
        assert_eq!(fills, 1);
        // Both builds share it; an exclusive taker (prune) is refused.
        assert!(super::super::usage::is_held(&lock).unwrap());
        drop(first);
        assert!(super::super::usage::is_held(&lock).unwrap());
        drop(second);
        assert!(!super::super::usage::is_held(&lock).unwrap());
    }
}
