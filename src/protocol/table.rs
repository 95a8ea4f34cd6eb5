//! The command table: one row per command, as Redis keeps in `commands.def`.
//!
//! Everything that depends on which commands exist is derived from
//! [`COMMANDS`]: parsing ([`lookup`] then the row's parser), the arity check,
//! the AUTH gate ([`Flags::NO_AUTH`]), the RESP2 subscribed-mode gate
//! ([`Flags::SUBSCRIBED`]), and the `COMMAND` / `COMMAND INFO` / `COMMAND
//! COUNT` / `COMMAND DOCS` / `COMMAND GETKEYS` replies, which cluster-aware
//! clients read to find the key of a command (redis-py's `CommandsParser`
//! uses first key / last key / step; go-redis the first key).
//!
//! # Ground rules
//!
//! - Adding a command is adding one row here and one parser in
//!   [`super::command`]; nothing else lists command names.
//! - `arity` counts the command name, as in Redis: `n` means exactly `n`
//!   words, `-n` at least `n`. Finer checks (a trailing flag, subcommands)
//!   are the parser's.
//! - Key positions are argument indexes (the name is 0); `last_key` -1 means
//!   the last argument. Every command here has at most one key: the order id.

use super::command::{self, Command, CommandError};
use super::reply::{
    Protocol, write_array_header, write_bulk, write_integer, write_map_header, write_null,
    write_simple,
};

/// A set of command flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flags(u16);

impl Flags {
    /// Changes a timer: answered only once the journal has it (`write`).
    pub const WRITE: Flags = Flags(1);
    /// Reads state without changing it (`readonly`).
    pub const READONLY: Flags = Flags(1 << 1);
    /// Runs before the connection has authenticated (`no_auth`).
    pub const NO_AUTH: Flags = Flags(1 << 2);
    /// Runs on a RESP2 connection in subscribed mode. Internal: Redis
    /// hard-codes this list, so it is not printed by `COMMAND`.
    pub const SUBSCRIBED: Flags = Flags(1 << 3);
    /// A pub/sub command (`pubsub`).
    pub const PUBSUB: Flags = Flags(1 << 4);
    /// O(1) or O(log n), never blocks (`fast`).
    pub const FAST: Flags = Flags(1 << 5);
    /// Runs while the server loads its data (`loading`).
    pub const LOADING: Flags = Flags(1 << 6);
    /// Administrative or introspective (`admin`-free, `noscript`).
    pub const NOSCRIPT: Flags = Flags(1 << 7);
    /// Refused between `MULTI` and `EXEC` (`no_multi`): it changes the
    /// connection, which a queued command must not.
    pub const NO_MULTI: Flags = Flags(1 << 8);

    /// Redis's name for each flag printed by `COMMAND`, in Redis's order.
    const NAMES: [(Flags, Option<&'static str>); 9] = [
        (Flags::WRITE, Some("write")),
        (Flags::READONLY, Some("readonly")),
        (Flags::NOSCRIPT, Some("noscript")),
        (Flags::NO_MULTI, Some("no_multi")),
        (Flags::LOADING, Some("loading")),
        (Flags::PUBSUB, Some("pubsub")),
        (Flags::FAST, Some("fast")),
        (Flags::NO_AUTH, Some("no_auth")),
        (Flags::SUBSCRIBED, None),
    ];

    /// Both sets together.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags `COMMAND` prints, by Redis's names.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .filter_map(|(_, name)| name)
    }
}

/// Where a command's keys are, by argument index (see the module rules).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyRange {
    /// Index of the first key.
    pub first: i64,
    /// Index of the last key; -1: the last argument.
    pub last: i64,
    /// Distance between two keys.
    pub step: i64,
}

impl KeyRange {
    /// One key, the first argument: `ADD id ...`, `CANCEL id`, `PTTL id`.
    pub const FIRST_ARGUMENT: KeyRange = KeyRange {
        first: 1,
        last: 1,
        step: 1,
    };
}

