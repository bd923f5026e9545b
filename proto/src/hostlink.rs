//! The host link between a member's management controller and its main CPU: one codec for
//! both ends, told which end it is.
//!
//! Both ends seal with the host-link key under the member's own serial; each direction is
//! its own channel kind ([`Channel::ToMainCpu`], [`Channel::ToController`]), so the direction
//! is authenticated and a frame reflected back to its sender is refused by its kind. Every
//! message but keepalives and the status request must be bound to the receiver's current
//! boot ([`HostMsg::may_be_unbound`]). Key rollover messages move both ends' keyrings in
//! step: the main CPU's when it seals them, the controller's when it accepts them.
//!
//! On the wire a sealed frame travels as [`crate::uart`] bytes.
//!
//! Frames go in the compact form ([`crate::frame`]: 25 bytes shorter, the cluster id and the
//! member's serial left out) once the other end takes it, for as long as it is the same
//! boot: the main CPU lists [`CAP_COMPACT_FRAMES`] in its capabilities, and the controller,
//! told so ([`HostEndpoint::peer_takes_compact`]), answers in compact frames; the main CPU
//! end sends compact frames from the first compact frame it accepted from this boot of its
//! controller. Both ends always accept both forms, so an end of an older release (which
//! neither lists nor sends the form) keeps getting full frames.

use crate::endpoint::{Admit, Endpoint, Receiver, Reject, Senders};
use crate::frame::{Error as FrameError, Header};
use crate::ids::{Channel, Serial};
use crate::keys::{KeySet, Keyring, KeyringError, Psk};
use crate::msg::controller_side::{FromMainCpu, ToMainCpu};
#[cfg(doc)]
use crate::msg::host::CAP_COMPACT_FRAMES;
use crate::msg::host::{Direction, HostMsg};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Senders the host link's replay table tracks: only the other end of this member's link
/// (one serial), plus one slot so that a changed serial is reported as `wrong_sender`.
pub const HOST_REPLAY_SLOTS: usize = 2;

/// Which end of the host link a codec is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The management controller (firmware, or its host-process stand-in).
    Controller,
    /// The main CPU (the daemon).
    MainCpu,
}

impl End {
    fn channels(self) -> (Channel, Channel) {
        match self {
            End::Controller => (Channel::ToMainCpu, Channel::ToController),
            End::MainCpu => (Channel::ToController, Channel::ToMainCpu),
        }
    }

    fn receives(self) -> Direction {
        match self {
            End::Controller => Direction::ToController,
            End::MainCpu => Direction::ToMainCpu,
        }
    }
}

impl Admit for HostMsg {
    fn admit(&self, header: &Header, to: &Receiver) -> Result<(), Reject> {
        let sent_to = match header.channel {
            Channel::ToController => Direction::ToController,
            _ => Direction::ToMainCpu,
        };
        let dir = self.direction();
        if dir != sent_to && dir != Direction::Both {
            return Err(Reject::WrongDirection);
        }
        if matches!(self, HostMsg::InstallKey { .. }) && !header.aead {
            return Err(Reject::KeyInClear);
        }
        if !to.bound && !self.may_be_unbound() {
            return Err(Reject::Unbound);
        }
        Ok(())
    }
}

impl Admit for FromMainCpu {
    fn admit(&self, header: &Header, to: &Receiver) -> Result<(), Reject> {
        self.0.admit(header, to)
    }
}

/// The codec of one end of a host link: seals outgoing messages, opens incoming frames.
#[derive(Clone, Debug)]
pub struct HostEndpoint {
    end: End,
    serial: Serial,
    ep: Endpoint<HOST_REPLAY_SLOTS>,
    /// The other end's boot that takes compact frames (`None`: none known to).
    compact_with: Option<u32>,
}

impl HostEndpoint {
    /// The codec of `end` for member `serial` of `cluster_id`, keyed from `psk` under
    /// `key_id`, in boot `epoch` of this end; `encrypt` seals every frame with the AEAD.
    pub fn new(
        end: End,
        psk: &Psk,
        cluster_id: u32,
        key_id: u8,
        serial: Serial,
        epoch: u32,
        encrypt: bool,
    ) -> Self {
        let (send, recv) = end.channels();
        let keyring = Keyring::new(KeySet::derive(psk, cluster_id, key_id));
        Self {
            end,
            serial,
            ep: Endpoint::new(keyring, cluster_id, serial, epoch, send, recv, encrypt),
            compact_with: None,
        }
    }

    /// The controller's end: the main CPU said it takes compact frames (its capabilities);
    /// they are sent until the main CPU restarts.
    pub fn peer_takes_compact(&mut self) {
        self.compact_with = self.peer_epoch();
    }

    /// True when the frames sealed now go in the compact form.
    pub fn sends_compact(&self) -> bool {
        self.compact_with.is_some() && self.compact_with == self.peer_epoch()
    }

    /// Which end this is.
    pub fn end(&self) -> End {
        self.end
    }

    /// This end's boot epoch.
    pub fn epoch(&self) -> u32 {
        self.ep.epoch()
    }

    /// The other end's boot epoch, once one of its frames was accepted.
    pub fn peer_epoch(&self) -> Option<u32> {
        self.ep.peer_epoch(self.serial)
    }

    /// Turns the AEAD on or off for every frame sealed from now on (a reload of `encrypt`).
    pub fn set_encrypt(&mut self, encrypt: bool) {
        self.ep.set_encrypt(encrypt);
    }

    /// Key id frames are sealed with.
    pub fn sealing_key_id(&self) -> u8 {
        self.ep.keyring().sealing().key_id()
    }

