//! The log for people: compact lines on a terminal (`make dev`), chosen by
//! `COACH_LOG_FORMAT=text` (or `auto` with a terminal on standard output).
//!
//! - one line a request, from its `Requests` metric: the function, method and route, status,
//!   time and the invocation's request id;
//! - Coach's events at the filter's level (`info` by default): time, level, function, message
//!   and fields, scrubbed as the JSON lines are ([`Privacy`]), with the request id;
//! - at `debug` (`RUST_LOG=debug`), also each span as it closes (`aws_call`, `model_call`,
//!   `embedding`, `retrieval`: their fields and time) and the other metric documents.
//!
//! The JSON lines of Lambda are [`super::subscriber_with`]'s other format, unchanged.

use std::{io::Write, sync::Arc};

use serde_json::{Map, Value};
use tracing::{
    field::{Field, Visit},
    span::{Attributes, Id, Record},
    Event, Level, Subscriber,
};
use tracing_subscriber::{fmt::MakeWriter, layer::Context, registry::LookupSpan, Layer};

use super::privacy::Privacy;
use crate::metrics;

/// The layer writing the lines for people.
pub(super) struct Human<W> {
    writer: W,
    privacy: Arc<Privacy>,
    /// The function (`AWS_LAMBDA_FUNCTION_NAME`), on every line.
    function: String,
    /// Spans as they close, and every metric: at `debug`.
    detail: bool,
    /// Levels in colour (a terminal, without `NO_COLOR`).
    ansi: bool,
}

impl<W> Human<W> {
    pub(super) fn new(writer: W, privacy: Arc<Privacy>, function: String, detail: bool, ansi: bool) -> Self {
        Self { writer, privacy, function, detail, ansi }
    }
}

/// A span's fields, kept in its extensions as they are recorded.
struct Fields(Map<String, Value>);

/// The invocation's request id, kept on the span that carries it (the runtime's).
struct RequestId(String);

/// Collects fields as JSON values (`message` apart).
#[derive(Default)]
struct Collect {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl Collect {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl<W> Human<W> {
    fn level(&self, level: Level) -> String {
        let (name, colour) = match level {
            Level::ERROR => ("ERROR", "\x1b[1;31m"),
            Level::WARN => ("WARN ", "\x1b[33m"),
            Level::INFO => ("INFO ", "\x1b[32m"),
            Level::DEBUG => ("DEBUG", "\x1b[2m"),
            Level::TRACE => ("TRACE", "\x1b[2m"),
        };
        if self.ansi {
            format!("{colour}{name}\x1b[0m")
        } else {
            name.to_owned()
        }
    }

    /// `fields` as ` name=value` pairs, scrubbed; text in quotes when it has spaces.
    fn fields(&self, fields: Map<String, Value>) -> String {
        let mut value = Value::Object(fields);
        self.privacy.scrub_value(&mut value);
        let Value::Object(fields) = value else { return String::new() };
        let mut out = String::new();
        for (name, value) in fields {
            let text = match value {
                Value::String(text) if text.is_empty() || text.contains(char::is_whitespace) => format!("{text:?}"),
                Value::String(text) => text,
                other => other.to_string(),
            };
            out.push_str(&format!(" {name}={text}"));
        }
        out
    }
}

/// The time of day (UTC) to the millisecond.
fn clock() -> String {
    let stamp = crate::ids::rfc3339(crate::ids::now_ms());
    stamp.get(11..23).unwrap_or(&stamp).to_owned()
}

/// A request id, short: its first eight characters say which request well enough on a screen.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

impl<S, W> Layer<S> for Human<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut collected = Collect::default();
        attrs.record(&mut collected);
        let mut extensions = span.extensions_mut();
        if let Some(Value::String(request)) = collected.fields.get("requestId") {
            extensions.insert(RequestId(request.clone()));
        }
        if self.detail {
            extensions.insert(Fields(collected.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if !self.detail {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut collected = Collect::default();
        values.record(&mut collected);
        let mut extensions = span.extensions_mut();
        if let Some(Fields(fields)) = extensions.get_mut::<Fields>() {
            fields.extend(collected.fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let request = ctx
            .event_scope(event)
            .and_then(|scope| scope.from_root().find_map(|s| s.extensions().get::<RequestId>().map(|r| r.0.clone())));
        let request = request.map(|r| format!("  req={}", short(&r))).unwrap_or_default();
        let mut collected = Collect::default();
        event.record(&mut collected);
        let line = if event.metadata().target() == metrics::TARGET {
            let Some(Value::String(document)) = collected.fields.get("emf") else { return };
            let Ok(document) = serde_json::from_str::<Value>(document) else { return };
            if document.get("Requests").is_some() {
                let text = |name: &str| document.get(name).and_then(Value::as_str).unwrap_or("-").to_owned();
                let ms = document.get("Latency").and_then(Value::as_f64).unwrap_or(0.0);
                let status = text("Status");
                let level = if status.starts_with('5') { Level::ERROR } else { Level::INFO };
                format!(
                    "{} {} {}  {}  {status}  {ms:.0} ms{request}\n",
                    clock(),
                    self.level(level),
                    self.function,
                    text("Route")
                )
            } else if self.detail {
                format!("{} {} {}  metric {document}\n", clock(), self.level(Level::DEBUG), self.function)
            } else {
                return;
            }
        } else {
            let message = collected.message.take().unwrap_or_default();
            let fields = self.fields(collected.fields);
            let level = self.level(*event.metadata().level());
            format!("{} {level} {}  {}{fields}{request}\n", clock(), self.function, self.privacy.scrub_text(&message))
        };
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if !self.detail {
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        let fields = span.extensions_mut().remove::<Fields>().map(|f| f.0).unwrap_or_default();
        let line = format!(
            "{} {} {}  {} done{}\n",
            clock(),
            self.level(Level::DEBUG),
            self.function,
            span.name(),
            self.fields(fields)
        );
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }
}
