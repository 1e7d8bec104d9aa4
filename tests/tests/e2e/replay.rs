//! Replay: journaled values come back the same; a body that changes its calls is caught.

use crate::support::{EXECUTORS, Env, stderr, text};

#[test]
fn a_replay_that_makes_another_call_is_non_deterministic() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "wobbly", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("non-deterministic replay of node 0 (`wobbly`) at call 0"), "{err}");
    assert!(err.contains("spawn `left`") && err.contains("spawn `right`"), "{err}");
    assert_eq!(env.count("left"), 1);
    assert_eq!(env.count("right"), 0, "the differing call must not run");
    let show = env.show(1);
    let attempts: Vec<_> = show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == 0).collect();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["error"]["kind"], "non_deterministic");
}

#[test]
fn journaled_random_values_replay_and_bind_to_the_same_child() {
    for executor in EXECUTORS {
        let env = Env::new();
        let input = serde_json::json!({"dir": env.dir()}).to_string();
        let out = env.run(&["run", "lucky", "--input", &input, "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(env.count("lucky_step"), 1, "{executor}: the replay re-ran the step");
        let show = env.show(1);
        assert_eq!(show["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(show["journal"].as_array().unwrap().len(), 1);
        let r = show["journal"][0]["value"].as_u64().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (r % 1_000_000).to_string());
    }
}
