//! Pre-match: before a module is written, the original code kpbuild compiled
//! must be the code the target runs. Every function of an original object
//! (compiled with `-ffunction-sections`) is compared with the same symbol's
//! bytes in the linked target (vmlinux, or a module's `.ko`), outside the
//! bytes the link or the build legitimately changes:
//!
//! - relocation fields of the original object;
//! - the `__fentry__` call (the opcode byte too: vmlinux has it as a NOP);
//! - `__jump_table` code sites (`e9 rel32` / `eb rel8` in the object may be
//!   `0f 1f 44 00 00` / `66 90` in vmlinux);
//! - a sealed `endbr64` at offset 0 (`CONFIG_X86_KERNEL_IBT`: objtool turns
//!   the `endbr64` of functions not address-taken into a 4-byte NOP).
//!
//! A difference means the source, the config or the compiler is not the one
//! the target was built from; the patch would be built against other code.

use crate::files::FileError;
use crate::tree::{TargetTree, TreeError};
use elfdiff::input::{Input, SymKind, reloc_width};
use object::read::elf::ElfFile64;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use serde::Serialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

/// Why the pre-match stopped a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrematchError {
    /// An original function differs from the target's.
    #[error("pre-match failed for {label} in {}: {mismatch}", target.display())]
    Mismatch {
        /// The unit's object.
        label: String,
        /// The target's file.
        target: PathBuf,
        /// Where they differ.
        mismatch: Mismatch,
    },
    /// A function the module replaces cannot be compared.
    #[error("pre-match: {label}: {unmatched}")]
    Unmatched {
        /// The unit's object.
        label: String,
        /// The function and why.
        unmatched: Unmatched,
    },
    /// The target's file is not an ELF file.
    #[error("{}: {source}", path.display())]
    Target {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: object::Error,
    },
    /// An original object could not be read.
    #[error(transparent)]
    Object(#[from] elfdiff::Error),
    /// The target object has no file.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A function the module replaces that cannot be pre-matched.
#[derive(Debug, thiserror::Error)]
#[error("{function}: replaced, but cannot be pre-matched: {why}")]
pub struct Unmatched {
    /// The function.
    pub function: String,
    /// Why it cannot be compared.
    pub why: &'static str,
}

/// Why [`check`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A function differs.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// A replaced function cannot be compared.
    #[error(transparent)]
    Unmatched(#[from] Unmatched),
}

/// `endbr64`.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
/// 4-byte sequences a sealed `endbr64` may become.
const SEALED_ENDBR: &[[u8; 4]] = &[
    [0x0f, 0x1f, 0x40, 0x00],
    [0x66, 0x0f, 0x1f, 0x00],
    [0x0f, 0x1f, 0x40, 0xd6],
];

/// A function's bytes in an original object and the ranges not compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionImage {
    /// The function's name.
    pub name: String,
    /// Whether it is a weak definition (may be overridden in the target).
    pub weak: bool,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Byte ranges (relative to the function) excluded from the comparison.
    pub masked: Vec<Range<usize>>,
}

impl FunctionImage {
    fn is_masked(&self, offset: usize) -> bool {
        self.masked.iter().any(|r| r.contains(&offset))
    }

