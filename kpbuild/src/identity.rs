//! Do the files that describe a target belong to one kernel? A tree-less
//! target is given as four separate paths (source, config, vmlinux, module
//! headers); a wrong one among them must stop the build before anything is
//! compiled, naming what disagrees. The checks:
//! - the source's Makefile version is the upstream part of the Debian
//!   package version vmlinux's banner names (`… Debian 6.1.192-3 (date)`:
//!   Debian 6.1's ABI-style releases such as `6.1.0-57-cloud-amd64` carry no
//!   upstream version), or else the one vmlinux's release starts with;
//! - vmlinux is a linked ELF kernel with a symbol table and a `Linux version`
//!   banner (its release and compiler);
//! - the headers' `include/config/kernel.release` is vmlinux's release;
//! - the config's `CONFIG_CC_VERSION_TEXT` is the compiler in the banner;
//! - the config's `CONFIG_BUILD_SALT`, when set, is vmlinux's build-salt note;
//! - every option the config and the headers' `.config` both set has the
//!   same value (a distribution's module tree may add build-only options).
//!
//! Pre-match ([`crate::prematch`]) then proves the compiled code itself.

use crate::files::FileError;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A file that is not the unstripped vmlinux of a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmlinuxError {
    /// Not an ELF64 file at all.
    #[error("not an ELF64 file ({0}); give the unstripped vmlinux, not vmlinuz")]
    NotElf(object::Error),
    /// A relocatable object or a shared object.
    #[error("not a linked kernel (ELF type is not EXEC)")]
    NotExec,
    /// No symbol table.
    #[error(
        "no symbol table: the vmlinux is stripped; give the unstripped one (for a Debian kernel, usr/lib/debug/boot/vmlinux-RELEASE of linux-image-RELEASE-dbg)"
    )]
    Stripped,
    /// No banner.
    #[error(transparent)]
    Notes(#[from] kimage::Error),
}

/// The files of a tree-less target do not describe one kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The vmlinux is not usable.
    #[error("{} (the target's vmlinux): {source}", path.display())]
    Vmlinux {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: VmlinuxError,
    },
    /// The source's Makefile has no version.
    #[error("{}: no VERSION/PATCHLEVEL/SUBLEVEL", .0.display())]
    NoVersion(PathBuf),
    /// The source is another version.
    #[error(
        "version mismatch: the source {} is Linux {version}, but {} is {release}{}",
        src.display(),
        vmlinux.display(),
        debian.as_ref().map(|d| format!(" (Debian {d}, Linux {})", crate::debian::release::upstream_of(d))).unwrap_or_default()
    )]
    VersionMismatch {
        /// The source tree.
        src: PathBuf,
        /// Its Makefile version.
        version: String,
        /// The vmlinux.
        vmlinux: PathBuf,
        /// Its release.
        release: String,
        /// The Debian package version its banner names, if any.
        debian: Option<String>,
    },
    /// The headers do not say their release.
    #[error(
        "{}: {source} (is {} a prepared module build directory, /lib/modules/RELEASE/build?)",
        path.display(),
        headers.display()
    )]
    HeadersRelease {
        /// `include/config/kernel.release`.
        path: PathBuf,
        /// The headers.
        headers: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The headers are another release.
    #[error(
        "release mismatch: {} is Linux {release}, but the headers {} are for {headers_release}",
        vmlinux.display(),
        headers.display()
    )]
    ReleaseMismatch {
        /// The vmlinux.
        vmlinux: PathBuf,
        /// Its release.
        release: String,
        /// The headers.
        headers: PathBuf,
        /// Their release.
        headers_release: String,
    },
    /// The config names another compiler.
    #[error(
        "compiler mismatch: {} names `{cc}`, but {} was built by another (its banner: {banner})",
        config.display(),
        vmlinux.display()
    )]
    CompilerMismatch {
        /// The config.
        config: PathBuf,
        /// Its `CONFIG_CC_VERSION_TEXT`.
        cc: String,
        /// The vmlinux.
        vmlinux: PathBuf,
        /// Its banner.
        banner: String,
    },
    /// The config's build salt is not vmlinux's.
    #[error(
        "build salt mismatch: {} has CONFIG_BUILD_SALT \"{salt}\", {} has \"{note}\"",
        config.display(),
        vmlinux.display()
    )]
    SaltMismatch {
        /// The config.
        config: PathBuf,
        /// Its salt.
        salt: String,
        /// The vmlinux.
        vmlinux: PathBuf,
        /// The salt in its note.
        note: String,
    },
    /// The config and the headers' config disagree.
    #[error(
        "config mismatch: {} and {} disagree on {} option(s): {}{}",
        config.display(),
        headers_config.display(),
        differ.len(),
        differ.iter().take(5).map(|(k, a, b)| format!("{k}={a} vs {b}")).collect::<Vec<_>>().join(", "),
        if differ.len() > 5 { ", …" } else { "" }
    )]
    ConfigMismatch {
        /// The config.
        config: PathBuf,
        /// The headers' `.config`.
        headers_config: PathBuf,
        /// (option, ours, theirs) of each option they disagree on.
        differ: Vec<(String, String, String)>,
    },
}

