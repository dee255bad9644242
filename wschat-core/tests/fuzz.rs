//! Property tests over the frame parser and the JWT path: whatever a client
//! sends, the core answers with a message or a typed error, never a panic.
//! These run on every `cargo test`; the coverage-guided cargo-fuzz targets
//! in `wschat-core/fuzz` go deeper when run for a while (see the README).

use proptest::prelude::*;
use serde_json::{Map, Value};
use wschat_core::{Jwt, JwtConfig, Message};

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

proptest! {
    #[test]
    fn any_text_parses_or_is_rejected_with_a_code(frame in ".*") {
        match Message::parse(&frame) {
            Ok(m) => {
                let out = m.render("T");
                prop_assert!(serde_json::from_str::<&serde_json::value::RawValue>(&out).is_ok());
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
