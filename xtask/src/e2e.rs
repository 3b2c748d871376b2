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
        name: "elfdiff_no_false_positives_whole_kernel",
        run: |ctx| crate::scale::no_false_positives(&ctx.kernel),
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
    let exports = kpbuild::module::symvers_exports(&symvers);
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
    let lifecycle = sample_lifecycle(&ctx)?;
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

/// Runs `kpbuild build` through the library; returns the exit code and the
/// report, or the reason it stopped.
fn kpbuild_build(
    ctx: &Ctx,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> (u8, Result<serde_json::Value, String>) {
    let args = kpbuild::build::BuildArgs {
        src: ctx.kernel.src.clone(),
        build: ctx.kernel.build.clone(),
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
    };
    kpbuild::build::execute(&args)
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
