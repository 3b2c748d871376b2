//! Kernel module signatures, as the kernel's `scripts/sign-file` makes them.
//!
//! A signed module is the module bytes followed by
//!
//! 1. a DER CMS `SignedData` (RFC 5652): detached, no certificates, **no
//!    signed attributes** (the kernel refuses those for modules), one
//!    `SignerInfo` naming the certificate by issuer and serial number, with a
//!    PKCS#1 v1.5 RSA signature over the SHA-256 or SHA-512 digest of the module;
//! 2. the 12-byte `struct module_signature` (`algo`, `hash`, `id_type` = 2
//!    for PKCS#7, `signer_len`, `key_id_len`, three pad bytes, `sig_len`
//!    big-endian), all zero except `id_type` and `sig_len`;
//! 3. the marker `~Module signature appended~\n`.
//!
//! The DER is assembled by hand (the `cms` crate's builder always adds signed
//! attributes); [`sign`] output is byte-identical to `sign-file`'s for the
//! same module, key and certificate, since PKCS#1 v1.5 signatures are
//! deterministic. This crate does no I/O.

use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256, Sha512};
use std::time::SystemTime;
use x509_cert::Certificate;
use x509_cert::der::{self, Decode, Encode};

/// The marker that ends a signed module.
pub const MAGIC: &[u8] = b"~Module signature appended~\n";
/// `sizeof(struct module_signature)`.
pub const INFO_LEN: usize = 12;
/// `id_type` of a PKCS#7 (CMS) signature, the only kind the kernel verifies.
pub const PKEY_ID_PKCS7: u8 = 2;

/// The digest algorithm of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-256 (`CONFIG_MODULE_SIG_SHA256`).
    Sha256,
    /// SHA-512 (`CONFIG_MODULE_SIG_SHA512`).
    Sha512,
}

impl Hash {
    /// The name `sign-file` and the kernel use (`sha256`, `sha512`).
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha512 => "sha512",
        }
    }

    /// The DER-encoded object identifier (tag and length included).
    fn oid(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => OID_SHA256,
            Hash::Sha512 => OID_SHA512,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn padding(self) -> Pkcs1v15Sign {
        match self {
            Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        }
    }
}

impl std::str::FromStr for Hash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sha256" => Ok(Hash::Sha256),
            "sha512" => Ok(Hash::Sha512),
            other => Err(format!("unsupported hash `{other}` (sha256 or sha512)")),
        }
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a module could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key or the certificate's public key is not RSA.
    #[error("the {what} is not an RSA key ({algorithm}): only RSA signing is supported")]
    NotRsa {
        /// `private key` or `certificate`.
        what: &'static str,
        /// The algorithm found.
        algorithm: String,
    },
    /// The private key is not the one the certificate certifies.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The certificate's validity starts in the future.
    #[error("the certificate is not valid yet (notBefore {0})")]
    NotYetValid(String),
    /// The certificate's validity has ended.
    #[error("the certificate has expired (notAfter {0})")]
    Expired(String),
    /// The private key is not a readable PEM/DER RSA key.
    #[error("malformed private key: {0}")]
    MalformedKey(String),
    /// The certificate is not a readable PEM or DER X.509 certificate.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// The module ends with the signature marker but what precedes it is not
    /// a signature that could be stripped.
    #[error("malformed existing signature: {0}")]
    MalformedSignature(String),
    /// The RSA operation failed.
    #[error("RSA signing failed: {0}")]
    Rsa(String),
}

/// Who signed a module: the certificate's issuer and serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The issuer's distinguished name (RFC 4514 form).
    pub issuer: String,
    /// The serial number in upper-case hex.
    pub serial: String,
}

/// What [`parse_signature`] finds in a signed module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    /// `sig_len`: bytes of the CMS message.
    pub sig_len: u32,
    /// `id_type` of `struct module_signature` (2 = PKCS#7).
    pub id_type: u8,
    /// The signer, when the CMS names it by issuer and serial number.
    pub signer: Option<Signer>,
    /// The digest algorithm, when it is one this crate knows.
    pub hash: Option<Hash>,
}

