//! The DynamoDB table: sessions, messages, document records and rate-limit counters.
//!
//! Every key starts with the tenant (and for chat, the user) it belongs to, so an id from
//! another user or tenant simply does not exist for this caller. Layout in the one table:
//!
//! | item | `pk` | `sk` | `gsi1pk` / `gsi1sk` |
//! |---|---|---|---|
//! | session | `TENANT#{t}#USER#{u}` | `SESSION#{id}` | same pk / `{updated_ms:013}#{id}` |
//! | message | `TENANT#{t}#USER#{u}#SESSION#{id}` | `MSG#{ulid}` | - |
//! | document | `TENANT#{t}` or `GLOBAL` | `DOC#{id}` | while `pending` or `processing`: `INGEST#OPEN` / `{changed_ms:013}#{pk}#{id}` |
//! | counter | `TENANT#{t}#RATE` or `TENANT#{t}#RATE#USER#{u}` | `WINDOW#{start_ms}` | - |
//! | turn | `TENANT#{t}#USER#{u}` | `TURN#{key}` | - |
//! | kept answer | `TENANT#{t}#ANSWERS` | `QA#{key}` | - |
//! | usage, a day of a model | `TENANT#{t}#USAGE` or `TENANT#{t}#USAGE#USER#{u}` | `DAY#{yyyy-mm-dd}#{model}` | - |
//! | usage, a month's total | same | `MONTH#{yyyy-mm}` | - |
//! | feedback counters of a day | `TENANT#{t}#USAGE` | `FEEDBACK#{yyyy-mm-dd}` | - |
//! | API key | `APIKEY#{id}` | `APIKEY` | `TENANT#{t}#APIKEYS` / `{created_ms:013}#{id}` |
//! | audit event | `TENANT#{t}#AUDIT` | `EVENT#{ulid}` | - |
//! | audit claim (a refusal's minute) | `TENANT#{t}#AUDIT#CLAIMS` | `{operation}#{user}#{route}` | - |
//! | stream slot | `TENANT#{t}#STREAMS` | `SLOT#{n:04}` | - |
//!
//! User ids are escaped (`#` and `%`) so no id can reach into another's keys. Sessions are
//! listed most recently active first through `gsi1`; messages sort by their ULIDs. Messages,
//! sessions, counters, turns, kept answers and document records still waiting for their upload carry
//! `expires_at` (TTL; reads and conditions check it too, as TTL deletes late). No Scan anywhere: every read is a Query
//! or a GetItem on one partition. Cursors are opaque base64 of the last key read.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    error::ProvideErrorMetadata,
    operation::update_item::builders::UpdateItemFluentBuilder,
    types::{AttributeValue, DeleteRequest, Put, TransactWriteItem, Update, WriteRequest},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};

use super::{
    aws::{classify, service_error},
    AnswerCache, ApiKeyStore, Appended, AuditLog, AuditRecord, Counter, Counters, DocumentStore, Failure, HistoryStore,
    NewSession, Probe, Renamer, SessionWrite, StoreError, StoreResult, StoredApiKey, StoredMessage, StreamSlots,
    TurnRecord, TurnWrite, UsageEntry, UsageLedger,
};
use crate::{
    ids::rfc3339,
    model::{
        Author, DayUsage, Document, Feedback, FeedbackCounts, FeedbackReason, Finished, Message, NewDocument, Owner,
        Page, Rating, Scope, Session, Status, Usage, UsageCounts,
    },
};

/// Name of the one secondary index (see template.yaml): a user's sessions by last activity,
/// and the documents whose ingest is unfinished.
pub const SESSIONS_INDEX: &str = "gsi1";

type Item = HashMap<String, AttributeValue>;

/// One DynamoDB table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    fn update(&self, pk: String, sk: String) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key("pk", s(&pk)).key("sk", s(&sk))
    }

    async fn delete_batch(&self, keys: &[Item]) -> StoreResult<()> {
        let mut requests: Vec<WriteRequest> = keys
            .iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map_err(|_| StoreError::Corrupt("key"))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<StoreResult<_>>()?;
        // Unprocessed items are retried a few times with a short backoff.
        for attempt in 0..5u32 {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| service_error("delete messages", e))?;
            requests = output.unprocessed_items().and_then(|m| m.get(&self.table)).cloned().unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        Err(StoreError::Service {
            action: "delete messages",
            failure: Failure::Throttled,
            cause: "unprocessed items after 5 attempts".into(),
        })
    }
}

// ------------------------------------------------------------------ keys and cursors

/// Escapes `#` (the key separator) and `%` in a user id.
fn key_part(value: &str) -> String {
    value.replace('%', "%25").replace('#', "%23")
}

fn user_pk(owner: Owner) -> String {
    format!("TENANT#{}#USER#{}", owner.tenant, key_part(owner.user))
}

fn session_pk(owner: Owner, session_id: &str) -> String {
    format!("{}#SESSION#{session_id}", user_pk(owner))
}

fn activity_key(now_ms: u64, session_id: &str) -> String {
    format!("{now_ms:013}#{session_id}")
}

fn scope_pk(scope: &Scope) -> String {
    match scope {
        Scope::Tenant(t) => format!("TENANT#{t}"),
        Scope::Global => "GLOBAL".to_owned(),
    }
}

fn document_sk(id: &str) -> String {
    format!("DOC#{id}")
}

/// `gsi1pk` of the documents whose ingest is not finished (see [`DocumentStore::unfinished`]).
const UNFINISHED: &str = "INGEST#OPEN";

/// `gsi1sk` of an unfinished document: when its status last changed, then its key.
fn unfinished_sk(changed_ms: u64, scope: &Scope, id: &str) -> String {
    format!("{changed_ms:013}#{}#{id}", scope_pk(scope))
}

fn scope_from_pk(pk: &str) -> Option<Scope> {
    match pk {
        "GLOBAL" => Some(Scope::Global),
        _ => pk.strip_prefix("TENANT#").filter(|t| !t.contains('#')).map(|t| Scope::Tenant(t.to_owned())),
    }
}

