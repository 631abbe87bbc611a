//! A BERT encoder with mean pooling and L2 normalisation (the sentence-transformers recipe of
//! models such as all-MiniLM-L6-v2), on CPU.
//!
//! The forward pass is written here rather than taken from a model zoo and is shaped for
//! embedding on CPU: the query, key and value projections are one matrix product, the
//! attention scale is folded into the query projection, GELU is applied as products are
//! stored, layer norms add their residual in place, every hidden state is a plain
//! `tokens x hidden` buffer, and the buffers are reused from batch to batch (fresh ones cost a
//! page fault per 4 KiB, a tenth of the time). Products are `gemm`'s in f32 or the `bf16`
//! kernels; attention is the `attention` module's.

use std::{fs, path::Path};

use memmap2::{Mmap, UncheckedAdvice};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::{attention, math, norm::LayerNorm};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
}

/// The fields of a BERT `config.json` the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

/// Which matrix-product kernels the encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// bf16 products where the CPU has AVX512-BF16 (the `bf16` module) and the AVX-512
    /// attention kernel where it has AVX-512F; `gemm`'s f32 products and the portable
    /// attention kernel elsewhere.
    Fastest,
    /// f32 products (`gemm`) and the portable attention kernel: the reference the faster
    /// kernels are tested against.
    F32,
}

/// A matrix product plus bias.
enum Linear {
    /// `weight` is `k x n` (transposed from PyTorch's `n x k`), for `gemm`'s f32 product.
    F32 { weight: Vec<f32>, bias: Vec<f32>, k: usize, n: usize },
    #[cfg(target_arch = "x86_64")]
    Bf16(crate::bf16::Packed),
}

impl Linear {
    /// `weight` is `k x n`.
    fn new(weight: Vec<f32>, bias: Vec<f32>, k: usize, n: usize, kernels: Kernels) -> Self {
        #[cfg(target_arch = "x86_64")]
        if kernels == Kernels::Fastest && crate::bf16::available() {
            return Linear::Bf16(crate::bf16::Packed::new(&weight, &bias, k, n));
        }
        let _ = kernels;
        Linear::F32 { weight, bias, k, n }
    }

    /// `x W + b` for `x` of `rows x k`, then GELU if `gelu`: `out` becomes the `rows x n`.
    fn forward(&self, x: &[f32], rows: usize, gelu: bool, out: &mut Vec<f32>) {
        match self {
            Linear::F32 { weight, bias, k, n } => {
                assert_eq!(x.len(), rows * k, "x is rows x k");
                out.clear();
                for _ in 0..rows {
                    out.extend_from_slice(bias);
                }
                let parallelism = if rayon::current_num_threads() > 1 {
                    gemm::Parallelism::Rayon(0)
                } else {
                    gemm::Parallelism::None
                };
                // SAFETY: row-major `out` (rows x n), `x` (rows x k) and `weight` (k x n), sizes
                // checked above and at load; `out` = 1 * out + 1 * x W.
                unsafe {
                    gemm::gemm(
                        rows,
                        *n,
                        *k,
                        out.as_mut_ptr(),
                        1,
                        *n as isize,
                        true,
                        x.as_ptr(),
                        1,
                        *k as isize,
                        weight.as_ptr(),
                        1,
                        *n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    )
                };
                if gelu {
                    math::gelu_in_place(out);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Linear::Bf16(packed) => packed.forward(x, rows, gelu, out),
        }
    }

    fn is_f32(&self) -> bool {
        matches!(self, Linear::F32 { .. })
    }
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    output_norm: LayerNorm,
}

/// The encoder's weights, in memory.
pub struct Bert {
    config: BertConfig,
    /// Attention with the AVX-512 kernel.
    fused_attention: bool,
    /// `vocab x hidden`, `positions x hidden`, and row 0 of the token types (`hidden`).
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    norm: LayerNorm,
    layers: Vec<Layer>,
}

/// The hidden states of a batch, kept from one batch to the next.
#[derive(Default)]
pub struct Buffers {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
    next: Vec<f32>,
}

/// A tensor of the weights file as f32 (stored as f32, f16 or bf16).
fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, ModelError> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => return Err(ModelError::Unsupported(format!("{name} stored as {other:?}"))),
    })
}

