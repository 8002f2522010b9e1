//! A cluster of node processes on this machine, for demos, benchmarks and
//! black-box tests: dev certificates, free loopback ports chosen at run
//! time, one config file and data directory per node, and processes that
//! can be killed (SIGKILL), paused (SIGSTOP), resumed and restarted. Every
//! process is killed when the cluster is dropped.

use std::collections::BTreeMap;

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use synod_actors::identity::{Identity, IdentityError};

use synod_core::NodeId;
use synod_net::tls::dev::{self, DevCerts};

use crate::client::{Client, ClientConfig};
use crate::config::{Fsync, LogLevel};
use crate::error::SynodError;
use nix::sys::signal::Signal;

/// What cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (ids 1..=n).
    pub nodes: u64,
    /// Groups of the built-in KvStore each node hosts.
    pub kv_groups: u64,
    /// Directory for certificates, configs, data and logs.
    pub dir: PathBuf,
    /// The program to run and the arguments before `--config FILE`
    /// (e.g. the `synod` binary and `["node"]`).
    pub program: PathBuf,
    /// Arguments before `--config`.
    pub args: Vec<String>,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Entries between snapshots.
    pub snapshot_every: u64,
    /// `storage.fsync`.
    pub fsync: Fsync,
    /// `log.level`.
    pub log_level: LogLevel,
    /// `raft.lease_reads`.
    pub lease_reads: bool,
    /// `raft.balance_leaders` (default on).
    pub balance_leaders: bool,
    /// `raft.watch_history` (default 1,000).
    pub watch_history: usize,
    /// `service.kv_voters`: the voters the KV groups start with (empty:
    /// every node).
    pub kv_voters: Vec<NodeId>,
    /// Nodes (the highest ids) that are configured everywhere but not
    /// started by [`LocalCluster::start`]: machines to grow onto later
    /// ([`LocalCluster::restart`] starts one).
    pub spare: u64,
}

impl ClusterOptions {
    /// Three nodes, defaults for the rest.
    pub fn new(dir: &Path, program: PathBuf, args: Vec<String>) -> Self {
        ClusterOptions {
            nodes: 3,
            kv_groups: 1,
            dir: dir.to_path_buf(),
            program,
            args,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 10_000,
            fsync: Fsync::Always,
            log_level: LogLevel::Info,
            lease_reads: false,
            balance_leaders: true,
            watch_history: 1_000,
            kv_voters: Vec::new(),
            spare: 0,
        }
    }
}

