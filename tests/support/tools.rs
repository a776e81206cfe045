//! Outside tools a few tests drive (a real MTA, a browser, openssl). `./test.sh`
//! installs them and sets `OWNLIST_TEST_REQUIRE_TOOLS`, so a missing one fails the test there; under
//! plain `cargo test` a test whose tool is missing says so and what to install, and is skipped.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Whether `program args…` runs; when it does not, `test` is skipped (or fails under `./test.sh`)
/// with `install` as the line to run.
pub fn present(test: &str, program: &str, args: &[&str], install: &str) -> bool {
    let runs = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return true;
    }
    let message = format!("{test} needs {program}: {install} (./test.sh installs it)");
    assert!(std::env::var_os("OWNLIST_TEST_REQUIRE_TOOLS").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

/// Postfix's smtp-sink.
pub fn smtp_sink(test: &str) -> bool {
    // smtp-sink without arguments prints its usage and exits 1: `which` tells whether it is there.
    present(test, "sh", &["-c", "command -v smtp-sink"], "apt-get install -y postfix")
}

/// openssl (DKIM keys as operators make them).
pub fn openssl(test: &str) -> bool {
    present(test, "openssl", &["version"], "apt-get install -y openssl")
}

/// Headless Chromium.
pub fn chromium(test: &str) -> bool {
    present(test, "sh", &["-c", "command -v chromium || command -v chromium-browser"], "apt-get install -y chromium")
}

/// SpamAssassin, with its shipped rules (local tests only: nothing is looked up on the network).
pub fn spamassassin(test: &str) -> bool {
    present(test, "spamassassin", &["--version"], "apt-get install -y spamassassin")
}

/// axe-core's script (the accessibility rules), as `./test.sh` installs it from npm.
pub fn axe(test: &str) -> Option<std::path::PathBuf> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/node_modules/axe-core/axe.min.js");
    if script.is_file() {
        return Some(script);
    }
    let message =
        format!("{test} needs axe-core: npm install --prefix target/tools axe-core@4.14.1 (./test.sh installs it)");
    assert!(std::env::var_os("OWNLIST_TEST_REQUIRE_TOOLS").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}

/// Lighthouse's command line, as `./test.sh` installs it from npm (it drives Chromium).
pub fn lighthouse(test: &str) -> Option<std::path::PathBuf> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/node_modules/.bin/lighthouse");
    if bin.is_file() && chromium(test) {
        return Some(bin);
    }
    let message =
        format!("{test} needs Lighthouse: npm install --prefix target/tools lighthouse@12.8.2 (./test.sh installs it)");
    assert!(std::env::var_os("OWNLIST_TEST_REQUIRE_TOOLS").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}
