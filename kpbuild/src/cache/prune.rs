//! Pruning: which entries the rules select ([`plan`]), then their removal,
//! each under its own locks taken without waiting, by a rename into a
//! trash directory first so no reader ever sees half an entry.

use super::{CacheError, Entry, EntryRef, Kind, Listing, PruneReport};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// What to remove. Without a rule only leftovers go: unfinished entries
/// (no marker) and trash. With rules, an entry stays when any rule keeps
/// it: `keep_newest` keeps the N newest releases of each series, Debian
/// and flavour; `older_than_days` keeps whatever was used more recently.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Keep the N newest Debian releases of each series, Debian and
    /// flavour, by package version.
    pub keep_newest: Option<usize>,
    /// Remove entries unused for this many days.
    pub older_than_days: Option<u64>,
    /// Only say what would be removed.
    pub dry_run: bool,
}

/// Why an entry is removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Reason {
    /// Its marker is missing: an interrupted fill.
    Incomplete,
    /// Left by an interrupted prune.
    Trash,
    /// Older than the newest `keep` releases of its group.
    NotNewest {
        /// Series, Debian and flavour (`6.12 deb12 cloud-amd64`).
        group: String,
        /// How many are kept.
        keep: usize,
    },
    /// Unused for `days` days or more.
    Unused {
        /// The limit.
        days: u64,
    },
    /// Both: not among the newest and unused.
    NotNewestAndUnused {
        /// Series, Debian and flavour.
        group: String,
        /// How many are kept.
        keep: usize,
        /// The limit.
        days: u64,
    },
    /// A source no remaining release of its version needs.
    NoRelease,
    /// A prepared directory whose source entry is removed.
    SourceRemoved {
        /// That entry.
        source: EntryRef,
    },
    /// A prepared directory whose source tree is gone.
    SourceGone {
        /// The recorded source.
        source: PathBuf,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Incomplete => write!(f, "unfinished (no marker)"),
            Reason::Trash => write!(f, "left by an interrupted prune"),
            Reason::NotNewest { group, keep } => {
                write!(f, "not among the {keep} newest of {group}")
            }
            Reason::Unused { days } => write!(f, "unused for {days} days or more"),
            Reason::NotNewestAndUnused { group, keep, days } => write!(
                f,
                "not among the {keep} newest of {group}, unused for {days} days or more"
            ),
            Reason::NoRelease => write!(f, "no remaining release needs it"),
            Reason::SourceRemoved { source } => write!(f, "its source {source} goes"),
            Reason::SourceGone { source } => write!(f, "its source {} is gone", source.display()),
        }
    }
}

/// Why a selected entry stays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum SkipReason {
    /// A running process holds its lock.
    Held,
    /// An entry that stays needs it.
    UsedBy {
        /// That entry.
        user: EntryRef,
    },
    /// A prepared directory whose source was selected, but stays.
    SourceStays {
        /// The source.
        source: EntryRef,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Held => write!(f, "a running build holds it"),
            SkipReason::UsedBy { user } => write!(f, "{user} stays and needs it"),
            SkipReason::SourceStays { source } => write!(f, "its source {source} stays"),
        }
    }
}

/// An entry removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    /// Which.
    pub entry: EntryRef,
    /// Where it was.
    pub path: PathBuf,
    /// Its disk usage.
    pub bytes: u64,
    /// Why.
    pub reason: Reason,
}

/// An entry the rules select that stays.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// Which.
    pub entry: EntryRef,
    /// Where it is.
    pub path: PathBuf,
    /// Its disk usage.
    pub bytes: u64,
    /// Why it was selected.
    pub reason: Reason,
    /// Why it stays.
    pub why: SkipReason,
}

