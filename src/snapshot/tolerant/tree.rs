//! A YAML document as a tree that remembers where each node is, read
//! through serde the way serde_yaml reads text (plain scalars resolve to
//! null, booleans and numbers only where the target asks for one; any
//! scalar is a string where a string is asked for). The tolerant pass
//! deserializes each entry of a broken snapshot from it on its own, and
//! an error carries the path and position of the node at fault.
//!
//! Tags are ignored: the schema has no tagged values, and a divergence
//! from serde_yaml here can at worst word a problem differently.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Unexpected, Visitor};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::snapshot::locate::Location;

/// A parsed document: nodes by index, aliases sharing their anchor's node.
pub struct Tree {
    nodes: Vec<Node>,
}

pub struct Node {
    pub kind: Kind,
    pub location: Location,
}

pub enum Kind {
    /// The scalar's text, and whether it was written plain (unquoted, not
    /// a block scalar): only a plain scalar can be null, a boolean or a
    /// number.
    Scalar(String, bool),
    Seq(Vec<usize>),
    /// Key and value node of each entry, in file order.
    Map(Vec<(usize, usize)>),
}

impl Tree {
    /// The first document of `text`, or `None` when it does not parse
    /// (the strict parser has reported that already).
    ///
    /// JSON is read by [`Tree::parse_json`]: yaml_rust2's scanner holds every
    /// token of a flow collection until the collection closes, which for a
    /// JSON tenant is the whole file, about 20 times its size.
    pub fn parse(text: &str) -> Option<Tree> {
        if text.trim_start().starts_with('{') {
            if let Some(tree) = Tree::parse_json(text) {
                return Some(tree);
            }
        }
        Tree::parse_yaml(text)
    }

    fn parse_yaml(text: &str) -> Option<Tree> {
        let mut builder = Builder::default();
        Parser::new_from_str(text).load(&mut builder, false).ok()?;
        if builder.broken || builder.nodes.is_empty() {
            return None;
        }
        Some(Tree {
            nodes: builder.nodes,
        })
    }

    /// The document's top node.
    pub fn root(&self) -> usize {
        0
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// The text of a scalar node.
    pub fn scalar(&self, index: usize) -> Option<&str> {
        match &self.nodes[index].kind {
            Kind::Scalar(text, _) => Some(text),
            _ => None,
        }
    }

    /// The scalar value of `key` in a mapping node.
    pub fn field(&self, index: usize, key: &str) -> Option<&str> {
        let Kind::Map(entries) = &self.nodes[index].kind else {
            return None;
        };
        entries
            .iter()
            .find(|&&(k, _)| self.scalar(k) == Some(key))
            .and_then(|&(_, v)| self.scalar(v))
    }

    /// The scalars of a sequence under `key` in a mapping node.
    pub fn list_field(&self, index: usize, key: &str) -> Vec<&str> {
        let Kind::Map(entries) = &self.nodes[index].kind else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|&&(k, _)| self.scalar(k) == Some(key))
            .flat_map(|&(_, v)| match &self.nodes[v].kind {
                Kind::Seq(items) => items.iter().filter_map(|&i| self.scalar(i)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Where the value at `path` (`roleAssignments[3].role`) is, or its
    /// nearest parent that the document holds.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut node = self.root();
        let mut found = None;
        for segment in path.split('.') {
            let (key, mut indices) = segment.split_once('[').unwrap_or((segment, ""));
            if !key.is_empty() {
                let Kind::Map(entries) = &self.nodes[node].kind else {
                    break;
                };
                let Some(&(_, value)) = entries.iter().find(|&&(k, _)| self.scalar(k) == Some(key))
                else {
                    break;
                };
                node = value;
                found = Some(self.nodes[node].location);
            }
            while let Some((index, rest)) = indices.split_once(']') {
                let Kind::Seq(items) = &self.nodes[node].kind else {
                    return found;
                };
                let Some(&item) = index.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                    return found;
                };
                node = item;
                found = Some(self.nodes[node].location);
                indices = rest.strip_prefix('[').unwrap_or(rest);
            }
        }
        found
    }

    /// A deserializer of the node at `index`.
    pub fn at(&self, index: usize) -> At<'_> {
        At { tree: self, index }
    }
}

impl Tree {
    /// The tree of a JSON document, as YAML reads JSON: strings are quoted
    /// scalars, numbers, `true`, `false` and `null` plain ones. `None` when
    /// `text` is not plain JSON (YAML flow syntax, comments, a second
    /// document): the YAML reader takes it then.
    fn parse_json(text: &str) -> Option<Tree> {
        let mut reader = JsonReader {
            text,
            position: 0,
            location: Location { line: 1, column: 1 },
            nodes: Vec::new(),
        };
        reader.value(0)?;
        reader.skip_whitespace();
        (reader.position == text.len()).then_some(Tree {
            nodes: reader.nodes,
        })
    }
}

/// The deepest JSON nesting read; serde_yaml refuses deeper documents
/// before this pass runs.
const MAX_JSON_DEPTH: usize = 256;

struct JsonReader<'a> {
    text: &'a str,
    position: usize,
    location: Location,
    nodes: Vec<Node>,
}

