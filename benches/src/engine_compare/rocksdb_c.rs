//! RocksDB through its C API (`rocksdb/c.h`), for the workload db_bench cannot run: it has no
//! zipfian benchmark that mixes deletes in, so the zipfian mix drives the library directly with
//! our own generator ([`super::workload::Ops`], the stream Shoal runs, same seed).
//!
//! Debian's `librocksdb.so.7.8` (the library its db_bench is built on) is loaded at run time with
//! `dlopen`: nothing links against it, no headers or C++ build are needed, and where it is
//! missing the phase is skipped. The handful of functions used are declared here as in 7.8's
//! `c.h`. The options mirror db_bench's (the flags `db_bench.rs` passes, and db_bench 7.8's own
//! defaults where they differ from the library's), so this phase and the phases db_bench runs
//! on the same database see one RocksDB configuration.

use std::ffi::{CStr, CString, c_char, c_int, c_uchar, c_void};
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use super::db_bench::{BLOOM_BITS, CACHE_BYTES, COMPRESSION};

/// What db_bench's `waitforcompaction` polls until every one reads 0.
const BUSY_PROPERTIES: [&CStr; 4] = [
    c"rocksdb.mem-table-flush-pending",
    c"rocksdb.num-running-flushes",
    c"rocksdb.compaction-pending",
    c"rocksdb.num-running-compactions",
];

/// Between polls of [`BUSY_PROPERTIES`]: 7.8's C API has no call that waits for compaction
/// (`rocksdb_wait_for_compact` came in 8.x), so the driver polls as db_bench does (every 10 s
/// there), often enough to add little idle time to a phase.
const BUSY_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Debian's soname for RocksDB 7.8 (package librocksdb7.8, pulled in by rocksdb-tools).
pub const LIBRARY: &str = "librocksdb.so.7.8";

/// db_bench 7.8's defaults for the flags `db_bench.rs` leaves unset. Most equal the library's
/// own; they are set anyway so that the configuration does not hang on the two agreeing.
const WRITE_BUFFER_BYTES: usize = 64 << 20;
const MAX_WRITE_BUFFERS: c_int = 2;
const TARGET_FILE_BYTES: u64 = 64 << 20;
const MAX_BYTES_FOR_LEVEL_BASE: u64 = 256 << 20;
const LEVEL0_COMPACTION_TRIGGER: c_int = 4;
const MAX_BACKGROUND_JOBS: c_int = 2;
/// -1: derived from `max_background_jobs`, as db_bench leaves them.
const MAX_BACKGROUND_COMPACTIONS: c_int = -1;
const MAX_BACKGROUND_FLUSHES: c_int = -1;
/// The rest of db_bench 7.8's configuration, where it differs from the library's defaults:
/// found by diffing the OPTIONS file db_bench writes with the one this driver's open writes
/// (the test `options_mirror_db_bench` keeps them equal). An options string rather than
/// setters, since 7.8's C API has none for some (`delayed_write_rate`, the write rate while
/// compaction lags, matters most: db_bench halves the library's). Table options set here
/// keep the cache and filter set above.
const DB_BENCH_DEFAULTS: &str = "delayed_write_rate=8388608;\
    enable_pipelined_write=true;\
    table_cache_numshardbits=4;\
    hard_pending_compaction_bytes_limit=137438953472;\
    dump_malloc_stats=true;\
    create_missing_column_families=true;\
    compaction_options_fifo={allow_compaction=true;max_table_files_size=0};\
    block_based_table_factory={pin_top_level_index_and_filter=false;\
    index_shortening=kShortenSeparatorsAndSuccessor}";

