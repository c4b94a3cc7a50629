//! The hot path: append, batch append and reads, and the store's get/put/has/delete,
//! as raw N-API callbacks.
//!
//! napi-rs 3 wraps every generated callback in a native-borrow scope (a mutex, an
//! allocation and type-tag checks) that cost ~2/3 of a 100-byte append. These four
//! functions take plain arguments (a log handle, typed arrays, numbers) and make only the
//! N-API calls needed to read them. This is the only unsafe code of the binding.

use std::ffi::CString;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use napi::sys;
use seglog_core::store::MAX_KEY_BYTES;
use seglog_core::{Error, Key};

use crate::registry::{with_log, with_store};
use crate::{js_number_to_u64, JsFailure};

const MAX_ARGS: usize = 5;

struct Args {
    env: sys::napi_env,
    argv: [sys::napi_value; MAX_ARGS],
    argc: usize,
}

impl Args {
    /// SAFETY (for callers): `env` and `info` are the ones N-API passed to the callback.
    unsafe fn get(env: sys::napi_env, info: sys::napi_callback_info) -> Args {
        let mut argc = MAX_ARGS;
        let mut argv = [ptr::null_mut(); MAX_ARGS];
        // SAFETY: argv has room for `argc` values; N-API writes at most that many.
        unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()) };
        Args { env, argv, argc }
    }

    fn value(&self, i: usize) -> Option<sys::napi_value> {
        (i < self.argc).then(|| self.argv[i])
    }

    fn number(&self, i: usize, name: &str) -> Result<f64, JsFailure> {
        let mut v = 0f64;
        let status = match self.value(i) {
            // SAFETY: a value of this callback's arguments, in its env.
            Some(value) => unsafe { sys::napi_get_value_double(self.env, value, &mut v) },
            None => sys::Status::napi_number_expected,
        };
        if status != sys::Status::napi_ok {
            return Err(JsFailure::Type(format!("{name} must be a number")));
        }
        Ok(v)
    }

    fn optional_u64(&self, i: usize, name: &str) -> Result<Option<u64>, JsFailure> {
        let Some(value) = self.value(i) else { return Ok(None) };
        let mut t = 0;
        // SAFETY: as above.
        unsafe { sys::napi_typeof(self.env, value, &mut t) };
        if t == sys::ValueType::napi_undefined || t == sys::ValueType::napi_null {
            return Ok(None);
        }
        Ok(Some(js_number_to_u64(name, self.number(i, name)?)?))
    }

    /// The bytes of a typed array argument of element type `kind` (len in elements).
    ///
    /// SAFETY (for callers): the slice is valid only during this callback, and no other
    /// slice over the same memory may be created while a mutable one is alive. The
    /// callers below obtain at most one typed array per distinct argument, and the TS
    /// layer never passes the same buffer twice in one call.
    unsafe fn typed_array<'a, T>(&self, i: usize, kind: sys::napi_typedarray_type, name: &str) -> Result<&'a mut [T], JsFailure> {
        let fail = || JsFailure::Type(format!("{name} must be a {}", if kind == sys::TypedarrayType::uint32_array { "Uint32Array" } else { "Uint8Array" }));
        let value = self.value(i).ok_or_else(fail)?;
        let mut is_typed = false;
        // SAFETY: a value of this callback's arguments, in its env.
        unsafe { sys::napi_is_typedarray(self.env, value, &mut is_typed) };
        if !is_typed {
            return Err(fail());
        }
        let (mut t, mut len, mut data) = (0, 0usize, ptr::null_mut());
        // SAFETY: `value` is a typed array; N-API fills the out-pointers.
        let status = unsafe {
            sys::napi_get_typedarray_info(self.env, value, &mut t, &mut len, &mut data, ptr::null_mut(), ptr::null_mut())
        };
        if status != sys::Status::napi_ok || t != kind {
            return Err(fail());
        }
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: N-API guarantees `data` points at `len` elements of the array's type,
        // kept alive by the argument for the duration of the callback (see above).
        Ok(unsafe { std::slice::from_raw_parts_mut(data as *mut T, len) })
    }
}

/// Room for a string key read from JS, in UTF-16 units: a key of at most
/// `MAX_KEY_BYTES` bytes of UTF-8 has at most that many units (each unit encodes to at
/// least one byte), so filling more than `MAX_KEY_BYTES` units means too long.
const KEY_UNITS: usize = MAX_KEY_BYTES + 2;
/// Room for the key's UTF-8 (3 bytes per unit at most).
pub(crate) const KEY_BUF_LEN: usize = 3 * MAX_KEY_BYTES;

