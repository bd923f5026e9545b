//! The peers this daemon knows: each member's data-plane addresses (the liveness probe's
//! targets, the state-sync address), keyed by serial.
//!
//! The daemon's configuration file gives the first list (`[[peer]]`); a membership change
//! (`hactl cluster join`/`remove`, [`crate::mgmt`]) edits it at run time and saves it to
//! `<state_dir>/peers.json`, which a restart reads instead of the file's list. So the
//! controller's member list, the configuration block and the probe list change together,
//! from one command: a replacement is never "dead at once" because its serial is unknown
//! here (issue 10, defect 11).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ha_mgmt_api::{MemberAddresses, PeerAddresses};
use ha_proto::msg::Serial;
use serde::{Deserialize, Serialize};

use crate::config::PeerConfig;

/// Name of the saved list in the state directory.
pub const PEERS_FILE: &str = "peers.json";

/// One peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its serial.
    pub serial: Serial,
    /// Its member addresses on the data interfaces (probe targets).
    pub probe: Vec<Ipv4Addr>,
    /// Its HA-interface address (state sync).
    pub sync: Option<Ipv4Addr>,
}

/// The peer list and where it is saved.
#[derive(Clone, Debug, Default)]
pub struct PeerBook {
    peers: Vec<Peer>,
    path: Option<PathBuf>,
    /// Bumped by every change (the sync thread hands a new list to the sync engine).
    generation: u64,
}

impl PeerBook {
    /// The list saved in `state_dir` by the last membership change, else the configuration
    /// file's. A saved list that cannot be read is an error (the daemon does not start on
    /// a list it cannot trust).
    pub fn load(state_dir: &Path, configured: &[PeerConfig]) -> Result<Self, String> {
        let path = state_dir.join(PEERS_FILE);
        let peers = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Vec<Peer>>(&bytes).map_err(|e| {
                format!(
                    "{}: {e} (the peer list of the last membership change; fix or remove it)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => configured
                .iter()
                .filter_map(|p| {
                    Some(Peer {
                        serial: Serial::new(&p.serial)?,
                        probe: p.probe.clone(),
                        sync: p.sync,
                    })
                })
                .collect(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            peers,
            path: Some(path),
            generation: 0,
        })
    }

    /// A list that is never saved (tests, a daemon without a state directory).
    pub fn in_memory(peers: Vec<Peer>) -> Self {
        Self {
            peers,
            path: None,
            generation: 0,
        }
    }

    /// The probe targets of `serial` (empty when unknown).
    pub fn probe_targets(&self, serial: Serial) -> Vec<Ipv4Addr> {
        self.peers
            .iter()
            .find(|p| p.serial == serial)
            .map(|p| p.probe.clone())
            .unwrap_or_default()
    }

    /// The state-sync peer: the first peer with a sync address.
    pub fn sync_peer(&self) -> Option<Ipv4Addr> {
        self.peers.iter().find_map(|p| p.sync)
    }

    /// The addresses known for `serial`, if it is a peer.
    pub fn addresses(&self, serial: Serial) -> Option<MemberAddresses> {
        self.peers
            .iter()
            .find(|p| p.serial == serial)
            .map(|p| MemberAddresses {
                probe: p.probe.clone(),
                sync: p.sync,
            })
    }

    /// Adds `serial` with `addresses`, or replaces its addresses, and saves the list.
    /// Nothing changes when the save fails.
    pub fn upsert(&mut self, serial: Serial, addresses: &MemberAddresses) -> Result<(), String> {
        let mut next = self.peers.clone();
        let peer = Peer {
            serial,
            probe: addresses.probe.clone(),
            sync: addresses.sync,
        };
        match next.iter_mut().find(|p| p.serial == serial) {
            Some(p) => *p = peer,
            None => next.push(peer),
        }
        self.commit(next)
    }

    /// Forgets `serial` and saves the list. Nothing changes when the save fails.
    pub fn remove(&mut self, serial: Serial) -> Result<(), String> {
        let next: Vec<Peer> = self
            .peers
            .iter()
            .filter(|p| p.serial != serial)
            .cloned()
            .collect();
        self.commit(next)
    }

    fn commit(&mut self, next: Vec<Peer>) -> Result<(), String> {
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
            ha_persist::write_atomic(path, &bytes, 0o600)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.peers = next;
        self.generation += 1;
        Ok(())
    }

    /// Changes so far (0: the list the daemon started with).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The peers' serials.
    pub fn serials(&self) -> Vec<Serial> {
        self.peers.iter().map(|p| p.serial).collect()
    }

    /// The list as the management API shows it.
    pub fn report(&self) -> Vec<PeerAddresses> {
        self.peers
            .iter()
            .map(|p| PeerAddresses {
                serial: p.serial.as_str().to_string(),
                addresses: MemberAddresses {
                    probe: p.probe.clone(),
                    sync: p.sync,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(s: &str) -> Serial {
        Serial::new(s).expect("serial")
    }

    fn addrs(probe: &[[u8; 4]], sync: Option<[u8; 4]>) -> MemberAddresses {
        MemberAddresses {
            probe: probe.iter().map(|a| Ipv4Addr::from(*a)).collect(),
            sync: sync.map(Ipv4Addr::from),
        }
    }

    #[test]
    fn a_change_is_saved_and_read_back_instead_of_the_configured_list() {
        let dir = tempfile::tempdir().expect("tmp");
        let configured = vec![PeerConfig {
            serial: "SN-B".into(),
            probe: vec![Ipv4Addr::new(10, 1, 0, 12)],
            sync: Some(Ipv4Addr::new(10, 9, 0, 2)),
        }];
        let mut book = PeerBook::load(dir.path(), &configured).expect("load");
        assert_eq!(
            book.probe_targets(serial("SN-B")),
            [Ipv4Addr::new(10, 1, 0, 12)]
        );
        assert!(book.probe_targets(serial("SN-C")).is_empty());
        book.remove(serial("SN-B")).expect("remove");
        book.upsert(
            serial("SN-C"),
            &addrs(&[[10, 1, 0, 13], [10, 2, 0, 13]], Some([10, 9, 0, 3])),
        )
        .expect("add");
        // A restart reads the saved list, not the configuration file's.
        let again = PeerBook::load(dir.path(), &configured).expect("reload");
        assert!(again.probe_targets(serial("SN-B")).is_empty());
        assert_eq!(
            again.probe_targets(serial("SN-C")),
            [Ipv4Addr::new(10, 1, 0, 13), Ipv4Addr::new(10, 2, 0, 13)]
        );
        assert_eq!(again.sync_peer(), Some(Ipv4Addr::new(10, 9, 0, 3)));
    }

    #[test]
    fn a_damaged_saved_list_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(PEERS_FILE), b"{not json").expect("write");
        let e = PeerBook::load(dir.path(), &[]).expect_err("damaged");
        assert!(e.contains(PEERS_FILE), "{e}");
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut book = PeerBook::load(&dir.path().join("missing-dir"), &[]).expect("load");
        assert!(book
            .upsert(serial("SN-C"), &addrs(&[[10, 1, 0, 13]], None))
            .is_err());
        assert!(book.probe_targets(serial("SN-C")).is_empty());
    }
}
