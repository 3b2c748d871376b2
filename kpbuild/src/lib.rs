//! kpbuild: compiles a kernel source patch into a Linux livepatch module.
//!
//! The library holds everything the `kpbuild` binary does, so CI jobs can call
//! it directly:
//! - [`build()`]: the build driver (patch → module): a [`BuildRequest`] in,
//!   a [`BuildReport`] or a [`BuildError`] out; stages in [`mod@build`].
//! - [`tree`]: the target description every build step works from.
//! - [`treeless`], [`debian`]: targets without a built tree.
//! - [`patch`]: which files a patch touches, and applying it to a private copy.
//! - [`cli`]: argument definitions, their mapping to requests, and the
//!   dispatch to each command.
//! - [`diff`]: `kpbuild diff`, one object pair through elfdiff and the relocator.
//! - [`inspect`]: `kpbuild inspect`, what a livepatch object or module holds.
//! - [`jobs`]: taking part in a make jobserver.
//! - [`kbuild`]: `.cmd` records of a kernel build tree and replaying them.
//! - [`files`]: reading and atomically writing files, errors naming them.
//! - [`exit`]: the exit codes shared by every command.
//! - [`out`]: command output on stdout, quiet when the reader goes away.
//! - [`module`]: the livepatch module build (glue, kbuild, livepatch conversion).
//! - [`target`]: the running target's symbols and exports, shared by all units.
//! - [`process`]: the logged wrapper every subprocess runs through.
//! - [`sign`]: `kpbuild sign`, appending a kernel module signature.
//! - [`prematch`]: the original code must be the code the target runs.
//! - [`bundle`]: `kpbuild bundle`, signed cumulative bundles (over the `bundle` crate).
//! - [`cache`]: `kpbuild cache`, the kernel cache's entries, sizes and pruning.
//! - [`identity`]: the files describing a tree-less target belong to one kernel.
//! - [`farm`]: the build farm's inputs: a fix series and a matrix of targets.
//! - [`compiler`]: how far apart two compilers are (a package revision is a warning).
//!
//! A build from a program:
//!
//! ```rust,no_run
//! use kpbuild::{build, BuildRequest, ErrorKind};
//! use kpbuild::build::{Progress, TargetSpec};
//!
//! let mut request = BuildRequest::new(
//!     TargetSpec::Debian {
//!         release: "6.12.118+deb12-cloud-amd64".into(),
//!         src: None,
//!     },
//!     vec!["fix-1.patch".into()],
//!     "livepatch_fix",
//!     "out",
//! );
//! request.progress = Progress::Stderr;
//! match build(&request) {
//!     Ok(report) => {
//!         let objects = report.objects.unwrap_or_default();
//!         let functions: usize = objects.iter().map(|o| o.functions.len()).sum();
//!         println!("{functions} function(s) patched");
//!     }
//!     Err(e) if e.kind() == ErrorKind::Refused => eprintln!("cannot be live patched: {e}"),
//!     Err(e) => eprintln!("{e} (exit {})", e.kind().exit_code()),
//! }
//! ```

pub mod build;
pub use build::{BuildError, BuildReport, BuildRequest, ErrorKind, build};
pub mod buildroot;
pub mod bundle;
pub mod cache;
pub mod callsites;
pub mod cli;
pub mod compiler;
pub mod debian;
pub mod diff;
pub mod entry_sizes;
pub mod exit;
pub mod farm;
pub mod files;
pub mod headers;
pub mod identity;
pub mod inspect;
pub mod jobs;
pub mod kbuild;
pub mod module;
pub mod out;
pub mod patch;
pub mod prematch;
pub mod process;
pub mod sign;
pub mod target;
pub mod toolchain;
pub mod tree;
pub mod treeless;
pub mod vmtest;
