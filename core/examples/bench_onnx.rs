//! Transmitter throughput: raw ONNX Runtime against the full pipeline, in one run.
//!
//! (a) raw: the image encoder and the JSCC encoder run back to back on already
//!     preprocessed pixels, with `ort` sessions made directly (no pooling, no checks);
//! (b) pipeline: `pipeline::Transmitter::encode_images` from encoded image bytes
//!     (decode, resize, crop, normalise, image encoder, JSCC encoder, power normalisation).
//!
//! Both use the same bundle, provider, thread count and batch size, and alternate in short
//! slices so that a change of machine load affects both; the ratio (b)/(a) is the figure to
//! compare services against.
//!
//! ```text
//! cargo run --release -p semclip-core --example bench_onnx -- \
//!     --bundle target/semclip-fixture/bundle --seconds 5 --batch 1
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use image::ImageEncoder;
use ort::session::Session;
use ort::value::TensorRef;
use semclip_core::bundle::Bundle;
use semclip_core::preprocess::decode_and_preprocess;
use semclip_core::runtime::{ort_environment, RuntimeOptions};
use semclip_core::{Device, ImageLimits, Models, Transmitter};

/// Raw ONNX Runtime vs full transmitter pipeline throughput.
#[derive(Debug, Parser)]
struct Args {
    /// Bundle directory.
    #[arg(long, default_value = "target/semclip-fixture/bundle")]
    bundle: PathBuf,
    /// Directory of JPEG/PNG/WebP images; default: synthetic JPEGs.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Side of the synthetic JPEGs; default: the bundle's resize size.
    #[arg(long)]
    synth_side: Option<u32>,
    /// Seconds per measurement (after one warm-up second each).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The two measurements alternate in this many slices (fair under changing load).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Images per ONNX run.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Complex channel uses k; default: the bundle's default.
    #[arg(long)]
    k: Option<u32>,
    /// SNR in dB given to the JSCC encoder.
    #[arg(long, default_value_t = 5.0)]
    snr_db: f32,
    /// Execution provider.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Intra-op threads per session; default: ONNX Runtime decides.
    #[arg(long)]
    threads: Option<usize>,
    /// ONNX Runtime library; default: ORT_DYLIB_PATH or the .venv search.
    #[arg(long)]
    ort: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .init();
    let args = Args::parse();
    if args.batch == 0 {
        bail!("--batch must be positive");
    }

    semclip_core::init_ort(args.ort.as_deref())?;
    let bundle = Bundle::load(&args.bundle)?;
    let m = &bundle.manifest;
    let k = args.k.unwrap_or(m.default_k);
    let opts = RuntimeOptions {
        device: args.device,
        intra_threads: args.threads,
        pool_size: 1,
    };
    let models = Arc::new(Models::load_with(&bundle, &opts)?);
    let tx = Transmitter::new(&bundle, Arc::clone(&models), ImageLimits::default());
    let images = load_images(&args, &bundle)?;
    let side = m.image.preprocess.crop as usize;
    let dim = m.embed_dim;
    println!(
        "bundle {} ({}), provider {}, threads {}, batch {}, k {k}, {} distinct images",
        m.id,
        args.bundle.display(),
        models.provider(),
        args.threads
            .map_or("ORT default".to_string(), |t| t.to_string()),
        args.batch,
        images.len()
    );

