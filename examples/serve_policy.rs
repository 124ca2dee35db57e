//! Serves a trained policy to the DFaaS platform's agents: `POST /action`
//! and `GET /` exactly as the platform's RL strategy expects them
//! (`../shared/spec/PLATFORM_STRATEGIES.md`), `GET /health` for liveness.
//!
//! ```sh
//! cargo run --release --example serve_policy -- --checkpoint runs/default
//! cargo run --release --example serve_policy -- --checkpoint runs/default \
//!     --mapping mapping.yaml --listen 0.0.0.0:6666
//! ```
//!
//! A policy trained with gossip (`train_ppo --layout agnostic --gossip`)
//! also reads the node's gossip keys (`capacity`, and per neighbour `<n>`
//! `previous_input_rate_of_<n>`, `capacity_of_<n>`, `degree_of_<n>`;
//! `dfaas::serve`): required then, a 422 when missing.
//!
//! Bad requests get a 4xx JSON error `{"error": …, "field": …}` naming the
//! problem; the server stays up. It prints `listening on http://ADDR` once
//! bound (`--listen 127.0.0.1:0` picks a free port) and stops gracefully
//! on Ctrl-C or SIGTERM (requests in flight finish).

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use dfaas::infer::{MAX_ENTRIES, Policy, explore_stream};
use dfaas::policies::checkpoint;
use dfaas::serve::{Mapping, RequestError, decode, encode};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest request body accepted (bytes); larger ones get 413.
const MAX_BODY: usize = 64 * 1024;

/// Bodies over [`MAX_BODY`] are read up to this many bytes before the 413
/// is sent (so that the client reads the answer instead of a reset
/// connection); longer ones are cut off.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Longest wait for a request body; slower ones get 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve a trained PPO policy over HTTP in the DFaaS platform's format.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A checkpoint folder (`…/checkpoints/iter_NNNNNN`) or a run folder
    /// (its latest checkpoint is used).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Address to listen on (the agent's default is localhost:6666; port 0
    /// picks a free one).
    #[arg(long, default_value = "127.0.0.1:6666")]
    listen: SocketAddr,
    /// Mapping file (`.json`, else YAML) from platform node keys to the
    /// checkpoint's agents and neighbour slots; without it the node keys are
    /// the checkpoint's node names.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Sample actions (Dirichlet) when a request does not say; requests
    /// choose with `agent_parameters.explore` or an `explore` header.
    #[arg(long)]
    explore: bool,
    /// Seed of the exploring actions' streams (request `i` draws from
    /// stream `(seed, i)`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Append one NDJSON line per request to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Worker threads answering requests. One is plenty for a federation's
    /// agents (each asks every few seconds); more help only where clients
    /// do not compete with them for the cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct App {
    /// One copy of the policy per worker thread (each holds its own
    /// scratch buffers), taken by [`App::with_policy`].
    policies: Vec<Mutex<Policy>>,
    /// Where the next request starts looking for a free copy.
    next_policy: AtomicUsize,
    mapping: Mapping,
    /// Whether the policy reads each node's gossip (from the request's
    /// gossip keys, `dfaas::serve`).
    gossip: bool,
    explore: bool,
    seed: u64,
    max_input_rate: u32,
    /// Exploring requests so far (each its own stream).
    explored: AtomicU64,
    requests: AtomicU64,
    clipped: AtomicU64,
    log: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl App {
    /// Runs `f` on a copy of the policy no other request holds (waiting for
    /// one only when every copy is busy).
    fn with_policy<T>(&self, f: impl FnOnce(&mut Policy) -> T) -> T {
        let n = self.policies.len();
        let start = self.next_policy.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(mut policy) = self.policies[(start + i) % n].try_lock() {
                return f(&mut policy);
            }
        }
        // A panic cannot happen while a lock is held (act returns errors),
        // but a poisoned lock would still hold a valid policy.
        let mut policy = self.policies[start]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut policy)
    }
}

