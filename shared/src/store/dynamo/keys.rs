//! The table's key layout and cursors: every `pk`, `sk` and `gsi1` key is built (and read
//! back) here and nowhere else. The layout is drawn in the [module's documentation](super).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};

use crate::{
    model::{Owner, Scope, Surface},
    store::{Counter, StoreError, StoreResult},
};

/// Escapes `#` (the key separator) and `%` in a user id (and a model name).
pub(super) fn key_part(value: &str) -> String {
    value.replace('%', "%25").replace('#', "%23")
}

/// The inverse of [`key_part`].
pub(super) fn unescape(value: &str) -> String {
    value.replace("%23", "#").replace("%25", "%")
}

// ------------------------------------------------------------------ sessions, messages, turns

pub(super) fn user_pk(owner: Owner) -> String {
    format!("TENANT#{}#USER#{}", owner.tenant, key_part(owner.user))
}

pub(super) fn session_sk(session_id: &str) -> String {
    format!("SESSION#{session_id}")
}

/// The partition of a session's messages.
pub(super) fn session_pk(owner: Owner, session_id: &str) -> String {
    format!("{}#{}", user_pk(owner), session_sk(session_id))
}

pub(super) const MESSAGE_PREFIX: &str = "MSG#";

pub(super) fn message_sk(message_id: &str) -> String {
    format!("{MESSAGE_PREFIX}{message_id}")
}

/// `gsi1sk` of a session: its last activity, then its id.
pub(super) fn activity_key(now_ms: u64, session_id: &str) -> String {
    format!("{now_ms:013}#{session_id}")
}

pub(super) fn turn_sk(key: &str) -> String {
    format!("TURN#{key}")
}

// ------------------------------------------------------------------ documents

pub(super) fn scope_pk(scope: &Scope) -> String {
    match scope {
        Scope::Tenant(t) => format!("TENANT#{t}"),
        Scope::Global => "GLOBAL".to_owned(),
    }
}

pub(super) fn scope_from_pk(pk: &str) -> Option<Scope> {
    match pk {
        "GLOBAL" => Some(Scope::Global),
        _ => pk.strip_prefix("TENANT#").filter(|t| !t.contains('#')).map(|t| Scope::Tenant(t.to_owned())),
    }
}

pub(super) const DOCUMENT_PREFIX: &str = "DOC#";

pub(super) fn document_sk(id: &str) -> String {
    format!("{DOCUMENT_PREFIX}{id}")
}

/// `gsi1pk` of the documents whose ingest is not finished (see
/// [`crate::store::DocumentStore::unfinished`]).
pub(super) const UNFINISHED: &str = "INGEST#OPEN";

/// `gsi1sk` of an unfinished document: when its status last changed, then its key.
pub(super) fn unfinished_sk(changed_ms: u64, scope: &Scope, id: &str) -> String {
    format!("{changed_ms:013}#{}#{id}", scope_pk(scope))
}

/// The first `gsi1sk` of documents unfinished since `before_ms` or later.
pub(super) fn unfinished_before(before_ms: u64) -> String {
    format!("{before_ms:013}")
}

// ------------------------------------------------------------------ counters, answers, slots

pub(super) fn counter_pk(counter: Counter) -> String {
    match counter {
        Counter::User(owner) => format!("TENANT#{}#RATE#USER#{}", owner.tenant, key_part(owner.user)),
        Counter::Tenant(tenant) => format!("TENANT#{tenant}#RATE"),
    }
}

pub(super) fn window_sk(window_start: u64) -> String {
    format!("WINDOW#{window_start}")
}

pub(super) fn answers_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}#ANSWERS")
}

pub(super) fn answer_sk(key: &str) -> String {
    format!("QA#{key}")
}

pub(super) fn streams_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}#STREAMS")
}

pub(super) fn slot_sk(number: u32) -> String {
    format!("SLOT#{number:04}")
}

/// The slot number of a stream slot's `sk`.
pub(super) fn slot_number(sk: &str) -> Option<u32> {
    sk.strip_prefix("SLOT#")?.parse().ok()
}

// ------------------------------------------------------------------ usage and feedback

/// The ledger's partition of a tenant, or of one of its users.
pub(super) fn usage_pk(tenant: &str, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("TENANT#{tenant}#USAGE#USER#{}", key_part(user)),
        None => format!("TENANT#{tenant}#USAGE"),
    }
}

/// A day counter's `sk`: the day, the model and, for a surface other than Coach's own API
/// (whose counters kept the key they had before surfaces were counted), the surface.
pub(super) fn day_sk(day: &str, model: &str, surface: Surface) -> String {
    match surface {
        Surface::Api => format!("DAY#{day}#{}", key_part(model)),
        other => format!("DAY#{day}#{}#{}", key_part(model), other.as_str()),
    }
}

/// The first and last `sk` of the day counters from `from` to `to`: `$` sorts after `#`, so
/// every model of the last day is in.
pub(super) fn day_range(from: &str, to: &str) -> (String, String) {
    (format!("DAY#{from}#"), format!("DAY#{to}$"))
}

/// The day, the model and the surface of a day counter's `sk`.
pub(super) fn day_model_surface(sk: &str) -> Option<(String, String, Surface)> {
    let (day, rest) = sk.strip_prefix("DAY#")?.split_once('#')?;
    let (model, surface) = match rest.split_once('#') {
        Some((model, surface)) => (model, Surface::parse(surface)?),
        None => (rest, Surface::Api),
    };
    Some((day.to_owned(), unescape(model), surface))
}

pub(super) fn month_sk(month: &str) -> String {
    format!("MONTH#{month}")
}

