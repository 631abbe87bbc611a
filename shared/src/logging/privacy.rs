//! What log lines may say about people and secrets (`COACH_LOG_PII`).
//!
//! Every JSON log line passes through [`Privacy::scrub_line`] before it is written:
//!
//! - Fields naming a person (`actor`, `user`, `user_id`, `email`, `sub`, `created_by`) and
//!   e-mail addresses anywhere: with `hashed` (the default) a keyed hash, `u_` and 16 hex
//!   digits (HMAC-SHA256 with `COACH_LOG_PII_KEY`), stable so one user's lines can be
//!   followed; with `none` the field is dropped (an address becomes `[email]`); with `full`
//!   (local development only) they stay. API keys' ids (`key:...`) are no person's and stay.
//! - Whatever the mode, in any string of the line: bearer tokens, JWTs, Coach API keys,
//!   `sk-...` keys, AWS access key ids, `password=`/`secret:`-like assignments, card numbers
//!   (13 to 19 digits passing the Luhn check) and SSN-like numbers become `[redacted]`.
//!
//! What Coach logs is chosen to hold none of these (`tests/tests/it/logs.rs`); this is the
//! net under it, for what an upstream's error message or a dependency might carry.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Field names whose values are a person.
const PERSON_FIELDS: [&str; 6] = ["actor", "user", "user_id", "email", "sub", "created_by"];

/// How person fields and addresses appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiMode {
    Hashed,
    None,
    Full,
}

