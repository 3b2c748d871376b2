//! The cached test kernel: Debian's `linux-source` tarball, `tinyconfig` plus a
//! fragment from the repository, built once per (source version, fragment) key.
//!
//! Layout: `CACHE/kernels/KEY/{src,build}` where `build` is the `O=` tree that
//! keeps `.cmd` files, `vmlinux`, `Module.symvers` and `System.map` for the
//! later `kpbuild build` steps. Stage stamps in `KEY/` make an interrupted build
//! resume instead of starting over, and a finished one a no-op.

use crate::{Error, run_logged};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options that must be set in the final `.config` whatever the fragment says.
/// Each inner slice is a set of alternatives, one of which must be `=y`.
const REQUIRED: &[&[&str]] = &[
    &["CONFIG_LIVEPATCH"],
    &[
        "CONFIG_DYNAMIC_FTRACE_WITH_REGS",
        "CONFIG_DYNAMIC_FTRACE_WITH_ARGS",
    ],
    &["CONFIG_UNWINDER_ORC"],
    &["CONFIG_MODULES"],
    &["CONFIG_MODULE_UNLOAD"],
    &["CONFIG_KALLSYMS_ALL"],
];

/// The Debian package whose tarball the test kernels are built from.
pub const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// The tarball [`SOURCE_PACKAGE`] installs.
pub const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";

/// What to build: a source tarball and a config fragment.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// The `linux-source-X.Y.tar.xz` tarball.
    pub tarball: PathBuf,
    /// Version of the source (the Debian package version), part of the cache key.
    pub source_version: String,
    /// Fragment applied on top of `tinyconfig`.
    pub fragment: PathBuf,
    /// Patches (`-p1`) applied to the extracted source before building:
    /// the test bed's own code. Part of the cache key.
    pub patches: Vec<PathBuf>,
    /// More fragments applied after `fragment`, in order (a test-kernel
    /// variant, e.g. module signing). Part of the cache key when non-empty.
    pub extra_fragments: Vec<PathBuf>,
    /// Files copied into the build tree before `make`: (source, path relative
    /// to the `O=` tree), e.g. a certificate named by `CONFIG_SYSTEM_TRUSTED_KEYS`
    /// (kbuild runs in the `O=` tree, so a relative name is looked up there
    /// first, then in the source tree through `VPATH`). Part of the cache key
    /// (name and contents) when non-empty.
    pub build_files: Vec<(PathBuf, PathBuf)>,
    /// Cache root: [`kimage::cache_root`].
    pub cache: PathBuf,
    /// Parallel make jobs.
    pub jobs: usize,
}

/// A finished test-kernel build.
#[derive(Debug, Clone)]
pub struct KernelBuild {
    /// Cache key: sanitised source version and a fragment hash.
    pub key: String,
    /// Source tree (pristine: nothing writes into it after extraction).
    pub src: PathBuf,
    /// `O=` build tree.
    pub build: PathBuf,
}

impl KernelBuild {
    /// The bootable image.
    pub fn bzimage(&self) -> PathBuf {
        self.build.join("arch/x86/boot/bzImage")
    }
    /// The linked, unstripped kernel.
    pub fn vmlinux(&self) -> PathBuf {
        self.build.join("vmlinux")
    }
    /// A module built in the tree, by its path relative to the build tree.
    pub fn module(&self, relative: &str) -> PathBuf {
        self.build.join(relative)
    }
}

