//! The pumped chardev socket: a sender writing one byte per system call, as QEMU's UART
//! does, is never refused while the reader is busy, and every byte arrives in order. The
//! same sender on a plain socket is refused after a few hundred unread bytes (the reason
//! for the pump).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use ha_hostlink::{Pumped, Stream};

/// Writes `n` bytes one per call on a non-blocking socket; how many went before the first
/// refusal (`n` when none was refused).
fn write_bytewise(s: &mut UnixStream, n: usize) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    for i in 0..n {
        match s.write(&[(i % 251) as u8]) {
            Ok(1) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return i,
            other => panic!("write {i}: {other:?}"),
        }
        if i % 20 == 19 {
            // About 50 µs a byte: still faster than QEMU's UART (a main-loop turn and an
            // interrupt per byte, 100-300 µs under load), and slow enough that the pump
            // thread may wait ~15 ms for a CPU before the kernel's few hundred one-byte
            // buffers fill (at 10 µs a byte, 3 ms of it failed once beside the other test
            // binaries: session 20).
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    n
}

#[test]
fn a_plain_socket_refuses_a_bytewise_sender_soon() {
    let (mut qemu, _daemon) = UnixStream::pair().expect("pair");
    let went = write_bytewise(&mut qemu, 50_000);
    assert!(
        went < 50_000,
        "the kernel took {went} unread one-byte writes"
    );
    println!("a plain socket took {went} unread one-byte writes");
}

#[test]
fn a_pumped_socket_takes_every_byte_while_its_reader_is_busy() {
    let (mut qemu, daemon) = UnixStream::pair().expect("pair");
    let mut s = Stream::Pumped(Pumped::new(daemon).expect("pump"));
    // The reader reads nothing while 20,000 bytes come one by one (~1 s).
    let went = write_bytewise(&mut qemu, 20_000);
    assert_eq!(went, 20_000, "refused after {went} bytes");
    drop(qemu);
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got.len(), 20_000);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[test]
fn writes_go_to_the_socket_and_dropping_ends_the_connection() {
    let (mut qemu, daemon) = UnixStream::pair().expect("pair");
    let mut s = Stream::Pumped(Pumped::new(daemon).expect("pump"));
    s.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    qemu.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
    drop(s);
    qemu.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("timeout");
    let mut rest = Vec::new();
    assert_eq!(qemu.read_to_end(&mut rest).expect("eof"), 0, "closed");
}
