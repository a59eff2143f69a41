//! The blocking API as an embedder uses it: open, write, read, scan, close, reopen.

use shoal_engine::blocking::Db;
use shoal_engine::{Options, WriteBatch};

#[test]
fn writes_survive_a_reopen() -> shoal_engine::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| shoal_engine::Error::io("tempdir", e))?;
    let path = dir.path().join("db");
    let db = Db::open(&path, Options::default())?;
    db.put(b"apple", b"red")?;
    let mut batch = WriteBatch::new();
    batch.put(b"banana".to_vec(), b"yellow".to_vec());
    batch.put(b"cherry".to_vec(), b"dark red".to_vec());
    batch.delete(b"apple".to_vec());
    db.write(batch)?;
    assert_eq!(db.get(b"banana")?.as_deref(), Some(&b"yellow"[..]));
    assert_eq!(db.get(b"apple")?, None);
    db.flush()?;
    db.close()?;

    let db = Db::open(&path, Options::default())?;
    let keys: Vec<Vec<u8>> = db
        .scan(..)
        .map(|item| item.map(|(key, _)| key))
        .collect::<shoal_engine::Result<_>>()?;
    assert_eq!(keys, [b"banana".to_vec(), b"cherry".to_vec()]);
    db.close()
}
