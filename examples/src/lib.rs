//! Holds colony's examples; see the `[[example]]` entries in Cargo.toml.

/// Logs to stderr at `default` level (`warn`, `error`...) unless `RUST_LOG` says otherwise:
/// the examples' output is their narrative on stdout, logs only when something is wrong.
pub fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}

/// Polls `done` every 5 ms until it holds; panics after 30 s, so a broken demo fails loudly
/// instead of hanging.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{what} took too long"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
