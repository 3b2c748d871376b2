//! A fix series: a directory of numbered fixes applied in order, the
//! cumulative patch every target of a farm gets.
//!
//! ```text
//! series/
//!   0001-proc-cmdline.patch        the fix (git format-patch or a plain diff)
//!   0001-proc-cmdline.check        optional: run in the guest while patched
//!   0002-meminfo.patch
//!   0002-meminfo.d/6.1.patch       the text for 6.1 sources
//!   0002-meminfo.d/6.12.118.patch  the text for 6.12.118 exactly
//! ```
//!
//! Numbers are four digits, run 0001, 0002, … without gaps, and each is
//! used once; the slug is letters, digits, `-`, `_` and `.`. Names starting
//! with `.` are ignored (editors' files); anything else is an error naming
//! the file. A fix's id, title and CVEs are read from its top-level patch
//! the way `kpbuild bundle create` reads them
//! ([`crate::bundle::patch_defaults`]). A variant is chosen for a kernel
//! version when its version (`6.1`, `6.12.118`) is a prefix of the
//! kernel's, component by component; the longest such prefix wins, and
//! without one the top-level patch is used.

use crate::files::{FileError, PathContext};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What is wrong with a series directory; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// A file or directory cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// A name that is not one of the series' kinds.
    #[error(
        "{}: not a fix: expected NNNN-slug.patch, NNNN-slug.d/ or NNNN-slug.check \
         (NNNN four digits, slug of letters, digits, '-', '_', '.'){}",
        path.display(), why
    )]
    BadName {
        /// The file.
        path: PathBuf,
        /// More on what is wrong, starting with `: `, or empty.
        why: &'static str,
    },
    /// Two fixes share a number.
    #[error("{} and {}: two fixes numbered {number:04}", first.display(), second.display())]
    DuplicateNumber {
        /// Their number.
        number: u32,
        /// The first (by name).
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// The numbering does not run 0001, 0002, … without gaps.
    #[error(
        "{}: numbered {found:04}, but fix {expected:04} comes first: a series is numbered \
         0001, 0002, … without gaps",
        path.display()
    )]
    Numbering {
        /// The fix whose number is out of place.
        path: PathBuf,
        /// Its number.
        found: u32,
        /// The number expected in its place.
        expected: u32,
    },
    /// No fix at all.
    #[error("{}: no NNNN-slug.patch files: an empty series", dir.display())]
    Empty {
        /// The series directory.
        dir: PathBuf,
    },
    /// Variants or a check script for a fix that has no patch.
    #[error("{}: belongs to no fix: {} is missing", path.display(), base.display())]
    NoBasePatch {
        /// The variant directory or check script.
        path: PathBuf,
        /// The patch it needs.
        base: PathBuf,
    },
    /// A file in a variant directory that is not `VERSION.patch`.
    #[error(
        "{}: not a variant: expected X.Y.patch or X.Y.Z.patch (a kernel series or version, \
         numbers without leading zeros)",
        path.display()
    )]
    BadVariant {
        /// The file.
        path: PathBuf,
    },
    /// A variant directory with no variant in it.
    #[error("{}: no X.Y.patch or X.Y.Z.patch in the variant directory", dir.display())]
    EmptyVariants {
        /// The directory.
        dir: PathBuf,
    },
    /// A patch that is not UTF-8 text.
    #[error("{}: not UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A patch that changes no file.
    #[error("{}: not a diff: no `--- a/…` / `+++ b/…` file headers", path.display())]
    NotADiff {
        /// The file.
        path: PathBuf,
    },
}

/// One file of a series: where it is, its bytes and their SHA-256.
#[derive(Debug, Clone, Serialize)]
pub struct Text {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of its bytes (hex).
    pub sha256: String,
    /// Its bytes.
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// A fix's text for older sources.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// The series or version it is for (`6.1`, `6.12.118`).
    pub version: String,
    /// The patch.
    pub text: Text,
}

