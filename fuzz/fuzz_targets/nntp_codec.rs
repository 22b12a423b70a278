//! The NNTP codec: the line reader (`READ_LIMIT`), `parse_command`, message-id and wildmat
//! parsing.
//!
//! Checks: no panic; split-invariance of the line reader; a parsed message-id parses again to
//! itself (round-trip); a wildmat that parses matches without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{lines, split};
use mailroom_nntp::codec::{message_id, parse_command, LineEvent, LineReader, READ_LIMIT};
use mailroom_nntp::wildmat::Wildmat;

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    let reader = || LineReader::with_limit(READ_LIMIT);
    let whole = lines(&mut reader(), &[input]);
    let pieces = lines(&mut reader(), &[&input[..at], &input[at..]]);
    assert_eq!(whole, pieces, "split at {at}");
    for event in whole {
        let LineEvent::Line(line) = event else {
            continue;
        };
        let _ = parse_command(&line);
        let text = String::from_utf8_lossy(&line);
        if let Ok(id) = message_id(&text) {
            assert_eq!(message_id(&id).ok().as_deref(), Some(id.as_str()));
        }
        if let Some((pattern, subject)) = text.split_once(' ') {
            if let Ok(w) = Wildmat::parse(pattern) {
                let _ = w.matches(subject);
            }
        }
    }
});