/// `c.h`'s compression enum (`rocksdb_*_compression`), by db_bench's `--compression_type` name.
fn compression_code(name: &str) -> Option<c_int> {
    Some(match name {
        "none" => 0,
        "snappy" => 1,
        "zlib" => 2,
        "bzip2" => 3,
        "lz4" => 4,
        "lz4hc" => 5,
        "xpress" => 6,
        "zstd" => 7,
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RocksError {
    /// The library is not installed or cannot be loaded: RocksDB's mix is skipped.
    #[error("cannot load {library}: {reason}")]
    Unavailable { library: String, reason: String },
    #[error("{library} has no function {symbol}: not RocksDB 7.8's C API")]
    MissingSymbol {
        library: String,
        symbol: &'static str,
    },
    /// RocksDB failed a call and said why through its `errptr`.
    #[error("rocksdb {op}: {message}")]
    Call { op: &'static str, message: String },
    /// A constructor returned NULL (out of memory).
    #[error("rocksdb {0} returned NULL")]
    Null(&'static str),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    #[error("compression {0:?} has no code in RocksDB's C API")]
    UnknownCompression(&'static str),
}

/// The C API's opaque handles.
macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
        }
    )*};
}
opaque!(
    RawDb,
    RawOptions,
    RawTableOptions,
    RawCache,
    RawFilterPolicy,
    RawReadOptions,
    RawWriteOptions,
    RawPinnableSlice
);

/// Declares the functions used (signatures as in 7.8's `c.h`) and resolves them by name.
macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The library's functions, resolved once; the library stays loaded for the life of the
        /// process (its default environment keeps background threads after a database closes,
        /// so it is never safe to unload).
        pub struct Api {
            $($name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            /// Looks up every function; `Err` names the first one missing.
            ///
            /// # Safety
            /// `handle` is a live `dlopen` handle of a library whose functions of these names
            /// have these signatures.
            unsafe fn resolve(handle: *mut c_void) -> Result<Api, &'static str> {
                Ok(Api {$(
                    $name: {
                        let name = concat!(stringify!($name), "\0");
                        // SAFETY: `handle` is live (the caller's contract) and `name` is
                        // NUL-terminated.
                        let sym = unsafe { libc::dlsym(handle, name.as_ptr().cast()) };
                        if sym.is_null() {
                            return Err(stringify!($name));
                        }
                        // SAFETY: the symbol is this function of `c.h`, with this signature
                        // (the caller's contract); function and data pointers have one size.
                        unsafe {
                            std::mem::transmute::<
                                *mut c_void,
                                unsafe extern "C" fn($($arg),*) $(-> $ret)?,
                            >(sym)
                        }
                    },
                )*})
            }
        }
    };
}

api! {
    rocksdb_options_create: fn() -> *mut RawOptions;
    rocksdb_options_destroy: fn(*mut RawOptions);
    rocksdb_options_set_create_if_missing: fn(*mut RawOptions, c_uchar);
    rocksdb_options_set_compression: fn(*mut RawOptions, c_int);
    rocksdb_options_set_write_buffer_size: fn(*mut RawOptions, usize);
    rocksdb_options_set_max_write_buffer_number: fn(*mut RawOptions, c_int);
    rocksdb_options_set_target_file_size_base: fn(*mut RawOptions, u64);
    rocksdb_options_set_max_bytes_for_level_base: fn(*mut RawOptions, u64);
    rocksdb_options_set_level0_file_num_compaction_trigger: fn(*mut RawOptions, c_int);
    rocksdb_options_set_max_background_jobs: fn(*mut RawOptions, c_int);
    rocksdb_options_set_max_background_compactions: fn(*mut RawOptions, c_int);
    rocksdb_options_set_max_background_flushes: fn(*mut RawOptions, c_int);
    rocksdb_options_set_block_based_table_factory: fn(*mut RawOptions, *mut RawTableOptions);
    rocksdb_get_options_from_string:
        fn(*const RawOptions, *const c_char, *mut RawOptions, *mut *mut c_char);
    rocksdb_block_based_options_create: fn() -> *mut RawTableOptions;
    rocksdb_block_based_options_destroy: fn(*mut RawTableOptions);
    rocksdb_block_based_options_set_filter_policy: fn(*mut RawTableOptions, *mut RawFilterPolicy);
    rocksdb_block_based_options_set_block_cache: fn(*mut RawTableOptions, *mut RawCache);
    rocksdb_filterpolicy_create_bloom: fn(f64) -> *mut RawFilterPolicy;
    rocksdb_cache_create_lru: fn(usize) -> *mut RawCache;
    rocksdb_cache_destroy: fn(*mut RawCache);
    rocksdb_writeoptions_create: fn() -> *mut RawWriteOptions;
    rocksdb_writeoptions_destroy: fn(*mut RawWriteOptions);
    rocksdb_writeoptions_set_sync: fn(*mut RawWriteOptions, c_uchar);
    rocksdb_readoptions_create: fn() -> *mut RawReadOptions;
    rocksdb_readoptions_destroy: fn(*mut RawReadOptions);
    rocksdb_open: fn(*const RawOptions, *const c_char, *mut *mut c_char) -> *mut RawDb;
    rocksdb_close: fn(*mut RawDb);
    rocksdb_put: fn(
        *mut RawDb,
        *const RawWriteOptions,
        *const c_char,
        usize,
        *const c_char,
        usize,
        *mut *mut c_char
    );
    rocksdb_delete: fn(*mut RawDb, *const RawWriteOptions, *const c_char, usize, *mut *mut c_char);
    rocksdb_get_pinned: fn(
        *mut RawDb,
        *const RawReadOptions,
        *const c_char,
        usize,
        *mut *mut c_char
    ) -> *mut RawPinnableSlice;
    rocksdb_pinnableslice_value: fn(*const RawPinnableSlice, *mut usize) -> *const c_char;
    rocksdb_pinnableslice_destroy: fn(*mut RawPinnableSlice);
    rocksdb_free: fn(*mut c_void);
    rocksdb_property_int: fn(*mut RawDb, *const c_char, *mut u64) -> c_int;
}

