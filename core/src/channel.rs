//! The channel: AWGN and Rayleigh block fading, seeded, and coherent equalisation.
//!
//! Conventions (DESIGN §3, docs/bundle.md):
//! - a frame of k complex channel uses is 2k interleaved reals `(re, im)`, power-normalised
//!   so that `(1/k) * sum |x_i|^2 = 1` (unit symbol energy, Es = 1);
//! - AWGN: `y = x + n`, `n ~ CN(0, s2)`, i.e. variance `s2/2` per real part, with
//!   `snr_db = 10 * log10(1 / s2)`;
//! - Rayleigh block fading: `y = h * x + n` with one `h ~ CN(0, 1)` per frame (variance 1/2
//!   per real part, so `E|h|^2 = 1`); the receiver is told `h` and equalises coherently
//!   with [`equalise`] (zero forcing `y / h`), which leaves AWGN at the effective SNR
//!   `snr_db + 10 * log10(|h|^2)`.
//!
//! All randomness comes from a ChaCha8 generator seeded by the caller, so the same seed
//! and the same frames give bit-identical output on one machine.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::power::check_frame;

/// SNRs outside this range (dB) are refused as configuration mistakes.
pub const SNR_DB_RANGE: (f32, f32) = (-60.0, 100.0);

/// The fading model of the channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Fading {
    /// `y = x + n`.
    #[default]
    Awgn,
    /// `y = h x + n`, `h ~ CN(0, 1)` drawn once per frame.
    RayleighBlock,
}

impl fmt::Display for Fading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fading::Awgn => "awgn",
            Fading::RayleighBlock => "rayleigh-block",
        })
    }
}

impl FromStr for Fading {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "awgn" => Ok(Fading::Awgn),
            "rayleigh-block" | "rayleigh" => Ok(Fading::RayleighBlock),
            other => Err(Error::invalid(format!(
                "unknown fading {other:?} (expected awgn or rayleigh-block)"
            ))),
        }
    }
}

/// What the channel applied to one frame; the receiver needs it to decode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelState {
    /// SNR in dB of this frame (`10 log10(1/s2)` for unit symbol energy).
    pub snr_db: f32,
    /// The fading model applied.
    pub fading: Fading,
    /// Fading coefficient `(re, im)`; `(1, 0)` for AWGN.
    pub h: (f32, f32),
}

/// A seeded channel at a given SNR and fading model.
#[derive(Debug, Clone)]
pub struct ChannelModel {
    /// SNR in dB for the next frames.
    snr_db: f32,
    /// Fading model for the next frames.
    fading: Fading,
    /// The seed the generator was last (re)started from, for reporting.
    seed: u64,
    /// Source of noise and fading; advanced by every frame.
    rng: ChaCha8Rng,
}

fn check_snr(snr_db: f32) -> Result<()> {
    if !snr_db.is_finite() || snr_db < SNR_DB_RANGE.0 || snr_db > SNR_DB_RANGE.1 {
        return Err(Error::invalid(format!(
            "SNR {snr_db} dB is outside [{}, {}] dB",
            SNR_DB_RANGE.0, SNR_DB_RANGE.1
        )));
    }
    Ok(())
}