    /// The other key id accepted during a rollover.
    pub fn other_key_id(&self) -> Option<u8> {
        self.ep.keyring().previous_key_id()
    }

    /// Seals `msg` into `out` (bound to the other end's boot when it was heard); returns the
    /// frame length. Key transport ([`HostMsg::InstallKey`]) is always AEAD-sealed. On the
    /// main CPU's end a rollover message also moves this end's keyring, so both ends keep
    /// the same keys; a rollover the keyring refuses is an error and nothing is sealed.
    /// To a controller that answers in compact frames (a release that takes
    /// [`HostMsg::ProbeVerdict`]) a numbered probe answer goes as a verdict, without the
    /// peer's serial, which the request number names.
    pub fn seal(&mut self, msg: &HostMsg, out: &mut [u8]) -> Result<usize, SealError> {
        match msg {
            HostMsg::ProbeAnswer { request, alive, .. } if self.sends_compact() => {
                let verdict = HostMsg::ProbeVerdict {
                    request: *request,
                    alive: *alive,
                };
                self.seal_body(&verdict, &verdict, out)
            }
            _ => self.seal_body(msg, msg, out),
        }
    }

    /// The controller's [`HostEndpoint::seal`], with the controller's own encoder of what it
    /// sends ([`ToMainCpu`]: the firmware does not carry the encoder of the main CPU's
    /// messages).
    pub fn seal_to_main_cpu(&mut self, msg: &HostMsg, out: &mut [u8]) -> Result<usize, SealError> {
        self.seal_body(msg, &ToMainCpu(msg), out)
    }

    /// Seals `msg`, whose body `body` encodes.
    fn seal_body<T: Serialize>(
        &mut self,
        msg: &HostMsg,
        body: &T,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        if msg.direction() == self.end.receives() {
            return Err(SealError::WrongDirection);
        }
        let key_transport = matches!(msg, HostMsg::InstallKey { .. });
        let compact = self.sends_compact();
        let n = self
            .ep
            .seal_as(body, Some(self.serial), key_transport, compact, out)
            .map_err(SealError::Frame)?;
        if self.end == End::MainCpu {
            self.follow_rollover(msg, true)
                .map_err(SealError::Keyring)?;
        }
        Ok(n)
    }

    /// Opens one frame from the other end (decrypting in place), in the order of
    /// [`crate::endpoint`]. On the controller's end an accepted rollover message moves the
    /// keyring (a refusal shows in the agent's `KeyState` answer).
    pub fn open(&mut self, buf: &mut [u8]) -> Result<HostMsg, Reject> {
        let mut msg = None;
        self.open_into(buf, &mut msg)?;
        msg.ok_or(Reject::Decode)
    }

    /// Like [`HostEndpoint::open`], the message decoded into `out` (`None` on a refusal):
    /// the firmware keeps the message (about 1 KiB) in one place instead of moving it
    /// through the callers' stack frames.
    pub fn open_into(&mut self, buf: &mut [u8], out: &mut Option<HostMsg>) -> Result<(), Reject> {
        self.open_as(buf, out)
    }

    /// The controller's [`HostEndpoint::open_into`], with the controller's own decoder of
    /// what a main CPU sends ([`FromMainCpu`]: the firmware does not carry the decoder of
    /// the reports it only sends).
    pub fn open_from_main_cpu(
        &mut self,
        buf: &mut [u8],
        out: &mut Option<FromMainCpu>,
    ) -> Result<(), Reject> {
        self.open_as(buf, out)
    }

    fn open_as<T>(&mut self, buf: &mut [u8], out: &mut Option<T>) -> Result<(), Reject>
    where
        T: DeserializeOwned + Admit + AsRef<HostMsg>,
    {
        let compact = buf.first() == Some(&crate::frame::COMPACT_MAGIC);
        let accepted = self.ep.open_into(buf, Senders::Only(self.serial), out)?;
        if compact && self.end == End::MainCpu {
            // The controller sends the form only if it also takes it.
            self.compact_with = Some(accepted.header.epoch);
        }
        if self.end == End::Controller {
            if let Some(msg) = out.as_ref() {
                let _ = self.follow_rollover(msg.as_ref(), false);
            }
        }
        Ok(())
    }

    /// Applies a rollover phase to the keyring. `strict` (main CPU, sealing): a retire of a
    /// key that is not sealing yet first switches sealing to it.
    fn follow_rollover(&mut self, msg: &HostMsg, strict: bool) -> Result<(), KeyringError> {
        let cluster = self.ep.cluster_id();
        let ring = self.ep.keyring_mut();
        let sealing = ring.sealing().key_id();
        match msg {
            HostMsg::InstallKey { key_id, psk } if sealing != *key_id => {
                ring.accept(KeySet::derive(&Psk(psk.0), cluster, *key_id))
            }
            HostMsg::UseKey { key_id } => ring.seal_with(*key_id),
            HostMsg::RetireKey { key_id } if sealing == *key_id => {
                ring.retire_previous();
                Ok(())
            }
            HostMsg::RetireKey { key_id } if strict => {
                ring.seal_with(*key_id)?;
                ring.retire_previous();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Why a host message was not sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError {
    /// The message does not fit one frame.
    Frame(FrameError),
    /// This end never sends that message.
    WrongDirection,
    /// A rollover message asks for a key the keyring does not hold.
    Keyring(KeyringError),
}

impl core::fmt::Display for SealError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SealError::Frame(e) => write!(f, "sealing host message: {e}"),
            SealError::WrongDirection => f.write_str("this end of the host link never sends it"),
            SealError::Keyring(e) => write!(f, "key rollover: {e}"),
        }
    }
}
