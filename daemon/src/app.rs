//! Wiring of the daemon: configuration → host link, link monitor, fast path threads, state
//! sync thread, management API; reconnection of the host link; orderly stop.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ha_mgmt_api::MemberAddresses;
use ha_proto::config_block::ConfigBlock;
use ha_proto::keys::Keyring;

use crate::config::DaemonConfig;
use crate::dp::{DpPath, DpSync};
use crate::fastpath::{FastPath, Filter, SideConfig};
use crate::links::LinkMonitor;
use crate::mgmt::MgmtServer;
use crate::packetio::{open_port, spawn_rx, Core, Senders};
use crate::peers::PeerBook;
use crate::runtime::{
    unix_ms, unix_now, Activate, Forwarding, ForwardingRole, HostLoop, LoopState, Plane, Shared,
};
use crate::synckeys::SyncKeys;
pub use crate::syncplane::{
    DrainHook, HoldsPath, NoSync, ResyncHook, ResyncOutcome, ResyncState, SyncEvent, SyncKeyHook,
    SyncPlane,
};
use ha_hostlink::{open_serial_device, HostCodec, HostLink, Pumped, Stream};

/// Largest state-sync datagram: one sealed frame ([`ha_proto::frame::MAX_FRAME_LEN`]).
pub const SYNC_DATAGRAM: usize = ha_proto::frame::MAX_FRAME_LEN;
/// How often the sync thread runs the engine's timers when nothing arrives.
pub const SYNC_TICK: Duration = Duration::from_millis(2);
/// Datagrams the sync thread takes in one round at most: the peer's frames of a burst are
/// opened and applied under one lock of the engine and the packet path, and answered with
/// one acknowledgement, instead of a round (two locks, an acknowledgement sealed and sent)
/// per datagram (session 28: during a churn the standby sent exactly one datagram for each
/// one it received, about 2,700 a second each way).
pub const SYNC_DRAIN: usize = 32;
/// Buffer of the sync socket, each way: a whole send window of the peer (1,024 frames, the
/// engine's default) at the 4 KiB the kernel may account for one 1,472-byte datagram. With
/// the default (212,992 bytes, about 90 datagrams) the standby dropped 623 datagrams in the
/// first round of a churn (session 28, `Udp: RcvbufErrors` in its namespace), each one
/// waiting for its retransmission: the round complete on the standby 0.15–2.1 s after the
/// active's last creation instead of 14–35 ms. conntrackd's configuration in the bench asks
/// 24 MB.
pub const SYNC_SOCKET_BUF: usize = 4 << 20;
/// Room for one datagram: a sealed frame at most ([`SYNC_DATAGRAM`]) fits.
const SYNC_SLOT: usize = 2048;
const _: () = assert!(SYNC_DATAGRAM < SYNC_SLOT);
// A send window of the largest frames fits at the kernel's accounting of 4 KiB each.
const _: () = assert!(SYNC_SOCKET_BUF >= 1024 * 4096);
/// How often the sync thread copies the engine's counters for the management API (a few
/// dozen map entries: cheap; often enough that `hactl forwarding`'s table size follows a
/// sync to the 10 ms the kernel-ha bench polls it at: at 100 ms its timing of our synced
/// table came out up to 100 ms late, beside conntrackd's statistics read at once).
pub const COUNTERS_EVERY: Duration = Duration::from_millis(10);

