//! SQS for the tests and `coach-dev`: moving a dead-letter queue's messages back to the
//! queue ingest consumes (what `aws sqs start-message-move-task` does on AWS), and handing
//! a queue's messages to the ingest function as Lambda's SQS poller would.

use serde_json::json;

use crate::stack::ingest_deadline;

/// Moves every message of `from` to `to` (sent, then deleted), a batch at a time; returns
/// how many moved.
pub async fn move_messages(sqs: &aws_sdk_sqs::Client, from: &str, to: &str) -> Result<usize, String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let mut moved = 0;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| failed("receive", &aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for message in messages {
            let body = message.body.unwrap_or_default();
            sqs.send_message()
                .queue_url(to)
                .message_body(body)
                .send()
                .await
                .map_err(|e| failed("send", &aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            sqs.delete_message()
                .queue_url(from)
                .receipt_handle(message.receipt_handle.unwrap_or_default())
                .send()
                .await
                .map_err(|e| failed("delete", &aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            moved += 1;
        }
    }
}

/// Hands each message of `queue` to the ingest function, one SQS event each, and deletes
/// it once handled (asserting that ingest did not report it failed); returns how many.
pub async fn deliver(sqs: &aws_sdk_sqs::Client, ingest: &ingest::State, queue: &str) -> usize {
    let received = sqs.receive_message().queue_url(queue).max_number_of_messages(10).send().await.unwrap();
    let messages = received.messages.unwrap_or_default();
    for message in &messages {
        let event = json!({"Records": [{
            "messageId": message.message_id.clone().unwrap(),
            "receiptHandle": message.receipt_handle.clone().unwrap(),
            "body": message.body.clone().unwrap(),
            "attributes": {}, "messageAttributes": {},
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1"
        }]});
        let reply = ingest::handle(ingest, event, ingest_deadline()).await.unwrap();
        assert_eq!(reply["batchItemFailures"], json!([]), "the message was handled");
        sqs.delete_message()
            .queue_url(queue)
            .receipt_handle(message.receipt_handle.clone().unwrap())
            .send()
            .await
            .unwrap();
    }
    messages.len()
}
