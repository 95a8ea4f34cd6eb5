//! Commands: a [`Request`] checked and typed into a [`Command`], or a
//! [`CommandError`] worded the way Redis words it.
//!
//! | command | arguments |
//! |---|---|
//! | `PING` | `[message]` |
//! | `ADD` | `id delay_ms [REPLACE]` |
//! | `ADDAT` | `id unix_ms [REPLACE]` |
//! | `CANCEL`, `PTTL` | `id` |
//! | `COUNT`, `QUIT` | none |
//! | `INFO` | `[section ...]` |
//! | `SUBSCRIBE` | `channel [channel ...]` |
//! | `UNSUBSCRIBE` | `[channel ...]` |
//! | `HELLO` | `[protover [AUTH user password] [SETNAME name]]` |
//! | `AUTH` | `[user] password` |
//! | `COMMAND` | anything |
//! | `CONFIG` | `GET pattern [pattern ...]`, or any other subcommand and arguments |
//! | `CLIENT` | `subcommand [argument ...]` |
//! | `SELECT` | `db` |
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

use super::Protocol;
use super::request::{Request, parse_i64};

/// Longest order id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Longest delay `ADD` accepts: 366 days, in milliseconds.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 60 * 60 * 1000;

/// Latest deadline `ADDAT` accepts: 9999-12-31T23:59:59.999Z, in milliseconds
/// since the Unix epoch (10000-01-01 is 2_932_897 days after 1970-01-01).
/// Whether a deadline is too far from now is for the engine to say.
pub const MAX_UNIX_MS: u64 = 2_932_897 * 24 * 60 * 60 * 1000 - 1;

/// Most client bytes echoed in an error line.
pub const MAX_ECHO_LEN: usize = 64;

/// A valid order id: 1 to [`MAX_ID_LEN`] bytes, each printable ASCII other
/// than space (`0x21..=0x7E`).
pub fn is_valid_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

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
    /// `ADD id delay_ms [REPLACE]`.
    Add {
        /// A valid id (see [`is_valid_id`]).
        id: Vec<u8>,
        /// `0..=MAX_DELAY_MS`.
        delay_ms: u64,
        /// Overwrite an existing timer instead of failing.
        replace: bool,
    },
    /// `ADDAT id unix_ms [REPLACE]`.
    AddAt {
        /// A valid id (see [`is_valid_id`]).
        id: Vec<u8>,
        /// Deadline in milliseconds since the Unix epoch, `0..=MAX_UNIX_MS`.
        unix_ms: u64,
        /// Overwrite an existing timer instead of failing.
        replace: bool,
    },
    /// `CANCEL id`.
    Cancel {
        /// A valid id (see [`is_valid_id`]).
        id: Vec<u8>,
    },
    /// `PTTL id`.
    Pttl {
        /// A valid id (see [`is_valid_id`]).
        id: Vec<u8>,
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
    /// `CLIENT subcommand [argument ...]`.
    Client {
        /// The subcommand in ASCII lowercase.
        subcommand: Vec<u8>,
        /// The arguments after it, as sent.
        args: Vec<Vec<u8>>,
    },
    /// `SELECT db`. Which databases exist is for the server to say.
    Select {
        /// Any `i64`.
        db: i64,
    },
}

