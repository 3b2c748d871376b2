//! The kernel end-to-end suite: each case boots the test kernel in QEMU with
//! a generated initramfs and asserts on every step the guest reports.

mod bundles;
mod callers;
mod debian;
mod debian13;
mod demo;
mod farm;
mod harness;
mod headers;
mod kpmacros;
mod locals;
mod modversions;
mod objtool;
mod pipeline;
mod prematch;
mod sections;
mod shared;
mod signing;
mod tree;
mod vmtest;

pub use demo::demo;

use crate::kernel;
use std::path::PathBuf;
use std::time::Instant;
use testbed::guest::GuestScript;
use testbed::kernel::KernelBuild;
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

    /// Boots the test kernel with `script` (case directory `case`) and
    /// checks every expectation and the kernel log.
    fn boot(&self, case: &str, script: &GuestScript) -> Result<(), String> {
        let report = self.vm(case).run(script).map_err(|e| e.to_string())?;
        report.verify(script)
    }

    fn module(&self, relative: &str) -> Result<Vec<u8>, String> {
        let path = self.kernel.module(relative);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

const CASES: &[Case] = &[
    Case {
        name: "sample_livepatch_cmdline",
        run: harness::sample_livepatch_cmdline,
    },
    Case {
        name: "harness_catches_wrong_expectation",
        run: harness::harness_catches_wrong_expectation,
    },
    Case {
        name: "harness_catches_module_that_does_not_patch",
        run: harness::harness_catches_non_patch,
    },
    Case {
        name: "harness_catches_hung_guest",
        run: harness::harness_catches_hung_guest,
    },
    Case {
        name: "module_glue_klp_relocation",
        run: tree::module_glue_klp_relocation,
    },
    Case {
        name: "build_proc_cmdline_string",
        run: |ctx| tree::patch_case(ctx, &PROC_CMDLINE_STRING),
    },
    Case {
        name: "build_new_helper_function",
        run: |ctx| tree::patch_case(ctx, &NEW_HELPER),
    },
    Case {
        name: "build_static_function_and_variable",
        run: |ctx| tree::patch_case(ctx, &STATIC_CALL),
    },
    Case {
        name: "build_static_local_counter_keeps_value",
        run: |ctx| tree::patch_case(ctx, &STATIC_COUNTER),
    },
    Case {
        name: "build_inlined_callee_patches_callers",
        run: |ctx| tree::patch_case(ctx, &INLINED),
    },
    Case {
        name: "build_replace_second_patch_replaces_first",
        run: tree::build_replace,
    },
    Case {
        name: "build_module_target_before_and_after_load",
        run: tree::build_module_target,
    },
    Case {
        name: "build_callbacks_and_shadow_variable",
        run: tree::callbacks_case,
    },
    Case {
        name: "build_fork_copy_process_runs_patched",
        run: tree::build_fork_copy_process,
    },
    Case {
        name: "build_new_function_shared_by_vmlinux_and_module_units",
        run: shared::shared_new_function_tree,
    },
    Case {
        name: "build_syscall_body_carried_by_its_wrapper",
        run: callers::syscall_body_tree,
    },
    Case {
        name: "build_untraced_global_carried_by_callers_in_two_units",
        run: callers::untraced_global_tree,
    },
    Case {
        name: "vmtest_passes_fails_and_measures_latency",
        run: vmtest::vmtest_module,
    },
    Case {
        name: "farm_run_builds_and_tests_a_series",
        run: farm::farm_run_tree,
    },
    Case {
        name: "debian_unit_compiled_in_its_own_directory",
        run: debian::debian_unit_compiled_in_its_own_directory,
    },
    Case {
        name: "farm_three_targets_rerun_and_revised_fix",
        run: farm::farm_three_targets,
    },
    Case {
        name: "farm_pipeline_gitlab_two_debian_targets_github_linted",
        run: pipeline::farm_pipeline,
    },
    Case {
        name: "build_refuses_init_code_change",
        run: |ctx| tree::refusal_case(ctx, "proc-cmdline-init-refused.patch", 2, "__init"),
    },
    Case {
        name: "build_refuses_initialised_data_change",
        run: |ctx| tree::refusal_case(ctx, "printk-data-refused.patch", 2, "console_printk"),
    },
    Case {
        name: "build_comment_only_is_no_change",
        run: |ctx| tree::refusal_case(ctx, "proc-cmdline-comment-only.patch", 3, "no function"),
    },
    Case {
        name: "elfdiff_no_false_positives_whole_kernel",
        run: |ctx| crate::scale::no_false_positives(&ctx.kernel),
    },
    Case {
        name: "prematch_cmdline_matches_test_kernel",
        run: tree::prematch_matches,
    },
    Case {
        name: "prematch_flipped_vmlinux_byte_exits_1",
        run: tree::prematch_flipped_byte,
    },
    Case {
        name: "debian_cloud_kernel_cmdline_string",
        run: debian::debian_cloud_kernel,
    },
    Case {
        name: "debian_new_helper_and_replace",
        run: debian::debian_new_helper_and_replace,
    },
    Case {
        name: "debian_refusals_and_bad_release",
        run: debian::debian_refusals_and_bad_release,
    },
    Case {
        name: "debian_oldest_6_12_cloud_string_and_helper",
        run: debian::debian_oldest_6_12_cloud,
    },
    Case {
        name: "debian_newest_6_1_cloud_string_and_helper",
        run: debian::debian_newest_6_1_cloud,
    },
    Case {
        name: "debian13_cloud_string_and_helper_in_build_root",
        run: debian13::debian13_cloud,
    },
    Case {
        name: "debian_unknown_release_lists_known",
        run: debian::debian_unknown_release_lists_known,
    },
    Case {
        name: "signing_kernel_enforces_signatures",
        run: signing::signing_kernel_enforces_signatures,
    },
    Case {
        name: "signing_reproducible_two_builds",
        run: signing::signing_reproducible,
    },
    Case {
        name: "treeless_test_kernel_cmdline_string",
        run: tree::treeless_test_kernel,
    },
    Case {
        name: "debian_config_sections_are_covered",
        run: sections::debian_config_sections_are_covered,
    },
    Case {
        name: "debian_module_target_binfmt_misc",
        run: debian::debian_module_target,
    },
    Case {
        name: "debian_new_function_shared_by_vmlinux_and_module_units",
        run: shared::shared_new_function_debian,
    },
    Case {
        name: "debian_changed_export_crcs_load",
        run: modversions::debian_changed_export_crcs_load,
    },
    Case {
        name: "debian_untraced_functions_carried_by_their_callers",
        run: callers::untraced_debian,
    },
    Case {
        name: "debian_sock_prematch_and_fix",
        run: prematch::debian_sock_prematch_and_fix,
    },
    Case {
        name: "debian_pr_debug_changed_in_module",
        run: debian::debian_pr_debug_copy,
    },
    Case {
        name: "debian_mismatched_target_files_exit_1",
        run: debian::debian_mismatched_target_files,
    },
    Case {
        name: "debian_header_inline_callers",
        run: headers::header_debian,
    },
    Case {
        name: "build_header_inline_stub_callers",
        run: headers::header_tree,
    },
    Case {
        name: "build_header_refusals",
        run: headers::header_refusals,
    },
    Case {
        name: "build_kpatch_macros_syscall_and_callbacks",
        run: kpmacros::kpatch_macros_tree,
    },
    Case {
        name: "debian_kpatch_macros_syscall_and_callbacks",
        run: kpmacros::kpatch_macros_debian,
    },
    Case {
        name: "bundle_signed_cumulative_in_signing_kernel",
        run: bundles::bundle_signed_cumulative,
    },
    Case {
        name: "build_mutex_init_new_key_and_blank_line_no_change",
        run: locals::test_kernel,
    },
    Case {
        name: "debian_mutex_init_new_key_and_blank_line_no_change",
        run: locals::debian,
    },
    Case {
        name: "diff_objtool_processed_module_object",
        run: objtool::diff_objtool_processed_module_object,
    },
];

/// Which cases run.
#[derive(Debug, Clone, Copy)]
pub enum Filter<'a> {
    /// Every case.
    All,
    /// The cases whose name contains the text.
    Contains(&'a str),
    /// The cases named exactly (comma-separated names).
    Only(&'a str),
}

impl Filter<'_> {
    fn selects(&self, name: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Contains(f) => name.contains(f),
            Filter::Only(names) => names.split(',').any(|n| n.trim() == name),
        }
    }
}

