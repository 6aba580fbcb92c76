//! The fast CPU backend: every op of the library with the GPU path's semantics and error
//! bounds, vectorised for the CPU it runs on and spread over a thread pool.
//!
//! - The kernels are plain loops over lanes of 16 elements that the compiler vectorises. Each
//!   entry point is compiled for AVX-512, AVX2 and NEON and for any CPU, and the best version
//!   for the running CPU is picked at run time (the `multiversion` crate).
//! - Rows that fit in cache run three sweeps (max, exp and sum, normalise), reading memory
//!   once; the next row is prefetched while a row's exps run. Rows longer than `ROW_BLOCK`
//!   run as blocks, in parallel: each block's max and sum, then a merge, then a normalising
//!   pass that evaluates exp again. That is two reads and one write per element, like the
//!   GPU's split path.
//! - Rows of at most `VERTICAL_MAX_COLS` run 16 at a time, one row per lane, after a
//!   transpose (permutes or gathers on AVX-512).
//! - The softmax exp sets terms below 2^-124.8 to 0, inside the bound's absolute floor, which
//!   spares it the subnormal steps. x - max is formed exactly, by Fast2Sum where the row's
//!   signs allow it and by TwoSum elsewhere. Each lane's compensated sum starts at 1, so that
//!   Fast2Sum applies to it too. Quotients take a reciprocal and one correction.
//! - Work is split into tasks of whole rows, or of the blocks of a long row, of at least
//!   `TASK_ELEMENTS` elements each, on a rayon pool whose size is settable.
//!
//! With these, the kernels are bound by the vector units rather than by memory on the
//! machine they were tuned on (2 cores, AVX-512): they run twice as fast on two threads as on
//! one.
//!
//! The f64 reference in [`crate::reference`] stays separate: it is the oracle these kernels
//! are tested against.

// TODO: only the AVX-512 build of these kernels has run (tests and benches); the AVX2, NEON
// and generic builds compile but were not run on their CPUs.
mod math;

use std::cell::RefCell;

use multiversion::multiversion;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::options::{EntropyUnit, MaskedRows, SoftmaxOptions};
use crate::planner::Op;
use crate::reference::{check_entropy_shape, check_len, check_mask_len, check_row_call};
use math::Factor;

// `Difference` as const generic arguments.
const HALVED: u8 = 0;
const TWO_SUM: u8 = 1;
const X_LARGER: u8 = 2;
const MAX_LARGER: u8 = 3;

/// Evaluates `$body` with the const `$name` set to the const generic argument of the
/// `Difference` value `$difference`, so that each way runs its own compiled copy.
macro_rules! with_difference {
    ($difference:expr, $name:ident => $body:expr) => {
        match $difference {
            Difference::Halved => {
                const $name: u8 = HALVED;
                $body
            }
            Difference::TwoSum => {
                const $name: u8 = TWO_SUM;
                $body
            }
            Difference::XLarger => {
                const $name: u8 = X_LARGER;
                $body
            }
            Difference::MaxLarger => {
                const $name: u8 = MAX_LARGER;
                $body
            }
        }
    };
}

/// Elements a kernel processes per step, one per vector lane on AVX-512.
const LANES: usize = 16;

/// Maximum row length processed whole in cache; longer rows run as blocks of this many
/// elements: 1 MiB of f32, the L2 cache of one core on the machine it was measured on.
/// Measured with `sigmax bench --backend cpu` (2 cores, AVX-512, 1 MiB L2), kernel ms with
/// 262,144 against 16,384: [256, 151936] 26.3 against 40.8, [512, 32768] 11.3 against
/// 17.5, [1, 16777216] 23.3 against 23.0, [64, 262144] 17.7 against 17.7.
// TODO: machines with a smaller L2 may want a smaller block; only this one was measured.
pub const ROW_BLOCK: usize = 262_144;

/// Minimum elements per task, so that scheduling stays small next to the work. Measured with
/// `sigmax bench --backend cpu` (2 cores), kernel ms with 2^13, 2^15 and 2^17: softmax
/// [65536, 2] 0.33, 0.32 and 0.62; [1048576, 16] 26.2, 23.9 and 26.3; [4096, 4096] 11.6,
/// 11.3 and 11.2.
pub const TASK_ELEMENTS: usize = 1 << 15;

/// The fast CPU backend: a thread pool and the vectorised kernels.
#[derive(Debug)]
pub struct Cpu {
    pool: rayon::ThreadPool,
}

impl Cpu {
    /// Creates the backend with `threads` worker threads, or one per core for `None`.
    pub fn new(threads: Option<usize>) -> Result<Cpu> {
        if threads == Some(0) {
            return Err(Error::InvalidArgument(
                "0 threads requested; give at least 1, or none for one per core".to_owned(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .thread_name(|index| format!("sigmax-cpu-{index}"))
            .build()
            .map_err(|error| Error::InvalidArgument(format!("cannot start threads: {error}")))?;
        Ok(Cpu { pool })
    }

    /// Returns the number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Copies `input` into `output`, of the same length, on every thread: the memcpy that
    /// `sigmax bench` sets beside each op, since one thread alone cannot reach the memory's
    /// bandwidth.
    pub fn copy_into(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_len("output", output.len(), input.len())?;
        let chunk = input.len().div_ceil(self.threads()).max(TASK_ELEMENTS);
        self.pool.install(|| {
            output
                .par_chunks_mut(chunk)
                .zip(input.par_chunks(chunk))
                .for_each(|(y, x)| y.copy_from_slice(x));
        });
        Ok(())
    }

    /// Writes the elementwise `op` (sigmoid, log-sigmoid or SiLU) of `input` into `output`,
    /// which has the input's length.
    pub fn elementwise_into(&self, op: Op, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_len("output", output.len(), input.len())?;
        check_elementwise(op)?;
        self.pool.install(|| {
            output
                .par_chunks_mut(TASK_ELEMENTS)
                .zip(input.par_chunks(TASK_ELEMENTS))
                .for_each(|(y, x)| map_slice(op, x, y));
        });
        Ok(())
    }

    /// Replaces each element of `data` with the elementwise `op` of it.
    pub fn elementwise_in_place(&self, op: Op, data: &mut [f32]) -> Result<()> {
        check_elementwise(op)?;
        self.pool.install(|| {
            data.par_chunks_mut(TASK_ELEMENTS)
                .for_each(|y| map_in_place(op, y));
        });
        Ok(())
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
        let params = RowParams::new(options, None);
        self.run_rows(Rows::Separate(input, output), None, rows, cols, &params);
        Ok(())
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
        let params = RowParams::new(options, None);
        self.run_rows(Rows::InPlace(data), None, rows, cols, &params);
        Ok(())
    }

    /// As [`Cpu::softmax_with_into`], with an additive mask of the input's length or of one
    /// row: z = (scale * x + mask) / temperature.
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
        let params = RowParams::new(options, None);
        self.run_rows(
            Rows::Separate(input, output),
            Some(mask),
            rows,
            cols,
            &params,
        );
        Ok(())
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
        check_row_call(options, rows, cols, input.len(), output.len(), 1)?;
        check_entropy_shape(rows, cols)?;
        let params = RowParams::new(options, Some(unit));
        self.run_rows(Rows::Entropy(input, output), None, rows, cols, &params);
        Ok(())
    }

    /// Splits the rows into tasks and runs them on the pool.
    fn run_rows(
        &self,
        rows_data: Rows<'_>,
        mask: Option<&[f32]>,
        rows: usize,
        cols: usize,
        params: &RowParams,
    ) {
        if rows == 0 || cols == 0 {
            return;
        }
        // A mask of one row serves every row; a full mask is split like the input.
        let mask_for = |first_row: usize, count: usize| -> Option<&[f32]> {
            mask.map(|mask| match mask.len() == cols && rows * cols != cols {
                true => mask,
                false => &mask[first_row * cols..(first_row + count) * cols],
            })
        };
        if cols > ROW_BLOCK {
            // Long rows: rows in parallel, and the blocks of each row in parallel too, so that
            // one row keeps every thread busy and many rows need no barrier between them.
            self.pool.install(|| match rows_data {
                Rows::Separate(input, output) => {
                    output
                        .par_chunks_mut(cols)
                        .zip(input.par_chunks(cols))
                        .enumerate()
                        .for_each(|(row, (y, x))| {
                            long_row(x, mask_for(row, 1), Out::Row(y), params);
                        });
                }
                Rows::InPlace(data) => {
                    for row in data.chunks_exact_mut(cols).enumerate() {
                        let (index, y) = row;
                        long_row_in_place(y, mask_for(index, 1), params);
                    }
                }
                Rows::Entropy(input, output) => {
                    for (row, h) in output.iter_mut().enumerate() {
                        let x = &input[row * cols..(row + 1) * cols];
                        long_row(x, mask_for(row, 1), Out::Entropy(h), params);
                    }
                }
            });
            return;
        }
        let rows_per_task = TASK_ELEMENTS.div_ceil(cols).max(1);
        let task = |first_row: usize, count: usize| (first_row, count, mask_for(first_row, count));
        self.pool.install(|| match rows_data {
            Rows::Separate(input, output) => output
                .par_chunks_mut(rows_per_task * cols)
                .zip(input.par_chunks(rows_per_task * cols))
                .enumerate()
                .for_each(|(index, (y, x))| {
                    let (_, count, mask) = task(index * rows_per_task, y.len() / cols);
                    rows_in_cache(x, mask, RowsOut::Rows(y), count, cols, params);
                }),
            Rows::InPlace(data) => data
                .par_chunks_mut(rows_per_task * cols)
                .enumerate()
                .for_each(|(index, y)| {
                    let (_, count, mask) = task(index * rows_per_task, y.len() / cols);
                    with_scratch(y.len(), |copy| {
                        copy.copy_from_slice(y);
                        rows_in_cache(copy, mask, RowsOut::Rows(y), count, cols, params);
                    });
                }),
            Rows::Entropy(input, output) => output
                .par_chunks_mut(rows_per_task)
                .zip(input.par_chunks(rows_per_task * cols))
                .enumerate()
                .for_each(|(index, (h, x))| {
                    let (_, count, mask) = task(index * rows_per_task, h.len());
                    rows_in_cache(x, mask, RowsOut::Entropy(h), count, cols, params);
                }),
        });
    }
}

/// Checks that `op` is elementwise.
fn check_elementwise(op: Op) -> Result<()> {
    if op.is_elementwise() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{} is not elementwise; call softmax_with_into or entropy_into",
        op.name()
    )))
}

