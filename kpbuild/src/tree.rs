//! The target description every build step works from: a kernel source
//! tree, its build tree (kbuild `.cmd` records, vmlinux, Module.symvers,
//! modules), and the compiler that built it. A kernel build tree and a
//! distribution kernel's packages both converge on this.

use crate::files::{FileError, PathContext};
use crate::kbuild::{KbuildError, UnitCommand, scan_c_units};
use crate::process::ProcessError;
use crate::toolchain::Toolchain;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A target that is not a usable kernel build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The source is not a kernel source tree.
    #[error("{}: not a kernel source tree (no Makefile and kernel/)", .0.display())]
    NotSource(PathBuf),
    /// A file of the build tree is missing.
    #[error("{}: missing ({what}); is {} a built kernel tree?", path.display(), build.display())]
    MissingInBuild {
        /// The file.
        path: PathBuf,
        /// What it is.
        what: &'static str,
        /// The build tree.
        build: PathBuf,
    },
    /// A file of a tree-less target is missing.
    #[error("{}: missing ({what})", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The kernel cannot load livepatches.
    #[error("{}: CONFIG_LIVEPATCH is not enabled; this kernel cannot load livepatches", .0.display())]
    NoLivepatch(PathBuf),
    /// The build tree has no compile records.
    #[error("{}: no kbuild .cmd records found; was the tree built?", .0.display())]
    NoUnits(PathBuf),
    /// `modules.order` has a line that names no module.
    #[error("{}: bad line {line:?}", path.display())]
    ModulesOrder {
        /// `modules.order`.
        path: PathBuf,
        /// The line.
        line: String,
    },
    /// A module target has no `.ko` in the build tree.
    #[error("module {module}: no .ko in {}", build.display())]
    NoModuleKo {
        /// The module.
        module: String,
        /// The build tree.
        build: PathBuf,
    },
    /// The compiler the build tree recorded cannot be run.
    #[error("cannot run the kernel's compiler `{cc}`: {source}")]
    CompilerNotRunnable {
        /// The compiler command.
        cc: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The compiler here is not the one that built vmlinux.
    #[error(
        "compiler mismatch: {} was built by `{built}`, but `{cc}`{place} is `{version}`; a different compiler inlines differently and the diff would be wrong",
        vmlinux.display()
    )]
    CompilerMismatch {
        /// The target's vmlinux.
        vmlinux: PathBuf,
        /// The compiler its `.comment` names.
        built: String,
        /// The compiler command.
        cc: String,
        /// Its version line.
        version: String,
        /// Empty on the host, else ` in the SUITE build root DIR`.
        place: String,
    },
    /// vmlinux is not an ELF file.
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: object::Error,
    },
    /// A `.cmd` record could not be read.
    #[error(transparent)]
    Kbuild(#[from] KbuildError),
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A kernel to patch.
#[derive(Debug, Clone)]
pub struct TargetTree {
    /// Pristine source tree (never written).
    pub src: PathBuf,
    /// Build tree (`O=` directory, or `src` for an in-tree build).
    pub build: PathBuf,
    /// The running kernel's unstripped vmlinux.
    pub vmlinux: PathBuf,
    /// Module.symvers (exports).
    pub symvers: PathBuf,
    /// The kernel config.
    pub config: HashMap<String, String>,
    /// Every compiled C unit.
    pub units: Vec<UnitCommand>,
    /// Module name (with `_`) of each object linked into a module, and the
    /// module's `.ko` in the build tree.
    pub module_of: HashMap<PathBuf, (String, PathBuf)>,
    /// The tree the livepatch module is built against (`make -C … M=`):
    /// the build tree, or the target's headers in tree-less mode.
    pub module_build: PathBuf,
    /// How the target was described.
    pub mode: TreeMode,
    /// Where its compile commands run: the host, or the build root of the
    /// target's own Debian release.
    pub toolchain: Toolchain,
}

/// How a [`TargetTree`] was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeMode {
    /// A built kernel tree with every unit's `.cmd` record.
    Built,
    /// Tree-less: a private directory prepared from the source and the
    /// config (`olddefconfig` + `prepare`), units compiled on demand; the
    /// target's vmlinux and headers come from elsewhere (a distribution).
    Prepared {
        /// The compiler named by `CONFIG_CC_VERSION_TEXT`.
        cc: String,
        /// The target's release (its vmlinux banner's), kbuild's
        /// `KERNELRELEASE` in the directory.
        release: String,
    },
}

