//! Traits for what the HA agent observes and drives on a management controller: disks, RAID,
//! TPM, PSUs, fans and extension modules (sensors), the status LED, the HA links and the host
//! link.
//!
//! A board crate implements these with its drivers (on QEMU `mps2-an385` the sensors arrive
//! from a host-side board simulator over a UART, see [`bridge`]); the firmware binary wires
//! them to the sans-IO agent. Nothing here does I/O by itself and nothing here knows the HA
//! protocol beyond the byte framing of a serial line.
//!
//! - [`bridge`]: the sensor bridge wire format ([`bridge::SensorReport`], postcard);
//! - [`sensors`]: the [`sensors::SensorSource`] trait;
//! - [`led`]: the status LED over an `embedded-hal` [`OutputPin`](embedded_hal::digital::OutputPin);
//! - [`link`]: frame links ([`link::FrameLink`]) and the COBS framing of a byte stream
//!   ([`link::SerialFrameRx`], [`link::SerialFrameTx`], on `embedded-io-async`);
//! - [`timer`]: the arithmetic of a time driver on down-counting timers (wraps, alarms).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod led;
pub mod link;
pub mod sensors;
pub mod timer;
