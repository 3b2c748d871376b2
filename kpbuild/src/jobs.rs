//! Taking part in a make jobserver, so `kpbuild build` run from a
//! `make -jN` recipe compiles no more units at once than make allows.
//!
//! make passes `--jobserver-auth=R,W` (file descriptors, make 4.3) or
//! `--jobserver-auth=fifo:PATH` (make 4.4) in `MAKEFLAGS`. Every process
//! holds one implicit slot; each further job reads a one-byte token from the
//! jobserver and writes it back when done. The descriptors are opened by
//! path (`/proc/self/fd/N`), so no unsafe code is needed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the tokens are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A pair of inherited file descriptors.
    Fds(u32, u32),
    /// A named pipe.
    Fifo(String),
}

/// The jobserver named by a `MAKEFLAGS` value, if any.
pub fn parse_makeflags(makeflags: &str) -> Option<Auth> {
    let value = makeflags
        .split_whitespace()
        .rev()
        .filter_map(|w| {
            w.strip_prefix("--jobserver-auth=")
                .or_else(|| w.strip_prefix("--jobserver-fds="))
        })
        .next()?;
    if let Some(path) = value.strip_prefix("fifo:") {
        return Some(Auth::Fifo(path.to_string()));
    }
    let (r, w) = value.split_once(',')?;
    let (r, w) = (r.parse().ok()?, w.parse().ok()?);
    // Negative descriptors mean make chose not to share its jobserver.
    Some(Auth::Fds(r, w))
}

/// Job slots: the implicit one, then tokens from make's jobserver if there is
/// one (without a jobserver, slots are not limited here: the thread pool is).
pub struct Slots {
    server: Option<(Mutex<File>, Mutex<File>)>,
    implicit_taken: AtomicBool,
}

/// A held slot; returned on drop.
pub struct Slot<'a> {
    slots: &'a Slots,
    token: Option<u8>,
}

impl Slots {
    /// Slots from the environment's `MAKEFLAGS`; no jobserver (or one that
    /// cannot be opened) means unlimited slots.
    pub fn from_env() -> Self {
        let server = std::env::var("MAKEFLAGS")
            .ok()
            .and_then(|m| parse_makeflags(&m))
            .and_then(|auth| open(&auth));
        Slots {
            server,
            implicit_taken: AtomicBool::new(false),
        }
    }

    /// Slots with no jobserver.
    pub fn unlimited() -> Self {
        Slots {
            server: None,
            implicit_taken: AtomicBool::new(false),
        }
    }

    /// Whether a jobserver limits the slots.
    pub fn has_jobserver(&self) -> bool {
        self.server.is_some()
    }

    /// Takes a slot, blocking until make grants a token.
    pub fn take(&self) -> std::io::Result<Slot<'_>> {
        let Some((read, _)) = &self.server else {
            return Ok(Slot {
                slots: self,
                token: None,
            });
        };
        if !self.implicit_taken.swap(true, Ordering::AcqRel) {
            return Ok(Slot {
                slots: self,
                token: None,
            });
        }
        let mut byte = [0u8; 1];
        // One reader at a time keeps a token from being split.
        read.lock()
            .expect("jobserver read lock")
            .read_exact(&mut byte)?;
        Ok(Slot {
            slots: self,
            token: Some(byte[0]),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        match (self.token, &self.slots.server) {
            (Some(token), Some((_, write))) => {
                let _ = write
                    .lock()
                    .expect("jobserver write lock")
                    .write_all(&[token]);
            }
            (None, Some(_)) => self.slots.implicit_taken.store(false, Ordering::Release),
            _ => {}
        }
    }
}

fn open(auth: &Auth) -> Option<(Mutex<File>, Mutex<File>)> {
    let (r, w) = match auth {
        Auth::Fifo(path) => (path.clone(), path.clone()),
        Auth::Fds(r, w) => (format!("/proc/self/fd/{r}"), format!("/proc/self/fd/{w}")),
    };
    let read = OpenOptions::new().read(true).open(&r).ok()?;
    let write = OpenOptions::new().write(true).open(&w).ok()?;
    Some((Mutex::new(read), Mutex::new(write)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makeflags_forms() {
        assert_eq!(
            parse_makeflags(" -j4 --jobserver-auth=3,4"),
            Some(Auth::Fds(3, 4))
        );
        assert_eq!(
            parse_makeflags("-j --jobserver-auth=fifo:/tmp/GMfifo1"),
            Some(Auth::Fifo("/tmp/GMfifo1".into()))
        );
        assert_eq!(
            parse_makeflags("--jobserver-fds=5,6 -j"),
            Some(Auth::Fds(5, 6))
        );
        assert_eq!(parse_makeflags("-k -j2"), None);
        assert_eq!(parse_makeflags("--jobserver-auth=-1,-1"), None);
    }

    #[test]
    fn tokens_come_from_the_fifo_and_go_back() {
        let dir = std::env::temp_dir().join(format!("kpbuild-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let path = fifo.display().to_string();
        // Keep a writer open so opening for reading does not block, and put one token in.
        let mut feeder = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        feeder.write_all(b"+").unwrap();
        let slots = Slots {
            server: open(&Auth::Fifo(path)),
            implicit_taken: AtomicBool::new(false),
        };
        assert!(slots.has_jobserver());
        let first = slots.take().unwrap(); // the implicit slot
        assert_eq!(first.token, None);
        let second = slots.take().unwrap(); // the one token
        assert_eq!(second.token, Some(b'+'));
        drop(second); // written back
        let mut byte = [0u8; 1];
        feeder.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"+");
        drop(first);
        assert!(!slots.implicit_taken.load(Ordering::Acquire));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
