//! The summary: a table for people, JSON for scripts.

use serde_json::{Map, Value};

/// Named figures in the order they were added.
pub struct Report {
    mode: &'static str,
    json: bool,
    rows: Vec<(&'static str, Value)>,
}

impl Report {
    pub fn new(mode: &'static str, json: bool) -> Self {
        Report {
            mode,
            json,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        self.rows.push((name, value.into()));
        self
    }

    pub fn print(&self) {
        if self.json {
            let mut object = Map::new();
            object.insert("mode".into(), self.mode.into());
            for (k, v) in &self.rows {
                object.insert((*k).into(), v.clone());
            }
            println!("{}", Value::Object(object));
            return;
        }
        println!("{:<24} {}", "mode", self.mode);
        for (k, v) in &self.rows {
            let shown = match v {
                Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or_default()),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("{k:<24} {shown}");
        }
    }
}

/// Rounds to one decimal place for the JSON form.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
