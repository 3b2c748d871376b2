//! `--debian RELEASE`: a Debian kernel described by its packages. The
//! image, debug and headers packages are downloaded (`apt-get download`)
//! into `CACHE/debian/RELEASE/debs`, and only what a livepatch build needs
//! is extracted: vmlinuz, config and modules from `linux-image-RELEASE-unsigned`, the
//! unstripped vmlinux from `linux-image-RELEASE-dbg`, and the module build
//! tree from `linux-headers-RELEASE` with its `-common` and `linux-kbuild`
//! packages (absolute paths inside fixed up to point into the extraction).
//! The source is `linux-source-X.Y`'s tarball, which must be the same
//! version as the kernel packages.

use crate::files::{FileError, PathContext};
use crate::process::{ProcessError, Producer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Debian kernel that cannot be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebianError {
    /// Not a kernel release.
    #[error("{0:?}: not a kernel release")]
    NotARelease(String),
    /// apt-cache could not be started.
    #[error("cannot run apt-cache: {0}")]
    AptCache(std::io::Error),
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
    /// No cloud kernel of the series has a matching source package.
    #[error(
        "no Debian cloud kernel of {series} has a version {source_package} also has: {source_package} has [{}], the images [{}] (has `apt-get update` run?)",
        source_versions.join(", "),
        images.join(", ")
    )]
    NoCloudKernel {
        /// The series (`6.12`).
        series: String,
        /// `linux-source-SERIES`.
        source_package: String,
        /// Its versions.
        source_versions: Vec<String>,
        /// The images' releases and versions.
        images: Vec<String>,
    },
    /// The source package is not installed.
    #[error("{package} is not installed: install version {version} (the kernel's)")]
    SourceNotInstalled {
        /// `linux-source-X.Y`.
        package: String,
        /// The kernel's version.
        version: String,
    },
    /// The source package is another version.
    #[error(
        "version mismatch: {package} is {source_version}, but {image} is {version}; the source must be the kernel's own"
    )]
    VersionMismatch {
        /// `linux-source-X.Y`.
        package: String,
        /// Its version.
        source_version: String,
        /// The image package.
        image: String,
        /// Its version.
        version: String,
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
    /// The source tarball could not be unpacked.
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
    /// The installed modules (`/lib/modules/RELEASE`).
    pub modules: PathBuf,
    /// The kernel packages' version.
    pub version: String,
}

