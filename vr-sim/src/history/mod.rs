//! Histories of a key-value service: what concurrent clients asked and what
//! they were told, read from (and written to) text formats.
//!
//! A history is a sequence of [`Event`]s in real-time order. Each client
//! (a *process*) invokes one operation at a time on one key and later sees its
//! completion:
//!
//! * `ok` — the operation took effect exactly once, at some instant between
//!   its invocation and its completion, and returned the given output;
//! * `fail` — the operation definitely did not take effect;
//! * `info` — unknown: the operation may or may not take effect, at any time
//!   after its invocation (its end is open) and its output is unconstrained.
//!   An invocation with no completion before the end of the history means the
//!   same. After an `info` the process may invoke its next operation.
//!
//! [`History::from_events`] (and [`parse`], which calls it) pairs invocations
//! with completions into [`Operation`]s and rejects histories that do not make
//! sense (a completion without an invocation, a second invocation while one is
//! outstanding, time going backwards, …) with a [`ParseError`] that names the
//! line.
//!
//! Three text [`Format`]s are read:
//!
//! * [`Format::Jsonl`] — the simulator's own format, specified below, written by
//!   [`write_jsonl`];
//! * [`Format::JepsenEtcd`] — Jepsen logs of one compare-and-set register
//!   (the `jepsen-etcd` test data of Porcupine / `ahorn/linearizability-checker`);
//! * [`Format::PorcupineKv`] — Porcupine's EDN-like key-value logs.
//!
//! # The `jsonl` format
//!
//! UTF-8 text, one JSON object per line (`\n`-separated; a trailing `\r` and
//! lines that are empty or only whitespace are ignored). Line numbers in errors
//! count every line, from 1. Each object has these fields:
//!
//! | field     | JSON type                                          | meaning |
//! |-----------|----------------------------------------------------|---------|
//! | `process` | integer in `0..=2^64-1`                            | client id |
//! | `type`    | `"invoke"`, `"ok"`, `"fail"` or `"info"`           | event kind (see above) |
//! | `f`       | `"read"`, `"write"`, `"incr"`, `"append"`, `"cas"` | the operation |
//! | `key`     | string                                             | the key; on every line, the same on an invocation and its completion |
//! | `value`   | see the table below                                | may be omitted where it is `null` |
//! | `time`    | integer in `0..=2^64-1`                            | simulated time in ns; never smaller than on the previous line |
//! | `swapped` | `true` or `false`, optional                        | only on `ok` lines of `cas` |
//!
//! Other fields are ignored. `value` by operation and event kind:
//!
//! | `f`      | `invoke`                            | `ok` |
//! |----------|-------------------------------------|------|
//! | `read`   | `null`                              | the value read: a string, or `null` if the key has no value (nil) |
//! | `write`  | the string written                  | the string written (not checked) |
//! | `append` | the string appended (nil counts as `""`) | the string appended (not checked) |
//! | `incr`   | the delta, a JSON integer (`i64`)   | the new value, a JSON integer (`i64`); nil and `""` count as 0 |
//! | `cas`    | `[from, to]`, each a string or `null` | `[from, to]` (not checked) and `swapped`: `true` if the key held `from` and now holds `to` (the default when `swapped` is absent), `false` if it did not hold `from` and nothing changed |
//!
//! On `fail` and `info` lines `value` is not checked ([`write_jsonl`] writes
//! the invocation's value there). Wherever a string value is expected (the
//! value read, written or appended, and `from`/`to` of `cas`) a JSON integer
//! is also accepted and stands for its decimal rendering, so a read that
//! returns `5` sees the same value as one that returns `"5"`.
//!
//! `fail` always means "definitely not applied": a `cas` that ran and found
//! another value is an `ok` line with `"swapped": false`.
//!
//! Lines are in real-time order: operation A precedes operation B when A's
//! completion line comes before B's invocation line (the `time` fields are
//! informational and may be equal). A process has at most one operation
//! outstanding; it may invoke again after an `ok`, `fail` or `info`. Keys start
//! with no value (nil).
//!
//! Example:
//!
//! ```text
//! {"process":1,"type":"invoke","f":"write","key":"x","value":"a","time":10}
//! {"process":2,"type":"invoke","f":"cas","key":"x","value":["a","b"],"time":12}
//! {"process":1,"type":"ok","f":"write","key":"x","value":"a","time":15}
//! {"process":2,"type":"ok","f":"cas","key":"x","value":["a","b"],"swapped":true,"time":20}
//! {"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":21}
//! {"process":1,"type":"ok","f":"read","key":"x","value":"b","time":30}
//! {"process":3,"type":"invoke","f":"incr","key":"n","value":2,"time":31}
//! {"process":3,"type":"info","f":"incr","key":"n","value":2,"time":90}
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

