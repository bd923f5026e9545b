//! A member's main CPU as far as roles go, and its host link to the controller.
//!
//! The main CPU opens the controller's frames with the real host-link codec
//! ([`ha_proto::hostlink`], the main CPU's end), applies [`HostMsg::Roles`] (each domain's
//! role by domain id) and answers keepalives, as the daemon does. The link between the two
//! is a UART: frames arrive in order, after a short delay, or are lost.

use ha_proto::hostlink::{End, HostEndpoint};
use ha_proto::keys::Psk;
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::{Role, Serial, MAX_DOMAINS};
use oorandom::Rand64;

/// The main CPU of one member.
pub struct MainCpu {
    ep: HostEndpoint,
    /// The role it applies in each domain, by domain id (`None`: never told).
    roles: [Option<Role>; MAX_DOMAINS],
    /// Frames it refused (unbound before the controller heard it, replays, ...).
    pub refused: u32,
}

impl MainCpu {
    /// The main CPU of member `serial`, in its boot `epoch`.
    pub fn new(psk: &Psk, cluster_id: u32, serial: Serial, epoch: u32, encrypt: bool) -> Self {
        MainCpu {
            ep: HostEndpoint::new(End::MainCpu, psk, cluster_id, 0, serial, epoch, encrypt),
            roles: [None; MAX_DOMAINS],
            refused: 0,
        }
    }

    /// The role it applies in domain `id`.
    pub fn role(&self, id: u8) -> Option<Role> {
        self.roles.get(id as usize).copied().flatten()
    }

    /// A frame from the controller. Returns the sealed answer to send back, if any (a
    /// keepalive's answer).
    pub fn receive(&mut self, frame: &mut [u8]) -> Option<Vec<u8>> {
        match self.ep.open(frame) {
            Ok(HostMsg::Roles(list)) => {
                for r in &list {
                    if let Some(slot) = self.roles.get_mut(r.domain as usize) {
                        *slot = Some(r.role);
                    }
                }
                None
            }
            Ok(HostMsg::Ping { nonce }) => {
                let mut buf = vec![0u8; ha_proto::frame::MAX_FRAME_LEN];
                let n = self.ep.seal(&HostMsg::Pong { nonce }, &mut buf).ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Ok(_) => None,
            Err(_) => {
                self.refused += 1;
                None
            }
        }
    }
}

/// One direction of a host link: lossy, in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Uart {
    /// When the last frame sent is delivered: a later frame never overtakes it.
    last_delivery: u64,
}

impl Uart {
    /// The delivery time of a frame sent at `now`, or `None` when it is lost.
    pub fn send(
        &mut self,
        rng: &mut Rand64,
        now: u64,
        loss: f64,
        delay: (u64, u64),
    ) -> Option<u64> {
        if rng.rand_float() < loss {
            return None;
        }
        let t = (now + delay.0 + rng.rand_range(0..delay.1 - delay.0 + 1)).max(self.last_delivery);
        self.last_delivery = t;
        Some(t)
    }
}