fn run(cmd: &mut Command) -> Result<String, ProcessError> {
    crate::process::run(cmd).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The `.deb` of `package` in `dir`, if downloaded.
fn deb_of(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// A field of the candidate version of `package` in apt's lists.
fn apt_field(package: &str, field: &str) -> Result<String, DebianError> {
    let show = match crate::process::run(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        package,
    ])) {
        // An unknown package is a failure with nothing on stdout.
        Ok(out) | Err(ProcessError::Failed { output: out, .. }) => out,
        Err(ProcessError::Spawn { source, .. }) => return Err(DebianError::AptCache(source)),
    };
    let prefix = format!("{field}: ");
    String::from_utf8_lossy(&show.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .ok_or_else(|| DebianError::UnknownPackage(package.to_string()))
}

/// Downloads `packages` missing from `dir`, saying what and how big.
fn download(dir: &Path, packages: &[String], progress: &dyn Fn(&str)) -> Result<(), DebianError> {
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| deb_of(dir, p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut total = 0u64;
    for p in &missing {
        total += apt_field(p, "Size")?.trim().parse::<u64>().unwrap_or(0);
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    progress(&format!(
        "downloading {} ({:.0} MB) into {}",
        names.join(" "),
        total as f64 / 1e6,
        dir.display()
    ));
    run(Command::new("apt-get")
        .arg("download")
        .arg("-q")
        .args(&names)
        .current_dir(dir))
    .map_err(|source| DebianError::Download {
        packages: names.join(" "),
        root: run(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0"),
        source: Box::new(source),
    })?;
    Ok(())
}

/// The `Depends` names of a `.deb` starting with `prefix`.
fn depends(deb: &Path, prefix: &str) -> Result<Vec<String>, DebianError> {
    let text = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"))?;
    Ok(text
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
        .filter(|d| d.starts_with(prefix))
        .collect())
}

/// `dpkg --compare-versions a gt b`.
fn version_newer(a: &str, b: &str) -> bool {
    crate::process::run(Command::new("dpkg").args(["--compare-versions", a, "gt", b])).is_ok()
}

/// The newest Debian cloud kernel of a series (`6.12`) whose package
/// version the archive also has for `linux-source-SERIES`, from apt's
/// lists: (release, version), e.g. (`6.12.117+deb12-cloud-amd64`,
/// `6.12.117-1~deb12u1`).
pub fn newest_cloud_release(series: &str) -> Result<(String, String), DebianError> {
    let source = format!("linux-source-{series}");
    let madison = run(Command::new("apt-cache").arg("madison").arg(&source))?;
    let source_versions: Vec<String> = madison
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string()))
        .collect();
    let names = run(Command::new("apt-cache")
        .arg("pkgnames")
        .arg(format!("linux-image-{series}")))?;
    let mut best: Option<(String, String)> = None;
    let mut images = Vec::new();
    for name in names.lines().map(str::trim) {
        let Some(release) = name
            .strip_prefix("linux-image-")
            .and_then(|n| n.strip_suffix("-unsigned"))
            .filter(|r| r.ends_with("-cloud-amd64"))
        else {
            continue;
        };
        let show = run(Command::new("apt-cache").arg("show").arg(name))?;
        for version in show.lines().filter_map(|l| l.strip_prefix("Version: ")) {
            images.push(format!("{release} {version}"));
            if source_versions.iter().any(|v| v == version)
                && best.as_ref().is_none_or(|(_, b)| version_newer(version, b))
            {
                best = Some((release.to_string(), version.to_string()));
            }
        }
    }
    best.ok_or(DebianError::NoCloudKernel {
        series: series.to_string(),
        source_package: source,
        source_versions,
        images,
    })
}

/// The kernel packages' version, checked against the installed
/// `linux-source-SERIES` before any download: (version, source package).
fn checked_version(release: &str, debs: &Path) -> Result<(String, String), DebianError> {
    let image = format!("linux-image-{release}-unsigned");
    let version = match deb_of(debs, &image) {
        Some(deb) => run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?,
        None => apt_field(&image, "Version")?,
    }
    .trim()
    .to_string();
    let series: String = release.split('.').take(2).collect::<Vec<_>>().join(".");
    let package = format!("linux-source-{series}");
    let source_version = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", &package]))
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| DebianError::SourceNotInstalled {
            package: package.clone(),
            version: version.clone(),
        })?;
    if source_version != version {
        return Err(DebianError::VersionMismatch {
            package,
            source_version,
            image,
            version,
        });
    }
    Ok((version, package))
}

/// Downloads (when missing) and extracts a Debian kernel release.
pub fn fetch(release: &str, progress: &dyn Fn(&str)) -> Result<DebianKernel, DebianError> {
    if release.is_empty() || release.contains('/') || release.starts_with('.') {
        return Err(DebianError::NotARelease(release.to_string()));
    }
    let base = kimage::cache_root().join("debian").join(release);
    let debs = base.join("debs");
    // The source must be the kernel's own version: checked before any download.
    let (version, source_pkg) = checked_version(release, &debs)?;
    crate::files::create_dir_all(&debs)?;
    // One kpbuild at a time fills a release's caches.
    let lock_path = base.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;

    // The source tarball is local (linux-source-X.Y): it is unpacked while
    // the packages download, and the two join before anything needs both.
    let src_base = kimage::cache_root()
        .join("debian")
        .join(format!("source-{}", version.replace('~', "_")));
    let src = src_base.join(&source_pkg);
    let src_done = src_base.join(".kpbuild-extracted");
    let tarball = PathBuf::from(format!("/usr/src/{source_pkg}.tar.xz"));
    let source_needed = !src_done.exists();
    if source_needed {
        progress(&format!(
            "extracting {} into {} (beside the downloads)",
            tarball.display(),
            src_base.display()
        ));
    }
    let root = base.join("root");
    let (source, packages) = std::thread::scope(|scope| {
        let source = scope.spawn(|| {
            if source_needed {
                extract_source(&tarball, &src_base, &src_done, &version)
            } else {
                Ok(())
            }
        });
        let packages = fetch_packages(release, &base, &root, &version, progress);
        (source.join(), packages)
    });
    packages?;
    source.map_err(|_| DebianError::Panicked("source"))??;

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
        modules: need(root.join(format!("lib/modules/{release}")))?,
        version,
    })
}

