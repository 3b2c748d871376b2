//! A release's binary packages: downloaded (`apt-get download`) into
//! `CACHE/debian/RELEASE/debs` and extracted into `CACHE/debian/RELEASE/root`,
//! only what a livepatch build needs: vmlinuz, config and modules from
//! `linux-image-RELEASE-unsigned`, the unstripped vmlinux from
//! `linux-image-RELEASE-dbg`, and the module build tree from
//! `linux-headers-RELEASE` with its `-common` and `linux-kbuild` packages
//! (absolute paths inside fixed up to point into the extraction).

use super::DebianError;
use super::archive::Apt;
use super::release::Release;
use crate::files::{FileError, PathContext};
use crate::process::{ProcessError, Producer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The marker of a finished extraction; its name says the layout, so a
/// cache from before modules were extracted is extracted again.
pub(super) const DONE: &str = ".kpbuild-extracted-2";

fn run(cmd: &mut Command) -> Result<String, ProcessError> {
    crate::process::run(cmd).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The `.deb` of `package` (`NAME` or `NAME=VERSION`) in `dir`, if downloaded.
pub(super) fn deb_of(dir: &Path, package: &str) -> Option<PathBuf> {
    let (name, version) = match package.split_once('=') {
        Some((n, v)) => (n, Some(v.replace(':', "%3a"))),
        None => (package, None),
    };
    let prefix = match &version {
        Some(v) => format!("{name}_{v}_"),
        None => format!("{name}_"),
    };
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

/// The version of a downloaded `.deb`.
pub(super) fn deb_version(deb: &Path) -> Result<String, DebianError> {
    Ok(
        run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?
            .trim()
            .to_string(),
    )
}

/// Downloads `packages` missing from `dir`, saying what and how big. They
/// download into `dir/partial` and move into `dir` only once apt-get has
/// checked them, so a cut-off download never looks downloaded.
pub(super) fn download(
    apt: &Apt,
    dir: &Path,
    packages: &[String],
    progress: &dyn Fn(&str),
) -> Result<(), DebianError> {
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| deb_of(dir, p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut total = 0u64;
    for p in &missing {
        let size = apt.size(p);
        if size == 0 {
            let name = p.split_once('=').map_or(p.as_str(), |(n, _)| n);
            apt.field(name, "Package")?;
        }
        total += size;
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    progress(&format!(
        "downloading {} ({:.0} MB) into {}",
        names.join(" "),
        total as f64 / 1e6,
        dir.display()
    ));
    let partial = dir.join("partial");
    let _ = std::fs::remove_dir_all(&partial);
    crate::files::create_dir_all(&partial)?;
    run(apt
        .command("apt-get")
        .arg("download")
        .arg("-q")
        .args(&names)
        .current_dir(&partial))
    .map_err(|source| DebianError::Download {
        packages: names.join(" "),
        root: run(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0"),
        source: Box::new(source),
    })?;
    for e in std::fs::read_dir(&partial).at(&partial)?.flatten() {
        let to = dir.join(e.file_name());
        std::fs::rename(e.path(), &to).at(&to)?;
    }
    let _ = std::fs::remove_dir_all(&partial);
    for p in &missing {
        if deb_of(dir, p).is_none() {
            return Err(DebianError::NotDownloaded(p.to_string()));
        }
    }
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

/// Downloads (when missing) and extracts the release's packages into
/// `base/root`.
pub(super) fn fetch(
    apt: &dyn Fn() -> Result<Apt, DebianError>,
    r: &Release,
    base: &Path,
    version: &str,
    progress: &dyn Fn(&str),
) -> Result<(), DebianError> {
    let release = r.name.as_str();
    let debs = base.join("debs");
    let root = base.join("root");
    let image = format!("linux-image-{release}-unsigned");
    let dbg = format!("linux-image-{release}-dbg");
    let headers = format!("linux-headers-{release}");
    let deb = |p: &str| deb_of(&debs, p).ok_or_else(|| DebianError::NotDownloaded(p.to_string()));
    if base.join(DONE).exists() {
        return Ok(());
    }
    let apt = apt()?;
    download(&apt, &debs, &[image.clone(), headers.clone()], progress)?;
    let headers_deb = deb(&headers)?;
    let mut more = depends(&headers_deb, "linux-headers-")?;
    more.extend(depends(&headers_deb, "linux-kbuild-")?);
    more.push(dbg.clone());
    download(&apt, &debs, &more, progress)?;

    progress(&format!("extracting {release} into {}", root.display()));
    let _ = std::fs::remove_dir_all(&root);
    crate::files::create_dir_all(&root)?;
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
                &root,
            )
        });
        let rest = extract_rest(&image_deb, r.suite.modules_dir(), &others, &root);
        (vmlinux.join(), rest)
    });
    a.map_err(|_| DebianError::Panicked("vmlinux"))??;
    b?;
    fix_headers(&root, release)?;
    let done = base.join(DONE);
    std::fs::write(&done, version)
        .at(&done)
        .map_err(DebianError::from)
}

/// The image's boot files and modules, and the whole header packages.
fn extract_rest(
    image_deb: &Path,
    modules: &str,
    others: &[PathBuf],
    root: &Path,
) -> Result<(), DebianError> {
    crate::process::pipe(
        Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(image_deb),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(root)
            .arg("./boot")
            .arg(format!("./{modules}")),
        Producer::MustSucceed,
    )
    .map_err(|source| DebianError::Unpack {
        tarball: image_deb.to_path_buf(),
        source: Box::new(source),
    })?;
    for d in others {
        run(Command::new("dpkg-deb").arg("-x").arg(d).arg(root)).map_err(|source| {
            DebianError::Unpack {
                tarball: d.clone(),
                source: Box::new(source),
            }
        })?;
    }
    Ok(())
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

    #[test]
    fn a_deb_is_found_by_name_or_name_and_version() {
        let dir = std::env::temp_dir().join(format!("kpbuild-deb-of-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let deb = dir.join("linux-source-6.12_6.12.115-2~deb12u1_all.deb");
        std::fs::write(&deb, b"").unwrap();
        assert_eq!(deb_of(&dir, "linux-source-6.12"), Some(deb.clone()));
        assert_eq!(
            deb_of(&dir, "linux-source-6.12=6.12.115-2~deb12u1"),
            Some(deb)
        );
        assert_eq!(deb_of(&dir, "linux-source-6.12=6.12.118-1~deb12u1"), None);
        assert_eq!(deb_of(&dir, "linux-source-6.1"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
