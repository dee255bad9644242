//! What moderation costs in memory (README, "Moderation"): a muted name
//! may be as long as a message, so a mute must not hold it, and the
//! actions read back at start must not all be held. A test binary of its
//! own, its tests one at a time, so the process's resident size measures
//! one room alone.

use std::sync::{Arc, Mutex, MutexGuard};

use wschat_core::{Archive, Jwt, JwtConfig, Room, RoomConfig};

const SECRET: &str = "mute-memory-test-secret";
/// How long each muted name is, about the server's default message size
/// limit.
const NAME_BYTES: usize = 60_000;
/// How many names are muted: 30 MB of names.
const NAMES: usize = 500;

/// Held by each test while it measures.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A line of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap();
    kb * 1024
}

/// The process's resident size.
fn resident_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// The process's peak resident size since the last [`reset_peak`].
fn peak_bytes() -> u64 {
    status_bytes("VmHWM:")
}

fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn name(i: usize) -> String {
    let mut name = format!("{i}-");
    name.extend(std::iter::repeat_n('x', NAME_BYTES - name.len()));
    name
}

#[test]
fn a_muted_name_costs_the_same_memory_whatever_its_length() {
    let _alone = alone();
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

#[test]
fn reading_actions_back_holds_what_can_matter_not_every_action() {
    let _alone = alone();
    let path = std::env::temp_dir().join(format!("wschat-rebuild-memory-{}", std::process::id()));
    // As many mutes of long names, all still in force, and a line to
    // start from.
    let start: chrono::DateTime<chrono::Utc> = "2020-08-11T22:00:00Z".parse().unwrap();
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..NAMES {
            let tim = (start + chrono::TimeDelta::milliseconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            writeln!(
                file,
                r#"{{"usr":"mo","msg":"m","mod":{{"mute":"{}","seconds":3600}},"tim":"{tim}"}}"#,
                name(i)
            )
            .unwrap();
        }
        file.flush().unwrap();
    }
    let config = RoomConfig::default().jwt(Some(JwtConfig::new(SECRET).optional(true)));
    let before = resident_bytes();
    reset_peak();
    let room = Room::with_log(config, Arc::new(Archive::open(&path, false).unwrap())).unwrap();
    // A read waits for the actions to be read back.
    room.read(None, None, 1).unwrap();
    let grown = peak_bytes().saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "reading back {NAMES} mutes of names of {NAME_BYTES} bytes took {grown} bytes at its peak"
    );
    std::fs::remove_file(path).unwrap();
}
