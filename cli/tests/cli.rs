//! The `semclip` binary as a user meets it: help texts, and clear errors with a non-zero
//! exit status when inputs are wrong or services are down.

use assert_cmd::Command;
use predicates::prelude::*;

fn semclip() -> Command {
    let mut cmd = Command::cargo_bin("semclip").unwrap();
    // The caller's environment must not point the client elsewhere.
    for var in [
        "SEMCLIP_TRANSMITTER",
        "SEMCLIP_CHANNEL",
        "SEMCLIP_RECEIVER",
        "SEMCLIP_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// An address on which nothing listens: a port the system handed out, then closed.
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[test]
fn every_command_has_help() {
    let commands: [&[&str]; 11] = [
        &[],
        &["demo"],
        &["send"],
        &["classify"],
        &["channel"],
        &["channel", "set"],
        &["channel", "get"],
        &["watch"],
        &["list"],
        &["eval"],
        &["bench"],
    ];
    for args in commands {
        let mut cmd = semclip();
        cmd.args(args).arg("--help");
        cmd.assert()
            .success()
            .stdout(predicate::str::contains("Usage: semclip"));
    }
}

#[test]
fn global_flags_and_environment_are_documented() {
    semclip()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("SEMCLIP_TRANSMITTER"))
        .stdout(predicate::str::contains("SEMCLIP_CHANNEL"))
        .stdout(predicate::str::contains("SEMCLIP_RECEIVER"));
}

#[test]
fn a_service_that_is_down_is_named_with_its_address() {
    let address = closed_address();
    semclip()
        .args(["--channel", &address, "channel", "get"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "error: channel at http://{address}: unavailable (connection refused)"
        )));

    semclip()
        .args(["list"])
        .env("SEMCLIP_RECEIVER", &address)
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "receiver at http://{address}: unavailable"
        )));
}

#[test]
fn a_missing_image_is_named() {
    semclip()
        .args([
            "--transmitter",
            &closed_address(),
            "send",
            "no/such/image.jpg",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "cannot read image no/such/image.jpg",
        ));
}

#[test]
fn wrong_arguments_fail_with_a_reason() {
    semclip()
        .args(["channel", "set"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("nothing to change"));
    semclip()
        .args(["send", "--id", "x", "a.jpg", "b.jpg"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--id names one message"));
    semclip()
        .args(["classify", "some-id"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--labels"));
    semclip()
        .args(["channel", "set", "--fading", "rician"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid value 'rician'"));
}

#[test]
fn eval_refuses_a_folder_without_classes() {
    let dir = std::env::temp_dir().join(format!("semclip-cli-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    semclip()
        .args(["eval", "--data"])
        .arg(&dir)
        .assert()
        .failure()
        .stderr(predicate::str::contains("at least two class subfolders"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_names_a_missing_sample_folder() {
    semclip()
        .args(["demo", "--samples", "no/such/folder"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "cannot read sample folder no/such/folder",
        ));
}
