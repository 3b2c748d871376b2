//! What runs inside the guest, and how its results come back.
//!
//! A [`GuestScript`] is an ordered list of checks. It becomes the initramfs
//! `/init`, which runs each check as a shell function and reports one marker
//! line per check on the serial console:
//!
//! ```text
//! KPB-OUT <id> <a line the check printed>
//! KPB-PASS <id>
//! KPB-FAIL <id> rc=<status>
//! KPB-DMESG <a line of dmesg>          (after the last check)
//! KPB-DONE
//! ```
//!
//! The first failing check ends the run (later checks depend on earlier ones).
//! The host turns the serial log into a [`GuestReport`] and
//! [`GuestReport::verify`] says, per check, what went wrong.

use std::collections::HashMap;

/// One step the guest performs and reports on.
#[derive(Debug, Clone)]
pub struct Check {
    /// Short identifier, unique within the script (`[a-z0-9_-]`).
    pub id: String,
    /// What the check proves, for failure messages.
    pub description: String,
    /// Shell body; the check passes when it exits 0. What it prints is
    /// reported as `KPB-OUT` lines.
    pub shell: String,
}

/// An ordered list of checks plus files to put into the initramfs.
#[derive(Debug, Clone, Default)]
pub struct GuestScript {
    /// The checks, run in order.
    pub checks: Vec<Check>,
    /// `(guest path, contents)` of extra files, e.g. modules under test.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Prelude of `/init`: mounts, quiet console, helpers used by checks.
const PRELUDE: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# Only emergencies and alerts reach the console while checks run; the whole
# kernel log is dumped at the end with a marker so lines never interleave.
dmesg -n 2
echo KPB-BOOTED

# wait_value FILE VALUE SECONDS: wait until FILE holds VALUE.
wait_value() {
    i=0
    while [ "$(cat "$1" 2>/dev/null)" != "$2" ]; do
        i=$((i + 1))
        if [ $i -gt $(($3 * 10)) ]; then
            echo "timeout after $3 s: $1 is '$(cat "$1" 2>&1)', expected '$2'"
            return 1
        fi
        usleep 100000
    done
}
# wait_gone PATH SECONDS: wait until PATH no longer exists.
wait_gone() {
    i=0
    while [ -e "$1" ]; do
        i=$((i + 1))
        if [ $i -gt $(($2 * 10)) ]; then echo "timeout after $2 s: $1 still exists"; return 1; fi
        usleep 100000
    done
}
# expect_contains COMMAND TEXT: the output of COMMAND includes TEXT.
expect_contains() {
    out=$(eval "$1" 2>&1) || { echo "$out"; echo "'$1' failed"; return 1; }
    echo "$out"
    case "$out" in *"$2"*) return 0 ;; esac
    echo "expected '$2' in the output of '$1'"
    return 1
}
# expect_lacks COMMAND TEXT: the output of COMMAND does not include TEXT.
expect_lacks() {
    out=$(eval "$1" 2>&1) || { echo "$out"; echo "'$1' failed"; return 1; }
    echo "$out"
    case "$out" in *"$2"*) echo "unexpected '$2' in the output of '$1'"; return 1 ;; esac
    return 0
}
finish() {
    echo KPB-DMESG-BEGIN
    dmesg | sed 's/^/KPB-DMESG /'
    echo KPB-DONE
    sync
    reboot -f
}
run_check() {
    out=$("check_$1" 2>&1)
    rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | sed "s/^/KPB-OUT $1 /"
    if [ $rc -eq 0 ]; then echo "KPB-PASS $1"; else echo "KPB-FAIL $1 rc=$rc"; finish; fi
}
"#;

impl GuestScript {
    /// Appends a check.
    pub fn check(&mut self, id: &str, description: &str, shell: impl Into<String>) -> &mut Self {
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "check id {id:?}"
        );
        assert!(
            self.checks.iter().all(|c| c.id != id),
            "duplicate check id {id}"
        );
        self.checks.push(Check {
            id: id.to_string(),
            description: description.to_string(),
            shell: shell.into(),
        });
        self
    }

    /// Adds a file to the initramfs at `guest_path` (absolute).
    pub fn file(&mut self, guest_path: &str, contents: Vec<u8>) -> &mut Self {
        self.files.push((guest_path.to_string(), contents));
        self
    }

    /// The `/init` script text.
    pub fn init_script(&self) -> String {
        let mut s = String::from(PRELUDE);
        for check in &self.checks {
            let fname = check.id.replace('-', "_");
            s.push_str(&format!(
                "\ncheck_{fname}() {{\n{}\n}}\n",
                check.shell.trim_end()
            ));
        }
        s.push('\n');
        for check in &self.checks {
            s.push_str(&format!("run_check {}\n", check.id.replace('-', "_")));
        }
        s.push_str("finish\n");
        s
    }
}

