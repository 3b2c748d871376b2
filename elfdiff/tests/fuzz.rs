//! Fuzzing elfdiff: whatever the bytes, `Input::parse` and `diff` return
//! `Ok` or `Err`, never panic, and an object they write parses again.
//!
//! Seeds are fixture pairs compiled at test time (see `fixtures/elfdiff`)
//! plus the pairs kept in `fuzz-corpus/`; mutations aim at the ELF header,
//! the section header table, the symbol table, the relocations and the
//! string tables. Every kept corpus file is also run as is. See
//! `fuzz-corpus/README.md` for running longer and for keeping a crash.

#[path = "../../fuzz-corpus/support/fuzzing.rs"]
mod fuzzing;

use fuzzing::{apply, config, cut, mutations, with_elf_header};
use proptest::prelude::*;
use proptest::sample::Index;
use std::sync::OnceLock;

/// Fixture cases whose objects cover every kind of special section and the
/// correlation paths (clones, renumbered statics, cold parts).
const CASES: &[&str] = &[
    "two_functions_changed",
    "jump_label_in_changed_function",
    "exception_table_changed_function",
    "alternative_in_changed_function",
    "warn_on_condition_changed",
    "static_call_in_changed_function",
    "cold_part_changed",
    "new_helper_function",
    "static_local_renumbered",
    "bss_size_changed",
    "isra_clone_renumbered",
    "switch_table_renumbered",
];

/// (label, original, patched)
type Pair = (String, Vec<u8>, Vec<u8>);

fn pairs() -> &'static [Pair] {
    static PAIRS: OnceLock<Vec<Pair>> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let scratch = fuzzing::Scratch::new("elfdiff-fuzz");
        let mut pairs = fuzzing::compile_pairs(CASES, scratch.root());
        pairs.extend(fuzzing::corpus_pairs());
        assert!(
            !pairs.is_empty(),
            "no seed objects: neither gcc nor fuzz-corpus/seeds/*.orig.o"
        );
        pairs
    })
}

fn pick(i: &Index) -> &'static Pair {
    i.get(pairs())
}

const SPECIAL: &[&str] = &[
    "__bug_table",
    "__jump_table",
    "__ex_table",
    ".altinstructions",
    ".static_call_sites",
    ".retpoline_sites",
];

fn options(entry_size: Option<(Index, usize)>) -> elfdiff::Options {
    let mut o = elfdiff::Options::default();
    if let Some((i, size)) = entry_size {
        o.entry_sizes.insert(i.get(SPECIAL).to_string(), size);
    }
    o
}

/// The property: no panic; an `Ok` patch carries an object `object` and
/// `goblin` can read. Returns a description of a violation.
fn check(o: &[u8], p: &[u8], opts: &elfdiff::Options) -> Result<(), String> {
    let run = || {
        let _ = elfdiff::input::Input::parse("orig.o", o);
        let _ = elfdiff::input::Input::parse("patched.o", p);
        elfdiff::diff("orig.o", o, "patched.o", p, opts)
    };
    let result = match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(panic) => {
            fuzzing::save_crash(&[("orig.o", o), ("patched.o", p)]);
            std::panic::resume_unwind(panic)
        }
    };
    let Ok(d) = result else {
        return Ok(());
    };
    let verdict = match (&d.outcome, &d.object) {
        (elfdiff::Outcome::Patch, Some(obj)) => {
            object::File::parse(&obj[..])
                .map_err(|e| format!("the written object does not parse: {e}"))?;
            goblin::elf::Elf::parse(obj)
                .map_err(|e| format!("goblin cannot read the written object: {e}"))?;
            Ok(())
        }
        (elfdiff::Outcome::Patch, None) => Err("a patch outcome without an object".into()),
        (_, Some(_)) => Err("an object without a patch outcome".into()),
        _ => Ok(()),
    };
    if verdict.is_err() {
        fuzzing::save_crash(&[("orig.o", o), ("patched.o", p)]);
    }
    verdict
}

