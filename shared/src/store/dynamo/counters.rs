//! Short-lived counters and claims: request windows ([`Counters`]), stream slots
//! ([`StreamSlots`]) and kept answers ([`AnswerCache`]).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    keys::{answer_sk, answers_pk, counter_pk, slot_number, slot_sk, streams_pk, window_sk},
    n, number, s, string, written, DynamoTable,
};
use crate::store::{aws::service_error, AnswerCache, Counter, Counters, StoreError, StoreResult, StreamSlots};

#[async_trait]
impl Counters for DynamoTable {
    async fn take(&self, counter: Counter<'_>, window_start: u64, limit: u64, expires_at: u64) -> StoreResult<bool> {
        let result = self
            .update(counter_pk(counter), window_sk(window_start))
            .update_expression("ADD #count :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":expires", n(expires_at))
            .send()
            .await;
        written("count request", result)
    }

    async fn give_back(&self, counter: Counter<'_>, window_start: u64) -> StoreResult<()> {
        let result = self
            .update(counter_pk(counter), window_sk(window_start))
            .update_expression("ADD #count :minus_one")
            .condition_expression("#count > :zero")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        // A counter at zero or gone stays as it is.
        written("give back a count", result).map(|_| ())
    }
}

#[async_trait]
impl AnswerCache for DynamoTable {
    async fn cached(&self, tenant: &str, key: &str, now_secs: u64) -> StoreResult<Option<String>> {
        let item = self.item(&answers_pk(tenant), &answer_sk(key), false, "read a kept answer").await?;
        let Some(item) = item else { return Ok(None) };
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
            .item("sk", s(&answer_sk(key)))
            .item("answer", s(answer))
            .item("expires_at", n(expires_at))
            .send()
            .await
            .map_err(|e| service_error("keep an answer", e))?;
        Ok(())
    }
}

#[async_trait]
impl StreamSlots for DynamoTable {
    async fn slots(&self, tenant: &str, now_ms: u64) -> StoreResult<Vec<u32>> {
        let output = self
            .query()
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
            .filter_map(|item| slot_number(string(item, "sk")?))
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
            .item("sk", s(&slot_sk(number)))
            .item("holder", s(holder))
            .item("until", n(until_ms))
            .item("expires_at", n(until_ms.div_ceil(1000)))
            .condition_expression("attribute_not_exists(sk) OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(now_ms));
        written("take a stream slot", put.send().await)
    }

    async fn free_slot(&self, tenant: &str, number: u32, holder: &str) -> StoreResult<()> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&streams_pk(tenant)))
            .key("sk", s(&slot_sk(number)))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder));
        // Another holder's slot (this one's lapsed and was taken) is left alone.
        written("give a stream slot back", delete.send().await).map(|_| ())
    }
}