/// For each entry, why the rules remove it (`None`: it stays). Locks are
/// not considered here.
pub(super) fn plan(entries: &[Entry], rules: &Rules, now: u64) -> Vec<Option<Reason>> {
    let unused = |e: &Entry| {
        rules
            .older_than_days
            .map(|days| now.saturating_sub(e.last_use) >= days.saturating_mul(86_400))
    };
    let any_rule = rules.keep_newest.is_some() || rules.older_than_days.is_some();
    let ranks = release_ranks(entries);
    let mut out: Vec<Option<Reason>> = vec![None; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        out[i] = match e.kind {
            _ if e.kind == Kind::Trash => Some(Reason::Trash),
            Kind::Other => None,
            _ if !e.complete => Some(Reason::Incomplete),
            Kind::DebianRelease => ranks
                .get(&i)
                .and_then(|(group, rank)| release_reason(rules, group, *rank, unused(e))),
            Kind::TestKernel | Kind::TargetModules if unused(e) == Some(true) => {
                Some(Reason::Unused {
                    days: rules.older_than_days.unwrap_or(0),
                })
            }
            _ => None,
        };
    }
    let needed: HashSet<&str> = entries
        .iter()
        .zip(&out)
        .filter(|(e, r)| e.kind == Kind::DebianRelease && r.is_none())
        .filter_map(|(e, _)| e.version.as_deref())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if e.kind == Kind::DebianSource
            && e.complete
            && any_rule
            && !needed.contains(e.name.as_str())
            && unused(e) != Some(false)
        {
            out[i] = Some(Reason::NoRelease);
        }
    }
    for (i, e) in entries.iter().enumerate() {
        if e.kind == Kind::Prepared && e.complete {
            out[i] = prepared_reason(e, entries, &out, rules, unused(e));
        }
    }
    out
}

/// The reason a complete release goes, from its rank in its group
/// (0: newest) and whether it is unused.
fn release_reason(rules: &Rules, group: &str, rank: usize, unused: Option<bool>) -> Option<Reason> {
    let old = rules.keep_newest.filter(|&keep| rank >= keep);
    match (old, unused, rules.older_than_days) {
        (Some(keep), None, _) => Some(Reason::NotNewest {
            group: group.to_string(),
            keep,
        }),
        (Some(keep), Some(true), Some(days)) => Some(Reason::NotNewestAndUnused {
            group: group.to_string(),
            keep,
            days,
        }),
        (None, Some(true), Some(days)) if rules.keep_newest.is_none() => {
            Some(Reason::Unused { days })
        }
        _ => None,
    }
}

/// The reason a complete prepared directory goes: with its source, when
/// its source is gone, or unused.
fn prepared_reason(
    e: &Entry,
    entries: &[Entry],
    out: &[Option<Reason>],
    rules: &Rules,
    unused: Option<bool>,
) -> Option<Reason> {
    for used in &e.uses {
        let removed = entries
            .iter()
            .zip(out)
            .any(|(s, r)| s.id() == *used && r.is_some());
        if removed {
            return Some(Reason::SourceRemoved {
                source: used.clone(),
            });
        }
    }
    if let Some(src) = &e.source
        && std::fs::symlink_metadata(src).is_err()
    {
        return Some(Reason::SourceGone {
            source: src.clone(),
        });
    }
    (unused == Some(true)).then(|| Reason::Unused {
        days: rules.older_than_days.unwrap_or(0),
    })
}

/// Each complete release's group and rank in it (0: newest package
/// version).
fn release_ranks(entries: &[Entry]) -> HashMap<usize, (String, usize)> {
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.kind != Kind::DebianRelease || !e.complete {
            continue;
        }
        let group = [
            e.series.as_deref(),
            e.suite.as_deref(),
            e.flavour.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        groups.entry(group).or_default().push(i);
    }
    let version = |i: usize| entries[i].version.as_deref().unwrap_or(&entries[i].name);
    let mut ranks = HashMap::new();
    for (group, mut members) in groups {
        members.sort_by(|&a, &b| {
            crate::debian::version::compare(version(b), version(a))
                .then_with(|| entries[b].name.cmp(&entries[a].name))
        });
        for (rank, i) in members.into_iter().enumerate() {
            ranks.insert(i, (group.clone(), rank));
        }
    }
    ranks
}

