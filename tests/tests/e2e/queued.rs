//! A node on a queue nothing serves: `show` calls it `queued`, with its queue, and the run says
//! once how to start a worker; a worker of that queue then runs it.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Env, text};

/// `before` (node 1) -> `on_gpu` (node 2, queue `gpu`) -> `after` (node 3).
const GPU_NODE: &str = "2";

/// `show 1 --json` until `ready` holds of it.
fn wait_for_run(env: &Env, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = env.run(&["show", "1", "--json"]);
        if out.status.success() {
            let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
            if ready(&shown) {
                return shown;
            }
        }
        assert!(Instant::now() < deadline, "the run never got there: {}", text(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_waiting_for_a_worker_is_shown_queued_with_its_queue_until_one_takes_it() {
    let env = Env::new();
    let input = json!({"dir": env.dir(), "slow_ms": 0, "fail_first": 0}).to_string();
    let mut run = env.spawn(&["run", "remote", "--executor", "inline", "--input", &input]);

    // The run's stderr, line by line, as it comes.
    let (tx, lines) = mpsc::channel();
    let stderr = run.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // It says, once, that the node waits and how to start a worker, naming this binary.
    let hint = "node 2 on_gpu waits for a worker of queue `gpu`: start one with `flows worker --queue gpu` \
                (or `salt worker --queue gpu` for a server)";
    let mut said = Vec::new();
    while !said.iter().any(|l: &String| l == hint) {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => said.push(line),
            Err(e) => panic!("the run never said how to start a worker ({e}): {said:#?}"),
        }
    }

    // `show --json` lists the waiting attempt with its queue; the node's stored state is
    // still `running`.
    let shown = wait_for_run(&env, |s| !s["queued"].as_array().unwrap().is_empty());
    let queued = &shown["queued"][0];
    assert_eq!((queued["node"].as_u64(), queued["attempt"].as_u64()), (Some(2), Some(1)), "{shown}");
    assert_eq!(queued["queue"], "gpu", "{shown}");
    assert!(queued["since"].as_i64().unwrap() > 0, "{shown}");
    assert_eq!(shown["nodes"][2]["state"], "running", "{shown}");

    // `show RUN NODE --json` too.
    let node = env.json(&["show", "1", GPU_NODE]);
    assert_eq!(node["queued"]["queue"], "gpu", "{node}");
    assert_eq!(node["node"]["state"], "running", "{node}");

    // As text, the node is `queued`, and what it waits for is said.
    let out = env.run(&["show", "1"]);
    let shown_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown_text.contains("queued    node 2 waits for a worker of queue `gpu`; start one with `worker --queue gpu`"),
        "{shown_text}"
    );
    let row = shown_text.lines().find(|l| l.trim_start().starts_with("2  on_gpu")).unwrap_or_default();
    assert!(row.contains(" queued ") && row.contains("waits for a worker of queue `gpu`"), "{shown_text}");
    let out = env.run(&["show", "1", GPU_NODE]);
    let node_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(node_text.contains("of run 1  QUEUED"), "{node_text}");
    assert!(node_text.contains("queued    waits for a worker of queue `gpu`"), "{node_text}");

    // A worker of its queue takes it; the run finishes and nothing is queued any more.
    let worker = env.run(&["worker", "--queue", "gpu", "--once"]);
    assert!(worker.status.success(), "{}", text(&worker));
    let out = run.wait_with_output().expect("the run ends");
    reader.join().unwrap();
    said.extend(lines.try_iter());
    assert!(out.status.success(), "{}\n{said:#?}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "201");
    assert_eq!(said.iter().filter(|l| l.contains("waits for a worker")).count(), 1, "{said:#?}");

    let shown = env.json(&["show", "1"]);
    assert_eq!(shown["queued"], json!([]), "{shown}");
    assert_eq!(shown["nodes"][2]["state"], "succeeded", "{shown}");
    let node = env.json(&["show", "1", GPU_NODE]);
    assert_eq!(node["queued"], Value::Null, "{node}");
    let out = env.run(&["show", "1"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("queued"), "{}", text(&out));
}
