// Softmax over the last axis of a row-major [rows, cols] array of f32:
// p_i = exp(x_i - m) / sum_j exp(x_j - m), with m the row max.
//
// Bindings (group 0), keep in sync with `kernels::softmax` in src/kernels/softmax.rs:
//   0  uniform              Params
//   1  storage, read        input    (f32)
//   2  storage, read_write  output   (f32)
//   3  storage, read_write  partials (vec2<f32>: max, sum), `partials_per_block` per block
//   4  storage, read_write  row_stats (vec2<f32>: row max, row sum), one per row
//
// Entry points, chosen by the planner (src/planner.rs):
//   softmax_small_rows one invocation per row, for short rows: the max, then exp stored in
//                      the output while summing, then the division, all in cache and with no
//                      workgroup reduction or barrier.
//   softmax_small_rows_vec4
//                      the same with vec4 loads and stores, for rows of a multiple of 4
//                      whose regions start on 16-byte boundaries.
//   softmax_rows       one workgroup per row, for rows of at most one block. Three sweeps over
//                      the row: the max, the sum of exp(x - max), then the normalised write.
//   softmax_partials   long rows, pass 1 of 3: one workgroup per block of `block_len`
//                      elements writes the block's (max, sum of exp(x - block max)).
//   softmax_lane_partials
//                      pass 1 without a workgroup reduction, hence without barriers, for
//                      adapters where barriers cost more than arithmetic (lavapipe): each
//                      lane writes the (max, sum) of the elements it visited, so a block has
//                      WG_SIZE partials (`partials_per_block`).
//   softmax_merge      pass 2 of 3: one workgroup per row merges the row's partials into the
//                      row's (max, sum) with the online normaliser of Milakov and Gimelshein,
//                      "Online normalizer calculation for softmax", 2018 (arXiv:1805.02867):
//                      d = sum of d_b * exp(m_b - m) over the partials b, m the max of m_b.
//   softmax_normalize  pass 3 of 3: one workgroup per block writes exp(x - m) / d.
//   softmax_partials_vec4, softmax_lane_partials_vec4, softmax_normalize_vec4
//                      the split passes with vec4 loads and stores, for rows of a multiple of
//                      4 whose regions start on 16-byte boundaries.
// Long rows thus cost two reads and one write per element.
// No invocation loops more than block_len / WG_SIZE times (llvmpipe silently ends loops
// after 65,535 iterations).
//
// Reductions come from reduce_workgroup.wgsl or reduce_subgroup.wgsl, which the host places
// before this file as the plan asks; both define `Invocation`, `reduce_max` and `reduce_sum`.
// Lanes without an element hold the identity (F32_LOWEST for the max, 0 for the sum), so odd
// counts and rows shorter than the workgroup lose nothing.
//
// Grid: the host folds the workgroups into two dimensions (`groups_x` wide); workgroups past
// `groups` exit. Both values come from the uniform buffer, so the exit is uniform control flow.

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
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
// vec4 views of the same bindings for softmax_small_rows_vec4; WGSL allows the aliases because
// no entry point uses both views.
@group(0) @binding(1) var<storage, read> input4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> output4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partials: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> row_stats: array<vec2<f32>>;

fn workgroup_index(workgroup: vec3<u32>) -> u32 {
    return workgroup.y * params.groups_x + workgroup.x;
}

// Returns d * exp(m - m_new) for m <= m_new. An empty partial (d = 0) contributes 0 even when
// m - m_new is not finite.
fn rescale(d: f32, m: f32, m_new: f32) -> f32 {
    return select(d * exp_difference(m, m_new, params.one), 0.0, d == 0.0);
}

