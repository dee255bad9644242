//! Chat messages: parsing a client's raw text frame, validating it, and
//! rendering the relayed form.
//!
//! Values other than `usr`, `msg` and `jwt` are never decoded: they are kept
//! as the exact JSON text the client sent ([`RawValue`]), so a relayed
//! message carries them unchanged (huge numbers keep every digit) and deep
//! nesting costs no stack.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::PublishError;

/// A client's message, parsed and validated but not yet stamped.
///
/// It borrows from the frame it was parsed from, so parsing copies nothing
/// but keys that contain escapes.
///
/// ```
/// use wschat_core::Message;
///
/// let m = Message::parse(r#"{"usr":"ann","msg":"hi","room":7}"#).unwrap();
/// assert_eq!(m.usr(), "ann");
/// assert_eq!(m.render("2020-08-11T22:26:58.118678679Z"),
///            r#"{"usr":"ann","msg":"hi","room":7,"tim":"2020-08-11T22:26:58.118678679Z"}"#);
/// ```
#[derive(Debug)]
pub struct Message<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    usr: Cow<'a, str>,
    jwt: Option<Cow<'a, str>>,
}

impl<'a> Message<'a> {
    /// Parses a text frame into a message.
    ///
    /// Rejects what is not one JSON object (`invalid_json`, also for a
    /// repeated key, which readers would resolve differently), and an object
    /// without a string `msg` or a non-empty string `usr`
    /// (`invalid_message`). A `jwt` that is not a string is kept as absent
    /// here and rejected as `unauthorized` when a token is required.
    ///
    /// ```
    /// use wschat_core::{Message, PublishError};
    ///
    /// assert!(matches!(Message::parse("[1]"), Err(PublishError::InvalidJson(_))));
    /// assert!(matches!(Message::parse(r#"{"usr":"","msg":"x"}"#),
    ///                  Err(PublishError::InvalidMessage(_))));
    /// ```
    pub fn parse(frame: &'a str) -> Result<Self, PublishError> {
        let Fields(fields) = serde_json::from_str(frame).map_err(|e| {
            PublishError::InvalidJson(if e.is_data() || e.is_syntax() || e.is_eof() {
                e.to_string()
            } else {
                "not a JSON object".to_owned()
            })
        })?;
        if let Some(at) = lone_surrogate(frame) {
            return Err(PublishError::InvalidJson(format!(
                "a \\u escape at byte {at} is half a surrogate pair, which is no Unicode text"
            )));
        }
        let find = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let usr = match find("usr").map(string_value) {
            None => return Err(PublishError::InvalidMessage("missing \"usr\"".into())),
            Some(None) => {
                return Err(PublishError::InvalidMessage(
                    "\"usr\" must be a string".into(),
                ));
            }
            Some(Some(usr)) if usr.is_empty() => {
                return Err(PublishError::InvalidMessage(
                    "\"usr\" must not be empty".into(),
                ));
            }
            Some(Some(usr)) => usr,
        };
        match find("msg").map(string_value) {
            None => return Err(PublishError::InvalidMessage("missing \"msg\"".into())),
            Some(None) => {
                return Err(PublishError::InvalidMessage(
                    "\"msg\" must be a string".into(),
                ));
            }
            Some(Some(_)) => {}
        }
        let jwt = find("jwt").and_then(string_value);
        Ok(Message { fields, usr, jwt })
    }

    /// The sender's name, unescaped.
    pub fn usr(&self) -> &str {
        &self.usr
    }

    /// The token the message carries, if `jwt` is present and a string.
    pub fn jwt(&self) -> Option<&str> {
        self.jwt.as_deref()
    }

    /// Renders the relayed form: every field in the order sent, `jwt`
    /// removed, `tim` set to `tim` (in place when the client sent one, last
    /// otherwise).
    ///
    /// ```
    /// use wschat_core::Message;
    ///
    /// let m = Message::parse(r#"{"tim":1,"usr":"a","jwt":"x.y.z","msg":"m"}"#).unwrap();
    /// assert_eq!(m.render("T"), r#"{"tim":"T","usr":"a","msg":"m"}"#);
    /// ```
    pub fn render(&self, tim: &str) -> String {
        let mut out = String::with_capacity(
            self.fields
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + tim.len()
                + 10,
        );
        out.push('{');
        let mut has_tim = false;
        for (key, value) in &self.fields {
            match key.as_ref() {
                "jwt" => continue,
                "tim" => {
                    has_tim = true;
                    push_field(&mut out, key, |o| push_str(o, tim));
                }
                _ => push_field(&mut out, key, |o| o.push_str(value.get())),
            }
        }
        if !has_tim {
            push_field(&mut out, "tim", |o| push_str(o, tim));
        }
        out.push('}');
        out
    }
}

