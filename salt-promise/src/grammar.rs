//! The promise grammar: parsing, printing, and the shape engine (derivatives of a regular
//! expression over task names).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

/// The longest promise text that is read, in bytes; a longer one is refused without being
/// parsed.
pub const MAX_TEXT_LEN: usize = 1 << 20;

/// The most items a promise may have: task names in a shape or a list, `()`, and repetition
/// operators (`*`, `+`, `?`, `{…}`) each count one.
pub const MAX_ITEMS: usize = 4096;

/// The longest task name in a promise, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// How deeply a shape may nest: each group of `->` or `|` inside another one, each level of
/// parentheses and each repetition of a repetition (`(M{2})*`) counts one level.
pub const MAX_DEPTH: usize = 32;

/// The largest count in a repetition `{n}`, `{m,n}` or `{m,}`.
pub const MAX_COUNT: u32 = 100_000;

/// The work a single [`Shape::step`] may do, in units of expression nodes built or copied;
/// past it, the step gives up (see [`Shape::try_step`]). Every shape a promise's text can
/// spell within the limits above that is not built to defeat the engine stays far below it.
pub const STEP_BUDGET: usize = 50_000;

/// The most names [`Shape::guaranteed`] lists.
pub const MAX_GUARANTEED: usize = 100;

/// The cells of longest-common-subsequence tables [`Shape::guaranteed`] may fill in all;
/// past it, the alternatives of a choice contribute only their common prefix.
const GUARANTEED_BUDGET: usize = 1 << 20;

/// A constraint on how a run's graph may still change.
///
/// Parse one from its text with [`str::parse`]; [`Display`](fmt::Display) gives back its
/// canonical text, which parses to an equal promise. With the `serde` feature, it serializes
/// as that text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Promise {
    /// `no new nodes`: the graph gets no more nodes.
    NoNewNodes,
    /// `no new edges`: the graph gets no more edges.
    NoNewEdges,
    /// `only tasks A, B, C`: new nodes may only run these tasks.
    OnlyTasks(Vec<String>),
    /// `only edges between A, B`: new edges may only join nodes of these tasks.
    OnlyEdgesBetween(Vec<String>),
    /// `no edges out of A`: no new edge may start at the target.
    NoEdgesOut(Target),
    /// `no edges into B`: no new edge may end at the target.
    NoEdgesInto(Target),
    /// A shape: the task names of the scope node's direct children, in creation order, must
    /// spell a word of this regular language.
    Shape(Shape),
}

/// What `no edges out of …` and `no edges into …` are about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every node of the task with this name (written as the bare name).
    Task(String),
    /// The node with this id (written `#N`).
    Node(u64),
}

/// Why a promise's text does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromiseError {
    /// What is wrong, for humans; it quotes the text and names the offset.
    pub message: String,
    /// The byte offset in the text where the problem is.
    pub offset: usize,
}

impl fmt::Display for PromiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PromiseError {}

/// A step of a [`Shape`] that would cost more than [`STEP_BUDGET`]: the shape is too complex
/// to check, and the child it was checked for is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooComplex {
    /// The task name of the child the step was for.
    pub task: String,
}

impl fmt::Display for TooComplex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checking a child `{}` against this shape would take more than {STEP_BUDGET} steps: the shape is too \
             complex to check",
            self.task
        )
    }
}

impl std::error::Error for TooComplex {}

/// A regular expression over task names: the shape the sequence of a node's children must take.
///
/// It is kept simplified (no empty alternatives, no nested sequences or choices, no repeated
/// alternatives, …), so that its [`Display`](fmt::Display) text and [`label`](Shape::label)
/// stay readable after any number of [`step`](Shape::step)s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub(crate) re: Re,
}

/// The AST. Invariant, kept by the smart constructors: `Empty` and `Eps` only ever appear at the
/// top; a `Seq` or `Alt` has at least two items, none of them of its own kind; an `Alt` has no
/// duplicate alternatives; a `Repeat` has an upper bound of at least 1 and is not `{1,1}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Re {
    /// The empty language ∅: nothing matches.
    Empty,
    /// The empty sequence ε.
    Eps,
    /// One child of this task.
    Task(String),
    /// The items, one after the other.
    Seq(Vec<Re>),
    /// Any one of the alternatives.
    Alt(Vec<Re>),
    /// The item repeated from `min` to `max` times (`None`: unbounded).
    Repeat(Box<Re>, u32, Option<u32>),
}

// ---------------------------------------------------------------------------------------------
// Smart constructors
// ---------------------------------------------------------------------------------------------

/// A sequence: ∅ absorbs, ε vanishes, nested sequences flatten, and neighbouring repetitions
/// of the same item merge (`A? -> A?` is `A{0,2}`, `A* -> A*` is `A*`).
fn seq(items: Vec<Re>) -> Re {
    let mut out: Vec<Re> = Vec::with_capacity(items.len());
    let push = |out: &mut Vec<Re>, re: Re| {
        if let Some(last) = out.last_mut()
            && let Some(merged) = merge_neighbours(last, &re)
        {
            *last = merged;
            return;
        }
        out.push(re);
    };
    for item in items {
        match item {
            Re::Empty => return Re::Empty,
            Re::Eps => {}
            Re::Seq(inner) => inner.into_iter().for_each(|re| push(&mut out, re)),
            other => push(&mut out, other),
        }
    }
    match out.len() {
        0 => Re::Eps,
        1 => out.pop().unwrap_or(Re::Eps),
        _ => Re::Seq(out),
    }
}

/// An item as a repetition: `r{a,b}` as itself, anything else as `r{1,1}`.
fn as_repeat(re: &Re) -> (&Re, u32, Option<u32>) {
    match re {
        Re::Repeat(inner, min, max) => (inner, *min, *max),
        other => (other, 1, Some(1)),
    }
}

/// `r{a,b} -> r{c,d}` as the one repetition `r{a+c,b+d}` (exact: `r^i -> r^j` is `r^(i+j)`),
/// unless a count would pass [`MAX_COUNT`].
fn merge_neighbours(first: &Re, second: &Re) -> Option<Re> {
    let (x, a, b) = as_repeat(first);
    let (y, c, d) = as_repeat(second);
    if x != y {
        return None;
    }
    let min = a.checked_add(c).filter(|&n| n <= MAX_COUNT)?;
    let max = match (b, d) {
        (Some(b), Some(d)) => Some(b.checked_add(d).filter(|&n| n <= MAX_COUNT)?),
        _ => None,
    };
    Some(repeat(x.clone(), min, max))
}

/// The counts of `(r{a,b}){m,n}` as one repetition of `r`, when there is one: it spells
/// `r{j·a,j·b}` for every `j` in `m..=n`, and those ranges join into one when each meets the
/// next (`(A{1,2}){1,2}` is `A{1,4}`, `(A{3}){1,2}` is not `A{3,6}`). `None` too when a count
/// would pass [`MAX_COUNT`].
fn nested_counts(a: u32, b: Option<u32>, m: u32, n: Option<u32>) -> Option<(u32, Option<u32>)> {
    if n != Some(m) {
        // The ranges grow apart as `j` grows, so the first two must meet.
        let meets = match b {
            None => m >= 1 || a <= 1,
            Some(b) => u64::from(a) <= u64::from(m) * u64::from(b - a) + 1,
        };
        if !meets {
            return None;
        }
    }
    let fits = |c: u64| u32::try_from(c).ok().filter(|&c| c <= MAX_COUNT);
    let min = fits(u64::from(m) * u64::from(a))?;
    let max = match (b, n) {
        (Some(b), Some(n)) => Some(fits(u64::from(b) * u64::from(n))?),
        _ => None,
    };
    Some((min, max))
}

/// A choice: ∅ vanishes, nested choices flatten, duplicates go, and ε turns the rest optional.
fn alt(items: Vec<Re>) -> Re {
    let mut out: Vec<Re> = Vec::with_capacity(items.len());
    let mut eps = false;
    // Few alternatives are compared directly, many by hash: either way linear in their size.
    let mut seen: HashSet<Re> = HashSet::new();
    let mut push = |out: &mut Vec<Re>, re: Re| {
        if out.len() < 16 {
            if !out.contains(&re) {
                if out.len() == 15 {
                    seen.extend(out.iter().cloned());
                    seen.insert(re.clone());
                }
                out.push(re);
            }
        } else if seen.insert(re.clone()) {
            out.push(re);
        }
    };
    for item in items {
        match item {
            Re::Empty => {}
            Re::Eps => eps = true,
            Re::Alt(inner) => inner.into_iter().for_each(|re| push(&mut out, re)),
            other => push(&mut out, other),
        }
    }
    let body = match out.len() {
        0 => return if eps { Re::Eps } else { Re::Empty },
        1 => out.pop().unwrap_or(Re::Empty),
        _ => Re::Alt(out),
    };
    if eps && !body.nullable() { repeat(body, 0, Some(1)) } else { body }
}

