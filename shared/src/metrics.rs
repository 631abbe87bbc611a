//! Metrics as CloudWatch Embedded Metric Format (EMF) documents.
//!
//! Each metric event is one JSON document on a line of its own in the function's output,
//! which CloudWatch Logs turns into metrics in the `Coach` namespace: no API call on the
//! request path, no agent. They travel as `tracing` events of target [`TARGET`], which
//! [`crate::logging`] writes out as they are, whatever the log level.
//!
//! | metric | unit | dimensions |
//! | --- | --- | --- |
//! | `Requests`, `Latency` | Count, Milliseconds | `Function`, `Route` (a template: ids become `{id}`), `Status` |
//! | `ModelCalls`, `ModelLatency`, `InputTokens`, `OutputTokens` | Count, Milliseconds, Count, Count | `Model`, `Outcome` (`ok`, `error`) |
//! | `RetrievalLatency`, `Passages` | Milliseconds, Count | - |
//! | `IngestDocuments` | Count | `Outcome` (`indexed`, `embedding`, `failed`, `removed`, `skipped`, `queued`, `error`) |
//! | `RateLimited` | Count | `Reason` (`limit`, `throttled`) |
//!
//! Dimensions hold no user data: never a user, tenant, session or document id, never text.

use std::time::Duration;

use serde_json::{json, Map, Value};

/// The `tracing` target of metric events.
pub const TARGET: &str = "coach::metrics";
/// The CloudWatch namespace.
pub const NAMESPACE: &str = "Coach";

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF document at `timestamp_ms`: the metrics `values` under `dimensions`.
pub fn document(timestamp_ms: u64, dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) -> String {
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let metrics: Vec<Value> =
        values.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()})).collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [names], "Metrics": metrics}],
        }),
    );
    for (name, value) in dimensions {
        doc.insert((*name).into(), Value::from(*value));
    }
    for (name, value, _) in values {
        doc.insert((*name).into(), json!(value));
    }
    Value::Object(doc).to_string()
}

/// Emits one EMF document (see [`document`]).
pub fn emit(dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) {
    tracing::info!(target: TARGET, emf = %document(crate::ids::now_ms(), dimensions, values));
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// An HTTP request (`method`, `path`) answered by `function` with `status`; its route is
/// [`route_template`]'s.
pub fn request(function: &str, method: &str, path: &str, status: u16, elapsed: Duration) {
    let (route, status) = (route_template(method, path), status.to_string());
    emit(
        &[("Function", function), ("Route", &route), ("Status", &status)],
        &[("Requests", 1.0, Unit::Count), ("Latency", millis(elapsed), Unit::Milliseconds)],
    );
}

/// One call to a language model, with its token counts when it answered.
pub fn model_call(model: &str, ok: bool, elapsed: Duration, tokens: Option<(u64, u64)>) {
    let outcome = if ok { "ok" } else { "error" };
    let mut values = vec![("ModelCalls", 1.0, Unit::Count), ("ModelLatency", millis(elapsed), Unit::Milliseconds)];
    if let Some((input, output)) = tokens {
        values.push(("InputTokens", input as f64, Unit::Count));
        values.push(("OutputTokens", output as f64, Unit::Count));
    }
    emit(&[("Model", model), ("Outcome", outcome)], &values);
}

/// A guardrail intervened in a model call (its message answered instead of the model's).
pub fn guardrail_intervened(model: &str) {
    emit(&[("Model", model)], &[("GuardrailInterventions", 1.0, Unit::Count)]);
}

/// One retrieval, and how many passages it found.
pub fn retrieval(elapsed: Duration, passages: usize) {
    emit(&[], &[("RetrievalLatency", millis(elapsed), Unit::Milliseconds), ("Passages", passages as f64, Unit::Count)]);
}

/// One document event handled by ingest, by outcome.
pub fn ingest(outcome: &str) {
    emit(&[("Outcome", outcome)], &[("IngestDocuments", 1.0, Unit::Count)]);
}

/// One request refused by the rate limiter: a full window (`limit`) or throttled counters.
pub fn rate_limited(reason: &str) {
    emit(&[("Reason", reason)], &[("RateLimited", 1.0, Unit::Count)]);
}

/// A model or embedding call whose usage could not be recorded in the ledger.
pub fn usage_unrecorded() {
    emit(&[], &[("UsageUnrecorded", 1.0, Unit::Count)]);
}

/// A route's template for the `Route` dimension: the method, then the path with every
/// segment that is not one of Coach's route words replaced by `{id}`, so ids (and any path a
/// caller invents) never become dimensions of their own; past 5 segments, `other`.
pub fn route_template(method: &str, path: &str) -> String {
    const WORDS: [&str; 20] = [
        "api-keys",
        "audit",
        "feedback",
        "health",
        "usage",
        "live",
        "ready",
        "me",
        "chat",
        "qa",
        "summarize",
        "mindmap",
        "stream",
        "sessions",
        "messages",
        "uploads",
        "documents",
        "reembed",
        "docs",
        "refresh",
    ];
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() > 5 {
        return format!("{method} other");
    }
    let path: Vec<&str> = segments.iter().map(|s| if WORDS.contains(s) { *s } else { "{id}" }).collect();
    format!("{method} /{}", path.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_embedded_metric_format() {
        let doc: Value = serde_json::from_str(&document(
            1_700_000_000_000,
            &[("Function", "chat"), ("Status", "200")],
            &[("Requests", 1.0, Unit::Count), ("Latency", 12.5, Unit::Milliseconds)],
        ))
        .unwrap();
        let aws = &doc["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000u64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Coach");
        assert_eq!(directive["Dimensions"], json!([["Function", "Status"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "Requests", "Unit": "Count"}, {"Name": "Latency", "Unit": "Milliseconds"}])
        );
        assert_eq!(doc["Function"], "chat");
        assert_eq!(doc["Status"], "200");
        assert_eq!(doc["Requests"], 1.0);
        assert_eq!(doc["Latency"], 12.5);
    }

    #[test]
    fn routes_are_templates_without_ids() {
        assert_eq!(
            route_template("GET", "/sessions/01JD3Q7Z8X4K2M9N5P6R7S8T9V/messages"),
            "GET /sessions/{id}/messages"
        );
        assert_eq!(route_template("POST", "/chat"), "POST /chat");
        assert_eq!(route_template("POST", "/chat/stream/"), "POST /chat/stream");
        assert_eq!(route_template("GET", "/"), "GET /");
        assert_eq!(route_template("GET", "/health/live"), "GET /health/live");
        assert_eq!(route_template("GET", "/wp-admin/setup.php"), "GET /{id}/{id}");
        assert_eq!(
            route_template("PUT", "/sessions/01J/messages/01K/feedback"),
            "PUT /sessions/{id}/messages/{id}/feedback"
        );
        assert_eq!(route_template("GET", "/a/b/c/d/e/f"), "GET other");
    }
}
