//! The small EDN subset read by the Jepsen ([`Format::JepsenEtcd`]) and
//! Porcupine ([`Format::PorcupineKv`]) formats, and the Jepsen conventions
//! both share for turning a log line into an [`Event`].
//!
//! [`Format::JepsenEtcd`]: super::Format::JepsenEtcd
//! [`Format::PorcupineKv`]: super::Format::PorcupineKv

use super::{Event, EventKind, Function, ParseErrorKind, Value};

/// A value of the small EDN subset the Jepsen and Porcupine logs use.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    Keyword(String),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
}

struct EdnReader<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> EdnReader<'a> {
    fn new(s: &'a str) -> Self {
        EdnReader { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        self.pos += rest.len() - trimmed.len();
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.s.len()
    }

    fn err<T>(&self, what: &str) -> Result<T, ParseErrorKind> {
        Err(ParseErrorKind::Syntax(format!(
            "{what} at column {}",
            self.pos + 1
        )))
    }

    fn value(&mut self) -> Result<Edn, ParseErrorKind> {
        self.skip_ws();
        let rest = self.rest();
        let Some(c) = rest.chars().next() else {
            return self.err("unexpected end of line");
        };
        match c {
            '"' => self.string(),
            '[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.rest().starts_with(']') {
                        self.pos += 1;
                        return Ok(Edn::Vector(items));
                    }
                    items.push(self.value()?);
                }
            }
            '{' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.rest().starts_with('}') {
                        self.pos += 1;
                        return Ok(Edn::Map(items));
                    }
                    let k = self.value()?;
                    self.skip_ws();
                    if self.rest().starts_with('}') {
                        return self.err("map with an odd number of forms");
                    }
                    let v = self.value()?;
                    items.push((k, v));
                }
            }
            ']' | '}' => self.err(&format!("unexpected {c:?}")),
            _ => {
                let end = rest
                    .find(|c: char| {
                        c.is_whitespace() || matches!(c, ',' | ']' | '}' | '[' | '{' | '"')
                    })
                    .unwrap_or(rest.len());
                let token = &rest[..end];
                let value = if let Some(kw) = token.strip_prefix(':') {
                    if kw.is_empty() {
                        return self.err("empty keyword");
                    }
                    Edn::Keyword(kw.to_string())
                } else if token == "nil" {
                    Edn::Nil
                } else if token == "true" || token == "false" {
                    Edn::Bool(token == "true")
                } else if token.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
                    match token.parse::<i64>() {
                        Ok(i) => Edn::Int(i),
                        Err(_) => return self.err(&format!("bad integer {token:?}")),
                    }
                } else {
                    return self.err(&format!("unexpected token {token:?}"));
                };
                self.pos += end;
                Ok(value)
            }
        }
    }

    fn string(&mut self) -> Result<Edn, ParseErrorKind> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Edn::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, c @ ('"' | '\\'))) => out.push(c),
                    Some((_, c)) => {
                        self.pos += i;
                        return self.err(&format!("unknown escape \\{c}"));
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.pos = start;
        self.err("unterminated string")
    }
}

/// Reads one whole EDN value from `text` (nothing may follow it).
pub(super) fn read_edn(text: &str) -> Result<Edn, ParseErrorKind> {
    let mut r = EdnReader::new(text);
    let v = r.value()?;
    if !r.at_end() {
        return r.err("trailing characters");
    }
    Ok(v)
}

/// Converts an EDN value of a log to an event [`Value`]; keywords (only
/// meaningful on `info`/`fail` lines) become `None`.
fn edn_value(v: &Edn) -> Result<Option<Value>, String> {
    fn scalar(v: &Edn) -> Option<Option<String>> {
        match v {
            Edn::Nil => Some(None),
            Edn::Int(i) => Some(Some(i.to_string())),
            Edn::Str(s) => Some(Some(s.clone())),
            _ => None,
        }
    }
    Ok(Some(match v {
        Edn::Nil => Value::Nil,
        Edn::Int(i) => Value::Int(*i),
        Edn::Str(s) => Value::Str(s.clone()),
        Edn::Keyword(_) => return Ok(None),
        Edn::Vector(items) if items.len() == 2 => match (scalar(&items[0]), scalar(&items[1])) {
            (Some(a), Some(b)) => Value::Pair(a, b),
            _ => {
                return Err(format!(
                    "[FROM TO] must hold nil, integers or strings, not {v:?}"
                ))
            }
        },
        v => return Err(format!("unsupported value {v:?}")),
    }))
}

/// Builds an event from log fields, applying the Jepsen conventions shared by
/// both EDN-ish formats.
pub(super) fn edn_event(
    process: u64,
    kind: EventKind,
    f: Function,
    key: String,
    value: &Edn,
    time: u64,
) -> Result<Event, ParseErrorKind> {
    let value = edn_value(value).map_err(|reason| ParseErrorKind::InvalidField {
        field: "value",
        reason,
    })?;
    let mut event = Event {
        process,
        kind,
        f,
        key,
        value: value.clone().unwrap_or(Value::Nil),
        swapped: None,
        time,
    };
    match (kind, f, value) {
        (EventKind::Invoke | EventKind::Ok, _, None) => {
            return Err(ParseErrorKind::InvalidField {
                field: "value",
                reason: "a keyword is only allowed on :info and :fail lines".into(),
            })
        }
        (EventKind::Ok, Function::Cas, _) => event.swapped = Some(true),
        // Jepsen: a cas that ran and found another value "fails".
        (EventKind::Fail, Function::Cas, Some(Value::Pair(..))) => {
            event.kind = EventKind::Ok;
            event.swapped = Some(false);
        }
        // Jepsen: a failed read (e.g. timed out) tells nothing.
        (EventKind::Fail, Function::Read, _) => event.kind = EventKind::Info,
        _ => {}
    }
    Ok(event)
}
