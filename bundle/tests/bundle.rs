//! Bundles: round trip, reproducibility, the external minisign tool, and
//! every way a bundle or a key can be wrong.

#![allow(missing_docs)]

mod common;

use bundle::{Bundle, Error, PublicKey, SecretKey, ustar};
use common::*;
use std::process::Command;

#[test]
fn round_trip() {
    let bytes = bundle::create(&input(2, None), &secret()).unwrap();
    let b = Bundle::read(&bytes).unwrap();
    let v = b.verify(&public()).unwrap();
    let m = v.manifest();
    assert_eq!(m.format, "kpbuild-bundle/1");
    assert_eq!(m.sequence, 1);
    assert_eq!(m.predecessor, None);
    assert_eq!(m.kernel.build_id, BUILD_ID);
    assert_eq!(m.created, CREATED + 2);
    assert_eq!(m.created_utc, bundle::time::rfc3339(CREATED + 2));
    let files: Vec<&str> = m.patches.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(
        files,
        ["patches/0001-fix-1.patch", "patches/0002-fix-2.patch"]
    );
    assert_eq!(m.patches[1].cves, ["CVE-2026-10002"]);
    assert_eq!(m.modules[0].file, "modules/livepatch_fix.ko");
    assert_eq!(m.modules[0].livepatch, "livepatch_fix");
    assert_eq!(b.file("patches/0002-fix-2.patch").unwrap(), patch(2).data);
    assert_eq!(
        b.file("modules/livepatch_fix.ko").unwrap(),
        module("2").data
    );
    let report: serde_json::Value = serde_json::from_slice(b.file("report.json").unwrap()).unwrap();
    assert!(report.get("timings_s").is_none(), "{report}");
    assert_eq!(report["outcome"], "patch");
    assert_eq!(v.key_id(), public().key_id());
    assert_eq!(
        v.trusted_comment(),
        format!("timestamp:{}\tfile:manifest.json\thashed", CREATED + 2)
    );
    v.check_kernel(&BUILD_ID.to_uppercase()).unwrap();
    let err = v.check_kernel("00ff").unwrap_err().to_string();
    for needle in [BUILD_ID, "00ff", RELEASE] {
        assert!(err.contains(needle), "{err}");
    }
    // The archive order: manifest, signature, then sorted.
    let names: Vec<String> = ustar::read(&bytes)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "manifest.json.minisig",
            "modules/livepatch_fix.ko",
            "patches/0001-fix-1.patch",
            "patches/0002-fix-2.patch",
            "report.json"
        ]
    );
}

#[test]
fn equal_inputs_give_equal_bytes() {
    let a = bundle::create(&input(2, None), &secret()).unwrap();
    let b = bundle::create(&input(2, None), &secret()).unwrap();
    assert_eq!(a, b);
    let mut later = input(2, None);
    later.created += 1;
    assert_ne!(a, bundle::create(&later, &secret()).unwrap());
    // Report key order and timings do not matter.
    let mut shuffled = input(2, None);
    shuffled.report = serde_json::json!({
        "module": {"file": "livepatch_fix.ko"}, "timings_s": {"total": 99.0},
        "name": "livepatch_fix", "outcome": "patch",
    });
    assert_eq!(a, bundle::create(&shuffled, &secret()).unwrap());
}

