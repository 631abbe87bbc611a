//! Layer normalisation of a residual sum, BERT's `LayerNorm(x + residual)`, in place and in
//! one pass over the rows: each row is summed, normalised and scaled while it sits in the L1
//! cache.
//!
//! Mean and variance are taken in two passes over the row (not `E[x^2] - E[x]^2`, which loses
//! digits when the mean is large), each with 16 running sums so the compiler vectorises them.
//! On x86-64 CPUs with AVX-512 the same code is compiled for it and chosen at run time.

use rayon::prelude::*;

use crate::math::lane_sum;

/// Rows per task when rayon has more than one thread.
const BLOCK_ROWS: usize = 64;

/// A layer norm's parameters.
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm {
    /// `x` becomes `LayerNorm(x + residual)` (or of `x` alone), over rows of `weight.len()`.
    ///
    /// # Panics
    /// If `x` is not whole rows or `residual` is not as long as `x`.
    pub fn forward(&self, x: &mut [f32], residual: Option<&[f32]>) {
        let width = self.weight.len();
        assert!(width > 0 && x.len().is_multiple_of(width), "x is whole rows of {width}");
        assert_eq!(self.bias.len(), width, "bias is as wide as weight");
        if let Some(residual) = residual {
            assert_eq!(residual.len(), x.len(), "the residual is as long as x");
        }
        let run = |(block, rows): (usize, &mut [f32])| {
            let residual = residual.map(|r| &r[block * BLOCK_ROWS * width..][..rows.len()]);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { normalise_avx512(rows, residual, self) };
                return;
            }
            normalise(rows, residual, self);
        };
        if x.len() > BLOCK_ROWS * width && rayon::current_num_threads() > 1 {
            x.par_chunks_mut(BLOCK_ROWS * width).enumerate().for_each(run);
        } else {
            x.chunks_mut(BLOCK_ROWS * width).enumerate().for_each(run);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn normalise_avx512(rows: &mut [f32], residual: Option<&[f32]>, norm: &LayerNorm) {
    normalise(rows, residual, norm);
}

/// Adds `residual` to `rows` and normalises each row, in place.
#[inline(always)]
fn normalise(rows: &mut [f32], residual: Option<&[f32]>, norm: &LayerNorm) {
    let width = norm.weight.len();
    let n = width as f32;
    for (r, row) in rows.chunks_exact_mut(width).enumerate() {
        if let Some(residual) = residual {
            for (v, &add) in row.iter_mut().zip(&residual[r * width..(r + 1) * width]) {
                *v += add;
            }
        }
        let mean = lane_sum(row, |v| v) / n;
        let variance = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
        let scale = 1.0 / (variance + norm.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
            *v = (*v - mean) * scale * w + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook formula in f64.
    fn reference(x: &[f32], residual: Option<&[f32]>, norm: &LayerNorm) -> Vec<f32> {
        let width = norm.weight.len();
        let mut out = Vec::new();
        for (r, row) in x.chunks(width).enumerate() {
            let row: Vec<f64> = row
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 + residual.map_or(0.0, |res| res[r * width + i] as f64))
                .collect();
            let mean = row.iter().sum::<f64>() / width as f64;
            let variance = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
            let scale = 1.0 / (variance + norm.eps as f64).sqrt();
            out.extend(
                row.iter()
                    .enumerate()
                    .map(|(i, v)| ((v - mean) * scale * norm.weight[i] as f64 + norm.bias[i] as f64) as f32),
            );
        }
        out
    }

    #[test]
    fn matches_the_textbook_layer_norm_with_and_without_a_residual() {
        let mut next = crate::uniform(5, 3.0);
        // Widths with and without a remainder of 16; more rows than one block; a large mean.
        for (width, rows, offset) in [(384, 130, 0.0), (20, 3, 0.0), (7, 1, 0.0), (64, 5, 1000.0)] {
            let norm = LayerNorm {
                weight: (0..width).map(|_| 1.0 + next() / 3.0).collect(),
                bias: (0..width).map(|_| next()).collect(),
                eps: 1e-12,
            };
            let x: Vec<f32> = (0..rows * width).map(|_| next() + offset).collect();
            let residual: Vec<f32> = (0..rows * width).map(|_| next()).collect();
            for residual in [None, Some(&residual[..])] {
                let mut got = x.clone();
                norm.forward(&mut got, residual);
                let want = reference(&x, residual, &norm);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 1e-4, "width {width}, offset {offset}, at {i}: {g} vs {w}");
                }
            }
        }
    }
}
