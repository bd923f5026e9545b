//! The agent's two endpoints, their keys and the frame counters: every member frame and
//! every host-link frame is sealed and opened here ([`ha_proto::endpoint`],
//! [`ha_proto::hostlink`]), and the member keys roll over here (SPEC D2).

use ha_proto::endpoint::{Endpoint, Reject, Senders};
use ha_proto::frame::{Header, MAX_FRAME_LEN};
use ha_proto::hostlink::{End, HostEndpoint, SealError};
use ha_proto::keys::{KeySet, Keyring, KeyringError, Psk};
use ha_proto::msg::controller_side::FromMainCpu;
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::member::MemberMsg;
use ha_proto::msg::{Channel, Serial};
use heapless::Vec;

use crate::config::Config;
use crate::status::Counters;

/// The member endpoint (up to `M` senders), the controller's end of the host link, and what
/// they counted.
#[derive(Clone)]
pub(crate) struct Wire<const M: usize> {
    /// Member frames: sealing and the one acceptance path.
    member: Endpoint<M>,
    /// The controller's end of the host link.
    host: HostEndpoint,
    counters: Counters,
}

impl<const M: usize> Wire<M> {
    /// Both endpoints of member `config.me` in boot `epoch`, keyed from the configuration.
    pub(crate) fn new<const D: usize>(config: &Config<M, D>, epoch: u32) -> Self {
        let keys = KeySet::derive(&config.psk, config.cluster_id, config.key_id);
        Wire {
            member: Endpoint::new(
                Keyring::new(keys),
                config.cluster_id,
                config.me,
                epoch,
                Channel::Member,
                Channel::Member,
                config.encrypt,
            ),
            host: HostEndpoint::new(
                End::Controller,
                &config.psk,
                config.cluster_id,
                config.key_id,
                config.me,
                epoch,
                config.encrypt,
            ),
            counters: Counters::default(),
        }
    }

    /// A probe answer to a request asked before the peer was last heard.
    pub(crate) fn count_stale_probe_answer(&mut self) {
        self.counters.stale_probe_answers = self.counters.stale_probe_answers.saturating_add(1);
    }

    /// The frame counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Opens a member frame from one of `members`; the caller counts a refusal
    /// ([`Wire::count_rejected`]), since it refuses frames of its own too.
    pub(crate) fn open_member(
        &mut self,
        bytes: &mut [u8],
        members: &[Serial],
    ) -> Result<(Header, MemberMsg), Reject> {
        let (acc, msg) = self
            .member
            .open::<MemberMsg>(bytes, Senders::AnyOf(members))?;
        Ok((acc.header, msg))
    }

    /// Counts a member frame taken by the agent.
    pub(crate) fn count_received(&mut self) {
        self.counters.received = self.counters.received.wrapping_add(1);
    }

    /// Counts a refused member frame.
    pub(crate) fn count_rejected(&mut self, r: Reject) {
        self.counters.rejected.count(r);
    }

    /// Opens a host-link frame from the main CPU into `out` (with the controller's decoder,
    /// [`FromMainCpu`]); a refusal is counted.
    pub(crate) fn open_host(
        &mut self,
        bytes: &mut [u8],
        out: &mut Option<FromMainCpu>,
    ) -> Result<(), Reject> {
        self.host
            .open_from_main_cpu(bytes, out)
            .inspect_err(|&r| self.counters.host_rejected.count(r))
    }

    /// Seals a member message into `buf` (in place: a frame is not moved through stack
    /// frames); false (counted) if it cannot be sealed.
    pub(crate) fn seal_member(
        &mut self,
        msg: &MemberMsg,
        buf: &mut Vec<u8, MAX_FRAME_LEN>,
    ) -> bool {
        buf.clear();
        let sealed = buf
            .resize_default(MAX_FRAME_LEN)
            .ok()
            .and_then(|()| self.member.seal(msg, None, false, buf).ok());
        match sealed {
            Some(n) => {
                buf.truncate(n);
                self.counters.sent = self.counters.sent.wrapping_add(1);
                true
            }
            None => {
                buf.clear();
                self.counters.seal_errors = self.counters.seal_errors.saturating_add(1);
                false
            }
        }
    }

    /// The main CPU takes compact host-link frames: seal them so until it restarts.
    pub(crate) fn host_takes_compact(&mut self) {
        self.host.peer_takes_compact();
    }

    /// Seals a host-link message for the main CPU into `out`; returns the frame length.
    pub(crate) fn seal_host(&mut self, msg: &HostMsg, out: &mut [u8]) -> Result<usize, SealError> {
        self.host.seal_to_main_cpu(msg, out)
    }

    /// The boot epoch of a member last heard, if any.
    pub(crate) fn member_epoch(&self, serial: Serial) -> Option<u32> {
        self.member.peer_epoch(serial)
    }

    /// The main CPU's boot last heard on the host link, if any.
    pub(crate) fn host_epoch(&self) -> Option<u32> {
        self.host.peer_epoch()
    }

    /// Turns the AEAD on or off on both endpoints (a reload of `encrypt`).
    pub(crate) fn set_encrypt(&mut self, encrypt: bool) {
        self.member.set_encrypt(encrypt);
        self.host.set_encrypt(encrypt);
    }

    /// Forgets a member no longer listed (its replay state).
    pub(crate) fn forget(&mut self, serial: Serial) {
        self.member.forget(serial);
    }

    // ----- member keys (SPEC D2) -----

    /// The member keyring.
    pub(crate) fn keyring(&self) -> &Keyring {
        self.member.keyring()
    }

    /// Phase 1 of a rollover: also accept member frames under `key_id`, derived from `psk`
    /// for `cluster_id`. A weak key is refused.
    pub(crate) fn accept_key(
        &mut self,
        psk: &Psk,
        cluster_id: u32,
        key_id: u8,
    ) -> Result<(), KeyringError> {
        if psk.check_strength().is_err() {
            return Err(KeyringError::NotAccepted(key_id));
        }
        let next = KeySet::derive(psk, cluster_id, key_id);
        self.member.keyring_mut().accept(next)
    }

    /// [`HostMsg::InstallKey`]: installing the key already sealing is acknowledged, not an
    /// error; a refusal (the same key id, a weak key) shows in the key state (the key id is
    /// not listed).
    pub(crate) fn install_key(&mut self, psk: &Psk, cluster_id: u32, key_id: u8) {
        if self.keyring().sealing().key_id() != key_id {
            let _ = self.accept_key(psk, cluster_id, key_id);
        }
    }

    /// [`HostMsg::UseKey`]: phase 2, seal with `key_id` (refused unless it is accepted).
    pub(crate) fn use_key(&mut self, key_id: u8) {
        let _ = self.member.keyring_mut().seal_with(key_id);
    }

    /// [`HostMsg::RetireKey`]: phase 3. Only the key now sealing may stay; anything else
    /// leaves the state unchanged, and the key state answer shows the refusal.
    pub(crate) fn retire_key(&mut self, key_id: u8) {
        if self.keyring().sealing().key_id() == key_id {
            self.member.keyring_mut().retire_previous();
        }
    }
}
