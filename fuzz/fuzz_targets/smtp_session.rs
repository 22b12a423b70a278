//! The SMTP server session (command parser, PIPELINING, AUTH exchanges, the DATA dot-scanner,
//! size and recipient limits) over any client input.
//!
//! Checks: no panic; `Continue` only once all input is read; split-invariance: the input fed
//! in two pieces (at every split point, chosen by the first two octets) gives the same replies
//! and the same committed mails as fed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{run_smtp, smtp_settings, split};

fuzz_target!(|data: &[u8]| {
    let (at, input) = split(data);
    let settings = smtp_settings();
    let whole = run_smtp(&settings, &[input]);
    let pieces = run_smtp(&settings, &[&input[..at], &input[at..]]);
    assert_eq!(whole, pieces, "split at {at}");
});
