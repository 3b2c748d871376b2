//! Cases on the test kernel's build tree: the module glue, `kpbuild build`
//! of the fixture patches, refusals, pre-match and tree-less mode.

use super::{
    Ctx, PROC_CMDLINE_STRING, PatchCase, Replace, built_module, kpbuild_args, kpbuild_build,
    read_file,
};
use std::time::Instant;
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

/// The module-building stage end to end: a hand-written replacement for
/// `cmdline_proc_show` that reads the unexported `saved_command_line` through
/// `.klp.sym.vmlinux.saved_command_line,0`, compiled with the kernel's own
/// flags for `fs/proc/cmdline.o`, linked with the generated glue by kbuild,
/// converted to the livepatch format, then loaded, patched and unpatched.
pub(super) fn module_glue_klp_relocation(ctx: &Ctx) -> Result<(), String> {
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
    let ko = kpbuild::module::build_module(
        &spec,
        &[object],
        build,
        &work.join("module"),
        &|s| exports.contains(s),
        &kpbuild::toolchain::Toolchain::Host,
    )
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
    ctx.boot("module-glue", &script)
}

/// Two cumulative patches built one after the other: loading the second
/// atomically replaces the first.
pub(super) fn build_replace(ctx: &Ctx) -> Result<(), String> {
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
    ctx.boot("replace", &script)
}

/// A patch to `foo_show` of the `kobject-example` module: loaded before the
/// module (applied when the module comes), then again after it.
pub(super) fn build_module_target(ctx: &Ctx) -> Result<(), String> {
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
    ctx.boot("module-target", &script)
}

/// A change to a helper inlined into `copy_process`, and to `copy_process`
/// itself: a 6 KB function with alternatives, jump labels and livepatch
/// relocations to numbered clones at non-zero positions. While patched,
/// every process the guest starts is created by the replacement, which
/// counts each fork 1000 times in `/proc/stat`'s `processes` (the kernel's
/// `total_forks`): the guest sees the new code run, and sees it stop.
pub(super) fn build_fork_copy_process(ctx: &Ctx) -> Result<(), String> {
    let module = built_module(ctx, "kpb_fork", &["fork-copy-process.patch"])?;
    let sys = "/sys/kernel/livepatch/kpb_fork";
    // FORKS processes started, then how much `processes` grew meanwhile:
    // FORKS plus what the kernel forked by itself unpatched, at least
    // 1000 * FORKS patched.
    let forks = 50;
    let counted = |check: &str| {
        format!(
            "processes() {{ set -- $(grep '^processes ' /proc/stat); echo $2; }}; \
             p0=$(processes); i=0; while [ $i -lt {forks} ]; do /bin/true || exit 1; i=$((i + 1)); done; \
             p1=$(processes); echo \"processes grew by $((p1 - p0)) over {forks} forks\"; \
             {check} && expect_contains 'sh -c \"echo forked-ok\"' forked-ok"
        )
    };
    let unpatched = counted(&format!("[ $((p1 - p0)) -lt {} ]", 1000 * forks));
    let mut script = GuestScript::default();
    script.file("/modules/kpb_fork.ko", module);
    script
        .check(
            "before",
            "each fork counts once before the patch",
            &unpatched,
        )
        .check("load", "patch loads", "insmod /modules/kpb_fork.ko")
        .check(
            "enabled",
            "patch enabled, transition done",
            format!("wait_value {sys}/enabled 1 5 && wait_value {sys}/transition 0 30"),
        )
        .check(
            "forks",
            "processes start and exit through the patched copy_process, which counts each fork 1000 times",
            counted(&format!("[ $((p1 - p0)) -ge {} ]", 1000 * forks)),
        )
        .check(
            "disable",
            "patch disables",
            format!("echo 0 > {sys}/enabled && wait_gone {sys} 30"),
        )
        .check(
            "after",
            "processes still start, each fork counts once again",
            &unpatched,
        )
        .check("unload", "module unloads", "rmmod kpb_fork");
    let report = ctx.vm("fork").run(&script).map_err(|e| e.to_string())?;
    let verdict = report.verify(&script);
    for id in ["before", "forks", "after"] {
        for line in report.output(id) {
            eprintln!("  > fork {id}: {line}");
        }
    }
    verdict
}

