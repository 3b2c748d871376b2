//! The kernels of a farm, from a TOML file:
//!
//! ```toml
//! [[target]]
//! name = "cloud-118"                       # letters, digits, '-', '_', '.', '+'
//! debian = "6.12.118+deb12-cloud-amd64"    # one Debian kernel
//!
//! [[target]]
//! name = "test"
//! tree = { src = "linux", build = "linux-build" }   # relative to this file
//!
//! [[target]]
//! name = "cloud"                           # every kernel of a series apt knows
//! debian-all = { series = "6.12", flavours = ["cloud-amd64", "amd64"], suites = ["deb12"] }
//! ```
//!
//! Each `[[target]]` has a `name` and exactly one of `debian`, `tree`,
//! `debian-all` (`suites` is optional: every suite of the series when
//! absent). An unknown key anywhere is an error naming it. [`Targets::expand`]
//! turns the entries into concrete [`Target`]s: a `debian-all` entry
//! becomes one target per kernel, named `NAME-RELEASE`; every target gets
//! the kernel version its fixes' variants are chosen by. Two targets with
//! one name, or two targets of one kernel, are errors.

use crate::debian::DebianError;
use crate::debian::archive::KnownKernel;
use crate::debian::release::{self, Suite};
use crate::files::{FileError, PathContext};
use crate::tree::TreeError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What is wrong with a targets file or one of its targets; each names the
/// file and, where there is one, the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    /// The file cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not TOML, an unknown key, a value of the wrong type.
    #[error("{}: {source}", path.display())]
    Toml {
        /// The targets file.
        path: PathBuf,
        /// The parser's message (line, column, the key).
        source: toml::de::Error,
    },
    /// No `[[target]]` at all.
    #[error("{}: no [[target]] entries", path.display())]
    NoTargets {
        /// The targets file.
        path: PathBuf,
    },
    /// Something wrong with one entry.
    #[error("{}: target {name:?}: {why}", path.display())]
    Entry {
        /// The targets file.
        path: PathBuf,
        /// The entry's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Two targets with one name.
    #[error("{}: two targets named {name:?}", path.display())]
    DuplicateName {
        /// The targets file.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// Two targets of one kernel.
    #[error("{}: targets {first:?} and {second:?} are both {kernel}", path.display())]
    SameKernel {
        /// The targets file.
        path: PathBuf,
        /// The first target.
        first: String,
        /// The second.
        second: String,
        /// The kernel.
        kernel: String,
    },
    /// A Debian kernel apt does not know, or apt failing.
    #[error("{}: target {name:?}: {source}", path.display())]
    Debian {
        /// The targets file.
        path: PathBuf,
        /// The entry's name.
        name: String,
        /// What apt said.
        source: Box<DebianError>,
    },
    /// A tree that is not a kernel tree.
    #[error("{}: target {name:?}: {source}", path.display())]
    Tree {
        /// The targets file.
        path: PathBuf,
        /// The entry's name.
        name: String,
        /// What is wrong with the tree.
        source: Box<TreeError>,
    },
    /// A tree's Makefile without VERSION, PATCHLEVEL and SUBLEVEL.
    #[error("{}: no VERSION, PATCHLEVEL and SUBLEVEL numbers (target {name:?})", makefile.display())]
    NoVersion {
        /// The Makefile.
        makefile: PathBuf,
        /// The entry's name.
        name: String,
    },
}

/// The file as written; unknown keys are refused by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    target: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    debian: Option<String>,
    tree: Option<RawTree>,
    #[serde(rename = "debian-all")]
    debian_all: Option<RawDebianAll>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTree {
    src: PathBuf,
    build: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebianAll {
    series: String,
    flavours: Vec<String>,
    suites: Option<Vec<String>>,
}

/// The kernels one `[[target]]` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// One Debian kernel release.
    Debian {
        /// The release (`6.12.118+deb12-cloud-amd64`).
        release: String,
    },
    /// A built kernel tree.
    Tree {
        /// Its source (relative paths resolved against the file's directory).
        src: PathBuf,
        /// Its build directory.
        build: PathBuf,
    },
    /// Every kernel of a series apt knows in the given flavours.
    DebianAll {
        /// `6.12`, `6.1`.
        series: String,
        /// `cloud-amd64`, `amd64`, `rt-amd64`.
        flavours: Vec<String>,
        /// The Debian releases searched; every one of the series when empty.
        suites: Vec<Suite>,
    },
}

/// One `[[target]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its kernels.
    pub spec: Spec,
}