/// Applies the plan: removes each selected entry unless it is held, or an
/// entry that stays needs it; in a dry run only says so. Users go before
/// what they use: releases first, then each source with the prepared
/// directories built on it, under the source's lock.
pub(super) fn run(listing: &Listing, rules: &Rules, now: u64) -> Result<PruneReport, CacheError> {
    let entries = &listing.entries;
    let mut p = Pruner {
        entries,
        plan: plan(entries, rules, now),
        dry_run: rules.dry_run,
        trash: Trash::new(&listing.root),
        gone: HashSet::new(),
        report: PruneReport {
            root: listing.root.clone(),
            dry_run: rules.dry_run,
            removed: Vec::new(),
            skipped: Vec::new(),
            kept: Vec::new(),
            freed_bytes: 0,
        },
    };
    let used = |k: Kind| matches!(k, Kind::DebianSource | Kind::TestKernel);
    for (i, e) in entries.iter().enumerate() {
        if p.plan[i].is_some() && !used(e.kind) && p.waits_for_source(i).is_none() {
            p.remove(i)?;
        }
    }
    for (i, e) in entries.iter().enumerate() {
        if p.plan[i].is_some() && used(e.kind) {
            p.remove_with_users(i)?;
        }
    }
    // Prepared directories whose source was selected but stays.
    for i in 0..entries.len() {
        if let Some(source) = p.waits_for_source(i)
            && !p.settled(i)
        {
            p.skip(i, SkipReason::SourceStays { source });
        }
    }
    p.trash.close()?;
    let gone = &p.gone;
    p.report.kept = entries
        .iter()
        .map(Entry::id)
        .filter(|id| !gone.contains(id))
        .collect();
    Ok(p.report)
}

/// A prune in progress.
struct Pruner<'a> {
    entries: &'a [Entry],
    plan: Vec<Option<Reason>>,
    dry_run: bool,
    trash: Trash,
    gone: HashSet<EntryRef>,
    report: PruneReport,
}

impl Pruner<'_> {
    /// The source a prepared directory goes with, if that is its reason.
    fn waits_for_source(&self, i: usize) -> Option<EntryRef> {
        match &self.plan[i] {
            Some(Reason::SourceRemoved { source }) => Some(source.clone()),
            _ => None,
        }
    }

    /// Whether entry `i` was removed or skipped already.
    fn settled(&self, i: usize) -> bool {
        let id = self.entries[i].id();
        self.gone.contains(&id) || self.report.skipped.iter().any(|s| s.entry == id)
    }

    fn skip(&mut self, i: usize, why: SkipReason) {
        let e = &self.entries[i];
        self.report.skipped.push(Skipped {
            entry: e.id(),
            path: e.path.clone(),
            bytes: e.bytes,
            reason: self.plan[i].clone().expect("selected"),
            why,
        });
    }

    /// The entry's locks, taken without waiting (in a dry run: whether the
    /// listing saw it held); `None` when held.
    fn lock(&self, i: usize) -> Result<Option<Vec<File>>, CacheError> {
        let e = &self.entries[i];
        if self.dry_run {
            return Ok((!e.held).then(Vec::new));
        }
        take_locks(&e.locks)
    }

    /// Removes entry `i` unless it is held.
    fn remove(&mut self, i: usize) -> Result<(), CacheError> {
        match self.lock(i)? {
            Some(guards) => self.finish(i, guards),
            None => {
                self.skip(i, SkipReason::Held);
                Ok(())
            }
        }
    }

    /// Removes entry `i`, whose locks `guards` are: renamed into the trash,
    /// the locks released, then deleted.
    fn finish(&mut self, i: usize, guards: Vec<File>) -> Result<(), CacheError> {
        let e = &self.entries[i];
        if !self.dry_run {
            if e.kind == Kind::Trash {
                delete(&e.path)?;
            } else if let Some(dest) = self.trash.hide(e)? {
                drop(guards);
                delete(&dest)?;
            }
        }
        self.gone.insert(e.id());
        self.report.freed_bytes += e.bytes;
        self.report.removed.push(Removed {
            entry: e.id(),
            path: e.path.clone(),
            bytes: e.bytes,
            reason: self.plan[i].clone().expect("selected"),
        });
        Ok(())
    }

    /// Removes a source (or test kernel) `i` and the prepared directories
    /// that go with it, under its lock; it stays when a user stays.
    fn remove_with_users(&mut self, i: usize) -> Result<(), CacheError> {
        let e = &self.entries[i];
        let id = e.id();
        let pending: Vec<usize> = (0..self.entries.len())
            .filter(|&j| self.waits_for_source(j).as_ref() == Some(&id))
            .collect();
        let staying = e.used_by.iter().find(|u| {
            !self.gone.contains(*u) && !pending.iter().any(|&j| self.entries[j].id() == **u)
        });
        if let Some(user) = staying.filter(|_| e.complete) {
            self.skip(i, SkipReason::UsedBy { user: user.clone() });
            return Ok(());
        }
        let Some(guards) = self.lock(i)? else {
            self.skip(i, SkipReason::Held);
            return Ok(());
        };
        let mut stays = None;
        for j in pending {
            match self.lock(j)? {
                Some(g) if stays.is_none() => self.finish(j, g)?,
                Some(_) => {}
                None => {
                    self.skip(j, SkipReason::Held);
                    stays = Some(self.entries[j].id());
                }
            }
        }
        match stays {
            Some(user) => self.skip(i, SkipReason::UsedBy { user }),
            None => self.finish(i, guards)?,
        }
        Ok(())
    }
}

