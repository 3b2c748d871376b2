//! The patch-server repository: publish, re-publish, rollback, the history,
//! the signed index (also checked with the external `minisign`).

#![allow(missing_docs)]

mod common;

use bundle::repo::{self, Action};
use bundle::{Bundle, Error};
use common::*;

/// Bundles 1..=n of one kernel build, each the predecessor of the next.
fn chain(n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for i in 1..=n {
        let prev = out
            .last()
            .map(|b| Bundle::read(b).unwrap().verify(&public()).unwrap());
        out.push(bundle::create(&input(i, prev.as_ref()), &secret()).unwrap());
    }
    out
}

fn publish(dir: &std::path::Path, b: &[u8], at: u64) -> bundle::Result<repo::Published> {
    repo::publish(dir, b, &public(), &secret(), at)
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(BUILD_ID))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn publish_rollback_history() {
    let s = Scratch::new("repo");
    let dir = s.root();
    let b = chain(3);
    let p = publish(dir, &b[0], 100).unwrap();
    assert!(!p.unchanged);
    assert_eq!(p.path, dir.join(BUILD_ID).join("000001.kpb"));
    assert!(
        publish(dir, &b[0], 101).unwrap().unchanged,
        "same bytes again"
    );
    publish(dir, &b[1], 200).unwrap();
    publish(dir, &b[2], 300).unwrap();
    let index = repo::read_index(dir, BUILD_ID, &public()).unwrap();
    assert_eq!(index.format, "kpbuild-index/1");
    assert_eq!(index.release, RELEASE);
    assert_eq!(index.latest.sequence, 3);
    assert_eq!(index.latest.file, "000003.kpb");
    assert_eq!(index.latest.sha256, bundle::sha256_hex(&b[2]));

    let index = repo::rollback(dir, BUILD_ID, 1, &public(), &secret(), 400).unwrap();
    assert_eq!(index.latest.sequence, 1);
    assert_eq!(index.latest.sha256, bundle::sha256_hex(&b[0]));
    let history: Vec<(Action, u64, u64)> = index
        .history
        .iter()
        .map(|r| (r.action, r.sequence, r.at))
        .collect();
    assert_eq!(
        history,
        [
            (Action::Publish, 1, 100),
            (Action::Publish, 2, 200),
            (Action::Publish, 3, 300),
            (Action::Rollback, 1, 400),
        ]
    );
    assert_eq!(repo::read_index(dir, BUILD_ID, &public()).unwrap(), index);
    // Nothing is deleted; no temporary file is left.
    assert_eq!(
        files(dir),
        [
            ".lock",
            "000001.kpb",
            "000002.kpb",
            "000003.kpb",
            "index.json",
            "index.json.minisig"
        ]
    );
    // Rolling back to the latest or a later one, or to one never published.
    let err = repo::rollback(dir, BUILD_ID, 1, &public(), &secret(), 500).unwrap_err();
    assert!(matches!(err, Error::NotEarlier { latest: 1, .. }), "{err}");
    let err = repo::rollback(dir, BUILD_ID, 3, &public(), &secret(), 500).unwrap_err();
    assert!(matches!(err, Error::NotEarlier { .. }), "{err}");
    // Publishing forward again after a rollback: a new sequence.
    let v3 = Bundle::read(&b[2]).unwrap().verify(&public()).unwrap();
    let b4 = bundle::create(&input(4, Some(&v3)), &secret()).unwrap();
    publish(dir, &b4, 600).unwrap();
    let index = repo::read_index(dir, BUILD_ID, &public()).unwrap();
    assert_eq!((index.latest.sequence, index.history.len()), (4, 5));

    if minisign().is_some() {
        let idx = dir.join(BUILD_ID).join("index.json");
        assert!(minisign_verifies(&fixture("bundle/test.pub"), &idx));
        assert!(!minisign_verifies(&fixture("bundle/other.pub"), &idx));
    }
}

