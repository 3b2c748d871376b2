//! `kpbuild inspect` end to end: a livepatch object made by `kpbuild diff`
//! from a fixture pair, damaged copies of it, a small module with a signature,
//! and the kernel's `livepatch-sample.ko` when the test kernel is built.

#![allow(missing_docs)]

use object::read::elf::{FileHeader, SectionHeader};
use object::{LittleEndian as LE, Object, ObjectSection, ObjectSymbol};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CASE: &str = "calls_unchanged_static_function";
const KLP_SYM: &str = ".klp.sym.vmlinux.sk_set_error,0";
const KLP_RELA: &str = ".klp.rela.vmlinux..text.sk_close";

use testbed::scratch::Scratch;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compile(src: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let unit = dir.join("unit.c");
    std::fs::copy(src, &unit).unwrap();
    let elfdiff = repo().join("fixtures/elfdiff");
    let flags = std::fs::read_to_string(elfdiff.join("CFLAGS")).unwrap();
    let out = dir.join("unit.o");
    let status = Command::new("gcc")
        .args(flags.split_whitespace())
        .arg("-I")
        .arg(elfdiff.join("include"))
        .arg(&unit)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed on {}", src.display());
    out
}

fn kpbuild(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .output()
        .expect("kpbuild runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn inspect(file: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["inspect".as_ref(), file.as_os_str()];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    kpbuild(&args)
}

fn inspect_json(file: &Path, extra: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(extra);
    let (code, stdout, stderr) = inspect(file, &all);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, json)
}

