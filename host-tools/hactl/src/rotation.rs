//! PSK rollover across the cluster (`hactl psk rotate`): which member takes its next step,
//! and when that would break the cluster.
//!
//! Each member goes through four states ([`Step`]); `ha-daemon` advances its member one state
//! per `psk_rotate` request (InstallKey, then UseKey, then RetireKey to its controller, each
//! confirmed by the controller's KeyState). The cluster stays whole — every frame any member
//! seals is accepted by every other member — exactly while no two members are more than one
//! state apart:
//!
//! | a member in … | seals with | accepts  | needs every other member in |
//! |---------------|------------|----------|-----------------------------|
//! | `Old`         | old        | old      | `Old`..=`Sealing`           |
//! | `Accepted`    | old        | old, new | any                         |
//! | `Sealing`     | new        | old, new | `Accepted`..=`Done`         |
//! | `Done`        | new        | new      | `Sealing`..=`Done`          |
//!
//! So [`Rollover::next`] only ever advances a member that is in the lowest state, and refuses
//! to go on when it finds members two states apart (a previous run cut short by hand). The
//! plan is sans-IO; [`rotate`] drives it over anything that implements [`RotatingMember`].

use ha_mgmt_api::RotateReport;

/// Where one member stands in the rollover to the new key id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Seals with the old key and accepts only it.
    Old = 0,
    /// Seals with the old key, accepts the new one too (InstallKey done).
    Accepted = 1,
    /// Seals with the new key, still accepts the old one (UseKey done).
    Sealing = 2,
    /// Seals with and accepts only the new key (RetireKey done).
    Done = 3,
}

impl Step {
    /// The state a member's rotation report shows for the rollover to `key_id`.
    pub fn of(r: &RotateReport, key_id: u8) -> Step {
        if r.sealing_key_id == key_id {
            if r.previous_key_id.is_some() {
                Step::Sealing
            } else {
                Step::Done
            }
        } else if r.previous_key_id == Some(key_id) {
            Step::Accepted
        } else {
            Step::Old
        }
    }

    fn next(self) -> Option<Step> {
        match self {
            Step::Old => Some(Step::Accepted),
            Step::Accepted => Some(Step::Sealing),
            Step::Sealing => Some(Step::Done),
            Step::Done => None,
        }
    }
}

/// Why a rollover stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationError {
    /// Members are two or more states apart: some frame is already rejected somewhere.
    Diverged(Vec<Step>),
    /// A member did not move to the state it was asked to.
    NotAdvanced {
        /// Member index.
        member: usize,
        /// State it should have reached.
        wanted: Step,
        /// State it reports.
        got: Step,
    },
    /// A member could not be asked or did not answer.
    Member {
        /// Member index.
        member: usize,
        /// What went wrong (never key material).
        message: String,
    },
}

impl std::fmt::Display for RotationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RotationError::Diverged(s) => write!(
                f,
                "members are two or more rollover phases apart ({s:?}); finish the older ones by hand"
            ),
            RotationError::NotAdvanced {
                member,
                wanted,
                got,
            } => write!(
                f,
                "member {member} reports {got:?} after being asked for {wanted:?}"
            ),
            RotationError::Member { member, message } => write!(f, "member {member}: {message}"),
        }
    }
}

impl std::error::Error for RotationError {}

/// The cluster's rollover to one key id.
#[derive(Clone, Debug)]
pub struct Rollover {
    steps: Vec<Step>,
}

impl Rollover {
    /// A rollover whose members stand at `steps` (from their rotation reports).
    pub fn new(steps: Vec<Step>) -> Rollover {
        Rollover { steps }
    }

    /// Every member's state.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// True when every frame any member seals is accepted by every other member.
    pub fn whole(&self) -> bool {
        match (self.steps.iter().min(), self.steps.iter().max()) {
            (Some(lo), Some(hi)) => (*hi as u8) - (*lo as u8) <= 1,
            _ => true,
        }
    }

    /// The member to advance next (one in the lowest state), `None` when every member is
    /// done, an error when the members are already apart.
    pub fn next(&self) -> Result<Option<usize>, RotationError> {
        if !self.whole() {
            return Err(RotationError::Diverged(self.steps.clone()));
        }
        let Some(lo) = self.steps.iter().min().copied() else {
            return Ok(None);
        };
        if lo == Step::Done {
            return Ok(None);
        }
        Ok(self.steps.iter().position(|s| *s == lo))
    }

    /// Records that `member` now reports `now`; it must be exactly one state further.
    pub fn advanced(&mut self, member: usize, now: Step) -> Result<(), RotationError> {
        let Some(s) = self.steps.get_mut(member) else {
            return Err(RotationError::Member {
                member,
                message: "no such member".into(),
            });
        };
        let wanted = s.next().unwrap_or(Step::Done);
        if now != wanted {
            return Err(RotationError::NotAdvanced {
                member,
                wanted,
                got: now,
            });
        }
        *s = now;
        Ok(())
    }
}

