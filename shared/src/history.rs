//! Chat history in DynamoDB: sessions and their messages, always scoped to the caller.
//!
//! Every key starts with the caller's tenant and user id, taken from the verified token,
//! so a session id from another user or tenant simply does not exist for this caller (404,
//! never their data). Layout in the one table:
//!
//! | item | `pk` | `sk` | `gsi1pk` / `gsi1sk` |
//! |---|---|---|---|
//! | session | `TENANT#{t}#USER#{u}` | `SESSION#{id}` | same pk / `{updated_ms:013}#{id}` |
//! | message | `TENANT#{t}#USER#{u}#SESSION#{id}` | `MSG#{ulid}` | - |
//!
//! Ids are ULIDs, so messages sort by time; sessions are listed most recently active first
//! through the `gsi1` index. Messages carry `expires_at` (DynamoDB TTL), and so does the
//! session, pushed forward on every message. No Scan anywhere: every read is a Query or a
//! GetItem on the caller's own partition.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use serde::Serialize;
use ulid::Ulid;

use crate::{
    auth::Principal,
    aws::{classify, n, s, unavailable},
    error::Error,
    llm::Usage,
};

/// Name of the index listing a user's sessions by last activity (see template.yaml).
pub const SESSIONS_INDEX: &str = "gsi1";
const TITLE_CHARS: usize = 80;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    User,
    Assistant,
}

impl Author {
    fn as_str(self) -> &'static str {
        match self {
            Author::User => "user",
            Author::Assistant => "assistant",
        }
    }
}

/// Where a reply's grounding came from.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Source {
    pub document_id: String,
    pub title: String,
    pub chunk: u32,
    pub score: f32,
    pub snippet: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub session_id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub message_id: String,
    pub role: Author,
    pub content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub created_at: String,
}

/// A message to store: the user's (content only) or a reply (with sources, usage, model).
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub role: Author,
    pub content: &'a str,
    pub sources: &'a [Source],
    pub usage: Option<Usage>,
    pub model: Option<&'a str>,
}

impl<'a> NewMessage<'a> {
    /// The user's message.
    pub fn user(content: &'a str) -> Self {
        Self { role: Author::User, content, sources: &[], usage: None, model: None }
    }
}

/// One page of a listing, with the cursor for the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Session and message storage for one table. Build once per cold start.
pub struct History {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    retention: Duration,
    ids: Mutex<ulid::Generator>,
}

