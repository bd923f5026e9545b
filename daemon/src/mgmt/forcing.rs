//! Forcing a member active or passive, or removing its forcing (SPEC B2, E2): this member
//! (`hactl active`) or another one by serial (`hactl active SN-B`), whose forcing this
//! member's controller relays over the HA links and whose heartbeats confirm it. Before a
//! planned swap the member that hands over first drains its changes to the peer, and the one
//! that takes over first resynchronizes the peer's table: for a forcing of another member,
//! this member's own part is the opposite one (forcing the peer active may make this member
//! hand over; forcing it passive may make this member take over).

use std::time::{Duration, Instant};

use ha_mgmt_api::{ErrorCode, ModeReport, Reply};
use ha_proto::msg::host::{HostMsg, MemberSummary, StatusReport};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{Forced, Serial};

use super::{err, member_mode, MgmtServer, CONFIRM_TIMEOUT};

/// A relayed forcing not confirmed by the member's heartbeats this long is sent again: one
/// relay frame may be lost on a link.
const RELAY_RESEND: Duration = Duration::from_millis(500);

/// How long a forcing of another member waits for it to be heard on an HA link before it
/// refuses: a link flap (heartbeats late on a loaded machine) is not a reason to refuse an
/// operator's planned swap.
const UNHEARD_GRACE: Duration = Duration::from_secs(2);

fn command_for(want: Forced) -> AdminCommand {
    match want {
        Forced::Active => AdminCommand::ForceActive,
        Forced::Passive => AdminCommand::ForcePassive,
        Forced::None => AdminCommand::ResetForcing,
    }
}

/// The mode report of member `m` from a status that arrived at `arrived` (Unix ms).
pub(super) fn report_of(m: &MemberSummary, r: &StatusReport, arrived: u64) -> ModeReport {
    ModeReport {
        serial: m.serial.as_str().to_string(),
        mode: member_mode(m),
        forced: m.forced,
        since: arrived.saturating_sub(r.uptime_ms.saturating_sub(m.mode_since_ms)) / 1000,
        paused: m.paused,
    }
}

impl MgmtServer {
    /// Forces this member (`Forced::None`: removes its forcing), after the wait its planned
    /// swap needs, and answers with its mode once its controller confirms.
    pub(super) fn force_local(&self, want: Forced) -> Reply {
        match want {
            Forced::Active => self.resync_before_takeover(),
            Forced::Passive => self.drain_before_handover(),
            Forced::None => {}
        }
        self.admin_confirmed(command_for(want), "the forcing", |m| m.forced == want)
    }

    /// Forces `member` (any member of the cluster, this one included) and answers with its
    /// mode once its heartbeats show the forcing.
    pub(super) fn force_member(&self, member: &str, want: Forced) -> Reply {
        let Some(serial) = Serial::new(member) else {
            return err(
                ErrorCode::BadRequest,
                format!("{member:?} is not a serial (1 to 16 printable characters)"),
            );
        };
        if serial == self.shared().serial {
            return self.force_local(want);
        }
        // A member not heard right now may be in a short flap of its links (heartbeats
        // late on a loaded machine): it gets UNHEARD_GRACE to be heard again.
        let grace_end = Instant::now() + UNHEARD_GRACE;
        loop {
            let (report, _) = match self.fresh_status() {
                Ok(s) => s,
                Err(e) => return *e,
            };
            let Some(target) = report.members.iter().find(|m| m.serial == serial) else {
                let names: Vec<&str> = report.members.iter().map(|m| m.serial.as_str()).collect();
                return err(
                    ErrorCode::NotFound,
                    format!("{member} is not a member (members: {})", names.join(", ")),
                );
            };
            if target.alive {
                break;
            }
            if Instant::now() >= grace_end {
                return err(
                    ErrorCode::Unreachable,
                    format!(
                        "{member} is not heard on any HA link (waited {} s): it cannot get \
                         the forcing",
                        UNHEARD_GRACE.as_secs()
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // This member's part of the planned swap (see the module).
        match want {
            Forced::Active => self.drain_before_handover(),
            Forced::Passive => self.resync_before_takeover(),
            Forced::None => {}
        }
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        loop {
            if let Err(e) = self.send(HostMsg::Admin {
                target: Some(serial),
                command: command_for(want),
            }) {
                return *e;
            }
            let resend = Instant::now() + RELAY_RESEND;
            while Instant::now() < resend.min(deadline) {
                match self.fresh_status() {
                    Ok((r, t)) => {
                        if let Some(m) = r
                            .members
                            .iter()
                            .find(|m| m.serial == serial && m.forced == want)
                        {
                            return Reply::Mode(report_of(m, &r, t));
                        }
                    }
                    Err(e) => return *e,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() >= deadline {
                return err(
                    ErrorCode::Unreachable,
                    format!(
                        "{member}'s heartbeats do not show the forcing (relayed over the HA \
                         links for {} s)",
                        CONFIRM_TIMEOUT.as_secs()
                    ),
                );
            }
        }
    }
}
