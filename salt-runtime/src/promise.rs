//! Promises: constraints on how a running workflow's graph may still change.
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
//!   constrains the sequence of task names of the scope node's direct children, in creation
//!   order. `A -> B` is a sequence, `A | B` a choice, `M*`, `M+`, `M?`, `M{2}`, `M{0,10}` and
//!   `M{2,}` are repetitions, and `( … )` groups (`()` alone is the empty sequence). Postfix
//!   operators bind tighter than `->`, which binds tighter than `|`.
//!
//! A [`Shape`] is checked incrementally with Brzozowski derivatives: [`Shape::step`] gives what
//! may still follow after one more child, or `None` once the promise is broken. The derivatives
//! are built with simplifying constructors, so they stay small and readable however many steps
//! are taken.

mod grammar;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::grammar::{Promise, PromiseError, Shape, Target};

impl Serialize for Promise {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Promise {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
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
