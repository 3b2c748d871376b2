//! What Debian's archive holds, from apt's metadata. Debian 12's kernels
//! come from this machine's own apt configuration; Debian 13's from a
//! private one under `CACHE/apt/trixie` (its own `sources.list`, lists and
//! cache, the archive's keyring), so the system's sources are never touched.
//!
//! [`known_kernels`] lists the kernels of a series, [`Apt`] runs apt-cache
//! and apt-get with the configuration of a suite.

use super::DebianError;
use super::release::{self, Suite};
use crate::files::PathContext;
use crate::process::ProcessError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The mirror of the private configurations.
const MIRROR: &str = "http://deb.debian.org";
/// The keyring the archive's Release files are signed with.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// How old a private configuration's lists may get before an update.
const MAX_LIST_AGE: Duration = Duration::from_secs(24 * 3600);

/// A kernel apt knows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KnownKernel {
    /// The release name (`6.12.115+deb12-cloud-amd64`, `6.1.0-57-cloud-amd64`).
    pub release: String,
    /// The package version of its `linux-image-RELEASE-unsigned` (`6.1.192-3`).
    pub version: String,
    /// `amd64`, `cloud-amd64` or `rt-amd64`.
    pub flavour: String,
    /// `6.12`, `6.1`.
    pub series: String,
    /// `deb12` or `deb13`.
    pub suite: String,
}

/// apt-cache and apt-get with one suite's configuration.
#[derive(Debug, Clone)]
pub struct Apt {
    suite: Suite,
    /// The private configuration's directory; `None`: the system's.
    private: Option<PathBuf>,
}

impl Apt {
    /// The configuration that knows `suite`'s kernels: the system's for
    /// Debian 12, a private one (updated when its lists are missing or a
    /// day old) for Debian 13.
    pub fn for_suite(suite: Suite, progress: &dyn Fn(&str)) -> Result<Apt, DebianError> {
        match suite {
            Suite::Bookworm => Ok(Apt {
                suite,
                private: None,
            }),
            Suite::Trixie => {
                let dir = kimage::cache_root().join("apt").join(suite.codename());
                let apt = Apt {
                    suite,
                    private: Some(dir),
                };
                apt.update_if_stale(progress)?;
                Ok(apt)
            }
        }
    }

    /// The suite this configuration serves.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// `tool` (`apt-cache`, `apt-get`) with this configuration's options.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        if let Some(dir) = &self.private {
            for (key, value) in [
                ("Dir::Etc::SourceList", dir.join("sources.list")),
                ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
                ("Dir::Etc::Preferences", PathBuf::from("/dev/null")),
                ("Dir::Etc::PreferencesParts", PathBuf::from("/dev/null")),
                ("Dir::State::Lists", dir.join("lists")),
                ("Dir::State::status", dir.join("status")),
                ("Dir::Cache", dir.join("cache")),
            ] {
                c.arg("-o").arg(format!("{key}={}", value.display()));
            }
        }
        c
    }

    /// Writes the private configuration and runs `apt-get update` when its
    /// lists are missing or older than a day.
    fn update_if_stale(&self, progress: &dyn Fn(&str)) -> Result<(), DebianError> {
        let Some(dir) = &self.private else {
            return Ok(());
        };
        let stamp = dir.join("updated");
        let fresh = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < MAX_LIST_AGE)
        };
        if fresh(&stamp) {
            return Ok(());
        }
        for sub in ["lists/partial", "cache/archives/partial"] {
            crate::files::create_dir_all(&dir.join(sub))?;
        }
        // One update at a time; a second process finds the fresh stamp.
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
        lock.lock().at(&lock_path)?;
        if fresh(&stamp) {
            return Ok(());
        }
        let code = self.suite.codename();
        let sources = format!(
            "deb [signed-by={KEYRING}] {MIRROR}/debian {code} main\n\
             deb [signed-by={KEYRING}] {MIRROR}/debian-security {code}-security main\n"
        );
        crate::files::write_atomic(&dir.join("sources.list"), sources.as_bytes())?;
        crate::files::write_atomic(&dir.join("status"), b"")?;
        progress(&format!(
            "updating the private apt lists of {} ({code}) in {}",
            self.suite.name(),
            dir.display()
        ));
        crate::process::run(self.command("apt-get").args(["update", "-q"])).map_err(|source| {
            DebianError::AptUpdate {
                suite: self.suite.name(),
                dir: dir.clone(),
                source: Box::new(source),
            }
        })?;
        crate::files::write_atomic(&stamp, b"")?;
        Ok(())
    }

    /// `apt-cache ARGS`: its output; a spawn failure is [`DebianError::AptCache`],
    /// a failure with output (an unknown package) still gives the output.
    fn cache(&self, args: &[&str]) -> Result<String, DebianError> {
        let out = match crate::process::run(self.command("apt-cache").args(args)) {
            Ok(out) | Err(ProcessError::Failed { output: out, .. }) => out,
            Err(ProcessError::Spawn { source, .. }) => return Err(DebianError::AptCache(source)),
        };
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The candidate version of each of `packages` apt knows, by name.
    pub fn candidates(&self, packages: &[String]) -> Result<BTreeMap<String, String>, DebianError> {
        let mut found = BTreeMap::new();
        // Bounded batches: one process for the lot, not a command line
        // longer than the system allows.
        for chunk in packages.chunks(200) {
            let mut args = vec!["show", "--no-all-versions"];
            args.extend(chunk.iter().map(String::as_str));
            found.extend(stanza_versions(&self.cache(&args)?));
        }
        Ok(found)
    }

    /// A field of the candidate version of `package`.
    pub fn field(&self, package: &str, field: &str) -> Result<String, DebianError> {
        let show = self.cache(&["show", "--no-all-versions", package])?;
        let prefix = format!("{field}: ");
        show.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
            .ok_or_else(|| DebianError::UnknownPackage(package.to_string()))
    }

    /// Every version of `package` the archive has (`apt-cache madison`).
    pub fn versions(&self, package: &str) -> Result<Vec<String>, DebianError> {
        let madison = self.cache(&["madison", package])?;
        Ok(madison
            .lines()
            .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
            .collect())
    }

    /// The size in bytes of `package` (`NAME` or `NAME=VERSION`).
    pub fn size(&self, package: &str) -> u64 {
        let show = match package.split_once('=') {
            Some((name, version)) => self.cache(&["show", &format!("{name}={version}")]),
            None => self.cache(&["show", "--no-all-versions", package]),
        };
        show.ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Size: ").and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// The kernels of `series` this configuration knows, oldest first.
    fn kernels(&self, series: &str) -> Result<Vec<KnownKernel>, DebianError> {
        let names = self.cache(&["pkgnames", &format!("linux-image-{series}.")])?;
        let images: Vec<String> = names
            .lines()
            .map(str::trim)
            .filter(|n| n.ends_with("-unsigned"))
            .map(str::to_string)
            .collect();
        let mut kernels: Vec<KnownKernel> = self
            .candidates(&images)?
            .into_iter()
            .filter_map(|(package, version)| {
                let name = package
                    .strip_prefix("linux-image-")?
                    .strip_suffix("-unsigned")?;
                let r = release::parse(name).ok()?;
                (r.series == series && r.suite == self.suite).then(|| KnownKernel {
                    release: r.name,
                    version,
                    flavour: r.flavour,
                    series: r.series,
                    suite: r.suite.tag().to_string(),
                })
            })
            .collect();
        kernels.sort_by(|a, b| {
            release::compare_versions(&a.version, &b.version)
                .then_with(|| a.release.cmp(&b.release))
        });
        Ok(kernels)
    }
}

/// (Package, Version) of each stanza of `apt-cache show` output.
fn stanza_versions(show: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for stanza in show.split("\n\n") {
        let field = |f: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
        };
        if let (Some(p), Some(v)) = (field("Package: "), field("Version: ")) {
            found.entry(p).or_insert(v);
        }
    }
    found
}

