//! `kpbuild build`: from source patches to a loadable livepatch module.
//!
//! Steps, each timed in the report: check the tree and compiler, apply the
//! patches to a private copy, find the affected units, compile each twice
//! (in parallel), diff and relocate per target object, build the module.
//! Nothing is written to the output directory unless every step succeeded.

use crate::exit;
use crate::kbuild::UnitCommand;
use crate::module::{ModuleSpec, PatchedFunc, PatchedObject};
use crate::target::TargetFiles;
use crate::tree::TargetTree;
use rayon::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags added to each unit's own command for diffing.
pub const DIFF_FLAGS: &[&str] = &["-ffunction-sections", "-fdata-sections"];

/// Arguments of `kpbuild build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The kernel source tree the running kernel was built from (never
    /// modified); not needed with --debian.
    #[arg(long, default_value = "", hide_default_value = true, value_parser = any_path)]
    pub src: PathBuf,
    /// Its build tree (`O=` directory, or SRC itself): .config, vmlinux,
    /// Module.symvers and kbuild's .cmd files. Without it: --config,
    /// --vmlinux and --headers (tree-less mode), or --debian.
    #[arg(long, default_value = "", hide_default_value = true, value_parser = any_path)]
    pub build: PathBuf,
    /// A unified diff (-p1) to apply; repeat for several, applied in order.
    #[arg(long = "patch", required = true)]
    pub patches: Vec<PathBuf>,
    /// Module name (also the patch name under /sys/kernel/livepatch).
    #[arg(long)]
    pub name: String,
    /// Output directory for NAME.ko and report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Stack on earlier livepatches instead of atomically replacing them.
    #[arg(long)]
    pub no_replace: bool,
    /// Parallel compile jobs (default: number of CPUs). Run from a
    /// `make -jN` recipe, kpbuild also takes a slot of make's jobserver for
    /// each compile.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    pub keep_tmp: bool,
    /// Print no progress, only errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Sign the module with this RSA private key (PEM), for a kernel that
    /// checks module signatures; the digest is the tree's
    /// CONFIG_MODULE_SIG_HASH (sha256 when unset). Needs --sign-cert.
    #[arg(long, requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The certificate (PEM or DER) of --sign-key.
    #[arg(long, requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
}

/// A path argument that may be left empty (not given).
fn any_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

/// How the target is described when there is no built tree (tree-less
/// mode), or a vmlinux to use instead of the tree's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Kernel config of the target (tree-less mode, with --vmlinux and --headers).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The target's unstripped vmlinux (tree-less mode; with --build it
    /// replaces BUILD/vmlinux).
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// The target's module build tree with Module.symvers (e.g.
    /// /lib/modules/RELEASE/build); the module glue is built against it.
    #[arg(long)]
    pub headers: Option<PathBuf>,
    /// The target's installed modules, /lib/modules/RELEASE (tree-less
    /// mode): a unit built into a module is patched in the module found
    /// there as kernel/…/NAME.ko, .ko.xz, .ko.zst or .ko.gz.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// A Debian kernel release (`6.12.117+deb12-cloud-amd64`): fetch its
    /// packages into the cache and build against them (tree-less mode).
    #[arg(long, conflicts_with_all = ["config", "vmlinux", "headers", "modules"])]
    pub debian: Option<String>,
}

