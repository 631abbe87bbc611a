//! Scalar maths written so the loops that use it vectorise: `exp` and `erf` without library
//! calls, softmax and GELU over slices.

/// Softmax of `scores` in place.
pub fn softmax(scores: &mut [f32]) {
    // Eight lanes of running maxima: the loop vectorises (a plain fold would not).
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = scores.chunks_exact(8);
    for chunk in chunks.by_ref() {
        for (lane, &s) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(s);
        }
    }
    let max = chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max);
    for s in scores.iter_mut() {
        *s = exp(*s - max);
    }
    let scale = 1.0 / lane_sum(scores, |s| s);
    scores.iter_mut().for_each(|o| *o *= scale);
}

/// The sum of `f` over `values`, in 16 running sums (a vector register's worth): the loop
/// vectorises, which a plain fold would not (float addition is not reassociated).
#[inline(always)]
pub(crate) fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in chunks.by_ref() {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    chunks.remainder().iter().map(|&v| f(v)).sum::<f32>() + lanes.iter().sum::<f32>()
}

/// GELU of every value in place.
pub fn gelu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { gelu_avx2(values) };
        return;
    }
    values.iter_mut().for_each(|v| *v = gelu(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu(*v));
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
