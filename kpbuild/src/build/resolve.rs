//! Stage 1: the target, however it was described, becomes the one
//! [`TargetTree`] every later stage works from. A built tree is read as it
//! is; a tree-less target and a Debian release get a prepared build
//! directory in which the changed units are compiled once.

use super::error::BuildError;
use super::request::{Progress, TargetSpec};
use crate::patch::SourcePatch;
use crate::tree::TargetTree;
use crate::treeless::TreelessFiles;
use std::time::Instant;

/// The target description, and the time of the long steps a tree-less
/// target may take (`fetch` of a Debian release, `prepare` of the private
/// build directory), which the report counts apart from `check`.
pub struct Resolved {
    /// The target.
    pub tree: TargetTree,
    /// (step, seconds) of each long step taken.
    pub laps: Vec<(&'static str, f64)>,
    /// What the build goes on despite (a compiler package revision other
    /// than the kernel's), for the report.
    pub warnings: Vec<String>,
    /// The cache entries the build uses (Debian release, source, prepared
    /// directory), held while it runs so `kpbuild cache prune` skips them.
    pub holds: Vec<crate::cache::Hold>,
}

/// Resolves `spec` and checks the compiler against the target's vmlinux.
/// A changed header may have at most `max_header_users` users.
pub fn resolve(
    spec: &TargetSpec,
    patches: &[SourcePatch],
    max_header_users: usize,
    progress: &Progress,
) -> Result<Resolved, BuildError> {
    let note = |m: &str| progress.note(m);
    let mut laps = Vec::new();
    let mut warnings = Vec::new();
    let mut holds = Vec::new();
    // A Debian release, fetched, outlives the files that borrow from it.
    let fetched;
    let (src, files) = match spec {
        TargetSpec::Tree {
            src,
            build,
            vmlinux,
        } => {
            let mut tree = TargetTree::from_build_tree(src, build)?;
            if let Some(v) = vmlinux {
                tree.vmlinux = v.clone();
            }
            let headers = crate::headers::changed_headers(patches);
            if !headers.is_empty() {
                crate::headers::check_built_tree(&tree, &headers, max_header_users)?;
            }
            return checked(tree, laps, warnings, holds, progress);
        }
        TargetSpec::Treeless {
            src,
            config,
            vmlinux,
            headers,
            modules,
        } => (
            src.as_path(),
            TreelessFiles {
                config,
                vmlinux,
                headers,
                modules: modules.as_deref(),
                debian_release: None,
                max_header_users,
            },
        ),
        TargetSpec::Debian { release, src } => {
            let start = Instant::now();
            fetched = crate::debian::fetch_with_source(release, src.as_deref(), &note)?;
            laps.push(("fetch", start.elapsed().as_secs_f64()));
            holds.extend(fetched.holds.iter().cloned());
            (
                src.as_deref().unwrap_or(fetched.src.as_path()),
                TreelessFiles {
                    config: &fetched.config,
                    vmlinux: &fetched.vmlinux,
                    headers: &fetched.headers,
                    modules: Some(&fetched.modules),
                    debian_release: Some(release),
                    max_header_users,
                },
            )
        }
    };
    let tree = crate::treeless::prepared_tree(
        src,
        &files,
        patches,
        &note,
        &mut laps,
        &mut warnings,
        &mut holds,
    )?;
    checked(tree, laps, warnings, holds, progress)
}

/// The resolved target, once its compiler is checked against its vmlinux.
fn checked(
    tree: TargetTree,
    laps: Vec<(&'static str, f64)>,
    mut warnings: Vec<String>,
    holds: Vec<crate::cache::Hold>,
    progress: &Progress,
) -> Result<Resolved, BuildError> {
    if let Some(w) = tree.check_compiler()?
        && !warnings.contains(&w)
    {
        progress.note(&format!("warning: {w}"));
        warnings.push(w);
    }
    Ok(Resolved {
        tree,
        laps,
        warnings,
        holds,
    })
}
