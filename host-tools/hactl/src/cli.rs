//! hactl's command line: every command, subcommand and option, with the help text an
//! operator reads (`hactl --help`, `hactl <command> --help`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, listed under `hactl --help`.
const EXIT_CODES: &str = "Exit codes: 0 success, 1 operation failed, 2 bad command line, \
3 refused input (weak passphrase, invalid value, existing file, refused by the daemon), \
4 file error, 5 daemon or service unreachable, 6 missing/corrupt/invalid configuration image, \
7 configuration not synchronized (synctest).";

#[derive(Parser)]
#[command(name = "hactl", version, about = "Operate an HA cluster: keys, provisioning, status, control, configuration sync", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Where the daemon and the configuration-sync service listen, for the commands that talk
    /// to them (also accepted after the command's name).
    #[command(flatten)]
    pub(crate) at: At,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// The sockets of a member's daemon and configuration-sync service: options of the commands
/// that talk to them only (the offline ones, which work on files, have none).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct At {
    /// The daemon's management socket (default: $HA_MGMT_SOCKET, else /run/ha/mgmt.sock).
    #[arg(long)]
    pub(crate) socket: Option<PathBuf>,
    /// The configuration-sync service's socket, for config publish/sync/diff/synctest, cluster
    /// create/join/remove and the sync column of info (default: $HA_CONFIG_SOCKET, else
    /// /run/ha/confsync.sock).
    #[arg(long)]
    pub(crate) config_socket: Option<PathBuf>,
}

impl At {
    /// True when neither socket was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.socket.is_none() && self.config_socket.is_none()
    }
}

/// The daemon's socket, an option of the commands that talk to the daemon.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct DaemonAt {
    /// The daemon's management socket (default: $HA_MGMT_SOCKET, else /run/ha/mgmt.sock).
    #[arg(long)]
    pub(crate) socket: Option<PathBuf>,
}

/// The configuration-sync service's socket, an option of the commands that talk to it.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct ServiceAt {
    /// The configuration-sync service's socket (default: $HA_CONFIG_SOCKET, else
    /// /run/ha/confsync.sock).
    #[arg(long)]
    pub(crate) config_socket: Option<PathBuf>,
}

