//! Data-driven elfdiff tests: every directory under `fixtures/elfdiff/cases/`
//! holds `orig.c`, `patched.c`, `expect` (and optionally `flags`). Both
//! sources are compiled with `fixtures/elfdiff/CFLAGS` at test time; the
//! findings must equal `expect`, and every output object must be accepted by
//! `readelf` without warnings and parse with both `object` and `goblin`.
//! Adding a case is adding a directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/elfdiff")
}

/// What a case needs beyond gcc: another compiler, objtool, a second unit.
#[derive(Default)]
struct Tools {
    /// `clang` for a case with a `compiler` file saying so.
    clang: Option<PathBuf>,
    /// The test kernel's objtool, for a case with an `objtool` file.
    objtool: Option<PathBuf>,
}

/// The tools `case` needs, each found through its oracle; `None` when one
/// is missing (the case is skipped, or fails under the oracle variable).
fn tools(case: &Path) -> Option<Tools> {
    let mut t = Tools::default();
    let compiler = std::fs::read_to_string(case.join("compiler")).unwrap_or_default();
    if compiler.trim() == "clang" {
        t.clang = Some(testbed::oracle::tool("clang", "clang")?);
    }
    if case.join("objtool").exists() {
        let kernel = testbed::oracle::test_kernel()?;
        let objtool = kernel.build.join("tools/objtool/objtool");
        t.objtool = Some(testbed::oracle::need(
            &format!("{}", objtool.display()),
            "run `cargo xtask kernel`",
            objtool.is_file().then_some(objtool.clone()),
        )?);
    }
    Some(t)
}

