//! `kpbuild bundle create|verify|inspect|publish|rollback`: signed cumulative
//! livepatch bundles, a thin layer over the `bundle` crate.
//!
//! `create` gathers what a bundle holds from a `kpbuild build` output
//! directory (`NAME.ko` + `report.json`), the target's vmlinux (build-id,
//! release) and `.config`; every file is checked against the SHA-256 the
//! report recorded, and the module's vermagic against vmlinux's release.

use crate::exit;
use crate::files::FileError;
use bundle::manifest::Kernel;
use bundle::{Bundle, ModuleInput, PatchInput, PublicKey, SecretKey, Verified};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `kpbuild bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The bundle command.
    #[command(subcommand)]
    pub command: BundleCommand,
}

/// `kpbuild bundle`'s commands.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Create a signed bundle from a `kpbuild build` output directory.
    Create(CreateArgs),
    /// Verify a bundle's signature, files and (optionally) its kernel.
    Verify(VerifyArgs),
    /// Show a bundle's manifest without checking the signature.
    Inspect(InspectArgs),
    /// Verify a bundle and publish it in a patch-server repository.
    Publish(PublishArgs),
    /// Make an earlier published bundle the latest again.
    Rollback(RollbackArgs),
    /// Promote a bundle published in one channel (`test`) to another
    /// (`stable`): hosts following that channel get it from now on; the
    /// promotion is recorded in its signed, append-only history.
    Promote(PromoteArgs),
}

/// Arguments of `kpbuild bundle promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The repository directory (its channels are `REPO/CHANNEL`).
    #[arg(long)]
    pub repo: PathBuf,
    /// The minisign secret key that signs the index.
    #[arg(long)]
    pub key: PathBuf,
    /// Its public key: verifies both channels' indexes and the bundle.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// The channel the bundle was published in.
    #[arg(long)]
    pub from: String,
    /// The channel it is promoted to.
    #[arg(long)]
    pub to: String,
    /// The kernel build (hex GNU build-id).
    #[arg(long)]
    pub build_id: String,
    /// The sequence to promote: newer than every one the channel has seen,
    /// with the channel's latest among its predecessors.
    #[arg(long)]
    pub sequence: u64,
    /// Print one JSON object: where it is stored, and whether it was already.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild bundle create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A `kpbuild build` output directory (NAME.ko and report.json).
    #[arg(long)]
    pub build_out: PathBuf,
    /// The target kernel's vmlinux (build-id note, `Linux version` banner).
    #[arg(long)]
    pub vmlinux: PathBuf,
    /// The target kernel's .config.
    #[arg(long)]
    pub config: PathBuf,
    /// The unencrypted minisign secret key (`minisign -G -W`).
    #[arg(long)]
    pub key: PathBuf,
    /// The bundle file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The previous bundle of this kernel build (verified with --pubkey).
    #[arg(long, requires = "pubkey")]
    pub predecessor: Option<PathBuf>,
    /// The minisign public key that verifies the predecessor.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Override a patch's id, title and CVEs: PATCH=ID:TITLE:CVE,CVE (PATCH
    /// as in report.json or its file name; CVEs may be empty).
    #[arg(long = "patch-meta", value_name = "PATCH=ID:TITLE:CVES")]
    pub patch_meta: Vec<String>,
    /// Print one JSON object: the bundle's path, SHA-256 and manifest.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild bundle verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    /// The minisign public key.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Also check the bundle is for the kernel with this GNU build-id (hex).
    #[arg(long, conflicts_with = "kernel_notes")]
    pub kernel_build_id: Option<String>,
    /// Also check against the build-id in these notes (e.g. /sys/kernel/notes) or ELF file.
    #[arg(long)]
    pub kernel_notes: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild bundle inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild bundle publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The repository directory.
    #[arg(long)]
    pub repo: PathBuf,
    /// The minisign secret key that signs the index.
    #[arg(long)]
    pub key: PathBuf,
    /// Its public key: verifies the bundle and the existing index.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Publish in this channel (`REPO/CHANNEL`) instead of the repository
    /// itself.
    #[arg(long)]
    pub channel: Option<String>,
    /// The bundle file.
    pub bundle: PathBuf,
    /// Print one JSON object: where it is stored, and whether it was already.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kpbuild bundle rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The repository directory.
    #[arg(long)]
    pub repo: PathBuf,
    /// The minisign secret key that signs the index.
    #[arg(long)]
    pub key: PathBuf,
    /// Its public key: verifies the index and the stored bundle.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Roll back in this channel (`REPO/CHANNEL`) instead of the
    /// repository itself.
    #[arg(long)]
    pub channel: Option<String>,
    /// The kernel build (hex GNU build-id).
    #[arg(long)]
    pub build_id: String,
    /// The earlier sequence to make the latest.
    #[arg(long)]
    pub sequence: u64,
    /// Print the new index as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Why a `kpbuild bundle` command failed; each message names the file,
