//! A Debian 13 (trixie) kernel, built by gcc-14, which Debian 12 lacks:
//! `kpbuild build --debian` compiles it in the cached trixie build root.

use super::Ctx;

/// The newest Debian 13 cloud release whose source apt has: the cmdline
/// string patch and the new-helper patch, built with `--debian` (every
/// compile in the trixie build root: the module's objects say gcc 14),
/// both life cycles in one boot of the release's own vmlinuz.
pub(super) fn debian13_cloud(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian13_release()?;
    let (root, seconds) = crate::buildroot(crate::BUILDROOT_SUITE)?;
    eprintln!(
        "  > trixie build root {} ready in {seconds:.1} s",
        root.dir().display()
    );
    super::debian::both_lifecycles(ctx, &release, "deb13")?;
    // The objects and the module glue were compiled by the root's gcc-14.
    for what in ["string", "helper"] {
        let ko = ctx
            .work
            .join(format!("debian-kpb_deb13_{what}"))
            .join(format!("kpb_deb13_{what}.ko"));
        let comment = gcc_comments(&ko)?;
        if comment.is_empty() || !comment.iter().all(|c| c.starts_with("GCC: (Debian 14.")) {
            return Err(format!(
                "{}: expected only gcc 14 in .comment, found {comment:?}",
                ko.display()
            ));
        }
    }
    Ok(())
}

/// The distinct `.comment` strings of an ELF file.
fn gcc_comments(path: &std::path::Path) -> Result<Vec<String>, String> {
    use object::{Object as _, ObjectSection as _};
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", path.display()))?;
    let section = file
        .section_by_name(".comment")
        .ok_or_else(|| format!("{}: no .comment", path.display()))?;
    let bytes = section.data().map_err(|e| e.to_string())?;
    let mut out: Vec<String> = bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