/// A targets file, read and checked (no apt query yet).
#[derive(Debug, Clone)]
pub struct Targets {
    /// The file.
    pub path: PathBuf,
    /// Its entries, in file order.
    pub entries: Vec<Entry>,
}

/// The kernel of one concrete target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kernel {
    /// A Debian kernel.
    Debian {
        /// Its release.
        release: String,
        /// The version of its `linux-image-RELEASE-unsigned` package.
        package_version: String,
    },
    /// A built kernel tree.
    Tree {
        /// Its source.
        src: PathBuf,
        /// Its build directory.
        build: PathBuf,
    },
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kernel::Debian { release, .. } => write!(f, "Debian {release}"),
            Kernel::Tree { build, .. } => write!(f, "the tree built in {}", build.display()),
        }
    }
}

/// One kernel of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Target {
    /// Its stable name: the entry's, or `ENTRY-RELEASE` for a set.
    pub name: String,
    /// The entry it comes from.
    pub entry: String,
    /// The upstream version of its source (`6.12.118`): what a fix's
    /// variant is chosen by.
    pub kernel_version: String,
    /// The kernel.
    pub kernel: Kernel,
}

/// What apt knows of a series in one suite, oldest first: the expansion's
/// only outside source, so that tests can stand in for apt.
pub type KnownKernels<'a> = dyn Fn(&str, Suite) -> Result<Vec<KnownKernel>, DebianError> + 'a;

/// apt's lists through a memo: (entry name, series, suite) → kernels.
type Lookup<'a> = dyn FnMut(&str, &str, Suite) -> Result<Vec<KnownKernel>, TargetsError> + 'a;