fn counter_pk(counter: Counter) -> String {
    match counter {
        Counter::User(owner) => format!("TENANT#{}#RATE#USER#{}", owner.tenant, key_part(owner.user)),
        Counter::Tenant(tenant) => format!("TENANT#{tenant}#RATE"),
    }
}

/// The ledger's partition of a tenant, or of one of its users.
fn usage_pk(tenant: &str, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("TENANT#{tenant}#USAGE#USER#{}", key_part(user)),
        None => format!("TENANT#{tenant}#USAGE"),
    }
}

fn usage_counts(item: &Item) -> UsageCounts {
    UsageCounts {
        input_tokens: number(item, "input_tokens").unwrap_or(0),
        output_tokens: number(item, "output_tokens").unwrap_or(0),
        cost_nanos: number(item, "cost_nanos").unwrap_or(0),
        requests: number(item, "requests").unwrap_or(0),
    }
}

/// The counters a piece of feedback adds to, by day: its rating and its reason.
fn feedback_counters(feedback: &Feedback) -> (String, Vec<String>) {
    let day = rfc3339(feedback.at_ms)[..10].to_owned();
    let mut names = vec![feedback.rating.as_str().to_owned()];
    names.extend(feedback.reason.map(|r| format!("reason_{}", r.as_str())));
    (day, names)
}

fn answers_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}#ANSWERS")
}

const BAD_CURSOR: StoreError = StoreError::BadCursor("invalid cursor");

fn encode_cursor(raw: &str) -> String {
    B64.encode(raw)
}

/// The longest cursor Coach hands out is under 80 characters.
const MAX_CURSOR_CHARS: usize = 200;

fn decode_cursor(cursor: &str) -> StoreResult<String> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(BAD_CURSOR);
    }
    let bytes = B64.decode(cursor).map_err(|_| BAD_CURSOR)?;
    String::from_utf8(bytes).map_err(|_| BAD_CURSOR)
}

/// A sessions cursor, `{activity}|{id}`: the last session's activity key (13 digits of
/// milliseconds, `#`, its id) and its id, the same ULID twice. Returned as the activity key
/// and id rebuilt from the checked parts, so nothing reaches DynamoDB as the client wrote it.
fn session_cursor(raw: &str) -> StoreResult<(String, String)> {
    let (activity, id) = raw.split_once('|').ok_or(BAD_CURSOR)?;
    let id = cursor_id(id)?;
    let (ms, activity_id) = activity.split_once('#').ok_or(BAD_CURSOR)?;
    if ms.len() != 13 || !ms.bytes().all(|b| b.is_ascii_digit()) || cursor_id(activity_id)? != id {
        return Err(BAD_CURSOR);
    }
    Ok((format!("{ms}#{id}"), id))
}

/// The id inside a cursor: a ULID, or the cursor is not one of ours.
fn cursor_id(value: &str) -> StoreResult<String> {
    ulid::Ulid::from_string(value).map(|id| id.to_string()).map_err(|_| StoreError::BadCursor("invalid cursor id"))
}

// ------------------------------------------------------------------ attributes

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn session_from(item: &Item) -> StoreResult<Session> {
    let corrupt = || StoreError::Corrupt("session");
    Ok(Session {
        session_id: string(item, "session_id").ok_or_else(corrupt)?.to_owned(),
        title: string(item, "title").unwrap_or_default().to_owned(),
        created_at: rfc3339(number(item, "created_at").ok_or_else(corrupt)?),
        updated_at: rfc3339(number(item, "updated_at").ok_or_else(corrupt)?),
        message_count: number(item, "message_count").unwrap_or(0),
        auto_title: item.get("title_auto").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
    })
}

fn message_from(item: &Item) -> StoreResult<Message> {
    let corrupt = || StoreError::Corrupt("message");
    let role = match string(item, "role") {
        Some("user") => Author::User,
        Some("assistant") => Author::Assistant,
        _ => return Err(corrupt()),
    };
    let sources = match string(item, "sources") {
        Some(json) => serde_json::from_str(json).map_err(|_| corrupt())?,
        None => Vec::new(),
    };
    let usage = match (number(item, "input_tokens"), number(item, "output_tokens")) {
        (Some(input_tokens), Some(output_tokens)) => Some(Usage { input_tokens, output_tokens }),
        _ => None,
    };
    let feedback = match (string(item, "feedback_rating"), number(item, "feedback_at")) {
        (Some(rating), Some(at_ms)) => Some(Feedback {
            rating: match rating {
                "up" => Rating::Up,
                "down" => Rating::Down,
                _ => return Err(corrupt()),
            },
            reason: string(item, "feedback_reason").and_then(FeedbackReason::parse),
            comment: string(item, "feedback_comment").map(str::to_owned),
            updated_at: rfc3339(at_ms),
            at_ms,
        }),
        _ => None,
    };
    Ok(Message {
        message_id: string(item, "message_id").ok_or_else(corrupt)?.to_owned(),
        role,
        content: string(item, "content").unwrap_or_default().to_owned(),
        sources,
        usage,
        model: string(item, "model").map(str::to_owned),
        incomplete: item.get("incomplete").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        created_at: rfc3339(number(item, "created_at").ok_or_else(corrupt)?),
        feedback,
    })
}

fn message_item(owner: Owner, session_id: &str, m: &StoredMessage) -> StoreResult<Item> {
    let mut item = Item::from([
        ("pk".to_owned(), s(&session_pk(owner, session_id))),
        ("sk".to_owned(), s(&format!("MSG#{}", m.message_id))),
        ("type".to_owned(), s("message")),
        ("message_id".to_owned(), s(m.message_id)),
        ("role".to_owned(), s(m.role.as_str())),
        ("content".to_owned(), s(m.content)),
        ("created_at".to_owned(), n(m.now_ms)),
        ("expires_at".to_owned(), n(m.expires_at)),
    ]);
    if !m.sources.is_empty() {
        let json = serde_json::to_string(m.sources).map_err(|_| StoreError::Corrupt("sources"))?;
        item.insert("sources".to_owned(), s(&json));
    }
    if let Some(usage) = m.usage {
        item.insert("input_tokens".to_owned(), n(usage.input_tokens));
        item.insert("output_tokens".to_owned(), n(usage.output_tokens));
    }
    if let Some(model) = m.model {
        item.insert("model".to_owned(), s(model));
    }
    if m.incomplete {
        item.insert("incomplete".to_owned(), AttributeValue::Bool(true));
    }
    Ok(item)
}