/// One fix of a series.
#[derive(Debug, Clone, Serialize)]
pub struct Fix {
    /// Its number (the `NNNN` of its name).
    pub number: u32,
    /// The slug of its name.
    pub slug: String,
    /// Its id, as `kpbuild bundle create` reads it (the file stem).
    pub id: String,
    /// Its title (the patch's `Subject:` without `[PATCH…]`).
    pub title: String,
    /// The CVEs its description names.
    pub cves: Vec<String>,
    /// The top-level patch (`NNNN-slug.patch`).
    pub patch: Text,
    /// Its variants (`NNNN-slug.d/VERSION.patch`), most specific first.
    pub variants: Vec<Variant>,
    /// Its check script (`NNNN-slug.check`), run in the guest while patched.
    pub check: Option<Text>,
}

/// A series directory, read and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The directory.
    pub dir: PathBuf,
    /// The fixes in order of their numbers.
    pub fixes: Vec<Fix>,
}

/// The text one fix gives one kernel.
#[derive(Debug, Clone, Copy)]
pub struct Chosen<'a> {
    /// The fix.
    pub fix: &'a Fix,
    /// The variant chosen, `None` for the top-level patch.
    pub variant: Option<&'a Variant>,
}

impl<'a> Chosen<'a> {
    /// The chosen patch text.
    pub fn text(&self) -> &'a Text {
        self.variant.map_or(&self.fix.patch, |v| &v.text)
    }
}

/// What a series gives one kernel version: each fix's text, in order, and
/// a hash of everything the target's build and test take from the series.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// The kernel version it was chosen for.
    pub kernel_version: String,
    /// One per fix, in the series' order.
    pub fixes: Vec<Chosen<'a>>,
    /// SHA-256 (hex) over each fix's id, chosen text's SHA-256 and check
    /// script's SHA-256: equal hashes, equal inputs.
    pub sha256: String,
}

/// The parts found for one `NNNN-slug`.
#[derive(Debug, Default)]
struct Parts {
    patch: Option<PathBuf>,
    variants: Option<PathBuf>,
    check: Option<PathBuf>,
}

/// The kinds of entries in a series directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Patch,
    Variants,
    Check,
}

impl Series {
    /// Reads and checks a series directory.
    pub fn read(dir: &Path) -> Result<Series, SeriesError> {
        let stems = scan(dir)?;
        let mut numbers: BTreeMap<u32, PathBuf> = BTreeMap::new();
        let mut fixes = Vec::new();
        for (stem, parts) in &stems {
            let (number, slug) = split_stem(stem).expect("scan checked the name");
            let Some(patch) = &parts.patch else {
                let path = parts.variants.as_ref().or(parts.check.as_ref());
                return Err(SeriesError::NoBasePatch {
                    path: path.expect("a part").clone(),
                    base: dir.join(format!("{stem}.patch")),
                });
            };
            if let Some(first) = numbers.insert(number, patch.clone()) {
                return Err(SeriesError::DuplicateNumber {
                    number,
                    first,
                    second: patch.clone(),
                });
            }
            fixes.push(read_fix(number, slug, patch, parts)?);
        }
        if fixes.is_empty() {
            return Err(SeriesError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        fixes.sort_by_key(|f| f.number);
        for (i, fix) in fixes.iter().enumerate() {
            let expected = i as u32 + 1;
            if fix.number != expected {
                return Err(SeriesError::Numbering {
                    path: fix.patch.path.clone(),
                    found: fix.number,
                    expected,
                });
            }
        }
        Ok(Series {
            dir: dir.to_path_buf(),
            fixes,
        })
    }

    /// The texts a kernel of `kernel_version` (`6.12.118`, `6.1.192`) gets:
    /// per fix, the variant whose version is the longest prefix of it
    /// (component by component: `6.1` is no prefix of `6.12.118`), else the
    /// top-level patch.
    pub fn select(&self, kernel_version: &str) -> Selection<'_> {
        let kernel = numbers_of(kernel_version);
        let fixes: Vec<Chosen<'_>> = self
            .fixes
            .iter()
            .map(|fix| Chosen {
                fix,
                variant: fix
                    .variants
                    .iter()
                    .filter(|v| kernel.starts_with(&numbers_of(&v.version)))
                    .max_by_key(|v| numbers_of(&v.version).len()),
            })
            .collect();
        let mut hash = Sha256::new();
        hash.update(b"kpbuild fix series 1\n");
        for c in &fixes {
            let check = c.fix.check.as_ref().map_or("-", |t| t.sha256.as_str());
            hash.update(format!("{}\t{}\t{check}\n", c.fix.id, c.text().sha256));
        }
        Selection {
            kernel_version: kernel_version.to_string(),
            fixes,
            sha256: kimage::hex(&hash.finalize()),
        }
    }
}

/// The leading numeric components of a version (`6.12.118-rc1` → 6, 12,
/// 118): what a variant's version is compared with.
fn numbers_of(version: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in version.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let Ok(n) = digits.parse() else { break };
        out.push(n);
        if digits.len() != part.len() {
            break;
        }
    }
    out
}

