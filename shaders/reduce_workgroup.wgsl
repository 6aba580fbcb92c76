// Workgroup reductions through workgroup memory, for adapters without subgroup operations.
// The host places this file between common.wgsl and a kernel file that reduces; it defines
// the same names as reduce_subgroup.wgsl.
//
// Algorithm: a halving tree over all WG_SIZE lanes, a power of two, with a barrier per level
// (log2(WG_SIZE) + 2 barriers per reduction).

// The invocation's position in its workgroup, taken by every entry point that reduces.
struct Invocation {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> scratch_max: array<u32, WG_SIZE>;
var<workgroup> scratch_sum: array<vec2<f32>, WG_SIZE>;

// Returns the max of `value` over the workgroup: kernels reduce order keys (common.wgsl), so
// that one reduction also finds non-finite values. Call from uniform control flow.
fn reduce_max(invocation: Invocation, value: u32) -> u32 {
    let lane = invocation.index;
    scratch_max[lane] = value;
    workgroupBarrier();
    for (var stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            scratch_max[lane] = max(scratch_max[lane], scratch_max[lane + stride]);
        }
        workgroupBarrier();
    }
    let result = scratch_max[0];
    // Every lane reads the result before any lane reuses the scratch array.
    workgroupBarrier();
    return result;
}

// Returns the sum of `value` over the workgroup. Call from uniform control flow. Each level of
// the tree adds with a compensated sum (see common.wgsl), because a plain tree of eight levels
// can be off by 4 ULP; `one` is 1.0 from a buffer.
fn reduce_sum(invocation: Invocation, value: f32, one: f32) -> f32 {
    let lane = invocation.index;
    scratch_sum[lane] = vec2(value, 0.0);
    workgroupBarrier();
    for (var stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            let other = scratch_sum[lane + stride];
            let sum = add_compensated(scratch_sum[lane], other.x, one);
            scratch_sum[lane] = vec2(sum.x, sum.y + other.y);
        }
        workgroupBarrier();
    }
    let result = scratch_sum[0];
    workgroupBarrier();
    return result.x + result.y;
}
