//! The `kpbuild` command line: parses arguments and calls the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = kpbuild::cli::Cli::parse();
    kpbuild::cli::run(cli)
}
