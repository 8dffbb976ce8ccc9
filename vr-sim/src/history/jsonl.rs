//! The simulator's own `jsonl` format (specified in the documentation of
//! [`crate::history`]): writing an event as a line and reading one back.

use super::{Event, EventKind, Function, ParseErrorKind, Value};

/// One event as a line of the `jsonl` format, without the trailing newline.
/// Fields are written in the order `process`, `type`, `f`, `key`, `value`,
/// `swapped` (only when set), `time`.
pub fn write_jsonl(event: &Event) -> String {
    use serde_json::Value as J;
    fn opt(s: &Option<String>) -> J {
        s.clone().map_or(J::Null, J::String)
    }
    let value = match &event.value {
        Value::Nil => J::Null,
        Value::Int(i) => J::from(*i),
        Value::Str(s) => J::String(s.clone()),
        Value::Pair(a, b) => J::Array(vec![opt(a), opt(b)]),
    };
    let swapped = match event.swapped {
        Some(b) => format!(",\"swapped\":{b}"),
        None => String::new(),
    };
    format!(
        "{{\"process\":{},\"type\":\"{}\",\"f\":\"{}\",\"key\":{},\"value\":{}{},\"time\":{}}}",
        event.process,
        event.kind.as_str(),
        event.f.as_str(),
        J::String(event.key.clone()),
        value,
        swapped,
        event.time
    )
}