impl Command {
    /// Checks a request and types it.
    pub fn from_request(request: Request) -> Result<Self, CommandError> {
        let mut args = request.into_args();
        if args.is_empty() {
            return Err(CommandError::UnknownCommand(Vec::new()));
        }
        let name = args.remove(0);
        let rest = args;
        let mut lowercase = [0; LONGEST_NAME];
        Ok(match lowercase_name(&name, &mut lowercase) {
            b"ping" => {
                at_most("ping", &rest, 1)?;
                Self::Ping {
                    message: rest.into_iter().next(),
                }
            }
            b"add" => {
                let (id, delay_ms, replace) = parse_add("add", rest, MAX_DELAY_MS)?;
                Self::Add {
                    id,
                    delay_ms,
                    replace,
                }
            }
            b"addat" => {
                let (id, unix_ms, replace) = parse_add("addat", rest, MAX_UNIX_MS)?;
                Self::AddAt {
                    id,
                    unix_ms,
                    replace,
                }
            }
            b"cancel" => {
                let [id] = exactly("cancel", rest)?;
                Self::Cancel { id: check_id(id)? }
            }
            b"pttl" => {
                let [id] = exactly("pttl", rest)?;
                Self::Pttl { id: check_id(id)? }
            }
            b"count" => {
                let [] = exactly("count", rest)?;
                Self::Count
            }
            b"info" => Self::Info {
                sections: rest.into_iter().map(|s| s.to_ascii_lowercase()).collect(),
            },
            b"subscribe" => {
                if rest.is_empty() {
                    return Err(CommandError::WrongArity("subscribe"));
                }
                Self::Subscribe { channels: rest }
            }
            b"unsubscribe" => Self::Unsubscribe { channels: rest },
            b"quit" => {
                let [] = exactly("quit", rest)?;
                Self::Quit
            }
            b"hello" => parse_hello(&rest)?,
            b"auth" => Self::Auth(parse_auth(rest)?),
            b"command" => Self::Command { args: rest },
            b"config" => {
                let (subcommand, args) = split_subcommand("config", rest)?;
                if subcommand == b"get" {
                    if args.is_empty() {
                        return Err(CommandError::WrongArity("config|get"));
                    }
                    Self::ConfigGet { patterns: args }
                } else {
                    Self::Config { subcommand, args }
                }
            }
            b"client" => {
                let (subcommand, args) = split_subcommand("client", rest)?;
                Self::Client { subcommand, args }
            }
            b"select" => {
                let [db] = exactly("select", rest)?;
                Self::Select {
                    db: parse_i64(&db).ok_or(CommandError::NotAnInteger)?,
                }
            }
            _ => return Err(CommandError::UnknownCommand(name)),
        })
    }

    /// The command's name in lowercase, as in arity errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping { .. } => "ping",
            Self::Add { .. } => "add",
            Self::AddAt { .. } => "addat",
            Self::Cancel { .. } => "cancel",
            Self::Pttl { .. } => "pttl",
            Self::Count => "count",
            Self::Info { .. } => "info",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Quit => "quit",
            Self::Hello { .. } => "hello",
            Self::Auth(_) => "auth",
            Self::Command { .. } => "command",
            Self::ConfigGet { .. } | Self::Config { .. } => "config",
            Self::Client { .. } => "client",
            Self::Select { .. } => "select",
        }
    }
}

impl TryFrom<Request> for Command {
    type Error = CommandError;

    fn try_from(request: Request) -> Result<Self, CommandError> {
        Self::from_request(request)
    }
}

/// Bytes in the longest command name (`unsubscribe`).
const LONGEST_NAME: usize = 11;

/// `name` in ASCII lowercase, written into `buf`, so matching a command costs
/// no allocation. A name longer than every command is returned empty, which
/// matches nothing.
fn lowercase_name<'a>(name: &[u8], buf: &'a mut [u8; LONGEST_NAME]) -> &'a [u8] {
    let Some(buf) = buf.get_mut(..name.len()) else {
        return &[];
    };
    for (lower, &b) in buf.iter_mut().zip(name) {
        *lower = b.to_ascii_lowercase();
    }
    buf
}

/// Exactly `N` arguments after the name.
fn exactly<const N: usize>(
    name: &'static str,
    rest: Vec<Vec<u8>>,
) -> Result<[Vec<u8>; N], CommandError> {
    rest.try_into().map_err(|_| CommandError::WrongArity(name))
}

fn at_most(name: &'static str, rest: &[Vec<u8>], max: usize) -> Result<(), CommandError> {
    if rest.len() > max {
        return Err(CommandError::WrongArity(name));
    }
    Ok(())
}

