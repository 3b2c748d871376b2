//! Fuzzing the bundle reader, which reads what a host downloads from a patch
//! server: whatever the bytes, `Bundle::read` and `Bundle::verify` return a
//! value or an error, never panic, and a bundle that verifies holds exactly
//! the manifest and files that were signed.
//!
//! Seeds: bundles made here with the bundle API and the test key of
//! `fixtures/bundle` (a first one, and a second naming it as predecessor).
//! Mutations aim at the ustar headers (optionally with their checksums
//! fixed, so a changed size, name or type reaches the parser behind the
//! checksum), the manifest, the signature and the files; the manifest is
//! also rewritten as JSON (a field replaced) inside a well-formed archive.
//! Every kept `.kpb` corpus file is run as is. See `fuzz-corpus/README.md`.

#[path = "../../fuzz-corpus/support/fuzzing.rs"]
mod fuzzing;

mod common;

use bundle::Bundle;
use fuzzing::{apply_in, config, cut, mutations};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

/// A seed: the bundle bytes and its entries as written.
struct Seed {
    bytes: Vec<u8>,
    entries: Vec<(String, Vec<u8>)>,
}

fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let (first, verified) = common::first();
        let second = bundle::create(&common::input(2, Some(&verified)), &common::secret())
            .expect("second bundle");
        [first, second]
            .into_iter()
            .map(|bytes| Seed {
                entries: bundle::ustar::read(&bytes).expect("a seed reads"),
                bytes,
            })
            .collect()
    })
}

const BLOCK: usize = 512;

/// Header blocks and data ranges of a ustar archive, from its size fields.
fn layout(data: &[u8]) -> (Vec<usize>, Vec<Range<usize>>) {
    let (mut headers, mut contents) = (Vec::new(), Vec::new());
    let mut at = 0;
    while at + BLOCK <= data.len() && data[at..at + BLOCK].iter().any(|&b| b != 0) {
        let size = std::str::from_utf8(&data[at + 124..at + 135])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim_matches(['\0', ' ']), 8).ok())
            .unwrap_or(0);
        headers.push(at);
        contents.push(at + BLOCK..(at + BLOCK + size).min(data.len()));
        at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
    }
    (headers, contents)
}

/// Regions of a bundle: each header's name, size and type fields, each
/// header whole, each entry's data (manifest, signature, files), the end.
fn bundle_regions(data: &[u8]) -> Vec<Range<usize>> {
    let (headers, contents) = layout(data);
    let mut r = Vec::new();
    for &h in &headers {
        r.extend([h..h + 100, h + 124..h + 136, h + 156..h + 157, h..h + BLOCK]);
    }
    r.extend(contents);
    let end = headers.last().map_or(0, |&h| h + BLOCK);
    r.push(end..data.len());
    r
}

