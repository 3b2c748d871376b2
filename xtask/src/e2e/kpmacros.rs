//! Patches written for kpatch-build, unchanged: `kpatch-macros.h` callbacks,
//! `KPATCH_PRINTK`, `KPATCH_FORCE_UNSAFE` and `KPATCH_SYSCALL_DEFINE1`, in
//! the test kernel and in Debian's cloud kernel, one boot each.

use super::{Ctx, kpbuild_build, read_file};
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

/// `uname(2)` patched through `KPATCH_SYSCALL_DEFINE1(newuname, …)`
/// (`kernel/sys.c`): the machine field reads `kpatched`; post-patch and
/// post-unpatch callbacks log with `KPATCH_PRINTK`; `__x64_sys_newuname` is
/// marked `KPATCH_FORCE_UNSAFE`.
const SYSCALL_PATCH: &str = "kpatch-syscall-newuname.patch";
/// A `KPATCH_PRE_PATCH_CALLBACK` that returns `-EBUSY` (`fs/proc/cmdline.c`).
const REFUSING_PATCH: &str = "kpatch-callback-refuses.patch";

/// The two modules of one kernel: names and built `.ko` contents.
struct Modules {
    syscall: (&'static str, Vec<u8>),
    refusing: (&'static str, Vec<u8>),
}

/// In the test kernel: both patches built from the tree, loaded in one boot.
pub(super) fn kpatch_macros_tree(ctx: &Ctx) -> Result<(), String> {
    let build =
        |module: &'static str, patch: &str| -> Result<(serde_json::Value, Vec<u8>), String> {
            let out = ctx.work.join(module);
            let (code, result) = kpbuild_build(ctx, module, &[patch], &out);
            let report =
                result.map_err(|why| format!("kpbuild build exited {code} for {patch}: {why}"))?;
            Ok((report, read_file(&out.join(format!("{module}.ko")))?))
        };
    let (report, syscall) = build("kpb_kpatch_uname", SYSCALL_PATCH)?;
    check_report(&report)?;
    let (_, refusing) = build("kpb_kpatch_refuse", REFUSING_PATCH)?;
    let modules = Modules {
        syscall: ("kpb_kpatch_uname", syscall),
        refusing: ("kpb_kpatch_refuse", refusing),
    };
    let script = script(&modules);
    ctx.boot("kpatch-macros", &script)
}

/// In Debian's cloud kernel (`--debian`): the same patches, one boot.
pub(super) fn kpatch_macros_debian(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let build = |module: &'static str,
                 patch: &str|
     -> Result<(serde_json::Value, Vec<u8>), String> {
        let (code, result, ko) = super::debian::debian_build(ctx, &release, module, &[patch]);
        let report = result
            .map_err(|why| format!("kpbuild build --debian exited {code} for {patch}: {why}"))?;
        Ok((report, read_file(&ko)?))
    };
    let (report, syscall) = build("kpb_deb_kpatch_uname", SYSCALL_PATCH)?;
    check_report(&report)?;
    let (_, refusing) = build("kpb_deb_kpatch_refuse", REFUSING_PATCH)?;
    let modules = Modules {
        syscall: ("kpb_deb_kpatch_uname", syscall),
        refusing: ("kpb_deb_kpatch_refuse", refusing),
    };
    let script = script(&modules);
    super::debian::boot_debian(ctx, &release, "debian-kpatch", &script)
}

/// The report of the syscall patch: the wrapper patched under its own name,
/// the callbacks registered for vmlinux, the forced function reported.
fn check_report(report: &serde_json::Value) -> Result<(), String> {
    let object = &report["objects"][0];
    let kinds: Vec<&str> = object["callbacks"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["kind"].as_str()).collect())
        .unwrap_or_default();
    if object["name"] != "vmlinux" || kinds != ["post_patch", "post_unpatch"] {
        return Err(format!(
            "expected post_patch and post_unpatch callbacks for vmlinux: {object}"
        ));
    }
    let functions: Vec<&str> = object["functions"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    if !functions.contains(&"__x64_sys_newuname")
        || functions.iter().any(|f| f.starts_with("__do_sys_"))
    {
        return Err(format!(
            "expected __x64_sys_newuname replaced under its own name: {functions:?}"
        ));
    }
    let forced: Vec<&str> = report["units"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|u| u["forced_functions"].as_array().into_iter().flatten())
        .filter_map(|f| f.as_str())
        .collect();
    if forced != ["__x64_sys_newuname"] {
        return Err(format!(
            "KPATCH_FORCE_UNSAFE not reported: forced_functions {forced:?}"
        ));
    }
    Ok(())
}

/// One boot: the syscall patch through its life cycle with its callbacks'
/// lines in the log, then the module whose pre-patch callback refuses.
fn script(m: &Modules) -> GuestScript {
    let mut script = GuestScript::default();
    let (name, ko) = &m.syscall;
    Lifecycle {
        module_path: format!("/modules/{name}.ko"),
        module: ko.clone(),
        patch_name: name.to_string(),
        probe: "uname -m".into(),
        original: "x86_64".into(),
        patched: "kpatched".into(),
    }
    .add_to(&mut script, "uname-");
    script.check(
        "callbacks-logged",
        "the post-patch callback (KPATCH_PRINTK) logged for vmlinux, then the post-unpatch one",
        "dmesg | grep -o 'kpatch-macros: post-[a-z]* callback[a-z ]*' | tr '\\n' '|' | \
         grep -x 'kpatch-macros: post-patch callback for vmlinux|kpatch-macros: post-unpatch callback|'",
    );
    let (name, ko) = &m.refusing;
    script
        .file(&format!("/modules/{name}.ko"), ko.clone())
        .check(
            "refusing-load-fails",
            "a livepatch whose KPATCH_PRE_PATCH_CALLBACK fails does not load",
            format!("! insmod /modules/{name}.ko"),
        )
        .check(
            "refusing-left-nothing",
            "nothing registered, the original code runs, the callback's error is in the log",
            format!(
                "[ ! -e /sys/kernel/livepatch/{name} ] && ! grep -q '^{name} ' /proc/modules && \
                 expect_lacks 'cat /proc/cmdline' kpatch-refused && \
                 dmesg | grep 'kpatch-macros: pre-patch callback refuses'"
            ),
        );
    script
}
