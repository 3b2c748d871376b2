//! `--debian RELEASE`: a Debian kernel described by its packages, any
//! release apt knows of Debian 12's 6.12 and 6.1 series and Debian 13's
//! 6.12, in every amd64 flavour.
//!
//! - [`release`]: release names of both of Debian's schemes
//!   (`6.12.115+deb12-cloud-amd64`, `6.1.0-57-cloud-amd64`);
//! - [`archive`]: apt's metadata (the system's for Debian 12, a private
//!   configuration in the cache for Debian 13): [`archive::known_kernels`],
//!   [`release_version`];
//! - `packages`: the release's binary packages, downloaded into
//!   `CACHE/debian/RELEASE` and extracted (one lock per release,
//!   `CACHE/debian/RELEASE.lock`);
//! - [`source`]: the kernel's own `linux-source-X.Y=VERSION`, downloaded and
//!   unpacked into `CACHE/debian/source-VERSION`, shared by the flavours;
//! - [`version`]: Debian version order, as dpkg has it.
//!
//! Nothing is installed, and nothing installed is required.

pub mod archive;
mod packages;
pub mod release;
pub mod source;
pub mod version;

use crate::files::FileError;
use crate::process::ProcessError;
use archive::Apt;
use release::{Release, Suite};
use std::path::PathBuf;

/// A Debian kernel that cannot be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebianError {
    /// Not a kernel release name kpbuild knows.
    #[error("{release:?}: {why}")]
    NotARelease {
        /// The name given.
        release: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A series kpbuild does not fetch.
    #[error("{0:?}: not a kernel series kpbuild knows (6.1, 6.12)")]
    UnknownSeries(String),
    /// apt has no kernel of that release.
    #[error(
        "{release}: apt knows no such kernel; known {series} releases ({suite}): {}",
        if known.is_empty() { "none (has `apt-get update` run?)".to_string() } else { known.join(", ") }
    )]
    UnknownRelease {
        /// The release asked for.
        release: String,
        /// Its series.
        series: String,
        /// The Debian release searched.
        suite: &'static str,
        /// The releases of the series apt knows there.
        known: Vec<String>,
    },
    /// apt-cache could not be started.
    #[error("cannot run apt-cache: {0}")]
    AptCache(std::io::Error),
    /// The private apt configuration could not be updated.
    #[error("cannot update the apt lists of {suite} in {}: {source}", dir.display())]
    AptUpdate {
        /// `Debian 13`.
        suite: &'static str,
        /// The private configuration.
        dir: PathBuf,
        /// The failed `apt-get update`.
        source: Box<ProcessError>,
    },
    /// apt does not know a package.
    #[error(
        "package {0} is not known to apt: is the release right, and has `apt-get update` run (as root)?"
    )]
    UnknownPackage(String),
    /// A download failed.
    #[error(
        "cannot download {packages} ({}): {source}",
        if *root { "no network?" } else { "not root and/or no network: run `apt-get update` as root and retry" }
    )]
    Download {
        /// The packages, space-separated.
        packages: String,
        /// Whether kpbuild runs as root.
        root: bool,
        /// The failed `apt-get download`.
        source: Box<ProcessError>,
    },
    /// No cloud kernel of the series is known.
    #[error("no Debian cloud kernel of {series} is known to apt (has `apt-get update` run?)")]
    NoCloudKernel {
        /// The series (`6.12`).
        series: String,
    },
    /// The archive no longer has the kernel's source version.
    #[error(
        "{package}={version} (the source of {release}) is no longer in the archive; it has [{}]",
        available.join(", ")
    )]
    SourceVersionGone {
        /// `linux-source-X.Y`.
        package: String,
        /// The kernel's version.
        version: String,
        /// The release.
        release: String,
        /// The versions the archive has.
        available: Vec<String>,
    },
    /// A package is not in the download directory.
    #[error("{0}: not downloaded")]
    NotDownloaded(String),
    /// A file a build needs is not in the packages.
    #[error("{}: missing from the extracted packages", .0.display())]
    Missing(PathBuf),
    /// A package lacks the member to extract.
    #[error("{}: no {member} in it ({status}{stderr})", deb.display())]
    NoMember {
        /// The package.
        deb: PathBuf,
        /// The member.
        member: String,
        /// tar's status.
        status: std::process::ExitStatus,
        /// tar's messages.
        stderr: String,
    },
    /// A package or the source tarball could not be unpacked (a damaged
    /// package, a full disk): nothing of it is used, the next run redoes it.
    #[error("unpacking {}: {source}", tarball.display())]
    Unpack {
        /// The tarball.
        tarball: PathBuf,
        /// The failed pipeline.
        source: Box<ProcessError>,
    },
    /// An extraction thread panicked.
    #[error("the {0} extraction panicked")]
    Panicked(&'static str),
    /// A tool failed.
    #[error(transparent)]
    Process(Box<ProcessError>),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
}

