//! Dependency checks behind `GET /health`: can this function reach its stores (the S3
//! bucket, the DynamoDB table) right now? Every [`Probe`] runs concurrently, each bounded by
//! the store's own timeout. This module reports; shaping the HTTP response is the
//! function's job.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use serde::Serialize;

use crate::store::{Failure, Probe};

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

/// The dependencies to check. Build once per cold start.
pub struct Health {
    probes: Vec<Arc<dyn Probe>>,
}

impl Health {
    pub fn new(probes: Vec<Arc<dyn Probe>>) -> Self {
        Self { probes }
    }

    /// Checks every dependency concurrently.
    pub async fn check(&self) -> Report {
        let checks = self.probes.iter().map(|probe| async move {
            let started = Instant::now();
            let outcome = probe.check().await;
            (probe.component(), component(probe.component(), started, outcome))
        });
        let components: BTreeMap<_, _> = futures_util::future::join_all(checks).await.into_iter().collect();
        let status =
            if components.values().all(|c| c.status == Status::Healthy) { Status::Healthy } else { Status::Degraded };
        Report { status, components }
    }
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
