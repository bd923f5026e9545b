//! The clock tree: 400 MHz core from the internal 64 MHz oscillator (always present, so the
//! board needs no crystal or ST-LINK clock output), 200 MHz AHB, 100 MHz APB buses. The
//! Ethernet's 50 MHz RMII reference comes from the PHY, not from here.

use embassy_stm32::rcc::{
    AHBPrescaler, APBPrescaler, HSIPrescaler, Pll, PllDiv, PllMul, PllPreDiv, PllSource, Sysclk,
    VoltageScale,
};

/// embassy-stm32's configuration for this board.
pub fn config() -> embassy_stm32::Config {
    let mut config = embassy_stm32::Config::default();
    let rcc = &mut config.rcc;
    rcc.hsi = Some(HSIPrescaler::DIV1); // 64 MHz
    rcc.csi = true;
    rcc.pll1 = Some(Pll {
        source: PllSource::HSI,
        prediv: PllPreDiv::DIV4, // 16 MHz
        mul: PllMul::MUL50,      // 800 MHz VCO
        fracn: None,
        divp: Some(PllDiv::DIV2), // 400 MHz: the core
        divq: None,
        divr: None,
    });
    rcc.sys = Sysclk::PLL1_P;
    rcc.ahb_pre = AHBPrescaler::DIV2; // 200 MHz: AXI/AHB, Ethernet, MDC divider input
    rcc.apb1_pre = APBPrescaler::DIV2; // 100 MHz: USART2/3, TIM2 (200 MHz timer clock)
    rcc.apb2_pre = APBPrescaler::DIV2; // 100 MHz: USART6
    rcc.apb3_pre = APBPrescaler::DIV2;
    rcc.apb4_pre = APBPrescaler::DIV2;
    rcc.voltage_scale = VoltageScale::Scale1;
    config
}
