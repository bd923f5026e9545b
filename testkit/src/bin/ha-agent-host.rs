//! `ha-agent-host`: the real HA agent (`ha-agent`, the same code the firmware runs) in a host
//! process, standing in for a member's QEMU management controller while the firmware cluster
//! is not available. It is a test tool: the end-to-end test names it in its output whenever
//! it is used instead of QEMU.
//!
//! - host link: listens on a unix socket like QEMU's UART1 chardev (`server=on,wait=off`),
//!   frames sealed with the host-link key ([`ha_hostlink::HostCodec`], controller end);
//! - main HA link: sealed member frames in UDP datagrams to every `--peer`;
//! - no backup link and no sensor source (`sensor_timeout_ms` 0: hardware quality stays 100).
//!
//! ```text
//! ha-agent-host --block a.cfg --host-sock /tmp/a/host.sock \
//!     --bind 127.0.0.1:45001 --peer 127.0.0.1:45002
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use ha_agent::{Agent, Config, LinkId, Output};
use ha_persist::read_block as load_block;
use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::FirmwareVersion;
use ha_proto::uart::{self, Decoder, MAX_ENCODED_LEN};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Parser)]
#[command(
    name = "ha-agent-host",
    about = "The HA agent in a host process (QEMU stand-in)"
)]
struct Cli {
    /// The member's configuration block.
    #[arg(long)]
    block: PathBuf,
    /// Unix socket the daemon connects to (the host link).
    #[arg(long)]
    host_sock: PathBuf,
    /// Local UDP address of the main HA link.
    #[arg(long)]
    bind: SocketAddr,
    /// UDP address of a peer's main HA link (repeat for each peer).
    #[arg(long)]
    peer: Vec<SocketAddr>,
}

fn agent_config(b: &ConfigBlock) -> Result<Config, String> {
    let mut c: Config = Config::from_block(b, "host-agent", FirmwareVersion::default())
        .map_err(|e| format!("agent configuration: {e}"))?;
    // A host process has no serial backup link (the main link only) and no sensor source.
    c.links = 1;
    c.sensor_timeout_ms = 0;
    Ok(c)
}

fn run(cli: Cli) -> Result<(), String> {
    let block = load_block(&cli.block)?;
    let cfg = agent_config(&block)?;
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    // The controller's persistent boot counter, kept beside its configuration block as the
    // QEMU launcher keeps the emulated flash's.
    let counter = ha_persist::BootCounter::new(cli.block.with_extension("boot"));
    let epoch = counter
        .next()
        .map_err(|e| format!("boot counter {}: {e}", counter.path().display()))?;
    let mut agent: Agent = Agent::new(cfg, now_ms(), epoch).map_err(|e| e.to_string())?;
    let mut decoder: Box<Decoder<MAX_ENCODED_LEN>> = Box::new(Decoder::new());
    let seal = |agent: &mut Agent, m: &HostMsg| -> Result<Vec<u8>, String> {
        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = agent.seal_host(m, &mut frame).map_err(|e| e.to_string())?;
        let mut out = vec![0u8; uart::encoded_len(n)];
        let k = uart::encode_frame(&frame[..n], &mut out).map_err(|e| e.to_string())?;
        out.truncate(k);
        Ok(out)
    };
    let _ = std::fs::remove_file(&cli.host_sock);
    let listener = UnixListener::bind(&cli.host_sock)
        .map_err(|e| format!("{}: {e}", cli.host_sock.display()))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let udp = UdpSocket::bind(cli.bind).map_err(|e| format!("{}: {e}", cli.bind))?;
    udp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut host: Option<UnixStream> = None;
    let mut buf = vec![0u8; 65_536];
    eprintln!("ha-agent-host: {} up", block.serial);
    loop {
        // Outputs first: they may be due from the last input.
        while let Some(o) = agent.poll_output() {
            match o {
                Output::Send { link, bytes } if link == LinkId::MAIN => {
                    for p in &cli.peer {
                        let _ = udp.send_to(&bytes, p);
                    }
                }
                Output::Send { .. } => {}
                Output::Host(m) => {
                    let bytes = seal(&mut agent, &m)?;
                    if let Some(s) = host.as_mut() {
                        if s.write_all(&bytes).is_err() {
                            host = None;
                        }
                    }
                }
                Output::Led(p) => eprintln!("ha-agent-host: led {p:?}"),
                Output::Event(e) => {
                    // Logged, and reported to the main CPU in sequence, as the firmware does.
                    eprintln!("ha-agent-host: event {e:?}");
                    let bytes = seal(&mut agent, &HostMsg::Event(e.report()))?;
                    if let Some(s) = host.as_mut() {
                        if s.write_all(&bytes).is_err() {
                            host = None;
                        }
                    }
                }
            }
        }
        let wait = agent.poll_at().saturating_sub(now_ms()).min(50);
        {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(udp.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(s) = &host {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(wait as u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        match listener.accept() {
            Ok((s, _)) => {
                // A new main-CPU connection replaces the old one, as QEMU's chardev does.
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                host = Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
        loop {
            match udp.recv_from(&mut buf) {
                Ok((n, _)) => agent.handle_member_frame(now_ms(), LinkId::MAIN, &mut buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors (peer not up yet) surface here; the datagram is just lost.
                Err(_) => break,
            }
        }
        if let Some(s) = host.as_mut() {
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        host = None;
                        break;
                    }
                    Ok(n) => {
                        for &b in &buf[..n] {
                            if let Some(Ok(f)) = decoder.push(b) {
                                let mut frame = f.to_vec();
                                agent.handle_host_frame(now_ms(), &mut frame);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        host = None;
                        break;
                    }
                }
            }
        }
        let now = now_ms();
        if now >= agent.poll_at() {
            agent.handle_timeout(now);
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-agent-host: {e}");
            ExitCode::FAILURE
        }
    }
}