/// Polls `state` of the sync plane every 5 ms, from `start`, until it is done, no peer is
/// heard, or `bound` passes (`None`: this sync plane cannot tell). The sync thread keeps the
/// exchange going meanwhile.
fn wait_sync<S>(
    sync: &Mutex<S>,
    start: Instant,
    bound: Duration,
    state: impl Fn(&S) -> Option<ResyncState>,
) -> ResyncOutcome {
    loop {
        let s = state(&sync.lock().unwrap_or_else(|p| p.into_inner()));
        let waited = start.elapsed();
        match s {
            None => return ResyncOutcome::Unsupported,
            Some(ResyncState::Done) => return ResyncOutcome::Complete(waited),
            Some(ResyncState::NoPeer) => return ResyncOutcome::NoPeer,
            Some(ResyncState::Pending) if waited >= bound => {
                return ResyncOutcome::TimedOut(waited)
            }
            Some(ResyncState::Pending) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Waits until the peer has acknowledged every change made here, at most `bound`.
fn wait_drain<D, C: HoldsPath<D>, S: SyncPlane<D>>(
    sync: &Mutex<S>,
    core: &Mutex<C>,
    bound: Duration,
) -> ResyncOutcome {
    wait_sync(sync, Instant::now(), bound, |s| {
        // Lock order: the sync half, then the packet path.
        s.drain_state(core.lock().unwrap_or_else(|p| p.into_inner()).path_mut())
    })
}

/// Requests a resync and waits until the peer's whole table arrived, at most `bound`.
fn wait_resync<D, S: SyncPlane<D>>(sync: &Mutex<S>, bound: Duration) -> ResyncOutcome {
    let start = Instant::now();
    let id = sync
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .request_resync(start);
    match id {
        Some(id) => wait_sync(sync, start, bound, |s| Some(s.resync_state(id))),
        None => ResyncOutcome::Unsupported,
    }
}

/// The hook that keeps `keys` (the keyring file) and the sync engine `sync` (when this
/// member forwards) in step through a rollover.
pub fn sync_key_hook<D, S: SyncPlane<D>>(
    keys: SyncKeys,
    sync: Option<Arc<Mutex<S>>>,
) -> SyncKeyHook {
    let keys = Mutex::new(keys);
    Arc::new(move |phase, key_id, psk| {
        let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
        let steps = keys.follow(phase, key_id, psk)?;
        if let Some(sync) = &sync {
            let mut s = sync.lock().unwrap_or_else(|p| p.into_inner());
            for step in &steps {
                s.key_step(step)
                    .map_err(|e| format!("state-sync engine refused {step:?}: {e}"))?;
            }
        }
        let (sealing, other) = keys.key_ids();
        Ok(format!(
            "state-sync keys: {} key id {key_id} done ({} saved): sealing with key id {sealing}{}",
            phase.name(),
            keys.path().display(),
            other.map_or(String::new(), |o| format!(", key id {o} accepted too")),
        ))
    })
}

/// Everything the fast path's filter must do for the daemon (its sync half is a
/// [`SyncPlane`] over it).
pub trait Dataplane: Filter + Activate + Send + 'static {}

impl<T: Filter + Activate + Send + 'static> Dataplane for T {}

pub use ha_persist::read_block as load_block;

fn side(f: &crate::config::SideFile, mac: crate::fastpath::Mac) -> Result<SideConfig, String> {
    let (cluster_ip, prefix_len) = f.cluster().map_err(|e| e.to_string())?;
    Ok(SideConfig {
        mac,
        cluster_ip,
        prefix_len,
        member_ip: f.member_ip,
        allow_new: f.allow_new,
    })
}

/// How often the sync thread re-reads its peer's address (a membership change may move it).
const SYNC_PEER_REFRESH: Duration = Duration::from_millis(100);

/// Starts the state-sync thread: a UDP socket on `bind`, datagrams to and from the peer
/// of [`Shared::peers`] at the same port (none while no peer has a sync address).
pub fn spawn_sync<D, C: HoldsPath<D>, S: SyncPlane<D>>(
    bind: SocketAddr,
    core: Arc<Mutex<C>>,
    sync: Arc<Mutex<S>>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(SYNC_TICK))?;
    crate::packetio::force_buffers(&sock, SYNC_SOCKET_BUF)?;
    // The peer's address, the member list when it changed since `seen`, and this member's
    // model (its controller's, told to the peer).
    let peer_now = {
        let shared = shared.clone();
        move |seen: &mut u64| {
            let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
            let ip = sh.peers.sync_peer();
            let changed = (sh.peers.generation() != *seen).then(|| {
                *seen = sh.peers.generation();
                sh.peers.serials()
            });
            let model = sh.details.as_ref().map(|(d, _)| d.model.to_string());
            (
                ip.map(|ip| SocketAddr::from((ip, bind.port()))),
                changed,
                model,
            )
        }
    };
    Ok(crate::spawn_named("ha-sync", move || {
        // Room for a burst of datagrams, each cut at `SYNC_SLOT` (a longer one cannot be a
        // frame: cut, it fails its check and is refused like any bad datagram).
        let mut bufs = vec![[0u8; SYNC_SLOT]; SYNC_DRAIN];
        let mut lens: Vec<usize> = Vec::with_capacity(SYNC_DRAIN);
        let mut counted = Instant::now();
        // The engine starts with the block's members; later changes are handed to it.
        let mut generation = 0;
        let mut peer = peer_now(&mut generation).0;
        let mut peer_read = Instant::now();
        let mut seen_table = None;
        while !stop.load(Ordering::Relaxed) {
            if peer_read.elapsed() >= SYNC_PEER_REFRESH {
                let (p, members, model) = peer_now(&mut generation);
                peer = p;
                peer_read = Instant::now();
                let mut s = sync.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(members) = members {
                    s.set_peers(members);
                }
                if let Some(model) = model {
                    s.set_about(&model);
                }
            }
            receive_burst(&sock, peer, &mut bufs, &mut lens)?;
            let (outs, events, counters, table) = {
                let mut s = sync.lock().unwrap_or_else(|p| p.into_inner());
                // Crypto outside the packet path's lock: open first, seal after.
                let opened: Vec<_> = lens
                    .iter()
                    .zip(&bufs)
                    .filter_map(|(&n, b)| s.open(&b[..n]))
                    .collect();
                let now = Instant::now();
                let (msgs, counters) = {
                    let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
                    let path = c.path_mut();
                    for o in opened {
                        s.handle(path, o, now);
                    }
                    let counters =
                        (now.saturating_duration_since(counted) >= COUNTERS_EVERY).then(|| {
                            counted = now;
                            (s.counters(path), s.peer_about())
                        });
                    (s.poll_messages(path, now), counters)
                };
                (s.seal_all(msgs), s.poll_events(), counters, s.peer_table())
            };
            if table != seen_table {
                seen_table = table;
                shared.lock().unwrap_or_else(|p| p.into_inner()).peer_table = table;
            }
            if !events.is_empty() || counters.is_some() {
                let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                for e in events {
                    sh.push_local_event(e.to_event());
                }
                if let Some((counters, about)) = counters {
                    sh.sync_counters = counters.into_iter().collect();
                    if let Some((serial, model)) = about {
                        sh.peer_models.insert(serial.as_str().to_string(), model);
                    }
                }
            }
            // A full socket buffer, an unreachable peer or no peer yet loses the datagram;
            // the engine retransmits.
            if let Some(peer) = peer {
                for d in outs {
                    let _ = sock.send_to(&d, peer);
                }
            }
        }
        Ok(())
    }))
}

/// Reads the peer's datagrams of one round into `bufs` (their lengths into `lens`): waits
/// up to [`SYNC_TICK`] for the first, then takes what else is queued without waiting, at
/// most [`SYNC_DRAIN`]. Datagrams from anyone but `peer` are dropped.
fn receive_burst(
    sock: &UdpSocket,
    peer: Option<SocketAddr>,
    bufs: &mut [[u8; SYNC_SLOT]],
    lens: &mut Vec<usize>,
) -> io::Result<()> {
    lens.clear();
    let from_peer = |from: SocketAddr| Some(from.ip()) == peer.map(|p| p.ip());
    let quiet = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
        )
    };
    match sock.recv_from(&mut bufs[0]) {
        Ok((n, from)) if from_peer(from) => lens.push(n),
        Ok(_) => {}
        Err(e) if quiet(&e) => return Ok(()),
        Err(e) => return Err(e),
    }
    // Something came: whatever else is queued goes with it.
    sock.set_nonblocking(true)?;
    // Bounded in reads too, so that a stranger's flood cannot hold the round.
    let mut drained = Ok(());
    for _ in 1..2 * bufs.len() {
        if lens.len() == bufs.len() {
            break;
        }
        match sock.recv_from(&mut bufs[lens.len()]) {
            Ok((n, from)) if from_peer(from) => lens.push(n),
            Ok(_) => {}
            Err(e) => {
                if !quiet(&e) {
                    drained = Err(e);
                }
                break;
            }
        }
    }
    sock.set_nonblocking(false)?;
    drained
}

