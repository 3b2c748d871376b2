//! Self-tests of the harness: the kernel's own sample livepatch, and runs
//! the harness must report as failures.

use super::Ctx;
use std::time::Duration;
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

fn sample_lifecycle(ctx: &Ctx) -> Result<Lifecycle, String> {
    Ok(Lifecycle {
        module_path: "/modules/livepatch-sample.ko".into(),
        module: ctx.module("samples/livepatch/livepatch-sample.ko")?,
        patch_name: "livepatch_sample".into(),
        probe: "cat /proc/cmdline".into(),
        original: "console=ttyS0".into(),
        patched: "this has been live patched".into(),
    })
}

/// The kernel's own sample patches `/proc/cmdline` and unpatches cleanly.
pub(super) fn sample_livepatch_cmdline(ctx: &Ctx) -> Result<(), String> {
    let mut script = GuestScript::default();
    sample_lifecycle(ctx)?.add_to(&mut script, "");
    ctx.boot("sample", &script)
}

/// Expects `result` to be a harness failure mentioning `needle`.
fn expect_failure(result: Result<(), String>, needle: &str) -> Result<(), String> {
    match result {
        Ok(()) => Err(format!(
            "the harness passed a run that must fail ({needle})"
        )),
        Err(e) if e.contains(needle) => Ok(()),
        Err(e) => Err(format!(
            "the harness failed for another reason than `{needle}`:\n{e}"
        )),
    }
}

/// A wrong expected string must fail the `patched` check, by name.
pub(super) fn harness_catches_wrong_expectation(ctx: &Ctx) -> Result<(), String> {
    let mut lifecycle = sample_lifecycle(ctx)?;
    lifecycle.patched = "a string the sample never prints".into();
    let mut script = GuestScript::default();
    lifecycle.add_to(&mut script, "");
    let report = ctx
        .vm("wrong-expectation")
        .run(&script)
        .map_err(|e| e.to_string())?;
    expect_failure(
        report.verify(&script),
        "check `patched` (patched behaviour is seen) failed",
    )
}

/// A module that loads but patches nothing must fail at `enabled`.
pub(super) fn harness_catches_non_patch(ctx: &Ctx) -> Result<(), String> {
    let mut lifecycle = sample_lifecycle(ctx)?;
    lifecycle.module_path = "/modules/kobject-example.ko".into();
    lifecycle.module = ctx.module("samples/kobject/kobject-example.ko")?;
    lifecycle.patch_name = "kobject_example".into();
    let mut script = GuestScript::default();
    lifecycle.add_to(&mut script, "");
    let report = ctx
        .vm("non-patch")
        .run(&script)
        .map_err(|e| e.to_string())?;
    expect_failure(
        report.verify(&script),
        "check `enabled` (patch is enabled in sysfs) failed",
    )
}

/// A guest that never finishes is killed at the timeout and reported, not waited on.
pub(super) fn harness_catches_hung_guest(ctx: &Ctx) -> Result<(), String> {
    let mut script = GuestScript::default();
    script.check("hang", "a check that never returns", "sleep 100000");
    let mut vm = ctx.vm("hung");
    vm.timeout = Duration::from_secs(15);
    let report = vm.run(&script).map_err(|e| e.to_string())?;
    expect_failure(report.verify(&script), "timed out after 15 s")
}