// SAFETY: `Api` holds only addresses of functions of a library that is never unloaded.
unsafe impl Send for Api {}
// SAFETY: as above; the functions themselves are RocksDB's thread-safe C API.
unsafe impl Sync for Api {}

fn c_string(s: &[u8]) -> Result<CString, RocksError> {
    CString::new(s).map_err(|_| RocksError::Nul(String::from_utf8_lossy(s).into_owned()))
}

/// The message of a non-NULL `errptr`.
///
/// # Safety
/// `err` points to a NUL-terminated string.
unsafe fn error_message(err: *const c_char) -> String {
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned()
}

impl Api {
    /// Loads `library` (a soname looked up as `dlopen` does, or a path) and resolves the
    /// functions; the `Api` lives as long as the process, as the library does.
    pub fn load(library: &Path) -> Result<&'static Api, RocksError> {
        let name = library.display().to_string();
        let c_name = c_string(library.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated name. RTLD_NOW binds everything now, so a library that
        // cannot be used fails here rather than at some later call.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns NULL or a NUL-terminated message of this thread's last
            // dl* failure, which was the dlopen above.
            let reason = unsafe {
                let e = libc::dlerror();
                if e.is_null() {
                    "dlopen failed".to_owned()
                } else {
                    error_message(e)
                }
            };
            return Err(RocksError::Unavailable {
                library: name,
                reason,
            });
        }
        // SAFETY: a live handle; the declarations above are 7.8's `c.h` ones for these names.
        match unsafe { Api::resolve(handle) } {
            Ok(api) => Ok(Box::leak(Box::new(api))),
            Err(symbol) => Err(RocksError::MissingSymbol {
                library: name,
                symbol,
            }),
        }
    }

    /// Turns the `errptr` a call left into its result, freeing RocksDB's message.
    fn check(&self, op: &'static str, err: *mut c_char) -> Result<(), RocksError> {
        if err.is_null() {
            return Ok(());
        }
        // SAFETY: a non-NULL errptr is a NUL-terminated string RocksDB malloc()ed (c.h,
        // convention 3), ours to free once read, and read only here.
        let message = unsafe {
            let message = error_message(err);
            (self.rocksdb_free)(err.cast());
            message
        };
        Err(RocksError::Call { op, message })
    }

    /// The open options: db_bench's configuration ([module docs](self)).
    fn options(&self, options: &DbOptions) -> Result<Owned<RawOptions>, RocksError> {
        let compression =
            compression_code(COMPRESSION).ok_or(RocksError::UnknownCompression(COMPRESSION))?;
        let defaults = c_string(DB_BENCH_DEFAULTS.as_bytes())?;
        // SAFETY: every pointer passed is a live object created here, of the type the function
        // takes. The table options keep their own references to the cache and take ownership
        // of the filter policy; the options copy the table options into their table factory.
        unsafe {
            let table = Owned::new(
                (self.rocksdb_block_based_options_create)(),
                self.rocksdb_block_based_options_destroy,
                "block_based_options_create",
            )?;
            let cache = Owned::new(
                (self.rocksdb_cache_create_lru)(CACHE_BYTES as usize),
                self.rocksdb_cache_destroy,
                "cache_create_lru",
            )?;
            (self.rocksdb_block_based_options_set_block_cache)(table.ptr(), cache.ptr());
            let bloom = (self.rocksdb_filterpolicy_create_bloom)(f64::from(BLOOM_BITS));
            if bloom.is_null() {
                return Err(RocksError::Null("filterpolicy_create_bloom"));
            }
            (self.rocksdb_block_based_options_set_filter_policy)(table.ptr(), bloom);

            let base = Owned::new(
                (self.rocksdb_options_create)(),
                self.rocksdb_options_destroy,
                "options_create",
            )?;
            let o = base.ptr();
            (self.rocksdb_options_set_create_if_missing)(
                o,
                c_uchar::from(options.create_if_missing),
            );
            (self.rocksdb_options_set_compression)(o, compression);
            (self.rocksdb_options_set_write_buffer_size)(o, WRITE_BUFFER_BYTES);
            (self.rocksdb_options_set_max_write_buffer_number)(o, MAX_WRITE_BUFFERS);
            (self.rocksdb_options_set_target_file_size_base)(o, TARGET_FILE_BYTES);
            (self.rocksdb_options_set_max_bytes_for_level_base)(o, MAX_BYTES_FOR_LEVEL_BASE);
            (self.rocksdb_options_set_level0_file_num_compaction_trigger)(
                o,
                LEVEL0_COMPACTION_TRIGGER,
            );
            (self.rocksdb_options_set_max_background_jobs)(o, MAX_BACKGROUND_JOBS);
            (self.rocksdb_options_set_max_background_compactions)(o, MAX_BACKGROUND_COMPACTIONS);
            (self.rocksdb_options_set_max_background_flushes)(o, MAX_BACKGROUND_FLUSHES);
            (self.rocksdb_options_set_block_based_table_factory)(o, table.ptr());

            let mirrored = Owned::new(
                (self.rocksdb_options_create)(),
                self.rocksdb_options_destroy,
                "options_create",
            )?;
            let mut err = ptr::null_mut();
            (self.rocksdb_get_options_from_string)(o, defaults.as_ptr(), mirrored.ptr(), &mut err);
            self.check("get_options_from_string", err)?;
            Ok(mirrored)
        }
    }
}

