//! The `kpbuild` binary on bad input: every case must exit with its code
//! (1 bad input or error, 2 refused, 3 no change), say what is wrong naming
//! the file (and section or symbol where there is one), never panic, and
//! leave nothing behind: no output file, no temporary file, no scratch
//! directory (each run gets its own `TMPDIR`, which must stay empty).
//!
//! `kpbuild diff` inputs are fixture objects compiled here (each source
//! copied to `<side>/unit.c` first, as a kernel build compiles both sides
//! under one name) and damaged copies of them. `kpbuild build` runs against
//! a fake tree, except for a patch that does not apply, which needs the
//! built test kernel (see `testbed::oracle`).

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use testbed::scratch::Scratch;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every file and directory under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One finished run of the binary.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Checks the exit code, that no panic happened and that the output
    /// (stderr and stdout) contains every `needle`.
    fn expect(&self, code: i32, needles: &[&str]) {
        let all = format!("{}{}", self.stdout, self.stderr);
        eprintln!("exit {:?}: {}", self.code, self.stderr.trim_end());
        assert_eq!(self.code, Some(code), "wrong exit code:\n{all}");
        assert!(
            !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
            "kpbuild panicked:\n{all}"
        );
        for n in needles {
            assert!(all.contains(n), "output lacks {n:?}:\n{all}");
        }
    }
}

/// Runs kpbuild with its own empty `TMPDIR`; checks that it stays empty.
fn kpbuild(scratch: &Scratch, args: &[&std::ffi::OsStr]) -> Run {
    kpbuild_env(scratch, args, &[])
}

/// [`kpbuild`] with more environment variables.
fn kpbuild_env(
    scratch: &Scratch,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::ffi::OsStr)],
) -> Run {
    let tmp = scratch.dir("tmpdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .envs(env.iter().copied())
        .env("TMPDIR", &tmp)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("kpbuild runs");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let left = listing(&tmp);
    assert!(
        left.is_empty(),
        "kpbuild left temporary files in TMPDIR: {left:?}\n{run:?}"
    );
    run
}

// ---------------------------------------------------------------------------
// kpbuild diff

/// The fixture objects of one test, in its scratch directory.
struct Objects {
    /// two_functions_changed: a patch.
    orig: PathBuf,
    patched: PathBuf,
    /// jump_label_in_changed_function: a patch with a `__jump_table`.
    jump_orig: PathBuf,
    jump_patched: PathBuf,
    /// bss_size_changed: refused.
    refused_orig: PathBuf,
    refused_patched: PathBuf,
    /// identical_rebuild: no change.
    same_orig: PathBuf,
    same_patched: PathBuf,
}

const CASES: [&str; 4] = [
    "two_functions_changed",
    "jump_label_in_changed_function",
    "bss_size_changed",
    "identical_rebuild",
];

fn compile(scratch: &Scratch, case: &str, side: &str, extra: &[&str]) -> Option<PathBuf> {
    let fixtures = repo().join("fixtures/elfdiff");
    let dir = scratch.dir(&format!("{case}{}/{side}", extra.join("")));
    let unit = dir.join("unit.c");
    std::fs::copy(
        fixtures.join("cases").join(case).join(format!("{side}.c")),
        &unit,
    )
    .unwrap();
    let cflags = std::fs::read_to_string(fixtures.join("CFLAGS")).unwrap();
    let out = dir.join("unit.o");
    let status = Command::new("gcc")
        .args(cflags.split_whitespace())
        .args(extra)
        .arg("-I")
        .arg(fixtures.join("include"))
        .arg(&unit)
        .arg("-o")
        .arg(&out)
        .output()
        .ok()?;
    if !status.status.success() {
        eprintln!(
            "gcc {extra:?} failed on {case}/{side}.c: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        return None;
    }
    Some(out)
}

/// An original and a patched object.
type Pair = (Vec<u8>, Vec<u8>);

/// The fixture pairs of [`CASES`], compiled once per test binary (in a
/// scratch directory removed right away); `None` without a compiler.
fn compiled() -> Option<&'static [Pair]> {
    static COMPILED: OnceLock<Option<Vec<Pair>>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let dir = Scratch::new("compile");
            CASES
                .iter()
                .map(|case| {
                    let o = compile(&dir, case, "orig", &[])?;
                    let p = compile(&dir, case, "patched", &[])?;
                    Some((std::fs::read(o).ok()?, std::fs::read(p).ok()?))
                })
                .collect()
        })
        .as_deref()
}

