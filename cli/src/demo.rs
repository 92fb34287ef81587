//! `semclip demo`: the whole link in one process. Starts transmitter, channel simulator
//! and receiver on 127.0.0.1 ports chosen by the system, sends the sample images at a few
//! SNRs and prints the receiver's top labels for each, marking whether the top label is
//! the class in the file's name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::client::LinkClient;
use crate::cluster::{LocalLink, LocalOptions};
use crate::output::Table;
use crate::CIFAR10_CLASSES;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Model bundle to serve.
    #[arg(long, env = "SEMCLIP_BUNDLE", default_value = "bundles/tiny-lit")]
    pub bundle: PathBuf,

    /// Folder of sample images named <class>.jpg.
    #[arg(long, default_value = "samples")]
    pub samples: PathBuf,

    /// SNRs to send at, in dB, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "20,0,-10"
    )]
    pub snr_db: Vec<f32>,

    /// Comma-separated label set; the CIFAR-10 class names by default.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Number of ranked labels shown per image.
    #[arg(long, default_value_t = 3)]
    pub top_k: u32,

    /// Seed of the channel's noise generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One answer of the demo.
#[derive(Debug, Clone)]
pub struct DemoRow {
    pub file: String,
    /// Class named by the file (its stem).
    pub expected: String,
    /// SNR the channel applied, as the receiver reports it.
    pub snr_db: f32,
    /// Ranked (label, probability).
    pub labels: Vec<(String, f32)>,
}

impl DemoRow {
    /// Whether the top label is the class in the file's name.
    pub fn is_match(&self) -> bool {
        self.labels
            .first()
            .map(|(l, _)| l == &self.expected)
            .unwrap_or(false)
    }
}

/// The `*.jpg`, `*.jpeg` and `*.png` files of `dir`, sorted by name.
pub fn sample_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read sample folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no sample images (*.jpg, *.png) in {}", dir.display());
    }
    Ok(files)
}

/// Sends each file at each SNR through `client` and asks for the top labels.
pub async fn answers(
    client: &LinkClient,
    files: &[PathBuf],
    snrs_db: &[f32],
    labels: &[String],
    top_k: u32,
    seed: u64,
) -> Result<Vec<DemoRow>> {
    let mut rows = Vec::new();
    for &snr_db in snrs_db {
        client.set_channel(Some(snr_db), None, Some(seed)).await?;
        for path in files {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let id = format!("demo-{stem}-{snr_db:+.0}dB");
            let reply = client.send_at_snr(&bytes, &id, snr_db).await?;
            let answer = client
                .classify(&reply.message_id, labels, &[], top_k)
                .await?;
            rows.push(DemoRow {
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                expected: stem,
                snr_db: answer.snr_db,
                labels: answer
                    .labels
                    .into_iter()
                    .map(|l| (l.label, l.probability))
                    .collect(),
            });
        }
    }
    Ok(rows)
}

/// The rows as a table: image, SNR, ranked labels, match mark.
pub fn render(rows: &[DemoRow]) -> String {
    let mut table = Table::new([
        "image",
        "SNR (dB)",
        "top labels (probability)",
        "top-1 right",
    ]);
    for r in rows {
        let labels: Vec<String> = r
            .labels
            .iter()
            .map(|(l, p)| format!("{l} {:.2}", p))
            .collect();
        table.row([
            r.file.clone(),
            format!("{:+.0}", r.snr_db),
            labels.join(", "),
            if r.is_match() { "yes" } else { "no" }.to_string(),
        ]);
    }
    let right = rows.iter().filter(|r| r.is_match()).count();
    format!(
        "{}\n{right} of {} top labels match the file name.\n",
        table.render(),
        rows.len()
    )
}

/// Runs the demo as described by `args`.
pub async fn run(args: DemoArgs) -> Result<()> {
    let files = sample_files(&args.samples)?;
    let labels: Vec<String> = if args.labels.is_empty() {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        args.labels.iter().map(|l| l.trim().to_string()).collect()
    };

    eprintln!(
        "starting the link in this process with bundle {}",
        args.bundle.display()
    );
    let link = LocalLink::start(LocalOptions {
        bundle: args.bundle.clone(),
        ..LocalOptions::default()
    })
    .await?;
    let client = link.client()?;
    let e = client.endpoints();
    eprintln!(
        "transmitter {}, channel {}, receiver {}",
        e.transmitter, e.channel, e.receiver
    );

    let result = answers(
        &client,
        &files,
        &args.snr_db,
        &labels,
        args.top_k,
        args.seed,
    )
    .await;
    link.shutdown().await?;
    print!("{}", render(&result?));
    Ok(())
}