#[test]
fn publish_refusals() {
    let s = Scratch::new("refusals");
    let dir = s.root();
    let b = chain(2);
    publish(dir, &b[1], 100).unwrap();
    let before = files(dir);
    let index_before = std::fs::read(dir.join(BUILD_ID).join("index.json")).unwrap();

    // Sequence 1, never stored, is older than the published 2.
    let err = publish(dir, &b[0], 200).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("build-id {BUILD_ID}: sequence 1 is not newer than sequence 2 already published")
    );
    // Another sequence 2.
    let v1 = Bundle::read(&b[0]).unwrap().verify(&public()).unwrap();
    let mut other = input(2, Some(&v1));
    other.created += 7;
    let other = bundle::create(&other, &secret()).unwrap();
    let err = publish(dir, &other, 200).unwrap_err().to_string();
    assert!(
        err.ends_with("000002.kpb: sequence 2 already published with different content"),
        "{err}"
    );
    // A bundle that does not verify, or signed by another key.
    let mut bad = b[1].clone();
    let len = bad.len();
    bad.truncate(len - 700);
    assert!(matches!(
        publish(dir, &bad, 200),
        Err(Error::Truncated { .. })
    ));
    let foreign = bundle::create(&input(1, None), &other_secret()).unwrap();
    assert!(matches!(
        publish(dir, &foreign, 200),
        Err(Error::WrongKey { .. })
    ));
    // A secret key that is not the public key's.
    let err = repo::publish(dir, &b[1], &public(), &other_secret(), 200).unwrap_err();
    assert!(matches!(err, Error::KeyPairMismatch { .. }), "{err}");
    // The next sequence whose predecessor is not the stored one.
    let v_other = Bundle::read(&other).unwrap().verify(&public()).unwrap();
    let b3 = bundle::create(&input(3, Some(&v_other)), &secret()).unwrap();
    let err = publish(dir, &b3, 200).unwrap_err().to_string();
    assert!(
        err.starts_with("predecessor (sequence 2): the manifest names sha256"),
        "{err}"
    );
    // Nothing changed by any of them.
    assert_eq!(files(dir), before);
    assert_eq!(
        std::fs::read(dir.join(BUILD_ID).join("index.json")).unwrap(),
        index_before
    );

    // Rollback to a sequence never published; unknown build-id; bad build-id.
    let err = repo::rollback(dir, BUILD_ID, 1, &public(), &secret(), 300).unwrap_err();
    assert!(
        matches!(err, Error::NotPublished { sequence: 1, .. }),
        "{err}"
    );
    let err = repo::rollback(dir, "abcd", 1, &public(), &secret(), 300).unwrap_err();
    assert!(err.to_string().contains("no index"), "{err}");
    let err = repo::read_index(dir, "../etc", &public()).unwrap_err();
    assert!(matches!(err, Error::BuildId { .. }), "{err}");
}

#[test]
fn tampered_repository() {
    let s = Scratch::new("tampered");
    let dir = s.root();
    let b = chain(2);
    publish(dir, &b[0], 100).unwrap();
    publish(dir, &b[1], 200).unwrap();
    let bdir = dir.join(BUILD_ID);
    // An index edited by hand.
    let idx = bdir.join("index.json");
    let good = std::fs::read_to_string(&idx).unwrap();
    std::fs::write(&idx, good.replace("\"sequence\": 2", "\"sequence\": 1")).unwrap();
    let err = repo::read_index(dir, BUILD_ID, &public())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index.json was changed after signing"),
        "{err}"
    );
    assert!(matches!(
        repo::read_index(dir, BUILD_ID, &other_public()),
        Err(Error::WrongKey { .. })
    ));
    std::fs::write(&idx, &good).unwrap();
    // A stored bundle replaced: rollback refuses it.
    std::fs::write(bdir.join("000001.kpb"), &b[1]).unwrap();
    let err = repo::rollback(dir, BUILD_ID, 1, &public(), &secret(), 300).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&idx).unwrap(), good);
}

