//! Arm CMSDK APB UART: set-up, the receive interrupt's drain into a ring, the transmit
//! register.
//!
//! Receive is flow-controlled: when the ring is full the byte stays in the UART's holding
//! register (the board masks the receive interrupt until the reader made room), so QEMU
//! holds the rest back and nothing is lost. Transmit writes a byte only when the holding
//! register is empty; the board waits for the transmit interrupt otherwise (never a busy
//! poll: under QEMU a polling guest can starve the thread that would empty the register).

use crate::Regs;

/// Data register (a write sends, a read takes the received byte).
pub const DATA: usize = 0x00;
/// Status: transmit register full, receive register full.
pub const STATE: usize = 0x04;
/// Control: enables.
pub const CTRL: usize = 0x08;
/// Interrupt status (read) and clear (write 1).
pub const INTCLEAR: usize = 0x0C;
/// Baud rate divider.
pub const BAUDDIV: usize = 0x10;

/// STATE: the transmit holding register is full.
pub const STATE_TX_FULL: u32 = 1 << 0;
/// STATE: a received byte waits in the receive holding register.
pub const STATE_RX_FULL: u32 = 1 << 1;
/// CTRL: transmit enabled.
pub const CTRL_TX_EN: u32 = 1 << 0;
/// CTRL: receive enabled.
pub const CTRL_RX_EN: u32 = 1 << 1;
/// CTRL: transmit interrupt enabled.
pub const CTRL_TX_IRQ_EN: u32 = 1 << 2;
/// CTRL: receive interrupt enabled.
pub const CTRL_RX_IRQ_EN: u32 = 1 << 3;
/// Interrupt status: the transmit register emptied.
pub const INT_TX: u32 = 1 << 0;
/// Interrupt status: a byte was received.
pub const INT_RX: u32 = 1 << 1;

/// The smallest divider the UART (and QEMU's model) accepts.
pub const MIN_BAUD_DIVIDER: u32 = 16;

/// The baud rate divider for `baud` at `clock_hz`, at least [`MIN_BAUD_DIVIDER`].
fn divider(clock_hz: u32, baud: u32) -> u32 {
    (clock_hz / baud.max(1)).max(MIN_BAUD_DIVIDER)
}

/// Sets the UART up for transmit and receive with both interrupts enabled in the UART (the
/// board decides which lines the interrupt controller lets through), at `clock_hz / baud`
/// (at least [`MIN_BAUD_DIVIDER`]); stale interrupt statuses are cleared first.
pub fn init<R: Regs>(r: &mut R, clock_hz: u32, baud: u32) {
    r.write(CTRL, 0);
    r.write(BAUDDIV, divider(clock_hz, baud));
    r.write(INTCLEAR, 0xF);
    r.write(
        CTRL,
        CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_IRQ_EN | CTRL_TX_IRQ_EN,
    );
}

/// Sets the UART up for transmit only, without interrupts (a log line).
pub fn init_tx_only<R: Regs>(r: &mut R, clock_hz: u32, baud: u32) {
    r.write(BAUDDIV, divider(clock_hz, baud));
    r.write(CTRL, CTRL_TX_EN);
}

/// Where received bytes go: the board's receive ring.
pub trait RxRing {
    /// True when one more byte fits.
    fn has_room(&self) -> bool;
    /// Stores a byte (called only after [`RxRing::has_room`] said yes).
    fn push(&mut self, byte: u8);
}

/// How a receive interrupt's drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDrain {
    /// The UART holds no byte; a byte that arrives later raises the interrupt again.
    Empty,
    /// The ring is full: the byte (and its interrupt status) stay in the UART. The board
    /// masks the receive interrupt until the reader takes bytes out, then unmasks it.
    RingFull,
}

/// The receive interrupt: moves every received byte into `ring`. The interrupt status is
/// cleared *before* the register is looked at, so a byte that arrives after the look
/// raises the interrupt again instead of waiting unseen.
pub fn drain_rx<R: Regs, Q: RxRing>(r: &mut R, ring: &mut Q) -> RxDrain {
    loop {
        if !ring.has_room() {
            return RxDrain::RingFull;
        }
        r.write(INTCLEAR, INT_RX);
        if r.read(STATE) & STATE_RX_FULL == 0 {
            return RxDrain::Empty;
        }
        ring.push((r.read(DATA) & 0xFF) as u8);
    }
}

