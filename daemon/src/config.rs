//! The daemon's own configuration file (TOML). The cluster settings (serial, cluster id, PSK,
//! state-sync port) come from the member's configuration block, the same file `hactl
//! provision` writes into the controller's flash; this file says where things are on the
//! main CPU. Example (the e2e test writes one per member):
//!
//! ```toml
//! config_block = "/etc/ha/member.cfg"
//! host_link = "/run/ha/host.sock"        # unix socket (QEMU) ...
//! # serial = "/dev/ttyS1"                # ... or the UART to the controller
//! # baud = 115200
//! mgmt_socket = "/run/ha/mgmt.sock"
//! state_dir = "/var/lib/ha"             # boot counter (boot epoch), keyring (sync keys)
//! interfaces_period_ms = 1000            # Interfaces report, besides every change
//! garp_period_ms = 0                     # periodic gratuitous ARP while active; 0 = off
//! bounce_on_swap_ms = 0                  # interfaces down this long when going passive
//! table = "dataplane"                    # the dataplane crate's table (the only one today)
//! datapath = "kernel"                    # the kernel forwards (default); "userspace": the
//!                                        # test router over packet sockets
//!
//! [[monitor]]
//! name = "eth1"
//! weight = 100
//!
//! [forward.inside]
//! ifname = "eth1"
//! cluster_ip = "10.1.0.254/24"
//! member_ip = "10.1.0.11"
//! allow_new = true
//!
//! [forward.outside]
//! ifname = "eth2"
//! cluster_ip = "10.2.0.254/24"
//! member_ip = "10.2.0.11"
//! allow_new = false
//!
//! # [[forward.shared]]                   # kernel path, load sharing: another domain this
//! # domain = 1                           # member forwards for while active for it: its
//! # inside_cluster_ip = "10.3.0.254/24"  # cluster addresses; its connections are those
//! # outside_cluster_ip = "10.2.0.253/24" # from or to the inside address's prefix
//!
//! # metrics_listen = "127.0.0.1:9469"    # Prometheus endpoint: GET /metrics
//!
//! [sync]
//! bind = "10.9.0.1"                      # address on the HA interface
//! # port = 44242                         # default: the config block's state_sync_port
//! # min_age_s = 0                        # kernel path: sync a connection once this old
//! # standby_install = "write_behind"     # kernel path: held while the stream is busy;
//!                                        # "as_received": installed as they come
//! # [[sync.rule]]                        # kernel path: first match wins, none: sync
//! # action = "skip"                      # or "sync"
//! # proto = "udp"                        # tcp, udp, icmp, icmpv6, sctp, gre, esp, 0-255
//! # src = "10.1.0.0/24"                  # the originator's prefix
//! # dst = "0.0.0.0/0"                    # the original destination's prefix
//! # dst_port = "53"                      # or a range "1000-2000"
//!
//! [[peer]]
//! serial = "SN-B"
//! probe = ["10.1.0.12", "10.2.0.12"]     # its member addresses on the data interfaces
//! sync = "10.9.0.2"                      # its HA-interface address
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::links::MonitoredIface;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// The member's configuration block (4096 bytes, as `hactl provision` writes it).
    pub config_block: PathBuf,
    /// Unix socket of the host link (QEMU's UART1 chardev).
    #[serde(default)]
    pub host_link: Option<PathBuf>,
    /// Serial device of the host link (hardware).
    #[serde(default)]
    pub serial: Option<PathBuf>,
    /// Baud rate of [`DaemonConfig::serial`].
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Management API socket.
    #[serde(default = "default_mgmt")]
    pub mgmt_socket: PathBuf,
    /// Directory of the state that survives a restart: the boot counter (`boot-counter`),
    /// the daemon's boot epoch on every link, and the keyring file (`keyring`), the
    /// state-sync keys through PSK rollovers ([`crate::synckeys`]).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Period of the interface report, ms.
    #[serde(default = "default_iface_period")]
    pub interfaces_period_ms: u64,
    /// Period of gratuitous ARP while active, ms (0: only on takeover).
    #[serde(default)]
    pub garp_period_ms: u64,
    /// On leaving the active role, set the forwarding interfaces down for this long, ms, so
    /// that attached switches and hosts forget this member (0: off).
    #[serde(default)]
    pub bounce_on_swap_ms: u64,
    /// Monitored interfaces and their weights.
    #[serde(default)]
    pub monitor: Vec<MonitoredIface>,
    /// Connection table and state sync: the dataplane crate's (the only one today; the
    /// daemon's own small table was removed, see docs/daemon.md).
    #[serde(default)]
    pub table: Table,
    /// Who forwards the traffic: the Linux kernel (conntrack and nftables, the production
    /// path) or the daemon's userspace router (a test vehicle for the firmware).
    #[serde(default)]
    pub datapath: Datapath,
    /// Address of the Prometheus endpoint (`GET /metrics`), e.g. `127.0.0.1:9469`; none when
    /// absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The fast path, if this member forwards.
    #[serde(default)]
    pub forward: Option<ForwardConfig>,
    /// Connection-state sync.
    #[serde(default)]
    pub sync: Option<SyncConfig>,
    /// The other members.
    #[serde(default)]
    pub peer: Vec<PeerConfig>,
    /// The file this configuration was read from ([`DaemonConfig::load`]); `hactl reload`
    /// reads it again. Not a setting.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_baud() -> u32 {
    115_200
}

