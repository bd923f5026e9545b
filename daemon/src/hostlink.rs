//! The main-CPU end of the host link to the management controller.
//!
//! On the wire each message is a frame of channel [`Channel::Host`], sealed with the host-link
//! key derived from the member's configuration block (PSK, cluster id, key id), then
//! COBS-framed with a CRC ([`ha_proto::uart`]). The sender is the member's own serial with
//! this process's boot epoch (Unix seconds at start) and its own sequence numbers.
//!
//! [`HostCodec`] is the sans-IO core (bytes in, messages out; messages in, bytes out) and
//! [`HostLink`] drives it over a byte stream: QEMU's UART1 chardev socket in CI, a serial
//! device on hardware ([`HostLink::open_serial`]).
//!
//! Frames that fail any check are dropped and counted per reason ([`HostCodec::rejects`]);
//! they never reach the caller.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::{self, MAX_FRAME_LEN};
use ha_proto::keys::{KeySet, Keyring};
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::{Channel, Serial};
use ha_proto::replay::ReplayTable;
use ha_proto::seq::Sequencer;
use ha_proto::uart::{self, Decoder, UartError, MAX_ENCODED_LEN};

use crate::util::wait_readable;

/// Senders the host-link replay table tracks: only the local controller ever talks on this
/// link; one spare slot lets a controller with a changed serial be reported as `wrong_sender`
/// rather than `table_full`.
pub const REPLAY_SLOTS: usize = 2;

/// Messages decoded but not yet taken by the caller. A controller sends at most a status
/// report, a few events and a role decision per tick; more than this queued means the caller
/// stopped reading, and the oldest are dropped (counted as `inbox_overflow`).
pub const INBOX_LEN: usize = 1024;

/// Why sealing a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message does not fit one frame.
    Frame(frame::Error),
    /// The UART encoding failed (buffer too small: a bug).
    Uart(UartError),
    /// A key rollover message asks for a key the keyring does not hold.
    Keyring(ha_proto::keys::KeyringError),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Frame(e) => write!(f, "sealing host message: {e}"),
            EncodeError::Uart(e) => write!(f, "framing host message: {e}"),
            EncodeError::Keyring(e) => write!(f, "key rollover: {e}"),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<EncodeError> for io::Error {
    fn from(e: EncodeError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// True for the messages a controller sends to the main CPU (the direction this end accepts).
///
/// Both ends seal with the same key under the same serial, so a frame this end sent, reflected
/// back by a broken or hostile wire, would authenticate; it is refused by its direction (and by
/// its epoch, see [`HostCodec::push`]).
pub fn is_from_controller(msg: &HostMsg) -> bool {
    match msg {
        HostMsg::RoleDecision { .. }
        | HostMsg::ProbeRequest { .. }
        | HostMsg::Ping { .. }
        | HostMsg::Pong { .. }
        | HostMsg::Status(_)
        | HostMsg::Event(_)
        | HostMsg::KeyState { .. } => true,
        HostMsg::Interfaces(_)
        | HostMsg::Admin { .. }
        | HostMsg::ProbeResult { .. }
        | HostMsg::StatusRequest
        | HostMsg::InstallKey { .. }
        | HostMsg::UseKey { .. }
        | HostMsg::RetireKey { .. }
        | HostMsg::Members(_) => false,
    }
}

/// Which end of the host link a codec is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The main CPU (this daemon): accepts what a controller sends.
    MainCpu,
    /// The management controller (the host-process stand-in `ha-agent-host`): accepts what a
    /// main CPU sends, and [`HostMsg::InstallKey`] only when AEAD-sealed.
    Controller,
}

/// Sans-IO host-link codec: seals outgoing messages into UART bytes, turns incoming bytes into
/// authenticated, fresh messages.
pub struct HostCodec {
    end: End,
    serial: Serial,
    cluster_id: u32,
    keyring: Keyring,
    seq: Sequencer,
    /// Seal every frame with the AEAD (the block's `encrypt` flag), not only key transport.
    encrypt: bool,
    decoder: Box<Decoder<MAX_ENCODED_LEN>>,
    replay: ReplayTable<REPLAY_SLOTS>,
    inbox: VecDeque<HostMsg>,
    rejects: BTreeMap<&'static str, u64>,
    accepted: u64,
    sent: u64,
}

impl std::fmt::Debug for HostCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCodec")
            .field("serial", &self.serial)
            .field("cluster_id", &self.cluster_id)
            .field("epoch", &self.seq.epoch)
            .field("accepted", &self.accepted)
            .field("sent", &self.sent)
            .field("rejects", &self.rejects)
            .finish_non_exhaustive()
    }
}

impl HostCodec {
    /// The main CPU's codec for the member described by `cfg`, sending under boot epoch
    /// `epoch`.
    pub fn new(cfg: &ConfigBlock, epoch: u32) -> Self {
        Self::with_end(End::MainCpu, cfg, epoch)
    }

