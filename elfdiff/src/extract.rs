//! Writes the output object: the included sections of the patched object,
//! the special-section entries of included functions, and undefined symbols
//! (named as in the original object) for everything referenced but not carried.

use crate::analyze::{Analysis, special_for};
use crate::compare::CodeBias;
use crate::input::{Input, SectionId, SymKind, SymbolId, bytes_name};
use crate::special::is_ignored;
use crate::{Error, Options, Reference};
use object::build::elf::{Builder, Relocation, Section, SectionData};
use object::build::{Bytes, Id};
use object::elf;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Output of the extraction.
pub struct Extracted {
    /// The object bytes.
    pub object: Vec<u8>,
    /// Symbols the object references without defining, with original names.
    pub references: Vec<Reference>,
    /// Referenced locals of another unit than the first of a composite
    /// object (`ld -r` of several units): (section, name) in the patched
    /// object. The target's locals are found in the group of the object's
    /// first `STT_FILE` only, so these cannot be resolved safely.
    pub other_unit_locals: Vec<(String, String)>,
}

/// Builds the output object from the patched input.
pub fn extract(o: &Input, p: Input, a: &Analysis, options: &Options) -> Result<Extracted, Error> {
    let mut keep: BTreeSet<SectionId> = a.include.clone();
    let special_data = kept_entries(&p, a, options, &mut keep);
    let new_relocs = rewrite_relocations(&p, &keep, &special_data)?;
    let referenced: HashSet<SymbolId> = new_relocs
        .values()
        .flatten()
        .map(|r| p.reloc_sym(r))
        .collect();
    let SymbolPlan {
        mut references,
        renames,
        delete,
    } = plan_symbols(o, &p, a, &keep, &referenced)?;
    let other_unit_locals = renames
        .iter()
        .filter(|(id, _)| is_other_unit_local(&p, *id))
        .map(|(id, _)| {
            let section = p.sym_section(*id).map(|s| p.section_name(s));
            (section.unwrap_or_default(), p.sym_name(*id))
        })
        .collect();
    let edits = Edits {
        renames: renames
            .into_iter()
            .map(|(id, n)| (p.builder_symbol(id), n))
            .collect(),
        delete_syms: delete.into_iter().map(|id| p.builder_symbol(id)).collect(),
        keep: keep.iter().map(|s| p.builder_section(*s).index()).collect(),
        special_data: special_data
            .into_iter()
            .map(|(k, v)| (p.builder_section(k).index(), v))
            .collect(),
        new_relocs: new_relocs
            .into_iter()
            .map(|(k, v)| (p.builder_section(k).index(), v))
            .collect(),
        referenced: referenced
            .iter()
            .map(|s| p.builder_symbol(*s).index())
            .collect(),
    };
    let label = p.label.clone();
    let mut b = p.into_builder();
    edits.apply(&mut b, &label)?;
    add_section_name_table(&mut b);
    let mut out = Vec::new();
    b.write(&mut out)
        .map_err(|e| internal(&label, format!("cannot write the output object: {e}")))?;
    references.sort_by(|x, y| x.name.cmp(&y.name));
    references.dedup_by(|x, y| x.name == y.name);
    Ok(Extracted {
        object: out,
        references,
        other_unit_locals,
    })
}

/// Whether a symbol is a local of a composite object's unit other than the
/// first (whose `STT_FILE` name the target's locals are looked up under).
pub fn is_other_unit_local(p: &Input, id: SymbolId) -> bool {
    p.is_local(id)
        && p.file_group(id)
            .is_some_and(|g| Some(g) != p.file_name.as_deref())
}

/// Gives the output its own section name table when the input had none:
/// clang's assembler names sections from the symbol string table
/// (`.strtab` serves both), which the builder reads as the symbol table's.
fn add_section_name_table(b: &mut Builder) {
    if b.sections
        .iter()
        .any(|s| matches!(s.data, SectionData::SectionString))
    {
        return;
    }
    let s = b.sections.add();
    s.name = bytes_name(".shstrtab");
    s.sh_type = elf::SHT_STRTAB;
    s.sh_addralign = 1;
    s.data = SectionData::SectionString;
}

/// An inconsistency found while extracting from the input `label`.
fn internal(label: &str, why: String) -> Error {
    Error::Internal {
        file: label.to_string(),
        why,
    }
}

/// The new contents of a special section: the kept entries' bytes and their
/// relocations, moved to the entries' new offsets.
type EntryData = HashMap<SectionId, (Vec<u8>, Vec<Relocation>)>;