/// A JSON response.
fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: StatusCode, field: &str, message: &str) -> Response {
    json(
        status,
        serde_json::json!({"error": message, "field": field}).to_string(),
    )
}

/// `GET /`, as the authors' server answers it.
async fn root() -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({
            "message": "dfaas policy server: POST /action with the agent's observation",
            "endpoints": ["/action"],
        })
        .to_string(),
    )
}

/// `GET /health`: liveness and counters.
async fn health(State(app): State<Arc<App>>) -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({
            "status": "ok",
            "requests": app.requests.load(Ordering::Relaxed),
            "clipped": app.clipped.load(Ordering::Relaxed),
        })
        .to_string(),
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "",
        "method not allowed (endpoints: POST /action, GET /, GET /health)",
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "",
        "no such endpoint (endpoints: POST /action, GET /, GET /health)",
    )
}

/// The `explore` header, if given.
fn explore_header(headers: &HeaderMap) -> Result<Option<bool>, RequestError> {
    let Some(value) = headers.get("explore") else {
        return Ok(None);
    };
    match value.to_str().map(str::to_ascii_lowercase).as_deref() {
        Ok("true" | "1") => Ok(Some(true)),
        Ok("false" | "0") => Ok(Some(false)),
        _ => Err(RequestError::ExploreHeader {
            got: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        }),
    }
}

/// `POST /action`.
async fn action(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    app.requests.fetch_add(1, Ordering::Relaxed);
    let (response, node, clipped, explore) = answer(&app, &headers, body).await;
    if let Some(log) = &app.log {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = serde_json::json!({
            "time_ms": ms as u64,
            "node": node,
            "status": response.status().as_u16(),
            "explore": explore,
            "clipped": clipped,
            "latency_us": start.elapsed().as_micros() as u64,
        });
        if let Ok(mut w) = log.lock() {
            let _ = writeln!(w, "{line}").and_then(|()| w.flush());
        }
    }
    response
}

/// The response, the node key (if decoded), values clipped, explore.
async fn answer(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> (Response, Option<String>, u32, bool) {
    let fail = |e: RequestError| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        (json(status, e.to_json()), None, 0, false)
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return fail(RequestError::ContentType {
            got: content_type.into(),
        });
    }
    let header_explore = match explore_header(headers) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let too_large = || RequestError::BodyTooLarge { limit: MAX_BODY };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return fail(too_large());
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, read_body(body)).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return fail(too_large()),
        Err(_) => {
            return fail(RequestError::BodyTimeout {
                after: BODY_TIMEOUT,
            });
        }
    };
    let mut observation = [0f32; 2 + 2 * (MAX_ENTRIES - 2)];
    let mut gossip = [0f32; 1 + 3 * (MAX_ENTRIES - 2)];
    let decoded = match decode(
        &bytes,
        &app.mapping,
        app.max_input_rate,
        &mut observation,
        app.gossip.then_some(&mut gossip[..]),
    ) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    app.clipped
        .fetch_add(u64::from(decoded.clipped), Ordering::Relaxed);
    let node = decoded.node(&app.mapping);
    let explore = decoded.explore.or(header_explore).unwrap_or(app.explore);
    let k = node.neighbours.len();
    let told = app.gossip.then_some(&gossip[..1 + 3 * k]);
    let mut act = [0f32; MAX_ENTRIES];
    let result = app.with_policy(|policy| {
        if explore {
            let counter = app.explored.fetch_add(1, Ordering::Relaxed);
            let mut rng = explore_stream(app.seed, counter);
            let (observation, act) = (&observation[..2 + 2 * k], &mut act[..2 + k]);
            match node.agent {
                Some(agent) => policy.act_explore(agent, observation, &mut rng, act),
                None => policy.act_node_explore(observation, told, &mut rng, act),
            }
        } else {
            let (observation, act) = (&observation[..2 + 2 * k], &mut act[..2 + k]);
            match node.agent {
                Some(agent) => policy.act(agent, observation, act),
                None => policy.act_node(observation, told, act),
            }
        }
    });
    let response = match result {
        Ok(()) => json(StatusCode::OK, encode(node, &act[..2 + k])),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "", &e.to_string()),
    };
    (response, Some(node.key.clone()), decoded.clipped, explore)
}

