//! Oracles: what a test needs from outside the workspace (a built test
//! kernel, a tool on `PATH`, a Debian package) and finds through here.
//!
//! A missing oracle is a skipped check, said on stderr as `SKIP: ...`, on a
//! developer's machine; with `KPBUILD_REQUIRE_ORACLES=1` (CI and `cargo
//! xtask test`) it fails the test, naming what is missing and how to get it,
//! so a proof that could not run never passes as if it had.

use crate::kernel::{KernelBuild, KernelSpec};
use std::path::PathBuf;

/// The environment variable that turns a missing oracle into a failure.
pub const REQUIRE_ENV: &str = "KPBUILD_REQUIRE_ORACLES";

/// True when `KPBUILD_REQUIRE_ORACLES=1`: every oracle must be there.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1")
}

/// `found`, or, when it is `None`, the verdict on `what` is missing: the
/// test fails naming it and `how` to get it when [`required`], else a
/// `SKIP:` line goes to stderr and the caller gets `None` to skip with.
#[track_caller]
pub fn need<T>(what: &str, how: &str, found: Option<T>) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if required() {
        panic!("missing oracle: {what}; {how} ({REQUIRE_ENV}=1: a test that cannot run fails)");
    }
    eprintln!("SKIP: {what} is missing; {how}");
    None
}

/// The plain test kernel, built: the one `cargo xtask kernel` builds (the
/// same spec, so the same cache key), never just any cached kernel.
#[track_caller]
pub fn test_kernel() -> Option<KernelBuild> {
    built_kernel(
        KernelSpec::test_kernel(),
        "test kernel",
        "cargo xtask kernel",
    )
}

/// The module-signing test kernel, built: the one `cargo xtask kernel
/// signing` builds.
#[track_caller]
pub fn signing_kernel() -> Option<KernelBuild> {
    built_kernel(
        KernelSpec::signing_kernel(),
        "module-signing test kernel",
        "cargo xtask kernel signing",
    )
}

#[track_caller]
fn built_kernel(
    spec: Result<KernelSpec, crate::Error>,
    name: &str,
    command: &str,
) -> Option<KernelBuild> {
    let (what, found) = match spec {
        Ok(spec) => match (spec.key(), spec.built()) {
            (Ok(key), Ok(found)) => (
                format!(
                    "the built {name} {}",
                    spec.cache.join("kernels").join(key).display()
                ),
                found,
            ),
            (Err(e), _) | (_, Err(e)) => (format!("the {name} ({e})"), None),
        },
        Err(e) => (format!("the {name} ({e})"), None),
    };
    need(
        &what,
        &format!("run `{command}` (`cargo xtask test` builds it first)"),
        found,
    )
}

/// `program` found on `PATH`, which the Debian package `package` provides.
#[track_caller]
pub fn tool(program: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    need(
        &format!("`{program}` on PATH"),
        &format!("install the Debian package {package} (`cargo xtask test` installs it)"),
        found,
    )
}