/// The directory's entries grouped by `NNNN-slug`, names checked.
fn scan(dir: &Path) -> Result<BTreeMap<String, Parts>, SeriesError> {
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            return Err(SeriesError::BadName {
                path,
                why: ": the name is not UTF-8",
            });
        };
        if !name.starts_with('.') {
            names.push((name, path));
        }
    }
    names.sort();
    let mut stems: BTreeMap<String, Parts> = BTreeMap::new();
    for (name, path) in names {
        let Some((stem, kind)) = parse_name(&name) else {
            return Err(SeriesError::BadName { path, why: "" });
        };
        let is_dir = path.metadata().at(&path)?.is_dir();
        if is_dir != (kind == Kind::Variants) {
            let why = if is_dir {
                ": a directory"
            } else {
                ": NNNN-slug.d must be a directory"
            };
            return Err(SeriesError::BadName { path, why });
        }
        let parts = stems.entry(stem.to_string()).or_default();
        let slot = match kind {
            Kind::Patch => &mut parts.patch,
            Kind::Variants => &mut parts.variants,
            Kind::Check => &mut parts.check,
        };
        *slot = Some(path);
    }
    Ok(stems)
}

/// `NNNN-slug.patch` → (`NNNN-slug`, Patch), and so on.
fn parse_name(name: &str) -> Option<(&str, Kind)> {
    let (stem, kind) = [
        (".patch", Kind::Patch),
        (".d", Kind::Variants),
        (".check", Kind::Check),
    ]
    .into_iter()
    .find_map(|(ext, kind)| name.strip_suffix(ext).map(|stem| (stem, kind)))?;
    split_stem(stem)?;
    Some((stem, kind))
}

/// `NNNN-slug` → (NNNN, slug).
fn split_stem(stem: &str) -> Option<(u32, &str)> {
    let (number, slug) = stem.split_once('-')?;
    let slug_ok = !slug.is_empty()
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if number.len() != 4 || !number.bytes().all(|b| b.is_ascii_digit()) || !slug_ok {
        return None;
    }
    Some((number.parse().ok()?, slug))
}

/// Reads a file into a [`Text`].
fn read_text(path: &Path) -> Result<Text, SeriesError> {
    let data = crate::files::read(path)?;
    Ok(Text {
        path: path.to_path_buf(),
        sha256: bundle::sha256_hex(&data),
        data,
    })
}

/// Reads a patch: UTF-8 text that changes at least one file.
fn read_patch(path: &Path) -> Result<(Text, String), SeriesError> {
    let text = read_text(path)?;
    let string = String::from_utf8(text.data.clone()).map_err(|_| SeriesError::NotText {
        path: path.to_path_buf(),
    })?;
    if crate::patch::touched_files(&string).is_empty() {
        return Err(SeriesError::NotADiff {
            path: path.to_path_buf(),
        });
    }
    Ok((text, string))
}

fn read_fix(number: u32, slug: &str, patch: &Path, parts: &Parts) -> Result<Fix, SeriesError> {
    let (text, string) = read_patch(patch)?;
    let meta = crate::bundle::patch_defaults(patch, &string);
    let variants = match &parts.variants {
        Some(dir) => read_variants(dir)?,
        None => Vec::new(),
    };
    let check = parts.check.as_deref().map(read_text).transpose()?;
    Ok(Fix {
        number,
        slug: slug.to_string(),
        id: meta.id,
        title: meta.title,
        cves: meta.cves,
        patch: text,
        variants,
        check,
    })
}

