//! Self-attention in one pass on x86-64 CPUs with AVX-512: for each row of the batch and each
//! head, scores against the row's real keys, a softmax and the weighted sum of values, read
//! straight from the fused query/key/value projection and written straight into the context
//! (`tokens x hidden`), with no permuted copies, no padded keys and no score tensor.
//!
//! The same arithmetic as the tensor path (f32 products, the same `exp`), summed in another
//! order. Padded query rows get a zero context, as there.

use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::bf16::exp16;

/// Whether this CPU runs [`attend`] for heads of `head` dimensions.
pub fn available(head: usize) -> bool {
    matches!(head, 32 | 64) && is_x86_feature_detected!("avx512f")
}

/// The attention shape of one batch.
pub struct Shape<'a> {
    pub tokens: usize,
    pub heads: usize,
    pub head: usize,
    /// Real tokens of each row (at least 1, at most `tokens`).
    pub lengths: &'a [usize],
}

/// `qkv` is `(batch * tokens) x 3 hidden` (queries, already scaled, then keys then values,
/// each head-major); the result is the context, `(batch * tokens) x hidden`.
///
/// # Panics
/// If the sizes disagree or the CPU lacks AVX-512F for this head size (see [`available`]).
pub fn attend(qkv: &[f32], shape: &Shape<'_>) -> Vec<f32> {
    assert!(available(shape.head), "fused attention without AVX-512F");
    let hidden = shape.heads * shape.head;
    let batch = shape.lengths.len();
    assert_eq!(qkv.len(), batch * shape.tokens * 3 * hidden, "qkv is (batch x tokens) x 3 hidden");
    assert!(shape.lengths.iter().all(|&l| (1..=shape.tokens).contains(&l)), "lengths within 1..=tokens");
    let mut out = vec![0f32; batch * shape.tokens * hidden];
    // One task per row of the batch; its heads in turn.
    let run = |(b, out): (usize, &mut [f32])| {
        let rows = &qkv[b * shape.tokens * 3 * hidden..(b + 1) * shape.tokens * 3 * hidden];
        for h in 0..shape.heads {
            // SAFETY: AVX-512F is present (asserted above); the slices hold the rows indexed.
            unsafe {
                match shape.head {
                    32 => head::<2>(rows, out, shape, h, shape.lengths[b]),
                    _ => head::<4>(rows, out, shape, h, shape.lengths[b]),
                }
            }
        }
    };
    let rows = shape.tokens * hidden;
    if batch > 1 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(rows).enumerate().for_each(run);
    } else {
        out.chunks_mut(rows).enumerate().for_each(run);
    }
    out
}

