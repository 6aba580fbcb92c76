// Softmax, log-softmax and entropy over the last axis of a row-major [rows, cols] array of
// f32: p_i = exp(z_i - m) / d, log p_i = (z_i - m) - log d and H = -sum_i p_i log p_i
// = log d - (sum_i exp(z_i - m) (z_i - m)) / d, with z = c * x + b * mask for the factors
// c = scale / temperature and b = 1 / temperature (1 unless SCALED), m the row max of z and
// d = sum_j exp(z_j - m).
//
// Bindings (group 0), keep in sync with `kernels::softmax` in src/kernels/softmax.rs:
//   0  uniform              Params
//   1  storage, read        input     (f32)
//   2  storage, read_write  output    (f32; with ENTROPY, one per row)
//   3  storage, read_write  partials  (vec4<u32>: max key, sum bits, entropy sum bits, 0),
//                                     `partials_per_block` per block
//   4  storage, read_write  row_stats (vec2<u32>: max key, sum bits), one per row
//   5  storage, read        mask      (f32; the input's shape, or one row when
//                                     `mask_broadcast` is set), read only when MASKED
//
// Pipeline constants (overrides), set by the launcher:
//   LOG_OUTPUT        write log-softmax instead of softmax.
//   MASKED_ROWS_ZERO  a row whose logits are all -inf gives 0 (log-softmax: -inf), not NaN.
//   SCALED            multiply the logits by c, given in Params as an unevaluated sum.
//   ENTROPY           write each row's entropy, times `entropy_scale`, instead of the row.
//                     Only the scalar entry points take it; the split path then ends with
//                     softmax_merge, which writes the entropy.
//   MASKED            add the mask to the logits before the max. Only the scalar entry
//                     points take it.
//
// Non-finite logits, as PyTorch 2 treats them: a -inf logit gives 0 (log-softmax: -inf), and a
// row holding +inf or NaN gives NaN everywhere. The max is taken over order keys (common.wgsl),
// so one reduction finds both the max and those rows; every exp argument stays finite.
// Without a mask, c > 0, so the max of z is c times the max of x, and z_i - m = c * (x_i - max x)
// is computed as an unevaluated sum from the exact difference, which exp then takes whole: the
// result does not inherit the rounding of x / T. With a mask, each z is formed as an
// unevaluated sum (Dekker's products and TwoSum), the max is taken over their rounded parts,
// and z - m is the exact difference plus the remainders. A mask entry of -inf excludes its
// logit, and +inf or NaN in either makes the row NaN.
//
// Entry points, chosen by the planner (src/planner.rs):
//   softmax_small_rows one invocation per row, for short rows: the max, then exp stored in
//                      the output while summing, then the division, all in cache and with no
//                      workgroup reduction or barrier.
//   softmax_rows       one workgroup per row, for rows of at most one block. Three sweeps over
//                      the row: the max, the sum of exp(z - m), then the normalised write.
//   softmax_partials   long rows, pass 1 of 3: one workgroup per block of `block_len`
//                      elements writes the block's (max, sum of exp(z - block max)).
//   softmax_lane_partials
//                      pass 1 without a workgroup reduction, hence without barriers, for
//                      adapters where barriers cost more than arithmetic (lavapipe): each
//                      lane writes the (max, sum) of the elements it visited, so a block has
//                      WG_SIZE partials (`partials_per_block`).
//   softmax_merge      pass 2 of 3: one workgroup per row merges the row's partials into the
//                      row's (max, sum) with the online normaliser of Milakov and Gimelshein,
//                      "Online normalizer calculation for softmax", 2018 (arXiv:1805.02867):
//                      d = sum of d_b * exp(m_b - m) over the partials b, m the max of m_b.
//   softmax_normalize  pass 3 of 3: one workgroup per block writes the output.
//   softmax_small_rows_vec4, softmax_partials_vec4, softmax_lane_partials_vec4,
//   softmax_normalize_vec4
//                      the same with vec4 loads and stores, for rows of a multiple of 4
//                      whose regions start on 16-byte boundaries.
// Long rows thus cost two reads and one write per element. No invocation loops more than
// block_len / WG_SIZE times (llvmpipe silently ends loops after 65,535 iterations).
//
// Reductions come from reduce_workgroup.wgsl or reduce_subgroup.wgsl, which the host places
// before this file as the plan asks; both define `Invocation`, `reduce_max` and `reduce_sum`.
// Lanes without an element hold the identity (key 0 for the max, 0 for the sum), so odd
// counts and rows shorter than the workgroup lose nothing.
//
// Grid: the host folds the workgroups into two dimensions (`groups_x` wide); workgroups past
// `groups` exit. Both values come from the uniform buffer, so the exit is uniform control flow.