mod edn;
mod jepsen_etcd;
mod jsonl;
mod porcupine_kv;

use jepsen_etcd::parse_jepsen_line;
use jsonl::parse_jsonl_line;
pub use jsonl::write_jsonl;
use porcupine_kv::parse_kv_line;

/// The key used for the single register of [`Format::JepsenEtcd`] histories.
pub const JEPSEN_KEY: &str = "register";

/// What an [`Event`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A process invoked an operation.
    Invoke,
    /// The operation took effect and returned (the event's value is its output).
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// Unknown: the operation may or may not take effect, at any later time.
    Info,
}

impl EventKind {
    /// The name used in the `jsonl` format (`"invoke"`, `"ok"`, `"fail"`, `"info"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Invoke => "invoke",
            EventKind::Ok => "ok",
            EventKind::Fail => "fail",
            EventKind::Info => "info",
        }
    }

    fn from_name(name: &str) -> Option<EventKind> {
        Some(match name {
            "invoke" => EventKind::Invoke,
            "ok" => EventKind::Ok,
            "fail" => EventKind::Fail,
            "info" => EventKind::Info,
            _ => return None,
        })
    }
}

/// An operation on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    /// Returns the current value.
    Read,
    /// Sets the value.
    Write,
    /// Adds an integer to the value (nil or `""` counts as 0); returns the new value.
    Incr,
    /// Appends a string to the value (nil counts as `""`).
    Append,
    /// Compare-and-set: if the value is `from`, set it to `to`.
    Cas,
}

impl Function {
    /// The name used in the `jsonl` format.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Incr => "incr",
            Function::Append => "append",
            Function::Cas => "cas",
        }
    }

    fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "read" => Function::Read,
            "write" => Function::Write,
            "incr" => Function::Incr,
            "append" => Function::Append,
            "cas" => Function::Cas,
            _ => return None,
        })
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payload of an [`Event`], as it appears in a log (its meaning depends on
/// the event's [`Function`] and [`EventKind`]; see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// `null` / `nil`.
    Nil,
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// `[from, to]` of a `cas`; `None` is nil.
    Pair(Option<String>, Option<String>),
}

/// One line of a history: an invocation or a completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// The client.
    pub process: u64,
    /// Invocation or kind of completion.
    pub kind: EventKind,
    /// The operation.
    pub f: Function,
    /// The key operated on.
    pub key: String,
    /// The payload (input on invocations, output on `ok` completions).
    pub value: Value,
    /// Only on `ok` completions of `cas`: whether it swapped (`None` means yes).
    pub swapped: Option<bool>,
    /// Simulated time in ns. Formats without times use the event's 0-based
    /// position in the history.
    pub time: u64,
}

impl Event {
    /// The invocation of `input` on `key` by `process` at `time`.
    pub fn invoke(process: u64, time: u64, key: impl Into<String>, input: &Input) -> Event {
        Event {
            process,
            kind: EventKind::Invoke,
            f: input.function(),
            key: key.into(),
            value: input.to_value(),
            swapped: None,
            time,
        }
    }

    /// The `ok` completion of `input` with `output`.
    ///
    /// # Panics
    ///
    /// If `output` is not an output of `input`'s function (a programming error).
    pub fn ok(
        process: u64,
        time: u64,
        key: impl Into<String>,
        input: &Input,
        output: &Output,
    ) -> Event {
        assert_eq!(
            input.function(),
            output.function(),
            "Event::ok: output {output:?} does not belong to input {input:?}"
        );
        let (value, swapped) = match output {
            Output::Read(v) => (v.clone().map_or(Value::Nil, Value::Str), None),
            Output::Incr(n) => (Value::Int(*n), None),
            Output::Cas { swapped } => (input.to_value(), Some(*swapped)),
            Output::Write | Output::Append => (input.to_value(), None),
        };
        Event {
            process,
            kind: EventKind::Ok,
            f: input.function(),
            key: key.into(),
            value,
            swapped,
            time,
        }
    }

