//! Outside a run, a task is an ordinary async function: awaiting its handle runs its body.

use salt::prelude::*;

/// Doubles a number.
#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

static COUNTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Doubles a number and counts its runs.
#[task]
async fn counted_double(x: u64) -> u64 {
    COUNTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    x * 2
}

/// Adds two numbers; fails on overflow.
#[task(retries = 3)]
async fn add(a: u64, b: u64) -> salt::Result<u64> {
    a.checked_add(b).ok_or_else(|| salt::Error::fatal("overflow"))
}

/// Wires handles, as a workflow would.
#[task]
async fn sum_of_doubles(a: u64, b: u64, ctx: &Context) -> salt::Result<u64> {
    assert!(!ctx.in_run());
    let (a, b) = (double(a), double(b));
    add(a, b).await
}

/// Waits for a signal: impossible outside a run.
#[task]
async fn needs_a_person(ctx: &Context) -> salt::Result<bool> {
    ctx.wait_for::<bool>("approve").await
}

#[tokio::test]
async fn a_task_called_outside_a_run_runs_its_body() {
    assert_eq!(double(21).await.unwrap(), 42);
    assert_eq!(sum_of_doubles(1, 2).await.unwrap(), 6);
    let err = add(u64::MAX, 1).await.unwrap_err();
    assert_eq!(err.kind(), salt::ErrorKind::Fatal);
    assert_eq!(err.to_string(), "overflow");
}

#[tokio::test]
async fn a_handle_can_feed_two_tasks_and_runs_once() {
    let d = counted_double(5);
    let (x, y) = (add(&d, 1), add(d.clone(), 2));
    assert_eq!((x.await.unwrap(), y.await.unwrap()), (11, 12));
    assert_eq!(COUNTED.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn waiting_for_a_signal_outside_a_run_is_an_error() {
    let err = needs_a_person().await.unwrap_err();
    assert!(err.to_string().contains("outside a run"), "{err}");
}

/// Sums a list, and says in which order it came.
#[task]
async fn sum_list(xs: Vec<u64>) -> String {
    format!("{xs:?} = {}", xs.iter().sum::<u64>())
}

/// One more than `x`, or 0 without one.
#[task]
async fn plus_one_or_zero(x: Option<u64>) -> u64 {
    x.map_or(0, |x| x + 1)
}

/// A pair's difference.
#[task]
async fn difference(pair: (u64, u64)) -> i64 {
    pair.0 as i64 - pair.1 as i64
}

/// The larger of three.
#[task]
async fn largest(xs: [u64; 3]) -> u64 {
    xs.into_iter().max().unwrap_or(0)
}

#[tokio::test]
async fn handles_passed_as_a_list_or_an_option_are_awaited_outside_a_run() {
    let doubles: Vec<salt::Handle<u64>> = (1..=3).map(double).collect();
    assert_eq!(sum_list(&doubles).await.unwrap(), "[2, 4, 6] = 12");
    assert_eq!(sum_list(&doubles[1..]).await.unwrap(), "[4, 6] = 10");
    assert_eq!(sum_list(doubles).await.unwrap(), "[2, 4, 6] = 12");
    assert_eq!(sum_list([double(5), double(1)]).await.unwrap(), "[10, 2] = 12");
    assert_eq!(sum_list(Vec::<salt::Handle<u64>>::new()).await.unwrap(), "[] = 0");
    assert_eq!(plus_one_or_zero(Some(double(4))).await.unwrap(), 9);
    assert_eq!(plus_one_or_zero(None::<salt::Handle<u64>>).await.unwrap(), 0);
    assert_eq!(difference((double(1), double(5))).await.unwrap(), -8);
    assert_eq!(largest([double(3), double(9), double(1)]).await.unwrap(), 18);
    // A member that fails fails the call, with its error.
    let err = sum_list(vec![double(1), add(u64::MAX, 1)]).await.unwrap_err();
    assert_eq!(err.kind(), salt::ErrorKind::Fatal);
    assert_eq!(err.to_string(), "overflow");
}
