//! `semclip eval`: top-1 zero-shot accuracy against SNR on a class-per-folder image set,
//! sent through the link's real services (or an in-process link), with latency figures.
//!
//! For each SNR the channel is set, every image is sent, and the receiver is asked to rank
//! all folder names for it; the top label is compared with the image's folder. Results are
//! written as `accuracy.json`, `accuracy.md` and `accuracy.png` in the output folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::client::{Endpoints, LinkClient};
use crate::cluster::{LocalLink, LocalOptions};
use crate::plot::{self, Series};
use crate::stats::Latency;

/// Image file extensions read from the data folder (compared case-insensitively).
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder with one subfolder of images per class; the folder names are the labels.
    #[arg(long)]
    pub data: PathBuf,

    /// SNRs to evaluate, in dB, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "-15,-10,-5,0,5,10,15,20"
    )]
    pub snr_db: Vec<f32>,

    /// Complex channel uses per image. With --in-process the transmitter is started with
    /// it; against running services it is checked against the transmitter's k.
    #[arg(long)]
    pub k: Option<u32>,

    /// Use at most this many images in all, taken in turn from each class.
    #[arg(long)]
    pub limit: Option<usize>,

    /// Prompt template with one "{}" (repeatable); without it the learned prompt is used.
    #[arg(long = "template")]
    pub templates: Vec<String>,

    /// Folder for accuracy.json, accuracy.md and accuracy.png.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,

    /// Start transmitter, channel and receiver in this process instead of calling the
    /// services at --transmitter, --channel and --receiver.
    #[arg(long)]
    pub in_process: bool,

    /// Model bundle of the in-process services.
    #[arg(long, env = "SEMCLIP_BUNDLE", default_value = "bundles/tiny-lit")]
    pub bundle: PathBuf,

    /// Seed of the channel's noise generator (set before each SNR).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Images of a class-per-folder data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names (folder names), sorted.
    pub classes: Vec<String>,
    /// (image file, index into `classes`).
    pub items: Vec<(PathBuf, usize)>,
}

