//! Member frames and keys: rejection per reason, strangers, encryption, PSK rollover.

mod common;

use common::*;

#[test]
fn bad_frames_are_rejected_and_counted_per_reason() {
    let mut c = Cluster::pair();
    c.run_until(50);
    let (from, link, frame) = c.frames.iter().find(|f| f.0 == 0).cloned().unwrap();
    assert_eq!(from, 0);
    let b = c.agents[1].as_mut().unwrap();
    // Replay of an accepted frame.
    b.handle_member_frame(60, link, &mut frame.clone());
    // Corrupted.
    let mut bad = frame.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    b.handle_member_frame(60, link, &mut bad);
    // Garbage and a frame on a link that does not exist.
    b.handle_member_frame(60, link, &mut [1, 2, 3]);
    b.handle_member_frame(60, LinkId(7), &mut frame.clone());
    // Its own frame coming back.
    let own = c.frames.iter().find(|f| f.0 == 1).cloned().unwrap();
    let b = c.agents[1].as_mut().unwrap();
    b.handle_member_frame(60, own.1, &mut own.2.clone());
    let k = &b.status().counters;
    assert_eq!(k.rejected(Reject::Replay), 1);
    assert_eq!(k.rejected(Reject::BadTag), 1);
    assert_eq!(k.rejected(Reject::Truncated), 1);
    assert_eq!(k.rejected(Reject::UnknownLink), 1);
    assert_eq!(k.rejected(Reject::OwnFrame), 1);
    assert_eq!(k.rejected_total(), 5);
    assert!(k.received > 0);
}

#[test]
fn frames_from_another_cluster_or_key_are_rejected() {
    let mut stranger = A::new(
        {
            let mut c = config(0, 2);
            c.psk = Psk(OTHER_KEY);
            c
        },
        0,
        1,
    )
    .unwrap();
    let mut b = A::new(config(1, 2), 0, 1).unwrap();
    while let Some(o) = stranger.poll_output() {
        if let Output::Send { link, bytes } = o {
            b.handle_member_frame(1, link, &mut bytes.to_vec());
        }
    }
    assert!(b.status().counters.rejected(Reject::BadTag) >= 1);
    assert_eq!(b.status().peers[0].state, PeerState::Unknown);
}

#[test]
fn encrypted_mode_interoperates() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.encrypt = true;
    }
    let mut c = Cluster::new(cfgs);
    c.run_until(300);
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    let (_, _, f) = &c.frames[0];
    assert_eq!(f[4] & 1, 1, "AEAD flag set");
}

#[test]
fn psk_rollover_from_the_host_link_keeps_the_cluster_together() {
    use ha_proto::msg::host::WirePsk;
    let mut c = Cluster::pair();
    c.run_until(1000);
    let key_state = |c: &Cluster, m: usize| {
        c.host
            .iter()
            .rev()
            .find_map(|(i, h)| match h {
                HostMsg::KeyState {
                    sealing_key_id,
                    accepted,
                } if *i == m => Some((*sealing_key_id, accepted.to_vec())),
                _ => None,
            })
            .unwrap()
    };
    c.events.clear();
    // A frame member 0 sealed with the old key (id 0), recorded by an attacker on the link.
    let (_, old_link, old_frame) = c
        .frames
        .iter()
        .rev()
        .find(|(from, _, f)| *from == 0 && f[5] == 0)
        .cloned()
        .expect("a frame under key 0");
    let install = HostMsg::InstallKey {
        key_id: 2,
        psk: WirePsk(OTHER_KEY),
    };
    // Phase 1, one member after the other with time passing in between: nothing changes on
    // the wire yet.
    for m in 0..2 {
        c.with(m, |a, now| a.handle_host(now, install.clone()));
        assert_eq!(key_state(&c, m), (0, vec![0, 2]));
        c.run_until(c.now + 500);
    }
    // Using a key never installed is refused.
    c.with(0, |a, now| {
        a.handle_host(now, HostMsg::UseKey { key_id: 5 })
    });
    assert_eq!(key_state(&c, 0), (0, vec![0, 2]));
    // Phase 2, again spread in time: the peer already accepts the new key.
    for m in 0..2 {
        c.with(m, |a, now| {
            a.handle_host(now, HostMsg::UseKey { key_id: 2 })
        });
        assert_eq!(key_state(&c, m), (2, vec![2, 0]));
        c.run_until(c.now + 500);
    }
    // Retiring the key that is not sealing is refused (state unchanged).
    c.with(1, |a, now| {
        a.handle_host(now, HostMsg::RetireKey { key_id: 0 })
    });
    assert_eq!(key_state(&c, 1), (2, vec![2, 0]));
    // Phase 3.
    for m in 0..2 {
        c.with(m, |a, now| {
            a.handle_host(now, HostMsg::RetireKey { key_id: 2 })
        });
        assert_eq!(key_state(&c, m), (2, vec![2]));
    }
    for m in 0..2 {
        assert_eq!(
            c.a(m).status().counters.rejected_total(),
            0,
            "member {m} rejected frames during the rollover"
        );
    }
    // After the retirement the old key opens nothing on the member link: the recorded frame
    // is refused for its key (before any replay check), and changes nothing.
    let unknown = c.a(1).status().counters.rejected(Reject::UnknownKey);
    let replays = c.a(1).status().counters.rejected(Reject::Replay);
    let mut f = old_frame.clone();
    c.with(1, |a, now| a.handle_member_frame(now, old_link, &mut f));
    assert_eq!(
        c.a(1).status().counters.rejected(Reject::UnknownKey),
        unknown + 1,
        "a frame under the retired key was not refused for its key"
    );
    assert_eq!(c.a(1).status().counters.rejected(Reject::Replay), replays);
    let before = c.a(1).status().counters.received;
    c.run_until(6000);
    assert!(c.a(1).status().counters.received > before);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(1), Role::Passive);
    for m in 0..2 {
        assert!(
            !c.events_of(m).iter().any(|e| matches!(
                e,
                EventKind::RoleChanged { .. } | EventKind::LinkDown { .. }
            )),
            "member {m}: a swap or a lost link during the rollover"
        );
    }
}
