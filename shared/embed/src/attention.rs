//! Self-attention over the fused query/key/value projection: for each row of the batch and
//! each head, scores against the row's real keys, a softmax and the weighted sum of values,
//! written straight into the context (`tokens x hidden`), with no permuted copies, no padded
//! keys and no score tensor.
//!
//! Two kernels share the layout: on x86-64 CPUs with AVX-512F, one pass per block of queries
//! in registers (`avx512`); elsewhere, loops the compiler vectorises (compiled for AVX2 where
//! the CPU has it). Both use f32 and the same `exp`. Padded query rows get a zero context.

use rayon::prelude::*;

use crate::math;

/// Whether this CPU runs the AVX-512 kernel for heads of `head` dimensions.
pub fn fused_available(head: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(head, 32 | 64) && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = head;
        false
    }
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
/// each head-major); `out` becomes the context, `(batch * tokens) x hidden`. `fused` picks
/// the AVX-512 kernel (callers check [`fused_available`]).
///
/// # Panics
/// If the sizes disagree, or `fused` on a CPU without it.
pub fn attend(qkv: &[f32], shape: &Shape<'_>, fused: bool, out: &mut Vec<f32>) {
    assert!(!fused || fused_available(shape.head), "fused attention without AVX-512F");
    let hidden = shape.heads * shape.head;
    let batch = shape.lengths.len();
    assert_eq!(qkv.len(), batch * shape.tokens * 3 * hidden, "qkv is (batch x tokens) x 3 hidden");
    assert!(shape.lengths.iter().all(|&l| (1..=shape.tokens).contains(&l)), "lengths within 1..=tokens");
    out.clear();
    out.resize(batch * shape.tokens * hidden, 0.0);
    // One task per row of the batch; its heads in turn.
    let run = |(b, out): (usize, &mut [f32])| {
        let rows = &qkv[b * shape.tokens * 3 * hidden..(b + 1) * shape.tokens * 3 * hidden];
        for h in 0..shape.heads {
            let head = Head::gather(rows, shape, h, shape.lengths[b]);
            let target = &mut out[h * shape.head..];
            #[cfg(target_arch = "x86_64")]
            if fused {
                // SAFETY: AVX-512F is present (asserted above); `target` holds the rows written.
                unsafe { avx512::head(&head, target, hidden) };
                continue;
            }
            portable(&head, target, hidden);
        }
    };
    let rows = shape.tokens * hidden;
    if batch > 1 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(rows).enumerate().for_each(run);
    } else {
        out.chunks_mut(rows).enumerate().for_each(run);
    }
}

/// One head of one row of the batch, laid out for the kernels.
struct Head<'a> {
    rows: &'a [f32],
    /// Floats from one token's row of `rows` to the next (3 hidden).
    stride: usize,
    /// Where this head's query starts in a token's row, and its size.
    query_at: usize,
    size: usize,
    /// Real keys, and that rounded up to whole vectors of 16.
    valid: usize,
    padded: usize,
    /// Keys transposed, dimension-major: `keys[d * padded + j]`, zero beyond `valid`.
    keys: Vec<f32>,
    /// Values of the real keys, one after another.
    values: Vec<f32>,
}

impl<'a> Head<'a> {
    /// Keys transposed (dimension-major), so a vector of scores is 16 keys at once; values
    /// copied together (in `rows` they are 3 hidden apart, a page each: every query would
    /// miss the TLB).
    fn gather(rows: &'a [f32], shape: &Shape<'_>, h: usize, valid: usize) -> Self {
        let (size, hidden) = (shape.head, shape.heads * shape.head);
        let stride = 3 * hidden;
        let padded = valid.div_ceil(16) * 16;
        let (k_at, v_at) = (hidden + h * size, 2 * hidden + h * size);
        let mut keys = vec![0f32; size * padded];
        let mut values = Vec::with_capacity(valid * size);
        for j in 0..valid {
            for (d, &value) in rows[j * stride + k_at..j * stride + k_at + size].iter().enumerate() {
                keys[d * padded + j] = value;
            }
            values.extend_from_slice(&rows[j * stride + v_at..j * stride + v_at + size]);
        }
        Self { rows, stride, query_at: h * size, size, valid, padded, keys, values }
    }

