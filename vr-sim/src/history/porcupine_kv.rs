//! Porcupine's EDN-like key-value logs ([`Format::PorcupineKv`]).
//!
//! [`Format::PorcupineKv`]: super::Format::PorcupineKv

use super::edn::{edn_event, read_edn, Edn};
use super::{Event, EventKind, Function, ParseErrorKind};

pub(super) fn parse_kv_line(line: &str, time: u64) -> Result<Option<Event>, ParseErrorKind> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Edn::Map(entries) = read_edn(line)? else {
        return Err(ParseErrorKind::Syntax("a line must be a map {...}".into()));
    };
    let get = |name: &'static str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Edn::Keyword(k) if k == name))
            .map(|(_, v)| v)
            .ok_or(ParseErrorKind::MissingField(name))
    };
    let invalid = |field: &'static str, reason: &str| ParseErrorKind::InvalidField {
        field,
        reason: reason.to_string(),
    };
    let process = match get("process")? {
        Edn::Int(p) if *p >= 0 => *p as u64,
        _ => return Err(invalid("process", "must be a non-negative integer")),
    };
    let kind = match get("type")? {
        Edn::Keyword(k) => {
            EventKind::from_name(k).ok_or_else(|| ParseErrorKind::UnknownType(format!(":{k}")))?
        }
        _ => return Err(invalid("type", "must be a keyword")),
    };
    let f = match get("f")? {
        Edn::Keyword(k) => match k.as_str() {
            "get" => Function::Read,
            "put" => Function::Write,
            "append" => Function::Append,
            _ => return Err(ParseErrorKind::UnknownFunction(format!(":{k}"))),
        },
        _ => return Err(invalid("f", "must be a keyword")),
    };
    let key = match get("key")? {
        Edn::Str(s) => s.clone(),
        Edn::Int(i) => i.to_string(),
        _ => return Err(invalid("key", "must be a string")),
    };
    let value = get("value")?;
    edn_event(process, kind, f, key, value, time).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::history::tests::err;
    use crate::history::{parse, Format, Input, Output};

    #[test]
    fn kv_lines() {
        let text = r#"{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "0", :value nil}
{:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "0", :value "x \"q\" \\ y"}

{:value "v", :key "5", :f :put, :type :invoke, :process 2}
"#;
        let h = parse(Format::PorcupineKv, text).unwrap();
        let ops = h.operations();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].input, Input::Append("x 0 0 y".into()));
        assert_eq!(
            ops[1].output(),
            Some(&Output::Read(Some("x \"q\" \\ y".into())))
        );
        assert_eq!(ops[2].input, Input::Write("v".into()));
        assert_eq!(ops[2].key, "5");
        assert_eq!(ops[2].call_line, 6);
        assert_eq!(h.initial_value(), Some(""));
    }

    #[test]
    fn kv_malformed_lines() {
        let ok = r#"{:process 0, :type :invoke, :f :get, :key "0", :value nil}"#;
        let cases = [
            (format!("{ok}\nhello"), 2, "unexpected token"),
            (format!("{ok}\n[1 2]"), 2, "must be a map"),
            (ok.replace(", :key \"0\"", ""), 1, "missing field key"),
            (
                ok.replace(":process 0", ":process -1"),
                1,
                "invalid process",
            ),
            (ok.replace(":get", ":cas"), 1, "unknown operation \":cas\""),
            (
                ok.replace(":invoke", ":begin"),
                1,
                "unknown event type \":begin\"",
            ),
            (ok.replace("\"0\"", "\"0"), 1, "unterminated string"),
            (ok.replace("nil}", "nil"), 1, "unexpected end of line"),
            (ok.replace("nil}", "}"), 1, "odd number of forms"),
            (ok.replace("nil", "\"a\\q\""), 1, "unknown escape"),
            (ok.replace(":get", "get"), 1, "unexpected token"),
            (format!("{ok} x"), 1, "trailing characters"),
            (
                ok.replace("nil", "\"v\""),
                1,
                "a read is invoked with value null",
            ),
        ];
        for (text, line, needle) in cases {
            let e = err(Format::PorcupineKv, &text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(
                e.to_string().contains(needle),
                "{text}: {e} lacks {needle:?}"
            );
        }
    }
}
