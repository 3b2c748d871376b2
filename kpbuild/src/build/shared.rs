//! New globals shared between the units of one patch: a function or
//! variable one unit adds and another calls or reads. All units' extracted
//! objects are linked into the one livepatch module, so such a reference is
//! a plain relocation inside the module, whichever target object (vmlinux
//! or a module) either unit patches; the running kernel has no such symbol
//! to look up.

use super::error::BuildError;
use super::report::SharedSymbolReport;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What the units of a patch define as new and use of each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedSymbols {
    /// Every new global some unit defines: references to these stay inside
    /// the module.
    pub names: BTreeSet<String>,
    /// Each of them that another unit references, with who defines it and
    /// who uses it, by name.
    pub reports: Vec<SharedSymbolReport>,
}

impl SharedSymbols {
    /// From the diffs of the units that patch something, `(unit object,
    /// diff)` in the tree's order. One name defined as new by two units is
    /// an error naming both.
    pub fn of(units: &[(&Path, &elfdiff::Diff)]) -> Result<Self, BuildError> {
        let mut defined: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (object, d)) in units.iter().enumerate() {
            for name in &d.new_globals {
                if let Some(&first) = defined.get(name.as_str()) {
                    return Err(BuildError::DuplicateNewSymbol {
                        name: name.clone(),
                        first: units[first].0.to_path_buf(),
                        second: object.to_path_buf(),
                    });
                }
                defined.insert(name, i);
            }
        }
        let mut used: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
        for (i, (_, d)) in units.iter().enumerate() {
            for r in d.references.iter().filter(|r| !r.local) {
                if defined.get(r.name.as_str()).is_some_and(|&def| def != i) {
                    used.entry(r.name.as_str()).or_default().insert(i);
                }
            }
        }
        let reports = used
            .into_iter()
            .map(|(name, users)| SharedSymbolReport {
                defined_in: units[defined[name]].0.to_path_buf(),
                name: name.to_string(),
                used_by: users
                    .into_iter()
                    .map(|i| units[i].0.to_path_buf())
                    .collect(),
            })
            .collect();
        Ok(SharedSymbols {
            names: defined.keys().map(|n| n.to_string()).collect(),
            reports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn diff(new_globals: &[&str], references: &[(&str, bool)]) -> elfdiff::Diff {
        elfdiff::Diff {
            outcome: elfdiff::Outcome::Patch,
            changed: Vec::new(),
            new: Vec::new(),
            new_globals: new_globals.iter().map(|s| s.to_string()).collect(),
            callbacks: Vec::new(),
            refusals: Vec::new(),
            line_only: Vec::new(),
            included: Vec::new(),
            references: references
                .iter()
                .map(|&(name, local)| elfdiff::Reference {
                    name: name.to_string(),
                    local,
                    function: true,
                })
                .collect(),
            file_name: None,
            original_locals: Vec::new(),
            object: None,
        }
    }

    #[test]
    fn new_globals_are_internal_and_reported_with_their_users() {
        let cmdline = diff(&["tag", "tag_calls", "unused_new"], &[("seq_puts", false)]);
        let meminfo = diff(
            &[],
            &[("tag", false), ("tag_calls", false), ("si_meminfo", false)],
        );
        // A module-target unit: same rule, the module carries both.
        let kobject = diff(&[], &[("tag", false), ("sysfs_emit", false)]);
        // A static of the same name in another unit is its own symbol.
        let other = diff(&[], &[("tag_calls", true)]);
        let units: Vec<(&Path, &elfdiff::Diff)> = vec![
            (Path::new("fs/proc/cmdline.o"), &cmdline),
            (Path::new("fs/proc/meminfo.o"), &meminfo),
            (Path::new("samples/kobject/kobject-example.o"), &kobject),
            (Path::new("fs/other.o"), &other),
        ];
        let shared = SharedSymbols::of(&units).unwrap();
        assert_eq!(
            shared.names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["tag", "tag_calls", "unused_new"]
        );
        let report = |name: &str, users: &[&str]| SharedSymbolReport {
            defined_in: PathBuf::from("fs/proc/cmdline.o"),
            name: name.to_string(),
            used_by: users.iter().map(PathBuf::from).collect(),
        };
        assert_eq!(
            shared.reports,
            [
                report(
                    "tag",
                    &["fs/proc/meminfo.o", "samples/kobject/kobject-example.o"]
                ),
                report("tag_calls", &["fs/proc/meminfo.o"]),
            ]
        );
    }

    #[test]
    fn one_new_global_in_two_units_is_an_error_naming_both() {
        let a = diff(&["tag"], &[]);
        let b = diff(&["other"], &[]);
        let c = diff(&["tag"], &[]);
        let units: Vec<(&Path, &elfdiff::Diff)> = vec![
            (Path::new("fs/proc/cmdline.o"), &a),
            (Path::new("fs/proc/meminfo.o"), &b),
            (Path::new("net/netlink/af_netlink.o"), &c),
        ];
        let err = SharedSymbols::of(&units).unwrap_err();
        assert!(
            matches!(&err, BuildError::DuplicateNewSymbol { name, first, second }
                if name == "tag"
                    && first == Path::new("fs/proc/cmdline.o")
                    && second == Path::new("net/netlink/af_netlink.o")),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("fs/proc/cmdline.o") && message.contains("net/netlink/af_netlink.o"),
            "{message}"
        );
        assert_eq!(err.kind(), crate::build::ErrorKind::Error);
        // No new global at all: nothing internal, nothing reported.
        let none = diff(&[], &[("printk", false)]);
        let shared = SharedSymbols::of(&[(Path::new("a.o"), &none)]).unwrap();
        assert_eq!(shared, SharedSymbols::default());
    }
}
