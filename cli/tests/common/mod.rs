//! What the CLI's test files share: a private CA directory, and running `colony` as a process.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// A private directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("colony-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `colony --ca-dir <ca_dir> <args>`, run to completion (a minute at most: a hang fails).
pub(crate) async fn colony(args: &[&str], ca_dir: &Path) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_colony"));
    // Global options first: a command after `--` (colony lock) takes everything that follows.
    cmd.arg("--ca-dir")
        .arg(ca_dir)
        .args(args)
        .env_remove("COLONY_SEEDS")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("colony hung")
        .expect("colony runs")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
