// Sigmoid, log-sigmoid or SiLU over a flat array of f32, as the pipeline constant FUNCTION
// picks (0, 1 or 2; keep in sync with `record_elementwise` in src/kernels/sigmoid.rs), by
// `sigmoid` one f32 at a time or by `sigmoid_vec4` four at a time where both bindings start
// on a 16-byte boundary; the host runs the few elements
// after the last full vec4 with `sigmoid`. Each workgroup covers a tile of WG_SIZE * ELEMENTS_PER_INVOCATION
// consecutive elements; invocation `lane` takes elements lane, lane + WG_SIZE, and so on, so
// that neighbouring invocations always touch neighbouring elements.
//
// Bindings (group 0), keep in sync with `kernels::sigmoid` in src/kernels/sigmoid.rs:
//   0  uniform              Params
//   1  storage, read        input  (f32, or vec4<f32> as input4)
//   2  storage, read_write  output (f32, or vec4<f32> as output4)
// Each entry point uses one view of each binding; WGSL allows the aliases because no entry
// point uses both.
//
// Algorithm: with e = exp(-|x|), which lies in (0, 1], sigmoid(x) = 1 / (1 + e) for x >= 0
// and e / (1 + e) otherwise. No intermediate can overflow, so every finite x gives a finite
// result in [0, 1]; rounding 1 / (1 + e) cannot exceed 1, and e / (1 + e) is never negative.
// log-sigmoid is min(x, 0) - log1p(e), and SiLU is x * sigmoid(x).
// Non-finite inputs, as in PyTorch 2: sigmoid(+inf) = 1 and sigmoid(-inf) = 0; log-sigmoid
// gives 0 and -inf; SiLU gives +inf and NaN (-inf times 0); NaN gives NaN everywhere.
//
// Grid: the host folds the workgroups into two dimensions (`groups_x` wide) because a
// dimension holds at most 65,535 workgroups on most adapters; elements past `len` are skipped.

// Keep in sync with `SIGMOID_ELEMENTS_PER_INVOCATION` in src/planner.rs.
const ELEMENTS_PER_INVOCATION: u32 = 8u;

struct Params {
    // Element offset of the chunk's first element inside the input binding.
    in_offset: u32,
    // Element offset of the chunk's first element inside the output binding.
    out_offset: u32,
    // Elements in the chunk.
    len: u32,
    // Width of the folded dispatch grid, in workgroups.
    groups_x: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(1) var<storage, read> input4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> output4: array<vec4<f32>>;

override FUNCTION: u32 = 0u;

// log(1 + t) for t in [0, 1], as 2 atanh(s) with s = t / (2 + t) in [0, 1/3]: the series to
// s^17 leaves a relative error below 2e-9, and nothing cancels.
fn log1p_unit(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let z = s * s;
    var series = 1.0 / 17.0;
    series = series * z + 1.0 / 15.0;
    series = series * z + 1.0 / 13.0;
    series = series * z + 1.0 / 11.0;
    series = series * z + 1.0 / 9.0;
    series = series * z + 1.0 / 7.0;
    series = series * z + 1.0 / 5.0;
    series = series * z + 1.0 / 3.0;
    return 2.0 * s + 2.0 * s * (series * z);
}

fn function_of(x: f32) -> f32 {
    let e = exp_nonpositive(-abs(x), 0.0);
    let sigmoid = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
    let positive = bitcast<u32>(x) < 0x80000000u;
    var y = sigmoid;
    var infinite = select(0.0, 1.0, positive);
    if FUNCTION == 1u {
        y = min(x, 0.0) - log1p_unit(e);
        infinite = select(neg_inf(), 0.0, positive);
    } else if FUNCTION == 2u {
        // Below -80, e is near or below the subnormal range but x * e need not be, so e
        // stays scaled by 2^64 until the end. Every partial product is then normal, in
        // whatever order a compiler multiplies the factors (llvmpipe reorders them).
        let parts = exp_parts(-abs(x), 0.0);
        let e_big = parts.p * pow2(parts.n + 64);
        let far_left = (x * (e_big / (1.0 + e))) * TWO_POW_MINUS_64;
        y = select(x * sigmoid, far_left, x < -80.0);
        infinite = select(nan(), x, positive);
    }
    return select(select(infinite, nan(), is_nan(x)), y, is_finite(x));
}

@compute @workgroup_size(WG_SIZE)
fn sigmoid(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let tile = (workgroup.y * params.groups_x + workgroup.x) * WG_SIZE * ELEMENTS_PER_INVOCATION;
    for (var j = 0u; j < ELEMENTS_PER_INVOCATION; j++) {
        let i = tile + j * WG_SIZE + lane;
        if i < params.len {
            output[params.out_offset + i] = function_of(input[params.in_offset + i]);
        }
    }
}

// As `sigmoid`, with `in_offset`, `out_offset` and `len` counted in vec4s. The tile holds as
// many elements as the scalar kernel's.
@compute @workgroup_size(WG_SIZE)
fn sigmoid_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let vectors_per_invocation = ELEMENTS_PER_INVOCATION / 4u;
    let tile = (workgroup.y * params.groups_x + workgroup.x) * WG_SIZE * vectors_per_invocation;
    for (var j = 0u; j < vectors_per_invocation; j++) {
        let i = tile + j * WG_SIZE + lane;
        if i < params.len {
            let x = input4[params.in_offset + i];
            let y = vec4(function_of(x.x), function_of(x.y), function_of(x.z), function_of(x.w));
            output4[params.out_offset + i] = y;
        }
    }
}
