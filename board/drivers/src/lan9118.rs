//! SMSC LAN9118 Ethernet controller: bring-up, frames in and out through its FIFOs.
//!
//! Register semantics follow the LAN9118 datasheet as QEMU implements them
//! (`hw/net/lan9118.c`): 32-bit accesses; RX data FIFO at 0x00, TX data FIFO at 0x20, RX
//! status FIFO at 0x40, TX status FIFO at 0x48; MAC registers reached through
//! MAC_CSR_CMD/DATA. Every wait on the hardware is bounded: a controller that does not
//! answer is an error, never a hang.

use crate::Regs;

/// RX data FIFO.
pub const RX_DATA: usize = 0x00;
/// TX data FIFO.
pub const TX_DATA: usize = 0x20;
/// RX status FIFO.
pub const RX_STATUS: usize = 0x40;
/// TX status FIFO.
pub const TX_STATUS: usize = 0x48;
/// Chip id and revision.
pub const ID_REV: usize = 0x50;
/// Interrupt pin configuration.
pub const IRQ_CFG: usize = 0x54;
/// Interrupt status (write 1 to clear).
pub const INT_STS: usize = 0x58;
/// Interrupt enable.
pub const INT_EN: usize = 0x5C;
/// Fixed pattern, to find the chip and its byte order.
pub const BYTE_TEST: usize = 0x64;
/// Receive configuration.
pub const RX_CFG: usize = 0x6C;
/// Transmit configuration.
pub const TX_CFG: usize = 0x70;
/// Hardware configuration (soft reset).
pub const HW_CFG: usize = 0x74;
/// RX FIFO levels.
pub const RX_FIFO_INF: usize = 0x7C;
/// TX FIFO levels.
pub const TX_FIFO_INF: usize = 0x80;
/// Power management (device ready).
pub const PMT_CTRL: usize = 0x84;
/// MAC register access: command.
pub const MAC_CSR_CMD: usize = 0xA4;
/// MAC register access: data.
pub const MAC_CSR_DATA: usize = 0xA8;

/// IRQ_CFG: output enabled, active high, push-pull (QEMU drives the line high on interrupt).
pub const IRQ_CFG_ENABLE_PUSH_PULL_HIGH: u32 = (1 << 8) | (1 << 4) | 1;
/// INT_STS/INT_EN: RX status FIFO level (at least one received frame).
pub const INT_RSFL: u32 = 1 << 3;
/// HW_CFG: soft reset (self-clearing).
pub const HW_CFG_SRST: u32 = 1;
/// PMT_CTRL: the device is ready.
pub const PMT_READY: u32 = 1;
/// What BYTE_TEST reads on a LAN9118 in this byte order.
pub const BYTE_TEST_VALUE: u32 = 0x8765_4321;
/// TX_CFG: transmitter on, TX status FIFO may overrun (statuses are not needed).
pub const TX_CFG_ON_ALLOW_OVERRUN: u32 = (1 << 1) | (1 << 2);

/// MAC control register.
pub const MAC_CR: u32 = 1;
/// MAC address, high half.
pub const MAC_ADDRH: u32 = 2;
/// MAC address, low half.
pub const MAC_ADDRL: u32 = 3;
/// MII (PHY) access.
pub const MAC_MII_ACC: u32 = 6;
/// MII (PHY) data.
pub const MAC_MII_DATA: u32 = 7;
/// MAC_CSR_CMD: busy (set to start an access, cleared by the chip when done).
pub const MAC_CSR_BUSY: u32 = 1 << 31;
/// MAC_CSR_CMD: read access.
pub const MAC_CSR_READ: u32 = 1 << 30;
/// MAC_CR: transmit and receive enabled; own address and broadcast only.
pub const MAC_CR_TXEN_RXEN: u32 = (1 << 3) | (1 << 2);
/// PHY basic status register.
pub const PHY_BSR: u32 = 1;
/// PHY_BSR: link up.
pub const PHY_LINK: u32 = 1 << 2;
/// The internal PHY's address.
pub const PHY_ADDR: u32 = 1;

/// TX command A: first and last segment of a frame.
pub const TX_CMD_A_FIRST_LAST: u32 = (1 << 13) | (1 << 12);
/// RX status: error summary.
pub const RX_STS_ERROR: u32 = 1 << 15;

/// Largest Ethernet frame handled (without FCS), bytes.
pub const MTU: usize = 1514;
/// Frame buffer: the MTU rounded up to whole FIFO words, plus the 4-byte FCS the chip
/// appends.
pub const BUF_LEN: usize = 1536;
/// Polls of a soft reset before the controller counts as not ready.
pub const RESET_POLLS: u32 = 100_000;
/// Polls of a MAC register access before the MAC counts as stuck (QEMU completes them at
/// once; silicon within a few cycles).
pub const MAC_POLLS: u32 = 10_000;

