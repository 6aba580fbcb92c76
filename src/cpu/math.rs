//! Scalar building blocks of the CPU kernels, written without branches so that the compiler
//! vectorises the loops that call them. They follow shaders/common.wgsl step for step, so
//! that both backends meet the same bounds: exp by Cody-Waite range reduction and a degree-7
//! Taylor polynomial, TwoSum for exact differences, Dekker's product for scaled ones, and
//! Neumaier's compensated sums. Rust never reassociates float arithmetic, so no guard against
//! it is needed here.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const EXP_MIN_ARG: f32 = -104.0;
const TWO_POW_MINUS_64: f32 = 5.421_011e-20;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 below 2^22 in magnitude to the nearest
/// integer, in a form that vectorises (f32::round calls into libm on some targets).
const ROUND_MAGIC: f32 = 12_582_912.0;

const C2: f32 = 0.5;
const C3: f32 = 1.0 / 6.0;
const C4: f32 = 1.0 / 24.0;
const C5: f32 = 1.0 / 120.0;
const C6: f32 = 1.0 / 720.0;
const C7: f32 = 1.0 / 5040.0;

/// Order key of an f32: a u32 whose order is the order of the values, with every NaN above
/// +inf. See `order_key` in shaders/common.wgsl.
#[inline(always)]
pub fn order_key(x: f32) -> u32 {
    let bits = x.to_bits();
    let key = if bits >= 0x8000_0000 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    if (bits & 0x7fff_ffff) > 0x7f80_0000 {
        u32::MAX
    } else {
        key
    }
}

/// Key of -inf: a max key at or below it means that the row has no finite value.
pub const KEY_NEG_INF: u32 = 0x007f_ffff;
/// Key of +inf: a max key at or above it means that the row has +inf or NaN.
pub const KEY_POS_INF: u32 = 0xff80_0000;

/// Returns whether a max key is that of a finite value.
#[inline(always)]
pub fn key_is_finite(key: u32) -> bool {
    key > KEY_NEG_INF && key < KEY_POS_INF
}

/// Returns the f32 that a key of a finite value encodes.
#[inline(always)]
pub fn key_value(key: u32) -> f32 {
    f32::from_bits(if key >= 0x8000_0000 {
        key & 0x7fff_ffff
    } else {
        !key
    })
}

/// Returns exp(hi + lo) as (p, n) with exp = p * 2^n, p in [0.7, 1.42] (0 when the result
/// underflows) and n in [-150, 0], for hi <= 0 and |lo| small.
#[inline(always)]
pub fn exp_parts(hi: f32, lo: f32) -> (f32, i32) {
    let underflows = !hi.is_finite() | (hi < EXP_MIN_ARG);
    let x = if underflows { EXP_MIN_ARG } else { hi };
    let x_lo = if underflows { 0.0 } else { lo };
    // n is in t's low mantissa bits, so it is read from the bits, because a float-to-int
    // cast saturates in Rust, which does not vectorise.
    let t = x * LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let k = t.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let r = (x - n * LN2_HI) + (x_lo - n * LN2_LO);
    // Fused multiply-adds: one rounding per step instead of two. The kernels are compiled
    // for targets with FMA (AVX2, AVX-512, NEON); elsewhere mul_add calls libm, which is
    // exact but slow.
    let mut p = C7;
    p = p.mul_add(r, C6);
    p = p.mul_add(r, C5);
    p = p.mul_add(r, C4);
    p = p.mul_add(r, C3);
    p = p.mul_add(r, C2);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    (if underflows { 0.0 } else { p }, k)
}