/// What a data path set up for the daemon: the plane the host loop drives, its threads,
/// and the hooks of the management server.
pub struct Built {
    /// The forwarding plane, when this member forwards.
    pub plane: Option<Box<dyn Plane>>,
    /// Threads to join at the end.
    pub threads: Vec<JoinHandle<io::Result<()>>>,
    /// Resync before a planned swap that makes this member active.
    pub resync: Option<ResyncHook>,
    /// Drain before a planned swap that makes this member passive.
    pub drain: Option<DrainHook>,
    /// The state-sync keys through a PSK rollover.
    pub sync_keys: SyncKeyHook,
}

/// What a data path gets to set itself up: the configuration, the block, the state-sync
/// keys, the shared state and the stop flag.
pub struct Context<'a> {
    /// The daemon's configuration.
    pub cfg: &'a DaemonConfig,
    /// The member's configuration block.
    pub block: &'a ConfigBlock,
    /// The state-sync keyring.
    pub keyring: Keyring,
    /// The keyring file's keys (for the rollover hook).
    pub keys: SyncKeys,
    /// State for the management API.
    pub shared: &'a Arc<Mutex<Shared>>,
    /// Set to stop.
    pub stop: &'a Arc<AtomicBool>,
}

/// Runs the daemon on the userspace fast path (`datapath = "userspace"`) until `stop` is
/// set, in boot `epoch` (the persistent boot counter, [`ha_hostlink::boot_epoch`]).
/// `dataplane` builds the connection table and sync engine from the configuration block and
/// the state-sync keyring ([`SyncKeys`]: the keyring file `<state_dir>/keyring` of the last
/// PSK rollover when there is one, else the block's key).
pub fn run<D: Dataplane, S: SyncPlane<D>>(
    cfg: DaemonConfig,
    epoch: u32,
    dataplane: impl FnOnce(&ConfigBlock, Keyring) -> (D, S),
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    run_with(cfg, epoch, stop, |cx| userspace(cx, dataplane))
}