impl JsonReader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    /// Moves past one byte, counting lines and (UTF-8) characters.
    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.position += 1;
        if byte == b'\n' {
            self.location.line += 1;
            self.location.column = 1;
        } else if byte & 0xC0 != 0x80 {
            self.location.column += 1;
        }
        Some(byte)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn add(&mut self, kind: Kind, location: Location) -> usize {
        self.nodes.push(Node { kind, location });
        self.nodes.len() - 1
    }

    fn value(&mut self, depth: usize) -> Option<usize> {
        if depth > MAX_JSON_DEPTH {
            return None;
        }
        self.skip_whitespace();
        let location = self.location;
        match self.peek()? {
            b'{' => {
                self.bump();
                let index = self.add(Kind::Map(Vec::new()), location);
                let mut entries = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b'}') {
                    self.bump();
                } else {
                    loop {
                        self.skip_whitespace();
                        if self.peek() != Some(b'"') {
                            return None;
                        }
                        let key = self.value(depth + 1)?;
                        self.skip_whitespace();
                        if self.bump() != Some(b':') {
                            return None;
                        }
                        entries.push((key, self.value(depth + 1)?));
                        self.skip_whitespace();
                        match self.bump()? {
                            b',' => {}
                            b'}' => break,
                            _ => return None,
                        }
                    }
                }
                self.nodes[index].kind = Kind::Map(entries);
                Some(index)
            }
            b'[' => {
                self.bump();
                let index = self.add(Kind::Seq(Vec::new()), location);
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b']') {
                    self.bump();
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.skip_whitespace();
                        match self.bump()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
                self.nodes[index].kind = Kind::Seq(items);
                Some(index)
            }
            b'"' => {
                let start = self.position;
                self.bump();
                let mut escaped = false;
                loop {
                    match self.bump()? {
                        b'"' => break,
                        b'\\' => {
                            escaped = true;
                            self.bump()?;
                        }
                        _ => {}
                    }
                }
                let literal = &self.text[start..self.position];
                let text = if escaped {
                    serde_json::from_str::<String>(literal).ok()?
                } else {
                    literal[1..literal.len() - 1].to_owned()
                };
                Some(self.add(Kind::Scalar(text, false), location))
            }
            _ => {
                let start = self.position;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.')
                ) {
                    self.bump();
                }
                let word = &self.text[start..self.position];
                let number =
                    word.parse::<f64>().is_ok() && word.bytes().any(|b| b.is_ascii_digit());
                if !(matches!(word, "true" | "false" | "null") || number) {
                    return None;
                }
                Some(self.add(Kind::Scalar(word.to_owned(), true), location))
            }
        }
    }
}

/// Builds the tree from the parser's events.
#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    /// Open sequences and mappings, with a mapping's key awaiting its value.
    open: Vec<(usize, Option<usize>)>,
    /// Node of each anchor, recorded once the anchored node is complete, so
    /// an alias can never make the tree a cycle.
    anchors: HashMap<usize, usize>,
    /// Open containers' anchors, recorded when they close.
    pending_anchors: Vec<usize>,
    /// An alias to an unknown anchor: the tree is not the document.
    broken: bool,
}

impl Builder {
    fn add(&mut self, kind: Kind, mark: Marker) -> usize {
        let index = self.nodes.len();
        self.nodes.push(Node {
            kind,
            location: Location {
                line: mark.line(),
                column: mark.col() + 1,
            },
        });
        self.attach(index);
        index
    }

