//! # `STT_FILE` groups
//!
//! In a linked vmlinux or `.ko` the local symbols of each input object follow
//! its `STT_FILE` symbol; a group runs until the next `STT_FILE` symbol or the

use super::image::Image;
use super::{FileGroupId, SymbolId, TargetKind, TargetSymbols};
use crate::Error;
use object::elf;
use std::collections::{HashMap, HashSet};

/// How many symbols an error message lists per candidate group.
const SHOWN_PER_GROUP: usize = 3;

/// The name of the one group of a module without `STT_FILE` symbols.
const WHOLE_MODULE: &str = "(whole module: no STT_FILE symbols)";

/// One `STT_FILE` group.
#[derive(Debug)]
struct FileGroup {
    /// The `STT_FILE` symbol's name.
    name: String,
    /// The symtab index of the `STT_FILE` symbol.
    elf_index: usize,
    /// Every named local symbol of the group (visible or not), in symtab order.
    members: Vec<Member>,
}

/// A local symbol inside an `STT_FILE` group.
#[derive(Debug)]
struct Member {
    /// Its name.
    name: String,
    /// Its symtab index.
    elf_index: usize,
    /// Its id, when kallsyms-visible.
    id: Option<SymbolId>,
}

/// The `STT_FILE` groups of one target.
#[derive(Debug)]
pub(super) struct FileGroups {
    groups: Vec<FileGroup>,
    by_name: HashMap<String, Vec<FileGroupId>>,
    /// A module without `STT_FILE` symbols: one group holds all its locals.
    whole_module: bool,
}

impl FileGroups {
    /// The groups of `img` and the group of each symbol (by position in
    /// `img.syms`); `id_of` gives the visible symbols' ids.
    pub(super) fn build(
        img: &Image<'_>,
        kind: TargetKind,
        id_of: &[Option<SymbolId>],
    ) -> (Self, Vec<Option<FileGroupId>>) {
        let mut group_of: Vec<Option<FileGroupId>> = vec![None; img.syms.len()];
        let mut groups = stt_file_groups(img, id_of, &mut group_of);
        // A module shipped with `strip --strip-debug` (Debian's) has lost
        // its STT_FILE symbols: its locals then form one group, the whole
        // module, which is what the livepatch core searches anyway.
        let whole_module = kind == TargetKind::Module && groups.is_empty();
        if whole_module {
            groups.push(whole_module_group(img, id_of, &mut group_of));
        }
        let mut by_name: HashMap<String, Vec<FileGroupId>> = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            by_name
                .entry(g.name.clone())
                .or_default()
                .push(FileGroupId(i as u32));
        }
        let files = FileGroups {
            groups,
            by_name,
            whole_module,
        };
        (files, group_of)
    }
}

/// Each `STT_FILE` symbol and the named locals that follow it.
fn stt_file_groups(
    img: &Image<'_>,
    id_of: &[Option<SymbolId>],
    group_of: &mut [Option<FileGroupId>],
) -> Vec<FileGroup> {
    let mut groups: Vec<FileGroup> = Vec::new();
    let mut current: Option<FileGroupId> = None;
    for (at, s) in img.syms.iter().enumerate() {
        if s.typ == elf::STT_FILE {
            current = Some(FileGroupId(groups.len() as u32));
            groups.push(FileGroup {
                name: s.name.to_string(),
                elf_index: s.index,
                members: Vec::new(),
            });
            continue;
        }
        if s.bind != elf::STB_LOCAL {
            current = None;
            continue;
        }
        let Some(g) = current else { continue };
        if s.typ == elf::STT_SECTION || s.name.is_empty() {
            continue;
        }
        group_of[at] = Some(g);
        groups[g.0 as usize].members.push(Member {
            name: s.name.to_string(),
            elf_index: s.index,
            id: id_of[at],
        });
    }
    groups
}

/// The one group of a module without `STT_FILE` symbols: all its named locals.
fn whole_module_group(
    img: &Image<'_>,
    id_of: &[Option<SymbolId>],
    group_of: &mut [Option<FileGroupId>],
) -> FileGroup {
    let mut members = Vec::new();
    for (at, s) in img.syms.iter().enumerate() {
        if s.bind != elf::STB_LOCAL || s.typ == elf::STT_SECTION || s.name.is_empty() {
            continue;
        }
        group_of[at] = Some(FileGroupId(0));
        members.push(Member {
            name: s.name.to_string(),
            elf_index: s.index,
            id: id_of[at],
        });
    }
    FileGroup {
        name: WHOLE_MODULE.to_string(),
        elf_index: 0,
        members,
    }
}

