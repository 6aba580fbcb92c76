//! Options of softmax and log-softmax: temperature, scale and rows without a finite logit.

use crate::error::{Error, Result};
use crate::planner::Op;

/// The output of a row whose logits are all -inf, such as a fully masked attention row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MaskedRows {
    /// NaN everywhere, as PyTorch 2 gives.
    #[default]
    Nan,
    /// Zeros for softmax and -inf for log-softmax, as attention masks want.
    Zero,
}

/// The unit of an entropy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EntropyUnit {
    /// Natural logarithms.
    #[default]
    Nats,
    /// Base-2 logarithms.
    Bits,
}

impl EntropyUnit {
    /// Returns the factor from nats to this unit.
    pub fn per_nat(self) -> f64 {
        match self {
            EntropyUnit::Nats => 1.0,
            EntropyUnit::Bits => std::f64::consts::LOG2_E,
        }
    }
}

/// Options of softmax: the output form (softmax or log-softmax) of `scale * x / temperature`,
/// and the output of rows without a finite logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxOptions {
    /// Whether to return log-softmax, computed as (z - max) - log(sum), never as log(softmax).
    pub log: bool,
    /// The temperature T > 0 of the Boltzmann distribution softmax(x / T); 1 leaves x as is.
    pub temperature: f32,
    /// A factor S > 0 applied to the logits before the max, such as 1 / sqrt(d) in attention.
    pub scale: f32,
    /// The output of rows without a finite logit.
    pub masked_rows: MaskedRows,
}

impl Default for SoftmaxOptions {
    fn default() -> Self {
        SoftmaxOptions {
            log: false,
            temperature: 1.0,
            scale: 1.0,
            masked_rows: MaskedRows::Nan,
        }
    }
}

impl SoftmaxOptions {
    /// Log-softmax with the other options at their defaults.
    pub fn log() -> Self {
        SoftmaxOptions {
            log: true,
            ..SoftmaxOptions::default()
        }
    }

    /// Returns the op these options compute: `Op::Softmax` or `Op::LogSoftmax`.
    pub fn op(&self) -> Op {
        if self.log {
            Op::LogSoftmax
        } else {
            Op::Softmax
        }
    }

    /// Checks that the temperature and the scale are finite and positive, and that their
    /// ratio is a normal f32.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, value: f32| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "{name} {value} is invalid: it must be finite and greater than 0"
                )))
            }
        };
        positive("temperature", self.temperature)?;
        positive("scale", self.scale)?;
        let factor = self.factor() as f32;
        if !factor.is_normal() {
            return Err(Error::InvalidArgument(format!(
                "scale {:e} over temperature {:e} is {:e}, outside the range of normal f32 \
                 numbers; bring the two closer together",
                self.scale,
                self.temperature,
                self.factor()
            )));
        }
        Ok(())
    }

    /// Returns the factor c = scale / temperature that multiplies the logits, in f64.
    pub fn factor(&self) -> f64 {
        self.scale as f64 / self.temperature as f64
    }

    /// Returns whether the factor differs from 1, so that the kernels multiply the logits.
    pub fn is_scaled(&self) -> bool {
        self.factor() != 1.0
    }

    /// Returns the factor as the kernels take it, [c1, c2, c_lo]: c1 + c2 is c rounded to
    /// f32, split into two halves of 12 significant bits, and c_lo is that rounding's error.
    pub(crate) fn factor_parts(&self) -> [f32; 3] {
        split_factor(self.factor())
    }

    /// Returns the factor 1 / temperature of an additive mask, split like `factor_parts`.
    pub(crate) fn mask_factor_parts(&self) -> [f32; 3] {
        split_factor(1.0 / self.temperature as f64)
    }
}

/// Splits `factor` into [c1, c2, c_lo]: c1 + c2 is `factor` rounded to f32, with 12
/// significant bits in each half, and c_lo is the rounding error.
fn split_factor(factor: f64) -> [f32; 3] {
    let rounded = factor as f32;
    let c1 = f32::from_bits(rounded.to_bits() & !0xfff);
    let c2 = rounded - c1;
    let c_lo = (factor - rounded as f64) as f32;
    [c1, c2, c_lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_parts_sum_to_factor() {
        let options = SoftmaxOptions {
            temperature: 2.5,
            scale: 0.125,
            ..SoftmaxOptions::default()
        };
        let [c1, c2, c_lo] = options.factor_parts();
        assert_eq!(c1.to_bits() & 0xfff, 0);
        assert_eq!(c1 + c2, (0.05f64) as f32);
        let sum = c1 as f64 + c2 as f64 + c_lo as f64;
        assert!((sum - 0.05).abs() < 1e-15, "sum = {sum}");
    }

    #[test]
    fn validate_rejects_bad_temperature() {
        for temperature in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let options = SoftmaxOptions {
                temperature,
                ..SoftmaxOptions::default()
            };
            let message = options.validate().unwrap_err().to_string();
            assert!(message.contains("temperature"), "{message}");
        }
    }

    #[test]
    fn validate_rejects_factor_outside_f32() {
        let options = SoftmaxOptions {
            temperature: 1e-30,
            scale: 1e30,
            ..SoftmaxOptions::default()
        };
        assert!(options.validate().is_err());
    }
}