// DER-encoded object identifiers.
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];
const OID_SHA256: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
const OID_SHA512: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
];
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const NULL: &[u8] = &[0x05, 0x00];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const CONTEXT_0: u8 = 0xa0;

/// Encodes one DER element: tag, definite length, contents.
fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Signs `module` with the current time as "now" for the certificate's
/// validity; see [`sign_at`].
pub fn sign(module: &[u8], key_pem: &[u8], cert: &[u8], hash: Hash) -> Result<Vec<u8>, Error> {
    sign_at(module, key_pem, cert, hash, SystemTime::now())
}

/// Returns `module` (with any existing signature stripped first) followed by
/// a signature made with `key_pem` (PKCS#8 or PKCS#1 PEM, or DER) for the
/// certificate `cert` (PEM or DER), checking the certificate is valid at `now`.
pub fn sign_at(
    module: &[u8],
    key_pem: &[u8],
    cert: &[u8],
    hash: Hash,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let module = strip_signature(module)?;
    let key = read_private_key(key_pem)?;
    let cert = read_certificate(cert)?;
    let tbs = &cert.tbs_certificate;
    let algorithm = tbs.subject_public_key_info.algorithm.oid.to_string();
    if algorithm != RSA_ENCRYPTION {
        return Err(Error::NotRsa {
            what: "certificate",
            algorithm,
        });
    }
    let public =
        RsaPublicKey::from_pkcs1_der(tbs.subject_public_key_info.subject_public_key.raw_bytes())
            .map_err(|e| Error::MalformedCertificate(format!("RSA public key: {e}")))?;
    if public != key.to_public_key() {
        return Err(Error::KeyMismatch);
    }
    let validity = &tbs.validity;
    if now < validity.not_before.to_system_time() {
        return Err(Error::NotYetValid(validity.not_before.to_string()));
    }
    if now > validity.not_after.to_system_time() {
        return Err(Error::Expired(validity.not_after.to_string()));
    }
    let issuer = tbs
        .issuer
        .to_der()
        .map_err(|e| Error::MalformedCertificate(format!("issuer: {e}")))?;
    let serial = tbs
        .serial_number
        .to_der()
        .map_err(|e| Error::MalformedCertificate(format!("serial number: {e}")))?;

    let digest = hash.digest(module);
    let signature = key
        .sign(hash.padding(), &digest)
        .map_err(|e| Error::Rsa(e.to_string()))?;

    let digest_algorithm = tlv(SEQUENCE, &[hash.oid()]);
    let signer_info = tlv(
        SEQUENCE,
        &[
            &tlv(INTEGER, &[&[1]]),
            &tlv(SEQUENCE, &[&issuer, &serial]),
            &digest_algorithm,
            &tlv(SEQUENCE, &[OID_RSA_ENCRYPTION, NULL]),
            &tlv(OCTET_STRING, &[&signature]),
        ],
    );
    let signed_data = tlv(
        SEQUENCE,
        &[
            &tlv(INTEGER, &[&[1]]),
            &tlv(SET, &[&digest_algorithm]),
            &tlv(SEQUENCE, &[OID_DATA]),
            &tlv(SET, &[&signer_info]),
        ],
    );
    let cms = tlv(
        SEQUENCE,
        &[OID_SIGNED_DATA, &tlv(CONTEXT_0, &[&signed_data])],
    );

    let sig_len = u32::try_from(cms.len()).expect("a CMS message of a few hundred bytes");
    let mut out = Vec::with_capacity(module.len() + cms.len() + INFO_LEN + MAGIC.len());
    out.extend_from_slice(module);
    out.extend_from_slice(&cms);
    out.extend_from_slice(&[0, 0, PKEY_ID_PKCS7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&sig_len.to_be_bytes());
    out.extend_from_slice(MAGIC);
    Ok(out)
}

/// The module without its appended signature (the whole input when it has none).
pub fn strip_signature(module: &[u8]) -> Result<&[u8], Error> {
    match split(module)? {
        Some((body, _, _)) => Ok(body),
        None => Ok(module),
    }
}

/// A signed module's parts: (body, CMS message, `struct module_signature`).
type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// `struct module_signature`, the fixed header between the CMS message and
/// the marker (`include/linux/module_signature.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSignature {
    /// `algo` (unused for PKCS#7, must be 0).
    pub algo: u8,
    /// `hash` (unused for PKCS#7, must be 0).
    pub hash: u8,
    /// `id_type`: [`PKEY_ID_PKCS7`] is the only kind the kernel verifies.
    pub id_type: u8,
    /// `signer_len` (unused for PKCS#7, must be 0).
    pub signer_len: u8,
    /// `key_id_len` (unused for PKCS#7, must be 0).
    pub key_id_len: u8,
    /// `__pad`.
    pub pad: [u8; 3],
    /// `sig_len`: bytes of the signature before this header (big-endian in the file).
    pub sig_len: u32,
}

