//! Cases on Debian's cloud kernel (`kpbuild build --debian`), booted in QEMU.

use super::{Ctx, NEW_HELPER, PROC_CMDLINE_STRING, Replace, kpbuild_args, read_file};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;
use testbed::vm::Vm;

/// `kpbuild build --debian RELEASE`: Debian's own cloud kernel, no kernel
/// build; the module is loaded into Debian's vmlinuz under QEMU.
pub(super) fn debian_cloud_kernel(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let case = &PROC_CMDLINE_STRING;
    let out = ctx.work.join("debian");
    let mut args = kpbuild_args(ctx, "kpb_debian_cmdline", case.patches, &out);
    args.target = kpbuild::build::TargetSpec::Debian {
        release: release.clone(),
        src: None,
    };
    args.progress = kpbuild::build::Progress::Stderr;
    let start = Instant::now();
    let (code, result) = crate::kpbuild_build(&args);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    eprintln!(
        "  > debian: built in {:.1} s, prematch {}",
        start.elapsed().as_secs_f64(),
        report["prematch"]
    );
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let ko = out.join("kpb_debian_cmdline.ko");
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: "/modules/kpb_debian_cmdline.ko".into(),
        module: std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?,
        patch_name: "kpb_debian_cmdline".into(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "");
    let report = debian_vm(&kernel, &ctx.work.join("debian-vm"), &script)?;
    // An unsigned out-of-tree livepatch taints the kernel; that is expected
    // and not a WARNING/BUG/Oops.
    for line in report
        .dmesg
        .iter()
        .filter(|l| l.contains("taint") || l.contains("verification") || l.contains("livepatch"))
    {
        eprintln!("  > debian guest: {line}");
    }
    report.verify(&script)
}

/// A module target on Debian's kernel: a fix to `fs/binfmt_misc.c`, which
/// Debian builds into `binfmt_misc.ko`, built with `--debian` (the module's
/// symbols and pre-match come from the shipped, compressed module). In one
/// boot the fix applies to the module loaded before the livepatch, and to the
/// module loaded after it; each time it goes away when disabled. Its
/// post-patch callback runs for the module each time the fix is applied.
pub(super) fn debian_module_target(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_binfmt";
    let (code, result, ko) =
        debian_build(ctx, &release, module, &["debian-binfmt-misc-status.patch"]);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    if report["objects"][0]["name"] != "binfmt_misc" {
        return Err(format!(
            "the fix was not built for the module binfmt_misc: {}",
            report["objects"]
        ));
    }
    eprintln!("  > debian module target: prematch {}", report["prematch"]);
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let target = binfmt_misc_ko(&kernel)?;
    let sys = format!("/sys/kernel/livepatch/{module}");
    let status = "cat /bm/status";
    let enable = format!(
        "insmod /modules/{module}.ko && wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"
    );
    let disable = format!("echo 0 > {sys}/enabled && wait_gone {sys} 30 && rmmod {module}");
    let target_in =
        "insmod /modules/binfmt_misc.ko && mkdir -p /bm && mount -t binfmt_misc none /bm";
    let target_out = "umount /bm && rmmod binfmt_misc";
    // `[ COUNT -eq`: how often the fix's post-patch callback has logged.
    let callbacks =
        "[ \"$(dmesg | grep -c 'kpbuild binfmt: post-patch callback for binfmt_misc')\" -eq";
    let mut script = GuestScript::default();
    script
        .file(&format!("/modules/{module}.ko"), read_file(&ko)?)
        .file("/modules/binfmt_misc.ko", target);
    script
        .check("target-first", "binfmt_misc loads and mounts", target_in)
        .check(
            "before",
            "original status",
            format!("expect_contains '{status}' enabled && expect_lacks '{status}' kpbuild="),
        )
        .check(
            "load",
            "the livepatch loads and patches the loaded module",
            &enable,
        )
        .check(
            "patched",
            "patched status",
            format!("expect_contains '{status}' kpbuild=binfmt"),
        )
        .check(
            "callback-now",
            "the module's post-patch callback ran as the patch was enabled",
            format!("{callbacks} 1 ]"),
        )
        .check("disable", "disabled and unloaded", &disable)
        .check(
            "after",
            "original status back",
            format!("expect_lacks '{status}' kpbuild="),
        )
        .check("target-out", "binfmt_misc unloads", target_out)
        .check(
            "load-first",
            "the livepatch loads before its target",
            &enable,
        )
        .check(
            "target-later",
            "binfmt_misc loads under the livepatch",
            target_in,
        )
        .check(
            "patched-later",
            "patched status at once",
            format!("expect_contains '{status}' kpbuild=binfmt"),
        )
        .check(
            "callback-later",
            "the post-patch callback ran again as the module loaded",
            format!("{callbacks} 2 ]"),
        )
        .check("disable-later", "disabled and unloaded", &disable)
        .check(
            "after-later",
            "original status back",
            format!("expect_lacks '{status}' kpbuild="),
        )
        .check("target-out-later", "binfmt_misc unloads", target_out);
    let report = debian_vm(&kernel, &ctx.work.join("debian-module-vm"), &script)?;
    report.verify(&script)
}

