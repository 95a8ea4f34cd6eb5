//! Commands: a [`Request`] checked and typed into a [`Command`], or a
//! [`CommandError`] worded the way Redis words it.
//!
//! Which commands exist, their arity, flags and key positions are in the
//! command table ([`super::table`]); this module holds the typed commands
//! and the parser of each row.
//!
//! # Ground rules
//!
//! - Only syntax is checked here: arity, flags, integers, ids. Whether an id
//!   exists, whether a deadline is in the past, which `CONFIG`/`CLIENT`
//!   subcommands are supported: that is for the server and the engine.
//! - Arguments are checked left to right; the first bad one decides the error.
//! - Command names and flags are case-insensitive.
//! - An error line never echoes client bytes raw: echoed bytes are cut to
//!   [`MAX_ECHO_LEN`] and escaped to printable ASCII (`\r` shows as `\r`).

use std::fmt;

// One definition of what an id and a delay may be, shared with the engine.
pub use crate::id::{MAX_ID_LEN, is_valid_id};
pub use crate::limits::{MAX_DELAY_DAYS, MAX_DELAY_MS, MAX_UNIX_MS, MIN_UNIX_MS};

use super::Protocol;
use super::request::{Request, parse_i64};
use super::table::{CommandSpec, lookup};
use crate::id::OrderId;

/// Units `ADD` takes after its delay (`30m`, `1800s`, `1800000ms`); a bare
/// integer is milliseconds. Longest unit name first within a prefix, so
/// `ms` is found before `m`.
pub const DELAY_UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60 * 1_000),
    ("h", 60 * 60 * 1_000),
    ("d", 24 * 60 * 60 * 1_000),
];

/// Most client bytes echoed in an error line.
pub const MAX_ECHO_LEN: usize = 64;

/// A user name (if any) and a password, from `AUTH` or `HELLO ... AUTH`.
/// `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `None` for the one-argument `AUTH password`.
    pub user: Option<Vec<u8>>,
    /// The password, as sent.
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user.as_deref().map(<[u8]>::escape_ascii))
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A syntactically valid command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    /// `PING [message]`.
    Ping {
        /// Echoed back if present.
        message: Option<Vec<u8>>,
    },
    /// `ADD id delay [REPLACE]`: the delay in ms, or with a unit (`30m`).
    Add {
        /// The order id, validated.
        id: OrderId,
        /// `0..=MAX_DELAY_MS`, converted from the unit it was sent in.
        delay_ms: u64,
        /// Overwrite an existing timer instead of failing.
        replace: bool,
    },
    /// `ADDAT id unix_ms [REPLACE]`.
    AddAt {
        /// The order id, validated.
        id: OrderId,
        /// Deadline in milliseconds since the Unix epoch,
        /// `MIN_UNIX_MS..=MAX_UNIX_MS`.
        unix_ms: u64,
        /// Overwrite an existing timer instead of failing.
        replace: bool,
    },
    /// `CANCEL id`.
    Cancel {
        /// The order id, validated.
        id: OrderId,
    },
    /// `PTTL id`.
    Pttl {
        /// The order id, validated.
        id: OrderId,
    },
    /// `COUNT`.
    Count,
    /// `INFO [section ...]`.
    Info {
        /// Requested sections in ASCII lowercase; empty means the default set.
        sections: Vec<Vec<u8>>,
    },
    /// `SUBSCRIBE channel [channel ...]`.
    Subscribe {
        /// At least one channel.
        channels: Vec<Vec<u8>>,
    },
    /// `UNSUBSCRIBE [channel ...]`.
    Unsubscribe {
        /// Empty means every channel.
        channels: Vec<Vec<u8>>,
    },
    /// `PUNSUBSCRIBE [pattern ...]`. There are no pattern subscriptions,
    /// but clients leaving pub/sub mode send it (the `redis` crate always
    /// does) and wait for its confirmation.
    Punsubscribe {
        /// Empty means every pattern.
        patterns: Vec<Vec<u8>>,
    },
    /// `QUIT`.
    Quit,
    /// `HELLO [protover [AUTH user password] [SETNAME name]]`.
    Hello {
        /// `None` keeps the connection's protocol.
        protocol: Option<Protocol>,
        /// From `AUTH user password`; `user` is always `Some`.
        auth: Option<Credentials>,
        /// From `SETNAME`: printable ASCII without space, possibly empty.
        setname: Option<Vec<u8>>,
    },
    /// `AUTH [user] password`.
    Auth(Credentials),
    /// `COMMAND [...]`.
    Command {
        /// Everything after `COMMAND`, as sent.
        args: Vec<Vec<u8>>,
    },
    /// `CONFIG GET pattern [pattern ...]`.
    ConfigGet {
        /// At least one pattern, as sent.
        patterns: Vec<Vec<u8>>,
    },
    /// Any other `CONFIG` subcommand.
    Config {
        /// The subcommand in ASCII lowercase.
        subcommand: Vec<u8>,
        /// The arguments after it, as sent.
        args: Vec<Vec<u8>>,
    },
    /// `CLUSTER subcommand [argument ...]` (cluster mode: the lease table).
    Cluster {
        /// The subcommand in ASCII lowercase.
        subcommand: Vec<u8>,
        /// The arguments after it, as sent.
        args: Vec<Vec<u8>>,
    },
    /// `CLIENT subcommand [argument ...]`.
    Client {
        /// The subcommand in ASCII lowercase.
        subcommand: Vec<u8>,
        /// The arguments after it, as sent.
        args: Vec<Vec<u8>>,
    },
    /// `MULTI`: queue the commands that follow until `EXEC` or `DISCARD`.
    Multi,
    /// `EXEC`: run the queued commands in order.
    Exec,
    /// `DISCARD`: drop the queued commands.
    Discard,
    /// `WATCH id [id ...]`: refused by the server (see `docs/protocol.md`).
    Watch,
    /// `UNWATCH`: nothing is watched, so always `+OK`.
    Unwatch,
    /// `SELECT db`. Which databases exist is for the server to say.
    Select {
        /// Any `i64`.
        db: i64,
    },
}

