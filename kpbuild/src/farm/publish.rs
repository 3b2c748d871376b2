//! Publishing a farm's bundles: each tested target's cumulative bundle,
//! with the latest bundle of its kernel in the channel as predecessor
//! (`kpbuild bundle create` and `publish`'s code), and the skip of a target
//! whose inputs equal those its latest bundle records.
//!
//! A channel is a repository of its own, `REPO/CHANNEL/` (see
//! [`bundle::repo::channel_dir`]). The stored `report.json` of a farm's
//! bundle carries `"farm": {"target", "series_sha256"}`: with the manifest's
//! kernel (build-id, release, `.config` hash) it is what the skip compares.

use super::series::Selection;
use super::targets::{Kernel, Target};
use crate::bundle::{BundleError, CreateFrom, KernelOf, PatchMeta};
use bundle::{PublicKey, SecretKey, Verified};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where and with which key a farm publishes.
#[derive(Debug, Clone)]
pub struct PublishTo {
    /// The repository directory.
    pub repo: PathBuf,
    /// The channel (`test`).
    pub channel: String,
    /// The unencrypted minisign secret key.
    pub key: PathBuf,
    /// Its public key (verifies the channel's index and bundles).
    pub pubkey: PathBuf,
}

/// Why a target's bundle could not be looked up, made or published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A key, or the bundle could not be made.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The channel's repository refused or cannot be read.
    #[error("{}: {source}", dir.display())]
    Repo {
        /// The channel's directory.
        dir: PathBuf,
        /// Why.
        source: bundle::Error,
    },
    /// A Debian target's kernel could not be had.
    #[error("{release}: {source}")]
    Debian {
        /// The release.
        release: String,
        /// Why.
        source: Box<crate::debian::DebianError>,
    },
}

/// The keys and channel directory of a farm run, checked before any build.
#[derive(Debug)]
pub struct Channel {
    /// `REPO/CHANNEL`.
    pub dir: PathBuf,
    public: PublicKey,
    secret: SecretKey,
}

impl Channel {
    /// Reads both keys (they must be a pair) and names the channel's directory.
    pub fn open(to: &PublishTo) -> Result<Channel, PublishError> {
        let public = PublicKey::read(&to.pubkey).map_err(BundleError::from)?;
        let secret = SecretKey::read(&to.key).map_err(BundleError::from)?;
        secret.check_pair(&public).map_err(BundleError::from)?;
        let dir = bundle::repo::channel_dir(&to.repo, &to.channel).map_err(|source| {
            PublishError::Repo {
                dir: to.repo.clone(),
                source,
            }
        })?;
        Ok(Channel {
            dir,
            public,
            secret,
        })
    }

