//! The argument parsers the command table names: options and their syntax, with Redis's
//! error texts. Each takes the arguments after the command's name, whose number the table's
//! arity has already checked.

use shoal_cluster::consistency::Consistency;
use shoal_engine::types::KEY_LEN_MAX;

use super::{ArgError, Command, CommandSub, Env, ListFilter, Refusal, SetOpts};
use crate::shard::store::{Cond, ExpireCond, Expiry};

pub(super) const SYNTAX_ERROR: &str = "ERR syntax error";
pub(super) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// SCAN's default COUNT, as in Redis.
const SCAN_COUNT_DEFAULT: usize = 10;
/// Largest SCAN COUNT honoured: one SCAN call asks every shard for this many keys, so it
/// bounds the memory and time of a call.
const SCAN_COUNT_MAX: usize = 100_000;

type Parsed<'a> = Result<Command<'a>, ArgError>;

fn refuse(msg: impl Into<String>) -> ArgError {
    ArgError::Refused(Refusal(msg.into()))
}

/// Parses a Redis integer argument strictly (no spaces, no `+`, no leading zeros).
pub(super) fn parse_i64(arg: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    if s.starts_with("-0") {
        return None;
    }
    s.parse().ok()
}

fn int_arg(arg: &[u8]) -> Result<i64, ArgError> {
    parse_i64(arg).ok_or_else(|| refuse(NOT_AN_INTEGER))
}

fn check_key(key: &[u8]) -> Result<(), ArgError> {
    if key.len() > KEY_LEN_MAX {
        return Err(refuse(format!(
            "ERR key is {} bytes, the limit is {KEY_LEN_MAX}",
            key.len()
        )));
    }
    Ok(())
}

fn check_keys(keys: &[&[u8]]) -> Result<(), ArgError> {
    keys.iter().try_for_each(|k| check_key(k))
}

fn check_value(value: &[u8], env: &Env) -> Result<(), ArgError> {
    let max = env.limits.max_value_bytes;
    if value.len() > max {
        return Err(refuse(format!(
            "ERR string exceeds maximum allowed size (max-value-bytes {max})"
        )));
    }
    Ok(())
}

pub fn ping<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    match rest {
        [] => Ok(Command::Ping(None)),
        [msg] => Ok(Command::Ping(Some(msg))),
        _ => Err(ArgError::WrongArity),
    }
}

pub fn select<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    if int_arg(rest[0])? != 0 {
        return Err(refuse("ERR DB index is out of range"));
    }
    Ok(Command::Select)
}

pub fn get<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    check_key(rest[0])?;
    Ok(Command::Get(rest[0]))
}

/// DEL and UNLINK.
pub fn del<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    check_keys(rest)?;
    Ok(Command::Del(rest))
}

pub fn exists<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    check_keys(rest)?;
    Ok(Command::Exists(rest))
}

pub fn mget<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    check_keys(rest)?;
    Ok(Command::MGet(rest))
}

pub fn mset<'a>(rest: &'a [&'a [u8]], env: &Env) -> Parsed<'a> {
    if rest.len() % 2 != 0 {
        return Err(ArgError::WrongArity);
    }
    for pair in rest.chunks_exact(2) {
        check_key(pair[0])?;
        check_value(pair[1], env)?;
    }
    Ok(Command::MSet(rest))
}

/// FLUSHDB and FLUSHALL, with an optional SYNC or ASYNC (the same here).
pub fn flush<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    match rest {
        [] => Ok(Command::FlushDb),
        [mode] if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {
            Ok(Command::FlushDb)
        }
        _ => Err(refuse(SYNTAX_ERROR)),
    }
}

/// A consistency level argument: ONE, QUORUM, ALL or a positive number.
fn level(arg: &[u8]) -> Result<Consistency, ArgError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            refuse(format!(
                "ERR invalid consistency level '{}' (ONE, QUORUM, ALL or a number)",
                String::from_utf8_lossy(arg)
            ))
        })
}

pub fn consistency<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    match rest {
        [] => Ok(Command::Consistency(None)),
        [r, w] => Ok(Command::Consistency(Some((level(r)?, level(w)?)))),
        _ => Err(ArgError::WrongArity),
    }
}

/// `VGET key [R level]`.
pub fn vget<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    let key = rest[0];
    check_key(key)?;
    let r = match &rest[1..] {
        [] => None,
        [opt, l] if opt.eq_ignore_ascii_case(b"r") => Some(level(l)?),
        _ => return Err(refuse(SYNTAX_ERROR)),
    };
    Ok(Command::VGet { key, r })
}

/// `VSET key value [CONTEXT c] [W level]`.
pub fn vset<'a>(rest: &'a [&'a [u8]], env: &Env) -> Parsed<'a> {
    check_value(rest[1], env)?;
    versioned_write(rest[0], Some(rest[1]), &rest[2..])
}

/// `VDEL key [CONTEXT c] [W level]`.
pub fn vdel<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    versioned_write(rest[0], None, &rest[1..])
}