/// Writes the compiled pairs into `s` as `objects/CASE/{orig,patched}/unit.o`.
fn objects(s: &Scratch) -> Option<Objects> {
    let mut paths = Vec::new();
    for (case, (o, p)) in CASES.iter().zip(compiled()?) {
        paths.push(s.write(&format!("objects/{case}/orig/unit.o"), o));
        paths.push(s.write(&format!("objects/{case}/patched/unit.o"), p));
    }
    let mut it = paths.into_iter();
    let mut next = || it.next().unwrap();
    Some(Objects {
        orig: next(),
        patched: next(),
        jump_orig: next(),
        jump_patched: next(),
        refused_orig: next(),
        refused_patched: next(),
        same_orig: next(),
        same_patched: next(),
    })
}

macro_rules! objects_or_skip {
    ($s:expr) => {
        match testbed::oracle::need(
            "gcc compiling the elfdiff fixtures",
            "install the Debian package build-essential",
            objects($s),
        ) {
            Some(o) => o,
            None => return,
        }
    };
}

/// `kpbuild diff ORIG PATCHED --target vmlinux --target-symbols SYMBOLS
/// -o OUT [extra]`, with OUT in a directory of its own that must stay empty
/// (no output, no `OUT.kpbuild-tmp`).
fn diff(scratch: &Scratch, orig: &Path, patched: &Path, symbols: &Path, extra: &[&str]) -> Run {
    let out_dir = scratch.dir("out");
    let out = out_dir.join("OUT.o");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "diff".as_ref(),
        orig.as_os_str(),
        patched.as_os_str(),
        "--target".as_ref(),
        "vmlinux".as_ref(),
        "--target-symbols".as_ref(),
        symbols.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let run = kpbuild(scratch, &args);
    let left = listing(&out_dir);
    assert!(left.is_empty(), "kpbuild diff left {left:?}\n{run:?}");
    run
}

/// A bad ORIGINAL, then the same file as PATCHED: exit 1, the message
/// names the file and contains `why`.
fn bad_object(scratch: &Scratch, o: &Objects, bad: &Path, why: &str) {
    let name = bad.display().to_string();
    diff(scratch, bad, &o.patched, &o.orig, &[]).expect(1, &[&name, why]);
    diff(scratch, &o.orig, bad, &o.orig, &[]).expect(1, &[&name, why]);
}

/// A copy of the two_functions_changed original with `edit` applied.
fn damaged(scratch: &Scratch, o: &Objects, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut data = std::fs::read(&o.orig).unwrap();
    edit(&mut data);
    scratch.write(name, data)
}

#[test]
fn diff_text_file() {
    let s = Scratch::new("text");
    let o = objects_or_skip!(&s);
    let f = s.write("notes.o", "this is not an object file\n");
    bad_object(&s, &o, &f, "not an ELF file");
}

#[test]
fn diff_empty_file() {
    let s = Scratch::new("empty");
    let o = objects_or_skip!(&s);
    let f = s.write("empty.o", "");
    bad_object(&s, &o, &f, "not an ELF file");
}

#[test]
fn diff_truncated_to_100_bytes() {
    let s = Scratch::new("trunc100");
    let o = objects_or_skip!(&s);
    let f = damaged(&s, &o, "trunc100.o", |d| d.truncate(100));
    bad_object(&s, &o, &f, "malformed ELF");
}

#[test]
fn diff_truncated_to_half() {
    let s = Scratch::new("trunchalf");
    let o = objects_or_skip!(&s);
    let f = damaged(&s, &o, "half.o", |d| d.truncate(d.len() / 2));
    bad_object(&s, &o, &f, "malformed ELF");
}