impl ModuleSignature {
    /// Reads the 12 bytes of the header.
    pub fn parse(bytes: &[u8; INFO_LEN]) -> Self {
        let [
            algo,
            hash,
            id_type,
            signer_len,
            key_id_len,
            p0,
            p1,
            p2,
            l0,
            l1,
            l2,
            l3,
        ] = *bytes;
        ModuleSignature {
            algo,
            hash,
            id_type,
            signer_len,
            key_id_len,
            pad: [p0, p1, p2],
            sig_len: u32::from_be_bytes([l0, l1, l2, l3]),
        }
    }

    /// Whether every field but `id_type` and `sig_len` is zero, as the kernel
    /// requires of a PKCS#7 signature (`mod_check_sig`).
    pub fn unused_fields_zero(&self) -> bool {
        [self.algo, self.hash, self.signer_len, self.key_id_len]
            .iter()
            .chain(&self.pad)
            .all(|&b| b == 0)
    }
}

/// The kernel's name of a signature's `id_type` (`enum pkey_id_type`).
pub fn id_type_name(id_type: u8) -> Option<&'static str> {
    match id_type {
        0 => Some("PGP"),
        1 => Some("X.509"),
        PKEY_ID_PKCS7 => Some("PKCS#7"),
        _ => None,
    }
}

/// The end of a module that carries the signature marker, as far as its
/// framing can be read; the CMS message is not looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    /// The marker, with fewer than [`INFO_LEN`] bytes before it.
    NoRoom,
    /// The marker after a `struct module_signature`.
    Header {
        /// The header.
        info: ModuleSignature,
        /// Where it starts: the bytes before it are the module and (if
        /// `sig_len` fits) the signature.
        offset: usize,
    },
}

/// The signature framing at the end of `module`: `None` without the marker.
pub fn trailer(module: &[u8]) -> Option<Trailer> {
    let rest = module.strip_suffix(MAGIC)?;
    let Some(offset) = rest.len().checked_sub(INFO_LEN) else {
        return Some(Trailer::NoRoom);
    };
    let header: &[u8; INFO_LEN] = rest[offset..].try_into().expect("INFO_LEN bytes");
    Some(Trailer::Header {
        info: ModuleSignature::parse(header),
        offset,
    })
}

/// Splits a signed module into its parts.
fn split(module: &[u8]) -> Result<Option<Parts<'_>>, Error> {
    let (info, offset) = match trailer(module) {
        None => return Ok(None),
        Some(Trailer::NoRoom) => {
            return Err(Error::MalformedSignature(
                "no room for struct module_signature before the marker".into(),
            ));
        }
        Some(Trailer::Header { info, offset }) => (info, offset),
    };
    let sig_len = info.sig_len as usize;
    if sig_len > offset {
        return Err(Error::MalformedSignature(format!(
            "sig_len {sig_len} exceeds the {offset} bytes before it"
        )));
    }
    let body_len = offset - sig_len;
    Ok(Some((
        &module[..body_len],
        &module[body_len..offset],
        &module[offset..offset + INFO_LEN],
    )))
}

