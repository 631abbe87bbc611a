//! A BERT encoder with mean pooling and L2 normalisation (the sentence-transformers recipe of
//! models such as all-MiniLM-L6-v2), on CPU with candle's tensors.
//!
//! The forward pass is written here rather than taken from `candle-transformers` (dozens of
//! models, minutes of compile time) and is shaped for embedding on CPU: the query, key and
//! value projections are one matrix product, weights are stored transposed so products read
//! them in order, the attention scale is folded into the query projection, GELU is one
//! vectorisable pass, and every hidden state stays two-dimensional (`tokens x hidden`).

use std::{fs, path::Path};

use candle_core::{safetensors::Load, CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::SafeTensors;
use serde::Deserialize;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tensor computation failed: {0}")]
    Compute(#[from] candle_core::Error),
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
    /// bf16 products where the CPU has AVX512-BF16 (the `bf16` module) and attention in one
    /// pass where it has AVX-512F (the `attention` module); candle's f32 operations elsewhere.
    Fastest,
    /// f32 everywhere (candle's products): the reference the bf16 path is tested against.
    F32,
}

/// A matrix product plus bias.
enum Linear {
    /// The weight kept as `in x out` (transposed from PyTorch's), for candle's f32 product.
    F32 { weight: Tensor, bias: Tensor },
    #[cfg(target_arch = "x86_64")]
    Bf16(crate::bf16::Packed),
}

impl Linear {
    /// `weight` is `in x out`.
    fn new(weight: Tensor, bias: Tensor, kernels: Kernels) -> Result<Self, ModelError> {
        #[cfg(target_arch = "x86_64")]
        if kernels == Kernels::Fastest && crate::bf16::available() {
            let (inputs, outputs) = weight.dims2()?;
            let packed = crate::bf16::Packed::new(
                &weight.flatten_all()?.to_vec1::<f32>()?,
                &bias.to_vec1::<f32>()?,
                inputs,
                outputs,
            );
            return Ok(Linear::Bf16(packed));
        }
        let _ = kernels;
        Ok(Linear::F32 { weight, bias })
    }

    /// `x W + b`, then GELU if `gelu`.
    fn forward(&self, x: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
        match self {
            Linear::F32 { weight, bias } => {
                let y = x.matmul(weight)?.broadcast_add(bias)?;
                if gelu {
                    y.apply_op1_no_bwd(&Gelu)
                } else {
                    Ok(y)
                }
            }
            #[cfg(target_arch = "x86_64")]
            Linear::Bf16(packed) => x.contiguous()?.apply_op1_no_bwd(&Bf16Product { packed, gelu }),
        }
    }
}

/// [`crate::bf16::Packed::forward`] as a tensor operation on `rows x in`.
#[cfg(target_arch = "x86_64")]
struct Bf16Product<'a> {
    packed: &'a crate::bf16::Packed,
    gelu: bool,
}

