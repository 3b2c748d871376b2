//! Pre-match on a unit whose linked code the assembler laid out otherwise:
//! in Debian's vmlinux the tail call of `__sock_set_timestamps`
//! (`net/core/sock.c`) is a 2-byte `jmp`, in kpbuild's per-function object a
//! 5-byte one, so an earlier branch to the same instruction has another
//! displacement. The unit pre-matches (every function compared, none
//! skipped) and a fix to `/proc/net/protocols` in it loads and shows.

use super::Ctx;
use super::debian::{boot_debian, debian_build};
use super::read_file;
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;

pub(super) fn debian_sock_prematch_and_fix(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    let module = "kpb_deb_sock";
    let (code, result, ko) = debian_build(
        ctx,
        &release,
        module,
        &["debian-sock-protocols-header.patch"],
    );
    let report = result.map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))?;
    let prematch = &report["prematch"];
    let checked = prematch["checked"].as_u64().unwrap_or(0);
    if checked < 100 || prematch["skipped"] != serde_json::json!([]) {
        return Err(format!(
            "report.json prematch: {prematch}; expected every function of net/core/sock.o compared"
        ));
    }
    let mut script = GuestScript::default();
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: read_file(&ko)?,
        patch_name: module.into(),
        probe: "cat /proc/net/protocols".into(),
        original: "protocol  size".into(),
        patched: "kpbuild-protocol size".into(),
    }
    .add_to(&mut script, "");
    boot_debian(ctx, &release, "debian-sock", &script)
}
