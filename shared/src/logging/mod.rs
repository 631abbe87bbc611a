//! Structured JSON logs for CloudWatch, one object per line; or, on a terminal, compact lines
//! for people ([`human`]).
//!
//! `COACH_LOG_FORMAT` chooses: `json` (what follows), `text` (the [`human`] lines), or `auto`
//! (the default): `text` when standard output is a terminal, else `json`, so a function on
//! Lambda always writes JSON.
//!
//! The Lambda runtime opens a span per invocation carrying `requestId` (and `xrayTraceId`);
//! every line carries its current span (`span`) and all the spans it is in, outermost first
//! (`spans`), so each line can be tied to its request. Coach's own spans (`aws_call`,
//! `model_call`, `embedding`, `retrieval`) are the trace of a request: each writes one
//! `close` line when it ends, with its fields (latency, outcome, tokens; never text) and
//! `time.busy`/`time.idle`. No exporter is needed; X-Ray's own trace comes from active
//! tracing (template.yaml). The level comes
//! from `RUST_LOG` (full `EnvFilter` syntax), else from Lambda's `AWS_LAMBDA_LOG_LEVEL`,
//! else `info`. What to log is the caller's concern: never tokens, secrets or message text.
//!
//! Whatever the level, the Lambda runtime's own crates log at `info` at most: at `debug` and
//! `trace` they print raw events and responses, `Authorization` header and bodies included.
//!
//! Metric events ([`crate::metrics`]) are written as they are (one EMF document a line),
//! whatever the level, and never as log lines.
//!
//! Every log line passes through [`privacy::Privacy`] (`COACH_LOG_PII`, `COACH_LOG_PII_KEY`):
//! people's ids and addresses hashed (or dropped), secrets and card or SSN-like numbers
//! redacted.

mod human;
pub mod privacy;

use std::io::{IsTerminal, Write};

use tracing::{field::Visit, Event, Subscriber};
use tracing_subscriber::{
    filter::{filter_fn, FilterExt, LevelFilter, Targets},
    fmt::MakeWriter,
    layer::{Context, SubscriberExt},
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

use crate::metrics;
use privacy::Privacy;

/// Noisy dependencies are kept at `warn` unless `RUST_LOG` says otherwise.
const QUIET_DEPENDENCIES: &str = "aws_config=warn,aws_smithy_runtime=warn,hyper=warn,rustls=warn";

/// Crates that print whole requests (headers and bodies) below `info`.
const RAW_EVENT_LOGGERS: [&str; 3] = ["lambda_runtime", "lambda_runtime_api_client", "lambda_http"];

/// Crates that print requests and responses, their bodies included, at `trace` (the AWS SDK's
/// HTTP layers and signer, hyper, h2, reqwest): held at `debug` whatever `RUST_LOG` says.
/// Each is a prefix of the targets it holds (`aws_smithy` holds `aws_smithy_runtime`, ...).
const BODY_LOGGERS: [&str; 6] = ["aws_smithy", "aws_sigv4", "aws_runtime", "hyper", "h2", "reqwest"];

/// How log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, and the EMF metric documents (Lambda, CloudWatch).
    Json,
    /// Compact lines for people ([`human`]): `function` on each, levels in colour with `ansi`.
    Text { function: String, ansi: bool },
}

