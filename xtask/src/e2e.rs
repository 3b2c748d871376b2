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
