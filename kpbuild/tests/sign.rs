//! `kpbuild sign` and what `kpbuild inspect` then shows about the signature.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/signing")
        .join(name)
}

fn kpbuild(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A module-shaped ELF object with a `.modinfo`.
fn tiny_module() -> Vec<u8> {
    use object::write;
    let mut obj = write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    let section = obj.add_section(
        Vec::new(),
        b".modinfo".to_vec(),
        object::SectionKind::ReadOnlyData,
    );
    obj.append_section_data(
        section,
        b"license=GPL\0livepatch=Y\0name=kpb_tiny\0vermagic=6.12.117 SMP mod_unload \0",
        1,
    );
    obj.write().unwrap()
}

#[test]
fn sign_in_place_and_to_output_then_inspect() {
    let dir = std::env::temp_dir().join(format!("kpbuild-sign-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("tiny.ko");
    let plain = tiny_module();
    std::fs::write(&module, &plain).unwrap();
    let (key, cert, der) = (
        fixture("test-key.pem"),
        fixture("test-cert.pem"),
        fixture("test-cert.der"),
    );

    let out = dir.join("tiny-512.ko");
    let (code, _, stderr) = kpbuild(&[
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--cert".as_ref(),
        der.as_os_str(),
        "--hash".as_ref(),
        "sha512".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        module.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read(&module).unwrap(),
        plain,
        "-o left the input alone"
    );

    let (code, _, stderr) = kpbuild(&[
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--cert".as_ref(),
        cert.as_os_str(),
        module.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let signed = std::fs::read(&module).unwrap();
    assert!(signed.starts_with(&plain) && signed.ends_with(b"~Module signature appended~\n"));

    let (code, stdout, stderr) = kpbuild(&["inspect".as_ref(), module.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("signature: appended (PKCS#7, "), "{stdout}");
    assert!(
        stdout.contains("  signer: CN=kpbuild test signing key — TEST ONLY, serial "),
        "{stdout}"
    );
    assert!(stdout.contains("  hash: sha256"), "{stdout}");
    let (code, stdout, _) = kpbuild(&["inspect".as_ref(), "--json".as_ref(), out.as_os_str()]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["signature"]["hash"], "sha512");
    assert!(json["problems"].as_array().unwrap().is_empty(), "{json:#}");

    // A key that is not the certificate's: exit 1, the module untouched.
    let (code, _, stderr) = kpbuild(&[
        "sign".as_ref(),
        "--key".as_ref(),
        fixture("other-key.pem").as_os_str(),
        "--cert".as_ref(),
        cert.as_os_str(),
        module.as_os_str(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("does not match the certificate"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&module).unwrap(), signed);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reader that goes away early (`kpbuild inspect … | head`) ends kpbuild
/// quietly with success, never with a panic about the broken pipe.
#[test]
fn closed_stdout_is_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("kpbuild-epipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("tiny.ko");
    std::fs::write(&module, tiny_module()).unwrap();
    for _ in 0..3 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kpbuild"))
            .args(["inspect", "--json"])
            .arg(&module)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
