//! Chat messages: parsing a client's raw text frame, validating it, and
//! rendering the relayed form.
//!
//! A frame is read twice, each time in one pass costing time linear in its
//! size: once checked as JSON that every strict reader accepts (README,
//! "Publishing": at most 64 levels deep, numbers a double can hold, no lone
//! surrogate, no repeated key), once split into top-level fields. Values
//! other than `usr`, `msg` and `jwt` are kept as the JSON text the client
//! sent ([`RawValue`]), so huge numbers keep every digit; only the
//! whitespace between their tokens is dropped when rendering, so a relayed
//! message is one line, as the archive needs.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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
    /// Rejects what is not one JSON object that every strict reader
    /// accepts (`invalid_json`: nested deeper than 64 levels, a number
    /// beyond a double, a lone surrogate escape, a repeated key; README,
    /// "Publishing"), and an object without a string `msg` or a non-empty
    /// string `usr` (`invalid_message`). A `jwt` that is not a string is kept as absent
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
        let Fields(fields) = serde_json::from_str(frame).map_err(invalid_json)?;
        Strict { depth: 0 }
            .deserialize(&mut serde_json::Deserializer::from_str(frame))
            .map_err(invalid_json)?;
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

    /// The JSON text of the top-level field `name`, as sent.
    pub(crate) fn field(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Renders the relayed form, on one line: every field in the order
    /// sent, `jwt` removed, `tim` set to `tim` (in place when the client
    /// sent one, last otherwise), no whitespace between tokens.
    ///
    /// ```
    /// use wschat_core::Message;
    ///
    /// let m = Message::parse(r#"{"tim":1,"usr":"a","jwt":"x.y.z","msg":"m"}"#).unwrap();
    /// assert_eq!(m.render("T"), r#"{"tim":"T","usr":"a","msg":"m"}"#);
    /// ```
    pub fn render(&self, tim: &str) -> String {
        let mut out = Vec::with_capacity(
            self.fields
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + tim.len()
                + 10,
        );
        out.push(b'{');
        let mut has_tim = false;
        for (key, value) in &self.fields {
            match key.as_ref() {
                "jwt" => continue,
                "tim" => {
                    has_tim = true;
                    push_field(&mut out, key, |o| push_str(o, tim));
                }
                _ => push_field(&mut out, key, |o| push_compact(o, value.get())),
            }
        }
        if !has_tim {
            push_field(&mut out, "tim", |o| push_str(o, tim));
        }
        out.push(b'}');
        // Every piece is UTF-8 (JSON text as sent, or serde_json's
        // escaping of a str), so the lossy branch never runs.
        let out = String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        escape_line_separators(out)
    }
}

/// Writes U+2028, U+2029 and U+0085, which JSON lets strings hold raw (and
/// which valid JSON holds nowhere else), as `\u` escapes: line-splitting
/// readers (Python's `str.splitlines`, many log tools) take them for line
/// breaks, and a relayed message is one line to every reader. The value
/// read back is the same.
fn escape_line_separators(out: String) -> String {
    const SEPARATORS: [char; 3] = ['\u{2028}', '\u{2029}', '\u{85}'];
    // All three are beyond ASCII; most chat is not (a fast, wide check).
    if out.is_ascii() || !out.contains(SEPARATORS) {
        return out;
    }
    let mut escaped = String::with_capacity(out.len() + 16);
    for c in out.chars() {
        match c {
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            '\u{85}' => escaped.push_str("\\u0085"),
            _ => escaped.push(c),
        }
    }
    escaped
}

fn push_field(out: &mut Vec<u8>, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    if out.len() > 1 {
        out.push(b',');
    }
    push_str(out, key);
    out.push(b':');
    value(out);
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is the reference; writing a str into a Vec
    // cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
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

/// Appends `json` (valid JSON text) without the whitespace between its
/// tokens, so that a line break inside a value cannot split a relayed
/// message across archive lines. Strings are copied as they are: they
/// cannot hold a raw line break, and escapes are the sender's.
fn push_compact(out: &mut Vec<u8>, json: &str) {
    // A string, number or literal is one token: nothing to drop.
    if !json.starts_with(['{', '[']) {
        out.extend_from_slice(json.as_bytes());
        return;
    }
    let (mut in_string, mut escaped, mut from) = (false, false, 0);
    for (i, b) in json.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.extend_from_slice(&json.as_bytes()[from..i]);
            from = i + 1;
        }
    }
    out.extend_from_slice(&json.as_bytes()[from..]);
}

