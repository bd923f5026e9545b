//! Caps of the tables a peer feeds (defect 8 of "Reliability and security"): a peer holding
//! the state-sync key must not be able to make this member hold more than it is sized for.
//!
//! Every table has a cap ([`Limits`], defaults below with their reasons). A record that would
//! add a new item to a table at its cap is refused ([`Refused::Full`]); a record whose item is
//! malformed beyond what the table stores (a certificate serial longer than X.509 allows, a
//! user with hundreds of groups) is refused too ([`Refused::Invalid`]). Updates of items
//! already held and removals are always applied. The caps bound what the *peer* installs;
//! this member's own items (created by its filter and control plane) are not refused here.

/// Connections a member holds at most. A member is sized for 2M connections: at 120–240 B
/// per connection in the map (`memory_per_entry` measures it; the map doubles when it grows)
/// that is 0.25–0.5 GB, and it is 8 times Linux's default `nf_conntrack_max` (262,144). Set
/// [`Limits::conns`] to the active's own limit when it differs: a passive that holds fewer
/// connections than its active cannot take all of them over.
pub const MAX_CONNS: usize = 2_000_000;
/// Kernel conntrack entries (the kernel data path): as many as connections.
pub const MAX_KERNEL_CONNS: usize = MAX_CONNS;
/// Kernel conntrack expectations: as many as the userspace path's expectations (Linux's
/// `nf_conntrack_expect_max` is 4,096 with the default 262,144 buckets).
pub const MAX_KERNEL_EXPECTS: usize = MAX_EXPECTS;
/// Hosts (address → Ethernet address): a /16 of neighbours, far above what a segment holds
/// (Linux's neighbour table stops at `gc_thresh3`, 1,024 by default).
pub const MAX_HOSTS: usize = 65_536;
/// Authenticated users at once: a /16 of addresses, above any site's concurrent logins.
pub const MAX_USERS: usize = 65_536;
/// Pending helper expectations (FTP data, SIP media): each lives at most
/// [`super::timeouts::EXPECTATION`] (60 s) and a control connection opens a few, so 16,384
/// allows about 270 new helper sessions per second; Linux's default `nf_conntrack_expect_max`
/// is a few hundred to a few thousand.
pub const MAX_EXPECTS: usize = 16_384;
/// Monitored gateways (next hops): a few per zone.
pub const MAX_GATEWAYS: usize = 1_024;
/// Certificate serials (valid or revoked) of the CAs the appliance trusts: large CRLs run to
/// tens of thousands of entries; 131,072 leaves room for several.
pub const MAX_CERTS: usize = 131_072;
/// IKEv2 SAs: a large VPN concentrator terminates tens of thousands of tunnels.
pub const MAX_IKE_SAS: usize = 65_536;
/// Longest certificate serial, bytes: RFC 5280 §4.1.2.2 allows 20 octets, plus the sign byte
/// of the DER integer.
pub const MAX_CERT_SERIAL_LEN: usize = 21;
/// Most groups of one user. An empty group name costs one byte on the wire and a 24-byte
/// `String` here: without this bound, one frame of empty names would cost 30 KB per user.
pub const MAX_USER_GROUPS: usize = 32;
/// Longest user or group name, bytes (directory names are far shorter).
pub const MAX_NAME_LEN: usize = 256;

/// The tables, by kind (for caps, counters and events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Connections.
    Conns,
    /// Hosts.
    Hosts,
    /// Authenticated users.
    Users,
    /// Helper expectations.
    Expects,
    /// Gateways.
    Gateways,
    /// Certificate serials.
    Certs,
    /// IKEv2 SAs.
    Ike,
    /// Kernel conntrack entries.
    KernelConns,
    /// Kernel conntrack expectations.
    KernelExpects,
}

impl TableKind {
    /// Number of kinds (size of a counter array).
    pub const COUNT: usize = 9;
    /// Every kind, in counter order.
    pub const ALL: [TableKind; Self::COUNT] = [
        TableKind::Conns,
        TableKind::Hosts,
        TableKind::Users,
        TableKind::Expects,
        TableKind::Gateways,
        TableKind::Certs,
        TableKind::Ike,
        TableKind::KernelConns,
        TableKind::KernelExpects,
    ];

    /// Position in a counter array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short, stable name for counters, logs and events.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Conns => "connections",
            TableKind::Hosts => "hosts",
            TableKind::Users => "users",
            TableKind::Expects => "expectations",
            TableKind::Gateways => "gateways",
            TableKind::Certs => "certificates",
            TableKind::Ike => "ike_sas",
            TableKind::KernelConns => "kernel_connections",
            TableKind::KernelExpects => "kernel_expectations",
        }
    }
}

impl core::fmt::Display for TableKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cap of every table (items a peer can make this member hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections ([`MAX_CONNS`]).
    pub conns: usize,
    /// Hosts ([`MAX_HOSTS`]).
    pub hosts: usize,
    /// Users ([`MAX_USERS`]).
    pub users: usize,
    /// Expectations ([`MAX_EXPECTS`]).
    pub expects: usize,
    /// Gateways ([`MAX_GATEWAYS`]).
    pub gateways: usize,
    /// Certificate serials ([`MAX_CERTS`]).
    pub certs: usize,
    /// IKE SAs ([`MAX_IKE_SAS`]).
    pub ike: usize,
    /// Kernel conntrack entries ([`MAX_KERNEL_CONNS`]).
    pub kernel_conns: usize,
    /// Kernel conntrack expectations ([`MAX_KERNEL_EXPECTS`]).
    pub kernel_expects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            conns: MAX_CONNS,
            hosts: MAX_HOSTS,
            users: MAX_USERS,
            expects: MAX_EXPECTS,
            gateways: MAX_GATEWAYS,
            certs: MAX_CERTS,
            ike: MAX_IKE_SAS,
            kernel_conns: MAX_KERNEL_CONNS,
            kernel_expects: MAX_KERNEL_EXPECTS,
        }
    }
}

impl Limits {
    /// The cap of one table.
    pub fn cap(&self, kind: TableKind) -> usize {
        match kind {
            TableKind::Conns => self.conns,
            TableKind::Hosts => self.hosts,
            TableKind::Users => self.users,
            TableKind::Expects => self.expects,
            TableKind::Gateways => self.gateways,
            TableKind::Certs => self.certs,
            TableKind::Ike => self.ike,
            TableKind::KernelConns => self.kernel_conns,
            TableKind::KernelExpects => self.kernel_expects,
        }
    }

    /// The same cap `n` for every table (tests).
    pub fn all(n: usize) -> Self {
        Self {
            conns: n,
            hosts: n,
            users: n,
            expects: n,
            gateways: n,
            certs: n,
            ike: n,
            kernel_conns: n,
            kernel_expects: n,
        }
    }
}

/// Why a peer's item was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The table is at its cap and the item is new.
    Full {
        /// The table.
        table: TableKind,
        /// Its cap.
        cap: usize,
    },
    /// The item is larger than the table stores (see [`MAX_CERT_SERIAL_LEN`],
    /// [`MAX_USER_GROUPS`], [`MAX_NAME_LEN`]).
    Invalid(TableKind),
}

impl Refused {
    /// The table concerned.
    pub fn table(self) -> TableKind {
        match self {
            Refused::Full { table, .. } | Refused::Invalid(table) => table,
        }
    }
}
