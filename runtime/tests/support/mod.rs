//! Helpers of the simulation tests.
pub mod turmoil_udp;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use synod::Node;
use synod_actors::{DiskFaults, Engine, EngineConfig, GroupConfig, Placement, SharedMemLog};
use synod_net::TlsMaterial;
use turmoil_udp::TurmoilUdpSocket;

/// A turmoil simulation with `seed`, 1 ms ticks, ending after `limit`.
pub fn simulation<'a>(seed: u64, limit: std::time::Duration) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(limit)
        .tick_duration(std::time::Duration::from_millis(1))
        .build()
}

/// What one simulated node process is started with.
pub struct SimNode {
    /// Its id.
    pub id: u64,
    /// The other nodes.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Its certificate.
    pub tls: TlsMaterial,
    /// Its data directory (identity files and snapshots).
    pub dir: PathBuf,
    /// Its "disk", which outlives a crash.
    pub store: SharedMemLog,
    /// Fault injection on that disk.
    pub disk_faults: Option<DiskFaults>,
    /// Group behaviour.
    pub group: GroupConfig,
    /// Seed of the run (node and QUIC seeds derive from it).
    pub seed: u64,
}

impl SimNode {
    /// Starts the node on the current simulated host, listening on `port`.
    pub async fn start(self, port: u16) -> Result<Node, Box<dyn std::error::Error>> {
        let socket =
            turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).await?;
        let cfg = EngineConfig {
            node_id: self.id,
            peers: self.peers,
            tls: self.tls,
            data_dir: self.dir,
            group: self.group,
            seed: self.seed.wrapping_mul(31).wrapping_add(self.id),
            max_frame_bytes: 16 << 20,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            disk_faults: self.disk_faults,
        };
        let placement = Placement::Local {
            store: self.store,
            socket: Arc::new(TurmoilUdpSocket::new(socket)),
            seed: self.seed ^ (self.id << 40),
        };
        Ok(Node::from_engine(Engine::start(cfg, placement).await?))
    }
}

/// Data directories of a new cluster of `nodes` nodes (node `i + 1` in
/// the `i`-th), each vouched new as `synod init` does.
pub fn new_node_dirs(nodes: u64) -> Vec<tempfile::TempDir> {
    (1..=nodes)
        .map(|id| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            synod_actors::identity::Identity::init_new(dir.path(), id).expect("a new directory");
            dir
        })
        .collect()
}
