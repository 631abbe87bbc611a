//! Lambda entry point for `chat-stream`: `POST /chat/stream` with response streaming
//! (Function URL, `InvokeMode: RESPONSE_STREAM`). Builds its state once, then streams.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    coach::logging::init();
    let state = Arc::new(chat::stream::StreamState::from_env().await.inspect_err(|err| {
        tracing::error!(error = %err, "cold start failed");
    })?);
    lambda_http::run_with_streaming_response(service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Error>(chat::stream::handle(state, req).await) }
    }))
    .await
}
