//! Moderation (README, "Moderation"): retractions and mutes, derived from
//! the log.
//!
//! A moderation action is a message like any other, with a `mod` object,
//! so it is ordered, archived and relayed by the log like any other: every
//! instance that relays it, and every restart that reads the log again,
//! derives the same state from it. The room applies an action as it relays
//! it ([`Retractions`] and [`Mutes`]); at start it reads the actions back
//! from its logs ([`Rebuild`]).
//!
//! Both are bounded: a mute ends [`Action::Mute`]'s `seconds` after the
//! action's own `tim` (not after the moment it is read, so a restart
//! computes the same end), expired mutes are dropped, and at most
//! [`MAX_MUTES`] names and [`MAX_RETRACTIONS`] retractions are kept (the
//! oldest go first).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::clock::{format_tim, parse_tim};
use crate::error::PublishError;
use crate::frame::Frame;
use crate::message::Message;

/// The most retractions kept; beyond it the retraction of the oldest
/// message is forgotten (that message is replayed again).
pub const MAX_RETRACTIONS: usize = 100_000;
/// The most names muted at once; beyond it the mute that ends first is
/// dropped.
pub const MAX_MUTES: usize = 10_000;
/// The longest mute, in seconds: ten years of 365 days.
pub const MAX_MUTE_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// What a moderator does: the `mod` object of a message.
///
/// ```
/// use wschat_core::Action;
///
/// let tim = "2020-08-11T22:26:58.118678679Z".parse().unwrap();
/// assert_eq!(Action::parse(r#"{"retract":"2020-08-11T22:26:58.118678679Z"}"#),
///            Ok(Action::Retract { tim }));
/// assert_eq!(Action::parse(r#"{"mute":"spam","seconds":60}"#),
///            Ok(Action::Mute { usr: "spam".into(), seconds: 60 }));
/// assert_eq!(Action::parse(r#"{"mute":"spam"}"#).unwrap_err().code(), "invalid_message");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// `{"retract": TIM}`: the message with that `tim` is never replayed
    /// again.
    Retract {
        /// The `tim` of the retracted message.
        tim: DateTime<Utc>,
    },
    /// `{"mute": USR, "seconds": N}`: messages from `usr` are refused with
    /// `muted` for `seconds` after the action's `tim`; 0 lifts a mute.
    Mute {
        /// The muted name.
        usr: String,
        /// How long, from the action's `tim`.
        seconds: u64,
    },
}

impl Action {
    /// Reads a `mod` object (its JSON text); `invalid_message` with the
    /// reason when it is not exactly one of the two actions.
    pub fn parse(json: &str) -> Result<Action, PublishError> {
        let invalid = |why: &str| PublishError::InvalidMessage(format!("\"mod\": {why}"));
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(json) else {
            return Err(invalid("must be an object"));
        };
        let has = |key: &str| fields.contains_key(key);
        match fields.len() {
            1 if has("retract") => {
                let tim = fields["retract"]
                    .as_str()
                    .and_then(|t| parse_tim(t).ok())
                    .ok_or_else(|| invalid("\"retract\" must be the \"tim\" of a message"))?;
                Ok(Action::Retract { tim })
            }
            2 if has("mute") && has("seconds") => {
                let usr = match fields["mute"].as_str() {
                    Some(usr) if !usr.is_empty() => usr.to_owned(),
                    _ => return Err(invalid("\"mute\" must be a non-empty name")),
                };
                let seconds = fields["seconds"]
                    .as_u64()
                    .filter(|s| *s <= MAX_MUTE_SECONDS)
                    .ok_or_else(|| {
                        invalid(&format!(
                            "\"seconds\" must be a whole number from 0 to {MAX_MUTE_SECONDS}"
                        ))
                    })?;
                Ok(Action::Mute { usr, seconds })
            }
            _ => Err(invalid(
                "must be {\"retract\": TIM} or {\"mute\": USR, \"seconds\": N}",
            )),
        }
    }

    /// [`parse`](Self::parse) for a value already split out of a message.
    pub(crate) fn from_raw(raw: &RawValue) -> Result<Action, PublishError> {
        Action::parse(raw.get())
    }
}

