//! Every server reply ftpdrop interprets itself: FEAT (into features and
//! the hash methods chosen from them), SIZE, EPSV and PASV addresses, HASH / XSHA* / XMD5 / XCRC
//! digests, and the classification of an error reply. A server is not
//! trusted to be sane: none of these may panic.
#![no_main]

use ftpdrop::ftp::fault::Fault;
use ftpdrop::ftp::reply;
use ftpdrop::ftp::digest::{self, Algo};
use libfuzzer_sys::fuzz_target;
use suppaftp::types::Response;
use suppaftp::{FtpError, Status};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let features = ftpdrop::ftp::Features::parse(reply::feat_pairs(&text));
    let _ = digest::methods(&features);
    if let Some(n) = reply::size(&text) {
        assert!(text.contains(&n.to_string()));
    }
    if let Some(p) = reply::epsv_port(&text) {
        assert!(p != 0);
    }
    let _ = reply::pasv_addr(&text);
    for algo in [Algo::Sha256, Algo::Sha1, Algo::Md5, Algo::Crc32] {
        if let Some(d) = digest::parse_digest(&text, algo) {
            assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    let code = data
        .get(..3)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(0);
    let err = FtpError::UnexpectedResponse(Response::new(Status::from(code), data.to_vec()));
    let f = Fault::from_ftp("STOR x", &err);
    assert!(f.message.starts_with("STOR x: "));
    assert_eq!(f.verb.as_deref(), Some("STOR"));
    let _ = ftpdrop::ftp::fault::demands_tls(&text);
});
