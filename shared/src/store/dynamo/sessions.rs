//! Sessions and their messages ([`HistoryStore`]).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::{
    failed_conditions, flag,
    keys::{
        activity_key, cursor_id, decode_cursor, encode_cursor, message_sk, next_session_cursor, session_cursor,
        session_pk, session_sk, user_pk, MESSAGE_PREFIX,
    },
    n, number, s, string, turns, write_error, DynamoTable, Item, SESSIONS_INDEX,
};
use crate::{
    ids::rfc3339,
    model::{Author, Feedback, FeedbackReason, Message, Owner, Page, Rating, Session, Usage},
    store::{
        aws::service_error, Appended, HistoryStore, NewSession, Renamer, SessionWrite, StoreError, StoreResult,
        StoredMessage, TurnWrite,
    },
};

fn session_from(item: &Item) -> StoreResult<Session> {
    let corrupt = || StoreError::Corrupt("session");
    Ok(Session {
        session_id: string(item, "session_id").ok_or_else(corrupt)?.to_owned(),
        title: string(item, "title").unwrap_or_default().to_owned(),
        created_at: rfc3339(number(item, "created_at").ok_or_else(corrupt)?),
        updated_at: rfc3339(number(item, "updated_at").ok_or_else(corrupt)?),
        message_count: number(item, "message_count").unwrap_or(0),
        auto_title: flag(item, "title_auto"),
    })
}

fn session_item(owner: Owner, session: &NewSession, message_count: u64, updated_ms: u64) -> Item {
    let pk = user_pk(owner);
    let mut item = Item::from([
        ("pk".to_owned(), s(&pk)),
        ("sk".to_owned(), s(&session_sk(session.session_id))),
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
        incomplete: flag(item, "incomplete"),
        created_at: rfc3339(number(item, "created_at").ok_or_else(corrupt)?),
        feedback,
    })
}

fn message_item(owner: Owner, session_id: &str, m: &StoredMessage) -> StoreResult<Item> {
    let mut item = Item::from([
        ("pk".to_owned(), s(&session_pk(owner, session_id))),
        ("sk".to_owned(), s(&message_sk(m.message_id))),
        ("type".to_owned(), s("message")),
        ("message_id".to_owned(), s(m.message_id)),
        ("role".to_owned(), s(m.role.as_str())),
        ("content".to_owned(), s(m.content)),
        ("created_at".to_owned(), n(m.now_ms)),
        ("expires_at".to_owned(), n(m.expires_at)),
    ]);
    if !m.sources.is_empty() {
        let json = serde_json::to_string(m.sources)
            .map_err(|e| StoreError::internal_from("a message's sources cannot be written as JSON", e))?;
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
        let item = self.item(&user_pk(owner), &session_sk(session_id), true, "read session").await?;
        item.as_ref().map(session_from).transpose()
    }

    async fn sessions(&self, owner: Owner<'_>, limit: i32, cursor: Option<&str>) -> StoreResult<Page<Session>> {
        let pk = user_pk(owner);
        let mut query = self
            .query()
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
                .exclusive_start_key("sk", s(&session_sk(&id)));
        }
        let output = query.send().await.map_err(|e| service_error("list sessions", e))?;
        let items = output.items().iter().map(session_from).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = output.last_evaluated_key().map(|key| {
            next_session_cursor(string(key, "gsi1sk").unwrap_or_default(), string(key, "sk").unwrap_or_default())
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
        let built = |e| StoreError::build("store message", e);
        let (session_id, session_write) = match session {
            SessionWrite::Existing(id) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(&user_pk(owner)))
                    .key("sk", s(&session_sk(id)))
                    .update_expression(
                        "SET updated_at = :now, gsi1sk = :activity, expires_at = :exp ADD message_count :one",
                    )
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":now", n(message.now_ms))
                    .expression_attribute_values(":activity", s(&activity_key(message.now_ms, id)))
                    .expression_attribute_values(":exp", n(message.expires_at))
                    .expression_attribute_values(":one", n(1))
                    .build()
                    .map_err(built)?;
                (id, TransactWriteItem::builder().update(update).build())
            }
            SessionWrite::New(new) => {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(session_item(owner, &new, 1, message.now_ms)))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(built)?;
                (new.session_id, TransactWriteItem::builder().put(put).build())
            }
        };
        let put_message = Put::builder()
            .table_name(&self.table)
            .set_item(Some(message_item(owner, session_id, &message)?))
            .build()
            .map_err(built)?;
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_message).build())
            .transact_items(session_write);
        if let Some(turn_write) = turns::write(self, owner, session_id, &message, turn)? {
            write = write.transact_items(turn_write);
        }
        let Err(e) = write.send().await else { return Ok(Appended::Stored) };
        // A cancelled transaction says why per item, in order: a failed condition on the
        // session means it is gone (or, for a new one, its id is taken); on the turn, that
        // the turn is a retry.
        match failed_conditions(&e).as_slice() {
            [_, true, ..] => Err(StoreError::ConditionFailed { action: "store message" }),
            [_, _, true] => Ok(Appended::Retry),
            _ => Err(service_error("store message", e)),
        }
    }

    async fn message(&self, owner: Owner<'_>, session_id: &str, message_id: &str) -> StoreResult<Option<Message>> {
        let item = self.item(&session_pk(owner, session_id), &message_sk(message_id), true, "read message").await?;
        item.as_ref().map(message_from).transpose()
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
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :msg)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":msg", s(MESSAGE_PREFIX))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            let id = cursor_id(&decode_cursor(cursor)?)?;
            query = query.exclusive_start_key("pk", s(&pk)).exclusive_start_key("sk", s(&message_sk(&id)));
        }
        let output = query.send().await.map_err(|e| service_error("read messages", e))?;
        let items = output.items().iter().map(message_from).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = output
            .last_evaluated_key()
            .and_then(|key| string(key, "sk"))
            .map(|sk| encode_cursor(sk.trim_start_matches(MESSAGE_PREFIX)));
        Ok(Page { items, next_cursor })
    }

    async fn delete_session(&self, owner: Owner<'_>, session_id: &str) -> StoreResult<()> {
        // Messages first: if this fails half-way, the session still lists and can be deleted again.
        let query = self
            .query()
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&session_pk(owner, session_id)))
            .projection_expression("pk, sk");
        let keys = self.all(query, "list messages to delete").await?;
        for batch in keys.chunks(25) {
            self.delete_batch(batch).await?;
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&user_pk(owner)))
            .key("sk", s(&session_sk(session_id)))
            .send()
            .await
            .map_err(|e| service_error("delete session", e))?;
        Ok(())
    }

    async fn rename_session(&self, owner: Owner<'_>, session_id: &str, title: &str, by: Renamer) -> StoreResult<bool> {
        let update =
            self.update(user_pk(owner), session_sk(session_id)).expression_attribute_values(":title", s(title));
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
}