    /// The first offset where `target` differs outside the masked ranges,
    /// or `None` when equal.
    ///
    /// The comparison walks both instruction by instruction: our objects are
    /// compiled with one section per function, so a branch to another
    /// function is a `rel32` jump with a relocation, where the linked code,
    /// assembled in one section, may hold the short `rel8` form the
    /// assembler relaxed it to. A relocated branch therefore matches a branch
    /// of the same kind in either size. Every later instruction then sits at
    /// another offset, so a branch inside the function matches a branch of
    /// the same kind, of either size, to the same instruction (counted from
    /// the function's start), not the same displacement. Every other
    /// instruction must have the same length and bytes outside the masked
    /// ranges.
    pub fn first_difference(&self, target: &[u8]) -> Option<usize> {
        use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
        let sealed = self.bytes.len() >= 4
            && target.len() >= 4
            && self.bytes[..4] == ENDBR64
            && SEALED_ENDBR.iter().any(|s| target[..4] == s[..]);
        let start = if sealed { 4 } else { 0 };
        let decode = |bytes: &[u8]| -> Vec<Instruction> {
            Decoder::with_ip(64, &bytes[start..], start as u64, DecoderOptions::NONE)
                .into_iter()
                .collect()
        };
        let (ours, theirs) = (decode(&self.bytes), decode(target));
        // jmp and jcc (the relaxable branches): a near-branch operand, not a call.
        let branch = |x: &Instruction| {
            x.op_count() == 1
                && x.op0_kind() == OpKind::NearBranch64
                && x.mnemonic() != Mnemonic::Call
        };
        // The instruction a branch lands on, as an index into `code`; the
        // function's end counts as one past the last instruction.
        let landing = |code: &[Instruction], len: usize, x: &Instruction| -> Option<usize> {
            let to = x.near_branch_target();
            if to == len as u64 {
                return Some(code.len());
            }
            code.binary_search_by_key(&to, |i| i.ip()).ok()
        };
        for (k, a) in ours.iter().enumerate() {
            let Some(b) = theirs.get(k) else {
                return Some(a.ip() as usize);
            };
            let (oa, ob) = (a.ip() as usize, b.ip() as usize);
            let (la, lb) = (a.len(), b.len());
            let relocated = (oa..oa + la).any(|i| self.is_masked(i));
            let same_branch = branch(a) && branch(b) && a.mnemonic() == b.mnemonic();
            if relocated && same_branch {
                continue;
            }
            if same_branch && let Some(to) = landing(&ours, self.bytes.len(), a) {
                if landing(&theirs, target.len(), b) == Some(to) {
                    continue;
                }
                return Some(oa);
            }
            if la != lb {
                return Some(oa);
            }
            let theirs_bytes = &target[ob..ob + lb];
            if let Some(i) =
                (0..la).find(|&i| !self.is_masked(oa + i) && self.bytes[oa + i] != theirs_bytes[i])
            {
                return Some(oa + i);
            }
        }
        (theirs.len() > ours.len()).then_some(self.bytes.len())
    }

    /// The first offset that is compared (not masked) at or after `from`.
    pub fn first_unmasked(&self, from: usize) -> Option<usize> {
        (from..self.bytes.len()).find(|&i| !self.is_masked(i))
    }
}

/// Every defined function of an original object with its masked ranges.
pub fn function_images(label: &str, object: &[u8]) -> Result<Vec<FunctionImage>, elfdiff::Error> {
    let object = elfdiff::input::readable(object);
    let input = Input::parse(label, &object)?;
    // Jump-label code sites: (section, offset) of each `__jump_table` entry's code field.
    let mut jump_sites: HashMap<usize, Vec<u64>> = HashMap::new();
    for sec in input.sections() {
        if input.section_name(sec) != "__jump_table" {
            continue;
        }
        for r in input.relocs(sec) {
            // Entries are 16 bytes: code (rel32), target (rel32), key (rel64).
            if r.r_offset % 16 != 0 {
                continue;
            }
            let s = input.sym(input.reloc_sym(r));
            if let Some(target_sec) = s.section {
                let at = (s.st_value as i64 + r.r_addend) as u64;
                jump_sites
                    .entry(elfdiff::input::SectionId::of(target_sec).0)
                    .or_default()
                    .push(at);
            }
        }
    }
    let mut out = Vec::new();
    for id in input.symbols() {
        if input.kind(id) != SymKind::Func {
            continue;
        }
        let s = input.sym(id);
        let name = input.sym_name(id);
        if s.st_size == 0 || name.starts_with("__pfx_") || name.starts_with("__cfi_") {
            continue;
        }
        let bytes = input.sym_bytes(id).to_vec();
        let start = s.st_value;
        let mut masked = Vec::new();
        for r in input.sym_relocs(id) {
            let off = (r.r_offset - start) as usize;
            let width = reloc_width(r.r_type).unwrap_or(4);
            let callee = input.sym_name(input.reloc_sym(r));
            if callee == "__fentry__" {
                masked.push(off.saturating_sub(1)..off + width);
            } else {
                masked.push(off..off + width);
            }
        }
        if let Some(sites) = s
            .section
            .and_then(|sec| jump_sites.get(&elfdiff::input::SectionId::of(sec).0))
        {
            for &at in sites {
                if at >= start && at < start + s.st_size {
                    let off = (at - start) as usize;
                    let len = if bytes.get(off) == Some(&0xeb) { 2 } else { 5 };
                    masked.push(off..off + len);
                }
            }
        }
        out.push(FunctionImage {
            name,
            weak: s.st_bind() == object::elf::STB_WEAK,
            bytes,
            masked,
        });
    }
    Ok(out)
}

