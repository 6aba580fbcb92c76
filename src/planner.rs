//! The shape planner: a pure function from (op, shape, dtype, device limits) to the kernel,
//! the dispatch grids and the chunks that a launch records. Every shape decision lives here,
//! so it is unit-tested without a device.
//!
//! Two limits shape every plan. A storage binding covers at most `max_storage_binding_bytes`
//! (128 MiB on most adapters), so larger inputs run in chunks, each bound separately; a
//! dispatch grid holds at most `max_workgroups_per_dimension` (65,535 on most adapters)
//! workgroups per dimension, so grids are folded into two dimensions.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::shaders::Reduction;

/// Invocations per workgroup of every kernel. Keep in sync with `WG_SIZE` in
/// shaders/common.wgsl.
pub const WORKGROUP_SIZE: u32 = 256;

/// Elements each invocation of the sigmoid kernel computes. Keep in sync with
/// `ELEMENTS_PER_INVOCATION` in shaders/sigmoid.wgsl. Measured on lavapipe (Mesa 22.3.6, 2
/// cores), kernel ms for 16,777,216 elements: 104 with 1, 54 with 2, 60 with 4, 49 to 51 with
/// 8, 52 with 16; per-invocation overhead dominates llvmpipe up to 8.
pub const SIGMOID_ELEMENTS_PER_INVOCATION: u32 = 8;

/// Most elements one invocation visits in one sweep over a block. llvmpipe silently ends a
/// shader loop after 65,535 iterations per invocation (Mesa 22.3), so every loop in the
/// kernels is bounded by the planner, whatever the input size.
pub const MAX_LOOP_TRIPS: u32 = 64;

/// Elements per block of a split row, and the longest row that `softmax_rows` takes.
pub const BLOCK_LEN: u32 = WORKGROUP_SIZE * MAX_LOOP_TRIPS;

/// Longest row that `softmax_small_rows` (one invocation per row) takes on adapters that run
/// shaders on CPU cores. Measured on lavapipe (Mesa 22.3.6, 2 cores), kernel ms of the
/// small-row kernel against one workgroup per row: [1048576, 2] 14.9 against 18603;
/// [131072, 16] 11.9 against 3556; [1024, 512] 3.0 against 20.6; [512, 8192] 40 against 56;
/// [256, 16384] 55 against 56; [64, 4096] 3.1 against 3.0. The workgroup kernel's barriers
/// cost llvmpipe more than the small-row kernel loses in parallelism inside a row.
pub const SMALL_ROW_MAX_COLS_CPU: u64 = 8192;

/// Longest row that `softmax_small_rows` takes on GPUs, where neighbouring invocations then
/// read addresses `cols` apart.
// TODO: unmeasured; no hardware GPU was available to set it.
pub const SMALL_ROW_MAX_COLS_GPU: u64 = 32;

/// Whether split rows take one partial per lane (`softmax_lane_partials`, no barrier) on
/// adapters that run shaders on CPU cores, instead of one per workgroup. Measured on lavapipe
/// (Mesa 22.3.6, 2 cores), kernel ms with lane partials against workgroup partials:
/// [1, 16777216] 70 to 71 against 80 to 87; [256, 151936] 142 to 146 against 192 to 195.
/// Two variants that evaluate exp once per element measured no better or lost accuracy:
/// storing exp(x - lane max) and rescaling it took 64 ms for [1, 16777216] but reached 5 ULP;
/// five passes (max, stored exp, divide) took 72 to 74.
pub const LANE_PARTIALS_CPU: bool = true;

/// Most partials one invocation of `softmax_merge` visits, which bounds a row at
/// `BLOCK_LEN * WORKGROUP_SIZE * MAX_MERGE_TRIPS` (2^34) elements.
pub const MAX_MERGE_TRIPS: u32 = 4096;

/// Bytes of one f32 element.
pub const F32_BYTES: u64 = 4;

/// Bytes of one (max, sum) pair in the row-stats buffer.
pub const STATS_BYTES: u64 = 8;

/// Bytes of one partial: max, sum, entropy sum and padding.
pub const PARTIAL_BYTES: u64 = 16;

