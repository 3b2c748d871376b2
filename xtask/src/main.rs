//! `cargo xtask`: everything beyond `cargo build`/`cargo test`.
//!
//! ```text
//! cargo xtask demo      the main job end to end on the built-in default
//! cargo xtask test      the test kernels, cargo test --workspace (a missing
//!                       oracle fails), then the kernel end-to-end suite
//! cargo xtask e2e [F]   only the kernel end-to-end suite (cases containing F)
//! cargo xtask e2e --only NAME[,NAME]  only the cases named exactly
//! cargo xtask kernel    build (or reuse) the cached test kernel and print its paths
//! cargo xtask kernel signing   the same for the module-signing variant
//! cargo xtask buildroot [SUITE]  make (or reuse) the cached Debian build root
//!                       (default trixie) and print its path, size and time
//! cargo xtask bench [diff|build]  benchmarks (release build): elfdiff over the
//!                       whole kernel; kpbuild build vs the incremental make
//! cargo xtask bench debian  kpbuild build --debian cold and warm, vs a full
//!                       rebuild estimate, then cold and warm for the oldest
//!                       6.12 and the newest 6.1 cloud release (only when
//!                       named: downloads ~500 MB per release)
//! cargo xtask bench headers  a header patch with --debian, cold (DWARF index
//!                       and include scan) and warm (only when named)
//! cargo xtask bench prematch  every function of every test-kernel C unit
//!                       pre-matched against vmlinux (only when named)
//! cargo xtask bench prematch --debian [RELEASE] [--units N]  the same for
//!                       every C unit of a Debian release's vmlinux (default:
//!                       the suite's release; N: only the first N units)
//! ```

mod bench;
mod e2e;
mod scale;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use testbed::kernel::{KernelBuild, KernelSpec};

/// `cargo xtask --help`.
const USAGE: &str = "usage: cargo xtask <demo|test|e2e [FILTER|--only NAME[,NAME]]|kernel|buildroot [SUITE]|bench [diff|build|debian|debian13|headers|prematch [--debian [RELEASE]] [--units N]|farm [--all]]>\n\n\
     demo    build the test kernel if needed, livepatch it in QEMU, show the effect\n\
     test    cargo test --workspace, then the kernel end-to-end suite\n\
     e2e [FILTER]  only the kernel end-to-end cases whose name contains FILTER\n\
     e2e --only NAME[,NAME]  only the cases named exactly\n\
     kernel [signing]  build or reuse the cached test kernel (or its signing variant)\n\
     buildroot [SUITE]  make or reuse the Debian build root (default trixie; as root)\n\
     bench [diff|build]  benchmarks: elfdiff over the whole kernel, kpbuild build vs make\n\
     bench debian  kpbuild build --debian cold and warm vs a full-rebuild estimate,\n\
                   and for the oldest 6.12, the newest 6.1 and a Debian 13 cloud release\n\
     bench debian13  only the Debian 13 part (its build root reported apart)\n\
     bench headers  a header patch with --debian, cold and warm\n\
     bench prematch  every function of every test-kernel C unit pre-matched against vmlinux\n\
     bench prematch --debian [RELEASE] [--units N]  every C unit of a Debian release's vmlinux\n\
       compiled as kpbuild compiles originals and pre-matched (default: the suite's release)\n\
     bench farm [--all]  kpbuild farm run per target (test tree, newest and oldest Debian 6.12\n\
       cloud): first publish, warm (a new sequence) and unchanged; --all: every 6.12 cloud kernel";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(),
        Some("e2e") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--only"), Some(names)) => e2e(e2e::Filter::Only(names)),
            (Some("--only"), None) => Err("e2e --only needs a case name".into()),
            (Some("-h" | "--help"), _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            (Some(f), _) if f.starts_with('-') => {
                Err(format!("e2e: unknown option {f} (cargo xtask --help)"))
            }
            (Some(f), _) => e2e(e2e::Filter::Contains(f)),
            (None, _) => e2e(e2e::Filter::All),
        },
        Some("bench") => bench::run(
            args.get(1).map(String::as_str),
            args.get(2..).unwrap_or_default(),
        ),
        Some("kernel") if args.get(1).map(String::as_str) == Some("signing") => signing_kernel()
            .map(|kb| {
                println!("source: {}", kb.src.display());
                println!("build:  {}", kb.build.display());
                println!("image:  {}", kb.bzimage().display());
            }),
        Some("buildroot") => {
            buildroot(args.get(1).map_or(BUILDROOT_SUITE, String::as_str)).map(|(root, seconds)| {
                println!("build root: {}", root.dir().display());
                println!("suite:      {}", root.suite());
                println!("ready in:   {seconds:.1} s");
            })
        }
        Some("kernel") => kernel().map(|kb| {
            println!("source: {}", kb.src.display());
            println!("build:  {}", kb.build.display());
            println!("image:  {}", kb.bzimage().display());
        }),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `kpbuild build` through the library: the exit code, and the report
