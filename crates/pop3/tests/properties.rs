//! Property tests of the POP3 command parser: numbers and names come back as sent, in any case
//! of the command, and no line makes it panic.

use mailroom_pop3::codec::{parse_command, Command};
use proptest::prelude::*;

proptest! {
    #[test]
    fn message_numbers_come_back(n in 1u64.., lines in any::<u64>(), upper in any::<bool>()) {
        let verb = |v: &str| if upper { v.to_string() } else { v.to_ascii_lowercase() };
        prop_assert_eq!(parse_command(format!("{} {n}", verb("RETR")).as_bytes()), Ok(Command::Retr(n)));
        prop_assert_eq!(parse_command(format!("{} {n}", verb("DELE")).as_bytes()), Ok(Command::Dele(n)));
        prop_assert_eq!(parse_command(format!("{} {n}", verb("LIST")).as_bytes()), Ok(Command::List(Some(n))));
        prop_assert_eq!(
            parse_command(format!("{} {n} {lines}", verb("TOP")).as_bytes()),
            Ok(Command::Top { msg: n, lines })
        );
    }

    #[test]
    fn user_and_pass_come_back(name in "[!-~]{1,40}", password in "[ -~]{1,40}") {
        prop_assert_eq!(parse_command(format!("USER {name}").as_bytes()), Ok(Command::User(name)));
        prop_assert_eq!(parse_command(format!("PASS {password}").as_bytes()), Ok(Command::Pass(password)));
    }

    #[test]
    fn no_line_panics(line in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_command(&line);
    }
}
