//! The f64 reference: every op accumulated in f64 and rounded once to f32. It is the oracle
//! that GPU results are checked against, written for clarity, not speed.

use crate::error::{Error, Result};
use crate::options::{EntropyUnit, MaskedRows, SoftmaxOptions};
use crate::planner::Op;

/// Sigmoid of one value in f64, in the form that cannot overflow.
fn sigmoid_f64(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// log(sigmoid(x)) in f64, in the form that cannot overflow.
fn log_sigmoid_f64(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// x * sigmoid(x) in f64. -inf gives NaN (-inf times 0), as in PyTorch.
fn silu_f64(x: f64) -> f64 {
    x * sigmoid_f64(x)
}

/// Writes the elementwise `op` of `input` into `output`, which has the input's length.
pub fn elementwise_into(op: Op, input: &[f32], output: &mut [f32]) -> Result<()> {
    check_len("output", output.len(), input.len())?;
    let function: fn(f64) -> f64 = match op {
        Op::Sigmoid => sigmoid_f64,
        Op::LogSigmoid => log_sigmoid_f64,
        Op::Silu => silu_f64,
        Op::Softmax | Op::LogSoftmax | Op::Entropy => {
            return Err(Error::InvalidArgument(format!(
                "{} is not elementwise; call softmax_with_into",
                op.name()
            )));
        }
    };
    for (y, &x) in output.iter_mut().zip(input) {
        *y = function(x as f64) as f32;
    }
    Ok(())
}

/// Writes sigmoid(input) into `output`.
pub fn sigmoid_into(input: &[f32], output: &mut [f32]) -> Result<()> {
    elementwise_into(Op::Sigmoid, input, output)
}

/// Returns sigmoid(input).
pub fn sigmoid(input: &[f32]) -> Vec<f32> {
    input
        .iter()
        .map(|&x| sigmoid_f64(x as f64) as f32)
        .collect()
}

/// Writes the softmax of each of the `rows` rows of `cols` elements of `input` into `output`.
pub fn softmax_into(input: &[f32], rows: usize, cols: usize, output: &mut [f32]) -> Result<()> {
    softmax_with_into(input, rows, cols, &SoftmaxOptions::default(), output)
}

/// Returns the softmax of each of the `rows` rows of `cols` elements of `input`.
pub fn softmax(input: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    softmax_with(input, rows, cols, &SoftmaxOptions::default())
}

/// Returns the softmax, or log-softmax, of each row of `input` with `options`.
pub fn softmax_with(
    input: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
) -> Result<Vec<f32>> {
    let mut output = vec![0.0; input.len()];
    softmax_with_into(input, rows, cols, options, &mut output)?;
    Ok(output)
}

/// Writes the softmax, or log-softmax, of each row of `input` with `options` into `output`.
/// The logits are z = scale * x / temperature, formed in f64 from the f32 inputs, so that the
/// result is the exact one for those inputs, rounded once.
pub fn softmax_with_into(
    input: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    output: &mut [f32],
) -> Result<()> {
    softmax_rows_into(input, None, rows, cols, options, output)
}

/// As [`softmax_with_into`], with an additive `mask` of the input's length or of one row
/// (`cols` values) shared by every row: z = (scale * x + mask) / temperature. A mask entry
/// of -inf excludes its logit.
pub fn softmax_masked_into(
    input: &[f32],
    mask: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    output: &mut [f32],
) -> Result<()> {
    softmax_rows_into(input, Some(mask), rows, cols, options, output)
}

/// Returns [`softmax_masked_into`] as a new Vec.
pub fn softmax_masked(
    input: &[f32],
    mask: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
) -> Result<Vec<f32>> {
    let mut output = vec![0.0; input.len()];
    softmax_masked_into(input, mask, rows, cols, options, &mut output)?;
    Ok(output)
}

fn softmax_rows_into(
    input: &[f32],
    mask: Option<&[f32]>,
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    output: &mut [f32],
) -> Result<()> {
    let elements = check_row_call(options, rows, cols, input.len(), output.len(), cols)?;
    if let Some(mask) = mask {
        check_mask_len(mask.len(), rows, cols)?;
    }
    if elements == 0 {
        return Ok(());
    }
    for (row, (x, y)) in input
        .chunks_exact(cols)
        .zip(output.chunks_exact_mut(cols))
        .enumerate()
    {
        let mask_row = mask.map(|mask| {
            let start = if mask.len() == cols { 0 } else { row * cols };
            &mask[start..start + cols]
        });
        softmax_row(x, mask_row, y, options);
    }
    Ok(())
}

/// Checks that a mask of `len` values covers the input or one row.
pub(crate) fn check_mask_len(len: usize, rows: usize, cols: usize) -> Result<()> {
    if len == cols || Some(len) == rows.checked_mul(cols) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "the mask has {len} values, but the input has {rows} rows of {cols}; give a mask of \
         the input's shape or of one row"
    )))
}

