//! The key-value state machine: each command against Redis's replies (the
//! expected strings are Redis 7's, verbatim), batches, and determinism.

use proptest::prelude::*;
use vr_core::Service;
use vr_kv::batch::*;
use vr_kv::{is_known, is_read_only, Command, Reply, Store};

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Runs one command given as words.
fn run(store: &mut Store, words: &[&str]) -> Reply {
    store.apply(&args(words))
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn nil() -> Reply {
    Reply::Bulk(None)
}

fn err(s: &str) -> Reply {
    Reply::Error(s.into())
}

#[test]
fn get_and_set() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["GET", "k"]), nil());
    assert_eq!(run(&mut s, &["SET", "k", "v"]), ok());
    assert_eq!(run(&mut s, &["get", "k"]), bulk("v"));
    assert_eq!(run(&mut s, &["sEt", "k", "w"]), ok());
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("w"));
}

#[test]
fn keys_and_values_are_binary_safe() {
    let mut s = Store::new();
    let key = b"\0k\r\n\xff".to_vec();
    let value = b"\xfe\0\r\nv".to_vec();
    let set = vec![b"SET".to_vec(), key.clone(), value.clone()];
    assert_eq!(s.apply(&set), ok());
    assert_eq!(
        s.apply(&[b"GET".to_vec(), key.clone()]),
        Reply::Bulk(Some(value.clone()))
    );
    assert_eq!(s.get(&key), Some(&value[..]));
}

#[test]
fn set_nx_xx_get_keepttl() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["SET", "k", "1", "XX"]), nil());
    assert_eq!(run(&mut s, &["GET", "k"]), nil());
    assert_eq!(run(&mut s, &["SET", "k", "1", "nx"]), ok());
    assert_eq!(run(&mut s, &["SET", "k", "2", "NX"]), nil());
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("1"));
    assert_eq!(run(&mut s, &["SET", "k", "3", "XX", "XX"]), ok());
    assert_eq!(run(&mut s, &["SET", "k", "4", "GET"]), bulk("3"));
    assert_eq!(run(&mut s, &["SET", "new", "x", "get"]), nil());
    assert_eq!(run(&mut s, &["GET", "new"]), bulk("x"));
    // With GET, a failed condition still returns the old value (Redis 7).
    assert_eq!(run(&mut s, &["SET", "k", "5", "NX", "GET"]), bulk("4"));
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("4"));
    assert_eq!(run(&mut s, &["SET", "none", "5", "XX", "GET"]), nil());
    assert_eq!(run(&mut s, &["GET", "none"]), nil());
    assert_eq!(run(&mut s, &["SET", "k", "6", "KEEPTTL"]), ok());
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("6"));
}

#[test]
fn set_syntax_errors() {
    let mut s = Store::new();
    for words in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "XX", "NX"],
        &["SET", "k", "v", "BOGUS"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "EX", "10", "PX", "10"],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "KEEPTTL", "PXAT", "10"],
    ] {
        assert_eq!(run(&mut s, words), err("ERR syntax error"), "{words:?}");
    }
    assert!(s.is_empty(), "a refused SET changes nothing");
}

#[test]
fn del_and_exists_count_like_redis() {
    let mut s = Store::new();
    run(&mut s, &["MSET", "a", "1", "b", "2"]);
    assert_eq!(
        run(&mut s, &["EXISTS", "a", "a", "b", "c"]),
        Reply::Integer(3)
    );
    assert_eq!(run(&mut s, &["EXISTS", "c"]), Reply::Integer(0));
    // A key named twice is deleted once.
    assert_eq!(run(&mut s, &["DEL", "a", "a", "c"]), Reply::Integer(1));
    assert_eq!(run(&mut s, &["EXISTS", "a", "b"]), Reply::Integer(1));
    assert_eq!(run(&mut s, &["DEL", "b"]), Reply::Integer(1));
    assert!(s.is_empty());
}

#[test]
fn incr_and_incrby() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["INCR", "n"]), Reply::Integer(1));
    assert_eq!(run(&mut s, &["INCRBY", "n", "41"]), Reply::Integer(42));
    assert_eq!(run(&mut s, &["INCRBY", "n", "-50"]), Reply::Integer(-8));
    assert_eq!(run(&mut s, &["GET", "n"]), bulk("-8"));
    run(&mut s, &["SET", "m", "10"]);
    assert_eq!(run(&mut s, &["INCR", "m"]), Reply::Integer(11));
}

