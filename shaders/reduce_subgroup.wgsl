// Workgroup reductions with subgroup operations, for adapters with Features::SUBGROUP.
// The host places this file between common.wgsl and a kernel file that reduces; it defines
// the same names as reduce_workgroup.wgsl. The `enable subgroups;` directive is left out
// because naga 30 rejects it; wgpu accepts subgroup built-ins when the device has the feature.
//
// Algorithm: subgroupMax, or a butterfly of compensated additions, within each subgroup; one
// slot per subgroup in workgroup memory; then every lane combines the slots: two barriers per
// reduction. The subgroup size is read from the built-ins and never assumed. WebGPU allows 4
// to 128, so a workgroup of WG_SIZE lanes has at most WG_SIZE / 4 slots to combine.

// The invocation's position in its workgroup and subgroup, taken by every entry point that
// reduces.
struct Invocation {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
}

var<workgroup> scratch_max: array<u32, WG_SIZE>;
var<workgroup> scratch_sum: array<f32, WG_SIZE>;

// Returns the max of `value` over the workgroup: kernels reduce order keys (common.wgsl), so
// that one reduction also finds non-finite values. Call from uniform control flow.
fn reduce_max(invocation: Invocation, value: u32) -> u32 {
    let partial = subgroupMax(value);
    if invocation.subgroup_lane == 0u {
        scratch_max[invocation.subgroup] = partial;
    }
    workgroupBarrier();
    var result = 0u;
    for (var s = 0u; s < invocation.subgroups; s++) {
        result = max(result, scratch_max[s]);
    }
    // Every lane reads the slots before any lane reuses the scratch array.
    workgroupBarrier();
    return result;
}

// Returns the sum of `value` over the workgroup. Every lane adds the slots in the same order,
// with a compensated sum (see common.wgsl), so all lanes get the same, accurate result. Within
// a subgroup the lanes add by a butterfly of shuffles, each step compensated too, because
// subgroupAdd rounds at each of its log2(subgroup size) levels: up to 3 ULP on 64 lanes. Call
// from uniform control flow; `one` is 1.0 from a buffer.
fn reduce_sum(invocation: Invocation, value: f32, one: f32) -> f32 {
    var partial = vec2(value, 0.0);
    for (var offset = 1u; offset < invocation.subgroup_size; offset <<= 1u) {
        let other = vec2(subgroupShuffleXor(partial.x, offset), subgroupShuffleXor(partial.y, offset));
        let sum = add_compensated(partial, other.x, one);
        partial = vec2(sum.x, sum.y + other.y);
    }
    if invocation.subgroup_lane == 0u {
        scratch_sum[invocation.subgroup] = partial.x + partial.y;
    }
    workgroupBarrier();
    var result = vec2(0.0);
    for (var s = 0u; s < invocation.subgroups; s++) {
        result = add_compensated(result, scratch_sum[s], one);
    }
    workgroupBarrier();
    return result.x + result.y;
}
