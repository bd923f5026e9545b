//! Management-controller firmware on QEMU `mps2-an385` or the NUCLEO-H743ZI board (one cargo
//! feature picks the board, see [`board`]): the sans-IO HA agent (`ha-agent`) driven by
//! embassy tasks.
//!
//! | task        | does                                                                 |
//! |-------------|----------------------------------------------------------------------|
//! | `agent`     | owns the outputs: timer loop (`poll_at` → `handle_timeout`), drains    |
//! |             | `poll_output` to the links, the host link (events too), LED and log  |
//! | `net`       | embassy-net stack on the LAN9118 (static IPv4 from the config block)  |
//! | `main_rx`   | UDP socket of the main HA link → `handle_member_frame(MAIN)`          |
//! | `backup_rx` | UART2: COBS frames → `handle_member_frame(BACKUP)`                    |
//! | `host_rx`   | UART1: host frames → `handle_host_frame` (the agent opens them)       |
//! | `sensors`   | UART3: `SensorReport` → `handle_sensor_report` (silence is timed out) |
//! | `led`       | status LED: steady, or blink (1 s on / 2 s off when passive)          |
//!
//! All tasks run in one thread-mode executor (`ha_board::executor`, sleeping with WFI); the
//! agent sits in a `RefCell` that no task borrows across an `.await`. Modules: [`cfg`]
//! (configuration block → agent configuration), [`net`] (main link), [`serial`] (sending on
//! the serial lines). The host link's controller end is the agent's own
//! (`Agent::handle_host_frame`, `Agent::seal_host`): this shell only moves its bytes.
#![no_std]
#![no_main]

// The board crate other than the default one takes the default's name (see `board`).
#[cfg(feature = "nucleo-h743zi")]
extern crate ha_board_nucleo_h743zi as ha_board;

mod board;
mod cfg;
mod errors;
mod net;
mod serial;

use core::cell::RefCell;

use defmt::{error, info, warn};
use embassy_executor::Spawner;

use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Instant, Timer};
use ha_agent::{Agent, LedPattern, LinkId, Output};
use ha_board::executor::Executor;
use ha_board::leds::Led;
use ha_board::sensors::SensorBridge;
use ha_board::uart::{UartRx, UartTx};
use ha_hal::led::StatusLed;
use ha_hal::link::SerialFrameRx;
use ha_hal::sensors::SensorSource;
use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::{LinkState, Serial};
use static_cell::StaticCell;

use crate::net::{start_net, MainTx, PeerList};
use crate::serial::SerialOut;

defmt::timestamp!("{=u64:ms}", Instant::now().as_millis());

/// Members this firmware handles ([`ha_agent::config::FIRMWARE_MEMBERS`]).
pub const FW_MEMBERS: usize = ha_agent::config::FIRMWARE_MEMBERS;
/// HA domains this firmware handles ([`ha_agent::config::FIRMWARE_DOMAINS`], which
/// `hactl provision` checks too). A block with more is refused.
pub const FW_DOMAINS: usize = ha_agent::config::FIRMWARE_DOMAINS;
/// The agent as built into this firmware.
type FwAgent = Agent<FW_MEMBERS, FW_DOMAINS>;
type SharedAgent = &'static RefCell<&'static mut FwAgent>;

/// Set by every input task after feeding the agent: the agent task drains the outputs.
static INPUT: Signal<CriticalSectionRawMutex, ()> = Signal::new();
/// The LED pattern the agent asked for.
static LED: Signal<CriticalSectionRawMutex, LedPattern> = Signal::new();

fn now_ms() -> u64 {
    Instant::now().as_millis()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Some(loc) = info.location() {
        error!("panic at {=str}:{=u32}", loc.file(), loc.line());
    } else {
        error!("panic");
    }
    loop {
        cortex_m::asm::wfi();
    }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR.init(Executor::new()).run(|spawner| {
        if let Err(e) = start(spawner) {
            // The member does not join: no task runs, the LED stays off, the core sleeps.
            error!("member does not join: {}", e);
        }
    })
}

/// Why [`start`] gave up.
pub(crate) enum StartError {
    /// The board was already taken.
    Board,
    /// No usable configuration.
    Config(cfg::LoadError),
    /// The agent refused the configuration.
    Agent(ha_agent::ConfigError),
    /// The Ethernet controller did not come up.
    Eth(ha_board::eth::EthError),
    /// The configuration has no main-link address for this member.
    NoAddress,
    /// No boot counter: a reused boot epoch would make every frame of this boot a replay.
    NoBootEpoch,
    /// The main-link UDP port could not be bound.
    Bind,
}

