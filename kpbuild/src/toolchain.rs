//! Where a target's compiles run: on the host, or inside the cached build
//! root of the target's Debian release ([`BuildRoot`]). Every command that
//! compiles for a target (the replayed unit commands, `make` of the
//! prepared directory, the module build, the compiler's `--version`) goes
//! through [`Toolchain::run`], so later stages never ask which it is.
//!
//! In a build root the same argument vector runs with the same paths
//! visible: `bwrap` assembles a new root on a tmpfs from the build root's
//! `/usr` and `/etc` (read-only, so no compile can change the cached root)
//! and its top-level symlinks, then binds each host path the build needs
//! (the kpbuild cache, the source, the work directory) onto the same path,
//! so `.cmd` files, `-I` paths and cache paths stay valid. bubblewrap does
//! this in one argument vector with no shell and no mount point created in
//! the cached root, and the namespace (mounts, processes) ends with the
//! command; `unshare` + `chroot` would need a shell script or mount calls
//! between fork and exec, and mount points made inside the root.

use crate::buildroot::{BuildRoot, BuildRootError};
use crate::process::ProcessError;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `PATH` inside a build root.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The build root's directories bound into the sandbox; the rest of its
/// top level is left out (a bound host path may live there).
const SYSTEM_DIRS: &[&str] = &["usr", "etc"];

/// How a target's compile commands run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Toolchain {
    /// On this machine, as they are.
    #[default]
    Host,
    /// Inside a Debian build root, with host paths visible at their place.
    Root {
        /// The build root.
        root: BuildRoot,
        /// Host paths every command sees (cache, source, build dirs).
        visible: Vec<PathBuf>,
    },
}

impl Toolchain {
    /// The toolchain for a target whose config names the compiler `cc` and
    /// whose kernel release is `release`: the host when it can run `cc` or
    /// the release is not a Debian one; else the build root of the
    /// release's Debian suite, made first if needed, seeing `visible`.
    pub fn for_target(
        release: &str,
        cc: &str,
        visible: &[&Path],
        progress: &dyn Fn(&str),
    ) -> Result<Self, BuildRootError> {
        let host_runs = !matches!(
            crate::process::run(Command::new(cc).arg("--version")),
            Err(ProcessError::Spawn { .. })
        );
        let Some(suite) = debian_suite(release).filter(|_| !host_runs) else {
            return Ok(Toolchain::Host);
        };
        let root = BuildRoot::for_suite(suite, progress)?;
        progress(&format!(
            "{release} is built by {cc}, which this machine lacks: compiling in the {suite} build root {}",
            root.dir().display()
        ));
        Ok(Toolchain::in_root(root, visible))
    }

    /// Commands run in `root`, seeing `visible` (and the kpbuild cache).
    pub fn in_root(root: BuildRoot, visible: &[&Path]) -> Self {
        let mut paths: Vec<PathBuf> = visible.iter().map(|p| p.to_path_buf()).collect();
        paths.push(kimage::cache_root());
        Toolchain::Root {
            root,
            visible: paths,
        }
    }

    /// A short description for messages: `here` or `in the trixie build root DIR`.
    pub fn place(&self) -> String {
        match self {
            Toolchain::Host => "here".to_string(),
            Toolchain::Root { root, .. } => format!(
                "in the {} build root {}",
                root.suite(),
                root.dir().display()
            ),
        }
    }

    /// The build root's suite, for cache keys: `None` on the host.
    pub fn suite(&self) -> Option<&str> {
        match self {
            Toolchain::Host => None,
            Toolchain::Root { root, .. } => Some(root.suite()),
        }
    }

    /// Runs `cmd` ([`crate::process::run`]) on the host, or its argument
    /// vector, working directory and explicitly set environment inside the
    /// build root, where `also` (for example the build's work directory)
    /// is visible besides the toolchain's own paths.
    pub fn run(&self, cmd: &mut Command, also: &[&Path]) -> Result<Output, ProcessError> {
        match self {
            Toolchain::Host => crate::process::run(cmd),
            Toolchain::Root { root, visible } => {
                let paths: Vec<&Path> = visible
                    .iter()
                    .map(PathBuf::as_path)
                    .chain(also.iter().copied())
                    .collect();
                crate::process::run(&mut sandboxed(root.dir(), &paths, cmd))
            }
        }
    }
}

