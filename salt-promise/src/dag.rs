//! Shapes over DAGs: whether a graph of tasks is a graph of a shape's form.
//!
//! A shape reads as a series–parallel graph: a task name is one node; `P -> Q` is a graph of
//! `P` followed by a graph of `Q`, every node of the first running before every node of the
//! second; `P | Q` is either; a repetition `P{m,n}` is `m` to `n` graphs of `P`, side by side
//! (no edge between them) or one after another; `()` is the empty graph. So the DAG
//! `A -> {M, M, M} -> B` is of the shape `A -> M* -> B`, `A -> B` is too (no `M`), and the three
//! nodes `A`, `M`, `B` with no edges are not. "Runs before" is reachability: an edge that other
//! edges imply changes nothing.

use crate::grammar::{Re, Shape};

/// A topological order of the DAG with `n` nodes and these edges `(from, to)` (indices below
/// `n`), taking the smallest available index first; `None` if the edges close a cycle (or name
/// a node out of range).
///
/// ```
/// // 0 -> 2, 1 -> 0: 1 runs first.
/// assert_eq!(salt_promise::topological_order(3, &[(0, 2), (1, 0)]), Some(vec![1, 0, 2]));
/// assert_eq!(salt_promise::topological_order(2, &[(0, 1), (1, 0)]), None);
/// ```
pub fn topological_order(n: usize, edges: &[(usize, usize)]) -> Option<Vec<usize>> {
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(f, t) in edges {
        if f >= n || t >= n {
            return None;
        }
        out[f].push(t);
        indegree[t] += 1;
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(std::cmp::Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &t in &out[i] {
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(std::cmp::Reverse(t));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// A DAG under test: tasks, and which node reaches which.
struct Dag<'a> {
    tasks: &'a [&'a str],
    /// `reach[i]` has bit `j` set when there is a path from `i` to `j`.
    reach: Vec<Vec<u64>>,
    /// Undirected adjacency, for connected components.
    adjacent: Vec<Vec<usize>>,
    /// A topological order, and each node's position in it.
    position: Vec<usize>,
}

impl Dag<'_> {
    /// The maximal series decomposition of `nodes` (sorted topologically): blocks, every node
    /// of one running before every node of the next.
    fn series(&self, nodes: &[usize]) -> Vec<Vec<usize>> {
        let words = self.reach.first().map_or(0, Vec::len);
        // `ahead`: the nodes after the cut; `common`: what every node before the cut reaches.
        let mut ahead = vec![0u64; words];
        for &n in nodes {
            ahead[n / 64] |= 1 << (n % 64);
        }
        let mut common = vec![u64::MAX; words];
        let mut blocks = Vec::new();
        let mut start = 0;
        for (i, &n) in nodes.iter().enumerate() {
            ahead[n / 64] &= !(1 << (n % 64));
            for (c, r) in common.iter_mut().zip(&self.reach[n]) {
                *c &= r;
            }
            if i + 1 < nodes.len() && ahead.iter().zip(&common).all(|(a, c)| a & !c == 0) {
                blocks.push(nodes[start..=i].to_vec());
                start = i + 1;
            }
        }
        if start < nodes.len() {
            blocks.push(nodes[start..].to_vec());
        }
        blocks
    }

    /// The connected components of `nodes` (ignoring direction), each sorted topologically.
    fn components(&self, nodes: &[usize]) -> Vec<Vec<usize>> {
        let inside: std::collections::HashSet<usize> = nodes.iter().copied().collect();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for &n in nodes {
            if !seen.insert(n) {
                continue;
            }
            let mut comp = vec![n];
            let mut stack = vec![n];
            while let Some(x) = stack.pop() {
                for &y in &self.adjacent[x] {
                    if inside.contains(&y) && seen.insert(y) {
                        comp.push(y);
                        stack.push(y);
                    }
                }
            }
            comp.sort_by_key(|&x| self.position[x]);
            out.push(comp);
        }
        out
    }

    /// Whether the subgraph on `nodes` (sorted topologically) is a graph of `re`.
    fn fits(&self, re: &Re, nodes: &[usize]) -> bool {
        match re {
            Re::Empty => false,
            Re::Eps => nodes.is_empty(),
            Re::Task(t) => nodes.len() == 1 && self.tasks[nodes[0]] == t,
            Re::Alt(items) => items.iter().any(|r| self.fits(r, nodes)),
            Re::Seq(items) => {
                let blocks = self.series(nodes);
                self.seq_fits(items, &blocks)
            }
            Re::Repeat(item, min, max) => {
                if nodes.is_empty() {
                    return *min == 0;
                }
                let within = |c: usize| c >= *min as usize && max.is_none_or(|m| c <= m as usize);
                // One copy of the item.
                if within(1) && self.fits(item, nodes) {
                    return true;
                }
                // Copies side by side.
                let comps = self.components(nodes);
                if comps.len() > 1 && within(comps.len()) && comps.iter().all(|c| self.fits(item, c)) {
                    return true;
                }
                // Copies one after another: a run of series blocks per copy.
                let blocks = self.series(nodes);
                if blocks.len() > 1 {
                    let one: Vec<&Re> = vec![item];
                    // counts[j]: the numbers of copies that can cover blocks[..j].
                    let mut counts: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); blocks.len() + 1];
                    counts[0].insert(0);
                    for j in 0..blocks.len() {
                        if counts[j].is_empty() {
                            continue;
                        }
                        for l in j + 1..=blocks.len() {
                            let group: Vec<usize> = blocks[j..l].concat();
                            if self.seq_fits_refs(&one, &[group]) {
                                let next: Vec<usize> = counts[j].iter().map(|c| c + 1).collect();
                                counts[l].extend(next);
                            }
                        }
                    }
                    return counts[blocks.len()].iter().any(|&c| within(c));
                }
                false
            }
        }
    }

    fn seq_fits(&self, items: &[Re], blocks: &[Vec<usize>]) -> bool {
        let refs: Vec<&Re> = items.iter().collect();
        self.seq_fits_refs(&refs, blocks)
    }

    /// Whether the items, in order, cover the blocks, each item a run of consecutive blocks.
    fn seq_fits_refs(&self, items: &[&Re], blocks: &[Vec<usize>]) -> bool {
        // ok[j]: the items so far cover blocks[..j].
        let mut ok = vec![false; blocks.len() + 1];
        ok[0] = true;
        for item in items {
            let mut next = vec![false; blocks.len() + 1];
            for j in 0..=blocks.len() {
                if !ok[j] {
                    continue;
                }
                for l in j..=blocks.len() {
                    if !next[l] && self.fits(item, &blocks[j..l].concat()) {
                        next[l] = true;
                    }
                }
            }
            ok = next;
        }
        ok[blocks.len()]
    }
}

