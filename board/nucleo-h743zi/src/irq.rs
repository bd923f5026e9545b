//! Interrupt handlers: embassy-stm32's, bound to the vector table entries of the peripherals
//! this board uses (TIM2's, for the time driver, is bound by embassy-stm32 itself).

use embassy_stm32::{bind_interrupts, eth, peripherals, usart};

bind_interrupts!(
    /// The interrupts this board's drivers take.
    pub struct Irqs {
        ETH => eth::InterruptHandler;
        USART2 => usart::BufferedInterruptHandler<peripherals::USART2>;
        USART3 => usart::BufferedInterruptHandler<peripherals::USART3>;
        USART6 => usart::BufferedInterruptHandler<peripherals::USART6>;
    }
);
