//! The POP3 codec: the line reader and `parse_command`.
//!
//! Checks: no panic; split-invariance of the line reader; a parsed command's error text is one
//! line (no CR/LF the client would read as another reply).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{lines, split};
use mailroom_pop3::codec::{parse_command, LineEvent, LineReader};

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    let whole = lines(&mut LineReader::default(), &[input]);
    let pieces = lines(&mut LineReader::default(), &[&input[..at], &input[at..]]);
    assert_eq!(whole, pieces, "split at {at}");
    for event in whole {
        if let LineEvent::Line(line) = event {
            if let Err(e) = parse_command(&line) {
                let text = e.to_string();
                assert!(!text.contains('\r') && !text.contains('\n'), "{text:?}");
            }
        }
    }
});
