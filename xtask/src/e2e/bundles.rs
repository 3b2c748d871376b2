//! Signed cumulative bundles on the module-signing test kernel.

use super::{Ctx, Replace, build_args, read_file, signing_fixture};
use testbed::guest::GuestScript;
use testbed::vm::Vm;

/// `kpbuild` (the binary, as users run it) with `SOURCE_DATE_EPOCH`:
/// (exit code, stdout, stderr).
pub(super) fn kpbuild_cli(
    args: &[&std::ffi::OsStr],
    epoch: u64,
) -> Result<(i32, String, String), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(crate::repo_root())
        .args(["run", "--quiet", "--package", "kpbuild", "--"])
        .args(args)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .output()
        .map_err(|e| format!("cargo run kpbuild: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// [`kpbuild_cli`] that must succeed.
pub(super) fn kpbuild_ok(args: &[&std::ffi::OsStr], epoch: u64) -> Result<String, String> {
    let (code, stdout, stderr) = kpbuild_cli(args, epoch)?;
    if code != 0 {
        return Err(format!("kpbuild {args:?} exited {code}: {stderr}"));
    }
    Ok(stdout)
}

/// The bytes `od -An -tx1 -v` printed.
fn od_bytes(lines: &[String]) -> Result<Vec<u8>, String> {
    lines
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|h| u8::from_str_radix(h, 16).map_err(|e| format!("od output {h:?}: {e}")))
        .collect()
}

/// Signed cumulative bundles on the module-signing test kernel
/// (`MODULE_SIG_FORCE`): sequence 1 holds one fix, sequence 2 that fix and
/// a second one (a git-format patch naming a CVE), built twice into
/// byte-identical bundles. Both are published to a repository; the manifest
/// and the index verify with `minisign -V`. In one boot, the modules taken
/// from the verified bundles load (signed), the second atomically replaces
/// the first, and both fixes' behaviour shows, then goes away. The guest's
/// `/sys/kernel/notes` then verifies as the bundle's kernel, while the test
/// kernel's build-id does not; a rollback to sequence 1 is recorded.
pub(super) fn bundle_signed_cumulative(_ctx: &Ctx) -> Result<(), String> {
    use std::ffi::OsStr;
    let kb = crate::signing_kernel()?;
    let work = std::env::temp_dir().join(format!("kpbuild-e2e-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let keys = crate::repo_root().join("fixtures/bundle");
    let (key, pubkey) = (keys.join("test.key"), keys.join("test.pub"));
    let config = kb.build.join(".config");
    let vmlinux = kb.vmlinux();
    let sequences: [(&str, &[&str]); 2] = [
        ("kpb_bundle_1", &["proc-cmdline-string.patch"]),
        (
            "kpb_bundle_2",
            &["proc-cmdline-string.patch", "testbed-fix-value-cve.patch"],
        ),
    ];
    let build = |module: &str, patches: &[&str], out: &std::path::Path| {
        let mut args = build_args(&kb, module, patches, out);
        args.signing = Some(kpbuild::build::Signing {
            key: signing_fixture("test-key.pem"),
            cert: signing_fixture("test-cert.pem"),
        });
        let (code, result) = crate::kpbuild_build(&args);
        result
            .map(|_| ())
            .map_err(|why| format!("kpbuild build {module} exited {code}: {why}"))
    };
    let create =
        |out: &std::path::Path, bundle: &std::path::Path, prev: Option<&std::path::Path>, epoch| {
            let mut args: Vec<&OsStr> = vec![
                "bundle".as_ref(),
                "create".as_ref(),
                "--build-out".as_ref(),
                out.as_os_str(),
                "--vmlinux".as_ref(),
                vmlinux.as_os_str(),
                "--config".as_ref(),
                config.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
                "--out".as_ref(),
                bundle.as_os_str(),
            ];
            if let Some(p) = prev {
                args.extend([
                    "--predecessor".as_ref(),
                    p.as_os_str(),
                    "--pubkey".as_ref(),
                    pubkey.as_os_str(),
                ]);
            }
            kpbuild_ok(&args, epoch)
        };
    let epoch = 1_790_000_000;
    let b1 = work.join("seq1.kpb");
    let out1 = work.join("out1");
    build(sequences[0].0, sequences[0].1, &out1)?;
    create(&out1, &b1, None, epoch)?;
    let mut seconds = Vec::new();
    for run in ["a", "b"] {
        let out = work.join(format!("out2{run}"));
        build(sequences[1].0, sequences[1].1, &out)?;
        let b = work.join(format!("seq2{run}.kpb"));
        create(&out, &b, Some(&b1), epoch + 100)?;
        seconds.push(read_file(&b)?);
    }
    if seconds[0] != seconds[1] {
        return Err(
            "two builds and bundles of the same inputs, key and SOURCE_DATE_EPOCH differ".into(),
        );
    }
    let b2 = work.join("seq2a.kpb");
    eprintln!(
        "  > reproducible: two sequence-2 bundles byte-identical ({} bytes)",
        seconds[0].len()
    );

    // The manifest and its signature, checked by the external tool.
    let external = work.join("external");
    std::fs::create_dir_all(&external).map_err(|e| e.to_string())?;
    kpbuild::process::run(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&b2)
            .arg("-C")
            .arg(&external)
            .args(["manifest.json", "manifest.json.minisig"]),
    )
    .map_err(|e| e.to_string())?;
    kpbuild::process::run(
        std::process::Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(&pubkey)
            .arg("-m")
            .arg(external.join("manifest.json")),
    )
    .map_err(|e| format!("minisign -V of the manifest: {e}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_file(&external.join("manifest.json"))?)
            .map_err(|e| e.to_string())?;
    let cves = &manifest["patches"][1]["cves"];
    if manifest["sequence"] != 2 || cves != &serde_json::json!(["CVE-2099-0001"]) {
        return Err(format!("unexpected manifest: {manifest:#}"));
    }

    // Publish both; the repository's index names sequence 2.
    let repo = work.join("repo");
    for b in [&b1, &b2] {
        kpbuild_ok(
            &[
                "bundle".as_ref(),
                "publish".as_ref(),
                "--repo".as_ref(),
                repo.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
                "--pubkey".as_ref(),
                pubkey.as_os_str(),
                b.as_os_str(),
            ],
            epoch + 200,
        )?;
    }
    let build_id = manifest["kernel"]["build_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let index_path = repo.join(&build_id).join("index.json");
    let index = |want_latest: u64, want_history: usize| -> Result<(), String> {
        let index: serde_json::Value =
            serde_json::from_slice(&read_file(&index_path)?).map_err(|e| e.to_string())?;
        let history = index["history"].as_array().map_or(0, Vec::len);
        if index["latest"]["sequence"] != want_latest || history != want_history {
            return Err(format!(
                "index: expected latest {want_latest} and {want_history} history records: {index:#}"
            ));
        }
        kpbuild::process::run(
            std::process::Command::new("minisign")
                .arg("-V")
                .arg("-p")
                .arg(&pubkey)
                .arg("-m")
                .arg(&index_path),
        )
        .map(|_| ())
        .map_err(|e| format!("minisign -V of the index: {e}"))
    };
    index(2, 2)?;

    // The modules, taken out of the verified bundles.
    let public = bundle::PublicKey::read(&pubkey).map_err(|e| e.to_string())?;
    let module_of = |path: &std::path::Path, module: &str| -> Result<Vec<u8>, String> {
        let verified = bundle::Bundle::read(&read_file(path)?)
            .and_then(|b| b.verify(&public))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        verified
            .bundle()
            .file(&format!("modules/{module}.ko"))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{}: no module {module}", path.display()))
    };
    let mut script = GuestScript::default();
    script
        .file("/modules/kpb_bundle_1.ko", module_of(&b1, "kpb_bundle_1")?)
        .file("/modules/kpb_bundle_2.ko", module_of(&b2, "kpb_bundle_2")?);
    script
        .check("notes", "the running kernel's notes", "od -An -tx1 -v /sys/kernel/notes")
        .check("before", "original behaviour", "expect_contains 'cat /proc/cmdline' console=ttyS0 && expect_contains 'cat /proc/kpbuild_fix' fix=none");
    // Signed modules: the MODULE_SIG_FORCE kernel loads them.
    Replace {
        first: "kpb_bundle_1",
        second: "kpb_bundle_2",
        first_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string && expect_contains 'cat /proc/kpbuild_fix' fix=none",
        second_shows: "expect_contains 'cat /proc/cmdline' kpbuild=cmdline-string && expect_contains 'cat /proc/kpbuild_fix' fix=85",
        after: "expect_lacks 'cat /proc/cmdline' kpbuild= && expect_contains 'cat /proc/kpbuild_fix' fix=none",
    }
    .add_to(&mut script);
    let report = Vm::new(&kb.bzimage(), &work.join("vm"))
        .run(&script)
        .map_err(|e| e.to_string())?;
    report.verify(&script)?;

    // The running kernel's notes identify the bundle's kernel.
    let notes = work.join("notes");
    std::fs::write(&notes, od_bytes(report.output("notes"))?).map_err(|e| e.to_string())?;
    let verified = kpbuild_ok(
        &[
            "bundle".as_ref(),
            "verify".as_ref(),
            b2.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
            "--kernel-notes".as_ref(),
            notes.as_os_str(),
        ],
        epoch,
    )?;
    eprintln!(
        "  > verify against the guest's /sys/kernel/notes: {}",
        verified.lines().last().unwrap_or("")
    );
    let other = kimage::notes::gnu_build_id(&read_file(&crate::kernel()?.vmlinux())?)
        .map_err(|e| e.to_string())?;
    let (code, _, stderr) = kpbuild_cli(
        &[
            "bundle".as_ref(),
            "verify".as_ref(),
            b2.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
            "--kernel-build-id".as_ref(),
            other.as_ref(),
        ],
        epoch,
    )?;
    if code != 1 || !stderr.contains(&other) || !stderr.contains(&build_id) {
        return Err(format!(
            "verify against another kernel: exit {code}: {stderr}"
        ));
    }

    // Roll back: recorded, nothing rewritten.
    kpbuild_ok(
        &[
            "bundle".as_ref(),
            "rollback".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
            "--build-id".as_ref(),
            build_id.as_ref(),
            "--sequence".as_ref(),
            "1".as_ref(),
        ],
        epoch + 300,
    )?;
    index(1, 3)?;
    if read_file(&repo.join(&build_id).join("000002.kpb"))? != seconds[0] {
        return Err("the rolled-back bundle was changed or removed".into());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