/// `tar` lists and extracts the bundle with the recorded metadata, and the
/// external `minisign` verifies the manifest; our signature is byte for byte
/// the one `minisign -S` makes with the same key and comments.
#[test]
fn external_tar_and_minisign() {
    let s = Scratch::new("external");
    let bytes = bundle::create(&input(2, None), &secret()).unwrap();
    let file = s.root().join("b.kpb");
    std::fs::write(&file, &bytes).unwrap();
    let out = Command::new("tar")
        .args(["tvf"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listing.lines().count(), 6, "{listing}");
    assert!(
        listing.lines().all(|l| l.starts_with("-rw-r--r-- 0/0")),
        "{listing}"
    );
    let x = s.root().join("x");
    std::fs::create_dir(&x).unwrap();
    let ok = Command::new("tar")
        .arg("xf")
        .arg(&file)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(ok.success());
    let Some(minisign) = minisign() else { return };
    let manifest = x.join("manifest.json");
    assert!(minisign_verifies(&fixture("bundle/test.pub"), &manifest));
    assert!(!minisign_verifies(&fixture("bundle/other.pub"), &manifest));
    // The reference signer, same key and comments: identical bytes.
    let sig = std::fs::read_to_string(x.join("manifest.json.minisig")).unwrap();
    let lines: Vec<&str> = sig.lines().collect();
    let theirs = s.root().join("theirs.minisig");
    let status = Command::new(minisign)
        .args(["-S", "-s"])
        .arg(fixture("bundle/test.key"))
        .arg("-m")
        .arg(&manifest)
        .arg("-x")
        .arg(&theirs)
        .args(["-c", lines[0].strip_prefix("untrusted comment: ").unwrap()])
        .args(["-t", lines[2].strip_prefix("trusted comment: ").unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), sig);
    // A manifest edited after signing fails minisign too.
    let mut edited = std::fs::read(&manifest).unwrap();
    edited.extend_from_slice(b" ");
    std::fs::write(&manifest, edited).unwrap();
    assert!(!minisign_verifies(&fixture("bundle/test.pub"), &manifest));
}

/// Re-packs the bundle's entries after `edit` (with the library's writer).
fn repack(edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let bytes = bundle::create(&input(2, None), &secret()).unwrap();
    let mut entries = ustar::read(&bytes).unwrap();
    edit(&mut entries);
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    ustar::write(&refs, CREATED).unwrap()
}

fn entry<'a>(entries: &'a mut [(String, Vec<u8>)], name: &str) -> &'a mut Vec<u8> {
    &mut entries.iter_mut().find(|(n, _)| n == name).unwrap().1
}

/// A damaged bundle: `read` or `verify` (with the right key) fails with a
/// message containing every needle.
fn check_bad(case: &str, bytes: &[u8], needles: &[&str]) {
    let err = match Bundle::read(bytes) {
        Err(e) => e,
        Ok(b) => match b.verify(&public()) {
            Err(e) => e,
            Ok(_) => panic!("{case}: verified"),
        },
    }
    .to_string();
    for n in needles {
        assert!(err.contains(n), "{case}: {err:?} lacks {n:?}");
    }
}