/// The appended signature of `module`: `None` when there is none or its
/// framing is broken. Fields of the CMS message that cannot be read are `None`.
pub fn parse_signature(module: &[u8]) -> Option<SignatureInfo> {
    let (_, cms, info) = split(module).ok()??;
    let mut result = SignatureInfo {
        sig_len: cms.len() as u32,
        id_type: info[2],
        signer: None,
        hash: None,
    };
    if let Some((signer, hash)) = parse_cms(cms) {
        result.signer = signer;
        result.hash = hash;
    }
    Some(result)
}

/// One DER element: (tag, contents, whole element, what follows it).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one DER element.
fn read_tlv(data: &[u8]) -> Option<Tlv<'_>> {
    let tag = *data.first()?;
    let first = *data.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = data.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, &b| (a << 8) | b as usize),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    let whole = data.get(..end)?;
    Some((tag, &whole[header..], whole, &data[end..]))
}

/// The signer and digest algorithm of the first `SignerInfo`.
fn parse_cms(cms: &[u8]) -> Option<(Option<Signer>, Option<Hash>)> {
    let (tag, content_info, _, _) = read_tlv(cms)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, oid, rest) = read_tlv(content_info)?;
    if oid != OID_SIGNED_DATA {
        return None;
    }
    let (tag, explicit, _, _) = read_tlv(rest)?;
    if tag != CONTEXT_0 {
        return None;
    }
    let (_, signed_data, _, _) = read_tlv(explicit)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls, signerInfos
    let mut rest = signed_data;
    let mut signer_infos = None;
    while !rest.is_empty() {
        let (tag, contents, _, next) = read_tlv(rest)?;
        if tag == SET {
            signer_infos = Some(contents);
        }
        rest = next;
    }
    let (_, signer_info, _, _) = read_tlv(signer_infos?)?;
    let (_, _, _, rest) = read_tlv(signer_info)?; // version
    let (sid_tag, sid, _, rest) = read_tlv(rest)?;
    let signer = (sid_tag == SEQUENCE)
        .then(|| {
            let (_, _, issuer, rest) = read_tlv(sid)?;
            let (_, serial, _, _) = read_tlv(rest)?;
            let issuer = x509_cert::name::Name::from_der(issuer).ok()?;
            Some(Signer {
                issuer: issuer.to_string(),
                serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
            })
        })
        .flatten();
    let (_, algorithm, _, _) = read_tlv(rest)?;
    let (_, _, oid, _) = read_tlv(algorithm)?;
    let hash = [Hash::Sha256, Hash::Sha512]
        .into_iter()
        .find(|h| h.oid() == oid);
    Some((signer, hash))
}

/// Decodes PEM (any label) or passes DER through: (label, DER).
fn pem_or_der(data: &[u8]) -> Result<(Option<String>, Vec<u8>), String> {
    let trimmed = data.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN ") {
        // The first PEM block; a file may carry text before or after it.
        let (label, der) =
            der::pem::decode_vec(first_pem_block(trimmed)).map_err(|e| format!("PEM: {e}"))?;
        Ok((Some(label.to_string()), der))
    } else {
        Ok((None, data.to_vec()))
    }
}

/// The first `-----BEGIN X-----` … `-----END X-----` block.
fn first_pem_block(data: &[u8]) -> &[u8] {
    const END: &[u8] = b"-----END ";
    let Some(end) = data.windows(END.len()).position(|w| w == END) else {
        return data;
    };
    let line_end = data[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |p| end + p + 1);
    &data[..line_end]
}

