//! The `semclip` commands against a real link (the three services started in this test's
//! process on 127.0.0.1:0 with the fixture bundle), checked through their JSON output.
//!
//! Needs the fixture bundle (`SEMCLIP_TEST_FIXTURE`, default `target/semclip-fixture`) and
//! ONNX Runtime (`ORT_DYLIB_PATH`, default the project's `.venv`); fails with set-up
//! instructions when either is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use semclip_cli::cluster::{LocalLink, LocalOptions};
use semclip_common::Device;
use serde_json::Value;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The fixture directory; panics with instructions when it or ONNX Runtime is missing.
fn fixture() -> PathBuf {
    let dir = std::env::var_os("SEMCLIP_TEST_FIXTURE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/semclip-fixture"));
    assert!(
        dir.join("bundle/manifest.json").is_file(),
        "test fixture {} is missing: run scripts/setup-python.sh, then `.venv/bin/python -m \
         semclip_models.fixture --out target/semclip-fixture` from the workspace root",
        dir.display()
    );
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let default = workspace_root()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        assert!(
            default.is_file(),
            "ONNX Runtime not found: run scripts/setup-python.sh or set ORT_DYLIB_PATH"
        );
        std::env::set_var("ORT_DYLIB_PATH", default);
    }
    dir
}

fn semclip(link: &LocalLink) -> std::process::Command {
    let e = link.endpoints();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_semclip"));
    cmd.args(["--transmitter", &e.transmitter])
        .args(["--channel", &e.channel])
        .args(["--receiver", &e.receiver]);
    cmd
}

/// Runs `cmd` off the async runtime; returns stdout parsed as JSON, panicking with stderr
/// when the command fails.
async fn json_of(mut cmd: std::process::Command) -> Value {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_classify_channel_list_and_watch_commands() {
    let fixture = fixture();
    let image = fixture.join("reference/img1.jpg");
    let link = LocalLink::start(LocalOptions {
        bundle: fixture.join("bundle"),
        k: None,
        device: Device::Cpu,
    })
    .await
    .unwrap();

    // channel set / get
    let mut cmd = semclip(&link);
    cmd.args(["channel", "set", "--snr-db", "-3", "--seed", "9", "--json"]);
    let set = json_of(cmd).await;
    assert_eq!(set["snr_db"], -3.0);
    assert_eq!(set["seed"], 9);
    assert_eq!(set["fading"], "awgn");
    let mut cmd = semclip(&link);
    cmd.args(["channel", "get", "--json"]);
    assert_eq!(json_of(cmd).await, set);

    // watch, started before the send, prints the message as it arrives.
    let mut watch = semclip(&link)
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    // send
    let mut cmd = semclip(&link);
    cmd.args(["send", "--id", "cli-1", "--json"]).arg(&image);
    let sent = json_of(cmd).await;
    assert_eq!(sent["message_id"], "cli-1");
    assert!(sent["k"].as_u64().unwrap() > 0);
    assert!(sent["timings_ms"]["total"].as_f64().unwrap() > 0.0);

    // classify
    let mut cmd = semclip(&link);
    cmd.args([
        "classify",
        "cli-1",
        "--labels",
        "cat,dog,ship",
        "--top-k",
        "2",
        "--json",
    ]);
    let answer = json_of(cmd).await;
    assert_eq!(answer["message_id"], "cli-1");
    assert_eq!(answer["labels"].as_array().unwrap().len(), 2);
    let mut cmd = semclip(&link);
    cmd.args([
        "classify",
        "cli-1",
        "--labels",
        "cat,dog",
        "--template",
        "a photo of a {}.",
    ])
    .arg("--json");
    assert_eq!(json_of(cmd).await["prompt"], "template");

    // list
    let mut cmd = semclip(&link);
    cmd.args(["list", "--json"]);
    let listed = json_of(cmd).await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"cli-1"), "{ids:?}");

    // The watch process prints arriving messages. It may subscribe after "cli-1" arrived,
    // so probes are sent until one shows up (bounded).
    let (lines, seen_lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(watch_out).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let client = link.client().unwrap();
    let bytes = std::fs::read(&image).unwrap();
    let mut seen = None;
    for i in 0..50 {
        client
            .send(bytes.clone(), &format!("probe-{i}"))
            .await
            .unwrap();
        if let Ok(line) = seen_lines.recv_timeout(Duration::from_millis(400)) {
            seen = Some(line);
            break;
        }
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    let line = seen.expect("watch printed an arriving message within 50 probes");
    let seen: Value = serde_json::from_str(&line).unwrap();
    assert!(
        seen["message_id"].as_str().unwrap().starts_with("probe-") || seen["message_id"] == "cli-1",
        "{seen}"
    );
    assert_eq!(seen["snr_db"], -3.0);

    // An unknown id is an error naming the receiver and the id, with exit status 1.
    let mut cmd = semclip(&link);
    cmd.args(["classify", "nope", "--labels", "cat,dog"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "receiver at {}: not found",
            link.endpoints().receiver
        )) && stderr.contains("nope"),
        "{stderr}"
    );

    link.shutdown().await.unwrap();
}

