//! Stage 5a, continued: the callers in other units of a changed global
//! function without an ftrace entry.
//!
//! elfdiff carries such a function F in its own unit and redirects its
//! callers there, but other units of the same target object call F too;
//! after the transition they must call the new F as well. The units that
//! reference F are found in the built tree's objects (an undefined symbol
//! F), compiled like the affected units and diffed with
//! `Options::carried_elsewhere`, which redirects (or carries) their callers
//! or refuses where F's address is taken. Their copies' references to F
//! stay inside the livepatch module ([`super::shared`]). A caller that is
//! itself a global without an ftrace entry starts another round, up to
//! [`elfdiff::callers::MAX_DEPTH`] rounds.
//!
//! A tree-less or `--debian` target has no objects to search: its vmlinux
//! is ([`crate::callsites`]): the units of F's direct callers, placed by
//! DWARF, are compiled in the prepared directory, and any other reference
//! to F there (its address in data or in an instruction, a call outside
//! any function) refuses the change.
//!
//! Refused: an exported F (a module, maybe out of tree, could call the old
//! code), F referenced from an assembly unit, more callers in all than the
//! limit.

use super::diffs::{self, Diffs};
use super::error::BuildError;
use super::report::RefusalReport;
use super::units::{self, CompiledPairs, Unit};
use crate::kbuild::UnitCommand;
use crate::tree::{TargetTree, TreeMode};
use object::{Object, ObjectSymbol};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Per unit object, the carried globals of other units whose callers it
/// holds.
pub type Elsewhere = BTreeMap<PathBuf, BTreeSet<String>>;

/// A carried global of one unit.
#[derive(Debug, Clone)]
struct Global {
    name: String,
    /// Its unit's object.
    object: PathBuf,
    /// Its unit's target object (`vmlinux` or a module).
    target: String,
}

/// Where the stage works.
pub struct Context<'a, 't> {
    /// The target.
    pub tree: &'t TargetTree,
    /// The patched copy of the source.
    pub patched_src: &'a Path,
    /// The scratch directory.
    pub work: &'a Path,
    /// The diff options of every unit.
    pub options: &'a elfdiff::Options,
    /// The caller limit, over all units.
    pub max_callers: usize,
    /// The build's thread pool.
    pub pool: &'a rayon::ThreadPool,
    /// Where progress lines go.
    pub progress: &'a super::Progress,
}

/// Redirects the callers in other units of every carried global: adds
/// their units to `pairs` and diffs again; refusals join the diffs'.
pub fn redirect<'t>(
    cx: &Context<'_, 't>,
    mut pairs: CompiledPairs<'t>,
    mut diffs: Diffs,
) -> Result<(CompiledPairs<'t>, Diffs), BuildError> {
    let mut elsewhere = Elsewhere::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut refusals: Vec<RefusalReport> = Vec::new();
    for round in 0..=elfdiff::callers::MAX_DEPTH {
        let fresh: Vec<Global> = carried_globals(&pairs, &diffs)
            .into_iter()
            .filter(|g| !seen.contains(&g.name))
            .collect();
        if fresh.is_empty() {
            break;
        }
        if round == elfdiff::callers::MAX_DEPTH {
            refusals.extend(fresh.iter().map(|g| refusal(g, &format!(
                "global function without an ftrace entry, reached through {} levels of such functions in other units: no traced caller found within the limit",
                elfdiff::callers::MAX_DEPTH
            ))));
            break;
        }
        seen.extend(fresh.iter().map(|g| g.name.clone()));
        let (users, refused) = find_users(cx.tree, &fresh)?;
        refusals.extend(refused);
        let known: BTreeSet<PathBuf> = pairs.units.iter().map(|u| u.cmd.object.clone()).collect();
        let missing: Vec<PathBuf> = users
            .keys()
            .filter(|o| !known.contains(*o))
            .cloned()
            .collect();
        let added: Vec<Unit<'t>> = unit_commands(cx, &missing)?
            .into_iter()
            .map(|cmd| Unit {
                target: cx.tree.target_of(&cmd.object),
                original: cx.work.join("orig").join(&cmd.object),
                patched: cx.work.join("patched").join(&cmd.object),
                cmd,
            })
            .collect();
        if !added.is_empty() {
            let compiled = units::compile(cx.tree, cx.patched_src, added, cx.work, cx.pool)?;
            pairs.units.extend(compiled.units);
        }
        for (object, names) in users {
            elsewhere.entry(object).or_default().extend(names);
        }
        diffs = diffs::diff(&pairs, cx.options, &elsewhere, cx.pool)?;
    }
    refusals.extend(over_limit(&diffs, cx.max_callers));
    fill_other_units(&mut diffs);
    diffs.refusals.extend(refusals);
    Ok((pairs, diffs))
}

