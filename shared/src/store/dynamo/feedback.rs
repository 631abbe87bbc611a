//! Feedback on replies ([`FeedbackStore`]): the message's feedback attributes and the
//! tenant's daily counters, written in one transaction. The counters are read back by the
//! usage ledger ([`super::usage`]).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use super::{
    failed_conditions,
    keys::{feedback_sk, message_sk, session_pk, usage_pk},
    n, s, DynamoTable, Item,
};
use crate::{
    model::{Feedback, Owner},
    store::{aws::service_error, CounterChange, FeedbackCounter, FeedbackStore, StoreError, StoreResult},
};

/// The attribute of a counter on its day's item.
pub(super) fn counter_attribute(counter: FeedbackCounter) -> String {
    match counter {
        FeedbackCounter::Rating(rating) => rating.as_str().to_owned(),
        FeedbackCounter::Reason(reason) => format!("reason_{}", reason.as_str()),
    }
}

/// The update of the message's feedback attributes, on the condition that its feedback is
/// still `previous`.
fn message_update(
    table: &DynamoTable,
    owner: Owner,
    session_id: &str,
    message_id: &str,
    feedback: &Feedback,
    previous: Option<&Feedback>,
) -> StoreResult<Update> {
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
    Update::builder()
        .table_name(&table.table)
        .key("pk", s(&session_pk(owner, session_id)))
        .key("sk", s(&message_sk(message_id)))
        .update_expression(expression)
        .condition_expression(condition)
        .expression_attribute_names("#role", "role")
        .set_expression_attribute_values(Some(values))
        .build()
        .map_err(|e| StoreError::build("rate a reply", e))
}

/// One update per day of `counters`, adding each change to its counter.
fn counter_updates(table: &DynamoTable, tenant: &str, counters: &[CounterChange]) -> StoreResult<Vec<Update>> {
    let mut days: Vec<&str> = counters.iter().map(|c| c.day.as_str()).collect();
    days.sort_unstable();
    days.dedup();
    days.into_iter()
        .map(|day| {
            let mut update = Update::builder()
                .table_name(&table.table)
                .key("pk", s(&usage_pk(tenant, None)))
                .key("sk", s(&feedback_sk(day)));
            let mut adds = Vec::new();
            for (i, change) in counters.iter().filter(|c| c.day == day).enumerate() {
                adds.push(format!("#c{i} :c{i}"));
                update = update
                    .expression_attribute_names(format!("#c{i}"), counter_attribute(change.counter))
                    .expression_attribute_values(format!(":c{i}"), AttributeValue::N(change.delta.to_string()));
            }
            update
                .update_expression(format!("ADD {}", adds.join(", ")))
                .build()
                .map_err(|e| StoreError::build("count feedback", e))
        })
        .collect()
}

#[async_trait]
impl FeedbackStore for DynamoTable {
    async fn set_feedback(
        &self,
        owner: Owner<'_>,
        session_id: &str,
        message_id: &str,
        feedback: &Feedback,
        previous: Option<&Feedback>,
        counters: &[CounterChange],
    ) -> StoreResult<()> {
        let message = message_update(self, owner, session_id, message_id, feedback, previous)?;
        let mut write =
            self.client.transact_write_items().transact_items(TransactWriteItem::builder().update(message).build());
        for update in counter_updates(self, owner.tenant, counters)? {
            write = write.transact_items(TransactWriteItem::builder().update(update).build());
        }
        let Err(e) = write.send().await else { return Ok(()) };
        match failed_conditions(&e).first() {
            Some(true) => Err(StoreError::ConditionFailed { action: "rate a reply" }),
            _ => Err(service_error("rate a reply", e)),
        }
    }
}
