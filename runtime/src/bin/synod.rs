//! `synod`: run a node, generate dev certificates, or talk to a cluster.
use clap::{Parser, Subcommand};
use synod::cli::{
    run_certs, run_group, run_init, run_kv, run_node, run_status, CertsArgs, Exit, GroupArgs,
    InitArgs, KvArgs, NodeArgs, StatusArgs,
};

/// mimalloc: glibc's malloc cost a third of the write rate with 10,000
/// groups per node (docs/BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Synod: replicated actors on multi-raft over QUIC.
#[derive(Parser, Debug)]
#[command(name = "synod", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (hosting the built-in key-value groups of its config).
    Node(NodeArgs),
    /// Initialize the data directory of a NEW node (before its first
    /// start); a node started on an empty directory without it is treated
    /// as one that lost its disk.
    Init(InitArgs),
    /// Generate a dev CA and node/client certificates.
    Certs(CertsArgs),
    /// Talk to a cluster's key-value groups.
    Kv(KvArgs),
    /// Manage groups: create, delete, members, add-learner, promote, remove-member,
    /// transfer-leader.
    Group(GroupArgs),
    /// A table of every node's groups: role, term, leader, commit, applied
    /// and how far each replica lags.
    Status(StatusArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Node(a) => run_node(&a).map_err(Exit::from),
        Command::Init(a) => run_init(&a).map_err(Exit::from),
        Command::Certs(a) => run_certs(&a).map_err(Exit::from),
        Command::Kv(a) => run_kv(&a),
        Command::Group(a) => run_group(&a).map_err(Exit::from),
        Command::Status(a) => run_status(&a),
    };
    if let Err(e) = result {
        eprintln!("synod: {}", e.message);
        std::process::exit(e.code);
    }
}
