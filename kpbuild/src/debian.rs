//! `--debian RELEASE`: a Debian kernel described by its packages. The
//! image, debug and headers packages are downloaded (`apt-get download`)
//! into `CACHE/debian/RELEASE/debs`, and only what a livepatch build needs
//! is extracted: vmlinuz, config and modules from `linux-image-RELEASE-unsigned`, the
//! unstripped vmlinux from `linux-image-RELEASE-dbg`, and the module build
//! tree from `linux-headers-RELEASE` with its `-common` and `linux-kbuild`
//! packages (absolute paths inside fixed up to point into the extraction).
//! The source is `linux-source-X.Y`'s tarball, which must be the same
//! version as the kernel packages.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn run(cmd: &mut Command) -> Result<String, String> {
    crate::process::run(cmd)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|e| e.to_string())
}

fn sh(script: &str) -> Result<String, String> {
    run(Command::new("sh").arg("-c").arg(script))
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
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
fn apt_field(package: &str, field: &str) -> Result<String, String> {
    let show = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    let prefix = format!("{field}: ");
    String::from_utf8_lossy(&show.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .ok_or_else(|| {
            format!(
                "package {package} is not known to apt: is the release right, and has `apt-get update` run (as root)?"
            )
        })
}

/// Downloads `packages` missing from `dir`, saying what and how big.
fn download(dir: &Path, packages: &[String], progress: &dyn Fn(&str)) -> Result<(), String> {
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
    .map_err(|e| {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        format!(
            "cannot download {} ({}): {e}",
            names.join(" "),
            if root {
                "no network?"
            } else {
                "not root and/or no network: run `apt-get update` as root and retry"
            }
        )
    })?;
    Ok(())
}

/// The `Depends` names of a `.deb` starting with `prefix`.
fn depends(deb: &Path, prefix: &str) -> Result<Vec<String>, String> {
    let text = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"))?;
    Ok(text
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
        .filter(|d| d.starts_with(prefix))
        .collect())
}

/// `dpkg --compare-versions a gt b`.
fn version_newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// The newest Debian cloud kernel of a series (`6.12`) whose package
/// version the archive also has for `linux-source-SERIES`, from apt's
/// lists: (release, version), e.g. (`6.12.117+deb12-cloud-amd64`,
/// `6.12.117-1~deb12u1`).
pub fn newest_cloud_release(series: &str) -> Result<(String, String), String> {
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
    best.ok_or_else(|| {
        format!(
            "no Debian cloud kernel of {series} has a version {source} also has: {source} has [{}], the images [{}] (has `apt-get update` run?)",
            source_versions.join(", "),
            images.join(", ")
        )
    })
}

/// Downloads (when missing) and extracts a Debian kernel release.
pub fn fetch(release: &str, progress: &dyn Fn(&str)) -> Result<DebianKernel, String> {
    if release.is_empty() || release.contains('/') || release.starts_with('.') {
        return Err(format!("{release:?}: not a kernel release"));
    }
    let base = kimage::cache_root().join("debian").join(release);
    let debs = base.join("debs");
    let image = format!("linux-image-{release}-unsigned");
    // The source must be the kernel's own version: checked before any download.
    let version = match deb_of(&debs, &image) {
        Some(deb) => run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?,
        None => apt_field(&image, "Version")?,
    }
    .trim()
    .to_string();
    let series: String = release.split('.').take(2).collect::<Vec<_>>().join(".");
    let source_pkg = format!("linux-source-{series}");
    let source_version = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", &source_pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!("{source_pkg} is not installed: install version {version} (the kernel's)")
        })?;
    if source_version != version {
        return Err(format!(
            "version mismatch: {source_pkg} is {source_version}, but {image} is {version}; the source must be the kernel's own"
        ));
    }
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    // One kpbuild at a time fills a release's caches.
    let lock_path = base.with_extension("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;

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
    source.map_err(|_| "the source extraction panicked".to_string())??;

    let need = |p: PathBuf| {
        if p.exists() {
            Ok(p)
        } else {
            Err(format!(
                "{}: missing from the extracted packages",
                p.display()
            ))
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
) -> Result<(), String> {
    let debs = base.join("debs");
    let image = format!("linux-image-{release}-unsigned");
    let dbg = format!("linux-image-{release}-dbg");
    let headers = format!("linux-headers-{release}");
    download(&debs, &[image.clone(), headers.clone()], progress)?;
    let headers_deb = deb_of(&debs, &headers).ok_or("headers package missing")?;
    let mut more = depends(&headers_deb, "linux-headers-")?;
    more.extend(depends(&headers_deb, "linux-kbuild-")?);
    more.push(dbg.clone());
    download(&debs, &more, progress)?;
    let deb = |p: &str| deb_of(&debs, p).ok_or_else(|| format!("{p}: not downloaded"));

    // The marker names the layout: a cache from before modules were
    // extracted is extracted again.
    let done = base.join(".kpbuild-extracted-2");
    if done.exists() {
        return Ok(());
    }
    progress(&format!("extracting {release} into {}", root.display()));
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
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
            sh(&format!(
                "dpkg-deb --fsys-tarfile {} | tar -x -C {} ./boot ./lib/modules",
                q(&image_deb),
                q(root)
            ))?;
            for d in &others {
                run(Command::new("dpkg-deb").arg("-x").arg(d).arg(root))?;
            }
            Ok::<(), String>(())
        })();
        (vmlinux.join(), rest)
    });
    a.map_err(|_| "the vmlinux extraction panicked".to_string())??;
    b?;
    fix_headers(root, release)?;
    std::fs::write(&done, version).map_err(|e| format!("{}: {e}", done.display()))
}