/// The function symbols of a linked target (vmlinux or a `.ko`), by name.
pub struct TargetCode<'d> {
    file: ElfFile64<'d, object::Endianness>,
    by_name: HashMap<&'d str, Vec<(object::SectionIndex, u64, u64)>>,
}

impl<'d> TargetCode<'d> {
    /// Indexes the function symbols of `data`.
    pub fn new(data: &'d [u8]) -> Result<Self, object::Error> {
        let file = ElfFile64::parse(data)?;
        let mut by_name: HashMap<&'d str, Vec<_>> = HashMap::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text || sym.size() == 0 {
                continue;
            }
            let (Ok(name), Some(section)) = (sym.name(), sym.section_index()) else {
                continue;
            };
            by_name
                .entry(name)
                .or_default()
                .push((section, sym.address(), sym.size()));
        }
        Ok(TargetCode { file, by_name })
    }

    /// File offset and size of the first function named `name`.
    pub fn file_range(&self, name: &str) -> Option<(u64, u64)> {
        let &(section, address, size) = self.by_name.get(name)?.first()?;
        let sec = self.file.section_by_index(section).ok()?;
        let (offset, _) = sec.file_range()?;
        Some((offset + address.wrapping_sub(sec.address()), size))
    }

    /// The bytes of every function named `name`.
    pub fn functions(&self, name: &str) -> Vec<&'d [u8]> {
        let mut out = Vec::new();
        for &(section, address, size) in self.by_name.get(name).into_iter().flatten() {
            let Ok(sec) = self.file.section_by_index(section) else {
                continue;
            };
            let Ok(data) = sec.data() else { continue };
            // vmlinux: addresses; a relocatable .ko: offsets (section address 0).
            let start = address.wrapping_sub(sec.address()) as usize;
            if let Some(bytes) = start
                .checked_add(size as usize)
                .and_then(|end| data.get(start..end))
            {
                out.push(bytes);
            }
        }
        out
    }
}

/// What the pre-match found for one object.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Functions compared and equal.
    pub checked: usize,
    /// Functions not compared: (name, reason).
    pub skipped: Vec<(String, String)>,
}

/// A function whose original code differs from the target's.
#[derive(Debug)]
pub struct Mismatch {
    /// The function.
    pub function: String,
    /// First differing offset.
    pub offset: usize,
    /// Sizes: original object, target.
    pub sizes: (usize, usize),
}

impl std::error::Error for Mismatch {}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} differs from the target at +{:#x} (original object {} bytes, target {} bytes): \
             the source, config or compiler is not the one the target was built with",
            self.function, self.offset, self.sizes.0, self.sizes.1
        )
    }
}