pub(super) fn parse_jsonl_line(line: &str) -> Result<Option<Event>, ParseErrorKind> {
    use serde_json::Value as J;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let json: J = serde_json::from_str(line).map_err(|e| ParseErrorKind::Syntax(e.to_string()))?;
    let J::Object(obj) = json else {
        return Err(ParseErrorKind::Syntax(
            "a line must be a JSON object".into(),
        ));
    };
    let field = |name: &'static str| obj.get(name).ok_or(ParseErrorKind::MissingField(name));
    let invalid = |field: &'static str, reason: &str| ParseErrorKind::InvalidField {
        field,
        reason: reason.to_string(),
    };
    let process = field("process")?
        .as_u64()
        .ok_or_else(|| invalid("process", "must be an integer in 0..=2^64-1"))?;
    let kind = match field("type")? {
        J::String(s) => {
            EventKind::from_name(s).ok_or_else(|| ParseErrorKind::UnknownType(s.clone()))?
        }
        _ => return Err(invalid("type", "must be a string")),
    };
    let f = match field("f")? {
        J::String(s) => {
            Function::from_name(s).ok_or_else(|| ParseErrorKind::UnknownFunction(s.clone()))?
        }
        _ => return Err(invalid("f", "must be a string")),
    };
    let key = match field("key")? {
        J::String(s) => s.clone(),
        _ => return Err(invalid("key", "must be a string")),
    };
    let time = field("time")?
        .as_u64()
        .ok_or_else(|| invalid("time", "must be an integer in 0..=2^64-1"))?;
    let swapped = match obj.get("swapped") {
        None => None,
        Some(J::Bool(b)) => Some(*b),
        Some(_) => return Err(invalid("swapped", "must be true or false")),
    };
    fn scalar(v: &J) -> Option<Option<String>> {
        match v {
            J::Null => Some(None),
            J::String(s) => Some(Some(s.clone())),
            J::Number(n) => n.as_i64().map(|i| Some(i.to_string())),
            _ => None,
        }
    }
    let value = match obj.get("value").unwrap_or(&J::Null) {
        J::Null => Value::Nil,
        J::String(s) => Value::Str(s.clone()),
        J::Number(n) => Value::Int(
            n.as_i64()
                .ok_or_else(|| invalid("value", "numbers must be integers in the range of i64"))?,
        ),
        J::Array(a) if a.len() == 2 => match (scalar(&a[0]), scalar(&a[1])) {
            (Some(from), Some(to)) => Value::Pair(from, to),
            _ => {
                return Err(invalid(
                    "value",
                    "[from, to] must hold strings, integers or null",
                ))
            }
        },
        _ => {
            return Err(invalid(
                "value",
                "must be null, a string, an integer or a [from, to] pair",
            ))
        }
    };
    Ok(Some(Event {
        process,
        kind,
        f,
        key,
        value,
        swapped,
        time,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::err;
    use crate::history::{parse, Format, Input, Outcome, Output, ParseError};

    const W: &str = r#"{"process":1,"type":"invoke","f":"write","key":"x","value":"a","time":1}"#;
    const W_OK: &str = r#"{"process":1,"type":"ok","f":"write","key":"x","value":"a","time":2}"#;

    #[test]
    fn jsonl_round_trip() {
        let inputs = [
            Input::Read,
            Input::Write("a \"quoted\"\n".into()),
            Input::Incr(-3),
            Input::Append("x".into()),
            Input::Cas {
                from: None,
                to: Some("b".into()),
            },
        ];
        let outputs = [
            Output::Read(Some("v".into())),
            Output::Write,
            Output::Incr(7),
            Output::Append,
            Output::Cas { swapped: false },
        ];
        let mut events = Vec::new();
        let mut t = 0;
        for (p, (i, o)) in inputs.iter().zip(&outputs).enumerate() {
            let key = format!("k{p}");
            events.push(Event::invoke(p as u64, t, &key, i));
            events.push(Event::ok(p as u64, t + 1, &key, i, o));
            t += 2;
        }
        events.push(Event::invoke(9, t, "z", &inputs[0]));
        events.push(Event::info(9, t, "z", &inputs[0]));
        events.push(Event::invoke(9, t, "z", &inputs[1]));
        events.push(Event::fail(9, t, "z", &inputs[1]));
        let text: String = events.iter().map(|e| write_jsonl(e) + "\n").collect();
        let h = parse(Format::Jsonl, &text).unwrap();
        assert_eq!(h.events(), &events[..]);
        let ops = h.operations();
        assert_eq!(ops.len(), 7);
        for (op, (i, o)) in ops.iter().zip(inputs.iter().zip(&outputs)) {
            assert_eq!(&op.input, i);
            assert_eq!(op.output(), Some(o));
        }
        assert_eq!(ops[5].outcome, Outcome::Unknown);
        assert_eq!(ops[5].return_event, None);
        assert_eq!(ops[5].return_line, Some(12));
        assert_eq!(ops[6].outcome, Outcome::Fail);
        assert_eq!(h.initial_value(), None);
    }

    #[test]
    fn jsonl_example_in_docs_parses() {
        let text = r#"{"process":1,"type":"invoke","f":"write","key":"x","value":"a","time":10}
{"process":2,"type":"invoke","f":"cas","key":"x","value":["a","b"],"time":12}
{"process":1,"type":"ok","f":"write","key":"x","value":"a","time":15}
{"process":2,"type":"ok","f":"cas","key":"x","value":["a","b"],"swapped":true,"time":20}
{"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":21}
{"process":1,"type":"ok","f":"read","key":"x","value":"b","time":30}
{"process":3,"type":"invoke","f":"incr","key":"n","value":2,"time":31}
{"process":3,"type":"info","f":"incr","key":"n","value":2,"time":90}
"#;
        let h = parse(Format::Jsonl, text).unwrap();
        assert_eq!(h.operations().len(), 4);
        assert_eq!(
            h.operations()[2].output(),
            Some(&Output::Read(Some("b".into())))
        );
        assert_eq!(h.operations()[3].outcome, Outcome::Unknown);
    }

    #[test]
    fn jsonl_blank_lines_crlf_and_integer_values() {
        let text = format!(
            "\n{W}\r\n   \n{}\n{}\n{}\n",
            W_OK.replace("\"a\"", "5"),
            r#"{"process":1,"type":"invoke","f":"read","key":"x","time":3}"#,
            r#"{"process":1,"type":"ok","f":"read","key":"x","value":5,"time":3,"extra":[1]}"#
        );
        let h = parse(Format::Jsonl, &text).unwrap();
        assert_eq!(h.lines(), &[2, 4, 5, 6]);
        assert_eq!(
            h.operations()[1].output(),
            Some(&Output::Read(Some("5".into())))
        );
        assert_eq!(h.operations()[1].call_line, 5);
    }

    #[test]
    fn jsonl_malformed_lines_name_their_line() {
        let cases: Vec<(String, usize, &str)> = vec![
            (format!("{W}\nnot json"), 2, "syntax error"),
            (format!("{W}\n[1,2]"), 2, "JSON object"),
            (W.replace("\"process\":1,", ""), 1, "missing field process"),
            (
                W.replace("\"process\":1", "\"process\":-1"),
                1,
                "invalid process",
            ),
            (W.replace("\"time\":1", "\"time\":1.5"), 1, "invalid time"),
            (W.replace(",\"time\":1", ""), 1, "missing field time"),
            (W.replace("\"key\":\"x\"", "\"key\":3"), 1, "invalid key"),
            (
                W.replace("invoke", "start"),
                1,
                "unknown event type \"start\"",
            ),
            (
                W.replace("write", "delete"),
                1,
                "unknown operation \"delete\"",
            ),
            (W.replace("\"a\"", "{}"), 1, "invalid value"),
            (W.replace("\"a\"", "1e3"), 1, "invalid value"),
            (W.replace("\"a\"", "null"), 1, "invalid value: a write"),
            (
                W.replace("\"write\"", "\"incr\""),
                1,
                "invalid value: an incr",
            ),
            (W.replace("\"write\"", "\"cas\""), 1, "invalid value: a cas"),
            (
                W.replace("\"write\"", "\"read\""),
                1,
                "invalid value: a read",
            ),
            (
                W.replace("\"value\":\"a\"", "\"value\":[\"a\",[]]"),
                1,
                "invalid value",
            ),
            (
                W.replace("\"time\":1", "\"time\":1,\"swapped\":true"),
                1,
                "invalid swapped",
            ),
            (
                format!("{W}\n{W}"),
                2,
                "invokes again while its operation from line 1",
            ),
            (W_OK.to_string(), 1, "no operation outstanding"),
            (
                format!("{W}\n{}", W_OK.replace("\"x\"", "\"y\"")),
                2,
                "on key \"y\"",
            ),
            (
                format!("{W}\n{}", W_OK.replace("write", "append")),
                2,
                "completes append",
            ),
            (
                format!("{W}\n{}", W_OK.replace("\"time\":2", "\"time\":0")),
                2,
                "time 0 is before the previous line's 1",
            ),
            (
                format!(
                    "{W}\n{}",
                    W_OK.replace("\"time\":2", "\"time\":2,\"swapped\":false")
                ),
                2,
                "invalid swapped",
            ),
            (
                format!(
                    "{}\n{}",
                    W.replace("\"write\"", "\"read\"").replace("\"a\"", "null"),
                    W_OK.replace("\"write\"", "\"read\"")
                        .replace("\"a\"", "[\"a\",\"b\"]")
                ),
                2,
                "a read returns",
            ),
        ];
        for (text, line, needle) in cases {
            let e = err(Format::Jsonl, &text);
            let msg = e.to_string();
            assert_eq!(e.line, line, "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg:?} lacks {needle:?}");
            assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
        }
    }

    #[test]
    fn jsonl_typed_errors() {
        assert_eq!(
            err(Format::Jsonl, &format!("{W}\n\n{W}")),
            ParseError {
                line: 3,
                kind: ParseErrorKind::AlreadyOutstanding {
                    process: 1,
                    invoked_at_line: 1
                }
            }
        );
        assert_eq!(
            err(Format::Jsonl, W_OK).kind,
            ParseErrorKind::CompletionWithoutInvocation { process: 1 }
        );
    }

    #[test]
    fn jsonl_survives_garbage() {
        for text in [
            "\u{0}",
            "{",
            "}",
            "{\"process\":",
            "\"\\u12\"",
            "{\"a\":1}\n\u{feff}",
            "🦀",
        ] {
            assert!(parse(Format::Jsonl, text).is_err(), "{text:?}");
        }
        assert_eq!(parse(Format::Jsonl, "").unwrap().operations().len(), 0);
    }
}
