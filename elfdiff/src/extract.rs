//! Writes the output object: the included sections of the patched object,
//! the special-section entries of included functions, and undefined symbols
//! (named as in the original object) for everything referenced but not carried.

use crate::analyze::{Analysis, special_for};
use crate::compare::CodeBias;
use crate::input::{Input, SectionId, SymKind, SymbolId, bytes_name};
use crate::special::is_ignored;
use crate::{Error, Options, Reference};
use object::build::elf::{Relocation, SectionData};
use object::build::{Bytes, Id};
use object::elf;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Output of the extraction.
pub struct Extracted {
    /// The object bytes.
    pub object: Vec<u8>,
    /// Symbols the object references without defining, with original names.
    pub references: Vec<Reference>,
}

/// Builds the output object from the patched input.
pub fn extract(o: &Input, p: Input, a: &Analysis, options: &Options) -> Result<Extracted, Error> {
    let label = p.label.clone();
    let internal = |why: String| Error::Internal {
        file: label.clone(),
        why,
    };
    let mut keep: BTreeSet<SectionId> = a.include.clone();

    // Special sections: keep the entries of included functions only.
    let mut special_data: HashMap<SectionId, (Vec<u8>, Vec<Relocation>)> = HashMap::new();
    for (&sec, list) in &a.p_entries.all {
        let spec = special_for(&p, sec, options).expect("entries come from special sections");
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
            bytes.extend_from_slice(&data[e.offset as usize..end as usize]);
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

    // Rewrite relocations of kept sections: references through section
    // symbols of dropped sections become references to the named symbol.
    let mut new_relocs: HashMap<SectionId, Vec<Relocation>> = HashMap::new();
    for &sec in &keep {
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
                    internal(format!(
                        "{}+{:#x} references {}{:+} which no symbol names",
                        p.section_name(sec),
                        r.r_offset,
                        p.section_name(tsec),
                        r.r_addend
                    ))
                })?;
                r.r_addend -= p.sym(named).st_value as i64;
                r.symbol = Some(p.builder_symbol(named));
            }
            out.push(r);
        }
        new_relocs.insert(sec, out);
    }
    let referenced: HashSet<SymbolId> = new_relocs
        .values()
        .flatten()
        .map(|r| p.reloc_sym(r))
        .collect();

    // Decide every symbol.
    let mut references = Vec::new();
    let mut renames: Vec<(SymbolId, String, bool)> = Vec::new();
    let mut delete_syms: Vec<SymbolId> = Vec::new();
    for id in p.symbols() {
        let s = p.sym(id);
        match p.kind(id) {
            SymKind::File => {}
            SymKind::Undefined => {
                if referenced.contains(&id) {
                    references.push(Reference {
                        name: p.sym_name(id),
                        local: false,
                        function: s.st_type() == elf::STT_FUNC,
                    });
                } else {
                    delete_syms.push(id);
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
                            return Err(internal(format!(
                                "reference to {} which is neither carried nor in the original",
                                p.sym_name(id)
                            )));
                        }
                    };
                    let local = s.st_bind() == elf::STB_LOCAL;
                    references.push(Reference {
                        name: name.clone(),
                        local,
                        function: s.st_type() == elf::STT_FUNC,
                    });
                    renames.push((id, name, local));
                } else {
                    delete_syms.push(id);
                }
            }
        }
    }

    let renames: Vec<_> = renames
        .into_iter()
        .map(|(id, n, l)| (p.builder_symbol(id), n, l))
        .collect();
    let delete_syms: Vec<_> = delete_syms
        .into_iter()
        .map(|id| p.builder_symbol(id))
        .collect();
    let keep_b: HashSet<usize> = keep.iter().map(|s| p.builder_section(*s).index()).collect();
    let special_data: HashMap<usize, (Vec<u8>, Vec<Relocation>)> = special_data
        .into_iter()
        .map(|(k, v)| (p.builder_section(k).index(), v))
        .collect();
    let mut new_relocs: HashMap<usize, Vec<Relocation>> = new_relocs
        .into_iter()
        .map(|(k, v)| (p.builder_section(k).index(), v))
        .collect();
    let referenced_b: HashSet<usize> = referenced
        .iter()
        .map(|s| p.builder_symbol(*s).index())
        .collect();
    let mut b = p.into_builder();
    for (id, name, _) in renames {
        let s = b.symbols.get_mut(id);
        s.name = bytes_name(&name);
        s.section = None;
        s.st_shndx = elf::SHN_UNDEF;
        s.st_value = 0;
        s.st_size = 0;
        let ty = s.st_type();
        s.set_st_info(elf::STB_GLOBAL, ty);
        s.st_other = elf::SymbolOther(0);
    }
    for id in delete_syms {
        b.symbols.get_mut(id).delete = true;
    }
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
        let name = String::from_utf8_lossy(&sec.name).into_owned();
        let t = sec.sh_type;
        let alloc = sec.sh_flags.0 & elf::SHF_ALLOC.0 != 0;
        let delete = if t == elf::SHT_SYMTAB || t == elf::SHT_STRTAB || t == elf::SHT_SYMTAB_SHNDX {
            false
        } else if t == elf::SHT_RELA {
            !sec.sh_info_section
                .is_some_and(|x| keep_b.contains(&x.index()))
        } else if t == elf::SHT_GROUP {
            true
        } else if name == ".note.GNU-stack" {
            false
        } else if !alloc && is_ignored(&name) {
            true
        } else {
            !keep_b.contains(&id.index())
        };
        let sec = b.sections.get_mut(id);
        if delete {
            sec.delete = true;
            continue;
        }
        if let Some((bytes, _)) = special_data.get(&id.index()) {
            sec.data = SectionData::Data(Bytes::from(bytes.clone()));
            sec.sh_size = bytes.len() as u64;
        }
        if t != elf::SHT_RELA
            && let Some(relocs) = new_relocs.remove(&id.index())
            && let Some(&rela) = rela_of.get(&id.index())
        {
            b.sections.get_mut(rela).data = SectionData::Relocation(relocs);
        }
    }
    // Section symbols of dropped sections.
    let drop: Vec<_> = b
        .symbols
        .iter()
        .filter(|s| s.section.is_some_and(|sec| b.sections.get(sec).delete))
        .map(|s| s.id())
        .collect();
    for id in drop {
        if referenced_b.contains(&id.index()) {
            return Err(internal(format!(
                "kept relocation references dropped symbol #{}",
                id.index()
            )));
        }
        b.symbols.get_mut(id).delete = true;
    }
    let mut out = Vec::new();
    b.write(&mut out)
        .map_err(|e| internal(format!("cannot write the output object: {e}")))?;
    references.sort_by(|x, y| x.name.cmp(&y.name));
    references.dedup_by(|x, y| x.name == y.name);
    Ok(Extracted {
        object: out,
        references,
    })
}
