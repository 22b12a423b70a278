//! James 2.3.2's Paul Graham-style Bayesian analyzer (`org.apache.james.util.BayesianAnalyzer`),
//! with its token rules, probabilities and thresholds, so that a corpus James trained scores
//! the same here:
//!
//! * Tokens are runs of letters, digits, `-`, `$`, `€`, `!` and `'`; a `.` or `,` between two
//!   digits stays inside (`1,000.50`); tokens of digits only are dropped. The words following
//!   `From:`, `Return-Path:`, `Subject:` and `To:` on the same line are prefixed with it
//!   (`Subject:FREE`), and a token with its prefix must be under 90 characters.
//! * A token's probability: ham occurrences count double; under 5 (weighted) occurrences it
//!   is 0.4; else `spam_freq / (ham_freq + spam_freq)` bounded to [0.01, 0.99] (0.0001/0.0002
//!   when only seen in ham, 0.9999/0.9998 when only in spam).
//! * A message's probability combines its 15 most interesting tokens (those farthest from
//!   0.5), and more while they stay at least 0.46 away. An unknown token takes the strongest
//!   of its "degenerate" forms (lower case, capitalised, fewer trailing `!`) or 0.4.

use std::collections::{HashMap, HashSet};

use mailroom_store::db::TokenCounts;

const MAX_INTERESTING_TOKENS: usize = 15;
const INTERESTINGNESS_THRESHOLD: f64 = 0.46;
const DEFAULT_TOKEN_PROBABILITY: f64 = 0.4;
/// The header fields whose words are told apart from the same words elsewhere.
const PREFIXES: [&str; 4] = ["From:", "Return-Path:", "Subject:", "To:"];