    fn repo_error(&self) -> impl Fn(bundle::Error) -> PublishError + '_ {
        |source| PublishError::Repo {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The latest bundle of a kernel build in the channel, verified.
    pub fn latest(&self, build_id: &str) -> Result<Option<Verified>, PublishError> {
        bundle::repo::latest(&self.dir, build_id, &self.public).map_err(self.repo_error())
    }
}

/// A target's kernel files (held in the cache while in use).
#[derive(Debug)]
pub struct KernelFiles {
    /// Its vmlinux.
    pub vmlinux: PathBuf,
    /// Its `.config`.
    pub config: PathBuf,
    _holds: Vec<crate::cache::Hold>,
}

/// A target's vmlinux and `.config`: a tree's build directory's, a Debian
/// kernel's from the cache (fetched when missing).
pub fn kernel_files(
    target: &Target,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<KernelFiles, PublishError> {
    match &target.kernel {
        Kernel::Tree { build, .. } => Ok(KernelFiles {
            vmlinux: build.join("vmlinux"),
            config: build.join(".config"),
            _holds: Vec::new(),
        }),
        Kernel::Debian { release, .. } => {
            let k = crate::debian::fetch(release, progress).map_err(|e| PublishError::Debian {
                release: release.clone(),
                source: Box::new(e),
            })?;
            Ok(KernelFiles {
                vmlinux: k.vmlinux.clone(),
                config: k.config.clone(),
                _holds: k.holds,
            })
        }
    }
}

/// What a target's bundle is made from: the skip compares these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inputs {
    /// The kernel build.
    pub kernel: bundle::manifest::Kernel,
    /// The target's series hash.
    pub series_sha256: String,
}

/// A target's inputs now.
pub fn inputs_of(files: &KernelFiles, selection: &Selection<'_>) -> Result<Inputs, PublishError> {
    Ok(Inputs {
        kernel: crate::bundle::kernel_of(&files.vmlinux, &files.config)?,
        series_sha256: selection.sha256.clone(),
    })
}

/// The inputs a bundle records; `None` for a bundle no farm made.
pub fn recorded_inputs(b: &Verified) -> Option<Inputs> {
    let report: serde_json::Value =
        serde_json::from_slice(b.bundle().file(bundle::manifest::REPORT)?).ok()?;
    let series = report.pointer("/farm/series_sha256")?.as_str()?;
    Some(Inputs {
        kernel: b.manifest().kernel.clone(),
        series_sha256: series.to_string(),
    })
}

/// Whether a target with `inputs` has nothing new to publish: its latest
/// bundle in the channel was made from the same inputs.
pub fn unchanged(latest: Option<&Verified>, inputs: &Inputs) -> bool {
    latest.and_then(recorded_inputs).as_ref() == Some(inputs)
}

/// A bundle a farm published.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PublishedBundle {
    /// Where the repository stores it.
    pub path: PathBuf,
    /// The kernel build-id.
    pub build_id: String,
    /// Its sequence.
    pub sequence: u64,
    /// SHA-256 of the bundle file.
    pub sha256: String,
    /// Its predecessor's sequence.
    pub predecessor: Option<u64>,
}

/// A bundle the channel holds, as a farm reports it.
pub fn published_of(channel: &Channel, b: &Verified) -> PublishedBundle {
    let m = b.manifest();
    PublishedBundle {
        path: channel
            .dir
            .join(&m.kernel.build_id)
            .join(bundle::repo::bundle_file(m.sequence)),
        build_id: m.kernel.build_id.clone(),
        sequence: m.sequence,
        sha256: b.bundle().sha256().to_string(),
        predecessor: m.predecessor.as_ref().map(|p| p.sequence),
    }
}

