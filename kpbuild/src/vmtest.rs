//! `kpbuild vmtest`: a livepatch module's life cycle in its own kernel,
//! booted under QEMU (software emulation) with a busybox initramfs: load,
//! wait for the transition, run the caller's check script while patched,
//! disable, wait until the patch is gone, unload. A run fails on any failed
//! step and on `WARNING:`, `BUG:`, `Oops`, a panic or a `Call Trace:` in
//! the kernel log. It measures the apply latency (insmod started →
//! `transition` 0) and the unpatch latency (disable → the patch gone) on
//! the guest's clock.
//!
//! The guest protocol, the initramfs and the QEMU runner are the test bed's
//! (`testbed::guest`, `testbed::vm`), the same the end-to-end suite uses.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testbed::guest::{CheckResult, GuestReport, GuestScript};
use testbed::vm::Vm;

/// Which kernel to boot.
#[derive(Debug, Clone)]
pub enum VmKernel {
    /// A Debian release's own `vmlinuz`, from the kernel cache (fetched
    /// when missing).
    Debian(String),
    /// A kernel image (`bzImage`) of the caller's.
    Image(PathBuf),
}

/// What to test.
#[derive(Debug, Clone)]
pub struct VmtestRequest {
    /// The livepatch module.
    pub module: PathBuf,
    /// The kernel it is for.
    pub kernel: VmKernel,
    /// A shell script run in the guest while the patch is applied; it
    /// fails the test by exiting non-zero.
    pub check: Option<PathBuf>,
    /// Where the initramfs and the serial log go.
    pub work: PathBuf,
    /// Guest memory (MiB).
    pub memory_mb: u32,
    /// Hard limit on the whole guest run.
    pub timeout: Duration,
}

/// Seconds the guest waits for each transition.
const TRANSITION_TIMEOUT_S: u32 = 60;

/// Why a test could not run (a failed test is a [`VmtestReport`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmtestError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The module is not a livepatch module.
    #[error("{}: {why}", path.display())]
    NotLivepatch {
        /// The module.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The Debian kernel could not be fetched.
    #[error(transparent)]
    Debian(#[from] Box<crate::debian::DebianError>),
    /// QEMU could not be run.
    #[error("booting {}: {source}", kernel.display())]
    Boot {
        /// The kernel image.
        kernel: PathBuf,
        /// The cause.
        source: testbed::Error,
    },
}

/// One step of the life cycle as the guest ran it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Its id (`load`, `check`, `disable`, `unload`, …).
    pub id: String,
    /// What it does.
    pub description: String,
    /// `passed`, `failed` or `not-run`.
    pub outcome: &'static str,
    /// What it printed.
    pub output: Vec<String>,
}

/// The result of a test.
#[derive(Debug, Clone, Serialize)]
pub struct VmtestReport {
    /// The module.
    pub module: PathBuf,
    /// The patch's name under `/sys/kernel/livepatch`.
    pub patch: String,
    /// The kernel image booted.
    pub kernel: PathBuf,
    /// Whether every step passed and the kernel log is clean.
    pub passed: bool,
    /// The first problem, when it did not pass.
    pub failure: Option<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// insmod started → `transition` 0, on the guest's clock (ms).
    pub apply_latency_ms: Option<f64>,
    /// disable → the patch gone from sysfs, on the guest's clock (ms).
    pub unpatch_latency_ms: Option<f64>,
    /// The guest's serial console.
    pub serial_log: PathBuf,
}

