//! `kpbuild sign`: append a kernel module signature (see the `modsign` crate).

use crate::exit;
use crate::files::FileError;
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

/// Why `kpbuild sign` failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A file cannot be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The key, the certificate or the module's existing signature is unusable.
    #[error("signing with {} and {}: {source}", key.display(), cert.display())]
    Sign {
        /// The private key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// Why.
        source: modsign::Error,
    },
}

/// Signs module bytes with the key and certificate files.
pub fn sign_bytes(
    module: &[u8],
    key: &Path,
    cert: &Path,
    hash: modsign::Hash,
) -> Result<Vec<u8>, SignError> {
    let key_pem = crate::files::read(key)?;
    let cert_data = crate::files::read(cert)?;
    modsign::sign(module, &key_pem, &cert_data, hash).map_err(|source| SignError::Sign {
        key: key.to_path_buf(),
        cert: cert.to_path_buf(),
        source,
    })
}

/// Signs the module, writing it to `--output` or in place; returns where
/// and how many bytes.
fn sign_file(args: &SignArgs) -> Result<(&Path, usize), SignError> {
    let module = crate::files::read(&args.module)?;
    let signed = sign_bytes(&module, &args.key, &args.cert, args.hash)?;
    let out = args.output.as_ref().unwrap_or(&args.module);
    crate::files::write_atomic(out, &signed)?;
    Ok((out, signed.len()))
}

/// Runs `kpbuild sign`; returns the exit code.
pub fn run(args: &SignArgs) -> u8 {
    match sign_file(args) {
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