/// The log privacy settings. Build once, when logging starts.
#[derive(Clone)]
pub struct Privacy {
    mode: PiiMode,
    key: Vec<u8>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// The hashing key when `COACH_LOG_PII_KEY` is unset (the template always sets one).
const DEFAULT_KEY: &str = "coach-log-pii";

impl Default for Privacy {
    fn default() -> Self {
        Self::new(PiiMode::Hashed, DEFAULT_KEY)
    }
}

fn pattern(p: &str) -> Regex {
    Regex::new(p).unwrap_or_else(|e| panic!("log redaction pattern {p:?}: {e}"))
}

static SECRETS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        r"\bcoach_[0-9A-Za-z]{10,}_[0-9a-fA-F]{16,}",
        r"\bsk-[A-Za-z0-9_-]{16,}",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"\b\d{3}-\d{2}-\d{4}\b",
    ]
    .iter()
    .map(|p| pattern(p))
    .collect()
});
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r#"(?i)\b(password|passwd|secret|api[_-]?key|access[_-]?token|client[_-]?secret)(["']?\s*[:=]\s*["']?)[^\s"',;&]{3,}"#,
    )
});
static CARD: LazyLock<Regex> = LazyLock::new(|| pattern(r"\b\d(?:[ -]?\d){12,18}\b"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| pattern(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"));

/// Whether `digits` pass the Luhn check (card numbers do).
fn luhn(digits: &[u32]) -> bool {
    let doubled = |d: u32| if d * 2 > 9 { d * 2 - 9 } else { d * 2 };
    let sum: u32 = digits.iter().rev().enumerate().map(|(i, &d)| if i % 2 == 1 { doubled(d) } else { d }).sum();
    sum.is_multiple_of(10)
}

impl Privacy {
    pub fn new(mode: PiiMode, key: &str) -> Self {
        Self { mode, key: key.as_bytes().to_vec() }
    }

    /// From `COACH_LOG_PII` (`hashed`, `none`, `full`; anything else is `hashed`) and
    /// `COACH_LOG_PII_KEY`.
    pub fn from_vars(mode: Option<&str>, key: Option<&str>) -> Self {
        let mode = match mode.map(str::to_ascii_lowercase).as_deref() {
            Some("none") => PiiMode::None,
            Some("full") => PiiMode::Full,
            _ => PiiMode::Hashed,
        };
        Self::new(mode, key.filter(|k| !k.is_empty()).unwrap_or(DEFAULT_KEY))
    }

    /// The keyed hash of a person's id as log lines show it: `u_` and 16 hex digits of
    /// HMAC-SHA256.
    pub fn hash_id(&self, id: &str) -> String {
        let mut key = [0u8; 64];
        if self.key.len() > 64 {
            key[..32].copy_from_slice(&Sha256::digest(&self.key));
        } else {
            key[..self.key.len()].copy_from_slice(&self.key);
        }
        let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new().chain_update(pad(0x36)).chain_update(id.as_bytes()).finalize();
        let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
        format!("u_{}", crate::ids::hex(&outer[..8]))
    }

    /// A log line as it may be written: a JSON object scrubbed field by field, anything else
    /// as text.
    pub fn scrub_line(&self, line: &str) -> String {
        match serde_json::from_str::<Value>(line) {
            Ok(mut value) => {
                self.scrub_value(&mut value);
                serde_json::to_string(&value).unwrap_or_else(|_| self.scrub_text(line))
            }
            Err(_) => self.scrub_text(line),
        }
    }

    pub(crate) fn scrub_value(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                let mut dropped = Vec::new();
                for (name, field) in map.iter_mut() {
                    let person = PERSON_FIELDS.contains(&name.as_str());
                    match field {
                        Value::String(text) if person && !text.starts_with("key:") => match self.mode {
                            PiiMode::Hashed => *text = self.hash_id(text),
                            PiiMode::None => dropped.push(name.clone()),
                            PiiMode::Full => *text = self.scrub_text(text),
                        },
                        other => self.scrub_value(other),
                    }
                }
                for name in dropped {
                    map.remove(&name);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.scrub_value(item)),
            Value::String(text) => *text = self.scrub_text(text),
            _ => {}
        }
    }

    /// `text` with secrets, card and SSN-like numbers redacted and addresses per the mode.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in SECRETS.iter() {
            if secret.is_match(&text) {
                text = secret.replace_all(&text, "[redacted]").into_owned();
            }
        }
        if ASSIGNED.is_match(&text) {
            text = ASSIGNED.replace_all(&text, "$1$2[redacted]").into_owned();
        }
        if CARD.is_match(&text) {
            text = CARD
                .replace_all(&text, |c: &Captures| {
                    let digits: Vec<u32> = c[0].chars().filter_map(|ch| ch.to_digit(10)).collect();
                    if luhn(&digits) {
                        "[redacted]".to_owned()
                    } else {
                        c[0].to_owned()
                    }
                })
                .into_owned();
        }
        if self.mode != PiiMode::Full && EMAIL.is_match(&text) {
            text = EMAIL
                .replace_all(&text, |c: &Captures| match self.mode {
                    PiiMode::Hashed => self.hash_id(&c[0].to_lowercase()),
                    _ => "[email]".to_owned(),
                })
                .into_owned();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_cards_and_ssns_are_redacted_in_any_mode() {
        for mode in [PiiMode::Hashed, PiiMode::None, PiiMode::Full] {
            let privacy = Privacy::new(mode, "k");
            let text = "got Bearer abcdefghijkl and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl, \
                        coach_01ARZ3NDEKTSV4RRFFQ69G5FAV_0123456789abcdef0123456789abcdef, sk-abcdefghijklmnopqrst, \
                        AKIAABCDEFGHIJKLMNOP, password=hunter22 card 4111 1111 1111 1111 ssn 123-45-6789";
            let out = privacy.scrub_text(text);
            for secret in
                ["abcdefghijkl", "eyJhbGci", "coach_01ARZ", "sk-abc", "AKIA", "hunter22", "4111", "123-45-6789"]
            {
                assert!(!out.contains(secret), "{mode:?} left {secret}: {out}");
            }
            assert!(out.contains("password=[redacted]"), "{out}");
        }
        // Numbers that are not cards stay: a timestamp, a count, a failed Luhn check.
        let privacy = Privacy::default();
        let text = "at 1795370400124 took 12 ms; id 4111 1111 1111 1112";
        assert_eq!(privacy.scrub_text(text), text);
    }

    #[test]
    fn people_are_hashed_dropped_or_kept() {
        let line = r#"{"message":"audit event","actor":"alice@example.com","tenant":"acme","fields":{"user_id":"bob"},"note":"mail bob@Example.com"}"#;
        let hashed = Privacy::new(PiiMode::Hashed, "k");
        let out: Value = serde_json::from_str(&hashed.scrub_line(line)).unwrap();
        assert_eq!(out["actor"], hashed.hash_id("alice@example.com"));
        assert_eq!(out["fields"]["user_id"], hashed.hash_id("bob"));
        assert_eq!(out["note"], format!("mail {}", hashed.hash_id("bob@example.com")));
        assert_eq!(out["tenant"], "acme");
        assert_ne!(hashed.hash_id("bob"), Privacy::new(PiiMode::Hashed, "other key").hash_id("bob"), "keyed");
        assert_eq!(hashed.hash_id("bob").len(), 18);
        let none: Value = serde_json::from_str(&Privacy::new(PiiMode::None, "k").scrub_line(line)).unwrap();
        assert!(none.get("actor").is_none() && none["fields"].get("user_id").is_none());
        assert_eq!(none["note"], "mail [email]");
        let full: Value = serde_json::from_str(&Privacy::new(PiiMode::Full, "k").scrub_line(line)).unwrap();
        assert_eq!(
            (full["actor"].as_str(), full["fields"]["user_id"].as_str()),
            (Some("alice@example.com"), Some("bob"))
        );
        // API keys are no person.
        let key = Privacy::default().scrub_line(r#"{"actor":"key:01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#);
        assert!(key.contains("key:01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        // Not JSON: scrubbed as text.
        assert_eq!(Privacy::default().scrub_line("Bearer abcdefghijkl"), "[redacted]");
    }
}
