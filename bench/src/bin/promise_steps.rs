//! The worst cases of the promise engine: how long parsing a promise, one step of a shape (one
//! more child checked against it) and listing its guaranteed nodes take, in µs, for shapes
//! built to be expensive. `cargo run --release -p bench --bin promise_steps [-- --json]`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use salt_promise::{Promise, Shape};

/// One pathological case: a name, its text, and the children it is stepped by.
struct Case {
    name: &'static str,
    text: String,
    /// The task names of the children stepped, in order (cycled).
    steps: &'static [&'static str],
}

/// `A{1,2}` nested `n` times in parentheses.
fn nested_counts(inner: &str, n: usize) -> String {
    let mut text = inner.to_string();
    for _ in 1..n {
        text = format!("({text}){{1,2}}");
    }
    text
}

/// The cases.
fn cases() -> Vec<Case> {
    vec![
        Case { name: "A{1,2} nested 16 times", text: nested_counts("A{1,2}", 16), steps: &["A"] },
        Case { name: "A{3} in {1,2} nested 12 times", text: nested_counts("A{3}", 12), steps: &["A"] },
        Case { name: "A* -> A* -> ... (100)", text: vec!["A*"; 100].join(" -> "), steps: &["A"] },
        Case { name: "A* -> A* -> ... (1000)", text: vec!["A*"; 1000].join(" -> "), steps: &["A"] },
        Case { name: "A? x 1000", text: vec!["A?"; 1000].join(" -> "), steps: &["A"] },
        Case { name: "A* -> B* -> ... (100)", text: vec!["A* -> B*"; 50].join(" -> "), steps: &["A", "B"] },
        Case { name: "A* -> B* -> ... (1000)", text: vec!["A* -> B*"; 500].join(" -> "), steps: &["A", "B"] },
        Case { name: "(A? -> B?) x 1000", text: vec!["A? -> B?"; 1000].join(" -> "), steps: &["A", "B"] },
        Case {
            name: "((A -> C)? -> (A -> D)?) x 500",
            text: vec!["(A -> C)? -> (A -> D)?"; 500].join(" -> "),
            steps: &["A"],
        },
        Case { name: "A{100000}", text: "A{100000}".into(), steps: &["A"] },
        Case { name: "(A{10000}){10000}", text: "(A{10000}){10000}".into(), steps: &["A"] },
        Case { name: "A{30000} | A{29999}", text: "A{30000} | A{29999}".into(), steps: &["A"] },
        Case {
            name: "4096 alternatives",
            text: (0..4096).map(|i| format!("T{i}")).collect::<Vec<_>>().join(" | "),
            steps: &["T4000"],
        },
        Case { name: "(A | A -> B | B)* -> C", text: "(A | A -> B | B)* -> C".into(), steps: &["A", "B", "A", "A"] },
    ]
}

/// The mean time of `f` in µs, over enough calls to take about `target`.
fn time_us(target: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 3 || start.elapsed() < target {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / calls as f64
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let target = Duration::from_millis(300);
    if !json {
        println!("{:<32} {:>10} {:>12} {:>13} {:>11}", "shape", "parse µs", "step µs", "guaranteed µs", "label bytes");
    }
    for case in cases() {
        let parse = time_us(target, || {
            let _ = black_box(black_box(case.text.as_str()).parse::<Promise>());
        });
        let Ok(Promise::Shape(shape)) = case.text.parse::<Promise>() else {
            println!("{:<32} does not parse", case.name);
            continue;
        };
        // Take 100 steps first, then time steps from there (the derivatives of a long run).
        let mut current: Shape = shape.clone();
        let mut refused = false;
        for i in 0..100 {
            match current.try_step(case.steps[i % case.steps.len()]) {
                Ok(Some(next)) => current = next,
                Ok(None) => break,
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        let task = case.steps[0];
        let step = time_us(target, || {
            let _ = black_box(black_box(&current).try_step(task));
        });
        let guaranteed = time_us(target, || {
            let _ = black_box(black_box(&current).guaranteed());
        });
        let nodes = current.to_string().len();
        if json {
            println!(
                "{{\"shape\": {:?}, \"parse_us\": {parse:.2}, \"step_us\": {step:.2}, \"guaranteed_us\": {guaranteed:.2}, \
                 \"label_bytes\": {nodes}, \"refused\": {refused}}}",
                case.name
            );
        } else {
            let note = if refused { " (too complex: refused)" } else { "" };
            println!("{:<32} {parse:>10.2} {step:>12.2} {guaranteed:>13.2} {nodes:>11}{note}", case.name);
        }
    }
}
