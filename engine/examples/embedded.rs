//! A small program embedding shoal-engine through its blocking API: a word counter that keeps
//! its counts durably across runs.
//!
//! ```sh
//! cargo run -p shoal-engine --example embedded -- /tmp/words "the quick brown fox" "the end"
//! cargo run -p shoal-engine --example embedded -- /tmp/words   # prints the counts so far
//! ```

use std::process::ExitCode;

use shoal_engine::{Options, WriteBatch, blocking::Db};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: embedded DIR [TEXT...]");
        return ExitCode::FAILURE;
    };
    match run(&dir, args.collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &str, texts: Vec<String>) -> shoal_engine::Result<()> {
    let db = Db::open(dir, Options::default())?;
    for text in &texts {
        // One atomic batch per text: after a crash either all its words count or none do.
        let mut batch = WriteBatch::new();
        let mut seen = std::collections::BTreeMap::new();
        for word in text.split_whitespace() {
            *seen.entry(word.to_lowercase()).or_insert(0u64) += 1;
        }
        for (word, n) in seen {
            let key = format!("word:{word}");
            let old = match db.get(key.as_bytes())? {
                Some(v) => parse_count(&v),
                None => 0,
            };
            batch.put(key, (old + n).to_string());
        }
        db.write(batch)?;
    }
    for item in db.scan_prefix(b"word:") {
        let (key, value) = item?;
        let word = String::from_utf8_lossy(&key["word:".len()..]).into_owned();
        println!("{word:>20} {}", parse_count(&value));
    }
    db.close()
}

fn parse_count(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
