//! The core serving the `clip-vit-b32` bundle (open_clip ViT-B/32) at random
//! initialisation, against the Python reference that the export writes.
//!
//! The bundle is made by `.venv/bin/python -m semclip_models.clip_export --random-init
//! --out target/clip-vit-b32-random --reuse` (the pytest `models/tests/test_clip_export.py`
//! leaves it there too); tests find it through `SEMCLIP_TEST_CLIP_BUNDLE` (default
//! `<workspace>/target/clip-vit-b32-random`) and ONNX Runtime through `ORT_DYLIB_PATH`
//! (default `<workspace>/.venv/lib/python3.11/site-packages/onnxruntime/capi/
//! libonnxruntime.so.1.31.1`). When either is missing the tests fail and say how to make it.
//!
//! `reference.json` in the bundle holds a sample image preprocessed by the Python pipeline
//! with its ONNX Runtime and open_clip embeddings, open_clip text features of prompts,
//! TAPL features and a JSCC frame. Tolerances: identical inputs agree within `TOL` = 1e-4
//! per value; the same image file decoded and resized here and by PIL gives embeddings
//! with cosine similarity >= 0.999.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use semclip_core::bundle::{Bundle, Pooling};
use semclip_core::classify::probabilities;
use semclip_core::pipeline::PromptKind;
use semclip_core::power::{mean_energy, normalise_power};
use semclip_core::preprocess::{decode_and_preprocess, Interpolation};
use semclip_core::{
    ChannelModel, Device, Fading, ImageLimits, Models, Receiver, TextSide, Transmitter,
};
use serde_json::Value;

const TOL: f32 = 1e-4;
const MIN_COSINE: f64 = 0.999;

const HOW_TO: &str = "create it with `scripts/setup-python.sh` then `.venv/bin/python -m \
    semclip_models.clip_export --random-init --out target/clip-vit-b32-random --reuse` (or \
    set SEMCLIP_TEST_CLIP_BUNDLE to such a bundle), and point ORT_DYLIB_PATH at \
    libonnxruntime.so.1.31.1";

struct Clip {
    dir: PathBuf,
    bundle: Bundle,
    reference: Value,
    models: Arc<Models>,
    text: Arc<TextSide>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bundle_dir() -> PathBuf {
    std::env::var_os("SEMCLIP_TEST_CLIP_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/clip-vit-b32-random"))
}

fn ort_dylib() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"),
    }
}

fn clip() -> &'static Clip {
    static C: OnceLock<Clip> = OnceLock::new();
    C.get_or_init(|| {
        let dir = bundle_dir();
        let reference_path = dir.join("reference.json");
        let text = std::fs::read_to_string(&reference_path).unwrap_or_else(|e| {
            panic!(
                "clip-vit-b32 test bundle missing ({}: {e}); {HOW_TO}",
                reference_path.display()
            )
        });
        let reference: Value = serde_json::from_str(&text).expect("reference.json is JSON");
        let bundle =
            Bundle::load(&dir).unwrap_or_else(|e| panic!("clip-vit-b32 bundle: {e}; {HOW_TO}"));
        semclip_core::init_ort(Some(&ort_dylib())).unwrap_or_else(|e| panic!("{e}; {HOW_TO}"));
        let models = Arc::new(Models::load(&bundle, Device::Cpu).expect("models load"));
        let text = Arc::new(TextSide::load(&bundle, Device::Cpu).expect("text side loads"));
        Clip {
            dir,
            bundle,
            reference,
            models,
            text,
        }
    })
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("array of rows")
        .iter()
        .map(floats)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array of strings")
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    println!("{what}: max abs diff {d:.3e}");
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}

/// softmax(scale * <t_c, z_hat>) in f64, from reference values only.
fn softmax_reference(z_hat: &[f32], feats: &[Vec<f32>], scale: f32) -> Vec<f32> {
    let logits: Vec<f64> = feats
        .iter()
        .map(|t| {
            f64::from(scale)
                * t.iter()
                    .zip(z_hat)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
        })
        .collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| (x / sum) as f32).collect()
}

