//! Every conversion of a raw pointer coming from C into a Rust reference, slice, value, path
//! or owned box is in this file, next to the checks that make it sound (NULL, alignment, size,
//! overlap). The other ffi modules call these functions and state, at each call, which part of
//! the contract the caller provides. (The one other `unsafe` outside this file is the handle's
//! lock-guarded interior in `handle.rs`, which is not a pointer from C.)

use std::ffi::c_char;

use crate::error::Error;

use super::handle::flatopt_optimizer;

/// Checks a (pointer, length) pair for a slice of f32: non-NULL unless empty, 4-byte aligned,
/// and a length whose byte size fits in `isize`.
pub(crate) fn check_buf(name: &'static str, ptr: *const f32, len: usize) -> Result<(), Error> {
    check_elems(name, ptr, len)
}

/// Checks a (pointer, length) pair for a slice of `T` (f32, or the `u16` bit patterns of
/// 16-bit floats): non-NULL unless empty, aligned to `T`, and a length whose byte size fits
/// in `isize`.
pub(crate) fn check_elems<T>(name: &'static str, ptr: *const T, len: usize) -> Result<(), Error> {
    if len > isize::MAX as usize / std::mem::size_of::<T>() {
        return Err(Error::invalid(
            name,
            format!("length {len}"),
            "length is too large",
        ));
    }
    if ptr.is_null() {
        if len == 0 {
            return Ok(());
        }
        return Err(Error::NullPointer { name });
    }
    let align = std::mem::align_of::<T>();
    if !(ptr as usize).is_multiple_of(align) {
        return Err(Error::invalid(
            name,
            format!("{ptr:p}"),
            if align == 4 {
                "must be aligned to 4 bytes (a float array)"
            } else {
                "must be aligned to 2 bytes (an array of 16-bit floats)"
            },
        ));
    }
    Ok(())
}

/// A slice over `len` elements at `ptr` (empty when `len` is 0, whatever `ptr` is).
///
/// # Safety
/// `ptr` is non-NULL and aligned for `T` unless `len` is 0 (for floats: `check_buf` passed),
/// `len * size_of::<T>()` fits in `isize`, and the caller guarantees `len` readable elements
/// at `ptr`, not written by anyone else for the lifetime `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: non-null, aligned and of a size that fits isize (this function's contract,
        // established by the checks before each call); validity and the absence of concurrent
        // writes are the C caller's contract, documented on each C function.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// A mutable slice over `len` elements at `ptr` (empty when `len` is 0).
///
/// # Safety
/// As [`slice`], writable, and not accessed through any other pointer during `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: as in `slice`; exclusivity is the caller's contract, and overlap between the
        // buffers of one call is rejected before this is reached (see `check_disjoint`).
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// Elements `[at, at + n)` of a buffer that starts at `ptr` (NULL: an empty slice, for state
/// buffers the rule does not use).
///
/// # Safety
/// `ptr` is NULL or a buffer checked by `check_buf` holding at least `at + n` elements, valid
/// and not accessed through any other pointer during `'a`.
pub(crate) unsafe fn sub_slice_mut<'a>(ptr: *mut f32, at: usize, n: usize) -> &'a mut [f32] {
    if ptr.is_null() {
        return &mut [];
    }
    // SAFETY: `at + n` is within the buffer (caller contract), so the offset stays inside the
    // same allocation and the slice over `n` elements from there is valid as in `slice_mut`.
    unsafe { slice_mut(ptr.add(at), n) }
}

/// Checks that an array of doubles the caller passes is 8-byte aligned (NULL passes: the
/// callers check NULL against the count first).
pub(crate) fn check_f64_aligned(name: &'static str, ptr: *const f64) -> Result<(), Error> {
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<f64>()) {
        return Err(Error::invalid(
            name,
            format!("{ptr:p}"),
            "must be aligned to 8 bytes",
        ));
    }
    Ok(())
}

/// Copies a list of `n` elements the caller owns (NULL allowed only when `n` is 0; at most
/// `max` elements).
///
/// # Safety
/// `p` is NULL or points to `n` readable, aligned elements.
pub(crate) unsafe fn copy_list<T: Copy>(
    name: &'static str,
    p: *const T,
    n: usize,
    max: usize,
) -> Result<Vec<T>, Error> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Error::NullPointer { name });
    }
    if n > max {
        return Err(Error::invalid(
            name,
            format!("count {n}"),
            "at most 2^24 entries",
        ));
    }
    // SAFETY: non-null, the count is bounded (its byte size fits isize), and `n` readable
    // elements are the caller's contract.
    Ok(unsafe { slice(p, n) }.to_vec())
}