/// field or argument that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file cannot be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key, the clock or the bundle library refused (the error names its file).
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    /// A bundle file that does not read, verify or publish.
    #[error("{}: {source}", path.display())]
    BundleFile {
        /// The bundle file.
        path: PathBuf,
        /// Why.
        source: bundle::Error,
    },
    /// A kernel image or notes file without a usable build-id or release.
    #[error("{}: {source}", path.display())]
    Kernel {
        /// The vmlinux or notes file.
        path: PathBuf,
        /// Why.
        source: kimage::Error,
    },
    /// `report.json` is not JSON.
    #[error("{}: {source}", path.display())]
    Json {
        /// The report.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A field `report.json` must have.
    #[error("{}: no string at {pointer}", path.display())]
    NoField {
        /// The report.
        path: PathBuf,
        /// The JSON pointer.
        pointer: String,
    },
    /// `report.json` has no patch list.
    #[error("{}: no inputs.patches list", path.display())]
    NoPatchList {
        /// The report.
        path: PathBuf,
    },
    /// The build made no module.
    #[error("{}: outcome is {outcome:?}: no module to bundle", path.display())]
    NoModule {
        /// The report.
        path: PathBuf,
        /// Its outcome.
        outcome: String,
    },
    /// A file is not the one the report recorded.
    #[error("{}: sha256 is {actual}, but {} recorded {expected}", path.display(), report.display())]
    Sha256 {
        /// The file.
        path: PathBuf,
        /// The report.
        report: PathBuf,
        /// Its SHA-256.
        actual: String,
        /// The recorded SHA-256.
        expected: String,
    },
    /// The module cannot be inspected.
    #[error("{}: {source}", path.display())]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        source: crate::inspect::Error,
    },
    /// The module's `.modinfo` has no vermagic.
    #[error("{}: no vermagic= in .modinfo", path.display())]
    NoVermagic {
        /// The module.
        path: PathBuf,
    },
    /// The module was built for another kernel release.
    #[error("{}: module built for {module}, vmlinux is {vmlinux}", path.display())]
    Release {
        /// The module.
        path: PathBuf,
        /// Its release (vermagic).
        module: String,
        /// vmlinux's release.
        vmlinux: String,
    },
    /// A `--patch-meta` argument that does not apply.
    #[error("--patch-meta {meta:?}: {why}")]
    PatchMeta {
        /// The argument.
        meta: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Runs `kpbuild bundle …`; returns the exit code.
pub fn run(args: &BundleArgs) -> u8 {
    let (name, result) = match &args.command {
        BundleCommand::Create(a) => ("create", create(a)),
        BundleCommand::Verify(a) => ("verify", verify(a)),
        BundleCommand::Inspect(a) => ("inspect", inspect(a)),
        BundleCommand::Publish(a) => ("publish", publish(a)),
        BundleCommand::Rollback(a) => ("rollback", rollback(a)),
        BundleCommand::Promote(a) => ("promote", promote(a)),
    };
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("kpbuild bundle {name}: error: {e}");
            exit::ERROR
        }
    }
}

