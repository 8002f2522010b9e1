//! Node configuration: a TOML file, overridable from the command line.
//!
//! ```toml
//! id = 1
//! listen = "127.0.0.1:7001"
//! data_dir = "data/node-1"
//!
//! [[peers]]
//! id = 2
//! addr = "127.0.0.1:7002"
//!
//! [[peers]]
//! id = 3
//! addr = "127.0.0.1:7003"
//!
//! [tls]
//! ca = "certs/ca.pem"
//! cert = "certs/node-1.pem"
//! key = "certs/node-1.key"
//!
//! [raft]                 # all optional
//! tick_ms = 50
//! election_ticks = 10    # election timeout: 10-20 ticks (500-1000 ms)
//! heartbeat_ticks = 2
//! snapshot_every = 100000 # entries between snapshots
//! max_uncommitted = 10000
//! propose_timeout_ms = 10000
//! lease_reads = false    # Client::read_lease without a round (bounded clock drift)
//! balance_leaders = true # move leaderships until each node leads about its share
//! quiesce = true         # idle groups stop heartbeating and ticking (every node must agree)
//! watch_history = 1000   # applied commands each replica keeps for watches
//! watch_history_kb = 256 # and at most this many KiB of them
//!
//! [net]                  # optional
//! own_thread = false     # run QUIC on a thread of its own (see Placement::Threads)
//!
//! [storage]              # all optional
//! fsync = "always"       # "always", "never", or an interval like "10ms", "1s"
//! segment_mb = 64
//!
//! [log]
//! level = "warn"         # "critical", "error", "warn", "info", "debug", "trace"
//!
//! [service]              # what `synod node` hosts
//! kv_groups = 8          # groups 1..=8 of the built-in KvStore
//! # kv_voters = [1, 2, 3] # their starting voters (default: every node)
//! ```
//!
//! Unknown keys are errors (a typo must not silently fall back to a
//! default).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use synod_actors::GroupConfig;
use synod_core::NodeId;
use synod_net::TlsMaterial;
use synod_storage::{SyncPolicy, WalOptions};

use crate::error::ConfigError;

/// A peer node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
}

/// TLS files (PEM).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate (for `node-<id>.synod`).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Raft timing and limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Milliseconds per tick.
    pub tick_ms: u64,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Entries between snapshots (0: never).
    pub snapshot_every: u64,
    /// Most uncommitted entries per group before `Busy`.
    pub max_uncommitted: usize,
    /// How long a command may wait for its result.
    pub propose_timeout_ms: u64,
    /// Allow lease reads (`Client::read_lease`): a leader within its lease
    /// answers without a heartbeat round. Assumes bounded clock drift (see
    /// docs/USER_GUIDE.md); every node must agree. Off by default.
    pub lease_reads: bool,
    /// Run the leader balancer: a node leading clearly more than its share
    /// of the groups hands leaderships to nodes leading fewer (leader
    /// transfer), e.g. after a node restarted (docs/OPERATIONS.md). On by
    /// default; each node decides for itself.
    pub balance_leaders: bool,
    /// Let idle groups quiesce: no heartbeats and no ticks until something
    /// happens, node-level beats standing in for their leaders'
    /// heartbeats (docs/ARCHITECTURE.md, "Ten thousand groups"). On by
    /// default; every node of a cluster should agree.
    pub quiesce: bool,
    /// Applied commands (with results) each replica keeps so that watches
    /// can resume from them (`Client::watch`); older revisions are
    /// compacted. 0 keeps none.
    pub watch_history: usize,
    /// At most this many KiB of them per replica.
    pub watch_history_kb: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let g = GroupConfig::default();
        RaftConfig {
            tick_ms: g.tick.as_millis() as u64,
            election_ticks: g.election_ticks,
            heartbeat_ticks: g.heartbeat_ticks,
            snapshot_every: g.snapshot_every,
            max_uncommitted: g.max_uncommitted,
            propose_timeout_ms: g.propose_timeout.as_millis() as u64,
            lease_reads: g.lease_reads,
            balance_leaders: g.balance_leaders,
            quiesce: g.quiesce,
            watch_history: g.watch_history,
            watch_history_kb: g.watch_history_bytes >> 10,
        }
    }
}