    /// Makes `child` the next item (or key, or value) of the open container.
    fn attach(&mut self, child: usize) {
        let Some((parent, key)) = self.open.last_mut() else {
            return;
        };
        match &mut self.nodes[*parent].kind {
            Kind::Seq(items) => items.push(child),
            Kind::Map(entries) => match key.take() {
                None => *key = Some(child),
                Some(k) => entries.push((k, child)),
            },
            Kind::Scalar(..) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let index = self.add(Kind::Scalar(text, style == TScalarStyle::Plain), mark);
                if anchor != 0 {
                    self.anchors.insert(anchor, index);
                }
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                Some(&index) => self.attach(index),
                None => self.broken = true,
            },
            Event::SequenceStart(anchor, _) => {
                let index = self.add(Kind::Seq(Vec::new()), mark);
                self.open.push((index, None));
                self.pending_anchors.push(anchor);
            }
            Event::MappingStart(anchor, _) => {
                let index = self.add(Kind::Map(Vec::new()), mark);
                self.open.push((index, None));
                self.pending_anchors.push(anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let closed = self.open.pop().map(|(index, _)| index);
                let anchor = self.pending_anchors.pop().unwrap_or(0);
                if let (Some(index), true) = (closed, anchor != 0) {
                    self.anchors.insert(anchor, index);
                }
            }
            _ => {}
        }
    }
}

/// A deserialization error with where it happened: the path below the node
/// deserialized, and the position of the innermost node involved.
#[derive(Debug)]
pub struct TreeError {
    pub message: String,
    pub location: Option<Location>,
    /// Path segments, innermost first (they are added as the error rises).
    segments: Vec<Segment>,
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl TreeError {
    /// The error as seen one level up: under `segment`, at `location`
    /// unless an inner node's position is known.
    fn rise(mut self, segment: Option<Segment>, location: Location) -> TreeError {
        self.segments.extend(segment);
        self.location.get_or_insert(location);
        self
    }

    /// The full path of the error, below `base`, in the validator's style
    /// (`roleDefinitions[3].permissions[0]`).
    pub fn path(&self, base: &str) -> String {
        let mut path = base.to_owned();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Segment::Index(index) => {
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        path
    }
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TreeError {}

impl de::Error for TreeError {
    fn custom<T: fmt::Display>(message: T) -> TreeError {
        TreeError {
            message: message.to_string(),
            location: None,
            segments: Vec::new(),
        }
    }
}

type Result<T> = std::result::Result<T, TreeError>;

/// A plain scalar as YAML reads it untagged.
enum Resolved<'a> {
    Null,
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    Str(&'a str),
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// An integer as YAML 1.2 writes it: an optional sign, then decimal
/// (without leading zeros), `0x`, `0o` or `0b` digits.
fn parse_int(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, radix) = if let Some(rest) = unsigned.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = unsigned.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = unsigned.strip_prefix("0b") {
        (rest, 2)
    } else {
        (unsigned, 10)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    if radix == 10 && digits_but_not_number(digits) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Digits with a leading zero: a string in YAML 1.2, not a number.
fn digits_but_not_number(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    digits.len() > 1 && digits.starts_with('0') && digits[1..].bytes().all(|b| b.is_ascii_digit())
}

fn parse_float(text: &str) -> Option<f64> {
    if digits_but_not_number(text) {
        return None;
    }
    match text.trim_start_matches('+') {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if numeric && text.bytes().any(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn resolve(text: &str) -> Resolved<'_> {
    if is_null(text) {
        return Resolved::Null;
    }
    if let Some(b) = parse_bool(text) {
        return Resolved::Bool(b);
    }
    if let Some(int) = parse_int(text) {
        if let Ok(n) = u64::try_from(int) {
            return Resolved::Unsigned(n);
        }
        if let Ok(n) = i64::try_from(int) {
            return Resolved::Signed(n);
        }
    }
    match parse_float(text) {
        Some(f) => Resolved::Float(f),
        None => Resolved::Str(text),
    }
}

/// The deserializer of one node.
#[derive(Clone, Copy)]
pub struct At<'t> {
    tree: &'t Tree,
    index: usize,
}

impl<'t> At<'t> {
    fn kind(&self) -> &'t Kind {
        &self.tree.nodes[self.index].kind
    }

    /// The scalar's text when it is written plain.
    fn plain(&self) -> Option<&'t str> {
        match self.kind() {
            Kind::Scalar(text, true) => Some(text),
            _ => None,
        }
    }

    fn unexpected(&self) -> Unexpected<'t> {
        match self.kind() {
            Kind::Scalar(text, false) => Unexpected::Str(text),
            Kind::Scalar(text, true) => match resolve(text) {
                Resolved::Null => Unexpected::Unit,
                Resolved::Bool(b) => Unexpected::Bool(b),
                Resolved::Signed(n) => Unexpected::Signed(n),
                Resolved::Unsigned(n) => Unexpected::Unsigned(n),
                Resolved::Float(f) => Unexpected::Float(f),
                Resolved::Str(s) => Unexpected::Str(s),
            },
            Kind::Seq(_) => Unexpected::Seq,
            Kind::Map(_) => Unexpected::Map,
        }
    }

    fn invalid_type<V: Visitor<'t>>(&self, visitor: &V) -> TreeError {
        de::Error::invalid_type(self.unexpected(), visitor)
    }

    /// An empty plain scalar (`key:` with nothing after it), which serde_yaml
    /// reads as an empty sequence or mapping.
    fn is_empty_plain(&self) -> bool {
        self.plain() == Some("")
    }

    fn items(&self) -> Items<'t> {
        let items: &'t [usize] = match self.kind() {
            Kind::Seq(items) => items,
            _ => &[],
        };
        Items {
            tree: self.tree,
            items: items.iter().enumerate(),
        }
    }