impl From<ProcessError> for DebianError {
    fn from(e: ProcessError) -> Self {
        DebianError::Process(Box::new(e))
    }
}

/// A Debian kernel's files, extracted.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    /// The cache entries it is in (release, source), held until it is
    /// dropped: `kpbuild cache prune` skips them.
    pub holds: Vec<crate::cache::Hold>,
    /// Extracted `linux-source-X.Y`.
    pub src: PathBuf,
    /// `/boot/config-RELEASE`.
    pub config: PathBuf,
    /// The unstripped vmlinux.
    pub vmlinux: PathBuf,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// The module build tree (`/usr/src/linux-headers-RELEASE`).
    pub headers: PathBuf,
    /// The installed modules (`/lib/modules/RELEASE`, `/usr/lib/modules/RELEASE`
    /// on Debian 13).
    pub modules: PathBuf,
    /// The kernel packages' version (`6.1.192-3`), also the source's.
    pub version: String,
    /// The Debian release whose archive it comes from.
    pub suite: Suite,
}

/// The downloaded `.deb` of `package` (`NAME` or `NAME=VERSION`) in
/// `dir`, if there is one.
pub fn downloaded_deb(dir: &std::path::Path, package: &str) -> Option<std::path::PathBuf> {
    packages::deb_of(dir, package)
}

/// The package version of `release` (`6.1.0-57-cloud-amd64` → `6.1.192-3`):
/// the candidate version of its `linux-image-RELEASE-unsigned` in apt's
/// metadata (Debian 13's from the private configuration). An unknown
/// release is [`DebianError::UnknownRelease`], naming the known releases of
/// its series.
pub fn release_version(release: &str) -> Result<String, DebianError> {
    let r = release::parse(release)?;
    let apt = Apt::for_suite(r.suite, &|_| {})?;
    version_in(&apt, &r)
}

fn version_in(apt: &Apt, r: &Release) -> Result<String, DebianError> {
    let image = r.image_package();
    if let Some(v) = apt.candidates(std::slice::from_ref(&image))?.remove(&image) {
        return Ok(v);
    }
    let known = archive::known_kernels_in(&r.series, r.suite, &|_| {})?;
    Err(DebianError::UnknownRelease {
        release: r.name.clone(),
        series: r.series.clone(),
        suite: r.suite.name(),
        known: known.into_iter().map(|k| k.release).collect(),
    })
}

/// The newest Debian 12 cloud kernel of a series (`6.12`) in apt's lists:
/// (release, version), e.g. (`6.12.118+deb12-cloud-amd64`,
/// `6.12.118-1~deb12u1`).
pub fn newest_cloud_release(series: &str) -> Result<(String, String), DebianError> {
    archive::known_kernels_in(series, Suite::Bookworm, &|_| {})?
        .into_iter()
        .rfind(|k| k.flavour == "cloud-amd64")
        .map(|k| (k.release, k.version))
        .ok_or(DebianError::NoCloudKernel {
            series: series.to_string(),
        })
}

/// The apt configuration of a suite, made once and only when needed: a
/// cached release never runs apt.
struct LazyApt {
    suite: Suite,
    apt: std::sync::OnceLock<Apt>,
}

impl LazyApt {
    fn get(&self, progress: &dyn Fn(&str)) -> Result<Apt, DebianError> {
        if let Some(a) = self.apt.get() {
            return Ok(a.clone());
        }
        let a = Apt::for_suite(self.suite, progress)?;
        Ok(self.apt.get_or_init(|| a).clone())
    }
}

