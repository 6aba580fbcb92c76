//! A pool of device buffers, so that repeated calls of the same size reuse their input, output,
//! staging and scratch buffers instead of allocating new ones.

use std::ops::Deref;
use std::sync::Mutex;

/// Free buffers kept for reuse. Beyond this count the oldest free buffer is dropped.
const MAX_FREE_BUFFERS: usize = 12;

/// Free buffers, matched by usage and by size with at most a quarter of slack.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<wgpu::Buffer>>,
}

impl BufferPool {
    /// Returns a buffer of at least `size` bytes with exactly `usage`, reusing a free one
    /// where one fits. The buffer goes back to the pool when the guard drops.
    pub fn acquire<'a>(
        &'a self,
        device: &wgpu::Device,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> PooledBuffer<'a> {
        // wgpu rejects zero-size bindings and needs sizes in multiples of 4 for copies.
        let size = size.max(4).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fits = |buffer: &wgpu::Buffer| {
            buffer.usage() == usage && buffer.size() >= size && buffer.size() <= size + size / 4
        };
        let buffer = match free.iter().position(fits) {
            Some(index) => free.swap_remove(index),
            None => {
                drop(free);
                log::debug!("allocating buffer `{label}` of {size} bytes");
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            }
        };
        PooledBuffer {
            pool: self,
            buffer: Some(buffer),
        }
    }

    fn release(&self, buffer: wgpu::Buffer) {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        free.push(buffer);
        if free.len() > MAX_FREE_BUFFERS {
            // Dropped, not destroyed: a scratch buffer may still be used by recorded work
            // that is not yet submitted, and wgpu frees it once that work completes.
            free.remove(0);
        }
    }

    /// Drops every free buffer, so that wgpu frees its memory once no work uses it.
    pub fn clear(&self) {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        free.clear();
    }
}

/// A buffer on loan from a [`BufferPool`]; it returns to the pool on drop.
#[derive(Debug)]
pub struct PooledBuffer<'a> {
    pool: &'a BufferPool,
    buffer: Option<wgpu::Buffer>,
}

impl Deref for PooledBuffer<'_> {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }
}

impl Drop for PooledBuffer<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.release(buffer);
        }
    }
}
