//! Amazon SQS as the job queue: follow-up work the ingest function queues for itself.

use async_trait::async_trait;

use super::{aws::service_error, JobQueue, StoreError, StoreResult};
use crate::model::Job;

/// One SQS queue, by URL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, job: &Job) -> StoreResult<()> {
        self.send_later(job, std::time::Duration::ZERO).await
    }

    async fn send_later(&self, job: &Job, delay: std::time::Duration) -> StoreResult<()> {
        // The message body is the job as JSON, tagged by its `job` field.
        let body =
            serde_json::to_string(job).map_err(|e| StoreError::internal_from("a job cannot be written as JSON", e))?;
        // SQS delays a message by at most 15 minutes.
        let delay = delay.as_secs().min(900) as i32;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .set_delay_seconds((delay > 0).then_some(delay))
            .send()
            .await
            .map_err(|e| service_error("queue a job", e))?;
        Ok(())
    }
}
