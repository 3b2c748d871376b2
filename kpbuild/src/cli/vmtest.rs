//! `kpbuild vmtest` on the command line: arguments and printing; the work
//! is [`crate::vmtest`]'s.

use crate::exit;
use crate::vmtest::{VmKernel, VmtestReport, VmtestRequest};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `kpbuild vmtest`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kernel").required(true).args(["debian", "image"])))]
pub struct VmtestArgs {
    /// The livepatch module to test.
    pub module: PathBuf,
    /// Boot this Debian release's own kernel (from the kernel cache,
    /// fetched when missing), e.g. `6.12.118+deb12-cloud-amd64`.
    #[arg(long)]
    pub debian: Option<String>,
    /// Boot this kernel image (a tree's `arch/x86/boot/bzImage`).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// A shell script run in the guest (busybox) while the patch is
    /// applied; a non-zero exit fails the test.
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Limit on the whole guest run, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Keep the initramfs and the serial log in this directory (a
    /// temporary one, removed afterwards, by default).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kpbuild vmtest`; returns the exit code: 0 passed, 1 failed or
/// could not run.
pub fn run(args: &VmtestArgs) -> u8 {
    let kernel = match (&args.debian, &args.image) {
        (Some(release), _) => VmKernel::Debian(release.clone()),
        (None, Some(image)) => VmKernel::Image(image.clone()),
        (None, None) => unreachable!("clap requires --debian or --image"),
    };
    let scratch = args
        .work
        .is_none()
        .then(|| std::env::temp_dir().join(format!("kpbuild-vmtest-{}", std::process::id())));
    let req = VmtestRequest {
        module: args.module.clone(),
        kernel,
        check: args.check.clone(),
        work: args.work.clone().or(scratch.clone()).expect("one of them"),
        memory_mb: args.memory,
        timeout: Duration::from_secs(args.timeout),
    };
    let result = crate::vmtest::run(&req);
    if let Some(dir) = &scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(report) => {
            print(&report, args.json, args.work.is_some());
            if report.passed {
                exit::SUCCESS
            } else {
                exit::ERROR
            }
        }
        Err(e) => {
            if args.json {
                let value = serde_json::json!({"outcome": "error", "message": e.to_string()});
                crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
            }
            eprintln!("kpbuild vmtest: {e}");
            exit::ERROR
        }
    }
}

fn print(report: &VmtestReport, json: bool, log_kept: bool) {
    if json {
        let mut value = serde_json::to_value(report).expect("json");
        value["outcome"] = if report.passed { "passed" } else { "failed" }.into();
        if !log_kept {
            value["serial_log"] = serde_json::Value::Null;
        }
        crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return;
    }
    crate::outln!(
        "vmtest {} ({}) in {}",
        report.module.display(),
        report.patch,
        report.kernel.display()
    );
    for step in &report.steps {
        crate::outln!("  {:<8} {:<8} {}", step.id, step.outcome, step.description);
    }
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    crate::outln!("  apply latency    {}", ms(report.apply_latency_ms));
    crate::outln!("  unpatch latency  {}", ms(report.unpatch_latency_ms));
    if log_kept {
        crate::outln!("  serial log       {}", report.serial_log.display());
    }
    match &report.failure {
        None => crate::outln!("passed"),
        Some(why) => eprintln!("kpbuild vmtest: failed: {why}"),
    }
}
