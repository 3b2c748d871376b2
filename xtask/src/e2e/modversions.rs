//! A patch that changes the modversion CRCs of exports its new code calls:
//! `#include <linux/blktrace_api.h>` in `drivers/base/core.c` changes the
//! genksyms CRC of `put_device` (and of 33 other exports of core.c), and the
//! changed `unbind_store` in `drivers/base/bus.c` calls `put_device`. The
//! module is versioned against Debian's own Module.symvers, so the kernel
//! loads it, and every driver's `unbind` answers an unknown device with
//! ENXIO while it is patched.

use super::Ctx;
use super::debian::{boot_debian, debian_build};
use super::read_file;
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

/// Writes an unknown device name into the first driver's `unbind`; the
/// shell prints the error the kernel returned.
const UNBIND_UNKNOWN: &str = "d=$(ls /sys/bus/*/drivers/*/unbind | head -n 1); (echo kpbuild-no-such-device > \"$d\") 2>&1; true";

pub(super) fn debian_changed_export_crcs_load(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_crc";
    let (code, result, ko) =
        debian_build(ctx, &release, module, &["debian-crc-include-unbind.patch"]);
    result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let bytes = read_file(&ko)?;
    let versions = relocator::klp::module_versions(&bytes).map_err(|e| e.to_string())?;
    if !versions.iter().any(|(name, _)| name == "put_device") {
        return Err(format!(
            "{}: __versions has no put_device, the symbol whose CRC the patch changes: {versions:?}",
            ko.display()
        ));
    }
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: bytes,
        patch_name: module.into(),
        probe: UNBIND_UNKNOWN.into(),
        original: "No such device".into(),
        patched: "No such device or address".into(),
    }
    .add_to(&mut script, "");
    boot_debian(ctx, &release, "debian-crc", &script)
}
