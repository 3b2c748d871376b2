//! minisign keys and signatures, byte-compatible with the `minisign` tool.
//!
//! Only the prehashed algorithm (`ED`: Ed25519 over the BLAKE2b-512 of the
//! data) is written and accepted. Ed25519 signatures are deterministic, so
//! equal data, key and trusted comment give equal signature files — the same
//! bytes `minisign -S -t COMMENT` writes. (The `minisign` crate adds random
//! noise to every signature, which is why this is not built on it.)
//!
//! Formats (all binary parts base64):
//! - public key: `untrusted comment: …` line, then `"Ed" keynum[8] pk[32]`;
//! - secret key: comment line, then `"Ed" kdf[2] "B2" salt[32] ops[8] mem[8]
//!   keynum[8] sk[64] checksum[32]`, where `kdf` is `"\0\0"` for an unencrypted
//!   key (`minisign -G -W`) and checksum is BLAKE2b-256 of `"Ed" keynum sk`;
//! - signature: comment line, `"ED" keynum[8] sig[64]`, `trusted comment: …`
//!   line, then the global signature: Ed25519 over `sig || trusted comment`.

use crate::error::{Error, Result, io};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Digest;
use blake2::digest::consts::U32;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::path::Path;

const UNTRUSTED: &str = "untrusted comment: ";
const TRUSTED: &str = "trusted comment: ";
const PUBLIC_LEN: usize = 2 + 8 + 32;
const SECRET_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
const SIGNATURE_LEN: usize = 2 + 8 + 64;

/// A minisign public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    keynum: [u8; 8],
    key: VerifyingKey,
}

/// An unencrypted minisign secret key.
#[derive(Clone)]
pub struct SecretKey {
    keynum: [u8; 8],
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", key_id(&self.keynum))
    }
}

/// The key ID as `minisign` prints it: the key number as a little-endian
/// 64-bit integer in upper-case hex.
fn key_id(keynum: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*keynum))
}

/// What a file that is not the expected minisign key is, for the message.
fn describe(text: &[u8]) -> String {
    if text.iter().all(u8::is_ascii_whitespace) {
        return "an empty file, not a minisign key".into();
    }
    if let Some(rest) = text.strip_prefix(b"-----BEGIN ") {
        let label = rest.split(|&b| b == b'-').next().unwrap_or_default();
        return format!(
            "a PEM file ({}{}), not a minisign key",
            String::from_utf8_lossy(label),
            pem_algorithm(text)
        );
    }
    if text.first() == Some(&0x30) {
        return "looks like a DER (ASN.1) key or certificate, not a minisign key".into();
    }
    if let Some(bin) = payload(text) {
        return match (bin.len(), bin.get(..2)) {
            (PUBLIC_LEN, Some(b"Ed")) => "a minisign public key, not a secret key".into(),
            (SECRET_LEN, Some(b"Ed")) => "a minisign secret key, not a public key".into(),
            (SIGNATURE_LEN, _) => "a minisign signature, not a key".into(),
            (n, _) => format!("a malformed minisign file ({n} bytes of key data)"),
        };
    }
    "not a minisign key file (expected an `untrusted comment:` line and a base64 line)".into()
}

/// The key algorithm of a PEM key, by the object identifier in its DER body.
fn pem_algorithm(text: &[u8]) -> &'static str {
    let body: String = String::from_utf8_lossy(text)
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let Ok(der) = B64.decode(body.trim()) else {
        return "";
    };
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]) {
        ": RSA"
    } else if has(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]) {
        ": EC"
    } else if has(&[0x06, 0x03, 0x2b, 0x65, 0x70]) {
        ": Ed25519 in PKCS#8, which minisign does not read"
    } else {
        ""
    }
}

/// The decoded base64 line after the `untrusted comment:` line, or of a file
/// holding only one base64 line.
fn payload(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next()?;
    let line = if first.starts_with(UNTRUSTED) {
        lines.next()?
    } else {
        first
    };
    B64.decode(line.trim()).ok()
}

impl PublicKey {
    /// Parses a public key file (`minisign -G`'s `.pub`), or a file holding
    /// only its base64 line. `origin` names the file in errors.
    pub fn parse(text: &[u8], origin: &str) -> Result<Self> {
        let bad = || Error::Key {
            file: origin.into(),
            what: describe(text),
        };
        let bin = payload(text).ok_or_else(bad)?;
        if bin.len() != PUBLIC_LEN || &bin[..2] != b"Ed" {
            return Err(bad());
        }
        let keynum = bin[2..10].try_into().expect("8 bytes");
        let key =
            VerifyingKey::from_bytes(bin[10..].try_into().expect("32 bytes")).map_err(|_| {
                Error::Key {
                    file: origin.into(),
                    what: "the public key is not a valid Ed25519 point".into(),
                }
            })?;
        Ok(PublicKey { keynum, key })
    }

    /// Reads and parses a public key file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(io(path))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The key ID, as `minisign` prints it.
    pub fn key_id(&self) -> String {
        key_id(&self.keynum)
    }

    /// The key in minisign's public key file format.
    pub fn to_file_text(&self) -> String {
        let mut bin = b"Ed".to_vec();
        bin.extend_from_slice(&self.keynum);
        bin.extend_from_slice(self.key.as_bytes());
        format!(
            "{UNTRUSTED}minisign public key {}\n{}\n",
            self.key_id(),
            B64.encode(bin)
        )
    }