/// What a vmlinux says about itself.
#[derive(Debug, Clone)]
pub struct VmlinuxIdentity {
    /// The release in its banner (`6.12.117+deb12-cloud-amd64`).
    pub release: String,
    /// The Debian package version the banner names (`6.1.192-3` of
    /// `#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-…)`), if any.
    pub debian_version: Option<String>,
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
pub fn read_vmlinux(path: &Path) -> Result<VmlinuxIdentity, IdentityError> {
    let data = crate::files::read_elf_without_dwarf(path)?;
    vmlinux_identity(&data).map_err(|source| IdentityError::Vmlinux {
        path: path.to_path_buf(),
        source,
    })
}

/// The identity of vmlinux bytes.
pub fn vmlinux_identity(data: &[u8]) -> Result<VmlinuxIdentity, VmlinuxError> {
    let file = ElfFile64::<object::Endianness>::parse(data).map_err(VmlinuxError::NotElf)?;
    let endian = file.endian();
    if file.elf_header().e_type(endian) != elf::ET_EXEC {
        return Err(VmlinuxError::NotExec);
    }
    let symbols = file
        .elf_section_table()
        .iter()
        .find(|s| s.sh_type(endian) == elf::SHT_SYMTAB)
        .map_or(0, |s| (s.sh_size(endian) / 24) as usize);
    if symbols < 2 {
        return Err(VmlinuxError::Stripped);
    }
    let banner = kimage::notes::banner(data)?;
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
        debian_version: banner_debian_version(&banner),
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
) -> Result<VmlinuxIdentity, IdentityError> {
    let id = read_vmlinux(vmlinux)?;
    check_source_version(src, vmlinux, &id)?;
    check_headers_release(headers, vmlinux, &id)?;
    let config = crate::tree::parse_config(config_text);
    if let Some(cc) = config.get("CONFIG_CC_VERSION_TEXT")
        && !id.banner.contains(&format!("({cc}"))
    {
        return Err(IdentityError::CompilerMismatch {
            config: config_path.to_path_buf(),
            cc: cc.clone(),
            vmlinux: vmlinux.to_path_buf(),
            banner: id.banner.clone(),
        });
    }
    if let (Some(salt), Some(note)) = (config.get("CONFIG_BUILD_SALT"), &id.build_salt)
        && !salt.is_empty()
        && salt != note
    {
        return Err(IdentityError::SaltMismatch {
            config: config_path.to_path_buf(),
            salt: salt.clone(),
            vmlinux: vmlinux.to_path_buf(),
            note: note.clone(),
        });
    }
    let headers_config = headers.join(".config");
    if let Ok(text) = std::fs::read_to_string(&headers_config) {
        let theirs = crate::tree::parse_config(&text);
        let differ = differing_options(&config, &theirs);
        if !differ.is_empty() {
            return Err(IdentityError::ConfigMismatch {
                config: config_path.to_path_buf(),
                headers_config,
                differ: differ
                    .into_iter()
                    .map(|(k, a, b)| (k.to_string(), a.to_string(), b.to_string()))
                    .collect(),
            });
        }
    }
    Ok(id)
}

/// The Debian package version in a banner's version part (after `#`):
/// `#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-…)` → `6.1.192-3`. The
/// compiler part (`(Debian 12.2.0-14+deb12u1)`) comes before `#`.
pub fn banner_debian_version(banner: &str) -> Option<String> {
    let build = &banner[banner.rfind('#')?..];
    let mut words = build.split_whitespace();
    words.find(|w| *w == "Debian")?;
    words
        .next()
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// Whether a source of Makefile version `version` is the kernel's: the
/// upstream part of the banner's Debian version when it names one, else
/// the release's prefix (`6.12.117` of `6.12.117+deb12-cloud-amd64`).
fn source_matches(version: &str, id: &VmlinuxIdentity) -> bool {
    match &id.debian_version {
        Some(d) => crate::debian::release::upstream_of(d) == version,
        None => id
            .release
            .strip_prefix(version)
            .is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_digit())),
    }
}

/// The source's Makefile version is the kernel's ([`source_matches`]).
fn check_source_version(
    src: &Path,
    vmlinux: &Path,
    id: &VmlinuxIdentity,
) -> Result<(), IdentityError> {
    let makefile = src.join("Makefile");
    let text = crate::files::read_to_string(&makefile)?;
    let version = makefile_version(&text).ok_or(IdentityError::NoVersion(makefile))?;
    if !source_matches(&version, id) {
        return Err(IdentityError::VersionMismatch {
            src: src.to_path_buf(),
            version,
            vmlinux: vmlinux.to_path_buf(),
            release: id.release.clone(),
            debian: id.debian_version.clone(),
        });
    }
    Ok(())
}

