//! The main-CPU end of the host link to the management controller, over a byte stream.
//!
//! Every rule about a host-link frame is `ha_proto::hostlink`'s ([`HostEndpoint`], the same
//! codec the controller runs, told it is the main CPU's end): direction, binding to the
//! controller's boot, replay, key rollover. This module only moves bytes: it frames sealed
//! messages for the UART ([`ha_proto::uart`]), reassembles incoming frames, counts what was
//! refused and queues what was accepted.
//!
//! The boot epoch this end sends under is the main CPU's persistent boot counter
//! ([`ha_persist::BootCounter`], [`boot_epoch`]), never the clock.
//!
//! [`HostCodec`] is the sans-IO part (bytes in, messages out; messages in, bytes out) and
//! [`HostLink`] drives it over a byte stream: QEMU's UART1 chardev socket in CI, a serial
//! device on hardware ([`HostLink::open_serial`]).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::MAX_FRAME_LEN;
pub use ha_proto::hostlink::End;
use ha_proto::hostlink::{HostEndpoint, SealError};
use ha_proto::msg::host::HostMsg;
use ha_proto::uart::{self, Decoder, UartError, MAX_ENCODED_LEN};

/// Messages decoded but not yet taken by the caller. A controller sends at most a status
/// report, a few events and a roles report per tick; more than this queued means the caller
/// stopped reading, and the oldest are dropped (counted as `inbox_overflow`).
pub const INBOX_LEN: usize = 1024;

/// Why sealing a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// Refused by the host-link codec (too large, wrong direction, unknown key).
    Seal(SealError),
    /// The UART encoding failed (buffer too small: a bug).
    Uart(UartError),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Seal(e) => write!(f, "{e}"),
            EncodeError::Uart(e) => write!(f, "framing host message: {e}"),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<EncodeError> for io::Error {
    fn from(e: EncodeError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Sans-IO host-link codec of the main CPU: seals outgoing messages into UART bytes, turns
/// incoming bytes into accepted messages.
pub struct HostCodec {
    ep: HostEndpoint,
    decoder: Box<Decoder<MAX_ENCODED_LEN>>,
    inbox: VecDeque<HostMsg>,
    rejects: BTreeMap<&'static str, u64>,
    accepted: u64,
    sent: u64,
}

impl std::fmt::Debug for HostCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCodec")
            .field("epoch", &self.ep.epoch())
            .field("peer_epoch", &self.ep.peer_epoch())
            .field("accepted", &self.accepted)
            .field("sent", &self.sent)
            .field("rejects", &self.rejects)
            .finish_non_exhaustive()
    }
}

impl HostCodec {
    /// The main CPU's codec for the member described by `cfg`, sending under boot epoch
    /// `epoch` (from [`boot_epoch`]).
    pub fn new(cfg: &ConfigBlock, epoch: u32) -> Self {
        Self::with_end(End::MainCpu, cfg, epoch)
    }

    /// A codec for either end (tests play the controller's end over a socket with it).
    pub fn with_end(end: End, cfg: &ConfigBlock, epoch: u32) -> Self {
        Self {
            ep: HostEndpoint::new(
                end,
                &cfg.psk,
                cfg.cluster_id,
                cfg.key_id,
                cfg.serial,
                epoch,
                cfg.encrypt,
            ),
            decoder: Box::new(Decoder::new()),
            inbox: VecDeque::new(),
            rejects: BTreeMap::new(),
            accepted: 0,
            sent: 0,
        }
    }

    /// The boot epoch this end sends under.
    pub fn epoch(&self) -> u32 {
        self.ep.epoch()
    }

    /// The controller's boot, once one of its frames was accepted.
    pub fn peer_epoch(&self) -> Option<u32> {
        self.ep.peer_epoch()
    }

    /// Seals `msg` and returns the bytes to write to the link. Key rollover messages also
    /// move this end's keyring (see [`HostEndpoint::seal`]).
    pub fn encode(&mut self, msg: &HostMsg) -> Result<Vec<u8>, EncodeError> {
        let mut frame_buf = [0u8; MAX_FRAME_LEN];
        let n = self
            .ep
            .seal(msg, &mut frame_buf)
            .map_err(EncodeError::Seal)?;
        let mut out = vec![0u8; uart::encoded_len(n)];
        let m = uart::encode_frame(&frame_buf[..n], &mut out).map_err(EncodeError::Uart)?;
        out.truncate(m);
        self.sent += 1;
        Ok(out)
    }