/// Compares every function of an original object with the target. `replaced`
/// names the functions the module will replace: those must be found.
pub fn check(
    target: &TargetCode<'_>,
    images: &[FunctionImage],
    replaced: &[String],
) -> Result<Outcome, CheckError> {
    let mut outcome = Outcome::default();
    for image in images {
        let candidates = target.functions(&image.name);
        let must = replaced.contains(&image.name);
        let skip = |why: &'static str| -> Result<(String, String), CheckError> {
            if must {
                Err(Unmatched {
                    function: image.name.clone(),
                    why,
                }
                .into())
            } else {
                Ok((image.name.clone(), why.to_string()))
            }
        };
        if candidates.is_empty() {
            outcome.skipped.push(skip(
                "not in the target (inlined, discarded or in another object)",
            )?);
            continue;
        }
        let same_size: Vec<&[u8]> = candidates
            .iter()
            .copied()
            .filter(|c| c.len() == image.bytes.len())
            .collect();
        if same_size.is_empty() && image.weak {
            outcome
                .skipped
                .push(skip("weak definition overridden in the target")?);
            continue;
        }
        let pool = if same_size.is_empty() {
            &candidates
        } else {
            &same_size
        };
        // Same-named local functions of other files: any equal one matches.
        let mut first = None;
        for c in pool {
            match image.first_difference(c) {
                None => {
                    first = None;
                    break;
                }
                Some(off) => {
                    first.get_or_insert((off, c.len()));
                }
            }
        }
        if let Some((offset, size)) = first {
            return Err(Mismatch {
                function: image.name.clone(),
                offset,
                sizes: (image.bytes.len(), size),
            }
            .into());
        }
        outcome.checked += 1;
    }
    Ok(outcome)
}

/// One original object to pre-match.
pub struct UnitToCheck {
    /// `vmlinux` or a module name.
    pub target: String,
    /// The unit's object path, for messages.
    pub label: String,
    /// The original object as compiled for diffing.
    pub original: std::path::PathBuf,
    /// Original names of the functions the module replaces from this unit.
    pub replaced: Vec<String>,
}

/// What the pre-match of a build found (`prematch` in report.json).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrematchReport {
    /// Functions compared and equal.
    pub checked: usize,
    /// Functions not compared.
    pub skipped: Vec<SkippedFunction>,
}

/// A function the pre-match did not compare.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFunction {
    /// The function.
    pub function: String,
    /// The unit's object.
    pub object: String,
    /// Why it was not compared.
    pub reason: String,
}

