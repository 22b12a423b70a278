//! Wildmats (RFC 3977 §4): comma-separated patterns, each optionally negated with `!`; the
//! last pattern that matches decides. Within a pattern `*` matches any string, `?` any one
//! character, `[...]` a character class (ranges `a-z`, negation `[^...]`, as INN's uwildmat),
//! and `\` quotes the next character. Matching is by Unicode character, case-sensitive.

/// A parsed wildmat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wildmat {
    /// (negated, pattern) in order.
    items: Vec<(bool, Vec<Token>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a wildmat is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadWildmat;

impl Wildmat {
    /// Parses a wildmat: an empty element (`a,,b`, a trailing comma), a lone `!`, an unclosed
    /// `[`, a trailing `\` or a control character make it malformed.
    pub fn parse(text: &str) -> Result<Wildmat, BadWildmat> {
        let mut items = Vec::new();
        for element in split_elements(text)? {
            let (negated, pattern) = match element.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, element),
            };
            if pattern.is_empty() {
                return Err(BadWildmat);
            }
            items.push((negated, tokens(pattern)?));
        }
        Ok(Wildmat { items })
    }

    /// Whether `text` matches: the last element that matches decides.
    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.items
            .iter()
            .rev()
            .find(|(_, p)| matches_at(p, &chars))
            .is_some_and(|(negated, _)| !negated)
    }
}

/// Splits on commas that are not quoted by `\` nor inside a class.
fn split_elements(text: &str) -> Result<Vec<&str>, BadWildmat> {
    if text.is_empty() {
        return Err(BadWildmat);
    }
    let mut out = Vec::new();
    let (mut start, mut in_class, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if c.is_control() {
            return Err(BadWildmat);
        }
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            ',' if !in_class => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    Ok(out)
}

fn tokens(pattern: &str) -> Result<Vec<Token>, BadWildmat> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => Token::Star,
            '?' => Token::Any,
            '\\' => Token::Char(chars.next().ok_or(BadWildmat)?),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = chars.next().ok_or(BadWildmat)?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let low = if c == '\\' {
                        chars.next().ok_or(BadWildmat)?
                    } else {
                        c
                    };
                    let high = if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        match ahead.peek() {
                            Some(']') | None => low,
                            Some(_) => {
                                chars.next();
                                chars.next().ok_or(BadWildmat)?
                            }
                        }
                    } else {
                        low
                    };
                    if high < low {
                        return Err(BadWildmat);
                    }
                    ranges.push((low, high));
                }
                Token::Class { negated, ranges }
            }
            c => Token::Char(c),
        });
    }
    Ok(out)
}

/// Iterative glob matching with one backtrack point per star (linear in practice, never
/// exponential).
fn matches_at(pattern: &[Token], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(Token::Star) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(Token::Any) => true,
            Some(Token::Char(c)) => *c == text[t],
            Some(Token::Class { negated, ranges }) => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&text[t])) != *negated
            }
            None => false,
        };
        if step {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(w: &str, t: &str) -> bool {
        Wildmat::parse(w).unwrap().matches(t)
    }

    #[test]
    fn rfc_3977_examples_and_classes() {
        assert!(m("*", "comp.lang.rust"));
        assert!(m("comp.*", "comp.lang.rust"));
        assert!(!m("comp.*", "alt.comp"));
        assert!(m("a*,!*b", "abc"));
        assert!(!m("a*,!*b", "ab"));
        assert!(m("!*b,a*", "ab"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("[abc]x", "bx"));
        assert!(m("[a-c]x", "cx"));
        assert!(!m("[^a-c]x", "cx"));
        assert!(m("[]a]", "]"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("*.test", "comp.x.test"));
        assert!(m("*a*a*a*a*a*b", &format!("{}b", "a".repeat(50))));
        assert!(!m("*a*a*a*a*a*b", &"a".repeat(60)));
        assert!(m("ü*", "über"));
        assert!(m("[a,b]", ","));
    }

    #[test]
    fn malformed() {
        for bad in [
            "", ",", "a,", ",a", "a,,b", "!", "[abc", "a\\", "[z-a]", "a\tb",
        ] {
            assert_eq!(Wildmat::parse(bad), Err(BadWildmat), "{bad:?}");
        }
    }
}
