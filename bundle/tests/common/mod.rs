//! Shared by the bundle tests: fixture keys, inputs, archive surgery and the
//! external `minisign` tool.

#![allow(dead_code, unused_imports, missing_docs)]

use bundle::manifest::Kernel;
use bundle::{CreateInput, ModuleInput, PatchInput, PublicKey, SecretKey, Verified};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BUILD_ID: &str = "4f2c0d5e9a1b7c3d8e6f0a2b4c6d8e0f1a3b5c7d";
pub const RELEASE: &str = "6.12.0-test";
pub const CREATED: u64 = 1_790_000_000;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

pub fn secret() -> SecretKey {
    SecretKey::read(&fixture("bundle/test.key")).unwrap()
}

pub fn public() -> PublicKey {
    PublicKey::read(&fixture("bundle/test.pub")).unwrap()
}

pub fn other_public() -> PublicKey {
    PublicKey::read(&fixture("bundle/other.pub")).unwrap()
}

pub fn other_secret() -> SecretKey {
    SecretKey::read(&fixture("bundle/other.key")).unwrap()
}

pub fn kernel(build_id: &str) -> Kernel {
    Kernel {
        release: RELEASE.into(),
        arch: "x86_64".into(),
        build_id: build_id.into(),
        config_sha256: bundle::sha256_hex(b"CONFIG_LIVEPATCH=y\n"),
    }
}

pub fn patch(n: usize) -> PatchInput {
    PatchInput {
        id: format!("{n:04}-fix-{n}"),
        title: format!("fix number {n}"),
        cves: vec![format!("CVE-2026-{:05}", 10_000 + n)],
        data: format!("--- a/f{n}.c\n+++ b/f{n}.c\n@@ -1 +1 @@\n-old\n+new {n}\n").into_bytes(),
    }
}

/// A module-ish blob: the library takes vermagic from the caller.
pub fn module(tag: &str) -> ModuleInput {
    ModuleInput {
        name: "livepatch_fix".into(),
        vermagic: format!("{RELEASE} SMP preempt mod_unload "),
        data: format!("\x7fELF fake module {tag}").into_bytes(),
    }
}

/// An input with patches 1..=n and the given predecessor.
pub fn input(n: usize, predecessor: Option<&Verified>) -> CreateInput<'_> {
    CreateInput {
        kernel: kernel(BUILD_ID),
        patches: (1..=n).map(patch).collect(),
        modules: vec![module(&n.to_string())],
        report: serde_json::json!({
            "outcome": "patch", "name": "livepatch_fix",
            "timings_s": {"total": 1.5}, "module": {"file": "livepatch_fix.ko"},
        }),
        predecessor,
        created: CREATED + n as u64,
    }
}

/// The first bundle (one patch), verified.
pub fn first() -> (Vec<u8>, Verified) {
    let bytes = bundle::create(&input(1, None), &secret()).unwrap();
    let v = bundle::Bundle::read(&bytes)
        .unwrap()
        .verify(&public())
        .unwrap();
    (bytes, v)
}

/// The `minisign` binary (a `testbed::oracle`: a skipped check or, when
/// oracles are required, a failed test without it).
pub fn minisign() -> Option<PathBuf> {
    let minisign = testbed::oracle::tool("minisign", "minisign")?;
    let ok = Command::new(&minisign)
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    testbed::oracle::need(
        "a working `minisign -v`",
        "install the Debian package minisign",
        ok.then_some(minisign),
    )
}

/// `minisign -V -p PUB -m FILE` (signature FILE.minisig); true when it verifies.
pub fn minisign_verifies(pubkey: &Path, file: &Path) -> bool {
    let out = Command::new("minisign")
        .args(["-V", "-q", "-p"])
        .arg(pubkey)
        .arg("-m")
        .arg(file)
        .output()
        .unwrap();
    out.status.success()
}

pub use testbed::scratch::Scratch;

/// Rewrites the ustar header of entry `index` with `edit` and fixes its
/// checksum (to build archives the writer refuses to make).
pub fn edit_header(archive: &mut [u8], index: usize, edit: impl FnOnce(&mut [u8])) {
    let mut at = 0;
    for _ in 0..index {
        let size = u64::from_str_radix(
            std::str::from_utf8(&archive[at + 124..at + 135]).unwrap(),
            8,
        )
        .unwrap() as usize;
        at += 512 + size.next_multiple_of(512);
    }
    let h = &mut archive[at..at + 512];
    edit(h);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
}