#[test]
fn latest_follows_publish_and_rollback_and_channels_are_repositories() {
    let s = Scratch::new("repo-latest");
    let test = repo::channel_dir(s.root(), "test").unwrap();
    assert_eq!(test, s.root().join("test"));
    for bad in ["", "../x", "a/b", ".", "stable channel"] {
        assert!(repo::channel_dir(s.root(), bad).is_err(), "{bad:?}");
    }
    assert!(repo::latest(&test, BUILD_ID, &public()).unwrap().is_none());
    let b = chain(2);
    publish(&test, &b[0], 100).unwrap();
    publish(&test, &b[1], 200).unwrap();
    let latest = repo::latest(&test, BUILD_ID, &public()).unwrap().unwrap();
    assert_eq!(latest.manifest().sequence, 2);
    assert_eq!(latest.bundle().sha256(), bundle::sha256_hex(&b[1]));
    repo::rollback(&test, BUILD_ID, 1, &public(), &secret(), 300).unwrap();
    let latest = repo::latest(&test, BUILD_ID, &public()).unwrap().unwrap();
    assert_eq!(latest.manifest().sequence, 1);
    // Another key does not verify the index.
    assert!(repo::latest(&test, BUILD_ID, &other_public()).is_err());
    // A stored latest file that was changed is refused.
    let stored = test.join(BUILD_ID).join("000001.kpb");
    std::fs::write(&stored, &b[1]).unwrap();
    match repo::latest(&test, BUILD_ID, &public()) {
        Err(Error::HashMismatch { file, .. }) => assert!(file.ends_with("000001.kpb"), "{file}"),
        other => panic!("a changed latest bundle: {other:?}"),
    }
}

fn promote(dir: &std::path::Path, seq: u64, at: u64) -> bundle::Result<repo::Published> {
    repo::promote(
        dir,
        "test",
        "stable",
        BUILD_ID,
        seq,
        &public(),
        &secret(),
        at,
    )
}

#[test]
fn promote_makes_a_tested_bundle_the_stable_channels_latest() {
    let s = Scratch::new("promote");
    let dir = s.root();
    let test = repo::channel_dir(dir, "test").unwrap();
    let stable = repo::channel_dir(dir, "stable").unwrap();
    let b = chain(3);
    for (i, bytes) in b.iter().enumerate() {
        publish(&test, bytes, 100 + i as u64).unwrap();
    }
    // A host following stable sees nothing until a promotion.
    assert!(
        repo::latest(&stable, BUILD_ID, &public())
            .unwrap()
            .is_none()
    );
    let p = promote(dir, 1, 200).unwrap();
    assert!(!p.unchanged);
    assert_eq!(p.path, stable.join(BUILD_ID).join("000001.kpb"));
    let got = repo::latest(&stable, BUILD_ID, &public()).unwrap().unwrap();
    assert_eq!(got.bundle().sha256(), bundle::sha256_hex(&b[0]));
    assert!(promote(dir, 1, 201).unwrap().unchanged, "promoted already");
    // Sequence 3 over 1: its predecessor 2 lives in test only.
    promote(dir, 3, 300).unwrap();
    let index = repo::read_index(&stable, BUILD_ID, &public()).unwrap();
    let history: Vec<(Action, u64, Option<&str>)> = index
        .history
        .iter()
        .map(|r| (r.action, r.sequence, r.from.as_deref()))
        .collect();
    assert_eq!(
        history,
        [
            (Action::Promote, 1, Some("test")),
            (Action::Promote, 3, Some("test")),
        ]
    );
    assert_eq!(index.latest.sequence, 3);
    assert_eq!(index.latest.sha256, bundle::sha256_hex(&b[2]));
    // The test channel is as it was.
    let t = repo::read_index(&test, BUILD_ID, &public()).unwrap();
    assert_eq!(t.history.len(), 3);
    assert!(
        t.history
            .iter()
            .all(|r| r.action == Action::Publish && r.from.is_none())
    );
    // An index without promotions has no `from` field (older readers).
    let text = std::fs::read_to_string(test.join(BUILD_ID).join("index.json")).unwrap();
    assert!(!text.contains("\"from\""), "{text}");
}

