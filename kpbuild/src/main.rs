//! The `kpbuild` command line: parses arguments and calls the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match kpbuild::cli::Cli::try_parse() {
        Ok(cli) => kpbuild::cli::run(cli),
        Err(e) => {
            // Help and version are not errors; a usage error is bad input
            // (exit 1), never "refused" (2), which clap would use.
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(kpbuild::exit::ERROR)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
