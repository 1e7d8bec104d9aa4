//! Lays a run's graph out and draws it as SVG, inside the binary: no Graphviz.
//!
//! It draws what `graph --format svg` draws (nodes filled by state, an annotated color filling
//! the node with the state as its thick border, data and runs-after edges solid, control edges
//! dashed, spawns dotted, wildcards as dashed ellipses labelled by what may still come,
//! guaranteed nodes dashed), with a layered layout of its own (longest-path ranks, barycenter
//! ordering, centred coordinates). A large graph is collapsed first ([`Scene::build`]): more
//! than [`GROUP_OVER`] siblings of one task under one parent become one group node with
//! per-state counts, so that no drawing holds more than a few hundred boxes, whatever the size
//! of the run.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use salt_runtime::model::{EdgeKind, NodeId, NodeState};
use salt_runtime::render::{GraphView, state_color};

/// Siblings of one task under one parent beyond this many are drawn as one group node.
pub const GROUP_OVER: usize = 20;
/// Past this many boxes the graph is collapsed harder: every repeated sibling task, then every
/// repeated task of the run, is one group.
pub const MAX_BOXES: usize = 300;
/// How many members of an expanded group are drawn, page by page.
pub const PAGE: usize = 100;

/// Which group to draw expanded, and which page of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collapse {
    /// The key of the expanded group ([`BoxKind::Group::key`]).
    pub expand: Option<String>,
    /// The page of its members drawn one by one (from 0; [`PAGE`] per page).
    pub page: usize,
}

/// What a box of the drawing stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum BoxKind {
    /// One node of the run.
    Node {
        /// Its id.
        id: NodeId,
        /// Its state (none for a planned node).
        state: Option<NodeState>,
        /// Its annotated fill color.
        color: Option<String>,
        /// Its annotated shape is round.
        round: bool,
    },
    /// Several nodes of one task, drawn as one.
    Group {
        /// Names the group in a [`Collapse`].
        key: String,
        /// The task of its nodes.
        task: String,
        /// How many nodes it holds.
        count: usize,
        /// How many of them are in each state, in display order.
        states: Vec<(NodeState, usize)>,
        /// It holds the members an expanded group does not draw on its page.
        others: bool,
        /// The page it shows next when clicked.
        next_page: usize,
    },
    /// What may still be added: a dashed ellipse.
    Wildcard,
    /// A node a shape promise guarantees, not there yet: a dashed box.
    Ghost,
}

/// A box to draw: what it is and its text lines.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneBox {
    /// What it stands for.
    pub kind: BoxKind,
    /// Its text, line by line.
    pub lines: Vec<String>,
}

/// How an edge is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeStyle {
    /// A data or runs-after edge: solid.
    Solid,
    /// A control edge: dashed.
    Control,
    /// From the node that spawned another to it: dotted, no arrowhead.
    Spawn,
    /// To a wildcard or a guaranteed node: dashed gray.
    Gradient,
    /// From or to a superseded node: dashed light gray.
    Superseded,
}

/// An edge between two boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneEdge {
    /// The upstream box (index in [`Scene::boxes`]).
    pub from: usize,
    /// The downstream box.
    pub to: usize,
    /// How it is drawn.
    pub style: EdgeStyle,
    /// Its label: the one a body gave it, or `×N` for N edges drawn as one.
    pub label: Option<String>,
}

/// A graph reduced to what is drawn: at most about [`MAX_BOXES`] boxes.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The title drawn above.
    pub title: String,
    /// The boxes.
    pub boxes: Vec<SceneBox>,
    /// The edges.
    pub edges: Vec<SceneEdge>,
    /// How many nodes of the run are inside groups.
    pub grouped: usize,
}

enum Slot {
    Node(usize),
    Group { key: String, members: Vec<usize>, others: bool, next_page: usize },
}

#[derive(Clone, Copy)]
enum Mode {
    Siblings(usize),
    Tasks,
}

