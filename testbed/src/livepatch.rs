//! The standard life cycle of a livepatch module in the guest, as checks:
//! behaviour before, load, enabled, transition done, patched behaviour,
//! disable, old behaviour back, unload.

use crate::guest::GuestScript;

/// A livepatch module and the behaviour it changes.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Guest path of the `.ko` (also added to the initramfs by [`Lifecycle::add_to`]).
    pub module_path: String,
    /// Contents of the module.
    pub module: Vec<u8>,
    /// The patch's name under `/sys/kernel/livepatch/` (the module name with `_`).
    pub patch_name: String,
    /// Shell command whose output shows the behaviour (e.g. `cat /proc/cmdline`).
    pub probe: String,
    /// Text the probe prints while unpatched.
    pub original: String,
    /// Text the probe prints only while patched.
    pub patched: String,
}

/// Seconds the guest waits for a livepatch transition to finish.
const TRANSITION_TIMEOUT_S: u32 = 30;

impl Lifecycle {
    /// Appends the whole life cycle to `script`; check ids are prefixed with
    /// `prefix` so several patches can run in one boot.
    pub fn add_to(&self, script: &mut GuestScript, prefix: &str) {
        let sys = format!("/sys/kernel/livepatch/{}", self.patch_name);
        let probe = shell_quote(&self.probe);
        let original = shell_quote(&self.original);
        let patched = shell_quote(&self.patched);
        let p = |id: &str| format!("{prefix}{id}");
        script.file(&self.module_path, self.module.clone());
        script
            .check(
                &p("before"),
                "original behaviour before loading",
                format!("expect_contains {probe} {original} && expect_lacks {probe} {patched}"),
            )
            .check(
                &p("load"),
                "insmod succeeds",
                format!("insmod {}", self.module_path),
            )
            .check(
                &p("enabled"),
                "patch is enabled in sysfs",
                format!("wait_value {sys}/enabled 1 5"),
            )
            .check(
                &p("transition"),
                "transition to patched completes",
                format!("wait_value {sys}/transition 0 {TRANSITION_TIMEOUT_S}"),
            )
            .check(
                &p("patched"),
                "patched behaviour is seen",
                format!("expect_contains {probe} {patched}"),
            )
            .check(
                &p("disable"),
                "disable is accepted",
                format!("echo 0 > {sys}/enabled"),
            )
            .check(
                &p("unpatched"),
                "transition to unpatched completes and the patch is released",
                format!("wait_gone {sys} {TRANSITION_TIMEOUT_S}"),
            )
            .check(
                &p("after"),
                "original behaviour is back",
                format!("expect_contains {probe} {original} && expect_lacks {probe} {patched}"),
            )
            .check(
                &p("unload"),
                "rmmod succeeds",
                format!("rmmod {}", self.patch_name),
            )
            .check(
                &p("gone"),
                "module is gone from /proc/modules",
                format!("! grep -q '^{} ' /proc/modules", self.patch_name),
            );
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn lifecycle_orders_checks() {
        let mut script = GuestScript::default();
        Lifecycle {
            module_path: "/modules/p.ko".into(),
            module: vec![1],
            patch_name: "p".into(),
            probe: "cat /proc/cmdline".into(),
            original: "console=ttyS0".into(),
            patched: "live patched".into(),
        }
        .add_to(&mut script, "a-");
        let ids: Vec<&str> = script.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a-before",
                "a-load",
                "a-enabled",
                "a-transition",
                "a-patched",
                "a-disable",
                "a-unpatched",
                "a-after",
                "a-unload",
                "a-gone"
            ]
        );
        assert_eq!(script.files[0].0, "/modules/p.ko");
    }
}
