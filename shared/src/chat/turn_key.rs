//! What recognises a retry of a chat turn (see the chat module's description).

use super::ChatInput;
use crate::{error::Error, ids::digest};

/// How long a turn record recognises a retry: a day for an `Idempotency-Key`, two minutes
/// for the same message sent again to the same session.
const KEYED_TURN_SECS: u64 = 86_400;
const REPEATED_TURN_SECS: u64 = 120;
/// Longest an `Idempotency-Key` may be.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What recognises a retry of a turn: a hash of the caller's `Idempotency-Key`, or of the
/// session and message, and how long it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnKey {
    pub(super) key: String,
    pub(super) ttl_secs: u64,
}

impl TurnKey {
    /// From the `Idempotency-Key` header (1 to 255 visible ASCII characters, else 400), or
    /// without one, for a message to an existing session, from the session and the message.
    /// `None` for a first message without a key (it has no session to be repeated in).
    pub fn for_turn(header: Option<&str>, input: &ChatInput) -> Result<Option<TurnKey>, Error> {
        if let Some(key) = header {
            let visible = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !visible {
                return Err(Error::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                )));
            }
            return Ok(Some(TurnKey { key: digest(&["key", key]), ttl_secs: KEYED_TURN_SECS }));
        }
        Ok(input.session_id.as_deref().map(|session| TurnKey {
            key: digest(&["same", session, input.message.trim()]),
            ttl_secs: REPEATED_TURN_SECS,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(message: &str, session: Option<&str>) -> ChatInput {
        ChatInput { message: message.into(), session_id: session.map(str::to_owned) }
    }

    #[test]
    fn turn_keys_name_a_turn_without_its_text() {
        let keyed = TurnKey::for_turn(Some("retry-7"), &input("hi", None)).unwrap().unwrap();
        assert_eq!(keyed.ttl_secs, KEYED_TURN_SECS);
        assert_eq!(keyed.key.len(), 32);
        // The key decides, whatever the message or session.
        assert_eq!(TurnKey::for_turn(Some("retry-7"), &input("other", Some("01J"))).unwrap().unwrap(), keyed);
        // Without a key: the same session and message (trimmed), for a short while.
        let same = TurnKey::for_turn(None, &input(" hi ", Some("01J"))).unwrap().unwrap();
        assert_eq!(same.ttl_secs, REPEATED_TURN_SECS);
        assert_eq!(TurnKey::for_turn(None, &input("hi", Some("01J"))).unwrap().unwrap(), same);
        assert_ne!(TurnKey::for_turn(None, &input("hi", Some("01K"))).unwrap().unwrap(), same);
        assert_ne!(same, keyed);
        assert!(!same.key.contains("hi"));
        // A first message without a key has nothing to be repeated in.
        assert_eq!(TurnKey::for_turn(None, &input("hi", None)).unwrap(), None);
        // Parts are length-prefixed: moving a boundary changes the key.
        assert_ne!(digest(&["same", "ab", "c"]), digest(&["same", "a", "bc"]));
    }

    #[test]
    fn idempotency_keys_are_short_visible_text() {
        for bad in ["", "a b", "tab\there", "é", &"k".repeat(256)] {
            let error = TurnKey::for_turn(Some(bad), &input("hi", None)).unwrap_err();
            assert_eq!(error.status(), lambda_http::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert!(TurnKey::for_turn(Some(&"k".repeat(255)), &input("hi", None)).is_ok());
    }
}