impl ChannelModel {
    /// A channel at `snr_db` with `fading`, its generator seeded with `seed`.
    pub fn new(snr_db: f32, fading: Fading, seed: u64) -> Result<Self> {
        check_snr(snr_db)?;
        Ok(ChannelModel {
            snr_db,
            fading,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The SNR in dB applied to the next frames.
    pub fn snr_db(&self) -> f32 {
        self.snr_db
    }

    /// The fading model applied to the next frames.
    pub fn fading(&self) -> Fading {
        self.fading
    }

    /// The seed the generator was last started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Changes the SNR for the next frames (the generator continues).
    pub fn set_snr_db(&mut self, snr_db: f32) -> Result<()> {
        check_snr(snr_db)?;
        self.snr_db = snr_db;
        Ok(())
    }

    /// Changes the fading model for the next frames (the generator continues).
    pub fn set_fading(&mut self, fading: Fading) {
        self.fading = fading;
    }

    /// Restarts the generator from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Complex noise variance `s2 = 10^(-snr_db/10)`.
    pub fn noise_variance(&self) -> f64 {
        noise_variance(self.snr_db)
    }

    /// Passes one frame through the channel in place and reports what was applied.
    pub fn apply(&mut self, symbols: &mut [f32]) -> Result<ChannelState> {
        check_frame(symbols)?;

        let h = match self.fading {
            Fading::Awgn => (1.0f64, 0.0f64),
            Fading::RayleighBlock => {
                let s = std::f64::consts::FRAC_1_SQRT_2;
                let re: f64 = StandardNormal.sample(&mut self.rng);
                let im: f64 = StandardNormal.sample(&mut self.rng);
                (re * s, im * s)
            }
        };

        let sigma = (self.noise_variance() / 2.0).sqrt();
        for pair in symbols.chunks_exact_mut(2) {
            let (xr, xi) = (f64::from(pair[0]), f64::from(pair[1]));
            let nr: f64 = StandardNormal.sample(&mut self.rng);
            let ni: f64 = StandardNormal.sample(&mut self.rng);
            pair[0] = (h.0 * xr - h.1 * xi + sigma * nr) as f32;
            pair[1] = (h.0 * xi + h.1 * xr + sigma * ni) as f32;
        }

        Ok(ChannelState {
            snr_db: self.snr_db,
            fading: self.fading,
            h: (h.0 as f32, h.1 as f32),
        })
    }
}

/// Complex noise variance `s2 = 10^(-snr_db/10)` for unit symbol energy.
pub fn noise_variance(snr_db: f32) -> f64 {
    10f64.powf(-f64::from(snr_db) / 10.0)
}

/// Coherent zero-forcing equalisation `y / h` in place.
///
/// Returns the effective SNR in dB, `snr_db + 10 log10 |h|^2`, which is what the JSCC
/// decoder is given. For `h = (1, 0)` the frame is untouched and `snr_db` is returned.
/// Errors when `h` is zero or not finite, or the frame is malformed.
pub fn equalise(received: &mut [f32], h: (f32, f32), snr_db: f32) -> Result<f32> {
    check_frame(received)?;
    if !snr_db.is_finite() {
        return Err(Error::invalid(format!("SNR {snr_db} dB is not finite")));
    }
    let (hr, hi) = (f64::from(h.0), f64::from(h.1));
    let gain = hr * hr + hi * hi;
    if !(gain.is_finite() && gain > 0.0) {
        return Err(Error::invalid(format!(
            "fading coefficient h = ({}, {}) cannot be equalised",
            h.0, h.1
        )));
    }
    if h == (1.0, 0.0) {
        return Ok(snr_db);
    }
    for pair in received.chunks_exact_mut(2) {
        let (yr, yi) = (f64::from(pair[0]), f64::from(pair[1]));
        // y * conj(h) / |h|^2
        pair[0] = ((yr * hr + yi * hi) / gain) as f32;
        pair[1] = ((yi * hr - yr * hi) / gain) as f32;
    }
    Ok((f64::from(snr_db) + 10.0 * gain.log10()) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{mean_energy, normalise_power};

    /// A power-normalised frame of 2k reals with varied amplitudes.
    fn frame(k: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x: Vec<f32> = (0..2 * k)
            .map(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                v as f32
            })
            .collect();
        normalise_power(&mut x).unwrap();
        x
    }

    #[test]
    fn awgn_measured_snr_matches_setting() {
        let k = 1_000_000;
        for snr in [-15.0f32, -5.0, 0.0, 7.5, 20.0] {
            let x = frame(k, 1);
            let mut y = x.clone();
            let mut ch = ChannelModel::new(snr, Fading::Awgn, 42).unwrap();
            let state = ch.apply(&mut y).unwrap();
            assert_eq!(state.h, (1.0, 0.0));

            let signal = mean_energy(&x);
            let noise: Vec<f32> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
            let noise_power = mean_energy(&noise);
            let measured = 10.0 * (signal / noise_power).log10();
            assert!(
                (measured - f64::from(snr)).abs() < 0.05,
                "set {snr} dB, measured {measured:.4} dB"
            );

            // Noise is split equally between real and imaginary parts (s2/2 each).
            let re: f64 = noise.iter().step_by(2).map(|&v| f64::from(v).powi(2)).sum();
            let im: f64 = noise
                .iter()
                .skip(1)
                .step_by(2)
                .map(|&v| f64::from(v).powi(2))
                .sum();
            let ratio = re / im;
            assert!(
                (ratio - 1.0).abs() < 0.01,
                "re/im noise power ratio {ratio}"
            );
        }
    }

    #[test]
    fn frame_power_is_one() {
        for k in [1usize, 8, 16, 384] {
            let x = frame(k, k as u64);
            let e = mean_energy(&x);
            assert!(
                (e - 1.0).abs() < 4.0 * f64::from(f32::EPSILON),
                "k={k}: {e}"
            );
        }
    }

    #[test]
    fn rayleigh_statistics() {
        let frames = 200_000;
        let mut ch = ChannelModel::new(100.0, Fading::RayleighBlock, 7).unwrap();
        let mut sum_h2 = 0.0f64;
        let mut sum_abs = 0.0f64;
        let mut sum_re = 0.0f64;
        for _ in 0..frames {
            let mut y = vec![1.0f32, 0.0];
            let s = ch.apply(&mut y).unwrap();
            let (hr, hi) = (f64::from(s.h.0), f64::from(s.h.1));
            // With 100 dB SNR the output is h * 1 plus negligible noise.
            assert!((f64::from(y[0]) - hr).abs() < 1e-3 && (f64::from(y[1]) - hi).abs() < 1e-3);
            sum_h2 += hr * hr + hi * hi;
            sum_abs += (hr * hr + hi * hi).sqrt();
            sum_re += hr;
        }
        let n = frames as f64;
        let e_h2 = sum_h2 / n;
        let e_abs = sum_abs / n;
        assert!((e_h2 - 1.0).abs() < 0.02, "E|h|^2 = {e_h2}");
        let expected = std::f64::consts::PI.sqrt() / 2.0;
        assert!(
            (e_abs - expected).abs() < 0.01,
            "E|h| = {e_abs}, expected {expected}"
        );
        assert!((sum_re / n).abs() < 0.01, "E[Re h] = {}", sum_re / n);
    }

    #[test]
    fn rayleigh_h_is_constant_within_a_frame_and_equalises() {
        let x = frame(64, 3);
        let mut y = x.clone();
        let mut ch = ChannelModel::new(100.0, Fading::RayleighBlock, 11).unwrap();
        let s = ch.apply(&mut y).unwrap();
        let eff = equalise(&mut y, s.h, s.snr_db).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        let gain = f64::from(s.h.0).powi(2) + f64::from(s.h.1).powi(2);
        assert!((f64::from(eff) - (100.0 + 10.0 * gain.log10())).abs() < 1e-3);
    }

    #[test]
    fn deterministic_for_a_seed() {
        for fading in [Fading::Awgn, Fading::RayleighBlock] {
            let x = frame(256, 5);
            let run = |seed| {
                let mut ch = ChannelModel::new(3.0, fading, seed).unwrap();
                let mut out = Vec::new();
                for _ in 0..3 {
                    let mut y = x.clone();
                    let s = ch.apply(&mut y).unwrap();
                    out.push((y, s.h));
                }
                out
            };
            assert_eq!(run(9), run(9));
            assert_ne!(run(9), run(10));
        }
    }

    #[test]
    fn reseed_restarts_the_sequence() {
        let x = frame(16, 5);
        let mut ch = ChannelModel::new(0.0, Fading::Awgn, 1).unwrap();
        let mut a = x.clone();
        ch.apply(&mut a).unwrap();
        ch.reseed(1);
        let mut b = x.clone();
        ch.apply(&mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(ChannelModel::new(f32::NAN, Fading::Awgn, 0).is_err());
        assert!(ChannelModel::new(1000.0, Fading::Awgn, 0).is_err());
        let mut ch = ChannelModel::new(0.0, Fading::Awgn, 0).unwrap();
        assert!(ch.apply(&mut [1.0, 2.0, 3.0]).is_err());
        assert!(ch.apply(&mut []).is_err());
        assert!(equalise(&mut [1.0, 0.0], (0.0, 0.0), 0.0).is_err());
        assert!(equalise(&mut [1.0, 0.0], (f32::NAN, 0.0), 0.0).is_err());
        assert!("fog".parse::<Fading>().is_err());
        assert_eq!(
            "rayleigh-block".parse::<Fading>().unwrap(),
            Fading::RayleighBlock
        );
    }
}
