//! Typed mail attributes: data that mailets attach to a mail as it flows through the spool.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The value of a mail attribute. Attributes are persisted with the envelope, so every variant
/// is serialisable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum AttributeValue {
    /// Text.
    String(String),
    /// A number (integers are exact up to 2^53).
    Number(f64),
    /// A flag.
    Bool(bool),
    /// Raw octets.
    Bytes(Vec<u8>),
    /// An ordered list.
    List(Vec<AttributeValue>),
    /// A map with text keys.
    Map(BTreeMap<String, AttributeValue>),
}

impl fmt::Display for AttributeValue {
    /// The text that `HasMailAttributeWithValue` compares against: strings as-is, numbers without
    /// a trailing `.0`, booleans as `true`/`false`, the rest in JSON form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::String(s) => f.write_str(s),
            AttributeValue::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                write!(f, "{}", *n as i64)
            }
            AttributeValue::Number(n) => write!(f, "{n}"),
            AttributeValue::Bool(b) => write!(f, "{b}"),
            other => f.write_str(&serde_json::to_string(other).unwrap_or_default()),
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::String(s.to_string())
    }
}

impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(s)
    }
}

impl From<bool> for AttributeValue {
    fn from(b: bool) -> Self {
        AttributeValue::Bool(b)
    }
}

impl From<f64> for AttributeValue {
    fn from(n: f64) -> Self {
        AttributeValue::Number(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut map = BTreeMap::new();
        map.insert("k".to_string(), AttributeValue::Bytes(vec![0, 255]));
        let value = AttributeValue::List(vec![
            "a".into(),
            AttributeValue::Number(3.0),
            true.into(),
            AttributeValue::Map(map),
        ]);
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(
            serde_json::from_str::<AttributeValue>(&json).unwrap(),
            value
        );
        assert_eq!(AttributeValue::Number(3.0).to_string(), "3");
        assert_eq!(AttributeValue::Number(2.5).to_string(), "2.5");
    }
}
