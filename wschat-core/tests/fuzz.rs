//! Property tests over the frame parser, the relay path and the JWT path:
//! whatever a client sends, the core answers with a message or a typed
//! error, never a panic, and what it relays is what the archive holds and
//! a restarted room replays.
//! These run on every `cargo test`; the coverage-guided cargo-fuzz targets
//! in `wschat-core/fuzz` go deeper when run for a while (see the README).

use std::fmt;
use std::sync::Arc;

use proptest::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use wschat_core::{Archive, Frame, Jwt, JwtConfig, Message, Room, RoomConfig};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame's top-level fields: `usr`, `msg`, maybe `jwt` and `tim`, and
/// others with any JSON values, in any order.
fn frame_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    (
        ".+",
        ".*",
        prop::option::of(".*"),
        prop::option::of(json_value()),
        prop::collection::btree_map(".{0,8}", json_value(), 0..6),
    )
        .prop_flat_map(|(usr, msg, jwt, tim, extra)| {
            let mut fields = vec![("usr".to_owned(), Value::from(usr))];
            fields.push(("msg".to_owned(), Value::from(msg)));
            fields.extend(jwt.map(|jwt| ("jwt".to_owned(), Value::from(jwt))));
            fields.extend(tim.map(|tim| ("tim".to_owned(), tim)));
            fields.extend(
                extra
                    .into_iter()
                    .filter(|(k, _)| !["usr", "msg", "jwt", "tim"].contains(&k.as_str())),
            );
            Just(fields).prop_shuffle()
        })
}

/// Writes JSON text with whitespace between tokens, taken in turn from a
/// list of snippets where '.' stands for none.
struct Spaced<I: Iterator<Item = char>>(I);

impl<I: Iterator<Item = char>> Spaced<I> {
    fn space(&mut self, out: &mut String) {
        out.extend(self.0.next().filter(|c| *c != '.'));
    }

    fn members<'a, V: 'a>(
        &mut self,
        out: &mut String,
        members: impl Iterator<Item = (&'a String, V)>,
        mut value: impl FnMut(&mut Self, &mut String, V),
    ) {
        out.push('{');
        for (i, (k, v)) in members.enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.space(out);
            out.push_str(&Value::from(k.as_str()).to_string());
            self.space(out);
            out.push(':');
            self.space(out);
            value(self, out, v);
            self.space(out);
        }
        out.push('}');
    }

    fn value(&mut self, out: &mut String, v: &Value) {
        match v {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    self.value(out, item);
                    self.space(out);
                }
                out.push(']');
            }
            Value::Object(members) => self.members(out, members.iter(), Self::value),
            leaf => out.push_str(&leaf.to_string()),
        }
    }
}

/// JSON text of an object with `fields`, with whitespace from `ws` around
/// every token; with no `ws`, the compact form.
fn spaced(fields: &[(String, Value)], ws: &[String]) -> String {
    let chars = ws.iter().flat_map(|s| s.chars());
    let mut writer = Spaced(chars.chain(std::iter::repeat('.')));
    let mut out = String::new();
    writer.space(&mut out);
    writer.members(&mut out, fields.iter().map(|(k, v)| (k, v)), Spaced::value);
    writer.space(&mut out);
    out
}

/// A JSON object's members in the order the text has them.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        deserializer.deserialize_map(OrderedVisitor)
    }
}

