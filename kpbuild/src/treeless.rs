//! Tree-less mode: a target described by its source, config, vmlinux and
//! module headers instead of a built tree. A private kbuild output
//! directory is prepared once per (source, config, compiler) and cached;
//! the units a patch touches are compiled there on demand, and their `.cmd`
//! records are then replayed exactly like a built tree's. Everything after
//! [`prepared_tree`] is the tree mode's code path.

use crate::buildroot::BuildRootError;
use crate::files::{FileError, PathContext};
use crate::identity::IdentityError;
use crate::kbuild::{KbuildError, UnitCommand};
use crate::patch::SourcePatch;
use crate::process::ProcessError;
use crate::toolchain::Toolchain;
use crate::tree::{TargetTree, TreeError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree-less target that cannot be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreelessError {
    /// The config does not name its compiler.
    #[error("the config has no CONFIG_CC_VERSION_TEXT: which compiler built the kernel?")]
    NoCompiler,
    /// The compiler the config names is not here.
    #[error(
        "the kernel was built by `{want}`, but `{cc}` cannot be run here: {source}; {}",
        how_to_get(cc)
    )]
    CompilerNotRunnable {
        /// `CONFIG_CC_VERSION_TEXT`.
        want: String,
        /// The compiler command.
        cc: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The compiler here is another version.
    #[error(
        "compiler mismatch: the kernel was built by `{want}`, but `{cc}` {place} is `{have}` ({why}); a different compiler generates different code: {}",
        how_to_get(cc)
    )]
    CompilerMismatch {
        /// `CONFIG_CC_VERSION_TEXT`.
        want: String,
        /// The compiler command.
        cc: String,
        /// Its version line.
        have: String,
        /// What differs.
        why: String,
        /// Where it ran: `here`, or `in the SUITE build root DIR`.
        place: String,
    },
    /// The build root of the target's Debian release cannot be made.
    #[error(transparent)]
    BuildRoot(#[from] BuildRootError),
    /// `make` failed while preparing the directory.
    #[error(transparent)]
    Make(Box<ProcessError>),
    /// A changed unit could not be compiled in the prepared directory.
    #[error("{}: is it built by this config? {source}", object.display())]
    NotBuilt {
        /// The object.
        object: PathBuf,
        /// The failed `make`.
        source: Box<ProcessError>,
    },
    /// A module unit's command lacks its module name.
    #[error("{}: built into a module, but its command has no KBUILD_MODNAME", .0.display())]
    NoModuleName(PathBuf),
    /// A module unit, but no installed modules to find the module in.
    #[error(
        "{} is built into the module {module}: give the target's installed modules with --modules /lib/modules/RELEASE",
        object.display()
    )]
    NeedModules {
        /// The object.
        object: PathBuf,
        /// The module.
        module: String,
    },
    /// The module is not among the installed modules.
    #[error(
        "module {module}: no {module}.ko in {} (is it the target's /lib/modules/RELEASE?)",
        dir.display()
    )]
    NoModule {
        /// The module.
        module: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The module is there more than once.
    #[error("module {module}: more than one file: {}", files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    AmbiguousModule {
        /// The module.
        module: String,
        /// Its files.
        files: Vec<PathBuf>,
    },
    /// A compressed module could not be decompressed.
    #[error("decompressing {}: {source}", path.display())]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// The failed decompressor.
        source: Box<ProcessError>,
    },
    /// No changed `.c` file.
    #[error("the patches change no .c file that tree-less mode could compile")]
    NoUnit,
    /// The target's files do not describe one kernel.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The prepared directory is not a usable tree.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A `.cmd` record could not be read.
    #[error(transparent)]
    Kbuild(#[from] KbuildError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A changed header's users cannot be found or built.
    #[error(transparent)]
    Headers(#[from] crate::headers::HeaderError),
    /// A unit could not be compiled as an original.
    #[error("{}: compiling the original: {source}", object.display())]
    Original {
        /// The object.
        object: PathBuf,
        /// The failed compiler.
        source: Box<ProcessError>,
    },
}

impl TreelessError {
    /// Whether the change is refused (exit 2) rather than an error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, TreelessError::Headers(e) if e.is_refusal())
    }
}