impl Args {
    /// A store key argument: a string (its UTF-8 goes to `buf`) or a number. The string
    /// is read as UTF-16 and encoded here, so a lone surrogate is refused rather than
    /// turned into U+FFFD (two different keys would then be one).
    fn key<'b>(&self, i: usize, buf: &'b mut [u8; KEY_BUF_LEN]) -> Result<Key<'b>, JsFailure> {
        let fail = || JsFailure::Type("key must be a string or a safe non-negative integer".into());
        let value = self.value(i).ok_or_else(fail)?;
        let mut t = 0;
        // SAFETY: a value of this callback's arguments, in its env.
        unsafe { sys::napi_typeof(self.env, value, &mut t) };
        if t == sys::ValueType::napi_number {
            let v = self.number(i, "key")?;
            return Ok(Key::Int(js_number_to_u64("key", v)?));
        }
        if t != sys::ValueType::napi_string {
            return Err(fail());
        }
        let mut units = [0u16; KEY_UNITS];
        let mut copied = 0usize;
        // SAFETY: `units` has room for `units.len()` units including the NUL N-API writes.
        let status = unsafe { sys::napi_get_value_string_utf16(self.env, value, units.as_mut_ptr(), units.len(), &mut copied) };
        if status != sys::Status::napi_ok {
            return Err(fail());
        }
        let too_long = || JsFailure::Engine(Error::InvalidArgument(format!("a string key must be at most {MAX_KEY_BYTES} bytes of UTF-8")));
        if copied > MAX_KEY_BYTES {
            return Err(too_long());
        }
        let mut len = 0;
        for c in char::decode_utf16(units[..copied].iter().copied()) {
            let c = c.map_err(|_| JsFailure::Engine(Error::InvalidArgument("a string key must be well-formed UTF-16 (it has a lone surrogate)".into())))?;
            len += c.encode_utf8(&mut buf[len..]).len();
        }
        if len > MAX_KEY_BYTES {
            return Err(too_long());
        }
        Ok(Key::Str(&buf[..len]))
    }
}

fn handle(args: &Args) -> Result<u32, JsFailure> {
    let h = args.number(0, "handle")?;
    if h.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&h) {
        return Err(JsFailure::Engine(Error::Closed));
    }
    Ok(h as u32)
}

/// Runs `body`, turning errors and panics into a thrown JS error and returning a number.
///
/// SAFETY (for callers): `env` and `info` are the ones N-API passed to the callback.
unsafe fn run(env: sys::napi_env, info: sys::napi_callback_info, body: impl FnOnce(&Args) -> Result<f64, JsFailure>) -> sys::napi_value {
    // SAFETY: forwarded from the caller.
    let args = unsafe { Args::get(env, info) };
    let result = catch_unwind(AssertUnwindSafe(|| body(&args)))
        .unwrap_or_else(|_| Err(JsFailure::Internal("internal error (a panic in seglog); the log handle may be unusable".into())));
    match result {
        Ok(n) => {
            let mut out = ptr::null_mut();
            // SAFETY: creating a number in the callback's env.
            unsafe { sys::napi_create_double(env, n, &mut out) };
            out
        }
        Err(failure) => {
            let (code, msg) = failure.code_and_message();
            let code = CString::new(code).unwrap_or_default();
            let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
            // SAFETY: valid NUL-terminated strings that outlive the call.
            unsafe {
                if matches!(failure, JsFailure::Type(_)) {
                    sys::napi_throw_type_error(env, code.as_ptr(), msg.as_ptr());
                } else {
                    sys::napi_throw_error(env, code.as_ptr(), msg.as_ptr());
                }
            }
            ptr::null_mut()
        }
    }
}

/// `append(handle, payload: Uint8Array, timestamp?: number): offset`
unsafe extern "C" fn append(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let payload: &mut [u8] = a.typed_array(1, sys::TypedarrayType::uint8_array, "payload")?;
            let ts = a.optional_u64(2, "timestamp")?;
            Ok(with_log(handle(a)?, |log| log.append(payload, ts))? as f64)
        })
    }
}

/// `appendPacked(handle, data: Uint8Array, lengths: Uint32Array, timestamp?): first offset`
unsafe extern "C" fn append_packed(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments; data and lengths are different typed arrays.
    unsafe {
        run(env, info, |a| {
            let data: &mut [u8] = a.typed_array(1, sys::TypedarrayType::uint8_array, "data")?;
            let lengths: &mut [u32] = a.typed_array(2, sys::TypedarrayType::uint32_array, "lengths")?;
            let ts = a.optional_u64(3, "timestamp")?;
            Ok(with_log(handle(a)?, |log| log.append_packed(data, lengths, ts))? as f64)
        })
    }
}