impl defmt::Format for StartError {
    fn format(&self, f: defmt::Formatter) {
        match self {
            StartError::Board => defmt::write!(f, "board initialised twice"),
            StartError::Config(e) => defmt::write!(f, "{}", e),
            StartError::Agent(e) => defmt::write!(
                f,
                "agent refused the configuration: {}",
                crate::errors::WordsText(e)
            ),
            StartError::Eth(e) => defmt::write!(f, "Ethernet controller: {}", e),
            StartError::NoAddress => defmt::write!(f, "no main-link address for this member"),
            StartError::NoBootEpoch => defmt::write!(
                f,
                "no boot counter (a reused boot epoch would make this boot's frames replays)"
            ),
            StartError::Bind => defmt::write!(f, "cannot bind the main-link UDP port"),
        }
    }
}

// Setup is split into functions that are never inlined, so that the large values each
// builds (configuration, agent, network buffers) do not share one stack frame.
#[inline(never)]
fn start(spawner: Spawner) -> Result<(), StartError> {
    let board = ha_board::init().ok_or(StartError::Board)?;
    info!(
        "ha-firmware {=str} on {=str}",
        env!("CARGO_PKG_VERSION"),
        crate::board::NAME
    );
    // Decoded in place (about 550 bytes, not moved through stack frames).
    let mut slot = None;
    let block = load_block(&mut slot)?;
    let epoch = ha_board::config::boot_epoch().ok_or(StartError::NoBootEpoch)?;
    let agent = make_agent(block, epoch)?;
    info!(
        "member {=str} of cluster {=u32:#x}: {=usize} members, backup link {=bool}, epoch {=u32}",
        block.serial.as_str(),
        block.cluster_id,
        block.members.len(),
        block.backup_link,
        epoch
    );

    let (main_rx, main_tx, peers) = start_net(spawner, block, epoch)?;

    let (backup_rx, backup_tx) = board.backup_uart.split();
    let (host_rx, host_tx) = board.host_uart.split();
    // Each task is spawned once, so its pool always has room.
    if let Ok(t) = net::main_rx_task(agent, main_rx) {
        spawner.spawn(t);
    }
    if let Ok(t) = agent_task(agent, main_tx, peers, backup_tx, host_tx) {
        spawner.spawn(t);
    }
    if let Ok(t) = backup_rx_task(agent, backup_rx) {
        spawner.spawn(t);
    }
    if let Ok(t) = host_rx_task(agent, peers, block.serial, host_rx) {
        spawner.spawn(t);
    }
    if let Ok(t) = sensor_task(agent, board.sensors) {
        spawner.spawn(t);
    }
    if let Ok(t) = stack_report_task() {
        spawner.spawn(t);
    }
    if let Ok(t) = led_task(board.leds.status) {
        spawner.spawn(t);
    }
    Ok(())
}

#[inline(never)]
fn load_block(slot: &mut Option<ConfigBlock>) -> Result<&ConfigBlock, StartError> {
    match cfg::load_block(ha_board::config::config_block()) {
        Ok(block) => Ok(slot.insert(block)),
        Err(e) => Err(StartError::Config(e)),
    }
}

#[inline(never)]
fn make_agent(block: &ConfigBlock, epoch: u32) -> Result<SharedAgent, StartError> {
    // The agent (about 8 KiB) is built in its static slot (`Agent::init_in`), never on the
    // boot stack, and the RefCell holds a reference to it.
    static SLOT: StaticCell<FwAgent> = StaticCell::new();
    static AGENT: StaticCell<RefCell<&'static mut FwAgent>> = StaticCell::new();
    let config = cfg::agent_config(block).map_err(StartError::Config)?;
    match Agent::init_in(SLOT.uninit(), config, now_ms(), epoch) {
        Ok(a) => Ok(AGENT.init(RefCell::new(a))),
        Err(e) => Err(StartError::Agent(e)),
    }
}

/// What [`stage`] left for the agent task to send on a serial line, sealed or encoded into
/// the task's frame buffer: the output itself is gone before the task awaits the line.
enum Staged {
    /// Nothing left to send (a main-link frame went out, the LED was signalled).
    Done,
    /// The first `n` bytes of the buffer, to the backup link.
    Backup(usize),
    /// The first `n` bytes of the buffer, to the host link.
    Host(usize),
}