/// A changed `pr_debug()` in a module target: the fix changes the format of a
/// `pr_debug()` in `binfmt_misc.ko`, so the changed function's dynamic-debug
/// descriptor changes. The fix carries its own copy of the descriptors (and
/// of their static keys); enabling the new format through
/// `/proc/dynamic_debug/control` makes the patched code print it.
pub(super) fn debian_pr_debug_copy(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_pr_debug";
    let (code, result, ko) = debian_build(
        ctx,
        &release,
        module,
        &["debian-binfmt-misc-pr-debug.patch"],
    );
    result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let target = binfmt_misc_ko(&kernel)?;
    let sys = format!("/sys/kernel/livepatch/{module}");
    let message = "register: flag: P (preserve argv0, kpbuild)";
    let mut script = GuestScript::default();
    script
        .file(&format!("/modules/{module}.ko"), read_file(&ko)?)
        .file("/modules/binfmt_misc.ko", target);
    script
        .check(
            "target",
            "binfmt_misc loads and mounts",
            "insmod /modules/binfmt_misc.ko && mkdir -p /bm && mount -t binfmt_misc none /bm",
        )
        .check(
            "load",
            "the fix loads and patches binfmt_misc",
            format!(
                "insmod /modules/{module}.ko && wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"
            ),
        )
        .check(
            "quiet",
            "the new pr_debug is off by default",
            format!(
                "echo ':kpbquiet:E::kpbq::/bin/true:P' > /bm/register && echo -1 > /bm/kpbquiet && ! dmesg | grep -q '{message}'"
            ),
        )
        .check(
            "enable",
            "dynamic debug enables the fix's own descriptor",
            "echo 'format \"preserve argv0, kpbuild\" +p' > /proc/dynamic_debug/control && \
             grep -q 'preserve argv0, kpbuild' /proc/dynamic_debug/control",
        )
        .check(
            "prints",
            "the patched code prints the new format",
            format!(
                "echo ':kpbtest:E::kpbx::/bin/true:P' > /bm/register && echo -1 > /bm/kpbtest && dmesg | grep '{message}'"
            ),
        )
        .check(
            "disable",
            "disabled and unloaded",
            format!("echo 0 > {sys}/enabled && wait_gone {sys} 30 && rmmod {module}"),
        )
        .check(
            "target-out",
            "binfmt_misc unloads",
            "umount /bm && rmmod binfmt_misc",
        );
    let report = debian_vm(&kernel, &ctx.work.join("debian-pr-debug-vm"), &script)?;
    report.verify(&script)
}

/// The oldest Debian 12 6.12 cloud release apt knows: the cmdline string
/// patch and the new-helper patch, both life cycles in one boot of its own
/// vmlinuz.
pub(super) fn debian_oldest_6_12_cloud(ctx: &Ctx) -> Result<(), String> {
    let (oldest, _) = crate::debian_other_releases()?;
    both_lifecycles(ctx, &oldest, "old612")
}

/// The newest Debian 12 6.1 cloud release apt knows (an ABI-style name,
/// `6.1.0-N-cloud-amd64`): the same two patches in one boot.
pub(super) fn debian_newest_6_1_cloud(ctx: &Ctx) -> Result<(), String> {
    let (_, newest) = crate::debian_other_releases()?;
    both_lifecycles(ctx, &newest, "new61")
}

