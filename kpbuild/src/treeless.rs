//! Tree-less mode: a target described by its source, config, vmlinux and
//! module headers instead of a built tree. A private kbuild output
//! directory is prepared once per (source, config, compiler) and cached;
//! the units a patch touches are compiled there on demand, and their `.cmd`
//! records are then replayed exactly like a built tree's. Everything after
//! [`target_tree`] is the tree mode's code path.

use crate::build::{BuildArgs, TargetArgs};
use crate::tree::TargetTree;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The one description of the target every later step works from, whichever
/// way the command line gave it.
/// `laps` receives the time of the long steps a tree-less target may take
/// (`fetch` of a Debian release, `prepare` of the private build directory).
pub fn target_tree(
    args: &BuildArgs,
    target: &TargetArgs,
    patches: &[(PathBuf, String)],
    progress: &dyn Fn(&str),
    laps: &mut Vec<(&'static str, f64)>,
) -> Result<TargetTree, String> {
    let given = |p: &Path| !p.as_os_str().is_empty();
    if let Some(release) = &target.debian {
        if given(&args.build) {
            return Err("--debian and --build exclude each other".into());
        }
        let start = std::time::Instant::now();
        let k = crate::debian::fetch(release, progress)?;
        laps.push(("fetch", start.elapsed().as_secs_f64()));
        let src = if given(&args.src) {
            args.src.clone()
        } else {
            k.src
        };
        let files = TreelessFiles {
            config: &k.config,
            vmlinux: &k.vmlinux,
            headers: &k.headers,
            modules: Some(&k.modules),
        };
        return prepared_tree(&src, &files, patches, progress, laps);
    }
    if !given(&args.build) {
        let (Some(config), Some(vmlinux), Some(headers)) =
            (&target.config, &target.vmlinux, &target.headers)
        else {
            return Err(
                "describe the target with --build, or with --config, --vmlinux and --headers (tree-less), or with --debian RELEASE".into(),
            );
        };
        if !given(&args.src) {
            return Err("--src is required (the exact source of the target kernel)".into());
        }
        let files = TreelessFiles {
            config,
            vmlinux,
            headers,
            modules: target.modules.as_deref(),
        };
        return prepared_tree(&args.src, &files, patches, progress, laps);
    }
    if !given(&args.src) {
        return Err("--src is required with --build".into());
    }
    if target.config.is_some() || target.headers.is_some() || target.modules.is_some() {
        return Err(
            "--config, --headers and --modules describe a target without a built tree; drop --build or them"
                .into(),
        );
    }
    let mut tree = TargetTree::from_build_tree(&args.src, &args.build)?;
    if let Some(v) = &target.vmlinux {
        tree.vmlinux = v.clone();
    }
    Ok(tree)
}

/// The compiler `CONFIG_CC_VERSION_TEXT` names, checked against the one on
/// this machine: (command, version line).
pub fn config_compiler(config: &str) -> Result<(String, String), String> {
    let want = crate::tree::parse_config(config)
        .remove("CONFIG_CC_VERSION_TEXT")
        .ok_or("the config has no CONFIG_CC_VERSION_TEXT: which compiler built the kernel?")?;
    let cc = want.split_whitespace().next().unwrap_or("gcc").to_string();
    let out = Command::new(&cc).arg("--version").output().map_err(|e| {
        // `x86_64-linux-gnu-gcc-12` and `gcc-12` come with Debian's gcc-12.
        let package = cc
            .rsplit_once("gcc-")
            .filter(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .map(|(_, n)| format!(" (on Debian: apt-get install gcc-{n})"))
            .unwrap_or_default();
        format!(
            "the kernel was built by `{want}`, but `{cc}` cannot be run here: {e}; install that compiler{package}"
        )
    })?;
    let have = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if have != want {
        return Err(format!(
            "compiler mismatch: the kernel was built by `{want}`, but `{cc}` here is `{have}`"
        ));
    }
    Ok((cc, have))
}

fn make(src: &Path, out: &Path, cc: &str) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .arg(format!("CC={cc}"))
        .arg("-s");
    c
}

/// The cache key and directory of the prepared build directory for a
/// canonical source path, a config and the compiler's version line.
fn prepared_key(
    src: &Path,
    config_text: &str,
    cc_version: &str,
) -> Result<(String, PathBuf), String> {
    let makefile = std::fs::read(src.join("Makefile")).map_err(|e| e.to_string())?;
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
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = kimage::cache_root().join("prepared").join(&key);
    Ok((key, dir))
}

/// The private build directory tree-less mode prepares for `src` and
/// `config` (it exists once a build has prepared it), and the compiler
/// command the config names.
pub fn prepared_dir(src: &Path, config: &Path) -> Result<(PathBuf, String), String> {
    let src = src
        .canonicalize()
        .map_err(|e| format!("{}: {e}", src.display()))?;
    let config_text =
        std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let (cc, cc_version) = config_compiler(&config_text)?;
    let (_, dir) = prepared_key(&src, &config_text, &cc_version)?;
    Ok((dir, cc))
}

/// Prepares (or reuses) the private build directory and compiles the
/// changed units in it.
/// The target's files in tree-less mode.
struct TreelessFiles<'a> {
    config: &'a Path,
    vmlinux: &'a Path,
    headers: &'a Path,
    /// `/lib/modules/RELEASE`, where module targets are found.
    modules: Option<&'a Path>,
}