/// `readInto(handle, offset, dest: Uint8Array)`: frame length copied (> 0), 0 at or past
/// the end, or minus the length needed when `dest` is too small.
unsafe extern "C" fn read_into(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let offset = js_number_to_u64("offset", a.number(1, "offset")?)?;
            let dest: &mut [u8] = a.typed_array(2, sys::TypedarrayType::uint8_array, "dest")?;
            let n = with_log(handle(a)?, |log| {
                if log.is_read_only() && offset >= log.next_offset() {
                    log.refresh()?;
                }
                Ok(match log.read_frame(offset)? {
                    None => 0.0,
                    Some(frame) if frame.len() > dest.len() => -(frame.len() as f64),
                    Some(frame) => {
                        dest[..frame.len()].copy_from_slice(frame);
                        frame.len() as f64
                    }
                })
            })?;
            Ok(n)
        })
    }
}

/// `readBatchInto(handle, from, maxRecords, maxBytes, dest)`: bytes of frames copied
/// (> 0), 0 at the end, or minus the size the first record needs.
unsafe extern "C" fn read_batch_into(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let from = js_number_to_u64("from", a.number(1, "from")?)?;
            let max_records = js_number_to_u64("maxRecords", a.number(2, "maxRecords")?)?;
            let max_bytes = js_number_to_u64("maxBytes", a.number(3, "maxBytes")?)? as usize;
            let dest: &mut [u8] = a.typed_array(4, sys::TypedarrayType::uint8_array, "dest")?;
            let out = with_log(handle(a)?, |log| {
                if log.is_read_only() && from >= log.next_offset() {
                    log.refresh()?;
                }
                log.read_frames_into(from, max_records, max_bytes, dest)
            })?;
            Ok(if out.records > 0 { out.bytes as f64 } else { -(out.needed as f64) })
        })
    }
}

/// `storePut(handle, key, value: Uint8Array)`: the record's offset.
unsafe extern "C" fn store_put(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let mut buf = [0u8; KEY_BUF_LEN];
            let key = a.key(1, &mut buf)?;
            let value: &mut [u8] = a.typed_array(2, sys::TypedarrayType::uint8_array, "value")?;
            Ok(with_store(handle(a)?, |s| s.put(key, value))? as f64)
        })
    }
}

/// `storeGet(handle, key, dest: Uint8Array)`: the value's length (copied into `dest`),
/// -1 if the key is absent, or `-(length + 2)` when `dest` is too small.
unsafe extern "C" fn store_get(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let mut buf = [0u8; KEY_BUF_LEN];
            let key = a.key(1, &mut buf)?;
            let dest: &mut [u8] = a.typed_array(2, sys::TypedarrayType::uint8_array, "dest")?;
            let n = with_store(handle(a)?, |s| {
                Ok(match s.get(key)? {
                    None => -1.0,
                    Some(v) if v.len() > dest.len() => -(v.len() as f64) - 2.0,
                    Some(v) => {
                        dest[..v.len()].copy_from_slice(v);
                        v.len() as f64
                    }
                })
            })?;
            Ok(n)
        })
    }
}

/// `storeHas(handle, key)`: 1 or 0.
unsafe extern "C" fn store_has(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let mut buf = [0u8; KEY_BUF_LEN];
            let key = a.key(1, &mut buf)?;
            Ok(if with_store(handle(a)?, |s| s.has(key))? { 1.0 } else { 0.0 })
        })
    }
}

/// `storeDelete(handle, key)`: 1 if the key existed (a DELETE record was written), else 0.
unsafe extern "C" fn store_delete(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API's own arguments.
    unsafe {
        run(env, info, |a| {
            let mut buf = [0u8; KEY_BUF_LEN];
            let key = a.key(1, &mut buf)?;
            Ok(if with_store(handle(a)?, |s| s.delete(key))? { 1.0 } else { 0.0 })
        })
    }
}

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// Adds the hot-path functions to the module's exports.
pub fn register(env: sys::napi_env, exports: sys::napi_value) -> napi::Result<()> {
    let functions: [(&str, Callback); 8] = [
        ("hotAppend", append),
        ("hotAppendPacked", append_packed),
        ("hotReadInto", read_into),
        ("hotReadBatchInto", read_batch_into),
        ("hotStorePut", store_put),
        ("hotStoreGet", store_get),
        ("hotStoreHas", store_has),
        ("hotStoreDelete", store_delete),
    ];
    for (name, cb) in functions {
        let cname = CString::new(name).expect("static name");
        let mut f = ptr::null_mut();
        // SAFETY: `env` and `exports` come from module registration; the name is a valid
        // C string for the duration of the calls.
        unsafe {
            let status = sys::napi_create_function(env, cname.as_ptr() as *const c_char, name.len() as isize, Some(cb), ptr::null_mut(), &mut f);
            if status != sys::Status::napi_ok {
                return Err(napi::Error::from_reason(format!("cannot create {name}")));
            }
            let status = sys::napi_set_named_property(env, exports, cname.as_ptr(), f);
            if status != sys::Status::napi_ok {
                return Err(napi::Error::from_reason(format!("cannot export {name}")));
            }
        }
    }
    Ok(())
}
