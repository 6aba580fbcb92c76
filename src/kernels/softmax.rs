//! Launcher of shaders/softmax.wgsl.

use bytemuck::{Pod, Zeroable};

use super::{BufferRegion, ParamsBuffer, storage_entry, uniform_entry};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::options::{EntropyUnit, MaskedRows, SoftmaxOptions};
use crate::planner::{self, DType, Grid, Kernel, Op, PARTIAL_BYTES, Plan, STATS_BYTES};
use crate::shaders::{Reduction, ShaderFamily};

/// Keep in sync with the bindings listed in shaders/softmax.wgsl.
pub(super) const LAYOUT: [wgpu::BindGroupLayoutEntry; 6] = [
    uniform_entry(0),
    storage_entry(1, true),
    storage_entry(2, false),
    storage_entry(3, false),
    storage_entry(4, false),
    storage_entry(5, true),
];

/// An additive mask on the device for [`Engine::record_softmax_masked`].
#[derive(Clone, Copy, Debug)]
pub struct MaskRegion<'a> {
    /// The mask values: the input's shape, or one row when `broadcast` is set.
    pub values: BufferRegion<'a>,
    /// Whether one row of `cols` values serves every row.
    pub broadcast: bool,
}

/// Keep in sync with `Params` in shaders/softmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct Params {
    in_offset: u32,
    out_offset: u32,
    cols: u32,
    block_len: u32,
    blocks_per_row: u32,
    first_row: u32,
    first_block: u32,
    chunk_blocks: u32,
    groups: u32,
    groups_x: u32,
    /// Always 1.0, an operand that keeps the compiler from reassociating TwoSum.
    one: f32,
    rows: u32,
    partials_per_block: u32,
    c1: f32,
    c2: f32,
    c_lo: f32,
    entropy_scale: f32,
    mask_offset: u32,
    mask_broadcast: u32,
    b1: f32,
    b2: f32,
    b_lo: f32,
}

impl Engine {
    /// Records softmax over the last axis of a row-major `[rows, cols]` f32 array from `input`
    /// into `output` as one compute pass on `encoder`. Nothing runs until the caller submits
    /// the encoder. `input` and `output` must be different buffers. A zero-size shape records nothing.
    pub fn record_softmax(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
    ) -> Result<()> {
        self.record_softmax_with(
            encoder,
            input,
            output,
            rows,
            cols,
            &SoftmaxOptions::default(),
        )
    }