    /// The `fail` completion of `input`: it definitely did not take effect.
    pub fn fail(process: u64, time: u64, key: impl Into<String>, input: &Input) -> Event {
        Event {
            kind: EventKind::Fail,
            ..Event::invoke(process, time, key, input)
        }
    }

    /// The `info` completion of `input`: its outcome is unknown.
    pub fn info(process: u64, time: u64, key: impl Into<String>, input: &Input) -> Event {
        Event {
            kind: EventKind::Info,
            ..Event::invoke(process, time, key, input)
        }
    }
}

/// What an operation asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the value.
    Read,
    /// Set the value.
    Write(String),
    /// Add to the (integer) value.
    Incr(i64),
    /// Append to the (string) value.
    Append(String),
    /// If the value is `from` (`None`: nil), set it to `to`.
    Cas {
        /// The expected value.
        from: Option<String>,
        /// The new value.
        to: Option<String>,
    },
}

impl Input {
    /// The operation's function.
    pub fn function(&self) -> Function {
        match self {
            Input::Read => Function::Read,
            Input::Write(_) => Function::Write,
            Input::Incr(_) => Function::Incr,
            Input::Append(_) => Function::Append,
            Input::Cas { .. } => Function::Cas,
        }
    }

    /// The invocation's payload.
    pub fn to_value(&self) -> Value {
        match self {
            Input::Read => Value::Nil,
            Input::Write(s) | Input::Append(s) => Value::Str(s.clone()),
            Input::Incr(d) => Value::Int(*d),
            Input::Cas { from, to } => Value::Pair(from.clone(), to.clone()),
        }
    }

    /// Decodes an invocation's payload.
    fn from_value(f: Function, value: &Value) -> Result<Input, String> {
        match (f, value) {
            (Function::Read, Value::Nil) => Ok(Input::Read),
            (Function::Read, v) => Err(format!("a read is invoked with value null, not {v:?}")),
            (Function::Write, v) => scalar(v, "write").map(Input::Write),
            (Function::Append, v) => scalar(v, "append").map(Input::Append),
            (Function::Incr, Value::Int(d)) => Ok(Input::Incr(*d)),
            (Function::Incr, v) => Err(format!(
                "an incr is invoked with an integer delta, not {v:?}"
            )),
            (Function::Cas, Value::Pair(from, to)) => Ok(Input::Cas {
                from: from.clone(),
                to: to.clone(),
            }),
            (Function::Cas, v) => Err(format!("a cas is invoked with [from, to], not {v:?}")),
        }
    }
}

fn scalar(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        v => Err(format!("a {what} is invoked with a string, not {v:?}")),
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Read => write!(f, "read"),
            Input::Write(s) => write!(f, "write {s:?}"),
            Input::Incr(d) => write!(f, "incr {d}"),
            Input::Append(s) => write!(f, "append {s:?}"),
            Input::Cas { from, to } => write!(f, "cas [{} {}]", show(from), show(to)),
        }
    }
}

/// Renders a register value: `nil` or the string in quotes.
pub(crate) fn show(v: &Option<String>) -> String {
    match v {
        None => "nil".to_string(),
        Some(s) => format!("{s:?}"),
    }
}

/// What an operation that completed `ok` returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// The value read (`None`: nil).
    Read(Option<String>),
    /// A write completed.
    Write,
    /// The new value after an increment.
    Incr(i64),
    /// An append completed.
    Append,
    /// Whether a compare-and-set swapped.
    Cas {
        /// `true`: the value was `from` and is now `to`; `false`: it was not `from`.
        swapped: bool,
    },
}

impl Output {
    /// The operation's function.
    pub fn function(&self) -> Function {
        match self {
            Output::Read(_) => Function::Read,
            Output::Write => Function::Write,
            Output::Incr(_) => Function::Incr,
            Output::Append => Function::Append,
            Output::Cas { .. } => Function::Cas,
        }
    }

