//! Measures `serve_policy`: the library's inference per call, then a
//! bounded load test on loopback — it starts the server (the
//! `serve_policy` binary beside this one) on a free port, sends
//! `--requests` full agent requests from `--clients` concurrent
//! keep-alive connections, and reports latency percentiles, errors and the
//! server's resident memory after the first and the last thousand
//! requests. It stops the server when done, and fails (exit status 1)
//! when a request failed or the resident memory grew by more than 5 MiB.
//!
//! ```sh
//! cargo build --release --example serve_policy --example serve_bench
//! target/release/examples/serve_bench --checkpoint runs/default
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use dfaas::infer::Policy;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Largest growth of the server's resident memory between the first
/// thousand requests and the end (KiB).
const MAX_GROWTH_KIB: i64 = 5 * 1024;

/// Latency of the policy server under load.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A checkpoint folder or a run folder (as `serve_policy` takes it).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Requests in all (at least 2000).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// The server's worker threads (`serve_policy --threads`; default its
    /// own).
    #[arg(long)]
    threads: Option<usize>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

/// The server's resident memory (KiB), from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The agent's full request for agent `a` (every key of the contract).
fn body(policy: &Policy, a: usize, i: usize) -> String {
    let agent = &policy.agents()[a];
    let mut node = serde_json::Map::new();
    let rate = 20.0 + (i % 97) as f64;
    for (k, v) in [
        ("input_rate", rate),
        ("previous_input_rate", rate - 1.0),
        ("reject_rate", 0.1),
        ("previous_reject_rate", 0.1),
        ("avg_resp_time_loc", 12.0),
        ("previous_avg_resp_time_loc", 11.0),
        ("cpu_utilization", 0.5),
        ("previous_cpu_utilization", 0.4),
        ("n_replicas", 2.0),
        ("previous_n_replicas", 2.0),
    ] {
        node.insert(k.into(), v.into());
    }
    for n in &agent.neighbours {
        node.insert(format!("previous_fwd_to_{n}"), 3.0.into());
        node.insert(format!("previous_fwd_to_{n}_rejected"), 1.0.into());
        node.insert(format!("previous_avg_resp_time_fwd_to_{n}"), 20.0.into());
    }
    serde_json::json!({
        "observation": {agent.name.clone(): node},
        "agent_parameters": {"explore": false},
    })
    .to_string()
}

/// One keep-alive request; returns the status.
fn request(stream: &mut BufReader<TcpStream>, body: &str) -> Result<u16> {
    write!(
        stream.get_mut(),
        "POST /action HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .context("status line")?
        .parse()
        .context("status")?;
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
    }
    let mut buf = vec![0u8; length];
    stream.read_exact(&mut buf)?;
    Ok(status)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.requests < 2000 || args.clients == 0 {
        bail!("--requests must be >= 2000 and --clients >= 1");
    }
    let dir = &args.checkpoint;
    let file = if dir.join("policies.safetensors").is_file() {
        dir.join("policies.safetensors")
    } else {
        dfaas::policies::checkpoint::latest(&dir.join("checkpoints"))
            .context("no checkpoint")?
            .join("policies.safetensors")
    };
    let mut policy = Policy::from_safetensors(&std::fs::read(&file)?)?;
    let n = policy.agents().len();

    // The library alone: one deterministic action, median over 10 000.
    let mut times = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let a = i % n;
        let k = policy.agents()[a].degree();
        let mut obs = vec![3.0f32; 2 + 2 * k];
        obs[0] = 20.0 + (i % 97) as f32;
        let mut action = vec![0f32; 2 + k];
        let start = Instant::now();
        policy.act(a, &obs, &mut action)?;
        times.push(start.elapsed());
    }
    times.sort_unstable();
    println!(
        "library: Policy::act median {:.2} µs ({} agents, {} layout)",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        n,
        policy.layout().name()
    );

    let exe = std::env::current_exe()?.with_file_name("serve_policy");
    let mut server = Command::new(&exe);
    server
        .arg("--checkpoint")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"]);
    if let Some(threads) = args.threads {
        server.args(["--threads", &threads.to_string()]);
    }
    let mut child = server
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .context("no address printed")?
        .parse()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let bodies: Arc<Vec<String>> = Arc::new((0..n * 97).map(|i| body(&policy, i % n, i)).collect());
    // Phase 1: the first thousand; phase 2: the rest.
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0usize;
    let mut rss = Vec::new();
    for (phase, count) in [(0, 1000), (1, args.requests - 1000)] {
        let per = count.div_ceil(args.clients);
        let barrier = Arc::new(Barrier::new(args.clients));
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let (bodies, barrier) = (bodies.clone(), barrier.clone());
                let todo = per.min(count.saturating_sub(c * per));
                std::thread::spawn(move || -> Result<(Vec<Duration>, usize)> {
                    let stream = TcpStream::connect(addr)?;
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut stream = BufReader::new(stream);
                    let (mut lat, mut err) = (Vec::with_capacity(todo), 0);
                    barrier.wait();
                    for i in 0..todo {
                        if Instant::now() > deadline {
                            break;
                        }
                        let b = &bodies[(c * 7919 + i + phase * 13) % bodies.len()];
                        let start = Instant::now();
                        match request(&mut stream, b) {
                            Ok(200) => lat.push(start.elapsed()),
                            _ => err += 1,
                        }
                    }
                    Ok((lat, err))
                })
            })
            .collect();
        for h in handles {
            let (lat, err) = h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
            latencies.extend(lat);
            errors += err;
        }
        rss.push(rss_kib(pid));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    latencies.sort_unstable();
    if latencies.is_empty() {
        bail!("no request answered");
    }
    println!(
        "server: {} requests from {} clients, {} errors: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        latencies.len() + errors,
        args.clients,
        errors,
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
    let growth = match (rss[0], rss[1]) {
        (Some(a), Some(b)) => {
            println!(
                "server resident memory: {a} KiB after the first 1000 requests, {b} KiB after all ({:+} KiB)",
                b as i64 - a as i64
            );
            b as i64 - a as i64
        }
        _ => {
            println!("server resident memory: not readable (/proc)");
            0
        }
    };
    if errors > 0 || latencies.len() + errors < args.requests {
        bail!(
            "{errors} requests failed, {} of {} answered",
            latencies.len(),
            args.requests
        );
    }
    if growth > MAX_GROWTH_KIB {
        bail!("resident memory grew by {growth} KiB (at most {MAX_GROWTH_KIB})");
    }
    Ok(())
}