    // Batches of encoded bytes and of the matching preprocessed pixels.
    let batches: Vec<Vec<&[u8]>> = (0..images.len())
        .map(|start| {
            (0..args.batch)
                .map(|j| images[(start + j) % images.len()].as_slice())
                .collect()
        })
        .collect();
    let pixel_batches: Vec<Vec<f32>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|bytes| {
                    decode_and_preprocess(bytes, &m.image.preprocess, &ImageLimits::default())
                })
                .collect::<semclip_core::Result<Vec<_>>>()
                .map(|v| v.concat())
        })
        .collect::<semclip_core::Result<_>>()?;

    // (a) Raw sessions, built directly with ort.
    let env = ort_environment()?;
    let build = |name: &str| -> Result<Session> {
        let mut b = Session::builder(env)?;
        if let Some(t) = args.threads {
            b = b.with_intra_threads(t).map_err(|e| anyhow!("{e}"))?;
        }
        if models.provider() == semclip_core::Provider::Cuda {
            b = b
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(b.commit_from_file(bundle.path(name))?)
    };
    let jscc = bundle
        .jscc(k)
        .with_context(|| format!("no JSCC entry for k = {k}"))?;
    let mut image_session = build(&m.image.onnx)?;
    let mut jscc_session = build(&jscc.encoder)?;
    let snr = vec![args.snr_db; args.batch];
    let mut raw_step = |i: usize| -> Result<usize> {
        let pixels = &pixel_batches[i % pixel_batches.len()];
        let z: Vec<f32> = {
            let out = image_session.run(ort::inputs![
                "pixels" => TensorRef::from_array_view(([args.batch, 3, side, side], pixels.as_slice()))?
            ])?;
            out["embedding"].try_extract_tensor::<f32>()?.1.to_vec()
        };
        let out = jscc_session.run(ort::inputs![
            "z" => TensorRef::from_array_view(([args.batch, dim], z.as_slice()))?,
            "snr_db" => TensorRef::from_array_view(([args.batch, 1], snr.as_slice()))?
        ])?;
        Ok(out["symbols"].try_extract_tensor::<f32>()?.1.len())
    };

    // (b) The full transmitter pipeline from encoded bytes.
    let mut stage = [Duration::ZERO; 3];
    let mut pipeline_step = |i: usize| -> Result<usize> {
        let out = tx.encode_images(&batches[i % batches.len()], k, args.snr_db)?;
        let t = out[0].timings;
        stage[0] += t.preprocess * args.batch as u32;
        stage[1] += t.image_encode * args.batch as u32;
        stage[2] += t.jscc_encode * args.batch as u32;
        Ok(out.len())
    };
    let (raw, full) = measure_interleaved(
        args.seconds,
        args.rounds,
        args.batch,
        &mut raw_step,
        &mut pipeline_step,
    )?;

    println!(
        "(a) raw ONNX image encoder + JSCC encoder: {:.1} images/s",
        raw.rate
    );
    println!(
        "(b) Transmitter::encode_images from bytes:  {:.1} images/s",
        full.rate
    );
    println!("ratio (b)/(a): {:.3}", full.rate / raw.rate);
    let total: Duration = stage.iter().sum();
    if !total.is_zero() {
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
        println!(
            "pipeline stage shares (incl. warm-up): preprocess {:.1} %, image encode {:.1} %, JSCC encode {:.1} %",
            pct(stage[0]),
            pct(stage[1]),
            pct(stage[2])
        );
    }
    Ok(())
}

struct Rate {
    rate: f64,
}

/// Runs `a` and `b` for one warm-up second each, then alternately in `rounds` slices of
/// `seconds / rounds` each, so that load changes on a shared machine hit both alike.
/// Returns the images per second of each.
fn measure_interleaved(
    seconds: f64,
    rounds: usize,
    batch: usize,
    a: &mut dyn FnMut(usize) -> Result<usize>,
    b: &mut dyn FnMut(usize) -> Result<usize>,
) -> Result<(Rate, Rate)> {
    let mut i = 0usize;
    run_for(a, Duration::from_secs(1), &mut i)?;
    run_for(b, Duration::from_secs(1), &mut i)?;
    let rounds = rounds.max(1);
    let slice = Duration::from_secs_f64(seconds / rounds as f64);
    let mut totals = [(0usize, Duration::ZERO); 2];
    for _ in 0..rounds {
        let (n, t) = run_for(a, slice, &mut i)?;
        totals[0] = (totals[0].0 + n * batch, totals[0].1 + t);
        let (n, t) = run_for(b, slice, &mut i)?;
        totals[1] = (totals[1].0 + n * batch, totals[1].1 + t);
    }
    let rate = |(n, t): (usize, Duration)| Rate {
        rate: n as f64 / t.as_secs_f64(),
    };
    Ok((rate(totals[0]), rate(totals[1])))
}

/// Calls `step` until `duration` has passed; returns the calls made and the time taken.
fn run_for(
    step: &mut dyn FnMut(usize) -> Result<usize>,
    duration: Duration,
    i: &mut usize,
) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < duration {
        step(*i)?;
        *i += 1;
        n += 1;
    }
    Ok((n, start.elapsed()))
}

/// Encoded images from `--images`, else synthetic JPEGs.
fn load_images(args: &Args, bundle: &Bundle) -> Result<Vec<Vec<u8>>> {
    if let Some(dir) = &args.images {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "webp")) {
                out.push(std::fs::read(&path)?);
            }
        }
        if out.is_empty() {
            bail!("no JPEG/PNG/WebP files in {}", dir.display());
        }
        return Ok(out);
    }
    let side = args
        .synth_side
        .unwrap_or(bundle.manifest.image.preprocess.resize);
    (0..8u32)
        .map(|s| {
            let img = image::RgbImage::from_fn(side, side, |x, y| {
                let v = (x * 13 + y * 7 + s * 31) % 256;
                image::Rgb([v as u8, ((x * y + s) % 256) as u8, ((255 - v) % 256) as u8])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).write_image(
                img.as_raw(),
                side,
                side,
                image::ExtendedColorType::Rgb8,
            )?;
            Ok(bytes)
        })
        .collect()
}
