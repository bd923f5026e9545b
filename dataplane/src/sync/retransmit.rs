//! The reliable stream: sender side (frames in flight, acknowledgements, round-trip estimate,
//! retransmission timeouts) and receiver side (in-order delivery through a bounded reorder
//! buffer, cumulative + selective acknowledgements).
//!
//! Data frames carry their own reliable sequence number (`rseq`) in a *stream*; the frame
//! header's sequence number is new on every (re)transmission, so the replay window accepts
//! retransmissions. The receiver delivers frames in `rseq` order (later ones wait, at most
//! [`RX_WINDOW`] ahead) and answers with a cumulative acknowledgement (`next`) plus a bitmap of
//! the 64 frames after it. The sender keeps at most its window in flight and retransmits a
//! frame not acknowledged within the retransmission timeout (RFC 6298 estimate, at least the
//! configured minimum, doubled per resend, at most [`MAX_RTO_MS`]).

use std::collections::{BTreeMap, VecDeque};

use crate::tables::Millis;

use super::wire::{Records, SyncMsg};

/// Frames the receiver buffers ahead of the next expected one (reorder buffer bound). Each
/// holds at most one frame's records as bytes, so the buffer holds at most 4,096 × 1,412 B
/// (5.6 MB) whatever a peer sends; above the default send window (1,024) with room to spare.
pub const RX_WINDOW: u64 = 4096;

/// Frames retransmitted per poll at most, oldest first: when the peer was merely slow (its
/// thread descheduled), the whole window times out at once; resending it all would double the
/// load exactly when the peer is behind. The acknowledgements that arrive meanwhile cancel the
/// rest.
pub const MAX_RETRANSMITS_PER_POLL: usize = 64;

/// Largest retransmission timeout (after backoff).
pub const MAX_RTO_MS: Millis = 1_000;

/// A data frame sent and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Inflight {
    /// The message, kept for retransmission (resealed each time).
    pub msg: SyncMsg,
    /// Its reliable sequence number (the queue is in this order, without gaps).
    pub rseq: u64,
    sent_at: Millis,
    /// Transmissions so far (1 = sent once); the retransmission timeout doubles with each.
    sends: u32,
    acked: bool,
}

/// The sending side of the reliable stream.
#[derive(Debug, Default)]
pub(crate) struct TxStream {
    /// Current stream id.
    pub stream: u32,
    /// Next reliable sequence number.
    pub next_rseq: u64,
    /// Frames in flight, oldest first.
    pub inflight: VecDeque<Inflight>,
    /// Smoothed round-trip time and its variation (RFC 6298) in integer ms: srtt × 8.
    srtt8: Option<u64>,
    /// Round-trip variation × 4.
    rttvar4: u64,
}

impl TxStream {
    /// Starts a new stream: everything in flight is forgotten.
    pub fn restart(&mut self) {
        self.stream = self.stream.wrapping_add(1);
        self.next_rseq = 0;
        self.inflight.clear();
        self.srtt8 = None;
    }

    /// The next data message of this stream carrying `records`, recorded as sent at `now`.
    pub fn push(&mut self, records: Records, now: Millis) -> &SyncMsg {
        let rseq = self.next_rseq;
        self.next_rseq += 1;
        self.inflight.push_back(Inflight {
            msg: SyncMsg::Data {
                stream: self.stream,
                rseq,
                records,
            },
            rseq,
            sent_at: now,
            sends: 1,
            acked: false,
        });
        &self.inflight[self.inflight.len() - 1].msg
    }

    /// An acknowledgement of `stream`: frames below `next` and those of the `sack` bitmap are
    /// done; frames sent once give a round-trip sample (Karn).
    pub fn on_ack(&mut self, stream: u32, next: u64, sack: u64, now: Millis) {
        if stream != self.stream {
            return;
        }
        let mut sample = None;
        for f in self.inflight.iter_mut() {
            if f.rseq > next.saturating_add(64) {
                break;
            }
            let selected = f.rseq > next && sack & (1 << (f.rseq - next - 1)) != 0;
            if !f.acked && (f.rseq < next || selected) {
                f.acked = true;
                if f.sends == 1 {
                    sample = Some(now.saturating_sub(f.sent_at));
                }
            }
        }
        if let Some(r) = sample {
            self.rtt_sample(r);
        }
        while self.inflight.front().is_some_and(|f| f.acked) {
            self.inflight.pop_front();
        }
    }

