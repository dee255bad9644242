//! What muted names cost in memory (README, "Moderation"): a name may be
//! as long as a message, so a mute must not hold it. A test binary of its
//! own, so the process's resident size measures this room alone.

use wschat_core::{Jwt, JwtConfig, Room, RoomConfig};

const SECRET: &str = "mute-memory-test-secret";
/// How long each muted name is, about the server's default message size
/// limit.
const NAME_BYTES: usize = 60_000;
/// How many names are muted: 30 MB of names.
const NAMES: usize = 500;

/// The process's resident size, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap();
    kb * 1024
}

fn name(i: usize) -> String {
    let mut name = format!("{i}-");
    name.extend(std::iter::repeat_n('x', NAME_BYTES - name.len()));
    name
}

#[test]
fn a_muted_name_costs_the_same_memory_whatever_its_length() {
    let room = Room::new(
        RoomConfig::default()
            .rate_limit(None)
            .send_queue(1)
            .jwt(Some(JwtConfig::new(SECRET).optional(true))),
    );
    let token = Jwt::new(JwtConfig::new(SECRET))
        .mint_moderator("sub", "mo", None)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mute = |i: usize| {
        let frame = format!(
            r#"{{"usr":"mo","msg":"m","mod":{{"mute":"{}","seconds":3600}},"jwt":"{token}"}}"#,
            name(i)
        );
        runtime.block_on(room.publish(&frame)).unwrap();
    };
    // Warmed up: the room's ring and the allocator's first arenas.
    for i in 0..10 {
        mute(i);
    }
    let before = resident_bytes();
    for i in 10..NAMES {
        mute(i);
    }
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "{NAMES} muted names of {NAME_BYTES} bytes took {grown} bytes"
    );
    // Each long name is muted, and only that name.
    let say =
        |usr: &str| runtime.block_on(room.publish(&format!(r#"{{"usr":"{usr}","msg":"m"}}"#)));
    assert_eq!(say(&name(NAMES - 1)).unwrap_err().code(), "muted");
    assert_eq!(say(&name(0)).unwrap_err().code(), "muted");
    let mut other = name(0);
    other.push('x');
    assert!(say(&other).is_ok());
}
