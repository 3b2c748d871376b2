//! `kpbuild cache list` and `kpbuild cache prune` run as a user would, on a
//! temporary `KPBUILD_CACHE` filled with fake entries of every kind.

#![allow(missing_docs)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use testbed::scratch::Scratch;

/// One finished run: exit code, stdout, stderr.
fn kpbuild(cache: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .env("KPBUILD_CACHE", cache)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("kpbuild runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stdout, stderr)
}

fn json(cache: &Path, args: &[&str]) -> Value {
    let (code, stdout, stderr) = kpbuild(cache, args);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn write(root: &Path, path: &str, data: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Releases of three groups (6.12 Debian 12 cloud, 6.12 Debian 12 amd64,
/// 6.1 cloud), an unfinished download, the sources, two prepared
/// directories, a test kernel, decompressed modules, an interrupted
/// prune's trash and a directory kpbuild does not know.
fn fake_cache(root: &Path) {
    let releases = [
        ("6.12.107+deb12-cloud-amd64", "6.12.107-1~deb12u1"),
        ("6.12.115+deb12-cloud-amd64", "6.12.115-2~deb12u1"),
        ("6.12.118+deb12-cloud-amd64", "6.12.118-1~deb12u1"),
        ("6.12.115+deb12-amd64", "6.12.115-2~deb12u1"),
        ("6.1.0-9-cloud-amd64", "6.1.27-1"),
        ("6.1.0-57-cloud-amd64", "6.1.192-3"),
    ];
    for (release, version) in releases {
        write(
            root,
            &format!("debian/{release}/.kpbuild-extracted-2"),
            version,
        );
        write(
            root,
            &format!("debian/{release}/root/boot/vmlinuz-{release}"),
            &"x".repeat(10_000),
        );
        write(root, &format!("debian/{release}.lock"), "");
        let src = format!("debian/source-{}", version.replace('~', "_"));
        write(root, &format!("{src}/.kpbuild-extracted"), version);
        write(
            root,
            &format!("{src}/linux-source/Makefile"),
            "VERSION = 6\n",
        );
    }
    write(
        root,
        "debian/6.12.111+deb12-cloud-amd64/debs/linux-image-6.12.111+deb12-cloud-amd64-unsigned_6.12.111-1~deb12u1_amd64.deb",
        "partial",
    );
    // The series-wide lock of earlier versions, and a stray file.
    write(root, "debian/6.12.lock", "");
    write(root, "debian/notes.txt", "mine");
    for (key, version) in [
        ("0000aaaa", "6.12.107-1_deb12u1"),
        ("1111bbbb", "6.12.118-1_deb12u1"),
    ] {
        let src = root.join(format!("debian/source-{version}/linux-source"));
        write(root, &format!("prepared/{key}/.kpbuild-prepared"), key);
        write(
            root,
            &format!("prepared/{key}/.kpbuild-source"),
            src.to_str().unwrap(),
        );
        write(
            root,
            &format!("prepared/{key}/include/generated/autoconf.h"),
            "#define X 1\n",
        );
    }
    write(
        root,
        "kernels/6.12.118-1_deb12u1-2e0a5a3673f5/.stamp-built",
        "",
    );
    write(
        root,
        "target-modules/binfmt_misc-71c9aa46f07d8739c2619987.ko",
        "elf",
    );
    write(root, ".trash-1-2/3-prepared/x", "left over");
    write(root, "buildroot/trixie/etc/os-release", "trixie");
    write(root, "buildroot/trixie/.kpbuild-buildroot", "trixie\n");
    write(root, "buildroot/forky/etc/os-release", "forky");
    write(root, "apt/trixie/lists/x", "lists");
}

fn names(entries: &Value, kind: &str) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn entry<'a>(listing: &'a Value, kind: &str, name: &str) -> &'a Value {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && e["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {listing:#}"))
}

#[test]
fn list_shows_every_entry_with_its_links() {
    let s = Scratch::new("cache-list");
    let cache = s.dir("cache");
    fake_cache(&cache);
    let listing = json(&cache, &["cache", "list", "--json"]);
    let entries = &listing["entries"];
    assert_eq!(
        names(entries, "debian-release"),
        [
            "6.1.0-57-cloud-amd64",
            "6.1.0-9-cloud-amd64",
            "6.12.107+deb12-cloud-amd64",
            "6.12.111+deb12-cloud-amd64",
            "6.12.115+deb12-amd64",
            "6.12.115+deb12-cloud-amd64",
            "6.12.118+deb12-cloud-amd64",
        ]
    );
    assert_eq!(
        names(entries, "debian-source"),
        [
            "6.1.192-3",
            "6.1.27-1",
            "6.12.107-1~deb12u1",
            "6.12.115-2~deb12u1",
            "6.12.118-1~deb12u1"
        ]
    );
    assert_eq!(names(entries, "prepared"), ["0000aaaa", "1111bbbb"]);
    assert_eq!(
        names(entries, "test-kernel"),
        ["6.12.118-1_deb12u1-2e0a5a3673f5"]
    );
    assert_eq!(names(entries, "target-modules"), ["target-modules"]);
    assert_eq!(names(entries, "trash"), [".trash-1-2"]);
    assert_eq!(names(entries, "build-root"), ["forky", "trixie"]);
    assert_eq!(names(entries, "other"), ["apt", "debian/notes.txt"]);

    let unfinished = entry(&listing, "debian-release", "6.12.111+deb12-cloud-amd64");
    assert_eq!(unfinished["complete"], false);
    assert_eq!(unfinished["version"], "6.12.111-1~deb12u1");
    let release = entry(&listing, "debian-release", "6.12.115+deb12-amd64");
    assert_eq!(release["complete"], true);
    assert_eq!(release["held"], false);
    assert_eq!(
        (&release["series"], &release["suite"], &release["flavour"]),
        (&"6.12".into(), &"deb12".into(), &"amd64".into())
    );
    assert!(release["bytes"].as_u64().unwrap() >= 10_000, "{release}");
    assert_eq!(
        release["uses"],
        serde_json::json!([{"kind": "debian-source", "name": "6.12.115-2~deb12u1"}])
    );
    let source = entry(&listing, "debian-source", "6.12.115-2~deb12u1");
    assert_eq!(
        source["used_by"],
        serde_json::json!([
            {"kind": "debian-release", "name": "6.12.115+deb12-amd64"},
            {"kind": "debian-release", "name": "6.12.115+deb12-cloud-amd64"},
        ])
    );
    let prepared = entry(&listing, "prepared", "0000aaaa");
    assert_eq!(
        prepared["uses"],
        serde_json::json!([{"kind": "debian-source", "name": "6.12.107-1~deb12u1"}])
    );
    let locks = release["locks"].as_array().unwrap();
    assert!(
        locks[0]
            .as_str()
            .unwrap()
            .ends_with("debian/6.12.115+deb12-amd64.lock"),
        "{locks:?}"
    );
    let sum: u64 = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(listing["total_bytes"].as_u64().unwrap(), sum);

    let (code, text, _) = kpbuild(&cache, &["cache", "list"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("6.12.118+deb12-cloud-amd64"), "{text}");
    assert!(text.contains("unfinished"), "{text}");
}

/// Every path under `root`, relative, sorted (lock files included).
fn tree(root: &Path, below: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join(below))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn prune_keep_newest_one_keeps_exactly_the_newest_of_each_group() {
    let s = Scratch::new("cache-prune");
    let cache = s.dir("cache");
    fake_cache(&cache);
    let dry = json(
        &cache,
        &[
            "cache",
            "prune",
            "--keep-newest",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(dry["dry_run"], true);
    let report = json(&cache, &["cache", "prune", "--keep-newest", "1", "--json"]);
    assert_eq!(
        report["removed"], dry["removed"],
        "the dry run said what the prune did"
    );

    let removed: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["entry"]["kind"].as_str().unwrap(),
                r["entry"]["name"].as_str().unwrap(),
                r["reason"]["rule"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        removed,
        [
            "debian-release 6.1.0-9-cloud-amd64 not-newest",
            "debian-release 6.12.107+deb12-cloud-amd64 not-newest",
            "debian-release 6.12.111+deb12-cloud-amd64 incomplete",
            "debian-release 6.12.115+deb12-cloud-amd64 not-newest",
            "build-root forky incomplete",
            "trash .trash-1-2 trash",
            "debian-source 6.1.27-1 no-release",
            "prepared 0000aaaa source-removed",
            "debian-source 6.12.107-1~deb12u1 no-release",
        ]
    );
    assert_eq!(report["skipped"], serde_json::json!([]));
    // Exactly this stays: the newest of each group, the sources they use,
    // the prepared directory on a kept source, the lock files, and what
    // no rule selects.
    assert_eq!(
        tree(&cache, "debian"),
        [
            "6.1.0-57-cloud-amd64",
            "6.1.0-57-cloud-amd64.lock",
            "6.1.0-9-cloud-amd64.lock",
            "6.12.107+deb12-cloud-amd64.lock",
            "6.12.111+deb12-cloud-amd64.lock",
            "6.12.115+deb12-amd64",
            "6.12.115+deb12-amd64.lock",
            "6.12.115+deb12-cloud-amd64.lock",
            "6.12.118+deb12-cloud-amd64",
            "6.12.118+deb12-cloud-amd64.lock",
            "6.12.lock",
            "notes.txt",
            "source-6.1.192-3",
            "source-6.1.27-1.lock",
            "source-6.12.107-1_deb12u1.lock",
            "source-6.12.115-2_deb12u1",
            "source-6.12.118-1_deb12u1",
        ]
    );
    assert_eq!(tree(&cache, "prepared"), ["0000aaaa.lock", "1111bbbb"]);
    assert_eq!(
        tree(&cache, ""),
        [
            "apt",
            "buildroot",
            "debian",
            "kernels",
            "prepared",
            "target-modules"
        ]
    );
    assert_eq!(tree(&cache, "buildroot"), ["forky.lock", "trixie"]);
    assert_eq!(tree(&cache, "kernels"), ["6.12.118-1_deb12u1-2e0a5a3673f5"]);
    assert!(
        cache
            .join("debian/6.12.118+deb12-cloud-amd64/root/boot/vmlinuz-6.12.118+deb12-cloud-amd64")
            .is_file()
    );

    // A second prune finds nothing more to do.
    let again = json(&cache, &["cache", "prune", "--keep-newest", "1", "--json"]);
    assert_eq!(again["removed"], serde_json::json!([]));
    let (code, text, _) = kpbuild(&cache, &["cache", "prune", "--keep-newest", "1"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("freed 0 entries"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let s = Scratch::new("cache-bad");
    let cache = s.dir("cache");
    let (code, _, err) = kpbuild(&cache, &["cache", "prune", "--keep-newest", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("keeping 0 releases would remove every release"),
        "{err}"
    );
    let (code, _, err) = kpbuild(&cache, &["cache", "prune", "--older-than", "soon"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--older-than"), "{err}");

    let file = s.write("a-file", "not a cache");
    for args in [
        &["cache", "list"][..],
        &["cache", "prune", "--older-than", "1"],
        &["cache", "list", "--json"],
    ] {
        let (code, out, err) = kpbuild(&file, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "the kernel cache {} is not a directory",
                file.display()
            )),
            "{err}"
        );
        if args.contains(&"--json") {
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["outcome"], "error");
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a cache");

    // No cache yet is an empty one.
    let listing = json(&s.path("absent"), &["cache", "list", "--json"]);
    assert_eq!(listing["entries"], serde_json::json!([]));
    assert!(!s.path("absent").exists());
}

#[test]
fn targets_bad_input_names_what_is_known() {
    let s = Scratch::new("targets-bad");
    let cache = s.dir("cache");
    let (code, _, err) = kpbuild(&cache, &["targets", "debian", "6.3"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("\"6.3\": not a kernel series kpbuild knows (6.1, 6.12)"),
        "{err}"
    );
    let (code, out, err) = kpbuild(
        &cache,
        &["targets", "debian", "--flavour", "cloud", "--json"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "\"cloud\": not a kernel flavour kpbuild knows (amd64, cloud-amd64, rt-amd64)"
        ),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "error");
    let (code, _, err) = kpbuild(&cache, &["targets"]);
    assert_eq!(code, Some(1), "{err}");
    // Nothing was written into the cache.
    assert_eq!(tree(&cache, ""), Vec::<String>::new());
}

/// The kernels of Debian 12's own 6.1 series apt knows (this machine's
/// apt lists), one of them with a fake cached release and source.
#[test]
fn targets_debian_shows_what_of_each_kernel_is_cached() {
    let s = Scratch::new("targets");
    let cache = s.dir("cache");
    let listed = json(
        &cache,
        &[
            "targets",
            "debian",
            "6.1",
            "--flavour",
            "cloud-amd64",
            "--json",
        ],
    );
    let kernels = listed["kernels"].as_array().unwrap().clone();
    let Some(first) = testbed::oracle::need(
        "apt lists naming Debian 12's 6.1 cloud kernels",
        "run `apt-get update` as root on Debian 12",
        kernels.first().cloned(),
    ) else {
        return;
    };
    for k in &kernels {
        assert_eq!(
            (&k["series"], &k["flavour"], &k["suite"]),
            (&"6.1".into(), &"cloud-amd64".into(), &"deb12".into()),
            "{k}"
        );
        assert!(
            k["release"].as_str().unwrap().ends_with("-cloud-amd64"),
            "{k}"
        );
        assert_eq!(k["cached"]["release"], Value::Null, "{k}");
        assert_eq!(k["cached"]["bytes"], 0, "{k}");
    }
    let (release, version) = (
        first["release"].as_str().unwrap(),
        first["version"].as_str().unwrap(),
    );
    write(
        &cache,
        &format!("debian/{release}/.kpbuild-extracted-2"),
        version,
    );
    write(
        &cache,
        &format!("debian/{release}/root/boot/vmlinuz-{release}"),
        &"x".repeat(10_000),
    );
    let src = format!("debian/source-{}", version.replace('~', "_"));
    write(&cache, &format!("{src}/.kpbuild-extracted"), version);
    let listed = json(
        &cache,
        &[
            "targets",
            "debian",
            "6.1",
            "--flavour",
            "cloud-amd64",
            "--json",
        ],
    );
    let again = listed["kernels"].as_array().unwrap();
    assert_eq!(again.len(), kernels.len());
    let cached = &again[0]["cached"];
    assert_eq!(cached["release"]["name"], release);
    assert_eq!(cached["release"]["complete"], true);
    assert_eq!(cached["source"]["name"], version);
    let bytes = cached["bytes"].as_u64().unwrap();
    assert!(bytes >= 10_000, "{cached}");
    assert_eq!(
        bytes,
        cached["release"]["bytes"].as_u64().unwrap() + cached["source"]["bytes"].as_u64().unwrap()
    );
    assert!(again[1..].iter().all(|k| k["cached"]["release"].is_null()));
    let (code, text, _) = kpbuild(
        &cache,
        &["targets", "debian", "6.1", "--flavour", "cloud-amd64"],
    );
    assert_eq!(code, Some(0));
    assert!(
        text.contains(&format!("{} kernels, 1 of them cached", kernels.len())),
        "{text}"
    );
}

/// A release whose lock this test holds, as a running build would, stays
/// with the source it needs, and the prune says so.
#[test]
fn prune_skips_what_a_running_build_holds() {
    let s = Scratch::new("cache-held");
    let cache = s.dir("cache");
    fake_cache(&cache);
    let held = "6.12.107+deb12-cloud-amd64";
    let lock = std::fs::File::open(cache.join(format!("debian/{held}.lock"))).unwrap();
    lock.lock_shared().unwrap();
    let listing = json(&cache, &["cache", "list", "--json"]);
    assert_eq!(entry(&listing, "debian-release", held)["held"], true);
    assert_eq!(
        entry(&listing, "debian-release", "6.1.0-9-cloud-amd64")["held"],
        false
    );
    let report = json(&cache, &["cache", "prune", "--keep-newest", "1", "--json"]);
    let skipped: Vec<String> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["entry"]["name"].as_str().unwrap(),
                s["why"]["why"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            "6.12.107+deb12-cloud-amd64 held",
            "6.12.107-1~deb12u1 used-by",
            "0000aaaa source-stays"
        ]
    );
    assert!(
        cache
            .join(format!("debian/{held}/root/boot/vmlinuz-{held}"))
            .is_file()
    );
    assert!(
        cache
            .join("debian/source-6.12.107-1_deb12u1/.kpbuild-extracted")
            .is_file()
    );
    assert!(cache.join("prepared/0000aaaa/.kpbuild-prepared").is_file());
    assert!(!cache.join("debian/6.12.115+deb12-cloud-amd64").exists());
    let (_, text, _) = kpbuild(&cache, &["cache", "prune", "--keep-newest", "1"]);
    assert!(
        text.contains(&format!("kept debian-release {held}")),
        "{text}"
    );
    assert!(text.contains("but a running build holds it"), "{text}");
    drop(lock);
    let report = json(&cache, &["cache", "prune", "--keep-newest", "1", "--json"]);
    assert_eq!(report["removed"].as_array().unwrap().len(), 3, "{report:#}");
    assert!(!cache.join(format!("debian/{held}")).exists());
}