impl History {
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, table: String, retention: Duration) -> Self {
        Self { dynamodb, table, retention, ids: Mutex::new(ulid::Generator::new()) }
    }

    /// A new id, strictly greater than every id this instance made before.
    pub fn next_id(&self) -> Ulid {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.generate().unwrap_or_else(|overflow| overflow.commit_overflow_random())
    }

    /// Creates a session. `title` is trimmed and cut to 80 characters.
    pub async fn create_session(&self, who: &Principal, title: &str) -> Result<Session, Error> {
        let id = self.next_id();
        let now = id.timestamp_ms();
        let title = title_from(title);
        let pk = user_pk(who);
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s(&format!("SESSION#{id}")))
            .item("gsi1pk", s(&pk))
            .item("gsi1sk", s(&activity_key(now, &id.to_string())))
            .item("type", s("session"))
            .item("session_id", s(&id.to_string()))
            .item("title", s(&title))
            .item("created_at", n(now))
            .item("updated_at", n(now))
            .item("message_count", n(0))
            .item("expires_at", n(self.expiry(now)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| unavailable("create session", classify(&e)))?;
        Ok(Session {
            session_id: id.to_string(),
            title,
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
            message_count: 0,
        })
    }

    /// The caller's session, or 404.
    pub async fn session(&self, who: &Principal, session_id: &str) -> Result<Session, Error> {
        let id = parse_id(session_id, "session")?;
        let item = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(who)))
            .key("sk", s(&format!("SESSION#{id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("read session", classify(&e)))?
            .item
            .ok_or_else(session_not_found)?;
        session_from(&item)
    }

    /// The caller's sessions, most recently active first.
    pub async fn sessions(&self, who: &Principal, limit: i32, cursor: Option<&str>) -> Result<Page<Session>, Error> {
        let pk = user_pk(who);
        let mut query = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .index_name(SESSIONS_INDEX)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            let raw = decode_cursor(cursor)?;
            let (activity, id) = raw.split_once('|').ok_or_else(bad_cursor)?;
            let id = parse_id(id, "cursor")?;
            query = query
                .exclusive_start_key("gsi1pk", s(&pk))
                .exclusive_start_key("gsi1sk", s(activity))
                .exclusive_start_key("pk", s(&pk))
                .exclusive_start_key("sk", s(&format!("SESSION#{id}")));
        }
        let output = query.send().await.map_err(|e| unavailable("list sessions", classify(&e)))?;
        let items = output.items().iter().map(session_from).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = output.last_evaluated_key().map(|key| {
            let activity = string(key, "gsi1sk").unwrap_or_default();
            let id = string(key, "sk").unwrap_or_default().trim_start_matches("SESSION#").to_owned();
            encode_cursor(&format!("{activity}|{id}"))
        });
        Ok(Page { items, next_cursor })
    }

    /// Stores a message in the caller's session; returns it with its new id.
    pub async fn add_message(&self, who: &Principal, session_id: &str, new: NewMessage<'_>) -> Result<Message, Error> {
        let NewMessage { role, content, sources, usage, model } = new;
        let id = self.next_id();
        let now = id.timestamp_ms();
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&session_pk(who, session_id)))
            .item("sk", s(&format!("MSG#{id}")))
            .item("type", s("message"))
            .item("message_id", s(&id.to_string()))
            .item("role", s(role.as_str()))
            .item("content", s(content))
            .item("created_at", n(now))
            .item("expires_at", n(self.expiry(now)));
        if !sources.is_empty() {
            let json = serde_json::to_string(sources).map_err(|e| Error::Internal(e.to_string()))?;
            put = put.item("sources", s(&json));
        }
        if let Some(usage) = usage {
            put = put.item("input_tokens", n(usage.input_tokens)).item("output_tokens", n(usage.output_tokens));
        }
        if let Some(model) = model {
            put = put.item("model", s(model));
        }
        put.send().await.map_err(|e| unavailable("store message", classify(&e)))?;

        // Bump the session's activity, count and expiry; it must still exist.
        self.dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(who)))
            .key("sk", s(&format!("SESSION#{session_id}")))
            .update_expression("SET updated_at = :now, gsi1sk = :activity, expires_at = :exp ADD message_count :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":activity", s(&activity_key(now, session_id)))
            .expression_attribute_values(":exp", n(self.expiry(now)))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| unavailable("update session", classify(&e)))?;

        Ok(Message {
            message_id: id.to_string(),
            role,
            content: content.to_owned(),
            sources: sources.to_vec(),
            usage,
            model: model.map(str::to_owned),
            created_at: rfc3339(now),
        })
    }

    /// The last `limit` messages of a session, oldest first (one Query, newest first, reversed).
    pub async fn recent_messages(&self, who: &Principal, session_id: &str, limit: i32) -> Result<Vec<Message>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut page = self.messages(who, session_id, limit, None).await?.items;
        page.reverse();
        Ok(page)
    }

    /// A page of a session's messages, newest first; the cursor leads to older ones.
    pub async fn messages(
        &self,
        who: &Principal,
        session_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Message>, Error> {
        let pk = session_pk(who, session_id);
        let mut query = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :msg)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":msg", s("MSG#"))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            let id = parse_id(&decode_cursor(cursor)?, "cursor")?;
            query = query.exclusive_start_key("pk", s(&pk)).exclusive_start_key("sk", s(&format!("MSG#{id}")));
        }
        let output = query.send().await.map_err(|e| unavailable("read messages", classify(&e)))?;
        let items = output.items().iter().map(message_from).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = output
            .last_evaluated_key()
            .and_then(|key| string(key, "sk"))
            .map(|sk| encode_cursor(sk.trim_start_matches("MSG#")));
        Ok(Page { items, next_cursor })
    }

    /// Deletes the caller's session and all its messages; 404 when there is no such session.
    pub async fn delete_session(&self, who: &Principal, session_id: &str) -> Result<(), Error> {
        let id = parse_id(session_id, "session")?.to_string();
        self.session(who, &id).await?;
        // Messages first: if this fails half-way, the session still lists and can be deleted again.
        let pk = session_pk(who, &id);
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .dynamodb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("list messages to delete", classify(&e)))?;
            for batch in output.items().chunks(25) {
                self.delete_batch(batch).await?;
            }
            match output.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        self.dynamodb
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(who)))
            .key("sk", s(&format!("SESSION#{id}")))
            .send()
            .await
            .map_err(|e| unavailable("delete session", classify(&e)))?;
        Ok(())
    }

    async fn delete_batch(&self, keys: &[HashMap<String, AttributeValue>]) -> Result<(), Error> {
        let mut requests: Vec<WriteRequest> = keys
            .iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map_err(|e| Error::Internal(e.to_string()))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<_, Error>>()?;
        // Unprocessed items are retried a few times with a short backoff.
        for attempt in 0..5u32 {
            let output = self
                .dynamodb
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| unavailable("delete messages", classify(&e)))?;
            requests = output.unprocessed_items().and_then(|m| m.get(&self.table)).cloned().unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        Err(Error::Unavailable("storage is busy; try again".into()))
    }

    fn expiry(&self, now_ms: u64) -> u64 {
        now_ms / 1000 + self.retention.as_secs()
    }
}

