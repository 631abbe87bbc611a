//! The ingest function: S3 ObjectCreated/ObjectRemoved events, delivered directly by S3 or
//! wrapped in SQS messages, handed to [`coach::ingest`].
//!
//! Direct S3 events: a transient failure fails the invocation, so Lambda retries it.
//! SQS: the messages of a batch are handled at once, each on its own, and only the failed
//! ones are reported back (`batchItemFailures`), so only they are retried. S3's `s3:TestEvent` is skipped, and a
//! malformed event or message is logged and reported, never a crash.
//!
//! Messages of the job queue (`COACH_INGEST_QUEUE_URL`) are ingest's own follow-up work:
//! the steps of a large document's embedding ([`coach::ingest::jobs`]), uploads the sweeper
//! ingests again, and whatever is re-driven from the dead-letter queue: failed jobs, and
//! the records Lambda writes there for S3 events it gave up on (their `requestPayload` is
//! the S3 event). A schedule event runs the sweeper ([`coach::ingest::sweep`]).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use coach::{
    config::{ConfigError, Env, StartupError},
    deadline::Deadline,
    embeddings::{Embedder, EmbeddingConfig},
    history::{History, HistoryConfig},
    http::outbound_client,
    index::{Index, IndexStoreConfig},
    ingest::{IngestConfig, Ingestor, ObjectEvent, Outcome, S3Notification},
    llm::{Llm, LlmConfig, Provider},
    model::{Job, TitleJob},
    retry::Retries,
    secrets::{Secrets, SecretsConfig},
    store::AwsClients,
    titles::{Titled, Titler},
    usage::{Ledger, LedgerConfig},
    Error,
};
use serde_json::{json, Value};

/// What the ingest function uses, built once per cold start.
pub struct State {
    pub ingestor: Ingestor,
    /// Titles sessions from their first exchange (title jobs), when a model is configured
    /// (`None` with the `none` provider). A bad model setting does not stop ingest's cold
    /// start: it fails the title jobs alone, each with an error in the log.
    pub titler: Result<Option<Titler>, ConfigError>,
}

/// Why an invocation failed: an event Coach cannot read (a bug or a misrouted trigger,
/// never retried into success), or the work failed (a direct S3 event is then retried).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("malformed {what}")]
    Malformed {
        what: &'static str,
        #[source]
        cause: Option<serde_json::Error>,
    },
    #[error(transparent)]
    Failed(#[from] Error),
}

/// The ingest function's settings, read from the environment once at cold start (names,
/// defaults and bounds: [`coach::config::settings::SETTINGS`]).
pub struct Settings {
    /// The Coach secret's cache (embedding and model credentials).
    pub secrets: SecretsConfig,
    pub ingest: IngestConfig,
    pub index: IndexStoreConfig,
    pub embeddings: EmbeddingConfig,
    pub ledger: LedgerConfig,
    /// Where title jobs rename sessions.
    pub history: HistoryConfig,
    /// The chat model, for title jobs alone: invalid settings fail those jobs, each loudly,
    /// and nothing else.
    pub titles: Result<LlmConfig, ConfigError>,
}

impl Settings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let retries = Retries::from_env(env)?;
        let titles = LlmConfig::from_env(env, retries);
        if let Err(e) = &titles {
            tracing::error!(error = %e, "the language model's settings are invalid: title jobs will fail");
        }
        Ok(Self {
            secrets: SecretsConfig::from_env(env)?,
            ingest: IngestConfig::from_env(env)?,
            index: IndexStoreConfig::from_env(env)?,
            embeddings: EmbeddingConfig::from_env(env, retries)?,
            ledger: LedgerConfig::from_env(env)?,
            history: HistoryConfig::from_env(env)?,
            titles,
        })
    }
}