/// The suites whose archives ship kernels of `series`.
fn suites_of(series: &str) -> &'static [Suite] {
    match series {
        "6.1" => &[Suite::Bookworm],
        _ => &[Suite::Bookworm, Suite::Trixie],
    }
}

/// The kernels apt knows of `series` (`6.12`, `6.1`; empty: every series
/// kpbuild knows, [`release::SERIES`]), every amd64 flavour, in Debian 12
/// (this machine's apt) and, for 6.12, Debian 13 (a private apt
/// configuration, updated over the network when a day old); oldest
/// version first.
pub fn known_kernels(series: &str) -> Result<Vec<KnownKernel>, DebianError> {
    let all: Vec<&str> = if series.is_empty() {
        release::SERIES.to_vec()
    } else if release::SERIES.contains(&series) {
        vec![series]
    } else {
        return Err(DebianError::UnknownSeries(series.to_string()));
    };
    let mut kernels = Vec::new();
    for s in all {
        for &suite in suites_of(s) {
            kernels.extend(Apt::for_suite(suite, &|_| {})?.kernels(s)?);
        }
    }
    Ok(kernels)
}

/// The kernels of `series` in one suite, oldest first.
pub fn known_kernels_in(
    series: &str,
    suite: Suite,
    progress: &dyn Fn(&str),
) -> Result<Vec<KnownKernel>, DebianError> {
    Apt::for_suite(suite, progress)?.kernels(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_show_stanzas() {
        let show = "Package: linux-image-6.1.0-57-cloud-amd64-unsigned\nSource: linux\nVersion: 6.1.192-3\nSize: 1\n\n\
                    Package: linux-image-6.12.107+deb12-amd64-unsigned\nVersion: 6.12.107-1~deb12u1\n\n";
        let v = stanza_versions(show);
        assert_eq!(v["linux-image-6.1.0-57-cloud-amd64-unsigned"], "6.1.192-3");
        assert_eq!(
            v["linux-image-6.12.107+deb12-amd64-unsigned"],
            "6.12.107-1~deb12u1"
        );
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn private_configuration_options() {
        let apt = Apt {
            suite: Suite::Trixie,
            private: Some(PathBuf::from("/c/apt/trixie")),
        };
        let c = apt.command("apt-cache");
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "Dir::Etc::SourceList=/c/apt/trixie/sources.list",
            "Dir::Etc::SourceParts=/dev/null",
            "Dir::State::Lists=/c/apt/trixie/lists",
            "Dir::Cache=/c/apt/trixie/cache",
            "Dir::State::status=/c/apt/trixie/status",
        ] {
            assert!(args.iter().any(|a| a == want), "{want}: {args:?}");
        }
        let system = Apt {
            suite: Suite::Bookworm,
            private: None,
        };
        assert_eq!(system.command("apt-get").get_args().count(), 0);
        assert_eq!(suites_of("6.1"), &[Suite::Bookworm]);
        assert_eq!(suites_of("6.12"), &[Suite::Bookworm, Suite::Trixie]);
    }
}
