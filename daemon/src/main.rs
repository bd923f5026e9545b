//! Main-CPU daemon: host link to the management controller, state sync over UDP, userspace fast path, management API.

fn main() {}
