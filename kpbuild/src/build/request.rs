//! What a build is asked to do: [`BuildRequest`], built by the command line
//! or by any program that builds livepatches (a build farm, an agent, the
//! end-to-end suite) without going through argument parsing.

use std::path::PathBuf;
use std::sync::Arc;

/// One livepatch build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The kernel to patch.
    pub target: TargetSpec,
    /// Unified diffs (-p1), applied in order.
    pub patches: Vec<PathBuf>,
    /// Module name (also the patch name under /sys/kernel/livepatch).
    pub name: String,
    /// Output directory for NAME.ko and report.json.
    pub out: PathBuf,
    /// The patch atomically replaces earlier livepatches (`klp_patch.replace`).
    pub replace: bool,
    /// Parallel compile jobs (default: number of CPUs).
    pub jobs: Option<usize>,
    /// Keep the scratch directory (its path is printed).
    pub keep_tmp: bool,
    /// Sign the module for a kernel that checks module signatures.
    pub signing: Option<Signing>,
    /// Where progress lines go.
    pub progress: Progress,
    /// A changed header with more users than this is refused
    /// ([`crate::headers::DEFAULT_MAX_USERS`] by default).
    pub max_header_users: usize,
    /// A changed function without an ftrace entry is patched through its
    /// callers, when it has at most this many
    /// ([`elfdiff::callers::DEFAULT_MAX_CALLERS`] by default).
    pub max_callers: usize,
}

impl BuildRequest {
    /// A request with `kpbuild build`'s defaults: the patch replaces earlier
    /// livepatches, one compile job per CPU, no signing, no progress lines
    /// and the default limit of header users. Fields are public: change what
    /// differs.
    pub fn new(
        target: TargetSpec,
        patches: Vec<PathBuf>,
        name: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> Self {
        BuildRequest {
            target,
            patches,
            name: name.into(),
            out: out.into(),
            replace: true,
            jobs: None,
            keep_tmp: false,
            signing: None,
            progress: Progress::Quiet,
            max_header_users: crate::headers::DEFAULT_MAX_USERS,
            max_callers: elfdiff::callers::DEFAULT_MAX_CALLERS,
        }
    }
}

/// How the kernel to patch is described. Every form is resolved into one
/// [`TargetTree`](crate::tree::TargetTree) before anything is compiled.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// A built kernel tree.
    Tree {
        /// The kernel source tree the running kernel was built from.
        src: PathBuf,
        /// Its build tree (`O=` directory, or `src` itself).
        build: PathBuf,
        /// A vmlinux to use instead of `build/vmlinux`.
        vmlinux: Option<PathBuf>,
    },
    /// A kernel without a built tree: its source, config, vmlinux and
    /// module headers.
    Treeless {
        /// The exact source of the target kernel.
        src: PathBuf,
        /// Its config.
        config: PathBuf,
        /// Its unstripped vmlinux.
        vmlinux: PathBuf,
        /// Its module build tree with Module.symvers.
        headers: PathBuf,
        /// Its installed modules, `/lib/modules/RELEASE`.
        modules: Option<PathBuf>,
    },
    /// A Debian kernel release, fetched into the cache.
    Debian {
        /// The release (`6.12.117+deb12-cloud-amd64`).
        release: String,
        /// A source tree to use instead of the release's `linux-source`.
        src: Option<PathBuf>,
    },
}

/// The key and certificate a module is signed with.
#[derive(Debug, Clone)]
pub struct Signing {
    /// RSA private key (PEM).
    pub key: PathBuf,
    /// Its certificate (PEM or DER).
    pub cert: PathBuf,
}

/// Where a build's progress lines go. Errors are never progress: they are
/// the build's result.
#[derive(Clone, Default)]
pub enum Progress {
    /// Nowhere.
    #[default]
    Quiet,
    /// To stderr, one line each.
    Stderr,
    /// To a callback, one line each (without the newline).
    Lines(Arc<dyn Fn(&str) + Send + Sync>),
}

impl Progress {
    /// Reports one line.
    pub fn line(&self, text: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Stderr => eprintln!("{text}"),
            Progress::Lines(f) => f(text),
        }
    }

    /// Reports the start of step `n` of 6.
    pub fn step(&self, n: usize, what: &str) {
        self.line(&format!("[{n}/6] {what}"));
    }

    /// Reports a detail of the current step.
    pub fn note(&self, what: &str) {
        self.line(&format!("      {what}"));
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Progress::Quiet => "Quiet",
            Progress::Stderr => "Stderr",
            Progress::Lines(_) => "Lines(..)",
        })
    }
}
