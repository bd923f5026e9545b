//! Management-controller firmware on QEMU `mps2-an385`: the sans-IO HA agent (`ha-agent`)
//! driven by embassy tasks.
//!
//! | task        | does                                                                 |
//! |-------------|----------------------------------------------------------------------|
//! | `agent`     | owns the outputs: timer loop (`next_wake_ms` → `on_tick`), drains      |
//! |             | `poll_output` to the links, the host link, the LED and the log        |
//! | `backup_rx` | UART2: COBS frames → `on_frame(BACKUP)`                               |
//! | `host_rx`   | UART1: host frames (Host key) → `on_host`                             |
//! | `sensors`   | UART3: `SensorReport` → `on_hardware`                                 |
//! | `led`       | status LED: steady, or blink (1 s on / 2 s off when passive)          |
//!
//! All tasks run in one thread-mode executor (`ha_board::executor`, sleeping with WFI); the agent sits in a `RefCell` that no task
//! borrows across an `.await`.
#![no_std]
#![no_main]

mod cfg;
mod hostlink;

use core::cell::RefCell;

use defmt::{error, info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Instant, Timer};
use ha_agent::{Agent, HwKind, HwReading, LedPattern, LinkId, Output};
use ha_board::executor::Executor;
use ha_board::leds::Led;
use ha_board::uart::{UartRx, UartTx};
use ha_hal::bridge::{SensorKind, SensorReport, MAX_REPORT_LEN};
use ha_hal::led::StatusLed;
use ha_hal::link::{SerialFrameRx, SerialFrameTx};
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::uart::encoded_len;
use static_cell::StaticCell;

use crate::hostlink::HostCodec;

// The board reserves the block where the protocol says it is.
const _: () =
    assert!(ha_board::config::CONFIG_BLOCK_ADDR as u32 == ha_proto::config_block::FLASH_ADDR);

defmt::timestamp!("{=u64:ms}", Instant::now().as_millis());

/// The agent at full capacity (8 members, 16 domains): whatever a configuration block holds.
type FwAgent = Agent;
type SharedAgent = &'static RefCell<FwAgent>;
type SharedCodec = &'static RefCell<HostCodec>;

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
enum StartError {
    /// The board was already taken.
    Board,
    /// No usable configuration.
    Config(cfg::LoadError),
    /// The agent refused the configuration.
    Agent(ha_agent::ConfigError),
}

impl defmt::Format for StartError {
    fn format(&self, f: defmt::Formatter) {
        match self {
            StartError::Board => defmt::write!(f, "board initialised twice"),
            StartError::Config(e) => defmt::write!(f, "{}", e),
            StartError::Agent(e) => defmt::write!(
                f,
                "agent refused the configuration: {}",
                defmt::Display2Format(e)
            ),
        }
    }
}

fn start(spawner: Spawner) -> Result<(), StartError> {
    let board = ha_board::init().ok_or(StartError::Board)?;
    info!(
        "ha-firmware {=str} on mps2-an385",
        env!("CARGO_PKG_VERSION")
    );
    let block = cfg::load_block(ha_board::config::config_block()).map_err(StartError::Config)?;
    let config = cfg::agent_config(&block).map_err(StartError::Config)?;
    let epoch = match ha_board::config::boot_epoch() {
        Some(e) => e,
        None => {
            warn!("no boot epoch loaded at 0x3EFFC: using 1 (peers take a restart for a replay until their window passes)");
            1
        }
    };
    static AGENT: StaticCell<RefCell<FwAgent>> = StaticCell::new();
    let agent = Agent::new(config, now_ms(), epoch).map_err(StartError::Agent)?;
    let agent: SharedAgent = AGENT.init(RefCell::new(agent));
    static CODEC: StaticCell<RefCell<HostCodec>> = StaticCell::new();
    let codec: SharedCodec = CODEC.init(RefCell::new(HostCodec::new(&block, epoch)));
    info!(
        "member {=str} of cluster {=u32:#x}: {=usize} members, backup link {=bool}, epoch {=u32}",
        block.serial.as_str(),
        block.cluster_id,
        block.members.len(),
        block.backup_link,
        epoch
    );

    let (backup_rx, backup_tx) = board.backup_uart.split();
    let (host_rx, host_tx) = board.host_uart.split();
    let (sensor_rx, _) = board.sensor_uart.split();
    // Each task is spawned once, so its pool always has room.
    if let Ok(t) = agent_task(agent, codec, backup_tx, host_tx) {
        spawner.spawn(t);
    }
    if let Ok(t) = backup_rx_task(agent, backup_rx) {
        spawner.spawn(t);
    }
    if let Ok(t) = host_rx_task(agent, codec, host_rx) {
        spawner.spawn(t);
    }
    if let Ok(t) = sensor_task(agent, sensor_rx) {
        spawner.spawn(t);
    }
    if let Ok(t) = led_task(board.leds.status) {
        spawner.spawn(t);
    }
    Ok(())
}