    /// Decodes an `ok` completion's payload.
    fn from_event(e: &Event) -> Result<Output, String> {
        match (e.f, &e.value) {
            (Function::Read, Value::Nil) => Ok(Output::Read(None)),
            (Function::Read, Value::Str(s)) => Ok(Output::Read(Some(s.clone()))),
            (Function::Read, Value::Int(i)) => Ok(Output::Read(Some(i.to_string()))),
            (Function::Read, v) => Err(format!("a read returns a string or null, not {v:?}")),
            (Function::Write, _) => Ok(Output::Write),
            (Function::Append, _) => Ok(Output::Append),
            (Function::Incr, Value::Int(n)) => Ok(Output::Incr(*n)),
            (Function::Incr, v) => Err(format!("an incr returns an integer, not {v:?}")),
            (Function::Cas, _) => Ok(Output::Cas {
                swapped: e.swapped.unwrap_or(true),
            }),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Read(v) => f.write_str(&show(v)),
            Output::Write | Output::Append => f.write_str("ok"),
            Output::Incr(n) => write!(f, "{n}"),
            Output::Cas { swapped: true } => f.write_str("swapped"),
            Output::Cas { swapped: false } => f.write_str("did not swap"),
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It took effect and returned this.
    Ok(Output),
    /// It definitely did not take effect.
    Fail,
    /// `info`, or no completion before the end: it may take effect at any time
    /// after its invocation, or never.
    Unknown,
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Index in [`History::operations`] (operations are in invocation order).
    pub id: usize,
    /// The client.
    pub process: u64,
    /// The key.
    pub key: String,
    /// What was asked.
    pub input: Input,
    /// How it ended.
    pub outcome: Outcome,
    /// Index in [`History::events`] of the invocation.
    pub call_event: usize,
    /// Index in [`History::events`] of the `ok`/`fail` completion; `None` when
    /// the outcome is unknown (its end is open).
    pub return_event: Option<usize>,
    /// Time of the invocation.
    pub call_time: u64,
    /// Time of the `ok`/`fail` completion; `None` when unknown.
    pub return_time: Option<u64>,
    /// Line of the invocation in the parsed text (1-based).
    pub call_line: usize,
    /// Line of the completion (`ok`, `fail` or `info`), if there is one.
    pub return_line: Option<usize>,
}

impl Operation {
    /// The output, if the operation completed `ok`.
    pub fn output(&self) -> Option<&Output> {
        match &self.outcome {
            Outcome::Ok(o) => Some(o),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} process {} key {:?}: {}",
            self.id, self.process, self.key, self.input
        )?;
        match &self.outcome {
            Outcome::Ok(o) => write!(f, " -> {o}")?,
            Outcome::Fail => write!(f, " -> fail")?,
            Outcome::Unknown => write!(f, " -> unknown")?,
        }
        write!(f, " (line {}", self.call_line)?;
        match self.return_line {
            Some(l) => write!(f, "..{l}")?,
            None => write!(f, "..")?,
        }
        write!(f, ", time {}", self.call_time)?;
        match self.return_time {
            Some(t) => write!(f, "..{t})"),
            None => write!(f, "..)"),
        }
    }
}

/// A history: events in real-time order, paired into operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    initial: Option<String>,
    events: Vec<Event>,
    lines: Vec<usize>,
    operations: Vec<Operation>,
}

impl History {
    /// Pairs `events` (in real-time order) into operations. Every key starts
    /// with the value `initial` (`None`: nil). Errors name the event by its
    /// 1-based position.
    pub fn from_events(events: Vec<Event>, initial: Option<String>) -> Result<History, ParseError> {
        let lines = (1..=events.len()).collect();
        History::build(events, lines, initial)
    }