/// What a command is about: the `COMMAND DOCS` group and the server module
/// that executes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Group {
    /// Schedule, cancel and inspect timers.
    Timers,
    /// `fired` notifications.
    Pubsub,
    /// The connection's own state.
    Connection,
    /// Introspection and configuration.
    Server,
    /// `MULTI` / `EXEC` / `DISCARD`.
    Transactions,
}

impl Group {
    /// The name `COMMAND DOCS` prints.
    pub fn name(self) -> &'static str {
        match self {
            Group::Timers => "timers",
            Group::Pubsub => "pubsub",
            Group::Connection => "connection",
            Group::Server => "server",
            Group::Transactions => "transactions",
        }
    }
}

/// One row of the command table.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// Words including the name: `n` exactly, `-n` at least.
    pub arity: i64,
    /// What the command may do and when it may run.
    pub flags: Flags,
    /// Where the key is; `None` for commands without keys.
    pub keys: Option<KeyRange>,
    /// Documentation group and executing module.
    pub group: Group,
    /// Arguments after the name, for `COMMAND DOCS` and the docs.
    pub syntax: &'static str,
    /// One line for `COMMAND DOCS`.
    pub summary: &'static str,
    /// Types the arguments after the name; the arity is already checked.
    pub parse: fn(Vec<Vec<u8>>) -> Result<Command, CommandError>,
}

impl CommandSpec {
    /// Whether `words` (the name included) fits the arity.
    pub fn arity_allows(&self, words: usize) -> bool {
        let words = words as i64;
        if self.arity >= 0 {
            words == self.arity
        } else {
            words >= -self.arity
        }
    }

    /// Checks the arity, then types the arguments after the name.
    pub fn parse(&'static self, rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
        if !self.arity_allows(rest.len() + 1) {
            return Err(CommandError::WrongArity(self.name));
        }
        (self.parse)(rest)
    }

    /// The keys of `args` (the name at index 0), by the key range.
    pub fn keys<'a>(&self, args: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        let Some(range) = self.keys else {
            return Vec::new();
        };
        let last = if range.last < 0 {
            args.len() as i64 + range.last
        } else {
            range.last
        };
        (range.first..=last)
            .step_by(range.step.max(1) as usize)
            .filter_map(|i| args.get(i as usize).map(Vec::as_slice))
            .collect()
    }
}