pub(super) fn feedback_sk(day: &str) -> String {
    format!("FEEDBACK#{day}")
}

// ------------------------------------------------------------------ audit and API keys

pub(super) fn audit_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}#AUDIT")
}

/// Beside the events' partition, not in it.
pub(super) fn audit_claims_pk(tenant: &str) -> String {
    format!("{}#CLAIMS", audit_pk(tenant))
}

pub(super) fn event_sk(event_id: &str) -> String {
    format!("EVENT#{event_id}")
}

pub(super) fn api_key_pk(id: &str) -> String {
    format!("APIKEY#{id}")
}

pub(super) const API_KEY_SK: &str = "APIKEY";

/// `gsi1pk` of a tenant's API keys.
pub(super) fn api_keys_of(tenant: &str) -> String {
    format!("TENANT#{tenant}#APIKEYS")
}

/// `gsi1sk` of an API key: when it was created, then its id.
pub(super) fn api_key_order(created_ms: u64, id: &str) -> String {
    format!("{created_ms:013}#{id}")
}

// ------------------------------------------------------------------ cursors

const BAD_CURSOR: StoreError = StoreError::BadCursor("invalid cursor");

pub(super) fn encode_cursor(raw: &str) -> String {
    B64.encode(raw)
}

/// The longest cursor Coach hands out is under 80 characters.
const MAX_CURSOR_CHARS: usize = 200;

pub(super) fn decode_cursor(cursor: &str) -> StoreResult<String> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(BAD_CURSOR);
    }
    let bytes = B64.decode(cursor).map_err(|_| BAD_CURSOR)?;
    String::from_utf8(bytes).map_err(|_| BAD_CURSOR)
}

/// A sessions cursor, `{activity}|{id}`: the last session's activity key (13 digits of
/// milliseconds, `#`, its id) and its id, the same ULID twice. Returned as the activity key
/// and id rebuilt from the checked parts, so nothing reaches DynamoDB as the client wrote it.
pub(super) fn session_cursor(raw: &str) -> StoreResult<(String, String)> {
    let (activity, id) = raw.split_once('|').ok_or(BAD_CURSOR)?;
    let id = cursor_id(id)?;
    let (ms, activity_id) = activity.split_once('#').ok_or(BAD_CURSOR)?;
    if ms.len() != 13 || !ms.bytes().all(|b| b.is_ascii_digit()) || cursor_id(activity_id)? != id {
        return Err(BAD_CURSOR);
    }
    Ok((format!("{ms}#{id}"), id))
}

/// The cursor handed out after a session whose `gsi1sk` is `activity` and `sk` is `sk`.
pub(super) fn next_session_cursor(activity: &str, sk: &str) -> String {
    encode_cursor(&format!("{activity}|{}", sk.trim_start_matches("SESSION#")))
}

/// The id inside a cursor: a ULID, or the cursor is not one of ours.
pub(super) fn cursor_id(value: &str) -> StoreResult<String> {
    ulid::Ulid::from_string(value).map(|id| id.to_string()).map_err(|_| StoreError::BadCursor("invalid cursor id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_cannot_forge_key_separators() {
        let owner = Owner { tenant: "t", user: "x#SESSION#y" };
        assert_eq!(user_pk(owner), "TENANT#t#USER#x%23SESSION%23y");
        let owner = Owner { tenant: "t", user: "a%23b" };
        assert_eq!(user_pk(owner), "TENANT#t#USER#a%2523b");
        assert_eq!(unescape(&key_part("a%23#b")), "a%23#b");
        for surface in Surface::ALL {
            let sk = day_sk("2026-12-06", "gpt#4o%", surface);
            assert_eq!(day_model_surface(&sk), Some(("2026-12-06".into(), "gpt#4o%".into(), surface)));
        }
        // Coach's own API keeps the key it had before surfaces were counted.
        assert_eq!(day_sk("2026-12-06", "m", Surface::Api), "DAY#2026-12-06#m");
        assert_eq!(day_model_surface("DAY#2026-12-06#m#nowhere"), None);
    }

    #[test]
    fn cursors_are_validated() {
        assert_eq!(decode_cursor("%%%").map_err(|e| e.to_string()), Err("invalid cursor".into()));
        assert_eq!(decode_cursor(&encode_cursor("MSG")).unwrap(), "MSG");
        assert_eq!(cursor_id("nope").map_err(|e| e.to_string()), Err("invalid cursor id".into()));
        assert!(decode_cursor(&"A".repeat(MAX_CURSOR_CHARS + 4)).is_err(), "oversized");
        let id = "01JD3Q7Z8X4K2M9N5P6R7S8T9V";
        let activity = format!("1732406400000#{id}");
        assert_eq!(session_cursor(&format!("{activity}|{id}")).unwrap(), (activity.clone(), id.to_owned()));
        // What Coach hands out round-trips.
        let handed_out = next_session_cursor(&activity, &session_sk(id));
        assert_eq!(session_cursor(&decode_cursor(&handed_out).unwrap()).unwrap().1, id);
        for crafted in [
            format!("|{id}"),
            format!("#{id}|{id}"),
            format!("{activity}|"),
            format!("1732406400000#01JD3Q7Z8X4K2M9N5P6R7S8T9W|{id}"),
            format!("173240640000#{id}|{id}"),
            format!("17324064000000#{id}|{id}"),
            format!("17324064000x0#{id}|{id}"),
            format!("1732406400000#{id}#x|{id}"),
            format!("{activity}|{id}|x"),
            String::new(),
        ] {
            assert!(session_cursor(&crafted).is_err(), "{crafted:?} accepted");
        }
    }
}