    fn query(&self, i: usize) -> &[f32] {
        &self.rows[i * self.stride + self.query_at..i * self.stride + self.query_at + self.size]
    }
}

/// The portable kernel: each query's contexts written `hidden` apart from `target`'s start.
fn portable(head: &Head<'_>, target: &mut [f32], hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { portable_avx2(head, target, hidden) };
        return;
    }
    portable_queries(head, target, hidden);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn portable_avx2(head: &Head<'_>, target: &mut [f32], hidden: usize) {
    portable_queries(head, target, hidden);
}

#[inline(always)]
fn portable_queries(head: &Head<'_>, target: &mut [f32], hidden: usize) {
    let mut scores = vec![0f32; head.padded];
    for i in 0..head.valid {
        // Scores: for each dimension, the query's value times that dimension of every key.
        scores.fill(0.0);
        for (d, &q) in head.query(i).iter().enumerate() {
            for (score, &k) in scores.iter_mut().zip(&head.keys[d * head.padded..(d + 1) * head.padded]) {
                *score += q * k;
            }
        }
        let weights = &mut scores[..head.valid];
        math::softmax(weights);
        let context = &mut target[i * hidden..i * hidden + head.size];
        for (j, &p) in weights.iter().enumerate() {
            for (c, &v) in context.iter_mut().zip(&head.values[j * head.size..(j + 1) * head.size]) {
                *c += p * v;
            }
        }
    }
}