fn prepared_tree(
    src: &Path,
    files: &TreelessFiles<'_>,
    patches: &[(PathBuf, String)],
    progress: &dyn Fn(&str),
    laps: &mut Vec<(&'static str, f64)>,
) -> Result<TargetTree, String> {
    let TreelessFiles {
        config,
        vmlinux,
        headers,
        modules,
    } = *files;
    let src = src
        .canonicalize()
        .map_err(|e| format!("{}: {e}", src.display()))?;
    if !src.join("Makefile").is_file() || !src.join("kernel").is_dir() {
        return Err(format!(
            "{}: not a kernel source tree (no Makefile and kernel/)",
            src.display()
        ));
    }
    let config_text =
        std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    crate::identity::check_treeless(&src, &config_text, config, vmlinux, headers)?;
    let (cc, cc_version) = config_compiler(&config_text)?;
    let (key, dir) = prepared_key(&src, &config_text, &cc_version)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let done = dir.join(".kpbuild-prepared");
    if !done.exists() {
        let start = std::time::Instant::now();
        progress(&format!(
            "preparing a build directory for {} (olddefconfig + prepare, once): {}",
            src.display(),
            dir.display()
        ));
        std::fs::write(dir.join(".config"), &config_text)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        crate::process::run(make(&src, &dir, &cc).arg("olddefconfig"))
            .map_err(|e| e.to_string())?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        crate::process::run(
            make(&src, &dir, &cc)
                .arg(format!("-j{jobs}"))
                .arg("prepare"),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(&done, &key).map_err(|e| format!("{}: {e}", done.display()))?;
        laps.push(("prepare", start.elapsed().as_secs_f64()));
    }
    let mut units = Vec::new();
    let mut module_of = std::collections::HashMap::new();
    for (p, text) in patches {
        for t in crate::patch::touched_files(text) {
            let ext = t.path.extension().and_then(|e| e.to_str());
            if ext == Some("h") {
                return Err(format!(
                    "{} changes the header {}: tree-less mode compiles only the changed .c files and cannot know which units include a header; use a built tree (--build)",
                    p.display(),
                    t.path.display()
                ));
            }
            if ext != Some("c") || t.created {
                continue;
            }
            let object = t.path.with_extension("o");
            progress(&format!(
                "compiling {} in the prepared directory",
                object.display()
            ));
            crate::process::run(make(&src, &dir, &cc).arg(&object))
                .map_err(|e| format!("{}: is it built by this config? {e}", object.display()))?;
            let name = object.file_name().expect("file").to_string_lossy();
            let cmd_file = dir
                .join(object.parent().unwrap_or(Path::new("")))
                .join(format!(".{name}.cmd"));
            let unit = crate::kbuild::UnitCommand::parse(&cmd_file).map_err(|e| e.to_string())?;
            if unit.command.contains("-DMODULE ") {
                let name = module_name(&unit.command).ok_or_else(|| {
                    format!(
                        "{}: built into a module, but its command has no KBUILD_MODNAME",
                        cmd_file.display()
                    )
                })?;
                let Some(modules) = modules else {
                    return Err(format!(
                        "{} is built into the module {name}: give the target's installed modules with --modules /lib/modules/RELEASE",
                        object.display()
                    ));
                };
                let ko = target_module(modules, &name)?;
                module_of.insert(object.clone(), (name.replace('-', "_"), ko));
            }
            units.push(unit);
        }
    }
    if units.is_empty() {
        return Err("the patches change no .c file that tree-less mode could compile".into());
    }
    TargetTree::prepared(&src, &dir, vmlinux, headers, &cc, units, module_of)
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
fn target_module(modules: &Path, name: &str) -> Result<PathBuf, String> {
    let wanted = name.replace('-', "_");
    let mut found = Vec::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
    let (path, ext) = match found.len() {
        1 => found.remove(0),
        0 => {
            return Err(format!(
                "module {name}: no {name}.ko in {} (is it the target's /lib/modules/RELEASE?)",
                modules.join("kernel").display()
            ));
        }
        _ => {
            let all: Vec<String> = found.iter().map(|(p, _)| p.display().to_string()).collect();
            return Err(format!(
                "module {name}: more than one file: {}",
                all.join(", ")
            ));
        }
    };
    let tool = match ext {
        ".ko" => return Ok(path),
        ".ko.xz" => "xz",
        ".ko.zst" => "zstd",
        _ => "gzip",
    };
    let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let digest: String = Sha256::digest(&data)[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = kimage::cache_root()
        .join("target-modules")
        .join(format!("{wanted}-{digest}.ko"));
    if out.is_file() {
        return Ok(out);
    }
    let bytes = crate::process::run(Command::new(tool).arg("-dc").arg(&path))
        .map_err(|e| format!("decompressing {}: {e}", path.display()))?
        .stdout;
    let parent = out.parent().expect("has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    crate::files::write_atomic(&out, &bytes)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_name_from_command() {
        let cmd = "gcc -Wall -DMODULE -DKBUILD_BASENAME='\"binfmt_misc\"' -DKBUILD_MODNAME='\"binfmt_misc\"' -D__KBUILD_MODNAME=kmod_binfmt_misc -c -o fs/binfmt_misc.o fs/binfmt_misc.c";
        assert_eq!(module_name(cmd).as_deref(), Some("binfmt_misc"));
        assert_eq!(module_name("gcc -c -o x.o x.c"), None);
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
        let e = target_module(&dir, "absent").unwrap_err();
        assert!(e.contains("no absent.ko in"), "{e}");
        std::fs::create_dir_all(dir.join("kernel/drivers")).unwrap();
        std::fs::write(dir.join("kernel/drivers/nls_ascii.ko.xz"), b"xz").unwrap();
        let e = target_module(&dir, "nls_ascii").unwrap_err();
        assert!(e.contains("more than one file"), "{e}");
        let e = target_module(&dir.join("missing"), "x").unwrap_err();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
