//! The relay path end to end: frames in, relayed by a room whose log is an
//! archive file, the archive reopened as a restarted server would. What the
//! member received, what the archive holds and what the restarted room
//! replays are the same frames, each one line that serde_json reads.
#![no_main]

use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Wake, Waker};

use libfuzzer_sys::fuzz_target;
use wschat_core::{Archive, Frame, Room, RoomConfig};

/// One archive file per fuzzing process, emptied for each input.
static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("wschat-fuzz-relay-{}.jsonl", std::process::id()))
});

/// At most this many frames per input, so all of them fit the history.
const FRAMES: usize = 32;

/// Wakes the thread that waits in `block_on`.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits for `future` on this thread: the room's own thread writes the
/// archive, and the core needs no async runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fuzz_target!(|data: &[u8]| {
    let config = RoomConfig::default()
        .history(FRAMES)
        .send_queue(FRAMES)
        .rate_limit(None);
    let _ = std::fs::remove_file(&*PATH);
    let archive = Archive::open(&*PATH, false).expect("a fresh archive");
    let room = Room::with_log(config.clone(), Arc::new(archive)).expect("an empty room");
    let mut member = room.join();
    let mut relayed: Vec<Frame> = Vec::new();
    // Frames are separated by 0xFF, which UTF-8 never holds. A chunk whose
    // first byte is odd is a value inside a valid message, so that the
    // fuzzer spends its time inside values, where line breaks once hid.
    for chunk in data.split(|b| *b == 0xFF).take(FRAMES) {
        let Some((&how, text)) = chunk.split_first() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(text) else {
            continue;
        };
        let frame = if how & 1 == 1 {
            format!(r#"{{"usr":"u","msg":"m","x":{text}}}"#)
        } else {
            text.to_owned()
        };
        match block_on(member.publish(&frame)) {
            Ok(out) => {
                let line = out.as_str();
                assert!(
                    !line.contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']),
                    "one line: {line:?}"
                );
                serde_json::from_str::<serde_json::Value>(line).expect("strict JSON");
                assert_eq!(member.try_recv(), Ok(Some(out.clone())), "received");
                relayed.push(out);
            }
            Err(e) => assert!(
                ["invalid_json", "invalid_message"].contains(&e.code()),
                "{e}"
            ),
        }
    }
    assert_eq!(member.try_recv(), Ok(None), "nothing else relayed");
    drop((member, room));
    let held = std::fs::read_to_string(&*PATH).expect("the archive");
    let lines: String = relayed.iter().map(|f| format!("{f}\n")).collect();
    assert_eq!(held, lines, "the archive holds what was received");
    let archive = Archive::open(&*PATH, false).expect("the archive reopens");
    let restarted = Room::with_log(config, Arc::new(archive)).expect("a restarted room");
    assert_eq!(restarted.history(), relayed, "replayed after a restart");
});
