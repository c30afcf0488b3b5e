//! Multi-document YAML into a small tree that remembers where every node starts.
//!
//! Backstage reads catalog files with the `yaml` npm package (YAML 1.2, core schema, unique
//! keys). We parse with the `saphyr-parser` event stream and build our own tree so every
//! finding can point at `line:column`; scalars resolve like the core schema so what we send to
//! `validate-entity` is what Backstage would have read.
//!
//! Hostile files are bounded in work and memory, not only in nodes: an alias is expanded
//! into a copy, so what an alias costs is the whole anchored value (its nodes and its scalar
//! bytes), counted against per-file budgets before the copy is made. So is the copy of an
//! anchored node kept for its aliases (nested anchors multiplied it, uncounted). A 115 KB file aliasing a
//! 100 KB string 5,000 times counted 5,000 nodes and grew the agent past 1.7 GB; now it
//! stops at [`MAX_EXPANDED_BYTES`]. Duplicate keys are found through a hash set per mapping
//! (a scan of the earlier keys per key was quadratic: 18.7 s for 40k keys), and only the
//! first few duplicate keys are kept as errors, with a count of the rest. Nesting is capped
//! at [`MAX_DEPTH`] levels (aliases counted as the levels they copy), so nothing that walks
//! the tree recursively (drop, clone, `==`, JSON) can run out of stack.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Upper bound on nodes per file, aliases and anchors counted as the nodes they copy
/// ("billion laughs").
pub const MAX_NODES: usize = 200_000;

/// Upper bound on the bytes of scalars per file once aliases are expanded (and anchored
/// nodes copied for them). Backstage's own
/// limit on a catalog file is in the same range; a real file is far below it.
pub const MAX_EXPANDED_BYTES: usize = 4 * 1024 * 1024;

/// Upper bound on how deeply collections nest, aliases counted as the levels they copy.
///
/// Dropping, cloning, comparing and turning a tree into JSON recurse once per level: a
/// 20 KB file of 10,000 nested `- ` overflowed a 2 MiB worker stack and aborted the agent
/// (at every restart while the file was there). A real catalog file nests a handful of
/// levels; past this the file is refused and nothing deeper is ever built.
pub const MAX_DEPTH: usize = 512;

/// Duplicate-key errors kept per file; the rest are counted in [`Stream::more_errors`].
pub const MAX_KEPT_ERRORS: usize = 100;

/// 1-based position in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the node starts.
    pub pos: Pos,
}

/// A resolved YAML value (core schema).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order (keys are unique).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The entry of a mapping whose key is the string `key`.
    pub fn get(&self, key: &str) -> Option<&(Node, Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key)),
            _ => None,
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the node's type for messages (`string`, `mapping`, ...).
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }

    /// The JSON form Backstage would build from this node.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A mapping key as the string JavaScript would use for it.
    pub fn key_string(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// One document of a stream: its root (absent when the document is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The root node; `None` for an empty document, which Backstage skips.
    pub root: Option<Node>,
    /// Where the document starts.
    pub pos: Pos,
    /// Whether a mapping in it repeats a key (Backstage refuses such a document).
    pub duplicate_key: bool,
}

/// A YAML syntax or structure error with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos_line}:{pos_col}: {message}")]
pub struct YamlError {
    /// 1-based line.
    pub pos_line: usize,
    /// 1-based column.
    pub pos_col: usize,
    /// What is wrong.
    pub message: String,
    /// `yaml-syntax` or `yaml-duplicate-key` (the rule broken).
    pub rule: &'static str,
}

/// The parse of a whole file: the documents read before any error, and the error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    /// Documents fully read.
    pub documents: Vec<Document>,
    /// Errors (a syntax error ends the stream; duplicate keys do not).
    pub errors: Vec<YamlError>,
    /// Duplicate-key errors found past the first [`MAX_KEPT_ERRORS`] and not kept.
    pub more_errors: usize,
}

/// What a node costs once its aliases are expanded: nodes and scalar bytes add up, `depth`
/// (collection levels in it, 0 for a scalar) is the deepest of its parts.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
    depth: usize,
}

impl Weight {
    fn add(&mut self, other: Weight) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.depth = self.depth.max(other.depth);
    }
}

/// A mapping key as compared for uniqueness: `None` for keys that are never duplicates
/// (`null`, NaN), like the `==` on [`Value`] this replaces.
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyId {
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    /// A sequence or mapping key, by its debug form (node positions included, as `==`).
    Complex(String),
}

