//! Main-CPU daemon of the HA system: the host link to the management controller, interface
//! monitoring, the userspace fast path with stateful filtering, connection-state sync over UDP
//! and the management API. `docs/daemon.md` describes the design.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod dp;
pub mod event_numbers;
pub mod fastpath;
pub mod host_rtt;
pub mod journal;
pub mod kernelpath;
pub mod links;
pub mod metrics;
pub mod mgmt;
pub mod packetio;
pub mod peers;
pub mod probes;
pub mod runtime;
pub mod synckeys;
pub mod syncplane;
pub mod uplink;
