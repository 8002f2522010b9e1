//! `synod-bench`: Synod's benchmarks, one subcommand per workload.
use clap::{Parser, Subcommand};

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
    /// Print the list of workloads (more arrive with the storage and runtime issues).
    List,
}

fn main() {
    match Cli::parse().command {
        Command::List => println!("workloads: list"),
    }
}