struct LocalNode {
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running local cluster.
pub struct LocalCluster {
    opts: ClusterOptions,
    certs: DevCerts,
    nodes: BTreeMap<NodeId, LocalNode>,
}

/// `n` distinct free UDP ports on loopback (held at once, then released:
/// another process could take one meanwhile, but nothing here would).
fn free_addrs(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    sockets.iter().map(|s| s.local_addr()).collect()
}

fn node_config(
    o: &ClusterOptions,
    id: NodeId,
    addrs: &BTreeMap<NodeId, SocketAddr>,
    certs: &DevCerts,
) -> String {
    let (_, files) = certs
        .nodes
        .iter()
        .find(|(n, _)| *n == id)
        .expect("a certificate per node");
    let mut s = format!(
        "id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\n",
        addrs[&id],
        o.dir.join(format!("node-{id}")).display()
    );
    for (&p, a) in addrs {
        if p != id {
            s += &format!("\n[[peers]]\nid = {p}\naddr = \"{a}\"\n");
        }
    }
    s += &format!(
        "\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.ca.display(),
        files.cert.display(),
        files.key.display()
    );
    s += &format!(
        "\n[raft]\ntick_ms = {}\nelection_ticks = {}\nheartbeat_ticks = {}\nsnapshot_every = {}\n\
         lease_reads = {}\nbalance_leaders = {}\nwatch_history = {}\n",
        o.tick_ms,
        o.election_ticks,
        o.heartbeat_ticks,
        o.snapshot_every,
        o.lease_reads,
        o.balance_leaders,
        o.watch_history
    );
    s += &format!("\n[storage]\nfsync = \"{}\"\n", o.fsync);
    s += &format!("\n[log]\nlevel = \"{}\"\n", o.log_level);
    s += &format!("\n[service]\nkv_groups = {}\n", o.kv_groups);
    if !o.kv_voters.is_empty() {
        s += &format!("kv_voters = {:?}\n", o.kv_voters);
    }
    s
}

impl LocalCluster {
    /// Generates certificates and configs, and starts every node.
    pub fn start(opts: ClusterOptions) -> Result<LocalCluster, String> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
        let ids: Vec<NodeId> = (1..=opts.nodes).collect();
        let certs = dev::generate(&opts.dir.join("certs"), "synod-local-ca", &ids, &["local"])
            .map_err(|e| e.to_string())?;
        let addrs: BTreeMap<NodeId, SocketAddr> = ids
            .iter()
            .copied()
            .zip(free_addrs(ids.len()).map_err(|e| e.to_string())?)
            .collect();
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let config = opts.dir.join(format!("node-{id}.toml"));
            std::fs::write(&config, node_config(&opts, id, &addrs, &certs))
                .map_err(|e| format!("{}: {e}", config.display()))?;
            nodes.insert(
                id,
                LocalNode {
                    addr: addrs[&id],
                    config,
                    log: opts.dir.join(format!("node-{id}.log")),
                    child: None,
                },
            );
        }
        for &id in &ids {
            // A new cluster: vouch that every node is new (`synod init`),
            // so a node that has not caught up yet can still help elect a
            // leader. A directory that already holds state is kept as is.
            let data_dir = opts.dir.join(format!("node-{id}"));
            match Identity::init_new(&data_dir, id) {
                Ok(()) | Err(IdentityError::NotEmpty { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let started = ids.len().saturating_sub(opts.spare as usize);
        let mut cluster = LocalCluster { opts, certs, nodes };
        for &id in &ids[..started] {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).ok_or(format!("no node {id}"))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let child = Command::new(&self.opts.program)
            .args(&self.opts.args)
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.opts.program.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Node ids and addresses.
    pub fn addrs(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.nodes.iter().map(|(id, n)| (*id, n.addr)).collect()
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// A client of this cluster (inside a tokio runtime).
    pub fn client(&self) -> Result<Client, SynodError> {
        Client::new(self.client_config()?)
    }

    /// The configuration of [`LocalCluster::client`], to adjust (timeouts,
    /// addresses) before creating a client with it.
    pub fn client_config(&self) -> Result<ClientConfig, SynodError> {
        let tls = self
            .certs
            .client("local")
            .map_err(|e| SynodError::Unavailable(e.to_string()))?;
        Ok(ClientConfig::new(self.addrs(), tls))
    }

    /// The files of the client certificate [`LocalCluster::client`] uses:
    /// (CA certificate, client certificate, client key), for a client in
    /// another process (`synod kv --ca .. --cert .. --key ..`).
    pub fn client_files(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        let (_, f) = self.certs.clients.iter().find(|(n, _)| n == "local")?;
        Some((self.certs.ca.clone(), f.cert.clone(), f.key.clone()))
    }

    /// A command that runs `program` (the `synod` binary, a client of the
    /// cluster) with the cluster in its environment: `SYNOD_ENDPOINTS`,
    /// `SYNOD_CA`, `SYNOD_CERT` and `SYNOD_KEY` (the client certificate of
    /// [`LocalCluster::client_files`]).
    pub fn client_command(&self, program: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        let endpoints: Vec<String> = self
            .addrs()
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect();
        command.env("SYNOD_ENDPOINTS", endpoints.join(","));
        if let Some((ca, cert, key)) = self.client_files() {
            command
                .env("SYNOD_CA", ca)
                .env("SYNOD_CERT", cert)
                .env("SYNOD_KEY", key);
        }
        command
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// Whether node `id`'s process is alive (reaps it if it exited).
    pub fn is_running(&mut self, id: NodeId) -> bool {
        let Some(child) = self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) else {
            return false;
        };
        matches!(child.try_wait(), Ok(None))
    }

    /// SIGKILL: the process dies at once, without any cleanup. Returns
    /// how the process ended, as reaped after the signal (`None` if it was
    /// not running), so a test can confirm the kill happened: a process
    /// killed by it reports SIGKILL; one that had exited on its own before,
    /// its exit code.
    pub fn kill(&mut self, id: NodeId) -> Option<ExitStatus> {
        let mut child = self.nodes.get_mut(&id).and_then(|n| n.child.take())?;
        let _ = child.kill();
        child.wait().ok()
    }

    fn signal(&self, id: NodeId, sig: Signal) -> Result<(), String> {
        let pid = self.pid(id).ok_or(format!("node {id} is not running"))?;
        let raw = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig)
            .map_err(|e| format!("{sig} to node {id} (pid {pid}): {e}"))
    }

    /// SIGSTOP: the process freezes (a long GC pause, a stuck VM).
    pub fn pause(&self, id: NodeId) -> Result<(), String> {
        self.signal(id, Signal::SIGSTOP)
    }

    /// SIGCONT after [`LocalCluster::pause`].
    pub fn resume(&self, id: NodeId) -> Result<(), String> {
        self.signal(id, Signal::SIGCONT)
    }

    /// Starts node `id` again (after a kill), on the same data directory.
    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let _ = self.kill(id);
        self.spawn(id)
    }

    /// Kills node `id` and replaces its data directory with an empty one
    /// vouched new and joining (`synod init --join`): a machine whose disk
    /// was replaced, which hosts groups only once added to them again.
    /// Start it again with [`LocalCluster::restart`].
    pub fn wipe(&mut self, id: NodeId) -> Result<(), String> {
        let _ = self.kill(id);
        let data_dir = self.opts.dir.join(format!("node-{id}"));
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .map_err(|e| format!("{}: {e}", data_dir.display()))?;
        }
        Identity::init_new(&data_dir, id).map_err(|e| e.to_string())?;
        synod_actors::catalog::Catalog::init_joining(&data_dir).map_err(|e| e.to_string())
    }

    /// SIGTERM every node and wait for them (a clean shutdown).
    pub fn stop_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let _ = self.signal(id, Signal::SIGTERM);
        }
        for id in ids {
            if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Starts every stopped node again.
    pub fn start_all(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].child.is_none() {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    /// The last `lines` lines of node `id`'s log (for failure reports).
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        let Some(n) = self.nodes.get(&id) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The scheduler state of node `id`'s process, from `/proc/<pid>/stat`
    /// (`'T'`: stopped, as after [`LocalCluster::pause`]; `'S'`, `'R'`:
    /// running), or `None` if it does not run.
    pub fn process_state(&self, id: NodeId) -> Option<char> {
        process_state_of(self.pid(id)?)
    }

    /// CPU time (user + system) used so far by node `id`'s process.
    pub fn cpu_time(&self, id: NodeId) -> Option<Duration> {
        cpu_time_of(self.pid(id)?)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let _ = self.resume(id);
            let _ = self.kill(id);
        }
    }
}

/// How many entries node `node` is behind the furthest of `others`, in
/// the group of `1..=groups` where it is furthest behind.
pub async fn lag(
    client: &Client,
    node: NodeId,
    others: &[NodeId],
    groups: u64,
) -> Result<u64, String> {
    let applied_in = |status: &[crate::GroupStatus], g: u64| {
        status.iter().find(|s| s.group == g).map(|s| s.applied)
    };
    let mine = client.status(node).await.map_err(|e| e.to_string())?;
    let mut theirs = Vec::new();
    for &o in others {
        theirs.push(client.status(o).await.map_err(|e| e.to_string())?);
    }
    let mut worst = 0;
    for g in 1..=groups {
        let a = applied_in(&mine, g).ok_or(format!("node {node} does not host group {g} yet"))?;
        let best = theirs
            .iter()
            .filter_map(|t| applied_in(t, g))
            .max()
            .unwrap_or(0);
        worst = worst.max(best.saturating_sub(a));
    }
    Ok(worst)
}

/// Whether node `node` has applied, in each of groups `1..=groups`, as
/// far as every node of `others`; says how far behind it is when not.
pub async fn caught_up(
    client: &Client,
    node: NodeId,
    others: &[NodeId],
    groups: u64,
) -> Result<(), String> {
    match lag(client, node, others, groups).await? {
        0 => Ok(()),
        n => Err(format!("node {node} is {n} entries behind")),
    }
}

fn process(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok()?).ok()
}

fn stat_of(pid: u32) -> Option<procfs::process::Stat> {
    process(pid)?.stat().ok()
}

/// The state letter of a process (`R`, `S`, `T` when stopped, ...), from
/// `/proc/<pid>/stat`.
pub fn process_state_of(pid: u32) -> Option<char> {
    Some(stat_of(pid)?.state)
}

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmrss
}