    /// A codec for either end.
    pub fn with_end(end: End, cfg: &ConfigBlock, epoch: u32) -> Self {
        let keys = KeySet::derive(&cfg.psk, cfg.cluster_id, cfg.key_id);
        Self {
            end,
            serial: cfg.serial,
            cluster_id: cfg.cluster_id,
            keyring: Keyring::new(keys),
            seq: Sequencer::new(cfg.cluster_id, cfg.serial, epoch),
            encrypt: cfg.encrypt,
            decoder: Box::new(Decoder::new()),
            replay: ReplayTable::new(),
            inbox: VecDeque::new(),
            rejects: BTreeMap::new(),
            accepted: 0,
            sent: 0,
        }
    }

    /// The boot epoch this end sends under.
    pub fn epoch(&self) -> u32 {
        self.seq.epoch
    }

    /// Seals `msg` and returns the bytes to write to the link.
    ///
    /// [`HostMsg::InstallKey`] is always sealed with the AEAD (the key must not cross the wire
    /// in clear). On the main CPU's end, the key rollover messages also update this end's
    /// keyring, so that it accepts and seals with the same keys as the controller:
    /// `InstallKey` accepts the new key, `UseKey` seals with it, `RetireKey` drops the other
    /// one. (The controller's end follows the rollover messages it receives.)
    pub fn encode(&mut self, msg: &HostMsg) -> Result<Vec<u8>, EncodeError> {
        let aead = self.encrypt || matches!(msg, HostMsg::InstallKey { .. });
        let mut hdr = self
            .seq
            .header(Channel::Host, self.keyring.sealing().key_id());
        hdr.aead = aead;
        let mut frame_buf = [0u8; MAX_FRAME_LEN];
        let n = frame::seal_msg(self.keyring.sealing(), &hdr, msg, &mut frame_buf)
            .map_err(EncodeError::Frame)?;
        let mut out = vec![0u8; uart::encoded_len(n)];
        let m = uart::encode_frame(&frame_buf[..n], &mut out).map_err(EncodeError::Uart)?;
        out.truncate(m);
        match msg {
            _ if self.end == End::Controller => {}
            HostMsg::InstallKey { key_id, psk } => {
                let next = KeySet::derive(&ha_proto::keys::Psk(psk.0), self.cluster_id, *key_id);
                self.keyring.accept(next).map_err(EncodeError::Keyring)?;
            }
            HostMsg::UseKey { key_id } => {
                self.keyring
                    .seal_with(*key_id)
                    .map_err(EncodeError::Keyring)?;
            }
            HostMsg::RetireKey { key_id } => {
                if self.keyring.sealing().key_id() == *key_id {
                    self.keyring.retire_previous();
                } else {
                    self.keyring
                        .seal_with(*key_id)
                        .map_err(EncodeError::Keyring)?;
                    self.keyring.retire_previous();
                }
            }
            _ => {}
        }
        self.sent += 1;
        Ok(out)
    }

    /// Feeds received bytes; every complete, valid frame becomes a message for
    /// [`next_msg`](Self::next_msg). Invalid frames are counted in [`rejects`](Self::rejects).
    ///
    /// Checks, in order: COBS and CRC, header and tag ([`frame::open`]), channel = host,
    /// sender = this member's serial, not this end's own epoch (a reflected frame), replay
    /// window, body decodes, and direction (controller → main CPU).
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let frame = match self.decoder.push(b) {
                None => continue,
                Some(Err(e)) => {
                    self.reject(uart_reason(e));
                    continue;
                }
                Some(Ok(f)) => f,
            };
            let mut buf = [0u8; MAX_FRAME_LEN];
            let Some(buf) = buf.get_mut(..frame.len()) else {
                self.reject("oversize");
                continue;
            };
            buf.copy_from_slice(frame);
            let result = self.check(buf);
            match result {
                Ok(msg) => {
                    if self.inbox.len() >= INBOX_LEN {
                        self.inbox.pop_front();
                        self.reject("inbox_overflow");
                    }
                    self.accepted += 1;
                    self.inbox.push_back(msg);
                }
                Err(reason) => self.reject(reason),
            }
        }
    }

    fn check(&mut self, buf: &mut [u8]) -> Result<HostMsg, &'static str> {
        let opened = frame::open(&self.keyring, self.cluster_id, buf).map_err(|e| e.name())?;
        let h = opened.header;
        if h.channel != Channel::Host {
            return Err("wrong_channel");
        }
        if h.sender != self.serial {
            return Err("wrong_sender");
        }
        if h.epoch == self.seq.epoch {
            return Err("reflected");
        }
        let msg: HostMsg = opened.decode().map_err(|e| e.name())?;
        let from_controller = is_from_controller(&msg);
        match self.end {
            End::MainCpu if !from_controller => return Err("wrong_direction"),
            End::Controller if from_controller => return Err("wrong_direction"),
            End::Controller if matches!(msg, HostMsg::InstallKey { .. }) && !h.aead => {
                return Err("key_in_clear")
            }
            _ => {}
        }
        // Only authenticated, well-formed frames move the window.
        self.replay
            .check_and_record(h.sender, h.epoch, h.seq)
            .map_err(|e| e.name())?;
        if self.end == End::Controller {
            // Follow the main CPU's rollover as the agent does (refusals show in the agent's
            // KeyState answer; the keyring here only has to match it).
            let sealing = self.keyring.sealing().key_id();
            match &msg {
                HostMsg::InstallKey { key_id, psk } if sealing != *key_id => {
                    let next =
                        KeySet::derive(&ha_proto::keys::Psk(psk.0), self.cluster_id, *key_id);
                    let _ = self.keyring.accept(next);
                }
                HostMsg::UseKey { key_id } => {
                    let _ = self.keyring.seal_with(*key_id);
                }
                HostMsg::RetireKey { key_id } if sealing == *key_id => {
                    self.keyring.retire_previous();
                }
                _ => {}
            }
        }
        Ok(msg)
    }

    fn reject(&mut self, reason: &'static str) {
        *self.rejects.entry(reason).or_insert(0) += 1;
    }

    /// The oldest decoded message, if any.
    pub fn next_msg(&mut self) -> Option<HostMsg> {
        self.inbox.pop_front()
    }

    /// Dropped frames per reason (`bad_crc`, `bad_tag`, `replay`, `wrong_direction`, ...).
    pub fn rejects(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejects
    }

    /// Frames accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Frames sealed so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Key id frames are sealed with now.
    pub fn sealing_key_id(&self) -> u8 {
        self.keyring.sealing().key_id()
    }
}

