//! Document records and their ingest status ([`DocumentStore`]).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    keys::{
        cursor_id, document_sk, scope_from_pk, scope_pk, unfinished_before, unfinished_sk, DOCUMENT_PREFIX, UNFINISHED,
    },
    n, number, s, string, write_error, DynamoTable, Item, SESSIONS_INDEX,
};
use crate::{
    ids::rfc3339,
    model::{Document, Finished, NewDocument, Page, Scope, Status},
    store::{aws::service_error, DocumentStore, StoreError, StoreResult},
};

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
        access: match item.get("access") {
            Some(AttributeValue::L(groups)) => Some(groups.iter().filter_map(|g| g.as_s().ok().cloned()).collect()),
            _ => None,
        },
        access_rev: number(item, "access_rev").unwrap_or(0),
    })
}

/// A document's groups as stored: a list of strings.
fn groups(groups: &[String]) -> AttributeValue {
    AttributeValue::L(groups.iter().map(|g| s(g)).collect())
}

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
        if let Some(access) = doc.access {
            put = put.item("access", groups(access));
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
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :doc)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":doc", s(DOCUMENT_PREFIX))
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
            .map(|sk| sk.trim_start_matches(DOCUMENT_PREFIX).to_owned());
        Ok(Page { items, next_cursor })
    }

    async fn get(&self, scope: &Scope, id: &str) -> StoreResult<Option<Document>> {
        let item = self.item(&scope_pk(scope), &document_sk(id), true, "read document").await?;
        item.as_ref().map(document_from).transpose()
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

    async fn set_access(
        &self,
        scope: &Scope,
        id: &str,
        access: Option<&[String]>,
        rev: u64,
        now_ms: u64,
    ) -> StoreResult<()> {
        let update = self.update(scope_pk(scope), document_sk(id));
        // Revision 0 is a record whose access never changed: it has no `access_rev` yet.
        let update = match rev {
            0 => update.condition_expression("attribute_exists(pk) AND attribute_not_exists(access_rev)"),
            _ => update
                .condition_expression("attribute_exists(pk) AND access_rev = :rev")
                .expression_attribute_values(":rev", n(rev)),
        };
        let update =
            update.expression_attribute_values(":next", n(rev + 1)).expression_attribute_values(":now", n(now_ms));
        let update = match access {
            Some(access) => update
                .update_expression("SET access = :access, access_rev = :next, updated_at = :now")
                .expression_attribute_values(":access", groups(access)),
            None => update.update_expression("SET access_rev = :next, updated_at = :now REMOVE access"),
        };
        update.send().await.map_err(|e| write_error("change document access", e))?;
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
            .query()
            .index_name(SESSIONS_INDEX)
            .key_condition_expression("gsi1pk = :open AND gsi1sk < :before")
            .expression_attribute_values(":open", s(UNFINISHED))
            .expression_attribute_values(":before", s(&unfinished_before(before_ms)))
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
