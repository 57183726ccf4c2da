//! A recursive-descent parser for the Azure ABAC condition language, 2.0.
//!
//! Grammar (whitespace between tokens is free):
//!
//! ```text
//! expr       := term ( (AND | OR | && | ||) term )*      -- at most two terms
//! term       := (NOT | !) term | '(' expr ')' | matcher | comparison
//! matcher    := (ActionMatches | SubOperationMatches) '{' 'pattern' '}'
//! comparison := operand [quantifier ':'] operator operand
//! operand    := '@' Source '[' name ']' | 'string' | bare | '{' value (',' value)* '}'
//! ```
//!
//! As Azure does, three or more expressions joined without parentheses
//! (`a AND b OR c`, `a AND b AND c`) are rejected.

use super::{Attribute, AttributeSource, Comparison, Expr, Operand, Operator, Quantifier};
use crate::model::ActionPattern;

/// Why a condition did not parse, with the 1-based column it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

/// The longest condition accepted, in bytes.
pub const MAX_CONDITION_LEN: usize = 8192;
/// The deepest nesting accepted, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > MAX_CONDITION_LEN {
        return Err(ParseError {
            column: 1,
            message: format!(
                "the condition is {} bytes long; the limit is {MAX_CONDITION_LEN}",
                text.len()
            ),
        });
    }
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("the condition is empty"));
    }
    let expr = p.expr()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(format!(
            "unexpected '{}' after the end of the condition",
            p.rest_preview()
        )));
    }
    Ok(expr)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Logic {
    And,
    Or,
}