fn uart_reason(e: UartError) -> &'static str {
    match e {
        UartError::BufferTooSmall => "buffer_too_small",
        UartError::Overflow => "uart_overflow",
        UartError::BadCobs => "bad_cobs",
        UartError::Truncated => "uart_truncated",
        UartError::BadCrc => "bad_crc",
    }
}

/// This process's boot epoch: Unix seconds now (the main CPU has a real-time clock).
pub fn boot_epoch() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// The host link over a byte stream `T` (a unix socket to QEMU, or a serial device).
#[derive(Debug)]
pub struct HostLink<T = UnixStream> {
    io: T,
    codec: HostCodec,
}

impl HostLink<UnixStream> {
    /// Connects to QEMU's UART1 chardev socket at `path`.
    pub fn connect(path: &Path, cfg: &ConfigBlock) -> io::Result<Self> {
        let io = UnixStream::connect(path)?;
        Ok(Self::new(io, HostCodec::new(cfg, boot_epoch())))
    }

    /// Like [`connect`](Self::connect), retrying every 50 ms until `timeout` (QEMU creates the
    /// socket a moment after it starts).
    pub fn connect_retry(path: &Path, cfg: &ConfigBlock, timeout: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::connect(path, cfg) {
                Ok(l) => return Ok(l),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Opens a serial device (hardware: the UART wired to the management controller) in raw
/// mode at `baud`.
pub fn open_serial_device(device: &Path, baud: u32) -> io::Result<std::fs::File> {
    use nix::sys::termios::{self, BaudRate, SetArg};
    let rate = match baud {
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported baud rate {other}"),
            ))
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)?;
    let mut t = termios::tcgetattr(&file)?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, rate)?;
    termios::tcsetattr(&file, SetArg::TCSANOW, &t)?;
    Ok(file)
}

impl HostLink<std::fs::File> {
    /// Opens the host link on a serial device ([`open_serial_device`]).
    pub fn open_serial(device: &Path, baud: u32, cfg: &ConfigBlock) -> io::Result<Self> {
        let file = open_serial_device(device, baud)?;
        Ok(Self::new(file, HostCodec::new(cfg, boot_epoch())))
    }
}

/// Either transport of the host link, for a daemon configured with one or the other.
#[derive(Debug)]
pub enum Stream {
    /// QEMU's chardev socket.
    Unix(UnixStream),
    /// A serial device.
    Serial(std::fs::File),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Serial(f) => f.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Serial(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Serial(f) => f.flush(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Serial(f) => f.as_fd(),
        }
    }
}

impl<T: Read + Write + AsFd> HostLink<T> {
    /// The link over an already open stream.
    pub fn new(io: T, codec: HostCodec) -> Self {
        Self { io, codec }
    }

    /// Seals and writes one message.
    pub fn send(&mut self, msg: &HostMsg) -> io::Result<()> {
        let bytes = self.codec.encode(msg)?;
        self.io.write_all(&bytes)?;
        self.io.flush()
    }

    /// The next valid message, waiting at most `timeout`; `Ok(None)` when none arrived.
    /// Invalid frames are counted ([`HostCodec::rejects`]) and skipped. The peer closing the
    /// stream is an error (`UnexpectedEof`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> io::Result<Option<HostMsg>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.codec.next_msg() {
                return Ok(Some(m));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if !wait_readable(&self.io, deadline - now)? {
                continue;
            }
            match self.io.read(&mut buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "host link closed by the controller",
                    ))
                }
                Ok(n) => self.codec.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The codec (counters, key state).
    pub fn codec(&self) -> &HostCodec {
        &self.codec
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Ends the link and gives the codec back (to reconnect with the same sequence numbers).
    pub fn into_codec(self) -> HostCodec {
        self.codec
    }
}

#[cfg(test)]
pub(crate) mod tests;