/// The shifted logits z - max z of one row, or why there are none.
enum RowLogits {
    /// The row has +inf or NaN, in a logit or in the mask.
    Poisoned,
    /// Every logit is -inf, or masked by -inf.
    Excluded,
    /// z - max z for each logit, -inf for the excluded ones.
    Shifted(Vec<f64>),
}

/// Forms the row's logits z = scale * x / temperature, plus mask / temperature where a mask
/// row is given, in f64, and shifts them by their max.
fn row_logits(x: &[f32], mask: Option<&[f32]>, options: &SoftmaxOptions) -> RowLogits {
    let poisoned = |v: &f32| v.is_nan() || *v == f32::INFINITY;
    if x.iter().any(poisoned) || mask.is_some_and(|mask| mask.iter().any(poisoned)) {
        return RowLogits::Poisoned;
    }
    let factor = options.factor();
    let shifted: Vec<f64> = match mask {
        // Without a mask, scale the exact difference x - max x.
        None => {
            let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            if max == f64::NEG_INFINITY {
                return RowLogits::Excluded;
            }
            x.iter().map(|&v| factor * (v as f64 - max)).collect()
        }
        Some(mask) => {
            let mask_factor = 1.0 / options.temperature as f64;
            // A logit beyond the f32 range is infinite, as it is in the kernels' f32: +inf
            // makes the row NaN, and -inf excludes the logit.
            let z: Vec<f64> = x
                .iter()
                .zip(mask)
                .map(|(&v, &m)| factor * v as f64 + mask_factor * m as f64)
                .map(|z| {
                    if (z as f32).is_infinite() {
                        z.signum() * f64::INFINITY
                    } else {
                        z
                    }
                })
                .collect();
            if z.contains(&f64::INFINITY) {
                return RowLogits::Poisoned;
            }
            let max = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            if max == f64::NEG_INFINITY {
                return RowLogits::Excluded;
            }
            z.iter().map(|&v| v - max).collect()
        }
    };
    RowLogits::Shifted(shifted)
}

fn softmax_row(x: &[f32], mask: Option<&[f32]>, y: &mut [f32], options: &SoftmaxOptions) {
    let shifted = match row_logits(x, mask, options) {
        RowLogits::Poisoned => return y.fill(f32::NAN),
        RowLogits::Excluded => {
            let fill = match (options.masked_rows, options.log) {
                (MaskedRows::Nan, _) => f32::NAN,
                (MaskedRows::Zero, false) => 0.0,
                (MaskedRows::Zero, true) => f32::NEG_INFINITY,
            };
            return y.fill(fill);
        }
        RowLogits::Shifted(shifted) => shifted,
    };
    let sum: f64 = shifted.iter().map(|s| s.exp()).sum();
    let log_sum = sum.ln();
    for (out, &s) in y.iter_mut().zip(&shifted) {
        *out = if options.log {
            (s - log_sum) as f32
        } else {
            (s.exp() / sum) as f32
        };
    }
}

/// Returns the entropy of the softmax distribution of each row of `input` with `options`, one
/// value per row, in `unit`. 0 log 0 counts as 0.
pub fn entropy(
    input: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    unit: EntropyUnit,
) -> Result<Vec<f32>> {
    let mut output = vec![0.0; rows];
    entropy_into(input, rows, cols, options, unit, &mut output)?;
    Ok(output)
}