impl KeyId {
    fn of(v: &Value) -> Option<KeyId> {
        Some(match v {
            Value::Null => return None,
            Value::Float(f) if f.is_nan() => return None,
            // 0.0 == -0.0
            Value::Float(f) if *f == 0.0 => KeyId::Float(0),
            Value::Float(f) => KeyId::Float(f.to_bits()),
            Value::Bool(b) => KeyId::Bool(*b),
            Value::Int(i) => KeyId::Int(*i),
            Value::Str(s) => KeyId::Str(s.clone()),
            complex => KeyId::Complex(format!("{complex:?}")),
        })
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        weight: Weight,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashMap<KeyId, usize>,
        weight: Weight,
    },
}

/// Where a text ends, for [`TextEnd::clamp`]: worked out once per file (working it out per
/// finding re-split the whole file each time, quadratic in a file full of findings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextEnd {
    /// Number of lines (`split('\n')` pieces, at least 1).
    last: usize,
    /// Bytes in the last line.
    last_len: usize,
}

impl TextEnd {
    pub(crate) fn of(text: &str) -> Self {
        let newlines = count_newlines(text.as_bytes());
        let last_len = text.rfind('\n').map_or(text.len(), |i| text.len() - i - 1);
        Self {
            last: newlines + 1,
            last_len,
        }
    }

    /// Clamps a parser position into the text: the parser reports errors found at the end
    /// of input (and nodes that start there) on the line after the last one, which an
    /// editor cannot jump to. Such a position is put just after the last character instead.
    pub(crate) fn clamp(&self, line: usize, col: usize) -> (usize, usize) {
        if line > self.last {
            (self.last, self.last_len + 1)
        } else {
            (line.max(1), col.max(1))
        }
    }
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

/// Parses every document of `text`.
pub fn parse_stream(text: &str) -> Stream {
    let end = TextEnd::of(text);
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(v) => v,
            Err(e) => {
                let (pos_line, pos_col) = end.clamp(e.marker().line(), e.marker().col() + 1);
                b.out.errors.push(YamlError {
                    pos_line,
                    pos_col,
                    message: e.info().to_string(),
                    rule: "yaml-syntax",
                });
                return b.out;
            }
        };
        if b.event(event, Pos::of(&span)).is_err() {
            break;
        }
    }
    b.out
}

/// The parse must end here; the error that says why is already in the stream.
struct Stop;

/// A node an event finished: the node, its anchor, its weight, and what it adds to the
/// file's total (a collection's children were counted as they came).
struct Finished {
    node: Node,
    anchor: usize,
    weight: Weight,
    fresh: Weight,
}

/// The state of one parse, fed one event at a time: what is read so far, the collections
/// still open, and the current document's anchors.
#[derive(Default)]
struct Builder {
    out: Stream,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Weight)>,
    doc_pos: Pos,
    doc_dup: bool,
    root: Option<Node>,
    total: Weight,
}

