//! The stored form of index segments and manifests: an 8-byte magic, a postcard body (a
//! compact serde format) and a CRC-32 of everything before it, so a damaged or truncated
//! object is detected rather than misread.

use super::records::{Manifest, Segment, SegmentDoc};
use crate::model::Chunk;

/// Segments written since analysers are recorded ([`Segment::analyzer`]).
const SEGMENT_MAGIC: &[u8; 8] = b"COACHSG2";
/// Segments written before: read as made by [`crate::analysis::LEGACY_ID`].
const SEGMENT_V1_MAGIC: &[u8; 8] = b"COACHSG1";
/// Manifests written since documents have access ([`Manifest::access`]).
const MANIFEST_MAGIC: &[u8; 8] = b"COACHMF2";
/// Manifests written before: read with every document open to its tenant.
const MANIFEST_V1_MAGIC: &[u8; 8] = b"COACHMF1";

/// Why a segment or manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Coach index {0}, or a damaged one (checksum or format)")]
pub struct BadObject(pub &'static str);

fn frame<T: serde::Serialize>(magic: &[u8; 8], value: &T) -> Vec<u8> {
    let mut out = magic.to_vec();
    // Serialising plain data into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_le_bytes());
    out
}

fn unframe<'a, T: serde::Deserialize<'a>>(
    magic: &[u8; 8],
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, BadObject> {
    let bad = || BadObject(what);
    let split = bytes.len().checked_sub(4).ok_or_else(bad)?;
    let (framed, crc) = bytes.split_at(split);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad())?);
    if crc32fast::hash(framed) != crc {
        return Err(bad());
    }
    let body = framed.strip_prefix(magic.as_slice()).ok_or_else(bad)?;
    postcard::from_bytes(body).map_err(|_| bad())
}

impl Segment {
    pub fn encode(&self) -> Vec<u8> {
        frame(SEGMENT_MAGIC, self)
    }

    /// Reads a segment back (either format), checking its checksum and that its parts agree
    /// in length.
    pub fn decode(bytes: &[u8]) -> Result<Segment, BadObject> {
        let mut segment: Segment = match bytes.get(..8) {
            Some(magic) if magic == SEGMENT_V1_MAGIC => {
                unframe::<SegmentV1>(SEGMENT_V1_MAGIC, "segment", bytes)?.into()
            }
            _ => unframe(SEGMENT_MAGIC, "segment", bytes)?,
        };
        // Deserialising grows vectors by doubling: give the slack back, the segment is kept.
        segment.chunks.shrink_to_fit();
        segment.lengths.shrink_to_fit();
        segment.terms.shrink_to_fit();
        segment.term_ends.shrink_to_fit();
        segment.postings.shrink_to_fit();
        segment.frequencies.shrink_to_fit();
        segment.vectors.shrink_to_fit();
        let chunks = segment.chunks.len();
        let postings = segment.postings.len();
        let mut next_chunk = 0u64;
        let mut next_value = 0u64;
        for doc in &segment.docs {
            let consistent = u64::from(doc.first_chunk) == next_chunk && doc.first_value == next_value;
            next_chunk += u64::from(doc.chunks);
            next_value += u64::from(doc.chunks) * u64::from(doc.dims);
            if !consistent {
                return Err(BadObject("segment"));
            }
        }
        let ends_ok = segment.term_ends.windows(2).all(|w| w[0] <= w[1])
            && segment.term_ends.last().map_or(postings == 0, |&end| end as usize == postings);
        let ok = next_chunk == chunks as u64
            && next_value == segment.vectors.len() as u64
            && segment.lengths.len() == chunks
            && segment.term_ends.len() == segment.terms.len()
            && segment.frequencies.len() == postings
            && ends_ok
            && segment.postings.iter().all(|&c| (c as usize) < chunks);
        if ok {
            Ok(segment)
        } else {
            Err(BadObject("segment"))
        }
    }
}

/// A segment as written before analysers were recorded.
#[derive(serde::Deserialize, serde::Serialize)]
struct SegmentV1 {
    docs: Vec<SegmentDoc>,
    chunks: Vec<Chunk>,
    lengths: Vec<u32>,
    terms: Vec<String>,
    term_ends: Vec<u32>,
    postings: Vec<u32>,
    frequencies: Vec<u32>,
    vectors: Vec<f32>,
}