/// Largest host batch of the slice-in, Vec-out API, in bytes of input. Input, output and
/// staging buffers of one batch are alive together, so this bounds device memory at about
/// three times this value, whatever the input size.
pub const HOST_BATCH_BYTES: u64 = 256 << 20;

/// An operation the planner can plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Elementwise logistic sigmoid, 1 / (1 + exp(-x)).
    Sigmoid,
    /// Elementwise log of the sigmoid, min(x, 0) - log1p(exp(-|x|)).
    LogSigmoid,
    /// Elementwise SiLU (swish), x * sigmoid(x).
    Silu,
    /// Softmax over the last axis.
    Softmax,
    /// Log-softmax over the last axis, (z - max) - log(sum of exp(z - max)).
    LogSoftmax,
    /// Entropy of the softmax distribution of each row, -sum p log p, one value per row.
    Entropy,
}

impl Op {
    /// Every op, in the order of the CLI's subcommands.
    pub const ALL: [Op; 6] = [
        Op::Sigmoid,
        Op::LogSigmoid,
        Op::Silu,
        Op::Softmax,
        Op::LogSoftmax,
        Op::Entropy,
    ];

    /// Returns whether the op maps each element alone, ignoring the row structure.
    pub fn is_elementwise(self) -> bool {
        matches!(self, Op::Sigmoid | Op::LogSigmoid | Op::Silu)
    }

    /// Returns the op's name in the CLI and in `sigmax bench --json`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Sigmoid => "sigmoid",
            Op::LogSigmoid => "log-sigmoid",
            Op::Silu => "silu",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log-softmax",
            Op::Entropy => "entropy",
        }
    }
}

/// Element type of the input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
}

/// The device limits that plans depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Largest storage buffer binding, in bytes.
    pub max_storage_binding_bytes: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_bytes: u64,
    /// Max workgroups in one dimension of a dispatch.
    pub max_workgroups_per_dimension: u32,
    /// Alignment of a storage binding's offset, in bytes.
    pub storage_offset_alignment: u64,
    /// Whether the adapter runs shaders on CPU cores (lavapipe, SwiftShader, WARP), where
    /// workgroup barriers are expensive.
    pub cpu_adapter: bool,
    /// Whether the device has `Features::SUBGROUP`.
    pub subgroups: bool,
}

impl DeviceCaps {
    /// Reads the caps from a device's limits and features and its adapter's device type.
    pub fn new(
        limits: &wgpu::Limits,
        features: wgpu::Features,
        device_type: wgpu::DeviceType,
    ) -> Self {
        DeviceCaps {
            cpu_adapter: device_type == wgpu::DeviceType::Cpu,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            storage_offset_alignment: limits.min_storage_buffer_offset_alignment as u64,
        }
    }

    /// Most elements of one chunk. A chunk's binding starts at the aligned offset at or below
    /// its first element, so up to `storage_offset_alignment - 4` extra bytes are bound.
    pub fn max_chunk_elements(&self) -> u64 {
        let usable = self
            .max_storage_binding_bytes
            .saturating_sub(self.storage_offset_alignment);
        // Element indices inside a binding are u32 in the shaders. A multiple of 4 keeps every
        // chunk of a 16-byte aligned region aligned for vec4 kernels.
        (usable / F32_BYTES).min(u32::MAX as u64 / 2) / 4 * 4
    }
}

/// The kernel a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `sigmoid` in shaders/sigmoid.wgsl, for every elementwise op:
    /// `SIGMOID_ELEMENTS_PER_INVOCATION` elements per invocation.
    Sigmoid,
    /// `softmax_small_rows` in shaders/softmax.wgsl: one invocation per row of at most
    /// `SMALL_ROW_MAX_COLS_CPU` or `SMALL_ROW_MAX_COLS_GPU`.
    SoftmaxSmallRows,
    /// `softmax_rows` in shaders/softmax.wgsl: one workgroup per row of at most `BLOCK_LEN`.
    SoftmaxRows,
    /// `softmax_partials`, `softmax_merge` and `softmax_normalize`: rows split into blocks.
    SoftmaxSplit {
        /// Elements per block.
        block_len: u32,
        /// Blocks in one row; the last may be short.
        blocks_per_row: u32,
        /// Whether the first pass is `softmax_lane_partials` (one partial per lane, no
        /// barrier) instead of `softmax_partials` (one partial per workgroup).
        lane_partials: bool,
    },
}