impl<'a> Parser<'a> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            column: self.text[..self.pos].chars().count() + 1,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn rest_preview(&self) -> String {
        self.rest().chars().take(20).collect()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(format!("expected '{c}' {what}")))
        }
    }

    /// A bare word: letters, digits and `_ . - +`.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+')))
            .unwrap_or(self.rest().len());
        let w = &self.rest()[..len];
        self.pos += len;
        w
    }

    fn peek_word(&mut self) -> &'a str {
        let save = self.pos;
        let w = self.word();
        self.pos = save;
        w
    }

    fn logic(&mut self) -> Option<Logic> {
        self.skip_ws();
        let rest = self.rest();
        for (token, logic) in [("&&", Logic::And), ("||", Logic::Or)] {
            if rest.starts_with(token) {
                self.pos += 2;
                return Some(logic);
            }
        }
        let w = self.peek_word();
        let logic = if w.eq_ignore_ascii_case("AND") {
            Logic::And
        } else if w.eq_ignore_ascii_case("OR") {
            Logic::Or
        } else {
            return None;
        };
        self.word();
        Some(logic)
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let first = self.term()?;
        let result = match self.logic() {
            None => Ok(first),
            Some(logic) => {
                let second = self.term()?;
                let at = self.pos;
                if self.logic().is_some() {
                    self.pos = at;
                    self.skip_ws();
                    return Err(self.error(
                        "three or more expressions joined without parentheses; add parentheses to say which are evaluated together",
                    ));
                }
                Ok(match logic {
                    Logic::And => Expr::And(Box::new(first), Box::new(second)),
                    Logic::Or => Expr::Or(Box::new(first), Box::new(second)),
                })
            }
        };
        self.depth -= 1;
        result
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.at_end() {
            return Err(self.error("expected an expression, found the end of the condition"));
        }
        if self.eat('!') {
            return self.negated();
        }
        if self.peek_word().eq_ignore_ascii_case("NOT") {
            self.word();
            return self.negated();
        }
        if self.eat('(') {
            let inner = self.expr()?;
            self.expect(')', "to close '('")?;
            return Ok(inner);
        }
        let w = self.peek_word();
        if w.eq_ignore_ascii_case("ActionMatches") || w.eq_ignore_ascii_case("SubOperationMatches")
        {
            self.word();
            self.expect('{', &format!("after {w}"))?;
            self.skip_ws();
            let pattern = self.string()?;
            self.expect('}', &format!("to close {w}{{…}}"))?;
            return Ok(if w.eq_ignore_ascii_case("ActionMatches") {
                let compiled = ActionPattern::parse(&pattern)
                    .map_err(|e| self.error(format!("ActionMatches pattern '{pattern}' {e}")))?;
                Expr::ActionMatches(compiled)
            } else {
                Expr::SubOperationMatches(pattern)
            });
        }
        self.comparison()
    }

    fn negated(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let inner = self.term()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.operand()?;
        self.skip_ws();
        let start = self.pos;
        let w = self.word();
        if w.is_empty() {
            return Err(self.error(format!(
                "expected an operator such as StringEquals, found '{}'",
                self.rest_preview()
            )));
        }
        let (quantifier, op_name) = match quantifier(w) {
            Some(q) => {
                self.expect(':', &format!("after {w}"))?;
                (Some(q), self.word())
            }
            None => (None, w),
        };
        let operator = Operator::from_name(op_name).ok_or_else(|| {
            let mut e = self.error(format!("unknown operator '{op_name}'"));
            e.column = self.text[..start].chars().count() + 1;
            e
        })?;
        let right = self.operand()?;
        if quantifier.is_none() && matches!(right, Operand::Set(_)) {
            return Err(self.error(format!("{op_name} compares single values; use a quantifier such as ForAnyOfAnyValues:{op_name} with a set")));
        }
        Ok(Expr::Compare(Comparison {
            left,
            quantifier,
            operator,
            right,
        }))
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some('@') => {
                self.pos += 1;
                let source_start = self.pos;
                let source = match self.word() {
                    s if s.eq_ignore_ascii_case("Request") => AttributeSource::Request,
                    s if s.eq_ignore_ascii_case("Resource") => AttributeSource::Resource,
                    s if s.eq_ignore_ascii_case("Principal") => AttributeSource::Principal,
                    s if s.eq_ignore_ascii_case("Environment") => AttributeSource::Environment,
                    other => {
                        self.pos = source_start;
                        return Err(self.error(format!("unknown attribute source '@{other}' (use @Request, @Resource, @Principal or @Environment)")));
                    }
                };
                if self.peek() != Some('[') {
                    return Err(self.error("expected '[' after the attribute source"));
                }
                self.pos += 1;
                let end = self
                    .rest()
                    .find(']')
                    .ok_or_else(|| self.error("the attribute name has no closing ']'"))?;
                let name = self.rest()[..end].trim().to_owned();
                if name.is_empty() {
                    return Err(self.error("the attribute name is empty"));
                }
                self.pos += end + 1;
                Ok(Operand::Attribute(Attribute { source, name }))
            }
            Some('{') => {
                self.pos += 1;
                let mut values = Vec::new();
                loop {
                    values.push(self.value()?);
                    if self.eat(',') {
                        continue;
                    }
                    self.expect('}', "to close the set")?;
                    break;
                }
                Ok(Operand::Set(values))
            }
            Some(_) => Ok(Operand::Value(self.value()?)),
            None => Err(self.error("expected a value, found the end of the condition")),
        }
    }

    fn value(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        if self.peek() == Some('\'') {
            return self.string();
        }
        let w = self.word();
        if w.is_empty() {
            return Err(self.error(format!("expected a value, found '{}'", self.rest_preview())));
        }
        Ok(w.to_owned())
    }

    /// A single-quoted string.
    fn string(&mut self) -> Result<String, ParseError> {
        if self.peek() != Some('\'') {
            return Err(self.error("expected a quoted string"));
        }
        self.pos += 1;
        let end = self
            .rest()
            .find('\'')
            .ok_or_else(|| self.error("the string has no closing quote"))?;
        let s = self.rest()[..end].to_owned();
        self.pos += end + 1;
        Ok(s)
    }
}

fn quantifier(word: &str) -> Option<Quantifier> {
    [
        ("ForAnyOfAnyValues", Quantifier::AnyOfAny),
        ("ForAllOfAnyValues", Quantifier::AllOfAny),
        ("ForAnyOfAllValues", Quantifier::AnyOfAll),
        ("ForAllOfAllValues", Quantifier::AllOfAll),
    ]
    .into_iter()
    .find(|(name, _)| word.eq_ignore_ascii_case(name))
    .map(|(_, q)| q)
}
