//! The promise grammar: parsing, printing, and the shape engine (derivatives of a regular
//! expression over task names).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

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
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A sequence: ∅ absorbs, ε vanishes, nested sequences flatten.
fn seq(items: Vec<Re>) -> Re {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Re::Empty => return Re::Empty,
            Re::Eps => {}
            Re::Seq(inner) => out.extend(inner),
            other => out.push(other),
        }
    }
    match out.len() {
        0 => Re::Eps,
        1 => out.pop().unwrap_or(Re::Eps),
        _ => Re::Seq(out),
    }
}

/// A choice: ∅ vanishes, nested choices flatten, duplicates go, and ε turns the rest optional.
fn alt(items: Vec<Re>) -> Re {
    let mut out: Vec<Re> = Vec::with_capacity(items.len());
    let mut eps = false;
    let push = |out: &mut Vec<Re>, re: Re| {
        if !out.contains(&re) {
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

    /// The Brzozowski derivative by one task name.
    fn derive(&self, task: &str) -> Re {
        match self {
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
                for (i, item) in items.iter().enumerate() {
                    let mut rest = Vec::with_capacity(items.len() - i);
                    rest.push(item.derive(task));
                    rest.extend(items[i + 1..].iter().cloned());
                    alts.push(seq(rest));
                    if !item.nullable() {
                        break;
                    }
                }
                alt(alts)
            }
            Re::Alt(items) => alt(items.iter().map(|re| re.derive(task)).collect()),
            Re::Repeat(re, min, max) => match max {
                Some(0) => Re::Empty,
                _ => seq(vec![re.derive(task), repeat((**re).clone(), min.saturating_sub(1), max.map(|n| n - 1))]),
            },
        }
    }

    /// The task names every word must hold, in order (a common subsequence of all words).
    fn guaranteed(&self, out: &mut Vec<String>) {
        match self {
            Re::Empty | Re::Eps => {}
            Re::Task(name) => out.push(name.clone()),
            Re::Seq(items) => items.iter().for_each(|re| re.guaranteed(out)),
            Re::Alt(items) => {
                let mut common: Option<Vec<String>> = None;
                for re in items {
                    let mut mine = Vec::new();
                    re.guaranteed(&mut mine);
                    common = Some(match common {
                        None => mine,
                        Some(common) => lcs(&common, &mine),
                    });
                }
                out.extend(common.unwrap_or_default());
            }
            Re::Repeat(re, min, _) => {
                let mut once = Vec::new();
                re.guaranteed(&mut once);
                if !once.is_empty() {
                    for _ in 0..*min {
                        out.extend(once.iter().cloned());
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

    #[cfg(test)]
    fn size(&self) -> usize {
        match self {
            Re::Empty | Re::Eps | Re::Task(_) => 1,
            Re::Seq(items) | Re::Alt(items) => 1 + items.iter().map(Re::size).sum::<usize>(),
            Re::Repeat(re, _, _) => 1 + re.size(),
        }
    }
}

/// A longest common subsequence of two name lists.
fn lcs(a: &[String], b: &[String]) -> Vec<String> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    if a == b {
        return a.to_vec();
    }
    let (n, m) = (a.len(), b.len());
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
    /// promise is already broken.
    pub fn after<'a>(&self, seq: impl IntoIterator<Item = &'a str>) -> Option<Shape> {
        let mut re = self.re.clone();
        for task in seq {
            re = re.derive(task);
            if re.is_empty() {
                return None;
            }
        }
        Some(Shape { re })
    }

    /// What may still follow after one more child of task `task` (the derivative by that name);
    /// `None` if that child breaks the promise.
    pub fn step(&self, task: &str) -> Option<Shape> {
        let re = self.re.derive(task);
        if re.is_empty() { None } else { Some(Shape { re }) }
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
    pub fn guaranteed(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.re.guaranteed(&mut out);
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

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, bytes: src.as_bytes(), pos: 0 }
    }

    fn err(&self, offset: usize, detail: impl fmt::Display) -> PromiseError {
        PromiseError { message: format!("promise `{}`: {detail} at offset {offset}", self.src), offset }
    }

    fn unknown(&self, offset: usize) -> PromiseError {
        PromiseError { message: format!("unknown promise `{}`; {EXPECTED_KINDS}", self.src.trim()), offset }
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
            match self.ident() {
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
        match self.ident() {
            Some(name) => Ok(Target::Task(name.to_owned())),
            None => Err(self.err(self.pos, "expected a task name or `#N` (a node id)")),
        }
    }

    /// A whole shape, up to the end of the text.
    fn shape(&mut self) -> Result<Shape, PromiseError> {
        let re = self.alt()?;
        self.skip_ws();
        match self.peek() {
            None => Ok(Shape { re }),
            Some(b')') => Err(self.err(self.pos, "unmatched `)`")),
            Some(_) => Err(self.err(self.pos, "expected `->`, `|` or the end")),
        }
    }

    fn alt(&mut self) -> Result<Re, PromiseError> {
        let mut items = vec![self.seq()?];
        loop {
            self.skip_ws();
            if self.peek() != Some(b'|') {
                return Ok(alt(items));
            }
            self.pos += 1;
            items.push(self.seq()?);
        }
    }

    fn seq(&mut self) -> Result<Re, PromiseError> {
        let mut items = vec![self.postfix()?];
        loop {
            self.skip_ws();
            if !self.bytes[self.pos..].starts_with(b"->") {
                return Ok(seq(items));
            }
            self.pos += 2;
            items.push(self.postfix()?);
        }
    }

    fn postfix(&mut self) -> Result<Re, PromiseError> {
        let mut re = self.atom()?;
        loop {
            self.skip_ws();
            let (min, max) = match self.peek() {
                Some(b'*') => (0, None),
                Some(b'+') => (1, None),
                Some(b'?') => (0, Some(1)),
                Some(b'{') => {
                    re = self.count(re)?;
                    continue;
                }
                _ => return Ok(re),
            };
            self.pos += 1;
            re = repeat(re, min, max);
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
            .parse()
            .map(Some)
            .map_err(|_| self.err(start, format!("the count `{digits}` is too large (at most {})", u32::MAX)))
    }

    fn atom(&mut self) -> Result<Re, PromiseError> {
        self.skip_ws();
        if self.peek() == Some(b'(') {
            let open = self.pos;
            self.pos += 1;
            self.skip_ws();
            if self.peek() == Some(b')') {
                self.pos += 1;
                return Ok(Re::Eps);
            }
            let re = self.alt()?;
            self.skip_ws();
            return match self.peek() {
                Some(b')') => {
                    self.pos += 1;
                    Ok(re)
                }
                None => Err(self.err(open, "unclosed `(`")),
                Some(_) => Err(self.err(self.pos, "expected `->`, `|` or `)`")),
            };
        }
        match self.ident() {
            Some(name) => Ok(Re::Task(name.to_owned())),
            None => Err(self.err(self.pos, "expected a task name or `(`")),
        }
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
            "(M{2})* -> (M{2,3}){4}",
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
        let bounds = [(0, None), (1, None), (0, Some(1)), (1, Some(2)), (2, Some(2)), (0, Some(2)), (2, None)];
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
}