/// An object of the C API, destroyed with its `*_destroy` function when dropped.
struct Owned<T> {
    ptr: NonNull<T>,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    /// # Safety
    /// `ptr` is NULL or a live object that `destroy` frees, owned by no one else.
    unsafe fn new(
        ptr: *mut T,
        destroy: unsafe extern "C" fn(*mut T),
        what: &'static str,
    ) -> Result<Owned<T>, RocksError> {
        let ptr = NonNull::new(ptr).ok_or(RocksError::Null(what))?;
        Ok(Owned { ptr, destroy })
    }

    fn ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: the object is live and ours alone (`new`'s contract), destroyed only here.
        unsafe { (self.destroy)(self.ptr.as_ptr()) }
    }
}

/// How the database is opened beyond db_bench's fixed configuration. The default is the mix's:
/// the existing database (db_bench's `--use_existing_db=1`), writes unsynced (`--sync=0`)
/// with the WAL on.
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    /// Create the database if it does not exist.
    pub create_if_missing: bool,
    /// fdatasync the WAL before each write returns.
    pub sync: bool,
}

/// An open database.
pub struct Db {
    api: &'static Api,
    db: NonNull<RawDb>,
    write: Owned<RawWriteOptions>,
    read: Owned<RawReadOptions>,
}

// SAFETY: RocksDB's DB is safe to use from any thread, and concurrently; the read and write
// options are only read after `open`.
unsafe impl Send for Db {}
// SAFETY: as above.
unsafe impl Sync for Db {}

