//! sigmax evaluates sigmoid, log-sigmoid, SiLU, softmax, log-softmax and the entropy of
//! softmax with WGSL compute shaders through wgpu, on any Vulkan, Metal, DX12 or GL adapter or
//! on a software adapter, and checks results against an f64 CPU reference. Softmax takes a
//! temperature, a scale and an additive mask ([`SoftmaxOptions`]). Every op meets the bound
//! that [`verify::Bound::of`] documents, and treats infinities and NaN as PyTorch 2 does.
//!
//! Layers, from the bottom:
//! - [`planner`]: a pure function from (op, shape, dtype, device limits) to kernel, dispatch
//!   grids and chunks.
//! - [`Engine::record_sigmoid`] and [`Engine::record_softmax`]: launchers that record into a
//!   caller's `wgpu::CommandEncoder` on the caller's buffers, for pipelines that keep tensors
//!   on the device.
//! - [`Engine::sigmoid`], [`Engine::softmax`] and their `_into` forms: slice in, Vec out.
//! - [`Backend`]: the same calls on the GPU, on the fast CPU backend ([`cpu::Cpu`]), on
//!   whichever of the two is predicted faster per call, or on the f64 [`reference`](mod@reference).
//!
//! ```no_run
//! use sigmax::{Engine, EngineOptions};
//!
//! let engine = Engine::new(EngineOptions::default())?;
//! let logits = [1.0f32, 2.0, 3.0, 0.5, 0.5, 0.5];
//! let probabilities = engine.softmax(&logits, 2, 3)?;
//! assert!((probabilities[2] - 0.66524096).abs() < 1e-7);
//! # Ok::<(), sigmax::Error>(())
//! ```

pub mod auto;
pub mod bench;
pub mod cpu;
mod engine;
mod error;
pub mod io;
mod kernels;
mod options;
pub mod planner;
mod pool;
pub mod reference;
mod run;
pub mod shaders;
pub mod verify;

pub use engine::{
    AdapterChoice, AdapterSummary, Engine, EngineOptions, driver_description, list_adapters,
    list_adapters_async,
};
pub use error::{Error, Result};
pub use kernels::{BufferRegion, MaskRegion};
pub use options::{EntropyUnit, MaskedRows, SoftmaxOptions};
pub use planner::Op;
/// The wgpu version that sigmax is built on, for callers of the launchers.
pub use wgpu;

/// The device an op runs on: a GPU engine, the fast CPU backend, or the f64 reference.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a program holds a few backends at most, and boxing the engine would add a step for every caller"
)]
pub enum Backend {
    /// The f64 reference, [`reference`](mod@reference): the oracle, single-threaded and slow.
    Reference,
    /// The fast CPU backend, [`cpu::Cpu`]: vectorised and threaded, with the GPU's bounds.
    Cpu(cpu::Cpu),
    /// A wgpu device.
    Gpu(Engine),
    /// The CPU backend or a GPU, whichever a measured cost model predicts faster for each
    /// call; see [`auto`].
    Auto(Box<auto::Auto>),
}

impl Backend {
    /// Returns the fast CPU backend with one thread per core.
    pub fn cpu() -> Result<Backend> {
        Ok(Backend::Cpu(cpu::Cpu::new(None)?))
    }

    /// A short name for logs and test output: `reference`, `cpu`, or the adapter's name and
    /// backend.
    pub fn name(&self) -> String {
        match self {
            Backend::Reference => "reference".to_owned(),
            Backend::Auto(_) => "auto".to_owned(),
            Backend::Cpu(_) => "cpu".to_owned(),
            Backend::Gpu(engine) => {
                let info = engine.adapter_info();
                format!("{} ({:?})", info.name, info.backend)
            }
        }
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
        match self {
            Backend::Reference => reference::elementwise_into(op, input, output),
            Backend::Cpu(cpu) => cpu.elementwise_into(op, input, output),
            Backend::Auto(auto) => auto
                .choose(op, input.len())?
                .elementwise_into(op, input, output),
            Backend::Gpu(engine) => engine.elementwise_into(op, input, output),
        }
    }