/// Result of one check as reported by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// `KPB-PASS`.
    Passed,
    /// `KPB-FAIL` with the shell status.
    Failed(String),
}

/// How the guest run ended, from the host's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited on its own (reboot or panic with `-no-reboot`).
    Exited,
    /// The hard timeout expired and QEMU was killed.
    TimedOut(u64),
}

/// Everything the host learnt from one guest run.
#[derive(Debug, Clone)]
pub struct GuestReport {
    /// Whether `/init` started (`KPB-BOOTED` seen).
    pub booted: bool,
    /// Results by check id, in the order reported.
    pub results: Vec<(String, CheckResult)>,
    /// Output lines by check id.
    pub outputs: HashMap<String, Vec<String>>,
    /// The kernel log dumped at the end.
    pub dmesg: Vec<String>,
    /// `KPB-DONE` seen: the script ran to its end.
    pub done: bool,
    /// How QEMU ended.
    pub ending: Ending,
    /// The whole serial log.
    pub serial: String,
}

/// Kernel log patterns that fail a run whatever the checks said.
const KERNEL_TROUBLE: &[&str] = &["WARNING:", "BUG:", "Oops", "Kernel panic", "Call Trace:"];

impl GuestReport {
    /// Parses the serial log of a run.
    pub fn parse(serial: &str, ending: Ending) -> Self {
        let mut report = GuestReport {
            booted: false,
            results: Vec::new(),
            outputs: HashMap::new(),
            dmesg: Vec::new(),
            done: false,
            ending,
            serial: serial.to_string(),
        };
        for raw in serial.lines() {
            let line = raw.trim_end_matches('\r');
            // A marker may follow kernel output on the same line; find it.
            let Some(at) = line.find("KPB-") else {
                continue;
            };
            let marker = &line[at..];
            if marker == "KPB-BOOTED" {
                report.booted = true;
            } else if marker == "KPB-DONE" {
                report.done = true;
            } else if let Some(rest) = marker.strip_prefix("KPB-PASS ") {
                report
                    .results
                    .push((rest.trim().to_string(), CheckResult::Passed));
            } else if let Some(rest) = marker.strip_prefix("KPB-FAIL ") {
                let (id, why) = rest.split_once(' ').unwrap_or((rest, ""));
                report
                    .results
                    .push((id.to_string(), CheckResult::Failed(why.to_string())));
            } else if let Some(rest) = marker.strip_prefix("KPB-OUT ") {
                let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
                report
                    .outputs
                    .entry(id.to_string())
                    .or_default()
                    .push(text.to_string());
            } else if let Some(rest) = marker.strip_prefix("KPB-DMESG ") {
                report.dmesg.push(rest.to_string());
            }
        }
        report
    }