/// A dispatch grid folded into two dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// Workgroups along x.
    pub x: u32,
    /// Workgroups along y.
    pub y: u32,
    /// Workgroups that do work; the `x * y - groups` others exit at once.
    pub groups: u32,
}

impl Grid {
    /// Folds `groups` workgroups into a grid of at most `max_per_dimension` per dimension.
    pub fn fold(groups: u64, max_per_dimension: u32) -> Result<Grid> {
        let max = max_per_dimension as u64;
        if groups > max * max || groups > u32::MAX as u64 {
            return Err(Error::TooLarge(format!(
                "{groups} workgroups exceed the dispatch grid of {max} x {max}"
            )));
        }
        let x = groups.min(max);
        let y = if x == 0 { 0 } else { groups.div_ceil(x) };
        Ok(Grid {
            x: x as u32,
            y: y as u32,
            groups: groups as u32,
        })
    }
}

/// The part of a launch bound and dispatched at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Elements of the launch covered by this chunk.
    pub elements: Range<u64>,
    /// Row of the chunk's first element.
    pub first_row: u64,
    /// Rows that start in the chunk (elements for sigmoid).
    pub rows: u64,
    /// Block, within its row, of the chunk's first element (0 unless the chunk holds part of
    /// one split row).
    pub first_block: u32,
    /// Blocks per row inside the chunk (1 for kernels that do not split rows).
    pub chunk_blocks: u32,
    /// The dispatch over the chunk.
    pub grid: Grid,
}

/// Everything a launcher needs to record one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The kernel to run.
    pub kernel: Kernel,
    /// Chunks in order; empty for a zero-size input.
    pub chunks: Vec<Chunk>,
    /// The `softmax_merge` dispatch, one workgroup per row, for `Kernel::SoftmaxSplit`.
    pub merge: Option<Grid>,
    /// The workgroup reduction the kernel is built with: subgroup operations wherever the
    /// device has them.
    pub reduction: Reduction,
}

/// Subgroup reductions where the device has them: two barriers per reduction instead of ten.
/// On lavapipe (subgroups of 8, Mesa 22.3.6) they measured the same within noise, kernel ms
/// subgroup against workgroup: [1024, 16384] 147 against 144, [1, 16777216] 137 against 144,
/// [256, 151936] 332 against 321, because each lane reduces 64 elements first.
// TODO: measure on hardware GPUs, where barriers cost more than on lavapipe.
fn reduction(caps: &DeviceCaps) -> Reduction {
    if caps.subgroups {
        Reduction::Subgroup
    } else {
        Reduction::Workgroup
    }
}

/// Plans one launch of `op` over `rows` rows of `cols` elements. Elementwise ops ignore the
/// row structure and see `rows * cols` elements.
pub fn plan(op: Op, dtype: DType, rows: u64, cols: u64, caps: &DeviceCaps) -> Result<Plan> {
    let DType::F32 = dtype;
    if caps.max_chunk_elements() < BLOCK_LEN as u64 {
        return Err(Error::TooLarge(format!(
            "the device's max storage binding of {} bytes cannot hold one block of {BLOCK_LEN} elements",
            caps.max_storage_binding_bytes
        )));
    }
    let elements = rows.checked_mul(cols).ok_or_else(|| {
        Error::TooLarge(format!(
            "shape [{rows}, {cols}] has more than 2^64 elements"
        ))
    })?;
    if elements == 0 {
        let kernel = if op.is_elementwise() {
            Kernel::Sigmoid
        } else {
            Kernel::SoftmaxSmallRows
        };
        return Ok(Plan {
            kernel,
            chunks: Vec::new(),
            merge: None,
            reduction: reduction(caps),
        });
    }

    if op.is_elementwise() {
        plan_sigmoid(elements, caps)
    } else if cols <= BLOCK_LEN as u64 {
        plan_softmax_rows(rows, cols, caps)
    } else {
        plan_softmax_split(rows, cols, caps)
    }
}

