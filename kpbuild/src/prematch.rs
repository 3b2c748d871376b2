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
    /// assembler relaxed it to; and each function starts its own section at
    /// offset 0, so the alignment padding inside it (NOPs before an aligned
    /// loop head) may be longer or shorter than where the kernel's link put
    /// it. So:
    /// - a relocated branch matches a branch of the same kind in either size;
    /// - NOPs outside the masked ranges are padding, skipped on both sides,
    ///   but for a NOP of the target as long as our masked instruction it
    ///   stands for (the kernel's 5-byte NOP at an `__fentry__` call, the
    ///   NOP of a jump-label site);
    /// - a branch inside the function matches a branch of the same kind, of
    ///   either size, that lands on the counterpart of the instruction ours
    ///   lands on (padding skipped), whatever its displacement;
    /// - every other instruction must have the same length and bytes outside
    ///   the masked ranges.
    pub fn first_difference(&self, target: &[u8]) -> Option<usize> {
        let sealed = self.bytes.len() >= 4
            && target.len() >= 4
            && self.bytes[..4] == ENDBR64
            && SEALED_ENDBR.iter().any(|s| target[..4] == s[..]);
        let start = if sealed { 4 } else { 0 };
        let ours = decode_from(&self.bytes, start);
        let theirs = decode_from(target, start);
        let mut walk = self.walk(&ours, &theirs, target);
        walk.ours_all = ours.iter().map(|i| i.ip()).collect();
        walk.theirs_all = theirs.iter().map(|i| i.ip()).collect();
        let landings = walk.landings(self.bytes.len() as u64, target.len() as u64);
        match (walk.difference, landings) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether any byte of `insn` is masked.
    fn masks(&self, insn: &iced_x86::Instruction) -> bool {
        (insn.ip() as usize..insn.next_ip() as usize).any(|i| self.is_masked(i))
    }

    /// Pairs our instructions with the target's, skipping padding; compares
    /// each pair but the landings of branches inside the function.
    fn walk(
        &self,
        ours: &[iced_x86::Instruction],
        theirs: &[iced_x86::Instruction],
        target: &[u8],
    ) -> Walk {
        let mut w = Walk::default();
        let (mut i, mut j) = (0, 0);
        loop {
            while ours.get(i).is_some_and(|a| is_nop(a) && !self.masks(a)) {
                i += 1;
            }
            let relocated = ours.get(i).is_some_and(|a| self.masks(a));
            // A masked site the kernel turned into a NOP of its own length
            // (`__fentry__`, a jump label) pairs with that NOP; any other
            // NOP of the target is padding.
            let nopped = |b: &iced_x86::Instruction| {
                relocated && ours.get(i).is_some_and(|a| a.len() == b.len())
            };
            while theirs.get(j).is_some_and(|b| is_nop(b) && !nopped(b)) {
                j += 1;
            }
            let (a, b) = match (ours.get(i), theirs.get(j)) {
                (None, None) => return w,
                (Some(a), None) => return w.differs(a.ip() as usize),
                (None, Some(_)) => return w.differs(self.bytes.len()),
                (Some(a), Some(b)) => (a, b),
            };
            w.paired.push((a.ip(), b.ip()));
            w.ours_ips.push(a.ip());
            (i, j) = (i + 1, j + 1);
            let oa = a.ip() as usize;
            let same_branch = is_branch(a) && is_branch(b) && a.mnemonic() == b.mnemonic();
            if relocated && same_branch {
                continue;
            }
            let to = a.near_branch_target();
            if same_branch && to <= self.bytes.len() as u64 && to >= ours[0].ip() {
                // Inside the function: the landings are compared at the end.
                w.branches.push((oa, to, b.near_branch_target()));
                continue;
            }
            if a.len() != b.len() {
                return w.differs(oa);
            }
            let ob = b.ip() as usize;
            let theirs_bytes = &target[ob..ob + b.len()];
            if let Some(k) = (0..a.len())
                .find(|&k| !self.is_masked(oa + k) && self.bytes[oa + k] != theirs_bytes[k])
            {
                return w.differs(oa + k);
            }
        }
    }

    /// The first offset that is compared (not masked) at or after `from`.
    pub fn first_unmasked(&self, from: usize) -> Option<usize> {
        (from..self.bytes.len()).find(|&i| !self.is_masked(i))
    }
}

/// Decodes `bytes` from `start` (offsets stay those of the function).
fn decode_from(bytes: &[u8], start: usize) -> Vec<iced_x86::Instruction> {
    iced_x86::Decoder::with_ip(
        64,
        &bytes[start..],
        start as u64,
        iced_x86::DecoderOptions::NONE,
    )
    .into_iter()
    .collect()
}

fn is_nop(insn: &iced_x86::Instruction) -> bool {
    insn.mnemonic() == iced_x86::Mnemonic::Nop
}

/// jmp and jcc (the relaxable branches): a near-branch operand, not a call.
fn is_branch(insn: &iced_x86::Instruction) -> bool {
    insn.op_count() == 1
        && insn.op0_kind() == iced_x86::OpKind::NearBranch64
        && insn.mnemonic() != iced_x86::Mnemonic::Call
}

/// What [`FunctionImage::walk`] found.
#[derive(Default)]
struct Walk {
    /// (our offset, the target's offset) of each compared pair, in order.
    paired: Vec<(u64, u64)>,
    /// Our offsets of the compared instructions, in order.
    ours_ips: Vec<u64>,
    /// Branches inside the function: (our offset, our landing, the
    /// target's landing).
    branches: Vec<(usize, u64, u64)>,
    /// Offsets of every instruction decoded, ours and the target's.
    ours_all: Vec<u64>,
    theirs_all: Vec<u64>,
    /// The first difference outside the landings.
    difference: Option<usize>,
}

