//! Requests as typed commands: name lookup, arity and option syntax, with Redis's error texts.
//!
//! A [`Command`] borrows its arguments from the connection's read buffer, so parsing
//! allocates nothing. Times are made absolute here (`EX 10` → an expiry in ms since the
//! epoch), from a `now_ms` the caller passes in.

use shoal_cluster::consistency::Consistency;
use shoal_cluster::vv::VersionVector;
use shoal_engine::types::KEY_LEN_MAX;

use crate::shard::store::{Cond, ExpireCond, Expiry};

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
pub enum CommandSub {
    All,
    Count,
    Docs,
    /// COMMAND INFO name...: one entry (or nil) per name.
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Ping(Option<&'a [u8]>),
    Echo(&'a [u8]),
    /// HELLO [protover]: `None` keeps the current protocol.
    Hello(Option<i64>),
    Command(CommandSub, &'a [&'a [u8]]),
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
    /// Counted as a write in the shard's statistics.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Set { .. }
                | Command::Del(_)
                | Command::MSet(_)
                | Command::Expire { .. }
                | Command::FlushDb
                | Command::VSet { .. }
        )
    }
}

/// A request the server refuses: the error reply's text, code included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    fn new(msg: impl Into<String>) -> Refusal {
        Refusal(msg.into())
    }
}

pub const SYNTAX_ERROR: &str = "ERR syntax error";
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// SCAN's default COUNT, as in Redis.
const SCAN_COUNT_DEFAULT: usize = 10;
/// Largest SCAN COUNT honoured: one SCAN call asks every shard for this many keys, so it
/// bounds the memory and time of a call.
pub const SCAN_COUNT_MAX: usize = 100_000;

/// The commands Shoal knows, with Redis's arity (positive: exact, negative: at least), for
/// arity checks and `COMMAND`.
pub const COMMANDS: &[(&str, i32)] = &[
    ("ping", -1),
    ("echo", 2),
    ("hello", -1),
    ("command", -1),
    ("info", -1),
    ("quit", -1),
    ("select", 2),
    ("client", -2),
    ("config", -2),
    ("get", 2),
    ("set", -3),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("mget", -2),
    ("mset", -3),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("dbsize", 1),
    ("scan", -2),
    ("flushdb", -1),
    ("flushall", -1),
    ("vget", -2),
    ("vset", -3),
    ("vdel", -2),
    ("consistency", -1),
];

