//! The status API's own header parsing: `Host`, `Origin`, `Sec-Fetch-Site`
//! and `Content-Type` (the guard against other sites), and the
//! `Authorization` schemes (bearer and HMAC). Headers come from anyone who
//! can connect: none of this may panic, and nothing but the token, or a MAC
//! over a nonce the daemon issued, may be admitted.
#![no_main]

use ftpdrop::status::auth::{sign, Verifier};
use ftpdrop::status::guard::{check, host_allowed, Seen};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let mut next = || parts.next();
    let (method, path, host, origin, site, ctype, auth) =
        (next(), next(), next(), next(), next(), next(), next());
    let allowed = vec!["ftpdrop.example".to_string()];
    let seen = Seen {
        method: method.unwrap_or("GET"),
        path: path.unwrap_or("/"),
        host,
        origin,
        fetch_site: site,
        content_type: ctype,
    };
    if check(&seen, &allowed).is_ok() {
        assert!(host_allowed(host, &allowed));
    }
    let v = Verifier::new("fuzz-token");
    let method = method.unwrap_or("GET");
    let path = path.unwrap_or("/");
    if v.admits(auth, method, path) {
        // No nonce was issued yet: only the token itself gets in.
        let a = auth.unwrap_or("");
        assert_eq!(a.strip_prefix("Bearer ").map(str::trim), Some("fuzz-token"), "{a:?}");
    }
    // A signature over a nonce this daemon issued is admitted once.
    let nonce = v.issue();
    let signed = sign("fuzz-token", &nonce, "GET", path);
    assert!(v.admits(Some(&signed), "GET", path));
    assert!(!v.admits(Some(&signed), "GET", path));
});
