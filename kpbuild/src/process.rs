//! The one way kpbuild runs a subprocess: [`run`], or [`pipe`] for two
//! connected by a pipe.
//!
//! Output is captured (never interleaved with kpbuild's own), stdin is
//! closed, and a failure carries the command line (with its directory and
//! environment changes, so it can be pasted into a shell), the exit status
//! and the last [`TAIL_LINES`] lines of output. With `KPBUILD_VERBOSE` set
//! in the environment, every command and its duration is logged to stderr.

use std::ffi::OsStr;
use std::io::Read;
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

/// How the first process of a [`pipe`] may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// It must run to completion and succeed, like the consumer.
    MustSucceed,
    /// The consumer may stop reading before the end (it found what it
    /// wanted): the producer is then stopped, and its status does not count.
    MayBeCut,
}

/// Runs `producer | consumer`: the producer's stdout feeds the consumer's
/// stdin through an OS pipe (no shell, no copy through kpbuild), as fast as
/// the shell's pipeline. The consumer's output is captured and returned; a
/// failure of either carries the whole pipeline's command line.
pub fn pipe(
    producer: &mut Command,
    consumer: &mut Command,
    mode: Producer,
) -> Result<Output, ProcessError> {
    let command = format!("{} | {}", command_line(producer), command_line(consumer));
    let verbose = std::env::var_os("KPBUILD_VERBOSE").is_some();
    if verbose {
        eprintln!("kpbuild: run: {command}");
    }
    let start = Instant::now();
    let spawn_error = |source| ProcessError::Spawn {
        command: command.clone(),
        source,
    };
    let mut first = producer
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let stdout = first.stdout.take().expect("piped");
    let mut stderr = first.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let second = consumer.stdin(Stdio::from(stdout)).output();
    // The command keeps its copy of the pipe's read end: drop it, so a
    // producer still writing sees the consumer gone.
    consumer.stdin(Stdio::null());
    if mode == Producer::MayBeCut || !second.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = first.kill();
    }
    let first_status = first.wait().map_err(spawn_error)?;
    let first_stderr = errors.join().unwrap_or_default();
    let second = second.map_err(spawn_error)?;
    if verbose {
        eprintln!(
            "kpbuild: {} after {:.2} s: {command}",
            second.status,
            start.elapsed().as_secs_f64()
        );
    }
    let failed = |output: Output| ProcessError::Failed {
        command: command.clone(),
        status: output.status,
        tail: tail(&output, TAIL_LINES),
        output,
    };
    if !second.status.success() {
        return Err(failed(second));
    }
    if mode == Producer::MustSucceed && !first_status.success() {
        return Err(failed(Output {
            status: first_status,
            stdout: Vec::new(),
            stderr: first_stderr,
        }));
    }
    Ok(second)
}

/// Runs `cmd` and hands its stdout, as a stream, to `consume` (for output
/// too large to hold, such as a package's data archive); stderr is
/// captured. A failed program is an error even when `consume` succeeded;
/// `consume`'s own error is returned as it is once the program is stopped.
pub fn stream<T, E>(
    cmd: &mut Command,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, E>,
) -> Result<Result<T, E>, ProcessError> {
    let command = command_line(cmd);
    if std::env::var_os("KPBUILD_VERBOSE").is_some() {
        eprintln!("kpbuild: run: {command}");
    }
    let spawn_error = |source| ProcessError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let result = consume(&mut stdout);
    if result.is_err() {
        let _ = child.kill();
    } else {
        // Whatever the consumer left unread, so the program can finish.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    }
    drop(stdout);
    let status = child.wait().map_err(spawn_error)?;
    let stderr = errors.join().unwrap_or_default();
    if result.is_ok() && !status.success() {
        let output = Output {
            status,
            stdout: Vec::new(),
            stderr,
        };
        return Err(ProcessError::Failed {
            command,
            status,
            tail: tail(&output, TAIL_LINES),
            output,
        });
    }
    Ok(result)
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
    fn a_pipe_connects_two_programs() {
        let out = pipe(
            Command::new("printf").arg("a\\nb\\nc\\n"),
            Command::new("wc").arg("-l"),
            Producer::MustSucceed,
        )
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    }

    #[test]
    fn a_pipe_fails_when_either_side_fails() {
        let err = pipe(
            Command::new("printf").arg("x"),
            Command::new("sh").args(["-c", "cat >/dev/null; echo nope >&2; exit 4"]),
            Producer::MustSucceed,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("printf x | sh -c"), "{err}");
        assert!(err.contains("exit status: 4"), "{err}");
        assert!(err.contains("nope"), "{err}");
        let err = pipe(
            Command::new("sh").args(["-c", "echo gone >&2; exit 5"]),
            &mut Command::new("cat"),
            Producer::MustSucceed,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status: 5"), "{err}");
        assert!(err.contains("gone"), "{err}");
    }

    #[test]
    fn a_producer_may_be_cut_short() {
        // `yes` never ends by itself: the pipe must stop it once `head` is done.
        let out = pipe(
            &mut Command::new("yes"),
            Command::new("head").arg("-n1"),
            Producer::MayBeCut,
        )
        .unwrap();
        assert_eq!(out.stdout, b"y\n");
        let err = pipe(
            &mut Command::new("/nonexistent/kpbuild-no-producer"),
            &mut Command::new("cat"),
            Producer::MayBeCut,
        )
        .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
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
