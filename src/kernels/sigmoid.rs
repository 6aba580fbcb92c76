//! Launcher of shaders/sigmoid.wgsl.

use bytemuck::{Pod, Zeroable};

use super::{BufferRegion, ParamsBuffer, storage_entry, uniform_entry};
use crate::engine::Engine;
use crate::error::Result;
use crate::planner::{self, DType, Op};
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
        let plan = planner::plan(Op::Sigmoid, DType::F32, len, 1, self.caps())?;
        if plan.chunks.is_empty() {
            return Ok(());
        }
        BufferRegion::check_pair(&input, &output, len)?;

        self.scoped("recording sigmoid", || {
            let (pipeline, layout) =
                self.pipeline(ShaderFamily::Sigmoid, plan.reduction, "sigmoid")?;
            let alignment = self.caps().storage_offset_alignment;

            let bindings: Vec<_> = plan
                .chunks
                .iter()
                .map(|chunk| {
                    (
                        input.bind(&chunk.elements, alignment),
                        output.bind(&chunk.elements, alignment),
                    )
                })
                .collect();
            let params: Vec<Params> = plan
                .chunks
                .iter()
                .zip(&bindings)
                .map(|(chunk, ((_, in_offset), (_, out_offset)))| Params {
                    in_offset: *in_offset,
                    out_offset: *out_offset,
                    len: (chunk.elements.end - chunk.elements.start) as u32,
                    groups_x: chunk.grid.x,
                })
                .collect();
            let params_buffer = ParamsBuffer::new(self, "sigmoid params", &params);

            let bind_groups: Vec<_> = bindings
                .into_iter()
                .enumerate()
                .map(|(index, ((input, _), (output, _)))| {
                    self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("sigmoid"),
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
                                resource: wgpu::BindingResource::Buffer(input),
                            },
                            wgpu::BindGroupEntry {
                                binding: 2,
                                resource: wgpu::BindingResource::Buffer(output),
                            },
                        ],
                    })
                })
                .collect();

            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sigmoid"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            for (chunk, bind_group) in plan.chunks.iter().zip(&bind_groups) {
                log::debug!(
                    "sigmoid: dispatch {:?} over elements {:?}",
                    chunk.grid,
                    chunk.elements
                );
                pass.set_bind_group(0, bind_group, &[]);
                pass.dispatch_workgroups(chunk.grid.x, chunk.grid.y, 1);
            }
            Ok(())
        })
    }
}