/// (as JSON) or the reason it stopped.
pub fn kpbuild_build(req: &kpbuild::BuildRequest) -> (u8, Result<serde_json::Value, String>) {
    match kpbuild::build(req) {
        Ok(report) => (0, Ok(serde_json::to_value(&report).expect("json"))),
        Err(e) => (e.kind().exit_code(), Err(e.to_string())),
    }
}

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask in repo")
        .to_path_buf()
}

/// Writes `text` to `path`, making its directory first.
pub fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(path.parent().expect("a parent"))
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Publishing into `repo`'s `channel` with the fixtures' test key pair.
pub fn test_channel(repo: PathBuf, channel: &str) -> kpbuild::farm::publish::PublishTo {
    kpbuild::farm::publish::PublishTo {
        repo,
        channel: channel.into(),
        key: repo_root().join("fixtures/bundle/test.key"),
        pubkey: repo_root().join("fixtures/bundle/test.pub"),
    }
}

fn progress(line: &str) {
    eprintln!("  > {line}");
}

/// The Debian cloud kernel the suite and `bench debian` patch: the newest
/// Debian 12 6.12 cloud release apt knows. Its source is fetched by
/// kpbuild itself (`linux-source-6.12=VERSION`, into the cache); nothing
/// is installed. Chosen once per run.
pub fn debian_release() -> Result<String, String> {
    static CHOICE: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| {
            testbed::packages::ensure(testbed::packages::TESTBED_PACKAGES, &mut progress)
                .map_err(|e| e.to_string())?;
            kpbuild::debian::newest_cloud_release("6.12")
                .map(|(release, _)| release)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// The Debian 12 cloud releases the suite also proves and `bench debian`
/// also times, picked from apt's metadata: the oldest 6.12 and the newest
/// 6.1. Chosen once per run.
pub fn debian_other_releases() -> Result<(String, String), String> {
    static CHOICE: std::sync::OnceLock<Result<(String, String), String>> =
        std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let cloud = |series: &str| -> Result<Vec<String>, String> {
                let known =
                    kpbuild::debian::archive::known_kernels(series).map_err(|e| e.to_string())?;
                Ok(known
                    .into_iter()
                    .filter(|k| k.flavour == "cloud-amd64" && k.suite == "deb12")
                    .map(|k| k.release)
                    .collect())
            };
            let oldest = cloud("6.12")?
                .into_iter()
                .next()
                .ok_or("apt knows no Debian 12 6.12 cloud kernel")?;
            let newest_61 = cloud("6.1")?
                .pop()
                .ok_or("apt knows no Debian 12 6.1 cloud kernel")?;
            Ok((oldest, newest_61))
        })
        .clone()
}