impl Targets {
    /// Reads and checks a targets file: its shape, names, release names,
    /// series and flavours. Nothing is asked of apt.
    pub fn read(path: &Path) -> Result<Targets, TargetsError> {
        let text = crate::files::read_to_string(path)?;
        let file: File = toml::from_str(&text).map_err(|source| TargetsError::Toml {
            path: path.to_path_buf(),
            source,
        })?;
        if file.target.is_empty() {
            return Err(TargetsError::NoTargets {
                path: path.to_path_buf(),
            });
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let mut entries: Vec<Entry> = Vec::new();
        for raw in file.target {
            let entry = check_entry(raw, base).map_err(|(name, why)| TargetsError::Entry {
                path: path.to_path_buf(),
                name,
                why,
            })?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(TargetsError::DuplicateName {
                    path: path.to_path_buf(),
                    name: entry.name,
                });
            }
            entries.push(entry);
        }
        Ok(Targets {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The concrete targets, in file order (a set's kernels oldest first),
    /// Debian kernels looked up in apt's lists.
    pub fn expand(&self) -> Result<Vec<Target>, TargetsError> {
        self.expand_with(&|series, suite| {
            crate::debian::archive::known_kernels_in(series, suite, &|_| {})
        })
    }

    /// [`Targets::expand`] with `known` in place of apt.
    pub fn expand_with(&self, known: &KnownKernels<'_>) -> Result<Vec<Target>, TargetsError> {
        let mut lists: HashMap<(String, Suite), Vec<KnownKernel>> = HashMap::new();
        let mut lookup = |name: &str, series: &str, suite: Suite| {
            let list = match lists.entry((series.to_string(), suite)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(known(series, suite).map_err(|source| TargetsError::Debian {
                        path: self.path.clone(),
                        name: name.to_string(),
                        source: Box::new(source),
                    })?)
                }
            };
            Ok::<_, TargetsError>(list.clone())
        };
        let mut out: Vec<Target> = Vec::new();
        for entry in &self.entries {
            let targets = match &entry.spec {
                Spec::Debian { release } => vec![self.debian(entry, release, &mut lookup)?],
                Spec::Tree { src, build } => vec![self.tree(entry, src, build)?],
                Spec::DebianAll {
                    series,
                    flavours,
                    suites,
                } => self.debian_all(entry, series, flavours, suites, &mut lookup)?,
            };
            for t in targets {
                self.check_unique(&out, &t)?;
                out.push(t);
            }
        }
        Ok(out)
    }

    /// One Debian release, which apt must know.
    fn debian(
        &self,
        entry: &Entry,
        release: &str,
        lookup: &mut Lookup<'_>,
    ) -> Result<Target, TargetsError> {
        let r = release::parse(release).map_err(|source| self.debian_error(entry, source))?;
        let known = lookup(&entry.name, &r.series, r.suite)?;
        let Some(k) = known.iter().find(|k| k.release == release) else {
            let source = DebianError::UnknownRelease {
                release: release.to_string(),
                series: r.series.clone(),
                suite: r.suite.name(),
                known: known.into_iter().map(|k| k.release).collect(),
            };
            return Err(self.debian_error(entry, source));
        };
        Ok(debian_target(entry.name.clone(), &entry.name, k))
    }

    /// Every kernel of `series` in `flavours` (and `suites`); none is an error.
    fn debian_all(
        &self,
        entry: &Entry,
        series: &str,
        flavours: &[String],
        suites: &[Suite],
        lookup: &mut Lookup<'_>,
    ) -> Result<Vec<Target>, TargetsError> {
        let suites: Vec<Suite> = if suites.is_empty() {
            suites_of(series)
        } else {
            suites.to_vec()
        };
        let mut out = Vec::new();
        for suite in suites {
            for k in lookup(&entry.name, series, suite)? {
                if flavours.contains(&k.flavour) {
                    let name = format!("{}-{}", entry.name, k.release);
                    out.push(debian_target(name, &entry.name, &k));
                }
            }
        }
        if out.is_empty() {
            return Err(TargetsError::Entry {
                path: self.path.clone(),
                name: entry.name.clone(),
                why: format!(
                    "apt knows no {series} kernel of flavour {} (has `apt-get update` run?)",
                    flavours.join(", ")
                ),
            });
        }
        Ok(out)
    }

    /// A built tree: a kernel source with its version, a build directory
    /// with a config.
    fn tree(&self, entry: &Entry, src: &Path, build: &Path) -> Result<Target, TargetsError> {
        let tree_error = |source| TargetsError::Tree {
            path: self.path.clone(),
            name: entry.name.clone(),
            source: Box::new(source),
        };
        crate::tree::check_source(src).map_err(tree_error)?;
        // Absolute, so that the target means the same from any directory.
        let src = &src.canonicalize().at(src)?;
        let build = &build.canonicalize().at(build)?;
        let config = build.join(".config");
        if !config.is_file() {
            return Err(tree_error(TreeError::MissingInBuild {
                path: config,
                what: "kernel config",
                build: build.to_path_buf(),
            }));
        }
        let makefile = src.join("Makefile");
        let text = crate::files::read_to_string(&makefile)?;
        let kernel_version = makefile_version(&text).ok_or_else(|| TargetsError::NoVersion {
            makefile: makefile.clone(),
            name: entry.name.clone(),
        })?;
        Ok(Target {
            name: entry.name.clone(),
            entry: entry.name.clone(),
            kernel_version,
            kernel: Kernel::Tree {
                src: src.to_path_buf(),
                build: build.to_path_buf(),
            },
        })
    }

    fn debian_error(&self, entry: &Entry, source: DebianError) -> TargetsError {
        TargetsError::Debian {
            path: self.path.clone(),
            name: entry.name.clone(),
            source: Box::new(source),
        }
    }

    /// A new target's name and kernel are not taken yet.
    fn check_unique(&self, so_far: &[Target], t: &Target) -> Result<(), TargetsError> {
        if so_far.iter().any(|o| o.name == t.name) {
            return Err(TargetsError::DuplicateName {
                path: self.path.clone(),
                name: t.name.clone(),
            });
        }
        if let Some(o) = so_far.iter().find(|o| o.kernel == t.kernel) {
            return Err(TargetsError::SameKernel {
                path: self.path.clone(),
                first: o.name.clone(),
                second: t.name.clone(),
                kernel: t.kernel.to_string(),
            });
        }
        Ok(())
    }
}

fn debian_target(name: String, entry: &str, k: &KnownKernel) -> Target {
    Target {
        name,
        entry: entry.to_string(),
        kernel_version: release::upstream_of(&k.version).to_string(),
        kernel: Kernel::Debian {
            release: k.release.clone(),
            package_version: k.version.clone(),
        },
    }
}

/// The Debian releases that ship kernels of `series`.
fn suites_of(series: &str) -> Vec<Suite> {
    match series {
        "6.1" => vec![Suite::Bookworm],
        _ => vec![Suite::Bookworm, Suite::Trixie],
    }
}

/// `VERSION.PATCHLEVEL.SUBLEVEL` from a kernel's top Makefile.
fn makefile_version(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            (k.trim() == key && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.to_string())
        })
    };
    Some(format!(
        "{}.{}.{}",
        value("VERSION")?,
        value("PATCHLEVEL")?,
        value("SUBLEVEL")?
    ))
}

