//! kpbuild: compiles a kernel source patch into a Linux livepatch module.
//!
//! The library holds everything the `kpbuild` binary does, so CI jobs can call
//! it directly:
//! - [`cli`]: argument definitions and the dispatch to each command.
//! - [`exit`]: the exit codes shared by every command.

pub mod cli;
pub mod exit;
