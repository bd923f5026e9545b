//! Management-controller firmware on QEMU mps2-an385.
#![no_std]
#![no_main]

use defmt::info;
use embassy_executor::Spawner;
use embassy_time::Timer;
use ha_board as board;

defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Some(loc) = info.location() {
        defmt::error!("panic at {=str}:{=u32}", loc.file(), loc.line());
    } else {
        defmt::error!("panic");
    }
    loop {
        cortex_m::asm::wfi();
    }
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let Some(_board) = board::init() else {
        defmt::error!("board initialised twice");
        return;
    };
    info!("ha-firmware {=str} booting", env!("CARGO_PKG_VERSION"));
    loop {
        Timer::after_millis(1000).await;
        info!("tick");
    }
}
