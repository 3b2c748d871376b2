//! Source patches: which files they touch, whether kpbuild can handle each,
//! and applying them to a private copy of the source.

use crate::files::{FileError, PathContext};
use crate::process::ProcessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A patch that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// A patch file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a unified diff.
    #[error("{}: not a unified diff (no ---/+++ file headers)", .0.display())]
    NotADiff(PathBuf),
    /// A file no livepatch can change (refused).
    #[error("{} changes {}: {why}", patch.display(), file.display())]
    Unsupported {
        /// The patch.
        patch: PathBuf,
        /// The file it changes.
        file: PathBuf,
        /// Why that cannot be live patched.
        why: &'static str,
    },
    /// A new C file, which the kernel's build does not compile (refused).
    #[error(
        "{} adds {}: a new source file is not built by this kernel's build",
        patch.display(),
        file.display()
    )]
    NewSource {
        /// The patch.
        patch: PathBuf,
        /// The file it adds.
        file: PathBuf,
    },
    /// A path outside the source tree.
    #[error("the patches name a path outside the tree: {}", .0.display())]
    OutsideTree(PathBuf),
    /// `patch` could not be started.
    #[error("cannot run patch: {0}")]
    Spawn(std::io::Error),
    /// The patch does not apply.
    #[error(
        "{} does not apply to {}:\n{}{}",
        patch.display(),
        src.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )]
    DoesNotApply {
        /// The patch.
        patch: PathBuf,
        /// The source tree.
        src: PathBuf,
        /// What `patch` said.
        output: std::process::Output,
    },
}

impl PatchError {
    /// Whether the patch is refused (it cannot be live patched) rather than
    /// bad input.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Unsupported { .. } | Self::NewSource { .. })
    }
}

/// A patch that has been read and checked.
#[derive(Debug, Clone)]
pub struct SourcePatch {
    /// Its absolute path.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The files it touches.
    pub touched: Vec<Touched>,
}

/// Reads and checks the patches: each is a unified diff touching only
/// files a livepatch can change.
pub fn check(paths: &[PathBuf]) -> Result<Vec<SourcePatch>, PatchError> {
    let mut patches = Vec::new();
    for p in paths {
        let text = crate::files::read_to_string(p)?;
        let touched = touched_files(&text);
        if touched.is_empty() {
            return Err(PatchError::NotADiff(p.clone()));
        }
        for t in &touched {
            if let Some(why) = unsupported(&t.path) {
                return Err(PatchError::Unsupported {
                    patch: p.clone(),
                    file: t.path.clone(),
                    why,
                });
            }
        }
        patches.push(SourcePatch {
            path: p.canonicalize().at(p)?,
            text,
            touched,
        });
    }
    Ok(patches)
}

/// A file a patch touches, relative to the source root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Path relative to the tree (after stripping `a/`/`b/`).
    pub path: PathBuf,
    /// Created by the patch.
    pub created: bool,
    /// Deleted by the patch.
    pub deleted: bool,
}

/// Files a unified diff touches (`-p1` paths).
pub fn touched_files(text: &str) -> Vec<Touched> {
    let mut out: Vec<Touched> = Vec::new();
    let mut old: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("--- ") {
            old = Some(path_word(rest));
        } else if let Some(rest) = line.strip_prefix("+++ ")
            && let Some(o) = old.take()
        {
            let new = path_word(rest);
            let created = o == "/dev/null";
            let deleted = new == "/dev/null";
            let name = if deleted { &o } else { &new };
            let path = PathBuf::from(strip_one(name));
            if !out.iter().any(|t| t.path == path) {
                out.push(Touched {
                    path,
                    created,
                    deleted,
                });
            }
        }
    }
    out
}

fn path_word(rest: &str) -> String {
    rest.split('\t').next().unwrap_or(rest).trim().to_string()
}

fn strip_one(p: &str) -> &str {
    if p == "/dev/null" {
        return p;
    }
    p.split_once('/').map_or(p, |(_, rest)| rest)
}

/// Why a file cannot be part of a livepatch, if it cannot.
pub fn unsupported(path: &Path) -> Option<&'static str> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("Kconfig") {
        return Some("a Kconfig change changes the configuration, which a running kernel cannot");
    }
    if name == "Makefile" || name == "Kbuild" || name.starts_with("Makefile.") {
        return Some("a build-system change cannot be live patched");
    }
    if ext == "S" || ext == "s" {
        return Some(
            "assembly cannot be live patched: its functions have no ftrace entry, and its callers cannot be found from C",
        );
    }
    if name.ends_with(".lds") || name.ends_with(".lds.S") || name.ends_with(".lds.h") {
        return Some("a linker-script change cannot be live patched");
    }
    if ext == "c" || ext == "h" {
        return None;
    }
    if path.starts_with("Documentation") || matches!(ext.as_str(), "rst" | "txt" | "md") {
        return None; // no effect on the build
    }
    Some("kpbuild handles changes to C sources and headers only")
}

/// Makes a private view of `src` at `copy` and applies `patches` in order.
///
/// The view is a shadow tree: every entry of `src` appears as a symlink,
/// except along the paths of the files the patches touch, where directories
/// are real and touched files are real copies. `patch` therefore writes only
/// into the view, never through a link into `src`, and making the view costs
/// a few hundred symlinks instead of a copy of the whole tree. Compilers see
/// the same relative layout (`-fmacro-prefix-map` keeps `__FILE__` equal).
pub fn apply(src: &Path, copy: &Path, patches: &[SourcePatch]) -> Result<(), PatchError> {
    let touched = inside_tree(patches)?;
    shadow_tree(src, copy, &touched)?;
    for p in patches {
        apply_one(src, copy, p, false)?;
    }
    Ok(())
}

