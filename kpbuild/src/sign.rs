//! `kpbuild sign`: append a kernel module signature (see the `modsign` crate),
//! and the signing step `kpbuild build --sign-key/--sign-cert` shares.

use crate::exit;
use std::path::{Path, PathBuf};

/// Arguments of `kpbuild sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The RSA private key (PEM: PKCS#8 or PKCS#1, unencrypted).
    #[arg(long)]
    pub key: PathBuf,
    /// The X.509 certificate of the key (PEM or DER), as the target kernel trusts it.
    #[arg(long)]
    pub cert: PathBuf,
    /// Digest algorithm: the target kernel's CONFIG_MODULE_SIG_HASH.
    #[arg(long, default_value = "sha256")]
    pub hash: modsign::Hash,
    /// Write the signed module here instead of replacing MODULE in place.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The module to sign; an existing signature is replaced.
    pub module: PathBuf,
}

/// Signs module bytes with the key and certificate files.
pub fn sign_bytes(
    module: &[u8],
    key: &Path,
    cert: &Path,
    hash: modsign::Hash,
) -> Result<Vec<u8>, String> {
    let key_pem = crate::files::read(key)?;
    let cert_data = crate::files::read(cert)?;
    modsign::sign(module, &key_pem, &cert_data, hash)
        .map_err(|e| format!("signing with {} and {}: {e}", key.display(), cert.display()))
}

/// Runs `kpbuild sign`; returns the exit code.
pub fn run(args: &SignArgs) -> u8 {
    let result = (|| -> Result<_, String> {
        let module = crate::files::read(&args.module)?;
        let signed = sign_bytes(&module, &args.key, &args.cert, args.hash)?;
        let out = args.output.as_ref().unwrap_or(&args.module);
        crate::files::write_atomic(out, &signed)?;
        Ok((out, signed.len()))
    })();
    match result {
        Ok((out, len)) => {
            eprintln!("signed {} ({}, {len} bytes)", out.display(), args.hash);
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("kpbuild sign: error: {e}");
            exit::ERROR
        }
    }
}