impl Db {
    pub fn open(api: &'static Api, dir: &Path, options: &DbOptions) -> Result<Db, RocksError> {
        let path = c_string(dir.as_os_str().as_bytes())?;
        let open_options = api.options(options)?;
        // SAFETY: each constructor returns a new object that its destroy function frees; the
        // setter gets the live object just created.
        let (write, read) = unsafe {
            let write = Owned::new(
                (api.rocksdb_writeoptions_create)(),
                api.rocksdb_writeoptions_destroy,
                "writeoptions_create",
            )?;
            (api.rocksdb_writeoptions_set_sync)(write.ptr(), c_uchar::from(options.sync));
            let read = Owned::new(
                (api.rocksdb_readoptions_create)(),
                api.rocksdb_readoptions_destroy,
                "readoptions_create",
            )?;
            (write, read)
        };
        let mut err = ptr::null_mut();
        // SAFETY: live options and a NUL-terminated path; the database copies the options.
        let db = unsafe { (api.rocksdb_open)(open_options.ptr(), path.as_ptr(), &mut err) };
        api.check("open", err)?;
        let db = NonNull::new(db).ok_or(RocksError::Null("open"))?;
        Ok(Db {
            api,
            db,
            write,
            read,
        })
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), RocksError> {
        let mut err = ptr::null_mut();
        // SAFETY: an open database, live write options, and buffers valid for their lengths.
        unsafe {
            (self.api.rocksdb_put)(
                self.db.as_ptr(),
                self.write.ptr(),
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                &mut err,
            );
        }
        self.api.check("put", err)
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), RocksError> {
        let mut err = ptr::null_mut();
        // SAFETY: an open database, live write options, and a buffer valid for its length.
        unsafe {
            (self.api.rocksdb_delete)(
                self.db.as_ptr(),
                self.write.ptr(),
                key.as_ptr().cast(),
                key.len(),
                &mut err,
            );
        }
        self.api.check("delete", err)
    }

    /// Returns once no flush or compaction is running or needed, as db_bench's
    /// `waitforcompaction`.
    pub fn wait_for_compaction(&self) -> Result<(), RocksError> {
        while self.busy()? {
            std::thread::sleep(BUSY_POLL_INTERVAL);
        }
        Ok(())
    }

    fn busy(&self) -> Result<bool, RocksError> {
        for property in BUSY_PROPERTIES {
            if self.property_int(property)? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// An integer property of the database, such as `rocksdb.num-files-at-level0`.
    pub fn property_int(&self, name: &CStr) -> Result<u64, RocksError> {
        let mut value = 0u64;
        // SAFETY: an open database, a NUL-terminated name, and a live out-parameter.
        let found =
            unsafe { (self.api.rocksdb_property_int)(self.db.as_ptr(), name.as_ptr(), &mut value) };
        if found != 0 {
            return Err(RocksError::Call {
                op: "property_int",
                message: format!("no integer property {name:?}"),
            });
        }
        Ok(value)
    }

    /// The key's value, pinned where RocksDB holds it (no copy, as db_bench's reads).
    pub fn get(&self, key: &[u8]) -> Result<Option<Value<'_>>, RocksError> {
        let mut err = ptr::null_mut();
        // SAFETY: an open database, live read options, and a buffer valid for its length.
        let slice = unsafe {
            (self.api.rocksdb_get_pinned)(
                self.db.as_ptr(),
                self.read.ptr(),
                key.as_ptr().cast(),
                key.len(),
                &mut err,
            )
        };
        self.api.check("get", err)?;
        Ok(NonNull::new(slice).map(|slice| Value {
            api: self.api,
            slice,
            _db: PhantomData,
        }))
    }
}

impl Drop for Db {
    /// Closes the database, waiting for its running flush and compactions, as db_bench does on
    /// exit; the write and read options are destroyed after it.
    fn drop(&mut self) {
        // SAFETY: the database is open, and closed only here.
        unsafe { (self.api.rocksdb_close)(self.db.as_ptr()) }
    }
}

/// A value read by [`Db::get`], valid while the database is open.
pub struct Value<'a> {
    api: &'static Api,
    slice: NonNull<RawPinnableSlice>,
    _db: PhantomData<&'a Db>,
}

impl Deref for Value<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let mut len = 0;
        // SAFETY: a live pinnable slice, which owns the bytes it returns until destroyed.
        unsafe {
            let data = (self.api.rocksdb_pinnableslice_value)(self.slice.as_ptr(), &mut len);
            if data.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(data.cast(), len)
        }
    }
}

