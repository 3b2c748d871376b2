//! Debian kernel release names, in both of Debian's schemes:
//! - `6.12.115+deb12-cloud-amd64`: the upstream version, `+debNN` (the
//!   Debian release that built it, sometimes `+debNN.M`), the flavour;
//! - `6.1.0-57-cloud-amd64`: the series with `.0`, an ABI number and the
//!   flavour (Debian 12's own 6.1 kernels); the upstream version is only in
//!   the package version (`6.1.192-3`) and the banner.

use super::DebianError;
use std::fmt;

/// The amd64 flavours kpbuild builds for.
pub const FLAVOURS: &[&str] = &["amd64", "cloud-amd64", "rt-amd64"];

/// The kernel series whose releases kpbuild knows how to fetch.
pub const SERIES: &[&str] = &["6.1", "6.12"];

/// A Debian release (of the distribution) that ships kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suite {
    /// Debian 12, bookworm: this machine's own apt configuration.
    Bookworm,
    /// Debian 13, trixie: a private apt configuration in the cache.
    Trixie,
}

impl Suite {
    /// The suite of `+debNN` (12 or 13).
    pub fn from_number(n: u32) -> Option<Suite> {
        match n {
            12 => Some(Suite::Bookworm),
            13 => Some(Suite::Trixie),
            _ => None,
        }
    }

    /// `deb12`, `deb13`: the tag in release names and reports.
    pub fn tag(self) -> &'static str {
        match self {
            Suite::Bookworm => "deb12",
            Suite::Trixie => "deb13",
        }
    }

    /// The archive's codename (`bookworm`, `trixie`).
    pub fn codename(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }

    /// Where its image packages install modules: Debian 13 has merged
    /// `/usr` (`usr/lib/modules`), Debian 12 `lib/modules`.
    pub fn modules_dir(self) -> &'static str {
        match self {
            Suite::Bookworm => "lib/modules",
            Suite::Trixie => "usr/lib/modules",
        }
    }

    /// `Debian 12`, `Debian 13`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "Debian 12",
            Suite::Trixie => "Debian 13",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// A parsed kernel release name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The whole name (`6.1.0-57-cloud-amd64`).
    pub name: String,
    /// `6.12`, `6.1`.
    pub series: String,
    /// The upstream version the name carries (`6.12.115`), `None` for an
    /// ABI-style name, whose upstream version only the package knows.
    pub upstream: Option<String>,
    /// The ABI number of an ABI-style name (`57`).
    pub abi: Option<u32>,
    /// `amd64`, `cloud-amd64`, `rt-amd64`.
    pub flavour: String,
    /// The Debian release whose archive has it.
    pub suite: Suite,
}

impl Release {
    /// `linux-source-SERIES`, the package of its source.
    pub fn source_package(&self) -> String {
        format!("linux-source-{}", self.series)
    }

    /// `linux-image-RELEASE-unsigned`, whose version is the release's.
    pub fn image_package(&self) -> String {
        format!("linux-image-{}-unsigned", self.name)
    }
}

fn not_a_release(name: &str, why: &'static str) -> DebianError {
    DebianError::NotARelease {
        release: name.to_string(),
        why,
    }
}

/// Parses a release name of either scheme.
pub fn parse(name: &str) -> Result<Release, DebianError> {
    if name.is_empty() || name.contains(['/', ' ']) || name.starts_with('.') {
        return Err(not_a_release(name, "not a kernel release name"));
    }
    let flavour = FLAVOURS
        .iter()
        .filter(|f| {
            name.strip_suffix(**f)
                .is_some_and(|rest| rest.ends_with('-'))
        })
        .max_by_key(|f| f.len())
        .ok_or_else(|| not_a_release(name, "the flavour is not amd64, cloud-amd64 or rt-amd64"))?;
    let stem = &name[..name.len() - flavour.len() - 1];
    let release = match stem.split_once('+') {
        Some((upstream, deb)) => parse_plus(name, upstream, deb)?,
        None => parse_abi(name, stem)?,
    };
    Ok(Release {
        flavour: flavour.to_string(),
        ..release
    })
}

/// `6.12.115` + `deb12` (or `deb13.1`).
fn parse_plus(name: &str, upstream: &str, deb: &str) -> Result<Release, DebianError> {
    let parts: Vec<&str> = upstream.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| is_number(p)) {
        return Err(not_a_release(name, "the version is not X.Y.Z"));
    }
    let number = deb
        .strip_prefix("deb")
        .map(|n| n.split_once('.').map_or(n, |(major, _)| major))
        .filter(|n| is_number(n))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| not_a_release(name, "no +debNN after the version"))?;
    let suite = Suite::from_number(number)
        .ok_or_else(|| not_a_release(name, "not a Debian 12 or 13 kernel"))?;
    Ok(Release {
        name: name.to_string(),
        series: format!("{}.{}", parts[0], parts[1]),
        upstream: Some(upstream.to_string()),
        abi: None,
        flavour: String::new(),
        suite,
    })
}