/// The Debian 13 cloud release the suite proves and `bench debian` times:
/// the newest `6.12.N+deb13-cloud-amd64` the private trixie apt knows whose
/// version `linux-source-6.12` also has. Chosen once per run.
pub fn debian13_release() -> Result<String, String> {
    static CHOICE: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| {
            use kpbuild::debian::{archive, release::Suite};
            let known = archive::known_kernels_in("6.12", Suite::Trixie, &|m| progress(m))
                .map_err(|e| e.to_string())?;
            let sources = archive::Apt::for_suite(Suite::Trixie, &|m| progress(m))
                .and_then(|apt| apt.versions("linux-source-6.12"))
                .map_err(|e| e.to_string())?;
            known
                .into_iter()
                .rev()
                .find(|k| k.flavour == "cloud-amd64" && sources.contains(&k.version))
                .map(|k| k.release)
                .ok_or_else(|| {
                    format!(
                        "the trixie archive has no 6.12 cloud kernel whose version linux-source-6.12 has ([{}])",
                        sources.join(", ")
                    )
                })
        })
        .clone()
}

/// Installs missing packages, then builds or reuses the test kernel
/// ([`KernelSpec::test_kernel`], the one the tests find).
pub fn kernel() -> Result<KernelBuild, String> {
    ensure_kernel(KernelSpec::test_kernel)
}

/// The test kernel's module-signing variant ([`KernelSpec::signing_kernel`]):
/// signatures enforced, the test certificate trusted.
pub fn signing_kernel() -> Result<KernelBuild, String> {
    ensure_kernel(KernelSpec::signing_kernel)
}

fn ensure_kernel(spec: fn() -> Result<KernelSpec, testbed::Error>) -> Result<KernelBuild, String> {
    testbed::packages::ensure(testbed::packages::TESTBED_PACKAGES, &mut progress)
        .map_err(|e| e.to_string())?;
    spec()
        .and_then(|spec| spec.ensure_built(&mut progress))
        .map_err(|e| e.to_string())
}

/// The Debian release whose kernels the suite builds in a build root.
pub const BUILDROOT_SUITE: &str = "trixie";

/// Installs the packages, then makes (or reuses) the build root of `suite`:
/// the root and the seconds it took.
pub fn buildroot(suite: &str) -> Result<(kpbuild::buildroot::BuildRoot, f64), String> {
    testbed::packages::ensure(testbed::packages::TESTBED_PACKAGES, &mut progress)
        .map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let root = kpbuild::buildroot::BuildRoot::for_suite(suite, &|m| progress(m))
        .map_err(|e| e.to_string())?;
    Ok((root, start.elapsed().as_secs_f64()))
}

fn demo() -> Result<(), String> {
    let kb = kernel()?;
    e2e::demo(&kb)
}

fn test() -> Result<(), String> {
    // Packages first: unit tests use gcc, readelf and cpio as oracles.
    testbed::packages::ensure(testbed::packages::TESTBED_PACKAGES, &mut progress)
        .map_err(|e| e.to_string())?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    // The kernels the tests need exist before the tests run, and a test
    // that still misses one fails instead of skipping.
    eprintln!("== test kernels");
    kernel()?;
    signing_kernel()?;
    eprintln!("== {BUILDROOT_SUITE} build root");
    buildroot(BUILDROOT_SUITE)?;
    cargo_env(
        &["test", "--workspace"],
        &[(testbed::oracle::REQUIRE_ENV, "1")],
    )?;
    eprintln!("== kernel end-to-end suite");
    e2e(e2e::Filter::All)
}

/// The kernel end-to-end suite (the cases whose name contains `filter`):
/// a failed case is an error, so the exit code says the suite failed.
fn e2e(filter: e2e::Filter<'_>) -> Result<(), String> {
    let (passed, failed) = e2e::run_suite(filter)?;
    if failed > 0 {
        return Err(format!(
            "{failed} end-to-end case(s) failed ({passed} passed)"
        ));
    }
    Ok(())
}

/// Runs `cargo ARGS` in the repository; a failure names the command.
fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_env(args, &[])
}

/// [`cargo`] with `env` set for it.
fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("== {}cargo {}", shown.concat(), args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo_root())
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed", args.join(" ")))
    }
}
