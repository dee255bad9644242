//! Embedding a wschat room in your own program: two members, one message.
//!
//! The same code as the README's "Embedding wschat-core" section. Run it
//! with `cargo run -p wschat-examples --example embed_room`.

use wschat_core::{Room, RoomConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let room = Room::new(RoomConfig::default().history(10));
    let mut ann = room.join();
    let mut bob = room.join();

    // A frame read from ann's connection:
    if let Err(e) = ann.publish(r#"{"usr":"ann","msg":"hi bob"}"#).await {
        // Send e.to_frame() back to ann alone.
        eprintln!("rejected: {e}");
    }
    // Write whatever each member receives to its connection.
    let frame = bob.recv().await.unwrap();
    println!("bob gets {frame}");
    assert_eq!(ann.recv().await.unwrap(), frame);
}