override LOG_OUTPUT: bool = false;
override MASKED_ROWS_ZERO: bool = false;
override SCALED: bool = false;
override ENTROPY: bool = false;
override MASKED: bool = false;

struct Params {
    // Element offset of the chunk's first element inside the input binding.
    in_offset: u32,
    // Element offset of the chunk's first element inside the output binding.
    out_offset: u32,
    // Row length.
    cols: u32,
    // Elements per block; equal to cols for softmax_rows.
    block_len: u32,
    // Blocks in a whole row.
    blocks_per_row: u32,
    // Row index of the chunk's first row, which indexes partials and row_stats.
    first_row: u32,
    // Block index, within its row, of the chunk's first block.
    first_block: u32,
    // Blocks per row inside this chunk: blocks_per_row, unless the chunk holds part of one row.
    chunk_blocks: u32,
    // Workgroups to run.
    groups: u32,
    // Width of the folded dispatch grid, in workgroups.
    groups_x: u32,
    // Always 1.0; see exp_difference in common.wgsl.
    one: f32,
    // Rows in the chunk, for softmax_small_rows.
    rows: u32,
    // Partials per block: 1 from softmax_partials, WG_SIZE from softmax_lane_partials.
    partials_per_block: u32,
    // The scale c = c1 + c2 + c_lo when SCALED: c1 + c2 is c rounded to f32, split into two
    // halves of 12 significant bits, and c_lo is the rounding error.
    c1: f32,
    c2: f32,
    c_lo: f32,
    // Unit of the entropy: 1 for nats, 1 / ln 2 for bits.
    entropy_scale: f32,
    // Element offset of the chunk's first mask value inside the mask binding.
    mask_offset: u32,
    // 1 if the mask is one row, shared by every row.
    mask_broadcast: u32,
    // The factor b = 1 / temperature of the mask, split like c.
    b1: f32,
    b2: f32,
    b_lo: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
// vec4 views of the same bindings for the vec4 entry points; WGSL allows the aliases because
// no entry point uses both views.
@group(0) @binding(1) var<storage, read> input4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> output4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partials: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> row_stats: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;

fn workgroup_index(workgroup: vec3<u32>) -> u32 {
    return workgroup.y * params.groups_x + workgroup.x;
}

// ---- Elements ----

// z - m for the logit x and the row's max logit m, as an unevaluated sum (hi, lo).
fn shifted(x: f32, m: f32) -> vec2<f32> {
    // When x - m overflows f32, the halves of x and m give half the difference exactly, and
    // the factor doubles; unscaled, the result is then -inf, as its rounding is.
    let d_whole = two_difference(x, m, params.one);
    let overflows = !is_finite(d_whole.x);
    let d = select(d_whole, two_difference(x * 0.5, m * 0.5, params.one), overflows);
    let k = select(1.0, 2.0, overflows);
    if SCALED {
        return scaled_difference(d, params.c1 * k, params.c2 * k, params.c_lo * k, params.one);
    }
    return vec2(d.x * k, select(d.y, 0.0, overflows));
}

// A logit z = hi + lo, with its state: FINITE, EXCLUDED (-inf in the logit or the mask) or
// POISON (+inf or NaN in either), whose row is NaN. Without a mask, hi is x and the scale is
// applied to differences (see `logit_shift`).
struct Logit {
    hi: f32,
    lo: f32,
    state: u32,
}

const FINITE: u32 = 0u;
const EXCLUDED: u32 = 1u;
const POISON: u32 = 2u;

fn state_of(x: f32) -> u32 {
    return select(select(POISON, EXCLUDED, is_neg_inf(x)), FINITE, is_finite(x));
}

// Index in the mask binding of the element `offset` elements after the chunk's first.
fn mask_index(offset: u32) -> u32 {
    if params.mask_broadcast != 0u {
        return params.mask_offset + (params.first_block * params.block_len + offset) % params.cols;
    }
    return params.mask_offset + offset;
}

// The logit at input[index], `offset` elements after the chunk's first element.
fn load_logit(index: u32, offset: u32) -> Logit {
    return make_logit(input[index], offset);
}

fn make_logit(x: f32, offset: u32) -> Logit {
    if !MASKED {
        return Logit(x, 0.0, state_of(x));
    }
    let addend = mask[mask_index(offset)];
    let state = max(state_of(x), state_of(addend));
    // Non-finite values are replaced by 0, so that the arithmetic below stays finite.
    var p = vec2(select(0.0, x, state == FINITE), 0.0);
    var q = vec2(select(0.0, addend, state == FINITE), 0.0);
    if SCALED {
        p = scaled_difference(p, params.c1, params.c2, params.c_lo, params.one);
        q = scaled_difference(q, params.b1, params.b2, params.b_lo, params.one);
    }
    let sum = two_difference(p.x, -q.x, params.one);
    return Logit(sum.x, (sum.y + p.y) + q.y, state);
}

// The order key of a logit for the row max.
fn logit_key(logit: Logit) -> u32 {
    let non_finite = select(0xffffffffu, KEY_NEG_INF, logit.state == EXCLUDED);
    return select(non_finite, order_key(logit.hi), logit.state == FINITE);
}

// z - m for a finite logit and the row max m, as an unevaluated sum (hi, lo); 0 for the rest.
fn logit_shift(logit: Logit, m: f32) -> vec2<f32> {
    let finite = logit.state == FINITE;
    let hi = select(m, logit.hi, finite);
    if MASKED {
        // The remainder can exceed half an ULP of the difference, as when a mask of 1e8
        // rounds away the logit: fold it in with TwoSum, so that exp reduces the whole
        // argument. A difference that overflows is -inf, with no remainder.
        let d = two_difference(hi, m, params.one);
        let folded = two_difference(d.x, -(d.y + select(0.0, logit.lo, finite)), params.one);
        return select(folded, vec2(d.x, 0.0), !is_finite(d.x));
    }
    return shifted(hi, m);
}

// (exp(z - m), z - m) for a logit: (0, 0) unless it is finite.
fn logit_term(logit: Logit, m: f32) -> vec2<f32> {
    let d = logit_shift(logit, m);
    let term = vec2(exp_nonpositive(d.x, d.y), d.x + d.y);
    return select(vec2(0.0), term, logit.state == FINITE);
}

// The difference of two row maxima, max_a - max_b, in units of z, as an unevaluated sum.
fn max_difference(a: f32, b: f32) -> vec2<f32> {
    if MASKED {
        return two_difference(a, b, params.one);
    }
    return shifted(a, b);
}

// exp(z - m) for the logit x of an unmasked row: 0 for -inf.
fn exp_term(x: f32, m: f32) -> f32 {
    return logit_term(Logit(x, 0.0, state_of(x)), m).x;
}

// Adds the terms of a logit to the compensated sums of exp(z - m) and, with ENTROPY, of
// exp(z - m) * (z - m). Returns exp(z - m).
fn accumulate(logit: Logit, m: f32, sum: ptr<function, vec2<f32>>, entropy_sum: ptr<function, vec2<f32>>) -> f32 {
    let term = logit_term(logit, m);
    *sum = add_compensated(*sum, term.x, params.one);
    if ENTROPY {
        // A term whose exp underflows adds 0, even where z - m overflowed to -inf.
        let weighted = select(term.x * term.y, 0.0, term.x == 0.0);
        *entropy_sum = add_compensated(*entropy_sum, weighted, params.one);
    }
    return term.x;
}

// The entropy of a row with sum d and entropy sum s: log d - s / d, in the requested unit.
fn entropy(d: f32, s: f32) -> f32 {
    return (log_accurate(d) - s / d) * params.entropy_scale;
}

fn exp_term4(x: vec4<f32>, m: f32) -> vec4<f32> {
    return vec4(exp_term(x.x, m), exp_term(x.y, m), exp_term(x.z, m), exp_term(x.w, m));
}

// Statistics of a row that hold a finite value and no +inf or NaN.
struct Row {
    // The max logit.
    max: f32,
    // The sum of exp(z - m), at least 1.
    sum: f32,
    // log(sum), when LOG_OUTPUT.
    log_sum: f32,
}

fn finite_row(key: u32, sum: f32) -> Row {
    var log_sum = 0.0;
    if LOG_OUTPUT {
        log_sum = log_accurate(sum);
    }
    return Row(key_value(key), sum, log_sum);
}

// The output for a logit of a finite row. `e` is exp(z - m) when the caller has it, and is
// ignored for log-softmax.
fn finish(logit: Logit, e: f32, row: Row) -> f32 {
    if LOG_OUTPUT {
        let d = logit_shift(logit, row.max);
        return select(neg_inf(), (d.x - row.log_sum) + d.y, logit.state == FINITE);
    }
    return e / row.sum;
}

// As finish, for four logits of an unmasked row.
fn finish4(x: vec4<f32>, e: vec4<f32>, row: Row) -> vec4<f32> {
    var y = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {
        y[c] = finish(Logit(x[c], 0.0, state_of(x[c])), e[c], row);
    }
    return y;
}

// The value of every element of a row whose max key is not finite: NaN for a row holding +inf
// or NaN; for a row of only -inf, NaN, or with MASKED_ROWS_ZERO 0 (log-softmax: -inf).
fn non_finite_fill(key: u32) -> f32 {
    let zero_fill = select(0.0, neg_inf(), LOG_OUTPUT && !ENTROPY);
    return select(nan(), zero_fill, MASKED_ROWS_ZERO && key <= KEY_NEG_INF);
}

// ---- Sums ----

// Four compensated sums, one per vec4 component (see add_compensated in common.wgsl):
// `total` holds the rounded sums and `error` their rounding errors.
struct Sum4 {
    total: vec4<f32>,
    error: vec4<f32>,
}

fn add_compensated4(sum: Sum4, e: vec4<f32>) -> Sum4 {
    let next = (sum.total + e) * params.one;
    let error = select(((e - next) * params.one) + sum.total, ((sum.total - next) * params.one) + e, abs(sum.total) >= abs(e));
    return Sum4(next, sum.error + error);
}

// Merges the four component sums into one.
fn total4(sum: Sum4) -> f32 {
    var merged = vec2(0.0);
    for (var c = 0u; c < 4u; c++) {
        merged = add_compensated(merged, sum.total[c], params.one);
        merged = add_compensated(merged, sum.error[c], params.one);
    }
    return merged.x + merged.y;
}

// The max that a max key encodes, or 0 when the key is not finite, so that exp arguments
// stay finite in passes that must run to their reductions either way.
fn row_max_or_zero(key: u32) -> f32 {
    return select(0.0, key_value(key), key_is_finite(key));
}

fn max_key4(keys: vec4<u32>) -> u32 {
    return max(max(keys.x, keys.y), max(keys.z, keys.w));
}

// ---- One invocation per row ----

@compute @workgroup_size(WG_SIZE)
fn softmax_small_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let row = workgroup_index(workgroup) * WG_SIZE + invocation.index;
    if row >= params.rows {
        return;
    }

