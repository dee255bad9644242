//! Any sequence of joins, publishes, receives and clock steps on one room:
//! every member reads the one relay order (history first) with no gap or
//! duplicate until it is a whole ring behind, `tim` strictly increases even
//! when the clock steps back, and the history is the last N relayed.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use wschat_core::{Frame, ManualClock, Member, RecvError, Room, RoomConfig};

/// A member and the index in `relayed` of the next message it must read.
struct Reader {
    member: Member,
    next: usize,
    dropped: bool,
}

fuzz_target!(|data: &[u8]| {
    let [history, queue, ops @ ..] = data else {
        return;
    };
    let history = usize::from(history % 5);
    let queue = 1 + usize::from(queue % 8);
    let ring = queue.next_power_of_two();
    let start = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000);
    let clock = Arc::new(ManualClock::new(start));
    let room = Room::with_clock(
        RoomConfig::default()
            .history(history)
            .send_queue(queue)
            .rate_limit(None),
        clock.clone(),
    );
    let mut relayed: Vec<Frame> = Vec::new();
    let mut readers: Vec<Reader> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let target = usize::from(op >> 3);
        match op & 7 {
            0 if readers.len() < 16 => readers.push(Reader {
                member: room.join(),
                next: relayed.len().saturating_sub(history),
                dropped: false,
            }),
            1 | 2 => {
                let frame = format!(r#"{{"usr":"u{target}","msg":"m{i}"}}"#);
                let sent = match readers.get_mut(target % 16) {
                    Some(reader) if op & 7 == 1 => reader.member.publish(&frame),
                    _ => room.publish(&frame),
                }
                .try_outcome()
                .expect("the in-memory log commits in place");
                relayed.push(sent.expect("a valid frame is relayed"));
            }
            3 => {
                // Invalid frames are never relayed.
                assert!(matches!(
                    room.publish(r#"{"usr":"","msg":"m"}"#).try_outcome(),
                    Some(Err(_))
                ));
            }
            4 => {
                // The clock steps back or forward by up to a few seconds.
                let step = chrono::Duration::milliseconds(i64::from(*op) * 37 - 4_000);
                clock.set(start + step);
            }
            _ => {
                let Some(reader) = readers.get_mut(target % 16) else {
                    continue;
                };
                if reader.dropped {
                    continue;
                }
                // History replays come before the ring, so only the live
                // part of the backlog counts against the ring.
                match reader.member.try_recv() {
                    Ok(Some(frame)) => {
                        assert_eq!(Some(&frame), relayed.get(reader.next), "order");
                        reader.next += 1;
                    }
                    Ok(None) => assert_eq!(reader.next, relayed.len(), "a message is missing"),
                    Err(RecvError::TooSlow) => {
                        assert!(relayed.len() - reader.next > ring, "dropped too early");
                        reader.dropped = true;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }
    }
    // Stamps strictly increase in relay order.
    let tims: Vec<String> = relayed
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_str(f.as_str()).expect("JSON");
            v["tim"].as_str().expect("tim").to_owned()
        })
        .collect();
    assert!(tims.windows(2).all(|w| w[0] < w[1]), "{tims:?}");
    let expected: Vec<&Frame> = relayed[relayed.len().saturating_sub(history)..]
        .iter()
        .collect();
    assert_eq!(room.history().iter().collect::<Vec<_>>(), expected);
});
