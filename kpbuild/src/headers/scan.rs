//! Which units include a header: an include scan of every unit of the
//! target in the prepared tree. Each file's `#include` lines are read once
//! and resolved the way the kernel's compile resolves them (the including
//! file's directory for `"..."`, then the standard include directories of
//! the source and of the prepared build directory). Every `#include` counts,
//! whatever `#if` surrounds it: a superset of the users is safe, since the
//! compile and the diff decide what really changed. The graph is cached per
//! prepared tree; the users of a header are a walk back from it.

use super::HeaderError;
use crate::files::PathContext;
use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};

/// The include graph of a set of units.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IncludeGraph {
    /// Every file reached, absolute; the units come first, in their order.
    pub files: Vec<PathBuf>,
    /// For each file, the files it includes (indexes into `files`).
    pub includes: Vec<Vec<u32>>,
    /// For each file, the quoted includes that resolve nowhere (a unit's
    /// own `-I` directory, a generated file not made yet), by name.
    pub unresolved: Vec<Vec<String>>,
    /// How many of `files` are units.
    pub units: usize,
}

/// Where includes are looked for.
#[derive(Debug, Clone)]
pub struct IncludeDirs {
    /// The directories, in the compiler's order.
    pub dirs: Vec<PathBuf>,
    /// Files every unit includes (`-include`).
    pub forced: Vec<PathBuf>,
}

impl IncludeDirs {
    /// The x86 kernel's standard include directories for source `src` and
    /// kbuild output directory `build`, and its forced includes.
    pub fn kernel(src: &Path, build: &Path) -> Self {
        let dirs = [
            src.join("arch/x86/include"),
            build.join("arch/x86/include/generated"),
            src.join("include"),
            build.join("include"),
            src.join("arch/x86/include/uapi"),
            build.join("arch/x86/include/generated/uapi"),
            src.join("include/uapi"),
            build.join("include/generated/uapi"),
        ];
        let forced = ["compiler-version.h", "kconfig.h", "compiler_types.h"]
            .iter()
            .map(|f| src.join("include/linux").join(f))
            .collect();
        IncludeDirs {
            dirs: dirs.to_vec(),
            forced,
        }
    }
}

/// One `#include` line: the name and whether it was quoted.
fn include_of(line: &str) -> Option<(&str, bool)> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let rest = rest
        .strip_prefix("include_next")
        .or_else(|| rest.strip_prefix("include"))?
        .trim_start();
    let (close, quoted) = match rest.chars().next()? {
        '"' => ('"', true),
        '<' => ('>', false),
        _ => return None, // a macro: its expansion is included directly elsewhere
    };
    let end = rest[1..].find(close)?;
    Some((&rest[1..1 + end], quoted))
}

/// `path` with `.` and `..` folded lexically (kernel sources use
/// `#include "../foo.h"`; one file must have one name).
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Builds the graph, reading each file once.
struct Builder<'a> {
    dirs: &'a IncludeDirs,
    graph: IncludeGraph,
    ids: HashMap<PathBuf, u32>,
    /// Angle includes resolve the same from every file.
    angle: HashMap<String, Option<PathBuf>>,
    queue: VecDeque<u32>,
}

impl Builder<'_> {
    fn id(&mut self, path: PathBuf) -> u32 {
        if let Some(&id) = self.ids.get(&path) {
            return id;
        }
        let id = self.graph.files.len() as u32;
        self.ids.insert(path.clone(), id);
        self.graph.files.push(path);
        self.graph.includes.push(Vec::new());
        self.graph.unresolved.push(Vec::new());
        self.queue.push_back(id);
        id
    }

    fn resolve(&mut self, from: &Path, name: &str, quoted: bool) -> Option<PathBuf> {
        if quoted {
            let here = normal(&from.parent().unwrap_or(Path::new("/")).join(name));
            if here.is_file() {
                return Some(here);
            }
        }
        if let Some(found) = self.angle.get(name) {
            return found.clone();
        }
        let found = self
            .dirs
            .dirs
            .iter()
            .map(|d| normal(&d.join(name)))
            .find(|p| p.is_file());
        self.angle.insert(name.to_string(), found.clone());
        found
    }

    fn scan(&mut self, id: u32) -> Result<(), HeaderError> {
        let path = self.graph.files[id as usize].clone();
        // A unit's source that this config never generated is not an error:
        // it cannot include anything.
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut edges = Vec::new();
        if (id as usize) < self.graph.units {
            for forced in self.dirs.forced.clone() {
                edges.push(self.id(forced));
            }
        }
        for line in text.lines().filter(|l| l.trim_start().starts_with('#')) {
            let Some((name, quoted)) = include_of(line) else {
                continue;
            };
            match self.resolve(&path, name, quoted) {
                Some(found) => edges.push(self.id(found)),
                None if quoted => self.graph.unresolved[id as usize].push(name.to_string()),
                None => {}
            }
        }
        edges.sort_unstable();
        edges.dedup();
        self.graph.includes[id as usize] = edges;
        Ok(())
    }
}