/// Every file the patches touch, each checked to be inside the tree.
pub fn inside_tree(patches: &[SourcePatch]) -> Result<Vec<PathBuf>, PatchError> {
    let touched: Vec<PathBuf> = patches
        .iter()
        .flat_map(|p| &p.touched)
        .map(|t| t.path.clone())
        .collect();
    if let Some(t) = touched.iter().find(|t| {
        t.is_absolute()
            || t.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    }) {
        return Err(PatchError::OutsideTree(t.clone()));
    }
    Ok(touched)
}

/// Applies one patch to the shadow tree `copy` of `src` with `patch`; with
/// `dry_run`, only whether it applies (a failing patch would otherwise
/// leave the hunks that did apply behind).
pub fn apply_one(
    src: &Path,
    copy: &Path,
    p: &SourcePatch,
    dry_run: bool,
) -> Result<(), PatchError> {
    let mut command = Command::new("patch");
    command.args([
        "-p1",
        "--batch",
        "--forward",
        "--no-backup-if-mismatch",
        "-r",
        "-",
    ]);
    if dry_run {
        command.arg("--dry-run");
    }
    command.arg("-d").arg(copy).arg("-i").arg(&p.path);
    match crate::process::run(&mut command) {
        Ok(_) => Ok(()),
        Err(ProcessError::Spawn { source, .. }) => Err(PatchError::Spawn(source)),
        Err(ProcessError::Failed { output, .. }) => Err(PatchError::DoesNotApply {
            patch: p.path.clone(),
            src: src.to_path_buf(),
            output,
        }),
    }
}

/// Builds the shadow tree described at [`apply`].
pub fn shadow_tree(src: &Path, copy: &Path, touched: &[PathBuf]) -> Result<(), FileError> {
    // Directories that must be real: every ancestor of a touched path.
    let mut real_dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    real_dirs.insert(PathBuf::new());
    for t in touched {
        let mut dir = t.parent();
        while let Some(d) = dir {
            real_dirs.insert(d.to_path_buf());
            dir = d.parent();
        }
    }
    let touched: std::collections::HashSet<&Path> = touched.iter().map(PathBuf::as_path).collect();
    for dir in &real_dirs {
        let target = copy.join(dir);
        crate::files::create_dir_all(&target)?;
        let source = src.join(dir);
        let Ok(entries) = std::fs::read_dir(&source) else {
            continue;
        }; // created by the patch
        for entry in entries {
            let entry = entry.at(&source)?;
            let rel = dir.join(entry.file_name());
            if real_dirs.contains(&rel) {
                continue;
            }
            let from = entry.path();
            let to = copy.join(&rel);
            if touched.contains(rel.as_path()) {
                std::fs::copy(&from, &to).at(&from)?;
            } else {
                std::os::unix::fs::symlink(&from, &to).at(&to)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_files_of_a_git_diff() {
        let text = "diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c\n--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-a\n+b\n\
--- /dev/null\n+++ b/fs/proc/new.h\t2024-01-01\n@@ -0,0 +1 @@\n+x\n";
        let t = touched_files(text);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            Touched {
                path: "fs/proc/cmdline.c".into(),
                created: false,
                deleted: false
            }
        );
        assert_eq!(
            t[1],
            Touched {
                path: "fs/proc/new.h".into(),
                created: true,
                deleted: false
            }
        );
    }

    #[test]
    fn shadow_tree_links_everything_but_touched_paths() {
        let root = std::env::temp_dir().join(format!("kpbuild-shadow-{}", std::process::id()));
        let src = root.join("src");
        std::fs::create_dir_all(src.join("fs/proc")).unwrap();
        std::fs::create_dir_all(src.join("include/linux")).unwrap();
        std::fs::write(src.join("fs/proc/cmdline.c"), "a").unwrap();
        std::fs::write(src.join("fs/proc/internal.h"), "h").unwrap();
        std::fs::write(src.join("include/linux/fs.h"), "f").unwrap();
        let copy = root.join("copy");
        shadow_tree(&src, &copy, &[PathBuf::from("fs/proc/cmdline.c")]).unwrap();
        assert!(
            copy.join("include")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            copy.join("fs/proc/internal.h")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let touched = copy.join("fs/proc/cmdline.c").symlink_metadata().unwrap();
        assert!(touched.file_type().is_file());
        std::fs::write(copy.join("fs/proc/cmdline.c"), "b").unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join("fs/proc/cmdline.c")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_to_string(copy.join("include/linux/fs.h")).unwrap(),
            "f"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unsupported_files_are_named_with_a_reason() {
        assert!(unsupported(Path::new("fs/proc/Kconfig")).is_some());
        assert!(unsupported(Path::new("fs/proc/Makefile")).is_some());
        assert!(unsupported(Path::new("arch/x86/entry/entry_64.S")).is_some());
        assert!(unsupported(Path::new("arch/x86/kernel/vmlinux.lds.S")).is_some());
        assert!(unsupported(Path::new("fs/proc/cmdline.c")).is_none());
        assert!(unsupported(Path::new("include/linux/fs.h")).is_none());
        assert!(unsupported(Path::new("Documentation/x.rst")).is_none());
        assert!(unsupported(Path::new("rust/kernel/lib.rs")).is_some());
    }
}
