//! Model bundles: the manifest (docs/bundle.md, format version 1) and its validation.
//!
//! [`Bundle::load`] parses `manifest.json`, refuses unknown format versions, checks that
//! every referenced part exists and has a plain file name inside the bundle, verifies the
//! sha256 checksums of the files listed in `"files"`, and checks the shapes that can be
//! checked without running a model (sizes of the `.f32` tables, preprocessing values,
//! JSCC entries, TAPL positions). Errors name the file and the manifest field.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::preprocess::Preprocess;

/// The manifest format version this crate reads.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a bundle directory.
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json` of a bundle (docs/bundle.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of this manifest; only [`FORMAT_VERSION`] is accepted.
    pub format_version: u32,
    /// Bundle identifier; frames carry it and receivers refuse frames of other bundles.
    pub id: String,
    /// Bundle version, carried in frames beside `id`.
    pub version: String,
    /// True when the weights are untrained (architecture only, for tests).
    #[serde(default)]
    pub random_init: bool,
    /// Dimension D of the embeddings z and z_hat.
    pub embed_dim: usize,
    /// Eq. 5: probabilities are softmax(logit_scale * cos(z_hat, t_c)).
    pub logit_scale: f32,
    /// The image tower.
    pub image: ImageSpec,
    /// The text tower.
    pub text: TextSpec,
    /// One JSCC encoder/decoder pair per k (complex channel uses per image).
    pub jscc: Vec<JsccSpec>,
    /// The k used when a caller does not choose one.
    pub default_k: u32,
    /// The prompt learner (TAPL); absent when the bundle has none.
    #[serde(default)]
    pub tapl: Option<TaplSpec>,
    /// Base/new class split used for training and evaluation.
    #[serde(default)]
    pub split: Option<Split>,
    /// Where the bundle came from (data, commands, library versions, figures).
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// sha256 (lower-case hex) of the bundle's parts, by file name.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// `image` section: the image encoder and its preprocessing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSpec {
    /// ONNX file: input "pixels" [N,3,S,S] f32 -> output "embedding" [N,D].
    pub onnx: String,
    /// How image files become the encoder's input tensor.
    pub preprocess: Preprocess,
}

/// How the text encoder pools its token features into one text feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Masked mean over the sequence (sentence encoders such as MiniLM).
    Mean,
    /// The feature at the end-of-text token, found as the largest token id (CLIP); the
    /// encoder then takes an extra input "eot_index" [N] i64.
    Eot,
}

/// `text` section: the text encoder, tokenizer and token-embedding table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextSpec {
    /// ONNX file: "token_embeds" [N,L,W] f32, "attention_mask" [N,L] i64 (+ "eot_index"
    /// [N] i64 with eot pooling) -> "embedding" [N,D].
    pub onnx: String,
    /// Hugging Face `tokenizers` JSON file.
    pub tokenizer: String,
    /// Little-endian f32 table, row-major [vocab_size, width].
    pub token_embedding: String,
    /// Rows of the token-embedding table.
    pub vocab_size: usize,
    /// W, the token-embedding width.
    pub width: usize,
    /// Longest token sequence accepted, special tokens included.
    pub max_len: usize,
    /// How token features are pooled.
    pub pooling: Pooling,
    /// Template used when the caller gives none and there is no TAPL; one "{}".
    pub default_template: String,
}

/// One entry of the `jscc` list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsccSpec {
    /// Complex channel uses per image.
    pub k: u32,
    /// ONNX file: "z" [N,D], "snr_db" [N,1] -> "symbols" [N,2k] (not power-normalised).
    pub encoder: String,
    /// ONNX file: "symbols" [N,2k], "snr_db" [N,1] -> "z_hat" [N,D].
    pub decoder: String,
    /// SNR range (dB) the pair was trained on, informational.
    #[serde(default)]
    pub snr_train_range_db: Option<[f32; 2]>,
}

/// `tapl` section: meta-net and context vectors (paper Eq. 6).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaplSpec {
    /// ONNX file: "z_hat" [N,D] -> "ctx_bias" [N,W].
    pub meta_net: String,
    /// Little-endian f32 [n_ctx, W]: the learned context vectors.
    pub context: String,
    /// Number of context vectors.
    pub n_ctx: usize,
    /// Word repeated n_ctx times in the prompt text where the context vectors go.
    pub placeholder: String,
    /// Token position of the first context vector (after the start token).
    pub context_start: usize,
    /// SNR-aware correction of z_hat before it is scored against the learned prompt;
    /// absent: none.
    #[serde(default)]
    pub prior: Option<PriorSpec>,
}

/// `tapl.prior` section: see [`crate::prior`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriorSpec {
    /// Little-endian f32 [D]: the unit prior direction u.
    pub direction: String,
    /// SNRs (dB, increasing) at which the strengths are given.
    pub grid_db: Vec<f32>,
    /// Strength beta in [0, 1] at each grid SNR, by k (a decimal string).
    pub beta: BTreeMap<String, Vec<f32>>,
}

/// `split` section: the documented base/new class split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Split {
    /// Seed of the class shuffle.
    #[serde(default)]
    pub seed: u64,
    /// Classes used for training the JSCC and TAPL.
    #[serde(default)]
    pub base_classes: Vec<String>,
    /// Classes held out for zero-shot evaluation.
    #[serde(default)]
    pub new_classes: Vec<String>,
}

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory; part file names in the manifest are relative to it.
    pub dir: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

/// Whether [`Bundle::load_with`] verifies the sha256 checksums of the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Hash every file listed in `"files"` and compare (what [`Bundle::load`] does).
    Checksums,
    /// Only check presence and sizes (faster start for large bundles already verified).
    PresenceOnly,
}

impl Bundle {
    /// Loads and validates the bundle in `dir`, verifying checksums.
    pub fn load(dir: &Path) -> Result<Bundle> {
        Self::load_with(dir, Verify::Checksums)
    }

    /// Loads and validates the bundle in `dir`; `verify` chooses whether checksums are
    /// computed.
    pub fn load_with(dir: &Path, verify: Verify) -> Result<Bundle> {
        let manifest_path = dir.join(MANIFEST);
        if !dir.is_dir() {
            return Err(Error::bundle(dir, "bundle directory does not exist"));
        }
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| Error::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest = Manifest::from_json(&text).map_err(|m| Error::bundle(&manifest_path, m))?;

        let bundle = Bundle {
            dir: dir.to_path_buf(),
            manifest,
        };
        bundle.validate(verify)?;
        tracing::debug!(
            bundle = %bundle.manifest.id,
            version = %bundle.manifest.version,
            dir = %dir.display(),
            "bundle loaded"
        );
        Ok(bundle)
    }

    /// Absolute (or `dir`-relative) path of a part named in the manifest.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The JSCC entry for `k`, if the bundle has one.
    pub fn jscc(&self, k: u32) -> Option<&JsccSpec> {
        self.manifest.jscc.iter().find(|j| j.k == k)
    }

    /// Every part file named by the manifest, with the field that names it.
    pub fn referenced_files(&self) -> Vec<(String, &str)> {
        let m = &self.manifest;
        let mut out = vec![
            ("image.onnx".to_string(), m.image.onnx.as_str()),
            ("text.onnx".to_string(), m.text.onnx.as_str()),
            ("text.tokenizer".to_string(), m.text.tokenizer.as_str()),
            (
                "text.token_embedding".to_string(),
                m.text.token_embedding.as_str(),
            ),
        ];
        for (i, j) in m.jscc.iter().enumerate() {
            out.push((format!("jscc[{i}].encoder"), j.encoder.as_str()));
            out.push((format!("jscc[{i}].decoder"), j.decoder.as_str()));
        }
        if let Some(t) = &m.tapl {
            out.push(("tapl.meta_net".to_string(), t.meta_net.as_str()));
            out.push(("tapl.context".to_string(), t.context.as_str()));
            if let Some(p) = &t.prior {
                out.push(("tapl.prior.direction".to_string(), p.direction.as_str()));
            }
        }
        out
    }

    fn validate(&self, verify: Verify) -> Result<()> {
        let manifest_path = self.dir.join(MANIFEST);
        self.manifest
            .check_values()
            .map_err(|m| Error::bundle(&manifest_path, m))?;

        // Every referenced part: a plain name inside the bundle, present on disk.
        for (field, name) in self.referenced_files() {
            check_file_name(name)
                .map_err(|m| Error::bundle(&manifest_path, format!("{field}: {m}")))?;
            let path = self.path(name);
            if !path.is_file() {
                return Err(Error::bundle(
                    &path,
                    format!(
                        "file named by manifest field {field} is missing (for parts that are \
                         regenerated rather than committed, run scripts/setup-python.sh)"
                    ),
                ));
            }
            if !self.manifest.files.contains_key(name) {
                tracing::warn!(
                    file = name,
                    field = %field,
                    "bundle part has no checksum in the manifest's \"files\" table"
                );
            }
        }

        // Sizes of the raw f32 tables.
        let m = &self.manifest;
        let rows_cols = [(
            "text.token_embedding",
            m.text.token_embedding.as_str(),
            m.text.vocab_size,
            m.text.width,
        )];
        let tapl = m
            .tapl
            .as_ref()
            .map(|t| ("tapl.context", t.context.as_str(), t.n_ctx, m.text.width));
        let prior = m
            .tapl
            .as_ref()
            .and_then(|t| t.prior.as_ref())
            .map(|p| ("tapl.prior.direction", p.direction.as_str(), 1, m.embed_dim));
        for (field, name, rows, cols) in rows_cols.into_iter().chain(tapl).chain(prior) {
            let path = self.path(name);
            let len = std::fs::metadata(&path)
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?
                .len();
            let expected = (rows as u64) * (cols as u64) * 4;
            if len != expected {
                return Err(Error::bundle(
                    &path,
                    format!(
                        "{field}: {len} bytes, expected {rows} x {cols} f32 = {expected} bytes"
                    ),
                ));
            }
        }

        // Checksums of everything listed.
        for (name, expected) in &m.files {
            check_file_name(name)
                .map_err(|msg| Error::bundle(&manifest_path, format!("files.{name}: {msg}")))?;
            let path = self.path(name);
            if !path.is_file() {
                return Err(Error::bundle(
                    &path,
                    format!("listed in manifest field files.{name} but missing"),
                ));
            }
            if verify == Verify::Checksums {
                let actual = sha256_file(&path)?;
                if !actual.eq_ignore_ascii_case(expected) {
                    return Err(Error::bundle(
                        &path,
                        format!(
                            "sha256 {actual} does not match manifest field files.{name} = \
                             {expected} (rebuild the part or rewrite the manifest)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// Parses manifest JSON; the error names the field (as a path like `text.max_len`).
    pub fn from_json(text: &str) -> std::result::Result<Manifest, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        match value.get("format_version") {
            Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
            Some(v) => {
                return Err(format!(
                    "format_version {v} is not supported (this build reads {FORMAT_VERSION})"
                ))
            }
            None => return Err("missing field format_version".to_string()),
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            format!("field {path}: {}", e.into_inner())
        })
    }

    /// Checks values that serde cannot: ranges, consistency between sections.
    fn check_values(&self) -> std::result::Result<(), String> {
        if self.id.is_empty() {
            return Err("id: must not be empty".into());
        }
        if self.embed_dim == 0 {
            return Err("embed_dim: must be positive".into());
        }
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            return Err(format!(
                "logit_scale: must be positive and finite, got {}",
                self.logit_scale
            ));
        }
        self.image
            .preprocess
            .check()
            .map_err(|m| format!("image.preprocess.{m}"))?;

        let t = &self.text;
        if t.vocab_size == 0 || t.width == 0 || t.max_len < 2 {
            return Err(format!(
                "text: vocab_size ({}), width ({}) must be positive and max_len ({}) >= 2",
                t.vocab_size, t.width, t.max_len
            ));
        }
        if t.default_template.matches("{}").count() != 1 {
            return Err(format!(
                "text.default_template: must contain exactly one \"{{}}\", got {:?}",
                t.default_template
            ));
        }

        if self.jscc.is_empty() {
            return Err("jscc: at least one entry is required".into());
        }
        let mut ks: Vec<u32> = self.jscc.iter().map(|j| j.k).collect();
        if ks.contains(&0) {
            return Err("jscc: k must be positive".into());
        }
        ks.sort_unstable();
        if ks.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("jscc: duplicate k in {ks:?}"));
        }
        if !ks.contains(&self.default_k) {
            return Err(format!(
                "default_k: {} is not among the jscc entries {ks:?}",
                self.default_k
            ));
        }

        if let Some(tapl) = &self.tapl {
            if tapl.n_ctx == 0 {
                return Err("tapl.n_ctx: must be positive".into());
            }
            if tapl.placeholder.trim().is_empty() || tapl.placeholder.contains(char::is_whitespace)
            {
                return Err(format!(
                    "tapl.placeholder: must be one word, got {:?}",
                    tapl.placeholder
                ));
            }
            if tapl.context_start + tapl.n_ctx >= t.max_len {
                return Err(format!(
                    "tapl: context_start ({}) + n_ctx ({}) leaves no room in text.max_len ({})",
                    tapl.context_start, tapl.n_ctx, t.max_len
                ));
            }
            if let Some(prior) = &tapl.prior {
                let grid = &prior.grid_db;
                if grid.is_empty()
                    || grid.iter().any(|g| !g.is_finite())
                    || grid.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(format!(
                        "tapl.prior.grid_db: must be finite, increasing SNRs, got {grid:?}"
                    ));
                }
                for (key, table) in &prior.beta {
                    let k = crate::prior::parse_k(key)?;
                    if !ks.contains(&k) {
                        return Err(format!(
                            "tapl.prior.beta: k = {k} is not among the jscc entries {ks:?}"
                        ));
                    }
                    if table.len() != grid.len() {
                        return Err(format!(
                            "tapl.prior.beta.{key}: {} values, tapl.prior.grid_db has {}",
                            table.len(),
                            grid.len()
                        ));
                    }
                    if let Some(b) = table.iter().find(|b| !(0.0..=1.0).contains(*b)) {
                        return Err(format!("tapl.prior.beta.{key}: {b} is outside [0, 1]"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A part's name must be a plain relative path inside the bundle (no `..`, not absolute).
fn check_file_name(name: &str) -> std::result::Result<(), String> {
    let p = Path::new(name);
    let plain = !name.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a relative file name inside the bundle"
        ))
    }
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads a little-endian f32 file of exactly `len` values.
pub(crate) fn read_f32_file(path: &Path, len: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() != len * 4 {
        return Err(Error::bundle(
            path,
            format!(
                "{} bytes, expected {len} f32 = {} bytes",
                bytes.len(),
                len * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A bundle directory with placeholder parts (the loader does not parse ONNX files).
    fn fake_bundle() -> (tempfile::TempDir, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let unit: Vec<u8> = [1.0f32, 0.0, 0.0, 0.0, 0.0, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let parts: [(&str, Vec<u8>); 9] = [
            ("image_encoder.onnx", b"image".to_vec()),
            ("text_encoder.onnx", b"text".to_vec()),
            ("tokenizer.json", b"{}".to_vec()),
            ("token_embedding.f32", vec![0u8; 10 * 4 * 4]),
            ("jscc_k8_encoder.onnx", b"enc".to_vec()),
            ("jscc_k8_decoder.onnx", b"dec".to_vec()),
            ("tapl_meta_net.onnx", b"meta".to_vec()),
            ("tapl_context.f32", vec![1u8; 2 * 4 * 4]),
            ("tapl_prior.f32", unit),
        ];
        let mut files = serde_json::Map::new();
        for (name, bytes) in &parts {
            std::fs::write(dir.path().join(name), bytes).unwrap();
            files.insert(name.to_string(), json!(hex::encode(Sha256::digest(bytes))));
        }
        let manifest = json!({
            "format_version": 1,
            "id": "fake",
            "version": "0.0.1",
            "random_init": true,
            "embed_dim": 6,
            "logit_scale": 50.0,
            "image": {"onnx": "image_encoder.onnx", "preprocess": {
                "resize": 32, "interpolation": "bilinear", "crop": 32,
                "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
            "text": {"onnx": "text_encoder.onnx", "tokenizer": "tokenizer.json",
                "token_embedding": "token_embedding.f32", "vocab_size": 10, "width": 4,
                "max_len": 16, "pooling": "mean", "default_template": "a photo of a {}."},
            "jscc": [{"k": 8, "encoder": "jscc_k8_encoder.onnx",
                "decoder": "jscc_k8_decoder.onnx", "snr_train_range_db": [-15.0, 20.0]}],
            "default_k": 8,
            "tapl": {"meta_net": "tapl_meta_net.onnx", "context": "tapl_context.f32",
                "n_ctx": 2, "placeholder": "X", "context_start": 1,
                "prior": {"direction": "tapl_prior.f32", "grid_db": [-10.0, 10.0],
                    "beta": {"8": [1.0, 0.0]}}},
            "split": {"seed": 0, "base_classes": ["a"], "new_classes": ["b"]},
            "provenance": {},
            "files": files,
        });
        (dir, manifest)
    }

    fn write(dir: &Path, manifest: &serde_json::Value) {
        std::fs::write(
            dir.join(MANIFEST),
            serde_json::to_string_pretty(manifest).unwrap(),
        )
        .unwrap();
    }

    fn load_err(dir: &Path, manifest: &serde_json::Value) -> String {
        write(dir, manifest);
        Bundle::load(dir).unwrap_err().to_string()
    }

    #[test]
    fn valid_bundle_loads() {
        let (dir, m) = fake_bundle();
        write(dir.path(), &m);
        let b = Bundle::load(dir.path()).unwrap();
        assert_eq!(b.manifest.id, "fake");
        assert_eq!(b.manifest.text.pooling, Pooling::Mean);
        assert_eq!(b.jscc(8).unwrap().decoder, "jscc_k8_decoder.onnx");
        assert!(b.jscc(4).is_none());
        assert_eq!(b.manifest.tapl.as_ref().unwrap().n_ctx, 2);
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let (dir, mut m) = fake_bundle();
        m["format_version"] = json!(2);
        let e = load_err(dir.path(), &m);
        assert!(
            e.contains("format_version 2") && e.contains("manifest.json"),
            "{e}"
        );
        m.as_object_mut().unwrap().remove("format_version");
        assert!(load_err(dir.path(), &m).contains("format_version"));
    }

    #[test]
    fn missing_or_mistyped_field_is_named() {
        let (dir, mut m) = fake_bundle();
        m["text"].as_object_mut().unwrap().remove("max_len");
        let e = load_err(dir.path(), &m);
        assert!(e.contains("text") && e.contains("max_len"), "{e}");

        let (dir, mut m) = fake_bundle();
        m["image"]["preprocess"]["interpolation"] = json!("nearest");
        let e = load_err(dir.path(), &m);
        assert!(e.contains("image.preprocess.interpolation"), "{e}");
    }

    #[test]
    fn checksum_mismatch_names_the_file() {
        let (dir, m) = fake_bundle();
        std::fs::write(dir.path().join("jscc_k8_decoder.onnx"), b"tampered").unwrap();
        let e = load_err(dir.path(), &m);
        assert!(
            e.contains("jscc_k8_decoder.onnx") && e.contains("sha256"),
            "{e}"
        );
        // Presence-only loading skips the hash.
        assert!(Bundle::load_with(dir.path(), Verify::PresenceOnly).is_ok());
    }

    #[test]
    fn missing_part_names_the_field() {
        let (dir, m) = fake_bundle();
        std::fs::remove_file(dir.path().join("tapl_meta_net.onnx")).unwrap();
        let e = load_err(dir.path(), &m);
        assert!(
            e.contains("tapl.meta_net") && e.contains("tapl_meta_net.onnx"),
            "{e}"
        );
    }

    #[test]
    fn table_size_is_checked() {
        let (dir, mut m) = fake_bundle();
        m["text"]["vocab_size"] = json!(11);
        let e = load_err(dir.path(), &m);
        assert!(
            e.contains("text.token_embedding") && e.contains("11 x 4"),
            "{e}"
        );
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("/default_k", json!(4), "default_k"),
            ("/image/preprocess/crop", json!(64), "crop"),
            ("/image/preprocess/std", json!([0.2, 0.0, 0.2]), "std"),
            ("/logit_scale", json!(-1.0), "logit_scale"),
            (
                "/text/default_template",
                json!("a photo"),
                "default_template",
            ),
            ("/tapl/context_start", json!(15), "tapl"),
            ("/tapl/prior/beta/8", json!([0.0, 1.5]), "outside [0, 1]"),
            (
                "/tapl/prior/beta/8",
                json!([0.0]),
                "tapl.prior.beta.8: 1 values",
            ),
            ("/tapl/prior/beta", json!({"16": [0.0, 1.0]}), "k = 16"),
            (
                "/tapl/prior/beta",
                json!({"eight": [0.0, 1.0]}),
                "\"eight\"",
            ),
            (
                "/tapl/prior/grid_db",
                json!([0.0, 0.0]),
                "tapl.prior.grid_db",
            ),
            (
                "/tapl/prior/direction",
                json!("tapl_context.f32"),
                "tapl.prior.direction",
            ),
            (
                "/jscc/0/encoder",
                json!("../outside.onnx"),
                "jscc[0].encoder",
            ),
        ];
        for (pointer, value, needle) in cases {
            let (dir, mut m) = fake_bundle();
            *m.pointer_mut(pointer).unwrap() = value;
            let e = load_err(dir.path(), &m);
            assert!(e.contains(needle), "{pointer}: {e}");
        }
    }

    #[test]
    fn missing_directory_and_bad_json() {
        let e = Bundle::load(Path::new("/nonexistent/bundle"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/bundle"), "{e}");
        let (dir, _) = fake_bundle();
        std::fs::write(dir.path().join(MANIFEST), "{ not json").unwrap();
        let e = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn f32_files_are_little_endian() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.f32");
        let values = [1.5f32, -2.25, 3.0e-3];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(read_f32_file(&p, 3).unwrap(), values);
        assert!(read_f32_file(&p, 4).is_err());
    }
}