/// Special sections: keeps the entries of included functions only, and adds
/// each special section that keeps any to `keep`.
fn kept_entries(
    p: &Input,
    a: &Analysis,
    options: &Options,
    keep: &mut BTreeSet<SectionId>,
) -> EntryData {
    let mut special_data: EntryData = HashMap::new();
    for (&sec, list) in &a.p_entries.all {
        let spec = special_for(p, sec, options).expect("entries come from special sections");
        if !spec.carried {
            // Regenerated by the module build (see `special`).
            continue;
        }
        let data = p.data(sec);
        let mut bytes = Vec::new();
        let mut relocs = Vec::new();
        for e in list {
            let Some((owner, _)) = e.owner else { continue };
            if !p.sym_section(owner).is_some_and(|s| keep.contains(&s)) {
                continue;
            }
            let new_offset = bytes.len() as u64;
            let end = e.offset + spec.entry_size as u64;
            let have = (end as usize).min(data.len());
            bytes.extend_from_slice(&data[e.offset as usize..have]);
            // A last entry written without its tail padding gets it back, so
            // the entries after it in the output stay aligned.
            bytes.resize(new_offset as usize + spec.entry_size, 0);
            for r in p
                .relocs(sec)
                .iter()
                .filter(|r| r.r_offset >= e.offset && r.r_offset < end)
            {
                let mut r = *r;
                r.r_offset = r.r_offset - e.offset + new_offset;
                relocs.push(r);
            }
        }
        if !bytes.is_empty() {
            keep.insert(sec);
            special_data.insert(sec, (bytes, relocs));
        }
    }
    special_data
}

/// The relocations of every kept section, rewritten so that references
/// through section symbols of dropped sections become references to the
/// named symbol.
fn rewrite_relocations(
    p: &Input,
    keep: &BTreeSet<SectionId>,
    special_data: &EntryData,
) -> Result<HashMap<SectionId, Vec<Relocation>>, Error> {
    let mut new_relocs: HashMap<SectionId, Vec<Relocation>> = HashMap::new();
    for &sec in keep {
        let (relocs, bias) = match special_data.get(&sec) {
            Some((_, r)) => (r.clone(), None),
            None => {
                let exec = p.section(sec).sh_flags.0 & elf::SHF_EXECINSTR.0 != 0;
                (
                    p.relocs(sec).to_vec(),
                    exec.then(|| CodeBias::new(p.data(sec), 0)),
                )
            }
        };
        let mut out = Vec::with_capacity(relocs.len());
        for mut r in relocs {
            let s = p.reloc_sym(&r);
            if let Some((tsec, base)) = p.section_relative(s)
                && !keep.contains(&tsec)
            {
                let b = bias
                    .as_ref()
                    .map_or(0, |c: &CodeBias| c.bias(r.r_offset, r.r_type));
                r.r_addend += base;
                let named = p.covering(tsec, r.r_addend + b).ok_or_else(|| {
                    internal(
                        &p.label,
                        format!(
                            "{}+{:#x} references {}{:+} which no symbol names",
                            p.section_name(sec),
                            r.r_offset,
                            p.section_name(tsec),
                            r.r_addend
                        ),
                    )
                })?;
                r.r_addend -= p.sym(named).st_value as i64;
                r.symbol = Some(p.builder_symbol(named));
            }
            out.push(r);
        }
        new_relocs.insert(sec, out);
    }
    Ok(new_relocs)
}

/// What becomes of the patched object's symbols that are not carried.
struct SymbolPlan {
    /// What the output references without defining, in symbol order.
    references: Vec<Reference>,
    /// Symbols that become undefined references, with their original name.
    renames: Vec<(SymbolId, String)>,
    /// Symbols the output drops.
    delete: Vec<SymbolId>,
}

/// Decides every symbol: carried ones stay, referenced undefined ones stay,
/// referenced ones of dropped sections become undefined references named as
/// in the original object, the rest go.
fn plan_symbols(
    o: &Input,
    p: &Input,
    a: &Analysis,
    keep: &BTreeSet<SectionId>,
    referenced: &HashSet<SymbolId>,
) -> Result<SymbolPlan, Error> {
    let mut plan = SymbolPlan {
        references: Vec::new(),
        renames: Vec::new(),
        delete: Vec::new(),
    };
    for id in p.symbols() {
        let s = p.sym(id);
        match p.kind(id) {
            SymKind::File => {}
            SymKind::Undefined => {
                if referenced.contains(&id) {
                    plan.references.push(Reference {
                        name: p.sym_name(id),
                        local: false,
                        function: s.st_type() == elf::STT_FUNC,
                    });
                } else {
                    plan.delete.push(id);
                }
            }
            _ => {
                let kept = p.sym_section(id).is_some_and(|sec| keep.contains(&sec));
                if kept {
                    continue;
                }
                if referenced.contains(&id) && p.kind(id) != SymKind::Section {
                    let name = match a.pairs.p2o.get(&id) {
                        Some(&oid) => o.sym_name(oid),
                        None => {
                            return Err(internal(
                                &p.label,
                                format!(
                                    "reference to {} which is neither carried nor in the original",
                                    p.sym_name(id)
                                ),
                            ));
                        }
                    };
                    plan.references.push(Reference {
                        name: name.clone(),
                        local: s.st_bind() == elf::STB_LOCAL,
                        function: s.st_type() == elf::STT_FUNC,
                    });
                    plan.renames.push((id, name));
                } else {
                    plan.delete.push(id);
                }
            }
        }
    }
    Ok(plan)
}