fn entry_size() -> impl Strategy<Value = Option<(Index, usize)>> {
    prop::option::weighted(0.2, (any::<Index>(), 1usize..40))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_original(i in any::<Index>(), muts in mutations(6), es in entry_size()) {
        let (_, o, p) = pick(&i);
        let o = apply(o, &muts);
        prop_assert_eq!(check(&o, p, &options(es)), Ok(()));
    }

    #[test]
    fn mutated_patched(i in any::<Index>(), muts in mutations(6), es in entry_size()) {
        let (_, o, p) = pick(&i);
        let p = apply(p, &muts);
        prop_assert_eq!(check(o, &p, &options(es)), Ok(()));
    }

    #[test]
    fn both_mutated(i in any::<Index>(), mo in mutations(3), mp in mutations(3)) {
        let (_, o, p) = pick(&i);
        let (o, p) = (apply(o, &mo), apply(p, &mp));
        prop_assert_eq!(check(&o, &p, &options(None)), Ok(()));
    }

    #[test]
    fn truncated(i in any::<Index>(), at in any::<Index>(), how in any::<u8>(), side in any::<bool>()) {
        let (_, o, p) = pick(&i);
        let (o, p) = if side {
            (&o[..cut(o, at, how)], &p[..])
        } else {
            (&o[..], &p[..cut(p, at, how)])
        };
        prop_assert_eq!(check(o, p, &options(None)), Ok(()));
    }

    #[test]
    fn random_bytes(
        i in any::<Index>(),
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        header in any::<bool>(),
        side in any::<bool>(),
    ) {
        let (_, o, p) = pick(&i);
        let r = with_elf_header(bytes, header);
        let (o, p) = if side { (&r[..], &p[..]) } else { (&o[..], &r[..]) };
        prop_assert_eq!(check(o, p, &options(None)), Ok(()));
    }

    #[test]
    fn unrelated_pair(i in any::<Index>(), j in any::<Index>(), mo in prop::option::of(mutations(2))) {
        let (_, o, _) = pick(&i);
        let (_, _, p) = pick(&j);
        let o = match &mo {
            Some(m) => apply(o, m),
            None => o.clone(),
        };
        prop_assert_eq!(check(&o, p, &options(None)), Ok(()));
    }
}

/// Every kept corpus file as either side of every seed pair, itself against
/// itself, and corpus pairs as they are.
#[test]
fn corpus_never_panics() {
    let files = fuzzing::corpus_files();
    let opts = options(None);
    let mut failures = Vec::new();
    let mut runs = 0;
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        let mut one = |o: &[u8], p: &[u8], what: &str| {
            runs += 1;
            let r = std::panic::catch_unwind(|| check(o, p, &opts));
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{} ({what}): {e}", path.display())),
                Err(_) => failures.push(format!("{} ({what}): panicked", path.display())),
            }
        };
        one(&data, &data, "both sides");
        for (label, o, p) in pairs() {
            one(&data, p, &format!("original, against {label}"));
            one(o, &data, &format!("patched, against {label}"));
        }
    }
    for (label, o, p) in fuzzing::corpus_pairs() {
        runs += 1;
        match std::panic::catch_unwind(|| check(&o, &p, &opts)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{label}: {e}")),
            Err(_) => failures.push(format!("{label}: panicked")),
        }
    }
    eprintln!("{} corpus files, {runs} runs", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The seeds themselves diff cleanly (so the mutations start from objects
/// that reach deep into the differ); the kept crashes are seeds too, but
/// most of them are rightly refused.
#[test]
fn seeds_diff() {
    let mut patches = 0;
    for (label, o, p) in pairs().iter().filter(|(l, _, _)| !l.contains("crashes")) {
        let d = elfdiff::diff("orig.o", o, "patched.o", p, &elfdiff::Options::default());
        match d {
            Ok(d) => patches += usize::from(d.outcome == elfdiff::Outcome::Patch),
            Err(e) => panic!("{label}: {e}"),
        }
    }
    assert!(patches > 0, "no seed pair makes a patch");
}