impl Shape {
    /// What may still follow in this shape after the DAG so far with these node tasks and edges
    /// `(from, to)`, read in [`topological_order`] (among nodes that do not run after one
    /// another, the smallest index first: give them in order of creation); `None` if no
    /// completion is of the shape's form, or if the edges close a cycle.
    ///
    /// This is the one reading of a DAG against a shape: the runtime checks its promises with it
    /// and draws what may still come (the label of [`Shape::label`]) and what must
    /// ([`Shape::guaranteed`]) from it.
    ///
    /// ```
    /// use salt_promise::{Promise, Shape};
    ///
    /// let Ok(Promise::Shape(shape)) = "A -> M* -> B".parse() else { unreachable!() };
    /// // A -> {M, M}, the Ms created before A.
    /// let rest = shape.after_dag(&["M", "M", "A"], &[(2, 0), (2, 1)]).unwrap();
    /// assert_eq!((rest.label(), rest.guaranteed()), ("M* -> B".to_string(), vec!["B".to_string()]));
    /// assert!(shape.after_dag(&["B", "A"], &[(0, 1)]).is_none(), "B before A");
    /// ```
    pub fn after_dag(&self, tasks: &[&str], edges: &[(usize, usize)]) -> Option<Shape> {
        let order = topological_order(tasks.len(), edges)?;
        self.after(order.iter().map(|&i| tasks[i]))
    }