/// How to get the compiler `cc` names: `install that compiler (on Debian:
/// apt-get install gcc-N)` for `x86_64-linux-gnu-gcc-N` and `gcc-N` when
/// this system's apt has Debian's gcc-N, or that it has not (a kernel of a
/// newer Debian release, built by a gcc this release does not ship).
fn how_to_get(cc: &str) -> String {
    let Some(n) = cc
        .rsplit_once("gcc-")
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    else {
        return "install that compiler".to_string();
    };
    let package = format!("gcc-{n}");
    let known = crate::process::run(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        &package,
    ]))
    .is_ok_and(|o| !o.stdout.is_empty());
    if known {
        format!("install that compiler (on Debian: apt-get install {package})")
    } else {
        format!(
            "{package} is not available from this system's apt sources (its Debian release does not ship it), so this kernel cannot be compiled on this system"
        )
    }
}

/// The target's files in tree-less mode.
#[derive(Debug, Clone, Copy)]
pub struct TreelessFiles<'a> {
    /// The kernel config.
    pub config: &'a Path,
    /// The unstripped vmlinux.
    pub vmlinux: &'a Path,
    /// The module build tree, with Module.symvers.
    pub headers: &'a Path,
    /// `/lib/modules/RELEASE`, where module targets are found.
    pub modules: Option<&'a Path>,
    /// The Debian release the files come from: its `-dbg` package lists
    /// the modules' units for a header change.
    pub debian_release: Option<&'a str>,
    /// A changed header may have at most this many users.
    pub max_header_users: usize,
}

/// The compiler `CONFIG_CC_VERSION_TEXT` names, checked against the one on
/// this machine: (command, version line).
pub fn config_compiler(config: &str) -> Result<(String, String), TreelessError> {
    let c = checked_compiler(config)?;
    Ok((c.cc, c.version))
}

/// The kernel's compiler as found on this machine.
#[derive(Debug, Clone)]
pub struct CheckedCompiler {
    /// The command (`x86_64-linux-gnu-gcc-12`).
    pub cc: String,
    /// Its version line here.
    pub version: String,
    /// Set when only the vendor's package revision differs from the
    /// kernel's: the build goes on, pre-match decides.
    pub warning: Option<String>,
}

/// The compiler `CONFIG_CC_VERSION_TEXT` names, checked against the one on
/// this machine: the same version line, or only another package revision
/// of it (a warning).
pub fn checked_compiler(config: &str) -> Result<CheckedCompiler, TreelessError> {
    checked_compiler_in(config, &Toolchain::Host)
}

/// The compiler command `CONFIG_CC_VERSION_TEXT` names and the whole text.
fn named_compiler(config: &str) -> Result<(String, String), TreelessError> {
    let want = crate::tree::parse_config(config)
        .remove("CONFIG_CC_VERSION_TEXT")
        .ok_or(TreelessError::NoCompiler)?;
    let cc = want.split_whitespace().next().unwrap_or("gcc").to_string();
    Ok((cc, want))
}

/// [`checked_compiler`], the compiler run by `toolchain` (on the host, or
/// inside a build root).
pub fn checked_compiler_in(
    config: &str,
    toolchain: &Toolchain,
) -> Result<CheckedCompiler, TreelessError> {
    let (cc, want) = named_compiler(config)?;
    let out = match toolchain.run(Command::new(&cc).arg("--version"), &[]) {
        Ok(out) | Err(ProcessError::Failed { output: out, .. }) => out,
        Err(ProcessError::Spawn { source, .. }) => {
            return Err(TreelessError::CompilerNotRunnable { want, cc, source });
        }
    };
    let have = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let warning = match crate::compiler::compare(&want, &have) {
        crate::compiler::Difference::Same => None,
        crate::compiler::Difference::Revision { want, have } => {
            Some(crate::compiler::revision_warning(&cc, &want, &have))
        }
        crate::compiler::Difference::Other(why) => {
            return Err(TreelessError::CompilerMismatch {
                want,
                cc,
                have,
                why,
                place: toolchain.place(),
            });
        }
    };
    Ok(CheckedCompiler {
        cc,
        version: have,
        warning,
    })
}

/// The module file kbuild compiled a unit for (`-DKBUILD_MODFILE='"DIR/NAME"'`):
/// its directory is the one whose Makefile kbuild read.
fn kbuild_modfile(command: &str) -> Option<String> {
    let rest = command.split("-DKBUILD_MODFILE=").nth(1)?;
    let word = rest.split_whitespace().next()?;
    Some(
        word.trim_matches(|c| c == '\'' || c == '"' || c == '\\')
            .to_string(),
    )
}