/// Downloads (when missing) and extracts the release's packages into `root`.
fn fetch_packages(
    release: &str,
    base: &Path,
    root: &Path,
    version: &str,
    progress: &dyn Fn(&str),
) -> Result<(), DebianError> {
    let debs = base.join("debs");
    let image = format!("linux-image-{release}-unsigned");
    let dbg = format!("linux-image-{release}-dbg");
    let headers = format!("linux-headers-{release}");
    download(&debs, &[image.clone(), headers.clone()], progress)?;
    let deb = |p: &str| deb_of(&debs, p).ok_or_else(|| DebianError::NotDownloaded(p.to_string()));
    let headers_deb = deb(&headers)?;
    let mut more = depends(&headers_deb, "linux-headers-")?;
    more.extend(depends(&headers_deb, "linux-kbuild-")?);
    more.push(dbg.clone());
    download(&debs, &more, progress)?;

    // The marker names the layout: a cache from before modules were
    // extracted is extracted again.
    let done = base.join(".kpbuild-extracted-2");
    if done.exists() {
        return Ok(());
    }
    progress(&format!("extracting {release} into {}", root.display()));
    let _ = std::fs::remove_dir_all(root);
    crate::files::create_dir_all(root)?;
    let (image_deb, dbg_deb) = (deb(&image)?, deb(&dbg)?);
    let others: Vec<PathBuf> = std::iter::once(&headers)
        .chain(&more)
        .filter(|p| **p != dbg)
        .map(|p| deb(p))
        .collect::<Result<_, _>>()?;
    // The three unpack independently; the debug package dominates.
    let (a, b) = std::thread::scope(|scope| {
        let vmlinux = scope.spawn(|| {
            extract_member(
                &dbg_deb,
                &format!("./usr/lib/debug/boot/vmlinux-{release}"),
                root,
            )
        });
        let rest = (|| {
            crate::process::pipe(
                Command::new("dpkg-deb")
                    .arg("--fsys-tarfile")
                    .arg(&image_deb),
                Command::new("tar")
                    .arg("-x")
                    .arg("-C")
                    .arg(root)
                    .args(["./boot", "./lib/modules"]),
                Producer::MustSucceed,
            )?;
            for d in &others {
                run(Command::new("dpkg-deb").arg("-x").arg(d).arg(root))?;
            }
            Ok::<(), DebianError>(())
        })();
        (vmlinux.join(), rest)
    });
    a.map_err(|_| DebianError::Panicked("vmlinux"))??;
    b?;
    fix_headers(root, release)?;
    std::fs::write(&done, version)
        .at(&done)
        .map_err(DebianError::from)
}

/// Extracts one member of a package's data archive into `root`, stopping
/// as soon as it is out: the debug package's vmlinux comes early in a
/// 1.8 GB archive, so most of it is never decompressed.
fn extract_member(deb: &Path, member: &str, root: &Path) -> Result<(), DebianError> {
    // tar stops reading once the member is out; dpkg-deb is then stopped.
    let tar = crate::process::pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(root)
            .arg("--occurrence=1")
            .arg(member),
        Producer::MayBeCut,
    );
    let output = match tar {
        Ok(output) | Err(ProcessError::Failed { output, .. }) => output,
        Err(e) => return Err(e.into()),
    };
    if !output.status.success() || !root.join(member).is_file() {
        return Err(DebianError::NoMember {
            deb: deb.to_path_buf(),
            member: member.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Unpacks the source tarball into `base` (multi-threaded xz), then marks
/// it done.
fn extract_source(
    tarball: &Path,
    base: &Path,
    done: &Path,
    version: &str,
) -> Result<(), DebianError> {
    let _ = std::fs::remove_dir_all(base);
    crate::files::create_dir_all(base)?;
    crate::process::pipe(
        Command::new("xz").arg("-T0").arg("-dc").arg(tarball),
        Command::new("tar").arg("-x").arg("-C").arg(base),
        Producer::MustSucceed,
    )
    .map_err(|source| DebianError::Unpack {
        tarball: tarball.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(std::fs::write(done, version).at(done)?)
}

/// Points the extracted headers at the extraction instead of `/usr/...`:
/// the arch headers' Makefile includes the `-common` one by absolute path,
/// and absolute symlinks are re-rooted.
fn fix_headers(root: &Path, release: &str) -> Result<(), FileError> {
    let arch = root.join(format!("usr/src/linux-headers-{release}"));
    let makefile = arch.join("Makefile");
    let text = crate::files::read_to_string(&makefile)?;
    let fixed = rebase_includes(&text, root);
    std::fs::write(&makefile, fixed).at(&makefile)?;
    let mut stack = vec![root.join("usr/src"), root.join("usr/lib")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).at(&p)?;
                if target.is_absolute() {
                    let inside = root.join(target.strip_prefix("/").unwrap_or(&target));
                    std::fs::remove_file(&p).at(&p)?;
                    std::os::unix::fs::symlink(&inside, &p).at(&p)?;
                }
            } else if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

/// `include /usr/...` lines re-rooted under `root`.
fn rebase_includes(text: &str, root: &Path) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("include /") {
            Some(rest) => format!("include {}", root.join(rest).display()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_rebased() {
        assert_eq!(
            rebase_includes(
                "include /usr/src/linux-headers-6.12.117+deb12-common/Makefile\n",
                Path::new("/c/root")
            ),
            "include /c/root/usr/src/linux-headers-6.12.117+deb12-common/Makefile\n"
        );
    }
}