/// Tags a bundle library error with the bundle file it concerns.
fn at(path: &Path) -> impl Fn(bundle::Error) -> BundleError + '_ {
    |source| BundleError::BundleFile {
        path: path.to_path_buf(),
        source,
    }
}

/// Tags a kernel image error with the file it concerns.
fn kernel_at(path: &Path) -> impl Fn(kimage::Error) -> BundleError + '_ {
    |source| BundleError::Kernel {
        path: path.to_path_buf(),
        source,
    }
}

fn read_bundle(path: &Path) -> Result<Bundle, BundleError> {
    let data = crate::files::read(path)?;
    Bundle::read(&data).map_err(at(path))
}

fn str_field<'a>(
    v: &'a serde_json::Value,
    pointer: &str,
    file: &Path,
) -> Result<&'a str, BundleError> {
    v.pointer(pointer)
        .and_then(|s| s.as_str())
        .ok_or_else(|| BundleError::NoField {
            path: file.to_path_buf(),
            pointer: pointer.to_string(),
        })
}

/// A patch's defaults from its text: id = file stem, title = `Subject:`
/// without `[PATCH…]` (or the description's first line, or the files it
/// changes), CVEs = every distinct
/// `CVE-YYYY-NNNN…` before the diff starts.
pub fn patch_defaults(path: &Path, text: &str) -> PatchInput {
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("diff --git") && !l.starts_with("---"))
        .collect();
    let mut title = None;
    for (i, line) in header.iter().enumerate() {
        if let Some(subject) = line.strip_prefix("Subject:") {
            let mut s = subject.trim().to_string();
            // A folded header continues on lines that start with blanks.
            for more in header[i + 1..]
                .iter()
                .take_while(|l| l.starts_with([' ', '\t']))
            {
                s.push(' ');
                s.push_str(more.trim());
            }
            while s.starts_with('[') {
                match s.find(']') {
                    Some(end) => s = s[end + 1..].trim_start().to_string(),
                    None => break,
                }
            }
            title = Some(s);
            break;
        }
    }
    // Without a Subject: the first line of the description, else the files
    // the diff changes.
    let title = title
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty())
                .map(String::from)
        })
        .or_else(|| {
            let files: Vec<String> = crate::patch::touched_files(text)
                .iter()
                .map(|t| t.path.display().to_string())
                .collect();
            (!files.is_empty()).then(|| format!("changes {}", files.join(", ")))
        })
        .unwrap_or_else(|| id.clone());
    PatchInput {
        id,
        title,
        cves: find_cves(&header.join("\n")),
        data: text.as_bytes().to_vec(),
    }
}

