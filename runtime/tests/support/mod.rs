//! Helpers of the simulation tests. Each test file uses some of them.
#![allow(dead_code)]
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

/// The turmoil host name of node `id`.
pub fn host_name(id: u64) -> String {
    format!("n{id}")
}

/// The addresses of nodes `1..=nodes`, all listening on `port`.
pub fn node_addrs(nodes: u64, port: u16) -> BTreeMap<u64, SocketAddr> {
    (1..=nodes)
        .map(|p| (p, SocketAddr::new(turmoil::lookup(host_name(p)), port)))
        .collect()
}

/// Hosts nodes `1..=nodes` in `sim`, each with an in-memory disk and no
/// faults, running `KvStore` groups `1..=groups` until the simulation
/// ends. Returns their data directories (keep them alive for the run).
pub fn host_kv_cluster(
    sim: &mut turmoil::Sim<'_>,
    certs: &synod_net::tls::dev::DevCerts,
    nodes: u64,
    groups: u64,
    seed: u64,
    port: u16,
) -> Vec<tempfile::TempDir> {
    let dirs = new_node_dirs(nodes);
    for id in 1..=nodes {
        let store = SharedMemLog::default();
        let dir = dirs[id as usize - 1].path().to_path_buf();
        let tls = certs.node(id).expect("a node certificate");
        sim.host(host_name(id), move || {
            let (store, dir, tls) = (store.clone(), dir.clone(), tls.clone());
            async move {
                let peers = node_addrs(nodes, port)
                    .into_iter()
                    .filter(|&(p, _)| p != id)
                    .collect();
                let node = SimNode {
                    id,
                    peers,
                    tls,
                    dir,
                    store,
                    disk_faults: None,
                    group: GroupConfig::default(),
                    seed,
                }
                .start(port)
                .await?;
                for g in 1..=groups {
                    node.spawn_replicated(g, synod::kv::KvStore::default())
                        .await?;
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    dirs
}

/// A client of nodes `1..=nodes` (on `node_port`) bound to `port` of the
/// current simulated host, with request timeout `timeout`.
pub async fn sim_client(
    tls: &TlsMaterial,
    nodes: u64,
    node_port: u16,
    port: u16,
    seed: u64,
    timeout: std::time::Duration,
) -> synod::Client {
    let socket = turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        .await
        .expect("a free client port");
    let mut cfg = synod::ClientConfig::new(node_addrs(nodes, node_port), tls.clone());
    cfg.timeout = timeout;
    synod::Client::with_socket(
        cfg,
        Arc::new(TurmoilUdpSocket::new(socket)),
        Some(seed ^ u64::from(port)),
    )
    .expect("a client")
}