impl Command {
    /// Checks a request and types it: the row of the command table, its
    /// arity, then the row's parser.
    pub fn from_request(request: Request) -> Result<Self, CommandError> {
        Self::from_row(lookup(request.command_name()), request)
    }

    /// [`Command::from_request`] for a caller that has already looked the
    /// name up in the command table (`row` is what [`lookup`] returned).
    pub fn from_row(
        row: Option<&'static CommandSpec>,
        request: Request,
    ) -> Result<Self, CommandError> {
        let mut args = request.into_args();
        if args.is_empty() {
            return Err(CommandError::UnknownCommand(Vec::new()));
        }
        let name = args.remove(0);
        match row {
            Some(spec) => spec.parse(args),
            None => Err(CommandError::UnknownCommand(name)),
        }
    }
}

impl TryFrom<Request> for Command {
    type Error = CommandError;

    fn try_from(request: Request) -> Result<Self, CommandError> {
        Self::from_request(request)
    }
}

// The parsers of the command table's rows. Each gets the arguments after
// the name, with the row's arity already checked.

pub(super) fn parse_ping(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    if rest.len() > 1 {
        return Err(CommandError::WrongArity("ping"));
    }
    Ok(Command::Ping {
        message: rest.into_iter().next(),
    })
}

pub(super) fn parse_add(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let (id, delay_ms, replace) = parse_schedule(rest, parse_delay)?;
    Ok(Command::Add {
        id,
        delay_ms,
        replace,
    })
}

pub(super) fn parse_addat(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let (id, unix_ms, replace) = parse_schedule(rest, parse_deadline)?;
    Ok(Command::AddAt {
        id,
        unix_ms,
        replace,
    })
}

pub(super) fn parse_cancel(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let [id] = exactly("cancel", rest)?;
    Ok(Command::Cancel { id: check_id(id)? })
}

pub(super) fn parse_pttl(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let [id] = exactly("pttl", rest)?;
    Ok(Command::Pttl { id: check_id(id)? })
}

pub(super) fn parse_count(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Count)
}

pub(super) fn parse_info(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Info {
        sections: rest.into_iter().map(|s| s.to_ascii_lowercase()).collect(),
    })
}

pub(super) fn parse_subscribe(channels: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Subscribe { channels })
}

pub(super) fn parse_unsubscribe(channels: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Unsubscribe { channels })
}

pub(super) fn parse_punsubscribe(patterns: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Punsubscribe { patterns })
}

pub(super) fn parse_quit(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Quit)
}

pub(super) fn parse_command(args: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Command { args })
}

pub(super) fn parse_config(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let (subcommand, args) = split_subcommand("config", rest)?;
    if subcommand == b"get" {
        if args.is_empty() {
            return Err(CommandError::WrongArity("config|get"));
        }
        Ok(Command::ConfigGet { patterns: args })
    } else {
        Ok(Command::Config { subcommand, args })
    }
}

pub(super) fn parse_cluster(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let (subcommand, args) = split_subcommand("cluster", rest)?;
    Ok(Command::Cluster { subcommand, args })
}

pub(super) fn parse_client(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let (subcommand, args) = split_subcommand("client", rest)?;
    Ok(Command::Client { subcommand, args })
}

