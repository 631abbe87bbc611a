//! A BERT encoder with mean pooling and L2 normalisation (the sentence-transformers recipe of
//! models such as all-MiniLM-L6-v2), on CPU with candle's tensors.
//!
//! The forward pass is written here rather than taken from `candle-transformers` (dozens of
//! models, minutes of compile time) and is shaped for embedding on CPU: the query, key and
//! value projections are one matrix product, weights are stored transposed so products read
//! them in order, the attention scale is folded into the query projection, GELU is one
//! vectorisable pass, and every hidden state stays two-dimensional (`tokens x hidden`).

use std::{fs, path::Path};

use candle_core::{safetensors::MmapedSafetensors, CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
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

/// A matrix product plus bias, the weight kept as `in x out` (transposed from PyTorch's).
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight)?.broadcast_add(&self.bias)
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
    if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
        return Err(ModelError::Unsupported("hidden size not divisible by the number of heads".into()));
    }
    Ok(config)
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`. The weights file is memory-mapped
    /// and each tensor copied out once (transposed where the forward pass wants it); the map is
    /// released before returning.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let config = read_config(dir)?;
        let path = dir.join("model.safetensors");
        // SAFETY: the map is read while this function runs and dropped before it returns; the
        // weights are installed read-only (a Lambda layer under /opt, or models/ locally) and
        // are not modified while a process loads them.
        let file = unsafe { MmapedSafetensors::new(&path) }
            .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?;
        let device = Device::Cpu;
        let prefix = if file.get("embeddings.word_embeddings.weight").is_ok() { "" } else { "bert." };
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, ModelError> {
            let tensor = file
                .load(&format!("{prefix}{name}"), &device)
                .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?
                .to_dtype(DType::F32)?;
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
        let linear = |name: &str, inputs: usize, outputs: usize| -> Result<Linear, ModelError> {
            Ok(Linear {
                weight: get(&format!("{name}.weight"), &[outputs, inputs])?.t()?.contiguous()?,
                bias: get(&format!("{name}.bias"), &[outputs])?,
            })
        };
        let scale = 1.0 / ((h / config.num_attention_heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let query = linear(&format!("{p}.attention.self.query"), h, h)?;
            let key = linear(&format!("{p}.attention.self.key"), h, h)?;
            let value = linear(&format!("{p}.attention.self.value"), h, h)?;
            // softmax(q k^T / sqrt(d)): the scale goes into q's weights once.
            let qkv = Linear {
                weight: Tensor::cat(&[(query.weight * scale)?, key.weight, value.weight], 1)?.contiguous()?,
                bias: Tensor::cat(&[(query.bias * scale)?, key.bias, value.bias], 0)?,
            };
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
        let types = file
            .load(&format!("{prefix}embeddings.token_type_embeddings.weight"), &device)
            .map_err(|e| ModelError::File { file: path.display().to_string(), reason: e.to_string() })?
            .to_dtype(DType::F32)?;
        if types.rank() != 2 || types.dim(1)? != h {
            return Err(ModelError::Unsupported(format!("token type embeddings of shape {:?}", types.dims())));
        }
        let bert = Self {
            word: get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type: types.get(0)?,
            norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
        };
        drop(file);
        Ok(bert)
    }

    pub fn dims(&self) -> usize {
        self.config.hidden_size
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

        // Padding gets -10000 before the softmax, as in BERT; rows of one length need none.
        let padded = lengths.iter().any(|&l| l < tokens);
        let mask_bias = if padded {
            let bias: Vec<f32> =
                lengths.iter().flat_map(|&l| (0..tokens).map(move |t| if t < l { 0.0 } else { -10_000.0 })).collect();
            Some(Tensor::from_vec(bias, (batch, 1, 1, tokens), &device)?)
        } else {
            None
        };

        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?.reshape((batch, tokens, 3, heads, head))?.permute((2, 0, 3, 1, 4))?;
            let q = qkv.get(0)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(bias) = &mask_bias {
                scores = scores.broadcast_add(bias)?;
            }
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch * tokens, h))?;
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let hidden = layer.up.forward(&attended)?.apply_op1_no_bwd(&Gelu)?;
            x = layer.output_norm.forward(&(layer.down.forward(&hidden)? + &attended)?)?;
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

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu-erf: expected f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu-erf: expected a contiguous tensor");
        };
        let out: Vec<f32> = data[start..end].iter().map(|&x| gelu(x)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf to within 1.2e-7 (Numerical Recipes' `erfcc`, a Chebyshev fit), branch-free but for
/// the sign, so the loop above vectorises.
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    (1.0 - erfc).copysign(x)
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
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!(gelu(-10.0).abs() < 1e-6);
    }
}
