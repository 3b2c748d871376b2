//! What identifies a kernel build: the GNU build-id note and the release in
//! the `Linux version` banner.
//!
//! The running kernel exposes its notes in `/sys/kernel/notes` (a raw ELF
//! note stream); a vmlinux carries the same notes in its `SHT_NOTE` sections
//! (`.notes`). Equal build-ids mean the same kernel image, which is what a
//! livepatch is built against.

use crate::{Error, hex};

type Result<T> = std::result::Result<T, Error>;
use object::elf;
use object::read::elf::{ElfFile64, SectionHeader as _};
use object::{LittleEndian as LE, Object as _, ObjectSection as _};

/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;

fn parse_elf(data: &[u8]) -> Result<ElfFile64<'_, LE>> {
    // e_ident[EI_CLASS] = ELFCLASS64 (2), e_ident[EI_DATA] = ELFDATA2LSB (1).
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(Error::Notes(
            "not a 64-bit little-endian ELF file (x86_64 vmlinux expected)".into(),
        ));
    }
    ElfFile64::parse(data).map_err(|e| Error::Notes(format!("malformed ELF: {e}")))
}

/// Walks a raw note stream (4-byte aligned records, as in
/// `/sys/kernel/notes`); returns the descriptor of the first `GNU` note of
/// type `n_type`.
fn find_raw_note(mut data: &[u8], n_type: u32) -> Result<Option<&[u8]>> {
    let word = |d: &[u8], i: usize| {
        u32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as usize
    };
    while !data.is_empty() {
        if data.len() < 12 {
            return Err(Error::Notes(format!(
                "truncated note stream: {} bytes where a 12-byte note header belongs",
                data.len()
            )));
        }
        let (namesz, descsz, ty) = (word(data, 0), word(data, 1), word(data, 2) as u32);
        let name_end = 12usize.saturating_add(namesz);
        let desc_start = name_end.checked_next_multiple_of(4).unwrap_or(usize::MAX);
        let desc_end = desc_start.saturating_add(descsz);
        let next = desc_end.checked_next_multiple_of(4).unwrap_or(usize::MAX);
        if desc_end > data.len() {
            return Err(Error::Notes(format!(
                "truncated note stream: a note of {namesz}+{descsz} bytes runs past the end"
            )));
        }
        if ty == n_type && &data[12..name_end] == b"GNU\0" {
            return Ok(Some(&data[desc_start..desc_end]));
        }
        data = data.get(next..).unwrap_or_default();
    }
    Ok(None)
}

/// The GNU build-id (lowercase hex) of an ELF file (from its `SHT_NOTE`
/// sections) or of a raw note stream such as `/sys/kernel/notes`.
pub fn gnu_build_id(data: &[u8]) -> Result<String> {
    let id = if data.starts_with(&elf::ELFMAG) {
        let file = parse_elf(data)?;
        let endian = file.endian();
        let mut found = None;
        for section in file.sections() {
            let header = section.elf_section_header();
            if header.sh_type(endian) != elf::SHT_NOTE {
                continue;
            }
            let mut notes = header
                .notes(endian, data)
                .map_err(|e| Error::Notes(format!("section {}: {e}", name(&section))))?
                .into_iter()
                .flatten();
            while let Some(note) = notes
                .next()
                .transpose()
                .map_err(|e| Error::Notes(format!("section {}: {e}", name(&section))))?
            {
                if note.n_type(endian) == elf::NT_GNU_BUILD_ID && note.name() == elf::ELF_NOTE_GNU {
                    found = Some(note.desc().to_vec());
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        found
    } else {
        find_raw_note(data, NT_GNU_BUILD_ID)?.map(<[u8]>::to_vec)
    };
    match id {
        Some(id) if !id.is_empty() => Ok(hex(&id)),
        _ => Err(Error::Notes(
            "no GNU build-id note (NT_GNU_BUILD_ID); was the kernel linked with --build-id?".into(),
        )),
    }
}

fn name(section: &object::read::elf::ElfSection64<'_, '_, LE>) -> String {
    section.name().unwrap_or("?").to_string()
}

/// The `Linux version RELEASE (…` banner line of a vmlinux (from `.rodata`,
/// up to its newline).
pub fn banner(vmlinux: &[u8]) -> Result<String> {
    if !vmlinux.starts_with(&elf::ELFMAG) {
        return Err(Error::Notes("not an ELF file".into()));
    }
    let file = parse_elf(vmlinux)?;
    let rodata = file
        .section_by_name(".rodata")
        .ok_or_else(|| Error::Notes("no .rodata section".into()))?
        .data()
        .map_err(|e| Error::Notes(format!("section .rodata: {e}")))?;
    const BANNER: &[u8] = b"Linux version ";
    rodata
        .windows(BANNER.len())
        .enumerate()
        .filter(|(_, w)| *w == BANNER)
        .find_map(|(i, _)| {
            let line = &rodata[i..];
            let end = line
                .iter()
                .position(|&b| b == 0 || b == b'\n')
                .unwrap_or(line.len());
            let line = &line[..end];
            let release = &line[BANNER.len()..];
            let release_end = release
                .iter()
                .position(|&b| !b.is_ascii_graphic())
                .unwrap_or(release.len());
            (release_end > 0 && release.get(release_end) == Some(&b' '))
                .then(|| String::from_utf8_lossy(line).into_owned())
        })
        .ok_or_else(|| {
            Error::Notes("no \"Linux version RELEASE \" banner in .rodata: not a vmlinux".into())
        })
}

/// The kernel release of a vmlinux: `RELEASE` in its [`banner`].
pub fn kernel_release(vmlinux: &[u8]) -> Result<String> {
    Ok(banner(vmlinux)?
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn raw_note_stream() {
        // A Xen note first, as x86 kernels carry, then the build-id.
        let mut stream = note(b"Xen\0", 3, &[1, 2, 3]);
        stream.extend(note(b"GNU\0", 3, &[0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(gnu_build_id(&stream).unwrap(), "deadbeef");
        let only_xen = note(b"Xen\0", 3, &[1, 2, 3]);
        assert!(
            gnu_build_id(&only_xen)
                .unwrap_err()
                .to_string()
                .contains("no GNU build-id note")
        );
        for cut in 1..stream.len() {
            // Never a panic; a cut inside the build-id note is an error.
            let r = gnu_build_id(&stream[..cut]);
            assert!(r.is_err() || cut >= stream.len(), "cut {cut}: {r:?}");
        }
    }

    #[test]
    fn not_an_elf_file() {
        assert!(kernel_release(b"hello").is_err());
        assert!(gnu_build_id(b"\x7fELF\x01\x01").is_err());
    }
}