/// Builds [`PROC_CMDLINE_STRING`] and [`NEW_HELPER`] with `--debian
/// RELEASE`, then loads, checks, disables and unloads each in turn in one
/// boot of the release's vmlinuz.
pub(super) fn both_lifecycles(ctx: &Ctx, release: &str, tag: &str) -> Result<(), String> {
    let start = Instant::now();
    let mut script = GuestScript::default();
    for (case, what) in [(&PROC_CMDLINE_STRING, "string"), (&NEW_HELPER, "helper")] {
        let module = format!("kpb_{tag}_{what}");
        let (code, result, ko) = debian_build(ctx, release, &module, case.patches);
        let report = result.map_err(|why| {
            format!("kpbuild build --debian {release} ({what}) exited {code}: {why}")
        })?;
        eprintln!(
            "  > {release}: {what} built, prematch {}, warnings {}",
            report["prematch"],
            report.get("warnings").unwrap_or(&serde_json::Value::Null)
        );
        Lifecycle {
            module_path: format!("/modules/{module}.ko"),
            module: read_file(&ko)?,
            patch_name: module.clone(),
            probe: case.probe.into(),
            original: case.original.into(),
            patched: case.patched.into(),
        }
        .add_to(&mut script, &format!("{what}-"));
    }
    eprintln!(
        "  > {release}: both modules built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let kernel = kpbuild::debian::fetch(release, &|_| {}).map_err(|e| e.to_string())?;
    let report = debian_vm(&kernel, &ctx.work.join(format!("debian-{tag}-vm")), &script)?;
    report.verify(&script)
}

/// An unknown release in each naming scheme: exit 1, the message names the
/// release and the known releases of its series, nothing is written.
pub(super) fn debian_unknown_release_lists_known(ctx: &Ctx) -> Result<(), String> {
    let (oldest, newest) = crate::debian_other_releases()?;
    for (bad, known) in [
        ("6.12.999+deb12-cloud-amd64", oldest.as_str()),
        ("6.1.0-999-cloud-amd64", newest.as_str()),
    ] {
        let (code, result, ko) =
            debian_build(ctx, bad, "kpb_deb_unknown", &["proc-cmdline-string.patch"]);
        let message = match result {
            Ok(_) => return Err(format!("{bad}: a module was built")),
            Err(m) => m,
        };
        if code != 1
            || !message.contains(bad)
            || !message.contains("apt knows no such kernel")
            || !message.contains(known)
        {
            return Err(format!(
                "{bad}: exit {code}, expected 1 naming it and {known}: {message}"
            ));
        }
        if ko.parent().is_some_and(|d| d.exists()) {
            return Err(format!(
                "{bad}: {} was created",
                ko.parent().unwrap_or(&ko).display()
            ));
        }
        if kimage::cache_root().join("debian").join(bad).exists() {
            return Err(format!("{bad}: a cache directory was created for it"));
        }
        eprintln!(
            "  > {bad}: {}",
            message.chars().take(160).collect::<String>()
        );
    }
    Ok(())
}

/// Boots Debian's kernel (1 GiB, 240 s at most) with `script`.
pub(super) fn debian_vm(
    kernel: &kpbuild::debian::DebianKernel,
    work: &std::path::Path,
    script: &GuestScript,
) -> Result<testbed::guest::GuestReport, String> {
    let mut vm = Vm::new(&kernel.vmlinuz, work);
    vm.memory_mb = 1024;
    vm.timeout = Duration::from_secs(240);
    vm.run(script).map_err(|e| e.to_string())
}

/// Boots Debian's kernel `release` (its own vmlinuz, from the cache) with
/// `script` in `WORK/NAME-vm` and verifies every check.
pub(super) fn boot_debian(
    ctx: &Ctx,
    release: &str,
    name: &str,
    script: &GuestScript,
) -> Result<(), String> {
    let kernel = kpbuild::debian::fetch(release, &|_| {}).map_err(|e| e.to_string())?;
    let report = debian_vm(&kernel, &ctx.work.join(format!("{name}-vm")), script)?;
    report.verify(script)
}

/// Debian's shipped `binfmt_misc.ko`, decompressed, to load in the guest.
pub(super) fn binfmt_misc_ko(kernel: &kpbuild::debian::DebianKernel) -> Result<Vec<u8>, String> {
    let shipped = kernel.modules.join("kernel/fs/binfmt_misc.ko.xz");
    kpbuild::process::run(std::process::Command::new("xz").arg("-dc").arg(&shipped))
        .map(|o| o.stdout)
        .map_err(|e| format!("{}: {e}", shipped.display()))
}

/// `kpbuild build --debian RELEASE` for `patches`.
pub(super) fn debian_build(
    ctx: &Ctx,
    release: &str,
    module: &str,
    patches: &[&str],
) -> (u8, Result<serde_json::Value, String>, PathBuf) {
    let out = ctx.work.join(format!("debian-{module}"));
    let mut args = kpbuild_args(ctx, module, patches, &out);
    args.target = kpbuild::build::TargetSpec::Debian {
        release: release.into(),
        src: None,
    };
    let (code, result) = crate::kpbuild_build(&args);
    (code, result, out.join(format!("{module}.ko")))
}

fn debian_module(ctx: &Ctx, module: &str, patches: &[&str]) -> Result<Vec<u8>, String> {
    let release = crate::debian_release()?;
    let (code, result, ko) = debian_build(ctx, &release, module, patches);
    result.map_err(|why| format!("kpbuild build --debian exited {code} for {patches:?}: {why}"))?;
    read_file(&ko)
}

/// On Debian's kernel: a new helper function, then two cumulative patches
/// where the second replaces the first, in one boot.
pub(super) fn debian_new_helper_and_replace(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let helper = debian_module(ctx, "kpb_deb_helper", &["proc-cmdline-new-helper.patch"])?;
    let a = debian_module(ctx, "kpb_deb_a", &["proc-cmdline-string.patch"])?;
    let b = debian_module(ctx, "kpb_deb_b", &["proc-cmdline-string-v2.patch"])?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: "/modules/kpb_deb_helper.ko".into(),
        module: helper,
        patch_name: "kpb_deb_helper".into(),
        probe: NEW_HELPER.probe.into(),
        original: NEW_HELPER.original.into(),
        patched: NEW_HELPER.patched.into(),
    }
    .add_to(&mut script, "helper-");
    script
        .file("/modules/kpb_deb_a.ko", a)
        .file("/modules/kpb_deb_b.ko", b);
    Replace {
        first: "kpb_deb_a",
        second: "kpb_deb_b",
        first_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string",
        second_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-v2 && expect_lacks 'cat /proc/cmdline' kpbuild=cmdline-string",
        after: "expect_lacks 'cat /proc/cmdline' kpbuild=",
    }
    .add_to(&mut script);
    let report = debian_vm(&kernel, &ctx.work.join("debian-replace-vm"), &script)?;
    report.verify(&script)
}

