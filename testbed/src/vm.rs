//! Boots a kernel under QEMU (software emulation) with a generated initramfs
//! and collects the serial console, with a hard timeout.

use crate::Error;
use crate::cpio::{Entry, write_newc};
use crate::guest::{Ending, GuestReport, GuestScript};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the busybox binary comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// A virtual machine to boot.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The kernel image (`bzImage`/`vmlinuz`).
    pub kernel: PathBuf,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// Hard limit for the whole run; QEMU is killed after it.
    pub timeout: Duration,
    /// Extra kernel command-line words after `console=ttyS0 panic=-1`.
    pub extra_append: String,
    /// Directory for the generated initramfs.
    pub work_dir: PathBuf,
}

impl Vm {
    /// A VM with the test bed's defaults: 512 MiB, 120 s timeout.
    pub fn new(kernel: &Path, work_dir: &Path) -> Self {
        Vm {
            kernel: kernel.to_path_buf(),
            memory_mb: 512,
            timeout: Duration::from_secs(120),
            extra_append: String::new(),
            work_dir: work_dir.to_path_buf(),
        }
    }

    /// Builds the initramfs for `script`, boots, and parses what the guest said.
    pub fn run(&self, script: &GuestScript) -> Result<GuestReport, Error> {
        std::fs::create_dir_all(&self.work_dir).map_err(|e| Error::io(&self.work_dir, e))?;
        let initrd = self.work_dir.join("initramfs.cpio");
        let archive = initramfs(script)?;
        std::fs::write(&initrd, archive).map_err(|e| Error::io(&initrd, e))?;
        let append = format!("console=ttyS0 panic=-1 {}", self.extra_append);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-nographic", "-no-reboot", "-m"])
            .arg(self.memory_mb.to_string())
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(append.trim())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (serial, ending) = run_with_timeout(&mut cmd, self.timeout)?;
        let log = self.work_dir.join("serial.log");
        std::fs::write(&log, &serial).map_err(|e| Error::io(&log, e))?;
        Ok(GuestReport::parse(&serial, ending))
    }
}

/// The initramfs for a script: busybox, `/init`, a console node and the
/// script's files.
pub fn initramfs(script: &GuestScript) -> Result<Vec<u8>, Error> {
    let busybox = std::fs::read(BUSYBOX).map_err(|e| Error::io(Path::new(BUSYBOX), e))?;
    let mut entries = vec![];
    for dir in ["bin", "dev", "proc", "sys", "tmp", "root"] {
        entries.push(Entry::Dir {
            path: dir.into(),
            mode: 0o755,
        });
    }
    entries.push(Entry::CharDev {
        path: "dev/console".into(),
        mode: 0o600,
        major: 5,
        minor: 1,
    });
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data: busybox,
    });
    entries.push(Entry::Symlink {
        path: "bin/sh".into(),
        target: "busybox".into(),
    });
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: script.init_script().into_bytes(),
    });
    let mut dirs_made = std::collections::BTreeSet::new();
    for (guest_path, data) in &script.files {
        let rel = guest_path.trim_start_matches('/');
        // Parent directories first.
        let mut parent = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|x| x.1)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if dirs_made.insert(parent.clone())
                && !["bin", "dev", "proc", "sys", "tmp", "root"].contains(&parent.as_str())
            {
                entries.push(Entry::Dir {
                    path: parent.clone(),
                    mode: 0o755,
                });
            }
        }
        entries.push(Entry::File {
            path: rel.into(),
            mode: 0o644,
            data: data.clone(),
        });
    }
    Ok(write_newc(&entries))
}

fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(String, Ending), Error> {
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Spawn(format!("{cmd:?}"), e))?;
    let buf = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let buf = Arc::clone(&buf);
        readers.push(std::thread::spawn(move || {
            let mut stream = stream;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock()
                    .expect("serial buffer")
                    .extend_from_slice(&chunk[..n]);
            }
        }));
    }
    let start = Instant::now();
    let ending = loop {
        if child
            .try_wait()
            .map_err(|e| Error::Spawn("qemu".into(), e))?
            .is_some()
        {
            break Ending::Exited;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Ending::TimedOut(timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for r in readers {
        let _ = r.join();
    }
    let bytes = buf.lock().expect("serial buffer").clone();
    Ok((String::from_utf8_lossy(&bytes).into_owned(), ending))
}