impl TreeMode {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            TreeMode::Built => "tree",
            TreeMode::Prepared { .. } => "tree-less",
        }
    }
}

impl TargetTree {
    /// Describes a kernel build tree; checks what a livepatch build needs.
    pub fn from_build_tree(src: &Path, build: &Path) -> Result<Self, TreeError> {
        let need = |path: PathBuf, what: &'static str| {
            if path.exists() {
                Ok(path)
            } else {
                Err(TreeError::MissingInBuild {
                    path,
                    what,
                    build: build.to_path_buf(),
                })
            }
        };
        check_source(src)?;
        let config_path = need(build.join(".config"), "kernel config")?;
        let vmlinux = need(build.join("vmlinux"), "the linked kernel")?;
        let symvers = need(build.join("Module.symvers"), "exports, written by modpost")?;
        let config = read_livepatch_config(&config_path)?;
        let units = scan_c_units(build)?;
        if units.is_empty() {
            return Err(TreeError::NoUnits(build.to_path_buf()));
        }
        let module_of = modules(build)?;
        let build = build.canonicalize().at(build)?;
        Ok(TargetTree {
            src: src.canonicalize().at(src)?,
            module_build: build.clone(),
            build,
            vmlinux,
            symvers,
            config,
            units,
            module_of,
            mode: TreeMode::Built,
            toolchain: Toolchain::Host,
        })
    }

    /// Describes a tree-less target: `prepared` is a kbuild output directory
    /// made from `src` and `config`, holding the units compiled so far;
    /// `vmlinux` and `headers` (with Module.symvers) are the target's own,
    /// `release` its kernel release; `toolchain` is where the directory was
    /// prepared.
    #[allow(clippy::too_many_arguments)]
    pub fn prepared(
        src: &Path,
        prepared: &Path,
        vmlinux: &Path,
        headers: &Path,
        cc: &str,
        release: &str,
        units: Vec<UnitCommand>,
        module_of: HashMap<PathBuf, (String, PathBuf)>,
        toolchain: Toolchain,
    ) -> Result<Self, TreeError> {
        let config_path = prepared.join(".config");
        let config = read_livepatch_config(&config_path)?;
        let symvers = headers.join("Module.symvers");
        for (p, what) in [
            (vmlinux, "the target's vmlinux"),
            (&symvers, "exports of the target"),
        ] {
            if !p.is_file() {
                return Err(TreeError::Missing {
                    path: p.to_path_buf(),
                    what,
                });
            }
        }
        let canon = |p: &Path| p.canonicalize().at(p);
        Ok(TargetTree {
            src: canon(src)?,
            build: canon(prepared)?,
            vmlinux: canon(vmlinux)?,
            symvers,
            config,
            units,
            module_of,
            module_build: canon(headers)?,
            mode: TreeMode::Prepared {
                cc: cc.to_string(),
                release: release.to_string(),
            },
            toolchain,
        })
    }

    /// The object a unit's code runs in: `vmlinux` or a module name.
    pub fn target_of(&self, object: &Path) -> String {
        self.module_of
            .get(object)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| "vmlinux".into())
    }

    /// The `.ko` of a module target.
    pub fn module_ko(&self, name: &str) -> Option<&Path> {
        self.module_of
            .values()
            .find(|(m, _)| m == name)
            .map(|(_, ko)| ko.as_path())
    }

    /// The linked file of a target object: vmlinux, or a module's `.ko`.
    pub fn target_file(&self, name: &str) -> Result<&Path, TreeError> {
        if name == "vmlinux" {
            return Ok(&self.vmlinux);
        }
        self.module_ko(name).ok_or_else(|| TreeError::NoModuleKo {
            module: name.to_string(),
            build: self.build.clone(),
        })
    }

    /// The compiler kbuild recorded must be the one that built vmlinux, or
    /// another package revision of the same version: then a warning (and
    /// pre-match decides). It runs where the target's compiles run.
    pub fn check_compiler(&self) -> Result<Option<String>, TreeError> {
        use object::{Object as _, ObjectSection as _};
        let cc = self.units[0]
            .command
            .split_whitespace()
            .next()
            .unwrap_or("gcc")
            .to_string();
        let mut command = std::process::Command::new(&cc);
        command.arg("--version").current_dir(&self.build);
        let out = match self.toolchain.run(&mut command, &[]) {
            Ok(out) | Err(ProcessError::Failed { output: out, .. }) => out,
            Err(ProcessError::Spawn { source, .. }) => {
                return Err(TreeError::CompilerNotRunnable { cc, source });
            }
        };
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let data = crate::files::read_elf_without_dwarf(&self.vmlinux)?;
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).map_err(
            |source| TreeError::Elf {
                path: self.vmlinux.clone(),
                source,
            },
        )?;
        let comment = file
            .section_by_name(".comment")
            .and_then(|s| s.data().ok())
            .map(|d| String::from_utf8_lossy(d).replace('\0', "\n"))
            .unwrap_or_default();
        // `gcc (Debian 12.2.0-14+deb12u1) 12.2.0` vs `GCC: (Debian 12.2.0-14+deb12u1) 12.2.0`.
        let tail = version.split_once(' ').map_or(version.as_str(), |x| x.1);
        if tail.is_empty() || !comment.lines().any(|l| l.ends_with(tail)) {
            let built = comment
                .lines()
                .find(|l| l.starts_with("GCC") || l.contains("clang"))
                .unwrap_or("unknown")
                .to_string();
            if let crate::compiler::Difference::Revision { want, have } =
                crate::compiler::compare(&built, &version)
            {
                return Ok(Some(crate::compiler::revision_warning(&cc, &want, &have)));
            }
            return Err(TreeError::CompilerMismatch {
                vmlinux: self.vmlinux.clone(),
                built,
                cc,
                version,
                place: match self.toolchain {
                    Toolchain::Host => String::new(),
                    _ => format!(" {}", self.toolchain.place()),
                },
            });
        }
        Ok(None)
    }
}