/// Runs the daemon on the kernel data path (`datapath = "kernel"`, see
/// [`crate::kernelpath`]); `dataplane` builds the dataplane's table and sync engine, which
/// carry the kernel's conntrack entries.
pub fn run_kernel(
    cfg: DaemonConfig,
    epoch: u32,
    dataplane: impl FnOnce(&ConfigBlock, Keyring) -> (DpPath, DpSync),
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    run_with(cfg, epoch, stop, |cx| kernel(cx, dataplane))
}

/// The kernel data path ([`crate::kernelpath`]) and its sync thread.
fn kernel(
    cx: Context<'_>,
    dataplane: impl FnOnce(&ConfigBlock, Keyring) -> (DpPath, DpSync),
) -> Result<Built, String> {
    let Context {
        cfg,
        block,
        keyring,
        keys,
        shared,
        stop,
    } = cx;
    let Some(f) = &cfg.forward else {
        return Ok(Built {
            plane: None,
            threads: Vec::new(),
            resync: None,
            drain: None,
            sync_keys: sync_key_hook::<DpPath, DpSync>(keys, None),
        });
    };
    let (dp, sync) = dataplane(block, keyring);
    let select = cfg.selection().map_err(|e| e.to_string())?;
    let install = cfg
        .sync
        .as_ref()
        .map_or(Default::default(), |s| s.standby_install);
    let parts = crate::kernelpath::build(f, select, install, dp, stop)?;
    let sync = Arc::new(Mutex::new(sync));
    let mut threads = vec![parts.installer];
    let (t, resync, drain) = sync_threads(cfg, block, &parts.core, &sync, shared, stop)?;
    threads.extend(t);
    Ok(Built {
        plane: Some(Box::new(parts.plane)),
        threads,
        resync,
        drain,
        sync_keys: sync_key_hook::<DpPath, DpSync>(keys, Some(sync)),
    })
}

