//! The signer against its fixtures, its error cases, and the kernel's own
//! `scripts/sign-file` as a byte-for-byte oracle.

use modsign::{Error, Hash, parse_signature, sign, sign_at, strip_signature};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/signing")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A stand-in module: the bytes need not be ELF for signing.
fn module() -> Vec<u8> {
    let mut m = b"\x7fELF\x02\x01\x01".to_vec();
    m.extend((0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    m
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("modsign-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn signature_layout_and_parse() {
    let m = module();
    let signed = sign(
        &m,
        &fixture("test-key.pem"),
        &fixture("test-cert.pem"),
        Hash::Sha256,
    )
    .unwrap();
    assert!(signed.starts_with(&m));
    assert!(signed.ends_with(b"~Module signature appended~\n"));
    let info_at = signed.len() - 28 - 12;
    let info = &signed[info_at..info_at + 12];
    assert_eq!(&info[..8], &[0, 0, 2, 0, 0, 0, 0, 0]);
    let sig_len = u32::from_be_bytes(info[8..].try_into().unwrap()) as usize;
    assert_eq!(m.len() + sig_len + 12 + 28, signed.len());
    // DER SEQUENCE, no signed attributes ([0] IMPLICIT inside SignerInfo).
    assert_eq!(signed[m.len()], 0x30);

    let info = parse_signature(&signed).unwrap();
    assert_eq!(info.sig_len as usize, sig_len);
    assert_eq!(info.id_type, 2);
    assert_eq!(info.hash, Some(Hash::Sha256));
    let signer = info.signer.unwrap();
    assert_eq!(signer.issuer, "CN=kpbuild test signing key — TEST ONLY");
    assert!(!signer.serial.is_empty());

    // DER certificate gives the same bytes; re-signing replaces, not stacks.
    let der = sign(
        &m,
        &fixture("test-key.pem"),
        &fixture("test-cert.der"),
        Hash::Sha256,
    )
    .unwrap();
    assert_eq!(der, signed);
    let again = sign(
        &signed,
        &fixture("test-key.pem"),
        &fixture("test-cert.pem"),
        Hash::Sha256,
    )
    .unwrap();
    assert_eq!(again, signed);
    assert_eq!(strip_signature(&signed).unwrap(), m.as_slice());
    let sha512 = sign(
        &signed,
        &fixture("test-key.pem"),
        &fixture("test-cert.pem"),
        Hash::Sha512,
    )
    .unwrap();
    assert_eq!(parse_signature(&sha512).unwrap().hash, Some(Hash::Sha512));
    assert_eq!(strip_signature(&sha512).unwrap(), m.as_slice());
}

#[test]
fn wrong_key_type_is_refused() {
    let err = sign(
        &module(),
        &fixture("ec-key.pem"),
        &fixture("test-cert.pem"),
        Hash::Sha256,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRsa {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn key_certificate_mismatch_is_refused() {
    let err = sign(
        &module(),
        &fixture("other-key.pem"),
        &fixture("test-cert.pem"),
        Hash::Sha256,
    )
    .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch), "{err}");
}

#[test]
fn certificate_validity_is_checked() {
    let (key, cert) = (fixture("test-key.pem"), fixture("test-cert.pem"));
    let years = |n: u64| Duration::from_secs(n * 365 * 24 * 3600);
    let past = SystemTime::UNIX_EPOCH + years(40);
    let err = sign_at(&module(), &key, &cert, Hash::Sha256, past).unwrap_err();
    assert!(matches!(err, Error::NotYetValid(_)), "{err}");
    let future = SystemTime::now() + years(101);
    let err = sign_at(&module(), &key, &cert, Hash::Sha256, future).unwrap_err();
    assert!(matches!(err, Error::Expired(_)), "{err}");
    sign_at(
        &module(),
        &key,
        &cert,
        Hash::Sha256,
        SystemTime::now() + years(99),
    )
    .unwrap();
}

#[test]
fn malformed_inputs_are_errors() {
    let (key, cert) = (fixture("test-key.pem"), fixture("test-cert.pem"));
    let err = sign(&module(), b"not a key", &cert, Hash::Sha256).unwrap_err();
    assert!(matches!(err, Error::MalformedKey(_)), "{err}");
    let err = sign(
        &module(),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        &cert,
        Hash::Sha256,
    )
    .unwrap_err();
    assert!(matches!(err, Error::MalformedKey(_)), "{err}");
    let err = sign(&module(), &key, b"\x30\x03\x02\x01\x01", Hash::Sha256).unwrap_err();
    assert!(matches!(err, Error::MalformedCertificate(_)), "{err}");
    // A key where the certificate belongs.
    let err = sign(&module(), &key, &key, Hash::Sha256).unwrap_err();
    assert!(matches!(err, Error::MalformedCertificate(_)), "{err}");
    let mut truncated = cert.clone();
    truncated.truncate(cert.len() / 2);
    let err = sign(&module(), &key, &truncated, Hash::Sha256).unwrap_err();
    assert!(matches!(err, Error::MalformedCertificate(_)), "{err}");
}

/// Compiles the kernel's `scripts/sign-file` from the module-signing test
/// kernel's source.
fn sign_file() -> Option<PathBuf> {
    let source = testbed::oracle::signing_kernel()?
        .src
        .join("scripts/sign-file.c");
    let gcc = testbed::oracle::tool("gcc", "build-essential")?;
    let dir = scratch("sign-file");
    let binary = dir.join("sign-file");
    let out = Command::new(gcc)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .arg("-lcrypto")
        .output()
        .expect("gcc runs");
    testbed::oracle::need(
        &format!("{} built with libcrypto", source.display()),
        &format!(
            "install the Debian package libssl-dev (gcc said: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        out.status.success().then_some(binary),
    )
}

#[test]
fn byte_identical_to_kernel_sign_file() {
    let Some(sign_file) = sign_file() else {
        return;
    };
    let dir = sign_file.parent().unwrap().to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/signing");
    let m = module();
    for hash in [Hash::Sha256, Hash::Sha512] {
        for cert in ["test-cert.pem", "test-cert.der"] {
            let path = dir.join(format!("m-{hash}.ko"));
            std::fs::write(&path, &m).unwrap();
            let out = Command::new(&sign_file)
                .arg(hash.name())
                .arg(root.join("test-key.pem"))
                .arg(root.join(cert))
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = std::fs::read(&path).unwrap();
            let ours = sign(&m, &fixture("test-key.pem"), &fixture(cert), hash).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{hash} {cert}: lengths differ");
            assert!(ours == theirs, "{hash} {cert}: bytes differ");
            eprintln!(
                "{hash} {cert}: byte-identical to sign-file ({} bytes)",
                ours.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