/// Writes the entropy of each row's softmax distribution into `output`, one value per row.
/// A row holding +inf or NaN gives NaN, and a row of only -inf NaN, or 0 under
/// `MaskedRows::Zero`.
pub fn entropy_into(
    input: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    unit: EntropyUnit,
    output: &mut [f32],
) -> Result<()> {
    let elements = check_row_call(options, rows, cols, input.len(), output.len(), 1)?;
    check_entropy_shape(rows, cols)?;
    if elements == 0 {
        return Ok(());
    }
    for (x, y) in input.chunks_exact(cols).zip(output.iter_mut()) {
        *y = row_entropy(x, options, unit) as f32;
    }
    Ok(())
}

fn row_entropy(x: &[f32], options: &SoftmaxOptions, unit: EntropyUnit) -> f64 {
    let shifted = match row_logits(x, None, options) {
        RowLogits::Poisoned => return f64::NAN,
        RowLogits::Excluded => {
            return match options.masked_rows {
                MaskedRows::Nan => f64::NAN,
                MaskedRows::Zero => 0.0,
            };
        }
        RowLogits::Shifted(shifted) => shifted,
    };
    // H = log d - sum(e * s) / d with s = z - max z and e = exp(s); -inf logits add nothing.
    let (mut sum, mut weighted) = (0.0, 0.0);
    for &s in shifted.iter().filter(|s| s.is_finite()) {
        let e = s.exp();
        sum += e;
        weighted += e * s;
    }
    (sum.ln() - weighted / sum) * unit.per_nat()
}

/// Validates a call over `rows` rows of `cols` elements: the options, the shape, and the
/// lengths of the input and of the output, which has `outputs_per_row` values per row
/// (`cols` for the row ops, 1 for the entropy). Returns rows * cols.
pub(crate) fn check_row_call(
    options: &SoftmaxOptions,
    rows: usize,
    cols: usize,
    input_len: usize,
    output_len: usize,
    outputs_per_row: usize,
) -> Result<usize> {
    options.validate()?;
    let elements = shape_elements(rows, cols)?;
    check_len("input", input_len, elements)?;
    check_len("output", output_len, rows * outputs_per_row)?;
    Ok(elements)
}

/// Rejects rows of no element, whose entropy is undefined.
pub(crate) fn check_entropy_shape(rows: usize, cols: usize) -> Result<()> {
    if rows > 0 && cols == 0 {
        return Err(Error::InvalidArgument(format!(
            "the entropy of a row of 0 elements is undefined, and the input has {rows} rows of \
             0 elements; give rows of at least one element"
        )));
    }
    Ok(())
}

/// Returns rows * cols, or an error when it overflows.
pub(crate) fn shape_elements(rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols)
        .ok_or_else(|| Error::TooLarge(format!("shape [{rows}, {cols}] overflows usize")))
}

pub(crate) fn check_len(name: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::InvalidArgument(format!(
            "{name} contains {len} elements, but the shape needs {expected}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_matches_closed_forms() {
        assert_eq!(sigmoid(&[0.0]), [0.5]);
        assert_eq!(sigmoid(&[-10_000.0, 10_000.0]), [0.0, 1.0]);
        let expected = 1.0 / (1.0 + (-2.0f64).exp());
        assert_eq!(sigmoid(&[2.0])[0], expected as f32);
    }

    #[test]
    fn softmax_two_class_is_sigmoid() {
        for x in [-30.0f32, -2.5, 0.0, 0.75, 18.0] {
            let p = softmax(&[0.0, x], 1, 2).unwrap();
            assert_eq!(p[1], sigmoid(&[x])[0], "x = {x}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let input: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
        let output = softmax(&input, 4, 10).unwrap();
        for row in output.chunks(10) {
            let sum: f64 = row.iter().map(|&p| p as f64).sum();
            assert!((sum - 1.0).abs() < 1e-6, "row sums to {sum}");
        }
    }

    #[test]
    fn softmax_rejects_wrong_length() {
        assert!(softmax(&[1.0, 2.0, 3.0], 2, 2).is_err());
    }
}