/// The userspace fast path: packet sockets, receive threads, the sync thread.
fn userspace<D: Dataplane, S: SyncPlane<D>>(
    cx: Context<'_>,
    dataplane: impl FnOnce(&ConfigBlock, Keyring) -> (D, S),
) -> Result<Built, String> {
    let Context {
        cfg,
        block,
        keyring,
        keys,
        shared,
        stop,
    } = cx;
    let mut threads: Vec<JoinHandle<io::Result<()>>> = Vec::new();
    let mut plane: Option<Box<dyn Plane>> = None;
    let mut sync_half = None;
    let mut resync: Option<ResyncHook> = None;
    let mut drain: Option<DrainHook> = None;
    if let Some(f) = &cfg.forward {
        let pin = open_port(&f.inside.ifname).map_err(|e| format!("{}: {e}", f.inside.ifname))?;
        let pout =
            open_port(&f.outside.ifname).map_err(|e| format!("{}: {e}", f.outside.ifname))?;
        let fp = FastPath::new(side(&f.inside, pin.mac)?, side(&f.outside, pout.mac)?);
        let (filter, sync) = dataplane(block, keyring);
        let core = Arc::new(Mutex::new(Core { fp, filter }));
        let sync = Arc::new(Mutex::new(sync));
        let senders = Senders {
            inside: pin.tx.clone(),
            outside: pout.tx.clone(),
        };
        use crate::fastpath::Side;
        threads.push(spawn_rx(
            Side::Inside,
            pin.rx,
            core.clone(),
            senders.clone(),
            stop.clone(),
        ));
        threads.push(spawn_rx(
            Side::Outside,
            pout.rx,
            core.clone(),
            senders.clone(),
            stop.clone(),
        ));
        let (t, r, d) = sync_threads(cfg, block, &core, &sync, shared, stop)?;
        threads.extend(t);
        (resync, drain) = (r, d);
        sync_half = Some(sync);
        plane = Some(Box::new(Forwarding { core, senders }));
    }
    Ok(Built {
        plane,
        threads,
        resync,
        drain,
        sync_keys: sync_key_hook::<D, S>(keys, sync_half),
    })
}

/// The sync thread (when the member syncs) and the planned-swap hooks of a data path.
pub type SyncThreads = (
    Vec<JoinHandle<io::Result<()>>>,
    Option<ResyncHook>,
    Option<DrainHook>,
);

/// The sync thread and the planned-swap hooks of a data path whose packet path `C` holds a
/// `D` synced by `S` (both data paths use it).
pub fn sync_threads<D: Send + 'static, C: HoldsPath<D>, S: SyncPlane<D>>(
    cfg: &DaemonConfig,
    block: &ConfigBlock,
    core: &Arc<Mutex<C>>,
    sync: &Arc<Mutex<S>>,
    shared: &Arc<Mutex<Shared>>,
    stop: &Arc<AtomicBool>,
) -> Result<SyncThreads, String> {
    let Some(bind) = cfg.sync_addr(block.state_sync_port) else {
        return Ok((Vec::new(), None, None));
    };
    let s = sync.clone();
    let resync: ResyncHook = Arc::new(move |bound| wait_resync::<D, S>(&s, bound));
    let (s, c) = (sync.clone(), core.clone());
    let drain: DrainHook = Arc::new(move |bound| wait_drain(&s, &c, bound));
    let t = spawn_sync(
        bind,
        core.clone(),
        sync.clone(),
        shared.clone(),
        stop.clone(),
    )
    .map_err(|e| format!("state sync on {bind}: {e}"))?;
    Ok((vec![t], Some(resync), Some(drain)))
}

