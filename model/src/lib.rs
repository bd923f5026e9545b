//! Exhaustive model checking of the real HA agent with [stateright].
//!
//! The model runs N copies of the real [`ha_agent::Agent`] (2 or 3 members, 1 or 2 domains
//! with non-contiguous ids such as `{1, 3}`) and lets an adversarial environment choose,
//! at every step, among all of:
//!
//! - deliver any in-flight frame (any order: reordering; or FIFO per channel),
//! - lose one, duplicate one (bounded counts),
//! - hold one late, past the next wake-up (bounded count; it still arrives within
//!   `max_delay_ms`); every other frame arrives before the next wake-up of any agent,
//! - advance time to the earliest wake-up of a running agent ([`Agent::poll_at`]) and
//!   tick every agent due; time never passes a frame's delivery deadline or a pending
//!   probe's answer deadline, so every frame is eventually delivered or lost,
//! - answer a probe truthfully (alive iff the peer runs) or lose the answer (bounded),
//! - crash a member (bounded) and restart it later with a higher epoch.
//!
//! Frames are the agents' real sealed bytes; the checker explores every interleaving and
//! checks the properties of [`properties`] in every reachable state. Nothing of the
//! election is copied here: the only logic the model has is the environment's.
//!
//! # The state abstraction (why the search is finite and deduplication is sound)
//!
//! The agent is not `Hash`/`Eq`, and its raw state would never repeat: sequence numbers,
//! counters, the event ring and absolute timestamps grow forever. A [`State`] therefore
//! keeps the agents themselves (cloned from state to state) and defines equality by a
//! canonical digest ([`State::digest`]) of everything that decides the future:
//!
//! - each agent's status view ([`Agent::status`]: roles, forcing, quality, flags, a silent
//!   sensor source, a lost main CPU, and per peer: liveness state with its probe deadlines, the start of a
//!   lost peer's return, epoch, announced roles and for how long, link states), its LED,
//!   and its private timers
//!   ([`Agent::private_timers`]: next heartbeat, peers' pause starts, end of the startup
//!   window, hold-down starts, last resync reports, the sensor source's last report);
//! - every time value **relative to now and clamped** to ± [`ModelConfig::time_clamp_ms`]
//!   (the longest agent timer plus a frame delay). The agent only ever compares a time
//!   difference with one of its timers, so two ages beyond the longest timer behave alike,
//!   and the agent is invariant under a shift of time;
//! - each in-flight frame by its channel, its sender epoch, its age, its decoded content
//!   (times clamped the same way) and one bit: would the receiver accept it now? The model
//!   finds it by delivering the frame to a copy of the receiver (the agent's own acceptance
//!   path: authentication, replay window, binding to the receiver's boot), so it copies none
//!   of those rules; the bit is refreshed whenever the receiver's agent changes and checked
//!   against the real delivery (a mismatch fails the contract property). Sequence numbers
//!   themselves are left out: only that bit depends on them (the window of 128 is never
//!   outrun within the delay bound);
//! - the faults used, and the history the properties need (time since the last fault and
//!   per pair, since when two actives coexist, role changes since the last fault), clamped
//!   just past the bound each property compares them with.
//!
//! Left out: counters, the event ring, sequence numbers, uptimes beyond the clamp, when a
//! peer or link last changed state (reported to the main CPU only) and the host side (its
//! roles refresh, keepalive nonce and member addresses): outputs and history that no
//! decision reads. The roles refresh does add wake-ups to [`Agent::poll_at`], which the
//! model ticks at; such a tick only moves the clock ([`Agent::handle_timeout`] is
//! idempotent) and, at most, offers a held frame one more delivery time. So a state with a
//! refresh due soon can do everything one without it can, and folding the two together
//! loses none of the behaviours that tick at member-facing wake-ups only.
//!
//! Two modes follow. **Relative** (`horizon_ms: None`, the default): `now` is not in the
//! digest, so a quiet cluster returns to an already-seen state one heartbeat interval
//! later and the search ends by itself once no new state appears: the properties then hold
//! for behaviours of *any* length within the fault bounds. **Absolute** (`horizon_ms:
//! Some(h)`): `now` is in the digest and time stops at `h`; used to cross-check the
//! relative abstraction on small bounds (both must agree).
//!
//! No partial-order reduction: exploring deliveries to different receivers in one order
//! only (they commute) needed two more fields in the digest, which split more states than
//! the pruning saved (2 × 1: 648 k states against 524 k without; 3 × 1: 118 k against 88 k).
//!
//! # Bounds and cost
//!
//! The state count grows with the number of perturbations one behaviour may combine
//! ([`Faults::total`], [`Faults::late`]) far more than with time. Measured in release on 2
//! cores (with other builds running): 2 members × 1 domain, two faults and two late frames:
//! 503,607 states; 2 × 2: 608,174; 3 members, one fault and no late frame: 87,358 (3 × 1)
//! and 95,084 (3 × 2); 40 s for the four (the agent with a lost peer's return window).
//! Three members with two faults: 1.5 M states in
//! about 2 minutes; with one fault and one late frame: 2.9 M in 5.5 minutes on one thread
//! (the start-up, where every delivery changes a role and sends frames, is the costly
//! part). `cargo xtask model`
//! runs the four cheap ones (CI); the flags of `ha-model` raise any bound.
//!
//! What would make a merge unsound: a new private time-valued field not listed in
//! `private_timers`, a new decision-relevant field of the status view not hashed in
//! [`State::digest`], a comparison against a constant longer than the clamp, or a decision
//! that reads a field left out above. Each of those is a change to the agent this crate
//! should follow. The model's agents have no sensor source (`sensor_timeout_ms` 0, never a
//! report), watch no main CPU (`main_cpu_timeout_ms` 0; probe answers are its only
//! messages) and never pause (no operator command): the sensor and main-CPU timeouts (1 s
//! and more) and the pause bound (10 minutes) would otherwise be comparisons far beyond the
//! clamp.
//!
//! [`Agent::poll_at`]: ha_agent::Agent::poll_at
//! [`Agent::handle_timeout`]: ha_agent::Agent::handle_timeout
//! [`Agent::status`]: ha_agent::Agent::status
//! [`Agent::private_timers`]: ha_agent::Agent::private_timers
//! [stateright]: https://docs.rs/stateright
#![warn(missing_docs)]

pub mod check;
pub mod config;
pub mod model;
pub mod mutants;
pub mod properties;
pub mod state;

pub use check::{check, Outcome, Violation};
pub use config::{Faults, ModelConfig};
pub use model::{Action, HaModel};
pub use state::State;