/// CPU time of a process (user + system), from `/proc/<pid>/stat`, in the
/// kernel's clock ticks as the kernel reports their rate.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = stat_of(pid)?;
    let hz = procfs::ticks_per_second().max(1);
    let ticks = stat.utime + stat.stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen_running_with_memory_and_cpu_time() {
        let me = std::process::id();
        // Burn some CPU so the kernel has counted at least a tick.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_time_of(me).unwrap_or_default() < Duration::from_millis(20) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no CPU time counted"
            );
        }
        std::hint::black_box(x);
        // The main thread waits for this test's thread: R or S.
        assert!(matches!(process_state_of(me), Some('R' | 'S')));
        assert!(rss_kib_of(me).is_some_and(|k| k > 0));
        assert_eq!(process_state_of(u32::MAX), None);
    }

    #[test]
    fn a_stopped_child_is_seen_stopped_and_resumes() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_state_of(child.id()) != Some('T') {
            assert!(std::time::Instant::now() < deadline, "never stopped");
            std::thread::yield_now();
        }
        nix::sys::signal::kill(pid, Signal::SIGCONT).expect("SIGCONT");
        while process_state_of(child.id()) == Some('T') {
            assert!(std::time::Instant::now() < deadline, "never resumed");
            std::thread::yield_now();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