/// Runs the cases `filter` selects; prints one line per case and a closing
/// `e2e: N passed, N failed` line. Returns (passed, failed). Naming a case
/// that does not exist is an error.
pub fn run_suite(filter: Filter<'_>) -> Result<(usize, usize), String> {
    if let Filter::Only(names) = filter
        && let Some(n) = names
            .split(',')
            .map(str::trim)
            .find(|n| !CASES.iter().any(|c| c.name == *n))
    {
        return Err(format!("no end-to-end case is named {n:?}"));
    }
    let kernel = kernel()?;
    let work = std::env::temp_dir().join(format!("kpbuild-e2e-{}", std::process::id()));
    let ctx = Ctx {
        kernel,
        work: work.clone(),
    };
    let (mut passed, mut failed) = (0, 0);
    for case in CASES.iter().filter(|c| filter.selects(c.name)) {
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

/// Runs `kpbuild build` through the library; returns the exit code and the
/// report, or the reason it stopped.
fn kpbuild_build(
    ctx: &Ctx,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> (u8, Result<serde_json::Value, String>) {
    crate::kpbuild_build(&kpbuild_args(ctx, module, patches, out))
}

/// The arguments of `kpbuild build` against the test kernel.
fn kpbuild_args(
    ctx: &Ctx,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> kpbuild::BuildRequest {
    build_args(&ctx.kernel, module, patches, out)
}

/// The arguments of `kpbuild build` of `fixtures/patches/PATCHES` against
/// the built kernel `kb`.
fn build_args(
    kb: &KernelBuild,
    module: &str,
    patches: &[&str],
    out: &std::path::Path,
) -> kpbuild::BuildRequest {
    kpbuild::BuildRequest::new(
        kpbuild::build::TargetSpec::Tree {
            src: kb.src.clone(),
            build: kb.build.clone(),
            vmlinux: None,
        },
        patches
            .iter()
            .map(|p| crate::repo_root().join("fixtures/patches").join(p))
            .collect(),
        module,
        out,
    )
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

/// A test signing key and certificate under `fixtures/signing/`.
fn signing_fixture(name: &str) -> PathBuf {
    crate::repo_root().join("fixtures/signing").join(name)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}
