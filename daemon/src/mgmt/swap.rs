//! The waits before a planned swap: the active drains its changes to the peer before it
//! hands over, the passive resynchronizes the peer's table before it takes over.

use super::{MgmtServer, RESYNC_BOUND};
use crate::runtime::unix_ms;
use crate::syncplane::{ResyncHook, ResyncOutcome};
use ha_proto::msg::Role;

impl MgmtServer {
    /// Whether the local member is active in some domain now (a fresh status); `None` when
    /// the controller does not answer.
    pub(super) fn locally_active(&self) -> Option<bool> {
        let (r, _) = self.fresh_status().ok()?;
        Some(
            r.members
                .iter()
                .find(|m| m.local)
                .is_some_and(|m| m.domains.iter().any(|d| d.role == Role::Active)),
        )
    }

    /// Runs a wait before a planned swap — `hook` with [`RESYNC_BOUND`] — when the local
    /// member's role is the one the wait is for (`when_active`), and puts what `describe`
    /// makes of the outcome in the event log as `kind`.
    pub(super) fn wait_before_swap(
        &self,
        hook: Option<&ResyncHook>,
        when_active: bool,
        kind: ha_mgmt_api::EventKind,
        describe: fn(ResyncOutcome) -> Option<String>,
    ) {
        let Some(hook) = hook else { return };
        if self.locally_active() != Some(when_active) {
            return;
        }
        let Some(detail) = describe(hook(RESYNC_BOUND)) else {
            return;
        };
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind,
            member: None,
            detail,
            seq: None,
        });
    }

    /// The wait for the peer to acknowledge every change before a planned swap: only when
    /// this member is active now.
    pub(super) fn drain_before_handover(&self) {
        self.wait_before_swap(
            self.drain.as_ref(),
            true,
            ha_mgmt_api::EventKind::BulkSyncSent,
            |outcome| match outcome {
                ResyncOutcome::Complete(d) => Some(format!(
                    "before the planned swap: the peer acknowledged every change in {} ms",
                    d.as_millis()
                )),
                ResyncOutcome::TimedOut(d) => Some(format!(
                    "before the planned swap: changes still unacknowledged after {} ms, swapping anyway",
                    d.as_millis()
                )),
                ResyncOutcome::NoPeer => Some("before the planned swap: no peer heard".into()),
                ResyncOutcome::Unsupported => None,
            },
        );
    }

    /// The wait for a resync before a planned swap: only when this member is passive now
    /// (an active member already holds the table).
    pub(super) fn resync_before_takeover(&self) {
        self.wait_before_swap(
            self.resync.as_ref(),
            false,
            ha_mgmt_api::EventKind::BulkSyncReceived,
            |outcome| match outcome {
                ResyncOutcome::Complete(d) => Some(format!(
                    "resync before the planned swap: the peer's table arrived in {} ms",
                    d.as_millis()
                )),
                ResyncOutcome::TimedOut(d) => Some(format!(
                    "resync before the planned swap: not complete after {} ms, swapping anyway",
                    d.as_millis()
                )),
                ResyncOutcome::NoPeer => {
                    Some("resync before the planned swap: no peer heard".into())
                }
                ResyncOutcome::Unsupported => None,
            },
        );
    }
}
