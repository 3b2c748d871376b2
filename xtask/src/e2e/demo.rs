//! `cargo xtask demo`: one patch's life cycle, printed step by step.

use super::{Ctx, PROC_CMDLINE_STRING, kpbuild_build};
use std::time::Instant;
use testbed::guest::GuestScript;
use testbed::kernel::KernelBuild;
use testbed::livepatch::Lifecycle;

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