/// Downloads (when missing) and extracts a Debian kernel release and its
/// own source.
pub fn fetch(release: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<DebianKernel, DebianError> {
    fetch_with_source(release, None, progress)
}

/// [`fetch`], with a source tree of the caller's (`src`) instead of the
/// release's own, which is then neither downloaded nor unpacked.
pub fn fetch_with_source(
    release: &str,
    src: Option<&std::path::Path>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DebianKernel, DebianError> {
    let r = release::parse(release)?;
    let debian = kimage::cache_root().join("debian");
    let base = debian.join(&r.name);
    let debs = base.join("debs");
    let apt = LazyApt {
        suite: r.suite,
        apt: std::sync::OnceLock::new(),
    };
    // A downloaded image names its version without apt; otherwise apt
    // does, and an unknown release stops here, before anything is written.
    let version = match packages::deb_of(&debs, &r.image_package()) {
        Some(deb) => packages::deb_version(&deb)?,
        None => version_in(&apt.get(progress)?, &r)?,
    };
    // A source the archive no longer has stops here, before anything is
    // downloaded or created.
    if src.is_none() && source::cached(&r, &version).is_none() {
        source::check_available(&apt.get(progress)?, &r, &version)?;
    }
    // One kpbuild at a time fills a release's caches; every build holds
    // the release (shared) while it runs, so a prune leaves it alone.
    crate::files::create_dir_all(&debian)?;
    let lock_path = debian.join(format!("{}.lock", r.name));
    let get_apt = || apt.get(progress);
    let mut fetched_src = None;
    let release_hold = crate::cache::hold(&lock_path, &base.join(packages::DONE), || {
        crate::files::create_dir_all(&debs)?;
        // The source downloads and unpacks beside the packages; the two
        // join before anything needs both.
        let (s, packages) = std::thread::scope(|scope| {
            let s = scope.spawn(|| source_of(&r, src, &version, &get_apt, progress));
            let packages = packages::fetch(&get_apt, &r, &base, &version, progress);
            (s.join(), packages)
        });
        packages?;
        fetched_src = Some(s.map_err(|_| DebianError::Panicked("source"))??);
        Ok::<(), DebianError>(())
    })?;
    let src = match fetched_src {
        Some(s) => s,
        None => source_of(&r, src, &version, &get_apt, progress)?,
    };
    let mut holds = vec![release_hold];
    if src.starts_with(source::source_dir(&version)) {
        holds.push(source::hold(&version)?);
    }
    kernel_files(&r, &base.join("root"), src, version, holds)
}

/// The caller's source tree, else the release's own, downloaded and
/// unpacked when missing.
fn source_of(
    r: &Release,
    src: Option<&std::path::Path>,
    version: &str,
    apt: &dyn Fn() -> Result<Apt, DebianError>,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, DebianError> {
    match src {
        Some(s) => Ok(s.to_path_buf()),
        None => source::ensure(r, version, apt, progress),
    }
}

/// The files of an extracted release, each checked to exist.
fn kernel_files(
    r: &Release,
    root: &std::path::Path,
    src: PathBuf,
    version: String,
    holds: Vec<crate::cache::Hold>,
) -> Result<DebianKernel, DebianError> {
    let release = &r.name;
    let need = |p: PathBuf| {
        if p.exists() {
            Ok(p)
        } else {
            Err(DebianError::Missing(p))
        }
    };
    Ok(DebianKernel {
        src: need(src)?,
        config: need(root.join(format!("boot/config-{release}")))?,
        vmlinux: need(root.join(format!("usr/lib/debug/boot/vmlinux-{release}")))?,
        vmlinuz: need(root.join(format!("boot/vmlinuz-{release}")))?,
        headers: need(root.join(format!("usr/src/linux-headers-{release}")))?,
        modules: need(root.join(r.suite.modules_dir()).join(release))?,
        version,
        suite: r.suite,
        holds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_release_names_the_known_ones() {
        let e = DebianError::UnknownRelease {
            release: "6.12.999+deb12-cloud-amd64".into(),
            series: "6.12".into(),
            suite: Suite::Bookworm.name(),
            known: vec![
                "6.12.107+deb12-cloud-amd64".into(),
                "6.12.118+deb12-cloud-amd64".into(),
            ],
        }
        .to_string();
        assert_eq!(
            e,
            "6.12.999+deb12-cloud-amd64: apt knows no such kernel; known 6.12 releases (Debian 12): 6.12.107+deb12-cloud-amd64, 6.12.118+deb12-cloud-amd64"
        );
        let e = DebianError::UnknownRelease {
            release: "6.1.0-99-amd64".into(),
            series: "6.1".into(),
            suite: Suite::Bookworm.name(),
            known: Vec::new(),
        }
        .to_string();
        assert!(e.contains("none (has `apt-get update` run?)"), "{e}");
    }

    #[test]
    fn a_source_version_gone_names_package_and_versions() {
        let e = DebianError::SourceVersionGone {
            package: "linux-source-6.12".into(),
            version: "6.12.117-1".into(),
            release: "6.12.117+deb13-cloud-amd64".into(),
            available: vec!["6.12.118-1".into()],
        }
        .to_string();
        assert!(
            e.starts_with("linux-source-6.12=6.12.117-1 (the source of 6.12.117+deb13-cloud-amd64) is no longer in the archive")
                && e.contains("[6.12.118-1]"),
            "{e}"
        );
    }
}