/// Drains the agent's outputs, then sleeps until its next deadline or new input.
#[embassy_executor::task]
async fn agent_task(agent: SharedAgent, codec: SharedCodec, backup: UartTx, host: UartTx) {
    let mut backup = SerialFrameTx::new(backup);
    let mut host = SerialFrameTx::new(host);
    let mut sealed = [0u8; MAX_FRAME_LEN];
    loop {
        loop {
            let out = agent.borrow_mut().poll_output();
            let Some(out) = out else { break };
            match out {
                Output::Send { link, bytes } if link == LinkId::BACKUP => {
                    if backup.send(&bytes).await.is_err() {
                        warn!("backup link: frame too long ({=usize} bytes)", bytes.len());
                    }
                }
                Output::Send { .. } => {
                    // Main link (LAN9118) not wired yet in this build.
                }
                Output::Host(msg) => {
                    let sealed_len = codec.borrow_mut().seal(&msg, &mut sealed);
                    match sealed_len {
                        Ok(n) => {
                            if host.send(&sealed[..n]).await.is_err() {
                                warn!("host link: frame too long");
                            }
                        }
                        Err(e) => warn!("host link: cannot seal: {=str}", e.name()),
                    }
                }
                Output::Led(p) => LED.signal(p),
                Output::Event(e) => {
                    let r = e.report(0);
                    info!("event {=str}: {=str}", r.name.as_str(), r.detail.as_str());
                }
            }
        }
        let wake = agent.borrow().next_wake_ms();
        if let Either::First(()) = select(Timer::at(Instant::from_millis(wake)), INPUT.wait()).await
        {
            agent.borrow_mut().on_tick(now_ms());
        }
    }
}

/// UART2: the backup HA link.
#[embassy_executor::task]
async fn backup_rx_task(agent: SharedAgent, uart: UartRx) {
    let mut rx: SerialFrameRx<UartRx> = SerialFrameRx::new(uart);
    let mut buf = [0u8; MAX_FRAME_LEN];
    loop {
        match rx.recv().await {
            Ok(frame) => {
                let Some(b) = buf.get_mut(..frame.len()) else {
                    continue;
                };
                b.copy_from_slice(frame);
                agent.borrow_mut().on_frame(now_ms(), LinkId::BACKUP, b);
                INPUT.signal(());
            }
            Err(_) => warn!("backup link: damaged frame dropped"),
        }
    }
}

/// UART1: the host link to the main CPU.
#[embassy_executor::task]
async fn host_rx_task(agent: SharedAgent, codec: SharedCodec, uart: UartRx) {
    let mut rx: SerialFrameRx<UartRx> = SerialFrameRx::new(uart);
    let mut buf = [0u8; MAX_FRAME_LEN];
    loop {
        match rx.recv().await {
            Ok(frame) => {
                let Some(b) = buf.get_mut(..frame.len()) else {
                    continue;
                };
                b.copy_from_slice(frame);
                let opened = codec.borrow_mut().open(b);
                match opened {
                    Ok(msg) => {
                        agent.borrow_mut().on_host(now_ms(), msg);
                        INPUT.signal(());
                    }
                    Err(r) => warn!("host link: frame rejected ({=str})", r.name()),
                }
            }
            Err(_) => warn!("host link: damaged frame dropped"),
        }
    }
}

/// Receive buffer of the sensor bridge: one encoded report.
const SENSOR_RX_CAP: usize = encoded_len(MAX_REPORT_LEN);

fn hw_kind(k: SensorKind) -> HwKind {
    match k {
        SensorKind::Disk => HwKind::Disk,
        SensorKind::Raid => HwKind::Raid,
        SensorKind::Tpm => HwKind::Tpm,
        SensorKind::Psu => HwKind::Psu,
        SensorKind::Fan => HwKind::Fan,
        SensorKind::Module => HwKind::Module,
    }
}

/// UART3: the sensor bridge from the board simulator.
#[embassy_executor::task]
async fn sensor_task(agent: SharedAgent, uart: UartRx) {
    let mut rx: SerialFrameRx<UartRx, SENSOR_RX_CAP> = SerialFrameRx::new(uart);
    loop {
        let report = match rx.recv().await {
            Ok(frame) => SensorReport::decode(frame),
            Err(_) => {
                warn!("sensor bridge: damaged frame dropped");
                continue;
            }
        };
        let Ok(report) = report else {
            warn!("sensor bridge: malformed report dropped");
            continue;
        };
        let now = now_ms();
        let mut a = agent.borrow_mut();
        for r in &report.readings {
            a.on_hardware(
                now,
                HwReading {
                    kind: hw_kind(r.kind),
                    index: r.index,
                    ok: r.ok,
                },
            );
        }
        drop(a);
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
