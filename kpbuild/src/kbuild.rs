//! What a kernel build tree recorded about each object: its exact compile
//! command and its dependency list (`BUILD/dir/.name.o.cmd`), and how to
//! replay that command out of tree with extra flags and another source root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors reading a kernel build tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KbuildError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A recorded command uses shell syntax beyond words and quotes.
    #[error(
        "{}: the recorded command uses shell syntax kpbuild does not replay (`{what}`)",
        object.display()
    )]
    ShellSyntax {
        /// The unit's object.
        object: PathBuf,
        /// The character.
        what: char,
    },
    /// A `.cmd` file lacks a field.
    #[error("{path}: no `{field}` line (is this a kbuild .cmd file?)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The missing field.
        field: &'static str,
    },
}

/// One object's record in a kbuild tree.
#[derive(Debug, Clone)]
pub struct UnitCommand {
    /// The object, relative to the build directory (`fs/proc/cmdline.o`).
    pub object: PathBuf,
    /// The compile command as kbuild ran it, from the build directory.
    pub command: String,
    /// The source file as the command names it.
    pub source: PathBuf,
    /// Files the object depends on (headers included), as kbuild wrote them:
    /// absolute, or relative to the build directory.
    pub deps: Vec<PathBuf>,
}

impl UnitCommand {
    /// Parses `.name.o.cmd`.
    pub fn parse(cmd_file: &Path) -> Result<Self, KbuildError> {
        let text = std::fs::read_to_string(cmd_file).map_err(|source| KbuildError::Io {
            path: cmd_file.to_path_buf(),
            source,
        })?;
        Self::parse_text(cmd_file, &text)
    }

    /// Parses the text of a `.cmd` file (`path` is for messages).
    pub fn parse_text(path: &Path, text: &str) -> Result<Self, KbuildError> {
        let malformed = |field| KbuildError::Malformed {
            path: path.to_path_buf(),
            field,
        };
        let mut object = None;
        let mut command = None;
        let mut source = None;
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in text.lines() {
            if in_deps {
                let item = line.trim().trim_end_matches('\\').trim();
                if !item.is_empty() && !item.starts_with("$(wildcard") {
                    deps.push(PathBuf::from(item));
                }
                in_deps = line.trim_end().ends_with('\\');
                continue;
            }
            // `cmd_` before Linux 6.3 (Debian's 6.1), `savedcmd_` since.
            if let Some(rest) = line
                .strip_prefix("savedcmd_")
                .or_else(|| line.strip_prefix("cmd_"))
            {
                if let Some((obj, cmd)) = rest.split_once(" := ") {
                    object = Some(PathBuf::from(obj));
                    command = Some(cmd.trim().to_string());
                }
            } else if let Some(rest) = line.strip_prefix("source_") {
                if let Some((_, src)) = rest.split_once(" := ") {
                    source = Some(PathBuf::from(src.trim()));
                }
            } else if line.starts_with("deps_") && line.contains(" := ") {
                in_deps = line.trim_end().ends_with('\\');
            }
        }
        Ok(UnitCommand {
            object: object.ok_or_else(|| malformed("savedcmd_"))?,
            command: command.ok_or_else(|| malformed("savedcmd_"))?,
            source: source.ok_or_else(|| malformed("source_"))?,
            deps,
        })
    }

    /// Whether the unit is compiled from C.
    pub fn is_c(&self) -> bool {
        self.source.extension().is_some_and(|e| e == "c")
    }