fn default_mgmt() -> PathBuf {
    PathBuf::from(ha_mgmt_api::DEFAULT_SOCKET)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ha")
}

fn default_iface_period() -> u64 {
    1000
}

/// Which connection table and sync engine the fast path uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// `ha_dataplane::Dataplane`: full connection tracking, reliable sync with bulk and
    /// larval generations.
    #[default]
    Dataplane,
}

/// Who forwards the traffic of a member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Datapath {
    /// The Linux kernel forwards and tracks connections (the site's nftables ruleset
    /// decides what passes); the daemon syncs the kernel's conntrack table and moves the
    /// cluster addresses (`crate::kernelpath`).
    #[default]
    Kernel,
    /// The daemon's own router over packet sockets (`crate::fastpath`): a test vehicle, not a
    /// firewall data path.
    Userspace,
}

/// The two forwarding interfaces.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// HA domain whose role decides whether this member forwards.
    #[serde(default)]
    pub domain: u8,
    /// The protected side.
    pub inside: SideFile,
    /// The other side.
    pub outside: SideFile,
    /// Load sharing (SPEC A3, kernel path only): the other domains this member forwards for
    /// while the controller makes it active for them, each with its own cluster addresses.
    #[serde(default)]
    pub shared: Vec<SharedDomain>,
}

/// Another HA domain a member forwards for (`[[forward.shared]]`): the cluster addresses it
/// holds while active for that domain, on the same two interfaces. The domain's connections
/// are those from or to the prefix of its inside cluster address; the rest are the main
/// domain's (`[forward] domain`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDomain {
    /// The HA domain (0–15, not the main one).
    pub domain: u8,
    /// Its cluster address on the inside interface, with prefix length.
    pub inside_cluster_ip: String,
    /// Its cluster address on the outside interface, with prefix length.
    pub outside_cluster_ip: String,
}

impl SharedDomain {
    /// The inside and outside cluster addresses with their prefix lengths.
    pub fn clusters(&self) -> Result<[(Ipv4Addr, u8); 2], ConfigError> {
        Ok([
            parse_cluster("inside_cluster_ip", &self.inside_cluster_ip)?,
            parse_cluster("outside_cluster_ip", &self.outside_cluster_ip)?,
        ])
    }

    /// The network of its connections: the inside cluster address's prefix.
    pub fn network(&self) -> Result<ipnet::Ipv4Net, ConfigError> {
        let (ip, len) = parse_cluster("inside_cluster_ip", &self.inside_cluster_ip)?;
        ipnet::Ipv4Net::new(ip, len)
            .map(|n| n.trunc())
            .map_err(|e| ConfigError::Invalid(format!("inside_cluster_ip: {e}")))
    }
}

/// A cluster address with its prefix length (`a.b.c.d/len`), from setting `what`.
fn parse_cluster(what: &str, v: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let bad = || ConfigError::Invalid(format!("{what} {v:?}: want a.b.c.d/len"));
    let (a, l) = v.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((ip, len))
}

/// One forwarding interface.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideFile {
    /// Interface name.
    pub ifname: String,
    /// Cluster address with prefix length, e.g. `10.1.0.254/24`.
    pub cluster_ip: String,
    /// This member's own address on the interface.
    pub member_ip: Ipv4Addr,
    /// New connections may be opened from this side (the userspace path's filter; on the
    /// kernel path the site's nftables ruleset decides).
    #[serde(default)]
    pub allow_new: bool,
}

