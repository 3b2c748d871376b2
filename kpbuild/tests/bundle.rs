//! `kpbuild bundle`: create → verify → inspect → publish → rollback on a
//! build output, vmlinux and module made here, and every bad input exiting
//! 1 with nothing written.

#![allow(missing_docs)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

const RELEASE: &str = "6.12.0-test";
const BUILD_ID: &str = "5ea1ed0fb00c1d00d1ab01ca5eba11ad0b0e0f17";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

use testbed::scratch::Scratch;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(&self, code: i32, needles: &[&str]) -> &Self {
        let all = format!("{}{}", self.stdout, self.stderr);
        assert_eq!(self.code, Some(code), "wrong exit code:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
        for n in needles {
            assert!(all.contains(n), "output lacks {n:?}:\n{all}");
        }
        self
    }
}

fn kpbuild<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [name.len() as u32, desc.len() as u32, ty] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn elf(sections: &[(&[u8], object::SectionKind, &[u8])]) -> Vec<u8> {
    let mut obj = object::write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    for (name, kind, data) in sections {
        let s = obj.add_section(Vec::new(), name.to_vec(), *kind);
        obj.append_section_data(s, data, 4);
    }
    obj.write().unwrap()
}

/// A vmlinux-shaped ELF: `.notes` with the build-id, `.rodata` with the banner.
fn vmlinux(build_id: &str, release: &str) -> Vec<u8> {
    let banner = format!("\0Linux version {release} (kpbuild@test) (gcc 12) #1 SMP\n\0");
    elf(&[
        (
            b".notes",
            object::SectionKind::Note,
            &note(b"GNU\0", 3, &hex_bytes(build_id)),
        ),
        (
            b".rodata",
            object::SectionKind::ReadOnlyData,
            banner.as_bytes(),
        ),
    ])
}

/// A module-shaped ELF with `.modinfo`.
fn module(release: &str) -> Vec<u8> {
    let info = format!(
        "license=GPL\0livepatch=Y\0name=livepatch_fix\0vermagic={release} SMP preempt mod_unload \0"
    );
    elf(&[(
        b".modinfo",
        object::SectionKind::ReadOnlyData,
        info.as_bytes(),
    )])
}

fn sha256(data: &[u8]) -> String {
    bundle::sha256_hex(data)
}

const PATCH_1: &str = "From 1 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] proc: fix the cmdline\n\n\
    Fixes CVE-2026-11111.\n---\ndiff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c\n";
const PATCH_2: &str = "Subject: [PATCH 2/2] proc: second fix\n\nCVE-2026-22222\n---\n";

/// The inputs of `bundle create`: a build output with `patches` (file
/// name, text), a signed (or not) module, vmlinux and .config.
struct Inputs {
    out: PathBuf,
    vmlinux: PathBuf,
    config: PathBuf,
}

fn inputs(s: &Scratch, dir: &str, patches: &[(&str, &str)], release: &str, sign: bool) -> Inputs {
    let out = s.root().join(dir);
    std::fs::create_dir_all(&out).unwrap();
    let ko = s.write(&format!("{dir}/livepatch_fix.ko"), module(release));
    if sign {
        kpbuild(&[
            OsStr::new("sign"),
            "--key".as_ref(),
            fixture("signing/test-key.pem").as_os_str(),
            "--cert".as_ref(),
            fixture("signing/test-cert.pem").as_os_str(),
            ko.as_os_str(),
        ])
        .expect(0, &[]);
    }
    let ko_bytes = std::fs::read(&ko).unwrap();
    let listed: Vec<serde_json::Value> = patches
        .iter()
        .map(|(name, text)| {
            let p = s.write(&format!("patches/{name}"), text);
            serde_json::json!({"path": p, "sha256": sha256(text.as_bytes())})
        })
        .collect();
    let report = serde_json::json!({
        "name": "livepatch_fix", "replace": true, "outcome": "patch",
        "inputs": {"patches": listed, "mode": "tree"},
        "module": {"file": "livepatch_fix.ko", "sha256": sha256(&ko_bytes)},
        "timings_s": {"total": 1.25},
    });
    s.write(
        &format!("{dir}/report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    );
    Inputs {
        out,
        vmlinux: s.write("vmlinux", vmlinux(BUILD_ID, RELEASE)),
        config: s.write("config", "CONFIG_LIVEPATCH=y\n"),
    }
}

fn create(i: &Inputs, key: &Path, out: &Path, extra: &[&OsStr]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        "bundle".as_ref(),
        "create".as_ref(),
        "--build-out".as_ref(),
        i.out.as_os_str(),
        "--vmlinux".as_ref(),
        i.vmlinux.as_os_str(),
        "--config".as_ref(),
        i.config.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra);
    kpbuild(&args)
}

/// Files in `dir` other than those named: none may be left by a failed run.
fn leftovers(dir: &Path, known: &[&str]) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !known.contains(&n.as_str()))
        .collect();
    left.sort();
    left
}

