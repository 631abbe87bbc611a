//! Property tests for the parsers that see untrusted input: they never panic, and they keep
//! their promises on any input (file names stay safe, chunks cover the text, events decode).

use coach::{
    documents::safe_filename,
    ingest::{
        chunk::{chunk_markdown, chunk_text, ChunkConfig},
        decode_key,
        extract::{extract, html_to_text},
    },
    llm::sse::SseDecoder,
    model::Kind,
    usage::base_name,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A served model name (the provider's text) never panics the price lookup, and its base
    /// is a non-empty start of it, itself its own base.
    #[test]
    fn base_names_are_prefixes_and_fixed_points(name in "[a-z0-9.@:é-]{0,40}|.*") {
        let base = base_name(&name);
        prop_assert!(name.starts_with(base));
        prop_assert!(base.is_empty() == name.split('@').next().unwrap_or("").is_empty());
        prop_assert_eq!(base_name(base), base);
    }

    #[test]
    fn safe_filenames_are_safe(name in any::<String>()) {
        let safe = safe_filename(&name);
        prop_assert!(!safe.is_empty());
        prop_assert!(!safe.contains('/') && !safe.contains('\\'));
        prop_assert!(!safe.chars().any(char::is_control));
        prop_assert!(!safe.starts_with('.'));
        prop_assert!(safe.chars().count() <= 120);
        prop_assert_eq!(safe_filename(&safe), safe.clone(), "idempotent");
    }

    #[test]
    fn chunks_cover_the_text_and_respect_the_size(text in "[a-z .\n#]{0,3000}", size in 100usize..1500, overlap in 0usize..50) {
        let config = ChunkConfig { size, overlap };
        for chunk in chunk_text(&text, config) {
            prop_assert!(!chunk.text.is_empty());
            prop_assert!(chunk.text.chars().count() <= size);
        }
        // Every word of the text is in some chunk.
        let chunks = chunk_text(&text, config);
        for word in text.split_whitespace().filter(|w| w.len() > 2) {
            prop_assert!(chunks.iter().any(|c| c.text.contains(word)), "lost {:?}", word);
        }
        let _ = chunk_markdown(&text, config);
    }

    #[test]
    fn chunking_any_unicode_never_panics(text in any::<String>(), size in 1usize..300, overlap in 0usize..300) {
        let config = ChunkConfig { size, overlap };
        let _ = chunk_text(&text, config);
        let _ = chunk_markdown(&text, config);
    }

    #[test]
    fn extractors_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for kind in [Kind::Text, Kind::Markdown, Kind::Html, Kind::Csv, Kind::Docx, Kind::Pdf] {
            let _ = extract(kind, &bytes);
        }
        let mut pdf = b"%PDF-1.4\n".to_vec();
        pdf.extend_from_slice(&bytes);
        let _ = extract(Kind::Pdf, &pdf);
    }

    #[test]
    fn html_to_text_never_keeps_tags(html in "[a-z<>/!\\-&;# ]{0,400}") {
        let text = html_to_text(&html);
        prop_assert!(!text.contains("<script"));
    }

    #[test]
    fn s3_keys_decode_without_panicking(raw in any::<String>()) {
        let _ = decode_key(&raw);
    }

    #[test]
    fn sse_decoding_is_independent_of_chunking(events in proptest::collection::vec("[a-z0-9 {}:\"]{0,40}", 0..10), cut in 0usize..400) {
        let stream: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let bytes = stream.as_bytes();
        let cut = cut.min(bytes.len());
        let mut whole = SseDecoder::default();
        let all = whole.push(bytes).unwrap();
        let mut split = SseDecoder::default();
        let mut parts = split.push(&bytes[..cut]).unwrap();
        parts.extend(split.push(&bytes[cut..]).unwrap());
        prop_assert_eq!(all, parts);
    }

    #[test]
    fn jwt_header_parsing_never_panics(token in any::<String>()) {
        let _ = jsonwebtoken::decode_header(&token);
    }
}
