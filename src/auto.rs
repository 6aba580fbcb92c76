//! `--backend auto`: the CPU backend or a GPU, chosen per call from a measured cost model.
//!
//! The first call of each kind (elementwise, or over rows) times both backends end to end,
//! upload and readback included, at `SMALL` and `LARGE` elements, and fits a line
//! t(n) = fixed + n * per_element to each. Every call then runs where its line is lower, and
//! logs its choice at level info. With data already on the device, record the kernels into your
//! own encoder instead: this choice counts the transfers that such code avoids.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::Result;
use crate::options::SoftmaxOptions;
use crate::planner::Op;
use crate::{Backend, cpu};

/// Elements of the small calibration run.
const SMALL: usize = 1 << 12;
/// Elements of the large calibration run.
const LARGE: usize = 1 << 20;
/// Row length of the calibration runs of row ops.
const CALIBRATION_COLS: usize = 256;

/// A cost line t(n) = fixed_ms + n * per_element_ms, fitted to two timings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Time of a call of no elements, in ms.
    pub fixed_ms: f64,
    /// Time per element, in ms.
    pub per_element_ms: f64,
}

impl CostModel {
    /// Fits the line through (small, small_ms) and (large, large_ms).
    pub fn fit(small: usize, small_ms: f64, large: usize, large_ms: f64) -> CostModel {
        let per_element_ms = ((large_ms - small_ms) / (large - small) as f64).max(0.0);
        CostModel {
            fixed_ms: (small_ms - per_element_ms * small as f64).max(0.0),
            per_element_ms,
        }
    }

    /// Returns the predicted time of a call of `elements`, in ms.
    pub fn predict(&self, elements: usize) -> f64 {
        self.fixed_ms + self.per_element_ms * elements as f64
    }

    /// Returns the element count from which this model is cheaper than `other` for every
    /// larger call, or `None` when it never is for large calls.
    pub fn cheaper_from(&self, other: &CostModel) -> Option<usize> {
        let slope = other.per_element_ms - self.per_element_ms;
        if slope < 0.0 || (slope == 0.0 && self.fixed_ms > other.fixed_ms) {
            return None;
        }
        if self.fixed_ms <= other.fixed_ms {
            return Some(0);
        }
        Some(((self.fixed_ms - other.fixed_ms) / slope).ceil() as usize)
    }
}

/// The kinds of call that share a cost model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Elementwise,
    Rows,
}

/// The CPU backend and, where an adapter exists, a GPU, with the cost models measured so far.
#[derive(Debug)]
pub struct Auto {
    cpu: Backend,
    gpu: Option<Backend>,
    models: Mutex<HashMap<Kind, (CostModel, CostModel)>>,
}

impl Auto {
    /// Creates the CPU backend and takes `gpu`, the engine of the best adapter if any.
    pub fn new(gpu: Option<crate::Engine>) -> Result<Auto> {
        Ok(Auto {
            cpu: Backend::Cpu(cpu::Cpu::new(None)?),
            gpu: gpu.map(Backend::Gpu),
            models: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the backend to run `op` on `elements` elements on, calibrating on first use.
    pub(crate) fn choose(&self, op: Op, elements: usize) -> Result<&Backend> {
        let Some(gpu) = &self.gpu else {
            return Ok(&self.cpu);
        };
        let kind = if op.is_elementwise() {
            Kind::Elementwise
        } else {
            Kind::Rows
        };
        let (cpu_model, gpu_model) = self.models(kind, gpu)?;
        let (cpu_ms, gpu_ms) = (cpu_model.predict(elements), gpu_model.predict(elements));
        let (chosen, other, chosen_ms, other_ms) = if cpu_ms <= gpu_ms {
            (&self.cpu, gpu, cpu_ms, gpu_ms)
        } else {
            (gpu, &self.cpu, gpu_ms, cpu_ms)
        };
        log::info!(
            "auto: {} of {elements} elements on {}: predicted {chosen_ms:.3} ms, against \
             {other_ms:.3} ms on {} (measured end to end, transfers included)",
            op.name(),
            chosen.name(),
            other.name()
        );
        Ok(chosen)
    }

    /// Returns the (CPU, GPU) cost models of `kind`, measuring them on first use.
    fn models(&self, kind: Kind, gpu: &Backend) -> Result<(CostModel, CostModel)> {
        let mut models = self
            .models
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(models) = models.get(&kind) {
            return Ok(*models);
        }
        let fit = |backend: &Backend| -> Result<CostModel> {
            let small_ms = time_call(backend, kind, SMALL)?;
            let large_ms = time_call(backend, kind, LARGE)?;
            Ok(CostModel::fit(SMALL, small_ms, LARGE, large_ms))
        };
        let measured = (fit(&self.cpu)?, fit(gpu)?);
        let ops = match kind {
            Kind::Elementwise => "elementwise ops",
            Kind::Rows => "softmax, log-softmax and entropy",
        };
        if let Some(from) = measured.1.cheaper_from(&measured.0) {
            log::info!("auto: {ops} run on {} from {from} elements", gpu.name());
        } else {
            log::info!("auto: {ops} run on the CPU at every size, as measured");
        }
        models.insert(kind, measured);
        Ok(measured)
    }

    /// Returns the CPU backend.
    pub fn cpu(&self) -> &Backend {
        &self.cpu
    }

    /// Returns the GPU backend, if an adapter was found.
    pub fn gpu(&self) -> Option<&Backend> {
        self.gpu.as_ref()
    }
}

/// Times one call of `kind` on `elements` elements, after a warm-up call, in ms.
fn time_call(backend: &Backend, kind: Kind, elements: usize) -> Result<f64> {
    let input = crate::bench::bench_input(elements);
    let mut output = vec![0.0; elements];
    let run = |output: &mut [f32]| match kind {
        Kind::Elementwise => backend.elementwise_into(Op::Sigmoid, &input, output),
        Kind::Rows => {
            let rows = elements / CALIBRATION_COLS;
            let options = SoftmaxOptions::default();
            backend.softmax_with_into(&input, rows, CALIBRATION_COLS, &options, output)
        }
    };
    run(&mut output)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        run(&mut output)?;
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_passes_through_both_points() {
        let model = CostModel::fit(1000, 2.0, 11_000, 12.0);
        assert!((model.predict(1000) - 2.0).abs() < 1e-12);
        assert!((model.predict(11_000) - 12.0).abs() < 1e-12);
    }

    #[test]
    fn crossover_of_fixed_cost_against_slope() {
        // A GPU with 1 ms of fixed cost and half the CPU's time per element wins from 2000.
        let cpu = CostModel {
            fixed_ms: 0.0,
            per_element_ms: 1e-3,
        };
        let gpu = CostModel {
            fixed_ms: 1.0,
            per_element_ms: 0.5e-3,
        };
        assert_eq!(gpu.cheaper_from(&cpu), Some(2000));
        assert_eq!(cpu.cheaper_from(&gpu), None);
        // A GPU slower per element never wins.
        let slow = CostModel {
            fixed_ms: 1.0,
            per_element_ms: 2e-3,
        };
        assert_eq!(slow.cheaper_from(&cpu), None);
    }
}
