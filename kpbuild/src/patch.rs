//! Source patches: which files they touch, whether kpbuild can handle each,
//! and applying them to a private copy of the source.

use std::path::{Path, PathBuf};
use std::process::Command;

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
        return Some("assembly cannot be live patched");
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
pub fn apply(src: &Path, copy: &Path, patches: &[(PathBuf, String)]) -> Result<(), String> {
    let touched: Vec<PathBuf> = patches
        .iter()
        .flat_map(|(_, text)| touched_files(text))
        .map(|t| t.path)
        .collect();
    for t in &touched {
        if t.is_absolute()
            || t.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!(
                "the patches name a path outside the tree: {}",
                t.display()
            ));
        }
    }
    shadow_tree(src, copy, &touched)?;
    for (path, _) in patches {
        let out = Command::new("patch")
            .args([
                "-p1",
                "--batch",
                "--forward",
                "--no-backup-if-mismatch",
                "-r",
                "-",
                "-d",
            ])
            .arg(copy)
            .arg("-i")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run patch: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{} does not apply to {}:\n{}{}",
                path.display(),
                src.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Builds the shadow tree described at [`apply`].
pub fn shadow_tree(src: &Path, copy: &Path, touched: &[PathBuf]) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
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
        std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
        let source = src.join(dir);
        let Ok(entries) = std::fs::read_dir(&source) else {
            continue;
        }; // created by the patch
        for entry in entries {
            let entry = entry.map_err(|e| io(&source, e))?;
            let rel = dir.join(entry.file_name());
            if real_dirs.contains(&rel) {
                continue;
            }
            let from = entry.path();
            let to = copy.join(&rel);
            if touched.contains(rel.as_path()) {
                std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
            } else {
                std::os::unix::fs::symlink(&from, &to).map_err(|e| io(&to, e))?;
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
