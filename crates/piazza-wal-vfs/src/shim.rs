//! The VFS and its file methods, over the default VFS.
//!
//! Layout of a file: SQLite allocates `szOsFile` bytes for each open file
//! and hands them to `xOpen`. Ours start with a [`File`] (whose first
//! member is the `sqlite3_file` SQLite calls through) and end with the
//! default VFS's own file, at [`REAL_OFFSET`], which every method forwards
//! to. Only a WAL file has a [`Gathered`] buffer.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

use crate::gather::{Gathered, Sink};
use crate::Error;

const NAME: &CStr = c"piazza-wal";

/// The most one write to the default VFS may carry: the unix VFS masks a
/// write's length with 0x1ffff, so a longer one would be cut.
const REAL_WRITE_AT_MOST: usize = 31 << 12;

/// The default VFS, which every call ends in.
static REAL_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// The result of the one registration.
static REGISTERED: OnceLock<Result<(), Error>> = OnceLock::new();

/// `write` calls made on WAL files, for the test that they are gathered.
static WAL_WRITES: AtomicU64 = AtomicU64::new(0);

/// How many `write` calls this process's WAL files have made through the VFS.
pub fn wal_write_calls() -> u64 {
    WAL_WRITES.load(Ordering::Relaxed)
}

pub(crate) fn register() -> Result<(), Error> {
    REGISTERED.get_or_init(register_once).clone()
}

fn register_once() -> Result<(), Error> {
    // SAFETY: plain calls into SQLite's C API; the registered struct is
    // leaked, so it outlives every connection, as SQLite requires.
    unsafe {
        let rc = ffi::sqlite3_initialize();
        if rc != ffi::SQLITE_OK {
            return Err(Error(format!("sqlite3_initialize returned {rc}")));
        }
        let real = ffi::sqlite3_vfs_find(ptr::null());
        if real.is_null() {
            return Err(Error("SQLite has no default VFS".into()));
        }
        REAL_VFS.store(real, Ordering::Release);
        // The default VFS's table with our name, our file size and our
        // `xOpen`: its other methods (delete, access, full path name,
        // randomness, time) are the default's, and read nothing of the
        // table but what is copied here.
        let mut vfs = *real;
        vfs.szOsFile = c_int::try_from(REAL_OFFSET + (*real).szOsFile as usize)
            .map_err(|_| Error("file size overflows".into()))?;
        vfs.pNext = ptr::null_mut();
        vfs.zName = NAME.as_ptr();
        vfs.xOpen = Some(open);
        let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
        if rc != ffi::SQLITE_OK {
            return Err(Error(format!("sqlite3_vfs_register returned {rc}")));
        }
    }
    Ok(())
}

/// An open file as SQLite sees it. `repr(C)`: `base` must come first.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// `Some` for a WAL file.
    gathered: Option<Box<Gathered>>,
}

/// Where the default VFS's file starts, 8-aligned as SQLite's allocations are.
const REAL_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(8);

/// The default VFS's file inside ours.
///
/// SAFETY (for callers): `file` must be a file opened by [`open`].
unsafe fn real(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().add(REAL_OFFSET).cast()
}

/// The default VFS's methods for `file`'s real file.
///
/// SAFETY: `real` must be a real file that opened successfully.
unsafe fn methods(real: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*real).pMethods
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL_VFS.load(Ordering::Acquire);
    let shim = file.cast::<File>();
    // SQLite calls xClose only on a non-null pMethods: null until the
    // real file is open and ours is initialised.
    ptr::addr_of_mut!((*shim).base.pMethods).write(ptr::null());
    let real_file = real(file);
    ptr::addr_of_mut!((*real_file).pMethods).write(ptr::null());
    let Some(real_open) = (*real_vfs).xOpen else {
        return ffi::SQLITE_CANTOPEN;
    };
    let rc = real_open(real_vfs, name, real_file, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // A failed open that set its methods still wants its close.
        if let Some(close) = (*real_file).pMethods.as_ref().and_then(|m| m.xClose) {
            close(real_file);
        }
        return rc;
    }
    let gathered = (flags & ffi::SQLITE_OPEN_WAL != 0).then(Box::<Gathered>::default);
    ptr::addr_of_mut!((*shim).gathered).write(gathered);
    ptr::addr_of_mut!((*shim).base.pMethods).write(&METHODS);
    ffi::SQLITE_OK
}

/// The default VFS's file as the place gathered bytes go.
struct Real(*mut ffi::sqlite3_file);

