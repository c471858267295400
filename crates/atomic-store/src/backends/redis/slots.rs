//! Redis Cluster hash slots, and the name of a key's fencing counter.
//!
//! A lock and its fencing counter are touched by one script, so on Redis
//! Cluster they must hash to one slot. The counter's name starts with a hash
//! tag chosen to land on the lock key's slot, whatever the key contains, and
//! holds a NUL byte, which user keys never do, so it can never collide with
//! one: `{TAG}\0fence\0{full key}`.

use std::sync::OnceLock;

const SLOTS: usize = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of `key`, honouring `{hash tags}`.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// For every slot, a short decimal tag that hashes to it.
fn tags() -> &'static [u32] {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; SLOTS];
        let mut missing = SLOTS;
        let mut n: u32 = 0;
        while missing > 0 {
            let s = crc16(n.to_string().as_bytes()) as usize % SLOTS;
            if tags[s] == u32::MAX {
                tags[s] = n;
                missing -= 1;
            }
            n += 1;
        }
        tags
    })
}

/// The key of the fencing counter of the lock stored at `full_key`.
pub fn fence_key(full_key: &str) -> Vec<u8> {
    companion_key(full_key, "fence")
}

/// The keys of the native lock queue of the lock stored at `full_key`:
/// its waiters by ticket, their presence deadlines, and the ticket counter.
pub fn queue_keys(full_key: &str) -> [Vec<u8>; 3] {
    ["queue", "presence", "tickets"].map(|part| companion_key(full_key, part))
}

/// The key `part` kept beside the one stored at `full_key`, in its slot (so
/// one script may use both on a cluster) and out of the way of user keys
/// (it holds a NUL, which `keys` skips).
fn companion_key(full_key: &str, part: &str) -> Vec<u8> {
    let tag = tags()[slot(full_key.as_bytes()) as usize];
    let mut key = format!("{{{tag}}}\0{part}\0").into_bytes();
    key.extend_from_slice(full_key.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // The check value of CRC16/XMODEM, as the Redis Cluster
        // specification gives it.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Slots as Redis 7.0's `CLUSTER KEYSLOT` gives them; the hash-tag
        // rows are the specification's examples.
        let rows: [(&[u8], u16); 14] = [
            (b"123456789", 12739),
            (b"foo", 12182),
            (b"bar", 5061),
            (b"b", 3300),
            (b"user1000", 3443),
            // The tag is hashed.
            (b"{user1000}.following", 3443),
            // `{}`: no tag, the whole key is hashed.
            (b"foo{}{bar}", 8363),
            (b"{}", 15257),
            // The tag runs from the first `{` to the first `}` after it.
            (b"foo{{bar}}zap", 4015),
            (b"{bar", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"a{b}c{d}", 3300),
            // Unclosed or stray braces: the whole key.
            (b"{{", 7007),
            (b"p:a}b", 1918),
        ];
        for (key, want) in rows {
            assert_eq!(slot(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn every_slot_has_a_tag_and_fence_keys_share_their_lock_slot() {
        assert!(tags().iter().all(|&t| t != u32::MAX));
        for key in [
            "atomic:a",
            "atomic:{x}y",
            "p:a}b",
            "p:{}",
            "{{",
            "ünï:{ab",
            "a{b}c{d}",
        ] {
            let fence = fence_key(key);
            assert_eq!(slot(&fence), slot(key.as_bytes()), "{key}");
            assert!(fence.contains(&0));
        }
    }
}
