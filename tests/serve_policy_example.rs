//! `serve_policy` as the platform's agent uses it: started on an ephemeral
//! loopback port with a mapping from peer ids to a checkpoint's agents, it
//! answers `GET /`, `GET /health` and `POST /action` per the contract
//! (`../shared/spec/PLATFORM_STRATEGIES.md`) — the same action as the
//! library's inference, proportions that are whole percentages summing to
//! 100 — answers every bad request with a 4xx JSON error naming the
//! problem and stays up, refuses a mapping that does not fit at startup,
//! and stops on SIGTERM.

mod common;

use common::example;
use dfaas::core::{EnvConfig, EnvModel};
use dfaas::infer::Policy;
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::checkpoint;
use dfaas::policies::ppo::{Layout, PpoConfig, Trainer};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Five nodes, full mesh: every node has 4 neighbours (the platform's
/// current deployment).
fn env_config() -> EnvConfig {
    EnvConfig::with_network(&[
        "node_0 node_1 node_2 node_3 node_4",
        "node_1 node_2 node_3 node_4",
        "node_2 node_3 node_4",
        "node_3 node_4",
    ])
}

/// A run folder with one checkpoint of a briefly trained policy.
fn run_folder(dir: &Path) {
    run_folder_of(dir, Layout::Independent);
}

/// As [`run_folder`], the policy of `layout`.
fn run_folder_of(dir: &Path, layout: Layout) {
    run_folder_with(
        dir,
        PpoConfig {
            layout,
            ..PpoConfig::default()
        },
    );
}

/// As [`run_folder`], trained with `config`'s layout and gossip.
fn run_folder_with(dir: &Path, config: PpoConfig) {
    let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
    let config = PpoConfig {
        hidden: vec![16, 16],
        num_envs: 2,
        rollout_steps: 48,
        minibatch_size: 96,
        iterations: 1,
        ..config
    };
    let mut trainer = Trainer::new(model, config, CpuBackend::new()).unwrap();
    trainer.train_iteration().unwrap();
    checkpoint::save(
        &trainer,
        &dir.join("checkpoints").join(checkpoint::folder_name(1)),
    )
    .unwrap();
}

/// The policy of the checkpoint [`run_folder_with`] wrote into `dir`.
fn saved_policy(dir: &Path) -> Policy {
    let checkpoint = dir.join("checkpoints").join(checkpoint::folder_name(1));
    let bytes = std::fs::read(checkpoint.join("policies.safetensors")).unwrap();
    Policy::from_safetensors(&bytes).unwrap()
}

/// Peer keys of the platform's nodes (agent i is `PEERS[i]`).
const PEERS: [&str; 5] = [
    "node_12D3KooWAaa",
    "node_12D3KooWBbb",
    "node_12D3KooWCcc",
    "node_12D3KooWDdd",
    "node_12D3KooWEee",
];

/// A mapping of every peer to its agent; neighbours by name, except agent
/// 1's by slot index.
fn mapping_yaml() -> String {
    let mut text = String::from("nodes:\n");
    for (a, peer) in PEERS.iter().enumerate() {
        text += &format!("  {peer}:\n    agent: node_{a}\n    neighbours:\n");
        let mut slot = 0;
        for (b, other) in PEERS.iter().enumerate() {
            if a != b {
                let target = if a == 1 {
                    slot.to_string()
                } else {
                    format!("node_{b}")
                };
                text += &format!("      {other}: {target}\n");
                slot += 1;
            }
        }
    }
    text
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(example("serve_policy"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("no address printed: {line:?}; stderr: {err}");
        };
        Self {
            addr: addr.parse().unwrap(),
            child,
        }
    }

    /// Sends one HTTP/1.1 request; returns status and body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn post(&self, body: &Value) -> (u16, String) {
        self.request(
            "POST",
            "/action",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit after SIGTERM: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's full request for node `me` (index into PEERS): every key of
/// the contract, the first query's defaults when `first`.
fn agent_request(me: usize, first: bool, explore: bool) -> Value {
    let mut node = serde_json::Map::new();
    let v = |x: f64| if first { json!(0.0) } else { json!(x) };
    node.insert("input_rate".into(), json!(80.4));
    node.insert("previous_input_rate".into(), v(74.6));
    node.insert("reject_rate".into(), json!(0.1));
    node.insert("previous_reject_rate".into(), v(0.05));
    node.insert("avg_resp_time_loc".into(), json!(12.5));
    node.insert("previous_avg_resp_time_loc".into(), v(11.0));
    node.insert("cpu_utilization".into(), json!(0.7));
    node.insert("previous_cpu_utilization".into(), v(0.6));
    node.insert("n_replicas".into(), json!(2));
    node.insert(
        "previous_n_replicas".into(),
        json!(if first { 1 } else { 2 }),
    );
    for (j, peer) in PEERS.iter().enumerate().filter(|(j, _)| *j != me) {
        node.insert(format!("previous_fwd_to_{peer}"), v(3.0 + j as f64));
        node.insert(
            format!("previous_fwd_to_{peer}_rejected"),
            v(0.5 * j as f64),
        );
        node.insert(format!("previous_avg_resp_time_fwd_to_{peer}"), v(20.0));
    }
    json!({"observation": {PEERS[me]: node}, "agent_parameters": {"explore": explore}})
}

/// Checks the contract's response shape for node `me`; returns the
/// proportions `[local, neighbours in PEERS order, reject]` as percentages.
fn check_response(me: usize, body: &str) -> Vec<u32> {
    let value: Value = serde_json::from_str(body).unwrap();
    let top = value.as_object().unwrap();
    assert_eq!(top.len(), 1, "{body}");
    let node = top[PEERS[me]].as_object().unwrap();
    assert_eq!(node.len(), 2 + 4, "{body}");
    let mut keys = vec!["local".to_string()];
    keys.extend(
        PEERS
            .iter()
            .filter(|p| **p != PEERS[me])
            .map(|p| p.to_string()),
    );
    keys.push("reject".into());
    let percent: Vec<u32> = keys
        .iter()
        .map(|k| {
            let p = node[k.as_str()].as_f64().unwrap();
            let n = (p * 100.0).round();
            assert!(
                (p * 100.0 - n).abs() < 1e-9,
                "{k}: {p} not a multiple of 0.01"
            );
            n as u32
        })
        .collect();
    assert_eq!(percent.iter().sum::<u32>(), 100, "{body}");
    // Two decimals as written.
    assert!(
        body.contains(&format!(
            "\"local\":{}.{:02}",
            percent[0] / 100,
            percent[0] % 100
        )),
        "{body}"
    );
    percent
}

#[test]
fn serves_the_platform_contract() {
    let dir = tempfile::tempdir().unwrap();
    run_folder(dir.path());
    let mapping = dir.path().join("mapping.yaml");
    std::fs::write(&mapping, mapping_yaml()).unwrap();
    let log = dir.path().join("requests.ndjson");
    let run = dir.path().to_str().unwrap();
    let server = Server::start(&[
        "--checkpoint",
        run,
        "--mapping",
        mapping.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "--seed",
        "5",
    ]);

    let (status, body) = server.request("GET", "/", &[], b"");
    assert_eq!(status, 200);
    let root: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(root["endpoints"], json!(["/action"]));
    assert!(root["message"].is_string());
    let (status, body) = server.request("GET", "/health", &[], b"");
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["status"].clone()
        ),
        (200, json!("ok"))
    );

    // The library's answer for the same observation, converted by hand:
    // rates rounded, the first query's previous input rate 0 read as 1.
    let bytes = std::fs::read(
        dir.path()
            .join("checkpoints/iter_000001/policies.safetensors"),
    )
    .unwrap();
    let mut policy = Policy::from_safetensors(&bytes).unwrap();
    for me in [0, 1, 4] {
        for first in [true, false] {
            let (status, body) = server.post(&agent_request(me, first, false));
            assert_eq!(status, 200, "{body}");
            let got = check_response(me, &body);
            let others: Vec<usize> = (0..5).filter(|&j| j != me).collect();
            let mut obs = vec![80.0f32, if first { 1.0 } else { 75.0 }];
            obs.extend(
                others
                    .iter()
                    .map(|&j| if first { 0.0 } else { (3 + j) as f32 }),
            );
            obs.extend(others.iter().map(|&j| {
                if first {
                    0.0
                } else {
                    (0.5 * j as f64).round() as f32
                }
            }));
            let mut action = [0f32; 6];
            policy.act(me, &obs, &mut action).unwrap();
            let mut want = [0u32; 6];
            dfaas::serve::percentages(&action, &mut want);
            assert_eq!(got, want, "node {me} first {first}: {body}");
        }
    }

    // Exploring: from the body (a sample, still whole percentages), and
    // the body's `false` winning over the header's `true`.
    let (status, body) = server.post(&agent_request(2, false, true));
    assert_eq!(status, 200, "{body}");
    check_response(2, &body);
    let deterministic = server.post(&agent_request(2, false, false)).1;
    let header_loses = server.request(
        "POST",
        "/action",
        &[("Content-Type", "application/json"), ("explore", "true")],
        agent_request(2, false, false).to_string().as_bytes(),
    );
    assert_eq!(header_loses, (200, deterministic.clone()));
    let mut no_flag = agent_request(2, false, false);
    no_flag.as_object_mut().unwrap().remove("agent_parameters");
    let samples: Vec<String> = (0..3)
        .map(|_| {
            server
                .request(
                    "POST",
                    "/action",
                    &[("Content-Type", "application/json"), ("explore", "true")],
                    no_flag.to_string().as_bytes(),
                )
                .1
        })
        .collect();
    assert!(samples.iter().any(|s| *s != deterministic), "{samples:?}");
    samples.iter().for_each(|s| drop(check_response(2, s)));

    // Bad requests: 4xx with a JSON error naming the problem.
    let status_field = |(status, body): (u16, String)| {
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        assert!(v["error"].is_string(), "{body}");
        (status, v["field"].as_str().unwrap_or("").to_string())
    };
    let ct = [("Content-Type", "application/json")];
    let got = status_field(server.request("POST", "/action", &ct, b"{\"observation\": "));
    assert_eq!(got, (400, String::new()));
    let got =
        status_field(server.request("POST", "/action", &[("Content-Type", "text/plain")], b"{}"));
    assert_eq!(got, (415, "header content-type".into()));
    let got = status_field(server.request("POST", "/action", &[], b"{}"));
    assert_eq!(got.0, 415);
    let huge = vec![b' '; 70 * 1024];
    let got = status_field(server.request("POST", "/action", &ct, &huge));
    assert_eq!(got.0, 413);
    let mut unknown = agent_request(0, false, false);
    let node = unknown["observation"][PEERS[0]].take();
    unknown["observation"] = json!({"node_nobody": node});
    assert_eq!(
        status_field(server.post(&unknown)),
        (422, "observation.node_nobody".into())
    );
    let mut negative = agent_request(0, false, false);
    negative["observation"][PEERS[0]]["input_rate"] = json!(-3.0);
    assert_eq!(
        status_field(server.post(&negative)),
        (422, format!("observation.{}.input_rate", PEERS[0]))
    );
    let mut missing = agent_request(3, false, false);
    let key = format!("previous_fwd_to_{}_rejected", PEERS[1]);
    missing["observation"][PEERS[3]]
        .as_object_mut()
        .unwrap()
        .remove(&key);
    assert_eq!(
        status_field(server.post(&missing)),
        (422, format!("observation.{}.{key}", PEERS[3]))
    );
    let mut text = agent_request(0, false, false);
    text["observation"][PEERS[0]]["previous_input_rate"] = json!("12");
    assert_eq!(
        status_field(server.post(&text)),
        (422, format!("observation.{}.previous_input_rate", PEERS[0]))
    );
    let mut stranger = agent_request(0, false, false);
    stranger["observation"][PEERS[0]]["previous_fwd_to_node_stranger"] = json!(1.0);
    assert_eq!(
        status_field(server.post(&stranger)),
        (
            422,
            format!("observation.{}.previous_fwd_to_node_stranger", PEERS[0])
        )
    );
    let mut two = agent_request(0, false, false);
    two["observation"][PEERS[1]] = json!({});
    assert_eq!(status_field(server.post(&two)), (422, "observation".into()));
    let mut flag = agent_request(0, false, false);
    flag["agent_parameters"]["explore"] = json!("yes");
    assert_eq!(
        status_field(server.post(&flag)),
        (422, "agent_parameters.explore".into())
    );
    let got = status_field(server.request(
        "POST",
        "/action",
        &[("Content-Type", "application/json"), ("explore", "maybe")],
        agent_request(0, false, false).to_string().as_bytes(),
    ));
    assert_eq!(got, (422, "header explore".into()));
    assert_eq!(
        status_field(server.request("GET", "/nothing", &[], b"")).0,
        404
    );

    // Still up, same answer; values above training's largest rate clipped.
    assert_eq!(
        server.post(&agent_request(2, false, false)),
        (200, deterministic)
    );
    let mut high = agent_request(0, false, false);
    high["observation"][PEERS[0]]["input_rate"] = json!(1e9);
    let (status, body) = server.post(&high);
    assert_eq!(status, 200, "{body}");
    check_response(0, &body);
    let health: Value =
        serde_json::from_str(&server.request("GET", "/health", &[], b"").1).unwrap();
    assert_eq!(health["clipped"], json!(1));

    server.stop();
    // One NDJSON line per POST /action, with its status.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 20, "{}", lines.len());
    assert!(lines.iter().any(|l| l["status"] == json!(415)));
    assert!(
        lines
            .iter()
            .any(|l| l["clipped"] == json!(1) && l["node"] == json!(PEERS[0]))
    );
}

#[test]
fn without_a_mapping_nodes_are_the_checkpoints_names() {
    let dir = tempfile::tempdir().unwrap();
    run_folder(dir.path());
    let checkpoint = dir.path().join("checkpoints/iter_000001");
    let server = Server::start(&["--checkpoint", checkpoint.to_str().unwrap()]);
    let body = json!({"observation": {"node_3": {
        "input_rate": 40, "previous_input_rate": 38,
        "previous_fwd_to_node_0": 1, "previous_fwd_to_node_0_rejected": 0,
        "previous_fwd_to_node_1": 2, "previous_fwd_to_node_1_rejected": 0,
        "previous_fwd_to_node_2": 0, "previous_fwd_to_node_2_rejected": 0,
        "previous_fwd_to_node_4": 3, "previous_fwd_to_node_4_rejected": 1,
    }}});
    let (status, text) = server.post(&body);
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let node = v["node_3"].as_object().unwrap();
    let mut keys: Vec<&str> = node.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["local", "node_0", "node_1", "node_2", "node_4", "reject"]
    );
    server.stop();
}

