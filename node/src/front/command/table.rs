//! The command table, in the shape of Redis's (`src/commands/*.json`, compiled into its
//! `redisCommandTable`): one entry per command with its arity, flags, ACL categories, tips
//! and keys, how its arguments are parsed, and what it does in cluster mode.
//!
//! Everything about a command's identity is read from here: name lookup and the arity check
//! ([`resolve`]), `COMMAND` and its subcommands ([`super::describe`]), the read/write class
//! counted in statistics, key extraction ([`CommandSpec::keys`]), which commands are batched
//! into runs, and the refusals of each mode ([`ClusterSupport::refusal`]). Flags, ACL
//! categories and tips are Redis 7.2's for the commands Redis has.

use std::fmt;

use super::parsers;
use super::{ArgError, Command, CommandSub, Env, Refusal, Ttl, unknown_command};
use crate::shard::store::Expiry;

use Acl::{Connection, Dangerous, Keyspace, String as StringAcl};
use ClusterSupport::{ClusterOnly, NodeLocal, RefusedInCluster, Replicated, ReplicatedExcept};
use Flag::{
    Admin, AllowBusy, BatchRead, BlindWrite, DenyOom, Fast, Loading, NoAuth, NoScript, Readonly,
    Stale, Write,
};
use KeyFlag::{Access, Delete, Ow, Rm, Ro, Rw, Update, VariableFlags};

/// Parses a command's arguments after its name (and subcommand name).
pub type Parser = for<'a> fn(&'a [&'a [u8]], &Env) -> Result<Command<'a>, ArgError>;

/// One command, or one subcommand of a container (`CONFIG GET`).
#[derive(Debug)]
pub struct CommandSpec {
    /// Lowercase; a subcommand's is its full name, `container|sub`, as Redis shows it.
    pub name: &'static str,
    /// Number of arguments, the name (and subcommand name) included: exactly this many when
    /// positive, at least its magnitude when negative.
    pub arity: i32,
    pub flags: &'static [Flag],
    /// ACL categories beyond those the flags imply (see [`CommandSpec::acl_categories`]).
    pub acl: &'static [Acl],
    /// Hints for cluster-aware clients and proxies, verbatim.
    pub tips: &'static [&'static str],
    /// Where the keys are; `None` for a command without keys.
    pub keys: Option<KeySpec>,
    pub cluster: ClusterSupport,
    pub dispatch: Dispatch,
}

/// How a command's arguments become a [`Command`].
#[derive(Debug)]
pub enum Dispatch {
    /// By this parser.
    Parse(Parser),
    /// The second argument names a subcommand; `bare` parses the container called alone
    /// (`COMMAND`), and a container without it has an arity that requires a subcommand.
    Container {
        bare: Option<Parser>,
        subcommands: &'static [CommandSpec],
    },
}

/// A command flag: Redis's (shown by `COMMAND INFO`) or Shoal's own (not shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// May modify data.
    Write,
    /// Reads data and never modifies it.
    Readonly,
    /// May grow memory use (refused by Redis when over `maxmemory`).
    DenyOom,
    Admin,
    /// Not allowed in scripts.
    NoScript,
    /// Allowed while the data set loads.
    Loading,
    /// Allowed on a replica with stale data.
    Stale,
    /// Constant or logarithmic time, never blocks: the `@fast` category.
    Fast,
    /// Allowed before authentication.
    NoAuth,
    /// Allowed while a script or module runs.
    AllowBusy,
    /// Shoal: a plain read, batched with its neighbours into one `Get` per owning shard.
    BatchRead,
    /// Shoal: a write that reads nothing of the old value when its options say so
    /// ([`Command::is_blind`]); batched with its blind neighbours into one `Put` per shard.
    BlindWrite,
}

impl Flag {
    /// The flags `COMMAND INFO` shows, in the order Redis lists them.
    const SHOWN: [Flag; 10] = [
        Flag::Write,
        Flag::Readonly,
        Flag::DenyOom,
        Flag::Admin,
        Flag::NoScript,
        Flag::Loading,
        Flag::Stale,
        Flag::Fast,
        Flag::NoAuth,
        Flag::AllowBusy,
    ];

