//! Names the compiler generates and renumbers between builds.
//!
//! `count.3` may become `count.5`, `foo.isra.0` may become `foo.isra.1`,
//! `__UNIQUE_ID_ddebug12` may become `__UNIQUE_ID_ddebug14`. The canonical form
//! drops those numbers, so correlation can group candidates; the numbers never
//! decide a match by themselves.

/// The name with compiler-generated numbers removed.
pub fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.split('.').enumerate() {
        if i > 0 && !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if i > 0 && part.starts_with("llvm") {
            // `.llvm.<hash>`: the hash changes with any change to the unit.
            out.push_str(".llvm");
            continue;
        }
        if i > 0 {
            out.push('.');
        }
        out.push_str(part);
    }
    if let Some(rest) = out.strip_prefix("__UNIQUE_ID_") {
        let trimmed = rest.trim_end_matches(|c: char| c.is_ascii_digit());
        return format!("__UNIQUE_ID_{trimmed}");
    }
    out
}

/// Whether a name carries a number the compiler chose.
pub fn is_generated(name: &str) -> bool {
    canonical(name) != name
}

/// The function a `.cold` part belongs to (`foo.cold` → `foo`,
/// `foo.part.0.cold.1` → `foo.part.0`).
pub fn cold_parent(name: &str) -> Option<&str> {
    let at = name.find(".cold")?;
    let rest = &name[at + 5..];
    if rest.is_empty() || rest.starts_with('.') && rest[1..].bytes().all(|b| b.is_ascii_digit()) {
        Some(&name[..at])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (name, want) in [
            ("count.3", "count"),
            ("foo.isra.0", "foo.isra"),
            ("foo.part.0.cold", "foo.part.cold"),
            ("foo.constprop.12.isra.0", "foo.constprop.isra"),
            ("foo.llvm.123456789", "foo.llvm"),
            ("__UNIQUE_ID_ddebug123", "__UNIQUE_ID_ddebug"),
            ("__key.7", "__key"),
            ("cmdline_proc_show", "cmdline_proc_show"),
            ("__func__.1", "__func__"),
        ] {
            assert_eq!(canonical(name), want, "{name}");
        }
        assert!(!is_generated("foo"));
        assert!(is_generated("foo.isra.0"));
    }

    #[test]
    fn cold_parents() {
        assert_eq!(cold_parent("foo.cold"), Some("foo"));
        assert_eq!(cold_parent("foo.part.0.cold"), Some("foo.part.0"));
        assert_eq!(cold_parent("foo.cold.3"), Some("foo"));
        assert_eq!(cold_parent("foo"), None);
        assert_eq!(cold_parent("foo.coldness"), None);
    }
}
