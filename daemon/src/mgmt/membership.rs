//! Cluster membership on this member (SPEC A6): a member removed or added reaches the
//! controller (its member list), which confirms with its status, then the configuration
//! block, then this daemon's peer list (probe targets and state-sync peer, saved in the
//! state directory): one request changes all three.

use ha_mgmt_api::*;
use ha_proto::config_block::{LinkAddr, MemberEntry};
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::{Serial, MAX_MEMBERS};

use super::{err, MgmtServer};
use crate::peers::PeerBook;
use crate::runtime::{unix_ms, Shared};
use ha_mgmt_api::MemberAddresses;
use ha_persist::{read_block, write_block};

impl MgmtServer {
    /// Adds `serial` at `main_link` to the member list (see [`MgmtServer::change_members`]),
    /// then its data-plane `addresses` to this daemon's peer list. A daemon that probes its
    /// peers refuses a member without probe addresses: its liveness check would declare the
    /// new member dead at once, and a lost HA link to it would mean a takeover unchecked.
    pub(super) fn member_add(
        &self,
        serial: &str,
        main_link: &str,
        addresses: &MemberAddresses,
    ) -> Reply {
        let Some(s) = Serial::new(serial) else {
            return err(ErrorCode::BadRequest, format!("{serial:?} is not a serial"));
        };
        if addresses.probe.is_empty() && !self.shared().addresses.probe.is_empty() {
            return err(
                ErrorCode::BadRequest,
                format!(
                    "{serial} has no probe addresses: this member's liveness check could not \
                     ask it and would declare it dead at once (join with `hactl cluster join \
                     --ha-address`, which reads them from the new member's daemon)"
                ),
            );
        }
        let Ok(addr) = main_link.parse::<std::net::SocketAddrV4>() else {
            return err(
                ErrorCode::BadRequest,
                format!("main link {main_link:?}: expected IPv4:PORT"),
            );
        };
        if let Some(r) = self.member_add_again(s, addr, addresses) {
            return r;
        }
        self.change_members(
            |list| {
                if list.iter().any(|m| m.serial == s) {
                    return Err(format!("{serial} is already a member"));
                }
                list.push(MemberEntry {
                    serial: s,
                    main_link: LinkAddr {
                        ip: addr.ip().octets(),
                        port: addr.port(),
                    },
                })
                .map_err(|_| format!("the cluster is full ({MAX_MEMBERS} members)"))
            },
            |peers| peers.upsert(s, addresses),
        )
    }

    /// A `MemberAdd` of a serial already in the configuration block: the same main link is
    /// the same member asked again (a join retried after its answer was lost): its
    /// addresses in the peer list are brought up to date if they differ, and the answer is
    /// success without a member list change; another link is refused (the member would
    /// have two). `None`: not a member yet (or no block to read: `change_members` says so).
    fn member_add_again(
        &self,
        s: Serial,
        addr: std::net::SocketAddrV4,
        addresses: &MemberAddresses,
    ) -> Option<Reply> {
        let block = read_block(self.block_path.as_ref()?).ok()?;
        let link = block.members.iter().find(|m| m.serial == s)?.main_link;
        let serial = s.as_str();
        let at = std::net::SocketAddrV4::new(link.ip.into(), link.port);
        if at != addr {
            return Some(err(
                ErrorCode::Refused,
                format!(
                    "{serial} is already a member, at {at} (not {addr}): remove it first \
                     (`hactl cluster remove {serial}`) to give it another link"
                ),
            ));
        }
        let mut sh = self.shared();
        let known = sh.peers.addresses(s);
        if known.as_ref() == Some(addresses) {
            return Some(Reply::Done {
                message: format!("{serial} is already a member at {at}: nothing changed"),
            });
        }
        Some(match sh.peers.upsert(s, addresses) {
            Ok(()) => Reply::Done {
                message: format!(
                    "{serial} is already a member at {at}: its addresses are brought up to date"
                ),
            },
            Err(e) => err(
                ErrorCode::Internal,
                format!("{serial} is already a member, but its addresses were not saved: {e}"),
            ),
        })
    }

