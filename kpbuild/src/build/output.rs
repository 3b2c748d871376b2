//! Stage 6: the livepatch module, its signature, and the outputs: NAME.ko
//! and report.json, written only once everything before succeeded.

use super::error::BuildError;
use super::relocate::Relocated;
use super::report::{BuildReport, SignatureReport};
use super::request::BuildRequest;
use crate::module::ModuleSpec;
use crate::tree::TargetTree;
use std::path::Path;

/// The module's bytes, signed when the request asked for it.
pub struct SignedModule {
    /// The `.ko`.
    pub bytes: Vec<u8>,
    /// How it was signed.
    pub signature: Option<SignatureReport>,
}

/// Builds the livepatch module in `work/module`; returns its spec and bytes.
pub fn module(
    req: &BuildRequest,
    tree: &TargetTree,
    relocated: Relocated,
    work: &Path,
) -> Result<(ModuleSpec, Vec<u8>), BuildError> {
    let spec = ModuleSpec {
        name: req.name.clone(),
        replace: req.replace,
        objects: relocated.objects,
    };
    let exports = &relocated.exports;
    let ko = crate::module::build_module(
        &spec,
        &relocated.patch_objects,
        &tree.module_build,
        &work.join("module"),
        &|s| exports.contains(s),
        &tree.toolchain,
    )?;
    let bytes = crate::files::read(&ko)?;
    check_versions(&ko, &bytes, exports, &tree.symvers)?;
    Ok((spec, bytes))
}

/// Every symbol version modpost wrote into the module must be the one the
/// target exports the symbol with: the module loader compares them and
/// refuses the module on any difference. modpost takes them from the build
/// directory's Module.symvers, which must be the target's own.
fn check_versions(
    ko: &Path,
    bytes: &[u8],
    exports: &relocator::target::Exports,
    symvers: &Path,
) -> Result<(), BuildError> {
    let versions = relocator::klp::module_versions(bytes).map_err(|source| {
        crate::module::ModuleError::Convert {
            path: ko.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    for (symbol, module_crc) in versions {
        // A kernel without `module_layout` among its exports checks it
        // against itself, not against Module.symvers.
        if symbol == "module_layout" && !exports.contains(&symbol) {
            continue;
        }
        let kernel_crc = exports
            .export(&symbol)
            .and_then(|e| e.crc)
            .map(|c| c as u32);
        if kernel_crc != Some(module_crc) {
            return Err(BuildError::VersionMismatch {
                symbol,
                module_crc,
                kernel_crc,
                symvers: symvers.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Signs the module with the request's key, with the digest the target
/// kernel signs its modules with.
pub fn sign(
    req: &BuildRequest,
    tree: &TargetTree,
    bytes: Vec<u8>,
) -> Result<SignedModule, BuildError> {
    let Some(signing) = &req.signing else {
        return Ok(SignedModule {
            bytes,
            signature: None,
        });
    };
    let hash = match tree.config.get("CONFIG_MODULE_SIG_HASH") {
        None => modsign::Hash::Sha256,
        Some(name) => name.parse().map_err(|reason| BuildError::SignatureHash {
            build: tree.build.clone(),
            reason,
        })?,
    };
    let key = crate::files::read(&signing.key)?;
    let cert = crate::files::read(&signing.cert)?;
    let bytes = modsign::sign(&bytes, &key, &cert, hash).map_err(|source| BuildError::Sign {
        key: signing.key.clone(),
        cert: signing.cert.clone(),
        source,
    })?;
    Ok(SignedModule {
        bytes,
        signature: Some(SignatureReport {
            certificate: signing.cert.clone(),
            hash: hash.name(),
        }),
    })
}

/// Writes NAME.ko and report.json into the output directory (atomically,
/// each).
pub fn write(
    req: &BuildRequest,
    report: &BuildReport,
    module: &SignedModule,
) -> Result<(), BuildError> {
    crate::files::create_dir_all(&req.out)?;
    let report_text = serde_json::to_string_pretty(report).expect("json");
    crate::files::write_atomic(&req.out.join(format!("{}.ko", req.name)), &module.bytes)?;
    crate::files::write_atomic(&req.out.join("report.json"), report_text.as_bytes())?;
    Ok(())
}

/// The closing lines: each patched function, and what was written.
pub fn announce(req: &BuildRequest, spec: &ModuleSpec, seconds: f64) {
    for o in &spec.objects {
        for f in &o.funcs {
            req.progress.line(&format!(
                "  patched {} in {} (position {})",
                f.old_name,
                o.name.as_deref().unwrap_or("vmlinux"),
                f.sympos
            ));
        }
    }
    req.progress.line(&format!(
        "wrote {} and report.json in {seconds:.1} s",
        req.out.join(format!("{}.ko", req.name)).display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};

    fn module_with_versions(entries: &[(u32, &str)]) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let section = obj.add_section(Vec::new(), b"__versions".to_vec(), SectionKind::Data);
        for (crc, name) in entries {
            let mut entry = u64::from(*crc).to_le_bytes().to_vec();
            entry.extend_from_slice(name.as_bytes());
            entry.resize(64, 0);
            obj.append_section_data(section, &entry, 32);
        }
        obj.write().unwrap()
    }

    #[test]
    fn versions_must_be_the_targets() {
        let exports = relocator::target::Exports::from_module_symvers(
            "0x0b2981f9\tput_device\tvmlinux\tEXPORT_SYMBOL\t\n\
             0x2f9b2b9a\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n",
        )
        .unwrap();
        let ko = Path::new("kpb.ko");
        let symvers = Path::new("/target/Module.symvers");
        let same =
            module_with_versions(&[(0x0b29_81f9, "put_device"), (0x2f9b_2b9a, "module_layout")]);
        check_versions(ko, &same, &exports, symvers).unwrap();

        let changed = module_with_versions(&[(0x3f79_6d60, "put_device")]);
        let err = check_versions(ko, &changed, &exports, symvers).unwrap_err();
        assert_eq!(err.kind(), super::super::error::ErrorKind::Refused);
        assert_eq!(
            err.to_string(),
            "the module would not load: its __versions entry for put_device is 0x3f796d60, \
             but the target kernel has 0x0b2981f9 (Module.symvers /target/Module.symvers); \
             the module must be versioned against the running kernel's exports"
        );

        let unknown = module_with_versions(&[(1, "kpatch_string")]);
        let err = check_versions(ko, &unknown, &exports, symvers).unwrap_err();
        assert!(
            err.to_string()
                .contains("for kpatch_string is 0x00000001, but the target kernel does not export it with a CRC"),
            "{err}"
        );

        // A kernel that does not export module_layout checks it itself.
        let bare = relocator::target::Exports::from_module_symvers(
            "0x0b2981f9\tput_device\tvmlinux\tEXPORT_SYMBOL\t\n",
        )
        .unwrap();
        check_versions(ko, &same, &bare, symvers).unwrap();
    }
}
