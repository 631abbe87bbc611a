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
//! | [`DocumentIndex`], [`PassageSearch`] | the search index, written and searched | [`crate::index`] over [`IndexStore`]; [`PgIndex`] |
//! | [`SecretSource`] | secret strings | [`SecretsManager`] |
//! | [`Probe`] | can the dependency be reached | [`DynamoTable`], [`S3Bucket`] |
//!
//! Everything that knows how a record is stored lives here and nowhere else: key layout,
//! cursor encoding, attribute conversion, the index formats, and the mapping of SDK
//! errors to [`StoreError`]. Domain modules never name an SDK type or SQL; the Postgres
//! index store implements the search index's traits in a module of its own ([`postgres`]).

mod aws;
mod dynamo;
pub mod keys;
pub mod postgres;
mod records;
mod s3;
mod secrets;
mod segment;
mod shard;
mod spans;
mod sqs;

use std::{future::Future, pin::Pin};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

pub use aws::{AwsClients, StoreConfig};
pub use dynamo::{DynamoTable, SESSIONS_INDEX};
pub use postgres::{PgConfig, PgIndex};
pub use records::{DocEntry, Manifest, Retired, Segment, SegmentDoc, SegmentInfo};
pub use s3::S3Bucket;
pub use secrets::SecretsManager;
pub use segment::BadObject;
pub use shard::BadShard;
pub use sqs::SqsQueue;

use crate::{
    error::Error,
    model::{
        DayUsage, Document, Feedback, FeedbackCounts, FeedbackReason, Finished, Job, Message, NewDocument, Owner, Page,
        Passage, Query, Ranking, Rating, Scope, Session, Shard, Source, Usage, UsageCounts,
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
}

impl StoreError {
    /// A request the SDK's builder refused, with why.
    pub fn build(action: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Build { action, cause: Box::new(cause) }
    }

    /// The operator's view of a service failure; `None` for the other kinds.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            StoreError::Service { failure, .. } => Some(*failure),
            _ => None,
        }
    }
}