fn plan_sigmoid(elements: u64, caps: &DeviceCaps) -> Result<Plan> {
    let max_chunk = caps.max_chunk_elements();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < elements {
        let end = elements.min(start + max_chunk);
        let tile = (WORKGROUP_SIZE * SIGMOID_ELEMENTS_PER_INVOCATION) as u64;
        let groups = (end - start).div_ceil(tile);
        chunks.push(Chunk {
            elements: start..end,
            first_row: start,
            rows: end - start,
            first_block: 0,
            chunk_blocks: 1,
            grid: Grid::fold(groups, caps.max_workgroups_per_dimension)?,
        });
        start = end;
    }
    Ok(Plan {
        kernel: Kernel::Sigmoid,
        chunks,
        merge: None,
        reduction: reduction(caps),
    })
}

fn plan_softmax_rows(rows: u64, cols: u64, caps: &DeviceCaps) -> Result<Plan> {
    // The small-row kernel runs one invocation per row, the row kernel one workgroup.
    let small_row_max_cols = if caps.cpu_adapter {
        SMALL_ROW_MAX_COLS_CPU
    } else {
        SMALL_ROW_MAX_COLS_GPU
    };
    let (kernel, rows_per_group) = if cols <= small_row_max_cols {
        (Kernel::SoftmaxSmallRows, WORKGROUP_SIZE as u64)
    } else {
        (Kernel::SoftmaxRows, 1)
    };
    let rows_per_chunk = caps.max_chunk_elements() / cols;
    let mut chunks = Vec::new();
    let mut first_row = 0;
    while first_row < rows {
        let end_row = rows.min(first_row + rows_per_chunk);
        let groups = (end_row - first_row).div_ceil(rows_per_group);
        chunks.push(Chunk {
            elements: first_row * cols..end_row * cols,
            first_row,
            rows: end_row - first_row,
            first_block: 0,
            chunk_blocks: 1,
            grid: Grid::fold(groups, caps.max_workgroups_per_dimension)?,
        });
        first_row = end_row;
    }
    Ok(Plan {
        kernel,
        chunks,
        merge: None,
        reduction: reduction(caps),
    })
}

fn plan_softmax_split(rows: u64, cols: u64, caps: &DeviceCaps) -> Result<Plan> {
    let block_len = BLOCK_LEN as u64;
    let blocks_per_row = cols.div_ceil(block_len);
    let max_blocks_per_row = (WORKGROUP_SIZE * MAX_MERGE_TRIPS) as u64;
    if blocks_per_row > max_blocks_per_row {
        return Err(Error::TooLarge(format!(
            "a row of {cols} elements is longer than the longest supported row, {} elements",
            max_blocks_per_row * block_len
        )));
    }
    // One partial per lane where barriers are expensive, if the merge and the partials
    // buffer allow that many.
    let lane_partials_bytes = rows * blocks_per_row * WORKGROUP_SIZE as u64 * PARTIAL_BYTES;
    let lane_partials = caps.cpu_adapter
        && LANE_PARTIALS_CPU
        && blocks_per_row <= MAX_MERGE_TRIPS as u64
        && lane_partials_bytes <= caps.max_storage_binding_bytes;
    let partials_per_block = if lane_partials { WORKGROUP_SIZE } else { 1 };
    let partials_bytes = rows * blocks_per_row * partials_per_block as u64 * PARTIAL_BYTES;
    if partials_bytes > caps.max_storage_binding_bytes {
        return Err(Error::TooLarge(format!(
            "the partials of {rows} rows of {cols} elements need {partials_bytes} bytes, \
             more than the device's max storage binding of {} bytes",
            caps.max_storage_binding_bytes
        )));
    }

    let max_chunk = caps.max_chunk_elements();
    let max = caps.max_workgroups_per_dimension;
    let mut chunks = Vec::new();
    if cols <= max_chunk {
        // Whole rows per chunk.
        let rows_per_chunk = max_chunk / cols;
        let mut first_row = 0;
        while first_row < rows {
            let end_row = rows.min(first_row + rows_per_chunk);
            chunks.push(Chunk {
                elements: first_row * cols..end_row * cols,
                first_row,
                rows: end_row - first_row,
                first_block: 0,
                chunk_blocks: blocks_per_row as u32,
                grid: Grid::fold((end_row - first_row) * blocks_per_row, max)?,
            });
            first_row = end_row;
        }
    } else {
        // A row exceeds one binding: each chunk holds whole blocks of one row. `plan` checked
        // that a binding holds at least one block.
        let blocks_per_chunk = max_chunk / block_len;
        for row in 0..rows {
            let mut block = 0;
            while block < blocks_per_row {
                let end_block = blocks_per_row.min(block + blocks_per_chunk);
                let start = row * cols + block * block_len;
                let end = row * cols + cols.min(end_block * block_len);
                chunks.push(Chunk {
                    elements: start..end,
                    first_row: row,
                    rows: 1,
                    first_block: block as u32,
                    chunk_blocks: (end_block - block) as u32,
                    grid: Grid::fold(end_block - block, max)?,
                });
                block = end_block;
            }
        }
    }

    Ok(Plan {
        kernel: Kernel::SoftmaxSplit {
            block_len: BLOCK_LEN,
            blocks_per_row: blocks_per_row as u32,
            lane_partials,
        },
        chunks,
        merge: Some(Grid::fold(rows, max)?),
        reduction: reduction(caps),
    })
}

