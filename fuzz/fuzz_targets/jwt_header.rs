//! Bearer tokens are parsed before any signature check: the header decoder must reject any
//! string cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    if let Ok(header) = jsonwebtoken::decode_header(token) {
        let _ = header.kid.as_deref().map(str::len);
    }
});
