//! The archive: POSIX ustar (`tar tf` lists it), written deterministically and
//! read strictly.
//!
//! Written here rather than with the `tar` crate: its `Builder::append_data`
//! silently falls back to GNU long-name entries, and its reader accepts GNU
//! and pax extensions, sparse files and archives without an end marker —
//! each of which a bundle must refuse. The format is small: 512-byte headers,
//! data padded to 512 bytes, two zero blocks at the end.

use crate::error::{Error, Result};

const BLOCK: usize = 512;
/// The largest value of an 11-digit octal field.
const MAX_OCTAL: u64 = 0o77_777_777_777;

/// Splits `name` into ustar (prefix, name) fields.
fn split_name(name: &str) -> Result<(&str, &str)> {
    let too_long = || Error::NameTooLong { name: name.into() };
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(too_long());
    }
    if name.len() <= 100 {
        return Ok(("", name));
    }
    name.match_indices('/')
        .map(|(i, _)| (&name[..i], &name[i + 1..]))
        .find(|(p, n)| p.len() <= 155 && n.len() <= 100 && !n.is_empty())
        .ok_or_else(too_long)
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// Writes `entries` (name, data) in the order given: mode 0644, uid/gid 0,
/// no user/group names, every mtime `mtime`, then the end-of-archive marker.
pub fn write(entries: &[(&str, &[u8])], mtime: u64) -> Result<Vec<u8>> {
    if mtime > MAX_OCTAL {
        return Err(Error::Input(format!(
            "time {mtime} does not fit a ustar header"
        )));
    }
    let mut out = Vec::new();
    for (name, data) in entries {
        check_path(name)?;
        let (prefix, short) = split_name(name)?;
        if data.len() as u64 > MAX_OCTAL {
            return Err(Error::Input(format!("{name}: too large for a ustar entry")));
        }
        let mut h = [0u8; BLOCK];
        h[..short.len()].copy_from_slice(short.as_bytes());
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], mtime);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], 0);
        octal(&mut h[337..345], 0);
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

/// A relative path of plain components: no `/` at either end, no empty, `.`
/// or `..` component.
pub fn check_path(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::UnsafePath { name: name.into() });
    }
    Ok(())
}

fn parse_octal(field: &[u8], what: &str, offset: usize) -> Result<u64> {
    let text = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect::<Vec<u8>>();
    let bad = || Error::Header {
        offset: offset as u64,
        why: format!(
            "{what} field {:?} is not octal",
            String::from_utf8_lossy(field)
        ),
    };
    if text.is_empty() || !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(bad());
    }
    std::str::from_utf8(&text)
        .ok()
        .and_then(|t| u64::from_str_radix(t, 8).ok())
        .ok_or_else(bad)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn kind(flag: u8) -> String {
    match flag {
        b'1' => "hard link".into(),
        b'2' => "symbolic link".into(),
        b'3' => "character device".into(),
        b'4' => "block device".into(),
        b'5' => "directory".into(),
        b'6' => "FIFO".into(),
        b'7' => "contiguous file".into(),
        b'x' => "pax extended header".into(),
        b'g' => "pax global header".into(),
        b'L' | b'K' => "GNU long name".into(),
        b'S' => "GNU sparse file".into(),
        other => format!("type {:?}", other as char),
    }
}

/// Reads every entry (name, data), in archive order. Refuses anything but
/// regular files in ustar headers, unsafe or duplicate names, a missing end
/// marker and data after it.
pub fn read(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(h) = data.get(at..at + BLOCK) else {
            let why = if at == data.len() {
                "no end-of-archive marker".to_string()
            } else {
                format!("a partial header ({} of 512 bytes)", data.len() - at)
            };
            return Err(Error::Truncated {
                offset: data.len() as u64,
                why,
            });
        };
        if h.iter().all(|&b| b == 0) {
            end_of_archive(data, at)?;
            return Ok(entries);
        }
        let name = entry_name(h, at)?;
        if entries.iter().any(|(n, _)| *n == name) {
            return Err(Error::Duplicate { name });
        }
        let size = parse_octal(&h[124..136], "size", at)?;
        let (body, next) = entry_body(data, at, &name, size)?;
        entries.push((name, body.to_vec()));
        at = next;
    }
}