impl SideFile {
    /// The cluster address and prefix length.
    pub fn cluster(&self) -> Result<(Ipv4Addr, u8), ConfigError> {
        parse_cluster("cluster_ip", &self.cluster_ip)
    }
}

/// State sync over UDP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Local address on the HA interface.
    pub bind: Ipv4Addr,
    /// UDP port; the configuration block's `state_sync_port` when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// Kernel path: a connection is synced only once it has existed this long, seconds.
    #[serde(default)]
    pub min_age_s: u32,
    /// Kernel path: which connections are synced, first match wins (none: synced).
    #[serde(default)]
    pub rule: Vec<SyncRuleFile>,
    /// Kernel path: how a standby puts the peer's entries into its kernel.
    #[serde(default)]
    pub standby_install: StandbyInstall,
}

/// How a standby puts the peer's entries into its kernel (`[sync] standby_install`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyInstall {
    /// Held while the sync stream is busy and written when it goes quiet, after 5 s,
    /// past 131,072 held, or on a takeover before the guard opens
    /// (`ha_kernel::write_behind`): entries created and ended within a burst never cost
    /// the kernel anything.
    #[default]
    WriteBehind,
    /// Each datagram's entries installed as it arrives.
    AsReceived,
}

/// One selective-sync rule as written in the file (every field but `action` optional).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRuleFile {
    /// `sync` or `skip`.
    pub action: String,
    /// Protocol name or number.
    #[serde(default)]
    pub proto: Option<String>,
    /// The originator's prefix, e.g. `10.1.0.0/24`.
    #[serde(default)]
    pub src: Option<String>,
    /// The original destination's prefix.
    #[serde(default)]
    pub dst: Option<String>,
    /// Destination port or inclusive range, e.g. `53` or `1000-2000`.
    #[serde(default)]
    pub dst_port: Option<String>,
}

impl SyncRuleFile {
    /// The rule it describes, or what is wrong with it.
    pub fn rule(&self) -> Result<ha_kernel::select::Rule, ConfigError> {
        use ha_kernel::select::{parse_ports, parse_proto, Action, IpNet, Rule};
        let bad =
            |what: &str, e: String| ConfigError::Invalid(format!("[[sync.rule]] {what}: {e}"));
        let net = |what: &str, v: &Option<String>| -> Result<Option<IpNet>, ConfigError> {
            v.as_deref()
                .map(|s| {
                    s.trim()
                        .parse::<IpNet>()
                        .map_err(|_| bad(what, format!("{s:?} is not a prefix like 10.1.0.0/24")))
                })
                .transpose()
        };
        Ok(Rule {
            action: match self.action.as_str() {
                "sync" => Action::Sync,
                "skip" => Action::Skip,
                other => return Err(bad("action", format!("{other:?}: sync or skip"))),
            },
            proto: self
                .proto
                .as_deref()
                .map(parse_proto)
                .transpose()
                .map_err(|e| bad("proto", e))?,
            src: net("src", &self.src)?,
            dst: net("dst", &self.dst)?,
            dst_port: self
                .dst_port
                .as_deref()
                .map(parse_ports)
                .transpose()
                .map_err(|e| bad("dst_port", e))?,
        })
    }
}

/// Another member.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its serial.
    pub serial: String,
    /// Its member addresses on the data interfaces (probe targets).
    #[serde(default)]
    pub probe: Vec<Ipv4Addr>,
    /// Its HA-interface address (state sync).
    #[serde(default)]
    pub sync: Option<Ipv4Addr>,
}

