//! Bearer tokens are parsed before any signature check: the header decoder must reject any
//! string cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    // Coach calls exactly this on every bearer token (auth::Authenticator::verify).
    let _ = jsonwebtoken::decode_header(token);
});
