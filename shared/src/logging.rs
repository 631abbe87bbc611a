//! Structured JSON logs for CloudWatch, one object per line.
//!
//! The Lambda runtime opens a span per invocation carrying `requestId`; the current span is
//! printed with every event, so each log line can be tied to its request. The level comes
//! from `RUST_LOG` (full `EnvFilter` syntax), else from Lambda's `AWS_LAMBDA_LOG_LEVEL`,
//! else `info`. What to log is the caller's concern: never tokens, secrets or message text.

use tracing_subscriber::EnvFilter;

/// Noisy dependencies are kept at `warn` unless `RUST_LOG` says otherwise.
const QUIET_DEPENDENCIES: &str = "aws_config=warn,aws_smithy_runtime=warn,hyper=warn,rustls=warn";

/// Installs the global JSON subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = std::env::var("RUST_LOG").ok().and_then(|spec| EnvFilter::try_new(spec).ok()).unwrap_or_else(|| {
        let level =
            std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_ascii_lowercase()).unwrap_or_else(|_| "info".to_owned());
        EnvFilter::try_new(format!("{level},{QUIET_DEPENDENCIES}"))
            .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_DEPENDENCIES}")))
    });
    // `try_init` so that a second call (tests) is harmless.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(true)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .try_init();
}
