//! Property tests of RFC 5321 addresses: every address prints as text that parses back to it
//! (plain and as a path), and no text makes the parser panic.

use mailroom_mailet::MailAddress;
use proptest::prelude::*;

/// A dot-string local part, or any printable ASCII (quoted when printed).
fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[A-Za-z0-9_-]{1,8}){0,3}",
        "[ -~]{1,30}",
    ]
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("[{a}.{b}.{c}.{d}]")),
        any::<[u16; 8]>().prop_map(|s| format!("[IPv6:{}]", std::net::Ipv6Addr::from(s))),
    ]
}

proptest! {
    #[test]
    fn addresses_round_trip(local in local_part(), domain in domain()) {
        // Written quoted (valid for any local part); printed quoted only where it must be.
        let quoted: String = local.chars().flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        }).collect();
        let address = MailAddress::parse(&format!("\"{quoted}\"@{domain}")).unwrap();
        prop_assert_eq!(address.local_part(), local.as_str());
        let printed = address.to_string();
        prop_assert_eq!(MailAddress::parse(&printed), Ok(address.clone()));
        prop_assert_eq!(MailAddress::parse_path(&format!("<{printed}>")), Ok(Some(address.clone())));
        let routed = format!("<@relay.test:{printed}>");
        prop_assert_eq!(MailAddress::parse_path(&routed), Ok(Some(address)));
    }

    #[test]
    fn any_text_parses_or_is_refused_and_what_parses_round_trips(text in "\\PC{0,40}|[\"\\\\@<>a-z. \\x00-\\x1f]{0,40}") {
        if let Ok(address) = MailAddress::parse(&text) {
            prop_assert_eq!(MailAddress::parse(&address.to_string()), Ok(address));
        }
        let _ = MailAddress::parse_path(&text);
    }
}
