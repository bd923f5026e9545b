//! The board's drivers tested under QEMU (`cargo xtask qemu driver-test` builds this example,
//! boots it and plays the other end of its links): the time driver's alarms, the UART's
//! interrupt-driven transmit and receive with flow control, and the LAN9118's bring-up,
//! transmit and receive FIFOs. The host-side unit tests (`board/drivers`, `hal::timer`) cover
//! the register protocols against models; this runs the drivers themselves, interrupts and
//! all, on the emulated chip. Each check logs a line; then `driver-test: PASS (n checks)` or
//! `driver-test: FAIL (k of n checks)`. After a pass the test overflows the stack on
//! purpose: the board's stack guard must make that a HardFault (its log line), never a
//! return.
//!
//! The harness: UART1 is a unix socket whose other end echoes every byte; the LAN9118 is a
//! UDP socket pair whose other end sends every frame back.

#![no_std]
#![no_main]

use core::cell::RefCell;
use core::future::poll_fn;
use core::task::Poll;

use defmt::{error, info};
use embassy_futures::join::join3;
use embassy_net_driver::{Driver, RxToken, TxToken};
use embassy_time::{Duration, Instant, Timer};
use embedded_io_async::{Read, Write};
use static_cell::StaticCell;

use ha_board::eth::{EthBuffers, Lan9118, MTU};
use ha_board::executor::Executor;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => error!(
            "driver-test: FAIL (panic at {=str}:{=u32})",
            l.file(),
            l.line()
        ),
        None => error!("driver-test: FAIL (panic)"),
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// Checks run and failed.
struct Tally {
    run: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, ok: bool, what: &str) {
        self.run += 1;
        if ok {
            info!("driver-test: ok: {=str}", what);
        } else {
            self.failed += 1;
            error!("driver-test: failed: {=str}", what);
        }
    }
}

static EXECUTOR: StaticCell<Executor> = StaticCell::new();
static ETH_BUFS: StaticCell<EthBuffers> = StaticCell::new();

#[cortex_m_rt::entry]
fn main() -> ! {
    EXECUTOR.init(Executor::new()).run(|spawner| {
        let Some(board) = ha_board::init() else {
            error!("driver-test: FAIL (board taken)");
            return;
        };
        spawner.spawn(tests(board).expect("one test task"));
    })
}

#[embassy_executor::task]
async fn tests(board: ha_board::Board) {
    let mut t = Tally { run: 0, failed: 0 };
    time(&mut t).await;
    uart(&mut t, board.host_uart).await;
    ethernet(&mut t).await;
    if t.failed == 0 {
        info!("driver-test: PASS ({=u32} checks)", t.run);
    } else {
        error!(
            "driver-test: FAIL ({=u32} of {=u32} checks)",
            t.failed, t.run
        );
        return;
    }
    // Last, the stack guard: an overflow must fault (the board's HardFault handler logs
    // `HardFault: CFSR …`), not run on below RAM as the first version of this test did.
    info!(
        "driver-test: overflowing the {=usize}-byte stack on purpose",
        ha_board::stack::size()
    );
    let r = deeper(400);
    error!(
        "driver-test: stack guard FAIL: 400 frames of 256 bytes came back ({=u32})",
        r
    );
}

/// 256 bytes of stack a level, `n` levels deep (kept from being optimized away).
#[inline(never)]
fn deeper(n: u32) -> u32 {
    let mut buf = [0u8; 256];
    let b = core::hint::black_box(&mut buf);
    b[0] = n as u8;
    if n == 0 {
        return u32::from(b[0]);
    }
    deeper(n - 1) + u32::from(core::hint::black_box(b)[255])
}

/// The alarm: a timer takes its time (not less, not much more), timers fire in deadline
/// order whatever order they were set in, a deadline already past fires at once, and time
/// never goes back.
async fn time(t: &mut Tally) {
    let t0 = Instant::now();
    Timer::after_millis(20).await;
    let took = t0.elapsed();
    info!(
        "driver-test: a 20 ms timer took {=u64} us",
        took.as_micros()
    );
    t.check(
        took >= Duration::from_millis(20) && took < Duration::from_millis(200),
        "a 20 ms timer fires after 20 ms, not long after",
    );

    let order: RefCell<heapless::Vec<u8, 3>> = RefCell::new(heapless::Vec::new());
    let after = |ms: u64, id: u8| {
        let order = &order;
        async move {
            Timer::after_millis(ms).await;
            let _ = order.borrow_mut().push(id);
        }
    };
    join3(after(30, 3), after(10, 1), after(20, 2)).await;
    t.check(
        order.borrow().as_slice() == [1, 2, 3],
        "three timers set out of order fire in deadline order",
    );

    let t0 = Instant::now();
    Timer::at(Instant::from_ticks(0)).await;
    // "At once": well before anything a timer would wait for (the bound leaves room for
    // a host that descheduled QEMU's vCPU for a moment).
    t.check(
        t0.elapsed() < Duration::from_millis(50),
        "a deadline in the past fires at once",
    );

    // A deadline 2^32 us + 1 ms away: cut to 32 bits (in microseconds or in the timer's
    // 25 MHz cycles) it would be 1 ms away. The alarm is capped at one counter period and
    // re-armed; it must not fire before a 5 ms timer.
    let far = Timer::after_micros((1u64 << 32) + 1_000);
    let near = Timer::after_millis(5);
    let first = embassy_futures::select::select(far, near).await;
    t.check(
        matches!(first, embassy_futures::select::Either::Second(())),
        "a deadline 2^32 us + 1 ms away does not fire before a 5 ms one",
    );

    let mut last = Instant::now();
    let mut monotonic = true;
    for _ in 0..10_000 {
        let now = Instant::now();
        monotonic &= now >= last;
        last = now;
    }
    t.check(monotonic, "10,000 readings of the clock never go back");
}

