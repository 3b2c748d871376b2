//! Patches that change a header: the inline `timens_add_boottime` of
//! `include/linux/time_namespace.h` is inlined into `/proc/uptime`'s show
//! function (`fs/proc/uptime.c`) and into `sysinfo(2)` (`kernel/sys.c`),
//! among others; the fix moves the time since boot user space sees by
//! 1000000 s. Built with `--debian`, each caller is seen patched in the
//! guest (`cat /proc/uptime` and busybox `uptime`, which asks `sysinfo`),
//! then unpatched. (On the test kernel `do_sysinfo` is inlined into the
//! syscall's `__do_sys_sysinfo`, which has no ftrace entry: the module
//! carries it and redirects `__x64_sys_sysinfo`, as `callers.rs` proves for
//! another syscall body.) A header whose user is `__init` code is refused,
//! naming the unit and the function.

use super::{Ctx, kpbuild_args};
use serde_json::Value;
use std::time::Instant;
use testbed::guest::GuestScript;

/// The header fix.
const PATCH: &str = "time-ns-boottime-header.patch";
/// A change to `create_dev`, an `__init` inline of `init/do_mounts.h`.
const INIT_PATCH: &str = "do-mounts-init-header-refused.patch";
/// The header both patches change.
const HEADER: &str = "include/linux/time_namespace.h";

/// The report names the header, its users, and the two observed callers
/// among the users that changed.
fn check_report(report: &Value) -> Result<(), String> {
    let headers = report["headers"]
        .as_array()
        .ok_or_else(|| format!("report.json has no headers: {report}"))?;
    let entry = headers
        .iter()
        .find(|h| h["header"] == HEADER)
        .ok_or_else(|| format!("report.json's headers lack {HEADER}: {headers:?}"))?;
    let users: Vec<&str> = entry["users"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let changed: Vec<(&str, Vec<&str>)> = entry["changed"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|u| {
                    let functions = u["functions"]
                        .as_array()
                        .map(|f| f.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    (u["object"].as_str().unwrap_or(""), functions)
                })
                .collect()
        })
        .unwrap_or_default();
    for (object, function) in [
        ("fs/proc/uptime.o", "uptime_proc_show"),
        ("kernel/sys.o", "do_sysinfo"),
    ] {
        if !users.contains(&object) {
            return Err(format!("{object} is not among {HEADER}'s users: {users:?}"));
        }
        let found = changed
            .iter()
            .any(|(o, f)| *o == object && f.iter().any(|f| f.starts_with(function)));
        if !found {
            return Err(format!(
                "{object} ({function}) is not among the changed users: {changed:?}"
            ));
        }
    }
    if changed.len() >= users.len() {
        return Err(format!(
            "every user changed ({changed:?}): the units that do not call the helper must not"
        ));
    }
    eprintln!(
        "  > {HEADER}: {} users, changed: {:?}",
        users.len(),
        changed
    );
    Ok(())
}

/// Before, patched (both callers), disabled, after, unloaded.
fn script(module: &str, ko: Vec<u8>) -> GuestScript {
    let sys = format!("/sys/kernel/livepatch/{module}");
    let proc_small = "[ \"$(cut -d. -f1 /proc/uptime)\" -lt 1000000 ]";
    let proc_large = "[ \"$(cut -d. -f1 /proc/uptime)\" -ge 1000000 ]";
    let mut s = GuestScript::default();
    s.file(&format!("/modules/{module}.ko"), ko);
    s.check(
        "before",
        "original uptime in /proc/uptime and sysinfo",
        format!("{proc_small} && ! uptime | grep -q days"),
    )
    .check(
        "load",
        "the header fix loads",
        format!(
            "insmod /modules/{module}.ko && wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"
        ),
    )
    .check(
        "proc-uptime-patched",
        "fs/proc/uptime.c's caller patched: /proc/uptime is 1000000 s later",
        proc_large,
    )
    .check(
        "sysinfo-patched",
        "kernel/sys.c's caller patched: sysinfo's uptime is 11 days later",
        "uptime | grep -q ' 11 days'",
    )
    .check(
        "disable",
        "disabled",
        format!("echo 0 > {sys}/enabled && wait_gone {sys} 30"),
    )
    .check(
        "after",
        "original uptime back in both",
        format!("{proc_small} && ! uptime | grep -q days"),
    )
    .check("unload", "unloaded", format!("rmmod {module}"));
    s
}

/// `--debian` on the default release: the DWARF index and the include
/// scan give the users.
pub(super) fn header_debian(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_header_deb";
    let start = Instant::now();
    let (code, result, ko) = super::debian::debian_build(ctx, &release, module, &[PATCH]);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    eprintln!(
        "  > header (debian): built in {:.1} s, timings {}",
        start.elapsed().as_secs_f64(),
        report["timings_s"]
    );
    check_report(&report)?;
    let script = script(module, super::read_file(&ko)?);
    super::debian::boot_debian(ctx, &release, "header-debian", &script)
}

