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
        // The message body is the job as JSON, tagged by its `job` field.
        let body = serde_json::to_string(job).map_err(|_| StoreError::Corrupt("job"))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| service_error("queue a job", e))?;
        Ok(())
    }
}
