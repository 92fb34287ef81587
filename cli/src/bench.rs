//! `semclip bench`: in one run on one machine, (a) raw ONNX Runtime throughput of the image
//! encoder plus the JSCC encoder called in a loop through `semclip-core`, (b) the
//! transmitter service's throughput through gRPC with channel simulator and receiver
//! running in the same process, their ratio, and (c) end-to-end latency per image (Send
//! then Classify) at 20 dB.
//!
//! The figures are meant as ratios: absolute numbers depend on the machine and on what else
//! runs on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use semclip_common::Device;
use semclip_core::bundle::Bundle;
use semclip_core::models::Models;
use semclip_core::pipeline::Transmitter;
use semclip_core::preprocess::{decode_and_preprocess, ImageLimits};
use serde::Serialize;

use crate::cluster::{LocalLink, LocalOptions};
use crate::demo::sample_files;
use crate::stats::Latency;
use crate::CIFAR10_CLASSES;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model bundle to measure.
    #[arg(long, env = "SEMCLIP_BUNDLE", default_value = "bundles/tiny-lit")]
    pub bundle: PathBuf,

    /// Folder of images sent in turn (JPEG or PNG files).
    #[arg(long, default_value = "samples")]
    pub images: PathBuf,

    /// Images encoded in (a) and sent in (b).
    #[arg(long, default_value_t = 400)]
    pub throughput_images: usize,

    /// Images sent and classified one after another for the latency figures (c).
    #[arg(long, default_value_t = 200)]
    pub latency_images: usize,

    /// Concurrent Send calls in (b).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Complex channel uses per image; the bundle's default when absent.
    #[arg(long)]
    pub k: Option<u32>,

    /// Where the models run.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,

    /// Rounds of alternating raw and service measurements; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Measured figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub bundle: String,
    pub k: u32,
    /// Rounds whose median each throughput figure is.
    pub rounds: usize,
    pub provider: String,
    /// (a) images per second through image encoder + JSCC encoder on preprocessed pixels,
    /// one image after another in one thread.
    pub raw_onnx_images_per_s: f64,
    /// (a') the core library's transmitter pipeline per image (decoding, preprocessing,
    /// both encoders, power normalisation): the service's work without gRPC.
    pub raw_with_preprocess_images_per_s: f64,
    /// (a'') (a') in `concurrency` threads sharing the models.
    pub raw_with_preprocess_concurrent_images_per_s: f64,
    /// (b) images per second acknowledged by the transmitter service over gRPC, one Send
    /// after another.
    pub service_sequential_images_per_s: f64,
    /// (b') the same with `concurrency` Send calls in flight.
    pub service_concurrent_images_per_s: f64,
    /// Threads in (a'') and calls in flight in (b').
    pub concurrency: usize,
    /// (b) / (a').
    pub sequential_service_over_raw: f64,
    /// (b') / (a'').
    pub concurrent_service_over_raw: f64,
    /// (c) Send + Classify per image at 20 dB, one after another.
    pub end_to_end_latency_20db: Latency,
    /// (c) Send alone.
    pub send_latency_20db: Latency,
    /// (c) The transmitter's own timing of preprocessing + image encoder + JSCC encoder
    /// (+ power normalisation) per Send, as reported in its replies.
    pub transmitter_encode_stages: Latency,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> Result<()> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Measures (a), (b) and (c) as described in the module docs.
