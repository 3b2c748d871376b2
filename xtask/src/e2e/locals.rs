//! Numbered static locals and line-number-only changes on real kernels: a
//! patch that adds a `mutex_init` (a new `__key.N` beside the unit's other
//! lock keys) to `copy_signal`, seen by every new process, and a patch that
//! only adds a blank line at the top of files full of `WARN`s, `__LINE__`
//! arguments and `file.c:LINE` strings, which must be no change.

use super::{Ctx, kpbuild_args};
use kpbuild::{BuildError, BuildRequest};
use std::path::Path;
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

/// The mutex patch (`kernel/fork.c`): every process forked while it is
/// applied starts with `oom_score_adj` 7.
const MUTEX_PATCH: &str = "fork-copy-signal-mutex-init.patch";
const PROBE: &str = "cat /proc/self/oom_score_adj";

/// Builds a blank-line patch: it must end in exit 3 with nothing written to
/// the output directory, and the report must name, for each of `objects`,
/// the line-dependent constructs it judged.
fn blank_line_is_no_change(
    args: &BuildRequest,
    out: &Path,
    objects: &[&str],
) -> Result<(), String> {
    let report = match kpbuild::build(args) {
        Ok(_) => return Err("a blank-line patch made a module; expected exit 3".into()),
        Err(BuildError::NoChange { report }) => report,
        Err(e) => {
            return Err(format!(
                "blank-line patch: exit {}, expected 3: {e}",
                e.kind().exit_code()
            ));
        }
    };
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("{} is not empty after exit 3", out.display()));
    }
    for object in objects {
        let unit = report
            .units
            .iter()
            .find(|u| u.object == Path::new(object))
            .ok_or_else(|| format!("the report has no unit {object}"))?;
        if unit.line_only.is_empty() || !unit.changed.is_empty() {
            return Err(format!(
                "{object}: changed {:?}, {} judged line-only (expected none changed, some judged)",
                unit.changed,
                unit.line_only.len()
            ));
        }
        let first = &unit.line_only[0];
        eprintln!(
            "  > {object}: {} symbols judged line-only, e.g. {}: {}",
            unit.line_only.len(),
            first.symbol,
            first.what.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(())
}

/// The test kernel: the blank-line patch to `kernel/fork.c` and
/// `kernel/sched/core.c` is exit 3; the mutex patch loads, every new process
/// shows it, and it disables and unloads (one boot).
pub(super) fn test_kernel(ctx: &Ctx) -> Result<(), String> {
    let out = ctx.work.join("kpb_blank_line");
    let args = kpbuild_args(
        ctx,
        "kpb_blank_line",
        &["blank-line-fork-sched.patch"],
        &out,
    );
    blank_line_is_no_change(&args, &out, &["kernel/fork.o", "kernel/sched/core.o"])?;
    let out = ctx.work.join("kpb_mutex_init");
    let args = kpbuild_args(ctx, "kpb_mutex_init", &[MUTEX_PATCH], &out);
    let module = built(&args, &out, "kpb_mutex_init")?;
    let mut script = GuestScript::default();
    lifecycle("kpb_mutex_init", module).add_to(&mut script, "");
    ctx.boot("mutex-init", &script)
}

/// Debian's cloud kernel: the blank-line patch to `fs/ext4/super.c` and
/// `arch/x86/kvm/x86.c` (the `kvm` module) is exit 3; the mutex patch loads,
/// shows, disables and unloads (one boot).
pub(super) fn debian(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let debian = |module: &str, patch: &str| {
        let out = ctx.work.join(format!("debian-{module}"));
        let mut args = kpbuild_args(ctx, module, &[patch], &out);
        args.target = kpbuild::build::TargetSpec::Debian {
            release: release.clone(),
            src: None,
        };
        (args, out)
    };
    let (args, out) = debian("kpb_deb_blank_line", "debian-blank-line-ext4-kvm.patch");
    blank_line_is_no_change(&args, &out, &["fs/ext4/super.o", "arch/x86/kvm/x86.o"])?;
    let (args, out) = debian("kpb_deb_mutex_init", MUTEX_PATCH);
    let module = built(&args, &out, "kpb_deb_mutex_init")?;
    let mut script = GuestScript::default();
    lifecycle("kpb_deb_mutex_init", module).add_to(&mut script, "");
    super::debian::boot_debian(ctx, &release, "debian-mutex", &script)
}

/// Builds the mutex patch and returns the module's bytes.
fn built(args: &BuildRequest, out: &Path, module: &str) -> Result<Vec<u8>, String> {
    let (code, result) = crate::kpbuild_build(args);
    result.map_err(|why| format!("kpbuild build exited {code} for {MUTEX_PATCH}: {why}"))?;
    let ko = out.join(format!("{module}.ko"));
    std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))
}

/// Before: new processes start with `oom_score_adj` 0; patched: 7; after
/// disabling: 0 again.
fn lifecycle(module: &str, bytes: Vec<u8>) -> Lifecycle {
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: bytes,
        patch_name: module.to_string(),
        probe: PROBE.into(),
        original: "0".into(),
        patched: "7".into(),
    }
}