/// The carried globals of every unit that patches something.
fn carried_globals(pairs: &CompiledPairs<'_>, diffs: &Diffs) -> Vec<Global> {
    diffs
        .per_target
        .iter()
        .flat_map(|(target, list)| {
            list.iter().flat_map(move |(i, d)| {
                d.carried.iter().filter(|c| c.global).map(move |c| Global {
                    name: c.name.clone(),
                    object: pairs.units[*i].cmd.object.clone(),
                    target: target.clone(),
                })
            })
        })
        .collect()
}

fn refusal(g: &Global, reason: &str) -> RefusalReport {
    RefusalReport {
        object: g.object.clone(),
        reason: reason.to_string(),
        section: String::new(),
        symbol: g.name.clone(),
    }
}

/// The C units of the same target object that reference each global
/// (object → names), and the globals refused.
fn find_users(
    tree: &TargetTree,
    globals: &[Global],
) -> Result<(Elsewhere, Vec<RefusalReport>), BuildError> {
    let mut refused = Vec::new();
    let symvers = crate::files::read_to_string(&tree.symvers)?;
    let exported: BTreeSet<&str> = symvers
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let searched: Vec<&Global> = globals
        .iter()
        .filter(|g| {
            let export = exported.contains(g.name.as_str());
            if export {
                refused.push(refusal(g, &format!(
                    "global function without an ftrace entry, exported ({}): a module, maybe one built out of tree, could call the old code",
                    tree.symvers.display()
                )));
            }
            !export
        })
        .collect();
    if tree.mode != TreeMode::Built {
        let (found, more) = linked_users(tree, &searched)?;
        refused.extend(more);
        return Ok((found, refused));
    }
    let c_units: Vec<&Path> = tree
        .units
        .iter()
        .filter(|u| u.command.contains("-mcmodel=kernel"))
        .filter(|u| !u.object.to_string_lossy().ends_with(".mod.o"))
        .map(|u| u.object.as_path())
        .collect();
    let found = references(tree, &c_units, &searched)?;
    // Assembled objects only (kbuild also preprocesses linker scripts).
    let asm: Vec<PathBuf> = crate::kbuild::scan_asm_units(&tree.build)?
        .into_iter()
        .map(|u| u.object)
        .filter(|o| o.extension().is_some_and(|e| e == "o"))
        .collect();
    let asm: Vec<&Path> = asm.iter().map(PathBuf::as_path).collect();
    for (object, names) in references(tree, &asm, &searched)? {
        for g in searched.iter().filter(|g| names.contains(&g.name)) {
            refused.push(refusal(g, &format!(
                "global function without an ftrace entry, referenced from the assembly unit {}: that code cannot be redirected",
                object.display()
            )));
        }
    }
    Ok((found, refused))
}

/// The kbuild records of `objects`: the tree's, or, for a tree-less
/// target, compiled now in its prepared directory.
fn unit_commands<'t>(
    cx: &Context<'_, 't>,
    objects: &[PathBuf],
) -> Result<Vec<Cow<'t, UnitCommand>>, BuildError> {
    if cx.tree.mode == TreeMode::Built {
        return Ok(objects
            .iter()
            .filter_map(|o| cx.tree.units.iter().find(|u| &u.object == o))
            .map(Cow::Borrowed)
            .collect());
    }
    let progress = |line: &str| cx.progress.note(line);
    Ok(crate::treeless::compile_more(cx.tree, objects, &progress)?
        .into_iter()
        .map(Cow::Owned)
        .collect())
}