    /// The command that compiles this unit from the tree at `new_src` (a
    /// copy of `old_src`, the source tree the command names) into `out`,
    /// with `extra_flags`, writing nothing into the build tree. Run it with
    /// the build directory as working directory (relative paths in kbuild
    /// commands point there). The recorded shell line is split into words
    /// here; it is never handed to a shell.
    pub fn replay(
        &self,
        build: &Path,
        old_src: &Path,
        new_src: &Path,
        out: &Path,
        extra_flags: &[&str],
    ) -> Result<Command, KbuildError> {
        // Only the compiler invocation; kbuild may chain more steps with ';'.
        let first = self.command.split(" ; ").next().unwrap_or(&self.command);
        let words = shell_words(first).map_err(|what| KbuildError::ShellSyntax {
            object: self.object.clone(),
            what,
        })?;
        let old = format!("{}/", old_src.display());
        let new = format!("{}/", new_src.display());
        let source = self.source.display().to_string();
        let mut argv: Vec<String> = Vec::new();
        let mut iter = words.into_iter();
        while let Some(word) = iter.next() {
            if word == "-o" {
                iter.next();
                argv.push("-o".into());
                argv.push(out.display().to_string());
                continue;
            }
            if word.starts_with("-Wp,-MMD,") {
                argv.push(format!("-Wp,-MMD,{}.d", out.display()));
                continue;
            }
            let word = if word == source && self.source.is_relative() {
                if build == old_src {
                    // An in-tree build names sources relative to the tree.
                    new_src.join(&self.source).display().to_string()
                } else {
                    // A generated source in the O= build tree: nothing to move.
                    word
                }
            } else {
                word.replace(&old, &new)
            };
            argv.push(word);
            if argv.len() == 1 {
                argv.extend(extra_flags.iter().map(|f| f.to_string()));
            }
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(KbuildError::Malformed {
                path: self.object.clone(),
                field: "savedcmd_",
            });
        };
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(build);
        Ok(cmd)
    }
}

/// Splits a POSIX shell line into words: blanks separate, single quotes
/// keep everything, double quotes keep everything but `\"`, `\\`, and a
/// backslash escapes one character. Anything that would make a shell do
/// more than that (expansions, globs, redirections, several commands) is
/// returned as an error, so a replayed command is exactly the recorded one.
fn shell_words(line: &str) -> Result<Vec<String>, char> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err('\''),
                    }
                }
            }
            '"' => {
                in_word = true;
                double_quoted(&mut chars, &mut word)?;
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => word.push(c),
                }
            }
            '$' | '`' | '|' | '&' | ';' | '<' | '>' | '(' | ')' | '*' | '?' | '[' => {
                return Err(c);
            }
            '#' | '~' if !in_word => return Err(c),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The rest of a double-quoted string, after its opening quote.
fn double_quoted(chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), char> {
    loop {
        match chars.next() {
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                Some('\n') => {}
                Some(c) => {
                    word.push('\\');
                    word.push(c);
                }
                None => return Err('"'),
            },
            Some(c @ ('$' | '`')) => return Err(c),
            Some(c) => word.push(c),
            None => return Err('"'),
        }
    }
}

/// Every `.o.cmd` record under `build` whose source is a C file.
pub fn scan_c_units(build: &Path) -> Result<Vec<UnitCommand>, KbuildError> {
    scan_units(build, ".o.cmd", |u| u.is_c() && u.command.contains(" -c "))
}

/// Every record under `build` of a unit preprocessed from a `.S` file:
/// assembly objects (`.o.cmd`) and linker scripts (`.lds.cmd`).
pub fn scan_asm_units(build: &Path) -> Result<Vec<UnitCommand>, KbuildError> {
    let is_asm = |u: &UnitCommand| u.source.extension().is_some_and(|e| e == "S");
    let mut out = scan_units(build, ".o.cmd", is_asm)?;
    out.extend(scan_units(build, ".lds.cmd", is_asm)?);
    Ok(out)
}