#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn map_slice(op: Op, x: &[f32], y: &mut [f32]) {
    match op {
        Op::LogSigmoid => map_with(math::log_sigmoid, x, y),
        Op::Silu => map_with(math::silu, x, y),
        _ => map_sigmoid(x, y),
    }
}

/// Sigmoid of each element: chunks whose elements are all at least
/// `math::SIGMOID_FLUSHED_MIN` (NaN is not) take the cheaper `math::sigmoid_flushed`.
#[inline(always)]
fn map_sigmoid(x: &[f32], y: &mut [f32]) {
    let mut y_chunks = y.chunks_exact_mut(LANES);
    let mut x_chunks = x.chunks_exact(LANES);
    for (out, input) in (&mut y_chunks).zip(&mut x_chunks) {
        let mut far_left = false;
        for &value in input {
            far_left |= value < math::SIGMOID_FLUSHED_MIN || value.is_nan();
        }
        if far_left {
            // Each element takes the path it would take in any other chunk, so that its
            // result does not depend on its neighbours.
            for lane in 0..LANES {
                out[lane] = sigmoid_by_element(input[lane]);
            }
        } else {
            for lane in 0..LANES {
                out[lane] = math::sigmoid_flushed(input[lane]);
            }
        }
    }
    for (out, &value) in y_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_chunks.remainder())
    {
        *out = sigmoid_by_element(value);
    }
}

/// Sigmoid of one element by the path `map_sigmoid` takes for it.
#[inline(always)]
fn sigmoid_by_element(value: f32) -> f32 {
    if value >= math::SIGMOID_FLUSHED_MIN {
        math::sigmoid_flushed(value)
    } else {
        math::sigmoid(value)
    }
}

/// As `map_slice`, over a block copied first to scratch memory, so that the output may
/// overwrite the input.
fn map_in_place(op: Op, y: &mut [f32]) {
    with_scratch(y.len(), |copy| {
        copy.copy_from_slice(y);
        map_slice(op, copy, y);
    });
}

/// Applies `function` to each element, in lanes the compiler vectorises once `function` is
/// inlined.
#[inline(always)]
fn map_with(function: impl Fn(f32) -> f32, x: &[f32], y: &mut [f32]) {
    let mut y_chunks = y.chunks_exact_mut(LANES);
    let mut x_chunks = x.chunks_exact(LANES);
    for (out, input) in (&mut y_chunks).zip(&mut x_chunks) {
        for lane in 0..LANES {
            out[lane] = function(input[lane]);
        }
    }
    for (out, &value) in y_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_chunks.remainder())
    {
        *out = function(value);
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_LO: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a thread-local scratch slice of `len` f32.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..len])
    })
}

/// Input and output of a launch over rows.
enum Rows<'a> {
    Separate(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
    Entropy(&'a [f32], &'a mut [f32]),
}

/// The options of a row launch, prepared for the kernels.
#[derive(Clone, Copy)]
struct RowParams {
    /// The factor c = scale / temperature, if it differs from 1.
    factor: Option<Factor>,
    /// The factor 1 / temperature of a mask, if it differs from 1.
    mask_factor: Option<Factor>,
    log: bool,
    masked_rows: MaskedRows,
    /// The factor from nats to the entropy's unit, for the entropy.
    entropy: Option<f32>,
}

impl RowParams {
    fn new(options: &SoftmaxOptions, entropy: Option<EntropyUnit>) -> RowParams {
        let parts = |[c1, c2, lo]: [f32; 3]| Factor { c1, c2, lo };
        RowParams {
            factor: options.is_scaled().then(|| parts(options.factor_parts())),
            mask_factor: (options.temperature != 1.0).then(|| parts(options.mask_factor_parts())),
            log: options.log,
            masked_rows: options.masked_rows,
            entropy: entropy.map(|unit| unit.per_nat() as f32),
        }
    }

    /// Returns the output of every element of a row without a finite max key.
    fn fill(&self, key: u32) -> f32 {
        let masked = key <= math::KEY_NEG_INF && self.masked_rows == MaskedRows::Zero;
        match (masked, self.log && self.entropy.is_none()) {
            (false, _) => f32::NAN,
            (true, false) => 0.0,
            (true, true) => f32::NEG_INFINITY,
        }
    }
}