/// An agnostic checkpoint (trained on the 5-node mesh) serves any node key
/// with any number of neighbours, as the request names them, and answers
/// what the library's `act_node` gives; it takes no mapping.
#[test]
fn an_agnostic_policy_serves_any_node() {
    let dir = tempfile::tempdir().unwrap();
    run_folder_of(dir.path(), Layout::Agnostic);
    let mut policy = saved_policy(dir.path());
    let server = Server::start(&["--checkpoint", dir.path().to_str().unwrap()]);
    // Seven neighbours (the training nodes had four), named out of order,
    // and a node with none.
    let mut node = serde_json::Map::new();
    node.insert("input_rate".into(), json!(55.4));
    node.insert("previous_input_rate".into(), json!(50));
    node.insert("cpu_utilization".into(), json!(0.5));
    let names = [
        "node_g", "node_b", "node_f", "node_a", "node_e", "node_c", "node_d",
    ];
    for (i, name) in names.iter().enumerate() {
        node.insert(format!("previous_fwd_to_{name}"), json!(i as f64 + 0.2));
        node.insert(format!("previous_fwd_to_{name}_rejected"), json!(i % 2));
    }
    let (status, text) = server.post(&json!({"observation": {"node_new": node}}));
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let answer = v["node_new"].as_object().unwrap();
    assert_eq!(answer.len(), 2 + names.len());
    // The library's action for the same observation, neighbours ascending.
    let mut sorted = names;
    sorted.sort_unstable();
    let index = |n: &str| names.iter().position(|m| *m == n).unwrap();
    let mut obs = vec![55.0, 50.0];
    obs.extend(sorted.iter().map(|n| index(n) as f32));
    obs.extend(sorted.iter().map(|n| (index(n) % 2) as f32));
    let mut action = vec![0f32; 2 + names.len()];
    policy.act_node(&obs, None, &mut action).unwrap();
    let mut percent = vec![0u32; action.len()];
    dfaas::serve::percentages(&action, &mut percent);
    let got = |key: &str| (answer[key].as_f64().unwrap() * 100.0).round() as u32;
    assert_eq!(got("local"), percent[0], "{text}");
    for (j, n) in sorted.iter().enumerate() {
        assert_eq!(got(n), percent[1 + j], "{n}: {text}");
    }
    assert_eq!(got("reject"), percent[1 + names.len()], "{text}");
    let alone = json!({"observation": {"node_z": {"input_rate": 3, "previous_input_rate": 3}}});
    let (status, text) = server.post(&alone);
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with(r#"{"node_z":{"local":"#), "{text}");
    server.stop();
    // A mapping is refused at start-up.
    let mapping = dir.path().join("mapping.yaml");
    std::fs::write(&mapping, mapping_yaml()).unwrap();
    let out = Command::new(example("serve_policy"))
        .args(["--listen", "127.0.0.1:0", "--checkpoint"])
        .arg(dir.path())
        .arg("--mapping")
        .arg(&mapping)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agnostic layout"));
}

/// A policy trained with gossip reads the node's gossip keys: the answer
/// is the library's `act_node` with that gossip; a request without them
/// is a 422 naming the first missing key, and the server stays up.
#[test]
fn a_policy_trained_with_gossip_serves_with_the_gossip_keys() {
    let dir = tempfile::tempdir().unwrap();
    run_folder_with(
        dir.path(),
        PpoConfig {
            layout: Layout::Agnostic,
            gossip: true,
            ..PpoConfig::default()
        },
    );
    let mut policy = saved_policy(dir.path());
    assert!(policy.gossip());
    let server = Server::start(&["--checkpoint", dir.path().to_str().unwrap()]);
    let plain = json!({
        "input_rate": 61, "previous_input_rate": 58,
        "previous_fwd_to_node_b": 4, "previous_fwd_to_node_b_rejected": 1,
        "previous_fwd_to_node_a": 2, "previous_fwd_to_node_a_rejected": 0,
    });
    let (status, text) = server.post(&json!({"observation": {"node_new": plain}}));
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("observation.node_new.capacity"), "{text}");
    let mut node = plain.as_object().unwrap().clone();
    for (key, value) in [
        ("capacity", 22),
        ("previous_input_rate_of_node_a", 9),
        ("capacity_of_node_a", 22),
        ("degree_of_node_a", 3),
        ("previous_input_rate_of_node_b", 70),
        ("capacity_of_node_b", 18),
        ("degree_of_node_b", 2),
    ] {
        node.insert(key.into(), json!(value));
    }
    let (status, text) = server.post(&json!({"observation": {"node_new": node}}));
    assert_eq!(status, 200, "{text}");
    // The library's action, neighbours ascending (node_a, node_b).
    let mut action = [0f32; 4];
    let gossip = [22.0, 9.0, 22.0, 3.0, 70.0, 18.0, 2.0];
    let obs = [61.0, 58.0, 2.0, 4.0, 0.0, 1.0];
    policy.act_node(&obs, Some(&gossip), &mut action).unwrap();
    let mut percent = [0u32; 4];
    dfaas::serve::percentages(&action, &mut percent);
    let v: Value = serde_json::from_str(&text).unwrap();
    let answer = &v["node_new"];
    let got = |key: &str| (answer[key].as_f64().unwrap() * 100.0).round() as u32;
    assert_eq!(
        [got("local"), got("node_a"), got("node_b"), got("reject")],
        percent,
        "{text}"
    );
    server.stop();
}

