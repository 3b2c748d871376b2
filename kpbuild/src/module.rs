//! The module-building stage: the C glue that registers the patch, the
//! kbuild run that links it with the prebuilt patch objects, and the
//! post-link conversion of the `.ko` into the livepatch ELF format.
//!
//! The patch objects come from the relocator in pre-link form (references
//! the loader cannot resolve are undefined `.klp.sym.OBJ.NAME,POS` symbols;
//! each replacement function has a global alias the glue names). kbuild
//! links a listed `.o` without a source as it is, so the module is:
//!
//! ```text
//! obj-m      := NAME.o
//! NAME-y     := kpb_glue.o kpb_patch0.o kpb_patch1.o ...
//! ```
//!
//! modpost runs with `KBUILD_MODPOST_WARN=1` (it would stop on the still
//! undefined `.klp.sym.*` symbols); [`build_module`] makes up for the check
//! it silenced by requiring every undefined symbol left after the conversion
//! to be exported.

use crate::process::ProcessError;
use crate::toolchain::Toolchain;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The glue template (`kmod-template/livepatch.c.tmpl`).
pub const GLUE_TEMPLATE: &str = include_str!("../../kmod-template/livepatch.c.tmpl");

/// `kpbuild-macros.h`: what a patch's source can say to kpbuild (livepatch
/// callbacks); on the include path of every unit kpbuild compiles.
pub const MACROS_HEADER: &str = include_str!("../../kmod-template/kpbuild-macros.h");
/// kpbuild's `kpatch-macros.h`: kpatch's patch-author macros, so patches
/// written for kpatch-build build unchanged; on the same include path.
pub const KPATCH_MACROS_HEADER: &str = include_str!("../../kmod-template/kpatch-macros.h");
/// kpbuild's `kpatch-syscall.h`: `KPATCH_SYSCALL_DEFINE0..6`.
pub const KPATCH_SYSCALL_HEADER: &str = include_str!("../../kmod-template/kpatch-syscall.h");

/// File name of the rendered glue in the work directory.
pub const GLUE_SOURCE: &str = "kpb_glue.c";

/// Prefix of the glue's own C identifiers; replacement symbols may not use it.
const GLUE_PREFIX: &str = "kpb_glue_";

/// Longest module name the kernel accepts (`MODULE_NAME_LEN - 1`).
pub const MAX_MODULE_NAME: usize = 55;

/// Longest symbol name kallsyms handles (`KSYM_NAME_LEN - 1`).
const MAX_SYMBOL_NAME: usize = 511;

/// One function the patch replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedFunc {
    /// The function's name in the running kernel (`klp_func.old_name`).
    pub old_name: String,
    /// The global symbol of the replacement in the patch objects
    /// (`klp_func.new_func`), a C identifier such as `__kpb_new_0`.
    pub new_symbol: String,
    /// Position among same-named symbols in kallsyms, 0 if unique
    /// (`klp_func.old_sympos`).
    pub sympos: u32,
}

/// One patched object: vmlinux or a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedObject {
    /// The module name (with `_`), or `None` for vmlinux.
    pub name: Option<String>,
    /// The functions replaced in it.
    pub funcs: Vec<PatchedFunc>,
    /// Its livepatch callbacks: (kind as in `struct klp_callbacks`, global
    /// symbol of the function in the patch objects), one of each kind.
    pub callbacks: Vec<(String, String)>,
}

/// What the livepatch module registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Module name, also the patch's name under `/sys/kernel/livepatch/`
    /// once `-` is read as `_`.
    pub name: String,
    /// `klp_patch.replace`: the patch replaces all earlier livepatches.
    pub replace: bool,
    /// The patched objects.
    pub objects: Vec<PatchedObject>,
}