impl Drop for Value<'_> {
    fn drop(&mut self) {
        // SAFETY: a live pinnable slice, destroyed only here.
        unsafe { (self.api.rocksdb_pinnableslice_destroy)(self.slice.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::super::db_bench;
    use super::super::workload::{Phase, PhaseSpec};
    use super::*;

    #[test]
    fn db_bench_compression_has_a_code() {
        assert_eq!(compression_code(COMPRESSION), Some(7));
        assert_eq!(compression_code("snappy"), Some(1));
        assert_eq!(compression_code("brotli"), None);
    }

    #[test]
    fn a_missing_library_is_unavailable_and_says_which() {
        let missing = "librocksdb-not-installed.so.0";
        let e = Api::load(Path::new(missing)).err();
        assert!(
            matches!(&e, Some(RocksError::Unavailable { library, .. }) if library == missing),
            "{e:?}"
        );
        assert!(
            e.unwrap()
                .to_string()
                .starts_with("cannot load librocksdb-not-installed")
        );
        let e = Api::load(Path::new("nul\0byte")).err();
        assert!(matches!(e, Some(RocksError::Nul(_))), "{e:?}");
    }

    /// The newest OPTIONS file RocksDB wrote in `dir`, as (section, name) -> value.
    fn latest_options(dir: &Path) -> BTreeMap<(String, String), String> {
        let newest = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|n| Some((n.strip_prefix("OPTIONS-")?.parse::<u64>().ok()?, n)))
            .max()
            .unwrap()
            .1;
        let mut section = String::new();
        let mut options = BTreeMap::new();
        for line in std::fs::read_to_string(dir.join(newest)).unwrap().lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_owned();
            } else if let Some((name, value)) = line.split_once('=') {
                options.insert((section.clone(), name.to_owned()), value.to_owned());
            }
        }
        options
    }

    /// The database db_bench creates, reopened by this driver, is configured exactly as
    /// db_bench configured it, but for what cannot or should not match.
    #[test]
    fn options_mirror_db_bench() {
        let api = match Api::load(Path::new(LIBRARY)) {
            Ok(api) => api,
            Err(e) => {
                eprintln!("NOTICE: {e}; not comparing with db_bench's options");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let spec = PhaseSpec {
            phase: Phase::Fill,
            dir: dir.path().join("db"),
            keys: 2000,
            ops: 2000,
            writers: 1,
            seed: 1,
        };
        let fill = db_bench::command(Path::new("db_bench"), &spec)
            .unwrap()
            .output();
        let fill = match fill {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("NOTICE: db_bench is not installed; not comparing with its options");
                return;
            }
            r => r.unwrap(),
        };
        assert!(
            fill.status.success(),
            "{}",
            String::from_utf8_lossy(&fill.stderr)
        );
        let theirs = latest_options(&spec.dir);
        drop(Db::open(api, &spec.dir, &DbOptions::default()).unwrap());
        let ours = latest_options(&spec.dir);
        assert!(ours.len() > 100, "{ours:?}");
        let differ: BTreeSet<&str> = theirs
            .keys()
            .chain(ours.keys())
            .filter(|k| theirs.get(k) != ours.get(k))
            .map(|(_, name)| name.as_str())
            .collect();
        // create_if_missing: db_bench's fill creates the database; the mix opens it, as
        // db_bench's later phases do. listeners: db_bench registers its own error handler.
        // filter_policy: the C API wraps the same bloom policy, and serializes it by name
        // alone ("bloomfilter" for "bloomfilter:10:false").
        assert_eq!(
            differ,
            BTreeSet::from(["create_if_missing", "filter_policy", "listeners"]),
            "db_bench's {theirs:?}\nours {ours:?}"
        );
    }

    #[test]
    fn error_messages_are_read_whole() {
        let message = CString::new("IO error: No such file or directory: /x/CURRENT").unwrap();
        // SAFETY: a NUL-terminated string.
        let read = unsafe { error_message(message.as_ptr()) };
        assert_eq!(read, "IO error: No such file or directory: /x/CURRENT");
    }
}
