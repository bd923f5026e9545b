//! Test wire: a UDP relay between members' HA links with per-direction cut, loss and delay control.

fn main() {}
