//! Daemon configuration: command-line flags, environment variables and an optional file.
//!
//! Every daemon describes its configuration as one clap struct whose flags all have an
//! environment variable (`SEMCLIP_...`). A `--config FILE` flag (TOML, YAML or JSON, read by
//! the `config` crate) may supply any of the same settings under the field names
//! (`snake_case` or `kebab-case`). Precedence, highest first: command line, environment,
//! file, built-in default. Unknown keys in the file are an error, so that a misspelt setting
//! is never silently ignored.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Device;

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line was invalid, or `--help`/`--version` was asked for; `exit()` prints
    /// the message and exits with clap's status code.
    #[error(transparent)]
    Cli(#[from] clap::Error),

    /// The configuration file could not be read or parsed.
    #[error("configuration file {}: {source}", path.display())]
    File {
        /// The file given with `--config`.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: config::ConfigError,
    },

    /// The configuration file names a setting the daemon does not have.
    #[error("configuration file {}: unknown setting `{key}`", path.display())]
    UnknownKey {
        /// The file given with `--config`.
        path: PathBuf,
        /// The offending key.
        key: String,
    },

    /// A value in the configuration file has the wrong type or range.
    #[error("configuration file {}: {message}", path.display())]
    Value {
        /// The file given with `--config`.
        path: PathBuf,
        /// The deserialiser's message, which names the field.
        message: String,
    },
}

/// Parses the process's command line and environment, then merges the optional
/// `--config` file (see the module docs for precedence).
pub fn load<T>() -> Result<T, ConfigError>
where
    T: clap::Parser + Serialize + DeserializeOwned,
{
    load_from(std::env::args_os())
}

/// [`load`] with explicit arguments (the first is the program name).
pub fn load_from<T, I, S>(args: I) -> Result<T, ConfigError>
where
    T: clap::Parser + Serialize + DeserializeOwned,
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let matches = T::command().try_get_matches_from(args)?;
    let parsed = T::from_arg_matches(&matches)?;
    match matches.try_get_one::<PathBuf>("config").ok().flatten() {
        Some(path) => merge_file(parsed, &matches, path),
        None => Ok(parsed),
    }
}

/// Overrides the settings of `parsed` that neither the command line nor the environment set
/// with the values of the file at `path`.
fn merge_file<T>(parsed: T, matches: &ArgMatches, path: &Path) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let file_values: serde_json::Map<String, serde_json::Value> = config::Config::builder()
        .add_source(config::File::from(path))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source,
        })?;

    let mut merged = match serde_json::to_value(&parsed) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => unreachable!("daemon configurations serialise to a JSON object"),
    };

    for (key, value) in file_values {
        let field = key.replace('-', "_");
        if field == "config" || !merged.contains_key(&field) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let explicit = matches!(
            matches.value_source(&field),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !explicit {
            merged.insert(field, value);
        }
    }

    serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| ConfigError::Value {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The model bundle and where to run it; shared by the transmitter and the receiver.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ModelOptions {
    /// Model bundle directory (see docs/bundle.md).
    #[arg(long, env = "SEMCLIP_BUNDLE", default_value = "bundles/tiny-lit")]
    pub bundle: PathBuf,

    /// Where the ONNX models run: `auto` uses CUDA when it can be registered, else the CPU.
    #[arg(long, env = "SEMCLIP_DEVICE", value_enum, default_value_t = Device::Auto)]
    pub device: Device,

    /// Path of libonnxruntime (default: the project's Python environment).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
}

/// Address of a daemon's Prometheus endpoint, or `off`.
///
/// Port 0 picks a free port (logged at start), which is what tests and the in-process demo
/// use so that several daemons never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl MetricsAddr {
    /// No metrics endpoint.
    pub const OFF: MetricsAddr = MetricsAddr(None);
}

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" | "none" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|e| format!("`{addr}` is neither `off` nor a socket address: {e}")),
        }
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for MetricsAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Logs the effective configuration once at start, as JSON, at info.
pub fn log_effective<T: Serialize>(daemon: &str, config: &T) {
    match serde_json::to_string(config) {
        Ok(json) => tracing::info!(daemon, config = %json, "effective configuration"),
        Err(e) => tracing::warn!(daemon, "cannot serialise the configuration: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser, Serialize, Deserialize)]
    struct Demo {
        #[arg(long)]
        #[serde(skip_serializing_if = "Option::is_none", default)]
        config: Option<PathBuf>,
        #[arg(long, env = "SEMCLIP_TEST_DEMO_PORT", default_value_t = 1)]
        port: u16,
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long, default_value = "off")]
        metrics_addr: MetricsAddr,
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("semclip-common-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_fills_what_the_command_line_leaves_unset() {
        let dir = temp_dir("merge");
        let file = write(
            &dir,
            "c.toml",
            "port = 7\nname = \"file\"\nmetrics-addr = \"127.0.0.1:0\"\n",
        );
        let cfg: Demo =
            load_from(["x", "--config", file.to_str().unwrap(), "--name", "cli"]).unwrap();
        assert_eq!(cfg.port, 7);
        assert_eq!(cfg.name, "cli");
        assert_eq!(
            cfg.metrics_addr,
            MetricsAddr(Some("127.0.0.1:0".parse().unwrap()))
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = temp_dir("unknown");
        let file = write(&dir, "c.json", r#"{"prot": 7}"#);
        let err = load_from::<Demo, _, _>(["x", "--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("unknown setting `prot`"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let dir = temp_dir("types");
        let file = write(&dir, "c.json", r#"{"port": "seven"}"#);
        let err = load_from::<Demo, _, _>(["x", "--config", file.to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::Value { .. }), "{err}");
    }

    #[test]
    fn metrics_addr_parses_off_and_addresses() {
        assert_eq!("off".parse::<MetricsAddr>().unwrap(), MetricsAddr::OFF);
        assert_eq!(
            "127.0.0.1:9".parse::<MetricsAddr>().unwrap().to_string(),
            "127.0.0.1:9"
        );
        assert!("nonsense".parse::<MetricsAddr>().is_err());
    }
}
