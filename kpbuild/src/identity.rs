//! Do the files that describe a target belong to one kernel? A tree-less
//! target is given as four separate paths (source, config, vmlinux, module
//! headers); a wrong one among them must stop the build before anything is
//! compiled, naming what disagrees. The checks:
//! - the source's Makefile version is the one vmlinux's release starts with;
//! - vmlinux is a linked ELF kernel with a symbol table and a `Linux version`
//!   banner (its release and compiler);
//! - the headers' `include/config/kernel.release` is vmlinux's release;
//! - the config's `CONFIG_CC_VERSION_TEXT` is the compiler in the banner;
//! - the config's `CONFIG_BUILD_SALT`, when set, is vmlinux's build-salt note;
//! - every option the config and the headers' `.config` both set has the
//!   same value (a distribution's module tree may add build-only options).
//!
//! Pre-match ([`crate::prematch`]) then proves the compiled code itself.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use std::collections::HashMap;
use std::path::Path;

/// What a vmlinux says about itself.
#[derive(Debug, Clone)]
pub struct VmlinuxIdentity {
    /// The release in its banner (`6.12.117+deb12-cloud-amd64`).
    pub release: String,
    /// The whole `Linux version …` banner line.
    pub banner: String,
    /// The GNU build-id, hex.
    pub build_id: Option<String>,
    /// The build-salt note (`Linux`, type 0x100), if any.
    pub build_salt: Option<String>,
    /// Entries of `.symtab`.
    pub symbols: usize,
}

/// `LINUX_ELFNOTE_BUILD_SALT`.
const NT_LINUX_BUILD_SALT: object::elf::NoteType = object::elf::NoteType(0x100);

/// Reads the identity of the vmlinux at `path`.
pub fn read_vmlinux(path: &Path) -> Result<VmlinuxIdentity, String> {
    let data = crate::files::read(path)?;
    vmlinux_identity(&data).map_err(|e| format!("{} (the target's vmlinux): {e}", path.display()))
}

/// The identity of vmlinux bytes.
pub fn vmlinux_identity(data: &[u8]) -> Result<VmlinuxIdentity, String> {
    let file = ElfFile64::<object::Endianness>::parse(data).map_err(|e| {
        format!("not an ELF64 file ({e}); give the unstripped vmlinux, not vmlinuz")
    })?;
    let endian = file.endian();
    if file.elf_header().e_type(endian) != elf::ET_EXEC {
        return Err("not a linked kernel (ELF type is not EXEC)".into());
    }
    let symbols = file
        .elf_section_table()
        .iter()
        .find(|s| s.sh_type(endian) == elf::SHT_SYMTAB)
        .map_or(0, |s| (s.sh_size(endian) / 24) as usize);
    if symbols < 2 {
        return Err(
            "no symbol table: the vmlinux is stripped; give the unstripped one (for a Debian kernel, usr/lib/debug/boot/vmlinux-RELEASE of linux-image-RELEASE-dbg)"
                .into(),
        );
    }
    let banner = kimage::notes::banner(data).map_err(|e| e.to_string())?;
    let release = banner
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let build_id = kimage::notes::gnu_build_id(data).ok();
    let mut build_salt = None;
    for section in file.elf_section_table().iter() {
        let Ok(Some(mut notes)) = section.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if (note.name(), note.n_type(endian)) == (&b"Linux"[..], NT_LINUX_BUILD_SALT) {
                let desc = note.desc();
                let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
                build_salt = Some(String::from_utf8_lossy(&desc[..end]).into_owned());
            }
        }
    }
    Ok(VmlinuxIdentity {
        release,
        banner,
        build_id,
        build_salt,
        symbols,
    })
}