/// When the WAL makes its writes durable (`storage.fsync`), parsed once,
/// when the configuration is read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum Fsync {
    /// `"always"`: every write is synced before it is acknowledged.
    #[default]
    Always,
    /// `"never"`: the OS decides (a crash loses acknowledged writes).
    Never,
    /// An interval (`"10ms"`, `"1s"`, any `humantime` duration): a
    /// crash loses up to that much of acknowledged writes.
    Every(Duration),
}

impl Fsync {
    /// The WAL's policy.
    pub fn policy(self) -> SyncPolicy {
        match self {
            Fsync::Always => SyncPolicy::Always,
            Fsync::Never => SyncPolicy::Never,
            Fsync::Every(d) => SyncPolicy::Every(d),
        }
    }
}

impl std::str::FromStr for Fsync {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Fsync, ConfigError> {
        match s.trim() {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            other => humantime::parse_duration(other)
                .ok()
                .filter(|d| !d.is_zero())
                .map(Fsync::Every)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "storage.fsync {other:?}: use \"always\", \"never\" or an interval \
                         like \"10ms\" or \"1s\""
                    ))
                }),
        }
    }
}

impl TryFrom<String> for Fsync {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<Fsync, ConfigError> {
        s.parse()
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Never => f.write_str("never"),
            Fsync::Every(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// The lowest level a node logs (`log.level`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum LogLevel {
    /// Only what stops the node.
    Critical,
    /// Errors.
    Error,
    /// Warnings (the default; `"warning"` too).
    #[default]
    Warn,
    /// Lifecycle events: elections, groups started, peers connected.
    Info,
    /// Everything the node does, per group.
    Debug,
    /// More.
    Trace,
}

impl LogLevel {
    /// The slog level.
    pub fn slog(self) -> slog::Level {
        match self {
            LogLevel::Critical => slog::Level::Critical,
            LogLevel::Error => slog::Level::Error,
            LogLevel::Warn => slog::Level::Warning,
            LogLevel::Info => slog::Level::Info,
            LogLevel::Debug => slog::Level::Debug,
            LogLevel::Trace => slog::Level::Trace,
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<LogLevel, ConfigError> {
        match s.trim() {
            "critical" => Ok(LogLevel::Critical),
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            other => Err(ConfigError::Invalid(format!(
                "log.level {other:?}: use critical, error, warn, info, debug or trace"
            ))),
        }
    }
}

impl TryFrom<String> for LogLevel {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<LogLevel, ConfigError> {
        s.parse()
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogLevel::Critical => "critical",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

/// WAL settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"always"` (default), `"never"`, or an interval such as `"10ms"`.
    pub fsync: Fsync,
    /// Segment size in MiB.
    pub segment_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: Fsync::Always,
            segment_mb: 64,
        }
    }
}

/// Transport settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetSettings {
    /// Run the QUIC transport on a thread of its own.
    pub own_thread: bool,
}

/// Logging.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Lowest level written to stderr.
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Warn,
        }
    }
}

/// What the `synod node` command hosts.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Groups `1..=kv_groups` of the built-in [`crate::kv::KvStore`].
    pub kv_groups: u64,
    /// The voters those groups start with (empty: every node). A node not
    /// listed hosts none of them until it is added as a learner; list the
    /// original set here for the life of the cluster (the groups' later
    /// changes live in their logs).
    pub kv_voters: Vec<NodeId>,
}

/// Everything a node needs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (>= 1, unique in the cluster).
    pub id: NodeId,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Where the WAL and snapshots live (one directory per node).
    pub data_dir: PathBuf,
    /// Every other node.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// TLS files.
    pub tls: TlsFiles,
    /// Raft settings.
    #[serde(default)]
    pub raft: RaftConfig,
    /// WAL settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Transport settings.
    #[serde(default)]
    pub net: NetSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Hosted services.
    #[serde(default)]
    pub service: ServiceConfig,
}