/// A repetition `re{min,max}` (`max` `None`: unbounded); expects `min <= max`.
fn repeat(re: Re, min: u32, max: Option<u32>) -> Re {
    if max == Some(0) {
        return Re::Eps;
    }
    match re {
        Re::Empty => {
            return if min == 0 { Re::Eps } else { Re::Empty };
        }
        Re::Eps => return Re::Eps,
        _ => {}
    }
    if min == 1 && max == Some(1) {
        return re;
    }
    if let Re::Repeat(inner, a, b) = &re {
        let (a, b) = (*a, *b);
        // (r*){m,n} = r* ; (r{0,b}){m,} = r* ; (r{0|1,}){0,n} = r* ; (r{0|1,b})* = r*.
        if (a == 0 && (b.is_none() || max.is_none()))
            || (min == 0 && a <= 1 && b.is_none())
            || (min == 0 && max.is_none() && a <= 1)
        {
            return repeat((**inner).clone(), 0, None);
        }
        // (r+){m,n} = r{m,}.
        if a == 1 && b.is_none() {
            return repeat((**inner).clone(), min, None);
        }
        // (r?){m,n} = r{0,n}.
        if a == 0 && b == Some(1) {
            return repeat((**inner).clone(), 0, max);
        }
        // (r{a,b}){m,n} = r{m·a,n·b} when that is the same language.
        if let Some((min, max)) = nested_counts(a, b, min, max) {
            return repeat((**inner).clone(), min, max);
        }
    }
    Re::Repeat(Box::new(re), min, max)
}

// ---------------------------------------------------------------------------------------------
// Language properties and derivatives
// ---------------------------------------------------------------------------------------------

impl Re {
    /// Whether ε is in the language.
    fn nullable(&self) -> bool {
        match self {
            Re::Empty | Re::Task(_) => false,
            Re::Eps => true,
            Re::Seq(items) => items.iter().all(Re::nullable),
            Re::Alt(items) => items.iter().any(Re::nullable),
            Re::Repeat(re, min, _) => *min == 0 || re.nullable(),
        }
    }

    /// Whether the language is ∅.
    fn is_empty(&self) -> bool {
        match self {
            Re::Empty => true,
            Re::Eps | Re::Task(_) => false,
            Re::Seq(items) => items.iter().any(Re::is_empty),
            Re::Alt(items) => items.iter().all(Re::is_empty),
            Re::Repeat(re, min, _) => *min > 0 && re.is_empty(),
        }
    }

    /// Whether the language holds a non-empty word.
    fn can_grow(&self) -> bool {
        match self {
            Re::Empty | Re::Eps => false,
            Re::Task(_) => true,
            Re::Seq(items) => !self.is_empty() && items.iter().any(Re::can_grow),
            Re::Alt(items) => items.iter().any(|re| !re.is_empty() && re.can_grow()),
            Re::Repeat(re, _, max) => *max != Some(0) && !re.is_empty() && re.can_grow(),
        }
    }

    /// The Brzozowski derivative by one task name, or `None` once it has cost more than
    /// `budget` (in nodes visited or copied; what it cost is taken off `budget`).
    fn derive_within(&self, task: &str, budget: &mut usize) -> Option<Re> {
        *budget = budget.checked_sub(1)?;
        Some(match self {
            Re::Empty | Re::Eps => Re::Empty,
            Re::Task(name) => {
                if name == task {
                    Re::Eps
                } else {
                    Re::Empty
                }
            }
            Re::Seq(items) => {
                let mut alts = Vec::new();
                // Whether an alternative so far is `h -> items[i + 1..]` with `h` nullable: it
                // then holds every later `h' -> items[j + 1..]` where `h'` spells no more than
                // `items[j]` (as the derivatives of `A?` and `A*` by `A` do), which are left out.
                // That keeps `A* -> B* -> A* -> …` and `A? -> B? -> A? -> …` linear.
                let mut covered = false;
                for (i, item) in items.iter().enumerate() {
                    let head = item.derive_within(task, budget)?;
                    let redundant = covered && (head == *item || (head == Re::Eps && item.nullable()));
                    // `∅ -> rest` is ∅: the rest is only copied where the head can go on.
                    if head != Re::Empty && !redundant {
                        covered = covered || head.nullable();
                        let tail = &items[i + 1..];
                        tail.iter().try_for_each(|re| re.charge(budget))?;
                        let mut rest = Vec::with_capacity(tail.len() + 1);
                        rest.push(head);
                        rest.extend(tail.iter().cloned());
                        alts.push(seq(rest));
                    }
                    if !item.nullable() {
                        break;
                    }
                }
                alt(alts)
            }
            Re::Alt(items) => {
                let mut alts = Vec::with_capacity(items.len());
                for re in items {
                    alts.push(re.derive_within(task, budget)?);
                }
                alt(alts)
            }
            Re::Repeat(re, min, max) => match max {
                Some(0) => Re::Empty,
                _ => {
                    let head = re.derive_within(task, budget)?;
                    if head == Re::Empty {
                        Re::Empty
                    } else {
                        re.charge(budget)?;
                        seq(vec![head, repeat((**re).clone(), min.saturating_sub(1), max.map(|n| n - 1))])
                    }
                }
            },
        })
    }

    /// Takes this expression's size off `budget`; `None` if it is larger.
    fn charge(&self, budget: &mut usize) -> Option<()> {
        *budget = budget.checked_sub(1)?;
        match self {
            Re::Empty | Re::Eps | Re::Task(_) => Some(()),
            Re::Seq(items) | Re::Alt(items) => items.iter().try_for_each(|re| re.charge(budget)),
            Re::Repeat(re, _, _) => re.charge(budget),
        }
    }

    /// The task names every word must hold, in order (a common subsequence of all words), up to
    /// [`MAX_GUARANTEED`] in `out`; `budget` is what longest-common-subsequence tables may
    /// still cost.
    fn guaranteed(&self, out: &mut Vec<String>, budget: &mut usize) {
        if out.len() >= MAX_GUARANTEED {
            return;
        }
        match self {
            Re::Empty | Re::Eps => {}
            Re::Task(name) => out.push(name.clone()),
            Re::Seq(items) => {
                for re in items {
                    re.guaranteed(out, budget);
                    if out.len() >= MAX_GUARANTEED {
                        break;
                    }
                }
            }
            Re::Alt(items) => {
                let mut common: Option<Vec<String>> = None;
                for re in items {
                    let mut mine = Vec::new();
                    re.guaranteed(&mut mine, budget);
                    let next = match common {
                        None => mine,
                        Some(common) => lcs(&common, &mine, budget),
                    };
                    let none_left = next.is_empty();
                    common = Some(next);
                    if none_left {
                        break;
                    }
                }
                let room = MAX_GUARANTEED - out.len();
                out.extend(common.unwrap_or_default().into_iter().take(room));
            }
            Re::Repeat(re, min, _) => {
                let mut once = Vec::new();
                re.guaranteed(&mut once, budget);
                if !once.is_empty() {
                    for _ in 0..*min {
                        let room = MAX_GUARANTEED - out.len();
                        if room == 0 {
                            break;
                        }
                        out.extend(once.iter().take(room).cloned());
                    }
                }
            }
        }
    }

    fn tasks(&self, out: &mut BTreeSet<String>) {
        match self {
            Re::Empty | Re::Eps => {}
            Re::Task(name) => {
                out.insert(name.clone());
            }
            Re::Seq(items) | Re::Alt(items) => items.iter().for_each(|re| re.tasks(out)),
            Re::Repeat(re, _, _) => re.tasks(out),
        }
    }

    /// The number of nodes.
    #[cfg(test)]
    fn size(&self) -> usize {
        match self {
            Re::Empty | Re::Eps | Re::Task(_) => 1,
            Re::Seq(items) | Re::Alt(items) => 1 + items.iter().map(Re::size).sum::<usize>(),
            Re::Repeat(re, _, _) => 1 + re.size(),
        }
    }
}

