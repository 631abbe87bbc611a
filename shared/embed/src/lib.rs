//! Coach's embedded embedding model: a sentence-transformers BERT model (all-MiniLM-L6-v2 by
//! default) run in-process on CPU. A crate of its own so that it is compiled optimised even
//! in debug builds (tests, `make dev`), like the numeric crates it uses, and rebuilt only
//! when it changes.

mod attention;
pub mod bert;
#[cfg(target_arch = "x86_64")]
mod bf16;
mod local;
mod math;
mod norm;

pub use bert::{Kernels, ModelError};
pub use local::{missing_files, shared, LocalModel, MODEL_FILES};

/// Test inputs: repeatable floats spread over `[-bound, bound]` (xorshift32 from `seed`).
#[cfg(test)]
fn uniform(mut seed: u32, bound: f32) -> impl FnMut() -> f32 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32 * 2.0 - 1.0) * bound
    }
}