/// The dispatches of the sigmoid kernel over one chunk: `sigmoid_vec4` over the first
/// `vector_elements`, and `sigmoid` over the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigmoidDispatches {
    /// Elements, a multiple of 4, that `sigmoid_vec4` computes.
    pub vector_elements: u64,
    /// The `sigmoid_vec4` grid, if `vector_elements` is not zero.
    pub vector: Option<Grid>,
    /// The `sigmoid` grid over the remaining elements, if any.
    pub scalar: Option<Grid>,
}

/// Splits a sigmoid chunk of `len` elements between the vec4 and scalar kernels. `aligned`
/// states that the chunk starts on a 16-byte boundary in both bindings; otherwise everything
/// runs scalar.
pub fn sigmoid_dispatches(len: u64, aligned: bool, caps: &DeviceCaps) -> Result<SigmoidDispatches> {
    let tile = (WORKGROUP_SIZE * SIGMOID_ELEMENTS_PER_INVOCATION) as u64;
    let vector_elements = if aligned { len / 4 * 4 } else { 0 };
    let scalar_elements = len - vector_elements;
    let grid = |elements: u64| -> Result<Option<Grid>> {
        match elements {
            0 => Ok(None),
            _ => Grid::fold(elements.div_ceil(tile), caps.max_workgroups_per_dimension).map(Some),
        }
    };
    Ok(SigmoidDispatches {
        vector_elements,
        vector: grid(vector_elements)?,
        scalar: grid(scalar_elements)?,
    })
}

/// Whether a softmax launch of `kernel` on rows of `cols` runs its vec4 form. `aligned` states
/// that every chunk starts on a 16-byte boundary in both bindings; rows then start on one too
/// when `cols` is a multiple of 4.
pub fn softmax_uses_vec4(kernel: Kernel, cols: u64, aligned: bool) -> bool {
    let has_vec4_form = matches!(
        kernel,
        Kernel::SoftmaxSmallRows | Kernel::SoftmaxSplit { .. }
    );
    has_vec4_form && aligned && cols.is_multiple_of(4)
}

