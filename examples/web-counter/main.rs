//! web-counter: an actix-web service whose handlers call a replicated actor.
//!
//! Two kinds of process, one binary:
//!
//! * `web-counter node --config node-N.toml`: a Synod node (as `synod
//!   node`) that hosts a replica of the [`Counter`] actor in group 1. Run
//!   three of them: the counter survives the loss of any one.
//! * `web-counter serve --http 127.0.0.1:8080`: a stateless HTTP front end.
//!   Its handlers send the counter's commands and queries to the cluster
//!   through a [`synod::Client`] (which finds the group's leader and
//!   follows it when it moves). Run as many as you like.
//!
//! ```text
//! POST /counter/add?n=5   -> 200 {"value":5}        (Add, committed by the group, then applied)
//! GET  /counter           -> 200 {"value":5}        (a linearizable read)
//! POST /counter/add?n=x   -> 400 (the query string does not parse)
//! any Synod error         -> 503 {"error":"...", "retry_safe":true|false}
//! ```
//!
//! ```text
//! synod certs --out certs --nodes 1,2,3 --clients web   # once: a dev CA and certificates
//! # node-1.toml .. node-3.toml as in docs/USER_GUIDE.md ("Running nodes"), then once each:
//! synod init --config node-1.toml
//! web-counter node --config node-1.toml &                 # and nodes 2 and 3
//! export SYNOD_ENDPOINTS=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//! export SYNOD_CA=certs/ca.pem SYNOD_CERT=certs/client-web.pem SYNOD_KEY=certs/client-web.key
//! web-counter serve --http 127.0.0.1:8080
//! curl -X POST 'http://127.0.0.1:8080/counter/add?n=5'
//! ```

/// mimalloc, as the `synod` binary (docs/BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{get, post, web, App, HttpResponse, HttpServer};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use synod::{
    ApplyContext, Client, Command, Handler, Query, QueryHandler, ReplicatedActor, SynodError,
};

/// The group that holds the counter.
const GROUP: u64 = 1;

/// The replicated state: one counter.
#[derive(Clone, Default, Serialize, Deserialize, ReplicatedActor)]
#[synod(commands(Add), queries(Get))]
struct Counter {
    value: i64,
}

/// Adds `n`; answers the new value.
#[derive(Serialize, Deserialize, Command)]
#[synod(name = "web-counter.add", result = "i64")]
struct Add(i64);

/// The current value.
#[derive(Serialize, Deserialize, Query)]
#[synod(name = "web-counter.get", result = "i64")]
struct Get;

impl Handler<Add> for Counter {
    fn handle(&mut self, Add(n): Add, _: &ApplyContext) -> i64 {
        self.value = self.value.saturating_add(n);
        self.value
    }
}

impl QueryHandler<Get> for Counter {
    fn query(&self, _: Get) -> i64 {
        self.value
    }
}

#[derive(Parser, Debug)]
#[command(name = "web-counter", about = "An actix-web counter on a Synod group")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run a Synod node hosting the counter (group 1).
    Node(synod::cli::NodeArgs),
    /// Serve HTTP, calling the counter on the cluster.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Where to serve HTTP (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// How long one request may wait for the cluster.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How to reach the cluster (flags, or SYNOD_ENDPOINTS, SYNOD_CA,
    /// SYNOD_CERT and SYNOD_KEY), as for `synod kv`.
    #[command(flatten)]
    cluster: synod::cli::ClusterArgs,
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Mode::Node(a) => synod::cli::run_node_with(a, |node, _config, _logger| async move {
            node.spawn_replicated(GROUP, Counter::default())
                .await
                .map(drop)
                .map_err(|e| format!("group {GROUP}: {e}"))
        }),
        Mode::Serve(a) => serve(a),
    };
    if let Err(e) = result {
        eprintln!("web-counter: {e}");
        std::process::exit(1);
    }
}

/// The answer to a successful call.
#[derive(Serialize)]
struct Value {
    value: i64,
}

/// The query string of `POST /counter/add`.
#[derive(Deserialize)]
struct AddParams {
    n: i64,
}

/// A Synod error as HTTP: 503 with the error and whether retrying cannot
/// apply anything twice (false after a timeout or a lost connection: the
/// `Add` may have been applied; `Client::session` makes retries exact).
fn unavailable(e: SynodError) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "error": e.to_string(),
        "retry_safe": e.is_safe_to_retry(),
    }))
}

#[post("/counter/add")]
async fn add(client: web::Data<Client>, params: web::Query<AddParams>) -> HttpResponse {
    match client.send(GROUP, Add(params.n)).await {
        Ok(value) => HttpResponse::Ok().json(Value { value }),
        Err(e) => unavailable(e),
    }
}

#[get("/counter")]
async fn get(client: web::Data<Client>) -> HttpResponse {
    match client.read(GROUP, Get).await {
        Ok(value) => HttpResponse::Ok().json(Value { value }),
        Err(e) => unavailable(e),
    }
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let cfg = args.cluster.client_config(args.timeout)?;
    actix_web::rt::System::new().block_on(async move {
        // One client for the process: it keeps one QUIC connection per
        // node and the leader of each group; handlers on every worker
        // thread share it.
        let client = Client::new(cfg).map_err(|e| e.to_string())?;
        let data = web::Data::new(client.clone());
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).service(add).service(get))
                .workers(2)
                .bind(args.http)
                .map_err(|e| format!("cannot listen on {}: {e}", args.http))?;
        for addr in server.addrs() {
            println!("listening on http://{addr}");
        }
        let served = server.run().await.map_err(|e| e.to_string());
        client.close().await;
        served
    })
}
