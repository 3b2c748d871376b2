//! `kpbuild diff`: one original/patched object pair → the livepatch object.

use crate::exit;
use crate::files::FileError;
use std::path::PathBuf;

/// Why `kpbuild diff` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// A bad `--entry-size`.
    #[error("--entry-size {arg}: {source}")]
    EntrySize {
        /// The argument.
        arg: String,
        /// What is wrong with it.
        source: EntrySizeError,
    },
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The objects cannot be diffed.
    #[error(transparent)]
    Diff(#[from] elfdiff::Error),
    /// The target cannot be loaded.
    #[error(transparent)]
    Target(#[from] crate::target::LoadError),
    /// The relocator failed.
    #[error("{}: {source}", path.display())]
    Relocate {
        /// The patched object.
        path: PathBuf,
        /// The cause.
        source: Box<relocator::Error>,
    },
}

/// A bad `SECTION=BYTES`.
#[derive(Debug, thiserror::Error)]
pub enum EntrySizeError {
    /// No `=`.
    #[error("expected SECTION=BYTES")]
    Form,
    /// Not a number.
    #[error("{0:?} is not a number of bytes")]
    NotANumber(String),
    /// Zero.
    #[error("an entry size of 0 bytes makes no sense")]
    Zero,
}

/// Arguments of `kpbuild diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The original object (built from the unpatched source).
    pub original: PathBuf,
    /// The patched object (same unit, built from the patched source).
    pub patched: PathBuf,
    /// The object being patched: `vmlinux` or a module name.
    #[arg(long)]
    pub target: String,
    /// An ELF whose symbol table stands for the running target (its
    /// `vmlinux` or `.ko`; the original object itself works too).
    #[arg(long)]
    pub target_symbols: PathBuf,
    /// Where to write the livepatch object.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The target's `Module.symvers` (exports); without it, exports are read
    /// from the `__ksymtab_` symbols of `--target-symbols` (or `--vmlinux`).
    #[arg(long)]
    pub symvers: Option<PathBuf>,
    /// vmlinux, when `--target` is a module: references the module does not
    /// define resolve there.
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// Print one JSON object instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
    /// Entry size of a special section, overriding the built-in table.
    /// (Checked when the command runs, so a bad value exits 1, not with
    /// clap's usage code 2, which means "refused".)
    #[arg(long = "entry-size", value_name = "SECTION=BYTES")]
    pub entry_sizes: Vec<String>,
    /// A changed function without an ftrace entry is carried by the traced
    /// functions that call it; refuse one with more callers than this.
    #[arg(long, default_value_t = elfdiff::callers::DEFAULT_MAX_CALLERS)]
    pub max_callers: usize,
}

fn parse_entry_size(s: &str) -> Result<(String, usize), EntrySizeError> {
    let (name, size) = s.split_once('=').ok_or(EntrySizeError::Form)?;
    let size: usize = size
        .parse()
        .map_err(|_| EntrySizeError::NotANumber(size.to_string()))?;
    if size == 0 {
        return Err(EntrySizeError::Zero);
    }
    Ok((name.to_string(), size))
}

/// Runs `kpbuild diff`; returns the exit code.
pub fn run(args: &DiffArgs) -> u8 {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kpbuild diff: error: {e}");
            exit::ERROR
        }
    }
}