/// Returns 2^n for n in [-126, 127].
#[inline(always)]
pub fn pow2(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// Returns exp(hi + lo) for hi <= 0, where lo is the rounding error of hi.
#[inline(always)]
pub fn exp_nonpositive(hi: f32, lo: f32) -> f32 {
    let (p, n) = exp_parts(hi, lo);
    let subnormal = n < -126;
    let scaled = p * pow2(if subnormal { n + 64 } else { n });
    if subnormal {
        scaled * TWO_POW_MINUS_64
    } else {
        scaled
    }
}

/// Arguments below this give exp(hi + lo) below 2^-124.8, whose result `exp_flushed` sets to
/// 0 because p * 2^n would be subnormal. Softmax outputs of that size sit inside the bound's
/// absolute floor (1e-37).
const EXP_FLUSH_BELOW: f32 = -86.5;

/// Coefficients of r^2 to r^6 of a polynomial fitted to exp(r) on [-ln 2 / 2, ln 2 / 2] for
/// the least max relative error, by iterated weighted least squares in f64, then rounded to
/// f32. Its max error is 3.6e-9 relative (0.06 ULP), against 0.09 ULP for the degree-7 Taylor
/// polynomial.
const FIT: [f32; 5] = [
    0.499_999_94,
    0.166_665_21,
    0.041_668_39,
    0.008_368_745,
    0.001_381_454,
];

/// exp(hi + lo) for hi <= 0 (or -inf, or hi + lo as a difference that involved -inf, where
/// lo may be NaN), with results below 2^-124.8 set to 0. It takes about half the steps of
/// `exp_nonpositive`. One select replaces the underflow handling: whatever the steps give for
/// a very negative or infinite hi, even NaN, becomes 0. 2^n is added into the exponent bits,
/// which is exact while the result is normal. The polynomial has one degree less.
#[inline(always)]
pub fn exp_flushed(hi: f32, lo: f32) -> f32 {
    let t = hi.mul_add(LOG2_E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let r = n.mul_add(-LN2_HI, hi);
    let r = n.mul_add(-LN2_LO, r + lo);
    let mut p = FIT[4];
    p = p.mul_add(r, FIT[3]);
    p = p.mul_add(r, FIT[2]);
    p = p.mul_add(r, FIT[1]);
    p = p.mul_add(r, FIT[0]);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n sits in t's low mantissa bits; shifted by 23 it lands on the exponent field, and the
    // bits of ROUND_MAGIC shift out.
    let scaled = f32::from_bits(p.to_bits().wrapping_add(t.to_bits() << 23));
    if hi < EXP_FLUSH_BELOW { 0.0 } else { scaled }
}

/// Returns x - m as (hi, lo): the rounded difference and its rounding error (TwoSum).
#[inline(always)]
pub fn two_difference(x: f32, m: f32) -> (f32, f32) {
    let neg_m = -m;
    let hi = x + neg_m;
    let m_part = hi - x;
    let lo = (x - (hi - m_part)) + (neg_m - m_part);
    (hi, lo)
}

/// Returns a + b as (hi, lo), the rounded sum and its rounding error, for |a| >= |b|
/// (Fast2Sum: three steps where TwoSum takes six).
#[inline(always)]
pub fn fast_two_sum(a: f32, b: f32) -> (f32, f32) {
    let hi = a + b;
    (hi, b - (hi - a))
}

/// A factor c as the kernels take it: c1 + c2 is c rounded to f32, 12 significant bits in
/// each half, and lo is the rounding error.
#[derive(Clone, Copy, Debug)]
pub struct Factor {
    pub c1: f32,
    pub c2: f32,
    pub lo: f32,
}

/// Returns (hi + lo) * c as (hi, lo), by Dekker's exact product of hi and c1 + c2.
#[inline(always)]
pub fn scaled(d: (f32, f32), c: Factor) -> (f32, f32) {
    let whole = c.c1 + c.c2;
    let product = d.0 * whole;
    let t = d.0 * 4097.0;
    let d1 = t - (t - d.0);
    let d2 = d.0 - d1;
    let error = (((d1 * c.c1 - product) + d1 * c.c2) + d2 * c.c1) + d2 * c.c2;
    let lo = if t.is_finite() {
        (error + d.0 * c.lo) + d.1 * whole
    } else {
        0.0
    };
    (product, lo)
}

/// Adds `value` to a Neumaier compensated sum (sum, error).
#[inline(always)]
pub fn add_compensated(sum: (f32, f32), value: f32) -> (f32, f32) {
    let total = sum.0 + value;
    let error = if sum.0.abs() >= value.abs() {
        (sum.0 - total) + value
    } else {
        (value - total) + sum.0
    };
    (total, sum.1 + error)
}

/// Natural log of a normal x > 0 within about 1 ULP: `log_accurate` in shaders/common.wgsl.
#[inline(always)]
pub fn log_accurate(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut k = (bits >> 23) as i32 - 127;
    let mut f = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if f > std::f32::consts::SQRT_2 {
        f *= 0.5;
        k += 1;
    }
    let s = (f - 1.0) / (f + 1.0);
    let z = s * s;
    let series =
        z * (1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0)))));
    let log_f = 2.0 * s + 2.0 * s * series;
    let kf = k as f32;
    kf * LN2_HI + (kf * LN2_LO + log_f)
}