/// The changes to make to the patched object's builder, by builder index.
struct Edits {
    /// Symbols that become undefined references, with their new name.
    renames: Vec<(object::build::elf::SymbolId, String)>,
    /// Symbols to drop.
    delete_syms: Vec<object::build::elf::SymbolId>,
    /// Sections to keep.
    keep: HashSet<usize>,
    /// New contents of special sections.
    special_data: HashMap<usize, (Vec<u8>, Vec<Relocation>)>,
    /// New relocations of kept sections.
    new_relocs: HashMap<usize, Vec<Relocation>>,
    /// Symbols kept relocations reference.
    referenced: HashSet<usize>,
}

impl Edits {
    /// Applies the edits to the builder of the input `label`.
    fn apply(mut self, b: &mut Builder, label: &str) -> Result<(), Error> {
        for (id, name) in &self.renames {
            let s = b.symbols.get_mut(*id);
            s.name = bytes_name(name);
            s.section = None;
            s.st_shndx = elf::SHN_UNDEF;
            s.st_value = 0;
            s.st_size = 0;
            let ty = s.st_type();
            s.set_st_info(elf::STB_GLOBAL, ty);
            s.st_other = elf::SymbolOther(0);
        }
        for id in &self.delete_syms {
            b.symbols.get_mut(*id).delete = true;
        }
        self.edit_sections(b);
        self.drop_section_symbols(b, label)
    }

    /// Drops the sections not kept and gives kept ones their new contents
    /// and relocations.
    fn edit_sections(&mut self, b: &mut Builder) {
        let mut rela_of = HashMap::new();
        for s in b.sections.iter() {
            if s.sh_type == elf::SHT_RELA
                && let Some(t) = s.sh_info_section
            {
                rela_of.insert(t.index(), s.id());
            }
        }
        let ids: Vec<_> = b.sections.iter().map(|s| s.id()).collect();
        for id in ids {
            let sec = b.sections.get(id);
            let t = sec.sh_type;
            let delete = self.is_dropped(sec);
            let sec = b.sections.get_mut(id);
            if delete {
                sec.delete = true;
                continue;
            }
            if let Some((bytes, _)) = self.special_data.get(&id.index()) {
                sec.data = SectionData::Data(Bytes::from(bytes.clone()));
                sec.sh_size = bytes.len() as u64;
            }
            if t != elf::SHT_RELA
                && let Some(relocs) = self.new_relocs.remove(&id.index())
                && let Some(&rela) = rela_of.get(&id.index())
            {
                b.sections.get_mut(rela).data = SectionData::Relocation(relocs);
            }
        }
    }

    /// Whether the output drops a section: the symbol and string tables
    /// and `.note.GNU-stack` stay, groups and ignored non-allocated sections
    /// go, a RELA section follows the section it applies to, the rest stay
    /// when kept.
    fn is_dropped(&self, sec: &Section) -> bool {
        let name = String::from_utf8_lossy(&sec.name).into_owned();
        let t = sec.sh_type;
        let alloc = sec.sh_flags.0 & elf::SHF_ALLOC.0 != 0;
        if t == elf::SHT_SYMTAB || t == elf::SHT_STRTAB || t == elf::SHT_SYMTAB_SHNDX {
            false
        } else if t == elf::SHT_RELA {
            !sec.sh_info_section
                .is_some_and(|x| self.keep.contains(&x.index()))
        } else if t == elf::SHT_GROUP {
            true
        } else if name == ".note.GNU-stack" {
            false
        } else if !alloc && is_ignored(&name) {
            true
        } else {
            !self.keep.contains(&sec.id().index())
        }
    }

    /// Drops the section symbols of dropped sections; a kept relocation
    /// referencing one is an internal error.
    fn drop_section_symbols(&self, b: &mut Builder, label: &str) -> Result<(), Error> {
        let drop: Vec<_> = b
            .symbols
            .iter()
            .filter(|s| s.section.is_some_and(|sec| b.sections.get(sec).delete))
            .map(|s| s.id())
            .collect();
        for id in drop {
            if self.referenced.contains(&id.index()) {
                return Err(internal(
                    label,
                    format!("kept relocation references dropped symbol #{}", id.index()),
                ));
            }
            b.symbols.get_mut(id).delete = true;
        }
        Ok(())
    }
}
