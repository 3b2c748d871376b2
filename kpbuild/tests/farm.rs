//! `kpbuild farm targets`: a targets file of two built trees (fake ones,
//! so that no apt query or kernel is needed) and a series with a variant,
//! printed as text and JSON; bad input exits 1 naming the file and the key
//! or file at fault, and writes nothing.

#![allow(missing_docs)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testbed::scratch::Scratch;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn kpbuild(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn patch(file: &str, line: &str) -> String {
    format!(
        "From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] fix {file} (CVE-2026-4242)\n\n---\n\
         --- a/{file}\n+++ b/{file}\n@@ -1 +1 @@\n-old\n+{line}\n"
    )
}

/// Two fake built trees (6.1.99, 6.12.117), a targets file naming them,
/// a series of two fixes, the second with a 6.1 variant and a check.
fn farm(s: &Scratch) {
    for (name, patchlevel, sublevel) in [("old", 1, 99), ("new", 12, 117)] {
        s.write(
            &format!("{name}/src/Makefile"),
            format!("VERSION = 6\nPATCHLEVEL = {patchlevel}\nSUBLEVEL = {sublevel}\n"),
        );
        s.dir(&format!("{name}/src/kernel"));
        s.write(&format!("{name}/build/.config"), "CONFIG_LIVEPATCH=y\n");
    }
    s.write(
        "targets.toml",
        "[[target]]\nname = \"old\"\ntree = { src = \"old/src\", build = \"old/build\" }\n\n\
         [[target]]\nname = \"new\"\ntree = { src = \"new/src\", build = \"new/build\" }\n",
    );
    s.write("series/0001-cmdline.patch", patch("fs/proc/cmdline.c", "a"));
    s.write("series/0002-meminfo.patch", patch("fs/proc/meminfo.c", "b"));
    s.write(
        "series/0002-meminfo.d/6.1.patch",
        patch("fs/proc/meminfo.c", "c"),
    );
    s.write("series/0002-meminfo.check", "true\n");
}

#[test]
fn farm_targets_shows_each_targets_texts() {
    let s = Scratch::new("farm-targets");
    farm(&s);
    let dir = s.root();
    let run = kpbuild(
        dir,
        &[
            "farm",
            "targets",
            "--targets",
            "targets.toml",
            "--series",
            "series",
        ],
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    for needle in [
        "old: tree ",
        ", kernel 6.1.99",
        "new: tree ",
        ", kernel 6.12.117",
        "0002-meminfo  0002-meminfo.d/6.1.patch, check 0002-meminfo.check",
        "0002-meminfo  0002-meminfo.patch, check 0002-meminfo.check",
        "2 targets, 2 fixes",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let run = kpbuild(
        dir,
        &[
            "farm",
            "targets",
            "--targets",
            "targets.toml",
            "--series",
            "series",
            "--json",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["outcome"], "ok");
    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    let (old, new) = (&targets[0], &targets[1]);
    assert_eq!(
        (&old["name"], &old["kernel_version"]),
        (&"old".into(), &"6.1.99".into())
    );
    assert_eq!(old["kernel"]["kind"], "tree");
    let root = dir.canonicalize().unwrap();
    assert_eq!(
        old["kernel"]["build"],
        root.join("old/build").display().to_string()
    );
    let fixes = |t: &Value| t["series"]["fixes"].as_array().unwrap().clone();
    assert_eq!(fixes(old)[1]["variant"], "6.1");
    assert_eq!(fixes(old)[1]["text"], "series/0002-meminfo.d/6.1.patch");
    assert_eq!(fixes(new)[1]["variant"], Value::Null);
    assert_eq!(fixes(new)[0]["id"], "0001-cmdline");
    assert_eq!(fixes(new)[0]["cves"][0], "CVE-2026-4242");
    assert_eq!(
        fixes(new)[0]["title"],
        "fix fs/proc/cmdline.c (CVE-2026-4242)"
    );
    // The unchanged first fix is the same text; the series hashes differ.
    assert_eq!(fixes(old)[0]["sha256"], fixes(new)[0]["sha256"]);
    assert_ne!(old["series"]["sha256"], new["series"]["sha256"]);
    assert_eq!(v["series"]["fixes"][1]["variants"][0]["version"], "6.1");
    // Without --series: only the targets.
    let run = kpbuild(dir, &["farm", "targets", "--targets", "targets.toml"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("2 targets\n") && !run.stdout.contains("series"),
        "{}",
        run.stdout
    );
}

#[test]
fn farm_targets_bad_input_exits_1_naming_what() {
    let s = Scratch::new("farm-targets-bad");
    farm(&s);
    let dir = s.root();
    let before = std::fs::read_dir(dir).unwrap().count();
    s.write(
        "unknown.toml",
        "[[target]]\nname = \"x\"\ntree = { src = \"old/src\", bulid = \"old/build\" }\n",
    );
    s.write("series/notes.txt", "not a fix");
    for (args, needles) in [
        (
            &["--targets", "unknown.toml"][..],
            &["unknown.toml", "bulid", "line 3"][..],
        ),
        (
            &["--targets", "targets.toml", "--series", "series"],
            &["series/notes.txt", "NNNN-slug.patch"],
        ),
        (&["--targets", "absent.toml"], &["absent.toml"]),
    ] {
        let mut all = vec!["farm", "targets"];
        all.extend_from_slice(args);
        let run = kpbuild(dir, &all);
        let text = format!("{}{}", run.stdout, run.stderr);
        assert_eq!(run.code, Some(1), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
        for n in needles {
            assert!(run.stderr.contains(n), "{args:?}: {n:?} missing: {text}");
        }
        all.push("--json");
        let run = kpbuild(dir, &all);
        assert_eq!(run.code, Some(1));
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v["outcome"], "error");
        assert!(v["message"].as_str().unwrap().contains(needles[0]), "{v}");
    }
    // Nothing was written beside the inputs.
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), before + 1);
}

/// `--apply`: each target's texts tried on its source; the matrix shows
/// each outcome, and a fix that applies to no target is exit 1 naming it.
#[test]
fn farm_targets_apply_says_what_applies_where() {
    if testbed::oracle::tool("patch", "patch").is_none() {
        return;
    }
    let s = Scratch::new("farm-targets-apply");
    farm(&s);
    // Both sources have the lines 0001 and 0002 change, except the old
    // tree's meminfo.c, where 0002's 6.1 variant finds another line.
    for tree in ["old", "new"] {
        s.write(&format!("{tree}/src/fs/proc/cmdline.c"), "old\n");
        s.write(&format!("{tree}/src/fs/proc/meminfo.c"), "old\n");
    }
    s.write("old/src/fs/proc/meminfo.c", "c\n");
    let dir = s.root();
    let args = [
        "farm",
        "targets",
        "--targets",
        "targets.toml",
        "--series",
        "series",
        "--apply",
    ];
    let run = kpbuild(dir, &args);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "{text}");
    assert!(
        run.stdout
            .contains("0002-meminfo  0002-meminfo.patch, check 0002-meminfo.check: applies"),
        "{text}"
    );
    assert!(
        run.stdout.contains("0002-meminfo  0002-meminfo.d/6.1.patch, check 0002-meminfo.check: does not apply to this source"),
        "{text}"
    );
    assert_eq!(
        run.stdout.matches("0001-cmdline.patch: applies").count(),
        2,
        "{text}"
    );
    // A third fix that applies to neither source.
    s.write("series/0003-nowhere.patch", patch("fs/proc/stat.c", "d"));
    let mut json = args.to_vec();
    json.push("--json");
    let run = kpbuild(dir, &json);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["outcome"], "error");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("series/0003-nowhere.patch: applies to no target's source"),
        "{message}"
    );
    let applies = &v["targets"][1]["applies"];
    assert_eq!(applies[0]["outcome"], "applies", "{applies}");
    assert_eq!(applies[2]["outcome"], "does-not-apply", "{applies}");
    assert!(run.stderr.contains("0003-nowhere.patch"), "{}", run.stderr);
    // Nothing written into the sources.
    assert_eq!(
        std::fs::read_to_string(s.path("new/src/fs/proc/cmdline.c")).unwrap(),
        "old\n"
    );
}