/// The directory entries are renamed into before they are deleted:
/// `CACHE/.trash-PID-NANOS`, made on first use, removed at the end.
struct Trash {
    dir: PathBuf,
    made: bool,
    count: usize,
}

impl Trash {
    fn new(root: &Path) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{}{}-{nanos}",
            super::scan::TRASH_PREFIX,
            std::process::id()
        );
        Trash {
            dir: root.join(name),
            made: false,
            count: 0,
        }
    }

    /// Renames `e` (whose locks the caller holds) into the trash: from then
    /// on no reader finds it, whole or partial. `None` when it was gone.
    fn hide(&mut self, e: &Entry) -> Result<Option<PathBuf>, CacheError> {
        if !self.made {
            std::fs::create_dir(&self.dir)
                .map_err(CacheError::entry("cannot create", &self.dir))?;
            self.made = true;
        }
        self.count += 1;
        let dest = self.dir.join(format!("{}-{}", self.count, e.kind.label()));
        match std::fs::rename(&e.path, &dest) {
            Ok(()) => Ok(Some(dest)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(CacheError::entry("cannot move to the trash", &e.path)(err)),
        }
    }

    fn close(self) -> Result<(), CacheError> {
        if self.made {
            delete(&self.dir)?;
        }
        Ok(())
    }
}

/// Every lock of an entry, taken without waiting; `None` when one is held.
/// The first is the one its builds take: it is created when missing, so a
/// build that starts now waits for it instead of making its own. The lock
/// files stay: removing one while a build waits on it would let the next
/// build take a different file.
fn take_locks(locks: &[PathBuf]) -> Result<Option<Vec<File>>, CacheError> {
    let mut guards = Vec::new();
    for (k, lock) in locks.iter().enumerate() {
        let file = if k == 0 {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock)
        } else {
            File::open(lock)
        };
        let file = match file {
            Ok(f) => f,
            Err(e) if k > 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CacheError::entry("cannot open the lock", lock)(e)),
        };
        match file.try_lock() {
            Ok(()) => guards.push(file),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(CacheError::entry("cannot lock", lock)(e)),
        }
    }
    Ok(Some(guards))
}

