//! The controller's codec of host-link bodies: it decodes only the messages a main CPU sends
//! ([`FromMainCpu`]) and encodes only those it sends itself ([`ToMainCpu`]).
//!
//! `HostMsg`'s derived decoder handles all 26 variants, and most of its code is for the
//! reports the controller sends and never receives (`Status`, `Details`, `Counters`,
//! `Event`, `Roles`): about 9 KB of the firmware's flash (docs/firmware.md "Size"). Serde has
//! no derive for "these variants only", so this decoder is written by hand, one line per
//! variant a main CPU sends ([`HostMsg::direction`]): the variant's number, then its fields in
//! declaration order, which postcard encodes exactly as a tuple of them, so a struct variant
//! is read as a tuple. A body holding a message the controller itself sends is a decode
//! error here (`Reject::Decode`), where the full decoder let the admission rule refuse it
//! (`Reject::WrongDirection`); both are counted refusals of a frame that only an
//! authenticated, misbehaving main CPU can send. `from_main_cpu_decodes_exactly_the_main_cpu_messages`
//! in `proto/tests/frames.rs` checks it against the derived decoder for every message.
//!
//! The encoder is the mirror image: one line per message the controller sends, a struct
//! variant written as the tuple of its fields; `to_main_cpu_encodes_exactly_the_controller_messages`
//! checks its bytes against the derived encoder's.

use core::fmt;

use serde::de::{self, EnumAccess, VariantAccess, Visitor};
use serde::ser::{self, Serialize, Serializer};
use serde::{Deserialize, Deserializer};

use super::host::HostMsg;

/// A message from the main CPU, decoded by the controller's own decoder (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromMainCpu(pub HostMsg);

impl AsRef<HostMsg> for FromMainCpu {
    fn as_ref(&self) -> &HostMsg {
        &self.0
    }
}

impl<'de> Deserialize<'de> for FromMainCpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_enum("HostMsg", &[], MainCpuVariants)
            .map(FromMainCpu)
    }
}

/// Visits the variants a main CPU sends (module docs).
struct MainCpuVariants;

impl<'de> Visitor<'de> for MainCpuVariants {
    type Value = HostMsg;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a host-link message a main CPU sends")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<HostMsg, A::Error> {
        let (index, v): (u32, A::Variant) = data.variant()?;
        // The numbers are the variants' places in `HostMsg` (postcard's enum encoding).
        Ok(match index {
            0 => HostMsg::Interfaces(v.newtype_variant()?),
            1 => {
                let (target, command) = v.newtype_variant()?;
                HostMsg::Admin { target, command }
            }
            2 => {
                let (peer, alive) = v.newtype_variant()?;
                HostMsg::ProbeResult { peer, alive }
            }
            5 => HostMsg::Ping {
                nonce: v.newtype_variant()?,
            },
            6 => HostMsg::Pong {
                nonce: v.newtype_variant()?,
            },
            7 => {
                v.unit_variant()?;
                HostMsg::StatusRequest
            }
            10 => {
                let (key_id, psk) = v.newtype_variant()?;
                HostMsg::InstallKey { key_id, psk }
            }
            11 => HostMsg::UseKey {
                key_id: v.newtype_variant()?,
            },
            12 => HostMsg::RetireKey {
                key_id: v.newtype_variant()?,
            },
            14 => HostMsg::Members(v.newtype_variant()?),
            15 => HostMsg::Settings(v.newtype_variant()?),
            16 => HostMsg::EventsSince {
                seq: v.newtype_variant()?,
            },
            17 => {
                v.unit_variant()?;
                HostMsg::DetailsRequest
            }
            19 => {
                v.unit_variant()?;
                HostMsg::CountersRequest
            }
            21 => HostMsg::Capabilities(v.newtype_variant()?),
            23 => {
                let (peer, request, alive) = v.newtype_variant()?;
                HostMsg::ProbeAnswer {
                    peer,
                    request,
                    alive,
                }
            }
            24 => {
                let (request, alive) = v.newtype_variant()?;
                HostMsg::ProbeVerdict { request, alive }
            }
            25 => HostMsg::TableHeld(v.newtype_variant()?),
            // A message the controller sends, or one of a later release.
            _ => return Err(de::Error::custom("not a message a main CPU sends")),
        })
    }
}

/// A message the controller sends, encoded by the controller's own encoder (module docs);
/// a message a main CPU sends is refused.
#[derive(Clone, Copy, Debug)]
pub struct ToMainCpu<'a>(pub &'a HostMsg);

impl Serialize for ToMainCpu<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Postcard writes the variant's number and then the value; the names are unused.
        const N: &str = "HostMsg";
        match self.0 {
            HostMsg::Roles(roles) => s.serialize_newtype_variant(N, 3, "", roles),
            HostMsg::ProbeRequest { peer, within_ms } => {
                s.serialize_newtype_variant(N, 4, "", &(peer, within_ms))
            }
            HostMsg::Ping { nonce } => s.serialize_newtype_variant(N, 5, "", nonce),
            HostMsg::Pong { nonce } => s.serialize_newtype_variant(N, 6, "", nonce),
            HostMsg::Status(report) => s.serialize_newtype_variant(N, 8, "", report),
            HostMsg::Event(event) => s.serialize_newtype_variant(N, 9, "", event),
            HostMsg::KeyState {
                sealing_key_id,
                accepted,
            } => s.serialize_newtype_variant(N, 13, "", &(sealing_key_id, accepted)),
            HostMsg::Details(details) => s.serialize_newtype_variant(N, 18, "", details),
            HostMsg::Counters(counters) => s.serialize_newtype_variant(N, 20, "", counters),
            HostMsg::ProbeAsk {
                peer,
                within_ms,
                request,
            } => s.serialize_newtype_variant(N, 22, "", &(peer, within_ms, request)),
            _ => Err(ser::Error::custom("not a message the controller sends")),
        }
    }
}
