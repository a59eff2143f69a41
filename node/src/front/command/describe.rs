//! `COMMAND` and its subcommands: the command table as Redis 7 shows its own.
//!
//! An entry of `COMMAND INFO` has ten fields:
//!
//! | #  | field          | type                                      |
//! |----|----------------|-------------------------------------------|
//! | 1  | name           | bulk string (a subcommand's full name)    |
//! | 2  | arity          | integer                                   |
//! | 3  | flags          | set of status strings                     |
//! | 4  | first key      | integer                                   |
//! | 5  | last key       | integer                                   |
//! | 6  | key step       | integer                                   |
//! | 7  | ACL categories | set of status strings (`@read`)           |
//! | 8  | tips           | set of bulk strings                       |
//! | 9  | key specs      | set of maps                               |
//! | 10 | subcommands    | array of entries; an empty set if none    |
//!
//! Sets and maps are arrays in RESP2.

use super::table::{COMMANDS, CommandSpec, KeySpec, lookup};
use super::{CommandSub, ListFilter};
use crate::front::glob;
use crate::front::resp::Reply;

/// The reply to `COMMAND` or one of its subcommands.
pub fn reply(sub: CommandSub<'_>, reply: &mut Reply) {
    match sub {
        CommandSub::All | CommandSub::Info(&[]) => {
            reply.array(COMMANDS.len());
            for spec in COMMANDS {
                entry(spec, reply);
            }
        }
        CommandSub::Info(names) => {
            reply.array(names.len());
            for name in names {
                match lookup(name) {
                    Some(spec) => entry(spec, reply),
                    None => reply.null(),
                }
            }
        }
        CommandSub::Count => reply.int(COMMANDS.len() as i64),
        CommandSub::Docs => reply.map(0),
        CommandSub::List(filter) => list(filter, reply),
    }
}

/// One `COMMAND INFO` entry.
fn entry(spec: &CommandSpec, reply: &mut Reply) {
    let (first, last, step) = spec.key_range();
    reply.array(10);
    reply.bulk(spec.name.as_bytes());
    reply.int(i64::from(spec.arity));
    reply.set(spec.shown_flags().count());
    for flag in spec.shown_flags() {
        reply.simple(flag);
    }
    reply.int(i64::from(first));
    reply.int(i64::from(last));
    reply.int(i64::from(step));
    reply.set(spec.acl_categories().count());
    for cat in spec.acl_categories() {
        reply.simple(&format!("@{}", cat.name()));
    }
    reply.set(spec.tips.len());
    for tip in spec.tips {
        reply.bulk(tip.as_bytes());
    }
    reply.set(usize::from(spec.keys.is_some()));
    if let Some(keys) = &spec.keys {
        key_spec(keys, reply);
    }
    match spec.subcommands() {
        [] => reply.set(0),
        subs => {
            reply.array(subs.len());
            for sub in subs {
                entry(sub, reply);
            }
        }
    }
}

/// A Redis 7 key spec: an index to begin at, then a range relative to it.
fn key_spec(keys: &KeySpec, reply: &mut Reply) {
    reply.map(3 + usize::from(keys.notes.is_some()));
    if let Some(notes) = keys.notes {
        reply.bulk(b"notes");
        reply.bulk(notes.as_bytes());
    }
    reply.bulk(b"flags");
    reply.set(keys.shown_flags().count());
    for flag in keys.shown_flags() {
        reply.simple(flag.name());
    }
    reply.bulk(b"begin_search");
    reply.map(2);
    reply.bulk(b"type");
    reply.bulk(b"index");
    reply.bulk(b"spec");
    reply.map(1);
    reply.bulk(b"index");
    reply.int(i64::from(keys.first));
    reply.bulk(b"find_keys");
    reply.map(2);
    reply.bulk(b"type");
    reply.bulk(b"range");
    reply.bulk(b"spec");
    reply.map(3);
    reply.bulk(b"lastkey");
    reply.int(i64::from(if keys.last >= 0 {
        keys.last - keys.first
    } else {
        keys.last
    }));
    reply.bulk(b"keystep");
    reply.int(i64::from(keys.step));
    reply.bulk(b"limit");
    reply.int(0);
}

/// `COMMAND LIST`: every command's and subcommand's name, as the filter allows.
fn list(filter: Option<ListFilter<'_>>, reply: &mut Reply) {
    let pattern = match filter {
        Some(ListFilter::Pattern(p)) => Some(p.to_ascii_lowercase()),
        _ => None,
    };
    let listed = |spec: &CommandSpec| match filter {
        None => true,
        Some(ListFilter::Module) => false,
        Some(ListFilter::AclCat(cat)) => spec
            .acl_categories()
            .any(|c| c.name().as_bytes().eq_ignore_ascii_case(cat)),
        Some(ListFilter::Pattern(_)) => pattern
            .as_deref()
            .is_some_and(|p| glob::matches(p, spec.name.as_bytes())),
    };
    let names: Vec<&str> = COMMANDS
        .iter()
        .flat_map(|spec| std::iter::once(spec).chain(spec.subcommands()))
        .filter(|spec| listed(spec))
        .map(|spec| spec.name)
        .collect();
    reply.array(names.len());
    for name in names {
        reply.bulk(name.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::resp::Proto;

    fn render(sub: CommandSub<'_>, proto: Proto) -> String {
        let mut r = Reply::new(1024);
        r.proto = proto;
        reply(sub, &mut r);
        String::from_utf8(r.buf).unwrap()
    }

    #[test]
    fn count_is_the_table_length() {
        assert_eq!(
            render(CommandSub::Count, Proto::Resp2),
            format!(":{}\r\n", COMMANDS.len())
        );
        let all = render(CommandSub::All, Proto::Resp2);
        assert!(all.starts_with(&format!("*{}\r\n*10\r\n$4\r\nping\r\n", COMMANDS.len())));
        assert_eq!(all, render(CommandSub::Info(&[]), Proto::Resp2));
    }

    #[test]
    fn get_as_redis_shows_it() {
        let get = render(CommandSub::Info(&[b"GET", b"nope"]), Proto::Resp3);
        assert_eq!(
            get,
            "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
             ~3\r\n+@read\r\n+@string\r\n+@fast\r\n~0\r\n\
             ~1\r\n%3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n+access\r\n\
             $12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n%1\r\n$5\r\nindex\r\n:1\r\n\
             $9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n\
             $7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n\
             ~0\r\n_\r\n"
        );
    }

    #[test]
    fn list_and_its_filters() {
        let all = render(CommandSub::List(None), Proto::Resp2);
        assert!(all.contains("$4\r\nmget\r\n") && all.contains("$10\r\nconfig|get\r\n"));
        let subs = COMMANDS
            .iter()
            .map(|c| c.subcommands().len())
            .sum::<usize>();
        assert!(all.starts_with(&format!("*{}\r\n", COMMANDS.len() + subs)));
        assert_eq!(
            render(
                CommandSub::List(Some(ListFilter::Pattern(b"*EXPIRE"))),
                Proto::Resp2
            ),
            "*2\r\n$6\r\nexpire\r\n$7\r\npexpire\r\n"
        );
        let reads = render(
            CommandSub::List(Some(ListFilter::AclCat(b"READ"))),
            Proto::Resp2,
        );
        assert!(reads.contains("$3\r\nget\r\n") && !reads.contains("$3\r\nset\r\n"));
        assert_eq!(
            render(CommandSub::List(Some(ListFilter::Module)), Proto::Resp2),
            "*0\r\n"
        );
    }
}