fn lookup(name: &[u8]) -> Option<(&'static str, i32)> {
    COMMANDS
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .copied()
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

fn wrong_arity(name: &str) -> Refusal {
    Refusal(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Parses a Redis integer argument strictly (no spaces, no `+`, no leading zeros).
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    if s.starts_with("-0") {
        return None;
    }
    s.parse().ok()
}

fn int_arg(arg: &[u8]) -> Result<i64, Refusal> {
    parse_i64(arg).ok_or_else(|| Refusal::new(NOT_AN_INTEGER))
}

/// Limits that depend on the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_value_bytes: usize,
}

fn check_key(key: &[u8]) -> Result<(), Refusal> {
    if key.len() > KEY_LEN_MAX {
        return Err(Refusal(format!(
            "ERR key is {} bytes, the limit is {KEY_LEN_MAX}",
            key.len()
        )));
    }
    Ok(())
}

fn check_keys(keys: &[&[u8]]) -> Result<(), Refusal> {
    keys.iter().try_for_each(|k| check_key(k))
}

fn check_value(value: &[u8], limits: Limits) -> Result<(), Refusal> {
    if value.len() > limits.max_value_bytes {
        return Err(Refusal(format!(
            "ERR string exceeds maximum allowed size (max-value-bytes {})",
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// Parses one request. `args` is the request array, name first; it is never empty.
pub fn parse<'a>(
    args: &'a [&'a [u8]],
    now_ms: u64,
    limits: Limits,
) -> Result<Command<'a>, Refusal> {
    debug_assert!(!args.is_empty());
    let Some((name, arity)) = lookup(args[0]) else {
        return Err(unknown_command(args));
    };
    let argc = args.len() as i32;
    if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return Err(wrong_arity(name));
    }
    let rest = &args[1..];
    Ok(match name {
        "ping" => match rest {
            [] => Command::Ping(None),
            [msg] => Command::Ping(Some(msg)),
            _ => return Err(wrong_arity(name)),
        },
        "echo" => Command::Echo(rest[0]),
        "hello" => parse_hello(rest)?,
        "command" => parse_command_sub(rest)?,
        "info" => Command::Info(rest),
        "quit" => Command::Quit,
        "select" => {
            let db = int_arg(rest[0])?;
            if db != 0 {
                return Err(Refusal::new("ERR DB index is out of range"));
            }
            Command::Select
        }
        "client" => parse_client(rest)?,
        "config" => {
            if !rest[0].eq_ignore_ascii_case(b"get") {
                return Err(Refusal(format!(
                    "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                    String::from_utf8_lossy(rest[0])
                )));
            }
            Command::ConfigGet
        }
        "get" => {
            check_key(rest[0])?;
            Command::Get(rest[0])
        }
        "set" => parse_set(rest, now_ms, limits)?,
        "del" | "unlink" => {
            check_keys(rest)?;
            Command::Del(rest)
        }
        "exists" => {
            check_keys(rest)?;
            Command::Exists(rest)
        }
        "mget" => {
            check_keys(rest)?;
            Command::MGet(rest)
        }
        "mset" => {
            if rest.len() % 2 != 0 {
                return Err(wrong_arity(name));
            }
            for pair in rest.chunks_exact(2) {
                check_key(pair[0])?;
                check_value(pair[1], limits)?;
            }
            Command::MSet(rest)
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => parse_expire(name, rest, now_ms)?,
        "ttl" => Command::Ttl(rest[0], Ttl::Seconds),
        "pttl" => Command::Ttl(rest[0], Ttl::Millis),
        "dbsize" => Command::DbSize,
        "scan" => parse_scan(rest)?,
        "flushdb" | "flushall" => match rest {
            [] => Command::FlushDb,
            [mode] if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {
                Command::FlushDb
            }
            _ => return Err(Refusal::new(SYNTAX_ERROR)),
        },
        "vget" => parse_vget(rest)?,
        "vset" => {
            check_value(rest[1], limits)?;
            parse_vwrite(rest[0], Some(rest[1]), &rest[2..])?
        }
        "vdel" => parse_vwrite(rest[0], None, &rest[1..])?,
        "consistency" => match rest {
            [] => Command::Consistency(None),
            [r, w] => Command::Consistency(Some((level(r)?, level(w)?))),
            _ => return Err(wrong_arity(name)),
        },
        _ => return Err(unknown_command(args)),
    })
}

/// A consistency level argument: ONE, QUORUM, ALL or a positive number.
fn level(arg: &[u8]) -> Result<Consistency, Refusal> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Refusal(format!(
                "ERR invalid consistency level '{}' (ONE, QUORUM, ALL or a number)",
                String::from_utf8_lossy(arg)
            ))
        })
}

fn parse_vget<'a>(rest: &'a [&'a [u8]]) -> Result<Command<'a>, Refusal> {
    let key = rest[0];
    check_key(key)?;
    let r = match &rest[1..] {
        [] => None,
        [opt, l] if opt.eq_ignore_ascii_case(b"r") => Some(level(l)?),
        _ => return Err(Refusal::new(SYNTAX_ERROR)),
    };
    Ok(Command::VGet { key, r })
}

fn parse_vwrite<'a>(
    key: &'a [u8],
    value: Option<&'a [u8]>,
    mut opts: &'a [&'a [u8]],
) -> Result<Command<'a>, Refusal> {
    check_key(key)?;
    let mut context = None;
    let mut w = None;
    while let [opt, arg, tail @ ..] = opts {
        if opt.eq_ignore_ascii_case(b"context") && context.is_none() {
            let vv = crate::front::context::parse(arg)
                .map_err(|e| Refusal(format!("ERR invalid context: {e}")))?;
            context = Some(vv);
        } else if opt.eq_ignore_ascii_case(b"w") && w.is_none() {
            w = Some(level(arg)?);
        } else {
            return Err(Refusal::new(SYNTAX_ERROR));
        }
        opts = tail;
    }
    if !opts.is_empty() {
        return Err(Refusal::new(SYNTAX_ERROR));
    }
    Ok(Command::VSet {
        key,
        value,
        context: context.unwrap_or_default(),
        w,
    })
}

