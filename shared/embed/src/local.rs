//! The embedded embedding model: a sentence-transformers BERT model (all-MiniLM-L6-v2 by
//! default) run in-process on CPU, loaded from a folder on first use.
//!
//! The folder (`COACH_EMBEDDING_MODEL_DIR`) holds what `scripts/model.sh` installs:
//! `model.safetensors`, `config.json`, `tokenizer.json`, `sentence_bert_config.json` and
//! `1_Pooling/config.json`. Nothing is fetched at run time. Loading costs about 0.1 s and the
//! weights' size in memory, so it happens on the first embedding, not at cold start; a
//! process loads a folder once however many embedders use it.
//!
//! Texts are tokenised, sorted by length and cut into batches of similar lengths, so little
//! of a batch is padding; results come back in the caller's order.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
};

use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bert::{Bert, Buffers, Kernels, ModelError};

/// Most rows in one forward pass.
const BATCH_ROWS: usize = 16;
/// Most tokens (rows x longest row) in one forward pass: bounds the activations (the
/// attention weights of a full batch of 256-token rows are 4 x 12 x 256 x 256 floats, 12.6 MB).
const BATCH_TOKENS: usize = 1024;

/// Files a model folder must have.
pub const MODEL_FILES: [&str; 5] =
    ["model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json"];

/// A loaded model: tokenizer and encoder.
pub struct LocalModel {
    tokenizer: Tokenizer,
    bert: Bert,
}

#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: usize,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let file = || path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| ModelError::File { file: file(), reason: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| ModelError::File { file: file(), reason: e.to_string() })
}

/// The folder's missing files, if any (a cheap check for start-up).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    MODEL_FILES.iter().copied().filter(|f| !dir.join(f).is_file()).collect()
}

impl LocalModel {
    /// Loads the model in `dir`. Mean pooling is the only pooling supported (what
    /// sentence-transformers' MiniLM, MPNet and BGE-small-style models without CLS pooling use).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::load_with(dir, Kernels::Fastest)
    }

    /// [`LocalModel::load`] with a choice of kernels (tests and benchmarks compare them).
    pub fn load_with(dir: &Path, kernels: Kernels) -> Result<Self, ModelError> {
        let pooling: PoolingConfig = read_json(&dir.join("1_Pooling/config.json"))?;
        if !pooling.pooling_mode_mean_tokens || pooling.pooling_mode_cls_token || pooling.pooling_mode_max_tokens {
            return Err(ModelError::Unsupported("pooling other than the mean of token embeddings".into()));
        }
        let sentence: SentenceConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let bert = Bert::load(dir, kernels)?;
        let path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?;
        // sentence-transformers truncates to max_seq_length and pads per batch; the file's own
        // settings (fixed padding to 128 in all-MiniLM-L6-v2's) are not what it was run with.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: sentence.max_seq_length.min(bert.max_tokens()),
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?;
        Ok(Self { tokenizer, bert })
    }

    pub fn dims(&self) -> usize {
        self.bert.dims()
    }

    /// The kernels in use (for logs and benchmarks).
    pub fn kernels(&self) -> &'static str {
        self.bert.kernels()
    }

    /// One unit vector per text, in order. CPU-bound: call from a blocking thread.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut encoded = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding =
                self.tokenizer.encode(*text, true).map_err(|e| ModelError::Unsupported(format!("tokeniser: {e}")))?;
            encoded.push(encoding.get_ids().to_vec());
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let mut buffers = Buffers::default();
        let mut ids = Vec::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            // Sorted ascending: the last row taken is the longest.
            let mut take = 0;
            while take < rest.len()
                && take < BATCH_ROWS
                && (take + 1) * encoded[rest[take]].len().max(1) <= BATCH_TOKENS
            {
                take += 1;
            }
            let (batch, tail) = rest.split_at(take.max(1));
            rest = tail;
            let tokens = batch.iter().map(|&i| encoded[i].len()).max().unwrap_or(0).max(1);
            ids.clear();
            ids.resize(batch.len() * tokens, 0);
            let mut lengths = Vec::with_capacity(batch.len());
            for (row, &i) in batch.iter().enumerate() {
                ids[row * tokens..row * tokens + encoded[i].len()].copy_from_slice(&encoded[i]);
                lengths.push(encoded[i].len().max(1));
            }
            for (&i, vector) in batch.iter().zip(self.bert.embed(&ids, &lengths, tokens, &mut buffers)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    }
}

/// Models loaded in this process, by folder: a second embedder over the same folder (the
/// test kit builds many) shares the weights instead of loading them again.
static LOADED: Mutex<Option<HashMap<PathBuf, Weak<LocalModel>>>> = Mutex::new(None);

/// The model in `dir`, loaded now unless this process holds it already.
pub fn shared(dir: &Path) -> Result<Arc<LocalModel>, ModelError> {
    let mut loaded = LOADED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let map = loaded.get_or_insert_with(HashMap::new);
    if let Some(model) = map.get(dir).and_then(Weak::upgrade) {
        return Ok(model);
    }
    let model = Arc::new(LocalModel::load(dir)?);
    map.retain(|_, weak| weak.strong_count() > 0);
    map.insert(dir.to_owned(), Arc::downgrade(&model));
    Ok(model)
}
