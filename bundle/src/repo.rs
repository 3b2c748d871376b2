//! The patch server's repository: one directory per kernel build-id holding
//! every published bundle and a signed index.
//!
//! ```text
//! DIR/BUILD_ID/000001.kpb, 000002.kpb, …   never deleted or rewritten
//! DIR/BUILD_ID/index.json                    latest + append-only history
//! DIR/BUILD_ID/index.json.minisig            minisign signature of index.json
//! ```
//!
//! A channel (`test`, `stable`) is a repository of this layout in
//! `DIR/CHANNEL/` ([`channel_dir`]): a host following a channel learns what
//! it offers for its kernel from one small signed file,
//! `DIR/CHANNEL/BUILD_ID/index.json`. A bundle reaches another channel only
//! by [`promote`], recorded in that channel's history.
//!
//! Every write is a temporary file renamed into place, under a lock on
//! `DIR/BUILD_ID/.lock`; the bundle is stored before the index names it.

use crate::error::{Error, Result, io};
use crate::manifest::{Manifest, PredecessorRef};
use crate::minisign::{PublicKey, SecretKey};
use crate::{Bundle, sha256_hex};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `format` of indexes this version writes and reads.
pub const INDEX_FORMAT: &str = "kpbuild-index/1";
const INDEX: &str = "index.json";
const INDEX_SIG: &str = "index.json.minisig";

/// `DIR/BUILD_ID/index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`INDEX_FORMAT`].
    pub format: String,
    /// The kernel build.
    pub build_id: String,
    /// Its release.
    pub release: String,
    /// The bundle hosts should run.
    pub latest: Latest,
    /// Every publish and rollback, oldest first; only ever appended to.
    pub history: Vec<Record>,
}

/// The bundle hosts should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latest {
    /// Its sequence.
    pub sequence: u64,
    /// Its file name in the build-id directory (`NNNNNN.kpb`).
    pub file: String,
    /// SHA-256 of the bundle file.
    pub sha256: String,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A bundle was published and became the latest.
    Publish,
    /// An earlier bundle became the latest again.
    Rollback,
    /// A bundle of another channel was promoted here and became the latest.
    Promote,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Publish or rollback.
    pub action: Action,
    /// The sequence that became the latest.
    pub sequence: u64,
    /// SHA-256 of its bundle file.
    pub sha256: String,
    /// When, seconds since 1970.
    pub at: u64,
    /// The channel a promoted bundle came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where the bundle is stored.
    pub path: PathBuf,
    /// Its sequence.
    pub sequence: u64,
    /// The kernel build-id directory.
    pub build_id: String,
    /// True when the same bytes were already published: nothing changed.
    pub unchanged: bool,
}

/// The stored name of a sequence.
pub fn bundle_file(sequence: u64) -> String {
    format!("{sequence:06}.kpb")
}

fn check_build_id(build_id: &str) -> Result<()> {
    if !crate::manifest::is_hex(build_id) {
        return Err(Error::BuildId {
            what: "build-id".into(),
            value: build_id.into(),
        });
    }
    Ok(())
}

/// Writes `data` to `path` through a temporary file in the same directory.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, data)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .map_err(io(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io(path)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An exclusive lock on a build-id directory, released when dropped.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    file.lock().map_err(io(&path))?;
    Ok(file)
}

fn load_index(dir: &Path, build_id: &str, key: &PublicKey) -> Result<Option<Index>> {
    let path = dir.join(INDEX);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let sig_path = dir.join(INDEX_SIG);
    let sig = std::fs::read(&sig_path).map_err(io(&sig_path))?;
    key.verify(
        &data,
        &sig,
        &sig_path.display().to_string(),
        &path.display().to_string(),
    )?;
    let bad = |why: String| Error::Json {
        file: path.display().to_string(),
        why,
    };
    let value: serde_json::Value = serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(INDEX_FORMAT) => {}
        found => {
            return Err(Error::UnknownFormat {
                file: path.display().to_string(),
                found: found.unwrap_or("(none)").into(),
                expected: INDEX_FORMAT,
            });
        }
    }
    let index: Index = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if index.build_id != build_id {
        return Err(bad(format!(
            "build_id is {}, but the index is in directory {build_id}",
            index.build_id
        )));
    }
    Ok(Some(index))
}