/// `rows x cols` row-major to `cols x rows`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for (r, row) in values.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

fn read_config(dir: &Path) -> Result<BertConfig, ModelError> {
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path)
        .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?;
    let config: BertConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?;
    if config.hidden_act != "gelu" {
        return Err(ModelError::Unsupported(format!("activation {:?} (expected gelu)", config.hidden_act)));
    }
    if config.position_embedding_type.as_deref().is_some_and(|t| t != "absolute") {
        return Err(ModelError::Unsupported("position embeddings other than absolute".into()));
    }
    if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
        return Err(ModelError::Unsupported("hidden size not divisible by the number of heads".into()));
    }
    Ok(config)
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`. The weights file is memory-mapped
    /// and each tensor copied out once (transposed where the forward pass wants it), its pages
    /// released from the map as soon as they are copied: the process never holds the weights
    /// twice. The map is dropped before returning.
    pub fn load(dir: &Path, kernels: Kernels) -> Result<Self, ModelError> {
        let config = read_config(dir)?;
        let path = dir.join("model.safetensors");
        let bad_file = |reason: String| ModelError::File { file: path.display().to_string(), reason };
        let file = fs::File::open(&path).map_err(|e| bad_file(e.to_string()))?;
        // SAFETY: the map is read while this function runs and dropped before it returns; the
        // weights are installed read-only (a Lambda layer under /opt, or models/ locally) and
        // are not modified while a process loads them.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad_file(e.to_string()))?;
        let file = SafeTensors::deserialize(&map).map_err(|e| bad_file(e.to_string()))?;
        let prefix = if file.tensor("embeddings.word_embeddings.weight").is_ok() { "" } else { "bert." };
        // A tensor of the expected shape, as f32.
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ModelError> {
            let view = file.tensor(&format!("{prefix}{name}")).map_err(|e| bad_file(format!("{name}: {e}")))?;
            if view.shape() != shape {
                return Err(ModelError::Unsupported(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            let values = to_f32(name, view.dtype(), view.data())?;
            let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
            // SAFETY: a read-only, private map of a file: dropped pages read back from the
            // file if touched again (they are not). Best effort: the load is correct without it.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, view.data().len()) };
            Ok(values)
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps as f32;
        let norm = |name: &str| -> Result<LayerNorm, ModelError> {
            Ok(LayerNorm {
                weight: get(&format!("{name}.weight"), &[h])?,
                bias: get(&format!("{name}.bias"), &[h])?,
                eps,
            })
        };
        // Weights as `in x out` with their bias.
        let weights = |name: &str, inputs: usize, outputs: usize| -> Result<(Vec<f32>, Vec<f32>), ModelError> {
            let weight = get(&format!("{name}.weight"), &[outputs, inputs])?;
            Ok((transpose(&weight, outputs, inputs), get(&format!("{name}.bias"), &[outputs])?))
        };
        let linear = |name: &str, inputs: usize, outputs: usize| -> Result<Linear, ModelError> {
            let (weight, bias) = weights(name, inputs, outputs)?;
            Ok(Linear::new(weight, bias, inputs, outputs, kernels))
        };
        let scale = 1.0 / ((h / config.num_attention_heads) as f32).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            // One `h x 3h` product: [query | key | value] side by side in each row, and
            // softmax(q k^T / sqrt(d)): the scale goes into q's weights once.
            let [query, key, value] =
                ["query", "key", "value"].map(|part| weights(&format!("{p}.attention.self.{part}"), h, h));
            let mut query = query?;
            query.0.iter_mut().chain(query.1.iter_mut()).for_each(|v| *v *= scale);
            let parts = [query, key?, value?];
            let mut weight = Vec::with_capacity(h * 3 * h);
            for row in 0..h {
                for (w, _) in &parts {
                    weight.extend_from_slice(&w[row * h..(row + 1) * h]);
                }
            }
            let bias: Vec<f32> = parts.iter().flat_map(|(_, b)| b).copied().collect();
            layers.push(Layer {
                qkv: Linear::new(weight, bias, h, 3 * h, kernels),
                attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: linear(&format!("{p}.intermediate.dense"), h, i)?,
                down: linear(&format!("{p}.output.dense"), i, h)?,
                output_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        // The type vocabulary's size varies; only row 0 (single-sentence input) is used.
        let types_name = "embeddings.token_type_embeddings.weight";
        let types =
            file.tensor(&format!("{prefix}{types_name}")).map_err(|e| bad_file(format!("{types_name}: {e}")))?;
        let types_shape = types.shape().to_vec();
        if types_shape.len() != 2 || types_shape[0] == 0 || types_shape[1] != h {
            return Err(ModelError::Unsupported(format!("token type embeddings of shape {types_shape:?}")));
        }
        let mut token_type = get(types_name, &types_shape)?;
        token_type.truncate(h);
        let fused_attention = kernels == Kernels::Fastest && attention::fused_available(h / config.num_attention_heads);
        let bert = Self {
            fused_attention,
            word: get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type,
            norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
        };
        drop(file);
        drop(map);
        Ok(bert)
    }

    pub fn dims(&self) -> usize {
        self.config.hidden_size
    }

    /// The kernels in use, e.g. "bf16 products (AVX512-BF16), fused attention (AVX-512)" or "f32".
    pub fn kernels(&self) -> &'static str {
        let bf16 = self.layers.first().is_some_and(|l| !l.qkv.is_f32());
        match (bf16, self.fused_attention) {
            (true, true) => "bf16 products (AVX512-BF16), fused attention (AVX-512)",
            (true, false) => "bf16 products (AVX512-BF16)",
            (false, true) => "f32 products, fused attention (AVX-512)",
            (false, false) => "f32",
        }
    }

    /// The longest input, in tokens, the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Unit-length sentence embeddings of a batch: `ids` holds `batch` rows of `tokens` token
    /// ids, right-padded; `lengths[b]` is row b's real length (at least 1). `buffers` hold the
    /// hidden states (pass the same ones for every batch of a call).
    pub fn embed(
        &self,
        ids: &[u32],
        lengths: &[usize],
        tokens: usize,
        buffers: &mut Buffers,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let batch = lengths.len();
        let (h, heads) = (self.config.hidden_size, self.config.num_attention_heads);
        let rows = batch * tokens;
        if tokens == 0
            || tokens > self.max_tokens()
            || ids.len() != rows
            || lengths.iter().any(|&l| l == 0 || l > tokens)
        {
            return Err(ModelError::Unsupported(format!("a batch of {batch} x {tokens} tokens")));
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::Unsupported(format!("token id {id} beyond the vocabulary")));
        }
        let Buffers { x, qkv, context, attended, hidden, next } = buffers;
        // Word + position + token type, then the embeddings' layer norm.
        x.clear();
        for (t, &id) in ids.iter().enumerate() {
            let (id, position) = (id as usize, t % tokens);
            let word = &self.word[id * h..(id + 1) * h];
            let position = &self.position[position * h..(position + 1) * h];
            x.extend(word.iter().zip(position).zip(&self.token_type).map(|((w, p), t)| w + p + t));
        }
        self.norm.forward(x, None);

        // Padding is left out of every softmax (BERT adds -10000 to it, which amounts to the same).
        let shape = attention::Shape { tokens, heads, head: h / heads, lengths };
        for layer in &self.layers {
            layer.qkv.forward(x, rows, false, qkv);
            attention::attend(qkv, &shape, self.fused_attention, context);
            layer.attention_out.forward(context, rows, false, attended);
            layer.attention_norm.forward(attended, Some(x));
            layer.up.forward(attended, rows, true, hidden);
            layer.down.forward(hidden, rows, false, next);
            layer.output_norm.forward(next, Some(attended));
            std::mem::swap(x, next);
        }

        // Mean over each row's real tokens, then unit length.
        let out = lengths
            .iter()
            .enumerate()
            .map(|(b, &length)| {
                let mut mean = vec![0f32; h];
                for row in x[b * tokens * h..].chunks_exact(h).take(length) {
                    mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                }
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                mean.iter_mut().for_each(|v| *v /= norm);
                mean
            })
            .collect();
        Ok(out)
    }
}
