//! Parity of the Rust side with the Python reference outputs of the test fixture.
//!
//! The fixture (a complete random-init bundle plus `reference.json`) is made by
//! `.venv/bin/python -m semclip_models.fixture --out target/semclip-fixture`; tests find it
//! through `SEMCLIP_TEST_FIXTURE` (default `<workspace>/target/semclip-fixture`). The same
//! tests check a served bundle when `SEMCLIP_TEST_FIXTURE` points at a reference made for
//! it (`semclip_models.fixture --bundle bundles/tiny-lit --out DIR`; `scripts/test.sh`
//! runs them so against the trained `tiny-lit`). They find ONNX
//! Runtime through `ORT_DYLIB_PATH` (default: the `.venv` search of
//! `semclip_core::runtime::find_dylib`). When either is missing the tests fail and say how
//! to create it.
//!
//! Tolerances: for identical inputs (preprocessed pixels, token embeddings, symbols) the
//! outputs must agree within `TOL` = 1e-4 absolute per value; from the same image files
//! (Rust decoding and resizing vs PIL) the embeddings must have cosine similarity >= 0.999.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use semclip_core::bundle::Bundle;
use semclip_core::classify::probabilities;
use semclip_core::error::Error;
use semclip_core::pipeline::ReceivedAt;
use semclip_core::power::{mean_energy, normalise_power};
use semclip_core::preprocess::decode_and_preprocess;
use semclip_core::{Device, ImageLimits, Models, Receiver, TextSide, Transmitter};
use serde_json::Value;

const TOL: f32 = 1e-4;
const MIN_COSINE: f64 = 0.999;

struct Fixture {
    dir: PathBuf,
    bundle: Bundle,
    reference: Value,
    models: Arc<Models>,
    text: Arc<TextSide>,
}

fn fixture_dir() -> PathBuf {
    std::env::var_os("SEMCLIP_TEST_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/semclip-fixture"))
}