/// The headers' `include/config/kernel.release` is vmlinux's release.
fn check_headers_release(
    headers: &Path,
    vmlinux: &Path,
    id: &VmlinuxIdentity,
) -> Result<(), IdentityError> {
    let path = headers.join("include/config/kernel.release");
    let headers_release = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_string(),
        Err(source) => {
            return Err(IdentityError::HeadersRelease {
                path,
                headers: headers.to_path_buf(),
                source,
            });
        }
    };
    let uts = std::fs::read_to_string(headers.join("include/generated/utsrelease.h"))
        .ok()
        .and_then(|t| uts_release(&t));
    if !headers_match(&headers_release, uts.as_deref(), id) {
        return Err(IdentityError::ReleaseMismatch {
            vmlinux: vmlinux.to_path_buf(),
            release: id.release.clone(),
            headers: headers.to_path_buf(),
            headers_release,
        });
    }
    Ok(())
}

/// `UTS_RELEASE` of `include/generated/utsrelease.h`.
fn uts_release(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("#define UTS_RELEASE")?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

/// Whether headers whose `kernel.release` is `kernel_release` (and whose
/// `utsrelease.h` says `uts`) are vmlinux's. Debian's 6.1 header packages
/// record the upstream version there (`6.1.192`) while the modules they
/// build carry the ABI-style release (`UTS_RELEASE "6.1.0-57-cloud-amd64"`):
/// that pair is accepted when the banner's Debian version is that upstream
/// version and `UTS_RELEASE` is the banner's release.
fn headers_match(kernel_release: &str, uts: Option<&str>, id: &VmlinuxIdentity) -> bool {
    if kernel_release == id.release {
        return true;
    }
    id.debian_version.as_deref().is_some_and(|d| {
        crate::debian::release::upstream_of(d) == kernel_release && uts == Some(id.release.as_str())
    })
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

    fn identity(release: &str, banner: &str) -> VmlinuxIdentity {
        VmlinuxIdentity {
            release: release.into(),
            debian_version: banner_debian_version(banner),
            banner: banner.into(),
            build_id: None,
            build_salt: None,
            symbols: 2,
        }
    }

    #[test]
    fn banners_of_both_release_schemes() {
        let b61 = "Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-20)";
        assert_eq!(banner_debian_version(b61).as_deref(), Some("6.1.192-3"));
        let id = identity("6.1.0-57-cloud-amd64", b61);
        assert!(source_matches("6.1.192", &id));
        assert!(!source_matches("6.1.190", &id));
        assert!(!source_matches("6.1.0", &id));
        let b612 = "Linux version 6.12.115+deb12-cloud-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.12.115-2~deb12u1 (2026-10-01)";
        assert_eq!(
            banner_debian_version(b612).as_deref(),
            Some("6.12.115-2~deb12u1")
        );
        let id = identity("6.12.115+deb12-cloud-amd64", b612);
        assert!(source_matches("6.12.115", &id));
        assert!(!source_matches("6.12.118", &id));
        // A kernel built from the source by hand: no Debian version, the
        // release prefix decides.
        let own = "Linux version 6.12.118 (root@host) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Mon Dec  7 10:00:00 UTC 2026";
        assert_eq!(banner_debian_version(own), None);
        assert!(source_matches("6.12.118", &identity("6.12.118", own)));
        assert!(!source_matches("6.12.11", &identity("6.12.118", own)));
        assert!(source_matches("6.12.118", &identity("6.12.118-rc1", own)));
    }

    #[test]
    fn debian_6_1_headers_name_the_upstream_version() {
        let b61 = "Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-20)";
        let id = identity("6.1.0-57-cloud-amd64", b61);
        let uts = uts_release("#define UTS_RELEASE \"6.1.0-57-cloud-amd64\"\n");
        assert_eq!(uts.as_deref(), Some("6.1.0-57-cloud-amd64"));
        assert!(headers_match("6.1.192", uts.as_deref(), &id));
        assert!(headers_match("6.1.0-57-cloud-amd64", None, &id));
        assert!(!headers_match("6.1.192", Some("6.1.0-56-cloud-amd64"), &id));
        assert!(!headers_match("6.1.190", uts.as_deref(), &id));
        assert!(!headers_match("6.1.192", None, &id));
        let own = identity("6.12.118", "Linux version 6.12.118 (root@h) (gcc) #1 SMP");
        assert!(!headers_match("6.12.117", Some("6.12.118"), &own));
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
        let e = vmlinux_identity(&bytes).unwrap_err().to_string();
        assert!(e.contains("not a linked kernel"), "{e}");
        let e = vmlinux_identity(b"\x1f\x8b not elf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an ELF64 file"), "{e}");
    }
}
