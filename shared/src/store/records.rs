//! The S3 index store's records: segments (several documents' chunks, postings and vectors,
//! written once) and each scope's manifest (which segments serve, which documents are live).
//! What each change of a manifest means is [`crate::index::manifest`]'s; how segments are
//! encoded is [`super::segment`]'s.

use serde::{Deserialize, Serialize};

use crate::model::Chunk;

/// One document inside a [`Segment`]: where its chunks and vectors are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDoc {
    pub document_id: String,
    pub title: String,
    /// Its chunks are `first_chunk .. first_chunk + chunks` of the segment.
    pub first_chunk: u32,
    pub chunks: u32,
    /// Model that made its vectors, when there are any.
    pub embedding_model: Option<String>,
    /// Length of each of its vectors (0 when there are none).
    pub dims: u32,
    /// Its vectors start at this offset of [`Segment::vectors`].
    pub first_value: u64,
}

/// A piece of a scope's index as stored: several documents' chunks, an inverted index over
/// them and their unit vectors. Written once under a fresh id and never changed; a one-
/// document segment is the delta ingest writes, compaction merges them into larger ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub docs: Vec<SegmentDoc>,
    pub chunks: Vec<Chunk>,
    /// Tokens per chunk.
    pub lengths: Vec<u32>,
    /// Every term, sorted.
    pub terms: Vec<String>,
    /// Per term: where its postings end in `postings` (they start where the previous end).
    pub term_ends: Vec<u32>,
    /// Chunk numbers, term after term.
    pub postings: Vec<u32>,
    /// Term frequency of each posting.
    pub frequencies: Vec<u32>,
    /// Unit vectors, document after document, chunk after chunk.
    pub vectors: Vec<f32>,
    /// The [`crate::analysis::Analyzer::id`] the postings were made with: a reader with
    /// another analyser makes its own from the chunks.
    pub analyzer: String,
}

/// A segment the manifest serves from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// A ULID: the object's name, never reused.
    pub id: String,
    /// Stored size.
    pub bytes: u64,
    /// Estimated memory once loaded for search.
    pub memory: u64,
    /// Documents stored in it (live or not).
    pub docs: u32,
    pub chunks: u32,
}

/// A live document of a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocEntry {
    /// The segment it is served from.
    pub segment: String,
    /// The one-document segment ingest wrote for it (kept to rebuild a damaged segment).
    pub delta: String,
    /// Version (ETag) of the source object it was made from.
    pub etag: String,
    pub chunks: u32,
}

/// An object no longer referenced, deleted once no reader can still be using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub id: String,
    pub since_ms: u64,
}

/// The index of one scope: which segments to load and which documents in them are live.
/// Every change is a conditional write of a whole new manifest, so a reader sees either
/// the old state or the new one, never a half.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Bumped by every write.
    pub generation: u64,
    /// Segments served, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Live documents by id: each is live in exactly one segment.
    pub docs: std::collections::BTreeMap<String, DocEntry>,
    /// Deleted documents (tombstones) by id, with when they were deleted.
    pub deleted: std::collections::BTreeMap<String, u64>,
    /// Objects waiting to be deleted.
    pub retired: Vec<Retired>,
    /// A compaction holds the scope until then (epoch ms); 0 when none does.
    pub compacting_until_ms: u64,
    /// When unreferenced objects were last collected.
    pub collected_ms: u64,
    /// Who may read a document, by id, for documents whose access was ever set (none: the
    /// whole tenant). Kept apart from `docs`: it is set before a document is indexed.
    pub access: std::collections::BTreeMap<String, Access>,
}

/// Who may read a document of a scope, as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `None`: the whole tenant; else these groups (sorted, distinct).
    pub groups: Option<Vec<String>>,
    /// The record's access revision this came from: an older one never replaces it.
    pub rev: u64,
}
