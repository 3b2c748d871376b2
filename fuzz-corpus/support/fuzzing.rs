//! Shared by the fuzz tests of elfdiff, relocator, modsign, bundle and
//! kpbuild's inspect (`*/tests/fuzz*.rs`, included with `#[path]`): the
//! proptest configuration, seed objects (compiled fixture pairs and the kept
//! corpus), and structure-aware mutations (ELF regions by default, or the
//! regions a test names).

#![allow(dead_code, unused_imports)] // each test crate uses part of it

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The kept corpus.
pub fn corpus_dir() -> PathBuf {
    root().join("fuzz-corpus")
}

/// Proptest settings: `default_cases` cases (`KPBUILD_FUZZ_CASES` overrides
/// it), a fixed seed so a run is reproducible (`PROPTEST_RNG_SEED` picks
/// another), no regression files in the source tree (crashing inputs go to
/// `fuzz-corpus/` by hand, minimised).
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("KPBUILD_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x006b_7062_7569_6c64);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

pub use testbed::scratch::Scratch;

/// Compiles `fixtures/elfdiff/cases/CASE/SIDE.c` as `DIR/CASE/SIDE/unit.c`
/// (both sides under one file name, as a kernel build compiles them).
/// `None` when the compiler is missing or fails: a `testbed::oracle`, so a
/// `SKIP:` line, or a failed test when oracles are required.
pub fn compile_case(case: &str, side: &str, dir: &Path) -> Option<Vec<u8>> {
    let fixtures = root().join("fixtures/elfdiff");
    let src_dir = dir.join(case).join(side);
    std::fs::create_dir_all(&src_dir).ok()?;
    let unit = src_dir.join("unit.c");
    std::fs::copy(
        fixtures.join("cases").join(case).join(format!("{side}.c")),
        &unit,
    )
    .ok()?;
    let cflags = std::fs::read_to_string(fixtures.join("CFLAGS")).ok()?;
    let extra = std::fs::read_to_string(fixtures.join("cases").join(case).join("flags"))
        .unwrap_or_default();
    let out = src_dir.join("unit.o");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let status = Command::new(&cc)
        .args(cflags.split_whitespace())
        .args(extra.split_whitespace())
        .arg("-I")
        .arg(fixtures.join("include"))
        .arg(&unit)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => std::fs::read(&out).ok(),
        other => testbed::oracle::need(
            &format!("{case}/{side}.c compiled with {cc} ({other:?}) as a seed"),
            "install the Debian package build-essential (without it only the corpus is used)",
            None,
        ),
    }
}

/// Fixture pairs compiled in parallel; pairs that fail to compile are left
/// out (after [`compile_case`] said so, or failed the test).
pub fn compile_pairs(cases: &[&str], dir: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                s.spawn(move || {
                    let o = compile_case(case, "orig", dir)?;
                    let p = compile_case(case, "patched", dir)?;
                    Some((case.to_string(), o, p))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Every file of the kept corpus (`fuzz-corpus/**`, not `support/` or the
/// README) that is an ELF object (`.o`, `.ko`, `.bin`), sorted.
pub fn corpus_files() -> Vec<PathBuf> {
    corpus_files_with(&["o", "ko", "bin"])
}

/// Every file of the kept corpus with one of these extensions, sorted.
pub fn corpus_files_with(extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![corpus_dir()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                if e.file_name() != "support" {
                    stack.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|x| extensions.iter().any(|&e| x == e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Corpus pairs `NAME.orig.o` + `NAME.patched.o`, as (name, orig, patched).
pub fn corpus_pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for path in corpus_files() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some(stem) = name.strip_suffix(".orig.o") else {
            continue;
        };
        let patched = path.with_file_name(format!("{stem}.patched.o"));
        if let (Ok(o), Ok(p)) = (std::fs::read(&path), std::fs::read(&patched)) {
            out.push((path.display().to_string(), o, p));
        }
    }
    out
}

fn le(data: &[u8], at: usize, n: usize) -> Option<u64> {
    let b = data.get(at..at.checked_add(n)?)?;
    Some(b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x)))
}

/// The byte ranges a mutation aims at, read from the unmutated seed: 0 the
/// ELF header, 1 the section header table, 2 the symbol table, 3 the
/// relocation sections, 4 the string tables, 5 the section contents, 6 the
/// whole file. A range the seed lacks falls back to the whole file.
pub fn regions(data: &[u8]) -> Vec<Range<usize>> {
    let whole = 0..data.len();
    let mut r = Vec::with_capacity(7);
    r.push(0..data.len().min(64));
    let shoff = le(data, 40, 8).unwrap_or(0) as usize;
    let shnum = le(data, 60, 2).unwrap_or(0) as usize;
    let table = shoff..shoff.saturating_add(shnum * 64).min(data.len());
    r.push(table.clone());
    let (mut symtab, mut rela, mut strtab, mut content) = (None, None, None, None);
    for i in 1..shnum {
        let h = shoff + i * 64;
        let (Some(t), Some(off), Some(size)) =
            (le(data, h + 4, 4), le(data, h + 24, 8), le(data, h + 32, 8))
        else {
            break;
        };
        let range = (off as usize)..(off.saturating_add(size) as usize).min(data.len());
        if range.is_empty() || range.start >= data.len() {
            continue;
        }
        let merge = |slot: &mut Option<Range<usize>>| {
            *slot = Some(match slot.take() {
                Some(s) => s.start.min(range.start)..s.end.max(range.end),
                None => range.clone(),
            });
        };
        match t {
            2 => merge(&mut symtab),
            4 | 9 => merge(&mut rela),
            3 => merge(&mut strtab),
            8 => {}
            _ => merge(&mut content),
        }
    }
    for slot in [symtab, rela, strtab, content] {
        r.push(slot.unwrap_or_else(|| whole.clone()));
    }
    r.push(whole);
    r.into_iter()
        .map(|x| if x.is_empty() { 0..data.len() } else { x })
        .collect()
}

/// One mutation: where (region, position in it), how, with what.
#[derive(Debug, Clone)]
pub struct Mutation {
    region: u8,
    pos: u32,
    op: u8,
    value: u64,
}

/// A mutation.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    (0u8..7, any::<u32>(), 0u8..6, any::<u64>()).prop_map(|(region, pos, op, value)| Mutation {
        region,
        pos,
        op,
        value,
    })
}

/// 1 to `max` mutations.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=max)
}

