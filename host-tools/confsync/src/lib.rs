//! The main CPU's configuration store and its synchronization between members (SPEC D1–D4).
//!
//! - [`store`]: a revisioned store on disk. Edits go to a *draft*; [`store::Store::publish`]
//!   freezes the draft into an immutable revision; only published revisions sync. A standby
//!   member refuses edits. The running revision is the target of one symlink (`current`),
//!   switched with one atomic `rename`.
//! - [`manifest`]: the SHA-256 manifest of a tree (path → content hash, size, mode).
//! - [`protocol`]: the sync protocol as two sans-IO state machines, [`protocol::SenderCore`]
//!   and [`protocol::ReceiverCore`]: no sockets, no files, no clock. Only content whose hash
//!   the receiver lacks is sent.
//! - [`wire`]: the authenticated stream: every message is an `ha_proto` frame on
//!   [`ha_proto::msg::Channel::Management`], sealed and opened by the `ha_proto` endpoint
//!   (the system's one acceptance path), bound to the other end's session;
//! - [`deadline`]: the per-operation, handshake and session deadlines of a session;
//! - [`keys`]: where the keys come from (the daemon's keyring file, followed at every
//!   session), the one strength rule applied to them, the persistent session counter;
//! - [`sync`]: the I/O shell that runs the cores over a stream and the store: staging into a
//!   new directory, verification, then the atomic switch.
//! - [`jobs`]: periodic sync jobs (DHCP leases every 5 min, certificates every 60 min), a
//!   sans-IO scheduler.
//! - [`compare`]: diffs between manifests (`hactl diff`, `hactl synctest`).
//! - [`service`]: the member's configuration-sync service: the `config_*` requests of the
//!   management API, the receiver (each session on its own thread), the periodic jobs and
//!   the per-peer status (`confsync service`);
//! - [`events`]: the service's event log, read with `hactl config events`.
#![warn(missing_docs)]

pub mod compare;
pub mod deadline;
pub mod enrol;
pub mod events;
pub mod jobs;
pub mod keys;
pub mod manifest;
pub mod protocol;
pub mod service;
pub mod store;
pub mod sync;
pub mod wire;

/// A SHA-256 content hash.
pub type Hash = [u8; 32];

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
