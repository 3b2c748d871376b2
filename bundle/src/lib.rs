//! Signed cumulative livepatch bundles: the unit a patch server stores and a
//! host agent downloads — one cumulative livepatch for one exact kernel build.
//!
//! A bundle is a POSIX ustar archive (`tar tf` lists it) holding, in this order:
//! `manifest.json`, `manifest.json.minisig` (a minisign signature of the
//! manifest), then sorted by path `modules/NAME.ko`, `patches/NNNN-SLUG.patch`
//! (every fix so far, in order) and `report.json` (the build report without
//! its timings). The manifest lists every other file with its SHA-256, so the
//! one signature covers everything.
//!
//! The API in layers:
//! - write: [`create`] from a [`CreateInput`] and a [`SecretKey`];
//! - read: [`Bundle::read`] (strict archive and manifest parse, no key), then
//!   [`Bundle::verify`] with a [`PublicKey`] → [`Verified`], and
//!   [`Verified::check_kernel`] against the running kernel's build-id;
//! - [`repo`]: the patch server's directory of bundles and signed indexes;
//! - [`minisign`]: keys and deterministic signatures `minisign -V` verifies;
//! - [`ustar`]: the archive layer (deterministic writer, strict reader).
//!
//! Output is byte-reproducible: equal inputs and `created` give equal bytes.

pub mod error;
pub mod manifest;
pub mod minisign;
pub mod repo;
pub mod time;
pub mod ustar;

pub use error::{Error, Result};
pub use manifest::Manifest;
pub use minisign::{PublicKey, SecretKey};

use manifest::{
    FORMAT, FileEntry, Kernel, MANIFEST, ModuleEntry, PatchEntry, PredecessorRef, REPORT, SIGNATURE,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// SHA-256 in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    kimage::hex(&Sha256::digest(data))
}

/// One source patch to put in a bundle.
#[derive(Debug, Clone)]
pub struct PatchInput {
    /// A stable identifier; the cumulative rule compares it.
    pub id: String,
    /// One line saying what it fixes.
    pub title: String,
    /// The CVEs it fixes.
    pub cves: Vec<String>,
    /// The patch file's bytes.
    pub data: Vec<u8>,
}

/// One livepatch module to put in a bundle.
#[derive(Debug, Clone)]
pub struct ModuleInput {
    /// The module name; stored as `modules/NAME.ko`.
    pub name: String,
    /// Its `.modinfo` vermagic; the first word must be the kernel release.
    pub vermagic: String,
    /// The (signed) module bytes.
    pub data: Vec<u8>,
}

/// Everything [`create`] puts in a bundle.
#[derive(Debug, Clone)]
pub struct CreateInput<'a> {
    /// The kernel build (`arch`, `release`, `build_id`, `config_sha256`).
    pub kernel: Kernel,
    /// Every patch so far, in order.
    pub patches: Vec<PatchInput>,
    /// The modules.
    pub modules: Vec<ModuleInput>,
    /// `kpbuild build`'s report.json; stored by [`canonical_report`].
    pub report: serde_json::Value,
    /// The previous bundle of this kernel build, verified; `None` for the first.
    pub predecessor: Option<&'a Verified>,
    /// Creation time, seconds since 1970 ([`time::timestamp`]).
    pub created: u64,
}

/// The report as a bundle stores it: without the volatile `timings_s`, keys
/// sorted, pretty, with a trailing newline.
pub fn canonical_report(report: &serde_json::Value) -> Vec<u8> {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    let mut report = report.clone();
    if let Some(map) = report.as_object_mut() {
        map.remove("timings_s");
    }
    let mut out = serde_json::to_vec_pretty(&sorted(&report)).expect("JSON serializes");
    out.push(b'\n');
    out
}

/// `patches/NNNN-SLUG.patch`: position from 1, the id without a leading
/// number (`0001-`), anything but `[A-Za-z0-9._-]` as `-`.
fn patch_file(position: usize, id: &str) -> String {
    let trimmed = id.trim_start_matches(|c: char| c.is_ascii_digit());
    let base = match trimmed.strip_prefix('-') {
        Some(rest) if !rest.is_empty() && trimmed.len() < id.len() => rest,
        _ => id,
    };
    let slug: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("patches/{position:04}-{}.patch", slug.trim_matches('.'))
}

