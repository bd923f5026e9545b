//! Sender-side header bookkeeping: one [`Sequencer`] per sender and boot.

use crate::frame::{Header, PROTOCOL_VERSION};
use crate::ids::{Channel, Serial};

/// Builds headers for one sender: fixed cluster, serial and boot epoch, a sequence number that
/// increases with every frame.
///
/// The boot epoch must increase on every boot of the sender: a persistent boot counter (in
/// flash on the controller, in a state file on the main CPU), never the clock. A reused epoch
/// makes peers reject the sender's frames as replays and, with the AEAD, reuses nonces.
/// The header's peer epoch is 0 (unbound); [`crate::endpoint::Endpoint::seal`] binds it.
#[derive(Clone, Debug)]
pub struct Sequencer {
    /// Cluster the frames belong to.
    pub cluster_id: u32,
    /// This sender's serial.
    pub sender: Serial,
    /// This boot's epoch.
    pub epoch: u32,
    /// Sequence number of the next frame.
    pub next_seq: u64,
    /// Seal with the AEAD (encrypt bodies) instead of HMAC.
    pub aead: bool,
}

impl Sequencer {
    /// A sequencer at sequence 0 of `epoch`, HMAC mode.
    pub fn new(cluster_id: u32, sender: Serial, epoch: u32) -> Self {
        Self {
            cluster_id,
            sender,
            epoch,
            next_seq: 0,
            aead: false,
        }
    }

    /// The header of the next frame on `channel` under `key_id`; advances the sequence.
    pub fn header(&mut self, channel: Channel, key_id: u8) -> Header {
        let seq = self.next_seq;
        // 2^64 frames never happen in one boot; wrapping keeps this panic-free.
        self.next_seq = self.next_seq.wrapping_add(1);
        Header {
            version: PROTOCOL_VERSION,
            channel,
            aead: self.aead,
            key_id,
            cluster_id: self.cluster_id,
            sender: self.sender,
            epoch: self.epoch,
            peer_epoch: 0,
            seq,
        }
    }
}
