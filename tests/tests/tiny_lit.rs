//! The offline default bundle answers the demo's questions: at 20 dB the top label of each
//! sample image (samples/<class>.jpg) is its class.

use semclip_cli::demo::{answers, render, sample_files};
use semclip_cli::CIFAR10_CLASSES;
use semclip_tests::{require_onnxruntime, start_link, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_are_right_at_20_db() {
    let root = workspace_root();
    let bundle = root.join("bundles/tiny-lit");
    assert!(
        bundle.join("manifest.json").is_file() && bundle.join("text_encoder.onnx").is_file(),
        "bundle {} is incomplete: train it (models/) and run scripts/setup-python.sh to \
         regenerate its text encoder",
        bundle.display()
    );
    let manifest = semclip_tests::manifest(&bundle);
    assert_eq!(
        manifest["random_init"],
        false,
        "bundle {} is not trained yet (manifest says random_init: true): train it with the \
         pipeline in models/",
        bundle.display()
    );
    require_onnxruntime();
    let files = sample_files(&root.join("samples")).unwrap();
    assert!(
        files.len() >= 8,
        "expected the 8 sample images, found {files:?}"
    );

    let (link, client) = start_link(&bundle).await;
    let labels: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    let rows = answers(&client, &files, &[20.0], &labels, 3, 0)
        .await
        .unwrap();
    link.shutdown().await.unwrap();

    let table = render(&rows);
    for row in &rows {
        assert!(
            CIFAR10_CLASSES.contains(&row.expected.as_str()),
            "sample {} is not named after a CIFAR-10 class",
            row.file
        );
        assert!(row.is_match(), "wrong top label at 20 dB:\n{table}");
    }
}
