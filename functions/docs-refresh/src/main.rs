//! Lambda entry point for docs-refresh: build its state once, then handle the schedule and
//! `POST /docs/refresh`.

#![recursion_limit = "256"]

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    coach::logging::init();
    let state = docs_refresh::State::from_env().await.inspect_err(|err| {
        tracing::error!(error = %err, "cold start failed");
    })?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let state = &state;
        async move { docs_refresh::handle(state, event.payload, event.context).await.map_err(Error::from) }
    }))
    .await
}
