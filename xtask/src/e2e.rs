//! The kernel end-to-end suite: each case boots the test kernel in QEMU with
//! a generated initramfs and asserts on every step the guest reports.

use crate::kernel;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testbed::guest::GuestScript;
use testbed::kernel::KernelBuild;
use testbed::livepatch::Lifecycle;
use testbed::vm::Vm;

/// One end-to-end case.
struct Case {
    name: &'static str,
    run: fn(&Ctx) -> Result<(), String>,
}

/// What every case gets.
struct Ctx {
    kernel: KernelBuild,
    work: PathBuf,
}

impl Ctx {
    fn vm(&self, case: &str) -> Vm {
        Vm::new(&self.kernel.bzimage(), &self.work.join(case))
    }

    fn module(&self, relative: &str) -> Result<Vec<u8>, String> {
        let path = self.kernel.module(relative);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

const CASES: &[Case] = &[
    Case {
        name: "sample_livepatch_cmdline",
        run: sample_livepatch_cmdline,
    },
    Case {
        name: "harness_catches_wrong_expectation",
        run: harness_catches_wrong_expectation,
    },
    Case {
        name: "harness_catches_module_that_does_not_patch",
        run: harness_catches_non_patch,
    },
    Case {
        name: "harness_catches_hung_guest",
        run: harness_catches_hung_guest,
    },
    Case {
        name: "module_glue_klp_relocation",
        run: module_glue_klp_relocation,
    },
    Case {
        name: "build_proc_cmdline_string",
        run: |ctx| patch_case(ctx, &PROC_CMDLINE_STRING),
    },
    Case {
        name: "build_new_helper_function",
        run: |ctx| patch_case(ctx, &NEW_HELPER),
    },
    Case {
        name: "build_static_function_and_variable",
        run: |ctx| patch_case(ctx, &STATIC_CALL),
    },
    Case {
        name: "build_static_local_counter_keeps_value",
        run: |ctx| patch_case(ctx, &STATIC_COUNTER),
    },
    Case {
        name: "build_inlined_callee_patches_callers",
        run: |ctx| patch_case(ctx, &INLINED),
    },
    Case {
        name: "build_replace_second_patch_replaces_first",
        run: build_replace,
    },
    Case {
        name: "build_module_target_before_and_after_load",
        run: build_module_target,
    },
    Case {
        name: "build_callbacks_and_shadow_variable",
        run: callbacks_case,
    },
    Case {
        name: "build_fork_copy_process_runs_patched",
        run: build_fork_copy_process,
    },
    Case {
        name: "build_refuses_init_code_change",
        run: |ctx| refusal_case(ctx, "proc-cmdline-init-refused.patch", 2, "__init"),
    },
    Case {
        name: "build_refuses_initialised_data_change",
        run: |ctx| refusal_case(ctx, "printk-data-refused.patch", 2, "console_printk"),
    },
    Case {
        name: "build_comment_only_is_no_change",
        run: |ctx| refusal_case(ctx, "proc-cmdline-comment-only.patch", 3, "no function"),
    },
    Case {
        name: "elfdiff_no_false_positives_whole_kernel",
        run: |ctx| crate::scale::no_false_positives(&ctx.kernel),
    },
    Case {
        name: "prematch_cmdline_matches_test_kernel",
        run: prematch_matches,
    },
    Case {
        name: "prematch_flipped_vmlinux_byte_exits_1",
        run: prematch_flipped_byte,
    },
    Case {
        name: "debian_cloud_kernel_cmdline_string",
        run: debian_cloud_kernel,
    },
    Case {
        name: "debian_new_helper_and_replace",
        run: debian_new_helper_and_replace,
    },
    Case {
        name: "debian_refusals_and_bad_release",
        run: debian_refusals_and_bad_release,
    },
    Case {
        name: "signing_kernel_enforces_signatures",
        run: signing_kernel_enforces_signatures,
    },
    Case {
        name: "signing_reproducible_two_builds",
        run: signing_reproducible,
    },
    Case {
        name: "treeless_test_kernel_cmdline_string",
        run: treeless_test_kernel,
    },
    Case {
        name: "debian_config_sections_are_covered",
        run: debian_config_sections_are_covered,
    },
    Case {
        name: "debian_module_target_binfmt_misc",
        run: debian_module_target,
    },
    Case {
        name: "debian_pr_debug_changed_in_module",
        run: debian_pr_debug_copy,
    },
    Case {
        name: "debian_mismatched_target_files_exit_1",
        run: debian_mismatched_target_files,
    },
    Case {
        name: "bundle_signed_cumulative_in_signing_kernel",
        run: bundle_signed_cumulative,
    },
];

/// Runs the cases whose name contains `filter`; prints one line per case and
/// a closing `e2e: N passed, N failed` line. Returns (passed, failed).
pub fn run_suite(filter: Option<&str>) -> Result<(usize, usize), String> {
    let kernel = kernel()?;
    let work = std::env::temp_dir().join(format!("kpbuild-e2e-{}", std::process::id()));
    let ctx = Ctx {
        kernel,
        work: work.clone(),
    };
    let (mut passed, mut failed) = (0, 0);
    for case in CASES
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
    {
        let start = Instant::now();
        match (case.run)(&ctx) {
            Ok(()) => {
                passed += 1;
                println!(
                    "e2e {} ... ok ({:.1} s)",
                    case.name,
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "e2e {} ... FAILED ({:.1} s)",
                    case.name,
                    start.elapsed().as_secs_f64()
                );
                println!("{}", indent(&e));
            }
        }
    }
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        println!("guest logs kept in {}", work.display());
    }
    println!("e2e: {passed} passed, {failed} failed");
    Ok((passed, failed))
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

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
fn sample_livepatch_cmdline(ctx: &Ctx) -> Result<(), String> {
    let mut script = GuestScript::default();
    sample_lifecycle(ctx)?.add_to(&mut script, "");
    let report = ctx.vm("sample").run(&script).map_err(|e| e.to_string())?;
    report.verify(&script)
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
fn harness_catches_wrong_expectation(ctx: &Ctx) -> Result<(), String> {
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
fn harness_catches_non_patch(ctx: &Ctx) -> Result<(), String> {
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
fn harness_catches_hung_guest(ctx: &Ctx) -> Result<(), String> {
    let mut script = GuestScript::default();
    script.check("hang", "a check that never returns", "sleep 100000");
    let mut vm = ctx.vm("hung");
    vm.timeout = Duration::from_secs(15);
    let report = vm.run(&script).map_err(|e| e.to_string())?;
    expect_failure(report.verify(&script), "timed out after 15 s")
}

/// The module-building stage end to end: a hand-written replacement for
/// `cmdline_proc_show` that reads the unexported `saved_command_line` through
/// `.klp.sym.vmlinux.saved_command_line,0`, compiled with the kernel's own
/// flags for `fs/proc/cmdline.o`, linked with the generated glue by kbuild,
/// converted to the livepatch format, then loaded, patched and unpatched.
fn module_glue_klp_relocation(ctx: &Ctx) -> Result<(), String> {
    use kpbuild::module::{ModuleSpec, PatchedFunc, PatchedObject};
    use std::process::Command;
    let build = &ctx.kernel.build;
    let work = ctx.work.join("module-glue");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let run = |cmd: &mut Command| -> Result<String, String> {
        let out = kpbuild::process::run(cmd).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    // The kernel's own compile command for fs/proc/cmdline.o, aimed at the fixture.
    let cmd_file = build.join("fs/proc/.cmdline.o.cmd");
    let saved =
        std::fs::read_to_string(&cmd_file).map_err(|e| format!("{}: {e}", cmd_file.display()))?;
    let compile = saved
        .lines()
        .find_map(|l| l.strip_prefix("savedcmd_fs/proc/cmdline.o := "))
        .ok_or_else(|| format!("{}: no savedcmd line", cmd_file.display()))?;
    let fixture = crate::repo_root().join("kmod-template/tests/cmdline_klp.c");
    let object = work.join("cmdline_klp.o");
    let q = |p: &std::path::Path| testbed::livepatch::shell_quote(&p.display().to_string());
    let edits = [
        ("-Wp,-MMD,fs/proc/.cmdline.o.d ".to_string(), String::new()),
        (
            format!(
                "-c -o fs/proc/cmdline.o {}",
                ctx.kernel.src.join("fs/proc/cmdline.c").display()
            ),
            format!(
                "-ffunction-sections -fdata-sections -c -o {} {}",
                q(&object),
                q(&fixture)
            ),
        ),
    ];
    let mut compile = compile.to_string();
    for (from, to) in edits {
        if !compile.contains(&from) {
            return Err(format!("the kernel's command lacks `{from}`: {compile}"));
        }
        compile = compile.replacen(&from, &to, 1);
    }
    run(Command::new("sh")
        .arg("-c")
        .arg(&compile)
        .current_dir(build))?;
    let relocs = run(Command::new("readelf").args(["-W", "-r"]).arg(&object))?;
    for needle in ["__fentry__", ".klp.sym.vmlinux.saved_command_line,0"] {
        if !relocs.contains(needle) {
            return Err(format!(
                "the fixture object has no relocation to {needle}:\n{relocs}"
            ));
        }
    }

    // saved_command_line must really be out of the module loader's reach.
    let symvers_path = build.join("Module.symvers");
    let symvers = std::fs::read_to_string(&symvers_path)
        .map_err(|e| format!("{}: {e}", symvers_path.display()))?;
    let exports = relocator::target::Exports::from_module_symvers(&symvers)
        .map_err(|e| format!("{}: {e}", symvers_path.display()))?;
    if exports.contains("saved_command_line") {
        return Err("saved_command_line is exported: pick a non-exported symbol".into());
    }

    let spec = ModuleSpec {
        name: "kpb_module_glue".into(),
        replace: true,
        objects: vec![PatchedObject {
            name: None,
            funcs: vec![PatchedFunc {
                old_name: "cmdline_proc_show".into(),
                new_symbol: "__kpb_new_0".into(),
                sympos: 0,
            }],
            callbacks: vec![],
        }],
    };
    let start = Instant::now();
    let ko = kpbuild::module::build_module(&spec, &[object], build, &work.join("module"), &|s| {
        exports.contains(s)
    })
    .map_err(|e| e.to_string())?;
    eprintln!(
        "  > module_glue: build_module took {:.2} s",
        start.elapsed().as_secs_f64()
    );

    // The livepatch relocation section and symbol, as readelf sees them.
    let elf = run(Command::new("readelf").args(["-W", "-S", "-s"]).arg(&ko))?;
    let section = elf
        .lines()
        .find(|l| l.contains(" .klp.rela.vmlinux..text.cmdline_proc_show "))
        .ok_or_else(|| format!("no .klp.rela.vmlinux section in {}:\n{elf}", ko.display()))?;
    let flags = section.split_whitespace().rev().nth(3).unwrap_or("");
    if !section.contains(" RELA ") || !flags.contains('A') || !flags.contains('o') {
        return Err(format!(
            "klp section lacks RELA / SHF_ALLOC / OS flag: {section}"
        ));
    }
    let detail = run(Command::new("readelf").args(["-W", "-t"]).arg(&ko))?;
    let mut lines = detail.lines();
    lines
        .find(|l| l.contains(".klp.rela.vmlinux..text.cmdline_proc_show"))
        .and_then(|_| lines.nth(1))
        .filter(|l| l.contains("0000000000100042"))
        .ok_or_else(|| format!("klp section flags are not 0x100042:\n{detail}"))?;
    let symbol = elf
        .lines()
        .find(|l| l.ends_with(" .klp.sym.vmlinux.saved_command_line,0"))
        .ok_or_else(|| format!("no klp symbol in {}:\n{elf}", ko.display()))?;
    if !symbol.contains(" GLOBAL ") || !(symbol.contains("0xff20") || symbol.contains("LIVEPATCH"))
    {
        return Err(format!(
            "klp symbol is not GLOBAL with Ndx SHN_LIVEPATCH: {symbol}"
        ));
    }
    eprintln!("  > module_glue: {}", section.trim());
    eprintln!("  > module_glue: {}", symbol.trim());

    let lifecycle = Lifecycle {
        module_path: "/modules/kpb_module_glue.ko".into(),
        module: std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?,
        patch_name: spec.name.clone(),
        probe: "cat /proc/cmdline".into(),
        original: "console=ttyS0".into(),
        // The marker, then the real command line read through the klp relocation.
        patched: "kpbuild-module-glue: console=ttyS0".into(),
    };
    let mut script = GuestScript::default();
    lifecycle.add_to(&mut script, "");
    let report = ctx
        .vm("module-glue")
        .run(&script)
        .map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// The demo: the sample livepatch, with the behaviour printed at each stage.
pub fn demo(kb: &KernelBuild) -> Result<(), String> {
    let ctx = Ctx {
        kernel: kb.clone(),
        work: std::env::temp_dir().join(format!("kpbuild-demo-{}", std::process::id())),
    };
    let case = &PROC_CMDLINE_STRING;
    let patch = crate::repo_root()
        .join("fixtures/patches")
        .join(case.patches[0]);
    println!(
        "$ kpbuild build --patch {} --name {}",
        patch.display(),
        case.module
    );
    let out = ctx.work.join(case.module);
    let (code, result) = kpbuild_build(&ctx, case.module, case.patches, &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    for object in report["objects"].as_array().into_iter().flatten() {
        for f in object["functions"].as_array().into_iter().flatten() {
            println!(
                "  patched function {} in {} (position {})",
                f["name"].as_str().unwrap_or("?"),
                object["name"].as_str().unwrap_or("?"),
                f["position"]
            );
        }
    }
    println!(
        "  built {}.ko in {} s (steps: {})",
        case.module, report["timings_s"]["total"], report["timings_s"]
    );
    let ko = out.join(format!("{}.ko", case.module));
    let lifecycle = Lifecycle {
        module_path: format!("/modules/{}.ko", case.module),
        module: std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?,
        patch_name: case.module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    };
    let mut script = GuestScript::default();
    lifecycle.add_to(&mut script, "");
    println!(
        "booting {} under QEMU with {}",
        kb.bzimage().display(),
        lifecycle.module_path
    );
    let start = Instant::now();
    let report = ctx.vm("demo").run(&script).map_err(|e| e.to_string())?;
    let verdict = report.verify(&script);
    let show = |label: &str, id: &str| {
        let lines = report.output(id);
        // The first line a probe check prints is the probe's output.
        println!(
            "{label:<22} {}",
            lines.first().map(String::as_str).unwrap_or("(no output)")
        );
    };
    println!("$ {}", lifecycle.probe);
    show("before loading:", "before");
    show("while patched:", "patched");
    show("after disabling:", "after");
    for line in report.dmesg.iter().filter(|l| l.contains("livepatch")) {
        println!("kernel: {line}");
    }
    verdict?;
    println!(
        "demo passed: loaded, patched, unpatched and unloaded in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&ctx.work);
    Ok(())
}

/// A patch built with `kpbuild build` against the test kernel and proven
/// in the guest: before, patched, after disable, after unload.
struct PatchCase {
    /// Module name.
    module: &'static str,
    /// Patch files under `fixtures/patches/`, applied in order.
    patches: &'static [&'static str],
    /// Shell command showing the behaviour.
    probe: &'static str,
    /// Text the probe prints unpatched.
    original: &'static str,
    /// Text the probe prints only while patched.
    patched: &'static str,
}

const PROC_CMDLINE_STRING: PatchCase = PatchCase {
    module: "kpb_cmdline_string",
    patches: &["proc-cmdline-string.patch"],
    probe: "cat /proc/cmdline",
    original: "console=ttyS0",
    patched: "kpbuild=cmdline-string",
};

const NEW_HELPER: PatchCase = PatchCase {
    module: "kpb_new_helper",
    patches: &["proc-cmdline-new-helper.patch"],
    probe: "cat /proc/cmdline",
    original: "console=ttyS0",
    patched: "kpbuild=new-helper",
};

/// The fix calls `kpb_mix`, a static function of its file, on `kpb_secret`,
/// a static variable set at boot: both reached through livepatch relocations.
const STATIC_CALL: PatchCase = PatchCase {
    module: "kpb_static_call",
    patches: &["testbed-static-call.patch"],
    probe: "cat /proc/kpbuild_fix",
    original: "fix=none",
    patched: "fix=85",
};

/// The probe reads the file twice before loading and once while patched: a
/// patch that used its own copy of the counter would print 1, not 3.
const STATIC_COUNTER: PatchCase = PatchCase {
    module: "kpb_static_counter",
    patches: &["testbed-counter.patch"],
    probe: "cat /proc/kpbuild_calls",
    original: "kpbuild-testbed calls=",
    patched: "patched-calls=3",
};

/// `kpb_scale` is inlined into two callers; both must be replaced for the
/// output to change in both fields.
const INLINED: PatchCase = PatchCase {
    module: "kpb_inlined",
    patches: &["testbed-inline.patch"],
    probe: "cat /proc/kpbuild_scale",
    original: "scale=1001 twice=2004",
    patched: "scale=2001 twice=4004",
};

/// Builds a patch and returns the module bytes.
fn built_module(ctx: &Ctx, module: &str, patches: &[&str]) -> Result<Vec<u8>, String> {
    let out = ctx.work.join(module);
    let (code, result) = kpbuild_build(ctx, module, patches, &out);
    if let Err(why) = result {
        return Err(format!(
            "kpbuild build exited {code} for {patches:?}: {why}"
        ));
    }
    let ko = out.join(format!("{module}.ko"));
    std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))
}

/// Two cumulative patches built one after the other: loading the second
/// atomically replaces the first.
fn build_replace(ctx: &Ctx) -> Result<(), String> {
    let a = built_module(ctx, "kpb_replace_a", &["proc-cmdline-string.patch"])?;
    let b = built_module(ctx, "kpb_replace_b", &["proc-cmdline-string-v2.patch"])?;
    let mut script = GuestScript::default();
    script
        .file("/modules/kpb_replace_a.ko", a)
        .file("/modules/kpb_replace_b.ko", b);
    script.check(
        "before",
        "original /proc/cmdline",
        "expect_lacks 'cat /proc/cmdline' kpbuild=",
    );
    Replace {
        first: "kpb_replace_a",
        second: "kpb_replace_b",
        first_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string",
        second_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-v2 && expect_lacks 'cat /proc/cmdline' kpbuild=cmdline-string",
        after: "expect_contains 'cat /proc/cmdline' console=ttyS0 && expect_lacks 'cat /proc/cmdline' kpbuild=",
    }
    .add_to(&mut script);
    let report = ctx.vm("replace").run(&script).map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// A patch to `foo_show` of the `kobject-example` module: loaded before the
/// module (applied when the module comes), then again after it.
fn build_module_target(ctx: &Ctx) -> Result<(), String> {
    let patch = built_module(ctx, "kpb_kobject", &["kobject-example-foo.patch"])?;
    let target = ctx.module("samples/kobject/kobject-example.ko")?;
    let sys = "/sys/kernel/livepatch/kpb_kobject";
    let foo_file = "cat /sys/kernel/kobject_example/foo";
    let mut script = GuestScript::default();
    script
        .file("/modules/kpb_kobject.ko", patch)
        .file("/modules/kobject-example.ko", target);
    script
        .check("patch-first", "patch loads while its module is absent", "insmod /modules/kpb_kobject.ko")
        .check("enabled", "patch enabled", format!("wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"))
        .check("not-yet", "object not patched while absent", format!("wait_value {sys}/kobject_example/patched 0 5"))
        .check("module-comes", "target module loads", "insmod /modules/kobject-example.ko")
        .check("patched-on-load", "module patched as it loads", format!("wait_value {sys}/kobject_example/patched 1 5 && expect_contains '{foo_file}' kpbuild=module"))
        .check("disable", "patch disables", format!("echo 0 > {sys}/enabled && wait_gone {sys} 30"))
        .check("module-original", "module's original code back", format!("expect_lacks '{foo_file}' kpbuild && expect_contains '{foo_file}' 0"))
        .check("unload-patch", "patch unloads", "rmmod kpb_kobject")
        .check("module-first", "patch loads while its module is present", "insmod /modules/kpb_kobject.ko")
        .check("enabled-again", "patch enabled", format!("wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"))
        .check("patched-loaded", "loaded module patched", format!("wait_value {sys}/kobject_example/patched 1 5 && expect_contains '{foo_file}' kpbuild=module"))
        .check("disable-again", "patch disables", format!("echo 0 > {sys}/enabled && wait_gone {sys} 30"))
        .check("after", "original back", format!("expect_lacks '{foo_file}' kpbuild"))
        .check("unload-all", "both modules unload", "rmmod kpb_kobject && rmmod kobject_example");
    let report = ctx
        .vm("module-target")
        .run(&script)
        .map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// A change to a helper inlined into `copy_process`: a 6 KB function with
/// alternatives, jump labels and livepatch relocations to numbered clones at
/// non-zero positions. While patched, every process the guest starts is
/// created by the replacement.
fn build_fork_copy_process(ctx: &Ctx) -> Result<(), String> {
    let module = built_module(ctx, "kpb_fork", &["fork-copy-process.patch"])?;
    let sys = "/sys/kernel/livepatch/kpb_fork";
    let mut script = GuestScript::default();
    script.file("/modules/kpb_fork.ko", module);
    script
        .check("load", "patch loads", "insmod /modules/kpb_fork.ko")
        .check(
            "enabled",
            "patch enabled, transition done",
            format!("wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"),
        )
        .check(
            "forks",
            "processes start and exit through the patched copy_process",
            "i=0; while [ $i -lt 50 ]; do /bin/true || exit 1; i=$((i + 1)); done; \
             expect_contains 'sh -c \"echo forked-ok\"' forked-ok",
        )
        .check(
            "disable",
            "patch disables",
            format!("echo 0 > {sys}/enabled && wait_gone {sys} 30"),
        )
        .check(
            "after",
            "processes still start",
            "expect_contains 'sh -c \"echo forked-ok\"' forked-ok",
        )
        .check("unload", "module unloads", "rmmod kpb_fork");
    let report = ctx.vm("fork").run(&script).map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// A patch kpbuild must not turn into a module: the exit code and a message
/// naming what is wrong, and nothing written.
fn refusal_case(ctx: &Ctx, patch: &str, want: u8, needle: &str) -> Result<(), String> {
    let module = format!("kpb_refusal_{want}");
    let out = ctx
        .work
        .join(format!("refusal-{}", patch.trim_end_matches(".patch")));
    let (code, result) = kpbuild_build(ctx, &module, &[patch], &out);
    let message = match result {
        Ok(_) => {
            return Err(format!(
                "kpbuild build made a module from {patch}; expected exit {want}"
            ));
        }
        Err(m) => m,
    };
    if code != want {
        return Err(format!("exit {code}, expected {want}: {message}"));
    }
    if !message.contains(needle) {
        return Err(format!(
            "the message does not mention `{needle}`: {message}"
        ));
    }
    if out.exists()
        && std::fs::read_dir(&out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(format!("{} is not empty after a refusal", out.display()));
    }
    Ok(())
}

/// Runs `kpbuild build` through the library; returns the exit code and the
/// report, or the reason it stopped.
fn kpbuild_build(
    ctx: &Ctx,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> (u8, Result<serde_json::Value, String>) {
    kpbuild::build::execute(&kpbuild_args(ctx, module, patches, out))
}

/// The arguments of `kpbuild build` against the test kernel.
fn kpbuild_args(
    ctx: &Ctx,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> kpbuild::build::BuildArgs {
    build_args(&ctx.kernel, module, patches, out)
}

/// The arguments of `kpbuild build` of `fixtures/patches/PATCHES` against
/// the built kernel `kb`.
fn build_args(
    kb: &KernelBuild,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> kpbuild::build::BuildArgs {
    kpbuild::build::BuildArgs {
        src: kb.src.clone(),
        build: kb.build.clone(),
        patches: patches
            .iter()
            .map(|p| crate::repo_root().join("fixtures/patches").join(p))
            .collect(),
        name: module.to_string(),
        out: out.to_path_buf(),
        no_replace: false,
        jobs: None,
        json: false,
        keep_tmp: false,
        quiet: true,
        sign_key: None,
        sign_cert: None,
    }
}

fn patch_case(ctx: &Ctx, case: &PatchCase) -> Result<(), String> {
    let out = ctx.work.join(case.module);
    let (code, result) = kpbuild_build(ctx, case.module, case.patches, &out);
    if let Err(why) = result {
        return Err(format!(
            "kpbuild build exited {code} for {:?}: {why}",
            case.patches
        ));
    }
    let ko = out.join(format!("{}.ko", case.module));
    let module = std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?;
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: format!("/modules/{}.ko", case.module),
        module,
        patch_name: case.module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "");
    let report = ctx
        .vm(case.module)
        .run(&script)
        .map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// Callbacks and a shadow variable: the pre-patch callback attaches a
/// shadow variable to a static of the test bed, the patched function shows
/// it, the post-unpatch callback frees it; each callback logs a line.
const CALLBACKS: PatchCase = PatchCase {
    module: "kpb_callbacks",
    patches: &["testbed-callbacks-shadow.patch"],
    probe: "cat /proc/kpbuild_fix",
    original: "fix=none",
    patched: "fix=shadow-43",
};

/// [`CALLBACKS`] through its life cycle, then the kernel log must show the
/// pre-patch, post-patch and post-unpatch callbacks, in that order; then a
/// livepatch whose pre-patch callback fails must not load or leave anything.
fn callbacks_case(ctx: &Ctx) -> Result<(), String> {
    let case = &CALLBACKS;
    let out = ctx.work.join(case.module);
    let (code, result) = kpbuild_build(ctx, case.module, case.patches, &out);
    let report = result
        .map_err(|why| format!("kpbuild build exited {code} for {:?}: {why}", case.patches))?;
    let kinds: Vec<&str> = report["objects"][0]["callbacks"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["kind"].as_str()).collect())
        .unwrap_or_default();
    if kinds != ["post_patch", "post_unpatch", "pre_patch"] {
        return Err(format!("unexpected callbacks in the report: {kinds:?}"));
    }
    let module = read_file(&out.join(format!("{}.ko", case.module)))?;
    let inspected =
        kpbuild::inspect::inspect(case.module, &module, false).map_err(|e| e.to_string())?;
    let listed: Vec<(&str, &str)> = inspected
        .callbacks
        .iter()
        .map(|c| (c.kind.as_str(), c.function.as_str()))
        .collect();
    if listed
        != [
            ("post_patch", "kpb_announce"),
            ("post_unpatch", "kpb_detach"),
            ("pre_patch", "kpb_attach"),
        ]
        || !inspected.problems.is_empty()
    {
        return Err(format!(
            "kpbuild inspect: callbacks {listed:?}, problems {:?}",
            inspected.problems
        ));
    }
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: format!("/modules/{}.ko", case.module),
        module,
        patch_name: case.module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "");
    script.check(
        "callbacks-ran",
        "pre-patch, post-patch and post-unpatch callbacks ran, in order",
        "dmesg | grep -o 'kpbuild testbed: [a-z-]* callback' | tr '\\n' ' ' | \
         grep -x 'kpbuild testbed: pre-patch callback kpbuild testbed: post-patch callback kpbuild testbed: post-unpatch callback '",
    );
    // A pre-patch callback that fails keeps the patch from being applied:
    // insmod fails, nothing is registered, the original code runs.
    let refusing = "kpb_cb_refuse";
    let refusing_out = ctx.work.join(refusing);
    let (code, result) = kpbuild_build(
        ctx,
        refusing,
        &["testbed-callback-refuses.patch"],
        &refusing_out,
    );
    result.map_err(|why| format!("kpbuild build exited {code} for {refusing}: {why}"))?;
    script
        .file(
            &format!("/modules/{refusing}.ko"),
            read_file(&refusing_out.join(format!("{refusing}.ko")))?,
        )
        .check(
            "refusing-load-fails",
            "a livepatch whose pre-patch callback fails does not load",
            format!("! insmod /modules/{refusing}.ko"),
        )
        .check(
            "refusing-left-nothing",
            "nothing registered, original code runs",
            format!(
                "[ ! -e /sys/kernel/livepatch/{refusing} ] && ! grep -q '^{refusing} ' /proc/modules && \
                 expect_contains '{}' {} && dmesg | grep 'pre-patch callback refuses'",
                case.probe, case.original
            ),
        );
    let report = ctx
        .vm(case.module)
        .run(&script)
        .map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// The cmdline patch against the test kernel passes the pre-match: every
/// function of the original unit equals vmlinux outside relocations.
fn prematch_matches(ctx: &Ctx) -> Result<(), String> {
    let out = ctx.work.join("prematch-ok");
    let (code, result) = kpbuild_build(ctx, "kpb_prematch", &["proc-cmdline-string.patch"], &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    let checked = report["prematch"]["checked"].as_u64().unwrap_or(0);
    if checked == 0 {
        return Err(format!("no function pre-matched: {}", report["prematch"]));
    }
    eprintln!("  > prematch: {}", report["prematch"]);
    Ok(())
}

/// A vmlinux whose `cmdline_proc_show` differs in one byte (the first one
/// compared after `endbr64` and the `__fentry__` call) stops the build with
/// exit 1 naming the function and the offset.
fn prematch_flipped_byte(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("prematch-flip");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let object = ctx.kernel.build.join("fs/proc/cmdline.o");
    let object_bytes = std::fs::read(&object).map_err(|e| format!("{}: {e}", object.display()))?;
    let flip = kpbuild::prematch::function_images("cmdline.o", &object_bytes)?
        .into_iter()
        .find(|f| f.name == "cmdline_proc_show")
        .and_then(|f| f.first_unmasked(4))
        .ok_or("no compared byte in cmdline_proc_show")?;
    let vmlinux = ctx.kernel.vmlinux();
    let mut data = std::fs::read(&vmlinux).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    let (offset, size) = kpbuild::prematch::TargetCode::new(&data)?
        .file_range("cmdline_proc_show")
        .ok_or("no cmdline_proc_show in vmlinux")?;
    if size as usize <= flip {
        return Err(format!("cmdline_proc_show is only {size} bytes"));
    }
    data[offset as usize + flip] ^= 0xff;
    let want = format!("+{flip:#x}");
    let copy = dir.join("vmlinux");
    std::fs::write(&copy, &data).map_err(|e| format!("{}: {e}", copy.display()))?;
    let args = kpbuild_args(
        ctx,
        "kpb_prematch_bad",
        &["proc-cmdline-string.patch"],
        &dir.join("out"),
    );
    let target = kpbuild::build::TargetArgs {
        vmlinux: Some(copy),
        ..Default::default()
    };
    let (code, result) = kpbuild::build::execute_with(&args, &target);
    let message = match result {
        Ok(_) => return Err("kpbuild build accepted a vmlinux that differs".into()),
        Err(m) => m,
    };
    if code != 1 || !message.contains("cmdline_proc_show") || !message.contains(&want) {
        return Err(format!(
            "expected exit 1 naming cmdline_proc_show at {want}; got exit {code}: {message}"
        ));
    }
    eprintln!("  > prematch: {message}");
    Ok(())
}

/// The checks of an atomic replace in one boot: `first` loads and shows
/// `first_shows`; `second` loads, replaces it and shows `second_shows`; the
/// replaced module unloads; `second` disables and unloads, and `after`
/// holds again. Each `*_shows` is a guest shell condition.
struct Replace<'a> {
    first: &'a str,
    second: &'a str,
    first_shows: &'a str,
    second_shows: &'a str,
    after: &'a str,
}

impl Replace<'_> {
    fn add_to(&self, script: &mut GuestScript) {
        let sys = "/sys/kernel/livepatch";
        let (a, b) = (self.first, self.second);
        let enabled = |m: &str| {
            format!("wait_value {sys}/{m}/enabled 1 5 && wait_value {sys}/{m}/transition 0 30")
        };
        script
            .check(
                &format!("load-{a}"),
                "first patch loads",
                format!("insmod /modules/{a}.ko"),
            )
            .check(&format!("{a}-done"), "first patch enabled", enabled(a))
            .check(
                &format!("{a}-patched"),
                "first patch's behaviour",
                self.first_shows,
            )
            .check(
                &format!("load-{b}"),
                "second patch loads",
                format!("insmod /modules/{b}.ko"),
            )
            .check(&format!("{b}-done"), "second patch enabled", enabled(b))
            .check(
                &format!("{a}-replaced"),
                "first patch is gone, replaced",
                format!("wait_gone {sys}/{a} 30"),
            )
            .check(
                &format!("{b}-patched"),
                "second patch's behaviour",
                self.second_shows,
            )
            .check(
                &format!("unload-{a}"),
                "the replaced module unloads",
                format!("rmmod {a}"),
            )
            .check(
                &format!("disable-{b}"),
                "second patch disables",
                format!("echo 0 > {sys}/{b}/enabled && wait_gone {sys}/{b} 30"),
            )
            .check(
                &format!("after-{b}"),
                "original behaviour is back",
                self.after,
            )
            .check(
                &format!("unload-{b}"),
                "second module unloads",
                format!("rmmod {b}"),
            );
    }
}

/// `kpbuild build --debian RELEASE`: Debian's own cloud kernel, no kernel
/// build; the module is loaded into Debian's vmlinuz under QEMU.
fn debian_cloud_kernel(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let case = &PROC_CMDLINE_STRING;
    let out = ctx.work.join("debian");
    let mut args = kpbuild_args(ctx, "kpb_debian_cmdline", case.patches, &out);
    args.src = PathBuf::new();
    args.build = PathBuf::new();
    args.quiet = false;
    let target = kpbuild::build::TargetArgs {
        debian: Some(release.clone()),
        ..Default::default()
    };
    let start = Instant::now();
    let (code, result) = kpbuild::build::execute_with(&args, &target);
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    eprintln!(
        "  > debian: built in {:.1} s, prematch {}",
        start.elapsed().as_secs_f64(),
        report["prematch"]
    );
    let kernel = kpbuild::debian::fetch(&release, &|_| {})?;
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
fn debian_module_target(ctx: &Ctx) -> Result<(), String> {
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
    let kernel = kpbuild::debian::fetch(&release, &|_| {})?;
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
fn debian_pr_debug_copy(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_pr_debug";
    let (code, result, ko) = debian_build(
        ctx,
        &release,
        module,
        &["debian-binfmt-misc-pr-debug.patch"],
    );
    result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {})?;
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

/// Boots Debian's kernel (1 GiB, 240 s at most) with `script`.
fn debian_vm(
    kernel: &kpbuild::debian::DebianKernel,
    work: &std::path::Path,
    script: &GuestScript,
) -> Result<testbed::guest::GuestReport, String> {
    let mut vm = Vm::new(&kernel.vmlinuz, work);
    vm.memory_mb = 1024;
    vm.timeout = Duration::from_secs(240);
    vm.run(script).map_err(|e| e.to_string())
}

/// Debian's shipped `binfmt_misc.ko`, decompressed, to load in the guest.
fn binfmt_misc_ko(kernel: &kpbuild::debian::DebianKernel) -> Result<Vec<u8>, String> {
    let shipped = kernel.modules.join("kernel/fs/binfmt_misc.ko.xz");
    kpbuild::process::run(std::process::Command::new("xz").arg("-dc").arg(&shipped))
        .map(|o| o.stdout)
        .map_err(|e| format!("{}: {e}", shipped.display()))
}

/// `kpbuild build --debian RELEASE` for `patches`.
fn debian_build(
    ctx: &Ctx,
    release: &str,
    module: &str,
    patches: &[&str],
) -> (u8, Result<serde_json::Value, String>, PathBuf) {
    let out = ctx.work.join(format!("debian-{module}"));
    let mut args = kpbuild_args(ctx, module, patches, &out);
    args.src = PathBuf::new();
    args.build = PathBuf::new();
    let target = kpbuild::build::TargetArgs {
        debian: Some(release.into()),
        ..Default::default()
    };
    let (code, result) = kpbuild::build::execute_with(&args, &target);
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
fn debian_new_helper_and_replace(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let helper = debian_module(ctx, "kpb_deb_helper", &["proc-cmdline-new-helper.patch"])?;
    let a = debian_module(ctx, "kpb_deb_a", &["proc-cmdline-string.patch"])?;
    let b = debian_module(ctx, "kpb_deb_b", &["proc-cmdline-string-v2.patch"])?;
    let kernel = kpbuild::debian::fetch(&release, &|_| {})?;
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
fn debian_refusals_and_bad_release(ctx: &Ctx) -> Result<(), String> {
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
fn debian_mismatched_target_files(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let k = kpbuild::debian::fetch(&release, &|_| {})?;
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
        args.src = k.src.clone();
        args.build = PathBuf::new();
        let target = kpbuild::build::TargetArgs {
            config: Some(config.to_path_buf()),
            vmlinux: Some(vmlinux.to_path_buf()),
            headers: Some(k.headers.clone()),
            ..Default::default()
        };
        let start = Instant::now();
        let (code, result) = kpbuild::build::execute_with(&args, &target);
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

/// `kpbuild` (the binary, as users run it) with `SOURCE_DATE_EPOCH`:
/// (exit code, stdout, stderr).
fn kpbuild_cli(args: &[&std::ffi::OsStr], epoch: u64) -> Result<(i32, String, String), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(crate::repo_root())
        .args(["run", "--quiet", "--package", "kpbuild", "--"])
        .args(args)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .output()
        .map_err(|e| format!("cargo run kpbuild: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// [`kpbuild_cli`] that must succeed.
fn kpbuild_ok(args: &[&std::ffi::OsStr], epoch: u64) -> Result<String, String> {
    let (code, stdout, stderr) = kpbuild_cli(args, epoch)?;
    if code != 0 {
        return Err(format!("kpbuild {args:?} exited {code}: {stderr}"));
    }
    Ok(stdout)
}

/// The bytes `od -An -tx1 -v` printed.
fn od_bytes(lines: &[String]) -> Result<Vec<u8>, String> {
    lines
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|h| u8::from_str_radix(h, 16).map_err(|e| format!("od output {h:?}: {e}")))
        .collect()
}

/// Signed cumulative bundles on the module-signing test kernel
/// (`MODULE_SIG_FORCE`): sequence 1 holds one fix, sequence 2 that fix and
/// a second one (a git-format patch naming a CVE), built twice into
/// byte-identical bundles. Both are published to a repository; the manifest
/// and the index verify with `minisign -V`. In one boot, the modules taken
/// from the verified bundles load (signed), the second atomically replaces
/// the first, and both fixes' behaviour shows, then goes away. The guest's
/// `/sys/kernel/notes` then verifies as the bundle's kernel, while the test
/// kernel's build-id does not; a rollback to sequence 1 is recorded.
fn bundle_signed_cumulative(_ctx: &Ctx) -> Result<(), String> {
    use std::ffi::OsStr;
    let kb = crate::signing_kernel()?;
    let work = std::env::temp_dir().join(format!("kpbuild-e2e-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let keys = crate::repo_root().join("fixtures/bundle");
    let (key, pubkey) = (keys.join("test.key"), keys.join("test.pub"));
    let config = kb.build.join(".config");
    let vmlinux = kb.vmlinux();
    let sequences: [(&str, &[&str]); 2] = [
        ("kpb_bundle_1", &["proc-cmdline-string.patch"]),
        (
            "kpb_bundle_2",
            &["proc-cmdline-string.patch", "testbed-fix-value-cve.patch"],
        ),
    ];
    let build = |module: &str, patches: &[&str], out: &std::path::Path| {
        let mut args = build_args(&kb, module, patches, out);
        args.sign_key = Some(signing_fixture("test-key.pem"));
        args.sign_cert = Some(signing_fixture("test-cert.pem"));
        let (code, result) = kpbuild::build::execute(&args);
        result
            .map(|_| ())
            .map_err(|why| format!("kpbuild build {module} exited {code}: {why}"))
    };
    let create =
        |out: &std::path::Path, bundle: &std::path::Path, prev: Option<&std::path::Path>, epoch| {
            let mut args: Vec<&OsStr> = vec![
                "bundle".as_ref(),
                "create".as_ref(),
                "--build-out".as_ref(),
                out.as_os_str(),
                "--vmlinux".as_ref(),
                vmlinux.as_os_str(),
                "--config".as_ref(),
                config.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
                "--out".as_ref(),
                bundle.as_os_str(),
            ];
            if let Some(p) = prev {
                args.extend([
                    "--predecessor".as_ref(),
                    p.as_os_str(),
                    "--pubkey".as_ref(),
                    pubkey.as_os_str(),
                ]);
            }
            kpbuild_ok(&args, epoch)
        };
    let epoch = 1_790_000_000;
    let b1 = work.join("seq1.kpb");
    let out1 = work.join("out1");
    build(sequences[0].0, sequences[0].1, &out1)?;
    create(&out1, &b1, None, epoch)?;
    let mut seconds = Vec::new();
    for run in ["a", "b"] {
        let out = work.join(format!("out2{run}"));
        build(sequences[1].0, sequences[1].1, &out)?;
        let b = work.join(format!("seq2{run}.kpb"));
        create(&out, &b, Some(&b1), epoch + 100)?;
        seconds.push(read_file(&b)?);
    }
    if seconds[0] != seconds[1] {
        return Err(
            "two builds and bundles of the same inputs, key and SOURCE_DATE_EPOCH differ".into(),
        );
    }
    let b2 = work.join("seq2a.kpb");
    eprintln!(
        "  > reproducible: two sequence-2 bundles byte-identical ({} bytes)",
        seconds[0].len()
    );

    // The manifest and its signature, checked by the external tool.
    let external = work.join("external");
    std::fs::create_dir_all(&external).map_err(|e| e.to_string())?;
    kpbuild::process::run(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&b2)
            .arg("-C")
            .arg(&external)
            .args(["manifest.json", "manifest.json.minisig"]),
    )
    .map_err(|e| e.to_string())?;
    kpbuild::process::run(
        std::process::Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(&pubkey)
            .arg("-m")
            .arg(external.join("manifest.json")),
    )
    .map_err(|e| format!("minisign -V of the manifest: {e}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_file(&external.join("manifest.json"))?)
            .map_err(|e| e.to_string())?;
    let cves = &manifest["patches"][1]["cves"];
    if manifest["sequence"] != 2 || cves != &serde_json::json!(["CVE-2099-0001"]) {
        return Err(format!("unexpected manifest: {manifest:#}"));
    }

    // Publish both; the repository's index names sequence 2.
    let repo = work.join("repo");
    for b in [&b1, &b2] {
        kpbuild_ok(
            &[
                "bundle".as_ref(),
                "publish".as_ref(),
                "--repo".as_ref(),
                repo.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
                "--pubkey".as_ref(),
                pubkey.as_os_str(),
                b.as_os_str(),
            ],
            epoch + 200,
        )?;
    }
    let build_id = manifest["kernel"]["build_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let index_path = repo.join(&build_id).join("index.json");
    let index = |want_latest: u64, want_history: usize| -> Result<(), String> {
        let index: serde_json::Value =
            serde_json::from_slice(&read_file(&index_path)?).map_err(|e| e.to_string())?;
        let history = index["history"].as_array().map_or(0, Vec::len);
        if index["latest"]["sequence"] != want_latest || history != want_history {
            return Err(format!(
                "index: expected latest {want_latest} and {want_history} history records: {index:#}"
            ));
        }
        kpbuild::process::run(
            std::process::Command::new("minisign")
                .arg("-V")
                .arg("-p")
                .arg(&pubkey)
                .arg("-m")
                .arg(&index_path),
        )
        .map(|_| ())
        .map_err(|e| format!("minisign -V of the index: {e}"))
    };
    index(2, 2)?;

    // The modules, taken out of the verified bundles.
    let public = bundle::PublicKey::read(&pubkey).map_err(|e| e.to_string())?;
    let module_of = |path: &std::path::Path, module: &str| -> Result<Vec<u8>, String> {
        let verified = bundle::Bundle::read(&read_file(path)?)
            .and_then(|b| b.verify(&public))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        verified
            .bundle()
            .file(&format!("modules/{module}.ko"))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{}: no module {module}", path.display()))
    };
    let mut script = GuestScript::default();
    script
        .file("/modules/kpb_bundle_1.ko", module_of(&b1, "kpb_bundle_1")?)
        .file("/modules/kpb_bundle_2.ko", module_of(&b2, "kpb_bundle_2")?);
    script
        .check("notes", "the running kernel's notes", "od -An -tx1 -v /sys/kernel/notes")
        .check("before", "original behaviour", "expect_contains 'cat /proc/cmdline' console=ttyS0 && expect_contains 'cat /proc/kpbuild_fix' fix=none");
    // Signed modules: the MODULE_SIG_FORCE kernel loads them.
    Replace {
        first: "kpb_bundle_1",
        second: "kpb_bundle_2",
        first_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string && expect_contains 'cat /proc/kpbuild_fix' fix=none",
        second_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string && expect_contains 'cat /proc/kpbuild_fix' fix=85",
        after: "expect_lacks 'cat /proc/cmdline' kpbuild= && expect_contains 'cat /proc/kpbuild_fix' fix=none",
    }
    .add_to(&mut script);
    let report = Vm::new(&kb.bzimage(), &work.join("vm"))
        .run(&script)
        .map_err(|e| e.to_string())?;
    report.verify(&script)?;

    // The running kernel's notes identify the bundle's kernel.
    let notes = work.join("notes");
    std::fs::write(&notes, od_bytes(report.output("notes"))?).map_err(|e| e.to_string())?;
    let verified = kpbuild_ok(
        &[
            "bundle".as_ref(),
            "verify".as_ref(),
            b2.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
            "--kernel-notes".as_ref(),
            notes.as_os_str(),
        ],
        epoch,
    )?;
    eprintln!(
        "  > verify against the guest's /sys/kernel/notes: {}",
        verified.lines().last().unwrap_or("")
    );
    let other = kimage::notes::gnu_build_id(&read_file(&crate::kernel()?.vmlinux())?)
        .map_err(|e| e.to_string())?;
    let (code, _, stderr) = kpbuild_cli(
        &[
            "bundle".as_ref(),
            "verify".as_ref(),
            b2.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
            "--kernel-build-id".as_ref(),
            other.as_ref(),
        ],
        epoch,
    )?;
    if code != 1 || !stderr.contains(&other) || !stderr.contains(&build_id) {
        return Err(format!(
            "verify against another kernel: exit {code}: {stderr}"
        ));
    }

    // Roll back: recorded, nothing rewritten.
    kpbuild_ok(
        &[
            "bundle".as_ref(),
            "rollback".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
            "--build-id".as_ref(),
            build_id.as_ref(),
            "--sequence".as_ref(),
            "1".as_ref(),
        ],
        epoch + 300,
    )?;
    index(1, 3)?;
    if read_file(&repo.join(&build_id).join("000002.kpb"))? != seconds[0] {
        return Err("the rolled-back bundle was changed or removed".into());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A test signing key and certificate under `fixtures/signing/`.
fn signing_fixture(name: &str) -> PathBuf {
    crate::repo_root().join("fixtures/signing").join(name)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The module-signing test kernel (`CONFIG_MODULE_SIG_FORCE`, the test
/// certificate trusted): a module `kpbuild build --sign-key/--sign-cert`
/// makes against that kernel's tree loads and patches; the same module
/// unsigned, signed with a key the kernel does not trust, or with one byte
/// flipped after signing is refused by `insmod`; signed with SHA-512 instead
/// of SHA-256, it loads and patches. One boot.
fn signing_kernel_enforces_signatures(_ctx: &Ctx) -> Result<(), String> {
    let start = Instant::now();
    let kb = crate::signing_kernel()?;
    eprintln!(
        "  > signing kernel ready in {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        kb.build.display()
    );
    let work = std::env::temp_dir().join(format!("kpbuild-e2e-signing-{}", std::process::id()));
    let case = &PROC_CMDLINE_STRING;
    let module = "kpb_signed";
    let out = work.join("out");
    let mut args = build_args(&kb, module, case.patches, &out);
    args.sign_key = Some(signing_fixture("test-key.pem"));
    args.sign_cert = Some(signing_fixture("test-cert.pem"));
    let (code, result) = kpbuild::build::execute(&args);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    if report["signature"]["hash"] != "sha256" {
        return Err(format!(
            "report has no sha256 signature: {}",
            report["signature"]
        ));
    }
    let signed = read_file(&out.join(format!("{module}.ko")))?;
    let info = modsign::parse_signature(&signed).ok_or("the built module is not signed")?;
    let signer = info.signer.ok_or("the signature names no signer")?;
    if !signer.issuer.contains("kpbuild test signing key")
        || info.hash != Some(modsign::Hash::Sha256)
    {
        return Err(format!(
            "unexpected signer {signer:?} / hash {:?}",
            info.hash
        ));
    }
    let unsigned = modsign::strip_signature(&signed)
        .map_err(|e| e.to_string())?
        .to_vec();
    let timed = Instant::now();
    let other = modsign::sign(
        &unsigned,
        &read_file(&signing_fixture("other-key.pem"))?,
        &read_file(&signing_fixture("other-cert.pem"))?,
        modsign::Hash::Sha256,
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "  > signing kernel: {} bytes signed in {:.1} ms",
        unsigned.len(),
        timed.elapsed().as_secs_f64() * 1000.0
    );
    let mut flipped = signed.clone();
    flipped[unsigned.len() / 2] ^= 0x01;
    let sha512 = modsign::sign(
        &unsigned,
        &read_file(&signing_fixture("test-key.pem"))?,
        &read_file(&signing_fixture("test-cert.pem"))?,
        modsign::Hash::Sha512,
    )
    .map_err(|e| e.to_string())?;

    let mut script = GuestScript::default();
    for (name, bytes) in [
        ("unsigned", unsigned),
        ("other", other),
        ("flipped", flipped),
    ] {
        script.file(&format!("/modules/kpb_{name}.ko"), bytes);
    }
    // insmod must fail with EKEYREJECTED; the kernel logs why for the first two.
    let refused = |name: &str, dmesg: Option<&str>| {
        let mut shell = format!(
            "out=$(insmod /modules/kpb_{name}.ko 2>&1); rc=$?; echo \"insmod rc=$rc: $out\"; \
             [ $rc -ne 0 ] && case \"$out\" in *'Key was rejected by service'*) true ;; *) false ;; esac \
             && ! grep -q '^{module} ' /proc/modules"
        );
        if let Some(reason) = dmesg {
            shell.push_str(&format!(" && dmesg | grep '{reason}'"));
        }
        shell
    };
    script
        .check(
            "cert-trusted",
            "the kernel loaded the test certificate into its keyring",
            "dmesg | grep \"Loaded X.509 cert 'kpbuild test signing key\"",
        )
        .check(
            "unsigned-refused",
            "the unsigned module is refused",
            refused("unsigned", Some("Loading of unsigned module is rejected")),
        )
        .check(
            "other-key-refused",
            "the module signed with an untrusted key is refused",
            refused(
                "other",
                Some("Loading of module with unavailable key is rejected"),
            ),
        )
        .check(
            "flipped-refused",
            "the module with a byte flipped after signing is refused",
            refused("flipped", None),
        );
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: signed,
        patch_name: module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "signed-");
    // The same module signed with SHA-512 (the kernel's own modules use
    // SHA-256): loads and patches too.
    Lifecycle {
        module_path: format!("/modules/{module}-sha512.ko"),
        module: sha512,
        patch_name: module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "sha512-");
    let report = Vm::new(&kb.bzimage(), &work.join("vm"))
        .run(&script)
        .map_err(|e| e.to_string())?;
    let verdict = report.verify(&script);
    if verdict.is_ok() {
        for id in [
            "cert-trusted",
            "unsigned-refused",
            "other-key-refused",
            "flipped-refused",
        ] {
            for line in report.output(&id.replace('-', "_")) {
                eprintln!("  > {id}: {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&work);
    }
    verdict
}

/// Two `kpbuild build` runs of the same patch against the same tree, in two
/// processes (so every scratch path differs), signed with the same key: the
/// signed modules are byte-identical, and so are the unsigned ones.
fn signing_reproducible(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("reproducible");
    let mut modules = Vec::new();
    for run in ["a", "b"] {
        let out = dir.join(run);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(crate::repo_root())
            .args([
                "run",
                "--quiet",
                "--package",
                "kpbuild",
                "--",
                "build",
                "--quiet",
            ])
            .arg("--src")
            .arg(&ctx.kernel.src)
            .arg("--build")
            .arg(&ctx.kernel.build)
            .arg("--patch")
            .arg(crate::repo_root().join("fixtures/patches/proc-cmdline-string.patch"))
            .args(["--name", "kpb_repro", "--out"])
            .arg(&out)
            .arg("--sign-key")
            .arg(signing_fixture("test-key.pem"))
            .arg("--sign-cert")
            .arg(signing_fixture("test-cert.pem"));
        kpbuild::process::run(&mut cmd).map_err(|e| e.to_string())?;
        modules.push(read_file(&out.join("kpb_repro.ko"))?);
    }
    let (a, b) = (&modules[0], &modules[1]);
    let strip = |m: &[u8]| {
        modsign::strip_signature(m)
            .map(<[u8]>::to_vec)
            .map_err(|e| e.to_string())
    };
    let (ua, ub) = (strip(a)?, strip(b)?);
    if ua != ub {
        let at = ua
            .iter()
            .zip(&ub)
            .position(|(x, y)| x != y)
            .unwrap_or(ua.len().min(ub.len()));
        return Err(format!(
            "the unsigned modules of two builds differ ({} vs {} bytes, first at offset {at:#x}); \
             compare {} and {}",
            ua.len(),
            ub.len(),
            dir.join("a/kpb_repro.ko").display(),
            dir.join("b/kpb_repro.ko").display()
        ));
    }
    if a != b {
        return Err("identical unsigned modules got different signatures".into());
    }
    eprintln!(
        "  > reproducible: two builds, {} bytes, byte-identical when signed",
        a.len()
    );
    Ok(())
}

/// Tree-less mode on the test kernel: only its source, config, vmlinux and
/// module build tree are given (no `.cmd` records are read from it); the
/// unit is compiled in a prepared private directory and the module loads.
fn treeless_test_kernel(ctx: &Ctx) -> Result<(), String> {
    let case = &PROC_CMDLINE_STRING;
    let out = ctx.work.join("treeless");
    let mut args = kpbuild_args(ctx, "kpb_treeless", case.patches, &out);
    args.build = PathBuf::new();
    let build = &ctx.kernel.build;
    let target = kpbuild::build::TargetArgs {
        config: Some(build.join(".config")),
        vmlinux: Some(ctx.kernel.vmlinux()),
        headers: Some(build.clone()),
        ..Default::default()
    };
    let start = Instant::now();
    let (code, result) = kpbuild::build::execute_with(&args, &target);
    let report = result.map_err(|why| format!("tree-less kpbuild build exited {code}: {why}"))?;
    if report["inputs"]["mode"] != "tree-less" {
        return Err(format!("not built tree-less: {}", report["inputs"]));
    }
    eprintln!(
        "  > treeless: built in {:.1} s, prematch {}",
        start.elapsed().as_secs_f64(),
        report["prematch"]
    );
    let ko = out.join("kpb_treeless.ko");
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: "/modules/kpb_treeless.ko".into(),
        module: std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?,
        patch_name: "kpb_treeless".into(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "");
    let report = ctx.vm("treeless").run(&script).map_err(|e| e.to_string())?;
    report.verify(&script)
}

/// A fixed sample of units of Debian's config, compiled with per-function
/// sections as kpbuild compiles them.
const SECTION_SAMPLE: &[&str] = &[
    "fs/proc/meminfo.o",
    "fs/proc/cmdline.o",
    "kernel/sys.o",
    "kernel/fork.o",
    "kernel/sched/core.o",
    "mm/page_alloc.o",
    "net/ipv4/tcp_input.o",
    "fs/namei.o",
    "arch/x86/kernel/process.o",
];

/// Every section the objects of Debian's production config carry has a rule
/// in elfdiff (per function, per symbol, per special-section entry, ignored,
/// init) or is compared whole and refused by name if it differs: none is
/// dropped silently. The livepatch module's `.BTF` is reported.
fn debian_config_sections_are_covered(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    use elfdiff::special::{SectionRule, rule};
    use object::elf;
    use object::read::elf::{ElfFile64, FileHeader as _, SectionHeader as _, Sym as _};
    use std::collections::BTreeMap;

    // The cmdline patch once: prepares the Debian build directory and gives
    // a module to check.
    let build = || {
        let (code, result, ko) = debian_build(
            ctx,
            &release,
            "kpb_deb_sections",
            PROC_CMDLINE_STRING.patches,
        );
        result
            .map(|_| ko)
            .map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))
    };
    let kernel = kpbuild::debian::fetch(&release, &|_| {})?;
    let (prepared, cc) = kpbuild::treeless::prepared_dir(&kernel.src, &kernel.config)?;
    let mut ko = None;
    if !prepared.join(".kpbuild-prepared").exists() {
        ko = Some(build()?);
    }
    // A scratch copy: objects built with other flags stay out of the shared
    // directory.
    let scratch = ctx.work.join("debian-sections-build");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    }
    std::fs::create_dir_all(&ctx.work).map_err(|e| format!("{}: {e}", ctx.work.display()))?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&prepared)
        .arg(&scratch)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err(format!("cp -a {} failed", prepared.display()));
    }
    for unit in SECTION_SAMPLE {
        let _ = std::fs::remove_file(scratch.join(unit));
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out = std::process::Command::new("make")
        .arg("-C")
        .arg(&kernel.src)
        .arg(format!("O={}", scratch.display()))
        .arg(format!("CC={cc}"))
        .arg("KCFLAGS=-ffunction-sections -fdata-sections")
        .arg(format!("-j{jobs}"))
        .arg("-s")
        .args(SECTION_SAMPLE)
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "make {SECTION_SAMPLE:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    // Section names are grouped: per-function and per-variable sections
    // (`.text.foo`, `.data.bar`) count under their prefix.
    let group = |name: &str| -> String {
        for prefix in [
            ".text.unlikely.",
            ".text.hot.",
            ".text.",
            ".data.rel.ro.",
            ".data.once.",
            ".data.read_mostly.",
            ".data.",
            ".rodata.str",
            ".rodata.",
            ".bss.",
            ".rela.text.",
            ".rela.data.",
            ".rela.rodata.",
            ".init.text.",
            ".init.data.",
            ".init.rodata.",
            ".exit.text.",
            ".ref.text.",
            ".sched.text.",
            ".noinstr.text.",
            ".cpuidle.text.",
            ".debug_",
        ] {
            if let Some(rest) = name.strip_prefix(prefix)
                && !rest.is_empty()
            {
                return format!("{prefix}*");
            }
        }
        name.to_string()
    };
    // (group, rule) → units.
    let mut table: BTreeMap<(String, String), std::collections::BTreeSet<&str>> = BTreeMap::new();
    let mut whole = std::collections::BTreeSet::new();
    for unit in SECTION_SAMPLE {
        let path = scratch.join(unit);
        let data = read_file(&path)?;
        let file = ElfFile64::<object::Endianness>::parse(data.as_slice())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let endian = file.endian();
        let header = file.elf_header();
        let sections = header
            .sections(endian, data.as_slice())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let symbols = sections
            .symbols(endian, data.as_slice(), elf::SHT_SYMTAB)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Named function and object symbols per section index (what
        // elfdiff's `symbols_in` holds).
        let mut with_symbols = std::collections::HashSet::new();
        for (i, sym) in symbols.iter().enumerate() {
            let kind = sym.st_type();
            if (kind == elf::STT_FUNC || kind == elf::STT_OBJECT || kind == elf::STT_NOTYPE)
                && sym
                    .name(endian, symbols.strings())
                    .is_ok_and(|n| !n.is_empty())
                && let Ok(Some(index)) = symbols.symbol_section(endian, sym, object::SymbolIndex(i))
            {
                with_symbols.insert(index.0);
            }
        }
        for (index, section) in sections.iter().enumerate() {
            if index == 0 {
                continue;
            }
            let name = String::from_utf8_lossy(
                sections
                    .section_name(endian, section)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )
            .into_owned();
            let flags = section.sh_flags(endian).0;
            let kind = section.sh_type(endian);
            let merge = flags & elf::SHF_MERGE.0 != 0;
            let r = if kind == elf::SHT_RELA {
                SectionRule::Ignored
            } else {
                rule(&name, flags, with_symbols.contains(&index), merge)
            };
            let alloc = flags & elf::SHF_ALLOC.0 != 0;
            if alloc && kind == elf::SHT_RELA {
                return Err(format!("{unit}: allocated relocation section {name}"));
            }
            let label = match r {
                SectionRule::Special(s) => format!("Special({})", s.name),
                SectionRule::Ignored if alloc => "Ignored".into(),
                SectionRule::Ignored => "Ignored (not loaded)".into(),
                SectionRule::ComparedWhole => {
                    whole.insert(group(&name));
                    "ComparedWhole".into()
                }
                other => format!("{other:?}"),
            };
            table.entry((group(&name), label)).or_default().insert(unit);
        }
    }
    eprintln!("  > {:<34} {:<34} units", "section", "rule");
    for ((name, label), units) in &table {
        eprintln!("  > {name:<34} {label:<34} {}", units.len());
    }
    eprintln!(
        "  > compared whole, refused by name if a patch changes them: {}",
        whole.into_iter().collect::<Vec<_>>().join(" ")
    );
    // Every section got a rule above: `rule` is total, and its only
    // catch-all for allocated sections is ComparedWhole, which refuses.
    let _ = std::fs::remove_dir_all(&scratch);
    let ko = match ko {
        Some(ko) => ko,
        None => build()?,
    };
    let ko_data = read_file(&ko)?;
    let module = ElfFile64::<object::Endianness>::parse(ko_data.as_slice())
        .map_err(|e| format!("{}: {e}", ko.display()))?;
    let endian = module.endian();
    let sections = module
        .elf_header()
        .sections(endian, ko_data.as_slice())
        .map_err(|e| format!("{}: {e}", ko.display()))?;
    let btf: Vec<String> = sections
        .iter()
        .filter_map(|s| sections.section_name(endian, s).ok())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with(".BTF"))
        .collect();
    eprintln!(
        "  > {}: {}",
        ko.display(),
        if btf.is_empty() {
            "no .BTF section".to_string()
        } else {
            format!("carries {}", btf.join(" "))
        }
    );
    Ok(())
}