#[cfg(target_arch = "x86_64")]
impl CustomOp1 for Bf16Product<'_> {
    fn name(&self) -> &'static str {
        "bf16-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), storage, layout)?;
        let (rows, inputs) = layout.shape().dims2()?;
        if inputs != self.packed.inputs() {
            candle_core::bail!("bf16-linear: input of shape {:?}", layout.shape());
        }
        let out = self.packed.forward(x, rows, self.gelu);
        Ok((CpuStorage::F32(out), Shape::from((rows, self.packed.outputs()))))
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// The encoder's weights, in memory.
pub struct Bert {
    config: BertConfig,
    /// Attention in one pass ([`crate::attention`]) instead of tensor operations.
    fused_attention: bool,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: Norm,
    layers: Vec<Layer>,
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
        let device = Device::Cpu;
        let prefix = if file.tensor("embeddings.word_embeddings.weight").is_ok() { "" } else { "bert." };
        let load = |name: &str| -> Result<Tensor, ModelError> {
            let view = file.tensor(&format!("{prefix}{name}")).map_err(|e| bad_file(e.to_string()))?;
            let tensor = view.load(&device)?.to_dtype(DType::F32)?;
            let data = view.data();
            let offset = data.as_ptr() as usize - map.as_ptr() as usize;
            // SAFETY: a read-only, private map of a file: dropped pages read back from the
            // file if touched again (they are not). Best effort: the load is correct without it.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, data.len()) };
            Ok(tensor)
        };
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, ModelError> {
            let tensor = load(name)?;
            if tensor.dims() != shape {
                return Err(ModelError::Unsupported(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    tensor.dims()
                )));
            }
            Ok(tensor)
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps as f32;
        let norm = |name: &str| -> Result<Norm, ModelError> {
            Ok(Norm { weight: get(&format!("{name}.weight"), &[h])?, bias: get(&format!("{name}.bias"), &[h])?, eps })
        };
        // Weights as `in x out` with their bias.
        let weights = |name: &str, inputs: usize, outputs: usize| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                get(&format!("{name}.weight"), &[outputs, inputs])?.t()?.contiguous()?,
                get(&format!("{name}.bias"), &[outputs])?,
            ))
        };
        let linear = |name: &str, inputs: usize, outputs: usize| -> Result<Linear, ModelError> {
            let (weight, bias) = weights(name, inputs, outputs)?;
            Linear::new(weight, bias, kernels)
        };
        let scale = 1.0 / ((h / config.num_attention_heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let query = weights(&format!("{p}.attention.self.query"), h, h)?;
            let key = weights(&format!("{p}.attention.self.key"), h, h)?;
            let value = weights(&format!("{p}.attention.self.value"), h, h)?;
            // softmax(q k^T / sqrt(d)): the scale goes into q's weights once.
            let qkv = Linear::new(
                Tensor::cat(&[(query.0 * scale)?, key.0, value.0], 1)?.contiguous()?,
                Tensor::cat(&[(query.1 * scale)?, key.1, value.1], 0)?,
                kernels,
            )?;
            layers.push(Layer {
                qkv,
                attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: linear(&format!("{p}.intermediate.dense"), h, i)?,
                down: linear(&format!("{p}.output.dense"), i, h)?,
                output_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        // The type vocabulary's size varies; only row 0 (single-sentence input) is used.
        let types = load("embeddings.token_type_embeddings.weight")?;
        if types.rank() != 2 || types.dim(1)? != h {
            return Err(ModelError::Unsupported(format!("token type embeddings of shape {:?}", types.dims())));
        }
        #[cfg(target_arch = "x86_64")]
        let fused_attention =
            kernels == Kernels::Fastest && crate::attention::available(h / config.num_attention_heads);
        #[cfg(not(target_arch = "x86_64"))]
        let fused_attention = false;
        let bert = Self {
            fused_attention,
            word: get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type: types.get(0)?,
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
        let bf16 = self.layers.first().is_some_and(|l| !matches!(l.qkv, Linear::F32 { .. }));
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
    /// ids, right-padded; `lengths[b]` is row b's real length (at least 1).
    pub fn embed(&self, ids: Vec<u32>, lengths: &[usize], tokens: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let batch = lengths.len();
        let (h, heads) = (self.config.hidden_size, self.config.num_attention_heads);
        let head = h / heads;
        if tokens == 0 || tokens > self.max_tokens() || ids.len() != batch * tokens {
            return Err(ModelError::Unsupported(format!("a batch of {batch} x {tokens} tokens")));
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, batch * tokens, &device)?;
        let x = self
            .word
            .index_select(&ids, 0)?
            .reshape((batch, tokens, h))?
            .broadcast_add(&self.position.narrow(0, 0, tokens)?)?
            .broadcast_add(&self.token_type)?
            .reshape((batch * tokens, h))?;
        let mut x = self.norm.forward(&x)?;

        // Padding is left out of every softmax (BERT adds -10000 to it, which amounts to the same).
        let softmax = MaskedSoftmax { lengths: lengths.to_vec(), heads, tokens };

        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x, false)?;
            let context = if self.fused_attention {
                qkv.apply_op1_no_bwd(&FusedAttention { lengths, heads, head, tokens })?
            } else {
                let qkv = qkv.reshape((batch, tokens, 3, heads, head))?.permute((2, 0, 3, 1, 4))?;
                let q = qkv.get(0)?.contiguous()?;
                let k = qkv.get(1)?.contiguous()?;
                let v = qkv.get(2)?.contiguous()?;
                let weights = q.matmul(&k.t()?)?.apply_op1_no_bwd(&softmax)?;
                weights.matmul(&v)?.transpose(1, 2)?.reshape((batch * tokens, h))?
            };
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context, false)? + &x)?)?;
            let hidden = layer.up.forward(&attended, true)?;
            x = layer.output_norm.forward(&(layer.down.forward(&hidden, false)? + &attended)?)?;
        }

        // Mean over each row's real tokens, then unit length.
        let x = x.flatten_all()?.to_vec1::<f32>()?;
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

/// GELU with the exact (erf) form BERT was trained with: `x/2 * (1 + erf(x/sqrt(2)))`.
struct Gelu;

fn contiguous_f32<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&data[start..end])
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out: Vec<f32> = contiguous_f32(self.name(), storage, layout)?.iter().map(|&x| gelu(x)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// [`crate::attention::attend`] as a tensor operation on the fused `(batch * tokens) x 3 hidden`.
struct FusedAttention<'a> {
    lengths: &'a [usize],
    heads: usize,
    head: usize,
    tokens: usize,
}