fn parse_hello<'a>(rest: &'a [&'a [u8]]) -> Result<Command<'a>, Refusal> {
    let Some((first, mut opts)) = rest.split_first() else {
        return Ok(Command::Hello(None));
    };
    let version = parse_i64(first)
        .ok_or_else(|| Refusal::new("ERR Protocol version is not an integer or out of range"))?;
    while let Some((opt, tail)) = opts.split_first() {
        opts = if opt.eq_ignore_ascii_case(b"auth") && tail.len() >= 2 {
            &tail[2..]
        } else if opt.eq_ignore_ascii_case(b"setname") && !tail.is_empty() {
            &tail[1..]
        } else {
            return Err(Refusal(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        };
    }
    if !(2..=3).contains(&version) {
        return Err(Refusal::new("NOPROTO unsupported protocol version"));
    }
    Ok(Command::Hello(Some(version)))
}

fn parse_command_sub<'a>(rest: &'a [&'a [u8]]) -> Result<Command<'a>, Refusal> {
    let Some((sub, tail)) = rest.split_first() else {
        return Ok(Command::Command(CommandSub::All, rest));
    };
    let sub = if sub.eq_ignore_ascii_case(b"count") {
        CommandSub::Count
    } else if sub.eq_ignore_ascii_case(b"docs") {
        CommandSub::Docs
    } else if sub.eq_ignore_ascii_case(b"info") {
        CommandSub::Info
    } else {
        return Err(Refusal(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )));
    };
    Ok(Command::Command(sub, tail))
}

fn parse_client<'a>(rest: &'a [&'a [u8]]) -> Result<Command<'a>, Refusal> {
    let sub = rest[0];
    if sub.eq_ignore_ascii_case(b"setname") || sub.eq_ignore_ascii_case(b"setinfo") {
        Ok(Command::ClientOk)
    } else if sub.eq_ignore_ascii_case(b"id") {
        Ok(Command::ClientId)
    } else if sub.eq_ignore_ascii_case(b"getname") {
        Ok(Command::ClientGetName)
    } else {
        Err(Refusal(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        )))
    }
}

/// `base + n * unit` as an absolute time in ms, or `None` on overflow.
fn absolute_ms(n: i64, unit_ms: i64, base_ms: u64) -> Option<i64> {
    n.checked_mul(unit_ms)?
        .checked_add(i64::try_from(base_ms).ok()?)
}

fn parse_set<'a>(
    rest: &'a [&'a [u8]],
    now_ms: u64,
    limits: Limits,
) -> Result<Command<'a>, Refusal> {
    let (key, value) = (rest[0], rest[1]);
    check_key(key)?;
    check_value(value, limits)?;
    let mut opts = SetOpts {
        cond: Cond::Always,
        expiry: Expiry::Never,
        get: false,
    };
    let mut expiry_set = false;
    let mut i = 2;
    while i < rest.len() {
        let opt = rest[i];
        let next = rest.get(i + 1);
        let is = |s: &[u8]| opt.eq_ignore_ascii_case(s);
        if is(b"nx") && opts.cond == Cond::Always {
            opts.cond = Cond::Nx;
        } else if is(b"xx") && opts.cond == Cond::Always {
            opts.cond = Cond::Xx;
        } else if is(b"get") && !opts.get {
            opts.get = true;
        } else if is(b"keepttl") && !expiry_set {
            opts.expiry = Expiry::Keep;
            expiry_set = true;
        } else if (is(b"ex") || is(b"px") || is(b"exat") || is(b"pxat"))
            && !expiry_set
            && next.is_some()
        {
            let n = int_arg(next.copied().unwrap_or_default())?;
            let invalid = || Refusal::new("ERR invalid expire time in 'set' command");
            if n <= 0 {
                return Err(invalid());
            }
            let at = if is(b"ex") {
                absolute_ms(n, 1000, now_ms)
            } else if is(b"px") {
                absolute_ms(n, 1, now_ms)
            } else if is(b"exat") {
                absolute_ms(n, 1000, 0)
            } else {
                Some(n)
            }
            .ok_or_else(invalid)?;
            opts.expiry = Expiry::At(u64::try_from(at).map_err(|_| invalid())?);
            expiry_set = true;
            i += 1;
        } else {
            return Err(Refusal::new(SYNTAX_ERROR));
        }
        i += 1;
    }
    Ok(Command::Set { key, value, opts })
}