/// The destination of an in-cache task: the rows themselves, or one entropy per row.
enum RowsOut<'a> {
    Rows(&'a mut [f32]),
    Entropy(&'a mut [f32]),
}

/// The destination of one long row.
enum Out<'a> {
    Row(&'a mut [f32]),
    Entropy(&'a mut f32),
}

/// Computes the masked logits of `x` as unevaluated sums z = hi + lo. The non-finite cases
/// are coded in hi: -inf for an excluded logit, NaN for one that makes its row NaN.
fn masked_logits(
    x: &[f32],
    mask: &[f32],
    cols: usize,
    params: &RowParams,
    hi: &mut [f32],
    lo: &mut [f32],
) {
    for (index, ((&value, h), l)) in x.iter().zip(hi.iter_mut()).zip(lo.iter_mut()).enumerate() {
        let addend = mask[if mask.len() == x.len() {
            index
        } else {
            index % cols
        }];
        let state = state_of(value).max(state_of(addend));
        let (p, q) = if state == 0 {
            let p = params
                .factor
                .map_or((value, 0.0), |c| math::scaled((value, 0.0), c));
            let q = params
                .mask_factor
                .map_or((addend, 0.0), |b| math::scaled((addend, 0.0), b));
            (p, q)
        } else {
            ((0.0, 0.0), (0.0, 0.0))
        };
        let (sum, error) = math::two_difference(p.0, -q.0);
        *h = match state {
            0 => sum,
            1 => f32::NEG_INFINITY,
            _ => f32::NAN,
        };
        *l = (error + p.1) + q.1;
    }
}

/// 0 for a finite value, 1 for -inf, 2 for +inf and NaN.
fn state_of(x: f32) -> u8 {
    if x.is_finite() {
        0
    } else if x == f32::NEG_INFINITY {
        1
    } else {
        2
    }
}

/// Runs `count` rows of `cols` elements that fit in cache.
fn rows_in_cache(
    x: &[f32],
    mask: Option<&[f32]>,
    out: RowsOut<'_>,
    count: usize,
    cols: usize,
    params: &RowParams,
) {
    match mask {
        None => rows_kernel(x, None, out, count, cols, params),
        Some(mask) => SCRATCH_LO.with(|lo| {
            let mut lo = lo.borrow_mut();
            if lo.len() < x.len() {
                lo.resize(x.len(), 0.0);
            }
            with_scratch(x.len(), |hi| {
                masked_logits(x, mask, cols, params, hi, &mut lo[..x.len()]);
                // The factor is in the logits already.
                let unscaled = RowParams {
                    factor: None,
                    ..*params
                };
                rows_kernel(hi, Some(&lo[..x.len()]), out, count, cols, &unscaled);
            });
        }),
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn rows_kernel<'a>(
    x: &[f32],
    lo: Option<&[f32]>,
    out: RowsOut<'a>,
    count: usize,
    cols: usize,
    params: &RowParams,
) {
    match out {
        RowsOut::Rows(y) if lo.is_none() && cols == LANES => {
            vertical_rows::<LANES>(x, y, count, cols, params);
        }
        RowsOut::Rows(y) if lo.is_none() && cols == 2 => {
            vertical_rows::<2>(x, y, count, cols, params);
        }
        RowsOut::Rows(y) if lo.is_none() && cols <= VERTICAL_MAX_COLS => {
            vertical_rows::<0>(x, y, count, cols, params);
        }
        RowsOut::Rows(y) => {
            for row in 0..count {
                let range = row * cols..(row + 1) * cols;
                let lo_row = lo.map(|lo| &lo[range.clone()]);
                let next = match cols <= PREFETCH_MAX_COLS {
                    true => x.get(range.end..range.end + cols).unwrap_or(&[]),
                    false => &[],
                };
                let y = Some(&mut y[range.clone()]);
                let _ = one_row(&x[range], lo_row, y, params, next);
            }
        }
        RowsOut::Entropy(h) => {
            for (row, value) in h.iter_mut().enumerate().take(count) {
                let range = row * cols..(row + 1) * cols;
                let lo_row = lo.map(|lo| &lo[range.clone()]);
                *value = one_row(&x[range], lo_row, None, params, &[]);
            }
        }
    }
}

/// Runs one row in cache. Writes the row to `y`, or returns its entropy when `y` is `None`.
///
/// The elements of `next`, the row that comes next, are prefetched into the cache while this
/// row's exp runs, so that the next row's max pass reads the cache instead of memory.
#[inline(always)]
fn one_row(
    x: &[f32],
    lo: Option<&[f32]>,
    mut y: Option<&mut [f32]>,
    params: &RowParams,
    next: &[f32],
) -> f32 {
    let (key, magnitude) = scan(x);
    if !math::key_is_finite(key) {
        let fill = params.fill(key);
        if let Some(y) = y {
            y.fill(fill);
        }
        return fill;
    }
    let m = math::key_value(key);
    let difference = Difference::of(m, magnitude);
    if let (None, None, Some(y)) = (lo, params.entropy, y.as_deref_mut()) {
        // The common case: no mask and no entropy.
        if params.log {
            let sum = plain_exp_sum::<false>(x, m, difference, params.factor, y, next);
            let log_sum = math::log_accurate(sum);
            with_difference!(difference, D => log_plain::<D>(x, y, m, log_sum, params.factor));
        } else {
            let sum = plain_exp_sum::<true>(x, m, difference, params.factor, y, next);
            divide(y, sum);
        }
        return 0.0;
    }
    let store = !params.log && y.is_some();
    let mut y = y;
    let stats = exp_sum(
        x,
        lo,
        m,
        params,
        if store { y.as_deref_mut() } else { None },
    );
    match y {
        None => entropy_of(stats.0, stats.1, params),
        Some(y) => {
            if params.log {
                log_pass(x, lo, m, math::log_accurate(stats.0), params, y);
            } else {
                divide(y, stats.0);
            }
            0.0
        }
    }
}

/// Bits of 2^126: when every |x| is below it, no difference x - m can overflow f32.
const NO_OVERFLOW_BITS: u32 = 0x7e80_0000;

/// exp(z - m) of one logit without a remainder, in a form without branches: 0 for -inf,
/// whose difference is -inf. DIFFERENCE selects how x - m is formed (`Difference`).
#[inline(always)]
fn plain_term<const DIFFERENCE: u8>(x: f32, m: f32, factor: Option<Factor>) -> f32 {
    let d = match DIFFERENCE {
        HALVED => plain_shift(x, m, factor),
        _ => exact_difference::<DIFFERENCE>(x, m),
    };
    let (hi, lo) = match (DIFFERENCE, factor) {
        (HALVED, _) | (_, None) => d,
        (_, Some(c)) => math::scaled(d, c),
    };
    math::exp_flushed(hi, lo)
}

/// x - m as (hi, lo) for the ways that do not halve: Fast2Sum with the larger magnitude
/// first where the row allows it (`Difference::of`), else TwoSum.
#[inline(always)]
fn exact_difference<const DIFFERENCE: u8>(x: f32, m: f32) -> (f32, f32) {
    match DIFFERENCE {
        X_LARGER => math::fast_two_sum(x, -m),
        MAX_LARGER => math::fast_two_sum(-m, x),
        _ => math::two_difference(x, m),
    }
}

/// Sums exp(z - m) over `x` with one compensated sum per lane, storing each exp in `y` when
/// STORE is set. The lanes are independent, so the compiler vectorises the loop.
/// `difference` selects how x - m is formed, from the row's scan.
#[inline(always)]
fn plain_exp_sum<const STORE: bool>(
    x: &[f32],
    m: f32,
    difference: Difference,
    factor: Option<Factor>,
    y: &mut [f32],
    next: &[f32],
) -> f32 {
    with_difference!(difference, D => plain_exp_sum_with::<STORE, D>(x, m, factor, y, next))
}

#[inline(always)]
fn plain_exp_sum_with<const STORE: bool, const DIFFERENCE: u8>(
    x: &[f32],
    m: f32,
    factor: Option<Factor>,
    y: &mut [f32],
    next: &[f32],
) -> f32 {
    // Each lane's sum starts at 1, so that it is never below the next term (every term is
    // at most 1), and Fast2Sum then finds each addition's error exactly in three steps
    // instead of Neumaier's six. The merge takes the offsets away.
    // The lanes are indexed by constants only, so that the sums stay in registers: the last
    // elements run as a whole chunk padded with -inf, whose terms are 0.
    let mut sums = ([1.0f32; LANES], [0.0f32; LANES]);
    let full = x.len() / LANES * LANES;
    for (index, chunk) in x[..full].chunks_exact(LANES).enumerate() {
        // One cache line of the next row per chunk of this one.
        if let Some(line) = next.get(index * LANES) {
            prefetch(line);
        }
        let chunk = chunk.try_into().expect("a chunk of LANES");
        let e = exp_sum_step::<DIFFERENCE>(chunk, m, factor, &mut sums);
        if STORE {
            y[index * LANES..(index + 1) * LANES].copy_from_slice(&e);
        }
    }
    let rest = x.len() - full;
    if rest > 0 {
        let chunk = padded(&x[full..], f32::NEG_INFINITY);
        let e = exp_sum_step::<DIFFERENCE>(&chunk, m, factor, &mut sums);
        if STORE {
            y[full..].copy_from_slice(&e[..rest]);
        }
    }
    // The lanes merge in f64, as two trees of additions rather than one chain of
    // compensated sums, whose latency showed on rows of 1,000. The 16 sums are f32 between 1
    // and 2^24, so their f64 sum is exact; the errors are small next to them.
    let (sum, error) = sums;
    let total = tree_sum(sum.map(f64::from)) - LANES as f64 + tree_sum(error.map(f64::from));
    total as f32
}

/// Sums the lanes pairwise, so that the additions of each level are independent.
#[inline(always)]
fn tree_sum(mut values: [f64; LANES]) -> f64 {
    let mut width = LANES / 2;
    while width > 0 {
        for lane in 0..width {
            values[lane] += values[lane + width];
        }
        width /= 2;
    }
    values[0]
}

/// Most columns of a row whose next row is prefetched while it runs: the row, its output and
/// the next row, 192 KiB in all, stay well inside a 1 MiB L2 cache.
const PREFETCH_MAX_COLS: usize = 16_384;

/// Asks the CPU to bring the cache line of `value` into the cache, where the architecture has
/// an instruction for it.
#[inline(always)]
fn prefetch(value: &f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch reads nothing and cannot fault; SSE is part of every x86-64 CPU.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Returns the terms exp(z - m) of one chunk, and adds them to the lanes' sums.
#[inline(always)]
fn exp_sum_step<const DIFFERENCE: u8>(
    chunk: &[f32; LANES],
    m: f32,
    factor: Option<Factor>,
    (sum, error): &mut ([f32; LANES], [f32; LANES]),
) -> [f32; LANES] {
    let mut e = [0.0f32; LANES];
    for lane in 0..LANES {
        e[lane] = plain_term::<DIFFERENCE>(chunk[lane], m, factor);
        add_fast_two_sum(&mut sum[lane], &mut error[lane], e[lane]);
    }
    e
}

/// Returns the last elements of a row, fewer than LANES, as a chunk padded with `fill`.
#[inline(always)]
fn padded(rest: &[f32], fill: f32) -> [f32; LANES] {
    let mut chunk = [fill; LANES];
    chunk[..rest.len()].copy_from_slice(rest);
    chunk
}

/// Adds `value` to the compensated sum (sum, error) when sum >= value >= 0 (Fast2Sum).
#[inline(always)]
fn add_fast_two_sum(sum: &mut f32, error: &mut f32, value: f32) {
    let total = *sum + value;
    *error += (*sum - total) + value;
    *sum = total;
}

/// Adds per-lane compensated sums (totals and their errors) into one, compensated too.
#[inline(always)]
fn merge_lanes(totals: &[f32; LANES], errors: &[f32; LANES]) -> f32 {
    let mut merged = (0.0, 0.0);
    for lane in 0..LANES {
        merged = math::add_compensated(merged, totals[lane]);
        merged = math::add_compensated(merged, errors[lane]);
    }
    merged.0 + merged.1
}

/// Maximum row length that `vertical_rows` takes. Measured with `sigmax bench --backend cpu`
/// on a 2-core AVX-512 machine, in kernel ms with 16 rows per block against one row at a
/// time: [699050, 24] 17 against 37; [524288, 32] 12.7-13.2 against 15.3-15.9;
/// [419430, 40] 18.7 against 23.6; [349525, 48] 12.6 against 11.5; [262144, 64] 13.0-13.9
/// against 9.5-9.7.
const VERTICAL_MAX_COLS: usize = 40;
// The copies compiled for 2 and 16 columns store their blocks in VERTICAL_MAX_COLS columns.
const _: () = assert!(VERTICAL_MAX_COLS >= LANES);

/// Runs softmax or log-softmax over short rows without a mask or entropy, 16 rows at a time
/// with one row per lane. Each block is transposed into scratch memory, so that the max, the
/// exp and the compensated sums run down the columns in vector registers, and transposed
/// back on the way out. A block with a value that is not finite, and the last rows, run row
/// by row.
///
/// COLS, when not 0, is `cols` known at compile time: with 16 columns a whole block fits in
/// the vector registers, which took [1048576, 16] from 7.6 to 6.4 ms.
#[inline(always)]
fn vertical_rows<const COLS: usize>(
    x: &[f32],
    y: &mut [f32],
    count: usize,
    cols: usize,
    params: &RowParams,
) {
    let cols = if COLS > 0 { COLS } else { cols };
    let blocks = count / LANES;
    let transposer = Transposer::new(cols);
    let mut storage = [[0.0f32; LANES]; VERTICAL_MAX_COLS];
    let columns = &mut storage[..cols];
    let block_len = LANES * cols;
    for block in 0..blocks {
        let range = block * block_len..(block + 1) * block_len;
        transposer.to_columns(&x[range.clone()], columns);
        let mut state = ([0.0f32; LANES], [0u32; LANES]);
        state.0 = columns[0];
        for column in columns.iter() {
            scan_step(column, &mut state);
        }
        let (m, magnitudes) = state;
        if magnitudes
            .iter()
            .any(|&bits| bits >= f32::INFINITY.to_bits())
        {
            for row in block * LANES..(block + 1) * LANES {
                let range = row * cols..(row + 1) * cols;
                let _ = one_row(&x[range.clone()], None, Some(&mut y[range]), params, &[]);
            }
            continue;
        }
        // TwoSum for every lane: choosing Fast2Sum per block (as `one_row` does per row)
        // measured slower, since the lanes of a block seldom agree.
        let fits = magnitudes.iter().all(|&bits| bits < NO_OVERFLOW_BITS);
        match (fits, params.log) {
            (true, false) => vertical_block::<TWO_SUM, false>(columns, &m, params),
            (true, true) => vertical_block::<TWO_SUM, true>(columns, &m, params),
            (false, false) => vertical_block::<HALVED, false>(columns, &m, params),
            (false, true) => vertical_block::<HALVED, true>(columns, &m, params),
        }
        transposer.to_rows(columns, &mut y[range]);
    }
    for row in blocks * LANES..count {
        let range = row * cols..(row + 1) * cols;
        let _ = one_row(&x[range.clone()], None, Some(&mut y[range]), params, &[]);
    }
}

/// Replaces the columns of one block of finite rows, whose maxima are `m`, with their
/// softmax, or log-softmax for LOG.
///
/// The short loops over the lanes run to a length the compiler cannot see (it is LANES), so
/// that they stay loops over the lanes. Unrolled, they let the compiler vectorise the loop
/// over the columns instead, with a gather and a scatter per column.
#[inline(always)]
fn vertical_block<const DIFFERENCE: u8, const LOG: bool>(
    columns: &mut [[f32; LANES]],
    m: &[f32; LANES],
    params: &RowParams,
) {
    let lanes = std::hint::black_box(LANES);
    let mut sum = [1.0f32; LANES];
    let mut error = [0.0f32; LANES];
    for column in columns.iter_mut() {
        for lane in 0..LANES {
            let e = plain_term::<DIFFERENCE>(column[lane], m[lane], params.factor);
            add_fast_two_sum(&mut sum[lane], &mut error[lane], e);
            if !LOG {
                column[lane] = e;
            }
        }
    }
    // Each sum started at 1, and removing it is exact: a sum of at most VERTICAL_MAX_COLS
    // terms of at most 1 is far below 2^24.
    let mut d = [0.0f32; LANES];
    for lane in 0..LANES {
        d[lane] = (sum[lane] - 1.0) + error[lane];
    }
    if LOG {
        let mut log_d = [0.0f32; LANES];
        for lane in 0..LANES {
            log_d[lane] = math::log_accurate(d[lane]);
        }
        for column in columns.iter_mut() {
            let values = column[..lanes].iter_mut().zip(&m[..lanes]);
            let values = values.zip(&log_d[..lanes]);
            for ((value, &m), &log_d) in values {
                let (hi, lo) = match (DIFFERENCE, params.factor) {
                    (HALVED, factor) => plain_shift(*value, m, factor),
                    (_, None) => exact_difference::<DIFFERENCE>(*value, m),
                    (_, Some(c)) => math::scaled(exact_difference::<DIFFERENCE>(*value, m), c),
                };
                *value = (hi - log_d) + lo;
            }
        }
    } else {
        let mut reciprocal = [0.0f32; LANES];
        for lane in 0..LANES {
            reciprocal[lane] = 1.0 / d[lane];
        }
        for column in columns.iter_mut() {
            let values = column[..lanes].iter_mut().zip(&d[..lanes]);
            for ((value, &d), &reciprocal) in values.zip(&reciprocal[..lanes]) {
                *value = quotient(*value, d, reciprocal);
            }
        }
    }
}

/// Moves blocks of LANES rows of `cols` elements between row-major order and one array per
/// column. On CPUs with AVX-512 it permutes vectors for rows of 2 or of a multiple of 16, and
/// gathers 16 elements per instruction for other widths. Elsewhere it copies element by
/// element.
struct Transposer {
    cols: usize,
    /// For each group of LANES consecutive row-major elements, the offset of each in the
    /// columns: element p is in column p % cols at lane p / cols.
    #[cfg(target_arch = "x86_64")]
    row_offsets: Vec<[i32; LANES]>,
    #[cfg(target_arch = "x86_64")]
    gather: bool,
}

impl Transposer {
    fn new(cols: usize) -> Transposer {
        #[cfg(target_arch = "x86_64")]
        let row_offsets = (0..cols)
            .map(|group| {
                std::array::from_fn(|lane| {
                    let p = group * LANES + lane;
                    ((p % cols) * LANES + p / cols) as i32
                })
            })
            .collect();
        Transposer {
            cols,
            #[cfg(target_arch = "x86_64")]
            row_offsets,
            #[cfg(target_arch = "x86_64")]
            gather: std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    /// Fills `columns[j][lane]` with element j of row `lane` of `rows`.
    #[inline(always)]
    fn to_columns(&self, rows: &[f32], columns: &mut [[f32; LANES]]) {
        assert_eq!(rows.len(), LANES * self.cols);
        assert_eq!(columns.len(), self.cols);
        #[cfg(target_arch = "x86_64")]
        if self.gather {
            // SAFETY: the CPU has AVX-512F, and both lengths are checked above.
            unsafe { gather::to_columns(rows, columns) };
            return;
        }
        for (lane, row) in rows.chunks_exact(self.cols).enumerate() {
            for (j, &value) in row.iter().enumerate() {
                columns[j][lane] = value;
            }
        }
    }

    /// Writes the columns back to `rows` in row-major order.
    #[inline(always)]
    fn to_rows(&self, columns: &[[f32; LANES]], rows: &mut [f32]) {
        assert_eq!(rows.len(), LANES * self.cols);
        assert_eq!(columns.len(), self.cols);
        #[cfg(target_arch = "x86_64")]
        if self.gather {
            // SAFETY: the CPU has AVX-512F, and both lengths are checked above.
            unsafe { gather::to_rows(columns, &self.row_offsets, rows) };
            return;
        }
        for (lane, row) in rows.chunks_exact_mut(self.cols).enumerate() {
            for (j, out) in row.iter_mut().enumerate() {
                *out = columns[j][lane];
            }
        }
    }
}

/// The transposes of `Transposer` with AVX-512 permutes and gathers.
#[cfg(target_arch = "x86_64")]
mod gather {
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_add_epi32, _mm512_i32gather_ps, _mm512_loadu_ps,
        _mm512_loadu_si512, _mm512_mullo_epi32, _mm512_permutex2var_ps, _mm512_set1_epi32,
        _mm512_setr_epi32, _mm512_storeu_ps,
    };

    use super::LANES;

    /// Offsets 0, 1, ..., 15.
    #[target_feature(enable = "avx512f")]
    fn lane_numbers() -> __m512i {
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    }

    /// Index vectors of `_mm512_permutex2var_ps` for one step of a 16 x 16 transpose: the
    /// step that swaps bit `b` of the row and column numbers, for rows i and i + b.
    const fn swap_indices(b: usize) -> ([i32; LANES], [i32; LANES]) {
        let mut low = [0i32; LANES];
        let mut high = [0i32; LANES];
        let mut j = 0;
        while j < LANES {
            if j & b == 0 {
                low[j] = j as i32;
                high[j] = (j + b) as i32;
            } else {
                low[j] = (LANES + j - b) as i32;
                high[j] = (LANES + j) as i32;
            }
            j += 1;
        }
        (low, high)
    }

    /// Transposes 16 vectors of 16 f32 in place, in four steps of 16 two-source permutes:
    /// each step swaps one bit of the row number with the same bit of the column number.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(r: &mut [__m512; LANES]) {
        swap_step::<8>(r);
        swap_step::<4>(r);
        swap_step::<2>(r);
        swap_step::<1>(r);
    }

    /// Swaps bit B of the row and column numbers (a step of `transpose`), on the 8 pairs of
    /// rows i and i + B.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn swap_step<const B: usize>(r: &mut [__m512; LANES]) {
        let (low, high) = const { swap_indices(B) };
        // SAFETY: each array contains 16 i32.
        let (low, high) = unsafe {
            (
                _mm512_loadu_si512(low.as_ptr().cast()),
                _mm512_loadu_si512(high.as_ptr().cast()),
            )
        };
        for pair in 0..LANES / 2 {
            let i = pair / B * 2 * B + pair % B;
            let (a, c) = (r[i], r[i + B]);
            r[i] = _mm512_permutex2var_ps(a, low, c);
            r[i + B] = _mm512_permutex2var_ps(a, high, c);
        }
    }

    /// As `to_columns`, for rows of a multiple of 16 elements: by 16 x 16 transposes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `rows` must hold LANES * `columns.len()` elements.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn to_columns_by_16(rows: &[f32], columns: &mut [[f32; LANES]]) {
        let cols = columns.len();
        for tile in 0..cols / LANES {
            // SAFETY: row `lane` of the tile starts at lane * cols + tile * 16 and contains 16
            // elements inside `rows`; the columns of the tile are inside `columns`.
            unsafe {
                let mut r: [__m512; LANES] = std::array::from_fn(|lane| {
                    _mm512_loadu_ps(rows.as_ptr().add(lane * cols + tile * LANES))
                });
                transpose(&mut r);
                for (j, vector) in r.iter().enumerate() {
                    _mm512_storeu_ps(columns[tile * LANES + j].as_mut_ptr(), *vector);
                }
            }
        }
    }

    /// As `to_rows`, for rows of a multiple of 16 elements: by 16 x 16 transposes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `rows` must hold LANES * `columns.len()` elements.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn to_rows_by_16(columns: &[[f32; LANES]], rows: &mut [f32]) {
        let cols = columns.len();
        for tile in 0..cols / LANES {
            // SAFETY: as in `to_columns_by_16`.
            unsafe {
                let mut r: [__m512; LANES] =
                    std::array::from_fn(|j| _mm512_loadu_ps(columns[tile * LANES + j].as_ptr()));
                transpose(&mut r);
                for (lane, vector) in r.iter().enumerate() {
                    _mm512_storeu_ps(rows.as_mut_ptr().add(lane * cols + tile * LANES), *vector);
                }
            }
        }
    }

    /// Index vectors of `_mm512_permutex2var_ps` that split 16 rows of 2, held in two vectors,
    /// into the two columns: element 2 lane + j of the pair is column j's lane.
    const SPLIT_PAIRS: [[i32; LANES]; 2] = {
        let mut indices = [[0i32; LANES]; 2];
        let mut lane = 0;
        while lane < LANES {
            indices[0][lane] = 2 * lane as i32;
            indices[1][lane] = 2 * lane as i32 + 1;
            lane += 1;
        }
        indices
    };

    /// Index vectors that interleave the two columns back into 16 rows of 2: element i of
    /// output vector k is column i % 2 (the second source from 16 on) at lane 8 k + i / 2.
    const JOIN_PAIRS: [[i32; LANES]; 2] = {
        let mut indices = [[0i32; LANES]; 2];
        let mut k = 0;
        while k < 2 {
            let mut i = 0;
            while i < LANES {
                indices[k][i] = ((i % 2) * LANES + 8 * k + i / 2) as i32;
                i += 1;
            }
            k += 1;
        }
        indices
    };

    /// As `to_columns`, for rows of 2 elements: two permutes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, `rows` must hold 32 elements and `columns` 2 columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn to_columns_by_2(rows: &[f32], columns: &mut [[f32; LANES]]) {
        // SAFETY: `rows` contains 32 f32, each index array 16 i32, and each column 16 f32.
        unsafe {
            let low = _mm512_loadu_ps(rows.as_ptr());
            let high = _mm512_loadu_ps(rows.as_ptr().add(LANES));
            for (column, indices) in columns.iter_mut().zip(&SPLIT_PAIRS) {
                let indices = _mm512_loadu_si512(indices.as_ptr().cast());
                let values = _mm512_permutex2var_ps(low, indices, high);
                _mm512_storeu_ps(column.as_mut_ptr(), values);
            }
        }
    }

    /// As `to_rows`, for rows of 2 elements: two permutes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, `rows` must hold 32 elements and `columns` 2 columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn to_rows_by_2(columns: &[[f32; LANES]], rows: &mut [f32]) {
        // SAFETY: as in `to_columns_by_2`.
        unsafe {
            let first = _mm512_loadu_ps(columns[0].as_ptr());
            let second = _mm512_loadu_ps(columns[1].as_ptr());
            for (out, indices) in rows.chunks_exact_mut(LANES).zip(&JOIN_PAIRS) {
                let indices = _mm512_loadu_si512(indices.as_ptr().cast());
                let values = _mm512_permutex2var_ps(first, indices, second);
                _mm512_storeu_ps(out.as_mut_ptr(), values);
            }
        }
    }

    /// Gathers column j from elements j, j + cols, ..., j + 15 cols.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `rows` must hold LANES * `columns.len()` elements.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn to_columns(rows: &[f32], columns: &mut [[f32; LANES]]) {
        if columns.len().is_multiple_of(LANES) {
            // SAFETY: as this function's.
            return unsafe { to_columns_by_16(rows, columns) };
        }
        if columns.len() == 2 {
            // SAFETY: as this function's.
            return unsafe { to_columns_by_2(rows, columns) };
        }
        let cols = columns.len() as i32;
        let starts = _mm512_mullo_epi32(lane_numbers(), _mm512_set1_epi32(cols));
        for (j, column) in columns.iter_mut().enumerate() {
            let offsets = _mm512_add_epi32(starts, _mm512_set1_epi32(j as i32));
            // SAFETY: every offset is below LANES * cols, inside `rows`, and `column` contains
            // LANES f32.
            unsafe {
                let values = _mm512_i32gather_ps::<4>(offsets, rows.as_ptr());
                _mm512_storeu_ps(column.as_mut_ptr(), values);
            }
        }
    }

    /// Gathers each group of 16 consecutive row-major elements from the columns, at the
    /// offsets `Transposer::new` computed.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, `rows` must hold LANES * `columns.len()` elements, and
    /// `offsets` one group per column, each offset below LANES * `columns.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn to_rows(columns: &[[f32; LANES]], offsets: &[[i32; LANES]], rows: &mut [f32]) {
        if columns.len().is_multiple_of(LANES) {
            // SAFETY: as this function's.
            return unsafe { to_rows_by_16(columns, rows) };
        }
        if columns.len() == 2 {
            // SAFETY: as this function's.
            return unsafe { to_rows_by_2(columns, rows) };
        }
        let source = columns.as_ptr().cast::<f32>();
        for (out, offsets) in rows.chunks_exact_mut(LANES).zip(offsets) {
            // SAFETY: every offset is inside `columns`, and `out` and `offsets` hold LANES
            // elements each.
            unsafe {
                let offsets = _mm512_loadu_si512(offsets.as_ptr().cast());
                let values = _mm512_i32gather_ps::<4>(offsets, source);
                _mm512_storeu_ps(out.as_mut_ptr(), values);
            }
        }
    }
}

