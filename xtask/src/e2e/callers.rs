//! A fix in a syscall body, which has no ftrace entry: `SYSCALL_DEFINE1`
//! makes `__do_sys_newuname` a `static inline` (so `notrace`) function that
//! GCC keeps out of line in both kernels. The module carries its new code
//! and redirects the traced wrappers that call it (`__x64_sys_newuname`,
//! and `__ia32_sys_newuname` where the kernel has 32-bit syscalls), so
//! `uname -m` reports the patched machine name until the patch is disabled.
//!
//! A fix in a global function without an ftrace entry: the test bed's
//! `kpb_untraced` (notrace) is called from its own unit and from a second
//! one; both callers are redirected, so both `/proc` files show the new
//! code until the patch is disabled. An exported one is refused, and so is
//! a change in assembly. In Debian's kernel, `build_open_flags` (global,
//! `notrace`) has its caller in io_uring found in the linked vmlinux.

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
    let want = json!([{"name": "__do_sys_newuname", "callers": callers, "global": false}]);
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

/// Debian's cloud kernel, one boot: the syscall body, carried by its
/// x86_64 and ia32 wrappers; then `build_open_flags` (fs/open.c, a global
/// `inline`, so `notrace`, function), carried by `do_sys_openat2` in its
/// unit and by `io_openat2` in io_uring/openclose.c, found in the linked
/// vmlinux (no built tree): new files are created owner-only while patched.
pub(super) fn untraced_debian(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_sysbody";
    let (code, result, ko) = debian_build(ctx, &release, module, &[PATCH]);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    check_report(&report, &["__ia32_sys_newuname", "__x64_sys_newuname"])?;
    let mut script = script(module, read_file(&ko)?);
    let open = "kpb_deb_open";
    let (code, result, ko) = debian_build(ctx, &release, open, &[OPEN_FLAGS]);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    check_open_report(&report)?;
    Lifecycle {
        module_path: format!("/modules/{open}.ko"),
        module: read_file(&ko)?,
        patch_name: open.into(),
        probe: "umask 0; rm -f /tmp/kpb-mode; : > /tmp/kpb-mode; ls -l /tmp/kpb-mode".into(),
        original: "-rw-rw-rw-".into(),
        patched: "-rw-------".into(),
    }
    .add_to(&mut script, "open-");
    boot_debian(ctx, &release, "debian-untraced", &script)
}

const OPEN_FLAGS: &str = "debian-open-flags-owner-only.patch";

/// report.json: fs/open.o carries `build_open_flags` by `do_sys_openat2`,
/// and io_uring/openclose.o (found through vmlinux) redirects `io_openat2`.
fn check_open_report(report: &Value) -> Result<(), String> {
    let units = report["units"].as_array().cloned().unwrap_or_default();
    let find = |object: &str| {
        units
            .iter()
            .find(|u| u["object"] == object)
            .cloned()
            .ok_or_else(|| format!("report.json has no unit {object}: {units:?}"))
    };
    let home = find("fs/open.o")?;
    let want = json!([{
        "name": "build_open_flags",
        "callers": ["do_sys_openat2"],
        "global": true,
        "other_units": [{"object": "io_uring/openclose.o", "callers": ["io_openat2"]}],
    }]);
    if home["carried"] != want {
        return Err(format!(
            "fs/open.o: carried {}, expected {want}",
            home["carried"]
        ));
    }
    let peer = find("io_uring/openclose.o")?;
    if peer["changed"] != json!(["io_openat2"]) {
        return Err(format!(
            "io_uring/openclose.o: changed {}, expected [io_openat2]",
            peer["changed"]
        ));
    }
    Ok(())
}

const UNTRACED: &str = "testbed-untraced-global.patch";

/// report.json: kpbuild_testbed.o carries the global `kpb_untraced` by its
/// own caller and by the peer unit's, which redirects its caller.
fn check_global_report(report: &Value) -> Result<(), String> {
    let units = report["units"].as_array().cloned().unwrap_or_default();
    let unit = |object: &str| {
        units
            .iter()
            .find(|u| u["object"] == object)
            .cloned()
            .ok_or_else(|| format!("report.json has no unit {object}: {units:?}"))
    };
    let home = unit("fs/proc/kpbuild_testbed.o")?;
    let want = json!([{
        "name": "kpb_untraced",
        "callers": ["kpb_untraced_show"],
        "global": true,
        "other_units": [{"object": "fs/proc/kpbuild_testbed_peer.o", "callers": ["kpb_peer_show"]}],
    }]);
    if home["carried"] != want || home["changed"] != json!(["kpb_untraced_show"]) {
        return Err(format!(
            "fs/proc/kpbuild_testbed.o: carried {} and changed {}, expected carried {want} and changed [kpb_untraced_show]",
            home["carried"], home["changed"]
        ));
    }
    let peer = unit("fs/proc/kpbuild_testbed_peer.o")?;
    let want = json!([{"name": "kpb_untraced", "callers": ["kpb_peer_show"], "global": false}]);
    if peer["carried_elsewhere"] != want || peer["changed"] != json!(["kpb_peer_show"]) {
        return Err(format!(
            "fs/proc/kpbuild_testbed_peer.o: carried_elsewhere {} and changed {}, expected {want} and [kpb_peer_show]",
            peer["carried_elsewhere"], peer["changed"]
        ));
    }
    let shared = &report["shared_symbols"];
    if !shared.to_string().contains("kpb_untraced") {
        return Err(format!(
            "report.json shared_symbols does not name kpb_untraced: {shared}"
        ));
    }
    Ok(())
}

/// The test kernel: the fix reaches both units' callers; an exported
/// notrace function is refused with exit 2 and nothing written.
pub(super) fn untraced_global_tree(ctx: &Ctx) -> Result<(), String> {
    super::tree::refusal_case(ctx, "time-jiffies-clock-t-exported.patch", 2, "exported")?;
    super::tree::refusal_case(ctx, "clear-page-asm-refused.patch", 2, "assembly")?;
    let module = "kpb_untraced";
    let out = ctx.work.join(module);
    let (code, result) = super::kpbuild_build(ctx, module, &[UNTRACED], &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    check_global_report(&report)?;
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: read_file(&out.join(format!("{module}.ko")))?,
        patch_name: module.into(),
        probe: "cat /proc/kpbuild_untraced /proc/kpbuild_peer | tr '\\n' ' '".into(),
        original: "untraced=84 kpbuild-testbed peer=43".into(),
        patched: "untraced=1084 kpbuild-testbed peer=1043".into(),
    }
    .add_to(&mut script, "");
    ctx.boot("untraced-global", &script)
}