/// `farm run` without a kernel: targets that cannot be built are each a
/// build error in the report (exit 1), an unknown `--only` or a foreign
/// directory where a target's output goes is exit 1 touching nothing.
#[test]
fn farm_run_reports_each_target_and_refuses_bad_input() {
    if testbed::oracle::tool("patch", "patch").is_none() {
        return;
    }
    let s = Scratch::new("farm-run");
    farm(&s);
    for tree in ["old", "new"] {
        s.write(&format!("{tree}/src/fs/proc/cmdline.c"), "old\n");
        s.write(&format!("{tree}/src/fs/proc/meminfo.c"), "old\n");
    }
    s.write("old/src/fs/proc/meminfo.c", "c\n");
    let dir = s.root();
    let base = [
        "farm",
        "run",
        "--targets",
        "targets.toml",
        "--series",
        "series",
        "--artifact",
        "art",
    ];
    let mut only = base.to_vec();
    only.extend(["--only", "nosuch"]);
    let run = kpbuild(dir, &only);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no target named \"nosuch\"; the targets are old, new"),
        "{}",
        run.stderr
    );
    assert!(!s.path("art").exists());

    let mut json = base.to_vec();
    json.push("--json");
    let run = kpbuild(dir, &json);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["passed"], false);
    for (i, name) in ["old", "new"].iter().enumerate() {
        let t = &v["targets"][i];
        assert_eq!(
            (&t["name"], &t["outcome"]),
            (&(*name).into(), &"build-error".into()),
            "{t}"
        );
        assert!(t["reason"].as_str().unwrap().contains("vmlinux"), "{t}");
        assert_eq!(t["fixes"][0]["outcome"], "build-error", "{t}");
        let written: Value = serde_json::from_slice(
            &std::fs::read(s.path(&format!("art/{name}/target.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(&written, t);
    }
    // The new tree's meminfo.c has the top-level text's line, the old
    // one's not the 6.1 variant's: left out there.
    assert_eq!(v["targets"][0]["fixes"][1]["outcome"], "does-not-apply");
    let report: Value =
        serde_json::from_slice(&std::fs::read(s.path("art/farm-report.json")).unwrap()).unwrap();
    assert_eq!(report, v);

    // A directory that is not a target's output is never removed.
    std::fs::remove_file(s.path("art/old/target.json")).unwrap();
    s.write("art/old/mine.txt", "keep me");
    let run = kpbuild(dir, &base);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("art/old: exists and is not a farm target's output"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(s.path("art/old/mine.txt")).unwrap(),
        "keep me"
    );
}