    /// The name Redis shows; `None` for Shoal's own flags.
    pub fn redis_name(self) -> Option<&'static str> {
        Some(match self {
            Flag::Write => "write",
            Flag::Readonly => "readonly",
            Flag::DenyOom => "denyoom",
            Flag::Admin => "admin",
            Flag::NoScript => "noscript",
            Flag::Loading => "loading",
            Flag::Stale => "stale",
            Flag::Fast => "fast",
            Flag::NoAuth => "no_auth",
            Flag::AllowBusy => "allow_busy",
            Flag::BatchRead | Flag::BlindWrite => return None,
        })
    }
}

/// An ACL category, in the order Redis lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acl {
    Keyspace,
    Read,
    Write,
    String,
    Admin,
    Fast,
    Slow,
    Dangerous,
    Connection,
}

impl Acl {
    const ALL: [Acl; 9] = [
        Acl::Keyspace,
        Acl::Read,
        Acl::Write,
        Acl::String,
        Acl::Admin,
        Acl::Fast,
        Acl::Slow,
        Acl::Dangerous,
        Acl::Connection,
    ];

    /// The name without its `@`, as `ACL CAT` and `COMMAND LIST FILTERBY ACLCAT` take it.
    pub fn name(self) -> &'static str {
        match self {
            Acl::Keyspace => "keyspace",
            Acl::Read => "read",
            Acl::Write => "write",
            Acl::String => "string",
            Acl::Admin => "admin",
            Acl::Fast => "fast",
            Acl::Slow => "slow",
            Acl::Dangerous => "dangerous",
            Acl::Connection => "connection",
        }
    }
}

/// Where a command's keys are: Redis's legacy range (first, last, step), with the flags of
/// the key spec Redis 7 shows for the same keys.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Index of the first key (the name is argument 0).
    pub first: i32,
    /// Index of the last key; negative counts from the end (-1: the last argument).
    pub last: i32,
    /// Distance between keys (2 when values sit between them).
    pub step: i32,
    pub flags: &'static [KeyFlag],
    pub notes: Option<&'static str>,
}

/// A key spec flag: what a command does to its keys' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFlag {
    /// Reads only.
    Ro,
    /// Reads and modifies.
    Rw,
    /// Overwrites without reading.
    Ow,
    /// Removes the key.
    Rm,
    /// Returns user data.
    Access,
    /// Updates data in place.
    Update,
    Delete,
    /// The options decide which of the other flags apply.
    VariableFlags,
}

impl KeyFlag {
    const ALL: [KeyFlag; 8] = [
        KeyFlag::Ro,
        KeyFlag::Rw,
        KeyFlag::Ow,
        KeyFlag::Rm,
        KeyFlag::Access,
        KeyFlag::Update,
        KeyFlag::Delete,
        KeyFlag::VariableFlags,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyFlag::Ro => "RO",
            KeyFlag::Rw => "RW",
            KeyFlag::Ow => "OW",
            KeyFlag::Rm => "RM",
            KeyFlag::Access => "access",
            KeyFlag::Update => "update",
            KeyFlag::Delete => "delete",
            KeyFlag::VariableFlags => "variable_flags",
        }
    }
}

/// What a command does in each mode.
#[derive(Debug, Clone, Copy)]
pub enum ClusterSupport {
    /// Answered by this node alone, the same in both modes: connection state, and this
    /// node's INFO, DBSIZE and SCAN (its shards, or in cluster mode its replicas).
    NodeLocal,
    /// Coordinated among the key's replicas in cluster mode.
    Replicated,
    /// Replicated, except the forms the function names.
    ReplicatedExcept(fn(&Command<'_>) -> Option<&'static str>),
    /// Refused in cluster mode, which has no coordinated form of it; the text names what is
    /// refused.
    RefusedInCluster(&'static str),
    /// Versions and consistency levels exist only in cluster mode.
    ClusterOnly,
}

/// How the node runs: one process on its own, or a member of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Cluster,
}

/// A command this mode does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeRefusal {
    NeedsCluster,
    NotInCluster(&'static str),
}

impl fmt::Display for ModeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeRefusal::NeedsCluster => f.write_str(
                "ERR VGET, VSET, VDEL and CONSISTENCY need cluster mode ([[nodes]] in the config file)",
            ),
            ModeRefusal::NotInCluster(what) => {
                write!(f, "ERR {what} is not supported in cluster mode")
            }
        }
    }
}