    /// Records softmax or log-softmax with `options` like [`Engine::record_softmax`].
    pub fn record_softmax_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
    ) -> Result<()> {
        let plan = planner::plan(options.op(), DType::F32, rows, cols, self.caps())?;
        self.record_softmax_planned(encoder, input, output, rows, cols, options, &plan)
    }

    /// Records softmax like [`Engine::record_softmax_with`], with a plan that the caller made
    /// with [`planner::plan`], for example from caps other than the engine's to run another
    /// kernel variant. The plan must be for softmax on this shape.
    #[allow(clippy::too_many_arguments)]
    pub fn record_softmax_planned(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
        plan: &Plan,
    ) -> Result<()> {
        let target = Target {
            output,
            entropy: None,
        };
        self.record_rows(encoder, input, None, target, rows, cols, options, plan)
    }

    /// Records softmax or log-softmax like [`Engine::record_softmax_with`], with an additive
    /// `mask` applied before the max: z = (scale * x + mask) / temperature. A mask entry of
    /// -inf excludes its logit. The mask must not share a buffer with `output`.
    #[allow(clippy::too_many_arguments)]
    pub fn record_softmax_masked(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        mask: MaskRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
    ) -> Result<()> {
        let plan = planner::plan(options.op(), DType::F32, rows, cols, self.caps())?;
        self.record_softmax_masked_planned(encoder, input, mask, output, rows, cols, options, &plan)
    }

    /// Records masked softmax like [`Engine::record_softmax_masked`], with a plan that the
    /// caller made with [`planner::plan`], as for [`Engine::record_softmax_planned`].
    #[allow(clippy::too_many_arguments)]
    pub fn record_softmax_masked_planned(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        mask: MaskRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
        plan: &Plan,
    ) -> Result<()> {
        let target = Target {
            output,
            entropy: None,
        };
        self.record_rows(
            encoder,
            input,
            Some(mask),
            target,
            rows,
            cols,
            options,
            plan,
        )
    }

    /// Records the entropy of the softmax distribution of each row of a row-major
    /// `[rows, cols]` f32 array from `input` into `output`, one f32 per row, in `unit`, like
    /// [`Engine::record_softmax_with`]. A row of only -inf gives NaN, or 0 under
    /// `MaskedRows::Zero`.
    #[allow(clippy::too_many_arguments)]
    pub fn record_entropy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
        unit: EntropyUnit,
    ) -> Result<()> {
        let plan = planner::plan(Op::Entropy, DType::F32, rows, cols, self.caps())?;
        self.record_entropy_planned(encoder, input, output, rows, cols, options, unit, &plan)
    }

    /// Records the entropy like [`Engine::record_entropy`], with a plan that the caller made
    /// with [`planner::plan`], as for [`Engine::record_softmax_planned`].
    #[allow(clippy::too_many_arguments)]
    pub fn record_entropy_planned(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
        unit: EntropyUnit,
        plan: &Plan,
    ) -> Result<()> {
        crate::reference::check_entropy_shape(rows as usize, cols as usize)?;
        let target = Target {
            output,
            entropy: Some(unit),
        };
        self.record_rows(encoder, input, None, target, rows, cols, options, plan)
    }

    /// Records softmax, log-softmax or the entropy of each row, with an optional mask.
    #[allow(clippy::too_many_arguments)]
    fn record_rows(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        mask: Option<MaskRegion<'_>>,
        target: Target<'_>,
        rows: u64,
        cols: u64,
        options: &SoftmaxOptions,
        plan: &Plan,
    ) -> Result<()> {
        let Target { output, entropy } = target;
        options.validate()?;
        let covered = plan.chunks.last().map_or(0, |chunk| chunk.elements.end);
        if plan.kernel == Kernel::Sigmoid || covered != rows * cols {
            return Err(Error::InvalidArgument(format!(
                "the plan covers {covered} elements with {:?}, not softmax of [{rows}, {cols}]",
                plan.kernel
            )));
        }
        let has_subgroups = self.device().features().contains(wgpu::Features::SUBGROUP);
        if plan.reduction == Reduction::Subgroup && !has_subgroups {
            return Err(Error::InvalidArgument(
                "the plan uses subgroup reductions, but the device lacks Features::SUBGROUP"
                    .to_owned(),
            ));
        }
        if plan.chunks.is_empty() {
            return Ok(());
        }
        let output_elements = if entropy.is_some() { rows } else { rows * cols };
        BufferRegion::check_pair(&input, &output, rows * cols, output_elements)?;
        if let Some(mask) = &mask {
            let values = if mask.broadcast { cols } else { rows * cols };
            mask.values.check("mask", values)?;
            if mask.values.buffer == output.buffer {
                return Err(Error::InvalidArgument(
                    "the mask and the output are the same buffer; give the mask its own buffer"
                        .to_owned(),
                ));
            }
        }

        let operation = if entropy.is_some() {
            "recording entropy"
        } else {
            "recording softmax"
        };
        self.scoped(operation, || {
            let (block_len, blocks_per_row, lane_partials) = match plan.kernel {
                Kernel::SoftmaxSplit {
                    block_len,
                    blocks_per_row,
                    lane_partials,
                } => (block_len, blocks_per_row, lane_partials),
                _ => (cols as u32, 1, false),
            };
            let partials_per_block = if lane_partials {
                planner::WORKGROUP_SIZE
            } else {
                1
            };

            // The split kernel's partials and row stats. The row kernel binds small unused
            // buffers instead, because every entry point shares one layout.
            let (partials_bytes, stats_bytes) = match plan.merge {
                Some(_) => (
                    rows * blocks_per_row as u64 * partials_per_block as u64 * PARTIAL_BYTES,
                    rows * STATS_BYTES,
                ),
                None => (PARTIAL_BYTES, STATS_BYTES),
            };
            let usage = wgpu::BufferUsages::STORAGE;
            let partials =
                self.pool
                    .acquire(self.device(), "softmax partials", partials_bytes, usage);
            let row_stats =
                self.pool
                    .acquire(self.device(), "softmax row stats", stats_bytes, usage);

            // The entropy output has one f32 per row: a chunk binds its rows, and the merge,
            // which writes the entropy of split rows, binds all of them.
            let alignment = self.caps().storage_offset_alignment;
            let output_range = |elements: &std::ops::Range<u64>, first_row: u64, rows: u64| {
                if entropy.is_some() {
                    first_row..first_row + rows
                } else {
                    elements.clone()
                }
            };
            // A mask of the input's shape binds the chunk's elements, and a broadcast mask its
            // one row. Without a mask, a small unused buffer fills the binding.
            let no_mask = self
                .pool
                .acquire(self.device(), "softmax no mask", 16, usage);
            let mask_binding = |elements: &std::ops::Range<u64>| match &mask {
                Some(mask) if mask.broadcast => mask.values.bind(&(0..cols), alignment),
                Some(mask) => mask.values.bind(elements, alignment),
                None => (scratch_binding(&no_mask, 16), 0),
            };
            let mut bindings: Vec<_> = plan
                .chunks
                .iter()
                .map(|chunk| {
                    let range = output_range(&chunk.elements, chunk.first_row, chunk.rows);
                    (
                        input.bind(&chunk.elements, alignment),
                        output.bind(&range, alignment),
                        mask_binding(&chunk.elements),
                    )
                })
                .collect();

            // The vec4 kernel counts offsets in vec4s. The entropy and the mask have no vec4
            // form.
            let aligned = bindings.iter().all(|((_, in_offset), (_, out_offset), _)| {
                in_offset % 4 == 0 && out_offset % 4 == 0
            });
            let vec4 = entropy.is_none()
                && mask.is_none()
                && planner::softmax_uses_vec4(plan.kernel, cols, aligned);
            let offset_unit = if vec4 { 4 } else { 1 };

            let [c1, c2, c_lo] = options.factor_parts();
            let [b1, b2, b_lo] = options.mask_factor_parts();
            // With a mask, 1 / temperature multiplies the mask even where the logits' factor
            // is 1.
            let scaled = options.is_scaled() || (mask.is_some() && options.temperature != 1.0);
            let mask_broadcast = u32::from(mask.is_some_and(|mask| mask.broadcast));
            // Keep in sync with the overrides in shaders/softmax.wgsl.
            let constants = [
                ("LOG_OUTPUT", f64::from(u8::from(options.log))),
                (
                    "MASKED_ROWS_ZERO",
                    f64::from(u8::from(options.masked_rows == MaskedRows::Zero)),
                ),
                ("SCALED", f64::from(u8::from(scaled))),
                ("ENTROPY", f64::from(u8::from(entropy.is_some()))),
                ("MASKED", f64::from(u8::from(mask.is_some()))),
            ];
            let entropy_scale = entropy.map_or(1.0, |unit| unit.per_nat() as f32);
            let mut params: Vec<Params> = plan
                .chunks
                .iter()
                .zip(&bindings)
                .map(
                    |(chunk, ((_, in_offset), (_, out_offset), (_, mask_offset)))| Params {
                        in_offset: *in_offset / offset_unit,
                        out_offset: *out_offset / offset_unit,
                        cols: cols as u32,
                        block_len,
                        blocks_per_row,
                        first_row: chunk.first_row as u32,
                        first_block: chunk.first_block,
                        chunk_blocks: chunk.chunk_blocks,
                        groups: chunk.grid.groups,
                        groups_x: chunk.grid.x,
                        one: 1.0,
                        rows: chunk.rows as u32,
                        partials_per_block,
                        c1,
                        c2,
                        c_lo,
                        entropy_scale,
                        mask_offset: *mask_offset,
                        mask_broadcast,
                        b1,
                        b2,
                        b_lo,
                    },
                )
                .collect();
            if let Some(merge) = plan.merge {
                // The merge binds the first chunk's input and, but for the entropy, its
                // output, neither of which it accesses. For the entropy it binds the output of
                // every row, one f32 each. Binding a whole softmax output would exceed the
                // device's max binding for outputs over 128 MiB.
                let merge_output = match entropy {
                    Some(_) => output.bind(&output_range(&(0..rows * cols), 0, rows), alignment),
                    None => bindings[0].1.clone(),
                };
                let out_offset = merge_output.1;
                bindings.push((bindings[0].0.clone(), merge_output, bindings[0].2.clone()));
                params.push(Params {
                    out_offset,
                    blocks_per_row,
                    partials_per_block,
                    c1,
                    c2,
                    c_lo,
                    entropy_scale,
                    mask_broadcast,
                    b1,
                    b2,
                    b_lo,
                    groups: merge.groups,
                    groups_x: merge.x,
                    one: 1.0,
                    ..Params::default()
                });
            }
            let params_buffer = ParamsBuffer::new(self, "softmax params", &params);

            // Bind group `index` uses params[index] and bindings[index].
            let (_, layout) = self.pipeline(
                ShaderFamily::Softmax,
                plan.reduction,
                "softmax_rows",
                &constants,
            )?;
            let bind_groups: Vec<wgpu::BindGroup> = (0..params.len())
                .map(|index| {
                    let ((input, _), (output, _), (mask, _)) = &bindings[index];
                    self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("softmax"),
                        layout: &layout,
                        entries: &[
                            wgpu::BindGroupEntry {
                                binding: 0,
                                resource: wgpu::BindingResource::Buffer(
                                    params_buffer.binding(index),
                                ),
                            },
                            wgpu::BindGroupEntry {
                                binding: 1,
                                resource: wgpu::BindingResource::Buffer(input.clone()),
                            },
                            wgpu::BindGroupEntry {
                                binding: 2,
                                resource: wgpu::BindingResource::Buffer(output.clone()),
                            },
                            wgpu::BindGroupEntry {
                                binding: 3,
                                resource: wgpu::BindingResource::Buffer(scratch_binding(
                                    &partials,
                                    partials_bytes,
                                )),
                            },
                            wgpu::BindGroupEntry {
                                binding: 4,
                                resource: wgpu::BindingResource::Buffer(scratch_binding(
                                    &row_stats,
                                    stats_bytes,
                                )),
                            },
                            wgpu::BindGroupEntry {
                                binding: 5,
                                resource: wgpu::BindingResource::Buffer(mask.clone()),
                            },
                        ],
                    })
                })
                .collect();

            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("softmax"),
                timestamp_writes: None,
            });
            let dispatch = |pass: &mut wgpu::ComputePass<'_>,
                            entry_point: &'static str,
                            index: usize,
                            grid: Grid|
             -> Result<()> {
                let (pipeline, _) = self.pipeline(
                    ShaderFamily::Softmax,
                    plan.reduction,
                    entry_point,
                    &constants,
                )?;
                log::debug!("softmax: {entry_point} dispatch {grid:?}");
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_groups[index], &[]);
                pass.dispatch_workgroups(grid.x, grid.y, 1);
                Ok(())
            };

            let chunks = plan.chunks.iter().enumerate();
            match (plan.kernel, plan.merge) {
                (Kernel::SoftmaxSmallRows, _) => {
                    for (index, chunk) in chunks {
                        let entry_point = if vec4 {
                            "softmax_small_rows_vec4"
                        } else {
                            "softmax_small_rows"
                        };
                        dispatch(&mut pass, entry_point, index, chunk.grid)?;
                    }
                }
                (_, None) => {
                    for (index, chunk) in chunks {
                        dispatch(&mut pass, "softmax_rows", index, chunk.grid)?;
                    }
                }
                (_, Some(merge)) => {
                    let partials_entry = match (lane_partials, vec4) {
                        (true, true) => "softmax_lane_partials_vec4",
                        (true, false) => "softmax_lane_partials",
                        (false, true) => "softmax_partials_vec4",
                        (false, false) => "softmax_partials",
                    };
                    for (index, chunk) in chunks.clone() {
                        dispatch(&mut pass, partials_entry, index, chunk.grid)?;
                    }
                    dispatch(&mut pass, "softmax_merge", params.len() - 1, merge)?;
                    // The merge wrote the entropy; there is no row to normalise.
                    let normalized_chunks = chunks.filter(|_| entropy.is_none());
                    for (index, chunk) in normalized_chunks {
                        let entry_point = if vec4 {
                            "softmax_normalize_vec4"
                        } else {
                            "softmax_normalize"
                        };
                        dispatch(&mut pass, entry_point, index, chunk.grid)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Binds the first `bytes` of a pooled scratch buffer, which may be larger than asked for and
/// so larger than the device's max storage binding.
fn scratch_binding(buffer: &wgpu::Buffer, bytes: u64) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: std::num::NonZeroU64::new(bytes),
    }
}

/// The destination of `record_rows`: the output, and for the entropy its unit.
struct Target<'a> {
    output: BufferRegion<'a>,
    entropy: Option<EntropyUnit>,
}
