//! Wire contract shared by every part of the HA system: the management-controller firmware,
//! the main-CPU daemon and the host tools all speak these frames.
//!
//! - [`frame`]: the 44-byte header (19 bytes in the host link's compact form), sealing ([`frame::seal_msg`]) and opening ([`frame::open`])
//!   in HMAC-SHA256 or XChaCha20-Poly1305 mode;
//! - [`endpoint`]: the one place where a frame is accepted (channel, sender, binding to the
//!   receiver's boot, replay, decode, admission), with one typed rejection;
//! - [`hostlink`]: the host-link codec, used by both ends with an explicit direction;
//! - [`keys`]: per-channel keys derived from the cluster PSK, key ids for rollover, the one
//!   key-strength rule;
//! - [`replay`]: the sliding replay window per sender and boot epoch;
//! - [`seq`]: sender-side sequence numbering;
//! - [`sensor`]: hardware sensor readings (one kind type for the bridge, the block and the agent);
//! - [`uart`]: COBS + CRC-32 framing for byte streams;
//! - [`msg`]: the versioned message sets of each channel;
//! - [`cluster`]: the members and limits both the messages and the block describe;
//! - [`config_block`]: the member's flash configuration block, its revision digest and the
//!   HA settings a running member reloads.
//!
//! `docs/protocol.md` describes the bytes; `proto/tests/vectors.txt` holds test vectors.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bytes;
pub mod cluster;
pub mod config_block;
pub mod endpoint;
pub mod frame;
pub mod hostlink;
pub mod ids;
pub mod keys;
pub mod msg;
pub mod replay;
pub mod sensor;
pub mod seq;
pub mod text;
pub mod uart;
