//! Any token a client sends: it is rejected as `unauthorized` (nobody can
//! guess the secret), never a panic, whatever the options.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat_core::{Jwt, JwtConfig, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&options, token)) = data.split_first() else {
        return;
    };
    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    let mut config = JwtConfig::new("fuzzing secret").validate_exp(options & 1 != 0);
    if options & 2 != 0 {
        config = config.usr_claim("sub");
    }
    let jwt = Jwt::new(config);
    let frame = serde_json::json!({"usr": "a", "msg": "m", "jwt": token}).to_string();
    let message = Message::parse(&frame).expect("a valid frame");
    let err = jwt.authorize(&message).expect_err("no token can be valid");
    assert_eq!(err.code(), "unauthorized");
});
