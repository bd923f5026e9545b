//! Enrolment: a machine that holds only the cluster key (and one member's sync address)
//! learns the cluster's HA settings, the shell around [`crate::sync::enroll`].
//!
//! The cluster id and the key id are not asked of the operator: the member speaks first, and
//! its `Hello` frame names both in its header. The key set derived from the operator's key
//! for that cluster and key id must then open the `Hello`; a wrong key (or one the cluster
//! rotated away from) fails there, before anything is sent. Everything after it is sealed as
//! any sync session (bound to the member's session, AEAD when its frames are).

use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ha_proto::config_block::ClusterProfile;
use ha_proto::frame::{peek_header, MAX_FRAME_LEN};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::Channel;
use ha_proto::msg::Serial;

use crate::deadline::{Limits, Timeouts};
use crate::keys::SessionCounter;
use crate::sync::{self, SyncFailure};
use crate::wire::{Security, Wire, WireError};

/// What a member told an enrolling machine.
#[derive(Clone, Debug)]
pub struct Enrolment {
    /// The cluster, as the member's frames name it.
    pub cluster_id: u32,
    /// The key id that sealed the member's frames (its current key).
    pub key_id: u8,
    /// The member's sync frames are encrypted (AEAD).
    pub encrypt: bool,
    /// The member that answered.
    pub member: Serial,
    /// The cluster-wide part of its block.
    pub profile: ClusterProfile,
}

/// A reader that first returns bytes already read from `inner` (the member's first frame,
/// read to learn its header), then reads on.
struct Replayed<R> {
    head: Vec<u8>,
    at: usize,
    inner: R,
}

impl<R: Read> Read for Replayed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.head.len() {
            let n = buf.len().min(self.head.len() - self.at);
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl<R: Timeouts> Timeouts for Replayed<R> {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(t)
    }
}

/// Asks the configuration-sync service at `addr` for the cluster's HA settings, as `me`,
/// holding `psk`. Errors say what went wrong in the operator's terms (never the key).
pub fn enroll_at(addr: &str, psk: &Psk, me: Serial) -> Result<Enrolment, String> {
    let limits = Limits::CONNECTOR;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let stream = TcpStream::connect_timeout(&target, limits.handshake)
        .map_err(|e| format!("cannot reach the configuration-sync service at {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(limits.handshake))
        .map_err(|e| e.to_string())?;
    // The member's first frame, read whole to learn its header.
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    reader
        .read_exact(&mut len)
        .map_err(|e| format!("{addr} sent no hello: {e}"))?;
    let n = usize::from(u16::from_be_bytes(len));
    if n > MAX_FRAME_LEN {
        return Err(format!(
            "{addr}: its first frame is {n} bytes, not a sync hello"
        ));
    }
    let mut head = vec![0u8; 2 + n];
    head[..2].copy_from_slice(&len);
    reader
        .read_exact(&mut head[2..])
        .map_err(|e| format!("{addr} sent no hello: {e}"))?;
    let hdr = peek_header(&head[2..])
        .map_err(|e| format!("{addr} is not a configuration-sync service ({e:?})"))?;
    if hdr.channel != Channel::Management {
        return Err(format!(
            "{addr} is not a configuration-sync service (its frames are of channel {:?})",
            hdr.channel
        ));
    }
    let sec = Security {
        cluster_id: hdr.cluster_id,
        keyring: Keyring::new(KeySet::derive(psk, hdr.cluster_id, hdr.key_id)),
        me,
        encrypt: hdr.aead,
        sessions: SessionCounter::random(),
    };
    let replayed = Replayed {
        head,
        at: 0,
        inner: reader,
    };
    let mut wire =
        Wire::connector(replayed, stream, &sec, None, limits).map_err(|e| e.to_string())?;
    let profile = sync::enroll(&mut wire).map_err(|e| match e {
        SyncFailure::Wire(WireError::Refused(r)) => format!(
            "{addr} (cluster {}, key id {}) does not hold this key: its hello fails \
             authentication ({r:?}); wrong key file, or the cluster's key was rotated",
            hdr.cluster_id, hdr.key_id
        ),
        e => format!("enrolment through {addr}: {e}"),
    })?;
    if profile.cluster_id != hdr.cluster_id {
        return Err(format!(
            "{addr} sent the settings of cluster {} in frames of cluster {}",
            profile.cluster_id, hdr.cluster_id
        ));
    }
    Ok(Enrolment {
        cluster_id: hdr.cluster_id,
        key_id: hdr.key_id,
        encrypt: hdr.aead,
        member: hdr.sender,
        profile,
    })
}
