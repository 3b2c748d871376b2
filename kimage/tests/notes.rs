//! The kernel identity of a vmlinux-shaped ELF file made here with `object`.

#![allow(missing_docs)]

use kimage::notes::{gnu_build_id, kernel_release};
use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [name.len() as u32, desc.len() as u32, ty] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn vmlinux(notes: &[u8], rodata: &[u8]) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let n = obj.add_section(Vec::new(), b".notes".to_vec(), SectionKind::Note);
    obj.append_section_data(n, notes, 4);
    let r = obj.add_section(Vec::new(), b".rodata".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(r, rodata, 8);
    obj.write().unwrap()
}

const BANNER: &[u8] = b"\0\0Linux version 6.12.0-test (kpbuild@test) (gcc 12.2.0) #1 SMP\n\0";

#[test]
fn build_id_and_release() {
    let id = [0x12u8, 0x34, 0xab, 0xcd, 0xef, 0x00, 0x99, 0x42];
    let mut notes = note(b"Xen\0", 3, b"xen!");
    notes.extend(note(b"GNU\0", 3, &id));
    let elf = vmlinux(&notes, BANNER);
    assert_eq!(gnu_build_id(&elf).unwrap(), "1234abcdef009942");
    // The same notes as /sys/kernel/notes shows them.
    assert_eq!(gnu_build_id(&notes).unwrap(), "1234abcdef009942");
    assert_eq!(kernel_release(&elf).unwrap(), "6.12.0-test");
}

#[test]
fn missing_identity() {
    let elf = vmlinux(&note(b"GNU\0", 1, b"abi!"), b"Linux versions are many");
    let err = gnu_build_id(&elf).unwrap_err().to_string();
    assert!(err.contains("no GNU build-id note"), "{err}");
    let err = kernel_release(&elf).unwrap_err().to_string();
    assert!(
        err.contains("no \"Linux version RELEASE \" banner in .rodata"),
        "{err}"
    );
    let err = kernel_release(b"plain text").unwrap_err().to_string();
    assert_eq!(err, "not an ELF file");
    let err = gnu_build_id(&elf[..40]).unwrap_err().to_string();
    assert!(err.contains("malformed ELF"), "{err}");
}
