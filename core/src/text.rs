//! The receiver's text side: class features from labels and prompts.
//!
//! Two kinds of prompt (docs/bundle.md):
//! - templates such as `"a photo of a {}."`: every label is put into every template, the
//!   prompts are tokenised, embedded through the token-embedding table and encoded; the
//!   features of one label are averaged over the templates and re-normalised. They depend
//!   only on (labels, templates) and are cached in a bounded LRU;
//! - the learned TAPL prompt (paper Eq. 6): the text `"X X X X {label}."` (placeholder
//!   repeated n_ctx times) is tokenised with special tokens, and the embeddings of token
//!   positions `context_start .. context_start + n_ctx` are replaced by
//!   `context[i] + meta_net(z_hat)`; these features depend on z_hat and are not cached.
//!
//! Sequences of a batch are padded to the longest one with an attention mask; a prompt
//! longer than `text.max_len` tokens is an error, never silently truncated.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::bundle::{read_f32_file, Bundle, Pooling};
use crate::error::{Error, Result};
use crate::models::{batch_len, check_finite, split_rows};
use crate::prior::PriorCorrection;
use crate::runtime::{resolve_provider, Device, Input, OnnxSession, RuntimeOptions};

/// Most sequences passed to the text encoder in one run.
const ENCODE_CHUNK: usize = 256;

/// Limits on caller-supplied labels and templates, and the size of the feature cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextLimits {
    /// Most labels in one request.
    pub max_labels: usize,
    /// Longest label, in characters (its token count is bounded by `text.max_len`).
    pub max_label_chars: usize,
    /// Most templates in one request.
    pub max_templates: usize,
    /// Longest template, in characters.
    pub max_template_chars: usize,
    /// Entries of the (labels, templates) feature cache.
    pub cache_entries: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_labels: 1000,
            max_label_chars: 200,
            max_templates: 64,
            max_template_chars: 300,
            cache_entries: 64,
        }
    }
}

/// The learned prompt: meta-net and context vectors.
#[derive(Debug)]
struct Tapl {
    /// "z_hat" [N,D] -> "ctx_bias" [N,W].
    meta_net: OnnxSession,
    /// Context vectors, row-major [n_ctx, W].
    context: Vec<f32>,
    /// Number of context vectors.
    n_ctx: usize,
    /// First token position that takes a context vector.
    context_start: usize,
    /// The prompt prefix: the placeholder repeated n_ctx times, space separated.
    prefix: String,
}

/// Cache key: the labels and the templates actually used.
type CacheKey = (Vec<String>, Vec<String>);

/// A tokenised prompt ready for the encoder.
struct Sequence {
    /// Token ids with special tokens.
    ids: Vec<u32>,
    /// For TAPL prompts: the row (index into the batch's bias rows) whose meta-net bias
    /// goes on the context positions.
    tapl_row: Option<usize>,
}

/// Tokenizer, token-embedding table, text encoder and optional TAPL of one bundle.
pub struct TextSide {
    /// Tokenizer with padding and truncation switched off (lengths are checked here).
    tokenizer: Tokenizer,
    /// Token-embedding table, row-major [vocab, width], read once at load.
    table: Vec<f32>,
    /// Rows of `table`.
    vocab: usize,
    /// W.
    width: usize,
    /// Longest accepted token sequence.
    max_len: usize,
    /// Mean or end-of-text pooling (decides whether "eot_index" is passed).
    pooling: Pooling,
    /// Whether the encoder declares an "attention_mask" input.
    takes_mask: bool,
    /// The text encoder.
    encoder: OnnxSession,
    /// D.
    embed_dim: usize,
    /// Template used when the caller gives none and there is no TAPL.
    default_template: String,
    /// The learned prompt, when the bundle has one.
    tapl: Option<Tapl>,
    /// The learned prompt's prior correction (`tapl.prior`), when the bundle has one.
    prior: Option<PriorCorrection>,
    /// Request limits.
    limits: TextLimits,
    /// Template features by (labels, templates); bounded, least recently used evicted.
    cache: Mutex<LruCache<CacheKey, Arc<Vec<Vec<f32>>>>>,
}

impl std::fmt::Debug for TextSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextSide")
            .field("vocab", &self.vocab)
            .field("width", &self.width)
            .field("max_len", &self.max_len)
            .field("pooling", &self.pooling)
            .field("encoder", &self.encoder)
            .field("tapl", &self.tapl.is_some())
            .finish_non_exhaustive()
    }
}

impl TextSide {
    /// Loads the text side of `bundle` on `device` with default limits.
    pub fn load(bundle: &Bundle, device: Device) -> Result<TextSide> {
        Self::load_with(
            bundle,
            &RuntimeOptions::with_device(device),
            TextLimits::default(),
        )
    }

