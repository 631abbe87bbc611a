//! Lambda entry point for the ingest function (S3 ObjectCreated/ObjectRemoved events).
//!
//! The ingestion pipeline (extract, chunk, embed, index, status) arrives with the documents
//! work (issue 5). Until then each event is refused with an error, so nothing is marked as
//! processed that was not.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    coach::logging::init();
    coach::config::Config::from_env().inspect_err(|err| tracing::error!(error = %err, "cold start failed"))?;
    lambda_runtime::run(service_fn(|_event: LambdaEvent<Value>| async {
        Err::<(), Error>("document ingestion is not available in this build".into())
    }))
    .await
}
