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

/// Compiles `case/source` as `unit.c` in its own directory, as a kernel build
/// compiles the original and the patched file under one name.
fn compile(case: &Path, source: &str, out: &Path) -> Result<Vec<u8>, String> {
    let root = fixtures();
    let dir = out.with_extension("src");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let unit = dir.join("unit.c");
    std::fs::copy(case.join(source), &unit).map_err(|e| format!("{source}: {e}"))?;
    let cflags = std::fs::read_to_string(root.join("CFLAGS")).map_err(|e| e.to_string())?;
    let extra = std::fs::read_to_string(case.join("flags")).unwrap_or_default();
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let output = Command::new(&cc)
        .args(cflags.split_whitespace())
        .args(extra.split_whitespace())
        .arg("-I")
        .arg(root.join("include"))
        // kpbuild-macros.h, as kpbuild puts it on every unit's include path.
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
    for c in &diff.callbacks {
        set.insert(format!("callback: {} {}", c.kind, c.function));
    }
    for r in &diff.refusals {
        set.insert(
            format!("refused: {} {}", r.section, r.symbol)
                .trim_end()
                .to_string(),
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
    use object::{Object, ObjectSymbol};
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

fn run_case(case: &Path, work: &Path) -> Result<(), String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let orig = compile(case, "orig.c", &work.join("orig.o"))?;
    let patched = compile(case, "patched.c", &work.join("patched.o"))?;
    let diff = elfdiff::diff(
        "orig.o",
        &orig,
        "patched.o",
        &patched,
        &elfdiff::Options::default(),
    )
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
        ran += 1;
        if let Err(e) = run_case(case, &work.join(&name)) {
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
