//! Launcher of shaders/sigmoid.wgsl.

use bytemuck::{Pod, Zeroable};

use super::{BufferRegion, ParamsBuffer, storage_entry, uniform_entry};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::planner::{self, DType, Grid, Op};
use crate::shaders::ShaderFamily;

/// Keep in sync with the bindings listed in shaders/sigmoid.wgsl.
pub(super) const LAYOUT: [wgpu::BindGroupLayoutEntry; 3] = [
    uniform_entry(0),
    storage_entry(1, true),
    storage_entry(2, false),
];

/// Keep in sync with `Params` in shaders/sigmoid.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    in_offset: u32,
    out_offset: u32,
    len: u32,
    groups_x: u32,
}

impl Engine {
    /// Records sigmoid of `len` f32 from `input` into `output` as one compute pass on
    /// `encoder`. Nothing runs until the caller submits the encoder. `input` and `output` must
    /// be different buffers. A zero `len` records nothing.
    pub fn record_sigmoid(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        len: u64,
    ) -> Result<()> {
        self.record_elementwise(encoder, Op::Sigmoid, input, output, len)
    }

    /// Records the elementwise `op` (sigmoid, log-sigmoid or SiLU) of `len` f32 like
    /// [`Engine::record_sigmoid`].
    pub fn record_elementwise(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        op: Op,
        input: BufferRegion<'_>,
        output: BufferRegion<'_>,
        len: u64,
    ) -> Result<()> {
        // Keep in sync with `FUNCTION` in shaders/sigmoid.wgsl.
        let function = match op {
            Op::Sigmoid => 0.0,
            Op::LogSigmoid => 1.0,
            Op::Silu => 2.0,
            Op::Softmax | Op::LogSoftmax | Op::Entropy => {
                return Err(Error::InvalidArgument(format!(
                    "{} is not elementwise; record it with record_softmax_with",
                    op.name()
                )));
            }
        };
        let constants = [("FUNCTION", function)];
        let plan = planner::plan(op, DType::F32, len, 1, self.caps())?;
        if plan.chunks.is_empty() {
            return Ok(());
        }
        BufferRegion::check_pair(&input, &output, len, len)?;

        self.scoped(&format!("recording {}", op.name()), || {
            let alignment = self.caps().storage_offset_alignment;

            // Each chunk runs the vec4 kernel over its aligned part and the scalar kernel over the
            // rest. Every dispatch gets its own parameters and bind group.
            let mut dispatches: Vec<(&'static str, Params, usize, Grid)> = Vec::new();
            let mut bindings = Vec::new();
            for (index, chunk) in plan.chunks.iter().enumerate() {
                let (input_binding, in_offset) = input.bind(&chunk.elements, alignment);
                let (output_binding, out_offset) = output.bind(&chunk.elements, alignment);
                bindings.push((input_binding, output_binding));

                let len = chunk.elements.end - chunk.elements.start;
                let aligned = in_offset % 4 == 0 && out_offset % 4 == 0;
                let split = planner::sigmoid_dispatches(len, aligned, self.caps())?;
                let vector_elements = split.vector_elements as u32;
                if let Some(grid) = split.vector {
                    let params = Params {
                        in_offset: in_offset / 4,
                        out_offset: out_offset / 4,
                        len: vector_elements / 4,
                        groups_x: grid.x,
                    };
                    dispatches.push(("sigmoid_vec4", params, index, grid));
                }
                if let Some(grid) = split.scalar {
                    let params = Params {
                        in_offset: in_offset + vector_elements,
                        out_offset: out_offset + vector_elements,
                        len: len as u32 - vector_elements,
                        groups_x: grid.x,
                    };
                    dispatches.push(("sigmoid", params, index, grid));
                }
            }
            let params: Vec<Params> = dispatches.iter().map(|dispatch| dispatch.1).collect();
            let params_buffer = ParamsBuffer::new(self, "sigmoid params", &params);

            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sigmoid"),
                timestamp_writes: None,
            });
            for (index, (entry_point, _, chunk, grid)) in dispatches.iter().enumerate() {
                let (pipeline, layout) = self.pipeline(
                    ShaderFamily::Sigmoid,
                    plan.reduction,
                    entry_point,
                    &constants,
                )?;
                let (input_binding, output_binding) = &bindings[*chunk];
                let bind_group = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("sigmoid"),
                    layout: &layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(params_buffer.binding(index)),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: wgpu::BindingResource::Buffer(input_binding.clone()),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: wgpu::BindingResource::Buffer(output_binding.clone()),
                        },
                    ],
                });
                log::debug!("sigmoid: {entry_point} dispatch {grid:?} in chunk {chunk}");
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(grid.x, grid.y, 1);
            }
            Ok(())
        })
    }
}
