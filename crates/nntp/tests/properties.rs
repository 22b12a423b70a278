//! Property tests of the NNTP codec: message-ids round-trip, article numbers and ranges come
//! back as sent (RFC 3977: 1 to 2^31-1), and no line makes the parser panic.

use mailroom_nntp::codec::{message_id, parse_command};
use proptest::prelude::*;

proptest! {
    #[test]
    fn message_ids_round_trip(left in "[!-;=?-~]{1,30}", right in "[!-;=?-~]{1,30}") {
        let id = format!("<{left}@{right}>");
        if let Ok(parsed) = message_id(&id) {
            prop_assert_eq!(message_id(&parsed).ok(), Some(parsed.clone()));
            let article = format!("ARTICLE {parsed}");
            prop_assert!(parse_command(article.as_bytes()).is_ok(), "{}", article);
        }
    }

    #[test]
    fn numbers_and_ranges_parse(n in 1u64..(1 << 31), m in 1u64..(1 << 31)) {
        for line in [format!("ARTICLE {n}"), format!("OVER {n}-{m}"), format!("OVER {n}-"), format!("HEAD {n}")] {
            prop_assert!(parse_command(line.as_bytes()).is_ok(), "{}", line);
        }
    }

    #[test]
    fn no_line_panics(line in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_command(&line);
    }
}
