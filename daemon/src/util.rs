//! Small I/O helpers shared by the daemon's shells.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// Waits until `fd` is readable or `timeout` passes; true when readable. An interrupted wait
/// counts as a timeout (the caller loops on its own deadline).
pub fn wait_readable<F: AsFd>(fd: &F, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}
