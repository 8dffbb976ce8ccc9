//! Connection and server commands answered by the front end, without the
//! log: `HELLO`, `AUTH`, `CLIENT`, `SELECT`, `COMMAND`, `CONFIG`, `INFO`,
//! `TIME`. Each is a function of the connection's state and the node's
//! view; [`crate::session`] calls them.

use crate::command::{wrong_arity, Exec, TABLE};
use crate::commands::{array, bulk, glob, integer, syntax};
use crate::resp::{parse_integer, Reply};
use crate::store::Store;

/// The Redis version whose commands and replies this server follows
/// (`INFO server`'s `redis_version`, `HELLO`'s `version`).
pub const REDIS_VERSION: &str = "7.0.0";

/// What a connection knows about itself.
#[derive(Clone, Debug, Default)]
pub struct ClientState {
    /// A number unique on this node (`CLIENT ID`).
    pub id: u64,
    /// Set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    pub name: Option<Vec<u8>>,
    /// `CLIENT SETINFO lib-name` / `lib-ver`.
    pub lib_name: Option<Vec<u8>>,
    /// `CLIENT SETINFO lib-ver`.
    pub lib_ver: Option<Vec<u8>>,
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

const ERR_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        String::from_utf8_lossy(sub),
        command.to_ascii_uppercase()
    ))
}

/// `AUTH [username] password`: there are no passwords; the default user
/// takes any, as Redis's `nopass` default user does.
pub fn auth(args: &[Vec<u8>]) -> Reply {
    match args.len() {
        2 => Reply::Error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
                .to_owned(),
        ),
        3 if args[1] == b"default" => Reply::ok(),
        3 => Reply::Error(
            "WRONGPASS invalid username-password pair or user is disabled.".to_owned(),
        ),
        _ => syntax(),
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: RESP2
/// only; protocol 3 gets Redis's `NOPROTO`.
pub fn hello(args: &[Vec<u8>], client: &mut ClientState, primary: bool) -> Reply {
    if let Some(version) = args.get(1) {
        match parse_integer(version) {
            Some(2) => {}
            Some(3) => {
                return Reply::Error(
                    "NOPROTO sorry, this protocol version is not supported (vr-kv speaks RESP2)"
                        .to_owned(),
                )
            }
            Some(_) => {
                return Reply::Error(
                    "NOPROTO sorry, this protocol version is not supported.".to_owned(),
                )
            }
            None => {
                return Reply::Error(
                    "ERR Protocol version is not an integer or out of range".to_owned(),
                )
            }
        }
    }
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            let reply = auth(&[b"auth".to_vec(), args[i + 1].clone(), args[i + 2].clone()]);
            if matches!(reply, Reply::Error(_)) {
                return reply;
            }
            i += 3;
        } else if args[i].eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
            if !valid_name(&args[i + 1]) {
                return Reply::Error(ERR_NAME.to_owned());
            }
            name = Some(args[i + 1].clone());
            i += 2;
        } else {
            return Reply::Error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&args[i])
            ));
        }
    }
    if name.is_some() {
        client.name = name;
    }
    let text = |s: &str| bulk(s.as_bytes());
    array(vec![
        text("server"),
        text("redis"),
        text("version"),
        text(REDIS_VERSION),
        text("proto"),
        Reply::Integer(2),
        text("id"),
        Reply::Integer(i64::try_from(client.id).unwrap_or(i64::MAX)),
        text("mode"),
        text("standalone"),
        text("role"),
        text(if primary { "master" } else { "replica" }),
        text("modules"),
        array(Vec::new()),
    ])
}