/// Pre-matches every unit against its target object's file in `tree`.
pub fn verify_units(
    units: &[UnitToCheck],
    tree: &TargetTree,
) -> Result<PrematchReport, PrematchError> {
    let mut report = PrematchReport::default();
    let mut targets: Vec<&str> = units.iter().map(|u| u.target.as_str()).collect();
    targets.sort();
    targets.dedup();
    for t in targets {
        let path = tree.target_file(t)?;
        let data = crate::files::read_elf_without_dwarf(path)?;
        let code = TargetCode::new(&data).map_err(|source| PrematchError::Target {
            path: path.to_path_buf(),
            source,
        })?;
        for u in units.iter().filter(|u| u.target == t) {
            let bytes = crate::files::read(&u.original)?;
            let images = function_images(&u.label, &bytes)?;
            let o = check(&code, &images, &u.replaced).map_err(|e| match e {
                CheckError::Mismatch(mismatch) => PrematchError::Mismatch {
                    label: u.label.clone(),
                    target: path.to_path_buf(),
                    mismatch,
                },
                CheckError::Unmatched(unmatched) => PrematchError::Unmatched {
                    label: u.label.clone(),
                    unmatched,
                },
            })?;
            report.checked += o.checked;
            report
                .skipped
                .extend(
                    o.skipped
                        .into_iter()
                        .map(|(function, reason)| SkippedFunction {
                            function,
                            object: u.label.clone(),
                            reason,
                        }),
                );
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(bytes: &[u8], masked: Vec<Range<usize>>) -> FunctionImage {
        FunctionImage {
            name: "f".into(),
            weak: false,
            bytes: bytes.to_vec(),
            masked,
        }
    }

    #[test]
    fn masked_fentry_and_sealed_endbr_are_equal() {
        // endbr64; call __fentry__ (rel32 masked with its opcode); ret
        let obj = image(
            &[0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0, 0xc3],
            std::iter::once(4..9).collect(),
        );
        let linked = [0x0f, 0x1f, 0x40, 0x00, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3];
        assert_eq!(obj.first_difference(&linked), None);
    }

    #[test]
    fn a_flipped_byte_is_found_at_its_offset() {
        let obj = image(&[0x55, 0x48, 0x89, 0xe5, 0xc3], vec![]);
        assert_eq!(
            obj.first_difference(&[0x55, 0x48, 0x89, 0xe6, 0xc3]),
            Some(3)
        );
        assert_eq!(obj.first_difference(&[0x55, 0x48, 0x89, 0xe5]), Some(4));
        assert_eq!(obj.first_unmasked(0), Some(0));
    }

    #[test]
    fn a_relaxed_tail_jump_matches_its_relocated_form() {
        // endbr64; call __fentry__; jmp <static neighbour> (rel32, relocated)
        let obj = image(
            &[0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0, 0xe9, 0, 0, 0, 0],
            vec![4..9, 10..14],
        );
        // Linked in one section: the assembler relaxed the jump to `eb rel8`.
        let linked = [0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 1, 2, 3, 4, 0xeb, 0xc8];
        assert_eq!(obj.first_difference(&linked), None);
        // A conditional jump is not an unconditional one.
        let other = [0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 1, 2, 3, 4, 0x74, 0xc8];
        assert_eq!(obj.first_difference(&other), Some(9));
        // An unrelocated jump must match byte for byte.
        let plain = image(&[0xe9, 1, 0, 0, 0], vec![]);
        assert_eq!(plain.first_difference(&[0xeb, 1]), Some(0));
    }

    #[test]
    fn branches_inside_the_function_match_by_the_instruction_they_reach() {
        // test esi,esi; je <ret>; jmp <neighbour> (rel32, relocated); ret
        let relocation = 5..9;
        let obj = image(
            &[0x85, 0xf6, 0x74, 0x05, 0xe9, 0, 0, 0, 0, 0xc3],
            vec![relocation],
        );
        // Linked: the tail jump relaxed to rel8, so the je's displacement
        // is 3 bytes shorter although it lands on the same `ret`.
        let linked = [0x85, 0xf6, 0x74, 0x02, 0xeb, 0x40, 0xc3];
        assert_eq!(obj.first_difference(&linked), None);
        // The same shape landing on the tail jump is a real difference.
        let elsewhere = [0x85, 0xf6, 0x74, 0x00, 0xeb, 0x40, 0xc3];
        assert_eq!(obj.first_difference(&elsewhere), Some(2));
        // So is another condition, and so is a branch that leaves.
        let jne = [0x85, 0xf6, 0x75, 0x02, 0xeb, 0x40, 0xc3];
        assert_eq!(obj.first_difference(&jne), Some(2));
        let out = [0x85, 0xf6, 0x74, 0x10, 0xeb, 0x40, 0xc3];
        assert_eq!(obj.first_difference(&out), Some(2));
        // A rel32 je in the target to the same instruction matches too.
        let long = [0x85, 0xf6, 0x0f, 0x84, 0x02, 0, 0, 0, 0xeb, 0x40, 0xc3];
        assert_eq!(obj.first_difference(&long), None);
        // A branch to the function's end lands one past the last instruction.
        let to_end = image(&[0x74, 0x01, 0xc3], vec![]);
        assert_eq!(to_end.first_difference(&[0x74, 0x01, 0xc3]), None);
        assert_eq!(to_end.first_difference(&[0x74, 0x00, 0xc3]), Some(0));
        // A target with more instructions differs at our end.
        assert_eq!(to_end.first_difference(&[0x74, 0x01, 0xc3, 0xcc]), Some(3));
    }

    #[test]
    fn endbr_is_only_forgiven_at_offset_zero() {
        let obj = image(&[0x90, 0xf3, 0x0f, 0x1e, 0xfa], vec![]);
        assert_eq!(
            obj.first_difference(&[0x90, 0x0f, 0x1f, 0x40, 0x00]),
            Some(1)
        );
    }
}