fn versioned_write<'a>(
    key: &'a [u8],
    value: Option<&'a [u8]>,
    mut opts: &'a [&'a [u8]],
) -> Parsed<'a> {
    check_key(key)?;
    let mut context = None;
    let mut w = None;
    while let [opt, arg, tail @ ..] = opts {
        if opt.eq_ignore_ascii_case(b"context") && context.is_none() {
            let vv = crate::front::context::parse(arg)
                .map_err(|e| refuse(format!("ERR invalid context: {e}")))?;
            context = Some(vv);
        } else if opt.eq_ignore_ascii_case(b"w") && w.is_none() {
            w = Some(level(arg)?);
        } else {
            return Err(refuse(SYNTAX_ERROR));
        }
        opts = tail;
    }
    if !opts.is_empty() {
        return Err(refuse(SYNTAX_ERROR));
    }
    Ok(Command::VSet {
        key,
        value,
        context: context.unwrap_or_default(),
        w,
    })
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
pub fn hello<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    let Some((first, mut opts)) = rest.split_first() else {
        return Ok(Command::Hello(None));
    };
    let version = parse_i64(first)
        .ok_or_else(|| refuse("ERR Protocol version is not an integer or out of range"))?;
    while let Some((opt, tail)) = opts.split_first() {
        opts = if opt.eq_ignore_ascii_case(b"auth") && tail.len() >= 2 {
            &tail[2..]
        } else if opt.eq_ignore_ascii_case(b"setname") && !tail.is_empty() {
            &tail[1..]
        } else {
            return Err(refuse(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        };
    }
    if !(2..=3).contains(&version) {
        return Err(refuse("NOPROTO unsupported protocol version"));
    }
    Ok(Command::Hello(Some(version)))
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]`.
pub fn command_list<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    let filter = match rest {
        [] => None,
        [by, kind, arg] if by.eq_ignore_ascii_case(b"filterby") => {
            Some(if kind.eq_ignore_ascii_case(b"module") {
                ListFilter::Module
            } else if kind.eq_ignore_ascii_case(b"aclcat") {
                ListFilter::AclCat(arg)
            } else if kind.eq_ignore_ascii_case(b"pattern") {
                ListFilter::Pattern(arg)
            } else {
                return Err(refuse(SYNTAX_ERROR));
            })
        }
        _ => return Err(refuse(SYNTAX_ERROR)),
    };
    Ok(Command::Command(CommandSub::List(filter)))
}

/// `base + n * unit` as an absolute time in ms, or `None` on overflow.
fn absolute_ms(n: i64, unit_ms: i64, base_ms: u64) -> Option<i64> {
    n.checked_mul(unit_ms)?
        .checked_add(i64::try_from(base_ms).ok()?)
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`.
pub fn set<'a>(rest: &'a [&'a [u8]], env: &Env) -> Parsed<'a> {
    let (key, value) = (rest[0], rest[1]);
    check_key(key)?;
    check_value(value, env)?;
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
            let invalid = || refuse("ERR invalid expire time in 'set' command");
            if n <= 0 {
                return Err(invalid());
            }
            let at = if is(b"ex") {
                absolute_ms(n, 1000, env.now_ms)
            } else if is(b"px") {
                absolute_ms(n, 1, env.now_ms)
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
            return Err(refuse(SYNTAX_ERROR));
        }
        i += 1;
    }
    Ok(Command::Set { key, value, opts })
}

pub fn expire<'a>(rest: &'a [&'a [u8]], env: &Env) -> Parsed<'a> {
    expire_at("expire", 1000, env.now_ms, rest)
}

pub fn pexpire<'a>(rest: &'a [&'a [u8]], env: &Env) -> Parsed<'a> {
    expire_at("pexpire", 1, env.now_ms, rest)
}

pub fn expireat<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    expire_at("expireat", 1000, 0, rest)
}

pub fn pexpireat<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    expire_at("pexpireat", 1, 0, rest)
}

/// EXPIRE and its siblings: key, `n` units after `base_ms`, then NX, XX, GT or LT.
fn expire_at<'a>(name: &str, unit_ms: i64, base_ms: u64, rest: &'a [&'a [u8]]) -> Parsed<'a> {
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
            return Err(refuse(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        };
        cond = match (cond, new) {
            (ExpireCond::Always, c) => c,
            (a, b) if a == b => a,
            (ExpireCond::Gt, ExpireCond::Lt) | (ExpireCond::Lt, ExpireCond::Gt) => {
                return Err(refuse(
                    "ERR GT and LT options at the same time are not compatible",
                ));
            }
            _ => {
                return Err(refuse(
                    "ERR NX and XX, GT or LT options at the same time are not compatible",
                ));
            }
        };
    }
    let at_ms = absolute_ms(n, unit_ms, base_ms)
        .ok_or_else(|| refuse(format!("ERR invalid expire time in '{name}' command")))?;
    Ok(Command::Expire { key, at_ms, cond })
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
pub fn scan<'a>(rest: &'a [&'a [u8]], _: &Env) -> Parsed<'a> {
    let cursor = std::str::from_utf8(rest[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| refuse("ERR invalid cursor"))?;
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
                return Err(refuse(SYNTAX_ERROR));
            }
            count = (n as usize).min(SCAN_COUNT_MAX);
        } else if opt.eq_ignore_ascii_case(b"type") {
            type_mismatch = !value.eq_ignore_ascii_case(b"string");
        } else {
            return Err(refuse(SYNTAX_ERROR));
        }
        opts = tail;
    }
    if !opts.is_empty() {
        return Err(refuse(SYNTAX_ERROR));
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        type_mismatch,
    })
}