#[test]
fn promote_refusals() {
    let s = Scratch::new("promote-refusals");
    let dir = s.root();
    let test = repo::channel_dir(dir, "test").unwrap();
    let stable = repo::channel_dir(dir, "stable").unwrap();
    let b = chain(3);
    publish(&test, &b[0], 100).unwrap();
    publish(&test, &b[1], 110).unwrap();
    // Never published in test.
    assert!(matches!(
        promote(dir, 3, 200),
        Err(Error::NotPublished { sequence: 3, .. })
    ));
    // Into the same channel.
    let same = repo::promote(dir, "test", "test", BUILD_ID, 1, &public(), &secret(), 200);
    assert!(matches!(same, Err(Error::Input(_))), "{same:?}");
    promote(dir, 2, 200).unwrap();
    // Not newer than stable's newest.
    assert!(matches!(
        promote(dir, 1, 300),
        Err(Error::NotNewer {
            sequence: 1,
            newest: 2,
            ..
        })
    ));
    // A test bundle changed after it was published.
    publish(&test, &b[2], 120).unwrap();
    let stored = test.join(BUILD_ID).join("000003.kpb");
    let mut bytes = std::fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    assert!(matches!(
        promote(dir, 3, 400),
        Err(Error::HashMismatch { .. })
    ));
    let index = repo::read_index(&stable, BUILD_ID, &public()).unwrap();
    assert_eq!(index.latest.sequence, 2);
    assert_eq!(index.history.len(), 1);
    assert!(!stable.join(BUILD_ID).join("000003.kpb").exists());
}

#[test]
fn promote_needs_the_stable_latest_on_the_bundles_chain() {
    let s = Scratch::new("promote-chain");
    let dir = s.root();
    let test = repo::channel_dir(dir, "test").unwrap();
    let stable = repo::channel_dir(dir, "stable").unwrap();
    let b = chain(2);
    publish(&test, &b[0], 100).unwrap();
    publish(&test, &b[1], 110).unwrap();
    // Stable got another sequence 1 (published there directly).
    let mut other = input(1, None);
    other.created += 1;
    let other = bundle::create(&other, &secret()).unwrap();
    publish(&stable, &other, 105).unwrap();
    let got = promote(dir, 2, 200);
    assert!(
        matches!(got, Err(Error::Predecessor { sequence: 1, .. })),
        "{got:?}"
    );
}

#[test]
fn an_interrupted_publish_is_finished_or_replaced_by_the_next() {
    let s = Scratch::new("interrupted");
    let dir = s.root();
    let b = chain(2);
    publish(dir, &b[0], 100).unwrap();
    // A publish of sequence 2 stopped after storing its file, before the
    // index: hosts never saw it.
    let first = Bundle::read(&b[0]).unwrap().verify(&public()).unwrap();
    let mut other = input(2, Some(&first));
    other.created += 7;
    let orphan = bundle::create(&other, &secret()).unwrap();
    let path = dir.join(BUILD_ID).join("000002.kpb");
    std::fs::write(&path, &orphan).unwrap();
    // The rerun made sequence 2 again, with other bytes: it replaces it.
    let p = publish(dir, &b[1], 200).unwrap();
    assert!(!p.unchanged);
    assert_eq!(std::fs::read(&path).unwrap(), b[1]);
    let index = repo::read_index(dir, BUILD_ID, &public()).unwrap();
    assert_eq!(index.latest.sequence, 2);
    assert_eq!(index.latest.sha256, bundle::sha256_hex(&b[1]));
    assert_eq!(index.history.len(), 2);
    // Once the index names it, other bytes under it are refused.
    let err = publish(dir, &orphan, 300).unwrap_err();
    assert!(
        matches!(err, Error::AlreadyPublished { sequence: 2, .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b[1]);
}

#[test]
fn two_publishers_at_once_one_wins_the_other_is_refused() {
    let s = Scratch::new("concurrent");
    let dir = s.root().to_path_buf();
    let mut second = input(1, None);
    second.created += 1;
    let bundles = [
        bundle::create(&input(1, None), &secret()).unwrap(),
        bundle::create(&second, &secret()).unwrap(),
    ];
    let results: Vec<bundle::Result<repo::Published>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bundles
            .iter()
            .map(|b| {
                let dir = dir.clone();
                scope.spawn(move || publish(&dir, b, 100))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let lost = &results[1 - won[0]];
    assert!(
        matches!(lost, Err(Error::AlreadyPublished { sequence: 1, .. })),
        "{lost:?}"
    );
    let stored = std::fs::read(dir.join(BUILD_ID).join("000001.kpb")).unwrap();
    assert_eq!(stored, bundles[won[0]]);
    let index = repo::read_index(&dir, BUILD_ID, &public()).unwrap();
    assert_eq!(index.history.len(), 1);
    assert_eq!(index.latest.sha256, bundle::sha256_hex(&stored));
}
