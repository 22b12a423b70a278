//! The Maildir file-name parser: the UID POP3 shows (UIDL), the `,S=`/`,W=` sizes and the
//! delivery-time sort key, read from names any other program (Dovecot, mutt, an attacker with
//! shell access to the Maildir) may have written.
//!
//! Checks: no panic; a UID is 1 to 70 octets of `!`..`~` (what UIDL may carry); the same name
//! gives the same UID; the flags after `:` never change the UID or the sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_store::file::file_name_fields;

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let (uid, s, w, _) = file_name_fields(&name);
    assert!(!uid.is_empty() && uid.len() <= 70, "{uid:?}");
    assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{uid:?}");
    assert_eq!(file_name_fields(&name).0, uid);
    if !name.contains(':') {
        let flagged = format!("{name}:2,S");
        let (uid2, s2, w2, _) = file_name_fields(&flagged);
        assert_eq!((uid2, s2, w2), (uid, s, w));
    }
});