    let in_start = params.in_offset + row * params.cols;
    let out_start = params.out_offset + row * params.cols;
    var key = 0u;
    let offset = row * params.cols;
    for (var i = 0u; i < params.cols; i++) {
        key = max(key, logit_key(load_logit(in_start + i, offset + i)));
    }
    if !key_is_finite(key) {
        let fill = non_finite_fill(key);
        if ENTROPY {
            output[params.out_offset + row] = fill;
            return;
        }
        for (var i = 0u; i < params.cols; i++) {
            output[out_start + i] = fill;
        }
        return;
    }

    // Softmax stores each exp in the output while summing, so the last sweep divides instead
    // of evaluating exp again; the row is in cache by then.
    let m = key_value(key);
    var sum = vec2(0.0);
    var entropy_sum = vec2(0.0);
    for (var i = 0u; i < params.cols; i++) {
        let e = accumulate(load_logit(in_start + i, offset + i), m, &sum, &entropy_sum);
        if !LOG_OUTPUT && !ENTROPY {
            output[out_start + i] = e;
        }
    }
    if ENTROPY {
        output[params.out_offset + row] = entropy(sum.x + sum.y, entropy_sum.x + entropy_sum.y);
        return;
    }
    let stats = finite_row(key, sum.x + sum.y);
    for (var i = 0u; i < params.cols; i++) {
        var e = 0.0;
        if !LOG_OUTPUT {
            e = output[out_start + i];
        }
        output[out_start + i] = finish(load_logit(in_start + i, offset + i), e, stats);
    }
}