/// Makes the target's signed cumulative bundle from its build output, with
/// `latest` as predecessor and each fix's own id, title and CVEs (a
/// variant's file stem is not the fix's id), and publishes it in the channel.
///
/// The build's `report.json` names the texts it took by path and SHA-256;
/// each is matched to the selection's text of that hash, so an output built
/// in another checkout (a CI job's) is read from this one.
pub fn publish(
    channel: &Channel,
    build_out: &Path,
    kernel: &bundle::manifest::Kernel,
    target: &str,
    selection: &Selection<'_>,
    latest: Option<&Verified>,
) -> Result<PublishedBundle, PublishError> {
    let report = build_out.join("report.json");
    let recorded = crate::files::read(&report).map_err(BundleError::from)?;
    let listed: serde_json::Value =
        serde_json::from_slice(&recorded).map_err(|source| BundleError::Json {
            path: report.clone(),
            source,
        })?;
    let mut meta = Vec::new();
    let mut texts = std::collections::BTreeMap::new();
    // Only the fixes the build took: the others are not in report.json.
    for p in listed["inputs"]["patches"].as_array().into_iter().flatten() {
        let (Some(path), Some(sha256)) = (p["path"].as_str(), p["sha256"].as_str()) else {
            continue;
        };
        let Some(c) = selection.fixes.iter().find(|c| c.text().sha256 == sha256) else {
            continue;
        };
        meta.push(PatchMeta {
            patch: path.to_string(),
            id: c.fix.id.clone(),
            title: c.fix.title.clone(),
            cves: c.fix.cves.clone(),
        });
        texts.insert(sha256.to_string(), c.text().path.clone());
    }
    let mut farm = serde_json::Map::new();
    farm.insert(
        "farm".into(),
        serde_json::json!({"target": target, "series_sha256": selection.sha256}),
    );
    let from = CreateFrom {
        build_out,
        kernel: KernelOf::Recorded(kernel.clone()),
        predecessor: latest,
        meta,
        texts,
        report_fields: farm,
    };
    let (bytes, _) = crate::bundle::create_bundle(&from, &channel.secret)?;
    let at = bundle::time::timestamp().map_err(BundleError::from)?;
    let p = bundle::repo::publish(&channel.dir, &bytes, &channel.public, &channel.secret, at)
        .map_err(channel.repo_error())?;
    Ok(PublishedBundle {
        path: p.path,
        build_id: p.build_id,
        sequence: p.sequence,
        sha256: bundle::sha256_hex(&bytes),
        predecessor: latest.map(|l| l.manifest().sequence),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::manifest::Kernel as BundleKernel;

    fn kernel(build_id: &str) -> BundleKernel {
        BundleKernel {
            release: "6.12.118+deb12-cloud-amd64".into(),
            arch: "x86_64".into(),
            build_id: build_id.into(),
            config_sha256: "c".repeat(64),
        }
    }

    /// A signed bundle whose report records `series` (or no farm at all).
    fn bundle_of(series: Option<&str>) -> Verified {
        let keys = testbed::repo_root().join("fixtures/bundle");
        let secret = SecretKey::read(&keys.join("test.key")).unwrap();
        let public = PublicKey::read(&keys.join("test.pub")).unwrap();
        let mut report = serde_json::json!({"outcome": "patch"});
        if let Some(s) = series {
            report["farm"] = serde_json::json!({"target": "t", "series_sha256": s});
        }
        let input = bundle::CreateInput {
            kernel: kernel("ab12"),
            patches: vec![bundle::PatchInput {
                id: "0001-fix".into(),
                title: "fix".into(),
                cves: Vec::new(),
                data: b"--- a/x\n+++ b/x\n".to_vec(),
            }],
            modules: vec![bundle::ModuleInput {
                name: "livepatch_farm".into(),
                vermagic: "6.12.118+deb12-cloud-amd64 SMP mod_unload".into(),
                data: b"module".to_vec(),
            }],
            report,
            predecessor: None,
            created: 1_700_000_000,
        };
        let bytes = bundle::create(&input, &secret).unwrap();
        bundle::Bundle::read(&bytes)
            .unwrap()
            .verify(&public)
            .unwrap()
    }

    #[test]
    fn a_target_is_unchanged_only_when_kernel_and_series_equal_the_latest_bundles() {
        let series = "a".repeat(64);
        let latest = bundle_of(Some(&series));
        let inputs = Inputs {
            kernel: kernel("ab12"),
            series_sha256: series.clone(),
        };
        assert_eq!(recorded_inputs(&latest), Some(inputs.clone()));
        assert!(unchanged(Some(&latest), &inputs));
        // Nothing published yet.
        assert!(!unchanged(None, &inputs));
        // Another series hash (a fix, its text or its check changed).
        let other_series = Inputs {
            series_sha256: "b".repeat(64),
            ..inputs.clone()
        };
        assert!(!unchanged(Some(&latest), &other_series));
        // Another kernel build or configuration.
        for k in [
            kernel("cd34"),
            BundleKernel {
                config_sha256: "d".repeat(64),
                ..kernel("ab12")
            },
            BundleKernel {
                release: "6.12.117+deb12-cloud-amd64".into(),
                ..kernel("ab12")
            },
        ] {
            let other = Inputs {
                kernel: k,
                ..inputs.clone()
            };
            assert!(!unchanged(Some(&latest), &other), "{other:?}");
        }
        // A bundle no farm made records no inputs: never unchanged.
        let plain = bundle_of(None);
        assert_eq!(recorded_inputs(&plain), None);
        assert!(!unchanged(Some(&plain), &inputs));
    }
}
