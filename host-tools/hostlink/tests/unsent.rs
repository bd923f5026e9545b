//! The output-queue count the daemon paces its frames by: non-zero from the write until the
//! controller's end has read every byte, then 0, on a unix stream socket (QEMU's chardev)
//! and through the pump.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use ha_hostlink::{Pumped, Stream, Unsent};

#[test]
fn a_frame_counts_as_unsent_until_the_other_end_read_all_of_it() {
    let (mut daemon, mut qemu) = UnixStream::pair().expect("pair");
    assert_eq!(daemon.unsent(), Some(0));
    daemon.write_all(&[7u8; 70]).expect("write");
    assert!(daemon.unsent().expect("count") > 0);
    // QEMU's UART takes one byte at a time: the frame is unsent until its last byte.
    let mut b = [0u8; 1];
    for _ in 0..69 {
        qemu.read_exact(&mut b).expect("read");
    }
    assert!(daemon.unsent().expect("count") > 0, "one byte still unread");
    qemu.read_exact(&mut b).expect("read");
    assert_eq!(daemon.unsent(), Some(0));
}

#[test]
fn the_pumped_stream_counts_its_socket_writes() {
    let (daemon, mut qemu) = UnixStream::pair().expect("pair");
    let mut s = Stream::Pumped(Pumped::new(daemon).expect("pump"));
    s.write_all(&[1u8; 40]).expect("write");
    assert!(s.unsent().expect("count") > 0);
    let mut buf = [0u8; 40];
    qemu.read_exact(&mut buf).expect("read");
    assert_eq!(s.unsent(), Some(0));
}
