//! The Linux kernel data path (issue 12). First part: the kernel's connection tracking table
//! read and written over ctnetlink ([`conntrack`]): events from the active member's table,
//! entries installed into the standby's.

#![warn(missing_docs)]

pub mod conntrack;