/// The daemon's run around a data path that `build` sets up.
fn run_with(
    cfg: DaemonConfig,
    epoch: u32,
    stop: Arc<AtomicBool>,
    build: impl FnOnce(Context<'_>) -> Result<Built, String>,
) -> Result<(), String> {
    let block = load_block(&cfg.config_block)?;
    // The state-sync keys: the keyring file of the last rollover, else the block's key.
    let keys = SyncKeys::load(&cfg.state_dir, &block)?;
    let keyring = keys.keyring();
    let shared = Arc::new(Mutex::new(Shared {
        serial: block.serial,
        cluster_id: block.cluster_id,
        boot_time: unix_now(),
        forwarding: ForwardingRole::starting(unix_ms()),
        peers: PeerBook::load(&cfg.state_dir, &cfg.peer)?,
        addresses: MemberAddresses {
            probe: cfg
                .forward
                .iter()
                .flat_map(|f| [f.inside.member_ip, f.outside.member_ip])
                .collect(),
            sync: cfg.sync.as_ref().map(|s| s.bind),
        },
        ..Default::default()
    }));
    if keys.from_file() && !keys.holds(&block) {
        // The block's last rollover write failed (or the block cannot be written, as on a
        // controller whose flash the main CPU does not program): the file is what the peers
        // use, so it stays in force. A re-provisioned member must have its keyring file
        // removed with the old block; say so where the operator looks.
        let detail = format!(
            "{} holds key ids {:?}, not the configuration block's key id {}: state sync \
             uses the keyring file (remove it when the member was re-provisioned)",
            keys.path().display(),
            keys.key_ids(),
            block.key_id
        );
        eprintln!("ha-daemon: {detail}");
        shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_local_event(ha_mgmt_api::Event {
                time_ms: unix_ms(),
                kind: ha_mgmt_api::EventKind::KeyRotation,
                member: None,
                detail,
                seq: None,
            });
    }
    let (out_tx, out_rx) = mpsc::channel();
    let Built {
        plane,
        threads,
        resync,
        drain,
        sync_keys,
    } = build(Context {
        cfg: &cfg,
        block: &block,
        keyring,
        keys,
        shared: &shared,
        stop: &stop,
    })?;

    let mgmt = MgmtServer::new(shared.clone(), out_tx.clone())
        .with_resync(resync)
        .with_drain(drain)
        .with_block_path(Some(cfg.config_block.clone()))
        .with_daemon_config(cfg.clone())
        .with_sync_keys(Some(sync_keys))
        .spawn(&cfg.mgmt_socket, stop.clone())
        .map_err(|e| format!("management socket {}: {e}", cfg.mgmt_socket.display()))?;

    let metrics = match cfg.metrics_listen {
        Some(addr) => Some(
            crate::metrics::spawn(addr, shared.clone(), stop.clone())
                .map_err(|e| format!("metrics endpoint {addr}: {e}"))?
                .1,
        ),
        None => None,
    };

    let mut monitor = LinkMonitor::open().map_err(|e| format!("netlink: {e}"))?;
    let bounce = match (&cfg.forward, cfg.bounce_on_swap_ms) {
        (Some(f), ms) if ms > 0 => {
            let idx = |n: &str| {
                monitor
                    .index_of(n)
                    .ok_or_else(|| format!("bounce_on_swap_ms: no interface {n}"))
            };
            Some((
                vec![idx(&f.inside.ifname)?, idx(&f.outside.ifname)?],
                Duration::from_millis(ms),
            ))
        }
        _ => None,
    };
    let mut host = HostLoop {
        bounce,
        ifaces: cfg.monitor.clone(),
        interfaces_period: Duration::from_millis(cfg.interfaces_period_ms),
        garp_period: (cfg.garp_period_ms > 0).then(|| Duration::from_millis(cfg.garp_period_ms)),
        forwarding: plane,
        domain: cfg.forward.as_ref().map_or(0, |f| f.domain),
        shared_domains: cfg
            .forward
            .as_ref()
            .map_or_else(Vec::new, |f| f.shared.iter().map(|d| d.domain).collect()),
        shared: shared.clone(),
        outbox: out_rx,
        stop: stop.clone(),
    };
    let mut st = LoopState::default();
    // One codec for the whole run: the controller's replay window must see our sequence
    // numbers go on increasing across reconnections.
    let mut codec = Some(HostCodec::new(&block, epoch));
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let Some(c) = codec.take() else {
            break Err("host link codec lost".to_string());
        };
        let connected = match (&cfg.host_link, &cfg.serial) {
            // Drained by a pump thread: the loop's slow steps (an nft run on a takeover) must
            // never stall the controller's UART (`Pumped`).
            (Some(path), _) => connect_unix(path, &stop).and_then(|s| {
                Pumped::new(s)
                    .map(|p| HostLink::new(Stream::Pumped(p), c))
                    .map_err(|e| format!("{}: host link pump: {e}", path.display()))
            }),
            (None, Some(dev)) => open_serial_device(dev, cfg.baud)
                .map(|f| HostLink::new(Stream::Serial(f), c))
                .map_err(|e| format!("{}: {e}", dev.display())),
            (None, None) => Err("no host link configured".to_string()),
        };
        let mut link = match connected {
            Ok(l) => l,
            Err(e) => break Err(e),
        };
        eprintln!("ha-daemon: host link up");
        let r = host.run(&mut link, &mut monitor, &mut st);
        codec = Some(link.into_codec());
        shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .host_connected = false;
        match r {
            Ok(()) => break Ok(()),
            Err(e) => {
                // Fail safe: without its controller this member must not forward (the peers
                // take over when its heartbeats stop).
                eprintln!("ha-daemon: host link lost ({e}); passive until it is back");
                host.set_controller_alive(false, &mut st);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("ha-daemon: thread ended with {e}");
        }
    }
    let _ = mgmt.join();
    if let Some(m) = metrics {
        let _ = m.join();
    }
    result
}

fn connect_unix(path: &Path, stop: &AtomicBool) -> Result<std::os::unix::net::UnixStream, String> {
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(format!("{}: {e}", path.display()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket, UdpSocket) {
        let me = UdpSocket::bind("127.0.0.1:0").unwrap();
        me.set_read_timeout(Some(SYNC_TICK)).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
        (me, peer, stranger)
    }

    #[test]
    fn a_burst_is_read_in_rounds_of_at_most_sync_drain_from_the_peer_only() {
        let (me, peer, stranger) = pair();
        let to = me.local_addr().unwrap();
        for i in 0..(SYNC_DRAIN + 8) as u8 {
            peer.send_to(&[i; 100], to).unwrap();
            if i % 10 == 0 {
                stranger.send_to(&[0xee; 100], to).unwrap();
            }
        }
        let mut bufs = vec![[0u8; SYNC_SLOT]; SYNC_DRAIN];
        let mut lens = Vec::new();
        let from = Some(peer.local_addr().unwrap());
        receive_burst(&me, from, &mut bufs, &mut lens).unwrap();
        assert_eq!(lens.len(), SYNC_DRAIN, "a full round");
        let firsts: Vec<u8> = bufs.iter().map(|b| b[0]).collect();
        assert_eq!(
            firsts,
            (0..SYNC_DRAIN as u8).collect::<Vec<_>>(),
            "in order, the peer's"
        );
        receive_burst(&me, from, &mut bufs, &mut lens).unwrap();
        assert_eq!(lens.len(), 8, "the rest");
        receive_burst(&me, from, &mut bufs, &mut lens).unwrap();
        assert!(
            lens.is_empty(),
            "nothing left: the wait ends after SYNC_TICK"
        );
        // Back to blocking with the timeout: an idle round waits instead of spinning.
        let t = std::time::Instant::now();
        receive_burst(&me, from, &mut bufs, &mut lens).unwrap();
        assert!(t.elapsed() >= SYNC_TICK / 2, "waited {:?}", t.elapsed());
    }

    #[test]
    fn the_sync_socket_holds_a_whole_send_window() {
        use nix::sys::socket::{getsockopt, sockopt};
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::packetio::force_buffers(&sock, SYNC_SOCKET_BUF).unwrap();
        // Forced as root; otherwise the kernel caps the request at the sysctl limit. Either
        // way it doubles what it was given (its bookkeeping).
        let limit = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let root = nix::unistd::geteuid().is_root();
        for (got, max) in [
            (
                getsockopt(&sock, sockopt::RcvBuf).unwrap(),
                limit("rmem_max"),
            ),
            (
                getsockopt(&sock, sockopt::SndBuf).unwrap(),
                limit("wmem_max"),
            ),
        ] {
            let asked = if root {
                SYNC_SOCKET_BUF
            } else {
                SYNC_SOCKET_BUF.min(max)
            };
            assert!(got >= 2 * asked, "{got} < 2 x {asked}");
        }
    }

    #[test]
    fn an_oversize_datagram_is_cut_to_its_slot() {
        let (me, peer, _) = pair();
        peer.send_to(&[7u8; 4000], me.local_addr().unwrap())
            .unwrap();
        let mut bufs = vec![[0u8; SYNC_SLOT]; SYNC_DRAIN];
        let mut lens = Vec::new();
        receive_burst(&me, Some(peer.local_addr().unwrap()), &mut bufs, &mut lens).unwrap();
        assert_eq!(
            lens,
            vec![SYNC_SLOT],
            "cut: longer than any frame, refused by its check"
        );
    }
}
