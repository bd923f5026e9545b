//! hactl: PSK provisioning, cluster create/join/replace, status and control, configuration sync.

fn main() {}
