//! `kpbuild diff` on objects as a normal kbuild leaves them: compiled with
//! the unit's recorded command and then processed by the kernel's objtool
//! (ORC tables, return sites, IBT seal list), as kbuild does for a module's
//! object. No boot: the proof is the diff's verdict and its output.

use super::Ctx;
use std::path::Path;
use std::process::Command;

/// The module unit the case patches (a test-kernel sample).
const UNIT: &str = "samples/kobject/kobject-example.o";

/// Runs a command, failing with its stderr.
fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Compiles the unit from `source` into `out` with its recorded command
/// plus per-function sections, then runs objtool as kbuild recorded it.
fn kbuild_object(ctx: &Ctx, source: &Path, out: &Path) -> Result<(), String> {
    let build = &ctx.kernel.build;
    let cmd_file = build.join("samples/kobject/.kobject-example.o.cmd");
    let unit = kpbuild::kbuild::UnitCommand::parse(&cmd_file).map_err(|e| e.to_string())?;
    let replayed = unit
        .replay(
            build,
            &ctx.kernel.src,
            &ctx.kernel.src,
            out,
            &["-ffunction-sections", "-fdata-sections"],
        )
        .map_err(|e| e.to_string())?;
    // The same argument vector with the source file swapped for `source`.
    let original = ctx.kernel.src.join("samples/kobject/kobject-example.c");
    let mut compile = Command::new(replayed.get_program());
    compile.current_dir(build);
    for arg in replayed.get_args() {
        if Path::new(arg) == original {
            compile.arg(source);
        } else {
            compile.arg(arg);
        }
    }
    run(compile, "compiling kobject-example.c")?;
    let objtool_line = unit
        .command
        .split(" ; ")
        .find(|s| s.contains("objtool"))
        .ok_or_else(|| format!("{}: kbuild ran no objtool on {UNIT}", cmd_file.display()))?;
    let mut words: Vec<&str> = objtool_line.split_whitespace().collect();
    words.pop(); // the object kbuild named
    let (program, args) = words.split_first().ok_or("empty objtool command")?;
    let mut objtool = Command::new(build.join(program));
    objtool.args(args).arg(out).current_dir(build);
    run(objtool, "objtool")
}

/// The section names of an ELF file.
fn section_names(path: &Path) -> Result<Vec<String>, String> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file =
        object::File::parse(data.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file
        .sections()
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect())
}

/// A new helper called by a changed `foo_show`: the unit's ORC tables
/// change (more entries), which `kpbuild diff` refused before ORC entries
/// were split per function; now it patches, and its output carries no ORC.
pub(super) fn diff_objtool_processed_module_object(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("objtool-diff");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = ctx.kernel.src.join("samples/kobject/kobject-example.c");
    let text = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let old = "\treturn sysfs_emit(buf, \"%d\\n\", foo);";
    if !text.contains(old) {
        return Err(format!("{}: no `{old}`", src.display()));
    }
    let patched_text = text
        .replace(old, "\treturn sysfs_emit(buf, \"%d\\n\", kpb_e2e_twice(foo));")
        .replace(
            "static ssize_t foo_show(",
            "static noinline int kpb_e2e_twice(int v)\n{\n\treturn v * 2;\n}\n\nstatic ssize_t foo_show(",
        );
    let patched_src = dir.join("patched/kobject-example.c");
    std::fs::create_dir_all(patched_src.parent().expect("a directory"))
        .map_err(|e| e.to_string())?;
    std::fs::write(&patched_src, patched_text).map_err(|e| e.to_string())?;
    let (orig, patched) = (dir.join("orig.o"), dir.join("patched.o"));
    kbuild_object(ctx, &src, &orig)?;
    kbuild_object(ctx, &patched_src, &patched)?;
    for o in [&orig, &patched] {
        if !section_names(o)?.iter().any(|n| n == ".orc_unwind") {
            return Err(format!("{}: objtool wrote no .orc_unwind", o.display()));
        }
    }
    let output = dir.join("out.o");
    let args = kpbuild::diff::DiffArgs {
        original: orig.clone(),
        patched: patched.clone(),
        target: "kobject_example".into(),
        target_symbols: ctx.kernel.module("samples/kobject/kobject-example.ko"),
        output: output.clone(),
        symvers: Some(ctx.kernel.build.join("Module.symvers")),
        vmlinux: Some(ctx.kernel.vmlinux()),
        json: false,
        entry_sizes: Vec::new(),
        max_callers: elfdiff::callers::DEFAULT_MAX_CALLERS,
    };
    let code = kpbuild::diff::run(&args);
    if code != 0 {
        return Err(format!("kpbuild diff exited {code}, not 0"));
    }
    let diff = elfdiff::diff(
        "orig.o",
        &std::fs::read(&orig).map_err(|e| e.to_string())?,
        "patched.o",
        &std::fs::read(&patched).map_err(|e| e.to_string())?,
        &elfdiff::Options::default(),
    )
    .map_err(|e| e.to_string())?;
    let changed: Vec<&str> = diff.changed.iter().map(|c| c.name.as_str()).collect();
    if changed != ["foo_show"] || diff.new != ["kpb_e2e_twice"] {
        return Err(format!(
            "changed {changed:?}, new {:?}; expected foo_show and kpb_e2e_twice",
            diff.new
        ));
    }
    let carried: Vec<String> = section_names(&output)?
        .into_iter()
        .filter(|n| n.starts_with(".orc_unwind"))
        .collect();
    if !carried.is_empty() {
        return Err(format!("{}: carries {carried:?}", output.display()));
    }
    eprintln!(
        "  > kpbuild diff on objtool-processed {UNIT}: foo_show changed, kpb_e2e_twice new, no ORC carried"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