fn check_line(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(Error::Input(format!(
            "{what} {value:?} must be one non-empty line"
        )));
    }
    Ok(())
}

/// Creates a signed bundle. With a predecessor: same kernel build-id,
/// sequence = its sequence + 1, and its patches (by id) must be the start
/// of the new list; a patch's text may change (a revised fix).
pub fn create(input: &CreateInput<'_>, key: &SecretKey) -> Result<Vec<u8>> {
    let kernel = &input.kernel;
    if input.modules.is_empty() {
        return Err(Error::Input("no module".into()));
    }
    if input.patches.is_empty() {
        return Err(Error::Input("no patch".into()));
    }
    let mut patches = Vec::new();
    for (i, p) in input.patches.iter().enumerate() {
        check_line("patch id", &p.id)?;
        check_line(&format!("patch {} title", p.id), &p.title)?;
        for cve in &p.cves {
            check_line(&format!("patch {} CVE", p.id), cve)?;
        }
        patches.push(PatchEntry {
            id: p.id.clone(),
            title: p.title.clone(),
            cves: p.cves.clone(),
            file: patch_file(i + 1, &p.id),
            sha256: sha256_hex(&p.data),
        });
    }
    let mut modules = Vec::new();
    for m in &input.modules {
        let ok_name = !m.name.is_empty()
            && m.name.len() <= 55
            && m.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_name {
            return Err(Error::Input(format!("invalid module name {:?}", m.name)));
        }
        modules.push(ModuleEntry {
            file: format!("modules/{}.ko", m.name),
            sha256: sha256_hex(&m.data),
            livepatch: m.name.clone(),
            vermagic: m.vermagic.clone(),
        });
    }
    let report = canonical_report(&input.report);
    let (sequence, predecessor) = match input.predecessor {
        None => (1, None),
        Some(prev) => {
            check_predecessor(prev.manifest(), kernel, &patches)?;
            let sequence = prev.manifest().sequence + 1;
            let pred = PredecessorRef {
                sequence: prev.manifest().sequence,
                sha256: prev.bundle.sha256.clone(),
            };
            (sequence, Some(pred))
        }
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        sequence,
        kernel: kernel.clone(),
        patches,
        modules,
        report: FileEntry {
            file: REPORT.into(),
            sha256: sha256_hex(&report),
        },
        predecessor,
        created: input.created,
        created_utc: time::rfc3339(input.created),
    };
    manifest.check()?;
    let manifest_bytes = manifest.to_bytes();
    let signature = key.sign(
        &manifest_bytes,
        &format!("timestamp:{}\tfile:{MANIFEST}\thashed", input.created),
        &format!("signature from kpbuild bundle key {}", key.key_id()),
    );
    let mut data: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (p, m) in input.patches.iter().zip(&manifest.patches) {
        data.insert(&m.file, &p.data);
    }
    for (i, m) in input.modules.iter().zip(&manifest.modules) {
        if data.insert(&m.file, &i.data).is_some() {
            return Err(Error::Input(format!("module {} given twice", i.name)));
        }
    }
    data.insert(REPORT, &report);
    let mut entries: Vec<(&str, &[u8])> = vec![
        (MANIFEST, &manifest_bytes),
        (SIGNATURE, signature.as_bytes()),
    ];
    entries.extend(data);
    ustar::write(&entries, input.created)
}

fn check_predecessor(prev: &Manifest, kernel: &Kernel, patches: &[PatchEntry]) -> Result<()> {
    let err = |why: String| Error::Predecessor {
        sequence: prev.sequence,
        why,
    };
    if prev.kernel.build_id != kernel.build_id {
        return Err(err(format!(
            "is for kernel {} build-id {}, this bundle for {} build-id {}",
            prev.kernel.release, prev.kernel.build_id, kernel.release, kernel.build_id
        )));
    }
    for (i, old) in prev.patches.iter().enumerate() {
        match patches.get(i) {
            None => {
                return Err(err(format!(
                    "patch {} ({}) is dropped: a bundle is cumulative",
                    i + 1,
                    old.id
                )));
            }
            Some(new) if new.id != old.id => {
                return Err(err(format!(
                    "patch {} is {}, but the predecessor has {} there: patches are dropped or \
                     reordered",
                    i + 1,
                    new.id,
                    old.id
                )));
            }
            // A fix's text may change (a revised fix for the same
            // problem): its id keeps its place; the predecessor's manifest
            // keeps the old text's hash.
            Some(_) => {}
        }
    }
    Ok(())
}