/// A kernel source tree has a top Makefile and `kernel/`.
pub fn check_source(src: &Path) -> Result<(), TreeError> {
    if !src.join("Makefile").is_file() || !src.join("kernel").is_dir() {
        return Err(TreeError::NotSource(src.to_path_buf()));
    }
    Ok(())
}

/// Reads a `.config` and checks the kernel can load livepatches.
fn read_livepatch_config(path: &Path) -> Result<HashMap<String, String>, TreeError> {
    let text = crate::files::read_to_string(path)?;
    let config = parse_config(&text);
    if config.get("CONFIG_LIVEPATCH").map(String::as_str) != Some("y") {
        return Err(TreeError::NoLivepatch(path.to_path_buf()));
    }
    Ok(config)
}

/// `CONFIG_X=value` lines of a `.config`.
pub fn parse_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Objects of each module, from `modules.order` and the `.mod` files.
fn modules(build: &Path) -> Result<HashMap<PathBuf, (String, PathBuf)>, TreeError> {
    let mut out = HashMap::new();
    let order = build.join("modules.order");
    let Ok(text) = std::fs::read_to_string(&order) else {
        return Ok(out);
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let module_obj = PathBuf::from(line);
        let name = module_obj
            .file_stem()
            .map(|s| s.to_string_lossy().replace('-', "_"))
            .ok_or_else(|| TreeError::ModulesOrder {
                path: order.clone(),
                line: line.to_string(),
            })?;
        let ko = build.join(module_obj.with_extension("ko"));
        let mod_file = build.join(module_obj.with_extension("mod"));
        let members = std::fs::read_to_string(&mod_file).unwrap_or_else(|_| line.to_string());
        for member in members.split_whitespace() {
            out.insert(PathBuf::from(member), (name.clone(), ko.clone()));
        }
        out.insert(module_obj.clone(), (name.clone(), ko.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_lose_quotes() {
        let c =
            parse_config("# c\nCONFIG_LIVEPATCH=y\nCONFIG_CC_VERSION_TEXT=\"gcc (Debian) 12\"\n");
        assert_eq!(c["CONFIG_LIVEPATCH"], "y");
        assert_eq!(c["CONFIG_CC_VERSION_TEXT"], "gcc (Debian) 12");
    }
}
