//! RFC 5321 address parsing (`MailAddress::parse`, `parse_path`, the domain check) and the
//! SMTP `MAIL FROM`/`RCPT TO` commands that carry addresses.
//!
//! Checks: no panic; round-trip: an address that parses prints as text that parses to the same
//! address, and as a path (`<...>`) too; the null path parses to `None`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_mailet::{check_domain, MailAddress};
use mailroom_smtp::codec::{parse_command, Command};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = parse_command(data, true);
        return;
    };
    if let Ok(address) = MailAddress::parse(text) {
        let printed = address.to_string();
        assert_eq!(
            MailAddress::parse(&printed).as_ref(),
            Ok(&address),
            "{printed}"
        );
        let path = format!("<{printed}>");
        assert_eq!(
            MailAddress::parse_path(&path),
            Ok(Some(address.clone())),
            "{path}"
        );
        assert!(check_domain(address.domain()).is_ok());
    }
    let _ = MailAddress::parse_path(text);
    let _ = check_domain(text);
    for verb in ["MAIL FROM:", "RCPT TO:"] {
        let line = format!("{verb}{text}");
        if let Ok(Command::Mail { .. } | Command::Rcpt { .. }) =
            parse_command(line.as_bytes(), true)
        {
            // Accepted with brackets: then also without enforcement.
            assert!(parse_command(line.as_bytes(), false).is_ok(), "{line}");
        }
    }
});
