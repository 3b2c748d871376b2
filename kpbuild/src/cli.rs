//! Command-line definitions and dispatch.

pub mod build;
pub mod cache;
pub mod farm;
pub mod targets;
pub mod vmtest;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Compile a kernel source patch into a Linux livepatch module.
///
/// Exit codes: 0 success, 1 error or bad input, 2 refused (cannot be live
/// patched safely), 3 no functional change.
#[derive(Debug, Parser)]
#[command(name = "kpbuild", version, about, long_about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// kpbuild's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a livepatch module from source patches against a built kernel tree.
    Build(build::BuildCommand),
    /// Diff an original and a patched object and write the livepatch object.
    Diff(crate::diff::DiffArgs),
    /// Show the patched functions, livepatch relocations and module info of a
    /// livepatch object or module, and what the kernel would reject.
    Inspect(crate::inspect::InspectArgs),
    /// Sign a module for a kernel with module signature checking (replaces an
    /// existing signature).
    Sign(crate::sign::SignArgs),
    /// Signed cumulative livepatch bundles: create, verify, inspect, publish
    /// to a patch-server repository, roll back.
    Bundle(crate::bundle::BundleArgs),
    /// The kernel cache: list its entries (size, last use, state, what uses
    /// what) and prune it without touching what a running build holds.
    Cache(cache::CacheArgs),
    /// The kernels kpbuild can build for: `targets debian [SERIES]` lists
    /// the Debian kernels apt knows and what of each is cached.
    Targets(targets::TargetsArgs),
    /// Boot the module's kernel under QEMU and run the module's life cycle:
    /// load, transition, the check script while patched, disable, unload;
    /// fails on a failed step or a kernel warning. Reports the apply and
    /// unpatch latency.
    Vmtest(vmtest::VmtestArgs),
    /// The build farm: a fix series over a matrix of kernels. `farm targets`
    /// checks a targets file and a series and shows what each target gets;
    /// `farm run` builds and tests each target's module.
    Farm(farm::FarmArgs),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => {
            eprintln!("kpbuild: no command given; see `kpbuild --help`");
            ExitCode::from(crate::exit::ERROR)
        }
        Some(Command::Diff(args)) => ExitCode::from(crate::diff::run(&args)),
        Some(Command::Build(args)) => ExitCode::from(build::run(&args)),
        Some(Command::Inspect(args)) => ExitCode::from(crate::inspect::run(&args)),
        Some(Command::Sign(args)) => ExitCode::from(crate::sign::run(&args)),
        Some(Command::Bundle(args)) => ExitCode::from(crate::bundle::run(&args)),
        Some(Command::Cache(args)) => ExitCode::from(cache::run(&args)),
        Some(Command::Targets(args)) => ExitCode::from(targets::run(&args)),
        Some(Command::Vmtest(args)) => ExitCode::from(vmtest::run(&args)),
        Some(Command::Farm(args)) => ExitCode::from(farm::run(&args)),
    }
}
