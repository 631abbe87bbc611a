//! The DynamoDB table: sessions, messages, turns, document records, counters, usage,
//! audit events, API keys and stream slots, one module per concern with its conversions
//! beside it; the key layout in [`keys`].
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
//! sessions, counters, turns, kept answers and document records still waiting for their
//! upload carry `expires_at` (TTL; reads and conditions check it too, as TTL deletes late).
//! No Scan anywhere: every read is a Query or a GetItem on one partition. Cursors are opaque
//! base64 of the last key read.

mod api_keys;
mod audit;
mod counters;
mod documents;
mod feedback;
mod keys;
mod sessions;
mod turns;
mod usage;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        query::builders::QueryFluentBuilder, transact_write_items::TransactWriteItemsError,
        update_item::builders::UpdateItemFluentBuilder,
    },
    types::{AttributeValue, DeleteRequest, WriteRequest},
};
use aws_smithy_runtime_api::http::Response;

use super::{
    aws::{classify, service_error},
    Failure, Probe, StoreError, StoreResult,
};

/// Name of the one secondary index (see template.yaml): a user's sessions by last activity,
/// the documents whose ingest is unfinished, a tenant's API keys.
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

    /// A query of the table (or its index, when the caller names it).
    fn query(&self) -> QueryFluentBuilder {
        self.client.query().table_name(&self.table)
    }

    /// One item; `consistent` for a strongly consistent read.
    async fn item(&self, pk: &str, sk: &str, consistent: bool, action: &'static str) -> StoreResult<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| service_error(action, e))?;
        Ok(output.item)
    }

    /// Every item `query` finds, page after page.
    async fn all(&self, query: QueryFluentBuilder, action: &'static str) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = query
                .clone()
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| service_error(action, e))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every item of partition `pk` with a sort key from `first` to `last`.
    async fn range(&self, pk: &str, first: &str, last: &str, action: &'static str) -> StoreResult<Vec<Item>> {
        let query = self
            .query()
            .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":first", s(first))
            .expression_attribute_values(":last", s(last));
        self.all(query, action).await
    }

    /// Deletes the items of `keys` (at most 25, BatchWriteItem's limit).
    async fn delete_batch(&self, keys: &[Item]) -> StoreResult<()> {
        let mut requests: Vec<WriteRequest> = keys
            .iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map_err(|e| StoreError::build("delete messages", e))?;
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

// ------------------------------------------------------------------ attributes and errors

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

fn flag(item: &Item, name: &str) -> bool {
    item.get(name).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false)
}

/// A failed write: `ConditionFailed` when DynamoDB says so, else a service error.
fn write_error<E>(action: &'static str, err: SdkError<E, Response>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if err.code() == Some("ConditionalCheckFailedException") {
        StoreError::ConditionFailed { action }
    } else {
        service_error(action, err)
    }
}

/// A conditional write's outcome: `true` when written, `false` when its condition failed.
fn written<T, E>(action: &'static str, result: Result<T, SdkError<E, Response>>) -> StoreResult<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result.map_err(|e| write_error(action, e)) {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// For each item of a cancelled transaction, in order, whether its condition failed (empty
/// when the transaction failed otherwise).
fn failed_conditions(err: &SdkError<TransactWriteItemsError, Response>) -> Vec<bool> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
            t.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect()
        }
        _ => Vec::new(),
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
