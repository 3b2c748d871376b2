//! Fuzzing the signature reader: whatever the bytes, `trailer`,
//! `parse_signature` and `strip_signature` return a value or an error, never
//! panic, and agree with each other about where the module ends.
//!
//! Seeds: a stand-in module and the kept modules of `fuzz-corpus/seeds`,
//! each signed here with the test key of `fixtures/signing` (SHA-256 and
//! SHA-512). Mutations aim at the trailer (`struct module_signature` and the
//! marker), the CMS message and the end of the module; `sig_len` also gets
//! values around the room it has. Every kept corpus file is run as is. See
//! `fuzz-corpus/README.md`.

#[path = "../../fuzz-corpus/support/fuzzing.rs"]
mod fuzzing;

use fuzzing::{apply_in, config, mutations};
use modsign::{Hash, INFO_LEN, MAGIC, Trailer, parse_signature, strip_signature, trailer};
use proptest::prelude::*;
use proptest::sample::Index;
use std::ops::Range;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

fn fixture(name: &str) -> Vec<u8> {
    let path = fuzzing::root().join("fixtures/signing").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Signed modules to start from.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let (key, cert) = (fixture("test-key.pem"), fixture("test-cert.pem"));
        // Inside the test certificate's validity, so runs are reproducible.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut bodies = vec![b"\x7fELF\x02\x01\x01 stand-in module".repeat(8)];
        for path in fuzzing::corpus_files_with(&["ko"]) {
            if path.parent().is_some_and(|d| d.ends_with("seeds")) {
                bodies.push(std::fs::read(&path).expect("corpus file"));
            }
        }
        let mut seeds = Vec::new();
        for body in &bodies {
            for hash in [Hash::Sha256, Hash::Sha512] {
                seeds.push(modsign::sign_at(body, &key, &cert, hash, now).expect("signs"));
            }
        }
        seeds
    })
}

/// Where a signed module's parts are: the trailer (header and marker), the
/// CMS message, the last 64 bytes of the module, the `sig_len` field (none:
/// the whole file).
fn signed_regions(data: &[u8]) -> Vec<Range<usize>> {
    let Some(Trailer::Header { info, offset }) = trailer(data) else {
        return Vec::new();
    };
    let body_end = offset.saturating_sub(info.sig_len as usize);
    vec![
        offset..data.len(),
        body_end..offset,
        body_end.saturating_sub(64)..body_end,
        offset + 8..offset + INFO_LEN,
    ]
}

/// The property: no panic, and the three readers agree. Returns a
/// description of a disagreement.
fn check(data: &[u8]) -> Result<(), String> {
    let run = || {
        let stripped = strip_signature(data).map(<[u8]>::len);
        (trailer(data), parse_signature(data), stripped)
    };
    let (framing, parsed, stripped) = match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(panic) => {
            fuzzing::save_crash(&[("input.ko", data)]);
            std::panic::resume_unwind(panic)
        }
    };
    let verdict = agree(data, framing, parsed.as_ref(), stripped);
    if verdict.is_err() {
        fuzzing::save_crash(&[("input.ko", data)]);
    }
    verdict
}

fn agree(
    data: &[u8],
    framing: Option<Trailer>,
    parsed: Option<&modsign::SignatureInfo>,
    stripped: Result<usize, modsign::Error>,
) -> Result<(), String> {
    if let Err(e) = &stripped
        && !matches!(e, modsign::Error::MalformedSignature(why) if !why.is_empty())
    {
        return Err(format!("strip_signature failed with another error: {e}"));
    }
    match framing {
        None if parsed.is_none() && stripped.as_ref().ok() == Some(&data.len()) => Ok(()),
        None => Err("no marker, yet a signature was found or stripped".into()),
        Some(Trailer::NoRoom) if parsed.is_none() && stripped.is_err() => Ok(()),
        Some(Trailer::NoRoom) => Err("no room for the header, yet a signature was read".into()),
        Some(Trailer::Header { info, offset }) => {
            if offset + INFO_LEN + MAGIC.len() != data.len() {
                return Err(format!("header at {offset} in {} bytes", data.len()));
            }
            let sig_len = info.sig_len as usize;
            match (sig_len <= offset, parsed, stripped) {
                (true, Some(p), Ok(body))
                    if body == offset - sig_len
                        && p.sig_len == info.sig_len
                        && p.id_type == info.id_type =>
                {
                    Ok(())
                }
                (false, None, Err(_)) => Ok(()),
                (fits, p, s) => Err(format!(
                    "sig_len {sig_len} with {offset} bytes before the header (fits: {fits}): \
                     parse_signature {p:?}, strip_signature {s:?}"
                )),
            }
        }
    }
}