impl From<SegmentV1> for Segment {
    fn from(v1: SegmentV1) -> Self {
        Segment {
            docs: v1.docs,
            chunks: v1.chunks,
            lengths: v1.lengths,
            terms: v1.terms,
            term_ends: v1.term_ends,
            postings: v1.postings,
            frequencies: v1.frequencies,
            vectors: v1.vectors,
            analyzer: crate::analysis::LEGACY_ID.to_owned(),
        }
    }
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        frame(MANIFEST_MAGIC, self)
    }

    /// Reads a manifest back (either format), checking its checksum.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, BadObject> {
        match bytes.get(..8) {
            Some(magic) if magic == MANIFEST_V1_MAGIC => {
                Ok(unframe::<ManifestV1>(MANIFEST_V1_MAGIC, "manifest", bytes)?.into())
            }
            _ => unframe(MANIFEST_MAGIC, "manifest", bytes),
        }
    }
}

/// A manifest as written before [`Manifest::access`]: the same fields, in the same order.
#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestV1 {
    generation: u64,
    segments: Vec<super::SegmentInfo>,
    docs: std::collections::BTreeMap<String, super::DocEntry>,
    deleted: std::collections::BTreeMap<String, u64>,
    retired: Vec<super::Retired>,
    compacting_until_ms: u64,
    collected_ms: u64,
}

impl From<ManifestV1> for Manifest {
    fn from(v1: ManifestV1) -> Self {
        Manifest {
            generation: v1.generation,
            segments: v1.segments,
            docs: v1.docs,
            deleted: v1.deleted,
            retired: v1.retired,
            compacting_until_ms: v1.compacting_until_ms,
            collected_ms: v1.collected_ms,
            access: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::Chunk, store::SegmentDoc};

    fn segment() -> Segment {
        Segment {
            docs: vec![SegmentDoc {
                document_id: "d".into(),
                title: "t.md".into(),
                first_chunk: 0,
                chunks: 1,
                embedding_model: Some("m".into()),
                dims: 2,
                first_value: 0,
            }],
            chunks: vec![Chunk { heading: None, text: "hello".into(), span: None }],
            lengths: vec![1],
            terms: vec!["hello".into()],
            term_ends: vec![1],
            postings: vec![0],
            frequencies: vec![1],
            vectors: vec![1.0, 0.0],
            analyzer: "2/english".into(),
        }
    }

    #[test]
    fn segments_written_before_analysers_were_recorded_are_read_as_legacy() {
        let s = segment();
        let v1 = SegmentV1 {
            docs: s.docs.clone(),
            chunks: s.chunks.clone(),
            lengths: s.lengths.clone(),
            terms: s.terms.clone(),
            term_ends: s.term_ends.clone(),
            postings: s.postings.clone(),
            frequencies: s.frequencies.clone(),
            vectors: s.vectors.clone(),
        };
        let read = Segment::decode(&frame(SEGMENT_V1_MAGIC, &v1)).unwrap();
        assert_eq!(read, Segment { analyzer: crate::analysis::LEGACY_ID.into(), ..segment() });
    }

    #[test]
    fn round_trip_and_every_damage_is_detected() {
        let bytes = segment().encode();
        assert_eq!(Segment::decode(&bytes), Ok(segment()));
        // Truncated anywhere, or any byte flipped: refused.
        for cut in 0..bytes.len() {
            assert!(Segment::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x20;
            assert!(Segment::decode(&flipped).is_err(), "flip at {i}");
        }
        // A segment whose parts disagree is refused even with a valid checksum.
        let mut wrong = segment();
        wrong.postings = vec![5];
        assert!(Segment::decode(&wrong.encode()).is_err());
        // A manifest is not a segment.
        assert!(Segment::decode(&Manifest::default().encode()).is_err());
        assert_eq!(Manifest::decode(&Manifest::default().encode()), Ok(Manifest::default()));
    }

    #[test]
    fn manifests_written_before_access_read_with_every_document_open() {
        use crate::store::{Access, DocEntry};
        let entry = DocEntry { segment: "s".into(), delta: "s".into(), etag: "e".into(), chunks: 2 };
        let v1 = ManifestV1 {
            generation: 7,
            segments: vec![],
            docs: [("d".to_owned(), entry.clone())].into(),
            deleted: [("x".to_owned(), 5)].into(),
            retired: vec![],
            compacting_until_ms: 1,
            collected_ms: 2,
        };
        let read = Manifest::decode(&frame(MANIFEST_V1_MAGIC, &v1)).unwrap();
        assert_eq!((read.generation, read.docs["d"].clone(), read.deleted["x"]), (7, entry, 5));
        assert!(read.access.is_empty());
        let mut now = read.clone();
        now.access.insert("d".into(), Access { groups: Some(vec!["hr".into()]), rev: 3 });
        assert_eq!(Manifest::decode(&now.encode()), Ok(now));
    }
}