/// `6.1.0-57`: Debian 12's 6.1 kernels.
fn parse_abi(name: &str, stem: &str) -> Result<Release, DebianError> {
    let (version, abi) = stem
        .split_once('-')
        .ok_or_else(|| not_a_release(name, "neither X.Y.Z+debNN nor X.Y.0-ABI"))?;
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() != 3 || parts[2] != "0" || !parts.iter().all(|p| is_number(p)) {
        return Err(not_a_release(name, "neither X.Y.Z+debNN nor X.Y.0-ABI"));
    }
    let abi: u32 = Some(abi)
        .filter(|a| is_number(a))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| not_a_release(name, "the ABI number is not a number"))?;
    let series = format!("{}.{}", parts[0], parts[1]);
    // ABI-style names are Debian 12's 6.1; older series are older Debians.
    if series != "6.1" {
        return Err(not_a_release(
            name,
            "of the ABI-style names (X.Y.0-N), only Debian 12's 6.1 kernels are known",
        ));
    }
    Ok(Release {
        name: name.to_string(),
        series,
        upstream: None,
        abi: Some(abi),
        flavour: String::new(),
        suite: Suite::Bookworm,
    })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The upstream part of a Debian package version: `6.1.192` of
/// `6.1.192-3`, `6.12.115` of `6.12.115-2~deb12u1`.
pub fn upstream_of(version: &str) -> &str {
    let no_epoch = version.split_once(':').map_or(version, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u)
}

/// Compares two Debian package versions the way dpkg does (epoch,
/// upstream, revision; `~` sorts before everything, even the end): see
/// [`super::version::compare`].
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    super::version::compare(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn plus_names_of_both_suites_and_every_flavour() {
        let r = parse("6.12.115+deb12-cloud-amd64").unwrap();
        assert_eq!(
            (r.series.as_str(), r.upstream.as_deref(), r.abi),
            ("6.12", Some("6.12.115"), None)
        );
        assert_eq!(
            (r.flavour.as_str(), r.suite),
            ("cloud-amd64", Suite::Bookworm)
        );
        assert_eq!(
            r.image_package(),
            "linux-image-6.12.115+deb12-cloud-amd64-unsigned"
        );
        assert_eq!(r.source_package(), "linux-source-6.12");
        let r = parse("6.12.118+deb13-rt-amd64").unwrap();
        assert_eq!((r.flavour.as_str(), r.suite), ("rt-amd64", Suite::Trixie));
        // Debian 13 has merged /usr: its image packages ship usr/lib/modules.
        assert_eq!(r.suite.modules_dir(), "usr/lib/modules");
        assert_eq!(Suite::Bookworm.modules_dir(), "lib/modules");
        let r = parse("6.12.115+deb13.1-amd64").unwrap();
        assert_eq!((r.flavour.as_str(), r.suite), ("amd64", Suite::Trixie));
        assert_eq!(r.upstream.as_deref(), Some("6.12.115"));
    }

    #[test]
    fn abi_names_are_debian_12s_6_1() {
        let r = parse("6.1.0-57-cloud-amd64").unwrap();
        assert_eq!(
            (r.series.as_str(), r.upstream.as_deref(), r.abi, r.suite),
            ("6.1", None, Some(57), Suite::Bookworm)
        );
        assert_eq!(r.flavour, "cloud-amd64");
        assert_eq!(parse("6.1.0-47-amd64").unwrap().flavour, "amd64");
        assert_eq!(parse("6.1.0-47-rt-amd64").unwrap().abi, Some(47));
        assert_eq!(r.source_package(), "linux-source-6.1");
    }

    #[test]
    fn bad_names_say_why() {
        for (name, why) in [
            ("", "not a kernel release name"),
            ("../x-amd64", "not a kernel release name"),
            ("6.12.115+deb12-arm64", "flavour"),
            ("6.12.115+deb12-cloudamd64", "flavour"),
            ("6.12+deb12-amd64", "X.Y.Z"),
            ("6.12.115+deb11-amd64", "Debian 12 or 13"),
            ("6.12.115+ubuntu-amd64", "+debNN"),
            ("5.10.0-30-amd64", "6.1"),
            ("6.1.0-x-amd64", "ABI number"),
            ("6.1.3-57-amd64", "X.Y.0-ABI"),
            ("6.12.999-amd64", "X.Y.0-ABI"),
        ] {
            let e = parse(name).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn upstream_part_of_package_versions() {
        assert_eq!(upstream_of("6.1.192-3"), "6.1.192");
        assert_eq!(upstream_of("6.12.115-2~deb12u1"), "6.12.115");
        assert_eq!(upstream_of("1:2.3-4"), "2.3");
        assert_eq!(upstream_of("6.12.118"), "6.12.118");
    }

    #[test]
    fn versions_compare_like_dpkg() {
        for (a, b, want) in [
            (
                "6.12.118-1~deb12u1",
                "6.12.107-1~deb12u1",
                Ordering::Greater,
            ),
            (
                "6.12.115-2~deb12u1",
                "6.12.115-1~deb12u1",
                Ordering::Greater,
            ),
            ("6.1.192-3", "6.1.192-10", Ordering::Less),
            ("6.12.118-1~deb12u1", "6.12.118-1", Ordering::Less),
            ("12.2.0-14", "12.2.0-14+deb12u1", Ordering::Less),
            ("1:1.0-1", "9.0-1", Ordering::Greater),
            ("6.1.192-3", "6.1.192-3", Ordering::Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        }
    }
}
