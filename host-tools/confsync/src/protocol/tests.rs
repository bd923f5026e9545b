//! The two cores against each other in memory.

use super::*;
use crate::manifest::{Entry, Manifest};
use sha2::{Digest, Sha256};

fn content(i: u32) -> Vec<u8> {
    format!("file {i}\n")
        .repeat(i as usize % 500 + 1)
        .into_bytes()
}

fn manifest(files: &[(&str, Vec<u8>)]) -> Manifest {
    let mut m = Manifest::default();
    for (p, c) in files {
        m.files.insert(
            p.to_string(),
            Entry {
                sha256: Sha256::digest(c).into(),
                size: c.len() as u64,
                mode: 0o644,
            },
        );
    }
    m
}

/// Runs both cores against each other in memory; returns hashes written by the receiver.
fn run(
    old: Option<&Manifest>,
    new: &Manifest,
    contents: &std::collections::HashMap<Hash, Vec<u8>>,
    tamper: impl FnMut(&mut SyncMsg),
) -> Result<Vec<Hash>, SyncError> {
    run_with(old, new, contents, tamper, false)
}

fn run_with(
    old: Option<&Manifest>,
    new: &Manifest,
    contents: &std::collections::HashMap<Hash, Vec<u8>>,
    mut tamper: impl FnMut(&mut SyncMsg),
    allow_special_modes: bool,
) -> Result<Vec<Hash>, SyncError> {
    let (rx, hello) = ReceiverCore::new([1; 16], old.map(|m| (1, m)));
    let mut rx = rx.allow_special_modes(allow_special_modes);
    let mut tx = SenderCore::new(2, new.clone(), [2; 16]);
    let mut to_rx: std::collections::VecDeque<SyncMsg> = Default::default();
    let mut to_tx: std::collections::VecDeque<SyncMsg> = vec![hello].into();
    let mut written = Vec::new();
    for _ in 0..1_000_000 {
        if let Some(m) = to_tx.pop_front() {
            for a in tx.handle(m)? {
                match a {
                    SenderAction::Send(m) => to_rx.push_back(m),
                    SenderAction::SendContent(h) => to_rx.extend(data_messages(h, &contents[&h])),
                    SenderAction::Done { .. } => return Ok(written),
                }
            }
        } else if let Some(mut m) = to_rx.pop_front() {
            tamper(&mut m);
            for a in rx.handle(m)? {
                match a {
                    ReceiverAction::Send(m) => to_tx.push_back(m),
                    ReceiverAction::Write {
                        hash, last: true, ..
                    } => written.push(hash),
                    ReceiverAction::Commit { .. } => to_tx.push_back(rx.committed()),
                    _ => {}
                }
            }
        } else {
            return Err(SyncError::Unexpected("stall"));
        }
    }
    Err(SyncError::Unexpected("no end"))
}

#[test]
fn only_changed_content_travels() {
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("d{}/f{i}", i % 7), content(i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    let old = manifest(&refs);
    let mut changed = refs.clone();
    changed[3].1 = b"changed".to_vec();
    changed[100].1 = b"changed too".to_vec();
    changed.push(("new/file", b"new".to_vec()));
    let new = manifest(&changed);
    let contents = changed
        .iter()
        .map(|(_, c)| (Sha256::digest(c).into(), c.clone()))
        .collect();
    let written = run(Some(&old), &new, &contents, |_| {}).unwrap();
    assert_eq!(written.len(), 3);
    // From nothing: every distinct content.
    let written = run(None, &new, &contents, |_| {}).unwrap();
    assert_eq!(written.len(), new.by_hash().len());
}

#[test]
fn tampering_is_caught() {
    let files = vec![("a", b"alpha".to_vec()), ("b", b"beta".to_vec())];
    let m = manifest(&files);
    let contents: std::collections::HashMap<Hash, Vec<u8>> = files
        .iter()
        .map(|(_, c)| (Sha256::digest(c).into(), c.clone()))
        .collect();
    type Tamper = Box<dyn FnMut(&mut SyncMsg)>;
    let cases: Vec<Tamper> = vec![
        Box::new(|m| {
            if let SyncMsg::Offer { nonce, .. } = m {
                nonce[0] ^= 1
            }
        }),
        Box::new(|m| {
            if let SyncMsg::Entries(e) = m {
                e[0].path = "../evil".into()
            }
        }),
        Box::new(|m| {
            if let SyncMsg::Entries(e) = m {
                e[0].size += 1
            }
        }),
        Box::new(|m| {
            if let SyncMsg::Data { bytes, .. } = m {
                bytes[0] ^= 1
            }
        }),
        Box::new(|m| {
            if let SyncMsg::Data { offset, .. } = m {
                *offset += 1
            }
        }),
        Box::new(|m| {
            if let SyncMsg::Commit = m {
                *m = SyncMsg::EntriesEnd
            }
        }),
    ];
    for (i, mut t) in cases.into_iter().enumerate() {
        assert!(
            run(None, &m, &contents, &mut t).is_err(),
            "case {i} accepted"
        );
    }
}

#[test]
fn messages_fit_one_frame() {
    let long = "p/".repeat(200) + "x";
    let msgs = vec![
        SyncMsg::Entries(
            (0..ENTRIES_BUDGET / (long.len() + 60) + 1)
                .map(|_| WireEntry {
                    path: long.clone(),
                    sha256: [0xFF; 32],
                    size: u64::MAX,
                    mode: 0o7777,
                })
                .collect(),
        ),
        SyncMsg::Need(vec![[0xFF; 32]; NEED_PER_MSG]),
        SyncMsg::Data {
            hash: [0xFF; 32],
            offset: u64::MAX,
            last: true,
            bytes: vec![0xFF; DATA_CHUNK],
        },
    ];
    for m in msgs {
        let n = postcard::to_allocvec(&m).unwrap().len();
        assert!(n <= ha_proto::frame::MAX_BODY_LEN, "{n}");
    }
}

#[test]
fn a_join_must_echo_the_session_nonce() {
    let join = |nonce| SyncMsg::Join {
        nonce,
        serial: "SN-B".into(),
        addr: "127.0.0.1:1".into(),
    };
    // A Join recorded in another session carries that session's nonce.
    let (mut rx, _) = ReceiverCore::new([1; 16], None);
    assert_eq!(rx.handle(join([2; 16])), Err(SyncError::NonceMismatch));
    let (mut rx, _) = ReceiverCore::new([1; 16], None);
    assert!(matches!(
        rx.handle(join([1; 16])).unwrap().as_slice(),
        [ReceiverAction::Join { .. }]
    ));
}

#[test]
fn special_mode_bits_are_refused_unless_allowed() {
    let body = b"#!/bin/sh\n".to_vec();
    let h: Hash = Sha256::digest(&body).into();
    let mut m = Manifest::default();
    m.files.insert(
        "bin/helper".into(),
        Entry {
            sha256: h,
            size: body.len() as u64,
            mode: 0o4755,
        },
    );
    let contents = [(h, body)].into_iter().collect();
    match run(None, &m, &contents, |_| {}) {
        Err(SyncError::BadManifest(why)) => assert!(why.contains("setuid"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run_with(None, &m, &contents, |_| {}, true).unwrap(),
        vec![h]
    );
}