    fn entries(&self) -> Entries<'t, std::iter::Copied<std::slice::Iter<'t, (usize, usize)>>> {
        let entries: &'t [(usize, usize)] = match self.kind() {
            Kind::Map(entries) => entries,
            _ => &[],
        };
        Entries::new(self.tree, entries.iter().copied())
    }
}

/// The mapping of a single entry of a mapping node, for reading one
/// top-level key of a snapshot on its own.
pub struct OneEntry<'t> {
    pub tree: &'t Tree,
    pub key: usize,
    pub value: usize,
}

impl<'t> de::Deserializer<'t> for OneEntry<'t> {
    type Error = TreeError;

    fn deserialize_any<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_map(Entries::new(
            self.tree,
            std::iter::once((self.key, self.value)),
        ))
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'t>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

macro_rules! integer {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
            match self
                .plain()
                .and_then(parse_int)
                .and_then(|n| <$ty>::try_from(n).ok())
            {
                Some(n) => visitor.$visit(n),
                None => Err(self.invalid_type(&visitor)),
            }
        }
    };
}

impl<'t> de::Deserializer<'t> for At<'t> {
    type Error = TreeError;

    fn deserialize_any<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.kind() {
            Kind::Scalar(text, false) => visitor.visit_borrowed_str(text),
            Kind::Scalar(text, true) => match resolve(text) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Signed(n) => visitor.visit_i64(n),
                Resolved::Unsigned(n) => visitor.visit_u64(n),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str(s) => visitor.visit_borrowed_str(s),
            },
            Kind::Seq(_) => visitor.visit_seq(self.items()),
            Kind::Map(_) => visitor.visit_map(self.entries()),
        }
    }

    fn deserialize_bool<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.plain().and_then(parse_bool) {
            Some(b) => visitor.visit_bool(b),
            None => Err(self.invalid_type(&visitor)),
        }
    }

    integer!(deserialize_i8, visit_i8, i8);
    integer!(deserialize_i16, visit_i16, i16);
    integer!(deserialize_i32, visit_i32, i32);
    integer!(deserialize_i64, visit_i64, i64);
    integer!(deserialize_u8, visit_u8, u8);
    integer!(deserialize_u16, visit_u16, u16);
    integer!(deserialize_u32, visit_u32, u32);
    integer!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.plain().and_then(parse_float) {
            Some(f) => visitor.visit_f64(f),
            None => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.kind() {
            Kind::Scalar(text, _) => visitor.visit_borrowed_str(text),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'t>>(self, _visitor: V) -> Result<V::Value> {
        Err(de::Error::custom("bytes are not supported in a snapshot"))
    }

    fn deserialize_byte_buf<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.plain() {
            Some(text) if is_null(text) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match (self.kind(), self.plain()) {
            (_, Some(text)) if is_null(text) => visitor.visit_unit(),
            (Kind::Scalar(text, _), _) => {
                Err(de::Error::invalid_value(Unexpected::Str(text), &"null"))
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'t>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'t>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.kind() {
            Kind::Seq(_) => visitor.visit_seq(self.items()),
            _ if self.is_empty_plain() => visitor.visit_seq(self.items()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'t>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'t>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        match self.kind() {
            Kind::Map(_) => visitor.visit_map(self.entries()),
            _ if self.is_empty_plain() => visitor.visit_map(self.entries()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'t>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'t>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.kind() {
            Kind::Scalar(text, _) => {
                visitor.visit_enum(de::value::BorrowedStrDeserializer::<TreeError>::new(text))
            }
            _ => Err(de::Error::invalid_type(
                self.unexpected(),
                &"a YAML tag starting with '!'",
            )),
        }
    }

    fn deserialize_identifier<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
}

/// The items of a sequence node.
struct Items<'t> {
    tree: &'t Tree,
    items: std::iter::Enumerate<std::slice::Iter<'t, usize>>,
}

impl<'t> de::SeqAccess<'t> for Items<'t> {
    type Error = TreeError;

    fn next_element_seed<T: DeserializeSeed<'t>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let Some((position, &index)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(self.tree.at(index))
            .map(Some)
            .map_err(|e| {
                e.rise(
                    Some(Segment::Index(position)),
                    self.tree.nodes[index].location,
                )
            })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of a mapping node. An error reading a key (an unknown
/// field) is at the key, under the mapping's path; an error reading a
/// value is under the key's name.
struct Entries<'t, I> {
    tree: &'t Tree,
    entries: I,
    value: Option<(usize, usize)>,
}

impl<'t, I: Iterator<Item = (usize, usize)>> Entries<'t, I> {
    fn new(tree: &'t Tree, entries: I) -> Self {
        Entries {
            tree,
            entries,
            value: None,
        }
    }
}

impl<'t, I: Iterator<Item = (usize, usize)>> de::MapAccess<'t> for Entries<'t, I> {
    type Error = TreeError;

    fn next_key_seed<K: DeserializeSeed<'t>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(self.tree.at(key))
            .map(Some)
            .map_err(|e| e.rise(None, self.tree.nodes[key].location))
    }

    fn next_value_seed<V: DeserializeSeed<'t>>(&mut self, seed: V) -> Result<V::Value> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("a mapping value without its key"));
        };
        let name = self.tree.scalar(key).unwrap_or("?").to_owned();
        seed.deserialize(self.tree.at(value))
            .map_err(|e| e.rise(Some(Segment::Key(name)), self.tree.nodes[value].location))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// serde_yaml's message without the path before it and the position
    /// after it, which the tree's errors carry apart.
    fn bare(error: serde_yaml::Error) -> String {
        let text = error.to_string();
        let text = text.split(" at line ").next().unwrap_or_default();
        match text.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => rest.to_owned(),
            _ => text.to_owned(),
        }
    }

    /// What serde_yaml reads from `text`, and what the tree reads, as
    /// debug text or error message.
    fn both<T: for<'de> Deserialize<'de> + fmt::Debug>(
        text: &str,
    ) -> (
        std::result::Result<String, String>,
        std::result::Result<String, String>,
    ) {
        let strict = serde_yaml::from_str::<T>(text)
            .map(|v| format!("{v:?}"))
            .map_err(bare);
        let tree = Tree::parse(text).unwrap_or_else(|| panic!("no tree for {text:?}"));
        let tolerant = T::deserialize(tree.at(tree.root()))
            .map(|v| format!("{v:?}"))
            .map_err(|e| e.message);
        (strict, tolerant)
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        flag: bool,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        map: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        kind: Option<crate::model::PrincipalType>,
    }

    #[test]
    fn scalars_read_as_serde_yaml_reads_them() {
        for text in [
            "text: 7",
            "text: true",
            "text: 0x10",
            "text: ~",
            "text: ''",
            "text:",
            "text: \"x\"",
            "flag: true",
            "flag: 'true'",
            "flag: yes",
            "count: 0x10",
            "count: '5'",
            "count: -1",
            "count: 1_000",
            "count: 012",
            "list:",
            "list: [1, ~, yes, 1.5]",
            "list: x",
            "map: {1: 2, true: ~}",
            "map: [a]",
            "kind: User",
            "kind: Usr",
            "kind: [User]",
            "text: [a]",
            "colour: red",
            "text: &a x\nlist: [*a]",
        ] {
            let (strict, tolerant) = both::<Sample>(text);
            assert_eq!(tolerant, strict, "{text:?}");
        }
    }

    #[test]
    fn errors_carry_their_path_and_the_position_of_the_node_at_fault() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Sample>,
        }
        let tree =
            Tree::parse("items:\n  - text: a\n  - flag: maybe\n").unwrap_or_else(|| panic!());
        let error = Outer::deserialize(tree.at(tree.root()))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(error.path("doc"), "doc.items[1].flag");
        assert_eq!(
            error.location,
            Some(Location {
                line: 3,
                column: 11
            })
        );

        let tree =
            Tree::parse("items:\n  - text: a\n    colour: red\n").unwrap_or_else(|| panic!());
        let error = Outer::deserialize(tree.at(tree.root()))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            error.path(""),
            "items[0]",
            "an unknown key is the mapping's problem"
        );
        assert_eq!(error.location, Some(Location { line: 3, column: 5 }));
    }

    #[test]
    fn a_path_is_located_at_its_node_or_nearest_parent() {
        let text = "roleAssignments:\n  - id: a\n  - id: b\n    scopes: [/x, /y]\n";
        let tree = Tree::parse(text).unwrap_or_else(|| panic!());
        let line_col = |path: &str| tree.locate(path).map(|l| (l.line, l.column));
        assert_eq!(line_col("roleAssignments[1].scopes[1]"), Some((4, 18)));
        assert_eq!(line_col("roleAssignments[1].id"), Some((3, 9)));
        assert_eq!(
            line_col("roleAssignments[1].nothing"),
            line_col("roleAssignments[1]")
        );
        assert_eq!(
            line_col("roleAssignments[7].id"),
            line_col("roleAssignments")
        );
        assert_eq!(line_col("principals[0]"), None);
        assert_eq!(line_col(""), None);
        // The validator's paths and SourceMap's agree.
        let map = crate::snapshot::locate::SourceMap::build(text);
        for path in [
            "roleAssignments",
            "roleAssignments[1]",
            "roleAssignments[0].id",
            "roleAssignments[1].scopes[0]",
        ] {
            assert_eq!(tree.locate(path), map.get(path), "{path}");
        }
    }

    #[test]
    fn json_reads_as_yaml_reads_it() {
        let json = "{\"a\": [1, -2.5e3, true, null, \"x\\\"y\\u00e9\", {}, []],\n \"\u{e9}t\u{e9}\": {\"b\": \"\u{1F600}\", \"c\": {\"d\": [\"e\"]}}}";
        let from_json = Tree::parse_json(json).unwrap_or_else(|| panic!("not JSON"));
        let from_yaml = Tree::parse_yaml(json).unwrap_or_else(|| panic!("not YAML"));
        assert_eq!(render(&from_json, 0), render(&from_yaml, 0));
        for path in [
            "a",
            "a[4]",
            "a[5]",
            "\u{e9}t\u{e9}.b",
            "\u{e9}t\u{e9}.c.d[0]",
        ] {
            assert_eq!(from_json.locate(path), from_yaml.locate(path), "{path}");
        }
        for not_json in [
            "{a: 1}",
            "{\"a\": 1} # note",
            "{\"a\": yes}",
            "{\"a\": 1}\n---\n{}",
            "{\"a\": [1,]}",
        ] {
            assert!(Tree::parse_json(not_json).is_none(), "{not_json}");
        }
    }

    /// A node and everything below it, as text.
    fn render(tree: &Tree, index: usize) -> String {
        match &tree.node(index).kind {
            Kind::Scalar(text, plain) => format!("{text:?}{}", if *plain { "" } else { "q" }),
            Kind::Seq(items) => {
                let items: Vec<String> = items.iter().map(|&i| render(tree, i)).collect();
                format!("[{}]", items.join(","))
            }
            Kind::Map(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|&(k, v)| format!("{}:{}", render(tree, k), render(tree, v)))
                    .collect();
                format!("{{{}}}", entries.join(","))
            }
        }
    }

    #[test]
    fn an_alias_to_an_unfinished_anchor_gives_no_tree() {
        assert!(Tree::parse("a: &x [*x]").is_none());
        assert!(Tree::parse("a: [1, 2").is_none());
        let tree = Tree::parse("a: &x [1]\nb: *x\n").unwrap_or_else(|| panic!());
        assert_eq!(tree.list_field(tree.root(), "b"), ["1"]);
    }
}