/// UART1 against an echo: 2,048 bytes written (interrupt-driven transmit) while they are read
/// back (interrupt-driven receive into a 256-byte ring: what does not fit waits in QEMU, held
/// back by the flow control), nothing lost or reordered.
async fn uart(t: &mut Tally, uart: ha_board::uart::Uart) {
    let (mut rx, mut tx) = uart.split();
    // The harness says it is connected (QEMU drops what UART1 sends before that).
    let mut go = [0u8; 1];
    let ready = embassy_futures::select::select(rx.read(&mut go), Timer::after_secs(10)).await;
    t.check(
        matches!(ready, embassy_futures::select::Either::First(Ok(1))) && go[0] == b'G',
        "the harness is on UART1",
    );
    let pattern = |i: usize| (i * 7 + i / 251) as u8;
    let mut out = [0u8; 2_048];
    for (i, b) in out.iter_mut().enumerate() {
        *b = pattern(i);
    }
    // Written and read back at once (full duplex, as the host link runs): the echo keeps
    // sending while the 256-byte ring is full, and the flow control must hold the rest back
    // in QEMU without losing a byte.
    let t0 = Instant::now();
    let mut got = [0u8; 2_048];
    let mut n = 0;
    let write = async { tx.write_all(&out).await.is_ok() };
    let read = async {
        while n < got.len() {
            match rx.read(&mut got[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    };
    let both = embassy_futures::join::join(write, read);
    let finished = embassy_futures::select::select(both, Timer::after_secs(10)).await;
    let wrote = matches!(finished, embassy_futures::select::Either::First((true, ())));
    info!(
        "driver-test: UART1 echo: {=usize} of 2048 bytes back in {=u64} ms",
        n,
        t0.elapsed().as_millis()
    );
    t.check(wrote, "2,048 bytes written to UART1");
    t.check(
        n == got.len(),
        "all 2,048 bytes came back through the 256-byte receive ring",
    );
    t.check(got == out, "in order, none changed");
}

/// The LAN9118: bring-up (reset, MAC, FIFOs), then frames of the smallest and the largest
/// size and a burst of 16 sent and received back through the FIFOs, each whole and in order.
async fn ethernet(t: &mut Tally) {
    let mac = [0x02, 0, 0, 0, 0, 0x42];
    let mut eth = match Lan9118::new(mac, ETH_BUFS.init(EthBuffers::new())) {
        Ok(e) => e,
        Err(_) => {
            t.check(false, "the LAN9118 comes out of reset");
            return;
        }
    };
    t.check(true, "the LAN9118 comes out of reset");
    let frame = |len: usize, seq: u8, buf: &mut [u8]| {
        buf[..6].copy_from_slice(&[0xff; 6]);
        buf[6..12].copy_from_slice(&mac);
        buf[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        for (i, b) in buf[14..len].iter_mut().enumerate() {
            *b = seq.wrapping_add(i as u8);
        }
    };
    let sizes = [60usize, MTU];
    for (k, &len) in sizes.iter().enumerate() {
        let seq = k as u8 * 50;
        send(&mut eth, |b| frame(len, seq, b), len).await;
        let mut want = [0u8; 1_600];
        frame(len, seq, &mut want);
        t.check(
            receive(&mut eth, &want[..len]).await,
            if len == 60 {
                "a 60-byte frame goes out and comes back whole"
            } else {
                "a full-size frame goes out and comes back whole"
            },
        );
    }
    for seq in 0..16u8 {
        send(&mut eth, |b| frame(100, seq, b), 100).await;
    }
    let mut in_order = true;
    for seq in 0..16u8 {
        let mut want = [0u8; 100];
        frame(100, seq, &mut want);
        in_order &= receive(&mut eth, &want).await;
    }
    t.check(
        in_order,
        "a burst of 16 frames comes back whole and in order",
    );
}

/// Sends one frame of `len` bytes, filled by `fill`.
async fn send(eth: &mut Lan9118, fill: impl Fn(&mut [u8]), len: usize) {
    poll_fn(|cx| match eth.transmit(cx) {
        Some(tok) => {
            tok.consume(len, &fill);
            Poll::Ready(())
        }
        None => Poll::Pending,
    })
    .await
}

/// True when the next frame received within 2 s is `want` (compared in the driver's own
/// buffer: the stack is the firmware's 10.5 KiB, shared with the interrupts).
async fn receive(eth: &mut Lan9118, want: &[u8]) -> bool {
    let got = poll_fn(|cx| match eth.receive(cx) {
        Some((rx, _tx)) => match rx.consume(|b| (!b.is_empty()).then(|| b == want)) {
            Some(same) => Poll::Ready(same),
            // An empty read is a frame the driver dropped as damaged: look again.
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        },
        None => Poll::Pending,
    });
    match embassy_futures::select::select(got, Timer::after_secs(2)).await {
        embassy_futures::select::Either::First(same) => same,
        embassy_futures::select::Either::Second(()) => false,
    }
}
