//! Fuzzing the module reader of `kpbuild inspect`: whatever the bytes,
//! `inspect` returns a report or an error, never panics, and a report
//! renders for people and as JSON that parses back.
//!
//! Seeds: a livepatch object made by `kpbuild diff` from a fixture pair
//! (when gcc is there), the pre-link object of the corpus converted by the
//! relocator, every ELF file of `fuzz-corpus/`, and signed copies of the
//! livepatch objects and modules (test key of `fixtures/signing`), so the
//! signature trailer is mutated too. See `fuzz-corpus/README.md`.

#[path = "../../fuzz-corpus/support/fuzzing.rs"]
mod fuzzing;

use fuzzing::{apply, apply_in, config, cut, mutations, with_elf_header};
use kpbuild::inspect::{human, inspect, json};
use proptest::prelude::*;
use proptest::sample::Index;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Compiles `CASE` and diffs it with `kpbuild diff`, the original standing
/// in for vmlinux; `None` without gcc.
fn diff_object(case: &str, dir: &std::path::Path) -> Option<Vec<u8>> {
    let orig = fuzzing::compile_case(case, "orig", dir)?;
    let patched = fuzzing::compile_case(case, "patched", dir)?;
    let (o, p) = (dir.join("orig.o"), dir.join("patched.o"));
    std::fs::write(&o, orig).ok()?;
    std::fs::write(&p, patched).ok()?;
    let symvers = dir.join("Module.symvers");
    std::fs::write(
        &symvers,
        "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n\
         0x00000000\twake_waiters\tvmlinux\tEXPORT_SYMBOL\t\n\
         0x00000000\tsock_log\tvmlinux\tEXPORT_SYMBOL_GPL\t\n",
    )
    .ok()?;
    let out = dir.join("out.o");
    let status = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .arg("diff")
        .args([&o, &p])
        .args(["--target", "vmlinux", "--target-symbols"])
        .arg(&o)
        .arg("--symvers")
        .arg(&symvers)
        .arg("-o")
        .arg(&out)
        .output()
        .ok()?;
    assert!(status.status.success(), "kpbuild diff: {status:?}");
    std::fs::read(out).ok()
}

fn signed(module: &[u8]) -> Vec<u8> {
    let dir = fuzzing::root().join("fixtures/signing");
    let key = std::fs::read(dir.join("test-key.pem")).expect("test key");
    let cert = std::fs::read(dir.join("test-cert.pem")).expect("test certificate");
    // Inside the test certificate's validity, so runs are reproducible.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    modsign::sign_at(module, &key, &cert, modsign::Hash::Sha256, now).expect("signs")
}

/// (label, bytes) of every seed.
fn seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let scratch = fuzzing::Scratch::new("inspect-fuzz");
        let mut seeds = Vec::new();
        if let Some(obj) = diff_object("calls_unchanged_static_function", scratch.root()) {
            seeds.push(("kpbuild diff output".to_string(), obj));
        }
        for path in fuzzing::corpus_files() {
            let data = std::fs::read(&path).expect("corpus file");
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name == "klp-prelink.o" {
                let converted =
                    relocator::klp::convert_to_livepatch(&data).expect("the seed converts");
                seeds.push(("klp-prelink.o converted".to_string(), converted));
            }
            seeds.push((path.display().to_string(), data));
        }
        let to_sign: Vec<(String, Vec<u8>)> = seeds
            .iter()
            .filter(|(l, _)| !l.contains("crashes"))
            .filter(|(l, _)| l.ends_with(".ko") || l.contains("converted") || l.contains("diff"))
            .map(|(l, d)| (format!("{l}, signed"), signed(d)))
            .collect();
        seeds.extend(to_sign);
        assert!(seeds.len() > 4, "too few seeds: {}", seeds.len());
        seeds
    })
}

/// The last 40 bytes (signature header and marker), where signed seeds
/// keep their framing.
fn trailer_regions(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut r = fuzzing::regions(data);
    r.push(data.len().saturating_sub(40)..data.len());
    r
}

/// The property: no panic; a report renders both ways and its JSON parses;
/// an error says something.
fn check(data: &[u8]) -> Result<(), String> {
    let run = || match inspect("fuzz.ko", data, true) {
        Ok(report) => Ok((human(&report), json(&report), report)),
        Err(e) => Err(e.to_string()),
    };
    let result = match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(panic) => {
            fuzzing::save_crash(&[("input.ko", data)]);
            std::panic::resume_unwind(panic)
        }
    };
    let verdict = match result {
        Err(e) if e.is_empty() => Err("an error without a message".to_string()),
        Err(_) => Ok(()),
        Ok((text, json, report)) => {
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&json);
            match parsed {
                Err(e) => Err(format!("the JSON report does not parse: {e}")),
                Ok(v) if v["problems"].as_array().map(Vec::len) != Some(report.problems.len()) => {
                    Err("the JSON report lost problems".to_string())
                }
                Ok(_) if !text.starts_with("fuzz.ko: ") => Err(format!("report text: {text}")),
                Ok(_) => Ok(()),
            }
        }
    };
    if verdict.is_err() {
        fuzzing::save_crash(&[("input.ko", data)]);
    }
    verdict
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated(i in any::<Index>(), muts in mutations(6)) {
        let (_, seed) = i.get(seeds());
        let data = apply_in(seed, &muts, &trailer_regions(seed));
        prop_assert_eq!(check(&data), Ok(()));
    }

    #[test]
    fn mutated_elf(i in any::<Index>(), muts in mutations(3)) {
        let (_, seed) = i.get(seeds());
        prop_assert_eq!(check(&apply(seed, &muts)), Ok(()));
    }

    #[test]
    fn truncated(i in any::<Index>(), at in any::<Index>(), how in any::<u8>()) {
        let (_, seed) = i.get(seeds());
        prop_assert_eq!(check(&seed[..cut(seed, at, how)]), Ok(()));
    }

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), header in any::<bool>()) {
        prop_assert_eq!(check(&with_elf_header(bytes, header)), Ok(()));
    }
}

/// The seeds inspect cleanly where they should: the diff output and the
/// kernel's sample module have no problems.
#[test]
fn seeds_inspect() {
    for (label, data) in seeds() {
        assert_eq!(check(data), Ok(()), "{label}");
        if label == "kpbuild diff output" || label.ends_with("livepatch-sample.ko") {
            let report = inspect(label, data, true).expect("inspects");
            assert_eq!(report.problems, Vec::<String>::new(), "{label}");
        }
    }
}

/// Every kept corpus file, as it is.
#[test]
fn corpus_never_panics() {
    let files = fuzzing::corpus_files();
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        match std::panic::catch_unwind(|| check(&data)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{}: {e}", path.display())),
            Err(_) => failures.push(format!("{}: panicked", path.display())),
        }
    }
    assert!(!files.is_empty(), "no corpus files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