/// Every command, hot ones first (lookup is a linear scan).
pub static COMMANDS: [CommandSpec; 23] = [
    CommandSpec {
        name: "add",
        arity: -3,
        flags: Flags::WRITE.with(Flags::FAST),
        keys: Some(KeyRange::FIRST_ARGUMENT),
        group: Group::Timers,
        syntax: "id delay [REPLACE]",
        summary: "Schedules an order to fire after delay: milliseconds, or 1800s, 30m, 2h, 1d; returns the deadline (Unix ms).",
        parse: command::parse_add,
    },
    CommandSpec {
        name: "cancel",
        arity: 2,
        flags: Flags::WRITE.with(Flags::FAST),
        keys: Some(KeyRange::FIRST_ARGUMENT),
        group: Group::Timers,
        syntax: "id",
        summary: "Cancels a pending order: 1 means it will never fire, 0 that it was not pending.",
        parse: command::parse_cancel,
    },
    CommandSpec {
        name: "addat",
        arity: -3,
        flags: Flags::WRITE.with(Flags::FAST),
        keys: Some(KeyRange::FIRST_ARGUMENT),
        group: Group::Timers,
        syntax: "id unix_ms [REPLACE]",
        summary: "Schedules an order to fire at a Unix time in milliseconds; returns the deadline.",
        parse: command::parse_addat,
    },
    CommandSpec {
        name: "pttl",
        arity: 2,
        flags: Flags::READONLY.with(Flags::FAST),
        keys: Some(KeyRange::FIRST_ARGUMENT),
        group: Group::Timers,
        syntax: "id",
        summary: "Milliseconds until a pending order fires, or -2 if it is not pending.",
        parse: command::parse_pttl,
    },
    CommandSpec {
        name: "count",
        arity: 1,
        flags: Flags::READONLY.with(Flags::FAST),
        keys: None,
        group: Group::Timers,
        syntax: "",
        summary: "Number of pending orders.",
        parse: command::parse_count,
    },
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: Flags::FAST
            .with(Flags::NO_AUTH)
            .with(Flags::SUBSCRIBED)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Connection,
        syntax: "[message]",
        summary: "Answers PONG, or the message.",
        parse: command::parse_ping,
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: Flags::LOADING,
        keys: None,
        group: Group::Server,
        syntax: "[section ...]",
        summary: "Server, client, timer and journal figures.",
        parse: command::parse_info,
    },
    CommandSpec {
        name: "subscribe",
        arity: -2,
        flags: Flags::PUBSUB
            .with(Flags::NO_MULTI)
            .with(Flags::SUBSCRIBED)
            .with(Flags::NOSCRIPT)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Pubsub,
        syntax: "channel [channel ...]",
        summary: "Listens for fired orders on the channel `fired`.",
        parse: command::parse_subscribe,
    },
    CommandSpec {
        name: "unsubscribe",
        arity: -1,
        flags: Flags::PUBSUB
            .with(Flags::NO_MULTI)
            .with(Flags::SUBSCRIBED)
            .with(Flags::NOSCRIPT)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Pubsub,
        syntax: "[channel ...]",
        summary: "Stops listening on the channels, or on all.",
        parse: command::parse_unsubscribe,
    },
    CommandSpec {
        name: "punsubscribe",
        arity: -1,
        flags: Flags::PUBSUB
            .with(Flags::NO_MULTI)
            .with(Flags::SUBSCRIBED)
            .with(Flags::NOSCRIPT)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Pubsub,
        syntax: "[pattern ...]",
        summary: "Confirms leaving pattern subscriptions (there are none).",
        parse: command::parse_punsubscribe,
    },
    CommandSpec {
        name: "quit",
        arity: 1,
        flags: Flags::FAST
            .with(Flags::NO_AUTH)
            .with(Flags::SUBSCRIBED)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Connection,
        syntax: "",
        summary: "Closes the connection after the reply.",
        parse: command::parse_quit,
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: Flags::FAST
            .with(Flags::NO_MULTI)
            .with(Flags::NO_AUTH)
            .with(Flags::NOSCRIPT)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Connection,
        syntax: "[protover [AUTH user password] [SETNAME name]]",
        summary: "Chooses RESP2 or RESP3, optionally authenticating.",
        parse: command::parse_hello,
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: Flags::FAST
            .with(Flags::NO_MULTI)
            .with(Flags::NO_AUTH)
            .with(Flags::NOSCRIPT)
            .with(Flags::LOADING),
        keys: None,
        group: Group::Connection,
        syntax: "[user] password",
        summary: "Authenticates the connection.",
        parse: command::parse_auth,
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: Flags::LOADING,
        keys: None,
        group: Group::Server,
        syntax: "[COUNT | DOCS [name ...] | INFO [name ...] | LIST | GETKEYS command [arg ...]]",
        summary: "Describes the commands: arity, flags, key positions, documentation.",
        parse: command::parse_command,
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: Flags::NOSCRIPT.with(Flags::LOADING),
        keys: None,
        group: Group::Server,
        syntax: "GET pattern [pattern ...]",
        summary: "Reads the few settings Redis clients ask for.",
        parse: command::parse_config,
    },
    CommandSpec {
        name: "cluster",
        arity: -2,
        flags: Flags::LOADING,
        keys: None,
        group: Group::Server,
        syntax: "SLOTS | SHARDS | NODES | INFO | MYID | KEYSLOT id",
        summary: "Cluster mode: which node serves which hash slots (from the partition leases).",
        parse: command::parse_cluster,
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: Flags::NOSCRIPT.with(Flags::LOADING),
        keys: None,
        group: Group::Connection,
        syntax: "SETNAME name | GETNAME | ID | INFO | LIST | SETINFO ...",
        summary: "The connection's name, id and description.",
        parse: command::parse_client,
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: Flags::FAST.with(Flags::LOADING),
        keys: None,
        group: Group::Connection,
        syntax: "db",
        summary: "Accepts database 0, the only one.",
        parse: command::parse_select,
    },
    CommandSpec {
        name: "multi",
        arity: 1,
        flags: Flags::NOSCRIPT
            .with(Flags::LOADING)
            .with(Flags::FAST)
            .with(Flags::NO_MULTI),
        keys: None,
        group: Group::Transactions,
        syntax: "",
        summary: "Starts queueing commands (+QUEUED) until EXEC runs them in order or DISCARD drops them.",
        parse: command::parse_multi,
    },
    CommandSpec {
        name: "exec",
        arity: 1,
        flags: Flags::NOSCRIPT.with(Flags::LOADING),
        keys: None,
        group: Group::Transactions,
        syntax: "",
        summary: "Runs the queued commands in order; replies with their replies once every queued write is durable.",
        parse: command::parse_exec,
    },
    CommandSpec {
        name: "discard",
        arity: 1,
        flags: Flags::NOSCRIPT.with(Flags::LOADING).with(Flags::FAST),
        keys: None,
        group: Group::Transactions,
        syntax: "",
        summary: "Drops the queued commands.",
        parse: command::parse_discard,
    },
    CommandSpec {
        name: "watch",
        arity: -2,
        flags: Flags::NOSCRIPT
            .with(Flags::LOADING)
            .with(Flags::FAST)
            .with(Flags::NO_MULTI),
        keys: Some(KeyRange {
            first: 1,
            last: -1,
            step: 1,
        }),
        group: Group::Transactions,
        syntax: "id [id ...]",
        summary: "Not supported: always an error (optimistic locking has nothing to guard here).",
        parse: command::parse_watch,
    },
    CommandSpec {
        name: "unwatch",
        arity: 1,
        flags: Flags::NOSCRIPT.with(Flags::LOADING).with(Flags::FAST),
        keys: None,
        group: Group::Transactions,
        syntax: "",
        summary: "Answers OK: nothing is ever watched.",
        parse: command::parse_unwatch,
    },
];

