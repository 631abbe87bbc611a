//! Lambda entry point for the upload-url function: build its state once, then serve requests.

#![recursion_limit = "256"]

use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    coach::logging::init();
    let state = upload_url::State::from_env().await.inspect_err(|err| {
        tracing::error!(error = %err, "cold start failed");
    })?;
    lambda_http::run(service_fn(|req| async { Ok::<_, Error>(upload_url::handle(&state, req).await) })).await
}