/// Every distinct `CVE-\d{4}-\d{4,}` in `text`, in order of appearance.
fn find_cves(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let digits = |from: usize| {
        bytes[from.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    for (i, _) in text.match_indices("CVE-") {
        let year = i + 4;
        if digits(year) != 4 || bytes.get(year + 4) != Some(&b'-') {
            continue;
        }
        let n = digits(year + 5);
        if n < 4 {
            continue;
        }
        let cve = &text[i..year + 5 + n];
        if !out.iter().any(|c| c == cve) {
            out.push(cve.to_string());
        }
    }
    out
}

/// A patch's id, title and CVEs given instead of the ones its text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchMeta {
    /// The patch: its path as `report.json` records it, or its file name.
    pub patch: String,
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its CVEs.
    pub cves: Vec<String>,
}

/// Reads `--patch-meta PATCH=ID:TITLE:CVES`.
fn parse_meta(meta: &str) -> Result<PatchMeta, BundleError> {
    let bad = |why| BundleError::PatchMeta {
        meta: meta.to_string(),
        why,
    };
    let (which, rest) = meta
        .split_once('=')
        .ok_or_else(|| bad("expected PATCH=ID:TITLE:CVES"))?;
    let (id, rest) = rest
        .split_once(':')
        .ok_or_else(|| bad("expected ID:TITLE:CVES"))?;
    let (title, cves) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected ID:TITLE:CVES"))?;
    Ok(PatchMeta {
        patch: which.to_string(),
        id: id.to_string(),
        title: title.to_string(),
        cves: cves
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// Applies overrides to the patches (by path or file name); one naming no
/// patch is an error.
fn apply_patch_meta(
    patches: &mut [(String, PatchInput)],
    metas: &[PatchMeta],
) -> Result<(), BundleError> {
    for meta in metas {
        let which = meta.patch.as_str();
        // The path first: variants of two fixes share file names.
        let at = patches
            .iter()
            .position(|(path, _)| path == which)
            .or_else(|| {
                patches
                    .iter()
                    .position(|(path, _)| Path::new(path).file_name() == Some(which.as_ref()))
            });
        let target = at
            .map(|i| &mut patches[i])
            .ok_or_else(|| BundleError::PatchMeta {
                meta: format!("{which}={}:{}:{}", meta.id, meta.title, meta.cves.join(",")),
                why: "no such patch in report.json",
            })?;
        target.1.id = meta.id.clone();
        target.1.title = meta.title.clone();
        target.1.cves = meta.cves.clone();
    }
    Ok(())
}

/// Applies `--patch-meta PATCH=ID:TITLE:CVES` overrides.
#[cfg(test)]
fn apply_meta(patches: &mut [(String, PatchInput)], metas: &[String]) -> Result<(), BundleError> {
    let metas = metas
        .iter()
        .map(|m| parse_meta(m))
        .collect::<Result<Vec<_>, _>>()?;
    apply_patch_meta(patches, &metas)
}

/// `report.json` of a build output directory that made a module: (its
/// path, its contents).
fn read_report(build_out: &Path) -> Result<(PathBuf, serde_json::Value), BundleError> {
    let path = build_out.join("report.json");
    let text = crate::files::read(&path)?;
    let report: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(source) => return Err(BundleError::Json { path, source }),
    };
    let outcome = str_field(&report, "/outcome", &path)?;
    if outcome != "patch" {
        return Err(BundleError::NoModule {
            outcome: outcome.to_string(),
            path,
        });
    }
    Ok((path, report))
}

/// The file's SHA-256 is the one the report recorded.
fn check_sha256(
    path: &Path,
    data: &[u8],
    expected: &str,
    report: &Path,
) -> Result<(), BundleError> {
    let actual = bundle::sha256_hex(data);
    if actual == expected {
        return Ok(());
    }
    Err(BundleError::Sha256 {
        path: path.to_path_buf(),
        report: report.to_path_buf(),
        actual,
        expected: expected.to_string(),
    })
}

/// The module the report names, checked against the report, with its
/// vermagic; warns when it is not signed.
fn read_module(
    build_out: &Path,
    report: &serde_json::Value,
    report_path: &Path,
) -> Result<(PathBuf, ModuleInput), BundleError> {
    let module_file = str_field(report, "/module/file", report_path)?;
    let path = build_out.join(module_file);
    let data = crate::files::read(&path)?;
    let expected = str_field(report, "/module/sha256", report_path)?;
    check_sha256(&path, &data, expected, report_path)?;
    let info = match crate::inspect::inspect(&path.display().to_string(), &data, false) {
        Ok(info) => info,
        Err(source) => return Err(BundleError::Module { path, source }),
    };
    let Some(vermagic) = info.modinfo.as_ref().and_then(|m| m.vermagic.clone()) else {
        return Err(BundleError::NoVermagic { path });
    };
    if !info.signature.as_ref().is_some_and(|s| s.appended) {
        eprintln!(
            "kpbuild bundle create: warning: {} carries no module signature (sign it with \
             `kpbuild sign` for a kernel that checks signatures)",
            path.display()
        );
    }
    let name = Path::new(module_file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        path,
        ModuleInput {
            name,
            vermagic,
            data,
        },
    ))
}

/// The kernel build from its vmlinux (GNU build-id, `Linux version`
/// banner) and `.config`.
pub fn kernel_of(vmlinux: &Path, config: &Path) -> Result<Kernel, BundleError> {
    let data = crate::files::read(vmlinux)?;
    // The release first: it insists on an ELF file, where a build-id would
    // also be read from a raw note stream.
    let release = kimage::notes::kernel_release(&data).map_err(kernel_at(vmlinux))?;
    let build_id = kimage::notes::gnu_build_id(&data).map_err(kernel_at(vmlinux))?;
    let config = crate::files::read(config)?;
    Ok(Kernel {
        release,
        arch: "x86_64".into(),
        build_id,
        config_sha256: bundle::sha256_hex(&config),
    })
}

/// The kernel build, read from its files or as recorded; the module must
/// be built for its release.
fn read_kernel(of: &KernelOf<'_>, module: &Path, vermagic: &str) -> Result<Kernel, BundleError> {
    let kernel = match of {
        KernelOf::Files { vmlinux, config } => kernel_of(vmlinux, config)?,
        KernelOf::Recorded(kernel) => kernel.clone(),
    };
    let module_release = vermagic.split_whitespace().next().unwrap_or_default();
    if module_release != kernel.release {
        return Err(BundleError::Release {
            path: module.to_path_buf(),
            module: module_release.to_string(),
            vmlinux: kernel.release,
        });
    }
    Ok(kernel)
}

/// The patches as the report recorded them, checked, with `--patch-meta`
/// applied.
fn read_patches(
    report: &serde_json::Value,
    report_path: &Path,
    from: &CreateFrom<'_>,
) -> Result<Vec<PatchInput>, BundleError> {
    let listed = report
        .pointer("/inputs/patches")
        .and_then(|p| p.as_array())
        .ok_or_else(|| BundleError::NoPatchList {
            path: report_path.to_path_buf(),
        })?;
    let mut patches = Vec::new();
    for i in 0..listed.len() {
        let field = format!("/inputs/patches/{i}");
        let path = str_field(report, &format!("{field}/path"), report_path)?;
        let expected = str_field(report, &format!("{field}/sha256"), report_path)?;
        // A build output made on another machine names texts by its paths.
        let file = from
            .texts
            .get(expected)
            .map_or(Path::new(path), PathBuf::as_path);
        let data = crate::files::read(file)?;
        check_sha256(file, &data, expected, report_path)?;
        let text = String::from_utf8_lossy(&data);
        let mut input = patch_defaults(Path::new(path), &text);
        input.data = data;
        patches.push((path.to_string(), input));
    }
    apply_patch_meta(&mut patches, &from.meta)?;
    Ok(patches.into_iter().map(|(_, p)| p).collect())
}

/// The previous bundle, verified with `--pubkey`.
fn read_predecessor(a: &CreateArgs) -> Result<Option<Verified>, BundleError> {
    let (Some(prev), Some(pubkey)) = (&a.predecessor, &a.pubkey) else {
        return Ok(None);
    };
    let b = read_bundle(prev)?;
    let key = PublicKey::read(pubkey)?;
    Ok(Some(b.verify(&key).map_err(at(prev))?))
}

/// What [`create_bundle`] makes a bundle of.
#[derive(Debug, Clone)]
pub struct CreateFrom<'a> {
    /// A `kpbuild build` output directory (`NAME.ko`, `report.json`).
    pub build_out: &'a Path,
    /// The target kernel build.
    pub kernel: KernelOf<'a>,
    /// The previous bundle of this kernel build, verified.
    pub predecessor: Option<&'a Verified>,
    /// Ids, titles and CVEs given instead of the patch texts' own.
    pub meta: Vec<PatchMeta>,
    /// Patch texts by SHA-256, read instead of the paths `report.json`
    /// names (a build made on another machine); the hash is still checked.
    pub texts: BTreeMap<String, PathBuf>,
    /// Fields added to the stored `report.json` (what made the bundle).
    pub report_fields: serde_json::Map<String, serde_json::Value>,
}

/// Where a bundle's kernel build comes from.
#[derive(Debug, Clone)]
pub enum KernelOf<'a> {
    /// Read from the kernel's vmlinux and `.config`.
    Files {
        /// The vmlinux.
        vmlinux: &'a Path,
        /// The `.config`.
        config: &'a Path,
    },
    /// Read earlier from them (by the job that built and tested the module).
    Recorded(Kernel),
}