/// Handles one output of the agent without waiting: main-link frames are sent now, the LED
/// is signalled, and what goes on a serial line is copied or sealed into `frame`. Kept apart
/// from the task so that no output (up to a frame and a status report) is held across an
/// `.await`: each one would be a slot of the task's state in RAM. Not inlined: its stack
/// frame and the agent's (building the output) are never stacked.
#[inline(never)]
fn stage(
    agent: SharedAgent,
    out: &Output,
    main: &mut MainTx,
    peers: PeerList,
    frame: &mut [u8; MAX_FRAME_LEN],
) -> Staged {
    match out {
        Output::Send { link, bytes } if *link == LinkId::BACKUP => {
            match frame.get_mut(..bytes.len()) {
                Some(dst) => {
                    dst.copy_from_slice(bytes);
                    Staged::Backup(bytes.len())
                }
                None => Staged::Done,
            }
        }
        Output::Send { bytes, .. } => {
            // Peers whose main link is up and the others go through separate sockets: a
            // frame to a down peer may stay queued (see `MainTx`).
            let a = agent.borrow();
            let up = |s: &Serial| {
                a.status()
                    .peer(s)
                    .is_some_and(|p| p.links[0].state == LinkState::Up)
            };
            let peers = peers.borrow();
            let live = peers.iter().filter(|p| up(&p.0)).map(|p| (p.1, p.2));
            let others = peers.iter().filter(|p| !up(&p.0)).map(|p| (p.1, p.2));
            main.send_round(bytes, live, others);
            Staged::Done
        }
        Output::Host(msg) => match agent.borrow_mut().seal_host(msg, frame) {
            Ok(n) if matches!(msg, HostMsg::ProbeAsk { .. } | HostMsg::ProbeRequest { .. }) => {
                // A takeover's timeline: when each probe was asked (and its answer, below).
                if let HostMsg::ProbeAsk { peer, request, .. } = msg {
                    info!("probe #{=u16} of {=str} asked", request, peer.as_str());
                } else if let HostMsg::ProbeRequest { peer, .. } = msg {
                    info!("probe of {=str} asked (unnumbered)", peer.as_str());
                }
                Staged::Host(n)
            }
            Ok(n) => Staged::Host(n),
            Err(e) => {
                warn!("host link: cannot seal: {}", errors::SealErrorText(&e));
                Staged::Done
            }
        },
        Output::Led(p) => {
            LED.signal(*p);
            Staged::Done
        }
        Output::Event(e) => {
            // Logged, and reported to the main CPU (numbered by the agent: a gap tells the
            // main CPU that events were lost).
            let report = e.report();
            info!(
                "event {=str}: {=str}",
                report.name.as_str(),
                report.detail.as_str()
            );
            match agent.borrow_mut().seal_host(&HostMsg::Event(report), frame) {
                Ok(n) => Staged::Host(n),
                Err(_) => Staged::Done,
            }
        }
    }
}

/// Takes the agent's next output and stages it ([`stage`]); `None` when there is none. Not
/// inlined: the output (up to a frame) is built in this function's stack frame, which is
/// gone before the agent task awaits anything.
#[inline(never)]
fn next_staged(
    agent: SharedAgent,
    main: &mut MainTx,
    peers: PeerList,
    frame: &mut [u8; MAX_FRAME_LEN],
) -> Option<Staged> {
    let mut out = None;
    agent.borrow_mut().poll_output_into(&mut out);
    out.as_ref().map(|o| stage(agent, o, main, peers, frame))
}

/// Drains the agent's outputs, then sleeps until its next deadline or new input.
#[embassy_executor::task]
async fn agent_task(
    agent: SharedAgent,
    mut main: MainTx,
    peers: PeerList,
    backup: UartTx,
    host: UartTx,
) {
    let mut backup = SerialOut::new(backup, "backup");
    let mut host = SerialOut::new(host, "host");
    // One frame buffer (a backup-link frame, or a sealed host message) for both serial
    // lines (encoded as it is sent: no encoding buffer).
    let mut frame = [0u8; MAX_FRAME_LEN];
    loop {
        while let Some(staged) = next_staged(agent, &mut main, peers, &mut frame) {
            match staged {
                Staged::Done => {}
                Staged::Backup(n) => backup.send(&frame[..n]).await,
                Staged::Host(n) => host.send(&frame[..n]).await,
            }
        }
        let wake = agent.borrow().poll_at();
        if let Either::First(()) = select(Timer::at(Instant::from_millis(wake)), INPUT.wait()).await
        {
            agent.borrow_mut().handle_timeout(now_ms());
        }
    }
}