fn session_item(owner: Owner, session: &NewSession, message_count: u64, updated_ms: u64) -> Item {
    let pk = user_pk(owner);
    let mut item = Item::from([
        ("pk".to_owned(), s(&pk)),
        ("sk".to_owned(), s(&format!("SESSION#{}", session.session_id))),
        ("gsi1pk".to_owned(), s(&pk)),
        ("gsi1sk".to_owned(), s(&activity_key(updated_ms, session.session_id))),
        ("type".to_owned(), s("session")),
        ("session_id".to_owned(), s(session.session_id)),
        ("title".to_owned(), s(session.title)),
        ("created_at".to_owned(), n(session.now_ms)),
        ("updated_at".to_owned(), n(updated_ms)),
        ("message_count".to_owned(), n(message_count)),
        ("expires_at".to_owned(), n(session.expires_at)),
    ]);
    if session.auto_title {
        item.insert("title_auto".to_owned(), AttributeValue::Bool(true));
    }
    item
}

fn document_from(item: &Item) -> StoreResult<Document> {
    let text = |name: &str| string(item, name).map(str::to_owned);
    let corrupt = || StoreError::Corrupt("document");
    Ok(Document {
        document_id: text("document_id").ok_or_else(corrupt)?,
        filename: text("filename").unwrap_or_default(),
        content_type: text("content_type").unwrap_or_default(),
        size_bytes: number(item, "size_bytes").unwrap_or(0),
        status: string(item, "status").and_then(Status::parse).ok_or_else(corrupt)?,
        error: text("error"),
        chunks: number(item, "chunks"),
        embedded_chunks: number(item, "embedded_chunks"),
        created_at: rfc3339(number(item, "created_at").unwrap_or(0)),
        updated_at: rfc3339(number(item, "updated_at").unwrap_or(0)),
        key: text("key").unwrap_or_default(),
        etag: text("etag"),
        metadata: match item.get("metadata") {
            Some(AttributeValue::M(map)) => {
                Some(map.iter().filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone()))).collect())
            }
            _ => None,
        },
    })
}

/// A failed write: `ConditionFailed` when DynamoDB says so (directly, or as the reason a
/// transaction was cancelled), else a service error.
fn write_error<E>(
    action: &'static str,
    err: aws_sdk_dynamodb::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if err.code() == Some("ConditionalCheckFailedException") {
        StoreError::ConditionFailed { action }
    } else {
        service_error(action, err)
    }
}

// ------------------------------------------------------------------ history

