//! The config parser and validation: never a panic, and an inline password
//! never shows in the effective config that `check-config` prints.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = ftpdrop::config::parse(text) else {
        return;
    };
    let _ = cfg.validate();
    let _ = cfg.warnings();
    let shown = serde_json::to_value(&cfg).expect("a config serializes");
    for (name, def) in &cfg.servers {
        if def.password.is_some() {
            assert_eq!(shown["servers"][name]["password"], "***");
        }
    }
});