pub async fn measure(args: &BenchArgs) -> Result<BenchReport> {
    if [
        args.throughput_images,
        args.latency_images,
        args.concurrency,
        args.rounds,
    ]
    .contains(&0)
    {
        bail!("--throughput-images, --latency-images, --concurrency and --rounds must be positive");
    }
    let files = sample_files(&args.images)?;
    let images: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect::<Result<_>>()?;

    // (a) raw ONNX Runtime through the core library, in this thread.
    semclip_core::runtime::init_ort(None)?;
    let bundle = Bundle::load(&args.bundle)?;
    let models = Arc::new(Models::load(&bundle, core_device(args.device))?);
    let k = args.k.unwrap_or_else(|| models.default_k());
    if !models.ks().contains(&k) {
        bail!(
            "bundle {} has no JSCC pair for k={k} (it has {:?})",
            bundle.dir.display(),
            models.ks()
        );
    }
    let pre = &bundle.manifest.image.preprocess;
    let limits = ImageLimits::default();
    let pixels: Vec<Vec<f32>> = images
        .iter()
        .map(|b| decode_and_preprocess(b, pre, &limits))
        .collect::<std::result::Result<_, _>>()?;
    let warmup = 20.min(args.throughput_images);
    for p in pixels.iter().cycle().take(warmup) {
        let z = models.embed_image(p)?;
        models.jscc_encode(k, &z, 20.0)?;
    }
    let provider = models.provider().to_string();
    let pipeline = Transmitter::new(&bundle, models.clone(), ImageLimits::default());

    // (b) and (c) through the services, started in this process.
    let link = LocalLink::start(LocalOptions {
        bundle: args.bundle.clone(),
        k: Some(k),
        device: args.device,
    })
    .await?;
    let client = link.client()?;
    let outcome = async {
        client.set_channel(Some(20.0), None, Some(0)).await?;
        for (i, b) in images.iter().cycle().take(warmup).enumerate() {
            client
                .send_at_snr(b, &format!("bench-warmup-{i}"), 20.0)
                .await?;
        }

        // Raw and service measurements alternate over several rounds, and the median of
        // each is reported, so that a change in the machine's load during the run affects
        // both sides alike.
        let images = Arc::new(images);
        let n = args.throughput_images;
        let mut rates: [Vec<f64>; 5] = Default::default();
        for _ in 0..args.rounds {
            let raw = tokio::task::block_in_place(|| -> Result<[f64; 3]> {
                Ok([
                    raw_rate(&models, None, &pixels, k, n, 1)?,
                    raw_rate(&models, Some(&pipeline), &images, k, n, 1)?,
                    raw_rate(&models, Some(&pipeline), &images, k, n, args.concurrency)?,
                ])
            })?;
            let sequential = service_rate(&client, &images, n, 1).await?;
            let concurrent = service_rate(&client, &images, n, args.concurrency).await?;
            for (all, rate) in rates
                .iter_mut()
                .zip(raw.into_iter().chain([sequential, concurrent]))
            {
                all.push(rate);
            }
        }
        let rates = rates.map(|r| median(&r));

        let labels: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
        let (mut send_ms, mut e2e_ms, mut stages_ms) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..args.latency_images {
            let image = images[i % images.len()].clone();
            let started = Instant::now();
            let reply = client.send(image, &format!("bench-latency-{i}")).await?;
            let sent = started.elapsed();
            let t = reply.timings.unwrap_or_default();
            stages_ms.push(t.preprocess_ms + t.image_encode_ms + t.jscc_encode_ms);
            client.classify(&reply.message_id, &labels, &[], 1).await?;
            send_ms.push(sent.as_secs_f64() * 1e3);
            e2e_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok((
            rates,
            Latency::of(&send_ms),
            Latency::of(&e2e_ms),
            Latency::of(&stages_ms),
        ))
    }
    .await;
    link.shutdown().await?;
    let (
        [raw, raw_pre, raw_pre_concurrent, sequential, concurrent],
        send_latency,
        e2e_latency,
        stages,
    ) = outcome?;

    Ok(BenchReport {
        bundle: args.bundle.display().to_string(),
        k,
        rounds: args.rounds,
        provider,
        raw_onnx_images_per_s: raw,
        raw_with_preprocess_images_per_s: raw_pre,
        raw_with_preprocess_concurrent_images_per_s: raw_pre_concurrent,
        service_sequential_images_per_s: sequential,
        service_concurrent_images_per_s: concurrent,
        concurrency: args.concurrency,
        sequential_service_over_raw: sequential / raw_pre,
        concurrent_service_over_raw: concurrent / raw_pre_concurrent,
        end_to_end_latency_20db: e2e_latency,
        send_latency_20db: send_latency,
        transmitter_encode_stages: stages,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    crate::stats::quantile_sorted(&v, 0.5)
}

/// The core library's name for the same device choice.
fn core_device(device: Device) -> semclip_core::runtime::Device {
    use semclip_core::runtime::Device as Core;
    match device {
        Device::Auto => Core::Auto,
        Device::Cpu => Core::Cpu,
        Device::Cuda => Core::Cuda,
    }
}

/// Images per second for `count` images taken in turn from `inputs`, in `threads` threads.
/// With `pipeline`, `inputs` are encoded images and each goes through the core library's
/// transmitter pipeline (decode, preprocess, image encoder, JSCC encoder, power
/// normalisation: the service's work without gRPC); without, they are preprocessed pixels
/// and only the two encoders run.
fn raw_rate<T: RawInput + Sync>(
    models: &Arc<Models>,
    pipeline: Option<&Transmitter>,
    inputs: &[T],
    k: u32,
    count: usize,
    threads: usize,
) -> Result<f64> {
    let one = |i: usize| -> Result<()> {
        let input = &inputs[i % inputs.len()];
        match pipeline {
            // Exactly the transmitter's work per image, without gRPC.
            Some(p) => {
                std::hint::black_box(p.encode_image(input.bytes(), k, 20.0)?);
            }
            None => {
                let z = models.embed_image(input.pixels())?;
                std::hint::black_box(models.jscc_encode(k, &z, 20.0)?);
            }
        }
        Ok(())
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || (t..count).step_by(threads).try_for_each(one)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("benchmark thread panicked"))
    })?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// What [`raw_rate`] loops over: encoded images or preprocessed pixels.
pub trait RawInput {
    fn bytes(&self) -> &[u8];
    fn pixels(&self) -> &[f32];
}

impl RawInput for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn pixels(&self) -> &[f32] {
        &[]
    }
}

impl RawInput for Vec<f32> {
    fn bytes(&self) -> &[u8] {
        &[]
    }
    fn pixels(&self) -> &[f32] {
        self
    }
}

/// Images per second acknowledged by the transmitter for `count` Send calls with
/// `concurrency` in flight.
async fn service_rate(
    client: &crate::client::LinkClient,
    images: &Arc<Vec<Vec<u8>>>,
    count: usize,
    concurrency: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, images) = (client.clone(), images.clone());
        tasks.push(tokio::spawn(async move {
            for i in (worker..count).step_by(concurrency) {
                let image = images[i % images.len()].clone();
                client
                    .send(image, &format!("bench-tput-{concurrency}-{i}"))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The figures as text.
pub fn render(r: &BenchReport) -> String {
    format!(
        "bundle {}, k={}, provider {}, throughput: median of {} rounds\n\
         (a)   raw ONNX, image encoder + JSCC encoder, 1 thread:       {:9.1} images/s\n\
         (a')  core pipeline: decode, preprocess, encoders, power norm:{:9.1} images/s\n\
         (a'') (a') in {} threads:                                      {:9.1} images/s\n\
         (b)   transmitter service via gRPC, one Send at a time:       {:9.1} images/s\n\
         (b')  the same with {} Sends in flight:                        {:9.1} images/s\n\
         service over raw: (b)/(a') = {:.3}, (b')/(a'') = {:.3}\n\
         (c)   at 20 dB over {} images: Send median {:.2} ms, p99 {:.2} ms; \
         Send+Classify median {:.2} ms, p99 {:.2} ms\n\
         the transmitter's own preprocess + encoders time per Send: median {:.3} ms \
         (raw (a') per image: {:.3} ms)\n",
        r.bundle,
        r.k,
        r.provider,
        r.rounds,
        r.raw_onnx_images_per_s,
        r.raw_with_preprocess_images_per_s,
        r.concurrency,
        r.raw_with_preprocess_concurrent_images_per_s,
        r.service_sequential_images_per_s,
        r.concurrency,
        r.service_concurrent_images_per_s,
        r.sequential_service_over_raw,
        r.concurrent_service_over_raw,
        r.end_to_end_latency_20db.count,
        r.send_latency_20db.median_ms,
        r.send_latency_20db.p99_ms,
        r.end_to_end_latency_20db.median_ms,
        r.end_to_end_latency_20db.p99_ms,
        r.transmitter_encode_stages.median_ms,
        1e3 / r.raw_with_preprocess_images_per_s,
    )
}