// As softmax_small_rows, with `in_offset` and `out_offset` counted in vec4s. It keeps one
// compensated sum per vec4 component, so its sums may differ from the scalar kernel's in the
// last bit.
@compute @workgroup_size(WG_SIZE)
fn softmax_small_rows_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let row = workgroup_index(workgroup) * WG_SIZE + invocation.index;
    if row >= params.rows {
        return;
    }

    let vectors = params.cols / 4u;
    let in_start = params.in_offset + row * vectors;
    let out_start = params.out_offset + row * vectors;
    var keys = vec4(0u);
    for (var k = 0u; k < vectors; k++) {
        keys = max(keys, order_key4(input4[in_start + k]));
    }
    let key = max_key4(keys);
    if !key_is_finite(key) {
        let fill = vec4(non_finite_fill(key));
        for (var k = 0u; k < vectors; k++) {
            output4[out_start + k] = fill;
        }
        return;
    }

    let m = key_value(key);
    var sum = Sum4(vec4(0.0), vec4(0.0));
    for (var k = 0u; k < vectors; k++) {
        let e = exp_term4(input4[in_start + k], m);
        if !LOG_OUTPUT {
            output4[out_start + k] = e;
        }
        sum = add_compensated4(sum, e);
    }
    let stats = finite_row(key, total4(sum));
    for (var k = 0u; k < vectors; k++) {
        var e = vec4(0.0);
        if !LOG_OUTPUT {
            e = output4[out_start + k];
        }
        output4[out_start + k] = finish4(input4[in_start + k], e, stats);
    }
}