/// Without a built tree's objects: the units of the direct callers in the
/// linked vmlinux (decoded, placed by DWARF), and every other way to the
/// old code, refused.
fn linked_users(
    tree: &TargetTree,
    globals: &[&Global],
) -> Result<(Elsewhere, Vec<RefusalReport>), BuildError> {
    let mut found = Elsewhere::new();
    let mut refused = Vec::new();
    if globals.is_empty() {
        return Ok((found, refused));
    }
    let data = crate::files::read(&tree.vmlinux)?;
    for g in globals {
        if g.target != "vmlinux" {
            refused.push(refusal(g, &format!(
                "global function without an ftrace entry in {}: the other units of a module are searched only in a built tree",
                g.target
            )));
            continue;
        }
        let sites = crate::callsites::search(&tree.vmlinux, &data, &g.name)?;
        if let Some(r) = sites.references.first() {
            refused.push(refusal(g, &format!(
                "global function without an ftrace entry, and the running kernel reaches it otherwise than by a direct call: {r}{}",
                match sites.references.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            )));
            continue;
        }
        let own = g.object.with_extension("c");
        for call in sites
            .calls
            .iter()
            .filter(|c| !c.section.starts_with(".init"))
        {
            match &call.unit {
                Some(unit) if *unit == own => {}
                Some(unit) if unit.extension().is_some_and(|e| e == "c") => {
                    found
                        .entry(unit.with_extension("o"))
                        .or_default()
                        .insert(g.name.clone());
                }
                unit => {
                    refused.push(refusal(g, &format!(
                        "global function without an ftrace entry, called from {} at {:#x}{}: that caller cannot be compiled and redirected",
                        call.caller,
                        call.address,
                        unit.as_ref()
                            .map(|u| format!(" in {}", u.display()))
                            .unwrap_or_else(|| " (no DWARF unit covers it)".into())
                    )));
                }
            }
        }
    }
    Ok((found, refused))
}

/// Which of `objects` (of each global's target, but its own unit) have an
/// undefined symbol named after a global: object → names.
fn references(
    tree: &TargetTree,
    objects: &[&Path],
    globals: &[&Global],
) -> Result<Elsewhere, BuildError> {
    type Hit = Option<(PathBuf, BTreeSet<String>)>;
    let hits: Vec<Result<Hit, BuildError>> = objects
        .par_iter()
        .map(|&object| {
            let wanted: Vec<&Global> = globals
                .iter()
                .copied()
                .filter(|g| g.object != object && tree.target_of(object) == g.target)
                .collect();
            if wanted.is_empty() {
                return Ok(None);
            }
            let path = tree.build.join(object);
            let data = crate::files::read(&path)?;
            let file = object::File::parse(&*data).map_err(|e| BuildError::UnreadableObject {
                path: path.clone(),
                why: e.to_string(),
            })?;
            let names: BTreeSet<String> = file
                .symbols()
                .filter(|s| s.is_undefined())
                .filter_map(|s| s.name().ok())
                .filter(|n| wanted.iter().any(|g| g.name == *n))
                .map(str::to_string)
                .collect();
            Ok((!names.is_empty()).then(|| (object.to_path_buf(), names)))
        })
        .collect();
    let mut out = Elsewhere::new();
    for hit in hits {
        if let Some((object, names)) = hit? {
            out.insert(object, names);
        }
    }
    Ok(out)
}

/// Each carried global's callers, in its own unit first, then elsewhere,
/// by name.
fn callers_by_global(diffs: &Diffs) -> BTreeMap<String, Vec<(PathBuf, Vec<String>)>> {
    let mut out: BTreeMap<String, Vec<(PathBuf, Vec<String>)>> = BTreeMap::new();
    let home = diffs
        .units
        .iter()
        .flat_map(|u| u.carried.iter().filter(|c| c.global).map(move |c| (u, c)));
    let other = diffs
        .units
        .iter()
        .flat_map(|u| u.carried_elsewhere.iter().map(move |c| (u, c)));
    for (u, c) in home.chain(other) {
        out.entry(c.name.clone())
            .or_default()
            .push((u.object.clone(), c.callers.clone()));
    }
    out
}

