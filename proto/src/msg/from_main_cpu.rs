//! The controller's decoder of host-link bodies: only the messages a main CPU sends.
//!
//! `HostMsg`'s derived decoder handles all 25 variants, and most of its code is for the
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

use core::fmt;

use serde::de::{self, EnumAccess, VariantAccess, Visitor};
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
            // A message the controller sends, or one of a later release.
            _ => return Err(de::Error::custom("not a message a main CPU sends")),
        })
    }
}
