//! Fixed-size byte arrays on the wire (keys, serials): serde's own array impls unroll one
//! step per element (about 1 KB of firmware flash for a 32-byte key); these loop. Written by
//! hand because no small `no_std` crate does only this (`serde-big-array` and `serde_bytes`
//! change the encoding or need `alloc`). The encoding is the array's: postcard writes
//! `[u8; N]` as a tuple of N bytes, and so do these (`same_bytes_as_serdes_arrays` below).
//!
//! Use with `#[serde(with = "crate::bytes")]` on a `[u8; N]` field.

use core::fmt;

use serde::de::{Error, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// Writes `bytes` as a tuple of `N` bytes.
pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(N)?;
    for b in bytes {
        t.serialize_element(b)?;
    }
    t.end()
}

/// Reads a tuple of `N` bytes.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    d.deserialize_tuple(N, ArrayVisitor::<N>)
}

/// Visits the `N` elements of a byte array.
struct ArrayVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Ours(
        #[serde(with = "super")] [u8; 32],
        #[serde(with = "super")] [u8; 16],
    );

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Serdes([u8; 32], [u8; 16]);

    #[test]
    fn same_bytes_as_serdes_arrays() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 16];
        for (i, x) in a.iter_mut().chain(b.iter_mut()).enumerate() {
            *x = (i * 37 + 200) as u8;
        }
        let mut buf1 = [0u8; 128];
        let mut buf2 = [0u8; 128];
        let ours = postcard::to_slice(&Ours(a, b), &mut buf1).unwrap();
        let serdes = postcard::to_slice(&Serdes(a, b), &mut buf2).unwrap();
        assert_eq!(ours, serdes);
        assert_eq!(postcard::from_bytes::<Ours>(serdes).unwrap(), Ours(a, b));
        // One byte short: an error, not a panic.
        assert!(postcard::from_bytes::<Ours>(&serdes[..47]).is_err());
    }
}
