//! Lambda entry point for the ingest function: build its state once, then handle S3 events
//! (directly from S3 or wrapped in SQS). Started with `--coach-extract`, the same binary is
//! the extraction child ([`coach::ingest::sandbox`]).

#![recursion_limit = "256"]

use coach::deadline::Deadline;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

fn main() -> Result<(), Error> {
    coach::ingest::sandbox::serve_if_child();
    run()
}

#[tokio::main]
async fn run() -> Result<(), Error> {
    coach::logging::init();
    let state = ingest::State::from_env().await.inspect_err(|err| {
        tracing::error!(error = %err, "cold start failed");
    })?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let state = &state;
        let deadline = Deadline::of_invocation(event.context.deadline);
        async move { ingest::handle(state, event.payload, deadline).await.map_err(Error::from) }
    }))
    .await
}