#[test]
fn create_verify_inspect_publish_rollback() {
    let s = Scratch::new("happy");
    let key = fixture("bundle/test.key");
    let public = fixture("bundle/test.pub");
    let i = inputs(
        &s,
        "build1",
        &[("0001-proc-fix.patch", PATCH_1)],
        RELEASE,
        true,
    );
    let b1 = s.root().join("b1.kpb");
    create(&i, &key, &b1, &[]).expect(0, &["created", "sequence 1", "1 patch(es)", BUILD_ID]);
    let first = std::fs::read(&b1).unwrap();
    // Reproducible: the same inputs and SOURCE_DATE_EPOCH, the same bytes.
    let again = s.root().join("again.kpb");
    create(&i, &key, &again, &[]).expect(0, &[]);
    assert_eq!(std::fs::read(&again).unwrap(), first);

    let verify = |b: &Path, extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> = vec![
            "bundle".as_ref(),
            "verify".as_ref(),
            b.as_os_str(),
            "--pubkey".as_ref(),
            public.as_os_str(),
        ];
        args.extend(extra);
        kpbuild(&args)
    };
    verify(&b1, &[]).expect(
        0,
        &[
            "signature: good (key F36F2AA053BD9352)",
            "every sha256 matches",
            "kernel: not checked",
            "patches/0001-proc-fix.patch 0001-proc-fix: proc: fix the cmdline [CVE-2026-11111]",
        ],
    );
    verify(&b1, &["--kernel-build-id".as_ref(), BUILD_ID.as_ref()])
        .expect(0, &[&format!("kernel: build-id {BUILD_ID} matches")]);
    let notes = s.write("notes", note(b"GNU\0", 3, &hex_bytes(BUILD_ID)));
    verify(&b1, &["--kernel-notes".as_ref(), notes.as_os_str()]).expect(0, &["matches"]);
    let other = "00".repeat(20);
    verify(&b1, &["--kernel-build-id".as_ref(), other.as_ref()]).expect(
        1,
        &[
            "kpbuild bundle verify: error:",
            "is for kernel 6.12.0-test with build-id 5ea1",
            &other,
        ],
    );
    let run = verify(&b1, &["--json".as_ref()]);
    run.expect(0, &[]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["manifest"]["kernel"]["release"], RELEASE);
    assert_eq!(
        json["manifest"]["modules"][0]["vermagic"],
        "6.12.0-test SMP preempt mod_unload "
    );
    assert_eq!(json["kernel_check"], "not checked");

    let run = kpbuild(&[
        OsStr::new("bundle"),
        "inspect".as_ref(),
        "--json".as_ref(),
        b1.as_os_str(),
    ]);
    run.expect(0, &[]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["signature"], "not checked");
    assert_eq!(json["manifest"]["sequence"], 1);
    kpbuild(&[OsStr::new("bundle"), "inspect".as_ref(), b1.as_os_str()])
        .expect(0, &["signature: not checked", "sequence: 1"]);

    // The second bundle: both patches, on top of the first.
    let i2 = inputs(
        &s,
        "build2",
        &[
            ("0001-proc-fix.patch", PATCH_1),
            ("0002-second.patch", PATCH_2),
        ],
        RELEASE,
        true,
    );
    let b2 = s.root().join("b2.kpb");
    let meta = "0002-second.patch=KP-2:proc: the second fix:CVE-2026-22222,CVE-2026-33333";
    create(
        &i2,
        &key,
        &b2,
        &[
            "--predecessor".as_ref(),
            b1.as_os_str(),
            "--pubkey".as_ref(),
            public.as_os_str(),
            "--patch-meta".as_ref(),
            meta.as_ref(),
        ],
    )
    .expect(0, &["sequence 2", "2 patch(es)"]);
    verify(&b2, &[]).expect(
        0,
        &[
            "predecessor: sequence 1",
            "patches/0002-KP-2.patch KP-2: proc: the second fix [CVE-2026-22222, CVE-2026-33333]",
        ],
    );

    let repo = s.root().join("repo");
    let publish = |b: &Path| {
        kpbuild(&[
            OsStr::new("bundle"),
            "publish".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--pubkey".as_ref(),
            public.as_os_str(),
            b.as_os_str(),
        ])
    };
    publish(&b1).expect(0, &["published build-id", "sequence 1"]);
    publish(&b1).expect(0, &["already published", "nothing changed"]);
    // --json: one object saying the same.
    let run = kpbuild(&[
        OsStr::new("bundle"),
        "publish".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--pubkey".as_ref(),
        public.as_os_str(),
        "--json".as_ref(),
        b1.as_os_str(),
    ]);
    run.expect(0, &[]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["sequence"], 1);
    assert_eq!(json["unchanged"], true);
    assert_eq!(json["build_id"], BUILD_ID);
    publish(&b2).expect(0, &["sequence 2"]);
    let rollback = |seq: &str| {
        kpbuild(&[
            OsStr::new("bundle"),
            "rollback".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--pubkey".as_ref(),
            public.as_os_str(),
            "--build-id".as_ref(),
            BUILD_ID.as_ref(),
            "--sequence".as_ref(),
            seq.as_ref(),
        ])
    };
    rollback("1").expect(
        0,
        &["rolled back", "to sequence 1", "history has 3 records"],
    );
    rollback("1").expect(1, &["cannot roll back to sequence 1: the latest is 1"]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join(BUILD_ID).join("index.json")).unwrap())
            .unwrap();
    assert_eq!(index["latest"]["sequence"], 1);
    assert_eq!(index["history"][2]["action"], "rollback");
    assert_eq!(index["history"][2]["at"], 1_790_000_000);
}

