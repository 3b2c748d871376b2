//! Patches that change a header. In a built tree each unit's `.cmd`
//! dependencies already say which units include it. Without one (tree-less
//! and Debian mode) the units come from the target's DWARF ([`dwarf`]: the
//! debug vmlinux and debug modules list every unit and where it is
//! linked), the candidates from an include scan of those units in the
//! prepared tree ([`scan`]), and after the candidates are compiled their
//! `.cmd` dependencies confirm them exactly as in a built tree.

pub mod dwarf;
pub mod scan;

use crate::files::FileError;
use crate::patch::SourcePatch;
use dwarf::{IndexedUnit, UnitIndex, UnitKind};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The default of `--max-header-users`: a build farm must not compile half
/// the kernel because a patch touched a widely included header.
pub const DEFAULT_MAX_USERS: usize = 64;

/// The linker script: preprocessed from a `.S`, it includes headers too.
const LINKER_SCRIPT: &str = "arch/x86/kernel/vmlinux.lds.S";

/// A header change that cannot be built or live patched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The vmlinux has no DWARF to list the units from.
    #[error(
        "{}: no DWARF (.debug_info); a patch that changes a header needs the target's debug vmlinux (on Debian: linux-image-RELEASE-dbg) to find the units that include it",
        vmlinux.display()
    )]
    NoDwarf {
        /// The vmlinux.
        vmlinux: PathBuf,
    },
    /// The `-dbg` package is not downloaded.
    #[error("{package}: not in {}; it lists the kernel's units for a header change", dir.display())]
    NoDebugPackage {
        /// The package.
        package: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The `-dbg` package has no debug modules.
    #[error("{}: no debug modules under {dir}", deb.display())]
    NoDebugModules {
        /// The package.
        deb: PathBuf,
        /// The directory inside.
        dir: String,
    },
    /// Too many units include the header.
    #[error(
        "{} is included by {count} units (more than --max-header-users {max}), e.g. {}; raise the limit to build them all",
        header.display(),
        sample.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    TooManyUsers {
        /// The header.
        header: PathBuf,
        /// How many units include it.
        count: usize,
        /// The limit.
        max: usize,
        /// A few of them.
        sample: Vec<PathBuf>,
    },
    /// Assembly or the linker script includes the header.
    #[error(
        "{} is included by {} ({what}): a change there cannot be live patched",
        header.display(),
        user.display()
    )]
    Assembly {
        /// The header.
        header: PathBuf,
        /// The assembly unit or linker script.
        user: PathBuf,
        /// `assembly` or `the linker script`.
        what: &'static str,
    },
    /// kbuild and the DWARF disagree on where a unit is linked.
    #[error(
        "{}: kbuild builds it into {kbuild}, but the target's DWARF has it in {}",
        object.display(),
        dwarf.join(", ")
    )]
    TargetMismatch {
        /// The unit's object.
        object: PathBuf,
        /// kbuild's answer (`vmlinux` or a module).
        kbuild: String,
        /// The DWARF's.
        dwarf: Vec<String>,
    },
    /// A cached index or graph is malformed.
    #[error("{}: not a kpbuild index (bad line {line:?}); delete it to rebuild it", path.display())]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// The line.
        line: String,
    },
    /// An ELF file could not be read.
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: object::Error,
    },
    /// DWARF could not be read.
    #[error("{}: DWARF: {source}", path.display())]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: gimli::Error,
    },
    /// The package's data archive could not be read.
    #[error("{}: reading its data archive: {source}", deb.display())]
    Archive {
        /// The package.
        deb: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `dpkg-deb` failed.
    #[error("{}: {source}", deb.display())]
    Package {
        /// The package.
        deb: PathBuf,
        /// The failed command.
        source: Box<crate::process::ProcessError>,
    },
    /// A reading thread panicked.
    #[error("the debug module reader panicked")]
    Panicked,
    /// A `.cmd` record could not be read.
    #[error(transparent)]
    Kbuild(#[from] crate::kbuild::KbuildError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
}

impl HeaderError {
    /// Whether the change is refused (exit 2) rather than an error.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            HeaderError::TooManyUsers { .. } | HeaderError::Assembly { .. }
        )
    }
}