pub(super) fn parse_select(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let [db] = exactly("select", rest)?;
    Ok(Command::Select {
        db: parse_i64(&db).ok_or(CommandError::NotAnInteger)?,
    })
}

pub(super) fn parse_multi(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Multi)
}

pub(super) fn parse_exec(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Exec)
}

pub(super) fn parse_discard(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Discard)
}

pub(super) fn parse_watch(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Watch)
}

pub(super) fn parse_unwatch(_: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    Ok(Command::Unwatch)
}

/// Exactly `N` arguments after the name.
fn exactly<const N: usize>(
    name: &'static str,
    rest: Vec<Vec<u8>>,
) -> Result<[Vec<u8>; N], CommandError> {
    rest.try_into().map_err(|_| CommandError::WrongArity(name))
}

fn check_id(id: Vec<u8>) -> Result<OrderId, CommandError> {
    OrderId::new(id).map_err(|_| CommandError::InvalidId)
}

/// `ADD`'s delay: a decimal integer (read like Redis reads integers) of
/// milliseconds, or followed by one of [`DELAY_UNITS`]; `0..=MAX_DELAY_MS`.
pub fn parse_delay(value: &[u8]) -> Result<u64, CommandError> {
    // Bare milliseconds, the common case, in one pass; a unit only if not.
    let ms = match parse_i64(value) {
        Some(n) => u64::try_from(n).ok(),
        None => delay_with_unit(value),
    };
    ms.filter(|&ms| ms <= MAX_DELAY_MS)
        .ok_or_else(|| CommandError::BadDelay(value.to_vec()))
}

/// `1800s`, `30m`, ...: digits, then one of [`DELAY_UNITS`], in ms.
fn delay_with_unit(value: &[u8]) -> Option<u64> {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = value.split_at(digits);
    let scale = DELAY_UNITS
        .iter()
        .find(|(name, _)| name.as_bytes() == unit)
        .map(|&(_, scale)| scale)?;
    let n = parse_i64(number).and_then(|n| u64::try_from(n).ok())?;
    n.checked_mul(scale)
}

/// `ADDAT`'s deadline: Unix time in milliseconds, `MIN_UNIX_MS..=MAX_UNIX_MS`.
pub fn parse_deadline(value: &[u8]) -> Result<u64, CommandError> {
    parse_i64(value)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| (MIN_UNIX_MS..=MAX_UNIX_MS).contains(n))
        .ok_or_else(|| CommandError::BadDeadline(value.to_vec()))
}

/// `id time [REPLACE]`, shared by `ADD` and `ADDAT`.
fn parse_schedule(
    rest: Vec<Vec<u8>>,
    parse_time: fn(&[u8]) -> Result<u64, CommandError>,
) -> Result<(OrderId, u64, bool), CommandError> {
    let mut rest = rest.into_iter();
    let (Some(id), Some(time)) = (rest.next(), rest.next()) else {
        return Err(CommandError::Syntax);
    };
    let id = check_id(id)?;
    let time = parse_time(&time)?;
    let replace = match (rest.next(), rest.next()) {
        (None, _) => false,
        (Some(flag), None) if flag.eq_ignore_ascii_case(b"replace") => true,
        _ => return Err(CommandError::Syntax),
    };
    Ok((id, time, replace))
}

/// `HELLO`, checked in Redis's order: version, then options left to right.
pub(super) fn parse_hello(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let Some((version, mut options)) = rest.split_first() else {
        return Ok(Command::Hello {
            protocol: None,
            auth: None,
            setname: None,
        });
    };
    let protocol = match parse_i64(version) {
        None => return Err(CommandError::InvalidProtocolVersion),
        Some(2) => Protocol::Resp2,
        Some(3) => Protocol::Resp3,
        Some(_) => return Err(CommandError::NoProto),
    };
    let (mut auth, mut setname) = (None, None);
    loop {
        options = match options {
            [] => break,
            [option, user, password, tail @ ..] if option.eq_ignore_ascii_case(b"auth") => {
                auth = Some(Credentials {
                    user: Some(user.clone()),
                    password: password.clone(),
                });
                tail
            }
            [option, name, tail @ ..] if option.eq_ignore_ascii_case(b"setname") => {
                if !name.iter().all(u8::is_ascii_graphic) {
                    return Err(CommandError::InvalidClientName);
                }
                setname = Some(name.clone());
                tail
            }
            [option, ..] => return Err(CommandError::HelloSyntax(option.clone())),
        };
    }
    Ok(Command::Hello {
        protocol: Some(protocol),
        auth,
        setname,
    })
}

