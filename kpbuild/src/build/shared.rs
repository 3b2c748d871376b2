//! New globals shared between the units of one patch: a function or
//! variable one unit adds and another calls or reads, and a changed global
//! function without an ftrace entry that one unit carries and the callers
//! another unit redirects call. All units' extracted
//! objects are linked into the one livepatch module, so such a reference is
//! a plain relocation inside the module, whichever target object (vmlinux
//! or a module) either unit patches; the running kernel has no such symbol
//! to look up.
//!
//! One direction is refused: a new global defined by a unit of a module and
//! used by a unit of another target object (vmlinux or another module). The
//! livepatch core applies the relocations of a module's object only when
//! that module is loaded, so a caller elsewhere could run the new code
//! before its references are resolved. Defined in a vmlinux unit, a new
//! global is safe to use from anywhere.

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
    /// target object, diff)` in the tree's order. One name defined as new
    /// by two units is an error naming both; one a module's unit defines
    /// and another target object's unit uses is refused.
    pub fn of(units: &[(&Path, &str, &elfdiff::Diff)]) -> Result<Self, BuildError> {
        let mut defined: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (object, _, d)) in units.iter().enumerate() {
            // A carried global (a changed function without an ftrace entry)
            // is reached through the module's copy too, never the old code.
            let carried = d.carried.iter().filter(|c| c.global).map(|c| &c.name);
            for name in d.new_globals.iter().chain(carried) {
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
        for (i, (object, target, d)) in units.iter().enumerate() {
            for r in d.references.iter().filter(|r| !r.local) {
                let Some(&def) = defined.get(r.name.as_str()) else {
                    continue;
                };
                if def == i {
                    continue;
                }
                let (home, owner) = (units[def].1, units[def].0);
                if home != "vmlinux" && home != *target {
                    return Err(BuildError::NewSymbolOutsideModule {
                        name: r.name.clone(),
                        defined_in: owner.to_path_buf(),
                        module: home.to_string(),
                        user: object.to_path_buf(),
                        user_target: target.to_string(),
                    });
                }
                used.entry(r.name.as_str()).or_default().insert(i);
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
            carried: Vec::new(),
            carried_elsewhere: Vec::new(),
            new_globals: new_globals.iter().map(|s| s.to_string()).collect(),
            callbacks: Vec::new(),
            marks: elfdiff::kpatch::Marks::default(),
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
        let units: Vec<(&Path, &str, &elfdiff::Diff)> = vec![
            (Path::new("fs/proc/cmdline.o"), "vmlinux", &cmdline),
            (Path::new("fs/proc/meminfo.o"), "vmlinux", &meminfo),
            (
                Path::new("samples/kobject/kobject-example.o"),
                "kobject_example",
                &kobject,
            ),
            (Path::new("fs/other.o"), "vmlinux", &other),
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
        let units: Vec<(&Path, &str, &elfdiff::Diff)> = vec![
            (Path::new("fs/proc/cmdline.o"), "vmlinux", &a),
            (Path::new("fs/proc/meminfo.o"), "vmlinux", &b),
            (Path::new("net/netlink/af_netlink.o"), "vmlinux", &c),
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
        let shared = SharedSymbols::of(&[(Path::new("a.o"), "vmlinux", &none)]).unwrap();
        assert_eq!(shared, SharedSymbols::default());
    }

    #[test]
    fn a_module_units_new_global_used_elsewhere_is_refused() {
        let defines = diff(&["tag"], &[]);
        let same_module = diff(&[], &[("tag", false)]);
        let vmlinux_user = diff(&[], &[("tag", false)]);
        let module = (Path::new("fs/xfs/xfs_stats.o"), "xfs", &defines);
        // Used inside its own module: one klp_object, relocated together.
        let units = [
            module,
            (Path::new("fs/xfs/xfs_super.o"), "xfs", &same_module),
        ];
        let shared = SharedSymbols::of(&units).unwrap();
        assert_eq!(shared.reports.len(), 1);
        for (user, target) in [
            ("fs/proc/meminfo.o", "vmlinux"),
            ("fs/ext4/super.o", "ext4"),
        ] {
            let units = [module, (Path::new(user), target, &vmlinux_user)];
            let err = SharedSymbols::of(&units).unwrap_err();
            assert_eq!(err.kind(), crate::build::ErrorKind::Refused, "{err}");
            let message = err.to_string();
            for part in ["tag", "fs/xfs/xfs_stats.o", "xfs", user, target] {
                assert!(message.contains(part), "{part}: {message}");
            }
        }
    }
}
