//! `kpbuild farm run` (the library behind it) over the test kernel tree: a
//! series of two fixes, one with a check script, is built and tested in one
//! boot and its bundle published (sequence 1); the same series again is
//! unchanged (no build, no boot, nothing published); a third fix that
//! applies nowhere stops the farm before any build, and with `--only` is
//! "does not apply" beside the tested ones, a changed series whose bundle
//! (sequence 2) has sequence 1 as predecessor; a check that expects the
//! unpatched kernel makes the target a vmtest failure and publishes
//! nothing. The bundles verify with `kpbuild bundle verify` and
//! `minisign -V`. Three boots in all. A second case runs a farm over three
//! targets, reruns it and revises a fix ([`farm_three_targets`]).

use super::Ctx;
use crate::write_file as write;
use kpbuild::build::Progress;
use kpbuild::farm::run::{FarmReport, Outcome, RunRequest, run};
use std::path::Path;

/// The `/proc/cmdline` fix with its check script, as fix 0001 of `series`.
pub(super) fn cmdline_fix(series: &Path) -> Result<(), String> {
    copy_fixture(
        "proc-cmdline-string.patch",
        &series.join("0001-cmdline.patch"),
    )?;
    write(
        &series.join("0001-cmdline.check"),
        "grep -q kpbuild=cmdline-string /proc/cmdline\n",
    )
}