/// The headers the patches change (new headers have no users yet).
pub fn changed_headers(patches: &[SourcePatch]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = patches
        .iter()
        .flat_map(|p| &p.touched)
        .filter(|t| !t.created && t.path.extension().is_some_and(|e| e == "h"))
        .map(|t| t.path.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Where the units of a target without a built tree are listed.
#[derive(Debug, Clone)]
pub enum UnitSource {
    /// A Debian release: its debug vmlinux and the debug modules of its
    /// `-dbg` package; the index is cached at `cache`.
    Debian {
        /// The debug vmlinux.
        vmlinux: PathBuf,
        /// `linux-image-RELEASE-dbg_*.deb`.
        deb: PathBuf,
        /// The release.
        release: String,
        /// The cached index.
        cache: PathBuf,
    },
    /// A tree-less target: its vmlinux's DWARF, and the uncompressed
    /// modules with DWARF under its modules directory.
    Files {
        /// The vmlinux.
        vmlinux: PathBuf,
        /// `/lib/modules/RELEASE`, or a directory of debug modules.
        modules: Option<PathBuf>,
    },
}

impl UnitSource {
    /// A Debian release's units, from its cache directory
    /// (`CACHE/debian/RELEASE`).
    pub fn debian(release: &str, vmlinux: &Path) -> Result<Self, HeaderError> {
        let base = kimage::cache_root().join("debian").join(release);
        let dir = base.join("debs");
        let package = format!("linux-image-{release}-dbg");
        let deb = crate::debian::downloaded_deb(&dir, &package)
            .ok_or(HeaderError::NoDebugPackage { package, dir })?;
        Ok(UnitSource::Debian {
            vmlinux: vmlinux.to_path_buf(),
            deb,
            release: release.to_string(),
            cache: base.join("units.idx"),
        })
    }

    /// Where the index is cached.
    fn cache(&self) -> Result<PathBuf, HeaderError> {
        match self {
            UnitSource::Debian { cache, .. } => Ok(cache.clone()),
            UnitSource::Files { vmlinux, modules } => {
                let mut h = Sha256::new();
                for p in std::iter::once(vmlinux).chain(modules) {
                    let meta = std::fs::metadata(p).map_err(|source| FileError {
                        path: p.clone(),
                        source,
                    })?;
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos());
                    h.update(format!("{}\0{}\0{mtime}\0", p.display(), meta.len()));
                }
                let key = kimage::hex(&h.finalize()[..8]);
                Ok(kimage::cache_root()
                    .join("unit-index")
                    .join(format!("{key}.idx")))
            }
        }
    }
}

/// The index of a target's units, cached (written atomically, so a cut
/// run leaves nothing that is read back); and whether it came from the
/// cache.
pub fn unit_index(
    source: &UnitSource,
    progress: &dyn Fn(&str),
) -> Result<(UnitIndex, bool), HeaderError> {
    let cache = source.cache()?;
    if cache.is_file() {
        let text = crate::files::read_to_string(&cache)?;
        return Ok((UnitIndex::from_text(&cache, &text)?, true));
    }
    let mut index = UnitIndex::default();
    match source {
        UnitSource::Debian {
            vmlinux,
            deb,
            release,
            ..
        } => {
            progress(&format!(
                "listing the units of {release} from the DWARF of its vmlinux and of the debug modules in {} (once)",
                deb.display()
            ));
            let (vm, modules) = std::thread::scope(|scope| {
                let vm = scope.spawn(|| dwarf::vmlinux_units(vmlinux));
                let mut modules = UnitIndex::default();
                let result = dwarf::debian_module_units(deb, release, &mut modules);
                (vm.join(), result.map(|_| modules))
            });
            index.add("vmlinux", vm.map_err(|_| HeaderError::Panicked)??);
            index.units.extend(modules?.units);
        }
        UnitSource::Files { vmlinux, modules } => {
            progress(&format!(
                "listing the units from the DWARF of {} (once)",
                vmlinux.display()
            ));
            index.add("vmlinux", dwarf::vmlinux_units(vmlinux)?);
            if let Some(m) = modules {
                dwarf::directory_module_units(m, &mut index)?;
            }
        }
    }
    index.finish();
    if let Some(dir) = cache.parent() {
        crate::files::create_dir_all(dir)?;
    }
    crate::files::write_atomic(&cache, index.to_text().as_bytes())?;
    Ok((index, false))
}

/// The units that may include the changed headers, from an include scan
/// of every unit of `index` in the prepared tree (`src` the source, `build`
/// the prepared directory, where the graph is cached), each paired with
/// the header(s) it may include. Refused: a header that assembly or the
/// linker script includes, or that more than `max` units include.
pub fn candidates(
    src: &Path,
    build: &Path,
    index: &UnitIndex,
    headers: &[PathBuf],
    max: usize,
) -> Result<(Vec<IndexedUnit>, bool), HeaderError> {
    let mut sources: Vec<&Path> = index.units.iter().map(|u| u.source.as_path()).collect();
    sources.dedup();
    let lds = Path::new(LINKER_SCRIPT);
    let located = |s: &Path| {
        let in_src = src.join(s);
        if in_src.is_file() {
            in_src
        } else {
            build.join(s)
        }
    };
    let mut roots: Vec<PathBuf> = sources.iter().map(|s| located(s)).collect();
    roots.push(src.join(lds));
    let dirs = scan::IncludeDirs::kernel(src, build);
    let (graph, cached) = scan::cached_graph(&roots, &dirs, &build.join(".kpbuild-includes"))?;
    let mut out: Vec<IndexedUnit> = Vec::new();
    for header in headers {
        let users: Vec<&Path> = graph
            .users(&src.join(header))
            .into_iter()
            .map(|i| sources.get(i).copied().unwrap_or(lds))
            .collect();
        let mut units: Vec<&IndexedUnit> = Vec::new();
        for user in &users {
            if *user == lds {
                return Err(assembly(header, user, "the linker script"));
            }
            let start = index.units.partition_point(|u| u.source.as_path() < *user);
            for u in index.units[start..]
                .iter()
                .take_while(|u| u.source == *user)
            {
                if u.kind == UnitKind::Asm {
                    return Err(assembly(header, user, "assembly"));
                }
                units.push(u);
            }
        }
        if units.len() > max {
            return Err(HeaderError::TooManyUsers {
                header: header.clone(),
                count: units.len(),
                max,
                sample: units.iter().take(5).map(|u| u.source.clone()).collect(),
            });
        }
        out.extend(units.into_iter().cloned());
    }
    out.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
    out.dedup();
    Ok((out, cached))
}

fn assembly(header: &Path, user: &Path, what: &'static str) -> HeaderError {
    HeaderError::Assembly {
        header: header.to_path_buf(),
        user: user.to_path_buf(),
        what,
    }
}

/// Whether a unit's `.cmd` dependencies name `header` (relative to `src`).
pub fn depends_on(unit: &crate::kbuild::UnitCommand, src: &Path, header: &Path) -> bool {
    let full = src.join(header);
    unit.deps.iter().any(|d| *d == full || d == header)
}

/// kbuild's target of a compiled unit (`vmlinux` or its module) must be
/// one the DWARF lists for its source.
pub fn check_target(
    object: &Path,
    kbuild: &str,
    source: &Path,
    index: &UnitIndex,
) -> Result<(), HeaderError> {
    let dwarf = index.targets_of(source);
    if dwarf.contains(&kbuild) {
        return Ok(());
    }
    Err(HeaderError::TargetMismatch {
        object: object.to_path_buf(),
        kbuild: kbuild.to_string(),
        dwarf: dwarf.into_iter().map(str::to_string).collect(),
    })
}

/// In a built tree: the changed headers' users among every `.cmd` record,
/// C or not. Refused: a header that an assembly unit or the linker script
/// depends on, or that more than `max` C units depend on.
pub fn check_built_tree(
    tree: &crate::tree::TargetTree,
    headers: &[PathBuf],
    max: usize,
) -> Result<(), HeaderError> {
    for header in headers {
        let users: Vec<&Path> = tree
            .units
            .iter()
            .filter(|u| {
                depends_on(u, &tree.src, header) && !u.object.to_string_lossy().ends_with(".mod.o")
            })
            .map(|u| u.object.as_path())
            .collect();
        if users.len() > max {
            return Err(HeaderError::TooManyUsers {
                header: header.clone(),
                count: users.len(),
                max,
                sample: users.iter().take(5).map(|p| p.to_path_buf()).collect(),
            });
        }
    }
    for unit in crate::kbuild::scan_asm_units(&tree.build)? {
        for header in headers {
            if depends_on(&unit, &tree.src, header) {
                let what = if unit.source.to_string_lossy().ends_with(".lds.S") {
                    "the linker script"
                } else {
                    "assembly"
                };
                return Err(assembly(header, &unit.source, what));
            }
        }
    }
    Ok(())
}

/// The lines of the cached file `path` after its first line, which must be
/// `magic`; the error names the file and the line that is wrong.
pub(crate) fn cached_lines<'t>(
    path: &Path,
    text: &'t str,
    magic: &str,
) -> Result<std::str::Lines<'t>, HeaderError> {
    let mut lines = text.lines();
    match lines.next() {
        Some(first) if first == magic => Ok(lines),
        first => Err(bad_index(path, first.unwrap_or(""))),
    }
}

