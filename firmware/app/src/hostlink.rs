//! The controller's end of the host link (UART1): frames sealed with the Host channel key,
//! body `HostMsg`, in `ha_proto::uart` COBS framing. Same rules as the main CPU's end
//! (`ha_daemon::hostlink::HostCodec`), from the other side.

use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::{self, Error as FrameError, MAX_FRAME_LEN};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::{Channel, Serial};
use ha_proto::replay::ReplayTable;
use ha_proto::seq::Sequencer;

/// Senders tracked by the replay table: the main CPU, plus one slot for its next boot.
const REPLAY_SLOTS: usize = 2;

/// Why an incoming host frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Header, tag or body refused by `ha_proto::frame` (or the replay window).
    Frame(FrameError),
    /// Not the host channel.
    WrongChannel,
    /// Not sent under this member's serial.
    WrongSender,
    /// Our own epoch: a reflection of our own frame.
    Reflected,
    /// A message only the controller sends.
    WrongDirection,
    /// A key sent without the AEAD.
    KeyInClear,
}

impl Reject {
    /// Short name for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Reject::Frame(e) => e.name(),
            Reject::WrongChannel => "wrong_channel",
            Reject::WrongSender => "wrong_sender",
            Reject::Reflected => "reflected",
            Reject::WrongDirection => "wrong_direction",
            Reject::KeyInClear => "key_in_clear",
        }
    }
}

/// True for messages the controller sends (and therefore never accepts).
fn from_controller(msg: &HostMsg) -> bool {
    matches!(
        msg,
        HostMsg::RoleDecision { .. }
            | HostMsg::ProbeRequest { .. }
            | HostMsg::Ping { .. }
            | HostMsg::Pong { .. }
            | HostMsg::Status(_)
            | HostMsg::Event(_)
            | HostMsg::KeyState { .. }
    )
}

/// Seals outgoing and opens incoming host-link frames.
pub struct HostCodec {
    serial: Serial,
    cluster_id: u32,
    encrypt: bool,
    keyring: Keyring,
    seq: Sequencer,
    replay: ReplayTable<REPLAY_SLOTS>,
}

impl HostCodec {
    /// The controller's codec for the member of `cfg`, sending under `epoch`.
    pub fn new(cfg: &ConfigBlock, epoch: u32) -> Self {
        Self {
            serial: cfg.serial,
            cluster_id: cfg.cluster_id,
            encrypt: cfg.encrypt,
            keyring: Keyring::new(KeySet::derive(&cfg.psk, cfg.cluster_id, cfg.key_id)),
            seq: Sequencer::new(cfg.cluster_id, cfg.serial, epoch),
            replay: ReplayTable::new(),
        }
    }

    /// Seals `msg` into `out`, returning the frame length.
    pub fn seal(
        &mut self,
        msg: &HostMsg,
        out: &mut [u8; MAX_FRAME_LEN],
    ) -> Result<usize, FrameError> {
        let mut hdr = self
            .seq
            .header(Channel::Host, self.keyring.sealing().key_id());
        hdr.aead = self.encrypt;
        frame::seal_msg(self.keyring.sealing(), &hdr, msg, out)
    }

    /// Authenticates and decodes one frame from the main CPU (decrypting in place), checks
    /// its freshness and direction, and follows a key rollover it carries.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<HostMsg, Reject> {
        let opened = frame::open(&self.keyring, self.cluster_id, buf).map_err(Reject::Frame)?;
        let h = opened.header;
        if h.channel != Channel::Host {
            return Err(Reject::WrongChannel);
        }
        if h.sender != self.serial {
            return Err(Reject::WrongSender);
        }
        if h.epoch == self.seq.epoch {
            return Err(Reject::Reflected);
        }
        let msg: HostMsg = opened.decode().map_err(Reject::Frame)?;
        if from_controller(&msg) {
            return Err(Reject::WrongDirection);
        }
        if matches!(msg, HostMsg::InstallKey { .. }) && !h.aead {
            return Err(Reject::KeyInClear);
        }
        self.replay
            .check_and_record(h.sender, h.epoch, h.seq)
            .map_err(Reject::Frame)?;
        // Follow the rollover as the agent does (the agent's KeyState answer reports it).
        let sealing = self.keyring.sealing().key_id();
        match &msg {
            HostMsg::InstallKey { key_id, psk } if sealing != *key_id => {
                let next = KeySet::derive(&Psk(psk.0), self.cluster_id, *key_id);
                let _ = self.keyring.accept(next);
            }
            HostMsg::UseKey { key_id } => {
                let _ = self.keyring.seal_with(*key_id);
            }
            HostMsg::RetireKey { key_id } if sealing == *key_id => {
                self.keyring.retire_previous();
            }
            _ => {}
        }
        Ok(msg)
    }
}
