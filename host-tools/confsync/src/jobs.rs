//! Periodic sync jobs (SPEC D2): some data (DHCP leases, certificates and CRLs) syncs on a
//! period rather than on publish. A sans-IO scheduler: the caller gives the time, asks which
//! jobs are due and when to come back.

use serde::{Deserialize, Serialize};

/// Shortest period accepted, seconds: below this a job would keep the link busy.
pub const MIN_PERIOD_S: u64 = 10;

/// One periodic job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Name, e.g. `dhcp-leases`.
    pub name: String,
    /// Path prefixes (relative to the configuration root) the job publishes and syncs.
    pub paths: Vec<String>,
    /// Period, seconds.
    pub every_s: u64,
}

/// The jobs file (`jobs.json` in the daemon's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsConfig {
    /// The jobs.
    pub jobs: Vec<Job>,
}

impl Default for JobsConfig {
    /// DHCP leases every 5 minutes, certificates and CRLs every 60 minutes.
    fn default() -> Self {
        JobsConfig {
            jobs: vec![
                Job {
                    name: "dhcp-leases".into(),
                    paths: vec!["dhcp/leases".into()],
                    every_s: 300,
                },
                Job {
                    name: "certificates".into(),
                    paths: vec!["pki/certs".into(), "pki/crl".into()],
                    every_s: 3600,
                },
            ],
        }
    }
}

/// Why a jobs file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobsError(pub String);

impl std::fmt::Display for JobsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobsError {}

impl JobsConfig {
    /// Parses and validates a JSON jobs file.
    pub fn parse(text: &str) -> Result<Self, JobsError> {
        let c: JobsConfig =
            serde_json::from_str(text).map_err(|e| JobsError(format!("jobs file: {e}")))?;
        for (i, j) in c.jobs.iter().enumerate() {
            if j.every_s < MIN_PERIOD_S {
                return Err(JobsError(format!(
                    "job {}: period {} s is below {MIN_PERIOD_S} s",
                    j.name, j.every_s
                )));
            }
            if j.paths.is_empty() {
                return Err(JobsError(format!("job {}: no paths", j.name)));
            }
            for p in &j.paths {
                crate::manifest::check_path(p)
                    .map_err(|e| JobsError(format!("job {}: {e}", j.name)))?;
            }
            if c.jobs[..i].iter().any(|o| o.name == j.name) {
                return Err(JobsError(format!("job {} defined twice", j.name)));
            }
        }
        Ok(c)
    }
}

/// Decides when each job runs. Time is seconds on any monotonic clock.
#[derive(Clone, Debug)]
pub struct Scheduler {
    jobs: Vec<Job>,
    next: Vec<u64>,
}

impl Scheduler {
    /// Every job first runs one period after `now`.
    pub fn new(config: JobsConfig, now: u64) -> Self {
        let next = config.jobs.iter().map(|j| now + j.every_s).collect();
        Scheduler {
            jobs: config.jobs,
            next,
        }
    }

    /// Jobs due at `now`; each is rescheduled one period after `now` (a late run does not
    /// cause a burst of catch-up runs).
    pub fn poll_due(&mut self, now: u64) -> Vec<&Job> {
        let mut due = Vec::new();
        for (i, j) in self.jobs.iter().enumerate() {
            if self.next[i] <= now {
                self.next[i] = now + j.every_s;
                due.push(j);
            }
        }
        due
    }

    /// When to call [`Scheduler::poll_due`] next.
    pub fn poll_at(&self) -> Option<u64> {
        self.next.iter().copied().min()
    }

    /// Whether `path` belongs to a periodic job (such paths sync on their period).
    pub fn covers(&self, path: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| {
            j.paths.iter().any(|p| {
                path == p
                    || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_on_their_periods() {
        let mut s = Scheduler::new(JobsConfig::default(), 0);
        assert_eq!(s.poll_at(), Some(300));
        assert!(s.poll_due(299).is_empty());
        let mut runs = std::collections::BTreeMap::<String, u32>::new();
        let mut now = 0;
        while now <= 7200 {
            for j in s.poll_due(now) {
                *runs.entry(j.name.clone()).or_default() += 1;
            }
            now = s.poll_at().unwrap();
        }
        assert_eq!(runs["dhcp-leases"], 24);
        assert_eq!(runs["certificates"], 2);
        assert_eq!(s.covers("dhcp/leases/eth1").unwrap().name, "dhcp-leases");
        assert!(s.covers("dhcp/leasesX").is_none());
    }

    #[test]
    fn late_poll_runs_once() {
        let mut s = Scheduler::new(JobsConfig::default(), 0);
        assert_eq!(s.poll_due(10_000).len(), 2);
        assert!(s.poll_due(10_001).is_empty());
        assert_eq!(s.poll_at(), Some(10_300));
    }

    #[test]
    fn bad_files_refused() {
        assert!(JobsConfig::parse(r#"{"jobs":[{"name":"a","paths":["x"],"every_s":1}]}"#).is_err());
        assert!(
            JobsConfig::parse(r#"{"jobs":[{"name":"a","paths":["../x"],"every_s":60}]}"#).is_err()
        );
        assert!(JobsConfig::parse(r#"{"jobs":[{"name":"a","paths":[],"every_s":60}]}"#).is_err());
        assert!(JobsConfig::parse(r#"{"jobs":[{"name":"a","paths":["x"],"every_s":60}]}"#).is_ok());
    }
}