#[async_trait]
impl HistoryStore for DynamoTable {
    async fn create_session(&self, owner: Owner<'_>, session: NewSession<'_>) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(session_item(owner, &session, 0, session.now_ms)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| write_error("create session", e))?;
        Ok(())
    }

    async fn session(&self, owner: Owner<'_>, session_id: &str) -> StoreResult<Option<Session>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(owner)))
            .key("sk", s(&format!("SESSION#{session_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("read session", e))?;
        output.item.as_ref().map(session_from).transpose()
    }

    async fn sessions(&self, owner: Owner<'_>, limit: i32, cursor: Option<&str>) -> StoreResult<Page<Session>> {
        let pk = user_pk(owner);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SESSIONS_INDEX)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            let (activity, id) = session_cursor(&decode_cursor(cursor)?)?;
            query = query
                .exclusive_start_key("gsi1pk", s(&pk))
                .exclusive_start_key("gsi1sk", s(&activity))
                .exclusive_start_key("pk", s(&pk))
                .exclusive_start_key("sk", s(&format!("SESSION#{id}")));
        }
        let output = query.send().await.map_err(|e| service_error("list sessions", e))?;
        let items = output.items().iter().map(session_from).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = output.last_evaluated_key().map(|key| {
            let activity = string(key, "gsi1sk").unwrap_or_default();
            let id = string(key, "sk").unwrap_or_default().trim_start_matches("SESSION#");
            encode_cursor(&format!("{activity}|{id}"))
        });
        Ok(Page { items, next_cursor })
    }

    async fn append(
        &self,
        owner: Owner<'_>,
        session: SessionWrite<'_>,
        message: StoredMessage<'_>,
        turn: TurnWrite<'_>,
    ) -> StoreResult<Appended> {
        let corrupt = |_| StoreError::Corrupt("transaction item");
        let (session_id, session_write) = match session {
            SessionWrite::Existing(id) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(&user_pk(owner)))
                    .key("sk", s(&format!("SESSION#{id}")))
                    .update_expression(
                        "SET updated_at = :now, gsi1sk = :activity, expires_at = :exp ADD message_count :one",
                    )
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":now", n(message.now_ms))
                    .expression_attribute_values(":activity", s(&activity_key(message.now_ms, id)))
                    .expression_attribute_values(":exp", n(message.expires_at))
                    .expression_attribute_values(":one", n(1))
                    .build()
                    .map_err(corrupt)?;
                (id, TransactWriteItem::builder().update(update).build())
            }
            SessionWrite::New(new) => {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(session_item(owner, &new, 1, message.now_ms)))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(corrupt)?;
                (new.session_id, TransactWriteItem::builder().put(put).build())
            }
        };
        let put_message = Put::builder()
            .table_name(&self.table)
            .set_item(Some(message_item(owner, session_id, &message)?))
            .build()
            .map_err(corrupt)?;
        let turn_write = match turn {
            TurnWrite::None => None,
            TurnWrite::Claim { key, lease_until, expires_at } => {
                let item = Item::from([
                    ("pk".to_owned(), s(&user_pk(owner))),
                    ("sk".to_owned(), s(&format!("TURN#{key}"))),
                    ("type".to_owned(), s("turn")),
                    ("session_id".to_owned(), s(session_id)),
                    ("message_id".to_owned(), s(message.message_id)),
                    ("lease_until".to_owned(), n(lease_until)),
                    ("expires_at".to_owned(), n(expires_at)),
                ]);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                    .expression_attribute_values(":now", n(message.now_ms / 1000))
                    .build()
                    .map_err(corrupt)?;
                Some(TransactWriteItem::builder().put(put).build())
            }
            // Unconditional: the reply is stored even if the record expired meanwhile (which
            // then lives for a day more).
            TurnWrite::Answer { key } => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(&user_pk(owner)))
                    .key("sk", s(&format!("TURN#{key}")))
                    .update_expression(
                        "SET reply_id = :reply, lease_until = :zero, expires_at = if_not_exists(expires_at, :exp)",
                    )
                    .expression_attribute_values(":reply", s(message.message_id))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":exp", n(message.now_ms / 1000 + 86_400))
                    .build()
                    .map_err(corrupt)?;
                Some(TransactWriteItem::builder().update(update).build())
            }
        };
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_message).build())
            .transact_items(session_write);
        if let Some(turn_write) = turn_write {
            write = write.transact_items(turn_write);
        }
        let result = write.send().await;
        let Err(e) = result else { return Ok(Appended::Stored) };
        // A cancelled transaction says why per item, in order: a failed condition on the
        // session means it is gone (or, for a new one, its id is taken); on the turn, that
        // the turn is a retry.
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        let failed: Vec<bool> = match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
                t.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect()
            }
            _ => Vec::new(),
        };
        match failed.as_slice() {
            [_, true, ..] => Err(StoreError::ConditionFailed { action: "store message" }),
            [_, _, true] => Ok(Appended::Retry),
            _ => Err(service_error("store message", e)),
        }
    }

    async fn turn(&self, owner: Owner<'_>, key: &str) -> StoreResult<Option<TurnRecord>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(owner)))
            .key("sk", s(&format!("TURN#{key}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("read turn", e))?;
        let Some(item) = output.item else { return Ok(None) };
        if number(&item, "expires_at").is_none_or(|at| at < crate::ids::now_ms() / 1000) {
            return Ok(None);
        }
        let corrupt = || StoreError::Corrupt("turn");
        Ok(Some(TurnRecord {
            session_id: string(&item, "session_id").ok_or_else(corrupt)?.to_owned(),
            message_id: string(&item, "message_id").ok_or_else(corrupt)?.to_owned(),
            reply_id: string(&item, "reply_id").map(str::to_owned),
            lease_until: number(&item, "lease_until").unwrap_or(0),
        }))
    }

    async fn move_lease(&self, owner: Owner<'_>, key: &str, from: u64, to: u64) -> StoreResult<bool> {
        let result = self
            .update(user_pk(owner), format!("TURN#{key}"))
            .update_expression("SET lease_until = :to")
            .condition_expression("lease_until = :from AND attribute_not_exists(reply_id)")
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":to", n(to))
            .send()
            .await;
        match result.map_err(|e| write_error("move a turn's lease", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn message(&self, owner: Owner<'_>, session_id: &str, message_id: &str) -> StoreResult<Option<Message>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&session_pk(owner, session_id)))
            .key("sk", s(&format!("MSG#{message_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("read message", e))?;
        output.item.as_ref().map(message_from).transpose()
    }

    async fn messages(
        &self,
        owner: Owner<'_>,
        session_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>> {
        let pk = session_pk(owner, session_id);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :msg)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":msg", s("MSG#"))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            let id = cursor_id(&decode_cursor(cursor)?)?;
            query = query.exclusive_start_key("pk", s(&pk)).exclusive_start_key("sk", s(&format!("MSG#{id}")));
        }
        let output = query.send().await.map_err(|e| service_error("read messages", e))?;
        let items = output.items().iter().map(message_from).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = output
            .last_evaluated_key()
            .and_then(|key| string(key, "sk"))
            .map(|sk| encode_cursor(sk.trim_start_matches("MSG#")));
        Ok(Page { items, next_cursor })
    }

    async fn delete_session(&self, owner: Owner<'_>, session_id: &str) -> StoreResult<()> {
        // Messages first: if this fails half-way, the session still lists and can be deleted again.
        let pk = session_pk(owner, session_id);
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| service_error("list messages to delete", e))?;
            for batch in output.items().chunks(25) {
                self.delete_batch(batch).await?;
            }
            match output.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(owner)))
            .key("sk", s(&format!("SESSION#{session_id}")))
            .send()
            .await
            .map_err(|e| service_error("delete session", e))?;
        Ok(())
    }
    async fn rename_session(&self, owner: Owner<'_>, session_id: &str, title: &str, by: Renamer) -> StoreResult<bool> {
        let update = self
            .update(user_pk(owner), format!("SESSION#{session_id}"))
            .expression_attribute_values(":title", s(title));
        let update = match by {
            Renamer::Auto => update
                .update_expression("SET title = :title")
                .condition_expression("title_auto = :yes")
                .expression_attribute_values(":yes", AttributeValue::Bool(true)),
            Renamer::User => update
                .update_expression("SET title = :title REMOVE title_auto")
                .condition_expression("attribute_exists(pk)"),
        };
        match update.send().await.map_err(|e| write_error("rename session", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) if by == Renamer::Auto => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn set_feedback(
        &self,
        owner: Owner<'_>,
        session_id: &str,
        message_id: &str,
        feedback: &Feedback,
        previous: Option<&Feedback>,
    ) -> StoreResult<()> {
        let mut set = vec!["feedback_rating = :rating", "feedback_at = :at"];
        let mut remove = Vec::new();
        let mut values: Item = HashMap::from([
            (":rating".to_owned(), s(feedback.rating.as_str())),
            (":at".to_owned(), n(feedback.at_ms)),
            (":assistant".to_owned(), s("assistant")),
        ]);
        match feedback.reason {
            Some(reason) => {
                set.push("feedback_reason = :reason");
                values.insert(":reason".into(), s(reason.as_str()));
            }
            None => remove.push("feedback_reason"),
        }
        match &feedback.comment {
            Some(comment) => {
                set.push("feedback_comment = :comment");
                values.insert(":comment".into(), s(comment));
            }
            None => remove.push("feedback_comment"),
        }
        let condition = match previous {
            Some(previous) => {
                values.insert(":previous".into(), n(previous.at_ms));
                "attribute_exists(pk) AND #role = :assistant AND feedback_at = :previous"
            }
            None => "attribute_exists(pk) AND #role = :assistant AND attribute_not_exists(feedback_at)",
        };
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let message = Update::builder()
            .table_name(&self.table)
            .key("pk", s(&session_pk(owner, session_id)))
            .key("sk", s(&format!("MSG#{message_id}")))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#role", "role")
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|_| StoreError::Corrupt("feedback"))?;
        // The counters move from the previous feedback (on its day) to this one (on its day).
        let mut deltas: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
            std::collections::BTreeMap::new();
        let (day, names) = feedback_counters(feedback);
        for name in names {
            *deltas.entry(day.clone()).or_default().entry(name).or_default() += 1;
        }
        if let Some(previous) = previous {
            let (day, names) = feedback_counters(previous);
            for name in names {
                *deltas.entry(day.clone()).or_default().entry(name).or_default() -= 1;
            }
        }
        let mut write =
            self.client.transact_write_items().transact_items(TransactWriteItem::builder().update(message).build());
        for (day, counts) in deltas {
            let counts: Vec<(String, i64)> = counts.into_iter().filter(|(_, d)| *d != 0).collect();
            if counts.is_empty() {
                continue;
            }
            let mut update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(&usage_pk(owner.tenant, None)))
                .key("sk", s(&format!("FEEDBACK#{day}")));
            let mut adds = Vec::new();
            for (i, (name, delta)) in counts.iter().enumerate() {
                adds.push(format!("#c{i} :c{i}"));
                update = update
                    .expression_attribute_names(format!("#c{i}"), name)
                    .expression_attribute_values(format!(":c{i}"), AttributeValue::N(delta.to_string()));
            }
            let update = update
                .update_expression(format!("ADD {}", adds.join(", ")))
                .build()
                .map_err(|_| StoreError::Corrupt("feedback counters"))?;
            write = write.transact_items(TransactWriteItem::builder().update(update).build());
        }
        let Err(e) = write.send().await else { return Ok(()) };
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(t))
                if t.cancellation_reasons().first().and_then(|r| r.code()) == Some("ConditionalCheckFailed") =>
            {
                Err(StoreError::ConditionFailed { action: "rate a reply" })
            }
            _ => Err(service_error("rate a reply", e)),
        }
    }
}

