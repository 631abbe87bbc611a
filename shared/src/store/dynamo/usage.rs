//! The usage ledger ([`UsageLedger`]): day-and-model counters and month totals per tenant and
//! user, and the feedback counters' read side.

use async_trait::async_trait;

use super::{
    feedback::counter_attribute,
    keys::{day_model_surface, day_range, day_sk, feedback_sk, month_sk, usage_pk},
    n, number, string, DynamoTable, Item,
};
use crate::{
    model::{DayUsage, FeedbackCounts, FeedbackReason, Rating, UsageCounts},
    store::{aws::service_error, FeedbackCounter, StoreError, StoreResult, UsageEntry, UsageLedger},
};

fn usage_counts(item: &Item) -> UsageCounts {
    UsageCounts {
        input_tokens: number(item, "input_tokens").unwrap_or(0),
        output_tokens: number(item, "output_tokens").unwrap_or(0),
        cost_nanos: number(item, "cost_nanos").unwrap_or(0),
        requests: number(item, "requests").unwrap_or(0),
    }
}

/// A feedback counter of a day's item. Counters go up and down; a count never shows below
/// zero.
fn count(item: &Item, counter: FeedbackCounter) -> u64 {
    let value = item.get(&counter_attribute(counter)).and_then(|v| v.as_n().ok());
    value.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(0) as u64
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
        let day = day_sk(entry.day, entry.model, entry.surface);
        let month = month_sk(entry.month);
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
        let item = self.item(&usage_pk(tenant, user), &month_sk(month), false, "read usage").await?;
        Ok(item.as_ref().map(usage_counts).unwrap_or_default())
    }

    async fn feedback(&self, tenant: &str, from: &str, to: &str) -> StoreResult<FeedbackCounts> {
        let mut counts = FeedbackCounts::default();
        let items = self.range(&usage_pk(tenant, None), &feedback_sk(from), &feedback_sk(to), "read feedback").await?;
        for item in items {
            counts.up += count(&item, FeedbackCounter::Rating(Rating::Up));
            counts.down += count(&item, FeedbackCounter::Rating(Rating::Down));
            for reason in FeedbackReason::ALL {
                let n = count(&item, FeedbackCounter::Reason(reason));
                if n > 0 {
                    *counts.reasons.entry(reason.as_str().to_owned()).or_default() += n;
                }
            }
        }
        Ok(counts)
    }

    async fn days(&self, tenant: &str, user: Option<&str>, from: &str, to: &str) -> StoreResult<Vec<DayUsage>> {
        let (first, last) = day_range(from, to);
        let items = self.range(&usage_pk(tenant, user), &first, &last, "read usage").await?;
        items
            .iter()
            .map(|item| {
                let sk = string(item, "sk").ok_or(StoreError::Corrupt("usage"))?;
                let (day, model, surface) = day_model_surface(sk).ok_or(StoreError::Corrupt("usage"))?;
                Ok(DayUsage { day, model, surface, counts: usage_counts(item) })
            })
            .collect()
    }
}