#[test]
fn a_mapping_that_does_not_fit_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    run_folder(dir.path());
    let cases = [
        // node_0's slot for node_4 left out.
        (
            mapping_yaml().replace(&format!("      {}: node_4\n", PEERS[4]), ""),
            "neighbour slot 3 (`node_4`) of agent `node_0` is not mapped",
        ),
        (
            mapping_yaml().replace("agent: node_2", "agent: node_9"),
            "`node_9` is not an agent of the checkpoint",
        ),
        (
            mapping_yaml().replace("agent: node_2", "agent: node_1"),
            "is already mapped",
        ),
        (
            mapping_yaml().replace(": 3\n", ": 7\n"),
            "`7` is not a neighbour of agent `node_1`",
        ),
        ("nodes: [1, 2]\n".to_string(), "mapping file"),
    ];
    for (text, message) in cases {
        let mapping = dir.path().join("mapping.yaml");
        std::fs::write(&mapping, text).unwrap();
        let out = Command::new(example("serve_policy"))
            .args(["--listen", "127.0.0.1:0", "--checkpoint"])
            .arg(dir.path())
            .arg("--mapping")
            .arg(&mapping)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{message}: started");
        assert!(stderr.contains(message), "{message}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A checkpoint from before inference metadata: a clear error.
    let out = Command::new(example("serve_policy"))
        .args(["--listen", "127.0.0.1:0", "--checkpoint"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a checkpoint nor a run folder"));
}

/// The load test (`serve_bench`): 10 000 full agent requests from 8
/// concurrent keep-alive clients on loopback all answered 200, and the
/// server's resident memory grows by at most 5 MiB between the first and
/// the last thousand (the example fails otherwise). Latency is reported,
/// not asserted.
#[test]
fn ten_thousand_requests_from_eight_clients() {
    let dir = tempfile::tempdir().unwrap();
    run_folder(dir.path());
    let out = Command::new(example("serve_bench"))
        .arg("--checkpoint")
        .arg(dir.path())
        .args([
            "--requests",
            "10000",
            "--clients",
            "8",
            "--timeout-s",
            "300",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("10000 requests from 8 clients, 0 errors"),
        "{stdout}"
    );
}