/// The handle behind a pointer from C.
///
/// # Safety
/// `opt` is NULL (rejected) or a live handle from `flatopt_optimizer_new`.
pub(crate) unsafe fn handle_of<'a>(
    opt: *const flatopt_optimizer,
) -> Result<&'a flatopt_optimizer, Error> {
    // SAFETY: NULL is rejected; otherwise a live handle (caller contract). Only a shared
    // reference is formed; concurrent callers may form the same one (the handle's lock decides
    // who may reach its contents).
    unsafe { opt.as_ref() }.ok_or(Error::NullPointer { name: "opt" })
}

/// Takes back and drops a handle made by `Box::into_raw` in `flatopt_optimizer_new`.
///
/// # Safety
/// `opt` comes from `flatopt_optimizer_new`, is freed only once, and no call is using it.
pub(crate) unsafe fn free_handle(opt: *mut flatopt_optimizer) {
    // SAFETY: a box leaked by `flatopt_optimizer_new`, not yet freed, unused (caller contract).
    drop(unsafe { Box::from_raw(opt) });
}

/// A NUL-terminated path from C, refused when NULL or empty.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn path_from_c<'a>(path: *const c_char) -> Result<&'a std::path::Path, Error> {
    use std::os::unix::ffi::OsStrExt;
    if path.is_null() {
        return Err(Error::NullPointer { name: "path" });
    }
    // SAFETY: non-null and NUL-terminated (caller contract).
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid("path", "\"\"", "must not be empty"));
    }
    Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// A memory interval of one buffer: (start address, end address, written, name, index).
pub(crate) type Span = (usize, usize, bool, &'static str, usize);

/// Rejects any overlap between a written buffer and any other buffer. Sorts `spans` in place
/// (no allocation) and sweeps once: O(n log n).
pub(crate) fn check_disjoint(spans: &mut [Span]) -> Result<(), Error> {
    spans.sort_unstable_by_key(|s| s.0);
    let mut any: Option<Span> = None; // the earlier span reaching furthest
    let mut written: Option<Span> = None; // the earlier written span reaching furthest
    for &cur in spans.iter().filter(|s| s.1 > s.0) {
        let hit = if cur.2 { any } else { written };
        if let Some(prev) = hit.filter(|p| p.1 > cur.0) {
            return Err(Error::Overlap {
                what: format!("{} {} and {} {} share memory", prev.3, prev.4, cur.3, cur.4),
            });
        }
        if any.is_none_or(|a| cur.1 > a.1) {
            any = Some(cur);
        }
        if cur.2 && written.is_none_or(|w| cur.1 > w.1) {
            written = Some(cur);
        }
    }
    Ok(())
}

/// The memory interval of a buffer (empty for NULL, which `check_disjoint` then ignores).
pub(crate) fn span<T>(
    ptr: *const T,
    len: usize,
    written: bool,
    name: &'static str,
    index: usize,
) -> Span {
    let start = ptr as usize;
    let end = if ptr.is_null() {
        start
    } else {
        start + len * std::mem::size_of::<T>()
    };
    (start, end, written, name, index)
}

/// The sizes a versioned struct accepts (see "Versioned structs" in `include/flatopt.h`): the
/// frozen size of every published version, oldest first; the last is this library's
/// `size_of::<T>()`.
pub(crate) struct Versions {
    /// The struct's C name, for messages.
    pub(crate) name: &'static str,
    /// `FLATOPT_<NAME>_SIZE_V1`, `_V2`, ...
    pub(crate) sizes: &'static [u32],
}

/// The largest `struct_size` a caller may give: a bigger value is not a size but an
/// uninitialised field, and reading that far could fault.
pub(crate) const MAX_STRUCT_SIZE: usize = 4096;

impl Versions {
    /// The newest published size (this library's struct).
    pub(crate) const fn newest(&self) -> usize {
        self.sizes[self.sizes.len() - 1] as usize
    }

    /// Checks a caller's `struct_size` for a struct of this library's size `ours`: one of the
    /// published sizes, or larger than `ours` (a newer caller) up to [`MAX_STRUCT_SIZE`].
    pub(crate) fn check(&self, field: &'static str, size: usize, ours: usize) -> Result<(), Error> {
        debug_assert_eq!(self.newest(), ours);
        let known = self.sizes.iter().any(|&s| s as usize == size);
        if known || (size > ours && size <= MAX_STRUCT_SIZE) {
            return Ok(());
        }
        let expected = if size < self.sizes[0] as usize {
            "smaller than the first version of the struct (its _SIZE_V1 constant): initialise it \
             with its _init function or _INIT macro"
        } else if size > MAX_STRUCT_SIZE {
            "larger than any struct (at most 4096): initialise it with its _init function or \
             _INIT macro"
        } else {
            "not the size of any version of the struct (see its _SIZE_V<n> constants): \
             initialise it with its _init function or _INIT macro"
        };
        Err(Error::invalid(
            field,
            format!("{size} ({})", self.name),
            expected,
        ))
    }
}

/// Reads a versioned struct whose first field is a u32 `struct_size`, as libgit2 and the Linux
/// kernel's extensible structs do: an older caller's smaller struct (a published size) is
/// copied over `defaults`, so the fields it lacks keep their defaults; a newer caller's larger
/// struct is accepted when every byte this library does not know is zero (every field added
/// later means "as before" when zero), else refused with `FLATOPT_ERR_UNSUPPORTED` naming the
/// first non-zero byte.
///
/// # Safety
/// `ptr` is NULL or points to at least `struct_size` readable bytes (at least its first 4).
pub(crate) unsafe fn read_versioned<T: Copy>(
    name: &'static str,
    field: &'static str,
    ptr: *const T,
    defaults: T,
    versions: &Versions,
) -> Result<T, Error> {
    if ptr.is_null() {
        return Err(Error::NullPointer { name });
    }
    // SAFETY: every versioned struct starts with a u32 `struct_size`; `ptr` is non-null and
    // points to such a struct (caller contract). `read_unaligned` needs no alignment.
    let size = unsafe { std::ptr::read_unaligned(ptr.cast::<u32>()) } as usize;
    let ours = std::mem::size_of::<T>();
    versions.check(field, size, ours)?;
    if size > ours {
        // SAFETY: `size` readable bytes at `ptr` (caller contract) and `size <= MAX_STRUCT_SIZE`
        // (checked), so bytes `[ours, size)` are readable and their count fits isize; they
        // hold the newer caller's fields (no padding of ours), read as plain bytes.
        let tail: &[u8] = unsafe { slice(ptr.cast::<u8>().add(ours), size - ours) };
        if let Some(at) = tail.iter().position(|&b| b != 0) {
            return Err(Error::Unsupported(format!(
                "{name}: byte {} of the caller's {size}-byte {} is not zero, but this library \
                 (version {}) knows only the first {ours} bytes: a field of a newer flatopt.h \
                 is set; use a library at least as new as the header",
                ours + at,
                versions.name,
                env!("CARGO_PKG_VERSION"),
            )));
        }
    }
    let mut out = defaults;
    let n = size.min(ours);
    // SAFETY: the source holds `size >= n` readable bytes, the destination is a local `T` of
    // `ours >= n` bytes, they do not overlap, `n` ends on a field boundary (a published size or
    // the whole struct), and every bit pattern is valid for these plain C structs (integers,
    // floats and raw pointers only). The copy is untyped, so padding needs no initialisation.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), n)
    };
    Ok(out)
}

