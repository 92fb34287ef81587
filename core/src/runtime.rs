//! ONNX Runtime: loading the shared library, choosing the execution provider, and
//! sessions that many tasks can share.
//!
//! The library is loaded at run time (`ort` with `load-dynamic`): [`init_ort`] takes an
//! explicit path, else `ORT_DYLIB_PATH`, else searches for the `onnxruntime` Python wheel's
//! `libonnxruntime.so*` under `.venv/lib/python3*/site-packages/onnxruntime/capi/` in the
//! current directory, the executable's directory and their ancestors.
//!
//! Device choice: [`Device::Cpu`] uses the CPU provider; [`Device::Cuda`] registers the
//! CUDA provider and fails with [`Error::Provider`] when it cannot be registered;
//! [`Device::Auto`] tries CUDA and falls back to the CPU. The provider that actually runs
//! is logged once per model set, at info.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Environment variable naming the ONNX Runtime shared library.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Which hardware the ONNX models run on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when it can be registered, else the CPU.
    #[default]
    Auto,
    /// The CPU execution provider.
    Cpu,
    /// The CUDA execution provider; an error when it cannot be registered.
    Cuda,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(Error::invalid(format!(
                "unknown device {other:?} (expected auto, cpu or cuda)"
            ))),
        }
    }
}

/// The execution provider that actually runs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// ONNX Runtime's CUDA provider.
    Cuda,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "CPU",
            Provider::Cuda => "CUDA",
        })
    }
}

/// How sessions are created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOptions {
    /// Execution provider choice.
    pub device: Device,
    /// Intra-op threads per session; `None` lets ONNX Runtime decide (one per core).
    pub intra_threads: Option<usize>,
    /// Sessions per model; requests beyond this many wait for a free one. Each session
    /// holds its own copy of the weights.
    pub pool_size: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            device: Device::Auto,
            intra_threads: None,
            pool_size: 1,
        }
    }
}

impl RuntimeOptions {
    /// Default options on `device`.
    pub fn with_device(device: Device) -> Self {
        RuntimeOptions {
            device,
            ..Default::default()
        }
    }
}

/// The process-wide ONNX Runtime environment and where its library came from.
struct Runtime {
    env: Environment,
    dylib: PathBuf,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads the ONNX Runtime library and creates the process-wide environment.
///
/// `dylib` overrides the search (see the module docs). Calling it again after a success is
/// a no-op (the library can be loaded only once per process). The error says where the
/// library was looked for and how to install it.
pub fn init_ort(dylib: Option<&Path>) -> Result<()> {
    runtime(dylib).map(|_| ())
}

/// The process-wide ONNX Runtime environment (initialising it with the default search when
/// needed), for code that drives `ort` sessions directly, such as the raw-throughput
/// baseline of the benchmarks. Only one environment can exist per process.
pub fn ort_environment() -> Result<&'static Environment> {
    runtime(None).map(|rt| &rt.env)
}

/// Path of the loaded ONNX Runtime library, once [`init_ort`] has succeeded.
pub fn loaded_dylib() -> Option<&'static Path> {
    RUNTIME.get().map(|r| r.dylib.as_path())
}

fn runtime(dylib: Option<&Path>) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        if let Some(p) = dylib {
            if p != rt.dylib {
                tracing::debug!(
                    requested = %p.display(),
                    loaded = %rt.dylib.display(),
                    "ONNX Runtime already loaded; keeping the loaded library"
                );
            }
        }
        return Ok(rt);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }

    let path = match dylib {
        Some(p) => p.to_path_buf(),
        None => find_dylib()?,
    };
    if !path.is_file() {
        return Err(Error::Runtime(format!(
            "library {} does not exist; {}",
            path.display(),
            INSTALL_HINT
        )));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        Error::Runtime(format!(
            "cannot load {}: {e}; {INSTALL_HINT}",
            path.display()
        ))
    })?;
    let env = builder
        .with_name("semclip")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::Runtime(format!("cannot create the environment: {e}")))?;
    tracing::info!(library = %path.display(), "ONNX Runtime loaded");
    Ok(RUNTIME.get_or_init(|| Runtime { env, dylib: path }))
}

const INSTALL_HINT: &str = "set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1 (shipped in the \
    onnxruntime==1.31.1 Python wheel, onnxruntime/capi/), or run scripts/setup-python.sh to \
    create .venv";

/// The library named by `ORT_DYLIB_PATH`, else the first found by the `.venv` search.
pub fn find_dylib() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV) {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            roots.extend(dir.ancestors().map(Path::to_path_buf));
        }
    }
    roots.dedup();
    for root in &roots {
        if let Some(p) = dylib_in_venv(&root.join(".venv")) {
            return Ok(p);
        }
    }
    Err(Error::Runtime(format!(
        "{ORT_DYLIB_ENV} is not set and no .venv/lib/python3*/site-packages/onnxruntime/capi/\
         libonnxruntime.so* was found in {} or its ancestors; {INSTALL_HINT}",
        roots
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the current directory".into())
    )))
}

/// `libonnxruntime.so*` of the onnxruntime wheel installed in the Python `venv`.
fn dylib_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .collect();
    pythons.sort();
    for py in pythons {
        let capi = py.join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        // The versioned name sorts after the bare one; prefer it (the wheel ships only it).
        libs.sort();
        if let Some(p) = libs.pop() {
            return Some(p);
        }
    }
    None
}