/// A longest common subsequence of two name lists, if its table fits in `budget` cells (which
/// it takes off); else only their common prefix, a common subsequence too.
fn lcs(a: &[String], b: &[String], budget: &mut usize) -> Vec<String> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    if a == b {
        return a.to_vec();
    }
    let (n, m) = (a.len(), b.len());
    match budget.checked_sub((n + 1) * (m + 1)) {
        Some(left) => *budget = left,
        None => return a.iter().zip(b).take_while(|(x, y)| x == y).map(|(x, _)| x.clone()).collect(),
    }
    // table[i][j]: length of an LCS of a[i..] and b[j..].
    let mut table = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i][j] = if a[i] == b[j] { table[i + 1][j + 1] + 1 } else { table[i + 1][j].max(table[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(table[0][0]));
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(a[i].clone());
            i += 1;
            j += 1;
        } else if table[i + 1][j] >= table[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The shape's public API
// ---------------------------------------------------------------------------------------------

impl Shape {
    /// What may still follow after these children (the Brzozowski derivative by each name, in
    /// order); `None` if `seq` is not a prefix of any word of the language, that is, if the
    /// promise is already broken, and also when a step is [too complex](TooComplex) to take
    /// ([`try_after`](Shape::try_after) tells the two apart).
    pub fn after<'a>(&self, seq: impl IntoIterator<Item = &'a str>) -> Option<Shape> {
        self.try_after(seq).ok().flatten()
    }

    /// [`after`](Shape::after), with an error when one of the steps would cost more than
    /// [`STEP_BUDGET`].
    pub fn try_after<'a>(&self, seq: impl IntoIterator<Item = &'a str>) -> Result<Option<Shape>, TooComplex> {
        let mut shape = self.clone();
        for task in seq {
            match shape.try_step(task)? {
                Some(next) => shape = next,
                None => return Ok(None),
            }
        }
        Ok(Some(shape))
    }

    /// What may still follow after one more child of task `task` (the derivative by that name);
    /// `None` if that child breaks the promise, and also when the step is
    /// [too complex](TooComplex) to take ([`try_step`](Shape::try_step) tells the two apart).
    pub fn step(&self, task: &str) -> Option<Shape> {
        self.try_step(task).ok().flatten()
    }

    /// [`step`](Shape::step), with an error when the step would cost more than [`STEP_BUDGET`]
    /// (nodes of the expression visited or copied). The engine keeps derivatives simplified,
    /// so this only happens to shapes built to defeat it, such as a long sequence of different
    /// optional items; the step then gives up after a bounded amount of work.
    pub fn try_step(&self, task: &str) -> Result<Option<Shape>, TooComplex> {
        let mut budget = STEP_BUDGET;
        let re = self.re.derive_within(task, &mut budget).ok_or_else(|| TooComplex { task: task.to_owned() })?;
        Ok(if re.is_empty() { None } else { Some(Shape { re }) })
    }

    /// Whether the empty sequence matches: the children so far may be all there will be.
    pub fn is_complete(&self) -> bool {
        self.re.nullable()
    }

    /// Whether nothing more may be added: the language is exactly the empty sequence.
    pub fn is_done(&self) -> bool {
        self.re.nullable() && !self.re.can_grow()
    }

    /// The task names that every completion must still add, in order: after `A` in
    /// `A -> M* -> B` that is `["B"]`; for `B | C` it is `[]`; for `M{2,} -> B` it is
    /// `["M", "M", "B"]`.
    ///
    /// The list is sound but bounded: it holds at most [`MAX_GUARANTEED`] names (the first
    /// ones), and a choice between alternatives whose lists are long may contribute only what
    /// they have in common at their start, so that this never costs more than a few
    /// milliseconds, whatever the counts (`A{100000}` lists 100 `A`s).
    pub fn guaranteed(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut budget = GUARANTEED_BUDGET;
        self.re.guaranteed(&mut out, &mut budget);
        out
    }

    /// A label for what may still come: `"nothing"` when [`is_done`](Shape::is_done), else the
    /// simplified regular expression, such as `M* -> B`.
    pub fn label(&self) -> String {
        if self.is_done() { "nothing".to_owned() } else { self.to_string() }
    }

    /// Every task name the shape mentions.
    pub fn tasks(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.re.tasks(&mut out);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

/// Binding strength of an AST node's text, for minimal parentheses.
fn precedence(re: &Re) -> u8 {
    match re {
        Re::Alt(_) => 0,
        Re::Seq(_) => 1,
        Re::Repeat(..) => 2,
        Re::Empty | Re::Eps | Re::Task(_) => 3,
    }
}

fn write_re(f: &mut fmt::Formatter<'_>, re: &Re, min_precedence: u8) -> fmt::Result {
    if precedence(re) < min_precedence {
        f.write_str("(")?;
        write_re(f, re, 0)?;
        return f.write_str(")");
    }
    match re {
        Re::Empty => f.write_str("∅"),
        Re::Eps => f.write_str("()"),
        Re::Task(name) => f.write_str(name),
        Re::Seq(items) | Re::Alt(items) => {
            let (sep, inner) = if matches!(re, Re::Seq(_)) { (" -> ", 2) } else { (" | ", 1) };
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write_re(f, item, inner)?;
            }
            Ok(())
        }
        Re::Repeat(item, min, max) => {
            // A repetition of a repetition gets parentheses too: `(M{2})*`.
            write_re(f, item, 3)?;
            match (min, max) {
                (0, None) => f.write_str("*"),
                (1, None) => f.write_str("+"),
                (0, Some(1)) => f.write_str("?"),
                (m, None) => write!(f, "{{{m},}}"),
                (m, Some(n)) if m == n => write!(f, "{{{m}}}"),
                (m, Some(n)) => write!(f, "{{{m},{n}}}"),
            }
        }
    }
}

impl fmt::Display for Shape {
    /// The regular expression's text, with minimal parentheses; it parses back to an equal shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_re(f, &self.re, 0)
    }
}

impl fmt::Display for Target {
    /// The task's name, or `#N` for a node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Task(name) => f.write_str(name),
            Target::Node(id) => write!(f, "#{id}"),
        }
    }
}