    /// Whether the DAG with these node tasks and edges `(from, to)` (indices into `tasks`) is a
    /// graph of this shape's form (see the text of the `dag` module): `false` too if the edges close
    /// a cycle or name a node out of range.
    ///
    /// ```
    /// use salt_promise::{Promise, Shape};
    ///
    /// let Ok(Promise::Shape(shape)) = "A -> M* -> B".parse() else { unreachable!() };
    /// // A -> {M, M} -> B
    /// assert!(shape.fits_dag(&["A", "M", "M", "B"], &[(0, 1), (0, 2), (1, 3), (2, 3)]));
    /// assert!(shape.fits_dag(&["A", "B"], &[(0, 1)]));
    /// // No edges: B need not run after A.
    /// assert!(!shape.fits_dag(&["A", "M", "B"], &[]));
    /// // B before A.
    /// assert!(!shape.fits_dag(&["A", "B"], &[(1, 0)]));
    /// ```
    pub fn fits_dag(&self, tasks: &[&str], edges: &[(usize, usize)]) -> bool {
        let n = tasks.len();
        let Some(order) = topological_order(n, edges) else { return false };
        let mut position = vec![0; n];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let words = n.div_ceil(64);
        let mut reach = vec![vec![0u64; words]; n];
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut adjacent: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(f, t) in edges {
            out[f].push(t);
            adjacent[f].push(t);
            adjacent[t].push(f);
        }
        for &i in order.iter().rev() {
            let mut r = vec![0u64; words];
            for &t in &out[i] {
                r[t / 64] |= 1 << (t % 64);
                for (w, x) in r.iter_mut().zip(&reach[t]) {
                    *w |= x;
                }
            }
            reach[i] = r;
        }
        let dag = Dag { tasks, reach, adjacent, position };
        dag.fits(&self.re, &order)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Promise, Shape};

    fn shape(text: &str) -> Shape {
        match text.parse() {
            Ok(Promise::Shape(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_map_is_a_then_ms_then_b() {
        let s = shape("A -> M* -> B");
        for width in 0..6 {
            let mut tasks = vec!["A"];
            tasks.extend(std::iter::repeat_n("M", width));
            tasks.push("B");
            let b = width + 1;
            let mut edges: Vec<(usize, usize)> = (1..b).flat_map(|m| [(0, m), (m, b)]).collect();
            if width == 0 {
                edges.push((0, 1));
            }
            assert!(s.fits_dag(&tasks, &edges), "width {width}");
            // Without the edges into B, B need not wait for the Ms.
            let partial: Vec<_> = edges.iter().copied().filter(|&(_, t)| t != b).collect();
            assert!(!s.fits_dag(&tasks, &partial), "width {width}");
        }
        // A chain of Ms is Ms too, one after another.
        assert!(s.fits_dag(&["A", "M", "M", "B"], &[(0, 1), (1, 2), (2, 3)]));
        // One M that does not run after A.
        assert!(!s.fits_dag(&["A", "M", "B"], &[(1, 2), (0, 2)]));
        // Implied edges change nothing.
        assert!(s.fits_dag(&["A", "M", "B"], &[(0, 1), (1, 2), (0, 2)]));
    }

    #[test]
    fn sequences_choices_and_the_empty_graph() {
        assert!(shape("A -> B").fits_dag(&["A", "B"], &[(0, 1)]));
        assert!(!shape("A -> B").fits_dag(&["A", "B"], &[]));
        assert!(!shape("A -> B").fits_dag(&["A", "B"], &[(1, 0)]));
        assert!(!shape("A -> B").fits_dag(&["A"], &[]));
        assert!(shape("A | B").fits_dag(&["B"], &[]));
        assert!(!shape("A | B").fits_dag(&["A", "B"], &[]));
        assert!(shape("A?").fits_dag(&[], &[]));
        assert!(!shape("A -> B").fits_dag(&["A", "B"], &[(0, 1), (1, 0)]), "a cycle");
        // s1 -> s2 -> (s3, s4 side by side) -> s5
        let s = shape("s1 -> s2 -> (s3 | s4){2} -> s5");
        let tasks = ["s1", "s2", "s3", "s4", "s5"];
        assert!(s.fits_dag(&tasks, &[(0, 1), (1, 2), (1, 3), (2, 4), (3, 4)]));
        assert!(!s.fits_dag(&tasks, &[(0, 1), (1, 2), (1, 3), (3, 4)]), "s5 does not run after s3");
        // Not series-parallel (an N): no form fits it.
        assert!(!shape("(A | B | C | D)*").fits_dag(&["A", "B", "C", "D"], &[(0, 2), (1, 2), (1, 3)]));
        assert!(!shape("(A -> C | B -> D)*").fits_dag(&["A", "B", "C", "D"], &[(0, 2), (1, 2), (1, 3)]));
    }
}
