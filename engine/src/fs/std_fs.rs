//! `std::fs` files: blocking calls made from the future's first poll.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{File, FileSystem, assert_aligned_write};

/// Plain `std::fs` files: blocking calls made from the future's first poll.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
pub struct StdFile {
    file: std::fs::File,
    path: PathBuf,
}

impl FileSystem for StdFs {
    type File = StdFile;

    async fn create(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(StdFile {
            file,
            path: path.to_owned(),
        })
    }

    async fn open(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(StdFile {
            file,
            path: path.to_owned(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    async fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

impl File for StdFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match self.file.read_at(&mut buf[filled..], pos + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    async fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        assert_aligned_write(pos, buf.len());
        self.file.write_all_at(buf, pos)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