impl LogFormat {
    /// `COACH_LOG_FORMAT` (`auto`, `json`, `text`), for output to a terminal when `terminal`;
    /// an unknown value is `auto`. The function is `AWS_LAMBDA_FUNCTION_NAME`'s.
    pub fn from_env(env: &crate::config::Env, terminal: bool) -> Self {
        let text = match env.text("COACH_LOG_FORMAT").to_ascii_lowercase().as_str() {
            "json" => false,
            "text" => true,
            _ => terminal,
        };
        if !text {
            return LogFormat::Json;
        }
        let function = env.string("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "coach".to_owned());
        LogFormat::Text { function, ansi: terminal && env.string("NO_COLOR").is_none() }
    }
}

/// Installs the global subscriber (see the module's description). Call once, first thing
/// in `main`.
pub fn init() {
    let env = crate::config::Env::process();
    let (spec, lambda_level) = (env.string("RUST_LOG"), env.string("AWS_LAMBDA_LOG_LEVEL"));
    let privacy = Privacy::from_vars(Some(&env.text("COACH_LOG_PII")), env.string("COACH_LOG_PII_KEY").as_deref());
    let format = LogFormat::from_env(&env, std::io::stdout().is_terminal());
    // `try_init` so that a second call (tests) is harmless.
    let _ = subscriber_in(format, spec.as_deref(), lambda_level.as_deref(), privacy, std::io::stdout).try_init();
}

/// The subscriber [`init`] installs, writing to `writer`, with the default privacy (people
/// hashed): `spec` is `RUST_LOG`, `lambda_level` is `AWS_LAMBDA_LOG_LEVEL`.
pub fn subscriber<W>(spec: Option<&str>, lambda_level: Option<&str>, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_with(spec, lambda_level, Privacy::default(), writer)
}

/// [`subscriber`] with the log privacy `privacy`.
pub fn subscriber_with<W>(
    spec: Option<&str>,
    lambda_level: Option<&str>,
    privacy: Privacy,
    writer: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_in(LogFormat::Json, spec, lambda_level, privacy, writer)
}

/// [`subscriber_with`] in the log format `format`.
pub fn subscriber_in<W>(
    format: LogFormat,
    spec: Option<&str>,
    lambda_level: Option<&str>,
    privacy: Privacy,
    writer: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = spec.and_then(|spec| EnvFilter::try_new(spec).ok()).unwrap_or_else(|| {
        let level = lambda_level.map(str::to_ascii_lowercase).unwrap_or_else(|| "info".to_owned());
        EnvFilter::try_new(format!("{level},{QUIET_DEPENDENCIES}"))
            .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_DEPENDENCIES}")))
    });
    // A second filter both must pass, so no `RUST_LOG` directive can lift it.
    let raw = RAW_EVENT_LOGGERS.iter().map(|target| (*target, LevelFilter::INFO));
    let bodies = BODY_LOGGERS.iter().map(|target| (*target, LevelFilter::DEBUG));
    let never_raw = Targets::new().with_default(LevelFilter::TRACE).with_targets(raw.chain(bodies));
    let writer = Shared(std::sync::Arc::new(writer));
    let privacy = std::sync::Arc::new(privacy);
    if let LogFormat::Text { function, ansi } = format {
        let detail = filter.max_level_hint().is_some_and(|level| level >= LevelFilter::DEBUG);
        // Metric events and Coach's spans (for the request id, and at `debug` their close)
        // always reach the layer; other events as the filters say.
        let events = filter.and(never_raw).and(filter_fn(|meta| meta.target() != metrics::TARGET));
        let spans = filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO);
        let wanted = events.or(filter_fn(|meta| meta.target() == metrics::TARGET)).or(spans);
        let human = human::Human::new(writer, privacy, function, detail, ansi).with_filter(wanted);
        return tracing_subscriber::registry().with(None).with(None).with(Some(human));
    }
    let scrubbed = Scrubbing { inner: writer.clone(), privacy };
    let format = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(scrubbed)
        .with_ansi(false)
        .with_target(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .flatten_event(true)
        .with_filter(filter)
        .with_filter(never_raw)
        .with_filter(filter_fn(|meta| meta.target() != metrics::TARGET));
    let emf = MetricLines(writer).with_filter(filter_fn(|meta| meta.target() == metrics::TARGET));
    tracing_subscriber::registry().with(Some(format)).with(Some(emf)).with(None)
}

/// One writer for both layers.
struct Shared<W>(std::sync::Arc<W>);

impl<W> Clone for Shared<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Shared<W> {
    type Writer = W::Writer;
    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }
}

/// The log lines' writer: each line, once written whole, is scrubbed ([`Privacy`]) and then
/// written on.
struct Scrubbing<W> {
    inner: Shared<W>,
    privacy: std::sync::Arc<Privacy>,
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Scrubbing<W> {
    type Writer = ScrubbedLines<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLines { buffer: Vec::new(), inner: self.inner.make_writer(), privacy: self.privacy.clone() }
    }
}

/// What one event writes, held until the writer is dropped (the formatter writes an event's
/// line, then drops its writer), then scrubbed line by line.
struct ScrubbedLines<W: Write> {
    buffer: Vec<u8>,
    inner: W,
    privacy: std::sync::Arc<Privacy>,
}

impl<W: Write> Write for ScrubbedLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ScrubbedLines<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let (body, end) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
            out.push_str(&self.privacy.scrub_line(body));
            out.push_str(end);
        }
        let _ = self.inner.write_all(out.as_bytes());
        let _ = self.inner.flush();
    }
}

/// Writes each metric event's `emf` document on a line of its own.
struct MetricLines<W>(Shared<W>);

impl<S, W> Layer<S> for MetricLines<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        struct Document(Option<String>);
        impl Visit for Document {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "emf" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut document = Document(None);
        event.record(&mut document);
        if let Some(line) = document.0 {
            let _ = writeln!(self.0.make_writer(), "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_format_is_json_off_a_terminal_unless_asked() {
        let format =
            |vars: &[(&str, &str)], terminal: bool| crate::config::with(vars, |env| LogFormat::from_env(env, terminal));
        assert_eq!(format(&[], false), LogFormat::Json, "Lambda: no terminal");
        let on_screen = LogFormat::Text { function: "ingest".into(), ansi: true };
        assert_eq!(format(&[("AWS_LAMBDA_FUNCTION_NAME", "ingest")], true), on_screen);
        assert_eq!(format(&[("COACH_LOG_FORMAT", "json")], true), LogFormat::Json);
        let piped = LogFormat::Text { function: "coach".into(), ansi: false };
        assert_eq!(format(&[("COACH_LOG_FORMAT", "text")], false), piped);
        let plain = LogFormat::Text { function: "coach".into(), ansi: false };
        assert_eq!(format(&[("NO_COLOR", "1")], true), plain);
    }
}
