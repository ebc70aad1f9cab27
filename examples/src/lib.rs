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