    /// RFC 6298 estimator in integer milliseconds (srtt × 8, rttvar × 4).
    fn rtt_sample(&mut self, r: Millis) {
        match self.srtt8 {
            None => {
                self.srtt8 = Some(r * 8);
                self.rttvar4 = r * 2;
            }
            Some(s8) => {
                let srtt = s8 / 8;
                let dev = srtt.abs_diff(r);
                self.rttvar4 = self.rttvar4 - self.rttvar4 / 4 + dev;
                self.srtt8 = Some(s8 - s8 / 8 + r);
            }
        }
    }

    /// Current retransmission timeout: srtt + 4 rttvar, at least `min_ms`.
    pub fn rto(&self, min_ms: Millis) -> Millis {
        let est = self.srtt8.map_or(0, |s8| s8 / 8 + self.rttvar4);
        est.clamp(min_ms, MAX_RTO_MS.max(min_ms))
    }

    /// Positions in [`TxStream::inflight`] of the frames to send again now (oldest first, at
    /// most [`MAX_RETRANSMITS_PER_POLL`]), marked as sent at `now`.
    pub fn due(&mut self, now: Millis, rto: Millis) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, f) in self.inflight.iter_mut().enumerate() {
            if due.len() >= MAX_RETRANSMITS_PER_POLL {
                break;
            }
            let backoff = rto
                .saturating_mul(1 << (f.sends.saturating_sub(1)).min(6))
                .min(MAX_RTO_MS.max(rto));
            if !f.acked && now.saturating_sub(f.sent_at) >= backoff {
                f.sent_at = now;
                f.sends = f.sends.saturating_add(1);
                due.push(i);
            }
        }
        due
    }
}

/// What [`RxStream::accept`] made of a data frame.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// These records, in order (the frame and the buffered ones it released).
    InOrder(Vec<Records>),
    /// Already delivered.
    Duplicate,
    /// Buffered (or beyond the reorder buffer, or of an older stream): nothing to apply.
    Held,
}

/// The receiving side of the reliable stream.
#[derive(Debug, Default)]
pub(crate) struct RxStream {
    /// Stream and next expected rseq, once a frame arrived.
    at: Option<(u32, u64)>,
    ooo: BTreeMap<u64, Records>,
    ack_due: bool,
}

impl RxStream {
    /// Forgets everything (a new peer or session).
    pub fn reset(&mut self) {
        self.at = None;
        self.ooo.clear();
        self.ack_due = false;
    }

    /// A data frame of `stream` with sequence number `rseq`.
    pub fn accept(&mut self, stream: u32, rseq: u64, records: Records) -> Delivery {
        let next = match self.at {
            Some((s, next)) if s == stream => next,
            // A newer stream (bulk restart): start over at its frame 0. Streams are compared
            // with wrapping arithmetic.
            Some((s, _)) if stream.wrapping_sub(s) < u32::MAX / 2 => {
                self.ooo.clear();
                self.at = Some((stream, 0));
                0
            }
            Some(_) => return Delivery::Held, // an older stream's late frame
            None => {
                self.at = Some((stream, 0));
                0
            }
        };
        self.ack_due = true;
        if rseq < next {
            return Delivery::Duplicate;
        }
        if rseq > next {
            if rseq - next < RX_WINDOW {
                self.ooo.entry(rseq).or_insert(records);
            }
            return Delivery::Held;
        }
        let mut out = vec![records];
        let mut next = next.saturating_add(1);
        while let Some(r) = self.ooo.remove(&next) {
            out.push(r);
            next += 1;
        }
        self.at = Some((stream, next));
        Delivery::InOrder(out)
    }

    /// The acknowledgement to send, once per burst of data frames.
    pub fn take_ack(&mut self) -> Option<SyncMsg> {
        if !std::mem::take(&mut self.ack_due) {
            return None;
        }
        let (stream, next) = self.at?;
        let mut sack = 0u64;
        for (&r, _) in self
            .ooo
            .range(next.saturating_add(1)..next.saturating_add(65))
        {
            sack |= 1 << (r - next - 1);
        }
        Some(SyncMsg::Ack { stream, next, sack })
    }
}