/// A refusal for each carried global with more callers in all units than
/// the limit.
fn over_limit(diffs: &Diffs, max_callers: usize) -> Vec<RefusalReport> {
    let mut out = Vec::new();
    for (name, units) in callers_by_global(diffs) {
        let total: usize = units.iter().map(|(_, c)| c.len()).sum();
        if total > max_callers {
            out.push(RefusalReport {
                object: units[0].0.clone(),
                reason: format!(
                    "has no ftrace entry and {total} callers in {} units, more than the limit of {max_callers} (--max-callers)",
                    units.len()
                ),
                section: String::new(),
                symbol: name,
            });
        }
    }
    out
}

/// Lists, with each carried global of a unit, its callers in other units.
fn fill_other_units(diffs: &mut Diffs) {
    let mut elsewhere: BTreeMap<String, Vec<elfdiff::UnitCallers>> = BTreeMap::new();
    for u in &diffs.units {
        for c in &u.carried_elsewhere {
            elsewhere
                .entry(c.name.clone())
                .or_default()
                .push(elfdiff::UnitCallers {
                    object: u.object.display().to_string(),
                    callers: c.callers.clone(),
                });
        }
    }
    for u in &mut diffs.units {
        for c in u.carried.iter_mut().filter(|c| c.global) {
            c.other_units = elsewhere.get(&c.name).cloned().unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::report::UnitReport;

    fn carried(name: &str, callers: &[&str], global: bool) -> elfdiff::CarriedFunction {
        elfdiff::CarriedFunction {
            name: name.into(),
            callers: callers.iter().map(|c| c.to_string()).collect(),
            global,
            other_units: Vec::new(),
        }
    }

    fn unit(
        object: &str,
        carried: Vec<elfdiff::CarriedFunction>,
        elsewhere: Vec<elfdiff::CarriedFunction>,
    ) -> UnitReport {
        UnitReport {
            changed: Vec::new(),
            new: Vec::new(),
            carried,
            carried_elsewhere: elsewhere,
            object: object.into(),
            outcome: elfdiff::Outcome::Patch,
            target: "vmlinux".into(),
            line_only: Vec::new(),
            marks: elfdiff::kpatch::Marks::default(),
        }
    }

    /// `clock_raw` carried in a.o by one caller, called from b.o by two
    /// and from c.o by one; `local_helper` (static) in c.o.
    fn diffs() -> Diffs {
        Diffs {
            units: vec![
                unit(
                    "b.o",
                    vec![],
                    vec![carried("clock_raw", &["b1", "b2"], false)],
                ),
                unit("a.o", vec![carried("clock_raw", &["a1"], true)], vec![]),
                unit(
                    "c.o",
                    vec![carried("local_helper", &["c2"], false)],
                    vec![carried("clock_raw", &["c1"], false)],
                ),
            ],
            refusals: Vec::new(),
            per_target: Default::default(),
        }
    }

    #[test]
    fn other_units_are_listed_with_the_carried_global() {
        let mut d = diffs();
        fill_other_units(&mut d);
        let home = &d.units[1].carried[0];
        let listed: Vec<(&str, Vec<String>)> = home
            .other_units
            .iter()
            .map(|u| (u.object.as_str(), u.callers.clone()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("b.o", vec!["b1".to_string(), "b2".to_string()]),
                ("c.o", vec!["c1".to_string()])
            ]
        );
        // A local carried function has no other units.
        assert!(d.units[2].carried[0].other_units.is_empty());
    }

    #[test]
    fn the_limit_counts_callers_in_every_unit_and_names_the_home_unit() {
        let d = diffs();
        assert!(over_limit(&d, 4).is_empty(), "4 callers in all");
        let refused = over_limit(&d, 3);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].symbol, "clock_raw");
        assert_eq!(refused[0].object, PathBuf::from("a.o"));
        assert!(
            refused[0].reason.contains("4 callers in 3 units")
                && refused[0].reason.contains("--max-callers"),
            "{}",
            refused[0].reason
        );
    }
}