fn store_index(dir: &Path, index: &Index, key: &SecretKey, at: u64) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(index).expect("an index serializes");
    data.push(b'\n');
    let sig = key.sign(
        &data,
        &format!("timestamp:{at}\tfile:{INDEX}\thashed"),
        &format!("signature from kpbuild bundle key {}", key.key_id()),
    );
    // The signature first; if the index then cannot be written, the old
    // signature goes back, so the pair on disk always verifies.
    let sig_path = dir.join(INDEX_SIG);
    let old_sig = std::fs::read(&sig_path).ok();
    write_atomic(&sig_path, sig.as_bytes())?;
    write_atomic(&dir.join(INDEX), &data).inspect_err(|_| {
        let _ = match &old_sig {
            Some(old) => write_atomic(&sig_path, old),
            None => std::fs::remove_file(&sig_path).map_err(io(&sig_path)),
        };
    })
}

/// Reads `DIR/BUILD_ID/index.json` and verifies its signature.
pub fn read_index(dir: &Path, build_id: &str, key: &PublicKey) -> Result<Index> {
    check_build_id(build_id)?;
    let bdir = dir.join(build_id);
    load_index(&bdir, build_id, key)?.ok_or_else(|| Error::NoIndex {
        path: bdir.join(INDEX),
    })
}

/// A channel's repository inside `dir`: `DIR/CHANNEL`, itself a repository
/// of this layout, so a host following a channel reads one directory. A
/// name is letters, digits, `-` and `_`.
pub fn channel_dir(dir: &Path, channel: &str) -> Result<PathBuf> {
    let ok = !channel.is_empty()
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::Input(format!(
            "channel {channel:?}: a name is letters, digits, '-' and '_'"
        )));
    }
    Ok(dir.join(channel))
}

/// The latest bundle of a kernel build, its index and stored file verified
/// with `key`; `None` when nothing is published for it.
pub fn latest(dir: &Path, build_id: &str, key: &PublicKey) -> Result<Option<crate::Verified>> {
    check_build_id(build_id)?;
    let bdir = dir.join(build_id);
    let Some(index) = load_index(&bdir, build_id, key)? else {
        return Ok(None);
    };
    let path = bdir.join(&index.latest.file);
    let stored = std::fs::read(&path).map_err(io(&path))?;
    let actual = sha256_hex(&stored);
    if actual != index.latest.sha256 {
        return Err(Error::HashMismatch {
            file: path.display().to_string(),
            listed_in: bdir.join(INDEX).display().to_string(),
            expected: index.latest.sha256,
            actual,
        });
    }
    Bundle::read(&stored)?.verify(key).map(Some)
}

/// Verifies a bundle and publishes it as the latest of its kernel build.
///
/// Publishing the same bytes again changes nothing. A sequence already
/// stored with other bytes, or not newer than every published one, is an
/// error; so is a bundle whose predecessor is not the stored one.
pub fn publish(
    dir: &Path,
    bundle: &[u8],
    public: &PublicKey,
    secret: &SecretKey,
    at: u64,
) -> Result<Published> {
    secret.check_pair(public)?;
    let verified = Bundle::read(bundle)?.verify(public)?;
    let m = verified.manifest();
    let build_id = m.kernel.build_id.clone();
    let bdir = dir.join(&build_id);
    std::fs::create_dir_all(&bdir).map_err(io(&bdir))?;
    let _lock = lock(&bdir)?;
    let index = load_index(&bdir, &build_id, public)?;
    let path = bdir.join(bundle_file(m.sequence));
    let sha256 = verified.bundle().sha256().to_string();
    let published = |unchanged| Published {
        path: path.clone(),
        sequence: m.sequence,
        build_id: build_id.clone(),
        unchanged,
    };
    if let Some(index) = &index {
        check_release(&bdir, index, m)?;
    }
    if stored_already(&path, bundle, index.as_ref(), m, &sha256)? {
        return Ok(published(true));
    }
    if let (Some(_), Some(pred)) = (&index, &m.predecessor) {
        check_stored_predecessor(&bdir, pred)?;
    }
    let index = published_index(index, m, sha256, at);
    write_atomic(&path, bundle)?;
    store_index(&bdir, &index, secret, at)?;
    Ok(published(false))
}

/// An index stays with one kernel release.
fn check_release(bdir: &Path, index: &Index, m: &Manifest) -> Result<()> {
    if index.release == m.kernel.release {
        return Ok(());
    }
    Err(Error::Json {
        file: bdir.join(INDEX).display().to_string(),
        why: format!(
            "release is {}, but the bundle's kernel is {}",
            index.release, m.kernel.release
        ),
    })
}