fn check_id(id: Vec<u8>) -> Result<Vec<u8>, CommandError> {
    if !is_valid_id(&id) {
        return Err(CommandError::InvalidId);
    }
    Ok(id)
}

/// A decimal integer in `0..=max`, read like Redis reads integers.
fn parse_bounded(value: &[u8], max: u64) -> Result<u64, CommandError> {
    parse_i64(value)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n <= max)
        .ok_or(CommandError::NotAnInteger)
}

/// `id time [REPLACE]`, shared by `ADD` and `ADDAT`.
fn parse_add(
    name: &'static str,
    rest: Vec<Vec<u8>>,
    max_time: u64,
) -> Result<(Vec<u8>, u64, bool), CommandError> {
    let mut rest = rest.into_iter();
    let (Some(id), Some(time)) = (rest.next(), rest.next()) else {
        return Err(CommandError::WrongArity(name));
    };
    let id = check_id(id)?;
    let time = parse_bounded(&time, max_time)?;
    let replace = match (rest.next(), rest.next()) {
        (None, _) => false,
        (Some(flag), None) if flag.eq_ignore_ascii_case(b"replace") => true,
        _ => return Err(CommandError::Syntax),
    };
    Ok((id, time, replace))
}

/// `HELLO`, checked in Redis's order: version, then options left to right.
fn parse_hello(rest: &[Vec<u8>]) -> Result<Command, CommandError> {
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
fn parse_auth(rest: Vec<Vec<u8>>) -> Result<Credentials, CommandError> {
    let mut rest = rest.into_iter();
    match (rest.next(), rest.next(), rest.next()) {
        (None, _, _) => Err(CommandError::WrongArity("auth")),
        (Some(password), None, _) => Ok(Credentials {
            user: None,
            password,
        }),
        (Some(user), Some(password), None) => Ok(Credentials {
            user: Some(user),
            password,
        }),
        (Some(_), Some(_), Some(_)) => Err(CommandError::Syntax),
    }
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
    /// `ERR invalid id`: see [`is_valid_id`].
    InvalidId,
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
            Self::InvalidId => f.write_str("ERR invalid id"),
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

    fn parse(args: &[&str]) -> Result<Command, CommandError> {
        Command::from_request(Request::new(
            args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        ))
    }

    #[test]
    fn every_command_name_fits_the_lowercase_buffer() {
        let names = [
            "ping",
            "add",
            "addat",
            "cancel",
            "pttl",
            "count",
            "info",
            "subscribe",
            "unsubscribe",
            "quit",
            "hello",
            "auth",
            "command",
            "config",
            "client",
            "select",
        ];
        assert_eq!(names.iter().map(|n| n.len()).max(), Some(LONGEST_NAME));
        for name in names {
            assert!(
                !matches!(parse(&[name]), Err(CommandError::UnknownCommand(_))),
                "{name} is not recognised"
            );
        }
    }

    #[test]
    fn names_match_in_any_case() {
        assert_eq!(parse(&["PiNg"]), Ok(Command::Ping { message: None }));
        assert_eq!(
            parse(&["UNSUBSCRIBE"]),
            Ok(Command::Unsubscribe { channels: vec![] })
        );
        assert_eq!(
            parse(&["aDD", "o:1", "10", "replace"]),
            Ok(Command::Add {
                id: b"o:1".to_vec(),
                delay_ms: 10,
                replace: true
            })
        );
    }

    #[test]
    fn unknown_names_are_echoed_as_sent() {
        for name in ["", "PINGX", "UNSUBSCRIBEX", "a-much-longer-unknown-NAME"] {
            assert_eq!(
                parse(&[name]),
                Err(CommandError::UnknownCommand(name.as_bytes().to_vec()))
            );
        }
        assert_eq!(
            Command::from_request(Request::new(vec![])),
            Err(CommandError::UnknownCommand(vec![]))
        );
    }
}
