//! A missing ONNX Runtime library is a clear error, not a panic. (Its own test binary: the
//! library can be loaded only once per process, so no other test may load it first.)

use semclip_core::error::Error;
use semclip_core::runtime::init_ort;

#[test]
fn missing_library_names_the_path_and_the_fix() {
    let path = std::path::Path::new("/nonexistent/libonnxruntime.so.1.31.1");
    match init_ort(Some(path)) {
        Err(Error::Runtime(msg)) => {
            assert!(
                msg.contains("/nonexistent/libonnxruntime.so.1.31.1"),
                "{msg}"
            );
            assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }

    // A file that is not a shared library.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    match init_ort(Some(&fake)) {
        Err(Error::Runtime(msg)) => assert!(msg.contains("cannot load"), "{msg}"),
        other => panic!("expected a runtime error, got {other:?}"),
    }
}