fn parse_expire<'a>(name: &str, rest: &'a [&'a [u8]], now_ms: u64) -> Result<Command<'a>, Refusal> {
    let key = rest[0];
    check_key(key)?;
    let n = int_arg(rest[1])?;
    let mut cond = ExpireCond::Always;
    for opt in &rest[2..] {
        let new = if opt.eq_ignore_ascii_case(b"nx") {
            ExpireCond::Nx
        } else if opt.eq_ignore_ascii_case(b"xx") {
            ExpireCond::Xx
        } else if opt.eq_ignore_ascii_case(b"gt") {
            ExpireCond::Gt
        } else if opt.eq_ignore_ascii_case(b"lt") {
            ExpireCond::Lt
        } else {
            return Err(Refusal(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        };
        cond = match (cond, new) {
            (ExpireCond::Always, c) => c,
            (a, b) if a == b => a,
            (ExpireCond::Gt, ExpireCond::Lt) | (ExpireCond::Lt, ExpireCond::Gt) => {
                return Err(Refusal::new(
                    "ERR GT and LT options at the same time are not compatible",
                ));
            }
            _ => {
                return Err(Refusal::new(
                    "ERR NX and XX, GT or LT options at the same time are not compatible",
                ));
            }
        };
    }
    let (unit, base) = match name {
        "expire" => (1000, now_ms),
        "pexpire" => (1, now_ms),
        "expireat" => (1000, 0),
        _ => (1, 0),
    };
    let at_ms = absolute_ms(n, unit, base)
        .ok_or_else(|| Refusal(format!("ERR invalid expire time in '{name}' command")))?;
    Ok(Command::Expire { key, at_ms, cond })
}

fn parse_scan<'a>(rest: &'a [&'a [u8]]) -> Result<Command<'a>, Refusal> {
    let cursor = std::str::from_utf8(rest[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Refusal::new("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count = SCAN_COUNT_DEFAULT;
    let mut type_mismatch = false;
    let mut opts = &rest[1..];
    while let [opt, value, tail @ ..] = opts {
        if opt.eq_ignore_ascii_case(b"match") {
            pattern = Some(*value).filter(|p| *p != b"*");
        } else if opt.eq_ignore_ascii_case(b"count") {
            let n = int_arg(value)?;
            if n < 1 {
                return Err(Refusal::new(SYNTAX_ERROR));
            }
            count = (n as usize).min(SCAN_COUNT_MAX);
        } else if opt.eq_ignore_ascii_case(b"type") {
            type_mismatch = !value.eq_ignore_ascii_case(b"string");
        } else {
            return Err(Refusal::new(SYNTAX_ERROR));
        }
        opts = tail;
    }
    if !opts.is_empty() {
        return Err(Refusal::new(SYNTAX_ERROR));
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        type_mismatch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_value_bytes: 1024,
    };
    const NOW: u64 = 1_000_000;

    fn p<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, String> {
        parse(args, NOW, LIMITS).map_err(|r| r.0)
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