/// What a storage failure means to a caller: a bad cursor is theirs (400), a damaged item
/// ours (500), a failed condition a conflict (409) unless the domain says more, and a
/// failed service a 503 ("busy" when throttled).
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Error {
        match err {
            StoreError::BadCursor(message) => Error::BadRequest(message.to_owned()),
            StoreError::ConditionFailed { .. } => Error::Conflict("the item changed meanwhile; try again".into()),
            StoreError::Corrupt(_) | StoreError::Build { .. } => {
                Error::Internal { detail: err.to_string(), cause: Some(std::sync::Arc::new(err)) }
            }
            StoreError::Service { failure: Failure::Throttled, .. } => {
                Error::unavailable("storage is busy; try again", err)
            }
            StoreError::Service { .. } => Error::unavailable("storage is unavailable", err),
        }
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

// ------------------------------------------------------------------ objects

/// An object's body, read when asked for (so a caller can look at the size first).
pub struct Body(Pin<Box<dyn Future<Output = StoreResult<Bytes>> + Send>>);

impl Body {
    pub fn new(read: impl Future<Output = StoreResult<Bytes>> + Send + 'static) -> Self {
        Self(Box::pin(read))
    }

    pub async fn bytes(self) -> StoreResult<Bytes> {
        self.0.await
    }
}

/// An object as read: its version, its size and its body, not yet downloaded.
pub struct Blob {
    pub etag: String,
    pub size: u64,
    pub body: Body,
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// The answer to a conditional read.
pub enum Revalidated {
    Changed { etag: Option<String>, bytes: Bytes },
    NotModified,
    Missing,
}

/// A presigned upload: the URL and the headers the uploader must send.
#[derive(Debug, Clone)]
pub struct PresignedPut {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// Objects in one bucket.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The object, or `None` when there is no such key.
    async fn get(&self, key: &str) -> StoreResult<Option<Blob>>;
    /// The object unless its ETag is still `etag`.
    async fn get_if_changed(&self, key: &str, etag: Option<&str>) -> StoreResult<Revalidated>;
    /// Writes the object whole; returns its new ETag.
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> StoreResult<Option<String>>;
    /// Deletes the object (no error when it is already gone).
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Deletes every version of the object and its delete markers (in a versioned bucket a
    /// plain delete only hides it), so nothing of it is left to restore.
    async fn delete_all_versions(&self, key: &str) -> StoreResult<()>;
    /// Removes every version of `key` but the first (the oldest stored), so the object is
    /// what was first written under it; the number removed.
    async fn keep_first_version(&self, key: &str) -> StoreResult<usize>;
    /// The object's version (ETag) without reading it, or `None` when there is no such key.
    async fn version(&self, key: &str) -> StoreResult<Option<String>>;
    /// Every object under `prefix`, `page_size` at a time (S3's maximum is 1000).
    async fn list(&self, prefix: &str, page_size: i32) -> StoreResult<Vec<Listed>>;
    /// A URL that lets its holder PUT exactly this object (key, type, length) for `ttl`.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: std::time::Duration,
    ) -> StoreResult<PresignedPut>;
}

// ------------------------------------------------------------------ the index

/// A legacy per-document shard (the index layout before manifests) as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRef {
    pub key: String,
    pub etag: String,
}

/// The answer to a conditional read of a scope's manifest.
pub enum ManifestRead {
    Changed { etag: String, manifest: Manifest },
    NotModified,
    Missing,
}

/// A scope's index: one manifest, immutable segments named by id, reports of damaged
/// segments, and the legacy per-document shards still to be migrated. Segments travel as
/// bytes; encoding and decoding them ([`Segment::encode`], [`Segment::decode`]) is CPU work
/// the caller schedules.
#[async_trait]
pub trait IndexStore: Send + Sync {
    /// The manifest unless its version is still `etag`.
    async fn manifest(&self, scope: &Scope, etag: Option<&str>) -> StoreResult<ManifestRead>;
    /// Replaces the manifest if it is still at version `expected` (`None`: only if there is
    /// none yet); `ConditionFailed` when another writer got there first. Returns the new version.
    async fn put_manifest(&self, scope: &Scope, manifest: &Manifest, expected: Option<&str>) -> StoreResult<String>;
    /// A segment's bytes; `None` when there is no such segment.
    async fn read_segment(&self, scope: &Scope, id: &str) -> StoreResult<Option<Bytes>>;
    /// Writes a new segment.
    async fn write_segment(&self, scope: &Scope, id: &str, bytes: Bytes) -> StoreResult<()>;
    /// Deletes a segment (no error when it is already gone).
    async fn delete_segment(&self, scope: &Scope, id: &str) -> StoreResult<()>;
    /// Every stored segment with when it was written: (id, epoch ms).
    async fn segments(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>>;
    /// Records that a reader found segment `id` damaged.
    async fn report_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()>;
    /// Segments reported damaged.
    async fn damaged(&self, scope: &Scope) -> StoreResult<Vec<String>>;
    /// Removes a damage report (once the segment is repaired).
    async fn clear_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()>;
    /// Legacy per-document shards of the scope.
    async fn legacy_shards(&self, scope: &Scope) -> StoreResult<Vec<ShardRef>>;
    /// A legacy shard's bytes and ETag; `None` when it vanished since the listing.
    async fn read_legacy(&self, shard: &ShardRef) -> StoreResult<Option<(String, Bytes)>>;
    /// Deletes a legacy shard (no error when it is already gone).
    async fn delete_legacy(&self, shard: &ShardRef) -> StoreResult<()>;
}

// ------------------------------------------------------------------ the search index

/// What became of a document handed to [`DocumentIndex::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Committed: the next search of its scope finds it.
    Indexed,
    /// Its source object changed meanwhile; the newer version is what must be indexed.
    Superseded,
    /// Its source object was deleted meanwhile; nothing was committed.
    Gone,
}

/// The search index as ingest (and a delete) writes it: whole documents, per scope. Two
/// stores implement it: segments in S3 ([`crate::index::IndexWriter`], the default) and
/// PostgreSQL with pgvector ([`PgIndex`], `COACH_INDEX_STORE=postgres`).
///
/// Every change is atomic per document: a search sees a document's previous version or its
/// new one, never part of either.
#[async_trait]
pub trait DocumentIndex: Send + Sync {
    /// Indexes `doc` in `scope`, replacing any earlier version, provided its source object
    /// `source_key` is still at version `source_etag` when the change commits (a delete or
    /// a newer upload meanwhile is never overwritten).
    async fn add(&self, scope: &Scope, doc: Shard, source_key: &str, source_etag: &str) -> Result<Added, Error>;
    /// Removes document `id`: no search returns it once this returns. Returns whether it was
    /// indexed.
    async fn remove(&self, scope: &Scope, id: &str) -> Result<bool, Error>;
    /// Document `id` as indexed (chunks and vectors); `None` when the scope has no such document.
    async fn document(&self, scope: &Scope, id: &str) -> Result<Option<Shard>, Error>;
    /// Erases what removed documents left in the scope's stored objects: rewrites now what
    /// still holds their data, and deletes (every version of) what nothing references once
    /// readers may no longer need it. `Some(wait)` when some is left to delete after that
    /// grace period: call again after `wait`.
    async fn purge(&self, scope: &Scope) -> Result<Option<std::time::Duration>, Error>;
}

/// A query while it is made (the conversation read, the query embedded): a future, so a
/// store can load what it needs meanwhile.
pub type PendingQuery<'a> = Pin<Box<dyn Future<Output = Query> + Send + 'a>>;

/// The search index as chat reads it: the best passages of a tenant's documents and the
/// shared docs for a [`Query`], ranked by its weighted terms (BM25) and (given its vector) by
/// vectors of the same model, the two rankings fused by reciprocal rank and cut by
/// `ranking`. No other scope is ever read. Both stores rank alike: same terms
/// ([`crate::analysis`]), same BM25, same fusion.
#[async_trait]
pub trait PassageSearch: Send + Sync {
    async fn search(&self, tenant: &str, query: PendingQuery<'_>, ranking: &Ranking) -> Result<Vec<Passage>, Error>;

    /// A token that changes whenever what [`PassageSearch::search`] may return for `tenant`
    /// changes: a document of the tenant or of the shared docs indexed, replaced or removed.
    /// Caches of answers grounded in the index key on it.
    async fn version(&self, tenant: &str) -> Result<String, Error>;
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
