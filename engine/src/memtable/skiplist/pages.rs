//! Zeroed memory for the memtable's arena chunks and hash index, mapped straight from the OS
//! and backed by transparent huge pages where the kernel offers them (`madvise` mode).
//!
//! A memtable is read by pointer chases over tens of MiB in random order. With 4 KiB pages
//! nearly every step of a skiplist search misses the TLB as well as the cache, and in a
//! virtual machine each TLB miss walks two page tables. 2 MiB pages cover a 64 MiB memtable
//! with 32 TLB entries. The mapping is lazily resident either way: a page the memtable never
//! writes costs nothing.

use std::alloc::{Layout, handle_alloc_error};
use std::ptr::{self, NonNull};

/// The x86-64 and aarch64 (4 KiB base page) transparent huge page size.
pub(super) const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The base page size of the platforms Shoal runs on; mmap lengths are rounded to it.
const BASE_PAGE_BYTES: usize = 4 << 10;

/// Zeroed bytes mapped from the OS, unmapped on drop.
pub(super) struct Pages {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Pages` owns its mapping exclusively, like a `Box<[u8]>`; what is stored in it and
// how it is shared is up to the owner.
unsafe impl Send for Pages {}
// SAFETY: as above; `&Pages` only hands out the base address.
unsafe impl Sync for Pages {}

impl Pages {
    /// Maps `len` (> 0) zeroed bytes. From one huge page up, the length is rounded up to
    /// whole huge pages and the start aligned to one, so the kernel can back them with huge
    /// pages; smaller mappings keep ordinary pages (a huge page would make a few bytes cost
    /// 2 MiB once touched). Aborts like a failed heap allocation when the OS refuses, as `Vec`
    /// does.
    pub(super) fn zeroed(len: usize) -> Pages {
        assert!(len > 0, "empty page mapping");
        let len = Pages::rounded(len);
        if len < HUGE_PAGE_BYTES {
            return Pages { ptr: map(len), len };
        }
        // Over-map by one huge page so an aligned start exists inside the mapping, then give
        // back the unaligned head and the unused tail.
        let span = len + HUGE_PAGE_BYTES;
        let base = map(span).as_ptr() as usize;
        let start = base.next_multiple_of(HUGE_PAGE_BYTES);
        let head = start - base;
        let tail = span - head - len;
        // SAFETY: both ranges lie inside the mapping just made and outside the part kept;
        // munmap of page-aligned ranges of a valid mapping cannot fail.
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
        #[cfg(target_os = "linux")]
        // SAFETY: advice on a range this mapping owns. Failure (THP disabled or unsupported)
        // leaves ordinary pages, which is correct, only slower.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        Pages {
            ptr: NonNull::new(start as *mut u8).expect("an aligned start inside a mapping"),
            len,
        }
    }

    /// The length [`Pages::zeroed`] maps for `len` bytes.
    pub(super) fn rounded(len: usize) -> usize {
        if len < HUGE_PAGE_BYTES {
            len.next_multiple_of(BASE_PAGE_BYTES)
        } else {
            len.next_multiple_of(HUGE_PAGE_BYTES)
        }
    }

    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes mapped (the length asked for, rounded up to whole pages).
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// A fresh anonymous read-write mapping of `len` bytes (zeroed by the OS).
fn map(len: usize) -> NonNull<u8> {
    // SAFETY: an anonymous private mapping at an address the kernel picks aliases nothing.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    match NonNull::new(raw as *mut u8) {
        Some(p) if raw != libc::MAP_FAILED => p,
        _ => handle_alloc_error(
            Layout::from_size_align(len, BASE_PAGE_BYTES).expect("a page-aligned layout"),
        ),
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping `zeroed` kept, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_mappings_keep_ordinary_pages() {
        let pages = Pages::zeroed(100);
        assert_eq!(pages.len, BASE_PAGE_BYTES);
        // SAFETY: the whole range is mapped read-write.
        let bytes = unsafe { std::slice::from_raw_parts_mut(pages.as_ptr(), pages.len) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes[99] = 1;
    }

    #[test]
    fn mapping_is_zeroed_aligned_and_writable() {
        let pages = Pages::zeroed(HUGE_PAGE_BYTES + 1);
        assert_eq!(pages.len, 2 * HUGE_PAGE_BYTES);
        assert_eq!(pages.as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        // SAFETY: the whole range is mapped read-write.
        let bytes = unsafe { std::slice::from_raw_parts_mut(pages.as_ptr(), pages.len) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes[pages.len - 1] = 7;
        assert_eq!(bytes[pages.len - 1], 7);
    }
}