fn push_field(out: &mut String, key: &str, value: impl FnOnce(&mut String)) {
    if out.len() > 1 {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
    value(out);
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut String, s: &str) {
    // serde_json's escaping is the reference; writing into a String cannot fail.
    let quoted = serde_json::to_string(s).unwrap_or_default();
    out.push_str(&quoted);
}

/// The string a raw JSON value holds, or `None` when it is not a string.
fn string_value(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        // Escapes need an owned copy.
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// Where a `\u` escape in `json` (valid JSON text) encodes half a UTF-16
/// surrogate pair without its other half, if anywhere.
///
/// Values are kept unparsed, so serde_json never decodes their strings and
/// would not see this; but relayed, such a string breaks strict readers
/// (serde_json among them), and I-JSON (RFC 7493) forbids it. In valid
/// JSON a backslash only occurs inside strings, so a scan of escapes is
/// enough.
fn lone_surrogate(json: &str) -> Option<usize> {
    let bytes = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) => match unit(i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => return Some(i),
            },
            Some(0xDC00..=0xDFFF) => return Some(i),
            Some(_) => i += 6,
            // Any other escape is two bytes (`\"`, `\\`, `\n`, ...).
            None => i += 2,
        }
    }
    None
}

/// The members of one JSON object, in order, values unparsed.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                    }
                    fields.push((key, map.next_value()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// An object key, borrowed from the frame unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(frame: &str) -> &'static str {
        Message::parse(frame).unwrap_err().code()
    }

    #[test]
    fn rejects_what_is_not_one_object() {
        for frame in [
            "",
            "nope",
            "[]",
            "1",
            "\"s\"",
            "null",
            "{} {}",
            "{\"usr\":",
            "{\"usr\":\"a\",}",
        ] {
            assert_eq!(code(frame), "invalid_json", "{frame:?}");
        }
    }

    #[test]
    fn rejects_duplicate_keys() {
        assert_eq!(code(r#"{"usr":"a","msg":"m","usr":"b"}"#), "invalid_json");
    }

    #[test]
    fn requires_string_usr_and_msg() {
        for frame in [
            r#"{"msg":"m"}"#,
            r#"{"usr":"a"}"#,
            r#"{"usr":1,"msg":"m"}"#,
            r#"{"usr":"a","msg":null}"#,
            r#"{"usr":"","msg":"m"}"#,
            r#"{"usr":["a"],"msg":"m"}"#,
        ] {
            assert_eq!(code(frame), "invalid_message", "{frame:?}");
        }
    }

    #[test]
    fn empty_msg_is_a_message() {
        assert!(Message::parse(r#"{"usr":"a","msg":""}"#).is_ok());
    }

    #[test]
    fn keeps_other_values_byte_for_byte() {
        let frame =
            r#"{"usr":"a","msg":"m","n":123456789012345678901234567890,"o":{"x": [1, 2.50]}}"#;
        let out = Message::parse(frame).unwrap().render("T");
        assert_eq!(
            out,
            r#"{"usr":"a","msg":"m","n":123456789012345678901234567890,"o":{"x": [1, 2.50]},"tim":"T"}"#
        );
    }

    #[test]
    fn unescapes_usr_and_reescapes_keys() {
        let m = Message::parse(r#"{"usr":"\u00e9\"","msg":"m","k\"ey":1}"#).unwrap();
        assert_eq!(m.usr(), "é\"");
        assert_eq!(
            m.render("T"),
            r#"{"usr":"\u00e9\"","msg":"m","k\"ey":1,"tim":"T"}"#
        );
    }

    #[test]
    fn non_string_jwt_counts_as_missing() {
        let m = Message::parse(r#"{"usr":"a","msg":"m","jwt":5}"#).unwrap();
        assert_eq!(m.jwt(), None);
        assert_eq!(m.render("T"), r#"{"usr":"a","msg":"m","tim":"T"}"#);
    }

    #[test]
    fn rejects_lone_surrogate_escapes_anywhere() {
        // Such a string is no Unicode text: strict readers (serde_json)
        // reject the whole message, so relaying it would break them.
        for frame in [
            r#"{"usr":"a","msg":"m","x":"\uD800"}"#,
            r#"{"usr":"a","msg":"m","x":"\uDC00\uD800"}"#,
            r#"{"usr":"a","msg":"m","x":{"k\udbff":1}}"#,
            r#"{"usr":"a","msg":"m","x":["\uD83D\n"]}"#,
            // The inputs cargo-fuzz found (`wschat-core/fuzz`, target `message`).
            r#"{"usr":"ann","msg":"hi","g\t+im":"y,,,,,,,,,,,,,,,,,,\uDBBB,,,,,,,,,,,,,,,,,,,,,","n":[]}"#,
            "{\"usr\":\"nn\",\"msg\":\"x\",\"vmi\":[   {\"usr\\uDBBBBNNO\":\"-ann\",\"msg\":[2,2e5111111]   \t\t\t\t}\t\t\t\t\t\t\t\t\t ]}",
        ] {
            assert_eq!(code(frame), "invalid_json", "{frame}");
        }
        for frame in [
            r#"{"usr":"a","msg":"m","x":"\uD83D\uDE00"}"#,
            r#"{"usr":"a","msg":"m","x":"\\uD800"}"#,
            r#"{"usr":"a","msg":"m","x":"\u00e9\\"}"#,
        ] {
            assert!(Message::parse(frame).is_ok(), "{frame}");
        }
    }

    #[test]
    fn deep_nesting_is_kept_without_recursion() {
        let deep = format!(
            r#"{{"usr":"a","msg":"m","d":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let out = Message::parse(&deep).unwrap().render("T");
        assert!(out.len() > 20_000);
    }
}
