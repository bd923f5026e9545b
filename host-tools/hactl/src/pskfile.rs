//! Key files: the cluster PSK as 64 hex digits and a newline, in a file only its owner can
//! read or write (mode 0600).
//!
//! Key bytes go from the OS random source (or the passphrase KDF) into a [`Psk`] and into the
//! file; they are never formatted into a message, and buffers holding them are wiped.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ha_proto::keys::{Psk, KEY_LEN};
use zeroize::{Zeroize, Zeroizing};

use crate::exit::{Code, Failure, Result};

/// Permission bits of every file hactl writes that holds a key.
pub const KEY_FILE_MODE: u32 = 0o600;
/// PBKDF2-HMAC-SHA256 iterations for a passphrase-derived key (OWASP 2023 figure).
pub const PBKDF2_ROUNDS: u32 = 600_000;
/// PBKDF2 salt of passphrase-derived keys. Fixed so that every member derives the same key
/// from the same passphrase; the strength check stands in for a per-cluster salt.
pub const PBKDF2_SALT: &[u8] = b"ha-psk-from-passphrase-v1";

/// 256 bits from the operating system's CSPRNG.
pub fn generate() -> Result<Psk> {
    let mut psk = Psk([0u8; KEY_LEN]);
    getrandom::fill(&mut psk.0)
        .map_err(|e| Failure::new(Code::Failed, format!("OS random source failed: {e}")))?;
    Ok(psk)
}

/// The key derived from a passphrase (PBKDF2-HMAC-SHA256, [`PBKDF2_ROUNDS`] rounds).
/// The caller checks the passphrase's strength first.
pub fn from_passphrase(passphrase: &str) -> Psk {
    derive(passphrase, PBKDF2_ROUNDS)
}

fn derive(passphrase: &str, rounds: u32) -> Psk {
    let mut psk = Psk([0u8; KEY_LEN]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), PBKDF2_SALT, rounds, &mut psk.0);
    psk
}

/// Writes `psk` to `path` with mode 0600. An existing file is refused unless `force`, in
/// which case it is replaced atomically (a 0600 temporary file renamed over it).
pub fn write(path: &Path, psk: &Psk, force: bool) -> Result<()> {
    let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
    for b in psk.0 {
        text.push(hex_digit(b >> 4));
        text.push(hex_digit(b & 0xF));
    }
    text.push('\n');
    write_secret(path, text.as_bytes(), force)
}

/// Writes secret bytes to `path`, mode 0600 from creation on (never readable by others, not
/// even for an instant).
pub fn write_secret(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(Failure::new(
            Code::Refused,
            format!("{} exists; pass --force to replace it", path.display()),
        ));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path.file_name().ok_or_else(|| {
        Failure::new(Code::File, format!("{} is not a file name", path.display()))
    })?;
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(&tmp)?;
        // The umask can only remove bits; set them explicitly anyway.
        f.set_permissions(fs::Permissions::from_mode(KEY_FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Failure::file("cannot write", path, &e)
    })
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0xF)])
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Reads a key file written by [`write`] ([`ha_persist::read_key_file`]: refuses files that
/// others can read, like ssh, and weak keys, by the one strength rule).
pub fn read(path: &Path) -> Result<Psk> {
    ha_persist::read_key_file(path).map_err(|e| match e {
        ha_persist::KeyFileError::Io(_, ref io) => Failure::file("cannot read key file", path, io),
        other => Failure::new(Code::Refused, other.to_string()),
    })
}

/// Parses 64 hex digits, optionally surrounded by whitespace.
pub fn parse(text: &[u8]) -> Option<Psk> {
    let t = text.trim_ascii();
    if t.len() != 2 * KEY_LEN {
        return None;
    }
    let mut psk = Psk([0u8; KEY_LEN]);
    for (i, pair) in t.chunks_exact(2).enumerate() {
        let (Some(h), Some(l)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return None;
        };
        psk.0[i] = h << 4 | l;
    }
    Some(psk)
}

/// Lower-case hex of the key, for the explicit `--show` only.
pub fn to_hex(psk: &Psk) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
    for b in psk.0 {
        s.push(hex_digit(b >> 4));
        s.push(hex_digit(b & 0xF));
    }
    s
}

/// Reads a passphrase from a file, or from standard input when `file` is `None`; the trailing
/// newline is dropped. Never from the command line, where `ps` would show it.
pub fn read_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::new());
    match file {
        Some(p) => fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| Failure::file("cannot read passphrase file", p, &e))?,
        None => std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Failure::new(Code::File, format!("cannot read standard input: {e}")))?,
    };
    let mut text = Zeroizing::new(String::from_utf8(std::mem::take(&mut *buf)).map_err(|e| {
        let mut bytes = e.into_bytes();
        bytes.zeroize();
        Failure::new(Code::Refused, "the passphrase is not UTF-8")
    })?);
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_differs_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.0, b.0);
        let p = dir.path().join("k");
        write(&p, &a, false).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&p).unwrap().0, a.0);
        assert_eq!(write(&p, &b, false).unwrap_err().code, Code::Refused);
        write(&p, &b, true).unwrap();
        assert_eq!(read(&p).unwrap().0, b.0);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn readable_by_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write(&p, &generate().unwrap(), false).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&p).unwrap_err().code, Code::Refused);
    }

    #[test]
    fn parse_rejects_bad_text() {
        assert!(parse(b"abc").is_none());
        assert!(parse(&[b'g'; 64]).is_none());
        assert_eq!(
            parse(format!("{}\n", "0f".repeat(32)).as_bytes())
                .unwrap()
                .0,
            [0x0f; 32]
        );
    }

    #[test]
    fn passphrase_kdf_is_deterministic() {
        // Few rounds: unoptimized test builds are slow; the CLI test runs the real count.
        let a = derive("tumble orbit quiver lantern 47 marsh", 1000);
        let b = derive("tumble orbit quiver lantern 47 marsh", 1000);
        let c = derive("tumble orbit quiver lantern 47 marsH", 1000);
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, c.0);
    }
}
