//! The `agentry` binary as users run it. Having an integration test here also makes
//! `cargo test`/`cargo nextest run` build `target/debug/agentry` with the features of the
//! test build, which `scripts/test` hands to every suite that starts a server
//! (`AGENTRY_BIN`), so that no suite builds the binary a second time with other features.

use std::process::Command;

#[test]
fn version_prints_the_package_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_agentry"))
        .arg("--version")
        .output()
        .expect("run agentry --version");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(
        printed.trim(),
        format!("agentry {}", env!("CARGO_PKG_VERSION")),
        "{printed:?}"
    );
}
