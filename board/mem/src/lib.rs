//! Small `memcpy` / `memmove` / `memset` for a board whose flash is tight.
//!
//! Hand-written on purpose: compiler_builtins' versions (which every `no_std` firmware links)
//! are tuned for speed with unrolled, aligned and misaligned paths: 2,330 bytes of the
//! mps2-an385 firmware's flash, which must fit in 96 KiB. These copy whole words when both
//! addresses are word-aligned and bytes otherwise: a few dozen bytes of code, and a 1.5 KB
//! frame is still copied in well under 100 µs on a 25 MHz Cortex-M3.
//!
//! On a bare-metal target this crate defines the ARM EABI copy entry points the compiler
//! calls (`__aeabi_memcpy*`, `__aeabi_memmove*`, `__aeabi_memset*`, `__aeabi_memclr*`;
//! compiler_builtins' are weak) and `memcpy` / `memmove` / `memset` themselves (their fills
//! were 740 more bytes). It is `no_builtins`, as compiler_builtins is: such a crate stays
//! out of link-time optimisation, which would otherwise drop these definitions before the
//! calls to them exist. Every access is volatile, so that the loops are not recognised as a
//! copy and turned into a call to themselves. The host tests check the copies.
#![no_std]
#![no_builtins]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

use core::ptr::{read_volatile, write_volatile};

/// True when both addresses are word-aligned.
fn aligned(d: *mut u8, s: *const u8) -> bool {
    (d as usize | s as usize) & 3 == 0
}

/// Copies `n` bytes from `s` to `d`, lowest address first: right for any two ranges where `d`
/// is not inside `(s, s + n)`.
///
/// # Safety
/// `s` must be valid for `n` reads and `d` for `n` writes.
pub unsafe fn copy_forward(d: *mut u8, s: *const u8, n: usize) {
    let mut i = 0;
    if aligned(d, s) {
        while i + 4 <= n {
            // SAFETY: both word-aligned (checked above; i is a multiple of 4) and within the
            // ranges the caller vouches for.
            unsafe {
                write_volatile(
                    d.add(i).cast::<u32>(),
                    read_volatile(s.add(i).cast::<u32>()),
                )
            };
            i += 4;
        }
    }
    while i < n {
        // SAFETY: within the ranges the caller vouches for.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
        i += 1;
    }
}