/// The Debian suite (codename) of a kernel release, from its name
/// ([`crate::debian::release::parse`]): `6.12.118+deb13-cloud-amd64` →
/// `trixie`; `None` for a release that is not Debian's.
pub fn debian_suite(release: &str) -> Option<&'static str> {
    crate::debian::release::parse(release)
        .ok()
        .map(|r| r.suite.codename())
}

/// The `bwrap` command running `cmd` inside the build root at `root` with
/// `visible` bound at their own paths.
fn sandboxed(root: &Path, visible: &[&Path], cmd: &Command) -> Command {
    let mut b = Command::new("bwrap");
    b.args(["--unshare-pid", "--unshare-net", "--die-with-parent"]);
    for dir in SYSTEM_DIRS {
        b.arg("--ro-bind")
            .arg(root.join(dir))
            .arg(format!("/{dir}"));
    }
    // merged-/usr: /bin, /lib, /lib64, /sbin are links into /usr.
    for (name, target) in top_level_links(root) {
        b.arg("--symlink").arg(target).arg(format!("/{name}"));
    }
    b.args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
    for path in bind_list(visible) {
        b.arg("--bind").arg(&path).arg(&path);
    }
    if let Some(dir) = cmd.get_current_dir() {
        b.arg("--chdir").arg(absolute(dir));
    }
    b.arg("--clearenv")
        .args(["--setenv", "PATH", ROOT_PATH])
        .args(["--setenv", "HOME", "/tmp"])
        .args(["--setenv", "TMPDIR", "/tmp"]);
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            b.arg("--setenv").arg(key).arg(value);
        }
    }
    b.arg("--").arg(cmd.get_program()).args(cmd.get_args());
    b
}

/// The symlinks at the top of the build root (name, target).
fn top_level_links(root: &Path) -> Vec<(String, PathBuf)> {
    let mut links: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), target))
        })
        .collect();
    links.sort();
    links
}

