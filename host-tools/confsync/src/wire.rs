//! The authenticated message stream of a sync session.
//!
//! Each [`SyncMsg`] is postcard-encoded into the body of one `ha_proto` frame on
//! [`Channel::Management`], sealed with the management key derived from the cluster PSK
//! (HMAC-SHA256, or XChaCha20-Poly1305 when the cluster encrypts), and written to the stream
//! behind a 2-byte big-endian length. The reader opens the frame with its keyring (so a PSK
//! rollover in progress is honoured), rejects other channels and clusters, and checks the
//! sender's sequence with a replay window. Session nonces in the protocol bind the session.

use std::io::{self, BufReader, BufWriter, Read, Write};

use ha_proto::frame::{self, MAX_FRAME_LEN};
use ha_proto::keys::Keyring;
use ha_proto::msg::{Channel, Serial};
use ha_proto::replay::ReplayWindow;
use ha_proto::seq::Sequencer;

use crate::protocol::SyncMsg;

/// Why the stream failed.
#[derive(Debug)]
pub enum WireError {
    /// The transport failed or closed.
    Io(io::Error),
    /// A frame did not authenticate, was replayed, or is for another channel or cluster.
    Auth(&'static str),
    /// The body is not a sync message, or a message is too large for a frame.
    Codec,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "transport: {e}"),
            WireError::Auth(r) => write!(f, "frame rejected: {r}"),
            WireError::Codec => f.write_str("undecodable or oversized message"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Security context of one end: cluster, keys, own identity.
#[derive(Clone, Debug)]
pub struct Security {
    /// Cluster id.
    pub cluster_id: u32,
    /// Accepted keys; the sealing set seals.
    pub keyring: Keyring,
    /// This member's serial (frame sender).
    pub me: Serial,
    /// Encrypt bodies (AEAD) instead of authenticating only.
    pub encrypt: bool,
}

/// A framed, authenticated message stream over a reader and a writer.
pub struct Wire<R: Read, W: Write> {
    reader: BufReader<R>,
    writer: BufWriter<W>,
    sec: Security,
    seq: Sequencer,
    window: ReplayWindow,
    peer: Option<Serial>,
    buf: Vec<u8>,
    /// Frames sent.
    pub frames_out: u64,
    /// Frames received.
    pub frames_in: u64,
}

impl<R: Read, W: Write> Wire<R, W> {
    /// A stream with a fresh random boot epoch for this session.
    pub fn new(reader: R, writer: W, sec: Security) -> io::Result<Self> {
        let epoch = getrandom::u32().map_err(|e| io::Error::other(e.to_string()))?;
        let mut seq = Sequencer::new(sec.cluster_id, sec.me, epoch);
        seq.aead = sec.encrypt;
        Ok(Wire {
            reader: BufReader::with_capacity(64 * 1024, reader),
            writer: BufWriter::with_capacity(64 * 1024, writer),
            sec,
            seq,
            window: ReplayWindow::default(),
            peer: None,
            buf: vec![0u8; MAX_FRAME_LEN],
            frames_out: 0,
            frames_in: 0,
        })
    }

    /// Serial of the peer, once a frame from it authenticated.
    pub fn peer(&self) -> Option<Serial> {
        self.peer
    }

    /// Queues one message (buffered; [`Wire::flush`] or [`Wire::recv`] sends it).
    pub fn send(&mut self, msg: &SyncMsg) -> Result<(), WireError> {
        let keys = self.sec.keyring.sealing();
        let hdr = self.seq.header(Channel::Management, keys.key_id());
        let n = frame::seal_msg(keys, &hdr, msg, &mut self.buf).map_err(|_| WireError::Codec)?;
        self.writer.write_all(&(n as u16).to_be_bytes())?;
        self.writer.write_all(&self.buf[..n])?;
        self.frames_out += 1;
        Ok(())
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<(), WireError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Flushes, then reads, authenticates and decodes the next message.
    pub fn recv(&mut self) -> Result<SyncMsg, WireError> {
        self.writer.flush()?;
        let mut len = [0u8; 2];
        self.reader.read_exact(&mut len)?;
        let n = usize::from(u16::from_be_bytes(len));
        if n > MAX_FRAME_LEN {
            return Err(WireError::Auth("oversize"));
        }
        self.reader.read_exact(&mut self.buf[..n])?;
        let opened = frame::open(&self.sec.keyring, self.sec.cluster_id, &mut self.buf[..n])
            .map_err(|e| WireError::Auth(e.name()))?;
        let h = opened.header;
        if h.channel != Channel::Management {
            return Err(WireError::Auth("wrong channel"));
        }
        if h.sender == self.sec.me {
            return Err(WireError::Auth("reflected frame (own serial)"));
        }
        match self.peer {
            Some(p) if p != h.sender => return Err(WireError::Auth("sender changed")),
            _ => self.peer = Some(h.sender),
        }
        self.window
            .check_and_record(h.epoch, h.seq)
            .map_err(|e| WireError::Auth(e.name()))?;
        let msg = opened.decode::<SyncMsg>().map_err(|_| WireError::Codec)?;
        self.frames_in += 1;
        Ok(msg)
    }
}

/// Reads a key file (64 hex digits, as `hactl psk generate` writes) that only its owner can
/// access. Errors never contain the key.
pub fn read_key_file(path: &std::path::Path) -> Result<ha_proto::keys::Psk, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "key file {} is accessible by group or others; chmod 600 it",
            path.display()
        ));
    }
    let mut text = std::fs::read(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    let mut psk = ha_proto::keys::Psk([0u8; ha_proto::keys::KEY_LEN]);
    let t = text.trim_ascii();
    let ok = t.len() == 64
        && t.chunks_exact(2).enumerate().all(|(i, pair)| {
            match std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
            {
                Some(b) => {
                    psk.0[i] = b;
                    true
                }
                None => false,
            }
        });
    text.iter_mut().for_each(|b| *b = 0);
    if ok {
        Ok(psk)
    } else {
        Err(format!(
            "{} is not a key file (64 hex digits)",
            path.display()
        ))
    }
}