fn entropy_of(sum: f32, entropy_sum: f32, params: &RowParams) -> f32 {
    (math::log_accurate(sum) - entropy_sum / sum) * params.entropy.unwrap_or(1.0)
}

/// Returns the max order key over `x`, and the bits of its largest |x|, in one pass. The
/// pass takes the float max and the max magnitude. The magnitude shows a row with an infinity
/// or NaN, and only such a row takes the order keys again.
#[inline(always)]
fn scan(x: &[f32]) -> (u32, u32) {
    let Some(&first) = x.first() else {
        return (0, 0);
    };
    let mut state = ([first; LANES], [0u32; LANES]);
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        scan_step(chunk.try_into().expect("a chunk of LANES"), &mut state);
    }
    if !chunks.remainder().is_empty() {
        // Padding with the first element changes neither the max nor the magnitude.
        scan_step(&padded(chunks.remainder(), first), &mut state);
    }
    // Both reductions run as trees, like `tree_sum`.
    let (mut maxima, mut magnitudes) = state;
    let mut width = LANES / 2;
    while width > 0 {
        for lane in 0..width {
            maxima[lane] = maxima[lane].max(maxima[lane + width]);
            magnitudes[lane] = magnitudes[lane].max(magnitudes[lane + width]);
        }
        width /= 2;
    }
    let (max, magnitude) = (maxima[0], magnitudes[0]);
    if magnitude >= f32::INFINITY.to_bits() {
        return scan_keys(x);
    }
    (math::order_key(max), magnitude)
}