fn read_private_key(data: &[u8]) -> Result<RsaPrivateKey, Error> {
    let (label, der) = pem_or_der(data).map_err(Error::MalformedKey)?;
    match label.as_deref() {
        Some("RSA PRIVATE KEY") => {
            RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| Error::MalformedKey(e.to_string()))
        }
        Some("PRIVATE KEY") | None => {
            let info = rsa::pkcs8::PrivateKeyInfo::try_from(der.as_slice())
                .map_err(|e| Error::MalformedKey(format!("PKCS#8: {e}")))?;
            let algorithm = info.algorithm.oid.to_string();
            if algorithm != RSA_ENCRYPTION {
                return Err(Error::NotRsa {
                    what: "private key",
                    algorithm: algorithm_name(&algorithm),
                });
            }
            RsaPrivateKey::try_from(info).map_err(|e| Error::MalformedKey(e.to_string()))
        }
        Some("EC PRIVATE KEY") => Err(Error::NotRsa {
            what: "private key",
            algorithm: "EC".into(),
        }),
        Some(other) => Err(Error::MalformedKey(format!(
            "PEM block `{other}` is not an unencrypted private key (PRIVATE KEY or RSA PRIVATE KEY)"
        ))),
    }
}

fn algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.2.1" => "EC (id-ecPublicKey)".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        other => other.into(),
    }
}

fn read_certificate(data: &[u8]) -> Result<Certificate, Error> {
    let (label, der) = pem_or_der(data).map_err(Error::MalformedCertificate)?;
    if let Some(label) = label
        && label != "CERTIFICATE"
    {
        return Err(Error::MalformedCertificate(format!(
            "PEM block `{label}` is not a CERTIFICATE"
        )));
    }
    Certificate::from_der(&der).map_err(|e| Error::MalformedCertificate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_minimal() {
        assert_eq!(tlv(0x04, &[&[0; 3]])[..2], [0x04, 3]);
        assert_eq!(tlv(0x04, &[&[0; 200]])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[&[0; 300]])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn read_tlv_round_trips() {
        let e = tlv(0x30, &[&[7; 300]]);
        let (tag, contents, whole, rest) = read_tlv(&e).unwrap();
        assert_eq!(
            (tag, contents.len(), whole.len(), rest.len()),
            (0x30, 300, 304, 0)
        );
        assert!(read_tlv(&e[..100]).is_none());
    }

    #[test]
    fn unsigned_module_strips_to_itself() {
        assert_eq!(strip_signature(b"\x7fELF...").unwrap(), b"\x7fELF...");
        assert!(parse_signature(b"\x7fELF...").is_none());
        let mut bad = b"\x7fELF".to_vec();
        bad.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        bad.extend_from_slice(MAGIC);
        assert!(matches!(
            strip_signature(&bad),
            Err(Error::MalformedSignature(_))
        ));
    }

    #[test]
    fn trailer_framing() {
        assert_eq!(trailer(b"\x7fELF"), None);
        let mut short = b"\x7fELF".to_vec();
        short.extend_from_slice(MAGIC);
        assert_eq!(trailer(&short), Some(Trailer::NoRoom));
        let mut m = b"body".to_vec();
        m.extend_from_slice(&[7; 3]);
        m.extend_from_slice(&[0, 1, 2, 0, 0, 0, 0, 9, 0, 0, 0, 3]);
        m.extend_from_slice(MAGIC);
        let Some(Trailer::Header { info, offset }) = trailer(&m) else {
            panic!("no header");
        };
        assert_eq!(offset, 7);
        assert_eq!((info.id_type, info.sig_len), (PKEY_ID_PKCS7, 3));
        assert_eq!((info.hash, info.pad), (1, [0, 0, 9]));
        assert!(!info.unused_fields_zero());
        assert_eq!(strip_signature(&m).unwrap(), b"body");
        assert_eq!(id_type_name(2), Some("PKCS#7"));
        assert_eq!(id_type_name(3), None);
    }
}