/// Which of a member's sockets a command talks to.
pub(crate) struct Uses<'a> {
    /// The daemon's, when it talks to the daemon.
    pub(crate) daemon: Option<&'a DaemonAt>,
    /// The configuration-sync service's, when it talks to the service.
    pub(crate) service: Option<&'a ServiceAt>,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Cluster pre-shared key: generate, check a passphrase.
    #[command(subcommand)]
    Psk(PskCmd),
    /// Write a member's flash configuration block to an image file (mode 0600).
    Provision(ProvisionArgs),
    /// Change the HA settings in a configuration image (then `hactl reload`)
    ///
    /// Timers, weights, aggregate rule, TPM, preferred members, encryption, backup link;
    /// the image's serial, key and members stay. Prints what changed and the new revision;
    /// `hactl reload` on that member then applies it without a restart.
    Settings(SettingsArgs),
    /// Show what a configuration image holds (never the key, only its fingerprint).
    Inspect {
        /// The image file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The cluster status table: every member's mode, quality, links, config sync.
    Info {
        /// Add protocol counters.
        #[arg(short, long)]
        verbose: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAt,
        #[command(flatten)]
        svc: ServiceAt,
    },
    /// This member's mode.
    Mode {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// The role this member's data path applies (answered by the daemon alone, also while
    /// its controller is silent).
    Forwarding {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Force a member active, whatever its quality
    ///
    /// This member, or MEMBER by serial: relayed by this member's controller over the HA
    /// links, confirmed by MEMBER's heartbeats.
    Active {
        /// The member's serial (default: this member).
        member: Option<String>,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Force a member passive (this member, or MEMBER by serial).
    Passive {
        /// The member's serial (default: this member).
        member: Option<String>,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Remove a member's forcing: the election decides again (this member, or MEMBER).
    Reset {
        /// The member's serial (default: this member).
        member: Option<String>,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Apply this member's changed HA settings now, without a restart or a swap
    ///
    /// Reads the configuration image again (edited with `hactl settings`) and the daemon's
    /// configuration file: timers, weights, aggregate rule, TPM, preferred members,
    /// encryption, backup link and the monitored interfaces apply in place. Prints each
    /// change. Refuses, changing nothing, what needs another command: a new key (`hactl psk
    /// rotate`), members (`hactl cluster join/remove`), the domain list (a restart).
    Reload {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Freeze this member's HA decisions (no role change) for a bounded time; they resume by
    /// themselves. With a command after `--`, pause, run it (no shell), then resume: e.g.
    /// `hactl pause --seconds 60 -- nft -f /etc/nftables.conf` around a policy reload.
    Pause {
        /// How long at most, seconds (the controller bounds it too).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=3600))]
        seconds: u16,
        /// Program and arguments to run while paused.
        #[arg(last = true)]
        command: Vec<String>,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Resume HA decisions before a pause ends.
    Resume {
        #[command(flatten)]
        at: DaemonAt,
    },
    /// The event log: role changes, link and peer events, key rotations, sync results.
    Events(EventsArgs),
    /// The configuration store and its sync: publish, sync, diff, synctest, events.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Same as `hactl config sync` (kept for scripts).
    #[command(hide = true)]
    Sync(SyncArgs),
    /// Same as `hactl config diff` (kept for scripts).
    #[command(hide = true)]
    Diff(DiffArgs),
    /// Same as `hactl config synctest` (kept for scripts).
    #[command(hide = true)]
    Synctest(SynctestArgs),
    /// Cluster membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Shell completions on standard output, e.g. `hactl completions bash >
    /// /etc/bash_completion.d/hactl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on standard output, e.g. `hactl man > /usr/local/share/man/man1/hactl.1`.
    Man,
    /// Rolling update: the passive first, then a swap, then the other member. Each member
    /// gets the firmware image (--image with --install), the new daemon (--daemon), or both.
    Update {
        /// Firmware image for the controllers.
        #[arg(long, requires = "install", required_unless_present = "daemon")]
        image: Option<PathBuf>,
        /// The new ha-daemon program (an absolute path present on every member's main CPU):
        /// each member's daemon is replaced in place while it is passive, and the member is
        /// back once its new daemon holds the active member's connection table.
        #[arg(long)]
        daemon: Option<PathBuf>,
        /// A member as SERIAL=SOCKET (its daemon's management socket); repeat for every
        /// member of the cluster.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// The site's program that installs the image on one member and returns once it
        /// restarted: run as `PROGRAM SERIAL IMAGE` (no shell).
        #[arg(long)]
        install: Option<PathBuf>,
        /// Firmware version the image reports; a member has rejoined once it shows it.
        #[arg(long)]
        expect_version: Option<String>,
        /// Longest wait for a member to rejoin or take over, seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Interval between status polls while waiting, milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// Consecutive polls a member must look healthy before the next step.
        #[arg(long, default_value_t = 3)]
        settle_polls: u32,
        /// Machine-readable progress (one JSON object per line).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// Turn the draft into a new revision (active member only; a standby is read-only).
    Publish {
        /// Comment stored with the revision.
        #[arg(long)]
        comment: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: ServiceAt,
    },
    /// Push the latest published configuration revision to the peers (incremental, atomic).
    Sync(SyncArgs),
    /// Compare one configuration file with a peer's copy.
    Diff(DiffArgs),
    /// List unsynchronized files and local unpublished changes; exits 7 when any.
    Synctest(SynctestArgs),
    /// The configuration-sync service's event log: syncs, joins, refused frames (by reason),
    /// sessions cut by a deadline.
    Events(ServiceEventsArgs),
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Create a cluster on this (active) member: it becomes the cluster's first member.
    Create {
        /// Cluster id.
        #[arg(long)]
        cluster_id: u32,
        /// Key file of the cluster PSK (from `hactl psk generate`).
        #[arg(long)]
        psk_file: PathBuf,
        #[command(flatten)]
        at: ServiceAt,
    },
    /// Join the cluster whose active member's configuration-sync service listens at --peer;
    /// this member then receives the cluster's configuration. A full cluster refuses.
    Join {
        /// IP:PORT of the active member's configuration-sync receiver.
        #[arg(long)]
        peer: String,
        /// Key file of the cluster PSK.
        #[arg(long)]
        psk_file: PathBuf,
        /// This member's main HA link (IP:PORT): the active member at --peer adds it to its
        /// HA member list (controller and configuration block) as it answers the join; every
        /// other member whose configuration service knows its daemon does the same when the
        /// new cluster document reaches it.
        #[arg(long)]
        ha_address: Option<String>,
        /// Also add this member directly to the HA member list of the daemon at this
        /// management socket (on this machine); repeat for each. Needed only for a member
        /// whose configuration service runs without --daemon-socket: the others add it when
        /// the new cluster document reaches them.
        #[arg(long = "member-socket", requires = "ha_address")]
        member_sockets: Vec<PathBuf>,
        #[command(flatten)]
        at: DaemonAt,
        #[command(flatten)]
        svc: ServiceAt,
    },
    /// Make this machine's configuration block from the cluster's own settings: needs only
    /// the cluster key and one member's configuration-sync address. The member's frames name
    /// the cluster and the key id (checked with the key before anything is sent); its answer
    /// carries the members, timers, domains and quality settings; this machine is added as
    /// --serial at --main-link. Then boot the controller with the block and join.
    Enroll(EnrollArgs),
    /// Remove a failed member (before joining its replacement).
    Remove {
        /// Its serial.
        #[arg(long)]
        serial: String,
        /// Also drop it directly from the HA member list of the daemon at this management
        /// socket (on this machine); repeat for each. Needed only for a member whose
        /// configuration service runs without --daemon-socket: the others drop it when the
        /// new cluster document reaches them.
        #[arg(long = "member-socket")]
        member_sockets: Vec<PathBuf>,
        #[command(flatten)]
        at: ServiceAt,
    },
}

/// `hactl cluster enroll`'s arguments.
#[derive(Args)]
pub(crate) struct EnrollArgs {
    /// IP:PORT of a member's configuration-sync receiver.
    #[arg(long)]
    pub peer: String,
    /// Key file of the cluster's current PSK.
    #[arg(long)]
    pub psk_file: PathBuf,
    /// This machine's serial.
    #[arg(long)]
    pub serial: String,
    /// This machine's main HA link, IPv4:PORT.
    #[arg(long)]
    pub main_link: String,
    /// Where to write the configuration image (mode 0600).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
    /// The site's installer, run as `PROGRAM SERIAL IMAGE` (no shell) once the image is
    /// written; a non-zero exit fails the command.
    #[arg(long)]
    pub install: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum PskCmd {
    /// Generate a 256-bit key from the OS CSPRNG into a file with mode 0600.
    Generate {
        /// Where to write the key (64 hex digits).
        #[arg(long, short)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Also print the key on standard output (it is never printed otherwise).
        #[arg(long)]
        show: bool,
        /// Derive the key from a passphrase read from standard input (or --passphrase-file)
        /// instead; the passphrase must pass `psk check`.
        #[arg(long)]
        from_passphrase: bool,
        /// File holding the passphrase (with --from-passphrase).
        #[arg(long, requires = "from_passphrase")]
        passphrase_file: Option<PathBuf>,
    },
    /// Change the PSK of the running cluster without a swap or a lost heartbeat: the new key
    /// is accepted everywhere, then used, then the old one is retired.
    Rotate {
        /// Key file of the new PSK (from `hactl psk generate`); read by the daemon, never sent
        /// on a command line.
        #[arg(long)]
        psk_file: PathBuf,
        /// Key id of the new key (must differ from the current one).
        #[arg(long)]
        key_id: u8,
        /// The management socket of one member's daemon; repeat for every member of the
        /// cluster (default: --socket alone, for a cluster of one member). Every member must
        /// be listed: each phase is confirmed by all of them before the next starts.
        #[arg(long = "member-socket")]
        member_sockets: Vec<PathBuf>,
        /// The configuration-sync service's socket of one member; repeat for every member to
        /// roll the sync channel's keys over too (after the HA links').
        #[arg(long = "config-member-socket")]
        config_member_sockets: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Where a running PSK rotation stands.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAt,
    },
    /// Rate a passphrase (read from standard input or --file, never from the command line);
    /// exits 3 when it is too short or guessable.
    Check {
        /// File holding the passphrase.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Words an attacker would try first (cluster name, site, serials).
        #[arg(long = "context")]
        context: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub(crate) struct ProvisionArgs {
    /// Key file (from `hactl psk generate`).
    #[arg(long)]
    pub(crate) psk_file: PathBuf,
    /// This member's serial.
    #[arg(long)]
    pub(crate) serial: String,
    /// Cluster id.
    #[arg(long)]
    pub(crate) cluster_id: u32,
    /// Key id of the PSK (changes on every rotation).
    #[arg(long, default_value_t = 1)]
    pub(crate) key_id: u8,
    /// A member as SERIAL=IP:PORT of its main HA link; repeat for each, in cluster order,
    /// this member included.
    #[arg(long = "member", required = true)]
    pub(crate) members: Vec<String>,
    /// The backup HA link (serial line) is wired.
    #[arg(long)]
    pub(crate) backup_link: bool,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    #[arg(long)]
    pub(crate) encrypt: bool,
    /// UDP port of the connection-state sync.
    #[arg(long, default_value_t = ha_proto::config_block::DEFAULT_STATE_SYNC_PORT)]
    pub(crate) state_sync_port: u16,
    /// Timer profile: default, fast or custom:INTERVAL_MS:MISS_LIMIT.
    #[arg(long, default_value = "default")]
    pub(crate) timers: String,
    /// A domain as ID or ID=SERIAL (SERIAL is active when qualities are equal); ids 0–15, at
    /// most 4 domains (the firmware's limit); default 0.
    #[arg(long = "domain")]
    pub(crate) domains: Vec<String>,
    /// When an aggregate counts as down: all-down or any-down.
    #[arg(long, default_value = "all-down")]
    pub(crate) aggregate: String,
    /// Count the TPM in the quality factor.
    #[arg(long)]
    pub(crate) tpm: bool,
    /// Hardware weight KIND=WEIGHT (disk, raid, tpm, psu, fan, module; 0..=9999).
    #[arg(long = "weight")]
    pub(crate) weights: Vec<String>,
    /// Output image.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace an existing image.
    #[arg(long)]
    pub(crate) force: bool,
}

/// A switch given on the command line: `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnOff {
    /// Switched on.
    On,
    /// Switched off.
    Off,
}

/// Options of `hactl settings`: each given option replaces that setting, the others stay.
#[derive(Args)]
pub(crate) struct SettingsArgs {
    /// The image file (the daemon's `config_block`).
    pub(crate) file: PathBuf,
    /// Timer profile: default, fast or custom:INTERVAL_MS:MISS_LIMIT.
    #[arg(long)]
    pub(crate) timers: Option<String>,
    /// Hardware weight KIND=WEIGHT (disk, raid, tpm, psu, fan, module; 0..=9999); repeat.
    #[arg(long = "weight")]
    pub(crate) weights: Vec<String>,
    /// When an aggregate counts as down: all-down or any-down.
    #[arg(long)]
    pub(crate) aggregate: Option<String>,
    /// Count the TPM in the quality factor.
    #[arg(long, value_enum)]
    pub(crate) tpm: Option<OnOff>,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    #[arg(long, value_enum)]
    pub(crate) encrypt: Option<OnOff>,
    /// The backup HA link (serial line) is wired.
    #[arg(long, value_enum)]
    pub(crate) backup_link: Option<OnOff>,
    /// The domain list, as ID or ID=SERIAL (SERIAL is active when qualities are equal);
    /// repeat for each. A running member takes new preferred members; other ids need a
    /// restart.
    #[arg(long = "domain")]
    pub(crate) domains: Vec<String>,
}

/// Options of `hactl config sync`.
#[derive(Args)]
pub(crate) struct SyncArgs {
    /// Only this peer (serial).
    #[arg(long)]
    pub(crate) peer: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) at: ServiceAt,
}

/// Options of `hactl config diff`.
#[derive(Args)]
pub(crate) struct DiffArgs {
    /// Path relative to the configuration root.
    pub(crate) file: String,
    /// The peer (serial); the first peer when absent.
    #[arg(long)]
    pub(crate) peer: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) at: ServiceAt,
}

/// Options of `hactl config synctest`.
#[derive(Args)]
pub(crate) struct SynctestArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) at: ServiceAt,
}

/// The options of an event log (the daemon's, the configuration-sync service's).
#[derive(Args)]
pub(crate) struct LogArgs {
    /// Keep printing new events until interrupted.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N past events.
    #[arg(long)]
    pub(crate) last: Option<u32>,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The options of the configuration-sync service's event log.
#[derive(Args)]
pub(crate) struct ServiceEventsArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(flatten)]
    pub(crate) at: ServiceAt,
}

/// The options of the daemon's event log.
#[derive(Args)]
pub(crate) struct EventsArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(flatten)]
    pub(crate) at: DaemonAt,
}

impl Cmd {
    /// The sockets given after the command's name, for a command that talks to a member's
    /// daemon or configuration-sync service; `None` for the offline ones (files, help, keys).
    pub(crate) fn at(&self) -> Option<Uses<'_>> {
        let daemon = |at| {
            Some(Uses {
                daemon: Some(at),
                service: None,
            })
        };
        let service = |at| {
            Some(Uses {
                daemon: None,
                service: Some(at),
            })
        };
        match self {
            Cmd::Info { at, svc, .. } | Cmd::Cluster(ClusterCmd::Join { at, svc, .. }) => {
                Some(Uses {
                    daemon: Some(at),
                    service: Some(svc),
                })
            }
            Cmd::Mode { at, .. }
            | Cmd::Forwarding { at, .. }
            | Cmd::Active { at, .. }
            | Cmd::Passive { at, .. }
            | Cmd::Reset { at, .. }
            | Cmd::Reload { at, .. }
            | Cmd::Pause { at, .. }
            | Cmd::Resume { at }
            | Cmd::Events(EventsArgs { at, .. })
            | Cmd::Psk(PskCmd::Rotate { at, .. })
            | Cmd::Psk(PskCmd::Status { at, .. }) => daemon(at),
            Cmd::Sync(SyncArgs { at, .. })
            | Cmd::Diff(DiffArgs { at, .. })
            | Cmd::Synctest(SynctestArgs { at, .. })
            | Cmd::Config(ConfigCmd::Publish { at, .. })
            | Cmd::Config(ConfigCmd::Sync(SyncArgs { at, .. }))
            | Cmd::Config(ConfigCmd::Diff(DiffArgs { at, .. }))
            | Cmd::Config(ConfigCmd::Synctest(SynctestArgs { at, .. }))
            | Cmd::Config(ConfigCmd::Events(ServiceEventsArgs { at, .. }))
            | Cmd::Cluster(ClusterCmd::Create { at, .. })
            | Cmd::Cluster(ClusterCmd::Remove { at, .. }) => service(at),
            // It talks to every member's daemon, each named by --member.
            Cmd::Update { .. } => Some(Uses {
                daemon: None,
                service: None,
            }),
            Cmd::Psk(PskCmd::Generate { .. } | PskCmd::Check { .. })
            | Cmd::Cluster(ClusterCmd::Enroll(_))
            | Cmd::Provision(_)
            | Cmd::Settings(_)
            | Cmd::Inspect { .. }
            | Cmd::Completions { .. }
            | Cmd::Man => None,
        }
    }
}