/// A signed bundle of a build output, every file checked against the
/// build's report and the module against the kernel: its bytes and kernel.
pub fn create_bundle(
    from: &CreateFrom<'_>,
    key: &SecretKey,
) -> Result<(Vec<u8>, Kernel), BundleError> {
    let (report_path, mut report) = read_report(from.build_out)?;
    let (module_path, module) = read_module(from.build_out, &report, &report_path)?;
    let kernel = read_kernel(&from.kernel, &module_path, &module.vermagic)?;
    let patches = read_patches(&report, &report_path, from)?;
    if let Some(map) = report.as_object_mut() {
        map.extend(from.report_fields.clone());
    }
    let input = bundle::CreateInput {
        kernel: kernel.clone(),
        patches,
        modules: vec![module],
        report,
        predecessor: from.predecessor,
        created: bundle::time::timestamp()?,
    };
    Ok((bundle::create(&input, key)?, kernel))
}

fn create(a: &CreateArgs) -> Result<(), BundleError> {
    let key = SecretKey::read(&a.key)?;
    let meta = a
        .patch_meta
        .iter()
        .map(|m| parse_meta(m))
        .collect::<Result<Vec<_>, _>>()?;
    let predecessor = read_predecessor(a)?;
    let from = CreateFrom {
        build_out: &a.build_out,
        kernel: KernelOf::Files {
            vmlinux: &a.vmlinux,
            config: &a.config,
        },
        predecessor: predecessor.as_ref(),
        meta,
        texts: BTreeMap::new(),
        report_fields: serde_json::Map::new(),
    };
    let (bytes, kernel) = create_bundle(&from, &key)?;
    crate::files::write_atomic(&a.out, &bytes)?;
    let b = Bundle::read(&bytes)?;
    if a.json {
        let json = serde_json::json!({
            "bundle": a.out,
            "sha256": b.sha256(),
            "manifest": b.manifest(),
        });
        crate::outln!("{}", serde_json::to_string_pretty(&json).expect("json"));
    }
    let m = b.manifest();
    eprintln!(
        "created {}: sequence {}, {} patch(es), module {} for {} (build-id {}), signed by key {}",
        a.out.display(),
        m.sequence,
        m.patches.len(),
        m.modules[0].livepatch,
        kernel.release,
        kernel.build_id,
        key.key_id()
    );
    Ok(())
}

