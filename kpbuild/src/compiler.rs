//! How far apart two compilers are, from their version lines
//! (`x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0`, or the `.comment`
//! form `GCC: (Debian 12.2.0-14) 12.2.0`). An older kernel may have been
//! built by an earlier package revision of the same gcc than the one
//! installed: same command, same upstream version, another Debian revision.
//! That is worth a warning, not a refusal: pre-match then proves, function
//! by function, that the code compiled here is the target's. Anything else
//! (another major or upstream version, another vendor) is an error.

/// A compiler version line, in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilerText<'a> {
    /// The command (`x86_64-linux-gnu-gcc-12`), empty in the `.comment` form.
    pub command: &'a str,
    /// The vendor (`Debian`) in the parentheses, if any.
    pub vendor: Option<&'a str>,
    /// The vendor's package version (`12.2.0-14+deb12u1`), if any.
    pub package: Option<&'a str>,
    /// The upstream version after the parentheses (`12.2.0`).
    pub upstream: &'a str,
}

/// Splits a version line. `GCC:` (the `.comment` form) is no command.
pub fn parse(text: &str) -> CompilerText<'_> {
    let text = text.trim();
    let (head, paren, tail) = match (text.find('('), text.rfind(')')) {
        (Some(open), Some(close)) if open < close => (
            &text[..open],
            Some(&text[open + 1..close]),
            &text[close + 1..],
        ),
        _ => (text, None, ""),
    };
    let mut head_words = head.split_whitespace();
    let mut command = head_words.next().unwrap_or("");
    if command == "GCC:" {
        command = "";
    }
    let (vendor, package) = match paren.map(|p| p.split_once(' ')) {
        Some(Some((v, pkg))) => (Some(v), Some(pkg.trim())),
        Some(None) => (paren, None),
        None => (None, None),
    };
    let upstream = match paren {
        Some(_) => tail.split_whitespace().next().unwrap_or(""),
        None => head_words.last().unwrap_or(""),
    };
    CompilerText {
        command,
        vendor,
        package,
        upstream,
    }
}

/// How a compiler here differs from the one that built the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The same version line.
    Same,
    /// Same command (when both name one), vendor and upstream version; only
    /// the vendor's package revision differs.
    Revision {
        /// The kernel's (`12.2.0-14`).
        want: String,
        /// This machine's (`12.2.0-14+deb12u1`).
        have: String,
    },
    /// Another compiler: what differs, in words.
    Other(String),
}

/// Compares the kernel's compiler line `want` with this machine's `have`.
pub fn compare(want: &str, have: &str) -> Difference {
    if want.trim() == have.trim() {
        return Difference::Same;
    }
    let (w, h) = (parse(want), parse(have));
    if !w.command.is_empty() && !h.command.is_empty() && w.command != h.command {
        return Difference::Other(format!(
            "another compiler command: `{}` vs `{}`",
            w.command, h.command
        ));
    }
    if w.upstream != h.upstream {
        return Difference::Other(format!(
            "another version: {} vs {}",
            if w.upstream.is_empty() {
                "?"
            } else {
                w.upstream
            },
            if h.upstream.is_empty() {
                "?"
            } else {
                h.upstream
            }
        ));
    }
    if w.vendor != h.vendor {
        return Difference::Other(format!(
            "another vendor build: {} vs {}",
            w.vendor.unwrap_or("none"),
            h.vendor.unwrap_or("none")
        ));
    }
    match (w.package, h.package) {
        (Some(a), Some(b))
            if crate::debian::release::upstream_of(a) == crate::debian::release::upstream_of(b) =>
        {
            Difference::Revision {
                want: a.to_string(),
                have: b.to_string(),
            }
        }
        (a, b) => Difference::Other(format!(
            "another package version: {} vs {}",
            a.unwrap_or("none"),
            b.unwrap_or("none")
        )),
    }
}

/// The warning for a revision-only difference.
pub fn revision_warning(cc: &str, want: &str, have: &str) -> String {
    format!(
        "compiler revision differs: the kernel was built by `{cc}` of package revision {want}, \
         this machine's is {have} (same upstream version); pre-match checks that the code is the kernel's"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_in_parts() {
        let t = parse("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0");
        assert_eq!(
            (t.command, t.vendor, t.package, t.upstream),
            (
                "x86_64-linux-gnu-gcc-12",
                Some("Debian"),
                Some("12.2.0-14+deb12u1"),
                "12.2.0"
            )
        );
        let t = parse("GCC: (Debian 12.2.0-14) 12.2.0");
        assert_eq!(
            (t.command, t.package, t.upstream),
            ("", Some("12.2.0-14"), "12.2.0")
        );
        let t = parse("gcc (GCC) 14.1.1");
        assert_eq!(
            (t.command, t.vendor, t.package, t.upstream),
            ("gcc", Some("GCC"), None, "14.1.1")
        );
        assert_eq!(parse("clang version 17.0.6").upstream, "17.0.6");
    }

    #[test]
    fn a_package_revision_is_only_a_revision() {
        assert_eq!(
            compare(
                "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0",
                "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
            ),
            Difference::Revision {
                want: "12.2.0-14".into(),
                have: "12.2.0-14+deb12u1".into()
            }
        );
        assert_eq!(
            compare(
                "GCC: (Debian 12.2.0-14) 12.2.0",
                "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
            ),
            Difference::Revision {
                want: "12.2.0-14".into(),
                have: "12.2.0-14+deb12u1".into()
            }
        );
        assert_eq!(
            compare(
                "gcc-12 (Debian 12.2.0-14) 12.2.0",
                "gcc-12 (Debian 12.2.0-14) 12.2.0"
            ),
            Difference::Same
        );
    }

    #[test]
    fn other_compilers_say_what_differs() {
        for (want, have, needle) in [
            (
                "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0",
                "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
                "command",
            ),
            (
                "gcc-12 (Debian 12.3.0-1) 12.3.0",
                "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
                "12.3.0 vs 12.2.0",
            ),
            (
                "gcc-12 (Ubuntu 12.2.0-14) 12.2.0",
                "gcc-12 (Debian 12.2.0-14) 12.2.0",
                "vendor",
            ),
            (
                "gcc-12 (Debian 12.2.0-14) 12.2.0",
                "gcc-12 (Debian 12.2.1-1) 12.2.0",
                "package version",
            ),
        ] {
            match compare(want, have) {
                Difference::Other(why) => assert!(why.contains(needle), "{want}: {why}"),
                d => panic!("{want} vs {have}: {d:?}"),
            }
        }
    }

    #[test]
    fn the_warning_names_both_revisions() {
        let w = revision_warning("gcc-12", "12.2.0-14", "12.2.0-14+deb12u1");
        assert!(
            w.contains("revision 12.2.0-14,")
                && w.contains("12.2.0-14+deb12u1")
                && w.contains("pre-match")
        );
    }
}
