//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong reading, verifying, creating or publishing a
/// bundle. Each message names the file, entry or field that is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file is not the kind of minisign key expected.
    #[error("{file}: {what}")]
    Key {
        /// The key file (or where the key came from).
        file: String,
        /// What the file is instead, or what is malformed.
        what: String,
    },
    /// A password-protected minisign secret key.
    #[error(
        "{file}: an encrypted (password-protected) minisign secret key; kpbuild signs only with \
         an unencrypted key (create one with `minisign -G -W`)"
    )]
    EncryptedKey {
        /// The key file.
        file: String,
    },
    /// The secret key given to sign is not the public key's pair.
    #[error("secret key {secret} does not belong to public key {public}")]
    KeyPairMismatch {
        /// The secret key's key ID.
        secret: String,
        /// The public key's key ID.
        public: String,
    },
    /// A minisign signature file that cannot be parsed.
    #[error("{file}: malformed minisign signature: {why}")]
    SignatureFormat {
        /// The signature file.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// A signature made by another key than the public key given.
    #[error("{file}: signed by key {signed_by}, but the public key given is {expected}")]
    WrongKey {
        /// The signature file.
        file: String,
        /// Key ID in the signature.
        signed_by: String,
        /// Key ID of the public key.
        expected: String,
    },
    /// A signature that does not verify: the signed file or the trusted
    /// comment was changed after signing.
    #[error(
        "{file}: the signature does not verify: {signed} was changed after signing (key {key})"
    )]
    BadSignature {
        /// The signature file.
        file: String,
        /// The signed file.
        signed: String,
        /// The key ID.
        key: String,
    },
    /// The archive ends early.
    #[error("bundle archive truncated at byte {offset}: {why}")]
    Truncated {
        /// Where the data ends.
        offset: u64,
        /// What was being read.
        why: String,
    },
    /// A ustar header that is not valid.
    #[error("bundle archive: bad header at byte {offset}: {why}")]
    Header {
        /// Where the header starts.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// Non-zero bytes after the end-of-archive marker.
    #[error("bundle archive: data after the end-of-archive marker at byte {offset}")]
    TrailingData {
        /// Where the marker ends.
        offset: u64,
    },
    /// An entry that is not a regular file.
    #[error("bundle archive: {name}: a {kind} entry; a bundle holds only regular files")]
    NotRegular {
        /// The entry.
        name: String,
        /// What it is (directory, symbolic link, pax header, ...).
        kind: String,
    },
    /// The same name twice.
    #[error("bundle archive: {name}: appears more than once")]
    Duplicate {
        /// The entry.
        name: String,
    },
    /// An absolute path, `..`, `.` or an empty component.
    #[error("bundle archive: {name:?}: unsafe path (absolute, empty, `.` or `..` component)")]
    UnsafePath {
        /// The entry.
        name: String,
    },
    /// A name that a plain ustar header cannot hold.
    #[error(
        "{name}: does not fit a ustar header (at most 100 bytes, or 155 + 100 split at a '/'; \
         printable ASCII)"
    )]
    NameTooLong {
        /// The name.
        name: String,
    },
    /// A file in the archive that the manifest does not list.
    #[error("bundle: {name}: in the archive but not listed in manifest.json")]
    Extra {
        /// The entry.
        name: String,
    },
    /// A file the manifest lists that the archive lacks.
    #[error("bundle: {name}: listed in manifest.json but missing from the archive")]
    Missing {
        /// The entry.
        name: String,
    },
    /// `manifest.json` or its signature not where the format puts them.
    #[error("bundle archive: {name} must be entry {position} (it is entry {found})")]
    Misplaced {
        /// The entry.
        name: String,
        /// Where it must be (1-based).
        position: usize,
        /// Where it is (1-based).
        found: usize,
    },
    /// A JSON file (manifest, index, report) that is malformed or inconsistent.
    #[error("{file}: {why}")]
    Json {
        /// The file, with the field where there is one.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// A `format` this version does not read.
    #[error("{file}: unknown format {found:?} (this version reads {expected:?})")]
    UnknownFormat {
        /// The file.
        file: String,
        /// The format found.
        found: String,
        /// The format understood.
        expected: &'static str,
    },
    /// A file whose SHA-256 is not the one listed.
    #[error("{file}: sha256 is {actual}, but {listed_in} lists {expected}")]
    HashMismatch {
        /// The file.
        file: String,
        /// Where the expected hash is.
        listed_in: String,
        /// The listed hash.
        expected: String,
        /// The hash of the bytes.
        actual: String,
    },
    /// The bundle is for another kernel build.
    #[error(
        "the bundle is for kernel {release} with build-id {bundle}, but the running kernel's \
         build-id is {running}"
    )]
    KernelMismatch {
        /// The bundle's kernel release.
        release: String,
        /// The bundle's build-id.
        bundle: String,
        /// The build-id checked against.
        running: String,
    },
    /// A module whose vermagic names another kernel release.
    #[error("{file}: module built for {module}, vmlinux is {kernel}")]
    ModuleRelease {
        /// The module.
        file: String,
        /// The release in its vermagic.
        module: String,
        /// The bundle's kernel release.
        kernel: String,
    },
    /// Bad input to [`crate::create`].
    #[error("bundle input: {0}")]
    Input(String),
    /// The new bundle does not continue its predecessor.
    #[error("predecessor (sequence {sequence}): {why}")]
    Predecessor {
        /// The predecessor's sequence.
        sequence: u64,
        /// What breaks the cumulative rule.
        why: String,
    },
    /// `SOURCE_DATE_EPOCH` is set but not a number.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds since 1970")]
    SourceDateEpoch(String),
    /// A build-id given by the caller that is not lowercase hex.
    #[error("{what}: {value:?} is not a hex build-id")]
    BuildId {
        /// Where it came from.
        what: String,
        /// The value.
        value: String,
    },
    /// Publishing a sequence that is stored with other bytes.
    #[error("{}: sequence {sequence} already published with different content", path.display())]
    AlreadyPublished {
        /// The stored bundle.
        path: PathBuf,
        /// The sequence.
        sequence: u64,
    },
    /// Publishing a sequence that is not newer than what was published.
    #[error(
        "build-id {build_id}: sequence {sequence} is not newer than sequence {newest} already \
         published"
    )]
    NotNewer {
        /// The kernel build.
        build_id: String,
        /// The bundle's sequence.
        sequence: u64,
        /// The newest sequence published.
        newest: u64,
    },
    /// Rolling back to a sequence that is not stored.
    #[error("build-id {build_id}: sequence {sequence} was never published")]
    NotPublished {
        /// The kernel build.
        build_id: String,
        /// The sequence asked for.
        sequence: u64,
    },
    /// Rolling back to a sequence that is not earlier than the latest.
    #[error("build-id {build_id}: cannot roll back to sequence {sequence}: the latest is {latest}")]
    NotEarlier {
        /// The kernel build.
        build_id: String,
        /// The sequence asked for.
        sequence: u64,
        /// The latest sequence.
        latest: u64,
    },
    /// No index for a build-id in the repository.
    #[error("{}: no index: nothing was published for this build-id", path.display())]
    NoIndex {
        /// The missing index.json.
        path: PathBuf,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
