// Shared by every kernel family: the host prepends this file to each kernel file before it
// builds a shader module (src/shaders.rs), so kernels use these names without declaring them.
//
// Algorithm: exp is evaluated here instead of with the built-in `exp`, because WGSL only
// requires the built-in to be within 3 + 2|x| ULP, and implementations that compute it as
// exp2(x * log2(e)) lose about |x| * 2^-24 relative accuracy when rounding the product.
// The argument is reduced with the Cody-Waite two-constant split of ln 2, the remainder goes
// through a degree-7 Taylor polynomial, and the result is scaled with ldexp. Reference:
// W. J. Cody and W. Waite, "Software Manual for the Elementary Functions", 1980, chapter 6.

// Invocations per workgroup. Keep in sync with `WORKGROUP_SIZE` in src/planner.rs.
const WG_SIZE: u32 = 256u;

// Most negative finite f32: the identity of a max reduction over finite values.
const F32_LOWEST: f32 = -3.4028234663852886e38;

const LOG2_E: f32 = 1.4426950408889634;
// ln 2 = LN2_HI + LN2_LO. LN2_HI has 15 significant bits, so n * LN2_HI is exact for
// |n| < 2^9, and x - n * LN2_HI is exact by Sterbenz's lemma.
const LN2_HI: f32 = 0.693145751953125;
const LN2_LO: f32 = 1.4286067653e-6;
// exp(x) is below half the smallest f32 subnormal for x < EXP_MIN_ARG, so it rounds to 0.
const EXP_MIN_ARG: f32 = -104.0;
const TWO_POW_MINUS_64: f32 = 5.421010862427522e-20;

// Taylor coefficients 1/k! for k = 2..7. For |r| <= ln(2) / 2 the truncation error is
// below 5.3e-9 relative, under 0.05 ULP.
const C2: f32 = 0.5;
const C3: f32 = 0.16666666666666666;
const C4: f32 = 0.041666666666666664;
const C5: f32 = 0.008333333333333333;
const C6: f32 = 0.001388888888888889;
const C7: f32 = 0.0001984126984126984;

// Returns exp(hi + lo) for hi <= 0, where lo is the rounding error of hi (|lo| <= ulp(hi) / 2).
// Passing the rounding error of x - max keeps softmax accurate when |x - max| is large:
// the error of a rounded difference would otherwise be multiplied by |x - max| in the result.
// Results below the smallest normal f32 may be flushed to zero, as WGSL allows.
// 2^n is built from its bits rather than with ldexp, which llvmpipe evaluates slowly.
fn exp_nonpositive(hi: f32, lo: f32) -> f32 {
    let underflows = hi < EXP_MIN_ARG;
    let x = select(hi, EXP_MIN_ARG, underflows);
    let x_lo = select(lo, 0.0, underflows);

    let n = round(x * LOG2_E);
    let r = (x - n * LN2_HI) + (x_lo - n * LN2_LO);

    var p = C7;
    p = p * r + C6;
    p = p * r + C5;
    p = p * r + C4;
    p = p * r + C3;
    p = p * r + C2;
    p = p * r + 1.0;
    p = p * r + 1.0;

    // n lies in [-150, 0]. Below -126, 2^n is subnormal: scale by 2^(n + 64), exact, then by
    // 2^-64, which rounds once.
    let k = i32(n);
    let subnormal = k < -126;
    let scale = bitcast<f32>(u32(select(k, k + 64, subnormal) + 127) << 23u);
    return select(p * scale, (p * scale) * TWO_POW_MINUS_64, subnormal);
}

// Returns exp(x - m) for x <= m. The difference is split into its f32 rounding and the exact
// remainder with Knuth's TwoSum, so the result does not inherit the rounding error of x - m.
//
// `one` must be 1.0 read from a buffer. Compilers that reassociate float arithmetic (llvmpipe
// in Mesa 22.3 does) would otherwise simplify TwoSum's remainder to zero; multiplying by a
// value they cannot see keeps the operations in the order written.
fn exp_difference(x: f32, m: f32, one: f32) -> f32 {
    let neg_m = -m;
    let hi = (x + neg_m) * one;
    let m_part = (hi - x) * one;
    let lo = ((x - (hi - m_part)) * one) + ((neg_m - m_part) * one);
    return exp_nonpositive(hi, lo);
}

// Adds `value` to a compensated sum: `sum.x` is the rounded running sum and `sum.y` the
// rounding error accumulated so far, so sum.x + sum.y is accurate to about 1 ULP whatever the
// count (Neumaier's improvement of Kahan summation). A plain f32 sum of n terms can be off by
// n / 2 ULP. `one` is 1.0 from a buffer, as for exp_difference.
fn add_compensated(sum: vec2<f32>, value: f32, one: f32) -> vec2<f32> {
    let total = (sum.x + value) * one;
    let error = select(((value - total) * one) + sum.x, ((sum.x - total) * one) + value, abs(sum.x) >= abs(value));
    return vec2(total, sum.y + error);
}