/// Adds one chunk to the lanes' maxima and max magnitude bits.
#[inline(always)]
fn scan_step(chunk: &[f32; LANES], (maxima, magnitudes): &mut ([f32; LANES], [u32; LANES])) {
    for lane in 0..LANES {
        let value = chunk[lane];
        // Not f32::max, whose NaN rule costs two more steps: `scan` catches NaN.
        maxima[lane] = if value > maxima[lane] {
            value
        } else {
            maxima[lane]
        };
        magnitudes[lane] = magnitudes[lane].max(value.to_bits() & 0x7fff_ffff);
    }
}

/// As `scan`, by order keys, which also rank the infinities and NaN.
#[inline(always)]
fn scan_keys(x: &[f32]) -> (u32, u32) {
    let mut keys = [0u32; LANES];
    let mut magnitudes = [0u32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            keys[lane] = keys[lane].max(math::order_key(chunk[lane]));
            magnitudes[lane] = magnitudes[lane].max(chunk[lane].to_bits() & 0x7fff_ffff);
        }
    }
    for (lane, &value) in chunks.remainder().iter().enumerate() {
        keys[lane] = keys[lane].max(math::order_key(value));
        magnitudes[lane] = magnitudes[lane].max(value.to_bits() & 0x7fff_ffff);
    }
    let key = keys.into_iter().max().unwrap_or(0);
    let magnitude = magnitudes.into_iter().max().unwrap_or(0);
    (key, magnitude)
}