fn summary(b: &Bundle) -> String {
    let m = b.manifest();
    let mut out = format!(
        "format: {}\nsequence: {}\nkernel: {} {} build-id {}\nconfig sha256: {}\ncreated: {} ({})\n",
        m.format,
        m.sequence,
        m.kernel.release,
        m.kernel.arch,
        m.kernel.build_id,
        m.kernel.config_sha256,
        m.created_utc,
        m.created
    );
    match &m.predecessor {
        Some(p) => out.push_str(&format!(
            "predecessor: sequence {} sha256 {}\n",
            p.sequence, p.sha256
        )),
        None => out.push_str("predecessor: none\n"),
    }
    out.push_str(&format!("patches ({}):\n", m.patches.len()));
    for p in &m.patches {
        let cves = if p.cves.is_empty() {
            String::new()
        } else {
            format!(" [{}]", p.cves.join(", "))
        };
        out.push_str(&format!("  {} {}: {}{cves}\n", p.file, p.id, p.title));
    }
    out.push_str(&format!("modules ({}):\n", m.modules.len()));
    for x in &m.modules {
        out.push_str(&format!(
            "  {} livepatch {} vermagic {:?}\n",
            x.file, x.livepatch, x.vermagic
        ));
    }
    out.push_str(&format!("bundle sha256: {}\n", b.sha256()));
    out
}