// ------------------------------------------------------------------ documents

#[async_trait]
impl DocumentStore for DynamoTable {
    async fn create(&self, scope: &Scope, doc: &NewDocument<'_>, now_ms: u64, expires_at: u64) -> StoreResult<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&scope_pk(scope)))
            .item("sk", s(&document_sk(doc.document_id)))
            .item("type", s("document"))
            .item("document_id", s(doc.document_id))
            .item("filename", s(doc.filename))
            .item("content_type", s(doc.kind.content_type()))
            .item("size_bytes", n(doc.size_bytes))
            .item("key", s(doc.key))
            .item("status", s(Status::Pending.as_str()))
            .item("uploaded_by", s(doc.uploaded_by))
            .item("created_at", n(now_ms))
            .item("updated_at", n(now_ms))
            .item("expires_at", n(expires_at))
            .item("gsi1pk", s(UNFINISHED))
            .item("gsi1sk", s(&unfinished_sk(now_ms, scope, doc.document_id)));
        if let Some(metadata) = doc.metadata.filter(|m| !m.is_empty()) {
            let map = metadata.iter().map(|(k, v)| (k.clone(), s(v))).collect();
            put = put.item("metadata", AttributeValue::M(map));
        }
        put.condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| write_error("create document", e))?;
        Ok(())
    }

    async fn upsert(&self, scope: &Scope, doc: &NewDocument<'_>, now_ms: u64) -> StoreResult<()> {
        self.update(scope_pk(scope), document_sk(doc.document_id))
            .update_expression(
                "SET #type = :type, document_id = :id, filename = :filename, content_type = :ct, size_bytes = :size, \
                 #key = :key, created_at = if_not_exists(created_at, :now), updated_at = :now, #status = if_not_exists(#status, :pending)",
            )
            .expression_attribute_names("#type", "type")
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":type", s("document"))
            .expression_attribute_values(":id", s(doc.document_id))
            .expression_attribute_values(":filename", s(doc.filename))
            .expression_attribute_values(":ct", s(doc.kind.content_type()))
            .expression_attribute_values(":size", n(doc.size_bytes))
            .expression_attribute_values(":key", s(doc.key))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .send()
            .await
            .map_err(|e| service_error("record shared doc", e))?;
        Ok(())
    }

    async fn list(&self, scope: &Scope, limit: i32, cursor: Option<&str>) -> StoreResult<Page<Document>> {
        let pk = scope_pk(scope);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :doc)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":doc", s("DOC#"))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            query =
                query.exclusive_start_key("pk", s(&pk)).exclusive_start_key("sk", s(&document_sk(&cursor_id(cursor)?)));
        }
        let output = query.send().await.map_err(|e| service_error("list documents", e))?;
        let items = output.items().iter().map(document_from).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = output
            .last_evaluated_key()
            .and_then(|k| string(k, "sk"))
            .map(|sk| sk.trim_start_matches("DOC#").to_owned());
        Ok(Page { items, next_cursor })
    }

    async fn get(&self, scope: &Scope, id: &str) -> StoreResult<Option<Document>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&scope_pk(scope)))
            .key("sk", s(&document_sk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("read document", e))?;
        output.item.as_ref().map(document_from).transpose()
    }

    async fn start_processing(&self, scope: &Scope, id: &str, etag: &str, now_ms: u64) -> StoreResult<()> {
        self.update(scope_pk(scope), document_sk(id))
            // The upload arrived: the record no longer expires.
            .update_expression(
                "SET #status = :processing, updated_at = :now, gsi1pk = :open, gsi1sk = :open_sk \
                 REMOVE #error, expires_at",
            )
            .expression_attribute_values(":open", s(UNFINISHED))
            .expression_attribute_values(":open_sk", s(&unfinished_sk(now_ms, scope, id)))
            .condition_expression("attribute_exists(pk) AND NOT (#status = :ready AND etag = :etag)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":processing", s(Status::Processing.as_str()))
            .expression_attribute_values(":ready", s(Status::Ready.as_str()))
            .expression_attribute_values(":etag", s(etag))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await
            .map_err(|e| write_error("mark processing", e))?;
        Ok(())
    }

    async fn finish(&self, scope: &Scope, id: &str, finished: Finished<'_>, now_ms: u64) -> StoreResult<()> {
        // Never over a `ready` one: every re-ingest marks the record `processing` first, so
        // a record already `ready` here was finished by a newer ingest of the same key.
        let update = self
            .update(scope_pk(scope), document_sk(id))
            .condition_expression("attribute_exists(pk) AND #status <> :ready_status")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":ready_status", s(Status::Ready.as_str()))
            .expression_attribute_values(":now", n(now_ms));
        let update = match finished {
            Finished::Ready { chunks, etag, size_bytes, embedded_chunks } => {
                let set =
                    "SET #status = :status, chunks = :chunks, etag = :etag, size_bytes = :size, updated_at = :now";
                let update = match embedded_chunks {
                    Some(done) => update
                        .update_expression(format!("{set}, embedded_chunks = :embedded REMOVE #error, gsi1pk, gsi1sk"))
                        .expression_attribute_values(":embedded", n(done)),
                    None => update.update_expression(format!("{set} REMOVE #error, embedded_chunks, gsi1pk, gsi1sk")),
                };
                update
                    .expression_attribute_values(":status", s(Status::Ready.as_str()))
                    .expression_attribute_values(":chunks", n(chunks))
                    .expression_attribute_values(":etag", s(etag))
                    .expression_attribute_values(":size", n(size_bytes))
            }
            Finished::Failed { reason } => update
                .update_expression(
                    "SET #status = :status, #error = :error, updated_at = :now \
                     REMOVE chunks, etag, embedded_chunks, gsi1pk, gsi1sk",
                )
                .expression_attribute_values(":status", s(Status::Failed.as_str()))
                .expression_attribute_values(":error", s(reason)),
        };
        update.send().await.map_err(|e| write_error("update document status", e))?;
        Ok(())
    }

    async fn embedding_progress(&self, scope: &Scope, id: &str, etag: &str, done: u64, now_ms: u64) -> StoreResult<()> {
        self.update(scope_pk(scope), document_sk(id))
            .condition_expression("attribute_exists(pk) AND etag = :etag AND #status = :ready_status")
            .update_expression("SET embedded_chunks = :done, updated_at = :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":etag", s(etag))
            .expression_attribute_values(":ready_status", s(Status::Ready.as_str()))
            .expression_attribute_values(":done", n(done))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await
            .map_err(|e| write_error("record embedding progress", e))?;
        Ok(())
    }

    async fn delete(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&scope_pk(scope)))
            .key("sk", s(&document_sk(id)))
            .send()
            .await
            .map_err(|e| service_error("delete document record", e))?;
        Ok(())
    }

    async fn unfinished(&self, before_ms: u64, limit: i32) -> StoreResult<Vec<(Scope, Document)>> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SESSIONS_INDEX)
            .key_condition_expression("gsi1pk = :open AND gsi1sk < :before")
            .expression_attribute_values(":open", s(UNFINISHED))
            .expression_attribute_values(":before", s(&format!("{before_ms:013}")))
            .limit(limit)
            .send()
            .await
            .map_err(|e| service_error("list unfinished documents", e))?;
        output
            .items()
            .iter()
            .map(|item| {
                let scope = string(item, "pk").and_then(scope_from_pk).ok_or(StoreError::Corrupt("document"))?;
                Ok((scope, document_from(item)?))
            })
            .collect()
    }
}

