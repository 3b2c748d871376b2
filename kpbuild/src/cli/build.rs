//! `kpbuild build` on the command line: its arguments, their mapping to a
//! [`BuildRequest`], and the printing of the result.

use crate::build::{BuildError, BuildRequest, Progress, Signing, TargetSpec};
use crate::exit;
use std::path::PathBuf;

/// Arguments of `kpbuild build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The kernel source tree the running kernel was built from (never
    /// modified); not needed with --debian.
    #[arg(long, value_parser = any_path)]
    pub src: Option<PathBuf>,
    /// Its build tree (`O=` directory, or SRC itself): .config, vmlinux,
    /// Module.symvers and kbuild's .cmd files. Without it: --config,
    /// --vmlinux and --headers (tree-less mode), or --debian.
    #[arg(long, value_parser = any_path)]
    pub build: Option<PathBuf>,
    /// A unified diff (-p1) to apply; repeat for several, applied in order.
    #[arg(long = "patch", required = true)]
    pub patches: Vec<PathBuf>,
    /// Module name (also the patch name under /sys/kernel/livepatch).
    #[arg(long)]
    pub name: String,
    /// Output directory for NAME.ko and report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Stack on earlier livepatches instead of atomically replacing them.
    #[arg(long)]
    pub no_replace: bool,
    /// Parallel compile jobs (default: number of CPUs). Run from a
    /// `make -jN` recipe, kpbuild also takes a slot of make's jobserver for
    /// each compile.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    pub keep_tmp: bool,
    /// Print no progress, only errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Sign the module with this RSA private key (PEM), for a kernel that
    /// checks module signatures; the digest is the tree's
    /// CONFIG_MODULE_SIG_HASH (sha256 when unset). Needs --sign-cert.
    #[arg(long, requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The certificate (PEM or DER) of --sign-key.
    #[arg(long, requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Refuse a patch that changes a header included by more units than
    /// this (each of them is compiled twice).
    #[arg(long, default_value_t = crate::headers::DEFAULT_MAX_USERS)]
    pub max_header_users: usize,
    /// A changed function without an ftrace entry (notrace, a syscall's
    /// out-of-line body) is patched through the traced functions that call
    /// it; refuse one with more callers than this.
    #[arg(long, default_value_t = elfdiff::callers::DEFAULT_MAX_CALLERS)]
    pub max_callers: usize,
}

/// A path argument that may be given empty (then it counts as not given).
fn any_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

/// How the target is described when there is no built tree (tree-less
/// mode), or a vmlinux to use instead of the tree's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Kernel config of the target (tree-less mode, with --vmlinux and --headers).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The target's unstripped vmlinux (tree-less mode; with --build it
    /// replaces BUILD/vmlinux).
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// The target's module build tree with Module.symvers (e.g.
    /// /lib/modules/RELEASE/build); the module glue is built against it.
    #[arg(long)]
    pub headers: Option<PathBuf>,
    /// The target's installed modules, /lib/modules/RELEASE (tree-less
    /// mode): a unit built into a module is patched in the module found
    /// there as kernel/…/NAME.ko, .ko.xz, .ko.zst or .ko.gz.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// A Debian kernel release apt knows, of either naming scheme and any
    /// amd64 flavour (`6.12.115+deb12-cloud-amd64`, `6.1.0-57-cloud-amd64`,
    /// `6.12.118+deb13-amd64`): fetch its packages and its own
    /// linux-source-X.Y version into the cache (nothing is installed) and
    /// build against them (tree-less mode); --src replaces its source. A
    /// kernel whose compiler this machine lacks (Debian 13's gcc-14 on
    /// Debian 12) compiles in a build root of its own Debian release,
    /// ~/.cache/kpbuild/buildroot/SUITE, made once with mmdebstrap (as
    /// root, ~450 MB) and entered with bwrap.
    #[arg(long, conflicts_with_all = ["config", "vmlinux", "headers", "modules"])]
    pub debian: Option<String>,
}