impl State {
    /// Reads the settings from the environment and builds everything from them.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(Settings::load, Self::new).await
    }

    /// Builds the state from its settings and ready clients (tests point them at the local
    /// emulator).
    pub fn new(settings: Settings, aws: &AwsClients) -> Result<Self, StartupError> {
        let secrets = Secrets::coach(aws, settings.secrets);
        let index = Index::new(settings.index, aws, &secrets).writer(aws);
        let http = outbound_client()?;
        let embedder = Embedder::new(settings.embeddings, http.clone(), secrets.clone(), aws);
        let table = Arc::new(aws.table());
        let ledger = Arc::new(Ledger::recorder(table.clone(), settings.ledger));
        // Session titles, with a model (with the `none` provider sessions keep their first words).
        let titler = settings.titles.map(|llm| match llm.provider {
            Provider::None => None,
            _ => {
                let history = History::new(table.clone(), settings.history);
                Some(Titler::new(history, Llm::new(llm, http, secrets, aws), ledger.clone()))
            }
        });
        let bucket = Arc::new(aws.bucket());
        let ingestor =
            Ingestor::new(settings.ingest, table, bucket, index, embedder, aws.job_queue()).with_ledger(ledger);
        Ok(Self { ingestor, titler })
    }
}

/// Handles one invocation, which ends at `deadline`. `Err` asks Lambda to retry a direct S3
/// event.
pub async fn handle(state: &State, event: Value, deadline: Deadline) -> Result<Value, EventError> {
    match event["Records"][0]["eventSource"].as_str() {
        Some("aws:sqs") => {
            let sqs: SqsEvent = serde_json::from_value(event).map_err(|e| malformed("SQS event", Some(e)))?;
            Ok(handle_sqs(state, sqs, deadline).await)
        }
        Some("aws:s3") => {
            let s3: S3Notification = serde_json::from_value(event).map_err(|e| malformed("S3 event", Some(e)))?;
            handle_s3(state, &s3, deadline).await?;
            Ok(json!({}))
        }
        _ if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") => Ok(json!({})),
        _ if event.get("source").and_then(Value::as_str) == Some("aws.events") => {
            let swept = state.ingestor.sweep(coach::ids::now_ms(), deadline).await.inspect_err(|err| {
                tracing::error!(error = %err, cause = %err.causes(), "sweep failed; the next one goes on");
            })?;
            Ok(json!(swept))
        }
        _ => Err(malformed("event (neither S3 nor SQS)", None)),
    }
}

fn malformed(what: &'static str, cause: Option<serde_json::Error>) -> EventError {
    tracing::error!(what, cause = cause.as_ref().map(tracing::field::display), "malformed event");
    EventError::Malformed { what, cause }
}

