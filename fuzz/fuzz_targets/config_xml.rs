//! The configuration reader: the `<!ENTITY name SYSTEM "file">` pre-processor (DOCTYPE
//! scanning, entity references marked in the body), roxmltree, and the typed blocks.
//!
//! Checks: no panic; every error is located (a file and line). Inputs naming a device or
//! kernel file are skipped: reading `/dev/zero` as an include would never end, and config
//! files are written by the administrator, not by clients.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mailroom_config::{xml, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys", "file:"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    let base = Path::new("/nonexistent-fuzz-base");
    match xml::parse_document(text, Arc::from(Path::new("fuzz.xml")), base) {
        Ok(root) => {
            if let Err(errors) = Config::from_element(&root, base) {
                assert!(!errors.0.is_empty());
            }
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
