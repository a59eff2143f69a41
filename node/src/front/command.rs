//! Requests as typed commands. [`table`] says what each command is (name, arity, flags,
//! keys, cluster support) and which parser in [`parsers`] reads its options; [`describe`]
//! renders the table for `COMMAND`.
//!
//! A [`Command`] borrows its arguments from the connection's read buffer, so parsing
//! allocates nothing. Times are made absolute here (`EX 10` → an expiry in ms since the
//! epoch), from a `now_ms` the caller passes in.

pub mod describe;
pub mod parsers;
pub mod table;

use shoal_cluster::consistency::Consistency;
use shoal_cluster::vv::VersionVector;

use crate::shard::store::{Cond, ExpireCond, Expiry};
use table::{CommandSpec, Flag};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetOpts {
    pub cond: Cond,
    pub expiry: Expiry,
    /// Reply with the old value (SET ... GET).
    pub get: bool,
}

impl SetOpts {
    /// A SET that neither reads nor keeps anything of the old value: it can be batched with
    /// other blind writes.
    pub fn is_blind(&self) -> bool {
        self.cond == Cond::Always && !self.get && self.expiry != Expiry::Keep
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Seconds,
    Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSub<'a> {
    /// COMMAND: every command's entry.
    All,
    Count,
    Docs,
    /// COMMAND INFO name...: one entry (or nil) per name; every command's without names.
    Info(&'a [&'a [u8]]),
    List(Option<ListFilter<'a>>),
}

/// COMMAND LIST FILTERBY: which names to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter<'a> {
    /// A module's commands: none, as Shoal loads no modules.
    Module,
    AclCat(&'a [u8]),
    Pattern(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Ping(Option<&'a [u8]>),
    Echo(&'a [u8]),
    /// `HELLO [protover]`: `None` keeps the current protocol.
    Hello(Option<i64>),
    Command(CommandSub<'a>),
    Info(&'a [&'a [u8]]),
    Quit,
    Select,
    ClientOk,
    ClientId,
    ClientGetName,
    ConfigGet,
    Get(&'a [u8]),
    Set {
        key: &'a [u8],
        value: &'a [u8],
        opts: SetOpts,
    },
    Del(&'a [&'a [u8]]),
    Exists(&'a [&'a [u8]]),
    MGet(&'a [&'a [u8]]),
    /// Key/value pairs, flattened.
    MSet(&'a [&'a [u8]]),
    /// Expire `key` at `at_ms` (a time at or before now deletes it).
    Expire {
        key: &'a [u8],
        at_ms: i64,
        cond: ExpireCond,
    },
    Ttl(&'a [u8], Ttl),
    DbSize,
    Scan {
        cursor: u64,
        pattern: Option<&'a [u8]>,
        count: usize,
        /// TYPE other than `string`: nothing matches.
        type_mismatch: bool,
    },
    FlushDb,
    /// VGET key [R level]: the key's context and live sibling values.
    VGet {
        key: &'a [u8],
        r: Option<Consistency>,
    },
    /// VSET key value [CONTEXT c] [W level], or VDEL key [CONTEXT c] [W level] (`value` None).
    /// Without a context the write is blind: a sibling of everything stored.
    VSet {
        key: &'a [u8],
        value: Option<&'a [u8]>,
        context: VersionVector,
        w: Option<Consistency>,
    },
    /// CONSISTENCY [r w]: show, or set for this connection, the default read and write levels.
    Consistency(Option<(Consistency, Consistency)>),
}

impl Command<'_> {
    /// A write that reads nothing of the old value, for a command the table marks
    /// [`Flag::BlindWrite`].
    pub fn is_blind(&self) -> bool {
        match self {
            Command::Set { opts, .. } => opts.is_blind(),
            Command::MSet(_) => true,
            _ => false,
        }
    }
}

/// A parsed request: its table entry, its arguments (name first) and its typed command.
#[derive(Debug)]
pub struct Request<'a> {
    pub spec: &'static CommandSpec,
    pub args: &'a [&'a [u8]],
    pub cmd: Command<'a>,
}

impl<'a> Request<'a> {
    /// Counted as a write in the shard's statistics (a read otherwise).
    pub fn is_write(&self) -> bool {
        self.spec.has(Flag::Write)
    }

    /// The request's keys, where its table entry says they are.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + use<'a> {
        self.spec.keys(self.args)
    }
}

/// A request the server refuses: the error reply's text, code included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Why a parser refused a command's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// Too many or too few for the options given; the table words the error.
    WrongArity,
    Refused(Refusal),
}

/// Limits that depend on the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_value_bytes: usize,
}

