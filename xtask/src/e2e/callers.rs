//! A fix in a syscall body, which has no ftrace entry: `SYSCALL_DEFINE1`
//! makes `__do_sys_newuname` a `static inline` (so `notrace`) function that
//! GCC keeps out of line in both kernels. The module carries its new code
//! and redirects the traced wrappers that call it (`__x64_sys_newuname`,
//! and `__ia32_sys_newuname` where the kernel has 32-bit syscalls), so
//! `uname -m` reports the patched machine name until the patch is disabled.

use super::Ctx;
use super::debian::{boot_debian, debian_build};
use super::read_file;
use serde_json::{Value, json};
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

const PATCH: &str = "syscall-newuname-body.patch";

/// report.json: kernel/sys.o carries `__do_sys_newuname` by `callers`,
/// which are the unit's changed functions.
fn check_report(report: &Value, callers: &[&str]) -> Result<(), String> {
    let units = report["units"].as_array().cloned().unwrap_or_default();
    let Some(unit) = units.iter().find(|u| u["object"] == "kernel/sys.o") else {
        return Err(format!("report.json has no unit kernel/sys.o: {units:?}"));
    };
    let want = json!([{"name": "__do_sys_newuname", "callers": callers}]);
    if unit["carried"] != want || unit["changed"] != json!(callers) {
        return Err(format!(
            "kernel/sys.o: carried {} and changed {}, expected carried {want} and changed {callers:?}",
            unit["carried"], unit["changed"]
        ));
    }
    Ok(())
}

fn script(module: &str, ko: Vec<u8>) -> GuestScript {
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: ko,
        patch_name: module.into(),
        probe: "uname -m".into(),
        original: "x86_64".into(),
        patched: "kpbody".into(),
    }
    .add_to(&mut script, "");
    script
}

/// The test kernel (no 32-bit syscalls): one wrapper carries the body.
pub(super) fn syscall_body_tree(ctx: &Ctx) -> Result<(), String> {
    let module = "kpb_sysbody";
    let out = ctx.work.join(module);
    let (code, result) = super::kpbuild_build(ctx, module, &[PATCH], &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    check_report(&report, &["__x64_sys_newuname"])?;
    let ko = read_file(&out.join(format!("{module}.ko")))?;
    ctx.boot("syscall-body", &script(module, ko))
}

/// Debian's cloud kernel: the x86_64 and the ia32 wrapper carry it.
pub(super) fn syscall_body_debian(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_sysbody";
    let (code, result, ko) = debian_build(ctx, &release, module, &[PATCH]);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    check_report(&report, &["__ia32_sys_newuname", "__x64_sys_newuname"])?;
    let script = script(module, read_file(&ko)?);
    boot_debian(ctx, &release, "debian-sysbody", &script)
}