impl Builder {
    /// Takes one event: a finished node is counted against the budget, remembered under its
    /// anchor and put into its parent.
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), Stop> {
        let Some(f) = self.finish(event, pos)? else {
            return Ok(());
        };
        self.charge(f.fresh, pos)?;
        if f.anchor != 0 {
            // The copy kept for aliases costs what the node does, counted like an alias:
            // nested anchors (each level's copy holding every level below it) grew an
            // 880 KB file to 428 MB with no alias expanded more than once.
            self.charge(f.weight, pos)?;
            self.anchors.insert(f.anchor, (f.node.clone(), f.weight));
        }
        self.attach(f.node, f.weight);
        Ok(())
    }

    /// The node `event` finishes, if any; document and collection starts and ends update
    /// the state instead.
    fn finish(&mut self, event: Event<'_>, pos: Pos) -> Result<Option<Finished>, Stop> {
        Ok(match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                self.doc_pos = pos;
                self.doc_dup = false;
                self.root = None;
                self.anchors.clear();
                None
            }
            Event::DocumentEnd => {
                self.out.documents.push(Document {
                    root: self.root.take().filter(|n| n.value != Value::Null),
                    pos: self.doc_pos,
                    duplicate_key: self.doc_dup,
                });
                None
            }
            Event::Alias(id) => Some(self.alias(id, pos)?),
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| t.suffix.clone());
                let w = Weight {
                    nodes: 1,
                    bytes: text.len(),
                    depth: 0,
                };
                Some(Finished {
                    node: Node {
                        value: resolve_scalar(&text, style, tag.as_deref()),
                        pos,
                    },
                    anchor,
                    weight: w,
                    fresh: w,
                })
            }
            Event::SequenceStart(anchor, _) => {
                self.nest(pos, 1)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                    weight: Weight::default(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                self.nest(pos, 1)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    seen: HashMap::new(),
                    weight: Weight::default(),
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
        })
    }

    /// A copy of an anchored node, counted before the copy is made: the budget is what
    /// bounds memory, and the depth cap what bounds recursion (an alias to a deep node put
    /// deep in the tree nests as deep as both together).
    fn alias(&mut self, id: usize, pos: Pos) -> Result<Finished, Stop> {
        let Some((anchored, w)) = self.anchors.get(&id).map(|(n, w)| (n, *w)) else {
            self.out.errors.push(YamlError {
                pos_line: pos.line,
                pos_col: pos.col,
                message: "alias to an unknown anchor".into(),
                rule: "yaml-syntax",
            });
            return Err(Stop);
        };
        // Field by field, not through `nest` and `charge`, so the anchor stays borrowed
        // from the one lookup while the checks run.
        let refused = match too_deep(self.stack.len(), w.depth, pos) {
            Some(e) => Err(e),
            None => add_within(&mut self.total, w, pos),
        };
        if let Err(e) = refused {
            self.out.errors.push(e);
            return Err(Stop);
        }
        let value = anchored.value.clone();
        Ok(Finished {
            node: Node { value, pos },
            anchor: 0,
            weight: w,
            fresh: Weight::default(),
        })
    }

    /// Counts `w` against the file's budget, or ends the parse with the error that says
    /// the budget is spent.
    fn charge(&mut self, w: Weight, pos: Pos) -> Result<(), Stop> {
        add_within(&mut self.total, w, pos).map_err(|e| {
            self.out.errors.push(e);
            Stop
        })
    }

    /// Checks that `levels` more levels of collections fit under [`MAX_DEPTH`] where the
    /// parse stands, or ends the parse: nothing deeper is built, so nothing recurses deeper.
    fn nest(&mut self, pos: Pos, levels: usize) -> Result<(), Stop> {
        match too_deep(self.stack.len(), levels, pos) {
            None => Ok(()),
            Some(e) => {
                self.out.errors.push(e);
                Err(Stop)
            }
        }
    }

    /// The collection an end event closes, as a node weighing its children and itself.
    fn close(&mut self) -> Option<Finished> {
        let one = Weight {
            nodes: 1,
            bytes: 0,
            depth: 0,
        };
        let (value, pos, anchor, mut weight) = match self.stack.pop()? {
            Frame::Seq {
                pos,
                anchor,
                items,
                weight,
            } => (Value::Seq(items), pos, anchor, weight),
            Frame::Map {
                pos,
                anchor,
                entries,
                weight,
                ..
            } => (Value::Map(entries), pos, anchor, weight),
        };
        weight.add(one);
        weight.depth += 1;
        Some(Finished {
            node: Node { value, pos },
            anchor,
            weight,
            fresh: one,
        })
    }

    /// Puts a finished node into the open collection (a map takes keys and values in
    /// turn), or makes it the document's root.
    fn attach(&mut self, node: Node, weight: Weight) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq {
                items, weight: w, ..
            }) => {
                w.add(weight);
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                seen,
                weight: w,
                ..
            }) => {
                w.add(weight);
                match key.take() {
                    None => {
                        if let Some(first) = first_seen(seen, &node) {
                            self.doc_dup = true;
                            duplicate_key(&mut self.out, &node, first);
                        }
                        *key = Some(node);
                    }
                    Some(k) => entries.push((k, node)),
                }
            }
        }
    }
}

/// The line a map's key was first seen on, if `key` repeats it (else it is recorded).
fn first_seen(seen: &mut HashMap<KeyId, usize>, key: &Node) -> Option<usize> {
    KeyId::of(&key.value).and_then(|id| match seen.entry(id) {
        Entry::Occupied(o) => Some(*o.get()),
        Entry::Vacant(v) => {
            v.insert(key.pos.line);
            None
        }
    })
}

/// Records a duplicate key, up to [`MAX_KEPT_ERRORS`] errors (the rest are only counted).
fn duplicate_key(out: &mut Stream, key: &Node, first: usize) {
    if out.errors.len() < MAX_KEPT_ERRORS {
        out.errors.push(YamlError {
            pos_line: key.pos.line,
            pos_col: key.pos.col,
            message: format!(
                "duplicate key {} (first at line {first}); map keys must be unique",
                super::finding::excerpt(&key.key_string()),
            ),
            rule: "yaml-duplicate-key",
        });
    } else {
        out.more_errors += 1;
    }
}