/// The way a row forms each exact difference x - m, from its max m and the bits of its
/// largest |x|. Plain TwoSum takes six steps. Fast2Sum takes three, and applies when the
/// order of the two magnitudes is the same for every element. Halves serve when a difference
/// can overflow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Difference {
    /// Some |x| reaches 2^126, so x - m may overflow: `plain_shift`.
    Halved,
    /// `math::two_difference`.
    TwoSum,
    /// m <= 0, so every |x| >= |m|.
    XLarger,
    /// Every |x| <= m.
    MaxLarger,
}

impl Difference {
    fn of(m: f32, magnitude: u32) -> Difference {
        if magnitude >= NO_OVERFLOW_BITS {
            Difference::Halved
        } else if m <= 0.0 {
            Difference::XLarger
        } else if magnitude <= m.to_bits() {
            Difference::MaxLarger
        } else {
            Difference::TwoSum
        }
    }
}

/// (exp(z - m), z - m) of one logit with its remainder `lo`; (0, 0) for -inf.
#[inline(always)]
fn term(x: f32, lo: f32, m: f32, factor: Option<Factor>) -> (f32, f32) {
    let excluded = x == f32::NEG_INFINITY;
    let hi = if excluded { m } else { x };
    let (d_hi, d_lo) = shift(hi, lo, m, factor);
    let e = math::exp_nonpositive(d_hi, d_lo);
    if excluded {
        (0.0, 0.0)
    } else {
        (e, d_hi + d_lo)
    }
}