    /// Loads with explicit runtime options and limits.
    pub fn load_with(
        bundle: &Bundle,
        opts: &RuntimeOptions,
        limits: TextLimits,
    ) -> Result<TextSide> {
        let m = &bundle.manifest;
        let t = &m.text;
        let tokenizer = load_tokenizer(&bundle.path(&t.tokenizer))?;
        let table = read_f32_file(&bundle.path(&t.token_embedding), t.vocab_size * t.width)?;

        let provider = resolve_provider(opts.device)?;
        let encoder = OnnxSession::load(&bundle.path(&t.onnx), &t.onnx, provider, opts)?;
        encoder.expect_io(&["token_embeds"], "embedding")?;
        if t.pooling == Pooling::Eot {
            encoder.expect_io(&["eot_index"], "embedding")?;
        }
        let takes_mask = encoder.input_names().iter().any(|n| n == "attention_mask");

        let tapl = match &m.tapl {
            None => None,
            Some(spec) => {
                let meta_net = OnnxSession::load(
                    &bundle.path(&spec.meta_net),
                    &spec.meta_net,
                    provider,
                    opts,
                )?;
                meta_net.expect_io(&["z_hat"], "ctx_bias")?;
                let context = read_f32_file(&bundle.path(&spec.context), spec.n_ctx * t.width)?;
                let prefix = vec![spec.placeholder.as_str(); spec.n_ctx].join(" ");
                Some(Tapl {
                    meta_net,
                    context,
                    n_ctx: spec.n_ctx,
                    context_start: spec.context_start,
                    prefix,
                })
            }
        };

        let cache_entries =
            NonZeroUsize::new(limits.cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        let side = TextSide {
            tokenizer,
            table,
            vocab: t.vocab_size,
            width: t.width,
            max_len: t.max_len,
            pooling: t.pooling,
            takes_mask,
            encoder,
            embed_dim: m.embed_dim,
            default_template: t.default_template.clone(),
            tapl,
            prior: PriorCorrection::load(bundle)?,
            limits,
            cache: Mutex::new(LruCache::new(cache_entries)),
        };

        // The placeholder must tokenise to one token per context vector, at the positions
        // the manifest names; check once with a sample label.
        if let Some(tapl) = &side.tapl {
            let ids = side.tokenize(&format!("{} photo.", tapl.prefix))?;
            let span = tapl.context_start..tapl.context_start + tapl.n_ctx;
            let placeholder_ids = ids.get(span.clone());
            let ok = placeholder_ids.is_some_and(|p| p.windows(2).all(|w| w[0] == w[1]))
                && ids.get(span.end) != ids.get(span.start);
            if !ok {
                return Err(Error::bundle(
                    bundle.path(&t.tokenizer),
                    format!(
                        "tapl: prompt {:?} tokenises to {ids:?}; positions {span:?} are not \
                         the n_ctx placeholder tokens",
                        tapl.prefix
                    ),
                ));
            }
        }
        tracing::info!(
            bundle = %m.id,
            %provider,
            tapl = side.tapl.is_some(),
            prior_correction = side.prior.is_some(),
            "text models loaded"
        );
        Ok(side)
    }

    /// Whether the bundle has a learned (TAPL) prompt.
    pub fn has_tapl(&self) -> bool {
        self.tapl.is_some()
    }

    /// The learned prompt's prior correction, when the bundle has one.
    pub fn prior(&self) -> Option<&PriorCorrection> {
        self.prior.as_ref()
    }

    /// The template used when a caller gives none and there is no TAPL.
    pub fn default_template(&self) -> &str {
        &self.default_template
    }

    /// Dimension D of the text features.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The limits in force.
    pub fn limits(&self) -> &TextLimits {
        &self.limits
    }

    /// Class features `[C][D]` from templates: one L2-normalised vector per label, the
    /// mean over templates of the prompt features, re-normalised. An empty `templates`
    /// means the bundle's default template. Cached by (labels, templates).
    pub fn template_features(
        &self,
        labels: &[String],
        templates: &[String],
    ) -> Result<Arc<Vec<Vec<f32>>>> {
        self.check_labels(labels)?;
        let templates: Vec<String> = if templates.is_empty() {
            vec![self.default_template.clone()]
        } else {
            templates.to_vec()
        };
        self.check_templates(&templates)?;

        let key: CacheKey = (labels.to_vec(), templates);
        if let Some(hit) = self.cache_lock().get(&key) {
            return Ok(Arc::clone(hit));
        }

        let (labels, templates) = (&key.0, &key.1);
        let mut seqs = Vec::with_capacity(labels.len() * templates.len());
        for label in labels {
            for template in templates {
                let prompt = template.replacen("{}", label, 1);
                seqs.push(Sequence {
                    ids: self.tokenize(&prompt)?,
                    tapl_row: None,
                });
            }
        }
        let feats = self.encode_sequences(&seqs, &[])?;

        let t = templates.len();
        let classes: Vec<Vec<f32>> = feats
            .chunks(t)
            .map(|group| {
                let mut mean = vec![0f64; self.embed_dim];
                for f in group {
                    for (m, v) in mean.iter_mut().zip(f) {
                        *m += f64::from(*v);
                    }
                }
                normalise(&mean)
            })
            .collect();
        let classes = Arc::new(classes);
        self.cache_lock().put(key, Arc::clone(&classes));
        Ok(classes)
    }

    /// Class features `[C][D]` from the learned prompt for one received embedding z_hat.
    /// Errors when the bundle has no TAPL.
    pub fn learned_features(&self, z_hat: &[f32], labels: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .learned_features_batch(z_hat, labels)?
            .pop()
            .unwrap_or_default())
    }