/// Decides which provider runs, given the device asked for.
///
/// Probes by registering CUDA on a throw-away session builder. The decision is logged at
/// info the first time it is made for a device, at debug afterwards.
pub(crate) fn resolve_provider(device: Device) -> Result<Provider> {
    let rt = runtime(None)?;
    let (provider, reason) = match device {
        Device::Cpu => (Provider::Cpu, "requested".to_string()),
        Device::Cuda | Device::Auto => match probe_cuda(rt) {
            Ok(()) => (Provider::Cuda, "CUDA provider registered".to_string()),
            Err(e) if device == Device::Cuda => {
                return Err(Error::Provider(format!(
                    "CUDA was requested but cannot be registered: {e}"
                )))
            }
            Err(e) => (Provider::Cpu, format!("CUDA unavailable: {e}")),
        },
    };

    static LOGGED: Mutex<Vec<Device>> = Mutex::new(Vec::new());
    let first = {
        let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
        let first = !logged.contains(&device);
        if first {
            logged.push(device);
        }
        first
    };
    if first {
        tracing::info!(%device, %provider, %reason, "ONNX Runtime execution provider selected");
    } else {
        tracing::debug!(%device, %provider, %reason, "ONNX Runtime execution provider selected");
    }
    Ok(provider)
}

fn probe_cuda(rt: &Runtime) -> std::result::Result<(), String> {
    let builder = Session::builder(&rt.env).map_err(|e| e.to_string())?;
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A pool of sessions of one ONNX model; safe to share between threads and tasks.
///
/// `ort` sessions need exclusive access to run, so each sits behind a mutex; a caller
/// takes the first free one and otherwise waits its turn on one chosen round-robin.
pub struct OnnxSession {
    /// File name of the model within its bundle, for error messages.
    name: String,
    /// The sessions; all load the same model.
    pool: Vec<Mutex<Session>>,
    /// Round-robin start for callers that find every session busy.
    next: AtomicUsize,
    /// Input names in the model's order.
    inputs: Vec<String>,
    /// Output names in the model's order.
    outputs: Vec<String>,
}

impl fmt::Debug for OnnxSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxSession")
            .field("name", &self.name)
            .field("pool", &self.pool.len())
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// One named input of a run: f32 or i64 data with its shape.
pub(crate) enum Input<'a> {
    F32(&'a str, Vec<usize>, &'a [f32]),
    I64(&'a str, Vec<usize>, &'a [i64]),
}

impl OnnxSession {
    /// Loads `path` into `opts.pool_size` sessions on `provider`.
    pub(crate) fn load(
        path: &Path,
        name: &str,
        provider: Provider,
        opts: &RuntimeOptions,
    ) -> Result<OnnxSession> {
        let rt = runtime(None)?;
        let n = opts.pool_size.max(1);
        let mut pool = Vec::with_capacity(n);
        for _ in 0..n {
            pool.push(Mutex::new(build_session(rt, path, name, provider, opts)?));
        }
        let (inputs, outputs) = {
            let s = pool[0].lock().unwrap_or_else(|e| e.into_inner());
            (
                s.inputs().iter().map(|o| o.name().to_string()).collect(),
                s.outputs().iter().map(|o| o.name().to_string()).collect(),
            )
        };
        tracing::debug!(model = name, sessions = n, %provider, "ONNX model loaded");
        Ok(OnnxSession {
            name: name.to_string(),
            pool,
            next: AtomicUsize::new(0),
            inputs,
            outputs,
        })
    }

    /// The model's file name within its bundle.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Input names of the model.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// Output names of the model.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Checks that the model has these inputs and output.
    pub(crate) fn expect_io(&self, inputs: &[&str], output: &str) -> Result<()> {
        for i in inputs {
            if !self.inputs.iter().any(|n| n == i) {
                return Err(Error::onnx(
                    &self.name,
                    format!("has no input {i:?} (inputs: {:?})", self.inputs),
                ));
            }
        }
        if !self.outputs.iter().any(|n| n == output) {
            return Err(Error::onnx(
                &self.name,
                format!("has no output {output:?} (outputs: {:?})", self.outputs),
            ));
        }
        Ok(())
    }

    /// Runs the model and returns the f32 output `output` with its shape.
    pub(crate) fn run_f32(
        &self,
        inputs: &[Input<'_>],
        output: &str,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for input in inputs {
            let (name, value): (&str, SessionInputValue<'_>) = match input {
                Input::F32(name, shape, data) => (
                    name,
                    TensorRef::from_array_view((shape.clone(), *data))
                        .map_err(|e| Error::onnx(&self.name, format!("input {name}: {e}")))?
                        .into(),
                ),
                Input::I64(name, shape, data) => (
                    name,
                    TensorRef::from_array_view((shape.clone(), *data))
                        .map_err(|e| Error::onnx(&self.name, format!("input {name}: {e}")))?
                        .into(),
                ),
            };
            values.push((Cow::Borrowed(name), value));
        }

        let mut session = self.acquire();
        let outputs = session
            .run(values)
            .map_err(|e| Error::onnx(&self.name, format!("run failed: {e}")))?;
        let value = outputs
            .get(output)
            .ok_or_else(|| Error::onnx(&self.name, format!("no output {output:?}")))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::onnx(&self.name, format!("output {output}: {e}")))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        Ok((shape, data.to_vec()))
    }

    /// A free session, else waits for one picked round-robin.
    fn acquire(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.pool {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn build_session(
    rt: &Runtime,
    path: &Path,
    name: &str,
    provider: Provider,
    opts: &RuntimeOptions,
) -> Result<Session> {
    let err = |e: &dyn fmt::Display| Error::onnx(name, e);
    let mut builder = Session::builder(&rt.env).map_err(|e| err(&e))?;
    if let Some(n) = opts.intra_threads {
        builder = builder.with_intra_threads(n).map_err(|e| err(&e))?;
    }
    if provider == Provider::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| Error::Provider(format!("CUDA for {name}: {e}")))?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| Error::onnx(name, format!("cannot load {}: {e}", path.display())))
}