    /// Removes `serial` from the member list (see [`MgmtServer::change_members`]).
    /// A serial that is not in the list is [`ErrorCode::NotFound`] (a follower of the cluster
    /// document tells it from a refusal).
    pub(super) fn member_remove(&self, serial: &str) -> Reply {
        let me = self.shared().serial;
        let listed = match self.block_path.as_deref().map(read_block) {
            Some(Ok(b)) => Some(b.members.iter().any(|m| m.serial.as_str() == serial)),
            _ => None,
        };
        if listed == Some(false) {
            return err(ErrorCode::NotFound, format!("{serial} is not a member"));
        }
        self.change_members(
            |list| {
                if me.as_str() == serial {
                    return Err("a member cannot remove itself".into());
                }
                let before = list.len();
                list.retain(|m| m.serial.as_str() != serial);
                if list.len() == before {
                    return Err(format!("{serial} is not a member"));
                }
                Ok(())
            },
            |peers| match Serial::new(serial) {
                Some(s) => peers.remove(s),
                None => Ok(()),
            },
        )
    }

    /// Changes this member's HA member list: the configuration block's list, edited by
    /// `edit`, goes to the controller (`HostMsg::Members`); once its status lists exactly
    /// those members, the block is saved with them (so a restart keeps them), and `peers`
    /// updates this daemon's peer list. A refused edit or list changes nothing.
    pub(super) fn change_members(
        &self,
        edit: impl FnOnce(&mut heapless::Vec<MemberEntry, MAX_MEMBERS>) -> Result<(), String>,
        peers: impl FnOnce(&mut PeerBook) -> Result<(), String>,
    ) -> Reply {
        let Some(path) = self.block_path.clone() else {
            return err(ErrorCode::Unsupported, "no configuration block to change");
        };
        let mut block = match read_block(&path) {
            Ok(b) => b,
            Err(e) => return err(ErrorCode::Internal, e),
        };
        if let Err(e) = edit(&mut block.members) {
            return err(ErrorCode::Refused, e);
        }
        if let Err(e) = block.validate() {
            return err(
                ErrorCode::Refused,
                format!("the new member list is invalid: {e}"),
            );
        }
        let want: Vec<Serial> = block.members.iter().map(|m| m.serial).collect();
        if let Err(e) = self.send(HostMsg::Members(block.members.clone())) {
            return *e;
        }
        let same = move |s: &Shared| {
            s.status.as_ref().is_some_and(|(r, _)| {
                r.members.len() == want.len() && r.members.iter().all(|m| want.contains(&m.serial))
            })
        };
        if !self.wait_for(same) {
            return err(
                ErrorCode::Unreachable,
                "the management controller did not take the new member list",
            );
        }
        if let Err(e) = write_block(&path, &block) {
            return err(
                ErrorCode::Internal,
                format!(
                    "the controller uses the new member list, but the configuration block \
                     was not saved ({e}): a restart would bring the old list back"
                ),
            );
        }
        // The member list is part of the revision: the controller reports the new one.
        self.set_applied_block(block.clone());
        let revision_note = match self.apply_settings(&block) {
            Ok(()) => String::new(),
            Err(_) => format!(
                " (the controller did not confirm revision {:016x} yet: `hactl reload` sends it again)",
                block.revision()
            ),
        };
        // Last, this daemon's peer list (probe targets, state-sync peer); its failure is
        // reported: the controller and the block already changed.
        if let Err(e) = peers(&mut self.shared().peers) {
            return err(
                ErrorCode::Internal,
                format!(
                    "the controller and the configuration block use the new member list, but \
                     this daemon's peer list was not saved ({e}): its liveness probe and state \
                     sync use the old list"
                ),
            );
        }
        let list: Vec<&str> = block.members.iter().map(|m| m.serial.as_str()).collect();
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind: ha_mgmt_api::EventKind::Members,
            member: None,
            detail: format!("member list now {}", list.join(", ")),
            seq: None,
        });
        Reply::Done {
            message: format!(
                "{} now has {} members: {}{revision_note}",
                self.shared().serial.as_str(),
                list.len(),
                list.join(", ")
            ),
        }
    }
}