impl ClusterSupport {
    /// Why `cmd` is refused in `mode`, if it is.
    pub fn refusal(&self, cmd: &Command<'_>, mode: Mode) -> Option<ModeRefusal> {
        match (self, mode) {
            (ClusterSupport::ClusterOnly, Mode::Standalone) => Some(ModeRefusal::NeedsCluster),
            (ClusterSupport::RefusedInCluster(what), Mode::Cluster) => {
                Some(ModeRefusal::NotInCluster(what))
            }
            (ClusterSupport::ReplicatedExcept(refused), Mode::Cluster) => {
                refused(cmd).map(ModeRefusal::NotInCluster)
            }
            _ => None,
        }
    }
}

impl CommandSpec {
    pub fn has(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    /// The flags Redis shows, in its order.
    pub fn shown_flags(&self) -> impl Iterator<Item = &'static str> + use<'_> {
        Flag::SHOWN
            .into_iter()
            .filter(|f| self.has(*f))
            .filter_map(Flag::redis_name)
    }

    /// The ACL categories: the table's, and those the flags imply, as Redis derives them
    /// (`setImplicitACLCategories`): a command not `@fast` is `@slow`.
    pub fn acl_categories(&self) -> impl Iterator<Item = Acl> + use<'_> {
        let implied = |cat: Acl| match cat {
            Acl::Write => self.has(Flag::Write),
            Acl::Read => self.has(Flag::Readonly),
            Acl::Admin | Acl::Dangerous => self.has(Flag::Admin),
            Acl::Fast => self.has(Flag::Fast),
            Acl::Slow => !self.has(Flag::Fast) && !self.acl.contains(&Acl::Fast),
            Acl::Keyspace | Acl::String | Acl::Connection => false,
        };
        Acl::ALL
            .into_iter()
            .filter(move |cat| self.acl.contains(cat) || implied(*cat))
    }

    /// Redis's legacy key range for `COMMAND`: (first, last, step), zeros without keys.
    pub fn key_range(&self) -> (i32, i32, i32) {
        self.keys.map_or((0, 0, 0), |k| (k.first, k.last, k.step))
    }

    /// The arguments of `args` (the whole request, name first) that are keys.
    pub fn keys<'a>(
        &self,
        args: &'a [&'a [u8]],
    ) -> impl ExactSizeIterator<Item = &'a [u8]> + use<'a> {
        let (start, end, step) = match &self.keys {
            Some(k) => k.positions(args.len()),
            None => (0, 0, 1),
        };
        args.get(start..end)
            .unwrap_or_default()
            .iter()
            .step_by(step)
            .copied()
    }

    /// The subcommands of a container; empty for a plain command.
    pub fn subcommands(&self) -> &'static [CommandSpec] {
        match self.dispatch {
            Dispatch::Container { subcommands, .. } => subcommands,
            Dispatch::Parse(_) => &[],
        }
    }

    fn accepts(&self, argc: usize) -> bool {
        let n = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == n
        } else {
            argc >= n
        }
    }

    /// `ERR wrong number of arguments for 'get' command`, as Redis words it.
    pub fn wrong_arity(&self) -> Refusal {
        Refusal(format!(
            "ERR wrong number of arguments for '{}' command",
            self.name
        ))
    }
}

impl KeySpec {
    /// The flags, in the order Redis lists them.
    pub fn shown_flags(&self) -> impl Iterator<Item = KeyFlag> + use<'_> {
        KeyFlag::ALL.into_iter().filter(|f| self.flags.contains(f))
    }

    /// The keys among `argc` arguments as a range: start, end (exclusive), step.
    fn positions(&self, argc: usize) -> (usize, usize, usize) {
        debug_assert!(self.first >= 1 && self.step >= 1);
        let first = self.first.unsigned_abs() as usize;
        let last = if self.last >= 0 {
            self.last.unsigned_abs() as usize
        } else {
            argc.saturating_sub(self.last.unsigned_abs() as usize)
        };
        (
            first,
            (last + 1).min(argc),
            self.step.unsigned_abs() as usize,
        )
    }
}