/// `CLIENT SETNAME | GETNAME | SETINFO | ID | INFO | LIST | NO-EVICT |
/// NO-TOUCH`.
pub fn client(args: &[Vec<u8>], client: &mut ClientState) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    let arity = |n: usize| args.len() == n;
    match sub.as_slice() {
        b"setname" if arity(3) => {
            if !valid_name(&args[2]) {
                return Reply::Error(ERR_NAME.to_owned());
            }
            client.name = (!args[2].is_empty()).then(|| args[2].clone());
            Reply::ok()
        }
        b"getname" if arity(2) => Reply::Bulk(client.name.clone()),
        b"id" if arity(2) => Reply::Integer(i64::try_from(client.id).unwrap_or(i64::MAX)),
        b"setinfo" if arity(4) => {
            let value = args[3].clone();
            if args[2].eq_ignore_ascii_case(b"lib-name") {
                client.lib_name = Some(value);
            } else if args[2].eq_ignore_ascii_case(b"lib-ver") {
                client.lib_ver = Some(value);
            } else {
                return Reply::Error(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(&args[2])
                ));
            }
            Reply::ok()
        }
        b"info" if arity(2) => bulk(client_line(client).as_bytes()),
        b"list" => bulk(client_line(client).as_bytes()),
        b"no-evict" | b"no-touch" if arity(3) => Reply::ok(),
        b"setname" | b"getname" | b"id" | b"setinfo" | b"info" | b"no-evict" | b"no-touch" => {
            Reply::Error(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            ))
        }
        _ => unknown_subcommand(&args[1], "client"),
    }
}

fn client_line(client: &ClientState) -> String {
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} name={} db=0 lib-name={} lib-ver={}\n",
        client.id,
        text(&client.name),
        text(&client.lib_name),
        text(&client.lib_ver)
    )
}

/// `SELECT index`: one database, 0.
pub fn select(args: &[Vec<u8>]) -> Reply {
    match parse_integer(&args[1]) {
        Some(0) => Reply::ok(),
        Some(_) => Reply::Error("ERR DB index is out of range".to_owned()),
        None => Reply::Error("ERR value is not an integer or out of range".to_owned()),
    }
}

fn family(name: &str) -> &'static str {
    let table_index = TABLE.iter().position(|s| s.name == name).unwrap_or(0);
    // The table lists families in this order; the boundaries are the
    // first command of each.
    let starts = [
        ("ping", "connection"),
        ("dbsize", "server"),
        ("multi", "transactions"),
        ("get", "string"),
        ("del", "generic"),
        ("hset", "hash"),
        ("lpush", "list"),
        ("sadd", "set"),
        ("zadd", "sorted-set"),
        ("blpop", "unsupported"),
    ];
    let mut group = "generic";
    for (first, name) in starts {
        if TABLE
            .iter()
            .position(|s| s.name == first)
            .is_some_and(|at| at <= table_index)
        {
            group = name;
        }
    }
    group
}

