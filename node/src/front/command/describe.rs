//! `COMMAND` and its subcommands: the command table as clients read it.

use super::CommandSub;
use super::table::{COMMANDS, CommandSpec, lookup};
use crate::front::resp::Reply;

/// The reply to `COMMAND` or one of its subcommands.
pub fn reply(sub: CommandSub<'_>, reply: &mut Reply) {
    match sub {
        CommandSub::All => {
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
    }
}

/// One entry: name, arity, flags, first key, last key, key step.
fn entry(spec: &CommandSpec, reply: &mut Reply) {
    let (first, last, step) = spec.key_range();
    reply.array(6);
    reply.bulk(spec.name.as_bytes());
    reply.int(i64::from(spec.arity));
    reply.array(spec.shown_flags().count());
    for flag in spec.shown_flags() {
        reply.simple(flag);
    }
    reply.int(i64::from(first));
    reply.int(i64::from(last));
    reply.int(i64::from(step));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_the_table_length() {
        let mut r = Reply::new(64);
        reply(CommandSub::Count, &mut r);
        assert_eq!(r.buf, format!(":{}\r\n", COMMANDS.len()).as_bytes());
    }
}
