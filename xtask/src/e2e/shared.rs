//! A new global function that one unit of a patch adds and other units call,
//! in vmlinux and in a module: `kpbuild_shared_tag()` (with its call counter
//! `kpbuild_shared_calls`), new in `fs/proc/cmdline.c`, is called from
//! `fs/proc/meminfo.c` (vmlinux) and from a module target's unit; the
//! module carries the one definition every caller reaches.

use super::debian::{binfmt_misc_ko, debian_build, debian_vm};
use super::{Ctx, kpbuild_build, read_file};
use testbed::guest::GuestScript;

/// The patches shared by both kernels; each kernel adds its module caller.
const SHARED: &str = "new-shared-tag.patch";

/// The guest commands of one kernel: where the tag shows, and how the
/// module target comes and goes.
struct Probes<'a> {
    patch: &'a str,
    module_probe: &'a str,
    target_in: &'a str,
    target_out: &'a str,
}

/// Before, patched (in /proc/cmdline, /proc/meminfo and the module's
/// file), after disable and unload: every caller reaches the shared
/// function while patched, none after.
fn script(p: &Probes<'_>, patch_ko: Vec<u8>, target: (&str, Vec<u8>)) -> GuestScript {
    let sys = format!("/sys/kernel/livepatch/{}", p.patch);
    let tag = "kpbuild=shared";
    let everywhere = |check: &str| {
        format!(
            "{check} 'cat /proc/cmdline' {tag} && {check} 'cat /proc/meminfo' {tag} && {check} '{}' {tag}",
            p.module_probe
        )
    };
    let mut s = GuestScript::default();
    s.file(&format!("/modules/{}.ko", p.patch), patch_ko)
        .file(target.0, target.1);
    s.check("target-in", "the module target loads", p.target_in)
        .check("before", "no tag anywhere", everywhere("expect_lacks"))
        .check(
            "load",
            "the livepatch loads",
            format!(
                "insmod /modules/{}.ko && wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30",
                p.patch
            ),
        )
        .check(
            "patched",
            "vmlinux's and the module's callers reach the new shared function",
            everywhere("expect_contains"),
        )
        .check(
            "counter",
            "the new shared variable counts the calls of every unit",
            "expect_contains 'cat /proc/meminfo' 'calls='",
        )
        .check(
            "disable",
            "disabled and unloaded",
            format!("echo 0 > {sys}/enabled && wait_gone {sys} 30 && rmmod {}", p.patch),
        )
        .check("after", "the tag is gone everywhere", everywhere("expect_lacks"))
        .check("target-out", "the module target unloads", p.target_out);
    s
}

/// The test kernel: the module caller is `samples/kobject/kobject-example.c`.
pub(super) fn shared_new_function_tree(ctx: &Ctx) -> Result<(), String> {
    let module = "kpb_shared";
    let out = ctx.work.join(module);
    let patches = [SHARED, "new-shared-tag-kobject.patch"];
    let (code, result) = kpbuild_build(ctx, module, &patches, &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    check_report(&report, "samples/kobject/kobject-example.o")?;
    let ko = built_module_bytes(&out, module)?;
    let target = ctx.module("samples/kobject/kobject-example.ko")?;
    let probes = Probes {
        patch: module,
        module_probe: "cat /sys/kernel/kobject_example/foo",
        target_in: "insmod /modules/kobject-example.ko",
        target_out: "rmmod kobject_example",
    };
    let script = script(&probes, ko, ("/modules/kobject-example.ko", target));
    ctx.boot("shared-new-function", &script)
}

/// Debian's cloud kernel: the module caller is `fs/binfmt_misc.c`
/// (`binfmt_misc.ko`, its `status` file).
pub(super) fn shared_new_function_debian(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_shared";
    let (code, result, ko) = debian_build(
        ctx,
        &release,
        module,
        &[SHARED, "new-shared-tag-binfmt.patch"],
    );
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    check_report(&report, "fs/binfmt_misc.o")?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let probes = Probes {
        patch: module,
        module_probe: "cat /bm/status",
        target_in: "insmod /modules/binfmt_misc.ko && mkdir -p /bm && mount -t binfmt_misc none /bm",
        target_out: "umount /bm && rmmod binfmt_misc",
    };
    let script = script(
        &probes,
        read_file(&ko)?,
        ("/modules/binfmt_misc.ko", binfmt_misc_ko(&kernel)?),
    );
    let report = debian_vm(&kernel, &ctx.work.join("debian-shared-vm"), &script)?;
    report.verify(&script)
}

/// report.json names the defining unit and both callers of the function,
/// and the caller of the variable.
fn check_report(report: &serde_json::Value, module_unit: &str) -> Result<(), String> {
    let want = serde_json::json!([
        {"defined_in": "fs/proc/cmdline.o", "name": "kpbuild_shared_calls",
         "used_by": ["fs/proc/meminfo.o"]},
        {"defined_in": "fs/proc/cmdline.o", "name": "kpbuild_shared_tag",
         "used_by": ["fs/proc/meminfo.o", module_unit]},
    ]);
    if report["shared_symbols"] != want {
        return Err(format!(
            "report.json shared_symbols: {}, expected {want}",
            report["shared_symbols"]
        ));
    }
    Ok(())
}

fn built_module_bytes(out: &std::path::Path, module: &str) -> Result<Vec<u8>, String> {
    read_file(&out.join(format!("{module}.ko")))
}
