//! The index shard of one document: its chunks and, when an embedding provider is
//! configured, one f32 vector per chunk. Stored at `index/{tenant}/{document_id}` (or
//! `index/_global/{id}` for shared docs) as an 8-byte magic followed by postcard, a compact
//! serde format: small to store and fast to load in the chat path.

use serde::{Deserialize, Serialize};

use super::chunk::Chunk;

/// Magic and format version at the start of every shard.
pub const MAGIC: &[u8; 8] = b"COACHIX1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub document_id: String,
    /// Shown as the source title (the file name).
    pub title: String,
    pub chunks: Vec<Chunk>,
    /// Model that made the vectors, when there are any.
    pub embedding_model: Option<String>,
    /// Length of each vector (0 when there are none).
    pub dims: u32,
    /// `chunks.len() * dims` values, chunk after chunk.
    pub vectors: Vec<f32>,
}

/// Why a shard could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Coach index shard, or a damaged one")]
pub struct BadShard;

impl Shard {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Shard, BadShard> {
        let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or(BadShard)?;
        let shard: Shard = postcard::from_bytes(body).map_err(|_| BadShard)?;
        let expected = shard.chunks.len() * shard.dims as usize;
        if shard.vectors.len() != expected {
            return Err(BadShard);
        }
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let shard = Shard {
            document_id: "d".into(),
            title: "t.md".into(),
            chunks: vec![Chunk { heading: Some("H".into()), text: "x".into() }],
            embedding_model: Some("m".into()),
            dims: 2,
            vectors: vec![0.5, -1.0],
        };
        let bytes = shard.encode();
        assert_eq!(Shard::decode(&bytes), Ok(shard));
        assert_eq!(Shard::decode(b"COACHIX1\xff\xff"), Err(BadShard));
        assert_eq!(Shard::decode(b"nope"), Err(BadShard));
    }
}
