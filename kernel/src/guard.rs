//! The daemon's own nftables rules on the kernel path: a guard that drops new connections
//! through a standby member, so traffic that reaches it before the takeover completes never
//! creates fresh conntrack entries that would shadow the synced ones.
//!
//! The rules live in a table of their own (`inet ha_guard`, its forward chain at priority
//! -150, before a site's usual filter at 0), so the site's ruleset is never touched. Each
//! change is one nftables transaction (`nft -j -f -` applies the whole JSON batch or nothing):
//! there is no moment without a guard while it is being replaced. The JSON is written here
//! with `serde_json` against the documented `libnftables-json` schema, which keeps the rules
//! readable in one place; `nft` itself does the applying.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde_json::{json, Value};

/// The guard's table (family `inet`: IPv4 and IPv6).
pub const TABLE: &str = "ha_guard";
/// Priority of the guard's forward chain: ahead of a site's filter chains (priority 0).
pub const PRIORITY: i32 = -150;

/// What the guard enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// The member is standby for its main domain: new connections through it are dropped,
    /// established and related traffic passes. Active (`false`): everything passes. With
    /// load sharing, the main domain's connections are those no network of
    /// [`Guard::shared`] holds.
    pub standby: bool,
    /// Load sharing (SPEC A3): the networks of the other domains, each with whether this
    /// member is standby for that domain (new connections from or to it are dropped) or
    /// active (they pass, also while standby for the main domain). Empty with one domain.
    pub shared: Vec<(IpNet, bool)>,
    /// The member answers ICMP echo requests addressed to it (its peer's liveness probe).
    /// `false` while its management controller is silent: such a member cannot take part in
    /// the election, and answering would tell the peer "alive, do not take over".
    pub answer_probes: bool,
}

/// The transaction that sets the guard for a member that is standby (`true`) or active
/// (`false`), answering probes (see [`Guard`]).
pub fn ruleset(standby: bool) -> Value {
    rules(&Guard {
        standby,
        shared: Vec::new(),
        answer_probes: true,
    })
}

/// The transaction that sets guard `g`. Creates the table if absent and replaces its content.
pub fn rules(g: &Guard) -> Value {
    let standby = g.standby;
    let table = json!({"family": "inet", "name": TABLE});
    let mut batch = vec![
        json!({"add": {"table": table}}),
        json!({"flush": {"table": table}}),
        json!({"add": {"chain": {
            "family": "inet", "table": TABLE, "name": "forward",
            "type": "filter", "hook": "forward", "prio": PRIORITY, "policy": "accept"
        }}}),
    ];
    // Always a rule that reads the connection state: it keeps the kernel tracking every
    // connection in this namespace (tracking is switched on by the rules that use it), so an
    // active member's connections have entries to sync even when the site's ruleset never
    // looks at conntrack, and a member turned standby still knows them as established.
    batch.push(json!({"add": {"rule": {
        "family": "inet", "table": TABLE, "chain": "forward",
        "comment": "ha: track every connection",
        "expr": [
            {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                       "right": ["established", "related"]}},
            {"counter": null}
        ]
    }}}));
    // Load sharing: a domain's connections are those from or to its networks. Those of a
    // domain this member is standby for are dropped; those of one it is active for pass
    // before the main domain's rule below can drop them.
    for (net, net_standby) in &g.shared {
        if !net_standby && !standby {
            continue;
        }
        let (comment, verdict) = if *net_standby {
            (
                "ha: standby for this network's domain",
                json!({"drop": null}),
            )
        } else {
            (
                "ha: active for this network's domain",
                json!({"accept": null}),
            )
        };
        let family = match net {
            IpNet::V4(_) => "ip",
            IpNet::V6(_) => "ip6",
        };
        for field in ["saddr", "daddr"] {
            batch.push(json!({"add": {"rule": {
                "family": "inet", "table": TABLE, "chain": "forward",
                "comment": comment,
                "expr": [
                    {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
                    {"match": {"op": "==",
                               "left": {"payload": {"protocol": family, "field": field}},
                               "right": {"prefix": {"addr": net.network().to_string(),
                                                     "len": net.prefix_len()}}}},
                    {"counter": null},
                    verdict.clone()
                ]
            }}}));
        }
    }
    if standby {
        batch.push(json!({"add": {"rule": {
            "family": "inet", "table": TABLE, "chain": "forward",
            "comment": "ha: standby, no new connections",
            "expr": [
                {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
                {"counter": null},
                {"drop": null}
            ]
        }}}));
    }
    if !g.answer_probes {
        batch.push(json!({"add": {"chain": {
            "family": "inet", "table": TABLE, "name": "input",
            "type": "filter", "hook": "input", "prio": PRIORITY, "policy": "accept"
        }}}));
        for (proto, kind) in [("icmp", "echo-request"), ("icmpv6", "echo-request")] {
            batch.push(json!({"add": {"rule": {
                "family": "inet", "table": TABLE, "chain": "input",
                "comment": "ha: controller silent, not alive for the peer's probe",
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "type"}},
                               "right": kind}},
                    {"counter": null},
                    {"drop": null}
                ]
            }}}));
        }
    }
    json!({ "nftables": batch })
}