impl fmt::Display for Promise {
    /// The canonical text, which parses back to an equal promise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, head: &str, names: &[String]) -> fmt::Result {
            f.write_str(head)?;
            if !names.is_empty() {
                write!(f, " {}", names.join(", "))?;
            }
            Ok(())
        }
        match self {
            Promise::NoNewNodes => f.write_str("no new nodes"),
            Promise::NoNewEdges => f.write_str("no new edges"),
            Promise::OnlyTasks(names) => list(f, "only tasks", names),
            Promise::OnlyEdgesBetween(names) => list(f, "only edges between", names),
            Promise::NoEdgesOut(target) => write!(f, "no edges out of {target}"),
            Promise::NoEdgesInto(target) => write!(f, "no edges into {target}"),
            Promise::Shape(shape) => write!(f, "{shape}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

const EXPECTED_KINDS: &str = "expected one of: `no new nodes`, `no new edges`, `only tasks …`, \
     `only edges between …`, `no edges out of …`, `no edges into …`, or a shape like \
     `A -> M* -> B`";

/// `text`, or its start and `…` if it is long: how error messages quote a promise.
fn quote(text: &str) -> String {
    const QUOTED: usize = 60;
    if text.len() <= QUOTED + 20 {
        return text.to_owned();
    }
    let mut end = QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A parser without recursion: it keeps open groups on a stack of its own, refuses parentheses
/// nested more than [`MAX_DEPTH`] deep, and checks the other limits as it reads, so that any
/// text is refused or parsed in time and space linear in its length, on any stack.
struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The items read so far (see [`MAX_ITEMS`]).
    items: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, bytes: src.as_bytes(), pos: 0, items: 0 }
    }

    fn err(&self, offset: usize, detail: impl fmt::Display) -> PromiseError {
        PromiseError { message: format!("promise `{}`: {detail} at offset {offset}", quote(self.src)), offset }
    }

    fn unknown(&self, offset: usize) -> PromiseError {
        PromiseError { message: format!("unknown promise `{}`; {EXPECTED_KINDS}", quote(self.src.trim())), offset }
    }

    /// Counts one more item at `offset`, refusing one too many.
    fn item(&mut self, offset: usize) -> Result<(), PromiseError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(self.err(offset, format!("more than {MAX_ITEMS} items (task names and repetitions)")));
        }
        Ok(())
    }

    /// A task name in a shape or a list: an item, of bounded length.
    fn name(&mut self) -> Result<Option<&'a str>, PromiseError> {
        let start = self.pos;
        let Some(name) = self.ident() else { return Ok(None) };
        if name.len() > MAX_NAME_LEN {
            return Err(self.err(start, format!("a task name longer than {MAX_NAME_LEN} bytes")));
        }
        self.item(start)?;
        Ok(Some(name))
    }

    /// Refuses an expression nested deeper than [`MAX_DEPTH`].
    fn check_depth(&self, depth: usize, offset: usize) -> Result<(), PromiseError> {
        if depth > MAX_DEPTH {
            return Err(self.err(offset, format!("the shape nests more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn at_ident_start(&self) -> bool {
        self.peek().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
    }

    /// A task name (`[A-Za-z_][A-Za-z0-9_]*`) at the cursor, if there is one.
    fn ident(&mut self) -> Option<&'a str> {
        if !self.at_ident_start() {
            return None;
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
        Some(&self.src[start..self.pos])
    }

    /// The next word, after whitespace, if it is `keyword` (in any case).
    fn keyword(&mut self, keyword: &str) -> bool {
        self.skip_ws();
        let save = self.pos;
        match self.ident() {
            Some(word) if word.eq_ignore_ascii_case(keyword) => true,
            _ => {
                self.pos = save;
                false
            }
        }
    }

    fn promise(&mut self) -> Result<Promise, PromiseError> {
        if self.src.len() > MAX_TEXT_LEN {
            let message = format!(
                "promise `{}`: the text is {} bytes long; a promise has at most {MAX_TEXT_LEN}",
                quote(self.src),
                self.src.len()
            );
            return Err(PromiseError { message, offset: MAX_TEXT_LEN });
        }
        self.skip_ws();
        if self.peek().is_none() {
            return Err(PromiseError { message: format!("empty promise; {EXPECTED_KINDS}"), offset: self.pos });
        }
        let start = self.pos;
        if let Some(word) = self.ident() {
            let lower = word.to_ascii_lowercase();
            self.skip_ws();
            match lower.as_str() {
                // `no X` and `only X` are never shapes: two names in a row are not a shape.
                "no" | "only" if self.at_ident_start() => return self.keyword_form(&lower),
                "shape" if self.at_ident_start() || self.peek() == Some(b'(') => {
                    return Ok(Promise::Shape(self.shape()?));
                }
                _ => {}
            }
        }
        self.pos = start;
        Ok(Promise::Shape(self.shape()?))
    }

    /// The rest of a `no …` or `only …` promise, the first word being read.
    fn keyword_form(&mut self, first: &str) -> Result<Promise, PromiseError> {
        let at = self.pos;
        let promise = if first == "no" {
            if self.keyword("new") {
                if self.keyword("nodes") {
                    Promise::NoNewNodes
                } else if self.keyword("edges") {
                    Promise::NoNewEdges
                } else {
                    return Err(self.unknown_here());
                }
            } else if self.keyword("edges") {
                if self.keyword("out") {
                    if !self.keyword("of") {
                        return Err(self.unknown_here());
                    }
                    Promise::NoEdgesOut(self.target()?)
                } else if self.keyword("into") {
                    Promise::NoEdgesInto(self.target()?)
                } else {
                    return Err(self.unknown_here());
                }
            } else {
                return Err(self.unknown(at));
            }
        } else if self.keyword("tasks") {
            Promise::OnlyTasks(self.names()?)
        } else if self.keyword("edges") {
            if !self.keyword("between") {
                return Err(self.unknown_here());
            }
            Promise::OnlyEdgesBetween(self.names()?)
        } else {
            return Err(self.unknown(at));
        };
        self.skip_ws();
        if self.peek().is_some() {
            let head = self.src[..self.pos].trim();
            return Err(self.err(self.pos, format!("unexpected text after `{head}`")));
        }
        Ok(promise)
    }

    /// [`unknown`](Self::unknown), pointing at the next word.
    fn unknown_here(&mut self) -> PromiseError {
        self.skip_ws();
        self.unknown(self.pos)
    }

    /// A comma-separated list of task names, possibly empty, up to the end of the text.
    fn names(&mut self) -> Result<Vec<String>, PromiseError> {
        let mut names = Vec::new();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(names);
        }
        loop {
            self.skip_ws();
            match self.name()? {
                Some(name) => names.push(name.to_owned()),
                None => return Err(self.err(self.pos, "expected a task name")),
            }
            self.skip_ws();
            match self.peek() {
                None => return Ok(names),
                Some(b',') => self.pos += 1,
                Some(_) => return Err(self.err(self.pos, "expected `,` between task names")),
            }
        }
    }

    /// A task name or `#N`.
    fn target(&mut self) -> Result<Target, PromiseError> {
        self.skip_ws();
        if self.peek() == Some(b'#') {
            let hash = self.pos;
            self.pos += 1;
            let start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if start == self.pos {
                return Err(self.err(self.pos, "expected a node id after `#`"));
            }
            let digits = &self.src[start..self.pos];
            return digits
                .parse()
                .map(Target::Node)
                .map_err(|_| self.err(hash, format!("the node id `#{digits}` is too large")));
        }
        match self.name()? {
            Some(name) => Ok(Target::Task(name.to_owned())),
            None => Err(self.err(self.pos, "expected a task name or `#N` (a node id)")),
        }
    }

    /// A whole shape, up to the end of the text.
    fn shape(&mut self) -> Result<Shape, PromiseError> {
        let (re, _) = self.alt()?;
        self.skip_ws();
        match self.peek() {
            None => Ok(Shape { re }),
            Some(b')') => Err(self.err(self.pos, "unmatched `)`")),
            Some(_) => Err(self.err(self.pos, "expected `->`, `|` or the end")),
        }
    }

    /// A choice of sequences, up to what cannot continue it (the end, or what does not fit),
    /// with its depth (at least that of the expression built). Groups are parsed with a stack of
    /// their own, not by recursion, so that no text can exhaust the thread's stack.
    fn alt(&mut self) -> Result<(Re, usize), PromiseError> {
        let mut groups = vec![Group::new(self.pos, None)];
        loop {
            // An atom, after the groups that open before it.
            let (mut re, mut depth) = loop {
                self.skip_ws();
                let at = self.pos;
                if self.peek() == Some(b'(') {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b')') {
                        self.item(at)?;
                        self.pos += 1;
                        break (Re::Eps, 0);
                    }
                    self.check_depth(groups.len(), at)?;
                    groups.push(Group::new(self.pos, Some(at)));
                    continue;
                }
                match self.name()? {
                    Some(name) => break (Re::Task(name.to_owned()), 0),
                    None => return Err(self.err(self.pos, "expected a task name or `(`")),
                }
            };
            // Its repetitions, then what follows: `->` or `|` and the next atom, or the end of
            // groups.
            loop {
                (re, depth) = self.postfix(re, depth)?;
                let group = groups.last_mut().expect("the outermost group stays");
                group.seq.push(re);
                group.seq_depth = group.seq_depth.max(depth);
                self.skip_ws();
                if self.bytes[self.pos..].starts_with(b"->") {
                    self.pos += 2;
                    break;
                }
                let (seq_re, seq_depth) = self.finish(&mut group.seq, group.seq_depth, group.seq_start, seq)?;
                group.alt.push(seq_re);
                group.alt_depth = group.alt_depth.max(seq_depth);
                if self.peek() == Some(b'|') {
                    self.pos += 1;
                    self.skip_ws();
                    group.seq_start = self.pos;
                    group.seq_depth = 0;
                    break;
                }
                let (alt_re, alt_depth) = self.finish(&mut group.alt, group.alt_depth, group.start, alt)?;
                let Some(open) = group.open else { return Ok((alt_re, alt_depth)) };
                match self.peek() {
                    Some(b')') => {
                        self.pos += 1;
                        groups.pop();
                        (re, depth) = (alt_re, alt_depth);
                    }
                    None => return Err(self.err(open, "unclosed `(`")),
                    Some(_) => return Err(self.err(self.pos, "expected `->`, `|` or `)`")),
                }
            }
        }
    }

    /// A sequence or choice of the items read (`build` is [`seq`] or [`alt`]), one level
    /// deeper than the deepest of them when there are several.
    fn finish(
        &self,
        items: &mut Vec<Re>,
        depth: usize,
        start: usize,
        build: fn(Vec<Re>) -> Re,
    ) -> Result<(Re, usize), PromiseError> {
        let depth = if items.len() > 1 { depth + 1 } else { depth };
        self.check_depth(depth, start)?;
        Ok((build(std::mem::take(items)), depth))
    }

    /// The repetition operators after an item.
    fn postfix(&mut self, mut re: Re, mut depth: usize) -> Result<(Re, usize), PromiseError> {
        loop {
            self.skip_ws();
            let at = self.pos;
            let (min, max) = match self.peek() {
                Some(b'*') => (0, None),
                Some(b'+') => (1, None),
                Some(b'?') => (0, Some(1)),
                Some(b'{') => {
                    self.item(at)?;
                    re = self.count(re)?;
                    depth += 1;
                    self.check_depth(depth, at)?;
                    continue;
                }
                _ => return Ok((re, depth)),
            };
            self.item(at)?;
            self.pos += 1;
            re = repeat(re, min, max);
            depth += 1;
            self.check_depth(depth, at)?;
        }
    }

    /// `{n}`, `{m,n}` or `{m,}` applied to `re`; the cursor is on the `{`.
    fn count(&mut self, re: Re) -> Result<Re, PromiseError> {
        let open = self.pos;
        self.pos += 1;
        self.skip_ws();
        let min = self.number()?.ok_or_else(|| self.err(self.pos, "expected a number in `{…}`"))?;
        self.skip_ws();
        let max = match self.peek() {
            Some(b'}') => Some(min),
            Some(b',') => {
                self.pos += 1;
                self.skip_ws();
                let max = self.number()?;
                self.skip_ws();
                if self.peek() != Some(b'}') {
                    let expected = if max.is_some() { "`}`" } else { "a number or `}`" };
                    return Err(self.err(self.pos, format!("expected {expected}")));
                }
                max
            }
            _ => return Err(self.err(self.pos, "expected `,` or `}`")),
        };
        self.pos += 1;
        if max.is_some_and(|max| max < min) {
            let text = &self.src[open..self.pos];
            return Err(self.err(open, format!("`{text}`: the lower bound is above the upper one")));
        }
        Ok(repeat(re, min, max))
    }

    /// A decimal count, if there are digits at the cursor.
    fn number(&mut self) -> Result<Option<u32>, PromiseError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Ok(None);
        }
        let digits = &self.src[start..self.pos];
        digits
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= MAX_COUNT)
            .map(Some)
            .ok_or_else(|| self.err(start, format!("the count `{digits}` is too large (at most {MAX_COUNT})")))
    }
}

