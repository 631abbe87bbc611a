//! Text extraction from uploaded bytes: any input is text or an ExtractError, never a panic
//! that escapes `extract`, and never text with NUL bytes in it.
//!
//! The PDF parser is third-party and does panic on some damaged files; `extract` fences it
//! with `catch_unwind`. libFuzzer's panic hook would abort on those caught panics too, so the
//! hook is replaced with a silent one: a panic that escapes `extract` still aborts (libfuzzer-sys
//! checks the target's own `catch_unwind`), which is the bug this target looks for.
#![no_main]

use coach::{ingest::extract::extract, model::Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: { std::panic::set_hook(Box::new(|_| {})) }, |data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    // The first byte picks the type (the seeds in fuzz/seeds/extract start with theirs).
    let kind = match selector % 6 {
        0 => Kind::Text,
        1 => Kind::Markdown,
        2 => Kind::Html,
        3 => Kind::Csv,
        4 => Kind::Docx,
        _ => Kind::Pdf,
    };
    if let Ok(text) = extract(kind, bytes) {
        assert!(!text.contains('\0'), "extracted text keeps NUL bytes");
    }
});