fn run_inner(args: &DiffArgs) -> Result<u8, DiffError> {
    let entry_sizes = args
        .entry_sizes
        .iter()
        .map(|s| {
            parse_entry_size(s).map_err(|source| DiffError::EntrySize {
                arg: s.clone(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    let original = crate::files::read(&args.original)?;
    let patched = crate::files::read(&args.patched)?;
    let options = elfdiff::Options {
        entry_sizes,
        max_callers: Some(args.max_callers),
        ..elfdiff::Options::default()
    };
    let diff = elfdiff::diff(
        &args.original.display().to_string(),
        &original,
        &args.patched.display().to_string(),
        &patched,
        &options,
    )?;
    let code = match diff.outcome {
        elfdiff::Outcome::Patch => exit::SUCCESS,
        elfdiff::Outcome::NoChange => exit::NO_CHANGE,
        elfdiff::Outcome::Refused => exit::REFUSED,
    };
    // One object cannot show a global's callers in other units: only the
    // build, which sees every unit, can redirect them.
    if let Some(c) = diff.carried.iter().find(|c| c.global) {
        eprintln!(
            "kpbuild diff: refused: {}: {} is a global function without an ftrace entry: its callers in other units must be redirected too, which `kpbuild build` does",
            args.patched.display(),
            c.name
        );
        return Ok(exit::REFUSED);
    }
    let mut relocated = None;
    if code == exit::SUCCESS {
        let object = diff
            .object
            .as_deref()
            .expect("a patch outcome carries an object");
        let target = crate::target::TargetFiles::load(
            &args.target,
            &args.target_symbols,
            args.vmlinux.as_deref(),
            args.symvers.as_deref(),
        )?;
        let r = match target.relocate(&diff, object, "kpb_new_", &Default::default()) {
            Ok(r) => r,
            Err(e) if matches!(*e, relocator::Error::Unsupported { .. }) => {
                eprintln!("kpbuild diff: refused: {}: {e}", args.patched.display());
                return Ok(exit::REFUSED);
            }
            Err(source) => {
                return Err(DiffError::Relocate {
                    path: args.patched.clone(),
                    source,
                });
            }
        };
        let final_object =
            relocator::klp::convert_to_livepatch(&r.object).map_err(|e| DiffError::Relocate {
                path: args.output.clone(),
                source: Box::new(e),
            })?;
        crate::files::write_atomic(&args.output, &final_object)?;
        relocated = Some(r);
    }
    if args.json {
        let json = json(&diff, relocated.as_ref());
        crate::outln!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        print!("{}", human(&diff));
        if let Some(r) = &relocated {
            print!("{}", crate::target::human(r));
        }
        if code == exit::SUCCESS {
            crate::outln!("wrote {}", args.output.display());
        }
    }
    // The verdict on stderr too, naming the input (stdout may be JSON).
    match diff.outcome {
        elfdiff::Outcome::Patch => {}
        elfdiff::Outcome::Refused => eprintln!(
            "kpbuild diff: {}: refused: the change cannot be live patched safely",
            args.patched.display()
        ),
        elfdiff::Outcome::NoChange => eprintln!(
            "kpbuild diff: {}: no functional change",
            args.patched.display()
        ),
    }
    Ok(code)
}

/// The `--json` object of a diff (and its relocation, for a patch).
fn json(
    diff: &elfdiff::Diff,
    relocated: Option<&relocator::resolve::Relocated>,
) -> serde_json::Value {
    serde_json::json!({
        "outcome": diff.outcome,
        "changed": diff.changed.iter().map(|c| &c.name).collect::<Vec<_>>(),
        "new": diff.new,
        "carried": diff.carried,
        "new_globals": diff.new_globals,
        "refusals": diff.refusals,
        "included": diff.included,
        "line_only": diff.line_only,
        "callbacks": diff.callbacks,
        "ignored_functions": diff.marks.ignored_functions,
        "ignored_sections": diff.marks.ignored_sections,
        "forced_functions": diff.marks.forced_functions,
        "details": {
            "changed": diff.changed,
            "references": diff.references,
            "file": diff.file_name,
        },
        "functions": relocated.map(|r| crate::target::functions_json(&r.functions)),
        "relocations": relocated.map(|r| crate::target::resolutions_json(&r.resolutions)),
    })
}

/// One line per finding, in the form the fixture expectations use.
pub fn human(diff: &elfdiff::Diff) -> String {
    let mut out = String::new();
    for c in &diff.changed {
        out.push_str(&format!(
            "changed function: {} ({} at +{:#x})\n",
            c.name, c.what, c.offset
        ));
    }
    for n in &diff.new {
        out.push_str(&format!("new function: {n}\n"));
    }
    for c in &diff.carried {
        out.push_str(&format!(
            "carried function (no ftrace entry): {}, called by the redirected {}\n",
            c.name,
            c.callers.join(", ")
        ));
    }
    for c in &diff.callbacks {
        out.push_str(&format!("callback: {} {}\n", c.kind, c.function));
    }
    for f in &diff.marks.ignored_functions {
        out.push_str(&format!("ignored function (KPATCH_IGNORE_FUNCTION): {f}\n"));
    }
    for s in &diff.marks.ignored_sections {
        out.push_str(&format!("ignored section (KPATCH_IGNORE_SECTION): {s}\n"));
    }
    for f in &diff.marks.forced_functions {
        out.push_str(&format!(
            "forced function (KPATCH_FORCE_UNSAFE, reported only): {f}\n"
        ));
    }
    for l in &diff.line_only {
        out.push_str(&format!(
            "line numbers only: {}: {}\n",
            l.symbol,
            l.what.join("; ")
        ));
    }
    for r in &diff.refusals {
        let sym = if r.symbol.is_empty() {
            String::new()
        } else {
            format!(" {}", r.symbol)
        };
        out.push_str(&format!("refused: {}{sym}: {}\n", r.section, r.reason));
    }
    out.push_str(match diff.outcome {
        elfdiff::Outcome::Patch => "outcome: patch\n",
        elfdiff::Outcome::NoChange => "outcome: no functional change\n",
        elfdiff::Outcome::Refused => "outcome: refused (cannot be live patched safely)\n",
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A patch diff with a callback and each kind of kpatch mark.
    fn marked() -> elfdiff::Diff {
        elfdiff::Diff {
            outcome: elfdiff::Outcome::Patch,
            changed: vec![],
            new: vec!["setup".into()],
            carried: vec![],
            carried_elsewhere: vec![],
            new_globals: vec![],
            callbacks: vec![elfdiff::callbacks::Callback {
                kind: "pre_patch".into(),
                function: "setup".into(),
            }],
            marks: elfdiff::kpatch::Marks {
                ignored_functions: vec!["warns".into()],
                ignored_sections: vec![".data.stats".into()],
                forced_functions: vec!["busy_loop".into()],
            },
            refusals: vec![],
            line_only: vec![],
            included: vec![],
            references: vec![],
            file_name: None,
            original_locals: vec![],
            object: None,
        }
    }

    #[test]
    fn human_lists_callbacks_and_kpatch_marks() {
        let text = human(&marked());
        for line in [
            "callback: pre_patch setup",
            "ignored function (KPATCH_IGNORE_FUNCTION): warns",
            "ignored section (KPATCH_IGNORE_SECTION): .data.stats",
            "forced function (KPATCH_FORCE_UNSAFE, reported only): busy_loop",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn json_lists_callbacks_and_kpatch_marks() {
        let v = json(&marked(), None);
        assert_eq!(v["callbacks"][0]["kind"], "pre_patch");
        assert_eq!(v["callbacks"][0]["function"], "setup");
        assert_eq!(v["ignored_functions"], serde_json::json!(["warns"]));
        assert_eq!(v["ignored_sections"], serde_json::json!([".data.stats"]));
        assert_eq!(v["forced_functions"], serde_json::json!(["busy_loop"]));
    }
}
