//! Debian version order (`dpkg --compare-versions`): epoch, then upstream
//! version, then revision, each compared with dpkg's `verrevcmp`, in which
//! `~` sorts before everything, even the end of the string.

use std::cmp::Ordering;

/// Compares two Debian package versions the way dpkg does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// (epoch, upstream, revision): the epoch before the first `:`, the
/// revision after the last `-` (empty without one, which dpkg treats as `0`).
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// The weight of a non-digit character: `~` lowest (below the end of a
/// part), then the end and digits, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating runs of non-digits (by [`weight`]) and
/// digits (by value, of any length).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        while a.first().is_some_and(|c| !c.is_ascii_digit())
            || b.first().is_some_and(|c| !c.is_ascii_digit())
        {
            let (wa, wb) = (weight(a.first().copied()), weight(b.first().copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = &a[1..];
            b = &b[1..];
        }
        let (da, ra) = digits(a);
        let (db, rb) = digits(b);
        let order = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (ra, rb);
    }
    Ordering::Equal
}

/// The leading digit run without its leading zeros, and the rest.
fn digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let (run, rest) = s.split_at(end);
    let first = run.iter().position(|&c| c != b'0').unwrap_or(run.len());
    (&run[first..], rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs checked with `dpkg --compare-versions A lt B` on Debian 12.
    const ASCENDING: &[(&str, &str)] = &[
        ("6.12.115-2~deb12u1", "6.12.118-1~deb12u1"),
        ("6.12.107-1~deb12u1", "6.12.111-1~deb12u1"),
        ("6.12.118-1~deb12u1", "6.12.118-1"),
        ("6.1.192-2", "6.1.192-3"),
        ("6.1.9-1", "6.1.192-1"),
        ("6.1.192-3", "6.12.107-1~deb12u1"),
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0a"),
        ("1.0a", "1.0+b1"),
        ("1.0-1", "1.0-1+b1"),
        ("1.0-1~bpo1", "1.0-1"),
        ("9:1.0", "10:0.1"),
        ("2.0", "1:0.1"),
        ("1.0~~", "1.0~"),
        ("1.0~", "1.0"),
        ("a", "b"),
        ("1.2", "1.10"),
        ("0001.0", "2.0"),
        ("1.0-0.9", "1.0-1"),
        ("99999999999999999999", "100000000000000000000"),
    ];

    #[test]
    fn order_like_dpkg() {
        for (a, b) in ASCENDING {
            assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
            assert_eq!(compare(a, a), Ordering::Equal, "{a} = {a}");
        }
    }

    #[test]
    fn equal_spellings() {
        for (a, b) in [
            ("1.0", "1.0-0"),
            ("0:1.0", "1.0"),
            ("1.01", "1.1"),
            ("1.0-1", "0:1.0-01"),
        ] {
            assert_eq!(compare(a, b), Ordering::Equal, "{a} = {b}");
        }
    }

    #[test]
    fn sorting_releases_of_a_series() {
        let mut v = vec![
            "6.12.118-1~deb12u1",
            "6.12.107-1~deb12u1",
            "6.12.115-2~deb12u1",
            "6.12.113-1~deb12u1",
        ];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(
            v,
            [
                "6.12.107-1~deb12u1",
                "6.12.113-1~deb12u1",
                "6.12.115-2~deb12u1",
                "6.12.118-1~deb12u1"
            ]
        );
    }
}