#[test]
fn damaged_contents() {
    type Edit = fn(&mut Vec<(String, Vec<u8>)>);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "manifest edited after signing",
            |e| {
                let m = entry(e, "manifest.json");
                let text = String::from_utf8(m.clone()).unwrap();
                *m = text.replace("fix number 1", "fix number X").into_bytes();
            },
            &[
                "manifest.json.minisig",
                "manifest.json was changed after signing",
            ],
        ),
        (
            "trusted comment edited",
            |e| {
                let s = entry(e, "manifest.json.minisig");
                let text = String::from_utf8(s.clone()).unwrap();
                *s = text.replace("timestamp:", "timestamp:1").into_bytes();
            },
            &["its trusted comment was changed after signing"],
        ),
        (
            "module replaced",
            |e| *entry(e, "modules/livepatch_fix.ko") = b"another module".to_vec(),
            &["modules/livepatch_fix.ko: sha256 is", "manifest.json lists"],
        ),
        (
            "patch edited",
            |e| entry(e, "patches/0002-fix-2.patch").push(b'\n'),
            &["patches/0002-fix-2.patch: sha256 is"],
        ),
        (
            "report edited",
            |e| entry(e, "report.json").insert(0, b' '),
            &["report.json: sha256 is"],
        ),
        (
            "extra file",
            |e| e.push(("patches/0003-sneaky.patch".into(), b"x".to_vec())),
            &["patches/0003-sneaky.patch", "not listed in manifest.json"],
        ),
        (
            "missing file",
            |e| e.retain(|(n, _)| n != "patches/0001-fix-1.patch"),
            &["patches/0001-fix-1.patch", "missing from the archive"],
        ),
        (
            "missing signature",
            |e| e.retain(|(n, _)| n != "manifest.json.minisig"),
            &["manifest.json.minisig", "missing"],
        ),
        (
            "manifest not first",
            |e| e.swap(0, 1),
            &["manifest.json must be entry 1 (it is entry 2)"],
        ),
        (
            "duplicate entry",
            |e| {
                let dup = e[3].clone();
                e.push(dup);
            },
            &["patches/0001-fix-1.patch: appears more than once"],
        ),
        (
            "unknown format",
            |e| {
                let m = entry(e, "manifest.json");
                let text = String::from_utf8(m.clone()).unwrap();
                *m = text
                    .replace("kpbuild-bundle/1", "kpbuild-bundle/9")
                    .into_bytes();
            },
            &["manifest.json: unknown format \"kpbuild-bundle/9\""],
        ),
        (
            "manifest not JSON",
            |e| *entry(e, "manifest.json") = b"{ not json".to_vec(),
            &["manifest.json: "],
        ),
        (
            "signature garbage",
            |e| *entry(e, "manifest.json.minisig") = b"hello\n".to_vec(),
            &["manifest.json.minisig: malformed minisign signature"],
        ),
    ];
    for (case, edit, needles) in cases {
        check_bad(case, &repack(edit), needles);
    }
}

#[test]
fn damaged_archive() {
    let good = bundle::create(&input(2, None), &secret()).unwrap();
    type Edit = fn(&mut Vec<u8>);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "absolute path",
            |a| edit_header(a, 2, |h| h[..5].copy_from_slice(b"/etc/")),
            &["unsafe path"],
        ),
        (
            "dot-dot path",
            |a| edit_header(a, 2, |h| h[..3].copy_from_slice(b"../")),
            &["unsafe path"],
        ),
        (
            "directory",
            |a| edit_header(a, 2, |h| h[156] = b'5'),
            &["modules/livepatch_fix.ko: a directory entry"],
        ),
        (
            "symbolic link",
            |a| edit_header(a, 3, |h| h[156] = b'2'),
            &["patches/0001-fix-1.patch: a symbolic link entry"],
        ),
        (
            "pax header",
            |a| edit_header(a, 0, |h| h[156] = b'x'),
            &["a pax extended header entry"],
        ),
        (
            "GNU long name",
            |a| edit_header(a, 0, |h| h[156] = b'L'),
            &["a GNU long name entry"],
        ),
        (
            "GNU magic",
            |a| edit_header(a, 0, |h| h[257..265].copy_from_slice(b"ustar  \0")),
            &["bad header at byte 0", "not a POSIX ustar header"],
        ),
        (
            "bad checksum",
            |a| a[0] ^= 1,
            &["bad header at byte 0", "checksum"],
        ),
        (
            "size not octal",
            |a| edit_header(a, 0, |h| h[124] = b'9'),
            &["size field"],
        ),
        (
            "size past the end",
            |a| edit_header(a, 0, |h| h[124..135].copy_from_slice(b"77777777777")),
            &["truncated", "manifest.json holds 8589934591 bytes"],
        ),
        (
            "trailing data",
            |a| a.extend_from_slice(b"junk"),
            &["data after the end-of-archive marker"],
        ),
        (
            "not an archive",
            |a| *a = b"hello, world".to_vec(),
            &["truncated", "partial header"],
        ),
        ("empty", |a| a.clear(), &["no end-of-archive marker"]),
    ];
    for (case, edit, needles) in cases {
        let mut bytes = good.clone();
        edit(&mut bytes);
        check_bad(case, &bytes, needles);
    }
}