/// Errors of the module-building stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// The module name is not usable.
    #[error("invalid module name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The spec cannot be turned into glue.
    #[error("invalid livepatch module description: {0}")]
    InvalidSpec(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// kbuild failed.
    #[error("kbuild failed to build module {name}: {source}")]
    Kbuild {
        /// The module name.
        name: String,
        /// The failed `make`.
        source: Box<ProcessError>,
    },
    /// kbuild succeeded but the module is not where it should be.
    #[error("kbuild did not produce {0}")]
    MissingOutput(PathBuf),
    /// The livepatch conversion refused the module.
    #[error("{path}: livepatch conversion failed: {source}")]
    Convert {
        /// The module.
        path: PathBuf,
        /// The cause.
        source: Box<relocator::Error>,
    },
    /// The module needs symbols the kernel does not export.
    #[error(
        "{path} needs symbols the target kernel does not export \
         (they must become .klp.sym references): {}",
        symbols.join(", ")
    )]
    Unexported {
        /// The module.
        path: PathBuf,
        /// The symbols.
        symbols: Vec<String>,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModuleError + '_ {
    move |source| ModuleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a module name: 1 to 55 bytes of `[A-Za-z0-9_-]`, not starting
/// with `-`, and not one of the names of the module's own parts.
pub fn validate_module_name(name: &str) -> Result<(), ModuleError> {
    let bad = |reason: &str| {
        Err(ModuleError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_MODULE_NAME {
        return bad(&format!(
            "it is {} bytes long; the kernel allows at most {MAX_MODULE_NAME}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return bad(&format!(
            "it contains {c:?}; only letters, digits, '_' and '-' are allowed"
        ));
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    if name == "kpb_glue" || is_patch_part(name) {
        return bad("kpbuild uses that name for a part of the module");
    }
    Ok(())
}

fn is_patch_part(name: &str) -> bool {
    name.strip_prefix("kpb_patch")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks everything [`render_glue`] and the kernel rely on.
pub fn validate_spec(spec: &ModuleSpec) -> Result<(), ModuleError> {
    validate_module_name(&spec.name)?;
    let bad = |msg: String| Err(ModuleError::InvalidSpec(msg));
    if spec.objects.is_empty() {
        return bad("no patched object".into());
    }
    let mut objects = HashSet::new();
    for object in &spec.objects {
        let label = object.name.as_deref().unwrap_or("vmlinux");
        if let Some(name) = &object.name {
            if name.is_empty()
                || name.len() > MAX_MODULE_NAME
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return bad(format!(
                    "object `{name}` is not a loaded module's name (1 to {MAX_MODULE_NAME} \
                     letters, digits or '_'; the kernel spells '-' in module names as '_')"
                ));
            }
            if name == "vmlinux" {
                return bad("vmlinux is the object with no name, not one named `vmlinux`".into());
            }
        }
        if !objects.insert(object.name.clone()) {
            return bad(format!("object {label} is listed twice"));
        }
        if object.funcs.is_empty() {
            return bad(format!("object {label} has no patched function"));
        }
        let mut funcs = HashSet::new();
        for func in &object.funcs {
            let name = &func.old_name;
            if name.is_empty()
                || name.len() > MAX_SYMBOL_NAME
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c))
            {
                return bad(format!(
                    "function `{name}` in {label} is not a kernel symbol name"
                ));
            }
            if !funcs.insert((name, func.sympos)) {
                return bad(format!(
                    "function {name},{} in {label} is listed twice",
                    func.sympos
                ));
            }
            if !is_c_identifier(&func.new_symbol) || func.new_symbol.starts_with(GLUE_PREFIX) {
                return bad(format!(
                    "replacement symbol `{}` for {name} is not a C identifier outside `{GLUE_PREFIX}*`",
                    func.new_symbol
                ));
            }
        }
    }
    Ok(())
}

/// Renders the C glue for `spec` from [`GLUE_TEMPLATE`]. The spec should
/// have passed [`validate_spec`] ([`build_module`] checks it).
pub fn render_glue(spec: &ModuleSpec) -> String {
    let mut declared = BTreeSet::new();
    let mut decls = Vec::new();
    let mut arrays = Vec::new();
    let mut objects = Vec::new();
    for (i, object) in spec.objects.iter().enumerate() {
        let mut array = format!("static struct klp_func {GLUE_PREFIX}funcs_{i}[] = {{\n");
        for func in &object.funcs {
            if declared.insert(func.new_symbol.as_str()) {
                decls.push(format!("extern void {}(void);", func.new_symbol));
            }
            array.push_str(&format!(
                "\t{{\n\t\t.old_name = \"{}\",\n\t\t.new_func = {},\n\t\t.old_sympos = {},\n\t}},\n",
                func.old_name, func.new_symbol, func.sympos
            ));
        }
        array.push_str("\t{ }\n};");
        arrays.push(array);
        let name = match &object.name {
            None => "NULL, /* vmlinux */".to_string(),
            Some(name) => format!("\"{name}\","),
        };
        let mut callbacks = String::new();
        if !object.callbacks.is_empty() {
            callbacks.push_str("\t\t.callbacks = {\n");
            for (kind, symbol) in &object.callbacks {
                let ret = if kind == "pre_patch" { "int" } else { "void" };
                if declared.insert(symbol.as_str()) {
                    decls.push(format!("extern {ret} {symbol}(struct klp_object *obj);"));
                }
                callbacks.push_str(&format!("\t\t\t.{kind} = {symbol},\n"));
            }
            callbacks.push_str("\t\t},\n");
        }
        objects.push(format!(
            "\t{{\n\t\t.name = {name}\n\t\t.funcs = {GLUE_PREFIX}funcs_{i},\n{callbacks}\t}},"
        ));
    }
    GLUE_TEMPLATE
        .replace("@@MODULE_NAME@@", &spec.name)
        .replace("@@NEW_FUNC_DECLS@@", &decls.join("\n"))
        .replace("@@FUNC_ARRAYS@@", &arrays.join("\n\n"))
        .replace("@@OBJECTS@@", &objects.join("\n"))
        .replace("@@REPLACE@@", if spec.replace { "true" } else { "false" })
}

/// The `Kbuild` file linking the glue with `patch_count` patch objects.
fn render_kbuild(name: &str, patch_count: usize) -> String {
    let mut parts = vec!["kpb_glue.o".to_string()];
    parts.extend((0..patch_count).map(|i| format!("kpb_patch{i}.o")));
    format!(
        "# Generated by kpbuild: livepatch module {name}.\n\
         # kpb_patch*.o are prebuilt; kbuild links them as they are.\n\
         obj-m := {name}.o\n\
         {name}-y := {}\n",
        parts.join(" ")
    )
}

/// Builds the livepatch module `spec.name` in `work` against the kernel
/// build tree `kbuild_dir` (the `O=` tree with `Module.symvers`) and returns
/// the path of the finished `.ko`.
///
/// Writes the glue, a `Kbuild` and copies of `patch_objects` into `work`,
/// runs `make -C KBUILD_DIR M=WORK modules KBUILD_MODPOST_WARN=1`, converts
/// `NAME.ko` in place with [`relocator::klp::convert_to_livepatch`] and
/// checks that every symbol still undefined satisfies `exports`. `make`
/// runs where `toolchain` says: the target's own build root, when its
/// kbuild helpers and compiler are another release's.
pub fn build_module(
    spec: &ModuleSpec,
    patch_objects: &[PathBuf],
    kbuild_dir: &Path,
    work: &Path,
    exports: &dyn Fn(&str) -> bool,
    toolchain: &Toolchain,
) -> Result<PathBuf, ModuleError> {
    validate_spec(spec)?;
    if patch_objects.is_empty() {
        return Err(ModuleError::InvalidSpec(
            "no patch object to link into the module".into(),
        ));
    }
    std::fs::create_dir_all(work).map_err(io(work))?;
    // kbuild needs M= absolute.
    let work = &std::fs::canonicalize(work).map_err(io(work))?;

    let glue = work.join(GLUE_SOURCE);
    std::fs::write(&glue, render_glue(spec)).map_err(io(&glue))?;
    for (i, object) in patch_objects.iter().enumerate() {
        let dest = work.join(format!("kpb_patch{i}.o"));
        std::fs::copy(object, &dest).map_err(io(object))?;
        // With CONFIG_MODVERSIONS modpost reads every member's `.NAME.o.cmd`
        // (for `#SYMVER` lines); a prebuilt object exports nothing.
        let cmd = work.join(format!(".kpb_patch{i}.o.cmd"));
        std::fs::write(&cmd, "# prebuilt by kpbuild: no exported symbols\n").map_err(io(&cmd))?;
    }
    let kbuild = work.join("Kbuild");
    std::fs::write(&kbuild, render_kbuild(&spec.name, patch_objects.len())).map_err(io(&kbuild))?;

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(kbuild_dir)
        .arg(format!("M={}", work.display()))
        .arg(format!("-j{jobs}"))
        .arg("modules")
        .arg("KBUILD_MODPOST_WARN=1")
        // A caller's make state (jobserver fds, flags) must not leak in.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    toolchain
        .run(&mut make, &[work, kbuild_dir])
        .map_err(|source| ModuleError::Kbuild {
            name: spec.name.clone(),
            source: Box::new(source),
        })?;

    let ko = work.join(format!("{}.ko", spec.name));
    if !ko.is_file() {
        return Err(ModuleError::MissingOutput(ko));
    }
    let linked = std::fs::read(&ko).map_err(io(&ko))?;
    let converted =
        relocator::klp::convert_to_livepatch(&linked).map_err(|source| ModuleError::Convert {
            path: ko.clone(),
            source: Box::new(source),
        })?;
    let tmp = work.join(format!("{}.ko.kpb-tmp", spec.name));
    std::fs::write(&tmp, &converted).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &ko).map_err(io(&ko))?;

    let missing: Vec<String> = relocator::klp::undefined_symbols(&converted)
        .map_err(|source| ModuleError::Convert {
            path: ko.clone(),
            source: Box::new(source),
        })?
        .into_iter()
        .filter(|s| !exports(s))
        .collect();
    if !missing.is_empty() {
        return Err(ModuleError::Unexported {
            path: ko,
            symbols: missing,
        });
    }
    Ok(ko)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(old: &str, new: &str, pos: u32) -> PatchedFunc {
        PatchedFunc {
            old_name: old.into(),
            new_symbol: new.into(),
            sympos: pos,
        }
    }

    fn spec() -> ModuleSpec {
        ModuleSpec {
            name: "kpb_test".into(),
            replace: true,
            objects: vec![
                PatchedObject {
                    name: None,
                    funcs: vec![
                        func("cmdline_proc_show", "__kpb_new_0", 0),
                        func("meminfo_proc_show", "__kpb_new_1", 2),
                    ],
                    callbacks: vec![],
                },
                PatchedObject {
                    name: Some("ext4".into()),
                    funcs: vec![func("ext4_attr_show", "__kpb_new_2", 0)],
                    callbacks: vec![
                        ("pre_patch".into(), "kpb_u1_cb_pre_patch".into()),
                        ("post_unpatch".into(), "kpb_u1_cb_post_unpatch".into()),
                    ],
                },
            ],
        }
    }

    #[test]
    fn glue_registers_every_object_and_function() {
        let glue = render_glue(&spec());
        assert!(glue.starts_with("// SPDX-License-Identifier: GPL-2.0-only\n"));
        assert!(!glue.contains("@@"), "{glue}");
        for decl in [
            "extern void __kpb_new_0(void);",
            "extern void __kpb_new_1(void);",
            "extern void __kpb_new_2(void);",
        ] {
            assert_eq!(glue.matches(decl).count(), 1, "{decl}\n{glue}");
        }
        assert!(
            glue.contains(
                "static struct klp_func kpb_glue_funcs_0[] = {\n\
             \t{\n\
             \t\t.old_name = \"cmdline_proc_show\",\n\
             \t\t.new_func = __kpb_new_0,\n\
             \t\t.old_sympos = 0,\n\
             \t},\n\
             \t{\n\
             \t\t.old_name = \"meminfo_proc_show\",\n\
             \t\t.new_func = __kpb_new_1,\n\
             \t\t.old_sympos = 2,\n\
             \t},\n\
             \t{ }\n\
             };"
            ),
            "{glue}"
        );
        assert!(
            glue.contains(
                "static struct klp_object kpb_glue_objs[] = {\n\
             \t{\n\
             \t\t.name = NULL, /* vmlinux */\n\
             \t\t.funcs = kpb_glue_funcs_0,\n\
             \t},\n\
             \t{\n\
             \t\t.name = \"ext4\",\n\
             \t\t.funcs = kpb_glue_funcs_1,\n\
             \t\t.callbacks = {\n\
             \t\t\t.pre_patch = kpb_u1_cb_pre_patch,\n\
             \t\t\t.post_unpatch = kpb_u1_cb_post_unpatch,\n\
             \t\t},\n\
             \t},\n\
             \t{ }\n\
             };"
            ),
            "{glue}"
        );
        for decl in [
            "extern int kpb_u1_cb_pre_patch(struct klp_object *obj);",
            "extern void kpb_u1_cb_post_unpatch(struct klp_object *obj);",
        ] {
            assert_eq!(glue.matches(decl).count(), 1, "{decl}\n{glue}");
        }
        assert!(glue.contains(".replace = true,"));
        assert!(glue.contains("return klp_enable_patch(&kpb_glue_patch);"));
        assert!(glue.contains("MODULE_LICENSE(\"GPL\");"));
        assert!(glue.contains("MODULE_INFO(livepatch, \"Y\");"));
        assert!(glue.contains(".mod = THIS_MODULE,"));
        assert!(glue.contains("module_init(kpb_glue_init);"));
        assert!(glue.contains("module_exit(kpb_glue_exit);"));
    }

    #[test]
    fn glue_honours_replace_false_and_declares_once() {
        let mut s = spec();
        s.replace = false;
        s.objects[1].funcs[0].new_symbol = "__kpb_new_0".into();
        let glue = render_glue(&s);
        assert!(glue.contains(".replace = false,"));
        assert_eq!(glue.matches("extern void __kpb_new_0(void);").count(), 1);
    }

    #[test]
    fn module_names_are_checked() {
        for good in ["kpb_test", "livepatch-sample", "a", &"x".repeat(55), "_x9"] {
            validate_module_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(56) as &str, "at most 55"),
            ("has.dot", "'.'"),
            ("has space", "' '"),
            ("-x", "starts with '-'"),
            ("kpb_glue", "part of the module"),
            ("kpb_patch3", "part of the module"),
        ] {
            let err = validate_module_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("invalid module name"), "{err}");
        }
        validate_module_name("kpb_patch").unwrap();
    }

    #[test]
    fn specs_are_checked() {
        validate_spec(&spec()).unwrap();
        let check = |edit: &dyn Fn(&mut ModuleSpec), needle: &str| {
            let mut s = spec();
            edit(&mut s);
            let err = validate_spec(&s).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        check(&|s| s.objects.clear(), "no patched object");
        check(&|s| s.objects[1].name = Some("ext-4".into()), "'_'");
        check(&|s| s.objects[1].name = Some("vmlinux".into()), "no name");
        check(&|s| s.objects[1].name = None, "listed twice");
        check(&|s| s.objects[0].funcs.clear(), "no patched function");
        check(
            &|s| s.objects[0].funcs[0].old_name = "a\"b".into(),
            "not a kernel symbol",
        );
        check(
            &|s| s.objects[0].funcs[1] = func("cmdline_proc_show", "__kpb_new_9", 0),
            "listed twice",
        );
        check(
            &|s| s.objects[0].funcs[0].new_symbol = "a.b".into(),
            "C identifier",
        );
        check(
            &|s| s.objects[0].funcs[0].new_symbol = "kpb_glue_objs".into(),
            "C identifier",
        );
        check(&|s| s.name = "bad/name".into(), "invalid module name");
        // The same name at another position is fine.
        let mut s = spec();
        s.objects[0].funcs[1] = func("cmdline_proc_show", "__kpb_new_9", 1);
        validate_spec(&s).unwrap();
    }

    #[test]
    fn kbuild_lists_glue_and_patch_objects() {
        let k = render_kbuild("kpb_test", 2);
        assert!(k.contains("obj-m := kpb_test.o\n"));
        assert!(k.contains("kpb_test-y := kpb_glue.o kpb_patch0.o kpb_patch1.o\n"));
    }

    #[test]
    fn build_refuses_bad_input_before_running_make() {
        let work = std::env::temp_dir().join(format!("kpbuild-module-{}", std::process::id()));
        let mut s = spec();
        s.name = "bad name".into();
        let err = build_module(
            &s,
            &[PathBuf::from("x.o")],
            Path::new("/nonexistent"),
            &work,
            &|_| true,
            &Toolchain::Host,
        )
        .unwrap_err();
        assert!(matches!(err, ModuleError::InvalidName { .. }), "{err}");
        let err = build_module(
            &spec(),
            &[],
            Path::new("/nonexistent"),
            &work,
            &|_| true,
            &Toolchain::Host,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no patch object"), "{err}");
        assert!(!work.exists());
    }
}
