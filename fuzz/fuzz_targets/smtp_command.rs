//! The SMTP command-line parser (`parse_command`) and the line reader in front of it.
//!
//! Checks: no panic on any line, with and without bracket enforcement; every error has a
//! reply in the 5xx range; split-invariance of the line reader (lines, and overlong-line
//! events, are the same whole and in two pieces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{lines, split};
use mailroom_smtp::codec::{parse_command, LineEvent, LineReader};

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    let whole = lines(&mut LineReader::default(), &[input]);
    let pieces = lines(&mut LineReader::default(), &[&input[..at], &input[at..]]);
    assert_eq!(whole, pieces, "split at {at}");
    for event in whole {
        if let LineEvent::Line(line) = event {
            for brackets in [true, false] {
                if let Err(e) = parse_command(&line, brackets) {
                    let code = e.reply().code;
                    assert!((500..600).contains(&code), "{code} for {e:?}");
                }
            }
        }
    }
});
