//! Lambda entry point for the docs-refresh function (`POST /docs/refresh` and a schedule).
//!
//! Rebuilding the system prompt arrives with issue 7. Until then each invocation is
//! refused with an error, so no caller believes a refresh happened.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    coach::logging::init();
    coach::config::Config::from_env().inspect_err(|err| tracing::error!(error = %err, "cold start failed"))?;
    lambda_runtime::run(service_fn(|_event: LambdaEvent<Value>| async {
        Err::<(), Error>("the system prompt refresh is not available in this build".into())
    }))
    .await
}
