//! `semclip`: the command-line client of the SemCLIP link.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use semclip_cli::client::{Endpoints, LinkClient};
use semclip_cli::output;
use semclip_proto::v1::Fading;

/// Client of the SemCLIP link: send images as semantic symbols, set the channel, and ask
/// the receiver zero-shot questions about what arrived.
#[derive(Debug, Parser)]
#[command(name = "semclip", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    endpoints: EndpointArgs,

    /// Log filter for diagnostics on stderr (e.g. "info", "semclip=debug").
    #[arg(long, global = true, env = "SEMCLIP_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct EndpointArgs {
    /// Address of the transmitter service.
    #[arg(long, global = true, env = "SEMCLIP_TRANSMITTER",
          default_value = semclip_cli::DEFAULT_TRANSMITTER)]
    transmitter: String,

    /// Address of the channel simulator.
    #[arg(long, global = true, env = "SEMCLIP_CHANNEL",
          default_value = semclip_cli::DEFAULT_CHANNEL)]
    channel: String,

    /// Address of the receiver service.
    #[arg(long, global = true, env = "SEMCLIP_RECEIVER",
          default_value = semclip_cli::DEFAULT_RECEIVER)]
    receiver: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run transmitter, channel and receiver in this process and send the sample images at
    /// 20, 0 and -10 dB, printing the receiver's top labels for each.
    Demo(semclip_cli::demo::DemoArgs),

    /// Send images through the link (encode, channel, decode, store at the receiver).
    Send {
        /// Image files (JPEG, PNG or WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Message id (only with one image); the transmitter makes one when absent.
        #[arg(long)]
        id: Option<String>,
        /// Print JSON (one object per line) instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Ask the receiver to rank labels for a received message.
    Classify {
        /// Message id, as printed by `send` or `list`.
        id: String,
        /// Comma-separated candidate labels (repeatable).
        #[arg(long, required = true, value_delimiter = ',')]
        labels: Vec<String>,
        /// Prompt template with one "{}" for the label (repeatable; several are averaged).
        /// Without it, the bundle's learned prompt is used.
        #[arg(long = "template")]
        templates: Vec<String>,
        /// Number of ranked labels to print; 0 prints all.
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Show or change the channel simulator's configuration.
    #[command(subcommand)]
    Channel(ChannelCommand),

    /// Print messages as they arrive at the receiver, with their top labels (Ctrl-C stops).
    Watch {
        /// Print JSON (one object per line).
        #[arg(long)]
        json: bool,
    },

    /// List the messages stored at the receiver, newest first.
    List {
        /// At most this many; 0 lists all.
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Accuracy against SNR on a class-per-folder image set, with latency figures.
    Eval(semclip_cli::eval::EvalArgs),

    /// Raw ONNX throughput against service throughput, and end-to-end latency at 20 dB.
    Bench(semclip_cli::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Change SNR, fading or seed; fields not given keep their value.
    Set {
        /// SNR in dB: 10*log10(1/s2) for unit symbol energy and complex noise variance s2.
        #[arg(long, allow_hyphen_values = true)]
        snr_db: Option<f32>,
        /// Channel model.
        #[arg(long, value_enum)]
        fading: Option<FadingArg>,
        /// Seed of the noise and fading generator.
        #[arg(long)]
        seed: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration in force.
    Get {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FadingArg {
    /// y = x + n.
    Awgn,
    /// y = h x + n with h ~ CN(0, 1) drawn once per frame.
    Rayleigh,
}

impl From<FadingArg> for Fading {
    fn from(f: FadingArg) -> Self {
        match f {
            FadingArg::Awgn => Fading::Awgn,
            FadingArg::Rayleigh => Fading::RayleighBlock,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let endpoints = Endpoints {
        transmitter: cli.endpoints.transmitter,
        channel: cli.endpoints.channel,
        receiver: cli.endpoints.receiver,
    };
    match cli.command {
        Command::Demo(args) => semclip_cli::demo::run(args).await,
        Command::Eval(args) => semclip_cli::eval::run(args, endpoints).await,
        Command::Bench(args) => semclip_cli::bench::run(args).await,
        Command::Send { images, id, json } => {
            if id.is_some() && images.len() > 1 {
                bail!("--id names one message; give one image with it");
            }
            let client = LinkClient::new(endpoints)?;
            for path in &images {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read image {}", path.display()))?;
                let reply = client.send(bytes, id.as_deref().unwrap_or("")).await?;
                let file = path.display().to_string();
                if json {
                    println!("{}", output::send_json(&file, &reply));
                } else {
                    println!("{}", output::send_text(&file, &reply));
                }
            }
            Ok(())
        }
        Command::Classify {
            id,
            labels,
            templates,
            top_k,
            json,
        } => {
            let labels: Vec<String> = labels.into_iter().map(|l| l.trim().to_string()).collect();
            let client = LinkClient::new(endpoints)?;
            let reply = client.classify(&id, &labels, &templates, top_k).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::classify_json(&reply))?
                );
            } else {
                print!("{}", output::classify_text(&reply));
            }
            Ok(())
        }
        Command::Channel(ChannelCommand::Set {
            snr_db,
            fading,
            seed,
            json,
        }) => {
            if snr_db.is_none() && fading.is_none() && seed.is_none() {
                bail!("nothing to change: give --snr-db, --fading or --seed");
            }
            let client = LinkClient::new(endpoints)?;
            let config = client
                .set_channel(snr_db, fading.map(Fading::from), seed)
                .await?;
            print_channel(&config, json);
            Ok(())
        }
        Command::Channel(ChannelCommand::Get { json }) => {
            let client = LinkClient::new(endpoints)?;
            print_channel(&client.get_channel().await?, json);
            Ok(())
        }
        Command::List { limit, json } => {
            let client = LinkClient::new(endpoints)?;
            let messages = client.list(limit).await?;
            if json {
                let all: Vec<_> = messages.iter().map(output::message_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if messages.is_empty() {
                println!("no messages stored");
            } else {
                print!("{}", output::messages_text(&messages));
            }
            Ok(())
        }
        Command::Watch { json } => {
            let client = LinkClient::new(endpoints)?;
            let mut stream = client.watch().await?;
            loop {
                tokio::select! {
                    next = stream.next() => match next {
                        Some(Ok(m)) => {
                            if json {
                                println!("{}", output::message_json(&m));
                            } else {
                                println!("{}", output::message_line(&m));
                            }
                        }
                        Some(Err(status)) => return Err(client.receiver_error(status).into()),
                        None => bail!("the receiver closed the stream"),
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
    }
}

fn print_channel(config: &semclip_proto::v1::ChannelConfig, json: bool) {
    if json {
        println!("{}", output::channel_json(config));
    } else {
        println!("{}", output::channel_text(config));
    }
}
