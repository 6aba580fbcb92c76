//! The slice-in, Vec-out API, built on the launchers: upload, record, submit, read back.

use bytemuck::Pod;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernels::{BufferRegion, MaskRegion};
use crate::options::{EntropyUnit, SoftmaxOptions};
use crate::planner::{self, F32_BYTES, Op};
use crate::reference::{check_entropy_shape, check_len, check_mask_len, check_row_call};

impl Engine {
    /// Creates a storage buffer holding `data`, usable as a launcher's input or output and as
    /// a copy source or destination.
    pub fn upload(&self, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
        self.scoped("uploading a buffer", || {
            let buffer = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (data.len() as u64 * F32_BYTES).max(F32_BYTES),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.queue()
                .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
            Ok(buffer)
        })
    }

    /// Copies `output.len()` f32 starting `offset` bytes into `buffer` (which needs
    /// `BufferUsages::COPY_SRC`) to the host, after all work submitted before the call.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset: u64, output: &mut [f32]) -> Result<()> {
        self.read_buffer(buffer, offset, output)
    }

    /// Copies `output.len()` values of `T` starting `offset` bytes into `buffer` (which needs
    /// `BufferUsages::COPY_SRC`) to the host, after all work submitted before the call.
    ///
    /// The copy goes through a pooled staging buffer. Its map callback sends on a oneshot
    /// channel, and the device is polled until the map completes.
    pub fn read_buffer<T: Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        output: &mut [T],
    ) -> Result<()> {
        if output.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::size_of_val(output) as u64;
        let aligned = offset.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
            && bytes.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if !aligned || offset + bytes > buffer.size() {
            return Err(Error::InvalidArgument(format!(
                "cannot read {bytes} bytes from byte offset {offset} of a buffer of {} bytes; \
                 offset and size must be multiples of 4",
                buffer.size()
            )));
        }

        self.scoped("reading a buffer back", || {
            let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
            let staging = self.pool.acquire(self.device(), "staging", bytes, usage);
            let mut encoder =
                self.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("readback"),
                    });
            encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
            self.queue().submit([encoder.finish()]);

            let slice = staging.slice(..bytes);
            let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
            slice.map_async(wgpu::MapMode::Read, move |result| {
                // Sending fails only once the receiver is dropped, after an early return, when
                // the result is no longer wanted.
                let _ = sender.send(result);
            });
            self.device().poll(wgpu::PollType::wait_indefinitely())?;
            match pollster::block_on(receiver.receive()) {
                Some(Ok(())) => {}
                Some(Err(error)) => return Err(Error::Readback(error.to_string())),
                None => return Err(Error::Readback("the map callback never ran".to_owned())),
            }

            {
                let view = slice
                    .get_mapped_range()
                    .map_err(|error| Error::Readback(error.to_string()))?;
                bytemuck::cast_slice_mut::<T, u8>(output).copy_from_slice(&view);
            }
            staging.unmap();
            Ok(())
        })
    }

    /// Returns sigmoid(input).
    pub fn sigmoid(&self, input: &[f32]) -> Result<Vec<f32>> {
        self.elementwise(Op::Sigmoid, input)
    }

    /// Writes sigmoid(input) into `output`, which has the input's length.
    pub fn sigmoid_into(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        self.elementwise_into(Op::Sigmoid, input, output)
    }

    /// Returns the elementwise `op` (sigmoid, log-sigmoid or SiLU) of `input`.
    pub fn elementwise(&self, op: Op, input: &[f32]) -> Result<Vec<f32>> {
        let mut output = vec![0.0; input.len()];
        self.elementwise_into(op, input, &mut output)?;
        Ok(output)
    }

    /// Writes the elementwise `op` of `input` into `output`, which has the input's length.
    pub fn elementwise_into(&self, op: Op, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_len("output", output.len(), input.len())?;
        self.run(Job::Elementwise(op), input, None, input.len(), 1, output)
    }

    /// Returns the softmax of each of the `rows` rows of `cols` elements of `input`.
    pub fn softmax(&self, input: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.softmax_with(input, rows, cols, &SoftmaxOptions::default())
    }

    /// Writes the softmax of each of the `rows` rows of `cols` elements of `input` into
    /// `output`, which has the input's length.
    pub fn softmax_into(
        &self,
        input: &[f32],
        rows: usize,
        cols: usize,
        output: &mut [f32],
    ) -> Result<()> {
        self.softmax_with_into(input, rows, cols, &SoftmaxOptions::default(), output)
    }

    /// Returns the softmax, or log-softmax, of each row of `input` with `options`.
    pub fn softmax_with(
        &self,
        input: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        let mut output = vec![0.0; input.len()];
        self.softmax_with_into(input, rows, cols, options, &mut output)?;
        Ok(output)
    }

    /// Writes the softmax, or log-softmax, of each row of `input` with `options` into
    /// `output`, which has the input's length.
    pub fn softmax_with_into(
        &self,
        input: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
        output: &mut [f32],
    ) -> Result<()> {
        check_row_call(options, rows, cols, input.len(), output.len(), cols)?;
        self.run(Job::Softmax(*options), input, None, rows, cols, output)
    }

    /// Replaces each element of `data` with the elementwise `op` of it.
    pub fn elementwise_in_place(&self, op: Op, data: &mut [f32]) -> Result<()> {
        let len = data.len();
        self.run_io(Job::Elementwise(op), None, None, len, 1, data)
    }

    /// Replaces each row of `data` with its softmax, or log-softmax, with `options`.
    pub fn softmax_in_place(
        &self,
        data: &mut [f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
    ) -> Result<()> {
        check_row_call(options, rows, cols, data.len(), data.len(), cols)?;
        self.run_io(Job::Softmax(*options), None, None, rows, cols, data)
    }

    /// Returns the softmax, or log-softmax, of each row of `input` with `options` and an
    /// additive `mask` of the input's length or of one row (`cols` values) shared by every
    /// row: z = (scale * x + mask) / temperature. A mask entry of -inf excludes its logit.
    pub fn softmax_masked(
        &self,
        input: &[f32],
        mask: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        let mut output = vec![0.0; input.len()];
        self.softmax_masked_into(input, mask, rows, cols, options, &mut output)?;
        Ok(output)
    }

    /// Writes [`Engine::softmax_masked`] into `output`, which has the input's length.
    pub fn softmax_masked_into(
        &self,
        input: &[f32],
        mask: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
        output: &mut [f32],
    ) -> Result<()> {
        check_row_call(options, rows, cols, input.len(), output.len(), cols)?;
        check_mask_len(mask.len(), rows, cols)?;
        self.run(
            Job::Softmax(*options),
            input,
            Some(mask),
            rows,
            cols,
            output,
        )
    }

    /// Returns the entropy of the softmax distribution of each row of `input` with `options`,
    /// one value per row, in `unit`.
    pub fn entropy(
        &self,
        input: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
        unit: EntropyUnit,
    ) -> Result<Vec<f32>> {
        let mut output = vec![0.0; rows];
        self.entropy_into(input, rows, cols, options, unit, &mut output)?;
        Ok(output)
    }

    /// Writes the entropy of each row's softmax distribution into `output`, one value per row.
    pub fn entropy_into(
        &self,
        input: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
        unit: EntropyUnit,
        output: &mut [f32],
    ) -> Result<()> {
        check_row_call(options, rows, cols, input.len(), output.len(), 1)?;
        check_entropy_shape(rows, cols)?;
        self.run(
            Job::Entropy(*options, unit),
            input,
            None,
            rows,
            cols,
            output,
        )
    }

    /// Runs `job` in host batches of whole rows, each uploaded, computed and read back in
    /// turn, so that device memory stays bounded whatever the input size.
    fn run(
        &self,
        job: Job,
        input: &[f32],
        mask: Option<&[f32]>,
        rows: usize,
        cols: usize,
        output: &mut [f32],
    ) -> Result<()> {
        self.run_io(job, Some(input), mask, rows, cols, output)
    }

    /// As `run`; without `input`, the input is `output` itself, which each batch uploads
    /// before it overwrites it.
    fn run_io(
        &self,
        job: Job,
        input: Option<&[f32]>,
        mask: Option<&[f32]>,
        rows: usize,
        cols: usize,
        output: &mut [f32],
    ) -> Result<()> {
        let elements = rows * cols;
        let batches = planner::plan_batches(rows as u64, cols as u64, self.caps())?;
        for batch in batches {
            let start = batch.start as usize * cols;
            let end = batch.end as usize * cols;
            let batch_rows = batch.end - batch.start;
            let outputs = match job {
                Job::Entropy(..) => batch.start as usize..batch.end as usize,
                _ => start..end,
            };
            // A mask of one row serves every batch whole.
            let batch_mask = mask.map(|mask| match mask.len() == elements {
                true => &mask[start..end],
                false => mask,
            });
            self.run_batch(
                job,
                input.map(|input| &input[start..end]),
                batch_mask,
                batch_rows,
                cols as u64,
                &mut output[outputs],
            )?;
        }
        Ok(())
    }

    fn run_batch(
        &self,
        job: Job,
        input: Option<&[f32]>,
        mask: Option<&[f32]>,
        rows: u64,
        cols: u64,
        output: &mut [f32],
    ) -> Result<()> {
        self.scoped("running a batch", || {
            let input = input.unwrap_or(output);
            let bytes = input.len() as u64 * F32_BYTES;
            let output_bytes = output.len() as u64 * F32_BYTES;
            let device = self.device();
            let input_buffer = self.pool.acquire(
                device,
                "input",
                bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            );
            let output_buffer = self.pool.acquire(
                device,
                "output",
                output_bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            );
            // write_buffer copies the data at once, so the input may be the output itself.
            self.queue()
                .write_buffer(&input_buffer, 0, bytemuck::cast_slice(input));
            let mask_buffer = mask.map(|mask| {
                let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
                let bytes = mask.len() as u64 * F32_BYTES;
                let buffer = self.pool.acquire(device, "mask", bytes, usage);
                self.queue()
                    .write_buffer(&buffer, 0, bytemuck::cast_slice(mask));
                buffer
            });

            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sigmax batch"),
            });
            let from = BufferRegion::whole(&input_buffer);
            let to = BufferRegion::whole(&output_buffer);
            match job {
                Job::Elementwise(op) => {
                    self.record_elementwise(&mut encoder, op, from, to, rows * cols)?
                }
                Job::Softmax(options) => match (&mask_buffer, mask) {
                    (Some(buffer), Some(mask)) => {
                        let region = MaskRegion {
                            values: BufferRegion::whole(buffer),
                            broadcast: mask.len() as u64 != rows * cols,
                        };
                        self.record_softmax_masked(
                            &mut encoder,
                            from,
                            region,
                            to,
                            rows,
                            cols,
                            &options,
                        )?
                    }
                    _ => self.record_softmax_with(&mut encoder, from, to, rows, cols, &options)?,
                },
                Job::Entropy(options, unit) => {
                    self.record_entropy(&mut encoder, from, to, rows, cols, &options, unit)?
                }
            }
            self.queue().submit([encoder.finish()]);
            self.read_f32(&output_buffer, 0, output)
        })
    }
}

/// The computation a slice call runs.
#[derive(Clone, Copy, Debug)]
enum Job {
    Elementwise(Op),
    Softmax(SoftmaxOptions),
    Entropy(SoftmaxOptions, EntropyUnit),
}