    /// Output lines of one check.
    pub fn output(&self, id: &str) -> &[String] {
        self.outputs
            .get(&id.replace('-', "_"))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Checks that every check of `script` passed, the run ended cleanly and the
    /// kernel log is free of warnings, bugs and oopses. The error names the
    /// first problem and carries the tail of the serial log.
    pub fn verify(&self, script: &GuestScript) -> Result<(), String> {
        let results: HashMap<&str, &CheckResult> = self
            .results
            .iter()
            .map(|(id, r)| (id.as_str(), r))
            .collect();
        let mut problem = None;
        if !self.booted {
            problem = Some("the guest never reached /init".to_string());
        }
        for check in &script.checks {
            if problem.is_some() {
                break;
            }
            let id = check.id.replace('-', "_");
            match results.get(id.as_str()) {
                Some(CheckResult::Passed) => {}
                Some(CheckResult::Failed(why)) => {
                    let out = self.output(&id).join("\n    ");
                    problem = Some(format!(
                        "check `{}` ({}) failed ({why}); it printed:\n    {out}",
                        check.id, check.description
                    ));
                }
                None => {
                    problem = Some(format!(
                        "check `{}` ({}) never reported: {}",
                        check.id,
                        check.description,
                        self.why_ended()
                    ));
                }
            }
        }
        if problem.is_none() && !self.done {
            problem = Some(format!("the script did not finish: {}", self.why_ended()));
        }
        if problem.is_none() {
            let log: Vec<&str> = if self.dmesg.is_empty() {
                self.serial.lines().collect()
            } else {
                self.dmesg.iter().map(String::as_str).collect()
            };
            if let Some(bad) = log
                .iter()
                .find(|l| KERNEL_TROUBLE.iter().any(|p| l.contains(p)))
            {
                problem = Some(format!("kernel log reports trouble: {}", bad.trim()));
            }
        }
        match problem {
            None => Ok(()),
            Some(p) => {
                let lines: Vec<&str> = self.serial.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                Err(format!(
                    "{p}\n--- last {} lines of the serial log ---\n{}",
                    tail.len(),
                    tail.join("\n")
                ))
            }
        }
    }

    fn why_ended(&self) -> String {
        match self.ending {
            Ending::TimedOut(s) => format!("the guest timed out after {s} s and was killed"),
            Ending::Exited if self.serial.contains("Kernel panic") => {
                "the kernel panicked".to_string()
            }
            Ending::Exited => "the guest stopped early".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> GuestScript {
        let mut s = GuestScript::default();
        s.check("load", "module loads", "insmod /m.ko");
        s.check(
            "read-back",
            "value is back",
            "expect_contains /proc/cmdline x",
        );
        s
    }

    #[test]
    fn init_script_defines_and_runs_every_check_in_order() {
        let init = script().init_script();
        assert!(init.starts_with("#!/bin/sh\n"));
        let load = init.find("run_check load").unwrap();
        let back = init.find("run_check read_back").unwrap();
        assert!(load < back);
        assert!(init.contains("check_read_back() {\nexpect_contains /proc/cmdline x\n}"));
    }

    #[test]
    fn all_passed() {
        let serial = "boot\r\nKPB-BOOTED\r\nKPB-OUT load hi\r\nKPB-PASS load\r\n\
            [    1.0] livepatch: x KPB-PASS read_back\r\nKPB-DMESG [0.1] hello\r\nKPB-DONE\r\n";
        let r = GuestReport::parse(serial, Ending::Exited);
        assert_eq!(r.output("load"), ["hi"]);
        r.verify(&script()).unwrap();
    }

    #[test]
    fn failed_check_is_named_with_output() {
        let serial = "KPB-BOOTED\nKPB-PASS load\nKPB-OUT read_back nope\nKPB-FAIL read_back rc=1\nKPB-DONE\n";
        let err = GuestReport::parse(serial, Ending::Exited)
            .verify(&script())
            .unwrap_err();
        assert!(
            err.starts_with("check `read-back` (value is back) failed (rc=1)"),
            "{err}"
        );
        assert!(err.contains("nope"));
    }

    #[test]
    fn panic_and_timeout_are_failures() {
        let serial =
            "KPB-BOOTED\nKPB-PASS load\nKernel panic - not syncing: Attempted to kill init!\n";
        let err = GuestReport::parse(serial, Ending::Exited)
            .verify(&script())
            .unwrap_err();
        assert!(err.contains("never reported: the kernel panicked"), "{err}");
        let err = GuestReport::parse("KPB-BOOTED\n", Ending::TimedOut(30))
            .verify(&script())
            .unwrap_err();
        assert!(err.contains("timed out after 30 s"), "{err}");
    }

    #[test]
    fn kernel_warning_fails_a_passing_run() {
        let serial = "KPB-BOOTED\nKPB-PASS load\nKPB-PASS read_back\n\
            KPB-DMESG [1.0] WARNING: CPU: 0 PID: 1 at kernel/livepatch/core.c:1\nKPB-DONE\n";
        let err = GuestReport::parse(serial, Ending::Exited)
            .verify(&script())
            .unwrap_err();
        assert!(
            err.contains("kernel log reports trouble: [1.0] WARNING"),
            "{err}"
        );
    }
}
