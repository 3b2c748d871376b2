//! `kpbuild cache list|prune` on the command line: arguments and printing;
//! the work is [`crate::cache`]'s.

use crate::cache::{self, CacheError, Entry, Listing, PruneReport, Rules};
use crate::exit;

/// Arguments of `kpbuild cache`.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// What to do with the cache.
    #[command(subcommand)]
    pub command: CacheCommand,
}

/// `kpbuild cache`'s commands.
#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// List every cache entry: kind, name, size on disk, last use, whether
    /// it is complete and whether a running build holds it, and what uses
    /// what.
    List(ListArgs),
    /// Remove cache entries. Without a rule only leftovers go (unfinished
    /// entries, an interrupted prune's trash). With rules an entry stays
    /// when any rule keeps it; a source goes when no remaining release of
    /// its version needs it, a prepared build directory goes with its
    /// source. An entry a running build holds (its lock) is never removed:
    /// it is reported as skipped.
    Prune(PruneArgs),
}

/// Arguments of `kpbuild cache list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the listing as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild cache prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Keep the N newest Debian releases of each series, Debian and flavour
    /// (by package version, as dpkg orders them); older ones go.
    #[arg(long, value_name = "N", value_parser = keep_count)]
    pub keep_newest: Option<usize>,
    /// Remove entries unused for DAYS days or more (releases, sources,
    /// prepared directories, test kernels, decompressed target modules).
    #[arg(long, value_name = "DAYS")]
    pub older_than: Option<u64>,
    /// Only print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--keep-newest`: at least one, since zero would empty the cache of
/// releases by a slip of the keyboard.
fn keep_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(
            "keeping 0 releases would remove every release; to empty the cache use --older-than 0"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a count of releases")),
    }
}

/// Runs `kpbuild cache`; returns the exit code.
pub fn run(args: &CacheArgs) -> u8 {
    let root = kimage::cache_root();
    let (json, result) = match &args.command {
        CacheCommand::List(a) => (
            a.json,
            cache::list(&root).map(|l| print_listing(&l, a.json)),
        ),
        CacheCommand::Prune(a) => {
            let rules = Rules {
                keep_newest: a.keep_newest,
                older_than_days: a.older_than,
                dry_run: a.dry_run,
            };
            (
                a.json,
                cache::prune(&root, &rules).map(|r| print_prune(&r, a.json)),
            )
        }
    };
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => fail(&e, json),
    }
}

fn fail(e: &CacheError, json: bool) -> u8 {
    if json {
        let value = serde_json::json!({"outcome": "error", "message": e.to_string()});
        crate::outln!("{}", serde_json::to_string_pretty(&value).expect("json"));
    }
    eprintln!("kpbuild cache: {e}");
    exit::ERROR
}

/// How long ago `t` (seconds since the epoch) was.
fn age(t: u64, now: u64) -> String {
    let s = now.saturating_sub(t);
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One listing line's state: complete or not, held, and its links.
fn state(e: &Entry) -> String {
    let mut parts = vec![if e.complete { "complete" } else { "unfinished" }.to_string()];
    if e.held {
        parts.push("held by a build".into());
    }
    if !e.uses.is_empty() {
        let uses: Vec<String> = e.uses.iter().map(|u| u.to_string()).collect();
        parts.push(format!("uses {}", uses.join(", ")));
    }
    if !e.used_by.is_empty() {
        let by: Vec<String> = e.used_by.iter().map(|u| u.to_string()).collect();
        parts.push(format!("used by {}", by.join(", ")));
    }
    parts.join("; ")
}

fn print_listing(listing: &Listing, json: bool) {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(listing).expect("json"));
        return;
    }
    crate::outln!(
        "{}: {} entries, {}",
        listing.root.display(),
        listing.entries.len(),
        cache::human_bytes(listing.total_bytes)
    );
    let now = now();
    let width = listing
        .entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4);
    for e in &listing.entries {
        crate::outln!(
            "{:<14}  {:<width$}  {:>8}  {:>11}  {}",
            e.kind.label(),
            e.name,
            cache::human_bytes(e.bytes),
            age(e.last_use, now),
            state(e)
        );
    }
}

fn print_prune(report: &PruneReport, json: bool) {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(report).expect("json"));
        return;
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &report.removed {
        let size = cache::human_bytes(r.bytes);
        crate::outln!("{verb} {} ({size}): {}", r.entry, r.reason);
    }
    for s in &report.skipped {
        let size = cache::human_bytes(s.bytes);
        crate::outln!("kept {} ({size}): {}, but {}", s.entry, s.reason, s.why);
    }
    crate::outln!(
        "{} {} entries, {}; {} entries stay",
        if report.dry_run {
            "would free"
        } else {
            "freed"
        },
        report.removed.len(),
        cache::human_bytes(report.freed_bytes),
        report.kept.len()
    );
}
