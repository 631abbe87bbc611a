//! Ingest events as they arrive from Lambda: an S3 notification or an SQS batch whose bodies
//! are S3 notifications. Any bytes decode to records or an error, never a panic.
#![no_main]

use aws_lambda_events::sqs::SqsEvent;
use coach::ingest::{decode_key, ObjectEvent, S3Notification};
use libfuzzer_sys::fuzz_target;

fn records(notification: &S3Notification) {
    for record in &notification.records {
        if let Some(event) = ObjectEvent::from_record(record) {
            let raw = record.s3.object.key.as_deref().unwrap_or_default();
            assert_eq!(event.key.is_empty(), raw.is_empty(), "a key decoded to nothing");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(notification) = serde_json::from_slice::<S3Notification>(data) {
        records(&notification);
    }
    if let Ok(batch) = serde_json::from_slice::<SqsEvent>(data) {
        for message in &batch.records {
            if let Some(body) = message.body.as_deref() {
                if let Ok(notification) = serde_json::from_str::<S3Notification>(body) {
                    records(&notification);
                }
            }
        }
    }
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = decode_key(raw);
    }
});
