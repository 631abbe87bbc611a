//! Storage: the small traits the domain modules depend on, and their AWS implementations.
//!
//! | trait | what it keeps | implementation |
//! |---|---|---|
//! | [`HistoryStore`] ([`TurnStore`], [`FeedbackStore`]) | sessions and messages, turn records, feedback | [`DynamoTable`] |
//! | [`DocumentStore`] | document records and status | [`DynamoTable`] |
//! | [`Counters`] | fixed-window request counters | [`DynamoTable`] |
//! | [`AnswerCache`] | answers kept a few minutes (`POST /qa`) | [`DynamoTable`] |
//! | [`ApiKeyStore`] | API keys (their secrets' hashes) | [`DynamoTable`] |
//! | [`AuditLog`] | security-relevant events per tenant | [`DynamoTable`] |
//! | [`UsageLedger`] | tokens, cost and calls per tenant and user, by day and month | [`DynamoTable`] |
//! | [`BlobStore`] | objects: docs, prompt, uploads | [`S3Bucket`] |
//! | [`IndexStore`] | per scope: index manifest and segments | [`S3Bucket`] |
//! | [`DocumentIndex`], [`PassageSearch`] | the search index, written and searched | [`crate::index`]: `IndexWriter` and `IndexReader` over [`IndexStore`]; `PgIndex` |
//! | [`SecretSource`] | secret strings | [`SecretsManager`] |
//! | [`Probe`] | can the dependency be reached | [`DynamoTable`], [`S3Bucket`] |
//!
//! Everything that knows how a record is stored lives here and nowhere else: key layout,
//! cursor encoding, attribute conversion, the index formats, and the mapping of SDK
//! errors to [`StoreError`]. Domain modules never name an SDK type or SQL; both index
//! stores (the S3 one over [`IndexStore`], and the PostgreSQL one) live in
//! [`crate::index`] and implement [`DocumentIndex`] and [`PassageSearch`] from here.

mod aws;
mod blobs;
mod dynamo;
mod index;
pub mod keys;
mod records;
mod runtime;
mod s3;
mod secrets;
mod segment;
mod shard;
mod spans;
mod sqs;

use async_trait::async_trait;
use serde::Serialize;

pub use aws::{AwsClients, StoreConfig};
pub use blobs::{Blob, BlobStore, Body, Listed, PresignedPut, Revalidated};
pub use dynamo::{DynamoTable, SESSIONS_INDEX};
pub use index::{Added, DocumentIndex, IndexStore, ManifestRead, PassageSearch, PendingQuery, DOCUMENT_INDEX};
pub use records::{Access, DocEntry, Manifest, Retired, Segment, SegmentDoc, SegmentInfo};
pub use runtime::{
    BedrockRuntime, ModelRuntime, RuntimeError, RuntimeEvent, RuntimeEvents, RuntimeReply, RuntimeRequest, Stop,
};
pub use s3::S3Bucket;
pub use secrets::SecretsManager;
pub use segment::BadObject;
pub use shard::BadShard;
pub use sqs::SqsQueue;

use crate::{
    error::Error,
    model::{
        DayUsage, Document, Feedback, FeedbackCounts, FeedbackReason, Finished, Job, Message, NewDocument, Owner, Page,
        Rating, Scope, Session, Source, Surface, Usage, UsageCounts,
    },
};

/// Why a call to a storage service failed, in terms an operator (not the SDK) thinks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The bucket, table or secret does not exist.
    NotFound,
    /// The credentials lack permission.
    AccessDenied,
    /// The service is throttling us.
    Throttled,
    /// No answer within the configured timeout.
    TimedOut,
    /// The endpoint could not be reached at all.
    Unreachable,
    /// Anything else.
    Failed,
}