const HOW_TO: &str = "create it with `scripts/setup-python.sh` then \
    `.venv/bin/python -m semclip_models.fixture --out target/semclip-fixture` (or set \
    SEMCLIP_TEST_FIXTURE), and point ORT_DYLIB_PATH at libonnxruntime.so.1.31.1";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir();
        let reference_path = dir.join("reference/reference.json");
        let text = std::fs::read_to_string(&reference_path).unwrap_or_else(|e| {
            panic!(
                "test fixture missing ({}: {e}); {HOW_TO}",
                reference_path.display()
            )
        });
        let reference: Value = serde_json::from_str(&text).expect("reference.json is JSON");
        // `bundle` is relative to the reference folder ("../bundle" for the fixture's own
        // bundle) or absolute (a reference made for an existing bundle with `--bundle`).
        let bundle_path = dir.join("reference").join(
            reference["bundle"]
                .as_str()
                .expect("reference.json names its bundle"),
        );
        let bundle = Bundle::load(&bundle_path)
            .unwrap_or_else(|e| panic!("fixture bundle {}: {e}; {HOW_TO}", bundle_path.display()));
        semclip_core::init_ort(None).unwrap_or_else(|e| panic!("{e}; {HOW_TO}"));
        let models = Arc::new(Models::load(&bundle, Device::Cpu).expect("models load"));
        let text = Arc::new(TextSide::load(&bundle, Device::Cpu).expect("text side loads"));
        Fixture {
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

#[test]
fn image_embedding_from_python_pixels() {
    let f = fixture();
    for img in f.reference["images"].as_array().unwrap() {
        let pixels = floats(&img["pixels"]);
        let z = f.models.embed_image(&pixels).unwrap();
        let name = img["file"].as_str().unwrap();
        assert_close(
            &format!("z from pixels of {name}"),
            &z,
            &floats(&img["z_from_pixels"]),
            TOL,
        );
    }
}

#[test]
fn image_embedding_from_files() {
    let f = fixture();
    let p = &f.bundle.manifest.image.preprocess;
    for img in f.reference["images"].as_array().unwrap() {
        let name = img["file"].as_str().unwrap();
        let bytes = std::fs::read(f.dir.join("reference").join(name)).unwrap();
        let pixels = decode_and_preprocess(&bytes, p, &ImageLimits::default()).unwrap();
        let want_pixels = floats(&img["pixels"]);
        // Informational: how far Rust decoding/resizing is from PIL's, in normalised units.
        let d = max_abs_diff(&pixels, &want_pixels);
        let mean: f32 = pixels
            .iter()
            .zip(&want_pixels)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / pixels.len() as f32;
        println!("pixels of {name}: max abs diff {d:.3e}, mean abs diff {mean:.3e}");

        let z = f.models.embed_image(&pixels).unwrap();
        let c = cosine(&z, &floats(&img["z_from_file"]));
        println!("z from file {name}: cosine {c:.6}");
        assert!(c >= MIN_COSINE, "{name}: cosine {c} < {MIN_COSINE}");
    }
}

#[test]
fn batched_image_embeddings_match_single() {
    let f = fixture();
    let images = f.reference["images"].as_array().unwrap();
    let flat: Vec<f32> = images.iter().flat_map(|i| floats(&i["pixels"])).collect();
    let batch = f.models.embed_images(&flat).unwrap();
    assert_eq!(batch.len(), images.len());
    for (z, img) in batch.iter().zip(images) {
        assert_close("batched z", z, &floats(&img["z_from_pixels"]), TOL);
    }
}

#[test]
fn template_text_features() {
    let f = fixture();
    for case in f.reference["text"].as_array().unwrap() {
        let labels = strings(&case["labels"]);
        let template = case["template"].as_str().unwrap().to_string();
        let got = f
            .text
            .template_features(&labels, std::slice::from_ref(&template))
            .unwrap();
        let want = matrix(&case["features"]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_close(&format!("text {template:?}"), g, w, TOL);
        }
        // A second call is served from the cache and is identical.
        let again = f.text.template_features(&labels, &[template]).unwrap();
        assert!(Arc::ptr_eq(&got, &again));
    }
}

#[test]
fn tapl_text_features() {
    let f = fixture();
    assert!(f.text.has_tapl());
    for case in f.reference["tapl"].as_array().unwrap() {
        let labels = strings(&case["labels"]);
        let z_hat = floats(&case["z_hat"]);
        let got = f.text.learned_features(&z_hat, &labels).unwrap();
        let want = matrix(&case["features"]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_close("TAPL features", g, w, TOL);
        }
    }
    // Batched: both cases in one call give the same features.
    let cases = f.reference["tapl"].as_array().unwrap();
    let labels = strings(&cases[0]["labels"]);
    let flat: Vec<f32> = cases.iter().flat_map(|c| floats(&c["z_hat"])).collect();
    let batch = f.text.learned_features_batch(&flat, &labels).unwrap();
    for (got, case) in batch.iter().zip(cases) {
        for (g, w) in got.iter().zip(&matrix(&case["features"])) {
            assert_close("batched TAPL features", g, w, TOL);
        }
    }
}

#[test]
fn jscc_encode_normalise_decode() {
    let f = fixture();
    for case in f.reference["jscc"].as_array().unwrap() {
        let k = case["k"].as_u64().unwrap() as u32;
        let snr = case["snr_db"].as_f64().unwrap() as f32;
        let z = floats(&case["z"]);
        let raw = f.models.jscc_encode(k, &z, snr).unwrap();
        assert_close(
            &format!("k={k} raw symbols"),
            &raw,
            &floats(&case["symbols_raw"]),
            TOL,
        );

        let mut norm = raw.clone();
        normalise_power(&mut norm).unwrap();
        assert_close(
            &format!("k={k} normalised symbols"),
            &norm,
            &floats(&case["symbols_normalised"]),
            TOL,
        );
        assert!((mean_energy(&norm) - 1.0).abs() < 1e-6);

        let z_hat = f
            .models
            .jscc_decode(k, &floats(&case["received"]), snr)
            .unwrap();
        assert_close(
            &format!("k={k} z_hat"),
            &z_hat,
            &floats(&case["z_hat"]),
            TOL,
        );
    }
}

#[test]
fn classification_probabilities() {
    let f = fixture();
    let scale = f.bundle.manifest.logit_scale;
    for case in f.reference["classify"].as_array().unwrap() {
        let z_hat = floats(&case["z_hat"]);
        let labels = strings(&case["labels"]);
        let feats = match &case["templates"] {
            Value::Null => f.text.learned_features(&z_hat, &labels).unwrap(),
            t => f
                .text
                .template_features(&labels, &strings(t))
                .unwrap()
                .to_vec(),
        };
        let scored = match case.get("k") {
            Some(k) => {
                let want = case["prior_strength"].as_f64().unwrap() as f32;
                let beta = f.text.prior().map_or(0.0, |p| {
                    p.strength(
                        k.as_u64().unwrap() as u32,
                        case["snr_db"].as_f64().unwrap() as f32,
                    )
                });
                assert!((beta - want).abs() < 1e-6, "strength {beta}, want {want}");
                match f.text.prior() {
                    Some(prior) => prior.apply(&z_hat, beta).unwrap(),
                    None => z_hat,
                }
            }
            None => z_hat,
        };
        let p = probabilities(&scored, &feats, scale).unwrap();
        assert_close("probabilities", &p, &floats(&case["probabilities"]), TOL);
    }
}

#[test]
fn pipeline_end_to_end() {
    let f = fixture();
    let tx = Transmitter::new(&f.bundle, Arc::clone(&f.models), ImageLimits::default());
    let rx = Receiver::new(&f.bundle, Arc::clone(&f.models), Arc::clone(&f.text));

    // Transmitter from file bytes.
    let img = &f.reference["images"][0];
    let bytes = std::fs::read(f.dir.join("reference").join(img["file"].as_str().unwrap())).unwrap();
    let enc = tx.encode_image(&bytes, 8, 5.0).unwrap();
    assert!(cosine(&enc.z, &floats(&img["z_from_file"])) >= MIN_COSINE);
    assert_eq!(enc.symbols.len(), 16);
    assert!((mean_energy(&enc.symbols) - 1.0).abs() < 1e-6);
    assert!(enc.timings.total() > std::time::Duration::ZERO);

    // Receiver from the reference's received frame (AWGN, h = 1).
    let case = &f.reference["jscc"][0];
    let dec = rx
        .decode(&floats(&case["received"]), 8, 5.0, (1.0, 0.0))
        .unwrap();
    assert_eq!(dec.effective_snr_db, 5.0);
    assert_close("pipeline z_hat", &dec.z_hat, &floats(&case["z_hat"]), TOL);

    // Learned prompt when no templates are given.
    for case in f.reference["classify"].as_array().unwrap() {
        let labels = strings(&case["labels"]);
        let templates = match &case["templates"] {
            Value::Null => Vec::new(),
            t => strings(t),
        };
        let at = case.get("k").map(|k| ReceivedAt {
            k: k.as_u64().unwrap() as u32,
            snr_db: case["snr_db"].as_f64().unwrap() as f32,
        });
        let c = rx.classify(&dec.z_hat, &labels, &templates, 2, at).unwrap();
        if let Some(want) = case.get("prior_strength") {
            let want = want.as_f64().unwrap() as f32;
            assert!((c.prior_strength - want).abs() < 1e-6);
        } else {
            assert_eq!(c.prior_strength, 0.0);
        }
        assert_close(
            "pipeline probabilities",
            &c.probabilities,
            &floats(&case["probabilities"]),
            TOL,
        );
        assert_eq!(c.top.len(), 2);
        assert!(c.top[0].1 >= c.top[1].1);
        let expected = if templates.is_empty() {
            semclip_core::pipeline::PromptKind::Learned
        } else {
            semclip_core::pipeline::PromptKind::Template
        };
        assert_eq!(c.prompt, expected);
    }

    // Batches: one bad image names its index.
    let err = tx.encode_images(&[&bytes, b"junk"], 8, 5.0).unwrap_err();
    assert!(err.to_string().contains("image 1"), "{err}");
    let two = tx.encode_images(&[&bytes, &bytes], 4, -5.0).unwrap();
    assert_eq!(two[0].symbols, two[1].symbols);
}

#[test]
fn bad_requests_are_errors() {
    let f = fixture();
    let d = f.models.embed_dim();
    assert!(matches!(
        f.models.embed_image(&[0.0; 7]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        f.models.jscc_encode(3, &vec![0.0; d], 0.0),
        Err(Error::InvalidInput(_))
    ));
    assert!(f.models.jscc_encode(8, &vec![f32::NAN; d], 0.0).is_err());
    assert!(f.models.jscc_decode(8, &[0.0; 15], 0.0).is_err());
    assert!(f
        .models
        .jscc_encode_batch(8, &vec![0.1; 2 * d], &[1.0, 2.0, 3.0])
        .is_err());

    let labels = vec!["cat".to_string()];
    assert!(f.text.template_features(&[], &[]).is_err());
    assert!(f
        .text
        .template_features(&labels, &["no placeholder".into()])
        .is_err());
    let long = vec!["a ".repeat(70).trim().to_string()];
    let e = f
        .text
        .template_features(&long, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_len"), "{e}");
    let many: Vec<String> = (0..2000).map(|i| format!("l{i}")).collect();
    assert!(f
        .text
        .template_features(&many, &[])
        .unwrap_err()
        .to_string()
        .contains("max_labels"));
    assert!(f.text.learned_features(&[0.0; 5], &labels).is_err());

    let rx = Receiver::new(&f.bundle, Arc::clone(&f.models), Arc::clone(&f.text));
    assert!(rx.decode(&[0.0; 16], 8, 0.0, (0.0, 0.0)).is_err());
    assert!(rx.decode(&[0.0; 10], 8, 0.0, (1.0, 0.0)).is_err());
}

#[test]
fn cuda_is_never_silently_cpu() {
    let f = fixture();
    match Models::load(&f.bundle, Device::Cuda) {
        Ok(m) => assert_eq!(m.provider(), semclip_core::Provider::Cuda),
        Err(Error::Provider(msg)) => {
            println!("CUDA unavailable, as reported: {msg}");
            assert!(msg.contains("CUDA"));
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
    let auto = Models::load(&f.bundle, Device::Auto).unwrap();
    println!("auto selected {}", auto.provider());
}

#[test]
fn rayleigh_frame_is_equalised_before_decoding() {
    let f = fixture();
    let rx = Receiver::new(&f.bundle, Arc::clone(&f.models), Arc::clone(&f.text));
    let case = &f.reference["jscc"][0];
    let k = case["k"].as_u64().unwrap() as u32;
    let clean = floats(&case["symbols_normalised"]);

    // Nearly noise-free Rayleigh channel: after y / h the decoder sees x again, told the
    // effective SNR 60 + 10 log10 |h|^2.
    let mut ch =
        semclip_core::ChannelModel::new(60.0, semclip_core::Fading::RayleighBlock, 3).unwrap();
    let mut y = clean.clone();
    let state = ch.apply(&mut y).unwrap();
    let dec = rx.decode(&y, k, state.snr_db, state.h).unwrap();
    let gain = f64::from(state.h.0).powi(2) + f64::from(state.h.1).powi(2);
    let expected_snr = (60.0 + 10.0 * gain.log10()) as f32;
    assert!((dec.effective_snr_db - expected_snr).abs() < 1e-3);
    let direct = f.models.jscc_decode(k, &clean, expected_snr).unwrap();
    assert_close("z_hat after equalisation", &dec.z_hat, &direct, 1e-3);
}

#[test]
fn models_are_shared_between_threads() {
    let f = fixture();
    let images = f.reference["images"].as_array().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let img = &images[t % images.len()];
                s.spawn(move || {
                    let pixels = floats(&img["pixels"]);
                    let want = floats(&img["z_from_pixels"]);
                    for _ in 0..5 {
                        let z = f.models.embed_image(&pixels).unwrap();
                        assert!(max_abs_diff(&z, &want) <= TOL);
                        let feats = f
                            .text
                            .template_features(&["cat".into(), "dog".into()], &[])
                            .unwrap();
                        assert_eq!(feats.len(), 2);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}