/// Checks that a tree-less target's config, vmlinux and module headers
/// describe one kernel; returns vmlinux's identity.
pub fn check_treeless(
    src: &Path,
    config_text: &str,
    config_path: &Path,
    vmlinux: &Path,
    headers: &Path,
) -> Result<VmlinuxIdentity, String> {
    let id = read_vmlinux(vmlinux)?;
    let makefile = src.join("Makefile");
    let text =
        std::fs::read_to_string(&makefile).map_err(|e| format!("{}: {e}", makefile.display()))?;
    let version = makefile_version(&text)
        .ok_or_else(|| format!("{}: no VERSION/PATCHLEVEL/SUBLEVEL", makefile.display()))?;
    let rest = id.release.strip_prefix(&version);
    if rest.is_none_or(|r| r.starts_with(|c: char| c.is_ascii_digit())) {
        return Err(format!(
            "version mismatch: the source {} is Linux {version}, but {} is {}",
            src.display(),
            vmlinux.display(),
            id.release
        ));
    }
    let release_file = headers.join("include/config/kernel.release");
    let headers_release = std::fs::read_to_string(&release_file)
        .map_err(|e| {
            format!(
                "{}: {e} (is {} a prepared module build directory, /lib/modules/RELEASE/build?)",
                release_file.display(),
                headers.display()
            )
        })?
        .trim()
        .to_string();
    if headers_release != id.release {
        return Err(format!(
            "release mismatch: {} is Linux {}, but the headers {} are for {}",
            vmlinux.display(),
            id.release,
            headers.display(),
            headers_release
        ));
    }
    let config = crate::tree::parse_config(config_text);
    if let Some(cc) = config.get("CONFIG_CC_VERSION_TEXT")
        && !id.banner.contains(&format!("({cc}"))
    {
        return Err(format!(
            "compiler mismatch: {} names `{cc}`, but {} was built by another (its banner: {})",
            config_path.display(),
            vmlinux.display(),
            id.banner
        ));
    }
    if let (Some(salt), Some(note)) = (config.get("CONFIG_BUILD_SALT"), &id.build_salt)
        && !salt.is_empty()
        && salt != note
    {
        return Err(format!(
            "build salt mismatch: {} has CONFIG_BUILD_SALT \"{salt}\", {} has \"{note}\"",
            config_path.display(),
            vmlinux.display()
        ));
    }
    let headers_config_path = headers.join(".config");
    if let Ok(text) = std::fs::read_to_string(&headers_config_path) {
        let theirs = crate::tree::parse_config(&text);
        let differ = differing_options(&config, &theirs);
        if !differ.is_empty() {
            let shown: Vec<String> = differ
                .iter()
                .take(5)
                .map(|(k, a, b)| format!("{k}={a} vs {b}"))
                .collect();
            return Err(format!(
                "config mismatch: {} and {} disagree on {} option(s): {}{}",
                config_path.display(),
                headers_config_path.display(),
                differ.len(),
                shown.join(", "),
                if differ.len() > 5 { ", …" } else { "" }
            ));
        }
    }
    Ok(id)
}

/// `VERSION.PATCHLEVEL.SUBLEVEL` of a kernel's top Makefile.
fn makefile_version(text: &str) -> Option<String> {
    let get = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    Some(format!(
        "{}.{}.{}",
        get("VERSION")?,
        get("PATCHLEVEL")?,
        get("SUBLEVEL")?
    ))
}

/// Options both configs set, to different values: (name, ours, theirs).
fn differing_options<'a>(
    ours: &'a HashMap<String, String>,
    theirs: &'a HashMap<String, String>,
) -> Vec<(&'a str, &'a str, &'a str)> {
    let mut differ: Vec<_> = ours
        .iter()
        .filter_map(|(k, v)| {
            let t = theirs.get(k)?;
            (t != v).then_some((k.as_str(), v.as_str(), t.as_str()))
        })
        .collect();
    differ.sort_unstable();
    differ
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makefile_version_is_read() {
        let text = "# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\n";
        assert_eq!(makefile_version(text).as_deref(), Some("6.12.117"));
        assert_eq!(makefile_version("VERSION = 6\n"), None);
    }

    #[test]
    fn only_options_set_on_both_sides_can_differ() {
        let a: HashMap<String, String> = [("CONFIG_A", "y"), ("CONFIG_B", "1"), ("CONFIG_C", "m")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let b: HashMap<String, String> = [("CONFIG_A", "y"), ("CONFIG_B", "2"), ("CONFIG_D", "y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(differing_options(&a, &b), vec![("CONFIG_B", "1", "2")]);
    }

    #[test]
    fn a_relocatable_object_is_not_a_kernel() {
        let mut obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        obj.add_section(Vec::new(), b".text".to_vec(), object::SectionKind::Text);
        let bytes = obj.write().expect("elf");
        let e = vmlinux_identity(&bytes).unwrap_err();
        assert!(e.contains("not a linked kernel"), "{e}");
        let e = vmlinux_identity(b"\x1f\x8b not elf").unwrap_err();
        assert!(e.contains("not an ELF64 file"), "{e}");
    }
}