/// A moderation action as relayed: who acted, when, and what.
///
/// ```
/// use wschat_core::{Action, Frame, Moderated};
///
/// let frame = Frame::from(r#"{"usr":"mo","msg":"muted spam","mod":{"mute":"spam","seconds":60},"tim":"2020-08-11T22:26:58.118678679Z"}"#.to_owned());
/// let acted = Moderated::of(&frame).unwrap();
/// assert_eq!(acted.moderator(), "mo");
/// assert_eq!(acted.action(), &Action::Mute { usr: "spam".into(), seconds: 60 });
/// assert_eq!(acted.tim().to_rfc3339(), "2020-08-11T22:26:58.118678679+00:00");
/// assert!(Moderated::of(&Frame::from(r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:26:58Z"}"#.to_owned())).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderated {
    moderator: String,
    tim: DateTime<Utc>,
    action: Action,
}

impl Moderated {
    /// The action a relayed message carries, if it is one (a message with
    /// a valid `mod` object and a `tim`).
    pub fn of(frame: &Frame) -> Option<Moderated> {
        // Relayed messages are rendered with their keys escaped the one
        // way serde_json does, so a message with a `mod` field holds this
        // text; most hold none, and are not parsed again.
        if !frame.as_str().contains("\"mod\":") {
            return None;
        }
        let message = Message::parse(frame.as_str()).ok()?;
        let action = Action::from_raw(message.field("mod")?).ok()?;
        Some(Moderated {
            moderator: message.usr().to_owned(),
            tim: frame.tim()?,
            action,
        })
    }

    /// The moderator's `usr`.
    pub fn moderator(&self) -> &str {
        &self.moderator
    }

    /// The action's own `tim`.
    pub fn tim(&self) -> DateTime<Utc> {
        self.tim
    }

    /// What was done.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// When a mute ends: `seconds` after the action's `tim`.
    fn until(&self, seconds: u64) -> DateTime<Utc> {
        // At most ten years: within chrono's range for any `tim`.
        let seconds = i64::try_from(seconds.min(MAX_MUTE_SECONDS)).unwrap_or(0);
        self.tim + TimeDelta::seconds(seconds)
    }
}

/// The `tim`s of retracted messages, at most [`MAX_RETRACTIONS`].
#[derive(Debug, Default)]
pub(crate) struct Retractions(BTreeSet<DateTime<Utc>>);

impl Retractions {
    /// Adds one; forgets the oldest beyond the bound.
    pub fn insert(&mut self, tim: DateTime<Utc>) {
        self.0.insert(tim);
        while self.0.len() > MAX_RETRACTIONS {
            self.0.pop_first();
        }
    }

    /// Whether `frame` is a retracted message.
    pub fn hides(&self, frame: &Frame) -> bool {
        !self.0.is_empty() && frame.tim().is_some_and(|t| self.0.contains(&t))
    }

    /// Whether there are none (reads need no filtering).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Muted names and when each mute ends, at most [`MAX_MUTES`].
#[derive(Debug, Default)]
pub(crate) struct Mutes(HashMap<String, DateTime<Utc>>);

impl Mutes {
    /// Applies `acted` if it is a mute (0 seconds lifts it), dropping the
    /// mutes that ended before it; deterministic given the log, so every
    /// instance and every restart agree.
    pub fn apply(&mut self, acted: &Moderated) {
        let Action::Mute { usr, seconds } = &acted.action else {
            return;
        };
        let (usr, seconds) = (usr.as_str(), *seconds);
        let now = acted.tim;
        self.0.retain(|_, until| *until > now);
        if seconds == 0 {
            self.0.remove(usr);
            return;
        }
        let until = acted.until(seconds);
        if self.0.len() >= MAX_MUTES && !self.0.contains_key(usr) {
            let first = self
                .0
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(usr, _)| usr.clone());
            if let Some(first) = first {
                self.0.remove(&first);
            }
        }
        self.0.insert(usr.to_owned(), until);
    }

    /// Whether nobody is muted (publishing needs no check).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When `usr`'s mute ends, if it is muted at `now`.
    pub fn until(&self, usr: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(usr).copied().filter(|until| *until > now)
    }
}