/// One head of one row of the batch; `D` is the head size in vectors of 16.
#[target_feature(enable = "avx512f")]
unsafe fn head<const D: usize>(rows: &[f32], out: &mut [f32], shape: &Shape<'_>, h: usize, valid: usize) {
    let hidden = shape.heads * shape.head;
    let stride = 3 * hidden;
    let padded = valid.div_ceil(16) * 16;
    let (q_at, k_at, v_at) = (h * shape.head, hidden + h * shape.head, 2 * hidden + h * shape.head);
    // Keys transposed (dimension-major), so a score vector is 16 keys at once; values copied
    // together (in `rows` they are 3 hidden apart, a page each: every query would miss the TLB).
    let mut keys = vec![0f32; D * 16 * padded];
    let mut values = Vec::with_capacity(valid * D * 16);
    for j in 0..valid {
        let key = &rows[j * stride + k_at..j * stride + k_at + D * 16];
        for (d, &value) in key.iter().enumerate() {
            keys[d * padded + j] = value;
        }
        values.extend_from_slice(&rows[j * stride + v_at..j * stride + v_at + D * 16]);
    }
    let mut scores = vec![0f32; padded];
    let last_mask: __mmask16 = if valid.is_multiple_of(16) { 0xffff } else { (1u16 << (valid % 16)) - 1 };
    for i in 0..valid {
        let query = rows.as_ptr().add(i * stride + q_at);
        // Scores, 16 keys per vector, four vectors at a time (four chains of sums).
        let mut c = 0;
        while c + 64 <= padded {
            let mut acc = [_mm512_setzero_ps(); 4];
            for d in 0..D * 16 {
                let q = _mm512_set1_ps(*query.add(d));
                let k = keys.as_ptr().add(d * padded + c);
                for (u, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(q, _mm512_loadu_ps(k.add(u * 16)), *acc);
                }
            }
            for (u, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(scores.as_mut_ptr().add(c + u * 16), *acc);
            }
            c += 64;
        }
        while c < padded {
            let mut acc = _mm512_setzero_ps();
            for d in 0..D * 16 {
                acc = _mm512_fmadd_ps(
                    _mm512_set1_ps(*query.add(d)),
                    _mm512_loadu_ps(keys.as_ptr().add(d * padded + c)),
                    acc,
                );
            }
            _mm512_storeu_ps(scores.as_mut_ptr().add(c), acc);
            c += 16;
        }
        // Keys beyond the row's length never count.
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in (0..padded).step_by(16) {
            let mask = if c + 16 >= padded { last_mask } else { 0xffff };
            max = _mm512_mask_max_ps(max, mask, max, _mm512_loadu_ps(scores.as_ptr().add(c)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut sum = _mm512_setzero_ps();
        for c in (0..padded).step_by(16) {
            // Padding lanes: set to 0.
            let mask = if c + 16 >= padded { last_mask } else { 0xffff };
            let e = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(_mm512_loadu_ps(scores.as_ptr().add(c)), max)));
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(scores.as_mut_ptr().add(c), e);
        }
        let scale = 1.0 / _mm512_reduce_add_ps(sum);
        // Weighted sum of the values, two keys at a time for two chains of sums.
        let mut even = [_mm512_setzero_ps(); D];
        let mut odd = [_mm512_setzero_ps(); D];
        let mut j = 0;
        while j + 1 < valid {
            let (p0, p1) = (_mm512_set1_ps(scores[j]), _mm512_set1_ps(scores[j + 1]));
            let (v0, v1) = (values.as_ptr().add(j * D * 16), values.as_ptr().add((j + 1) * D * 16));
            for d in 0..D {
                even[d] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0.add(d * 16)), even[d]);
                odd[d] = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1.add(d * 16)), odd[d]);
            }
            j += 2;
        }
        if j < valid {
            let p = _mm512_set1_ps(scores[j]);
            let v = values.as_ptr().add(j * D * 16);
            for (d, sum) in even.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(p, _mm512_loadu_ps(v.add(d * 16)), *sum);
            }
        }
        let target = out.as_mut_ptr().add(i * hidden + h * shape.head);
        for d in 0..D {
            _mm512_storeu_ps(target.add(d * 16), _mm512_mul_ps(_mm512_add_ps(even[d], odd[d]), _mm512_set1_ps(scale)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention as written in the paper, in f64, padded keys left out.
    fn naive(qkv: &[f32], shape: &Shape<'_>) -> Vec<f32> {
        let (t, hd) = (shape.tokens, shape.head);
        let hidden = shape.heads * hd;
        let mut out = vec![0f32; shape.lengths.len() * t * hidden];
        for (b, &valid) in shape.lengths.iter().enumerate() {
            let row = |j: usize| &qkv[(b * t + j) * 3 * hidden..(b * t + j + 1) * 3 * hidden];
            for h in 0..shape.heads {
                for i in 0..valid {
                    let q = &row(i)[h * hd..(h + 1) * hd];
                    let scores: Vec<f64> = (0..valid)
                        .map(|j| {
                            let k = &row(j)[hidden + h * hd..hidden + (h + 1) * hd];
                            q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = weights.iter().sum();
                    for d in 0..hd {
                        let value: f64 =
                            (0..valid).map(|j| weights[j] / sum * row(j)[2 * hidden + h * hd + d] as f64).sum();
                        out[(b * t + i) * hidden + h * hd + d] = value as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_textbook_attention_with_padding_and_both_head_sizes() {
        if !available(32) {
            eprintln!("no AVX-512F on this CPU: the tensor path is what runs here");
            return;
        }
        let mut next = crate::uniform(11, 2.0);
        // Lengths below, at and across the 16- and 64-key steps; one row of one token.
        for (head, heads, tokens, lengths) in
            [(32, 3, 70, vec![70, 1, 16, 17, 64, 65]), (64, 2, 20, vec![20, 3]), (32, 1, 1, vec![1])]
        {
            let shape = Shape { tokens, heads, head, lengths: &lengths };
            let qkv: Vec<f32> = (0..lengths.len() * tokens * 3 * heads * head).map(|_| next()).collect();
            let got = attend(&qkv, &shape);
            let want = naive(&qkv, &shape);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-4, "head {head}, at {i}: {g} vs {w}");
            }
        }
    }
}
