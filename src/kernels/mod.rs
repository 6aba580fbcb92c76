//! Launchers: one per kernel family, each recording its passes into a caller's
//! `CommandEncoder` on buffers the caller owns. The slice-in, Vec-out API in `run` is built on
//! these.

mod sigmoid;
mod softmax;

pub use softmax::MaskRegion;

use std::num::NonZeroU64;
use std::ops::Range;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::planner::F32_BYTES;
use crate::shaders::ShaderFamily;

/// f32 data in a device buffer, starting `offset` bytes into `buffer`.
#[derive(Clone, Copy, Debug)]
pub struct BufferRegion<'a> {
    /// A buffer with `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the first element, a multiple of 4.
    pub offset: u64,
}

impl<'a> BufferRegion<'a> {
    /// The data from the start of `buffer`.
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        BufferRegion { buffer, offset: 0 }
    }

    /// Checks that `input` and `output` each hold `elements` f32, can be bound as storage, and
    /// lie in different buffers: wgpu rejects a buffer bound both read-only and read-write in
    /// one dispatch, and only at submit, outside sigmax's error scopes.
    fn check_pair(
        input: &Self,
        output: &Self,
        input_elements: u64,
        output_elements: u64,
    ) -> Result<()> {
        input.check("input", input_elements)?;
        output.check("output", output_elements)?;
        if input.buffer == output.buffer {
            return Err(Error::InvalidArgument(
                "input and output are the same buffer; sigmax needs separate buffers (in-place \
                 kernels are not supported yet)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks that the region holds `elements` f32 and can be bound as storage.
    pub(super) fn check(&self, name: &str, elements: u64) -> Result<()> {
        if !self.offset.is_multiple_of(F32_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "{name} offset {} is not a multiple of 4 bytes",
                self.offset
            )));
        }
        let end = elements
            .checked_mul(F32_BYTES)
            .and_then(|bytes| bytes.checked_add(self.offset));
        if end.is_none_or(|end| end > self.buffer.size()) {
            return Err(Error::InvalidArgument(format!(
                "{name} buffer of {} bytes cannot hold {elements} f32 from byte offset {}",
                self.buffer.size(),
                self.offset
            )));
        }
        if !self.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidArgument(format!(
                "{name} buffer lacks BufferUsages::STORAGE"
            )));
        }
        Ok(())
    }

    /// Returns the binding of `elements` of this region, starting at an offset aligned to
    /// `alignment`, and the index of the first element inside that binding.
    fn bind(&self, elements: &Range<u64>, alignment: u64) -> (wgpu::BufferBinding<'a>, u32) {
        let start = self.offset + elements.start * F32_BYTES;
        let end = self.offset + elements.end * F32_BYTES;
        let aligned_start = start - start % alignment;
        let binding = wgpu::BufferBinding {
            buffer: self.buffer,
            offset: aligned_start,
            size: NonZeroU64::new(end - aligned_start),
        };
        (binding, ((start - aligned_start) / F32_BYTES) as u32)
    }
}

/// Bind group layout of `family`; every entry point of the family shares it.
pub(crate) fn layout_entries(family: ShaderFamily) -> Vec<wgpu::BindGroupLayoutEntry> {
    match family {
        ShaderFamily::Sigmoid => sigmoid::LAYOUT.to_vec(),
        ShaderFamily::Softmax => softmax::LAYOUT.to_vec(),
    }
}

const fn uniform_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

const fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// The uniform parameters of every dispatch of one launch, in one buffer, each at an offset
/// aligned to the device's uniform offset alignment.
struct ParamsBuffer {
    buffer: wgpu::Buffer,
    stride: u64,
    size: u64,
}

impl ParamsBuffer {
    fn new<T: Pod>(engine: &Engine, label: &str, params: &[T]) -> Self {
        let size = size_of::<T>() as u64;
        let alignment = engine.device().limits().min_uniform_buffer_offset_alignment as u64;
        let stride = size.next_multiple_of(alignment);
        let mut bytes = vec![0u8; (stride * params.len() as u64) as usize];
        for (index, param) in params.iter().enumerate() {
            let start = index * stride as usize;
            bytes[start..start + size as usize].copy_from_slice(bytemuck::bytes_of(param));
        }
        let buffer = engine
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        ParamsBuffer {
            buffer,
            stride,
            size,
        }
    }

    fn binding(&self, index: usize) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: index as u64 * self.stride,
            size: NonZeroU64::new(self.size),
        }
    }
}