/// The host paths to bind, each absolute and canonical when it exists,
/// with paths inside another listed path left out (its parent's bind shows
/// it) and parents first. A path under the build root's read-only `/usr`
/// or `/etc` whose directory the root lacks cannot be bound (bwrap cannot
/// make its mount point there): such a command fails naming the path.
fn bind_list(visible: &[&Path]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in visible {
        let p = absolute(p);
        let canonical = p.canonicalize().unwrap_or_else(|_| p.clone());
        for q in [p, canonical] {
            if q.exists() && !paths.contains(&q) {
                paths.push(q);
            }
        }
    }
    paths.sort();
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !out.iter().any(|o| p.starts_with(o)) {
            out.push(p);
        }
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_name_their_debian_suite() {
        assert_eq!(debian_suite("6.12.118+deb13-cloud-amd64"), Some("trixie"));
        assert_eq!(debian_suite("6.12.115+deb13.1-amd64"), Some("trixie"));
        assert_eq!(debian_suite("6.12.117+deb12-cloud-amd64"), Some("bookworm"));
        assert_eq!(debian_suite("6.1.0-57-cloud-amd64"), Some("bookworm"));
        assert_eq!(debian_suite("6.12.0-kpbuild"), None);
    }

    #[test]
    fn binds_are_canonical_parents_first_without_nested_paths() {
        let scratch = testbed::scratch::Scratch::new("toolchain-binds");
        let a = scratch.dir("a");
        let inner = scratch.dir("a/b/c");
        let other = scratch.dir("other");
        std::os::unix::fs::symlink(&other, scratch.path("link")).unwrap();
        let link = scratch.path("link");
        let missing = scratch.path("missing");
        let list = bind_list(&[&inner, &link, &a, &missing]);
        let canon = |p: &Path| p.canonicalize().unwrap();
        let mut want = vec![canon(&a), link.clone(), canon(&other)];
        want.sort();
        want.dedup();
        assert_eq!(list, want);
    }

    #[test]
    fn a_sandboxed_command_keeps_argv_directory_and_explicit_environment() {
        let scratch = testbed::scratch::Scratch::new("toolchain-argv");
        let root = scratch.dir("root");
        scratch.dir("root/usr");
        scratch.dir("root/etc");
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let work = scratch.dir("work");
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg("/src")
            .arg("M=/w")
            .current_dir(&work)
            .env("KBUILD_X", "1")
            .env_remove("MAKEFLAGS");
        let line = crate::process::command_line(&sandboxed(&root, &[&work], &cmd));
        let work = work.canonicalize().unwrap();
        let root = root.display();
        let expected = format!(
            "bwrap --unshare-pid --unshare-net --die-with-parent --ro-bind {root}/usr /usr --ro-bind {root}/etc /etc --symlink usr/bin /bin --dev /dev --proc /proc --tmpfs /tmp --bind {w} {w} --chdir {w} --clearenv --setenv PATH {ROOT_PATH} --setenv HOME /tmp --setenv TMPDIR /tmp --setenv KBUILD_X 1 -- make -C /src M=/w",
            w = work.display()
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn the_host_runs_commands_as_they_are() {
        let out = Toolchain::Host
            .run(Command::new("sh").args(["-c", "echo $0"]), &[])
            .unwrap();
        assert_eq!(out.stdout, b"sh\n");
        assert_eq!(Toolchain::Host.place(), "here");
        assert_eq!(Toolchain::Host.suite(), None);
    }

    /// The cached trixie build root (`cargo xtask test` makes it first).
    fn trixie_root() -> Option<BuildRoot> {
        testbed::oracle::tool("bwrap", "bubblewrap")?;
        let base = kimage::cache_root().join("buildroot");
        testbed::oracle::need(
            &format!("the trixie build root {}", base.join("trixie").display()),
            "run `cargo xtask buildroot trixie` as root (`cargo xtask test` makes it)",
            BuildRoot::existing_in(&base, "trixie"),
        )
    }

    #[test]
    fn a_build_root_compiles_with_its_own_compiler_at_the_same_paths() {
        let Some(root) = trixie_root() else { return };
        let scratch = testbed::scratch::Scratch::new("toolchain-root");
        let src = scratch.write("src/unit.c", "int answer(void) { return 42; }\n");
        let out = scratch.dir("out");
        let tc = Toolchain::in_root(root.clone(), &[&scratch.dir("src")]);
        assert_eq!(tc.suite(), Some("trixie"));
        let version = tc
            .run(
                Command::new("x86_64-linux-gnu-gcc-14").arg("--version"),
                &[],
            )
            .unwrap();
        let first = String::from_utf8_lossy(&version.stdout);
        assert!(
            first.starts_with("x86_64-linux-gnu-gcc-14 (Debian 14.2.0-"),
            "{first}"
        );
        // The command names host paths; its relative output lands in the
        // host directory it ran in.
        let mut cc = Command::new("x86_64-linux-gnu-gcc-14");
        cc.arg("-c")
            .arg(&src)
            .arg("-o")
            .arg("unit.o")
            .current_dir(&out);
        tc.run(&mut cc, &[&out]).unwrap();
        let object = std::fs::read(out.join("unit.o")).unwrap();
        let comment = String::from_utf8_lossy(&object);
        assert!(
            comment.contains("GCC: (Debian 14.2.0-"),
            "not gcc-14's object"
        );
        // The release inside is trixie; its system is read-only; only the
        // environment given is there.
        let os = tc
            .run(Command::new("cat").arg("/etc/os-release"), &[])
            .unwrap();
        assert!(String::from_utf8_lossy(&os.stdout).contains("VERSION_CODENAME=trixie"));
        let err = tc
            .run(Command::new("touch").arg("/usr/kpbuild-write-test"), &[])
            .unwrap_err();
        assert!(err.to_string().contains("Read-only file system"), "{err}");
        assert!(!root.dir().join("usr/kpbuild-write-test").exists());
        let env = tc.run(Command::new("env").env("KPB_X", "1"), &[]).unwrap();
        let mut names: Vec<String> = String::from_utf8_lossy(&env.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        names.sort();
        // bwrap sets PWD to the working directory it changed to.
        assert_eq!(names, ["HOME", "KPB_X", "PATH", "PWD", "TMPDIR"]);
        // A host path not made visible is not there.
        let hidden = scratch.write("hidden/file", "x");
        let tc_src_only = Toolchain::in_root(root, &[&scratch.path("src")]);
        assert!(
            tc_src_only
                .run(Command::new("cat").arg(&hidden), &[])
                .is_err()
        );
    }
}