/// The transaction that removes the guard's table. It adds the table first (a no-op when it
/// exists), so removing a guard that is not there is not an error either.
pub fn removal() -> Value {
    let table = json!({"family": "inet", "name": TABLE});
    json!({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]})
}

/// Applies one transaction with `nft -j -f -` in the calling process's network namespace.
pub fn apply(batch: &Value) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(batch.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft refused the guard: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Sets the guard for a standby (`true`) or an active (`false`) member.
pub fn set(standby: bool) -> io::Result<()> {
    apply(&ruleset(standby))
}

/// Sets guard `g`.
pub fn set_guard(g: &Guard) -> io::Result<()> {
    apply(&rules(g))
}

/// Removes the guard (nothing to do when it is not there).
pub fn remove() -> io::Result<()> {
    apply(&removal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_drops_only_new_connections_in_its_own_table() {
        let s = ruleset(true).to_string();
        assert!(s.contains(r#""name":"ha_guard""#));
        assert!(s.contains(r#""hook":"forward""#));
        assert!(s.contains(r#""prio":-150"#));
        assert!(s.contains(r#""right":"new""#));
        assert!(s.contains(r#""drop":null"#));
        let a = ruleset(false).to_string();
        assert!(!a.contains("drop"), "an active member drops nothing: {a}");
        assert!(
            a.contains(r#""key":"state""#),
            "the active guard keeps tracking on: {a}"
        );
        // Both replace the table's content in the same transaction that (re)creates it.
        for r in [ruleset(true), ruleset(false)] {
            let ops: Vec<String> = r["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_object().unwrap().keys().next().unwrap().clone())
                .collect();
            assert_eq!(&ops[..3], ["add", "flush", "add"]);
        }
    }

    #[test]
    fn a_member_with_a_silent_controller_drops_echo_requests_to_itself() {
        let quiet = rules(&Guard {
            standby: true,
            shared: Vec::new(),
            answer_probes: false,
        })
        .to_string();
        assert!(quiet.contains(r#""hook":"input""#), "{quiet}");
        assert!(quiet.contains(r#""right":"echo-request""#), "{quiet}");
        assert!(!ruleset(true).to_string().contains("echo-request"));
    }

    #[test]
    fn a_member_sharing_the_load_drops_new_connections_of_the_domains_it_is_standby_for() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let rule_of = |g: &Guard| {
            rules(g)["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|o| o["add"]["rule"]["comment"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        };
        // Active for the main domain, standby for the other's network: its new connections
        // (from or to it) are dropped, the rest pass.
        let g = Guard {
            standby: false,
            shared: vec![(net("10.3.0.0/24"), true)],
            answer_probes: true,
        };
        assert_eq!(
            rule_of(&g),
            [
                "ha: track every connection",
                "ha: standby for this network's domain",
                "ha: standby for this network's domain"
            ]
        );
        let text = rules(&g).to_string();
        assert!(text.contains(r#""addr":"10.3.0.0","len":24"#), "{text}");
        assert!(text.contains(r#""field":"saddr""#) && text.contains(r#""field":"daddr""#));
        // Standby for the main domain, active for the other: its network passes before the
        // main domain's drop.
        let g = Guard {
            standby: true,
            shared: vec![(net("10.3.0.0/24"), false), (net("fd00:3::/64"), true)],
            answer_probes: true,
        };
        assert_eq!(
            rule_of(&g),
            [
                "ha: track every connection",
                "ha: active for this network's domain",
                "ha: active for this network's domain",
                "ha: standby for this network's domain",
                "ha: standby for this network's domain",
                "ha: standby, no new connections"
            ]
        );
        assert!(rules(&g).to_string().contains(r#""protocol":"ip6""#));
        // Active for everything: nothing dropped.
        let g = Guard {
            standby: false,
            shared: vec![(net("10.3.0.0/24"), false)],
            answer_probes: true,
        };
        assert!(!rules(&g).to_string().contains("drop"));
    }
}