async fn handle_s3(state: &State, event: &S3Notification, deadline: Deadline) -> Result<(), Error> {
    let mut first_error = None;
    for record in &event.records {
        let Some(object) = ObjectEvent::from_record(record) else {
            tracing::warn!(event = record.event_name.as_deref().unwrap_or(""), "skipping S3 record without object");
            continue;
        };
        if let Err(err) = handle_object(state, &object, deadline).await {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn handle_sqs(state: &State, event: SqsEvent, deadline: Deadline) -> Value {
    // The messages of a batch run at once: their index writes share one manifest write.
    let handled = event.records.iter().map(|message| async move {
        let id = message.message_id.clone().unwrap_or_default();
        let body = message.body.as_deref().unwrap_or_default();
        let ok = match serde_json::from_str::<Value>(body) {
            Ok(body) if body.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") => true,
            Ok(body) if body.get("job").is_some() => match serde_json::from_value::<Job>(body) {
                Ok(job) => handle_job(state, &job, deadline).await.is_ok(),
                Err(_) => {
                    tracing::error!(message_id = %id, "SQS message is not a job Coach knows");
                    false
                }
            },
            // A Lambda destination record of an S3 event ingest failed (re-driven).
            Ok(mut body) if body.get("requestPayload").is_some() => {
                match serde_json::from_value::<S3Notification>(body["requestPayload"].take()) {
                    Ok(s3) => handle_s3(state, &s3, deadline).await.is_ok(),
                    Err(_) => {
                        tracing::error!(message_id = %id, "dead-letter record does not hold an S3 event");
                        false
                    }
                }
            }
            Ok(body) => match serde_json::from_value::<S3Notification>(body) {
                Ok(s3) => handle_s3(state, &s3, deadline).await.is_ok(),
                Err(_) => {
                    tracing::error!(message_id = %id, "SQS message is not an S3 event");
                    false
                }
            },
            Err(_) => {
                tracing::error!(message_id = %id, "SQS message body is not JSON");
                false
            }
        };
        (!ok).then(|| json!({ "itemIdentifier": id }))
    });
    let failures: Vec<Value> = futures_util::future::join_all(handled).await.into_iter().flatten().collect();
    json!({ "batchItemFailures": failures })
}

async fn handle_job(state: &State, job: &Job, deadline: Deadline) -> Result<(), Error> {
    if let Job::Title(job) = job {
        return title(state, job).await;
    }
    let outcome = state.ingestor.job(job, deadline).await;
    match job {
        Job::Embed(job) => log(&job.key, &outcome),
        Job::Reembed(job) => log(&format!("tenant {}", job.tenant), &outcome),
        Job::Object(job) => log(&job.key, &outcome),
        Job::Purge(job) => log(&format!("index of {}", job.tenant.as_deref().unwrap_or("the shared docs")), &outcome),
        Job::Title(_) => {}
    }
    outcome.map(|_| ())
}

/// A title job: the session titled (or why not), logged without the title's text. A failed
/// model call fails the message, so SQS retries it.
async fn title(state: &State, job: &TitleJob) -> Result<(), Error> {
    let titler = match &state.titler {
        Ok(Some(titler)) => titler,
        Ok(None) => {
            tracing::info!("title job skipped: no language model is configured");
            return Ok(());
        }
        Err(e) => {
            tracing::error!(session_id = %job.session_id, error = %e, "title job failed: the language model's settings are invalid");
            return Err(Error::internal(format!("the language model's settings are invalid: {e}")));
        }
    };
    match titler.title(job).await {
        Ok(Titled::Titled(_)) => {
            tracing::info!(session_id = %job.session_id, "session titled");
            Ok(())
        }
        Ok(Titled::Skipped(reason)) => {
            tracing::info!(session_id = %job.session_id, reason, "title job skipped");
            Ok(())
        }
        Err(err) => {
            tracing::warn!(session_id = %job.session_id, error = %err, cause = %err.causes(), "title job failed");
            Err(err)
        }
    }
}

async fn handle_object(state: &State, object: &ObjectEvent, deadline: Deadline) -> Result<Outcome, Error> {
    let outcome = state.ingestor.handle(object, deadline).await;
    log(&object.key, &outcome);
    outcome
}

fn log(key: &str, outcome: &Result<Outcome, Error>) {
    coach::metrics::ingest(match outcome {
        Ok(Outcome::Indexed { .. }) => "indexed",
        Ok(Outcome::Embedding { .. }) => "embedding",
        Ok(Outcome::Failed(_)) => "failed",
        Ok(Outcome::Removed) => "removed",
        Ok(Outcome::Purged) => "purged",
        Ok(Outcome::Queued(_)) => "queued",
        Ok(Outcome::Located { .. }) => "located",
        Ok(Outcome::Skipped(_)) => "skipped",
        Err(_) => "error",
    });
    match outcome {
        Ok(Outcome::Indexed { chunks }) => tracing::info!(key, chunks, "indexed"),
        Ok(Outcome::Embedding { done, total }) => {
            tracing::info!(
                key,
                embedded = done,
                chunks = total,
                "indexed by words; embedding continues in queued steps"
            )
        }
        Ok(Outcome::Failed(reason)) => tracing::warn!(key, reason, "document failed"),
        Ok(Outcome::Removed) => tracing::info!(key, "removed"),
        Ok(Outcome::Purged) => tracing::info!(key, "removed documents' data purged"),
        Ok(Outcome::Queued(jobs)) => tracing::info!(key, jobs, "embedding jobs queued"),
        Ok(Outcome::Located { chunks }) => tracing::info!(key, chunks, "indexed again with its chunks' spans"),
        Ok(Outcome::Skipped(why)) => tracing::info!(key, why, "skipped"),
        Err(err) => tracing::error!(key, error = %err, cause = %err.causes(), "ingest failed; will be retried"),
    }
}