#[test]
fn clip_bundle_loads_with_its_shapes() {
    let c = clip();
    let m = &c.bundle.manifest;
    assert_eq!(m.id, "clip-vit-b32");
    assert!(m.random_init, "this test is for the random-init export");
    assert_eq!(m.embed_dim, 512);
    assert_eq!(m.text.pooling, Pooling::Eot);
    assert_eq!(
        (m.text.vocab_size, m.text.width, m.text.max_len),
        (49408, 512, 77)
    );
    let p = &m.image.preprocess;
    assert_eq!(
        (p.resize, p.crop, p.interpolation),
        (224, 224, Interpolation::Bicubic)
    );
    assert_eq!(c.models.image_size(), 224);
    assert_eq!(c.models.embed_dim(), 512);
    assert_eq!(c.models.ks(), vec![8]);
    assert!(c.text.has_tapl());
}

#[test]
fn clip_tokenizer_gives_open_clip_ids() {
    let c = clip();
    // open_clip.get_tokenizer("ViT-B-32") ids of these prompts (start and end included).
    let ids = c.text.tokenize("a photo of a cat.").unwrap();
    assert_eq!(ids, vec![49406, 320, 1125, 539, 320, 2368, 269, 49407]);
    let ids = c.text.tokenize("A Photo of the SMALL Dog!").unwrap();
    assert_eq!(
        ids,
        vec![49406, 320, 1125, 539, 518, 2442, 1929, 256, 49407]
    );
    let ids = c.text.tokenize("X X X X airplane.").unwrap();
    assert_eq!(ids, vec![49406, 343, 343, 343, 343, 16451, 269, 49407]);

    // 75 words + start + end = 77 tokens: accepted; one more is refused.
    let longest = vec!["a"; 75].join(" ");
    assert_eq!(c.text.tokenize(&longest).unwrap().len(), 77);
    let e = c.text.tokenize(&format!("{longest} a")).unwrap_err();
    assert!(e.to_string().contains("max_len"), "{e}");
}