fn copy_fixture(name: &str, to: &Path) -> Result<(), String> {
    let from = crate::repo_root().join("fixtures/patches").join(name);
    let text = std::fs::read_to_string(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    write(to, &text)
}

fn request(dir: &Path, only: Option<&str>) -> RunRequest {
    RunRequest {
        targets: dir.join("targets.toml"),
        series: dir.join("series"),
        artifact: dir.join("artifact"),
        only: only.map(String::from),
        name: "kpb_farm".into(),
        progress: Progress::Quiet,
        publish: Some(crate::test_channel(dir.join("repo"), "test")),
        jobs: 2,
    }
}

/// Each target's published (or latest) bundle: (sequence, predecessor).
fn bundles(r: &FarmReport) -> Vec<Option<(u64, Option<u64>)>> {
    r.targets
        .iter()
        .map(|t| t.bundle.as_ref().map(|b| (b.sequence, b.predecessor)))
        .collect()
}

/// Each target's and each fix's outcome, by name.
fn outcomes(r: &FarmReport) -> Vec<(String, Outcome, Vec<Outcome>)> {
    r.targets
        .iter()
        .map(|t| {
            (
                t.target.name.clone(),
                t.outcome,
                t.fixes.iter().map(|f| f.outcome).collect(),
            )
        })
        .collect()
}

pub(super) fn farm_run_tree(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("farm");
    let _ = std::fs::remove_dir_all(&dir);
    let (src, build) = (ctx.kernel.src.display(), ctx.kernel.build.display());
    write(
        &dir.join("targets.toml"),
        &format!(
            "[[target]]\nname = \"test\"\ntree = {{ src = \"{src}\", build = \"{build}\" }}\n"
        ),
    )?;
    let series = dir.join("series");
    cmdline_fix(&series)?;
    // The test kernel (6.12) gets 0002's variant; its bundle names the
    // fix's own id, not the variant's file stem.
    write(
        &series.join("0002-counter.patch"),
        "Subject: testbed: count the calls\n\n--- a/fs/proc/kpbuild_testbed.c\n\
         +++ b/fs/proc/kpbuild_testbed.c\n@@ -1 +1 @@\n-an older source\n+x\n",
    )?;
    copy_fixture(
        "testbed-counter.patch",
        &series.join("0002-counter.d/6.12.patch"),
    )?;

    let report = run(&request(&dir, None)).map_err(|e| e.to_string())?;
    let want = vec![(
        "test".to_string(),
        Outcome::Tested,
        vec![Outcome::Tested; 2],
    )];
    if !report.passed || outcomes(&report) != want {
        return Err(format!("farm run: {report:#?}"));
    }
    let t = &report.targets[0];
    let (Some(apply), Some(log)) = (t.apply_latency_ms, &t.serial_log) else {
        return Err(format!("farm run: no latency or log: {t:#?}"));
    };
    let serial = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    if !serial.contains("farm check: 0001-cmdline") {
        return Err(format!("{}: the check did not run", log.display()));
    }
    let artifact = dir.join("artifact");
    let module = format!("test/build/kpb_farm_{}.ko", &t.series_sha256[..8]);
    for file in ["farm-report.json", "test/target.json", &module] {
        if !artifact.join(file).is_file() {
            return Err(format!("farm run wrote no {file}"));
        }
    }
    let build_s = t.build_seconds.unwrap_or_default();
    eprintln!("  > farm run: build {build_s:.1} s, apply latency {apply:.0} ms");
    if bundles(&report) != [Some((1, None))] {
        return Err(format!("farm run published: {:?}", bundles(&report)));
    }
    let first = t.bundle.clone().expect("checked").path;
    check_html(&artifact)?;

    // The same series again: unchanged, nothing built or published.
    let report = run(&request(&dir, None)).map_err(|e| e.to_string())?;
    let want = vec![(
        "test".to_string(),
        Outcome::Unchanged,
        vec![Outcome::Unchanged; 2],
    )];
    let t = &report.targets[0];
    if !report.passed
        || outcomes(&report) != want
        || bundles(&report) != [Some((1, None))]
        || t.build_seconds.is_some()
    {
        return Err(format!("farm run of an unchanged series: {report:#?}"));
    }
    let build_id = first
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stored = dir.join("repo/test").join(&build_id);
    if stored.join("000002.kpb").exists() {
        return Err("an unchanged series published a bundle".into());
    }

    // A fix that applies to no target's source: an error before any build.
    write(
        &series.join("0003-nowhere.patch"),
        "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-no such line\n+x\n",
    )?;
    match run(&request(&dir, None)) {
        Err(e)
            if e.to_string()
                .contains("0003-nowhere.patch: applies to no target's source") => {}
        other => return Err(format!("a fix that applies nowhere: {other:?}")),
    }
    // One target alone: that fix is left out.
    let report = run(&request(&dir, Some("test"))).map_err(|e| e.to_string())?;
    let fixes = vec![Outcome::Tested, Outcome::Tested, Outcome::DoesNotApply];
    if !report.passed || outcomes(&report) != vec![("test".into(), Outcome::Tested, fixes)] {
        return Err(format!("farm run --only: {report:#?}"));
    }
    // The series changed for this target: sequence 2 follows sequence 1.
    if bundles(&report) != [Some((2, Some(1)))] {
        return Err(format!(
            "a changed series published: {:?}",
            bundles(&report)
        ));
    }
    verify_published(
        &dir,
        &stored,
        &["000001.kpb", "000002.kpb"],
        &[
            ("0001-cmdline", "changes fs/proc/cmdline.c"),
            ("0002-counter", "testbed: count the calls"),
        ],
    )?;

    // A check that expects the unpatched kernel fails the target.
    write(
        &series.join("0001-cmdline.check"),
        "! grep -q kpbuild=cmdline-string /proc/cmdline\n",
    )?;
    let report = run(&request(&dir, Some("test"))).map_err(|e| e.to_string())?;
    let t = &report.targets[0];
    let failed = t.reason.as_deref().unwrap_or("");
    if report.passed
        || t.outcome != Outcome::VmtestFailure
        || t.fixes[0].outcome != Outcome::VmtestFailure
    {
        return Err(format!("farm run with a failing check: {report:#?}"));
    }
    if !failed.contains("check") {
        return Err(format!("farm run with a failing check: reason {failed:?}"));
    }
    // Nothing is published for a target that failed.
    if t.bundle.is_some() || stored.join("000003.kpb").exists() {
        return Err(format!("a failed target published: {:?}", t.bundle));
    }
    Ok(())
}

/// `farm-report.html`: the table, a cell linking to the guest's log.
fn check_html(artifact: &Path) -> Result<(), String> {
    let path = artifact.join("farm-report.html");
    let html = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for want in [
        "<th title=\"",
        ">0001-cmdline</th>",
        "<td class=\"tested\"><a href=\"test/vmtest/serial.log\">tested</a>",
        "sequence 1",
    ] {
        if !html.contains(want) {
            return Err(format!("{}: no {want:?} in\n{html}", path.display()));
        }
    }
    if html.contains("http:") || html.contains("https:") || html.contains("<script") {
        return Err(format!("{}: not self-contained", path.display()));
    }
    if !artifact.join("test/build.log").is_file() {
        return Err("farm run wrote no test/build.log".into());
    }
    Ok(())
}

/// The published bundles verify with `kpbuild bundle verify`, their
/// manifests and the channel's index with `minisign -V`; the last one's
/// predecessor is the one before it, and its patches are `ids` (id, title).
pub(super) fn verify_published(
    dir: &Path,
    stored: &Path,
    files: &[&str],
    ids: &[(&str, &str)],
) -> Result<(), String> {
    use std::ffi::OsStr;
    let pubkey = crate::repo_root().join("fixtures/bundle/test.pub");
    let mut sha256 = Vec::new();
    let mut last_manifest = serde_json::Value::Null;
    for file in files {
        let path = stored.join(file);
        let out = super::bundles::kpbuild_ok(
            &[
                OsStr::new("bundle"),
                OsStr::new("verify"),
                path.as_os_str(),
                OsStr::new("--pubkey"),
                pubkey.as_os_str(),
                OsStr::new("--json"),
            ],
            1_700_000_000,
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        if v["verified"] != true {
            return Err(format!("{}: {v:#}", path.display()));
        }
        sha256.push((v["sha256"].clone(), v["manifest"]["predecessor"].clone()));
        last_manifest = v["manifest"].clone();
    }
    if let [.., (before, _), (_, pred)] = sha256.as_slice()
        && pred["sha256"] != *before
    {
        return Err(format!("predecessor {pred} is not {before}"));
    }
    let manifest = &last_manifest;
    let patches: Vec<(&str, &str)> = manifest["patches"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["id"].as_str().unwrap_or_default(),
                        p["title"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if patches[..] != ids[..] {
        return Err(format!("published patches {patches:?}, expected {ids:?}"));
    }
    let Some(minisign) = testbed::oracle::tool("minisign", "minisign") else {
        return Ok(());
    };
    let last = stored.join(files[files.len() - 1]);
    let external = dir.join("external");
    std::fs::create_dir_all(&external).map_err(|e| e.to_string())?;
    kpbuild::process::run(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&last)
            .arg("-C")
            .arg(&external)
            .args(["manifest.json", "manifest.json.minisig"]),
    )
    .map_err(|e| e.to_string())?;
    for signed in [external.join("manifest.json"), stored.join("index.json")] {
        kpbuild::process::run(
            std::process::Command::new(&minisign)
                .arg("-V")
                .arg("-p")
                .arg(&pubkey)
                .arg("-m")
                .arg(&signed),
        )
        .map_err(|e| format!("minisign -V {}: {e}", signed.display()))?;
    }
    Ok(())
}

/// The targets file of the three-target farm: the newest and an older
/// Debian 6.12 cloud kernel, and the test kernel tree.
fn three_targets(ctx: &Ctx, dir: &Path, newest: &str, older: &str) -> Result<(), String> {
    let (src, build) = (ctx.kernel.src.display(), ctx.kernel.build.display());
    write(
        &dir.join("targets.toml"),
        &format!(
            "[[target]]\nname = \"newest\"\ndebian = \"{newest}\"\n\n\
             [[target]]\nname = \"older\"\ndebian = \"{older}\"\n\n\
             [[target]]\nname = \"test\"\ntree = {{ src = \"{src}\", build = \"{build}\" }}\n"
        ),
    )
}

/// The series: the cmdline fix, and a `uname -m` fix whose older kernel
/// gets its own text (`0002-uname.d/VERSION.patch`, the hunk placed by its
/// line in that source), each with a check; `machine` is what the uname
/// fix makes `uname -m` say.
fn two_fix_series(series: &Path, older_version: &str, machine: &str) -> Result<(), String> {
    cmdline_fix(series)?;
    let from = crate::repo_root().join("fixtures/patches/syscall-newuname-body.patch");
    let text = std::fs::read_to_string(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    let text = text.replace("\"kpbody\"", &format!("\"{machine}\""));
    write(&series.join("0002-uname.patch"), &text)?;
    let variant = text.replace("@@ -1322,6 +1322,7 @@", "@@ -1318,6 +1318,7 @@");
    if variant == text {
        return Err(format!("{}: its hunk header moved", from.display()));
    }
    write(
        &series.join(format!("0002-uname.d/{older_version}.patch")),
        &variant,
    )?;
    write(
        &series.join("0002-uname.check"),
        &format!("test \"$(uname -m)\" = {machine}\n"),
    )
}

/// A published bundle's module: (name, bytes), from the verified bundle.
fn bundle_module(path: &Path) -> Result<(String, Vec<u8>), String> {
    let public = bundle::PublicKey::read(&crate::repo_root().join("fixtures/bundle/test.pub"))
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let verified = bundle::Bundle::read(&bytes)
        .and_then(|b| b.verify(&public))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let m = &verified.manifest().modules[0];
    let data = verified
        .bundle()
        .file(&m.file)
        .ok_or_else(|| format!("{}: no {}", path.display(), m.file))?;
    Ok((m.livepatch.clone(), data.to_vec()))
}

/// One boot: sequence 1's module, then sequence 2's replacing it.
fn replace_script(first: &Path, second: &Path) -> Result<testbed::guest::GuestScript, String> {
    let (a, a_ko) = bundle_module(first)?;
    let (b, b_ko) = bundle_module(second)?;
    let mut script = testbed::guest::GuestScript::default();
    script
        .file(&format!("/modules/{a}.ko"), a_ko)
        .file(&format!("/modules/{b}.ko"), b_ko);
    script.check(
        "before",
        "original behaviour",
        "expect_lacks 'cat /proc/cmdline' kpbuild= && expect_lacks 'uname -m' kpbod",
    );
    super::Replace {
        first: &a,
        second: &b,
        first_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string && test \"$(uname -m)\" = kpbody",
        second_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string && test \"$(uname -m)\" = kpbod2",
        after: "expect_lacks 'cat /proc/cmdline' kpbuild= && expect_lacks 'uname -m' kpbod",
    }
    .add_to(&mut script);
    Ok(script)
}

/// A farm over three targets (the newest and an older Debian 6.12 cloud
/// kernel, the test kernel tree) and two fixes, one with a text of its own
/// for the older kernel: all built, tested and published as sequence 1;
/// again: all unchanged, nothing built; one fix revised: every target
/// rebuilt and published as sequence 2 with sequence 1 as predecessor, and
/// in the test kernel and the newest Debian kernel sequence 2's module
/// atomically replaces sequence 1's in one boot. Eight boots.
pub(super) fn farm_three_targets(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("farm3");
    let _ = std::fs::remove_dir_all(&dir);
    let newest = crate::debian_release()?;
    let (older, _) = crate::debian_other_releases()?;
    let older_version = older
        .split(['+', '-'])
        .next()
        .unwrap_or_default()
        .to_string();
    three_targets(ctx, &dir, &newest, &older)?;
    let series = dir.join("series");
    two_fix_series(&series, &older_version, "kpbody")?;
    let names = ["newest", "older", "test"];

    let report = run(&request(&dir, None)).map_err(|e| e.to_string())?;
    let tested: Vec<_> = names
        .iter()
        .map(|n| (n.to_string(), Outcome::Tested, vec![Outcome::Tested; 2]))
        .collect();
    if !report.passed || outcomes(&report) != tested || bundles(&report) != [Some((1, None)); 3] {
        return Err(format!("a farm of three targets: {report:#?}"));
    }
    let variant = format!("0002-uname.d/{older_version}.patch");
    let texts: Vec<bool> = report
        .targets
        .iter()
        .map(|t| t.fixes[1].text.ends_with(&variant))
        .collect();
    if texts != [false, true, false] {
        return Err(format!("the older kernel's text {variant}: {report:#?}"));
    }
    let ids = [
        ("0001-cmdline", "changes fs/proc/cmdline.c"),
        ("0002-uname", "changes kernel/sys.c"),
    ];
    let stored: Vec<std::path::PathBuf> = report
        .targets
        .iter()
        .map(|t| {
            let b = t.bundle.as_ref().expect("checked");
            b.path.parent().expect("a build-id directory").to_path_buf()
        })
        .collect();
    for s in &stored {
        verify_published(&dir, s, &["000001.kpb"], &ids)?;
    }
    for t in &report.targets {
        eprintln!(
            "  > farm: {}: build {:.1} s, vmtest {:.1} s, apply latency {:.0} ms",
            t.target.name,
            t.build_seconds.unwrap_or_default(),
            t.vmtest_seconds.unwrap_or_default(),
            t.apply_latency_ms.unwrap_or_default()
        );
    }

    // Again: every target unchanged, nothing built, booted or published.
    let report = run(&request(&dir, None)).map_err(|e| e.to_string())?;
    let unchanged: Vec<_> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Outcome::Unchanged,
                vec![Outcome::Unchanged; 2],
            )
        })
        .collect();
    if !report.passed
        || outcomes(&report) != unchanged
        || report.targets.iter().any(|t| t.build_seconds.is_some())
    {
        return Err(format!("the same farm again: {report:#?}"));
    }

    // The uname fix revised (both its texts and its check).
    std::fs::remove_dir_all(&series).map_err(|e| e.to_string())?;
    two_fix_series(&series, &older_version, "kpbod2")?;
    let report = run(&request(&dir, None)).map_err(|e| e.to_string())?;
    if !report.passed || outcomes(&report) != tested || bundles(&report) != [Some((2, Some(1))); 3]
    {
        return Err(format!("a revised fix: {report:#?}"));
    }
    for s in &stored {
        verify_published(&dir, s, &["000001.kpb", "000002.kpb"], &ids)?;
    }
    let (tree, debian) = (&stored[2], &stored[0]);
    let script = replace_script(&tree.join("000001.kpb"), &tree.join("000002.kpb"))?;
    ctx.boot("farm3-replace", &script)?;
    let script = replace_script(&debian.join("000001.kpb"), &debian.join("000002.kpb"))?;
    super::debian::boot_debian(ctx, &newest, "farm3-debian-replace", &script)
}