/// The row for `name`, compared case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// `COMMAND INFO`'s entry for one command, in Redis 7's ten-field layout:
/// name, arity, flags, first key, last key, step, ACL categories, tips, key
/// specs, subcommands.
pub fn write_info(out: &mut Vec<u8>, proto: Protocol, spec: &CommandSpec) {
    let keys = spec.keys.unwrap_or(KeyRange {
        first: 0,
        last: 0,
        step: 0,
    });
    write_array_header(out, 10);
    write_bulk(out, spec.name.as_bytes());
    write_integer(out, spec.arity);
    let flags: Vec<_> = spec.flags.names().collect();
    write_array_header(out, flags.len());
    for flag in flags {
        write_simple(out, flag);
    }
    write_integer(out, keys.first);
    write_integer(out, keys.last);
    write_integer(out, keys.step);
    let categories = acl_categories(spec);
    write_array_header(out, categories.len());
    for category in categories {
        write_simple(out, category);
    }
    write_array_header(out, 0); // tips
    match spec.keys {
        Some(range) => {
            write_array_header(out, 1);
            write_key_spec(out, proto, spec.flags, range);
        }
        None => write_array_header(out, 0),
    }
    write_array_header(out, 0); // subcommands
}

/// Redis 7's key specification for a range: begin at `first`, then take
/// keys up to `last` (relative), every `step`.
fn write_key_spec(out: &mut Vec<u8>, proto: Protocol, flags: Flags, range: KeyRange) {
    write_map_header(out, proto, 3);
    write_bulk(out, b"flags");
    let access: [&str; 2] = if flags.contains(Flags::WRITE) {
        ["RW", "update"]
    } else {
        ["RO", "access"]
    };
    write_array_header(out, access.len());
    for flag in access {
        write_simple(out, flag);
    }
    write_bulk(out, b"begin_search");
    write_map_header(out, proto, 2);
    write_bulk(out, b"type");
    write_bulk(out, b"index");
    write_bulk(out, b"spec");
    write_map_header(out, proto, 1);
    write_bulk(out, b"index");
    write_integer(out, range.first);
    write_bulk(out, b"find_keys");
    write_map_header(out, proto, 2);
    write_bulk(out, b"type");
    write_bulk(out, b"range");
    write_bulk(out, b"spec");
    write_map_header(out, proto, 3);
    write_bulk(out, b"lastkey");
    write_integer(
        out,
        if range.last < 0 {
            range.last
        } else {
            range.last - range.first
        },
    );
    write_bulk(out, b"keystep");
    write_integer(out, range.step);
    write_bulk(out, b"limit");
    write_integer(out, 0);
}