    /// Learned-prompt features for N embeddings `z_hats` (`[N, D]` back to back):
    /// returns `[N][C][D]`. One meta-net run for the batch, encoder runs in chunks.
    pub fn learned_features_batch(
        &self,
        z_hats: &[f32],
        labels: &[String],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let tapl = self.tapl.as_ref().ok_or_else(|| {
            Error::invalid("this bundle has no learned prompt (TAPL); give templates instead")
        })?;
        self.check_labels(labels)?;
        let n = batch_len(z_hats.len(), self.embed_dim, "z_hat")?;
        check_finite(z_hats, "z_hat")?;

        let (shape, bias) = tapl.meta_net.run_f32(
            &[Input::F32("z_hat", vec![n, self.embed_dim], z_hats)],
            "ctx_bias",
        )?;
        let bias = split_rows(&tapl.meta_net, &shape, bias, n, self.width)?;

        let label_ids = labels
            .iter()
            .map(|label| self.tokenize(&format!("{} {label}.", tapl.prefix)))
            .collect::<Result<Vec<_>>>()?;
        let mut seqs = Vec::with_capacity(n * labels.len());
        for row in 0..n {
            for ids in &label_ids {
                seqs.push(Sequence {
                    ids: ids.clone(),
                    tapl_row: Some(row),
                });
            }
        }
        let feats = self.encode_sequences(&seqs, &bias)?;
        Ok(feats
            .chunks(labels.len())
            .map(<[Vec<f32>]>::to_vec)
            .collect())
    }

    /// Token ids (special tokens included) of `text`; errors beyond `max_len` tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenise {text:?}: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            return Err(Error::invalid(format!(
                "prompt {text:?} is {} tokens, more than the bundle's text.max_len ({})",
                ids.len(),
                self.max_len
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} of {text:?} is outside the token-embedding table ({} rows)",
                self.vocab
            )));
        }
        Ok(ids)
    }

    /// Runs the encoder over `seqs` in chunks; `bias` holds the meta-net rows that TAPL
    /// sequences refer to.
    fn encode_sequences(&self, seqs: &[Sequence], bias: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(ENCODE_CHUNK) {
            out.extend(self.encode_chunk(chunk, bias)?);
        }
        Ok(out)
    }

    fn encode_chunk(&self, seqs: &[Sequence], bias: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let n = seqs.len();
        let len = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let w = self.width;
        // Padding positions take row 0 of the table (the pad token of BERT and CLIP
        // vocabularies); the attention mask hides them.
        let mut embeds = vec![0f32; n * len * w];
        let mut mask = vec![0i64; n * len];
        let mut eot = vec![0i64; n];
        for (i, seq) in seqs.iter().enumerate() {
            for pos in 0..len {
                let id = seq.ids.get(pos).copied().unwrap_or(0) as usize;
                let dst = &mut embeds[(i * len + pos) * w..(i * len + pos + 1) * w];
                dst.copy_from_slice(&self.table[id * w..(id + 1) * w]);
                if pos < seq.ids.len() {
                    mask[i * len + pos] = 1;
                }
            }
            if let (Some(row), Some(tapl)) = (seq.tapl_row, self.tapl.as_ref()) {
                let b = bias
                    .get(row)
                    .ok_or_else(|| Error::invalid("missing meta-net row"))?;
                for c in 0..tapl.n_ctx {
                    let pos = tapl.context_start + c;
                    let dst = &mut embeds[(i * len + pos) * w..(i * len + pos + 1) * w];
                    let ctx = &tapl.context[c * w..(c + 1) * w];
                    for ((d, x), y) in dst.iter_mut().zip(ctx).zip(b) {
                        *d = x + y;
                    }
                }
            }
            eot[i] = eot_index(&seq.ids) as i64;
        }

        let mut inputs = vec![Input::F32("token_embeds", vec![n, len, w], &embeds)];
        if self.takes_mask {
            inputs.push(Input::I64("attention_mask", vec![n, len], &mask));
        }
        if self.pooling == Pooling::Eot {
            inputs.push(Input::I64("eot_index", vec![n], &eot));
        }
        let (shape, out) = self.encoder.run_f32(&inputs, "embedding")?;
        split_rows(&self.encoder, &shape, out, n, self.embed_dim)
    }

    fn check_labels(&self, labels: &[String]) -> Result<()> {
        if labels.is_empty() {
            return Err(Error::invalid("no labels given"));
        }
        if labels.len() > self.limits.max_labels {
            return Err(Error::invalid(format!(
                "{} labels, more than the limit max_labels = {}",
                labels.len(),
                self.limits.max_labels
            )));
        }
        for label in labels {
            if label.trim().is_empty() {
                return Err(Error::invalid("a label is empty"));
            }
            let chars = label.chars().count();
            if chars > self.limits.max_label_chars {
                return Err(Error::invalid(format!(
                    "label of {chars} characters, more than the limit max_label_chars = {}",
                    self.limits.max_label_chars
                )));
            }
        }
        Ok(())
    }

    fn check_templates(&self, templates: &[String]) -> Result<()> {
        if templates.len() > self.limits.max_templates {
            return Err(Error::invalid(format!(
                "{} templates, more than the limit max_templates = {}",
                templates.len(),
                self.limits.max_templates
            )));
        }
        for t in templates {
            if t.matches("{}").count() != 1 {
                return Err(Error::invalid(format!(
                    "template {t:?} must contain exactly one \"{{}}\" for the label"
                )));
            }
            let chars = t.chars().count();
            if chars > self.limits.max_template_chars {
                return Err(Error::invalid(format!(
                    "template of {chars} characters, more than the limit max_template_chars = {}",
                    self.limits.max_template_chars
                )));
            }
        }
        Ok(())
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, LruCache<CacheKey, Arc<Vec<Vec<f32>>>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Loads a tokenizer.json with padding and truncation switched off.
pub fn load_tokenizer(path: &std::path::Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| Error::bundle(path, format!("cannot load tokenizer: {e}")))?;
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::bundle(path, format!("cannot configure tokenizer: {e}")))?;
    Ok(tok)
}