// ------------------------------------------------------------------ counters and health

#[async_trait]
impl Counters for DynamoTable {
    async fn take(&self, counter: Counter<'_>, window_start: u64, limit: u64, expires_at: u64) -> StoreResult<bool> {
        let result = self
            .update(counter_pk(counter), format!("WINDOW#{window_start}"))
            .update_expression("ADD #count :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":expires", n(expires_at))
            .send()
            .await;
        match result.map_err(|e| write_error("count request", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn give_back(&self, counter: Counter<'_>, window_start: u64) -> StoreResult<()> {
        let result = self
            .update(counter_pk(counter), format!("WINDOW#{window_start}"))
            .update_expression("ADD #count :minus_one")
            .condition_expression("#count > :zero")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result.map_err(|e| write_error("give back a count", e)) {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl AnswerCache for DynamoTable {
    async fn cached(&self, tenant: &str, key: &str, now_secs: u64) -> StoreResult<Option<String>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&answers_pk(tenant)))
            .key("sk", s(&format!("QA#{key}")))
            .send()
            .await
            .map_err(|e| service_error("read a kept answer", e))?;
        let Some(item) = output.item else { return Ok(None) };
        // TTL deletes late: an expired item is no answer.
        if number(&item, "expires_at").is_none_or(|at| at <= now_secs) {
            return Ok(None);
        }
        Ok(Some(string(&item, "answer").ok_or(StoreError::Corrupt("kept answer"))?.to_owned()))
    }

    async fn keep(&self, tenant: &str, key: &str, answer: &str, expires_at: u64) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&answers_pk(tenant)))
            .item("sk", s(&format!("QA#{key}")))
            .item("answer", s(answer))
            .item("expires_at", n(expires_at))
            .send()
            .await
            .map_err(|e| service_error("keep an answer", e))?;
        Ok(())
    }
}

#[async_trait]
impl UsageLedger for DynamoTable {
    async fn add(&self, entry: &UsageEntry<'_>) -> StoreResult<()> {
        let c = entry.counts;
        let add = |pk: String, sk: String, expires_at: Option<u64>| {
            let update = self
                .update(pk, sk)
                .expression_attribute_values(":i", n(c.input_tokens))
                .expression_attribute_values(":o", n(c.output_tokens))
                .expression_attribute_values(":c", n(c.cost_nanos))
                .expression_attribute_values(":r", n(c.requests));
            let update = match expires_at {
                Some(at) => update
                    .update_expression(
                        "ADD input_tokens :i, output_tokens :o, cost_nanos :c, requests :r SET expires_at = :e",
                    )
                    .expression_attribute_values(":e", n(at)),
                None => update.update_expression("ADD input_tokens :i, output_tokens :o, cost_nanos :c, requests :r"),
            };
            async move { update.send().await.map(|_| ()).map_err(|e| service_error("add usage", e)) }
        };
        let day = format!("DAY#{}#{}", entry.day, key_part(entry.model));
        let month = format!("MONTH#{}", entry.month);
        let mut writes = vec![
            add(usage_pk(entry.tenant, None), day.clone(), Some(entry.day_expires_at)),
            add(usage_pk(entry.tenant, None), month.clone(), None),
        ];
        if let Some(user) = entry.user {
            writes.push(add(usage_pk(entry.tenant, Some(user)), day, Some(entry.day_expires_at)));
            writes.push(add(usage_pk(entry.tenant, Some(user)), month, None));
        }
        futures_util::future::try_join_all(writes).await.map(|_| ())
    }