/// A group being parsed: `( … )`, or the whole shape.
struct Group {
    /// Where its `(` is (`None` for the whole shape).
    open: Option<usize>,
    /// Where its content starts.
    start: usize,
    /// Its alternatives so far, and their depth.
    alt: Vec<Re>,
    alt_depth: usize,
    /// The items of its current sequence so far, their depth and where it starts.
    seq: Vec<Re>,
    seq_depth: usize,
    seq_start: usize,
}

impl Group {
    fn new(start: usize, open: Option<usize>) -> Self {
        Group { open, start, alt: Vec::new(), alt_depth: 0, seq: Vec::new(), seq_depth: 0, seq_start: start }
    }
}

impl FromStr for Promise {
    type Err = PromiseError;

    /// Parses a promise's text; the module documentation lists the forms.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Parser::new(s).promise()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promise(text: &str) -> Promise {
        text.parse().unwrap_or_else(|e| panic!("`{text}` should parse: {e}"))
    }

    fn shape(text: &str) -> Shape {
        match promise(text) {
            Promise::Shape(shape) => shape,
            other => panic!("`{text}` should be a shape, got {other:?}"),
        }
    }

    fn error(text: &str) -> PromiseError {
        match text.parse::<Promise>() {
            Ok(p) => panic!("`{text}` should not parse, got {p:?}"),
            Err(e) => e,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn after(shape: &Shape, seq: &[&str]) -> Option<Shape> {
        shape.after(seq.iter().copied())
    }

    #[test]
    fn parses_fixed_kinds_with_any_whitespace() {
        for text in ["no new nodes", "  no   new\tnodes ", "\nno new nodes\n", "No New Nodes"] {
            assert_eq!(promise(text), Promise::NoNewNodes, "{text:?}");
        }
        for text in ["no new edges", " no\nnew  edges\t"] {
            assert_eq!(promise(text), Promise::NoNewEdges, "{text:?}");
        }
    }

    #[test]
    fn parses_lists() {
        let abc = Promise::OnlyTasks(names(&["A", "B", "C"]));
        for text in ["only tasks A, B, C", "only tasks A,B,C", "  only  tasks  A ,B , C  "] {
            assert_eq!(promise(text), abc, "{text:?}");
        }
        assert_eq!(promise("only tasks load_2"), Promise::OnlyTasks(names(&["load_2"])));
        assert_eq!(promise("only tasks"), Promise::OnlyTasks(vec![]));
        let ab = Promise::OnlyEdgesBetween(names(&["A", "B"]));
        for text in ["only edges between A, B", "only edges between A,B", " only edges  between\tA ,  B "] {
            assert_eq!(promise(text), ab, "{text:?}");
        }
    }

    #[test]
    fn parses_targets() {
        assert_eq!(promise("no edges out of A"), Promise::NoEdgesOut(Target::Task("A".into())));
        assert_eq!(promise(" no  edges out   of  #12 "), Promise::NoEdgesOut(Target::Node(12)));
        assert_eq!(promise("no edges into B"), Promise::NoEdgesInto(Target::Task("B".into())));
        assert_eq!(promise("no edges into #0"), Promise::NoEdgesInto(Target::Node(0)));
        assert_eq!(promise("no edges into\t_b9"), Promise::NoEdgesInto(Target::Task("_b9".into())));
    }

    #[test]
    fn parses_shapes() {
        assert_eq!(shape("A -> M* -> B"), shape("A->M*->B"));
        assert_eq!(shape("A -> M* -> B"), shape("  shape   A ->  M *  -> B "));
        assert_eq!(shape("shape(B | C)"), shape("B|C"));
        assert_eq!(shape("A -> (N -> M | J -> K) -> B").to_string(), "A -> (N -> M | J -> K) -> B");
        assert_eq!(shape("(B | C)").to_string(), "B | C");
        assert_eq!(shape("load{1,3}").to_string(), "load{1,3}");
        assert_eq!(shape("M{2}").to_string(), "M{2}");
        assert_eq!(shape("M{ 0 , 10 }").to_string(), "M{0,10}");
        assert_eq!(shape("M{2,}").to_string(), "M{2,}");
        assert_eq!(shape("M{0,}").to_string(), "M*");
        assert_eq!(shape("M{1,}").to_string(), "M+");
        assert_eq!(shape("M{0,1}").to_string(), "M?");
        assert_eq!(shape("M{1}").to_string(), "M");
        assert_eq!(shape("A -> M{0} -> B").to_string(), "A -> B");
        assert_eq!(shape("(M*)*").to_string(), "M*");
        assert_eq!(shape("(M+)?").to_string(), "M*");
        assert_eq!(shape("A | A | B").to_string(), "A | B");
        assert_eq!(shape("A -> (B -> C)").to_string(), "A -> B -> C");
        assert_eq!(shape("(A | (B | C))").to_string(), "A | B | C");
        assert_eq!(shape("(A -> B)+ | C?").to_string(), "(A -> B)+ | C?");
        // Precedence: postfix > `->` > `|`.
        assert_eq!(shape("A -> B | C -> D*"), shape("(A -> B) | (C -> (D*))"));
        // Keywords are task names where a shape is the only reading.
        assert_eq!(shape("no").tasks(), BTreeSet::from(["no".to_string()]));
        assert_eq!(shape("no -> only | shape").to_string(), "no -> only | shape");
        assert_eq!(shape("shape").to_string(), "shape");
        assert_eq!(shape("nothing -> B").to_string(), "nothing -> B");
        assert_eq!(
            shape("A -> (N -> M | J -> K) -> B").tasks(),
            ["A", "B", "J", "K", "M", "N"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
        );
    }

    #[test]
    fn errors_carry_messages_and_offsets() {
        let e = error("A -> -> B");
        assert_eq!(e.message, "promise `A -> -> B`: expected a task name or `(` at offset 5");
        assert_eq!(e.offset, 5);
        assert_eq!(e.to_string(), e.message);

        let e = error("A -> (B | C");
        assert_eq!((e.message.as_str(), e.offset), ("promise `A -> (B | C`: unclosed `(` at offset 5", 5));
        let e = error("A -> B) -> C");
        assert_eq!((e.message.as_str(), e.offset), ("promise `A -> B) -> C`: unmatched `)` at offset 6", 6));
        let e = error("(A B)");
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("expected `->`, `|` or `)`"), "{}", e.message);
        let e = error("A B");
        assert_eq!((e.offset, e.message.contains("expected `->`, `|` or the end")), (2, true));
        let e = error("A ->");
        assert_eq!(e.offset, 4);
        let e = error("A | | B");
        assert_eq!(e.offset, 4);

        let e = error("M{3,1}");
        assert_eq!(e.message, "promise `M{3,1}`: `{3,1}`: the lower bound is above the upper one at offset 1");
        assert_eq!(e.offset, 1);
        let e = error("M{}");
        assert_eq!((e.offset, e.message.contains("expected a number")), (2, true));
        let e = error("M{x}");
        assert_eq!(e.offset, 2);
        let e = error("M{2");
        assert_eq!((e.offset, e.message.contains("expected `,` or `}`")), (3, true));
        let e = error("M{2,3");
        assert_eq!((e.offset, e.message.contains("expected `}`")), (5, true));
        let e = error("M{99999999999}");
        assert_eq!((e.offset, e.message.contains("too large")), (2, true));

        for text in ["", "   ", "\n"] {
            let e = error(text);
            assert!(e.message.starts_with("empty promise; expected one of: `no new nodes`"), "{}", e.message);
        }

        let e = error("no new thing");
        assert_eq!(
            e.message,
            "unknown promise `no new thing`; expected one of: `no new nodes`, `no new edges`, \
             `only tasks …`, `only edges between …`, `no edges out of …`, `no edges into …`, \
             or a shape like `A -> M* -> B`"
        );
        assert_eq!(e.offset, 7);
        assert_eq!(error("no way").offset, 3);
        assert_eq!(error("only edges to A").offset, 11);
        assert!(error("no edges out A").message.starts_with("unknown promise"));
        assert!(error("no edges").message.starts_with("unknown promise"));

        let e = error("no new nodes please");
        assert_eq!(e.message, "promise `no new nodes please`: unexpected text after `no new nodes` at offset 13");
        let e = error("no edges out of #x");
        assert_eq!((e.offset, e.message.contains("expected a node id after `#`")), (17, true));
        let e = error("no edges into");
        assert!(e.message.contains("expected a task name or `#N`"), "{}", e.message);
        let e = error("no edges into #99999999999999999999999");
        assert_eq!((e.offset, e.message.contains("too large")), (14, true));
        let e = error("only tasks A B");
        assert_eq!((e.offset, e.message.contains("expected `,`")), (13, true));
        let e = error("only tasks A,");
        assert_eq!((e.offset, e.message.contains("expected a task name")), (13, true));
        let e = error("only tasks A, 3");
        assert_eq!(e.offset, 14);
        let e = error("A -> é");
        assert_eq!(e.offset, 5);
    }

    #[test]
    fn display_round_trips() {
        let texts = [
            "no new nodes",
            "no new edges",
            "only tasks A, B, C",
            "only tasks",
            "only edges between A, B",
            "no edges out of A",
            "no edges out of #3",
            "no edges into B",
            "no edges into #18446744073709551615",
            "A -> M* -> B",
            "A -> (N -> M | J -> K) -> B",
            "B | C",
            "load{1,3}",
            "M{2,} -> B",
            "(A -> B)* -> (C | D)+ -> E?",
            "(M{2})* -> (M{3}){1,2}",
            "((A | B)? -> C){0,4}",
            "()",
            "no",
            "shape",
            "only",
            "x | () -> y",
        ];
        for text in texts {
            let parsed = promise(text);
            let canonical = parsed.to_string();
            assert_eq!(promise(&canonical), parsed, "{text:?} -> {canonical:?}");
            assert_eq!(promise(&canonical).to_string(), canonical);
        }
        // Texts that are already canonical print as they are.
        for text in &texts[..17] {
            assert_eq!(promise(text).to_string(), *text);
        }
        // Programmatic values round-trip too.
        for p in [
            Promise::OnlyTasks(vec![]),
            Promise::OnlyEdgesBetween(names(&["x"])),
            Promise::NoEdgesInto(Target::Node(0)),
        ] {
            assert_eq!(promise(&p.to_string()), p);
        }
        // So do derivatives.
        let s = shape("A -> (N -> M | J -> K)* -> (B | C -> A?)");
        for seq in [&["A"][..], &["A", "N"], &["A", "J", "K", "C"], &["A", "N", "M", "C", "A"]] {
            let d = after(&s, seq).unwrap();
            assert_eq!(shape(&d.to_string()), d, "after {seq:?}: {d}");
        }
    }

    #[test]
    fn sequence_with_star() {
        let s = shape("A -> M* -> B");
        assert!(!s.is_complete() && !s.is_done());
        assert_eq!(s.guaranteed(), names(&["A", "B"]));
        for m in 0..=5 {
            let mut seq = vec!["A"];
            seq.extend(std::iter::repeat_n("M", m));
            seq.push("B");
            let d = after(&s, &seq).unwrap_or_else(|| panic!("{seq:?} should fit"));
            assert!(d.is_complete() && d.is_done(), "{seq:?}");
        }
        assert!(s.step("B").is_none());
        assert!(after(&s, &["B", "A"]).is_none());
        assert!(s.step("M").is_none());

        let a = s.step("A").unwrap();
        assert_eq!(a.label(), "M* -> B");
        assert_eq!(a.guaranteed(), names(&["B"]));
        assert!(!a.is_complete() && !a.is_done());
        assert_eq!(a.step("M").unwrap(), a);

        let ab = after(&s, &["A", "B"]).unwrap();
        assert!(ab.is_done() && ab.is_complete());
        assert_eq!(ab.label(), "nothing");
        assert!(ab.guaranteed().is_empty());
        assert!(ab.step("M").is_none() && ab.step("B").is_none());
        assert_eq!(s.after([]), Some(s.clone()));
    }

    #[test]
    fn choice_inside_a_sequence() {
        let s = shape("A -> (N -> M | J -> K) -> B");
        let a = s.step("A").unwrap();
        assert_eq!(a.label(), "(N -> M | J -> K) -> B");
        assert_eq!(a.guaranteed(), names(&["B"]));
        let an = after(&s, &["A", "N"]).unwrap();
        assert_eq!(an.label(), "M -> B");
        assert_eq!(an.guaranteed(), names(&["M", "B"]));
        assert!(after(&s, &["A", "J", "M"]).is_none());
        assert!(after(&s, &["A", "J", "K", "B"]).unwrap().is_done());
        assert!(after(&s, &["A", "N", "M", "B", "B"]).is_none());
    }

    #[test]
    fn bare_choice() {
        let s = shape("(B | C)");
        assert_eq!(s.label(), "B | C");
        assert!(s.guaranteed().is_empty());
        assert!(!s.is_complete());
        assert!(s.step("B").unwrap().is_done());
        assert!(s.step("C").unwrap().is_done());
        assert!(s.step("A").is_none());
        // A common subsequence of every alternative is guaranteed.
        assert_eq!(shape("A -> X -> B | X -> C -> B").guaranteed(), names(&["X", "B"]));
    }

    #[test]
    fn counted_repetition() {
        let s = shape("M{1,3}");
        assert!(!s.is_complete());
        assert_eq!(s.guaranteed(), names(&["M"]));
        let one = s.step("M").unwrap();
        assert!(one.is_complete() && !one.is_done());
        assert_eq!(one.label(), "M{0,2}");
        let three = after(&s, &["M", "M", "M"]).unwrap();
        assert!(three.is_done());
        assert_eq!(three.label(), "nothing");
        assert!(after(&s, &["M", "M", "M", "M"]).is_none());

        let s = shape("M{2,} -> B");
        assert_eq!(s.guaranteed(), names(&["M", "M", "B"]));
        assert!(s.step("B").is_none());
        assert_eq!(s.step("M").unwrap().label(), "M+ -> B");
        assert_eq!(after(&s, &["M", "M"]).unwrap().label(), "M* -> B");
        assert!(after(&s, &["M", "M", "M", "M", "B"]).unwrap().is_done());
        assert!(after(&s, &["M", "B"]).is_none());

        let s = shape("(A -> B){2}");
        assert_eq!(s.guaranteed(), names(&["A", "B", "A", "B"]));
        assert_eq!(s.step("A").unwrap().label(), "B -> A -> B");
        assert!(after(&s, &["A", "B", "A", "B"]).unwrap().is_done());

        let s = shape("load{0,2} -> done");
        assert!(s.step("done").unwrap().is_done());
        assert!(after(&s, &["load", "load", "load"]).is_none());
    }

    #[test]
    fn nullable_items_and_optional_tails() {
        let s = shape("A -> B? -> C*");
        let a = s.step("A").unwrap();
        assert!(a.is_complete() && !a.is_done());
        assert_eq!(a.label(), "B? -> C*");
        assert_eq!(a.step("C").unwrap().label(), "C*");
        assert!(after(&s, &["A", "C", "B"]).is_none());
        // `A | A -> B` after `A`: the choice of nothing or `B`.
        let s = shape("A | A -> B");
        let a = s.step("A").unwrap();
        assert_eq!(a.label(), "B?");
        assert!(a.is_complete() && !a.is_done());
        assert_eq!(s.guaranteed(), names(&["A"]));
        // `()` and `{0}` are the empty sequence.
        assert!(shape("()").is_done());
        assert_eq!(shape("()").label(), "nothing");
        assert!(shape("M{0}").is_done());
        assert!(shape("M*").is_complete() && !shape("M*").is_done());
    }

    #[test]
    fn derivatives_stay_small() {
        let s = shape("A -> M* -> B");
        let mut d = s.step("A").unwrap();
        let start = d.clone();
        for _ in 0..10_000 {
            d = d.step("M").unwrap();
            assert_eq!(d.re.size(), start.re.size());
        }
        assert_eq!(d, start);
        assert_eq!(d.label(), "M* -> B");
        assert!(d.step("B").unwrap().is_done());

        let s = shape("(A | A -> B | B)* -> C");
        let mut d = s.clone();
        let mut max = 0;
        for i in 0..10_000 {
            d = d.step(if i % 3 == 0 { "B" } else { "A" }).unwrap();
            max = max.max(d.re.size());
        }
        assert!(max < 30, "derivative grew to {max} nodes: {d}");

        let s = shape("M{0,20000}");
        let d = s.after(std::iter::repeat_n("M", 10_000)).unwrap();
        assert_eq!(d.label(), "M{0,10000}");
        assert_eq!(d.re.size(), 2);
    }

    /// The end positions of `re` matched against `word` from `start`, by brute force.
    fn ends(re: &Re, word: &[&str], start: usize) -> BTreeSet<usize> {
        match re {
            Re::Empty => BTreeSet::new(),
            Re::Eps => BTreeSet::from([start]),
            Re::Task(name) => match word.get(start) {
                Some(w) if w == name => BTreeSet::from([start + 1]),
                _ => BTreeSet::new(),
            },
            Re::Seq(items) => items
                .iter()
                .fold(BTreeSet::from([start]), |at, item| at.iter().flat_map(|&s| ends(item, word, s)).collect()),
            Re::Alt(items) => items.iter().flat_map(|item| ends(item, word, start)).collect(),
            Re::Repeat(item, min, max) => {
                let limit = max.unwrap_or(u32::MAX).min(min + word.len() as u32 + 1);
                let (mut at, mut out) = (BTreeSet::from([start]), BTreeSet::new());
                for k in 0..=limit {
                    if k >= *min {
                        // Once nothing new turns up, more repetitions add nothing either.
                        if max.is_none() && !at.is_empty() && at.is_subset(&out) {
                            break;
                        }
                        out.extend(at.iter().copied());
                    }
                    if at.is_empty() {
                        break;
                    }
                    at = at.iter().flat_map(|&s| ends(item, word, s)).collect();
                }
                out
            }
        }
    }

    fn full_match(re: &Re, word: &[&str]) -> bool {
        ends(re, word, 0).contains(&word.len())
    }

    /// Every word over `A`, `B` of up to `len` names.
    fn words(len: usize) -> Vec<Vec<&'static str>> {
        let mut all = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..len {
            last = last
                .iter()
                .flat_map(|w: &Vec<&'static str>| {
                    ["A", "B"].into_iter().map(move |n| {
                        let mut w = w.clone();
                        w.push(n);
                        w
                    })
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn derivatives_agree_with_brute_force() {
        let shapes = [
            "A -> B* -> A",
            "(A | A -> B)* -> B",
            "(A -> B | A)+ -> A?",
            "(A? -> B?){2,3}",
            "(A{2})* -> B{1,2}",
            "((A | B) -> A){0,2} -> B",
            "(A+ | B)? -> (B -> A)*",
            "A{2,} | B{0,1} -> A",
        ];
        let tails = words(4);
        for text in shapes {
            let s = shape(text);
            for word in words(6) {
                let d = s.after(word.iter().copied());
                let by_derivative = d.as_ref().is_some_and(Shape::is_complete);
                assert_eq!(by_derivative, full_match(&s.re, &word), "{text} on {word:?}");
                let is_prefix = tails.iter().any(|tail| full_match(&s.re, &[&word[..], tail].concat()));
                assert_eq!(d.is_some(), is_prefix, "{text}: is {word:?} a prefix?");
            }
        }
    }

    #[test]
    fn nested_repetitions_simplify_soundly() {
        let bounds = [
            (0, None),
            (1, None),
            (0, Some(1)),
            (1, Some(2)),
            (2, Some(2)),
            (0, Some(2)),
            (2, None),
            (2, Some(3)),
            (3, Some(3)),
            (1, Some(3)),
            (3, None),
        ];
        let items = [
            Re::Task("A".into()),
            seq(vec![Re::Task("A".into()), Re::Task("B".into())]),
            alt(vec![Re::Task("A".into()), repeat(Re::Task("B".into()), 0, Some(1))]),
        ];
        let all = words(5);
        for item in &items {
            for &(a, b) in &bounds {
                for &(m, n) in &bounds {
                    let raw = Re::Repeat(Box::new(Re::Repeat(Box::new(item.clone()), a, b)), m, n);
                    let simple = repeat(repeat(item.clone(), a, b), m, n);
                    for word in &all {
                        assert_eq!(
                            full_match(&raw, word),
                            full_match(&simple, word),
                            "({item:?}{{{a},{b:?}}}){{{m},{n:?}}} -> {simple:?} on {word:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn emptiness_is_exact() {
        let re = seq(vec![Re::Task("A".into()), Re::Empty]);
        assert!(re.is_empty());
        let re = Re::Seq(vec![Re::Task("A".into()), Re::Alt(vec![Re::Empty, Re::Empty])]);
        assert!(re.is_empty());
        assert!(!Re::Repeat(Box::new(Re::Empty), 0, None).is_empty());
        assert!(Re::Repeat(Box::new(Re::Empty), 1, None).is_empty());
        assert_eq!(repeat(Re::Empty, 0, None), Re::Eps);
        assert_eq!(alt(vec![Re::Empty, Re::Eps]), Re::Eps);
        assert_eq!(alt(vec![Re::Empty, Re::Empty]), Re::Empty);
    }

    /// Pseudo-random numbers (xorshift), so that the generated cases are the same every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A random shape over `A` and `B`: its text, and its expression as written (built without
    /// the simplifying constructors).
    fn random_shape(rng: &mut Rng, depth: u32) -> (String, Re) {
        let leaf = depth == 0 || rng.below(3) == 0;
        if leaf {
            return match rng.below(5) {
                0 => ("()".into(), Re::Eps),
                1 | 2 => ("A".into(), Re::Task("A".into())),
                _ => ("B".into(), Re::Task("B".into())),
            };
        }
        match rng.below(3) {
            0 | 1 => {
                let n = 2 + rng.below(2) as usize;
                let parts: Vec<(String, Re)> = (0..n).map(|_| random_shape(rng, depth - 1)).collect();
                let is_seq = rng.below(2) == 0;
                let sep = if is_seq { " -> " } else { " | " };
                let text = format!("({})", parts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(sep));
                let items = parts.into_iter().map(|(_, re)| re).collect();
                (text, if is_seq { Re::Seq(items) } else { Re::Alt(items) })
            }
            _ => {
                let (text, re) = random_shape(rng, depth - 1);
                let min = rng.below(4) as u32;
                let (op, max) = match rng.below(6) {
                    0 => ("*".to_string(), None),
                    1 => ("?".to_string(), Some(1)),
                    2 => (format!("{{{min},}}"), None),
                    3 => (format!("{{{min}}}"), Some(min)),
                    _ => {
                        let max = min + rng.below(3) as u32;
                        (format!("{{{min},{max}}}"), Some(max))
                    }
                };
                let min = match op.as_str() {
                    "*" | "?" => 0,
                    _ => min,
                };
                (format!("({text}){op}"), Re::Repeat(Box::new(re), min, max))
            }
        }
    }

    #[test]
    fn random_shapes_round_trip_and_match_exactly() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let all = words(5);
        let tails = words(3);
        for _ in 0..200 {
            let (text, raw) = random_shape(&mut rng, 3);
            let s = shape(&text);
            let canonical = s.to_string();
            assert_eq!(shape(&canonical), s, "{text} -> {canonical}");
            for word in &all {
                let d = s.after(word.iter().copied());
                assert_eq!(
                    d.as_ref().is_some_and(Shape::is_complete),
                    full_match(&raw, word),
                    "{text} (as {canonical}) on {word:?}"
                );
                let is_prefix = tails.iter().any(|tail| full_match(&raw, &[&word[..], tail].concat()));
                if is_prefix {
                    assert!(d.is_some(), "{text} (as {canonical}): {word:?} is a prefix");
                }
                if let Some(d) = d {
                    // The guaranteed names are in every completion that is short enough to try.
                    let guaranteed = d.guaranteed();
                    for tail in &tails {
                        if full_match(&raw, &[&word[..], tail].concat()) {
                            let mut names = tail.iter();
                            assert!(
                                guaranteed.iter().all(|g| names.any(|n| n == g)),
                                "{text} after {word:?}: {guaranteed:?} not in {tail:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// `open` parentheses around `A`.
    fn nested_parens(open: usize) -> String {
        format!("{}A{}", "(".repeat(open), ")".repeat(open))
    }

    #[test]
    fn deep_nesting_is_refused_cleanly() {
        let e = error(&nested_parens(2841));
        assert_eq!(e.offset, MAX_DEPTH);
        assert!(e.message.ends_with(&format!("the shape nests more than {MAX_DEPTH} levels deep at offset 32")), "{e}");
        // Long texts are quoted by their start only.
        assert!(e.message.starts_with(&format!("promise `{}…`", "(".repeat(60))), "{e}");
        assert_eq!(shape(&nested_parens(MAX_DEPTH)).to_string(), "A");
        assert!(error(&nested_parens(MAX_DEPTH + 1)).message.contains("levels deep"));

        // Groups of groups: each level is a sequence in a choice.
        let mut text = "A".to_string();
        for i in 0..MAX_DEPTH / 2 {
            text = format!("(B{i} | {text} -> C)");
        }
        let deep = shape(&text);
        assert_eq!(shape(&deep.to_string()), deep);
        let e = error(&format!("(B | {text} -> C)"));
        assert!(e.message.contains("levels deep"), "{e}");

        // Repetitions of repetitions: `A{2}{2}…`; those that parse print a text that parses.
        for n in [1, 2, 16, 17, 31, 32, 33, 2842] {
            let text = format!("A{}", "{2}".repeat(n));
            match text.parse::<Promise>() {
                Ok(p) => {
                    assert!(n <= MAX_DEPTH, "{n} repetitions parsed");
                    assert_eq!(promise(&p.to_string()), p, "{n}: {p}");
                }
                Err(e) => {
                    assert!(n > MAX_DEPTH, "{n}: {e}");
                    assert!(e.message.contains("levels deep"), "{e}");
                }
            }
        }
        // `{2}` sixteen times is A{65536}; more does not fit one count.
        assert_eq!(shape(&format!("A{}", "{2}".repeat(16))).to_string(), "A{65536}");
        assert_eq!(shape(&format!("A{}", "{2}".repeat(17))).to_string(), "(A{65536}){2}");
    }

    /// Parses, prints, steps and lists what the deepest shape allowed guarantees, and parses
    /// a text nested far too deep.
    fn deepest_work() -> (bool, String, Vec<String>) {
        let refused = nested_parens(2841).parse::<Promise>().is_err();
        // Three levels each: a choice, a sequence and a repetition.
        let mut text = "A".to_string();
        for i in 0..MAX_DEPTH / 3 {
            text = format!("(B{i} | {text}* -> C)");
        }
        let s = shape(&text);
        assert_eq!(shape(&s.to_string()), s);
        let d = s.after(["A", "A", "C"]).expect("A -> A -> C fits");
        (refused, d.label(), d.guaranteed())
    }

    #[test]
    fn deep_nesting_is_refused_on_a_small_stack() {
        let worker = std::thread::Builder::new().stack_size(64 * 1024).spawn(deepest_work);
        let small = worker.expect("thread").join().expect("no stack overflow");
        assert!(small.0);
        assert_eq!(small, deepest_work());
        assert_eq!(small.2, names(&["C"; MAX_DEPTH / 3 - 1]));
    }

    #[test]
    fn counts_are_bounded() {
        for (text, offset) in [("A{100000000}", 2), ("A{4294967295}", 2), ("A{0,100001}", 4), ("A{100001,}", 2)] {
            let e = error(text);
            assert_eq!(e.offset, offset, "{text}");
            assert!(e.message.contains("is too large (at most 100000)"), "{e}");
        }
        assert_eq!(shape("A{100000}").to_string(), "A{100000}");
        // Counts merged by simplification stay within the bound, so canonical texts parse.
        let s = shape("(A{10000}){10000}");
        assert_eq!(s.to_string(), "(A{10000}){10000}");
        assert_eq!(shape("A{60000} -> A{60000}").to_string(), "A{60000} -> A{60000}");
        assert_eq!(shape("A{50000} -> A{50000}").to_string(), "A{100000}");
        // Guaranteed nodes are listed up to a bound, without materialising the repetition.
        for text in ["A{100000}", "(A{10000}){10000}", "A{30000} | A{29999}", "(A{10000}){10000} -> B"] {
            let g = shape(text).guaranteed();
            assert_eq!(g, vec!["A".to_string(); MAX_GUARANTEED], "{text}");
        }
        assert_eq!(shape("A{3} | A{2}").guaranteed(), names(&["A", "A"]));
        // Each alternative's list is cut at the bound before they are compared.
        assert_eq!(shape("B -> A{30000} | A{29999} -> B").guaranteed(), vec!["A".to_string(); MAX_GUARANTEED - 1]);
        // Steps stay small too.
        let mut d = s.clone();
        for _ in 0..1000 {
            d = d.step("A").unwrap();
            assert!(d.re.size() <= 8, "{d}");
        }
        assert_eq!(d.to_string(), "A{9000} -> (A{10000}){9999}");
    }

    #[test]
    fn sizes_are_bounded() {
        let e = error(&"A | ".repeat(100_000));
        assert_eq!(e.offset, 4 * MAX_ITEMS);
        assert!(e.message.contains("more than 4096 items"), "{e}");
        let e = error(&format!("only tasks {}", "A, ".repeat(5000)));
        assert!(e.message.contains("more than 4096 items"), "{e}");
        let e = error(&" ".repeat(MAX_TEXT_LEN + 1));
        assert_eq!(e.offset, MAX_TEXT_LEN);
        assert!(e.message.contains("the text is 1048577 bytes long; a promise has at most 1048576"), "{e}");
        let e = error(&format!("A -> {}", "x".repeat(MAX_NAME_LEN + 1)));
        assert_eq!((e.offset, e.message.contains("a task name longer than 128 bytes")), (5, true));
        assert!(error(&format!("no edges into {}", "x".repeat(MAX_NAME_LEN + 1))).message.contains("longer"));

        // The largest choice allowed parses and steps in linear time, and prints a text that
        // parses (the canonical text of anything within the limits parses).
        let names: Vec<String> = (0..MAX_ITEMS).map(|i| format!("{}{i}", "t".repeat(MAX_NAME_LEN - 5))).collect();
        let s = shape(&names.join("|"));
        assert_eq!(s.tasks().len(), MAX_ITEMS);
        assert_eq!(shape(&s.to_string()), s);
        assert!(s.step(&names[4000]).unwrap().is_done());
        assert!(s.step("A").is_none());
        let s = shape(&vec!["A"; MAX_ITEMS].join(" | "));
        assert_eq!(s.to_string(), "A");
    }

    #[test]
    fn pathological_shapes_step_in_small_derivatives() {
        // `A{1,2}` nested 16 times, with and without parentheses: one repetition.
        let mut text = "A{1,2}".to_string();
        for _ in 1..16 {
            text = format!("({text}){{1,2}}");
        }
        for text in [text, format!("A{}", "{1,2}".repeat(16))] {
            let s = shape(&text);
            assert_eq!(s.to_string(), "A{1,65536}");
            let d = s.after(std::iter::repeat_n("A", 100)).unwrap();
            assert_eq!((d.to_string(), d.re.size()), ("A{0,65436}".to_string(), 2));
        }
        // Nested so that the counts do not join: the derivatives stay small.
        let mut text = "A{3}".to_string();
        for _ in 1..12 {
            text = format!("({text}){{1,2}}");
        }
        let s = shape(&text);
        let mut d = s.clone();
        let mut largest = 0;
        for i in 1..=300 {
            d = d.step("A").unwrap();
            largest = largest.max(d.re.size());
            assert_eq!(d.is_complete(), i % 3 == 0, "after {i}");
        }
        assert!(largest < 200, "a derivative grew to {largest} nodes");

        // `A* -> A* -> …` and `A? -> A? -> …`: one repetition.
        for n in [100, 1000] {
            assert_eq!(shape(&vec!["A*"; n].join(" -> ")).to_string(), "A*");
            assert_eq!(shape(&format!("B -> {} -> C", vec!["A*"; n].join(" -> "))).to_string(), "B -> A* -> C");
        }
        let s = shape(&vec!["A?"; 1000].join(" -> "));
        assert_eq!(s.to_string(), "A{0,1000}");
        let d = s.after(std::iter::repeat_n("A", 1000)).unwrap();
        assert!(d.is_done() && d.step("A").is_none());

        // Alternating optional items do not merge, but the later alternatives of a step are
        // held by the first: one step leaves one sequence.
        let s = shape(&vec!["A? -> B?"; 1000].join(" -> "));
        let mut d = s.clone();
        for i in 0..1000 {
            d = d.try_step(if i % 3 == 0 { "B" } else { "A" }).unwrap().unwrap();
            assert!(d.re.size() <= s.re.size(), "{i}: {}", d.re.size());
        }
        let s = shape(&vec!["A* -> B*"; 500].join(" -> "));
        let d = s.after(std::iter::repeat_n(["A", "B"], 500).flatten()).unwrap();
        assert_eq!(d.to_string(), "B*");

        // Optional sequences that share a first item give as many different alternatives as
        // there are items: such a shape is refused after a bounded amount of work, not stepped
        // at any cost.
        let s = shape(&vec!["(A -> C)? -> (A -> D)?"; 500].join(" -> "));
        assert_eq!(s.try_step("A"), Err(TooComplex { task: "A".into() }));
        assert!(s.step("A").is_none());
        assert_eq!(s.try_after(["A"]), Err(TooComplex { task: "A".into() }));
        assert!(s.try_step("C").unwrap().is_none(), "nothing to copy after a `C`");
        // A shorter one steps.
        let s = shape(&vec!["(A -> C)? -> (A -> D)?"; 50].join(" -> "));
        assert!(s.try_step("A").unwrap().is_some());
    }
}