/// Adds `w` to `total` if the sum stays within the budget; else leaves `total` as it was
/// and says why the sum is refused.
fn add_within(total: &mut Weight, w: Weight, pos: Pos) -> Result<(), YamlError> {
    let mut after = *total;
    after.add(w);
    if let Some(e) = over_budget(after, pos) {
        return Err(e);
    }
    *total = after;
    Ok(())
}

/// The error for `levels` more levels of collections opened `depth` levels deep, if that
/// passes [`MAX_DEPTH`].
fn too_deep(depth: usize, levels: usize, pos: Pos) -> Option<YamlError> {
    (depth.saturating_add(levels) > MAX_DEPTH).then(|| YamlError {
        pos_line: pos.line,
        pos_col: pos.col,
        message: format!(
            "collections nested more than {MAX_DEPTH} levels deep (aliases counted); refused"
        ),
        rule: "yaml-too-large",
    })
}

/// The error that ends the parse once the file's expanded size passes a budget.
fn over_budget(total: Weight, pos: Pos) -> Option<YamlError> {
    let message = if total.nodes > MAX_NODES {
        format!("more than {MAX_NODES} nodes once anchors and aliases are expanded; refused")
    } else if total.bytes > MAX_EXPANDED_BYTES {
        format!(
            "more than {} MiB of text once anchors and aliases are expanded; refused",
            MAX_EXPANDED_BYTES / (1024 * 1024)
        )
    } else {
        return None;
    };
    Some(YamlError {
        pos_line: pos.line,
        pos_col: pos.col,
        message,
        rule: "yaml-too-large",
    })
}

/// Resolves a scalar like the YAML 1.2 core schema (what the `yaml` npm package does).
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::Str(text.to_string()),
        Some("null") => return Value::Null,
        Some("bool") | Some("int") | Some("float") => {
            let v = resolve_plain(text);
            if !matches!(v, Value::Str(_)) {
                return v;
            }
            return Value::Str(text.to_string());
        }
        Some(_) => return Value::Str(text.to_string()),
        None => {}
    }
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    resolve_plain(text)
}

fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    if is_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` after the sign.
fn is_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(a.is_empty() && b.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exp_ok && (mantissa.contains('.') || exp.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_positions() {
        let s = parse_stream("a: 1\n---\nb:\n  c: x\n---\n");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.documents.len(), 3);
        let second = s.documents[1].root.as_ref().unwrap();
        let (k, v) = second.get("b").unwrap();
        assert_eq!(k.pos, Pos { line: 3, col: 1 });
        let (_, c) = v.get("c").unwrap();
        assert_eq!(c.pos, Pos { line: 4, col: 6 });
        assert!(s.documents[2].root.is_none());
    }

    #[test]
    fn core_schema_scalars() {
        let s = parse_stream(
            "a: true\nb: 'true'\nc: ~\nd: 0x1f\ne: 1.5e3\nf: 012\ng: .nan\nh: v1\ni:\nj: !!str 5\n",
        );
        let root = s.documents[0].root.as_ref().unwrap();
        let v = |k: &str| root.get(k).unwrap().1.value.clone();
        assert_eq!(v("a"), Value::Bool(true));
        assert_eq!(v("b"), Value::Str("true".into()));
        assert_eq!(v("c"), Value::Null);
        assert_eq!(v("d"), Value::Int(31));
        assert_eq!(v("e"), Value::Float(1500.0));
        assert_eq!(v("f"), Value::Int(12));
        assert!(matches!(v("g"), Value::Float(f) if f.is_nan()));
        assert_eq!(v("h"), Value::Str("v1".into()));
        assert_eq!(v("i"), Value::Null);
        assert_eq!(v("j"), Value::Str("5".into()));
    }

    #[test]
    fn syntax_error_has_position() {
        let s = parse_stream("a: 1\nb: [1, 2\n");
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].rule, "yaml-syntax");
        assert!(s.errors[0].pos_line >= 2, "{:?}", s.errors[0]);
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let s = parse_stream("a: 1\nb: 2\na: 3\n");
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].rule, "yaml-duplicate-key");
        assert_eq!((s.errors[0].pos_line, s.errors[0].pos_col), (3, 1));
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let s = parse_stream("a: &x [1, 2]\nb: *x\n");
        let root = s.documents[0].root.as_ref().unwrap();
        assert_eq!(
            root.get("b").unwrap().1.to_json(),
            serde_json::json!([1, 2])
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let s = parse_stream(&bomb);
        assert!(
            s.errors.iter().any(|e| e.message.contains("alias")),
            "{:?}",
            s.errors
        );
    }
}