    /// Verifies a signature file over `data`; returns its trusted comment.
    /// `sig_file` and `data_file` name the two in errors.
    pub fn verify(
        &self,
        data: &[u8],
        signature: &[u8],
        sig_file: &str,
        data_file: &str,
    ) -> Result<String> {
        let malformed = |why: &str| Error::SignatureFormat {
            file: sig_file.into(),
            why: why.into(),
        };
        let text = std::str::from_utf8(signature).map_err(|_| malformed("not UTF-8 text"))?;
        let lines: Vec<&str> = text.lines().collect();
        let [untrusted, sig_line, trusted, global_line] = lines[..] else {
            return Err(malformed(&format!("{} lines, expected 4", lines.len())));
        };
        if !untrusted.starts_with(UNTRUSTED) {
            return Err(malformed("line 1 is not an `untrusted comment:`"));
        }
        let trusted = trusted
            .strip_prefix(TRUSTED)
            .ok_or_else(|| malformed("line 3 is not a `trusted comment:`"))?;
        let bin = B64
            .decode(sig_line)
            .map_err(|_| malformed("line 2 is not base64"))?;
        if bin.len() != SIGNATURE_LEN {
            return Err(malformed(&format!(
                "line 2 holds {} bytes, expected {SIGNATURE_LEN}",
                bin.len()
            )));
        }
        if &bin[..2] != b"ED" {
            return Err(malformed(
                "not the prehashed algorithm (\"ED\"); legacy signatures are not accepted",
            ));
        }
        let global = B64
            .decode(global_line)
            .map_err(|_| malformed("line 4 is not base64"))?;
        let global: [u8; 64] = global
            .try_into()
            .map_err(|_| malformed("line 4 is not a 64-byte signature"))?;
        let keynum: [u8; 8] = bin[2..10].try_into().expect("8 bytes");
        if keynum != self.keynum {
            return Err(Error::WrongKey {
                file: sig_file.into(),
                signed_by: key_id(&keynum),
                expected: self.key_id(),
            });
        }
        let sig: [u8; 64] = bin[10..].try_into().expect("64 bytes");
        let bad = |signed: &str| Error::BadSignature {
            file: sig_file.into(),
            signed: signed.into(),
            key: self.key_id(),
        };
        let digest = blake2::Blake2b512::digest(data);
        self.key
            .verify_strict(&digest, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| bad(data_file))?;
        let mut signed = sig.to_vec();
        signed.extend_from_slice(trusted.as_bytes());
        self.key
            .verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&global))
            .map_err(|_| bad("its trusted comment"))?;
        Ok(trusted.to_string())
    }
}

impl SecretKey {
    /// Parses an unencrypted secret key file (`minisign -G -W`'s `.key`).
    /// `origin` names the file in errors; an encrypted key is refused.
    pub fn parse(text: &[u8], origin: &str) -> Result<Self> {
        let bad = |what: String| Error::Key {
            file: origin.into(),
            what,
        };
        let bin = payload(text).ok_or_else(|| bad(describe(text)))?;
        if bin.len() != SECRET_LEN || &bin[..2] != b"Ed" {
            return Err(bad(describe(text)));
        }
        match &bin[2..4] {
            b"\0\0" => {}
            b"Sc" => {
                return Err(Error::EncryptedKey {
                    file: origin.into(),
                });
            }
            other => {
                return Err(bad(format!(
                    "unknown key derivation {:?} in a minisign secret key",
                    String::from_utf8_lossy(other)
                )));
            }
        }
        if &bin[4..6] != b"B2" {
            return Err(bad(
                "unknown checksum algorithm in a minisign secret key".into()
            ));
        }
        let keynum: [u8; 8] = bin[54..62].try_into().expect("8 bytes");
        let sk = &bin[62..126];
        // minisign checks the checksum only when decrypting, and `-G -W`
        // leaves it zero; a non-zero one must match.
        let mut check = blake2::Blake2b::<U32>::new();
        check.update(b"Ed");
        check.update(keynum);
        check.update(sk);
        let stored = &bin[126..158];
        if stored.iter().any(|&b| b != 0) && check.finalize().as_slice() != stored {
            return Err(bad("corrupt minisign secret key (checksum mismatch)".into()));
        }
        let key = SigningKey::from_bytes(sk[..32].try_into().expect("32 bytes"));
        if key.verifying_key().as_bytes() != &sk[32..] {
            return Err(bad(
                "corrupt minisign secret key (public half does not match)".into(),
            ));
        }
        Ok(SecretKey { keynum, key })
    }

    /// Reads and parses a secret key file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(io(path))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            keynum: self.keynum,
            key: self.key.verifying_key(),
        }
    }

    /// The key ID, as `minisign` prints it.
    pub fn key_id(&self) -> String {
        key_id(&self.keynum)
    }

    /// Checks that this secret key is `public`'s pair.
    pub fn check_pair(&self, public: &PublicKey) -> Result<()> {
        if self.public_key() != *public {
            return Err(Error::KeyPairMismatch {
                secret: self.key_id(),
                public: public.key_id(),
            });
        }
        Ok(())
    }

    /// Signs `data`: the signature file text, deterministic for equal inputs.
    /// The comments must be single lines.
    pub fn sign(&self, data: &[u8], trusted_comment: &str, untrusted_comment: &str) -> String {
        debug_assert!(!trusted_comment.contains('\n') && !untrusted_comment.contains('\n'));
        let digest = blake2::Blake2b512::digest(data);
        let sig = self.key.sign(&digest).to_bytes();
        let mut bin = b"ED".to_vec();
        bin.extend_from_slice(&self.keynum);
        bin.extend_from_slice(&sig);
        let mut signed = sig.to_vec();
        signed.extend_from_slice(trusted_comment.as_bytes());
        let global = self.key.sign(&signed).to_bytes();
        format!(
            "{UNTRUSTED}{untrusted_comment}\n{}\n{TRUSTED}{trusted_comment}\n{}\n",
            B64.encode(bin),
            B64.encode(global)
        )
    }
}