/// log(1 + t) for t in [0, 1]: `log1p_unit` in shaders/sigmoid.wgsl.
#[inline(always)]
pub fn log1p_unit(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let z = s * s;
    let mut series = 1.0 / 17.0;
    for coefficient in [
        1.0 / 15.0,
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
    ] {
        series = series * z + coefficient;
    }
    2.0 * s + 2.0 * s * (series * z)
}

/// sigmoid, log-sigmoid and SiLU of one value, as shaders/sigmoid.wgsl computes them.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs(), 0.0);
    let y = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    if x.is_nan() { x } else { y }
}

/// Smallest x that `sigmoid_flushed` takes: below it sigmoid(x) is about exp(x), which
/// `exp_flushed` sets to 0.
pub const SIGMOID_FLUSHED_MIN: f32 = EXP_FLUSH_BELOW;

/// sigmoid(x) for finite x >= `SIGMOID_FLUSHED_MIN`, with `exp_flushed`: exp(-|x|) is then
/// either normal, or below 2^-124.8 for x > 86.5, where the result rounds to 1 all the same.
#[inline(always)]
pub fn sigmoid_flushed(x: f32) -> f32 {
    let e = exp_flushed(-x.abs(), 0.0);
    let numerator = if x >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

#[inline(always)]
pub fn log_sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs(), 0.0);
    let y = x.min(0.0) - log1p_unit(e);
    let positive = x.to_bits() < 0x8000_0000;
    let infinite = if positive { 0.0 } else { f32::NEG_INFINITY };
    if x.is_finite() {
        y
    } else if x.is_nan() {
        x
    } else {
        infinite
    }
}

#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let (p, n) = exp_parts(-x.abs(), 0.0);
    let e = exp_nonpositive(-x.abs(), 0.0);
    let sigmoid = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    // Below -80, e is scaled by 2^64 until the end, so that its lost subnormal bits do not
    // show in x * e, which need not be subnormal.
    let e_big = p * pow2(n + 64);
    let far_left = (x * (e_big / (1.0 + e))) * TWO_POW_MINUS_64;
    let y = if x < -80.0 { far_left } else { x * sigmoid };
    let positive = x.to_bits() < 0x8000_0000;
    if x.is_finite() {
        y
    } else if positive && !x.is_nan() {
        x
    } else {
        f32::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_within_one_ulp() {
        for i in 0..20_000 {
            let x = -(i as f32) * 0.005;
            let got = exp_nonpositive(x, 0.0);
            let expected = (x as f64).exp() as f32;
            let ulp = crate::verify::ulp_distance(got, expected);
            assert!(ulp <= 1, "exp({x}) = {got}, expected {expected}");
        }
    }

    #[test]
    fn exp_flushed_matches_f64_within_one_ulp() {
        for i in 0..20_000 {
            let x = -(i as f32) * 0.0043;
            let got = exp_flushed(x, 0.0);
            let expected = (x as f64).exp();
            if x < EXP_FLUSH_BELOW {
                assert_eq!(got, 0.0, "exp({x})");
            } else {
                let ulp = crate::verify::ulp_distance(got, expected as f32);
                assert!(ulp <= 1, "exp({x}) = {got}, expected {expected}");
            }
        }
        assert_eq!(exp_flushed(f32::NEG_INFINITY, f32::NAN), 0.0);
        assert_eq!(exp_flushed(0.0, 0.0), 1.0);
    }

    #[test]
    fn sigmoid_flushed_within_the_bound_where_it_applies() {
        // Within the sigmoid's bound of 2 ULP, as `sigmoid` is.
        for i in 0..200_000 {
            let x = SIGMOID_FLUSHED_MIN + i as f32 * 0.001;
            let expected = (1.0 / (1.0 + (-x as f64).exp())) as f32;
            let got = sigmoid_flushed(x);
            let ulps = crate::verify::ulp_distance(got, expected);
            assert!(ulps <= 2, "sigmoid({x}) = {got}, expected {expected}");
        }
    }

    #[test]
    fn order_keys_sort_like_values() {
        let values = [
            f32::NEG_INFINITY,
            -3.0,
            -0.0,
            0.0,
            1e-40,
            2.0,
            f32::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(order_key(pair[0]) <= order_key(pair[1]), "{pair:?}");
        }
        assert_eq!(order_key(f32::NAN), u32::MAX);
        assert_eq!(key_value(order_key(-2.5)), -2.5);
    }

    #[test]
    fn log_accurate_matches_f64() {
        for i in 1..10_000 {
            let x = 1.0 + i as f32 * 0.37;
            let ulp = crate::verify::ulp_distance(log_accurate(x), (x as f64).ln() as f32);
            assert!(ulp <= 1, "log({x})");
        }
    }
}