#[test]
fn clip_image_embedding_from_python_pixels() {
    let c = clip();
    let img = &c.reference["image"];
    let pixels = floats(&img["pixels"]);
    assert_eq!(pixels.len(), 3 * 224 * 224);
    let z = c.models.embed_image(&pixels).unwrap();
    assert_close("z vs ONNX Runtime (Python)", &z, &floats(&img["z"]), TOL);
    assert_close(
        "z vs open_clip encode_image",
        &z,
        &floats(&img["z_open_clip"]),
        TOL,
    );
    let norm: f32 = z.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn clip_image_embedding_from_file() {
    let c = clip();
    let img = &c.reference["image"];
    let name = img["file"].as_str().unwrap();
    let bytes = std::fs::read(c.dir.join(name)).unwrap();
    let p = &c.bundle.manifest.image.preprocess;
    let pixels = decode_and_preprocess(&bytes, p, &ImageLimits::default()).unwrap();
    let want = floats(&img["pixels"]);
    let d = max_abs_diff(&pixels, &want);
    let mean = pixels
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / pixels.len() as f32;
    println!(
        "pixels of {name} (Rust vs PIL, bicubic 32 -> 224): max abs diff {d:.3e}, mean {mean:.3e}"
    );
    let z = c.models.embed_image(&pixels).unwrap();
    let cos = cosine(&z, &floats(&img["z"]));
    println!("z from file {name}: cosine {cos:.6}");
    assert!(cos >= MIN_COSINE, "{name}: cosine {cos} < {MIN_COSINE}");
}

#[test]
fn clip_text_features_match_open_clip() {
    let c = clip();
    for case in c.reference["text"].as_array().unwrap() {
        let labels = strings(&case["labels"]);
        let template = case["template"].as_str().unwrap().to_string();
        let got = c
            .text
            .template_features(&labels, std::slice::from_ref(&template))
            .unwrap();
        let want = matrix(&case["features"]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_close(&format!("text {template:?} vs open_clip"), g, w, TOL);
        }
    }
}

#[test]
fn clip_tapl_learned_features() {
    let c = clip();
    let case = &c.reference["tapl"];
    let labels = strings(&case["labels"]);
    let z_hat = floats(&case["z_hat"]);
    let got = c.text.learned_features(&z_hat, &labels).unwrap();
    let want = matrix(&case["features"]);
    assert_eq!(got.len(), labels.len());
    for (g, w) in got.iter().zip(&want) {
        assert_close("TAPL features", g, w, TOL);
    }
}

#[test]
fn clip_jscc_encode_normalise_decode() {
    let c = clip();
    let case = &c.reference["jscc"];
    let k = case["k"].as_u64().unwrap() as u32;
    let snr = case["snr_db"].as_f64().unwrap() as f32;
    let raw = c.models.jscc_encode(k, &floats(&case["z"]), snr).unwrap();
    assert_close("raw symbols", &raw, &floats(&case["symbols_raw"]), TOL);
    let mut norm = raw.clone();
    normalise_power(&mut norm).unwrap();
    assert_close(
        "normalised symbols",
        &norm,
        &floats(&case["symbols_normalised"]),
        TOL,
    );
    assert!((mean_energy(&norm) - 1.0).abs() < 1e-6);
    let z_hat = c
        .models
        .jscc_decode(k, &floats(&case["received"]), snr)
        .unwrap();
    assert_close("z_hat", &z_hat, &floats(&case["z_hat"]), TOL);
}

#[test]
fn clip_pipeline_end_to_end() {
    let c = clip();
    let tx = Transmitter::new(&c.bundle, Arc::clone(&c.models), ImageLimits::default());
    let rx = Receiver::new(&c.bundle, Arc::clone(&c.models), Arc::clone(&c.text));
    let scale = c.bundle.manifest.logit_scale;

    // Transmitter from the sample file's bytes.
    let img = &c.reference["image"];
    let bytes = std::fs::read(c.dir.join(img["file"].as_str().unwrap())).unwrap();
    let enc = tx.encode_image(&bytes, 8, 5.0).unwrap();
    assert!(cosine(&enc.z, &floats(&img["z"])) >= MIN_COSINE);
    assert_eq!(enc.symbols.len(), 16);
    assert!((mean_energy(&enc.symbols) - 1.0).abs() < 1e-6);

    // Receiver on the reference's received frame (AWGN, h = 1).
    let case = &c.reference["jscc"];
    let dec = rx
        .decode(&floats(&case["received"]), 8, 5.0, (1.0, 0.0))
        .unwrap();
    assert_close("pipeline z_hat", &dec.z_hat, &floats(&case["z_hat"]), TOL);

    // Template prompts: probabilities against open_clip's text features.
    let text = &c.reference["text"][0];
    let labels = strings(&text["labels"]);
    let template = text["template"].as_str().unwrap().to_string();
    let got = rx
        .classify(&dec.z_hat, &labels, &[template], 2, None)
        .unwrap();
    assert_eq!(got.prompt, PromptKind::Template);
    let want = softmax_reference(&dec.z_hat, &matrix(&text["features"]), scale);
    assert_close("template probabilities", &got.probabilities, &want, TOL);
    assert_eq!(got.top.len(), 2);
    assert!(got.top[0].1 >= got.top[1].1);

    // Learned prompt (no templates): against the reference TAPL features.
    let tapl = &c.reference["tapl"];
    let z_hat = floats(&tapl["z_hat"]);
    let labels = strings(&tapl["labels"]);
    let got = rx.classify(&z_hat, &labels, &[], 1, None).unwrap();
    assert_eq!(got.prompt, PromptKind::Learned);
    let want = softmax_reference(&z_hat, &matrix(&tapl["features"]), scale);
    assert_close(
        "learned-prompt probabilities",
        &got.probabilities,
        &want,
        TOL,
    );
    let check = probabilities(&z_hat, &matrix(&tapl["features"]), scale).unwrap();
    assert_close("classify::probabilities", &check, &want, 1e-6);

    // Through a simulated channel: transmitter, AWGN at 20 dB, receiver, classifier.
    let mut channel = ChannelModel::new(20.0, Fading::Awgn, 7).unwrap();
    let mut frame = enc.symbols.clone();
    let state = channel.apply(&mut frame).unwrap();
    let dec = rx.decode(&frame, 8, state.snr_db, state.h).unwrap();
    let out = rx
        .classify(&dec.z_hat, &strings(&text["labels"]), &[], 3, None)
        .unwrap();
    let total: f32 = out.probabilities.iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "probabilities sum to {total}");
    println!(
        "classified through the channel (random init): {:?}",
        out.top
    );
}