/// On Debian's kernel the refusals and the no-change outcome are the tree
/// mode's; a release the archive does not have is a clear error.
pub(super) fn debian_refusals_and_bad_release(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    for (patch, want, needle) in [
        ("proc-cmdline-init-refused.patch", 2, "__init"),
        ("printk-data-refused.patch", 2, "console_printk"),
        ("proc-cmdline-comment-only.patch", 3, "no function"),
    ] {
        let (code, result, ko) = debian_build(ctx, &release, "kpb_deb_refusal", &[patch]);
        let message = match result {
            Ok(_) => return Err(format!("{patch}: a module was built; expected exit {want}")),
            Err(m) => m,
        };
        if code != want || !message.contains(needle) {
            return Err(format!(
                "{patch}: exit {code} (expected {want}), message: {message}"
            ));
        }
        if ko.exists() {
            return Err(format!("{patch}: {} was written", ko.display()));
        }
    }
    let (code, result, _) = debian_build(
        ctx,
        "6.12.999+deb12-cloud-amd64",
        "kpb_deb_bad",
        &["proc-cmdline-string.patch"],
    );
    match result {
        Ok(_) => Err("a module was built for a release that does not exist".into()),
        Err(m) if code == 1 && m.contains("6.12.999+deb12-cloud-amd64") => {
            eprintln!("  > debian: {}", m.lines().next().unwrap_or(""));
            Ok(())
        }
        Err(m) => Err(format!("unknown release: exit {code}: {m}")),
    }
}