/// End-of-text position for "eot" pooling: the first position of the largest token id
/// (CLIP's end-of-text token has the largest id of its vocabulary); 0 for no tokens.
fn eot_index(ids: &[u32]) -> usize {
    let mut best = 0usize;
    for (pos, id) in ids.iter().enumerate() {
        if *id > ids[best] {
            best = pos;
        }
    }
    best
}

/// L2-normalised f32 copy of `v` (zero stays zero).
fn normalise(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let s = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|x| (x * s) as f32).collect()
}

// The receiver shares one `TextSide` between tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TextSide>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The MiniLM tokenizer.json, found through SEMCLIP_TEST_TOKENIZER or the fixture.
    fn minilm_tokenizer() -> Tokenizer {
        let path = crate::testing::tokenizer_path();
        load_tokenizer(&path).unwrap()
    }

    #[test]
    fn wordpiece_tokenises_prompts() {
        let tok = minilm_tokenizer();
        let enc = tok.encode("a photo of a cat.", true).unwrap();
        // [CLS] a photo of a cat . [SEP]
        assert_eq!(enc.get_ids().len(), 8);
        assert_eq!(enc.get_ids()[0], tok.token_to_id("[CLS]").unwrap());
        assert_eq!(
            *enc.get_ids().last().unwrap(),
            tok.token_to_id("[SEP]").unwrap()
        );
        assert_eq!(enc.get_ids()[5], tok.token_to_id("cat").unwrap());
        // The placeholder prompt: positions 1..5 are the same token.
        let enc = tok.encode("X X X X airplane.", true).unwrap();
        let ids = enc.get_ids();
        assert!(ids[1..5].iter().all(|&i| i == ids[1]));
        assert_eq!(ids[1], tok.token_to_id("x").unwrap());
        assert_ne!(ids[5], ids[1]);
    }

    #[test]
    fn padding_and_truncation_are_off() {
        let tok = minilm_tokenizer();
        let long = "word ".repeat(600);
        let enc = tok.encode(long.as_str(), true).unwrap();
        assert_eq!(enc.get_ids().len(), 602);
        let short = tok.encode("cat", true).unwrap();
        assert_eq!(short.get_ids().len(), 3);
    }

    #[test]
    fn eot_is_the_first_largest_id() {
        // CLIP: <start> a photo <end> <pad>...
        assert_eq!(eot_index(&[49406, 320, 1125, 49407, 0, 0]), 3);
        assert_eq!(eot_index(&[5, 9, 9, 1]), 1);
        assert_eq!(eot_index(&[]), 0);
    }

    #[test]
    fn normalise_gives_unit_norm() {
        let v = normalise(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        assert_eq!(normalise(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