/// The AVX-512 kernel: blocks of queries with their sums in registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Head;
    use crate::bf16::exp16;

    /// Queries handled together: their scores share each load of keys, and their weighted
    /// sums each load of values (a load per multiply-add otherwise, and loads are the
    /// bottleneck).
    const QUERIES: usize = 4;

    /// Every query of `head`; contexts written `hidden` apart from `target`'s start.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head(head: &Head<'_>, target: &mut [f32], hidden: usize) {
        match head.size {
            32 => queries_of::<2>(head, target, hidden),
            _ => queries_of::<4>(head, target, hidden),
        }
    }

    /// `D` is the head size in vectors of 16.
    #[target_feature(enable = "avx512f")]
    unsafe fn queries_of<const D: usize>(head: &Head<'_>, target: &mut [f32], hidden: usize) {
        assert!(target.len() >= (head.valid - 1) * hidden + D * 16, "target holds every query's context");
        let mut scores = vec![0f32; QUERIES * head.padded];
        let mut i = 0;
        while i < head.valid {
            let target = target.as_mut_ptr().add(i * hidden);
            match head.valid - i {
                1 => queries::<D, 1>(head, i, &mut scores, target, hidden),
                2 => queries::<D, 2>(head, i, &mut scores, target, hidden),
                3 => queries::<D, 3>(head, i, &mut scores, target, hidden),
                _ => queries::<D, QUERIES>(head, i, &mut scores, target, hidden),
            }
            i += QUERIES;
        }
    }

    /// Attention for the `R` queries from `first`: their contexts are written `hidden` apart
    /// from `target`. `scores` holds `R x padded`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn queries<const D: usize, const R: usize>(
        head: &Head<'_>,
        first: usize,
        scores: &mut [f32],
        target: *mut f32,
        hidden: usize,
    ) {
        let (padded, valid) = (head.padded, head.valid);
        // (Loops, not `array::from_fn`: a closure would not inherit AVX-512 and its intrinsics
        // would become calls.)
        let mut query = [head.rows.as_ptr(); R];
        for (r, query) in query.iter_mut().enumerate() {
            *query = head.query(first + r).as_ptr();
        }
        let keys = head.keys.as_ptr();
        let scores = scores.as_mut_ptr();
        // Scores, 16 keys per vector: four vectors of keys, each used by every query.
        let mut c = 0;
        while c + 64 <= padded {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for d in 0..D * 16 {
                let at = keys.add(d * padded + c);
                let mut k = [_mm512_setzero_ps(); 4];
                for (u, k) in k.iter_mut().enumerate() {
                    *k = _mm512_loadu_ps(at.add(u * 16));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let q = _mm512_set1_ps(*query[r].add(d));
                    for u in 0..4 {
                        acc[u] = _mm512_fmadd_ps(q, k[u], acc[u]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (u, &sum) in acc.iter().enumerate() {
                    _mm512_storeu_ps(scores.add(r * padded + c + u * 16), sum);
                }
            }
            c += 64;
        }
        while c < padded {
            let mut acc = [_mm512_setzero_ps(); R];
            for d in 0..D * 16 {
                let k = _mm512_loadu_ps(keys.add(d * padded + c));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*query[r].add(d)), k, *acc);
                }
            }
            for (r, &sum) in acc.iter().enumerate() {
                _mm512_storeu_ps(scores.add(r * padded + c), sum);
            }
            c += 16;
        }
        // Softmax of each query's scores; keys beyond the row's length never count.
        let last_mask: __mmask16 = if valid.is_multiple_of(16) { 0xffff } else { (1u16 << (valid % 16)) - 1 };
        let mut scale = [0f32; R];
        for (r, scale) in scale.iter_mut().enumerate() {
            let row = scores.add(r * padded);
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for c in (0..padded).step_by(16) {
                let mask = if c + 16 >= padded { last_mask } else { 0xffff };
                max = _mm512_mask_max_ps(max, mask, max, _mm512_loadu_ps(row.add(c)));
            }
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
            let mut sum = _mm512_setzero_ps();
            for c in (0..padded).step_by(16) {
                // Padding lanes: set to 0.
                let mask = if c + 16 >= padded { last_mask } else { 0xffff };
                let e = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(_mm512_loadu_ps(row.add(c)), max)));
                sum = _mm512_add_ps(sum, e);
                _mm512_storeu_ps(row.add(c), e);
            }
            *scale = 1.0 / _mm512_reduce_add_ps(sum);
        }
        // Weighted sums of the values: each value vector loaded once for every query.
        let mut acc = [[_mm512_setzero_ps(); D]; R];
        let values = head.values.as_ptr();
        for j in 0..valid {
            let mut v = [_mm512_setzero_ps(); D];
            for (d, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(values.add(j * D * 16 + d * 16));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*scores.add(r * padded + j));
                for d in 0..D {
                    acc[d] = _mm512_fmadd_ps(p, v[d], acc[d]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let scale = _mm512_set1_ps(scale[r]);
            for (d, &sum) in acc.iter().enumerate() {
                _mm512_storeu_ps(target.add(r * hidden + d * 16), _mm512_mul_ps(sum, scale));
            }
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
    fn both_kernels_match_textbook_attention_with_padding_and_both_head_sizes() {
        let mut next = crate::uniform(11, 2.0);
        // Lengths below, at and across the 16- and 64-key steps and the 4-query blocks; one
        // row of one token; a head size that is not whole blocks of 16 (portable kernel only).
        for (head, heads, tokens, lengths) in [
            (32, 3, 70, vec![70, 1, 16, 17, 64, 65, 6]),
            (64, 2, 20, vec![20, 3]),
            (32, 1, 1, vec![1]),
            (24, 2, 9, vec![9, 4]),
        ] {
            let shape = Shape { tokens, heads, head, lengths: &lengths };
            let qkv: Vec<f32> = (0..lengths.len() * tokens * 3 * heads * head).map(|_| next()).collect();
            let want = naive(&qkv, &shape);
            let mut kernels = vec![false];
            if fused_available(head) {
                kernels.push(true);
            } else {
                eprintln!("no AVX-512F on this CPU: only the portable kernel is tested");
            }
            for fused in kernels {
                let mut got = vec![f32::NAN; 3];
                attend(&qkv, &shape, fused, &mut got);
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 1e-4, "fused {fused}, head {head}, at {i}: {g} vs {w}");
                }
            }
        }
    }
}
