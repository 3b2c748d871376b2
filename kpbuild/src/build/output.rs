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
    Ok((spec, bytes))
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