/// `AUTH password` or `AUTH user password`.
pub(super) fn parse_auth(rest: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let mut rest = rest.into_iter();
    let credentials = match (rest.next(), rest.next(), rest.next()) {
        (None, _, _) => return Err(CommandError::WrongArity("auth")),
        (Some(password), None, _) => Credentials {
            user: None,
            password,
        },
        (Some(user), Some(password), None) => Credentials {
            user: Some(user),
            password,
        },
        (Some(_), Some(_), Some(_)) => return Err(CommandError::Syntax),
    };
    Ok(Command::Auth(credentials))
}

/// `CONTAINER subcommand [args...]`: the lowercased subcommand and the rest.
fn split_subcommand(
    name: &'static str,
    rest: Vec<Vec<u8>>,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), CommandError> {
    let mut rest = rest.into_iter();
    let subcommand = rest.next().ok_or(CommandError::WrongArity(name))?;
    Ok((subcommand.to_ascii_lowercase(), rest.collect()))
}

/// Why a request is not a valid command. `Display` is the error line without
/// the leading `-` and the trailing CRLF, e.g. `ERR syntax error`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CommandError {
    /// `ERR unknown command '<name>'`: the name as sent.
    UnknownCommand(Vec<u8>),
    /// `ERR wrong number of arguments for '<name>' command`: the canonical
    /// lowercase name, `container|sub` for subcommands.
    WrongArity(&'static str),
    /// `ERR syntax error`: a bad extra argument.
    Syntax,
    /// `ERR value is not an integer or out of range`.
    NotAnInteger,
    /// `ERR invalid id: ...` with the rule: see [`is_valid_id`].
    InvalidId,
    /// `ERR delay must be ...`: `ADD`'s delay is not a whole number of
    /// milliseconds or of a unit of [`DELAY_UNITS`], from 0 to
    /// [`MAX_DELAY_MS`]. The value as sent.
    BadDelay(Vec<u8>),
    /// `ERR deadline must be Unix time in milliseconds ...`: `ADDAT`'s
    /// deadline is not an integer in `MIN_UNIX_MS..=MAX_UNIX_MS`; the line
    /// says what the number looks like (seconds, microseconds). The value
    /// as sent.
    BadDeadline(Vec<u8>),
    /// `ERR Protocol version is not an integer or out of range`.
    InvalidProtocolVersion,
    /// `NOPROTO unsupported protocol version`: an integer other than 2 or 3.
    NoProto,
    /// `ERR Syntax error in HELLO option '<option>'`: the option as sent.
    HelloSyntax(Vec<u8>),
    /// `ERR Client names cannot contain spaces, newlines or special characters.`
    InvalidClientName,
    /// `ERR unknown subcommand '<sub>'. Try <COMMAND> HELP.`: not produced
    /// here; for the server, which knows the supported subcommands.
    UnknownSubcommand {
        /// The container command, lowercase (`"config"`, `"client"`).
        command: &'static str,
        /// The subcommand as sent.
        subcommand: Vec<u8>,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCommand(name) => write!(f, "ERR unknown command '{}'", Echo(name)),
            Self::WrongArity(name) => {
                write!(f, "ERR wrong number of arguments for '{name}' command")
            }
            Self::Syntax => f.write_str("ERR syntax error"),
            Self::NotAnInteger => f.write_str("ERR value is not an integer or out of range"),
            Self::InvalidId => write!(
                f,
                "ERR invalid id: an order id is 1 to {MAX_ID_LEN} bytes of printable ASCII \
                 without spaces (0x21 to 0x7E)"
            ),
            Self::BadDelay(value) => {
                let units: Vec<&str> = DELAY_UNITS.iter().map(|(name, _)| *name).collect();
                write!(
                    f,
                    "ERR delay must be an integer number of milliseconds, or an integer with a \
                     unit ({}), from 0 to {MAX_DELAY_DAYS} days ({MAX_DELAY_MS} ms); got '{}'",
                    units.join(", "),
                    Echo(value)
                )
            }
            Self::BadDeadline(value) => {
                write!(
                    f,
                    "ERR deadline must be Unix time in milliseconds, from {MIN_UNIX_MS} \
                     (2001-09-09) to {MAX_UNIX_MS} (9999-12-31); got '{}'",
                    Echo(value)
                )?;
                let Some(n) = parse_i64(value) else {
                    return f.write_str(", which is not an integer");
                };
                let in_range = |ms: i64| (MIN_UNIX_MS as i64..=MAX_UNIX_MS as i64).contains(&ms);
                if n.checked_mul(1000).is_some_and(in_range) {
                    f.write_str(", which looks like seconds: multiply by 1000")
                } else if in_range(n / 1000) {
                    f.write_str(", which looks like microseconds: divide by 1000")
                } else {
                    Ok(())
                }
            }
            Self::InvalidProtocolVersion => {
                f.write_str("ERR Protocol version is not an integer or out of range")
            }
            Self::NoProto => f.write_str("NOPROTO unsupported protocol version"),
            Self::HelloSyntax(option) => {
                write!(f, "ERR Syntax error in HELLO option '{}'", Echo(option))
            }
            Self::InvalidClientName => f.write_str(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ),
            Self::UnknownSubcommand {
                command,
                subcommand,
            } => write!(
                f,
                "ERR unknown subcommand '{}'. Try {} HELP.",
                Echo(subcommand),
                command.to_ascii_uppercase()
            ),
        }
    }
}

