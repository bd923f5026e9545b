//! Wire contract shared by every part of the HA system: the management-controller firmware,
//! the main-CPU daemon and the host tools all speak these frames.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod msg;