/// Compiles the fixture pair and runs `kpbuild diff`; returns the original
/// object and the livepatch object.
fn livepatch_object(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let case = repo().join("fixtures/elfdiff/cases").join(CASE);
    let orig = compile(&case.join("orig.c"), &scratch.path("o"));
    let patched = compile(&case.join("patched.c"), &scratch.path("p"));
    // The original object has no __ksymtab_ symbols and no .modinfo, so the
    // exports of the stand-in vmlinux come from a Module.symvers.
    let symvers = scratch.path("Module.symvers");
    std::fs::write(
        &symvers,
        "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n\
         0x00000000\twake_waiters\tvmlinux\tEXPORT_SYMBOL\t\n\
         0x00000000\tsock_log\tvmlinux\tEXPORT_SYMBOL_GPL\t\n",
    )
    .unwrap();
    let out = scratch.path("out.o");
    let (code, stdout, stderr) = kpbuild(&[
        "diff".as_ref(),
        orig.as_os_str(),
        patched.as_os_str(),
        "--target".as_ref(),
        "vmlinux".as_ref(),
        "--target-symbols".as_ref(),
        orig.as_os_str(),
        "--symvers".as_ref(),
        symvers.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, 0, "kpbuild diff failed:\n{stdout}\n{stderr}");
    (orig, out)
}

fn symbol_size(file: &Path, name: &str) -> u64 {
    let data = std::fs::read(file).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    obj.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no {name} in {}", file.display()))
        .size()
}

fn problems(json: &Value) -> Vec<String> {
    json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn object_from_kpbuild_diff_as_json() {
    let scratch = Scratch::new("json");
    let (orig, out) = livepatch_object(&scratch);
    let (code, json) = inspect_json(&out, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["file"], out.display().to_string());
    assert_eq!(json["kind"], "object");
    assert_eq!(json["functions_section"], true);
    assert_eq!(
        json["functions"],
        serde_json::json!([{
            "object": "vmlinux",
            "name": "sk_close",
            "position": 0,
            "old_size": symbol_size(&orig, "sk_close"),
            "new_symbol": "kpb_new_0",
        }])
    );
    // The call to the unchanged static sk_set_error is left to livepatch.
    let relocs = json["livepatch_relocations"].as_array().unwrap();
    assert_eq!(relocs.len(), 1, "{json:#}");
    let r = &relocs[0];
    assert_eq!(r["section"], KLP_RELA);
    assert_eq!(r["applies_to"], ".text.sk_close");
    assert_eq!(r["symbol"], KLP_SYM);
    assert_eq!(r["object"], "vmlinux");
    assert_eq!(r["name"], "sk_set_error");
    assert_eq!(r["position"], 0);
    assert_eq!(r["addend"], -4);
    assert!(
        r["type"] == "R_X86_64_PC32" || r["type"] == "R_X86_64_PLT32",
        "{r}"
    );
    // The call site is an e8 rel32 in the replacement.
    let data = std::fs::read(&out).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let text = obj
        .section_by_name(".text.sk_close")
        .unwrap()
        .data()
        .unwrap();
    let offset = r["offset"].as_u64().unwrap() as usize;
    assert_eq!(text[offset - 1], 0xe8, "not a call at {offset:#x}");

    let loader: Vec<&str> = json["loader_symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(loader, ["__fentry__"]);
    assert_eq!(json["problems"], serde_json::json!([]));
    assert_eq!(json["modinfo"], Value::Null);
    assert_eq!(json["signature"], Value::Null);
    assert!(json.get("disassembly").is_none());
}

#[test]
fn object_from_kpbuild_diff_for_people() {
    let scratch = Scratch::new("human");
    let (_, out) = livepatch_object(&scratch);
    let (code, stdout, stderr) = inspect(&out, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for expected in [
        "livepatch object",
        "patched functions (.kpbuild.functions):",
        "  vmlinux:\n    sk_close,0 (old size ",
        "→ kpb_new_0",
        &format!("  {KLP_RELA} → .text.sk_close:"),
        &format!("{KLP_SYM} [vmlinux sk_set_error,0] addend -4"),
        "resolved by the module loader:\n  __fentry__\n",
        "problems: none",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("modinfo"), "{stdout}");
}

#[test]
fn disassembly_marks_the_livepatch_call() {
    let scratch = Scratch::new("disasm");
    let (_, out) = livepatch_object(&scratch);
    let (code, json) = inspect_json(&out, &["--disasm"]);
    assert_eq!(code, 0, "{json:#}");
    let listing = json["disassembly"].as_array().unwrap();
    assert_eq!(listing.len(), 1);
    let d = &listing[0];
    assert_eq!(d["symbol"], "kpb_new_0");
    assert_eq!(d["replaces"], "vmlinux sk_close,0");
    assert_eq!(d["section"], ".text.sk_close");
    assert_eq!(d["syntax"], "intel");
    let klp_offset = json["livepatch_relocations"][0]["offset"].as_u64().unwrap();
    let call = d["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            let start = i["offset"].as_u64().unwrap();
            let len = i["bytes"].as_str().unwrap().split(' ').count() as u64;
            (start..start + len).contains(&klp_offset)
        })
        .expect("an instruction covers the livepatch relocation");
    assert!(call["text"].as_str().unwrap().starts_with("call"), "{call}");
    let notes = call["relocations"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{call}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.contains(KLP_SYM) && note.ends_with("(livepatch)"),
        "{note}"
    );
    // The __fentry__ call is the module loader's.
    assert!(
        d["instructions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["relocations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains("__fentry__-4 (module loader)"))),
        "{d:#}"
    );

    let (code, stdout, _) = inspect(&out, &["--disasm"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("disassembly of kpb_new_0 (replaces vmlinux sk_close,0)"));
    assert!(stdout.contains("Intel syntax"));
    assert!(stdout.contains("; reloc +0x1: R_X86_64_"), "{stdout}");
    assert!(
        stdout.contains(&format!("{KLP_SYM}-4 (livepatch)")),
        "{stdout}"
    );
}

#[test]
fn bad_input_names_the_file() {
    let scratch = Scratch::new("bad");
    let (_, out) = livepatch_object(&scratch);
    let data = std::fs::read(&out).unwrap();

    let truncated = scratch.path("truncated.o");
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let (code, stdout, stderr) = inspect(&truncated, &[]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&truncated.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("truncated"), "{stderr}");

    // The header table intact, one section's contents past the end.
    let (header, _) = section_offsets(&data, ".kpbuild.functions");
    let mut bytes = data.clone();
    bytes[header + 24..header + 32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let cut = scratch.path("cut.o");
    std::fs::write(&cut, &bytes).unwrap();
    let (code, _, stderr) = inspect(&cut, &["--json"]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&cut.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(".kpbuild.functions")
            && stderr.contains("extends past the end of the file"),
        "{stderr}"
    );

    let text = scratch.path("notes.txt");
    std::fs::write(&text, "just some notes\n").unwrap();
    let (code, stdout, stderr) = inspect(&text, &["--json"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&text.display().to_string()), "{stderr}");
    assert!(stderr.contains("not an ELF file"), "{stderr}");

    let exec = scratch.path("exec.o");
    let mut bytes = data.clone();
    bytes[16] = 2; // ET_EXEC
    std::fs::write(&exec, &bytes).unwrap();
    let (code, _, stderr) = inspect(&exec, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&exec.display().to_string()), "{stderr}");
    assert!(stderr.contains("executable"), "{stderr}");

    let missing = scratch.path("missing.o");
    let (code, _, stderr) = inspect(&missing, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

/// The file offset of section `name`'s header and of its contents.
fn section_offsets(data: &[u8], name: &str) -> (usize, usize) {
    let file = object::elf::FileHeader64::<LE>::parse(data).unwrap();
    let sections = file.sections(LE, data).unwrap();
    let (index, header) = sections
        .enumerate()
        .find(|(_, h)| sections.section_name(LE, h).unwrap() == name.as_bytes())
        .unwrap_or_else(|| panic!("no section {name}"));
    (
        file.e_shoff(LE) as usize + index.0 * 64,
        header.sh_offset(LE) as usize,
    )
}

fn replace_once(data: &mut [u8], from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let at = data
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("no {from:?}"));
    data[at..at + to.len()].copy_from_slice(to.as_bytes());
    assert!(
        !data.windows(from.len()).any(|w| w == from.as_bytes()),
        "{from:?} occurs twice"
    );
}

/// Inspects a damaged copy; returns its problems (exit code must be 1).
fn damaged(scratch: &Scratch, name: &str, data: &[u8]) -> Vec<String> {
    let path = scratch.path(name);
    std::fs::write(&path, data).unwrap();
    let (code, json) = inspect_json(&path, &[]);
    assert_eq!(code, 1, "{json:#}");
    let found = problems(&json);
    assert!(!found.is_empty());
    let (_, stdout, stderr) = inspect(&path, &[]);
    assert!(
        stdout.contains(&format!("problems ({}):", found.len())),
        "{stdout}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    found
}

fn assert_problem(found: &[String], words: &[&str]) {
    assert!(
        found.iter().any(|p| words.iter().all(|w| p.contains(w))),
        "no problem mentioning {words:?} in {found:#?}"
    );
}

#[test]
fn inconsistencies_are_problems() {
    let scratch = Scratch::new("problems");
    let (_, out) = livepatch_object(&scratch);
    let data = std::fs::read(&out).unwrap();
    let (klp_header, _) = section_offsets(&data, KLP_RELA);

    // A .klp.rela section without SHF_RELA_LIVEPATCH.
    let mut bytes = data.clone();
    let flags = klp_header + 8;
    let value = u64::from_le_bytes(bytes[flags..flags + 8].try_into().unwrap());
    bytes[flags..flags + 8].copy_from_slice(&(value & !0x0010_0000u64).to_le_bytes());
    let found = damaged(&scratch, "noflag.o", &bytes);
    assert_problem(&found, &[KLP_RELA, "lacks SHF_RELA_LIVEPATCH"]);

    // The livepatch symbol left undefined (pre-link form).
    let mut bytes = data.clone();
    let obj = object::File::parse(&*data).unwrap();
    let sym = obj.symbols().find(|s| s.name() == Ok(KLP_SYM)).unwrap();
    let (_, symtab) = section_offsets(&data, ".symtab");
    let shndx = symtab + sym.index().0 * 24 + 6;
    assert_eq!(bytes[shndx..shndx + 2], [0x20, 0xff]);
    bytes[shndx..shndx + 2].copy_from_slice(&[0, 0]);
    let found = damaged(&scratch, "undef.o", &bytes);
    assert_problem(&found, &[KLP_SYM, "SHN_UNDEF", "Unknown symbol"]);

    // A module's relocation section referring to a vmlinux symbol: the
    // kernel refuses it.
    let mut bytes = data.clone();
    replace_once(&mut bytes, ".klp.rela.vmlinux.", ".klp.rela.modxxxx.");
    let found = damaged(&scratch, "modsec.o", &bytes);
    assert_problem(&found, &["invalid access to vmlinux symbol", "-EINVAL"]);

    // vmlinux's relocation section referring to a module symbol: not
    // checked by the kernel, but fragile.
    let mut bytes = data.clone();
    replace_once(&mut bytes, ".klp.sym.vmlinux.", ".klp.sym.modxxxx.");
    let found = damaged(&scratch, "modsym.o", &bytes);
    assert_problem(&found, &["does not check", "modxxxx", "sk_set_error"]);
    let (_, json) = inspect_json(&scratch.path("modsym.o"), &[]);
    assert_eq!(json["livepatch_relocations"][0]["object"], "modxxxx");

    // A non-zero relocation site.
    let mut bytes = data.clone();
    let (_, text) = section_offsets(&data, ".text.sk_close");
    let (_, json) = inspect_json(&out, &[]);
    let offset = json["livepatch_relocations"][0]["offset"].as_u64().unwrap() as usize;
    bytes[text + offset] = 0x42;
    let found = damaged(&scratch, "nonzero.o", &bytes);
    assert_problem(&found, &["not zero", "-ENOEXEC"]);
}

/// A relocatable object with a `.modinfo` (so: a module), no code.
fn tiny_module(modinfo: &[u8]) -> Vec<u8> {
    use object::write;
    let mut obj = write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    let section = obj.add_section(
        Vec::new(),
        b".modinfo".to_vec(),
        object::SectionKind::ReadOnlyData,
    );
    obj.append_section_data(section, modinfo, 1);
    obj.write().unwrap()
}

fn signed(mut elf: Vec<u8>, sig_len: u32, id_type: u8) -> Vec<u8> {
    elf.extend(std::iter::repeat_n(0x5a, sig_len as usize));
    elf.extend_from_slice(&[0, 0, id_type, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&sig_len.to_be_bytes());
    elf.extend_from_slice(b"~Module signature appended~\n");
    elf
}

#[test]
fn module_info_and_signature() {
    let scratch = Scratch::new("module");
    let good = b"license=GPL\0livepatch=Y\0name=kpb_tiny\0vermagic=6.12.117 SMP mod_unload \0";
    let plain = scratch.path("tiny.ko");
    std::fs::write(&plain, tiny_module(good)).unwrap();
    let (code, json) = inspect_json(&plain, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["kind"], "module");
    assert_eq!(json["modinfo"]["name"], "kpb_tiny");
    assert_eq!(json["modinfo"]["livepatch"], "Y");
    assert_eq!(json["modinfo"]["license"], "GPL");
    assert_eq!(json["modinfo"]["vermagic"], "6.12.117 SMP mod_unload ");
    assert_eq!(json["modinfo"]["fields"].as_array().unwrap().len(), 4);
    assert_eq!(
        json["signature"],
        serde_json::json!({"appended": false, "length": null, "id_type": null})
    );
    assert_eq!(json["functions_section"], false);

    let sig = scratch.path("signed.ko");
    std::fs::write(&sig, signed(tiny_module(good), 300, 2)).unwrap();
    let (code, json) = inspect_json(&sig, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(
        json["signature"],
        serde_json::json!({"appended": true, "length": 300, "id_type": "PKCS#7"})
    );
    let (_, stdout, _) = inspect(&sig, &[]);
    assert!(
        stdout.contains("signature: appended (PKCS#7, 300 bytes)"),
        "{stdout}"
    );
    assert!(stdout.contains("livepatch: Y"), "{stdout}");

    // A signature longer than the file: the kernel says -EBADMSG.
    let mut bytes = signed(tiny_module(good), 300, 2);
    let at = bytes.len() - 28 - 4;
    bytes[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
    let found = damaged(&scratch, "badsig.ko", &bytes);
    assert_problem(&found, &["1000000", "-EBADMSG"]);

    // Not a livepatch module.
    let found = damaged(
        &scratch,
        "plain.ko",
        &tiny_module(b"license=GPL\0name=plain\0vermagic=6.12.117 SMP mod_unload \0"),
    );
    assert_problem(&found, &["livepatch=Y"]);
}

/// The livepatch sample module of the built test kernel.
fn sample_module() -> Option<PathBuf> {
    let ko = testbed::oracle::test_kernel()?.module("samples/livepatch/livepatch-sample.ko");
    testbed::oracle::need(
        &ko.display().to_string(),
        "the test kernel's config builds the livepatch sample: run `cargo xtask kernel`",
        ko.is_file().then_some(ko.clone()),
    )
}

#[test]
fn kernel_livepatch_sample() {
    let Some(ko) = sample_module() else {
        return;
    };
    let (code, json) = inspect_json(&ko, &["--disasm"]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["kind"], "module");
    assert_eq!(json["functions_section"], false);
    assert_eq!(json["functions"], serde_json::json!([]));
    assert!(
        json["global_functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "init_module"),
        "{json:#}"
    );
    assert_eq!(json["livepatch_relocations"], serde_json::json!([]));
    assert_eq!(json["modinfo"]["livepatch"], "Y");
    assert_eq!(json["modinfo"]["name"], "livepatch_sample");
    assert_eq!(json["signature"]["appended"], false);
    assert_eq!(json["disassembly"], serde_json::json!([]));
    let loader: Vec<&str> = json["loader_symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(loader.contains(&"klp_enable_patch"), "{loader:?}");

    let (code, stdout, _) = inspect(&ko, &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("no .kpbuild.functions section"), "{stdout}");
    assert!(
        stdout.contains("livepatch relocations:\n  (none)"),
        "{stdout}"
    );
    assert!(stdout.contains("livepatch: Y"), "{stdout}");
}
