//! Module signing: the module-signing test kernel, and reproducible signed builds.

use super::{Ctx, PROC_CMDLINE_STRING, build_args, read_file, signing_fixture};
use std::time::Instant;
use testbed::guest::GuestScript;
use testbed::livepatch::Lifecycle;
use testbed::vm::Vm;

/// The module-signing test kernel (`CONFIG_MODULE_SIG_FORCE`, the test
/// certificate trusted): a module `kpbuild build --sign-key/--sign-cert`
/// makes against that kernel's tree loads and patches; the same module
/// unsigned, signed with a key the kernel does not trust, or with one byte
/// flipped after signing is refused by `insmod`; signed with SHA-512 instead
/// of SHA-256, it loads and patches. One boot.
pub(super) fn signing_kernel_enforces_signatures(_ctx: &Ctx) -> Result<(), String> {
    let start = Instant::now();
    let kb = crate::signing_kernel()?;
    eprintln!(
        "  > signing kernel ready in {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        kb.build.display()
    );
    let work = std::env::temp_dir().join(format!("kpbuild-e2e-signing-{}", std::process::id()));
    let case = &PROC_CMDLINE_STRING;
    let module = "kpb_signed";
    let out = work.join("out");
    let mut args = build_args(&kb, module, case.patches, &out);
    args.signing = Some(kpbuild::build::Signing {
        key: signing_fixture("test-key.pem"),
        cert: signing_fixture("test-cert.pem"),
    });
    let (code, result) = crate::kpbuild_build(&args);
    let report = result.map_err(|why| format!("kpbuild build exited {code}: {why}"))?;
    if report["signature"]["hash"] != "sha256" {
        return Err(format!(
            "report has no sha256 signature: {}",
            report["signature"]
        ));
    }
    let signed = read_file(&out.join(format!("{module}.ko")))?;
    let info = modsign::parse_signature(&signed).ok_or("the built module is not signed")?;
    let signer = info.signer.ok_or("the signature names no signer")?;
    if !signer.issuer.contains("kpbuild test signing key")
        || info.hash != Some(modsign::Hash::Sha256)
    {
        return Err(format!(
            "unexpected signer {signer:?} / hash {:?}",
            info.hash
        ));
    }
    let unsigned = modsign::strip_signature(&signed)
        .map_err(|e| e.to_string())?
        .to_vec();
    let timed = Instant::now();
    let other = modsign::sign(
        &unsigned,
        &read_file(&signing_fixture("other-key.pem"))?,
        &read_file(&signing_fixture("other-cert.pem"))?,
        modsign::Hash::Sha256,
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "  > signing kernel: {} bytes signed in {:.1} ms",
        unsigned.len(),
        timed.elapsed().as_secs_f64() * 1000.0
    );
    let mut flipped = signed.clone();
    flipped[unsigned.len() / 2] ^= 0x01;
    let sha512 = modsign::sign(
        &unsigned,
        &read_file(&signing_fixture("test-key.pem"))?,
        &read_file(&signing_fixture("test-cert.pem"))?,
        modsign::Hash::Sha512,
    )
    .map_err(|e| e.to_string())?;

    let mut script = GuestScript::default();
    for (name, bytes) in [
        ("unsigned", unsigned),
        ("other", other),
        ("flipped", flipped),
    ] {
        script.file(&format!("/modules/kpb_{name}.ko"), bytes);
    }
    // insmod must fail with EKEYREJECTED; the kernel logs why for the first two.
    let refused = |name: &str, dmesg: Option<&str>| {
        let mut shell = format!(
            "out=$(insmod /modules/kpb_{name}.ko 2>&1); rc=$?; echo \"insmod rc=$rc: $out\"; \
             [ $rc -ne 0 ] && case \"$out\" in *'Key was rejected by service'*) true ;; *) false ;; esac \
             && ! grep -q '^{module} ' /proc/modules"
        );
        if let Some(reason) = dmesg {
            shell.push_str(&format!(" && dmesg | grep '{reason}'"));
        }
        shell
    };
    script
        .check(
            "cert-trusted",
            "the kernel loaded the test certificate into its keyring",
            "dmesg | grep \"Loaded X.509 cert 'kpbuild test signing key\"",
        )
        .check(
            "unsigned-refused",
            "the unsigned module is refused",
            refused("unsigned", Some("Loading of unsigned module is rejected")),
        )
        .check(
            "other-key-refused",
            "the module signed with an untrusted key is refused",
            refused(
                "other",
                Some("Loading of module with unavailable key is rejected"),
            ),
        )
        .check(
            "flipped-refused",
            "the module with a byte flipped after signing is refused",
            refused("flipped", None),
        );
    Lifecycle {
        module_path: format!("/modules/{module}.ko"),
        module: signed,
        patch_name: module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "signed-");
    // The same module signed with SHA-512 (the kernel's own modules use
    // SHA-256): loads and patches too.
    Lifecycle {
        module_path: format!("/modules/{module}-sha512.ko"),
        module: sha512,
        patch_name: module.to_string(),
        probe: case.probe.into(),
        original: case.original.into(),
        patched: case.patched.into(),
    }
    .add_to(&mut script, "sha512-");
    let report = Vm::new(&kb.bzimage(), &work.join("vm"))
        .run(&script)
        .map_err(|e| e.to_string())?;
    let verdict = report.verify(&script);
    if verdict.is_ok() {
        for id in [
            "cert-trusted",
            "unsigned-refused",
            "other-key-refused",
            "flipped-refused",
        ] {
            for line in report.output(&id.replace('-', "_")) {
                eprintln!("  > {id}: {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&work);
    }
    verdict
}

/// Two `kpbuild build` runs of the same patch against the same tree, in two
/// processes (so every scratch path differs), signed with the same key: the
/// signed modules are byte-identical, and so are the unsigned ones.
pub(super) fn signing_reproducible(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.work.join("reproducible");
    let mut modules = Vec::new();
    for run in ["a", "b"] {
        let out = dir.join(run);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(crate::repo_root())
            .args([
                "run",
                "--quiet",
                "--package",
                "kpbuild",
                "--",
                "build",
                "--quiet",
            ])
            .arg("--src")
            .arg(&ctx.kernel.src)
            .arg("--build")
            .arg(&ctx.kernel.build)
            .arg("--patch")
            .arg(crate::repo_root().join("fixtures/patches/proc-cmdline-string.patch"))
            .args(["--name", "kpb_repro", "--out"])
            .arg(&out)
            .arg("--sign-key")
            .arg(signing_fixture("test-key.pem"))
            .arg("--sign-cert")
            .arg(signing_fixture("test-cert.pem"));
        kpbuild::process::run(&mut cmd).map_err(|e| e.to_string())?;
        modules.push(read_file(&out.join("kpb_repro.ko"))?);
    }
    let (a, b) = (&modules[0], &modules[1]);
    let strip = |m: &[u8]| {
        modsign::strip_signature(m)
            .map(<[u8]>::to_vec)
            .map_err(|e| e.to_string())
    };
    let (ua, ub) = (strip(a)?, strip(b)?);
    if ua != ub {
        let at = ua
            .iter()
            .zip(&ub)
            .position(|(x, y)| x != y)
            .unwrap_or(ua.len().min(ub.len()));
        return Err(format!(
            "the unsigned modules of two builds differ ({} vs {} bytes, first at offset {at:#x}); \
             compare {} and {}",
            ua.len(),
            ub.len(),
            dir.join("a/kpb_repro.ko").display(),
            dir.join("b/kpb_repro.ko").display()
        ));
    }
    if a != b {
        return Err("identical unsigned modules got different signatures".into());
    }
    eprintln!(
        "  > reproducible: two builds, {} bytes, byte-identical when signed",
        a.len()
    );
    Ok(())
}