/// Splits `rows` rows of `cols` elements into host batches of whole rows, each at most
/// `HOST_BATCH_BYTES` of input unless one row alone is larger, and never above the device's
/// max buffer size.
pub fn plan_batches(rows: u64, cols: u64, caps: &DeviceCaps) -> Result<Vec<Range<u64>>> {
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let row_bytes = cols.saturating_mul(F32_BYTES);
    if row_bytes > caps.max_buffer_bytes {
        return Err(Error::TooLarge(format!(
            "a row of {cols} elements ({row_bytes} bytes) exceeds the device's max buffer size of {} bytes",
            caps.max_buffer_bytes
        )));
    }
    let batch_bytes = HOST_BATCH_BYTES.min(caps.max_buffer_bytes);
    let rows_per_batch = (batch_bytes / row_bytes).max(1);
    let mut batches = Vec::new();
    let mut first = 0;
    while first < rows {
        let end = rows.min(first + rows_per_batch);
        batches.push(first..end);
        first = end;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits of lavapipe (Mesa 22.3) as a device requests them from the adapter.
    fn lavapipe() -> DeviceCaps {
        DeviceCaps {
            max_storage_binding_bytes: 128 << 20,
            max_buffer_bytes: 2 << 30,
            max_workgroups_per_dimension: 65_535,
            storage_offset_alignment: 16,
            cpu_adapter: true,
            subgroups: true,
        }
    }

    /// lavapipe's limits on a hardware GPU.
    fn gpu() -> DeviceCaps {
        DeviceCaps {
            cpu_adapter: false,
            ..lavapipe()
        }
    }

    fn assert_covers(plan: &Plan, elements: u64) {
        let mut next = 0;
        for chunk in &plan.chunks {
            assert_eq!(chunk.elements.start, next, "chunks leave a gap or overlap");
            next = chunk.elements.end;
        }
        assert_eq!(next, elements, "chunks do not reach the last element");
    }

    fn assert_grids_fit(plan: &Plan, caps: &DeviceCaps) {
        let grids = plan.chunks.iter().map(|c| c.grid).chain(plan.merge);
        for grid in grids {
            assert!(grid.x <= caps.max_workgroups_per_dimension, "{grid:?}");
            assert!(grid.y <= caps.max_workgroups_per_dimension, "{grid:?}");
            assert!(
                grid.x as u64 * grid.y as u64 >= grid.groups as u64,
                "{grid:?}"
            );
        }
    }

    #[test]
    fn fold_keeps_small_grids_flat() {
        assert_eq!(
            Grid::fold(7, 65_535).unwrap(),
            Grid {
                x: 7,
                y: 1,
                groups: 7
            }
        );
        assert_eq!(Grid::fold(65_535, 65_535).unwrap().y, 1);
    }

    #[test]
    fn fold_wraps_past_dimension_limit() {
        let grid = Grid::fold(65_536, 65_535).unwrap();
        assert_eq!((grid.x, grid.y, grid.groups), (65_535, 2, 65_536));
    }

    #[test]
    fn fold_rejects_grid_beyond_two_dimensions() {
        assert!(Grid::fold(65_535 * 65_535 + 1, 65_535).is_err());
    }

    #[test]
    fn zero_size_plans_no_dispatch() {
        let caps = lavapipe();
        for (rows, cols) in [(0, 5), (10, 0), (0, 0)] {
            for op in [Op::Sigmoid, Op::Softmax] {
                let plan = plan(op, DType::F32, rows, cols, &caps).unwrap();
                assert!(plan.chunks.is_empty());
                assert!(plan.merge.is_none());
            }
        }
        assert!(plan_batches(0, 5, &caps).unwrap().is_empty());
    }

    #[test]
    fn sigmoid_past_workgroup_limit_folds() {
        let caps = lavapipe();
        // A 1 GiB binding holds the whole input, so only the grid limit applies.
        let caps = DeviceCaps {
            max_storage_binding_bytes: 1 << 30,
            ..caps
        };
        let tile = (WORKGROUP_SIZE * SIGMOID_ELEMENTS_PER_INVOCATION) as u64;
        let elements = 65_535 * tile + 1;
        let plan = plan(Op::Sigmoid, DType::F32, elements, 1, &caps).unwrap();
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(
            plan.chunks[0].grid.groups as u64,
            (plan.chunks[0].elements.end).div_ceil(tile)
        );
        assert!(plan.chunks[0].grid.y > 1);
        assert_covers(&plan, elements);
        assert_grids_fit(&plan, &caps);
    }

    #[test]
    fn sigmoid_above_binding_size_chunks() {
        let caps = lavapipe();
        let elements = 33_554_433;
        let plan = plan(Op::Sigmoid, DType::F32, elements, 1, &caps).unwrap();
        assert_eq!(plan.chunks.len(), 2);
        for chunk in &plan.chunks {
            let bytes = (chunk.elements.end - chunk.elements.start) * F32_BYTES;
            assert!(bytes + caps.storage_offset_alignment <= caps.max_storage_binding_bytes);
        }
        assert_covers(&plan, elements);
        assert_grids_fit(&plan, &caps);
    }

    #[test]
    fn softmax_small_row_kernel_up_to_threshold() {
        for (caps, max_cols) in [
            (lavapipe(), SMALL_ROW_MAX_COLS_CPU),
            (gpu(), SMALL_ROW_MAX_COLS_GPU),
        ] {
            for cols in [1, 2, max_cols] {
                let plan = plan(Op::Softmax, DType::F32, 300, cols, &caps).unwrap();
                assert_eq!(plan.kernel, Kernel::SoftmaxSmallRows, "cols = {cols}");
                assert_eq!(plan.chunks[0].grid.groups, 2, "cols = {cols}");
                assert_eq!(plan.chunks[0].rows, 300, "cols = {cols}");
            }
            let plan = plan(Op::Softmax, DType::F32, 300, max_cols + 1, &caps).unwrap();
            assert_eq!(plan.kernel, Kernel::SoftmaxRows, "cols = {}", max_cols + 1);
        }
    }

    #[test]
    fn softmax_row_kernel_up_to_block_len() {
        let caps = gpu();
        for cols in [SMALL_ROW_MAX_COLS_GPU + 1, 255, 256, 257, BLOCK_LEN as u64] {
            let plan = plan(Op::Softmax, DType::F32, 3, cols, &caps).unwrap();
            assert_eq!(plan.kernel, Kernel::SoftmaxRows, "cols = {cols}");
            assert_eq!(plan.chunks[0].grid.groups, 3);
        }
    }

    #[test]
    fn softmax_splits_rows_past_block_len() {
        let cols = BLOCK_LEN as u64 + 1;
        for (caps, lane_partials) in [(lavapipe(), true), (gpu(), false)] {
            let plan = plan(Op::Softmax, DType::F32, 3, cols, &caps).unwrap();
            assert_eq!(
                plan.kernel,
                Kernel::SoftmaxSplit {
                    block_len: BLOCK_LEN,
                    blocks_per_row: 2,
                    lane_partials,
                }
            );
            assert_eq!(plan.chunks[0].grid.groups, 6);
            assert_eq!(plan.merge.unwrap().groups, 3);
        }
    }

    #[test]
    fn softmax_many_rows_fold() {
        let caps = gpu();
        for rows in [65_536, 65_537] {
            let plan = plan(Op::Softmax, DType::F32, rows, 300, &caps).unwrap();
            assert_eq!(plan.chunks[0].grid.groups as u64, rows);
            assert_eq!(plan.chunks[0].grid.y, 2);
            assert_grids_fit(&plan, &caps);
        }
    }

    #[test]
    fn softmax_chunks_hold_whole_rows() {
        let caps = lavapipe();
        let (rows, cols) = (9_000, 4_097);
        let plan = plan(Op::Softmax, DType::F32, rows, cols, &caps).unwrap();
        assert!(plan.chunks.len() > 1);
        for chunk in &plan.chunks {
            assert_eq!(chunk.elements.start % cols, 0);
            assert_eq!(chunk.elements.end % cols, 0);
        }
        assert_covers(&plan, rows * cols);
    }

    #[test]
    fn softmax_row_above_binding_size_splits_by_blocks() {
        let caps = lavapipe();
        let cols = 40_000_000;
        let plan = plan(Op::Softmax, DType::F32, 2, cols, &caps).unwrap();
        let Kernel::SoftmaxSplit { blocks_per_row, .. } = plan.kernel else {
            panic!("expected the split kernel, got {:?}", plan.kernel);
        };
        let blocks: u32 = plan.chunks.iter().map(|c| c.chunk_blocks).sum();
        assert_eq!(blocks, 2 * blocks_per_row);
        assert!(plan.chunks.iter().any(|c| c.first_block > 0));
        assert_covers(&plan, 2 * cols);
        assert_grids_fit(&plan, &caps);
    }

    fn lane_partials(plan: &Plan) -> bool {
        match plan.kernel {
            Kernel::SoftmaxSplit { lane_partials, .. } => lane_partials,
            kernel => panic!("expected the split kernel, got {kernel:?}"),
        }
    }

    #[test]
    fn lane_partials_fall_back() {
        let caps = lavapipe();
        let block = BLOCK_LEN as u64;
        // The merge visits at most MAX_MERGE_TRIPS partials per lane.
        let longest = block * MAX_MERGE_TRIPS as u64;
        assert!(lane_partials(
            &plan(Op::Softmax, DType::F32, 1, longest, &caps).unwrap()
        ));
        assert!(!lane_partials(
            &plan(Op::Softmax, DType::F32, 1, longest + 1, &caps).unwrap()
        ));
        // Lane partials of 2 blocks per row fill a 128 MiB binding at 16,384 rows.
        assert!(lane_partials(
            &plan(Op::Softmax, DType::F32, 16_384, block + 1, &caps).unwrap()
        ));
        assert!(!lane_partials(
            &plan(Op::Softmax, DType::F32, 16_385, block + 1, &caps).unwrap()
        ));
    }

    #[test]
    fn softmax_rejects_row_past_merge_bound() {
        let caps = DeviceCaps {
            max_buffer_bytes: u64::MAX,
            ..lavapipe()
        };
        let cols = (BLOCK_LEN * WORKGROUP_SIZE) as u64 * MAX_MERGE_TRIPS as u64 + 1;
        assert!(plan(Op::Softmax, DType::F32, 1, cols, &caps).is_err());
    }

    #[test]
    fn reduction_follows_subgroup_feature() {
        let with = plan(Op::Softmax, DType::F32, 4, 300, &gpu()).unwrap();
        assert_eq!(with.reduction, Reduction::Subgroup);
        let caps = DeviceCaps {
            subgroups: false,
            ..gpu()
        };
        let without = plan(Op::Softmax, DType::F32, 4, 300, &caps).unwrap();
        assert_eq!(without.reduction, Reduction::Workgroup);
    }

    #[test]
    fn sigmoid_vector_part_and_tail() {
        let caps = lavapipe();
        let aligned = sigmoid_dispatches(4_099, true, &caps).unwrap();
        assert_eq!(aligned.vector_elements, 4_096);
        assert_eq!(aligned.vector.unwrap().groups, 2);
        assert_eq!(aligned.scalar.unwrap().groups, 1);

        let exact = sigmoid_dispatches(8, true, &caps).unwrap();
        assert_eq!(exact.vector_elements, 8);
        assert!(exact.scalar.is_none());

        let unaligned = sigmoid_dispatches(4_099, false, &caps).unwrap();
        assert_eq!(unaligned.vector_elements, 0);
        assert!(unaligned.vector.is_none());
        assert_eq!(unaligned.scalar.unwrap().groups, 3);
    }

    #[test]
    fn binding_smaller_than_block_is_an_error() {
        let caps = DeviceCaps {
            max_storage_binding_bytes: 32 << 10,
            ..lavapipe()
        };
        assert!(plan(Op::Sigmoid, DType::F32, 10, 1, &caps).is_err());
        assert!(plan(Op::Softmax, DType::F32, 1, 100_000, &caps).is_err());
    }

    #[test]
    fn batches_hold_whole_rows_under_cap() {
        let caps = lavapipe();
        let batches = plan_batches(100_000, 1_000, &caps).unwrap();
        assert!(batches.len() > 1);
        for batch in &batches {
            assert!((batch.end - batch.start) * 1_000 * F32_BYTES <= HOST_BATCH_BYTES);
        }
        assert_eq!(batches.last().unwrap().end, 100_000);
    }

    #[test]
    fn batches_reject_row_past_buffer_size() {
        let caps = lavapipe();
        assert!(plan_batches(1, caps.max_buffer_bytes / F32_BYTES + 1, &caps).is_err());
    }
}
