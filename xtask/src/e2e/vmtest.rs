//! `kpbuild vmtest` (the library behind it): the syscall-body module of
//! `callers.rs` passes in the test kernel and in Debian's with a check
//! script that sees the patched `uname -m`, reporting both latencies; the
//! same module with a check that expects the unpatched value fails at the
//! `check` step; the command exits 1 naming a module that is no livepatch.

use super::{Ctx, read_file};
use kpbuild::vmtest::{VmKernel, VmtestReport, VmtestRequest, run};
use std::path::Path;
use std::time::Duration;

const PATCH: &str = "syscall-newuname-body.patch";

fn request(
    ctx: &Ctx,
    module: &Path,
    kernel: VmKernel,
    check: &str,
    name: &str,
) -> Result<VmtestRequest, String> {
    let script = ctx.work.join(format!("{name}.sh"));
    std::fs::write(&script, check).map_err(|e| format!("{}: {e}", script.display()))?;
    Ok(VmtestRequest {
        module: module.to_path_buf(),
        kernel,
        check: Some(script),
        work: ctx.work.join(format!("{name}-vm")),
        memory_mb: 1024,
        timeout: Duration::from_secs(240),
    })
}

/// Every step passed and both latencies were measured.
fn passed(report: &VmtestReport) -> Result<(), String> {
    let steps: Vec<(&str, &str)> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.outcome))
        .collect();
    let want = [
        ("load", "passed"),
        ("check", "passed"),
        ("disable", "passed"),
        ("unload", "passed"),
    ];
    if !report.passed || steps != want {
        return Err(format!(
            "vmtest: steps {steps:?}, failure {:?}",
            report.failure
        ));
    }
    match (report.apply_latency_ms, report.unpatch_latency_ms) {
        (Some(a), Some(u)) => {
            eprintln!(
                "  > vmtest {}: apply {a:.0} ms, unpatch {u:.0} ms",
                report.patch
            );
            Ok(())
        }
        other => Err(format!("vmtest: latencies not measured: {other:?}")),
    }
}

pub(super) fn vmtest_module(ctx: &Ctx) -> Result<(), String> {
    let module = "kpb_vmtest";
    let out = ctx.work.join(module);
    let (code, result) = super::kpbuild_build(ctx, module, &[PATCH], &out);
    result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    let ko = out.join(format!("{module}.ko"));
    let image = VmKernel::Image(ctx.kernel.bzimage());
    let sees = "uname -m | grep -qx kpbody\n";
    let ok = run(&request(ctx, &ko, image.clone(), sees, "pass")?).map_err(|e| e.to_string())?;
    passed(&ok)?;

    let expects_old = "uname -m | grep -qx x86_64\n";
    let bad = run(&request(ctx, &ko, image, expects_old, "fail")?).map_err(|e| e.to_string())?;
    let check = bad
        .steps
        .iter()
        .find(|s| s.id == "check")
        .map(|s| s.outcome);
    if bad.passed
        || check != Some("failed")
        || !bad
            .failure
            .as_deref()
            .unwrap_or("")
            .contains("check `check`")
    {
        return Err(format!(
            "vmtest with a failing check: passed {}, check {check:?}, failure {:?}",
            bad.passed, bad.failure
        ));
    }

    let release = crate::debian_release()?;
    let (code, result, deb_ko) =
        super::debian::debian_build(ctx, &release, "kpb_deb_vmtest", &[PATCH]);
    result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let deb = run(&request(
        ctx,
        &deb_ko,
        VmKernel::Debian(release),
        sees,
        "debian",
    )?)
    .map_err(|e| e.to_string())?;
    passed(&deb)?;

    // Not a livepatch module: an error naming it, before any boot.
    let plain = ctx.kernel.module("samples/kobject/kobject-example.ko");
    read_file(&plain)?;
    let image = VmKernel::Image(ctx.kernel.bzimage());
    match run(&request(ctx, &plain, image, sees, "plain")?) {
        Err(e) if e.to_string().contains("not a livepatch module") => Ok(()),
        other => Err(format!("vmtest of a plain module: {other:?}")),
    }
}