/// A malformed cached index: `line` is the first wrong line.
pub(crate) fn bad_index(path: &Path, line: &str) -> HeaderError {
    HeaderError::BadIndex {
        path: path.to_path_buf(),
        line: line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(source: &str, target: &str, kind: UnitKind) -> IndexedUnit {
        IndexedUnit {
            source: PathBuf::from(source),
            target: target.into(),
            kind,
        }
    }

    #[test]
    fn candidates_are_limited_and_assembly_is_refused() {
        let dir = testbed::scratch::Scratch::new("header-candidates");
        dir.write("src/include/linux/a.h", "#define A 1\n");
        dir.write("src/include/linux/b.h", "#define B 1\n");
        dir.write("src/include/linux/c.h", "#define C 1\n");
        dir.write("src/fs/x/one.c", "#include <linux/a.h>\n");
        dir.write("src/fs/x/two.c", "#include <linux/a.h>\n");
        dir.write("src/arch/x86/entry/e.S", "#include <linux/b.h>\n");
        dir.write(
            "src/arch/x86/kernel/vmlinux.lds.S",
            "#include <linux/c.h>\n",
        );
        let (src, build) = (dir.path("src"), dir.dir("build"));
        let mut index = UnitIndex {
            units: vec![
                unit("fs/x/one.c", "vmlinux", UnitKind::C),
                unit("fs/x/two.c", "m_two", UnitKind::C),
                unit("arch/x86/entry/e.S", "vmlinux", UnitKind::Asm),
            ],
        };
        index.finish();
        let a = [PathBuf::from("include/linux/a.h")];
        let (found, cached) = candidates(&src, &build, &index, &a, 64).unwrap();
        assert!(!cached);
        let sources: Vec<&Path> = found.iter().map(|u| u.source.as_path()).collect();
        assert_eq!(sources, [Path::new("fs/x/one.c"), Path::new("fs/x/two.c")]);
        let e = candidates(&src, &build, &index, &a, 1).unwrap_err();
        assert!(e.is_refusal());
        let text = e.to_string();
        assert!(
            text.contains("included by 2 units") && text.contains("fs/x/one.c"),
            "{text}"
        );
        let b = [PathBuf::from("include/linux/b.h")];
        let e = candidates(&src, &build, &index, &b, 64).unwrap_err();
        assert!(e.is_refusal());
        assert!(
            e.to_string().contains("arch/x86/entry/e.S (assembly)"),
            "{e}"
        );
        let c = [PathBuf::from("include/linux/c.h")];
        let (e, cached) = match candidates(&src, &build, &index, &c, 64) {
            Err(e) => (e, true),
            Ok(_) => panic!("the linker script's header was not refused"),
        };
        assert!(cached);
        assert!(
            e.to_string().contains("vmlinux.lds.S (the linker script)"),
            "{e}"
        );
        check_target(
            Path::new("fs/x/two.o"),
            "m_two",
            Path::new("fs/x/two.c"),
            &index,
        )
        .unwrap();
        let e = check_target(
            Path::new("fs/x/two.o"),
            "vmlinux",
            Path::new("fs/x/two.c"),
            &index,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("builds it into vmlinux") && e.contains("m_two"),
            "{e}"
        );
    }
}
