//! Lambda entry point for the ingest function: build its state once, then handle S3 events
//! (directly from S3 or wrapped in SQS).

#![recursion_limit = "256"]

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    coach::logging::init();
    let state = ingest::State::from_env().await.inspect_err(|err| {
        tracing::error!(error = %err, "cold start failed");
    })?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let state = &state;
        async move { ingest::handle(state, event.payload).await.map_err(Error::from) }
    }))
    .await
}