/// Decides which node goes in which box: node index → slot index.
fn assign(view: &GraphView, mode: Mode, c: &Collapse) -> (Vec<Slot>, Vec<usize>) {
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    let key_of = |i: usize| -> Option<String> {
        let n = &view.nodes[i];
        let parent = n.parent?;
        Some(match mode {
            Mode::Siblings(_) => format!("{parent}/{}", n.task),
            Mode::Tasks => format!("*/{}", n.task),
        })
    };
    let keys: Vec<Option<String>> = (0..view.nodes.len()).map(key_of).collect();
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = k {
            by_key.entry(k.clone()).or_default().push(i);
        }
    }
    let over = match mode {
        Mode::Siblings(n) => n,
        Mode::Tasks => 1,
    };
    let mut slots = Vec::new();
    let mut slot_of = vec![usize::MAX; view.nodes.len()];
    let mut group_slot: HashMap<&str, usize> = HashMap::new();
    let mut others_slot: HashMap<&str, usize> = HashMap::new();
    for i in 0..view.nodes.len() {
        let Some(key) = keys[i].as_deref().filter(|k| by_key[*k].len() > over) else {
            slot_of[i] = slots.len();
            slots.push(Slot::Node(i));
            continue;
        };
        let members = &by_key[key];
        if c.expand.as_deref() == Some(key) {
            let pages = members.len().div_ceil(PAGE);
            let page = c.page.min(pages.saturating_sub(1));
            let pos = members.binary_search(&i).unwrap_or(0);
            if pos / PAGE == page {
                slot_of[i] = slots.len();
                slots.push(Slot::Node(i));
            } else {
                let s = *others_slot.entry(key).or_insert_with(|| {
                    slots.push(Slot::Group {
                        key: key.to_string(),
                        members: Vec::new(),
                        others: true,
                        next_page: (page + 1) % pages,
                    });
                    slots.len() - 1
                });
                if let Slot::Group { members, .. } = &mut slots[s] {
                    members.push(i);
                }
                slot_of[i] = s;
            }
            continue;
        }
        let s = *group_slot.entry(key).or_insert_with(|| {
            slots.push(Slot::Group { key: key.to_string(), members: Vec::new(), others: false, next_page: 0 });
            slots.len() - 1
        });
        if let Slot::Group { members, .. } = &mut slots[s] {
            members.push(i);
        }
        slot_of[i] = s;
    }
    (slots, slot_of)
}

fn node_lines(view: &GraphView, i: usize) -> Vec<String> {
    let n = &view.nodes[i];
    let name = n.label.as_deref().unwrap_or(&n.task);
    let state = n.state.map(NodeState::as_str).unwrap_or("planned");
    let mut second = state.to_string();
    if n.attempts > 1 {
        let _ = write!(second, " ({} attempts)", n.attempts);
    }
    let mut lines: Vec<String> = format!("{}: {name}", n.id).lines().map(str::to_string).collect();
    lines.push(second);
    lines
}

impl Scene {
    /// Reduces `view` to at most about [`MAX_BOXES`] boxes: more than [`GROUP_OVER`] siblings
    /// of one task under one parent are one group (but the expanded one shows a page of its
    /// members); when that is still too many, every repeated sibling task, then every repeated
    /// task, is one group.
    pub fn build(view: &GraphView, c: &Collapse) -> Scene {
        let mut chosen = None;
        for mode in [Mode::Siblings(GROUP_OVER), Mode::Siblings(1), Mode::Tasks] {
            let (slots, slot_of) = assign(view, mode, c);
            if slots.len() <= MAX_BOXES || matches!(mode, Mode::Tasks) {
                chosen = Some((slots, slot_of));
                break;
            }
        }
        let (slots, slot_of) = chosen.unwrap_or_default();
        let index: HashMap<NodeId, usize> = view.nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let slot = |id: NodeId| index.get(&id).map(|i| slot_of[*i]);
        let mut grouped = 0;
        let mut boxes: Vec<SceneBox> = slots
            .iter()
            .map(|s| match s {
                Slot::Node(i) => {
                    let n = &view.nodes[*i];
                    let round = n.shape.as_deref().is_some_and(|s| matches!(s, "ellipse" | "oval" | "circle"));
                    SceneBox {
                        kind: BoxKind::Node { id: n.id, state: n.state, color: n.color.clone(), round },
                        lines: node_lines(view, *i),
                    }
                }
                Slot::Group { key, members, others, next_page } => {
                    grouped += members.len();
                    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
                    for m in members {
                        let s = view.nodes[*m].state.unwrap_or_default();
                        let pos = NodeState::ALL.iter().position(|x| *x == s).unwrap_or(0);
                        *counts.entry(pos).or_default() += 1;
                    }
                    let states: Vec<(NodeState, usize)> =
                        counts.into_iter().map(|(p, n)| (NodeState::ALL[p], n)).collect();
                    let task = view.nodes[members[0]].task.clone();
                    let head = if *others {
                        format!("{task} × {} more", members.len())
                    } else {
                        format!("{task} × {}", members.len())
                    };
                    let detail =
                        states.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", ");
                    SceneBox {
                        kind: BoxKind::Group {
                            key: key.clone(),
                            task,
                            count: members.len(),
                            states,
                            others: *others,
                            next_page: *next_page,
                        },
                        lines: vec![head, detail],
                    }
                }
            })
            .collect();

