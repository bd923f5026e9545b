//! The thread-mode executor: embassy-executor's own Cortex-M one (it sleeps with `WFE`, which
//! real silicon honours; board/mps2-an385 needs a `WFI` executor only because QEMU treats
//! `WFE` as a no-op). Same `new()` / `run(init)` as board/mps2-an385's.

pub use embassy_executor::Executor;