/// Exit 2 naming the unit and function for an `__init` user, in tree mode
/// and with `--debian`; exit 2 naming the count over
/// `--max-header-users`; a tree-less target whose vmlinux has no DWARF:
/// exit 1 naming it.
pub(super) fn header_refusals(ctx: &Ctx) -> Result<(), String> {
    let expect = |what: &str, code: u8, result: Result<Value, String>, needles: &[&str]| {
        let message = match result {
            Ok(_) => return Err(format!("{what}: a module was built")),
            Err(m) => m,
        };
        if needles.iter().any(|n| !message.contains(n)) {
            return Err(format!("{what}: expected {needles:?} in: {message}"));
        }
        eprintln!("  > {what}: {}", message.lines().last().unwrap_or(""));
        Ok(code)
    };
    let init_needles = ["init/do_mounts_initrd.o", "initrd_load", "__init"];
    let out = ctx.work.join("header-refused");
    let (code, result) = super::kpbuild_build(ctx, "kpb_header_init", &[INIT_PATCH], &out);
    check_code(
        "__init user (tree)",
        2,
        expect("__init user (tree)", code, result, &init_needles)?,
    )?;
    let mut args = kpbuild_args(ctx, "kpb_header_many", &[PATCH], &out);
    args.max_header_users = 3;
    let (code, result) = crate::kpbuild_build(&args);
    let needles = [HEADER, "more than --max-header-users 3"];
    check_code(
        "too many users",
        2,
        expect("too many users", code, result, &needles)?,
    )?;
    let mut args = kpbuild_args(ctx, "kpb_header_nodwarf", &[PATCH], &out);
    let build = &ctx.kernel.build;
    let vmlinux = ctx.kernel.vmlinux();
    args.target = kpbuild::build::TargetSpec::Treeless {
        src: ctx.kernel.src.clone(),
        config: build.join(".config"),
        vmlinux: vmlinux.clone(),
        headers: build.clone(),
        modules: None,
    };
    let (code, result) = crate::kpbuild_build(&args);
    let shown = vmlinux.display().to_string();
    let needles = [shown.as_str(), "no DWARF", "debug vmlinux"];
    check_code(
        "vmlinux without DWARF",
        1,
        expect("vmlinux without DWARF", code, result, &needles)?,
    )?;
    let release = crate::debian_release()?;
    let (code, result, ko) =
        super::debian::debian_build(ctx, &release, "kpb_header_init_deb", &[INIT_PATCH]);
    let needles = ["init/do_mounts", "__init"];
    check_code(
        "__init user (debian)",
        2,
        expect("__init user (debian)", code, result, &needles)?,
    )?;
    if out.exists() || ko.exists() {
        return Err(format!(
            "a refused build wrote {} or {}",
            out.display(),
            ko.display()
        ));
    }
    Ok(())
}

fn check_code(what: &str, want: u8, code: u8) -> Result<(), String> {
    if code == want {
        Ok(())
    } else {
        Err(format!("{what}: exit {code}, expected {want}"))
    }
}

/// The tree-mode header fix: the `CONFIG_HUGETLB_PAGE=n` stubs of
/// `include/linux/hugetlb.h` print a line each.
const TREE_PATCH: &str = "hugetlb-stubs-header.patch";
/// The header the tree-mode fix changes.
const TREE_HEADER: &str = "include/linux/hugetlb.h";
/// The stubs' callers in the test kernel: the unit and the function each
/// stub is inlined into.
const TREE_CALLERS: [(&str, &str); 2] = [
    ("fs/proc/meminfo.o", "meminfo_proc_show"),
    ("fs/proc/task_mmu.o", "task_mem"),
];