impl KernelSpec {
    /// The cache key: `VERSION-HASH12` where HASH is SHA-256 of the fragment
    /// followed by each patch.
    pub fn key(&self) -> Result<String, Error> {
        let mut hasher = Sha256::new();
        hasher.update(read(&self.fragment)?);
        for p in &self.patches {
            hasher.update(read(p)?);
        }
        // Absent extras leave the key of a plain test kernel unchanged.
        for f in &self.extra_fragments {
            hasher.update(b"\0kpbuild-extra-fragment\0");
            hasher.update(read(f)?);
        }
        for (source, dest) in &self.build_files {
            hasher.update(b"\0kpbuild-build-file\0");
            hasher.update(dest.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
            hasher.update(read(source)?);
        }
        let digest = hasher.finalize();
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let version: String = self
            .source_version
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(format!("{version}-{hex}"))
    }

    /// The plain test kernel `cargo xtask kernel` builds and the tests find:
    /// Debian's installed `linux-source-6.12`, `tinyconfig` plus
    /// `fixtures/kernel/livepatch.config`, with the test bed's own code
    /// (`fixtures/kernel/testbed.patch`), cached under [`kimage::cache_root`].
    pub fn test_kernel() -> Result<KernelSpec, Error> {
        let fixtures = crate::repo_root().join("fixtures");
        Ok(KernelSpec {
            source_version: crate::packages::version(SOURCE_PACKAGE)?,
            tarball: PathBuf::from(SOURCE_TARBALL),
            fragment: fixtures.join("kernel/livepatch.config"),
            patches: vec![fixtures.join("kernel/testbed.patch")],
            extra_fragments: vec![],
            build_files: vec![],
            cache: kimage::cache_root(),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    /// The test kernel's module-signing variant: `fixtures/kernel/signing.config`
    /// on top (signatures enforced, SHA-256) and the test certificate
    /// `fixtures/signing/test-cert.pem` built into its trusted keyring.
    pub fn signing_kernel() -> Result<KernelSpec, Error> {
        let fixtures = crate::repo_root().join("fixtures");
        Ok(KernelSpec {
            extra_fragments: vec![fixtures.join("kernel/signing.config")],
            build_files: vec![(
                fixtures.join("signing/test-cert.pem"),
                PathBuf::from("kpbuild-test-signing.pem"),
            )],
            ..KernelSpec::test_kernel()?
        })
    }

    /// Where this spec's build lives, built or not.
    fn layout(&self) -> Result<(PathBuf, KernelBuild), Error> {
        let key = self.key()?;
        let root = self.cache.join("kernels").join(&key);
        let kb = KernelBuild {
            key,
            src: root.join("src"),
            build: root.join("build"),
        };
        Ok((root, kb))
    }

    /// The finished build of this spec, if there is one; nothing is built.
    pub fn built(&self) -> Result<Option<KernelBuild>, Error> {
        let (root, kb) = self.layout()?;
        Ok(finished(&root, &kb).then_some(kb))
    }

    /// Returns the cached build for this spec, building whatever is missing.
    ///
    /// `progress` receives one human-readable line at each stage and every few
    /// seconds while `make` runs.
    pub fn ensure_built(&self, progress: &mut dyn FnMut(&str)) -> Result<KernelBuild, Error> {
        let (root, kb) = self.layout()?;
        if finished(&root, &kb) {
            return Ok(kb);
        }
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        // Held until the build is done.
        let _lock = wait_for_lock(&root, &kb.key, progress)?;
        if finished(&root, &kb) {
            return Ok(kb);
        }
        self.extract(&root, &kb, progress)?;
        self.configure(&root, &kb, progress)?;
        // Checked on every build attempt: a fragment option that silently
        // dropped out is an error, not a different test kernel.
        let mut fragments = read(&self.fragment)?;
        for f in &self.extra_fragments {
            fragments.extend_from_slice(b"\n");
            fragments.extend_from_slice(&read(f)?);
        }
        verify_config(&fragments, &read(&kb.build.join(".config"))?)?;
        self.copy_build_files(&kb)?;
        progress(&format!(
            "kernel {}: make -j{} bzImage modules (several minutes on first run)",
            kb.key, self.jobs
        ));
        let log = root.join("make.log");
        run_make_with_progress(
            make(&kb)
                .arg(format!("-j{}", self.jobs))
                .args(["bzImage", "modules"]),
            &log,
            progress,
        )?;
        touch(&stamp(&root, "built"))?;
        progress(&format!(
            "kernel {}: built in {}",
            kb.key,
            kb.build.display()
        ));
        Ok(kb)
    }

    /// The pristine source: the tarball extracted, the patches applied.
    fn extract(
        &self,
        root: &Path,
        kb: &KernelBuild,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        if stamp(root, "extracted").exists() {
            return Ok(());
        }
        let key = &kb.key;
        progress(&format!(
            "kernel {key}: extracting {}",
            self.tarball.display()
        ));
        if kb.src.exists() {
            std::fs::remove_dir_all(&kb.src).map_err(|e| Error::io(&kb.src, e))?;
        }
        std::fs::create_dir_all(&kb.src).map_err(|e| Error::io(&kb.src, e))?;
        run_logged(
            Command::new("tar")
                .arg("-xf")
                .arg(&self.tarball)
                .arg("-C")
                .arg(&kb.src)
                .arg("--strip-components=1"),
        )?;
        for patch in &self.patches {
            progress(&format!("kernel {key}: applying {}", patch.display()));
            run_logged(
                Command::new("patch")
                    .args(["-p1", "--batch", "--forward", "-d"])
                    .arg(&kb.src)
                    .arg("-i")
                    .arg(patch),
            )?;
        }
        touch(&stamp(root, "extracted"))
    }

    /// The `.config`: `tinyconfig`, then the fragments, resolved.
    fn configure(
        &self,
        root: &Path,
        kb: &KernelBuild,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        if stamp(root, "configured").exists() {
            return Ok(());
        }
        progress(&format!(
            "kernel {}: tinyconfig + {}",
            kb.key,
            self.fragment.display()
        ));
        std::fs::create_dir_all(&kb.build).map_err(|e| Error::io(&kb.build, e))?;
        run_logged(make(kb).arg("tinyconfig"))?;
        let config = kb.build.join(".config");
        let mut base = read(&config)?;
        base.extend_from_slice(b"\n");
        base.extend_from_slice(&read(&self.fragment)?);
        for f in &self.extra_fragments {
            base.extend_from_slice(b"\n");
            base.extend_from_slice(&read(f)?);
        }
        std::fs::write(&config, base).map_err(|e| Error::io(&config, e))?;
        run_logged(make(kb).arg("olddefconfig"))?;
        touch(&stamp(root, "configured"))
    }

    /// [`KernelSpec::build_files`] into the build tree.
    fn copy_build_files(&self, kb: &KernelBuild) -> Result<(), Error> {
        for (source, dest) in &self.build_files {
            if dest.is_absolute() || dest.components().any(|c| c.as_os_str() == "..") {
                return Err(Error::Config(vec![format!(
                    "build file {}: not a path inside the build tree",
                    dest.display()
                )]));
            }
            let target = kb.build.join(dest);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            std::fs::copy(source, &target).map_err(|e| Error::io(source, e))?;
        }
        Ok(())
    }
}

/// A stage stamp in the key's directory `root`.
fn stamp(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".stamp-{name}"))
}

/// True when the build in `root` finished: nothing is left to do.
fn finished(root: &Path, kb: &KernelBuild) -> bool {
    stamp(root, "built").exists() && kb.bzimage().exists() && kb.vmlinux().exists()
}

/// One builder per key: a second process waits here, then finds the stamps
/// the first one left. The lock is held while the returned file is open.
fn wait_for_lock(
    root: &Path,
    key: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<std::fs::File, Error> {
    let lock_path = lock_path_of(root);
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    if lock.try_lock().is_err() {
        progress(&format!(
            "kernel {key}: another process is building it; waiting"
        ));
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    }
    Ok(lock)
}

/// The lock file of a kernel key's directory `root`: `KEY.lock` beside it.
/// The key has dots in it (`6.12.118-1_deb12u1-…`), so `with_extension`
/// would cut it at the first one and make every key of a series share
/// `6.12.lock`.
pub fn lock_path_of(root: &Path) -> PathBuf {
    let mut name = root.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    root.with_file_name(name)
}

fn make(kb: &KernelBuild) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(&kb.src)
        .arg(format!("O={}", kb.build.display()));
    // Never inherit a caller's make flags: the test kernel is built with its
    // plain flags (a kernel built with per-function sections does not boot).
    cmd.env_remove("MAKEFLAGS")
        .env_remove("KCFLAGS")
        .env_remove("MFLAGS");
    cmd
}

/// Checks that every `=y`/`=m` option of the fragment and every required
/// livepatch option is set in the resolved `.config`.
pub fn verify_config(fragment: &[u8], config: &[u8]) -> Result<(), Error> {
    let config = String::from_utf8_lossy(config);
    let set: std::collections::HashMap<&str, &str> = config
        .lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .collect();
    let mut missing = Vec::new();
    for line in String::from_utf8_lossy(fragment).lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((name, value)) = line.split_once('=')
            && (value == "y" || value == "m")
            && set.get(name) != Some(&value)
        {
            missing.push(format!(
                "{name}={value} (got {})",
                set.get(name).unwrap_or(&"unset")
            ));
        }
    }
    for alternatives in REQUIRED {
        if !alternatives.iter().any(|name| set.get(name) == Some(&"y")) {
            missing.push(format!(
                "{}=y (required for livepatch)",
                alternatives.join(" or ")
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(missing))
    }
}

fn run_make_with_progress(
    cmd: &mut Command,
    log: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let start = Instant::now();
    let mut log_file = std::fs::File::create(log).map_err(|e| Error::io(log, e))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Spawn(format!("{cmd:?}"), e))?;
    // stderr goes to the same log from a helper thread.
    let stderr = child.stderr.take().expect("piped");
    let err_log = log.with_extension("stderr.log");
    let err_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = std::fs::File::create(err_log)?;
        std::io::copy(&mut BufReader::new(stderr), &mut f)?;
        Ok(())
    });
    let mut compiled = 0usize;
    let mut last = Instant::now();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| Error::io(log, e))?;
        writeln!(log_file, "{line}").map_err(|e| Error::io(log, e))?;
        if line.trim_start().starts_with("CC") {
            compiled += 1;
        }
        if last.elapsed() > Duration::from_secs(10) {
            last = Instant::now();
            progress(&format!(
                "kernel: {} s, {compiled} units compiled, last: {}",
                start.elapsed().as_secs(),
                line.trim()
            ));
        }
    }
    let status = child.wait().map_err(|e| Error::io(log, e))?;
    let _ = err_thread.join();
    if status.success() {
        Ok(())
    } else {
        let stderr = std::fs::read_to_string(log.with_extension("stderr.log")).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        Err(Error::Command {
            command: format!("{cmd:?}"),
            status: status.to_string(),
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn touch(path: &Path) -> Result<(), Error> {
    std::fs::write(path, b"").map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_lock() {
        assert_eq!(
            lock_path_of(Path::new("/c/kernels/6.12.118-1_deb12u1-2e0a5a3673f5")),
            Path::new("/c/kernels/6.12.118-1_deb12u1-2e0a5a3673f5.lock")
        );
        assert_ne!(
            lock_path_of(Path::new("/c/kernels/6.12.118-1_deb12u1-2e0a5a3673f5")),
            lock_path_of(Path::new("/c/kernels/6.12.117-1_deb12u1-9938d56413a4"))
        );
    }

    #[test]
    fn dropped_fragment_option_is_an_error() {
        let fragment = b"CONFIG_LIVEPATCH=y\nCONFIG_SAMPLE_LIVEPATCH=m\n# CONFIG_X is not set\n";
        let config =
            b"CONFIG_LIVEPATCH=y\nCONFIG_DYNAMIC_FTRACE_WITH_ARGS=y\nCONFIG_UNWINDER_ORC=y\n\
CONFIG_MODULES=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_KALLSYMS_ALL=y\n";
        let err = verify_config(fragment, config).unwrap_err().to_string();
        assert!(
            err.contains("CONFIG_SAMPLE_LIVEPATCH=m (got unset)"),
            "{err}"
        );
        let mut full = config.to_vec();
        full.extend_from_slice(b"CONFIG_SAMPLE_LIVEPATCH=m\n");
        verify_config(fragment, &full).unwrap();
    }

    #[test]
    fn required_livepatch_options_are_checked() {
        let err = verify_config(b"", b"CONFIG_LIVEPATCH=y\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONFIG_DYNAMIC_FTRACE_WITH_REGS or CONFIG_DYNAMIC_FTRACE_WITH_ARGS=y")
        );
        assert!(err.contains("CONFIG_KALLSYMS_ALL=y"));
    }

    #[test]
    fn key_depends_on_fragment_and_version() {
        let dir = std::env::temp_dir().join(format!("kpbuild-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fragment = dir.join("f.config");
        std::fs::write(&fragment, "CONFIG_A=y\n").unwrap();
        let spec = KernelSpec {
            tarball: "/x.tar.xz".into(),
            source_version: "6.12.117-1~deb12u1".into(),
            fragment: fragment.clone(),
            patches: vec![],
            extra_fragments: vec![],
            build_files: vec![],
            cache: dir.clone(),
            jobs: 2,
        };
        let a = spec.key().unwrap();
        assert!(a.starts_with("6.12.117-1_deb12u1-"), "{a}");
        std::fs::write(&fragment, "CONFIG_A=m\n").unwrap();
        let b = spec.key().unwrap();
        assert_ne!(a, b);
        let patch = dir.join("t.patch");
        std::fs::write(&patch, "--- a/x\n+++ b/x\n").unwrap();
        let with_patch = KernelSpec {
            patches: vec![patch],
            ..spec
        };
        let c = with_patch.key().unwrap();
        assert_ne!(b, c);
        // A variant: extra fragment and build files change the key; their
        // absence leaves it as it was.
        let extra = dir.join("sig.config");
        std::fs::write(&extra, "CONFIG_MODULE_SIG=y\n").unwrap();
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "cert-1").unwrap();
        let variant = KernelSpec {
            extra_fragments: vec![extra],
            ..with_patch.clone()
        };
        let d = variant.key().unwrap();
        assert_ne!(c, d);
        let with_cert = KernelSpec {
            build_files: vec![(cert.clone(), "certs/t.pem".into())],
            ..variant.clone()
        };
        let e = with_cert.key().unwrap();
        assert_ne!(d, e);
        std::fs::write(&cert, "cert-2").unwrap();
        assert_ne!(e, with_cert.key().unwrap());
        let renamed = KernelSpec {
            build_files: vec![(cert, "certs/u.pem".into())],
            ..variant
        };
        assert_ne!(e, renamed.key().unwrap());
        assert_eq!(c, with_patch.key().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