/// The `_init` functions: writes `defaults` into the caller's struct of `size` bytes, never
/// more: the first `min(size, size_of::<T>())` bytes from `defaults`, zeros after that (the
/// fields of a newer header this library does not know: zero means "as before"), and
/// `struct_size = size`. Nothing is written when `size` is refused.
///
/// # Safety
/// `ptr` is NULL or valid for writes of `size` bytes.
pub(crate) unsafe fn write_versioned<T: Copy>(
    name: &'static str,
    ptr: *mut T,
    size: usize,
    defaults: T,
    versions: &Versions,
) -> Result<(), Error> {
    if ptr.is_null() {
        return Err(Error::NullPointer { name });
    }
    let ours = std::mem::size_of::<T>();
    versions.check("size", size, ours)?;
    let n = size.min(ours);
    // SAFETY: `size >= n` writable bytes at `ptr` (caller contract), `defaults` is a live local
    // of `ours >= n` bytes, they do not overlap; the copy is untyped (padding included as is).
    unsafe {
        std::ptr::copy_nonoverlapping((&defaults as *const T).cast::<u8>(), ptr.cast::<u8>(), n)
    };
    if size > ours {
        // SAFETY: bytes `[ours, size)` are the caller's (writable, caller contract), their count
        // is below MAX_STRUCT_SIZE (checked); a byte slice needs no alignment.
        unsafe { slice_mut(ptr.cast::<u8>().add(ours), size - ours) }.fill(0);
    }
    // SAFETY: the first 4 bytes are the struct's u32 `struct_size` (every versioned struct
    // starts with it; `size >= 4` as every published size is); unaligned write, no alignment.
    unsafe { std::ptr::write_unaligned(ptr.cast::<u32>(), size as u32) };
    Ok(())
}

/// Writes `value` to `out` (the out-parameter convention: written only on success).
///
/// # Safety
/// `out` is NULL (rejected) or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(name: &'static str, out: *mut T, value: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::NullPointer { name });
    }
    // SAFETY: non-null and valid for writes (caller contract).
    unsafe { out.write(value) };
    Ok(())
}