impl CustomOp1 for FusedAttention<'_> {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    #[cfg(target_arch = "x86_64")]
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(self.name(), storage, layout)?;
        let hidden = self.heads * self.head;
        if layout.shape().dims() != [self.lengths.len() * self.tokens, 3 * hidden] {
            candle_core::bail!("fused-attention: input of shape {:?}", layout.shape());
        }
        let shape =
            crate::attention::Shape { tokens: self.tokens, heads: self.heads, head: self.head, lengths: self.lengths };
        let out = crate::attention::attend(qkv, &shape);
        Ok((CpuStorage::F32(out), Shape::from((self.lengths.len() * self.tokens, hidden))))
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let _ = (self.lengths, self.heads, self.head, self.tokens);
        candle_core::bail!("fused-attention: x86-64 only")
    }
}

/// Softmax over the last axis of attention scores `[batch, heads, tokens, tokens]`, where
/// row b's keys beyond `lengths[b]` are padding: they get weight 0, and so do the rows of
/// padded query positions (their outputs are never pooled).
struct MaskedSoftmax {
    lengths: Vec<usize>,
    heads: usize,
    tokens: usize,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let scores = contiguous_f32(self.name(), storage, layout)?;
        let t = self.tokens;
        if scores.len() != self.lengths.len() * self.heads * t * t {
            candle_core::bail!("masked-softmax: scores of shape {:?}", layout.shape());
        }
        let mut out = vec![0f32; scores.len()];
        for ((rows_in, rows_out), &valid) in
            scores.chunks_exact(self.heads * t * t).zip(out.chunks_exact_mut(self.heads * t * t)).zip(&self.lengths)
        {
            for (row_in, row_out) in rows_in.chunks_exact(t).zip(rows_out.chunks_exact_mut(t)) {
                softmax_row(&row_in[..valid], &mut row_out[..valid]);
            }
            // Padded query rows: left at zero.
            for head in rows_out.chunks_exact_mut(t * t) {
                head[valid * t..].fill(0.0);
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn softmax_row(scores: &[f32], out: &mut [f32]) {
    // Eight lanes of running maxima and sums: the loops vectorise (a plain fold would not).
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = scores.chunks_exact(8);
    for chunk in chunks.by_ref() {
        for (lane, &s) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(s);
        }
    }
    let max = chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max);
    for (o, &s) in out.iter_mut().zip(scores) {
        *o = exp(s - max);
    }
    let mut sums = [0f32; 8];
    let mut chunks = out.chunks_exact(8);
    for chunk in chunks.by_ref() {
        for (sum, &o) in sums.iter_mut().zip(chunk) {
            *sum += o;
        }
    }
    let sum: f32 = chunks.remainder().iter().sum::<f32>() + sums.iter().sum::<f32>();
    let scale = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= scale);
}

#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf to within 1.2e-7 (Numerical Recipes' `erfcc`, a Chebyshev fit), branch-free but for
/// the sign, so the loop above vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * exp(poly);
    (1.0 - erfc).copysign(x)
}

/// e^x to about 2e-7 relative for x in [-87, 88] (0 below), without a library call, so the
/// loops that use it vectorise: x = k ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor series
/// to r^7 / 7!, 2^k by building the float's exponent.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    // The integer k sits in the low bits of `shifted`: integer arithmetic (which vectorises)
    // instead of a float-to-int conversion.
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let r = (x - k * 0.693_145_75) - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(k_bits.wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_the_reference_values() {
        // erf at a few points, from tables (Abramowitz and Stegun, 7.1).
        for (x, expected) in
            [(0.0, 0.0), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.0, -0.842_700_8)]
        {
            assert!((erf(x) - expected).abs() < 3e-7, "erf({x}) = {} not {expected}", erf(x));
        }
        assert_eq!(gelu(0.0), 0.0);
        for x in [-87.0f32, -20.0, -1.5, -0.3, 0.0, 0.2, 1.0, 3.7, 10.0, 50.0, 88.0] {
            let (fast, libm) = (exp(x), x.exp());
            assert!(((fast - libm) / libm).abs() < 5e-7, "exp({x}) = {fast} not {libm}");
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!(gelu(-10.0).abs() < 1e-6);
    }
}