#[test]
fn incr_of_a_value_that_is_not_an_integer() {
    let mut s = Store::new();
    let want = err("ERR value is not an integer or out of range");
    for value in [
        "abc",
        "",
        " 1",
        "1 ",
        "+1",
        "01",
        "1.5",
        "9223372036854775808",
    ] {
        run(&mut s, &["SET", "k", value]);
        assert_eq!(run(&mut s, &["INCR", "k"]), want, "{value:?}");
        assert_eq!(run(&mut s, &["GET", "k"]), bulk(value), "unchanged");
    }
}

#[test]
fn incrby_with_an_increment_that_is_not_an_integer() {
    let mut s = Store::new();
    let want = err("ERR value is not an integer or out of range");
    for increment in ["x", "1.0", "", "99999999999999999999"] {
        assert_eq!(
            run(&mut s, &["INCRBY", "k", increment]),
            want,
            "{increment:?}"
        );
    }
    assert!(s.is_empty());
}

#[test]
fn incr_overflow() {
    let mut s = Store::new();
    let want = err("ERR increment or decrement would overflow");
    run(&mut s, &["SET", "k", "9223372036854775807"]);
    assert_eq!(run(&mut s, &["INCR", "k"]), want);
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("9223372036854775807"));
    run(&mut s, &["SET", "k", "-9223372036854775808"]);
    assert_eq!(run(&mut s, &["INCRBY", "k", "-1"]), want);
    run(&mut s, &["SET", "k", "-1"]);
    assert_eq!(run(&mut s, &["INCRBY", "k", "-9223372036854775808"]), want);
    run(&mut s, &["SET", "k", "1"]);
    assert_eq!(run(&mut s, &["INCRBY", "k", "9223372036854775807"]), want);
    assert_eq!(
        run(&mut s, &["INCRBY", "k", "9223372036854775806"]),
        Reply::Integer(i64::MAX)
    );
}

#[test]
fn append_creates_then_extends() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["APPEND", "k", "Hello"]), Reply::Integer(5));
    assert_eq!(run(&mut s, &["APPEND", "k", " World"]), Reply::Integer(11));
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("Hello World"));
    assert_eq!(run(&mut s, &["APPEND", "e", ""]), Reply::Integer(0));
    assert_eq!(run(&mut s, &["EXISTS", "e"]), Reply::Integer(1));
}

#[test]
fn append_past_the_value_limit() {
    let mut s = Store::with_value_bytes_max(4);
    assert_eq!(run(&mut s, &["APPEND", "k", "abc"]), Reply::Integer(3));
    assert_eq!(run(&mut s, &["APPEND", "k", "d"]), Reply::Integer(4));
    assert_eq!(
        run(&mut s, &["APPEND", "k", "e"]),
        err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    );
    assert_eq!(run(&mut s, &["GET", "k"]), bulk("abcd"));
}

#[test]
fn mset_and_mget() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["MSET", "a", "1", "b", "2", "a", "3"]), ok());
    assert_eq!(
        run(&mut s, &["MGET", "a", "b", "c", "a"]),
        Reply::Array(Some(vec![bulk("3"), bulk("2"), nil(), bulk("3")]))
    );
    assert_eq!(
        run(&mut s, &["MSET", "a", "1", "b"]),
        err("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        run(&mut s, &["GET", "a"]),
        bulk("3"),
        "a refused MSET sets nothing"
    );
}