fn is_digit(c: char) -> bool {
    // Java's Character.isDigit: decimal digits of any script.
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn is_token_char(c: char) -> bool {
    c.is_alphabetic() || matches!(c, '-' | '$' | '\u{20AC}' | '!' | '\'')
}

/// James's `nextToken`: the next token, with a trailing `\n` when it ended a line; `None`
/// at the end.
fn next_token(text: &[char], pos: &mut usize) -> Option<String> {
    let mut token = String::new();
    let mut previous_was_digit = false;
    let mut found = false;
    while *pos < text.len() {
        let c = text[*pos];
        *pos += 1;
        if c == ':' {
            let with_colon = format!("{token}:");
            if PREFIXES.contains(&with_colon.as_str()) {
                return Some(with_colon);
            }
        }
        if is_token_char(c) {
            found = true;
            previous_was_digit = false;
            token.push(c);
        } else if is_digit(c) {
            found = true;
            previous_was_digit = true;
            token.push(c);
        } else if previous_was_digit && (c == '.' || c == ',') {
            // Inside a number only when a digit follows (which is then taken too).
            match text.get(*pos) {
                Some(&next) if is_digit(next) => {
                    *pos += 1;
                    token.push(c);
                    token.push(next);
                }
                _ => break,
            }
        } else if c == '\r' {
        } else if c == '\n' {
            found = true;
            token.push(c);
            break;
        } else if found {
            break;
        }
    }
    found.then_some(token)
}

/// Every token of `text` in order, prefixed as James prefixes them.
fn for_each_token(text: &str, mut each: impl FnMut(String)) {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let mut header = String::new();
    while let Some(mut token) = next_token(&chars, &mut pos) {
        let ending_line = token.ends_with('\n');
        if ending_line {
            token.pop();
        }
        let length = header.chars().count() + token.chars().count();
        if !token.is_empty() && length < 90 && !token.chars().all(is_digit) {
            if PREFIXES.contains(&token.as_str()) {
                header = token;
                if !ending_line {
                    continue;
                }
                token = header.clone();
            }
            each(format!("{header}{token}"));
        }
        if ending_line {
            header.clear();
        }
    }
}

/// How often each token occurs in `text` (what a training adds to a corpus).
pub fn token_occurrences(text: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for_each_token(text, |t| *counts.entry(t).or_insert(0) += 1);
    counts
}

/// The distinct tokens of `text` (what is scored).
pub fn tokens(text: &str) -> HashSet<String> {
    let mut set = HashSet::new();
    for_each_token(text, |t| {
        set.insert(t);
    });
    set
}

/// The probability of each token known to the corpus.
#[derive(Clone, Debug, Default)]
pub struct Corpus(HashMap<String, f64>);

impl Corpus {
    /// Builds the corpus from trained counts.
    pub fn build(counts: &TokenCounts) -> Corpus {
        let tokens: HashSet<&String> = counts.ham.keys().chain(counts.spam.keys()).collect();
        Corpus(
            tokens
                .into_iter()
                .map(|t| (t.clone(), probability(counts, t)))
                .collect(),
        )
    }

    /// How many tokens it knows.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it knows no token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The probability that `text` is spam, in [0, 1].
    pub fn spam_probability(&self, text: &str) -> f64 {
        // (strength, token, probability) of each token, strongest first.
        let mut scored: Vec<(f64, String, f64)> = tokens(text)
            .into_iter()
            .map(|token| {
                let p = self.token_probability(&token);
                ((0.5 - p).abs(), token, p)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let (mut p, mut np) = (1.0_f64, 1.0_f64);
        let mut last_strength = 0.5;
        for (i, (strength, _, probability)) in scored.into_iter().enumerate() {
            if i >= MAX_INTERESTING_TOKENS && last_strength < INTERESTINGNESS_THRESHOLD {
                break;
            }
            last_strength = strength;
            p *= probability;
            np *= 1.0 - probability;
        }
        p / (p + np)
    }

    /// A token's probability: its own, else its strongest degenerate form's, else 0.4.
    fn token_probability(&self, token: &str) -> f64 {
        if let Some(p) = self.0.get(token) {
            return *p;
        }
        let mut best = DEFAULT_TOKEN_PROBABILITY;
        let mut best_strength = (0.5 - DEFAULT_TOKEN_PROBABILITY).abs();
        for form in degenerate_forms(token) {
            if let Some(p) = self.0.get(&form) {
                if (0.5 - p).abs() > best_strength {
                    best_strength = (0.5 - p).abs();
                    best = *p;
                }
            }
        }
        best
    }
}

/// James's `computeProbability` for one token.
fn probability(counts: &TokenCounts, token: &str) -> f64 {
    let (mut min, mut max) = (0.01, 0.99);
    let ham = counts.ham.get(token).map(|n| 2.0 * f64::from(*n));
    let spam = counts.spam.get(token).map(|n| f64::from(*n));
    if let (Some(h), None) = (ham, spam) {
        min = if h > 20.0 { 0.0001 } else { 0.0002 };
    }
    if let (None, Some(s)) = (ham, spam) {
        max = if s > 10.0 { 0.9999 } else { 0.9998 };
    }
    let (ham, spam) = (ham.unwrap_or(0.0), spam.unwrap_or(0.0));
    if ham + spam < 5.0 {
        return DEFAULT_TOKEN_PROBABILITY;
    }
    // James divides by a zero message count too (∞ or NaN); a corpus with no message of a
    // kind has frequency 1 for a token it holds anyway, 0 otherwise.
    let frequency = |factor: f64, messages: u32| match messages {
        0 if factor > 0.0 => 1.0,
        0 => 0.0,
        n => (factor / f64::from(n)).min(1.0),
    };
    let spam_freq = frequency(spam, counts.spam_messages);
    let ham_freq = frequency(ham, counts.ham_messages);
    (spam_freq / (ham_freq + spam_freq)).clamp(min, max)
}

/// James's `buildDegenerated`: lower-cased and capitalised forms, then the same with one
/// trailing `!` fewer, and so on; a prefixed token also tries its unprefixed forms.
fn degenerate_forms(full: &str) -> Vec<String> {
    let (header, token): (&str, Vec<char>) = match full.find(':') {
        Some(at) => (&full[..at], full[at..].chars().collect()),
        None => ("", full.chars().collect()),
    };
    let mut forms = Vec::new();
    let mut add = |form: String| {
        forms.push(format!("{header}{form}"));
        if !header.is_empty() {
            forms.push(form);
        }
    };
    let mut end = token.len();
    while end > 0 {
        let part: String = token[..end].iter().collect();
        let lower = part.to_lowercase();
        if part != lower {
            add(lower);
        }
        if end > 1 && token[0].is_ascii_uppercase() {
            let rest: String = token[1..end].iter().collect();
            add(format!("{}{}", token[0], rest.to_lowercase()));
        }
        if token[end - 1] != '!' {
            break;
        }
        end -= 1;
        add(token[..end].iter().collect());
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<String> {
        let mut v = Vec::new();
        for_each_token(text, |t| v.push(t));
        v
    }

    #[test]
    fn tokenizes_as_james() {
        assert_eq!(
            all("Subject: FREE money!!\r\nPay $1,000.50 now, 2024 it's 3.x\n"),
            [
                "Subject:FREE",
                "Subject:money!!",
                "Pay",
                "$1,000.50",
                "now",
                "it's",
                "x"
            ]
        );
        // Digits only: dropped; the prefix ends with the line.
        assert_eq!(all("To: 12345 bob\nbob"), ["To:bob", "bob"]);
        // A prefix alone on its line prefixes nothing.
        assert_eq!(all("Subject:\nword"), ["word"]);
        // Other header names are plain tokens, their colon dropped.
        assert_eq!(all("X-Mailer: Foo"), ["X-Mailer", "Foo"]);
        // Tokens of 90 characters or more (with their prefix) are dropped.
        let long = "a".repeat(95);
        assert_eq!(all(&format!("{long} short")), ["short"]);
        assert!(all("").is_empty());
        assert_eq!(token_occurrences("a b a\na")["a"], 3);
    }

    #[test]
    fn degenerate_forms_as_james() {
        assert_eq!(
            degenerate_forms("FREE!!"),
            ["free!!", "Free!!", "FREE!", "free!", "Free!", "FREE", "free", "Free"]
        );
        // With a prefix: the prefixed form and the bare one (the colon stays with the word,
        // as in James).
        assert_eq!(degenerate_forms("Subject:Win"), ["Subject:win", ":win"]);
        assert!(degenerate_forms("plain").is_empty());
    }

    fn counts(ham: &[(&str, u32)], spam: &[(&str, u32)], h: u32, s: u32) -> TokenCounts {
        TokenCounts {
            ham: ham.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            spam: spam.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            ham_messages: h,
            spam_messages: s,
        }
    }

    #[test]
    fn token_probabilities_and_thresholds() {
        let c = counts(
            &[("meeting", 20), ("rare", 1), ("both", 5)],
            &[("viagra", 20), ("few", 4), ("both", 5)],
            10,
            10,
        );
        // Only in ham, weighted 40 > 20: the lowest bound.
        assert_eq!(probability(&c, "meeting"), 0.0001);
        // Only in spam, 20 > 10.
        assert_eq!(probability(&c, "viagra"), 0.9999);
        // Under 5 weighted occurrences.
        assert_eq!(probability(&c, "rare"), 0.4);
        assert_eq!(probability(&c, "few"), 0.4);
        // ham 2×5/10 = 1.0, spam 5/10 = 0.5: 0.5 / 1.5.
        assert!((probability(&c, "both") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(probability(&c, "unknown"), 0.4);
        // Only in spam, 6 ≤ 10: 0.9998.
        let c = counts(&[], &[("x", 6)], 0, 3);
        assert_eq!(probability(&c, "x"), 0.9998);
    }

    #[test]
    fn scores_spam_high_and_ham_low() {
        let mut c = TokenCounts::default();
        let spam = "Buy cheap pills now! Cheap viagra, best price, click here";
        let ham = "Hello team, the meeting notes and the project schedule are attached";
        for _ in 0..5 {
            for (t, n) in token_occurrences(spam) {
                *c.spam.entry(t).or_insert(0) += n;
            }
            for (t, n) in token_occurrences(ham) {
                *c.ham.entry(t).or_insert(0) += n;
            }
        }
        c.spam_messages = 5;
        c.ham_messages = 5;
        let corpus = Corpus::build(&c);
        assert!(corpus.spam_probability("cheap pills, click here") > 0.99);
        assert!(corpus.spam_probability("the meeting schedule") < 0.01);
        // Degenerate forms: CHEAP!!! scores as cheap.
        assert!(corpus.spam_probability("CHEAP!!! PILLS") > 0.99);
        // Nothing known: every token is 0.4.
        let p = Corpus::default().spam_probability("unknown words");
        assert!((p - (0.16 / (0.16 + 0.36))).abs() < 1e-12, "{p}");
    }
}
