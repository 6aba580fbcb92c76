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

// Non-finite values. WGSL lets an implementation assume that float arithmetic meets no
// infinity or NaN, and has no literal for them, so kernels test bits and build them from bits.
const POS_INF_BITS: u32 = 0x7f800000u;
const NEG_INF_BITS: u32 = 0xff800000u;
const NAN_BITS: u32 = 0x7fc00000u;

fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == NEG_INF_BITS;
}

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > POS_INF_BITS;
}

// False for infinities and NaN.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & POS_INF_BITS) != POS_INF_BITS;
}

fn nan() -> f32 {
    return bitcast<f32>(NAN_BITS);
}

fn neg_inf() -> f32 {
    return bitcast<f32>(NEG_INF_BITS);
}

// Order keys: u32 values whose order is the order of the f32 values they encode, with every
// NaN above +inf. A max over keys finds the row max and, in the same reduction, whether the
// row holds +inf or NaN (a key of at least KEY_POS_INF) or only -inf (at most KEY_NEG_INF).
// 0, below every key, is the identity of the max.
const KEY_NEG_INF: u32 = 0x007fffffu;
const KEY_POS_INF: u32 = 0xff800000u;

fn order_key(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let key = select(bits | 0x80000000u, ~bits, bits >= 0x80000000u);
    return select(key, 0xffffffffu, is_nan(x));
}

fn order_key4(x: vec4<f32>) -> vec4<u32> {
    return vec4(order_key(x.x), order_key(x.y), order_key(x.z), order_key(x.w));
}

// Whether a max key is that of a finite value: the row holds a finite value and no +inf or NaN.
fn key_is_finite(key: u32) -> bool {
    return key > KEY_NEG_INF && key < KEY_POS_INF;
}

// The f32 that a key of a finite value encodes.
fn key_value(key: u32) -> f32 {
    return bitcast<f32>(select(~key, key & 0x7fffffffu, key >= 0x80000000u));
}

// Returns exp(hi + lo) for hi <= 0, where lo is the rounding error of hi (|lo| <= ulp(hi) / 2).
// Passing the rounding error of x - max keeps softmax accurate when |x - max| is large:
// the error of a rounded difference would otherwise be multiplied by |x - max| in the result.
// A non-finite hi, from a difference that overflowed, gives 0 like any hi below EXP_MIN_ARG,
// and the polynomial never sees it.
// Results below the smallest normal f32 may be flushed to zero, as WGSL allows.
fn exp_nonpositive(hi: f32, lo: f32) -> f32 {
    // n lies in [-150, 0]. Below -126, 2^n is subnormal: scale by 2^(n + 64), exact, then by
    // 2^-64, which rounds once.
    let e = exp_parts(hi, lo);
    let subnormal = e.n < -126;
    let scaled = e.p * pow2(select(e.n, e.n + 64, subnormal));
    return select(scaled, scaled * TWO_POW_MINUS_64, subnormal);
}

// exp(hi + lo) = p * 2^n, with p in [0.7, 1.42] (0 when the result underflows) and n in
// [-150, 0], for callers that scale the result before it rounds to a subnormal.
struct ExpParts {
    p: f32,
    n: i32,
}

fn exp_parts(hi: f32, lo: f32) -> ExpParts {
    let underflows = !is_finite(hi) | (hi < EXP_MIN_ARG);
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
    return ExpParts(select(p, 0.0, underflows), i32(n));
}

// 2^n for n in [-126, 127], built from its bits: llvmpipe evaluates ldexp slowly.
fn pow2(n: i32) -> f32 {
    return bitcast<f32>(u32(n + 127) << 23u);
}

// Returns exp(x - m) for x <= m. The difference is split into its f32 rounding and the exact
// remainder with Knuth's TwoSum, so the result does not inherit the rounding error of x - m.
//
// `one` must be 1.0 read from a buffer. Compilers that reassociate float arithmetic (llvmpipe
// in Mesa 22.3 does) would otherwise simplify TwoSum's remainder to zero; multiplying by a
// value they cannot see keeps the operations in the order written.
fn exp_difference(x: f32, m: f32, one: f32) -> f32 {
    let d = two_difference(x, m, one);
    return exp_nonpositive(d.x, d.y);
}

// Returns x - m as (hi, lo): hi is the rounded difference and lo its rounding error, by
// Knuth's TwoSum. `one` is 1.0 from a buffer, as for exp_difference.
fn two_difference(x: f32, m: f32, one: f32) -> vec2<f32> {
    let neg_m = -m;
    let hi = (x + neg_m) * one;
    let m_part = (hi - x) * one;
    let lo = ((x - (hi - m_part)) * one) + ((neg_m - m_part) * one);
    return vec2(hi, lo);
}

// Returns (hi + lo) * (c1 + c2 + c_lo) as (hi, lo), where c1 + c2 is an f32 split into two
// halves of 12 significant bits (Veltkamp's split, done on the host) and c_lo is the rounding
// error of that f32. The product hi * (c1 + c2) is exact as a sum of two f32 by Dekker's
// TwoProduct, so the result carries about 44 bits. WGSL's fma may round twice, so it is not
// used. `one` is 1.0 from a buffer.
fn scaled_difference(d: vec2<f32>, c1: f32, c2: f32, c_lo: f32, one: f32) -> vec2<f32> {
    let c = c1 + c2;
    let product = (d.x * c) * one;
    // Veltkamp's split of d.x into two halves of 12 significant bits.
    let t = (d.x * 4097.0) * one;
    let d1 = (t - ((t - d.x) * one)) * one;
    let d2 = (d.x - d1) * one;
    let error = ((((d1 * c1 - product) * one + d1 * c2) * one + d2 * c1) * one) + d2 * c2;
    // For |d.x| above about 8e34 the split overflows; exp then underflows unless c is tiny, and hi alone will do.
    let lo = select(0.0, (error + d.x * c_lo) + d.y * c, is_finite(t));
    return vec2(product, lo);
}

// Natural log of x > 0, finite and normal, within about 1 ULP. WGSL only asks `log` for an
// absolute error of 2^-21 near 1, which is 4 ULP of the log-softmax of a dominant class.
// x = 2^k * f with f in [sqrt(1/2), sqrt(2)), then log f = 2 atanh(s), s = (f - 1) / (f + 1),
// with |s| < 0.172 and the series of atanh to s^11.
fn log_accurate(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    var k = i32(bits >> 23u) - 127;
    var f = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
    let big = f > 1.4142135;
    f = select(f, f * 0.5, big);
    k = select(k, k + 1, big);
    let s = (f - 1.0) / (f + 1.0);
    let z = s * s;
    let series = z * (1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0)))));
    let log_f = 2.0 * s + 2.0 * s * series;
    let kf = f32(k);
    return kf * LN2_HI + (kf * LN2_LO + log_f);
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