/// Why the controller could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// BYTE_TEST did not read back the fixed pattern: no LAN9118 at the address.
    NotPresent,
    /// The controller did not become ready after a soft reset.
    NotReady,
    /// A MAC register access never completed.
    MacBusy,
}

fn mac_wait<R: Regs>(r: &mut R) -> Result<(), Error> {
    for _ in 0..MAC_POLLS {
        if r.read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0 {
            return Ok(());
        }
    }
    Err(Error::MacBusy)
}

fn mac_write<R: Regs>(r: &mut R, reg: u32, value: u32) -> Result<(), Error> {
    mac_wait(r)?;
    r.write(MAC_CSR_DATA, value);
    r.write(MAC_CSR_CMD, MAC_CSR_BUSY | reg);
    mac_wait(r)
}

fn mac_read<R: Regs>(r: &mut R, reg: u32) -> Result<u32, Error> {
    mac_wait(r)?;
    r.write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | reg);
    mac_wait(r)?;
    Ok(r.read(MAC_CSR_DATA))
}

/// Finds the controller, resets it, sets its MAC address and enables transmit, receive and
/// the receive interrupt (the caller then enables the interrupt line). Nothing is written
/// when the chip is not there.
pub fn bring_up<R: Regs>(r: &mut R, mac: [u8; 6]) -> Result<(), Error> {
    if r.read(BYTE_TEST) != BYTE_TEST_VALUE {
        return Err(Error::NotPresent);
    }
    let _ = r.read(ID_REV);
    r.write(HW_CFG, HW_CFG_SRST);
    let ready = (0..RESET_POLLS)
        .any(|_| r.read(HW_CFG) & HW_CFG_SRST == 0 && r.read(PMT_CTRL) & PMT_READY != 0);
    if !ready {
        return Err(Error::NotReady);
    }
    mac_write(
        r,
        MAC_ADDRL,
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
    )?;
    mac_write(r, MAC_ADDRH, u32::from(mac[4]) | (u32::from(mac[5]) << 8))?;
    r.write(RX_CFG, 0);
    r.write(TX_CFG, TX_CFG_ON_ALLOW_OVERRUN);
    mac_write(r, MAC_CR, MAC_CR_TXEN_RXEN)?;
    r.write(INT_STS, u32::MAX);
    r.write(INT_EN, INT_RSFL);
    r.write(IRQ_CFG, IRQ_CFG_ENABLE_PUSH_PULL_HIGH);
    Ok(())
}

/// Frames waiting in the RX status FIFO.
pub fn rx_pending<R: Regs>(r: &mut R) -> u32 {
    (r.read(RX_FIFO_INF) >> 16) & 0xFF
}

/// The interrupt: acknowledges every raised status.
pub fn ack_interrupts<R: Regs>(r: &mut R) {
    let sts = r.read(INT_STS);
    r.write(INT_STS, sts);
}

/// Pops one frame (call only when [`rx_pending`] is not 0) into `buf`: its length without
/// the FCS, or `None` when it is damaged, shorter than an Ethernet header or longer than
/// `buf`. Its words leave the FIFO either way, so the next frame starts at a status.
pub fn pop_frame<R: Regs>(r: &mut R, buf: &mut [u8; BUF_LEN]) -> Option<usize> {
    let status = r.read(RX_STATUS);
    let len_with_fcs = ((status >> 16) & 0x3FFF) as usize;
    let words = len_with_fcs.div_ceil(4);
    let ok = status & RX_STS_ERROR == 0 && len_with_fcs >= 4 + 14 && words * 4 <= BUF_LEN;
    for i in 0..words {
        let w = r.read(RX_DATA).to_le_bytes();
        if let Some(dst) = buf.get_mut(i * 4..i * 4 + 4) {
            dst.copy_from_slice(&w);
        }
    }
    ok.then(|| len_with_fcs - 4)
}

/// Writes `frame` (at most [`MTU`] bytes; longer is cut) to the TX FIFO as one segment, then
/// drops the status word the chip queues for it.
pub fn push_frame<R: Regs>(r: &mut R, frame: &[u8]) {
    let frame = &frame[..frame.len().min(MTU)];
    let len = frame.len() as u32;
    r.write(TX_DATA, TX_CMD_A_FIRST_LAST | len);
    r.write(TX_DATA, (len << 16) | len);
    for chunk in frame.chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        r.write(TX_DATA, u32::from_le_bytes(w));
    }
    if (r.read(TX_FIFO_INF) >> 16) & 0xFF != 0 {
        let _ = r.read(TX_STATUS);
    }
}