    /// Returns the softmax of each of the `rows` rows of `cols` elements of `input`.
    pub fn softmax(&self, input: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.softmax_with(input, rows, cols, &SoftmaxOptions::default())
    }

    /// Writes the softmax of each row of `input` into `output`, which has the input's length.
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
        match self {
            Backend::Reference => reference::softmax_with_into(input, rows, cols, options, output),
            Backend::Cpu(cpu) => cpu.softmax_with_into(input, rows, cols, options, output),
            Backend::Auto(auto) => auto
                .choose(options.op(), input.len())?
                .softmax_with_into(input, rows, cols, options, output),
            Backend::Gpu(engine) => engine.softmax_with_into(input, rows, cols, options, output),
        }
    }

    /// Replaces each element of `data` with the elementwise `op` of it.
    pub fn elementwise_in_place(&self, op: Op, data: &mut [f32]) -> Result<()> {
        match self {
            Backend::Reference => {
                let input = data.to_vec();
                reference::elementwise_into(op, &input, data)
            }
            Backend::Cpu(cpu) => cpu.elementwise_in_place(op, data),
            Backend::Auto(auto) => auto.choose(op, data.len())?.elementwise_in_place(op, data),
            Backend::Gpu(engine) => engine.elementwise_in_place(op, data),
        }
    }

    /// Replaces each row of `data` with its softmax, or log-softmax, with `options`.
    pub fn softmax_in_place(
        &self,
        data: &mut [f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
    ) -> Result<()> {
        match self {
            Backend::Reference => {
                let input = data.to_vec();
                reference::softmax_with_into(&input, rows, cols, options, data)
            }
            Backend::Cpu(cpu) => cpu.softmax_in_place(data, rows, cols, options),
            Backend::Auto(auto) => auto
                .choose(options.op(), data.len())?
                .softmax_in_place(data, rows, cols, options),
            Backend::Gpu(engine) => engine.softmax_in_place(data, rows, cols, options),
        }
    }

    /// Writes the masked softmax of [`Backend::softmax_masked`] into `output`, which has the
    /// input's length.
    pub fn softmax_masked_into(
        &self,
        input: &[f32],
        mask: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
        output: &mut [f32],
    ) -> Result<()> {
        match self {
            Backend::Reference => {
                reference::softmax_masked_into(input, mask, rows, cols, options, output)
            }
            Backend::Cpu(cpu) => cpu.softmax_masked_into(input, mask, rows, cols, options, output),
            Backend::Auto(auto) => auto
                .choose(options.op(), input.len())?
                .softmax_masked_into(input, mask, rows, cols, options, output),
            Backend::Gpu(engine) => {
                engine.softmax_masked_into(input, mask, rows, cols, options, output)
            }
        }
    }

    /// Writes the entropy of each row's softmax distribution into `output`, one per row.
    pub fn entropy_into(
        &self,
        input: &[f32],
        rows: usize,
        cols: usize,
        options: &SoftmaxOptions,
        unit: EntropyUnit,
        output: &mut [f32],
    ) -> Result<()> {
        match self {
            Backend::Reference => reference::entropy_into(input, rows, cols, options, unit, output),
            Backend::Cpu(cpu) => cpu.entropy_into(input, rows, cols, options, unit, output),
            Backend::Auto(auto) => auto
                .choose(Op::Entropy, input.len())?
                .entropy_into(input, rows, cols, options, unit, output),
            Backend::Gpu(engine) => engine.entropy_into(input, rows, cols, options, unit, output),
        }
    }

    /// Returns the softmax, or log-softmax, of each row of `input` with `options` and an
    /// additive `mask` of the input's length or of one row: z = (scale * x + mask) /
    /// temperature. A mask entry of -inf excludes its logit.
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
}

/// Compiles the examples of README.md as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