/// `kpbuild build` as the command line gives it.
#[derive(Debug, clap::Args)]
pub struct BuildCommand {
    /// The common arguments.
    #[command(flatten)]
    pub build: BuildArgs,
    /// The target description beyond a built tree.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Arguments that do not describe one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// `--debian` with `--build`.
    #[error("--debian and --build exclude each other")]
    DebianWithBuild,
    /// No way of describing the target.
    #[error(
        "describe the target with --build, or with --config, --vmlinux and --headers (tree-less), or with --debian RELEASE"
    )]
    NoTarget,
    /// Tree-less without `--src`.
    #[error("--src is required (the exact source of the target kernel)")]
    TreelessWithoutSrc,
    /// `--build` without `--src`.
    #[error("--src is required with --build")]
    BuildWithoutSrc,
    /// Tree-less options with `--build`.
    #[error(
        "--config, --headers and --modules describe a target without a built tree; drop --build or them"
    )]
    TreelessWithBuild,
    /// Only one of the signing options.
    #[error("--sign-key and --sign-cert go together")]
    HalfSigning,
}

/// A path given and not empty.
fn given(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.clone().filter(|p| !p.as_os_str().is_empty())
}

impl BuildCommand {
    /// The target the arguments describe.
    pub fn target(&self) -> Result<TargetSpec, ArgsError> {
        let (args, target) = (&self.build, &self.target);
        let (src, build) = (given(&args.src), given(&args.build));
        if let Some(release) = &target.debian {
            if build.is_some() {
                return Err(ArgsError::DebianWithBuild);
            }
            return Ok(TargetSpec::Debian {
                release: release.clone(),
                src,
            });
        }
        let Some(build) = build else {
            let (Some(config), Some(vmlinux), Some(headers)) =
                (&target.config, &target.vmlinux, &target.headers)
            else {
                return Err(ArgsError::NoTarget);
            };
            return Ok(TargetSpec::Treeless {
                src: src.ok_or(ArgsError::TreelessWithoutSrc)?,
                config: config.clone(),
                vmlinux: vmlinux.clone(),
                headers: headers.clone(),
                modules: target.modules.clone(),
            });
        };
        let src = src.ok_or(ArgsError::BuildWithoutSrc)?;
        if target.config.is_some() || target.headers.is_some() || target.modules.is_some() {
            return Err(ArgsError::TreelessWithBuild);
        }
        Ok(TargetSpec::Tree {
            src,
            build,
            vmlinux: target.vmlinux.clone(),
        })
    }

    /// The build the arguments ask for.
    pub fn request(&self) -> Result<BuildRequest, ArgsError> {
        let args = &self.build;
        let signing = match (&args.sign_key, &args.sign_cert) {
            (Some(key), Some(cert)) => Some(Signing {
                key: key.clone(),
                cert: cert.clone(),
            }),
            (None, None) => None,
            _ => return Err(ArgsError::HalfSigning),
        };
        Ok(BuildRequest {
            target: self.target()?,
            patches: args.patches.clone(),
            name: args.name.clone(),
            out: args.out.clone(),
            replace: !args.no_replace,
            jobs: args.jobs,
            keep_tmp: args.keep_tmp,
            signing,
            progress: if args.quiet || args.json {
                Progress::Quiet
            } else {
                Progress::Stderr
            },
            max_header_users: args.max_header_users,
            max_callers: args.max_callers,
        })
    }
}

/// Why `kpbuild build` did not produce a module.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Runs `kpbuild build`; returns the exit code.
pub fn run(command: &BuildCommand) -> u8 {
    let json = command.build.json;
    let result = command
        .request()
        .map_err(Failure::from)
        .and_then(|req| Ok(crate::build::build(&req)?));
    let failure = match result {
        Ok(report) => {
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
            }
            return exit::SUCCESS;
        }
        Err(failure) => failure,
    };
    let (kind, report) = match &failure {
        Failure::Args(_) => (crate::build::ErrorKind::Error, None),
        Failure::Build(e) => (e.kind(), e.report()),
    };
    let message = failure.to_string();
    if json {
        let mut value = report
            .map(|r| serde_json::to_value(r).expect("json"))
            .unwrap_or_else(|| serde_json::json!({"outcome": "error"}));
        value["message"] = serde_json::json!(message);
        crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
    }
    // --quiet silences progress, never the reason for a non-zero exit.
    eprintln!("kpbuild build: {}: {message}", kind.label());
    kind.exit_code()
}