/// Whether the PHY reports a link; a MAC that does not answer counts as no link.
pub fn link_up<R: Regs>(r: &mut R) -> bool {
    mac_write(r, MAC_MII_ACC, (PHY_ADDR << 11) | (PHY_BSR << 6))
        .and_then(|()| mac_read(r, MAC_MII_DATA))
        .is_ok_and(|v| v & PHY_LINK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// A LAN9118 after the datasheet and QEMU's model, with faults to switch on.
    struct Chip {
        byte_test: u32,
        /// HW_CFG reads until a soft reset completes (`None`: never).
        reset_reads: Option<u32>,
        in_reset: bool,
        /// MAC_CSR_CMD stays busy forever.
        mac_stuck: bool,
        mac: [u32; 8],
        mac_data: u32,
        phy_bsr: u32,
        rx_status: VecDeque<u32>,
        rx_data: VecDeque<u32>,
        tx: Vec<u32>,
        tx_status: u32,
        int_sts: u32,
        regs: [u32; 64],
        writes: Vec<(usize, u32)>,
        reads: u32,
    }

    impl Chip {
        fn new() -> Chip {
            Chip {
                byte_test: BYTE_TEST_VALUE,
                reset_reads: Some(3),
                in_reset: false,
                mac_stuck: false,
                mac: [0; 8],
                mac_data: 0,
                phy_bsr: PHY_LINK,
                rx_status: VecDeque::new(),
                rx_data: VecDeque::new(),
                tx: Vec::new(),
                tx_status: 0,
                int_sts: 0,
                regs: [0; 64],
                writes: Vec::new(),
                reads: 0,
            }
        }

        /// Queues a received frame of `bytes` (plus a 4-byte FCS), with `error` set.
        fn receive(&mut self, bytes: &[u8], error: bool) {
            let mut b = bytes.to_vec();
            b.extend([0xFC; 4]);
            let status = ((b.len() as u32) << 16) | if error { RX_STS_ERROR } else { 0 };
            self.rx_status.push_back(status);
            for c in b.chunks(4) {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                self.rx_data.push_back(u32::from_le_bytes(w));
            }
            self.int_sts |= INT_RSFL;
        }
    }

    impl Regs for Chip {
        fn read(&mut self, offset: usize) -> u32 {
            self.reads += 1;
            match offset {
                BYTE_TEST => self.byte_test,
                HW_CFG => {
                    if self.in_reset {
                        match &mut self.reset_reads {
                            Some(0) => self.in_reset = false,
                            Some(n) => *n -= 1,
                            None => {}
                        }
                    }
                    u32::from(self.in_reset)
                }
                PMT_CTRL => u32::from(!self.in_reset),
                MAC_CSR_CMD => {
                    if self.mac_stuck {
                        MAC_CSR_BUSY
                    } else {
                        0
                    }
                }
                MAC_CSR_DATA => self.mac_data,
                RX_FIFO_INF => (self.rx_status.len() as u32) << 16,
                RX_STATUS => self.rx_status.pop_front().unwrap_or(0),
                RX_DATA => self.rx_data.pop_front().unwrap_or(0),
                TX_FIFO_INF => self.tx_status << 16,
                TX_STATUS => {
                    self.tx_status = self.tx_status.saturating_sub(1);
                    0
                }
                INT_STS => self.int_sts,
                o => self.regs[o / 4],
            }
        }

        fn write(&mut self, offset: usize, value: u32) {
            self.writes.push((offset, value));
            match offset {
                HW_CFG if value & HW_CFG_SRST != 0 => self.in_reset = true,
                MAC_CSR_CMD if !self.mac_stuck => {
                    let reg = (value & 0xFF) as usize;
                    if value & MAC_CSR_READ != 0 {
                        self.mac_data = if reg == MAC_MII_DATA as usize {
                            self.phy_bsr
                        } else {
                            self.mac[reg]
                        };
                    } else {
                        self.mac[reg] = self.regs[MAC_CSR_DATA / 4];
                    }
                }
                TX_DATA => {
                    self.tx.push(value);
                    if self.tx.len() == 2 {
                        self.tx_status += 1;
                    }
                }
                INT_STS => self.int_sts &= !value,
                o => self.regs[o / 4] = value,
            }
        }
    }

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn bring_up_resets_sets_the_address_and_enables_receive() {
        let mut c = Chip::new();
        assert_eq!(bring_up(&mut c, MAC), Ok(()));
        assert!(
            c.writes.contains(&(HW_CFG, HW_CFG_SRST)),
            "soft reset asked"
        );
        assert_eq!(c.mac[MAC_ADDRL as usize], 0x105e_0002);
        assert_eq!(c.mac[MAC_ADDRH as usize], 0x3020);
        assert_eq!(c.mac[MAC_CR as usize], MAC_CR_TXEN_RXEN);
        assert_eq!(c.regs[INT_EN / 4], INT_RSFL);
        assert_eq!(c.regs[IRQ_CFG / 4], IRQ_CFG_ENABLE_PUSH_PULL_HIGH);
        assert_eq!(c.regs[TX_CFG / 4], TX_CFG_ON_ALLOW_OVERRUN);
        assert!(link_up(&mut c));
        c.phy_bsr = 0;
        assert!(!link_up(&mut c));
    }

    #[test]
    fn an_absent_chip_is_reported_and_left_untouched() {
        let mut c = Chip::new();
        c.byte_test = 0x2143_6587; // the other byte order, or another device
        assert_eq!(bring_up(&mut c, MAC), Err(Error::NotPresent));
        assert!(c.writes.is_empty(), "{:?}", c.writes);
    }

    #[test]
    fn a_reset_that_never_completes_is_an_error_after_bounded_polls() {
        let mut c = Chip::new();
        c.reset_reads = None;
        assert_eq!(bring_up(&mut c, MAC), Err(Error::NotReady));
        assert!(c.reads <= 2 * RESET_POLLS + 4, "{} reads", c.reads);
        // Nothing past the reset: no address, no interrupt enabled.
        assert_eq!(c.regs[INT_EN / 4], 0);
        assert_eq!(c.mac[MAC_ADDRL as usize], 0);
    }

    #[test]
    fn a_stuck_mac_is_an_error_and_no_link_not_a_hang() {
        let mut c = Chip::new();
        c.mac_stuck = true;
        assert_eq!(bring_up(&mut c, MAC), Err(Error::MacBusy));
        assert_eq!(c.regs[INT_EN / 4], 0, "receive not enabled");
        let before = c.reads;
        assert!(!link_up(&mut c));
        assert!(c.reads - before <= MAC_POLLS + 1);
    }

    #[test]
    fn received_frames_come_out_whole_and_bad_ones_leave_the_fifo_in_step() {
        let mut c = Chip::new();
        let good: Vec<u8> = (0..60).collect();
        let odd: Vec<u8> = (0..63).map(|i| i ^ 0x5a).collect();
        c.receive(&good, false);
        c.receive(&[0xEE; 100], true); // damaged
        c.receive(&[0xAB; 10], false); // runt: shorter than a header
        c.receive(&[0xCD; BUF_LEN], false); // longer than the buffer
        c.receive(&odd, false); // not a whole number of words
        assert_eq!(rx_pending(&mut c), 5);
        let mut buf = [0u8; BUF_LEN];
        assert_eq!(pop_frame(&mut c, &mut buf), Some(60));
        assert_eq!(&buf[..60], &good[..]);
        assert_eq!(pop_frame(&mut c, &mut buf), None);
        assert_eq!(pop_frame(&mut c, &mut buf), None);
        assert_eq!(pop_frame(&mut c, &mut buf), None);
        // After three bad frames the next one still starts at its own status and data.
        assert_eq!(pop_frame(&mut c, &mut buf), Some(63));
        assert_eq!(&buf[..63], &odd[..]);
        assert_eq!(rx_pending(&mut c), 0);
        assert!(c.rx_data.is_empty(), "every word drained");
        ack_interrupts(&mut c);
        assert_eq!(c.int_sts, 0);
    }

    #[test]
    fn a_sent_frame_is_two_commands_then_little_endian_words_and_its_status_is_dropped() {
        let mut c = Chip::new();
        push_frame(&mut c, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            c.tx,
            [
                TX_CMD_A_FIRST_LAST | 6,
                (6 << 16) | 6,
                0x0403_0201,
                0x0000_0605
            ]
        );
        assert_eq!(c.tx_status, 0, "status word read out");
        // Longer than the MTU: cut to it, never past the buffer.
        c.tx.clear();
        push_frame(&mut c, &[7; MTU + 100]);
        assert_eq!(c.tx[0], TX_CMD_A_FIRST_LAST | MTU as u32);
        assert_eq!(c.tx.len(), 2 + MTU.div_ceil(4));
    }
}