        let mut edges: Vec<SceneEdge> = Vec::new();
        let mut seen: HashMap<(usize, usize, EdgeStyle), (usize, usize)> = HashMap::new();
        let mut add = |from: usize, to: usize, style: EdgeStyle, label: Option<&str>, edges: &mut Vec<SceneEdge>| {
            if from == to {
                return;
            }
            match seen.get_mut(&(from, to, style)) {
                Some((at, count)) => {
                    *count += 1;
                    if style != EdgeStyle::Gradient {
                        edges[*at].label = Some(format!("×{count}"));
                    }
                }
                None => {
                    seen.insert((from, to, style), (edges.len(), 1));
                    edges.push(SceneEdge { from, to, style, label: label.map(str::to_string) });
                }
            }
        };
        for n in &view.nodes {
            if let (Some(p), Some(c)) = (n.parent.and_then(slot), slot(n.id)) {
                add(p, c, EdgeStyle::Spawn, None, &mut edges);
            }
        }
        let superseded =
            |id: &NodeId| index.get(id).is_some_and(|i| view.nodes[*i].state == Some(NodeState::Superseded));
        for (f, t, k) in &view.edges {
            let (Some(from), Some(to)) = (slot(*f), slot(*t)) else { continue };
            let style = if superseded(f) || superseded(t) {
                EdgeStyle::Superseded
            } else if *k == EdgeKind::Control {
                EdgeStyle::Control
            } else {
                EdgeStyle::Solid
            };
            add(from, to, style, view.edge_label(*f, *t, *k), &mut edges);
        }
        // Wildcards, one per box and label.
        let mut wildcard_box: Vec<Option<usize>> = vec![None; view.wildcards.len()];
        let mut wildcards: HashMap<(usize, String), usize> = HashMap::new();
        for (i, w) in view.wildcards.iter().enumerate() {
            let (Some(label), Some(after)) = (GraphView::drawn_label(w), slot(w.after)) else { continue };
            let b = *wildcards.entry((after, label.clone())).or_insert_with(|| {
                boxes.push(SceneBox { kind: BoxKind::Wildcard, lines: vec![label] });
                boxes.len() - 1
            });
            wildcard_box[i] = Some(b);
            add(after, b, EdgeStyle::Gradient, None, &mut edges);
        }
        // Guaranteed nodes, chained after their owner's wildcards (or where they would be).
        let mut chains: Vec<(NodeId, Vec<&str>)> = Vec::new();
        for g in view.ghosts.iter().filter(|g| view.ghosts_drawn(g.owner)) {
            match chains.iter_mut().find(|(o, _)| *o == g.owner) {
                Some((_, chain)) => chain.push(&g.task),
                None => chains.push((g.owner, vec![&g.task])),
            }
        }
        let mut ghosts: HashMap<(usize, usize, String), usize> = HashMap::new();
        for (owner, chain) in chains {
            let Some(owner_box) = slot(owner) else { continue };
            let mut prev: Vec<usize> = view
                .wildcards
                .iter()
                .enumerate()
                .filter(|(_, w)| w.owner == owner)
                .filter_map(|(i, w)| wildcard_box[i].or_else(|| slot(w.after)))
                .collect();
            prev.dedup();
            if prev.is_empty() {
                prev.push(owner_box);
            }
            for (pos, task) in chain.into_iter().enumerate() {
                let b = *ghosts.entry((owner_box, pos, task.to_string())).or_insert_with(|| {
                    boxes.push(SceneBox { kind: BoxKind::Ghost, lines: vec![task.to_string()] });
                    boxes.len() - 1
                });
                for p in &prev {
                    add(*p, b, EdgeStyle::Gradient, None, &mut edges);
                }
                prev = vec![b];
            }
        }
        Scene { title: view.title.clone(), boxes, edges, grouped }
    }
}

/// Where a box is drawn: its centre and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    /// Centre, x.
    pub x: f64,
    /// Centre, y.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

/// A laid-out graph: each box placed, each edge a route of points from its upstream box to
/// its downstream box.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The boxes, in the order given.
    pub boxes: Vec<Placed>,
    /// The edges' routes, in the order given.
    pub routes: Vec<Vec<(f64, f64)>>,
    /// The width of the whole.
    pub width: f64,
    /// The height of the whole.
    pub height: f64,
}

const RANK_SEP: f64 = 46.0;
const NODE_SEP: f64 = 22.0;
const DUMMY_SEP: f64 = 10.0;
const MARGIN: f64 = 16.0;