/// z - m as an unevaluated sum: the exact difference x - m, times the factor if there is
/// one. When x - m overflows f32, the halves of x and m give half the difference exactly, and
/// the factor doubles. Unscaled, the result is then -inf, which is the rounding of its exact
/// value. Both differences are computed and one selected, so the loops stay vectorised.
#[inline(always)]
fn plain_shift(x: f32, m: f32, factor: Option<Factor>) -> (f32, f32) {
    let whole = math::two_difference(x, m);
    let half = math::two_difference(x * 0.5, m * 0.5);
    let overflows = !whole.0.is_finite();
    let d = if overflows { half } else { whole };
    let k = if overflows { 2.0 } else { 1.0 };
    match factor {
        Some(c) => {
            let doubled = Factor {
                c1: c.c1 * k,
                c2: c.c2 * k,
                lo: c.lo * k,
            };
            math::scaled(d, doubled)
        }
        None => (d.0 * k, if overflows { 0.0 } else { d.1 }),
    }
}

/// As `plain_shift`, plus the logit's remainder `lo`, which only masked logits have (and
/// they no factor). The remainder can exceed half an ULP of the difference, as when a mask
/// of 1e8 rounds away the logit, so it is folded in with TwoSum.
#[inline(always)]
fn shift(x: f32, lo: f32, m: f32, factor: Option<Factor>) -> (f32, f32) {
    let d = plain_shift(x, m, factor);
    if lo == 0.0 || !d.0.is_finite() {
        return d;
    }
    math::two_difference(d.0, -(d.1 + lo))
}

/// Sums exp(z - m) and, for the entropy, exp(z - m) * (z - m) over `x`, compensated per lane,
/// storing each exp in `y` if given. Returns (sum, entropy sum).
#[inline(always)]
fn exp_sum(
    x: &[f32],
    lo: Option<&[f32]>,
    m: f32,
    params: &RowParams,
    y: Option<&mut [f32]>,
) -> (f32, f32) {
    let entropy = params.entropy.is_some();
    let factor = params.factor;
    let mut sum = [0.0f32; LANES];
    let mut error = [0.0f32; LANES];
    let mut entropy_sum = [0.0f32; LANES];
    let mut entropy_error = [0.0f32; LANES];
    let mut add = |lane: usize, e: f32, s: f32| {
        let (total, err) = math::add_compensated((sum[lane], error[lane]), e);
        sum[lane] = total;
        error[lane] = err;
        if entropy {
            // A term whose exp underflows adds 0, even where z - m overflowed to -inf.
            let weighted = if e == 0.0 { 0.0 } else { e * s };
            let entropy_lane = (entropy_sum[lane], entropy_error[lane]);
            let (total, err) = math::add_compensated(entropy_lane, weighted);
            entropy_sum[lane] = total;
            entropy_error[lane] = err;
        }
    };
    let lo_at = |index: usize| lo.map_or(0.0, |lo| lo[index]);

    let mut y = y;
    // Whole lanes first, then the remainder in the first lanes. `y` is loop-invariant, so
    // the compiler keeps one loop with and one without the store.
    let full = x.len() / LANES * LANES;
    for start in (0..full).step_by(LANES) {
        for lane in 0..LANES {
            let (e, s) = term(x[start + lane], lo_at(start + lane), m, factor);
            if let Some(y) = y.as_deref_mut() {
                y[start + lane] = e;
            }
            add(lane, e, s);
        }
    }
    for (lane, index) in (full..x.len()).enumerate() {
        let (e, s) = term(x[index], lo_at(index), m, factor);
        if let Some(y) = y.as_deref_mut() {
            y[index] = e;
        }
        add(lane, e, s);
    }

    (
        merge_lanes(&sum, &error),
        merge_lanes(&entropy_sum, &entropy_error),
    )
}

/// Divides each element of `y` by `d`: a product with 1 / d, then one correction step from
/// the product's residual, which costs less than a vector division and leaves the quotient
/// within about half an ULP.
#[inline(always)]
fn divide(y: &mut [f32], d: f32) {
    let reciprocal = 1.0 / d;
    for value in y.iter_mut() {
        *value = quotient(*value, d, reciprocal);
    }
}

/// y / d from the reciprocal of d: see `divide`.
#[inline(always)]
fn quotient(y: f32, d: f32, reciprocal: f32) -> f32 {
    let q = y * reciprocal;
    let residual = (-q).mul_add(d, y);
    residual.mul_add(reciprocal, q)
}

/// As `log_pass`, for logits without a remainder, with x - m formed as DIFFERENCE selects.
#[inline(always)]
fn log_plain<const DIFFERENCE: u8>(
    x: &[f32],
    y: &mut [f32],
    m: f32,
    log_sum: f32,
    factor: Option<Factor>,
) {
    for (out, &value) in y.iter_mut().zip(x) {
        let (hi, lo) = match (DIFFERENCE, factor) {
            (HALVED, _) => plain_shift(value, m, factor),
            (_, None) => exact_difference::<DIFFERENCE>(value, m),
            (_, Some(c)) => math::scaled(exact_difference::<DIFFERENCE>(value, m), c),
        };
        let log = (hi - log_sum) + lo;
        // -inf gives a NaN remainder.
        *out = if value == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            log
        };
    }
}

/// Writes (z - m) - log_sum for each logit; -inf stays -inf.
#[inline(always)]
fn log_pass(
    x: &[f32],
    lo: Option<&[f32]>,
    m: f32,
    log_sum: f32,
    params: &RowParams,
    y: &mut [f32],
) {
    for (index, (out, &value)) in y.iter_mut().zip(x).enumerate() {
        let excluded = value == f32::NEG_INFINITY;
        let lo = lo.map_or(0.0, |lo| lo[index]);
        let (hi, lo) = shift(if excluded { m } else { value }, lo, m, params.factor);
        *out = if excluded {
            f32::NEG_INFINITY
        } else {
            (hi - log_sum) + lo
        };
    }
}

/// Runs one row longer than `ROW_BLOCK` as blocks in parallel: each block's (max key, sum,
/// entropy sum), the merge, then the normalising pass.
fn long_row(x: &[f32], mask: Option<&[f32]>, out: Out<'_>, params: &RowParams) {
    let stats = long_row_stats(x, mask, params);
    match out {
        Out::Entropy(h) => *h = stats.entropy,
        Out::Row(y) => {
            if !math::key_is_finite(stats.key) {
                let fill = params.fill(stats.key);
                y.par_chunks_mut(ROW_BLOCK)
                    .for_each(|block| block.fill(fill));
                return;
            }
            y.par_chunks_mut(ROW_BLOCK)
                .zip(x.par_chunks(ROW_BLOCK))
                .enumerate()
                .for_each(|(index, (y, x))| {
                    let mask =
                        mask.map(|mask| &mask[index * ROW_BLOCK..index * ROW_BLOCK + x.len()]);
                    normalize_block(x, mask, y, &stats, params);
                });
        }
    }
}

/// As `long_row`, writing over the row.
fn long_row_in_place(y: &mut [f32], mask: Option<&[f32]>, params: &RowParams) {
    let stats = long_row_stats(y, mask, params);
    if !math::key_is_finite(stats.key) {
        let fill = params.fill(stats.key);
        y.par_chunks_mut(ROW_BLOCK)
            .for_each(|block| block.fill(fill));
        return;
    }
    y.par_chunks_mut(ROW_BLOCK)
        .enumerate()
        .for_each(|(index, y)| {
            let mask = mask.map(|mask| &mask[index * ROW_BLOCK..index * ROW_BLOCK + y.len()]);
            with_scratch(y.len(), |copy| {
                copy.copy_from_slice(y);
                normalize_block(copy, mask, y, &stats, params);
            });
        });
}

/// A long row's max key, sum and entropy, and the bits of its largest |x|.
struct RowStats {
    key: u32,
    sum: f32,
    entropy: f32,
    magnitude: u32,
}

/// A block's max key, and its sum and entropy sum relative to the block's max.
#[derive(Clone, Copy)]
struct BlockStats {
    key: u32,
    sum: f32,
    entropy_sum: f32,
    /// The bits of the block's largest |x|.
    magnitude: u32,
}