/// Copies `n` bytes from `s` to `d`, highest address first: right for any two ranges where `s`
/// is not inside `(d, d + n)`.
///
/// # Safety
/// As [`copy_forward`].
pub unsafe fn copy_backward(d: *mut u8, s: *const u8, n: usize) {
    let mut i = n;
    let words = aligned(d, s);
    // The tail bytes (all of them when the addresses are not aligned), then whole words.
    while i > 0 && (!words || i & 3 != 0) {
        i -= 1;
        // SAFETY: within the ranges the caller vouches for.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
    while i >= 4 {
        i -= 4;
        // SAFETY: aligned (words, and i is now a multiple of 4) and within the ranges.
        unsafe {
            write_volatile(
                d.add(i).cast::<u32>(),
                read_volatile(s.add(i).cast::<u32>()),
            )
        };
    }
}

/// `memmove`: the copy in the direction that is right for overlapping ranges.
///
/// # Safety
/// As [`copy_forward`].
pub unsafe fn copy_overlapping(d: *mut u8, s: *const u8, n: usize) {
    if (d as usize) <= (s as usize) || (d as usize) >= (s as usize).wrapping_add(n) {
        // SAFETY: forwarded.
        unsafe { copy_forward(d, s, n) }
    } else {
        // SAFETY: forwarded.
        unsafe { copy_backward(d, s, n) }
    }
}

/// Writes `byte` to the `n` bytes at `d`: whole words when `d` is word-aligned.
///
/// # Safety
/// `d` must be valid for `n` writes.
pub unsafe fn fill(d: *mut u8, n: usize, byte: u8) {
    let mut i = 0;
    if (d as usize) & 3 == 0 {
        let word = u32::from_ne_bytes([byte; 4]);
        while i + 4 <= n {
            // SAFETY: word-aligned (checked; i is a multiple of 4) and within the range.
            unsafe { write_volatile(d.add(i).cast::<u32>(), word) };
            i += 4;
        }
    }
    while i < n {
        // SAFETY: within the range the caller vouches for.
        unsafe { write_volatile(d.add(i), byte) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Every offset pair and length in a 64-byte buffer (aligned, misaligned, overlapping
    /// either way), against `copy_within`.
    #[test]
    fn copies_match_the_standard_library_for_every_overlap_and_alignment() {
        let fresh = || {
            (0..64u8)
                .map(|b| b.wrapping_mul(37) ^ 0x5a)
                .collect::<Vec<u8>>()
        };
        // A word-aligned base, so that offset % 4 decides the alignment.
        let mut words = [0u32; 16];
        for src in 0..24 {
            for dst in 0..24 {
                for n in 0..40 {
                    let mut want = fresh();
                    want.copy_within(src..src + n, dst);
                    let base = words.as_mut_ptr().cast::<u8>();
                    let bytes = fresh();
                    // SAFETY: 64 bytes of `words`; offsets + n <= 64.
                    let got = unsafe {
                        core::ptr::copy_nonoverlapping(bytes.as_ptr(), base, 64);
                        copy_overlapping(base.add(dst), base.add(src), n);
                        core::slice::from_raw_parts(base, 64).to_vec()
                    };
                    assert_eq!(got, want, "src {src} dst {dst} n {n}");
                }
            }
        }
    }

    #[test]
    fn a_fill_writes_exactly_n_bytes_at_any_alignment() {
        let mut words = [0u32; 12];
        let base = words.as_mut_ptr().cast::<u8>();
        for at in 0..8 {
            for n in 0..33 {
                // SAFETY: 48 bytes of `words`; at + n <= 41.
                let got = unsafe {
                    fill(base, 48, 0xee);
                    fill(base.add(at), n, 0x5a);
                    core::slice::from_raw_parts(base, 48).to_vec()
                };
                let want: Vec<u8> = (0..48)
                    .map(|i| {
                        if (at..at + n).contains(&i) {
                            0x5a
                        } else {
                            0xee
                        }
                    })
                    .collect();
                assert_eq!(got, want, "at {at} n {n}");
            }
        }
    }

    #[test]
    fn a_forward_copy_between_separate_buffers_copies_exactly_n_bytes() {
        let src: Vec<u8> = (0..100).collect();
        for n in [0usize, 1, 3, 4, 5, 63, 64, 99, 100] {
            let mut dst = [0xeeu8; 104];
            // SAFETY: `src` has 100 bytes, `dst` 104; n <= 100.
            unsafe { copy_forward(dst.as_mut_ptr().add(1), src.as_ptr(), n) };
            assert_eq!(&dst[1..1 + n], &src[..n]);
            assert!(dst[1 + n..].iter().all(|b| *b == 0xee) && dst[0] == 0xee);
        }
    }
}

/// The copy entry points (bare metal only: on a host they would replace the C library's).
#[cfg(target_os = "none")]
mod symbols {
    use super::{copy_forward, copy_overlapping, fill};

    /// `memcpy(3)`.
    ///
    /// # Safety
    /// As the C function: `src` valid for `n` reads, `dest` for `n` writes, not overlapping.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is copy_forward's.
        unsafe { copy_forward(dest, src, n) };
        dest
    }

    /// `memmove(3)`.
    ///
    /// # Safety
    /// As the C function; the ranges may overlap.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is copy_overlapping's.
        unsafe { copy_overlapping(dest, src, n) };
        dest
    }

    /// The ARM EABI's copies (`__aeabi_memcpy`, and `…4` / `…8` for word- and
    /// doubleword-aligned operands): one body each way.
    macro_rules! aeabi {
        ($($name:ident => $body:ident),*) => {$(
            /// An ARM EABI copy entry point (see the crate's documentation).
            ///
            /// # Safety
            /// As `memcpy` / `memmove`.
            #[no_mangle]
            pub unsafe extern "aapcs" fn $name(dest: *mut u8, src: *const u8, n: usize) {
                // SAFETY: the caller's contract.
                unsafe { $body(dest, src, n) }
            }
        )*};
    }
    aeabi!(
        __aeabi_memcpy => copy_forward,
        __aeabi_memcpy4 => copy_forward,
        __aeabi_memcpy8 => copy_forward,
        __aeabi_memmove => copy_overlapping,
        __aeabi_memmove4 => copy_overlapping,
        __aeabi_memmove8 => copy_overlapping
    );

    /// `memset(3)`.
    ///
    /// # Safety
    /// As the C function: `dest` valid for `n` writes.
    #[no_mangle]
    pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is fill's (C keeps the low byte of `c`).
        unsafe { fill(dest, n, c as u8) };
        dest
    }

    /// The ARM EABI's fills: `__aeabi_memset*(dest, n, c)` (note the order) and
    /// `__aeabi_memclr*(dest, n)`.
    macro_rules! aeabi_fill {
        ($($set:ident, $clr:ident);*) => {$(
            /// An ARM EABI fill entry point (see the crate's documentation).
            ///
            /// # Safety
            /// As `memset`.
            #[no_mangle]
            pub unsafe extern "aapcs" fn $set(dest: *mut u8, n: usize, c: i32) {
                // SAFETY: the caller's contract.
                unsafe { fill(dest, n, c as u8) }
            }

            /// An ARM EABI clearing entry point (see the crate's documentation).
            ///
            /// # Safety
            /// As `memset`.
            #[no_mangle]
            pub unsafe extern "aapcs" fn $clr(dest: *mut u8, n: usize) {
                // SAFETY: the caller's contract.
                unsafe { fill(dest, n, 0) }
            }
        )*};
    }
    aeabi_fill!(
        __aeabi_memset, __aeabi_memclr;
        __aeabi_memset4, __aeabi_memclr4;
        __aeabi_memset8, __aeabi_memclr8
    );
}