/// The records under `build` in files ending with `suffix` that `want`.
fn scan_units(
    build: &Path,
    suffix: &str,
    want: impl Fn(&UnitCommand) -> bool,
) -> Result<Vec<UnitCommand>, KbuildError> {
    let mut out = Vec::new();
    let mut stack = vec![build.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| KbuildError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') && name != "source" {
                    stack.push(path);
                }
            } else if name.starts_with('.') && name.ends_with(suffix) {
                let text = std::fs::read_to_string(&path).map_err(|source| KbuildError::Io {
                    path: path.clone(),
                    source,
                })?;
                if !text.contains("\nsource_")
                    || !(text.starts_with("savedcmd_") || text.starts_with("cmd_"))
                {
                    continue; // a link step, or another build system (tools/)
                }
                let unit = UnitCommand::parse_text(&path, &text)?;
                if want(&unit) {
                    out.push(unit);
                }
            }
        }
    }
    out.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "savedcmd_fs/proc/cmdline.o := gcc -Wp,-MMD,fs/proc/.cmdline.o.d -nostdinc -I/k/src/arch/x86/include -I./include -fmacro-prefix-map=/k/src/= -DKBUILD_MODNAME='\"proc\"' -c -o fs/proc/cmdline.o /k/src/fs/proc/cmdline.c\n\
\n\
source_fs/proc/cmdline.o := /k/src/fs/proc/cmdline.c\n\
\n\
deps_fs/proc/cmdline.o := \\\n\
  /k/src/include/linux/compiler-version.h \\\n\
    $(wildcard include/config/CC_VERSION_TEXT) \\\n\
  include/generated/autoconf.h \\\n\
  /k/src/include/linux/fs.h \\\n\
\n\
fs/proc/cmdline.o: $(deps_fs/proc/cmdline.o)\n\
\n\
$(deps_fs/proc/cmdline.o):\n";

    #[test]
    fn parses_command_source_and_deps() {
        let u = UnitCommand::parse_text(Path::new(".cmdline.o.cmd"), CMD).unwrap();
        assert_eq!(u.object, Path::new("fs/proc/cmdline.o"));
        assert_eq!(u.source, Path::new("/k/src/fs/proc/cmdline.c"));
        assert_eq!(
            u.deps,
            [
                PathBuf::from("/k/src/include/linux/compiler-version.h"),
                PathBuf::from("include/generated/autoconf.h"),
                PathBuf::from("/k/src/include/linux/fs.h"),
            ]
        );
        assert!(u.is_c());
    }

    #[test]
    fn linux_6_1_records_cmd_not_savedcmd() {
        let old = CMD.replacen("savedcmd_", "cmd_", 1);
        let u = UnitCommand::parse_text(Path::new(".cmdline.o.cmd"), &old).unwrap();
        assert_eq!(u.object, Path::new("fs/proc/cmdline.o"));
        assert!(u.command.starts_with("gcc -Wp,-MMD"), "{}", u.command);
        assert_eq!(u.deps.len(), 3);
    }

    #[test]
    fn replay_moves_source_output_and_depfile_out_of_the_tree() {
        let u = UnitCommand::parse_text(Path::new("x"), CMD).unwrap();
        let cmd = u
            .replay(
                Path::new("/k/build"),
                Path::new("/k/src"),
                Path::new("/tmp/copy"),
                Path::new("/tmp/out/cmdline.o"),
                &["-ffunction-sections", "-fdata-sections"],
            )
            .unwrap();
        // The shell line this runs, word for word:
        // gcc -ffunction-sections -fdata-sections -Wp,-MMD,/tmp/out/cmdline.o.d -nostdinc
        // -I/tmp/copy/arch/x86/include -I./include -fmacro-prefix-map=/tmp/copy/=
        // -DKBUILD_MODNAME='"proc"' -c -o /tmp/out/cmdline.o /tmp/copy/fs/proc/cmdline.c
        assert_eq!(cmd.get_program(), "gcc");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-ffunction-sections",
                "-fdata-sections",
                "-Wp,-MMD,/tmp/out/cmdline.o.d",
                "-nostdinc",
                "-I/tmp/copy/arch/x86/include",
                "-I./include",
                "-fmacro-prefix-map=/tmp/copy/=",
                "-DKBUILD_MODNAME=\"proc\"",
                "-c",
                "-o",
                "/tmp/out/cmdline.o",
                "/tmp/copy/fs/proc/cmdline.c",
            ]
        );
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/k/build")));
    }

    #[test]
    fn shell_words_are_split_like_sh() {
        assert_eq!(
            shell_words(r#"gcc  -D'a b' -D"x\"y" a\ b -DN='"n"' '' x#y"#).unwrap(),
            ["gcc", "-Da b", "-Dx\"y", "a b", "-DN=\"n\"", "", "x#y"]
        );
        for (line, what) in [
            ("gcc $(CC)", '$'),
            ("gcc \"$x\"", '$'),
            ("gcc a | b", '|'),
            ("gcc *.c", '*'),
            ("gcc > x", '>'),
            ("gcc 'open", '\''),
            ("gcc #c", '#'),
        ] {
            assert_eq!(shell_words(line), Err(what), "{line}");
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let err = UnitCommand::parse_text(Path::new("a.cmd"), "junk\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.cmd: no `savedcmd_` line (is this a kbuild .cmd file?)"
        );
    }
}
