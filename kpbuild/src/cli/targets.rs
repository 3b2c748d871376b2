//! `kpbuild targets debian` on the command line: arguments and printing;
//! the work is [`crate::cache::targets`]'s.

use crate::cache::{self, Targets, TargetsError};
use crate::exit;

/// Arguments of `kpbuild targets`.
#[derive(Debug, clap::Args)]
pub struct TargetsArgs {
    /// Which kind of target.
    #[command(subcommand)]
    pub command: TargetsCommand,
}

/// `kpbuild targets`' commands.
#[derive(Debug, clap::Subcommand)]
pub enum TargetsCommand {
    /// The Debian kernels apt knows (Debian 12's 6.1 and 6.12, Debian 13's
    /// 6.12), each with its package version, flavour and suite, and what of
    /// it is cached (release directory, source, prepared build
    /// directories) with its size on disk.
    Debian(DebianArgs),
}

/// Arguments of `kpbuild targets debian`.
#[derive(Debug, clap::Args)]
pub struct DebianArgs {
    /// The kernel series (`6.12`, `6.1`); every series when omitted.
    pub series: Option<String>,
    /// Only this flavour (`amd64`, `cloud-amd64`, `rt-amd64`).
    #[arg(long)]
    pub flavour: Option<String>,
    /// Print the kernels as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kpbuild targets`; returns the exit code.
pub fn run(args: &TargetsArgs) -> u8 {
    let TargetsCommand::Debian(a) = &args.command;
    let root = kimage::cache_root();
    match cache::targets::debian(&root, a.series.as_deref(), a.flavour.as_deref()) {
        Ok(targets) => {
            print(&targets, a.json);
            exit::SUCCESS
        }
        Err(e) => fail(&e, a.json),
    }
}

fn fail(e: &TargetsError, json: bool) -> u8 {
    if json {
        let value = serde_json::json!({"outcome": "error", "message": e.to_string()});
        crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
    }
    eprintln!("kpbuild targets debian: {e}");
    exit::ERROR
}

/// What of a kernel is cached, in a few words.
fn cached(t: &cache::targets::Target) -> String {
    let c = &t.cached;
    let part = |what: &str, p: &cache::targets::Part| {
        let state = if !p.complete {
            ", unfinished"
        } else if p.held {
            ", held"
        } else {
            ""
        };
        format!("{what} {}{state}", cache::human_bytes(p.bytes))
    };
    let mut parts: Vec<String> = Vec::new();
    parts.extend(c.release.iter().map(|p| part("release", p)));
    parts.extend(c.source.iter().map(|p| part("source", p)));
    parts.extend(c.prepared.iter().map(|p| part("prepared", p)));
    if parts.is_empty() {
        return "-".into();
    }
    parts.join(", ")
}

fn print(targets: &Targets, json: bool) {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(targets).expect("json"));
        return;
    }
    let width = targets
        .kernels
        .iter()
        .map(|t| t.kernel.release.len())
        .max()
        .unwrap_or(7);
    let vwidth = targets
        .kernels
        .iter()
        .map(|t| t.kernel.version.len())
        .max()
        .unwrap_or(7);
    crate::outln!(
        "{:<width$}  {:<vwidth$}  {:<5}  CACHED",
        "RELEASE",
        "VERSION",
        "SUITE"
    );
    for t in &targets.kernels {
        let k = &t.kernel;
        crate::outln!(
            "{:<width$}  {:<vwidth$}  {:<5}  {}",
            k.release,
            k.version,
            k.suite,
            cached(t)
        );
    }
    let cached: Vec<_> = targets
        .kernels
        .iter()
        .filter(|t| t.cached.release.is_some())
        .collect();
    // A source shared by flavours counts once.
    let mut seen = std::collections::HashSet::new();
    let bytes: u64 = targets
        .kernels
        .iter()
        .flat_map(|t| {
            t.cached
                .release
                .iter()
                .chain(&t.cached.source)
                .chain(&t.cached.prepared)
        })
        .filter(|p| seen.insert(p.path.clone()))
        .map(|p| p.bytes)
        .sum();
    crate::outln!(
        "{} kernels, {} of them cached ({} in {})",
        targets.kernels.len(),
        cached.len(),
        cache::human_bytes(bytes),
        targets.cache.display()
    );
}
