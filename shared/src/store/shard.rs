//! The stored form of an index shard: an 8-byte magic followed by postcard, a compact serde
//! format, small to store and fast to load in the chat path.

use crate::model::Shard;

/// Magic and format version at the start of every shard.
pub const MAGIC: &[u8; 8] = b"COACHIX1";

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
    use crate::model::Chunk;

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
