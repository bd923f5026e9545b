//! `ha-daemon`: the main-CPU daemon (see `docs/daemon.md`).

fn main() {}
