//! The locks scenario's command-line options (flattened into every run's options).

use std::path::PathBuf;
use std::time::Duration;

use crate::parse_duration;

/// Options of the locks scenario (scenario 11).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LockArgs {
    /// Measured acquire+release pairs of the uncontended lock cell, per system and round.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) lock_pairs: usize,
    /// Pairs before the measured ones in the uncontended lock cell.
    #[arg(long, default_value_t = 100)]
    pub(crate) lock_warmup_pairs: usize,
    /// Clients of the contended lock cell (window: `--duration` after `--warmup`).
    #[arg(long, default_value_t = 16)]
    pub(crate) lock_clients: usize,
    /// Keys of the contended lock cell; client i takes key i mod this.
    #[arg(long, default_value_t = 3)]
    pub(crate) lock_keys: usize,
    /// TTL of colony's lock acquisitions (and of etcd's lease-per-lock leases, in whole
    /// seconds).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) lock_ttl: Duration,
    /// colony's `lock_max_ttl` on every node of the lock cluster (also the quarantine a fresh
    /// node waits out before it creates lock state).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) lock_max_ttl: Duration,
    /// An acquisition waiting longer than this for its key fails.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) lock_wait: Duration,
    /// Directory in which etcd's data directory is made (default: `$TMPDIR`); e.g. `/dev/shm`
    /// to take the disk's fsync out of etcd's figures.
    #[arg(long)]
    pub(crate) etcd_dir: Option<PathBuf>,
}