impl TargetSymbols {
    /// The `STT_FILE` name of a group.
    pub fn group_name(&self, g: FileGroupId) -> &str {
        &self.files.groups[g.0 as usize].name
    }

    /// `STT_FILE` groups with that name (as in the `STT_FILE` symbol, e.g. "cmdline.c").
    pub fn file_groups(&self, file_name: &str) -> Vec<FileGroupId> {
        if self.files.whole_module {
            return vec![FileGroupId(0)];
        }
        self.files
            .by_name
            .get(file_name)
            .cloned()
            .unwrap_or_default()
    }

    /// The kallsyms-visible local symbols of a group, in symbol table order.
    pub fn group_locals(&self, g: FileGroupId) -> impl Iterator<Item = SymbolId> {
        self.files.groups[g.0 as usize]
            .members
            .iter()
            .filter_map(|m| m.id)
    }

    /// The one `STT_FILE` group named `file_name` whose local symbols (all named
    /// locals of the group, kallsyms-visible or not) include every name in
    /// `locals`. Zero or several matching groups is an error naming the file and
    /// the candidates (symtab index, first symbols and addresses) — never a guess.
    pub fn find_file_group(&self, file_name: &str, locals: &[&str]) -> Result<FileGroupId, Error> {
        let candidates = self.file_groups(file_name);
        let mut matching = Vec::new();
        let mut detail = Vec::new();
        for &g in &candidates {
            let names: HashSet<&str> = self.files.groups[g.0 as usize]
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            let missing: Vec<&str> = locals
                .iter()
                .copied()
                .filter(|l| !names.contains(l))
                .collect();
            if missing.is_empty() {
                matching.push(g);
            } else {
                detail.push(format!("{} lacks {missing:?}", self.describe_group(g)));
            }
        }
        let locals_owned = || -> Vec<String> { locals.iter().map(|s| s.to_string()).collect() };
        match matching.as_slice() {
            [g] => Ok(*g),
            [] => Err(Error::FileGroupNotFound {
                object: self.objname.clone(),
                file: file_name.to_string(),
                locals: locals_owned(),
                detail: if candidates.is_empty() {
                    "there is no STT_FILE symbol of that name".to_string()
                } else {
                    detail.join("; ")
                },
            }),
            several => Err(Error::AmbiguousFileGroup {
                object: self.objname.clone(),
                file: file_name.to_string(),
                locals: locals_owned(),
                candidates: several
                    .iter()
                    .map(|&g| self.describe_group(g))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// A local symbol `name` inside group `g` (error if absent, not
    /// kallsyms-visible, duplicated within the group, or with a load-order
    /// dependent module position).
    pub fn resolve_local(&self, g: FileGroupId, name: &str) -> Result<SymbolId, Error> {
        let group = &self.files.groups[g.0 as usize];
        let found: Vec<&Member> = group.members.iter().filter(|m| m.name == name).collect();
        let visible: Vec<SymbolId> = found.iter().filter_map(|m| m.id).collect();
        let group_label = || format!("STT_FILE symbol at symtab index {}", group.elf_index);
        match visible.as_slice() {
            [id] => self.checked_position(*id).map(|_| *id),
            [] => Err(Error::LocalNotFound {
                object: self.objname.clone(),
                file: group.name.clone(),
                group: group_label(),
                name: name.to_string(),
                detail: if let Some(m) = found.first() {
                    format!(
                        "; symtab index {} has that name but is not in kallsyms",
                        m.elf_index
                    )
                } else {
                    String::new()
                },
            }),
            several => Err(Error::DuplicateLocal {
                object: self.objname.clone(),
                file: group.name.clone(),
                group: group_label(),
                name: name.to_string(),
                candidates: self.describe_symbols(several),
            }),
        }
    }

    fn describe_group(&self, g: FileGroupId) -> String {
        let group = &self.files.groups[g.0 as usize];
        let shown: Vec<String> = self
            .group_locals(g)
            .take(SHOWN_PER_GROUP)
            .map(|id| {
                let s = self.symbol(id);
                format!("{}@{:#x}", s.name, s.address)
            })
            .collect();
        let total = group.members.len();
        let more = if total > shown.len() {
            format!(", {} more", total - shown.len())
        } else {
            String::new()
        };
        format!(
            "`{}` at symtab index {} ({}{more})",
            group.name,
            group.elf_index,
            if shown.is_empty() {
                "no kallsyms-visible locals".to_string()
            } else {
                shown.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::testutil::*;
    use object::SectionKind;
    use object::SymbolKind as OKind;

    #[test]
    fn stripped_module_locals_form_one_group() {
        // No STT_FILE symbols, as after `strip --strip-debug`.
        let mut e = Elf::new();
        let text = e.section(".text", SectionKind::Text, &[0; 0x100]);
        e.local("show", At::Sec(text), 0x10, OKind::Text);
        e.local("dup", At::Sec(text), 0x20, OKind::Text);
        e.local("dup", At::Sec(text), 0x30, OKind::Text);
        e.global("init_module", At::Sec(text), 0x40, OKind::Text);
        let t = load(TargetKind::Module, &e.bytes());
        let groups = t.file_groups("any_name.c");
        assert_eq!(groups.len(), 1);
        let g = t.find_file_group("any_name.c", &["show"]).unwrap();
        let id = t.resolve_local(g, "show").unwrap();
        assert_eq!(t.symbol(id).address, 0x10);
        assert!(matches!(
            t.resolve_local(g, "dup"),
            Err(Error::DuplicateLocal { .. })
        ));
        // A module with STT_FILE symbols keeps its file groups.
        let t = load(TargetKind::Module, &sample());
        assert!(t.file_groups("any_name.c").is_empty());
    }

    #[test]
    fn file_groups_and_locals() {
        let t = load(TargetKind::Vmlinux, &sample());
        let groups = t.file_groups("a.c");
        assert_eq!(
            t.find_file_group("a.c", &["count", "helper_a"]).unwrap(),
            groups[0]
        );
        assert_eq!(t.find_file_group("a.c", &["helper_b"]).unwrap(), groups[1]);
        // Invisible locals still identify a group.
        assert_eq!(t.find_file_group("a.c", &[".Lstray"]).unwrap(), groups[0]);
        let locals: Vec<&str> = t
            .group_locals(groups[0])
            .map(|id| t.symbol(id).name.as_str())
            .collect();
        assert_eq!(locals, ["count", "helper_a"]);
        assert_eq!(
            t.symbol(t.resolve_local(groups[1], "helper_b").unwrap())
                .file,
            Some(groups[1])
        );
        assert_eq!(t.group_name(groups[1]), "a.c");
        assert_eq!(t.file_groups("b.c").len(), 1);
        assert!(t.file_groups("c.c").is_empty());

        let err = t
            .find_file_group("a.c", &["count"])
            .unwrap_err()
            .to_string();
        assert!(matches!(
            t.find_file_group("a.c", &["count"]),
            Err(Error::AmbiguousFileGroup { .. })
        ));
        assert!(
            err.contains("helper_a@0x10") && err.contains("helper_b@0x40"),
            "{err}"
        );
        let err = t.find_file_group("a.c", &["count", "nope"]).unwrap_err();
        assert!(matches!(err, Error::FileGroupNotFound { .. }));
        assert!(err.to_string().contains("lacks [\"nope\"]"), "{err}");
        let err = t
            .find_file_group("c.c", &["count"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.c") && err.contains("no STT_FILE symbol"),
            "{err}"
        );

        let err = t.resolve_local(groups[0], "helper_b").unwrap_err();
        assert!(matches!(err, Error::LocalNotFound { .. }), "{err}");
        assert!(err.to_string().contains("helper_b") && err.to_string().contains("a.c"));
        let err = t
            .resolve_local(groups[0], ".Lstray")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in kallsyms"), "{err}");
        let b = t.find_file_group("b.c", &[]).unwrap();
        let err = t.resolve_local(b, "dup_local").unwrap_err();
        assert!(matches!(err, Error::DuplicateLocal { .. }), "{err}");
        assert!(err.to_string().contains("dup_local@0x90"), "{err}");
        // Same-named locals in one file still get distinct positions.
        let ids = t.named("dup_local");
        assert_eq!(
            ids.iter().map(|&i| t.position(i)).collect::<Vec<_>>(),
            [1, 2]
        );
    }
}