    /// Feeds received bytes; every complete, accepted frame becomes a message for
    /// [`next_msg`](Self::next_msg). Refused frames are counted in
    /// [`rejects`](Self::rejects) by reason (`bad_crc`, `bad_tag`, `unbound`, ...).
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
            match self.ep.open(buf) {
                Ok(msg) => {
                    if self.inbox.len() >= INBOX_LEN {
                        self.inbox.pop_front();
                        self.reject("inbox_overflow");
                    }
                    self.accepted += 1;
                    self.inbox.push_back(msg);
                }
                Err(r) => self.reject(r.name()),
            }
        }
    }

    fn reject(&mut self, reason: &'static str) {
        *self.rejects.entry(reason).or_insert(0) += 1;
    }

    /// The oldest accepted message, if any.
    pub fn next_msg(&mut self) -> Option<HostMsg> {
        self.inbox.pop_front()
    }

    /// Refused frames per reason.
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

    /// True when frames are sealed in the compact form now (the controller takes it).
    pub fn sends_compact(&self) -> bool {
        self.ep.sends_compact()
    }

    /// Key id frames are sealed with now.
    pub fn sealing_key_id(&self) -> u8 {
        self.ep.sealing_key_id()
    }
}

/// Name of a UART framing error, for the reject counters.
pub fn uart_reason(e: UartError) -> &'static str {
    match e {
        UartError::BufferTooSmall => "buffer_too_small",
        UartError::Overflow => "uart_overflow",
        UartError::BadCobs => "bad_cobs",
        UartError::Truncated => "uart_truncated",
        UartError::BadCrc => "bad_crc",
    }
}

/// This process's boot epoch: the main CPU's persistent boot counter in `state_dir`
/// (`boot-counter`), incremented on every start.
pub fn boot_epoch(state_dir: &Path) -> io::Result<u32> {
    ha_persist::BootCounter::new(state_dir.join("boot-counter")).next()
}

/// The host link over a byte stream `T` (a unix socket to QEMU, or a serial device).
#[derive(Debug)]
pub struct HostLink<T = UnixStream> {
    io: T,
    codec: HostCodec,
}

impl HostLink<UnixStream> {
    /// Connects to QEMU's UART1 chardev socket at `path`, sending under boot `epoch`.
    pub fn connect(path: &Path, cfg: &ConfigBlock, epoch: u32) -> io::Result<Self> {
        let io = UnixStream::connect(path)?;
        Ok(Self::new(io, HostCodec::new(cfg, epoch)))
    }

    /// Like [`connect`](Self::connect), retrying every 50 ms until `timeout` (QEMU creates the
    /// socket a moment after it starts).
    pub fn connect_retry(
        path: &Path,
        cfg: &ConfigBlock,
        epoch: u32,
        timeout: Duration,
    ) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::connect(path, cfg, epoch) {
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
    /// Opens the host link on a serial device ([`open_serial_device`]), sending under boot
    /// `epoch`.
    pub fn open_serial(
        device: &Path,
        baud: u32,
        cfg: &ConfigBlock,
        epoch: u32,
    ) -> io::Result<Self> {
        let file = open_serial_device(device, baud)?;
        Ok(Self::new(file, HostCodec::new(cfg, epoch)))
    }
}

/// Either transport of the host link, for a daemon configured with one or the other.
#[derive(Debug)]
pub enum Stream {
    /// QEMU's chardev socket.
    Unix(UnixStream),
    /// QEMU's chardev socket, drained by a pump thread ([`Pumped`]).
    Pumped(Pumped),
    /// A serial device.
    Serial(std::fs::File),
}

/// Capacity asked for the pump's pipe (the kernel may grant less; 64 KiB at least).
pub const PUMP_PIPE_BYTES: i32 = 1 << 20;

/// A chardev socket whose incoming bytes a thread moves into a pipe as they come, so that
/// the sender never waits on this end, even while the reader is busy elsewhere.
///
/// Why: QEMU's UART writes to its chardev socket one byte per system call, and a unix
/// stream socket charges each write a whole buffer's overhead (hundreds of bytes) against
/// the sender's send buffer until it is read; a few hundred unread bytes fill it. A daemon
/// that spends 20-100 ms on a takeover's steps (an `nft` run) without reading therefore
/// stalls the controller's UART, and the firmware drops frames it could not send in time.
/// A pipe merges small writes into its pages: the pump's copy holds a megabyte of them.
/// Writes go straight to the socket. Dropping it shuts the socket down, which ends the pump.
#[derive(Debug)]
pub struct Pumped {
    rx: std::fs::File,
    tx: UnixStream,
}

impl Pumped {
    /// Starts the pump on `sock`.
    pub fn new(sock: UnixStream) -> io::Result<Pumped> {
        let tx = sock.try_clone()?;
        let (r, w) = nix::unistd::pipe().map_err(io::Error::from)?;
        // Best effort: the default 64 KiB already holds a burst.
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&w),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(PUMP_PIPE_BYTES),
        );
        let mut w = std::fs::File::from(w);
        let mut src = sock;
        std::thread::Builder::new()
            .name("host-link pump".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                // Dropping the pipe's write end: the reader sees the end of the stream.
            })?;
        Ok(Pumped {
            rx: std::fs::File::from(r),
            tx,
        })
    }
}