/// Sends `byte` when the transmit register has room; false (nothing written) when it is
/// full: wait for [`INT_TX`] and try again.
pub fn try_send<R: Regs>(r: &mut R, byte: u8) -> bool {
    if r.read(STATE) & STATE_TX_FULL != 0 {
        return false;
    }
    r.write(DATA, u32::from(byte));
    true
}

/// True when the transmit register has room.
pub fn tx_ready<R: Regs>(r: &mut R) -> bool {
    r.read(STATE) & STATE_TX_FULL == 0
}

/// Clears the transmit interrupt status: in the interrupt (the board then wakes the waiting
/// writer), and before a writer starts waiting for it, to forget an emptying that happened
/// earlier. A writer then looks again ([`tx_ready`]) after unmasking the line: the register
/// may have emptied between its first look and the clear, and nothing would interrupt.
pub fn ack_tx<R: Regs>(r: &mut R) {
    r.write(INTCLEAR, INT_TX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// A CMSDK UART after QEMU's model (`hw/char/cmsdk-apb-uart.c`): one-byte holding
    /// registers; the line delivers the next waiting byte when the receive register empties;
    /// the transmit register empties after `tx_drain_reads` reads of STATE.
    struct Uart {
        line: VecDeque<u8>,
        rx: Option<u8>,
        tx: Option<u8>,
        sent: Vec<u8>,
        int: u32,
        tx_drain_reads: u32,
        drain_in: u32,
        /// A byte that arrives on the line at the first register access after the given
        /// number of STATE reads (for race tests: between a look and what follows it).
        arrives: Option<(u32, u8)>,
        state_reads: u32,
        regs: [u32; 8],
    }

    impl Uart {
        fn new() -> Uart {
            Uart {
                line: VecDeque::new(),
                rx: None,
                tx: None,
                sent: Vec::new(),
                int: 0,
                tx_drain_reads: 0,
                drain_in: 0,
                arrives: None,
                state_reads: 0,
                regs: [0; 8],
            }
        }

        fn feed(&mut self) {
            if self.rx.is_none() {
                if let Some(b) = self.line.pop_front() {
                    self.rx = Some(b);
                    self.int |= INT_RX;
                }
            }
        }

        fn incoming(&mut self, bytes: &[u8]) {
            self.line.extend(bytes);
            self.feed();
        }

        /// Delivers the scheduled byte once its moment has come.
        fn tick(&mut self) {
            if let Some((at, b)) = self.arrives {
                if self.state_reads >= at {
                    self.arrives = None;
                    self.incoming(&[b]);
                }
            }
        }
    }

    impl Regs for Uart {
        fn read(&mut self, offset: usize) -> u32 {
            self.tick();
            match offset {
                STATE => {
                    self.state_reads += 1;
                    if self.tx.is_some() {
                        if self.drain_in == 0 {
                            self.sent.extend(self.tx.take());
                            self.int |= INT_TX;
                        } else {
                            self.drain_in -= 1;
                        }
                    }
                    (u32::from(self.tx.is_some()) * STATE_TX_FULL)
                        | (u32::from(self.rx.is_some()) * STATE_RX_FULL)
                }
                DATA => {
                    let b = self.rx.take().unwrap_or(0);
                    self.feed();
                    u32::from(b)
                }
                INTCLEAR => self.int,
                o => self.regs[o / 4],
            }
        }

        fn write(&mut self, offset: usize, value: u32) {
            self.tick();
            match offset {
                DATA => {
                    assert!(self.tx.is_none(), "byte written over a full register");
                    self.tx = Some(value as u8);
                    self.drain_in = self.tx_drain_reads;
                }
                // As in QEMU: a clear is a clear, even while a byte waits (the status is
                // raised when a byte arrives, not while one waits).
                INTCLEAR => self.int &= !value,
                o => self.regs[o / 4] = value,
            }
        }
    }

    struct Ring {
        bytes: Vec<u8>,
        cap: usize,
    }

    impl RxRing for Ring {
        fn has_room(&self) -> bool {
            self.bytes.len() < self.cap
        }
        fn push(&mut self, byte: u8) {
            self.bytes.push(byte);
        }
    }

    #[test]
    fn init_enables_both_directions_and_clears_stale_statuses() {
        let mut u = Uart::new();
        u.int = INT_TX | INT_RX;
        init(&mut u, 25_000_000, 115_200);
        assert_eq!(u.regs[BAUDDIV / 4], 217);
        assert_eq!(
            u.regs[CTRL / 4],
            CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_IRQ_EN | CTRL_TX_IRQ_EN
        );
        assert_eq!(u.int, 0);
        // A divider below the minimum (a fast rate on a slow clock) is raised to it.
        init_tx_only(&mut u, 1_000_000, 115_200);
        assert_eq!(u.regs[BAUDDIV / 4], MIN_BAUD_DIVIDER);
        assert_eq!(u.regs[CTRL / 4], CTRL_TX_EN);
    }

    #[test]
    fn a_full_ring_leaves_the_byte_in_the_uart_and_nothing_is_lost() {
        let mut u = Uart::new();
        let data: Vec<u8> = (0..10).collect();
        u.incoming(&data);
        let mut ring = Ring {
            bytes: Vec::new(),
            cap: 4,
        };
        assert_eq!(drain_rx(&mut u, &mut ring), RxDrain::RingFull);
        assert_eq!(ring.bytes, [0, 1, 2, 3]);
        assert_eq!(u.rx, Some(4), "the next byte waits in the UART");
        assert_ne!(u.int & INT_RX, 0, "and still asks for the interrupt");
        // The reader takes bytes out, the board unmasks: the drain goes on in order.
        let mut got = std::mem::take(&mut ring.bytes);
        while drain_rx(&mut u, &mut ring) == RxDrain::RingFull {
            got.append(&mut ring.bytes);
        }
        got.append(&mut ring.bytes);
        assert_eq!(got, data);
        assert_eq!(u.int & INT_RX, 0);
    }

    #[test]
    fn a_byte_arriving_at_any_point_of_the_drain_is_taken_or_raises_the_interrupt() {
        // The invariant the interrupt handler needs: when the drain says "empty", either the
        // byte was taken or its interrupt status is set (the handler will run again).
        for at in 0..=6 {
            let mut u = Uart::new();
            u.incoming(&[1, 2]);
            u.arrives = Some((at, 9));
            let mut ring = Ring {
                bytes: Vec::new(),
                cap: 64,
            };
            assert_eq!(drain_rx(&mut u, &mut ring), RxDrain::Empty);
            // Not arrived during the drain: it arrives after it.
            if let Some((_, b)) = u.arrives.take() {
                u.incoming(&[b]);
            }
            let taken = ring.bytes.contains(&9);
            let pending = u.rx == Some(9) && u.int & INT_RX != 0;
            assert!(taken || pending, "arrival after STATE read {at}: lost");
            assert_eq!(&ring.bytes[..2], &[1, 2]);
        }
    }

    #[test]
    fn transmit_writes_only_into_an_empty_register_in_order() {
        let mut u = Uart::new();
        u.tx_drain_reads = 2;
        let msg = b"frame";
        let mut waits = 0;
        for &b in msg {
            while !try_send(&mut u, b) {
                // The board would sleep until INT_TX here; the register empties meanwhile.
                waits += 1;
                ack_tx(&mut u);
                let _ = tx_ready(&mut u);
                assert!(waits < 100, "never emptied");
            }
        }
        for _ in 0..3 {
            let _ = u.read(STATE);
        }
        assert_eq!(u.sent, msg);
        assert!(
            waits > 0,
            "the full register was waited for, not written over"
        );
    }

    #[test]
    fn arming_after_the_register_emptied_says_do_not_wait() {
        let mut u = Uart::new();
        u.tx_drain_reads = 0;
        assert!(try_send(&mut u, 7));
        // The register empties (INT_TX raised) before the writer arms its wait: the stale
        // status is cleared and the look says the register is free, so the writer does not
        // sleep on an interrupt that already came.
        let _ = u.read(STATE);
        assert_ne!(u.int & INT_TX, 0);
        ack_tx(&mut u);
        assert!(tx_ready(&mut u));
        assert_eq!(u.int & INT_TX, 0);
        assert_eq!(u.sent, [7]);
    }
}