/// Compiles `case/source` (and `case/source2`'s second unit, linked with
/// `ld -r` after it, for a case with one) as the object `out`.
fn compile(case: &Path, source: &str, out: &Path, tools: &Tools) -> Result<Vec<u8>, String> {
    let second = source.replace(".c", "2.c");
    if !case.join(&second).exists() {
        return compile_unit(case, source, out, tools);
    }
    let first = out.with_extension("1.o");
    let other = out.with_extension("2.o");
    compile_unit(case, source, &first, tools)?;
    compile_unit(case, &second, &other, tools)?;
    // A composite object, as kbuild links the parts of a multi-unit object.
    let output = Command::new("ld")
        .args(["-m", "elf_x86_64", "-r", "-o"])
        .arg(out)
        .arg(&first)
        .arg(&other)
        .output()
        .map_err(|e| format!("cannot run ld: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "ld -r failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::read(out).map_err(|e| e.to_string())
}

/// Compiles one source of a case as `src/unit.c` beside `out`, as a kernel
/// build compiles the original and the patched file under one path (which
/// UBSAN descriptors record), then runs objtool on it if the case asks.
fn compile_unit(case: &Path, source: &str, out: &Path, tools: &Tools) -> Result<Vec<u8>, String> {
    let root = fixtures();
    let dir = out.parent().expect("output in a directory").join("src");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let unit = dir.join(if source.contains('2') {
        "unit2.c"
    } else {
        "unit.c"
    });
    std::fs::copy(case.join(source), &unit).map_err(|e| format!("{source}: {e}"))?;
    let (cc, cflags_file) = match &tools.clang {
        Some(clang) => (clang.display().to_string(), "CFLAGS.clang"),
        None => (
            std::env::var("CC").unwrap_or_else(|_| "gcc".into()),
            "CFLAGS",
        ),
    };
    let cflags = std::fs::read_to_string(root.join(cflags_file)).map_err(|e| e.to_string())?;
    let extra = std::fs::read_to_string(case.join("flags")).unwrap_or_default();
    let output = Command::new(&cc)
        .args(cflags.split_whitespace())
        .args(extra.split_whitespace())
        .arg("-I")
        .arg(root.join("include"))
        // kpbuild-macros.h and kpatch-macros.h, as kpbuild puts them on
        // every unit's include path.
        .arg("-I")
        .arg(root.join("../../kmod-template"))
        .arg(&unit)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{cc} failed on {source}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if let Some(objtool) = &tools.objtool {
        // As kbuild runs it on a module's object (the arguments are the
        // case's `objtool` file).
        let args = std::fs::read_to_string(case.join("objtool")).map_err(|e| e.to_string())?;
        let output = Command::new(objtool)
            .args(args.split_whitespace())
            .arg(out)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", objtool.display()))?;
        if !output.status.success() {
            return Err(format!(
                "objtool failed on {source}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    std::fs::read(out).map_err(|e| e.to_string())
}

fn findings(diff: &elfdiff::Diff) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let outcome = match diff.outcome {
        elfdiff::Outcome::Patch => "patch",
        elfdiff::Outcome::NoChange => "no-change",
        elfdiff::Outcome::Refused => "refused",
    };
    set.insert(format!("outcome: {outcome}"));
    for c in &diff.changed {
        set.insert(format!("changed: {}", c.name));
    }
    for n in &diff.new {
        set.insert(format!("new: {n}"));
    }
    for c in &diff.carried {
        set.insert(format!("carried: {} by {}", c.name, c.callers.join(" ")));
        if c.global {
            set.insert(format!("carried-global: {}", c.name));
        }
    }
    for c in &diff.carried_elsewhere {
        set.insert(format!(
            "carried-elsewhere: {} by {}",
            c.name,
            c.callers.join(" ")
        ));
    }
    for n in &diff.new_globals {
        set.insert(format!("new-global: {n}"));
    }
    for c in &diff.callbacks {
        set.insert(format!("callback: {} {}", c.kind, c.function));
    }
    for f in &diff.marks.ignored_functions {
        set.insert(format!("ignored-function: {f}"));
    }
    for s in &diff.marks.ignored_sections {
        set.insert(format!("ignored-section: {s}"));
    }
    for f in &diff.marks.forced_functions {
        set.insert(format!("forced: {f}"));
    }
    for r in &diff.refusals {
        set.insert(
            format!("refused: {} {}", r.section, r.symbol)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    set
}

fn expected(case: &Path) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(case.join("expect")).map_err(|e| format!("expect: {e}"))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            format!(
                "{}: {}",
                k.trim(),
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect())
}

/// What every written object must satisfy.
fn check_output(object: &[u8], dir: &Path) -> Result<(), String> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file =
        object::File::parse(object).map_err(|e| format!("object cannot read the output: {e}"))?;
    // Assembler labels name places in this object: the running kernel has
    // no symbol of that name, so one left undefined could never resolve.
    if let Some(label) = file
        .symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok())
        .find(|n| n.starts_with(".L"))
    {
        return Err(format!(
            "the output references assembler label {label} as an external symbol"
        ));
    }
    // The module build regenerates ORC for all of the module's code.
    if let Some(orc) = file
        .sections()
        .filter_map(|s| s.name().ok())
        .find(|n| n.starts_with(".orc_unwind"))
    {
        return Err(format!("the output carries {orc}"));
    }
    goblin::elf::Elf::parse(object).map_err(|e| format!("goblin cannot read the output: {e}"))?;
    let path = dir.join("out.o");
    std::fs::write(&path, object).map_err(|e| e.to_string())?;
    if let Some(readelf) = testbed::oracle::tool("readelf", "binutils") {
        let out = Command::new(readelf)
            .args(["-W", "-a"])
            .arg(&path)
            .output()
            .map_err(|e| format!("readelf: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(bad) = stderr.lines().chain(stdout.lines()).find(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("readelf: warning") || l.starts_with("readelf: error")
        }) {
            return Err(format!("readelf complains about the output: {bad}"));
        }
    }
    Ok(())
}

/// The case's `options` file, when it has one: `max-callers: N` and
/// `carried-elsewhere: NAME` lines.
fn case_options(case: &Path) -> Result<elfdiff::Options, String> {
    let mut options = elfdiff::Options::default();
    let Ok(text) = std::fs::read_to_string(case.join("options")) else {
        return Ok(options);
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("max-callers", n)) => {
                options.max_callers = Some(n.parse().map_err(|_| format!("options: {line}"))?);
            }
            Some(("carried-elsewhere", name)) => options.carried_elsewhere.push(name.into()),
            _ => return Err(format!("options: unknown line {line:?}")),
        }
    }
    Ok(options)
}

fn run_case(case: &Path, work: &Path, tools: &Tools) -> Result<(), String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let orig = compile(case, "orig.c", &work.join("orig.o"), tools)?;
    let patched = compile(case, "patched.c", &work.join("patched.o"), tools)?;
    let diff = elfdiff::diff("orig.o", &orig, "patched.o", &patched, &case_options(case)?)
        .map_err(|e| format!("elfdiff error: {e}"))?;
    let got = findings(&diff);
    let want = expected(case)?;
    if got != want {
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        let details: Vec<String> = diff
            .changed
            .iter()
            .map(|c| format!("  {}: {} at +{:#x}", c.name, c.what, c.offset))
            .chain(
                diff.refusals
                    .iter()
                    .map(|r| format!("  refused {} {}: {}", r.section, r.symbol, r.reason)),
            )
            .collect();
        return Err(format!(
            "findings differ\n  expected but missing: {missing:?}\n  found but not expected: {extra:?}\n{}",
            details.join("\n")
        ));
    }
    match (&diff.outcome, &diff.object) {
        (elfdiff::Outcome::Patch, Some(object)) => check_output(object, work)?,
        (elfdiff::Outcome::Patch, None) => return Err("patch outcome without an object".into()),
        (_, Some(_)) => return Err("an object was produced for a non-patch outcome".into()),
        _ => {}
    }
    Ok(())
}

#[test]
fn fixture_cases() {
    let cases_dir = fixtures().join("cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .expect("fixtures/elfdiff/cases")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expect").exists())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no fixture cases found in {}",
        cases_dir.display()
    );
    let work = std::env::temp_dir().join(format!("elfdiff-fixtures-{}", std::process::id()));
    let filter = std::env::var("ELFDIFF_CASE").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let Some(tools) = tools(case) else {
            eprintln!("SKIP: case {name}");
            continue;
        };
        ran += 1;
        if let Err(e) = run_case(case, &work.join(&name), &tools) {
            failures.push(format!("case {name}: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        failures.is_empty(),
        "{} of {ran} fixture cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{ran} fixture cases passed");
}