impl std::error::Error for CommandError {}

/// Client bytes in an error line: at most [`MAX_ECHO_LEN`] of them, escaped to
/// printable ASCII, then `...` if some were cut.
struct Echo<'a>(&'a [u8]);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.get(..MAX_ECHO_LEN).unwrap_or(self.0);
        write!(f, "{}", shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(args: &[&[u8]]) -> Result<Command, CommandError> {
        Command::from_request(Request::new(args.iter().map(|a| a.to_vec()).collect()))
    }

    /// Words separated by single spaces.
    fn cmd(line: &str) -> Result<Command, CommandError> {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        raw(&words)
    }

    fn err(line: &str) -> String {
        match cmd(line) {
            Err(e) => e.to_string(),
            Ok(command) => panic!("{line:?} parsed as {command:?}"),
        }
    }

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn oid(s: &str) -> OrderId {
        OrderId::new(s).unwrap()
    }

    const INVALID_ID: &str = "ERR invalid id: an order id is 1 to 128 bytes of printable ASCII without spaces (0x21 to 0x7E)";

    #[test]
    fn derived_constants() {
        assert_eq!(MAX_DELAY_MS, 31_622_400_000);
        // Days from 1970-01-01 to 10000-01-01, from the proleptic Gregorian
        // calendar: 8030 years, their leap days, minus the 1970 start.
        let days_before_year = |y: u64| 365 * (y - 1) + (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;
        assert_eq!(days_before_year(10_000) - days_before_year(1970), 2_932_897);
        assert_eq!(MAX_UNIX_MS, 253_402_300_799_999);
    }

    #[test]
    fn names_are_case_insensitive() {
        for name in ["ping", "PING", "Ping", "pInG"] {
            assert_eq!(cmd(name), Ok(Command::Ping { message: None }));
        }
        assert_eq!(cmd("cOuNt"), Ok(Command::Count));
        assert_eq!(cmd("QUIT"), Ok(Command::Quit));
    }

    #[test]
    fn ping() {
        assert_eq!(
            cmd("PING hello"),
            Ok(Command::Ping {
                message: Some(v("hello"))
            })
        );
        assert_eq!(
            err("PING a b"),
            "ERR wrong number of arguments for 'ping' command"
        );
    }

    #[test]
    fn add_and_addat() {
        assert_eq!(
            cmd("ADD o:1 500"),
            Ok(Command::Add {
                id: oid("o:1"),
                delay_ms: 500,
                replace: false
            })
        );
        for flag in ["REPLACE", "replace", "RePlAcE"] {
            assert_eq!(
                cmd(&format!("add o:1 0 {flag}")),
                Ok(Command::Add {
                    id: oid("o:1"),
                    delay_ms: 0,
                    replace: true
                })
            );
        }
        assert_eq!(
            cmd("ADDAT o:1 1700000000000 REPLACE"),
            Ok(Command::AddAt {
                id: oid("o:1"),
                unix_ms: 1_700_000_000_000,
                replace: true
            })
        );
        for (name, t) in [("add", "5"), ("addat", "1700000000000")] {
            let arity = format!("ERR wrong number of arguments for '{name}' command");
            assert_eq!(err(name), arity);
            assert_eq!(err(&format!("{name} x")), arity);
            assert_eq!(err(&format!("{name} x {t} FOO")), "ERR syntax error");
            assert_eq!(err(&format!("{name} x {t} REPLACEX")), "ERR syntax error");
            assert_eq!(
                err(&format!("{name} x {t} REPLACE REPLACE")),
                "ERR syntax error"
            );
            assert_eq!(err(&format!("{name} x {t} REPLACE x")), "ERR syntax error");
            // Left to right: the id is checked before the number, the number before the flag.
            assert_eq!(err(&format!("{name} \u{7f} x FOO")), INVALID_ID);
            assert!(
                err(&format!("{name} x y FOO")).contains("got 'y'"),
                "{}",
                err(&format!("{name} x y FOO"))
            );
        }
    }

    #[test]
    fn delay_boundaries() {
        let delay = |text: &str| match cmd(&format!("ADD x {text}")) {
            Ok(Command::Add { delay_ms, .. }) => Some(delay_ms),
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert_eq!(e, CommandError::BadDelay(text.into()), "{text}");
                None
            }
        };
        assert_eq!(delay("0"), Some(0));
        assert_eq!(delay("1"), Some(1));
        assert_eq!(delay("31622400000"), Some(MAX_DELAY_MS));
        // Units: the same 30 minutes four ways, and each unit at its limit.
        for text in ["1800000", "1800000ms", "1800s", "30m"] {
            assert_eq!(delay(text), Some(1_800_000), "{text}");
        }
        assert_eq!(delay("2h"), Some(7_200_000));
        assert_eq!(delay("0s"), Some(0));
        assert_eq!(delay("366d"), Some(MAX_DELAY_MS));
        assert_eq!(delay("8784h"), Some(MAX_DELAY_MS));
        assert_eq!(delay("527040m"), Some(MAX_DELAY_MS));
        assert_eq!(delay("31622400s"), Some(MAX_DELAY_MS));
        assert_eq!(delay("31622400000ms"), Some(MAX_DELAY_MS));
        for bad in [
            "31622400001",
            "367d",
            "8785h",
            "31622401s",
            "31622400001ms",
            "30M",
            "30min",
            "m",
            "ms",
            "1.5h",
            "-1s",
            "01s",
            "30ms5",
            "9223372036854775807d",
            "-1",
            "-0",
            "+1",
            "01",
            "1e3",
            "1.5",
            "0x10",
            "",
            "abc",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "99999999999999999999999999",
        ] {
            assert_eq!(delay(bad), None, "{bad}");
        }
        for bad in [&b" 1"[..], b"1 ", b"1\n", b"\x001"] {
            assert_eq!(
                raw(&[b"ADD", b"x", bad]),
                Err(CommandError::BadDelay(bad.to_vec()))
            );
        }
        assert_eq!(
            err("ADD order 30x"),
            "ERR delay must be an integer number of milliseconds, or an integer with a unit \
             (ms, s, m, h, d), from 0 to 366 days (31622400000 ms); got '30x'"
        );
    }

    #[test]
    fn unix_ms_boundaries() {
        let at = |text: &str| match cmd(&format!("ADDAT x {text}")) {
            Ok(Command::AddAt { unix_ms, .. }) => Some(unix_ms),
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert_eq!(e, CommandError::BadDeadline(text.into()), "{text}");
                None
            }
        };
        assert_eq!(at("1000000000000"), Some(MIN_UNIX_MS));
        assert_eq!(at("1796172400000"), Some(1_796_172_400_000));
        assert_eq!(at("253402300799999"), Some(MAX_UNIX_MS));
        for bad in [
            "0",
            "1",
            "999999999999",
            "1796172400",
            "253402300800000",
            "-1",
            "9223372036854775808",
            "1e3",
            "30m",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn deadline_errors_name_the_unit_and_what_the_number_looks_like() {
        let head = "ERR deadline must be Unix time in milliseconds, from 1000000000000 \
                    (2001-09-09) to 253402300799999 (9999-12-31); got";
        for (value, tail) in [
            ("1796172400", ", which looks like seconds: multiply by 1000"),
            ("1000000000", ", which looks like seconds: multiply by 1000"),
            (
                "1796172400000000",
                ", which looks like microseconds: divide by 1000",
            ),
            ("0", ""),
            ("999999", ""),
            ("-5", ""),
            ("999999999999999999", ""),
            ("soon", ", which is not an integer"),
        ] {
            assert_eq!(
                err(&format!("ADDAT order:2 {value}")),
                format!("{head} '{value}'{tail}"),
                "{value}"
            );
        }
    }

    #[test]
    fn id_boundaries() {
        let id = |bytes: &[u8]| raw(&[b"CANCEL", bytes]);
        for good in [&b"!"[..], b"~", b"o:1", b"!~", &[b'x'; MAX_ID_LEN]] {
            assert_eq!(
                id(good),
                Ok(Command::Cancel {
                    id: OrderId::new(good).unwrap()
                })
            );
            assert!(is_valid_id(good));
        }
        let long = [b'x'; MAX_ID_LEN + 1];
        for bad in [
            &b""[..],
            b" ",
            b"a b",
            b"\x20",
            b"\x7f",
            b"a\x7f",
            b"\0",
            b"\r\n",
            b"\xff",
            &long,
        ] {
            assert_eq!(
                id(bad),
                Err(CommandError::InvalidId),
                "{}",
                bad.escape_ascii()
            );
            assert!(!is_valid_id(bad));
        }
        // Every byte on its own.
        for b in 0..=u8::MAX {
            assert_eq!(is_valid_id(&[b]), (0x21..=0x7e).contains(&b), "{b:#x}");
        }
        assert_eq!(
            err("CANCEL"),
            "ERR wrong number of arguments for 'cancel' command"
        );
        assert_eq!(
            err("CANCEL a b"),
            "ERR wrong number of arguments for 'cancel' command"
        );
        assert_eq!(cmd("PTTL o:1"), Ok(Command::Pttl { id: oid("o:1") }));
        assert_eq!(
            err("PTTL"),
            "ERR wrong number of arguments for 'pttl' command"
        );
        assert_eq!(
            err("PTTL a b"),
            "ERR wrong number of arguments for 'pttl' command"
        );
        assert_eq!(err("ADD  5"), INVALID_ID);
    }

    #[test]
    fn fixed_arity() {
        for (line, name) in [
            ("COUNT x", "count"),
            ("QUIT now", "quit"),
            ("SUBSCRIBE", "subscribe"),
            ("AUTH", "auth"),
            ("CONFIG", "config"),
            ("CONFIG GET", "config|get"),
            ("config get", "config|get"),
            ("CLIENT", "client"),
            ("SELECT", "select"),
            ("SELECT 0 1", "select"),
        ] {
            assert_eq!(
                err(line),
                format!("ERR wrong number of arguments for '{name}' command"),
                "{line}"
            );
        }
    }

    #[test]
    fn info_subscribe_command() {
        assert_eq!(cmd("INFO"), Ok(Command::Info { sections: vec![] }));
        assert_eq!(
            cmd("INFO Server CLIENTS"),
            Ok(Command::Info {
                sections: vec![v("server"), v("clients")]
            })
        );
        assert_eq!(
            cmd("SUBSCRIBE a B"),
            Ok(Command::Subscribe {
                channels: vec![v("a"), v("B")]
            })
        );
        assert_eq!(
            cmd("UNSUBSCRIBE"),
            Ok(Command::Unsubscribe { channels: vec![] })
        );
        assert_eq!(
            cmd("unsubscribe a"),
            Ok(Command::Unsubscribe {
                channels: vec![v("a")]
            })
        );
        assert_eq!(cmd("COMMAND"), Ok(Command::Command { args: vec![] }));
        assert_eq!(
            cmd("COMMAND DOCS ping"),
            Ok(Command::Command {
                args: vec![v("DOCS"), v("ping")]
            })
        );
    }

    #[test]
    fn config_client_select() {
        assert_eq!(
            cmd("CONFIG GET save"),
            Ok(Command::ConfigGet {
                patterns: vec![v("save")]
            })
        );
        assert_eq!(
            cmd("config Get save appendonly"),
            Ok(Command::ConfigGet {
                patterns: vec![v("save"), v("appendonly")]
            })
        );
        assert_eq!(
            cmd("CONFIG SET Save x"),
            Ok(Command::Config {
                subcommand: v("set"),
                args: vec![v("Save"), v("x")]
            })
        );
        assert_eq!(
            cmd("CONFIG RESETSTAT"),
            Ok(Command::Config {
                subcommand: v("resetstat"),
                args: vec![]
            })
        );
        assert_eq!(
            cmd("CLIENT SETNAME App"),
            Ok(Command::Client {
                subcommand: v("setname"),
                args: vec![v("App")]
            })
        );
        assert_eq!(cmd("SELECT 0"), Ok(Command::Select { db: 0 }));
        assert_eq!(cmd("SELECT -1"), Ok(Command::Select { db: -1 }));
        assert_eq!(
            err("SELECT x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err("SELECT 01"),
            "ERR value is not an integer or out of range"
        );
    }

    #[test]
    fn auth() {
        assert_eq!(
            cmd("AUTH pass"),
            Ok(Command::Auth(Credentials {
                user: None,
                password: v("pass")
            }))
        );
        assert_eq!(
            cmd("auth default pass"),
            Ok(Command::Auth(Credentials {
                user: Some(v("default")),
                password: v("pass")
            }))
        );
        assert_eq!(err("AUTH a b c"), "ERR syntax error");
        let debug = format!("{:?}", cmd("AUTH user secret").unwrap());
        assert!(
            debug.contains("user") && !debug.contains("secret"),
            "{debug}"
        );
    }

    #[test]
    fn hello() {
        let hello = |protocol, auth: Option<(&str, &str)>, setname: Option<&str>| {
            Ok(Command::Hello {
                protocol,
                auth: auth.map(|(user, password)| Credentials {
                    user: Some(v(user)),
                    password: v(password),
                }),
                setname: setname.map(v),
            })
        };
        assert_eq!(cmd("HELLO"), hello(None, None, None));
        assert_eq!(cmd("HELLO 2"), hello(Some(Protocol::Resp2), None, None));
        assert_eq!(cmd("hello 3"), hello(Some(Protocol::Resp3), None, None));
        assert_eq!(
            cmd("HELLO 3 AUTH default pass"),
            hello(Some(Protocol::Resp3), Some(("default", "pass")), None)
        );
        assert_eq!(
            cmd("HELLO 3 setname app auth u p"),
            hello(Some(Protocol::Resp3), Some(("u", "p")), Some("app"))
        );
        assert_eq!(
            cmd("HELLO 2 SETNAME a SETNAME b"),
            hello(Some(Protocol::Resp2), None, Some("b"))
        );
        assert_eq!(
            raw(&[b"HELLO", b"3", b"SETNAME", b""]),
            hello(Some(Protocol::Resp3), None, Some(""))
        );

        let version = "ERR Protocol version is not an integer or out of range";
        assert_eq!(err("HELLO x"), version);
        assert_eq!(err("HELLO AUTH u p"), version);
        assert_eq!(err("HELLO 3.0"), version);
        for bad in ["0", "1", "4", "-1", "9223372036854775807"] {
            assert_eq!(
                err(&format!("HELLO {bad}")),
                "NOPROTO unsupported protocol version"
            );
        }
        assert_eq!(
            err("HELLO 3 AUTH u"),
            "ERR Syntax error in HELLO option 'AUTH'"
        );
        assert_eq!(
            err("HELLO 3 SETNAME"),
            "ERR Syntax error in HELLO option 'SETNAME'"
        );
        assert_eq!(err("HELLO 3 FOO"), "ERR Syntax error in HELLO option 'FOO'");
        assert_eq!(
            err("HELLO 3 AUTH u p x"),
            "ERR Syntax error in HELLO option 'x'"
        );
        assert_eq!(
            raw(&[b"HELLO", b"3", b"SETNAME", b"a b"])
                .unwrap_err()
                .to_string(),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        assert_eq!(
            raw(&[b"HELLO", b"3", b"x\r\n"]).unwrap_err().to_string(),
            r"ERR Syntax error in HELLO option 'x\r\n'"
        );
    }

    #[test]
    fn unknown_commands_are_echoed_safely() {
        assert_eq!(err("FOO"), "ERR unknown command 'FOO'");
        assert_eq!(err("foo bar"), "ERR unknown command 'foo'");
        assert_eq!(
            raw(&[b"GET\r\n+OK"]).unwrap_err().to_string(),
            r"ERR unknown command 'GET\r\n+OK'"
        );
        assert_eq!(
            raw(&[b"it's\x00\xff"]).unwrap_err().to_string(),
            r"ERR unknown command 'it\'s\x00\xff'"
        );
        assert_eq!(
            raw(&[b""]).unwrap_err().to_string(),
            "ERR unknown command ''"
        );
        assert_eq!(raw(&[]).unwrap_err().to_string(), "ERR unknown command ''");

        let long = "x".repeat(MAX_ECHO_LEN + 1);
        assert_eq!(
            err(&long),
            format!("ERR unknown command '{}...'", &long[..MAX_ECHO_LEN])
        );
        let exact = "x".repeat(MAX_ECHO_LEN);
        assert_eq!(err(&exact), format!("ERR unknown command '{exact}'"));
    }

    #[test]
    fn unknown_subcommand_text() {
        let error = CommandError::UnknownSubcommand {
            command: "config",
            subcommand: v("foo\n"),
        };
        assert_eq!(
            error.to_string(),
            r"ERR unknown subcommand 'foo\n'. Try CONFIG HELP."
        );
    }

    #[test]
    fn names_round_trip() {
        for line in [
            "PING",
            "ADD x 1",
            "ADDAT x 1700000000000",
            "CANCEL x",
            "PTTL x",
            "COUNT",
            "INFO",
            "SUBSCRIBE c",
            "UNSUBSCRIBE",
            "QUIT",
            "HELLO",
            "AUTH p",
            "COMMAND",
            "CONFIG GET x",
            "CONFIG SET x y",
            "CLIENT LIST",
            "SELECT 0",
        ] {
            let command = cmd(line).unwrap();
            let request = Request::new(line.split(' ').map(v).collect());
            assert_eq!(Command::try_from(request), Ok(command));
        }
    }

    #[test]
    fn every_row_of_the_table_parses_its_name() {
        for spec in &super::super::table::COMMANDS {
            let request = Request::new(vec![spec.name.to_ascii_uppercase().into_bytes()]);
            assert!(
                !matches!(
                    Command::from_request(request),
                    Err(CommandError::UnknownCommand(_))
                ),
                "{} is not recognised",
                spec.name
            );
        }
    }
}