/// A bundle read from bytes: the archive is well-formed, the manifest parses
/// and lists exactly the files present. Nothing is verified yet.
#[derive(Debug, Clone)]
pub struct Bundle {
    sha256: String,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Reads a bundle file's bytes strictly.
    pub fn read(data: &[u8]) -> Result<Self> {
        let entries = ustar::read(data)?;
        for (position, name) in [(1, MANIFEST), (2, SIGNATURE)] {
            match entries.iter().position(|(n, _)| n == name) {
                None => return Err(Error::Missing { name: name.into() }),
                Some(i) if i + 1 != position => {
                    return Err(Error::Misplaced {
                        name: name.into(),
                        position,
                        found: i + 1,
                    });
                }
                Some(_) => {}
            }
        }
        let mut entries = entries.into_iter();
        let (_, manifest_bytes) = entries.next().expect("checked above");
        let (_, signature) = entries.next().expect("checked above");
        let manifest = Manifest::parse(&manifest_bytes)?;
        let files: BTreeMap<String, Vec<u8>> = entries.collect();
        let listed = manifest.files();
        if let Some(extra) = files.keys().find(|f| !listed.iter().any(|(l, _)| l == f)) {
            return Err(Error::Extra {
                name: extra.clone(),
            });
        }
        if let Some((missing, _)) = listed.iter().find(|(l, _)| !files.contains_key(*l)) {
            return Err(Error::Missing {
                name: (*missing).into(),
            });
        }
        Ok(Bundle {
            sha256: sha256_hex(data),
            manifest,
            manifest_bytes,
            signature,
            files,
        })
    }

    /// The manifest (not yet verified).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A file's bytes by archive path (`report.json`, `modules/NAME.ko`, …).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        match name {
            MANIFEST => Some(&self.manifest_bytes),
            SIGNATURE => Some(&self.signature),
            _ => self.files.get(name).map(Vec::as_slice),
        }
    }

    /// SHA-256 of the whole bundle file (what a successor's `predecessor` names).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Verifies the manifest's signature with `key`, then every file's SHA-256.
    pub fn verify(&self, key: &PublicKey) -> Result<Verified> {
        let trusted_comment =
            key.verify(&self.manifest_bytes, &self.signature, SIGNATURE, MANIFEST)?;
        for (file, expected) in self.manifest.files() {
            let actual = sha256_hex(self.file(file).unwrap_or_default());
            if actual != expected {
                return Err(Error::HashMismatch {
                    file: file.into(),
                    listed_in: MANIFEST.into(),
                    expected: expected.into(),
                    actual,
                });
            }
        }
        Ok(Verified {
            bundle: self.clone(),
            key_id: key.key_id(),
            trusted_comment,
        })
    }
}

/// A bundle whose signature and file hashes verified.
#[derive(Debug, Clone)]
pub struct Verified {
    bundle: Bundle,
    key_id: String,
    trusted_comment: String,
}

impl Verified {
    /// The verified bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.bundle.manifest
    }

    /// The ID of the key that signed it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signature's trusted comment.
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// Checks that the bundle is for the kernel build with this build-id
    /// (hex, either case; e.g. from `kimage::notes::gnu_build_id` of `/sys/kernel/notes`).
    pub fn check_kernel(&self, build_id: &str) -> Result<()> {
        let kernel = &self.manifest().kernel;
        let running = build_id.trim().to_ascii_lowercase();
        if running != kernel.build_id {
            return Err(Error::KernelMismatch {
                release: kernel.release.clone(),
                bundle: kernel.build_id.clone(),
                running,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patch_file_names() {
        for (id, file) in [
            ("0001-fix-cmdline", "patches/0003-fix-cmdline.patch"),
            ("fix cmdline/again", "patches/0003-fix-cmdline-again.patch"),
            ("2024", "patches/0003-2024.patch"),
            ("..x", "patches/0003-x.patch"),
        ] {
            assert_eq!(super::patch_file(3, id), file, "{id}");
        }
    }
}