/// The report names the header with both callers changed, and nothing
/// else changed: not another user of the header, not another unit.
fn check_tree_report(report: &Value) -> Result<(), String> {
    let entry = report["headers"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["header"] == TREE_HEADER))
        .ok_or_else(|| format!("report.json's headers lack {TREE_HEADER}: {report}"))?;
    let users: Vec<&str> = entry["users"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let changed = entry["changed"].as_array().cloned().unwrap_or_default();
    for (object, function) in TREE_CALLERS {
        if !users.contains(&object) {
            return Err(format!(
                "{object} is not among {TREE_HEADER}'s users: {users:?}"
            ));
        }
        let found = changed.iter().any(|u| {
            u["object"] == object
                && u["functions"].as_array().is_some_and(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .any(|f| f.starts_with(function))
                })
        });
        if !found {
            return Err(format!(
                "{object} ({function}) is not among the changed users: {changed:?}"
            ));
        }
    }
    let changed_units: Vec<&str> = report["units"]
        .as_array()
        .map(|units| {
            units
                .iter()
                .filter(|u| {
                    let any = |k: &str| u[k].as_array().is_some_and(|a| !a.is_empty());
                    any("changed") || any("new")
                })
                .filter_map(|u| u["object"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<&str> = TREE_CALLERS.iter().map(|(o, _)| *o).collect();
    if changed.len() != expected.len() || changed_units.len() != expected.len() {
        return Err(format!(
            "only {expected:?} may change; header users changed: {changed:?}, units changed: {changed_units:?}"
        ));
    }
    eprintln!(
        "  > {TREE_HEADER}: {} users, changed: {changed:?}",
        users.len()
    );
    Ok(())
}

/// Both stubs' lines absent, then each seen in its caller's file while
/// patched, then absent again.
fn tree_script(module: &str, ko: Vec<u8>) -> GuestScript {
    let sys = format!("/sys/kernel/livepatch/{module}");
    let absent = "expect_lacks 'cat /proc/meminfo' KpbuildHugetlb \
                  && expect_lacks 'cat /proc/self/status' KpbuildHugetlbUsage";
    let mut s = GuestScript::default();
    s.file(&format!("/modules/{module}.ko"), ko);
    s.check("before", "neither stub prints", absent)
        .check(
            "load",
            "the header fix loads",
            format!(
                "insmod /modules/{module}.ko && wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"
            ),
        )
        .check(
            "meminfo-patched",
            "fs/proc/meminfo.c's caller patched: /proc/meminfo shows the stub's line",
            "expect_contains 'cat /proc/meminfo' 'KpbuildHugetlb: header-patched'",
        )
        .check(
            "status-patched",
            "fs/proc/task_mmu.c's caller patched: /proc/self/status shows the stub's line",
            "expect_contains 'cat /proc/self/status' 'KpbuildHugetlbUsage: header-patched'",
        )
        .check(
            "disable",
            "disabled",
            format!("echo 0 > {sys}/enabled && wait_gone {sys} 30"),
        )
        .check("after", "both stubs silent again", absent)
        .check("unload", "unloaded", format!("rmmod {module}"));
    s
}

/// Tree mode on the test kernel: the kbuild records give the header's
/// users; both callers of the changed stubs are patched and seen patched.
pub(super) fn header_tree(ctx: &Ctx) -> Result<(), String> {
    let module = "kpb_header_tree";
    let out = ctx.work.join(module);
    let start = Instant::now();
    let (code, result) = super::kpbuild_build(ctx, module, &[TREE_PATCH], &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    eprintln!(
        "  > header (tree): built in {:.1} s, timings {}",
        start.elapsed().as_secs_f64(),
        report["timings_s"]
    );
    check_tree_report(&report)?;
    let script = tree_script(module, super::read_file(&out.join(format!("{module}.ko")))?);
    ctx.boot("header-tree", &script)
}

#[cfg(test)]
mod tests {
    use super::check_tree_report;
    use serde_json::{Value, json};

    fn report(changed: &[(&str, &str)], extra_unit: Option<&str>) -> Value {
        let mut units: Vec<Value> = changed
            .iter()
            .map(|(o, f)| json!({"object": o, "changed": [f], "new": []}))
            .collect();
        if let Some(o) = extra_unit {
            units.push(json!({"object": o, "changed": ["other_fn"], "new": []}));
        }
        json!({
            "headers": [{
                "header": "include/linux/hugetlb.h",
                "users": ["fs/proc/meminfo.o", "fs/proc/task_mmu.o", "mm/memory.o"],
                "changed": changed.iter()
                    .map(|(o, f)| json!({"object": o, "functions": [f]}))
                    .collect::<Vec<_>>(),
            }],
            "units": units,
        })
    }

    const BOTH: [(&str, &str); 2] = [
        ("fs/proc/meminfo.o", "meminfo_proc_show"),
        ("fs/proc/task_mmu.o", "task_mem"),
    ];

    #[test]
    fn both_callers_and_nothing_else_pass() {
        check_tree_report(&report(&BOTH, None)).unwrap();
    }

    #[test]
    fn one_caller_missing_fails() {
        let why = check_tree_report(&report(&BOTH[..1], None)).unwrap_err();
        assert!(why.contains("fs/proc/task_mmu.o"), "{why}");
    }

    #[test]
    fn another_unit_changed_fails() {
        let why = check_tree_report(&report(&BOTH, Some("kernel/sys.o"))).unwrap_err();
        assert!(why.contains("kernel/sys.o"), "{why}");
    }

    #[test]
    fn header_absent_fails() {
        let mut r = report(&BOTH, None);
        r["headers"] = json!([]);
        let why = check_tree_report(&r).unwrap_err();
        assert!(why.contains("include/linux/hugetlb.h"), "{why}");
    }
}
