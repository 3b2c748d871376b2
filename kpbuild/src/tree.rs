//! The target description every build step works from: a kernel source
//! tree, its build tree (kbuild `.cmd` records, vmlinux, Module.symvers,
//! modules), and the compiler that built it. A kernel build tree and a
//! distribution kernel's packages both converge on this.

use crate::kbuild::{UnitCommand, scan_c_units};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    pub fn from_build_tree(src: &Path, build: &Path) -> Result<Self, String> {
        let need = |p: PathBuf, what: &str| {
            if p.exists() {
                Ok(p)
            } else {
                Err(format!(
                    "{}: missing ({what}); is {} a built kernel tree?",
                    p.display(),
                    build.display()
                ))
            }
        };
        if !src.join("Makefile").is_file() || !src.join("kernel").is_dir() {
            return Err(format!(
                "{}: not a kernel source tree (no Makefile and kernel/)",
                src.display()
            ));
        }
        let config_path = need(build.join(".config"), "kernel config")?;
        let vmlinux = need(build.join("vmlinux"), "the linked kernel")?;
        let symvers = need(build.join("Module.symvers"), "exports, written by modpost")?;
        let config = read_livepatch_config(&config_path)?;
        let units = scan_c_units(build).map_err(|e| e.to_string())?;
        if units.is_empty() {
            return Err(format!(
                "{}: no kbuild .cmd records found; was the tree built?",
                build.display()
            ));
        }
        let module_of = modules(build)?;
        let build = build
            .canonicalize()
            .map_err(|e| format!("{}: {e}", build.display()))?;
        Ok(TargetTree {
            src: src
                .canonicalize()
                .map_err(|e| format!("{}: {e}", src.display()))?,
            module_build: build.clone(),
            build,
            vmlinux,
            symvers,
            config,
            units,
            module_of,
            mode: TreeMode::Built,
        })
    }

    /// Describes a tree-less target: `prepared` is a kbuild output directory
    /// made from `src` and `config`, holding the units compiled so far;
    /// `vmlinux` and `headers` (with Module.symvers) are the target's own.
    pub fn prepared(
        src: &Path,
        prepared: &Path,
        vmlinux: &Path,
        headers: &Path,
        cc: &str,
        units: Vec<UnitCommand>,
        module_of: HashMap<PathBuf, (String, PathBuf)>,
    ) -> Result<Self, String> {
        let config_path = prepared.join(".config");
        let config = read_livepatch_config(&config_path)?;
        let symvers = headers.join("Module.symvers");
        for (p, what) in [
            (vmlinux, "the target's vmlinux"),
            (&symvers, "exports of the target"),
        ] {
            if !p.is_file() {
                return Err(format!("{}: missing ({what})", p.display()));
            }
        }
        let canon = |p: &Path| {
            p.canonicalize()
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        Ok(TargetTree {
            src: canon(src)?,
            build: canon(prepared)?,
            vmlinux: canon(vmlinux)?,
            symvers,
            config,
            units,
            module_of,
            module_build: canon(headers)?,
            mode: TreeMode::Prepared { cc: cc.to_string() },
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
}

/// Reads a `.config` and checks the kernel can load livepatches.
fn read_livepatch_config(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = parse_config(&text);
    if config.get("CONFIG_LIVEPATCH").map(String::as_str) != Some("y") {
        return Err(format!(
            "{}: CONFIG_LIVEPATCH is not enabled; this kernel cannot load livepatches",
            path.display()
        ));
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
fn modules(build: &Path) -> Result<HashMap<PathBuf, (String, PathBuf)>, String> {
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
            .ok_or_else(|| format!("{}: bad line {line:?}", order.display()))?;
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
