//! The serial lines of the HA links: embassy-stm32's interrupt-driven `BufferedUart` (ring
//! buffers filled and drained by the USART interrupt), seen through `embedded-io-async` 0.6,
//! the version the `ha-hal` framing ([`ha_hal::link::SerialFrameRx`],
//! [`ha_hal::link::send_frame`]) is written against.
//!
//! Written by hand, because no crate does it: embassy-stm32 0.6 implements
//! `embedded-io-async` 0.7 and `ha-hal` uses 0.6, so [`UartRx`] and [`UartTx`] forward each
//! call from one version's trait to the other's (no buffering or logic of their own).

use embassy_stm32::usart::{self, BufferedUart, BufferedUartRx, BufferedUartTx};
use embedded_io_async_07 as io07;

/// Baud rate of the host and backup links. The ST-LINK/V2-1 and V3 virtual COM ports both
/// carry it; at 921,600 baud a largest frame (about 1.5 KiB encoded) takes 17 ms, a
/// heartbeat (about 150 bytes) under 2 ms.
pub const LINK_BAUD: u32 = 921_600;
/// Transmit ring of each link: a largest encoded frame fits whole, so queueing one never
/// waits for the line (the firmware gives a line 5 ms to take a frame).
pub const TX_BUF: usize = 2048;
/// Receive ring of each link: over 20 ms of line time at [`LINK_BAUD`] between two reads.
pub const RX_BUF: usize = 2048;

/// A USART configuration: `baud`, 8 data bits, no parity, one stop bit.
pub fn config(baud: u32) -> usart::Config {
    let mut c = usart::Config::default();
    c.baudrate = baud;
    c
}

/// A receive error of the line (framing, noise, overrun, parity). The bytes around it are
/// lost; the framing above drops the damaged frame and resynchronises at the next delimiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct UartError(pub usart::Error);

impl embedded_io::Error for UartError {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

/// One serial line, both directions.
pub struct Uart {
    inner: BufferedUart<'static>,
}

impl Uart {
    /// Wraps an initialised buffered USART.
    pub fn new(inner: BufferedUart<'static>) -> Self {
        Self { inner }
    }

    /// The receiving and the sending halves, used by different tasks.
    pub fn split(self) -> (UartRx, UartTx) {
        let (tx, rx) = self.inner.split();
        (UartRx { inner: rx }, UartTx { inner: tx })
    }
}

/// The receiving half of a [`Uart`].
pub struct UartRx {
    inner: BufferedUartRx<'static>,
}

/// The sending half of a [`Uart`].
pub struct UartTx {
    inner: BufferedUartTx<'static>,
}

impl UartTx {
    /// The embassy-stm32 half inside.
    pub fn into_inner(self) -> BufferedUartTx<'static> {
        self.inner
    }
}

impl embedded_io_async::ErrorType for UartRx {
    type Error = UartError;
}

impl embedded_io_async::ErrorType for UartTx {
    type Error = UartError;
}

impl embedded_io_async::Read for UartRx {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, UartError> {
        io07::Read::read(&mut self.inner, buf)
            .await
            .map_err(UartError)
    }
}

impl embedded_io_async::Write for UartTx {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, UartError> {
        io07::Write::write(&mut self.inner, buf)
            .await
            .map_err(UartError)
    }

    async fn flush(&mut self) -> Result<(), UartError> {
        io07::Write::flush(&mut self.inner).await.map_err(UartError)
    }
}
