//! Dependency checks behind `GET /health`: can this function reach its S3 bucket and its
//! DynamoDB table right now? Both checks run concurrently, each bounded by the SDK timeout
//! from [`Config`]. This module reports; shaping the HTTP response is the function's job.

use std::{collections::BTreeMap, time::Instant};

use serde::Serialize;

use crate::{
    aws::{classify, AwsClients, Failure},
    config::Config,
};

/// Status of Coach or of one of its components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
}

/// The outcome of one dependency check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    pub status: Status,
    pub latency_ms: u64,
    /// Why the component is degraded; absent when healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Failure>,
}

/// The health of every dependency, keyed by component name (`s3`, `dynamodb`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: Status,
    pub components: BTreeMap<&'static str, Component>,
}

impl Report {
    /// Names of the degraded components, in order.
    pub fn degraded(&self) -> Vec<&'static str> {
        self.components.iter().filter(|(_, c)| c.status == Status::Degraded).map(|(name, _)| *name).collect()
    }
}

/// Checks the bucket (`HeadBucket`) and the table (`DescribeTable`) concurrently.
pub async fn check(aws: &AwsClients, config: &Config) -> Report {
    let (s3, dynamodb) = tokio::join!(check_s3(aws, config), check_dynamodb(aws, config));
    let components = BTreeMap::from([("s3", s3), ("dynamodb", dynamodb)]);
    let status =
        if components.values().all(|c| c.status == Status::Healthy) { Status::Healthy } else { Status::Degraded };
    Report { status, components }
}

async fn check_s3(aws: &AwsClients, config: &Config) -> Component {
    let started = Instant::now();
    let result = aws.s3.head_bucket().bucket(&config.bucket).send().await;
    component("s3", started, result.map(|_| ()).map_err(|e| classify(&e)))
}

async fn check_dynamodb(aws: &AwsClients, config: &Config) -> Component {
    let started = Instant::now();
    let result = aws.dynamodb.describe_table().table_name(&config.table).send().await;
    let outcome = match result {
        Ok(out) => {
            use aws_sdk_dynamodb::types::TableStatus;
            match out.table().and_then(|t| t.table_status()) {
                // A table being updated still serves reads and writes.
                Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
                _ => Err(Failure::Failed),
            }
        }
        Err(e) => Err(classify(&e)),
    };
    component("dynamodb", started, outcome)
}

fn component(name: &'static str, started: Instant, outcome: Result<(), Failure>) -> Component {
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(()) => Component { status: Status::Healthy, latency_ms, reason: None },
        Err(reason) => {
            tracing::warn!(component = name, ?reason, latency_ms, "health check failed");
            Component { status: Status::Degraded, latency_ms, reason: Some(reason) }
        }
    }
}
