//! Operator-facing sentences (event details, refusals) built without `core::fmt`.
//!
//! Hand-written on purpose: the controller's firmware must fit in 96 KiB of flash, and
//! `core::fmt`'s machinery (the `write!` expansion of every sentence, `Formatter`, the integer
//! impls with their padding) cost it several kilobytes for sentences that only ever join
//! words and whole numbers. A type says itself once, in [`Words::words`], to any [`TextOut`];
//! its `Display` impl (for host tools) goes through [`fmt_words`], so the host and the
//! firmware print the same sentence.

use heapless::String;

/// Where words go: a fixed string on the controller, a `Formatter` on the host.
pub trait TextOut {
    /// Appends `s`.
    fn text(&mut self, s: &str);

    /// Appends `n` in decimal.
    fn dec(&mut self, n: u32) {
        let mut buf = [0u8; 10];
        let mut at = buf.len();
        let mut n = n;
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || at == 0 {
                break;
            }
        }
        self.ascii(buf.get(at..).unwrap_or(&[]));
    }

    /// Appends `n` as 16 lower-case hexadecimal digits (as `{:016x}` would).
    fn hex16(&mut self, n: u64) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        self.ascii(&buf);
    }

    /// Appends ASCII bytes (anything else is dropped).
    fn ascii(&mut self, bytes: &[u8]) {
        if let Ok(s) = core::str::from_utf8(bytes) {
            self.text(s);
        }
    }
}

/// A value that says itself in words.
pub trait Words {
    /// Writes this value's sentence to `out`.
    fn words(&self, out: &mut dyn TextOut);
}

/// Writes `w`'s sentence to a formatter: the body of the `Display` impls.
pub fn fmt_words(w: &dyn Words, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    struct Out<'a, 'b> {
        f: &'a mut core::fmt::Formatter<'b>,
        result: core::fmt::Result,
    }
    impl TextOut for Out<'_, '_> {
        fn text(&mut self, s: &str) {
            if self.result.is_ok() {
                self.result = self.f.write_str(s);
            }
        }
    }
    let mut out = Out { f, result: Ok(()) };
    w.words(&mut out);
    out.result
}

/// Text into a fixed string that keeps what fits and drops the rest, so that a long
/// sentence is cut rather than lost.
pub struct Truncating<'a, const N: usize>(pub &'a mut String<N>);

impl<const N: usize> TextOut for Truncating<'_, N> {
    fn text(&mut self, s: &str) {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    struct Sample(u32, u64);

    impl Words for Sample {
        fn words(&self, out: &mut dyn TextOut) {
            out.text("n=");
            out.dec(self.0);
            out.text(" rev ");
            out.hex16(self.1);
        }
    }

    impl core::fmt::Display for Sample {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            fmt_words(self, f)
        }
    }

    #[test]
    fn numbers_read_as_core_fmt_writes_them() {
        for (n, r) in [
            (0u32, 0u64),
            (7, 1),
            (10, 0xabc),
            (4_294_967_295, u64::MAX),
            (1000, 0x0123_4567_89ab_cdef),
        ] {
            let want = std::format!("n={n} rev {r:016x}");
            assert_eq!(std::format!("{}", Sample(n, r)), want);
            let mut s: String<64> = String::new();
            Sample(n, r).words(&mut Truncating(&mut s));
            assert_eq!(s.as_str(), want);
        }
    }

    #[test]
    fn a_full_string_keeps_what_fits() {
        let mut s: String<8> = String::new();
        Sample(123_456, 1).words(&mut Truncating(&mut s));
        assert_eq!(s.as_str(), "n=123456");
    }
}