/// The next whole frame a serial link received, in the link's own buffer (opened in place by
/// the agent: no copy); a damaged or oversized one is dropped, with a warning naming `link`.
async fn next_serial_frame<'r>(rx: &'r mut SerialFrameRx<UartRx>, link: &str) -> &'r mut [u8] {
    loop {
        // The borrow checker cannot yet end a returned borrow in one arm of a loop (NLL
        // "problem case 3"), so the frame is checked first, then taken again.
        match rx.recv().await {
            Ok(frame) if frame.len() <= MAX_FRAME_LEN => {}
            Ok(_) => {
                warn!("{=str}: oversized frame dropped", link);
                continue;
            }
            Err(_) => {
                warn!("{=str}: damaged frame dropped", link);
                continue;
            }
        }
        return rx.last_frame_mut();
    }
}

/// UART2: the backup HA link.
#[embassy_executor::task]
async fn backup_rx_task(agent: SharedAgent, uart: UartRx) {
    let mut rx: SerialFrameRx<UartRx> = SerialFrameRx::new(uart);
    loop {
        let b = next_serial_frame(&mut rx, "backup link").await;
        agent
            .borrow_mut()
            .handle_member_frame(now_ms(), LinkId::BACKUP, b);
        INPUT.signal(());
    }
}

/// UART1: the host link to the main CPU.
#[embassy_executor::task]
async fn host_rx_task(agent: SharedAgent, peers: PeerList, me: Serial, uart: UartRx) {
    let mut rx: SerialFrameRx<UartRx> = SerialFrameRx::new(uart);
    loop {
        let b = next_serial_frame(&mut rx, "host link").await;
        let mut a = agent.borrow_mut();
        let rejected = a.status().counters.host_rejected.total();
        a.handle_host_frame(now_ms(), b);
        if a.status().counters.host_rejected.total() != rejected {
            warn!("host link: frame rejected");
        }
        if let Some(n) = a.take_probe_note() {
            info!(
                "probe #{=u16} of {=str}: {=str}{=str}",
                n.request.unwrap_or(0),
                n.peer.as_str(),
                if n.alive { "alive" } else { "dead" },
                if n.taken {
                    ""
                } else {
                    ", ignored: asked before the peer was last heard"
                }
            );
        }
        // A new member list taken by the agent: the main link sends where it says.
        if let Some(list) = a.poll_member_addresses() {
            net::set_peers(peers, me, &list);
        }
        drop(a);
        INPUT.signal(());
    }
}

/// Hardware readings (UART3: the sensor bridge from the board simulator).
#[embassy_executor::task]
async fn sensor_task(agent: SharedAgent, mut sensors: SensorBridge) {
    loop {
        let report = match sensors.next_report().await {
            Ok(r) => r,
            Err(e) => {
                warn!("sensor bridge: report dropped ({})", e);
                continue;
            }
        };
        // The bridge's readings are the protocol's: handed over as they are.
        agent
            .borrow_mut()
            .handle_sensor_report(now_ms(), &report.readings);
        INPUT.signal(());
    }
}

/// The status LED: steady when active, blinking otherwise.
#[embassy_executor::task]
async fn led_task(pin: Led) {
    let Ok(mut led) = StatusLed::new(pin);
    let mut pattern = LedPattern::Off;
    loop {
        pattern = match pattern {
            LedPattern::Off | LedPattern::Steady => {
                let Ok(()) = led.set(pattern == LedPattern::Steady);
                LED.wait().await
            }
            LedPattern::Blink { on_ms, off_ms } => {
                let Ok(()) = led.set(true);
                match select(Timer::after_millis(on_ms.into()), LED.wait()).await {
                    Either::Second(p) => p,
                    Either::First(()) => {
                        let Ok(()) = led.set(false);
                        match select(Timer::after_millis(off_ms.into()), LED.wait()).await {
                            Either::Second(p) => p,
                            Either::First(()) => pattern,
                        }
                    }
                }
            }
        };
    }
}

/// Logs the stack high-water mark a second after boot, and again whenever it has grown
/// (looked at every 10 s): `cargo xtask size` and docs/firmware.md quote it, and a cluster
/// run shows the deepest path it met (an overflow faults: the stack sits at the bottom of
/// RAM, below unmapped memory).
#[embassy_executor::task]
async fn stack_report_task() {
    Timer::after_secs(1).await;
    let mut reported = 0;
    loop {
        let mark = ha_board::stack::high_water();
        if mark > reported {
            reported = mark;
            info!(
                "stack high-water: {=usize} of {=usize} bytes",
                mark,
                ha_board::stack::size()
            );
        }
        Timer::after_secs(10).await;
    }
}