impl NodeConfig {
    /// Reads and validates a TOML file. Relative paths in it are taken
    /// relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = NodeConfig::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        if let Some(base) = path.parent() {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    /// Parses TOML (no validation: call [`NodeConfig::validate`]).
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Checks everything that can be checked without starting: ids, peers,
    /// timing, the fsync policy. TLS files are checked by
    /// [`NodeConfig::load_tls`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return invalid("id must be >= 1 (0 is reserved)".into());
        }
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 {
                return invalid("peer id 0 is reserved; use ids >= 1".into());
            }
            if p.id == self.id {
                return invalid(format!(
                    "peer id {} is this node's own id; list only the other nodes",
                    p.id
                ));
            }
            if !ids.insert(p.id) {
                return invalid(format!("peer id {} is listed twice", p.id));
            }
            if p.addr == self.listen {
                return invalid(format!(
                    "peer {} has this node's own listen address {}",
                    p.id, p.addr
                ));
            }
        }
        let mut addrs = BTreeSet::new();
        for p in &self.peers {
            if !addrs.insert(p.addr) {
                return invalid(format!("address {} is given to two peers", p.addr));
            }
        }
        for &v in &self.service.kv_voters {
            if v != self.id && !ids.contains(&v) {
                return invalid(format!(
                    "service.kv_voters lists node {v}, which is neither this node nor a peer; \
                     list it in peers or remove it"
                ));
            }
        }
        let r = &self.raft;
        if r.tick_ms == 0 {
            return invalid("raft.tick_ms must be >= 1".into());
        }
        if r.heartbeat_ticks == 0 || r.heartbeat_ticks >= r.election_ticks {
            return invalid(format!(
                "raft.heartbeat_ticks ({}) must be >= 1 and below raft.election_ticks ({})",
                r.heartbeat_ticks, r.election_ticks
            ));
        }
        if r.max_uncommitted == 0 || r.propose_timeout_ms == 0 {
            return invalid("raft.max_uncommitted and raft.propose_timeout_ms must be >= 1".into());
        }
        if self.storage.segment_mb == 0 || self.storage.segment_mb > 2048 {
            return invalid("storage.segment_mb must be between 1 and 2048".into());
        }
        Ok(())
    }

    /// Loads the TLS files and checks the certificate is this node's.
    pub fn load_tls(&self) -> Result<TlsMaterial, ConfigError> {
        let m = TlsMaterial::from_pem_files(&self.tls.ca, &self.tls.cert, &self.tls.key)
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let name = synod_net::tls::node_name(self.id);
        if !synod_net::tls::cert_is_for(&m.chain[0], &name) {
            return Err(ConfigError::Tls(format!(
                "{} is not a certificate for {name} (this node is {}): each node needs its own",
                self.tls.cert.display(),
                self.id
            )));
        }
        Ok(m)
    }

    /// The engine's group settings.
    pub fn group_config(&self) -> GroupConfig {
        let r = &self.raft;
        GroupConfig {
            tick: Duration::from_millis(r.tick_ms),
            election_ticks: r.election_ticks,
            heartbeat_ticks: r.heartbeat_ticks,
            snapshot_every: r.snapshot_every,
            max_uncommitted: r.max_uncommitted,
            propose_timeout: Duration::from_millis(r.propose_timeout_ms),
            lease_reads: r.lease_reads,
            balance_leaders: r.balance_leaders,
            quiesce: r.quiesce,
            watch_history: r.watch_history,
            watch_history_bytes: r.watch_history_kb << 10,
            ..GroupConfig::default()
        }
    }

    /// The WAL's options (validated config assumed).
    pub fn wal_options(&self) -> WalOptions {
        WalOptions {
            segment_size: self.storage.segment_mb << 20,
            sync: self.storage.fsync.policy(),
            ..WalOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        id = 1
        listen = "127.0.0.1:7001"
        data_dir = "data"
        [[peers]]
        id = 2
        addr = "127.0.0.1:7002"
        [tls]
        ca = "ca.pem"
        cert = "node-1.pem"
        key = "node-1.key"
    "#;

    fn invalid(extra: &str, replace: Option<(&str, &str)>) -> String {
        let mut text = format!("{BASE}\n{extra}");
        if let Some((a, b)) = replace {
            text = text.replace(a, b);
        }
        match NodeConfig::from_toml(&text).and_then(|c| c.validate().map(|_| c)) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = NodeConfig::from_toml(BASE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.raft.election_ticks, 10);
        assert_eq!(c.storage.fsync, Fsync::Always);
        assert_eq!(c.log.level, LogLevel::Warn);
        assert!(c.raft.balance_leaders && c.group_config().balance_leaders);
    }

    #[test]
    fn quiescence_is_on_by_default_and_can_be_turned_off() {
        let c = NodeConfig::from_toml(BASE).unwrap();
        assert!(c.raft.quiesce && c.group_config().quiesce);
        let c = NodeConfig::from_toml(&format!("{BASE}\n[raft]\nquiesce = false\n")).unwrap();
        c.validate().unwrap();
        assert!(!c.group_config().quiesce);
    }

    #[test]
    fn the_leader_balancer_can_be_turned_off() {
        let c =
            NodeConfig::from_toml(&format!("{BASE}\n[raft]\nbalance_leaders = false\n")).unwrap();
        c.validate().unwrap();
        assert!(!c.group_config().balance_leaders);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(invalid("", Some(("id = 2", "id = 1"))).contains("own id"));
        assert!(
            invalid("[[peers]]\nid = 2\naddr = \"127.0.0.1:7003\"", None).contains("listed twice")
        );
        assert!(
            invalid("", Some(("127.0.0.1:7002", "127.0.0.1:7001"))).contains("own listen address")
        );
        assert!(invalid("[raft]\nheartbeat_ticks = 10", None).contains("heartbeat_ticks"));
        assert!(invalid("[storage]\nfsync = \"sometimes\"", None).contains("storage.fsync"));
        assert!(invalid("[log]\nlevel = \"loud\"", None).contains("log.level"));
        assert!(invalid("", Some(("id = 1\n", "id = 0\n"))).contains("id must be >= 1"));
        let typo = invalid("[raft]\ntik_ms = 5", None);
        assert!(typo.contains("tik_ms"), "{typo}");
    }

    #[test]
    fn fsync_policies_and_levels_parse_once_into_types() {
        let fsync = |s: &str| s.parse::<Fsync>().map(Fsync::policy);
        assert_eq!(fsync("always").unwrap(), SyncPolicy::Always);
        assert_eq!(fsync("never").unwrap(), SyncPolicy::Never);
        assert_eq!(
            fsync("10ms").unwrap(),
            SyncPolicy::Every(Duration::from_millis(10))
        );
        assert_eq!(
            fsync("1s 500ms").unwrap(),
            SyncPolicy::Every(Duration::from_millis(1500))
        );
        assert_eq!(
            fsync("2min").unwrap(),
            SyncPolicy::Every(Duration::from_secs(120))
        );
        assert!(fsync("10").is_err(), "a bare number has no unit");
        assert!(fsync("0s").is_err(), "a zero interval");
        // What the local cluster writes back parses to the same value.
        for f in [
            Fsync::Always,
            Fsync::Never,
            Fsync::Every(Duration::from_millis(2500)),
        ] {
            assert_eq!(f.to_string().parse::<Fsync>().unwrap(), f);
        }
        let c = NodeConfig::from_toml(&format!(
            "{BASE}\n[storage]\nfsync = \"5ms\"\n[log]\nlevel = \"warning\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.wal_options().sync,
            SyncPolicy::Every(Duration::from_millis(5))
        );
        assert_eq!(c.log.level, LogLevel::Warn);
        assert_eq!(c.log.level.slog(), slog::Level::Warning);
        for l in ["critical", "error", "warn", "info", "debug", "trace"] {
            assert_eq!(l.parse::<LogLevel>().unwrap().to_string(), l);
        }
    }
}