    async fn month(&self, tenant: &str, user: Option<&str>, month: &str) -> StoreResult<UsageCounts> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&usage_pk(tenant, user)))
            .key("sk", s(&format!("MONTH#{month}")))
            .send()
            .await
            .map_err(|e| service_error("read usage", e))?;
        Ok(output.item.as_ref().map(usage_counts).unwrap_or_default())
    }

    async fn feedback(&self, tenant: &str, from: &str, to: &str) -> StoreResult<FeedbackCounts> {
        let mut counts = FeedbackCounts::default();
        // Counters go up and down; a count never shows below zero.
        let count = |item: &Item, name: &str| {
            item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(0) as u64
        };
        let (first, last) = (format!("FEEDBACK#{from}"), format!("FEEDBACK#{to}"));
        for item in self.range(&usage_pk(tenant, None), &first, &last, "read feedback").await? {
            counts.up += count(&item, "up");
            counts.down += count(&item, "down");
            for reason in FeedbackReason::ALL {
                let n = count(&item, &format!("reason_{}", reason.as_str()));
                if n > 0 {
                    *counts.reasons.entry(reason.as_str().to_owned()).or_default() += n;
                }
            }
        }
        Ok(counts)
    }

    async fn days(&self, tenant: &str, user: Option<&str>, from: &str, to: &str) -> StoreResult<Vec<DayUsage>> {
        // `$` sorts after `#`: every model of the last day.
        let (first, last) = (format!("DAY#{from}#"), format!("DAY#{to}$"));
        let items = self.range(&usage_pk(tenant, user), &first, &last, "read usage").await?;
        items
            .iter()
            .map(|item| {
                let sk = string(item, "sk").ok_or(StoreError::Corrupt("usage"))?;
                let (day, model) = sk
                    .strip_prefix("DAY#")
                    .and_then(|rest| rest.split_once('#'))
                    .ok_or(StoreError::Corrupt("usage"))?;
                let model = model.replace("%23", "#").replace("%25", "%");
                Ok(DayUsage { day: day.to_owned(), model, counts: usage_counts(item) })
            })
            .collect()
    }
}

impl DynamoTable {
    /// Every item of partition `pk` with a sort key from `first` to `last`, page after page.
    async fn range(&self, pk: &str, first: &str, last: &str, action: &'static str) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":first", s(first))
                .expression_attribute_values(":last", s(last))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| service_error(action, e))?;
            items.extend(output.items().iter().cloned());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

fn audit_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}#AUDIT")
}