impl IncludeGraph {
    /// Scans `units` (absolute paths) and everything they include.
    pub fn scan(units: &[PathBuf], dirs: &IncludeDirs) -> Result<Self, HeaderError> {
        let mut b = Builder {
            dirs,
            graph: IncludeGraph {
                units: units.len(),
                ..Default::default()
            },
            ids: HashMap::new(),
            angle: HashMap::new(),
            queue: VecDeque::new(),
        };
        for u in units {
            // Units are distinct by construction; a duplicate keeps its first id.
            b.id(u.clone());
        }
        b.graph.units = b.graph.files.len();
        while let Some(id) = b.queue.pop_front() {
            b.scan(id)?;
        }
        Ok(b.graph)
    }

    /// The units (indexes below [`IncludeGraph::units`]) that include
    /// `header` (absolute), directly or not, or name a quoted include of
    /// its file name that resolved nowhere.
    pub fn users(&self, header: &Path) -> Vec<usize> {
        let name = header.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mut included_by: Vec<Vec<u32>> = vec![Vec::new(); self.files.len()];
        for (from, tos) in self.includes.iter().enumerate() {
            for &to in tos {
                included_by[to as usize].push(from as u32);
            }
        }
        let mut seen = vec![false; self.files.len()];
        let mut queue: VecDeque<usize> = VecDeque::new();
        let start = self.files.iter().position(|f| f == header);
        let by_name = self
            .unresolved
            .iter()
            .enumerate()
            .filter(|(_, names)| names.iter().any(|n| n.rsplit('/').next() == Some(name)))
            .map(|(i, _)| i);
        for i in start.into_iter().chain(by_name) {
            if !seen[i] {
                seen[i] = true;
                queue.push_back(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            for &from in &included_by[i] {
                if !seen[from as usize] {
                    seen[from as usize] = true;
                    queue.push_back(from as usize);
                }
            }
        }
        (0..self.units).filter(|&i| seen[i]).collect()
    }

    /// The graph as text: one line a file, `PATH\tINCLUDES\tUNRESOLVED`,
    /// after a `units N` line.
    pub fn to_text(&self) -> String {
        let mut out = format!("kpbuild-includes 1\nunits {}\n", self.units);
        for (i, f) in self.files.iter().enumerate() {
            let edges: Vec<String> = self.includes[i].iter().map(u32::to_string).collect();
            out.push_str(&format!(
                "{}\t{}\t{}\n",
                f.display(),
                edges.join(","),
                self.unresolved[i].join(",")
            ));
        }
        out
    }

    /// Reads [`IncludeGraph::to_text`]'s format (`path` for messages).
    pub fn from_text(path: &Path, text: &str) -> Result<Self, HeaderError> {
        let bad = |line: &str| super::bad_index(path, line);
        let mut lines = super::cached_lines(path, text, "kpbuild-includes 1")?;
        let first = lines.next().unwrap_or("");
        let units = first
            .strip_prefix("units ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(first))?;
        let mut g = IncludeGraph {
            units,
            ..Default::default()
        };
        for line in lines {
            let mut parts = line.split('\t');
            let (Some(file), Some(edges), Some(unresolved)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(line));
            };
            let edges = edges
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| e.parse::<u32>().map_err(|_| bad(line)))
                .collect::<Result<Vec<_>, _>>()?;
            g.files.push(PathBuf::from(file));
            g.includes.push(edges);
            g.unresolved.push(
                unresolved
                    .split(',')
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        let n = g.files.len() as u32;
        if g.units > g.files.len() || g.includes.iter().flatten().any(|&e| e >= n) {
            return Err(bad("an edge to no file"));
        }
        Ok(g)
    }
}

/// The include graph of `units` in the prepared tree, from `cache` when a
/// scan of the same units made it, else scanned and cached (atomically:
/// only a complete graph is ever read back). Also says whether it was
/// cached.
pub fn cached_graph(
    units: &[PathBuf],
    dirs: &IncludeDirs,
    cache: &Path,
) -> Result<(IncludeGraph, bool), HeaderError> {
    if cache.is_file() {
        let text = crate::files::read_to_string(cache)?;
        let graph = IncludeGraph::from_text(cache, &text)?;
        if graph.units == units.len() && graph.files[..graph.units] == *units {
            return Ok((graph, true));
        }
    }
    let graph = IncludeGraph::scan(units, dirs)?;
    if let Some(dir) = cache.parent() {
        crate::files::create_dir_all(dir)?;
    }
    crate::files::write_atomic(cache, graph.to_text().as_bytes())?;
    std::fs::metadata(cache).at(cache)?;
    Ok((graph, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_lines() {
        assert_eq!(
            include_of("#include <linux/fs.h>"),
            Some(("linux/fs.h", false))
        );
        assert_eq!(
            include_of("  # include \"internal.h\" /* x */"),
            Some(("internal.h", true))
        );
        assert_eq!(
            include_of("#include_next <limits.h>"),
            Some(("limits.h", false))
        );
        assert_eq!(include_of("#include TRACE_INCLUDE(x)"), None);
        assert_eq!(include_of("#define X"), None);
        assert_eq!(
            normal(Path::new("/a/b/../c/./d.h")),
            PathBuf::from("/a/c/d.h")
        );
    }

    #[test]
    fn users_through_headers_and_unresolved_names() {
        let dir = testbed::scratch::Scratch::new("include-scan");
        let root = dir.root();
        let write = |p: &str, text: &str| {
            dir.write(p, text);
        };
        write("src/include/linux/a.h", "#include <linux/b.h>\n");
        write("src/include/linux/b.h", "#define B 1\n");
        write("src/include/linux/kconfig.h", "");
        write("src/fs/x/one.c", "#if 0\n#include <linux/a.h>\n#endif\n");
        write("src/fs/x/two.c", "#include \"local.h\"\n#include \"b.h\"\n");
        write("src/fs/x/local.h", "#include \"../../include/linux/b.h\"\n");
        write("src/fs/y/three.c", "#include \"missing/b.h\"\n");
        write("src/fs/y/four.c", "#include <linux/kconfig.h>\n");
        let src = root.join("src");
        let dirs = IncludeDirs::kernel(&src, &root.join("build"));
        let units: Vec<PathBuf> = ["fs/x/one.c", "fs/x/two.c", "fs/y/three.c", "fs/y/four.c"]
            .iter()
            .map(|u| src.join(u))
            .collect();
        let cache = root.join("build/.kpbuild-includes");
        let (graph, cached) = cached_graph(&units, &dirs, &cache).unwrap();
        assert!(!cached);
        assert_eq!(graph.users(&src.join("include/linux/b.h")), [0, 1, 2]);
        assert_eq!(graph.users(&src.join("include/linux/a.h")), [0]);
        // kconfig.h is forced into every unit.
        assert_eq!(
            graph.users(&src.join("include/linux/kconfig.h")),
            [0, 1, 2, 3]
        );
        let (again, cached) = cached_graph(&units, &dirs, &cache).unwrap();
        assert!(cached);
        assert_eq!(again, graph);
        let e = IncludeGraph::from_text(&cache, "kpbuild-includes 1\nunits 1\nx\t9\t\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".kpbuild-includes"), "{e}");
    }
}