    fn build(
        events: Vec<Event>,
        lines: Vec<usize>,
        initial: Option<String>,
    ) -> Result<History, ParseError> {
        debug_assert_eq!(events.len(), lines.len());
        let mut operations: Vec<Operation> = Vec::new();
        let mut outstanding: HashMap<u64, usize> = HashMap::new();
        let mut previous_time = 0;
        for (index, (e, &line)) in events.iter().zip(&lines).enumerate() {
            let err = |kind| ParseError { line, kind };
            if e.time < previous_time {
                return Err(err(ParseErrorKind::TimeWentBackwards {
                    previous: previous_time,
                    time: e.time,
                }));
            }
            previous_time = e.time;
            if e.kind == EventKind::Invoke {
                if let Some(&op) = outstanding.get(&e.process) {
                    return Err(err(ParseErrorKind::AlreadyOutstanding {
                        process: e.process,
                        invoked_at_line: operations[op].call_line,
                    }));
                }
                let input = Input::from_value(e.f, &e.value).map_err(|reason| {
                    err(ParseErrorKind::InvalidField {
                        field: "value",
                        reason,
                    })
                })?;
                if e.swapped.is_some() {
                    return Err(err(ParseErrorKind::InvalidField {
                        field: "swapped",
                        reason: "only on ok completions of cas".into(),
                    }));
                }
                outstanding.insert(e.process, operations.len());
                operations.push(Operation {
                    id: operations.len(),
                    process: e.process,
                    key: e.key.clone(),
                    input,
                    outcome: Outcome::Unknown,
                    call_event: index,
                    return_event: None,
                    call_time: e.time,
                    return_time: None,
                    call_line: line,
                    return_line: None,
                });
                continue;
            }
            let Some(op) = outstanding.remove(&e.process) else {
                return Err(err(ParseErrorKind::CompletionWithoutInvocation {
                    process: e.process,
                }));
            };
            let op = &mut operations[op];
            if op.input.function() != e.f || op.key != e.key {
                return Err(err(ParseErrorKind::CompletionMismatch {
                    process: e.process,
                    reason: format!(
                        "completes {} on key {:?} but line {} invoked {} on key {:?}",
                        e.f,
                        e.key,
                        op.call_line,
                        op.input.function(),
                        op.key
                    ),
                }));
            }
            if e.swapped.is_some() && (e.kind != EventKind::Ok || e.f != Function::Cas) {
                return Err(err(ParseErrorKind::InvalidField {
                    field: "swapped",
                    reason: "only on ok completions of cas".into(),
                }));
            }
            op.return_line = Some(line);
            match e.kind {
                EventKind::Invoke => unreachable!(),
                EventKind::Ok => {
                    let output = Output::from_event(e).map_err(|reason| {
                        err(ParseErrorKind::InvalidField {
                            field: "value",
                            reason,
                        })
                    })?;
                    op.outcome = Outcome::Ok(output);
                    op.return_event = Some(index);
                    op.return_time = Some(e.time);
                }
                EventKind::Fail => {
                    op.outcome = Outcome::Fail;
                    op.return_event = Some(index);
                    op.return_time = Some(e.time);
                }
                EventKind::Info => {}
            }
        }
        Ok(History {
            initial,
            events,
            lines,
            operations,
        })
    }

    /// The value every key has before the first operation (`None`: nil).
    pub fn initial_value(&self) -> Option<&str> {
        self.initial.as_deref()
    }

    /// The events, in real-time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The 1-based line of each event in the parsed text (for histories built
    /// with [`History::from_events`], the event's 1-based position).
    pub fn lines(&self) -> &[usize] {
        &self.lines
    }

    /// The operations, in invocation order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }
}

/// A history text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The simulator's JSON-lines format (see the module documentation);
    /// keys start as nil.
    Jsonl,
    /// Jepsen logs of one compare-and-set register (key [`JEPSEN_KEY`]), which
    /// starts as nil. Lines
    /// `… jepsen.util - P\t:TYPE\t:F\tVALUE` with a numeric process `P` are
    /// events (Jepsen separates the fields by tabs or by runs of spaces: any
    /// run of whitespace separates them); all other lines (including
    /// `:nemesis` ones) are ignored.
    /// `:read`, `:write` and `:cas` map to [`Function`]s of the same name;
    /// `:fail :cas [FROM TO]` becomes an `ok` cas that did not swap, `:fail
    /// :read …` (a timed-out read) becomes `info`, other `:fail`s stay `fail`.
    /// Values are `nil`, integers (the register holds their decimal
    /// rendering), strings or `[FROM TO]`; on `:info`/`:fail` they may also be
    /// keywords such as `:timed-out`.
    JepsenEtcd,
    /// Porcupine's key-value logs: lines
    /// `{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append, :key "K", :value V}`,
    /// where `:get`, `:put`, `:append` are read, write, append; keys start as `""`.
    PorcupineKv,
}

