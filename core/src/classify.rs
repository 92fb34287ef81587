//! Zero-shot classification of a received embedding (paper Eq. 5).
//!
//! `p_c = softmax_c(logit_scale * cos(z_hat, t_c))`, computed in f64 and returned as f32.

use crate::error::{Error, Result};

/// Probabilities over the classes whose features are `text` (`[C][D]`).
///
/// Errors when there are no classes, a dimension differs from `z_hat`'s, or a value is not
/// finite.
pub fn probabilities(z_hat: &[f32], text: &[Vec<f32>], logit_scale: f32) -> Result<Vec<f32>> {
    if text.is_empty() {
        return Err(Error::invalid("no class features to classify against"));
    }
    if z_hat.is_empty() || z_hat.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("z_hat is empty or not finite"));
    }
    let zn = norm(z_hat);
    let mut logits = Vec::with_capacity(text.len());
    for (c, t) in text.iter().enumerate() {
        if t.len() != z_hat.len() {
            return Err(Error::invalid(format!(
                "class feature {c} has {} values, z_hat has {}",
                t.len(),
                z_hat.len()
            )));
        }
        let dot: f64 = z_hat
            .iter()
            .zip(t)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let denom = zn * norm(t);
        let cos = if denom > 0.0 { dot / denom } else { 0.0 };
        logits.push(f64::from(logit_scale) * cos);
    }
    if logits.iter().any(|l| !l.is_finite()) {
        return Err(Error::invalid("class features are not finite"));
    }
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    Ok(exp.iter().map(|e| (e / sum) as f32).collect())
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// The `k` most probable labels, most probable first (ties keep label order); `k = 0`
/// means all. Labels and probabilities are paired by position.
pub fn top_k(labels: &[String], probs: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut order: Vec<usize> = (0..labels.len().min(probs.len())).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let k = if k == 0 {
        order.len()
    } else {
        k.min(order.len())
    };
    order[..k]
        .iter()
        .map(|&i| (labels[i].clone(), probs[i]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_scaled_cosines() {
        let z = vec![1.0f32, 0.0];
        let text = vec![vec![1.0f32, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let p = probabilities(&z, &text, 10.0).unwrap();
        let logits = [10.0f64, 0.0, 6.0];
        let s: f64 = logits.iter().map(|l| l.exp()).sum();
        for (pi, l) in p.iter().zip(logits) {
            assert!((f64::from(*pi) - l.exp() / s).abs() < 1e-7);
        }
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn cosine_ignores_scale() {
        let text = vec![vec![2.0f32, 0.0], vec![0.0, 0.5]];
        let a = probabilities(&[3.0, 1.0], &text, 50.0).unwrap();
        let b = probabilities(&[0.3, 0.1], &text, 50.0).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let p = probabilities(&[1.0, 0.0], &[vec![1.0, 0.0], vec![-1.0, 0.0]], 1e4).unwrap();
        assert_eq!(p, vec![1.0, 0.0]);
    }

    #[test]
    fn bad_input() {
        assert!(probabilities(&[1.0], &[], 1.0).is_err());
        assert!(probabilities(&[1.0, 0.0], &[vec![1.0]], 1.0).is_err());
        assert!(probabilities(&[f32::NAN, 0.0], &[vec![1.0, 0.0]], 1.0).is_err());
    }

    #[test]
    fn top_k_orders_and_truncates() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let probs = [0.2f32, 0.5, 0.3];
        let top = top_k(&labels, &probs, 2);
        assert_eq!(top, vec![("b".to_string(), 0.5), ("c".to_string(), 0.3)]);
        assert_eq!(top_k(&labels, &probs, 0).len(), 3);
        assert_eq!(top_k(&labels, &probs, 10).len(), 3);
    }
}