// Returns (max, sum of exp(x - max)) over input[start .. start + len).
fn block_stats(invocation: Invocation, start: u32, len: u32) -> vec2<f32> {
    let lane = invocation.index;
    var local_max = F32_LOWEST;
    for (var i = lane; i < len; i += WG_SIZE) {
        local_max = max(local_max, input[start + i]);
    }
    let block_max = reduce_max(invocation, local_max);

    var local_sum = vec2(0.0);
    for (var i = lane; i < len; i += WG_SIZE) {
        local_sum = add_compensated(local_sum, exp_difference(input[start + i], block_max, params.one), params.one);
    }
    let block_sum = reduce_sum(invocation, local_sum.x + local_sum.y, params.one);

    return vec2(block_max, block_sum);
}

@compute @workgroup_size(WG_SIZE)
fn softmax_small_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let lane = invocation.index;
    let row = workgroup_index(workgroup) * WG_SIZE + lane;
    if row >= params.rows {
        return;
    }

    let in_start = params.in_offset + row * params.cols;
    let out_start = params.out_offset + row * params.cols;
    var row_max = F32_LOWEST;
    for (var i = 0u; i < params.cols; i++) {
        row_max = max(row_max, input[in_start + i]);
    }
    // The second sweep stores each exp in the output, so the third divides instead of
    // evaluating exp again; the row is in cache by then.
    var sum = vec2(0.0);
    for (var i = 0u; i < params.cols; i++) {
        let e = exp_difference(input[in_start + i], row_max, params.one);
        output[out_start + i] = e;
        sum = add_compensated(sum, e, params.one);
    }
    let row_sum = sum.x + sum.y;
    for (var i = 0u; i < params.cols; i++) {
        output[out_start + i] = output[out_start + i] / row_sum;
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
    var max4 = vec4(F32_LOWEST);
    for (var k = 0u; k < vectors; k++) {
        max4 = max(max4, input4[in_start + k]);
    }
    let row_max = max(max(max4.x, max4.y), max(max4.z, max4.w));

    var sum = Sum4(vec4(0.0), vec4(0.0));
    for (var k = 0u; k < vectors; k++) {
        let e = exp_difference4(input4[in_start + k], row_max);
        output4[out_start + k] = e;
        sum = add_compensated4(sum, e);
    }
    let row_sum = total4(sum);
    for (var k = 0u; k < vectors; k++) {
        output4[out_start + k] = output4[out_start + k] / row_sum;
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_rows(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let lane = invocation.index;
    let row = workgroup_index(workgroup);
    if row >= params.groups {
        return;
    }

    let in_start = params.in_offset + row * params.cols;
    let out_start = params.out_offset + row * params.cols;
    let stats = block_stats(invocation, in_start, params.cols);

    for (var i = lane; i < params.cols; i += WG_SIZE) {
        output[out_start + i] = exp_difference(input[in_start + i], stats.x, params.one) / stats.y;
    }
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

@compute @workgroup_size(WG_SIZE)
fn softmax_partials(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let lane = invocation.index;
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let stats = block_stats(invocation, params.in_offset + block.chunk_offset, block.len);
    if lane == 0u {
        partials[first_partial(block)] = stats;
    }
}

// Index in `partials` of the first partial of a block.
fn first_partial(block: Block) -> u32 {
    return (block.row * params.blocks_per_row + block.index) * params.partials_per_block;
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
    var lane_max = F32_LOWEST;
    for (var i = lane; i < block.len; i += WG_SIZE) {
        lane_max = max(lane_max, input[start + i]);
    }
    var sum = vec2(0.0);
    for (var i = lane; i < block.len; i += WG_SIZE) {
        sum = add_compensated(sum, exp_difference(input[start + i], lane_max, params.one), params.one);
    }
    // A lane past the end of a short block writes the empty partial (F32_LOWEST, 0).
    partials[first_partial(block) + lane] = vec2(lane_max, sum.x + sum.y);
}

// As softmax_lane_partials, with offsets counted in vec4s; rows are a multiple of 4 long.
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
    var max4 = vec4(F32_LOWEST);
    for (var k = lane; k < len; k += WG_SIZE) {
        max4 = max(max4, input4[start + k]);
    }
    let lane_max = max(max(max4.x, max4.y), max(max4.z, max4.w));
    var sum = Sum4(vec4(0.0), vec4(0.0));
    for (var k = lane; k < len; k += WG_SIZE) {
        sum = add_compensated4(sum, exp_difference4(input4[start + k], lane_max));
    }
    partials[first_partial(block) + lane] = vec2(lane_max, total4(sum));
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

    // The row max over the partials' maxima, then the sum of the partials' sums, each
    // rescaled to the row max: one exp per partial.
    let count = params.blocks_per_row * params.partials_per_block;
    let first = row * count;
    var local_max = F32_LOWEST;
    for (var p = lane; p < count; p += WG_SIZE) {
        local_max = max(local_max, partials[first + p].x);
    }
    let row_max = reduce_max(invocation, local_max);
    var local_sum = vec2(0.0);
    for (var p = lane; p < count; p += WG_SIZE) {
        let partial = partials[first + p];
        local_sum = add_compensated(local_sum, rescale(partial.y, partial.x, row_max), params.one);
    }
    let row_sum = reduce_sum(invocation, local_sum.x + local_sum.y, params.one);

    if lane == 0u {
        row_stats[row] = vec2(row_max, row_sum);
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_normalize(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let lane = invocation.index;
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let stats = row_stats[block.row];
    let in_start = params.in_offset + block.chunk_offset;
    let out_start = params.out_offset + block.chunk_offset;
    for (var i = lane; i < block.len; i += WG_SIZE) {
        output[out_start + i] = exp_difference(input[in_start + i], stats.x, params.one) / stats.y;
    }
}

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

// Merges the four component sums into one compensated sum.
fn total4(sum: Sum4) -> f32 {
    var merged = vec2(0.0);
    for (var c = 0u; c < 4u; c++) {
        merged = add_compensated(merged, sum.total[c], params.one);
        merged = add_compensated(merged, sum.error[c], params.one);
    }
    return merged.x + merged.y;
}

// exp(x - m) of each component of x, with m <= every component.
fn exp_difference4(x: vec4<f32>, m: f32) -> vec4<f32> {
    return vec4(
        exp_difference(x.x, m, params.one),
        exp_difference(x.y, m, params.one),
        exp_difference(x.z, m, params.one),
        exp_difference(x.w, m, params.one),
    );
}

// As block_stats, over input4[start .. start + len), counted in vec4s. Each lane keeps one
// compensated sum per component and merges them before the workgroup reduction.
fn block_stats4(invocation: Invocation, start: u32, len: u32) -> vec2<f32> {
    let lane = invocation.index;
    var max4 = vec4(F32_LOWEST);
    for (var k = lane; k < len; k += WG_SIZE) {
        max4 = max(max4, input4[start + k]);
    }
    let block_max = reduce_max(invocation, max(max(max4.x, max4.y), max(max4.z, max4.w)));

    var sum = Sum4(vec4(0.0), vec4(0.0));
    for (var k = lane; k < len; k += WG_SIZE) {
        sum = add_compensated4(sum, exp_difference4(input4[start + k], block_max));
    }
    let block_sum = reduce_sum(invocation, total4(sum), params.one);

    return vec2(block_max, block_sum);
}

// As softmax_partials, with offsets counted in vec4s; rows are a multiple of 4 long.
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

// As softmax_normalize, with offsets counted in vec4s; rows are a multiple of 4 long.
@compute @workgroup_size(WG_SIZE)
fn softmax_normalize_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    invocation: Invocation,
) {
    let group = workgroup_index(workgroup);
    if group >= params.groups {
        return;
    }

    let block = locate_block(group);
    let stats = row_stats[block.row];
    let in_start = params.in_offset + block.chunk_offset / 4u;
    let out_start = params.out_offset + block.chunk_offset / 4u;
    for (var k = invocation.index; k < block.len / 4u; k += WG_SIZE) {
        output4[out_start + k] = exp_difference4(input4[in_start + k], stats.x) / stats.y;
    }
}

