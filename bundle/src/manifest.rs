//! `manifest.json`: what a bundle holds, signed as one file.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The `format` of manifests this version writes and reads.
pub const FORMAT: &str = "kpbuild-bundle/1";
/// The manifest's name in the archive.
pub const MANIFEST: &str = "manifest.json";
/// The manifest signature's name in the archive.
pub const SIGNATURE: &str = "manifest.json.minisig";
/// The build report's name in the archive.
pub const REPORT: &str = "report.json";

/// The manifest. Field order is the serialized order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// 1 for the first bundle of a kernel build, then +1 per bundle.
    pub sequence: u64,
    /// The one kernel build the modules load into.
    pub kernel: Kernel,
    /// Every source patch so far, in order (cumulative).
    pub patches: Vec<PatchEntry>,
    /// The livepatch modules.
    pub modules: Vec<ModuleEntry>,
    /// The build report.
    pub report: FileEntry,
    /// The bundle this one replaces; `null` for sequence 1.
    pub predecessor: Option<PredecessorRef>,
    /// Creation time, seconds since 1970 (`SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// `created` in RFC 3339.
    pub created_utc: String,
}

/// The kernel build a bundle is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// The GNU build-id of vmlinux, lowercase hex.
    pub build_id: String,
    /// SHA-256 of the kernel's `.config`.
    pub config_sha256: String,
}

/// One source patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchEntry {
    /// A stable identifier (the cumulative rule compares it).
    pub id: String,
    /// One line saying what it fixes.
    pub title: String,
    /// The CVEs it fixes.
    pub cves: Vec<String>,
    /// Its path in the archive (`patches/NNNN-SLUG.patch`).
    pub file: String,
    /// SHA-256 of the patch file.
    pub sha256: String,
}

/// One livepatch module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// Its path in the archive (`modules/NAME.ko`).
    pub file: String,
    /// SHA-256 of the module file.
    pub sha256: String,
    /// The module name (`/sys/kernel/livepatch/NAME`).
    pub livepatch: String,
    /// Its `.modinfo` vermagic.
    pub vermagic: String,
}

/// A file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the archive.
    pub file: String,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// The bundle a bundle replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredecessorRef {
    /// Its sequence (this sequence − 1).
    pub sequence: u64,
    /// SHA-256 of the predecessor bundle file.
    pub sha256: String,
}

pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(2)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && is_hex(s)
}

impl Manifest {
    /// Parses manifest bytes: the `format` first (an unknown one is its own
    /// error), then every field, then [`Manifest::check`].
    pub fn parse(data: &[u8]) -> Result<Self> {
        let json = |why: String| Error::Json {
            file: MANIFEST.into(),
            why,
        };
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| json(e.to_string()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::UnknownFormat {
                    file: MANIFEST.into(),
                    found: other.into(),
                    expected: FORMAT,
                });
            }
            None => return Err(json("no \"format\" string".into())),
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| json(e.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The manifest as stored: pretty JSON, fields in declaration order, a
    /// trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        out.push(b'\n');
        out
    }

    /// Every file the manifest lists, in archive order (report, modules, patches
    /// sorted by path).
    pub fn files(&self) -> Vec<(&str, &str)> {
        let mut files: Vec<(&str, &str)> = self
            .patches
            .iter()
            .map(|p| (p.file.as_str(), p.sha256.as_str()))
            .chain(
                self.modules
                    .iter()
                    .map(|m| (m.file.as_str(), m.sha256.as_str())),
            )
            .chain([(self.report.file.as_str(), self.report.sha256.as_str())])
            .collect();
        files.sort();
        files
    }

    /// Internal consistency: sequence and predecessor, hex fields, file names
    /// and their uniqueness, `created_utc`, module vermagic against the release.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, why: String| Error::Json {
            file: format!("{MANIFEST}: {field}"),
            why,
        };
        if self.sequence == 0 {
            return Err(bad("sequence", "must be 1 or more".into()));
        }
        match (&self.predecessor, self.sequence) {
            (None, 1) => {}
            (None, n) => {
                return Err(bad("predecessor", format!("null, but sequence is {n}")));
            }
            (Some(_), 1) => return Err(bad("predecessor", "set, but sequence is 1".into())),
            (Some(p), n) if p.sequence != n - 1 => {
                return Err(bad(
                    "predecessor.sequence",
                    format!("{}, but sequence is {n}", p.sequence),
                ));
            }
            (Some(p), _) if !is_sha256(&p.sha256) => {
                return Err(bad("predecessor.sha256", "not a SHA-256 in hex".into()));
            }
            _ => {}
        }
        let k = &self.kernel;
        if k.release.is_empty() || !k.release.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "kernel.release",
                format!("{:?} is not a release", k.release),
            ));
        }
        if !is_hex(&k.build_id) {
            return Err(bad(
                "kernel.build_id",
                format!("{:?} is not hex", k.build_id),
            ));
        }
        if !is_sha256(&k.config_sha256) {
            return Err(bad("kernel.config_sha256", "not a SHA-256 in hex".into()));
        }
        if self.created_utc != crate::time::rfc3339(self.created) {
            return Err(bad(
                "created_utc",
                format!("{:?} is not created = {}", self.created_utc, self.created),
            ));
        }
        if self.modules.is_empty() {
            return Err(bad("modules", "empty".into()));
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for p in &self.patches {
            let field = format!("patches[{}]", p.id);
            if !ids.insert(p.id.as_str()) {
                return Err(bad(&field, "the id appears twice".into()));
            }
            check_file(&p.file, "patches/", ".patch", &field)?;
            if !is_sha256(&p.sha256) {
                return Err(bad(&field, "sha256 is not a SHA-256 in hex".into()));
            }
        }
        for m in &self.modules {
            let field = format!("modules[{}]", m.livepatch);
            check_file(&m.file, "modules/", ".ko", &field)?;
            if !is_sha256(&m.sha256) {
                return Err(bad(&field, "sha256 is not a SHA-256 in hex".into()));
            }
            let release = m.vermagic.split_whitespace().next().unwrap_or_default();
            if release != k.release {
                return Err(Error::ModuleRelease {
                    file: m.file.clone(),
                    module: release.into(),
                    kernel: k.release.clone(),
                });
            }
        }
        if self.report.file != REPORT || !is_sha256(&self.report.sha256) {
            return Err(bad(
                "report",
                format!("must be {REPORT} with a SHA-256 in hex"),
            ));
        }
        for (file, _) in self.files() {
            if !names.insert(file) {
                return Err(bad("files", format!("{file} is listed twice")));
            }
        }
        Ok(())
    }
}

fn check_file(file: &str, dir: &str, ext: &str, field: &str) -> Result<()> {
    crate::ustar::check_path(file)?;
    let ok = file
        .strip_prefix(dir)
        .and_then(|f| f.strip_suffix(ext))
        .is_some_and(|stem| !stem.is_empty() && !stem.contains('/'));
    if !ok {
        return Err(Error::Json {
            file: format!("{MANIFEST}: {field}"),
            why: format!("file {file:?} is not {dir}NAME{ext}"),
        });
    }
    Ok(())
}