/// The command `args` names, with the arguments its parser takes; refuses an unknown name or
/// subcommand and a wrong number of arguments, with Redis's texts.
pub fn resolve<'a>(
    args: &'a [&'a [u8]],
) -> Result<(&'static CommandSpec, Parser, &'a [&'a [u8]]), Refusal> {
    debug_assert!(!args.is_empty());
    let Some(spec) = find(COMMANDS, args[0]) else {
        return Err(unknown_command(args));
    };
    let (spec, parser, rest) = match spec.dispatch {
        Dispatch::Parse(parser) => (spec, Some(parser), &args[1..]),
        Dispatch::Container { bare, .. } if args.len() == 1 => (spec, bare, &args[1..]),
        Dispatch::Container { subcommands, .. } => {
            let Some(sub) = subcommands
                .iter()
                .find(|s| sub_name(s).as_bytes().eq_ignore_ascii_case(args[1]))
            else {
                return Err(Refusal(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    String::from_utf8_lossy(args[1]),
                    spec.name.to_ascii_uppercase()
                )));
            };
            match sub.dispatch {
                Dispatch::Parse(parser) => (sub, Some(parser), &args[2..]),
                Dispatch::Container { .. } => (sub, None, &args[2..]),
            }
        }
    };
    match parser {
        Some(parser) if spec.accepts(args.len()) => Ok((spec, parser, rest)),
        _ => Err(spec.wrong_arity()),
    }
}

/// A command by the name `COMMAND INFO` takes: `get`, or `config|get` for a subcommand.
pub fn lookup(full_name: &[u8]) -> Option<&'static CommandSpec> {
    let mut parts = full_name.split(|&b| b == b'|');
    let spec = find(COMMANDS, parts.next()?)?;
    let Some(sub) = parts.next() else {
        return Some(spec);
    };
    if parts.next().is_some() {
        return None;
    }
    spec.subcommands()
        .iter()
        .find(|s| sub_name(s).as_bytes().eq_ignore_ascii_case(sub))
}

fn find(table: &'static [CommandSpec], name: &[u8]) -> Option<&'static CommandSpec> {
    table
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// A subcommand's own name: `get` of `config|get`.
fn sub_name(spec: &CommandSpec) -> &'static str {
    spec.name.split_once('|').map_or(spec.name, |(_, sub)| sub)
}

/// The SET forms cluster mode refuses: those that read or keep the old value, and those
/// with an expiry.
fn set_refused_in_cluster(cmd: &Command<'_>) -> Option<&'static str> {
    match cmd {
        Command::Set { opts, .. } if !opts.is_blind() => Some("SET with NX, XX, GET or KEEPTTL"),
        Command::Set { opts, .. } if opts.expiry != Expiry::Never => Some("SET with an expiry"),
        _ => None,
    }
}

/// One key at argument 1.
const fn one_key(flags: &'static [KeyFlag]) -> Option<KeySpec> {
    Some(KeySpec {
        first: 1,
        last: 1,
        step: 1,
        flags,
        notes: None,
    })
}

/// Keys from argument 1 to the end, `step` apart.
const fn all_keys(step: i32, flags: &'static [KeyFlag]) -> Option<KeySpec> {
    Some(KeySpec {
        first: 1,
        last: -1,
        step,
        flags,
        notes: None,
    })
}

const CONNECTION_FLAGS: &[Flag] = &[NoScript, Loading, Stale, Fast, NoAuth, AllowBusy];
const MULTI_KEY_COUNT: &[&str] = &["request_policy:multi_shard", "response_policy:agg_sum"];
const ALL_SHARDS_SUCCEED: &[&str] = &["request_policy:all_shards", "response_policy:all_succeeded"];

/// `EXPIRE` and its three siblings differ only in their parser (and the name a refusal
/// gives).
const fn expire(name: &'static str, shown: &'static str, parser: Parser) -> CommandSpec {
    CommandSpec {
        name,
        arity: -3,
        flags: &[Write, Fast],
        acl: &[Keyspace],
        tips: &[],
        keys: one_key(&[Rw, Update]),
        cluster: RefusedInCluster(shown),
        dispatch: Dispatch::Parse(parser),
    }
}

/// `CLIENT` subcommands that only touch the connection.
const fn client_sub(name: &'static str, arity: i32, parser: Parser) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags: &[NoScript, Loading, Stale],
        acl: &[Connection],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(parser),
    }
}

/// `COMMAND` subcommands.
const fn command_sub(
    name: &'static str,
    arity: i32,
    tips: &'static [&'static str],
    parser: Parser,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags: &[Loading, Stale],
        acl: &[Connection],
        tips,
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(parser),
    }
}