/// The `name` and `livepatch` fields of a module's `.modinfo`.
fn livepatch_name(path: &Path, data: &[u8]) -> Result<String, VmtestError> {
    use object::{Object, ObjectSection};
    let not = |why: &str| VmtestError::NotLivepatch {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let file = object::File::parse(data).map_err(|e| not(&format!("not an ELF module: {e}")))?;
    let modinfo = file
        .section_by_name(".modinfo")
        .and_then(|s| s.data().ok())
        .ok_or_else(|| not("no .modinfo section: not a kernel module"))?;
    let fields: Vec<&[u8]> = modinfo.split(|&b| b == 0).collect();
    let field = |key: &str| {
        fields.iter().find_map(|f| {
            let f = std::str::from_utf8(f).ok()?;
            f.strip_prefix(key)?.strip_prefix('=').map(str::to_string)
        })
    };
    if field("livepatch").as_deref() != Some("Y") {
        return Err(not(
            "not a livepatch module (its .modinfo has no livepatch=Y)",
        ));
    }
    let name = field("name").ok_or_else(|| not("its .modinfo has no name="))?;
    Ok(name.replace('-', "_"))
}

/// The guest's steps for module `patch` at `/modules/PATCH.ko`.
fn script(patch: &str, module: Vec<u8>, check: Option<Vec<u8>>) -> GuestScript {
    let sys = format!("/sys/kernel/livepatch/{patch}");
    // Marks in the kernel log, whose clock no patch to the time a task
    // sees (uptime, time namespaces) moves.
    let mark = |what: &str| format!("echo '{MARK} {what}' > /dev/kmsg");
    let mut s = GuestScript::default();
    s.file(&format!("/modules/{patch}.ko"), module);
    s.check(
        "load",
        "insmod, the patch enabled, the transition finished",
        format!(
            "{}; insmod /modules/{patch}.ko && wait_value {sys}/enabled 1 10 && \
             wait_value {sys}/transition 0 {TRANSITION_TIMEOUT_S} && {}",
            mark("apply-start"),
            mark("apply-end")
        ),
    );
    if let Some(check) = check {
        s.file("/vmtest/check.sh", check);
        s.check(
            "check",
            "the check script, while patched",
            "sh /vmtest/check.sh",
        );
    }
    s.check(
        "disable",
        "disable, the patch gone",
        format!(
            "{}; echo 0 > {sys}/enabled && wait_gone {sys} {TRANSITION_TIMEOUT_S} && {}",
            mark("unpatch-start"),
            mark("unpatch-end")
        ),
    )
    .check("unload", "rmmod", format!("rmmod {patch}"));
    s
}

/// The prefix of the marks the guest writes into the kernel log.
const MARK: &str = "kpbuild-vmtest:";

/// The time between the kernel-log marks `WHAT-start` and `WHAT-end`
/// (`[  12.345678] kpbuild-vmtest: apply-start`), in ms.
fn latency_ms(dmesg: &[String], what: &str) -> Option<f64> {
    let at = |edge: &str| {
        let want = format!("{MARK} {what}-{edge}");
        dmesg.iter().find_map(|line| {
            let (stamp, text) = line.trim_start().strip_prefix('[')?.split_once(']')?;
            (text.trim() == want)
                .then(|| stamp.trim().parse::<f64>().ok())
                .flatten()
        })
    };
    Some(((at("end")? - at("start")?) * 1000.0).max(0.0))
}

/// Boots the kernel and runs the module's life cycle.
pub fn run(req: &VmtestRequest) -> Result<VmtestReport, VmtestError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| VmtestError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let module = read(&req.module)?;
    let patch = livepatch_name(&req.module, &module)?;
    let check = req.check.as_deref().map(read).transpose()?;
    let (kernel, _holds) = match &req.kernel {
        VmKernel::Image(path) => {
            read(path)?;
            (path.clone(), Vec::new())
        }
        VmKernel::Debian(release) => {
            let k = crate::debian::fetch(release, &|_| {}).map_err(Box::new)?;
            (k.vmlinuz.clone(), k.holds)
        }
    };
    let script = script(&patch, module, check);
    let mut vm = Vm::new(&kernel, &req.work);
    vm.memory_mb = req.memory_mb;
    vm.timeout = req.timeout;
    // Timestamps on the kernel log, for the latency marks, whatever the
    // kernel's CONFIG_PRINTK_TIME.
    vm.extra_append = "printk.time=1".into();
    let guest = vm.run(&script).map_err(|source| VmtestError::Boot {
        kernel: kernel.clone(),
        source,
    })?;
    Ok(report(req, patch, kernel, &script, &guest))
}

fn report(
    req: &VmtestRequest,
    patch: String,
    kernel: PathBuf,
    script: &GuestScript,
    guest: &GuestReport,
) -> VmtestReport {
    let steps: Vec<Step> = script
        .checks
        .iter()
        .map(|c| {
            let id = c.id.replace('-', "_");
            let outcome = match guest.results.iter().find(|(r, _)| *r == id) {
                Some((_, CheckResult::Passed)) => "passed",
                Some((_, CheckResult::Failed(_))) => "failed",
                None => "not-run",
            };
            Step {
                id: c.id.clone(),
                description: c.description.clone(),
                outcome,
                output: guest.output(&id).to_vec(),
            }
        })
        .collect();
    let failure = guest.verify(script).err();
    VmtestReport {
        module: req.module.clone(),
        patch,
        kernel,
        passed: failure.is_none(),
        failure,
        apply_latency_ms: latency_ms(&guest.dmesg, "apply"),
        unpatch_latency_ms: latency_ms(&guest.dmesg, "unpatch"),
        steps,
        serial_log: req.work.join("serial.log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_read_from_the_kernel_log_marks() {
        let log: Vec<String> = [
            "[   12.340000] kpbuild-vmtest: apply-start",
            "[   12.350000] livepatch: 'kpb_fix': starting patching transition",
            "[   12.410000] kpbuild-vmtest: apply-end",
            "[   13.000000] kpbuild-vmtest: unpatch-start",
        ]
        .map(String::from)
        .to_vec();
        let ms = latency_ms(&log, "apply").unwrap();
        assert!((ms - 70.0).abs() < 1e-6, "{ms}");
        assert_eq!(latency_ms(&log, "unpatch"), None);
        assert_eq!(
            latency_ms(&["[x] kpbuild-vmtest: apply-start".into()], "apply"),
            None
        );
    }

    #[test]
    fn the_script_loads_checks_disables_and_unloads_in_order() {
        let s = script("kpb_fix", vec![1], Some(b"true\n".to_vec()));
        let ids: Vec<&str> = s.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["load", "check", "disable", "unload"]);
        assert!(s.checks[0].shell.contains("insmod /modules/kpb_fix.ko"));
        assert!(
            s.checks[0]
                .shell
                .contains("/sys/kernel/livepatch/kpb_fix/transition 0")
        );
        let files: Vec<&str> = s.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(files, ["/modules/kpb_fix.ko", "/vmtest/check.sh"]);
        let bare = script("kpb_fix", vec![1], None);
        assert_eq!(bare.checks.len(), 3);
    }

    #[test]
    fn only_livepatch_modules_are_tested() {
        let p = Path::new("m.ko");
        let err = livepatch_name(p, b"not elf").unwrap_err();
        assert!(
            err.to_string().starts_with("m.ko: not an ELF module"),
            "{err}"
        );
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let with = |info: &[u8]| {
            let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
            let s = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::Data);
            obj.append_section_data(s, info, 1);
            obj.write().unwrap()
        };
        let plain = with(b"license=GPL\0name=plain\0");
        let err = livepatch_name(p, &plain).unwrap_err();
        assert!(err.to_string().contains("no livepatch=Y"), "{err}");
        let lp = with(b"livepatch=Y\0name=kpb-fix\0");
        assert_eq!(livepatch_name(p, &lp).unwrap(), "kpb_fix");
    }
}
