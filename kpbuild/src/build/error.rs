//! [`BuildError`]: why a build stopped, as a value: its [`ErrorKind`] gives
//! the exit code, its variant names the file, object, section or symbol.

use super::report::BuildReport;
use crate::debian::DebianError;
use crate::files::FileError;
use crate::module::ModuleError;
use crate::patch::PatchError;
use crate::prematch::PrematchError;
use crate::process::ProcessError;
use crate::target::LoadError;
use crate::tree::TreeError;
use crate::treeless::TreelessError;
use std::path::PathBuf;

/// What kind of stop a [`BuildError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input or an internal error (exit 1).
    Error,
    /// The change cannot be live patched safely (exit 2).
    Refused,
    /// The patches make no functional change (exit 3).
    NoChange,
}

impl ErrorKind {
    /// The process exit code (see [`crate::exit`]).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Error => crate::exit::ERROR,
            ErrorKind::Refused => crate::exit::REFUSED,
            ErrorKind::NoChange => crate::exit::NO_CHANGE,
        }
    }

    /// How `kpbuild build` labels it on stderr.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Error => "error",
            ErrorKind::Refused => "refused",
            ErrorKind::NoChange => "no functional change",
        }
    }
}

/// Which side of a unit was being compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// From the pristine source.
    Original,
    /// From the patched copy.
    Patched,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Original => "original",
            Side::Patched => "patched",
        })
    }
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The output directory is a file.
    #[error("{}: exists and is not a directory", .0.display())]
    OutNotADirectory(PathBuf),
    /// A patch is unusable, or changes what cannot be live patched.
    #[error(transparent)]
    Patch(Box<PatchError>),
    /// The built tree is not usable.
    #[error(transparent)]
    Tree(Box<TreeError>),
    /// The tree-less target is not usable.
    #[error(transparent)]
    Treeless(Box<TreelessError>),
    /// The Debian release cannot be fetched.
    #[error(transparent)]
    Debian(Box<DebianError>),
    /// A changed header's users cannot be found, or are refused.
    #[error(transparent)]
    Headers(Box<crate::headers::HeaderError>),
    /// The target's special-section entry sizes cannot be read.
    #[error(transparent)]
    EntrySizes(Box<crate::entry_sizes::EntrySizeError>),
    /// An affected unit is not kernel text.
    #[error(
        "{} is affected but is not kernel text (boot, real-mode or vDSO code): it cannot be live patched",
        .0.display()
    )]
    NotKernelText(PathBuf),
    /// No compiled unit uses the changed files.
    #[error("no compiled unit of this kernel build uses the changed files")]
    NoAffectedUnit,
    /// A unit's recorded command cannot be replayed.
    #[error(transparent)]
    Kbuild(Box<crate::kbuild::KbuildError>),
    /// A unit did not compile.
    #[error("compiling {} ({side}): {source}", object.display())]
    Compile {
        /// The unit's object.
        object: PathBuf,
        /// Which side.
        side: Side,
        /// The failed compiler.
        source: Box<ProcessError>,
    },
    /// make's jobserver failed.
    #[error("make jobserver: {0}")]
    Jobserver(std::io::Error),
    /// The compile threads could not be started.
    #[error(transparent)]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A pair of objects cannot be diffed.
    #[error(transparent)]
    Diff(#[from] elfdiff::Error),
    /// The diff refused the change; the partial report says where.
    #[error("the change cannot be live patched safely:\n  {}", report.refusal_lines().join("\n  "))]
    Refused {
        /// The report up to the diff.
        report: Box<BuildReport>,
    },
    /// The patches change no function's code; the partial report says so.
    #[error("the patches change no function's code")]
    NoChange {
        /// The report up to the diff.
        report: Box<BuildReport>,
    },
    /// The original code is not the target's.
    #[error(transparent)]
    Prematch(Box<PrematchError>),
    /// A target object's symbols or exports cannot be loaded.
    #[error(transparent)]
    Target(Box<LoadError>),
    /// The relocator failed on a unit (refused when unsupported).
    #[error("{}: {source}", object.display())]
    Relocate {
        /// The unit's object.
        object: PathBuf,
        /// The cause.
        source: Box<relocator::Error>,
    },
    /// Two units of the patch define the same new global.
    #[error(
        "new global {name} is defined by two units of the patch, {} and {}: the module can carry only one",
        first.display(),
        second.display()
    )]
    DuplicateNewSymbol {
        /// The symbol.
        name: String,
        /// The unit of the first definition.
        first: PathBuf,
        /// The unit of the second.
        second: PathBuf,
    },
    /// A module's unit defines a new global another target object uses.
    #[error(
        "new global {name} is defined by {} (module {module}) and used by {} ({user_target}): \
         the livepatch core resolves {module}'s part only when {module} is loaded, so the caller \
         could run it unresolved; define it in a vmlinux unit",
        defined_in.display(),
        user.display()
    )]
    NewSymbolOutsideModule {
        /// The symbol.
        name: String,
        /// The unit that defines it.
        defined_in: PathBuf,
        /// That unit's module.
        module: String,
        /// A unit that uses it.
        user: PathBuf,
        /// That unit's target object.
        user_target: String,
    },
    /// The module's symbol versions are not the target's: the module
    /// loader would refuse it ("disagrees about version of symbol").
    #[error(
        "the module would not load: its __versions entry for {symbol} is {}, but the target kernel \
         {} (Module.symvers {}); the module must be versioned against the running kernel's exports",
        hex_crc(*module_crc),
        kernel_crc.map_or("does not export it with a CRC".to_string(), |c| format!("has {}", hex_crc(c))),
        symvers.display()
    )]
    VersionMismatch {
        /// The symbol.
        symbol: String,
        /// The CRC in the module's `__versions`.
        module_crc: u32,
        /// The CRC the target exports it with, if any.
        kernel_crc: Option<u32>,
        /// The target's Module.symvers.
        symvers: PathBuf,
    },
    /// Two callbacks of one kind for one target object.
    #[error(
        "two {kind} callbacks for {target}, in {} and {}: the livepatch core takes one of each kind per object",
        first.display(),
        second.display()
    )]
    DuplicateCallback {
        /// The callback kind.
        kind: String,
        /// The target object.
        target: String,
        /// The unit of the first.
        first: PathBuf,
        /// The unit of the second.
        second: PathBuf,
    },
    /// The target's vmlinux cannot be searched for a function's callers.
    #[error(transparent)]
    CallSites(Box<crate::callsites::CallSiteError>),
    /// A built tree's object cannot be read as ELF.
    #[error("{}: not a readable ELF object: {why}", path.display())]
    UnreadableObject {
        /// The object.
        path: PathBuf,
        /// What the reader said.
        why: String,
    },
    /// The module name is invalid, or the module did not build.
    #[error(transparent)]
    Module(Box<ModuleError>),
    /// The tree's signing digest is unknown.
    #[error("CONFIG_MODULE_SIG_HASH of {}: {reason}", build.display())]
    SignatureHash {
        /// The build tree.
        build: PathBuf,
        /// Why the digest is not usable.
        reason: String,
    },
    /// The module could not be signed.
    #[error("signing with {} and {}: {source}", key.display(), cert.display())]
    Sign {
        /// The key.
        key: PathBuf,
        /// The certificate.
        cert: PathBuf,
        /// The cause.
        source: modsign::Error,
    },
}