/// A variant directory's `VERSION.patch` files, most specific first.
fn read_variants(dir: &Path) -> Result<Vec<Variant>, SeriesError> {
    let mut variants = Vec::new();
    let mut entries: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden {
            entries.push(path);
        }
    }
    entries.sort();
    for path in entries {
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".patch"))
            .filter(|v| is_variant_version(v))
            .filter(|_| path.is_file())
            .ok_or_else(|| SeriesError::BadVariant { path: path.clone() })?
            .to_string();
        let (text, _) = read_patch(&path)?;
        variants.push(Variant { version, text });
    }
    if variants.is_empty() {
        return Err(SeriesError::EmptyVariants {
            dir: dir.to_path_buf(),
        });
    }
    variants.sort_by_key(|v| std::cmp::Reverse(numbers_of(&v.version).len()));
    Ok(variants)
}

/// `X.Y` or `X.Y.Z`, numbers without leading zeros (so that no two names
/// mean one version).
fn is_variant_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::scratch::Scratch;

    /// A small patch of `file` whose description names `cves`.
    fn patch(subject: &str, file: &str, line: &str) -> String {
        format!(
            "From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] {subject}\n\n---\n\
             --- a/{file}\n+++ b/{file}\n@@ -1 +1 @@\n-old\n+{line}\n"
        )
    }

    /// A series of two fixes, the second with variants and a check script.
    fn two_fixes(s: &Scratch) -> PathBuf {
        let dir = s.dir("series");
        s.write(
            "series/0001-cmdline.patch",
            patch(
                "proc: fix cmdline (CVE-2026-1111)",
                "fs/proc/cmdline.c",
                "a",
            ),
        );
        s.write(
            "series/0002-meminfo.patch",
            patch(
                "meminfo: CVE-2026-2222, CVE-2026-3333",
                "fs/proc/meminfo.c",
                "top",
            ),
        );
        for v in ["6.1", "6.12", "6.12.118"] {
            s.write(
                &format!("series/0002-meminfo.d/{v}.patch"),
                patch("meminfo for older sources", "fs/proc/meminfo.c", v),
            );
        }
        s.write("series/0002-meminfo.check", "grep -q x /proc/meminfo\n");
        s.write("series/.0001-cmdline.patch.swp", "an editor's file");
        dir
    }

    #[test]
    fn fixes_in_order_with_their_meta_variants_and_checks() {
        let s = Scratch::new("series-read");
        let dir = two_fixes(&s);
        let series = Series::read(&dir).unwrap();
        let ids: Vec<&str> = series.fixes.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["0001-cmdline", "0002-meminfo"]);
        let (one, two) = (&series.fixes[0], &series.fixes[1]);
        assert_eq!((one.number, one.slug.as_str()), (1, "cmdline"));
        assert_eq!(one.title, "proc: fix cmdline (CVE-2026-1111)");
        assert_eq!(one.cves, ["CVE-2026-1111"]);
        assert_eq!(two.cves, ["CVE-2026-2222", "CVE-2026-3333"]);
        let text = std::fs::read(dir.join("0001-cmdline.patch")).unwrap();
        assert_eq!(one.patch.sha256, bundle::sha256_hex(&text));
        assert_eq!(one.patch.data, text);
        assert!(one.variants.is_empty() && one.check.is_none());
        let versions: Vec<&str> = two.variants.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["6.12.118", "6.1", "6.12"]);
        let check = two.check.as_ref().unwrap();
        assert_eq!(check.path, dir.join("0002-meminfo.check"));
        assert_eq!(
            check.sha256,
            bundle::sha256_hex(b"grep -q x /proc/meminfo\n")
        );
    }

    #[test]
    fn the_most_specific_variant_wins() {
        let s = Scratch::new("series-select");
        let dir = two_fixes(&s);
        let series = Series::read(&dir).unwrap();
        for (kernel, want) in [
            ("6.12.118", "0002-meminfo.d/6.12.118.patch"),
            ("6.12.117", "0002-meminfo.d/6.12.patch"),
            ("6.12.1180", "0002-meminfo.d/6.12.patch"),
            ("6.1.192", "0002-meminfo.d/6.1.patch"),
            ("6.120.1", "0002-meminfo.patch"),
            ("6.13.2", "0002-meminfo.patch"),
            ("6.12.118-rc1", "0002-meminfo.d/6.12.118.patch"),
        ] {
            let sel = series.select(kernel);
            assert_eq!(sel.kernel_version, kernel);
            assert_eq!(sel.fixes.len(), 2);
            assert_eq!(sel.fixes[0].text().path, dir.join("0001-cmdline.patch"));
            assert!(sel.fixes[0].variant.is_none());
            assert_eq!(sel.fixes[1].text().path, dir.join(want), "{kernel}");
        }
        assert_eq!(
            series.select("6.12.118").fixes[1].variant.unwrap().version,
            "6.12.118"
        );
    }

    #[test]
    fn the_series_hash_follows_the_chosen_texts_and_checks() {
        let s = Scratch::new("series-hash");
        let dir = two_fixes(&s);
        let hash = |k: &str| Series::read(&dir).unwrap().select(k).sha256;
        let (new, old, top) = (hash("6.12.118"), hash("6.1.192"), hash("6.13.1"));
        assert_eq!(new.len(), 64);
        assert!(new != old && old != top && new != top);
        assert_eq!(hash("6.12.118"), new, "stable");
        // A variant another target gets changes only that target's hash.
        s.write(
            "series/0002-meminfo.d/6.1.patch",
            patch("meminfo for 6.1, again", "fs/proc/meminfo.c", "6.1 v2"),
        );
        assert_eq!(hash("6.12.118"), new);
        assert_ne!(hash("6.1.192"), old);
        // A check script is an input of every target's test.
        s.write("series/0002-meminfo.check", "true\n");
        assert_ne!(hash("6.12.118"), new);
        assert_ne!(hash("6.13.1"), top);
    }

    /// `Series::read`'s error for the series `files` (name, contents; a
    /// name ending in `/` is a directory).
    fn error(name: &str, files: &[(&str, &str)]) -> (PathBuf, SeriesError) {
        let s = Scratch::new(&format!("series-{name}"));
        let dir = s.dir("series");
        for (file, text) in files {
            match file.strip_suffix('/') {
                Some(d) => drop(s.dir(&format!("series/{d}"))),
                None => drop(s.write(&format!("series/{file}"), text)),
            }
        }
        let e = Series::read(&dir).unwrap_err();
        // The scratch directory goes away here; the path stays comparable.
        (dir, e)
    }

    #[test]
    fn bad_series_are_typed_errors_naming_the_file() {
        let ok = patch("x", "fs/x.c", "x");
        let ok = ok.as_str();
        let (dir, e) = error("empty", &[]);
        assert!(
            matches!(&e, SeriesError::Empty { dir: d } if *d == dir),
            "{e}"
        );
        let (dir, e) = error("only-hidden", &[(".0001-x.patch", ok)]);
        assert!(
            matches!(&e, SeriesError::Empty { dir: d } if *d == dir),
            "{e}"
        );
        for bad in [
            "README",
            "1-x.patch",
            "00001-x.patch",
            "0001x.patch",
            "0001-.patch",
            "0001-a b.patch",
            "0001-x.diff",
        ] {
            let (dir, e) = error("name", &[("0001-ok.patch", ok), (bad, ok)]);
            assert!(
                matches!(&e, SeriesError::BadName { path, .. } if *path == dir.join(bad)),
                "{bad}: {e}"
            );
            assert!(
                e.to_string().contains(&dir.join(bad).display().to_string()),
                "{e}"
            );
        }
        let (dir, e) = error("patch-dir", &[("0001-x.patch/", "")]);
        assert!(
            matches!(&e, SeriesError::BadName { path, why } if *path == dir.join("0001-x.patch") && why.contains("directory")),
            "{e}"
        );
        let (dir, e) = error("d-file", &[("0001-x.patch", ok), ("0001-x.d", ok)]);
        assert!(
            matches!(&e, SeriesError::BadName { path, .. } if *path == dir.join("0001-x.d")),
            "{e}"
        );
        let (dir, e) = error(
            "dup",
            &[
                ("0001-a.patch", ok),
                ("0001-b.patch", ok),
                ("0002-c.patch", ok),
            ],
        );
        assert!(
            matches!(&e, SeriesError::DuplicateNumber { number: 1, first, second } if *first == dir.join("0001-a.patch") && *second == dir.join("0001-b.patch")),
            "{e}"
        );
        let (dir, e) = error("gap", &[("0001-a.patch", ok), ("0003-c.patch", ok)]);
        assert!(
            matches!(&e, SeriesError::Numbering { path, found: 3, expected: 2 } if *path == dir.join("0003-c.patch")),
            "{e}"
        );
        let (dir, e) = error("start", &[("0002-b.patch", ok)]);
        assert!(
            matches!(&e, SeriesError::Numbering { path, found: 2, expected: 1 } if *path == dir.join("0002-b.patch")),
            "{e}"
        );
        let (dir, e) = error("zero", &[("0000-a.patch", ok), ("0001-b.patch", ok)]);
        assert!(
            matches!(&e, SeriesError::Numbering { path, found: 0, expected: 1 } if *path == dir.join("0000-a.patch")),
            "{e}"
        );
        let (dir, e) = error(
            "orphan-d",
            &[("0001-a.patch", ok), ("0002-b.d/6.1.patch", ok)],
        );
        assert!(
            matches!(&e, SeriesError::NoBasePatch { path, base } if *path == dir.join("0002-b.d") && *base == dir.join("0002-b.patch")),
            "{e}"
        );
        let (dir, e) = error(
            "orphan-check",
            &[("0001-a.patch", ok), ("0001-b.check", "true")],
        );
        assert!(
            matches!(&e, SeriesError::NoBasePatch { path, .. } if *path == dir.join("0001-b.check")),
            "{e}"
        );
        for bad in [
            "6.patch",
            "06.1.patch",
            "6.1.2.3.patch",
            "6.x.patch",
            "notes.txt",
            "6.1.patch/",
        ] {
            let (dir, e) = error(
                "variant",
                &[("0001-a.patch", ok), (&format!("0001-a.d/{bad}"), ok)],
            );
            let want = dir.join("0001-a.d").join(bad.trim_end_matches('/'));
            assert!(
                matches!(&e, SeriesError::BadVariant { path } if *path == want),
                "{bad}: {e}"
            );
        }
        let (dir, e) = error("no-variants", &[("0001-a.patch", ok), ("0001-a.d/", "")]);
        assert!(
            matches!(&e, SeriesError::EmptyVariants { dir: d } if *d == dir.join("0001-a.d")),
            "{e}"
        );
        let (dir, e) = error(
            "not-diff",
            &[("0001-a.patch", "Subject: nothing\n\njust words\n")],
        );
        assert!(
            matches!(&e, SeriesError::NotADiff { path } if *path == dir.join("0001-a.patch")),
            "{e}"
        );
        let (dir, e) = error(
            "variant-not-diff",
            &[("0001-a.patch", ok), ("0001-a.d/6.1.patch", "words\n")],
        );
        assert!(
            matches!(&e, SeriesError::NotADiff { path } if *path == dir.join("0001-a.d/6.1.patch")),
            "{e}"
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        let s = Scratch::new("series-unreadable");
        let e = Series::read(&s.path("missing")).unwrap_err();
        assert!(
            matches!(&e, SeriesError::File(f) if f.path == s.path("missing")),
            "{e}"
        );
        let dir = s.dir("series");
        std::os::unix::fs::symlink(s.path("nowhere"), dir.join("0001-a.patch")).unwrap();
        let e = Series::read(&dir).unwrap_err();
        assert!(
            matches!(&e, SeriesError::File(f) if f.path == dir.join("0001-a.patch")),
            "{e}"
        );
        s.write("series2/0001-a.patch", b"--- a/x\n+++ b/x\n\xff\xfe\n");
        let e = Series::read(&s.path("series2")).unwrap_err();
        assert!(
            matches!(&e, SeriesError::NotText { path } if *path == s.path("series2/0001-a.patch")),
            "{e}"
        );
    }
}