/// Whether this bundle is stored and recorded already (nothing to do). A
/// stored file with other bytes is an error; without a stored file the
/// sequence must be newer than every published one.
fn stored_already(
    path: &Path,
    bundle: &[u8],
    index: Option<&Index>,
    m: &Manifest,
    sha256: &str,
) -> Result<bool> {
    let recorded = index.is_some_and(|i| {
        i.history
            .iter()
            .any(|r| r.action == Action::Publish && r.sequence == m.sequence && r.sha256 == sha256)
    });
    // A sequence the index names was published: its file never changes.
    let listed = index.is_some_and(|i| i.history.iter().any(|r| r.sequence == m.sequence));
    match std::fs::read(path) {
        Ok(stored) if stored != bundle && listed => Err(Error::AlreadyPublished {
            path: path.to_path_buf(),
            sequence: m.sequence,
        }),
        Ok(stored) if stored == bundle => Ok(recorded),
        // Stored by a publish that stopped before its index (no host can
        // have seen it, hosts read what the index names): the same bytes
        // are finished, other bytes replace it, if it is newer.
        Ok(_) => check_newer(index, m).map(|()| false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check_newer(index, m).map(|()| false),
        Err(e) => Err(io(path)(e)),
    }
}

/// The bundle's sequence is newer than every one the index has seen.
fn check_newer(index: Option<&Index>, m: &Manifest) -> Result<()> {
    let newest = index
        .and_then(|i| i.history.iter().map(|r| r.sequence).max())
        .unwrap_or(0);
    if m.sequence <= newest {
        return Err(Error::NotNewer {
            build_id: m.kernel.build_id.clone(),
            sequence: m.sequence,
            newest,
        });
    }
    Ok(())
}

/// The predecessor the manifest names is the one published.
fn check_stored_predecessor(bdir: &Path, pred: &PredecessorRef) -> Result<()> {
    let pred_path = bdir.join(bundle_file(pred.sequence));
    let stored = std::fs::read(&pred_path).map_err(|_| Error::Predecessor {
        sequence: pred.sequence,
        why: format!("{} is not published", pred_path.display()),
    })?;
    if sha256_hex(&stored) != pred.sha256 {
        return Err(Error::Predecessor {
            sequence: pred.sequence,
            why: format!(
                "the manifest names sha256 {}, the published {} is {}",
                pred.sha256,
                pred_path.display(),
                sha256_hex(&stored)
            ),
        });
    }
    Ok(())
}

/// The index with this bundle as the latest and its publish recorded.
fn published_index(index: Option<Index>, m: &Manifest, sha256: String, at: u64) -> Index {
    let mut index = index.unwrap_or_else(|| Index {
        format: INDEX_FORMAT.into(),
        build_id: m.kernel.build_id.clone(),
        release: m.kernel.release.clone(),
        latest: Latest {
            sequence: 0,
            file: String::new(),
            sha256: String::new(),
        },
        history: Vec::new(),
    });
    index.latest = Latest {
        sequence: m.sequence,
        file: bundle_file(m.sequence),
        sha256: sha256.clone(),
    };
    index.history.push(Record {
        action: Action::Publish,
        sequence: m.sequence,
        sha256,
        at,
        from: None,
    });
    index
}

/// Makes an earlier published sequence the latest again, appending a
/// rollback record. Stored bundles and earlier history are left as they are.
pub fn rollback(
    dir: &Path,
    build_id: &str,
    sequence: u64,
    public: &PublicKey,
    secret: &SecretKey,
    at: u64,
) -> Result<Index> {
    secret.check_pair(public)?;
    check_build_id(build_id)?;
    let bdir = dir.join(build_id);
    if !bdir.join(INDEX).exists() {
        return Err(Error::NoIndex {
            path: bdir.join(INDEX),
        });
    }
    let _lock = lock(&bdir)?;
    let mut index = read_index(dir, build_id, public)?;
    if sequence >= index.latest.sequence {
        return Err(Error::NotEarlier {
            build_id: build_id.into(),
            sequence,
            latest: index.latest.sequence,
        });
    }
    let not_published = || Error::NotPublished {
        build_id: build_id.into(),
        sequence,
    };
    let record = index
        .history
        .iter()
        .find(|r| r.action == Action::Publish && r.sequence == sequence)
        .ok_or_else(not_published)?
        .clone();
    let file = bundle_file(sequence);
    let path = bdir.join(&file);
    let stored = std::fs::read(&path).map_err(io(&path))?;
    let actual = sha256_hex(&stored);
    if actual != record.sha256 {
        return Err(Error::HashMismatch {
            file: path.display().to_string(),
            listed_in: bdir.join(INDEX).display().to_string(),
            expected: record.sha256,
            actual,
        });
    }
    Bundle::read(&stored)?.verify(public)?;
    index.latest = Latest {
        sequence,
        file,
        sha256: record.sha256.clone(),
    };
    index.history.push(Record {
        action: Action::Rollback,
        sequence,
        sha256: record.sha256,
        at,
        from: None,
    });
    store_index(&bdir, &index, secret, at)?;
    Ok(index)
}

/// Promotes a bundle published in channel `from` to channel `to` (both in
/// `dir`): the same bytes stored in `to`, made its latest, the promotion
/// recorded (with `from`) in its signed history.
///
/// The bundle must be one `from` published, stored with the hash its index
/// records, and signed; its sequence must be newer than every one `to` has
/// seen, and `to`'s latest must be on its chain of predecessors in `from`
/// (a host replaces the one with the other). Promoting it again changes
/// nothing.
#[allow(clippy::too_many_arguments)]
pub fn promote(
    dir: &Path,
    from: &str,
    to: &str,
    build_id: &str,
    sequence: u64,
    public: &PublicKey,
    secret: &SecretKey,
    at: u64,
) -> Result<Published> {
    secret.check_pair(public)?;
    check_build_id(build_id)?;
    if from == to {
        return Err(Error::Input(format!(
            "channel {from:?}: a bundle is promoted to another channel"
        )));
    }
    let src = channel_dir(dir, from)?;
    let dst = channel_dir(dir, to)?;
    let (bytes, sha256) = published_bundle(&src, build_id, sequence, public)?;
    let m = Bundle::read(&bytes)?.verify(public)?.manifest().clone();
    let ddir = dst.join(build_id);
    std::fs::create_dir_all(&ddir).map_err(io(&ddir))?;
    let _lock = lock(&ddir)?;
    let index = load_index(&ddir, build_id, public)?;
    let path = ddir.join(bundle_file(sequence));
    let published = |unchanged| Published {
        path: path.clone(),
        sequence,
        build_id: build_id.to_string(),
        unchanged,
    };
    if let Some(index) = &index {
        check_release(&ddir, index, &m)?;
        let done = index
            .history
            .iter()
            .any(|r| r.action == Action::Promote && r.sequence == sequence && r.sha256 == sha256);
        if done && std::fs::read(&path).is_ok_and(|b| b == bytes) {
            return Ok(published(true));
        }
        check_newer(Some(index), &m)?;
        check_chain(&src, build_id, &m, &index.latest, public)?;
    }
    let mut index = published_index(index, &m, sha256, at);
    if let Some(r) = index.history.last_mut() {
        r.action = Action::Promote;
        r.from = Some(from.to_string());
    }
    write_atomic(&path, &bytes)?;
    store_index(&ddir, &index, secret, at)?;
    Ok(published(false))
}

/// A bundle `dir`'s index records as published: its bytes, checked
/// against the recorded hash, and that hash.
fn published_bundle(
    dir: &Path,
    build_id: &str,
    sequence: u64,
    key: &PublicKey,
) -> Result<(Vec<u8>, String)> {
    let index = read_index(dir, build_id, key)?;
    let record = index
        .history
        .iter()
        .find(|r| r.action != Action::Rollback && r.sequence == sequence)
        .ok_or_else(|| Error::NotPublished {
            build_id: build_id.into(),
            sequence,
        })?;
    let path = dir.join(build_id).join(bundle_file(sequence));
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let actual = sha256_hex(&bytes);
    if actual != record.sha256 {
        return Err(Error::HashMismatch {
            file: path.display().to_string(),
            listed_in: dir.join(build_id).join(INDEX).display().to_string(),
            expected: record.sha256.clone(),
            actual,
        });
    }
    Ok((bytes, actual))
}

/// `latest` (of the channel promoted to) is on `m`'s chain of
/// predecessors, as the channel promoted from stores them.
fn check_chain(
    src: &Path,
    build_id: &str,
    m: &Manifest,
    latest: &Latest,
    key: &PublicKey,
) -> Result<()> {
    let mut pred = m.predecessor.clone();
    while let Some(p) = pred {
        if p.sequence < latest.sequence {
            break;
        }
        if p.sequence == latest.sequence {
            if p.sha256 == latest.sha256 {
                return Ok(());
            }
            break;
        }
        let (bytes, _) = published_bundle(src, build_id, p.sequence, key)?;
        pred = Bundle::read(&bytes)?
            .verify(key)?
            .manifest()
            .predecessor
            .clone();
    }
    Err(Error::Predecessor {
        sequence: latest.sequence,
        why: format!(
            "the latest bundle of the channel promoted to is not a predecessor of sequence {}",
            m.sequence
        ),
    })
}