/// Deletes a file or a directory tree.
fn delete(path: &Path) -> Result<(), CacheError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(CacheError::entry("cannot remove", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::scan;

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn release(name: &str, version: &str, days_ago: u64) -> Entry {
        let mut e = scan::entry(
            Kind::DebianRelease,
            name.into(),
            format!("/c/debian/{name}").into(),
        );
        let (series, suite, flavour) = scan::release_parts(name).unwrap();
        (e.series, e.suite, e.flavour) = (Some(series), suite, Some(flavour));
        e.version = Some(version.into());
        e.complete = true;
        e.last_use = NOW - days_ago * DAY;
        e
    }

    fn other(kind: Kind, name: &str, days_ago: u64) -> Entry {
        let mut e = scan::entry(kind, name.into(), format!("/c/{name}").into());
        e.complete = true;
        e.last_use = NOW - days_ago * DAY;
        e
    }

    /// Three 6.12 cloud releases, one 6.12 amd64 sharing the newest's
    /// source, two 6.1 cloud releases, their sources, a prepared directory
    /// on the oldest source, a test kernel, trash and something unknown.
    fn cache() -> Vec<Entry> {
        let mut v = vec![
            release("6.12.107+deb12-cloud-amd64", "6.12.107-1~deb12u1", 30),
            release("6.12.115+deb12-cloud-amd64", "6.12.115-2~deb12u1", 1),
            release("6.12.118+deb12-cloud-amd64", "6.12.118-1~deb12u1", 20),
            release("6.12.118+deb12-amd64", "6.12.118-1~deb12u1", 40),
            release("6.1.0-9-cloud-amd64", "6.1.27-1", 40),
            release("6.1.0-57-cloud-amd64", "6.1.192-3", 40),
        ];
        for version in [
            "6.12.107-1~deb12u1",
            "6.12.115-2~deb12u1",
            "6.12.118-1~deb12u1",
            "6.1.27-1",
            "6.1.192-3",
        ] {
            let mut s = other(Kind::DebianSource, version, 40);
            s.version = Some(version.into());
            v.push(s);
        }
        let mut p = other(Kind::Prepared, "0123456789abcdef", 2);
        p.uses = vec![EntryRef {
            kind: Kind::DebianSource,
            name: "6.12.107-1~deb12u1".into(),
        }];
        v.push(p);
        v.push(other(
            Kind::TestKernel,
            "6.12.118-1_deb12u1-2e0a5a3673f5",
            10,
        ));
        v.push(other(Kind::Other, "buildroot", 400));
        let mut t = other(Kind::Trash, ".trash-1-2", 0);
        t.complete = false;
        v.push(t);
        v
    }

    /// The names the plan removes.
    fn removed(entries: &[Entry], rules: &Rules) -> Vec<String> {
        let plan = plan(entries, rules, NOW);
        entries
            .iter()
            .zip(plan)
            .filter(|(_, r)| r.is_some())
            .map(|(e, _)| e.name.clone())
            .collect()
    }

    #[test]
    fn without_rules_only_leftovers_go() {
        let mut entries = cache();
        entries[1].complete = false;
        assert_eq!(
            removed(&entries, &Rules::default()),
            ["6.12.115+deb12-cloud-amd64", ".trash-1-2"]
        );
    }

    #[test]
    fn keep_newest_per_series_suite_and_flavour() {
        let rules = Rules {
            keep_newest: Some(1),
            ..Rules::default()
        };
        // 6.12 cloud keeps 118, 6.12 amd64 its only one, 6.1 cloud 6.1.0-57
        // (6.1.192-3 > 6.1.27-1, though `9` > `57` as text). Sources go with
        // their last release; the prepared directory with its source.
        assert_eq!(
            removed(&cache(), &rules),
            [
                "6.12.107+deb12-cloud-amd64",
                "6.12.115+deb12-cloud-amd64",
                "6.1.0-9-cloud-amd64",
                "6.12.107-1~deb12u1",
                "6.12.115-2~deb12u1",
                "6.1.27-1",
                "0123456789abcdef",
                ".trash-1-2",
            ]
        );
        let rules = Rules {
            keep_newest: Some(2),
            ..Rules::default()
        };
        assert_eq!(
            removed(&cache(), &rules),
            [
                "6.12.107+deb12-cloud-amd64",
                "6.12.107-1~deb12u1",
                "0123456789abcdef",
                ".trash-1-2"
            ]
        );
    }

    #[test]
    fn older_than_removes_what_was_unused_that_long() {
        let rules = Rules {
            older_than_days: Some(25),
            ..Rules::default()
        };
        assert_eq!(
            removed(&cache(), &rules),
            [
                "6.12.107+deb12-cloud-amd64",
                "6.12.118+deb12-amd64",
                "6.1.0-9-cloud-amd64",
                "6.1.0-57-cloud-amd64",
                "6.12.107-1~deb12u1",
                "6.1.27-1",
                "6.1.192-3",
                "0123456789abcdef",
                ".trash-1-2",
            ]
        );
        // A kernel and the target modules go by age alone.
        let rules = Rules {
            older_than_days: Some(5),
            ..Rules::default()
        };
        assert!(removed(&cache(), &rules).contains(&"6.12.118-1_deb12u1-2e0a5a3673f5".to_string()));
    }

    #[test]
    fn both_rules_keep_what_either_keeps() {
        let rules = Rules {
            keep_newest: Some(1),
            older_than_days: Some(25),
            dry_run: false,
        };
        let entries = cache();
        let plan = plan(&entries, &rules, NOW);
        let names = removed(&entries, &rules);
        // 6.12.115 is not the newest but was used a day ago.
        assert_eq!(
            names,
            [
                "6.12.107+deb12-cloud-amd64",
                "6.1.0-9-cloud-amd64",
                "6.12.107-1~deb12u1",
                "6.1.27-1",
                "0123456789abcdef",
                ".trash-1-2",
            ]
        );
        assert_eq!(
            plan[0],
            Some(Reason::NotNewestAndUnused {
                group: "6.12 deb12 cloud-amd64".into(),
                keep: 1,
                days: 25
            })
        );
        assert_eq!(
            plan[11],
            Some(Reason::SourceRemoved {
                source: EntryRef {
                    kind: Kind::DebianSource,
                    name: "6.12.107-1~deb12u1".into()
                }
            })
        );
    }

    #[test]
    fn a_prepared_directory_whose_source_is_gone_goes() {
        let mut p = other(Kind::Prepared, "fedcba9876543210", 0);
        p.source = Some("/nonexistent/kpbuild-cache-test/src".into());
        let plan = plan(&[p], &Rules::default(), NOW);
        assert_eq!(
            plan[0],
            Some(Reason::SourceGone {
                source: "/nonexistent/kpbuild-cache-test/src".into()
            })
        );
    }

    /// A cache on disk: two 6.12 cloud releases, each with its source, and
    /// a prepared directory on the older source.
    fn on_disk(root: &Path) {
        let w = |p: &str, data: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        for (release, version) in [("107", "6.12.107-1~deb12u1"), ("118", "6.12.118-1~deb12u1")] {
            let dir = format!("debian/6.12.{release}+deb12-cloud-amd64");
            w(&format!("{dir}/.kpbuild-extracted-2"), version);
            w(&format!("{dir}/root/boot/vmlinuz"), "image");
            let src = format!("debian/source-{}", version.replace('~', "_"));
            w(&format!("{src}/.kpbuild-extracted"), version);
            w(&format!("{src}/linux-source-6.12/Makefile"), "VERSION = 6");
        }
        let source = root.join("debian/source-6.12.107-1_deb12u1/linux-source-6.12");
        w("prepared/00aa/.kpbuild-prepared", "00aa");
        w("prepared/00aa/.kpbuild-source", source.to_str().unwrap());
    }

    fn names(report: &PruneReport) -> (Vec<String>, Vec<String>) {
        (
            report
                .removed
                .iter()
                .map(|r| r.entry.name.clone())
                .collect(),
            report
                .skipped
                .iter()
                .map(|r| format!("{} {}", r.entry.name, r.why))
                .collect(),
        )
    }

    #[test]
    fn a_held_release_stays_with_its_source_and_prepared_directory() {
        let s = testbed::scratch::Scratch::new("cache-prune-held");
        on_disk(s.root());
        let rules = Rules {
            keep_newest: Some(1),
            ..Rules::default()
        };
        let lock = File::create(s.path("debian/6.12.107+deb12-cloud-amd64.lock")).unwrap();
        lock.lock_shared().unwrap();
        let dry = crate::cache::prune(
            s.root(),
            &Rules {
                dry_run: true,
                ..rules.clone()
            },
        )
        .unwrap();
        let report = crate::cache::prune(s.root(), &rules).unwrap();
        for r in [&dry, &report] {
            assert_eq!(
                names(r),
                (
                    vec![],
                    vec![
                        "6.12.107+deb12-cloud-amd64 a running build holds it".to_string(),
                        "6.12.107-1~deb12u1 debian-release 6.12.107+deb12-cloud-amd64 stays and needs it".into(),
                        "00aa its source debian-source 6.12.107-1~deb12u1 stays".into(),
                    ]
                )
            );
        }
        assert!(
            s.path("debian/6.12.107+deb12-cloud-amd64/root/boot/vmlinuz")
                .is_file()
        );
        assert!(s.path("prepared/00aa/.kpbuild-prepared").is_file());
        drop(lock);
        // A build holding the prepared directory keeps it and its source.
        let lock = File::create(s.path("prepared/00aa.lock")).unwrap();
        lock.lock().unwrap();
        let report = crate::cache::prune(s.root(), &rules).unwrap();
        assert_eq!(
            names(&report),
            (
                vec!["6.12.107+deb12-cloud-amd64".to_string()],
                vec![
                    "00aa a running build holds it".to_string(),
                    "6.12.107-1~deb12u1 prepared 00aa stays and needs it".into(),
                ]
            )
        );
        drop(lock);
        let report = crate::cache::prune(s.root(), &rules).unwrap();
        assert_eq!(
            names(&report),
            (
                vec!["00aa".to_string(), "6.12.107-1~deb12u1".into()],
                vec![]
            )
        );
        assert!(!s.path("prepared/00aa").exists());
        assert!(!s.path("debian/source-6.12.107-1_deb12u1").exists());
        assert!(
            s.path("debian/source-6.12.118-1_deb12u1/.kpbuild-extracted")
                .is_file()
        );
        // Lock files stay; no trash is left.
        assert!(s.path("prepared/00aa.lock").is_file());
        let left: Vec<_> = std::fs::read_dir(s.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!left.iter().any(|n| n.starts_with(".trash-")), "{left:?}");
    }

    #[test]
    fn an_entry_is_renamed_into_the_trash_whole_before_it_is_deleted() {
        let s = testbed::scratch::Scratch::new("cache-trash");
        on_disk(s.root());
        let listing = crate::cache::list(s.root()).unwrap();
        let e = listing
            .get(Kind::DebianRelease, "6.12.107+deb12-cloud-amd64")
            .unwrap();
        let mut trash = Trash::new(s.root());
        let guards = take_locks(&e.locks).unwrap().expect("free");
        // While the entry's lock is held, a second taker is refused.
        assert!(take_locks(&e.locks).unwrap().is_none());
        let dest = trash.hide(e).unwrap().expect("moved");
        drop(guards);
        assert!(!e.path.exists());
        assert!(dest.starts_with(s.root()));
        let name = dest
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(name.starts_with(".trash-"), "{name}");
        assert_eq!(
            std::fs::read_to_string(dest.join("root/boot/vmlinuz")).unwrap(),
            "image"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join(".kpbuild-extracted-2")).unwrap(),
            "6.12.107-1~deb12u1"
        );
        // An interrupted prune's trash is listed, and the next prune removes it.
        let listing = crate::cache::list(s.root()).unwrap();
        assert!(
            listing
                .entries
                .iter()
                .any(|e| e.kind == Kind::Trash && !e.complete)
        );
        let report = crate::cache::prune(s.root(), &Rules::default()).unwrap();
        assert_eq!(report.removed.len(), 1);
        assert_eq!(report.removed[0].reason, Reason::Trash);
        assert!(!dest.parent().unwrap().exists());
    }
}