/// Applies one action to the state it changes.
pub(crate) fn apply(acted: &Moderated, retractions: &mut Retractions, mutes: &mut Mutes) {
    match &acted.action {
        Action::Retract { tim } => retractions.insert(*tim),
        Action::Mute { .. } => mutes.apply(acted),
    }
}

/// The actions a room's logs hold, gathered at start from each log in
/// turn and applied once, in `tim` order: logs that overlap (an archive
/// and the Redis stream it copies) give each action once.
#[derive(Debug, Default)]
pub(crate) struct Rebuild(Vec<Moderated>);

impl Rebuild {
    /// Keeps the action `line` (a message as stored) carries, if any.
    pub fn line(&mut self, line: &str) {
        if line.contains("\"mod\":") {
            self.0.extend(Moderated::of(&Frame::from(line.to_owned())));
        }
    }

    /// Applies what was gathered, oldest first, each action once.
    pub fn finish(mut self, retractions: &mut Retractions, mutes: &mut Mutes) {
        self.0.sort_by_key(|m| m.tim);
        self.0.dedup_by_key(|m| m.tim);
        for acted in &self.0 {
            apply(acted, retractions, mutes);
        }
    }
}

/// The `muted` refusal for `usr`, muted until `until`.
pub(crate) fn muted(usr: &str, until: DateTime<Utc>) -> PublishError {
    PublishError::Muted(format!(
        "{usr:?} is muted by a moderator until {}",
        format_tim(until)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2020-08-11T22:26:58.118678679Z";

    fn at(tim: &str) -> DateTime<Utc> {
        tim.parse().unwrap()
    }

    fn acted(tim: &str, action: Action) -> Moderated {
        Moderated {
            moderator: "mo".into(),
            tim: at(tim),
            action,
        }
    }

    fn mute(usr: &str, seconds: u64) -> Action {
        Action::Mute {
            usr: usr.into(),
            seconds,
        }
    }

    #[test]
    fn every_malformed_action_is_an_invalid_message() {
        for bad in [
            "null",
            "1",
            "\"retract\"",
            &format!("[\"{T}\"]"),
            "{}",
            r#"{"retract":5}"#,
            r#"{"retract":"yesterday"}"#,
            &format!(r#"{{"retract":"{T}","extra":1}}"#),
            &format!(r#"{{"retract":"{T}","mute":"spam","seconds":1}}"#),
            r#"{"mute":"spam"}"#,
            r#"{"mute":"spam","seconds":-1}"#,
            r#"{"mute":"spam","seconds":1.5}"#,
            r#"{"mute":"spam","seconds":"1"}"#,
            r#"{"mute":"spam","seconds":1e300}"#,
            r#"{"mute":"spam","seconds":18446744073709551615}"#,
            &format!(r#"{{"mute":"spam","seconds":{}}}"#, MAX_MUTE_SECONDS + 1),
            r#"{"mute":"","seconds":1}"#,
            r#"{"mute":5,"seconds":1}"#,
            r#"{"seconds":1}"#,
            r#"{"mute":"spam","seconds":1,"extra":true}"#,
        ] {
            let err = Action::parse(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_message", "{bad}");
            assert!(err.to_string().starts_with("\"mod\": "), "{err}");
        }
        assert!(Action::parse(&format!(r#"{{"mute":"a","seconds":{MAX_MUTE_SECONDS}}}"#)).is_ok());
        assert_eq!(
            Action::parse(r#"{"retract":"2020-08-11T23:26:58.5+01:00"}"#),
            Ok(Action::Retract {
                tim: at("2020-08-11T22:26:58.5Z")
            }),
            "any RFC 3339 form of a time"
        );
    }

    #[test]
    fn a_mute_ends_its_seconds_after_the_actions_tim_and_zero_lifts_it() {
        let (mut retractions, mut mutes) = (Retractions::default(), Mutes::default());
        apply(&acted(T, mute("spam", 60)), &mut retractions, &mut mutes);
        let end = at(T) + TimeDelta::seconds(60);
        assert_eq!(mutes.until("spam", at(T)), Some(end));
        assert_eq!(
            mutes.until("spam", end - TimeDelta::nanoseconds(1)),
            Some(end)
        );
        assert_eq!(mutes.until("spam", end), None, "over at its end");
        assert_eq!(mutes.until("eggs", at(T)), None, "only that name");
        apply(
            &acted("2020-08-11T22:27:00Z", mute("spam", 0)),
            &mut retractions,
            &mut mutes,
        );
        assert_eq!(mutes.until("spam", at(T)), None, "lifted");
        assert!(retractions.is_empty());
    }

    #[test]
    fn expired_mutes_go_and_the_bound_drops_the_one_ending_first() {
        let mut mutes = Mutes::default();
        let mut retractions = Retractions::default();
        let start = at(T);
        for i in 0..MAX_MUTES {
            let tim = format_tim(start + TimeDelta::seconds(i as i64));
            apply(
                &acted(&tim, mute(&format!("u{i}"), 3600)),
                &mut retractions,
                &mut mutes,
            );
        }
        assert_eq!(mutes.0.len(), MAX_MUTES);
        let later = format_tim(start + TimeDelta::seconds(MAX_MUTES as i64));
        apply(
            &acted(&later, mute("new", 3600)),
            &mut retractions,
            &mut mutes,
        );
        assert_eq!(mutes.0.len(), MAX_MUTES);
        assert!(mutes.until("u0", start).is_none(), "the first to end went");
        assert!(
            mutes
                .until("new", start + TimeDelta::seconds(MAX_MUTES as i64))
                .is_some()
        );
        let much_later = format_tim(start + TimeDelta::days(1));
        apply(
            &acted(&much_later, mute("last", 1)),
            &mut retractions,
            &mut mutes,
        );
        assert_eq!(mutes.0.len(), 1, "the ended ones are dropped");
    }

    #[test]
    fn retractions_are_bounded_forgetting_the_oldest() {
        let mut retractions = Retractions::default();
        let start = at(T);
        for i in 0..=MAX_RETRACTIONS as i64 {
            retractions.insert(start + TimeDelta::nanoseconds(i));
        }
        assert_eq!(retractions.0.len(), MAX_RETRACTIONS);
        assert!(!retractions.0.contains(&start));
        assert!(retractions.0.contains(&(start + TimeDelta::nanoseconds(1))));
    }

    #[test]
    fn a_rebuild_applies_each_action_once_in_tim_order_whatever_the_logs() {
        let line = |tim: &str, mute: &str| {
            format!(r#"{{"usr":"mo","msg":"m","mod":{mute},"tim":"{tim}"}}"#)
        };
        let on = line("2020-08-11T22:00:00Z", r#"{"mute":"spam","seconds":3600}"#);
        let off = line("2020-08-11T22:10:00Z", r#"{"mute":"spam","seconds":0}"#);
        let mut rebuild = Rebuild::default();
        // The archive, then the stream holding the same actions.
        for l in [&on, &off, &on, &off] {
            rebuild.line(l);
        }
        rebuild.line(r#"{"usr":"a","msg":"not an action","tim":"2020-08-11T22:20:00Z"}"#);
        rebuild.line(r#"{"usr":"a","msg":"m","mod":"malformed","tim":"2020-08-11T22:20:00Z"}"#);
        let (mut retractions, mut mutes) = (Retractions::default(), Mutes::default());
        rebuild.finish(&mut retractions, &mut mutes);
        assert_eq!(mutes.until("spam", at("2020-08-11T22:15:00Z")), None);
    }

    #[test]
    fn only_messages_with_a_valid_mod_object_are_actions() {
        let frame = |text: &str| Frame::from(text.to_owned());
        for text in [
            r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:20:00Z"}"#,
            r#"{"usr":"a","msg":"\"mod\":","tim":"2020-08-11T22:20:00Z"}"#,
            r#"{"usr":"a","msg":"m","mod":{"retract":1},"tim":"2020-08-11T22:20:00Z"}"#,
            r#"{"usr":"a","msg":"m","mod":{"retract":"2020-08-11T22:20:00Z"}}"#,
        ] {
            assert_eq!(Moderated::of(&frame(text)), None, "{text}");
        }
    }
}
