//! Matchers on header values: CompareNumericHeaderValue and HasHabeasWarrantMark (whose mark
//! the AddHabeasWarrantMark mailet writes).

use std::cmp::Ordering;

use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher, MatcherConfig};

use super::all_if;
use crate::Registry;

/// The Habeas Sender Warranted Email mark, as James 2.3 writes and checks it: header name and
/// exact value, in order.
pub const HABEAS_WARRANT_MARK: [(&str, &str); 9] = [
    ("X-Habeas-SWE-1", "winter into spring"),
    ("X-Habeas-SWE-2", "brightly anticipated"),
    ("X-Habeas-SWE-3", "like Habeas SWE (tm)"),
    ("X-Habeas-SWE-4", "Copyright 2002 Habeas (tm)"),
    (
        "X-Habeas-SWE-5",
        "Sender Warranted Email (SWE) (tm). The sender of this",
    ),
    (
        "X-Habeas-SWE-6",
        "email in exchange for a license for this Habeas",
    ),
    (
        "X-Habeas-SWE-7",
        "warrant mark warrants that this is a Habeas Compliant",
    ),
    (
        "X-Habeas-SWE-8",
        "Message (HCM) and not spam. Please report use of this",
    ),
    (
        "X-Habeas-SWE-9",
        "mark in spam to <http://www.habeas.com/report/>.",
    ),
];

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("CompareNumericHeaderValue", |c| {
            Ok(Box::new(CompareNumeric::parse(c)?))
        })
        .about(
            "Every recipient when the first field of that name holds a number that compares \
             as asked with the given one (`<`, `<=`, `==`, `>=`, `>`, or `LT` `LE` `EQ` `GE` \
             `GT`). A field that is not a number is an error of the matcher.",
            r#"<mailet match="CompareNumericHeaderValue=X-Spam-Score >= 5" class="ToProcessor">"#,
        );
    registry
        .add_matcher("HasHabeasWarrantMark", |_| Ok(Box::new(HasHabeasWarrantMark)))
        .no_condition()
        .about(
            "Every recipient when the message carries the nine X-Habeas-SWE-1..9 fields of \
             the Habeas warrant mark, each with its exact text.",
            r#"<mailet match="HasHabeasWarrantMark" class="ToProcessor"><processor>transport</processor></mailet>"#,
        );
}

/// `CompareNumericHeaderValue=Header op number`.
struct CompareNumeric {
    header: String,
    /// The orderings of (header value vs. threshold) that match.
    accept: &'static [Ordering],
    threshold: f64,
}

impl CompareNumeric {
    fn parse(config: &MatcherConfig) -> Result<Self, MailetError> {
        use Ordering::{Equal, Greater, Less};
        let usage = "(CompareNumericHeaderValue=X-Spam-Score >= 5)";
        let mut words = config.required_condition()?.split_whitespace();
        let (Some(header), Some(op), Some(number), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(MailetError::new(format!(
                "CompareNumericHeaderValue needs a header name, an operator and a number {usage}"
            )));
        };
        let accept: &'static [Ordering] = match op {
            "<" | "LT" => &[Less],
            "<=" | "=<" | "LE" => &[Less, Equal],
            "==" | "=" | "EQ" => &[Equal],
            ">=" | "=>" | "GE" => &[Greater, Equal],
            ">" | "GT" => &[Greater],
            other => {
                return Err(MailetError::new(format!(
                    "CompareNumericHeaderValue: bad operator {other:?} {usage}"
                )))
            }
        };
        let threshold = parse_number(number).ok_or_else(|| {
            MailetError::new(format!(
                "CompareNumericHeaderValue: {number:?} is not a number {usage}"
            ))
        })?;
        Ok(CompareNumeric {
            header: header.to_string(),
            accept,
            threshold,
        })
    }
}

/// A decimal number as Java's `Double.valueOf` reads one (no NaN: it compares as nothing).
fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| !n.is_nan())
}

impl Matcher for CompareNumeric {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let Some(value) = mail.message.header(&self.header) else {
            return Ok(Vec::new());
        };
        let number = parse_number(&value).ok_or_else(|| {
            MailetError::new(format!(
                "CompareNumericHeaderValue: {}: {value:?} is not a number",
                self.header
            ))
        })?;
        let ordering = number.partial_cmp(&self.threshold);
        all_if(mail, ordering.is_some_and(|o| self.accept.contains(&o)))
    }
}

/// Every recipient when the whole warrant mark is present.
struct HasHabeasWarrantMark;

impl Matcher for HasHabeasWarrantMark {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = HABEAS_WARRANT_MARK
            .iter()
            .all(|(name, value)| mail.message.header(name).as_deref() == Some(*value));
        all_if(mail, hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::testing::{build, mail_from, try_build};

    #[test]
    fn compares_numeric_headers() {
        let mail = |v: &str| {
            mail_from(
                None,
                &["a@b.example"],
                format!("X-Score: {v}\r\n\r\nx").as_bytes(),
            )
        };
        let cases = [
            ("X-Score >= 5", "5", true),
            ("X-Score GE 5", "4.9", false),
            ("X-Score > 5", "5", false),
            ("X-Score GT 5", "5.01", true),
            ("X-Score < -1", "-2", true),
            ("X-Score =< 3", "3.0", true),
            ("X-Score == 3", "3", true),
            ("X-Score EQ 3", "4", false),
            ("x-score LT 1e3", " 999 ", true),
        ];
        for (condition, value, expected) in cases {
            let m = build("CompareNumericHeaderValue", Some(condition));
            let ctx = crate::matchers::testing::TestContext::default();
            let got = m.matches(&mail(value), &ctx).unwrap().len() == 1;
            assert_eq!(got, expected, "{condition} with {value}");
        }
        let m = build("CompareNumericHeaderValue", Some("X-Score > 1"));
        let ctx = crate::matchers::testing::TestContext::default();
        let absent = mail_from(None, &["a@b.example"], b"Subject: x\r\n\r\nx");
        assert!(m.matches(&absent, &ctx).unwrap().is_empty());
        assert!(m.matches(&mail("high"), &ctx).is_err());
        for bad in [
            "X-Score",
            "X-Score >",
            "X-Score ~ 5",
            "X-Score > five",
            "X-Score > 1 2",
        ] {
            assert!(
                try_build("CompareNumericHeaderValue", Some(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn habeas_mark_needs_every_field_exactly() {
        let m = build("HasHabeasWarrantMark", None);
        let ctx = crate::matchers::testing::TestContext::default();
        let mut text: String = HABEAS_WARRANT_MARK
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        text.push_str("\r\nbody");
        let marked = mail_from(None, &["a@b.example"], text.as_bytes());
        assert_eq!(m.matches(&marked, &ctx).unwrap().len(), 1);
        let altered = text.replace("brightly", "dimly");
        let altered = mail_from(None, &["a@b.example"], altered.as_bytes());
        assert!(m.matches(&altered, &ctx).unwrap().is_empty());
        let plain = mail_from(None, &["a@b.example"], b"Subject: x\r\n\r\nx");
        assert!(m.matches(&plain, &ctx).unwrap().is_empty());
    }
}