#[test]
fn bad_inputs_exit_1_and_write_nothing() {
    let s = Scratch::new("bad");
    let key = fixture("bundle/test.key");
    let public = fixture("bundle/test.pub");
    let good = inputs(
        &s,
        "good",
        &[("0001-proc-fix.patch", PATCH_1)],
        RELEASE,
        true,
    );
    let b1 = s.root().join("b1.kpb");
    create(&good, &key, &b1, &[]).expect(0, &[]);
    let out_name = "out.kpb";
    let out = s.root().join(out_name);
    let known = [
        "good", "patches", "vmlinux", "config", "b1.kpb", "other", "unsigned", "misc",
    ];
    let check = |run: Run, needles: &[&str]| {
        run.expect(1, needles);
        assert!(!out.exists(), "{out:?} was written");
        assert_eq!(leftovers(s.root(), &known), Vec::<String>::new());
    };

    // A module built for another kernel.
    let other = inputs(
        &s,
        "other",
        &[("0001-proc-fix.patch", PATCH_1)],
        "6.1.0-other",
        true,
    );
    let other = Inputs {
        vmlinux: good.vmlinux.clone(),
        ..other
    };
    check(
        create(&other, &key, &out, &[]),
        &[
            "kpbuild bundle create: error:",
            "module built for 6.1.0-other, vmlinux is 6.12.0-test",
        ],
    );
    // An unsigned module: a warning, not an error.
    let unsigned = inputs(
        &s,
        "unsigned",
        &[("0001-proc-fix.patch", PATCH_1)],
        RELEASE,
        false,
    );
    let tmp_out = s.root().join("misc/unsigned.kpb");
    std::fs::create_dir_all(tmp_out.parent().unwrap()).unwrap();
    create(&unsigned, &key, &tmp_out, &[]).expect(0, &["warning:", "carries no module signature"]);
    std::fs::remove_file(&tmp_out).unwrap();

    // Files that are not what report.json recorded.
    let ko = good.out.join("livepatch_fix.ko");
    let ko_bytes = std::fs::read(&ko).unwrap();
    std::fs::write(&ko, [&ko_bytes[..], b"x"].concat()).unwrap();
    check(
        create(&good, &key, &out, &[]),
        &[
            &ko.display().to_string(),
            "sha256 is",
            "report.json recorded",
        ],
    );
    std::fs::write(&ko, &ko_bytes).unwrap();
    let patch = s.root().join("patches/0001-proc-fix.patch");
    std::fs::write(&patch, format!("{PATCH_1}\n")).unwrap();
    check(
        create(&good, &key, &out, &[]),
        &[&patch.display().to_string(), "sha256 is"],
    );
    std::fs::write(&patch, PATCH_1).unwrap();

    // A vmlinux without a build-id, without a banner, not ELF.
    let vmlinux_bytes = std::fs::read(&good.vmlinux).unwrap();
    let vm = &good.vmlinux;
    let no_id = elf(&[(
        b".rodata",
        object::SectionKind::ReadOnlyData,
        b"Linux version 6.12.0-test (x)",
    )]);
    for (data, why) in [
        (no_id, "no GNU build-id note"),
        (
            elf(&[(
                b".notes",
                object::SectionKind::Note,
                &note(b"GNU\0", 3, &[1, 2]),
            )]),
            "no .rodata section",
        ),
        (b"not an ELF file".to_vec(), "not an ELF file"),
    ] {
        std::fs::write(vm, data).unwrap();
        check(
            create(&good, &key, &out, &[]),
            &[&vm.display().to_string(), why],
        );
    }
    std::fs::write(vm, &vmlinux_bytes).unwrap();

    // Keys of the wrong kind.
    for (k, why) in [
        (
            fixture("signing/test-key.pem"),
            "a PEM file (PRIVATE KEY: RSA), not a minisign key",
        ),
        (
            fixture("signing/ec-key.pem"),
            "a PEM file (PRIVATE KEY: EC)",
        ),
        (
            fixture("bundle/test.pub"),
            "a minisign public key, not a secret key",
        ),
        (fixture("bundle/encrypted.key"), "minisign -G -W"),
    ] {
        check(
            create(&good, &k, &out, &[]),
            &[&k.display().to_string(), why],
        );
    }
    // A predecessor with a patch the new bundle drops.
    let i2 = inputs(&s, "misc", &[("0002-second.patch", PATCH_2)], RELEASE, true);
    check(
        create(
            &i2,
            &key,
            &out,
            &[
                "--predecessor".as_ref(),
                b1.as_os_str(),
                "--pubkey".as_ref(),
                public.as_os_str(),
            ],
        ),
        &[
            "predecessor (sequence 1): patch 1 is 0002-second, but the predecessor has 0001-proc-fix",
        ],
    );
    // A predecessor verified with another key.
    check(
        create(
            &good,
            &key,
            &out,
            &[
                "--predecessor".as_ref(),
                b1.as_os_str(),
                "--pubkey".as_ref(),
                fixture("bundle/other.pub").as_os_str(),
            ],
        ),
        &["signed by key F36F2AA053BD9352, but the public key given is"],
    );

    // verify: wrong key, damaged bundles.
    let verify = |b: &Path, k: &Path| {
        kpbuild(&[
            OsStr::new("bundle"),
            "verify".as_ref(),
            b.as_os_str(),
            "--pubkey".as_ref(),
            k.as_os_str(),
        ])
    };
    verify(&b1, &fixture("bundle/other.pub")).expect(1, &["signed by key F36F2AA053BD9352"]);
    let bytes = std::fs::read(&b1).unwrap();
    let damaged = s.root().join("misc/damaged.kpb");
    for cut in [0, 100, 512, 1500, bytes.len() - 600] {
        std::fs::write(&damaged, &bytes[..cut]).unwrap();
        verify(&damaged, &public).expect(1, &["truncated"]);
    }
    let mut flipped = bytes.clone();
    let pos = bytes.windows(9).position(|w| w == b"proc: fix").unwrap();
    flipped[pos] = b'P';
    std::fs::write(&damaged, &flipped).unwrap();
    verify(&damaged, &public).expect(1, &[&damaged.display().to_string()]);
    kpbuild(&[
        OsStr::new("bundle"),
        "inspect".as_ref(),
        s.root().join("none.kpb").as_os_str(),
    ])
    .expect(1, &["none.kpb"]);

    // publish: another bundle under an existing sequence.
    let repo = s.root().join("misc/repo");
    let publish = |b: &Path| {
        kpbuild(&[
            OsStr::new("bundle"),
            "publish".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--pubkey".as_ref(),
            public.as_os_str(),
            b.as_os_str(),
        ])
    };
    publish(&b1).expect(0, &[]);
    let unsigned_b = s.root().join("misc/u.kpb");
    create(&unsigned, &key, &unsigned_b, &[]).expect(0, &[]);
    publish(&unsigned_b).expect(1, &["sequence 1 already published with different content"]);
}