// ---- One workgroup per row, and blocks of long rows ----

// Returns (max key, sum of exp(z - max), with ENTROPY sum of exp(z - max) * (z - max), 0)
// over input[start .. start + len), whose first element is `offset` elements after the
// chunk's first; the sums are 0 unless the key is finite.
fn block_stats(invocation: Invocation, start: u32, offset: u32, len: u32) -> vec4<u32> {
    let lane = invocation.index;
    var local_key = 0u;
    for (var i = lane; i < len; i += WG_SIZE) {
        local_key = max(local_key, logit_key(load_logit(start + i, offset + i)));
    }
    let key = reduce_max(invocation, local_key);

    // The sum runs whatever the key, because a reduction must be reached by every lane. When
    // the key is not finite, m = 0 keeps each exp argument finite, and the sum is dropped.
    let m = row_max_or_zero(key);
    var local_sum = vec2(0.0);
    var local_entropy_sum = vec2(0.0);
    for (var i = lane; i < len; i += WG_SIZE) {
        accumulate(load_logit(start + i, offset + i), m, &local_sum, &local_entropy_sum);
    }
    let sum = reduce_sum(invocation, local_sum.x + local_sum.y, params.one);
    var entropy_sum = 0.0;
    if ENTROPY {
        entropy_sum = reduce_sum(invocation, local_entropy_sum.x + local_entropy_sum.y, params.one);
    }
    let finite = key_is_finite(key);
    return vec4(key, bitcast<u32>(select(0.0, sum, finite)), bitcast<u32>(select(0.0, entropy_sum, finite)), 0u);
}

// As block_stats, over input4[start .. start + len), counted in vec4s.
fn block_stats4(invocation: Invocation, start: u32, len: u32) -> vec4<u32> {
    let lane = invocation.index;
    var keys = vec4(0u);
    for (var k = lane; k < len; k += WG_SIZE) {
        keys = max(keys, order_key4(input4[start + k]));
    }
    let key = reduce_max(invocation, max_key4(keys));

    let m = row_max_or_zero(key);
    var sum = Sum4(vec4(0.0), vec4(0.0));
    for (var k = lane; k < len; k += WG_SIZE) {
        sum = add_compensated4(sum, exp_term4(input4[start + k], m));
    }
    let total = reduce_sum(invocation, total4(sum), params.one);
    return vec4(key, bitcast<u32>(select(0.0, total, key_is_finite(key))), 0u, 0u);
}