fn hex_crc(crc: u32) -> String {
    format!("{crc:#010x}")
}

/// `From` for the errors a variant holds boxed (they are large; a build
/// error travels through every stage's `Result`).
macro_rules! boxed_from {
    ($($variant:ident($error:ty)),* $(,)?) => {$(
        impl From<$error> for BuildError {
            fn from(e: $error) -> Self {
                BuildError::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    Patch(PatchError),
    Tree(TreeError),
    Treeless(TreelessError),
    Debian(DebianError),
    Prematch(PrematchError),
    Target(LoadError),
    Module(ModuleError),
    Kbuild(crate::kbuild::KbuildError),
    Headers(crate::headers::HeaderError),
    EntrySizes(crate::entry_sizes::EntrySizeError),
    CallSites(crate::callsites::CallSiteError),
);

impl BuildError {
    /// The kind of stop, which gives the exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Patch(e) if e.is_refusal() => ErrorKind::Refused,
            BuildError::Treeless(e) if e.is_refusal() => ErrorKind::Refused,
            BuildError::Headers(e) if e.is_refusal() => ErrorKind::Refused,
            BuildError::Relocate { source, .. }
                if matches!(**source, relocator::Error::Unsupported { .. }) =>
            {
                ErrorKind::Refused
            }
            BuildError::NotKernelText(_)
            | BuildError::Refused { .. }
            | BuildError::DuplicateCallback { .. }
            | BuildError::VersionMismatch { .. }
            | BuildError::NewSymbolOutsideModule { .. } => ErrorKind::Refused,
            BuildError::NoAffectedUnit | BuildError::NoChange { .. } => ErrorKind::NoChange,
            _ => ErrorKind::Error,
        }
    }

    /// The partial report of a build the diff refused or found unchanged.
    pub fn report(&self) -> Option<&BuildReport> {
        match self {
            BuildError::Refused { report } | BuildError::NoChange { report } => Some(report),
            _ => None,
        }
    }
}