/// Recomputes the checksum of every header the seed had (`%06o\0 `).
fn fix_checksums(data: &mut [u8], headers: &[usize]) {
    for &h in headers {
        let Some(block) = data.get_mut(h..h + BLOCK) else {
            continue;
        };
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

/// The property: no panic; a bundle that verifies is the seed's content.
fn check(data: &[u8], seed: &Seed) -> Result<(), String> {
    let key = common::public();
    let run = || {
        let read = Bundle::read(data);
        let verified = read.as_ref().ok().map(|b| b.verify(&key));
        if let Some(Ok(v)) = &verified {
            let _ = v.check_kernel(common::BUILD_ID);
            let _ = v.check_kernel("00");
        }
        (read, verified)
    };
    let (read, verified) = match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(panic) => {
            fuzzing::save_crash(&[("bundle.kpb", data)]);
            std::panic::resume_unwind(panic)
        }
    };
    let verdict = match (read, verified) {
        (Err(e), _) | (Ok(_), Some(Err(e))) if e.to_string().is_empty() => {
            Err("an error without a message".to_string())
        }
        (Ok(b), Some(Ok(_))) => same_content(&b, seed),
        _ => Ok(()),
    };
    if verdict.is_err() {
        fuzzing::save_crash(&[("bundle.kpb", data)]);
    }
    verdict
}

/// Every signed entry of the seed, byte for byte, and nothing else. The
/// signature file is not signed itself, and its text may vary where minisign
/// allows (a missing final newline verifies the same).
fn same_content(b: &Bundle, seed: &Seed) -> Result<(), String> {
    let listed: Vec<&str> = b.manifest().files().iter().map(|(f, _)| *f).collect();
    let expected: BTreeMap<&str, &[u8]> = seed
        .entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    for (name, data) in &expected {
        if *name == "manifest.json.minisig" {
            continue;
        }
        let found = b.file(name);
        if found != Some(*data) {
            return Err(format!(
                "a verified bundle changed {name}: {:?}, was {:?}",
                found.map(String::from_utf8_lossy),
                String::from_utf8_lossy(data)
            ));
        }
    }
    match listed.iter().find(|f| !expected.contains_key(*f)) {
        Some(extra) => Err(format!("a verified bundle lists {extra}, the seed did not")),
        None => Ok(()),
    }
}

/// Replaces the manifest with `text` in an otherwise unchanged archive.
fn with_manifest(seed: &Seed, text: &[u8]) -> Vec<u8> {
    let entries: Vec<(&str, &[u8])> = seed
        .entries
        .iter()
        .map(|(n, d)| {
            let d = if n == "manifest.json" { text } else { d };
            (n.as_str(), d)
        })
        .collect();
    bundle::ustar::write(&entries, common::CREATED).expect("archive")
}

/// JSON values that tend to break readers.
fn odd_value(pick: u8, noise: u64) -> serde_json::Value {
    use serde_json::json;
    match pick % 12 {
        0 => json!(null),
        1 => json!(""),
        2 => json!("../../etc/passwd"),
        3 => json!("modules/../report.json"),
        4 => json!(u64::MAX),
        5 => json!(-1),
        6 => json!(noise),
        7 => json!("x".repeat((noise % 300) as usize)),
        8 => json!([]),
        9 => json!({}),
        10 => json!("manifest.json"),
        _ => json!(format!("{noise:x}")),
    }
}

/// Every leaf of a JSON value, as a JSON pointer.
fn leaves(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map {
                leaves(x, format!("{at}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated(i in any::<Index>(), muts in mutations(6), fix in any::<bool>()) {
        let seed = i.get(seeds());
        let mut data = apply_in(&seed.bytes, &muts, &bundle_regions(&seed.bytes));
        if fix {
            fix_checksums(&mut data, &layout(&seed.bytes).0);
        }
        prop_assert_eq!(check(&data, seed), Ok(()));
    }

    #[test]
    fn truncated(i in any::<Index>(), at in any::<Index>(), how in any::<u8>()) {
        let seed = i.get(seeds());
        let data = &seed.bytes[..cut(&seed.bytes, at, how)];
        prop_assert_eq!(check(data, seed), Ok(()));
    }

    #[test]
    fn extended(i in any::<Index>(), tail in prop::collection::vec(any::<u8>(), 1..1100)) {
        let seed = i.get(seeds());
        let mut data = seed.bytes.clone();
        data.extend_from_slice(&tail);
        prop_assert_eq!(check(&data, seed), Ok(()));
    }

    #[test]
    fn manifest_field_replaced(i in any::<Index>(), leaf in any::<Index>(), pick in any::<u8>(), noise in any::<u64>()) {
        let seed = i.get(seeds());
        let manifest = &seed.entries[0].1;
        let mut v: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
        let mut all = Vec::new();
        leaves(&v, String::new(), &mut all);
        if let Some(slot) = v.pointer_mut(leaf.get(&all[..]).as_str()) {
            *slot = odd_value(pick, noise);
        }
        let text = serde_json::to_vec_pretty(&v).expect("JSON");
        prop_assert_eq!(check(&with_manifest(seed, &text), seed), Ok(()));
    }

    #[test]
    fn manifest_bytes(i in any::<Index>(), muts in mutations(4)) {
        let seed = i.get(seeds());
        let manifest = &seed.entries[0].1;
        let text = apply_in(manifest, &muts, &[]);
        prop_assert_eq!(check(&with_manifest(seed, &text), seed), Ok(()));
    }

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        prop_assert_eq!(check(&bytes, &seeds()[0]), Ok(()));
    }
}

/// The seeds themselves read and verify.
#[test]
fn seeds_verify() {
    for seed in seeds() {
        assert_eq!(check(&seed.bytes, seed), Ok(()));
        Bundle::read(&seed.bytes)
            .expect("reads")
            .verify(&common::public())
            .expect("verifies");
    }
}

/// Every kept `.kpb` corpus file, as it is.
#[test]
fn corpus_never_panics() {
    let mut failures = Vec::new();
    let files = fuzzing::corpus_files_with(&["kpb"]);
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        match std::panic::catch_unwind(|| check(&data, &seeds()[0])) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{}: {e}", path.display())),
            Err(_) => failures.push(format!("{}: panicked", path.display())),
        }
    }
    eprintln!("{} corpus bundles", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