fn command_entry(index: usize) -> Reply {
    let spec = &TABLE[index];
    let text = |s: &str| Reply::Simple(s.to_owned());
    let flags = match spec.exec {
        Exec::Read(_) => vec![text("readonly")],
        Exec::Write(_) => vec![text("write")],
        Exec::Session => vec![text("fast")],
        Exec::Unsupported(_) => vec![],
    };
    let k = spec.keys;
    array(vec![
        bulk(spec.name.as_bytes()),
        Reply::Integer(i64::from(spec.arity)),
        array(flags),
        Reply::Integer(i64::from(k.first)),
        Reply::Integer(i64::from(k.last)),
        Reply::Integer(i64::from(k.step)),
        array(Vec::new()),
        array(Vec::new()),
        array(Vec::new()),
        array(Vec::new()),
    ])
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS
/// [name...]`, `COMMAND LIST`.
pub fn command(args: &[Vec<u8>]) -> Reply {
    let Some(sub) = args.get(1) else {
        return array((0..TABLE.len()).map(command_entry).collect());
    };
    let find = |name: &[u8]| {
        let lower = name.to_ascii_lowercase();
        TABLE
            .iter()
            .position(|s| s.name.as_bytes() == lower.as_slice())
    };
    let sub = sub.to_ascii_lowercase();
    match sub.as_slice() {
        b"count" if args.len() == 2 => integer(TABLE.len()),
        b"list" => array(TABLE.iter().map(|s| bulk(s.name.as_bytes())).collect()),
        b"info" => array(
            args[2..]
                .iter()
                .map(|n| find(n).map_or(Reply::Array(None), command_entry))
                .collect(),
        ),
        b"docs" => {
            let wanted: Vec<usize> = if args.len() == 2 {
                (0..TABLE.len()).collect()
            } else {
                args[2..].iter().filter_map(|n| find(n)).collect()
            };
            let mut out = Vec::new();
            for i in wanted {
                let spec = &TABLE[i];
                let summary = match spec.exec {
                    Exec::Unsupported(what) => format!("not supported by vr-kv ({what})"),
                    _ => String::new(),
                };
                out.push(bulk(spec.name.as_bytes()));
                out.push(array(vec![
                    bulk(b"summary"),
                    bulk(summary.as_bytes()),
                    bulk(b"since"),
                    bulk(b"1.0.0"),
                    bulk(b"group"),
                    bulk(family(spec.name).as_bytes()),
                ]));
            }
            array(out)
        }
        b"count" => wrong_arity("command|count"),
        _ => unknown_subcommand(&args[1], "command"),
    }
}

/// The configuration `CONFIG GET` reports: fixed, since nothing here is
/// configurable at run time.
const CONFIG: &[(&str, &str)] = &[
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("proto-max-bulk-len", "536870912"),
    ("save", ""),
    ("timeout", "0"),
    ("tcp-keepalive", "0"),
    ("notify-keyspace-events", ""),
    ("cluster-enabled", "no"),
];

/// `CONFIG GET parameter [parameter ...]`; `CONFIG SET` is refused,
/// `CONFIG RESETSTAT` accepted.
pub fn config(args: &[Vec<u8>]) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" if args.len() >= 3 => {
            let mut out = Vec::new();
            for (name, value) in CONFIG {
                if args[2..]
                    .iter()
                    .any(|p| glob(&p.to_ascii_lowercase(), name.as_bytes()))
                {
                    out.push(bulk(name.as_bytes()));
                    out.push(bulk(value.as_bytes()));
                }
            }
            array(out)
        }
        b"set" => Reply::Error(
            "ERR CONFIG SET is not supported by vr-kv: the configuration is fixed at start"
                .to_owned(),
        ),
        b"resetstat" if args.len() == 2 => Reply::ok(),
        b"get" | b"resetstat" => Reply::Error(format!(
            "ERR wrong number of arguments for 'config|{}' command",
            String::from_utf8_lossy(&sub)
        )),
        _ => unknown_subcommand(&args[1], "config"),
    }
}

/// `TIME`: this node's clock, `[seconds, microseconds]`.
pub fn time(now_micros: u64) -> Reply {
    array(vec![
        bulk((now_micros / 1_000_000).to_string().as_bytes()),
        bulk((now_micros % 1_000_000).to_string().as_bytes()),
    ])
}

/// The sections of `INFO` other than `replication`, which the session
/// adds from the node's status.
pub fn info_section(section: &str, store: &Store, connected_clients: usize) -> Option<String> {
    Some(match section {
        "server" => format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nvr_kv_version:{}\r\narch_bits:64\r\nprocess_id:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ),
        "clients" => format!(
            "# Clients\r\nconnected_clients:{connected_clients}\r\nblocked_clients:0\r\n"
        ),
        "memory" => "# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n".to_owned(),
        "persistence" => "# Persistence\r\nloading:0\r\naof_enabled:0\r\nrdb_changes_since_last_save:0\r\n".to_owned(),
        "keyspace" => {
            let db = store.db();
            let mut text = "# Keyspace\r\n".to_owned();
            if !db.is_empty() {
                text.push_str(&format!(
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    db.len(),
                    db.expiring()
                ));
            }
            text
        }
        _ => return None,
    })
}
