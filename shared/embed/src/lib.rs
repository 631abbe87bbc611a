//! Coach's embedded embedding model: a sentence-transformers BERT model (all-MiniLM-L6-v2 by
//! default) run in-process on CPU. A crate of its own so that it is compiled optimised even
//! in debug builds (tests, `make dev`), like the numeric crates it uses, and rebuilt only
//! when it changes.

#[cfg(target_arch = "x86_64")]
mod attention;
pub mod bert;
#[cfg(target_arch = "x86_64")]
mod bf16;
mod local;

pub use bert::{Kernels, ModelError};
pub use local::{missing_files, shared, LocalModel, MODEL_FILES};