/// ACL categories, derived from the flags and the group as Redis derives
/// `@write`, `@read`, `@fast`, `@slow` and `@pubsub`.
fn acl_categories(spec: &CommandSpec) -> Vec<&'static str> {
    let flags = spec.flags;
    let mut categories = Vec::new();
    if flags.contains(Flags::WRITE) {
        categories.push("@write");
    }
    if flags.contains(Flags::READONLY) {
        categories.push("@read");
    }
    categories.push(if flags.contains(Flags::FAST) {
        "@fast"
    } else {
        "@slow"
    });
    match spec.group {
        Group::Pubsub => categories.push("@pubsub"),
        Group::Connection => categories.push("@connection"),
        Group::Transactions => categories.push("@transaction"),
        Group::Timers | Group::Server => {}
    }
    categories
}

/// `COMMAND DOCS`'s entry for one command (the map value under its name).
pub fn write_docs(out: &mut Vec<u8>, proto: Protocol, spec: &CommandSpec) {
    write_map_header(out, proto, 4);
    write_bulk(out, b"summary");
    write_bulk(out, spec.summary.as_bytes());
    write_bulk(out, b"since");
    write_bulk(out, b"0.1.0");
    write_bulk(out, b"group");
    write_bulk(out, spec.group.name().as_bytes());
    write_bulk(out, b"syntax");
    write_bulk(out, spec.syntax.as_bytes());
}

/// `COMMAND [subcommand ...]`, answered from the table.
pub fn write_command_reply(out: &mut Vec<u8>, proto: Protocol, args: &[Vec<u8>]) {
    let Some((sub, rest)) = args.split_first() else {
        write_array_header(out, COMMANDS.len());
        for spec in &COMMANDS {
            write_info(out, proto, spec);
        }
        return;
    };
    let specs_named = |names: &[Vec<u8>]| -> Vec<Option<&'static CommandSpec>> {
        if names.is_empty() {
            COMMANDS.iter().map(Some).collect()
        } else {
            names.iter().map(|name| lookup(name)).collect()
        }
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" if rest.is_empty() => write_integer(out, COMMANDS.len() as i64),
        b"list" if rest.is_empty() => {
            write_array_header(out, COMMANDS.len());
            for spec in &COMMANDS {
                write_bulk(out, spec.name.as_bytes());
            }
        }
        b"info" => {
            let specs = specs_named(rest);
            write_array_header(out, specs.len());
            for spec in specs {
                match spec {
                    Some(spec) => write_info(out, proto, spec),
                    None => write_null(out, proto),
                }
            }
        }
        b"docs" => {
            let specs: Vec<_> = specs_named(rest).into_iter().flatten().collect();
            write_map_header(out, proto, specs.len());
            for spec in specs {
                write_bulk(out, spec.name.as_bytes());
                write_docs(out, proto, spec);
            }
        }
        b"getkeys" => write_getkeys(out, rest),
        b"count" | b"list" => super::reply::write_error(
            out,
            CommandError::WrongArity(if sub.eq_ignore_ascii_case(b"count") {
                "command|count"
            } else {
                "command|list"
            }),
        ),
        _ => super::reply::write_error(
            out,
            CommandError::UnknownSubcommand {
                command: "command",
                subcommand: sub.clone(),
            },
        ),
    }
}