/// Checks one entry; an error is (its name, what is wrong).
fn check_entry(raw: RawEntry, base: &Path) -> Result<Entry, (String, String)> {
    let name = raw.name;
    let fail = |why: String| (name.clone(), why);
    let name_ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if !name_ok {
        return Err(fail(
            "a name is letters, digits, '-', '_', '.' and '+' (not '.' first)".into(),
        ));
    }
    let given = [
        raw.debian.is_some(),
        raw.tree.is_some(),
        raw.debian_all.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        1 => {}
        0 => return Err(fail("give one of `debian`, `tree`, `debian-all`".into())),
        _ => {
            return Err(fail(
                "`debian`, `tree` and `debian-all` exclude each other: give one".into(),
            ));
        }
    }
    let spec = if let Some(release) = raw.debian {
        release::parse(&release).map_err(|e| fail(format!("debian = {e}")))?;
        Spec::Debian { release }
    } else if let Some(tree) = raw.tree {
        Spec::Tree {
            src: base.join(tree.src),
            build: base.join(tree.build),
        }
    } else {
        let all = raw.debian_all.expect("one of three");
        check_debian_all(all).map_err(fail)?
    };
    Ok(Entry { name, spec })
}

/// A `debian-all` table: a known series, known flavours, known suites.
fn check_debian_all(all: RawDebianAll) -> Result<Spec, String> {
    if !release::SERIES.contains(&all.series.as_str()) {
        return Err(format!(
            "debian-all.series {:?}: kpbuild knows {}",
            all.series,
            release::SERIES.join(", ")
        ));
    }
    if all.flavours.is_empty() {
        return Err("debian-all.flavours is empty".into());
    }
    for (i, f) in all.flavours.iter().enumerate() {
        if !release::FLAVOURS.contains(&f.as_str()) {
            return Err(format!(
                "debian-all.flavours: {f:?} is not one of {}",
                release::FLAVOURS.join(", ")
            ));
        }
        if all.flavours[..i].contains(f) {
            return Err(format!("debian-all.flavours: {f:?} is listed twice"));
        }
    }
    if all.suites.as_ref().is_some_and(Vec::is_empty) {
        return Err("debian-all.suites is empty (leave it out for every suite)".into());
    }
    let mut suites = Vec::new();
    for s in all.suites.unwrap_or_default() {
        let suite = suites_of(&all.series)
            .into_iter()
            .find(|x| x.tag() == s)
            .ok_or_else(|| {
                format!(
                    "debian-all.suites: {s:?} has no {} kernels (known: {})",
                    all.series,
                    suites_of(&all.series)
                        .iter()
                        .map(|x| x.tag())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if suites.contains(&suite) {
            return Err(format!("debian-all.suites: {s:?} is listed twice"));
        }
        suites.push(suite);
    }
    Ok(Spec::DebianAll {
        series: all.series,
        flavours: all.flavours,
        suites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::scratch::Scratch;

    fn kernel(release: &str, version: &str) -> KnownKernel {
        let r = release::parse(release).unwrap();
        KnownKernel {
            release: release.into(),
            version: version.into(),
            flavour: r.flavour,
            series: r.series,
            suite: r.suite.tag().into(),
        }
    }

    /// A stand-in for apt: two Debian 12 6.12 releases in two flavours, one
    /// Debian 13 release, Debian 12's 6.1.
    fn apt(series: &str, suite: Suite) -> Result<Vec<KnownKernel>, DebianError> {
        Ok(match (series, suite) {
            ("6.12", Suite::Bookworm) => vec![
                kernel("6.12.117+deb12-amd64", "6.12.117-1~deb12u1"),
                kernel("6.12.117+deb12-cloud-amd64", "6.12.117-1~deb12u1"),
                kernel("6.12.118+deb12-amd64", "6.12.118-1~deb12u1"),
                kernel("6.12.118+deb12-cloud-amd64", "6.12.118-1~deb12u1"),
            ],
            ("6.12", Suite::Trixie) => vec![kernel("6.12.120+deb13-cloud-amd64", "6.12.120-1")],
            ("6.1", Suite::Bookworm) => vec![kernel("6.1.0-57-cloud-amd64", "6.1.192-3")],
            _ => Vec::new(),
        })
    }

    fn read(s: &Scratch, toml: &str) -> Result<Targets, TargetsError> {
        Targets::read(&s.write("targets.toml", toml))
    }

    /// A fake built tree of `version` under the scratch directory.
    fn tree(s: &Scratch, name: &str, version: (u32, u32, u32)) {
        let (v, p, l) = version;
        s.write(
            &format!("{name}/src/Makefile"),
            format!("# SPDX\nVERSION = {v}\nPATCHLEVEL = {p}\nSUBLEVEL = {l}\nEXTRAVERSION =\nNAME = x\n"),
        );
        s.dir(&format!("{name}/src/kernel"));
        s.write(&format!("{name}/build/.config"), "CONFIG_LIVEPATCH=y\n");
    }

    #[test]
    fn every_kind_of_target_expands() {
        let s = Scratch::new("targets-expand");
        tree(&s, "linux", (6, 12, 117));
        let t = read(
            &s,
            r#"
            [[target]]
            name = "old"
            debian = "6.1.0-57-cloud-amd64"

            [[target]]
            name = "test"
            tree = { src = "linux/src", build = "linux/build" }

            [[target]]
            name = "cloud"
            debian-all = { series = "6.12", flavours = ["cloud-amd64"] }

            [[target]]
            name = "generic"
            debian-all = { series = "6.12", flavours = ["amd64"], suites = ["deb12"] }
            "#,
        )
        .unwrap();
        assert_eq!(t.entries.len(), 4);
        assert_eq!(
            t.entries[1].spec,
            Spec::Tree {
                src: s.path("linux/src"),
                build: s.path("linux/build")
            }
        );
        let all = t.expand_with(&apt).unwrap();
        let got: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|t| (t.name.as_str(), t.entry.as_str(), t.kernel_version.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("old", "old", "6.1.192"),
                ("test", "test", "6.12.117"),
                ("cloud-6.12.117+deb12-cloud-amd64", "cloud", "6.12.117"),
                ("cloud-6.12.118+deb12-cloud-amd64", "cloud", "6.12.118"),
                ("cloud-6.12.120+deb13-cloud-amd64", "cloud", "6.12.120"),
                ("generic-6.12.117+deb12-amd64", "generic", "6.12.117"),
                ("generic-6.12.118+deb12-amd64", "generic", "6.12.118"),
            ]
        );
        assert_eq!(
            all[0].kernel,
            Kernel::Debian {
                release: "6.1.0-57-cloud-amd64".into(),
                package_version: "6.1.192-3".into()
            }
        );
        let root = s.root().canonicalize().unwrap();
        assert_eq!(
            all[1].kernel,
            Kernel::Tree {
                src: root.join("linux/src"),
                build: root.join("linux/build")
            }
        );
    }

    /// The message of `read`'s error for `toml`, which must name the file.
    fn read_error(name: &str, toml: &str) -> String {
        let s = Scratch::new(&format!("targets-{name}"));
        let e = read(&s, toml).unwrap_err().to_string();
        let file = s.path("targets.toml").display().to_string();
        assert!(e.contains(&file), "{e}");
        e
    }

    #[test]
    fn unknown_keys_and_bad_entries_are_named() {
        let one = "[[target]]\nname = \"a\"\n";
        for (toml, needles) in [
            (
                format!("{one}debian = \"6.12.118+deb12-cloud-amd64\"\nflavor = 1\n"),
                &["flavor"][..],
            ),
            (
                format!("{one}tree = {{ src = \"s\", build = \"b\", vmlinux = \"v\" }}\n"),
                &["vmlinux"],
            ),
            (
                format!("{one}debian-all = {{ series = \"6.12\", flavors = [\"amd64\"] }}\n"),
                &["flavors"],
            ),
            ("targets = []\n".into(), &["targets"]),
            (format!("{one}debian = 6\n"), &["debian"]),
            (
                "[[target]]\ndebian = \"6.12.118+deb12-cloud-amd64\"\n".into(),
                &["name"],
            ),
            ("".into(), &["no [[target]]"]),
            ("[[target]\n".into(), &["line 1"]),
            (one.into(), &["\"a\"", "give one of"]),
            (
                format!(
                    "{one}debian = \"6.12.118+deb12-cloud-amd64\"\ntree = {{ src = \"s\", build = \"b\" }}\n"
                ),
                &["exclude each other"],
            ),
            (
                format!("{one}{one}debian = \"6.1.0-57-amd64\"\n").replacen(
                    "[[target]]\nname = \"a\"\n",
                    "[[target]]\nname = \"a\"\ndebian = \"6.1.0-57-cloud-amd64\"\n",
                    1,
                ),
                &["two targets named \"a\""],
            ),
            (
                "[[target]]\nname = \"a/b\"\ndebian = \"6.1.0-57-amd64\"\n".into(),
                &["\"a/b\"", "letters"],
            ),
            (
                format!("{one}debian = \"6.12.118+deb12-arm64\"\n"),
                &["6.12.118+deb12-arm64", "flavour"],
            ),
            (
                format!("{one}debian-all = {{ series = \"6.3\", flavours = [\"amd64\"] }}\n"),
                &["\"6.3\"", "6.1, 6.12"],
            ),
            (
                format!("{one}debian-all = {{ series = \"6.12\", flavours = [] }}\n"),
                &["flavours is empty"],
            ),
            (
                format!("{one}debian-all = {{ series = \"6.12\", flavours = [\"cloud\"] }}\n"),
                &["\"cloud\"", "cloud-amd64"],
            ),
            (
                format!(
                    "{one}debian-all = {{ series = \"6.12\", flavours = [\"amd64\", \"amd64\"] }}\n"
                ),
                &["twice"],
            ),
            (
                format!(
                    "{one}debian-all = {{ series = \"6.1\", flavours = [\"amd64\"], suites = [\"deb13\"] }}\n"
                ),
                &["\"deb13\"", "deb12"],
            ),
            (
                format!(
                    "{one}debian-all = {{ series = \"6.12\", flavours = [\"amd64\"], suites = [] }}\n"
                ),
                &["suites is empty"],
            ),
        ] {
            let e = read_error("bad", &toml);
            for n in needles {
                assert!(e.contains(n), "{toml:?}: {e:?} lacks {n:?}");
            }
        }
        let s = Scratch::new("targets-missing");
        let e = Targets::read(&s.path("none.toml")).unwrap_err();
        assert!(
            matches!(&e, TargetsError::File(f) if f.path == s.path("none.toml")),
            "{e}"
        );
    }

    /// The message of `expand_with(apt)`'s error, which must name the file.
    fn expand_error(s: &Scratch, toml: &str) -> String {
        let e = read(s, toml)
            .unwrap()
            .expand_with(&apt)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&s.path("targets.toml").display().to_string()),
            "{e}"
        );
        e
    }

    #[test]
    fn what_apt_or_the_tree_refutes_is_named() {
        let s = Scratch::new("targets-refuted");
        let e = expand_error(
            &s,
            "[[target]]\nname = \"x\"\ndebian = \"6.12.116+deb12-cloud-amd64\"\n",
        );
        assert!(
            e.contains("\"x\"") && e.contains("6.12.116+deb12-cloud-amd64"),
            "{e}"
        );
        assert!(
            e.contains("6.12.118+deb12-cloud-amd64"),
            "names the known: {e}"
        );
        let e = expand_error(
            &s,
            "[[target]]\nname = \"x\"\ndebian-all = { series = \"6.12\", flavours = [\"rt-amd64\"] }\n",
        );
        assert!(e.contains("no 6.12 kernel of flavour rt-amd64"), "{e}");
        let e = expand_error(
            &s,
            "[[target]]\nname = \"one\"\ndebian = \"6.12.118+deb12-amd64\"\n\
             [[target]]\nname = \"all\"\ndebian-all = { series = \"6.12\", flavours = [\"amd64\"] }\n",
        );
        assert!(
            e.contains(
                "\"one\" and \"all-6.12.118+deb12-amd64\" are both Debian 6.12.118+deb12-amd64"
            ),
            "{e}"
        );
        let e = expand_error(
            &s,
            "[[target]]\nname = \"all-6.12.117+deb12-amd64\"\ndebian = \"6.1.0-57-cloud-amd64\"\n\
             [[target]]\nname = \"all\"\ndebian-all = { series = \"6.12\", flavours = [\"amd64\"] }\n",
        );
        assert!(
            e.contains("two targets named \"all-6.12.117+deb12-amd64\""),
            "{e}"
        );
        tree(&s, "a", (6, 12, 117));
        let two = "[[target]]\nname = \"a\"\ntree = { src = \"a/src\", build = \"a/build\" }\n\
                   [[target]]\nname = \"b\"\ntree = { src = \"a/src\", build = \"a/build\" }\n";
        assert!(expand_error(&s, two).contains("\"a\" and \"b\" are both the tree built in"));
        let e = expand_error(
            &s,
            "[[target]]\nname = \"t\"\ntree = { src = \"a\", build = \"a/build\" }\n",
        );
        assert!(
            e.contains("not a kernel source tree") && e.contains("\"t\""),
            "{e}"
        );
        let e = expand_error(
            &s,
            "[[target]]\nname = \"t\"\ntree = { src = \"a/src\", build = \"a/src\" }\n",
        );
        assert!(e.contains(".config") && e.contains("\"t\""), "{e}");
        s.write("a/src/Makefile", "VERSION = 6\nPATCHLEVEL = 12\n");
        let e = read(
            &s,
            "[[target]]\nname = \"t\"\ntree = { src = \"a/src\", build = \"a/build\" }\n",
        )
        .unwrap()
        .expand_with(&apt)
        .unwrap_err();
        assert!(
            matches!(&e, TargetsError::NoVersion { makefile, name } if makefile.ends_with("a/src/Makefile") && name == "t"),
            "{e}"
        );
    }

    /// apt's own lists: a Debian 12 6.12 cloud set holds the issue's kernel.
    #[test]
    fn a_set_expands_through_apt() {
        let listed = crate::debian::archive::known_kernels_in("6.12", Suite::Bookworm, &|_| {})
            .ok()
            .filter(|k| k.iter().any(|k| k.release == "6.12.118+deb12-cloud-amd64"));
        if testbed::oracle::need(
            "apt lists naming 6.12.118+deb12-cloud-amd64",
            "run `apt-get update` as root on Debian 12",
            listed,
        )
        .is_none()
        {
            return;
        }
        let s = Scratch::new("targets-apt");
        let t = read(
            &s,
            "[[target]]\nname = \"cloud\"\n\
             debian-all = { series = \"6.12\", flavours = [\"cloud-amd64\"], suites = [\"deb12\"] }\n",
        )
        .unwrap();
        let all = t.expand().unwrap();
        let t = all
            .iter()
            .find(|t| t.name == "cloud-6.12.118+deb12-cloud-amd64")
            .expect("the newest cloud kernel");
        assert_eq!(t.kernel_version, "6.12.118");
        assert!(
            all.iter()
                .all(|t| t.name.ends_with("-cloud-amd64") && t.entry == "cloud")
        );
    }
}