/// `sig_len` values around the room the header has.
fn sig_len_for(data: &[u8], pick: u8, noise: u32) -> u32 {
    let room = data.len().saturating_sub(INFO_LEN + MAGIC.len()) as u32;
    match pick % 8 {
        0 => 0,
        1 => room,
        2 => room.wrapping_add(1),
        3 => room.wrapping_sub(1),
        4 => u32::MAX,
        5 => 0x8000_0000,
        6 => noise % (room + 2),
        _ => noise,
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated(i in any::<Index>(), muts in mutations(6)) {
        let seed = i.get(seeds());
        let data = apply_in(seed, &muts, &signed_regions(seed));
        prop_assert_eq!(check(&data), Ok(()));
    }

    #[test]
    fn sig_len_anything(i in any::<Index>(), pick in any::<u8>(), noise in any::<u32>()) {
        let mut data = i.get(seeds()).clone();
        let at = data.len() - MAGIC.len() - 4;
        let value = sig_len_for(&data, pick, noise);
        data[at..at + 4].copy_from_slice(&value.to_be_bytes());
        prop_assert_eq!(check(&data), Ok(()));
    }

    /// Only the module changed: the signature reads as before.
    #[test]
    fn module_mutated(i in any::<Index>(), muts in mutations(4)) {
        let seed = i.get(seeds());
        let Some(Trailer::Header { info, offset }) = trailer(seed) else {
            panic!("a seed without a signature header");
        };
        let body = offset - info.sig_len as usize;
        let data = apply_in(seed, &muts, std::slice::from_ref(&(0..body)));
        prop_assert_eq!(check(&data), Ok(()));
        prop_assert_eq!(parse_signature(&data), parse_signature(seed));
    }

    #[test]
    fn truncated(i in any::<Index>(), at in any::<Index>(), marker in any::<bool>()) {
        let seed = i.get(seeds());
        let mut data = seed[..at.index(seed.len() + 1)].to_vec();
        if marker {
            data.extend_from_slice(MAGIC);
        }
        prop_assert_eq!(check(&data), Ok(()));
    }

    #[test]
    fn random_before_marker(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut data = bytes;
        data.extend_from_slice(MAGIC);
        prop_assert_eq!(check(&data), Ok(()));
    }
}

/// The seeds read back as the test key's signatures.
#[test]
fn seeds_parse() {
    for seed in seeds() {
        let info = parse_signature(seed).expect("a signature");
        let signer = info.signer.expect("a signer");
        assert_eq!(signer.issuer, "CN=kpbuild test signing key — TEST ONLY");
        assert!(info.hash.is_some());
    }
}

/// Every kept corpus file, as it is and with its last bytes as a marker.
#[test]
fn corpus_never_panics() {
    let files = fuzzing::corpus_files_with(&["o", "ko", "bin"]);
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        let mut marked = data.clone();
        marked.extend_from_slice(MAGIC);
        for (what, input) in [("as is", &data), ("with a marker", &marked)] {
            match std::panic::catch_unwind(|| check(input)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{} ({what}): {e}", path.display())),
                Err(_) => failures.push(format!("{} ({what}): panicked", path.display())),
            }
        }
    }
    assert!(!files.is_empty(), "no corpus files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