/// Lays out boxes of the given sizes `(w, h)` joined by `edges` (from, to, routed), top to
/// bottom: ranks by longest path (cycles broken), long routed edges through dummy points, rows
/// ordered by barycenters, and each box centred over its neighbours as far as the rows allow.
/// An edge that is not routed (a spawn) ranks its boxes too, but when it spans several ranks
/// it is drawn straight and does not pull the boxes it joins together.
pub fn layout(sizes: &[(f64, f64)], edges: &[(usize, usize, bool)], top: f64) -> Layout {
    let n = sizes.len();
    let routed: Vec<bool> = edges.iter().map(|e| e.2).collect();
    let edges: Vec<(usize, usize)> = edges.iter().map(|e| (e.0, e.1)).collect();
    // Break cycles: an edge back to a box on the depth-first stack is turned around.
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, (f, t)) in edges.iter().enumerate() {
        if f != t && *f < n && *t < n {
            out[*f].push(i);
        }
    }
    let mut reversed = vec![false; edges.len()];
    let mut mark = vec![0u8; n];
    for start in 0..n {
        if mark[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = 1;
        while let Some((v, k)) = stack.last_mut() {
            if let Some(&e) = out[*v].get(*k) {
                *k += 1;
                let t = edges[e].1;
                match mark[t] {
                    0 => {
                        mark[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => reversed[e] = true,
                    _ => {}
                }
            } else {
                mark[*v] = 2;
                stack.pop();
            }
        }
    }
    let directed: Vec<(usize, usize)> = edges
        .iter()
        .zip(&reversed)
        .filter(|((f, t), _)| f != t && *f < n && *t < n)
        .map(|((f, t), r)| if *r { (*t, *f) } else { (*f, *t) })
        .collect();
    // Ranks: longest path from the sources.
    let mut indegree = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (f, t) in &directed {
        indegree[*t] += 1;
        succ[*f].push(*t);
    }
    let mut rank = vec![0usize; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|v| indegree[*v] == 0).collect();
    while let Some(v) = queue.pop_front() {
        for &t in &succ[v] {
            rank[t] = rank[t].max(rank[v] + 1);
            indegree[t] -= 1;
            if indegree[t] == 0 {
                queue.push_back(t);
            }
        }
    }
    let ranks = rank.iter().max().map_or(0, |r| r + 1);
    // Vertices: the boxes, then a dummy per rank an edge crosses.
    let mut vrank = rank.clone();
    let mut vwidth: Vec<f64> = sizes.iter().map(|s| s.0).collect();
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, (f, t)) in edges.iter().enumerate() {
        if f == t || *f >= n || *t >= n {
            chains.push(Vec::new());
            continue;
        }
        let (a, b) = if reversed[i] { (*t, *f) } else { (*f, *t) };
        if !routed[i] && rank[b] > rank[a] + 1 {
            chains.push(vec![a, b]);
            continue;
        }
        let mut chain = vec![a];
        for r in rank[a] + 1..rank[b] {
            vrank.push(r);
            vwidth.push(0.0);
            up.push(Vec::new());
            down.push(Vec::new());
            chain.push(vrank.len() - 1);
        }
        chain.push(b);
        for w in chain.windows(2) {
            down[w[0]].push(w[1]);
            up[w[1]].push(w[0]);
        }
        chains.push(chain);
    }
    let total = vrank.len();
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); ranks];
    // Start in depth-first order from the sources, so that subtrees start together.
    let mut placed = vec![false; total];
    let mut order: Vec<usize> = Vec::with_capacity(total);
    for start in 0..total {
        if placed[start] || !up[start].is_empty() {
            continue;
        }
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            if placed[v] {
                continue;
            }
            placed[v] = true;
            order.push(v);
            stack.extend(down[v].iter().rev().copied());
        }
    }
    order.extend((0..total).filter(|v| !placed[*v]));
    for v in order {
        rows[vrank[v]].push(v);
    }
    let mut pos = vec![0usize; total];
    let index = |rows: &Vec<Vec<usize>>, pos: &mut Vec<usize>| {
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                pos[*v] = i;
            }
        }
    };
    index(&rows, &mut pos);
    for sweep in 0..8 {
        let downward = sweep % 2 == 0;
        let range: Vec<usize> =
            if downward { (1..ranks).collect() } else { (0..ranks.saturating_sub(1)).rev().collect() };
        for r in range {
            let keys: HashMap<usize, f64> = rows[r]
                .iter()
                .map(|v| {
                    let adj = if downward { &up[*v] } else { &down[*v] };
                    let key = if adj.is_empty() {
                        pos[*v] as f64
                    } else {
                        adj.iter().map(|a| pos[*a] as f64).sum::<f64>() / adj.len() as f64
                    };
                    (*v, key)
                })
                .collect();
            rows[r].sort_by(|a, b| keys[a].total_cmp(&keys[b]));
            for (i, v) in rows[r].iter().enumerate() {
                pos[*v] = i;
            }
        }
    }
    // Coordinates: packed rows, then each row moved towards its neighbours' centres.
    let gap = |a: usize, b: usize| {
        let sep = if a >= n || b >= n { DUMMY_SEP } else { NODE_SEP };
        (vwidth[a] + vwidth[b]) / 2.0 + sep
    };
    let mut x = vec![0.0f64; total];
    for row in &rows {
        for i in 1..row.len() {
            x[row[i]] = x[row[i - 1]] + gap(row[i - 1], row[i]);
        }
    }
    for sweep in 0..8 {
        let downward = sweep % 2 == 0;
        let range: Vec<usize> =
            if downward { (1..ranks).collect() } else { (0..ranks.saturating_sub(1)).rev().collect() };
        for r in range {
            let row = &rows[r];
            let desired: Vec<f64> = row
                .iter()
                .map(|v| {
                    let adj = if downward { &up[*v] } else { &down[*v] };
                    if adj.is_empty() { x[*v] } else { adj.iter().map(|a| x[*a]).sum::<f64>() / adj.len() as f64 }
                })
                .collect();
            let mut placed: Vec<f64> = Vec::with_capacity(row.len());
            for (i, d) in desired.iter().enumerate() {
                let min = if i == 0 { f64::MIN } else { placed[i - 1] + gap(row[i - 1], row[i]) };
                placed.push(d.max(min));
            }
            let shift = desired.iter().zip(&placed).map(|(d, p)| d - p).sum::<f64>() / row.len().max(1) as f64;
            for (v, p) in row.iter().zip(placed) {
                x[*v] = p + shift;
            }
        }
    }
    let left = (0..total).map(|v| x[v] - vwidth[v] / 2.0).fold(f64::MAX, f64::min);
    let left = if left == f64::MAX { 0.0 } else { left };
    for xv in &mut x {
        *xv += MARGIN - left;
    }
    let mut row_y = vec![0.0f64; ranks];
    let mut row_h = vec![0.0f64; ranks];
    for v in 0..n {
        row_h[rank[v]] = row_h[rank[v]].max(sizes[v].1);
    }
    let mut y = top + MARGIN;
    for r in 0..ranks {
        row_y[r] = y + row_h[r] / 2.0;
        y += row_h[r] + RANK_SEP;
    }
    let boxes: Vec<Placed> =
        (0..n).map(|v| Placed { x: x[v], y: row_y[rank[v]], w: sizes[v].0, h: sizes[v].1 }).collect();
    let routes = chains
        .iter()
        .enumerate()
        .map(|(i, chain)| {
            if chain.len() < 2 {
                return Vec::new();
            }
            let (a, b) = (chain[0], chain[chain.len() - 1]);
            let mut points = vec![(x[a], row_y[rank[a]] + sizes[a].1 / 2.0)];
            points.extend(chain[1..chain.len() - 1].iter().map(|d| (x[*d], row_y[vrank[*d]])));
            points.push((x[b], row_y[rank[b]] - sizes[b].1 / 2.0));
            if reversed[i] {
                points.reverse();
            }
            points
        })
        .collect();
    let width = (0..total).map(|v| x[v] + vwidth[v] / 2.0).fold(0.0, f64::max) + MARGIN;
    Layout { boxes, routes, width, height: y - RANK_SEP + MARGIN }
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CHAR_W: f64 = 7.2;
const LINE_H: f64 = 15.0;

