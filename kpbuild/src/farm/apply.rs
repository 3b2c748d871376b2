//! Which fixes of a series apply to one target's source, before anything is
//! compiled.
//!
//! The texts a target gets are applied in the series' order to a shadow of
//! its source ([`crate::patch::shadow_tree`]: links, real copies of the
//! touched files), the way a build applies them. Each is tried with
//! `patch --dry-run` first, so a text that fails leaves none of its hunks
//! behind, and then applied for real, so the next fix sees it. A fix that
//! does not apply (its code is not in this source, or is already fixed
//! there) is left out and the next one is tried; a fix that changes what no
//! livepatch can change is refused. The source itself is never written.

use crate::farm::series::{Chosen, Selection};
use crate::files::FileError;
use crate::patch::{self, PatchError, SourcePatch};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why the fixes could not be tried at all.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A patch that cannot be read, names a path outside the tree, or
    /// `patch` that cannot be run.
    #[error(transparent)]
    Patch(#[from] PatchError),
    /// The shadow tree cannot be made.
    #[error(transparent)]
    File(#[from] FileError),
}

/// What one fix does to one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Applies {
    /// It applies (after the fixes before it that apply).
    Applies,
    /// It does not apply to this source.
    DoesNotApply {
        /// What `patch` said.
        why: String,
    },
    /// It changes what no livepatch can change.
    Refused {
        /// Why.
        why: String,
    },
}

/// One fix's outcome on one source.
#[derive(Debug, Clone, Serialize)]
pub struct FixOnSource {
    /// The fix's id.
    pub id: String,
    /// The text tried.
    pub text: PathBuf,
    /// The fix's check script.
    pub check: Option<PathBuf>,
    /// What it does.
    #[serde(flatten)]
    pub applies: Applies,
}

/// Tries each text of `selection` on `src`, in order, in a shadow tree made
/// in `work` (removed before and after).
pub fn check(
    src: &Path,
    selection: &Selection<'_>,
    work: &Path,
) -> Result<Vec<FixOnSource>, ApplyError> {
    let mut read: Vec<(&Chosen<'_>, Result<SourcePatch, String>)> = Vec::new();
    for chosen in &selection.fixes {
        match patch::check(std::slice::from_ref(&chosen.text().path)) {
            Ok(mut p) => read.push((chosen, Ok(p.remove(0)))),
            Err(e) if e.is_refusal() => read.push((chosen, Err(e.to_string()))),
            Err(e) => return Err(e.into()),
        }
    }
    let patches: Vec<SourcePatch> = read
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok().cloned())
        .collect();
    let touched = patch::inside_tree(&patches)?;
    let _ = std::fs::remove_dir_all(work);
    let result = try_each(src, work, &touched, read);
    let _ = std::fs::remove_dir_all(work);
    result
}

fn try_each(
    src: &Path,
    work: &Path,
    touched: &[PathBuf],
    read: Vec<(&Chosen<'_>, Result<SourcePatch, String>)>,
) -> Result<Vec<FixOnSource>, ApplyError> {
    patch::shadow_tree(src, work, touched)?;
    let mut out = Vec::new();
    for (chosen, p) in read {
        let applies = match p {
            Err(why) => Applies::Refused { why },
            Ok(p) => match patch::apply_one(src, work, &p, true)
                .and_then(|()| patch::apply_one(src, work, &p, false))
            {
                Ok(()) => Applies::Applies,
                Err(PatchError::DoesNotApply { output, .. }) => Applies::DoesNotApply {
                    why: String::from_utf8_lossy(&output.stdout).trim().to_string(),
                },
                Err(e) => return Err(e.into()),
            },
        };
        out.push(FixOnSource {
            id: chosen.fix.id.clone(),
            text: chosen.text().path.clone(),
            check: chosen.fix.check.as_ref().map(|t| t.path.clone()),
            applies,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farm::series::Series;
    use testbed::scratch::Scratch;

    fn diff(file: &str, old: &str, new: &str) -> String {
        format!("--- a/{file}\n+++ b/{file}\n@@ -1,2 +1,2 @@\n-{old}\n+{new}\n keep\n")
    }

    #[test]
    fn fixes_apply_in_order_and_the_rest_is_said() {
        if testbed::oracle::tool("patch", "patch").is_none() {
            return;
        }
        let s = Scratch::new("farm-apply");
        s.write("src/fs/a.c", "one\nkeep\n");
        s.write("src/fs/b.c", "two\nkeep\n");
        s.write("src/fs/c.c", "fixed\nkeep\n");
        s.write("series/0001-a.patch", diff("fs/a.c", "one", "uno"));
        // Needs 0001's change: applies only after it.
        s.write("series/0002-a-again.patch", diff("fs/a.c", "uno", "eins"));
        s.write("series/0003-b.patch", diff("fs/b.c", "deux", "zwei"));
        s.write("series/0004-kconfig.patch", diff("fs/Kconfig", "x", "y"));
        // Already fixed in this source.
        s.write("series/0005-c.patch", diff("fs/c.c", "broken", "fixed"));
        s.write("series/0006-b-too.patch", diff("fs/b.c", "two", "dos"));
        let series = Series::read(&s.path("series")).unwrap();
        let work = s.path("work");
        let got = check(&s.path("src"), &series.select("6.12.1"), &work).unwrap();
        let outcomes: Vec<(&str, &str)> = got
            .iter()
            .map(|f| {
                let what = match &f.applies {
                    Applies::Applies => "applies",
                    Applies::DoesNotApply { .. } => "does not apply",
                    Applies::Refused { .. } => "refused",
                };
                (f.id.as_str(), what)
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("0001-a", "applies"),
                ("0002-a-again", "applies"),
                ("0003-b", "does not apply"),
                ("0004-kconfig", "refused"),
                ("0005-c", "does not apply"),
                ("0006-b-too", "applies"),
            ]
        );
        let Applies::DoesNotApply { why } = &got[2].applies else {
            unreachable!()
        };
        assert!(why.contains("FAILED"), "{why}");
        let Applies::Refused { why } = &got[3].applies else {
            unreachable!()
        };
        assert!(why.contains("Kconfig"), "{why}");
        assert_eq!(got[5].text, s.path("series/0006-b-too.patch"));
        // The source is untouched, the shadow gone.
        assert_eq!(
            std::fs::read_to_string(s.path("src/fs/a.c")).unwrap(),
            "one\nkeep\n"
        );
        assert_eq!(
            std::fs::read_to_string(s.path("src/fs/b.c")).unwrap(),
            "two\nkeep\n"
        );
        assert!(!work.exists());
    }

    #[test]
    fn a_path_outside_the_tree_is_an_error() {
        let s = Scratch::new("farm-apply-outside");
        s.write("src/fs/a.c", "one\nkeep\n");
        s.write("series/0001-a.patch", diff("../a.c", "one", "uno"));
        let series = Series::read(&s.path("series")).unwrap();
        let e = check(&s.path("src"), &series.select("6.12.1"), &s.path("work")).unwrap_err();
        assert!(
            matches!(&e, ApplyError::Patch(PatchError::OutsideTree(p)) if p == Path::new("../a.c")),
            "{e}"
        );
    }
}