impl Dataset {
    /// Reads `dir`: each subfolder is a class, each image file in it an example. With
    /// `limit`, at most that many images are kept, taken round-robin over the classes in
    /// sorted order so that every class is represented.
    pub fn scan(dir: &Path, limit: Option<usize>) -> Result<Self> {
        let mut per_class: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read data folder {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            files.sort();
            if !files.is_empty() {
                per_class.push((name, files));
            }
        }
        per_class.sort_by(|a, b| a.0.cmp(&b.0));
        if per_class.len() < 2 {
            bail!(
                "{} needs at least two class subfolders with images (found {})",
                dir.display(),
                per_class.len()
            );
        }

        let total: usize = per_class.iter().map(|(_, f)| f.len()).sum();
        let wanted = limit.unwrap_or(total).min(total);
        let mut items = Vec::with_capacity(wanted);
        let mut round = 0;
        while items.len() < wanted {
            for (class, (_, files)) in per_class.iter().enumerate() {
                if let Some(f) = files.get(round) {
                    if items.len() < wanted {
                        items.push((f.clone(), class));
                    }
                }
            }
            round += 1;
        }
        Ok(Self {
            classes: per_class.into_iter().map(|(c, _)| c).collect(),
            items,
        })
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Figures of one SNR.
#[derive(Debug, Clone, Serialize)]
pub struct SnrResult {
    pub snr_db: f32,
    pub correct: usize,
    pub total: usize,
    /// correct / total.
    pub accuracy: f64,
    /// Client-side time of the Send call (encode, channel, decode, acknowledgement).
    pub send_latency: Latency,
    /// Client-side time of Send plus Classify for one image.
    pub end_to_end_latency: Latency,
}

/// Everything `accuracy.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub data: String,
    pub classes: Vec<String>,
    pub images: usize,
    pub k: u32,
    pub prompt: String,
    pub seed: u64,
    pub in_process: bool,
    pub command: Vec<String>,
    pub results: Vec<SnrResult>,
}

/// Runs the sweep described by `args` and writes its report files.
pub async fn run(args: EvalArgs, endpoints: Endpoints) -> Result<()> {
    let dataset = Dataset::scan(&args.data, args.limit)?;
    let images: Vec<Vec<u8>> = dataset
        .items
        .iter()
        .map(|(p, _)| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect::<Result<_>>()?;

    let local = if args.in_process {
        let options = LocalOptions {
            bundle: args.bundle.clone(),
            k: args.k,
            ..LocalOptions::default()
        };
        Some(LocalLink::start(options).await?)
    } else {
        None
    };
    let client = match &local {
        Some(link) => link.client()?,
        None => LinkClient::new(endpoints)?,
    };

    let report = sweep(&client, &dataset, &images, &args).await?;
    if let Some(link) = local {
        link.shutdown().await?;
    }

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let json_path = args.out.join("accuracy.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let md = markdown(&report);
    let md_path = args.out.join("accuracy.md");
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    let png_path = args.out.join("accuracy.png");
    let series = [Series {
        label: format!("k={}, {} prompt", report.k, report.prompt),
        points: report
            .results
            .iter()
            .map(|r| (f64::from(r.snr_db), r.accuracy))
            .collect(),
    }];
    let title = format!("Zero-shot top-1 accuracy, {} images", report.images);
    plot::accuracy_vs_snr(&png_path, &title, &series)?;

    print!("{md}");
    println!(
        "\nwrote {}, {} and {}",
        json_path.display(),
        md_path.display(),
        png_path.display()
    );
    Ok(())
}

/// Sends every image at every SNR and classifies it against all class names.
pub async fn sweep(
    client: &LinkClient,
    dataset: &Dataset,
    images: &[Vec<u8>],
    args: &EvalArgs,
) -> Result<EvalReport> {
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((images.len() * args.snr_db.len()) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("static template is valid")
            .progress_chars("=> "),
    );

    let mut results = Vec::new();
    let mut k_seen = None;
    for &snr_db in &args.snr_db {
        client
            .set_channel(Some(snr_db), None, Some(args.seed))
            .await?;
        bar.set_message(format!("{snr_db:+.1} dB"));
        // Not counted: waits until the change has reached the transmitter, so that the
        // timed sends below are encoded at this SNR without repetition.
        client
            .send_at_snr(&images[0], &format!("eval-{snr_db:+.1}dB-probe"), snr_db)
            .await?;
        let (mut correct, mut send_ms, mut e2e_ms) = (0, Vec::new(), Vec::new());

        for (i, ((_, class), image)) in dataset.items.iter().zip(images).enumerate() {
            let id = format!("eval-{snr_db:+.1}dB-{i}");
            let started = Instant::now();
            let reply = client.send(image.clone(), &id).await?;
            let sent = started.elapsed();
            if (reply.snr_db - snr_db).abs() > 1e-3 {
                bail!(
                    "message {id} was encoded at {:.2} dB while the channel was set to \
                     {snr_db:.2} dB: was the channel changed by someone else?",
                    reply.snr_db
                );
            }
            match (args.k, k_seen) {
                (Some(k), _) if reply.k != k => bail!(
                    "the transmitter sends k={} channel uses per image, not the requested {k}; \
                     start it with that k (or use --in-process)",
                    reply.k
                ),
                _ => k_seen = Some(reply.k),
            }
            let answer = client
                .classify(&reply.message_id, &dataset.classes, &args.templates, 1)
                .await?;
            let total = started.elapsed();
            let top = answer.labels.first().map(|l| l.label.as_str());
            if top == Some(dataset.classes[*class].as_str()) {
                correct += 1;
            }
            send_ms.push(sent.as_secs_f64() * 1e3);
            e2e_ms.push(total.as_secs_f64() * 1e3);
            bar.inc(1);
        }

        let total = dataset.items.len();
        results.push(SnrResult {
            snr_db,
            correct,
            total,
            accuracy: correct as f64 / total as f64,
            send_latency: Latency::of(&send_ms),
            end_to_end_latency: Latency::of(&e2e_ms),
        });
    }
    bar.finish_and_clear();

    Ok(EvalReport {
        data: args.data.display().to_string(),
        classes: dataset.classes.clone(),
        images: dataset.items.len(),
        k: k_seen.unwrap_or(0),
        prompt: if args.templates.is_empty() {
            "learned".to_string()
        } else {
            args.templates.join(" | ")
        },
        seed: args.seed,
        in_process: args.in_process,
        command: std::env::args().collect(),
        results,
    })
}

/// The report as a Markdown table with the command that produced it.
pub fn markdown(report: &EvalReport) -> String {
    let mut out = format!(
        "# Zero-shot accuracy against SNR\n\n{} images of {} classes from `{}`, k = {} complex \
         channel uses per image, {} prompt, channel seed {}.\n\nCommand: `{}`\n\n",
        report.images,
        report.classes.len(),
        report.data,
        report.k,
        report.prompt,
        report.seed,
        report.command.join(" ")
    );
    out.push_str(
        "| SNR (dB) | top-1 accuracy | correct | send median (ms) | send p99 (ms) \
         | send+classify median (ms) | send+classify p99 (ms) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &report.results {
        out.push_str(&format!(
            "| {:.1} | {:.2} % | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.snr_db,
            100.0 * r.accuracy,
            r.correct,
            r.total,
            r.send_latency.median_ms,
            r.send_latency.p99_ms,
            r.end_to_end_latency.median_ms,
            r.end_to_end_latency.p99_ms
        ));
    }
    out.push_str("\nThe plot `accuracy.png` shows the same accuracy against SNR.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_takes_classes_in_turn_under_a_limit() {
        let dir = std::env::temp_dir().join(format!("semclip-scan-{}", std::process::id()));
        for (class, n) in [("cat", 3), ("dog", 1), ("ant", 2)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..n {
                std::fs::write(dir.join(class).join(format!("{i}.jpg")), b"x").unwrap();
            }
        }
        std::fs::write(dir.join("cat").join("notes.txt"), b"x").unwrap();

        let all = Dataset::scan(&dir, None).unwrap();
        assert_eq!(all.classes, ["ant", "cat", "dog"]);
        assert_eq!(all.items.len(), 6);

        let some = Dataset::scan(&dir, Some(4)).unwrap();
        let classes: Vec<usize> = some.items.iter().map(|(_, c)| *c).collect();
        assert_eq!(classes, [0, 1, 2, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scan_refuses_a_folder_without_classes() {
        let dir = std::env::temp_dir().join(format!("semclip-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Dataset::scan(&dir, None).unwrap_err().to_string();
        assert!(err.contains("at least two class subfolders"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