/// `COMMAND GETKEYS command arg ...`: the keys, as Redis finds them.
fn write_getkeys(out: &mut Vec<u8>, words: &[Vec<u8>]) {
    let Some(name) = words.first() else {
        return super::reply::write_error(out, CommandError::WrongArity("command|getkeys"));
    };
    let Some(spec) = lookup(name) else {
        return super::reply::write_error(out, "ERR Invalid command specified");
    };
    if !spec.arity_allows(words.len()) {
        return super::reply::write_error(
            out,
            "ERR Invalid number of arguments specified for command",
        );
    }
    let keys = spec.keys(words);
    if keys.is_empty() {
        return super::reply::write_error(out, "ERR The command has no key arguments");
    }
    write_array_header(out, keys.len());
    for key in keys {
        write_bulk(out, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_and_unique() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(
                COMMANDS[..i].iter().all(|other| other.name != spec.name),
                "{} twice",
                spec.name
            );
            assert_eq!(
                lookup(spec.name.to_ascii_uppercase().as_bytes()).map(|s| s.name),
                Some(spec.name)
            );
        }
        assert!(lookup(b"").is_none());
        assert!(lookup(b"addx").is_none());
    }

    #[test]
    fn arity_follows_redis_convention() {
        let add = lookup(b"add").unwrap();
        assert!(!add.arity_allows(2));
        assert!(add.arity_allows(3));
        assert!(add.arity_allows(4));
        let cancel = lookup(b"cancel").unwrap();
        assert!(!cancel.arity_allows(1));
        assert!(cancel.arity_allows(2));
        assert!(!cancel.arity_allows(3));
    }

    #[test]
    fn writes_are_flagged_and_keyed() {
        for spec in &COMMANDS {
            let writes = spec.flags.contains(Flags::WRITE);
            assert_eq!(
                writes,
                matches!(spec.name, "add" | "addat" | "cancel"),
                "{}",
                spec.name
            );
            assert!(!(writes && spec.flags.contains(Flags::READONLY)));
            if spec.group == Group::Timers && spec.name != "count" {
                assert_eq!(spec.keys, Some(KeyRange::FIRST_ARGUMENT), "{}", spec.name);
            }
        }
    }

    #[test]
    fn keys_of_a_request() {
        let words: Vec<Vec<u8>> = ["ADD", "order:1", "1000"]
            .map(|w| w.as_bytes().to_vec())
            .into();
        assert_eq!(lookup(b"add").unwrap().keys(&words), vec![&b"order:1"[..]]);
        assert!(lookup(b"ping").unwrap().keys(&words).is_empty());
        let last = CommandSpec {
            keys: Some(KeyRange {
                first: 1,
                last: -1,
                step: 2,
            }),
            ..COMMANDS[0]
        };
        let words: Vec<Vec<u8>> = ["X", "a", "1", "b", "2"]
            .map(|w| w.as_bytes().to_vec())
            .into();
        assert_eq!(last.keys(&words), vec![&b"a"[..], b"b"]);
    }

    #[test]
    fn command_info_add_is_redis_shaped() {
        let mut out = Vec::new();
        write_command_reply(
            &mut out,
            Protocol::Resp2,
            &[b"INFO".to_vec(), b"add".to_vec()],
        );
        let text = String::from_utf8(out).unwrap();
        let expected = "*1\r\n*10\r\n$3\r\nadd\r\n:-3\r\n*2\r\n+write\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
                        *2\r\n+@write\r\n+@fast\r\n*0\r\n\
                        *1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RW\r\n+update\r\n\
                        $12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n\
                        $9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
                        *6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn command_count_and_unknown_info() {
        let reply = |args: &[&str]| {
            let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
            let mut out = Vec::new();
            write_command_reply(&mut out, Protocol::Resp2, &args);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(reply(&["COUNT"]), format!(":{}\r\n", COMMANDS.len()));
        assert_eq!(reply(&["INFO", "nosuch"]), "*1\r\n$-1\r\n");
        assert_eq!(reply(&["GETKEYS", "CANCEL", "o:9"]), "*1\r\n$3\r\no:9\r\n");
        assert_eq!(
            reply(&["GETKEYS", "PING"]),
            "-ERR The command has no key arguments\r\n"
        );
        assert_eq!(
            reply(&["GETKEYS", "CANCEL"]),
            "-ERR Invalid number of arguments specified for command\r\n"
        );
        assert_eq!(
            reply(&["FOO"]),
            "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"
        );
        assert!(reply(&[]).starts_with(&format!("*{}\r\n*10\r\n", COMMANDS.len())));
    }
}