/// Extracts one member of a package's data archive into `root`, stopping
/// as soon as it is out: the debug package's vmlinux comes early in a
/// 1.8 GB archive, so most of it is never decompressed.
fn extract_member(deb: &Path, member: &str, root: &Path) -> Result<(), String> {
    use std::process::Stdio;
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let stdout = data.stdout.take().expect("piped");
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(root)
        .arg("--occurrence=1")
        .arg(member)
        .stdin(stdout)
        .output();
    // tar stops reading once the member is out; dpkg-deb then dies of the
    // closed pipe, which is expected.
    let _ = data.kill();
    let _ = data.wait();
    let tar = tar.map_err(|e| format!("cannot run tar: {e}"))?;
    let path = root.join(member);
    if !tar.status.success() || !path.is_file() {
        return Err(format!(
            "{}: no {member} in it ({}{})",
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    Ok(())
}

/// Unpacks the source tarball into `base` (multi-threaded xz), then marks
/// it done.
fn extract_source(tarball: &Path, base: &Path, done: &Path, version: &str) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir_all(base).map_err(|e| format!("{}: {e}", base.display()))?;
    sh(&format!(
        "xz -T0 -dc {} | tar -x -C {}",
        q(tarball),
        q(base)
    ))
    .map_err(|e| format!("unpacking {}: {e}", tarball.display()))?;
    std::fs::write(done, version).map_err(|e| format!("{}: {e}", done.display()))
}

/// Points the extracted headers at the extraction instead of `/usr/...`:
/// the arch headers' Makefile includes the `-common` one by absolute path,
/// and absolute symlinks are re-rooted.
fn fix_headers(root: &Path, release: &str) -> Result<(), String> {
    let arch = root.join(format!("usr/src/linux-headers-{release}"));
    let makefile = arch.join("Makefile");
    let text =
        std::fs::read_to_string(&makefile).map_err(|e| format!("{}: {e}", makefile.display()))?;
    let fixed = rebase_includes(&text, root);
    std::fs::write(&makefile, fixed).map_err(|e| format!("{}: {e}", makefile.display()))?;
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
                let target = std::fs::read_link(&p).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    let inside = root.join(target.strip_prefix("/").unwrap_or(&target));
                    std::fs::remove_file(&p).map_err(|e| e.to_string())?;
                    std::os::unix::fs::symlink(&inside, &p).map_err(|e| e.to_string())?;
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