/// The zero block at `at` must be the first of two, with nothing but zeros
/// after them.
fn end_of_archive(data: &[u8], at: usize) -> Result<()> {
    let end = at + 2 * BLOCK;
    match data.get(at + BLOCK..end) {
        Some(second) if second.iter().all(|&b| b == 0) => {}
        Some(_) => {
            return Err(Error::Header {
                offset: at as u64,
                why: "a zero block followed by data".into(),
            });
        }
        None => {
            return Err(Error::Truncated {
                offset: data.len() as u64,
                why: "only part of the end-of-archive marker".into(),
            });
        }
    }
    if data[end..].iter().any(|&b| b != 0) {
        return Err(Error::TrailingData { offset: end as u64 });
    }
    Ok(())
}

/// The checked name of the regular file whose ustar header `h` starts at
/// `at`.
fn entry_name(h: &[u8], at: usize) -> Result<String> {
    let header = |why: String| Error::Header {
        offset: at as u64,
        why,
    };
    if &h[257..263] != b"ustar\0" || &h[263..265] != b"00" {
        return Err(header("not a POSIX ustar header (GNU or v7 tar?)".into()));
    }
    let stored = parse_octal(&h[148..156], "checksum", at)?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != sum {
        return Err(header(format!(
            "checksum {stored:o}, the header sums to {sum:o}"
        )));
    }
    let (prefix, short) = (cstr(&h[345..500]), cstr(&h[..100]));
    let mut name = Vec::new();
    if !prefix.is_empty() {
        name.extend_from_slice(prefix);
        name.push(b'/');
    }
    name.extend_from_slice(short);
    let name = String::from_utf8(name)
        .map_err(|e| header(format!("name {:?} is not UTF-8", e.as_bytes())))?;
    if h[156] != b'0' && h[156] != 0 {
        return Err(Error::NotRegular {
            name,
            kind: kind(h[156]),
        });
    }
    check_path(&name)?;
    Ok(name)
}

/// The `size` bytes of the entry whose header is at `at`, and where the
/// next header starts.
fn entry_body<'d>(data: &'d [u8], at: usize, name: &str, size: u64) -> Result<(&'d [u8], usize)> {
    let start = at + BLOCK;
    let Some(body) = usize::try_from(size)
        .ok()
        .and_then(|s| start.checked_add(s))
        .and_then(|end| data.get(start..end))
    else {
        return Err(Error::Truncated {
            offset: data.len() as u64,
            why: format!(
                "{name} holds {size} bytes from byte {start}, the archive has {} left",
                data.len() - start
            ),
        });
    };
    let next = start + body.len().next_multiple_of(BLOCK);
    if next > data.len() {
        return Err(Error::Truncated {
            offset: data.len() as u64,
            why: format!("{name}: its padding to 512 bytes is cut off"),
        });
    }
    Ok((body, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_a_slash_or_are_refused() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90));
        assert_eq!(split_name(&long).unwrap(), (&long[..150], &long[151..]));
        assert!(split_name(&"x".repeat(101)).is_err());
        assert!(split_name("a b").is_err());
        let back = read(&write(&[(&long, b"x")], 0).unwrap()).unwrap();
        assert_eq!(back, vec![(long.clone(), b"x".to_vec())]);
    }

    #[test]
    fn unsafe_paths() {
        for p in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/"] {
            assert!(
                matches!(check_path(p), Err(Error::UnsafePath { .. })),
                "{p}"
            );
        }
        check_path("modules/a.ko").unwrap();
    }
}