impl Format {
    /// The initial value of every key in histories of this format.
    pub fn initial_value(self) -> Option<String> {
        match self {
            Format::Jsonl | Format::JepsenEtcd => None,
            Format::PorcupineKv => Some(String::new()),
        }
    }

    /// The format's name: `jsonl`, `jepsen-etcd` or `porcupine-kv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::JepsenEtcd => "jepsen-etcd",
            Format::PorcupineKv => "porcupine-kv",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "jepsen-etcd" => Ok(Format::JepsenEtcd),
            "porcupine-kv" => Ok(Format::PorcupineKv),
            _ => Err(format!(
                "unknown history format {s:?} (jsonl, jepsen-etcd, porcupine-kv)"
            )),
        }
    }
}

/// Why a history could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number (for [`History::from_events`]: event position).
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a line of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Not valid JSON / EDN / Jepsen syntax.
    Syntax(String),
    /// A required field is absent.
    MissingField(&'static str),
    /// A field has the wrong type or an impossible value.
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// Why it is wrong.
        reason: String,
    },
    /// The event type is none of invoke, ok, fail, info.
    UnknownType(String),
    /// The operation is not one this format has.
    UnknownFunction(String),
    /// The time is smaller than on the previous event.
    TimeWentBackwards {
        /// The previous event's time.
        previous: u64,
        /// This event's time.
        time: u64,
    },
    /// A completion for a process with no operation outstanding.
    CompletionWithoutInvocation {
        /// The process.
        process: u64,
    },
    /// An invocation by a process whose previous operation has not completed.
    AlreadyOutstanding {
        /// The process.
        process: u64,
        /// Line of the outstanding invocation.
        invoked_at_line: usize,
    },
    /// A completion whose function or key differs from its invocation's.
    CompletionMismatch {
        /// The process.
        process: u64,
        /// What differs.
        reason: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            ParseErrorKind::Syntax(s) => write!(f, "syntax error: {s}"),
            ParseErrorKind::MissingField(field) => write!(f, "missing field {field}"),
            ParseErrorKind::InvalidField { field, reason } => write!(f, "invalid {field}: {reason}"),
            ParseErrorKind::UnknownType(t) => write!(f, "unknown event type {t:?}"),
            ParseErrorKind::UnknownFunction(x) => write!(f, "unknown operation {x:?}"),
            ParseErrorKind::TimeWentBackwards { previous, time } => {
                write!(f, "time {time} is before the previous line's {previous}")
            }
            ParseErrorKind::CompletionWithoutInvocation { process } => {
                write!(f, "completion for process {process}, which has no operation outstanding")
            }
            ParseErrorKind::AlreadyOutstanding {
                process,
                invoked_at_line,
            } => write!(
                f,
                "process {process} invokes again while its operation from line {invoked_at_line} is outstanding"
            ),
            ParseErrorKind::CompletionMismatch { process, reason } => {
                write!(f, "process {process}: {reason}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads a history in `format` (see [`Format`]), pairs its events into
/// operations, and sets the initial value of keys to
/// [`Format::initial_value`].
pub fn parse(format: Format, text: &str) -> Result<History, ParseError> {
    let mut events = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let time = events.len() as u64;
        let parsed = match format {
            Format::Jsonl => parse_jsonl_line(raw),
            Format::JepsenEtcd => parse_jepsen_line(raw, time),
            Format::PorcupineKv => parse_kv_line(raw, time),
        };
        match parsed {
            Ok(Some(e)) => {
                events.push(e);
                lines.push(line);
            }
            Ok(None) => {}
            Err(kind) => return Err(ParseError { line, kind }),
        }
    }
    History::build(events, lines, format.initial_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn err(format: Format, text: &str) -> ParseError {
        match parse(format, text) {
            Ok(h) => panic!("expected an error, parsed {h:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn format_names() {
        for f in [Format::Jsonl, Format::JepsenEtcd, Format::PorcupineKv] {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
        assert!("edn".parse::<Format>().is_err());
    }
}