/// Tree-less inputs that do not describe one kernel, from real files:
/// Debian's source, config and headers with the test kernel's vmlinux, with
/// Debian's vmlinux stripped of its symbols, and with the test kernel's
/// config. Each is exit 1 naming what disagrees, before anything is
/// compiled, with nothing written.
pub(super) fn debian_mismatched_target_files(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let k = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let scratch = ctx.work.join("debian-mismatch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let stripped = scratch.join("vmlinux-stripped");
    let status = std::process::Command::new("objcopy")
        .arg("--strip-all")
        .arg(&k.vmlinux)
        .arg(&stripped)
        .status()
        .map_err(|e| format!("objcopy: {e}"))?;
    if !status.success() {
        return Err(format!("objcopy --strip-all failed: {status}"));
    }
    let test_config = ctx.kernel.build.join(".config");
    let test_vmlinux = ctx.kernel.vmlinux();
    let cases: [(&str, &std::path::Path, &std::path::Path, &[&str]); 3] = [
        (
            "the test kernel's vmlinux",
            &k.config,
            &test_vmlinux,
            &["release mismatch", &release],
        ),
        (
            "a stripped vmlinux",
            &k.config,
            &stripped,
            &["no symbol table", "-dbg"],
        ),
        (
            "the test kernel's config",
            &test_config,
            &k.vmlinux,
            &["mismatch", "x86_64-linux-gnu-gcc-12"],
        ),
    ];
    for (what, config, vmlinux, needles) in cases {
        let out = scratch.join("out");
        let mut args = kpbuild_args(ctx, "kpb_mismatch", &["proc-cmdline-string.patch"], &out);
        args.target = kpbuild::build::TargetSpec::Treeless {
            src: k.src.clone(),
            config: config.to_path_buf(),
            vmlinux: vmlinux.to_path_buf(),
            headers: k.headers.clone(),
            modules: None,
        };
        let start = Instant::now();
        let (code, result) = crate::kpbuild_build(&args);
        let message = match result {
            Ok(_) => return Err(format!("{what}: a module was built")),
            Err(m) => m,
        };
        if code != 1 || needles.iter().any(|n| !message.contains(n)) {
            return Err(format!(
                "{what}: exit {code}, expected 1 with {needles:?}: {message}"
            ));
        }
        if out.exists() {
            return Err(format!("{what}: {} was created", out.display()));
        }
        eprintln!(
            "  > {what}: refused in {:.1} s: {}",
            start.elapsed().as_secs_f64(),
            message.lines().next().unwrap_or("")
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A unit whose own directory's Makefile sets its flags, in a directory
/// nested in another build directory: `arch/x86/power/cpu.o`
/// (`CFLAGS_cpu.o := -fno-stack-protector`). A parallel `make` of it may
/// compile it through `arch/x86`'s pattern rule, without those flags; that
/// object, put in the prepared directory first, is compiled again in its
/// own directory, so the build's pre-match equals Debian's vmlinux (exit 0,
/// the record has `-fno-stack-protector`). No boot: the code is suspend's.
pub(super) fn debian_unit_compiled_in_its_own_directory(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    // A first build prepares the directory (once per release).
    let (code, result, _) = debian_build(
        ctx,
        &release,
        "kpb_deb_warm",
        &["proc-cmdline-string.patch"],
    );
    result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let (prepared, cc) =
        kpbuild::treeless::prepared_dir(&kernel.src, &kernel.config).map_err(|e| e.to_string())?;
    let record = prepared.join("arch/x86/power/.cpu.o.cmd");
    // `arch/x86` and `arch/x86/power` both compile the goal, at once under
    // -j2: the last one's object stays. Tried until `arch/x86`'s does.
    let mut elsewhere = false;
    for _ in 0..8 {
        for stale in [prepared.join("arch/x86/power/cpu.o"), record.clone()] {
            let _ = std::fs::remove_file(stale);
        }
        let out = std::process::Command::new("make")
            .arg("-C")
            .arg(&kernel.src)
            .arg(format!("O={}", prepared.display()))
            .arg(format!("CC={cc}"))
            .arg(format!("KERNELRELEASE={release}"))
            .args(["-s", "-k", "-j2", "arch/x86/power/cpu.o"])
            .output()
            .map_err(|e| format!("make: {e}"))?;
        let text = std::fs::read_to_string(&record).map_err(|e| {
            format!(
                "{}: {e}; make said: {}",
                record.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if text.contains("KBUILD_MODFILE='\"arch/x86/cpu\"'") {
            elsewhere = true;
            break;
        }
    }
    if !elsewhere {
        return Err(format!(
            "{}: eight parallel makes compiled it in its own directory: the case cannot set up what it tests",
            record.display()
        ));
    }
    let (code, result, ko) = debian_build(
        ctx,
        &release,
        "kpb_deb_power_cpu",
        &["debian-power-cpu-stack-protector.patch"],
    );
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let text = std::fs::read_to_string(&record).map_err(|e| e.to_string())?;
    if !text.contains("-fno-stack-protector") || !ko.is_file() {
        return Err(format!(
            "{}: compiled without its directory's flags",
            record.display()
        ));
    }
    eprintln!("  > arch/x86/power/cpu.o: prematch {}", report["prematch"]);
    Ok(())
}
