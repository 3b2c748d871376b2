//! A writer for the `newc` cpio format the kernel unpacks as an initramfs.
//!
//! Written by hand (it is a few dozen lines) so the test bed needs no `cpio`
//! binary and produces the same bytes for the same inputs.

/// One entry of an initramfs archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its permission bits.
    Dir {
        /// Path inside the archive, without a leading `/`.
        path: String,
        /// Permission bits (e.g. `0o755`).
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path inside the archive, without a leading `/`.
        path: String,
        /// Permission bits.
        mode: u32,
        /// File contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path inside the archive, without a leading `/`.
        path: String,
        /// Link target.
        target: String,
    },
    /// A character device node.
    CharDev {
        /// Path inside the archive, without a leading `/`.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Serialises `entries` (in order) into a `newc` archive with its trailer.
///
/// Timestamps and owners are zero so the output depends on the entries only.
pub fn write_newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let ino = index as u32 + 1;
        match entry {
            Entry::Dir { path, mode } => push(&mut out, ino, S_IFDIR | mode, 2, (0, 0), path, &[]),
            Entry::File { path, mode, data } => {
                push(&mut out, ino, S_IFREG | mode, 1, (0, 0), path, data)
            }
            Entry::Symlink { path, target } => push(
                &mut out,
                ino,
                S_IFLNK | 0o777,
                1,
                (0, 0),
                path,
                target.as_bytes(),
            ),
            Entry::CharDev {
                path,
                mode,
                major,
                minor,
            } => push(
                &mut out,
                ino,
                S_IFCHR | mode,
                1,
                (*major, *minor),
                path,
                &[],
            ),
        }
    }
    push(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
    out
}

fn push(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_padding() {
        let archive = write_newc(&[Entry::File {
            path: "init".into(),
            mode: 0o755,
            data: b"#!/bin/sh\n".to_vec(),
        }]);
        assert_eq!(&archive[..6], b"070701");
        // mode field is the second 8-hex-digit field.
        assert_eq!(&archive[14..22], b"000081ed");
        // filesize field (7th).
        assert_eq!(&archive[54..62], b"0000000a");
        // 110-byte header + "init\0" padded to 116, then 10 data bytes padded to 128.
        assert_eq!(&archive[110..115], b"init\0");
        assert_eq!(&archive[116..126], b"#!/bin/sh\n");
        assert_eq!(&archive[128..134], b"070701");
        assert_eq!(archive.len() % 4, 0);
        assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn device_node_carries_rdev() {
        let archive = write_newc(&[Entry::CharDev {
            path: "dev/console".into(),
            mode: 0o600,
            major: 5,
            minor: 1,
        }]);
        // rdevmajor and rdevminor are fields 10 and 11.
        let field = |n: usize| &archive[6 + 8 * n..6 + 8 * (n + 1)];
        assert_eq!(field(9), b"00000005");
        assert_eq!(field(10), b"00000001");
        assert_eq!(field(1), b"00002180");
    }

    #[test]
    fn cpio_tool_lists_what_we_write() {
        // Differential check against GNU cpio where it is installed.
        let Some(cpio) = crate::oracle::tool("cpio", "cpio") else {
            return;
        };
        let status = std::process::Command::new(cpio)
            .arg("--version")
            .output()
            .expect("cpio runs");
        assert!(status.status.success());
        let archive = write_newc(&[
            Entry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "busybox".into(),
            },
            Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"x".to_vec(),
            },
        ]);
        let dir = std::env::temp_dir().join(format!("kpbuild-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.cpio");
        std::fs::write(&file, &archive).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&file)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bin\nbin/sh\ninit\n");
    }
}