/// A storage operation that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found the item in another state (missing, or changed): what
    /// that means is the caller's to say (a 404, a 409, or nothing to do).
    #[error("{action}: the condition on the item failed")]
    ConditionFailed { action: &'static str },
    /// A cursor that this store did not hand out.
    #[error("{0}")]
    BadCursor(&'static str),
    /// A stored item or object that cannot be read back.
    #[error("stored {0} is damaged or missing attributes")]
    Corrupt(&'static str),
    /// A request that could not be built (the SDK's builder refused it): a bug of ours.
    #[error("{action}: the request could not be built")]
    Build {
        action: &'static str,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The service failed or could not be reached.
    #[error("{action} failed ({failure:?})")]
    Service {
        action: &'static str,
        failure: Failure,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store as a whole cannot serve (the document index: its database, its objects, its
    /// secret), said by its name.
    #[error("{store} is unavailable")]
    Unavailable {
        store: &'static str,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store busy with other work that a moment later will do (a caller's retry).
    #[error("{0}")]
    Busy(&'static str),
    /// One failure answered to several callers (the adds of one batched manifest write).
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// Something that should not happen (a task that died, a configuration that cannot
    /// work), with its cause.
    #[error("{detail}")]
    Internal {
        detail: String,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// A request the SDK's builder refused, with why.
    pub fn build(action: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Build { action, cause: Box::new(cause) }
    }

    /// `store` cannot serve, because of `cause`.
    pub fn unavailable(store: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable { store, cause: Box::new(cause) }
    }

    /// A failure that should not happen, said in `detail`.
    pub fn internal(detail: impl Into<String>) -> Self {
        StoreError::Internal { detail: detail.into(), cause: None }
    }

    /// A failure that should not happen, said in `detail`, because of `cause`.
    pub fn internal_from(detail: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Internal { detail: detail.into(), cause: Some(Box::new(cause)) }
    }

    /// The operator's view of a service failure; `None` for the other kinds.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            StoreError::Service { failure, .. } => Some(*failure),
            StoreError::Shared(inner) => inner.failure(),
            _ => None,
        }
    }
}

/// What a storage failure means to a caller: a bad cursor is theirs (400), a damaged item
/// or a bug ours (500), a failed condition a conflict (409) unless the domain says more, and
/// a failed or busy service a 503 ("busy" when throttled). The failure is the error's cause.
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Error {
        let err = match err {
            StoreError::Shared(shared) => shared,
            other => std::sync::Arc::new(other),
        };
        meaning(&err, err.clone())
    }
}

fn meaning(err: &StoreError, cause: crate::error::Cause) -> Error {
    let unavailable = |message: String| Error::Unavailable { message, cause: Some(cause.clone()) };
    match err {
        StoreError::BadCursor(message) => Error::BadRequest((*message).to_owned()),
        StoreError::ConditionFailed { .. } => Error::Conflict("the item changed meanwhile; try again".into()),
        StoreError::Corrupt(_) | StoreError::Build { .. } | StoreError::Internal { .. } => {
            Error::Internal { detail: err.to_string(), cause: Some(cause) }
        }
        StoreError::Service { failure: Failure::Throttled, .. } => unavailable("storage is busy; try again".into()),
        StoreError::Service { .. } => unavailable("storage is unavailable".into()),
        StoreError::Unavailable { store, .. } => unavailable(format!("{store} is unavailable")),
        StoreError::Busy(message) => Error::Unavailable { message: (*message).to_owned(), cause: None },
        StoreError::Shared(inner) => meaning(inner, cause),
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

// ------------------------------------------------------------------ history

/// A session to create: its id (a ULID), title and clock.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub session_id: &'a str,
    pub title: &'a str,
    /// The title is automatic (see [`crate::model::Session::auto_title`]).
    pub auto_title: bool,
    pub now_ms: u64,
    pub expires_at: u64,
}

/// Who renames a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamer {
    /// Coach, from the first exchange: only while the title is still automatic.
    Auto,
    /// The user: the title is theirs from then on.
    User,
}

/// A message to store, with its id and clock.
#[derive(Debug, Clone, Copy)]
pub struct StoredMessage<'a> {
    pub message_id: &'a str,
    pub role: crate::model::Author,
    pub content: &'a str,
    pub sources: &'a [Source],
    pub usage: Option<Usage>,
    pub model: Option<&'a str>,
    pub incomplete: bool,
    pub now_ms: u64,
    pub expires_at: u64,
}

/// The session a message goes into.
#[derive(Debug, Clone, Copy)]
pub enum SessionWrite<'a> {
    /// An existing session (the write fails with [`StoreError::ConditionFailed`] if it is gone).
    Existing(&'a str),
    /// A session created with this message as its first.
    New(NewSession<'a>),
}

/// The record of one user turn, which recognises a retry of it (see [`crate::chat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRecord {
    pub session_id: String,
    /// The user's message.
    pub message_id: String,
    /// The reply, once stored.
    pub reply_id: Option<String>,
    /// Until when (epoch ms) the attempt holding the turn may still answer it; 0 once it
    /// gave up.
    pub lease_until: u64,
}

/// What a message write does to its turn's record.
#[derive(Debug, Clone, Copy)]
pub enum TurnWrite<'a> {
    /// No record.
    None,
    /// The record is created with the user's message, unless a live one has this key (the
    /// write then stores nothing: [`Appended::Retry`]). It lives until `expires_at` (epoch s).
    Claim { key: &'a str, lease_until: u64, expires_at: u64 },
    /// The reply's id is recorded with the reply.
    Answer { key: &'a str },
}

/// What a message write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored,
    /// Nothing was written: the turn's key is taken by an earlier attempt.
    Retry,
}

/// Sessions and messages, always under one owner's keys; with the turns and the feedback
/// kept beside them.
#[async_trait]
pub trait HistoryStore: TurnStore + FeedbackStore + Send + Sync {
    /// Creates an empty session; fails with `ConditionFailed` if the id is taken.
    async fn create_session(&self, owner: Owner<'_>, session: NewSession<'_>) -> StoreResult<()>;
    /// One session, consistently read.
    async fn session(&self, owner: Owner<'_>, session_id: &str) -> StoreResult<Option<Session>>;
    /// Sessions, most recently active first.
    async fn sessions(&self, owner: Owner<'_>, limit: i32, cursor: Option<&str>) -> StoreResult<Page<Session>>;
    /// Stores a message and bumps its session's activity, count and expiry, with what
    /// `turn` asks of the turn's record, in one write.
    async fn append(
        &self,
        owner: Owner<'_>,
        session: SessionWrite<'_>,
        message: StoredMessage<'_>,
        turn: TurnWrite<'_>,
    ) -> StoreResult<Appended>;
    /// One message of a session.
    async fn message(&self, owner: Owner<'_>, session_id: &str, message_id: &str) -> StoreResult<Option<Message>>;
    /// A page of a session's messages, newest first; the cursor leads to older ones.
    async fn messages(
        &self,
        owner: Owner<'_>,
        session_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Message>>;
    /// Deletes a session's messages, then the session.
    async fn delete_session(&self, owner: Owner<'_>, session_id: &str) -> StoreResult<()>;
    /// Sets a session's title: for [`Renamer::Auto`] only while the title is automatic
    /// (`false` when the user named it meanwhile, or it is gone); for [`Renamer::User`], it
    /// becomes the user's (`ConditionFailed` when the session is gone).
    async fn rename_session(&self, owner: Owner<'_>, session_id: &str, title: &str, by: Renamer) -> StoreResult<bool>;
}

/// The records of user turns, which recognise a retry (claimed with the user's message by
/// [`HistoryStore::append`]).
#[async_trait]
pub trait TurnStore: Send + Sync {
    /// A turn's record, consistently read; `None` when there is none or it expired.
    async fn turn(&self, owner: Owner<'_>, key: &str) -> StoreResult<Option<TurnRecord>>;
    /// Moves a turn's lease from `from` to `to` (0 gives it up): `false` when another attempt
    /// moved it first, or the record is gone.
    async fn move_lease(&self, owner: Owner<'_>, key: &str, from: u64, to: u64) -> StoreResult<bool>;
}

/// One of a tenant's daily feedback counters (read back by [`UsageLedger::feedback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackCounter {
    Rating(Rating),
    Reason(FeedbackReason),
}

/// A change to the feedback counter of a day (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterChange {
    pub day: String,
    pub counter: FeedbackCounter,
    pub delta: i64,
}

/// Feedback on replies.
#[async_trait]
pub trait FeedbackStore: Send + Sync {
    /// Sets the feedback on a reply whose current feedback is `previous` (`None`: none yet)
    /// and applies `counters` to the tenant's feedback counters, in one transaction.
    /// `ConditionFailed` when the message is gone, is not a reply, or its feedback changed
    /// meanwhile.
    async fn set_feedback(
        &self,
        owner: Owner<'_>,
        session_id: &str,
        message_id: &str,
        feedback: &Feedback,
        previous: Option<&Feedback>,
        counters: &[CounterChange],
    ) -> StoreResult<()>;
}

// ------------------------------------------------------------------ documents

/// Document records of a scope (a tenant, or the shared docs).
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Records a new document as `pending`, to expire at `expires_at` (seconds since the
    /// epoch) unless its upload arrives (see `start_processing`); fails with
    /// `ConditionFailed` if the id is taken.
    async fn create(&self, scope: &Scope, document: &NewDocument<'_>, now_ms: u64, expires_at: u64) -> StoreResult<()>;
    /// Creates or refreshes a shared doc's record, keeping its status and creation time.
    async fn upsert(&self, scope: &Scope, document: &NewDocument<'_>, now_ms: u64) -> StoreResult<()>;
    /// A scope's documents, newest first; the cursor is the last document id of a page.
    async fn list(&self, scope: &Scope, limit: i32, cursor: Option<&str>) -> StoreResult<Page<Document>>;
    /// One record, consistently read.
    async fn get(&self, scope: &Scope, id: &str) -> StoreResult<Option<Document>>;
    /// Marks a record `processing` unless this exact version (`etag`) is already `ready`;
    /// `ConditionFailed` when it is, or when there is no record.
    async fn start_processing(&self, scope: &Scope, id: &str, etag: &str, now_ms: u64) -> StoreResult<()>;
    /// Records how ingestion ended; `ConditionFailed` when the record is gone, or already
    /// `ready` (finished by a newer ingest since this one marked it `processing`).
    async fn finish(&self, scope: &Scope, id: &str, finished: Finished<'_>, now_ms: u64) -> StoreResult<()>;
    /// Records that `done` chunks of version `etag` have vectors; `ConditionFailed` when the
    /// record is gone, not `ready`, or of another version.
    async fn embedding_progress(&self, scope: &Scope, id: &str, etag: &str, done: u64, now_ms: u64) -> StoreResult<()>;
    /// Sets who may read a document (`None`: the tenant), if its access is still at revision
    /// `rev` ([`Document::access_rev`]), which becomes `rev + 1`; `ConditionFailed` when it
    /// changed meanwhile or there is no record.
    async fn set_access(
        &self,
        scope: &Scope,
        id: &str,
        access: Option<&[String]>,
        rev: u64,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Deletes a record (no error when it is already gone).
    async fn delete(&self, scope: &Scope, id: &str) -> StoreResult<()>;
    /// Records of every scope still `pending` or `processing` whose status last changed
    /// before `before_ms`, oldest first, at most `limit` (the sweeper's work).
    async fn unfinished(&self, before_ms: u64, limit: i32) -> StoreResult<Vec<(Scope, Document)>>;
}

// ------------------------------------------------------------------ counters

/// Which counter a request counts against.
#[derive(Debug, Clone, Copy)]
pub enum Counter<'a> {
    User(Owner<'a>),
    Tenant(&'a str),
}

/// Fixed-window counters (rate limits).
#[async_trait]
pub trait Counters: Send + Sync {
    /// Adds one to the counter of the window starting at `window_start` unless it has
    /// reached `limit`: `Ok(true)` when counted, `Ok(false)` when full. The counter item
    /// expires at `expires_at` (epoch seconds).
    async fn take(&self, counter: Counter<'_>, window_start: u64, limit: u64, expires_at: u64) -> StoreResult<bool>;
    /// Takes back one count of the window (a request refused by another limit); a counter
    /// at zero or gone stays as it is.
    async fn give_back(&self, counter: Counter<'_>, window_start: u64) -> StoreResult<()>;
}

// ------------------------------------------------------------------ usage

/// Counts to add to the usage ledger: calls of one model for one tenant (and user, when
/// a user made them), on one day (`YYYY-MM-DD`) of one month (`YYYY-MM`).
#[derive(Debug, Clone, Copy)]
pub struct UsageEntry<'a> {
    pub tenant: &'a str,
    pub user: Option<&'a str>,
    pub day: &'a str,
    pub month: &'a str,
    pub model: &'a str,
    /// The interface the calls came through (the day counters are kept per surface).
    pub surface: Surface,
    pub counts: UsageCounts,
    /// When the day's items expire (epoch seconds); month totals are kept.
    pub day_expires_at: u64,
}

/// The usage ledger: atomic counters per tenant and per user, by day and model, and month
/// totals (what budgets read).
#[async_trait]
pub trait UsageLedger: Send + Sync {
    /// Adds `entry` to its day-and-model counters and its month totals (the tenant's, and the
    /// user's when there is one).
    async fn add(&self, entry: &UsageEntry<'_>) -> StoreResult<()>;
    /// A month's totals of the tenant (`user: None`) or of one of its users.
    async fn month(&self, tenant: &str, user: Option<&str>, month: &str) -> StoreResult<UsageCounts>;
    /// The day-and-model counters from `from` to `to` (days, inclusive), oldest first.
    async fn days(&self, tenant: &str, user: Option<&str>, from: &str, to: &str) -> StoreResult<Vec<DayUsage>>;
    /// The tenant's feedback on replies, given from `from` to `to` (days, inclusive), as it
    /// stands (see [`FeedbackStore::set_feedback`]).
    async fn feedback(&self, tenant: &str, from: &str, to: &str) -> StoreResult<FeedbackCounts>;
}

// ------------------------------------------------------------------ audit

/// One audit event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// A ULID: events sort by time.
    pub event_id: String,
    pub tenant: String,
    /// Who acted: a user id, or `key:{id}` for an API key.
    pub actor: String,
    pub operation: String,
    pub resource: Option<String>,
    pub outcome: String,
    pub request_id: String,
}

/// A tenant's audit log.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Claims `key` of `tenant` until `until` (epoch seconds), unless a claim of it holds at
    /// `now`: whether this call made the claim.
    async fn claim(&self, tenant: &str, key: &str, until: u64, now: u64) -> StoreResult<bool>;
    /// Appends an event, kept until `expires_at` (epoch seconds);
    /// [`StoreError::ConditionFailed`] when an event of that id exists.
    async fn append(&self, event: &AuditRecord, expires_at: u64) -> StoreResult<()>;
    /// A tenant's events with ids from `from_id` to `to_id`, newest first; the cursor leads
    /// to older ones.
    async fn events(
        &self,
        tenant: &str,
        from_id: &str,
        to_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<AuditRecord>>;
}

// ------------------------------------------------------------------ API keys

/// An API key as stored: never its secret, only the secret's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApiKey {
    /// A ULID; also the key's public prefix (`coach_{id}_...`), by which it is looked up.
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub roles: Vec<String>,
    /// Access groups (sorted, distinct; none: the key reads only documents open to the tenant).
    pub groups: Vec<String>,
    /// SHA-256 of the secret part, hex.
    pub hash: String,
    pub created_ms: u64,
    /// Who created it (a user id).
    pub created_by: String,
    /// When it stops working (epoch ms; `None`: never).
    pub expires_ms: Option<u64>,
    /// Its last recorded use (epoch ms).
    pub last_used_ms: Option<u64>,
}

/// API keys: looked up by id when a request presents one, listed per tenant.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key; `ConditionFailed` when the id is taken.
    async fn create_key(&self, key: &StoredApiKey) -> StoreResult<()>;
    /// The key with this id, whichever its tenant (the caller checks).
    async fn key(&self, id: &str) -> StoreResult<Option<StoredApiKey>>;
    /// A tenant's keys, oldest first.
    async fn keys(&self, tenant: &str) -> StoreResult<Vec<StoredApiKey>>;
    /// Records key `id`'s use at `now_ms`, unless one is recorded after `since_ms` (or the key
    /// is gone).
    async fn touch_key(&self, id: &str, now_ms: u64, since_ms: u64) -> StoreResult<()>;
    /// Deletes the tenant's key `id`: `false` when it has no such key.
    async fn delete_key(&self, tenant: &str, id: &str) -> StoreResult<bool>;
}

// ------------------------------------------------------------------ stream slots

/// A tenant's numbered stream slots (see [`crate::streams`]).
#[async_trait]
pub trait StreamSlots: Send + Sync {
    /// The numbers of `tenant`'s slots held at `now_ms` (their lease not yet past).
    async fn slots(&self, tenant: &str, now_ms: u64) -> StoreResult<Vec<u32>>;
    /// Takes slot `number` for `holder` until `until_ms`, if it is free at `now_ms`: whether
    /// this call took it.
    async fn take_slot(&self, tenant: &str, number: u32, holder: &str, until_ms: u64, now_ms: u64)
        -> StoreResult<bool>;
    /// Gives slot `number` back, if `holder` still holds it.
    async fn free_slot(&self, tenant: &str, number: u32, holder: &str) -> StoreResult<()>;
}

// ------------------------------------------------------------------ answers

/// Answers kept for a while per tenant, under a key their caller derives from everything
/// the answer depends on (the `POST /qa` cache, see [`crate::assist`]).
#[async_trait]
pub trait AnswerCache: Send + Sync {
    /// The answer kept under `key`, unless it expired by `now_secs` (epoch seconds).
    async fn cached(&self, tenant: &str, key: &str, now_secs: u64) -> StoreResult<Option<String>>;
    /// Keeps `answer` under `key` until `expires_at` (epoch seconds), replacing any other.
    async fn keep(&self, tenant: &str, key: &str, answer: &str, expires_at: u64) -> StoreResult<()>;
}

// ------------------------------------------------------------------ jobs

/// Where follow-up work goes (an SQS queue feeding the ingest function).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Queues a job for the ingest function.
    async fn send(&self, job: &Job) -> StoreResult<()>;
    /// Queues a job delivered after `delay` (at most 15 minutes).
    async fn send_later(&self, job: &Job, delay: std::time::Duration) -> StoreResult<()>;
}

// ------------------------------------------------------------------ secrets and health

/// Secret strings by id.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret_string(&self, secret_id: &str) -> StoreResult<String>;
}

/// A dependency check for `GET /health`.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The component's name in the health report.
    fn component(&self) -> &'static str;
    async fn check(&self) -> Result<(), Failure>;
}
