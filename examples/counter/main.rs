//! The smallest replicated actor: a counter, replicated by one Raft group
//! over three nodes. The three nodes run in this one process here (each
//! with its own QUIC endpoint and data directory); in production each runs
//! on its own machine with the same code.
//!
//! Run it: `cargo run --release --bin counter`

// serde derives the encoding of the actor's state (for snapshots) and of
// its messages (for the log and the network).
/// mimalloc, as the `synod` binary (docs/BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde::{Deserialize, Serialize};
use synod::{
    ApplyContext, Command, Handler, Node, NodeConfig, Query, QueryHandler, ReplicatedActor,
};

// The state. Every replica holds one; Raft makes them all apply the same
// messages in the same order, so they stay equal. `Clone` lets each node
// start from the same initial value; `Serialize`/`Deserialize` give it a
// snapshot format for free. `ReplicatedActor` lists the commands and
// queries it handles: sending it anything else does not compile.
#[derive(Clone, Default, Serialize, Deserialize, ReplicatedActor)]
#[synod(commands(Add), queries(Get))]
struct Counter {
    value: i64,
}

// A command: agreed on by the group, then handled on every replica. It
// answers with the counter's new value. Its wire name is written in the
// log: it is explicit, and must stay the same across versions of your
// program (rename or move the type freely).
#[derive(Serialize, Deserialize, Command)]
#[synod(name = "counter.add", result = "i64")]
struct Add(i64);

// A query: read-only, answered by one replica.
#[derive(Serialize, Deserialize, Query)]
#[synod(name = "counter.get", result = "i64")]
struct Get;

// The handler. It must be deterministic: only state, message and context
// may decide the result (no clock, no randomness, no I/O).
impl Handler<Add> for Counter {
    fn handle(&mut self, Add(n): Add, _ctx: &ApplyContext) -> i64 {
        self.value += n;
        self.value
    }
}

impl QueryHandler<Get> for Counter {
    fn query(&self, _: Get) -> i64 {
        self.value
    }
}

// actix runs the actors; `#[actix::main]` gives us an actix System.
#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A cluster CA and one certificate per node (demo only: bring your own
    // PKI in production). Ports are picked free on loopback.
    let dir = tempfile::tempdir()?;
    let certs =
        synod_net::tls::dev::generate(&dir.path().join("certs"), "counter-ca", &[1, 2, 3], &[])?;
    let sockets: Vec<_> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<_> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    drop(sockets);

    // Start three nodes. Each config says who the node is, where it listens,
    // who its peers are and where its data and certificates live.
    let mut counters = Vec::new();
    for id in 1..=3u64 {
        let (_, files) = &certs.nodes[id as usize - 1];
        let mut toml = format!(
            "id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\n",
            addrs[id as usize - 1],
            dir.path().join(format!("node-{id}")).display()
        );
        for peer in (1..=3u64).filter(|&p| p != id) {
            toml += &format!(
                "[[peers]]\nid = {peer}\naddr = \"{}\"\n",
                addrs[peer as usize - 1]
            );
        }
        toml += &format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            certs.ca.display(),
            files.cert.display(),
            files.key.display()
        );
        let config = NodeConfig::from_toml(&toml)?;
        // A new node of a new cluster: say so once, before its first start.
        Node::init_new(&config)?;
        let node = Node::start(config, synod::logging::discard()).await?;
        // Host this node's replica of group 1: a Counter starting at 0.
        counters.push(node.spawn_replicated(1, Counter::default()).await?);
    }

    // Send commands through any node: a node that is not the group's
    // leader forwards to it. Each result comes back once the command is
    // committed by a majority and applied.
    for (i, counter) in counters.iter().enumerate() {
        let value = counter.send(Add(10 * (i as i64 + 1))).await?;
        println!("node {}: Add({}) -> {value}", i + 1, 10 * (i + 1));
    }
    // A linearizable read sees every acknowledged command.
    println!("Get -> {}", counters[0].read(Get).await?);
    Ok(())
}