/// `FLUSHDB` and `FLUSHALL` (one database).
const fn flush(name: &'static str, shown: &'static str) -> CommandSpec {
    CommandSpec {
        name,
        arity: -1,
        flags: &[Write],
        acl: &[Keyspace, Dangerous],
        tips: ALL_SHARDS_SUCCEED,
        keys: None,
        cluster: RefusedInCluster(shown),
        dispatch: Dispatch::Parse(parsers::flush),
    }
}

const UNORDERED: &[&str] = &["nondeterministic_output_order"];

/// Every command Shoal knows; `COMMAND COUNT` is its length.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &[Fast],
        acl: &[Connection],
        tips: ALL_SHARDS_SUCCEED,
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(parsers::ping),
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &[Loading, Stale, Fast],
        acl: &[Connection],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(|rest, _| Ok(Command::Echo(rest[0]))),
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: CONNECTION_FLAGS,
        acl: &[Connection],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(parsers::hello),
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &[Loading, Stale],
        acl: &[Connection],
        tips: UNORDERED,
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Container {
            bare: Some(|_, _| Ok(Command::Command(CommandSub::All))),
            subcommands: &[
                command_sub("command|count", 2, &[], |_, _| {
                    Ok(Command::Command(CommandSub::Count))
                }),
                command_sub("command|docs", -2, UNORDERED, |_, _| {
                    Ok(Command::Command(CommandSub::Docs))
                }),
                command_sub("command|info", -2, UNORDERED, |rest, _| {
                    Ok(Command::Command(CommandSub::Info(rest)))
                }),
                command_sub("command|list", -2, UNORDERED, parsers::command_list),
            ],
        },
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &[Loading, Stale],
        acl: &[Dangerous],
        tips: &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(|rest, _| Ok(Command::Info(rest))),
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: CONNECTION_FLAGS,
        acl: &[Connection],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(|_, _| Ok(Command::Quit)),
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &[Loading, Stale, Fast],
        acl: &[Connection],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(parsers::select),
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        acl: &[],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Container {
            bare: None,
            subcommands: &[
                client_sub("client|setname", 3, |_, _| Ok(Command::ClientOk)),
                client_sub("client|setinfo", 4, |_, _| Ok(Command::ClientOk)),
                client_sub("client|id", 2, |_, _| Ok(Command::ClientId)),
                client_sub("client|getname", 2, |_, _| Ok(Command::ClientGetName)),
            ],
        },
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        acl: &[],
        tips: &[],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Container {
            bare: None,
            subcommands: &[CommandSpec {
                name: "config|get",
                arity: -3,
                flags: &[Admin, NoScript, Loading, Stale],
                acl: &[],
                tips: &[],
                keys: None,
                cluster: NodeLocal,
                dispatch: Dispatch::Parse(|_, _| Ok(Command::ConfigGet)),
            }],
        },
    },
    CommandSpec {
        name: "get",
        arity: 2,
        flags: &[Readonly, Fast, BatchRead],
        acl: &[StringAcl],
        tips: &[],
        keys: one_key(&[Ro, Access]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(parsers::get),
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: &[Write, DenyOom, BlindWrite],
        acl: &[StringAcl],
        tips: &[],
        keys: Some(KeySpec {
            first: 1,
            last: 1,
            step: 1,
            flags: &[Rw, Access, Update, VariableFlags],
            notes: Some("RW and ACCESS due to the optional `GET` argument"),
        }),
        cluster: ReplicatedExcept(set_refused_in_cluster),
        dispatch: Dispatch::Parse(parsers::set),
    },
    CommandSpec {
        name: "del",
        arity: -2,
        flags: &[Write],
        acl: &[Keyspace],
        tips: MULTI_KEY_COUNT,
        keys: all_keys(1, &[Rm, Delete]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(parsers::del),
    },
    CommandSpec {
        name: "unlink",
        arity: -2,
        flags: &[Write, Fast],
        acl: &[Keyspace],
        tips: MULTI_KEY_COUNT,
        keys: all_keys(1, &[Rm, Delete]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(parsers::del),
    },
    CommandSpec {
        name: "exists",
        arity: -2,
        flags: &[Readonly, Fast],
        acl: &[Keyspace],
        tips: MULTI_KEY_COUNT,
        keys: all_keys(1, &[Ro]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(parsers::exists),
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: &[Readonly, Fast, BatchRead],
        acl: &[StringAcl],
        tips: &["request_policy:multi_shard"],
        keys: all_keys(1, &[Ro, Access]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(parsers::mget),
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: &[Write, DenyOom, BlindWrite],
        acl: &[StringAcl],
        tips: &[
            "request_policy:multi_shard",
            "response_policy:all_succeeded",
        ],
        keys: all_keys(2, &[Ow, Update]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(parsers::mset),
    },
    expire("expire", "EXPIRE", parsers::expire),
    expire("pexpire", "PEXPIRE", parsers::pexpire),
    expire("expireat", "EXPIREAT", parsers::expireat),
    expire("pexpireat", "PEXPIREAT", parsers::pexpireat),
    CommandSpec {
        name: "ttl",
        arity: 2,
        flags: &[Readonly, Fast],
        acl: &[Keyspace],
        tips: &["nondeterministic_output"],
        keys: one_key(&[Ro, Access]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(|rest, _| Ok(Command::Ttl(rest[0], Ttl::Seconds))),
    },
    CommandSpec {
        name: "pttl",
        arity: 2,
        flags: &[Readonly, Fast],
        acl: &[Keyspace],
        tips: &["nondeterministic_output"],
        keys: one_key(&[Ro, Access]),
        cluster: Replicated,
        dispatch: Dispatch::Parse(|rest, _| Ok(Command::Ttl(rest[0], Ttl::Millis))),
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: &[Readonly, Fast],
        acl: &[Keyspace],
        tips: &["request_policy:all_shards", "response_policy:agg_sum"],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(|_, _| Ok(Command::DbSize)),
    },
    CommandSpec {
        name: "scan",
        arity: -2,
        flags: &[Readonly],
        acl: &[Keyspace],
        tips: &[
            "nondeterministic_output",
            "request_policy:special",
            "response_policy:special",
        ],
        keys: None,
        cluster: NodeLocal,
        dispatch: Dispatch::Parse(parsers::scan),
    },
    flush("flushdb", "FLUSHDB"),
    flush("flushall", "FLUSHALL"),
    CommandSpec {
        name: "vget",
        arity: -2,
        flags: &[Readonly, Fast],
        acl: &[StringAcl],
        tips: &[],
        keys: one_key(&[Ro, Access]),
        cluster: ClusterOnly,
        dispatch: Dispatch::Parse(parsers::vget),
    },
    CommandSpec {
        name: "vset",
        arity: -3,
        flags: &[Write, DenyOom],
        acl: &[StringAcl],
        tips: &[],
        keys: one_key(&[Rw, Update]),
        cluster: ClusterOnly,
        dispatch: Dispatch::Parse(parsers::vset),
    },
    CommandSpec {
        name: "vdel",
        arity: -2,
        flags: &[Write, Fast],
        acl: &[Keyspace],
        tips: &[],
        keys: one_key(&[Rm, Delete]),
        cluster: ClusterOnly,
        dispatch: Dispatch::Parse(parsers::vdel),
    },
    CommandSpec {
        name: "consistency",
        arity: -1,
        flags: &[Loading, Stale, Fast],
        acl: &[Connection],
        tips: &[],
        keys: None,
        cluster: ClusterOnly,
        dispatch: Dispatch::Parse(parsers::consistency),
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::command::{Limits, parse};

    #[test]
    fn a_refusal_names_the_command_refused() {
        for spec in COMMANDS {
            if let RefusedInCluster(what) = spec.cluster {
                let named = what.to_ascii_lowercase();
                assert!(
                    named.starts_with(spec.name),
                    "{} is refused as {what}",
                    spec.name
                );
            }
        }
    }

    const ENV: Env = Env {
        now_ms: 1_000_000,
        limits: Limits {
            max_value_bytes: 1024,
        },
    };

    /// A valid request for each entry at its smallest arity, its keys spelled `key…` and no
    /// other argument so spelled. Adding a command means adding its example here.
    fn example(name: &str) -> Vec<String> {
        let args = match name {
            "ping" | "hello" | "command" | "info" | "quit" | "dbsize" | "flushdb" | "flushall"
            | "consistency" => name,
            "echo" => "echo hi",
            "command|count" => "command count",
            "command|docs" => "command docs",
            "command|info" => "command info",
            "command|list" => "command list",
            "select" => "select 0",
            "client" | "client|id" => "client id",
            "client|setname" => "client setname n",
            "client|setinfo" => "client setinfo lib-name x",
            "client|getname" => "client getname",
            "config" | "config|get" => "config get maxmemory",
            "get" => "get key1",
            "set" => "set key1 v",
            "del" | "unlink" | "exists" | "mget" => &format!("{name} key1"),
            "ttl" | "pttl" | "vget" | "vdel" => &format!("{name} key1"),
            "mset" => "mset key1 v",
            "expire" | "pexpire" | "expireat" | "pexpireat" => &format!("{name} key1 10"),
            "scan" => "scan 0",
            "vset" => "vset key1 v",
            other => panic!("no example request for {other}: add one to this test"),
        };
        args.split(' ').map(str::to_owned).collect()
    }

    fn all_specs() -> impl Iterator<Item = &'static CommandSpec> {
        COMMANDS
            .iter()
            .flat_map(|spec| std::iter::once(spec).chain(spec.subcommands()))
    }

    /// Every entry's example parses to that entry with the arity the table gives, the keys the
    /// table finds are the example's keys, and one argument too many or too few is refused
    /// with the table's arity error.
    #[test]
    fn every_entry_agrees_with_its_parser() {
        for spec in all_specs() {
            let words = example(spec.name);
            let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
            let req = parse(&args, &ENV)
                .unwrap_or_else(|e| panic!("{}: example refused: {}", spec.name, e.0));
            if spec.subcommands().is_empty() {
                assert!(
                    std::ptr::eq(req.spec, spec),
                    "{} parsed as {}",
                    spec.name,
                    req.spec.name
                );
            }
            let n = spec.arity.unsigned_abs() as usize;
            assert!(
                args.len() == n || (spec.arity < 0 && args.len() > n),
                "{}: example has {} arguments, arity {}",
                spec.name,
                args.len(),
                spec.arity
            );
            let keys: Vec<&[u8]> = req.spec.keys(&args).collect();
            let expected: Vec<&[u8]> = args[1..]
                .iter()
                .copied()
                .filter(|a| a.starts_with(b"key"))
                .collect();
            assert_eq!(keys, expected, "{}: keys", spec.name);
            assert_eq!(req.keys().len(), expected.len(), "{}", spec.name);
            if req.cmd.is_blind() {
                assert!(spec.has(Flag::BlindWrite), "{} is blind", spec.name);
            }

            // A subcommand's request loses its subcommand name when cut below two.
            let shortest = if spec.name.contains('|') { 2 } else { 1 };
            if spec.arity > 0 {
                let mut more = args.clone();
                more.push(b"extra");
                assert_eq!(
                    parse(&more, &ENV).unwrap_err(),
                    spec.wrong_arity(),
                    "{}",
                    spec.name
                );
            }
            if args.len() == n && n > shortest {
                let fewer = &args[..n - 1];
                assert_eq!(
                    parse(fewer, &ENV).unwrap_err(),
                    spec.wrong_arity(),
                    "{}",
                    spec.name
                );
            }
        }
    }

    /// The table's own rules, each of which [`resolve`] and the batching rely on.
    #[test]
    fn entries_are_well_formed() {
        let mut names = std::collections::HashSet::new();
        for spec in all_specs() {
            let name = spec.name;
            assert!(names.insert(name), "{name} twice");
            assert_eq!(name, name.to_ascii_lowercase(), "{name}");
            assert!(spec.arity != 0, "{name}");
            assert!(
                !(spec.has(Flag::Write) && spec.has(Flag::Readonly)),
                "{name}"
            );
            if spec.has(Flag::BatchRead) {
                assert!(spec.has(Flag::Readonly) && spec.keys.is_some(), "{name}");
            }
            if spec.has(Flag::BlindWrite) {
                assert!(spec.has(Flag::Write) && spec.keys.is_some(), "{name}");
            }
            if let Some(k) = spec.keys {
                assert!(k.first >= 1 && k.step >= 1, "{name}");
                assert!(k.last < 0 || k.last >= k.first, "{name}");
                if spec.arity > 0 {
                    assert!(k.last < spec.arity, "{name}: keys past the arity");
                }
                assert!(!k.flags.is_empty(), "{name}");
            }
            match spec.dispatch {
                Dispatch::Parse(_) => {}
                Dispatch::Container { bare, subcommands } => {
                    assert!(
                        bare.is_some() || spec.arity <= -2,
                        "{name}: needs a subcommand"
                    );
                    assert!(spec.keys.is_none(), "{name}");
                    for sub in subcommands {
                        assert!(sub.name.starts_with(&format!("{name}|")), "{}", sub.name);
                        assert!(sub.arity.unsigned_abs() >= 2, "{}", sub.name);
                        assert!(sub.subcommands().is_empty(), "{}: one level only", sub.name);
                    }
                }
            }
        }
    }

    #[test]
    fn lookup_by_full_name() {
        assert_eq!(lookup(b"GET").map(|s| s.name), Some("get"));
        assert_eq!(lookup(b"config|GET").map(|s| s.name), Some("config|get"));
        assert_eq!(lookup(b"config").map(|s| s.name), Some("config"));
        assert!(lookup(b"config|nope").is_none());
        assert!(lookup(b"get|x").is_none());
        assert!(lookup(b"config|get|x").is_none());
        assert!(lookup(b"nope").is_none());
    }

    #[test]
    fn key_positions() {
        let mset = lookup(b"mset").unwrap();
        let args: [&[u8]; 5] = [b"mset", b"a", b"1", b"b", b"2"];
        assert_eq!(mset.keys(&args).collect::<Vec<_>>(), [b"a", b"b"]);
        let get = lookup(b"get").unwrap();
        assert_eq!(get.keys(&[b"get", b"k"]).collect::<Vec<_>>(), [b"k"]);
        assert_eq!(lookup(b"ping").unwrap().keys(&[b"ping"]).count(), 0);
    }

    #[test]
    fn implied_acl_categories() {
        let cats = |name: &[u8]| -> Vec<&str> {
            lookup(name)
                .unwrap()
                .acl_categories()
                .map(Acl::name)
                .collect()
        };
        assert_eq!(cats(b"get"), ["read", "string", "fast"]);
        assert_eq!(cats(b"del"), ["keyspace", "write", "slow"]);
        assert_eq!(cats(b"config|get"), ["admin", "slow", "dangerous"]);
        assert_eq!(cats(b"client"), ["slow"]);
    }

    #[test]
    fn mode_refusals() {
        let args: [&[u8]; 5] = [b"set", b"k", b"v", b"ex", b"1"];
        let req = parse(&args, &ENV).unwrap();
        assert_eq!(
            req.spec.cluster.refusal(&req.cmd, Mode::Cluster),
            Some(ModeRefusal::NotInCluster("SET with an expiry"))
        );
        assert_eq!(req.spec.cluster.refusal(&req.cmd, Mode::Standalone), None);
        let args: [&[u8]; 2] = [b"vget", b"k"];
        let req = parse(&args, &ENV).unwrap();
        assert_eq!(
            req.spec.cluster.refusal(&req.cmd, Mode::Standalone),
            Some(ModeRefusal::NeedsCluster)
        );
        assert_eq!(req.spec.cluster.refusal(&req.cmd, Mode::Cluster), None);
    }
}