fn size_of(b: &SceneBox) -> (f64, f64) {
    let chars = b.lines.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
    let mut w = (chars * CHAR_W + 22.0).max(56.0);
    let mut h = b.lines.len() as f64 * LINE_H + 12.0;
    match b.kind {
        BoxKind::Group { .. } => h += 10.0,
        BoxKind::Wildcard => {
            w += 24.0;
            h += 6.0;
        }
        BoxKind::Node { round: true, .. } => {
            w += 24.0;
            h += 6.0;
        }
        _ => {}
    }
    (w, h)
}

/// Where a box links to, if anywhere (a node's page, a group's expansion).
pub type Links<'a> = &'a dyn Fn(&BoxKind) -> Option<String>;

/// Draws `view` as SVG: collapsed as [`Scene::build`] says, laid out by [`layout`]. Each box
/// carries `data-node` (its id) or `data-group` (its key) and `data-state`, and links where
/// `links` says.
pub fn svg(view: &GraphView, collapse: &Collapse, links: Links<'_>) -> (String, Scene) {
    let scene = Scene::build(view, collapse);
    let sizes: Vec<(f64, f64)> = scene.boxes.iter().map(size_of).collect();
    let pairs: Vec<(usize, usize, bool)> =
        scene.edges.iter().map(|e| (e.from, e.to, e.style != EdgeStyle::Spawn)).collect();
    let top = 26.0;
    let l = layout(&sizes, &pairs, top);
    let width = l.width.max(esc(&scene.title).chars().count() as f64 * 8.0 + 2.0 * MARGIN);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="salt-graph" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="Helvetica, Arial, sans-serif" font-size="12">"##,
        w = width,
        h = l.height
    );
    out.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444444"/></marker></defs>"##,
    );
    let _ = write!(
        out,
        r#"<text class="title" x="{:.1}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        width / 2.0,
        esc(&scene.title)
    );
    for (e, route) in scene.edges.iter().zip(&l.routes) {
        if route.len() < 2 {
            continue;
        }
        let mut d = format!("M{:.1},{:.1}", route[0].0, route[0].1);
        for w in route.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            let ym = (y0 + y1) / 2.0;
            let _ = write!(d, " C{x0:.1},{ym:.1} {x1:.1},{ym:.1} {x1:.1},{y1:.1}");
        }
        let (stroke, dash, arrow) = match e.style {
            EdgeStyle::Solid => ("#333333", "", true),
            EdgeStyle::Control => ("#333333", r#" stroke-dasharray="6 4""#, true),
            EdgeStyle::Spawn => ("#7f7f7f", r#" stroke-dasharray="2 3""#, false),
            EdgeStyle::Gradient => ("#666666", r#" stroke-dasharray="6 4""#, true),
            EdgeStyle::Superseded => ("#b3b3b3", r#" stroke-dasharray="6 4""#, true),
        };
        let marker = if arrow { r#" marker-end="url(#arrow)""# } else { "" };
        let class = match e.style {
            EdgeStyle::Solid => "solid",
            EdgeStyle::Control => "control",
            EdgeStyle::Spawn => "spawn",
            EdgeStyle::Gradient => "gradient",
            EdgeStyle::Superseded => "superseded",
        };
        let _ = write!(
            out,
            r#"<path class="edge {class}" d="{d}" fill="none" stroke="{stroke}" stroke-width="1.2"{dash}{marker}/>"#
        );
        if let Some(label) = &e.label {
            let mid = route[route.len() / 2];
            let prev = route[route.len() / 2 - 1];
            let _ = write!(
                out,
                r##"<text class="edge-label" x="{:.1}" y="{:.1}" font-size="10" fill="#4d4d4d">{}</text>"##,
                (mid.0 + prev.0) / 2.0 + 4.0,
                (mid.1 + prev.1) / 2.0,
                esc(label)
            );
        }
    }
    for (b, p) in scene.boxes.iter().zip(&l.boxes) {
        let link = links(&b.kind);
        if let Some(href) = &link {
            let _ = write!(out, r#"<a href="{}">"#, esc(href));
        }
        let (x0, y0) = (p.x - p.w / 2.0, p.y - p.h / 2.0);
        match &b.kind {
            BoxKind::Node { id, state, color, round } => {
                let state_name = state.map(NodeState::as_str).unwrap_or("planned");
                let fill = color.clone().unwrap_or_else(|| state.map(state_color).unwrap_or("#ffffff").to_string());
                let (stroke, width) = match (color, state) {
                    (_, Some(NodeState::Superseded)) => ("#999999", 1.0),
                    (Some(_), Some(s)) => (state_color(*s), 3.0),
                    _ => ("#000000", 1.0),
                };
                let dash = if *state == Some(NodeState::Superseded) { r#" stroke-dasharray="5 3""# } else { "" };
                let _ = write!(
                    out,
                    r#"<g class="node" data-node="{id}" data-state="{state_name}"><title>{state_name}</title>"#
                );
                if *round {
                    let _ = write!(
                        out,
                        r#"<ellipse cx="{:.1}" cy="{:.1}" rx="{:.1}" ry="{:.1}" fill="{}" stroke="{stroke}" stroke-width="{width}"{dash}/>"#,
                        p.x,
                        p.y,
                        p.w / 2.0,
                        p.h / 2.0,
                        esc(&fill)
                    );
                } else {
                    let _ = write!(
                        out,
                        r#"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" rx="6" fill="{}" stroke="{stroke}" stroke-width="{width}"{dash}/>"#,
                        p.w,
                        p.h,
                        esc(&fill)
                    );
                }
            }
            BoxKind::Group { key, states, count, .. } => {
                let _ = write!(
                    out,
                    r##"<g class="group" data-group="{}" data-count="{count}"><title>{} nodes; click to expand</title><rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" rx="6" fill="#ffffff" stroke="#000000" stroke-width="1.5"/><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6" fill="none" stroke="#000000" stroke-width="0.8"/>"##,
                    esc(key),
                    count,
                    p.w,
                    p.h,
                    x0 + 3.0,
                    y0 + 3.0,
                    p.w - 6.0,
                    p.h - 6.0
                );
                let total = states.iter().map(|(_, n)| *n).sum::<usize>().max(1) as f64;
                let mut bx = x0 + 8.0;
                let bw = p.w - 16.0;
                for (s, n) in states {
                    let w = bw * *n as f64 / total;
                    let _ = write!(
                        out,
                        r#"<rect class="bar" data-state="{}" x="{bx:.1}" y="{:.1}" width="{w:.1}" height="6" fill="{}"/>"#,
                        s.as_str(),
                        y0 + p.h - 13.0,
                        state_color(*s)
                    );
                    bx += w;
                }
            }
            BoxKind::Wildcard => {
                let _ = write!(
                    out,
                    r##"<g class="wildcard"><title>may still be added</title><ellipse cx="{:.1}" cy="{:.1}" rx="{:.1}" ry="{:.1}" fill="#ffffff" stroke="#666666" stroke-dasharray="6 4"/>"##,
                    p.x,
                    p.y,
                    p.w / 2.0,
                    p.h / 2.0
                );
            }
            BoxKind::Ghost => {
                let _ = write!(
                    out,
                    r##"<g class="ghost"><title>guaranteed by a promise</title><rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" rx="6" fill="#ffffff" stroke="#666666" stroke-dasharray="6 4"/>"##,
                    p.w, p.h
                );
            }
        }
        let text_h = b.lines.len() as f64 * LINE_H;
        let shift = if matches!(b.kind, BoxKind::Group { .. }) { 5.0 } else { 0.0 };
        let first = p.y - text_h / 2.0 + LINE_H * 0.75 - shift;
        let _ = write!(out, r#"<text x="{:.1}" y="{first:.1}" text-anchor="middle">"#, p.x);
        for (i, line) in b.lines.iter().enumerate() {
            let dy = if i == 0 { 0.0 } else { LINE_H };
            let _ = write!(out, r#"<tspan x="{:.1}" dy="{dy}">{}</tspan>"#, p.x, esc(line));
        }
        out.push_str("</text></g>");
        if link.is_some() {
            out.push_str("</a>");
        }
    }
    out.push_str("</svg>");
    (out, scene)
}

#[cfg(test)]
mod tests {
    use super::*;
    use salt_runtime::render::{ViewNode, Wildcard};
    use serde_json::json;

    fn node(id: u64, task: &str, parent: Option<u64>, state: NodeState) -> ViewNode {
        ViewNode {
            id: NodeId::new(id),
            task: task.into(),
            state: Some(state),
            label: None,
            color: None,
            shape: None,
            parent: parent.map(NodeId::new),
            attempts: 1,
        }
    }

    fn view(nodes: Vec<ViewNode>, edges: Vec<(u64, u64, EdgeKind)>) -> GraphView {
        GraphView {
            run: json!({}),
            title: "run 1 (w) running".into(),
            nodes,
            edges: edges.into_iter().map(|(f, t, k)| (NodeId::new(f), NodeId::new(t), k)).collect(),
            edge_labels: BTreeMap::new(),
            edge_args: BTreeMap::new(),
            arg_labels: false,
            promises: Vec::new(),
            wildcards: Vec::new(),
            ghosts: Vec::new(),
        }
    }

    /// The root spawns `n` nodes of `m` feeding one `b`.
    fn fan_out(n: u64) -> GraphView {
        let mut nodes = vec![node(0, "w", None, NodeState::Waiting)];
        let mut edges = Vec::new();
        for i in 1..=n {
            let state = match i % 10 {
                0 => NodeState::Failed,
                1..=3 => NodeState::Running,
                _ => NodeState::Succeeded,
            };
            nodes.push(node(i, "m", Some(0), state));
            edges.push((i, n + 1, EdgeKind::Data));
        }
        nodes.push(node(n + 1, "b", Some(0), NodeState::Pending));
        view(nodes, edges)
    }

    fn no_links(_: &BoxKind) -> Option<String> {
        None
    }

    #[test]
    fn a_small_graph_is_drawn_node_by_node_with_its_edges() {
        let mut v = view(
            vec![
                node(0, "w", None, NodeState::Waiting),
                node(1, "a", Some(0), NodeState::Succeeded),
                node(2, "b", Some(0), NodeState::Running),
            ],
            vec![(1, 2, EdgeKind::Data)],
        );
        v.wildcards.push(Wildcard {
            after: NodeId::new(2),
            owner: NodeId::ROOT,
            may_add: "M* -> B".into(),
            ends_with: vec!["B".into()],
        });
        v.ghosts.push(salt_runtime::render::Ghost { task: "B".into(), owner: NodeId::ROOT });
        let scene = Scene::build(&v, &Collapse::default());
        let lines: Vec<Vec<String>> = scene.boxes.iter().map(|b| b.lines.clone()).collect();
        assert_eq!(
            lines,
            [
                vec!["0: w".to_string(), "waiting".into()],
                vec!["1: a".into(), "succeeded".into()],
                vec!["2: b".into(), "running".into()],
                vec!["M*".into()],
                vec!["B".into()],
            ]
        );
        let edges: Vec<(usize, usize, EdgeStyle)> = scene.edges.iter().map(|e| (e.from, e.to, e.style)).collect();
        assert_eq!(
            edges,
            [
                (0, 1, EdgeStyle::Spawn),
                (0, 2, EdgeStyle::Spawn),
                (1, 2, EdgeStyle::Solid),
                (2, 3, EdgeStyle::Gradient),
                (3, 4, EdgeStyle::Gradient),
            ]
        );
        let (svg, _) = svg(&v, &Collapse::default(), &no_links);
        assert!(svg.contains(r#"data-node="2" data-state="running""#), "{svg}");
        assert!(svg.contains(r##"fill="#8fb8ff""##), "running is drawn in its color");
        assert_eq!(svg.matches(r#"class="wildcard""#).count(), 1);
        assert_eq!(svg.matches(r#"class="ghost""#).count(), 1);
        assert_eq!(svg.matches("<path class=\"edge").count(), 5);
    }

    #[test]
    fn layout_puts_each_node_below_what_it_depends_on_without_overlaps() {
        let sizes = vec![(60.0, 30.0); 5];
        let edges = [(0, 1, true), (0, 2, true), (1, 3, true), (2, 3, true), (0, 4, true), (4, 3, true)];
        let l = layout(&sizes, &edges, 0.0);
        for (f, t, _) in edges {
            assert!(l.boxes[f].y < l.boxes[t].y, "{f} above {t}");
        }
        for a in 0..5 {
            for b in a + 1..5 {
                let (p, q) = (l.boxes[a], l.boxes[b]);
                let apart = (p.x - q.x).abs() >= (p.w + q.w) / 2.0 || (p.y - q.y).abs() >= (p.h + q.h) / 2.0;
                assert!(apart, "{a} and {b} overlap: {p:?} {q:?}");
            }
        }
        // A cycle (a loop collapsed to its task) is laid out too.
        let l = layout(&sizes[..2], &[(0, 1, true), (1, 0, true)], 0.0);
        assert_eq!(l.routes.iter().filter(|r| r.len() >= 2).count(), 2);
    }

    #[test]
    fn a_fan_out_of_ten_thousand_is_one_group_with_counts_and_draws_fast() {
        let v = fan_out(10_000);
        let started = std::time::Instant::now();
        let (svg, scene) = svg(&v, &Collapse::default(), &no_links);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_millis(500), "took {took:?}");
        assert_eq!(scene.boxes.len(), 3);
        assert_eq!(scene.grouped, 10_000);
        assert_eq!(scene.boxes[1].lines, ["m × 10000", "3000 running, 6000 succeeded, 1000 failed"]);
        assert_eq!(svg.matches("<g class=\"node\"").count(), 2);
        assert_eq!(svg.matches("<g class=\"group\" data-group=\"0/m\"").count(), 1);
        // The 10 000 data edges into `b` are one edge.
        let into_b: Vec<&SceneEdge> = scene.edges.iter().filter(|e| e.to == 2 && e.style == EdgeStyle::Solid).collect();
        assert_eq!(into_b.len(), 1);
        assert_eq!(into_b[0].label.as_deref(), Some("×10000"));
    }

    #[test]
    fn an_expanded_group_draws_one_page_of_its_members_and_groups_the_rest() {
        let v = fan_out(250);
        let c = Collapse { expand: Some("0/m".into()), page: 2 };
        let scene = Scene::build(&v, &c);
        let nodes: Vec<NodeId> = scene
            .boxes
            .iter()
            .filter_map(|b| match b.kind {
                BoxKind::Node { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(nodes.len(), 2 + 50);
        assert_eq!(nodes[1], NodeId::new(201));
        let others: Vec<&SceneBox> = scene.boxes.iter().filter(|b| matches!(b.kind, BoxKind::Group { .. })).collect();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].lines[0], "m × 200 more");
        assert!(matches!(others[0].kind, BoxKind::Group { next_page: 0, others: true, .. }));
    }

    #[test]
    fn many_small_fan_outs_collapse_until_the_drawing_is_bounded() {
        // 500 parents, each spawning 10 children of `c` and one `d`: 6 000 nodes, no sibling
        // group over the threshold.
        let mut nodes = vec![node(0, "w", None, NodeState::Waiting)];
        let mut id = 1;
        for _ in 0..500 {
            let p = id;
            nodes.push(node(p, "p", Some(0), NodeState::Waiting));
            id += 1;
            for k in 0..11 {
                nodes.push(node(id, if k == 10 { "d" } else { "c" }, Some(p), NodeState::Succeeded));
                id += 1;
            }
        }
        let v = view(nodes, Vec::new());
        let scene = Scene::build(&v, &Collapse::default());
        assert!(scene.boxes.len() <= MAX_BOXES, "{} boxes", scene.boxes.len());
        let lines: Vec<&str> = scene.boxes.iter().map(|b| b.lines[0].as_str()).collect();
        assert_eq!(lines, ["0: w", "p × 500", "c × 5000", "d × 500"]);
    }
}
