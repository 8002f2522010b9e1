//! `synod-bench`: Synod's benchmarks, one subcommand per workload. Each
//! workload ends with one summary line; docs/BENCHMARKS.md records the
//! figures and the commands that produced them.
use clap::{Parser, Subcommand};

/// mimalloc: glibc's malloc cost a third of the write rate with 10,000
/// groups per node (docs/BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod failover;
mod groups;
mod wal;

/// Synod benchmarks.
#[derive(Parser, Debug)]
#[command(
    name = "synod-bench",
    about = "Synod benchmarks, one subcommand per workload"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The workloads.
#[derive(Subcommand, Debug)]
enum Command {
    /// Concurrent appends from many groups into one WAL (group commit).
    Wal(wal::WalArgs),
    /// The disk's raw write + fdatasync latency, for comparison with `wal`.
    Fsync(wal::FsyncArgs),
    /// Build a large WAL, then time how long reopening (recovery) takes.
    WalRecovery(wal::RecoveryArgs),
    /// A three-node cluster of separate processes under a closed-loop write load.
    Cluster(cluster::ClusterArgs),
    /// Many groups on three node processes: election time, idle CPU, memory,
    /// writes spread over every group, failover after a SIGKILL.
    Groups(groups::GroupsArgs),
    /// SIGKILL a group's leader again and again under a write load: time
    /// until writes succeed again after each kill.
    Failover(failover::FailoverArgs),
    /// (internal) Run one node of the benchmark cluster.
    #[command(hide = true)]
    Node(synod::cli::NodeArgs),
}

/// A temporary directory for a benchmark cluster (under `dir`, or the
/// current directory) and the options of three nodes that are this binary
/// run as `synod-bench node`. The directory goes when dropped.
pub(crate) fn cluster_options(
    workload: &str,
    dir: Option<&std::path::Path>,
) -> Result<(tempfile::TempDir, synod::local::ClusterOptions), String> {
    let base = dir.unwrap_or(std::path::Path::new("."));
    let dir = tempfile::Builder::new()
        .prefix(&format!("synod-bench-{workload}-"))
        .tempdir_in(base)
        .map_err(|e| format!("{}: {e}", base.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let opts = synod::local::ClusterOptions::new(dir.path(), exe, vec!["node".into()]);
    Ok((dir, opts))
}

fn main() {
    let result = match Cli::parse().command {
        Command::Wal(a) => wal::run_wal(&a),
        Command::Fsync(a) => wal::run_fsync(&a),
        Command::WalRecovery(a) => wal::run_recovery(&a),
        Command::Cluster(a) => cluster::run(&a),
        Command::Groups(a) => groups::run(&a),
        Command::Failover(a) => failover::run(&a),
        Command::Node(a) => synod::cli::run_node(&a),
    };
    if let Err(e) = result {
        eprintln!("synod-bench: {e}");
        std::process::exit(1);
    }
}
