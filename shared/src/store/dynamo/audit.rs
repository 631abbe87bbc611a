//! The audit log ([`AuditLog`]): a tenant's events, and the claims that keep one refusal a
//! minute.

use async_trait::async_trait;

use super::{
    keys::{audit_claims_pk, audit_pk, cursor_id, decode_cursor, encode_cursor, event_sk},
    n, s, string, write_error, written, DynamoTable, Item,
};
use crate::{
    model::Page,
    store::{aws::service_error, AuditLog, AuditRecord, StoreError, StoreResult},
};

fn record_from(tenant: &str, item: &Item) -> StoreResult<AuditRecord> {
    let corrupt = || StoreError::Corrupt("audit event");
    Ok(AuditRecord {
        event_id: string(item, "event_id").ok_or_else(corrupt)?.to_owned(),
        tenant: tenant.to_owned(),
        actor: string(item, "actor").ok_or_else(corrupt)?.to_owned(),
        operation: string(item, "operation").ok_or_else(corrupt)?.to_owned(),
        resource: string(item, "resource").map(str::to_owned),
        outcome: string(item, "outcome").ok_or_else(corrupt)?.to_owned(),
        request_id: string(item, "request_id").unwrap_or_default().to_owned(),
    })
}

#[async_trait]
impl AuditLog for DynamoTable {
    async fn claim(&self, tenant: &str, key: &str, until: u64, now: u64) -> StoreResult<bool> {
        // Expired claims are also removed by TTL.
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&audit_claims_pk(tenant)))
            .item("sk", s(key))
            .item("expires_at", n(until))
            .condition_expression("attribute_not_exists(sk) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now));
        written("claim audit minute", put.send().await)
    }

    async fn append(&self, event: &AuditRecord, expires_at: u64) -> StoreResult<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&audit_pk(&event.tenant)))
            .item("sk", s(&event_sk(&event.event_id)))
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
                Some(Item::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(&event_sk(&id)))]))
            }
            None => None,
        };
        let output = self
            .query()
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":from", s(&event_sk(from_id)))
            .expression_attribute_values(":to", s(&event_sk(to_id)))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| service_error("read audit events", e))?;
        let items = output.items().iter().map(|item| record_from(tenant, item)).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = match (&output.last_evaluated_key, items.last()) {
            (Some(key), Some(last)) if !key.is_empty() => Some(encode_cursor(&last.event_id)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}
