//! Identifiers of this member's HA links.

/// Identifies an HA link of this member: 0 is the main link, 1 the backup link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u8);

impl LinkId {
    /// The main HA link (Ethernet, UDP).
    pub const MAIN: LinkId = LinkId(0);
    /// The backup HA link (a serial line).
    pub const BACKUP: LinkId = LinkId(1);
}
