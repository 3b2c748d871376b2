//! The one way kpbuild runs a subprocess: [`run`].
//!
//! Output is captured (never interleaved with kpbuild's own), stdin is
//! closed, and a failure carries the command line (with its directory and
//! environment changes, so it can be pasted into a shell), the exit status
//! and the last [`TAIL_LINES`] lines of output. With `KPBUILD_VERBOSE` set
//! in the environment, every command and its duration is logged to stderr.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Instant;

/// Lines of output a failure keeps.
pub const TAIL_LINES: usize = 40;

/// A subprocess that could not be started or did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{command}` failed ({status}); last lines of its output:\n{tail}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of stdout followed by stderr.
        tail: String,
        /// Everything it printed.
        output: Output,
    },
}

/// Runs `cmd` to completion with captured stdout and stderr and no stdin.
/// A non-zero exit is an error; the caller gets the output either way.
pub fn run(cmd: &mut Command) -> Result<Output, ProcessError> {
    let command = command_line(cmd);
    let verbose = std::env::var_os("KPBUILD_VERBOSE").is_some();
    if verbose {
        eprintln!("kpbuild: run: {command}");
    }
    let start = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProcessError::Spawn {
            command: command.clone(),
            source,
        })?;
    if verbose {
        eprintln!(
            "kpbuild: {} after {:.2} s: {command}",
            output.status,
            start.elapsed().as_secs_f64()
        );
    }
    if output.status.success() {
        return Ok(output);
    }
    Err(ProcessError::Failed {
        command,
        status: output.status,
        tail: tail(&output, TAIL_LINES),
        output,
    })
}

/// The last `n` lines of stdout followed by stderr.
fn tail(output: &Output, n: usize) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `cmd` as a shell line: `cd DIR && VAR=value program args...`.
pub fn command_line(cmd: &Command) -> String {
    let mut unset = Vec::new();
    let mut set = Vec::new();
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => set.push(format!("{}={}", key.to_string_lossy(), quote(value))),
            None => unset.push(format!("-u {}", key.to_string_lossy())),
        }
    }
    // `env` takes its options before the assignments.
    let mut words = Vec::new();
    if !unset.is_empty() {
        words.push("env".to_string());
        words.append(&mut unset);
    }
    words.append(&mut set);
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    let line = words.join(" ");
    match cmd.get_current_dir() {
        Some(dir) => format!("cd {} && {line}", quote(dir.as_os_str())),
        None => line,
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_returns_the_output() {
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2"])).unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn failure_names_command_status_and_tail() {
        let script = "for i in $(seq 1 100); do echo line$i; done; echo boom >&2; exit 3";
        let err = run(Command::new("sh").args(["-c", script]).current_dir("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cd / && sh -c 'for i in"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("line100\nboom"), "{err}");
        assert!(err.contains("line62\n"), "{err}");
        assert!(!err.contains("line61\n"), "{err}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/kpbuild-no-such-program")).unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }));
        assert!(err.to_string().contains("kpbuild-no-such-program"));
    }

    #[test]
    fn command_lines_are_shell_quoted() {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg("/a b")
            .arg("it's")
            .env("KBUILD_MODPOST_WARN", "1")
            .env_remove("MAKEFLAGS");
        assert_eq!(
            command_line(&cmd),
            r"env -u MAKEFLAGS KBUILD_MODPOST_WARN=1 make -C '/a b' 'it'\''s'"
        );
    }
}