/// A class-per-folder set made of the fixture's reference images: two classes.
fn tiny_dataset(fixture: &std::path::Path, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("semclip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reference = fixture.join("reference");
    for (class, files) in [
        ("cat", ["img0.png", "img1.jpg"]),
        ("dog", ["img2.png", "img1.jpg"]),
    ] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for f in files {
            std::fs::copy(reference.join(f), dir.join(class).join(f)).unwrap();
        }
    }
    dir
}

#[test]
fn eval_in_process_writes_json_markdown_and_png() {
    let fixture = fixture();
    let data = tiny_dataset(&fixture, "eval-data");
    let out = data.with_extension("out");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_semclip"))
        .args([
            "eval",
            "--in-process",
            "--quiet",
            "--snr-db=-5,10",
            "--limit",
            "3",
        ])
        .arg("--bundle")
        .arg(fixture.join("bundle"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("accuracy.json")).unwrap()).unwrap();
    assert_eq!(report["classes"], serde_json::json!(["cat", "dog"]));
    assert_eq!(report["images"], 3);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (r, snr) in results.iter().zip([-5.0, 10.0]) {
        assert_eq!(r["snr_db"], snr);
        assert_eq!(r["total"], 3);
        let accuracy = r["accuracy"].as_f64().unwrap();
        assert_eq!(accuracy, r["correct"].as_f64().unwrap() / 3.0);
        assert_eq!(r["send_latency"]["count"], 3);
        assert!(r["end_to_end_latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    }
    let md = std::fs::read_to_string(out.join("accuracy.md")).unwrap();
    assert!(md.contains("| -5.0 |") && md.contains("| 10.0 |"), "{md}");
    let png = std::fs::read(out.join("accuracy.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn demo_runs_on_any_bundle_and_marks_matches() {
    let fixture = fixture();
    let samples = std::env::temp_dir().join(format!("semclip-samples-{}", std::process::id()));
    std::fs::create_dir_all(&samples).unwrap();
    std::fs::copy(fixture.join("reference/img1.jpg"), samples.join("cat.jpg")).unwrap();
    std::fs::copy(fixture.join("reference/img0.png"), samples.join("ship.png")).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_semclip"))
        .args(["demo", "--snr-db", "20,-10"])
        .arg("--bundle")
        .arg(fixture.join("bundle"))
        .arg("--samples")
        .arg(&samples)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two images at two SNRs, each row marked; a random-init bundle may well be wrong, which
    // is not a failure of the demo.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("cat.jpg") || l.starts_with("ship.png"))
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert!(
        rows.iter().all(|r| r.ends_with("yes") || r.ends_with("no")),
        "{stdout}"
    );
    assert!(
        stdout.contains("top labels match the file name"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&samples).unwrap();
}
