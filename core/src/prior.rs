//! The learned prompt's prior correction (docs/bundle.md, `tapl.prior`).
//!
//! At low SNR a decoded embedding z_hat leans towards the mean of the embeddings the code
//! was trained on, which biases its scores towards the classes whose text lies near that
//! mean. Before scoring z_hat against the learned prompt's class features the receiver
//! removes part of that direction:
//!
//! `z_corr = normalise(z_hat - beta(k, snr) * (z_hat . u) * u)`
//!
//! with `u` the unit prior direction and `beta` a per-k table over a grid of SNRs, linear
//! in dB between grid points and clamped outside them. A k without a table gets beta = 0.

use std::collections::HashMap;

use crate::bundle::{read_f32_file, Bundle};
use crate::error::{Error, Result};

/// The prior direction and the strength tables of one bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorCorrection {
    /// Unit prior direction `u` [D].
    direction: Vec<f32>,
    /// SNRs (dB, increasing) of the table columns.
    grid_db: Vec<f32>,
    /// beta at each grid SNR, by k.
    beta: HashMap<u32, Vec<f32>>,
}

impl PriorCorrection {
    /// The bundle's correction, or `None` when its TAPL section has none. The manifest's
    /// values were checked by [`Bundle::load`]; this reads the direction file.
    pub fn load(bundle: &Bundle) -> Result<Option<PriorCorrection>> {
        let Some(spec) = bundle.manifest.tapl.as_ref().and_then(|t| t.prior.as_ref()) else {
            return Ok(None);
        };
        let path = bundle.path(&spec.direction);
        let direction = read_f32_file(&path, bundle.manifest.embed_dim)?;
        let norm = direction.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || (norm - 1.0).abs() >= 1e-3 {
            return Err(Error::bundle(
                &path,
                format!("tapl.prior.direction: must be a unit vector, its norm is {norm}"),
            ));
        }
        let beta = spec
            .beta
            .iter()
            .map(|(k, v)| Ok((parse_k(k)?, v.clone())))
            .collect::<std::result::Result<_, String>>()
            .map_err(|m| Error::bundle(&path, m))?;
        Ok(Some(PriorCorrection {
            direction,
            grid_db: spec.grid_db.clone(),
            beta,
        }))
    }

    /// beta for frames of k channel uses decoded at `snr_db` (0 for a k without a table).
    pub fn strength(&self, k: u32, snr_db: f32) -> f32 {
        let Some(table) = self.beta.get(&k) else {
            return 0.0;
        };
        let grid = &self.grid_db;
        let last = grid.len() - 1;
        if snr_db.is_nan() || snr_db <= grid[0] {
            return table[0];
        }
        if snr_db >= grid[last] {
            return table[last];
        }
        let i = grid.partition_point(|&g| g <= snr_db).clamp(1, last);
        let w = (snr_db - grid[i - 1]) / (grid[i] - grid[i - 1]);
        table[i - 1] * (1.0 - w) + table[i] * w
    }

    /// `normalise(z_hat - beta * (z_hat . u) * u)`; z_hat unchanged when beta is 0.
    pub fn apply(&self, z_hat: &[f32], beta: f32) -> Result<Vec<f32>> {
        if z_hat.len() != self.direction.len() {
            return Err(Error::invalid(format!(
                "z_hat has {} values, the prior direction {}",
                z_hat.len(),
                self.direction.len()
            )));
        }
        if beta == 0.0 {
            return Ok(z_hat.to_vec());
        }
        let a: f32 = z_hat.iter().zip(&self.direction).map(|(z, u)| z * u).sum();
        let mut out: Vec<f32> = z_hat
            .iter()
            .zip(&self.direction)
            .map(|(z, u)| z - beta * a * u)
            .collect();
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm.is_nan() || norm <= 0.0 {
            return Err(Error::invalid(
                "z_hat lies along the prior direction: nothing is left to score",
            ));
        }
        out.iter_mut().for_each(|v| *v /= norm);
        Ok(out)
    }
}

/// A `tapl.prior.beta` key: k as a decimal number.
pub(crate) fn parse_k(key: &str) -> std::result::Result<u32, String> {
    key.parse::<u32>()
        .ok()
        .filter(|&k| k > 0)
        .ok_or_else(|| format!("tapl.prior.beta: key {key:?} is not a positive k"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correction() -> PriorCorrection {
        PriorCorrection {
            direction: vec![0.6, 0.8, 0.0],
            grid_db: vec![-10.0, 0.0, 10.0],
            beta: HashMap::from([(8, vec![1.0, 0.5, 0.0])]),
        }
    }

    #[test]
    fn strength_is_linear_in_db_and_clamped() {
        let c = correction();
        assert_eq!(c.strength(8, -30.0), 1.0);
        assert_eq!(c.strength(8, -10.0), 1.0);
        assert!((c.strength(8, -5.0) - 0.75).abs() < 1e-6);
        assert_eq!(c.strength(8, 0.0), 0.5);
        assert!((c.strength(8, 7.5) - 0.125).abs() < 1e-6);
        assert_eq!(c.strength(8, 40.0), 0.0);
        assert_eq!(
            c.strength(16, -30.0),
            0.0,
            "a k without a table is not corrected"
        );
        assert_eq!(c.strength(8, f32::NAN), 1.0);
    }

    #[test]
    fn full_strength_removes_the_prior_direction() {
        let c = correction();
        let z = [0.6, 0.0, 0.8];
        let out = c.apply(&z, 1.0).unwrap();
        let along: f32 = out.iter().zip(&c.direction).map(|(a, b)| a * b).sum();
        assert!(along.abs() < 1e-6, "{out:?}");
        let norm: f32 = out.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        assert_eq!(c.apply(&z, 0.0).unwrap(), z.to_vec());
        // Half strength: the component along u halves before renormalising.
        let half = c.apply(&z, 0.5).unwrap();
        let a: f32 = half.iter().zip(&c.direction).map(|(a, b)| a * b).sum();
        let rest = half
            .iter()
            .zip(&c.direction)
            .map(|(h, u)| (h - a * u).powi(2))
            .sum::<f32>()
            .sqrt();
        // z . u = 0.36 and |z - 0.36 u| = sqrt(1 - 0.36^2): the ratio of the two halves.
        let want = 0.18 / (1.0f32 - 0.36 * 0.36).sqrt();
        assert!((a / rest - want).abs() < 1e-5, "{half:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = correction();
        assert!(c.apply(&[1.0, 0.0], 1.0).is_err());
        assert!(c.apply(&[0.6, 0.8, 0.0], 1.0).is_err());
        assert!(parse_k("0").is_err() && parse_k("x").is_err() && parse_k("16") == Ok(16));
    }
}