/// A patch kpbuild must not turn into a module: the exit code and a message
/// naming what is wrong, and nothing written.
pub(super) fn refusal_case(ctx: &Ctx, patch: &str, want: u8, needle: &str) -> Result<(), String> {
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

pub(super) fn patch_case(ctx: &Ctx, case: &PatchCase) -> Result<(), String> {
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
pub(super) fn callbacks_case(ctx: &Ctx) -> Result<(), String> {
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

/// The functions of the test kernel's `fs/proc/cmdline.o` the pre-match
/// compares with vmlinux. Measured with `cargo xtask e2e
/// prematch_cmdline_matches` (it prints the report's `prematch`); re-measure
/// when `fs/proc/cmdline.c` or the test kernel's config changes.
const CMDLINE_PREMATCHED: u64 = 2;

/// The cmdline patch against the test kernel passes the pre-match: every
/// function of the original unit equals vmlinux outside relocations.
pub(super) fn prematch_matches(ctx: &Ctx) -> Result<(), String> {
    let out = ctx.work.join("prematch-ok");
    let (code, result) = kpbuild_build(ctx, "kpb_prematch", &["proc-cmdline-string.patch"], &out);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    let checked = report["prematch"]["checked"].as_u64().unwrap_or(0);
    if checked == 0 {
        return Err(format!("no function pre-matched: {}", report["prematch"]));
    }
    let skipped = report["prematch"]["skipped"].as_array().map_or(0, Vec::len);
    if checked != CMDLINE_PREMATCHED || skipped != 0 {
        return Err(format!(
            "expected {CMDLINE_PREMATCHED} functions of fs/proc/cmdline.o pre-matched, none skipped: {}",
            report["prematch"]
        ));
    }
    eprintln!("  > prematch: {}", report["prematch"]);
    Ok(())
}

/// A vmlinux whose `cmdline_proc_show` differs in one byte (the first one
/// compared after `endbr64` and the `__fentry__` call) stops the build with
/// exit 1 naming the function and the offset.
pub(super) fn prematch_flipped_byte(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("prematch-flip");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let object = ctx.kernel.build.join("fs/proc/cmdline.o");
    let object_bytes = std::fs::read(&object).map_err(|e| format!("{}: {e}", object.display()))?;
    let flip = kpbuild::prematch::function_images("cmdline.o", &object_bytes)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|f| f.name == "cmdline_proc_show")
        .and_then(|f| f.first_unmasked(4))
        .ok_or("no compared byte in cmdline_proc_show")?;
    let vmlinux = ctx.kernel.vmlinux();
    let mut data = std::fs::read(&vmlinux).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    let (offset, size) = kpbuild::prematch::TargetCode::new(&data)
        .map_err(|e| e.to_string())?
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
    let mut args = args;
    args.target = kpbuild::build::TargetSpec::Tree {
        src: ctx.kernel.src.clone(),
        build: ctx.kernel.build.clone(),
        vmlinux: Some(copy),
    };
    let (code, result) = crate::kpbuild_build(&args);
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

/// Tree-less mode on the test kernel: only its source, config, vmlinux and
/// module build tree are given (no `.cmd` records are read from it); the
/// unit is compiled in a prepared private directory and the module loads.
pub(super) fn treeless_test_kernel(ctx: &Ctx) -> Result<(), String> {
    let case = &PROC_CMDLINE_STRING;
    let out = ctx.work.join("treeless");
    let mut args = kpbuild_args(ctx, "kpb_treeless", case.patches, &out);
    let build = &ctx.kernel.build;
    args.target = kpbuild::build::TargetSpec::Treeless {
        src: ctx.kernel.src.clone(),
        config: build.join(".config"),
        vmlinux: ctx.kernel.vmlinux(),
        headers: build.clone(),
        modules: None,
    };
    let start = Instant::now();
    let (code, result) = crate::kpbuild_build(&args);
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
    ctx.boot("treeless", &script)
}
