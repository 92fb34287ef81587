//! Shared set-up of the integration tests: where the test bundle and ONNX Runtime are,
//! the in-process link, and test images made on the fly.
//!
//! The tests need two things built outside Cargo; when either is missing they fail with a
//! message that says how to make it, rather than passing without having run:
//! - the fixture bundle, `SEMCLIP_TEST_FIXTURE` (default `<workspace>/target/semclip-fixture`),
//!   made by `.venv/bin/python -m semclip_models.fixture --out target/semclip-fixture`;
//! - ONNX Runtime, `ORT_DYLIB_PATH` (default: the project's `.venv`), installed by
//!   `scripts/setup-python.sh`.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use semclip_cli::client::LinkClient;
use semclip_cli::cluster::{LocalLink, LocalOptions};
use semclip_common::Device;

/// Environment variable naming the fixture directory (holding `bundle/`).
pub const FIXTURE_ENV: &str = "SEMCLIP_TEST_FIXTURE";

const HOW_TO_FIXTURE: &str = "create it with `scripts/setup-python.sh` and then \
    `.venv/bin/python -m semclip_models.fixture --out target/semclip-fixture` \
    (run from the workspace root), or point SEMCLIP_TEST_FIXTURE at one";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The fixture bundle directory; panics with set-up instructions when it is missing.
pub fn fixture_bundle() -> PathBuf {
    let dir = std::env::var_os(FIXTURE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/semclip-fixture"));
    let bundle = dir.join("bundle");
    assert!(
        bundle.join("manifest.json").is_file(),
        "test fixture bundle {} is missing: {HOW_TO_FIXTURE}",
        bundle.display()
    );
    require_onnxruntime();
    bundle
}

/// Panics with set-up instructions when the ONNX Runtime library cannot be found.
pub fn require_onnxruntime() {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let default = workspace_root()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        if default.is_file() {
            // The daemons find it through the same variable.
            std::env::set_var("ORT_DYLIB_PATH", &default);
        }
    }
    match semclip_core::runtime::find_dylib() {
        Ok(path) if path.is_file() => {}
        Ok(path) => panic!(
            "ONNX Runtime library {} does not exist: run scripts/setup-python.sh or set \
             ORT_DYLIB_PATH",
            path.display()
        ),
        Err(e) => panic!("{e}: run scripts/setup-python.sh or set ORT_DYLIB_PATH"),
    }
}

/// The bundle's manifest as JSON.
pub fn manifest(bundle: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(bundle.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Starts the three services in-process with `bundle` on the CPU; returns the link and a
/// client of it.
pub async fn start_link(bundle: &Path) -> (LocalLink, LinkClient) {
    start_link_with(LocalOptions {
        bundle: bundle.to_path_buf(),
        k: None,
        device: Device::Cpu,
    })
    .await
}

/// [`start_link`] with explicit options.
pub async fn start_link_with(options: LocalOptions) -> (LocalLink, LinkClient) {
    let link = LocalLink::start(options).await.expect("the link starts");
    let client = link.client().unwrap();
    (link, client)
}

/// A `w` x `h` PNG whose colours depend on `seed`, so that different seeds give different
/// embeddings.
pub fn png_image(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(7 + seed) ^ y.wrapping_mul(13 + 3 * seed);
        image::Rgb([
            (v % 256) as u8,
            ((x + seed * 40) % 256) as u8,
            (y * 5 % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