/// The body if it is at most [`MAX_BODY`] bytes; `None` when longer (read
/// on up to [`DRAIN_LIMIT`] bytes) or unreadable.
async fn read_body(mut body: Body) -> Option<Vec<u8>> {
    use http_body_util::BodyExt;
    let (mut buf, mut total) = (Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= MAX_BODY {
            buf.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            return None;
        }
    }
    (total <= MAX_BODY).then_some(buf)
}

/// The `policies.safetensors` of a checkpoint folder or of a run folder's
/// latest checkpoint.
fn checkpoint_file(dir: &std::path::Path) -> Result<PathBuf> {
    let file = dir.join("policies.safetensors");
    if file.is_file() {
        return Ok(file);
    }
    let latest = checkpoint::latest(&dir.join("checkpoints")).with_context(|| {
        format!(
            "{}: neither a checkpoint nor a run folder with checkpoints",
            dir.display()
        )
    })?;
    Ok(latest.join("policies.safetensors"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let file = checkpoint_file(&args.checkpoint)?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let policy = Policy::from_safetensors(&bytes).with_context(|| file.display().to_string())?;
    let agnostic = policy.layout() == dfaas::infer::Layout::Agnostic;
    let mapping = match &args.mapping {
        None if agnostic => Mapping::any_node(),
        None => Mapping::identity(&policy),
        Some(path) if agnostic => bail!(
            "--mapping {}: the checkpoint's policy is of the agnostic layout and serves any node with any neighbours as the request names them; it takes no mapping",
            path.display()
        ),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let json = path.extension().is_some_and(|e| e == "json");
            Mapping::parse(&text, json, &policy).with_context(|| path.display().to_string())?
        }
    };
    if mapping.nodes().is_empty() && !mapping.is_any_node() {
        bail!("the mapping maps no node");
    }
    let log = match &args.log {
        None => None,
        Some(path) => Some(Mutex::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ))),
    };
    eprintln!(
        "policy {} ({} layout, {} agents); nodes: {}",
        file.display(),
        policy.layout().name(),
        policy.agents().len(),
        if mapping.is_any_node() && policy.gossip() {
            "any (the agnostic layout with gossip; neighbours as each request names them, with their gossip keys)".to_string()
        } else if mapping.is_any_node() {
            "any (the agnostic layout; neighbours as each request names them)".to_string()
        } else {
            mapping
                .nodes()
                .iter()
                .filter_map(|n| {
                    n.agent
                        .map(|a| format!("{} → {}", n.key, policy.agents()[a].name))
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let threads = args.threads;
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let app = Arc::new(App {
        max_input_rate: policy.max_input_rate(),
        policies: (0..threads).map(|_| Mutex::new(policy.clone())).collect(),
        next_policy: AtomicUsize::new(0),
        gossip: policy.gossip(),
        mapping,
        explore: args.explore,
        seed: args.seed,
        explored: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        clipped: AtomicU64::new(0),
        log,
    });
    let router = Router::new()
        .route("/", get(root).fallback(method_not_allowed))
        .route("/health", get(health).fallback(method_not_allowed))
        .route("/action", post(action).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(app);
    // One worker: every task on this thread (no wake-ups across threads);
    // more: a work-stealing pool of that many.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr().context("the bound address")?;
        println!("listening on http://{addr}");
        std::io::stdout().flush().context("stdout")?;
        // Answers go out at once (no Nagle delay behind a keep-alive
        // connection's previous answer).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")
    })
}
