//! Any text a client sends: the parser answers with a message or a typed
//! error, never a panic, and what it accepts is JSON every strict reader
//! takes (serde_json among them) and renders to one line, a JSON object
//! that says the same as the input (less `jwt`, with `tim`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wschat_core::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    let message = match Message::parse(frame) {
        Ok(message) => message,
        Err(e) => {
            assert!(["invalid_json", "invalid_message"].contains(&e.code()));
            return;
        }
    };
    // Whatever the parser accepts, serde_json reads as an object with
    // string `usr` and `msg`: no number beyond a double, no nesting past
    // 64 levels (serde_json stops at 128).
    let input: Map<String, Value> = match serde_json::from_str(frame) {
        Ok(input) => input,
        Err(e) => panic!("accepted, but not strict JSON: {e}"),
    };
    assert_eq!(
        input.get("usr").and_then(Value::as_str),
        Some(message.usr())
    );
    assert!(input.get("msg").is_some_and(Value::is_string));
    let rendered = message.render("T");
    assert!(!rendered.contains(['\n', '\r']), "one line: {rendered:?}");
    let output: Map<String, Value> = serde_json::from_str(&rendered).expect("renders JSON");
    assert_eq!(output.get("tim"), Some(&Value::from("T")));
    assert!(!output.contains_key("jwt"));
    for (key, value) in &input {
        if key != "jwt" && key != "tim" {
            assert_eq!(output.get(key), Some(value), "field {key}");
        }
    }
    let expected_len = input.len() - usize::from(input.contains_key("jwt"))
        + usize::from(!input.contains_key("tim"));
    assert_eq!(output.len(), expected_len);
    // And the relayed frame parses again to the same message.
    let again = Message::parse(&rendered).expect("a relayed frame parses");
    assert_eq!(again.usr(), message.usr());
});