impl Walk {
    fn differs(mut self, at: usize) -> Self {
        self.difference = Some(at);
        self
    }

    /// The first branch whose landing in the target is not the counterpart
    /// of ours. A landing is moved past padding to the next compared
    /// instruction; the function's end is a landing of its own.
    fn landings(&self, our_len: u64, their_len: u64) -> Option<usize> {
        const END: u64 = u64::MAX;
        let theirs_ips: Vec<u64> = self.paired.iter().map(|&(_, b)| b).collect();
        // A landing must be an instruction's first byte, or the end.
        let next = |all: &[u64], ips: &[u64], to: u64, len: u64| -> Option<u64> {
            if to != len && all.binary_search(&to).is_err() {
                return None;
            }
            Some(
                ips.get(ips.partition_point(|&ip| ip < to))
                    .copied()
                    .unwrap_or(END),
            )
        };
        for &(at, ours_to, theirs_to) in &self.branches {
            let a = next(&self.ours_all, &self.ours_ips, ours_to, our_len);
            let b = next(&self.theirs_all, &theirs_ips, theirs_to, their_len);
            let counterpart = a.map(|a| {
                if a == END {
                    END
                } else {
                    self.paired[self.ours_ips.partition_point(|&ip| ip < a)].1
                }
            });
            if b.is_none() || counterpart != b {
                return Some(at);
            }
        }
        None
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
        if first.is_some() && image.weak {
            // The target's function of that name is the strong definition
            // of another unit (`free_initmem`, `sys_ni.c`'s stubs).
            outcome
                .skipped
                .push(skip("weak definition overridden in the target")?);
            continue;
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

    /// A relocatable object with one function `f` of `code`.
    fn target_with_f(code: &[u8]) -> Vec<u8> {
        use object::write::{Object, Symbol, SymbolSection};
        use object::{
            Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind,
            SymbolScope,
        };
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        let at = obj.append_section_data(text, code, 16);
        obj.add_symbol(Symbol {
            name: b"f".to_vec(),
            value: at,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        obj.write().unwrap()
    }

    #[test]
    fn a_weak_definition_that_differs_is_overridden_not_a_mismatch() {
        let data = target_with_f(&[0x31, 0xc0, 0xc3]);
        let target = TargetCode::new(&data).unwrap();
        let mut ours = image(&[0x31, 0xd2, 0xc3], vec![]);
        assert!(matches!(
            check(&target, std::slice::from_ref(&ours), &[]),
            Err(CheckError::Mismatch(_))
        ));
        ours.weak = true;
        let outcome = check(&target, std::slice::from_ref(&ours), &[]).unwrap();
        assert_eq!(outcome.checked, 0);
        assert_eq!(
            outcome.skipped,
            [(
                "f".to_string(),
                "weak definition overridden in the target".to_string()
            )]
        );
        // A function the module replaces must match, weak or not.
        assert!(matches!(
            check(&target, &[ours], &["f".to_string()]),
            Err(CheckError::Unmatched(_))
        ));
    }

    #[test]
    fn alignment_padding_is_skipped_on_both_sides() {
        // je <ret>; three 1-byte NOPs of padding; ret
        let obj = image(&[0x74, 0x03, 0x90, 0x90, 0x90, 0xc3], vec![]);
        // Linked where one NOP reaches the same alignment.
        assert_eq!(obj.first_difference(&[0x74, 0x01, 0x90, 0xc3]), None);
        assert_eq!(obj.first_difference(&[0x74, 0x00, 0xc3]), None);
        // A multi-byte NOP is padding too.
        assert_eq!(
            obj.first_difference(&[0x74, 0x03, 0x0f, 0x1f, 0x00, 0xc3]),
            None
        );
        // A landing on padding is the landing on what follows it.
        let onto_pad = image(&[0x74, 0x00, 0x90, 0xc3], vec![]);
        assert_eq!(onto_pad.first_difference(&[0x74, 0x00, 0xc3]), None);
        // Padding never hides a real difference after it.
        let real = image(&[0x90, 0x31, 0xc0, 0xc3], vec![]);
        assert_eq!(real.first_difference(&[0x31, 0xd2, 0xc3]), Some(2));
        // Nor does it excuse a landing inside an instruction.
        let inside = image(&[0x74, 0x01, 0x31, 0xc0, 0xc3], vec![]);
        assert_eq!(
            inside.first_difference(&[0x74, 0x01, 0x31, 0xc0, 0xc3]),
            Some(0)
        );
        assert_eq!(
            image(&[0x74, 0x02, 0x31, 0xc0, 0xc3], vec![])
                .first_difference(&[0x74, 0x01, 0x31, 0xc0, 0xc3]),
            Some(0)
        );
        // A masked __fentry__ call pairs with the kernel's 5-byte NOP.
        const FENTRY: Range<usize> = 0..5;
        let fentry = image(&[0xe8, 0, 0, 0, 0, 0xc3], vec![FENTRY]);
        assert_eq!(
            fentry.first_difference(&[0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3]),
            None
        );
        // A relocated call after padding pairs with the call, not a NOP.
        let relocation = 3..7;
        let call = image(&[0x90, 0x90, 0xe8, 0, 0, 0, 0, 0xc3], vec![relocation]);
        assert_eq!(call.first_difference(&[0x90, 0xe8, 1, 2, 3, 4, 0xc3]), None);
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