// Writes the output of input[in_start .. in_start + len), whose first element is `offset`
// elements after the chunk's first, to output[out_start ..], each lane visiting lane,
// lane + WG_SIZE, and so on, for a row with max key and sum `stats`.
fn write_block(lane: u32, in_start: u32, offset: u32, out_start: u32, len: u32, stats: vec2<u32>) {
    if !key_is_finite(stats.x) {
        let fill = non_finite_fill(stats.x);
        for (var i = lane; i < len; i += WG_SIZE) {
            output[out_start + i] = fill;
        }
        return;
    }
    let row = finite_row(stats.x, bitcast<f32>(stats.y));
    for (var i = lane; i < len; i += WG_SIZE) {
        let logit = load_logit(in_start + i, offset + i);
        var e = 0.0;
        if !LOG_OUTPUT {
            e = logit_term(logit, row.max).x;
        }
        output[out_start + i] = finish(logit, e, row);
    }
}

// As write_block, with offsets and `len` counted in vec4s.
fn write_block4(lane: u32, in_start: u32, out_start: u32, len: u32, stats: vec2<u32>) {
    if !key_is_finite(stats.x) {
        let fill = vec4(non_finite_fill(stats.x));
        for (var k = lane; k < len; k += WG_SIZE) {
            output4[out_start + k] = fill;
        }
        return;
    }
    let row = finite_row(stats.x, bitcast<f32>(stats.y));
    for (var k = lane; k < len; k += WG_SIZE) {
        let x = input4[in_start + k];
        var e = vec4(0.0);
        if !LOG_OUTPUT {
            e = exp_term4(x, row.max);
        }
        output4[out_start + k] = finish4(x, e, row);
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let row = workgroup_index(workgroup);
    if row >= params.groups {
        return;
    }

    let in_start = params.in_offset + row * params.cols;
    let out_start = params.out_offset + row * params.cols;
    let offset = row * params.cols;
    let stats = block_stats(invocation, in_start, offset, params.cols);
    if ENTROPY {
        if invocation.index == 0u {
            output[params.out_offset + row] = row_entropy(stats);
        }
        return;
    }
    write_block(invocation.index, in_start, offset, out_start, params.cols, stats.xy);
}

// The entropy of a row from its (max key, sum, entropy sum), or the fill of a row that is not
// finite.
fn row_entropy(stats: vec4<u32>) -> f32 {
    if !key_is_finite(stats.x) {
        return non_finite_fill(stats.x);
    }
    return entropy(bitcast<f32>(stats.y), bitcast<f32>(stats.z));
}

// Position of one block of a split row inside the chunk.
struct Block {
    // Absolute row index.
    row: u32,
    // Block index within the row.
    index: u32,
    // Offset of the block's first element from the chunk's first element.
    chunk_offset: u32,
    // Elements in the block; the last block of a row may be short.
    len: u32,
}

fn locate_block(group: u32) -> Block {
    let local_row = group / params.chunk_blocks;
    let local_block = group % params.chunk_blocks;
    let index = params.first_block + local_block;
    let len = min(params.block_len, params.cols - index * params.block_len);
    let chunk_offset = local_row * params.cols + local_block * params.block_len;
    return Block(params.first_row + local_row, index, chunk_offset, len);
}

// Index in `partials` of the first partial of a block.
fn first_partial(block: Block) -> u32 {
    return (block.row * params.blocks_per_row + block.index) * params.partials_per_block;
}

@compute @workgroup_size(WG_SIZE)
fn softmax_partials(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let stats = block_stats(invocation, params.in_offset + block.chunk_offset, block.chunk_offset, block.len);
    if invocation.index == 0u {
        partials[first_partial(block)] = stats;
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_partials_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let stats = block_stats4(invocation, params.in_offset + block.chunk_offset / 4u, block.len / 4u);
    if invocation.index == 0u {
        partials[first_partial(block)] = stats;
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_lane_partials(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let start = params.in_offset + block.chunk_offset;
    var key = 0u;
    for (var i = lane; i < block.len; i += WG_SIZE) {
        key = max(key, logit_key(load_logit(start + i, block.chunk_offset + i)));
    }
    var sum = vec2(0.0);
    var entropy_sum = vec2(0.0);
    if key_is_finite(key) {
        let m = key_value(key);
        for (var i = lane; i < block.len; i += WG_SIZE) {
            accumulate(load_logit(start + i, block.chunk_offset + i), m, &sum, &entropy_sum);
        }
    }
    // A lane past the end of a short block writes the empty partial (0, 0, 0).
    partials[first_partial(block) + lane] = vec4(key, bitcast<u32>(sum.x + sum.y), bitcast<u32>(entropy_sum.x + entropy_sum.y), 0u);
}

@compute @workgroup_size(WG_SIZE)
fn softmax_lane_partials_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let start = params.in_offset + block.chunk_offset / 4u;
    let len = block.len / 4u;
    var keys = vec4(0u);
    for (var k = lane; k < len; k += WG_SIZE) {
        keys = max(keys, order_key4(input4[start + k]));
    }
    let key = max_key4(keys);
    var sum = Sum4(vec4(0.0), vec4(0.0));
    if key_is_finite(key) {
        let m = key_value(key);
        for (var k = lane; k < len; k += WG_SIZE) {
            sum = add_compensated4(sum, exp_term4(input4[start + k], m));
        }
    }
    partials[first_partial(block) + lane] = vec4(key, bitcast<u32>(total4(sum)), 0u, 0u);
}

@compute @workgroup_size(WG_SIZE)
fn softmax_merge(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let lane = invocation.index;
    let row = workgroup_index(workgroup);
    if row >= params.groups {
        return;
    }

    // The row's max key over the partials' keys, then the sum of the partials' sums, each
    // rescaled to the row max: one exp per partial. Partials without a finite key add 0.
    let count = params.blocks_per_row * params.partials_per_block;
    let first = row * count;
    var local_key = 0u;
    for (var p = lane; p < count; p += WG_SIZE) {
        local_key = max(local_key, partials[first + p].x);
    }
    let key = reduce_max(invocation, local_key);
    // With ENTROPY, a partial's entropy sum s_b is relative to its own max m_b:
    // sum exp(z - m) (z - m) = exp(m_b - m) (s_b + d_b (m_b - m)).
    let m = row_max_or_zero(key);
    var local_sum = vec2(0.0);
    var local_entropy_sum = vec2(0.0);
    for (var p = lane; p < count; p += WG_SIZE) {
        let partial = partials[first + p];
        let finite = key_is_finite(partial.x) && key_is_finite(key);
        let d = max_difference(select(m, key_value(partial.x), finite), m);
        let factor = select(0.0, exp_nonpositive(d.x, d.y), finite);
        let partial_sum = bitcast<f32>(partial.y);
        local_sum = add_compensated(local_sum, partial_sum * factor, params.one);
        if ENTROPY {
            let weighted = factor * (bitcast<f32>(partial.z) + partial_sum * (d.x + d.y));
            let term = select(weighted, 0.0, factor == 0.0);
            local_entropy_sum = add_compensated(local_entropy_sum, term, params.one);
        }
    }
    let sum = reduce_sum(invocation, local_sum.x + local_sum.y, params.one);
    var entropy_sum = 0.0;
    if ENTROPY {
        entropy_sum = reduce_sum(invocation, local_entropy_sum.x + local_entropy_sum.y, params.one);
    }

    if lane == 0u {
        row_stats[row] = vec2(key, bitcast<u32>(sum));
        if ENTROPY {
            output[params.out_offset + row] = row_entropy(vec4(key, bitcast<u32>(sum), bitcast<u32>(entropy_sum), 0u));
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_normalize(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let in_start = params.in_offset + block.chunk_offset;
    let out_start = params.out_offset + block.chunk_offset;
    write_block(lane, in_start, block.chunk_offset, out_start, block.len, row_stats[block.row]);
}

@compute @workgroup_size(WG_SIZE)
fn softmax_normalize_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let in_start = params.in_offset + block.chunk_offset / 4u;
    let out_start = params.out_offset + block.chunk_offset / 4u;
    write_block4(lane, in_start, out_start, block.len / 4u, row_stats[block.row]);
}