fn verify(a: &VerifyArgs) -> Result<(), BundleError> {
    let key = PublicKey::read(&a.pubkey)?;
    let b = read_bundle(&a.bundle)?;
    let v = b.verify(&key).map_err(at(&a.bundle))?;
    let running = match (&a.kernel_build_id, &a.kernel_notes) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(notes)) => {
            let data = crate::files::read(notes)?;
            Some(kimage::notes::gnu_build_id(&data).map_err(kernel_at(notes))?)
        }
        (None, None) => None,
    };
    if let Some(id) = &running {
        v.check_kernel(id).map_err(at(&a.bundle))?;
    }
    let m = v.manifest();
    if a.json {
        let json = serde_json::json!({
            "bundle": a.bundle,
            "verified": true,
            "key_id": v.key_id(),
            "trusted_comment": v.trusted_comment(),
            "files_checked": m.files().len(),
            "kernel_check": if running.is_some() { "match" } else { "not checked" },
            "sha256": b.sha256(),
            "manifest": m,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        print!("{}", summary(&b));
        crate::outln!(
            "signature: good (key {}), trusted comment {:?}",
            v.key_id(),
            v.trusted_comment()
        );
        crate::outln!(
            "files: {} listed, every sha256 matches manifest.json, no extra file",
            m.files().len()
        );
        match &running {
            Some(id) => crate::outln!("kernel: build-id {id} matches"),
            None => crate::outln!(
                "kernel: not checked (give --kernel-build-id or --kernel-notes /sys/kernel/notes)"
            ),
        }
    }
    Ok(())
}

fn inspect(a: &InspectArgs) -> Result<(), BundleError> {
    let b = read_bundle(&a.bundle)?;
    if a.json {
        let json = serde_json::json!({
            "bundle": a.bundle,
            "signature": "not checked",
            "sha256": b.sha256(),
            "manifest": b.manifest(),
        });
        crate::outln!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        print!("{}", summary(&b));
        crate::outln!("signature: not checked (use `kpbuild bundle verify --pubkey KEY.pub`)");
    }
    Ok(())
}

fn publish(a: &PublishArgs) -> Result<(), BundleError> {
    let (public, secret) = (PublicKey::read(&a.pubkey)?, SecretKey::read(&a.key)?);
    let data = crate::files::read(&a.bundle)?;
    let at_time = bundle::time::timestamp()?;
    let repo = in_channel(&a.repo, a.channel.as_deref())?;
    let p =
        bundle::repo::publish(&repo, &data, &public, &secret, at_time).map_err(at(&a.bundle))?;
    print_published(&p, a.json, None);
    Ok(())
}

/// The repository a command works in: `REPO`, or its channel's.
fn in_channel(repo: &Path, channel: Option<&str>) -> Result<PathBuf, BundleError> {
    match channel {
        Some(c) => Ok(bundle::repo::channel_dir(repo, c)?),
        None => Ok(repo.to_path_buf()),
    }
}

fn promote(a: &PromoteArgs) -> Result<(), BundleError> {
    let (public, secret) = (PublicKey::read(&a.pubkey)?, SecretKey::read(&a.key)?);
    let at_time = bundle::time::timestamp()?;
    let p = bundle::repo::promote(
        &a.repo,
        &a.from,
        &a.to,
        &a.build_id,
        a.sequence,
        &public,
        &secret,
        at_time,
    )?;
    print_published(&p, a.json, Some((&a.from, &a.to)));
    Ok(())
}

/// What `publish` (or, with its channels, `promote`) did.
fn print_published(p: &bundle::repo::Published, json: bool, promoted: Option<(&str, &str)>) {
    let (done, how) = match promoted {
        Some((from, to)) => ("promoted", format!(" from {from} to {to}")),
        None => ("published", String::new()),
    };
    if json {
        let mut json = serde_json::json!({
            "build_id": p.build_id,
            "sequence": p.sequence,
            "path": p.path,
            "unchanged": p.unchanged,
        });
        if let Some((from, to)) = promoted {
            json["from"] = from.into();
            json["to"] = to.into();
        }
        crate::outln!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else if p.unchanged {
        crate::outln!(
            "already {done}: build-id {} sequence {}{how} ({}); nothing changed",
            p.build_id,
            p.sequence,
            p.path.display()
        );
    } else {
        crate::outln!(
            "{done} build-id {} sequence {}{how} as {}; it is the latest",
            p.build_id,
            p.sequence,
            p.path.display()
        );
    }
}

fn rollback(a: &RollbackArgs) -> Result<(), BundleError> {
    let (public, secret) = (PublicKey::read(&a.pubkey)?, SecretKey::read(&a.key)?);
    let at_time = bundle::time::timestamp()?;
    let repo = in_channel(&a.repo, a.channel.as_deref())?;
    let index = bundle::repo::rollback(&repo, &a.build_id, a.sequence, &public, &secret, at_time)?;
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&index).expect("json"));
        return Ok(());
    }
    crate::outln!(
        "rolled back build-id {} to sequence {} ({}); history has {} records",
        index.build_id,
        index.latest.sequence,
        index.latest.file,
        index.history.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_defaults_from_text() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "0001-proc-fix.patch",
                "From 1234 Mon Sep 17 00:00:00 2001\nSubject: [PATCH v2 1/3] proc: fix the\n \
                 cmdline string\n\nFixes CVE-2026-1234 and CVE-2026-12345, again CVE-2026-1234.\n\
                 Not CVE-26-1, CVE-2026-12.\n---\n fs/proc/cmdline.c | 2 +-\n\
                 diff --git a/x b/x\n+CVE-2027-99999\n",
                "proc: fix the cmdline string",
                &["CVE-2026-1234", "CVE-2026-12345"],
            ),
            (
                "plain.diff",
                "\n--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-a\n+b\n",
                "changes fs/proc/cmdline.c",
                &[],
            ),
            (
                "notes.patch",
                "Fix the thing (CVE-2025-0001)\n\ndiff --git a/x b/x\n",
                "Fix the thing (CVE-2025-0001)",
                &["CVE-2025-0001"],
            ),
        ];
        for (file, text, title, cves) in cases {
            let p = patch_defaults(Path::new(file), text);
            assert_eq!(p.id, Path::new(file).file_stem().unwrap().to_str().unwrap());
            assert_eq!(p.title, *title, "{file}");
            assert_eq!(p.cves, *cves, "{file}");
        }
    }

    #[test]
    fn patch_meta_overrides() {
        let mut patches = vec![(
            "/tmp/a/0001-x.patch".to_string(),
            patch_defaults(Path::new("0001-x.patch"), "Subject: x\n"),
        )];
        apply_meta(
            &mut patches,
            &["0001-x.patch=KP-7:proc: fix a: b:CVE-2026-1, CVE-2026-2".into()],
        )
        .unwrap();
        let p = &patches[0].1;
        assert_eq!(
            (p.id.as_str(), p.title.as_str()),
            ("KP-7", "proc: fix a: b")
        );
        assert_eq!(p.cves, ["CVE-2026-1", "CVE-2026-2"]);
        for bad in ["nope", "0001-x.patch=id-only", "other.patch=a:b:"] {
            assert!(apply_meta(&mut patches, &[bad.into()]).is_err(), "{bad}");
        }
    }
}