/// Why the configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io(PathBuf, std::io::Error),
    /// TOML syntax or an unknown field.
    Parse(String),
    /// A value is out of range or inconsistent.
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ConfigError::Parse(e) => write!(f, "configuration: {e}"),
            ConfigError::Invalid(e) => write!(f, "configuration: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl DaemonConfig {
    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: DaemonConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.to_path_buf(), e))?;
        let mut c = Self::parse(&text)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// What reloading `new` over this configuration does: one line per monitored interface
    /// added, removed or changed (applied at once), and the names of the other settings that
    /// changed (they apply at the daemon's next restart: sockets, threads and the data path
    /// are set up once).
    pub fn reload_plan(&self, new: &DaemonConfig) -> (Vec<String>, Vec<&'static str>) {
        let mut applied = Vec::new();
        let word = |m: &MonitoredIface| match m.aggregate {
            Some(a) => format!("weight {}, aggregate {a}", m.weight),
            None => format!("weight {}", m.weight),
        };
        for m in &self.monitor {
            match new.monitor.iter().find(|n| n.name == m.name) {
                None => applied.push(format!("monitor {}: removed", m.name)),
                Some(n) if n.aggregate == m.aggregate && n.weight != m.weight => applied.push(
                    format!("monitor {}: weight {} → {}", m.name, m.weight, n.weight),
                ),
                Some(n) if n != m => {
                    applied.push(format!("monitor {}: {} → {}", m.name, word(m), word(n)))
                }
                Some(_) => {}
            }
        }
        for n in &new.monitor {
            if !self.monitor.iter().any(|m| m.name == n.name) {
                applied.push(format!("monitor {}: added ({})", n.name, word(n)));
            }
        }
        if applied.is_empty() && self.monitor != new.monitor {
            applied.push("monitor: order changed".into());
        }
        // Every field is named here, so a new setting cannot be forgotten below.
        let DaemonConfig {
            config_block: _,
            host_link: _,
            serial: _,
            baud: _,
            mgmt_socket: _,
            state_dir: _,
            interfaces_period_ms: _,
            garp_period_ms: _,
            bounce_on_swap_ms: _,
            monitor: _,
            table: _,
            datapath: _,
            metrics_listen: _,
            forward: _,
            sync: _,
            peer: _,
            source: _,
        } = new;
        // Debug output compares the nested settings without requiring every type to
        // implement equality.
        let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
        let later = [
            ("config_block", d(&self.config_block), d(&new.config_block)),
            ("host_link", d(&self.host_link), d(&new.host_link)),
            ("serial", d(&self.serial), d(&new.serial)),
            ("baud", d(&self.baud), d(&new.baud)),
            ("mgmt_socket", d(&self.mgmt_socket), d(&new.mgmt_socket)),
            ("state_dir", d(&self.state_dir), d(&new.state_dir)),
            (
                "interfaces_period_ms",
                d(&self.interfaces_period_ms),
                d(&new.interfaces_period_ms),
            ),
            (
                "garp_period_ms",
                d(&self.garp_period_ms),
                d(&new.garp_period_ms),
            ),
            (
                "bounce_on_swap_ms",
                d(&self.bounce_on_swap_ms),
                d(&new.bounce_on_swap_ms),
            ),
            ("table", d(&self.table), d(&new.table)),
            ("datapath", d(&self.datapath), d(&new.datapath)),
            (
                "metrics_listen",
                d(&self.metrics_listen),
                d(&new.metrics_listen),
            ),
            ("forward", d(&self.forward), d(&new.forward)),
            ("sync", d(&self.sync), d(&new.sync)),
            ("peer", d(&self.peer), d(&new.peer)),
        ];
        let restart = later
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(name, _, _)| name)
            .collect();
        (applied, restart)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.host_link, &self.serial) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "host_link and serial are exclusive".into(),
                ))
            }
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "one of host_link (unix socket) or serial is needed".into(),
                ))
            }
            _ => {}
        }
        if self.monitor.len() > ha_proto::msg::MAX_IFACES {
            return Err(ConfigError::Invalid(format!(
                "{} monitored interfaces, at most {}",
                self.monitor.len(),
                ha_proto::msg::MAX_IFACES
            )));
        }
        for m in &self.monitor {
            if m.name.is_empty() || m.name.len() > 15 {
                return Err(ConfigError::Invalid(format!("interface name {:?}", m.name)));
            }
            if m.weight > ha_proto::config_block::MAX_WEIGHT {
                return Err(ConfigError::Invalid(format!(
                    "weight {} of {} above {}",
                    m.weight,
                    m.name,
                    ha_proto::config_block::MAX_WEIGHT
                )));
            }
        }
        if let Some(f) = &self.forward {
            f.inside.cluster()?;
            f.outside.cluster()?;
            if f.inside.ifname == f.outside.ifname {
                return Err(ConfigError::Invalid(
                    "inside and outside are the same interface".into(),
                ));
            }
            self.validate_shared(f)?;
        }
        if let Some(sync) = &self.sync {
            for r in &sync.rule {
                r.rule()?;
            }
        }
        for p in &self.peer {
            if ha_proto::msg::Serial::new(&p.serial).is_none() {
                return Err(ConfigError::Invalid(format!("peer serial {:?}", p.serial)));
            }
        }
        if self.interfaces_period_ms == 0 {
            return Err(ConfigError::Invalid(
                "interfaces_period_ms must be above 0".into(),
            ));
        }
        Ok(())
    }

    /// `[[forward.shared]]`: kernel path only, each domain 0–15 once and not the main one,
    /// addresses that parse.
    fn validate_shared(&self, f: &ForwardConfig) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[[forward.shared]] {m}")));
        if !f.shared.is_empty() && self.datapath != Datapath::Kernel {
            return bad(
                "needs datapath = \"kernel\" (the userspace router forwards for one domain)".into(),
            );
        }
        let max = ha_kernel::domains::MAX_DOMAIN;
        let mut seen = vec![f.domain];
        for d in &f.shared {
            if d.domain > max {
                return bad(format!("domain {}: domains are 0–{max}", d.domain));
            }
            if seen.contains(&d.domain) {
                return bad(format!(
                    "domain {} is given twice (or is [forward] domain, the main one)",
                    d.domain
                ));
            }
            seen.push(d.domain);
            d.clusters()?;
        }
        if f.domain > max {
            return Err(ConfigError::Invalid(format!(
                "[forward] domain {}: domains are 0–{max}",
                f.domain
            )));
        }
        Ok(())
    }

    /// Which kernel connections the active syncs: never this member's own (its member and
    /// cluster addresses, its HA address), then the `[[sync.rule]]`s and `min_age_s`.
    pub fn selection(&self) -> Result<ha_kernel::select::Selection, ConfigError> {
        let mut sel = ha_kernel::select::Selection::default();
        if let Some(f) = &self.forward {
            for side in [&f.inside, &f.outside] {
                sel.own.push(side.member_ip.into());
                sel.own.push(side.cluster()?.0.into());
            }
            for d in &f.shared {
                for (ip, _) in d.clusters()? {
                    sel.own.push(ip.into());
                }
            }
        }
        if let Some(sync) = &self.sync {
            sel.own.push(sync.bind.into());
            sel.min_age_ms = u64::from(sync.min_age_s) * 1000;
            sel.rules = sync
                .rule
                .iter()
                .map(SyncRuleFile::rule)
                .collect::<Result<_, _>>()?;
        }
        Ok(sel)
    }

    /// The sync socket address, with the block's port as the default.
    pub fn sync_addr(&self, block_port: u16) -> Option<SocketAddr> {
        self.sync
            .as_ref()
            .map(|s| SocketAddr::from((s.bind, s.port.unwrap_or(block_port))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
config_block = "/etc/ha/member.cfg"
host_link = "/run/ha/host.sock"
mgmt_socket = "/run/ha/mgmt.sock"
[[monitor]]
name = "eth1"
weight = 100
[[monitor]]
name = "eth2"
[forward.inside]
ifname = "eth1"
cluster_ip = "10.1.0.254/24"
member_ip = "10.1.0.11"
allow_new = true
[forward.outside]
ifname = "eth2"
cluster_ip = "10.2.0.254/24"
member_ip = "10.2.0.11"
[sync]
bind = "10.9.0.1"
[[peer]]
serial = "SN-B"
probe = ["10.1.0.12"]
sync = "10.9.0.2"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = DaemonConfig::parse(EXAMPLE).expect("parse");
        assert_eq!(c.monitor[1].weight, 100, "default weight");
        assert_eq!(c.interfaces_period_ms, 1000);
        assert_eq!(
            c.datapath,
            Datapath::Kernel,
            "the kernel forwards by default"
        );
        let u =
            DaemonConfig::parse(&format!("datapath = \"userspace\"\n{EXAMPLE}")).expect("parse");
        assert_eq!(u.datapath, Datapath::Userspace);
        assert!(matches!(
            DaemonConfig::parse(&format!("datapath = \"dpdk\"\n{EXAMPLE}")),
            Err(ConfigError::Parse(_))
        ));
        let f = c.forward.as_ref().expect("forward");
        assert_eq!(
            f.inside.cluster().expect("cidr"),
            ("10.1.0.254".parse().expect("ip"), 24)
        );
        assert!(!f.outside.allow_new);
        assert_eq!(
            c.sync_addr(44242),
            Some("10.9.0.1:44242".parse().expect("addr"))
        );
    }

    #[test]
    fn selective_sync_rules_parse_and_bad_ones_say_what_is_wrong() {
        let with = |extra: &str| {
            DaemonConfig::parse(&EXAMPLE.replace(
                "[sync]\nbind = \"10.9.0.1\"\n",
                &format!("[sync]\nbind = \"10.9.0.1\"\n{extra}"),
            ))
        };
        let c = with(
            "min_age_s = 5\n[[sync.rule]]\naction = \"skip\"\nproto = \"udp\"\ndst_port = \"53\"\n\
             [[sync.rule]]\naction = \"sync\"\nsrc = \"10.1.0.0/24\"\n",
        )
        .expect("parse");
        let sel = c.selection().expect("selection");
        assert_eq!(sel.min_age_ms, 5_000);
        assert_eq!(sel.rules.len(), 2);
        assert_eq!(sel.rules[0].proto, Some(17));
        assert_eq!(sel.rules[0].dst_port, Some((53, 53)));
        assert!(sel.own.contains(&"10.9.0.1".parse().unwrap()));
        assert!(sel.own.contains(&"10.2.0.254".parse().unwrap()));
        assert!(sel.own.contains(&"10.1.0.11".parse().unwrap()));
        for (bad, says) in [
            ("[[sync.rule]]\naction = \"drop\"\n", "sync or skip"),
            (
                "[[sync.rule]]\naction = \"skip\"\nsrc = \"10.1.0.0/33\"\n",
                "prefix",
            ),
            (
                "[[sync.rule]]\naction = \"skip\"\ndst_port = \"9-1\"\n",
                "above",
            ),
            (
                "[[sync.rule]]\naction = \"skip\"\nproto = \"tcpx\"\n",
                "tcp, udp",
            ),
        ] {
            match with(bad) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            with("[[sync.rule]]\naction = \"skip\"\nport = \"1\"\n"),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn bad_files_are_typed_errors() {
        assert!(matches!(
            DaemonConfig::parse("config_block = 3"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            DaemonConfig::parse("config_block = \"x\"\nfoo = 1\nhost_link = \"y\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            DaemonConfig::parse("config_block = \"x\""),
            Err(ConfigError::Invalid(_))
        ));
        let bad_cidr = EXAMPLE.replace("10.1.0.254/24", "10.1.0.254/40");
        assert!(matches!(
            DaemonConfig::parse(&bad_cidr),
            Err(ConfigError::Invalid(_))
        ));
        let heavy = EXAMPLE.replace("weight = 100", "weight = 10000");
        assert!(matches!(
            DaemonConfig::parse(&heavy),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn shared_domains_name_their_addresses_and_bad_ones_are_refused_with_the_reason() {
        let with = |extra: &str, prefix: &str| {
            let text = EXAMPLE.replace("[sync]", &format!("{extra}\n[sync]"));
            DaemonConfig::parse(&format!("{prefix}{text}"))
        };
        let one = "[[forward.shared]]\ndomain = 1\ninside_cluster_ip = \"10.3.0.254/24\"\n\
                   outside_cluster_ip = \"10.2.0.253/24\"";
        let c = with(one, "").expect("parse");
        let f = c.forward.as_ref().expect("forward");
        assert_eq!(f.shared[0].domain, 1);
        assert_eq!(f.shared[0].network().unwrap().to_string(), "10.3.0.0/24");
        // The other domain's cluster addresses are this member's own (never synced).
        let own = c.selection().unwrap().own;
        assert!(own.contains(&"10.3.0.254".parse().unwrap()));
        assert!(own.contains(&"10.2.0.253".parse().unwrap()));
        let refused = |extra: &str, prefix: &str, why: &str| match with(extra, prefix) {
            Err(ConfigError::Invalid(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{extra}: {other:?}"),
        };
        refused(&one.replace("domain = 1", "domain = 0"), "", "given twice");
        refused(&format!("{one}\n{one}"), "", "given twice");
        refused(&one.replace("domain = 1", "domain = 16"), "", "0–15");
        refused(
            &one.replace("10.3.0.254/24", "10.3.0.254"),
            "",
            "a.b.c.d/len",
        );
        refused(one, "datapath = \"userspace\"\n", "kernel");
    }
}
