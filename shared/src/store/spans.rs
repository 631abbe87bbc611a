//! A span for each AWS call: every SDK client Coach builds carries [`CallSpans`], which opens
//! an `aws_call` span (service, operation) when an operation starts and records its HTTP
//! status, outcome and latency when it ends. The span is a child of whatever span is current
//! (the invocation's, with its request id), and the SDK adds the invocation's X-Ray trace
//! header (`_X_AMZN_TRACE_ID`) to the request itself. Nothing of the request's content is
//! recorded.

use std::time::Instant;

use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            context::{BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef},
            Intercept,
        },
        orchestrator::Metadata,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use tracing::field::Empty;

/// The SDK interceptor that makes the spans.
#[derive(Debug, Clone, Copy)]
pub struct CallSpans;

/// The span of the call in progress, kept in the call's configuration bag.
#[derive(Debug, Clone)]
struct Call {
    span: tracing::Span,
    started: Instant,
}

impl Storable for Call {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CallSpans {
    fn name(&self) -> &'static str {
        "CoachCallSpans"
    }

    // The first hook after the operation's configuration (its name) is in the bag.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let metadata = cfg.load::<Metadata>();
        let (service, operation) = metadata.map_or(("", ""), |m| (m.service(), m.name()));
        let span =
            tracing::info_span!("aws_call", service, operation, status = Empty, outcome = Empty, latency_ms = Empty);
        cfg.interceptor_state().store_put(Call { span, started: Instant::now() });
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(call) = cfg.load::<Call>() {
            if let Some(response) = context.response() {
                call.span.record("status", response.status().as_u16());
            }
            let ok = context.output_or_error().is_some_and(|r| r.is_ok());
            call.span.record("outcome", if ok { "ok" } else { "error" });
            call.span.record("latency_ms", call.started.elapsed().as_millis() as u64);
        }
        Ok(())
    }
}
