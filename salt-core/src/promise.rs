//! Promises: constraints on how a running workflow's graph may still change.
//!
//! The grammar, the shape engine and what a promise's scope and targets cover live in the
//! [`salt_promise`] crate, shared with the macros (which check promises at compile time); they
//! are re-exported here. A [`Promise`] (de)serializes as its text.
//!
//! [`scope_dag`] builds the DAG a shape promise constrains; the run core checks mutations with
//! it and the drawing reads wildcards and guaranteed nodes from it, so both agree.

pub use salt_promise::{Promise, PromiseError, Shape, Target, in_scope};

use crate::model::NodeId;

/// The DAG in the scope of a promise over one node's subtree (see [`scope_dag`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeDag<'a> {
    /// Its nodes: the scope node's descendants, in id (creation) order.
    pub members: Vec<NodeId>,
    /// Each member's task.
    pub tasks: Vec<&'a str>,
    /// Its edges `(from, to)`, as indices into `members`.
    pub edges: Vec<(usize, usize)>,
}

impl ScopeDag<'_> {
    /// The index of a member.
    pub fn index(&self, id: NodeId) -> Option<usize> {
        self.members.binary_search(&id).ok()
    }

    /// What may still follow in `shape` after this DAG, read in topological order (see
    /// [`Shape::after_dag`]); `None` if it cannot be completed to a DAG of the shape's form.
    pub fn shape_after(&self, shape: &Shape) -> Option<Shape> {
        shape.after_dag(&self.tasks, &self.edges)
    }

    /// Whether this DAG is of the shape's form (see [`Shape::fits_dag`]).
    pub fn fits(&self, shape: &Shape) -> bool {
        shape.fits_dag(&self.tasks, &self.edges)
    }
}

/// The DAG a promise over `scope`'s subtree constrains: every descendant of `scope` (found
/// through `children`), with the edges between them (`upstream` gives the nodes a node runs
/// after: data, control and runs-after edges alike), and an edge from each node's `parent`
/// when that parent is in the DAG too (a node deeper than a child was spawned while its
/// parent ran, so it runs after it). Edges from nodes outside the scope are left out.
pub fn scope_dag<'a, C, U>(
    scope: NodeId,
    children: impl Fn(NodeId) -> C,
    upstream: impl Fn(NodeId) -> U,
    parent: impl Fn(NodeId) -> Option<NodeId>,
    task: impl Fn(NodeId) -> &'a str,
) -> ScopeDag<'a>
where
    C: IntoIterator<Item = NodeId>,
    U: IntoIterator<Item = NodeId>,
{
    let mut members = Vec::new();
    let mut stack: Vec<NodeId> = children(scope).into_iter().collect();
    while let Some(n) = stack.pop() {
        members.push(n);
        stack.extend(children(n));
    }
    members.sort_unstable();
    members.dedup();
    let mut dag = ScopeDag { tasks: members.iter().map(|&n| task(n)).collect(), members, edges: Vec::new() };
    for i in 0..dag.members.len() {
        let n = dag.members[i];
        let from: Vec<usize> = upstream(n).into_iter().filter_map(|d| dag.index(d)).collect();
        dag.edges.extend(from.into_iter().map(|d| (d, i)));
        if let Some(p) = parent(n).and_then(|p| dag.index(p)) {
            dag.edges.push((p, i));
        }
    }
    dag
}
