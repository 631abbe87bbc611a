//! Ids and clocks: ULIDs for everything Coach creates, milliseconds since the epoch for
//! timestamps, RFC 3339 for what callers read.
//!
//! ULIDs sort by creation time, so messages and documents list in order without a separate
//! timestamp key. One [`Ids`] per cold start makes ids strictly increasing within an
//! instance, even within one millisecond.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ulid::Ulid;

use crate::error::Error;

/// A source of new ids. Build once per cold start and share.
#[derive(Debug, Default)]
pub struct Ids(Mutex<ulid::Generator>);

impl Ids {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new id, strictly greater than every id this instance made before.
    pub fn next(&self) -> Ulid {
        let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ids.generate().unwrap_or_else(|overflow| overflow.commit_overflow_random())
    }
}

/// Parses a ULID from a path or cursor; anything else is a 400.
pub fn parse_id(value: &str, what: &str) -> Result<Ulid, Error> {
    Ulid::from_string(value).map_err(|_| Error::BadRequest(format!("invalid {what} id")))
}

/// Milliseconds since the epoch, now.
/// A stable 64-bit hash of `text` (FNV-1a), for names derived from keys.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Milliseconds since the epoch as RFC 3339 (`2026-11-22T18:00:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms)).unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}

/// 128 bits of SHA-256 over the parts (each length-prefixed, so moving a boundary changes
/// it), in hex: a key that names its parts without storing any text of them.
pub fn digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex(&hash.finalize()[..16])
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(1_795_370_400_123), "2026-11-22T18:00:00.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ids_increase_and_parse() {
        let ids = Ids::new();
        let (a, b) = (ids.next(), ids.next());
        assert!(b > a);
        assert_eq!(parse_id(&a.to_string(), "session").unwrap(), a);
        assert_eq!(parse_id("../etc", "session").unwrap_err().status().as_u16(), 400);
    }
}
