//! Library side of the `semclip` command-line client: typed clients of the three services,
//! an in-process link for demos, evaluations and tests, the evaluation sweep, the benchmark
//! and the human-readable output.
//!
//! Conventions are those of the wire protocol: `k` is the number of complex channel uses of
//! one image, symbols are power-normalised to `(1/k) * sum |x_i|^2 = 1`, and the SNR in dB
//! is `10 * log10(1 / s2)` for complex noise variance `s2`.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod eval;
pub mod output;
pub mod plot;
pub mod rpc;
pub mod stats;

/// The ten CIFAR-10 class names, in the data set's order; the demo's label set.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Default address of the transmitter service.
pub const DEFAULT_TRANSMITTER: &str = "127.0.0.1:50051";
/// Default address of the channel simulator.
pub const DEFAULT_CHANNEL: &str = "127.0.0.1:50052";
/// Default address of the receiver service.
pub const DEFAULT_RECEIVER: &str = "127.0.0.1:50053";