impl Drop for Pumped {
    fn drop(&mut self) {
        // Ends the pump's read (and with it the connection QEMU sees).
        let _ = self.tx.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Pumped(p) => p.rx.read(buf),
            Stream::Serial(f) => f.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Pumped(p) => p.tx.write(buf),
            Stream::Serial(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Pumped(p) => p.tx.flush(),
            Stream::Serial(f) => f.flush(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Pumped(p) => p.rx.as_fd(),
            Stream::Serial(f) => f.as_fd(),
        }
    }
}

/// How many bytes written to a transport the other end has not read yet: the kernel's
/// output queue (`TIOCOUTQ`, which is `SIOCOUTQ` on a socket). On a unix stream socket it
/// counts each write's buffer until the reader has taken all of it, so 0 means every frame
/// written has been read. The daemon writes its next frame only then ([`HostLink::unsent`]),
/// keeping what waits in a queue it can still reorder.
pub trait Unsent {
    /// Bytes written and not read yet; `None` when the transport cannot tell.
    fn unsent(&self) -> Option<usize>;
}

nix::ioctl_read_bad!(output_queue, nix::libc::TIOCOUTQ, nix::libc::c_int);

fn outq_of(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer, which lives across the call.
    let r = unsafe { output_queue(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut n) };
    r.ok().and_then(|_| usize::try_from(n).ok())
}

impl Unsent for UnixStream {
    fn unsent(&self) -> Option<usize> {
        outq_of(self.as_fd())
    }
}

impl Unsent for std::fs::File {
    fn unsent(&self) -> Option<usize> {
        outq_of(self.as_fd())
    }
}

impl Unsent for Stream {
    fn unsent(&self) -> Option<usize> {
        match self {
            Stream::Unix(s) => s.unsent(),
            Stream::Pumped(p) => p.tx.unsent(),
            Stream::Serial(f) => f.unsent(),
        }
    }
}

impl<T: Read + Write + AsFd + Unsent> HostLink<T> {
    /// Bytes written and not read by the controller yet (0 when the transport cannot tell).
    pub fn unsent(&self) -> usize {
        self.io.unsent().unwrap_or(0)
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

/// Waits until `fd` is readable or `timeout` passes; true when readable. An interrupted wait
/// counts as a timeout (the caller loops on its own deadline).
///
/// `ppoll`, to the nanosecond: `poll` takes whole milliseconds, so a wait of 0.9 ms became
/// 0 and a caller looping until its deadline ([`HostLink::recv_timeout`]) spun on `poll`
/// for the rest of each millisecond (the daemon's host loop took about 8 % of a core that
/// way in a churn profile, doing nothing). A wait past a day is a day (a `timespec` from
/// `Duration::MAX` would be negative).
pub fn wait_readable<F: AsFd>(fd: &F, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{ppoll, PollFd, PollFlags};
    use nix::sys::time::TimeSpec;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let timeout = timeout.min(Duration::from_secs(86_400));
    match ppoll(&mut fds, Some(TimeSpec::from(timeout)), None) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

#[cfg(test)]
mod tests;
