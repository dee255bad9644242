//! The transport-agnostic core of [wschat], a real-time public mailing list.
//!
//! A client publishes a JSON text frame such as `{"usr": "ann", "msg": "hi"}`;
//! the room validates it, optionally checks its JWT, stamps it with `tim`
//! (UTC, RFC 3339, nanoseconds) and relays the same bytes to every member,
//! the sender included, in one order for all.
//!
//! This crate holds everything but the network: a [`Room`] takes raw frames
//! and hands out [`Frame`]s to each [`Member`]. It needs no async runtime
//! (`tokio`'s `sync` channels only) and no network stack; [`Room`] is
//! `Send + Sync` and cheap to clone, a [`Member`] is `Send`.
//!
//! # Plugging in a transport
//!
//! Per connection: [`Room::join`] a member (before telling the client it is
//! connected, so it misses nothing), then loop over two things at once:
//!
//! * a frame read from the client goes to [`Member::publish`], the one verb
//!   whatever the log: it queues the message at once and returns a
//!   [`Publish`] that resolves when the log has committed it (at once with
//!   the default in-memory log; [`Publish::try_outcome`] tells without
//!   waiting). On error, send [`PublishError::to_frame`] back to that
//!   client alone;
//! * whatever [`Member::recv`] yields goes to the client; drain
//!   [`Member::try_recv`] too and flush once. [`RecvError::TooSlow`] means
//!   the client fell a whole ring behind: close it. While a write is
//!   blocked, check [`Member::is_too_slow`] now and then.
//!
//! The `wschat-server` crate does this over WebSocket; the `wschat-tcp-room`
//! example does it over plain TCP lines in fifty lines.
//!
//! # JWT mode
//!
//! With [`RoomConfig::jwt`] set, every published message must carry a
//! `"jwt"` string: a token signed with the shared secret (HS256, HS384 or
//! HS512), or by an identity provider whose public key
//! ([`JwtConfig::public_key_pem`]: RSA, RSA-PSS, ECDSA P-256 or P-384,
//! Ed25519) or key set ([`JwtKeys`], picked by `kid` and refreshed by the
//! transport) verifies it. The algorithm is pinned by the configuration,
//! never read from the token. `exp` is checked only with
//! [`JwtConfig::validate_exp`]; [`JwtConfig::usr_claim`] binds `usr` to a
//! claim, [`JwtConfig::issuer`] and [`JwtConfig::audience`] check `iss` and
//! `aud`, and [`JwtConfig::optional`] lets messages without a token through.
//! The token is removed before relaying. [`Jwt::mint`] makes tokens for
//! operators of a shared secret.
//!
//! # Moderation
//!
//! A moderator, whose token's claim [`JwtConfig::mod_claim`] (default
//! `mod`) is `true`, publishes an [`Action`] as a message with a `mod`
//! object: `{"retract": TIM}` takes the message with that `tim` out of
//! every later replay ([`Member`] history, [`Room::catch_up`],
//! [`Room::read`]), `{"mute": USR, "seconds": N}` refuses `USR`'s messages
//! with [`PublishError::Muted`] until N seconds after the action's `tim`.
//! The room applies each action as it relays it and reads them back from
//! its logs when it is built ([`Log::scan`]), so rooms sharing a log and
//! rooms started again agree. [`Moderated::of`] tells a relayed action
//! apart from other messages.
//!
//! ```
//! use wschat_core::{Jwt, JwtConfig, Room, RoomConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let jwt = JwtConfig::new("secret").optional(true);
//! let room = Room::new(RoomConfig::default().history(10).jwt(Some(jwt.clone())));
//! let spam = room.publish(r#"{"usr":"spam","msg":"buy now"}"#).await.unwrap();
//! let tim = spam.as_str().split(r#""tim":"#).nth(1).unwrap().trim_end_matches('}');
//! let token = Jwt::new(jwt).mint_moderator("sub", "mo", None).unwrap();
//! room.publish(&format!(
//!     r#"{{"usr":"mo","msg":"Retracted.","mod":{{"retract":{tim}}},"jwt":"{token}"}}"#
//! )).await.unwrap();
//! room.publish(&format!(
//!     r#"{{"usr":"mo","msg":"Muted spam.","mod":{{"mute":"spam","seconds":60}},"jwt":"{token}"}}"#
//! )).await.unwrap();
//! assert!(room.history().iter().all(|f| !f.as_str().contains("buy now")));
//! let refused = room.publish(r#"{"usr":"spam","msg":"again"}"#).await.unwrap_err();
//! assert_eq!(refused.code(), "muted");
//! # });
//! ```
//!
//! # Logs
//!
//! Every accepted message goes to the room's [`Log`] before any member can
//! read it: [`MemoryLog`] (the default) keeps nothing, [`Archive`] appends
//! JSON Lines to a file ([`ArchiveDir`] to a file per UTC day), in group
//! commits, from a writer thread of the room's own (a hung disk holds only
//! the publishers awaiting it).
//! Implement [`Log`] for other storage, or [`SharedLog`] for a log that
//! several rooms (servers) share and that orders messages itself; build
//! the room with [`Room::builder`].
//!
//! ```
//! use wschat_core::{JwtConfig, Jwt, Room, RoomConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // JWT mode: publishing needs a token whose `sub` is the sender's `usr`.
//! let jwt = JwtConfig::new("secret").usr_claim("sub");
//! let room = Room::new(RoomConfig::default().history(10).jwt(Some(jwt.clone())));
//! let mut ann = room.join();
//! let mut bob = room.join();
//!
//! let err = ann.publish(r#"{"usr":"ann","msg":"no token"}"#).await.unwrap_err();
//! assert_eq!(err.to_frame().as_str(),
//!            r#"{"err":"unauthorized","detail":"a \"jwt\" string is required to publish"}"#);
//!
//! let token = Jwt::new(jwt).mint("sub", "ann", None).unwrap();
//! ann.publish(&format!(r#"{{"usr":"ann","msg":"hello","jwt":"{token}"}}"#)).await.unwrap();
//! let relayed = bob.recv().await.unwrap();
//! assert!(relayed.as_str().starts_with(r#"{"usr":"ann","msg":"hello","tim":"#));
//! assert!(!relayed.as_str().contains("jwt"), "the token is never relayed");
//! assert_eq!(ann.recv().await.unwrap(), relayed);
//! # });
//! ```
//!
//! # Features
//!
//! * `test-util`: helpers for tests of code built on the room, kept out of
//!   the API otherwise: `ManualClock`, a clock that shows what it is set
//!   to, and `Room::with_clock`.
//!
//! [wschat]: https://github.com/wschat/wschat

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod error;
mod frame;
mod jwt;
mod log;
mod message;
mod moderation;
mod rate;
mod room;

pub use clock::{Clock, SystemClock, format_tim, parse_tim};
pub use error::{LogError, PublishError, RecvError};
pub use frame::Frame;
pub use jwt::{Claims, Jwt, JwtAlg, JwtConfig, JwtError, JwtKeys, KeyError};
pub use log::{Ack, Archive, ArchiveDir, Log, MemoryLog, SharedLog, Stamped};
pub use message::Message;
pub use moderation::{Action, MAX_MUTE_SECONDS, MAX_MUTES, MAX_RETRACTIONS, Moderated};
pub use rate::{RateLimit, TokenBucket};
pub use room::{CatchUp, Member, Publish, Room, RoomBuilder, RoomConfig, Step};

#[cfg(feature = "test-util")]
pub use clock::ManualClock;
