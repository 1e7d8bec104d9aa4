//! Live parts of a page over server-sent events: the store is read every [`POLL`] and the parts
//! of the page that changed are sent, as `{"parts": {"ID": "HTML"}}`; the page's script puts
//! each into the element with that id. When what the page shows can no longer change (its run
//! ended), a last `end` event closes the stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Map, Value};

/// How often an open run or node page's parts are read again.
pub(super) const POLL: Duration = Duration::from_millis(300);
/// How often an open runs page's parts are read again.
pub(super) const POLL_LIST: Duration = Duration::from_secs(1);

/// What a live page shows now: its parts by element id, and whether they can still change.
pub(super) struct Parts {
    /// (element id, inner HTML).
    pub(super) parts: Vec<(String, String)>,
    /// Nothing will change any more.
    pub(super) done: bool,
}

fn hash(id: &str, html: &str) -> String {
    // FNV-1a, 64 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain([0]).chain(html.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Short fingerprints of parts, one per part: a page says which parts it was rendered with
/// (`since`), so that its stream sends only those that differ.
pub(super) fn fingerprint(parts: &[(String, String)]) -> String {
    parts.iter().map(|(id, html)| hash(id, html)).collect::<Vec<_>>().join(".")
}

/// A stream of the parts `render` gives that changed since it last gave them; the first time,
/// of every part but those the page was rendered with (`since`, their [`fingerprint`]). The
/// parts are read `every` so often, or less often when reading them takes long (a huge run):
/// never more than a third of the time.
pub(super) fn stream<F>(
    since: Option<String>,
    every: Duration,
    render: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Option<Parts> + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let state = (render, Vec::<(String, String)>::new(), false, true, every);
    let events = futures::stream::unfold(state, move |(render, mut last, ended, first, mut pause)| {
        let since = since.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                if !first || !last.is_empty() {
                    tokio::time::sleep(pause).await;
                }
                let r = render.clone();
                let started = std::time::Instant::now();
                let now = tokio::task::spawn_blocking(move || r()).await.ok().flatten();
                pause = every.max(started.elapsed() * 2);
                let Some(now) = now else {
                    // The thing shown is gone (or the store cannot be read): stop.
                    return Some((Ok(Event::default().event("end").data("gone")), (render, last, true, false, pause)));
                };
                let mut changed = Map::new();
                if first && last.is_empty() {
                    let shown: Vec<&str> = since.as_deref().unwrap_or("").split('.').collect();
                    last = now
                        .parts
                        .iter()
                        .filter(|(id, html)| shown.contains(&hash(id, html).as_str()))
                        .cloned()
                        .collect();
                }
                for (id, html) in &now.parts {
                    if !last.iter().any(|(i, h)| i == id && h == html) {
                        changed.insert(id.clone(), Value::String(html.clone()));
                    }
                }
                last = now.parts;
                if now.done {
                    let data = serde_json::json!({"parts": changed}).to_string();
                    return Some((Ok(Event::default().event("end").data(data)), (render, last, true, false, pause)));
                }
                if !changed.is_empty() {
                    let data = serde_json::json!({"parts": changed}).to_string();
                    return Some((Ok(Event::default().data(data)), (render, last, false, false, pause)));
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