/// Escapes `#` (the key separator) and `%` in a user id, so no id can reach into another's keys.
pub(crate) fn key_part(value: &str) -> String {
    value.replace('%', "%25").replace('#', "%23")
}

fn user_pk(who: &Principal) -> String {
    format!("TENANT#{}#USER#{}", who.tenant, key_part(&who.user_id))
}

fn session_pk(who: &Principal, session_id: &str) -> String {
    format!("{}#SESSION#{session_id}", user_pk(who))
}

fn activity_key(now_ms: u64, session_id: &str) -> String {
    format!("{now_ms:013}#{session_id}")
}

fn title_from(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line,
    }
}

/// Parses a ULID from a path or cursor; anything else is a 400.
pub fn parse_id(value: &str, what: &str) -> Result<Ulid, Error> {
    Ulid::from_string(value).map_err(|_| Error::BadRequest(format!("invalid {what} id")))
}

fn session_not_found() -> Error {
    Error::NotFound("no such session".into())
}

fn bad_cursor() -> Error {
    Error::BadRequest("invalid cursor".into())
}

fn encode_cursor(raw: &str) -> String {
    B64.encode(raw)
}

fn decode_cursor(cursor: &str) -> Result<String, Error> {
    let bytes = B64.decode(cursor).map_err(|_| bad_cursor())?;
    String::from_utf8(bytes).map_err(|_| bad_cursor())
}

fn string<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("stored {what} item is missing attributes"))
}

fn session_from(item: &HashMap<String, AttributeValue>) -> Result<Session, Error> {
    Ok(Session {
        session_id: string(item, "session_id").ok_or_else(|| corrupt("session"))?.to_owned(),
        title: string(item, "title").unwrap_or_default().to_owned(),
        created_at: rfc3339(number(item, "created_at").ok_or_else(|| corrupt("session"))?),
        updated_at: rfc3339(number(item, "updated_at").ok_or_else(|| corrupt("session"))?),
        message_count: number(item, "message_count").unwrap_or(0),
    })
}

fn message_from(item: &HashMap<String, AttributeValue>) -> Result<Message, Error> {
    let role = match string(item, "role") {
        Some("user") => Author::User,
        Some("assistant") => Author::Assistant,
        _ => return Err(corrupt("message")),
    };
    let sources = match string(item, "sources") {
        Some(json) => serde_json::from_str(json).map_err(|_| corrupt("message"))?,
        None => Vec::new(),
    };
    let usage = match (number(item, "input_tokens"), number(item, "output_tokens")) {
        (Some(input_tokens), Some(output_tokens)) => Some(Usage { input_tokens, output_tokens }),
        _ => None,
    };
    Ok(Message {
        message_id: string(item, "message_id").ok_or_else(|| corrupt("message"))?.to_owned(),
        role,
        content: string(item, "content").unwrap_or_default().to_owned(),
        sources,
        usage,
        model: string(item, "model").map(str::to_owned),
        created_at: rfc3339(number(item, "created_at").ok_or_else(|| corrupt("message"))?),
    })
}

/// Milliseconds since the epoch as RFC 3339 (`2026-11-22T18:00:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    aws_smithy_types::DateTime::from_millis(ms).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_cannot_forge_key_separators() {
        let who = Principal { user_id: "x#SESSION#y".into(), tenant: "t".into(), roles: vec![] };
        assert_eq!(user_pk(&who), "TENANT#t#USER#x%23SESSION%23y");
        let who = Principal { user_id: "a%23b".into(), tenant: "t".into(), roles: vec![] };
        assert_eq!(user_pk(&who), "TENANT#t#USER#a%2523b");
    }

    #[test]
    fn titles_are_one_line_and_bounded() {
        assert_eq!(title_from("  How do I\n give   feedback? "), "How do I give feedback?");
        let long = "é".repeat(200);
        let title = title_from(&long);
        assert_eq!(title.chars().count(), TITLE_CHARS + 1);
        assert!(title.ends_with('…'));
    }

    #[test]
    fn ids_and_cursors_are_validated() {
        assert!(parse_id("01JD3Q7Z8X4K2M9N5P6R7S8T9V", "session").is_ok());
        assert_eq!(parse_id("../etc", "session").unwrap_err().status().as_u16(), 400);
        assert_eq!(decode_cursor("%%%").unwrap_err().status().as_u16(), 400);
        assert_eq!(decode_cursor(&encode_cursor("MSG")).unwrap(), "MSG");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(1_795_370_400_123), "2026-11-22T18:00:00.123Z");
    }
}