impl Sink for Real {
    fn write(&mut self, bytes: &[u8], offset: i64) -> c_int {
        // SAFETY: `self.0` is an open real file (see `real`).
        let Some(write) = (unsafe { methods(self.0) }).xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut offset = offset;
        for chunk in bytes.chunks(REAL_WRITE_AT_MOST) {
            WAL_WRITES.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as above; `chunk` outlives the call and its length
            // is below REAL_WRITE_AT_MOST, so it fits a c_int.
            let rc = unsafe { write(self.0, chunk.as_ptr().cast(), chunk.len() as c_int, offset) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            offset += chunk.len() as i64;
        }
        ffi::SQLITE_OK
    }
}

/// Writes what `file` has gathered, if anything.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    match (*file.cast::<File>()).gathered.as_deref_mut() {
        Some(gathered) => gathered.flush(&mut Real(real(file))),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let real = real(file);
    let Some(gathered) = (*file.cast::<File>()).gathered.as_deref_mut() else {
        return match methods(real).xWrite {
            Some(write) => write(real, data, amount, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        };
    };
    let bytes = match usize::try_from(amount) {
        Ok(0) => return ffi::SQLITE_OK,
        Ok(length) => std::slice::from_raw_parts(data.cast::<u8>(), length),
        Err(_) => return ffi::SQLITE_IOERR_WRITE,
    };
    gathered.write(bytes, offset, &mut Real(real))
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let real = real(file);
    let closed = methods(real).xClose.map_or(ffi::SQLITE_OK, |close| close(real));
    ptr::drop_in_place(ptr::addr_of_mut!((*file.cast::<File>()).gathered));
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

/// The default VFS's real file of `file` and its methods, handed to `call`.
///
/// SAFETY: `file` must be a file opened by [`open`].
unsafe fn forward<T>(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> T,
) -> T {
    let real = real(file);
    call(real, methods(real))
}

/// As [`forward`], once what `file` has gathered is written: nothing else
/// touches a WAL file before its gathered bytes are in it.
///
/// SAFETY: as [`forward`].
unsafe fn forward_flushed(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    match flush(file) {
        ffi::SQLITE_OK => forward(file, call),
        failed => failed,
    }
}

// The methods below pass each call on. A method missing from the default
// VFS's table answers as SQLite does for it; the shared-memory and
// memory-map ones exist from versions 2 and 3 of the table only.

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, data: *mut c_void, amount: c_int, offset: i64) -> c_int {
    forward_flushed(file, |real, m| {
        m.xRead
            .map_or(ffi::SQLITE_IOERR_READ, |read| read(real, data, amount, offset))
    })
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    forward_flushed(file, |real, m| {
        m.xTruncate
            .map_or(ffi::SQLITE_IOERR_TRUNCATE, |truncate| truncate(real, size))
    })
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    forward_flushed(file, |real, m| {
        m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |sync| sync(real, flags))
    })
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    forward_flushed(file, |real, m| {
        m.xFileSize
            .map_or(ffi::SQLITE_IOERR_FSTAT, |file_size| file_size(real, size))
    })
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, argument: *mut c_void) -> c_int {
    forward_flushed(file, |real, m| {
        m.xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |control| control(real, op, argument))
    })
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    forward_flushed(file, |real, m| match m.xFetch {
        Some(fetch) if m.iVersion >= 3 => fetch(real, offset, amount, out),
        _ => {
            // No memory map: SQLite reads the page instead.
            *out = ptr::null_mut();
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward(file, |real, m| {
        m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |lock| lock(real, level))
    })
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward(file, |real, m| {
        m.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |unlock| unlock(real, level))
    })
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward(file, |real, m| {
        m.xCheckReservedLock
            .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |check| check(real, out))
    })
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward(file, |real, m| m.xSectorSize.map_or(4096, |size| size(real)))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward(file, |real, m| m.xDeviceCharacteristics.map_or(0, |get| get(real)))
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward(file, |real, m| match m.xShmMap {
        Some(map) if m.iVersion >= 2 => map(real, region, size, extend, out),
        _ => ffi::SQLITE_IOERR_SHMMAP,
    })
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    forward(file, |real, m| match m.xShmLock {
        Some(lock) if m.iVersion >= 2 => lock(real, offset, n, flags),
        _ => ffi::SQLITE_IOERR_SHMLOCK,
    })
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    forward(file, |real, m| match m.xShmBarrier {
        Some(barrier) if m.iVersion >= 2 => barrier(real),
        _ => {}
    })
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    forward(file, |real, m| match m.xShmUnmap {
        Some(unmap) if m.iVersion >= 2 => unmap(real, delete),
        _ => ffi::SQLITE_OK,
    })
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    forward(file, |real, m| match m.xUnfetch {
        Some(unfetch) if m.iVersion >= 3 => unfetch(real, offset, page),
        _ => ffi::SQLITE_OK,
    })
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};