/// Values that tend to break parsers.
fn interesting(value: u64, len: usize) -> u64 {
    const TABLE: [u64; 16] = [
        0,
        1,
        2,
        7,
        0x40,
        0x7f,
        0x80,
        0xff,
        0xffff,
        0xff00,
        0xfff1,
        0x7fff_ffff,
        0xffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
        u64::MAX - 7,
    ];
    match value % 4 {
        0 => TABLE[(value >> 2) as usize % TABLE.len()],
        1 => (value >> 2) % 64,
        2 => (len as u64).wrapping_add((value >> 2) % 16).wrapping_sub(8),
        _ => value >> 2,
    }
}

/// Applies `muts` to a copy of `seed`, aiming at its ELF [`regions`].
pub fn apply(seed: &[u8], muts: &[Mutation]) -> Vec<u8> {
    apply_in(seed, muts, &regions(seed))
}

/// Applies `muts` to a copy of `seed`, aiming at `regions` (ranges of the
/// seed; empty or out-of-range ones are left out, and none left means the
/// whole file). Mutation region numbers wrap around the list.
pub fn apply_in(seed: &[u8], muts: &[Mutation], regions: &[Range<usize>]) -> Vec<u8> {
    let mut data = seed.to_vec();
    if data.is_empty() {
        return data;
    }
    let len = data.len();
    let usable = |r: &&Range<usize>| !r.is_empty() && r.end <= len;
    let mut regions: Vec<Range<usize>> = regions.iter().filter(usable).cloned().collect();
    if regions.is_empty() {
        regions.push(0..len);
    }
    for m in muts {
        let r = &regions[usize::from(m.region) % regions.len()];
        let at = r.start + m.pos as usize % r.len().max(1);
        let v = interesting(m.value, data.len());
        let width = match m.op {
            0 | 1 => 1,
            2 => 2,
            3 => 4,
            _ => 8,
        };
        let at = if width > 1 { at & !(width - 1) } else { at };
        match m.op {
            0 => data[at] ^= (m.value as u8) | 1,
            1 => data[at] = v as u8,
            5 if m.value & 1 == 1 => {
                // Swap two 8-byte words of the region (entries moved around).
                let other = (r.start + (m.value >> 1) as usize % r.len().max(1)) & !7;
                if at + 8 <= data.len() && other + 8 <= data.len() {
                    for k in 0..8 {
                        data.swap(at + k, other + k);
                    }
                }
            }
            _ => {
                let bytes = v.to_le_bytes();
                for (k, b) in bytes.iter().take(width).enumerate() {
                    if let Some(slot) = data.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    data
}

/// A length in `0..=len` biased to the interesting ends: inside the ELF
/// header, inside the section header table, anywhere.
pub fn cut(seed: &[u8], pick: prop::sample::Index, how: u8) -> usize {
    let len = seed.len();
    let r = regions(seed);
    match how % 4 {
        0 => pick.index(len.min(64) + 1),
        1 => r[1].start + pick.index(r[1].len() + 1),
        2 => len - pick.index(len.min(16) + 1),
        _ => pick.index(len + 1),
    }
}

/// Random bytes with an ELF64 x86_64 `ET_REL` header prefix (so parsers get
/// past the magic), or none.
pub fn with_elf_header(mut bytes: Vec<u8>, header: bool) -> Vec<u8> {
    if header && bytes.len() >= 64 {
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[16..18].copy_from_slice(&1u16.to_le_bytes());
        bytes[18..20].copy_from_slice(&62u16.to_le_bytes());
        bytes[58..60].copy_from_slice(&64u16.to_le_bytes());
    }
    bytes
}

/// With `KPBUILD_FUZZ_SAVE=DIR`, writes the inputs of a panicking run to
/// `DIR/crash.NAME`, overwriting the previous one: after proptest has
/// shrunk a failure, the files hold the minimal crashing input.
pub fn save_crash(files: &[(&str, &[u8])]) {
    let Some(dir) = std::env::var_os("KPBUILD_FUZZ_SAVE") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    for (name, data) in files {
        let _ = std::fs::write(dir.join(format!("crash.{name}")), data);
    }
}