/// What parsers read besides the arguments.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    /// Now, in ms since the epoch: relative expiries become absolute against it.
    pub now_ms: u64,
    pub limits: Limits,
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` as Redis formats it.
pub fn unknown_command(args: &[&[u8]]) -> Refusal {
    const SHOWN_MAX: usize = 128;
    let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
    let name: String = name.chars().take(SHOWN_MAX).collect();
    let mut shown = String::new();
    for arg in args.iter().skip(1) {
        if shown.len() >= SHOWN_MAX {
            break;
        }
        let room = SHOWN_MAX - shown.len();
        let arg = String::from_utf8_lossy(arg);
        let arg: String = arg.chars().take(room).collect();
        shown.push('\'');
        shown.push_str(&arg);
        shown.push_str("' ");
    }
    Refusal(format!(
        "ERR unknown command '{name}', with args beginning with: {shown}"
    ))
}

/// Parses one request. `args` is the request array, name first; it is never empty.
pub fn parse<'a>(args: &'a [&'a [u8]], env: &Env) -> Result<Request<'a>, Refusal> {
    let (spec, parser, rest) = table::resolve(args)?;
    match parser(rest, env) {
        Ok(cmd) => Ok(Request { spec, args, cmd }),
        Err(ArgError::WrongArity) => Err(spec.wrong_arity()),
        Err(ArgError::Refused(refusal)) => Err(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::parsers::{NOT_AN_INTEGER, SYNTAX_ERROR, parse_i64};
    use super::*;
    use shoal_engine::types::KEY_LEN_MAX;

    const NOW: u64 = 1_000_000;
    const ENV: Env = Env {
        now_ms: NOW,
        limits: Limits {
            max_value_bytes: 1024,
        },
    };

    fn p<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, String> {
        parse(args, &ENV).map(|r| r.cmd).map_err(|r| r.0)
    }

    #[test]
    fn unknown_and_arity() {
        assert_eq!(
            p(&[b"foo", b"a", b"b"]).unwrap_err(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            p(&[b"nope"]).unwrap_err(),
            "ERR unknown command 'nope', with args beginning with: "
        );
        assert_eq!(
            p(&[b"GET"]).unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            p(&[b"get", b"a", b"b"]).unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            p(&[b"mset", b"a", b"b", b"c"]).unwrap_err(),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(p(&[b"GeT", b"k"]).unwrap(), Command::Get(b"k"));
    }

    #[test]
    fn containers() {
        assert_eq!(p(&[b"command"]).unwrap(), Command::Command(CommandSub::All));
        assert_eq!(
            p(&[b"COMMAND", b"Count"]).unwrap(),
            Command::Command(CommandSub::Count)
        );
        assert_eq!(
            p(&[b"command", b"count", b"x"]).unwrap_err(),
            "ERR wrong number of arguments for 'command|count' command"
        );
        assert_eq!(
            p(&[b"command", b"info", b"get", b"set"]).unwrap(),
            Command::Command(CommandSub::Info(&[b"get", b"set"]))
        );
        assert_eq!(
            p(&[b"command", b"list", b"filterby", b"aclcat", b"read"]).unwrap(),
            Command::Command(CommandSub::List(Some(ListFilter::AclCat(b"read"))))
        );
        assert_eq!(
            p(&[b"command", b"list", b"filterby", b"aclcat"]).unwrap_err(),
            SYNTAX_ERROR
        );
        assert_eq!(
            p(&[b"command", b"nope"]).unwrap_err(),
            "ERR unknown subcommand 'nope'. Try COMMAND HELP."
        );
        assert_eq!(
            p(&[b"config"]).unwrap_err(),
            "ERR wrong number of arguments for 'config' command"
        );
        assert_eq!(
            p(&[b"config", b"get"]).unwrap_err(),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert_eq!(
            p(&[b"config", b"GET", b"maxmemory"]).unwrap(),
            Command::ConfigGet
        );
        assert_eq!(
            p(&[b"client", b"kill"]).unwrap_err(),
            "ERR unknown subcommand 'kill'. Try CLIENT HELP."
        );
        assert_eq!(p(&[b"client", b"id"]).unwrap(), Command::ClientId);
    }

    #[test]
    fn versioned_commands() {
        assert_eq!(
            p(&[b"vget", b"k", b"R", b"quorum"]).unwrap(),
            Command::VGet {
                key: b"k",
                r: Some(Consistency::Quorum)
            }
        );
        assert_eq!(
            p(&[b"vget", b"k"]).unwrap(),
            Command::VGet { key: b"k", r: None }
        );
        assert_eq!(p(&[b"vget", b"k", b"R"]).unwrap_err(), SYNTAX_ERROR);
        assert!(
            p(&[b"vget", b"k", b"r", b"most"])
                .unwrap_err()
                .starts_with("ERR invalid consistency level")
        );
        let mut vv = VersionVector::new();
        vv.add(shoal_cluster::vv::Dot {
            actor: 1,
            counter: 2,
        });
        let ctx = crate::front::context::to_text(&vv);
        assert_eq!(
            p(&[b"vset", b"k", b"v", b"w", b"2", b"context", ctx.as_bytes()]).unwrap(),
            Command::VSet {
                key: b"k",
                value: Some(b"v"),
                context: vv.clone(),
                w: Some(Consistency::Count(2))
            }
        );
        assert_eq!(
            p(&[b"vdel", b"k", b"CONTEXT", ctx.as_bytes()]).unwrap(),
            Command::VSet {
                key: b"k",
                value: None,
                context: vv,
                w: None
            }
        );
        assert_eq!(
            p(&[b"vset", b"k", b"v"]).unwrap(),
            Command::VSet {
                key: b"k",
                value: Some(b"v"),
                context: VersionVector::new(),
                w: None
            }
        );
        assert!(
            p(&[b"vset", b"k", b"v", b"context", b"00ff"])
                .unwrap_err()
                .starts_with("ERR invalid context")
        );
        assert_eq!(
            p(&[b"vset", b"k", b"v", b"w", b"1", b"w", b"2"]).unwrap_err(),
            SYNTAX_ERROR
        );
        assert_eq!(p(&[b"vdel", b"k", b"w"]).unwrap_err(), SYNTAX_ERROR);
        assert_eq!(
            p(&[b"consistency", b"one", b"all"]).unwrap(),
            Command::Consistency(Some((Consistency::One, Consistency::All)))
        );
        assert_eq!(p(&[b"consistency"]).unwrap(), Command::Consistency(None));
        assert_eq!(
            p(&[b"consistency", b"one"]).unwrap_err(),
            "ERR wrong number of arguments for 'consistency' command"
        );
        assert!(p(&[b"consistency", b"0", b"1"]).is_err());
    }

    #[test]
    fn set_options() {
        let Command::Set { opts, .. } = p(&[b"set", b"k", b"v", b"EX", b"10", b"nx"]).unwrap()
        else {
            panic!("not a set")
        };
        assert_eq!(opts.expiry, Expiry::At(NOW + 10_000));
        assert_eq!(opts.cond, Cond::Nx);
        assert!(!opts.is_blind());
        let Command::Set { opts, .. } = p(&[b"set", b"k", b"v", b"pxat", b"5"]).unwrap() else {
            panic!("not a set")
        };
        assert_eq!(opts.expiry, Expiry::At(5));
        assert!(opts.is_blind());
        assert_eq!(
            p(&[b"set", b"k", b"v", b"nx", b"xx"]).unwrap_err(),
            SYNTAX_ERROR
        );
        assert_eq!(
            p(&[b"set", b"k", b"v", b"ex", b"1", b"px", b"1"]).unwrap_err(),
            SYNTAX_ERROR
        );
        assert_eq!(p(&[b"set", b"k", b"v", b"ex"]).unwrap_err(), SYNTAX_ERROR);
        assert_eq!(
            p(&[b"set", b"k", b"v", b"ex", b"x"]).unwrap_err(),
            NOT_AN_INTEGER
        );
        assert_eq!(
            p(&[b"set", b"k", b"v", b"ex", b"0"]).unwrap_err(),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            p(&[b"set", b"k", b"v", b"ex", b"9223372036854775807"]).unwrap_err(),
            "ERR invalid expire time in 'set' command"
        );
        let big = vec![b'x'; 2000];
        assert!(
            p(&[b"set", b"k", &big])
                .unwrap_err()
                .starts_with("ERR string exceeds")
        );
        let long_key = vec![b'k'; KEY_LEN_MAX + 1];
        assert!(
            p(&[b"get", &long_key])
                .unwrap_err()
                .starts_with("ERR key is")
        );
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_i64(b"10"), Some(10));
        assert_eq!(parse_i64(b"-3"), Some(-3));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b" 1",
            b"1.5",
            b"-0",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn expire_and_scan() {
        assert_eq!(
            p(&[b"expire", b"k", b"5"]).unwrap(),
            Command::Expire {
                key: b"k",
                at_ms: (NOW + 5000) as i64,
                cond: ExpireCond::Always
            }
        );
        assert_eq!(
            p(&[b"expire", b"k", b"5", b"nx", b"xx"]).unwrap_err(),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            p(&[b"expire", b"k", b"5", b"gt", b"lt"]).unwrap_err(),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(p(&[b"scan", b"abc"]).unwrap_err(), "ERR invalid cursor");
        assert_eq!(
            p(&[b"scan", b"0", b"count", b"0"]).unwrap_err(),
            SYNTAX_ERROR
        );
        assert_eq!(p(&[b"scan", b"0", b"match"]).unwrap_err(), SYNTAX_ERROR);
        assert_eq!(
            p(&[b"scan", b"7", b"MATCH", b"a*", b"COUNT", b"100"]).unwrap(),
            Command::Scan {
                cursor: 7,
                pattern: Some(b"a*"),
                count: 100,
                type_mismatch: false
            }
        );
    }

    #[test]
    fn hello_and_select() {
        assert_eq!(p(&[b"hello", b"3"]).unwrap(), Command::Hello(Some(3)));
        assert_eq!(
            p(&[b"hello", b"4"]).unwrap_err(),
            "NOPROTO unsupported protocol version"
        );
        assert_eq!(p(&[b"select", b"0"]).unwrap(), Command::Select);
        assert_eq!(
            p(&[b"select", b"1"]).unwrap_err(),
            "ERR DB index is out of range"
        );
    }
}