#[async_trait]
impl AuditLog for DynamoTable {
    async fn claim(&self, tenant: &str, key: &str, until: u64, now: u64) -> StoreResult<bool> {
        // Beside the events' partition, not in it; expired claims are also removed by TTL.
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("{}#CLAIMS", audit_pk(tenant))))
            .item("sk", s(key))
            .item("expires_at", n(until))
            .condition_expression("attribute_not_exists(sk) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now));
        match put.send().await.map_err(|e| write_error("claim audit minute", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn append(&self, event: &AuditRecord, expires_at: u64) -> StoreResult<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&audit_pk(&event.tenant)))
            .item("sk", s(&format!("EVENT#{}", event.event_id)))
            .item("event_id", s(&event.event_id))
            .item("actor", s(&event.actor))
            .item("operation", s(&event.operation))
            .item("outcome", s(&event.outcome))
            .item("request_id", s(&event.request_id))
            .item("expires_at", n(expires_at))
            .condition_expression("attribute_not_exists(sk)");
        if let Some(resource) = &event.resource {
            put = put.item("resource", s(resource));
        }
        put.send().await.map_err(|e| write_error("append audit event", e))?;
        Ok(())
    }

    async fn events(
        &self,
        tenant: &str,
        from_id: &str,
        to_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<AuditRecord>> {
        let pk = audit_pk(tenant);
        let start = match cursor {
            Some(cursor) => {
                let id = cursor_id(&decode_cursor(cursor)?)?;
                // DynamoDB refuses a start key outside the key condition: a cursor from
                // another range is the caller's mistake, not a storage failure.
                if id.as_str() < from_id || id.as_str() > to_id {
                    return Err(StoreError::BadCursor("the cursor does not belong to this range"));
                }
                Some(Item::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(&format!("EVENT#{id}")))]))
            }
            None => None,
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":from", s(&format!("EVENT#{from_id}")))
            .expression_attribute_values(":to", s(&format!("EVENT#{to_id}")))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| service_error("read audit events", e))?;
        let corrupt = || StoreError::Corrupt("audit event");
        let items = output
            .items()
            .iter()
            .map(|item| {
                Ok(AuditRecord {
                    event_id: string(item, "event_id").ok_or_else(corrupt)?.to_owned(),
                    tenant: tenant.to_owned(),
                    actor: string(item, "actor").ok_or_else(corrupt)?.to_owned(),
                    operation: string(item, "operation").ok_or_else(corrupt)?.to_owned(),
                    resource: string(item, "resource").map(str::to_owned),
                    outcome: string(item, "outcome").ok_or_else(corrupt)?.to_owned(),
                    request_id: string(item, "request_id").unwrap_or_default().to_owned(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = match (&output.last_evaluated_key, items.last()) {
            (Some(key), Some(last)) if !key.is_empty() => Some(encode_cursor(&last.event_id)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}

fn streams_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}#STREAMS")
}

#[async_trait]
impl StreamSlots for DynamoTable {
    async fn slots(&self, tenant: &str, now_ms: u64) -> StoreResult<Vec<u32>> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&streams_pk(tenant)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("read stream slots", e))?;
        Ok(output
            .items()
            .iter()
            .filter(|item| number(item, "until").is_some_and(|until| until > now_ms))
            .filter_map(|item| string(item, "sk")?.strip_prefix("SLOT#")?.parse().ok())
            .collect())
    }

    async fn take_slot(
        &self,
        tenant: &str,
        number: u32,
        holder: &str,
        until_ms: u64,
        now_ms: u64,
    ) -> StoreResult<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&streams_pk(tenant)))
            .item("sk", s(&format!("SLOT#{number:04}")))
            .item("holder", s(holder))
            .item("until", n(until_ms))
            .item("expires_at", n(until_ms.div_ceil(1000)))
            .condition_expression("attribute_not_exists(sk) OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(now_ms));
        match put.send().await.map_err(|e| write_error("take a stream slot", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn free_slot(&self, tenant: &str, number: u32, holder: &str) -> StoreResult<()> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&streams_pk(tenant)))
            .key("sk", s(&format!("SLOT#{number:04}")))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder));
        match delete.send().await.map_err(|e| write_error("give a stream slot back", e)) {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn api_key_pk(id: &str) -> String {
    format!("APIKEY#{id}")
}

fn api_keys_of(tenant: &str) -> String {
    format!("TENANT#{tenant}#APIKEYS")
}

fn api_key_from(item: &Item) -> StoreResult<StoredApiKey> {
    let corrupt = || StoreError::Corrupt("API key");
    let text = |name: &str| string(item, name).map(str::to_owned).ok_or_else(corrupt);
    let roles = item.get("roles").and_then(|v| v.as_l().ok()).ok_or_else(corrupt)?;
    Ok(StoredApiKey {
        id: text("key_id")?,
        tenant: text("tenant")?,
        name: text("name")?,
        roles: roles.iter().filter_map(|r| r.as_s().ok().cloned()).collect(),
        hash: text("hash")?,
        created_ms: number(item, "created_at").ok_or_else(corrupt)?,
        created_by: text("created_by")?,
        expires_ms: number(item, "expires_at").map(|secs| secs * 1000),
        last_used_ms: number(item, "last_used"),
    })
}

#[async_trait]
impl ApiKeyStore for DynamoTable {
    async fn create_key(&self, key: &StoredApiKey) -> StoreResult<()> {
        let roles = AttributeValue::L(key.roles.iter().map(|r| s(r)).collect());
        // An expiring key's expiry is the table's TTL attribute: DynamoDB removes it later.
        let expires = key.expires_ms.map(|ms| n(ms.div_ceil(1000)));
        self.client
            .put_item()
            .set_item(Some(expires.into_iter().map(|at| ("expires_at".to_owned(), at)).collect()))
            .table_name(&self.table)
            .item("pk", s(&api_key_pk(&key.id)))
            .item("sk", s("APIKEY"))
            .item("gsi1pk", s(&api_keys_of(&key.tenant)))
            .item("gsi1sk", s(&format!("{:013}#{}", key.created_ms, key.id)))
            .item("type", s("api_key"))
            .item("key_id", s(&key.id))
            .item("tenant", s(&key.tenant))
            .item("name", s(&key.name))
            .item("roles", roles)
            .item("hash", s(&key.hash))
            .item("created_at", n(key.created_ms))
            .item("created_by", s(&key.created_by))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| write_error("create API key", e))?;
        Ok(())
    }

    async fn key(&self, id: &str) -> StoreResult<Option<StoredApiKey>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&api_key_pk(id)))
            .key("sk", s("APIKEY"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service_error("read API key", e))?;
        output.item.as_ref().map(api_key_from).transpose()
    }

    async fn keys(&self, tenant: &str) -> StoreResult<Vec<StoredApiKey>> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(SESSIONS_INDEX)
                .key_condition_expression("gsi1pk = :pk")
                .expression_attribute_values(":pk", s(&api_keys_of(tenant)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| service_error("list API keys", e))?;
            for item in output.items() {
                keys.push(api_key_from(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(keys),
            }
        }
    }

    async fn touch_key(&self, id: &str, now_ms: u64, since_ms: u64) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&api_key_pk(id)))
            .key("sk", s("APIKEY"))
            .update_expression("SET last_used = :now")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(last_used) OR last_used < :since)")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":since", n(since_ms))
            .send()
            .await;
        match result.map_err(|e| write_error("record API key use", e)) {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_key(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&api_key_pk(id)))
            .key("sk", s("APIKEY"))
            .condition_expression("tenant = :tenant")
            .expression_attribute_values(":tenant", s(tenant))
            .send()
            .await;
        match result.map_err(|e| write_error("revoke API key", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Probe for DynamoTable {
    fn component(&self) -> &'static str {
        "dynamodb"
    }

    async fn check(&self) -> Result<(), Failure> {
        use aws_sdk_dynamodb::types::TableStatus;
        let output = self.client.describe_table().table_name(&self.table).send().await.map_err(|e| classify(&e))?;
        match output.table().and_then(|t| t.table_status()) {
            // A table being updated still serves reads and writes.
            Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
            _ => Err(Failure::Failed),
        }
    }
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
        let handed_out = encode_cursor(&format!("{activity}|{id}"));
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