fn long_row_stats(row: &[f32], mask: Option<&[f32]>, params: &RowParams) -> RowStats {
    let partials: Vec<BlockStats> = row
        .par_chunks(ROW_BLOCK)
        .enumerate()
        .map(|(index, x)| {
            let mask = mask.map(|mask| &mask[index * ROW_BLOCK..index * ROW_BLOCK + x.len()]);
            // A thread takes a run of blocks in order, so the next block is most often its
            // own next.
            let next = row.get((index + 1) * ROW_BLOCK..).unwrap_or(&[]);
            block_stats(x, mask, params, next)
        })
        .collect();
    let key = partials
        .iter()
        .map(|partial| partial.key)
        .max()
        .unwrap_or(0);
    let magnitude = partials.iter().map(|partial| partial.magnitude).max();
    let magnitude = magnitude.unwrap_or(0);
    if !math::key_is_finite(key) {
        let fill = params.fill(key);
        return RowStats {
            key,
            sum: 0.0,
            entropy: fill,
            magnitude,
        };
    }
    // d = sum of d_b exp(m_b - m), and the entropy sum exp(m_b - m) (s_b + d_b (m_b - m)).
    let m = math::key_value(key);
    let mut sum = (0.0, 0.0);
    let mut entropy_sum = (0.0, 0.0);
    let factor = if mask.is_some() { None } else { params.factor };
    for block in &partials {
        if !math::key_is_finite(block.key) {
            continue;
        }
        let (hi, lo) = shift(math::key_value(block.key), 0.0, m, factor);
        let rescale = math::exp_nonpositive(hi, lo);
        sum = math::add_compensated(sum, block.sum * rescale);
        let term = if rescale == 0.0 {
            0.0
        } else {
            rescale * (block.entropy_sum + block.sum * (hi + lo))
        };
        entropy_sum = math::add_compensated(entropy_sum, term);
    }

    let sum = sum.0 + sum.1;
    RowStats {
        key,
        sum,
        entropy: entropy_of(sum, entropy_sum.0 + entropy_sum.1, params),
        magnitude,
    }
}

/// Returns one block's stats.
#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn block_stats(x: &[f32], mask: Option<&[f32]>, params: &RowParams, next: &[f32]) -> BlockStats {
    match mask {
        None => block_stats_of(x, None, params, next),
        Some(mask) => {
            let (hi, lo, unscaled) = block_logits(x, mask, params);
            block_stats_of(&hi, Some(&lo), &unscaled, &[])
        }
    }
}

#[inline(always)]
fn block_stats_of(x: &[f32], lo: Option<&[f32]>, params: &RowParams, next: &[f32]) -> BlockStats {
    let (key, magnitude) = scan(x);
    let mut stats = BlockStats {
        key,
        sum: 0.0,
        entropy_sum: 0.0,
        magnitude,
    };
    if !math::key_is_finite(key) {
        return stats;
    }
    let m = math::key_value(key);
    if lo.is_none() && params.entropy.is_none() {
        let difference = Difference::of(m, magnitude);
        stats.sum = plain_exp_sum::<false>(x, m, difference, params.factor, &mut [], next);
    } else {
        (stats.sum, stats.entropy_sum) = exp_sum(x, lo, m, params, None);
    }
    stats
}

/// Writes one block of a finite long row.
#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn normalize_block(
    x: &[f32],
    mask: Option<&[f32]>,
    y: &mut [f32],
    stats: &RowStats,
    params: &RowParams,
) {
    match mask {
        None => normalize_block_of(x, None, y, stats, params),
        Some(mask) => {
            let (hi, lo, unscaled) = block_logits(x, mask, params);
            normalize_block_of(&hi, Some(&lo), y, stats, &unscaled);
        }
    }
}

#[inline(always)]
fn normalize_block_of(
    x: &[f32],
    lo: Option<&[f32]>,
    y: &mut [f32],
    stats: &RowStats,
    params: &RowParams,
) {
    let m = math::key_value(stats.key);
    if lo.is_some() && params.log {
        log_pass(x, lo, m, math::log_accurate(stats.sum), params, y);
    } else if lo.is_none() {
        let difference = Difference::of(m, stats.magnitude);
        with_difference!(difference, D => normalize_plain::<D>(x, y, m, stats.sum, params));
    } else {
        let _ = exp_sum(x, lo, m, params, Some(y));
        divide(y, stats.sum);
    }
}

/// Writes exp(z - m) / sum, or (z - m) - log(sum) for the log, for each logit of a block
/// without a mask.
#[inline(always)]
fn normalize_plain<const DIFFERENCE: u8>(
    x: &[f32],
    y: &mut [f32],
    m: f32,
    sum: f32,
    params: &RowParams,
) {
    if params.log {
        return log_plain::<DIFFERENCE>(x, y, m, math::log_accurate(sum), params.factor);
    }
    let reciprocal = 1.0 / sum;
    for (out, &value) in y.iter_mut().zip(x) {
        let e = plain_term::<DIFFERENCE>(value, m, params.factor);
        *out = quotient(e, sum, reciprocal);
    }
}

/// Returns a block's masked logits as unevaluated sums (hi, lo), and the parameters to run
/// them with: the factor is in the logits already.
fn block_logits(x: &[f32], mask: &[f32], params: &RowParams) -> (Vec<f32>, Vec<f32>, RowParams) {
    let mut hi = vec![0.0; x.len()];
    let mut lo = vec![0.0; x.len()];
    masked_logits(x, mask, x.len(), params, &mut hi, &mut lo);
    let unscaled = RowParams {
        factor: None,
        ..*params
    };
    (hi, lo, unscaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that each row's chosen difference is exact for every element of the row.
    fn assert_exact(rows: &[Vec<f32>], expected: Difference) {
        for row in rows {
            let (key, magnitude) = scan(row);
            let m = math::key_value(key);
            let chosen = Difference::of(m, magnitude);
            assert_eq!(chosen, expected, "row {row:?}");
            if chosen == Difference::Halved {
                // `plain_shift` forms these; tests/numerics.rs checks its results.
                continue;
            }
            for &x in row {
                let (hi, lo) = match chosen {
                    Difference::XLarger => exact_difference::<X_LARGER>(x, m),
                    Difference::MaxLarger => exact_difference::<MAX_LARGER>(x, m),
                    _ => exact_difference::<TWO_SUM>(x, m),
                };
                let exact = x as f64 - m as f64;
                assert_eq!(hi as f64 + lo as f64, exact, "{x} - {m}: {hi} + {lo}");
            }
        }
    }

    /// Rows whose elements have many different exponents, so that most differences round.
    fn rows(sign: f32, offset: f32) -> Vec<Vec<f32>> {
        (0..50)
            .map(|row| {
                (0..67)
                    .map(|i| {
                        let scale = 2f32.powi((i * 7 + row) % 40 - 20);
                        sign * (1.0 + 0.123_456_7 * i as f32) * scale + offset
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sigmoid_ignores_chunk_neighbours() {
        let cpu = Cpu::new(Some(1)).unwrap();
        let values: Vec<f32> = (0..LANES).map(|i| -3.7 + 0.61 * i as f32).collect();
        let mut far_left = values.clone();
        far_left[5] = -100.0;
        let (mut alone, mut mixed) = (vec![0.0; LANES], vec![0.0; LANES]);
        cpu.elementwise_into(Op::Sigmoid, &values, &mut alone)
            .unwrap();
        cpu.elementwise_into(Op::Sigmoid, &far_left, &mut mixed)
            .unwrap();
        for lane in (0..LANES).filter(|&lane| lane != 5) {
            assert_eq!(alone[lane].to_bits(), mixed[lane].to_bits(), "lane {lane}");
        }
        assert!(mixed[5] > 0.0, "sigmoid(-100) = {}", mixed[5]);
    }

    #[test]
    fn each_row_forms_its_differences_exactly() {
        // Negative values: m <= 0.
        assert_exact(&rows(-1.0, 0.0), Difference::XLarger);
        // Positive values, so every |x| <= m.
        assert_exact(&rows(1.0, 0.0), Difference::MaxLarger);
        // Both signs, with larger negative magnitudes than the max.
        let mixed: Vec<Vec<f32>> = rows(-1.0, 0.0)
            .into_iter()
            .map(|mut row| {
                row[3] = 0.3;
                row
            })
            .collect();
        assert_exact(&mixed, Difference::TwoSum);
        // Values near 2^127: the difference may overflow.
        assert_exact(&[vec![3e38, -3e38]], Difference::Halved);
    }
}
