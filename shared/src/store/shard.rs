//! The stored form of one document's index data (a [`Shard`]): what embedding jobs keep
//! between invocations, a part of a large document's vectors at a time
//! (`index/{scope}/work/...`, see [`crate::ingest::jobs`]). An 8-byte magic followed by
//! postcard, a compact serde format.

use crate::model::{Chunk, Shard};

/// Magic and format version at the start of every shard written now (chunks with spans).
pub const MAGIC: &[u8; 8] = b"COACHIX2";
/// Shards written before chunks recorded their spans: read with none.
const MAGIC_V1: &[u8; 8] = b"COACHIX1";

/// A shard as written before chunks recorded their spans.
#[derive(serde::Deserialize)]
struct ShardV1 {
    document_id: String,
    title: String,
    chunks: Vec<ChunkV1>,
    embedding_model: Option<String>,
    dims: u32,
    vectors: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct ChunkV1 {
    heading: Option<String>,
    text: String,
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
        let shard: Shard = if let Some(body) = bytes.strip_prefix(MAGIC_V1.as_slice()) {
            let v1: ShardV1 = postcard::from_bytes(body).map_err(|_| BadShard)?;
            Shard {
                document_id: v1.document_id,
                title: v1.title,
                chunks: v1.chunks.into_iter().map(|c| Chunk { heading: c.heading, text: c.text, span: None }).collect(),
                embedding_model: v1.embedding_model,
                dims: v1.dims,
                vectors: v1.vectors,
            }
        } else {
            let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or(BadShard)?;
            postcard::from_bytes(body).map_err(|_| BadShard)?
        };
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
    use crate::model::Span;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let shard = Shard {
            document_id: "d".into(),
            title: "t.md".into(),
            chunks: vec![Chunk {
                heading: Some("H".into()),
                text: "x".into(),
                span: Some(Span { start: 3, end: 4, pages: Some([1, 2]) }),
            }],
            embedding_model: Some("m".into()),
            dims: 2,
            vectors: vec![0.5, -1.0],
        };
        let bytes = shard.encode();
        assert_eq!(Shard::decode(&bytes), Ok(shard.clone()));
        assert_eq!(Shard::decode(b"COACHIX1\xff\xff"), Err(BadShard));
        assert_eq!(Shard::decode(b"COACHIX2\xff\xff"), Err(BadShard));
        // A shard written before spans: read with none.
        #[derive(serde::Serialize)]
        struct OldChunk<'a> {
            heading: Option<&'a str>,
            text: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Old<'a> {
            document_id: &'a str,
            title: &'a str,
            chunks: Vec<OldChunk<'a>>,
            embedding_model: Option<&'a str>,
            dims: u32,
            vectors: Vec<f32>,
        }
        let old = Old {
            document_id: "d",
            title: "t.md",
            chunks: vec![OldChunk { heading: Some("H"), text: "x" }],
            embedding_model: Some("m"),
            dims: 2,
            vectors: vec![0.5, -1.0],
        };
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        assert_eq!(
            Shard::decode(&bytes),
            Ok(Shard { chunks: vec![Chunk { span: None, ..shard.chunks[0].clone() }], ..shard })
        );
        assert_eq!(Shard::decode(b"nope"), Err(BadShard));
    }
}