/// One member as the rollover driver sees it (a daemon's management socket, or a simulated
/// controller in tests).
pub trait RotatingMember {
    /// The member's rotation report now.
    fn status(&mut self) -> Result<RotateReport, String>;
    /// Asks the member for its next step towards `key_id`; returns its report after the step.
    fn step(&mut self, key_id: u8) -> Result<RotateReport, String>;
}

/// Runs the whole rollover to `key_id` over `members`, one step at a time in the order of
/// [`Rollover::next`]; `on_step(member, step)` is told of each confirmed step. Returns every
/// member's final state (all [`Step::Done`]).
pub fn rotate<M: RotatingMember>(
    members: &mut [M],
    key_id: u8,
    mut on_step: impl FnMut(usize, Step),
) -> Result<Vec<Step>, RotationError> {
    let mut steps = Vec::with_capacity(members.len());
    for (i, m) in members.iter_mut().enumerate() {
        let r = m
            .status()
            .map_err(|message| RotationError::Member { member: i, message })?;
        steps.push(Step::of(&r, key_id));
    }
    let mut plan = Rollover::new(steps);
    // Bounded: three steps per member.
    for _ in 0..3 * members.len() + 1 {
        let Some(i) = plan.next()? else {
            return Ok(plan.steps().to_vec());
        };
        let r = members[i]
            .step(key_id)
            .map_err(|message| RotationError::Member { member: i, message })?;
        let now = Step::of(&r, key_id);
        plan.advanced(i, now)?;
        on_step(i, now);
    }
    plan.next()?;
    Ok(plan.steps().to_vec())
}

/// A member reached through a management socket (its `ha-daemon`, or its configuration-sync
/// service for the sync channel's keys).
pub struct ApiMember {
    path: std::path::PathBuf,
    psk_file: String,
}

impl ApiMember {
    /// The member at `path`; `psk_file` is the new key's file, read by the member itself.
    pub fn new(path: std::path::PathBuf, psk_file: String) -> ApiMember {
        ApiMember { path, psk_file }
    }

    fn call(&self, req: &ha_mgmt_api::Request) -> Result<RotateReport, String> {
        let mut c = crate::client::Client::connect(&self.path).map_err(|f| f.message)?;
        match c.call(req, |_| {}).map_err(|f| f.message)? {
            ha_mgmt_api::Reply::Rotate(r) => Ok(r),
            _ => Err(format!("{}: not a rotation report", self.path.display())),
        }
    }
}

impl RotatingMember for ApiMember {
    fn status(&mut self) -> Result<RotateReport, String> {
        self.call(&ha_mgmt_api::Request::PskRotateStatus)
    }

    fn step(&mut self, key_id: u8) -> Result<RotateReport, String> {
        self.call(&ha_mgmt_api::Request::PskRotate {
            psk_file: self.psk_file.clone(),
            key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sealing: u8, other: Option<u8>) -> RotateReport {
        RotateReport {
            phase: String::new(),
            sealing_key_id: sealing,
            previous_key_id: other,
            confirmed: Vec::new(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn steps_from_reports() {
        assert_eq!(Step::of(&report(1, None), 2), Step::Old);
        assert_eq!(Step::of(&report(1, Some(3)), 2), Step::Old);
        assert_eq!(Step::of(&report(1, Some(2)), 2), Step::Accepted);
        assert_eq!(Step::of(&report(2, Some(1)), 2), Step::Sealing);
        assert_eq!(Step::of(&report(2, None), 2), Step::Done);
    }

    #[test]
    fn plan_advances_the_lowest_member_and_stays_whole() {
        let mut p = Rollover::new(vec![Step::Old; 3]);
        let mut order = Vec::new();
        while let Some(i) = p.next().unwrap() {
            let now = p.steps()[i].next().unwrap();
            p.advanced(i, now).unwrap();
            assert!(p.whole(), "{:?}", p.steps());
            order.push(i);
        }
        // Every member accepts before any seals; every member seals before any retires.
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(p.steps(), &[Step::Done; 3]);
    }

    #[test]
    fn diverged_and_stuck_members_are_errors() {
        let p = Rollover::new(vec![Step::Old, Step::Sealing]);
        assert!(matches!(p.next(), Err(RotationError::Diverged(_))));
        let mut p = Rollover::new(vec![Step::Old, Step::Old]);
        assert!(matches!(
            p.advanced(0, Step::Old),
            Err(RotationError::NotAdvanced { .. })
        ));
        assert!(p.advanced(0, Step::Accepted).is_ok());
        // A run resumed half-way picks up where it stopped.
        let p = Rollover::new(vec![Step::Sealing, Step::Accepted]);
        assert_eq!(p.next().unwrap(), Some(1));
        assert_eq!(Rollover::new(vec![Step::Done; 2]).next().unwrap(), None);
    }
}
