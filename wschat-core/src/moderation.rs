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
use sha2::{Digest, Sha256};

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
        let field = |key: &str| fields.get(key);
        match (
            fields.len(),
            field("retract"),
            field("mute"),
            field("seconds"),
        ) {
            (1, Some(retract), _, _) => {
                let tim = retract
                    .as_str()
                    .and_then(|t| parse_tim(t).ok())
                    .ok_or_else(|| invalid("\"retract\" must be the \"tim\" of a message"))?;
                Ok(Action::Retract { tim })
            }
            (2, None, Some(mute), Some(seconds)) => {
                let usr = match mute.as_str() {
                    Some(usr) if !usr.is_empty() => usr.to_owned(),
                    _ => return Err(invalid("\"mute\" must be a non-empty name")),
                };
                let seconds = seconds
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
    /// a valid `mod` object and a `tim`, retracting no later `tim`).
    pub fn of(frame: &Frame) -> Option<Moderated> {
        // Relayed messages are rendered with their keys escaped the one
        // way serde_json does, so a message with a `mod` field holds this
        // text; most hold none, and are not parsed again.
        if !frame.as_str().contains("\"mod\":") {
            return None;
        }
        let message = Message::parse(frame.as_str()).ok()?;
        let action = Action::from_raw(message.field("mod")?).ok()?;
        let tim = frame.tim()?;
        // No message comes after the action that names it: such a
        // retraction (refused when published, but an archive may hold
        // one) is none, and cannot push real ones out of the bound.
        if let Action::Retract { tim: named } = action
            && named > tim
        {
            return None;
        }
        Some(Moderated {
            moderator: message.usr().to_owned(),
            tim,
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

    /// The retracted `tim`s, oldest first.
    pub fn into_tims(self) -> impl Iterator<Item = DateTime<Utc>> {
        self.0.into_iter()
    }
}

/// Muted names and when each mute ends, at most [`MAX_MUTES`].
///
/// Every decision costs time logarithmic in the names held, also when
/// the bound is reached: an index by end finds the mutes that ended and
/// the one that ends first without looking at the others, so reading
/// back N actions at start costs O(N log N) however many names they
/// mute. A name is held as its digest ([`Name`]), so the bound bounds
/// memory too, whatever the names' length.
#[derive(Debug, Default)]
pub(crate) struct Mutes {
    by_name: HashMap<Name, Mute>,
    /// The names by when their mute ends, lifted ones (`None`) first:
    /// the same entries as `by_name`.
    by_end: BTreeSet<(Option<DateTime<Utc>>, Name)>,
}

/// A muted name as held: its SHA-256 digest. `usr` has no length limit
/// of its own (a message's size limits it), and a shorter limit on mute
/// names would leave longer names unmutable; 32 bytes a name keeps
/// [`MAX_MUTES`] names, with their index, in about 2 MB at most, and no
/// one can find another name with the same digest.
type Name = [u8; 32];

fn name(usr: &str) -> Name {
    Sha256::digest(usr.as_bytes()).into()
}

/// One name's last decision, read back from a log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    name: Name,
    mute: Mute,
}

/// The last decision about one name.
#[derive(Debug, Clone, Copy)]
struct Mute {
    /// The `tim` of the action that decided it.
    decided: DateTime<Utc>,
    /// When it ends; `None` once lifted.
    until: Option<DateTime<Utc>>,
}

impl Mutes {
    /// Applies `acted` if it is a mute (0 seconds lifts it), unless a
    /// later action already decided about that name: so actions read back
    /// from the log after later ones were applied (at start, while the
    /// archive is read) change nothing, and every instance and every
    /// restart agree. Once the bound is reached, a new name first drops
    /// the mutes ended (or lifted) by the action's `tim`, then, if none
    /// had, the one ending first.
    pub fn apply(&mut self, acted: &Moderated) {
        let Action::Mute { usr, seconds } = &acted.action else {
            return;
        };
        let until = (*seconds > 0).then(|| acted.until(*seconds));
        self.decide(name(usr), acted.tim, until);
    }

    /// Applies decisions read back from a log ([`Mutes::into_decisions`])
    /// under the same rule: a later decision about a name wins.
    pub fn merge(&mut self, decisions: &[Decision]) {
        for d in decisions {
            self.decide(d.name, d.mute.decided, d.mute.until);
        }
    }

    /// Every decision held, oldest first: the order they were taken in,
    /// so merging them drops what [`apply`](Self::apply) would have.
    pub fn into_decisions(self) -> Vec<Decision> {
        let mut decisions: Vec<Decision> = self
            .by_name
            .into_iter()
            .map(|(name, mute)| Decision { name, mute })
            .collect();
        decisions.sort_unstable_by_key(|d| d.mute.decided);
        decisions
    }

    /// Records a decision about the name `usr` taken at `decided`.
    fn decide(&mut self, usr: Name, decided: DateTime<Utc>, until: Option<DateTime<Utc>>) {
        match self.by_name.get(&usr) {
            Some(last) if last.decided >= decided => return,
            Some(last) => {
                self.by_end.remove(&(last.until, usr));
            }
            None if self.by_name.len() >= MAX_MUTES => self.make_room(decided),
            None => {}
        }
        self.by_name.insert(usr, Mute { decided, until });
        self.by_end.insert((until, usr));
    }

    /// Drops what ended by `now`, or else the mute ending first. Each
    /// name is dropped once, so this costs logarithmic time amortised.
    fn make_room(&mut self, now: DateTime<Utc>) {
        while let Some((until, _)) = self.by_end.first()
            && until.is_none_or(|until| until <= now)
        {
            self.drop_first();
        }
        if self.by_name.len() >= MAX_MUTES {
            self.drop_first();
        }
    }

    fn drop_first(&mut self) {
        if let Some((_, usr)) = self.by_end.pop_first() {
            self.by_name.remove(&usr);
        }
    }

    /// Whether nobody was ever muted (publishing needs no check).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// When `usr`'s mute ends, if it is muted at `now`.
    pub fn until(&self, usr: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.by_name.is_empty() {
            return None;
        }
        self.by_name
            .get(&name(usr))
            .and_then(|m| m.until)
            .filter(|until| *until > now)
    }
}

/// Applies one action to the state it changes.
pub(crate) fn apply(acted: &Moderated, retractions: &mut Retractions, mutes: &mut Mutes) {
    match &acted.action {
        Action::Retract { tim } => retractions.insert(*tim),
        Action::Mute { .. } => mutes.apply(acted),
    }
}

/// What the actions in one log decide, read back at start a line at a
/// time: the latest [`MAX_RETRACTIONS`] retractions and the latest
/// decision about each of at most [`MAX_MUTES`] names, by the same rules
/// as the room's own state. So reading back holds no more than the room
/// does, however many actions the log holds. A log is read in its order
/// (`tim` order); logs that overlap (an archive and the Redis stream it
/// copies) give the same decisions, which merging takes once.
#[derive(Debug, Default)]
pub(crate) struct Rebuild {
    retractions: Retractions,
    mutes: Mutes,
}

impl Rebuild {
    /// Applies the action `line` (a message as stored) carries, if any.
    pub fn line(&mut self, line: &str) {
        if line.contains("\"mod\":")
            && let Some(acted) = Moderated::of(&Frame::from(line.to_owned()))
        {
            self.apply(&acted);
        }
    }

    /// Applies one action.
    pub fn apply(&mut self, acted: &Moderated) {
        apply(acted, &mut self.retractions, &mut self.mutes);
    }

    /// What the actions decided.
    pub fn into_parts(self) -> (Retractions, Mutes) {
        (self.retractions, self.mutes)
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
    use crate::room::{Room, RoomConfig};

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
                &acted(&tim, mute(&format!("u{i}"), 100_000)),
                &mut retractions,
                &mut mutes,
            );
        }
        assert_eq!(mutes.by_name.len(), MAX_MUTES);
        let later = format_tim(start + TimeDelta::seconds(MAX_MUTES as i64));
        apply(
            &acted(&later, mute("new", 3600)),
            &mut retractions,
            &mut mutes,
        );
        assert_eq!(mutes.by_name.len(), MAX_MUTES);
        assert!(mutes.until("u0", start).is_none(), "the first to end went");
        assert!(
            mutes
                .until("new", start + TimeDelta::seconds(MAX_MUTES as i64))
                .is_some()
        );
        let much_later = format_tim(start + TimeDelta::days(3));
        apply(
            &acted(&much_later, mute("last", 1)),
            &mut retractions,
            &mut mutes,
        );
        assert_eq!(mutes.by_name.len(), 1, "the ended ones are dropped");
        assert_eq!(mutes.by_end.len(), 1, "and their index entries");
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
        let (mut retractions, read_back) = rebuild.into_parts();
        assert!(retractions.is_empty());
        let decisions = read_back.into_decisions();
        assert_eq!(decisions.len(), 1, "one decision about one name");
        let mut mutes = Mutes::default();
        mutes.merge(&decisions);
        assert_eq!(mutes.until("spam", at("2020-08-11T22:15:00Z")), None);
        // Read back after a later action was applied: changes nothing.
        let earlier = Moderated::of(&Frame::from(on)).unwrap();
        apply(&earlier, &mut retractions, &mut mutes);
        assert_eq!(mutes.until("spam", at("2020-08-11T22:15:00Z")), None);
        // Nor does the whole log read again.
        mutes.merge(&decisions);
        assert_eq!(mutes.until("spam", at("2020-08-11T21:15:00Z")), None);
    }

    /// Rooms, their frames and their moderator, for the tests of how a
    /// room applies moderation.
    mod room {
        use std::sync::Arc;

        use crate::clock::ManualClock;
        use crate::jwt::{Jwt, JwtConfig};
        use crate::log::Archive;
        use crate::room::{Room, RoomConfig, Step};
        use crate::{Clock, Frame, PublishError};

        pub const SECRET: &str = "moderation-unit-test-secret";

        pub fn config() -> RoomConfig {
            RoomConfig::default()
                .rate_limit(None)
                .history(3)
                .jwt(Some(JwtConfig::new(SECRET).optional(true)))
        }

        pub fn wait(room: &Room, frame: &str) -> Result<Frame, PublishError> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(room.publish(frame))
        }

        pub fn say(room: &Room, usr: &str, msg: &str) -> Result<Frame, PublishError> {
            wait(room, &format!(r#"{{"usr":"{usr}","msg":"{msg}"}}"#))
        }

        /// A moderator's action, `action` the `mod` object's JSON.
        pub fn act(room: &Room, action: &str) -> Result<Frame, PublishError> {
            let token = Jwt::new(JwtConfig::new(SECRET))
                .mint_moderator("sub", "mo", None)
                .unwrap();
            wait(
                room,
                &format!(r#"{{"usr":"mo","msg":"acted","mod":{action},"jwt":"{token}"}}"#),
            )
        }

        pub fn retract(room: &Room, frame: &Frame) -> Frame {
            let tim = crate::clock::format_tim(frame.tim().unwrap());
            act(room, &format!(r#"{{"retract":"{tim}"}}"#)).unwrap()
        }

        pub fn archive(name: &str) -> (Arc<Archive>, std::path::PathBuf) {
            let path = std::env::temp_dir()
                .join(format!("wschat-moderation-{}-{name}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            (Arc::new(Archive::open(&path, false).unwrap()), path)
        }

        pub fn archive_at(path: &std::path::Path) -> Arc<Archive> {
            Arc::new(Archive::open(path, false).unwrap())
        }

        /// A room started again on the archive at `path`.
        pub fn on_archive_again(path: &std::path::Path) -> Room {
            Room::builder(config())
                .log(archive_at(path))
                .build()
                .unwrap()
        }

        pub fn on_archive(name: &str, clock: Arc<dyn Clock>) -> (Room, std::path::PathBuf) {
            let (log, path) = archive(name);
            let room = Room::builder(config())
                .log(log)
                .clock(clock)
                .build()
                .unwrap();
            (room, path)
        }

        /// Everything a catch-up from `since` yields, a page of `limit`
        /// at a time.
        pub fn caught_up(room: &Room, since: &Frame, limit: usize) -> Vec<Frame> {
            let mut catch_up = room.catch_up(since.tim().unwrap(), "x");
            let mut got = Vec::new();
            loop {
                match catch_up.next(limit).unwrap() {
                    Step::Page(page) => got.extend(page),
                    Step::Live(mut member) => {
                        while let Ok(Some(f)) = member.try_recv() {
                            got.push(f);
                        }
                        return got;
                    }
                }
            }
        }

        pub fn system() -> Arc<dyn Clock> {
            Arc::new(crate::clock::SystemClock)
        }

        pub fn manual(tim: &str) -> Arc<ManualClock> {
            Arc::new(ManualClock::new(tim.parse().unwrap()))
        }
    }

    #[test]
    fn a_retracted_message_is_in_no_replay_also_after_a_restart() {
        let (room, path) = room::on_archive("replays", room::system());
        let sent: Vec<Frame> = (0..10)
            .map(|i| room::say(&room, "ann", &i.to_string()).unwrap())
            .collect();
        let mut member = room.join();
        let history: Vec<Frame> = std::iter::from_fn(|| member.try_recv().ok().flatten()).collect();
        assert_eq!(history, sent[7..]);
        let (five, eight) = (
            room::retract(&room, &sent[5]),
            room::retract(&room, &sent[8]),
        );
        let live: Vec<Frame> = std::iter::from_fn(|| member.try_recv().ok().flatten()).collect();
        assert_eq!(
            live,
            [five.clone(), eight.clone()],
            "every member sees the actions"
        );
        let kept = |range: std::ops::Range<usize>| -> Vec<Frame> {
            sent[range]
                .iter()
                .filter(|f| **f != sent[5] && **f != sent[8])
                .cloned()
                .collect()
        };
        for room in [room.clone(), room::on_archive_again(&path)] {
            assert_eq!(
                room.history(),
                [sent[9].clone(), five.clone(), eight.clone()]
            );
            let mut all = kept(0..10);
            all.extend([five.clone(), eight.clone()]);
            assert_eq!(room.read(None, None, 100).unwrap(), all);
            // Pages read on past what is retracted, both ways.
            assert_eq!(room.read(sent[3].tim(), None, 2).unwrap(), kept(4..7));
            assert_eq!(room.read(None, sent[7].tim(), 2).unwrap(), kept(4..7));
            assert_eq!(
                room.read(sent[3].tim(), sent[9].tim(), 10).unwrap(),
                kept(4..9)
            );
            for limit in [1, 2, 100] {
                assert_eq!(room::caught_up(&room, &sent[0], limit), all[1..], "{limit}");
            }
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_mute_refuses_its_name_until_seconds_after_the_actions_tim() {
        let clock = room::manual("2020-08-11T22:00:00Z");
        let (room, path) = room::on_archive("mute", clock.clone());
        room::act(&room, r#"{"mute":"spam","seconds":60}"#).unwrap();
        let err = room::say(&room, "spam", "hi").unwrap_err();
        assert_eq!(
            err.to_frame().as_str(),
            r#"{"err":"muted","detail":"\"spam\" is muted by a moderator until 2020-08-11T22:01:00.000000000Z"}"#
        );
        assert!(room::say(&room, "eggs", "hi").is_ok(), "only that name");
        clock.set("2020-08-11T22:00:59Z".parse().unwrap());
        assert_eq!(room::say(&room, "spam", "hi").unwrap_err().code(), "muted");
        // A room started now from the archive agrees, by the action's tim.
        let again = Room::builder(room::config())
            .log(room::archive_at(&path))
            .clock(clock.clone())
            .build()
            .unwrap();
        assert_eq!(room::say(&again, "spam", "hi").unwrap_err().code(), "muted");
        clock.set("2020-08-11T22:01:00Z".parse().unwrap());
        assert!(room::say(&room, "spam", "free").is_ok());
        assert!(room::say(&again, "spam", "free").is_ok());
        room::act(&room, r#"{"mute":"spam","seconds":3600}"#).unwrap();
        room::act(&room, r#"{"mute":"spam","seconds":0}"#).unwrap();
        assert!(room::say(&room, "spam", "lifted").is_ok());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn actions_older_than_the_history_are_read_back_before_any_read() {
        let (room, path) = room::on_archive("old", room::system());
        let old = room::say(&room, "ann", "old").unwrap();
        room::retract(&room, &old);
        room::act(&room, r#"{"mute":"spam","seconds":3600}"#).unwrap();
        let later: Vec<Frame> = (0..10)
            .map(|i| room::say(&room, "ann", &i.to_string()).unwrap())
            .collect();
        drop(room);
        let again = room::on_archive_again(&path);
        assert_eq!(again.history(), later[7..], "at once");
        // A read waits for the rest of the archive.
        let read = again.read(None, None, 100).unwrap();
        assert_eq!(read.len(), 12, "{read:?}");
        assert!(!read.contains(&old));
        assert_eq!(room::say(&again, "spam", "hi").unwrap_err().code(), "muted");
        // Applied again from the log, an action changes nothing a later
        // one decided.
        room::act(&again, r#"{"mute":"spam","seconds":0}"#).unwrap();
        let actions: Vec<Moderated> = again
            .read(None, None, 100)
            .unwrap()
            .iter()
            .filter_map(Moderated::of)
            .collect();
        again.merge_read_back(&actions);
        assert!(room::say(&again, "spam", "free").is_ok());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn only_a_moderators_well_formed_action_is_relayed() {
        use crate::jwt::{Jwt, JwtConfig};
        let what = format!(r#"{{"retract":"{T}"}}"#);
        let frame = |jwt: &str| format!(r#"{{"usr":"mo","msg":"m","mod":{what}{jwt}}}"#);
        let minter = Jwt::new(JwtConfig::new(room::SECRET));
        let moderator = minter.mint_moderator("sub", "mo", None).unwrap();
        let plain = minter.mint("sub", "mo", None).unwrap();
        // No key: nobody moderates.
        let open = Room::new(RoomConfig::default());
        let with = |token: &str| frame(&format!(r#","jwt":"{token}""#));
        for f in [frame(""), with(&moderator)] {
            assert_eq!(room::wait(&open, &f).unwrap_err().code(), "unauthorized");
        }
        let keyed = Room::new(room::config());
        let mut listener = keyed.join();
        for f in [frame(""), with(&plain)] {
            assert_eq!(room::wait(&keyed, &f).unwrap_err().code(), "unauthorized");
        }
        assert_eq!(
            room::act(&keyed, r#"{"retract":"now"}"#)
                .unwrap_err()
                .code(),
            "invalid_message"
        );
        assert_eq!(listener.try_recv(), Ok(None), "nothing refused is relayed");
        // Another claim names the moderators.
        let admin =
            Room::new(room::config().jwt(Some(JwtConfig::new(room::SECRET).mod_claim("admin"))));
        assert_eq!(
            room::wait(&admin, &with(&moderator)).unwrap_err().code(),
            "unauthorized"
        );
        let admin_token = Jwt::new(JwtConfig::new(room::SECRET).mod_claim("admin"))
            .mint_moderator("sub", "mo", None)
            .unwrap();
        assert!(room::wait(&admin, &with(&admin_token)).is_ok());
    }

    /// How long a room started on the archive at `path` takes to read its
    /// actions back.
    fn rebuild_cost(path: &std::path::Path) -> std::time::Duration {
        let start = std::time::Instant::now();
        let again = room::on_archive_again(path);
        // A read waits for the actions to be read back, at most 10 s at
        // a time: as long as it takes, up to five minutes.
        let read = (0..30).find(|_| again.read(None, None, 1).is_ok());
        assert!(read.is_some(), "still reading back after five minutes");
        start.elapsed()
    }

    fn start_of_mutes() -> DateTime<Utc> {
        at(T)
    }

    /// An archive of `n` mutes of distinct names, a millisecond apart.
    fn archive_of_mutes(name: &str, n: usize) -> std::path::PathBuf {
        let (_, path) = room::archive(name);
        let start = start_of_mutes();
        let lines: String = (0..n)
            .map(|i| {
                let tim = format_tim(start + TimeDelta::milliseconds(i as i64));
                format!(
                    r#"{{"usr":"mo","msg":"m","mod":{{"mute":"u{i}","seconds":3600}},"tim":"{tim}"}}"#
                ) + "\n"
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }

    #[test]
    fn reading_back_mutes_costs_time_quasilinear_in_their_number() {
        // Up to the bound, and four times as many: past it every mute
        // drops the one ending first. 4 times the actions must cost about
        // 4 times the time (far more if each costs time in proportion to
        // the names held); the bound of 10 leaves room for a busy machine.
        let (small, large) = (
            archive_of_mutes("scale-small", MAX_MUTES),
            archive_of_mutes("scale-large", 4 * MAX_MUTES),
        );
        let (mut small_cost, mut large_cost) = (rebuild_cost(&small), rebuild_cost(&large));
        // Again, interleaved, keeping the best, in case the machine was
        // busy during one of them.
        small_cost = small_cost.min(rebuild_cost(&small));
        large_cost = large_cost.min(rebuild_cost(&large));
        let ratio = large_cost.as_secs_f64() / small_cost.as_secs_f64().max(1e-9);
        assert!(
            ratio < 10.0,
            "{small_cost:?} for {MAX_MUTES} mutes, {large_cost:?} for {}",
            4 * MAX_MUTES
        );
        // The last mute read back is in force, the first was dropped.
        let end = start_of_mutes() + TimeDelta::milliseconds(4 * MAX_MUTES as i64);
        let again = Room::builder(room::config())
            .log(room::archive_at(&large))
            .clock(std::sync::Arc::new(crate::clock::ManualClock::new(end)))
            .build()
            .unwrap();
        again.read(None, None, 1).unwrap();
        let at_end = format!("u{}", 4 * MAX_MUTES - 1);
        assert_eq!(
            room::say(&again, &at_end, "hi").unwrap_err().code(),
            "muted"
        );
        assert!(room::say(&again, "u0", "hi").is_ok());
        std::fs::remove_file(small).unwrap();
        std::fs::remove_file(large).unwrap();
    }

    #[test]
    fn a_retraction_of_a_time_after_every_message_is_refused_and_ignored() {
        let clock = room::manual("2020-08-11T22:00:00Z");
        let (room, path) = room::on_archive("future", clock.clone());
        let sent = room::say(&room, "ann", "real").unwrap();
        let err = room::act(&room, r#"{"retract":"2020-08-11T22:00:01Z"}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_message");
        assert!(err.to_string().contains("later than"), "{err}");
        let retracted = room::retract(&room, &sent);
        drop(room);
        // An archive (forged, or written before such retractions were
        // refused) holding as many retractions of later times as are
        // kept: they must not push the real one out.
        let start = at("2020-08-11T23:00:00Z");
        let lines: String = (0..MAX_RETRACTIONS as i64)
            .map(|i| {
                let own = format_tim(start + TimeDelta::microseconds(i));
                let later = format_tim(start + TimeDelta::days(1) + TimeDelta::microseconds(i));
                format!(r#"{{"usr":"mo","msg":"m","mod":{{"retract":"{later}"}},"tim":"{own}"}}"#)
                    + "\n"
            })
            .collect();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, lines.as_bytes()).unwrap();
        let again = room::on_archive_again(&path);
        let read = again.read(None, None, 3).unwrap();
        assert!(!read.contains(&sent), "{read:?}");
        let all = again.read(None, Some(start), 10).unwrap();
        assert_eq!(all, [retracted], "the real retraction holds");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_muted_moderator_still_moderates_but_says_nothing_else() {
        use crate::jwt::{Jwt, JwtConfig};
        let room = Room::new(room::config());
        room::act(&room, r#"{"mute":"mo","seconds":3600}"#).unwrap();
        assert_eq!(room::say(&room, "mo", "hi").unwrap_err().code(), "muted");
        let token = Jwt::new(JwtConfig::new(room::SECRET))
            .mint_moderator("sub", "mo", None)
            .unwrap();
        let with_token = format!(r#"{{"usr":"mo","msg":"hi","jwt":"{token}"}}"#);
        assert_eq!(
            room::wait(&room, &with_token).unwrap_err().code(),
            "muted",
            "a moderator's token does not lift the mute"
        );
        let sent = room::say(&room, "ann", "hi").unwrap();
        room::retract(&room, &sent);
        room::act(&room, r#"{"mute":"mo","seconds":0}"#).unwrap();
        assert!(room::say(&room, "mo", "free").is_ok());
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