/// `make` in the prepared directory `out`. The target's release (its
/// vmlinux banner's) is kbuild's `KERNELRELEASE`: `UTS_RELEASE` is compiled
/// into code (`strlen(UTS_RELEASE)` is an immediate in IMA's `ima_init`),
/// and a source tree alone says `6.12.118` where Debian's kernel says
/// `6.12.118+deb12-cloud-amd64`.
fn make(src: &Path, out: &Path, cc: &str, release: &str) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .arg(format!("CC={cc}"))
        .arg(format!("KERNELRELEASE={release}"))
        .arg("-s");
    c
}

/// The cache key and directory of the prepared build directory for a
/// canonical source path, a config and the compiler's version line.
fn prepared_key(
    src: &Path,
    config_text: &str,
    cc_version: &str,
    toolchain: &Toolchain,
) -> Result<(String, PathBuf), FileError> {
    let makefile = crate::files::read(&src.join("Makefile"))?;
    let mut h = Sha256::new();
    for part in [
        src.display().to_string().as_bytes(),
        &makefile,
        config_text.as_bytes(),
        cc_version.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    // The helpers `prepare` builds link against the build root's libraries:
    // a directory prepared in one is never used on the host (host keys are
    // as before).
    if let Some(suite) = toolchain.suite() {
        let part = format!("buildroot:{suite}");
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let key = kimage::hex(&h.finalize()[..8]);
    let dir = kimage::cache_root().join("prepared").join(&key);
    Ok((key, dir))
}

/// The private build directory tree-less mode prepares for `src` and
/// `config` (it exists once a build has prepared it), and the compiler
/// command the config names.
pub fn prepared_dir(src: &Path, config: &Path) -> Result<(PathBuf, String), TreelessError> {
    let src = src.canonicalize().at(src)?;
    let config_text = crate::files::read_to_string(config)?;
    let (cc, cc_version) = config_compiler(&config_text)?;
    let (_, dir) = prepared_key(&src, &config_text, &cc_version, &Toolchain::Host)?;
    Ok((dir, cc))
}

/// The target description of a tree-less target: checks that its files
/// describe one kernel, prepares (or reuses) the private build directory
/// and compiles the changed units in it. `laps` receives the time of a
/// first `prepare`, `warnings` what the build goes on despite (a compiler
/// package revision other than the kernel's), `holds` the prepared
/// directory, held for the build.
pub fn prepared_tree(
    src: &Path,
    files: &TreelessFiles<'_>,
    patches: &[SourcePatch],
    progress: &dyn Fn(&str),
    laps: &mut Vec<(&'static str, f64)>,
    warnings: &mut Vec<String>,
    holds: &mut Vec<crate::cache::Hold>,
) -> Result<TargetTree, TreelessError> {
    let target = prepared_target(src, files, progress, laps, warnings)?;
    holds.push(target.hold.clone());
    let dir = target.view();
    // One kpbuild at a time compiles units in the directory.
    let _compile = dir.lock_compile()?;
    let (units, module_of) = dir.compile_changed(patches, files, progress, laps)?;
    Ok(TargetTree::prepared(
        &target.src,
        &target.dir,
        files.vmlinux,
        files.headers,
        &target.cc,
        &target.release,
        units,
        module_of,
        target.toolchain.clone(),
    )?)
}

/// A tree-less target's private build directory, prepared and held: any
/// unit of the kernel can be compiled in it, and then compiled as `kpbuild
/// build` compiles an original.
#[derive(Debug)]
pub struct PreparedTarget {
    src: PathBuf,
    config: PathBuf,
    cc: String,
    release: String,
    dir: PathBuf,
    toolchain: Toolchain,
    hold: crate::cache::Hold,
}

/// Checks that a tree-less target's files describe one kernel and
/// prepares (or reuses) its private build directory, held until the
/// result is dropped. `laps` receives the time of a first `prepare`,
/// `warnings` what the build goes on despite.
pub fn prepared_target(
    src: &Path,
    files: &TreelessFiles<'_>,
    progress: &dyn Fn(&str),
    laps: &mut Vec<(&'static str, f64)>,
    warnings: &mut Vec<String>,
) -> Result<PreparedTarget, TreelessError> {
    let src = src.canonicalize().at(src)?;
    crate::tree::check_source(&src)?;
    let config_text = crate::files::read_to_string(files.config)?;
    let id = crate::identity::check_treeless(
        &src,
        &config_text,
        files.config,
        files.vmlinux,
        files.headers,
    )?;
    let (named, _) = named_compiler(&config_text)?;
    let toolchain = Toolchain::for_target(&id.release, &named, &[&src, files.headers], progress)?;
    let CheckedCompiler {
        cc,
        version: cc_version,
        warning,
    } = checked_compiler_in(&config_text, &toolchain)?;
    if let Some(w) = warning {
        progress(&format!("warning: {w}"));
        warnings.push(w);
    }
    let dir = prepared_key(&src, &config_text, &cc_version, &toolchain)?.1;
    let prepared = Prepared {
        src: &src,
        config: files.config,
        cc: &cc,
        release: &id.release,
        dir: dir.clone(),
        toolchain: &toolchain,
    };
    let hold = prepared.prepare(&config_text, progress, laps)?;
    Ok(PreparedTarget {
        config: files.config.to_path_buf(),
        src,
        cc,
        release: id.release,
        dir,
        toolchain,
        hold,
    })
}

impl PreparedTarget {
    fn view(&self) -> Prepared<'_> {
        Prepared {
            src: &self.src,
            config: &self.config,
            cc: &self.cc,
            release: &self.release,
            dir: self.dir.clone(),
            toolchain: &self.toolchain,
        }
    }

    /// The prepared build directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel's source tree (canonical).
    pub fn src(&self) -> &Path {
        &self.src
    }

    /// Compiles `objects` (relative to the build directory) in the
    /// directory, one `make -k` under its compile lock for those not up to
    /// date: each object's kbuild record, or why it did not compile.
    pub fn unit_commands(
        &self,
        objects: &[PathBuf],
    ) -> Result<Vec<Result<UnitCommand, TreelessError>>, TreelessError> {
        let dir = self.view();
        let _compile = dir.lock_compile()?;
        let stale: Vec<&PathBuf> = objects
            .iter()
            .filter(|o| dir.up_to_date(o).is_none())
            .collect();
        if !stale.is_empty() {
            let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
            let mut make = make(&self.src, &self.dir, &self.cc, &self.release);
            make.arg("-k").arg(format!("-j{jobs}")).args(stale);
            // A failure is named below, object by object.
            let _ = self.toolchain.run(&mut make, &[]);
        }
        Ok(objects.iter().map(|o| dir.compile(o)).collect())
    }

    /// Compiles `unit` (a record of [`PreparedTarget::unit_commands`]) from
    /// the pristine source into `out`, exactly as `kpbuild build` compiles
    /// an original for diffing and pre-matching: with `flags`, those
    /// [`crate::build::units::diff_flags`] wrote for `work`.
    pub fn compile_original(
        &self,
        unit: &UnitCommand,
        flags: &[String],
        work: &Path,
        out: &Path,
    ) -> Result<(), TreelessError> {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        crate::files::create_dir_all(out.parent().expect("object has a directory"))?;
        let mut cmd = unit.replay(&self.dir, &self.src, &self.src, out, &flags)?;
        self.toolchain
            .run(&mut cmd, &[work])
            .map(|_| ())
            .map_err(|source| TreelessError::Original {
                object: unit.object.clone(),
                source: Box::new(source),
            })
    }
}

/// Compiles more units of a tree-less target in its prepared directory,
/// after the build's first compiles (the units that call a changed global
/// function without an ftrace entry): each unit's kbuild record. Nothing
/// for a built tree, whose units are all there.
pub fn compile_more(
    tree: &TargetTree,
    objects: &[PathBuf],
    progress: &dyn Fn(&str),
) -> Result<Vec<UnitCommand>, TreelessError> {
    let crate::tree::TreeMode::Prepared { cc, release } = &tree.mode else {
        return Ok(Vec::new());
    };
    let config = tree.build.join(".config");
    let dir = Prepared {
        src: &tree.src,
        config: &config,
        cc,
        release,
        dir: tree.build.clone(),
        toolchain: &tree.toolchain,
    };
    let lock_path = dir.dir.join(".kpbuild-compile.lock");
    let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    objects
        .iter()
        .map(|object| {
            progress(&format!(
                "compiling {} in the prepared directory",
                object.display()
            ));
            dir.compile(object)
        })
        .collect()
}

/// The private build directory of a tree-less target.
struct Prepared<'a> {
    src: &'a Path,
    /// The target's config file, as given.
    config: &'a Path,
    cc: &'a str,
    /// The target's kernel release (`KERNELRELEASE`).
    release: &'a str,
    dir: PathBuf,
    toolchain: &'a Toolchain,
}

/// A module's name and its `.ko`.
type ModuleTarget = (String, PathBuf);

/// Module name and `.ko` of each object linked into a module.
type ModuleOf = HashMap<PathBuf, ModuleTarget>;

impl Prepared<'_> {
    /// Holds the directory for the build (see [`crate::cache::hold`]),
    /// preparing it unless a build did (`olddefconfig` + `prepare`).
    fn prepare(
        &self,
        config_text: &str,
        progress: &dyn Fn(&str),
        laps: &mut Vec<(&'static str, f64)>,
    ) -> Result<crate::cache::Hold, TreelessError> {
        let dir = &self.dir;
        crate::files::create_dir_all(dir.parent().expect("under the cache"))?;
        let lock_path = dir.with_extension("lock");
        let done = dir.join(".kpbuild-prepared");
        let hold = crate::cache::hold(&lock_path, &done, || {
            self.fill(config_text, &done, progress, laps)
        })?;
        self.record()?;
        Ok(hold)
    }

    /// The lock under which units compile in the directory, one build at a
    /// time.
    fn lock_compile(&self) -> Result<std::fs::File, TreelessError> {
        let compile_path = self.dir.join(".kpbuild-compile.lock");
        let compile = std::fs::File::create(&compile_path).at(&compile_path)?;
        compile.lock().at(&compile_path)?;
        Ok(compile)
    }

    /// `kpbuild cache` ties the directory to its source and config by these
    /// records (directories prepared before them get them on next use).
    fn record(&self) -> Result<(), TreelessError> {
        let config = self.config.canonicalize().at(self.config)?;
        for (name, path) in [
            (crate::cache::PREPARED_SOURCE, self.src),
            (crate::cache::PREPARED_CONFIG, config.as_path()),
        ] {
            let record = self.dir.join(name);
            if !record.exists() {
                crate::files::write_atomic(&record, path.as_os_str().as_bytes())?;
            }
        }
        Ok(())
    }

    /// Prepares the directory (`olddefconfig` + `prepare`), the marker `done` last.
    fn fill(
        &self,
        config_text: &str,
        done: &Path,
        progress: &dyn Fn(&str),
        laps: &mut Vec<(&'static str, f64)>,
    ) -> Result<(), TreelessError> {
        let dir = &self.dir;
        crate::files::create_dir_all(dir)?;
        let start = std::time::Instant::now();
        progress(&format!(
            "preparing a build directory for {} (olddefconfig + prepare, once): {}",
            self.src.display(),
            dir.display()
        ));
        std::fs::write(dir.join(".config"), config_text).at(dir)?;
        let run = |cmd: &mut Command| {
            self.toolchain
                .run(cmd, &[])
                .map_err(|e| TreelessError::Make(Box::new(e)))
        };
        run(make(self.src, dir, self.cc, self.release).arg("olddefconfig"))?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        run(make(self.src, dir, self.cc, self.release)
            .arg(format!("-j{jobs}"))
            .arg("prepare"))?;
        self.record()?;
        let key = dir.file_name().unwrap_or_default().to_string_lossy();
        std::fs::write(done, key.as_bytes()).at(done)?;
        laps.push(("prepare", start.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Compiles each changed `.c` file in the directory; its `.cmd` record
    /// and, for a module's unit, the module's installed `.ko`.
    fn compile_changed(
        &self,
        patches: &[SourcePatch],
        files: &TreelessFiles<'_>,
        progress: &dyn Fn(&str),
        laps: &mut Vec<(&'static str, f64)>,
    ) -> Result<(Vec<UnitCommand>, ModuleOf), TreelessError> {
        let modules = files.modules;
        let mut units = Vec::new();
        let mut module_of = HashMap::new();
        for p in patches {
            for t in &p.touched {
                let ext = t.path.extension().and_then(|e| e.to_str());
                if ext != Some("c") || t.created {
                    continue;
                }
                let object = t.path.with_extension("o");
                progress(&format!(
                    "compiling {} in the prepared directory",
                    object.display()
                ));
                let unit = self.compile(&object)?;
                if unit.command.contains("-DMODULE ") {
                    let (name, ko) = self.module_of(&object, &unit, modules)?;
                    module_of.insert(object.clone(), (name, ko));
                }
                units.push(unit);
            }
        }
        let headers = crate::headers::changed_headers(patches);
        if !headers.is_empty() {
            let found = self.header_users(&headers, files, progress, laps)?;
            for (unit, module) in found {
                if units.iter().any(|u: &UnitCommand| u.object == unit.object) {
                    continue;
                }
                if let Some(m) = module {
                    module_of.insert(unit.object.clone(), m);
                }
                units.push(unit);
            }
        }
        if units.is_empty() {
            return Err(TreelessError::NoUnit);
        }
        Ok((units, module_of))
    }

    /// The units that include a changed header, compiled in the directory:
    /// candidates from the target's DWARF and an include scan, confirmed
    /// by the dependencies kbuild recorded. Each with its module, if any.
    fn header_users(
        &self,
        headers: &[PathBuf],
        files: &TreelessFiles<'_>,
        progress: &dyn Fn(&str),
        laps: &mut Vec<(&'static str, f64)>,
    ) -> Result<Vec<(UnitCommand, Option<ModuleTarget>)>, TreelessError> {
        use crate::headers::{UnitSource, candidates, check_target, depends_on, unit_index};
        let source = match files.debian_release {
            Some(release) => UnitSource::debian(release, files.vmlinux)?,
            None => UnitSource::Files {
                vmlinux: files.vmlinux.to_path_buf(),
                modules: files.modules.map(Path::to_path_buf),
            },
        };
        let start = std::time::Instant::now();
        let (index, cached) = unit_index(&source, progress)?;
        if !cached {
            laps.push(("unit-index", start.elapsed().as_secs_f64()));
        }
        let start = std::time::Instant::now();
        let (found, cached) =
            candidates(self.src, &self.dir, &index, headers, files.max_header_users)?;
        if !cached {
            laps.push(("include-scan", start.elapsed().as_secs_f64()));
        }
        let mut sources: Vec<&Path> = found.iter().map(|u| u.source.as_path()).collect();
        sources.dedup();
        let objects: Vec<PathBuf> = sources.iter().map(|s| s.with_extension("o")).collect();
        progress(&format!(
            "{} unit(s) may include {}: compiling them in the prepared directory",
            objects.len(),
            headers
                .iter()
                .map(|h| h.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.compile_all(&objects)?;
        let mut out = Vec::new();
        for (object, source) in objects.iter().zip(sources) {
            let unit = self.compile(object)?;
            if !headers.iter().any(|h| depends_on(&unit, self.src, h)) {
                continue; // the scan's superset: kbuild's record says no
            }
            let module = if unit.command.contains("-DMODULE ") {
                Some(self.module_of(object, &unit, files.modules)?)
            } else {
                None
            };
            let kbuild = module.as_ref().map_or("vmlinux", |(m, _)| m.as_str());
            check_target(object, kbuild, source, &index)?;
            out.push((unit, module));
        }
        Ok(out)
    }

    /// Compiles `objects` in the directory with one `make`; on a failure,
    /// the first object that does not compile is named.
    fn compile_all(&self, objects: &[PathBuf]) -> Result<(), TreelessError> {
        if objects.is_empty() {
            return Ok(());
        }
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut make = make(self.src, &self.dir, self.cc, self.release);
        make.arg(format!("-j{jobs}")).args(objects);
        if self.toolchain.run(&mut make, &[]).is_ok() {
            return Ok(());
        }
        for object in objects {
            self.compile(object)?;
        }
        Ok(())
    }

    /// Compiles one object in the directory; its `.cmd` record.
    fn compile(&self, object: &Path) -> Result<UnitCommand, TreelessError> {
        if let Some(unit) = self.up_to_date(object) {
            return Ok(unit);
        }
        let run = |goal: &std::ffi::OsStr| {
            self.toolchain
                .run(
                    make(self.src, &self.dir, self.cc, self.release).arg(goal),
                    &[],
                )
                .map_err(|source| TreelessError::NotBuilt {
                    object: object.to_path_buf(),
                    source: Box::new(source),
                })
        };
        run(object.as_os_str())?;
        let unit = UnitCommand::parse(&self.cmd_file(object))?;
        let Some(own) = self.compiled_elsewhere(object, &unit) else {
            return Ok(unit);
        };
        // Its own directory as the goal: kbuild descends into it and
        // compiles the object with that directory's flags.
        run(format!("{}/", own.display()).as_ref())?;
        Ok(UnitCommand::parse(&self.cmd_file(object))?)
    }

    /// The object's own directory, when kbuild compiled the object in a
    /// parent directory's context although its own directory is a build
    /// directory with a Makefile (`make arch/x86/power/cpu.o` compiles it
    /// through `arch/x86`'s pattern rule, without `arch/x86/power`'s
    /// `CFLAGS_cpu.o`, when both are build directories): its record names
    /// the parent as the module file's directory (`KBUILD_MODFILE`).
    fn compiled_elsewhere(&self, object: &Path, unit: &UnitCommand) -> Option<PathBuf> {
        let own = object.parent()?;
        let modfile = kbuild_modfile(&unit.command)?;
        let context = Path::new(&modfile).parent()?;
        let elsewhere = context != own && own.starts_with(context);
        let makefile = ["Makefile", "Kbuild"]
            .iter()
            .any(|m| self.src.join(own).join(m).is_file());
        (elsewhere && makefile).then(|| own.to_path_buf())
    }

    /// The `.cmd` record of an object an earlier build compiled here, when
    /// make would not rebuild it: the object is newer than its source and
    /// than every dependency the record lists (its command is fixed by the
    /// directory's key: source, config, compiler). Saves the seconds kbuild
    /// spends finding nothing to do.
    fn up_to_date(&self, object: &Path) -> Option<UnitCommand> {
        // A directory prepared before kpbuild named the release has the
        // source's own in `utsrelease.h` until make rewrites it (Debian's
        // 6.1 keeps `6.1.192` in kernel.release: only this file says).
        let uts = std::fs::read_to_string(self.dir.join("include/generated/utsrelease.h"));
        if uts.ok()?.trim() != format!("#define UTS_RELEASE \"{}\"", self.release) {
            return None;
        }
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let built = mtime(&self.dir.join(object))?;
        let unit = UnitCommand::parse(&self.cmd_file(object)).ok()?;
        if self.compiled_elsewhere(object, &unit).is_some() {
            return None;
        }
        let inputs = std::iter::once(&unit.source).chain(&unit.deps);
        for dep in inputs {
            let path = if dep.is_absolute() {
                dep.clone()
            } else {
                self.dir.join(dep)
            };
            if mtime(&path).is_none_or(|t| t > built) {
                return None;
            }
        }
        Some(unit)
    }

    fn cmd_file(&self, object: &Path) -> PathBuf {
        let name = object.file_name().expect("file").to_string_lossy();
        self.dir
            .join(object.parent().unwrap_or(Path::new("")))
            .join(format!(".{name}.cmd"))
    }

    /// The module (name with `_`, installed `.ko`) a module's unit is in.
    fn module_of(
        &self,
        object: &Path,
        unit: &UnitCommand,
        modules: Option<&Path>,
    ) -> Result<(String, PathBuf), TreelessError> {
        let name = module_name(&unit.command)
            .ok_or_else(|| TreelessError::NoModuleName(self.cmd_file(object)))?;
        let Some(modules) = modules else {
            return Err(TreelessError::NeedModules {
                object: object.to_path_buf(),
                module: name,
            });
        };
        let ko = target_module(modules, &name)?;
        Ok((name.replace('-', "_"), ko))
    }
}

/// `KBUILD_MODNAME` of a unit's compile command (`-DKBUILD_MODNAME='"name"'`).
fn module_name(command: &str) -> Option<String> {
    let rest = &command[command.find("-DKBUILD_MODNAME=")? + "-DKBUILD_MODNAME=".len()..];
    let value = rest.split_whitespace().next()?;
    let name = value.trim_matches(|c| c == '\'' || c == '"' || c == '\\');
    (!name.is_empty()).then(|| name.to_string())
}

/// The module `name` among the target's installed modules (`kernel/…/NAME.ko`,
/// compressed or not, `-` and `_` alike), as an uncompressed `.ko`: a
/// compressed one is decompressed into the cache (content-addressed, so
/// every build reads the same bytes).
fn target_module(modules: &Path, name: &str) -> Result<PathBuf, TreelessError> {
    let (path, ext) = find_module(modules, name)?;
    let tool = match ext {
        ".ko" => return Ok(path),
        ".ko.xz" => "xz",
        ".ko.zst" => "zstd",
        _ => "gzip",
    };
    let data = crate::files::read(&path)?;
    let digest = kimage::hex(&Sha256::digest(&data)[..12]);
    let wanted = name.replace('-', "_");
    let out = kimage::cache_root()
        .join("target-modules")
        .join(format!("{wanted}-{digest}.ko"));
    if out.is_file() {
        return Ok(out);
    }
    let bytes = crate::process::run(Command::new(tool).arg("-dc").arg(&path))
        .map_err(|source| TreelessError::Decompress {
            path: path.clone(),
            source: Box::new(source),
        })?
        .stdout;
    crate::files::create_dir_all(out.parent().expect("has a parent"))?;
    crate::files::write_atomic(&out, &bytes)?;
    Ok(out)
}

/// The one file of module `name` under `MODULES/kernel`, and its extension.
fn find_module(modules: &Path, name: &str) -> Result<(PathBuf, &'static str), TreelessError> {
    let wanted = name.replace('-', "_");
    let mut found = Vec::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).at(&dir)?;
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let file = e.file_name().to_string_lossy().into_owned();
            for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
                if let Some(stem) = file.strip_suffix(ext)
                    && stem.replace('-', "_") == wanted
                {
                    found.push((path.clone(), ext));
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(TreelessError::NoModule {
            module: name.to_string(),
            dir: modules.join("kernel"),
        }),
        _ => Err(TreelessError::AmbiguousModule {
            module: name.to_string(),
            files: found.into_iter().map(|(p, _)| p).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_file_kbuild_compiled_a_unit_for() {
        let cmd =
            "gcc -O2 '-DKBUILD_MODFILE=\"arch/x86/cpu\"' '-DKBUILD_BASENAME=\"cpu\"' -c -o x.o x.c";
        assert_eq!(kbuild_modfile(cmd).as_deref(), Some("arch/x86/cpu"));
        let cmd = "gcc -DKBUILD_MODFILE='\"fs/proc/proc\"' -c";
        assert_eq!(kbuild_modfile(cmd).as_deref(), Some("fs/proc/proc"));
        assert_eq!(kbuild_modfile("gcc -c x.c"), None);
    }

    #[test]
    fn module_name_from_command() {
        let cmd = "gcc -Wall -DMODULE -DKBUILD_BASENAME='\"binfmt_misc\"' -DKBUILD_MODNAME='\"binfmt_misc\"' -D__KBUILD_MODNAME=kmod_binfmt_misc -c -o fs/binfmt_misc.o fs/binfmt_misc.c";
        assert_eq!(module_name(cmd).as_deref(), Some("binfmt_misc"));
        assert_eq!(module_name("gcc -c -o x.o x.c"), None);
    }

    #[test]
    fn make_names_the_target_release() {
        let release = "6.12.118+deb12-cloud-amd64";
        let cmd = make(Path::new("/src"), Path::new("/out"), "gcc-12", release);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert!(
            args.iter()
                .any(|a| *a == format!("KERNELRELEASE={release}")),
            "{args:?}"
        );
    }

    #[test]
    fn an_object_of_another_release_is_not_up_to_date() {
        let dir = std::env::temp_dir().join(format!("kpbuild-up-to-date-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("include/generated")).unwrap();
        std::fs::write(dir.join("x.c"), b"int x;").unwrap();
        std::fs::write(
            dir.join(".x.o.cmd"),
            "savedcmd_x.o := gcc -c -o x.o x.c\n\nsource_x.o := x.c\n\ndeps_x.o := \\\n  x.c \\\n\nx.o: $(deps_x.o)\n",
        )
        .unwrap();
        std::fs::write(dir.join("x.o"), b"object").unwrap();
        let toolchain = Toolchain::default();
        let prepared = |release| Prepared {
            src: Path::new("/src"),
            config: Path::new("/config"),
            cc: "gcc",
            release,
            dir: dir.clone(),
            toolchain: &toolchain,
        };
        let debian = "6.12.118+deb12-cloud-amd64";
        let uts = dir.join("include/generated/utsrelease.h");
        // Prepared before the release was named: the tree's own.
        std::fs::write(&uts, "#define UTS_RELEASE \"6.12.118\"\n").unwrap();
        assert!(prepared(debian).up_to_date(Path::new("x.o")).is_none());
        assert!(prepared("6.12.118").up_to_date(Path::new("x.o")).is_some());
        std::fs::write(&uts, format!("#define UTS_RELEASE \"{debian}\"\n")).unwrap();
        std::fs::write(dir.join("x.o"), b"object").unwrap();
        assert!(prepared(debian).up_to_date(Path::new("x.o")).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn target_module_is_found_once_or_named() {
        let dir =
            std::env::temp_dir().join(format!("kpbuild-target-module-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kernel/fs/nls")).unwrap();
        std::fs::write(dir.join("kernel/fs/nls/nls-ascii.ko"), b"elf").unwrap();
        assert_eq!(
            target_module(&dir, "nls_ascii").unwrap(),
            dir.join("kernel/fs/nls/nls-ascii.ko")
        );
        let e = target_module(&dir, "absent").unwrap_err().to_string();
        assert!(e.contains("no absent.ko in"), "{e}");
        std::fs::create_dir_all(dir.join("kernel/drivers")).unwrap();
        std::fs::write(dir.join("kernel/drivers/nls_ascii.ko.xz"), b"xz").unwrap();
        let e = target_module(&dir, "nls_ascii").unwrap_err().to_string();
        assert!(e.contains("more than one file"), "{e}");
        let e = target_module(&dir.join("missing"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
