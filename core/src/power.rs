//! Power normalisation of a frame of symbols.
//!
//! A frame of k complex channel uses is carried as 2k reals interleaved
//! `(re0, im0, re1, im1, ...)`. After [`normalise_power`] the frame satisfies the per-image
//! power constraint `(1/k) * sum_i |x_i|^2 = 1` (the energy is summed in f64; the result is
//! exact up to f32 rounding of the stored symbols).

use crate::error::{Error, Result};

/// Checks that `symbols` is a non-empty interleaved frame of finite values; returns k.
pub fn check_frame(symbols: &[f32]) -> Result<usize> {
    if symbols.is_empty() || symbols.len() % 2 != 0 {
        return Err(Error::invalid(format!(
            "a frame must hold 2k > 0 interleaved (re, im) values, got {}",
            symbols.len()
        )));
    }
    if let Some(i) = symbols.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "symbol value {i} is not finite ({})",
            symbols[i]
        )));
    }
    Ok(symbols.len() / 2)
}

/// Mean energy per complex symbol, `(1/k) * sum_i |x_i|^2`, in f64.
pub fn mean_energy(symbols: &[f32]) -> f64 {
    let k = (symbols.len() / 2).max(1) as f64;
    symbols
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        / k
}

/// Scales `symbols` in place so that `(1/k) * sum_i |x_i|^2 = 1`.
///
/// Errors when the frame is empty, has an odd length, holds non-finite values or has
/// zero energy (there is no direction to scale).
pub fn normalise_power(symbols: &mut [f32]) -> Result<()> {
    check_frame(symbols)?;
    let energy = mean_energy(symbols);
    if !(energy > 0.0 && energy.is_finite()) {
        return Err(Error::invalid(format!(
            "cannot normalise a frame with mean energy {energy}"
        )));
    }
    let scale = 1.0 / energy.sqrt();
    for v in symbols.iter_mut() {
        *v = (f64::from(*v) * scale) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_power_after_normalisation() {
        for k in [1usize, 2, 8, 64, 1000] {
            let mut x: Vec<f32> = (0..2 * k)
                .map(|i| ((i * 37 % 11) as f32 - 4.3) * 3.1)
                .collect();
            normalise_power(&mut x).unwrap();
            let e = mean_energy(&x);
            // f32 rounding of each stored value: relative error about 2^-24 per term.
            assert!((e - 1.0).abs() < 1e-6, "k={k}: energy {e}");
        }
    }

    #[test]
    fn direction_is_kept() {
        let mut x = vec![3.0f32, 4.0, 0.0, 0.0];
        normalise_power(&mut x).unwrap();
        // energy 25 over k = 2 -> scale sqrt(2)/5
        let s = (2.0f64).sqrt() / 5.0;
        assert!((f64::from(x[0]) - 3.0 * s).abs() < 1e-6);
        assert!((f64::from(x[1]) - 4.0 * s).abs() < 1e-6);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(normalise_power(&mut []).is_err());
        assert!(normalise_power(&mut [1.0, 2.0, 3.0]).is_err());
        assert!(normalise_power(&mut [0.0, 0.0]).is_err());
        assert!(normalise_power(&mut [f32::NAN, 1.0]).is_err());
        assert!(normalise_power(&mut [f32::INFINITY, 1.0]).is_err());
    }
}
