//! `kpbuild farm run` (the library behind it) over the test kernel tree: a
//! series of two fixes, one with a check script, is built and tested in one
//! boot; a third fix that applies nowhere stops the farm before any build,
//! and with `--only` is "does not apply" beside the tested ones; a check
//! that expects the unpatched kernel makes the target a vmtest failure.

use super::Ctx;
use kpbuild::build::Progress;
use kpbuild::farm::run::{FarmReport, Outcome, RunRequest, run};
use std::path::Path;

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(path.parent().expect("a parent"))
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn copy_fixture(name: &str, to: &Path) -> Result<(), String> {
    let from = crate::repo_root().join("fixtures/patches").join(name);
    let text = std::fs::read_to_string(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    write(to, &text)
}

fn request(dir: &Path, only: Option<&str>) -> RunRequest {
    RunRequest {
        targets: dir.join("targets.toml"),
        series: dir.join("series"),
        artifact: dir.join("artifact"),
        only: only.map(String::from),
        name: "kpb_farm".into(),
        progress: Progress::Quiet,
    }
}

/// Each target's and each fix's outcome, by name.
fn outcomes(r: &FarmReport) -> Vec<(String, Outcome, Vec<Outcome>)> {
    r.targets
        .iter()
        .map(|t| {
            (
                t.target.name.clone(),
                t.outcome,
                t.fixes.iter().map(|f| f.outcome).collect(),
            )
        })
        .collect()
}

pub(super) fn farm_run_tree(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("farm");
    let _ = std::fs::remove_dir_all(&dir);
    let (src, build) = (ctx.kernel.src.display(), ctx.kernel.build.display());
    write(
        &dir.join("targets.toml"),
        &format!(
            "[[target]]\nname = \"test\"\ntree = {{ src = \"{src}\", build = \"{build}\" }}\n"
        ),
    )?;
    let series = dir.join("series");
    copy_fixture(
        "proc-cmdline-string.patch",
        &series.join("0001-cmdline.patch"),
    )?;
    write(
        &series.join("0001-cmdline.check"),
        "grep -q kpbuild=cmdline-string /proc/cmdline\n",
    )?;
    copy_fixture("testbed-counter.patch", &series.join("0002-counter.patch"))?;

    let report = run(&request(&dir, None)).map_err(|e| e.to_string())?;
    let want = vec![(
        "test".to_string(),
        Outcome::Tested,
        vec![Outcome::Tested; 2],
    )];
    if !report.passed || outcomes(&report) != want {
        return Err(format!("farm run: {report:#?}"));
    }
    let t = &report.targets[0];
    let (Some(apply), Some(log)) = (t.apply_latency_ms, &t.serial_log) else {
        return Err(format!("farm run: no latency or log: {t:#?}"));
    };
    let serial = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    if !serial.contains("farm check: 0001-cmdline") {
        return Err(format!("{}: the check did not run", log.display()));
    }
    let artifact = dir.join("artifact");
    for file in [
        "farm-report.json",
        "test/target.json",
        "test/build/kpb_farm.ko",
    ] {
        if !artifact.join(file).is_file() {
            return Err(format!("farm run wrote no {file}"));
        }
    }
    let build_s = t.build_seconds.unwrap_or_default();
    eprintln!("  > farm run: build {build_s:.1} s, apply latency {apply:.0} ms");

    // A fix that applies to no target's source: an error before any build.
    write(
        &series.join("0003-nowhere.patch"),
        "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-no such line\n+x\n",
    )?;
    match run(&request(&dir, None)) {
        Err(e)
            if e.to_string()
                .contains("0003-nowhere.patch: applies to no target's source") => {}
        other => return Err(format!("a fix that applies nowhere: {other:?}")),
    }
    // One target alone: that fix is left out.
    let report = run(&request(&dir, Some("test"))).map_err(|e| e.to_string())?;
    let fixes = vec![Outcome::Tested, Outcome::Tested, Outcome::DoesNotApply];
    if !report.passed || outcomes(&report) != vec![("test".into(), Outcome::Tested, fixes)] {
        return Err(format!("farm run --only: {report:#?}"));
    }

    // A check that expects the unpatched kernel fails the target.
    write(
        &series.join("0001-cmdline.check"),
        "! grep -q kpbuild=cmdline-string /proc/cmdline\n",
    )?;
    let report = run(&request(&dir, Some("test"))).map_err(|e| e.to_string())?;
    let t = &report.targets[0];
    let failed = t.reason.as_deref().unwrap_or("");
    if report.passed
        || t.outcome != Outcome::VmtestFailure
        || t.fixes[0].outcome != Outcome::VmtestFailure
    {
        return Err(format!("farm run with a failing check: {report:#?}"));
    }
    if !failed.contains("check") {
        return Err(format!("farm run with a failing check: reason {failed:?}"));
    }
    Ok(())
}
