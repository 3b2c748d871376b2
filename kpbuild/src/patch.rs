//! Source patches: which files they touch, whether kpbuild can handle each,
//! and applying them to a private copy of the source.

use crate::process;
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

/// Makes a private copy of `src` at `copy` (hard links: cheap, and nothing
/// is written through them), then applies `patches` in order. Files a patch
/// touches are unlinked first, so the original tree is never modified.
pub fn apply(src: &Path, copy: &Path, patches: &[(PathBuf, String)]) -> Result<(), String> {
    process::run(Command::new("cp").arg("-al").arg(src).arg(copy)).map_err(|e| e.to_string())?;
    for (path, text) in patches {
        for t in touched_files(text) {
            let file = copy.join(&t.path);
            if file.is_file() {
                let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let perms = std::fs::metadata(&file)
                    .map_err(|e| e.to_string())?
                    .permissions();
                std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                std::fs::write(&file, data).map_err(|e| format!("{}: {e}", file.display()))?;
                std::fs::set_permissions(&file, perms).map_err(|e| e.to_string())?;
            }
        }
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
