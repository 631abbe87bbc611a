//! The chunkers on any text and any size/overlap: no panic, no empty chunk, no chunk over the
//! size.
#![no_main]

use coach::ingest::chunk::{chunk_markdown, chunk_text, ChunkConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let config = ChunkConfig { size: usize::from(data[0]) * 8 + 1, overlap: usize::from(data[1]) * 4 };
    let Ok(text) = std::str::from_utf8(&data[2..]) else { return };
    for chunk in chunk_text(text, config).into_iter().chain(chunk_markdown(text, config)) {
        assert!(!chunk.text.trim().is_empty(), "empty chunk");
        assert!(chunk.text.chars().count() <= config.size, "chunk over the size");
    }
});
