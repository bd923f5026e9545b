//! The protocol's errors as the log shows them: the same text as their `Display`, written
//! with defmt, so that core::fmt's machinery for them (about 1.9 KB of flash) stays out of
//! the firmware (docs/firmware.md "Size").

use defmt::{write, Format, Formatter};
use ha_proto::config_block::{ConfigBlockError, ConfigField};
use ha_proto::frame::{Error as FrameError, MAX_FRAME_LEN};
use ha_proto::hostlink::SealError;
use ha_proto::keys::{KeyringError, WeakKey, MAX_ONES, MIN_DISTINCT_BYTES, MIN_ONES};
use ha_proto::text::{Truncating, Words};

/// A sentence the agent or the protocol says in words (a refused configuration), in the log:
/// the same sentence as the event log's and the host tools', without core::fmt.
pub struct WordsText<'a>(pub &'a dyn Words);

impl Format for WordsText<'_> {
    fn format(&self, f: Formatter) {
        let mut s: heapless::String<200> = heapless::String::new();
        self.0.words(&mut Truncating(&mut s));
        write!(f, "{=str}", s.as_str());
    }
}

/// A host message that could not be sealed.
pub struct SealErrorText<'a>(pub &'a SealError);

impl Format for SealErrorText<'_> {
    fn format(&self, f: Formatter) {
        match self.0 {
            SealError::Frame(e) => write!(f, "sealing host message: {}", FrameErrorText(e)),
            SealError::WrongDirection => write!(f, "this end of the host link never sends it"),
            SealError::Keyring(KeyringError::SameKeyId(id)) => write!(
                f,
                "key rollover: the new key must have a key id other than the current {=u8}",
                id
            ),
            SealError::Keyring(KeyringError::NotAccepted(id)) => write!(
                f,
                "key rollover: key id {=u8} is not accepted: install it first",
                id
            ),
        }
    }
}

struct FrameErrorText<'a>(&'a FrameError);

impl Format for FrameErrorText<'_> {
    fn format(&self, f: Formatter) {
        match *self.0 {
            FrameError::Truncated => write!(f, "frame truncated"),
            FrameError::Oversize => write!(f, "frame longer than {=usize} bytes", MAX_FRAME_LEN),
            FrameError::BadMagic => write!(f, "not an HA frame (bad magic)"),
            FrameError::UnknownVersion(v) => write!(f, "unknown protocol version {=u8}", v),
            FrameError::UnknownKind(k) => write!(f, "unknown message kind {=u8}", k),
            FrameError::BadFlags(x) => write!(f, "undefined flag bits {=u8:#04x}", x),
            FrameError::TrailingBytes => write!(f, "bytes after the tag"),
            FrameError::WrongCluster(c) => write!(f, "frame for another cluster ({=u32})", c),
            FrameError::UnknownKey(k) => write!(f, "sealed with unknown key id {=u8}", k),
            FrameError::BadTag => write!(f, "authentication tag does not verify"),
            FrameError::Replay => write!(f, "replayed frame"),
            FrameError::StaleEpoch => write!(f, "frame from an earlier boot of the sender"),
            FrameError::TableFull => write!(f, "replay table full"),
            FrameError::Decode => write!(f, "body is not a valid message"),
            FrameError::Encode => write!(f, "message too large for a frame"),
            FrameError::BufferTooSmall => write!(f, "output buffer too small"),
        }
    }
}

/// Why the configuration block was refused.
pub struct BlockErrorText<'a>(pub &'a ConfigBlockError);

impl Format for BlockErrorText<'_> {
    fn format(&self, f: Formatter) {
        match *self.0 {
            ConfigBlockError::Missing => write!(f, "no configuration block (erased flash)"),
            ConfigBlockError::BadMagic => write!(f, "not a configuration block (bad magic)"),
            ConfigBlockError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported configuration block format version {=u16}",
                    v
                )
            }
            ConfigBlockError::BadLength(n) => {
                write!(f, "bad configuration block body length {=u16}", n)
            }
            ConfigBlockError::BadChecksum => write!(
                f,
                "configuration block digest mismatch (corrupt or partly written)"
            ),
            ConfigBlockError::Invalid(field) => write!(
                f,
                "invalid configuration block field: {=str}",
                field_name(field)
            ),
            ConfigBlockError::BufferTooSmall { need } => {
                write!(f, "output buffer too small: {=usize} bytes needed", need)
            }
            ConfigBlockError::WeakKey(w) => write!(f, "cluster key refused: {}", WeakKeyText(w)),
        }
    }
}

fn field_name(field: ConfigField) -> &'static str {
    match field {
        ConfigField::Body => "body encoding",
        ConfigField::Serial => "serial",
        ConfigField::Members => "members",
        ConfigField::Address => "member address",
        ConfigField::StateSyncPort => "state-sync port",
        ConfigField::Timers => "timer profile",
        ConfigField::Domains => "domains",
        ConfigField::Weights => "weights",
        ConfigField::Psk => "psk",
    }
}

struct WeakKeyText(WeakKey);

impl Format for WeakKeyText {
    fn format(&self, f: Formatter) {
        match self.0 {
            WeakKey::FewDistinctBytes(n) => write!(
                f,
                "weak key: only {=u8} distinct byte values (random keys have about 28; at least {=u8} needed)",
                n,
                MIN_DISTINCT_BYTES
            ),
            WeakKey::Repeating(p) => write!(f, "weak key: it repeats a {=u8}-byte pattern", p),
            WeakKey::Sequence => write!(f, "weak key: its bytes form a counting sequence"),
            WeakKey::Unbalanced(ones) => write!(
                f,
                "weak key: {=u16} of 256 bits set (random keys have 128 ± 8; {=u16}–{=u16} accepted)",
                ones,
                MIN_ONES,
                MAX_ONES
            ),
        }
    }
}