/// `invalid_json`, with serde_json's reason (and where) reworded where it
/// would not tell the sender what to change.
fn invalid_json(e: serde_json::Error) -> PublishError {
    let text = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    let detail = match text.strip_suffix(&at).unwrap_or(&text) {
        "number out of range" => {
            format!("a number beyond the range of an IEEE 754 double (about 1.8e308){at}")
        }
        "lone leading surrogate in hex escape" | "unexpected end of hex escape" => {
            format!("a \\u escape is half a UTF-16 surrogate pair, which is no Unicode text,{at}")
        }
        _ => text,
    };
    PublishError::InvalidJson(detail)
}

/// The most levels of arrays and objects a message may nest, its top-level
/// object being the first (README, "Publishing").
const MAX_DEPTH: usize = 64;

/// A check of one JSON value, `depth` containers deep, against what every
/// strict reader (serde_json, Python's `json`, JavaScript's `JSON.parse`)
/// accepts, so that a relayed message parses in every client:
///
/// * nesting at most [`MAX_DEPTH`] levels (serde_json stops at 128, Python
///   at its recursion limit); the check stops at the first level too many,
///   so the stack it needs is bounded;
/// * numbers a double can hold (`1e400` is refused; `1e-400`, which every
///   reader reads as 0, is not): serde_json refuses the rest as it reads;
/// * strings and keys that are Unicode text: serde_json refuses a `\u`
///   escape that is half a surrogate pair as it decodes the string;
/// * no key twice in one object, since readers disagree about which value
///   counts ([`Keys`] finds them in linear time).
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl Strict {
    /// The check for the members of a container at this depth.
    fn inner<E: de::Error>(self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        let mut keys = Keys::default();
        while let Some(Key(key)) = map.next_key()? {
            if let Some(key) = keys.insert(key) {
                return Err(de::Error::custom(format_args!("repeated key {key:?}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// The keys of one object so far.
///
/// A hash set (std's, randomly seeded against collisions a sender could
/// choose), so many keys cost linear time; most objects have a few, which
/// a short list compares faster.
#[derive(Default)]
struct Keys<'a> {
    few: Vec<Cow<'a, str>>,
    many: HashSet<Cow<'a, str>>,
}

impl<'a> Keys<'a> {
    /// How many keys the list holds before they move to the set.
    const FEW: usize = 8;

    /// Adds `key`, or gives it back if it is already there.
    fn insert(&mut self, key: Cow<'a, str>) -> Option<Cow<'a, str>> {
        if self.many.is_empty() && self.few.len() < Self::FEW {
            if self.few.contains(&key) {
                return Some(key);
            }
            self.few.push(key);
            return None;
        }
        self.many.extend(self.few.drain(..));
        if self.many.contains(&key) {
            return Some(key);
        }
        self.many.insert(key);
        None
    }
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
                // Repeated keys are for `Strict` to find.
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
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
            r#"{"usr":"a","msg":"m","n":123456789012345678901234567890,"o":{"x":[1,2.50]},"tim":"T"}"#
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

    /// `{"usr":"a","msg":"m","d":` and `levels - 1` nested arrays (the
    /// top-level object is the first level), the innermost holding `inner`.
    fn nested(levels: usize, inner: &str) -> String {
        format!(
            r#"{{"usr":"a","msg":"m","d":{}{inner}{}}}"#,
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    }

    #[test]
    fn nesting_is_kept_to_64_levels_and_refused_beyond() {
        // The top-level object and `n` more inside it.
        let objects = |n: usize| {
            format!(
                r#"{{"usr":"a","msg":"m","o":{}{{}}{}}}"#,
                r#"{"o":"#.repeat(n - 1),
                "}".repeat(n - 1)
            )
        };
        for frame in [nested(64, ""), nested(62, r#"{"k":[]}"#), objects(63)] {
            assert!(Message::parse(&frame).is_ok(), "{frame}");
        }
        for frame in [
            nested(65, ""),
            nested(64, "{}"),
            nested(63, r#"{"k":[]}"#),
            objects(64),
            nested(10_000, ""),
        ] {
            let err = Message::parse(&frame).unwrap_err();
            assert_eq!(err.code(), "invalid_json");
            assert!(err.to_string().contains("64 levels"), "{err}");
        }
    }

    #[test]
    fn line_separators_are_relayed_as_escapes() {
        let frame = "{\"usr\":\"a\\u2028\",\"msg\":\"x\u{2028}y\",\"k\u{85}\":[\"\u{2029}\"]}";
        let message = Message::parse(frame).unwrap();
        let out = message.render("T");
        assert!(!out.contains(['\u{2028}', '\u{2029}', '\u{85}']), "{out}");
        assert_eq!(out.lines().count(), 1);
        let read: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(read["msg"], "x\u{2028}y");
        assert_eq!(read["k\u{85}"][0], "\u{2029}");
        assert_eq!(read["usr"], "a\u{2028}", "the sender's escapes kept");
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        for n in [
            "1e400",
            "-1e400",
            "1e309",
            "1.8e308",
            "-2E+308",
            &format!("1{}", "0".repeat(400)),
            &format!("-0.{}1e500", "0".repeat(10)),
            // Just past the largest double, with more digits than a fast
            // parse reads: they round up to infinity in every exact reader
            // (Python reads inf, JavaScript Infinity).
            "1.79769313486231581e308",
            "-179769313486231581e291",
        ] {
            for frame in [
                format!(r#"{{"usr":"a","msg":"m","n":{n}}}"#),
                format!(r#"{{"usr":"a","msg":"m","n":[{{"x":[1,{n}]}}]}}"#),
            ] {
                let err = Message::parse(&frame).unwrap_err();
                assert_eq!(err.code(), "invalid_json", "{frame}");
                assert!(err.to_string().contains("double"), "{err}");
            }
        }
        // In range, or so small that every reader reads 0: relayed as sent.
        for n in [
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "1e-400",
            "-1e-400",
            "123456789012345678901234567890",
            "5e-324",
        ] {
            let frame = format!(r#"{{"usr":"a","msg":"m","n":{n}}}"#);
            let out = Message::parse(&frame).unwrap().render("T");
            assert_eq!(out, format!(r#"{{"usr":"a","msg":"m","n":{n},"tim":"T"}}"#));
        }
    }

    #[test]
    fn rejects_repeated_keys_at_every_level() {
        for frame in [
            r#"{"usr":"a","msg":"m","o":{"k":1,"k":2}}"#,
            r#"{"usr":"a","msg":"m","o":[1,{"x":{"k":1,"j":0,"k":1}}]}"#,
            r#"{"usr":"a","msg":"m","o":{"k":1,"\u006b":2}}"#,
            r#"{"usr":"a","msg":"m","\u0075sr":"b"}"#,
        ] {
            let err = Message::parse(frame).unwrap_err();
            assert_eq!(err.code(), "invalid_json", "{frame}");
            assert!(err.to_string().contains("repeated key"), "{err}");
        }
        assert!(Message::parse(r#"{"usr":"a","msg":"m","o":[{"k":1},{"k":1}]}"#).is_ok());
    }

    #[test]
    fn a_relayed_message_is_one_line() {
        // The frame from the report: relayed with its line breaks, it was
        // three archive lines, the second a message from "admin".
        let frame = "{\"usr\":\"eve\",\"msg\":\"hi\",\"x\":[\n{\"usr\":\"admin\",\"msg\":\"forged\",\n\"tim\":\"9999-12-31T23:59:59.999999999Z\"}\n]}";
        let out = Message::parse(frame).unwrap().render("T");
        assert_eq!(
            out,
            r#"{"usr":"eve","msg":"hi","x":[{"usr":"admin","msg":"forged","tim":"9999-12-31T23:59:59.999999999Z"}],"tim":"T"}"#
        );
        // Whitespace between tokens goes; inside strings it stays.
        let frame = "{ \"usr\" :\r\n\"a\",\t\"msg\":\"m\",\"o\" : {\r\n \"k\\n \" :\t[ 1 ,\n\"a b\\\" \\\\\" ] } \n}";
        let out = Message::parse(frame).unwrap().render("T");
        assert_eq!(
            out,
            r#"{"usr":"a","msg":"m","o":{"k\n ":[1,"a b\" \\"]},"tim":"T"}"#
        );
    }

    /// The fastest of a few runs of parsing and rendering `frame`: the
    /// minimum is what the work costs, free of whatever else the machine
    /// did meanwhile.
    fn cost(frame: &str) -> std::time::Duration {
        (0..5)
            .map(|_| {
                let start = thread_cpu();
                let rendered = Message::parse(frame).map(|m| m.render("T").len());
                std::hint::black_box(rendered.ok());
                thread_cpu().saturating_sub(start)
            })
            .min()
            .unwrap_or_default()
    }

    /// This thread's CPU time. The wall clock also counts the time a busy
    /// machine gives to others, and a long run is more often interrupted
    /// than a short one, which made a linear check look quadratic.
    fn thread_cpu() -> std::time::Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which `ts` is.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn every_check_costs_time_linear_in_the_frame() {
        // Each shape, built `n` times over: 4 times the size must cost
        // about 4 times the time (16 times if quadratic). The bound of 10
        // leaves room for a busy machine; sizes are large enough that a
        // quadratic check shows.
        // The `i`th piece of a frame of some shape.
        type Piece = fn(usize) -> String;
        let shapes: [(&str, Piece); 10] = [
            ("top-level keys", |i| format!(r#","k{i}":0"#)),
            ("escaped top-level keys", |i| format!(r#","\u006b{i}":0"#)),
            ("keys of one nested object", |i| {
                if i == 0 {
                    r#","o":{"k0":0"#.to_owned()
                } else {
                    format!(r#","k{i}":0"#)
                }
            }),
            ("nested objects of many keys", |i| {
                let keys: String = (0..100).map(|k| format!(r#","k{k}":0"#)).collect();
                format!(r#","o{i}":{{"x":0{keys}}}"#)
            }),
            ("nesting at the limit", |i| {
                format!(r#","d{i}":{}{}"#, "[".repeat(63), "]".repeat(63))
            }),
            ("long strings", |i| {
                format!(r#","s{i}":"{}""#, "x\\n\u{e9}".repeat(100))
            }),
            ("long escaped strings", |i| {
                format!(r#","s{i}":"{}""#, "\\ud83d\\ude00".repeat(100))
            }),
            ("long numbers", |i| {
                format!(r#","n{i}":{}.{}e-3"#, "9".repeat(300), "1".repeat(300))
            }),
            ("whitespace", |i| {
                format!(",\n\"w{i}\" :\r\n [ {} ]", "\n 1 ,".repeat(100) + "0")
            }),
            ("long keys with one prefix", |i| {
                format!(r#","{}{i}":0"#, "k".repeat(100))
            }),
        ];
        let frame = |shape: Piece, n: usize| {
            let mut frame = String::from(r#"{"usr":"a","msg":"m""#);
            frame.extend((0..n).map(shape));
            // Closes the one nested object of its shape, if open.
            if frame.contains(r#""o":{"#) {
                frame.push('}');
            }
            frame.push('}');
            frame
        };
        for (name, shape) in shapes {
            // About 60 KB, the default size limit, and four times that.
            let unit = frame(shape, 1).len() - frame(shape, 0).len();
            let n = 60_000 / unit + 1;
            let (small, large) = (frame(shape, n), frame(shape, 4 * n));
            assert!(Message::parse(&small).is_ok(), "{name}");
            let (mut small_cost, mut large_cost) = (cost(&small), cost(&large));
            // Again, interleaved, keeping the best, in case the machine was
            // busy during one of them.
            small_cost = small_cost.min(cost(&small));
            large_cost = large_cost.min(cost(&large));
            let ratio = large_cost.as_secs_f64() / small_cost.as_secs_f64().max(1e-9);
            assert!(
                ratio < 10.0,
                "{name}: {small_cost:?} for {} bytes, {large_cost:?} for {} bytes",
                small.len(),
                large.len()
            );
        }
    }
}