proptest! {
    #[test]
    fn any_text_parses_or_is_rejected_with_a_code(frame in ".*") {
        match Message::parse(&frame) {
            Ok(m) => {
                let out = m.render("T");
                prop_assert!(serde_json::from_str::<&serde_json::value::RawValue>(&out).is_ok());
                prop_assert!(!out.contains(['\n', '\r']), "{out}");
            }
            Err(e) => prop_assert!(["invalid_json", "invalid_message"].contains(&e.code())),
        }
    }

    #[test]
    fn any_bytes_near_json_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let frame = format!("{{\"usr\":\"a\",\"msg\":\"m\",\"x\":{}}}", String::from_utf8_lossy(&bytes));
        let _ = Message::parse(&frame);
    }

    #[test]
    fn a_valid_message_relays_every_other_field_unchanged(
        usr in ".+",
        msg in ".*",
        extra in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..6),
    ) {
        let mut object = Map::new();
        object.insert("usr".into(), usr.clone().into());
        object.insert("msg".into(), msg.into());
        for (k, v) in extra {
            if k != "usr" && k != "msg" {
                object.insert(k, v);
            }
        }
        let frame = Value::Object(object).to_string();
        let m = Message::parse(&frame).unwrap();
        prop_assert_eq!(m.usr(), usr.as_str());
        let relayed: Map<String, Value> = serde_json::from_str(&m.render("T")).unwrap();
        // Read back with the same parser, so its float rounding cancels out.
        let mut object: Map<String, Value> = serde_json::from_str(&frame).unwrap();
        object.remove("jwt");
        object.insert("tim".into(), "T".into());
        prop_assert_eq!(relayed, object);
    }

    #[test]
    fn any_token_is_rejected_without_panic(token in ".*") {
        let jwt = Jwt::new(JwtConfig::new("secret").usr_claim("sub").validate_exp(true));
        let frame = serde_json::json!({"usr": "a", "msg": "m", "jwt": token}).to_string();
        let m = Message::parse(&frame).unwrap();
        prop_assert_eq!(jwt.authorize(&m).unwrap_err().code(), "unauthorized");
    }

    #[test]
    fn tokens_with_any_claims_never_panic(claims in prop::collection::btree_map(".*", json_value(), 0..6)) {
        let secret = "secret";
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        ).unwrap();
        let jwt = Jwt::new(JwtConfig::new(secret).usr_claim("sub").validate_exp(true));
        let frame = serde_json::json!({"usr": "a", "msg": "m", "jwt": token}).to_string();
        let _ = jwt.authorize(&Message::parse(&frame).unwrap());
    }
}

proptest! {
    // Each case writes and reopens a real archive file: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn what_clients_receive_the_archive_holds_and_a_restart_replays(
        frames in prop::collection::vec(
            (frame_fields(), prop::collection::vec("[ \t\r\n.]{0,3}", 0..8)),
            1..4,
        ),
    ) {
        // The archive is written by the room's own thread: publishing is
        // awaited.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.jsonl");
        let config = RoomConfig::default().history(8).rate_limit(None);
        let room = Room::with_log(config.clone(), Arc::new(Archive::open(&path, false).unwrap())).unwrap();
        let mut member = room.join();
        let mut relayed: Vec<Frame> = Vec::new();
        for (fields, ws) in &frames {
            let frame = spaced(fields, ws);
            let out = rt.block_on(member.publish(&frame)).unwrap();
            prop_assert_eq!(member.try_recv(), Ok(Some(out.clone())));
            let text = out.as_str();
            prop_assert!(!text.contains(['\n', '\r']), "{}", text);
            // The same fields, in order, less `jwt`, with the room's `tim`
            // in place or last: as JSON values (read back with the same
            // parser, so its float rounding cancels out) and as text, where
            // only the whitespace between tokens went.
            let Ordered(got) = serde_json::from_str(text).unwrap();
            let tim = got.iter().find(|(k, _)| k == "tim").map(|(_, v)| v.clone());
            prop_assert!(tim.as_ref().is_some_and(Value::is_string), "{}", text);
            let Ordered(mut sent) = serde_json::from_str(&frame).unwrap();
            let mut compact = fields.clone();
            for expected in [&mut sent, &mut compact] {
                expected.retain(|(k, _)| k != "jwt");
                match expected.iter_mut().find(|(k, _)| k == "tim") {
                    Some((_, v)) => *v = tim.clone().unwrap(),
                    None => expected.push(("tim".to_owned(), tim.clone().unwrap())),
                }
            }
            prop_assert_eq!(&got, &sent);
            // Line separators in strings are written as escapes (README,
            // "Publishing").
            let expected = spaced(&compact, &[])
                .replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029")
                .replace('\u{85}', "\\u0085");
            prop_assert_eq!(text, expected);
            relayed.push(out);
        }
        // The archive is one line per relayed message, and a restarted
        // room replays exactly those.
        let lines: String = relayed.iter().map(|f| format!("{f}\n")).collect();
        prop_assert_eq!(std::fs::read_to_string(&path).unwrap(), lines);
        drop((member, room));
        let restarted = Room::with_log(config, Arc::new(Archive::open(&path, false).unwrap())).unwrap();
        prop_assert_eq!(&restarted.history(), &relayed);
        let mut newcomer = restarted.join();
        for frame in &relayed {
            prop_assert_eq!(newcomer.try_recv(), Ok(Some(frame.clone())));
        }
    }
}
