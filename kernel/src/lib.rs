//! The Linux kernel data path (issue 12). First part: the kernel's connection tracking table
//! read and written over ctnetlink ([`conntrack`]): events from the active member's table,
//! entries installed into the standby's; and the cluster addresses ([`address`]): moved with
//! rtnetlink and announced with gratuitous ARP / unsolicited neighbour advertisements; and the
//! daemon's own nftables guard that keeps a standby from creating fresh entries ([`guard`]);
//! [`path`] holds the decisions that tie them together, [`select`] which connections are
//! synced, [`domains`] which HA domain a connection belongs to (load sharing), and
//! [`write_behind`] when a standby writes the peer's entries into its kernel (all
//! four sans-IO).

#![warn(missing_docs)]

pub mod address;
pub mod conntrack;
pub mod domains;
pub mod guard;
pub mod path;
pub mod select;
pub mod write_behind;
