//! This member's own state: forcing and pause (SPEC B5, operator commands), the quality
//! factor's two parts and their combination (SPEC B1), and the flags its peers set
//! (fail-soft, configuration in sync, frozen, conflict).

use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::Forced;

use crate::agent::outbox::Outbox;
use crate::config::{Config, MAX_PAUSE_MS};
use crate::event::EventKind;
use crate::quality;
use crate::status::MemberStatus;

/// This member, as its status shows it.
#[derive(Clone)]
pub(crate) struct Local {
    st: MemberStatus,
    /// The main CPU holds its peers' state ([`ha_proto::msg::host::HostMsg::TableHeld`]);
    /// true until a main CPU that reports it says otherwise.
    table_held: bool,
    /// This member is active in some domain (then the state part never lowers its quality).
    active: bool,
}

impl Local {
    /// This member at boot: not forced, not paused, full quality until told otherwise; but
    /// when its main CPU is watched (`main_cpu_timeout_ms` not 0), quality 0 until the main
    /// CPU is first heard: a member whose main CPU does not run yet forwards nothing, so it
    /// must not take a domain from a live active (it still becomes active when nobody else
    /// is).
    pub(crate) fn new<const M: usize, const D: usize>(
        config: &Config<M, D>,
        now: u64,
        epoch: u32,
    ) -> Self {
        let table_held = config.main_cpu_timeout_ms == 0;
        Local {
            st: MemberStatus {
                serial: config.me,
                model: config.model.clone(),
                firmware: config.firmware,
                forced: Forced::None,
                quality: quality::with_table(100, table_held, false),
                interface_quality: 100,
                hardware_quality: 100,
                config_revision: config.config_revision,
                config_synced: true,
                boot_ms: now,
                epoch,
                paused_until_ms: None,
                frozen: false,
                fail_soft: false,
                conflict: false,
            },
            table_held,
            active: false,
        }
    }

    /// The status of this member.
    pub(crate) fn status(&self) -> &MemberStatus {
        &self.st
    }

    /// True while this member's own pause lasts.
    pub(crate) fn paused(&self) -> bool {
        self.st.paused_until_ms.is_some()
    }

    /// The end of this member's pause, if any.
    pub(crate) fn poll_at(&self) -> u64 {
        self.st.paused_until_ms.unwrap_or(u64::MAX)
    }

    /// An operator command for this member (typed on its main CPU, or relayed by a peer).
    pub(crate) fn apply_admin(&mut self, cmd: AdminCommand, now: u64, links: u8, out: &mut Outbox) {
        let me = &mut self.st;
        match cmd {
            AdminCommand::ForceActive | AdminCommand::ForcePassive | AdminCommand::ResetForcing => {
                let f = match cmd {
                    AdminCommand::ForceActive => Forced::Active,
                    AdminCommand::ForcePassive => Forced::Passive,
                    _ => Forced::None,
                };
                if me.forced != f {
                    me.forced = f;
                    out.event(now, EventKind::ForcingChanged { forced: f });
                    out.heartbeat_now(links);
                }
            }
            AdminCommand::Pause { seconds } => {
                let until = now + (seconds as u64 * 1000).min(MAX_PAUSE_MS);
                me.paused_until_ms = Some(until);
                out.event(now, EventKind::Paused { until_ms: until });
                out.heartbeat_now(links);
            }
            AdminCommand::Resume => {
                if me.paused_until_ms.take().is_some() {
                    out.event(now, EventKind::Resumed);
                    out.heartbeat_now(links);
                }
            }
            AdminCommand::Reload => out.event(now, EventKind::ReloadRequested),
        }
    }

    /// Ends this member's pause when its time is up.
    pub(crate) fn handle_timeout(&mut self, now: u64, links: u8, out: &mut Outbox) {
        if let Some(u) = self.st.paused_until_ms {
            if now >= u {
                self.st.paused_until_ms = None;
                out.event(now, EventKind::Resumed);
                out.heartbeat_now(links);
            }
        }
    }

    /// A new interface part (from the main CPU's interface report).
    pub(crate) fn set_interface_part(&mut self, part: u8, now: u64, links: u8, out: &mut Outbox) {
        self.st.interface_quality = part;
        self.update_quality(now, links, out);
    }

    /// A new hardware part (from the sensor source, or its silence).
    pub(crate) fn set_hardware_part(&mut self, part: u8, now: u64, links: u8, out: &mut Outbox) {
        self.st.hardware_quality = part;
        self.update_quality(now, links, out);
    }

    /// Whether the main CPU holds its peers' state (its report, or its capability to report
    /// it before the first report: false until it does; a restarted main CPU: true until it
    /// says).
    pub(crate) fn set_table_held(&mut self, held: bool, now: u64, links: u8, out: &mut Outbox) {
        self.table_held = held;
        self.update_quality(now, links, out);
    }

    /// Whether this member is active in some domain (after each decision).
    pub(crate) fn set_active(&mut self, active: bool, now: u64, links: u8, out: &mut Outbox) {
        if self.active != active {
            self.active = active;
            self.update_quality(now, links, out);
        }
    }

    /// True while the main CPU says it does not hold its peers' state.
    pub(crate) fn waiting_for_table(&self) -> bool {
        !self.table_held
    }

    /// Recombines the quality factor; a change is an event and is announced at once.
    fn update_quality(&mut self, now: u64, links: u8, out: &mut Outbox) {
        let me = &mut self.st;
        let q = quality::with_table(
            quality::combine(me.interface_quality, me.hardware_quality),
            self.table_held,
            self.active,
        );
        if q != me.quality {
            let from = me.quality;
            me.quality = q;
            out.event(now, EventKind::QualityChanged { from, to: q });
            out.heartbeat_now(links);
        }
    }

    /// A reload's new configuration revision.
    pub(crate) fn set_config_revision(&mut self, revision: u64) {
        self.st.config_revision = revision;
    }

    /// Flags computed from the peers: another firmware among them, all on this revision.
    pub(crate) fn set_peer_flags(&mut self, fail_soft: bool, config_synced: bool) {
        self.st.fail_soft = fail_soft;
        self.st.config_synced = config_synced;
    }

    /// Whether decisions are frozen (this member or a live peer paused).
    pub(crate) fn set_frozen(&mut self, frozen: bool) {
        self.st.frozen = frozen;
    }

    /// Whether this member and a peer are both active in a domain.
    pub(crate) fn set_conflict(&mut self, conflict: bool) {
        self.st.conflict = conflict;
    }
}