#[test]
fn ping_and_echo() {
    let mut s = Store::new();
    assert_eq!(run(&mut s, &["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(run(&mut s, &["ping", "hi"]), bulk("hi"));
    assert_eq!(
        run(&mut s, &["PING", "a", "b"]),
        err("ERR wrong number of arguments for 'ping' command")
    );
    assert_eq!(run(&mut s, &["ECHO", "hello world"]), bulk("hello world"));
    assert_eq!(
        run(&mut s, &["ECHO"]),
        err("ERR wrong number of arguments for 'echo' command")
    );
}

#[test]
fn wrong_arity_names_the_command_in_lower_case() {
    let mut s = Store::new();
    let cases: [&[&str]; 11] = [
        &["GET"],
        &["GET", "a", "b"],
        &["SET", "k"],
        &["DEL"],
        &["EXISTS"],
        &["INCR"],
        &["incrBY", "k"],
        &["APPEND", "k"],
        &["MGET"],
        &["MSET", "k"],
        &["Echo", "a", "b"],
    ];
    for words in cases {
        let name = words[0].to_lowercase();
        assert_eq!(
            run(&mut s, words),
            err(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            "{words:?}"
        );
    }
    assert_eq!(
        run(&mut s, &["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
}

#[test]
fn unknown_command_in_redis_7_words() {
    let mut s = Store::new();
    assert_eq!(
        run(&mut s, &["FOO", "a", "b"]),
        err("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(
        run(&mut s, &["foo"]),
        err("ERR unknown command 'foo', with args beginning with: ")
    );
    // Arguments are listed while the list is under 128 bytes, the last one
    // cut to the room left, as Redis's commandCheckExistence does.
    let long = "x".repeat(200);
    let Reply::Error(text) = run(&mut s, &["FOO", "a", &long, "b"]) else {
        panic!("an error");
    };
    let listed = format!("'a' '{}' ", "x".repeat(124));
    assert_eq!(
        text,
        format!("ERR unknown command 'FOO', with args beginning with: {listed}")
    );
    // The name is cut to 128 bytes.
    let Reply::Error(text) = run(&mut s, &[&long]) else {
        panic!("an error");
    };
    assert!(text.starts_with(&format!("ERR unknown command '{}', ", "x".repeat(128))));
    // Client bytes with line breaks cannot break the reply line.
    let reply = run(&mut s, &["F\r\nOO", "a\nb"]).to_bytes();
    assert_eq!(
        reply,
        b"-ERR unknown command 'F  OO', with args beginning with: 'a b' \r\n"
    );
}

#[test]
fn classification() {
    for name in ["GET", "mget", "Exists", "PING", "echo"] {
        assert!(is_read_only(&args(&[name, "k"])), "{name}");
        assert!(is_known(&args(&[name])), "{name}");
    }
    for name in ["SET", "del", "INCR", "incrby", "APPEND", "MSET"] {
        assert!(!is_read_only(&args(&[name, "k"])), "{name}");
        assert!(is_known(&args(&[name])), "{name}");
    }
    for unknown in [&["FLUSHX"][..], &["GETX", "k"], &[]] {
        assert!(!is_read_only(&args(unknown)));
        assert!(!is_known(&args(unknown)));
    }
    let incrby = Command::parse(args(&["iNcRbY", "k", "1"])).unwrap();
    assert_eq!(incrby.name(), "incrby");
    assert!(!incrby.is_read_only());
    assert_eq!(vr_kv::command::lookup(b"MSET").unwrap().arity, -3);
}

#[test]
fn read_serves_reads_and_refuses_writes() {
    let mut s = Store::new();
    run(&mut s, &["MSET", "a", "1", "b", "2"]);
    let before = s.clone();
    assert_eq!(s.read(&args(&["GET", "a"])), bulk("1"));
    assert_eq!(
        s.read(&args(&["MGET", "a", "z"])),
        Reply::Array(Some(vec![bulk("1"), nil()]))
    );
    assert_eq!(s.read(&args(&["EXISTS", "a", "b", "a"])), Reply::Integer(3));
    assert_eq!(s.read(&args(&["PING"])), Reply::Simple("PONG".into()));
    assert_eq!(s.read(&args(&["ECHO", "e"])), bulk("e"));
    let readonly = err("READONLY You can't write against a read only replica.");
    for words in [
        &["SET", "a", "9"][..],
        &["DEL", "a"],
        &["INCR", "a"],
        &["INCRBY", "a", "1"],
        &["APPEND", "a", "x"],
        &["MSET", "a", "9"],
    ] {
        assert_eq!(s.read(&args(words)), readonly, "{words:?}");
    }
    // Redis checks existence and arity before the replica check.
    assert_eq!(
        s.read(&args(&["SET", "a"])),
        err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        s.read(&args(&["NOPE"])),
        err("ERR unknown command 'NOPE', with args beginning with: ")
    );
    assert_eq!(s, before);
}

#[test]
fn empty_command_is_an_error_not_a_panic() {
    let mut s = Store::new();
    assert_eq!(s.apply(&[]), err("ERR empty command"));
    assert_eq!(s.read(&[]), err("ERR empty command"));
}

/// Executes `commands` as one op and returns the replies.
fn execute(store: &mut Store, op_number: u64, commands: &[&[&str]]) -> Vec<Reply> {
    let batch: Vec<Vec<Vec<u8>>> = commands.iter().map(|c| args(c)).collect();
    let result = store.execute(op_number, &encode_batch(&batch));
    let BatchResult::Replies(replies) = decode_results(&result).unwrap() else {
        panic!("a well-formed batch gets replies");
    };
    assert_eq!(replies.len(), batch.len(), "one reply per command");
    replies.iter().map(|bytes| decode_reply(bytes)).collect()
}

/// The few reply shapes the store makes, read back for assertions.
fn decode_reply(bytes: &[u8]) -> Reply {
    let text = |b: &[u8]| String::from_utf8(b[1..b.len() - 2].to_vec()).unwrap();
    match bytes[0] {
        b'+' => Reply::Simple(text(bytes)),
        b'-' => Reply::Error(text(bytes)),
        b':' => Reply::Integer(text(bytes).parse().unwrap()),
        b'$' if bytes.starts_with(b"$-1") => Reply::Bulk(None),
        b'$' => {
            let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            Reply::Bulk(Some(bytes[header_end..bytes.len() - 2].to_vec()))
        }
        other => panic!("unexpected reply type {other}"),
    }
}

#[test]
fn an_error_in_a_batch_does_not_stop_the_rest() {
    let mut s = Store::new();
    let replies = execute(
        &mut s,
        1,
        &[
            &["SET", "a", "x"],
            &["INCR", "a"],
            &["NOPE"],
            &["SET", "b", "2"],
            &["INCR", "b"],
            &["GET", "b"],
        ],
    );
    assert_eq!(
        replies,
        vec![
            ok(),
            err("ERR value is not an integer or out of range"),
            err("ERR unknown command 'NOPE', with args beginning with: "),
            ok(),
            Reply::Integer(3),
            bulk("3"),
        ]
    );
    assert_eq!(s.get(b"a"), Some(&b"x"[..]));
    assert_eq!(s.op_number(), 1);
}

#[test]
fn results_carry_the_exact_resp_bytes() {
    let mut s = Store::new();
    let op = encode_batch(&[args(&["SET", "k", "v"]), args(&["MGET", "k", "z"])]);
    let result = s.execute(1, &op);
    let BatchResult::Replies(replies) = decode_results(&result).unwrap() else {
        panic!("replies");
    };
    assert_eq!(replies, vec![&b"+OK\r\n"[..], b"*2\r\n$1\r\nv\r\n$-1\r\n"]);
}

#[test]
fn a_malformed_op_is_rejected_deterministically_and_changes_nothing() {
    let mut a = Store::new();
    let mut b = Store::new();
    run(&mut a, &["SET", "k", "v"]);
    run(&mut b, &["SET", "k", "v"]);
    let before = a.clone();
    for (i, op) in [
        &b""[..],
        b"\x07",
        b"\x01\x05\x00\x00\x00",
        b"\x01\x01\x00\x00\x00\x00\x00\x00\x00",
    ]
    .iter()
    .enumerate()
    {
        let n = i as u64 + 1;
        let result = a.execute(n, op);
        assert_eq!(result, b.execute(n, op));
        assert!(
            matches!(decode_results(&result), Ok(BatchResult::Rejected(m)) if m.starts_with("malformed operation: "))
        );
    }
    assert_eq!(a.get(b"k"), before.get(b"k"));
    assert_eq!(a.len(), before.len());
}

#[test]
fn batch_errors() {
    assert_eq!(decode_batch(b""), Err(BatchError::Truncated));
    assert_eq!(decode_batch(b"\x09"), Err(BatchError::UnknownFormat(9)));
    assert_eq!(decode_batch(b"\x01\x00\x00\x00\x00"), Ok(vec![]));
    assert_eq!(
        decode_batch(b"\x01\x00\x00\x00\x00x"),
        Err(BatchError::TrailingBytes)
    );
    assert_eq!(
        decode_batch(b"\x01\x01\x00\x00\x00\x00\x00\x00\x00"),
        Err(BatchError::EmptyCommand)
    );
    // A huge count with nothing behind it fails without reserving for it.
    assert_eq!(
        decode_batch(b"\x01\xff\xff\xff\xff"),
        Err(BatchError::Truncated)
    );
    assert_eq!(
        decode_batch(b"\x01\x01\x00\x00\x00\xff\xff\xff\xff"),
        Err(BatchError::Truncated)
    );
    // Format 2: a time, then entries with a kind byte.
    assert_eq!(
        decode_batch(b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x07"),
        Err(BatchError::UnknownFormat(7))
    );
    assert_eq!(
        decode_batch(b"\x02\x00\x00\x00\x00"),
        Err(BatchError::Truncated)
    );
    assert_eq!(decode_results(b"\x02\xff"), Err(BatchError::InvalidMessage));
    assert_eq!(decode_results(b"\x03"), Err(BatchError::Truncated));
    assert_eq!(decode_results(b"\x04"), Err(BatchError::UnknownFormat(4)));
}

#[test]
fn batch_layout_is_fixed_width_little_endian() {
    let op = encode_batch(&[args(&["GET", "k"])]);
    assert_eq!(
        op,
        b"\x02\0\0\0\0\0\0\0\0\x01\x00\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00GET\x01\x00\x00\x00k"
    );
    assert_eq!(encoded_batch_len(&[args(&["GET", "k"])]), op.len());
    let result = vr_kv::batch::encode_results_at(9, &[Reply::Integer(7)]);
    assert_eq!(
        result,
        b"\x03\x09\0\0\0\0\0\0\0\x01\x00\x00\x00\x04\x00\x00\x00:7\r\n"
    );
    assert_eq!(vr_kv::batch::result_seq(&result), Some(9));
    assert_eq!(encode_rejected("why"), b"\x02why");
}

/// A command over a few keys, so random ones collide and interact.
fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let key = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(|k| k.as_bytes().to_vec());
    let value = prop_oneof![
        Just(b"1".to_vec()),
        Just(b"-5".to_vec()),
        Just(b"x".to_vec()),
        Just(b"9223372036854775807".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    let name = prop_oneof![
        Just("GET"),
        Just("SET"),
        Just("DEL"),
        Just("EXISTS"),
        Just("INCR"),
        Just("INCRBY"),
        Just("APPEND"),
        Just("MGET"),
        Just("MSET"),
        Just("PING"),
        Just("ECHO"),
        Just("NOPE"),
    ];
    (
        name,
        proptest::collection::vec(prop_oneof![key, value], 0..5),
    )
        .prop_map(|(name, mut rest)| {
            rest.insert(0, name.as_bytes().to_vec());
            rest
        })
}

proptest! {
    #[test]
    fn decode_batch_never_panics(op in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_batch(&op);
        let _ = decode_results(&op);
        let mut prefixed = vec![OP_FORMAT_BATCH];
        prefixed.extend_from_slice(&op);
        let _ = decode_batch(&prefixed);
        let mut store = Store::new();
        let result = store.execute(1, &op);
        prop_assert!(decode_results(&result).is_ok());
    }

    #[test]
    fn batches_round_trip(batch in proptest::collection::vec(command(), 0..8)) {
        let op = encode_batch(&batch);
        prop_assert_eq!(op.len(), encoded_batch_len(&batch));
        prop_assert_eq!(decode_batch(&op), Ok(batch));
    }

    #[test]
    fn same_ops_same_results_same_state(
        ops in proptest::collection::vec(proptest::collection::vec(command(), 1..6), 1..20),
    ) {
        let mut a = Store::new();
        let mut b = Store::new();
        for (i, batch) in ops.iter().enumerate() {
            let op = encode_batch(batch);
            let n = i as u64 + 1;
            let result = a.execute(n, &op);
            prop_assert_eq!(&result, &b.execute(n, &op));
            match decode_results(&result) {
                Ok(BatchResult::Replies(replies)) => prop_assert_eq!(replies.len(), batch.len()),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn read_agrees_with_apply_and_changes_nothing(
        setup in proptest::collection::vec(command(), 0..10),
        query in command(),
    ) {
        let mut s = Store::new();
        for args in &setup {
            s.apply(args);
        }
        if is_read_only(&query) {
            let before = s.clone();
            let read = s.read(&query);
            prop_assert_eq!(&s, &before);
            prop_assert_eq!(read, s.apply(&query));
            prop_assert_eq!(&s, &before);
        }
    }
}
