//! Promises: constraints on how a running [salt](https://docs.rs/salt) workflow's graph may
//! still change.
//!
//! A run's graph grows while it runs: nodes spawn child nodes and edges are added between them.
//! A [`Promise`] restricts that growth, and the orchestrator checks the promises in force before
//! every mutation. Promises are written as short texts:
//!
//! - `no new nodes` and `no new edges`;
//! - `only tasks A, B, C`: new nodes may only run these tasks;
//! - `only edges between A, B`: new edges may only join nodes of these tasks;
//! - `no edges out of A` and `no edges into B`, where the target is a task name (every node of
//!   that task) or `#N` (the node with id `N`);
//! - a shape, optionally prefixed with `shape`: a regular expression over task names that
//!   constrains the DAG of the scope node's descendants (see [`Shape::fits_dag`]; read in
//!   topological order, its task names must be a prefix of a word of the expression). `A -> B` is a sequence, `A | B` a choice, `M*`, `M+`, `M?`, `M{2}`, `M{0,10}` and
//!   `M{2,}` are repetitions, and `( … )` groups (`()` alone is the empty sequence). Postfix
//!   operators bind tighter than `->`, which binds tighter than `|`.
//!
//! A promise covers a *scope*: the subtree of one node (see [`in_scope`]).
//!
//! A [`Shape`] is checked incrementally with Brzozowski derivatives: [`Shape::step`] gives what
//! may still follow after one more child, or `None` once the promise is broken. The derivatives
//! are built with simplifying constructors (neighbouring repetitions of one item merge, so do
//! nested counts that spell one range), so they stay small and readable however many steps are
//! taken.
//!
//! Promise texts come from code, from running bodies and from stored runs, so nothing about
//! one may take a process down. Parsing uses no recursion and refuses, with an error naming the
//! offset, a text longer than [`MAX_TEXT_LEN`] bytes, more than [`MAX_ITEMS`] items, a task
//! name longer than [`MAX_NAME_LEN`] bytes, nesting deeper than [`MAX_DEPTH`] levels and a count
//! above [`MAX_COUNT`]; the canonical text of whatever parses parses again. A step does at most
//! [`STEP_BUDGET`] units of work ([`Shape::try_step`] says when a shape built to defeat the
//! engine gives up), and [`Shape::guaranteed`] lists at most [`MAX_GUARANTEED`] names, without
//! expanding repetitions.
//!
//! ```
//! use salt_promise::{Promise, Shape};
//!
//! let promise: Promise = "A -> M* -> B".parse()?;
//! let Promise::Shape(shape) = promise else { unreachable!() };
//! let after_a: Shape = shape.step("A").expect("`A` may come first");
//! assert_eq!(after_a.label(), "M* -> B");
//! assert_eq!(after_a.guaranteed(), ["B"]);
//! assert!(after_a.step("A").is_none(), "a second `A` breaks the promise");
//!
//! let err = "no new thing".parse::<Promise>().unwrap_err();
//! assert!(err.to_string().starts_with("unknown promise `no new thing`"));
//! # Ok::<(), salt_promise::PromiseError>(())
//! ```
//!
//! This crate is plain `std`: the `#[task]` and `#[workflow]` macros use it to reject a promise
//! that does not parse at compile time, and the runtime uses it to check mutations. The `serde`
//! feature makes [`Promise`] (de)serialize as its text.

mod dag;
mod grammar;

pub use crate::dag::topological_order;
pub use crate::grammar::{
    MAX_COUNT, MAX_DEPTH, MAX_GUARANTEED, MAX_ITEMS, MAX_NAME_LEN, MAX_TEXT_LEN, Promise, PromiseError, STEP_BUDGET,
    Shape, Target, TooComplex,
};

impl Target {
    /// Whether the node with id `node`, which runs the task named `task`, is this target.
    ///
    /// ```
    /// use salt_promise::Target;
    ///
    /// assert!(Target::Node(3).matches(3, "load"));
    /// assert!(!Target::Node(3).matches(4, "load"));
    /// assert!(Target::Task("load".into()).matches(4, "load"));
    /// assert!(!Target::Task("load".into()).matches(3, "extract"));
    /// ```
    pub fn matches(&self, node: u64, task: &str) -> bool {
        match self {
            Target::Node(id) => *id == node,
            Target::Task(name) => name == task,
        }
    }
}

/// Whether `node` is in the scope of a promise declared over the subtree of `scope`: it is
/// `scope` itself or one of its descendants. `parent` gives a node's parent (`None` for the
/// root, or for a node it does not know).
///
/// ```
/// // 0 ─┬─ 1 ── 3
/// //    └─ 2
/// let parents = [None, Some(0), Some(0), Some(1)];
/// let parent = |n: u64| parents.get(n as usize).copied().flatten();
/// assert!(salt_promise::in_scope(3, 1, parent));
/// assert!(salt_promise::in_scope(3, 0, parent));
/// assert!(salt_promise::in_scope(1, 1, parent));
/// assert!(!salt_promise::in_scope(2, 1, parent));
/// ```
pub fn in_scope<N: Copy + PartialEq>(node: N, scope: N, mut parent: impl FnMut(N) -> Option<N>) -> bool {
    let mut n = Some(node);
    while let Some(id) = n {
        if id == scope {
            return true;
        }
        n = parent(id);
    }
    false
}

#[cfg(feature = "serde")]
impl serde::Serialize for Promise {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Promise {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_by_id_or_task() {
        let load = Target::Task("load".into());
        assert!(load.matches(0, "load") && load.matches(7, "load"));
        assert!(!load.matches(0, "Load") && !load.matches(0, ""));
        assert!(Target::Node(0).matches(0, "") && !Target::Node(0).matches(1, ""));
    }

    #[test]
    fn scope_is_the_subtree() {
        // 0 ─┬─ 1 ─┬─ 3
        //    │     └─ 4 ── 5
        //    └─ 2
        let parents = [None, Some(0), Some(0), Some(1), Some(1), Some(4)];
        let parent = |n: u64| parents.get(n as usize).copied().flatten();
        for n in 0..6 {
            assert!(in_scope(n, 0, parent), "{n} is in the whole run");
        }
        let under_1: Vec<u64> = (0..6).filter(|&n| in_scope(n, 1, parent)).collect();
        assert_eq!(under_1, [1, 3, 4, 5]);
        let under_4: Vec<u64> = (0..6).filter(|&n| in_scope(n, 4, parent)).collect();
        assert_eq!(under_4, [4, 5]);
        // A node that is not known has no parent: it is only in its own scope.
        assert!(in_scope(9, 9, parent) && !in_scope(9, 0, parent));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_the_text() {
        let p: Promise = "  A->M*  -> B ".parse().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"A -> M* -> B\"");
        assert_eq!(serde_json::from_str::<Promise>(&json).unwrap(), p);
        let list: Vec<Promise> = serde_json::from_str(r#"["no new nodes", "no edges out of #4"]"#).unwrap();
        assert_eq!(list, vec![Promise::NoNewNodes, Promise::NoEdgesOut(Target::Node(4))]);
        let err = serde_json::from_str::<Promise>("\"A -> -> B\"").unwrap_err();
        assert!(err.to_string().contains("expected a task name or `(` at offset 5"), "{err}");
    }
}