/// Every cut point that ends a header, inside data, or inside the end marker
/// is an error, never a panic; trailing zero padding is accepted.
#[test]
fn truncated_archives() {
    let good = bundle::create(&input(2, None), &secret()).unwrap();
    let mut cuts: Vec<usize> = (0..good.len()).step_by(512).collect();
    cuts.extend((0..good.len()).step_by(97));
    cuts.extend([
        1,
        511,
        513,
        good.len() - 1,
        good.len() - 512,
        good.len() - 513,
    ]);
    for cut in cuts {
        let r = Bundle::read(&good[..cut]);
        match r {
            Err(Error::Truncated { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let mut padded = good.clone();
    padded.resize(10_240, 0);
    Bundle::read(&padded).unwrap().verify(&public()).unwrap();
}

#[test]
fn wrong_public_key() {
    let (bytes, _) = first();
    let err = Bundle::read(&bytes)
        .unwrap()
        .verify(&other_public())
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::WrongKey { .. }), "{text}");
    assert!(
        text.contains(&public().key_id()) && text.contains(&other_public().key_id()),
        "{text}"
    );
    // Signed by the other key: our key refuses it.
    let other = bundle::create(&input(1, None), &other_secret()).unwrap();
    let err = Bundle::read(&other).unwrap().verify(&public()).unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
}

#[test]
fn predecessor_rules() {
    let (first_bytes, v1) = first();
    let second = bundle::create(&input(2, Some(&v1)), &secret()).unwrap();
    let v2 = Bundle::read(&second).unwrap().verify(&public()).unwrap();
    let m = v2.manifest();
    assert_eq!(m.sequence, 2);
    let pred = m.predecessor.as_ref().unwrap();
    assert_eq!(pred.sequence, 1);
    assert_eq!(pred.sha256, bundle::sha256_hex(&first_bytes));

    let v3 = Bundle::read(&bundle::create(&input(3, Some(&v2)), &secret()).unwrap())
        .unwrap()
        .verify(&public())
        .unwrap();
    type Edit = fn(&mut bundle::CreateInput<'_>);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "a patch dropped",
            |i| i.patches.truncate(2),
            &[
                "predecessor (sequence 3)",
                "patch 3 (0003-fix-3) is dropped",
            ],
        ),
        (
            "a patch removed from the middle",
            |i| {
                i.patches.remove(1);
            },
            &["patch 2 is 0003-fix-3, but the predecessor has 0002-fix-2"],
        ),
        (
            "another kernel build",
            |i| i.kernel.build_id = "aa".repeat(20),
            &["is for kernel 6.12.0-test build-id 4f2c", "this bundle for"],
        ),
    ];
    for (case, edit, needles) in cases {
        let mut i = input(4, Some(&v3));
        edit(&mut i);
        let err = bundle::create(&i, &secret()).unwrap_err().to_string();
        for n in *needles {
            assert!(err.contains(n), "{case}: {err:?} lacks {n:?}");
        }
    }
    // The same patches again (a rebuilt module) is a valid successor.
    let again = bundle::create(&input(3, Some(&v3)), &secret()).unwrap();
    assert_eq!(Bundle::read(&again).unwrap().manifest().sequence, 4);
    // So is a revised fix: the same id in its place, another text.
    let mut revised = input(3, Some(&v3));
    revised.patches[0].data.push(b'\n');
    let revised = bundle::create(&revised, &secret()).unwrap();
    let m = Bundle::read(&revised).unwrap().manifest().clone();
    assert_eq!(m.sequence, 4);
    assert_eq!(m.patches[0].id, v3.manifest().patches[0].id);
    assert_ne!(m.patches[0].sha256, v3.manifest().patches[0].sha256);
}

#[test]
fn bad_create_inputs() {
    type Edit = fn(&mut bundle::CreateInput<'_>);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "module for another kernel",
            |i| i.modules[0].vermagic = "6.1.0-other SMP".into(),
            "modules/livepatch_fix.ko: module built for 6.1.0-other, vmlinux is 6.12.0-test",
        ),
        ("no module", |i| i.modules.clear(), "no module"),
        ("no patch", |i| i.patches.clear(), "no patch"),
        (
            "bad module name",
            |i| i.modules[0].name = "../x".into(),
            "invalid module name",
        ),
        (
            "title with a newline",
            |i| i.patches[0].title = "a\nb".into(),
            "must be one non-empty line",
        ),
        (
            "duplicate patch id",
            |i| i.patches[1].id = i.patches[0].id.clone(),
            "the id appears twice",
        ),
        (
            "build-id not hex",
            |i| i.kernel.build_id = "xyz".into(),
            "kernel.build_id",
        ),
        (
            "patch id too long for ustar",
            |i| i.patches[0].id = "y".repeat(200),
            "does not fit a ustar header",
        ),
    ];
    for (case, edit, needle) in cases {
        let mut i = input(2, None);
        edit(&mut i);
        let err = bundle::create(&i, &secret()).unwrap_err().to_string();
        assert!(err.contains(needle), "{case}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn wrong_key_files() {
    let f = |p: &str| fixture(p);
    let secret_cases = [
        (f("signing/test-key.pem"), "a PEM file (PRIVATE KEY: RSA)"),
        (f("signing/ec-key.pem"), "a PEM file (PRIVATE KEY: EC)"),
        (f("signing/test-cert.pem"), "a PEM file (CERTIFICATE: RSA)"),
        (f("signing/test-cert.der"), "DER (ASN.1)"),
        (
            f("bundle/test.pub"),
            "a minisign public key, not a secret key",
        ),
        (f("bundle/encrypted.key"), "encrypted (password-protected)"),
        (f("bundle/README.md"), "not a minisign key file"),
    ];
    for (path, needle) in secret_cases {
        let err = SecretKey::read(&path).unwrap_err().to_string();
        let name = path.display().to_string();
        assert!(err.contains(&name) && err.contains(needle), "{err}");
    }
    assert!(
        SecretKey::read(&f("bundle/encrypted.key"))
            .unwrap_err()
            .to_string()
            .contains("minisign -G -W")
    );
    let public_cases = [
        (
            f("bundle/test.key"),
            "a minisign secret key, not a public key",
        ),
        (f("signing/test-cert.pem"), "a PEM file (CERTIFICATE: RSA)"),
        (f("bundle/README.md"), "not a minisign key file"),
    ];
    for (path, needle) in public_cases {
        let err = PublicKey::read(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(needle),
            "{err}"
        );
    }
    let err = SecretKey::parse(b"", "empty.key").unwrap_err().to_string();
    assert_eq!(err, "empty.key: an empty file, not a minisign key");
    let err = PublicKey::read(&f("bundle/no-such.pub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such.pub"), "{err}");
    // A damaged secret key: the checksum catches it.
    let text = std::fs::read_to_string(f("bundle/test.key")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let b64 = &mut lines[1];
    let flip = if b64.as_bytes()[120] == b'A' {
        "B"
    } else {
        "A"
    };
    b64.replace_range(120..121, flip);
    let err = SecretKey::parse(lines.join("\n").as_bytes(), "damaged.key")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("damaged.key: corrupt minisign secret key"),
        "{err}"
    );
    // The public key round-trips through its file text.
    let pk = public();
    assert_eq!(
        PublicKey::parse(pk.to_file_text().as_bytes(), "x").unwrap(),
        pk
    );
    assert_eq!(secret().public_key(), pk);
    // minisign's key ID, as printed in the .pub comment.
    assert!(text.len() > 1);
    let pub_text = std::fs::read_to_string(f("bundle/test.pub")).unwrap();
    assert!(pub_text.contains(&pk.key_id()), "{pub_text}");
}