#[test]
fn diff_corrupt_section_header_offset() {
    let s = Scratch::new("shoff");
    let o = objects_or_skip!(&s);
    // e_shoff far beyond the end of the file.
    let f = damaged(&s, &o, "shoff.o", |d| {
        d[40..48].copy_from_slice(&0x00ff_ffffu64.to_le_bytes());
    });
    bad_object(&s, &o, &f, "malformed ELF");
    // e_shoff a few bytes off: the table no longer lines up.
    let f = damaged(&s, &o, "shoff3.o", |d| {
        let off = u64::from_le_bytes(d[40..48].try_into().unwrap()) + 3;
        d[40..48].copy_from_slice(&off.to_le_bytes());
    });
    bad_object(&s, &o, &f, "malformed ELF");
}

#[test]
fn diff_32_bit_object() {
    let s = Scratch::new("m32");
    let o = objects_or_skip!(&s);
    // The fixtures need x86_64 (kmini.h, -mcmodel=kernel): a plain unit.
    let src = s.write(
        "m32/unit.c",
        "int range_len(int a, int b) { return b - a; }\n",
    );
    let obj = s.path("m32/unit.o");
    let ok = Command::new("gcc")
        .args(["-m32", "-O2", "-ffunction-sections", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .is_ok_and(|o| o.status.success());
    let f = if ok {
        obj
    } else {
        eprintln!("no gcc -m32 (multilib); crafting the ELFCLASS32 byte");
        damaged(&s, &o, "class32.o", |d| d[4] = 1)
    };
    bad_object(&s, &o, &f, "not a 64-bit ELF file");
}

#[test]
fn diff_other_machine() {
    let s = Scratch::new("machine");
    let o = objects_or_skip!(&s);
    // EM_AARCH64
    let f = damaged(&s, &o, "aarch64.o", |d| {
        d[18..20].copy_from_slice(&183u16.to_le_bytes())
    });
    bad_object(&s, &o, &f, "is not x86_64");
}

#[test]
fn diff_executable_and_shared_object() {
    let s = Scratch::new("exec");
    let o = objects_or_skip!(&s);
    // ET_EXEC
    let f = damaged(&s, &o, "exec.o", |d| {
        d[16..18].copy_from_slice(&2u16.to_le_bytes())
    });
    bad_object(&s, &o, &f, "not a relocatable object (ET_REL)");
    // ET_DYN: a system binary (a PIE).
    let elf64 = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|p| std::fs::read(p).is_ok_and(|d| d.starts_with(b"\x7fELF\x02")));
    if let Some(p) = testbed::oracle::need(
        "an ELF64 /bin/true (the ET_DYN case)",
        "install the Debian package coreutils",
        elf64,
    ) {
        bad_object(&s, &o, p, "not a relocatable object (ET_REL)");
    }
}

#[test]
fn diff_missing_file() {
    let s = Scratch::new("missing");
    let o = objects_or_skip!(&s);
    let missing = s.path("no-such-dir/missing.o");
    let name = missing.display().to_string();
    diff(&s, &missing, &o.patched, &o.orig, &[]).expect(1, &[&name, "No such file"]);
    diff(&s, &o.orig, &missing, &o.orig, &[]).expect(1, &[&name, "No such file"]);
    diff(&s, &o.orig, &o.patched, &missing, &[]).expect(1, &[&name, "No such file"]);
}

#[test]
fn diff_mismatched_pair() {
    let s = Scratch::new("mismatch");
    let o = objects_or_skip!(&s);
    // Two different units that both happen to be called unit.c.
    let run = diff(&s, &o.orig, &o.jump_patched, &o.orig, &[]);
    let (a, b) = (
        o.orig.display().to_string(),
        o.jump_patched.display().to_string(),
    );
    run.expect(1, &[&a, &b, "not builds of the same source file"]);
    // The other way round, too.
    let run = diff(&s, &o.jump_orig, &o.patched, &o.jump_orig, &[]);
    run.expect(1, &["not builds of the same source file"]);
}

#[test]
fn diff_target_symbols_not_elf() {
    let s = Scratch::new("symbols");
    let o = objects_or_skip!(&s);
    let text = s.write("System.map", "ffffffff81000000 T _text\n");
    let name = text.display().to_string();
    diff(&s, &o.orig, &o.patched, &text, &[]).expect(1, &[&name, "cannot read ELF image"]);
}

#[test]
fn diff_symvers_not_symvers() {
    let s = Scratch::new("symvers");
    let o = objects_or_skip!(&s);
    let bad = s.write("Module.symvers", "this is not a symvers file\n");
    let name = bad.display().to_string();
    let symvers = bad.as_os_str().to_str().unwrap();
    diff(&s, &o.orig, &o.patched, &o.orig, &["--symvers", symvers])
        .expect(1, &[&name, "line 1", "expected 5 tab-separated fields"]);
}

#[test]
fn diff_entry_size_does_not_divide() {
    let s = Scratch::new("entry7");
    let o = objects_or_skip!(&s);
    let name = o.jump_orig.display().to_string();
    diff(
        &s,
        &o.jump_orig,
        &o.jump_patched,
        &o.jump_orig,
        &["--entry-size", "__jump_table=7"],
    )
    .expect(
        1,
        &[
            &name,
            "section __jump_table",
            "not a multiple of its entry size 7",
        ],
    );
}

#[test]
fn diff_entry_size_invalid() {
    let s = Scratch::new("entry0");
    let o = objects_or_skip!(&s);
    for (arg, why) in [
        ("x=0", "an entry size of 0 bytes makes no sense"),
        ("__jump_table", "expected SECTION=BYTES"),
        ("__jump_table=-4", "is not a number of bytes"),
        ("__jump_table=sixteen", "is not a number of bytes"),
    ] {
        diff(&s, &o.orig, &o.patched, &o.orig, &["--entry-size", arg])
            .expect(1, &["--entry-size", arg, why]);
    }
}

#[test]
fn diff_refused() {
    let s = Scratch::new("refused");
    let o = objects_or_skip!(&s);
    let name = o.refused_patched.display().to_string();
    diff(
        &s,
        &o.refused_orig,
        &o.refused_patched,
        &o.refused_orig,
        &[],
    )
    .expect(
        2,
        &[
            &name,
            "refused: .bss.history history",
            "cannot be live patched",
        ],
    );
}

#[test]
fn diff_no_change() {
    let s = Scratch::new("nochange");
    let o = objects_or_skip!(&s);
    let name = o.same_patched.display().to_string();
    diff(&s, &o.same_orig, &o.same_patched, &o.same_orig, &[])
        .expect(3, &[&name, "no functional change"]);
}

/// Objects whose section, symbol or relocation tables lie: the message
/// names the file and the section or symbol.
#[test]
fn diff_inconsistent_tables() {
    let s = Scratch::new("tables");
    let o = objects_or_skip!(&s);
    let data = std::fs::read(&o.orig).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    use object::{Object, ObjectSection, ObjectSymbol};
    // A function symbol pushed past the end of its section.
    let sym = elf.symbols().find(|s| s.name() == Ok("range_len")).unwrap();
    let symtab = elf.section_by_name(".symtab").unwrap();
    let (symtab_off, _) = symtab.file_range().unwrap();
    let entry = symtab_off as usize + sym.index().0 * 24;
    let f = damaged(&s, &o, "symbol.o", |d| {
        d[entry + 8..entry + 16].copy_from_slice(&0x1_0000u64.to_le_bytes())
    });
    bad_object(&s, &o, &f, "symbol range_len lies outside its section");
    // A relocation pushed past the end of the section it applies to.
    let rela = elf
        .section_by_name(".rela.text.range_len")
        .unwrap()
        .file_range()
        .unwrap()
        .0 as usize;
    let f = damaged(&s, &o, "reloc.o", |d| {
        d[rela..rela + 8].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    bad_object(
        &s,
        &o,
        &f,
        "relocation at .text.range_len+0xffffffffffffffff lies outside the section",
    );
}

// ---------------------------------------------------------------------------
// kpbuild build

/// A fake kernel: a source tree with a Makefile, kernel/ and one C file,
/// and a build tree with .config, a vmlinux, Module.symvers and one kbuild
/// `.cmd` record. Enough for every check before the patch is applied.
struct FakeTree {
    src: PathBuf,
    build: PathBuf,
}

fn fake_tree(s: &Scratch) -> FakeTree {
    let src = s.dir("linux");
    std::fs::write(src.join("Makefile"), "VERSION = 6\n").unwrap();
    std::fs::create_dir_all(src.join("kernel")).unwrap();
    s.write("linux/fs/proc/cmdline.c", "int x;\n");
    let build = s.dir("linux-build");
    std::fs::write(build.join(".config"), "CONFIG_LIVEPATCH=y\n").unwrap();
    std::fs::write(build.join("vmlinux"), "not really a kernel").unwrap();
    std::fs::write(build.join("Module.symvers"), "").unwrap();
    s.write(
        "linux-build/fs/proc/.cmdline.o.cmd",
        format!(
            "savedcmd_fs/proc/cmdline.o := gcc -mcmodel=kernel -c -o fs/proc/cmdline.o {0}/fs/proc/cmdline.c\n\n\
             source_fs/proc/cmdline.o := {0}/fs/proc/cmdline.c\n\n\
             deps_fs/proc/cmdline.o := \\\n  {0}/fs/proc/cmdline.c \\\n\n",
            src.display()
        ),
    );
    FakeTree { src, build }
}

const C_PATCH: &str =
    "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-int x;\n+int x = 1;\n";

/// `kpbuild build --src SRC --build BUILD --patch P... --name NAME --out
/// OUT`; OUT must not exist afterwards.
fn build(s: &Scratch, src: &Path, build: &Path, patches: &[&Path], name: &str) -> Run {
    let out = s.path("out");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "build".as_ref(),
        "--src".as_ref(),
        src.as_os_str(),
        "--build".as_ref(),
        build.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    let name_arg = format!("--name={name}");
    args.push(name_arg.as_ref());
    for p in patches {
        args.push("--patch".as_ref());
        args.push(p.as_os_str());
    }
    let run = kpbuild(s, &args);
    assert!(
        !out.exists(),
        "kpbuild build created {}: {:?}\n{run:?}",
        out.display(),
        listing(&out)
    );
    run
}

#[test]
fn build_patch_missing() {
    let s = Scratch::new("b-missing");
    let t = fake_tree(&s);
    let p = s.path("missing.patch");
    let name = p.display().to_string();
    build(&s, &t.src, &t.build, &[&p], "lp_missing").expect(1, &[&name, "No such file"]);
}

#[test]
fn build_patch_not_a_diff() {
    let s = Scratch::new("b-notdiff");
    let t = fake_tree(&s);
    let p = s.write("notes.patch", "Please change the cmdline output.\n");
    let name = p.display().to_string();
    build(&s, &t.src, &t.build, &[&p], "lp_notdiff").expect(1, &[&name, "not a unified diff"]);
    // Binary junk is not a diff either.
    let p = s.write("junk.patch", [0xffu8, 0xfe, 0, 1, 2, 3]);
    let name = p.display().to_string();
    build(&s, &t.src, &t.build, &[&p], "lp_notdiff").expect(1, &[&name]);
}

#[test]
fn build_patch_touches_unsupported_files() {
    let s = Scratch::new("b-unsupported");
    let t = fake_tree(&s);
    for (file, why) in [
        ("fs/proc/Kconfig", "Kconfig"),
        ("fs/proc/Makefile", "build-system"),
        ("arch/x86/entry/entry_64.S", "assembly"),
    ] {
        let text = format!("{C_PATCH}--- a/{file}\n+++ b/{file}\n@@ -1 +1 @@\n-old\n+new\n");
        let p = s.write("unsupported.patch", text);
        let name = p.display().to_string();
        build(&s, &t.src, &t.build, &[&p], "lp_unsupported").expect(2, &[&name, file, why]);
    }
}

#[test]
fn build_src_not_a_kernel_tree() {
    let s = Scratch::new("b-src");
    let t = fake_tree(&s);
    let p = s.write("ok.patch", C_PATCH);
    let empty = s.dir("empty");
    let name = empty.display().to_string();
    build(&s, &empty, &t.build, &[&p], "lp_src").expect(1, &[&name, "not a kernel source tree"]);
    let missing = s.path("nowhere");
    let name = missing.display().to_string();
    build(&s, &missing, &t.build, &[&p], "lp_src").expect(1, &[&name, "not a kernel source tree"]);
}

#[test]
fn build_tree_lacks_vmlinux_or_config() {
    let s = Scratch::new("b-build");
    let t = fake_tree(&s);
    let p = s.write("ok.patch", C_PATCH);
    std::fs::remove_file(t.build.join("vmlinux")).unwrap();
    let name = t.build.join("vmlinux").display().to_string();
    build(&s, &t.src, &t.build, &[&p], "lp_build").expect(1, &[&name, "missing"]);
    std::fs::remove_file(t.build.join(".config")).unwrap();
    let name = t.build.join(".config").display().to_string();
    build(&s, &t.src, &t.build, &[&p], "lp_build").expect(1, &[&name, "missing"]);
    // A config without livepatch support.
    let t = fake_tree(&s);
    std::fs::write(t.build.join(".config"), "# CONFIG_LIVEPATCH is not set\n").unwrap();
    build(&s, &t.src, &t.build, &[&p], "lp_build").expect(1, &["CONFIG_LIVEPATCH"]);
    // A vmlinux that is not an ELF file (the compiler check reads it).
    let t = fake_tree(&s);
    let name = t.build.join("vmlinux").display().to_string();
    build(&s, &t.src, &t.build, &[&p], "lp_build").expect(1, &[&name]);
}

#[test]
fn build_invalid_name() {
    let s = Scratch::new("b-name");
    let t = fake_tree(&s);
    let p = s.write("ok.patch", C_PATCH);
    let long = "x".repeat(56);
    for name in [
        "",
        "bad name",
        "../escape",
        "a/b",
        long.as_str(),
        "-dash",
        "kpb_glue",
    ] {
        build(&s, &t.src, &t.build, &[&p], name).expect(1, &["invalid module name"]);
    }
}

#[test]
fn build_out_is_a_file() {
    let s = Scratch::new("b-out");
    let t = fake_tree(&s);
    let p = s.write("ok.patch", C_PATCH);
    let out = s.write("out-file", "x");
    let run = kpbuild(
        &s,
        &[
            "build".as_ref(),
            "--src".as_ref(),
            t.src.as_os_str(),
            "--build".as_ref(),
            t.build.as_os_str(),
            "--patch".as_ref(),
            p.as_os_str(),
            "--name".as_ref(),
            "lp_out".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    );
    run.expect(1, &[&out.display().to_string(), "not a directory"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"x");
}

/// The built test kernel: (source, build directory).
fn cached_kernel() -> Option<(PathBuf, PathBuf)> {
    let kernel = testbed::oracle::test_kernel()?;
    Some((kernel.src, kernel.build))
}

/// False, after saying so, when `run` stopped because the test kernel was
/// built by another compiler than this machine's: the case cannot run.
fn same_compiler(run: &Run) -> bool {
    testbed::oracle::need(
        "a test kernel built by this machine's compiler",
        "rebuild it: remove it from the cache and run `cargo xtask kernel`",
        (!run.stderr.contains("compiler mismatch")).then_some(()),
    )
    .is_some()
}

#[test]
fn build_patch_does_not_apply() {
    let Some((src, build_dir)) = cached_kernel() else {
        return;
    };
    let s = Scratch::new("b-apply");
    let p = s.write(
        "stale.patch",
        "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1,3 +1,3 @@\n\
         -this line is not in cmdline.c\n+nor is this one\n context that is not there\n",
    );
    let name = p.display().to_string();
    let target = src.join("fs/proc/cmdline.c");
    let before = std::fs::read(&target).unwrap();
    let run = build(&s, &src, &build_dir, &[&p], "lp_stale");
    if !same_compiler(&run) {
        return;
    }
    run.expect(1, &[&name, "does not apply"]);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "the cached source was modified"
    );
}

#[test]
fn build_documentation_only_is_no_change() {
    let Some((src, build_dir)) = cached_kernel() else {
        return;
    };
    let doc = "Documentation/livepatch/livepatch.rst";
    let Some(text) = testbed::oracle::need(
        &format!("{doc} in the test kernel's source"),
        "run `cargo xtask kernel`",
        std::fs::read_to_string(src.join(doc)).ok(),
    ) else {
        return;
    };
    let first = text.lines().next().unwrap_or("");
    let s = Scratch::new("b-doc");
    let p = s.write(
        "doc.patch",
        format!(
            "--- a/{doc}\n+++ b/{doc}\n@@ -1 +1,2 @@\n {first}\n+A line no kernel build reads.\n"
        ),
    );
    let run = build(&s, &src, &build_dir, &[&p], "lp_doc");
    if !same_compiler(&run) {
        return;
    }
    run.expect(
        3,
        &["no compiled unit of this kernel build uses the changed files"],
    );
    assert_eq!(std::fs::read_to_string(src.join(doc)).unwrap(), text);
}

// ---------------------------------------------------------------------------
// kpbuild build, tree-less: source, config, vmlinux and headers that do not
// describe one kernel

/// The compiler a fake tree-less target names: it exists nowhere.
const FAKE_CC: &str = "x86_64-linux-gnu-gcc-404 (Fake 404.0-1) 404.0";
const FAKE_RELEASE: &str = "6.12.0-fake";

/// A fake tree-less target whose four parts agree: a source with a
/// Makefile version, a config naming [`FAKE_CC`], a linked "vmlinux"
/// (compiled here) whose banner names that release and compiler, and a
/// module headers directory for that release.
struct FakeTreeless {
    src: PathBuf,
    config: PathBuf,
    vmlinux: PathBuf,
    headers: PathBuf,
}

fn fake_treeless(s: &Scratch) -> Option<FakeTreeless> {
    let src = s.dir("tl-linux");
    std::fs::write(
        src.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n",
    )
    .unwrap();
    std::fs::create_dir_all(src.join("kernel")).unwrap();
    s.write("tl-linux/fs/proc/cmdline.c", "int x;\n");
    let config_text =
        format!("CONFIG_LIVEPATCH=y\nCONFIG_HZ=250\nCONFIG_CC_VERSION_TEXT=\"{FAKE_CC}\"\n");
    let config = s.write("tl-config", &config_text);
    let headers = s.dir("tl-headers");
    s.write(
        "tl-headers/include/config/kernel.release",
        format!("{FAKE_RELEASE}\n"),
    );
    s.write(
        "tl-headers/.config",
        format!("{config_text}CONFIG_BUILD_ONLY=y\n"),
    );
    s.write("tl-headers/Module.symvers", "");
    let c = s.write(
        "tl-vmlinux.c",
        format!(
            "const char linux_banner[] = \"Linux version {FAKE_RELEASE} (nobody@example) ({FAKE_CC}, GNU ld 2.40) #1 SMP\\n\";\n\
             void _start(void) {{}}\n"
        ),
    );
    let vmlinux = s.path("tl-vmlinux");
    let ok = Command::new("gcc")
        .args([
            "-nostdlib",
            "-static",
            "-no-pie",
            "-O0",
            "-Wl,--build-id=sha1",
            "-o",
        ])
        .arg(&vmlinux)
        .arg(&c)
        .status()
        .is_ok_and(|st| st.success());
    testbed::oracle::need(
        "gcc linking a static executable",
        "install the Debian package build-essential",
        ok.then_some(FakeTreeless {
            src,
            config,
            vmlinux,
            headers,
        }),
    )
}

/// `kpbuild build` tree-less on `t` with the one-line patch; OUT must not
/// exist afterwards and the cache (a scratch `KPBUILD_CACHE`) stays empty.
fn build_treeless(s: &Scratch, t: &FakeTreeless) -> Run {
    let out = s.path("out");
    let patch = s.write("tl.patch", C_PATCH);
    let cache = s.dir("tl-cache");
    let run = kpbuild_env(
        s,
        &[
            "build".as_ref(),
            "--src".as_ref(),
            t.src.as_os_str(),
            "--config".as_ref(),
            t.config.as_os_str(),
            "--vmlinux".as_ref(),
            t.vmlinux.as_os_str(),
            "--headers".as_ref(),
            t.headers.as_os_str(),
            "--patch".as_ref(),
            patch.as_os_str(),
            "--name".as_ref(),
            "lp_treeless".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &[("KPBUILD_CACHE", cache.as_os_str())],
    );
    assert!(
        !out.exists(),
        "kpbuild build created {}\n{run:?}",
        out.display()
    );
    assert!(
        listing(&cache).is_empty(),
        "a rejected target left {:?} in the cache\n{run:?}",
        listing(&cache)
    );
    run
}

#[test]
fn treeless_missing_compiler() {
    let s = Scratch::new("tl-cc");
    let Some(t) = fake_treeless(&s) else { return };
    // Everything agrees; the compiler the config names is not installed.
    build_treeless(&s, &t).expect(
        1,
        &["x86_64-linux-gnu-gcc-404", "cannot be run here", "built by"],
    );
}

#[test]
fn treeless_vmlinux_of_another_release() {
    let s = Scratch::new("tl-release");
    let Some(t) = fake_treeless(&s) else { return };
    std::fs::write(
        t.headers.join("include/config/kernel.release"),
        "6.12.0-other\n",
    )
    .unwrap();
    build_treeless(&s, &t).expect(
        1,
        &[
            "release mismatch",
            FAKE_RELEASE,
            "6.12.0-other",
            &t.vmlinux.display().to_string(),
        ],
    );
}

#[test]
fn treeless_config_of_another_compiler() {
    let s = Scratch::new("tl-config-cc");
    let Some(t) = fake_treeless(&s) else { return };
    std::fs::write(
        &t.config,
        "CONFIG_LIVEPATCH=y\nCONFIG_CC_VERSION_TEXT=\"gcc (Other) 13.1.0\"\n",
    )
    .unwrap();
    build_treeless(&s, &t).expect(
        1,
        &[
            "compiler mismatch",
            "gcc (Other) 13.1.0",
            &t.config.display().to_string(),
        ],
    );
}

#[test]
fn treeless_config_disagrees_with_headers() {
    let s = Scratch::new("tl-config");
    let Some(t) = fake_treeless(&s) else { return };
    let text = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(&t.config, text.replace("CONFIG_HZ=250", "CONFIG_HZ=1000")).unwrap();
    build_treeless(&s, &t).expect(1, &["config mismatch", "CONFIG_HZ=1000 vs 250"]);
}

#[test]
fn treeless_source_of_another_version() {
    let s = Scratch::new("tl-src");
    let Some(t) = fake_treeless(&s) else { return };
    std::fs::write(
        t.src.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 11\nSUBLEVEL = 3\n",
    )
    .unwrap();
    build_treeless(&s, &t).expect(1, &["version mismatch", "6.11.3", FAKE_RELEASE]);
}

#[test]
fn treeless_vmlinux_without_symbols_or_not_elf() {
    let s = Scratch::new("tl-strip");
    let Some(t) = fake_treeless(&s) else { return };
    let stripped = Command::new("strip")
        .arg("--strip-all")
        .arg(&t.vmlinux)
        .status()
        .is_ok_and(|st| st.success());
    assert!(stripped, "strip failed");
    build_treeless(&s, &t).expect(1, &["no symbol table", "stripped", "-dbg"]);
    std::fs::write(&t.vmlinux, "a bzImage, say").unwrap();
    build_treeless(&s, &t).expect(1, &["not an ELF64 file", &t.vmlinux.display().to_string()]);
}