/// `kpbuild build` as the command line gives it.
#[derive(Debug, clap::Args)]
pub struct BuildCommand {
    /// The common arguments.
    #[command(flatten)]
    pub build: BuildArgs,
    /// The target description beyond a built tree.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// A failure with its exit code.
struct Stop {
    code: u8,
    message: String,
    report: Option<serde_json::Value>,
}

impl From<crate::files::FileError> for Stop {
    fn from(e: crate::files::FileError) -> Self {
        Stop::from(e.to_string())
    }
}

impl From<String> for Stop {
    fn from(message: String) -> Self {
        Stop {
            code: exit::ERROR,
            message,
            report: None,
        }
    }
}

/// Runs the build in its own scratch directory, removed afterwards unless
/// `--keep-tmp`.
fn build_in_scratch(args: &BuildArgs, target: &TargetArgs) -> Result<serde_json::Value, Stop> {
    let work = std::env::temp_dir().join(format!("kpbuild-{}-{}", args.name, std::process::id()));
    let result = build(args, target, &work);
    if args.keep_tmp {
        eprintln!("kpbuild: scratch directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

/// Runs `kpbuild build` for a library caller: the exit code, and the report
/// or the reason it stopped.
pub fn execute(args: &BuildArgs) -> (u8, Result<serde_json::Value, String>) {
    execute_with(args, &TargetArgs::default())
}

/// [`execute`] with a target described by [`TargetArgs`] (tree-less mode,
/// `--debian`, or another vmlinux).
pub fn execute_with(
    args: &BuildArgs,
    target: &TargetArgs,
) -> (u8, Result<serde_json::Value, String>) {
    match build_in_scratch(args, target) {
        Ok(report) => (exit::SUCCESS, Ok(report)),
        Err(stop) => (stop.code, Err(stop.message)),
    }
}

/// Runs `kpbuild build`; returns the exit code.
pub fn run(command: &BuildCommand) -> u8 {
    let args = &command.build;
    match build_in_scratch(args, &command.target) {
        Ok(report) => {
            if args.json {
                crate::outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
            }
            exit::SUCCESS
        }
        Err(stop) => {
            if args.json {
                let mut report = stop.report.unwrap_or_else(|| json!({"outcome": "error"}));
                report["message"] = json!(stop.message);
                crate::outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
            }
            let label = match stop.code {
                exit::REFUSED => "refused",
                exit::NO_CHANGE => "no functional change",
                _ => "error",
            };
            // --quiet silences progress, never the reason for a non-zero exit.
            eprintln!("kpbuild build: {label}: {}", stop.message);
            stop.code
        }
    }
}

fn step(args: &BuildArgs, n: usize, what: &str) {
    if !args.quiet && !args.json {
        eprintln!("[{n}/6] {what}");
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One affected unit and what became of it.
struct Unit<'a> {
    cmd: &'a UnitCommand,
    target: String,
    original: PathBuf,
    patched: PathBuf,
}

fn build(args: &BuildArgs, target: &TargetArgs, work: &Path) -> Result<serde_json::Value, Stop> {
    let start = Instant::now();
    let mut timings = BTreeMap::new();
    let mut lap = Instant::now();
    let mut time = |name: &str, lap: &mut Instant| {
        timings.insert(
            name.to_string(),
            (lap.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        );
        *lap = Instant::now();
    };
    crate::module::validate_module_name(&args.name).map_err(|e| e.to_string())?;
    if args.out.exists() && !args.out.is_dir() {
        return Err(format!("{}: exists and is not a directory", args.out.display()).into());
    }

    step(args, 1, "checking the kernel tree and compiler");
    let mut patches = Vec::new();
    for p in &args.patches {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let touched = crate::patch::touched_files(&text);
        if touched.is_empty() {
            return Err(format!(
                "{}: not a unified diff (no ---/+++ file headers)",
                p.display()
            )
            .into());
        }
        for t in &touched {
            if let Some(why) = crate::patch::unsupported(&t.path) {
                return Err(Stop {
                    code: exit::REFUSED,
                    message: format!("{} changes {}: {why}", p.display(), t.path.display()),
                    report: None,
                });
            }
        }
        let absolute = p
            .canonicalize()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        patches.push((absolute, text));
    }
    let mut laps = Vec::new();
    let tree = crate::treeless::target_tree(
        args,
        target,
        &patches,
        &|m| {
            if !args.quiet && !args.json {
                eprintln!("      {m}");
            }
        },
        &mut laps,
    )?;
    check_compiler(&tree)?;
    time("check", &mut lap);

    step(
        args,
        2,
        "applying the patches to a private copy of the source",
    );
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let copy = work.join("src");
    crate::patch::apply(&tree.src, &copy, &patches).map_err(|message| Stop {
        code: exit::ERROR,
        message,
        report: None,
    })?;
    time("apply", &mut lap);

    step(args, 3, "finding the affected translation units");
    let mut changed_files = Vec::new();
    for (p, text) in &patches {
        for t in crate::patch::touched_files(text) {
            if t.path.extension().is_some_and(|e| e == "c" || e == "h") {
                if t.created && t.path.extension().is_some_and(|e| e == "c") {
                    return Err(Stop {
                        code: exit::REFUSED,
                        message: format!(
                            "{} adds {}: a new source file is not built by this kernel's build",
                            p.display(),
                            t.path.display()
                        ),
                        report: None,
                    });
                }
                changed_files.push(t.path);
            }
        }
    }
    let affected = affected_units(&tree, &changed_files)?;
    if affected.is_empty() {
        return Err(Stop {
            code: exit::NO_CHANGE,
            message: "no compiled unit of this kernel build uses the changed files".into(),
            report: None,
        });
    }
    time("affected", &mut lap);

    step(
        args,
        4,
        &format!("compiling {} unit(s) twice", affected.len()),
    );
    let slots = crate::jobs::Slots::from_env();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| e.to_string())?;
    let units: Vec<Unit> = affected
        .iter()
        .map(|cmd| Unit {
            cmd,
            target: tree.target_of(&cmd.object),
            original: work.join("orig").join(&cmd.object),
            patched: work.join("patched").join(&cmd.object),
        })
        .collect();
    // kpbuild-macros.h on every unit's include path (both sides: an include
    // directory changes no code).
    let include = work.join("kpbuild-include");
    std::fs::create_dir_all(&include).map_err(|e| format!("{}: {e}", include.display()))?;
    std::fs::write(
        include.join("kpbuild-macros.h"),
        crate::module::MACROS_HEADER,
    )
    .map_err(|e| format!("{}: {e}", include.display()))?;
    let include_flag = format!("-I{}", include.display());
    let flags: Vec<&str> = DIFF_FLAGS
        .iter()
        .copied()
        .chain([include_flag.as_str()])
        .collect();
    pool.install(|| {
        units
            .par_iter()
            .flat_map(|u| [(u, true), (u, false)])
            .try_for_each(|(u, original)| {
                let (root, out) = if original {
                    (&tree.src, &u.original)
                } else {
                    (&copy, &u.patched)
                };
                std::fs::create_dir_all(out.parent().expect("object has a directory"))
                    .map_err(|e| e.to_string())?;
                // Under `make -jN`, each compile holds one of make's job slots.
                let _slot = slots.take().map_err(|e| format!("make jobserver: {e}"))?;
                let mut cmd = u.cmd.replay(&tree.build, &tree.src, root, out, &flags);
                crate::process::run(&mut cmd).map(|_| ()).map_err(|e| {
                    format!(
                        "compiling {} ({}): {e}",
                        u.cmd.object.display(),
                        if original { "original" } else { "patched" }
                    )
                })
            })
    })?;
    time("compile", &mut lap);

    step(args, 5, "diffing and relocating");
    let diffs: Vec<Result<elfdiff::Diff, String>> = pool.install(|| {
        units
            .par_iter()
            .map(|u| {
                let o = crate::files::read(&u.original)?;
                let p = crate::files::read(&u.patched)?;
                let label = u.cmd.object.display().to_string();
                elfdiff::diff(
                    &format!("{label} (original)"),
                    &o,
                    &format!("{label} (patched)"),
                    &p,
                    &elfdiff::Options::default(),
                )
                .map_err(|e| e.to_string())
            })
            .collect()
    });
    let mut unit_reports = Vec::new();
    let mut refusals = Vec::new();
    let mut per_target: BTreeMap<String, Vec<(usize, elfdiff::Diff)>> = BTreeMap::new();
    for (i, (u, d)) in units.iter().zip(diffs).enumerate() {
        let d = d?;
        unit_reports.push(json!({
            "object": u.cmd.object, "target": u.target, "outcome": d.outcome,
            "changed": d.changed.iter().map(|c| &c.name).collect::<Vec<_>>(), "new": d.new,
        }));
        for r in &d.refusals {
            refusals.push(json!({"object": u.cmd.object, "reason": r.reason, "section": r.section, "symbol": r.symbol}));
        }
        if d.outcome == elfdiff::Outcome::Patch {
            per_target.entry(u.target.clone()).or_default().push((i, d));
        }
    }
    let mut report = json!({
        "name": args.name,
        "replace": !args.no_replace,
        "inputs": {
            "src": tree.src, "build": tree.build, "vmlinux": tree.vmlinux, "mode": tree.mode.name(),
            "patches": patches.iter().map(|(p, t)| json!({"path": p, "sha256": sha256_hex(t.as_bytes())})).collect::<Vec<_>>(),
        },
        "units": unit_reports,
        "refusals": refusals,
    });
    if !refusals.is_empty() {
        report["outcome"] = json!("refused");
        let lines: Vec<String> = refusals
            .iter()
            .map(|r| {
                format!(
                    "{}: {} {}: {}",
                    r["object"].as_str().unwrap_or(""),
                    r["section"].as_str().unwrap_or(""),
                    r["symbol"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(Stop {
            code: exit::REFUSED,
            message: format!(
                "the change cannot be live patched safely:\n  {}",
                lines.join("\n  ")
            ),
            report: Some(report),
        });
    }
    if per_target.is_empty() {
        report["outcome"] = json!("no-change");
        return Err(Stop {
            code: exit::NO_CHANGE,
            message: "the patches change no function's code".into(),
            report: Some(report),
        });
    }

    // Pre-match: the original code compiled here must be the target's code.
    let to_check: Vec<crate::prematch::UnitToCheck> = per_target
        .iter()
        .flat_map(|(t, list)| list.iter().map(move |(i, d)| (t, i, d)))
        .map(|(t, i, d)| crate::prematch::UnitToCheck {
            target: t.clone(),
            label: units[*i].cmd.object.display().to_string(),
            original: units[*i].original.clone(),
            replaced: d.changed.iter().map(|c| c.original_name.clone()).collect(),
        })
        .collect();
    report["prematch"] = crate::prematch::verify_units(&to_check, &|t| {
        if t == "vmlinux" {
            Ok(tree.vmlinux.clone())
        } else {
            tree.module_ko(t)
                .map(Path::to_path_buf)
                .ok_or_else(|| format!("module {t}: no .ko in {}", tree.build.display()))
        }
    })?;

    let mut objects = Vec::new();
    let mut patch_objects = Vec::new();
    let mut objects_report = Vec::new();
    let vmlinux_files = TargetFiles::load("vmlinux", &tree.vmlinux, None, Some(&tree.symvers))?;
    for (target, list) in &per_target {
        let module_files;
        let files = if target == "vmlinux" {
            &vmlinux_files
        } else {
            let ko = tree
                .module_ko(target)
                .ok_or_else(|| format!("module {target}: no .ko in {}", tree.build.display()))?;
            module_files = TargetFiles::load(target, ko, Some(&tree.vmlinux), Some(&tree.symvers))?;
            &module_files
        };
        let mut funcs = Vec::new();
        let mut functions_report = Vec::new();
        // (kind, alias, unit) of every callback of this target object.
        let mut callbacks: Vec<(String, String, usize)> = Vec::new();
        for (i, d) in list {
            let object = d.object.as_deref().expect("patch outcome has an object");
            let r = files
                .relocate(d, object, &format!("kpb_u{i}_"))
                .map_err(|e| Stop {
                    code: if matches!(*e, relocator::Error::Unsupported { .. }) {
                        exit::REFUSED
                    } else {
                        exit::ERROR
                    },
                    message: format!("{}: {e}", units[*i].cmd.object.display()),
                    report: None,
                })?;
            let path = work.join("patch").join(format!("u{i}.o"));
            std::fs::create_dir_all(path.parent().expect("dir")).map_err(|e| e.to_string())?;
            std::fs::write(&path, &r.object).map_err(|e| format!("{}: {e}", path.display()))?;
            patch_objects.push(path);
            for f in &r.functions {
                funcs.push(PatchedFunc {
                    old_name: f.old_name.clone(),
                    new_symbol: f.new_symbol.clone(),
                    sympos: f.sympos,
                });
            }
            functions_report.extend(
                crate::target::functions_json(&r.functions)
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            for (kind, alias) in r.callbacks {
                if let Some((_, _, first)) = callbacks.iter().find(|(k, _, _)| *k == kind) {
                    return Err(Stop {
                        code: exit::REFUSED,
                        message: format!(
                            "two {kind} callbacks for {target}, in {} and {}: the livepatch core takes one of each kind per object",
                            units[*first].cmd.object.display(),
                            units[*i].cmd.object.display()
                        ),
                        report: None,
                    });
                }
                callbacks.push((kind, alias, *i));
            }
        }
        let callbacks_report: Vec<serde_json::Value> = callbacks
            .iter()
            .map(|(kind, alias, i)| {
                let function = list
                    .iter()
                    .find(|(j, _)| j == i)
                    .and_then(|(_, d)| d.callbacks.iter().find(|c| &c.kind == kind))
                    .map(|c| c.function.clone())
                    .unwrap_or_default();
                json!({"kind": kind, "function": function, "object": units[*i].cmd.object, "symbol": alias})
            })
            .collect();
        objects_report.push(
            json!({"name": target, "functions": functions_report, "callbacks": callbacks_report}),
        );
        objects.push(PatchedObject {
            name: (target != "vmlinux").then(|| target.clone()),
            funcs,
            callbacks: callbacks.into_iter().map(|(k, a, _)| (k, a)).collect(),
        });
    }
    report["objects"] = json!(objects_report);
    time("diff", &mut lap);

    step(args, 6, "building the livepatch module");
    let spec = ModuleSpec {
        name: args.name.clone(),
        replace: !args.no_replace,
        objects,
    };
    let exports = &vmlinux_files.exports;
    let ko = crate::module::build_module(
        &spec,
        &patch_objects,
        &tree.module_build,
        &work.join("module"),
        &|s| exports.contains(s),
    )
    .map_err(|e| e.to_string())?;
    time("module", &mut lap);
    let mut ko_bytes = crate::files::read(&ko)?;
    match (&args.sign_key, &args.sign_cert) {
        (Some(key), Some(cert)) => {
            let hash = sign_hash(&tree)?;
            ko_bytes = crate::sign::sign_bytes(&ko_bytes, key, cert, hash)?;
            report["signature"] = json!({"hash": hash.name(), "certificate": cert});
            time("sign", &mut lap);
        }
        (None, None) => {}
        _ => return Err("--sign-key and --sign-cert go together".to_string().into()),
    }
    report["outcome"] = json!("patch");
    report["module"] =
        json!({"file": format!("{}.ko", args.name), "sha256": sha256_hex(&ko_bytes)});
    // A fetched release and a first prepare are steps of their own, not
    // part of "check".
    for (name, secs) in laps {
        timings.insert(name.to_string(), (secs * 1000.0).round() / 1000.0);
        if let Some(check) = timings.get_mut("check") {
            *check = ((*check - secs).max(0.0) * 1000.0).round() / 1000.0;
        }
    }
    timings.insert(
        "total".into(),
        (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    );
    report["timings_s"] = json!(timings);

    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let report_text = serde_json::to_string_pretty(&report).expect("json");
    crate::files::write_atomic(&args.out.join(format!("{}.ko", args.name)), &ko_bytes)?;
    crate::files::write_atomic(&args.out.join("report.json"), report_text.as_bytes())?;
    if !args.json && !args.quiet {
        for o in &spec.objects {
            for f in &o.funcs {
                eprintln!(
                    "  patched {} in {} (position {})",
                    f.old_name,
                    o.name.as_deref().unwrap_or("vmlinux"),
                    f.sympos
                );
            }
        }
        eprintln!(
            "wrote {} and report.json in {:.1} s",
            args.out.join(format!("{}.ko", args.name)).display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(report)
}

/// The digest the target kernel signs its modules with.
fn sign_hash(tree: &TargetTree) -> Result<modsign::Hash, String> {
    match tree.config.get("CONFIG_MODULE_SIG_HASH") {
        None => Ok(modsign::Hash::Sha256),
        Some(name) => name
            .parse()
            .map_err(|e| format!("CONFIG_MODULE_SIG_HASH of {}: {e}", tree.build.display())),
    }
}

/// Units whose source is a changed `.c` file or that depend on a changed header.
fn affected_units<'a>(
    tree: &'a TargetTree,
    changed: &[PathBuf],
) -> Result<Vec<&'a UnitCommand>, Stop> {
    let mut out = Vec::new();
    for u in &tree.units {
        let names = |p: &Path| -> bool {
            changed.iter().any(|c| {
                p == tree.src.join(c)
                    || p == c.as_path()
                    || (tree.build == tree.src && p == tree.src.join(c))
            })
        };
        if names(&u.source) || u.deps.iter().any(|d| names(d)) {
            if u.object.to_string_lossy().ends_with(".mod.o") {
                continue; // module metadata, regenerated for the livepatch module
            }
            if !u.command.contains("-mcmodel=kernel") {
                return Err(Stop {
                    code: exit::REFUSED,
                    message: format!(
                        "{} is affected but is not kernel text (boot, real-mode or vDSO code): it cannot be live patched",
                        u.object.display()
                    ),
                    report: None,
                });
            }
            out.push(u);
        }
    }
    Ok(out)
}

/// The compiler kbuild recorded must be the one that built vmlinux.
fn check_compiler(tree: &TargetTree) -> Result<(), String> {
    let cc = tree.units[0]
        .command
        .split_whitespace()
        .next()
        .unwrap_or("gcc")
        .to_string();
    let out = std::process::Command::new(&cc)
        .arg("--version")
        .current_dir(&tree.build)
        .output()
        .map_err(|e| format!("cannot run the kernel's compiler `{cc}`: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let data = crate::files::read(&tree.vmlinux)?;
    let file =
        object::File::parse(&*data).map_err(|e| format!("{}: {e}", tree.vmlinux.display()))?;
    use object::{Object, ObjectSection};
    let comment = file
        .section_by_name(".comment")
        .and_then(|s| s.data().ok())
        .map(|d| String::from_utf8_lossy(d).replace('\0', "\n"))
        .unwrap_or_default();
    // `gcc (Debian 12.2.0-14+deb12u1) 12.2.0` vs `GCC: (Debian 12.2.0-14+deb12u1) 12.2.0`.
    let tail = version.split_once(' ').map_or(version.as_str(), |x| x.1);
    if tail.is_empty() || !comment.lines().any(|l| l.ends_with(tail)) {
        let built = comment
            .lines()
            .find(|l| l.starts_with("GCC") || l.contains("clang"))
            .unwrap_or("unknown")
            .to_string();
        return Err(format!(
            "compiler mismatch: {} was built by `{built}`, but `{cc}` is `{version}`; a different compiler inlines differently and the diff would be wrong",
            tree.vmlinux.display()
        ));
    }
    Ok(())
}
